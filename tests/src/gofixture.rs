//! Go fixtures built by a chosen Go toolchain (`GOTOOLCHAIN=go1.N.P`), for the kernel code whose
//! behaviour depends on the target's Go version (struct offsets, map layouts).
//!
//! The toolchain comes from the Go module cache, or is downloaded by `go` itself (module proxy)
//! the first time. Builds are cached under `target/fixtures/go<version>/<name>`.

use std::{
    path::PathBuf,
    process::Command,
    sync::{Mutex, OnceLock},
};

use anyhow::{Context as _, Result, bail};

use crate::workspace;

/// Builds (once; reused while the file exists) tests/fixtures/<name> with Go `version`
/// (e.g. "1.21.13"), with DWARF, and returns the binary's path.
pub fn fixture_with_go(name: &str, version: &str) -> Result<PathBuf> {
    static LOCK: OnceLock<Mutex<()>> = OnceLock::new();
    let _guard = LOCK.get_or_init(|| Mutex::new(())).lock();
    let dir = workspace()
        .join("target/fixtures")
        .join(format!("go{version}"));
    let out = dir.join(name);
    if out.exists() {
        return Ok(out);
    }
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    // Build under a temporary name: another test binary may be building the same fixture.
    let tmp = dir.join(format!("{name}.tmp{}", std::process::id()));
    let output = Command::new("go")
        .current_dir(workspace().join("tests/fixtures").join(name))
        .env("CGO_ENABLED", "0")
        .env("GOTOOLCHAIN", format!("go{version}"))
        .args(["build", "-trimpath", "-o"])
        .arg(&tmp)
        .arg(".")
        .output()
        .context("running go build")?;
    if !output.status.success() {
        bail!(
            "building fixture {name} with go{version} failed ({}):\n{}",
            output.status,
            String::from_utf8_lossy(&output.stderr)
        );
    }
    std::fs::rename(&tmp, &out).with_context(|| format!("renaming to {}", out.display()))?;
    Ok(out)
}
