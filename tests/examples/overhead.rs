//! Added latency per traced request: the Go fixture serves GET /hello over one keep-alive
//! connection, timed per request from this process, in interleaved rounds without and with
//! the real `kraken-tracer` attached (100 % sampling, spans built, export off so no collector
//! is needed). Each traced request costs 2 probe hits (ServeHTTP entry, finishRequest).
//!
//! Run: `cargo xtask overhead` (root). Prints a Markdown table.

use std::time::Duration;

use anyhow::Result;
use tracer_it::{Fixture, TracerProcess, fixture, procstat::KeepAlive};

const ROUNDS: usize = 12;
const REQUESTS: usize = 4000;

fn round(addr: &str) -> Result<Vec<u64>> {
    let mut conn = KeepAlive::new(addr.parse()?, Duration::from_secs(10));
    for _ in 0..200 {
        conn.timed_get("/hello")?; // warm-up
    }
    (0..REQUESTS).map(|_| conn.timed_get("/hello")).collect()
}

fn pct(v: &mut [u64], p: f64) -> f64 {
    v.sort_unstable();
    let i = ((v.len() as f64 - 1.0) * p).round() as usize;
    v[i] as f64 / 1000.0
}

fn main() -> Result<()> {
    let fx = Fixture::http(&fixture("httpserver", false))?;
    let addr = fx.addr().to_string();
    let mut off = Vec::new();
    let mut on = Vec::new();
    // Per round: (p50 without, p50 with), to pair each traced round with its neighbour.
    let mut pairs = Vec::new();
    let mut hits = 0;
    let mut tracer_cpu = std::time::Duration::ZERO;
    for _ in 0..ROUNDS {
        let mut o = round(&addr)?;
        let po = pct(&mut o, 0.5);
        off.extend(o);
        let tracer = TracerProcess::start(&[fx.pid], &["--sample-ratio", "1", "--no-export"])?;
        let cpu_before = tracer.cpu_time()?;
        let mut w = round(&addr)?;
        pairs.push((po, pct(&mut w, 0.5)));
        on.extend(w);
        tracer_cpu += tracer.cpu_time()?.saturating_sub(cpu_before);
        let (_, log) = tracer.stop()?;
        hits += log
            .split("probe hits ")
            .nth(1)
            .and_then(|s| s.split(',').next())
            .and_then(|n| n.trim().parse::<u64>().ok())
            .unwrap_or(0);
    }
    let (p50_off, p50_on) = (pct(&mut off, 0.5), pct(&mut on, 0.5));
    let (p99_off, p99_on) = (pct(&mut off, 0.99), pct(&mut on, 0.99));
    let mean = |v: &[u64]| v.iter().sum::<u64>() as f64 / v.len() as f64 / 1000.0;
    let (m_off, m_on) = (mean(&off), mean(&on));
    println!(
        "| {} requests per side, {ROUNDS} interleaved rounds | without tracer | with tracer | added | ratio |",
        off.len()
    );
    println!("|---|---|---|---|---|");
    println!(
        "| p50 latency (µs) | {p50_off:.1} | {p50_on:.1} | {:.1} | {:.3} |",
        p50_on - p50_off,
        p50_on / p50_off
    );
    println!(
        "| p99 latency (µs) | {p99_off:.1} | {p99_on:.1} | {:.1} | {:.3} |",
        p99_on - p99_off,
        p99_on / p99_off
    );
    println!(
        "| mean latency (µs) | {m_off:.1} | {m_on:.1} | {:.1} | {:.3} |",
        m_on - m_off,
        m_on / m_off
    );
    let mut diffs: Vec<f64> = pairs.iter().map(|(o, w)| w - o).collect();
    diffs.sort_by(f64::total_cmp);
    let mut ratios: Vec<f64> = pairs.iter().map(|(o, w)| w / o).collect();
    ratios.sort_by(f64::total_cmp);
    println!(
        "| per-round p50, median of {ROUNDS} paired rounds | | | {:.1} (range {:.1} … {:.1}) | {:.3} |",
        diffs[diffs.len() / 2],
        diffs[0],
        diffs[diffs.len() - 1],
        ratios[ratios.len() / 2]
    );
    println!();
    println!(
        "tracer process CPU while traffic ran: {:.2} µs per traced request (user + system; 10 ms tick resolution)",
        tracer_cpu.as_secs_f64() * 1e6 / (ROUNDS * REQUESTS) as f64
    );
    println!(
        "probe hits while traced: {hits} ({:.2} per traced request incl. warm-up)",
        hits as f64 / (ROUNDS * (REQUESTS + 200)) as f64
    );
    Ok(())
}
