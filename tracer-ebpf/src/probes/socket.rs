//! Kernel socket probes: TCP payload bytes per traced process, counted in `SOCKET_BYTES`
//! (see `tracer_common::socket`). User space attaches one of two sets, never both:
//!
//! - kprobe path: `kretprobe` on `tcp_sendmsg` and (kernels < 6.5, sendfile) `tcp_sendpage`
//!   (their return value is the bytes accepted), `kprobe` on `tcp_cleanup_rbuf(sk, copied)`
//!   (called once the reader consumed `copied` bytes, by recvmsg and splice alike);
//! - tracepoint path (kernels >= 6.3, no kprobes needed): `sock:sock_send_length` and
//!   `sock:sock_recv_length`, fired by every socket's sendmsg/recvmsg with the socket's family
//!   and protocol already in the record, so only TCP over IPv4/IPv6 is counted without reading
//!   any kernel struct (no BTF, no CO-RE).
//!
//! Per hit: one `bpf_get_current_pid_tgid`, one hash lookup (processes that are not traced
//! stop there) and two atomic adds. Helpers used all predate Linux 5.x.

use core::intrinsics::{AtomicOrdering, atomic_xadd};

use aya_ebpf::{
    EbpfContext as _,
    helpers::bpf_get_current_pid_tgid,
    macros::{kprobe, kretprobe, tracepoint},
    programs::{ProbeContext, RetProbeContext, TracePointContext},
};
use tracer_common::socket::{
    AF_INET, AF_INET6, IPPROTO_TCP, MSG_PEEK, TP_OFF_FAMILY, TP_OFF_FLAGS, TP_OFF_PROTOCOL,
    TP_OFF_RET, TcpSnapshot,
};

use crate::maps;

#[derive(Clone, Copy)]
enum Dir {
    Rx,
    Tx,
}

/// Adds `n` bytes (and one call) to the current process's counters, if it is traced.
#[inline(always)]
fn count(dir: Dir, n: i32) {
    if n <= 0 {
        return;
    }
    let tgid = (bpf_get_current_pid_tgid() >> 32) as u32;
    let Some(c) = maps::SOCKET_BYTES.get_ptr_mut(&tgid) else {
        return;
    };
    let (bytes, calls) = match dir {
        Dir::Rx => unsafe { (&raw mut (*c).rx_bytes, &raw mut (*c).rx_calls) },
        Dir::Tx => unsafe { (&raw mut (*c).tx_bytes, &raw mut (*c).tx_calls) },
    };
    // SAFETY: map values are 8-byte aligned and live while the program runs. Every thread of
    // the process updates the same entry, hence atomic adds; their results are unused, so LLVM
    // emits the plain `lock add` (BPF_ATOMIC | BPF_ADD, no fetch) every BPF kernel accepts.
    // (The bpf target has no compare-and-swap, so core's `AtomicU64::fetch_add` is unavailable.)
    unsafe {
        atomic_xadd::<u64, u64, { AtomicOrdering::Relaxed }>(bytes, n as u64);
        atomic_xadd::<u64, u64, { AtomicOrdering::Relaxed }>(calls, 1);
    }
}

/// The counters of `tgid` for an HTTP event (`counted` = 0 when socket probes are off).
#[inline(always)]
pub fn snapshot(tgid: u32) -> TcpSnapshot {
    match unsafe { maps::SOCKET_BYTES.get(&tgid) } {
        Some(c) => TcpSnapshot {
            rx_bytes: read_counter(&c.rx_bytes),
            tx_bytes: read_counter(&c.tx_bytes),
            counted: 1,
            _pad: 0,
        },
        None => TcpSnapshot::default(),
    }
}

#[inline(always)]
fn read_counter(v: &u64) -> u64 {
    // SAFETY: an aligned u64 of a map value; a plain 8-byte load cannot tear.
    unsafe { core::ptr::read_volatile(v) }
}

#[kretprobe]
pub fn socket_tcp_sendmsg(ctx: RetProbeContext) -> u32 {
    count(Dir::Tx, ctx.ret::<i32>());
    0
}

#[kretprobe]
pub fn socket_tcp_sendpage(ctx: RetProbeContext) -> u32 {
    count(Dir::Tx, ctx.ret::<i32>());
    0
}

#[kprobe]
pub fn socket_tcp_cleanup_rbuf(ctx: ProbeContext) -> u32 {
    // `copied` is an int: negative (an error) or 0 when nothing was consumed.
    if let Some(copied) = ctx.arg::<i32>(1) {
        count(Dir::Rx, copied);
    }
    0
}

/// The `sock_{send,recv}_length` record: TCP over IPv4/IPv6 only; `ret` (bytes, or a
/// negative errno) and `flags`.
#[inline(always)]
fn tcp_record(ctx: &TracePointContext) -> Option<(i32, i32)> {
    let p = ctx.as_ptr().cast::<u8>();
    // SAFETY: tracepoint programs may read their record directly (constant, aligned offsets
    // inside it; checked against the tracepoint's format by user space before attaching).
    let (family, protocol, ret, flags) = unsafe {
        (
            *p.add(TP_OFF_FAMILY).cast::<u16>(),
            *p.add(TP_OFF_PROTOCOL).cast::<u16>(),
            *p.add(TP_OFF_RET).cast::<i32>(),
            *p.add(TP_OFF_FLAGS).cast::<i32>(),
        )
    };
    ((family == AF_INET || family == AF_INET6) && protocol == IPPROTO_TCP).then_some((ret, flags))
}

#[tracepoint(category = "sock", name = "sock_send_length")]
pub fn socket_send_length(ctx: TracePointContext) -> u32 {
    if let Some((ret, _)) = tcp_record(&ctx) {
        count(Dir::Tx, ret);
    }
    0
}

#[tracepoint(category = "sock", name = "sock_recv_length")]
pub fn socket_recv_length(ctx: TracePointContext) -> u32 {
    if let Some((ret, flags)) = tcp_record(&ctx)
        && flags & MSG_PEEK == 0
    {
        count(Dir::Rx, ret);
    }
    0
}
