//! What the bench binaries share: their entry point, and a `funnel` child
//! process run to completion while its peak memory is watched (so each
//! measured configuration's memory is its own).

// Each bench binary compiles this module and uses part of it.
#![allow(dead_code)]

pub mod log;

use std::process::{Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};

/// Runs a bench, printing its error and exiting with 2 on failure.
pub fn main_with(run: fn() -> Result<()>) -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(2)
        }
    }
}

/// As [`main_with`], for a function of the remaining arguments.
pub fn main_with_args(run: fn(&[String]) -> Result<()>, args: &[String]) -> ExitCode {
    match run(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(2)
        }
    }
}

/// A finished child process.
pub struct Watched {
    pub success: bool,
    /// The largest resident size seen (its `VmHWM`, polled: a `funnel run`
    /// resets its own peak between stages).
    pub peak_bytes: u64,
    pub stderr: String,
    pub seconds: f64,
}

/// Runs `cmd` (stdout discarded, stderr kept and, with `echo`, shown
/// indented as it comes) to completion.
pub fn run_watched(cmd: &mut Command, echo: bool) -> Result<Watched> {
    let started = Instant::now();
    let mut child = cmd.stdout(Stdio::null()).stderr(Stdio::piped()).spawn().context("starting funnel")?;
    let status_path = format!("/proc/{}/status", child.id());
    let stderr = std::thread::spawn({
        let pipe = child.stderr.take().expect("piped");
        move || {
            let mut kept = String::new();
            for line in std::io::BufRead::lines(std::io::BufReader::new(pipe)).map_while(Result::ok) {
                if echo {
                    eprintln!("  {line}");
                }
                kept.push_str(&line);
                kept.push('\n');
            }
            kept
        }
    });
    let mut peak_kb = 0u64;
    while child.try_wait()?.is_none() {
        if let Ok(status) = std::fs::read_to_string(&status_path) {
            if let Some(kb) = status.lines().find_map(|l| l.strip_prefix("VmHWM:")) {
                peak_kb = peak_kb.max(kb.trim().trim_end_matches("kB").trim().parse().unwrap_or(0));
            }
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let success = child.wait()?.success();
    Ok(Watched {
        success,
        peak_bytes: peak_kb * 1024,
        stderr: stderr.join().unwrap_or_default(),
        seconds: started.elapsed().as_secs_f64(),
    })
}
