//! Go fixtures and Debian packages the tests use.

use std::{path::PathBuf, process::Command};

use anyhow::{Context as _, Result};

use crate::util::{apt_install, root, run, step, succeeds};

/// Debian packages the tests and the demo use: curl for the demo's requests.
const APT_PACKAGES: &[(&str, &str)] = &[("curl", "curl")];

pub fn apt_packages(check: bool) -> Result<()> {
    let missing: Vec<&str> = APT_PACKAGES
        .iter()
        .filter(|(bin, _)| {
            !succeeds(
                Command::new("sh")
                    .arg("-c")
                    .arg(format!("command -v {bin}")),
            )
        })
        .map(|(_, pkg)| *pkg)
        .collect();
    apt_install("apt packages", &missing, check)
}

/// Builds every fixture under tests/fixtures (each a Go main package) twice: normal and stripped
/// (returned), and the httpserver fixture for arm64 into target/fixtures/arm64 (not returned).
pub fn build_all() -> Result<Vec<PathBuf>> {
    let src = root().join("tests/fixtures");
    let out = root().join("target/fixtures");
    std::fs::create_dir_all(&out)?;
    let mut built = Vec::new();
    for entry in std::fs::read_dir(&src)? {
        let dir = entry?.path();
        if !dir.join("go.mod").exists() {
            continue;
        }
        let name = dir
            .file_name()
            .context("fixture dir name")?
            .to_string_lossy()
            .into_owned();
        for (suffix, ldflags) in [("", ""), ("-stripped", "-s -w")] {
            let bin = out.join(format!("{name}{suffix}"));
            run(Command::new("go")
                .current_dir(&dir)
                .env("CGO_ENABLED", "0")
                .args(["build", "-trimpath", "-o"])
                .arg(&bin)
                .arg(format!("-ldflags={ldflags}"))
                .arg("."))?;
            step(&format!("fixture: {}", bin.display()));
            built.push(bin);
        }
    }
    // Built for the arm64 unit tests and qemu runs; not listed (callers run the host's).
    crate::cross::fixtures()?;
    Ok(built)
}
