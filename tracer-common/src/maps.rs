//! Names and sizes of the BPF maps, shared so neither side spells them twice.

/// Ring buffer carrying every event to user space.
pub const EVENTS: &str = "EVENTS";
/// Per-traced-process configuration (`offsets::ProcessConfig`), keyed by tgid.
/// A process without an entry produces no events.
pub const PROCESSES: &str = "PROCESSES";
/// Per-CPU counters (`COUNTER_*` indices).
pub const COUNTERS: &str = "COUNTERS";

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
pub const NUM_COUNTERS: u32 = 4;
