//! `cargo xtask demo --kraken`: a local Kraken cluster (built by `cargo xtask setup`), a local
//! Jaeger v2, kraken-tracer attached to agent, origin and tracker, and a blob downloaded through
//! the agent twice (cold, then cached). Prints the trace trees and where to query Jaeger.

use std::time::Duration;

use anyhow::{Context as _, Result};
use tracer_it::{
    jaeger::Jaeger,
    kraken::{self, Cluster, Component},
    wait_until,
};

fn main() -> Result<()> {
    let cluster = Cluster::start().context("starting the local Kraken cluster")?;
    let jaeger = Jaeger::start().context("starting Jaeger")?;
    let tracer = cluster.trace(
        &[Component::Agent, Component::Origin, Component::Tracker],
        &["--stdout", "--otlp-endpoint", &jaeger.otlp_grpc],
    )?;
    let blob = kraken::random_bytes(1 << 20)?;
    let digest = cluster.upload_to_testfs(&blob)?;
    println!("uploaded a 1 MiB blob to testfs: sha256:{digest}");
    for round in ["cold", "cached"] {
        let got = cluster.download_via_agent("testfs", &digest)?;
        anyhow::ensure!(got == blob, "the {round} download returned other bytes");
        println!("downloaded it through the agent ({round})");
    }
    wait_until(Duration::from_secs(30), || {
        tracer
            .stdout_text()
            .matches("agent.download_blob [")
            .count()
            >= 2
    });
    let trees = tracer.stdout_text();
    let (_, log) = tracer.stop()?;
    println!("\n{trees}");
    if let Some(line) = log.lines().find(|l| l.contains("links:")) {
        println!("{line}");
    }
    println!(
        "\nJaeger (kept while this runs): {}/api/traces?service=kraken-agent&limit=20",
        jaeger.query
    );
    println!("Press Ctrl-C to stop (the cluster and Jaeger stop with this process).");
    if std::env::var_os("KRAKEN_TRACER_DEMO_NO_WAIT").is_none() {
        loop {
            std::thread::sleep(Duration::from_secs(3600));
        }
    }
    Ok(())
}
