//! `net/http.serverHandler.ServeHTTP(sh serverHandler, rw ResponseWriter, req *Request)`:
//! args are sh.srv (RAX), rw's itab and data (RBX, RCX), req (RDI).

use aya_ebpf::{macros::uprobe, programs::ProbeContext};
use tracer_common::{
    event::HttpServeEvent,
    maps::{COUNTER_HITS, COUNTER_RINGBUF_FULL},
    probe::ProbeId,
};

use crate::{goabi, gostr::read_string, maps, probes};

const ARG_REQUEST: usize = 3;

#[uprobe]
pub fn http_serve(ctx: ProbeContext) -> u32 {
    match try_http_serve(&ctx) {
        Ok(()) | Err(()) => 0,
    }
}

#[inline(always)]
fn try_http_serve(ctx: &ProbeContext) -> Result<(), ()> {
    let (tgid, tid, cfg) = probes::process().ok_or(())?;
    maps::count(COUNTER_HITS);
    let req = goabi::arg(ctx, ARG_REQUEST);
    let Some(mut entry) = maps::EVENTS.reserve::<HttpServeEvent>(0) else {
        maps::count(COUNTER_RINGBUF_FULL);
        return Err(());
    };
    let ev = entry.as_mut_ptr();
    let off = &cfg.offsets;
    unsafe {
        (*ev).hdr = probes::header(ctx, ProbeId::HttpServe, tgid, tid);
        (*ev).request = req;
        read_string(req + u64::from(off.request_method), &mut (*ev).method);
        read_string(req + u64::from(off.request_uri), &mut (*ev).uri);
        read_string(req + u64::from(off.request_host), &mut (*ev).host);
        read_string(
            req + u64::from(off.request_remote_addr),
            &mut (*ev).remote_addr,
        );
    }
    entry.submit(maps::submit_flags());
    Ok(())
}
