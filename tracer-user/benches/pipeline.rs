//! User-space pipeline microbenchmarks: decode, decode+correlate, keep, export encode, and the
//! heap bytes the correlator holds per in-flight trace.
//!
//! `cargo bench -p tracer-user --bench pipeline` (about a minute). Besides criterion's own
//! output it prints the memory figure and writes a machine-readable summary to
//! `<target>/bench/pipeline.json` (schema in `write_summary`), from the estimates criterion
//! wrote during this run (a benchmark filtered out leaves its fields `null`).
//!
//! Targets (performance issue / design review): ≥ 1 M events/s/core through decode+correlate,
//! < 2 KB per in-flight trace, span creation < 500 ns.

use std::{
    alloc::{GlobalAlloc, Layout, System},
    hint::black_box,
    path::{Path, PathBuf},
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicIsize, Ordering},
    },
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use criterion::{BatchSize, Criterion, Throughput};
use kraken_tracer::{
    clock::Clock,
    correlate::{Correlator, Limits, Profile},
    events::{Event, decode},
    export::{to_resource, to_span_data},
    keep::{KeepBuffer, KeepPolicy},
    sample::Sampler,
    span::{ProcessResource, SpanRecord, SpanStatus},
};
use opentelemetry_proto::{
    tonic::collector::trace::v1::ExportTraceServiceRequest,
    transform::{
        common::tonic::ResourceAttributesWithSchema,
        trace::tonic::group_spans_by_resource_and_scope,
    },
};
use prost::Message as _;
use tracer_common::{
    event::{
        EventHeader, GoStr, HttpClientEndEvent, HttpClientEvent, HttpServeEndEvent, HttpServeEvent,
        KrakenDigestEvent, TcpSnapshot,
    },
    probe::ProbeId,
};

// ---------------------------------------------------------------------------------------------
// A counting allocator: live heap bytes, counted only while COUNTING is on (so the timed
// benchmarks pay one relaxed load per allocation, not an atomic add).

struct Counting;

static COUNTING: AtomicBool = AtomicBool::new(false);
static LIVE: AtomicIsize = AtomicIsize::new(0);

fn count(delta: isize) {
    if COUNTING.load(Ordering::Relaxed) {
        LIVE.fetch_add(delta, Ordering::Relaxed);
    }
}

// SAFETY: every call is forwarded to the system allocator unchanged; only sizes are counted.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        count(layout.size() as isize);
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        count(layout.size() as isize);
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        count(-(layout.size() as isize));
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        count(new_size as isize - layout.size() as isize);
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

// ---------------------------------------------------------------------------------------------
// Ring-buffer records, encoded from the real `tracer_common::event` structs.

const PID: u32 = 4242;
/// Requests in the realistic stream (4 events each).
const REQUESTS: u64 = 1024;
const EVENTS_PER_REQUEST: u64 = 4;
const SPANS_PER_REQUEST: u64 = 2;
const BATCH: usize = 512;

fn gostr<const N: usize>(s: &str) -> GoStr<N> {
    let mut g = GoStr {
        len: u32::try_from(s.len()).unwrap(),
        read_error: 0,
        bytes: [0; N],
    };
    let n = s.len().min(N);
    g.bytes[..n].copy_from_slice(&s.as_bytes()[..n]);
    g
}

/// The bytes of a `#[repr(C)]` event as the kernel writes them to the ring buffer.
fn record<T: Copy>(e: &T) -> Vec<u8> {
    let p = std::ptr::from_ref(e).cast::<u8>();
    // SAFETY: the event types are repr(C), made of integers and byte arrays, without padding
    // (events.rs' layout test); the slice covers exactly the value.
    unsafe { std::slice::from_raw_parts(p, size_of::<T>()) }.to_vec()
}

fn header(probe: ProbeId, goid: u64, t: u64) -> EventHeader {
    EventHeader {
        probe: probe as u32,
        tgid: PID,
        tid: PID + 1 + (goid % 8) as u32,
        _pad: 0,
        goroutine: 0xc000_0000_0000 + goid * 0x1000,
        goid,
        ktime_ns: t,
    }
}

fn digest(i: u64) -> String {
    format!("{:016x}", i.wrapping_mul(0x9e37_79b9_7f4a_7c15)).repeat(4)
}

fn serve_rec(goid: u64, t: u64, i: u64) -> Vec<u8> {
    record(&HttpServeEvent {
        hdr: header(ProbeId::HttpServe, goid, t),
        request: 0xc000_1000,
        content_length: 0,
        tcp: TcpSnapshot {
            rx_bytes: 1_000 + i,
            tx_bytes: 2_000 + i,
            counted: 1,
            _pad: 0,
        },
        method: gostr("GET"),
        uri: gostr(&format!(
            "/namespace/library%2Fubuntu/blobs/sha256:{}",
            digest(i)
        )),
        host: gostr("10.0.0.1:8080"),
        remote_addr: gostr("10.0.0.2:51234"),
        traceparent: gostr(""),
        ids: tracer_common::event::SpanIds::default(),
    })
}

fn serve_end_rec(goid: u64, t: u64) -> Vec<u8> {
    record(&HttpServeEndEvent {
        hdr: header(ProbeId::HttpServeEnd, goid, t),
        request: 0xc000_1000,
        status: 200,
        written: 31_337,
        tcp: TcpSnapshot {
            rx_bytes: 5_000,
            tx_bytes: 40_000,
            counted: 1,
            _pad: 0,
        },
        pattern: gostr(""),
    })
}

fn client_rec(goid: u64, parent_goid: u64, t: u64, i: u64) -> Vec<u8> {
    record(&HttpClientEvent {
        hdr: header(ProbeId::HttpClient, goid, t),
        request: 0xc000_2000,
        parent_goid,
        method: gostr("GET"),
        scheme: gostr("http"),
        host: gostr("kraken-origin:15002"),
        path: gostr(&format!("/blobs/sha256:{}", digest(i))),
        traceparent: gostr(""),
        ids: tracer_common::event::SpanIds::default(),
    })
}

fn client_end_rec(goid: u64, t: u64, status: i64) -> Vec<u8> {
    record(&HttpClientEndEvent {
        hdr: header(ProbeId::HttpClientEnd, goid, t),
        response: 0xc000_3000,
        status,
        error: 0,
    })
}

fn kraken_rec(goid: u64, t: u64, i: u64) -> Vec<u8> {
    record(&KrakenDigestEvent {
        hdr: header(ProbeId::KrakenCacheWrite, goid, t),
        digest_hex: gostr(&digest(i)),
        value: 4096,
    })
}

/// Goroutines of request `i`: the handler, and the goroutine it spawned for the outgoing call.
fn goids(i: u64) -> (u64, u64) {
    (1_000 + 2 * i, 1_001 + 2 * i)
}

/// Per request: server start, client start (on a goroutine the handler started), client end,
/// server end. Requests are sequential.
fn stream(requests: u64) -> Vec<Vec<u8>> {
    let mut out = Vec::with_capacity((requests * EVENTS_PER_REQUEST) as usize);
    for i in 0..requests {
        let (srv, cli) = goids(i);
        let t = 1_000_000 + i * 10_000;
        out.push(serve_rec(srv, t, i));
        out.push(client_rec(cli, srv, t + 100, i));
        out.push(client_end_rec(cli, t + 5_000, 200));
        out.push(serve_end_rec(srv, t + 9_000));
    }
    out
}

fn resource() -> Arc<ProcessResource> {
    Arc::new(ProcessResource {
        service_name: "kraken-agent".into(),
        pid: PID,
        host_name: "node-1".into(),
        executable_path: "/usr/bin/kraken-agent".into(),
        runtime_version: Some("go1.22.5".into()),
    })
}

fn correlator(ratio: f64) -> Correlator {
    let mut c = Correlator::new(
        Clock::fixed(1_700_000_000_000_000_000),
        Sampler::ratio(ratio),
        Limits::default(),
    );
    c.register(PID, resource(), Profile::Generic);
    c
}

/// Spans the realistic stream produces (`sampled` as the trace's flag).
fn spans(n: usize, sampled: bool) -> Vec<SpanRecord> {
    let mut c = correlator(if sampled { 1.0 } else { 0.0 });
    let mut out = Vec::with_capacity(n);
    for r in stream((n as u64).div_ceil(SPANS_PER_REQUEST)) {
        c.push(&decode(&r).unwrap(), &mut |s| out.push(s));
    }
    out.truncate(n);
    assert_eq!(out.len(), n);
    out
}

// ---------------------------------------------------------------------------------------------
// Benchmarks.

fn bench_decode(c: &mut Criterion) {
    let mut g = c.benchmark_group("decode");
    g.throughput(Throughput::Elements(1));
    let (srv, cli) = goids(7);
    let records = [
        ("http_serve", serve_rec(srv, 1, 7)),
        ("http_serve_end", serve_end_rec(srv, 2)),
        ("http_client", client_rec(cli, srv, 3, 7)),
        ("http_client_end", client_end_rec(cli, 4, 200)),
        ("kraken_digest", kraken_rec(cli, 5, 7)),
    ];
    for (name, bytes) in &records {
        assert!(decode(bytes).is_ok(), "{name}");
        g.bench_function(*name, |b| b.iter(|| decode(black_box(bytes))));
    }
    g.finish();
}

fn bench_decode_correlate(c: &mut Criterion) {
    let records = stream(REQUESTS);
    let mut g = c.benchmark_group("decode_correlate");
    g.throughput(Throughput::Elements(records.len() as u64));
    for (name, ratio) in [("sampled_100pct", 1.0), ("sampled_10pct", 0.1)] {
        let mut corr = correlator(ratio);
        g.bench_function(name, |b| {
            b.iter(|| {
                let mut spans = 0u32;
                for r in &records {
                    let Ok(ev) = decode(black_box(r)) else {
                        continue;
                    };
                    corr.push(&ev, &mut |s| {
                        spans += 1;
                        black_box(s);
                    });
                }
                assert_eq!(u64::from(spans), REQUESTS * SPANS_PER_REQUEST);
            });
        });
        assert_eq!(corr.open_spans(), 0);
    }
    g.finish();

    // Span assembly alone: the same events, decoded beforehand.
    let events: Vec<Event> = records.iter().map(|r| decode(r).unwrap()).collect();
    let mut g = c.benchmark_group("correlate");
    g.throughput(Throughput::Elements(REQUESTS * SPANS_PER_REQUEST));
    let mut corr = correlator(1.0);
    g.bench_function("spans_100pct", |b| {
        b.iter(|| {
            for ev in &events {
                corr.push(black_box(ev), &mut |s| {
                    black_box(s);
                });
            }
        });
    });
    g.finish();
}

fn bench_keep(c: &mut Criterion) {
    let policy = KeepPolicy {
        errors: true,
        slower_than: None,
    };
    let sampled = spans(BATCH, true);
    let unsampled = spans(BATCH, false);
    // Unsampled traces whose client call failed: kept (the child turns the trace kept, then
    // the root follows).
    let mut failing = unsampled.clone();
    for s in failing.iter_mut().filter(|s| s.parent_span_id.is_some()) {
        s.status = SpanStatus::Error("HTTP 503".into());
    }
    let mut g = c.benchmark_group("keep");
    g.throughput(Throughput::Elements(BATCH as u64));
    for (name, input) in [
        ("sampled", &sampled),
        ("unsampled", &unsampled),
        ("unsampled_error", &failing),
    ] {
        let mut keep = KeepBuffer::new(policy, 8192);
        g.bench_function(name, |b| {
            b.iter_batched(
                || (input.clone(), Vec::with_capacity(BATCH)),
                |(spans, mut out)| {
                    for s in spans {
                        keep.offer(s, &mut |s| out.push(s));
                    }
                    out
                },
                BatchSize::SmallInput,
            );
        });
        assert_eq!(keep.held_spans(), 0, "{name}: every trace's root ended");
    }
    g.finish();
}

fn otlp_request(records: Vec<SpanRecord>, resource: &ResourceAttributesWithSchema) -> Vec<u8> {
    let data = records.into_iter().map(to_span_data).collect();
    ExportTraceServiceRequest {
        resource_spans: group_spans_by_resource_and_scope(data, resource),
    }
    .encode_to_vec()
}

fn bench_export(c: &mut Criterion) -> usize {
    let records = spans(BATCH, true);
    // What an exporter holds after `set_resource` (built once per traced process).
    let resource = ResourceAttributesWithSchema::from(&to_resource(&records[0].resource));
    let encoded_len = otlp_request(records.clone(), &resource).len();
    let mut g = c.benchmark_group("export");
    g.throughput(Throughput::Elements(BATCH as u64));
    g.bench_function("to_span_data_512", |b| {
        b.iter_batched(
            || records.clone(),
            |r| r.into_iter().map(to_span_data).collect::<Vec<_>>(),
            BatchSize::SmallInput,
        );
    });
    g.bench_function("encode_otlp_512", |b| {
        b.iter_batched(
            || records.clone(),
            |r| otlp_request(r, &resource),
            BatchSize::SmallInput,
        );
    });
    g.finish();
    encoded_len
}

// ---------------------------------------------------------------------------------------------
// Memory per in-flight trace.

struct Memory {
    traces: u64,
    bytes_per_trace: f64,
    server_only: f64,
}

/// Heap bytes the correlator holds per open trace: `n` requests whose server span and child
/// client span (on a spawned goroutine, with a distinct outbound path) have started, not ended.
fn inflight_bytes(n: u64, with_client: bool) -> f64 {
    let records = stream(n);
    let mut c = correlator(1.0);
    let starts: Vec<&Vec<u8>> = records
        .chunks(EVENTS_PER_REQUEST as usize)
        .flat_map(|req| if with_client { &req[..2] } else { &req[..1] })
        .collect();
    COUNTING.store(true, Ordering::SeqCst);
    let before = LIVE.load(Ordering::SeqCst);
    for r in starts {
        let ev = decode(r).unwrap();
        c.push(&ev, &mut |_| unreachable!("nothing ends"));
    }
    let after = LIVE.load(Ordering::SeqCst);
    COUNTING.store(false, Ordering::SeqCst);
    assert_eq!(c.open_spans() as u64, if with_client { 2 * n } else { n });
    drop(black_box(c));
    (after - before) as f64 / n as f64
}

fn measure_memory() -> Memory {
    let traces = 10_000;
    let small = inflight_bytes(1_000, true);
    let bytes_per_trace = inflight_bytes(traces, true);
    let server_only = inflight_bytes(traces, false);
    println!(
        "memory/inflight_trace: {bytes_per_trace:.0} B per in-flight trace (server span + child \
         client span, {traces} open; {small:.0} B at 1000 open; {server_only:.0} B with the \
         server span alone) — target < 2048 B"
    );
    Memory {
        traces,
        bytes_per_trace,
        server_only,
    }
}

// ---------------------------------------------------------------------------------------------
// Summary.

/// Where cargo puts build output (the bench binary is `<target>[/<triple>]/<profile>/deps/x`).
fn target_dir() -> Option<PathBuf> {
    if let Some(d) = std::env::var_os("CARGO_TARGET_DIR") {
        return Some(PathBuf::from(d));
    }
    let exe = std::env::current_exe().ok()?;
    exe.ancestors()
        .skip(3)
        .take(2)
        .find(|d| d.join("CACHEDIR.TAG").exists())
        .map(Path::to_path_buf)
}

fn criterion_dir(target: &Path) -> PathBuf {
    std::env::var_os("CRITERION_HOME").map_or_else(|| target.join("criterion"), PathBuf::from)
}

/// Criterion's mean time per iteration (ns) of `group/function`, if measured by this run.
fn mean_ns(dir: &Path, id: &str, since: SystemTime) -> Option<f64> {
    let path = dir.join(id).join("new/estimates.json");
    let fresh = std::fs::metadata(&path).ok()?.modified().ok()? >= since;
    if !fresh {
        return None;
    }
    let v: serde_json::Value = serde_json::from_slice(&std::fs::read(&path).ok()?).ok()?;
    v["mean"]["point_estimate"].as_f64()
}

fn write_summary(started: SystemTime, memory: &Memory, otlp_bytes: usize) {
    let Some(target) = target_dir() else {
        eprintln!("pipeline bench: no target directory found, summary not written");
        return;
    };
    let cdir = criterion_dir(&target);
    let ns = |id: &str| mean_ns(&cdir, id, started);
    let events = (REQUESTS * EVENTS_PER_REQUEST) as f64;
    let spans = (REQUESTS * SPANS_PER_REQUEST) as f64;
    let per = |id: &str, n: f64| ns(id).map(|t| t / n);
    let rate = |id: &str, n: f64| ns(id).map(|t| n * 1e9 / t);
    let decode_ids = [
        "http_serve",
        "http_serve_end",
        "http_client",
        "http_client_end",
        "kraken_digest",
    ];
    let decode: serde_json::Map<String, serde_json::Value> = decode_ids
        .iter()
        .map(|k| ((*k).to_owned(), ns(&format!("decode/{k}")).into()))
        .collect();
    // The realistic stream has one of each HTTP record per request.
    let http: Option<Vec<f64>> = decode_ids[..4]
        .iter()
        .map(|k| ns(&format!("decode/{k}")))
        .collect();
    let decode_avg = http.map(|v| v.iter().sum::<f64>() / v.len() as f64);
    let cpus = std::thread::available_parallelism().map_or(0, usize::from);
    let summary = serde_json::json!({
        "schema_version": 1,
        "generated_unix_s": started.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs()),
        "cpus": cpus,
        "events_per_sec_per_core": rate("decode_correlate/sampled_100pct", events),
        "events_per_sec_per_core_10pct": rate("decode_correlate/sampled_10pct", events),
        "ns_per_span": per("decode_correlate/sampled_100pct", spans),
        "correlate_ns_per_span": per("correlate/spans_100pct", spans),
        "bytes_per_inflight_trace": memory.bytes_per_trace,
        "inflight_traces_measured": memory.traces,
        "bytes_per_inflight_server_span_only": memory.server_only,
        "export_encode_ns_per_batch_512": ns("export/encode_otlp_512"),
        "to_span_data_ns_per_batch_512": ns("export/to_span_data_512"),
        "otlp_bytes_per_batch_512": otlp_bytes,
        "decode_ns_per_event": decode_avg,
        "decode_ns": decode,
        "keep_ns_per_span": {
            "sampled": per("keep/sampled", BATCH as f64),
            "unsampled": per("keep/unsampled", BATCH as f64),
            "unsampled_error": per("keep/unsampled_error", BATCH as f64),
        },
        "targets": {
            "events_per_sec_per_core_min": 1_000_000,
            "bytes_per_inflight_trace_max": 2048,
            "ns_per_span_max": 500,
        },
    });
    let dir = target.join("bench");
    let path = dir.join("pipeline.json");
    let text = serde_json::to_string_pretty(&summary).unwrap_or_default();
    match std::fs::create_dir_all(&dir).and_then(|()| std::fs::write(&path, text + "\n")) {
        Ok(()) => println!("summary: {}", path.display()),
        Err(e) => eprintln!("pipeline bench: writing {}: {e}", path.display()),
    }
}

fn main() {
    let started = SystemTime::now();
    // `cargo bench` passes --bench; `cargo test --benches` runs each benchmark once instead.
    let measuring = std::env::args().any(|a| a == "--bench");
    let memory = measure_memory();
    let mut c = Criterion::default()
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2))
        .sample_size(30)
        .configure_from_args();
    bench_decode(&mut c);
    bench_decode_correlate(&mut c);
    bench_keep(&mut c);
    let otlp_bytes = bench_export(&mut c);
    c.final_summary();
    println!("export/encode_otlp_512: {otlp_bytes} protobuf bytes per batch of {BATCH} spans");
    if measuring {
        write_summary(started, &memory, otlp_bytes);
    }
}
