//! Probe cost per hit, by probe site: the `probecost` Go fixture calls `main.work` (whose 4th
//! argument is an *http.Request, like ServeHTTP's) N times per round, while the real
//! `http_serve` program sits at: nothing (baseline), the site the tracer chooses (`push rbp`),
//! the stack-check branch (`jbe`), and the function's first instruction (`cmp`, single-stepped).
//! Rounds are interleaved to cancel drift; the reader drains the ring buffer throughout.
//!
//! Run: `cargo xtask probe-cost` (root). Prints a Markdown table.

use std::{
    io::{BufRead as _, BufReader, Write as _},
    process::{Command, Stdio},
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use anyhow::{Context as _, Result};
use kraken_tracer::{rules::PathRules, symbols::sites::SiteKind, target::Target, tracer::Tracer};
use tracer_common::rules::KernelRules;
use tracer_it::{ReaderThread, fixture};

const CALLS: &str = "200000";
const ROUNDS: usize = 5;

fn main() -> Result<()> {
    let bin = fixture("probecost", false);
    let mut child = Command::new(&bin)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()?;
    let mut stdin = child.stdin.take().context("stdin")?;
    let mut stdout = BufReader::new(child.stdout.take().context("stdout")?);
    let mut line = String::new();
    stdout.read_line(&mut line)?;
    let mut time_round = |stdin: &mut std::process::ChildStdin| -> Result<f64> {
        writeln!(stdin, "{CALLS}")?;
        let mut l = String::new();
        stdout.read_line(&mut l)?;
        Ok(l.trim().parse()?)
    };

    let target = Target::resolve(child.id())?;
    let f = target.binary.lookup("main.work")?;
    let chosen = target.binary.entry_site(&f, true)?;
    assert_eq!(chosen.kind, SiteKind::Emulated);
    let code = target.binary.code(&f)?;
    // The stack-check branch follows the 4-byte `cmp 0x10(%r14),%rsp`: `jbe` rel8 (0x76) or rel32 (0x0f 0x86).
    let jbe = 4u64;
    assert_eq!(
        code.get(..4),
        Some(&[0x49, 0x3b, 0x66, 0x10][..]),
        "unexpected prologue"
    );
    assert!(
        matches!(code.get(4), Some(0x76 | 0x0f)),
        "no jbe after the stack check"
    );
    // The fixture's request is a Kraken blob download: the default rules walk /health and
    // /readiness and let it through; an exclude rule for its path drops it in the kernel.
    let no_rules = KernelRules::default();
    let defaults = PathRules::new(&[], true, &[], &[], 0.1).kernel()?;
    let drop_it = PathRules::new(
        &[],
        true,
        &[],
        &["/namespace/**".parse().map_err(anyhow::Error::msg)?],
        0.1,
    )
    .kernel()?;
    let sites: [(&str, Option<u64>, &KernelRules); 6] = [
        ("no probe (baseline)", None, &no_rules),
        (
            "push rbp (chosen, emulated), no path rules",
            Some(chosen.offset),
            &no_rules,
        ),
        (
            "push rbp, default rules, request passes",
            Some(chosen.offset),
            &defaults,
        ),
        (
            "push rbp, request dropped by an exclude rule",
            Some(chosen.offset),
            &drop_it,
        ),
        ("jbe stack check (emulated)", Some(jbe), &no_rules),
        ("cmp at entry (single-stepped)", Some(0), &no_rules),
    ];

    let mut tracer = Tracer::load(&std::env::temp_dir())?;
    let events = Arc::new(AtomicU64::new(0));
    let counted = Arc::clone(&events);
    let reader = ReaderThread::spawn(&mut tracer, Duration::from_millis(10), move |_| {
        counted.fetch_add(1, Ordering::Relaxed);
    })?;

    let mut results = vec![Vec::new(); sites.len()];
    time_round(&mut stdin)?; // warm-up
    for _ in 0..ROUNDS {
        for (i, (_, site, rules)) in sites.iter().enumerate() {
            tracer.set_rules(rules)?;
            let link = match site {
                Some(off) => Some(tracer.attach_raw(&target, "http_serve", f.file_offset + off)?),
                None => None,
            };
            results[i].push(time_round(&mut stdin)?);
            if let Some(l) = link {
                tracer.detach_raw(l);
            }
        }
    }
    reader.finish();
    let c = tracer.counters()?;
    let _ = child.kill();

    let median = |v: &mut Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let base = median(&mut results[0].clone());
    println!("| probe site in main.work | ns per call (median of {ROUNDS}) | added ns per hit |");
    println!("|---|---|---|");
    for (i, (name, _, _)) in sites.iter().enumerate() {
        let m = median(&mut results[i]);
        println!("| {name} | {m:.0} | {:.0} |", m - base);
    }
    println!();
    println!(
        "kernel: {} probe hits, {} dropped by path rules, {} ring-buffer reserve failures; reader: {} events",
        c.hits,
        c.filtered_server,
        c.ringbuf_full,
        events.load(Ordering::Relaxed)
    );
    Ok(())
}
