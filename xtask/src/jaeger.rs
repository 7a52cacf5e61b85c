//! Jaeger v2 for the integration tests, built from the Go module proxy only (tests/jaeger/README.md).
//!
//! The binary lands in `<cache>/kraken-tracer/bin/jaeger-<VERSION>` (`<cache>` is `$XDG_CACHE_HOME`
//! or `~/.cache`), where `tests/src/jaeger.rs` looks for it; it survives `cargo clean`.

use std::{
    fs,
    path::{Path, PathBuf},
    process::Command,
    time::Instant,
};

use anyhow::{Context as _, Result, bail};

use crate::util::{root, run, step};

/// The Jaeger release the binary reports; shared with tests/src/jaeger.rs.
const VERSION: &str = include_str!("../../tests/jaeger/VERSION");
const MODULE: &str = "github.com/jaegertracing/jaeger";
const PACKAGE: &str = "github.com/jaegertracing/jaeger/cmd/jaeger";

pub fn version() -> &'static str {
    VERSION.trim()
}

/// Where the pinned Jaeger is installed (see `cache`).
pub fn bin_path() -> PathBuf {
    crate::cache::jaeger_bin(version())
}

/// Builds the pinned Jaeger v2 unless a binary reporting that version is already installed.
pub fn install(check: bool) -> Result<()> {
    let bin = bin_path();
    if let Some(v) = installed_version(&bin)
        && v == version()
    {
        step(&format!("jaeger: {v} at {}", bin.display()));
        return Ok(());
    }
    if check {
        bail!(
            "missing piece: Jaeger {} at {} (run `cargo xtask setup`)",
            version(),
            bin.display()
        );
    }
    let dir = root().join("tests/jaeger");
    let module_version = module_version(&dir)?;
    step(&format!(
        "jaeger: building {} ({MODULE} {module_version}) from the Go module proxy \
         (~3-4 min cold on 2 cores)",
        version()
    ));
    let parent = bin.parent().context("jaeger binary path")?;
    fs::create_dir_all(parent).with_context(|| format!("creating {}", parent.display()))?;
    let tmp = bin.with_extension("tmp");
    let started = Instant::now();
    let ldflags = format!(
        "-s -w -X {MODULE}/internal/version.latestVersion={v} \
         -X {MODULE}/internal/version.commitSHA={module_version}",
        v = version()
    );
    run(Command::new("go")
        .current_dir(&dir)
        // Like Jaeger's own release builds; also needs no C toolchain.
        .env("CGO_ENABLED", "0")
        .env("GOTOOLCHAIN", "local")
        .args(["build", "-trimpath", "-ldflags", &ldflags, "-o"])
        .arg(&tmp)
        .arg(PACKAGE))
    .context(
        "missing piece: Jaeger could not be built from tests/jaeger (see go's output above)",
    )?;
    fs::rename(&tmp, &bin).with_context(|| format!("installing {}", bin.display()))?;
    let built = installed_version(&bin);
    if built.as_deref() != Some(version()) {
        bail!(
            "{} reports version {built:?}, expected {}",
            bin.display(),
            version()
        );
    }
    let size = fs::metadata(&bin).map(|m| m.len()).unwrap_or(0);
    step(&format!(
        "jaeger: built {} in {:.0?} ({} MiB) at {}",
        version(),
        started.elapsed(),
        size >> 20,
        bin.display()
    ));
    Ok(())
}

/// What `jaeger --version` reports ("jaeger version v2.13.0" -> "v2.13.0"), if it runs.
fn installed_version(bin: &Path) -> Option<String> {
    let out = Command::new(bin).arg("--version").output().ok()?;
    if !out.status.success() {
        return None;
    }
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .find_map(|l| l.trim().strip_prefix("jaeger version "))
        .map(|v| v.trim().to_owned())
}

/// The jaeger module version required by tests/jaeger/go.mod (recorded as the binary's commit).
fn module_version(dir: &Path) -> Result<String> {
    let gomod = dir.join("go.mod");
    let text =
        fs::read_to_string(&gomod).with_context(|| format!("reading {}", gomod.display()))?;
    text.lines()
        .filter_map(|l| l.trim().strip_prefix(MODULE))
        .filter_map(|rest| rest.strip_prefix(' '))
        .filter_map(|rest| rest.split_whitespace().next())
        .find(|v| v.starts_with('v'))
        .map(str::to_owned)
        .with_context(|| format!("no `require {MODULE} vX` in {}", gomod.display()))
}
