//! One module per probed Go location (rows of `tracer_common::probe::PROBES`).

pub mod http_client;
pub mod http_serve;
pub mod kraken;
pub mod socket;

use aya_ebpf::{
    helpers::{bpf_get_current_pid_tgid, bpf_ktime_get_ns},
    maps::ring_buf::RingBufEntry,
    programs::ProbeContext,
};
use tracer_common::{
    event::EventHeader,
    maps::{COUNTER_NOT_TRACED, COUNTER_PROBE_HITS, COUNTER_RINGBUF_FULL},
    offsets::ProcessConfig,
    probe::ProbeId,
};

use crate::{goabi, gostr::field_u64, maps};

/// Everything a probe needs about the hit: the process's configuration and the event header.
pub struct Hit {
    pub cfg: &'static ProcessConfig,
    pub hdr: EventHeader,
}

/// Looks up the traced process (counted and `None` when this process is not traced) and
/// builds the common header.
#[inline(always)]
pub fn hit(ctx: &ProbeContext, probe: ProbeId) -> Option<Hit> {
    let pid_tgid = bpf_get_current_pid_tgid();
    let tgid = (pid_tgid >> 32) as u32;
    let Some(cfg) = (unsafe { maps::PROCESSES.get(&tgid) }) else {
        maps::count(COUNTER_NOT_TRACED);
        return None;
    };
    maps::count(COUNTER_PROBE_HITS + probe as u32);
    let g = goabi::goroutine(ctx);
    Some(Hit {
        cfg,
        hdr: EventHeader {
            probe: probe as u32,
            tgid,
            tid: pid_tgid as u32,
            _pad: 0,
            goroutine: g,
            goid: field_u64(g, cfg.offsets.g_goid),
            ktime_ns: unsafe { bpf_ktime_get_ns() },
        },
    })
}

/// Reserves an event of type T in the ring buffer (counted when full).
#[inline(always)]
pub fn reserve<T: 'static>() -> Option<RingBufEntry<T>> {
    let e = maps::EVENTS.reserve::<T>(0);
    if e.is_none() {
        maps::count(COUNTER_RINGBUF_FULL);
    }
    e
}
