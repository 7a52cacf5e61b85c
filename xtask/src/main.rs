//! Developer commands: `cargo xtask <setup|fixtures|test|demo>`.

mod cache;
mod demo;
mod fixtures;
mod jaeger;
mod kraken;
mod setup;
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
}

fn main() -> anyhow::Result<()> {
    match Cli::parse().cmd {
        Cmd::Setup(o) => setup::main(&o),
        Cmd::Fixtures => fixtures::build_all().map(|_| ()),
        Cmd::Test(o) => test::main(&o),
        Cmd::Demo(o) => demo::main(&o),
        Cmd::ProbeCost => example("probe_cost", &[]),
        Cmd::Overhead => example("overhead", &[]),
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
