use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicI64, AtomicUsize, Ordering::SeqCst},
    },
    time::{Duration, SystemTime},
};

use opentelemetry::{Key, Value, trace::Status};
use opentelemetry_sdk::{
    Resource,
    error::{OTelSdkError, OTelSdkResult},
    trace::{SpanData, SpanExporter},
};
use tokio::{sync::mpsc, time::Instant};

use super::*;
use crate::span::{AttrValue, ProcessResource, SpanKind, SpanRecord, SpanStatus};

fn resource(service: &str, pid: u32) -> Arc<ProcessResource> {
    Arc::new(ProcessResource {
        service_name: service.to_owned(),
        pid,
        host_name: "host-1".to_owned(),
        executable_path: format!("/usr/bin/{service}"),
        runtime_version: Some("go1.22.5".to_owned()),
    })
}

fn record(i: u64, res: &Arc<ProcessResource>) -> SpanRecord {
    let start = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
    let mut trace_id = [0u8; 16];
    trace_id[..8].copy_from_slice(&i.to_be_bytes());
    trace_id[15] = 1;
    SpanRecord {
        trace_id,
        span_id: (i + 1).to_be_bytes(),
        parent_span_id: None,
        sampled: true,
        name: format!("span {i}"),
        kind: SpanKind::Server,
        start,
        end: start + Duration::from_millis(3),
        attributes: vec![],
        status: SpanStatus::Unset,
        resource: Arc::clone(res),
    }
}

#[derive(Debug)]
enum Ev {
    Export {
        exporter: usize,
        resource: Option<Resource>,
        spans: Vec<SpanData>,
        ok: bool,
    },
    Started,
    Shutdown {
        exporter: usize,
    },
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Mode {
    Ok,
    Fail,
    Hang,
}

/// Shared behaviour of every fake exporter a factory makes.
#[derive(Clone, Debug)]
struct Ctl {
    mode: Arc<std::sync::Mutex<Mode>>,
    factory_fails: Arc<AtomicBool>,
    /// The next this many exports fail (whatever the mode).
    fail_next: Arc<AtomicUsize>,
    /// Exports for this process.pid fail (-1: none).
    fail_pid: Arc<AtomicI64>,
}

impl Ctl {
    fn set(&self, m: Mode) {
        if let Ok(mut g) = self.mode.lock() {
            *g = m;
        }
    }
    fn get(&self) -> Mode {
        self.mode.lock().map(|g| *g).unwrap_or(Mode::Ok)
    }
}

#[derive(Debug)]
struct Fake {
    id: usize,
    resource: Option<Resource>,
    log: mpsc::UnboundedSender<Ev>,
    ctl: Ctl,
}

impl SpanExporter for Fake {
    async fn export(&self, spans: Vec<SpanData>) -> OTelSdkResult {
        let mode = self.ctl.get();
        let _ = self.log.send(Ev::Started);
        if mode == Mode::Hang {
            std::future::pending::<()>().await;
        }
        let forced = self
            .ctl
            .fail_next
            .fetch_update(SeqCst, SeqCst, |n| n.checked_sub(1))
            .is_ok();
        let pid = self
            .resource
            .as_ref()
            .and_then(|r| attr(r, "process.pid"))
            .and_then(|v| match v {
                Value::I64(p) => Some(p),
                _ => None,
            });
        let bad_pid = pid.is_some() && pid == Some(self.ctl.fail_pid.load(SeqCst));
        let ok = mode == Mode::Ok && !forced && !bad_pid;
        let _ = self.log.send(Ev::Export {
            exporter: self.id,
            resource: self.resource.clone(),
            spans,
            ok,
        });
        if ok {
            Ok(())
        } else {
            Err(OTelSdkError::InternalFailure("collector down".into()))
        }
    }

    fn shutdown_with_timeout(&self, _: Duration) -> OTelSdkResult {
        let _ = self.log.send(Ev::Shutdown { exporter: self.id });
        Ok(())
    }

    fn set_resource(&mut self, resource: &Resource) {
        self.resource = Some(resource.clone());
    }
}

struct Harness {
    handle: ExportHandle,
    task: JoinHandle<()>,
    events: mpsc::UnboundedReceiver<Ev>,
    ctl: Ctl,
    created: Arc<AtomicUsize>,
}

fn start(config: Config) -> Harness {
    let (log, events) = mpsc::unbounded_channel();
    let ctl = Ctl {
        mode: Arc::new(std::sync::Mutex::new(Mode::Ok)),
        factory_fails: Arc::new(AtomicBool::new(false)),
        fail_next: Arc::new(AtomicUsize::new(0)),
        fail_pid: Arc::new(AtomicI64::new(-1)),
    };
    let created = Arc::new(AtomicUsize::new(0));
    let (c, n) = (ctl.clone(), Arc::clone(&created));
    let factory = move || {
        if c.factory_fails.load(SeqCst) {
            return Err(ExportError::Unavailable("no exporter for you".into()));
        }
        Ok(Fake {
            id: n.fetch_add(1, SeqCst),
            resource: None,
            log: log.clone(),
            ctl: c.clone(),
        })
    };
    let (handle, task) = spawn_with(config, factory);
    Harness {
        handle,
        task,
        events,
        ctl,
        created,
    }
}

/// The next export event (auto-advancing paused time while waiting).
async fn next_export(
    events: &mut mpsc::UnboundedReceiver<Ev>,
) -> (usize, Option<Resource>, Vec<SpanData>, bool) {
    loop {
        match events.recv().await {
            Some(Ev::Export {
                exporter,
                resource,
                spans,
                ok,
            }) => return (exporter, resource, spans, ok),
            Some(Ev::Started | Ev::Shutdown { .. }) => continue,
            None => panic!("event log closed before an export"),
        }
    }
}

fn attr(r: &Resource, key: &'static str) -> Option<Value> {
    r.get(&Key::from_static_str(key))
}

#[test]
fn conversion_keeps_ids_parent_kind_times_attributes_status() {
    let res = resource("kraken-agent", 42);
    let mut r = record(7, &res);
    r.parent_span_id = Some([9, 8, 7, 6, 5, 4, 3, 2]);
    r.kind = SpanKind::Client;
    r.attributes = vec![
        ("http.request.method", AttrValue::from("GET")),
        ("http.response.status_code", AttrValue::from(503i64)),
        ("kraken.cache_hit", AttrValue::from(false)),
    ];
    r.status = SpanStatus::Error("HTTP 503".to_owned());
    let (trace_id, span_id, start, end) = (r.trace_id, r.span_id, r.start, r.end);

    let d = to_span_data(r);
    assert_eq!(d.span_context.trace_id().to_bytes(), trace_id);
    assert_eq!(d.span_context.span_id().to_bytes(), span_id);
    assert!(d.span_context.is_sampled());
    assert!(!d.span_context.is_remote());
    assert_eq!(d.parent_span_id.to_bytes(), [9, 8, 7, 6, 5, 4, 3, 2]);
    assert!(!d.parent_span_is_remote);
    assert_eq!(d.span_kind, opentelemetry::trace::SpanKind::Client);
    assert_eq!(d.name, "span 7");
    assert_eq!((d.start_time, d.end_time), (start, end));
    assert_eq!(
        d.attributes,
        vec![
            KeyValue::new("http.request.method", "GET"),
            KeyValue::new("http.response.status_code", 503i64),
            KeyValue::new("kraken.cache_hit", false),
        ]
    );
    assert_eq!(d.status, Status::error("HTTP 503"));
    assert_eq!(d.instrumentation_scope.name(), "kraken-tracer");
    assert_eq!(
        d.instrumentation_scope.version(),
        Some(env!("CARGO_PKG_VERSION"))
    );
    assert_eq!(d.events.len(), 0);
    assert_eq!(d.links.len(), 0);

    // A root span: zero parent, unset status.
    let d = to_span_data(record(1, &res));
    assert_eq!(d.parent_span_id, SpanId::INVALID);
    assert_eq!(d.status, Status::Unset);
    assert_eq!(d.span_kind, opentelemetry::trace::SpanKind::Server);
}

#[test]
fn resource_attributes() {
    let r = to_resource(&resource("kraken-origin", 1234));
    assert_eq!(attr(&r, "service.name"), Some(Value::from("kraken-origin")));
    assert_eq!(attr(&r, "process.pid"), Some(Value::I64(1234)));
    assert_eq!(attr(&r, "host.name"), Some(Value::from("host-1")));
    assert_eq!(
        attr(&r, "process.executable.path"),
        Some(Value::from("/usr/bin/kraken-origin"))
    );
    assert_eq!(attr(&r, "process.runtime.name"), Some(Value::from("go")));
    assert_eq!(
        attr(&r, "process.runtime.version"),
        Some(Value::from("go1.22.5"))
    );
}

#[test]
fn protocol_and_endpoint() {
    assert_eq!("grpc".parse::<Protocol>().ok(), Some(Protocol::Grpc));
    assert_eq!(
        " HTTP/protobuf ".parse::<Protocol>().ok(),
        Some(Protocol::HttpProtobuf)
    );
    let e = "http/json".parse::<Protocol>().err().map(|e| e.to_string());
    assert_eq!(
        e.as_deref(),
        Some("unsupported OTLP protocol \"http/json\" (expected \"grpc\" or \"http/protobuf\")")
    );
    assert!("udp".parse::<Protocol>().is_err());
    assert_eq!(Protocol::HttpProtobuf.to_string(), "http/protobuf");

    let cfg = |endpoint: &str, protocol| Config {
        endpoint: endpoint.to_owned(),
        protocol,
        ..Config::default()
    };
    let resolved = |endpoint: &str, protocol| cfg(endpoint, protocol).resolved_endpoint().ok();
    assert_eq!(
        Config::default().resolved_endpoint().ok().as_deref(),
        Some("http://127.0.0.1:4317")
    );
    assert_eq!(
        resolved("", Protocol::HttpProtobuf).as_deref(),
        Some("http://127.0.0.1:4318/v1/traces")
    );
    assert_eq!(
        resolved("http://jaeger:4318", Protocol::HttpProtobuf).as_deref(),
        Some("http://jaeger:4318/v1/traces")
    );
    assert_eq!(
        resolved("http://c:4318/prefix/", Protocol::HttpProtobuf).as_deref(),
        Some("http://c:4318/prefix/v1/traces")
    );
    assert_eq!(
        resolved("http://c:4318/v1/traces", Protocol::HttpProtobuf).as_deref(),
        Some("http://c:4318/v1/traces")
    );
    assert_eq!(
        resolved("http://jaeger:4317", Protocol::Grpc).as_deref(),
        Some("http://jaeger:4317")
    );
    assert!(
        cfg("https://jaeger:4317", Protocol::Grpc)
            .validate()
            .is_err()
    );
    assert!(cfg("jaeger:4317", Protocol::Grpc).validate().is_err());
    assert!(cfg("http://", Protocol::Grpc).validate().is_err());
    assert!(cfg("not a url", Protocol::HttpProtobuf).validate().is_err());
}

#[tokio::test(start_paused = true)]
async fn full_batch_goes_at_once_small_batch_after_the_interval() {
    let mut h = start(Config::default());
    let res = resource("kraken-agent", 1);

    let t0 = Instant::now();
    for i in 0..512 {
        assert!(h.handle.try_send(record(i, &res)));
    }
    let (_, _, spans, ok) = next_export(&mut h.events).await;
    assert!(ok);
    assert_eq!(spans.len(), 512);
    assert_eq!(
        Instant::now(),
        t0,
        "a full batch must not wait for the interval"
    );

    let t1 = Instant::now();
    for i in 0..10 {
        assert!(h.handle.try_send(record(1000 + i, &res)));
    }
    let (_, _, spans, _) = next_export(&mut h.events).await;
    assert_eq!(spans.len(), 10);
    assert_eq!(Instant::now() - t1, Duration::from_secs(5));
    assert_eq!(spans[0].name, "span 1000");

    let s = h.handle.stats();
    assert_eq!((s.queued, s.exported, s.export_errors), (522, 522, 0));
    h.handle.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn interval_counts_from_the_first_span_of_the_batch() {
    let mut h = start(Config::default());
    let res = resource("kraken-agent", 1);
    let t0 = Instant::now();
    assert!(h.handle.try_send(record(0, &res)));
    // Let the batcher take the span (current-thread runtime: one yield runs it).
    tokio::task::yield_now().await;
    tokio::time::advance(Duration::from_secs(3)).await;
    assert!(h.handle.try_send(record(1, &res)));
    let (_, _, spans, _) = next_export(&mut h.events).await;
    assert_eq!(spans.len(), 2);
    assert_eq!(Instant::now() - t0, Duration::from_secs(5));
    h.handle.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn queue_full_drops_and_counts_without_blocking() {
    let mut h = start(Config {
        max_queue: 4,
        ..Config::default()
    });
    let res = resource("kraken-agent", 1);
    // The batcher does not run between these calls (current-thread runtime, no await): the
    // queue fills up and try_send must return at once.
    let accepted: Vec<bool> = (0..10)
        .map(|i| h.handle.try_send(record(i, &res)))
        .collect();
    assert_eq!(
        accepted,
        [
            true, true, true, true, false, false, false, false, false, false
        ]
    );
    let s = h.handle.stats();
    assert_eq!((s.queued, s.dropped_queue_full), (4, 6));

    h.handle.shutdown().await;
    let (_, _, spans, _) = next_export(&mut h.events).await;
    assert_eq!(spans.len(), 4);
    assert_eq!(h.handle.stats().exported, 4);
}

#[tokio::test(start_paused = true)]
async fn shutdown_flushes_the_queue_and_shuts_exporters_down() {
    let mut h = start(Config::default());
    let res = resource("kraken-agent", 1);
    for i in 0..10 {
        assert!(h.handle.try_send(record(i, &res)));
    }
    let t0 = Instant::now();
    h.handle.shutdown().await;
    assert_eq!(
        Instant::now(),
        t0,
        "shutdown must not wait for the interval"
    );
    let s = h.handle.stats();
    assert_eq!((s.queued, s.exported), (10, 10));
    let (_, _, spans, _) = next_export(&mut h.events).await;
    assert_eq!(spans.len(), 10);
    assert!(matches!(
        h.events.recv().await,
        Some(Ev::Shutdown { exporter: 0 })
    ));
    assert!(h.task.await.is_ok());

    // Afterwards spans are refused (and counted); shutting down again is harmless.
    assert!(!h.handle.try_send(record(99, &res)));
    assert_eq!(h.handle.stats().dropped_closed, 1);
    h.handle.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn dropping_every_handle_flushes_too() {
    let mut h = start(Config::default());
    let res = resource("kraken-agent", 1);
    let second = h.handle.clone();
    for i in 0..3 {
        assert!(second.try_send(record(i, &res)));
    }
    drop(second);
    drop(h.handle);
    assert!(h.task.await.is_ok());
    let (_, _, spans, _) = next_export(&mut h.events).await;
    assert_eq!(spans.len(), 3);
}

#[tokio::test(start_paused = true)]
async fn one_exporter_per_resource() {
    let mut h = start(Config::default());
    let agent = resource("kraken-agent", 100);
    let origin = resource("kraken-origin", 200);
    // Equal by value, another Arc: same resource, same exporter.
    let agent_again = resource("kraken-agent", 100);
    for i in 0..6 {
        let r = [&agent, &origin, &agent_again][i % 3];
        assert!(h.handle.try_send(record(i as u64, r)));
    }
    h.handle.shutdown().await;

    let (e0, r0, s0, _) = next_export(&mut h.events).await;
    let (e1, r1, s1, _) = next_export(&mut h.events).await;
    assert_eq!((e0, e1), (0, 1));
    assert_eq!(h.created.load(SeqCst), 2);
    let (r0, r1) = (r0.expect("resource set"), r1.expect("resource set"));
    assert_eq!(attr(&r0, "service.name"), Some(Value::from("kraken-agent")));
    assert_eq!(attr(&r0, "process.pid"), Some(Value::I64(100)));
    assert_eq!(
        attr(&r1, "service.name"),
        Some(Value::from("kraken-origin"))
    );
    assert_eq!(attr(&r1, "process.pid"), Some(Value::I64(200)));
    let names = |s: &[SpanData]| s.iter().map(|d| d.name.to_string()).collect::<Vec<_>>();
    assert_eq!(names(&s0), ["span 0", "span 2", "span 3", "span 5"]);
    assert_eq!(names(&s1), ["span 1", "span 4"]);
}

#[tokio::test(start_paused = true)]
async fn least_recently_used_exporter_is_evicted() {
    let mut h = start(Config::default());
    let first = resource("svc", 0);
    assert!(h.handle.try_send(record(0, &first)));
    let _ = next_export(&mut h.events).await; // after the interval
    for pid in 1..=MAX_EXPORTERS as u32 {
        assert!(
            h.handle
                .try_send(record(u64::from(pid), &resource("svc", pid)))
        );
    }
    // One batch of MAX_EXPORTERS new resources: the last new exporter needs room, and
    // exporter 0 (pid 0, least recently used) is shut down to make it.
    let (mut exports, mut shut) = (0, vec![]);
    while exports < MAX_EXPORTERS {
        match h.events.recv().await {
            Some(Ev::Export { .. }) => exports += 1,
            Some(Ev::Shutdown { exporter }) => shut.push(exporter),
            Some(Ev::Started) => {}
            None => panic!("event log closed"),
        }
    }
    assert_eq!(shut, [0]);
    assert_eq!(h.created.load(SeqCst), MAX_EXPORTERS + 1);
    h.handle.shutdown().await;
}

/// Asserts a retry delay was jittered within [d/2, d].
#[track_caller]
fn assert_backoff(waited: Duration, d: Duration) {
    assert!(
        waited >= d / 2 && waited <= d,
        "waited {waited:?}, expected a backoff in [{:?}, {d:?}]",
        d / 2
    );
}

#[tokio::test(start_paused = true)]
async fn failed_export_is_retried_with_backoff_until_it_succeeds() {
    let mut h = start(Config::default());
    let res = resource("kraken-agent", 1);
    // The collector fails three times, then accepts.
    h.ctl.fail_next.store(3, SeqCst);
    for i in 0..512 {
        assert!(h.handle.try_send(record(i, &res)));
    }
    let mut last = Instant::now();
    for (attempt, backoff) in [(0, None), (1, Some(1)), (2, Some(2)), (3, Some(4))] {
        let (exporter, _, spans, ok) = next_export(&mut h.events).await;
        let now = Instant::now();
        if let Some(d) = backoff {
            assert_backoff(now - last, Duration::from_secs(d));
        } else {
            assert_eq!(now, last, "the first attempt goes at once");
        }
        last = now;
        assert_eq!((exporter, spans.len()), (0, 512), "attempt {attempt}");
        // The same spans every time, in order.
        assert_eq!(spans[0].name, "span 0");
        assert_eq!(spans[511].name, "span 511");
        assert_eq!(ok, attempt == 3, "attempt {attempt}");
        if attempt < 3 {
            assert_eq!(h.handle.retry_len(), 512, "held for the retry");
        }
    }
    let s = h.handle.stats();
    assert_eq!(
        (
            s.exported,
            s.exported_after_retry,
            s.export_errors,
            s.export_retries,
            s.dropped_export_failed
        ),
        (512, 512, 3, 3, 0)
    );
    assert_eq!(h.handle.retry_len(), 0);
    assert_eq!(h.created.load(SeqCst), 1, "the exporter is reused");

    // A success resets the backoff: the next failure waits about 1 s again.
    h.ctl.fail_next.store(1, SeqCst);
    for i in 0..512 {
        assert!(h.handle.try_send(record(1000 + i, &res)));
    }
    let (_, _, _, ok) = next_export(&mut h.events).await;
    assert!(!ok);
    let t = Instant::now();
    let (_, _, _, ok) = next_export(&mut h.events).await;
    assert!(ok);
    assert_backoff(Instant::now() - t, Duration::from_secs(1));
    h.handle.shutdown().await;
    let s = h.handle.stats();
    assert_eq!(
        (s.exported, s.export_retries, s.export_errors),
        (1024, 4, 4)
    );
}

#[tokio::test(start_paused = true)]
async fn backoff_doubles_up_to_the_maximum() {
    let mut h = start(Config {
        retry_max_elapsed: Duration::from_secs(3600),
        ..Config::default()
    });
    h.ctl.set(Mode::Fail);
    let res = resource("kraken-agent", 1);
    for i in 0..512 {
        h.handle.try_send(record(i, &res));
    }
    let _ = next_export(&mut h.events).await;
    let mut last = Instant::now();
    for d in [1, 2, 4, 8, 16, 30, 30, 30] {
        let (_, _, _, ok) = next_export(&mut h.events).await;
        assert!(!ok);
        assert_backoff(Instant::now() - last, Duration::from_secs(d));
        last = Instant::now();
    }
    let s = h.handle.stats();
    assert_eq!((s.export_errors, s.export_retries, s.exported), (9, 8, 0));
    // Shutting down does not wait for the backoff: one last attempt, then the spans go.
    let t = Instant::now();
    h.handle.shutdown().await;
    assert_eq!(Instant::now(), t);
    let s = h.handle.stats();
    assert_eq!((s.export_errors, s.dropped_export_failed), (10, 512));
    assert_eq!(h.handle.retry_len(), 0);
}

#[tokio::test(start_paused = true)]
async fn queue_fills_and_drops_during_an_outage_then_everything_held_is_sent() {
    let mut h = start(Config::default());
    let res = resource("kraken-agent", 1);
    h.ctl.set(Mode::Fail);
    for i in 0..512 {
        assert!(h.handle.try_send(record(i, &res)));
    }
    let (_, _, _, ok) = next_export(&mut h.events).await;
    assert!(!ok);
    // The batcher waits for its retry and reads nothing meanwhile: the queue takes 2048
    // spans, the rest is dropped and counted, and try_send never waits.
    let t0 = Instant::now();
    let accepted = (0..3000)
        .filter(|i| h.handle.try_send(record(10_000 + i, &res)))
        .count();
    assert_eq!(Instant::now(), t0);
    assert_eq!(accepted, 2048);
    assert_eq!(h.handle.queue_len(), 2048);
    assert_eq!(h.handle.retry_len(), 512);
    let s = h.handle.stats();
    assert_eq!((s.queued, s.dropped_queue_full), (512 + 2048, 952));
    // Still down at the first retry.
    let (_, _, spans, ok) = next_export(&mut h.events).await;
    assert!(!ok);
    assert_eq!(spans[0].name, "span 0");
    assert_eq!(h.handle.queue_len(), 2048);

    // The collector is back: the held batch goes first, then the queue, oldest first.
    h.ctl.set(Mode::Ok);
    let mut names = Vec::new();
    while names.len() < 512 + 2048 {
        let (_, _, spans, ok) = next_export(&mut h.events).await;
        assert!(ok);
        names.extend(spans.iter().map(|s| s.name.to_string()));
    }
    assert_eq!(names[0], "span 0");
    assert_eq!(names[512], "span 10000");
    assert_eq!(names[512 + 2047], "span 12047");
    assert_eq!((h.handle.queue_len(), h.handle.retry_len()), (0, 0));
    let s = h.handle.stats();
    assert_eq!(
        (
            s.exported,
            s.exported_after_retry,
            s.export_errors,
            s.export_retries
        ),
        (2560, 512, 2, 2)
    );
    // Afterwards the queue takes spans again.
    assert!(h.handle.try_send(record(99_999, &res)));
    h.handle.shutdown().await;
    assert_eq!(h.handle.stats().exported, 2561);
}

#[tokio::test(start_paused = true)]
async fn retries_give_up_after_max_elapsed_and_the_next_batch_keeps_the_backoff() {
    let mut h = start(Config {
        max_queue: 512,
        retry_max_elapsed: Duration::from_secs(60),
        ..Config::default()
    });
    let res = resource("kraken-agent", 1);
    h.ctl.set(Mode::Fail);
    for i in 0..512 {
        h.handle.try_send(record(i, &res));
    }
    let _ = next_export(&mut h.events).await;
    let t0 = Instant::now();
    for i in 0..512 {
        assert!(h.handle.try_send(record(1000 + i, &res)));
    }
    // Attempts of the first batch until 60 s after its first failure.
    loop {
        let (_, _, spans, ok) = next_export(&mut h.events).await;
        assert!(!ok);
        if spans[0].name != "span 0" {
            break;
        }
    }
    // The first batch was dropped; the second is sent one backoff (≤ 30 s) after the last
    // attempt, not at once.
    let waited = Instant::now() - t0;
    assert!(
        waited >= Duration::from_secs(60) + Duration::from_secs(15)
            && waited <= Duration::from_secs(60 + 30 + 30),
        "{waited:?}"
    );
    let s = h.handle.stats();
    assert_eq!(s.dropped_export_failed, 512);
    assert_eq!(h.handle.retry_len(), 512);
    h.ctl.set(Mode::Ok);
    let (_, _, spans, ok) = next_export(&mut h.events).await;
    assert!(ok);
    assert_eq!(spans[0].name, "span 1000");
    h.handle.shutdown().await;
    let s = h.handle.stats();
    assert_eq!((s.exported, s.exported_after_retry), (512, 512));
}

#[tokio::test(start_paused = true)]
async fn only_the_failed_resources_are_retried() {
    let mut h = start(Config::default());
    let a = resource("a", 1);
    let b = resource("b", 2);
    let c = resource("c", 3);
    h.ctl.fail_pid.store(2, SeqCst);
    for i in 0..6 {
        h.handle.try_send(record(i, [&a, &b, &c][i as usize % 3]));
    }
    h.handle.try_send(record(6, &a));
    // Interval elapses: a is sent, b fails, c waits (the collector looks down).
    let (e, _, spans, ok) = next_export(&mut h.events).await;
    assert_eq!((e, spans.len(), ok), (0, 3, true));
    let (e, _, spans, ok) = next_export(&mut h.events).await;
    assert_eq!((e, spans.len(), ok), (1, 2, false));
    assert_eq!(h.handle.retry_len(), 4);
    h.ctl.fail_pid.store(-1, SeqCst);
    let t = Instant::now();
    let (e, _, spans, ok) = next_export(&mut h.events).await;
    assert_backoff(Instant::now() - t, Duration::from_secs(1));
    assert_eq!((e, spans.len(), ok), (1, 2, true));
    let (e, _, spans, ok) = next_export(&mut h.events).await;
    assert_eq!((e, spans.len(), ok), (2, 2, true));
    let s = h.handle.stats();
    assert_eq!(
        (
            s.exported,
            s.exported_after_retry,
            s.export_errors,
            s.export_retries
        ),
        (7, 4, 1, 2)
    );
    h.handle.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn export_failures_are_counted_and_the_task_goes_on() {
    let mut h = start(Config::default());
    let res = resource("kraken-agent", 1);

    // An exporter that never answers is cut off after export_timeout, then retried.
    h.ctl.set(Mode::Hang);
    let t0 = Instant::now();
    for i in 0..512 {
        h.handle.try_send(record(i, &res));
    }
    while !matches!(h.events.recv().await, Some(Ev::Started)) {}
    h.ctl.set(Mode::Ok);
    let (exporter, _, spans, ok) = next_export(&mut h.events).await;
    assert_backoff(
        Instant::now() - t0 - Duration::from_secs(10),
        Duration::from_secs(1),
    );
    assert!(ok);
    assert_eq!((exporter, spans.len()), (0, 512));

    // Spans of a new process whose exporter cannot be made are dropped at once (counted
    // like a failed export, no retry); the other process's spans in the batch still go.
    h.ctl.factory_fails.store(true, SeqCst);
    for i in 0..256 {
        h.handle.try_send(record(i, &resource("other", 2)));
        h.handle.try_send(record(i, &res));
    }
    let (exporter, _, spans, ok) = next_export(&mut h.events).await;
    assert!(ok);
    assert_eq!((exporter, spans.len()), (0, 256));
    assert_eq!(h.created.load(SeqCst), 1);

    h.handle.shutdown().await;
    let s = h.handle.stats();
    assert_eq!(s.queued, 2 * 512);
    assert_eq!(s.export_errors, 2);
    assert_eq!(s.export_retries, 1);
    assert_eq!(s.dropped_export_failed, 256);
    assert_eq!(s.exported, 768);
    assert_eq!(s.dropped_queue_full, 0);
}

#[tokio::test(start_paused = true)]
async fn failed_drain_drops_the_rest_instead_of_waiting_again() {
    let h = start(Config::default());
    h.ctl.set(Mode::Hang);
    let a = resource("a", 1);
    let b = resource("b", 2);
    let c = resource("c", 3);
    for (i, r) in [&a, &a, &b, &c].into_iter().enumerate() {
        h.handle.try_send(record(i as u64, r));
    }
    // Shutdown drains one batch of three resources: `a` hangs until the export timeout, then
    // `b` and `c` are dropped at once instead of waiting for the timeout again.
    let t0 = Instant::now();
    h.handle.shutdown().await;
    assert_eq!(Instant::now() - t0, Duration::from_secs(10));
    let s = h.handle.stats();
    assert_eq!(
        (s.export_errors, s.dropped_export_failed, s.exported),
        (1, 4, 0)
    );
}

#[tokio::test(start_paused = true)]
async fn unsampled_spans_are_counted_not_exported() {
    let mut h = start(Config::default());
    let res = resource("kraken-agent", 1);
    for i in 0..5 {
        let mut r = record(i, &res);
        r.sampled = false;
        assert!(h.handle.try_send(r));
    }
    assert!(h.handle.try_send(record(9, &res)));
    h.handle.shutdown().await;
    let s = h.handle.stats();
    assert_eq!((s.unsampled, s.queued, s.exported), (5, 1, 1));
    let (_, _, spans, _) = next_export(&mut h.events).await;
    assert_eq!(spans.len(), 1);
    assert!(spans[0].span_context.is_sampled());
}

/// A port nothing listens on.
async fn closed_port() -> u16 {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    l.local_addr().expect("addr").port()
}

#[tokio::test]
async fn real_otlp_exporters_fail_cleanly_without_a_collector() {
    for protocol in [Protocol::Grpc, Protocol::HttpProtobuf] {
        let port = closed_port().await;
        let (handle, task) = spawn(Config {
            endpoint: format!("http://127.0.0.1:{port}"),
            protocol,
            export_timeout: Duration::from_secs(5),
            ..Config::default()
        });
        assert!(handle.try_send(record(0, &resource("kraken-agent", 1))));
        handle.shutdown().await;
        let s = handle.stats();
        assert_eq!(
            (s.export_errors, s.dropped_export_failed, s.exported),
            (1, 1, 0),
            "{protocol}"
        );
        assert!(task.await.is_ok());
    }
}

#[tokio::test]
async fn otlp_http_posts_protobuf_to_v1_traces() {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let server = tokio::spawn(async move {
        let (mut sock, _) = listener.accept().await.expect("accept");
        let mut req = Vec::new();
        let mut buf = [0u8; 4096];
        // Read the head, then the body by content-length.
        let (head_len, body_len) = loop {
            let n = sock.read(&mut buf).await.expect("read");
            assert!(n > 0, "connection closed early");
            req.extend_from_slice(&buf[..n]);
            if let Some(end) = req.windows(4).position(|w| w == b"\r\n\r\n") {
                let head = String::from_utf8_lossy(&req[..end]).to_ascii_lowercase();
                let len = head
                    .lines()
                    .find_map(|l| l.strip_prefix("content-length:"))
                    .and_then(|v| v.trim().parse::<usize>().ok())
                    .unwrap_or(0);
                break (end + 4, len);
            }
        };
        while req.len() < head_len + body_len {
            let n = sock.read(&mut buf).await.expect("read");
            assert!(n > 0, "connection closed early");
            req.extend_from_slice(&buf[..n]);
        }
        sock.write_all(
            b"HTTP/1.1 200 OK\r\ncontent-type: application/x-protobuf\r\ncontent-length: 0\r\n\r\n",
        )
        .await
        .expect("write");
        let head = String::from_utf8_lossy(&req[..head_len]).to_string();
        (head, req[head_len..].to_vec())
    });

    let (handle, task) = spawn(Config {
        endpoint: format!("http://127.0.0.1:{port}"),
        protocol: Protocol::HttpProtobuf,
        ..Config::default()
    });
    assert!(handle.try_send(record(0, &resource("kraken-agent", 1))));
    handle.shutdown().await;
    assert!(task.await.is_ok());
    let s = handle.stats();
    assert_eq!((s.exported, s.export_errors), (1, 0));

    let (head, body) = server.await.expect("server");
    assert!(head.starts_with("POST /v1/traces HTTP/1.1\r\n"), "{head}");
    assert!(
        head.to_ascii_lowercase()
            .contains("content-type: application/x-protobuf"),
        "{head}"
    );
    // The protobuf carries the service name and the span name.
    let contains = |needle: &[u8]| body.windows(needle.len()).any(|w| w == needle);
    assert!(contains(b"kraken-agent"));
    assert!(contains(b"span 0"));
    assert!(contains(b"kraken-tracer"));
}
