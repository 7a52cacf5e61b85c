//! The TCP connections a process opened before the tracer attached (Go keeps idle keep-alive
//! connections): found in /proc, duplicated with `pidfd_getfd` (needs `CAP_SYS_PTRACE` over
//! the process) and handed to the propagation sockhash, so requests on them get a
//! `traceparent` too.

use std::{
    collections::BTreeSet,
    fs,
    os::fd::{FromRawFd as _, OwnedFd},
};

#[derive(Debug, thiserror::Error)]
pub enum SocketsError {
    #[error("reading {path}: {source}")]
    Proc {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("pidfd_open({pid}): {source}")]
    PidfdOpen {
        pid: u32,
        #[source]
        source: std::io::Error,
    },
}

/// A connection to adopt: the fd number in the target process and its socket inode.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Outgoing {
    pub fd: i32,
    pub inode: u64,
}

/// Socket inodes of ESTABLISHED TCP connections whose local port is not one the process
/// listens on (so: connections it opened, not ones it accepted), from the text of
/// /proc/PID/net/tcp and tcp6.
pub fn outgoing_inodes(tables: &[&str]) -> BTreeSet<u64> {
    let rows: Vec<(u16, u8, u64)> = tables
        .iter()
        .flat_map(|t| t.lines().skip(1))
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            let local = f.get(1)?;
            let port = u16::from_str_radix(local.rsplit_once(':')?.1, 16).ok()?;
            let state = u8::from_str_radix(f.get(3)?, 16).ok()?;
            let inode = f.get(9)?.parse().ok()?;
            Some((port, state, inode))
        })
        .collect();
    let listening: BTreeSet<u16> = rows
        .iter()
        .filter(|(_, st, _)| *st == 0x0a)
        .map(|(p, _, _)| *p)
        .collect();
    rows.iter()
        .filter(|(p, st, ino)| *st == 0x01 && *ino != 0 && !listening.contains(p))
        .map(|(_, _, ino)| *ino)
        .collect()
}

/// The process's fds that are sockets among `inodes`.
pub fn socket_fds(pid: u32, inodes: &BTreeSet<u64>) -> Result<Vec<Outgoing>, SocketsError> {
    let dir = format!("/proc/{pid}/fd");
    let entries = fs::read_dir(&dir).map_err(|source| SocketsError::Proc {
        path: dir.clone(),
        source,
    })?;
    let mut out = Vec::new();
    for e in entries.flatten() {
        let Ok(link) = fs::read_link(e.path()) else {
            continue;
        };
        let link = link.to_string_lossy();
        let Some(inode) = link
            .strip_prefix("socket:[")
            .and_then(|r| r.strip_suffix(']'))
            .and_then(|n| n.parse::<u64>().ok())
        else {
            continue;
        };
        let Some(fd) = e.file_name().to_str().and_then(|n| n.parse::<i32>().ok()) else {
            continue;
        };
        if inodes.contains(&inode) {
            out.push(Outgoing { fd, inode });
        }
    }
    Ok(out)
}

/// The established outgoing TCP connections of `pid`.
pub fn outgoing(pid: u32) -> Result<Vec<Outgoing>, SocketsError> {
    let mut tables = Vec::new();
    for name in ["tcp", "tcp6"] {
        let path = format!("/proc/{pid}/net/{name}");
        match fs::read_to_string(&path) {
            Ok(t) => tables.push(t),
            // No IPv6 in this kernel or namespace.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(source) => return Err(SocketsError::Proc { path, source }),
        }
    }
    let refs: Vec<&str> = tables.iter().map(String::as_str).collect();
    socket_fds(pid, &outgoing_inodes(&refs))
}

/// A handle on a process for copying its fds.
pub struct Pidfd(OwnedFd);

impl Pidfd {
    pub fn open(pid: u32) -> Result<Pidfd, SocketsError> {
        let pid_t = libc::pid_t::try_from(pid).map_err(|_| SocketsError::PidfdOpen {
            pid,
            source: std::io::Error::from_raw_os_error(libc::ESRCH),
        })?;
        // SAFETY: plain syscall; the result is checked.
        let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid_t, 0) };
        if fd < 0 {
            return Err(SocketsError::PidfdOpen {
                pid,
                source: std::io::Error::last_os_error(),
            });
        }
        // SAFETY: a new fd we own.
        Ok(Pidfd(unsafe { OwnedFd::from_raw_fd(fd as i32) }))
    }

    /// A copy of the process's fd `target` (None when it closed meanwhile or is not
    /// permitted).
    pub fn get(&self, target: i32) -> Option<OwnedFd> {
        use std::os::fd::AsRawFd as _;
        // SAFETY: plain syscall; the result is checked.
        let fd = unsafe { libc::syscall(libc::SYS_pidfd_getfd, self.0.as_raw_fd(), target, 0) };
        // SAFETY: a new fd we own.
        (fd >= 0).then(|| unsafe { OwnedFd::from_raw_fd(fd as i32) })
    }
}

/// The socket cookie of `fd` (what the kernel programs key sockets by).
pub fn cookie(fd: &OwnedFd) -> Option<u64> {
    use std::os::fd::AsRawFd as _;
    let mut v: u64 = 0;
    let mut len = size_of::<u64>() as libc::socklen_t;
    // SAFETY: v and len are valid for getsockopt's writes.
    let r = unsafe {
        libc::getsockopt(
            fd.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_COOKIE,
            (&raw mut v).cast(),
            &raw mut len,
        )
    };
    (r == 0).then_some(v)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outgoing_connections_are_established_and_not_on_a_listening_port() {
        // 8080 listens (0A); one accepted connection on it; one outgoing to :0050 from
        // ephemeral port 0xA1B2; one outgoing still connecting (02); a TIME_WAIT without inode.
        let tcp = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 0100007F:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 111 1 0 100 0 0 10 0
   1: 0100007F:1F90 0100007F:C000 01 00000000:00000000 00:00000000 00000000     0        0 222 1 0 20 4 30 10 -1
   2: 0100007F:A1B2 0100007F:0050 01 00000000:00000000 00:00000000 00000000     0        0 333 1 0 20 4 30 10 -1
   3: 0100007F:A1B3 0100007F:0050 02 00000000:00000000 00:00000000 00000000     0        0 444 1 0 20 4 30 10 -1
   4: 0100007F:A1B4 0100007F:0050 06 00000000:00000000 00:00000000 00000000     0        0 0 1 0 20 4 30 10 -1
";
        let tcp6 = "  sl  local_address                         remote_address                        st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 00000000000000000000000001000000:B000 00000000000000000000000001000000:0050 01 00000000:00000000 00:00000000 00000000     0        0 555 1 0 20 4 30 10 -1
";
        let got = outgoing_inodes(&[tcp, tcp6]);
        assert_eq!(got, [333, 555].into_iter().collect());
    }

    #[test]
    fn this_process_sees_its_own_outgoing_connection() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let c = std::net::TcpStream::connect(l.local_addr().unwrap()).unwrap();
        let (_accepted, _) = l.accept().unwrap();
        let pid = std::process::id();
        let found = outgoing(pid).unwrap();
        use std::os::fd::AsRawFd as _;
        assert!(
            found.iter().any(|o| o.fd == c.as_raw_fd()),
            "{found:?} lacks fd {}",
            c.as_raw_fd()
        );
        assert!(
            !found.iter().any(|o| o.fd == _accepted.as_raw_fd()),
            "the accepted side is not outgoing"
        );
        // Both ends live in this process, so the accepted one's local port is the
        // listening one and the connecting one's is ephemeral.
        let pidfd = Pidfd::open(pid).unwrap();
        let dup = pidfd.get(c.as_raw_fd());
        if let Some(dup) = dup {
            assert!(cookie(&dup).is_some_and(|k| k != 0));
        }
    }
}
