//! `funnel-mlflow sync`: uploads what runs journaled while MLflow was away.

#![forbid(unsafe_code)]

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Result;
use clap::{Parser, Subcommand};
use funnel_tracker_mlflow::sync::{run_dirs, sync_run};
use funnel_tracker_mlflow::TRACKING_URI_ENV;

/// Uploads funnel runs' journals to an MLflow tracking server.
#[derive(Parser, Debug)]
#[command(name = "funnel-mlflow", version)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Send every journaled event a server lacks, run by run, from where the last upload stopped.
    ///
    /// The server: --tracking-uri, else $MLFLOW_TRACKING_URI, else the one each run last uploaded
    /// to, else --default-uri.
    Sync {
        /// The MLflow server (http://host:port).
        #[arg(long, value_name = "URI", env = TRACKING_URI_ENV)]
        tracking_uri: Option<String>,
        /// The server for runs that never uploaded anywhere.
        #[arg(long, value_name = "URI")]
        default_uri: Option<String>,
        /// Where run folders are looked for when no RUN_DIR is given.
        #[arg(long, value_name = "DIR", default_value = "runs")]
        runs_dir: PathBuf,
        /// Run folders to sync (default: every run under --runs-dir, nested runs included).
        #[arg(value_name = "RUN_DIR")]
        dirs: Vec<PathBuf>,
    },
}

fn main() -> ExitCode {
    let Command::Sync { tracking_uri, default_uri, runs_dir, dirs } = Cli::parse().command;
    match sync(tracking_uri.filter(|u| !u.is_empty()), default_uri, &runs_dir, dirs) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(2)
        }
    }
}

fn sync(
    uri: Option<String>,
    default_uri: Option<String>,
    runs_dir: &std::path::Path,
    dirs: Vec<PathBuf>,
) -> Result<bool> {
    let dirs = if dirs.is_empty() { run_dirs(runs_dir)? } else { dirs };
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_parse_and_typos_are_answered() {
        let cli = Cli::try_parse_from(["funnel-mlflow", "sync", "--tracking-uri", "http://h:1", "runs/a/b"]).unwrap();
        let Command::Sync { tracking_uri, dirs, runs_dir, .. } = cli.command;
        assert_eq!(tracking_uri.as_deref(), Some("http://h:1"));
        assert_eq!(dirs, [PathBuf::from("runs/a/b")]);
        assert_eq!(runs_dir, PathBuf::from("runs"));
        let e = Cli::try_parse_from(["funnel-mlflow", "sync", "--traking-uri", "x"]).unwrap_err().to_string();
        assert!(e.contains("--tracking-uri"), "{e}");
    }
}
