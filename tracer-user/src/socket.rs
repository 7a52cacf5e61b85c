//! Kernel socket probes: each traced process's TCP payload bytes, counted in the kernel
//! (`SOCKET_BYTES`, see `tracer_common::socket` and `tracer-ebpf/src/probes/socket.rs`).
//!
//! Two interchangeable paths, chosen once at start-up (`--socket-probes`):
//! - **kprobe**: `kretprobe` on `tcp_sendmsg`, `kprobe` on `tcp_cleanup_rbuf`, and `kretprobe`
//!   on `tcp_sendpage` where the kernel has it (< 6.5: sendfile). Needs the kprobe PMU.
//! - **tracepoint**: `sock:sock_send_length` and `sock:sock_recv_length` (Linux >= 6.3), for
//!   kernels without kprobes (like the hardened VMs this project runs on).
//!
//! The HTTP server probes snapshot the counters as a request starts and finishes; the server
//! span gets the difference ([`span_attributes`]).

use std::{fmt, fs, path::Path};

use aya::{
    maps::HashMap as BpfHashMap,
    programs::{
        KProbe, ProgramError, TracePoint, kprobe::KProbeLinkId, trace_point::TracePointLinkId,
    },
};
use tracer_common::{
    maps::SOCKET_BYTES,
    socket::{
        FN_CLEANUP_RBUF, FN_SENDMSG, FN_SENDPAGE, PROG_KPROBE_CLEANUP_RBUF, PROG_KPROBE_SENDMSG,
        PROG_KPROBE_SENDPAGE, PROG_TP_RECV, PROG_TP_SEND, SocketBytes, TP_CATEGORY, TP_OFF_FAMILY,
        TP_OFF_FLAGS, TP_OFF_PROTOCOL, TP_OFF_RET, TP_RECV, TP_SEND, TcpSnapshot,
    },
};

use crate::{
    features::Features,
    span::AttrValue,
    tracer::{Tracer, TracerError},
};

/// Span attribute: TCP bytes the process received while the server span was open.
pub const ATTR_BYTES_RECEIVED: &str = "kraken.process.tcp.bytes_received";
/// Span attribute: TCP bytes the process sent while the server span was open.
pub const ATTR_BYTES_SENT: &str = "kraken.process.tcp.bytes_sent";

/// `--socket-probes`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum SocketProbes {
    /// kprobes if the kernel has them, else the sock tracepoints, else off.
    Auto,
    /// kprobes on tcp_sendmsg / tcp_cleanup_rbuf (/ tcp_sendpage); an error without kprobes.
    Kprobe,
    /// The sock:sock_send_length / sock_recv_length tracepoints (Linux >= 6.3); an error
    /// without them.
    Tracepoint,
    /// No socket probes (no TCP byte counts, no kraken.process.tcp.* span attributes): the
    /// default, as they cost every process on the node a little on every TCP send/receive.
    #[default]
    Off,
}

/// A way of counting.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    Kprobe,
    Tracepoint,
}

impl Mode {
    pub fn name(self) -> &'static str {
        match self {
            Mode::Kprobe => "kprobe",
            Mode::Tracepoint => "tracepoint",
        }
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SocketError {
    #[error(
        "--socket-probes kprobe: this kernel has no kprobes ({reason}); use --socket-probes auto, tracepoint or off"
    )]
    NoKprobes { reason: String },
    #[error("--socket-probes tracepoint: {reason}; use --socket-probes auto, kprobe or off")]
    NoTracepoints { reason: String },
    #[error("--socket-probes {mode}: cannot attach: {message}")]
    Attach { mode: &'static str, message: String },
}

/// What the kernel offers for socket probes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Support {
    /// `Err(reason)` without the kprobe PMU.
    pub kprobes: Result<(), String>,
    /// `Err(reason)` when the sock tracepoints are missing or laid out differently.
    pub tracepoints: Result<(), String>,
}

impl Support {
    pub fn detect(features: &Features) -> Support {
        Support {
            kprobes: if features.kprobes {
                Ok(())
            } else {
                Err("/sys/bus/event_source/devices/kprobe/type not found".to_owned())
            },
            tracepoints: if features.tracefs {
                tracepoints_supported()
            } else {
                Err("tracefs is not mounted".to_owned())
            },
        }
    }
}

/// The `kraken-tracer features` line: what `--socket-probes auto` would use here.
pub fn feature_line(support: &Support) -> String {
    match choose(SocketProbes::Auto, support) {
        Ok(Plan::Try(modes)) if modes.first() == Some(&Mode::Kprobe) => {
            format!("feature socket probes: kprobe ({FN_SENDMSG}, {FN_CLEANUP_RBUF})")
        }
        Ok(Plan::Try(_)) => format!(
            "feature socket probes: tracepoint ({TP_CATEGORY}:{TP_SEND}, {TP_CATEGORY}:{TP_RECV}); no kprobes"
        ),
        Ok(Plan::Off(why)) => format!("feature socket probes: none ({why})"),
        Err(e) => format!("feature socket probes: {e}"),
    }
}

/// The modes to try, in order (the first that attaches wins), or why socket probes are off.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Plan {
    Try(Vec<Mode>),
    Off(String),
}

/// The start-up choice: `flag` against what the kernel supports. Forcing a mode the kernel
/// lacks is an error; `auto` falls back (kprobe, then tracepoint, then off).
pub fn choose(flag: SocketProbes, support: &Support) -> Result<Plan, SocketError> {
    match flag {
        SocketProbes::Off => Ok(Plan::Off("--socket-probes off".to_owned())),
        SocketProbes::Kprobe => match &support.kprobes {
            Ok(()) => Ok(Plan::Try(vec![Mode::Kprobe])),
            Err(reason) => Err(SocketError::NoKprobes {
                reason: reason.clone(),
            }),
        },
        SocketProbes::Tracepoint => match &support.tracepoints {
            Ok(()) => Ok(Plan::Try(vec![Mode::Tracepoint])),
            Err(reason) => Err(SocketError::NoTracepoints {
                reason: reason.clone(),
            }),
        },
        SocketProbes::Auto => {
            let mut modes = Vec::new();
            if support.kprobes.is_ok() {
                modes.push(Mode::Kprobe);
            }
            if support.tracepoints.is_ok() {
                modes.push(Mode::Tracepoint);
            }
            if modes.is_empty() {
                let why = |r: &Result<(), String>| r.clone().err().unwrap_or_default();
                Ok(Plan::Off(format!(
                    "no kprobes: {}; no sock tracepoints: {}",
                    why(&support.kprobes),
                    why(&support.tracepoints)
                )))
            } else {
                Ok(Plan::Try(modes))
            }
        }
    }
}

/// What runs, for the one start-up log line and the metrics.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Status {
    /// kprobes attached; `sendpage`: `tcp_sendpage` too.
    Kprobe {
        sendpage: bool,
    },
    Tracepoint,
    Off(String),
}

impl Status {
    /// `kprobe`, `tracepoint` or `off` (the metrics' label).
    pub fn mode(&self) -> &'static str {
        match self {
            Status::Kprobe { .. } => Mode::Kprobe.name(),
            Status::Tracepoint => Mode::Tracepoint.name(),
            Status::Off(_) => "off",
        }
    }

    pub fn counting(&self) -> bool {
        !matches!(self, Status::Off(_))
    }
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Status::Kprobe { sendpage } => write!(
                f,
                "socket probes: kprobe ({FN_SENDMSG}, {FN_CLEANUP_RBUF}{})",
                if *sendpage {
                    format!(", {FN_SENDPAGE}")
                } else {
                    String::new()
                }
            ),
            Status::Tracepoint => write!(
                f,
                "socket probes: tracepoint ({TP_CATEGORY}:{TP_SEND}, {TP_CATEGORY}:{TP_RECV})"
            ),
            Status::Off(reason) => write!(f, "socket probes: off ({reason})"),
        }
    }
}

/// Carries out `plan` on a loaded tracer: the first mode that loads and attaches wins (a
/// failure is logged and the next one tried; with a single forced mode it is an error).
pub fn start(tracer: &mut Tracer, plan: &Plan) -> Result<Status, SocketError> {
    let modes = match plan {
        Plan::Off(reason) => return Ok(Status::Off(reason.clone())),
        Plan::Try(modes) => modes,
    };
    let mut failures = Vec::new();
    for &mode in modes {
        match tracer.enable_socket_probes(mode) {
            Ok(status) => return Ok(status),
            Err(e) if modes.len() > 1 => {
                log::warn!("socket probes: {} failed: {e}", mode.name());
                failures.push(format!("{}: {e}", mode.name()));
            }
            Err(e) => {
                return Err(SocketError::Attach {
                    mode: mode.name(),
                    message: e.to_string().replace('\n', " "),
                });
            }
        }
    }
    Ok(Status::Off(failures.join("; ")))
}

/// A traced process's counters as the kernel reported them in an event (`None`: not counted).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TcpCounters {
    pub rx_bytes: u64,
    pub tx_bytes: u64,
}

impl TcpCounters {
    pub fn from_snapshot(s: &TcpSnapshot) -> Option<TcpCounters> {
        (s.counted != 0).then_some(TcpCounters {
            rx_bytes: s.rx_bytes,
            tx_bytes: s.tx_bytes,
        })
    }
}

/// The server span's `kraken.process.tcp.bytes_received` / `bytes_sent`: what the process moved
/// between the span's start and end. Only when both ends were counted (socket probes on);
/// zero values are kept (an explicit "nothing moved in that window").
pub fn span_attributes(
    start: Option<TcpCounters>,
    end: Option<TcpCounters>,
) -> Option<[(&'static str, AttrValue); 2]> {
    let (s, e) = (start?, end?);
    let delta = |a: u64, b: u64| i64::try_from(b.saturating_sub(a)).unwrap_or(i64::MAX);
    Some([
        (ATTR_BYTES_RECEIVED, delta(s.rx_bytes, e.rx_bytes).into()),
        (ATTR_BYTES_SENT, delta(s.tx_bytes, e.tx_bytes).into()),
    ])
}

impl Tracer {
    /// Loads and attaches the socket programs of `mode`; from then on every attached process
    /// (and every one attached later) is counted.
    pub fn enable_socket_probes(&mut self, mode: Mode) -> Result<Status, TracerError> {
        let status = match mode {
            Mode::Kprobe => {
                let send = self.attach_kprobe(PROG_KPROBE_SENDMSG, FN_SENDMSG)?;
                if let Err(e) = self.attach_kprobe(PROG_KPROBE_CLEANUP_RBUF, FN_CLEANUP_RBUF) {
                    // Half a path would count one direction only (and twice if auto falls back
                    // to the tracepoints): undo it.
                    self.detach_kprobe(PROG_KPROBE_SENDMSG, send);
                    return Err(e);
                }
                let sendpage = match self.attach_kprobe(PROG_KPROBE_SENDPAGE, FN_SENDPAGE) {
                    Ok(_) => true,
                    Err(e) => {
                        log::info!(
                            "socket probes: {FN_SENDPAGE} not attached ({e}); kernels >= 6.5 \
                             send sendfile data through {FN_SENDMSG}"
                        );
                        false
                    }
                };
                Status::Kprobe { sendpage }
            }
            Mode::Tracepoint => {
                let send = self.attach_tracepoint(PROG_TP_SEND, TP_SEND)?;
                if let Err(e) = self.attach_tracepoint(PROG_TP_RECV, TP_RECV) {
                    if let Ok(prog) = self.program::<TracePoint>(PROG_TP_SEND)
                        && let Err(d) = prog.detach(send)
                    {
                        log::warn!("detaching {PROG_TP_SEND}: {d}");
                    }
                    return Err(e);
                }
                Status::Tracepoint
            }
        };
        self.socket_counting = true;
        for pid in self.attached().map(|a| a.pid).collect::<Vec<_>>() {
            self.socket_track(pid, true)?;
        }
        Ok(status)
    }

    fn program<'a, P>(&'a mut self, program: &'static str) -> Result<&'a mut P, TracerError>
    where
        &'a mut P: TryFrom<&'a mut aya::programs::Program, Error = ProgramError>,
    {
        self.ebpf
            .program_mut(program)
            .ok_or(TracerError::MissingProgram(program))?
            .try_into()
            .map_err(|source| TracerError::Program { program, source })
    }

    fn attach_kprobe(
        &mut self,
        program: &'static str,
        function: &str,
    ) -> Result<KProbeLinkId, TracerError> {
        let err = |source| TracerError::Program { program, source };
        let prog: &mut KProbe = self.program(program)?;
        load_once(prog.load()).map_err(err)?;
        prog.attach(function, 0).map_err(err)
    }

    fn detach_kprobe(&mut self, program: &'static str, link: KProbeLinkId) {
        if let Ok(prog) = self.program::<KProbe>(program)
            && let Err(e) = prog.detach(link)
        {
            log::warn!("detaching {program}: {e}");
        }
    }

    fn attach_tracepoint(
        &mut self,
        program: &'static str,
        name: &str,
    ) -> Result<TracePointLinkId, TracerError> {
        let err = |source| TracerError::Program { program, source };
        let prog: &mut TracePoint = self.program(program)?;
        load_once(prog.load()).map_err(err)?;
        prog.attach(TP_CATEGORY, name).map_err(err)
    }

    /// Gives `pid` a zeroed counter entry (`on`) or removes it. No-op while socket probes are off.
    /// Attach and detach do this; public for benchmarks that count a process they don't attach.
    pub fn socket_track(&mut self, pid: u32, on: bool) -> Result<(), TracerError> {
        if !self.socket_counting {
            return Ok(());
        }
        let map = self
            .ebpf
            .map_mut(SOCKET_BYTES)
            .ok_or(TracerError::MissingMap(SOCKET_BYTES))?;
        let err = |source| TracerError::Map {
            map: SOCKET_BYTES,
            source,
        };
        let mut counters = BpfHashMap::<_, u32, SocketBytes>::try_from(map).map_err(err)?;
        let r = if on {
            counters.insert(pid, SocketBytes::default(), 0)
        } else {
            counters.remove(&pid)
        };
        r.map_err(err)
    }

    /// Every counted process's TCP counters (empty while socket probes are off).
    pub fn socket_bytes(&self) -> Result<Vec<(u32, SocketBytes)>, TracerError> {
        if !self.socket_counting {
            return Ok(Vec::new());
        }
        let map = self
            .ebpf
            .map(SOCKET_BYTES)
            .ok_or(TracerError::MissingMap(SOCKET_BYTES))?;
        let err = |source| TracerError::Map {
            map: SOCKET_BYTES,
            source,
        };
        let counters = BpfHashMap::<_, u32, SocketBytes>::try_from(map).map_err(err)?;
        let mut out = counters
            .iter()
            .collect::<Result<Vec<_>, _>>()
            .map_err(err)?;
        out.sort_unstable_by_key(|(pid, _)| *pid);
        Ok(out)
    }
}

/// A program already loaded (a retried mode) is fine.
fn load_once(r: Result<(), ProgramError>) -> Result<(), ProgramError> {
    match r {
        Err(ProgramError::AlreadyLoaded) => Ok(()),
        r => r,
    }
}

/// Whether both sock tracepoints exist with the record layout the programs read.
fn tracepoints_supported() -> Result<(), String> {
    let root = ["/sys/kernel/tracing", "/sys/kernel/debug/tracing"]
        .into_iter()
        .map(Path::new)
        .find(|p| p.join("events").is_dir())
        .ok_or("tracefs has no events directory")?;
    for name in [TP_SEND, TP_RECV] {
        let path = root
            .join("events")
            .join(TP_CATEGORY)
            .join(name)
            .join("format");
        let text = fs::read_to_string(&path).map_err(|e| {
            format!(
                "no {TP_CATEGORY}:{name} tracepoint ({}: {e}; it needs Linux >= 6.3)",
                path.display()
            )
        })?;
        check_format(&text).map_err(|e| format!("{TP_CATEGORY}:{name}: {e}"))?;
    }
    Ok(())
}

/// Checks a `sock_{send,recv}_length` format file against the offsets the programs read.
pub fn check_format(text: &str) -> Result<(), String> {
    let fields: Vec<(&str, usize, usize)> = text
        .lines()
        .filter_map(|l| {
            let l = l.trim();
            let decl = l.strip_prefix("field:")?.split(';').next()?;
            let name = decl.rsplit([' ', '*']).next()?;
            let num = |key: &str| -> Option<usize> {
                l.split(';')
                    .find_map(|p| p.trim().strip_prefix(key))
                    .and_then(|v| v.parse().ok())
            };
            Some((name, num("offset:")?, num("size:")?))
        })
        .collect();
    for (name, offset, size) in [
        ("family", TP_OFF_FAMILY, 2),
        ("protocol", TP_OFF_PROTOCOL, 2),
        ("ret", TP_OFF_RET, 4),
        ("flags", TP_OFF_FLAGS, 4),
    ] {
        match fields.iter().find(|(n, _, _)| *n == name) {
            Some(&(_, o, s)) if (o, s) == (offset, size) => {}
            Some(&(_, o, s)) => {
                return Err(format!(
                    "field {name} at offset {o} size {s}, expected offset {offset} size {size}"
                ));
            }
            None => return Err(format!("no field {name}")),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const FORMAT_6_18: &str = "name: sock_send_length
ID: 2284
format:
\tfield:unsigned short common_type;\toffset:0;\tsize:2;\tsigned:0;
\tfield:unsigned char common_flags;\toffset:2;\tsize:1;\tsigned:0;
\tfield:unsigned char common_preempt_count;\toffset:3;\tsize:1;\tsigned:0;
\tfield:int common_pid;\toffset:4;\tsize:4;\tsigned:1;

\tfield:void * sk;\toffset:8;\tsize:8;\tsigned:0;
\tfield:__u16 family;\toffset:16;\tsize:2;\tsigned:0;
\tfield:__u16 protocol;\toffset:18;\tsize:2;\tsigned:0;
\tfield:int ret;\toffset:20;\tsize:4;\tsigned:1;
\tfield:int flags;\toffset:24;\tsize:4;\tsigned:1;

print fmt: \"sk address = %p\", REC->sk
";

    fn support(kprobes: bool, tracepoints: bool) -> Support {
        Support {
            kprobes: if kprobes {
                Ok(())
            } else {
                Err("no kprobe PMU".into())
            },
            tracepoints: if tracepoints {
                Ok(())
            } else {
                Err("no sock:sock_send_length".into())
            },
        }
    }

    #[test]
    fn auto_prefers_kprobes_then_tracepoints_then_off() {
        use Mode::*;
        let auto = SocketProbes::Auto;
        assert_eq!(
            choose(auto, &support(true, true)),
            Ok(Plan::Try(vec![Kprobe, Tracepoint]))
        );
        assert_eq!(
            choose(auto, &support(false, true)),
            Ok(Plan::Try(vec![Tracepoint]))
        );
        assert_eq!(
            choose(auto, &support(true, false)),
            Ok(Plan::Try(vec![Kprobe]))
        );
        let Ok(Plan::Off(reason)) = choose(auto, &support(false, false)) else {
            panic!("expected off");
        };
        assert!(
            reason.contains("no kprobe PMU") && reason.contains("no sock:sock_send_length"),
            "{reason}"
        );
    }

    #[test]
    fn forced_modes_fail_clearly_when_unavailable() {
        let e = choose(SocketProbes::Kprobe, &support(false, true)).expect_err("no kprobes");
        let msg = e.to_string();
        assert!(msg.starts_with("--socket-probes kprobe: "), "{msg}");
        assert!(
            msg.contains("no kprobe PMU") && !msg.contains('\n'),
            "{msg}"
        );
        let e = choose(SocketProbes::Tracepoint, &support(true, false)).expect_err("no tp");
        assert!(
            e.to_string().starts_with("--socket-probes tracepoint: "),
            "{e}"
        );
        assert_eq!(
            choose(SocketProbes::Kprobe, &support(true, false)),
            Ok(Plan::Try(vec![Mode::Kprobe]))
        );
        assert_eq!(
            choose(SocketProbes::Tracepoint, &support(false, true)),
            Ok(Plan::Try(vec![Mode::Tracepoint]))
        );
        // Off is always possible, even without anything.
        assert_eq!(
            choose(SocketProbes::Off, &support(false, false)),
            Ok(Plan::Off("--socket-probes off".into()))
        );
    }

    #[test]
    fn support_follows_features() {
        let f = Features {
            btf: true,
            tracefs: false,
            uprobes: true,
            kprobes: false,
            fentry: crate::features::Availability::No("test".into()),
            lockdown: None,
        };
        let s = Support::detect(&f);
        assert!(s.kprobes.is_err());
        assert_eq!(s.tracepoints, Err("tracefs is not mounted".into()));
        let s = Support::detect(&Features { kprobes: true, ..f });
        assert_eq!(s.kprobes, Ok(()));
    }

    #[test]
    fn feature_line_names_the_auto_choice() {
        assert_eq!(
            feature_line(&support(true, true)),
            "feature socket probes: kprobe (tcp_sendmsg, tcp_cleanup_rbuf)"
        );
        assert!(feature_line(&support(false, true)).contains(": tracepoint (sock:"));
        assert!(feature_line(&support(false, false)).starts_with("feature socket probes: none ("));
    }

    #[test]
    fn log_lines() {
        assert_eq!(
            Status::Kprobe { sendpage: true }.to_string(),
            "socket probes: kprobe (tcp_sendmsg, tcp_cleanup_rbuf, tcp_sendpage)"
        );
        assert_eq!(
            Status::Kprobe { sendpage: false }.to_string(),
            "socket probes: kprobe (tcp_sendmsg, tcp_cleanup_rbuf)"
        );
        assert_eq!(
            Status::Tracepoint.to_string(),
            "socket probes: tracepoint (sock:sock_send_length, sock:sock_recv_length)"
        );
        assert_eq!(
            Status::Off("--socket-probes off".into()).to_string(),
            "socket probes: off (--socket-probes off)"
        );
        assert_eq!(Status::Tracepoint.mode(), "tracepoint");
        assert!(!Status::Off(String::new()).counting());
    }

    #[test]
    fn format_check() {
        assert_eq!(check_format(FORMAT_6_18), Ok(()));
        let moved = FORMAT_6_18.replace("int ret;\toffset:20", "int ret;\toffset:28");
        let e = check_format(&moved).expect_err("moved field");
        assert!(e.contains("field ret at offset 28"), "{e}");
        let missing = FORMAT_6_18.replace("__u16 protocol;", "__u16 proto;");
        assert_eq!(check_format(&missing), Err("no field protocol".into()));
    }

    #[test]
    fn attributes_are_end_minus_start_and_need_both_ends() {
        let c = |rx, tx| {
            Some(TcpCounters {
                rx_bytes: rx,
                tx_bytes: tx,
            })
        };
        let attrs = span_attributes(c(100, 1_000), c(1_124, 1_001_000)).expect("both ends");
        assert_eq!(attrs[0], (ATTR_BYTES_RECEIVED, AttrValue::Int(1_024)));
        assert_eq!(attrs[1], (ATTR_BYTES_SENT, AttrValue::Int(1_000_000)));
        // Zero is kept: counted, nothing moved.
        let attrs = span_attributes(c(5, 5), c(5, 5)).expect("both ends");
        assert_eq!(attrs[0].1, AttrValue::Int(0));
        assert_eq!(span_attributes(None, c(1, 1)), None);
        assert_eq!(span_attributes(c(1, 1), None), None);
        // A counter that went backwards (entry re-created) gives 0, never a negative size.
        let attrs = span_attributes(c(10, 10), c(3, 3)).expect("both ends");
        assert_eq!(attrs[1].1, AttrValue::Int(0));
    }

    #[test]
    fn snapshot_counted_flag() {
        let s = TcpSnapshot {
            rx_bytes: 7,
            tx_bytes: 9,
            counted: 1,
            _pad: 0,
        };
        assert_eq!(
            TcpCounters::from_snapshot(&s),
            Some(TcpCounters {
                rx_bytes: 7,
                tx_bytes: 9
            })
        );
        assert_eq!(
            TcpCounters::from_snapshot(&TcpSnapshot { counted: 0, ..s }),
            None
        );
    }
}
