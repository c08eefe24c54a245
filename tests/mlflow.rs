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
    // Named after the experiment: nothing was overridden.
    assert_eq!(info["run_name"], "itest");
    let run_id = info["run_id"].as_str().unwrap();

    let params = map(&run["data"]["params"]);
    for (key, value) in [
        ("model.type", "youtube_dnn"),
        ("model.dim", "32"),
        ("model.hidden", "[64]"),
        // f32 parameters as the shortest decimal, so a UI filter on 0.1 finds them.
        ("model.temperature", "1.0"),
        ("sampler.type", "uniform"),
        ("sampler.num_negatives", "200"),
        ("train.epochs", "3"),
        ("tracking.type", "mlflow"),
        ("dataset.variant", "ml-100k"),
    ] {
        assert_eq!(params.get(key).map(String::as_str), Some(value), "param {key}: {params:?}");
    }
    // The GRU's sizes mean nothing to the averaging encoder: not logged.
    assert!(!params.contains_key("model.gru_hidden") && !params.contains_key("model.gru_pooling"), "{params:?}");
    let tags = map(&run["data"]["tags"]);
    for key in [
        "funnel.git.commit",
        "funnel.git.dirty",
        "config.hash",
        "dataset.name",
        "dataset.sha256",
        "host",
        "funnel.version",
        "funnel.seed",
        "mlflow.user",
    ] {
        assert!(tags.get(key).is_some_and(|v| !v.is_empty()), "tag {key}: {tags:?}");
    }
    assert_eq!(tags["dataset.name"], "movielens/ml-100k");
    // Every --set is recorded, though where a run is tracked does not name it.
    assert_eq!(tags["funnel.overrides"], format!("tracking.type=mlflow; {uri}"));
    assert!(!tags.contains_key("funnel.trial"), "{tags:?}");
    // The experiment file sits outside any repository: the build's commit stands in.
    assert!(!tags.contains_key("git.commit"), "{tags:?}");
    assert_eq!(tags["mlflow.source.git.commit"], tags["funnel.git.commit"]);
    assert_eq!(tags["mlflow.note.content"], "integration test");
    assert_eq!(tags["mlflow.source.name"], "exp.toml");
    assert_eq!(tags["mlflow.source.type"], "LOCAL");
    assert_eq!(info["user_id"], tags["mlflow.user"].as_str());

    // The experiment: described from the file, opening on its training runs.
    let experiment = server.get("experiments/get-by-name", &[("experiment_name", "itest")]);
    let experiment_tags = map(&experiment["experiment"]["tags"]);
    assert_eq!(experiment_tags["mlflow.note.content"], "integration test");
    assert_eq!(experiment_tags["mlflow.experimentKind"], "custom_model_development");

    // The dataset as the run's input.
    let inputs = run["inputs"]["dataset_inputs"].as_array().unwrap();
    assert_eq!(inputs.len(), 1, "{inputs:?}");
    let dataset = &inputs[0]["dataset"];
    assert_eq!(dataset["name"], "movielens/ml-100k");
    assert!(tags["dataset.sha256"].starts_with(dataset["digest"].as_str().unwrap()), "{dataset}");
    assert_eq!(dataset["digest"].as_str().unwrap().len(), 36);
    let profile: Value = serde_json::from_str(dataset["profile"].as_str().unwrap()).unwrap();
    let report = std::fs::read_to_string(run_dir.join("report.md")).unwrap();
    assert!(report.contains(&format!("| users | {} |", profile["users"])), "{profile}\n{report}");
    assert!(profile["items"].as_u64().unwrap() > 1000 && profile["positives"].as_u64().unwrap() > 50_000, "{profile}");
    assert_eq!(map(&inputs[0]["tags"])["mlflow.data.context"], "training");

    // Per-epoch histories under epoch/ with their steps; the selected
    // epoch's validation and the test metrics as one value each.
    assert_eq!(server.history(run_id, "epoch/loss").iter().map(|p| p.0).collect::<Vec<_>>(), vec![1, 2, 3]);
    assert_eq!(server.history(run_id, "epoch/validation/recall_at_10").len(), 3);
    assert_eq!(server.history(run_id, "epoch/examples_per_second").len(), 3);
    assert_eq!(server.history(run_id, "serving/recall_vs_exact_at_10").len(), 1);
    let metrics: Value = serde_json::from_str(&std::fs::read_to_string(run_dir.join("metrics.json")).unwrap()).unwrap();
    let test_recall = server.history(run_id, "test/recall_at_10");
    assert_eq!(test_recall.len(), 1);
    assert!((test_recall[0].1 - metrics["test"]["recall@10"].as_f64().unwrap()).abs() < 1e-12);
    let at_best = server.history(run_id, "validation_at_best/recall_at_10");
    assert_eq!(at_best.len(), 1);
    assert!((at_best[0].1 - metrics["validation_at_best"]["recall@10"].as_f64().unwrap()).abs() < 1e-12);
    assert_eq!(server.history(run_id, "best_epoch")[0].1, metrics["best_epoch"].as_f64().unwrap());
    assert_server_has_every_metric(&server, run_id, &run_dir);

    let artifacts = server.artifacts(run_id, "");
    for a in [
        "resolved.toml",
        "report.md",
        "metrics.json",
        "candidate_probabilities.tsv",
        "plots/loss.svg",
        "plots/validation.svg",
        "test_ranks.tsv",
    ] {
        assert!(artifacts.iter().any(|p| p == a), "artifact {a} missing: {artifacts:?}");
    }
    // MLflow's Markdown preview resolves no relative link: its copy of the
    // report points at the server; the run folder's keeps relative links.
    let uploaded = server.artifact_text(run_id, "report.md");
    let absolute = format!("]({}/get-artifact?path=plots%2Floss.svg&run_uuid={run_id})", server.url);
    assert!(uploaded.contains(&absolute), "{uploaded}");
    assert!(report.contains("](plots/loss.svg)") && !report.contains("get-artifact"), "{report}");

    // The model as an MLflow logged model, an output of the run, with what
    // `funnel recommend` loads.
    let outputs = run["outputs"]["model_outputs"].as_array().unwrap();
    assert_eq!(outputs.len(), 1, "{outputs:?}");
    assert_eq!(outputs[0]["step"].as_u64(), metrics["best_epoch"].as_u64());
    let model_id = outputs[0]["model_id"].as_str().unwrap();
    let model = server.get(&format!("logged-models/{model_id}"), &[]);
    let model_info = &model["model"]["info"];
    assert_eq!(model_info["status"], "LOGGED_MODEL_READY");
    assert_eq!(model_info["source_run_id"].as_str(), Some(run_id));
    assert_eq!(model_info["name"], "youtube_dnn");
    assert_eq!(map(&model["model"]["data"]["params"])["model.dim"], "32");
    let experiment_id = info["experiment_id"].as_str().unwrap();
    let model_root = format!("{experiment_id}/models/{model_id}/artifacts");
    let files = server.stored_files(&model_root);
    for f in ["MLmodel", "model.bin", "item_vectors.arrow", "resolved.toml", "index/exact_items.bin"] {
        assert!(files.iter().any(|p| p == f), "model file {f} missing: {files:?}");
    }
    let mlmodel = server.stored_text(&format!("{model_root}/MLmodel"));
    assert!(mlmodel.contains(&format!("run_id: \"{run_id}\"")) && mlmodel.contains("funnel recommend"), "{mlmodel}");
    // Downloaded, the model answers `funnel recommend` as the run folder does.
    let downloaded = dir.path().join("downloaded");
    for f in &files {
        let bytes = server.stored_bytes(&format!("{model_root}/{f}"));
        std::fs::create_dir_all(downloaded.join(f).parent().unwrap()).unwrap();
        std::fs::write(downloaded.join(f), bytes).unwrap();
    }
    let ask = |run: &Path| {
        let out = funnel(dir.path(), &["recommend", "--run", run.to_str().unwrap(), "--items", "50,172,181"]);
        out.assert_success();
        out.stdout
    };
    assert_eq!(ask(&downloaded), ask(&run_dir));

    let state: Value = serde_json::from_str(&std::fs::read_to_string(run_dir.join("mlflow.json")).unwrap()).unwrap();
    let journal_lines = std::fs::read_to_string(run_dir.join("journal.jsonl")).unwrap().lines().count();
    assert_eq!(state["sent"].as_u64().unwrap() as usize, journal_lines, "everything acknowledged");
}

#[test]
fn overrides_name_the_run_and_a_failed_run_says_why() {
    let Some(server) = MlflowServer::start() else { return };
    let dir = tempfile::tempdir().unwrap();
    let uri = format!("tracking.tracking_uri={}", server.url);
    let sets = ["--set", &uri, "--set", "model.temperature=0.1", "--set", "sampler.num_negatives=150"];
    finish(run_ml100k_into(dir.path(), 1, &sets));
    let run = server.only_run("itest");
    assert_eq!(run["info"]["run_name"], "itest · model.temperature=0.1 · sampler.num_negatives=150");
    let tags = map(&run["data"]["tags"]);
    assert_eq!(
        tags["funnel.overrides"],
        format!("tracking.type=mlflow; {uri}; model.temperature=0.1; sampler.num_negatives=150")
    );
    let note = &tags["mlflow.note.content"];
    assert!(
        note.starts_with("integration test") && note.contains("`--set sampler.num_negatives=150`"),
        "the note states the overrides: {note}"
    );
    assert_eq!(map(&run["data"]["params"])["model.temperature"], "0.1");

    // A run that fails once its data is loaded (K beyond the catalog) is
    // FAILED in MLflow with its error, its failure report and its files.
    let failing = tempfile::tempdir().unwrap();
    let child = run_ml100k_into(
        failing.path(),
        2,
        &[
            "--set",
            &uri,
            "--set",
            "experiment.name=itest-failed",
            "--set",
            "index.type=exact",
            "--set",
            "evaluation.ks=[10, 5000]",
        ],
    );
    let out = child.wait_with_output().unwrap();
    assert!(!out.status.success());
    let run = server.only_run("itest-failed");
    assert_eq!(run["info"]["status"], "FAILED");
    let tags = map(&run["data"]["tags"]);
    let error = &tags["funnel.error"];
    assert!(error.contains("5000"), "{error}");
    assert!(tags["mlflow.note.content"].contains("**Failed:**"), "{tags:?}");
    let run_id = run["info"]["run_id"].as_str().unwrap();
    let artifacts = server.artifacts(run_id, "");
    assert!(
        artifacts.iter().any(|a| a == "report.md") && artifacts.iter().any(|a| a == "resolved.toml"),
        "{artifacts:?}"
    );
    assert!(server.artifact_text(run_id, "report.md").contains("(failed)"));
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
    assert_eq!(server.history(run_id, "epoch/loss").len(), 6);
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
        runs.iter().partition(|r| r["info"]["run_name"] == "itest · sweep");
    assert_eq!(parents.len(), 1, "{runs:?}");
    let parent_id = parents[0]["info"]["run_id"].as_str().unwrap();
    assert_eq!(parents[0]["info"]["status"], "FINISHED");
    let mut names: Vec<&str> = children.iter().map(|c| c["info"]["run_name"].as_str().unwrap()).collect();
    names.sort();
    assert_eq!(names, ["itest · base · seed 7", "itest · trial 0 · seed 7", "itest · trial 1 · seed 7"]);
    for child in &children {
        let tags = map(&child["data"]["tags"]);
        assert_eq!(tags.get("mlflow.parentRunId").map(String::as_str), Some(parent_id), "{child}");
        assert_eq!(child["info"]["status"], "FINISHED");
        assert_eq!(tags["funnel.seed"], "7");
        if let Some(trial) = tags.get("funnel.trial") {
            assert!(child["info"]["run_name"].as_str().unwrap().contains(&format!("trial {trial}")));
            assert!(tags["mlflow.note.content"].contains("`model.dim="), "{tags:?}");
        }
    }
    // The parent holds the sweep's own parameters, not the base file's.
    let params = map(&parents[0]["data"]["params"]);
    assert_eq!(params.get("sweep.method").map(String::as_str), Some("grid"), "{params:?}");
    assert_eq!(params.get("sweep.params.model.dim").map(String::as_str), Some("[8, 16]"), "{params:?}");
    assert!(!params.contains_key("train.epochs") && !params.contains_key("model.dim"), "{params:?}");
    assert_eq!(server.history(parent_id, "trial/validation/recall_at_10").len(), 3);
    assert_eq!(server.history(parent_id, "best/validation/recall_at_10").len(), 1);
    let best = &map(&parents[0]["data"]["tags"])["funnel.best"];
    assert!(best == "base" || best.starts_with("configuration "), "{best}");
    let artifacts = server.artifacts(parent_id, "");
    assert!(
        artifacts.iter().any(|a| a == "report.md") && artifacts.iter().any(|a| a == "plots/model_dim.svg"),
        "{artifacts:?}"
    );
}
