//! `cargo xtask test`: set-up, lints, unit tests, then the privileged integration tests.

use std::process::Command;

use anyhow::{Result, bail};

use crate::util::{Tally, root, run, run_tests, step};

#[derive(clap::Args)]
pub struct Options {
    /// Skip `cargo xtask setup` (when it already ran).
    #[arg(long)]
    pub no_setup: bool,
    /// Skip rustfmt and clippy.
    #[arg(long)]
    pub no_lint: bool,
    /// Extra arguments for the integration test binaries (e.g. a test name filter).
    #[arg(last = true)]
    pub filter: Vec<String>,
}

pub fn main(opts: &Options) -> Result<()> {
    if !opts.no_setup {
        crate::setup::main(&crate::setup::Options::default())?;
    }
    if euid() != 0 {
        bail!("the integration tests load eBPF programs: run `cargo xtask test` as root");
    }
    crate::fixtures::build_all()?;
    let cargo = || {
        let mut c = Command::new("cargo");
        c.current_dir(root());
        c
    };
    if !opts.no_lint {
        step("lint: cargo fmt --check");
        run(cargo().args(["fmt", "--all", "--check"]))?;
        step("lint: cargo clippy -D warnings");
        run(cargo().args([
            "clippy",
            "--workspace",
            "--exclude",
            "tracer-ebpf",
            "--all-targets",
            "--",
            "-D",
            "warnings",
        ]))?;
    }
    step("build: kraken-tracer (with the real eBPF object)");
    run(cargo().args(["build", "--locked", "-p", "tracer-user"]))?;
    crate::qemu::prepare()?;
    let bin = root().join("target/debug/kraken-tracer");
    let mut tally = Tally::default();
    step("test: unit tests");
    run_tests(
        cargo().args([
            "test",
            "--locked",
            "-p",
            "tracer-common",
            "-p",
            "tracer-user",
        ]),
        &mut tally,
    )?;
    step("test: privileged integration tests (real eBPF, real Go processes)");
    run_tests(
        cargo()
            .env("KRAKEN_TRACER_BIN", &bin)
            .env("RUST_BACKTRACE", "1")
            .args(["test", "--locked", "-p", "tracer-it", "--"])
            .args(&opts.filter),
        &mut tally,
    )?;
    if tally.passed == 0 {
        bail!("no test ran");
    }
    println!("{} passed, {} failed", tally.passed, tally.failed);
    Ok(())
}

fn euid() -> u32 {
    // No libc dependency in xtask: ask `id`.
    Command::new("id")
        .arg("-u")
        .output()
        .ok()
        .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse().ok())
        .unwrap_or(u32::MAX)
}
