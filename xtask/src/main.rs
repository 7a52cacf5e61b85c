//! Developer commands: `cargo xtask <setup|fixtures|test|demo>`.

mod bench;
mod cache;
mod cross;
mod demo;
mod deploy;
mod fixtures;
mod fuzz;
mod jaeger;
mod kraken;
mod qemu;
mod setup;
mod soak;
mod test;
mod util;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(about = "kraken-tracer developer tasks")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Install everything the build and the tests need (idempotent).
    Setup(setup::Options),
    /// Build the Go test fixtures (normal and stripped) into target/fixtures.
    Fixtures,
    /// Set up, then run every test: unit tests and the privileged integration tests.
    Test(test::Options),
    /// Set up, build, start the Go fixture and trace it, printing events.
    Demo(demo::Options),
    /// Measure the cost of one probe hit at each candidate probe site (root).
    ProbeCost,
    /// Measure the latency the tracer adds to a Go HTTP request, with vs without (root).
    Overhead,
    /// Soak: trace the Go fixture (and Kraken) under load for N minutes, record RSS and
    /// self-metrics, check for crashes and growth (root; results in target/soak/).
    Soak(soak::Options),
    /// Side-by-side benchmark: no tracer / kraken-tracer 10 % and 100 % / OTel Go auto and a
    /// re-creation of its probe set, probe cost table, real Kraken; JSON + PNG + BENCHMARKS.md
    /// in target/bench/ (root; `--quick` for a ~30 s smoke run, `--publish` to copy the report).
    Bench(bench::Options),
    /// Cross-build for arm64: target/aarch64-unknown-linux-gnu/release/kraken-tracer and the Go
    /// fixture target/fixtures/arm64/httpserver (and -stripped); prints their paths.
    Cross,
    /// Fuzz every parser of untrusted bytes (installs cargo-fuzz if missing; N s per target).
    Fuzz(fuzz::Options),
    /// Run the tracer on a Debian kernel in qemu (x86_64 with kprobes, or aarch64 under
    /// emulation) against the Go fixture, and print what the guest reported.
    Qemu(qemu::Options),
}

fn main() -> anyhow::Result<()> {
    match Cli::parse().cmd {
        Cmd::Setup(o) => setup::main(&o),
        Cmd::Fixtures => fixtures::build_all().map(|_| ()),
        Cmd::Test(o) => test::main(&o),
        Cmd::Demo(o) => demo::main(&o),
        Cmd::ProbeCost => example("probe_cost", &[]),
        Cmd::Overhead => example("overhead", &[]),
        Cmd::Soak(o) => soak::main(&o),
        Cmd::Bench(o) => bench::main(&o),
        Cmd::Fuzz(o) => fuzz::main(&o),
        Cmd::Cross => cross::main(),
        Cmd::Qemu(o) => qemu::main(&o),
    }
}

/// Builds the release tracer, then runs an example of the integration-test crate with it
/// (benchmarks, the Kraken demo), with extra environment variables.
pub(crate) fn example(name: &str, env: &[(&str, &str)]) -> anyhow::Result<()> {
    util::build_release_tracer()?;
    let mut cmd = std::process::Command::new("cargo");
    cmd.current_dir(util::root())
        .env(
            "KRAKEN_TRACER_BIN",
            util::root().join("target/release/kraken-tracer"),
        )
        .envs(env.iter().copied())
        .args([
            "run",
            "--release",
            "--locked",
            "-p",
            "tracer-it",
            "--example",
            name,
        ]);
    util::run(&mut cmd)
}
