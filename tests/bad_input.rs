//! Bad input gets one clear message naming the file, key or line, and a
//! non-zero exit; never a panic.

use crate::util::*;

fn setup() -> (tempfile::TempDir, std::path::PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    std::fs::create_dir(&data).unwrap();
    synthetic_ml100k(&data, 30, 12);
    let exp = dir.path().join("exp.toml");
    write(&exp, &experiment_toml(&data, 1));
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
