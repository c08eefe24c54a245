//! `[train] engine`: the device-resident step against the host step, through
//! the real binary on ml-100k.

use std::path::{Path, PathBuf};

use crate::util::*;

/// Runs 3 epochs with `sampler` (the `[sampler]` table's body) and `sets`
/// into `runs`; returns the run folder.
fn run(dir: &Path, runs: &str, sampler: &str, sets: &[&str]) -> PathBuf {
    let toml = experiment_toml(&shared_data().join("ml-100k"), 3);
    let uniform = "type = \"uniform\"\nnum_negatives = 200";
    assert!(toml.contains(uniform));
    run_itest(dir, runs, &toml.replace(uniform, sampler), sets)
}

fn test_recall(run_dir: &Path) -> f64 {
    let m: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(run_dir.join("metrics.json")).unwrap()).unwrap();
    m["test"]["recall@10"].as_f64().unwrap()
}

fn epoch_losses(run_dir: &Path) -> Vec<f64> {
    journal_metric(run_dir, "epoch/loss")
}

#[test]
fn the_device_step_trains_the_host_steps_model() {
    let dir = tempfile::tempdir().unwrap();
    // The headline's sampler (in-batch and uniform negatives, logQ) with
    // normalised vectors, and the exact softmax over the catalog.
    let samplers: [(&str, &[&str]); 2] = [
        (
            "type = \"mixed\"\nnum_uniform = 200\nlog_q_correction = true",
            &["model.normalize=true", "model.temperature=0.1"],
        ),
        ("type = \"full\"", &[]),
    ];
    for (i, (sampler, sets)) in samplers.into_iter().enumerate() {
        let with = |engine: &'static str| [sets.to_vec(), vec![engine]].concat();
        let host = run(dir.path(), &format!("host{i}"), sampler, &with("train.engine=host"));
        let device = run(dir.path(), &format!("device{i}"), sampler, &with("train.engine=device"));
        let (a, b) = (epoch_losses(&host), epoch_losses(&device));
        assert_eq!(a.len(), 3);
        // Only rounding differs (sums in other orders); over the first
        // epoch it stays near 1e-8 relative here, and grows after.
        for (epoch, (x, y)) in a.iter().zip(&b).enumerate() {
            let tolerance = if epoch == 0 { 1e-6 } else { 1e-4 };
            assert!(((x - y) / x).abs() < tolerance, "sampler {i}, epoch {}: host {x} vs device {y}", epoch + 1);
        }
        let (x, y) = (test_recall(&host), test_recall(&device));
        assert!((x - y).abs() < 0.005, "sampler {i}: test recall@10 host {x} vs device {y}");
        assert!(y >= 0.06, "sampler {i}: the device step learned too little ({y}; popularity scores about 0.05)");
        if i == 0 {
            let again = run(dir.path(), "again", sampler, &with("train.engine=device"));
            assert_eq!(epoch_losses(&again), b, "the same seed gave different losses on the device");
        }
    }
}

#[test]
fn the_device_engine_refuses_a_model_it_does_not_cover_before_training() {
    let dir = tempfile::tempdir().unwrap();
    write(&dir.path().join("exp.toml"), &experiment_toml(&shared_data().join("ml-100k"), 3));
    let out = funnel(
        dir.path(),
        &[
            "run",
            "exp.toml",
            "--set",
            "model.sequence_encoder=gru",
            "--set",
            "train.engine=device",
            "--runs-dir",
            "runs",
        ],
    );
    out.assert_error(&["engine = \"device\"", "sequence encoder", "engine = \"host\""]);
    assert!(!out.stderr.contains("epoch 1"), "it trained before refusing:\n{}", out.stderr);
}
