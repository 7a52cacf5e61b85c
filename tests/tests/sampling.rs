//! Sampling, path filters and self-metrics, end to end: the real tracer binary traces the Go
//! fixture, serves its Prometheus metrics, and (where said) exports to a real Jaeger v2.
//! Every count asserted is read from the tracer's own /metrics endpoint: those numbers are
//! what an operator sees, so they are tested as much as the behaviour they report.

use std::{collections::BTreeMap, net::SocketAddr, time::Duration};

use tracer_it::{
    Fixture, TracerProcess, fixture, http, jaeger::Jaeger, procstat, request, wait_until,
};

const WAIT: Duration = Duration::from_secs(60);

/// The tracer with its metrics endpoint on a free port (read back from its log).
fn start(pid: u32, extra: &[&str]) -> (TracerProcess, SocketAddr) {
    let mut args = vec!["--metrics-addr", "127.0.0.1:0"];
    args.extend_from_slice(extra);
    let mut tracer = TracerProcess::start(&[pid], &args).unwrap();
    let addr = procstat::metrics_addr(&mut tracer).unwrap();
    (tracer, addr)
}

/// Every sample of the exposition, keyed `name{labels}` as printed (labels in their order).
fn scrape(addr: SocketAddr) -> BTreeMap<String, f64> {
    procstat::scrape(addr, Duration::from_secs(5)).unwrap()
}

fn get(m: &BTreeMap<String, f64>, key: &str) -> u64 {
    procstat::get(m, key) as u64
}

/// Waits until `cond` holds on a fresh scrape; returns that scrape.
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

fn requests(addr: SocketAddr, target: &str, n: usize) {
    for _ in 0..n {
        request(addr, "GET", target).unwrap();
    }
}

#[test]
fn zero_percent_paths_never_leave_the_kernel() {
    let fx = Fixture::http(&fixture("httpserver", false)).unwrap();
    // Defaults: /health and /readiness are 0 %; everything else at 100 % here.
    let (tracer, m) = start(fx.pid, &["--sample-ratio", "1", "--no-export"]);
    requests(fx.addr(), "/health", 200);
    requests(fx.addr(), "/readiness?full=1", 50);
    requests(fx.addr(), "/hello", 100);
    let s = wait_metrics(m, "100 spans", |s| {
        get(s, "kraken_tracer_spans_created_total") == 100
            && get(s, "kraken_tracer_kernel_filtered_total{kind=\"end\"}") == 250
    });
    // Every request hit both server probes...
    assert_eq!(
        get(&s, "kraken_tracer_probe_hits_total{probe=\"http_serve\"}"),
        350
    );
    assert_eq!(
        get(
            &s,
            "kraken_tracer_probe_hits_total{probe=\"http_serve_end\"}"
        ),
        350
    );
    // ...but only /hello's wrote events: one start and one end each.
    assert_eq!(
        get(&s, "kraken_tracer_kernel_filtered_total{kind=\"server\"}"),
        250
    );
    assert_eq!(get(&s, "kraken_tracer_events_read_total"), 200);
    assert_eq!(get(&s, "kraken_tracer_unmatched_ends_total"), 0);
    let (status, log) = tracer.stop().unwrap();
    assert!(status.success(), "{log}");
    assert!(log.contains("dropped by path rules 250 server"), "{log}");
}

#[test]
fn include_and_exclude_filters() {
    let fx = Fixture::http(&fixture("httpserver", false)).unwrap();
    let (tracer, m) = start(
        fx.pid,
        &[
            "--sample-ratio",
            "1",
            "--no-export",
            "--include-path",
            "/hello",
            "--include-path",
            "/status/*",
            "--exclude-path",
            "/status/404",
        ],
    );
    for target in [
        "/hello",
        "/deep?n=1",
        "/status/200",
        "/status/404",
        "/hello/x",
    ] {
        requests(fx.addr(), target, 20);
    }
    // Traced: /hello and /status/200. Dropped: /deep (not included), /status/404 (excluded),
    // /hello/x (an exact include doesn't cover sub-paths).
    let s = wait_metrics(m, "40 spans", |s| {
        get(s, "kraken_tracer_spans_created_total") == 40
            && get(s, "kraken_tracer_kernel_filtered_total{kind=\"end\"}") == 60
    });
    assert_eq!(
        get(&s, "kraken_tracer_kernel_filtered_total{kind=\"server\"}"),
        60
    );
    assert_eq!(get(&s, "kraken_tracer_events_read_total"), 80);
    drop(tracer);
}

/// Head sampling by trace id with per-path rules: ratios within 5 σ over 10 000 requests,
/// counted by the tracer's export queue and confirmed by what the real Jaeger received.
#[test]
fn sampling_ratios_hold_per_rule() {
    let jaeger = Jaeger::start().unwrap();
    let fx = Fixture::http(&fixture("httpserver", false)).unwrap();
    let (tracer, m) = start(
        fx.pid,
        &[
            "--otlp-endpoint",
            &jaeger.otlp_grpc,
            "--sample",
            "/hello=0.1",
            "--sample-ratio",
            "0.5",
        ],
    );
    let n = 10_000;
    requests(fx.addr(), "/hello", n);
    let s = wait_metrics(m, "10k spans", |s| {
        get(s, "kraken_tracer_spans_created_total") == n as u64
    });
    let kept = get(&s, "kraken_tracer_spans_queued_total");
    let out = get(&s, "kraken_tracer_spans_sampled_out_total");
    assert_eq!(kept + out, n as u64);
    // p = 0.1: σ = 30.
    assert!(
        (850..=1150).contains(&kept),
        "/hello=0.1 kept {kept} of {n}"
    );

    // Paths no rule matches: the default ratio.
    requests(fx.addr(), "/deep?n=1", 2000);
    let s = wait_metrics(m, "12k spans", |s| {
        get(s, "kraken_tracer_spans_created_total") == n as u64 + 2000
    });
    let kept_default = get(&s, "kraken_tracer_spans_queued_total") - kept;
    // p = 0.5: σ ≈ 22.4.
    assert!(
        (888..=1112).contains(&kept_default),
        "default 0.5 kept {kept_default} of 2000"
    );
    let (status, log) = tracer.stop().unwrap();
    assert!(status.success(), "{log}");
    let total = kept + kept_default;
    assert!(
        log.contains(&format!("export: {total} spans exported, 0 dropped")),
        "every sampled span reaches Jaeger:\n{log}"
    );
}

const TRACE_A: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const PARENT: &str = "00f067aa0ba902b7";

/// A request that arrives with a traceparent follows its caller's decision, whatever the local
/// ratio: sampled ones are exported as children of the remote span (same trace id), unsampled
/// ones are not; requests without one are dropped in the kernel at ratio 0.
#[test]
fn parent_based_sampling_follows_the_traceparent() {
    let jaeger = Jaeger::start().unwrap();
    let fx = Fixture::http(&fixture("httpserver", false)).unwrap();
    let (tracer, m) = start(
        fx.pid,
        &[
            "--otlp-endpoint",
            &jaeger.otlp_grpc,
            "--sample-ratio",
            "0",
            "--sample",
            "/hello=1",
        ],
    );
    let send = |target: &str, tp: &str| {
        let r = http::request(
            fx.addr(),
            "GET",
            target,
            &[("traceparent", tp)],
            &[],
            Duration::from_secs(10),
        )
        .unwrap();
        assert_eq!(r.status, 200);
    };
    // Sampled by the caller, on a path whose local ratio is 0.
    let sampled: Vec<String> = (0..10)
        .map(|i| format!("{}{i:02x}", &TRACE_A[..30]))
        .collect();
    for t in &sampled {
        send("/deep?n=1", &format!("00-{t}-{PARENT}-01"));
    }
    // Not sampled by the caller, on a path whose local ratio is 1.
    let unsampled: Vec<String> = (0..10)
        .map(|i| format!("{}{i:02x}", &TRACE_A[..28].replace('4', "5")))
        .map(|t| format!("{t}ab"))
        .collect();
    for t in &unsampled {
        send("/hello", &format!("00-{t}-{PARENT}-00"));
    }
    // Neither: a local root at ratio 0, never leaves the kernel.
    requests(fx.addr(), "/deep?n=1", 10);
    let s = wait_metrics(m, "20 spans, 10 dropped", |s| {
        get(s, "kraken_tracer_spans_created_total") == 20
            && get(s, "kraken_tracer_kernel_filtered_total{kind=\"end\"}") == 10
    });
    assert_eq!(get(&s, "kraken_tracer_spans_from_traceparent_total"), 20);
    assert_eq!(
        get(&s, "kraken_tracer_kernel_filtered_total{kind=\"server\"}"),
        10
    );
    assert_eq!(get(&s, "kraken_tracer_spans_queued_total"), 10);
    assert_eq!(get(&s, "kraken_tracer_spans_sampled_out_total"), 10);
    let (status, log) = tracer.stop().unwrap();
    assert!(status.success(), "{log}");
    for t in &sampled {
        let mut trace = None;
        assert!(
            wait_until(WAIT, || {
                trace = jaeger.trace(t).ok().flatten();
                trace.is_some()
            }),
            "trace {t} not in Jaeger"
        );
        let trace = trace.unwrap();
        assert_eq!(trace.spans.len(), 1, "{trace:?}");
        let span = &trace.spans[0];
        assert_eq!(span.parent_span_id.as_deref(), Some(PARENT), "{span:?}");
        assert_eq!(span.kind, "SPAN_KIND_SERVER");
    }
    for t in &unsampled {
        assert!(jaeger.trace(t).unwrap().is_none(), "unsampled {t} exported");
    }
}

/// `--keep-errors` and `--keep-slower-than` export whole unsampled traces that failed or were
/// slow (a 5xx server span, a failing client call inside), and nothing else.
#[test]
fn errors_and_slow_requests_are_kept_despite_sampling() {
    let jaeger = Jaeger::start().unwrap();
    let fx = Fixture::http(&fixture("httpserver", false)).unwrap();
    let (tracer, m) = start(
        fx.pid,
        &[
            "--otlp-endpoint",
            &jaeger.otlp_grpc,
            // Not 0 (that would drop in the kernel): effectively nothing is head-sampled.
            "--sample-ratio",
            "0.000001",
            "--keep-errors",
            "--keep-slower-than",
            "20ms",
        ],
    );
    let failing = format!("/call?url=http://{}/status/502", fx.addr());
    requests(fx.addr(), &failing, 10); // 2 spans each, both errors
    requests(fx.addr(), "/status/503", 10);
    requests(fx.addr(), "/status/200", 30);
    requests(fx.addr(), "/deep?n=100000&gc=1", 3);
    let s = wait_metrics(m, "all spans", |s| {
        get(s, "kraken_tracer_spans_created_total") == 10 * 3 + 10 + 30 + 3
    });
    // 30 error spans from the /call requests: the server span, its failing client call, and
    // the fixture's own server span for /status/502 (same process: linked by the traceparent
    // the tracer inserted into the call, propagation being on by default).
    assert_eq!(
        get(&s, "kraken_tracer_spans_kept_total{reason=\"error\"}"),
        40
    );
    let slow = get(&s, "kraken_tracer_spans_kept_total{reason=\"slow\"}");
    assert!(slow <= 3, "slow {slow}");
    assert_eq!(get(&s, "kraken_tracer_spans_queued_total"), 40 + slow);
    assert_eq!(
        get(&s, "kraken_tracer_keep_buffer_spans"),
        0,
        "nothing left held"
    );
    let (status, log) = tracer.stop().unwrap();
    assert!(status.success(), "{log}");
    let traces = jaeger
        .wait_for_traces("httpserver", 40 + slow as usize, WAIT)
        .unwrap();
    let calls: Vec<_> = traces
        .iter()
        .filter(|t| t.spans.iter().any(|s| s.attr("url.path") == Some("/call")))
        .collect();
    assert_eq!(calls.len(), 10);
    for t in calls {
        assert_eq!(
            t.spans.len(),
            3,
            "server + failing client call + the callee's server span: {t:?}"
        );
        assert!(
            t.spans.iter().all(|s| s.status_code == "STATUS_CODE_ERROR"),
            "{t:?}"
        );
    }
    assert!(
        traces.iter().all(|t| t
            .spans
            .iter()
            .all(|s| s.attr("url.path") != Some("/status/200"))),
        "a fast success was exported"
    );
}
