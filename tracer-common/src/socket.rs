//! Kernel socket probes (kprobes or tracepoints, not Go uprobes): their program names, the
//! per-process TCP byte counters they keep, and the tracepoint record layout they read.

/// TCP payload bytes moved by one traced process (value of `maps::SOCKET_BYTES`, keyed by
/// tgid). Updated with atomic adds: every thread of the process shares the entry.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SocketBytes {
    /// Bytes received (copied to the process; `MSG_PEEK` excluded where the probe can tell).
    pub rx_bytes: u64,
    /// Bytes accepted for sending.
    pub tx_bytes: u64,
    /// Receive calls that returned data.
    pub rx_calls: u64,
    /// Send calls that accepted data.
    pub tx_calls: u64,
}

#[cfg(feature = "user")]
unsafe impl aya::Pod for SocketBytes {}

/// kprobe path: `kretprobe` on `tcp_sendmsg` (its return value: bytes accepted).
pub const PROG_KPROBE_SENDMSG: &str = "socket_tcp_sendmsg";
/// kprobe path: `kprobe` on `tcp_cleanup_rbuf(sk, copied)` (bytes the reader consumed).
pub const PROG_KPROBE_CLEANUP_RBUF: &str = "socket_tcp_cleanup_rbuf";
/// kprobe path, kernels < 6.5: `kretprobe` on `tcp_sendpage` (sendfile/splice to a socket).
pub const PROG_KPROBE_SENDPAGE: &str = "socket_tcp_sendpage";
/// Tracepoint path (kernels >= 6.3): `sock:sock_send_length`.
pub const PROG_TP_SEND: &str = "socket_send_length";
/// Tracepoint path: `sock:sock_recv_length`.
pub const PROG_TP_RECV: &str = "socket_recv_length";

/// Every socket program of the object.
pub const PROGRAMS: [&str; 5] = [
    PROG_KPROBE_SENDMSG,
    PROG_KPROBE_CLEANUP_RBUF,
    PROG_KPROBE_SENDPAGE,
    PROG_TP_SEND,
    PROG_TP_RECV,
];

/// Kernel functions of the kprobe path.
pub const FN_SENDMSG: &str = "tcp_sendmsg";
pub const FN_CLEANUP_RBUF: &str = "tcp_cleanup_rbuf";
pub const FN_SENDPAGE: &str = "tcp_sendpage";

/// Tracepoint category and names of the tracepoint path.
pub const TP_CATEGORY: &str = "sock";
pub const TP_SEND: &str = "sock_send_length";
pub const TP_RECV: &str = "sock_recv_length";

/// Offsets of the `sock_{send,recv}_length` record fields the programs read (identical for
/// both events; user space checks them against the tracepoint's `format` before attaching).
pub const TP_OFF_FAMILY: usize = 16;
pub const TP_OFF_PROTOCOL: usize = 18;
pub const TP_OFF_RET: usize = 20;
pub const TP_OFF_FLAGS: usize = 24;

pub const AF_INET: u16 = 2;
pub const AF_INET6: u16 = 10;
pub const IPPROTO_TCP: u16 = 6;
/// `recv(2)` flag: look at the data without consuming it.
pub const MSG_PEEK: i32 = 2;

/// TCP counters at one probe hit of a traced process (in the HTTP server events). `counted`
/// is 0 when socket probes are off for the process (the counters are then 0 and meaningless).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TcpSnapshot {
    pub rx_bytes: u64,
    pub tx_bytes: u64,
    pub counted: u32,
    pub _pad: u32,
}
