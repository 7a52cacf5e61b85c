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

/// Builds (once; again when a source file is newer) tests/fixtures/<name> with cgo on
/// (`CGO_ENABLED=1`, the system C compiler), normal or stripped (`-s -w`), under
/// `target/fixtures/cgo/`, and returns the binary's path. Errors clearly when no C compiler is
/// installed.
pub fn cgo_fixture(name: &str, stripped: bool) -> Result<PathBuf> {
    static LOCK: OnceLock<Mutex<()>> = OnceLock::new();
    let _guard = LOCK.get_or_init(|| Mutex::new(())).lock();
    let src = workspace().join("tests/fixtures").join(name);
    let dir = workspace().join("target/fixtures/cgo");
    let out = dir.join(if stripped {
        format!("{name}-stripped")
    } else {
        name.to_owned()
    });
    let modified = |p: &std::path::Path| std::fs::metadata(p).and_then(|m| m.modified()).ok();
    let newest_source = std::fs::read_dir(&src)
        .with_context(|| format!("reading {}", src.display()))?
        .filter_map(|e| e.ok().and_then(|e| modified(&e.path())))
        .max();
    if let (Some(built), Some(source)) = (modified(&out), newest_source)
        && built >= source
    {
        return Ok(out);
    }
    let cc = std::env::var("CC").unwrap_or_else(|_| "gcc".to_owned());
    if which_ok(&cc).is_none() {
        bail!("building the cgo fixture {name} needs a C compiler ({cc}): apt-get install gcc");
    }
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let tmp = dir.join(format!(
        "{}.tmp{}",
        out.file_name().and_then(|n| n.to_str()).unwrap_or(name),
        std::process::id()
    ));
    let output = Command::new("go")
        .current_dir(&src)
        .env("CGO_ENABLED", "1")
        .args(["build", "-trimpath", "-o"])
        .arg(&tmp)
        .arg(if stripped {
            "-ldflags=-s -w"
        } else {
            "-ldflags="
        })
        .arg(".")
        .output()
        .context("running go build")?;
    if !output.status.success() {
        bail!(
            "building the cgo fixture {name} failed ({}):\n{}",
            output.status,
            String::from_utf8_lossy(&output.stderr)
        );
    }
    std::fs::rename(&tmp, &out).with_context(|| format!("renaming to {}", out.display()))?;
    Ok(out)
}

/// `cmd` found on PATH (or as a path), like `command -v`.
fn which_ok(cmd: &str) -> Option<PathBuf> {
    if cmd.contains('/') {
        return std::path::Path::new(cmd)
            .exists()
            .then(|| PathBuf::from(cmd));
    }
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|d| d.join(cmd))
            .find(|p| p.is_file())
    })
}
