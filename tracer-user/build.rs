//! Builds the eBPF object (tracer-ebpf, target bpfel-unknown-none) with aya-build and leaves it
//! in OUT_DIR for `include_bytes_aligned!`. With AYA_BUILD_SKIP=1 (cargo check/clippy on a machine
//! without bpf-linker) an empty stub is written instead; loading it fails with a clear error.
use std::{env, fs, path::PathBuf};

use anyhow::{Context as _, anyhow};

fn main() -> anyhow::Result<()> {
    let out = PathBuf::from(env::var_os("OUT_DIR").context("OUT_DIR not set")?);
    let skip = env::var("AYA_BUILD_SKIP").is_ok_and(|v| v == "1" || v.eq_ignore_ascii_case("true"));
    if skip {
        fs::write(out.join("tracer"), [])?;
        println!("cargo:rustc-cfg=ebpf_stub");
    }
    println!("cargo:rustc-check-cfg=cfg(ebpf_stub)");
    let meta = cargo_metadata_ebpf_dir()?;
    // Build the object with the toolchain that builds us (the one `cargo xtask setup` gave
    // rust-src), not aya-build's default nightly.
    println!("cargo:rerun-if-env-changed=RUSTUP_TOOLCHAIN");
    let toolchain = env::var("RUSTUP_TOOLCHAIN").unwrap_or_else(|_| "stable".to_owned());
    aya_build::build_ebpf(
        [aya_build::Package {
            name: "tracer-ebpf",
            root_dir: &meta,
            ..Default::default()
        }],
        aya_build::Toolchain::Custom(&toolchain),
    )
    .map_err(|e| anyhow!("building the eBPF object failed: {e:#}\n(run `cargo xtask setup`, or set AYA_BUILD_SKIP=1 to build without it)"))
}

fn cargo_metadata_ebpf_dir() -> anyhow::Result<String> {
    let manifest = PathBuf::from(env::var_os("CARGO_MANIFEST_DIR").context("CARGO_MANIFEST_DIR")?);
    let dir = manifest
        .parent()
        .context("workspace root")?
        .join("tracer-ebpf");
    Ok(dir.to_string_lossy().into_owned())
}
