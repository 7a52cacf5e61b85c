//! `cargo xtask soak`: the long-running reliability check (tests/examples/soak.rs) with the
//! release tracer: the Go fixture (and, with `--kraken`, a real Kraken cluster) traced at
//! 100 % under a bounded loopback load, exporting to a real Jaeger; samples the tracer's RSS,
//! the traced processes' liveness and the tracer's self-metrics every `--sample-secs`, and
//! writes target/soak/samples.csv and target/soak/summary.md. Fails if a traced process
//! crashed, a request failed, the tracer's RSS grew or a bounded map kept growing.

use anyhow::{Result, bail};

#[derive(clap::Args)]
pub struct Options {
    /// How long the load runs, in minutes.
    #[arg(long, default_value_t = 10.0)]
    pub minutes: f64,
    /// Also trace a real Kraken cluster (agent, origin, tracker) downloading blobs in a loop.
    #[arg(long)]
    pub kraken: bool,
    /// Seconds between two samples.
    #[arg(long, default_value_t = 10.0)]
    pub sample_secs: f64,
}

pub fn main(o: &Options) -> Result<()> {
    if !(o.minutes > 0.0 && o.sample_secs > 0.0) {
        bail!("--minutes and --sample-secs must be positive");
    }
    let minutes = o.minutes.to_string();
    let sample = o.sample_secs.to_string();
    crate::example(
        "soak",
        &[
            ("KRAKEN_TRACER_SOAK_MINUTES", &minutes),
            ("KRAKEN_TRACER_SOAK_SAMPLE_SECS", &sample),
            (
                "KRAKEN_TRACER_SOAK_KRAKEN",
                if o.kraken { "1" } else { "0" },
            ),
        ],
    )
}
