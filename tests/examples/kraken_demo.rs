//! `cargo xtask demo --kraken`: a local Kraken cluster (built by `cargo xtask setup`), a local
//! Jaeger v2, kraken-tracer attached to agent, origin and tracker, and a blob downloaded through
//! the agent twice (cold, then cached). Prints the trace trees and where to query Jaeger.

use std::{path::PathBuf, time::Duration};

use anyhow::{Context as _, Result};
use tracer_it::{
    jaeger::Jaeger,
    kraken::{self, Cluster, Component},
    wait_until, waterfall,
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
    match picture(&jaeger) {
        Ok(path) => println!(
            "\nthe cold download's trace, as Jaeger has it, drawn: {}",
            path.display()
        ),
        Err(e) => println!("\nno picture of the trace: {e:#}"),
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

/// Reads the cold download's trace back from Jaeger (the one with the most spans) and draws it
/// into `target/demo/kraken-download-trace.svg`.
fn picture(jaeger: &Jaeger) -> Result<PathBuf> {
    let traces = jaeger.wait_for_traces("kraken-agent", 10, Duration::from_secs(30))?;
    let trace = traces
        .iter()
        .filter(|t| t.span("agent.download_blob").is_some())
        .max_by_key(|t| t.spans.len())
        .context("no agent.download_blob trace in Jaeger")?;
    let dir = tracer_it::workspace().join("target/demo");
    std::fs::create_dir_all(&dir)?;
    let path = dir.join("kraken-download-trace.svg");
    let title = "A blob download through a local Kraken cluster (agent, tracker, origin, testfs), read back from Jaeger";
    std::fs::write(&path, waterfall::svg(trace, title))?;
    Ok(path)
}
