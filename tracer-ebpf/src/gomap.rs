//! Reading one header out of a Go `http.Header` (`map[string][]string`).
//!
//! Go hashes map keys with a per-process random AES key, so the kernel cannot compute where a
//! key lives: it scans a bounded number of groups (buckets) instead.
//!
//! Cost: on the reference VM (Firecracker, Linux 6.18) one `bpf_probe_read_user` costs
//! ~85–100 ns whatever its length (10 reads of 8 bytes cost the same as 10 reads of 328
//! bytes), so the code minimises the number of reads, not bytes: up to 8 consecutive groups
//! (2.6 KB) are copied with ONE read into a per-CPU scratch buffer, key lengths are compared
//! there, and only keys of length 11 have their bytes read. A small map (<= 8 header lines)
//! costs 3 reads when `Traceparent` is absent (Header pointer, map header, group), 6 when
//! present (+ key bytes, first `[]string` element, value bytes); a bigger one 2 more
//! (directory entry, table header), up to ~56 headers still one group read. Measured per
//! call: ~300–400 ns absent / ~600 ns present for a small map, ~500 / ~750 ns for 9–43 headers.
//!
//! Layouts (64-bit; checked against the DWARF of fixture builds by go1.21.13 – go1.26.11 and the
//! runtime sources of each minor):
//!
//! * Go >= 1.24, swiss tables (`internal/runtime/maps`). `Map`: `used u64 @0`, `seed @8`,
//!   `dirPtr @16`, `dirLen @24`, `globalDepth u8 @32`. `dirLen == 0`: `dirPtr` is one group
//!   (small map, <= 8 entries). Else `dirPtr` is `[dirLen]*table`, a table owning
//!   `1 << (globalDepth - localDepth)` consecutive entries; `table`: `localDepth u8 @6`,
//!   `groups.data @16`, `groups.lengthMask @24` (same in 1.24, 1.25, 1.26). Group (328 bytes):
//!   `ctrl u64`, then 8 slots `{key string; elem []string}` of 40 bytes; slot i is full when
//!   ctrl byte i has its high bit clear (empty 0x80, deleted 0xfe).
//! * Go <= 1.23, `runtime.hmap`: `count @0`, `flags u8 @8`, `B u8 @9`, `buckets @16`,
//!   `oldbuckets @24`. Bucket (336 bytes): `tophash [8]u8`, `keys [8]string @8`,
//!   `elems [8][]string @136`, `overflow @328`; slot i is full when tophash i >= 5 (evacuated
//!   slots of old buckets are 2–4, so scanning `oldbuckets` during growth never sees an entry
//!   twice).
//!
//! Every read is `bpf_probe_read_user`: a bad pointer only costs a failed read (`read_error`).

use aya_ebpf::{
    helpers::generated::bpf_probe_read_user as read_raw, macros::map, maps::PerCpuArray,
};
use tracer_common::{
    event::{GoStr, TRACEPARENT_LEN},
    offsets::ProcessConfig,
};

use crate::gostr::copy_string;

/// Groups or buckets copied per read (consecutive in memory: a table's groups, a bucket array).
const CHUNK: usize = 8;
/// Reads of groups at most for swiss tables: 16 groups, 128 slots, about 112 headers (Go sizes
/// the map from the number of header lines: 40 headers make 8 groups, one read).
const SWISS_MAX_READS: u32 = 2;
/// Reads of buckets at most for hmap: bucket arrays in chunks of 8, then overflow buckets one
/// by one (16 buckets = B 4, up to 104 headers, with 4 overflow buckets).
const HMAP_MAX_READS: u32 = 6;

/// `Traceparent` as two little-endian words (11 bytes).
const KEY0: u64 = u64::from_le_bytes(*b"Tracepar");
const KEY1: u64 = u64::from_le_bytes(*b"ent\0\0\0\0\0");
const KEY_LEN: u64 = 11;

const CHUNK_WORDS: usize = CHUNK * HMAP_BUCKET_WORDS;
const CHUNK_BYTES: u64 = 8 * CHUNK_WORDS as u64;
const PAGE: u64 = 4096;
const BUF_WORDS: usize = 2 * PAGE as usize / 8;
const SWISS_GROUP_WORDS: usize = 41;
const SWISS_GROUP_BYTES: u64 = 328;
const HMAP_BUCKET_WORDS: usize = 42;
const HMAP_BUCKET_BYTES: u64 = 336;
/// Word index of `overflow` in an hmap bucket.
const HMAP_OVERFLOW_WORD: usize = 41;

/// Per-CPU scratch space (far more than the 512-byte BPF stack).
#[repr(C)]
pub struct Scratch {
    /// Up to CHUNK consecutive swiss groups or hmap buckets, or one hmap overflow bucket. Two
    /// pages: [`read_chunk`]'s second piece is at an offset < 4096 and shorter than 4096 (the
    /// verifier checks the largest offset plus the largest size).
    chunk: [u64; BUF_WORDS],
    /// hmap overflow buckets still to read (a stack of `npending` entries). Kept in map memory
    /// (volatile accesses): the verifier does not track its values, so the states of
    /// different paths stay equivalent instead of multiplying.
    pending: [u64; CHUNK],
    npending: u64,
    /// See [`launder`].
    tmp: u64,
}

/// `v`, through map memory: the verifier then no longer knows it. Used for values that feed
/// helper sizes (which the verifier tracks precisely): without it, each path's refined range
/// (a counter compared with the size, groups left after k reads) is a distinct state, and
/// the states multiply across loop iterations.
#[inline(always)]
fn launder(tmp: &mut u64, v: u64) -> u64 {
    unsafe {
        core::ptr::write_volatile(tmp, v);
        core::ptr::read_volatile(tmp)
    }
}

#[map]
static GOMAP_SCRATCH: PerCpuArray<Scratch> = PerCpuArray::with_max_entries(1, 0);

/// Copies the first value of `req.Header["Traceparent"]` into `dst` (len 0 when absent; also
/// `read_error` when the map could not be read).
#[inline(always)]
pub fn read_traceparent(cfg: &ProcessConfig, req: u64, dst: &mut GoStr<TRACEPARENT_LEN>) {
    dst.len = 0;
    dst.read_error = 0;
    let off = cfg.offsets.request_header;
    if off == u32::MAX || req == 0 || cfg.go_version == 0 {
        return;
    }
    let Some(map) = read::<u64>(req + u64::from(off)) else {
        dst.read_error = 1;
        return;
    };
    if map == 0 {
        return; // nil Header
    }
    let Some(scratch) = GOMAP_SCRATCH.get_ptr_mut(0) else {
        return;
    };
    // SAFETY: a per-CPU slot, used by one program at a time on this CPU (uprobe programs do
    // not nest) and only within this call.
    let scratch = unsafe { &mut *scratch };
    let found = if cfg.go_version >= 124 {
        find_swiss(map, scratch)
    } else {
        find_hmap(map, scratch)
    };
    match found {
        Ok(Some((ptr, len))) => {
            // The value is a []string {ptr, len, cap}: copy its first string.
            if len == 0 {
                return;
            }
            match read::<[u64; 2]>(ptr) {
                Some(s) => copy_string(s[0], s[1], dst),
                None => dst.read_error = 1,
            }
        }
        Ok(None) => {}
        Err(()) => dst.read_error = 1,
    }
}

/// A `T` at `addr` in the traced process.
#[inline(always)]
fn read<T>(addr: u64) -> Option<T> {
    let mut v = core::mem::MaybeUninit::<T>::uninit();
    let r = unsafe {
        read_raw(
            v.as_mut_ptr().cast(),
            core::mem::size_of::<T>() as u32,
            addr as *const _,
        )
    };
    if r == 0 {
        Some(unsafe { v.assume_init() })
    } else {
        None
    }
}

/// Copies `len` bytes (at most CHUNK_BYTES) at `addr` to the start of `buf`; false when
/// nothing could be read.
///
/// Go does not write fresh heap memory it knows to be zero, and a page never written is not
/// present: a probe read touching it fails (no page faults here), although Go sees zeros
/// there. This happens for the tail of a swiss table's last group, or empty hmap buckets. So
/// when the read fails, the part before and the part after the page boundary are read
/// separately; a part that cannot be read is left zeroed (the helper zeroes its destination
/// on failure), which is how Go sees it: empty slots.
#[inline(always)]
fn read_chunk(addr: u64, len: u64, buf: &mut [u64; BUF_WORDS], tmp: &mut u64) -> bool {
    let len = if len > CHUNK_BYTES { CHUNK_BYTES } else { len };
    let dst = buf.as_mut_ptr().cast::<u8>();
    if unsafe { read_raw(dst.cast(), len as u32, addr as *const _) } == 0 {
        return true;
    }
    // The piece sizes become precise helper arguments: derive them from a laundered address,
    // so that the precision does not spread back to the loop's addresses (see `launder`).
    let addr = launder(tmp, addr);
    // A chunk is shorter than a page: at most one boundary inside.
    let first = PAGE - (addr & (PAGE - 1));
    if first >= len {
        return false;
    }
    // The bytes past the boundary, `len - first`, written so that the verifier sees them
    // bounded by the mask (LLVM would drop a mask on `len - first` as redundant).
    let rest = (addr + len) & (PAGE - 1);
    let first_ok = unsafe { read_raw(dst.cast(), first as u32, addr as *const _) } == 0;
    let rest_ok = unsafe {
        read_raw(
            dst.add(first as usize).cast(),
            rest as u32,
            (addr + first) as *const _,
        )
    } == 0;
    first_ok || rest_ok
}

/// Whether the Go string `{ptr, len}` (len already checked to be 11) is `Traceparent`.
#[inline(always)]
fn key_matches(ptr: u64) -> bool {
    // Only 11 bytes are read (reading 16 could cross into an unmapped page); the 5 bytes not
    // written are masked off (not zeroed first: LLVM turns that into a memset call).
    let mut k = core::mem::MaybeUninit::<[u64; 2]>::uninit();
    let r = unsafe { read_raw(k.as_mut_ptr().cast(), KEY_LEN as u32, ptr as *const _) };
    if r != 0 {
        return false;
    }
    // SAFETY: the helper wrote the first 11 bytes; the rest is masked off.
    let k = unsafe { k.assume_init() };
    k[0] == KEY0 && (k[1] & 0x00ff_ffff) == KEY1
}

const HIGH_BITS: u64 = 0x8080_8080_8080_8080;

/// High bit of each byte set where the slot is full, computed without branches (so the
/// verifier keeps one state, not one per combination). Swiss: ctrl byte < 0x80. hmap: tophash
/// >= 5 (minTopHash): `(b | 0x80) - 5` keeps its high bit iff `b & 0x7f >= 5`, no borrow
/// crosses bytes.
#[inline(always)]
fn full_slots(ctrl: u64, swiss: bool) -> u64 {
    if swiss {
        !ctrl & HIGH_BITS
    } else {
        (ctrl | (ctrl | HIGH_BITS).wrapping_sub(0x0505_0505_0505_0505)) & HIGH_BITS
    }
}

/// Number of set high bits in a `full_slots` mask.
#[inline(always)]
fn count_slots(full: u64) -> u64 {
    (full >> 7).wrapping_mul(0x0101_0101_0101_0101) >> 56
}

/// Scans the group (bucket) starting at word `base` of `buf`: the matching value's `{ptr, len}`
/// if any, and the number of full slots.
#[inline(always)]
fn scan_group(buf: &[u64], base: usize, swiss: bool) -> (Option<(u64, u64)>, u64) {
    let Some(&ctrl) = buf.get(base) else {
        return (None, 0);
    };
    let full = full_slots(ctrl, swiss);
    let seen = count_slots(full);
    for i in 0..8usize {
        if full & (0x80 << (8 * i)) == 0 {
            continue;
        }
        let (key, elem) = if swiss {
            (base + 1 + 5 * i, base + 3 + 5 * i)
        } else {
            (base + 1 + 2 * i, base + 17 + 3 * i)
        };
        let (Some(&kptr), Some(&klen)) = (buf.get(key), buf.get(key + 1)) else {
            break;
        };
        if klen != KEY_LEN || !key_matches(kptr) {
            continue;
        }
        let (Some(&vptr), Some(&vlen)) = (buf.get(elem), buf.get(elem + 1)) else {
            break;
        };
        return (Some((vptr, vlen)), seen);
    }
    (None, seen)
}

/// Scans the first `n` groups (buckets) of the chunk.
#[inline(always)]
fn scan_chunk(buf: &[u64], n: u64, swiss: bool) -> (Option<(u64, u64)>, u64) {
    let stride = if swiss {
        SWISS_GROUP_WORDS
    } else {
        HMAP_BUCKET_WORDS
    };
    let mut seen = 0;
    for g in 0..CHUNK {
        if g as u64 >= n {
            break;
        }
        let (found, s) = scan_group(buf, g * stride, swiss);
        seen += s;
        if found.is_some() {
            return (found, seen);
        }
    }
    (None, seen)
}

/// `min(left, CHUNK)`.
#[inline(always)]
fn chunk_len(left: u64) -> u64 {
    if left < CHUNK as u64 {
        left
    } else {
        CHUNK as u64
    }
}

/// Go >= 1.24 (`internal/runtime/maps.Map`).
///
/// Loop state is kept as values the verifier cannot know (derived from target memory), so
/// the states of different paths compare equal and the loop verifies in linear time.
#[inline(always)]
fn find_swiss(map: u64, s: &mut Scratch) -> Result<Option<(u64, u64)>, ()> {
    // used, seed, dirPtr, dirLen, globalDepth (low byte).
    let m = read::<[u64; 5]>(map).ok_or(())?;
    let (used, dir_ptr, dir_len) = (m[0], m[2], m[3]);
    if used == 0 || dir_ptr == 0 {
        return Ok(None);
    }
    if dir_len == 0 {
        // Small map: dirPtr is the only group.
        if !read_chunk(dir_ptr, SWISS_GROUP_BYTES, &mut s.chunk, &mut s.tmp) {
            return Err(());
        }
        return Ok(scan_group(&s.chunk, 0, true).0);
    }
    let global_depth = m[4] & 0xff;
    // Entries not seen yet; next group and groups left in the current table; next directory
    // index.
    let mut remaining = used;
    let (mut group, mut left, mut dir_i) = (0u64, 0u64, 0u64);
    for _ in 0..SWISS_MAX_READS {
        if left == 0 {
            if dir_i >= dir_len {
                break;
            }
            let table = read::<u64>(dir_ptr + 8 * dir_i).ok_or(())?;
            // used/capacity/growthLeft/localDepth, index, groups.data, groups.lengthMask.
            let t = read::<[u64; 4]>(table).ok_or(())?;
            // A table owns 1 << (globalDepth - localDepth) consecutive directory entries.
            let shift = global_depth.wrapping_sub((t[0] >> 48) & 0xff);
            dir_i += if shift < 32 { 1 << shift } else { 1 };
            group = t[2];
            left = t[3].wrapping_add(1);
            if group == 0 {
                return Err(());
            }
        }
        let n = chunk_len(left);
        if !read_chunk(group, n * SWISS_GROUP_BYTES, &mut s.chunk, &mut s.tmp) {
            return Err(());
        }
        let scan_n = launder(&mut s.tmp, n);
        let (found, seen) = scan_chunk(&s.chunk, scan_n, true);
        if found.is_some() {
            return Ok(found);
        }
        if seen >= remaining {
            break; // every entry seen
        }
        remaining -= seen;
        group += n * SWISS_GROUP_BYTES;
        left = launder(&mut s.tmp, left - n);
    }
    Ok(None)
}

/// Go <= 1.23 (`runtime.hmap`).
#[inline(always)]
fn find_hmap(map: u64, s: &mut Scratch) -> Result<Option<(u64, u64)>, ()> {
    // count, flags|B|noverflow|hash0, buckets, oldbuckets.
    let h = read::<[u64; 4]>(map).ok_or(())?;
    let (count, buckets, old) = (h[0], h[2], h[3]);
    if count == 0 || buckets == 0 {
        return Ok(None);
    }
    let b = (h[1] >> 8) & 0xff;
    let n_new = 1u64 << if b < 32 { b } else { 32 };
    // While growing, the old array has half as many buckets (same size when flags has
    // sameSizeGrow = 8); its not yet evacuated buckets still hold entries.
    let n_old = if h[1] & 8 != 0 { n_new } else { n_new >> 1 };
    // The bucket array being walked (next address, buckets left), then the old array (0: none,
    // or already switched to). Overflow buckets found in a chunk are read before the next chunk.
    let (mut next, mut left) = (buckets, n_new);
    let mut then = old;
    let mut remaining = count;
    unsafe { core::ptr::write_volatile(&mut s.npending, 0) };
    for _ in 0..HMAP_MAX_READS {
        let p = unsafe { core::ptr::read_volatile(&s.npending) };
        if p != 0 {
            // Pop-or-advance the newest pending overflow chain.
            let i = ((p - 1) as usize) & (CHUNK - 1);
            let Some(slot) = s.pending.get_mut(i) else {
                break;
            };
            let ov = unsafe { core::ptr::read_volatile(slot) };
            // The chunk was scanned and its overflow buckets queued: reuse its buffer. A bucket
            // that cannot be read at all is taken as empty (see `read_chunk`).
            read_chunk(ov, HMAP_BUCKET_BYTES, &mut s.chunk, &mut s.tmp);
            let (found, seen) = scan_group(&s.chunk, 0, false);
            if found.is_some() {
                return Ok(found);
            }
            let further = s.chunk[HMAP_OVERFLOW_WORD];
            if further != 0 {
                unsafe { core::ptr::write_volatile(slot, further) };
            } else {
                unsafe { core::ptr::write_volatile(&mut s.npending, p - 1) };
            }
            if seen >= remaining {
                break;
            }
            remaining -= seen;
            continue;
        }
        if left == 0 {
            if then == 0 {
                break;
            }
            (next, left, then) = (then, n_old, 0);
        }
        let n = chunk_len(left);
        // Buckets that cannot be read are empty ones never written (see `read_chunk`).
        read_chunk(next, n * HMAP_BUCKET_BYTES, &mut s.chunk, &mut s.tmp);
        let scan_n = launder(&mut s.tmp, n);
        let (found, seen) = scan_chunk(&s.chunk, scan_n, false);
        if found.is_some() {
            return Ok(found);
        }
        if seen >= remaining {
            break; // every entry seen
        }
        remaining -= seen;
        // Queue this chunk's overflow buckets (at most CHUNK: the stack is empty here).
        for k in 0..CHUNK {
            if k as u64 >= scan_n {
                break;
            }
            let ov = s
                .chunk
                .get(k * HMAP_BUCKET_WORDS + HMAP_OVERFLOW_WORD)
                .copied()
                .unwrap_or(0);
            if ov != 0 {
                let q = unsafe { core::ptr::read_volatile(&s.npending) };
                if let Some(slot) = s.pending.get_mut((q as usize) & (CHUNK - 1)) {
                    unsafe { core::ptr::write_volatile(slot, ov) };
                }
                unsafe { core::ptr::write_volatile(&mut s.npending, q + 1) };
            }
        }
        next += n * HMAP_BUCKET_BYTES;
        left = launder(&mut s.tmp, left - n);
    }
    Ok(None)
}
