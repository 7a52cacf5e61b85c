//! Trace context in the kernel, and its propagation into outgoing HTTP/1 requests.
//!
//! The uprobes give spans their ids here (so the ids are known when the request is written):
//! the server start probe keeps its context in `TRACE_CTX` by goroutine, the client start probe
//! takes the context of its goroutine (or of the goroutine that started it) and leaves the
//! client span's context in `PENDING`, keyed by the request's path as it will appear in the
//! request line (Go's `persistConn.writeLoop` goroutine writes the request, not the caller's).
//!
//! `propagate_sockops` (cgroup sock_ops) puts the TCP connections traced processes open into
//! `SOCKETS`; `propagate_msg` (sk_msg on `SOCKETS`) runs on each of their sends and, when a
//! send starts with an HTTP/1 request line whose path has a pending context, inserts
//! `traceparent: 00-<trace id>-<span id>-<flags>\r\n` right after the request line. It always
//! passes the message on; anything it does not recognise goes out unchanged.

use aya_ebpf::{
    bindings::{
        BPF_ANY, BPF_SOCK_OPS_ACTIVE_ESTABLISHED_CB, BPF_SOCK_OPS_TCP_CONNECT_CB, sk_action,
    },
    helpers::{
        bpf_get_current_pid_tgid, bpf_get_prandom_u32,
        generated::{bpf_get_socket_cookie, bpf_msg_pull_data},
    },
    macros::{map, sk_msg, sock_ops},
    maps::{LruHashMap, SockHash},
    programs::{SkMsgContext, SockOpsContext},
};
use tracer_common::{
    event::{
        GoStr, IDS_HAD_TRACEPARENT, IDS_LOCAL_PARENT, IDS_PENDING, IDS_REMOTE_PARENT, IDS_SAMPLED,
        IDS_VALID, SpanIds, TRACEPARENT_LEN,
    },
    maps::{
        COUNTER_PROP_INJECTED, COUNTER_PROP_NO_LINE_END, COUNTER_PROP_NO_PENDING,
        COUNTER_PROP_NOT_HTTP, COUNTER_PROP_PUSH_FAILED, GoroutineKey, MAX_CONNECTING,
        MAX_DIGEST_CTX, MAX_PENDING, MAX_SOCKETS, MAX_TRACE_CTX, PATH_HASH_MAX, PATH_HASH_PRIME,
        PATH_HASH_SEED, PendingKey, TraceCtx,
    },
    rules::sampled,
};

use crate::maps;

#[map]
pub static TRACE_CTX: LruHashMap<GoroutineKey, TraceCtx> =
    LruHashMap::with_max_entries(MAX_TRACE_CTX, 0);

#[map]
pub static PENDING: LruHashMap<PendingKey, TraceCtx> = LruHashMap::with_max_entries(MAX_PENDING, 0);

#[map]
static CONNECTING: LruHashMap<u64, u32> = LruHashMap::with_max_entries(MAX_CONNECTING, 0);

#[map]
static SOCKETS: SockHash<u64> = SockHash::with_max_entries(MAX_SOCKETS, 0);

/// Digest hex (64 bytes, sha256) → the context of the agent download of that blob.
#[map]
pub static DIGEST_CTX: LruHashMap<[u8; 64], TraceCtx> =
    LruHashMap::with_max_entries(MAX_DIGEST_CTX, 0);

/// Length of `traceparent: 00-<32>-<16>-<2>\r\n`.
pub const LINE_LEN: u32 = 70;
/// Bytes of a send searched for the end of the request line.
const SCAN: usize = 512;

/// Fills `out` with random bytes, never all zero (ids must not be).
#[inline(always)]
fn random_bytes<const N: usize>(out: &mut [u8; N]) {
    for chunk in out.chunks_exact_mut(4) {
        let r = unsafe { bpf_get_prandom_u32() }.to_ne_bytes();
        chunk[0] = r[0];
        chunk[1] = r[1];
        chunk[2] = r[2];
        chunk[3] = r[3];
    }
    if is_zero(out) {
        out[N - 1] = 1;
    }
}

/// Whether every byte is zero (a loop: `==` on arrays would call memcmp, absent in BPF).
#[inline(always)]
fn is_zero(b: &[u8]) -> bool {
    let mut acc = 0u8;
    for &x in b {
        acc |= x;
    }
    acc == 0
}

#[inline(always)]
fn span_id() -> [u8; 8] {
    let mut s = [0u8; 8];
    random_bytes(&mut s);
    s
}

#[inline(always)]
fn hex_val(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        _ => None,
    }
}

#[inline(always)]
fn decode<const N: usize>(src: &[u8], out: &mut [u8; N]) -> Option<()> {
    for (i, o) in out.iter_mut().enumerate() {
        let hi = hex_val(*src.get(2 * i)?)?;
        let lo = hex_val(*src.get(2 * i + 1)?)?;
        *o = hi << 4 | lo;
    }
    Some(())
}

/// Parses a W3C `traceparent` (version 00 layout; a higher version is read by the same
/// layout, as the spec asks): (trace id, parent id, sampled). `None` when invalid.
#[inline(always)]
fn parse_traceparent(tp: &GoStr<TRACEPARENT_LEN>) -> Option<([u8; 16], [u8; 8], bool)> {
    let len = tp.len as usize;
    if tp.read_error != 0 || len < 55 || len > TRACEPARENT_LEN {
        return None;
    }
    let b = &tp.bytes;
    if b[2] != b'-' || b[35] != b'-' || b[52] != b'-' || (b[0] == b'f' && b[1] == b'f') {
        return None;
    }
    if len > 55 && b[55] != b'-' {
        return None;
    }
    let mut version = [0u8; 1];
    decode(&b[0..2], &mut version)?;
    if version[0] == 0 && len != 55 {
        return None;
    }
    let mut trace_id = [0u8; 16];
    decode(&b[3..35], &mut trace_id)?;
    let mut parent = [0u8; 8];
    decode(&b[36..52], &mut parent)?;
    let mut flags = [0u8; 1];
    decode(&b[53..55], &mut flags)?;
    if is_zero(&trace_id) || is_zero(&parent) {
        return None;
    }
    Some((trace_id, parent, flags[0] & 1 != 0))
}

/// Server start: the server span's ids (continuing a valid incoming `traceparent`, else a new
/// trace sampled by `threshold`), kept for the goroutine's client calls.
#[inline(always)]
pub fn server_start(
    tgid: u32,
    goid: u64,
    tp: &GoStr<TRACEPARENT_LEN>,
    threshold: u64,
    ids: &mut SpanIds,
) -> TraceCtx {
    let mut ctx = TraceCtx::default();
    ids.flags = IDS_VALID;
    ids.parent_span_id = [0; 8];
    match parse_traceparent(tp) {
        Some((trace_id, parent, s)) => {
            ctx.trace_id = trace_id;
            ctx.sampled = u8::from(s);
            ids.parent_span_id = parent;
            ids.flags |= IDS_REMOTE_PARENT;
        }
        None => {
            random_bytes(&mut ctx.trace_id);
            ctx.sampled = u8::from(sampled(threshold, &ctx.trace_id));
        }
    }
    ctx.span_id = span_id();
    ids.trace_id = ctx.trace_id;
    ids.span_id = ctx.span_id;
    if ctx.sampled != 0 {
        ids.flags |= IDS_SAMPLED;
    }
    let key = GoroutineKey {
        tgid,
        _pad: 0,
        goid,
    };
    let _ = TRACE_CTX.insert(&key, &ctx, 0);
    ctx
}

/// Server end: forgets the goroutine's context.
#[inline(always)]
pub fn server_end(tgid: u32, goid: u64) {
    let key = GoroutineKey {
        tgid,
        _pad: 0,
        goid,
    };
    let _ = TRACE_CTX.remove(&key);
}

/// The context of the request running on this goroutine, or on the one that started it.
#[inline(always)]
pub fn goroutine_ctx(tgid: u32, goid: u64, parent_goid: u64) -> Option<&'static TraceCtx> {
    let key = GoroutineKey {
        tgid,
        _pad: 0,
        goid,
    };
    if let Some(c) = unsafe { TRACE_CTX.get(&key) } {
        return Some(c);
    }
    if parent_goid == 0 {
        return None;
    }
    let key = GoroutineKey {
        tgid,
        _pad: 0,
        goid: parent_goid,
    };
    unsafe { TRACE_CTX.get(&key) }
}

/// Client start: the client span's ids, and its context left for the sk_msg program unless the
/// request already carries a `traceparent` (then that header's trace is the span's parent).
#[inline(always)]
pub fn client_start(
    tgid: u32,
    parent: Option<&TraceCtx>,
    own_tp: &GoStr<TRACEPARENT_LEN>,
    path: &GoStr<{ tracer_common::event::PATH_LEN }>,
    threshold: u64,
    propagate: bool,
    ids: &mut SpanIds,
) {
    let mut ctx = TraceCtx::default();
    ids.flags = IDS_VALID;
    ids.parent_span_id = [0; 8];
    let had = parse_traceparent(own_tp);
    if let Some((trace_id, p, s)) = had {
        ctx.trace_id = trace_id;
        ctx.sampled = u8::from(s);
        ids.parent_span_id = p;
        ids.flags |= IDS_HAD_TRACEPARENT | IDS_REMOTE_PARENT;
    } else if own_tp.len != 0 {
        // Set but not valid: still the application's; left alone.
        ids.flags |= IDS_HAD_TRACEPARENT;
    }
    if had.is_none() {
        match parent {
            Some(p) => {
                ctx.trace_id = p.trace_id;
                ctx.sampled = p.sampled;
                ids.parent_span_id = p.span_id;
                ids.flags |= IDS_LOCAL_PARENT;
            }
            None => {
                random_bytes(&mut ctx.trace_id);
                ctx.sampled = u8::from(sampled(threshold, &ctx.trace_id));
            }
        }
    }
    ctx.span_id = span_id();
    ids.trace_id = ctx.trace_id;
    ids.span_id = ctx.span_id;
    if ctx.sampled != 0 {
        ids.flags |= IDS_SAMPLED;
    }
    if ids.flags & IDS_HAD_TRACEPARENT != 0 {
        maps::count(tracer_common::maps::COUNTER_PROP_HAD_HEADER);
        return;
    }
    if !propagate {
        return;
    }
    let key = PendingKey {
        tgid,
        path_hash: hash_path(path),
    };
    if PENDING.insert(&key, &ctx, 0).is_ok() {
        ids.flags |= IDS_PENDING;
    }
}

#[inline(always)]
fn hash_path<const N: usize>(path: &GoStr<N>) -> u32 {
    let n = (path.len as usize).min(N).min(PATH_HASH_MAX);
    let mut h = PATH_HASH_SEED;
    for i in 0..PATH_HASH_MAX.min(N) {
        if i >= n {
            break;
        }
        let c = path.bytes[i];
        if c == b'?' || c == b' ' {
            break;
        }
        h = (h ^ u32::from(c)).wrapping_mul(PATH_HASH_PRIME);
    }
    h
}

#[sock_ops]
pub fn propagate_sockops(ctx: SockOpsContext) -> u32 {
    let op = ctx.op();
    if op == BPF_SOCK_OPS_TCP_CONNECT_CB {
        // Runs in the connecting task: keep only connections of traced processes.
        let tgid = (bpf_get_current_pid_tgid() >> 32) as u32;
        if unsafe { maps::PROCESSES.get(&tgid) }.is_some() {
            let cookie = unsafe { bpf_get_socket_cookie(ctx.ops.cast()) };
            let _ = CONNECTING.insert(&cookie, &tgid, 0);
        }
    } else if op == BPF_SOCK_OPS_ACTIVE_ESTABLISHED_CB {
        let mut cookie = unsafe { bpf_get_socket_cookie(ctx.ops.cast()) };
        if unsafe { CONNECTING.get(&cookie) }.is_some() {
            let _ = CONNECTING.remove(&cookie);
            let _ = SOCKETS.update(&mut cookie, unsafe { &mut *ctx.ops }, u64::from(BPF_ANY));
        }
    }
    1
}

#[sk_msg]
pub fn propagate_msg(ctx: SkMsgContext) -> u32 {
    let _ = try_propagate_msg(&ctx);
    sk_action::SK_PASS
}

#[inline(always)]
fn try_propagate_msg(ctx: &SkMsgContext) -> Option<()> {
    let tgid = (bpf_get_current_pid_tgid() >> 32) as u32;
    unsafe { maps::PROCESSES.get(&tgid) }?;
    let size = ctx.size() as usize;
    let want = size.min(SCAN);
    if want < 16 {
        maps::count(COUNTER_PROP_NOT_HTTP);
        return None;
    }
    if ctx.data_end() - ctx.data() < want {
        let r = unsafe { bpf_msg_pull_data(ctx.msg, 0, want as u32, 0) };
        if r != 0 {
            maps::count(COUNTER_PROP_PUSH_FAILED);
            return None;
        }
    }
    let (data, end) = (ctx.data(), ctx.data_end());
    // The method: 3 to 7 upper-case letters, then a space, then an origin-form target.
    let mut m = 0usize;
    for i in 0..8usize {
        if data + i + 1 > end {
            maps::count(COUNTER_PROP_NOT_HTTP);
            return None;
        }
        let c = unsafe { *((data + i) as *const u8) };
        if c == b' ' {
            m = i;
            break;
        }
        if !c.is_ascii_uppercase() {
            maps::count(COUNTER_PROP_NOT_HTTP);
            return None;
        }
    }
    if !(3..=7).contains(&m) {
        maps::count(COUNTER_PROP_NOT_HTTP);
        return None;
    }
    if data + m + 2 > end || unsafe { *((data + m + 1) as *const u8) } != b'/' {
        maps::count(COUNTER_PROP_NOT_HTTP);
        return None;
    }
    // Hash the path (to '?' or ' '), then find the request line's end.
    let mut h = PATH_HASH_SEED;
    let mut hashing = true;
    let mut hashed = 0usize;
    let mut line_end = 0usize;
    for k in 0..SCAN {
        let i = m + 1 + k;
        if data + i + 1 > end {
            break;
        }
        let c = unsafe { *((data + i) as *const u8) };
        if c == b'\n' {
            line_end = i + 1;
            break;
        }
        if hashing {
            if c == b'?' || c == b' ' || hashed >= PATH_HASH_MAX {
                hashing = false;
            } else {
                h = (h ^ u32::from(c)).wrapping_mul(PATH_HASH_PRIME);
                hashed += 1;
            }
        }
    }
    if line_end == 0 {
        maps::count(COUNTER_PROP_NO_LINE_END);
        return None;
    }
    let key = PendingKey { tgid, path_hash: h };
    let Some(pending) = (unsafe { PENDING.get(&key) }).copied() else {
        maps::count(COUNTER_PROP_NO_PENDING);
        return None;
    };
    let _ = PENDING.remove(&key);
    let at = line_end as u32;
    if ctx.push_data(at, LINE_LEN, 0).is_err() {
        maps::count(COUNTER_PROP_PUSH_FAILED);
        return None;
    }
    if unsafe { bpf_msg_pull_data(ctx.msg, at, at + LINE_LEN, 0) } != 0 {
        // The 70 pushed bytes are in the message but can't be written: never send them
        // uninitialised: take them out again.
        let _ = ctx.pop_data(at, LINE_LEN, 0);
        maps::count(COUNTER_PROP_PUSH_FAILED);
        return None;
    }
    let (data, end) = (ctx.data(), ctx.data_end());
    if data + LINE_LEN as usize > end {
        let _ = ctx.pop_data(at, LINE_LEN, 0);
        maps::count(COUNTER_PROP_PUSH_FAILED);
        return None;
    }
    let line = unsafe { &mut *(data as *mut [u8; LINE_LEN as usize]) };
    write_line(line, &pending);
    maps::count(COUNTER_PROP_INJECTED);
    Some(())
}

const HEX: &[u8; 16] = b"0123456789abcdef";

#[inline(always)]
fn write_line(line: &mut [u8; LINE_LEN as usize], ctx: &TraceCtx) {
    line[..16].copy_from_slice(b"traceparent: 00-");
    for (i, b) in ctx.trace_id.iter().enumerate() {
        line[16 + 2 * i] = HEX[(b >> 4) as usize];
        line[17 + 2 * i] = HEX[(b & 15) as usize];
    }
    line[48] = b'-';
    for (i, b) in ctx.span_id.iter().enumerate() {
        line[49 + 2 * i] = HEX[(b >> 4) as usize];
        line[50 + 2 * i] = HEX[(b & 15) as usize];
    }
    line[65] = b'-';
    line[66] = b'0';
    line[67] = if ctx.sampled != 0 { b'1' } else { b'0' };
    line[68] = b'\r';
    line[69] = b'\n';
}

/// Kraken agent: the download of a blob keeps its context under the digest, for the announces
/// the scheduler makes on its own goroutines.
#[inline(always)]
pub fn remember_digest(digest: &[u8; 64], ctx: &TraceCtx) {
    let _ = DIGEST_CTX.insert(digest, ctx, 0);
}

/// Kraken agent: the announcer's goroutine takes the context of the download of its blob
/// (none: a re-announce of a finished download, unsampled, like user space decides).
#[inline(always)]
pub fn adopt_digest(tgid: u32, goid: u64, digest: &[u8; 64]) {
    let ctx = match unsafe { DIGEST_CTX.get(digest) } {
        Some(c) => *c,
        None => {
            let mut c = TraceCtx::default();
            random_bytes(&mut c.trace_id);
            c.span_id = span_id();
            c.sampled = 0;
            c
        }
    };
    let key = GoroutineKey {
        tgid,
        _pad: 0,
        goid,
    };
    let _ = TRACE_CTX.insert(&key, &ctx, 0);
}
