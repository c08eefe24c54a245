//! A CUDA toolkit for compiling, not running: NVIDIA's nvcc, nvvm, runtime
//! and headers from their PyPI wheels, unpacked into `.cuda/` at pinned
//! versions, so `--features cuda` builds without Debian's non-free packages.
//!
//! dfdx's build script asks `nvidia-smi` for the GPU's compute capability;
//! on a machine without a GPU a stub answers with `CUDA_COMPUTE_CAP` (9.0,
//! Hopper, unless set). Linking and running still need the driver's libcuda.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};

pub const VERSION: &str = "13.5";

/// The wheels, pinned: what `check-cuda` proves compiles.
const WHEELS: [&str; 5] = [
    "nvidia-cuda-nvcc==13.5.37",
    "nvidia-nvvm==13.5.37",
    "nvidia-cuda-crt==13.5.37",
    "nvidia-cuda-runtime==13.5.37",
    "nvidia-cuda-cccl==13.3.5.0.6",
];

/// Installs the toolkit under `<root>/.cuda` when absent; returns its root
/// (the folder holding `bin/nvcc` and `include/cuda.h`).
pub fn install(root: &Path) -> Result<PathBuf> {
    let base = root.join(".cuda");
    let toolkit = base.join("nvidia").join("cu13");
    if toolkit.join("bin").join("nvcc").is_file() && toolkit.join("include").join("cuda.h").is_file() {
        return Ok(toolkit);
    }
    let wheels = base.join("wheels");
    std::fs::create_dir_all(&wheels).with_context(|| format!("creating {}", wheels.display()))?;
    eprintln!("downloading the CUDA {VERSION} compiler wheels from PyPI into {}", wheels.display());
    let python = std::env::var("PYTHON").unwrap_or_else(|_| "python3".into());
    let ok = Command::new(&python)
        .args(["-m", "pip", "download", "--no-deps", "--quiet", "-d"])
        .arg(&wheels)
        .args(WHEELS)
        .status()
        .with_context(|| format!("starting {python} -m pip (pip is needed to fetch the CUDA wheels)"))?
        .success();
    if !ok {
        bail!("pip could not download {}", WHEELS.join(" "));
    }
    for entry in std::fs::read_dir(&wheels)? {
        let wheel = entry?.path();
        if wheel.extension().is_some_and(|e| e == "whl") {
            // A wheel is a zip archive; Python's zipfile unpacks it without extra tools.
            let ok = Command::new(&python).args(["-m", "zipfile", "-e"]).arg(&wheel).arg(&base).status()?.success();
            if !ok {
                bail!("unpacking {} failed", wheel.display());
            }
        }
    }
    // zipfile drops the executable bits.
    for dir in [toolkit.join("bin"), toolkit.join("nvvm").join("bin")] {
        for entry in std::fs::read_dir(&dir).with_context(|| format!("reading {}", dir.display()))? {
            let path = entry?.path();
            if path.is_file() {
                make_executable(&path)?;
            }
        }
    }
    Ok(toolkit)
}

/// Variables that point a build at `toolkit`: `CUDA_ROOT`, and a `PATH`
/// with nvcc and the `nvidia-smi` stub first.
pub fn env(root: &Path, toolkit: &Path) -> Result<Vec<(String, String)>> {
    let stub_dir = root.join(".cuda").join("stub-bin");
    std::fs::create_dir_all(&stub_dir)?;
    let stub = stub_dir.join("nvidia-smi");
    let cap = std::env::var("CUDA_COMPUTE_CAP").unwrap_or_else(|_| "9.0".into());
    std::fs::write(&stub, format!("#!/bin/sh\n# Stands in for the driver's nvidia-smi when no GPU is present.\necho compute_cap\necho {cap}\n"))?;
    make_executable(&stub)?;
    let mut path = vec![stub_dir, toolkit.join("bin")];
    path.extend(std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default()));
    let path = std::env::join_paths(path)?.to_string_lossy().into_owned();
    Ok(vec![("CUDA_ROOT".into(), toolkit.display().to_string()), ("PATH".into(), path)])
}

#[cfg(unix)]
fn make_executable(path: &Path) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755))
        .with_context(|| format!("making {} executable", path.display()))
}

#[cfg(not(unix))]
fn make_executable(_path: &Path) -> Result<()> {
    Ok(())
}
