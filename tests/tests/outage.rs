//! Collector outage, end to end: the real tracer binary traces the Go fixture under load and
//! exports to a real Jaeger v2, which is killed mid-run and restarted on the same ports.
//! During the outage the tracer keeps running and answering its metrics endpoint, its export
//! queue stays within its capacity (the overflow is dropped and counted), and its memory stays
//! bounded; once Jaeger is back, export resumes by itself (retries with backoff): the spans it
//! held are delivered and new spans reach Jaeger.
//!
//! The outage lasts 10 s; `KRAKEN_TRACER_OUTAGE_SECS=60` runs the 60 s version of the issue:
//! `KRAKEN_TRACER_OUTAGE_SECS=60 cargo xtask test -- --test outage`.

use std::{
    collections::BTreeMap,
    net::SocketAddr,
    thread,
    time::{Duration, Instant, SystemTime},
};

use tracer_it::{
    Fixture, TracerProcess, fixture,
    jaeger::Jaeger,
    procstat::{self, Load, get, mib},
    request, wait_until,
};

const SERVICE: &str = "outage-fixture";
const WAIT: Duration = Duration::from_secs(60);
/// The export queue's capacity (export::Config::default().max_queue).
const QUEUE: f64 = 2048.0;
/// How much the tracer's RSS may grow over its level before the outage: the queue (2048
/// spans) and one batch held for a retry are a few MiB; an unbounded buffer of the spans
/// produced during the outage (thousands per second) would be far more.
const RSS_GROWTH_BOUND: u64 = 48 << 20;

fn outage() -> Duration {
    std::env::var("KRAKEN_TRACER_OUTAGE_SECS")
        .ok()
        .and_then(|v| v.parse().ok())
        .map_or(Duration::from_secs(10), Duration::from_secs)
}

/// A scrape that must answer within 1 s.
fn scrape(addr: SocketAddr) -> BTreeMap<String, f64> {
    let t = Instant::now();
    let m = procstat::scrape(addr, Duration::from_secs(1))
        .unwrap_or_else(|e| panic!("the metrics endpoint did not answer within 1 s: {e:#}"));
    assert!(t.elapsed() < Duration::from_secs(1), "{:?}", t.elapsed());
    m
}

fn wait_metrics(
    addr: SocketAddr,
    what: &str,
    mut cond: impl FnMut(&BTreeMap<String, f64>) -> bool,
) -> BTreeMap<String, f64> {
    let mut last = BTreeMap::new();
    let ok = wait_until(WAIT, || {
        last = scrape(addr);
        cond(&last)
    });
    assert!(ok, "{what}: metrics never got there:\n{last:#?}");
    last
}

/// Spans of SERVICE in Jaeger that started since `since`, with this url.path.
fn spans_with_path(jaeger: &Jaeger, since: SystemTime, path: &str) -> usize {
    jaeger
        .traces(SERVICE, since)
        .unwrap_or_default()
        .iter()
        .flat_map(|t| &t.spans)
        .filter(|s| s.attr("url.path") == Some(path))
        .count()
}

#[test]
fn collector_outage_is_survived_and_export_resumes() {
    let outage = outage();
    let mut jaeger = Jaeger::start().expect("start Jaeger");
    let mut fx = Fixture::http(&fixture("httpserver", false)).unwrap();
    let mut tracer = TracerProcess::start(
        &[fx.pid],
        &[
            "--metrics-addr",
            "127.0.0.1:0",
            "--sample-ratio",
            "1",
            "--otlp-endpoint",
            &jaeger.otlp_grpc,
            "--service-name",
            SERVICE,
        ],
    )
    .unwrap();
    let metrics = procstat::metrics_addr(&mut tracer).unwrap();

    // 1. Jaeger up: spans arrive.
    for _ in 0..20 {
        assert_eq!(request(fx.addr(), "GET", "/status/201").unwrap(), 201);
    }
    jaeger
        .wait_for_traces(SERVICE, 20, WAIT)
        .expect("spans before the outage");
    let before = wait_metrics(metrics, "20 spans exported", |m| {
        get(m, "kraken_tracer_spans_exported_total") >= 20.0
    });
    let rss_before = tracer.rss().unwrap();

    // 2. Outage: Jaeger killed, the fixture under load (keep-alive clients, flat out).
    jaeger.stop().unwrap();
    let outage_start = SystemTime::now();
    let load = Load::start(fx.addr(), &["/status/202".to_owned()], 4, None);
    let t0 = Instant::now();
    let (mut max_queue, mut max_rss, mut scrapes) = (0.0f64, 0u64, 0);
    while t0.elapsed() < outage {
        assert!(tracer.running(), "tracer died:\n{}", tracer.log_text());
        assert!(fx.alive(), "the traced fixture died");
        let m = scrape(metrics);
        scrapes += 1;
        let queue = get(&m, "kraken_tracer_export_queue_spans");
        assert!(queue <= QUEUE, "queue gauge {queue} over its capacity");
        max_queue = max_queue.max(queue);
        let rss = tracer.rss().unwrap();
        max_rss = max_rss.max(rss);
        assert!(
            rss < rss_before + RSS_GROWTH_BOUND,
            "tracer RSS grew from {:.1} to {:.1} MiB during the outage",
            mib(rss_before),
            mib(rss)
        );
        // Sampling period of the checks above (not a synchronisation).
        thread::sleep(Duration::from_millis(250));
    }
    let during = wait_metrics(metrics, "queue overflow counted", |m| {
        get(
            m,
            "kraken_tracer_spans_dropped_total{reason=\"queue_full\"}",
        ) > 0.0
            && get(m, "kraken_tracer_export_errors_total") > 0.0
    });
    let (sent, failed) = load.stop();
    assert_eq!(failed, 0, "the fixture failed requests during the outage");
    assert!(
        sent > 2 * QUEUE as u64,
        "too little load to overflow: {sent}"
    );
    let dropped = get(
        &during,
        "kraken_tracer_spans_dropped_total{reason=\"queue_full\"}",
    );
    let queued_in_outage = get(&during, "kraken_tracer_spans_queued_total")
        - get(&before, "kraken_tracer_spans_queued_total");
    eprintln!(
        "outage {outage:?}: {sent} requests, {dropped} spans dropped (queue full), {} export \
         errors, max queue {max_queue}, tracer RSS {:.1} MiB before, max {:.1} MiB, {scrapes} \
         scrapes answered",
        get(&during, "kraken_tracer_export_errors_total"),
        mib(rss_before),
        mib(max_rss)
    );
    assert!(
        max_queue >= QUEUE - 1.0,
        "the queue never filled: {max_queue}"
    );

    // 3. Jaeger back on the same ports: export resumes by itself, new spans arrive.
    jaeger.restart().expect("restart Jaeger");
    let restarted = SystemTime::now();
    let t1 = Instant::now();
    let load = Load::start(
        fx.addr(),
        &["/status/203".to_owned()],
        1,
        Some(Duration::from_millis(20)),
    );
    // The next retry comes at most one backoff (≤ 30 s) after the last failure.
    let resumed = wait_until(Duration::from_secs(90), || {
        spans_with_path(&jaeger, restarted, "/status/203") > 0
    });
    let (sent_after, failed_after) = load.stop();
    assert!(
        resumed,
        "no new span reached Jaeger within 90 s of its restart ({sent_after} requests sent)\n\
         tracer log:\n{}\nJaeger log:\n{}",
        tracer.log_text(),
        jaeger.log_tail(20)
    );
    assert_eq!(failed_after, 0);
    eprintln!("export resumed {:?} after Jaeger's restart", t1.elapsed());
    // What the tracer held through the outage (the queue and the batch being retried) was
    // delivered, not just the spans that came later.
    let after = wait_metrics(metrics, "held spans exported", |m| {
        get(m, "kraken_tracer_spans_exported_total")
            >= get(&before, "kraken_tracer_spans_exported_total") + QUEUE
    });
    assert!(
        spans_with_path(&jaeger, outage_start, "/status/202") > 0,
        "no span of the outage reached Jaeger"
    );
    assert!(get(&after, "kraken_tracer_spans_queued_total") > queued_in_outage);
    assert!(
        tracer.log_text().contains("OTLP export recovered"),
        "{}",
        tracer.log_text()
    );

    assert!(fx.alive());
    let (status, log) = tracer.stop().unwrap();
    assert!(status.success(), "{log}");
    assert!(!log.contains("panicked"), "{log}");
}
