//! A project-local MLflow tracking server: MLflow pinned in `.venv`, the
//! SQLite store and the artifacts under `.mlflow/`, listening on loopback.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

/// The MLflow release funnel is tested against.
pub const VERSION: &str = "3.17.2";
/// MLflow's own default port.
pub const DEFAULT_PORT: u16 = 5000;

fn state_dir(root: &Path) -> PathBuf {
    root.join(".mlflow")
}

/// `.venv/bin/mlflow`, installing MLflow there first when it is missing or
/// another version.
pub fn install(root: &Path) -> Result<PathBuf> {
    let venv = root.join(".venv");
    let bin = venv.join("bin").join("mlflow");
    let installed = Command::new(&bin).arg("--version").output().ok().filter(|o| o.status.success());
    if installed.is_some_and(|o| String::from_utf8_lossy(&o.stdout).trim().ends_with(VERSION)) {
        return Ok(bin);
    }
    crate::venv::pip_install(&venv, &format!("MLflow {VERSION}"), &[&format!("mlflow=={VERSION}")])?;
    Ok(bin)
}

/// The address of the running local server, if it answers.
pub fn running(root: &Path) -> Option<String> {
    let url = std::fs::read_to_string(state_dir(root).join("server.url")).ok()?;
    let url = url.trim().to_string();
    healthy(&url).then_some(url)
}

/// Starts the local server (installing MLflow when needed) unless it runs.
pub fn up(root: &Path, port: u16) -> Result<String> {
    if let Some(url) = running(root) {
        return Ok(url);
    }
    let bin = install(root)?;
    let dir = state_dir(root);
    std::fs::create_dir_all(dir.join("artifacts")).with_context(|| format!("creating {}", dir.display()))?;
    let url = format!("http://127.0.0.1:{port}");
    if healthy(&url) {
        bail!("something else already answers on {url}; pass --port to use another");
    }
    let log = dir.join("server.log");
    let log_file = std::fs::File::create(&log).with_context(|| format!("creating {}", log.display()))?;
    let mut child = Command::new(&bin)
        .args(["server", "--host", "127.0.0.1", "--port", &port.to_string(), "--workers", "1"])
        .arg("--backend-store-uri")
        .arg(format!("sqlite:///{}", dir.join("mlflow.db").display()))
        .arg("--serve-artifacts")
        .arg("--artifacts-destination")
        .arg(dir.join("artifacts"))
        // MLflow 3's background job runner (GenAI evaluation jobs) starts
        // eight more Python processes, ~2 GB; experiment tracking needs none.
        .env("MLFLOW_SERVER_ENABLE_JOB_EXECUTION", "false")
        // Its telemetry thread sets and unsets an environment variable while
        // the server copies the environment, which can fail the start; nothing
        // here reports usage anyway.
        .env("MLFLOW_DISABLE_TELEMETRY", "true")
        .stdin(Stdio::null())
        .stdout(log_file.try_clone()?)
        .stderr(log_file)
        // Its own process group: outlives this command, and `down` stops the
        // server with its workers.
        .process_group(0)
        .spawn()
        .with_context(|| format!("starting {}", bin.display()))?;
    std::fs::write(dir.join("server.pid"), child.id().to_string())?;
    let started = Instant::now();
    while !healthy(&url) {
        if let Some(status) = child.try_wait()? {
            bail!("the MLflow server exited ({status}); its log:\n{}", tail(&log));
        }
        if started.elapsed() > Duration::from_secs(180) {
            bail!("the MLflow server did not answer within 180 s; its log:\n{}", tail(&log));
        }
        std::thread::sleep(Duration::from_millis(300));
    }
    std::fs::write(dir.join("server.url"), &url)?;
    Ok(url)
}

/// Stops the local server and its workers.
pub fn down(root: &Path) -> Result<bool> {
    let dir = state_dir(root);
    let Ok(pid) = std::fs::read_to_string(dir.join("server.pid")) else { return Ok(false) };
    let group = format!("-{}", pid.trim());
    let alive =
        |g: &str| Command::new("kill").args(["-0", "--", g]).stderr(Stdio::null()).status().is_ok_and(|s| s.success());
    if alive(&group) {
        Command::new("kill").args(["-TERM", "--", &group]).status()?;
        let started = Instant::now();
        while alive(&group) && started.elapsed() < Duration::from_secs(10) {
            std::thread::sleep(Duration::from_millis(200));
        }
        if alive(&group) {
            Command::new("kill").args(["-KILL", "--", &group]).status()?;
        }
    }
    let _ = std::fs::remove_file(dir.join("server.pid"));
    let _ = std::fs::remove_file(dir.join("server.url"));
    Ok(true)
}

/// Whether `GET <url>/health` answers 200.
fn healthy(url: &str) -> bool {
    let Some(addr) = url.strip_prefix("http://") else { return false };
    let addr = addr.trim_end_matches('/');
    let Ok(sockets) = std::net::ToSocketAddrs::to_socket_addrs(addr) else { return false };
    for socket in sockets {
        let Ok(mut stream) = TcpStream::connect_timeout(&socket, Duration::from_secs(1)) else { continue };
        let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
        let request = format!("GET /health HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
        if stream.write_all(request.as_bytes()).is_err() {
            continue;
        }
        let mut answer = String::new();
        let _ = stream.read_to_string(&mut answer);
        if answer.starts_with("HTTP/1.1 200") || answer.starts_with("HTTP/1.0 200") {
            return true;
        }
    }
    false
}

fn tail(log: &Path) -> String {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(30)..].join("\n")
}

/// Whether the resolved configuration (`funnel check` output) tracks to
/// MLflow without naming a server, so the local one should serve it.
pub fn wants_local_server(resolved: &str) -> bool {
    let mut in_tracking = false;
    let (mut mlflow, mut has_uri) = (false, false);
    for line in resolved.lines().map(str::trim) {
        if line.starts_with('[') {
            in_tracking = line == "[tracking]";
        } else if in_tracking {
            let compact: String = line.chars().filter(|c| !c.is_whitespace()).collect();
            mlflow |= compact == "type=\"mlflow\"";
            has_uri |= compact.starts_with("tracking_uri=\"") && compact != "tracking_uri=\"\"";
        }
    }
    mlflow && !has_uri
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn local_server_only_for_mlflow_without_a_server() {
        let base = "[model]\ntype = \"mlflow\"\n\n[tracking]\n";
        assert!(wants_local_server(&format!("{base}type = \"mlflow\"\ntracking_uri = \"\"\n")));
        assert!(wants_local_server(&format!("{base}type = \"mlflow\"\n")));
        assert!(!wants_local_server(&format!("{base}type = \"mlflow\"\ntracking_uri = \"http://x:1\"\n")));
        assert!(!wants_local_server(&format!("{base}type = \"local\"\n")));
        assert!(!wants_local_server("[tracking]\ntype = \"local\"\n[other]\ntype = \"mlflow\"\n"));
    }
}
