//! `[tracking] type = "mlflow"`: every run, parameter, metric and artifact in
//! an MLflow tracking server, so runs compare in the MLflow UI.
//!
//! Each event is first appended to the run's local journal (the `local`
//! tracker's `journal.jsonl`), then sent. When the server is unreachable or
//! fails mid-run, the run goes on, the journal keeps everything, the tracker
//! retries now and then, and `funnel-mlflow sync` (`cargo xtask mlflow sync`)
//! sends the rest later from where the upload stopped.

#![forbid(unsafe_code)]

pub mod client;
pub mod sync;
pub mod upload;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use funnel_api::{BuildCx, Metrics, ModelArtifacts, Registry, RunInfo, RunStatus, Tracker};
use funnel_tracker_local::{Event, Journal};
use serde::{Deserialize, Serialize};

pub use client::MlflowClient;
pub use upload::{catch_up, UploadState};

/// Environment variable MLflow's own clients read the server address from.
pub const TRACKING_URI_ENV: &str = "MLFLOW_TRACKING_URI";

pub fn register(reg: &mut Registry) {
    reg.tracking::<MlflowParams>(
        "mlflow",
        "MLflow tracking server: an experiment named after [experiment].name, one named run per execution with \
         flattened params, tags, per-epoch metrics, artifacts, the dataset as an input and the model as a logged \
         model; baselines and sweep trials as nested runs; journaled locally first, so nothing is lost when the \
         server is away (`cargo xtask mlflow sync` uploads the rest)",
        |p, _cx: &BuildCx| Ok(Box::new(MlflowTracker::new(p))),
    );
}

/// Parameters of the `mlflow` tracker.
#[funnel_api::params]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MlflowParams {
    /// MLflow server address (http://host:port); empty: $MLFLOW_TRACKING_URI,
    /// and without it the run is only journaled (`cargo xtask run` starts the
    /// local server when neither is set).
    pub tracking_uri: String,
    /// Limit on one request to the server.
    #[param(default = 30)]
    pub timeout_seconds: u64,
    /// After a failed request, how long the run goes on journaling only
    /// before trying the server again.
    #[param(default = 30)]
    pub retry_seconds: u64,
}

/// The `mlflow` tracker.
pub struct MlflowTracker {
    params: MlflowParams,
    journal: Option<Journal>,
    /// Every event of the run's journal, including a resumed run's earlier ones.
    events: Vec<Event>,
    upload: Option<(MlflowClient, UploadState)>,
    retry_at: Option<Instant>,
    run_dir: PathBuf,
}

impl MlflowTracker {
    pub fn new(params: MlflowParams) -> MlflowTracker {
        MlflowTracker {
            params,
            journal: None,
            events: Vec::new(),
            upload: None,
            retry_at: None,
            run_dir: PathBuf::new(),
        }
    }

    fn tracking_uri(&self) -> Option<String> {
        let uri = if self.params.tracking_uri.is_empty() {
            std::env::var(TRACKING_URI_ENV).unwrap_or_default()
        } else {
            self.params.tracking_uri.clone()
        };
        (!uri.is_empty()).then_some(uri)
    }

    fn record(&mut self, event: Event) -> Result<()> {
        self.journal.as_mut().context("the tracker is used before the run started")?.append(event.clone())?;
        self.events.push(event);
        self.send();
        Ok(())
    }

    /// Sends what the server lacks, unless a recent failure says to wait.
    fn send(&mut self) {
        let Some((client, state)) = self.upload.as_mut() else { return };
        if self.retry_at.is_some_and(|t| Instant::now() < t) {
            return;
        }
        match catch_up(client, &self.run_dir, state, &self.events) {
            Ok(()) => {
                if self.retry_at.take().is_some() {
                    eprintln!("MLflow at {} is back; the run's journal is uploaded", client.base());
                }
            }
            Err(e) => {
                if self.retry_at.is_none() {
                    eprintln!(
                        "warning: MLflow at {} failed: {e:#}\n  the run goes on and journals everything to {}; \
                         it retries every {} s, and `cargo xtask mlflow sync` uploads what is missing",
                        client.base(),
                        self.run_dir.join(funnel_tracker_local::JOURNAL).display(),
                        self.params.retry_seconds
                    );
                }
                self.retry_at = Some(Instant::now() + Duration::from_secs(self.params.retry_seconds));
            }
        }
    }
}

impl Tracker for MlflowTracker {
    fn start(&mut self, run: &RunInfo) -> Result<()> {
        self.run_dir = run.run_dir.clone();
        if self.run_dir.join(funnel_tracker_local::JOURNAL).exists() {
            self.events = Journal::read(&self.run_dir)?;
        }
        self.journal = Some(Journal::open(&self.run_dir)?);
        match self.tracking_uri() {
            Some(uri) => {
                let client = MlflowClient::new(&uri, Duration::from_secs(self.params.timeout_seconds.max(1)))
                    .context("[tracking] tracking_uri")?;
                let state = UploadState::load(&self.run_dir, &uri)?;
                self.upload = Some((client, state));
            }
            None => eprintln!(
                "warning: no MLflow server given ([tracking] tracking_uri or ${TRACKING_URI_ENV}); the run is \
                 journaled to {} and `cargo xtask mlflow sync` uploads it later",
                self.run_dir.join(funnel_tracker_local::JOURNAL).display()
            ),
        }
        self.record(Event::start(run))?;
        if let Some(url) = self.upload.as_ref().and_then(|(_, s)| s.run_url()) {
            eprintln!("MLflow run: {url}");
        }
        Ok(())
    }

    fn log_metrics(&mut self, step: u64, metrics: &Metrics) -> Result<()> {
        self.record(Event::metrics(step, metrics))
    }

    fn log_artifact(&mut self, path: &Path) -> Result<()> {
        let event = Event::artifact(&self.run_dir, path);
        self.record(event)
    }

    fn set_tags(&mut self, tags: &[(String, String)]) -> Result<()> {
        self.record(Event::tags(tags))
    }

    fn log_model(&mut self, model: &ModelArtifacts) -> Result<()> {
        let event = Event::model(&self.run_dir, model);
        self.record(event)
    }

    fn finish(&mut self, status: RunStatus) -> Result<()> {
        self.record(Event::finish(status))?;
        // A last attempt whatever the retry clock says: the run is over.
        if self.retry_at.take().is_some() {
            self.send();
        }
        if let Some((_, state)) = &self.upload {
            if state.sent < self.events.len() {
                eprintln!(
                    "warning: MLflow holds {} of the run's {} journal events; `cargo xtask mlflow sync {}` uploads \
                     the rest",
                    state.sent,
                    self.events.len(),
                    self.run_dir.display()
                );
            }
        }
        Ok(())
    }
}
