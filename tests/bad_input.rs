//! Bad input gets one clear message naming the file, key or line, and a
//! non-zero exit; never a panic.

use crate::util::*;

fn setup() -> (tempfile::TempDir, std::path::PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let exp = dir.path().join("exp.toml");
    write(&exp, &synthetic_experiment(dir.path(), 30, 1));
    (dir, exp)
}

fn edit(exp: &std::path::Path, from: &str, to: &str) {
    let text = std::fs::read_to_string(exp).unwrap();
    assert!(text.contains(from), "fixture lacks {from:?}");
    write(exp, &text.replacen(from, to, 1));
}

#[test]
fn unknown_type_lists_the_registered_ones() {
    let (dir, exp) = setup();
    edit(&exp, "type = \"youtube_dnn\"", "type = \"youtube_dnm\"");
    funnel(dir.path(), &["check", "exp.toml"]).assert_error(&[
        "exp.toml",
        "unknown model type \"youtube_dnm\"",
        "\"youtube_dnn\"",
    ]);
    let _ = exp;
}

#[test]
fn misspelt_key_names_the_key_and_the_file() {
    let (dir, exp) = setup();
    edit(&exp, "hidden = [64]", "hiden = [64]");
    funnel(dir.path(), &["check", "exp.toml"]).assert_error(&["exp.toml", "[model]", "hiden", "hidden"]);
}

#[test]
fn misspelt_core_key_names_the_key_and_the_file() {
    let (dir, exp) = setup();
    edit(&exp, "batch_size = 128", "batchsize = 128");
    funnel(dir.path(), &["check", "exp.toml"]).assert_error(&["exp.toml", "batchsize"]);
}

#[test]
fn wrong_value_type_names_the_key_and_what_was_expected() {
    let (dir, exp) = setup();
    edit(&exp, "dim = 32", "dim = \"wide\"");
    funnel(dir.path(), &["check", "exp.toml"]).assert_error(&["exp.toml", "key `dim`", "\"wide\""]);
    let (dir, exp) = setup();
    edit(&exp, "epochs = 1", "epochs = \"many\"");
    funnel(dir.path(), &["check", "exp.toml"]).assert_error(&["exp.toml", "key `train.epochs`", "many"]);
}

#[test]
fn a_bad_override_is_named_as_its_source() {
    let (dir, _exp) = setup();
    funnel(dir.path(), &["check", "exp.toml", "--set", "model.dim=wide"])
        .assert_error(&["--set model.dim=wide", "key `dim`"]);
}

#[test]
fn missing_table_and_missing_file_are_named() {
    let (dir, exp) = setup();
    edit(&exp, "[tracking]\ntype = \"local\"\n", "");
    funnel(dir.path(), &["check", "exp.toml"]).assert_error(&["exp.toml", "tracking"]);
    funnel(dir.path(), &["check", "nope.toml"]).assert_error(&["nope.toml", "does not exist"]);
}

#[test]
fn toml_syntax_errors_give_the_line() {
    let (dir, exp) = setup();
    edit(&exp, "dim = 32", "dim = = 32");
    funnel(dir.path(), &["check", "exp.toml"]).assert_error(&["exp.toml", "line"]);
}

#[test]
fn missing_data_directory_is_named() {
    let (dir, _exp) = setup();
    funnel(dir.path(), &["run", "exp.toml", "--set", "dataset.path=/nonexistent/ml", "--runs-dir", "runs"])
        .assert_error(&["/nonexistent/ml"]);
}

#[test]
fn malformed_rating_line_gives_file_and_line() {
    let (dir, _exp) = setup();
    let data = dir.path().join("data/u.data");
    let mut text = std::fs::read_to_string(&data).unwrap();
    text.push_str("31\tforty-two\t5\t1000\n");
    let line = text.lines().count();
    write(&data, &text);
    funnel(dir.path(), &["run", "exp.toml", "--runs-dir", "runs", "--reports-dir", "reports"])
        .assert_error(&["u.data", &format!(":{line}")]);
}

#[test]
fn dataset_empty_after_filtering_is_explained() {
    let (dir, _exp) = setup();
    funnel(dir.path(), &["run", "exp.toml", "--set", "dataset.min_user_interactions=1000", "--runs-dir", "runs"])
        .assert_error(&["min_user_interactions"]);
}

#[test]
fn layers_apply_file_then_environment_then_command_line() {
    let (dir, _exp) = setup();
    let out = funnel_with_env(
        dir.path(),
        &["run", "exp.toml", "--dry-run", "--set", "model.hidden=[16, 8]"],
        &[("FUNNEL_MODEL__HIDDEN", "[99]"), ("FUNNEL_TRAIN__EPOCHS", "4")],
    );
    out.assert_success();
    assert!(out.stdout.contains("hidden = [16, 8]"), "{}", out.stdout);
    assert!(out.stdout.contains("epochs = 4"), "{}", out.stdout);
    // Defaults of every plugin are written out.
    assert!(out.stdout.contains("share_embeddings = false"), "{}", out.stdout);
    assert!(out.stdout.contains("# --set model.hidden=[16, 8]"), "{}", out.stdout);
}

#[test]
fn plugins_lists_every_component_with_defaults() {
    let dir = tempfile::tempdir().unwrap();
    let out = funnel(dir.path(), &["plugins"]);
    out.assert_success();
    for needle in [
        "[train]",
        "lr = 0.001",
        "batch_size = 256",
        "[dataset]",
        "type = \"movielens\"",
        "[model]",
        "type = \"youtube_dnn\"",
        "hidden = [256]",
        "type = \"uniform\"",
        "num_negatives = 1000",
        "type = \"full_ranking\"",
        "type = \"exact\"",
        "type = \"local\"",
        "type = \"watch_history\"",
        "max_history = 30",
    ] {
        assert!(out.stdout.contains(needle), "plugins output lacks {needle:?}:\n{}", out.stdout);
    }
}

/// One broken input per row: how to break the fixture, and what the one
/// error message must say. Every row must fail cleanly and leave no run that
/// looks finished.
#[test]
fn broken_experiments_each_get_one_clear_error() {
    type Case = (&'static str, &'static str, &'static [&'static str], &'static [&'static str]);
    let cases: &[Case] = &[
        // (replace, with, "run" (else `check`) and further args, needles)
        ("dim = 32", "dim = -1", &[], &["exp.toml", "key `dim`", "-1"]),
        ("epochs = 1", "epochs = 0", &[], &["exp.toml", "epochs", "at least 1"]),
        ("batch_size = 128", "batch_size = 1e400", &[], &["exp.toml"]),
        ("lr = 0.002", "lr = -0.5", &[], &["exp.toml", "lr"]),
        ("num_negatives = 20", "num_negatives = 0", &["run"], &["num_negatives", "at least 1"]),
        ("num_negatives = 20", "num_negatives = 100000", &["run"], &["num_negatives", "catalog"]),
        ("ks = [10, 50]", "ks = [10, 100000]", &["run"], &["key `ks`", "larger than the catalog"]),
        ("ks = [10, 50]", "ks = []", &["run"], &["ks"]),
        ("dim = 32", "dim = 1000000000", &["run"], &["dim", "GiB"]),
        ("type = \"local\"", "type = 42", &[], &["exp.toml", "`type` must be a string"]),
        ("[index]\ntype = \"exact\"", "[index]", &[], &["exp.toml", "missing `type`"]),
        ("name = \"itest\"", "name = \"../escape\"", &[], &["exp.toml", "name"]),
        ("variant = \"ml-100k\"", "variant = \"ml-7m\"", &["run"], &["ml-7m", "ml-100k"]),
        ("lr = 0.002", "lr = 0.002\nmax_grad_norm = 1e-9", &["run"], &["diverged at epoch 1, step 1", "max_grad_norm"]),
        ("lr = 0.002", "lr = 0.002\ntargets = \"every\"", &[], &["exp.toml", "targets", "all_positions"]),
        ("lr = 0.002", "lr = 0.002\nlr_schedule = \"step\"", &[], &["exp.toml", "lr_schedule", "cosine"]),
        ("lr = 0.002", "lr = 0.002\nengine = \"gpu\"", &[], &["exp.toml", "engine", "device"]),
        (
            "lr = 0.002",
            "lr = 0.002\ntargets = \"all_positions\"\nwindow_overlap = 20",
            &["run"],
            &["window_overlap = 20", "max_history (20)"],
        ),
        ("lr = 0.002", "lr = 0.002\nwindow_cuts = \"random\"", &[], &["exp.toml", "window_cuts", "all_positions"]),
        ("lr = 0.002", "lr = 0.002\nlr_final_fraction = 1.5", &[], &["exp.toml", "lr_final_fraction", "0 to 1"]),
        ("dim = 32", "dim = 32\nsequence_encoder = \"self_attention\"\nheads = 5", &["run"], &["key `heads`", "32"]),
        ("dim = 32", "dim = 32\nsequence_encoder = \"self_attention\"\ndropout = 1.0", &["run"], &["key `dropout`"]),
        ("dim = 32", "dim = 32\nsequence_encoder = \"self_attention\"\nlayers = 0", &["run"], &["key `layers`"]),
        ("dim = 32", "dim = 32\nsequence_encoder = \"transformer\"", &[], &["exp.toml", "self_attention"]),
        ("dim = 32", "dim = 32\nsequence_encoder = \"lstm\"\nlstm_hidden = 0", &["run"], &["key `lstm_hidden`"]),
        // The device engine does not cover exclude_seen: said before training.
        (
            "dim = 32",
            "dim = 32\nexclude_seen = true",
            &["run", "--set", "train.engine=device"],
            &["engine = \"device\"", "exclude_seen"],
        ),
        // Outcomes: a weight below zero, an outcome the dataset does not
        // declare (known once it loads), a rule on a column it lacks.
        ("lr = 0.002", "lr = 0.002\noutcomes = { liked = -1.0 }", &[], &["exp.toml", "`outcomes.liked`", ">= 0"]),
        (
            "lr = 0.002",
            "lr = 0.002\noutcomes = { saved = 1.0 }",
            &["run"],
            &["`outcomes.saved`", "declares no outcome `saved`", "[dataset] outcomes"],
        ),
        (
            "variant = \"ml-100k\"",
            "variant = \"ml-100k\"\noutcomes = { loved = \"stars >= 5\" }",
            &["run"],
            &["`outcomes.loved`", "column `stars`", "`rating`"],
        ),
        (
            "variant = \"ml-100k\"",
            "variant = \"ml-100k\"\nnegative_feedback = \"rating ~ 2\"",
            &["run"],
            &["`negative_feedback`", "<column> <op> <value>"],
        ),
    ];
    for (from, to, args, needles) in cases {
        let (dir, exp) = setup();
        edit(&exp, from, to);
        let mut argv = vec![if args.contains(&"run") { "run" } else { "check" }, "exp.toml"];
        argv.extend(["--runs-dir", "runs", "--reports-dir", "reports"]);
        argv.extend(args.iter().filter(|a| **a != "run"));
        let out = funnel(dir.path(), &argv);
        assert_eq!(out.code, Some(2), "{to:?} should fail with exit code 2:\n{}", out.stderr);
        out.assert_error(needles);
        assert_eq!(out.stderr.matches("error: ").count(), 1, "{to:?}: one error expected:\n{}", out.stderr);
        assert!(!any_file_named(&dir.path().join("runs"), "metrics.json"), "{to:?} left a finished-looking run");
    }
}

#[test]
fn a_diverged_run_keeps_a_report_that_says_so() {
    let (dir, _exp) = setup();
    let out = funnel(
        dir.path(),
        &["run", "exp.toml", "--set", "train.max_grad_norm=1e-9", "--runs-dir", "runs", "--reports-dir", "reports"],
    );
    out.assert_error(&["diverged at epoch 1, step 1"]);
    let run = std::fs::read_dir(dir.path().join("runs/itest")).unwrap().next().unwrap().unwrap().path();
    let report = std::fs::read_to_string(run.join("report.md")).unwrap();
    assert!(report.contains("(failed)") && report.contains("diverged"), "{report}");
    let journal = std::fs::read_to_string(run.join("journal.jsonl")).unwrap();
    assert!(journal.contains("\"status\":\"failed\""), "{journal}");
}

#[test]
fn an_experiment_path_that_is_a_folder_is_named() {
    let (dir, _exp) = setup();
    std::fs::create_dir(dir.path().join("folder.toml")).unwrap();
    funnel(dir.path(), &["check", "folder.toml"]).assert_error(&["folder.toml"]);
}

fn any_file_named(root: &std::path::Path, name: &str) -> bool {
    let Ok(entries) = std::fs::read_dir(root) else { return false };
    entries.flatten().any(|e| {
        let p = e.path();
        if p.is_dir() {
            any_file_named(&p, name)
        } else {
            p.file_name().is_some_and(|n| n == name)
        }
    })
}
