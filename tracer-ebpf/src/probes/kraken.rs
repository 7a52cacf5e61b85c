//! Kraken functions (placed only in processes built from github.com/uber/kraken).
//!
//! `lib/torrent/scheduler/announcer.(*Announcer).Announce(d core.Digest, h core.InfoHash,
//! complete bool)`: a in RAX; `core.Digest` is `{algo, hex, raw string}`, so d.algo is in
//! RBX/RCX and d.hex in RDI/RSI (h, an array, goes on the stack). It runs on the goroutine that
//! then sends the announce request, which lets user space tie that request to its blob.
//!
//! `lib/store.(*CADownloadStore).MoveDownloadFileToCache(name string)`: s in RAX, name (the
//! digest's hex) in RBX/RCX: the moment a P2P download completes into the agent's cache.

use aya_ebpf::{macros::uprobe, programs::ProbeContext};
use tracer_common::{event::KrakenDigestEvent, probe::ProbeId};

use crate::{goabi, gostr::copy_string, maps, probes};

#[uprobe]
pub fn kraken_announce(ctx: ProbeContext) -> u32 {
    let _ = digest_event(&ctx, ProbeId::KrakenAnnounce, 3);
    0
}

#[uprobe]
pub fn kraken_cached(ctx: ProbeContext) -> u32 {
    let _ = digest_event(&ctx, ProbeId::KrakenCached, 1);
    0
}

/// Emits the digest hex passed as a Go string in argument registers `arg` and `arg + 1`.
#[inline(always)]
fn digest_event(ctx: &ProbeContext, probe: ProbeId, arg: usize) -> Option<()> {
    let hit = probes::hit(ctx, probe)?;
    let mut entry = probes::reserve::<KrakenDigestEvent>()?;
    let ev = entry.as_mut_ptr();
    unsafe {
        (*ev).hdr = hit.hdr;
        copy_string(
            goabi::arg(ctx, arg),
            goabi::arg(ctx, arg + 1),
            &mut (*ev).digest_hex,
        );
    }
    entry.submit(maps::submit_flags());
    Some(())
}
