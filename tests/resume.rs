//! A run killed mid-epoch resumes from its last checkpoint and ends with the
//! metrics of a run that was never interrupted.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use crate::util::*;

fn experiment(dir: &Path) {
    experiment_training(dir, "");
}

/// The test experiment with `train` added to its `[train]` table.
fn experiment_training(dir: &Path, train: &str) {
    // A decaying step size with warmup: the resumed run must pick up the
    // schedule where the killed one stopped.
    let text = experiment_toml(&shared_data().join("ml-100k"), 6).replace(
        "batch_size = 128",
        &format!("batch_size = 16\nlr_schedule = \"cosine\"\nlr_warmup_steps = 50\nlr_final_fraction = 0.1{train}"),
    );
    write(&dir.join("exp.toml"), &text);
}

fn the_run_dir(runs: &Path) -> Option<PathBuf> {
    std::fs::read_dir(runs.join("itest")).ok()?.next()?.ok().map(|e| e.path())
}

fn completed_epochs(run_dir: &Path) -> usize {
    let journal = std::fs::read_to_string(run_dir.join("journal.jsonl")).unwrap_or_default();
    journal.lines().filter(|l| l.contains("\"epoch/validation/recall@10\"")).count()
}

fn outcome(run_dir: &Path) -> serde_json::Value {
    let m: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(run_dir.join("metrics.json")).unwrap()).unwrap();
    serde_json::json!({ "test": m["test"], "validation_at_best": m["validation_at_best"], "best_epoch": m["best_epoch"] })
}

#[test]
fn a_run_killed_mid_epoch_resumes_to_identical_metrics() {
    let dir = tempfile::tempdir().unwrap();
    experiment(dir.path());
    killed_and_resumed_equals_whole(dir.path());
}

#[test]
fn random_window_cuts_resume_to_identical_metrics() {
    // Each epoch's cuts, and so its number of steps and the step size's
    // schedule, must follow from the seed alone.
    let dir = tempfile::tempdir().unwrap();
    experiment_training(dir.path(), "\ntargets = \"all_positions\"\nwindow_cuts = \"random\"");
    killed_and_resumed_equals_whole(dir.path());
}

fn killed_and_resumed_equals_whole(dir: &Path) {
    funnel(dir, &["run", "exp.toml", "--runs-dir", "whole", "--reports-dir", "reports"]).assert_success();
    let whole = outcome(&the_run_dir(&dir.join("whole")).unwrap());

    let mut child = Command::new(env!("CARGO_BIN_EXE_funnel"))
        .current_dir(dir)
        .args(["run", "exp.toml", "--runs-dir", "cut", "--reports-dir", "reports"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let started = Instant::now();
    let run_dir = loop {
        if let Some(d) = the_run_dir(&dir.join("cut")) {
            if completed_epochs(&d) >= 2 && d.join("checkpoint.bin").exists() {
                break d;
            }
        }
        assert!(child.try_wait().unwrap().is_none(), "the run ended before it could be killed");
        assert!(started.elapsed() < Duration::from_secs(300), "no checkpoint after 5 minutes");
        std::thread::sleep(Duration::from_millis(20));
    };
    // Into the next epoch, then SIGKILL.
    std::thread::sleep(Duration::from_millis(150));
    assert!(child.try_wait().unwrap().is_none(), "the run finished before it was killed");
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(!run_dir.join("metrics.json").exists(), "a killed run must not look finished");

    let run_dir_arg = run_dir.display().to_string();
    let out = funnel(dir, &["run", "exp.toml", "--resume", &run_dir_arg, "--reports-dir", "reports"]);
    out.assert_success();
    assert!(out.stderr.contains("resuming after epoch"), "{}", out.stderr);
    assert_eq!(outcome(&run_dir), whole);
}

#[test]
fn resuming_with_a_different_configuration_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    experiment(dir.path());
    let text = std::fs::read_to_string(dir.path().join("exp.toml")).unwrap().replace("epochs = 6", "epochs = 1");
    write(&dir.path().join("exp.toml"), &text);
    funnel(dir.path(), &["run", "exp.toml", "--runs-dir", "runs", "--reports-dir", "reports"]).assert_success();
    let run_dir = the_run_dir(&dir.path().join("runs")).unwrap().display().to_string();
    funnel(dir.path(), &["run", "exp.toml", "--resume", &run_dir, "--set", "model.dim=16"])
        .assert_error(&["resuming", "differs"]);
    funnel(dir.path(), &["run", "exp.toml", "--resume", "nowhere"]).assert_error(&["nowhere", "checkpoint.bin"]);
}

#[test]
fn two_runs_started_at_once_keep_separate_folders_and_reports() {
    let dir = tempfile::tempdir().unwrap();
    write(&dir.path().join("exp.toml"), &synthetic_experiment(dir.path(), 30, 2));
    let spawn = || {
        Command::new(env!("CARGO_BIN_EXE_funnel"))
            .current_dir(dir.path())
            .args(["run", "exp.toml", "--runs-dir", "runs", "--reports-dir", "reports"])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap()
    };
    let (mut a, mut b) = (spawn(), spawn());
    assert!(a.wait().unwrap().success() && b.wait().unwrap().success());
    let runs: Vec<_> = std::fs::read_dir(dir.path().join("runs/itest")).unwrap().map(|e| e.unwrap().path()).collect();
    assert_eq!(runs.len(), 2, "{runs:?}");
    for run in &runs {
        for f in ["metrics.json", "checkpoint.bin", "journal.jsonl", "report.md"] {
            assert!(run.join(f).is_file(), "{f} missing in {}", run.display());
        }
        // Each journal holds exactly one run.
        let journal = std::fs::read_to_string(run.join("journal.jsonl")).unwrap();
        assert_eq!(journal.matches("\"event\":\"start\"").count(), 1, "{journal}");
    }
    let reports = std::fs::read_dir(dir.path().join("reports/itest")).unwrap().flatten();
    assert_eq!(reports.filter(|e| e.path().extension().is_some_and(|x| x == "md")).count(), 2);
}
