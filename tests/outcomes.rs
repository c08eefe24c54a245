//! Several outcomes in one model and explicit negative feedback, through the
//! real binary on ml-100k (which keeps every rating).

use std::path::Path;

use crate::util::*;

fn only_run(parent: &Path) -> std::path::PathBuf {
    let runs: Vec<_> = std::fs::read_dir(parent).unwrap().map(|e| e.unwrap().path()).collect();
    assert_eq!(runs.len(), 1, "one run folder expected in {}", parent.display());
    runs[0].clone()
}

fn test_metrics(run_dir: &Path) -> serde_json::Map<String, serde_json::Value> {
    let text = std::fs::read_to_string(run_dir.join("metrics.json")).unwrap();
    let m: serde_json::Value = serde_json::from_str(&text).unwrap();
    m["test"].as_object().unwrap().clone()
}

/// Runs the ml-100k experiment for `epochs` with `sets`, in `runs`.
fn run(dir: &Path, epochs: usize, runs: &str, sets: &[&str]) -> (Finished, std::path::PathBuf) {
    write(&dir.join("exp.toml"), &experiment_toml(&shared_data().join("ml-100k"), epochs));
    let mut args = vec!["run", "exp.toml", "--runs-dir", runs, "--reports-dir", "reports"];
    for s in sets {
        args.extend(["--set", s]);
    }
    let out = funnel(dir, &args);
    out.assert_success();
    let run_dir = only_run(&dir.join(runs).join("itest"));
    (out, run_dir)
}

const BOTH: [&str; 2] =
    ["dataset.outcomes={liked=\"rating >= 4\", loved=\"rating >= 5\"}", "dataset.negative_feedback=rating <= 2"];

#[test]
fn one_declared_outcome_reproduces_the_plain_run_exactly() {
    let dir = tempfile::tempdir().unwrap();
    let (_, plain) = run(dir.path(), 2, "plain", &[]);
    let (_, liked) = run(dir.path(), 2, "liked", &["dataset.outcomes={liked=\"rating >= 4\"}"]);
    let (a, b) = (test_metrics(&plain), test_metrics(&liked));
    for (k, v) in &a {
        assert_eq!(Some(v), b.get(k), "test {k}: one outcome changed the metrics");
    }
    // Every test case is a liked one, asked the same query.
    assert_eq!(b["outcome/liked/recall@10"], a["recall@10"]);
    assert!(b.contains_key("outcome/mean/recall@10") && !b.contains_key("disliked@10"));
}

#[test]
fn two_outcomes_with_negative_feedback_train_evaluate_report_and_repeat() {
    let dir = tempfile::tempdir().unwrap();
    let mut tests = Vec::new();
    for runs in ["runs-a", "runs-b"] {
        let (out, run_dir) = run(dir.path(), 3, runs, &BOTH);
        let t = test_metrics(&run_dir);
        let value = |k: &str| t.get(k).and_then(serde_json::Value::as_f64).unwrap_or_else(|| panic!("no test {k}"));
        // A popularity ranking scores about 0.05 on liked; a model that
        // learned nothing about 0.007.
        assert!(value("outcome/liked/recall@10") >= 0.06, "{}", out.stderr);
        assert!(value("outcome/loved/recall@10") >= 0.05, "{}", out.stderr);
        assert!(value("outcome/loved/cases") < value("outcome/liked/cases"));
        let disliked = value("disliked@10");
        assert!((0.0..=1.0).contains(&disliked));
        assert!(out.stderr.contains("negative feedback: "), "{}", out.stderr);
        let report = std::fs::read_to_string(run_dir.join("report.md")).unwrap();
        for needle in ["### By outcome", "| liked |", "| loved |", "| mean |", "disliked@10: ", "positives per outcome"]
        {
            assert!(report.contains(needle), "report lacks {needle:?}:\n{report}");
        }
        let resolved = std::fs::read_to_string(run_dir.join("resolved.toml")).unwrap();
        assert!(resolved.contains("negative_feedback = \"rating <= 2\""), "{resolved}");
        if runs == "runs-a" {
            // One index serves every outcome; the query asks about one.
            let rd = run_dir.display().to_string();
            let ask =
                |outcome: &str| funnel(dir.path(), &["recommend", "--run", &rd, "--user", "1", "--outcome", outcome]);
            let (liked, loved) = (ask("liked"), ask("loved"));
            liked.assert_success();
            loved.assert_success();
            assert_ne!(liked.stdout, loved.stdout, "two outcomes, one list");
            ask("saved").assert_error(&["--outcome saved", "liked, loved"]);
        }
        tests.push(t);
    }
    assert_eq!(tests[0], tests[1], "same seed, same metrics");

    // Feedback off: the same outcomes, another model, disliked still measured.
    let (_, off) = run(dir.path(), 3, "runs-off", &[BOTH[0], BOTH[1], "train.negative_feedback_weight=0.0"]);
    let t = test_metrics(&off);
    assert!(t.contains_key("disliked@10"));
    assert_ne!(t["outcome/liked/recall@10"], tests[0]["outcome/liked/recall@10"]);
}

#[test]
fn outcomes_train_on_every_position_of_a_recurrent_encoder() {
    let dir = tempfile::tempdir().unwrap();
    let mut sets = BOTH.to_vec();
    sets.extend([
        "model.hidden=[]",
        "model.sequence_encoder=gru",
        "train.targets=all_positions",
        "train.batch_size=16",
    ]);
    let (out, run_dir) = run(dir.path(), 2, "runs", &sets);
    let t = test_metrics(&run_dir);
    let liked = t["outcome/liked/recall@10"].as_f64().unwrap();
    assert!(liked >= 0.05, "liked recall@10 = {liked}\n{}", out.stderr);
}

#[test]
fn outcome_names_are_checked_against_the_dataset() {
    let dir = tempfile::tempdir().unwrap();
    write(&dir.path().join("exp.toml"), &experiment_toml(&shared_data().join("ml-100k"), 1));
    let cases: [(&str, &[&str]); 2] = [
        ("train.outcomes={saved=1.0}", &["`outcomes.saved`", "declares no outcome `saved` (it declares liked, loved"]),
        ("train.select_outcome=best", &["`select_outcome`", "\"best\"", "liked, loved"]),
    ];
    for (set, needles) in cases {
        let out = funnel(dir.path(), &["run", "exp.toml", "--runs-dir", "runs", "--set", BOTH[0], "--set", set]);
        assert_eq!(out.code, Some(2), "{set}: exit code 2 expected:\n{}", out.stderr);
        out.assert_error(needles);
        assert!(!out.stderr.contains("epoch 1/"), "{set}: failed only after training started:\n{}", out.stderr);
    }
}
