//! The MLflow REST calls funnel makes.
//!
//! mlflow_rs covers experiments, so experiment lookup and creation go
//! through it. Around it, on one reused HTTP client, the calls it lacks or
//! cannot be used for here:
//! - `runs/create`: mlflow_rs's `create_run` refuses a dirty git tree and
//!   shells out to git (funnel runs from installed binaries and dirty trees;
//!   it records git state as tags itself), and takes no start time (a replay
//!   must keep the original one);
//! - `runs/log-batch` (params, tags and metrics with their own timestamps;
//!   mlflow_rs logs one value per request, building a new client each time);
//! - `runs/update` with an explicit end time;
//! - artifact upload through the `mlflow-artifacts` REST API (mlflow_rs posts
//!   to the web UI's internal `ajax-api` route);
//! - MLflow 3's dataset inputs, logged models and run outputs, and
//!   experiment tags, which mlflow_rs does not know.

use std::path::Path;
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use serde::Deserialize;
use serde_json::{json, Value};

/// MLflow's limits per `log-batch` request.
const MAX_PARAMS: usize = 100;
const MAX_METRICS: usize = 1000;

/// A created run: where it lives and where its artifacts go.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, Deserialize)]
pub struct RunHandle {
    pub experiment_id: String,
    pub run_id: String,
    pub artifact_uri: String,
}

/// A logged model (MLflow 3): its id and where its files go.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, Deserialize)]
pub struct ModelHandle {
    pub model_id: String,
    pub artifact_uri: String,
}

/// Longest dataset digest MLflow stores.
const MAX_DIGEST: usize = 36;

/// A metric value as MLflow stores it.
#[derive(Debug, Clone, PartialEq)]
pub struct MetricPoint {
    pub key: String,
    pub value: f64,
    pub timestamp_ms: u64,
    pub step: u64,
}

/// `key` in the characters MLflow accepts in metric, param and tag names
/// (letters, digits, `_ - . / : ` and space): `recall@10` becomes
/// `recall_at_10`, anything else unusual `_`.
pub fn mlflow_key(key: &str) -> String {
    let mut out = String::with_capacity(key.len() + 4);
    for c in key.chars() {
        match c {
            '@' => out.push_str("_at_"),
            c if c.is_ascii_alphanumeric() || "_-./: ".contains(c) => out.push(c),
            _ => out.push('_'),
        }
    }
    out
}

pub struct MlflowClient {
    base: String,
    http: reqwest::blocking::Client,
}

impl MlflowClient {
    /// A client for the server at `tracking_uri` (`http://host:port`).
    pub fn new(tracking_uri: &str, timeout: Duration) -> Result<MlflowClient> {
        let base = tracking_uri.trim_end_matches('/').to_string();
        if !(base.starts_with("http://") || base.starts_with("https://")) {
            bail!(
                "tracking URI `{tracking_uri}` is not an http(s) address; funnel talks to an MLflow tracking server \
                 (start one with `cargo xtask mlflow up`)"
            );
        }
        let http = reqwest::blocking::Client::builder()
            .connect_timeout(Duration::from_secs(5).min(timeout))
            .timeout(timeout)
            .build()?;
        Ok(MlflowClient { base, http })
    }

    pub fn base(&self) -> &str {
        &self.base
    }

    /// The id of experiment `name`, created when missing.
    pub fn experiment_id(&self, name: &str) -> Result<String> {
        use mlflow_rs::experiment::Experiment;
        let boxed = |e: Box<dyn std::error::Error>| anyhow!("{e}");
        match Experiment::search_with_name(&self.base, name) {
            Ok(e) => Ok(e.get_experiment_id().to_string()),
            Err(lookup) => match Experiment::new(&self.base, name) {
                Ok(e) => Ok(e.get_experiment_id().to_string()),
                // Created by a concurrent run between the two calls?
                Err(create) => Experiment::search_with_name(&self.base, name)
                    .map(|e| e.get_experiment_id().to_string())
                    .map_err(boxed)
                    .with_context(|| format!("finding MLflow experiment `{name}` ({lookup}; creating it: {create})")),
            },
        }
    }

    fn post(&self, endpoint: &str, body: &Value) -> Result<Value> {
        let url = format!("{}/api/2.0/mlflow/{endpoint}", self.base);
        let response = self.http.post(&url).json(body).send().with_context(|| format!("POST {url}"))?;
        Self::json(response, &url)
    }

    fn patch(&self, endpoint: &str, body: &Value) -> Result<Value> {
        let url = format!("{}/api/2.0/mlflow/{endpoint}", self.base);
        let response = self.http.patch(&url).json(body).send().with_context(|| format!("PATCH {url}"))?;
        Self::json(response, &url)
    }

    fn get(&self, endpoint: &str, query: &[(&str, &str)]) -> Result<Value> {
        let url = format!("{}/api/2.0/mlflow/{endpoint}", self.base);
        let response = self.http.get(&url).query(query).send().with_context(|| format!("GET {url}"))?;
        Self::json(response, &url)
    }

    fn json(response: reqwest::blocking::Response, url: &str) -> Result<Value> {
        let status = response.status();
        let text = response.text().with_context(|| format!("reading the answer of {url}"))?;
        if !status.is_success() {
            let message = serde_json::from_str::<Value>(&text)
                .ok()
                .and_then(|v| v["message"].as_str().map(str::to_string))
                .unwrap_or(text);
            bail!("{url}: {status}: {message}");
        }
        if text.trim().is_empty() {
            return Ok(Value::Null);
        }
        serde_json::from_str(&text).with_context(|| format!("{url} answered with something that is not JSON"))
    }

    /// Sets each of `tags` the experiment does not have yet, so a
    /// description edited in the UI stays.
    pub fn set_missing_experiment_tags(&self, experiment_id: &str, tags: &[(String, String)]) -> Result<()> {
        let answer = self.get("experiments/get", &[("experiment_id", experiment_id)])?;
        let present: Vec<&str> = answer["experiment"]["tags"]
            .as_array()
            .map(|t| t.iter().filter_map(|t| t["key"].as_str()).collect())
            .unwrap_or_default();
        for (key, value) in tags.iter().filter(|(k, v)| !present.contains(&k.as_str()) && !v.is_empty()) {
            self.post(
                "experiments/set-experiment-tag",
                &json!({"experiment_id": experiment_id, "key": key, "value": value}),
            )?;
        }
        Ok(())
    }

    pub fn create_run(
        &self,
        experiment_id: &str,
        run_name: &str,
        start_ms: u64,
        user: &str,
        tags: &[(String, String)],
    ) -> Result<RunHandle> {
        let tags: Vec<Value> = tags.iter().map(|(k, v)| json!({"key": k, "value": v})).collect();
        let answer = self.post(
            "runs/create",
            &json!({"experiment_id": experiment_id, "run_name": run_name, "start_time": start_ms, "user_id": user,
                    "tags": tags}),
        )?;
        let info = &answer["run"]["info"];
        let field =
            |k: &str| info[k].as_str().map(str::to_string).ok_or_else(|| anyhow!("runs/create answered without `{k}`"));
        Ok(RunHandle {
            experiment_id: experiment_id.to_string(),
            run_id: field("run_id")?,
            artifact_uri: field("artifact_uri")?,
        })
    }

    /// Logs params and tags, split into requests MLflow accepts.
    pub fn log_params_and_tags(
        &self,
        run_id: &str,
        params: &[(String, String)],
        tags: &[(String, String)],
    ) -> Result<()> {
        let entry = |(k, v): &(String, String)| json!({"key": mlflow_key(k), "value": v});
        for chunk in params.chunks(MAX_PARAMS) {
            let params: Vec<Value> = chunk.iter().map(entry).collect();
            self.post("runs/log-batch", &json!({"run_id": run_id, "params": params}))?;
        }
        for chunk in tags.chunks(MAX_PARAMS) {
            let tags: Vec<Value> = chunk.iter().map(entry).collect();
            self.post("runs/log-batch", &json!({"run_id": run_id, "tags": tags}))?;
        }
        Ok(())
    }

    /// Logs metric values. MLflow ignores a value it already holds with the
    /// same key, step, timestamp and value, so sending twice is harmless.
    pub fn log_metrics(&self, run_id: &str, points: &[MetricPoint]) -> Result<()> {
        for chunk in points.chunks(MAX_METRICS) {
            let metrics: Vec<Value> = chunk
                .iter()
                .map(|p| json!({"key": mlflow_key(&p.key), "value": p.value, "timestamp": p.timestamp_ms, "step": p.step}))
                .collect();
            self.post("runs/log-batch", &json!({"run_id": run_id, "metrics": metrics}))?;
        }
        Ok(())
    }

    /// Sets the run's status (`RUNNING`, `FINISHED`, `FAILED`) and end time.
    pub fn update_run(&self, run_id: &str, status: &str, end_ms: Option<u64>) -> Result<()> {
        let mut body = json!({"run_id": run_id, "status": status});
        if let Some(end) = end_ms {
            body["end_time"] = json!(end);
        }
        self.post("runs/update", &body).map(drop)
    }

    /// Uploads `file` as the artifact `artifact_path` (e.g. `plots/loss.svg`).
    pub fn upload_artifact(&self, run: &RunHandle, file: &Path, artifact_path: &str) -> Result<()> {
        let body = std::fs::read(file).with_context(|| format!("reading {}", file.display()))?;
        self.upload(&run.artifact_uri, artifact_path, body)
    }

    /// Uploads `body` as `artifact_path` under `artifact_uri` (a run's or a
    /// logged model's).
    pub fn upload(&self, artifact_uri: &str, artifact_path: &str, body: Vec<u8>) -> Result<()> {
        let root = artifact_uri.strip_prefix("mlflow-artifacts:").ok_or_else(|| {
            anyhow!(
                "the artifact store is `{artifact_uri}`; funnel uploads through the MLflow server's artifact proxy \
                 (start the server with --serve-artifacts, as `cargo xtask mlflow up` does)"
            )
        })?;
        let root = root.trim_start_matches('/');
        let url = format!("{}/api/2.0/mlflow-artifacts/artifacts/{root}/{artifact_path}", self.base);
        let response = self.http.put(&url).body(body).send().with_context(|| format!("PUT {url}"))?;
        Self::json(response, &url).map(drop)
    }

    /// Where the UI (and a browser) reads the run's artifact `path`: the
    /// address a Markdown artifact's images must have to render in MLflow's
    /// preview, which resolves no relative link.
    pub fn artifact_url(&self, run_id: &str, path: &str) -> String {
        let path: String = path
            .bytes()
            .map(|b| match b {
                b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => (b as char).to_string(),
                b => format!("%{b:02X}"),
            })
            .collect();
        format!("{}/get-artifact?path={path}&run_uuid={run_id}", self.base)
    }

    /// Logs `dataset` as the run's training input (the Datasets column).
    pub fn log_dataset_input(&self, run_id: &str, dataset: &funnel_api::DatasetInput) -> Result<()> {
        let digest: String = if dataset.sha256.is_empty() { "unrecorded".into() } else { dataset.sha256.clone() };
        let schema: Vec<Value> =
            dataset.schema.iter().map(|(name, ty)| json!({"name": name, "type": ty, "required": true})).collect();
        let profile: serde_json::Map<String, Value> =
            dataset.profile.iter().map(|(k, v)| (k.clone(), json!(v))).collect();
        let body = json!({
            "run_id": run_id,
            "datasets": [{
                "tags": [{"key": "mlflow.data.context", "value": "training"}],
                "dataset": {
                    "name": dataset.name,
                    // MLflow keeps 36 characters of a digest; the whole
                    // sha256 is in `source` and the run's dataset.sha256 tag.
                    "digest": digest.chars().take(MAX_DIGEST).collect::<String>(),
                    "source_type": "local",
                    "source": json!({"uri": dataset.source, "sha256": dataset.sha256}).to_string(),
                    "schema": json!({"mlflow_colspec": schema}).to_string(),
                    "profile": Value::Object(profile).to_string(),
                }
            }]
        });
        self.post("runs/log-inputs", &body).map(drop)
    }

    /// Creates a logged model produced by `run_id` (pending until
    /// [`MlflowClient::finalize_model`]).
    pub fn create_model(
        &self,
        experiment_id: &str,
        name: &str,
        run_id: &str,
        params: &[(String, String)],
    ) -> Result<ModelHandle> {
        let entry = |(k, v): &(String, String)| json!({"key": mlflow_key(k), "value": v});
        let (first, rest) = params.split_at(params.len().min(MAX_PARAMS));
        let answer = self.post(
            "logged-models",
            &json!({"experiment_id": experiment_id, "name": name, "model_type": "funnel", "source_run_id": run_id,
                    "params": first.iter().map(entry).collect::<Vec<_>>()}),
        )?;
        let info = &answer["model"]["info"];
        let field = |k: &str| {
            info[k].as_str().map(str::to_string).ok_or_else(|| anyhow!("logged-models answered without `{k}`"))
        };
        let model = ModelHandle { model_id: field("model_id")?, artifact_uri: field("artifact_uri")? };
        for chunk in rest.chunks(MAX_PARAMS) {
            self.post(
                &format!("logged-models/{}/params", model.model_id),
                &json!({"model_id": model.model_id, "params": chunk.iter().map(entry).collect::<Vec<_>>()}),
            )?;
        }
        Ok(model)
    }

    /// Marks the model's files complete and names it an output of `run_id`
    /// at `step` (the Models column).
    pub fn finalize_model(&self, model: &ModelHandle, run_id: &str, step: u64) -> Result<()> {
        let id = &model.model_id;
        self.patch(&format!("logged-models/{id}"), &json!({"model_id": id, "status": "LOGGED_MODEL_READY"}))?;
        self.post("runs/outputs", &json!({"run_id": run_id, "models": [{"model_id": id, "step": step}]})).map(drop)
    }

    /// The logged model as MLflow returns it (for checks and tests).
    pub fn get_model(&self, model_id: &str) -> Result<Value> {
        Ok(self.get(&format!("logged-models/{model_id}"), &[])?["model"].take())
    }

    /// The experiment as MLflow returns it (for checks and tests).
    pub fn get_experiment(&self, experiment_id: &str) -> Result<Value> {
        Ok(self.get("experiments/get", &[("experiment_id", experiment_id)])?["experiment"].take())
    }

    /// Every value logged for `key` (for checks and tests).
    pub fn metric_history(&self, run_id: &str, key: &str) -> Result<Vec<MetricPoint>> {
        let answer = self.get("metrics/get-history", &[("run_id", run_id), ("metric_key", key)])?;
        let points = answer["metrics"].as_array().cloned().unwrap_or_default();
        Ok(points
            .iter()
            .map(|p| MetricPoint {
                key: key.to_string(),
                value: p["value"].as_f64().unwrap_or(f64::NAN),
                timestamp_ms: p["timestamp"].as_u64().unwrap_or(0),
                step: p["step"].as_u64().unwrap_or(0),
            })
            .collect())
    }

    /// The run as MLflow returns it from `runs/get`.
    pub fn get_run(&self, run_id: &str) -> Result<Value> {
        Ok(self.get("runs/get", &[("run_id", run_id)])?["run"].take())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_made_acceptable_to_mlflow() {
        assert_eq!(mlflow_key("validation/recall@10"), "validation/recall_at_10");
        assert_eq!(mlflow_key("model.hidden"), "model.hidden");
        assert_eq!(mlflow_key("a[b]=c é"), "a_b__c _");
    }

    #[test]
    fn only_http_servers_are_accepted() {
        let e = MlflowClient::new("sqlite:///mlflow.db", Duration::from_secs(1)).err().unwrap().to_string();
        assert!(e.contains("not an http(s) address") && e.contains("cargo xtask mlflow up"), "{e}");
        assert_eq!(
            MlflowClient::new("http://127.0.0.1:5000/", Duration::from_secs(1)).unwrap().base(),
            "http://127.0.0.1:5000"
        );
    }
}
