//! Copying Go values out of the traced process.

use aya_ebpf::helpers::{bpf_probe_read_user, generated::bpf_probe_read_user as read_raw};
use tracer_common::event::GoStr;

/// Copies the Go string header at `addr` (`{ptr, len}`) and up to N of its bytes into `dst`.
/// A failed read is recorded in `dst.read_error`, never fatal for the event.
#[inline(always)]
pub fn read_string<const N: usize>(addr: u64, dst: &mut GoStr<N>) {
    dst.len = 0;
    dst.read_error = 0;
    let Ok(hdr) = (unsafe { bpf_probe_read_user(addr as *const [u64; 2]) }) else {
        dst.read_error = 1;
        return;
    };
    let (ptr, len) = (hdr[0], hdr[1]);
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
