//! Copying Go values out of the traced process.

use aya_ebpf::helpers::{bpf_probe_read_user, generated::bpf_probe_read_user as read_raw};
use tracer_common::event::GoStr;

/// Reads a word at `addr` (0 when unreadable).
#[inline(always)]
pub fn read_u64(addr: u64) -> u64 {
    unsafe { bpf_probe_read_user(addr as *const u64) }.unwrap_or(0)
}

/// Reads the word at `base + off`, or 0 when the field does not exist in this Go version.
#[inline(always)]
pub fn field_u64(base: u64, off: u32) -> u64 {
    if off == u32::MAX || base == 0 {
        0
    } else {
        read_u64(base + u64::from(off))
    }
}

/// Reads the signed word at `base + off`, or `missing` when the field does not exist in this Go
/// version or cannot be read (so a failed read is never taken for a real 0).
#[inline(always)]
pub fn field_i64(base: u64, off: u32, missing: i64) -> i64 {
    if off == u32::MAX || base == 0 {
        return missing;
    }
    unsafe { bpf_probe_read_user((base + u64::from(off)) as *const i64) }.unwrap_or(missing)
}

/// Copies the Go string header at `base + off` (`{ptr, len}`) and up to N of its bytes into
/// `dst`. A failed read is recorded in `dst.read_error`, never fatal for the event.
#[inline(always)]
pub fn read_string<const N: usize>(base: u64, off: u32, dst: &mut GoStr<N>) {
    dst.len = 0;
    dst.read_error = 0;
    if off == u32::MAX || base == 0 {
        return;
    }
    let Ok(hdr) = (unsafe { bpf_probe_read_user((base + u64::from(off)) as *const [u64; 2]) })
    else {
        dst.read_error = 1;
        return;
    };
    copy_string(hdr[0], hdr[1], dst);
}

/// Copies up to N bytes of the Go string `{ptr, len}` (e.g. passed in registers) into `dst`.
#[inline(always)]
pub fn copy_string<const N: usize>(ptr: u64, len: u64, dst: &mut GoStr<N>) {
    dst.read_error = 0;
    dst.len = if len > u64::from(u32::MAX) {
        u32::MAX
    } else {
        len as u32
    };
    let n = if len > N as u64 { N as u32 } else { len as u32 };
    if n == 0 {
        return;
    }
    let r = unsafe { read_raw(dst.bytes.as_mut_ptr().cast(), n, ptr as *const _) };
    if r != 0 {
        dst.read_error = 1;
    }
}
