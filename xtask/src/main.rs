//! `cargo xtask`: the project's commands. Orchestration only; the logic lives
//! in the `funnel` crate.
//!
//! The `cargo xtask` alias builds this crate in debug mode, so every command
//! that trains builds and runs an optimized `funnel` binary instead.

use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};

use anyhow::{bail, Context, Result};

const USAGE: &str = "\
usage: cargo xtask <command> [args]

  run FILE [--set k=v]... [--dry-run]   train and evaluate an experiment (release build)
  plugins                               list registered components, parameters, defaults
  test                                  the whole test suite, as CI runs it (release build)

Pass --features cuda after the command to build dfdx's CUDA path
(e.g. cargo xtask run --features cuda experiments/mns.toml --set train.device=cuda).";

fn main() -> ExitCode {
    match dispatch(std::env::args().skip(1).collect()) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("xtask: {e:#}");
            ExitCode::from(2)
        }
    }
}

fn dispatch(args: Vec<String>) -> Result<ExitCode> {
    let Some((command, rest)) = args.split_first() else {
        println!("{USAGE}");
        return Ok(ExitCode::SUCCESS);
    };
    let root = project_root();
    std::env::set_current_dir(&root).with_context(|| format!("entering {}", root.display()))?;
    let (features, rest) = split_features(rest);
    match command.as_str() {
        "run" => funnel(&features, "run", &rest),
        "plugins" => funnel(&features, "plugins", &rest),
        "test" => test(&rest),
        "help" | "--help" | "-h" => {
            println!("{USAGE}");
            Ok(ExitCode::SUCCESS)
        }
        other => bail!("unknown command `{other}`\n\n{USAGE}"),
    }
}

/// Builds the release `funnel` binary and runs one of its commands.
fn funnel(features: &[String], command: &str, args: &[String]) -> Result<ExitCode> {
    let mut build = cargo();
    build.args(["build", "--release", "--quiet", "--bin", "funnel"]).args(features);
    status(&mut build)?.then_some(()).context("building funnel failed")?;
    let bin = Path::new("target").join("release").join(format!("funnel{}", std::env::consts::EXE_SUFFIX));
    let ok = status(Command::new(bin).arg(command).args(args))?;
    Ok(if ok { ExitCode::SUCCESS } else { ExitCode::from(1) })
}

/// The whole suite: every crate's unit tests and the integration tests, slow
/// ones included (they train on real MovieLens data from ../shared/data).
fn test(args: &[String]) -> Result<ExitCode> {
    let mut cmd = cargo();
    cmd.args(["test", "--workspace", "--release"]).args(args).env("FUNNEL_SLOW_TESTS", "1");
    Ok(if status(&mut cmd)? { ExitCode::SUCCESS } else { ExitCode::from(1) })
}

fn cargo() -> Command {
    Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()))
}

fn status(cmd: &mut Command) -> Result<bool> {
    let shown = format!("{cmd:?}");
    Ok(cmd.status().with_context(|| format!("starting {shown}"))?.success())
}

/// Pulls `--features X` / `--features=X` out of `args` for cargo.
fn split_features(args: &[String]) -> (Vec<String>, Vec<String>) {
    let (mut features, mut rest) = (Vec::new(), Vec::new());
    let mut it = args.iter();
    while let Some(a) = it.next() {
        if a == "--features" {
            features.push(a.clone());
            features.extend(it.next().cloned());
        } else if a.starts_with("--features=") {
            features.push(a.clone());
        } else {
            rest.push(a.clone());
        }
    }
    (features, rest)
}

fn project_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("xtask sits in the project root").to_path_buf()
}
