//! Sending a run's journal to MLflow, in order, from wherever the last
//! attempt stopped. The live tracker and `funnel-mlflow sync` share it, so a
//! replay does exactly what the live run would have done.

use std::path::Path;

use anyhow::{Context, Result};
use funnel_tracker_local::Event;
use serde::{Deserialize, Serialize};

use crate::client::{MetricPoint, MlflowClient, ModelHandle, RunHandle};

/// File in the run folder recording what reached which server.
pub const STATE: &str = "mlflow.json";

/// How much of a run's journal one server holds.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct UploadState {
    pub tracking_uri: String,
    pub run: Option<RunHandle>,
    /// Journal events the server has acknowledged, counted from the first.
    pub sent: usize,
    /// The run's logged model, once created (its upload may be unfinished).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<ModelHandle>,
}

impl UploadState {
    /// The recorded state for `tracking_uri`, or a fresh one when the run was
    /// never uploaded there (a different server starts from scratch).
    pub fn load(run_dir: &Path, tracking_uri: &str) -> Result<UploadState> {
        let path = run_dir.join(STATE);
        let fresh = UploadState { tracking_uri: tracking_uri.to_string(), ..UploadState::default() };
        let Ok(text) = std::fs::read_to_string(&path) else { return Ok(fresh) };
        let state: UploadState =
            serde_json::from_str(&text).with_context(|| format!("{}: not an upload record", path.display()))?;
        Ok(if state.tracking_uri == tracking_uri { state } else { fresh })
    }

    /// The recorded state, whatever server it names.
    pub fn recorded(run_dir: &Path) -> Option<UploadState> {
        serde_json::from_str(&std::fs::read_to_string(run_dir.join(STATE)).ok()?).ok()
    }

    fn save(&self, run_dir: &Path) -> Result<()> {
        let path = run_dir.join(STATE);
        // Atomic: a crash mid-write never leaves a half-written state file.
        let mut tmp =
            tempfile::NamedTempFile::new_in(run_dir).with_context(|| format!("writing {}", path.display()))?;
        std::io::Write::write_all(&mut tmp, serde_json::to_string_pretty(self)?.as_bytes())
            .with_context(|| format!("writing {}", path.display()))?;
        tmp.persist(&path).with_context(|| format!("writing {}", path.display()))?;
        Ok(())
    }

    /// The run's page in the MLflow UI.
    pub fn run_url(&self) -> Option<String> {
        let run = self.run.as_ref()?;
        Some(format!(
            "{}/#/experiments/{}/runs/{}",
            self.tracking_uri.trim_end_matches('/'),
            run.experiment_id,
            run.run_id
        ))
    }
}

/// Sends `events[state.sent..]` in order, recording progress in the run
/// folder after each request, and stops at the first failure (the next call
/// resumes there). Consecutive metric events travel in one request.
pub fn catch_up(client: &MlflowClient, run_dir: &Path, state: &mut UploadState, events: &[Event]) -> Result<()> {
    while state.sent < events.len() {
        let pending = &events[state.sent..];
        let consumed = match &pending[0] {
            Event::Start {
                time_ms,
                experiment,
                run,
                params,
                tags,
                parent,
                description,
                experiment_description,
                source,
                user,
                dataset,
            } => {
                let params: Vec<(String, String)> = params.clone().into_iter().collect();
                let mut tags = with_mlflow_tags(tags);
                tags.extend(start_tags(description, source, user));
                if let Some(parent) = parent {
                    tags.push(parent_tag(Path::new(parent), &state.tracking_uri)?);
                }
                let handle = match &state.run {
                    // A resumed run continues the same MLflow run.
                    Some(h) => {
                        client.update_run(&h.run_id, "RUNNING", None)?;
                        h.clone()
                    }
                    None => {
                        let experiment_id = client.experiment_id(experiment)?;
                        client.set_missing_experiment_tags(
                            &experiment_id,
                            &[
                                ("mlflow.note.content".into(), experiment_description.clone()),
                                // Opens the experiment on its training runs,
                                // not MLflow's GenAI overview.
                                ("mlflow.experimentKind".into(), "custom_model_development".into()),
                            ],
                        )?;
                        let h = client.create_run(&experiment_id, run, *time_ms, user, &tags)?;
                        state.run = Some(h.clone());
                        state.save(run_dir)?;
                        h
                    }
                };
                client.log_params_and_tags(&handle.run_id, &params, &tags)?;
                if let Some(d) = dataset {
                    client.log_dataset_input(&handle.run_id, d)?;
                }
                1
            }
            Event::Tags { tags, .. } => {
                client.log_params_and_tags(&run_id(state)?.run_id, &[], &with_mlflow_tags(tags))?;
                1
            }
            Event::Model { name, files, params, step, .. } => {
                let run = run_id(state)?.clone();
                let model = match &state.model {
                    Some(m) => m.clone(),
                    None => {
                        let params: Vec<(String, String)> = params.clone().into_iter().collect();
                        let m = client.create_model(&run.experiment_id, name, &run.run_id, &params)?;
                        state.model = Some(m.clone());
                        state.save(run_dir)?;
                        m
                    }
                };
                let mut stored = Vec::new();
                for (path, inside) in files {
                    let file = run_dir.join(path);
                    match std::fs::read(&file) {
                        Ok(bytes) => {
                            client.upload(&model.artifact_uri, inside, bytes)?;
                            stored.push(inside.clone());
                        }
                        Err(_) => eprintln!("warning: model file {} no longer exists; not uploaded", file.display()),
                    }
                }
                let description = mlmodel(name, &stored, &model.model_id, &run.run_id, pending[0].time_ms());
                client.upload(&model.artifact_uri, "MLmodel", description.into_bytes())?;
                client.finalize_model(&model, &run.run_id, *step)?;
                1
            }
            Event::Metrics { .. } => {
                let batch: Vec<&Event> = pending.iter().take_while(|e| matches!(e, Event::Metrics { .. })).collect();
                let mut points = Vec::new();
                for e in &batch {
                    if let Event::Metrics { time_ms, step, metrics } = e {
                        points.extend(metrics.iter().map(|(k, v)| MetricPoint {
                            key: k.clone(),
                            value: *v,
                            timestamp_ms: *time_ms,
                            step: *step,
                        }));
                    }
                }
                client.log_metrics(&run_id(state)?.run_id, &points)?;
                batch.len()
            }
            Event::Artifact { path, .. } => {
                let file = run_dir.join(path);
                if file.is_file() {
                    let name = Path::new(path).file_name().map(|n| n.to_string_lossy().into_owned());
                    // Artifacts outside the run folder keep only their file name.
                    let artifact_path =
                        if Path::new(path).is_absolute() { name.unwrap_or_default() } else { path.clone() };
                    let run = run_id(state)?;
                    if artifact_path.ends_with(".md") {
                        let text =
                            std::fs::read_to_string(&file).with_context(|| format!("reading {}", file.display()))?;
                        let folder = Path::new(&artifact_path).parent().unwrap_or(Path::new(""));
                        let text = absolute_images(&text, |link| {
                            client.artifact_url(&run.run_id, &folder.join(link).to_string_lossy())
                        });
                        client.upload(&run.artifact_uri, &artifact_path, text.into_bytes())?;
                    } else {
                        client.upload_artifact(run, &file, &artifact_path)?;
                    }
                } else {
                    eprintln!("warning: artifact {} no longer exists; not uploaded", file.display());
                }
                1
            }
            Event::Finish { time_ms, status } => {
                client.update_run(&run_id(state)?.run_id, &status.to_uppercase(), Some(*time_ms))?;
                1
            }
        };
        state.sent += consumed;
        state.save(run_dir)?;
    }
    Ok(())
}

fn run_id(state: &UploadState) -> Result<&RunHandle> {
    state.run.as_ref().context("the journal logs to a run before its start event")
}

/// The run's tags plus the ones MLflow's UI shows in its own places: the
/// git commit column and the run's description.
fn with_mlflow_tags(tags: &std::collections::BTreeMap<String, String>) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = tags.clone().into_iter().collect();
    let commit = tags.get("git.commit").or(tags.get("funnel.git.commit")).filter(|c| *c != "unknown");
    if let Some(c) = commit {
        out.push(("mlflow.source.git.commit".into(), c.clone()));
    }
    if let Some(d) = tags.get("description").filter(|d| !d.is_empty()) {
        out.push(("mlflow.note.content".into(), d.clone()));
    }
    out
}

/// The tags MLflow's UI reads for a run's note, user and source.
fn start_tags(description: &str, source: &str, user: &str) -> Vec<(String, String)> {
    let mut tags = Vec::new();
    if !description.is_empty() {
        tags.push(("mlflow.note.content".into(), description.to_string()));
    }
    if !user.is_empty() {
        tags.push(("mlflow.user".into(), user.to_string()));
    }
    if !source.is_empty() {
        tags.push(("mlflow.source.name".into(), source.to_string()));
        tags.push(("mlflow.source.type".into(), "LOCAL".into()));
    }
    tags
}

/// `markdown` with each relative image link (`![chart](plots/loss.svg)`)
/// replaced by `url(link)`: MLflow's Markdown preview resolves no relative
/// link, so the run folder's report (read on disk or on GitHub) keeps its
/// relative links and the copy MLflow holds gets absolute ones.
pub fn absolute_images(markdown: &str, url: impl Fn(&str) -> String) -> String {
    let mut out = String::with_capacity(markdown.len());
    let mut rest = markdown;
    while let Some(start) = rest.find("![") {
        let Some(open) = rest[start..].find("](").map(|i| start + i + 2) else { break };
        let Some(close) = rest[open..].find(')').map(|i| open + i) else { break };
        let link = &rest[open..close];
        out.push_str(&rest[..open]);
        let relative = !(link.is_empty()
            || link.contains("://")
            || link.starts_with('/')
            || link.starts_with('#')
            || link.starts_with("data:")
            || link.contains(char::is_whitespace));
        if relative {
            out.push_str(&url(link));
        } else {
            out.push_str(link);
        }
        rest = &rest[close..];
    }
    out.push_str(rest);
    out
}

/// The logged model's `MLmodel`: what MLflow reads to describe a model, and
/// how to use it with funnel.
fn mlmodel(name: &str, files: &[String], model_id: &str, run_id: &str, time_ms: u64) -> String {
    let quote = |s: &str| serde_json::to_string(s).expect("a string serializes");
    let created = chrono::DateTime::from_timestamp_millis(time_ms as i64)
        .map(|t| t.format("%Y-%m-%d %H:%M:%S%.6f").to_string())
        .unwrap_or_default();
    let mut text = format!(
        "artifact_path: {}\nflavors:\n  funnel:\n    model_type: {}\n    funnel_version: {}\n    files:\n",
        quote(name),
        quote(name),
        quote(env!("CARGO_PKG_VERSION"))
    );
    for f in files {
        text.push_str(&format!("    - {}\n", quote(f)));
    }
    text.push_str(&format!(
        "    load: {}\nmodel_id: {}\nrun_id: {}\nutc_time_created: {}\n",
        quote("funnel recommend --run <this folder> --user ID (or --items ID,ID,...); reads the dataset resolved.toml names"),
        quote(model_id),
        quote(run_id),
        quote(&created)
    ));
    text
}

/// `mlflow.parentRunId` naming the parent's run on the same server, so the
/// UI nests this run under it. The parent must have reached the server first.
fn parent_tag(parent_dir: &Path, tracking_uri: &str) -> Result<(String, String)> {
    let parent = UploadState::load(parent_dir, tracking_uri)?;
    let run = parent.run.with_context(|| {
        format!("the parent run {} is not on {tracking_uri} yet; sync it first", parent_dir.display())
    })?;
    Ok(("mlflow.parentRunId".into(), run.run_id))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relative_image_links_become_absolute_and_nothing_else_changes() {
        let md = "# r\n![Loss](plots/loss.svg) and [a link](plots/x.svg)\n![web](https://e.org/a.png) \
                  ![root](/a.png) ![anchor](#x) ![data](data:image/png;base64,AA) ![](plots/v.svg)\n![cut](plots/";
        let out = absolute_images(md, |link| format!("http://h/get-artifact?path={link}"));
        assert_eq!(
            out,
            "# r\n![Loss](http://h/get-artifact?path=plots/loss.svg) and [a link](plots/x.svg)\n\
             ![web](https://e.org/a.png) ![root](/a.png) ![anchor](#x) ![data](data:image/png;base64,AA) \
             ![](http://h/get-artifact?path=plots/v.svg)\n![cut](plots/"
        );
    }

    #[test]
    fn artifact_urls_escape_the_path() {
        let client = MlflowClient::new("http://127.0.0.1:5000/", std::time::Duration::from_secs(1)).unwrap();
        assert_eq!(
            client.artifact_url("abc", "plots/recall@10 x.svg"),
            "http://127.0.0.1:5000/get-artifact?path=plots%2Frecall%4010%20x.svg&run_uuid=abc"
        );
    }

    #[test]
    fn the_mlmodel_names_the_model_and_how_to_load_it() {
        let text = mlmodel("youtube_dnn", &["model.bin".into(), "index/a.bin".into()], "m-1", "r-1", 0);
        assert!(text.starts_with("artifact_path: \"youtube_dnn\"\nflavors:\n  funnel:\n"), "{text}");
        assert!(text.contains("    - \"index/a.bin\"\n") && text.contains("model_id: \"m-1\"\nrun_id: \"r-1\"\n"));
        assert!(text.contains("utc_time_created: \"1970-01-01 00:00:00.000000\""), "{text}");
    }
}
