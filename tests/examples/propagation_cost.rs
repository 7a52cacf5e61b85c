//! What propagation costs per request, side by side in one run: the Go fixture A serves
//! `/relay?url=<B>/hello` (one outgoing request per incoming one, over a keep-alive
//! connection to fixture B), timed per request from this process over one keep-alive
//! connection, in interleaved rounds with the real `kraken-tracer` attached to A and B with
//! `--propagation on` and `--propagation off` (100 % sampling, export off), and without it.
//!
//! Besides latency, the kernel's own BPF statistics (`BPF_ENABLE_STATS`: run count and run
//! time of every program, read from the tracer's program fds in /proc) give the exact
//! in-kernel cost of each program per run: the client probe with and without registering a
//! pending context, the server probe (which now parses the incoming header), and the sk_msg
//! program that inserts the header. (Uprobe trap costs are not in these numbers; propagation
//! adds no probe hit, so they cancel out between on and off.)
//!
//! Run (root): `cargo run -p tracer-it --example propagation_cost`. Prints Markdown tables.

use std::{collections::BTreeMap, fs, time::Duration};

use anyhow::{Context as _, Result};
use aya::sys::{Stats, enable_stats};
use tracer_it::{Fixture, TracerProcess, fixture, procstat::KeepAlive};

const ROUNDS: usize = 6;
const REQUESTS: usize = 3000;

#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Debug)]
enum Mode {
    NoTracer,
    Off,
    On,
}

/// (run count, run time ns) per program name, summed over the tracer's program fds.
fn prog_stats(pid: u32) -> Result<BTreeMap<String, (u64, u64)>> {
    let names: BTreeMap<u32, String> = aya::programs::loaded_programs()
        .filter_map(Result::ok)
        .map(|p| (p.id(), p.name_as_str().unwrap_or("?").to_owned()))
        .collect();
    let mut out: BTreeMap<String, (u64, u64)> = BTreeMap::new();
    let mut seen = std::collections::BTreeSet::new();
    for fd in fs::read_dir(format!("/proc/{pid}/fdinfo"))? {
        let Ok(info) = fs::read_to_string(fd?.path()) else {
            continue;
        };
        let field = |k: &str| {
            info.lines()
                .find_map(|l| l.strip_prefix(k))
                .and_then(|v| v.trim().parse::<u64>().ok())
        };
        let (Some(id), Some(cnt), Some(ns)) =
            (field("prog_id:"), field("run_cnt:"), field("run_time_ns:"))
        else {
            continue;
        };
        // One program may be open through several fds (program and link).
        if !seen.insert(id) {
            continue;
        }
        let name = names
            .get(&u32::try_from(id)?)
            .cloned()
            .unwrap_or_else(|| format!("prog{id}"));
        let e = out.entry(name).or_default();
        e.0 += cnt;
        e.1 += ns;
    }
    Ok(out)
}

fn round(addr: &str, target: &str) -> Result<Vec<u64>> {
    let mut conn = KeepAlive::new(addr.parse()?, Duration::from_secs(10));
    // A's pooled connection to B may predate this round's tracer: start a new one (the
    // tracer sees connections opened after it attached).
    conn.timed_get(&format!("{target}&reset=1"))?;
    for _ in 0..200 {
        conn.timed_get(target)?; // warm-up (and B's connection from A is made)
    }
    (0..REQUESTS).map(|_| conn.timed_get(target)).collect()
}

fn pct(v: &mut [u64], p: f64) -> f64 {
    v.sort_unstable();
    let i = ((v.len() as f64 - 1.0) * p).round() as usize;
    v[i] as f64 / 1000.0
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() -> Result<()> {
    let bin = fixture("httpserver", false);
    let b = Fixture::http(&bin)?;
    let a = Fixture::http(&bin)?;
    let addr = a.addr().to_string();
    let target = format!("/relay?url=http://{}/hello", b.addr());
    let _stats = enable_stats(Stats::RunTime).context("BPF_ENABLE_STATS")?;
    let modes = [Mode::NoTracer, Mode::Off, Mode::On];
    let mut p50: BTreeMap<Mode, Vec<f64>> = BTreeMap::new();
    let mut mean: BTreeMap<Mode, Vec<f64>> = BTreeMap::new();
    // Per-program (runs, ns) summed over rounds, per mode.
    let mut progs: BTreeMap<Mode, BTreeMap<String, (u64, u64)>> = BTreeMap::new();
    for r in 0..ROUNDS {
        let mut order = modes;
        order.rotate_left(r % modes.len());
        for mode in order {
            let tracer = match mode {
                Mode::NoTracer => None,
                Mode::Off | Mode::On => {
                    let prop = if mode == Mode::On { "on" } else { "off" };
                    // A fresh connection per round: propagation starts with new connections.
                    Some(TracerProcess::start(
                        &[a.pid, b.pid],
                        &["--sample-ratio", "1", "--no-export", "--propagation", prop],
                    )?)
                }
            };
            let mut v = round(&addr, &target)?;
            mean.entry(mode)
                .or_default()
                .push(v.iter().sum::<u64>() as f64 / v.len() as f64 / 1000.0);
            p50.entry(mode).or_default().push(pct(&mut v, 0.5));
            if let Some(t) = tracer {
                let stats = prog_stats(t.pid())?;
                let acc = progs.entry(mode).or_default();
                for (name, (c, ns)) in stats {
                    let e = acc.entry(name).or_default();
                    e.0 += c;
                    e.1 += ns;
                }
                let (_, log) = t.stop()?;
                if mode == Mode::On && !log.contains("traceparent inserted") {
                    eprintln!("warning: no propagation summary in the tracer log");
                }
            }
        }
    }
    let requests = (ROUNDS * (REQUESTS + 201)) as f64;
    println!(
        "| {ROUNDS} interleaved rounds × {REQUESTS} requests | median P50 µs | median mean µs | added vs no tracer (mean) |"
    );
    println!("|---|---|---|---|");
    let base = median(mean[&Mode::NoTracer].clone());
    for mode in modes {
        let m = median(mean[&mode].clone());
        println!(
            "| {mode:?} | {:.1} | {m:.1} | {:+.1} µs |",
            median(p50[&mode].clone()),
            m - base
        );
    }
    let (m_on, m_off) = (
        median(mean[&Mode::On].clone()),
        median(mean[&Mode::Off].clone()),
    );
    println!(
        "\npropagation on vs off, end to end: {:+.2} µs per request (ratio {:.3})\n",
        m_on - m_off,
        m_on / m_off
    );
    println!(
        "| program | runs per request (on) | ns per run, off | ns per run, on | added ns per request |"
    );
    println!("|---|---|---|---|---|");
    let mut total = 0.0;
    let names: std::collections::BTreeSet<&String> =
        progs.values().flat_map(BTreeMap::keys).collect();
    for name in names {
        let get = |m: Mode| {
            progs
                .get(&m)
                .and_then(|p| p.get(name))
                .copied()
                .unwrap_or((0, 0))
        };
        let (c_on, ns_on) = get(Mode::On);
        let (c_off, ns_off) = get(Mode::Off);
        if c_on == 0 && c_off == 0 {
            continue;
        }
        let per = |c: u64, ns: u64| if c == 0 { 0.0 } else { ns as f64 / c as f64 };
        let added = ns_on as f64 / requests - ns_off as f64 / requests;
        total += added;
        println!(
            "| {name} | {:.2} | {:.0} | {:.0} | {added:+.0} |",
            c_on as f64 / requests,
            per(c_off, ns_off),
            per(c_on, ns_on),
        );
    }
    println!(
        "\nin-kernel cost of propagation: {total:+.0} ns per request (BPF run time, on − off)"
    );
    Ok(())
}
