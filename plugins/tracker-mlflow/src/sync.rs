//! Uploading journaled runs after the fact.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context, Result};
use funnel_tracker_local::{Event, Journal, JOURNAL};

use crate::{catch_up, MlflowClient, UploadState, TRACKING_URI_ENV};

/// Folders `<runs_dir>/<experiment>/<run>` that hold a journal, and the
/// runs nested in them (`<run>/baselines/<name>`), each after its parent.
pub fn run_dirs(runs_dir: &Path) -> Result<Vec<PathBuf>> {
    let mut dirs = Vec::new();
    let experiments = std::fs::read_dir(runs_dir).with_context(|| format!("listing {}", runs_dir.display()))?;
    for experiment in experiments.flatten() {
        for run in std::fs::read_dir(experiment.path()).into_iter().flatten().flatten() {
            if run.path().join(JOURNAL).is_file() {
                dirs.push(run.path());
                for nested in std::fs::read_dir(run.path().join("baselines")).into_iter().flatten().flatten() {
                    if nested.path().join(JOURNAL).is_file() {
                        dirs.push(nested.path());
                    }
                }
            }
        }
    }
    dirs.sort();
    Ok(dirs)
}

/// Uploads what `run_dir`'s journal holds beyond what the server has; says
/// what it did in one line.
pub fn sync_run(run_dir: &Path, uri: Option<&str>, default_uri: Option<&str>) -> Result<String> {
    let events = Journal::read(run_dir)?;
    let recorded = UploadState::recorded(run_dir);
    let uri = match (uri, &recorded) {
        (Some(u), _) => u.to_string(),
        (None, Some(r)) => r.tracking_uri.clone(),
        (None, None) => match default_uri {
            Some(u) => u.to_string(),
            None => bail!("no server to sync to: pass --tracking-uri or set ${TRACKING_URI_ENV}"),
        },
    };
    // A nested run needs its parent on the server first.
    let parent = events.iter().find_map(|e| match e {
        Event::Start { parent: Some(p), .. } => Some(PathBuf::from(p)),
        _ => None,
    });
    if let Some(parent) = parent {
        if UploadState::load(&parent, &uri)?.run.is_none() {
            sync_run(&parent, Some(&uri), None)
                .with_context(|| format!("syncing the parent run {}", parent.display()))?;
        }
    }
    let mut state = UploadState::load(run_dir, &uri)?;
    let before = state.sent;
    if before >= events.len() {
        return Ok(format!("up to date ({} events) at {}", events.len(), state.run_url().unwrap_or(uri)));
    }
    let client = MlflowClient::new(&uri, Duration::from_secs(60))?;
    catch_up(&client, run_dir, &mut state, &events)
        .with_context(|| format!("after {} of {} events", state.sent, events.len()))?;
    Ok(format!("sent {} events, {} in all: {}", events.len() - before, events.len(), state.run_url().unwrap_or(uri)))
}
