//! The maps shared by every program (names from `tracer_common::maps`).

use aya_ebpf::{
    bindings::{BPF_RB_FORCE_WAKEUP, BPF_RB_NO_WAKEUP},
    macros::map,
    maps::{Array, HashMap, LruHashMap, PerCpuArray, RingBuf},
};
use tracer_common::{
    maps::{EVENTS_BYTES, MAX_PROCESSES, MAX_SUPPRESSED, NUM_COUNTERS, SuppressKey, WAKEUP_BYTES},
    offsets::ProcessConfig,
    rules::KernelRules,
    socket::SocketBytes,
};

#[map]
pub static EVENTS: RingBuf = RingBuf::with_byte_size(EVENTS_BYTES, 0);

#[map]
pub static PROCESSES: HashMap<u32, ProcessConfig> = HashMap::with_max_entries(MAX_PROCESSES, 0);

#[map]
pub static COUNTERS: PerCpuArray<u64> = PerCpuArray::with_max_entries(NUM_COUNTERS, 0);

#[map]
pub static SOCKET_BYTES: HashMap<u32, SocketBytes> = HashMap::with_max_entries(MAX_PROCESSES, 0);

#[map]
pub static RULES: Array<KernelRules> = Array::with_max_entries(1, 0);

#[map]
pub static SUPPRESSED: LruHashMap<SuppressKey, u8> =
    LruHashMap::with_max_entries(MAX_SUPPRESSED, 0);

#[inline(always)]
pub fn count(index: u32) {
    if let Some(c) = COUNTERS.get_ptr_mut(index) {
        // Per-CPU slot: no other writer while this program runs on this CPU.
        unsafe { *c += 1 };
    }
}

/// Submit flags: don't wake the reader for every event (a wake-up costs about a
/// microsecond in the traced thread); wake it once enough bytes are waiting.
#[inline(always)]
pub fn submit_flags() -> u64 {
    if EVENTS.query(0) > WAKEUP_BYTES {
        u64::from(BPF_RB_FORCE_WAKEUP)
    } else {
        u64::from(BPF_RB_NO_WAKEUP)
    }
}
