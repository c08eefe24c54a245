//! Tracking into a real MLflow server: each test starts its own server on
//! loopback (from the MLflow that `cargo xtask test` installs), runs the real
//! binary, and reads the run back through MLflow's REST API.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::mlflow_server::MlflowServer;
use crate::util::*;

fn map(list: &Value) -> std::collections::BTreeMap<String, String> {
    list.as_array()
        .map(|a| a.iter().map(|e| (e["key"].as_str().unwrap().into(), e["value"].as_str().unwrap().into())).collect())
        .unwrap_or_default()
}

fn only_run_dir(runs: &Path) -> PathBuf {
    let dirs: Vec<PathBuf> = std::fs::read_dir(runs.join("itest")).unwrap().map(|e| e.unwrap().path()).collect();
    assert_eq!(dirs.len(), 1);
    dirs[0].clone()
}

/// Every (key, step) -> value the journal of `run_dir` holds, with keys as
/// MLflow spells them.
fn journaled_metrics(run_dir: &Path) -> std::collections::BTreeMap<(String, u64), f64> {
    let mut out = std::collections::BTreeMap::new();
    for line in std::fs::read_to_string(run_dir.join("journal.jsonl")).unwrap().lines() {
        let e: Value = serde_json::from_str(line).unwrap();
        if e["event"] == "metrics" {
            for (k, v) in e["metrics"].as_object().unwrap() {
                out.insert((k.replace('@', "_at_"), e["step"].as_u64().unwrap()), v.as_f64().unwrap());
            }
        }
    }
    out
}

fn assert_server_has_every_metric(server: &MlflowServer, run_id: &str, run_dir: &Path) {
    let journaled = journaled_metrics(run_dir);
    assert!(journaled.len() > 20, "{journaled:?}");
    for ((key, step), value) in &journaled {
        let history = server.history(run_id, key);
        assert!(
            history.iter().any(|(s, v)| s == step && (v - value).abs() < 1e-9),
            "{key} at step {step}: {history:?}"
        );
    }
}

fn run_ml100k_into(dir: &Path, epochs: usize, extra: &[&str]) -> std::process::Child {
    write(&dir.join("exp.toml"), &experiment_toml(&shared_data().join("ml-100k"), epochs));
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_funnel"));
    cmd.current_dir(dir)
        .args(["run", "exp.toml", "--runs-dir", "runs", "--reports-dir", "reports", "--set", "tracking.type=mlflow"])
        .args(extra)
        .env_remove("MLFLOW_TRACKING_URI")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (k, _) in std::env::vars() {
        if k.starts_with("FUNNEL_") {
            cmd.env_remove(k);
        }
    }
    cmd.spawn().unwrap()
}

fn finish(child: std::process::Child) -> String {
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "run failed:\n{stderr}");
    stderr
}

#[test]
fn a_run_lands_in_mlflow_with_params_tags_metric_histories_and_artifacts() {
    let Some(server) = MlflowServer::start() else { return };
    let dir = tempfile::tempdir().unwrap();
    let uri = format!("tracking.tracking_uri={}", server.url);
    finish(run_ml100k_into(dir.path(), 3, &["--set", &uri]));
    let run_dir = only_run_dir(&dir.path().join("runs"));

    let run = server.only_run("itest");
    let info = &run["info"];
    assert_eq!(info["status"], "FINISHED");
    assert_eq!(info["run_name"].as_str().unwrap(), run_dir.file_name().unwrap().to_str().unwrap());
    let run_id = info["run_id"].as_str().unwrap();

    let params = map(&run["data"]["params"]);
    for (key, value) in [
        ("model.type", "youtube_dnn"),
        ("model.dim", "32"),
        ("model.hidden", "[64]"),
        ("sampler.type", "uniform"),
        ("sampler.num_negatives", "200"),
        ("train.epochs", "3"),
        ("tracking.type", "mlflow"),
        ("dataset.variant", "ml-100k"),
    ] {
        assert_eq!(params.get(key).map(String::as_str), Some(value), "param {key}: {params:?}");
    }
    let tags = map(&run["data"]["tags"]);
    for key in [
        "funnel.git.commit",
        "funnel.git.dirty",
        "config.hash",
        "dataset.name",
        "dataset.sha256",
        "host",
        "funnel.version",
    ] {
        assert!(tags.get(key).is_some_and(|v| !v.is_empty()), "tag {key}: {tags:?}");
    }
    assert_eq!(tags["dataset.name"], "movielens/ml-100k");
    // The experiment file sits outside any repository: the build's commit stands in.
    assert!(!tags.contains_key("git.commit"), "{tags:?}");
    assert_eq!(tags["mlflow.source.git.commit"], tags["funnel.git.commit"]);
    assert_eq!(tags["mlflow.note.content"], "integration test");

    // Per-epoch histories with their steps; final test metrics.
    assert_eq!(server.history(run_id, "train/loss").iter().map(|p| p.0).collect::<Vec<_>>(), vec![1, 2, 3]);
    assert_eq!(server.history(run_id, "validation/recall_at_10").len(), 3);
    assert_eq!(server.history(run_id, "train/examples_per_second").len(), 3);
    assert_eq!(server.history(run_id, "serving/recall_vs_exact_at_10").len(), 1);
    let metrics: Value = serde_json::from_str(&std::fs::read_to_string(run_dir.join("metrics.json")).unwrap()).unwrap();
    let test_recall = server.history(run_id, "test/recall_at_10");
    assert_eq!(test_recall.len(), 1);
    assert!((test_recall[0].1 - metrics["test"]["recall@10"].as_f64().unwrap()).abs() < 1e-12);
    assert_server_has_every_metric(&server, run_id, &run_dir);

    let artifacts = server.artifacts(run_id, "");
    for a in [
        "resolved.toml",
        "report.md",
        "metrics.json",
        "item_vectors.arrow",
        "candidate_probabilities.tsv",
        "plots/loss.svg",
        "plots/validation.svg",
        "model.bin",
        "test_ranks.tsv",
        "index/exact_items.bin",
    ] {
        assert!(artifacts.iter().any(|p| p == a), "artifact {a} missing: {artifacts:?}");
    }
    let state: Value = serde_json::from_str(&std::fs::read_to_string(run_dir.join("mlflow.json")).unwrap()).unwrap();
    let journal_lines = std::fs::read_to_string(run_dir.join("journal.jsonl")).unwrap().lines().count();
    assert_eq!(state["sent"].as_u64().unwrap() as usize, journal_lines, "everything acknowledged");
}

#[test]
fn killing_the_server_mid_run_loses_nothing_once_synced() {
    let Some(mut server) = MlflowServer::start() else { return };
    let dir = tempfile::tempdir().unwrap();
    let uri = format!("tracking.tracking_uri={}", server.url);
    let child = run_ml100k_into(dir.path(), 6, &["--set", &uri]);

    // Kill the server once it has the run's start and first epoch.
    let started = Instant::now();
    let acknowledged = |dir: &Path| -> u64 {
        let Ok(runs) = std::fs::read_dir(dir.join("runs/itest")) else { return 0 };
        runs.flatten()
            .filter_map(|r| std::fs::read_to_string(r.path().join("mlflow.json")).ok())
            .filter_map(|t| serde_json::from_str::<Value>(&t).ok())
            .map(|v| v["sent"].as_u64().unwrap_or(0))
            .max()
            .unwrap_or(0)
    };
    while acknowledged(dir.path()) < 2 {
        assert!(started.elapsed() < Duration::from_secs(300), "the run never reached MLflow");
        std::thread::sleep(Duration::from_millis(20));
    }
    server.kill();
    let stderr = finish(child);
    assert!(stderr.contains("warning: MLflow at"), "the outage went unnoticed:\n{stderr}");
    assert!(stderr.contains("cargo xtask mlflow sync"), "{stderr}");
    let run_dir = only_run_dir(&dir.path().join("runs"));
    let journal_lines = std::fs::read_to_string(run_dir.join("journal.jsonl")).unwrap().lines().count();
    assert!((acknowledged(dir.path()) as usize) < journal_lines, "the kill came after the run had finished");

    server.restart();
    let line = funnel_tracker_mlflow::sync::sync_run(&run_dir, None, None).unwrap();
    assert!(line.starts_with("sent "), "{line}");
    let run = server.only_run("itest");
    assert_eq!(run["info"]["status"], "FINISHED");
    let run_id = run["info"]["run_id"].as_str().unwrap();
    assert_eq!(server.history(run_id, "train/loss").len(), 6);
    assert_server_has_every_metric(&server, run_id, &run_dir);
    assert!(server.artifacts(run_id, "").iter().any(|p| p == "report.md"));
    // A second sync has nothing left to send.
    let again = funnel_tracker_mlflow::sync::sync_run(&run_dir, None, None).unwrap();
    assert!(again.starts_with("up to date"), "{again}");
}

#[test]
fn without_a_server_the_run_is_journaled_and_uploaded_later() {
    let Some(server) = MlflowServer::start() else { return };
    let dir = tempfile::tempdir().unwrap();
    let stderr = finish(run_ml100k_into(dir.path(), 2, &[]));
    assert!(stderr.contains("no MLflow server given"), "{stderr}");
    let run_dir = only_run_dir(&dir.path().join("runs"));
    assert!(!run_dir.join("mlflow.json").exists());
    let e = funnel_tracker_mlflow::sync::sync_run(&run_dir, None, None).unwrap_err().to_string();
    assert!(e.contains("--tracking-uri"), "{e}");

    funnel_tracker_mlflow::sync::sync_run(&run_dir, Some(&server.url), None).unwrap();
    let run = server.only_run("itest");
    let run_id = run["info"]["run_id"].as_str().unwrap();
    assert_eq!(map(&run["data"]["params"])["model.dim"], "32");
    assert_server_has_every_metric(&server, run_id, &run_dir);
}

#[test]
fn a_sweep_nests_its_runs_under_one_parent_run() {
    let Some(server) = MlflowServer::start() else { return };
    let dir = tempfile::tempdir().unwrap();
    let text = synthetic_experiment(dir.path(), 30, 1).replace("ks = [10, 50]", "ks = [5, 10]")
        + "\n[sweep]\nmethod = \"grid\"\n[sweep.params]\n\"model.dim\" = [8, 16]\n";
    write(&dir.path().join("exp.toml"), &text);
    let uri = format!("tracking.tracking_uri={}", server.url);
    funnel(dir.path(), &["sweep", "exp.toml", "--set", "tracking.type=mlflow", "--set", &uri, "--jobs", "2"])
        .assert_success();

    let runs = server.runs("itest");
    assert_eq!(runs.len(), 4, "parent + base + 2 trials: {runs:?}");
    let (parents, children): (Vec<&Value>, Vec<&Value>) =
        runs.iter().partition(|r| r["info"]["run_name"].as_str().unwrap().starts_with("sweep-"));
    assert_eq!(parents.len(), 1);
    let parent_id = parents[0]["info"]["run_id"].as_str().unwrap();
    assert_eq!(parents[0]["info"]["status"], "FINISHED");
    for child in &children {
        assert_eq!(
            map(&child["data"]["tags"]).get("mlflow.parentRunId").map(String::as_str),
            Some(parent_id),
            "{child}"
        );
        assert_eq!(child["info"]["status"], "FINISHED");
    }
    assert_eq!(server.history(parent_id, "trial/validation/recall_at_10").len(), 3);
    let artifacts = server.artifacts(parent_id, "");
    assert!(
        artifacts.iter().any(|a| a == "report.md") && artifacts.iter().any(|a| a == "plots/model_dim.svg"),
        "{artifacts:?}"
    );
}
