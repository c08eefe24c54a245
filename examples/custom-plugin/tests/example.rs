//! The custom-plugin binary as a user would run it: its two plugins are
//! listed, resolved, trained, reported and tracked like built-ins.

use std::path::{Path, PathBuf};
use std::process::Command;

#[path = "../../../tests/mlflow_server.rs"]
mod mlflow_server;

fn experiment() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("experiment.toml")
}

/// Runs the binary in `dir`; (exit code, stdout, stderr).
fn custom_plugin(dir: &Path, args: &[&str]) -> (Option<i32>, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_custom-plugin"))
        .args(args)
        .current_dir(dir)
        .env_remove("MLFLOW_TRACKING_URI")
        .output()
        .unwrap();
    (out.status.code(), String::from_utf8_lossy(&out.stdout).into(), String::from_utf8_lossy(&out.stderr).into())
}

fn run_dirs(runs: &Path) -> Vec<PathBuf> {
    std::fs::read_dir(runs.join("custom-plugin")).unwrap().map(|e| e.unwrap().path()).collect()
}

#[test]
fn plugins_lists_the_new_components_with_their_parameters() {
    let dir = tempfile::tempdir().unwrap();
    let (code, stdout, stderr) = custom_plugin(dir.path(), &["plugins"]);
    assert_eq!(code, Some(0), "{stderr}");
    for needle in [
        "type = \"clustered\"",
        "type = \"neighbour_negatives\"",
        "per_positive = 8",
        "Neighbours drawn for each row's positive (with replacement).",
        // The built-ins are all still there.
        "type = \"movielens\"",
        "type = \"mixed\"",
    ] {
        assert!(stdout.contains(needle), "plugins lacks {needle:?}:\n{stdout}");
    }
}

#[test]
fn the_example_trains_and_reports_like_a_built_in() {
    let dir = tempfile::tempdir().unwrap();
    let exp = experiment();
    let (code, stdout, stderr) = custom_plugin(dir.path(), &["run", exp.to_str().unwrap()]);
    assert_eq!(code, Some(0), "{stderr}");
    let [run] = run_dirs(&dir.path().join("runs")).try_into().unwrap();
    let resolved = std::fs::read_to_string(run.join("resolved.toml")).unwrap();
    for needle in ["type = \"neighbour_negatives\"", "window = 3", "type = \"clustered\"", "explore = 0.1"] {
        assert!(resolved.contains(needle), "resolved.toml lacks {needle:?}:\n{resolved}");
    }
    let metrics: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(run.join("metrics.json")).unwrap()).unwrap();
    let recall = metrics["test"]["recall@10"].as_f64().unwrap();
    let popular = metrics["baselines"]["most_popular"]["recall@10"].as_f64().unwrap();
    // The log has sequential structure; the model must find it.
    assert!(recall > 0.3 && recall > 5.0 * popular, "recall@10 {recall}, most popular {popular}:\n{stdout}");
    assert!(stdout.contains("report: "), "{stdout}");
}

#[test]
fn a_bad_parameter_of_the_new_sampler_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let exp = experiment();
    let (code, _, stderr) = custom_plugin(dir.path(), &["run", exp.to_str().unwrap(), "--set", "sampler.window=0"]);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.contains("[sampler] type = \"neighbour_negatives\"") && stderr.contains("key `window`"), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    let (code, _, stderr) = custom_plugin(dir.path(), &["check", exp.to_str().unwrap(), "--set", "sampler.windw=2"]);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.contains("windw"), "{stderr}");
}

#[test]
fn the_run_is_tracked_in_mlflow_like_a_built_in() {
    let Some(server) = mlflow_server::MlflowServer::start() else { return };
    let dir = tempfile::tempdir().unwrap();
    let exp = experiment();
    let uri = format!("tracking.tracking_uri=\"{}\"", server.url);
    let args = ["run", exp.to_str().unwrap(), "--set", "tracking.type=\"mlflow\"", "--set", &uri];
    let (code, _, stderr) = custom_plugin(dir.path(), &args);
    assert_eq!(code, Some(0), "{stderr}");
    // The run, and its baseline nested under it.
    let runs = server.runs("custom-plugin");
    assert_eq!(runs.len(), 2, "{runs:?}");
    let is_nested =
        |r: &serde_json::Value| r["data"]["tags"].as_array().unwrap().iter().any(|t| t["key"] == "mlflow.parentRunId");
    let (run, baseline) = if is_nested(&runs[0]) { (&runs[1], &runs[0]) } else { (&runs[0], &runs[1]) };
    assert!(!is_nested(run) && is_nested(baseline), "{runs:?}");
    assert_eq!(baseline["info"]["run_name"], "custom-plugin · baseline most_popular");
    let params: std::collections::BTreeMap<String, String> = run["data"]["params"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| (p["key"].as_str().unwrap().into(), p["value"].as_str().unwrap().into()))
        .collect();
    assert_eq!(params["sampler.type"], "neighbour_negatives");
    assert_eq!(params["sampler.per_positive"], "8");
    assert_eq!(params["dataset.type"], "clustered");
    assert_eq!(run["info"]["status"], "FINISHED");
}
