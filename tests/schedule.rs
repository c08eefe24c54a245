//! `[train] lr_schedule`: the step size each epoch ends at, through the real
//! binary on ml-100k.

use std::path::Path;

use crate::util::*;

/// Runs 3 epochs with `sets` into `runs`; returns the run folder.
fn run(dir: &Path, runs: &str, sets: &[&str]) -> std::path::PathBuf {
    run_itest(dir, runs, &experiment_toml(&shared_data().join("ml-100k"), 3), sets)
}

fn test_metrics(run_dir: &Path) -> serde_json::Value {
    let m: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(run_dir.join("metrics.json")).unwrap()).unwrap();
    m["test"].clone()
}

/// `epoch/lr` of each epoch, from the run's journal.
fn logged_lrs(run_dir: &Path) -> Vec<f64> {
    journal_metric(run_dir, "epoch/lr")
}

#[test]
fn a_cosine_schedule_decays_to_its_floor_and_a_flat_one_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let constant = run(dir.path(), "constant", &[]);
    assert!(logged_lrs(&constant).is_empty(), "a constant step size is not logged per epoch");

    // A cosine from lr to lr: the step size is set every step, to the same value.
    let flat = run(dir.path(), "flat", &["train.lr_schedule=cosine", "train.lr_final_fraction=1.0"]);
    assert_eq!(test_metrics(&flat), test_metrics(&constant), "setting the same step size changed the run");
    assert_eq!(logged_lrs(&flat), vec![0.002; 3]);

    let cosine = run(
        dir.path(),
        "cosine",
        &["train.lr_schedule=cosine", "train.lr_warmup_steps=20", "train.lr_final_fraction=0.1"],
    );
    let lrs = logged_lrs(&cosine);
    assert_eq!(lrs.len(), 3, "{lrs:?}");
    assert!(lrs[0] < 0.002 && lrs[1] < lrs[0] && lrs[2] < lrs[1], "{lrs:?}");
    assert!((lrs[2] - 0.0002).abs() < 1e-12, "the last step runs at lr * lr_final_fraction: {lrs:?}");
    let (a, b) = (test_metrics(&cosine), test_metrics(&constant));
    assert_ne!(a, b, "the schedule did not reach the optimizer");
    // It still learns: a popularity ranking scores about 0.05 here.
    assert!(a["recall@10"].as_f64().unwrap() >= 0.06, "{a}");
}
