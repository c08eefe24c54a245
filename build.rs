//! Bakes the git state funnel is built from into the binary, so every run's
//! tags name the code that produced its numbers even when the experiment
//! lives outside any repository.

use std::process::Command;

fn git(args: &[&str]) -> Option<String> {
    let out = Command::new("git").args(args).output().ok().filter(|o| o.status.success())?;
    Some(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

fn main() {
    for path in ["src", "plugins", "Cargo.toml", "Cargo.lock", ".git/HEAD", ".git/index"] {
        if std::path::Path::new(path).exists() {
            println!("cargo:rerun-if-changed={path}");
        }
    }
    let commit = git(&["rev-parse", "HEAD"]).unwrap_or_else(|| "unknown".into());
    let dirty = match git(&["status", "--porcelain", "--untracked-files=no"]) {
        Some(s) => (!s.is_empty()).to_string(),
        None => "unknown".into(),
    };
    // Not FUNNEL_*: cargo also sets these when it runs the binary, and every
    // FUNNEL_ variable is configuration.
    println!("cargo:rustc-env=BUILT_FROM_GIT_COMMIT={commit}");
    println!("cargo:rustc-env=BUILT_FROM_GIT_DIRTY={dirty}");
}
