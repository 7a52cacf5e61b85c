//! One module per Go function probed (rows of `tracer_common::probe::PROBES`).

pub mod http_serve;

use aya_ebpf::{
    helpers::bpf_get_current_pid_tgid, helpers::bpf_ktime_get_ns, programs::ProbeContext,
};
use tracer_common::{
    event::EventHeader, maps::COUNTER_NOT_TRACED, offsets::ProcessConfig, probe::ProbeId,
};

use crate::{goabi, maps};

/// The traced process's configuration, or `None` (counted) when this process is not traced.
#[inline(always)]
pub fn process() -> Option<(u32, u32, &'static ProcessConfig)> {
    let pid_tgid = bpf_get_current_pid_tgid();
    let tgid = (pid_tgid >> 32) as u32;
    match unsafe { maps::PROCESSES.get(&tgid) } {
        Some(cfg) => Some((tgid, pid_tgid as u32, cfg)),
        None => {
            maps::count(COUNTER_NOT_TRACED);
            None
        }
    }
}

#[inline(always)]
pub fn header(ctx: &ProbeContext, probe: ProbeId, tgid: u32, tid: u32) -> EventHeader {
    EventHeader {
        probe: probe as u32,
        tgid,
        tid,
        _pad: 0,
        goroutine: goabi::goroutine(ctx),
        ktime_ns: unsafe { bpf_ktime_get_ns() },
    }
}
