//! Client side of Go net/http.
//!
//! Start: `net/http.(*Transport).roundTrip(t *Transport, req *Request)`: t in RAX, req in RBX.
//! End: the instruction after `call (*persistConn).roundTrip` inside `(*Transport).roundTrip`
//! (user space picks an emulated one, e.g. the `je` after `test rbx,rbx`), where that call's
//! results are still in registers: resp in RAX, err's itab and data in RBX and RCX.

use aya_ebpf::{macros::uprobe, programs::ProbeContext};
use tracer_common::{
    event::{GoStr, HttpClientEndEvent, HttpClientEvent, TRACEPARENT_LEN},
    maps::{COUNTER_FILTERED_CLIENT, SUPPRESS_CLIENT},
    offsets::FLAG_PROPAGATE,
    probe::ProbeId,
};

use crate::{
    goabi, gomap,
    gostr::{field_u64, read_string},
    maps, probes, propagation,
    rules::{self, Verdict},
};

#[uprobe]
pub fn http_client(ctx: ProbeContext) -> u32 {
    let _ = try_http_client::<true>(&ctx);
    0
}

/// `http_client` without reading the request's own `Traceparent` out of its Header map, for
/// kernels whose verifier gives up on the full program (Debian 12's 6.1: "BPF program is too
/// large"). Without knowing whether the application set its own header it must not insert
/// one, so it leaves nothing pending: outgoing requests are not propagated (the client spans
/// still get their kernel ids and parents). User space loads it only when `http_client` is
/// refused, and says so.
#[uprobe]
pub fn http_client_basic(ctx: ProbeContext) -> u32 {
    let _ = try_http_client::<false>(&ctx);
    0
}

#[inline(always)]
fn try_http_client<const OWN_TRACEPARENT: bool>(ctx: &ProbeContext) -> Option<()> {
    let hit = probes::hit(ctx, ProbeId::HttpClient)?;
    let req = goabi::arg(ctx, 1);
    let mut entry = probes::reserve::<HttpClientEvent>()?;
    let ev = entry.as_mut_ptr();
    let off = &hit.cfg.offsets;
    let url = field_u64(req, off.request_url);
    unsafe {
        // The path as sent: RawPath when Go kept an escaped form (e.g. library%2Fubuntu),
        // else Path. It must match what the server sees.
        read_string(url, off.url_raw_path, &mut (*ev).path);
        if (*ev).path.len == 0 {
            read_string(url, off.url_path, &mut (*ev).path);
        }
        let threshold = match rules::active() {
            Some(r) => {
                if rules::verdict(r, &(*ev).path, true) == Verdict::Drop {
                    entry.discard(0);
                    rules::suppress(hit.hdr.tgid, SUPPRESS_CLIENT, hit.hdr.goid);
                    maps::count(COUNTER_FILTERED_CLIENT);
                    return None;
                }
                rules::threshold(r)
            }
            None => rules::default_threshold(),
        };
        (*ev).hdr = hit.hdr;
        (*ev).request = req;
        (*ev).parent_goid = field_u64(hit.hdr.goroutine, off.g_parent_goid);
        let parent = propagation::goroutine_ctx(hit.hdr.tgid, hit.hdr.goid, (*ev).parent_goid);
        if OWN_TRACEPARENT {
            gomap::read_traceparent(hit.cfg, req, &mut (*ev).traceparent);
            propagation::client_start(
                hit.hdr.tgid,
                parent,
                &(*ev).traceparent,
                &(*ev).path,
                threshold,
                hit.cfg.flags & FLAG_PROPAGATE != 0,
                &mut (*ev).ids,
            );
        } else {
            (*ev).traceparent.len = 0;
            (*ev).traceparent.read_error = 0;
            let none = GoStr::<TRACEPARENT_LEN>::EMPTY;
            propagation::client_start(
                hit.hdr.tgid,
                parent,
                &none,
                &(*ev).path,
                threshold,
                false,
                &mut (*ev).ids,
            );
        }
        read_string(req, off.request_method, &mut (*ev).method);
        read_string(url, off.url_scheme, &mut (*ev).scheme);
        read_string(url, off.url_host, &mut (*ev).host);
    }
    entry.submit(maps::submit_flags());
    Some(())
}

#[uprobe]
pub fn http_client_end(ctx: ProbeContext) -> u32 {
    let _ = try_http_client_end(&ctx);
    0
}

#[inline(always)]
fn try_http_client_end(ctx: &ProbeContext) -> Option<()> {
    let hit = probes::hit(ctx, ProbeId::HttpClientEnd)?;
    if rules::active().is_some()
        && rules::take_suppressed(hit.hdr.tgid, SUPPRESS_CLIENT, hit.hdr.goid)
    {
        return None;
    }
    let resp = goabi::arg(ctx, 0);
    let err = goabi::arg(ctx, 1);
    let mut entry = probes::reserve::<HttpClientEndEvent>()?;
    let ev = entry.as_mut_ptr();
    unsafe {
        (*ev).hdr = hit.hdr;
        (*ev).response = resp;
        (*ev).error = err;
        (*ev).status = if err == 0 {
            field_u64(resp, hit.cfg.offsets.resp_status_code) as i64
        } else {
            0
        };
    }
    entry.submit(maps::submit_flags());
    Some(())
}
