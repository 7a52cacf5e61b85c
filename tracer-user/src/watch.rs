//! Noticing that a traced process has exited, without polling: a pidfd becomes readable
//! when its process exits.

use std::os::fd::{FromRawFd as _, OwnedFd};

use tokio::io::unix::AsyncFd;

/// Waits until process `pid` exits. Returns at once if it is already gone.
pub async fn exited(pid: u32) {
    // SAFETY: pidfd_open takes a pid and flags and returns a new fd or -1.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid as libc::c_int, 0) };
    if fd < 0 {
        return;
    }
    // SAFETY: fd is a fresh pidfd owned by nobody else.
    let owned = unsafe { OwnedFd::from_raw_fd(fd as i32) };
    // SAFETY: the AsyncFd owns the pidfd until it is dropped.
    match unsafe { AsyncFd::register_with_interest(owned, tokio::io::Interest::READABLE) } {
        Ok(afd) => {
            let _ = afd.readable().await;
        }
        Err(e) => log::warn!("cannot watch pid {pid} for exit: {e}"),
    }
}
