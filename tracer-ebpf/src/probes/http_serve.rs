//! Server side of Go net/http.
//!
//! `net/http.serverHandler.ServeHTTP(sh serverHandler, rw ResponseWriter, req *Request)`:
//! sh.srv in RAX, rw's itab and data in RBX and RCX, req in RDI.
//! `net/http.(*response).finishRequest(w *response)`: w in RAX; called on the same goroutine
//! once the handler returned and the response is flushed.

use aya_ebpf::{macros::uprobe, programs::ProbeContext};
use tracer_common::{
    event::{HttpServeEndEvent, HttpServeEvent},
    maps::{COUNTER_FILTERED_SERVER, SUPPRESS_SERVER},
    offsets::{FLAG_CAPTURE_QUERY, FLAG_KRAKEN},
    probe::ProbeId,
};

use crate::{
    goabi, gomap,
    gostr::{field_i64, field_u64, read_string},
    maps,
    probes::{self, kraken, socket},
    propagation,
    rules::{self, Verdict},
};

#[uprobe]
pub fn http_serve(ctx: ProbeContext) -> u32 {
    let _ = try_http_serve(&ctx);
    0
}

#[inline(always)]
fn try_http_serve(ctx: &ProbeContext) -> Option<()> {
    let hit = probes::hit(ctx, ProbeId::HttpServe)?;
    let req = goabi::arg(ctx, 3);
    let mut entry = probes::reserve::<HttpServeEvent>()?;
    let ev = entry.as_mut_ptr();
    let off = &hit.cfg.offsets;
    unsafe {
        // The request path as sent (RawPath when Go kept an escaped form, else Path), like the
        // client side; the query only when the user opted in (privacy: it often holds tokens).
        if hit.cfg.flags & FLAG_CAPTURE_QUERY != 0 {
            read_string(req, off.request_uri, &mut (*ev).uri);
        } else {
            let url = field_u64(req, off.request_url);
            read_string(url, off.url_raw_path, &mut (*ev).uri);
            if (*ev).uri.len == 0 {
                read_string(url, off.url_path, &mut (*ev).uri);
            }
        }
        let (verdict, threshold) = match rules::active() {
            Some(r) => (rules::verdict(r, &(*ev).uri, false), rules::threshold(r)),
            None => (Verdict::Pass, rules::default_threshold()),
        };
        if verdict != Verdict::Drop {
            gomap::read_traceparent(hit.cfg, req, &mut (*ev).traceparent);
        }
        if verdict == Verdict::Drop
            || (verdict == Verdict::DropUnlessContinued && (*ev).traceparent.len == 0)
        {
            entry.discard(0);
            rules::suppress(hit.hdr.tgid, SUPPRESS_SERVER, hit.hdr.goid);
            maps::count(COUNTER_FILTERED_SERVER);
            return None;
        }
        (*ev).hdr = hit.hdr;
        (*ev).request = req;
        (*ev).content_length = field_i64(req, off.request_content_length, -1);
        (*ev).tcp = socket::snapshot(hit.hdr.tgid);
        let ctx = propagation::server_start(
            hit.hdr.tgid,
            hit.hdr.goid,
            &(*ev).traceparent,
            threshold,
            &mut (*ev).ids,
        );
        if hit.cfg.flags & FLAG_KRAKEN != 0 {
            kraken::remember_download(&(*ev).uri, &ctx);
        }
        read_string(req, off.request_method, &mut (*ev).method);
        read_string(req, off.request_host, &mut (*ev).host);
        read_string(req, off.request_remote_addr, &mut (*ev).remote_addr);
    }
    entry.submit(maps::submit_flags());
    Some(())
}

#[uprobe]
pub fn http_serve_end(ctx: ProbeContext) -> u32 {
    let _ = try_http_serve_end(&ctx);
    0
}

#[inline(always)]
fn try_http_serve_end(ctx: &ProbeContext) -> Option<()> {
    let hit = probes::hit(ctx, ProbeId::HttpServeEnd)?;
    propagation::server_end(hit.hdr.tgid, hit.hdr.goid);
    if rules::active().is_some()
        && rules::take_suppressed(hit.hdr.tgid, SUPPRESS_SERVER, hit.hdr.goid)
    {
        return None;
    }
    let w = goabi::arg(ctx, 0);
    let mut entry = probes::reserve::<HttpServeEndEvent>()?;
    let ev = entry.as_mut_ptr();
    let off = &hit.cfg.offsets;
    let req = field_u64(w, off.response_req);
    unsafe {
        (*ev).hdr = hit.hdr;
        (*ev).request = req;
        (*ev).status = field_u64(w, off.response_status) as i64;
        (*ev).written = field_u64(w, off.response_written) as i64;
        (*ev).tcp = socket::snapshot(hit.hdr.tgid);
        read_string(req, off.request_pattern, &mut (*ev).pattern);
    }
    entry.submit(maps::submit_flags());
    Some(())
}
