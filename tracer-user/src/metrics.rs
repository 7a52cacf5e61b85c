//! Self-metrics, served for Prometheus (and M3, which scrapes the same way) at
//! `http://ADDR/metrics` with `--metrics-addr ADDR`. See `docs/metrics.md` for every metric.
//!
//! The values are cumulative snapshots taken elsewhere (the kernel's per-CPU counters, the
//! correlator's and the exporter's counters): the session hands each new snapshot to
//! [`Metrics`] with a `set_*` call, and a scrape encodes the latest ones. Nothing here counts
//! by itself, so a snapshot is the single source of truth and the metrics never drift from
//! what the session logs.
//!
//! The exposition is OpenMetrics text, as `prometheus-client` encodes it (counter samples get
//! the `_total` suffix, the body ends in `# EOF`), sent as
//! `application/openmetrics-text; version=1.0.0; charset=utf-8`. A scraper that asks only for
//! `text/plain` (the Prometheus 0.0.4 text format) gets the same samples in that format instead.

use std::{
    convert::Infallible,
    fmt::{self, Write as _},
    net::SocketAddr,
    sync::{Arc, Mutex, MutexGuard},
    time::Duration,
};

use http_body_util::Full;
use hyper::{
    Method, Request, Response, StatusCode,
    body::{Bytes, Incoming},
    header::{self, HeaderValue},
    server::conn::http1,
    service::service_fn,
};
use hyper_util::rt::{TokioIo, TokioTimer};
use prometheus_client::{
    collector::Collector,
    encoding::{DescriptorEncoder, EncodeLabelValue, EncodeMetric, text},
    metrics::{MetricType, counter::ConstCounter, gauge::ConstGauge},
    registry::Registry,
};
use tokio::{net::TcpListener, task::JoinSet};
use tracer_common::socket::SocketBytes;

/// Prefix of every metric name.
pub const PREFIX: &str = "kraken_tracer";
/// Content type of [`Metrics::render`] (what prometheus-client encodes).
pub const OPENMETRICS_CONTENT_TYPE: &str =
    "application/openmetrics-text; version=1.0.0; charset=utf-8";
/// Content type of [`Metrics::render_prometheus_text`].
pub const PROMETHEUS_TEXT_CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Connections served at once; more are closed on accept (a scrape is one short request).
const MAX_CONNECTIONS: usize = 64;
/// A client that has not sent its request headers by then is disconnected.
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);

/// The kernel-side counters (cumulative, summed over CPUs unless said otherwise).
#[derive(Clone, Debug, Default)]
pub struct KernelSnapshot {
    /// (probe name e.g. "http_serve", hits)
    pub probe_hits: Vec<(&'static str, u64)>,
    /// Ring-buffer reserve failures per CPU (index = cpu).
    pub ringbuf_full_per_cpu: Vec<u64>,
    /// Kernel reads of the target's memory that failed.
    pub read_errors: u64,
    /// Probe hits in processes not traced.
    pub not_traced: u64,
    /// Server requests dropped in the kernel by path rules.
    pub filtered_server: u64,
    /// Client requests dropped in the kernel by path rules.
    pub filtered_client: u64,
    /// End probes of dropped requests.
    pub filtered_ends: u64,
    /// What the sk_msg program did (zero with --propagation off).
    pub propagation: crate::tracer::PropagationCounters,
}

/// The reader's and the correlator's counters (cumulative) and map sizes (gauges).
#[derive(Clone, Debug, Default)]
pub struct PipelineSnapshot {
    pub events_read: u64,
    pub events_undecodable: u64,
    /// Spans assembled by the correlator.
    pub spans_created: u64,
    /// Spans not exported because their trace was not sampled.
    pub spans_sampled_out: u64,
    /// Unsampled spans exported by the keep-errors rule.
    pub spans_kept_error: u64,
    /// Unsampled spans exported by the keep-slower-than rule.
    pub spans_kept_slow: u64,
    /// Unsampled spans let go from the keep buffer when full.
    pub keep_buffer_evicted: u64,
    pub unmatched_ends: u64,
    pub expired: u64,
    pub evicted: u64,
    pub linked_across_processes: u64,
    /// Server spans whose parent came from an incoming `traceparent` header.
    pub from_traceparent: u64,
    /// Gauge: spans open (started, not ended).
    pub open_spans: u64,
    /// Gauge: remembered goroutine → parent links.
    pub goroutine_parents: u64,
    /// Gauge: client requests waiting to be linked to a server span of another process.
    pub outbound_links: u64,
    /// Gauge: spans of unsampled traces held in the keep buffer.
    pub keep_buffer_spans: u64,
}

/// The exporter's counters (cumulative) and queue length (gauge).
#[derive(Clone, Debug, Default)]
pub struct ExportSnapshot {
    pub queued: u64,
    pub exported: u64,
    pub dropped_queue_full: u64,
    pub dropped_export_failed: u64,
    pub export_errors: u64,
    /// Export calls made to retry a failed batch.
    pub export_retries: u64,
    /// Gauge: spans waiting in the export queue.
    pub queue_len: u64,
    /// Gauge: spans held for a retry (at most one batch).
    pub retry_len: u64,
}

/// Attachment state.
#[derive(Clone, Debug, Default)]
pub struct AttachSnapshot {
    /// Gauge: processes traced now.
    pub processes_attached: u64,
    /// Gauge: uprobes attached now.
    pub probes_attached: u64,
    pub attach_failures: u64,
    pub processes_exited: u64,
}

/// The socket probes: their mode and each traced process's TCP counters (cumulative since
/// the process was attached).
#[derive(Clone, Debug, Default)]
pub struct SocketSnapshot {
    /// `kprobe`, `tracepoint` or `off` (empty: not reported yet).
    pub mode: &'static str,
    /// (pid, counters), one per counted process.
    pub processes: Vec<(u32, SocketBytes)>,
}

#[derive(Debug, Default)]
struct Snapshots {
    kernel: KernelSnapshot,
    pipeline: PipelineSnapshot,
    export: ExportSnapshot,
    attach: AttachSnapshot,
    socket: SocketSnapshot,
}

/// The latest snapshots and the registry that encodes them.
#[derive(Debug)]
pub struct Metrics {
    snapshots: Arc<Mutex<Snapshots>>,
    registry: Registry,
}

impl Metrics {
    pub fn new() -> Arc<Metrics> {
        let snapshots = Arc::new(Mutex::new(Snapshots::default()));
        let mut registry = Registry::with_prefix(PREFIX);
        registry.register_collector(Box::new(SnapshotCollector(snapshots.clone())));
        Arc::new(Metrics {
            snapshots,
            registry,
        })
    }

    pub fn set_kernel(&self, s: KernelSnapshot) {
        self.lock().kernel = s;
    }

    pub fn set_pipeline(&self, s: PipelineSnapshot) {
        self.lock().pipeline = s;
    }

    pub fn set_export(&self, s: ExportSnapshot) {
        self.lock().export = s;
    }

    pub fn set_attach(&self, s: AttachSnapshot) {
        self.lock().attach = s;
    }

    pub fn set_socket(&self, s: SocketSnapshot) {
        self.lock().socket = s;
    }

    /// The OpenMetrics text exposition ([`OPENMETRICS_CONTENT_TYPE`]).
    pub fn render(&self) -> String {
        let mut out = String::with_capacity(8 * 1024);
        if let Err(e) = text::encode(&mut out, &self.registry) {
            // Writing to a String cannot fail; keep whatever was encoded.
            log::warn!("encoding self-metrics: {e}");
        }
        out
    }

    /// The same samples in the Prometheus 0.0.4 text format ([`PROMETHEUS_TEXT_CONTENT_TYPE`]).
    pub fn render_prometheus_text(&self) -> String {
        openmetrics_to_prometheus_text(&self.render())
    }

    fn lock(&self) -> MutexGuard<'_, Snapshots> {
        lock(&self.snapshots)
    }
}

/// A panic elsewhere while holding the lock must not take the metrics down with it.
fn lock(m: &Mutex<Snapshots>) -> MutexGuard<'_, Snapshots> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Encodes the snapshots on each scrape.
#[derive(Debug)]
struct SnapshotCollector(Arc<Mutex<Snapshots>>);

impl Collector for SnapshotCollector {
    fn encode(&self, mut enc: DescriptorEncoder) -> fmt::Result {
        let s = lock(&self.0);
        let e = &mut enc;
        let (k, p, x, a) = (&s.kernel, &s.pipeline, &s.export, &s.attach);

        labelled(
            e,
            "build_info",
            "kraken-tracer's version; always 1.",
            MetricType::Gauge,
            "version",
            [(env!("CARGO_PKG_VERSION"), 1)],
        )?;

        // Kernel.
        labelled(
            e,
            "probe_hits",
            "Probe hits in traced processes, per probe program.",
            MetricType::Counter,
            "probe",
            merge_probe_hits(&k.probe_hits),
        )?;
        labelled(
            e,
            "ringbuf_reserve_failures",
            "Events lost because the ring buffer was full, per CPU.",
            MetricType::Counter,
            "cpu",
            k.ringbuf_full_per_cpu
                .iter()
                .enumerate()
                .map(|(cpu, &n)| (cpu, n)),
        )?;
        counter(
            e,
            "kernel_read_errors",
            "Kernel reads of a traced process's memory that failed.",
            k.read_errors,
        )?;
        counter(
            e,
            "kernel_not_traced",
            "Probe hits in processes that are not traced (ignored in the kernel).",
            k.not_traced,
        )?;
        labelled(
            e,
            "kernel_filtered",
            "Requests dropped in the kernel by path rules (server, client) and their silenced end probes (end).",
            MetricType::Counter,
            "kind",
            [
                ("server", k.filtered_server),
                ("client", k.filtered_client),
                ("end", k.filtered_ends),
            ],
        )?;
        counter(
            e,
            "propagation_injected",
            "traceparent header lines inserted into outgoing HTTP/1 requests (sk_msg).",
            k.propagation.injected,
        )?;
        labelled(
            e,
            "propagation_skipped",
            "Sends on traced connections left unchanged, by reason (had_traceparent: the application's own header kept; not_http: not the start of an HTTP/1 request, e.g. a body or TLS; no_line_end: request line longer than the scan; no_pending: no context waiting for that path; push_failed: the kernel refused the insert).",
            MetricType::Counter,
            "reason",
            [
                ("had_traceparent", k.propagation.had_header),
                ("not_http", k.propagation.not_http),
                ("no_line_end", k.propagation.no_line_end),
                ("no_pending", k.propagation.no_pending),
                ("push_failed", k.propagation.push_failed),
            ],
        )?;

        // Reader and correlator.
        counter(
            e,
            "events_read",
            "Events read from the ring buffer.",
            p.events_read,
        )?;
        counter(
            e,
            "events_undecodable",
            "Events read from the ring buffer that could not be decoded.",
            p.events_undecodable,
        )?;
        counter(
            e,
            "spans_created",
            "Spans assembled by the correlator.",
            p.spans_created,
        )?;
        counter(
            e,
            "spans_sampled_out",
            "Spans not exported because their trace was not sampled.",
            p.spans_sampled_out,
        )?;
        labelled(
            e,
            "spans_kept",
            "Spans of unsampled traces exported by a keep rule (error: --keep-errors, slow: --keep-slower-than).",
            MetricType::Counter,
            "reason",
            [("error", p.spans_kept_error), ("slow", p.spans_kept_slow)],
        )?;
        labelled(
            e,
            "spans_dropped",
            "Spans lost: export queue full, export failed, or let go from the full keep buffer.",
            MetricType::Counter,
            "reason",
            [
                ("queue_full", x.dropped_queue_full),
                ("export_failed", x.dropped_export_failed),
                ("keep_buffer_full", p.keep_buffer_evicted),
            ],
        )?;
        counter(
            e,
            "unmatched_ends",
            "End events with no open span to close (its start was lost, evicted or expired).",
            p.unmatched_ends,
        )?;
        counter(
            e,
            "spans_expired",
            "Open spans forgotten because they stayed open too long or their process exited.",
            p.expired,
        )?;
        counter(
            e,
            "correlator_evictions",
            "Entries dropped because a bounded correlator map was full.",
            p.evicted,
        )?;
        counter(
            e,
            "spans_linked_across_processes",
            "Server spans linked to a client span of another traced process.",
            p.linked_across_processes,
        )?;
        counter(
            e,
            "spans_from_traceparent",
            "Server spans whose parent came from an incoming traceparent header (trace started on another node).",
            p.from_traceparent,
        )?;
        gauge(
            e,
            "open_spans",
            "Spans started and not yet ended.",
            p.open_spans,
        )?;
        gauge(
            e,
            "goroutine_parents",
            "Remembered goroutine-to-parent links.",
            p.goroutine_parents,
        )?;
        gauge(
            e,
            "outbound_links",
            "Client requests waiting to be linked to a server span of another traced process.",
            p.outbound_links,
        )?;
        gauge(
            e,
            "keep_buffer_spans",
            "Spans of unsampled traces held until their trace completes (keep rules).",
            p.keep_buffer_spans,
        )?;

        // Export.
        counter(
            e,
            "spans_queued",
            "Spans accepted into the export queue.",
            x.queued,
        )?;
        counter(
            e,
            "spans_exported",
            "Spans the OTLP collector accepted.",
            x.exported,
        )?;
        counter(
            e,
            "export_errors",
            "Failed export calls (collector unreachable, rejected, timed out).",
            x.export_errors,
        )?;
        counter(
            e,
            "export_retries",
            "Export calls retrying a failed batch (exponential backoff, 1 s doubling to 30 s).",
            x.export_retries,
        )?;
        gauge(
            e,
            "export_retry_spans",
            "Spans held for a retry of a failed export (at most one batch).",
            x.retry_len,
        )?;
        gauge(
            e,
            "export_queue_spans",
            "Spans waiting in the export queue.",
            x.queue_len,
        )?;

        // Attachment.
        gauge(
            e,
            "processes_attached",
            "Processes traced now.",
            a.processes_attached,
        )?;
        gauge(
            e,
            "probes_attached",
            "Uprobes attached now.",
            a.probes_attached,
        )?;
        counter(
            e,
            "attach_failures",
            "Processes or probes that could not be attached.",
            a.attach_failures,
        )?;
        counter(
            e,
            "processes_exited",
            "Traced processes that exited.",
            a.processes_exited,
        )?;

        // Socket probes.
        let so = &s.socket;
        if !so.mode.is_empty() {
            labelled(
                e,
                "socket_probes_info",
                "How TCP bytes are counted: kprobe, tracepoint or off (--socket-probes); always 1.",
                MetricType::Gauge,
                "mode",
                [(so.mode, 1)],
            )?;
        }
        per_process(
            e,
            "socket_bytes",
            "TCP payload bytes per traced process (pid) since it was attached, by direction (received, sent); socket probes.",
            so.processes
                .iter()
                .map(|(pid, c)| (*pid, c.rx_bytes, c.tx_bytes)),
        )?;
        per_process(
            e,
            "socket_calls",
            "TCP receive and send calls that moved data, per traced process (pid) since it was attached; socket probes.",
            so.processes
                .iter()
                .map(|(pid, c)| (*pid, c.rx_calls, c.tx_calls)),
        )?;
        Ok(())
    }
}

/// A counter family labelled by `pid` and `direction` (`received`, `sent`).
fn per_process(
    e: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    samples: impl IntoIterator<Item = (u32, u64, u64)>,
) -> fmt::Result {
    let mut m = e.encode_descriptor(name, help, None, MetricType::Counter)?;
    for (pid, received, sent) in samples {
        for (direction, n) in [("received", received), ("sent", sent)] {
            let labels = [
                ("pid", pid.to_string()),
                ("direction", direction.to_owned()),
            ];
            ConstCounter::new(n).encode(m.encode_family(&labels)?)?;
        }
    }
    Ok(())
}

fn counter(e: &mut DescriptorEncoder, name: &str, help: &str, v: u64) -> fmt::Result {
    let c = ConstCounter::new(v);
    c.encode(e.encode_descriptor(name, help, None, c.metric_type())?)
}

fn gauge(e: &mut DescriptorEncoder, name: &str, help: &str, v: u64) -> fmt::Result {
    let g = ConstGauge::new(v);
    g.encode(e.encode_descriptor(name, help, None, g.metric_type())?)
}

/// One family with a single label. Label values are written unescaped: only static
/// identifiers and numbers are used.
fn labelled<V: EncodeLabelValue>(
    e: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    ty: MetricType,
    key: &'static str,
    samples: impl IntoIterator<Item = (V, u64)>,
) -> fmt::Result {
    let mut m = e.encode_descriptor(name, help, None, ty)?;
    for (value, n) in samples {
        let labels = [(key, value)];
        let s = m.encode_family(&labels)?;
        match ty {
            MetricType::Counter => ConstCounter::new(n).encode(s)?,
            _ => ConstGauge::new(n).encode(s)?,
        }
    }
    Ok(())
}

/// One sample per probe name (a repeated name would be an invalid exposition): summed.
fn merge_probe_hits(hits: &[(&'static str, u64)]) -> Vec<(&'static str, u64)> {
    let mut out: Vec<(&'static str, u64)> = Vec::with_capacity(hits.len());
    for &(probe, n) in hits {
        match out.iter_mut().find(|(p, _)| *p == probe) {
            Some((_, total)) => *total = total.saturating_add(n),
            None => out.push((probe, n)),
        }
    }
    out
}

/// OpenMetrics text → Prometheus 0.0.4 text, for what [`Metrics::render`] produces (counters
/// and gauges, no units, no exemplars): a counter family is named with its `_total` suffix
/// there, and there is no `# EOF`.
fn openmetrics_to_prometheus_text(om: &str) -> String {
    let counters: Vec<&str> = om
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.strip_suffix(" counter"))
        .collect();
    let mut out = String::with_capacity(om.len() + 16 * counters.len());
    for line in om.lines() {
        if line == "# EOF" {
            continue;
        }
        let meta = ["# HELP ", "# TYPE "]
            .into_iter()
            .find_map(|kw| line.strip_prefix(kw).map(|rest| (kw, rest)));
        if let Some((kw, rest)) = meta {
            let (name, tail) = rest.split_once(' ').unwrap_or((rest, ""));
            if counters.contains(&name) {
                let _ = writeln!(out, "{kw}{name}_total {tail}");
                continue;
            }
        }
        out.push_str(line);
        out.push('\n');
    }
    out
}

#[derive(Debug, thiserror::Error)]
pub enum MetricsError {
    #[error("--metrics-addr {addr}: cannot listen: {source}")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
}

/// Binds (port 0 allowed; the bound address is returned) and serves until the returned task
/// is aborted (which also closes the connections being served).
pub async fn serve(
    addr: SocketAddr,
    metrics: Arc<Metrics>,
) -> Result<(SocketAddr, tokio::task::JoinHandle<()>), MetricsError> {
    let bind_err = |source| MetricsError::Bind { addr, source };
    let listener = TcpListener::bind(addr).await.map_err(bind_err)?;
    let local = listener.local_addr().map_err(bind_err)?;
    log::info!("serving self-metrics at http://{local}/metrics");
    Ok((local, tokio::spawn(accept_loop(listener, metrics))))
}

async fn accept_loop(listener: TcpListener, metrics: Arc<Metrics>) {
    // Owned here: aborting this task drops the set, which aborts every connection.
    let mut conns = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    if conns.len() >= MAX_CONNECTIONS {
                        log::debug!("metrics: too many connections, closing {peer}");
                        continue;
                    }
                    conns.spawn(serve_connection(stream, metrics.clone()));
                }
                Err(e) => {
                    // Out of file descriptors, or a connection reset before it was accepted:
                    // wait a little rather than spin, and keep serving.
                    log::warn!("metrics: accept: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            },
            Some(done) = conns.join_next(), if !conns.is_empty() => {
                if let Err(e) = done
                    && e.is_panic()
                {
                    log::error!("metrics: a connection panicked: {e}");
                }
            }
        }
    }
}

async fn serve_connection(stream: tokio::net::TcpStream, metrics: Arc<Metrics>) {
    let service = service_fn(move |req: Request<Incoming>| {
        let response = respond(&metrics, &req);
        async move { Ok::<_, Infallible>(response) }
    });
    let conn = http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_READ_TIMEOUT)
        .serve_connection(TokioIo::new(stream), service);
    if let Err(e) = conn.await {
        log::debug!("metrics: connection: {e}");
    }
}

fn respond<B>(metrics: &Metrics, req: &Request<B>) -> Response<Full<Bytes>> {
    let readable = matches!(*req.method(), Method::GET | Method::HEAD);
    match req.uri().path() {
        "/metrics" if readable => {
            let accept = req
                .headers()
                .get(header::ACCEPT)
                .and_then(|v| v.to_str().ok());
            if prefers_prometheus_text(accept) {
                reply(
                    StatusCode::OK,
                    PROMETHEUS_TEXT_CONTENT_TYPE,
                    metrics.render_prometheus_text(),
                )
            } else {
                reply(StatusCode::OK, OPENMETRICS_CONTENT_TYPE, metrics.render())
            }
        }
        "/" if readable => reply(
            StatusCode::OK,
            "text/html; charset=utf-8",
            "<!DOCTYPE html>\n<html><head><title>kraken-tracer</title></head><body>\n\
             <h1>kraken-tracer</h1>\n<p><a href=\"/metrics\">Metrics</a></p>\n</body></html>\n"
                .to_owned(),
        ),
        "/metrics" | "/" => {
            let mut r = reply(
                StatusCode::METHOD_NOT_ALLOWED,
                "text/plain; charset=utf-8",
                "method not allowed\n".to_owned(),
            );
            r.headers_mut()
                .insert(header::ALLOW, HeaderValue::from_static("GET, HEAD"));
            r
        }
        _ => reply(
            StatusCode::NOT_FOUND,
            "text/plain; charset=utf-8",
            "not found; metrics are at /metrics\n".to_owned(),
        ),
    }
}

fn reply(status: StatusCode, content_type: &'static str, body: String) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(body)));
    *r.status_mut() = status;
    r.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    r
}

/// Whether the scraper wants the Prometheus text format rather than OpenMetrics: only when it
/// accepts `text/plain` and prefers it to `application/openmetrics-text` (by q-value).
/// Prometheus itself lists OpenMetrics first unless its `scrape_protocols` say otherwise; no
/// `Accept` or `*/*` (curl, a browser) gets OpenMetrics.
fn prefers_prometheus_text(accept: Option<&str>) -> bool {
    let Some(accept) = accept else {
        return false;
    };
    let (mut openmetrics, mut text) = (0.0f32, 0.0f32);
    for range in accept.split(',') {
        let mut parts = range.split(';').map(str::trim);
        let media = parts.next().unwrap_or("").to_ascii_lowercase();
        let q = parts
            .filter_map(|p| p.split_once('='))
            .find(|(k, _)| k.trim().eq_ignore_ascii_case("q"))
            .map_or(1.0, |(_, v)| v.trim().parse::<f32>().unwrap_or(0.0));
        match media.as_str() {
            "application/openmetrics-text" => openmetrics = openmetrics.max(q),
            "text/plain" => text = text.max(q),
            _ => {}
        }
    }
    text > 0.0 && text > openmetrics
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use tokio::{
        io::{AsyncReadExt, AsyncWriteExt},
        net::TcpStream,
    };

    use super::*;

    fn sample() -> Arc<Metrics> {
        let m = Metrics::new();
        m.set_kernel(KernelSnapshot {
            probe_hits: vec![("http_serve", 11), ("http_client", 12), ("http_serve", 1)],
            ringbuf_full_per_cpu: vec![0, 3],
            read_errors: 4,
            not_traced: 5,
            filtered_server: 6,
            filtered_client: 7,
            filtered_ends: 8,
            propagation: crate::tracer::PropagationCounters {
                injected: 9,
                no_pending: 10,
                ..Default::default()
            },
        });
        m.set_pipeline(PipelineSnapshot {
            events_read: 101,
            events_undecodable: 102,
            spans_created: 103,
            spans_sampled_out: 104,
            spans_kept_error: 105,
            spans_kept_slow: 106,
            keep_buffer_evicted: 107,
            unmatched_ends: 108,
            expired: 109,
            evicted: 110,
            linked_across_processes: 111,
            from_traceparent: 116,
            open_spans: 112,
            goroutine_parents: 113,
            outbound_links: 114,
            keep_buffer_spans: 115,
        });
        m.set_export(ExportSnapshot {
            queued: 201,
            exported: 202,
            dropped_queue_full: 203,
            dropped_export_failed: 204,
            export_errors: 205,
            export_retries: 207,
            queue_len: 206,
            retry_len: 208,
        });
        m.set_attach(AttachSnapshot {
            processes_attached: 301,
            probes_attached: 302,
            attach_failures: 303,
            processes_exited: 304,
        });
        m.set_socket(SocketSnapshot {
            mode: "tracepoint",
            processes: vec![(
                4242,
                SocketBytes {
                    rx_bytes: 401,
                    tx_bytes: 402,
                    rx_calls: 403,
                    tx_calls: 404,
                },
            )],
        });
        m
    }

    const EXPECTED: &[&str] = &[
        "kraken_tracer_probe_hits_total{probe=\"http_serve\"} 12",
        "kraken_tracer_probe_hits_total{probe=\"http_client\"} 12",
        "kraken_tracer_ringbuf_reserve_failures_total{cpu=\"0\"} 0",
        "kraken_tracer_ringbuf_reserve_failures_total{cpu=\"1\"} 3",
        "kraken_tracer_kernel_read_errors_total 4",
        "kraken_tracer_kernel_not_traced_total 5",
        "kraken_tracer_kernel_filtered_total{kind=\"server\"} 6",
        "kraken_tracer_kernel_filtered_total{kind=\"client\"} 7",
        "kraken_tracer_kernel_filtered_total{kind=\"end\"} 8",
        "kraken_tracer_events_read_total 101",
        "kraken_tracer_events_undecodable_total 102",
        "kraken_tracer_spans_created_total 103",
        "kraken_tracer_spans_sampled_out_total 104",
        "kraken_tracer_spans_kept_total{reason=\"error\"} 105",
        "kraken_tracer_spans_kept_total{reason=\"slow\"} 106",
        "kraken_tracer_spans_dropped_total{reason=\"keep_buffer_full\"} 107",
        "kraken_tracer_unmatched_ends_total 108",
        "kraken_tracer_spans_expired_total 109",
        "kraken_tracer_correlator_evictions_total 110",
        "kraken_tracer_spans_linked_across_processes_total 111",
        "kraken_tracer_spans_from_traceparent_total 116",
        "kraken_tracer_open_spans 112",
        "kraken_tracer_goroutine_parents 113",
        "kraken_tracer_outbound_links 114",
        "kraken_tracer_keep_buffer_spans 115",
        "kraken_tracer_spans_queued_total 201",
        "kraken_tracer_spans_exported_total 202",
        "kraken_tracer_spans_dropped_total{reason=\"queue_full\"} 203",
        "kraken_tracer_spans_dropped_total{reason=\"export_failed\"} 204",
        "kraken_tracer_export_errors_total 205",
        "kraken_tracer_export_retries_total 207",
        "kraken_tracer_export_retry_spans 208",
        "kraken_tracer_export_queue_spans 206",
        "kraken_tracer_processes_attached 301",
        "kraken_tracer_probes_attached 302",
        "kraken_tracer_attach_failures_total 303",
        "kraken_tracer_processes_exited_total 304",
        "kraken_tracer_socket_probes_info{mode=\"tracepoint\"} 1",
        "kraken_tracer_socket_bytes_total{pid=\"4242\",direction=\"received\"} 401",
        "kraken_tracer_socket_bytes_total{pid=\"4242\",direction=\"sent\"} 402",
        "kraken_tracer_socket_calls_total{pid=\"4242\",direction=\"received\"} 403",
        "kraken_tracer_socket_calls_total{pid=\"4242\",direction=\"sent\"} 404",
    ];

    #[test]
    fn render_has_every_metric_with_its_value_and_labels() {
        let out = sample().render();
        let lines: Vec<&str> = out.lines().collect();
        for want in EXPECTED {
            assert!(lines.contains(want), "missing {want:?} in\n{out}");
        }
        assert!(lines.contains(&"# TYPE kraken_tracer_probe_hits counter"));
        assert!(lines.contains(&"# TYPE kraken_tracer_open_spans gauge"));
        let version = format!(
            "kraken_tracer_build_info{{version=\"{}\"}} 1",
            env!("CARGO_PKG_VERSION")
        );
        assert!(lines.contains(&version.as_str()), "{out}");
        assert_eq!(lines.last(), Some(&"# EOF"));
        // Every sample's family is declared exactly once.
        let types = lines.iter().filter(|l| l.starts_with("# TYPE ")).count();
        let helps = lines.iter().filter(|l| l.starts_with("# HELP ")).count();
        assert_eq!(types, helps);
        let mut names: Vec<&str> = lines
            .iter()
            .filter_map(|l| l.strip_prefix("# TYPE "))
            .collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), types);
    }

    #[test]
    fn empty_snapshots_render_zeroes() {
        let out = Metrics::new().render();
        assert!(
            out.contains("\nkraken_tracer_spans_created_total 0\n"),
            "{out}"
        );
        assert!(out.contains("\nkraken_tracer_open_spans 0\n"), "{out}");
        assert!(out.contains("# TYPE kraken_tracer_probe_hits counter\n"));
    }

    #[test]
    fn newer_snapshot_replaces_older() {
        let m = sample();
        m.set_pipeline(PipelineSnapshot {
            spans_created: 7,
            ..Default::default()
        });
        let out = m.render();
        assert!(out.contains("\nkraken_tracer_spans_created_total 7\n"));
        assert!(!out.contains("kraken_tracer_spans_created_total 103"));
        // Other snapshots are untouched.
        assert!(out.contains("\nkraken_tracer_spans_exported_total 202\n"));
    }

    #[test]
    fn prometheus_text_names_counters_with_total_and_has_no_eof() {
        let out = sample().render_prometheus_text();
        let lines: Vec<&str> = out.lines().collect();
        for want in EXPECTED {
            assert!(lines.contains(want), "missing {want:?} in\n{out}");
        }
        assert!(lines.contains(&"# TYPE kraken_tracer_probe_hits_total counter"));
        assert!(
            lines
                .iter()
                .any(|l| l.starts_with("# HELP kraken_tracer_probe_hits_total "))
        );
        assert!(lines.contains(&"# TYPE kraken_tracer_open_spans gauge"));
        assert!(!out.contains("# EOF"));
        assert!(!out.contains("_total_total"));
    }

    #[test]
    fn accept_negotiation() {
        let prom_default = "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1";
        assert!(!prefers_prometheus_text(None));
        assert!(!prefers_prometheus_text(Some("*/*")));
        assert!(!prefers_prometheus_text(Some(prom_default)));
        assert!(prefers_prometheus_text(Some("text/plain")));
        assert!(prefers_prometheus_text(Some(
            "text/plain;version=0.0.4;q=0.5,*/*;q=0.1"
        )));
        assert!(!prefers_prometheus_text(Some("text/plain;q=0")));
    }

    /// One HTTP/1.1 request on a fresh connection; returns (status line, headers, body).
    async fn get(addr: SocketAddr, path: &str, accept: Option<&str>) -> (String, String, String) {
        let mut s = TcpStream::connect(addr).await.unwrap();
        let accept = accept.map_or(String::new(), |a| format!("Accept: {a}\r\n"));
        let req =
            format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\n{accept}Connection: close\r\n\r\n");
        s.write_all(req.as_bytes()).await.unwrap();
        let mut buf = Vec::new();
        tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut buf))
            .await
            .expect("response in time")
            .unwrap();
        let text = String::from_utf8(buf).unwrap();
        let (head, body) = text.split_once("\r\n\r\n").expect("a full response");
        let (status, headers) = head.split_once("\r\n").unwrap_or((head, ""));
        (
            status.to_owned(),
            headers.to_ascii_lowercase(),
            body.to_owned(),
        )
    }

    #[tokio::test]
    async fn serves_metrics_and_404() {
        let m = Metrics::new();
        let (addr, task) = serve("127.0.0.1:0".parse().unwrap(), m.clone())
            .await
            .unwrap();
        assert_ne!(addr.port(), 0);

        m.set_export(ExportSnapshot {
            exported: 4242,
            ..Default::default()
        });
        let (status, headers, body) = get(addr, "/metrics", None).await;
        assert_eq!(status, "HTTP/1.1 200 OK");
        assert!(
            headers.contains(
                "content-type: application/openmetrics-text; version=1.0.0; charset=utf-8"
            ),
            "{headers}"
        );
        assert!(
            body.contains("\nkraken_tracer_spans_exported_total 4242\n"),
            "{body}"
        );
        assert!(body.ends_with("# EOF\n"));

        // A value set between scrapes shows in the next one.
        m.set_export(ExportSnapshot {
            exported: 4343,
            ..Default::default()
        });
        let (status, headers, body) = get(addr, "/metrics", Some("text/plain")).await;
        assert_eq!(status, "HTTP/1.1 200 OK");
        assert!(
            headers.contains("content-type: text/plain; version=0.0.4"),
            "{headers}"
        );
        assert!(
            body.contains("\nkraken_tracer_spans_exported_total 4343\n"),
            "{body}"
        );

        let (status, _, body) = get(addr, "/", None).await;
        assert_eq!(status, "HTTP/1.1 200 OK");
        assert!(body.contains("href=\"/metrics\""));

        let (status, _, _) = get(addr, "/nope", None).await;
        assert_eq!(status, "HTTP/1.1 404 Not Found");
        let (status, _, _) = get(addr, "/metrics/x", None).await;
        assert_eq!(status, "HTTP/1.1 404 Not Found");

        task.abort();
        assert!(task.await.unwrap_err().is_cancelled());
    }

    #[tokio::test]
    async fn bad_connections_do_not_stop_the_server() {
        let m = Metrics::new();
        let (addr, task) = serve("127.0.0.1:0".parse().unwrap(), m).await.unwrap();

        // Garbage, then a close.
        let mut s = TcpStream::connect(addr).await.unwrap();
        s.write_all(b"\x00\x01 not http\r\n\r\n").await.unwrap();
        let mut buf = Vec::new();
        let _ = tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut buf)).await;
        drop(s);
        // Half a request, then a close.
        let mut s = TcpStream::connect(addr).await.unwrap();
        s.write_all(b"GET /metr").await.unwrap();
        drop(s);
        // Connect and close at once.
        drop(TcpStream::connect(addr).await.unwrap());

        let (status, _, body) = get(addr, "/metrics", None).await;
        assert_eq!(status, "HTTP/1.1 200 OK");
        assert!(body.contains("kraken_tracer_spans_created_total 0"));
        assert!(!task.is_finished());
        task.abort();
    }

    #[tokio::test]
    async fn address_in_use_names_the_flag() {
        let taken = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = taken.local_addr().unwrap();
        let err = serve(addr, Metrics::new()).await.unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("--metrics-addr"), "{msg}");
        assert!(msg.contains(&addr.to_string()), "{msg}");
    }
}
