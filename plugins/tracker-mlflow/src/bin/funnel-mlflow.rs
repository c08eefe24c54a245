//! `funnel-mlflow sync`: uploads what runs journaled while MLflow was away.

#![forbid(unsafe_code)]

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{bail, Context, Result};
use funnel_tracker_mlflow::sync::{run_dirs, sync_run};
use funnel_tracker_mlflow::TRACKING_URI_ENV;

const USAGE: &str = "\
usage: funnel-mlflow sync [--tracking-uri URI] [--default-uri URI] [--runs-dir DIR] [RUN_DIR...]

Sends every journaled event an MLflow server lacks, run by run, from where the
last upload stopped. Without RUN_DIRs: every run folder under DIR (default
`runs`). The server: --tracking-uri, else $MLFLOW_TRACKING_URI, else the one
each run last uploaded to, else --default-uri.";

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
    let mut default_uri = None;
    let mut runs_dir = PathBuf::from("runs");
    let mut dirs = Vec::new();
    let mut it = rest.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--tracking-uri" => uri = Some(it.next().context("--tracking-uri needs a value")?.clone()),
            "--default-uri" => default_uri = Some(it.next().context("--default-uri needs a value")?.clone()),
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
        match sync_run(dir, uri.as_deref(), default_uri.as_deref()) {
            Ok(line) => println!("{}: {line}", dir.display()),
            Err(e) => {
                all_ok = false;
                eprintln!("{}: error: {e:#}", dir.display());
            }
        }
    }
    Ok(all_ok)
}
