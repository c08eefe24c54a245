//! `[tracking] type = "local"`: every tracked event appended to
//! `<run dir>/journal.jsonl`, one JSON object a line, flushed as it happens so
//! a run that dies keeps everything logged before it died.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use funnel_api::{BuildCx, Metrics, NoParams, Registry, RunInfo, RunStatus, Tracker};
use serde_json::{json, Value};

pub fn register(reg: &mut Registry) {
    reg.tracking::<NoParams>(
        "local",
        "JSON-lines journal (journal.jsonl) in the run folder; no server needed",
        |_p, _cx: &BuildCx| Ok(Box::new(LocalJournal::default())),
    );
}

/// File name of the journal inside the run folder.
pub const JOURNAL: &str = "journal.jsonl";

#[derive(Default)]
pub struct LocalJournal {
    file: Option<(PathBuf, File)>,
}

impl LocalJournal {
    fn append(&mut self, event: Value) -> Result<()> {
        let (path, file) = self.file.as_mut().context("the journal is written before the run started")?;
        let mut line = serde_json::to_vec(&event)?;
        line.push(b'\n');
        file.write_all(&line).with_context(|| format!("writing {}", path.display()))?;
        file.flush().with_context(|| format!("writing {}", path.display()))
    }
}

impl Tracker for LocalJournal {
    fn start(&mut self, run: &RunInfo) -> Result<()> {
        let path = run.run_dir.join(JOURNAL);
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .with_context(|| format!("opening {}", path.display()))?;
        self.file = Some((path, file));
        let params: serde_json::Map<_, _> =
            run.params.iter().map(|(k, v)| (k.clone(), Value::String(v.clone()))).collect();
        let tags: serde_json::Map<_, _> = run.tags.iter().map(|(k, v)| (k.clone(), Value::String(v.clone()))).collect();
        self.append(json!({
            "event": "start",
            "experiment": run.experiment,
            "run": run.run_name,
            "params": params,
            "tags": tags,
        }))
    }

    fn log_metrics(&mut self, step: u64, metrics: &Metrics) -> Result<()> {
        self.append(json!({ "event": "metrics", "step": step, "metrics": metrics }))
    }

    fn log_artifact(&mut self, path: &Path) -> Result<()> {
        self.append(json!({ "event": "artifact", "path": path.display().to_string() }))
    }

    fn finish(&mut self, status: RunStatus) -> Result<()> {
        let status = match status {
            RunStatus::Finished => "finished",
            RunStatus::Failed => "failed",
        };
        self.append(json!({ "event": "finish", "status": status }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_event_is_one_json_line() {
        let dir = tempfile::tempdir().unwrap();
        let mut t = LocalJournal::default();
        t.start(&RunInfo {
            experiment: "e".into(),
            run_name: "r".into(),
            run_dir: dir.path().to_path_buf(),
            params: vec![("model.hidden".into(), "[256]".into())],
            tags: vec![],
        })
        .unwrap();
        t.log_metrics(1, &Metrics::from([("loss".to_string(), 0.5)])).unwrap();
        t.log_artifact(Path::new("report.md")).unwrap();
        t.finish(RunStatus::Finished).unwrap();
        let text = std::fs::read_to_string(dir.path().join(JOURNAL)).unwrap();
        let events: Vec<Value> = text.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
        assert_eq!(events.len(), 4);
        assert_eq!(events[0]["params"]["model.hidden"], "[256]");
        assert_eq!(events[1], json!({"event": "metrics", "step": 1, "metrics": {"loss": 0.5}}));
        assert_eq!(events[3]["status"], "finished");
    }

    #[test]
    fn logging_before_start_is_an_error() {
        let err = LocalJournal::default().log_metrics(0, &Metrics::new()).unwrap_err();
        assert!(err.to_string().contains("before the run started"));
    }
}
