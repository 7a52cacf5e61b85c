//! The real tracer on other kernels: a Debian bookworm kernel in qemu (x86_64, where kprobes
//! exist, and aarch64 under emulation), booted with an initramfs holding the tracer and the Go
//! fixture of that architecture. The guest is the one `cargo xtask qemu` runs (same file).

use std::{
    path::PathBuf,
    sync::{Mutex, OnceLock},
};

use anyhow::{Result, bail};

#[path = "../../xtask/src/qemu/guest.rs"]
mod guest;

pub use guest::{Arch, Report};

use crate::workspace;

/// `$var` if set and non-empty, else `default` under the workspace.
fn path_from_env(var: &str, default: &str) -> PathBuf {
    std::env::var_os(var)
        .filter(|v| !v.is_empty())
        .map_or_else(|| workspace().join(default), PathBuf::from)
}

/// The tracer and fixture binaries of `arch`: x86_64 from `cargo xtask test` (the release
/// tracer; `KRAKEN_TRACER_QEMU_X86_BIN` overrides), aarch64 from `cargo xtask cross`
/// (`KRAKEN_TRACER_QEMU_ARM64_BIN` overrides the tracer).
fn artifacts(arch: Arch) -> Result<(PathBuf, PathBuf)> {
    let (tracer, fixture, by) = match arch {
        Arch::X86_64 => (
            path_from_env("KRAKEN_TRACER_QEMU_X86_BIN", "target/release/kraken-tracer"),
            crate::fixture("httpserver", false),
            "cargo xtask test",
        ),
        Arch::Aarch64 => (
            path_from_env(
                "KRAKEN_TRACER_QEMU_ARM64_BIN",
                "target/aarch64-unknown-linux-gnu/release/kraken-tracer",
            ),
            workspace().join("target/fixtures/arm64/httpserver"),
            "cargo xtask cross",
        ),
    };
    for p in [&tracer, &fixture] {
        if !p.exists() {
            bail!("missing piece: {} (built by `{by}`)", p.display());
        }
    }
    Ok((tracer, fixture))
}

/// Boots the `arch` guest and returns what it reported. One guest at a time: two emulated
/// machines on a 2-core host would only slow each other past their time limits.
pub fn run(arch: Arch) -> Result<Report> {
    static ONE_AT_A_TIME: OnceLock<Mutex<()>> = OnceLock::new();
    let _guard = ONE_AT_A_TIME.get_or_init(|| Mutex::new(())).lock();
    let assets = guest::Assets::cached(arch)?;
    let (tracer, fixture) = artifacts(arch)?;
    let accel = guest::detect_accel(arch);
    eprintln!(
        "qemu: {arch} guest, kernel {} ({}), {accel}",
        assets.release, assets.package
    );
    let report = guest::run(&guest::Scenario {
        arch,
        assets,
        tracer,
        fixture,
        work_dir: workspace().join("target/qemu-it").join(arch.uname_m()),
        accel,
        timeout: arch.default_timeout(),
    })?;
    eprint!("{}", report.summary());
    Ok(report)
}

/// The kernel release the set-up downloaded for `arch` (what `uname -r` must say).
pub fn expected_release(arch: Arch) -> Result<String> {
    Ok(guest::Assets::cached(arch)?.release)
}

/// The requests the guest makes, one trace each.
pub const REQUESTS: &[&str] = guest::REQUESTS;
