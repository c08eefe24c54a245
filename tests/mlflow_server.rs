//! A throwaway MLflow server for tests: its own port, SQLite store and
//! artifacts in a temp folder, killed on drop. Shared by funnel's
//! integration tests and the custom-plugin example's (`#[path]`), each of
//! which uses part of it.

#![allow(dead_code)]

use std::io::Read;
use std::net::TcpListener;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

/// A throwaway MLflow server: SQLite store and artifacts in a temp folder.
pub struct MlflowServer {
    pub url: String,
    port: u16,
    dir: tempfile::TempDir,
    bin: PathBuf,
    child: Option<Child>,
}

/// The MLflow executable: `$TEST_MLFLOW_BIN` (set by `cargo xtask test`) or
/// the workspace's `.venv`. `None` (test skipped) only outside the full suite.
fn mlflow_bin() -> Option<PathBuf> {
    let bin = std::env::var_os("TEST_MLFLOW_BIN").map(PathBuf::from).unwrap_or_else(|| {
        let here = Path::new(env!("CARGO_MANIFEST_DIR"));
        let venv = |dir: &Path| dir.join(".venv/bin/mlflow");
        here.ancestors().map(venv).find(|b| b.is_file()).unwrap_or_else(|| venv(here))
    });
    if bin.is_file() {
        return Some(bin);
    }
    let slow = std::env::var_os("RUN_SLOW_TESTS").is_some_and(|v| v == "1");
    assert!(!slow, "MLflow is not installed at {}: run `cargo xtask mlflow install`", bin.display());
    eprintln!("skipped: no MLflow at {} (cargo xtask mlflow install)", bin.display());
    None
}

impl MlflowServer {
    pub fn start() -> Option<MlflowServer> {
        let bin = mlflow_bin()?;
        let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let mut server = MlflowServer {
            url: format!("http://127.0.0.1:{port}"),
            port,
            dir: tempfile::tempdir().unwrap(),
            bin,
            child: None,
        };
        server.restart();
        Some(server)
    }

    /// Starts the server (again) on the same port and store.
    pub fn restart(&mut self) {
        let log = std::fs::File::create(self.dir.path().join("server.log")).unwrap();
        let child = Command::new(&self.bin)
            .args(["server", "--host", "127.0.0.1", "--port", &self.port.to_string(), "--workers", "1"])
            .arg("--backend-store-uri")
            .arg(format!("sqlite:///{}", self.dir.path().join("mlflow.db").display()))
            .arg("--serve-artifacts")
            .arg("--artifacts-destination")
            .arg(self.dir.path().join("artifacts"))
            .env("MLFLOW_SERVER_ENABLE_JOB_EXECUTION", "false")
            // Its telemetry thread sets and unsets an environment variable while
            // the server copies the environment, which can fail the start; nothing
            // here reports usage anyway.
            .env("MLFLOW_DISABLE_TELEMETRY", "true")
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .stdin(Stdio::null())
            .process_group(0)
            .spawn()
            .expect("mlflow server starts");
        self.child = Some(child);
        let started = Instant::now();
        while ureq::get(&format!("{}/health", self.url)).call().is_err() {
            let log = std::fs::read_to_string(self.dir.path().join("server.log")).unwrap_or_default();
            assert!(started.elapsed() < Duration::from_secs(120), "MLflow did not come up:\n{log}");
            std::thread::sleep(Duration::from_millis(250));
        }
    }

    /// Kills the server and its workers at once, as a crash would.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = Command::new("kill").args(["-KILL", "--", &format!("-{}", child.id())]).status();
            let _ = child.wait();
        }
    }

    pub fn get(&self, endpoint: &str, query: &[(&str, &str)]) -> Value {
        let mut request = ureq::get(&format!("{}/api/2.0/mlflow/{endpoint}", self.url));
        for (k, v) in query {
            request = request.query(k, v);
        }
        serde_json::from_str(&request.call().unwrap().into_string().unwrap()).unwrap()
    }

    /// Every run of experiment `name`.
    pub fn runs(&self, name: &str) -> Vec<Value> {
        let experiment = self.get("experiments/get-by-name", &[("experiment_name", name)]);
        let id = experiment["experiment"]["experiment_id"].as_str().unwrap().to_string();
        let body = serde_json::json!({"experiment_ids": [id]}).to_string();
        let found: Value = serde_json::from_str(
            &ureq::post(&format!("{}/api/2.0/mlflow/runs/search", self.url))
                .set("Content-Type", "application/json")
                .send_string(&body)
                .unwrap()
                .into_string()
                .unwrap(),
        )
        .unwrap();
        found["runs"].as_array().unwrap().clone()
    }

    /// The only run of experiment `name`.
    pub fn only_run(&self, name: &str) -> Value {
        let runs = self.runs(name);
        assert_eq!(runs.len(), 1, "{runs:?}");
        runs[0].clone()
    }

    /// Steps logged for `key`, in order.
    pub fn history(&self, run_id: &str, key: &str) -> Vec<(u64, f64)> {
        let h = self.get("metrics/get-history", &[("run_id", run_id), ("metric_key", key)]);
        let mut points: Vec<(u64, f64)> = h["metrics"]
            .as_array()
            .map(|a| a.iter().map(|m| (m["step"].as_u64().unwrap(), m["value"].as_f64().unwrap())).collect())
            .unwrap_or_default();
        points.sort_by_key(|p| p.0);
        points
    }

    /// The run's artifact `path` as text, as the UI fetches it.
    pub fn artifact_text(&self, run_id: &str, path: &str) -> String {
        ureq::get(&format!("{}/get-artifact", self.url))
            .query("path", path)
            .query("run_uuid", run_id)
            .call()
            .unwrap()
            .into_string()
            .unwrap()
    }

    /// Files stored under `root` in the artifact store (e.g. a logged
    /// model's `<experiment>/models/<id>/artifacts`), relative to it.
    pub fn stored_files(&self, root: &str) -> Vec<String> {
        let listing: Value = serde_json::from_str(
            &ureq::get(&format!("{}/api/2.0/mlflow-artifacts/artifacts", self.url))
                .query("path", root)
                .call()
                .unwrap()
                .into_string()
                .unwrap(),
        )
        .unwrap();
        let mut out = Vec::new();
        for f in listing["files"].as_array().cloned().unwrap_or_default() {
            let p = f["path"].as_str().unwrap().to_string();
            if f["is_dir"].as_bool().unwrap_or(false) {
                out.extend(self.stored_files(&format!("{root}/{p}")).into_iter().map(|q| format!("{p}/{q}")));
            } else {
                out.push(p);
            }
        }
        out
    }

    pub fn stored_bytes(&self, path: &str) -> Vec<u8> {
        let mut bytes = Vec::new();
        ureq::get(&format!("{}/api/2.0/mlflow-artifacts/artifacts/{path}", self.url))
            .call()
            .unwrap()
            .into_reader()
            .read_to_end(&mut bytes)
            .unwrap();
        bytes
    }

    pub fn stored_text(&self, path: &str) -> String {
        String::from_utf8(self.stored_bytes(path)).unwrap()
    }

    /// Artifact paths of the run, recursively.
    pub fn artifacts(&self, run_id: &str, path: &str) -> Vec<String> {
        let listing = self.get("artifacts/list", &[("run_id", run_id), ("path", path)]);
        let mut out = Vec::new();
        for f in listing["files"].as_array().cloned().unwrap_or_default() {
            let p = f["path"].as_str().unwrap().to_string();
            if f["is_dir"].as_bool().unwrap() {
                out.extend(self.artifacts(run_id, &p));
            } else {
                out.push(p);
            }
        }
        out
    }
}

impl Drop for MlflowServer {
    fn drop(&mut self) {
        self.kill();
    }
}
