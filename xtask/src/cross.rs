//! `cargo xtask cross`: the arm64 (aarch64) build, cross-compiled on any host.
//!
//! * `target/aarch64-unknown-linux-gnu/release/kraken-tracer`: the tracer, linked by Debian's
//!   `aarch64-linux-gnu-gcc` (`.cargo/config.toml`) against rustup's prebuilt aarch64 std (no
//!   build-std for user space). Its eBPF object is built by tracer-user's build.rs, which
//!   aya-build runs with `bpf_target_arch = "aarch64"` (from the target's
//!   `CARGO_CFG_TARGET_ARCH`), so tracer-ebpf reads arm64 `pt_regs` (see tracer-ebpf's goabi.rs);
//!   the bpf object itself is always built with `-Z build-std=core`.
//! * `target/fixtures/arm64/httpserver` and `httpserver-stripped`: the Go test fixture for
//!   arm64 (`GOARCH=arm64 CGO_ENABLED=0`), static.

use std::{
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context as _, Result, bail};

use crate::util::{apt_install, output, root, run, step};

pub const TARGET: &str = "aarch64-unknown-linux-gnu";

/// Debian packages of the cross linker and the arm64 C library, each with a file showing it
/// is installed.
const APT_PACKAGES: &[(&str, &str)] = &[
    ("/usr/bin/aarch64-linux-gnu-gcc", "gcc-aarch64-linux-gnu"),
    ("/usr/aarch64-linux-gnu/lib/crt1.o", "libc6-dev-arm64-cross"),
];

/// Part of `cargo xtask setup`: the rustup target and the Debian cross toolchain.
pub fn setup(check: bool) -> Result<()> {
    let installed = output(Command::new("rustup").args(["target", "list", "--installed"]))
        .context("missing piece: rustup (needed for the aarch64 standard library)")?;
    if installed.lines().any(|l| l.trim() == TARGET) {
        step(&format!("rust target {TARGET}: present"));
    } else if check {
        bail!("missing piece: rust target {TARGET} (run `cargo xtask setup`)");
    } else {
        run(Command::new("rustup").args(["target", "add", TARGET]))
            .with_context(|| format!("missing piece: rustup target add {TARGET}"))?;
        step(&format!("rust target {TARGET}: installed"));
    }
    let missing: Vec<&str> = APT_PACKAGES
        .iter()
        .filter(|(file, _)| !Path::new(file).exists())
        .map(|(_, pkg)| *pkg)
        .collect();
    apt_install("arm64 cross toolchain", &missing, check)
}

/// Builds the arm64 Go fixture (normal and stripped) into target/fixtures/arm64.
pub fn fixtures() -> Result<Vec<PathBuf>> {
    let out = root().join("target/fixtures/arm64");
    std::fs::create_dir_all(&out)?;
    let mut built = Vec::new();
    for (name, ldflags) in [("httpserver", ""), ("httpserver-stripped", "-s -w")] {
        let bin = out.join(name);
        run(Command::new("go")
            .current_dir(root().join("tests/fixtures/httpserver"))
            .env("GOARCH", "arm64")
            .env("CGO_ENABLED", "0")
            .args(["build", "-trimpath", "-o"])
            .arg(&bin)
            .arg(format!("-ldflags={ldflags}"))
            .arg("."))?;
        step(&format!("fixture (arm64): {}", bin.display()));
        built.push(bin);
    }
    Ok(built)
}

/// `cargo xtask cross`: checks the toolchain, builds the arm64 tracer and fixtures, prints
/// their paths (one per line on stdout).
pub fn main() -> Result<()> {
    setup(true)?;
    let fixtures = fixtures()?;
    step(&format!("build: kraken-tracer (release, {TARGET})"));
    run(Command::new("cargo").current_dir(root()).args([
        "build",
        "--release",
        "--locked",
        "-p",
        "tracer-user",
        "--target",
        TARGET,
    ]))?;
    let tracer = root().join(format!("target/{TARGET}/release/kraken-tracer"));
    if !tracer.exists() {
        bail!("the build did not produce {}", tracer.display());
    }
    println!("{}", tracer.display());
    for f in fixtures {
        println!("{}", f.display());
    }
    Ok(())
}
