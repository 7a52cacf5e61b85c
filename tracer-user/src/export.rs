//! The last stage: finished [`SpanRecord`]s → OTLP (gRPC or HTTP/protobuf) → Jaeger or an
//! OpenTelemetry Collector.
//!
//! ```text
//! reader task ── ExportHandle::try_send (never blocks; drops + counts when full)
//!                   │ bounded queue (max_queue)
//!                   ▼
//!              batcher task ── batch of max_batch, or `interval` after its first span
//!                   │ grouped by ProcessResource
//!                   ▼
//!              one SpanExporter per resource (LRU, at most MAX_EXPORTERS), exports serialized
//!                   │ failed: the batch is held and retried with exponential backoff
//!                   ▼ (jittered, 1 s doubling to 30 s, for at most 2 min; meanwhile the queue
//!                     fills and try_send drops + counts: memory ≤ queue + one batch)
//!              collector
//! ```
//!
//! Since opentelemetry-rust 0.32 a `SpanBuilder` can no longer take kernel-supplied ids and end
//! times, so records are turned into [`SpanData`] directly ([`to_span_data`]) and handed to
//! [`SpanExporter::export`] by this module's own small batcher (design review §4.2, strategy 2:
//! queue 2048, batch 512, every 5 s).
//!
//! OTLP carries one resource per export request and an exporter holds one resource, so every
//! traced process ([`ProcessResource`]) gets its own exporter. All of them share one transport
//! (one gRPC channel or one HTTP connection pool).

use std::{
    borrow::Cow,
    collections::{HashMap, VecDeque},
    fmt,
    str::FromStr,
    sync::{
        Arc, LazyLock,
        atomic::{AtomicU64, Ordering::Relaxed},
    },
    time::Duration,
};

use opentelemetry::{
    InstrumentationScope, Key, KeyValue, Value,
    trace::{SpanContext, SpanId, Status, TraceFlags, TraceId, TraceState},
};
use opentelemetry_otlp::{WithExportConfig as _, WithHttpConfig as _, WithTonicConfig as _};
use opentelemetry_sdk::{
    Resource,
    trace::{SpanData, SpanEvents, SpanExporter, SpanLinks},
};
use tokio::{
    sync::{mpsc, watch},
    task::JoinHandle,
    time::Instant,
};

use crate::span::{AttrValue, ProcessResource, SpanKind, SpanRecord, SpanStatus};

/// Exporters (one per traced process) kept at most; beyond, the least recently used one is shut
/// down and replaced (processes that exited are the ones that go).
pub const MAX_EXPORTERS: usize = 256;

/// Default OTLP/gRPC endpoint.
pub const DEFAULT_GRPC_ENDPOINT: &str = "http://127.0.0.1:4317";
/// Default OTLP/HTTP base endpoint (`/v1/traces` is appended).
pub const DEFAULT_HTTP_ENDPOINT: &str = "http://127.0.0.1:4318";

/// Instrumentation scope of every exported span.
pub const SCOPE_NAME: &str = "kraken-tracer";

/// Warnings about dropped spans or failed exports come at most this often.
const WARN_EVERY: Duration = Duration::from_secs(30);

#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    #[error("unsupported OTLP protocol {0:?} (expected \"grpc\" or \"http/protobuf\")")]
    UnsupportedProtocol(String),
    #[error("invalid OTLP endpoint {endpoint:?}: {reason}")]
    InvalidEndpoint { endpoint: String, reason: String },
    #[error("cannot build the OTLP exporter: {0}")]
    Build(#[from] opentelemetry_otlp::ExporterBuildError),
    #[error("OTLP exporter unavailable: {0}")]
    Unavailable(String),
}

/// OTLP transport (the values of `OTEL_EXPORTER_OTLP_PROTOCOL`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Protocol {
    /// `grpc`
    #[default]
    Grpc,
    /// `http/protobuf`
    HttpProtobuf,
}

impl Protocol {
    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::Grpc => "grpc",
            Protocol::HttpProtobuf => "http/protobuf",
        }
    }

    /// `http://127.0.0.1:4317` for gRPC, `http://127.0.0.1:4318` for HTTP.
    pub fn default_endpoint(self) -> &'static str {
        match self {
            Protocol::Grpc => DEFAULT_GRPC_ENDPOINT,
            Protocol::HttpProtobuf => DEFAULT_HTTP_ENDPOINT,
        }
    }
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Protocol {
    type Err = ExportError;

    /// `grpc` or `http/protobuf` (ASCII case and surrounding blanks ignored). `http/json` is a
    /// valid OTLP value but not supported here.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let v = s.trim();
        if v.eq_ignore_ascii_case("grpc") {
            Ok(Protocol::Grpc)
        } else if v.eq_ignore_ascii_case("http/protobuf") {
            Ok(Protocol::HttpProtobuf)
        } else {
            Err(ExportError::UnsupportedProtocol(s.to_owned()))
        }
    }
}

/// Export settings (design review §4.2, strategy 2).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Config {
    /// gRPC: the collector's URL (`http://host:4317`). HTTP: the base URL as in
    /// `OTEL_EXPORTER_OTLP_ENDPOINT`; `/v1/traces` is appended unless the path already ends with
    /// it. Empty: the protocol's default. Plain `http://` only (no TLS in this build).
    pub endpoint: String,
    pub protocol: Protocol,
    /// Spans queued between the reader and the exporter; beyond, new spans are dropped.
    pub max_queue: usize,
    /// Spans per export (per batch, before splitting by resource).
    pub max_batch: usize,
    /// A batch is sent at most this long after its first span arrived.
    pub interval: Duration,
    /// Upper bound of one export call; a call that takes longer counts as failed.
    pub export_timeout: Duration,
    /// Delay before the first retry of a failed batch; it doubles with every further failure
    /// (and is reset by a successful export). Each delay is jittered down to half its value.
    pub retry_initial: Duration,
    /// The longest delay between two retries.
    pub retry_max_delay: Duration,
    /// A batch still failing this long after its first failure is dropped (counted as
    /// `dropped_export_failed`) and the next one is tried, with the same backoff.
    pub retry_max_elapsed: Duration,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            endpoint: DEFAULT_GRPC_ENDPOINT.to_owned(),
            protocol: Protocol::Grpc,
            max_queue: 2048,
            max_batch: 512,
            interval: Duration::from_secs(5),
            export_timeout: Duration::from_secs(10),
            retry_initial: Duration::from_secs(1),
            retry_max_delay: Duration::from_secs(30),
            retry_max_elapsed: Duration::from_secs(120),
        }
    }
}

impl Config {
    /// The URL spans are sent to: the endpoint (or the protocol's default), checked, with
    /// `/v1/traces` appended for HTTP.
    pub fn resolved_endpoint(&self) -> Result<String, ExportError> {
        let raw = self.endpoint.trim();
        let raw = if raw.is_empty() {
            self.protocol.default_endpoint()
        } else {
            raw
        };
        let invalid = |reason: String| ExportError::InvalidEndpoint {
            endpoint: raw.to_owned(),
            reason,
        };
        let uri: tonic::transport::Uri = raw.parse().map_err(|e| invalid(format!("{e}")))?;
        match uri.scheme_str() {
            Some("http") => {}
            Some("https") => {
                return Err(invalid(
                    "https is not supported (built without TLS); use http:// or a local collector"
                        .to_owned(),
                ));
            }
            _ => return Err(invalid("expected an http:// URL".to_owned())),
        }
        if uri.authority().is_none() {
            return Err(invalid("no host".to_owned()));
        }
        Ok(match self.protocol {
            Protocol::Grpc => raw.to_owned(),
            Protocol::HttpProtobuf => {
                let base = raw.trim_end_matches('/');
                if base.ends_with("/v1/traces") {
                    base.to_owned()
                } else {
                    format!("{base}/v1/traces")
                }
            }
        })
    }

    /// Checks the endpoint (call before [`spawn`] to fail fast on a bad `--otlp-endpoint`).
    pub fn validate(&self) -> Result<(), ExportError> {
        self.resolved_endpoint().map(drop)
    }
}

/// Export counters, cumulative since [`spawn`] (a snapshot, see [`ExportHandle::stats`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ExportStats {
    /// Sampled spans accepted into the queue.
    pub queued: u64,
    /// Sampled spans dropped because the queue was full.
    pub dropped_queue_full: u64,
    /// Spans offered after shutdown (dropped).
    pub dropped_closed: u64,
    /// Spans the collector accepted.
    pub exported: u64,
    /// Failed export calls (collector unreachable, rejected, timed out, exporter unavailable),
    /// retries included.
    pub export_errors: u64,
    /// Export calls made by retries of a batch whose export had failed (successful or not;
    /// one per resource in the batch).
    pub export_retries: u64,
    /// Spans the collector accepted on a retry (also counted in `exported`).
    pub exported_after_retry: u64,
    /// Spans dropped because their export failed: retries exhausted
    /// ([`Config::retry_max_elapsed`]), no exporter could be made for their process, or the
    /// final drain at shutdown failed.
    pub dropped_export_failed: u64,
    /// Spans not exported because their trace is not sampled.
    pub unsampled: u64,
}

#[derive(Debug, Default)]
struct Counters {
    queued: AtomicU64,
    dropped_queue_full: AtomicU64,
    dropped_closed: AtomicU64,
    exported: AtomicU64,
    export_errors: AtomicU64,
    export_retries: AtomicU64,
    exported_after_retry: AtomicU64,
    dropped_export_failed: AtomicU64,
    unsampled: AtomicU64,
    /// Gauge: spans of the failed batch held for a retry.
    retrying: AtomicU64,
}

impl Counters {
    fn snapshot(&self) -> ExportStats {
        ExportStats {
            queued: self.queued.load(Relaxed),
            dropped_queue_full: self.dropped_queue_full.load(Relaxed),
            dropped_closed: self.dropped_closed.load(Relaxed),
            exported: self.exported.load(Relaxed),
            export_errors: self.export_errors.load(Relaxed),
            export_retries: self.export_retries.load(Relaxed),
            exported_after_retry: self.exported_after_retry.load(Relaxed),
            dropped_export_failed: self.dropped_export_failed.load(Relaxed),
            unsampled: self.unsampled.load(Relaxed),
        }
    }
}

fn add(counter: &AtomicU64, n: usize) {
    counter.fetch_add(u64::try_from(n).unwrap_or(u64::MAX), Relaxed);
}

/// Lets the first event through, then at most one per period (lock-free, any thread).
#[derive(Debug)]
struct RateLimit {
    origin: std::time::Instant,
    period_ms: u64,
    next_ms: AtomicU64,
}

impl RateLimit {
    fn new(period: Duration) -> RateLimit {
        RateLimit {
            origin: std::time::Instant::now(),
            period_ms: u64::try_from(period.as_millis()).unwrap_or(u64::MAX),
            next_ms: AtomicU64::new(0),
        }
    }

    fn allow(&self) -> bool {
        let now = u64::try_from(self.origin.elapsed().as_millis()).unwrap_or(u64::MAX);
        let next = self.next_ms.load(Relaxed);
        now >= next
            && self
                .next_ms
                .compare_exchange(next, now.saturating_add(self.period_ms), Relaxed, Relaxed)
                .is_ok()
    }
}

#[derive(Debug)]
struct Shared {
    counters: Counters,
    full_warning: RateLimit,
    max_queue: usize,
    /// Handle → task: stop taking spans, drain, flush, shut the exporters down.
    stop: watch::Sender<bool>,
    /// Task → handles: the task has finished.
    done: watch::Sender<bool>,
}

/// The reader's end of the export queue. Cheap to clone; every method is safe from any thread.
#[derive(Clone)]
pub struct ExportHandle {
    tx: mpsc::Sender<SpanRecord>,
    shared: Arc<Shared>,
}

impl fmt::Debug for ExportHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ExportHandle")
            .field("stats", &self.stats())
            .finish_non_exhaustive()
    }
}

impl ExportHandle {
    /// Queues a finished span without ever blocking. Unsampled spans are counted and discarded
    /// (returns `true`: nothing went wrong). Returns `false` when the span was dropped: the queue
    /// is full (counted, warned about at most every 30 s) or the exporter has shut down.
    pub fn try_send(&self, span: SpanRecord) -> bool {
        let c = &self.shared.counters;
        if !span.sampled {
            c.unsampled.fetch_add(1, Relaxed);
            return true;
        }
        match self.tx.try_send(span) {
            Ok(()) => {
                c.queued.fetch_add(1, Relaxed);
                true
            }
            Err(mpsc::error::TrySendError::Full(_)) => {
                let dropped = c.dropped_queue_full.fetch_add(1, Relaxed) + 1;
                if self.shared.full_warning.allow() {
                    log::warn!(
                        "export queue full ({} spans): dropping spans, {dropped} dropped so far \
                         (the collector is slow or unreachable, or the span rate is too high)",
                        self.shared.max_queue
                    );
                }
                false
            }
            Err(mpsc::error::TrySendError::Closed(_)) => {
                c.dropped_closed.fetch_add(1, Relaxed);
                false
            }
        }
    }

    /// Spans waiting in the queue now.
    pub fn queue_len(&self) -> usize {
        self.tx.max_capacity() - self.tx.capacity()
    }

    /// Spans of a failed batch held for a retry now (at most one batch). With
    /// [`queue_len`](Self::queue_len): every span the exporter holds.
    pub fn retry_len(&self) -> usize {
        usize::try_from(self.shared.counters.retrying.load(Relaxed)).unwrap_or(usize::MAX)
    }

    /// The counters now.
    pub fn stats(&self) -> ExportStats {
        self.shared.counters.snapshot()
    }

    /// Stops taking spans, exports what is queued (a batch waiting for a retry first, without
    /// waiting for its backoff), shuts the exporters down, and waits for all of it. After the
    /// first failed export of the final drain, the rest is dropped (counted) so that an
    /// unreachable collector costs at most about two export timeouts. Idempotent.
    pub async fn shutdown(&self) {
        let mut done = self.shared.done.subscribe();
        self.shared.stop.send_replace(true);
        let _ = done.wait_for(|d| *d).await;
    }
}

/// Makes exporters: the batcher calls [`create`](Self::create) once per distinct resource and
/// then sets the resource itself with [`SpanExporter::set_resource`].
pub trait ExporterFactory: Send + 'static {
    type Exporter: SpanExporter + 'static;
    fn create(&mut self) -> Result<Self::Exporter, ExportError>;
}

impl<E, F> ExporterFactory for F
where
    F: FnMut() -> Result<E, ExportError> + Send + 'static,
    E: SpanExporter + 'static,
{
    type Exporter = E;
    fn create(&mut self) -> Result<E, ExportError> {
        self()
    }
}

/// OTLP exporters sharing one transport: a gRPC channel (connected lazily, reconnecting) or an
/// HTTP/1.1 connection pool (hyper, plain HTTP).
#[derive(Debug)]
pub struct OtlpFactory {
    transport: Transport,
    timeout: Duration,
}

#[derive(Debug)]
enum Transport {
    /// The channel is made on first use: that needs a running Tokio runtime.
    Grpc {
        endpoint: String,
        channel: Option<tonic::transport::Channel>,
    },
    Http {
        url: String,
        client: Box<opentelemetry_http::hyper::HyperClient>,
    },
}

impl OtlpFactory {
    /// Checks the endpoint; connects nothing.
    pub fn new(config: &Config) -> Result<OtlpFactory, ExportError> {
        let endpoint = config.resolved_endpoint()?;
        let transport = match config.protocol {
            Protocol::Grpc => Transport::Grpc {
                endpoint,
                channel: None,
            },
            Protocol::HttpProtobuf => Transport::Http {
                url: endpoint,
                client: Box::new(
                    opentelemetry_http::hyper::HyperClient::with_default_connector(
                        config.export_timeout,
                        None,
                    ),
                ),
            },
        };
        Ok(OtlpFactory {
            transport,
            timeout: config.export_timeout,
        })
    }
}

impl ExporterFactory for OtlpFactory {
    type Exporter = opentelemetry_otlp::SpanExporter;

    fn create(&mut self) -> Result<Self::Exporter, ExportError> {
        let builder = opentelemetry_otlp::SpanExporter::builder();
        Ok(match &mut self.transport {
            Transport::Grpc { endpoint, channel } => {
                let channel = match channel {
                    Some(c) => c.clone(),
                    None => {
                        let c = tonic::transport::Endpoint::from_shared(endpoint.clone())
                            .map_err(|e| ExportError::InvalidEndpoint {
                                endpoint: endpoint.clone(),
                                reason: e.to_string(),
                            })?
                            .connect_timeout(self.timeout)
                            .timeout(self.timeout)
                            .connect_lazy();
                        channel.insert(c).clone()
                    }
                };
                builder
                    .with_tonic()
                    .with_channel(channel)
                    .with_timeout(self.timeout)
                    .build()?
            }
            Transport::Http { url, client } => builder
                .with_http()
                .with_http_client((**client).clone())
                .with_endpoint(url.clone())
                .with_protocol(opentelemetry_otlp::Protocol::HttpBinary)
                .with_timeout(self.timeout)
                .build()?,
        })
    }
}

/// Starts the batcher on the current Tokio runtime, exporting over OTLP to
/// `config.endpoint`. A bad endpoint is logged here and every batch is then dropped as a failed
/// export; call [`Config::validate`] first to fail fast instead.
pub fn spawn(config: Config) -> (ExportHandle, JoinHandle<()>) {
    match OtlpFactory::new(&config) {
        Ok(factory) => spawn_with(config, factory),
        Err(e) => {
            log::error!("OTLP export disabled: {e}");
            let reason = e.to_string();
            spawn_with(config, move || {
                Err::<opentelemetry_otlp::SpanExporter, _>(ExportError::Unavailable(reason.clone()))
            })
        }
    }
}

/// [`spawn`] with any exporter (tests, other sinks). Must be called inside a Tokio runtime.
pub fn spawn_with<F: ExporterFactory>(
    config: Config,
    factory: F,
) -> (ExportHandle, JoinHandle<()>) {
    let max_queue = config.max_queue.max(1);
    let (tx, rx) = mpsc::channel(max_queue);
    let (stop, stop_rx) = watch::channel(false);
    let (done, _) = watch::channel(false);
    let shared = Arc::new(Shared {
        counters: Counters::default(),
        full_warning: RateLimit::new(WARN_EVERY),
        max_queue,
        stop,
        done,
    });
    let batcher = Batcher {
        exporters: Exporters {
            factory,
            live: HashMap::new(),
            uses: 0,
            timeout: config.export_timeout,
            shared: Arc::clone(&shared),
            error_log: RateLimit::new(WARN_EVERY),
        },
        max_batch: config.max_batch.max(1),
        interval: config.interval,
        backoff: Backoff::new(config.retry_initial, config.retry_max_delay),
        max_elapsed: config.retry_max_elapsed,
    };
    let task = tokio::spawn(batcher.run(rx, stop_rx));
    (ExportHandle { tx, shared }, task)
}

/// Resolves once a stop is requested (or can no longer be).
async fn stopped(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|s| *s).await;
}

/// Marks the task finished however it ends (returns, panics, is cancelled).
struct DoneGuard(Arc<Shared>);

impl Drop for DoneGuard {
    fn drop(&mut self) {
        self.0.done.send_replace(true);
    }
}

struct Batcher<F: ExporterFactory> {
    exporters: Exporters<F>,
    max_batch: usize,
    interval: Duration,
    backoff: Backoff,
    max_elapsed: Duration,
}

/// Spans of one batch not yet accepted by the collector, grouped by resource, and when to
/// (re)try them.
struct Pending {
    groups: VecDeque<(Arc<ProcessResource>, Vec<SpanData>)>,
    /// Failed attempts so far.
    failures: u32,
    first_failure: Option<Instant>,
    not_before: Instant,
}

impl Pending {
    fn new(batch: Vec<SpanRecord>, not_before: Instant) -> Pending {
        Pending {
            groups: group_by_resource(batch).into(),
            failures: 0,
            first_failure: None,
            not_before,
        }
    }

    fn spans(&self) -> usize {
        self.groups.iter().map(|(_, s)| s.len()).sum()
    }
}

/// Exponential backoff between export attempts after a failure: `initial`, doubling up to
/// `max`, each delay drawn uniformly from [d/2, d] so that many tracers don't retry in step.
#[derive(Debug)]
struct Backoff {
    initial: Duration,
    max: Duration,
    /// The undithered delay of the last failure; None after a success.
    current: Option<Duration>,
    /// No export before this (set by a failure).
    gate: Option<Instant>,
    rng: u64,
}

impl Backoff {
    fn new(initial: Duration, max: Duration) -> Backoff {
        use std::hash::{BuildHasher as _, Hasher as _};
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_u64(u64::from(std::process::id()));
        Backoff {
            initial,
            max: max.max(initial),
            current: None,
            gate: None,
            rng: h.finish() | 1,
        }
    }

    /// A failure at `now`: the delay until the next attempt (also remembered as the gate).
    fn failed(&mut self, now: Instant) -> Duration {
        let d = match self.current {
            None => self.initial,
            Some(c) => c.saturating_mul(2).min(self.max),
        };
        self.current = Some(d);
        let half = d / 2;
        let spread = u64::try_from((d - half).as_nanos()).unwrap_or(u64::MAX);
        let delay = half + Duration::from_nanos(self.next_random() % spread.saturating_add(1));
        self.gate = Some(now + delay);
        delay
    }

    fn succeeded(&mut self) {
        self.current = None;
        self.gate = None;
    }

    /// The earliest time a new batch may be sent.
    fn ready_at(&self, now: Instant) -> Instant {
        self.gate.map_or(now, |g| g.max(now))
    }

    /// xorshift64.
    fn next_random(&mut self) -> u64 {
        let mut x = self.rng;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.rng = x;
        x
    }
}

impl<F: ExporterFactory> Batcher<F> {
    async fn run(mut self, mut rx: mpsc::Receiver<SpanRecord>, mut stop: watch::Receiver<bool>) {
        let _done = DoneGuard(Arc::clone(&self.exporters.shared));
        let mut batch: Vec<SpanRecord> = Vec::with_capacity(self.max_batch);
        // A batch being sent or waiting for its retry. While there is one the queue is not
        // read: it fills up and try_send drops and counts, so memory stays bounded.
        let mut pending: Option<Pending> = None;
        let timer = tokio::time::sleep(Duration::ZERO);
        tokio::pin!(timer);
        loop {
            if let Some(p) = pending.as_mut() {
                if p.not_before > Instant::now() {
                    tokio::select! {
                        biased;
                        () = stopped(&mut stop) => break,
                        () = tokio::time::sleep_until(p.not_before) => {}
                    }
                }
                if self.attempt(p).await {
                    pending = None;
                }
                self.note_retrying(pending.as_ref());
                continue;
            }
            let room = self.max_batch.saturating_sub(batch.len());
            tokio::select! {
                biased;
                () = stopped(&mut stop) => break,
                () = &mut timer, if !batch.is_empty() => {
                    pending = Some(self.pending(std::mem::take(&mut batch)));
                }
                n = rx.recv_many(&mut batch, room) => {
                    if n == 0 {
                        break; // every handle is gone
                    }
                    if batch.len() == n {
                        // First spans of this batch: it leaves `interval` from now at the latest.
                        timer.as_mut().reset(Instant::now() + self.interval);
                    }
                    if batch.len() >= self.max_batch {
                        pending = Some(self.pending(std::mem::take(&mut batch)));
                    }
                }
            }
        }
        // Drain: no new spans, export what is held and queued (no retries, no backoff), then
        // shut the exporters down.
        rx.close();
        let mut failed = false;
        if let Some(p) = pending.take() {
            failed = !self.exporters.flush(p, false).await;
            self.note_retrying(None);
        }
        loop {
            let room = self.max_batch.saturating_sub(batch.len()).max(1);
            let n = rx.recv_many(&mut batch, room).await;
            if batch.len() >= self.max_batch || (n == 0 && !batch.is_empty()) {
                let p = Pending::new(std::mem::take(&mut batch), Instant::now());
                failed |= !self.exporters.flush(p, failed).await;
            }
            if n == 0 {
                break;
            }
        }
        self.exporters.shutdown();
        let s = self.exporters.shared.counters.snapshot();
        log::debug!("OTLP export stopped: {s:?}");
    }

    /// A new batch, to be sent at once unless a recent failure asks to wait.
    fn pending(&self, batch: Vec<SpanRecord>) -> Pending {
        Pending::new(batch, self.backoff.ready_at(Instant::now()))
    }

    fn note_retrying(&self, pending: Option<&Pending>) {
        let n = pending.map_or(0, Pending::spans);
        self.exporters
            .shared
            .counters
            .retrying
            .store(u64::try_from(n).unwrap_or(u64::MAX), Relaxed);
    }

    /// One attempt at a pending batch. Returns true when it is done with (all exported, or
    /// dropped after its retries ran out); otherwise it is rescheduled after a backoff.
    async fn attempt(&mut self, p: &mut Pending) -> bool {
        let spans = p.spans();
        let Err(e) = self.exporters.send(p).await else {
            if p.failures > 0 {
                log::info!(
                    "OTLP export recovered: {spans} held spans sent after {} failed attempts",
                    p.failures
                );
            }
            self.backoff.succeeded();
            return true;
        };
        let now = Instant::now();
        p.failures += 1;
        let first = *p.first_failure.get_or_insert(now);
        let delay = self.backoff.failed(now);
        let left = p.spans();
        let shared = &self.exporters.shared;
        if now.duration_since(first) >= self.max_elapsed {
            add(&shared.counters.dropped_export_failed, left);
            if self.exporters.error_log.allow() {
                log::warn!(
                    "OTLP export failed: {e}; dropping {left} spans after {} attempts over {:?} \
                     ({} failed exports so far)",
                    p.failures,
                    now.duration_since(first),
                    shared.counters.export_errors.load(Relaxed)
                );
            }
            return true;
        }
        p.not_before = now + delay;
        if self.exporters.error_log.allow() {
            log::warn!(
                "OTLP export failed: {e}; retrying {left} spans in {delay:.1?} (attempt {}; new \
                 spans queue meanwhile, and are dropped once the queue is full; {} failed \
                 exports so far)",
                p.failures + 1,
                shared.counters.export_errors.load(Relaxed)
            );
        }
        false
    }
}

struct Exporters<F: ExporterFactory> {
    factory: F,
    live: HashMap<Arc<ProcessResource>, Live<F::Exporter>>,
    /// Use clock for LRU eviction.
    uses: u64,
    timeout: Duration,
    shared: Arc<Shared>,
    error_log: RateLimit,
}

struct Live<E> {
    exporter: E,
    last_use: u64,
}

/// Why one export call failed.
enum OneError {
    /// No exporter could be made for the resource (not worth a retry).
    NoExporter(String),
    /// The export itself failed or timed out.
    Export(String),
}

impl<F: ExporterFactory> Exporters<F> {
    /// Sends the pending groups, one request per resource, one after the other, removing
    /// each one that succeeds. A resource whose exporter cannot be made has its spans
    /// dropped (a configuration problem retrying would not fix). At the first failed export
    /// it stops: that group and the ones after it stay pending (for a retry).
    async fn send(&mut self, p: &mut Pending) -> Result<(), String> {
        let retry = p.failures > 0;
        while let Some((resource, spans)) = p.groups.pop_front() {
            let n = spans.len();
            let c = &self.shared.counters;
            if retry {
                c.export_retries.fetch_add(1, Relaxed);
            }
            // The exporter takes the spans: keep a copy for a retry.
            let copy = spans.clone();
            match self.export_one(&resource, spans).await {
                Ok(()) => {
                    let c = &self.shared.counters;
                    add(&c.exported, n);
                    if retry {
                        add(&c.exported_after_retry, n);
                    }
                }
                Err(OneError::NoExporter(e)) => {
                    add(&self.shared.counters.dropped_export_failed, n);
                    if self.error_log.allow() {
                        log::warn!(
                            "no OTLP exporter for {:?} (pid {}), {n} spans dropped: {e}",
                            resource.service_name,
                            resource.pid
                        );
                    }
                }
                Err(OneError::Export(e)) => {
                    p.groups.push_front((resource, copy));
                    return Err(e);
                }
            }
        }
        Ok(())
    }

    /// Sends every group once, without retries (the final drain). With `give_up`, or once an
    /// export has failed, the remaining groups are dropped. Returns false if anything failed
    /// or was dropped.
    async fn flush(&mut self, p: Pending, give_up: bool) -> bool {
        let mut ok = !give_up;
        for (resource, spans) in p.groups {
            let n = spans.len();
            if !ok {
                add(&self.shared.counters.dropped_export_failed, n);
                continue;
            }
            match self.export_one(&resource, spans).await {
                Ok(()) => add(&self.shared.counters.exported, n),
                Err(OneError::NoExporter(e) | OneError::Export(e)) => {
                    ok = false;
                    add(&self.shared.counters.dropped_export_failed, n);
                    if self.error_log.allow() {
                        log::warn!(
                            "OTLP export of {n} spans of {:?} (pid {}) at shutdown failed, \
                             spans dropped: {e}",
                            resource.service_name,
                            resource.pid
                        );
                    }
                }
            }
        }
        ok
    }

    /// One export call, bounded by the export timeout. Failures are counted as export errors.
    async fn export_one(
        &mut self,
        resource: &Arc<ProcessResource>,
        spans: Vec<SpanData>,
    ) -> Result<(), OneError> {
        let timeout = self.timeout;
        let result = match self.exporter_for(resource) {
            Ok(exporter) => match tokio::time::timeout(timeout, exporter.export(spans)).await {
                Ok(Ok(())) => Ok(()),
                Ok(Err(e)) => Err(OneError::Export(e.to_string())),
                Err(_) => Err(OneError::Export(format!("timed out after {timeout:?}"))),
            },
            Err(e) => Err(OneError::NoExporter(e.to_string())),
        };
        if result.is_err() {
            self.shared.counters.export_errors.fetch_add(1, Relaxed);
        }
        result
    }

    fn exporter_for(
        &mut self,
        resource: &Arc<ProcessResource>,
    ) -> Result<&F::Exporter, ExportError> {
        self.uses += 1;
        let now = self.uses;
        if !self.live.contains_key(resource) {
            let mut exporter = self.factory.create()?;
            exporter.set_resource(&to_resource(resource));
            if self.live.len() >= MAX_EXPORTERS {
                self.evict_lru();
            }
            self.live.insert(
                Arc::clone(resource),
                Live {
                    exporter,
                    last_use: now,
                },
            );
        }
        match self.live.get_mut(resource) {
            Some(l) => {
                l.last_use = now;
                Ok(&l.exporter)
            }
            None => Err(ExportError::Unavailable("exporter vanished".to_owned())),
        }
    }

    fn evict_lru(&mut self) {
        let oldest = self
            .live
            .iter()
            .min_by_key(|(_, l)| l.last_use)
            .map(|(r, _)| Arc::clone(r));
        if let Some(r) = oldest
            && let Some(l) = self.live.remove(&r)
        {
            log::debug!(
                "more than {MAX_EXPORTERS} traced processes: closing the exporter of {:?} (pid {})",
                r.service_name,
                r.pid
            );
            let _ = l.exporter.shutdown_with_timeout(self.timeout);
        }
    }

    fn shutdown(&mut self) {
        for (r, l) in self.live.drain() {
            if let Err(e) = l.exporter.shutdown_with_timeout(self.timeout) {
                log::debug!("shutting down the exporter of pid {}: {e}", r.pid);
            }
        }
    }
}

/// Splits a batch by resource, keeping first-seen order (a batch usually holds a handful).
fn group_by_resource(batch: Vec<SpanRecord>) -> Vec<(Arc<ProcessResource>, Vec<SpanData>)> {
    let mut groups: Vec<(Arc<ProcessResource>, Vec<SpanData>)> = Vec::new();
    for record in batch {
        let resource = Arc::clone(&record.resource);
        let span = to_span_data(record);
        match groups
            .iter_mut()
            .find(|(r, _)| Arc::ptr_eq(r, &resource) || **r == *resource)
        {
            Some((_, spans)) => spans.push(span),
            None => groups.push((resource, vec![span])),
        }
    }
    groups
}

static SCOPE: LazyLock<InstrumentationScope> = LazyLock::new(|| {
    InstrumentationScope::builder(SCOPE_NAME)
        .with_version(env!("CARGO_PKG_VERSION"))
        .build()
});

/// A finished span as OpenTelemetry's exportable form (the resource goes to the exporter).
pub fn to_span_data(record: SpanRecord) -> SpanData {
    let SpanRecord {
        trace_id,
        span_id,
        parent_span_id,
        sampled,
        name,
        kind,
        start,
        end,
        attributes,
        status,
        resource: _,
    } = record;
    let flags = if sampled {
        TraceFlags::SAMPLED
    } else {
        TraceFlags::default()
    };
    SpanData {
        span_context: SpanContext::new(
            TraceId::from_bytes(trace_id),
            SpanId::from_bytes(span_id),
            flags,
            false,
            TraceState::NONE,
        ),
        parent_span_id: parent_span_id.map_or(SpanId::INVALID, SpanId::from_bytes),
        parent_span_is_remote: false,
        span_kind: match kind {
            SpanKind::Server => opentelemetry::trace::SpanKind::Server,
            SpanKind::Client => opentelemetry::trace::SpanKind::Client,
            SpanKind::Internal => opentelemetry::trace::SpanKind::Internal,
        },
        name: Cow::Owned(name),
        start_time: start,
        end_time: end,
        attributes: attributes
            .into_iter()
            .map(|(k, v)| {
                let v = match v {
                    AttrValue::Str(s) => Value::from(s),
                    AttrValue::Int(i) => Value::I64(i),
                    AttrValue::Bool(b) => Value::Bool(b),
                };
                KeyValue::new(Key::from_static_str(k), v)
            })
            .collect(),
        dropped_attributes_count: 0,
        events: SpanEvents::default(),
        links: SpanLinks::default(),
        status: match status {
            SpanStatus::Unset => Status::Unset,
            SpanStatus::Error(msg) => Status::error(msg),
        },
        instrumentation_scope: SCOPE.clone(),
    }
}

/// The OTLP resource of a traced process: the SDK's defaults (`telemetry.sdk.*`,
/// `OTEL_RESOURCE_ATTRIBUTES`) overridden by the process's own attributes.
pub fn to_resource(p: &ProcessResource) -> Resource {
    let mut attrs = vec![
        KeyValue::new("process.pid", i64::from(p.pid)),
        KeyValue::new("host.name", p.host_name.clone()),
        KeyValue::new("process.executable.path", p.executable_path.clone()),
        KeyValue::new("process.runtime.name", "go"),
    ];
    if let Some(v) = &p.runtime_version {
        attrs.push(KeyValue::new("process.runtime.version", v.clone()));
    }
    Resource::builder()
        .with_service_name(p.service_name.clone())
        .with_attributes(attrs)
        .build()
}

#[cfg(test)]
mod tests;
