//! `funnel-mlflow sync`: uploads what runs journaled while MLflow was away.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use funnel_tracker_local::{Journal, JOURNAL};
use funnel_tracker_mlflow::{catch_up, MlflowClient, UploadState, TRACKING_URI_ENV};

const USAGE: &str = "\
usage: funnel-mlflow sync [--tracking-uri URI] [--runs-dir DIR] [RUN_DIR...]

Sends every journaled event an MLflow server lacks, run by run, from where the
last upload stopped. Without RUN_DIRs: every run folder under DIR (default
`runs`). The server: --tracking-uri, else $MLFLOW_TRACKING_URI, else the one
each run last uploaded to.";

fn main() -> ExitCode {
    match cli(std::env::args().skip(1).collect()) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(2)
        }
    }
}

fn cli(args: Vec<String>) -> Result<bool> {
    let Some((command, rest)) = args.split_first() else {
        println!("{USAGE}");
        return Ok(true);
    };
    if command != "sync" {
        bail!("unknown command `{command}`\n\n{USAGE}");
    }
    let mut uri = std::env::var(TRACKING_URI_ENV).ok().filter(|u| !u.is_empty());
    let mut runs_dir = PathBuf::from("runs");
    let mut dirs = Vec::new();
    let mut it = rest.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--tracking-uri" => uri = Some(it.next().context("--tracking-uri needs a value")?.clone()),
            "--runs-dir" => runs_dir = PathBuf::from(it.next().context("--runs-dir needs a value")?),
            flag if flag.starts_with("--") => bail!("unknown option `{flag}`\n\n{USAGE}"),
            dir => dirs.push(PathBuf::from(dir)),
        }
    }
    if dirs.is_empty() {
        dirs = run_dirs(&runs_dir)?;
    }
    let mut all_ok = true;
    for dir in &dirs {
        match sync(dir, uri.as_deref()) {
            Ok(line) => println!("{}: {line}", dir.display()),
            Err(e) => {
                all_ok = false;
                eprintln!("{}: error: {e:#}", dir.display());
            }
        }
    }
    Ok(all_ok)
}

/// Folders `<runs_dir>/<experiment>/<run>` that hold a journal.
fn run_dirs(runs_dir: &Path) -> Result<Vec<PathBuf>> {
    let mut dirs = Vec::new();
    let experiments = std::fs::read_dir(runs_dir).with_context(|| format!("listing {}", runs_dir.display()))?;
    for experiment in experiments.flatten() {
        for run in std::fs::read_dir(experiment.path()).into_iter().flatten().flatten() {
            if run.path().join(JOURNAL).is_file() {
                dirs.push(run.path());
            }
        }
    }
    dirs.sort();
    Ok(dirs)
}

fn sync(run_dir: &Path, uri: Option<&str>) -> Result<String> {
    let events = Journal::read(run_dir)?;
    let recorded = UploadState::recorded(run_dir);
    let uri = match (uri, &recorded) {
        (Some(u), _) => u.to_string(),
        (None, Some(r)) => r.tracking_uri.clone(),
        (None, None) => bail!("no server to sync to: pass --tracking-uri or set ${TRACKING_URI_ENV}"),
    };
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
