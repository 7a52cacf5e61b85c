//! Events sent through the ring buffer: a fixed header first, then a payload.

pub use crate::socket::TcpSnapshot;

/// Bytes kept of a request method.
pub const METHOD_LEN: usize = 16;
/// Bytes kept of a server request target (path and query).
pub const URI_LEN: usize = 192;
/// Bytes kept of host names, addresses, URL schemes and route patterns.
pub const ADDR_LEN: usize = 64;
/// Bytes kept of a client request's URL path.
pub const PATH_LEN: usize = 128;
/// Bytes kept of a URL scheme.
pub const SCHEME_LEN: usize = 8;
/// Bytes kept of an incoming `traceparent` header value (version 00 is 55 bytes).
pub const TRACEPARENT_LEN: usize = 64;

/// The ids the kernel gave a span (all zero when it gave none: propagation off, or an older
/// object).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SpanIds {
    pub trace_id: [u8; 16],
    pub span_id: [u8; 8],
    /// The parent's span id: the remote caller's (server, from `traceparent`), or the span of
    /// this goroutine's (or its parent goroutine's) request (client); zero for a root.
    pub parent_span_id: [u8; 8],
    /// `IDS_*` bits.
    pub flags: u32,
    pub _pad: u32,
}

/// `SpanIds` holds ids the kernel generated.
pub const IDS_VALID: u32 = 1;
/// The trace is sampled (the flag the kernel sends on in `traceparent`).
pub const IDS_SAMPLED: u32 = 2;
/// The parent came from an incoming, valid `traceparent` (server).
pub const IDS_REMOTE_PARENT: u32 = 4;
/// The parent is a local span the kernel knew (client).
pub const IDS_LOCAL_PARENT: u32 = 8;
/// The kernel registered this context for insertion into the outgoing request (client).
pub const IDS_PENDING: u32 = 16;
/// The outgoing request already carried a `traceparent` (client; kept as is).
pub const IDS_HAD_TRACEPARENT: u32 = 32;

/// Common header; user space reads `probe` to know the payload type.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct EventHeader {
    /// `ProbeId` as u32.
    pub probe: u32,
    /// Process id (tgid) in the root PID namespace.
    pub tgid: u32,
    /// Thread id in the root PID namespace.
    pub tid: u32,
    pub _pad: u32,
    /// Address of the running goroutine's `g` (R14 on amd64, X28 on arm64).
    pub goroutine: u64,
    /// `g.goid`: never reused, unlike `g` addresses (0 if unreadable).
    pub goid: u64,
    /// `bpf_ktime_get_ns()` (CLOCK_MONOTONIC) at the probe hit.
    pub ktime_ns: u64,
}

/// A Go string copied from the target: `len` is the real length, of which at most
/// `N` bytes are in `bytes`.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct GoStr<const N: usize> {
    pub len: u32,
    /// Non-zero when reading the bytes failed (page not resident, bad pointer).
    pub read_error: u32,
    pub bytes: [u8; N],
}

impl<const N: usize> GoStr<N> {
    /// Nothing captured.
    pub const EMPTY: GoStr<N> = GoStr {
        len: 0,
        read_error: 0,
        bytes: [0; N],
    };

    /// The captured bytes (possibly truncated).
    pub fn captured(&self) -> &[u8] {
        let n = (self.len as usize).min(N);
        &self.bytes[..n]
    }

    pub fn truncated(&self) -> bool {
        self.len as usize > N
    }
}

/// `ProbeId::HttpServe`: a Go net/http server request enters its handler.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct HttpServeEvent {
    pub hdr: EventHeader,
    /// `*http.Request`, to pair with later events of the same request.
    pub request: u64,
    /// `Request.ContentLength`: the body's size from `Content-Length`, -1 when unknown
    /// (chunked, or the field unreadable), 0 for no body.
    pub content_length: i64,
    /// The process's TCP byte counters as the handler starts (socket probes).
    pub tcp: TcpSnapshot,
    pub method: GoStr<METHOD_LEN>,
    pub uri: GoStr<URI_LEN>,
    pub host: GoStr<ADDR_LEN>,
    pub remote_addr: GoStr<ADDR_LEN>,
    /// The request's `Traceparent` header value (from `Request.Header`), empty when absent.
    pub traceparent: GoStr<TRACEPARENT_LEN>,
    pub ids: SpanIds,
}

/// `ProbeId::HttpServeEnd`: the response is finished (`(*response).finishRequest`).
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct HttpServeEndEvent {
    pub hdr: EventHeader,
    pub request: u64,
    /// `response.status` (0 if the handler never wrote a header; Go then sends 200).
    pub status: i64,
    /// `response.written`: body bytes written.
    pub written: i64,
    /// The process's TCP byte counters as the response finishes (socket probes).
    pub tcp: TcpSnapshot,
    /// `Request.Pattern` (Go >= 1.23 ServeMux route), empty otherwise.
    pub pattern: GoStr<ADDR_LEN>,
}

/// `ProbeId::HttpClient`: an outgoing request starts (`(*Transport).roundTrip`).
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct HttpClientEvent {
    pub hdr: EventHeader,
    pub request: u64,
    /// `g.parentGoid`: links requests made from goroutines a handler started.
    pub parent_goid: u64,
    pub method: GoStr<METHOD_LEN>,
    pub scheme: GoStr<SCHEME_LEN>,
    pub host: GoStr<ADDR_LEN>,
    pub path: GoStr<PATH_LEN>,
    /// The request's own `Traceparent` header, when the application set one.
    pub traceparent: GoStr<TRACEPARENT_LEN>,
    pub ids: SpanIds,
}

/// `ProbeId::HttpClientEnd`: the response headers arrived, or the round trip failed
/// (the return of `(*persistConn).roundTrip` inside `(*Transport).roundTrip`).
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct HttpClientEndEvent {
    pub hdr: EventHeader,
    pub response: u64,
    /// `Response.StatusCode`, 0 on error.
    pub status: i64,
    /// Non-zero when the round trip returned an error.
    pub error: u64,
}

/// Bytes kept of a Kraken digest's hex (sha256: 64).
pub const DIGEST_LEN: usize = 72;

/// The Kraken probes' event: `ProbeId::KrakenAnnounce` (this goroutine is about to announce this
/// blob), `KrakenCached` (the blob's P2P download completed into the agent's cache),
/// `KrakenRefresh` (the origin starts fetching the blob from its backend), `KrakenCacheWrite`
/// (a worker starts writing it to the origin's cache), `KrakenRefreshDone` (that fetch ended;
/// no digest: it is the worker's).
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct KrakenDigestEvent {
    pub hdr: EventHeader,
    /// `core.Digest.hex`.
    pub digest_hex: GoStr<DIGEST_LEN>,
    /// A probe-specific number: the blob size (KrakenCacheWrite), non-zero on error
    /// (KrakenRefreshDone), else 0.
    pub value: u64,
}

/// Offset of `EventHeader::probe` in every event; the decoder relies on it.
pub const PROBE_FIELD_OFFSET: usize = 0;
