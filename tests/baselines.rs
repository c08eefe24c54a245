//! `[[baselines]]`: rankers every report shows beside the model, fitted on the
//! training examples and ranked on the same test cases over the full catalog.

use std::path::{Path, PathBuf};

use crate::util::*;

const MOST_POPULAR: &str = "\n[[baselines]]\ntype = \"most_popular\"\n";

/// An experiment over the synthetic catalog with `baselines` appended.
fn experiment(dir: &Path, baselines: &str) -> PathBuf {
    let exp = dir.join("exp.toml");
    write(&exp, &(synthetic_experiment(dir, 30, 1) + baselines));
    exp
}

fn the_run_dir(runs: &Path) -> PathBuf {
    let dirs: Vec<_> = std::fs::read_dir(runs).unwrap().map(|e| e.unwrap().path()).collect();
    assert_eq!(dirs.len(), 1, "one run folder expected in {}", runs.display());
    dirs[0].clone()
}

#[test]
fn every_baseline_is_ranked_on_the_test_cases_and_reported_beside_the_model() {
    let dir = tempfile::tempdir().unwrap();
    // Synthetic users watch every third item of a 50-item cycle, so the next
    // watch always follows the last one: co-visitation with a window of 1,
    // seeded by the last item alone, puts it first for every test user.
    let baselines = format!(
        "{MOST_POPULAR}\n[[baselines]]\ntype = \"covisitation\"\n\n\
         [[baselines]]\ntype = \"covisitation\"\nwindow = 1\nseeds = 1\n"
    );
    experiment(dir.path(), &baselines);
    let out = funnel(dir.path(), &["run", "exp.toml", "--runs-dir", "runs", "--reports-dir", "reports"]);
    out.assert_success();
    let run_dir = the_run_dir(&dir.path().join("runs/itest"));

    let metrics: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(run_dir.join("metrics.json")).unwrap()).unwrap();
    let b = &metrics["baselines"];
    // Two entries of one type: the second is named `type#2`.
    let names: Vec<&str> = b.as_object().unwrap().keys().map(String::as_str).collect();
    assert_eq!(names, ["covisitation", "covisitation#2", "most_popular"], "{b}");
    for name in &names {
        for key in ["recall@10", "ndcg@10", "recall@50", "ndcg@50", "mrr", "parameters", "fit_seconds"] {
            assert!(b[name][key].as_f64().is_some_and(f64::is_finite), "{name}: no {key} in {b}");
        }
    }
    assert_eq!(b["covisitation#2"]["recall@10"].as_f64(), Some(1.0), "{b}\n{}", out.stderr);
    assert_eq!(b["covisitation#2"]["mrr"].as_f64(), Some(1.0), "{b}");
    let popular = b["most_popular"]["recall@10"].as_f64().unwrap();
    assert!(popular < 0.5, "most_popular cannot follow the cycle: recall@10 = {popular}");

    let report = std::fs::read_to_string(run_dir.join("report.md")).unwrap();
    let items: usize = report
        .lines()
        .find_map(|l| l.strip_prefix("| items | "))
        .and_then(|l| l.trim_end_matches(" |").parse().ok())
        .unwrap();
    // most_popular stores one count per catalog item.
    assert_eq!(b["most_popular"]["parameters"].as_u64(), Some(items as u64), "{b}");
    for needle in [
        "## Baselines",
        "same 30 test cases over the full catalog",
        "| ranker | recall@10 | ndcg@10 | recall@50 | mrr | parameters | fit seconds | validation recall@10 |",
        "| this run's model | ",
        "| `most_popular` | ",
        "| `covisitation` | ",
        "| `covisitation#2` | 1.0000 | 1.0000 | 1.0000 | 1.0000 | ",
    ] {
        assert!(report.contains(needle), "report lacks {needle:?}:\n{report}");
    }

    // Each baseline is a run of its own nested under this one
    // (`baselines/<name>/`), with its parameters, defaults included, and its
    // test metrics under the model's keys; the model's run keeps neither.
    let journal = std::fs::read_to_string(run_dir.join("journal.jsonl")).unwrap();
    assert!(!journal.contains("baseline"), "{journal}");
    for (folder, keys) in [
        ("most_popular", &["\"baseline.type\":\"most_popular\"", "\"test/recall@10\"", "\"parameters\""][..]),
        ("covisitation", &["\"baseline.window\":\"5\"", "\"test/ndcg@50\"", "\"fit_seconds\""][..]),
        ("covisitation-2", &["\"baseline.window\":\"1\"", "\"test/recall@10\":1.0"][..]),
    ] {
        let child = run_dir.join("baselines").join(folder);
        let journal = std::fs::read_to_string(child.join("journal.jsonl")).unwrap();
        let parent = format!("\"parent\":{}", serde_json::to_string(run_dir.to_str().unwrap()).unwrap());
        for key in keys.iter().copied().chain([parent.as_str(), "\"status\":\"finished\""]) {
            assert!(journal.contains(key), "{folder}'s journal lacks {key}:\n{journal}");
        }
    }
}

#[test]
fn the_resolved_configuration_writes_every_baseline_default() {
    let dir = tempfile::tempdir().unwrap();
    experiment(dir.path(), &format!("{MOST_POPULAR}\n[[baselines]]\ntype = \"covisitation\"\nwindow = 3\n"));
    let out = funnel(dir.path(), &["check", "exp.toml"]);
    out.assert_success();
    assert!(
        out.stdout.contains(
            "[[baselines]]\ntype = \"most_popular\"\n\n[[baselines]]\ntype = \"covisitation\"\nalpha = 0.5\nseeds = 5\nwindow = 3\n"
        ),
        "{}",
        out.stdout
    );
    // Without `[[baselines]]` there are none, and the resolved file says nothing of them.
    let dir = tempfile::tempdir().unwrap();
    experiment(dir.path(), "");
    let out = funnel(dir.path(), &["check", "exp.toml"]);
    out.assert_success();
    assert!(!out.stdout.contains("baselines"), "{}", out.stdout);
}

#[test]
fn plugins_lists_the_baselines_with_their_parameters() {
    let dir = tempfile::tempdir().unwrap();
    let out = funnel(dir.path(), &["plugins"]);
    out.assert_success();
    let section =
        out.stdout.split("[[baselines]]").nth(1).unwrap_or_else(|| panic!("no [[baselines]]:\n{}", out.stdout));
    for needle in ["type = \"covisitation\"", "type = \"most_popular\"", "window = 5", "alpha = 0.5", "seeds = 5"] {
        assert!(section.contains(needle), "{needle:?} missing from\n{section}");
    }
}

#[test]
fn an_unknown_baseline_type_names_the_entry_and_lists_the_registered_ones() {
    let dir = tempfile::tempdir().unwrap();
    experiment(dir.path(), &format!("{MOST_POPULAR}\n[[baselines]]\ntype = \"covisitaton\"\n"));
    funnel(dir.path(), &["check", "exp.toml"]).assert_error(&[
        "exp.toml",
        "[[baselines]] #2 type = \"covisitaton\"",
        "unknown baseline type \"covisitaton\"",
        "registered baseline types: \"covisitation\", \"ials\", \"most_popular\", \"random_walk\"",
    ]);
}

#[test]
fn a_bad_baseline_key_or_value_names_the_entry_and_the_key() {
    let dir = tempfile::tempdir().unwrap();
    experiment(dir.path(), &format!("{MOST_POPULAR}\n[[baselines]]\ntype = \"covisitation\"\nwindw = 3\n"));
    funnel(dir.path(), &["check", "exp.toml"]).assert_error(&[
        "exp.toml",
        "[[baselines]] #2 type = \"covisitation\": key `windw`",
        "window",
    ]);

    let dir = tempfile::tempdir().unwrap();
    experiment(dir.path(), "\n[[baselines]]\ntype = \"covisitation\"\nwindow = 0\n");
    funnel(dir.path(), &["check", "exp.toml"])
        .assert_error(&["exp.toml", "[[baselines]] #1 type = \"covisitation\": key `window`: must be at least 1"]);

    // A most_popular entry takes no parameters at all.
    let dir = tempfile::tempdir().unwrap();
    experiment(dir.path(), &format!("{MOST_POPULAR}window = 3\n"));
    funnel(dir.path(), &["check", "exp.toml"])
        .assert_error(&["exp.toml", "[[baselines]] #1 type = \"most_popular\": key `window`"]);
}

#[test]
fn a_baseline_without_a_type_or_a_baselines_table_that_is_no_list_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    experiment(dir.path(), "\n[[baselines]]\nwindow = 3\n");
    funnel(dir.path(), &["check", "exp.toml"]).assert_error(&["exp.toml: [[baselines]] #1: missing `type`"]);

    let dir = tempfile::tempdir().unwrap();
    experiment(dir.path(), "\n[baselines]\ntype = \"most_popular\"\n");
    funnel(dir.path(), &["check", "exp.toml"]).assert_error(&["exp.toml", "baselines"]);
}

#[test]
fn baselines_set_on_the_command_line_are_named_as_their_source() {
    let dir = tempfile::tempdir().unwrap();
    experiment(dir.path(), "");
    let set = "baselines=[{type = \"covisitation\", alpha = 2.0}]";
    funnel(dir.path(), &["check", "exp.toml", "--set", set]).assert_error(&[
        &format!("--set {set}"),
        "[[baselines]] #1 type = \"covisitation\": key `alpha`: must be between 0 and 1, found 2",
    ]);
}

#[test]
fn covisitation_seeds_come_from_the_whole_history_not_the_models_query() {
    // The same data and baseline under two feature histories: the model's
    // query length must not change what co-visitation reads.
    let mut recalls = Vec::new();
    for max_history in [2, 30] {
        let dir = tempfile::tempdir().unwrap();
        let baselines = "\n[[baselines]]\ntype = \"covisitation\"\nseeds = 8\n";
        experiment(dir.path(), baselines);
        let out = funnel(
            dir.path(),
            &[
                "run",
                "exp.toml",
                "--runs-dir",
                "runs",
                "--reports-dir",
                "reports",
                "--set",
                &format!("features.max_history={max_history}"),
            ],
        );
        out.assert_success();
        let run_dir = the_run_dir(&dir.path().join("runs/itest"));
        let metrics: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(run_dir.join("metrics.json")).unwrap()).unwrap();
        let b = &metrics["baselines"]["covisitation"];
        recalls.push(["recall@10", "ndcg@10", "recall@50", "mrr"].map(|k| b[k].as_f64().unwrap()));
    }
    assert_eq!(recalls[0], recalls[1], "co-visitation changed with features.max_history");
}

#[test]
fn ials_and_random_walks_learn_the_cycle_and_are_tuned_on_validation() {
    let dir = tempfile::tempdir().unwrap();
    // The synthetic cycle again: the next watch follows the last one, which
    // a one-step walk with a window of 1 finds, and which a factorisation of
    // who watched what recovers well above popularity.
    let baselines = format!(
        "{MOST_POPULAR}\n[[baselines]]\ntype = \"random_walk\"\nwindow = 1\nseeds = 1\nwalk_length = 1\nrestart = 0.0\n\n\
         [[baselines]]\ntype = \"ials\"\nfactors = 8\niterations = 5\n"
    );
    experiment(dir.path(), &baselines);
    let out = funnel(dir.path(), &["run", "exp.toml", "--runs-dir", "runs", "--reports-dir", "reports"]);
    out.assert_success();
    let run_dir = the_run_dir(&dir.path().join("runs/itest"));
    let metrics: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(run_dir.join("metrics.json")).unwrap()).unwrap();
    let b = &metrics["baselines"];
    assert_eq!(b["random_walk"]["recall@10"].as_f64(), Some(1.0), "{b}");
    let popular = b["most_popular"]["recall@10"].as_f64().unwrap();
    assert!(b["ials"]["recall@10"].as_f64().unwrap() > popular, "{b}");
    // Each baseline also ranked on the validation cases.
    for name in ["most_popular", "random_walk", "ials"] {
        assert!(b[name]["validation"]["recall@10"].as_f64().is_some_and(f64::is_finite), "{name}: {b}");
    }
    // The factorisation's objective per sweep: in the report, never rising.
    let summary = b["ials"]["fit_summary"].as_str().unwrap();
    let values: Vec<f64> =
        summary.trim_start_matches("training objective by sweep: ").split(' ').map(|v| v.parse().unwrap()).collect();
    assert_eq!(values.len(), 5, "{summary}");
    assert!(values.windows(2).all(|w| w[1] <= w[0] + 1e-6), "{summary}");
    let report = std::fs::read_to_string(run_dir.join("report.md")).unwrap();
    assert!(report.contains(&format!("`ials`: {summary}")), "{report}");
    // And the beyond-accuracy measures of what the index served.
    for key in ["ild_embedding@10", "catalog_coverage@10", "novelty@10", "gini@10"] {
        assert!(
            metrics["serving"]["beyond"][key].as_f64().is_some_and(f64::is_finite),
            "{key}: {}",
            metrics["serving"]
        );
        assert!(report.contains(&format!("| {key} | ")), "{key} not in the report:\n{report}");
    }
}

#[test]
fn a_bad_ials_or_random_walk_parameter_names_its_key() {
    for (entry, key) in [
        ("type = \"ials\"\nregularization = 0.0", "regularization"),
        ("type = \"random_walk\"\nrestart = 1.5", "restart"),
        ("type = \"random_walk\"\nwalks = 0", "walks"),
    ] {
        let dir = tempfile::tempdir().unwrap();
        experiment(dir.path(), &format!("\n[[baselines]]\n{entry}\n"));
        let out = funnel(dir.path(), &["check", "exp.toml"]);
        assert_eq!(out.code, Some(2), "{entry}: {}", out.stderr);
        assert!(out.stderr.contains(&format!("key `{key}`")), "{entry}: {}", out.stderr);
    }
}
