//! Ring-buffer overflow (event storm), end to end: the real tracer binary traces the Go fixture
//! while clients on several threads send it pipelined keep-alive requests flat out. The tracer
//! is on a busy node: it shares one CPU with the traced service, at the lowest priority, so its
//! reader cannot keep up with the kernel and the 4 MiB ring overflows (on any machine: a
//! reader with a CPU of its own keeps up with this fixture).
//!
//! - Lost events are counted per CPU (`kraken_tracer_ringbuf_reserve_failures_total{cpu=...}`,
//!   on the CPU the service ran on), the traced process serves every request, and once the
//!   storm is over the reader catches up and traces new requests.
//! - Throughout the storm the tracer answers its metrics endpoint within 1 s and keeps
//!   publishing its reader's progress (the reader must not monopolise the runtime it shares
//!   with the metrics server and the exporter).

use std::{
    collections::BTreeMap,
    io::{Read as _, Write as _},
    net::{SocketAddr, TcpStream},
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicU64, Ordering::Relaxed},
    },
    thread,
    time::{Duration, Instant},
};

use tracer_it::{
    Fixture, TracerProcess, fixture,
    procstat::{self, by_label, get, mib, sum},
    request, wait_until,
};

const WAIT: Duration = Duration::from_secs(60);
/// Requests written at once on each connection (HTTP/1.1 pipelining: the Go server answers
/// them in order, one after the other, as fast as it can).
const PIPELINE: usize = 64;
const CLIENTS: usize = 4;
/// The tracer's nice value: a low priority next to the busy service.
const NICE: i32 = 10;
const FAILURES: &str = "kraken_tracer_ringbuf_reserve_failures_total";
const EVENTS_READ: &str = "kraken_tracer_events_read_total";

/// One storm at a time (the tests of this file pin to the same CPU).
static STORMS: Mutex<()> = Mutex::new(());

/// One storm client: pipelined `GET /hello` batches on one connection until `stop`, counting
/// the responses; fails if the server fails or closes the connection.
fn storm_client(addr: SocketAddr, stop: &AtomicBool, answered: &AtomicU64) -> anyhow::Result<()> {
    let mut s = TcpStream::connect(addr)?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    let batch = format!("GET /hello HTTP/1.1\r\nHost: {addr}\r\n\r\n").repeat(PIPELINE);
    // Each response ends with the end of its headers and its 6-byte body.
    let end = b"\r\n\r\nhello\n";
    let mut buf = vec![0u8; 64 << 10];
    let mut pending: Vec<u8> = Vec::new();
    while !stop.load(Relaxed) {
        s.write_all(batch.as_bytes())?;
        let mut got = 0;
        while got < PIPELINE {
            let n = s.read(&mut buf)?;
            anyhow::ensure!(n > 0, "connection closed after {got} responses");
            pending.extend_from_slice(&buf[..n]);
            let mut consumed = 0;
            while let Some(i) = pending[consumed..]
                .windows(end.len())
                .position(|w| w == end)
            {
                consumed += i + end.len();
                got += 1;
            }
            pending.drain(..consumed);
        }
        answered.fetch_add(got as u64, Relaxed);
    }
    Ok(())
}

/// The traced fixture and the tracer, set up as on a busy node.
struct Setup {
    fx: Fixture,
    tracer: TracerProcess,
    metrics: SocketAddr,
    cpu: usize,
}

fn setup() -> Setup {
    let fx = Fixture::http(&fixture("httpserver", false)).unwrap();
    let mut tracer = TracerProcess::start(
        &[fx.pid],
        &[
            "--metrics-addr",
            "127.0.0.1:0",
            "--sample-ratio",
            "1",
            "--no-export",
            // Pipeline metrics are refreshed every 10 drain ticks.
            "--drain-interval",
            "100ms",
        ],
    )
    .unwrap();
    let metrics = procstat::metrics_addr(&mut tracer).unwrap();
    let cpu = procstat::first_allowed_cpu().unwrap();
    procstat::pin(fx.pid, cpu).unwrap();
    procstat::pin(tracer.pid(), cpu).unwrap();
    procstat::renice(tracer.pid(), NICE).unwrap();
    let m = procstat::scrape(metrics, Duration::from_secs(5)).unwrap();
    assert_eq!(sum(&m, FAILURES), 0.0, "lost events before the storm");
    Setup {
        fx,
        tracer,
        metrics,
        cpu,
    }
}

/// Storm clients on the fixture until the returned flag is set.
fn start_storm(
    addr: SocketAddr,
) -> (
    Arc<AtomicBool>,
    Arc<AtomicU64>,
    Vec<thread::JoinHandle<anyhow::Result<()>>>,
) {
    let stop = Arc::new(AtomicBool::new(false));
    let answered = Arc::new(AtomicU64::new(0));
    let clients = (0..CLIENTS)
        .map(|_| {
            let (stop, answered) = (Arc::clone(&stop), Arc::clone(&answered));
            thread::spawn(move || storm_client(addr, &stop, &answered))
        })
        .collect();
    (stop, answered, clients)
}

fn end_storm(
    stop: &AtomicBool,
    answered: &AtomicU64,
    clients: Vec<thread::JoinHandle<anyhow::Result<()>>>,
) -> u64 {
    stop.store(true, Relaxed);
    for c in clients {
        c.join()
            .expect("client thread")
            .expect("the traced fixture failed a request during the storm");
    }
    answered.load(Relaxed)
}

/// Waits until the lost events reach the metrics (kernel counters refresh every 0.5 s) and
/// are counted on the CPU the service ran on; returns them per CPU.
fn lost_per_cpu(s: &Setup) -> BTreeMap<String, f64> {
    let mut last = BTreeMap::new();
    let counted = wait_until(WAIT, || {
        last = procstat::scrape(s.metrics, Duration::from_secs(5)).unwrap_or_default();
        by_label(&last, FAILURES, "cpu")
            .get(&s.cpu.to_string())
            .is_some_and(|&v| v > 0.0)
    });
    assert!(
        counted,
        "no ring-buffer reserve failure counted on CPU {}:\n{last:#?}",
        s.cpu
    );
    by_label(&last, FAILURES, "cpu")
}

/// After the storm: the reader has read every event the kernel wrote (probe hits = events
/// read + events lost), and a new request becomes a span.
fn recovers(s: &mut Setup) {
    let mut last = BTreeMap::new();
    let caught_up = wait_until(WAIT, || {
        last = procstat::scrape(s.metrics, Duration::from_secs(5)).unwrap_or_default();
        let hits = sum(&last, "kraken_tracer_probe_hits_total");
        hits > 0.0 && get(&last, EVENTS_READ) + sum(&last, FAILURES) == hits
    });
    assert!(caught_up, "the reader never caught up:\n{last:#?}");
    let spans = get(&last, "kraken_tracer_spans_created_total");
    assert_eq!(request(s.fx.addr(), "GET", "/hello").unwrap(), 200);
    assert!(
        wait_until(WAIT, || {
            procstat::scrape(s.metrics, Duration::from_secs(5))
                .is_ok_and(|m| get(&m, "kraken_tracer_spans_created_total") > spans)
        }),
        "no span after the storm"
    );
    assert!(s.fx.alive(), "the traced fixture died");
}

fn stop_tracer(s: Setup) {
    let Setup { mut fx, tracer, .. } = s;
    let (status, log) = tracer.stop().unwrap();
    assert!(status.success(), "{log}");
    assert!(!log.contains("panicked"), "{log}");
    assert!(fx.alive());
}

#[test]
fn event_storm_losses_are_counted_per_cpu_and_the_traced_process_is_unharmed() {
    let _one = STORMS.lock().unwrap_or_else(|e| e.into_inner());
    let mut s = setup();
    let rss_before = s.tracer.rss().unwrap();
    let (stop, answered, clients) = start_storm(s.fx.addr());
    // A 5 s storm: far more than the ring holds. (Not scraped meanwhile: that is the other
    // test.)
    let t0 = Instant::now();
    while t0.elapsed() < Duration::from_secs(5) {
        assert!(s.tracer.running(), "tracer died:\n{}", s.tracer.log_text());
        assert!(s.fx.alive(), "the traced fixture died during the storm");
        // Sampling period of the checks (not a synchronisation).
        thread::sleep(Duration::from_millis(100));
    }
    let requests = end_storm(&stop, &answered, clients);
    let storm = t0.elapsed();
    let per_cpu = lost_per_cpu(&s);
    eprintln!(
        "storm of {storm:.1?} on CPU {}: {requests} requests, lost events per CPU {per_cpu:?}, \
         tracer RSS {:.1} -> {:.1} MiB",
        s.cpu,
        mib(rss_before),
        mib(s.tracer.rss().unwrap_or(0))
    );
    assert!(requests > 0);
    recovers(&mut s);
    stop_tracer(s);
}

#[test]
fn tracer_answers_its_metrics_within_1s_during_an_event_storm() {
    const STORM: Duration = Duration::from_secs(10);
    let _one = STORMS.lock().unwrap_or_else(|e| e.into_inner());
    let mut s = setup();
    let (stop, answered, clients) = start_storm(s.fx.addr());
    let t0 = Instant::now();
    let (mut scrapes, mut slowest) = (0, Duration::ZERO);
    let mut read = Vec::new();
    let mut failure = None;
    while t0.elapsed() < STORM {
        assert!(s.tracer.running(), "tracer died:\n{}", s.tracer.log_text());
        assert!(s.fx.alive(), "the traced fixture died during the storm");
        let t = Instant::now();
        match procstat::scrape(s.metrics, Duration::from_secs(1)) {
            Ok(m) if t.elapsed() < Duration::from_secs(1) => {
                let r = get(&m, EVENTS_READ);
                if read.last() != Some(&r) {
                    read.push(r);
                }
            }
            Ok(_) => failure = Some(format!("a scrape took {:?}", t.elapsed())),
            Err(e) => failure = Some(format!("{e:#}")),
        }
        slowest = slowest.max(t.elapsed());
        scrapes += 1;
        if failure.is_some() {
            break;
        }
        // Sampling period of the checks (not a synchronisation).
        thread::sleep(Duration::from_millis(100));
    }
    let requests = end_storm(&stop, &answered, clients);
    let per_cpu = lost_per_cpu(&s);
    eprintln!(
        "storm of {:.1?} on CPU {}: {requests} requests, lost events per CPU {per_cpu:?}; \
         {scrapes} scrapes, slowest {slowest:?}; events read as published during the storm: \
         {read:?}",
        t0.elapsed(),
        s.cpu
    );
    if let Some(f) = failure {
        panic!(
            "the tracer stopped answering its metrics endpoint within 1 s after {:.1?} of an \
             event storm its reader cannot keep up with: {f}",
            t0.elapsed()
        );
    }
    // The reader's counters kept being published: it hands the runtime back between drains.
    assert!(
        read.len() >= 3,
        "events read were not published during the storm: {read:?}"
    );
    recovers(&mut s);
    stop_tracer(s);
}
