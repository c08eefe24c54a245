//! The run journal: what a tracker was told, in order, as JSON lines.

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result};
use funnel_api::{DatasetInput, Metrics, ModelArtifacts, RunInfo, RunStatus};
use serde::{Deserialize, Serialize};

/// File name of the journal inside the run folder.
pub const JOURNAL: &str = "journal.jsonl";

/// One journal line. `time_ms` is when it happened (Unix milliseconds), so a
/// replay gives the server the original times.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum Event {
    Start {
        time_ms: u64,
        experiment: String,
        run: String,
        params: BTreeMap<String, String>,
        tags: BTreeMap<String, String>,
        /// The parent run's folder, for nested runs (a sweep's trials, a
        /// run's baselines).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        parent: Option<String>,
        /// The run's description in Markdown.
        #[serde(default, skip_serializing_if = "String::is_empty")]
        description: String,
        #[serde(default, skip_serializing_if = "String::is_empty")]
        experiment_description: String,
        /// The experiment file.
        #[serde(default, skip_serializing_if = "String::is_empty")]
        source: String,
        #[serde(default, skip_serializing_if = "String::is_empty")]
        user: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        dataset: Option<Box<DatasetInput>>,
    },
    Metrics {
        time_ms: u64,
        step: u64,
        metrics: Metrics,
    },
    /// A file of the run; `path` is relative to the run folder when inside it.
    Artifact {
        time_ms: u64,
        path: String,
    },
    /// Tags set after the start (a failed run's error).
    Tags {
        time_ms: u64,
        tags: BTreeMap<String, String>,
    },
    /// The trained model: `files` are (path, path inside the model), each
    /// path relative to the run folder when inside it.
    Model {
        time_ms: u64,
        name: String,
        files: Vec<(String, String)>,
        params: BTreeMap<String, String>,
        step: u64,
    },
    Finish {
        time_ms: u64,
        status: String,
    },
}

/// `path` relative to `run_dir` when inside it, else as given.
fn relative(run_dir: &Path, path: &Path) -> String {
    path.strip_prefix(run_dir).unwrap_or(path).to_string_lossy().into_owned()
}

fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

impl Event {
    pub fn start(run: &RunInfo) -> Event {
        Event::Start {
            time_ms: now_ms(),
            experiment: run.experiment.clone(),
            run: run.run_name.clone(),
            params: run.params.iter().cloned().collect(),
            tags: run.tags.iter().cloned().collect(),
            // Absolute, so a sync from another folder still finds the parent.
            parent: run
                .parent_run_dir
                .as_ref()
                .map(|p| std::path::absolute(p).unwrap_or_else(|_| p.clone()).to_string_lossy().into_owned()),
            description: run.description.clone(),
            experiment_description: run.experiment_description.clone(),
            source: run.source.clone(),
            user: run.user.clone(),
            dataset: run.dataset.clone().map(Box::new),
        }
    }

    pub fn tags(tags: &[(String, String)]) -> Event {
        Event::Tags { time_ms: now_ms(), tags: tags.iter().cloned().collect() }
    }

    pub fn model(run_dir: &Path, model: &ModelArtifacts) -> Event {
        let files = model.files.iter().map(|(file, inside)| (relative(run_dir, file), inside.clone())).collect();
        Event::Model {
            time_ms: now_ms(),
            name: model.name.clone(),
            files,
            params: model.params.iter().cloned().collect(),
            step: model.step,
        }
    }

    /// Non-finite values are left out: JSON (and MLflow's API) has no NaN,
    /// and a diverged run's report already names the step that diverged.
    pub fn metrics(step: u64, metrics: &Metrics) -> Event {
        let metrics = metrics.iter().filter(|(_, v)| v.is_finite()).map(|(k, v)| (k.clone(), *v)).collect();
        Event::Metrics { time_ms: now_ms(), step, metrics }
    }

    pub fn artifact(run_dir: &Path, path: &Path) -> Event {
        Event::Artifact { time_ms: now_ms(), path: relative(run_dir, path) }
    }

    pub fn finish(status: RunStatus) -> Event {
        let status = match status {
            RunStatus::Finished => "finished",
            RunStatus::Failed => "failed",
        };
        Event::Finish { time_ms: now_ms(), status: status.into() }
    }

    pub fn time_ms(&self) -> u64 {
        match self {
            Event::Start { time_ms, .. }
            | Event::Metrics { time_ms, .. }
            | Event::Artifact { time_ms, .. }
            | Event::Tags { time_ms, .. }
            | Event::Model { time_ms, .. }
            | Event::Finish { time_ms, .. } => *time_ms,
        }
    }
}

/// An open journal, appended to and flushed one event at a time.
pub struct Journal {
    run_dir: PathBuf,
    path: PathBuf,
    file: File,
}

impl Journal {
    /// Opens (creating or continuing) the journal of `run_dir`.
    pub fn open(run_dir: &Path) -> Result<Journal> {
        let path = run_dir.join(JOURNAL);
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .with_context(|| format!("opening {}", path.display()))?;
        Ok(Journal { run_dir: run_dir.to_path_buf(), path, file })
    }

    pub fn run_dir(&self) -> &Path {
        &self.run_dir
    }

    pub fn append(&mut self, event: Event) -> Result<()> {
        let mut line = serde_json::to_vec(&event)?;
        line.push(b'\n');
        self.file.write_all(&line).with_context(|| format!("writing {}", self.path.display()))?;
        self.file.flush().with_context(|| format!("writing {}", self.path.display()))
    }

    /// Every event of the journal in `run_dir`. A last line cut short by a
    /// crash is skipped; any other unreadable line is an error naming it.
    pub fn read(run_dir: &Path) -> Result<Vec<Event>> {
        let path = run_dir.join(JOURNAL);
        let text = std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
        let lines: Vec<&str> = text.lines().collect();
        let mut events = Vec::with_capacity(lines.len());
        for (n, line) in lines.iter().enumerate() {
            match serde_json::from_str(line) {
                Ok(e) => events.push(e),
                Err(_) if n + 1 == lines.len() && !text.ends_with('\n') => break,
                Err(e) => anyhow::bail!("{}:{}: not a journal event: {e}", path.display(), n + 1),
            }
        }
        Ok(events)
    }
}

#[cfg(test)]
mod tests {
    use serde_json::{json, Value};

    use super::*;
    use crate::LocalTracker;
    use funnel_api::Tracker;

    fn info(dir: &Path) -> RunInfo {
        RunInfo {
            experiment: "e".into(),
            run_name: "r".into(),
            run_dir: dir.to_path_buf(),
            params: vec![("model.hidden".into(), "[256]".into())],
            tags: vec![("seed".into(), "7".into())],
            ..RunInfo::default()
        }
    }

    #[test]
    fn every_event_is_one_json_line_and_reads_back() {
        let dir = tempfile::tempdir().unwrap();
        let mut t = LocalTracker::default();
        t.start(&info(dir.path())).unwrap();
        t.log_metrics(1, &Metrics::from([("loss".to_string(), 0.5), ("nan".to_string(), f64::NAN)])).unwrap();
        t.log_artifact(&dir.path().join("plots/loss.svg")).unwrap();
        t.finish(RunStatus::Finished).unwrap();
        let text = std::fs::read_to_string(dir.path().join(JOURNAL)).unwrap();
        let lines: Vec<Value> = text.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
        assert_eq!(lines.len(), 4);
        assert_eq!(lines[0]["event"], "start");
        assert_eq!(lines[0]["params"]["model.hidden"], "[256]");
        assert_eq!(lines[1]["metrics"], json!({"loss": 0.5}));
        assert_eq!(lines[1]["step"], 1);
        assert_eq!(lines[2]["path"], "plots/loss.svg");
        assert_eq!(lines[3]["status"], "finished");
        assert!(lines[3]["time_ms"].as_u64().unwrap() >= lines[0]["time_ms"].as_u64().unwrap());

        let events = Journal::read(dir.path()).unwrap();
        assert_eq!(events.len(), 4);
        assert!(matches!(&events[1], Event::Metrics { step: 1, metrics, .. } if metrics["loss"] == 0.5));
    }

    #[test]
    fn a_torn_last_line_is_skipped_but_a_bad_middle_line_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let mut j = Journal::open(dir.path()).unwrap();
        j.append(Event::metrics(1, &Metrics::new())).unwrap();
        let path = dir.path().join(JOURNAL);
        let mut text = std::fs::read_to_string(&path).unwrap();
        text.push_str("{\"event\":\"metr");
        std::fs::write(&path, &text).unwrap();
        assert_eq!(Journal::read(dir.path()).unwrap().len(), 1);
        text.push_str("\n{}\n");
        std::fs::write(&path, &text).unwrap();
        let e = Journal::read(dir.path()).unwrap_err().to_string();
        assert!(e.contains("journal.jsonl:2: not a journal event"), "{e}");
    }
}
