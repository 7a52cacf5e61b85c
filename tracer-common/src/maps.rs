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
