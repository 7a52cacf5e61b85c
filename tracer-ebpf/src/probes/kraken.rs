//! Kraken functions (placed only in processes built from github.com/uber/kraken).
//!
//! `lib/torrent/scheduler/announcer.(*Announcer).Announce(d core.Digest, h core.InfoHash,
//! complete bool)`: a in RAX; `core.Digest` is `{algo, hex, raw string}`, so d.algo is in
//! RBX/RCX and d.hex in RDI/RSI (h, an array, goes on the stack). It runs on the goroutine that
//! then sends the announce request, which lets user space tie that request to its blob.

use aya_ebpf::{macros::uprobe, programs::ProbeContext};
use tracer_common::{event::KrakenAnnounceEvent, probe::ProbeId};

use crate::{goabi, gostr::copy_string, maps, probes};

#[uprobe]
pub fn kraken_announce(ctx: ProbeContext) -> u32 {
    let _ = try_kraken_announce(&ctx);
    0
}

#[inline(always)]
fn try_kraken_announce(ctx: &ProbeContext) -> Option<()> {
    let hit = probes::hit(ctx, ProbeId::KrakenAnnounce)?;
    let mut entry = probes::reserve::<KrakenAnnounceEvent>()?;
    let ev = entry.as_mut_ptr();
    unsafe {
        (*ev).hdr = hit.hdr;
        copy_string(
            goabi::arg(ctx, 3),
            goabi::arg(ctx, 4),
            &mut (*ev).digest_hex,
        );
    }
    entry.submit(maps::submit_flags());
    Some(())
}
