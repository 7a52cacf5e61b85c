//! A real Jaeger v2 for the integration tests: [`Jaeger::start`] runs the binary that
//! `cargo xtask setup` builds (tests/jaeger/README.md) with deploy/jaeger/config.yaml on free
//! loopback ports, and its query API (`/api/v3`, OTLP JSON) is read back into [`Trace`]s.
//!
//! ```no_run
//! # fn main() -> anyhow::Result<()> {
//! use std::time::Duration;
//! let jaeger = tracer_it::jaeger::Jaeger::start()?;
//! // ... export spans to jaeger.otlp_grpc or jaeger.otlp_http ...
//! let traces = jaeger.wait_for_traces("my-service", 3, Duration::from_secs(10))?;
//! # Ok(()) }
//! ```

use std::{
    collections::BTreeMap,
    env, fs,
    fs::File,
    net::{SocketAddr, TcpListener, TcpStream},
    path::PathBuf,
    process::{Child, Command, Stdio},
    sync::atomic::{AtomicUsize, Ordering},
    thread,
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use anyhow::{Context as _, Result, bail};

pub use crate::http::dechunk;
use serde_json::Value;

use crate::workspace;

/// The Jaeger release built by `cargo xtask setup` (shared with xtask/src/jaeger.rs).
const VERSION: &str = include_str!("../jaeger/VERSION");

/// How long Jaeger may take to start answering.
const START_TIMEOUT: Duration = Duration::from_secs(60);
/// `query.num_traces` for searches (the memory store needs 0 < n < max_traces).
const SEARCH_DEPTH: usize = 1000;

pub fn version() -> &'static str {
    VERSION.trim()
}

/// The Jaeger binary `cargo xtask setup` installed (`KRAKEN_TRACER_JAEGER_BIN` overrides).
pub fn bin() -> PathBuf {
    crate::cache::jaeger_bin(version())
}

/// The Jaeger configuration the tests use (ports come from the environment).
pub fn config() -> PathBuf {
    workspace().join("deploy/jaeger/config.yaml")
}

/// A running Jaeger v2 with memory storage; killed on drop. Its log is kept (and its path
/// printed) when the dropping thread panics, otherwise removed.
pub struct Jaeger {
    /// OTLP/gRPC receiver, `http://127.0.0.1:PORT`.
    pub otlp_grpc: String,
    /// OTLP/HTTP receiver base, `http://127.0.0.1:PORT` (spans go to `/v1/traces`).
    pub otlp_http: String,
    /// Query API and UI base, `http://127.0.0.1:PORT`.
    pub query: String,
    /// Jaeger's stdout and stderr.
    pub log: PathBuf,
    otlp_grpc_addr: SocketAddr,
    otlp_http_addr: SocketAddr,
    query_addr: SocketAddr,
    started: SystemTime,
    child: Child,
}

impl Jaeger {
    /// Starts Jaeger on free ports and waits until its query API and receivers answer.
    pub fn start() -> Result<Jaeger> {
        let bin = bin();
        if !bin.exists() {
            bail!(
                "no Jaeger binary at {} (run `cargo xtask setup`, or set KRAKEN_TRACER_JAEGER_BIN)",
                bin.display()
            );
        }
        // Free ports are found by binding port 0 and releasing it: another process may take
        // one before Jaeger binds it, so a clash is retried with new ports.
        let mut attempt = 0;
        loop {
            attempt += 1;
            match Self::try_start(&bin) {
                Ok(j) => return Ok(j),
                Err(e) if attempt < 3 && format!("{e:#}").contains("address already in use") => {
                    continue;
                }
                Err(e) => return Err(e),
            }
        }
    }

    fn try_start(bin: &std::path::Path) -> Result<Jaeger> {
        static COUNTER: AtomicUsize = AtomicUsize::new(0);
        let [otlp_grpc, otlp_http, query_http, query_grpc] = free_ports::<4>()?;
        let log = env::temp_dir().join(format!(
            "kraken-tracer-jaeger-{}-{}.log",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed)
        ));
        let out = File::create(&log).with_context(|| format!("creating {}", log.display()))?;
        let err = out.try_clone()?;
        let started = SystemTime::now();
        let child = Command::new(bin)
            .arg("--config")
            .arg(config())
            .env("JAEGER_LISTEN_HOST", "127.0.0.1")
            .env("JAEGER_OTLP_GRPC_PORT", otlp_grpc.to_string())
            .env("JAEGER_OTLP_HTTP_PORT", otlp_http.to_string())
            .env("JAEGER_QUERY_HTTP_PORT", query_http.to_string())
            .env("JAEGER_QUERY_GRPC_PORT", query_grpc.to_string())
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .with_context(|| format!("starting {}", bin.display()))?;
        let addr = |port: u16| SocketAddr::from(([127, 0, 0, 1], port));
        let mut jaeger = Jaeger {
            otlp_grpc: format!("http://127.0.0.1:{otlp_grpc}"),
            otlp_http: format!("http://127.0.0.1:{otlp_http}"),
            query: format!("http://127.0.0.1:{query_http}"),
            log,
            otlp_grpc_addr: addr(otlp_grpc),
            otlp_http_addr: addr(otlp_http),
            query_addr: addr(query_http),
            started,
            child,
        };
        jaeger.wait_ready()?;
        Ok(jaeger)
    }

    fn wait_ready(&mut self) -> Result<()> {
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if let Some(status) = self.child.try_wait()? {
                bail!(
                    "Jaeger exited during start-up with {status}; its log:\n{}",
                    self.log_tail(30)
                );
            }
            let ready = matches!(
                http(self.query_addr, "GET", "/api/v3/services", None),
                Ok((200, _))
            ) && [self.otlp_grpc_addr, self.otlp_http_addr]
                .iter()
                .all(|a| TcpStream::connect_timeout(a, Duration::from_secs(1)).is_ok());
            if ready {
                return Ok(());
            }
            if Instant::now() >= deadline {
                bail!(
                    "Jaeger did not answer on {} within {START_TIMEOUT:?}; its log:\n{}",
                    self.query,
                    self.log_tail(30)
                );
            }
            thread::sleep(Duration::from_millis(20));
        }
    }

    /// Stops Jaeger (SIGKILL, like a crash or a lost node: the receivers vanish, clients
    /// see their connections reset) and waits until its ports refuse connections. Its stored
    /// traces are gone (memory storage). [`restart`](Self::restart) brings it back on the same
    /// ports. Idempotent.
    pub fn stop(&mut self) -> Result<()> {
        if self.child.try_wait()?.is_none() {
            self.child.kill()?;
            self.child.wait()?;
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        while [self.otlp_grpc_addr, self.otlp_http_addr, self.query_addr]
            .iter()
            .any(|a| TcpStream::connect_timeout(a, Duration::from_millis(200)).is_ok())
        {
            if Instant::now() >= deadline {
                bail!("Jaeger's ports still accept connections after it was killed");
            }
            thread::sleep(Duration::from_millis(20));
        }
        Ok(())
    }

    /// True while the Jaeger process runs.
    pub fn running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// Starts Jaeger again (after [`stop`](Self::stop); stops it first if it runs) on the
    /// same OTLP and query ports, so exporters keep their endpoint, and waits until it
    /// answers. Its log goes on in the same file. Fails if another process took a port.
    pub fn restart(&mut self) -> Result<()> {
        self.stop()?;
        let [query_grpc] = free_ports::<1>()?;
        let out = fs::OpenOptions::new()
            .append(true)
            .open(&self.log)
            .with_context(|| format!("opening {}", self.log.display()))?;
        let err = out.try_clone()?;
        let bin = bin();
        self.child = Command::new(&bin)
            .arg("--config")
            .arg(config())
            .env("JAEGER_LISTEN_HOST", "127.0.0.1")
            .env(
                "JAEGER_OTLP_GRPC_PORT",
                self.otlp_grpc_addr.port().to_string(),
            )
            .env(
                "JAEGER_OTLP_HTTP_PORT",
                self.otlp_http_addr.port().to_string(),
            )
            .env("JAEGER_QUERY_HTTP_PORT", self.query_addr.port().to_string())
            .env("JAEGER_QUERY_GRPC_PORT", query_grpc.to_string())
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .with_context(|| format!("restarting {}", bin.display()))?;
        self.wait_ready()
    }

    /// The last `n` lines of Jaeger's log.
    pub fn log_tail(&self, n: usize) -> String {
        let text = fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(n)..].join("\n")
    }

    /// Sends an OTLP/JSON `ExportTraceServiceRequest` to the OTLP/HTTP receiver.
    pub fn post_otlp_json(&self, body: &str) -> Result<()> {
        let (code, resp) = http(
            self.otlp_http_addr,
            "POST",
            "/v1/traces",
            Some(("application/json", body.as_bytes())),
        )?;
        if code != 200 {
            bail!(
                "POST {}/v1/traces: HTTP {code}: {}",
                self.otlp_http,
                String::from_utf8_lossy(&resp)
            );
        }
        Ok(())
    }

    /// Service names Jaeger has seen (`GET /api/v3/services`).
    pub fn services(&self) -> Result<Vec<String>> {
        let v = self.get_json("/api/v3/services")?;
        Ok(v.get("services")
            .and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .filter_map(Value::as_str)
                    .map(str::to_owned)
                    .collect()
            })
            .unwrap_or_default())
    }

    /// Traces with a span of `service` that started between `since` and a minute from now,
    /// as stored (`query.raw_traces=true`: no clock-skew adjustment or added warnings).
    pub fn traces(&self, service: &str, since: SystemTime) -> Result<Vec<Trace>> {
        let max = SystemTime::now() + Duration::from_secs(60);
        let target = format!(
            "/api/v3/traces?query.service_name={}&query.start_time_min={}&query.start_time_max={}\
             &query.num_traces={SEARCH_DEPTH}&query.raw_traces=true",
            crate::http::percent_encode(service),
            rfc3339(since),
            rfc3339(max)
        );
        self.get_traces(&target)
    }

    /// One trace by its hex id, or None when Jaeger does not have it.
    pub fn trace(&self, trace_id: &str) -> Result<Option<Trace>> {
        let target = format!(
            "/api/v3/traces/{}?raw_traces=true",
            crate::http::percent_encode(trace_id)
        );
        Ok(self.get_traces(&target)?.into_iter().next())
    }

    /// Polls [`Jaeger::traces`] (from shortly before Jaeger started) until the traces of
    /// `service` hold at least `min_spans` spans, or fails after `timeout` with what it saw.
    pub fn wait_for_traces(
        &self,
        service: &str,
        min_spans: usize,
        timeout: Duration,
    ) -> Result<Vec<Trace>> {
        let since = self.started - Duration::from_secs(600);
        let deadline = Instant::now() + timeout;
        loop {
            let traces = self.traces(service, since)?;
            let spans: usize = traces.iter().map(|t| t.spans.len()).sum();
            if spans >= min_spans {
                return Ok(traces);
            }
            if Instant::now() >= deadline {
                bail!(
                    "waited {timeout:?} for {min_spans} spans of service {service:?} in Jaeger, \
                     got {spans} in {} traces: {traces:#?}\nservices: {:?}\nJaeger log:\n{}",
                    traces.len(),
                    self.services().unwrap_or_default(),
                    self.log_tail(20)
                );
            }
            thread::sleep(Duration::from_millis(50));
        }
    }

    fn get_json(&self, target: &str) -> Result<Value> {
        let (code, body) = http(self.query_addr, "GET", target, None)?;
        if code != 200 {
            bail!(
                "GET {}{target}: HTTP {code}: {}",
                self.query,
                String::from_utf8_lossy(&body)
            );
        }
        serde_json::from_slice(&body)
            .with_context(|| format!("GET {}{target}: bad JSON", self.query))
    }

    fn get_traces(&self, target: &str) -> Result<Vec<Trace>> {
        let (code, body) = http(self.query_addr, "GET", target, None)?;
        match code {
            200 => parse_traces(&body).with_context(|| format!("GET {}{target}", self.query)),
            // api_v3 answers "No traces found" with 404.
            404 => Ok(Vec::new()),
            _ => bail!(
                "GET {}{target}: HTTP {code}: {}",
                self.query,
                String::from_utf8_lossy(&body)
            ),
        }
    }
}

impl Drop for Jaeger {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if thread::panicking() {
            eprintln!("Jaeger's log is kept at {}", self.log.display());
        } else {
            let _ = fs::remove_file(&self.log);
        }
    }
}

/// One trace: its spans ordered by start time.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Trace {
    pub trace_id: String,
    pub spans: Vec<Span>,
}

impl Trace {
    /// The first span with this name.
    pub fn span(&self, name: &str) -> Option<&Span> {
        self.spans.iter().find(|s| s.name == name)
    }

    /// Spans without a parent.
    pub fn roots(&self) -> impl Iterator<Item = &Span> {
        self.spans.iter().filter(|s| s.parent_span_id.is_none())
    }

    /// Direct children of the span `span_id`.
    pub fn children<'a>(&'a self, span_id: &'a str) -> impl Iterator<Item = &'a Span> {
        self.spans
            .iter()
            .filter(move |s| s.parent_span_id.as_deref() == Some(span_id))
    }
}

/// One span as Jaeger returns it. Ids are lower-case hex; enums are OTLP's names
/// (`SPAN_KIND_SERVER`, `STATUS_CODE_ERROR`); attribute values are stringified (ints and
/// doubles as numbers, bools as `true`/`false`, arrays and maps as JSON).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Span {
    pub trace_id: String,
    pub span_id: String,
    pub parent_span_id: Option<String>,
    pub name: String,
    /// `SPAN_KIND_UNSPECIFIED`, `_INTERNAL`, `_SERVER`, `_CLIENT`, `_PRODUCER` or `_CONSUMER`.
    pub kind: String,
    pub start_unix_nano: u64,
    pub end_unix_nano: u64,
    pub attributes: BTreeMap<String, String>,
    /// `STATUS_CODE_UNSET`, `STATUS_CODE_OK` or `STATUS_CODE_ERROR`.
    pub status_code: String,
    pub status_message: String,
    /// The resource's `service.name`.
    pub service_name: String,
    pub resource: BTreeMap<String, String>,
    /// The instrumentation scope's name.
    pub scope: String,
}

impl Span {
    pub fn attr(&self, key: &str) -> Option<&str> {
        self.attributes.get(key).map(String::as_str)
    }

    pub fn duration(&self) -> Duration {
        Duration::from_nanos(self.end_unix_nano.saturating_sub(self.start_unix_nano))
    }
}

/// Parses an api_v3 answer: `{"result":{"resourceSpans":[...]}}`, or a stream of such
/// objects, one per chunk. Spans are grouped by trace id.
pub fn parse_traces(body: &[u8]) -> Result<Vec<Trace>> {
    let mut spans = Vec::new();
    for chunk in serde_json::Deserializer::from_slice(body).into_iter::<Value>() {
        let chunk = chunk.context("bad JSON from the query API")?;
        if let Some(e) = chunk.get("error") {
            bail!("query API error: {e}");
        }
        let result = chunk.get("result").unwrap_or(&chunk);
        for rs in array(result, "resourceSpans") {
            let resource = attributes(rs.get("resource").unwrap_or(&Value::Null));
            let service_name = resource.get("service.name").cloned().unwrap_or_default();
            for ss in array(rs, "scopeSpans") {
                let scope = ss
                    .get("scope")
                    .and_then(|s| s.get("name"))
                    .and_then(Value::as_str)
                    .unwrap_or_default();
                for s in array(ss, "spans") {
                    spans.push(span(s, scope, &service_name, &resource)?);
                }
            }
        }
    }
    let mut by_id: BTreeMap<String, Vec<Span>> = BTreeMap::new();
    for s in spans {
        by_id.entry(s.trace_id.clone()).or_default().push(s);
    }
    let mut traces: Vec<Trace> = by_id
        .into_iter()
        .map(|(trace_id, mut spans)| {
            spans.sort_by_key(|s| (s.start_unix_nano, s.span_id.clone()));
            Trace { trace_id, spans }
        })
        .collect();
    traces.sort_by_key(|t| t.spans.first().map_or(0, |s| s.start_unix_nano));
    Ok(traces)
}

fn span(
    s: &Value,
    scope: &str,
    service_name: &str,
    resource: &BTreeMap<String, String>,
) -> Result<Span> {
    let id = |key: &str| {
        s.get(key)
            .and_then(Value::as_str)
            .map(str::to_ascii_lowercase)
            .filter(|v| !v.is_empty() && v.bytes().any(|b| b != b'0'))
    };
    let status = s.get("status").unwrap_or(&Value::Null);
    Ok(Span {
        trace_id: id("traceId").with_context(|| format!("span without traceId: {s}"))?,
        span_id: id("spanId").with_context(|| format!("span without spanId: {s}"))?,
        parent_span_id: id("parentSpanId"),
        name: s
            .get("name")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned(),
        kind: enum_name(
            s.get("kind"),
            "SPAN_KIND_",
            &[
                "UNSPECIFIED",
                "INTERNAL",
                "SERVER",
                "CLIENT",
                "PRODUCER",
                "CONSUMER",
            ],
        ),
        start_unix_nano: number(s.get("startTimeUnixNano")),
        end_unix_nano: number(s.get("endTimeUnixNano")),
        attributes: attributes(s),
        status_code: enum_name(
            status.get("code"),
            "STATUS_CODE_",
            &["UNSET", "OK", "ERROR"],
        ),
        status_message: status
            .get("message")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned(),
        service_name: service_name.to_owned(),
        resource: resource.clone(),
        scope: scope.to_owned(),
    })
}

fn array<'a>(v: &'a Value, key: &str) -> impl Iterator<Item = &'a Value> {
    v.get(key).and_then(Value::as_array).into_iter().flatten()
}

/// An OTLP JSON enum as its name (`SPAN_KIND_SERVER`): JSON may hold the number or the name.
fn enum_name(v: Option<&Value>, prefix: &str, names: &[&str]) -> String {
    let name = match v {
        Some(Value::Number(n)) => n
            .as_u64()
            .and_then(|i| names.get(usize::try_from(i).ok()?))
            .map_or_else(|| n.to_string(), |name| (*name).to_owned()),
        Some(Value::String(s)) => s.strip_prefix(prefix).unwrap_or(s).to_owned(),
        _ => names[0].to_owned(),
    };
    format!("{prefix}{name}")
}

/// OTLP JSON writes 64-bit integers as strings.
fn number(v: Option<&Value>) -> u64 {
    match v {
        Some(Value::String(s)) => s.parse().unwrap_or(0),
        Some(Value::Number(n)) => n.as_u64().unwrap_or(0),
        _ => 0,
    }
}

/// The `attributes` of a span or resource, values stringified.
fn attributes(v: &Value) -> BTreeMap<String, String> {
    array(v, "attributes")
        .filter_map(|kv| {
            let key = kv.get("key")?.as_str()?.to_owned();
            Some((key, any_value(kv.get("value").unwrap_or(&Value::Null))))
        })
        .collect()
}

fn any_value(v: &Value) -> String {
    if let Some(s) = v.get("stringValue").and_then(Value::as_str) {
        return s.to_owned();
    }
    if let Some(b) = v.get("boolValue").and_then(Value::as_bool) {
        return b.to_string();
    }
    for key in ["intValue", "doubleValue", "bytesValue"] {
        match v.get(key) {
            Some(Value::String(s)) => return s.clone(),
            Some(Value::Number(n)) => return n.to_string(),
            _ => {}
        }
    }
    if let Some(a) = v.get("arrayValue") {
        let items: Vec<String> = array(a, "values").map(any_value).collect();
        return serde_json::to_string(&items).unwrap_or_default();
    }
    if let Some(kv) = v.get("kvlistValue") {
        let map: BTreeMap<String, String> = array(kv, "values")
            .filter_map(|e| {
                Some((
                    e.get("key")?.as_str()?.to_owned(),
                    any_value(e.get("value").unwrap_or(&Value::Null)),
                ))
            })
            .collect();
        return serde_json::to_string(&map).unwrap_or_default();
    }
    String::new()
}

/// `n` distinct free loopback TCP ports (bound together, then released).
fn free_ports<const N: usize>() -> Result<[u16; N]> {
    let listeners = (0..N)
        .map(|_| TcpListener::bind("127.0.0.1:0"))
        .collect::<std::io::Result<Vec<_>>>()
        .context("finding free ports")?;
    let mut ports = [0; N];
    for (p, l) in ports.iter_mut().zip(&listeners) {
        *p = l.local_addr()?.port();
    }
    Ok(ports)
}

/// One request to Jaeger: the status and the (de-chunked) body.
fn http(
    addr: SocketAddr,
    method: &str,
    target: &str,
    body: Option<(&str, &[u8])>,
) -> Result<(u16, Vec<u8>)> {
    let (content_type, payload) = body.unwrap_or(("", &[]));
    let mut headers = vec![("Accept", "application/json")];
    if !content_type.is_empty() {
        headers.push(("Content-Type", content_type));
    }
    let r = crate::http::request(
        addr,
        method,
        target,
        &headers,
        payload,
        Duration::from_secs(30),
    )?;
    Ok((r.status, r.body))
}

/// `2026-11-24T14:20:48.123456789Z`.
pub fn rfc3339(t: SystemTime) -> String {
    let d = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = d.as_secs();
    let (days, rem) = (secs / 86_400, secs % 86_400);
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = i64::try_from(days).unwrap_or(0) + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:09}Z",
        rem / 3600,
        rem / 60 % 60,
        rem % 60,
        d.subsec_nanos()
    )
}
