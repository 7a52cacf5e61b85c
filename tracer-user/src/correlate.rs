//! Events to spans. Pairs each start event with its end on the same goroutine (by goid, which
//! Go never reuses), and gives every span its parent inside the process:
//! - a server span is the root of a new trace (cross-process context comes later);
//! - a client span's parent is the server span open on its goroutine, else on the goroutine
//!   that started it (`g.parentGoid`, read by the kernel), else further up the chain of
//!   goroutine parents learned from earlier events; else it starts its own trace.
//!
//! - a server span whose request matches a client span open in another traced process (same
//!   method and path as sent, started just before) is that client span's child: on one node,
//!   one tracer links the processes it traces, even through nginx (where TCP 4-tuples don't
//!   match); across nodes, context propagation takes over (a later layer).
//!
//! Every map is bounded; spans left open too long are expired and counted, never leaked.

use std::{
    collections::{HashMap, VecDeque},
    sync::Arc,
    time::{Duration, SystemTime},
};

use tracer_common::probe::ProbeId;

use crate::{
    clock::{Clock, to_wall},
    events::{Event, HttpClient, HttpClientEnd, HttpServe, HttpServeEnd, KernelIds, KrakenEvent},
    kraken::UploadStep,
    sample::Sampler,
    socket::TcpCounters,
    span::{AttrValue, ProcessResource, SpanKind, SpanRecord, SpanStatus},
    traceparent::TraceParent,
};

/// Limits that keep memory bounded.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// Open spans per process and kind.
    pub max_open: usize,
    /// Remembered goroutine → parent links per process.
    pub max_parents: usize,
    /// A span open longer than this is expired (its end was lost).
    pub max_age: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_open: 16_384,
            max_parents: 65_536,
            max_age: Duration::from_secs(600),
        }
    }
}

/// What the correlator counted (self-metrics).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CorrelateStats {
    pub spans: u64,
    pub unmatched_ends: u64,
    pub replaced_open: u64,
    pub evicted: u64,
    pub expired: u64,
    pub unknown_process: u64,
    /// Server spans linked to a client span of another traced process.
    pub linked_across_processes: u64,
    /// Kraken announces linked to the download of their blob.
    pub kraken_announces_linked: u64,
    /// Kraken announces for no download in progress (periodic re-announces): not sampled.
    pub kraken_announces_unlinked: u64,
    /// Kraken health/readiness requests: not sampled.
    pub kraken_noise: u64,
    /// Server spans whose parent came from an incoming `traceparent` header.
    pub from_traceparent: u64,
    /// Kraken uploads (proxy.upload, origin.store_blob, origin.receive_replica) that ended with
    /// their commit request.
    pub kraken_uploads: u64,
    /// Kraken uploads never committed (no request for `UPLOAD_IDLE_NS`, or evicted): dropped.
    pub kraken_uploads_abandoned: u64,
    /// Backend requests of the origin's writeback linked to the upload of their blob.
    pub kraken_backend_uploads_linked: u64,
    /// Transfers to another origin after a backend fetch (`origin.replicate` under
    /// `origin.blob_refresh`), linked by goroutine ancestry (the fetch's worker spawned them)...
    pub kraken_transfers_by_goroutine: u64,
    /// ... or, that failing, by digest.
    pub kraken_transfers_by_digest: u64,
}

/// Sizes of the correlator's in-flight maps.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MapSizes {
    pub open_spans: usize,
    pub goroutine_parents: usize,
    pub outbound_links: usize,
}

/// Trace context of an open span, inherited by its children.
#[derive(Clone, Copy, Debug)]
struct Ctx {
    trace_id: [u8; 16],
    span_id: [u8; 8],
    sampled: bool,
    /// The wall-clock offset fixed when the trace's root started (see `clock`).
    offset_ns: i128,
}

#[derive(Debug)]
struct Open {
    ctx: Ctx,
    parent: Option<[u8; 8]>,
    start_ns: u64,
    name: String,
    attributes: Vec<(&'static str, AttrValue)>,
    /// Kraken processes: the blob (`sha256:<hex>`) the request is about.
    digest: Option<String>,
    /// Kraken agent: when that blob's download completed into the cache.
    completed_ns: Option<u64>,
    /// Server spans: the process's TCP counters at the start (socket probes on).
    tcp: Option<TcpCounters>,
    /// Kraken server spans: the upload this request is a step of (key in `Process::uploads`).
    upload: Option<(String, UploadStep)>,
}

/// A Kraken upload in progress: one INTERNAL span from its start request to its commit's end.
#[derive(Debug)]
struct Upload {
    open: Open,
    /// Chunk (PATCH) requests seen.
    chunks: i64,
    /// The blob bytes its requests carried (their `Content-Length`s); `None` once one of them
    /// had a body of unknown size.
    size: Option<i64>,
    /// The last request of this upload started (abandoned uploads expire from there).
    last_ns: u64,
}

/// Which semantic layer a process's spans get on top of the generic HTTP one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Profile {
    Generic,
    /// Kraken route names and identity attributes (see `kraken`).
    Kraken,
}

struct Process {
    resource: Arc<ProcessResource>,
    profile: Profile,
    servers: HashMap<u64, Open>,
    clients: HashMap<u64, Open>,
    /// goid → (parent goid, when last learned or used), from client events.
    parents: HashMap<u64, (u64, u64)>,
    /// Kraken: goid → the blob its announcer is about to announce.
    announcing: HashMap<u64, String>,
    /// Kraken origin: open `cache.write` spans, by the worker goroutine writing.
    internal: HashMap<u64, Open>,
    /// Kraken origin: open `origin.blob_refresh` spans, by digest (they start on a handler
    /// goroutine and end on a worker's).
    refreshes: HashMap<String, Open>,
    /// Kraken: uploads in progress, by `name|digest` (origin) or `name|upload id` (proxy, once
    /// its first PATCH names the id) or `name|pending|start|goid` (proxy, before that).
    uploads: HashMap<String, Upload>,
    /// Kraken proxy: started uploads whose id isn't known yet, oldest first (namespace, key).
    pending_uploads: VecDeque<(String, String)>,
    /// Kraken origin: open `origin.replicate` spans, by the goroutine pushing a committed upload
    /// to a replica origin.
    replicating: HashMap<u64, Open>,
    /// Kraken build-index: tags put recently (tag, context, start), newest last: the tag
    /// replication executor's calls for a tag join the put that caused them.
    tag_puts: VecDeque<(String, Ctx, u64)>,
    /// Kraken origin: uploads committed recently (digest, context, end), newest last, for the
    /// asynchronous writeback to the backend.
    stored: VecDeque<(String, Ctx, u64)>,
    /// Kraken origin: backend fetches that ended well recently, newest last: the refresh's
    /// post-download hook then transfers the blob to the other origins of its hash-ring location
    /// from goroutines the fetch's worker spawns.
    refreshed: VecDeque<Refreshed>,
}

/// A backend fetch that ended well: the blob, the worker goroutine that ran it, the context of
/// its `origin.blob_refresh` (else its `cache.write`), and when it ended.
#[derive(Clone, Debug)]
struct Refreshed {
    digest: String,
    worker: u64,
    ctx: Ctx,
    end_ns: u64,
}

/// A goroutine parent link unused for this long is forgotten (its goroutine has likely ended).
const PARENT_IDLE_NS: u64 = 60_000_000_000;
/// How long after a client request starts a matching server request may start and be linked.
const LINK_WINDOW_NS: u64 = 10_000_000_000;
/// Open client spans remembered per (method, path) for linking.
const MAX_OUTBOUND_PER_KEY: usize = 64;
/// Distinct (method, path) keys remembered for linking.
const MAX_OUTBOUND_KEYS: usize = 16_384;
/// An upload with no request for this long is abandoned (Kraken's own upload TTL is longer,
/// but a client that stopped for 5 minutes is not coming back in the same trace).
const UPLOAD_IDLE_NS: u64 = 300_000_000_000;
/// Uploads in progress per process.
const MAX_UPLOADS: usize = 4_096;
/// Committed uploads remembered per process for the backend writeback link, and for how long.
const MAX_STORED: usize = 1_024;
const STORED_WINDOW_NS: u64 = 600_000_000_000;

/// The part of a path both sides of a same-node link have: client paths are captured up to
/// `PATH_LEN` bytes, server paths (the request URI) further.
fn link_path(path: &str) -> &str {
    let n = tracer_common::event::PATH_LEN;
    path.get(..n).unwrap_or(path)
}

/// A client span open somewhere: (process, goroutine, start time).
type OutboundRef = (u32, u64, u64);

pub struct Correlator {
    processes: HashMap<u32, Process>,
    /// Open client spans by (method, path as sent), across processes.
    outbound: HashMap<(String, String), VecDeque<OutboundRef>>,
    clock: Clock,
    sampler: Sampler,
    limits: Limits,
    ids: IdGen,
    stats: CorrelateStats,
}

impl Correlator {
    pub fn new(clock: Clock, sampler: Sampler, limits: Limits) -> Correlator {
        Correlator {
            processes: HashMap::new(),
            outbound: HashMap::new(),
            clock,
            sampler,
            limits,
            ids: IdGen::new(),
            stats: CorrelateStats::default(),
        }
    }

    pub fn stats(&self) -> CorrelateStats {
        self.stats
    }

    /// How full the in-flight maps are (self-metrics).
    pub fn sizes(&self) -> MapSizes {
        MapSizes {
            open_spans: self.open_spans(),
            goroutine_parents: self.processes.values().map(|p| p.parents.len()).sum(),
            outbound_links: self.outbound.values().map(VecDeque::len).sum(),
        }
    }

    /// Open spans over all processes (self-metrics).
    pub fn open_spans(&self) -> usize {
        self.processes
            .values()
            .map(|p| {
                p.servers.len()
                    + p.clients.len()
                    + p.internal.len()
                    + p.refreshes.len()
                    + p.uploads.len()
                    + p.replicating.len()
            })
            .sum()
    }

    pub fn register(&mut self, pid: u32, resource: Arc<ProcessResource>, profile: Profile) {
        self.processes.insert(
            pid,
            Process {
                resource,
                profile,
                servers: HashMap::new(),
                clients: HashMap::new(),
                parents: HashMap::new(),
                announcing: HashMap::new(),
                internal: HashMap::new(),
                refreshes: HashMap::new(),
                uploads: HashMap::new(),
                pending_uploads: VecDeque::new(),
                stored: VecDeque::new(),
                replicating: HashMap::new(),
                tag_puts: VecDeque::new(),
                refreshed: VecDeque::new(),
            },
        );
    }

    /// Forgets a process (it exited); its open spans are counted as expired.
    pub fn forget(&mut self, pid: u32) {
        if let Some(p) = self.processes.remove(&pid) {
            self.stats.expired += (p.servers.len()
                + p.clients.len()
                + p.internal.len()
                + p.refreshes.len()
                + p.uploads.len()
                + p.replicating.len()) as u64;
        }
    }

    /// Feeds one event; finished spans go to `out`.
    pub fn push(&mut self, ev: &Event, out: &mut impl FnMut(SpanRecord)) {
        let hdr = ev.header();
        self.clock.refresh_if_due(hdr.ktime_ns);
        if !self.processes.contains_key(&hdr.tgid) {
            self.stats.unknown_process += 1;
            return;
        }
        let remote = match ev {
            Event::HttpServe(e) => {
                self.take_outbound(hdr.tgid, &e.method.text, e.path(), hdr.ktime_ns)
            }
            Event::HttpClient(e) => {
                self.remember_outbound(hdr.tgid, e);
                None
            }
            _ => None,
        };
        let Some(proc_) = self.processes.get_mut(&hdr.tgid) else {
            return;
        };
        let cx = Cx {
            ids: &mut self.ids,
            stats: &mut self.stats,
            sampler: &self.sampler,
            offset_ns: self.clock.offset_ns(),
            limits: &self.limits,
        };
        match ev {
            Event::HttpServe(e) => server_start(proc_, cx, e, remote),
            Event::HttpServeEnd(e) => server_end(proc_, cx, e, out),
            Event::HttpClient(e) => client_start(proc_, cx, e),
            Event::HttpClientEnd(e) => client_end(proc_, cx, e, out),
            Event::Kraken(e) => kraken_event(proc_, cx, e, out),
        }
    }

    fn remember_outbound(&mut self, tgid: u32, e: &HttpClient) {
        let key = (e.method.text.clone(), link_path(&e.path.text).to_owned());
        if !self.outbound.contains_key(&key) && self.outbound.len() >= MAX_OUTBOUND_KEYS {
            // Bounded: forget all pending links rather than track ages per key.
            self.outbound.clear();
            self.stats.evicted += 1;
        }
        let q = self.outbound.entry(key).or_default();
        if q.len() >= MAX_OUTBOUND_PER_KEY {
            q.pop_front();
        }
        q.push_back((tgid, e.hdr.goid, e.hdr.ktime_ns));
    }

    /// The context of the oldest client span, open in another process, that sent this request
    /// shortly before; it is consumed (one client request, one server request).
    fn take_outbound(
        &mut self,
        tgid: u32,
        method: &str,
        path: &str,
        start_ns: u64,
    ) -> Option<(Ctx, Option<String>)> {
        let key = (method.to_owned(), link_path(path).to_owned());
        let q = self.outbound.get_mut(&key)?;
        let mut found = None;
        let mut i = 0;
        while i < q.len() {
            let Some(&(ctgid, goid, cstart)) = q.get(i) else {
                break;
            };
            let open = self
                .processes
                .get(&ctgid)
                .and_then(|p| p.clients.get(&goid))
                .filter(|c| c.start_ns == cstart)
                .map(|c| (c.ctx, c.digest.clone()));
            let Some(ctx) = open else {
                q.remove(i); // ended, evicted or expired: stale
                continue;
            };
            if ctgid != tgid && cstart <= start_ns && start_ns - cstart <= LINK_WINDOW_NS {
                found = Some(ctx);
                q.remove(i);
                break;
            }
            i += 1;
        }
        if q.is_empty() {
            self.outbound.remove(&key);
        }
        if found.is_some() {
            self.stats.linked_across_processes += 1;
        }
        found
    }

    /// Expires spans open for longer than `max_age` (their end event was lost).
    pub fn sweep(&mut self, mono_now: u64) {
        let max_age = u64::try_from(self.limits.max_age.as_nanos()).unwrap_or(u64::MAX);
        let cutoff = mono_now.saturating_sub(max_age);
        for p in self.processes.values_mut() {
            for map in [
                &mut p.servers,
                &mut p.clients,
                &mut p.internal,
                &mut p.replicating,
            ] {
                let before = map.len();
                map.retain(|_, o| o.start_ns >= cutoff);
                self.stats.expired += (before - map.len()) as u64;
            }
            let before = p.refreshes.len();
            p.refreshes.retain(|_, o| o.start_ns >= cutoff);
            self.stats.expired += (before - p.refreshes.len()) as u64;
            let idle_cutoff = mono_now.saturating_sub(UPLOAD_IDLE_NS);
            let before = p.uploads.len();
            p.uploads.retain(|_, u| u.last_ns >= idle_cutoff);
            self.stats.kraken_uploads_abandoned += (before - p.uploads.len()) as u64;
            let uploads = &p.uploads;
            p.pending_uploads.retain(|(_, k)| uploads.contains_key(k));
            let stored_cutoff = mono_now.saturating_sub(STORED_WINDOW_NS);
            p.stored.retain(|(_, _, end)| *end >= stored_cutoff);
            p.refreshed.retain(|r| r.end_ns >= stored_cutoff);
            p.tag_puts.retain(|(_, _, start)| *start >= stored_cutoff);
            // Goroutines end without telling us: a parent link unused for a while is dropped
            // (a later call on that goroutine carries its parent again).
            let parents_cutoff = mono_now.saturating_sub(PARENT_IDLE_NS);
            p.parents.retain(|_, (_, used)| *used >= parents_cutoff);
        }
        // Client requests no server request claimed within the link window never will be.
        let link_cutoff = mono_now.saturating_sub(LINK_WINDOW_NS);
        self.outbound.retain(|_, q| {
            q.retain(|&(_, _, start)| start >= link_cutoff);
            !q.is_empty()
        });
    }
}

/// What the per-event functions need besides the process state.
struct Cx<'a> {
    ids: &'a mut IdGen,
    stats: &'a mut CorrelateStats,
    sampler: &'a Sampler,
    offset_ns: i128,
    limits: &'a Limits,
}

impl Cx<'_> {
    /// A new trace, sampled by the rules for its first request's path (`None`: not a request).
    fn root(&mut self, path: Option<&str>, client: bool) -> Ctx {
        let trace_id = self.ids.trace_id();
        Ctx {
            trace_id,
            span_id: self.ids.span_id(),
            sampled: self.sampler.keep_root(path, client, &trace_id),
            offset_ns: self.offset_ns,
        }
    }

    /// A span continuing a trace started on another node: its id and sampling decision come
    /// from the request's `traceparent` (parent-based sampling).
    fn remote_child(&mut self, tp: &TraceParent) -> Ctx {
        self.stats.from_traceparent += 1;
        Ctx {
            trace_id: tp.trace_id,
            span_id: self.ids.span_id(),
            sampled: tp.sampled(),
            offset_ns: self.offset_ns,
        }
    }

    fn child(&mut self, parent: &Ctx) -> Ctx {
        Ctx {
            span_id: self.ids.span_id(),
            ..*parent
        }
    }

    /// The span id the kernel gave (it may have sent it on in a `traceparent`), else a new one.
    fn span_id_of(&mut self, k: Option<&KernelIds>) -> [u8; 8] {
        k.map_or_else(|| self.ids.span_id(), |k| k.span_id)
    }

    /// A new trace with the kernel's ids when it gave some (its trace id may be on the wire
    /// already); the sampling decision is the same function of the trace id on both sides.
    fn root_k(&mut self, k: Option<&KernelIds>, path: Option<&str>, client: bool) -> Ctx {
        let Some(k) = k else {
            return self.root(path, client);
        };
        Ctx {
            trace_id: k.trace_id,
            span_id: k.span_id,
            sampled: self.sampler.keep_root(path, client, &k.trace_id),
            offset_ns: self.offset_ns,
        }
    }

    /// The kernel's own view: its trace id, span id and sampling flag (a parent it knew).
    fn kernel_ctx(&mut self, k: &KernelIds) -> Ctx {
        Ctx {
            trace_id: k.trace_id,
            span_id: k.span_id,
            sampled: k.sampled,
            offset_ns: self.offset_ns,
        }
    }

    fn insert(&mut self, map: &mut HashMap<u64, Open>, goid: u64, open: Open) {
        if map.len() >= self.limits.max_open && !map.contains_key(&goid) {
            // Full: drop the oldest open span (its end is the likeliest to have been lost).
            if let Some(oldest) = map.iter().min_by_key(|(_, o)| o.start_ns).map(|(k, _)| *k) {
                map.remove(&oldest);
                self.stats.evicted += 1;
            }
        }
        if map.insert(goid, open).is_some() {
            self.stats.replaced_open += 1;
        }
    }

    fn finish(
        &mut self,
        p: &Process,
        o: Open,
        end_ns: u64,
        status: SpanStatus,
        kind: SpanKind,
    ) -> SpanRecord {
        self.stats.spans += 1;
        let mut rec = SpanRecord {
            trace_id: o.ctx.trace_id,
            span_id: o.ctx.span_id,
            parent_span_id: o.parent,
            sampled: o.ctx.sampled,
            name: o.name,
            kind,
            start: to_wall(o.start_ns, o.ctx.offset_ns),
            end: to_wall(end_ns.max(o.start_ns), o.ctx.offset_ns),
            attributes: o.attributes,
            status,
            resource: Arc::clone(&p.resource),
        };
        if p.profile == Profile::Kraken {
            crate::kraken::enrich(&mut rec);
        }
        rec
    }
}

fn server_start(
    p: &mut Process,
    mut cx: Cx<'_>,
    e: &HttpServe,
    remote: Option<(Ctx, Option<String>)>,
) {
    let mut attributes: Vec<(&'static str, AttrValue)> = vec![
        ("http.request.method", e.method.text.clone().into()),
        ("url.path", e.path().into()),
        ("url.scheme", "http".into()),
    ];
    // Only there with --capture-query: by default the kernel never copies the query.
    if let Some((_, query)) = e.uri.text.split_once('?') {
        attributes.push(("url.query", query.into()));
    }
    if let Some(n) = e.content_length {
        attributes.push(("http.request.body.size", n.into()));
    }
    if let Some((host, port)) = split_host_port(&e.host.text) {
        attributes.push(("server.address", host.into()));
        if let Some(port) = port {
            attributes.push(("server.port", port.into()));
        }
    }
    // Behind a proxy on a unix socket (nginx in front of Kraken) Go reports the peer as "@":
    // there is no client address to give, only the transport.
    if e.remote_addr.text == "@" || e.remote_addr.text.starts_with('/') {
        attributes.push(("network.transport", "unix".into()));
    } else if let Some((addr, port)) = split_host_port(&e.remote_addr.text) {
        attributes.push(("client.address", addr.into()));
        if let Some(port) = port {
            attributes.push(("client.port", port.into()));
        }
    }
    let (remote, remote_digest) = remote.map_or((None, None), |(c, d)| (Some(c), d));
    // Parent: a client span of another process this tracer saw send the request, else the
    // caller named by the request's traceparent, else none (a new trace).
    let k = e.ids.as_ref();
    let (ctx, parent) = match (remote, TraceParent::parse(e.traceparent.text.as_bytes())) {
        (Some(client), _) => {
            let span_id = cx.span_id_of(k);
            (Ctx { span_id, ..client }, Some(client.span_id))
        }
        (None, Some(tp)) => {
            let mut c = cx.remote_child(&tp);
            c.span_id = cx.span_id_of(k);
            (c, Some(tp.parent_id))
        }
        (None, None) => (cx.root_k(k, Some(e.path()), false), None),
    };
    let mut digest = (p.profile == Profile::Kraken)
        .then(|| crate::kraken::digest_in_path(&e.method.text, e.path()))
        .flatten();
    if digest.is_none() && p.profile == Profile::Kraken {
        // The request doesn't name its blob (a tracker announce), but its caller's span did.
        if let Some(d) = remote_digest {
            attributes.push(("kraken.digest", d.clone().into()));
            digest = Some(d);
        }
    }
    if p.profile == Profile::Kraken
        && crate::kraken::is_tag_put(&e.method.text, e.path())
        && let Some(tag) = crate::kraken::tag_in_path(&e.method.text, e.path())
    {
        if p.tag_puts.len() >= MAX_STORED {
            p.tag_puts.pop_front();
        }
        p.tag_puts.push_back((tag, ctx, e.hdr.ktime_ns));
    }
    let upload = (p.profile == Profile::Kraken)
        .then(|| crate::kraken::upload_request(&e.method.text, e.path()))
        .flatten();
    let (ctx, parent, upload) = match upload {
        Some(u) => join_upload(p, &mut cx, u, ctx, parent, e),
        None => (ctx, parent, None),
    };
    let mut ctx = ctx;
    if parent.is_none() && p.profile == Profile::Kraken && crate::kraken::is_noise(e.path()) {
        ctx.sampled = false;
        cx.stats.kraken_noise += 1;
    }
    let open = Open {
        ctx,
        parent,
        start_ns: e.hdr.ktime_ns,
        name: e.method.text.clone(),
        attributes,
        digest,
        completed_ns: None,
        tcp: e.tcp,
        upload,
    };
    cx.insert(&mut p.servers, e.hdr.goid, open);
}

/// Makes a Kraken upload request a child of its upload's span: the start request opens the
/// upload (in the place the request would have had: under the linked client span, or a new
/// trace), the chunks and the commit join it. Returns the request's context, parent and upload.
fn join_upload(
    p: &mut Process,
    cx: &mut Cx<'_>,
    u: crate::kraken::UploadRequest,
    ctx: Ctx,
    parent: Option<[u8; 8]>,
    e: &HttpServe,
) -> (Ctx, Option<[u8; 8]>, Option<(String, UploadStep)>) {
    let (now, goid) = (e.hdr.ktime_ns, e.hdr.goid);
    // The blob bytes this request carries: a chunk's body; on the registry API (the proxy) any
    // request's body is blob data (a monolithic POST, a last chunk with the commit), while the
    // origin's commit carries no data (a duplicate commit's body is JSON).
    let data =
        (u.step == UploadStep::Chunk || u.span_name == "proxy.upload").then_some(e.content_length);
    let add = |size: Option<i64>| match data {
        None => size,
        Some(body) => size.zip(body).map(|(s, b)| s.saturating_add(b)),
    };
    let by_digest = u.digest.as_ref().map(|d| format!("{}|{d}", u.span_name));
    if u.step == UploadStep::Start {
        let key = by_digest.unwrap_or_else(|| format!("{}|pending|{now}|{goid}", u.span_name));
        let mut attributes: Vec<(&'static str, AttrValue)> = Vec::new();
        if !u.namespace.is_empty() {
            attributes.push(("kraken.namespace", u.namespace.clone().into()));
        }
        if u.span_name == "proxy.upload" {
            attributes.push(("kraken.repo", u.namespace.clone().into()));
        }
        if let Some(d) = &u.digest {
            attributes.push(("kraken.digest", d.clone().into()));
        }
        if let Some(r) = u.replicate {
            attributes.push(("kraken.replicate", r.into()));
        }
        let open = Open {
            ctx,
            parent,
            start_ns: now,
            name: u.span_name.to_owned(),
            attributes,
            digest: u.digest.clone(),
            completed_ns: None,
            tcp: None,
            upload: None,
        };
        if p.uploads.len() >= MAX_UPLOADS && !p.uploads.contains_key(&key) {
            let oldest = p
                .uploads
                .iter()
                .min_by_key(|(_, u)| u.last_ns)
                .map(|(k, _)| k.clone());
            if let Some(k) = oldest {
                p.uploads.remove(&k);
                cx.stats.kraken_uploads_abandoned += 1;
            }
        }
        if u.digest.is_none() {
            if p.pending_uploads.len() >= MAX_UPLOADS {
                p.pending_uploads.pop_front();
            }
            p.pending_uploads
                .push_back((u.namespace.clone(), key.clone()));
        }
        let upload = Upload {
            open,
            chunks: 0,
            size: add(Some(0)),
            last_ns: now,
        };
        if p.uploads.insert(key.clone(), upload).is_some() {
            // Started again before its commit (a client retry): the old one was abandoned.
            cx.stats.kraken_uploads_abandoned += 1;
        }
        let child = cx.child(&ctx);
        return (child, Some(ctx.span_id), Some((key, UploadStep::Start)));
    }
    // A chunk or the commit: find the upload by digest (origin) or by id (proxy); a proxy
    // upload's first request naming the id claims the oldest started upload of its repository.
    let key = match (by_digest, &u.upload_id) {
        (Some(k), _) => k,
        (None, Some(id)) => format!("{}|{id}", u.span_name),
        (None, None) => return (ctx, parent, None),
    };
    if !p.uploads.contains_key(&key) {
        let claimed = p
            .pending_uploads
            .iter()
            .position(|(ns, k)| *ns == u.namespace && k.starts_with(u.span_name))
            .and_then(|i| p.pending_uploads.remove(i));
        let Some(up) = claimed.and_then(|(_, k)| p.uploads.remove(&k)) else {
            return (ctx, parent, None); // started before the tracer, or expired
        };
        p.uploads.insert(key.clone(), up);
    }
    let Some(up) = p.uploads.get_mut(&key) else {
        return (ctx, parent, None);
    };
    if let Some(id) = &u.upload_id
        && up.open.attr_missing("kraken.upload_id")
    {
        up.open
            .attributes
            .push(("kraken.upload_id", id.clone().into()));
    }
    if u.step == UploadStep::Chunk {
        up.chunks += 1;
    }
    up.size = add(up.size);
    if u.duplicate {
        // Another origin pushed this upload here as its replica.
        "origin.receive_replica".clone_into(&mut up.open.name);
        for (k, v) in &mut up.open.attributes {
            if *k == "kraken.replicate" {
                *v = false.into();
            }
        }
    }
    up.last_ns = now;
    let upctx = up.open.ctx;
    (cx.child(&upctx), Some(upctx.span_id), Some((key, u.step)))
}

/// Ends an upload with its commit request (`status`: the commit's HTTP status).
fn finish_upload(
    p: &mut Process,
    cx: &mut Cx<'_>,
    key: &str,
    end_ns: u64,
    status: i64,
    out: &mut impl FnMut(SpanRecord),
) {
    let Some(mut up) = p.uploads.remove(key) else {
        return;
    };
    cx.stats.kraken_uploads += 1;
    up.open.attributes.push(("kraken.chunks", up.chunks.into()));
    if let Some(size) = up.size {
        up.open.attributes.push(("kraken.size", size.into()));
    }
    let ms = end_ns.saturating_sub(up.open.start_ns) / 1_000_000;
    up.open.attributes.push((
        "kraken.duration_ms",
        i64::try_from(ms).unwrap_or(i64::MAX).into(),
    ));
    // 409: the blob was there already (Kraken answers a duplicate upload so): not an error.
    let span_status = if status >= 400 && status != 409 {
        SpanStatus::Error(format!("upload commit HTTP {status}"))
    } else {
        SpanStatus::Unset
    };
    if span_status == SpanStatus::Unset
        && let Some(d) = &up.open.digest
    {
        if p.stored.len() >= MAX_STORED {
            p.stored.pop_front();
        }
        p.stored.push_back((d.clone(), up.open.ctx, end_ns));
    }
    let rec = cx.finish(p, up.open, end_ns, span_status, SpanKind::Internal);
    out(rec);
}

fn server_end(p: &mut Process, mut cx: Cx<'_>, e: &HttpServeEnd, out: &mut impl FnMut(SpanRecord)) {
    let Some(mut o) = p.servers.remove(&e.hdr.goid) else {
        cx.stats.unmatched_ends += 1;
        return;
    };
    // Go sends 200 when the handler never called WriteHeader.
    let status = if e.status == 0 { 200 } else { e.status };
    o.attributes
        .push(("http.response.status_code", status.into()));
    o.attributes
        .push(("http.response.body.size", e.written.max(0).into()));
    // Process-wide TCP bytes while the span was open (socket probes on at both ends).
    if let Some(tcp) = crate::socket::span_attributes(o.tcp, e.tcp) {
        o.attributes.extend(tcp);
    }
    if let Some(route) = route_of(&e.pattern.text) {
        o.name = format!("{} {route}", o.name);
        o.attributes.push(("http.route", route.into()));
    }
    let span_status = if status >= 500 {
        SpanStatus::Error(format!("HTTP {status}"))
    } else {
        SpanStatus::Unset
    };
    // A client call still open on the handler's own goroutine lost its end (the goroutine is
    // sequential: it would have returned first, e.g. a dial error before any response): close it
    // here. Calls on other goroutines (spawned, or linked by Kraken identity) may outlive the
    // request legitimately; they end on their own, or expire.
    let span_id = o.ctx.span_id;
    let orphans: Vec<u64> = p
        .clients
        .iter()
        .filter(|(g, c)| **g == e.hdr.goid && c.parent == Some(span_id))
        .map(|(g, _)| *g)
        .collect();
    for g in orphans {
        if let Some(mut c) = p.clients.remove(&g) {
            c.attributes.push(("kraken_tracer.incomplete", true.into()));
            let rec = cx.finish(
                p,
                c,
                e.hdr.ktime_ns,
                SpanStatus::Error("no response observed".into()),
                SpanKind::Client,
            );
            out(rec);
        }
    }
    let (start_ns, completed_ns, offset_ns) = (o.start_ns, o.completed_ns, o.ctx.offset_ns);
    let commit = match o.upload.take() {
        Some((key, UploadStep::Commit)) => Some(key),
        _ => None,
    };
    if commit.is_some() {
        // A push to a replica that never reached its commit (an error on the way) ends with it.
        let left: Vec<u64> = p
            .replicating
            .iter()
            .filter(|(_, r)| r.parent == Some(span_id))
            .map(|(g, _)| *g)
            .collect();
        for g in left {
            if let Some(r) = p.replicating.remove(&g) {
                let rec = cx.finish(
                    p,
                    r,
                    e.hdr.ktime_ns,
                    SpanStatus::Error("replica not committed".into()),
                    SpanKind::Internal,
                );
                out(rec);
            }
        }
    }
    let rec = cx.finish(p, o, e.hdr.ktime_ns, span_status, SpanKind::Server);
    if let Some(key) = commit {
        out(rec);
        finish_upload(p, &mut cx, &key, e.hdr.ktime_ns, status, out);
        return;
    }
    if rec.name == "agent.download_blob" && status == 200 {
        out(download_complete(
            &mut cx,
            &rec,
            start_ns,
            completed_ns,
            offset_ns,
            e.written,
        ));
    }
    out(rec);
}

/// `agent.download_blob.complete`: the blob is in the agent's cache. From the download's start to
/// the moment the P2P download moved it into the cache (zero long when it was there already);
/// size is the bytes served.
fn download_complete(
    cx: &mut Cx<'_>,
    download: &SpanRecord,
    start_ns: u64,
    completed_ns: Option<u64>,
    offset_ns: i128,
    size: i64,
) -> SpanRecord {
    cx.stats.spans += 1;
    let done = completed_ns.unwrap_or(start_ns).max(start_ns);
    let mut attributes: Vec<(&'static str, AttrValue)> = download
        .attributes
        .iter()
        .filter(|(k, _)| k.starts_with("kraken.") && !k.starts_with("kraken.process."))
        .cloned()
        .collect();
    attributes.push(("kraken.size", size.max(0).into()));
    attributes.push((
        "kraken.duration_ms",
        i64::try_from((done - start_ns) / 1_000_000)
            .unwrap_or(i64::MAX)
            .into(),
    ));
    attributes.push(("kraken.cache_hit", completed_ns.is_none().into()));
    SpanRecord {
        trace_id: download.trace_id,
        span_id: cx.ids.span_id(),
        parent_span_id: Some(download.span_id),
        sampled: download.sampled,
        name: "agent.download_blob.complete".into(),
        kind: SpanKind::Internal,
        start: download.start,
        end: to_wall(done, offset_ns),
        attributes,
        status: SpanStatus::Unset,
        resource: Arc::clone(&download.resource),
    }
}

/// Depth of goroutine ancestry searched for an open server span.
const MAX_ANCESTRY: usize = 8;

fn client_start(p: &mut Process, mut cx: Cx<'_>, e: &HttpClient) {
    let goid = e.hdr.goid;
    if e.parent_goid != 0 {
        if p.parents.len() >= cx.limits.max_parents && !p.parents.contains_key(&goid) {
            // Bounded: forget everything rather than track ages; links are re-learned.
            p.parents.clear();
            cx.stats.evicted += 1;
        }
        p.parents.insert(goid, (e.parent_goid, e.hdr.ktime_ns));
    }
    // The innermost open span on this goroutine wins: a server span, else an internal span
    // (Kraken: the origin's cache write streams the backend download); only then the spans of
    // the goroutines that started this one.
    // A path cut at the capture limit still names its step when the route matches (the cut
    // falls in the upload id after a long digest): upload routes end in `/uploads[/{uid}]`.
    let upload_req = (p.profile == Profile::Kraken)
        .then(|| crate::kraken::upload_request(&e.method.text, &e.path.text))
        .flatten();
    let upload_step = upload_req.as_ref().map(|u| u.step);
    let replicate = match (p.replicating.get(&goid), &upload_req) {
        (Some(r), _) => Some(r.ctx),
        (None, Some(u))
            if u.step == UploadStep::Start && u.span_name == "origin.receive_replica" =>
        {
            u.digest
                .as_deref()
                .and_then(|d| start_transfer(p, &mut cx, e, d))
        }
        (None, Some(u)) if u.step == UploadStep::Start => start_replicate(p, &mut cx, e),
        (None, _) => start_tag_replication(p, &mut cx, e),
    };
    let mut parent = replicate.or_else(|| {
        p.servers
            .get(&goid)
            .or_else(|| p.internal.get(&goid))
            .map(|o| o.ctx)
    });
    let mut g = goid;
    for _ in 0..MAX_ANCESTRY {
        if parent.is_some() {
            break;
        }
        match p.parents.get_mut(&g) {
            Some((pg, used)) if *pg != 0 && *pg != g => {
                *used = e.hdr.ktime_ns;
                g = *pg;
            }
            _ => break,
        }
        parent = p.servers.get(&g).map(|s| s.ctx);
    }
    let announced = p.announcing.remove(&goid);
    if parent.is_none() && p.profile == Profile::Kraken {
        // Kraken announces run on scheduler goroutines, not the handler's: link them to the
        // download of the same blob, by digest.
        parent = announced.as_deref().and_then(|d| {
            p.servers
                .values()
                .filter(|s| s.digest.as_deref() == Some(d))
                .max_by_key(|s| s.start_ns)
                .map(|s| s.ctx)
        });
        if parent.is_some() {
            cx.stats.kraken_announces_linked += 1;
        }
    }
    if parent.is_none() && p.profile == Profile::Kraken && !e.path.truncated {
        // The origin's writeback to the backend runs on a persisted-retry worker, not under
        // the upload's requests: link it to the upload of the same blob, open or just committed.
        if let Some(d) = crate::kraken::backend_blob(&e.method.text, &e.path.text) {
            parent = stored_upload(p, &d, e.hdr.ktime_ns);
            if parent.is_some() {
                cx.stats.kraken_backend_uploads_linked += 1;
            }
        }
    }
    if p.profile == Profile::Kraken && !e.path.truncated {
        learn_upload_digest(p, goid, &e.method.text, &e.path.text);
    }
    let orphan_announce = parent.is_none()
        && p.profile == Profile::Kraken
        && crate::kraken::is_announce(&e.path.text);
    let k = e.ids.as_ref();
    let (mut ctx, parent_id) = match (k, parent) {
        // The application sent its own traceparent: the callee continues that trace, so does
        // this span.
        (Some(k), _) if k.remote_parent && k.parent_span_id.is_some() => {
            (cx.kernel_ctx(k), k.parent_span_id)
        }
        (_, Some(pc)) => {
            let span_id = cx.span_id_of(k);
            (Ctx { span_id, ..pc }, Some(pc.span_id))
        }
        // A parent the kernel knew but this correlator did not (e.g. its start was lost).
        (Some(k), None) if k.parent_span_id.is_some() => (cx.kernel_ctx(k), k.parent_span_id),
        (k, None) => (cx.root_k(k, Some(&e.path.text), true), None),
    };
    let mut parent_id = parent_id;
    if orphan_announce {
        // Periodic re-announces of finished torrents: noise, not a root trace per 3 s (the
        // kernel sent them on unsampled too; the parent it made up for them is no span).
        parent_id = None;
        ctx.sampled = false;
        cx.stats.kraken_announces_unlinked += 1;
    }
    let digest = if p.profile == Profile::Kraken {
        announced
    } else {
        None
    };
    let (host, port) = split_host_port(&e.host.text).unwrap_or((e.host.text.as_str(), None));
    let port = port.or(match e.scheme.text.as_str() {
        "https" => Some(443),
        "http" => Some(80),
        _ => None,
    });
    let mut attributes: Vec<(&'static str, AttrValue)> = vec![
        ("http.request.method", e.method.text.clone().into()),
        (
            "url.full",
            format!("{}://{}{}", e.scheme.text, e.host.text, e.path.text).into(),
        ),
        ("url.scheme", e.scheme.text.clone().into()),
        ("server.address", host.into()),
    ];
    if let Some(port) = port {
        attributes.push(("server.port", port.into()));
    }
    if let Some(d) = &digest {
        attributes.push(("kraken.digest", d.clone().into()));
    }
    let open = Open {
        ctx,
        parent: parent_id,
        start_ns: e.hdr.ktime_ns,
        name: e.method.text.clone(),
        attributes,
        digest,
        completed_ns: None,
        tcp: None,
        upload: upload_step.map(|s| (String::new(), s)),
    };
    cx.insert(&mut p.clients, goid, open);
}

/// Kraken build-index: a call about a tag from a goroutine with no traced parent (the tag
/// replication executor runs on a persisted-retry worker) joins the recent put of that tag:
/// `build_index.replicate_tag` opens there, and the worker's calls (remote build-index, the
/// origin's `replicateToRemote` per blob, the remote tag put) become its children.
fn start_tag_replication(p: &mut Process, cx: &mut Cx<'_>, e: &HttpClient) -> Option<Ctx> {
    if p.profile != Profile::Kraken || e.path.truncated {
        return None;
    }
    let tag = crate::kraken::tag_in_path(&e.method.text, &e.path.text)?;
    let goid = e.hdr.goid;
    if p.internal.contains_key(&goid) {
        return None;
    }
    // Only where goroutine ancestry finds no request: a handler's own calls stay under it.
    let mut g = goid;
    for _ in 0..MAX_ANCESTRY {
        if p.servers.contains_key(&g) {
            return None;
        }
        match p.parents.get(&g) {
            Some((pg, _)) if *pg != 0 && *pg != g => g = *pg,
            _ => break,
        }
    }
    let now = e.hdr.ktime_ns;
    let (_, put, _) = p
        .tag_puts
        .iter()
        .rev()
        .find(|(t, _, start)| *t == tag && now.saturating_sub(*start) <= STORED_WINDOW_NS)?;
    let put = *put;
    let ctx = cx.child(&put);
    let mut open = internal_open(
        ctx,
        Some(put.span_id),
        now,
        "build_index.replicate_tag",
        "",
        vec![("kraken.tag", tag.into())],
    );
    // Not about one blob: no digest attribute.
    open.attributes.retain(|(k, _)| *k != "kraken.digest");
    open.digest = None;
    cx.insert(&mut p.replicating, goid, open);
    Some(ctx)
}

/// Kraken origin: a client upload started under the commit of an upload (on the commit's
/// goroutine or one it spawned) pushes that blob to a replica origin: `origin.replicate` opens
/// as the commit's child, and the replica's requests become its children.
fn start_replicate(p: &mut Process, cx: &mut Cx<'_>, e: &HttpClient) -> Option<Ctx> {
    let mut g = e.hdr.goid;
    let mut commit = None;
    for _ in 0..MAX_ANCESTRY {
        if let Some(s) = p.servers.get(&g)
            && let Some((key, UploadStep::Commit)) = &s.upload
            && key.starts_with("origin.")
        {
            commit = s.digest.clone().map(|d| (s.ctx, d));
            break;
        }
        match p.parents.get(&g) {
            Some((pg, _)) if *pg != 0 && *pg != g => g = *pg,
            _ => break,
        }
    }
    let (cctx, digest) = commit?;
    let ctx = cx.child(&cctx);
    let open = internal_open(
        ctx,
        Some(cctx.span_id),
        e.hdr.ktime_ns,
        "origin.replicate",
        &digest,
        vec![("kraken.replica", e.host.text.clone().into())],
    );
    cx.insert(&mut p.replicating, e.hdr.goid, open);
    Some(ctx)
}

/// Kraken origin: a transfer (`POST /internal/blobs/<digest>/uploads`, `TransferBlob`) started
/// after a backend fetch of that blob pushes it to another origin of its hash-ring location (the
/// refresh's post-download hook, `localReplicationHook` → `applyToReplicas`, on goroutines the
/// fetch's worker spawns). `origin.replicate` opens as the child of that fetch's
/// `origin.blob_refresh`: found by goroutine ancestry (the worker that ran the fetch), else by
/// digest (the newest fetch of the blob, ended or still open); the transfer's requests become
/// its children.
fn start_transfer(p: &mut Process, cx: &mut Cx<'_>, e: &HttpClient, digest: &str) -> Option<Ctx> {
    let now = e.hdr.ktime_ns;
    let mut g = e.hdr.goid;
    let mut found = None;
    for _ in 0..MAX_ANCESTRY {
        found = p
            .refreshed
            .iter()
            .rev()
            .find(|r| r.worker == g)
            .map(|r| r.ctx);
        if found.is_some() {
            break;
        }
        match p.parents.get(&g) {
            Some((pg, _)) if *pg != 0 && *pg != g => g = *pg,
            _ => break,
        }
    }
    if found.is_some() {
        cx.stats.kraken_transfers_by_goroutine += 1;
    }
    let parent = found
        .or_else(|| {
            p.refreshed
                .iter()
                .rev()
                .find(|r| r.digest == digest && now.saturating_sub(r.end_ns) <= STORED_WINDOW_NS)
                .map(|r| r.ctx)
        })
        .or_else(|| p.refreshes.get(digest).map(|r| r.ctx))?;
    if found.is_none() {
        cx.stats.kraken_transfers_by_digest += 1;
    }
    let ctx = cx.child(&parent);
    let open = internal_open(
        ctx,
        Some(parent.span_id),
        now,
        "origin.replicate",
        digest,
        vec![("kraken.replica", e.host.text.clone().into())],
    );
    cx.insert(&mut p.replicating, e.hdr.goid, open);
    Some(ctx)
}

/// The context of the upload of blob `digest` on this process: open, else committed within
/// `STORED_WINDOW_NS` (newest first).
fn stored_upload(p: &Process, digest: &str, now: u64) -> Option<Ctx> {
    let open = p
        .uploads
        .values()
        .filter(|u| u.open.digest.as_deref() == Some(digest))
        .max_by_key(|u| u.open.start_ns)
        .map(|u| u.open.ctx);
    open.or_else(|| {
        p.stored
            .iter()
            .rev()
            .find(|(d, _, end)| d == digest && now.saturating_sub(*end) <= STORED_WINDOW_NS)
            .map(|(_, ctx, _)| *ctx)
    })
}

/// A proxy upload's requests don't name the blob (the digest is in the commit's query), but the
/// commit's calls to the origin do: the first one names the upload's digest.
fn learn_upload_digest(p: &mut Process, goid: u64, method: &str, path: &str) {
    let Some(key) = p
        .servers
        .get(&goid)
        .and_then(|s| s.upload.as_ref())
        .map(|(k, _)| k.clone())
    else {
        return;
    };
    let Some(up) = p.uploads.get_mut(&key) else {
        return;
    };
    if up.open.digest.is_some() {
        return;
    }
    if let Some(d) = crate::kraken::digest_in_path(method, path) {
        up.open.attributes.push(("kraken.digest", d.clone().into()));
        up.open.digest = Some(d);
    }
}

fn client_end(
    p: &mut Process,
    mut cx: Cx<'_>,
    e: &HttpClientEnd,
    out: &mut impl FnMut(SpanRecord),
) {
    let Some(mut o) = p.clients.remove(&e.hdr.goid) else {
        cx.stats.unmatched_ends += 1;
        return;
    };
    let status = if e.error {
        o.attributes.push(("error.type", "round_trip_error".into()));
        SpanStatus::Error("round trip failed".into())
    } else {
        o.attributes
            .push(("http.response.status_code", e.status.into()));
        if e.status >= 400 {
            SpanStatus::Error(format!("HTTP {}", e.status))
        } else {
            SpanStatus::Unset
        }
    };
    // The replica's commit, or the tag replication's final remote tag put, ends the push; so
    // does a failed step of a chunked upload (Kraken's uploader stops there; 409: the replica
    // has the blob already, which it counts as done).
    let failed_step = o.upload.is_some() && (e.error || e.status >= 400);
    let push_status = if failed_step && !e.error && e.status == 409 {
        SpanStatus::Unset
    } else {
        status.clone()
    };
    let commit = failed_step
        || matches!(o.upload, Some((_, UploadStep::Commit)))
        || (p.profile == Profile::Kraken
            && o.name == "PUT"
            && o.attributes.iter().any(|(k, v)| {
                *k == "url.full"
                    && matches!(v, AttrValue::Str(u) if crate::kraken::is_tag_put("PUT", path_of(u)))
            }));
    out(cx.finish(p, o, e.hdr.ktime_ns, status, SpanKind::Client));
    if commit && let Some(r) = p.replicating.remove(&e.hdr.goid) {
        // The replica's commit returned: the push to that replica is over.
        out(cx.finish(p, r, e.hdr.ktime_ns, push_status, SpanKind::Internal));
    }
}

fn kraken_event(
    p: &mut Process,
    mut cx: Cx<'_>,
    e: &KrakenEvent,
    out: &mut impl FnMut(SpanRecord),
) {
    let digest = format!("sha256:{}", e.digest_hex.text);
    let t = e.hdr.ktime_ns;
    match e.hdr.probe {
        // The announcer is about to announce this blob from this goroutine.
        ProbeId::KrakenAnnounce => {
            if p.announcing.len() >= cx.limits.max_parents
                && !p.announcing.contains_key(&e.hdr.goid)
            {
                p.announcing.clear();
            }
            p.announcing.insert(e.hdr.goid, digest);
        }
        // A P2P download completed into the agent's cache: note when, on its open download.
        ProbeId::KrakenCached => {
            for s in p
                .servers
                .values_mut()
                .filter(|s| s.digest.as_deref() == Some(digest.as_str()))
            {
                s.completed_ns.get_or_insert(t);
            }
        }
        // The origin starts a backend fetch (on the handler's goroutine; a repeat while one is
        // in flight is Kraken's dedup answering "pending": keep the first).
        ProbeId::KrakenRefresh => {
            if p.refreshes.contains_key(&digest) {
                return;
            }
            let parent = p.servers.get(&e.hdr.goid).map(|s| s.ctx);
            let (ctx, parent_id) = match parent {
                Some(pc) => (cx.child(&pc), Some(pc.span_id)),
                None => (cx.root(None, false), None),
            };
            let open = internal_open(ctx, parent_id, t, "origin.blob_refresh", &digest, vec![]);
            p.refreshes.insert(digest, open);
        }
        // A worker writes the fetched blob into the cache (the backend download streams inside).
        ProbeId::KrakenCacheWrite => {
            let parent = p.refreshes.get(&digest).map(|r| r.ctx);
            let (ctx, parent_id) = match parent {
                Some(pc) => (cx.child(&pc), Some(pc.span_id)),
                None => (cx.root(None, false), None),
            };
            let size = i64::try_from(e.value).unwrap_or(i64::MAX);
            let open = internal_open(
                ctx,
                parent_id,
                t,
                "cache.write",
                &digest,
                vec![
                    ("kraken.size", size.into()),
                    // The file the origin's CAStore writes, under its cache directory.
                    ("kraken.cache_file", e.digest_hex.text.clone().into()),
                ],
            );
            let goid = e.hdr.goid;
            cx.insert(&mut p.internal, goid, open);
        }
        // The worker's fetch returned: end its cache write and the refresh of that blob.
        ProbeId::KrakenRefreshDone => {
            let Some(write) = p.internal.remove(&e.hdr.goid) else {
                cx.stats.unmatched_ends += 1;
                return;
            };
            let status = if e.value == 0 {
                SpanStatus::Unset
            } else {
                SpanStatus::Error("backend fetch failed".into())
            };
            let refresh = write.digest.as_ref().and_then(|d| p.refreshes.remove(d));
            if e.value == 0
                && let Some(d) = &write.digest
            {
                // Next, on this worker: the post-download hook's transfers to the other origins.
                if p.refreshed.len() >= MAX_STORED {
                    p.refreshed.pop_front();
                }
                p.refreshed.push_back(Refreshed {
                    digest: d.clone(),
                    worker: e.hdr.goid,
                    ctx: refresh.as_ref().map_or(write.ctx, |r| r.ctx),
                    end_ns: t,
                });
            }
            out(cx.finish(p, write, t, status.clone(), SpanKind::Internal));
            if let Some(r) = refresh {
                out(cx.finish(p, r, t, status, SpanKind::Internal));
            }
        }
        _ => {}
    }
}

/// An open INTERNAL span of the Kraken layer.
fn internal_open(
    ctx: Ctx,
    parent: Option<[u8; 8]>,
    start_ns: u64,
    name: &str,
    digest: &str,
    mut attributes: Vec<(&'static str, AttrValue)>,
) -> Open {
    attributes.push(("kraken.digest", digest.into()));
    Open {
        ctx,
        parent,
        start_ns,
        name: name.to_owned(),
        attributes,
        digest: Some(digest.to_owned()),
        completed_ns: None,
        tcp: None,
        upload: None,
    }
}

impl Open {
    fn attr_missing(&self, key: &str) -> bool {
        !self.attributes.iter().any(|(k, _)| *k == key)
    }
}

/// The path of a `url.full` as the client span records it (`scheme://host/path`).
fn path_of(url: &str) -> &str {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    rest.find('/').map_or("/", |i| &rest[i..])
}

/// "GET /items/{id}" or "example.com/items/" (Go ServeMux patterns) → the path part.
fn route_of(pattern: &str) -> Option<&str> {
    let p = pattern.trim();
    if p.is_empty() {
        return None;
    }
    let p = p.split_once(' ').map_or(p, |(_, rest)| rest.trim());
    p.find('/').map(|i| &p[i..])
}

/// "host:port", "[v6]:port" or "host" → (host, port).
fn split_host_port(s: &str) -> Option<(&str, Option<i64>)> {
    if s.is_empty() {
        return None;
    }
    if let Some(rest) = s.strip_prefix('[') {
        let (host, after) = rest.split_once(']')?;
        let port = after.strip_prefix(':').and_then(|p| p.parse().ok());
        return Some((host, port));
    }
    match s.rsplit_once(':') {
        Some((h, p)) if !h.contains(':') => Some((h, p.parse().ok())),
        _ => Some((s, None)),
    }
}

/// Random, non-zero trace and span ids (xoshiro256++ seeded from the kernel).
struct IdGen {
    s: [u64; 4],
}

impl IdGen {
    fn new() -> IdGen {
        let mut seed = [0u8; 32];
        // SAFETY: seed is a valid buffer of its length.
        let n = unsafe { libc::getrandom(seed.as_mut_ptr().cast(), seed.len(), 0) };
        if n != 32 {
            let t = SystemTime::now()
                .duration_since(SystemTime::UNIX_EPOCH)
                .map_or(1, |d| d.as_nanos());
            seed[..16].copy_from_slice(&t.to_le_bytes());
            seed[16..20].copy_from_slice(&std::process::id().to_le_bytes());
        }
        let mut s = [0u64; 4];
        for (i, w) in s.iter_mut().enumerate() {
            let mut b = [0u8; 8];
            b.copy_from_slice(&seed[i * 8..i * 8 + 8]);
            *w = u64::from_le_bytes(b) | 1;
        }
        IdGen { s }
    }

    fn next(&mut self) -> u64 {
        let s = &mut self.s;
        let r = s[0].wrapping_add(s[3]).rotate_left(23).wrapping_add(s[0]);
        let t = s[1] << 17;
        s[2] ^= s[0];
        s[3] ^= s[1];
        s[1] ^= s[2];
        s[0] ^= s[3];
        s[2] ^= t;
        s[3] = s[3].rotate_left(45);
        r
    }

    fn span_id(&mut self) -> [u8; 8] {
        loop {
            let v = self.next();
            if v != 0 {
                return v.to_be_bytes();
            }
        }
    }

    fn trace_id(&mut self) -> [u8; 16] {
        let mut t = [0u8; 16];
        t[..8].copy_from_slice(&self.next().to_be_bytes());
        t[8..].copy_from_slice(&self.span_id());
        t
    }
}

#[cfg(test)]
mod tests {
    use tracer_common::probe::ProbeId;

    use super::*;
    use crate::events::{Captured, Header};

    fn cap(s: &str) -> Captured {
        Captured {
            text: s.into(),
            ..Captured::default()
        }
    }

    fn hdr(probe: ProbeId, goid: u64, t: u64) -> Header {
        Header {
            probe,
            tgid: 10,
            tid: 11,
            goroutine: 0xc000,
            goid,
            ktime_ns: t,
        }
    }

    fn serve(goid: u64, t: u64, uri: &str) -> Event {
        Event::HttpServe(HttpServe {
            hdr: hdr(ProbeId::HttpServe, goid, t),
            request: 1,
            method: cap("GET"),
            uri: cap(uri),
            host: cap("127.0.0.1:8080"),
            remote_addr: cap("127.0.0.1:5555"),
            traceparent: cap(""),
            content_length: Some(0),
            tcp: None,
            ids: None,
        })
    }

    fn serve_end(goid: u64, t: u64, status: i64, pattern: &str) -> Event {
        Event::HttpServeEnd(HttpServeEnd {
            hdr: hdr(ProbeId::HttpServeEnd, goid, t),
            request: 1,
            status,
            written: 6,
            pattern: cap(pattern),
            tcp: None,
        })
    }

    fn client(goid: u64, parent_goid: u64, t: u64) -> Event {
        Event::HttpClient(HttpClient {
            hdr: hdr(ProbeId::HttpClient, goid, t),
            request: 2,
            parent_goid,
            method: cap("POST"),
            scheme: cap("http"),
            host: cap("origin:15002"),
            path: cap("/x"),
            traceparent: cap(""),
            ids: None,
        })
    }

    fn client_end(goid: u64, t: u64, status: i64, error: bool) -> Event {
        Event::HttpClientEnd(HttpClientEnd {
            hdr: hdr(ProbeId::HttpClientEnd, goid, t),
            response: 3,
            status,
            error,
        })
    }

    fn correlator(ratio: f64, limits: Limits) -> Correlator {
        let mut c = Correlator::new(Clock::fixed(1_000_000_000), Sampler::ratio(ratio), limits);
        c.register(
            10,
            Arc::new(ProcessResource {
                service_name: "svc".into(),
                pid: 10,
                host_name: "h".into(),
                executable_path: "/x".into(),
                runtime_version: None,
            }),
            Profile::Generic,
        );
        c
    }

    fn run(c: &mut Correlator, events: &[Event]) -> Vec<SpanRecord> {
        let mut out = Vec::new();
        for e in events {
            c.push(e, &mut |s| out.push(s));
        }
        out
    }

    fn with_ids(mut ev: Event, ids: KernelIds, tp: &str) -> Event {
        match &mut ev {
            Event::HttpServe(e) => {
                e.ids = Some(ids);
                e.traceparent = cap(tp);
            }
            Event::HttpClient(e) => {
                e.ids = Some(ids);
                e.traceparent = cap(tp);
            }
            _ => {}
        }
        ev
    }

    fn kids(trace: u8, span: u8, parent: Option<u8>, remote: bool) -> KernelIds {
        KernelIds {
            trace_id: [trace; 16],
            span_id: [span; 8],
            parent_span_id: parent.map(|p| [p; 8]),
            remote_parent: remote,
            sampled: true,
            pending: !remote,
        }
    }

    #[test]
    fn spans_take_the_ids_the_kernel_gave_and_sent() {
        let mut c = correlator(1.0, Limits::default());
        let spans = run(
            &mut c,
            &[
                with_ids(serve(5, 100, "/a"), kids(0x11, 0x22, None, false), ""),
                with_ids(client(5, 0, 110), kids(0x11, 0x33, Some(0x22), false), ""),
                client_end(5, 120, 200, false),
                serve_end(5, 130, 200, ""),
            ],
        );
        assert_eq!(spans.len(), 2);
        let (cl, sv) = (&spans[0], &spans[1]);
        assert_eq!((sv.trace_id, sv.span_id), ([0x11; 16], [0x22; 8]));
        assert_eq!(sv.parent_span_id, None);
        // The id on the wire (the callee's parent) is the client span's own.
        assert_eq!((cl.trace_id, cl.span_id), ([0x11; 16], [0x33; 8]));
        assert_eq!(cl.parent_span_id, Some([0x22; 8]));
    }

    #[test]
    fn remote_parent_from_traceparent_keeps_the_kernel_span_id() {
        let mut c = correlator(0.0, Limits::default());
        let tp = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";
        let mut k = kids(0xaa, 0x44, Some(0xb7), true);
        k.trace_id = [
            0x0a, 0xf7, 0x65, 0x19, 0x16, 0xcd, 0x43, 0xdd, 0x84, 0x48, 0xeb, 0x21, 0x1c, 0x80,
            0x31, 0x9c,
        ];
        let spans = run(
            &mut c,
            &[
                with_ids(serve(5, 100, "/a"), k, tp),
                serve_end(5, 130, 200, ""),
            ],
        );
        assert_eq!(spans.len(), 1);
        assert_eq!(spans[0].trace_id, k.trace_id);
        assert_eq!(spans[0].span_id, [0x44; 8]);
        assert_eq!(
            spans[0].parent_span_id,
            Some([0xb7, 0xad, 0x6b, 0x71, 0x69, 0x20, 0x33, 0x31])
        );
        assert!(
            spans[0].sampled,
            "the caller's flag, not the local 0 % ratio"
        );
    }

    #[test]
    fn a_client_with_its_own_traceparent_joins_that_trace() {
        let mut c = correlator(1.0, Limits::default());
        let spans = run(
            &mut c,
            &[
                with_ids(serve(5, 100, "/a"), kids(0x11, 0x22, None, false), ""),
                // The application set its own header: the kernel registered nothing and
                // reports the header's trace; the callee will continue that one.
                with_ids(
                    client(5, 0, 110),
                    kids(0x77, 0x33, Some(0x88), true),
                    "00-...",
                ),
                client_end(5, 120, 200, false),
                serve_end(5, 130, 200, ""),
            ],
        );
        let cl = &spans[0];
        assert_eq!(cl.trace_id, [0x77; 16]);
        assert_eq!(cl.parent_span_id, Some([0x88; 8]));
    }

    #[test]
    fn a_parent_only_the_kernel_knew_is_used() {
        // The server start event was lost (e.g. ring buffer full): the kernel still linked the
        // client to it.
        let mut c = correlator(1.0, Limits::default());
        let spans = run(
            &mut c,
            &[
                with_ids(client(5, 0, 110), kids(0x11, 0x33, Some(0x22), false), ""),
                client_end(5, 120, 200, false),
            ],
        );
        assert_eq!(spans[0].trace_id, [0x11; 16]);
        assert_eq!(spans[0].parent_span_id, Some([0x22; 8]));
    }

    #[test]
    fn server_span_with_route_status_and_times() {
        let mut c = correlator(1.0, Limits::default());
        let spans = run(
            &mut c,
            &[
                serve(5, 100, "/items/7?q=secret"),
                serve_end(5, 350, 0, "GET /items/{id}"),
            ],
        );
        assert_eq!(spans.len(), 1);
        let s = &spans[0];
        assert_eq!(s.name, "GET /items/{id}");
        assert_eq!(s.kind, SpanKind::Server);
        assert_eq!(s.attr("url.path"), Some(&AttrValue::Str("/items/7".into())));
        assert_eq!(
            s.attr("http.route"),
            Some(&AttrValue::Str("/items/{id}".into()))
        );
        assert_eq!(
            s.attr("http.response.status_code"),
            Some(&AttrValue::Int(200))
        );
        assert_eq!(s.attr("server.port"), Some(&AttrValue::Int(8080)));
        assert_eq!(
            s.attr("client.address"),
            Some(&AttrValue::Str("127.0.0.1".into()))
        );
        assert_eq!(s.attr("http.request.body.size"), Some(&AttrValue::Int(0)));
        assert_eq!(
            s.end.duration_since(s.start).unwrap(),
            Duration::from_nanos(250)
        );
        assert_eq!(s.parent_span_id, None);
        // A query reaches user space only with --capture-query; then it is `url.query`, never
        // part of the path or the name.
        assert_eq!(
            s.attr("url.query"),
            Some(&AttrValue::Str("q=secret".into()))
        );
        assert!(!s.name.contains("secret"));
        let without = run(
            &mut c,
            &[
                serve(6, 400, "/items/8"),
                serve_end(6, 500, 0, "GET /items/{id}"),
            ],
        );
        assert_eq!(without[0].attr("url.query"), None);
    }

    #[test]
    fn server_span_gets_process_tcp_bytes_when_counted() {
        let with_tcp = |mut ev: Event, rx: u64, tx: u64| {
            let tcp = Some(TcpCounters {
                rx_bytes: rx,
                tx_bytes: tx,
            });
            match &mut ev {
                Event::HttpServe(e) => e.tcp = tcp,
                Event::HttpServeEnd(e) => e.tcp = tcp,
                _ => panic!("not a server event"),
            }
            ev
        };
        let mut c = correlator(1.0, Limits::default());
        let spans = run(
            &mut c,
            &[
                with_tcp(serve(5, 100, "/upload"), 1_000, 50),
                with_tcp(serve_end(5, 350, 0, ""), 5_096, 1_050),
            ],
        );
        let s = &spans[0];
        assert_eq!(
            s.attr(crate::socket::ATTR_BYTES_RECEIVED),
            Some(&AttrValue::Int(4_096))
        );
        assert_eq!(
            s.attr(crate::socket::ATTR_BYTES_SENT),
            Some(&AttrValue::Int(1_000))
        );
        // Socket probes off (no counters in the events): no attributes.
        let spans = run(&mut c, &[serve(6, 400, "/x"), serve_end(6, 500, 0, "")]);
        assert_eq!(spans[0].attr(crate::socket::ATTR_BYTES_RECEIVED), None);
        assert_eq!(spans[0].attr(crate::socket::ATTR_BYTES_SENT), None);
    }

    #[test]
    fn client_on_handler_goroutine_and_on_spawned_goroutine_are_children() {
        let mut c = correlator(1.0, Limits::default());
        let spans = run(
            &mut c,
            &[
                serve(5, 100, "/call"),
                client(5, 1, 110),
                client_end(5, 200, 204, false),
                client(9, 5, 210), // goroutine 9 was started by 5
                client_end(9, 300, 503, false),
                serve_end(5, 400, 500, ""),
            ],
        );
        assert_eq!(spans.len(), 3);
        let server = spans.iter().find(|s| s.kind == SpanKind::Server).unwrap();
        for cl in spans.iter().filter(|s| s.kind == SpanKind::Client) {
            assert_eq!(cl.trace_id, server.trace_id);
            assert_eq!(cl.parent_span_id, Some(server.span_id));
            assert!(
                cl.start >= server.start && cl.end <= server.end,
                "child outside parent"
            );
        }
        assert_eq!(server.status, SpanStatus::Error("HTTP 500".into()));
        let failed = spans
            .iter()
            .find(|s| s.attr("http.response.status_code") == Some(&AttrValue::Int(503)))
            .unwrap();
        assert!(matches!(failed.status, SpanStatus::Error(_)));
    }

    #[test]
    fn sweep_forgets_idle_parent_links_and_unclaimed_outbound_requests() {
        let mut c = correlator(1.0, Limits::default());
        run(&mut c, &[client(21, 20, 1_000)]);
        let s = c.sizes();
        assert_eq!((s.goroutine_parents, s.outbound_links), (1, 1));
        c.sweep(1_000 + 5_000_000_000);
        let s = c.sizes();
        assert_eq!(
            (s.goroutine_parents, s.outbound_links),
            (1, 1),
            "still fresh"
        );
        c.sweep(1_000 + PARENT_IDLE_NS + 1);
        let s = c.sizes();
        assert_eq!((s.goroutine_parents, s.outbound_links), (0, 0));
    }

    #[test]
    fn grandchild_goroutine_found_through_learned_parents() {
        let mut c = correlator(1.0, Limits::default());
        let spans = run(
            &mut c,
            &[
                serve(5, 100, "/"),
                client(9, 5, 110),
                client_end(9, 120, 200, false),
                client(12, 9, 130), // 12's parent is 9, whose parent is 5
                client_end(12, 140, 200, false),
                serve_end(5, 150, 200, ""),
            ],
        );
        let server = spans.iter().find(|s| s.kind == SpanKind::Server).unwrap();
        assert!(spans.iter().all(|s| s.trace_id == server.trace_id));
    }

    #[test]
    fn client_without_server_is_a_root_and_open_children_close_with_parent() {
        let mut c = correlator(1.0, Limits::default());
        let spans = run(&mut c, &[client(3, 1, 10), client_end(3, 20, 200, true)]);
        assert_eq!(spans[0].parent_span_id, None);
        assert_eq!(
            spans[0].attr("error.type"),
            Some(&AttrValue::Str("round_trip_error".into()))
        );

        let spans = run(
            &mut c,
            &[
                serve(5, 100, "/"),
                client(5, 1, 110),
                serve_end(5, 150, 200, ""),
            ],
        );
        assert_eq!(spans.len(), 2);
        assert_eq!(
            spans[0].attr("kraken_tracer.incomplete"),
            Some(&AttrValue::Bool(true))
        );
        assert_eq!(c.open_spans(), 0);
    }

    #[test]
    fn bounds_unmatched_and_expiry_are_counted() {
        let mut c = correlator(
            1.0,
            Limits {
                max_open: 2,
                max_parents: 4,
                max_age: Duration::from_nanos(1000),
            },
        );
        run(
            &mut c,
            &[serve(1, 10, "/"), serve(2, 20, "/"), serve(3, 30, "/")],
        );
        assert_eq!(c.stats().evicted, 1);
        assert_eq!(c.open_spans(), 2);
        run(&mut c, &[serve_end(99, 40, 200, "")]);
        assert_eq!(c.stats().unmatched_ends, 1);
        c.sweep(5_000);
        assert_eq!(c.stats().expired, 2);
        assert_eq!(c.open_spans(), 0);
        let mut other = Event::HttpServe(match serve(1, 1, "/") {
            Event::HttpServe(s) => s,
            _ => unreachable!(),
        });
        if let Event::HttpServe(s) = &mut other {
            s.hdr.tgid = 77;
        }
        run(&mut c, &[other]);
        assert_eq!(c.stats().unknown_process, 1);
    }

    #[test]
    fn unix_socket_peers_have_no_client_address() {
        let mut c = correlator(1.0, Limits::default());
        let mut ev = serve(5, 100, "/health");
        if let Event::HttpServe(s) = &mut ev {
            s.remote_addr = cap("@");
        }
        let spans = run(&mut c, &[ev, serve_end(5, 150, 200, "")]);
        assert_eq!(spans[0].attr("client.address"), None);
        assert_eq!(
            spans[0].attr("network.transport"),
            Some(&AttrValue::Str("unix".into()))
        );
    }

    #[test]
    fn kraken_profile_applies_only_to_kraken_processes() {
        let path = "/namespace/testfs/blobs/sha256:ab";
        let mut generic = correlator(1.0, Limits::default());
        let spans = run(&mut generic, &[serve(5, 1, path), serve_end(5, 2, 200, "")]);
        assert_eq!(spans[0].name, "GET");
        let mut kraken = correlator(1.0, Limits::default());
        let res = Arc::clone(&kraken.processes[&10].resource);
        kraken.register(10, res, Profile::Kraken);
        let spans = run(&mut kraken, &[serve(5, 1, path), serve_end(5, 2, 200, "")]);
        assert!(
            spans.iter().any(|s| s.name == "agent.download_blob"),
            "{spans:?}"
        );
    }

    /// A GET client request for /x (what `serve(.., "/x")` receives).
    fn get_x(goid: u64, t: u64) -> Event {
        let mut ev = client(goid, 1, t);
        if let Event::HttpClient(e) = &mut ev {
            e.method = cap("GET");
        }
        ev
    }

    fn two_processes() -> Correlator {
        let mut c = correlator(1.0, Limits::default());
        let res = Arc::clone(&c.processes[&10].resource);
        c.register(20, res, Profile::Generic);
        c
    }

    fn in_pid(mut ev: Event, tgid: u32) -> Event {
        match &mut ev {
            Event::HttpServe(e) => e.hdr.tgid = tgid,
            Event::HttpServeEnd(e) => e.hdr.tgid = tgid,
            Event::HttpClient(e) => e.hdr.tgid = tgid,
            Event::HttpClientEnd(e) => e.hdr.tgid = tgid,
            Event::Kraken(e) => e.hdr.tgid = tgid,
        }
        ev
    }

    #[test]
    fn kraken_announce_joins_the_download_of_its_blob_and_reannounces_are_unsampled() {
        let mut c = correlator(1.0, Limits::default());
        let res = Arc::clone(&c.processes[&10].resource);
        c.register(10, res, Profile::Kraken);
        let hex = "ab".repeat(32);
        let announce = |goid, t| {
            Event::Kraken(KrakenEvent {
                hdr: hdr(ProbeId::KrakenAnnounce, goid, t),
                digest_hex: cap(&hex),
                value: 0,
            })
        };
        let post = |goid, t| {
            let mut ev = client(goid, 1, t);
            if let Event::HttpClient(e) = &mut ev {
                e.path = cap("/announce/42b301ff477cff1bce1bc1ad8b9fa3e419fab348");
            }
            ev
        };
        let spans = run(
            &mut c,
            &[
                serve(5, 100, &format!("/namespace/ns/blobs/sha256:{hex}")),
                announce(30, 110), // the scheduler's goroutine 30, not descended from 5
                post(30, 111),
                client_end(30, 120, 200, false),
                serve_end(5, 200, 200, ""),
                announce(30, 300), // 3 s later: a re-announce, no download in progress
                post(30, 301),
                client_end(30, 310, 200, false),
            ],
        );
        let download = spans
            .iter()
            .find(|s| s.name == "agent.download_blob")
            .unwrap();
        let linked = spans
            .iter()
            .find(|s| s.name == "announce.request" && s.parent_span_id.is_some())
            .unwrap();
        assert_eq!(linked.parent_span_id, Some(download.span_id));
        assert_eq!(
            linked.attr("kraken.digest"),
            Some(&AttrValue::Str(format!("sha256:{hex}")))
        );
        assert_eq!(linked.trace_id, download.trace_id);
        let again = spans
            .iter()
            .filter(|s| s.name == "announce.request" && s.parent_span_id.is_none())
            .collect::<Vec<_>>();
        assert_eq!(again.len(), 1);
        assert!(
            !again[0].sampled,
            "re-announces are not exported as root traces"
        );
        assert_eq!(
            (
                c.stats().kraken_announces_linked,
                c.stats().kraken_announces_unlinked
            ),
            (1, 1)
        );
    }

    #[test]
    fn server_in_another_process_links_to_the_open_client_span() {
        let mut c = two_processes();
        let call = get_x(5, 110);
        let spans = run(
            &mut c,
            &[
                serve(5, 100, "/call"),
                call,
                in_pid(serve(7, 120, "/x?q=1"), 20),
                in_pid(serve_end(7, 130, 200, ""), 20),
                client_end(5, 140, 200, false),
                serve_end(5, 150, 200, ""),
            ],
        );
        let front = spans
            .iter()
            .find(|s| {
                s.kind == SpanKind::Server
                    && s.attr("url.path") == Some(&AttrValue::Str("/call".into()))
            })
            .unwrap();
        let cl = spans.iter().find(|s| s.kind == SpanKind::Client).unwrap();
        let back = spans
            .iter()
            .find(|s| s.attr("url.path") == Some(&AttrValue::Str("/x".into())))
            .unwrap();
        assert!(
            spans.iter().all(|s| s.trace_id == front.trace_id),
            "one trace"
        );
        assert_eq!(back.parent_span_id, Some(cl.span_id));
        assert_eq!(c.stats().linked_across_processes, 1);
    }

    #[test]
    fn no_link_within_one_process_after_the_client_ended_or_for_another_path() {
        let mut c = two_processes();
        let srv = |goid, t, path| in_pid(serve(goid, t, path), 20);
        let end = |goid, t| in_pid(serve_end(goid, t, 200, ""), 20);
        // Same process: not linked (in-process parents come from goroutines).
        let spans = run(
            &mut c,
            &[get_x(5, 10), serve(6, 20, "/x"), serve_end(6, 30, 200, "")],
        );
        assert!(spans.iter().all(|s| s.parent_span_id.is_none()));
        run(&mut c, &[client_end(5, 40, 200, false)]);
        // Client already ended: not linked.
        let spans = run(
            &mut c,
            &[
                get_x(5, 50),
                client_end(5, 60, 200, false),
                srv(7, 70, "/x"),
                end(7, 80),
            ],
        );
        assert!(spans.iter().all(|s| s.parent_span_id.is_none()));
        // Another path: not linked.
        let spans = run(&mut c, &[get_x(5, 90), srv(7, 95, "/y"), end(7, 96)]);
        assert!(spans.iter().all(|s| s.parent_span_id.is_none()));
        // Too late (outside the window): not linked.
        let late = 90 + LINK_WINDOW_NS + 1;
        let spans = run(&mut c, &[srv(8, late, "/x"), end(8, late + 1)]);
        assert!(spans.iter().all(|s| s.parent_span_id.is_none()));
        assert_eq!(c.stats().linked_across_processes, 0);
        // In time, from another process: linked (the control for the cases above).
        let spans = run(
            &mut c,
            &[
                get_x(9, late + 10),
                srv(8, late + 20, "/x"),
                end(8, late + 21),
            ],
        );
        assert!(spans[0].parent_span_id.is_some());
        assert_eq!(c.stats().linked_across_processes, 1);
    }

    #[test]
    fn agent_download_complete_spans() {
        let mut c = correlator(1.0, Limits::default());
        let res = Arc::clone(&c.processes[&10].resource);
        c.register(10, res, Profile::Kraken);
        let hex = "cd".repeat(32);
        let path = format!("/namespace/ns/blobs/sha256:{hex}");
        let cached = Event::Kraken(KrakenEvent {
            hdr: hdr(ProbeId::KrakenCached, 44, 2_000_000_100),
            digest_hex: cap(&hex),
            value: 0,
        });
        let spans = run(
            &mut c,
            &[
                serve(5, 100, &path),
                cached,
                serve_end(5, 3_000_000_000, 200, ""),
            ],
        );
        assert_eq!(spans.len(), 2);
        let (complete, download) = (&spans[0], &spans[1]);
        assert_eq!(complete.name, "agent.download_blob.complete");
        assert_eq!(complete.parent_span_id, Some(download.span_id));
        assert_eq!(complete.kind, SpanKind::Internal);
        assert_eq!(complete.start, download.start);
        assert_eq!(
            complete.end.duration_since(complete.start).unwrap(),
            Duration::from_nanos(2_000_000_000)
        );
        assert_eq!(
            complete.attr("kraken.duration_ms"),
            Some(&AttrValue::Int(2000))
        );
        assert_eq!(complete.attr("kraken.size"), Some(&AttrValue::Int(6)));
        assert_eq!(
            complete.attr("kraken.cache_hit"),
            Some(&AttrValue::Bool(false))
        );
        assert_eq!(
            complete.attr("kraken.digest"),
            Some(&AttrValue::Str(format!("sha256:{hex}")))
        );
        // Already cached: no completion event, a zero-length span marked as a cache hit.
        let spans = run(&mut c, &[serve(6, 10, &path), serve_end(6, 20, 200, "")]);
        assert_eq!(
            spans[0].attr("kraken.cache_hit"),
            Some(&AttrValue::Bool(true))
        );
        assert_eq!(spans[0].end, spans[0].start);
        // Not found: no completion span.
        let spans = run(&mut c, &[serve(7, 10, &path), serve_end(7, 20, 404, "")]);
        assert_eq!(spans.len(), 1);
    }

    #[test]
    fn kraken_health_checks_and_their_calls_are_unsampled() {
        let mut c = correlator(1.0, Limits::default());
        let res = Arc::clone(&c.processes[&10].resource);
        c.register(10, res, Profile::Kraken);
        let spans = run(
            &mut c,
            &[
                serve(5, 1, "/readiness"),
                client(5, 1, 2),
                client_end(5, 3, 200, false),
                serve_end(5, 4, 200, ""),
            ],
        );
        assert_eq!(spans.len(), 2);
        assert!(spans.iter().all(|s| !s.sampled), "{spans:?}");
        assert_eq!(c.stats().kraken_noise, 1);
    }

    #[test]
    fn calls_on_other_goroutines_may_outlive_their_request() {
        let mut c = correlator(1.0, Limits::default());
        let spans = run(
            &mut c,
            &[
                serve(5, 100, "/"),
                client(9, 5, 110), // started by the handler's goroutine, still running at its end
                serve_end(5, 150, 200, ""),
                client_end(9, 400, 200, false),
            ],
        );
        assert_eq!(spans.len(), 2);
        let (server, late) = (&spans[0], &spans[1]);
        assert_eq!(late.parent_span_id, Some(server.span_id));
        assert_eq!(
            late.status,
            SpanStatus::Unset,
            "a late call is not an error"
        );
        assert!(late.attr("kraken_tracer.incomplete").is_none());
    }

    #[test]
    fn origin_refresh_cache_write_and_backend_download() {
        let mut c = correlator(1.0, Limits::default());
        let res = Arc::clone(&c.processes[&10].resource);
        c.register(10, res, Profile::Kraken);
        let hex = "ef".repeat(32);
        let kev = |probe, goid, t, digest: &str, value| {
            Event::Kraken(KrakenEvent {
                hdr: hdr(probe, goid, t),
                digest_hex: cap(digest),
                value,
            })
        };
        let mut get = client(40, 8, 130);
        if let Event::HttpClient(e) = &mut get {
            e.method = cap("GET");
            e.host = cap("localhost:14000");
            e.path = cap(&format!("/files/blobs/{hex}"));
        }
        let spans = run(
            &mut c,
            &[
                serve(
                    5,
                    100,
                    &format!("/internal/namespace/ns/blobs/sha256:{hex}/metainfo"),
                ),
                kev(ProbeId::KrakenRefresh, 5, 110, &hex, 0),
                kev(ProbeId::KrakenRefresh, 5, 115, &hex, 0), // "pending" repeat: ignored
                serve_end(5, 120, 202, ""),
                kev(ProbeId::KrakenCacheWrite, 40, 125, &hex, 4096), // worker goroutine 40
                get,
                client_end(40, 180, 200, false),
                kev(ProbeId::KrakenRefreshDone, 40, 190, "", 0),
            ],
        );
        let by_name = |n: &str| {
            spans
                .iter()
                .find(|s| s.name == n)
                .unwrap_or_else(|| panic!("{n}: {spans:?}"))
        };
        let server = spans.iter().find(|s| s.kind == SpanKind::Server).unwrap();
        let refresh = by_name("origin.blob_refresh");
        let write = by_name("cache.write");
        let backend = by_name("backend.download");
        assert_eq!(refresh.parent_span_id, Some(server.span_id));
        assert_eq!(write.parent_span_id, Some(refresh.span_id));
        assert_eq!(backend.parent_span_id, Some(write.span_id));
        assert!(spans.iter().all(|s| s.trace_id == server.trace_id));
        assert_eq!(write.attr("kraken.size"), Some(&AttrValue::Int(4096)));
        assert_eq!(
            write.attr("kraken.cache_file"),
            Some(&AttrValue::Str(hex.clone()))
        );
        assert_eq!(
            backend.attr("kraken.backend_root"),
            Some(&AttrValue::Str("blobs".into()))
        );
        assert_eq!(
            backend.attr("kraken.backend_type"),
            Some(&AttrValue::Str("testfs".into()))
        );
        assert_eq!(
            refresh.end.duration_since(refresh.start).unwrap(),
            Duration::from_nanos(80)
        );
        assert_eq!(
            spans
                .iter()
                .filter(|s| s.name == "origin.blob_refresh")
                .count(),
            1
        );
        assert_eq!(c.open_spans(), 0);
    }

    #[test]
    fn same_goroutine_internal_span_beats_an_open_parent_goroutine_server() {
        let mut c = correlator(1.0, Limits::default());
        let res = Arc::clone(&c.processes[&10].resource);
        c.register(10, res, Profile::Kraken);
        let hex = "aa".repeat(32);
        let write = Event::Kraken(KrakenEvent {
            hdr: hdr(ProbeId::KrakenCacheWrite, 40, 105),
            digest_hex: cap(&hex),
            value: 1,
        });
        // Worker 40 was started by handler 5, whose server span is still open.
        let spans = run(
            &mut c,
            &[
                serve(5, 100, "/x"),
                write,
                client(40, 5, 110),
                client_end(40, 120, 200, false),
                serve_end(5, 130, 202, ""),
            ],
        );
        let cl = spans.iter().find(|s| s.kind == SpanKind::Client).unwrap();
        let open_write = c.processes[&10].internal.get(&40).unwrap();
        assert_eq!(cl.parent_span_id, Some(open_write.ctx.span_id));
    }

    /// A request with this method (the `serve` helper sends GETs).
    fn req(method: &str, goid: u64, t: u64, uri: &str) -> Event {
        let mut ev = serve(goid, t, uri);
        if let Event::HttpServe(e) = &mut ev {
            e.method = cap(method);
        }
        ev
    }

    /// A request whose body is `len` bytes (`None`: unknown, e.g. chunked transfer encoding).
    fn body(mut ev: Event, len: Option<i64>) -> Event {
        if let Event::HttpServe(e) = &mut ev {
            e.content_length = len;
        }
        ev
    }

    fn kraken_correlator() -> Correlator {
        let mut c = correlator(1.0, Limits::default());
        let res = Arc::clone(&c.processes[&10].resource);
        c.register(10, res, Profile::Kraken);
        c
    }

    fn call(goid: u64, parent_goid: u64, t: u64, method: &str, host: &str, path: &str) -> Event {
        let mut ev = client(goid, parent_goid, t);
        if let Event::HttpClient(e) = &mut ev {
            e.method = cap(method);
            e.host = cap(host);
            e.path = cap(path);
        }
        ev
    }

    #[test]
    fn origin_chunked_upload_is_one_store_blob_and_its_writeback_joins_it() {
        let mut c = kraken_correlator();
        let hex = "12".repeat(32);
        let base = format!("/namespace/a%2Fb/blobs/sha256:{hex}/uploads");
        let spans = run(
            &mut c,
            &[
                req("POST", 5, 100, &format!("{base}?size=9")),
                serve_end(5, 110, 200, ""),
                body(req("PATCH", 6, 120, &format!("{base}/u-1")), Some(5)),
                serve_end(6, 130, 200, ""),
                body(req("PATCH", 7, 140, &format!("{base}/u-1")), Some(4)),
                serve_end(7, 150, 200, ""),
                // An origin commit's body is no blob data (a duplicate commit's is JSON).
                body(req("PUT", 8, 160, &format!("{base}/u-1")), Some(23)),
                serve_end(8, 2_000_000_170, 200, ""),
                // The writeback worker (goroutine 90, not descended from any handler).
                call(
                    90,
                    3,
                    2_000_000_200,
                    "HEAD",
                    "localhost:14000",
                    &format!("/files/blobs/{hex}"),
                ),
                client_end(90, 2_000_000_210, 404, false),
                call(
                    90,
                    3,
                    2_000_000_220,
                    "POST",
                    "localhost:14000",
                    &format!("/files/blobs/{hex}"),
                ),
                client_end(90, 2_000_000_230, 200, false),
            ],
        );
        let store: Vec<_> = spans
            .iter()
            .filter(|s| s.name == "origin.store_blob")
            .collect();
        assert_eq!(store.len(), 1, "{spans:?}");
        let store = store[0];
        assert_eq!(store.kind, SpanKind::Internal);
        assert_eq!(store.parent_span_id, None);
        let requests: Vec<_> = spans
            .iter()
            .filter(|s| s.kind == SpanKind::Server)
            .collect();
        assert_eq!(requests.len(), 4);
        for r in &requests {
            assert_eq!(r.parent_span_id, Some(store.span_id), "{r:?}");
            assert_eq!(r.trace_id, store.trace_id);
        }
        assert_eq!(store.start, requests[0].start);
        assert_eq!(store.end, requests[3].end);
        let attr = |k| store.attr(k).cloned();
        assert_eq!(
            attr("kraken.digest"),
            Some(AttrValue::Str(format!("sha256:{hex}")))
        );
        assert_eq!(attr("kraken.namespace"), Some(AttrValue::Str("a/b".into())));
        assert_eq!(attr("kraken.upload_id"), Some(AttrValue::Str("u-1".into())));
        assert_eq!(attr("kraken.replicate"), Some(AttrValue::Bool(true)));
        assert_eq!(attr("kraken.chunks"), Some(AttrValue::Int(2)));
        assert_eq!(attr("kraken.size"), Some(AttrValue::Int(9)), "5 + 4 bytes");
        assert_eq!(attr("kraken.duration_ms"), Some(AttrValue::Int(2000)));
        let patch = requests
            .iter()
            .find(|r| r.attr("http.request.method") == Some(&AttrValue::Str("PATCH".into())))
            .unwrap();
        assert_eq!(
            patch.attr("http.request.body.size"),
            Some(&AttrValue::Int(5))
        );
        let backend = spans.iter().find(|s| s.name == "backend.upload").unwrap();
        assert_eq!(backend.parent_span_id, Some(store.span_id));
        assert_eq!(backend.trace_id, store.trace_id);
        assert_eq!(
            backend.attr("kraken.backend_type"),
            Some(&AttrValue::Str("testfs".into()))
        );
        let stat = spans
            .iter()
            .find(|s| s.attr("http.request.method") == Some(&AttrValue::Str("HEAD".into())))
            .unwrap();
        assert_eq!(
            stat.parent_span_id,
            Some(store.span_id),
            "the writeback's stat too"
        );
        assert_eq!(c.stats().kraken_uploads, 1);
        assert_eq!(c.stats().kraken_backend_uploads_linked, 2);
        assert_eq!(c.open_spans(), 0);
        // Another blob's writeback is not linked to it.
        let other = "34".repeat(32);
        let spans = run(
            &mut c,
            &[
                call(
                    91,
                    3,
                    2_000_000_300,
                    "POST",
                    "localhost:14000",
                    &format!("/files/blobs/{other}"),
                ),
                client_end(91, 2_000_000_310, 200, false),
            ],
        );
        assert_eq!(spans[0].parent_span_id, None);
    }

    #[test]
    fn upload_size_is_left_out_when_a_chunk_size_is_unknown() {
        let mut c = kraken_correlator();
        let hex = "ab".repeat(32);
        let base = format!("/namespace/ns/blobs/sha256:{hex}/uploads");
        let spans = run(
            &mut c,
            &[
                req("POST", 5, 100, &base),
                serve_end(5, 110, 200, ""),
                body(req("PATCH", 6, 120, &format!("{base}/u-1")), Some(64)),
                serve_end(6, 130, 200, ""),
                // Chunked transfer encoding: Go reports ContentLength -1.
                body(req("PATCH", 7, 140, &format!("{base}/u-1")), None),
                serve_end(7, 150, 200, ""),
                body(req("PATCH", 9, 155, &format!("{base}/u-1")), Some(64)),
                serve_end(9, 158, 200, ""),
                req("PUT", 8, 160, &format!("{base}/u-1")),
                serve_end(8, 170, 200, ""),
            ],
        );
        let store = spans
            .iter()
            .find(|s| s.name == "origin.store_blob")
            .unwrap();
        assert_eq!(store.attr("kraken.chunks"), Some(&AttrValue::Int(3)));
        assert_eq!(
            store.attr("kraken.size"),
            None,
            "a partial sum is not the size"
        );
        let sizes: Vec<Option<&AttrValue>> = spans
            .iter()
            .filter(|s| s.kind == SpanKind::Server)
            .map(|s| s.attr("http.request.body.size"))
            .collect();
        assert_eq!(
            sizes,
            [
                Some(&AttrValue::Int(0)),
                Some(&AttrValue::Int(64)),
                None,
                Some(&AttrValue::Int(64)),
                Some(&AttrValue::Int(0)),
            ]
        );
    }

    #[test]
    fn proxy_push_is_one_upload_claiming_its_id_and_learning_its_digest() {
        let mut c = kraken_correlator();
        let hex = "56".repeat(32);
        let spans = run(
            &mut c,
            &[
                req("POST", 5, 100, "/v2/lib/app/blobs/uploads/"),
                serve_end(5, 110, 202, ""),
                // Another repository's upload starts meanwhile: it must not take this id.
                req("POST", 9, 112, "/v2/other/blobs/uploads/"),
                serve_end(9, 113, 202, ""),
                body(
                    req("PATCH", 6, 120, "/v2/lib/app/blobs/uploads/id-1"),
                    Some(700),
                ),
                serve_end(6, 130, 202, ""),
                // The registry API's commit may carry the last chunk.
                body(
                    req("PUT", 7, 140, "/v2/lib/app/blobs/uploads/id-1?digest=x"),
                    Some(11),
                ),
                call(
                    7,
                    0,
                    150,
                    "GET",
                    "localhost:15002",
                    &format!("/blobs/sha256:{hex}/locations"),
                ),
                client_end(7, 160, 200, false),
                serve_end(7, 170, 201, ""),
            ],
        );
        let up = spans.iter().find(|s| s.name == "proxy.upload").unwrap();
        assert_eq!(
            up.attr("kraken.repo"),
            Some(&AttrValue::Str("lib/app".into()))
        );
        assert_eq!(
            up.attr("kraken.namespace"),
            Some(&AttrValue::Str("lib/app".into()))
        );
        assert_eq!(
            up.attr("kraken.upload_id"),
            Some(&AttrValue::Str("id-1".into()))
        );
        assert_eq!(
            up.attr("kraken.digest"),
            Some(&AttrValue::Str(format!("sha256:{hex}")))
        );
        assert_eq!(up.attr("kraken.chunks"), Some(&AttrValue::Int(1)));
        assert_eq!(up.attr("kraken.size"), Some(&AttrValue::Int(711)));
        let mine: Vec<_> = spans
            .iter()
            .filter(|s| s.kind == SpanKind::Server && s.parent_span_id == Some(up.span_id))
            .collect();
        assert_eq!(mine.len(), 3, "POST, PATCH, PUT: {spans:?}");
        let put = mine
            .iter()
            .find(|s| s.attr("http.request.method") == Some(&AttrValue::Str("PUT".into())))
            .unwrap();
        let cl = spans.iter().find(|s| s.kind == SpanKind::Client).unwrap();
        assert_eq!(cl.parent_span_id, Some(put.span_id));
        let other = spans
            .iter()
            .find(|s| {
                s.attr("url.path") == Some(&AttrValue::Str("/v2/other/blobs/uploads/".into()))
            })
            .unwrap();
        assert_ne!(other.trace_id, up.trace_id);
        // The other repository's upload is still open, then abandoned after UPLOAD_IDLE_NS.
        assert_eq!(c.open_spans(), 1);
        c.sweep(113 + UPLOAD_IDLE_NS + 1);
        assert_eq!(c.open_spans(), 0);
        assert_eq!(c.stats().kraken_uploads_abandoned, 1);
        assert!(c.processes[&10].pending_uploads.is_empty());
    }

    #[test]
    fn upload_span_sits_under_the_calling_client_across_processes_with_long_paths() {
        let mut c = kraken_correlator();
        let res = Arc::clone(&c.processes[&10].resource);
        c.register(20, res, Profile::Kraken);
        let hex = "78".repeat(32);
        let base = format!("/namespace/TODO/blobs/sha256:{hex}/uploads");
        let long = format!("{base}/8885d7d8-5134-4514-ac13-c7742dceac95");
        // The client side's path is cut at PATH_LEN bytes, as the kernel captures it.
        let cut = long
            .get(..tracer_common::event::PATH_LEN)
            .unwrap()
            .to_owned();
        assert!(cut.len() < long.len());
        let spans = run(
            &mut c,
            &[
                serve(7, 90, "/push"),
                call(7, 0, 100, "POST", "localhost:15002", &base),
                in_pid(req("POST", 50, 101, &base), 20),
                in_pid(serve_end(50, 102, 200, ""), 20),
                client_end(7, 103, 200, false),
                call(7, 0, 110, "PUT", "localhost:15002", &cut),
                in_pid(req("PUT", 51, 111, &long), 20),
                in_pid(serve_end(51, 112, 200, ""), 20),
                client_end(7, 113, 200, false),
                serve_end(7, 120, 200, ""),
            ],
        );
        let post = spans
            .iter()
            .find(|s| s.kind == SpanKind::Client && s.name.starts_with("POST"))
            .unwrap();
        let store = spans
            .iter()
            .find(|s| s.name == "origin.store_blob")
            .unwrap();
        assert_eq!(store.parent_span_id, Some(post.span_id));
        assert!(
            spans.iter().all(|s| s.trace_id == post.trace_id),
            "{spans:?}"
        );
        assert_eq!(
            c.stats().linked_across_processes,
            2,
            "the cut PUT path links too"
        );
    }

    #[test]
    fn commit_duplicated_to_a_replica_origin_is_source_transfer_destination() {
        let mut c = kraken_correlator();
        let res = Arc::clone(&c.processes[&10].resource);
        c.register(20, res, Profile::Kraken);
        let hex = "9a".repeat(32);
        let base = format!("/namespace/ns/blobs/sha256:{hex}/uploads");
        let dup = format!("/internal/duplicate/namespace/ns/blobs/sha256:{hex}/uploads/u-b");
        let b = |ev| in_pid(ev, 20);
        let spans = run(
            &mut c,
            &[
                req("POST", 5, 100, &base),
                serve_end(5, 110, 200, ""),
                req("PUT", 8, 120, &format!("{base}/u-a")),
                // applyToReplicas: goroutine 50, spawned by the commit's goroutine 8.
                call(50, 8, 130, "POST", "localhost:15012", &base),
                b(req("POST", 60, 131, &base)),
                b(serve_end(60, 132, 200, "")),
                client_end(50, 133, 200, false),
                call(
                    50,
                    8,
                    140,
                    "PATCH",
                    "localhost:15012",
                    &format!("{base}/u-b"),
                ),
                b(body(
                    req("PATCH", 61, 141, &format!("{base}/u-b")),
                    Some(300),
                )),
                b(serve_end(61, 142, 200, "")),
                client_end(50, 143, 200, false),
                call(50, 8, 150, "PUT", "localhost:15012", &dup),
                b(body(req("PUT", 62, 151, &dup), Some(23))),
                b(serve_end(62, 152, 200, "")),
                client_end(50, 153, 200, false),
                serve_end(8, 160, 200, ""),
            ],
        );
        let named = |n: &str| {
            spans
                .iter()
                .find(|s| s.name == n)
                .unwrap_or_else(|| panic!("{n}: {spans:?}"))
        };
        let store = named("origin.store_blob");
        let commit = spans
            .iter()
            .find(|s| {
                s.kind == SpanKind::Server
                    && s.parent_span_id == Some(store.span_id)
                    && s.attr("http.request.method") == Some(&AttrValue::Str("PUT".into()))
            })
            .unwrap();
        let source = named("origin.replicate");
        assert_eq!(source.parent_span_id, Some(commit.span_id));
        assert_eq!(source.kind, SpanKind::Internal);
        assert_eq!(
            source.attr("kraken.replica"),
            Some(&AttrValue::Str("localhost:15012".into()))
        );
        assert_eq!(
            source.end,
            spans
                .iter()
                .find(|s| s.kind == SpanKind::Client && s.name.starts_with("PUT"))
                .unwrap()
                .end
        );
        let transfers: Vec<_> = spans
            .iter()
            .filter(|s| s.kind == SpanKind::Client)
            .collect();
        assert_eq!(transfers.len(), 3);
        assert!(
            transfers
                .iter()
                .all(|t| t.parent_span_id == Some(source.span_id))
        );
        let dest = named("origin.receive_replica");
        let post = transfers
            .iter()
            .find(|t| t.name.starts_with("POST"))
            .unwrap();
        assert_eq!(dest.parent_span_id, Some(post.span_id));
        assert_eq!(dest.attr("kraken.replicate"), Some(&AttrValue::Bool(false)));
        assert_eq!(
            dest.attr("kraken.size"),
            Some(&AttrValue::Int(300)),
            "the duplicate commit's JSON body is not blob data"
        );
        // The source's upload saw no chunk here: an empty blob, as far as its bodies tell.
        assert_eq!(store.attr("kraken.size"), Some(&AttrValue::Int(0)));
        let on_b: Vec<_> = spans
            .iter()
            .filter(|s| s.kind == SpanKind::Server && s.parent_span_id == Some(dest.span_id))
            .collect();
        assert_eq!(
            on_b.len(),
            3,
            "POST, PATCH and the duplicate commit on the replica"
        );
        assert!(spans.iter().all(|s| s.trace_id == store.trace_id));
        assert_eq!(c.open_spans(), 0);
    }

    #[test]
    fn transfer_after_a_backend_refresh_is_source_transfer_destination() {
        let mut c = kraken_correlator();
        let res = Arc::clone(&c.processes[&10].resource);
        c.register(20, res, Profile::Kraken);
        let hex = "5e".repeat(32);
        let kev = |probe, goid, t, digest: &str, value| {
            Event::Kraken(KrakenEvent {
                hdr: hdr(probe, goid, t),
                digest_hex: cap(digest),
                value,
            })
        };
        let start = format!("/internal/blobs/sha256:{hex}/uploads");
        // The chunk and commit paths are longer than the client capture: cut in the upload id.
        let uid = "8885d7d8-5134-4514-ac13-c7742dceac95";
        let long = format!("{start}/{uid}");
        let cut = |ev: Event| match ev {
            Event::HttpClient(mut e) => {
                e.path = Captured {
                    text: long[..tracer_common::event::PATH_LEN].to_owned(),
                    truncated: true,
                    read_error: false,
                };
                Event::HttpClient(e)
            }
            other => other,
        };
        let b = |ev| in_pid(ev, 20);
        let spans = run(
            &mut c,
            &[
                serve(
                    5,
                    100,
                    &format!("/internal/namespace/ns/blobs/sha256:{hex}/metainfo"),
                ),
                kev(ProbeId::KrakenRefresh, 5, 110, &hex, 0),
                serve_end(5, 120, 202, ""),
                kev(ProbeId::KrakenCacheWrite, 40, 125, &hex, 4096),
                kev(ProbeId::KrakenRefreshDone, 40, 190, "", 0),
                // localReplicationHook → applyToReplicas: goroutine 50, spawned by worker 40.
                call(50, 40, 200, "POST", "localhost:15012", &start),
                b(req("POST", 60, 201, &start)),
                b(serve_end(60, 202, 200, "")),
                client_end(50, 203, 200, false),
                cut(call(50, 40, 210, "PATCH", "localhost:15012", "")),
                b(req("PATCH", 61, 211, &long)),
                b(serve_end(61, 212, 200, "")),
                client_end(50, 213, 200, false),
                cut(call(50, 40, 220, "PUT", "localhost:15012", "")),
                b(req("PUT", 62, 221, &long)),
                b(serve_end(62, 222, 200, "")),
                client_end(50, 223, 200, false),
                // A second transfer of the blob from a goroutine with no known parent, answered
                // 409 (that origin has it already): joined by digest, ended by the conflict.
                call(70, 0, 300, "POST", "localhost:15022", &start),
                client_end(70, 303, 409, false),
            ],
        );
        let refresh = spans
            .iter()
            .find(|s| s.name == "origin.blob_refresh")
            .unwrap();
        let sources: Vec<_> = spans
            .iter()
            .filter(|s| s.name == "origin.replicate")
            .collect();
        assert_eq!(sources.len(), 2, "{spans:?}");
        let source = sources
            .iter()
            .find(|s| s.attr("kraken.replica") == Some(&AttrValue::Str("localhost:15012".into())))
            .unwrap();
        assert_eq!(source.parent_span_id, Some(refresh.span_id));
        assert_eq!(source.kind, SpanKind::Internal);
        assert_eq!(source.status, SpanStatus::Unset);
        assert_eq!(
            source.attr("kraken.digest"),
            Some(&AttrValue::Str(format!("sha256:{hex}")))
        );
        let transfers: Vec<_> = spans
            .iter()
            .filter(|s| s.kind == SpanKind::Client && s.parent_span_id == Some(source.span_id))
            .collect();
        assert_eq!(transfers.len(), 3, "POST, PATCH, PUT: {spans:?}");
        let commit = transfers
            .iter()
            .find(|t| t.name == "PUT /internal/blobs/{digest}/uploads/{uid}")
            .unwrap();
        assert_eq!(source.end, commit.end, "the transfer's commit ends it");
        let dest = spans
            .iter()
            .find(|s| s.name == "origin.receive_replica")
            .unwrap();
        let post = transfers
            .iter()
            .find(|t| t.name.starts_with("POST"))
            .unwrap();
        assert_eq!(dest.parent_span_id, Some(post.span_id));
        assert_eq!(
            spans
                .iter()
                .filter(|s| s.kind == SpanKind::Server && s.parent_span_id == Some(dest.span_id))
                .count(),
            3
        );
        let conflict = sources
            .iter()
            .find(|s| s.attr("kraken.replica") == Some(&AttrValue::Str("localhost:15022".into())))
            .unwrap();
        assert_eq!(conflict.parent_span_id, Some(refresh.span_id));
        assert_eq!(conflict.status, SpanStatus::Unset, "409: already there");
        assert_eq!(
            (
                c.stats().kraken_transfers_by_goroutine,
                c.stats().kraken_transfers_by_digest
            ),
            (1, 1)
        );
        assert!(spans.iter().all(|s| s.trace_id == refresh.trace_id));
        assert_eq!(c.open_spans(), 0);
    }

    #[test]
    fn a_failed_transfer_step_ends_its_replicate_and_failed_fetches_transfer_nothing() {
        let mut c = kraken_correlator();
        let hex = "6f".repeat(32);
        let other = "70".repeat(32);
        let kev = |probe, goid, t, digest: &str, value| {
            Event::Kraken(KrakenEvent {
                hdr: hdr(probe, goid, t),
                digest_hex: cap(digest),
                value,
            })
        };
        let start = |h: &str| format!("/internal/blobs/sha256:{h}/uploads");
        let spans = run(
            &mut c,
            &[
                kev(ProbeId::KrakenRefresh, 5, 110, &hex, 0),
                kev(ProbeId::KrakenCacheWrite, 40, 125, &hex, 1),
                kev(ProbeId::KrakenRefreshDone, 40, 190, "", 0),
                call(50, 40, 200, "POST", "localhost:15012", &start(&hex)),
                client_end(50, 203, 500, false),
                // A fetch that failed runs no hook: a transfer of that blob has no source span.
                kev(ProbeId::KrakenRefresh, 6, 310, &other, 0),
                kev(ProbeId::KrakenCacheWrite, 41, 325, &other, 1),
                kev(ProbeId::KrakenRefreshDone, 41, 390, "", 1),
                call(51, 0, 400, "POST", "localhost:15012", &start(&other)),
                client_end(51, 403, 200, false),
            ],
        );
        let sources: Vec<_> = spans
            .iter()
            .filter(|s| s.name == "origin.replicate")
            .collect();
        assert_eq!(sources.len(), 1, "{spans:?}");
        assert!(matches!(sources[0].status, SpanStatus::Error(_)));
        let failed = spans
            .iter()
            .find(|s| s.kind == SpanKind::Client && s.parent_span_id == Some(sources[0].span_id))
            .unwrap();
        assert_eq!(sources[0].end, failed.end, "the failed start ends the push");
        assert_eq!(c.open_spans(), 0);
    }

    #[test]
    fn tag_replication_worker_calls_join_the_tag_put() {
        let mut c = kraken_correlator();
        let hex = "bc".repeat(32);
        let put = format!("/tags/repo%2Fa:v1/digest/sha256:{hex}");
        let local = "localhost:15002";
        let remote = "localhost:15024";
        let spans = run(
            &mut c,
            &[
                req("PUT", 5, 100, &put),
                serve_end(5, 110, 200, ""),
                // The executor: worker goroutine 70, not descended from the handler.
                call(70, 2, 200, "HEAD", remote, "/tags/repo%2Fa:v1"),
                client_end(70, 201, 404, false),
                call(70, 2, 210, "GET", remote, "/origin"),
                client_end(70, 211, 200, false),
                call(
                    70,
                    2,
                    220,
                    "POST",
                    local,
                    &format!("/namespace/repo%2Fa:v1/blobs/sha256:{hex}/remote/localhost:15022"),
                ),
                client_end(70, 230, 200, false),
                call(70, 2, 240, "PUT", remote, &put),
                client_end(70, 250, 200, false),
                // A later call on that worker about nothing traced: not joined.
                call(70, 2, 300, "GET", remote, "/origin"),
                client_end(70, 301, 200, false),
            ],
        );
        let tag_put = spans.iter().find(|s| s.kind == SpanKind::Server).unwrap();
        let rep = spans
            .iter()
            .find(|s| s.name == "build_index.replicate_tag")
            .unwrap();
        assert_eq!(rep.parent_span_id, Some(tag_put.span_id));
        assert_eq!(
            rep.attr("kraken.tag"),
            Some(&AttrValue::Str("repo/a:v1".into()))
        );
        assert_eq!(rep.attr("kraken.digest"), None);
        let under: Vec<_> = spans
            .iter()
            .filter(|s| s.parent_span_id == Some(rep.span_id))
            .collect();
        assert_eq!(under.len(), 4, "{spans:?}");
        assert_eq!(rep.end, under[3].end, "ends with the remote tag put");
        let last = spans.last().unwrap();
        assert_eq!(last.parent_span_id, None);
        assert_eq!(c.open_spans(), 0);
    }

    #[test]
    fn unsampled_traces_are_marked_not_dropped_here() {
        let mut c = correlator(0.0, Limits::default());
        let spans = run(&mut c, &[serve(5, 100, "/"), serve_end(5, 150, 200, "")]);
        assert_eq!(spans.len(), 1);
        assert!(!spans[0].sampled);
    }

    #[test]
    fn ids_are_distinct_and_nonzero() {
        let mut g = IdGen::new();
        let a = g.trace_id();
        let b = g.trace_id();
        assert_ne!(a, b);
        assert_ne!(g.span_id(), [0; 8]);
    }

    #[test]
    fn host_port_parsing() {
        assert_eq!(split_host_port("a:1"), Some(("a", Some(1))));
        assert_eq!(split_host_port("[::1]:80"), Some(("::1", Some(80))));
        assert_eq!(split_host_port("a"), Some(("a", None)));
        assert_eq!(split_host_port("::1"), Some(("::1", None)));
        assert_eq!(split_host_port(""), None);
        assert_eq!(route_of("GET /a/{b}"), Some("/a/{b}"));
        assert_eq!(route_of("example.com/x/"), Some("/x/"));
        assert_eq!(route_of(""), None);
    }
}
