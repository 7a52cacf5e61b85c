//! Names and sizes of the BPF maps, shared so neither side spells them twice.

/// Ring buffer carrying every event to user space.
pub const EVENTS: &str = "EVENTS";
/// Per-traced-process configuration (`offsets::ProcessConfig`), keyed by tgid.
/// A process without an entry produces no events.
pub const PROCESSES: &str = "PROCESSES";
/// Per-CPU counters (`COUNTER_*` indices).
pub const COUNTERS: &str = "COUNTERS";
/// The path rules (`rules::KernelRules`, one entry): requests they never trace are dropped.
pub const RULES: &str = "RULES";
/// Requests dropped by the rules whose end is still to come, by (tgid, kind, goid), so their
/// end probe writes nothing either.
pub const SUPPRESSED: &str = "SUPPRESSED";
/// Capacity of SUPPRESSED (LRU: a lost end can't pin an entry).
pub const MAX_SUPPRESSED: u32 = 16_384;
/// TCP bytes per traced process (`socket::SocketBytes`), keyed by tgid. User space gives each
/// traced process an entry when socket probes are on; the socket probes count only processes
/// with one (a single lookup per hit), and the HTTP server probes snapshot it.
pub const SOCKET_BYTES: &str = "SOCKET_BYTES";

/// Ring buffer size in bytes (power of two, multiple of the page size).
pub const EVENTS_BYTES: u32 = 1 << 22;
/// Capacity of the PROCESSES map.
pub const MAX_PROCESSES: u32 = 1024;
/// Above this many unread bytes the kernel wakes the reader; below it the reader
/// drains on its own timer. Saves a wake-up (and its ~1 µs) per event.
pub const WAKEUP_BYTES: u64 = 1 << 18;

/// Counter indices in COUNTERS.
pub const COUNTER_HITS: u32 = 0;
pub const COUNTER_RINGBUF_FULL: u32 = 1;
pub const COUNTER_READ_ERRORS: u32 = 2;
pub const COUNTER_NOT_TRACED: u32 = 3;
/// Server requests dropped by the path rules (no event written).
pub const COUNTER_FILTERED_SERVER: u32 = 4;
/// Client requests dropped by the path rules.
pub const COUNTER_FILTERED_CLIENT: u32 = 5;
/// End probes of dropped requests (no event written either).
pub const COUNTER_FILTERED_ENDS: u32 = 6;
/// Hits per probe: `COUNTER_PROBE_HITS + ProbeId as u32`.
pub const COUNTER_PROBE_HITS: u32 = 16;
pub const NUM_COUNTERS: u32 = COUNTER_PROBE_HITS + 32;

/// Key of SUPPRESSED.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct SuppressKey {
    pub tgid: u32,
    /// `SUPPRESS_SERVER` or `SUPPRESS_CLIENT`.
    pub kind: u32,
    pub goid: u64,
}

pub const SUPPRESS_SERVER: u32 = 1;
pub const SUPPRESS_CLIENT: u32 = 2;

/// Trace context of the request running on a goroutine, by (tgid, goid): written by the server
/// start probe (and by the Kraken announce probe for its scheduler goroutine), read by the
/// client start probe, deleted at the server's end.
pub const TRACE_CTX: &str = "TRACE_CTX";
pub const MAX_TRACE_CTX: u32 = 16_384;
/// Contexts waiting to be inserted into an outgoing request, by (tgid, path hash): written by
/// the client start probe, consumed by the sk_msg program.
pub const PENDING: &str = "PENDING";
pub const MAX_PENDING: u32 = 8_192;
/// Socket cookies of TCP connections a traced process is opening (sock_ops TCP_CONNECT_CB).
pub const CONNECTING: &str = "CONNECTING";
pub const MAX_CONNECTING: u32 = 8_192;
/// Established TCP connections of traced processes; the sk_msg program runs on their sends.
pub const SOCKETS: &str = "SOCKETS";
pub const MAX_SOCKETS: u32 = 65_536;
/// Kraken agent: the download's context by blob digest hex, for its announces.
pub const DIGEST_CTX: &str = "DIGEST_CTX";
pub const MAX_DIGEST_CTX: u32 = 4_096;

/// Propagation counters (COUNTERS indices).
/// A `traceparent` line was inserted into an outgoing request.
pub const COUNTER_PROP_INJECTED: u32 = 7;
/// The request already carried a `traceparent` (kept, nothing pending registered).
pub const COUNTER_PROP_HAD_HEADER: u32 = 8;
/// A send on a traced connection that does not start with an HTTP/1 method (TLS, body bytes).
pub const COUNTER_PROP_NOT_HTTP: u32 = 9;
/// An HTTP request whose request line end was not found within the scanned bytes.
pub const COUNTER_PROP_NO_LINE_END: u32 = 10;
/// An HTTP request with no pending context (untraced caller, or its context was consumed).
pub const COUNTER_PROP_NO_PENDING: u32 = 11;
/// bpf_msg_push_data / pull_data failed (the request went out unchanged).
pub const COUNTER_PROP_PUSH_FAILED: u32 = 12;

/// Key of TRACE_CTX.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct GoroutineKey {
    pub tgid: u32,
    pub _pad: u32,
    pub goid: u64,
}

/// Key of PENDING: the path as it appears in the request line (up to '?' or ' '), hashed.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct PendingKey {
    pub tgid: u32,
    pub path_hash: u32,
}

/// A trace context as the kernel keeps it.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TraceCtx {
    pub trace_id: [u8; 16],
    pub span_id: [u8; 8],
    /// 1 when sampled.
    pub sampled: u8,
    pub _pad: [u8; 7],
}

/// Path hash shared by the client probe and the sk_msg program (FNV-1a, 32 bits): stops at
/// '?', ' ' or the end.
pub const PATH_HASH_SEED: u32 = 0x811c_9dc5;
pub const PATH_HASH_PRIME: u32 = 0x0100_0193;
/// Path bytes hashed at most.
pub const PATH_HASH_MAX: usize = 128;

/// The hash of a path as sent (user-space mirror of the kernel loops, for tests).
pub fn path_hash(path: &[u8]) -> u32 {
    let mut h = PATH_HASH_SEED;
    for &c in path.iter().take(PATH_HASH_MAX) {
        if c == b'?' || c == b' ' {
            break;
        }
        h = (h ^ u32::from(c)).wrapping_mul(PATH_HASH_PRIME);
    }
    h
}

#[cfg(feature = "user")]
unsafe impl aya::Pod for TraceCtx {}
#[cfg(feature = "user")]
unsafe impl aya::Pod for GoroutineKey {}
#[cfg(feature = "user")]
unsafe impl aya::Pod for PendingKey {}
