//! Kraken functions (placed only in processes built from github.com/uber/kraken).
//!
//! `lib/torrent/scheduler/announcer.(*Announcer).Announce(d core.Digest, h core.InfoHash,
//! complete bool)`: a in RAX; `core.Digest` is `{algo, hex, raw string}`, so d.algo is in
//! RBX/RCX and d.hex in RDI/RSI (h, an array, goes on the stack). It runs on the goroutine that
//! then sends the announce request, which lets user space tie that request to its blob.
//!
//! `lib/store.(*CADownloadStore).MoveDownloadFileToCache(name string)`: s in RAX, name (the
//! digest's hex) in RBX/RCX: the moment a P2P download completes into the agent's cache.
//!
//! Origin backend fetch: `lib/blobrefresh.(*Refresher).Refresh(namespace string, d core.Digest,
//! hooks ...PostHook)`: namespace in RBX/RCX, d.algo RDI/RSI, d.hex R8/R9 (hooks on the stack);
//! on a dedup worker goroutine `lib/store.(*CAStore).WriteBlobToCacheWithMetaInfo(name string,
//! size uint64, …)`: name in RBX/RCX, size in RDI; and after `call (*Refresher).download` in
//! `Refresh.func1`, download's error (itab) in RAX.

use aya_ebpf::{macros::uprobe, programs::ProbeContext};
use tracer_common::{
    event::{GoStr, KrakenDigestEvent, URI_LEN},
    maps::TraceCtx,
    probe::ProbeId,
};

use crate::{goabi, gostr::copy_string, maps, probes, propagation};

/// `…/blobs/sha256:<64 hex>` at the end of an agent request's path: keep the download's
/// context under the digest, for the announces of that blob (made on scheduler goroutines).
#[inline(always)]
pub fn remember_download(uri: &GoStr<URI_LEN>, ctx: &TraceCtx) {
    let len = uri.len as usize;
    if uri.read_error != 0 || len < 71 || len > URI_LEN {
        return;
    }
    // Masked: the verifier must see the offset bounded where it is computed.
    let start = (len - 71) & 0x7f;
    if start + 71 > URI_LEN {
        return;
    }
    let base = uri.bytes.as_ptr();
    // Byte by byte: a slice `==` would call memcmp, which BPF lacks.
    for (k, want) in b"sha256:".iter().enumerate() {
        if unsafe { *base.add(start + k) } != *want {
            return;
        }
    }
    let mut digest = [0u8; 64];
    for (k, d) in digest.iter_mut().enumerate() {
        *d = unsafe { *base.add(start + 7 + k) };
    }
    propagation::remember_digest(&digest, ctx);
}

#[uprobe]
pub fn kraken_announce(ctx: ProbeContext) -> u32 {
    let _ = digest_event(&ctx, ProbeId::KrakenAnnounce, Some(3), None);
    0
}

#[uprobe]
pub fn kraken_cached(ctx: ProbeContext) -> u32 {
    let _ = digest_event(&ctx, ProbeId::KrakenCached, Some(1), None);
    0
}

#[uprobe]
pub fn kraken_refresh(ctx: ProbeContext) -> u32 {
    let _ = digest_event(&ctx, ProbeId::KrakenRefresh, Some(5), None);
    0
}

#[uprobe]
pub fn kraken_cache_write(ctx: ProbeContext) -> u32 {
    let _ = digest_event(&ctx, ProbeId::KrakenCacheWrite, Some(1), Some(3));
    0
}

#[uprobe]
pub fn kraken_refresh_done(ctx: ProbeContext) -> u32 {
    let _ = digest_event(&ctx, ProbeId::KrakenRefreshDone, None, Some(0));
    0
}

/// Emits a Kraken event: the digest hex passed as a Go string in argument registers
/// `digest_arg` and `digest_arg + 1`, and the integer in register `value_arg`.
#[inline(always)]
fn digest_event(
    ctx: &ProbeContext,
    probe: ProbeId,
    digest_arg: Option<usize>,
    value_arg: Option<usize>,
) -> Option<()> {
    let hit = probes::hit(ctx, probe)?;
    let mut entry = probes::reserve::<KrakenDigestEvent>()?;
    let ev = entry.as_mut_ptr();
    unsafe {
        (*ev).hdr = hit.hdr;
        (*ev).digest_hex.len = 0;
        (*ev).digest_hex.read_error = 0;
        if let Some(arg) = digest_arg {
            copy_string(
                goabi::arg(ctx, arg),
                goabi::arg(ctx, arg + 1),
                &mut (*ev).digest_hex,
            );
            if probe == ProbeId::KrakenAnnounce
                && (*ev).digest_hex.len == 64
                && (*ev).digest_hex.read_error == 0
            {
                let mut digest = [0u8; 64];
                let bytes = &(*ev).digest_hex.bytes;
                digest.copy_from_slice(&bytes[..64]);
                propagation::adopt_digest(hit.hdr.tgid, hit.hdr.goid, &digest);
            }
        }
        (*ev).value = value_arg.map_or(0, |a| goabi::arg(ctx, a));
    }
    entry.submit(maps::submit_flags());
    Some(())
}
