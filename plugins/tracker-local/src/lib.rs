//! `[tracking] type = "local"`: every tracked event appended to
//! `<run dir>/journal.jsonl`, one JSON object a line, flushed as it happens so
//! a run that dies keeps everything logged before it died.
//!
//! The [`Journal`] is also what server-backed trackers write first: it is the
//! record they replay when the server was away.

#![forbid(unsafe_code)]

mod journal;

use std::path::Path;

use anyhow::Result;
use funnel_api::{BuildCx, Metrics, ModelArtifacts, NoParams, Registry, RunInfo, RunStatus, Tracker};

pub use journal::{Event, Journal, JOURNAL};

pub fn register(reg: &mut Registry) {
    reg.tracking::<NoParams>(
        "local",
        "JSON-lines journal (journal.jsonl) in the run folder and the Markdown report; no server needed",
        |_p, _cx: &BuildCx| Ok(Box::new(LocalTracker::default())),
    );
}

/// The `local` tracker: the journal and nothing else.
#[derive(Default)]
pub struct LocalTracker {
    journal: Option<Journal>,
}

impl LocalTracker {
    fn journal(&mut self) -> Result<&mut Journal> {
        self.journal.as_mut().ok_or_else(|| anyhow::anyhow!("the journal is written before the run started"))
    }
}

impl Tracker for LocalTracker {
    fn start(&mut self, run: &RunInfo) -> Result<()> {
        let mut journal = Journal::open(&run.run_dir)?;
        journal.append(Event::start(run))?;
        self.journal = Some(journal);
        Ok(())
    }

    fn log_metrics(&mut self, step: u64, metrics: &Metrics) -> Result<()> {
        self.journal()?.append(Event::metrics(step, metrics))
    }

    fn log_artifact(&mut self, path: &Path) -> Result<()> {
        let journal = self.journal()?;
        let event = Event::artifact(journal.run_dir(), path);
        journal.append(event)
    }

    fn set_tags(&mut self, tags: &[(String, String)]) -> Result<()> {
        self.journal()?.append(Event::tags(tags))
    }

    fn log_model(&mut self, model: &ModelArtifacts) -> Result<()> {
        let journal = self.journal()?;
        let event = Event::model(journal.run_dir(), model);
        journal.append(event)
    }

    fn finish(&mut self, status: RunStatus) -> Result<()> {
        self.journal()?.append(Event::finish(status))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn logging_before_start_is_an_error() {
        let err = LocalTracker::default().log_metrics(0, &Metrics::new()).unwrap_err();
        assert!(err.to_string().contains("before the run started"));
    }
}
