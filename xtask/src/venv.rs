//! Python tools in project-local virtual environments (MLflow, the faiss peer).

use std::path::Path;
use std::process::Command;

use anyhow::{bail, Context, Result};

/// Installs `packages` into `venv`, creating it first when it has no pip;
/// `what` names them in the progress line.
pub fn pip_install(venv: &Path, what: &str, packages: &[&str]) -> Result<()> {
    eprintln!("installing {what} into {} (once; a few minutes)", venv.display());
    if !venv.join("bin").join("pip").exists() {
        let ok = Command::new("python3").args(["-m", "venv"]).arg(venv).status().context("running python3 -m venv")?;
        if !ok.success() {
            bail!("python3 -m venv {} failed (Debian: apt-get install python3-venv)", venv.display());
        }
    }
    let ok = Command::new(venv.join("bin").join("pip"))
        .args(["install", "--quiet", "--disable-pip-version-check"])
        .args(packages)
        .status()
        .context("running pip")?;
    if !ok.success() {
        bail!("pip install {} failed", packages.join(" "));
    }
    Ok(())
}
