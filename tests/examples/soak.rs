//! Soak: the real `kraken-tracer` traces the Go fixture under a bounded loopback load for a long
//! time, at 100 % sampling, exporting to a real Jaeger v2; with `--kraken`, also a real Kraken
//! cluster (agent, origin, tracker) downloading blobs in a loop. The load mixes plain requests
//! (`/hello`), deep stack growth (`/deep?n=5000`), GC pressure (`/deep?n=1000&gc=1`) and
//! outgoing calls back to the fixture itself (`/call`), from several keep-alive clients.
//!
//! Every sample period it records the tracer's RSS, the traced processes' liveness and the
//! tracer's self-metrics: the in-flight map gauges (open spans, goroutine parents, outbound
//! links, keep buffer, export queue) and the loss counters. At the end it checks: no traced
//! process crashed, the tracer ran to the end and exited cleanly, no request failed, the
//! tracer's RSS stayed flat after warm-up, the gauges did not grow, nothing was lost or
//! dropped; it prints the RSS curve and writes `samples.csv` and `summary.md`.
//!
//! Run: `cargo xtask soak [--minutes N] [--kraken]` (root; release tracer; results in
//! target/soak/). Environment, when run directly: `KRAKEN_TRACER_SOAK_MINUTES` (default 10),
//! `KRAKEN_TRACER_SOAK_KRAKEN=1`, `KRAKEN_TRACER_SOAK_SAMPLE_SECS` (default 10),
//! `KRAKEN_TRACER_SOAK_OUT` (default target/soak). tests/tests/soak_smoke.rs runs the same
//! code for 30 s in CI.

use std::{
    fmt::Write as _,
    fs,
    path::PathBuf,
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering::Relaxed},
    },
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail};
use tracer_it::{
    Fixture, TracerProcess, fixture,
    jaeger::Jaeger,
    kraken::{self, Cluster, Component},
    procstat::{self, Load, get, mib, sum},
    wait_until, workspace,
};

/// What to run.
#[derive(Clone, Debug)]
pub struct Options {
    pub duration: Duration,
    pub sample_every: Duration,
    /// Also trace a Kraken cluster downloading blobs in a loop.
    pub kraken: bool,
    /// Keep-alive client threads on the fixture.
    pub clients: usize,
    /// Each client starts a request at most this often.
    pub pace: Duration,
    /// Where samples.csv and summary.md go.
    pub out_dir: PathBuf,
    /// Allowed RSS growth of the tracer from the end of warm-up to the end of the run.
    pub rss_growth_bound: u64,
}

impl Default for Options {
    fn default() -> Options {
        Options {
            duration: Duration::from_secs(600),
            sample_every: Duration::from_secs(10),
            kraken: false,
            clients: 4,
            pace: Duration::from_millis(10),
            out_dir: workspace().join("target/soak"),
            rss_growth_bound: 16 << 20,
        }
    }
}

impl Options {
    /// The defaults, overridden by `KRAKEN_TRACER_SOAK_*` (see the module doc).
    pub fn from_env() -> Result<Options> {
        let mut o = Options::default();
        let var = |k: &str| std::env::var(k).ok().filter(|v| !v.trim().is_empty());
        if let Some(m) = var("KRAKEN_TRACER_SOAK_MINUTES") {
            let m: f64 = m.trim().parse().context("KRAKEN_TRACER_SOAK_MINUTES")?;
            o.duration = Duration::from_secs_f64(m * 60.0);
        }
        if let Some(s) = var("KRAKEN_TRACER_SOAK_SAMPLE_SECS") {
            let s: f64 = s.trim().parse().context("KRAKEN_TRACER_SOAK_SAMPLE_SECS")?;
            o.sample_every = Duration::from_secs_f64(s);
        }
        o.kraken = var("KRAKEN_TRACER_SOAK_KRAKEN").is_some_and(|v| v != "0");
        if let Some(d) = var("KRAKEN_TRACER_SOAK_OUT") {
            o.out_dir = PathBuf::from(d);
        }
        Ok(o)
    }

    /// RSS growth is measured from the first sample after this.
    fn warm_up(&self) -> Duration {
        (self.duration / 5).min(Duration::from_secs(60))
    }
}

/// The gauges that must stay bounded and flat: (column, metric).
pub const GAUGES: [(&str, &str); 5] = [
    ("open_spans", "kraken_tracer_open_spans"),
    ("goroutine_parents", "kraken_tracer_goroutine_parents"),
    ("outbound_links", "kraken_tracer_outbound_links"),
    ("keep_buffer_spans", "kraken_tracer_keep_buffer_spans"),
    ("export_queue_spans", "kraken_tracer_export_queue_spans"),
];

/// Counters that must stay 0: (column, metric family).
pub const LOSSES: [(&str, &str); 5] = [
    (
        "lost_events",
        "kraken_tracer_ringbuf_reserve_failures_total",
    ),
    ("spans_dropped", "kraken_tracer_spans_dropped_total"),
    ("export_errors", "kraken_tracer_export_errors_total"),
    (
        "correlator_evictions",
        "kraken_tracer_correlator_evictions_total",
    ),
    (
        "events_undecodable",
        "kraken_tracer_events_undecodable_total",
    ),
];

/// One sample.
#[derive(Clone, Debug, Default)]
pub struct Sample {
    pub t: Duration,
    pub tracer_rss: u64,
    pub fixture_rss: u64,
    pub requests_ok: u64,
    pub requests_failed: u64,
    pub downloads_ok: u64,
    pub downloads_failed: u64,
    pub spans_created: f64,
    pub spans_exported: f64,
    pub spans_expired: f64,
    pub unmatched_ends: f64,
    pub gauges: [f64; GAUGES.len()],
    pub losses: [f64; LOSSES.len()],
}

/// What a soak saw.
#[derive(Debug)]
pub struct Report {
    pub options: Options,
    pub samples: Vec<Sample>,
    /// Processes that died: traced ones, or the tracer.
    pub crashes: Vec<String>,
    /// The tracer's exit status after SIGTERM.
    pub tracer_exit: String,
    /// Failed checks (empty: the soak passed).
    pub problems: Vec<String>,
}

impl Report {
    fn last(&self) -> Sample {
        self.samples.last().cloned().unwrap_or_default()
    }

    /// The first sample at or after warm-up (the RSS baseline).
    fn warm(&self) -> Sample {
        let w = self.options.warm_up();
        self.samples
            .iter()
            .find(|s| s.t >= w)
            .or(self.samples.last())
            .cloned()
            .unwrap_or_default()
    }

    pub fn rss_start(&self) -> u64 {
        self.samples.first().map_or(0, |s| s.tracer_rss)
    }

    pub fn rss_warm(&self) -> u64 {
        self.warm().tracer_rss
    }

    pub fn rss_end(&self) -> u64 {
        self.last().tracer_rss
    }

    pub fn rss_max(&self) -> u64 {
        self.samples.iter().map(|s| s.tracer_rss).max().unwrap_or(0)
    }

    /// Least-squares slope of the tracer's RSS after warm-up, in MiB per minute.
    pub fn rss_slope_mib_per_min(&self) -> f64 {
        let w = self.options.warm_up();
        let pts: Vec<(f64, f64)> = self
            .samples
            .iter()
            .filter(|s| s.t >= w)
            .map(|s| (s.t.as_secs_f64() / 60.0, mib(s.tracer_rss)))
            .collect();
        if pts.len() < 2 {
            return 0.0;
        }
        let n = pts.len() as f64;
        let (mx, my) = (
            pts.iter().map(|p| p.0).sum::<f64>() / n,
            pts.iter().map(|p| p.1).sum::<f64>() / n,
        );
        let var: f64 = pts.iter().map(|p| (p.0 - mx).powi(2)).sum();
        if var == 0.0 {
            return 0.0;
        }
        pts.iter().map(|p| (p.0 - mx) * (p.1 - my)).sum::<f64>() / var
    }

    pub fn requests(&self) -> (u64, u64) {
        let l = self.last();
        (l.requests_ok, l.requests_failed)
    }

    pub fn downloads(&self) -> (u64, u64) {
        let l = self.last();
        (l.downloads_ok, l.downloads_failed)
    }

    /// A gauge's maximum over the whole run.
    pub fn gauge_max(&self, i: usize) -> f64 {
        self.samples.iter().map(|s| s.gauges[i]).fold(0.0, f64::max)
    }

    /// Every sample as CSV, with a header.
    pub fn csv(&self) -> String {
        let mut out = String::from(
            "t_s,tracer_rss_kib,fixture_rss_kib,requests_ok,requests_failed,downloads_ok,\
             downloads_failed,spans_created,spans_exported,spans_expired,unmatched_ends",
        );
        for (name, _) in GAUGES.iter().chain(&LOSSES) {
            out.push(',');
            out.push_str(name);
        }
        out.push('\n');
        for s in &self.samples {
            let _ = write!(
                out,
                "{:.1},{},{},{},{},{},{},{},{},{},{}",
                s.t.as_secs_f64(),
                s.tracer_rss / 1024,
                s.fixture_rss / 1024,
                s.requests_ok,
                s.requests_failed,
                s.downloads_ok,
                s.downloads_failed,
                s.spans_created,
                s.spans_exported,
                s.spans_expired,
                s.unmatched_ends
            );
            for v in s.gauges.iter().chain(&s.losses) {
                let _ = write!(out, ",{v}");
            }
            out.push('\n');
        }
        out
    }

    /// The RSS curve and the other columns as a Markdown table.
    pub fn table(&self) -> String {
        let mut out = String::from(
            "| t (s) | tracer RSS (MiB) | fixture RSS (MiB) | requests | failed | downloads | \
             spans exported | open spans | goroutine parents | outbound links | keep buffer | \
             export queue | lost events | spans dropped |\n\
             |---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n",
        );
        for s in &self.samples {
            let _ = writeln!(
                out,
                "| {:.0} | {:.1} | {:.1} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
                s.t.as_secs_f64(),
                mib(s.tracer_rss),
                mib(s.fixture_rss),
                s.requests_ok,
                s.requests_failed,
                s.downloads_ok,
                s.spans_exported,
                s.gauges[0],
                s.gauges[1],
                s.gauges[2],
                s.gauges[3],
                s.gauges[4],
                s.losses[0],
                s.losses[1]
            );
        }
        out
    }

    /// The figures and the verdict, as Markdown.
    pub fn summary(&self) -> String {
        let o = &self.options;
        let (ok, failed) = self.requests();
        let (dl_ok, dl_failed) = self.downloads();
        let l = self.last();
        let mut out = String::new();
        let _ = writeln!(
            out,
            "# kraken-tracer soak\n\n\
             - duration: {:.1} min, sampled every {:?}; load: {} keep-alive clients, one \
             request each per {:?} at most (/hello, /deep?n=5000, /deep?n=1000&gc=1, /call to \
             itself); Kraken downloads: {}\n\
             - requests: {ok} answered, {failed} failed{}\n\
             - crashes: {} {:?}; tracer exit after SIGTERM: {}\n\
             - tracer RSS: start {:.1} MiB, after warm-up ({:?}) {:.1} MiB, end {:.1} MiB, max \
             {:.1} MiB; slope after warm-up {:+.3} MiB/min\n\
             - spans: {} created, {} exported; dropped {}, lost events {}, export errors {}, \
             correlator evictions {}, expired {}, unmatched ends {}",
            l.t.as_secs_f64() / 60.0,
            o.sample_every,
            o.clients,
            o.pace,
            if o.kraken { "yes" } else { "no" },
            if o.kraken {
                format!("; Kraken downloads: {dl_ok} ok, {dl_failed} failed")
            } else {
                String::new()
            },
            self.crashes.len(),
            self.crashes,
            self.tracer_exit,
            mib(self.rss_start()),
            o.warm_up(),
            mib(self.rss_warm()),
            mib(self.rss_end()),
            mib(self.rss_max()),
            self.rss_slope_mib_per_min(),
            l.spans_created,
            l.spans_exported,
            l.losses[1],
            l.losses[0],
            l.losses[2],
            l.losses[3],
            l.spans_expired,
            l.unmatched_ends,
        );
        let gauges: Vec<String> = GAUGES
            .iter()
            .enumerate()
            .map(|(i, (name, _))| format!("{name} max {} end {}", self.gauge_max(i), l.gauges[i]))
            .collect();
        let _ = writeln!(out, "- gauges: {}", gauges.join(", "));
        let _ = writeln!(
            out,
            "- verdict: {}\n",
            if self.problems.is_empty() {
                "PASS".to_owned()
            } else {
                format!("FAIL: {}", self.problems.join("; "))
            }
        );
        out.push_str(&self.table());
        out
    }

    /// Writes samples.csv and summary.md into the output folder.
    pub fn write(&self) -> Result<()> {
        let dir = &self.options.out_dir;
        fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        fs::write(dir.join("samples.csv"), self.csv())?;
        fs::write(dir.join("summary.md"), self.summary())?;
        Ok(())
    }

    /// Fills `problems` from the samples.
    fn check(&mut self) {
        let mut p = Vec::new();
        if !self.crashes.is_empty() {
            p.push(format!("crashes: {:?}", self.crashes));
        }
        let (_, failed) = self.requests();
        if failed > 0 {
            p.push(format!("{failed} requests failed"));
        }
        let (_, dl_failed) = self.downloads();
        if dl_failed > 0 {
            p.push(format!("{dl_failed} Kraken downloads failed"));
        }
        let growth = self.rss_end().saturating_sub(self.rss_warm());
        if growth > self.options.rss_growth_bound {
            p.push(format!(
                "tracer RSS grew by {:.1} MiB after warm-up (bound {:.1} MiB)",
                mib(growth),
                mib(self.options.rss_growth_bound)
            ));
        }
        // Gauges: flat after warm-up. A level that merely fluctuates stays within its
        // early maximum (+50 %, + 32 for noise); a map that keeps what it should forget
        // grows steadily and ends well above it.
        let w = self.options.warm_up();
        let end = self.last().t;
        let third = end.saturating_sub(w) / 3;
        for (i, (name, _)) in GAUGES.iter().enumerate() {
            let max = |lo: Duration, hi: Duration| {
                self.samples
                    .iter()
                    .filter(|s| s.t >= lo && s.t <= hi)
                    .map(|s| s.gauges[i])
                    .fold(0.0, f64::max)
            };
            let (early, late) = (max(w, w + third), max(end.saturating_sub(third), end));
            if late > 1.5 * early + 32.0 {
                p.push(format!(
                    "{name} grows: max {early} from {w:?} to {:?}, {late} in the last third",
                    w + third
                ));
            }
        }
        let l = self.last();
        for (i, (name, _)) in LOSSES.iter().enumerate() {
            if l.losses[i] > 0.0 {
                p.push(format!("{name} = {}", l.losses[i]));
            }
        }
        if l.spans_exported == 0.0 {
            p.push("no span exported".to_owned());
        }
        self.problems = p;
    }
}

/// The last `n` lines of `text`.
fn tail(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// Kraken downloads in a loop: upload a new 256 KiB blob to testfs, download it through the
/// agent twice (P2P from the origin, then from the agent's cache), once per second.
fn kraken_loop(cluster: &Cluster, stop: &AtomicBool, ok: &AtomicU64, failed: &AtomicU64) {
    let mut next = Instant::now();
    while !stop.load(Relaxed) {
        let round = || -> Result<()> {
            let blob = kraken::random_bytes(256 << 10)?;
            let hex = cluster.upload_to_testfs(&blob)?;
            for _ in 0..2 {
                if cluster.download_via_agent("testfs", &hex)? != blob {
                    bail!("downloaded blob differs");
                }
                ok.fetch_add(1, Relaxed);
            }
            Ok(())
        };
        if let Err(e) = round() {
            failed.fetch_add(1, Relaxed);
            eprintln!("soak: Kraken download failed: {e:#}");
        }
        next += Duration::from_secs(1);
        let now = Instant::now();
        if next > now {
            thread::sleep(next - now);
        } else {
            next = now;
        }
    }
}

/// Runs a soak and checks it (see the module doc). Errors are set-up failures; what the soak
/// found is in the report's `crashes` and `problems`.
pub fn run(opts: &Options) -> Result<Report> {
    let jaeger = Jaeger::start()?;
    // A private copy of the fixture: uprobes are per executable file, so probes that other
    // tracers (concurrent test runs) attach to the shared fixture never fire in this one.
    let dir = std::env::temp_dir().join(format!("kraken-tracer-soak-{}", std::process::id()));
    fs::create_dir_all(&dir)?;
    let bin = dir.join("httpserver");
    fs::copy(fixture("httpserver", false), &bin)?;
    let mut fx = Fixture::http(&bin)?;
    let cluster = if opts.kraken {
        Some(Cluster::start()?)
    } else {
        None
    };
    let kraken_components = [Component::Agent, Component::Origin, Component::Tracker];
    let mut pids = vec![fx.pid];
    let mut args: Vec<String> = [
        "--metrics-addr",
        "127.0.0.1:0",
        "--sample-ratio",
        "1",
        "--otlp-endpoint",
        &jaeger.otlp_grpc,
        "--service-name-for",
        &format!("{}=soak-httpserver", fx.pid),
    ]
    .map(String::from)
    .to_vec();
    if let Some(c) = &cluster {
        // As Cluster::trace: health checks dropped in the kernel, everything else kept.
        args.extend(
            [
                "--no-default-rules",
                "--sample",
                "/health=0",
                "--sample",
                "/readiness=0",
            ]
            .map(String::from),
        );
        for k in kraken_components {
            pids.push(c.pid(k));
            args.push("--service-name-for".into());
            args.push(format!("{}=kraken-{}", c.pid(k), k.name()));
        }
    }
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let mut tracer = TracerProcess::start(&pids, &args)?;
    let metrics = procstat::metrics_addr(&mut tracer)?;
    eprintln!(
        "soak: {:.1} min, tracer pid {}, fixture pid {} at {}, metrics at http://{metrics}/metrics, \
         Jaeger at {}{}",
        opts.duration.as_secs_f64() / 60.0,
        tracer.pid(),
        fx.pid,
        fx.addr(),
        jaeger.query,
        if opts.kraken {
            ", Kraken cluster traced"
        } else {
            ""
        }
    );

    let addr = fx.addr();
    let targets = [
        "/hello".to_owned(),
        "/deep?n=5000".to_owned(),
        "/deep?n=1000&gc=1".to_owned(),
        format!("/call?url=http://{addr}/hello"),
    ];
    let load = Load::start(addr, &targets, opts.clients, Some(opts.pace));
    let stop = Arc::new(AtomicBool::new(false));
    let (dl_ok, dl_failed) = (AtomicU64::new(0), AtomicU64::new(0));
    let mut crashes = Vec::new();
    let mut samples = Vec::new();

    thread::scope(|scope| {
        if let Some(c) = &cluster {
            let (stop, ok, failed) = (&*stop, &dl_ok, &dl_failed);
            scope.spawn(move || kraken_loop(c, stop, ok, failed));
        }
        let start = Instant::now();
        let mut next_sample = start;
        loop {
            // Liveness every second, a full sample every sample period.
            if let Ok(Some(status)) = fx.child.try_wait() {
                crashes.push(format!(
                    "fixture (pid {}) died: {status}; the tracer's log ends with:\n{}",
                    fx.pid,
                    tail(&tracer.log_text(), 20)
                ));
            }
            if let Some(c) = &cluster {
                for k in kraken_components {
                    if !c.alive(k) {
                        crashes.push(format!("kraken-{} (pid {}) died", k.name(), c.pid(k)));
                    }
                }
            }
            if !tracer.running() {
                crashes.push(format!("the tracer died:\n{}", tracer.log_text()));
            }
            let now = Instant::now();
            let last = now.duration_since(start) >= opts.duration;
            if now >= next_sample || last || !crashes.is_empty() {
                let m = procstat::scrape(metrics, Duration::from_secs(5)).unwrap_or_default();
                let s = Sample {
                    t: now.duration_since(start),
                    tracer_rss: tracer.rss().unwrap_or(0),
                    fixture_rss: procstat::rss(fx.pid).unwrap_or(0),
                    requests_ok: load.ok(),
                    requests_failed: load.failed(),
                    downloads_ok: dl_ok.load(Relaxed),
                    downloads_failed: dl_failed.load(Relaxed),
                    spans_created: get(&m, "kraken_tracer_spans_created_total"),
                    spans_exported: get(&m, "kraken_tracer_spans_exported_total"),
                    spans_expired: get(&m, "kraken_tracer_spans_expired_total"),
                    unmatched_ends: get(&m, "kraken_tracer_unmatched_ends_total"),
                    gauges: GAUGES.map(|(_, g)| get(&m, g)),
                    losses: LOSSES.map(|(_, l)| sum(&m, l)),
                };
                eprintln!(
                    "soak: t={:>5.0}s tracer RSS {:>6.1} MiB, {} requests ({} failed), {} \
                     downloads, {} spans exported, gauges {:?}, losses {:?}",
                    s.t.as_secs_f64(),
                    mib(s.tracer_rss),
                    s.requests_ok,
                    s.requests_failed,
                    s.downloads_ok,
                    s.spans_exported,
                    s.gauges,
                    s.losses
                );
                samples.push(s);
                while next_sample <= now {
                    next_sample += opts.sample_every;
                }
            }
            if last || !crashes.is_empty() {
                break;
            }
            // Pacing of the checks (not a synchronisation).
            let wait = next_sample
                .saturating_duration_since(Instant::now())
                .min(Duration::from_secs(1))
                .min((start + opts.duration).saturating_duration_since(Instant::now()));
            thread::sleep(wait);
        }
        stop.store(true, Relaxed);
    });
    let (ok, failed) = load.stop();
    eprintln!("soak: load stopped: {ok} requests answered, {failed} failed");

    // The spans of the last requests reach Jaeger (the queue drains) before the tracer stops.
    let drained = wait_until(Duration::from_secs(30), || {
        procstat::scrape(metrics, Duration::from_secs(5))
            .is_ok_and(|m| get(&m, "kraken_tracer_export_queue_spans") == 0.0)
    });
    if !drained {
        eprintln!("soak: the export queue did not drain within 30 s");
    }
    let tracer_exit = if tracer.running() {
        let (status, log) = tracer.stop()?;
        if log.contains("panicked") {
            crashes.push(format!("the tracer panicked:\n{log}"));
        }
        if !status.success() {
            crashes.push(format!("the tracer exited with {status}:\n{log}"));
        }
        status.to_string()
    } else {
        "died before the end".to_owned()
    };
    if !crashes.iter().any(|c| c.starts_with("fixture"))
        && let Ok(Some(status)) = fx.child.try_wait()
    {
        crashes.push(format!("fixture (pid {}) died: {status}", fx.pid));
    }
    drop(fx);
    let _ = fs::remove_dir_all(&dir);
    if let Some(c) = &cluster
        && let Err(e) = c.check_alive()
    {
        crashes.push(format!("{e:#}"));
    }
    let mut report = Report {
        options: opts.clone(),
        samples,
        crashes,
        tracer_exit,
        problems: Vec::new(),
    };
    report.check();
    Ok(report)
}

fn main() -> Result<()> {
    let opts = Options::from_env()?;
    let report = run(&opts)?;
    report.write()?;
    println!("{}", report.summary());
    println!(
        "samples: {}\nsummary: {}",
        opts.out_dir.join("samples.csv").display(),
        opts.out_dir.join("summary.md").display()
    );
    if !report.problems.is_empty() {
        bail!("soak failed: {}", report.problems.join("; "));
    }
    Ok(())
}
