//! Loading the eBPF object and attaching its probes to target processes.

use std::{
    collections::HashMap,
    fmt, fs,
    num::NonZeroU32,
    path::{Path, PathBuf},
};

use aya::{
    Ebpf, EbpfLoader,
    maps::{Array as BpfArray, HashMap as BpfHashMap, MapData, PerCpuArray, RingBuf, SockHash},
    programs::{
        CgroupAttachMode, ProgramError, SkMsg, SockOps, UProbe, uprobe::UProbeAttachLocation,
        uprobe::UProbeLinkId, uprobe::UProbeScope,
    },
};
use tracer_common::{
    maps::{
        COUNTER_FILTERED_CLIENT, COUNTER_FILTERED_ENDS, COUNTER_FILTERED_SERVER,
        COUNTER_NOT_TRACED, COUNTER_PROBE_HITS, COUNTER_PROP_HAD_HEADER, COUNTER_PROP_INJECTED,
        COUNTER_PROP_NO_LINE_END, COUNTER_PROP_NO_PENDING, COUNTER_PROP_NOT_HTTP,
        COUNTER_PROP_PUSH_FAILED, COUNTER_READ_ERRORS, COUNTER_RINGBUF_FULL, COUNTERS, EVENTS,
        PROCESSES, RULES, SOCKETS,
    },
    offsets::{FLAG_CAPTURE_QUERY, FLAG_PROPAGATE, ProcessConfig},
    probe::{PROBES, ProbeId, ProbeSpec, Site},
    rules::KernelRules,
};

use crate::{
    offsets::OffsetSource,
    symbols::{
        self, Binary, SymbolError,
        sites::{ProbeSite, SiteKind},
    },
    target::{Target, TargetError},
};

#[derive(Debug, thiserror::Error)]
pub enum TracerError {
    #[error(
        "this kraken-tracer was built without its eBPF object (AYA_BUILD_SKIP); rebuild after `cargo xtask setup`"
    )]
    NoObject,
    #[error(
        "permission denied creating BPF maps: run as root or with CAP_BPF, CAP_PERFMON, CAP_NET_ADMIN, CAP_SYS_PTRACE and CAP_DAC_READ_SEARCH"
    )]
    NotPermitted,
    #[error("cannot load the eBPF object: {0}")]
    Load(#[source] aya::EbpfError),
    #[error("the eBPF object has no program {0} (build mismatch)")]
    MissingProgram(&'static str),
    #[error("the eBPF object has no map {0} (build mismatch)")]
    MissingMap(&'static str),
    #[error("the kernel verifier rejected program {program}: {io_error}; verifier log saved to {}", log_path.display())]
    Verifier {
        program: &'static str,
        io_error: std::io::Error,
        log_path: PathBuf,
    },
    #[error("program {program}: {source}")]
    Program {
        program: &'static str,
        #[source]
        source: ProgramError,
    },
    #[error(transparent)]
    Target(#[from] TargetError),
    #[error("pid {pid}: {source}")]
    Symbol {
        pid: u32,
        #[source]
        source: SymbolError,
    },
    #[error("pid {pid}: cannot attach {symbol} at file offset {offset:#x}: {source}")]
    Attach {
        pid: u32,
        symbol: &'static str,
        offset: u64,
        #[source]
        source: ProgramError,
    },
    #[error("map {map}: {source}")]
    Map {
        map: &'static str,
        #[source]
        source: aya::maps::MapError,
    },
    #[error("pid {0} is not attached")]
    NotAttached(u32),
    #[error(
        "pid {pid} runs an {binary} binary; this tracer is built for {}",
        std::env::consts::ARCH
    )]
    ArchMismatch { pid: u32, binary: symbols::Arch },
    #[error(transparent)]
    Sockets(#[from] crate::sockets::SocketsError),
    #[error("no cgroup2 file system in /proc/mounts (sock_ops programs attach to one)")]
    NoCgroup2,
    #[error("cannot open the cgroup2 root {path}: {source}")]
    Cgroup {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// The programs that insert `traceparent` into outgoing requests.
pub const SOCK_OPS_PROGRAM: &str = "propagate_sockops";
pub const SK_MSG_PROGRAM: &str = "propagate_msg";

/// Where one probe was placed in one process, and why (printed at attach time).
#[derive(Clone, Debug)]
pub struct PlacedProbe {
    pub probe: ProbeId,
    pub symbol: &'static str,
    pub address: u64,
    pub file_offset: u64,
    pub symbol_source: symbols::SymbolSource,
    pub site: ProbeSite,
}

impl fmt::Display for PlacedProbe {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let cost = match self.site.kind {
            SiteKind::Emulated => "emulated, ~0.5 µs/hit",
            SiteKind::SingleStepped => "single-stepped, ~13 µs/hit on this kind of VM",
        };
        write!(
            f,
            "probe {} at {:#x}+{:#x} ({}; {}): {}",
            self.symbol,
            self.address,
            self.site.offset,
            self.site.instruction,
            cost,
            self.site.reason
        )
    }
}

/// One attached process.
pub struct Attachment {
    pub pid: u32,
    pub exe: PathBuf,
    pub go_version: Option<String>,
    pub offset_source: OffsetSource,
    pub probes: Vec<PlacedProbe>,
    links: Vec<(&'static str, UProbeLinkId)>,
}

/// A probe attached by [`Tracer::attach_raw`].
pub struct RawLink {
    program: &'static str,
    link: UProbeLinkId,
}

/// The kernel-side counters, summed over CPUs unless said otherwise.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Counters {
    /// Probe hits in traced processes, all probes.
    pub hits: u64,
    /// Hits per probe program (PROBES order).
    pub probe_hits: Vec<(&'static str, u64)>,
    pub ringbuf_full: u64,
    /// Ring-buffer reserve failures per CPU (index = CPU).
    pub ringbuf_full_per_cpu: Vec<u64>,
    pub read_errors: u64,
    pub not_traced: u64,
    /// Server / client requests dropped by the path rules, and their silenced end probes.
    pub filtered_server: u64,
    pub filtered_client: u64,
    pub filtered_ends: u64,
    pub propagation: PropagationCounters,
}

/// What the sk_msg program did with the sends of traced connections.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PropagationCounters {
    /// `traceparent` lines inserted.
    pub injected: u64,
    /// Client requests that already carried a `traceparent` (kept).
    pub had_header: u64,
    /// Sends that are not the start of an HTTP/1 request (bodies, TLS records, ...).
    pub not_http: u64,
    /// Requests whose request line did not end within the scanned bytes.
    pub no_line_end: u64,
    /// Requests with no context waiting (untraced caller, same path twice at once, ...).
    pub no_pending: u64,
    /// Inserts the kernel refused (the request went out unchanged).
    pub push_failed: u64,
}

pub struct Tracer {
    pub(crate) ebpf: Ebpf,
    attached: HashMap<u32, Attachment>,
    /// `FLAG_*` bits given to every process attached from now on.
    flags: u32,
    /// Socket probes are attached: attached processes get a `SOCKET_BYTES` entry (`socket`).
    pub(crate) socket_counting: bool,
    /// Programs this kernel's verifier refused, each with the one loaded in its place.
    substitutes: Vec<Substitute>,
}

/// A program of the probe table the kernel refused, and the simpler one used instead.
#[derive(Clone, Debug)]
pub struct Substitute {
    pub program: &'static str,
    pub instead: &'static str,
    /// Where the refused program's verifier log was saved.
    pub log_path: PathBuf,
}

/// Programs with a simpler stand-in for kernels whose verifier refuses them.
const FALLBACKS: &[(&str, &str)] = &[("http_client", "http_client_basic")];

impl Tracer {
    /// Loads the embedded object and every program of the probe table into the kernel.
    /// A verifier rejection leaves its log in `verifier_log_dir`.
    pub fn load(verifier_log_dir: &Path) -> Result<Tracer, TracerError> {
        Self::load_object(crate::EBPF_OBJECT, verifier_log_dir)
    }

    pub fn load_object(object: &[u8], verifier_log_dir: &Path) -> Result<Tracer, TracerError> {
        if object.is_empty() {
            return Err(TracerError::NoObject);
        }
        let mut ebpf = EbpfLoader::new().load(object).map_err(|e| match e {
            aya::EbpfError::MapError(aya::maps::MapError::CreateError { io_error, .. })
                if io_error.kind() == std::io::ErrorKind::PermissionDenied =>
            {
                TracerError::NotPermitted
            }
            e => TracerError::Load(e),
        })?;
        let mut substitutes = Vec::new();
        for spec in PROBES {
            match load_uprobe(&mut ebpf, spec.program, verifier_log_dir) {
                Ok(()) => {}
                Err(TracerError::Verifier {
                    program,
                    io_error,
                    log_path,
                }) => {
                    let Some(&(_, instead)) = FALLBACKS.iter().find(|(p, _)| *p == program) else {
                        return Err(TracerError::Verifier {
                            program,
                            io_error,
                            log_path,
                        });
                    };
                    load_uprobe(&mut ebpf, instead, verifier_log_dir)?;
                    substitutes.push(Substitute {
                        program,
                        instead,
                        log_path,
                    });
                }
                Err(e) => return Err(e),
            }
        }
        Ok(Tracer {
            ebpf,
            attached: HashMap::new(),
            flags: 0,
            socket_counting: false,
            substitutes,
        })
    }

    /// Resolves `pid`, registers it with the kernel programs and attaches every probe to it
    /// (scoped to that process). Re-attaching an attached pid is a no-op.
    pub fn attach_pid(&mut self, pid: u32) -> Result<&Attachment, TracerError> {
        if self.attached.contains_key(&pid) {
            return self.attached.get(&pid).ok_or(TracerError::NotAttached(pid));
        }
        self.attach(Target::resolve(pid)?)
    }

    /// Registers a resolved target with the kernel programs and attaches every probe to it.
    pub fn attach(&mut self, target: Target) -> Result<&Attachment, TracerError> {
        let pid = target.pid;
        if symbols::Arch::HOST != Some(target.binary.arch()) {
            return Err(TracerError::ArchMismatch {
                pid,
                binary: target.binary.arch(),
            });
        }
        let (placed, skipped) =
            place_all(&target.binary).map_err(|source| TracerError::Symbol { pid, source })?;
        for s in &skipped {
            log::warn!("pid {pid}: {s}");
        }
        self.set_process(pid, Some(target.process_config()))?;
        if let Err(e) = self.socket_track(pid, true) {
            let _ = self.set_process(pid, None);
            return Err(e);
        }
        if self.flags & FLAG_PROPAGATE != 0 {
            match self.adopt_connections(pid) {
                Ok(0) => {}
                Ok(n) => log::info!(
                    "pid {pid}: {n} TCP connection(s) it opened before the tracer attached now get traceparent too"
                ),
                // Not fatal: propagation starts with the connections it opens from now on.
                Err(e) => log::warn!(
                    "pid {pid}: its existing connections get no traceparent (new ones do): {e}"
                ),
            }
        }
        let mut links = Vec::new();
        let scope = UProbeScope::OneProcess(
            NonZeroU32::new(pid).ok_or(TargetError::NoSuchProcess { pid })?,
        );
        for p in &placed {
            let Some(spec) = PROBES.iter().find(|s| s.id == p.probe) else {
                continue;
            };
            let program = self.program_for(spec.program);
            let result = self.uprobe(program).and_then(|prog| {
                prog.attach(
                    UProbeAttachLocation::AbsoluteOffset(p.file_offset + p.site.offset),
                    &target.exe_link,
                    scope,
                )
                .map_err(|source| TracerError::Attach {
                    pid,
                    symbol: spec.go_symbol,
                    offset: p.file_offset + p.site.offset,
                    source,
                })
            });
            match result {
                Ok(link) => links.push((program, link)),
                Err(e) => {
                    self.unlink(&mut links);
                    let _ = self.set_process(pid, None);
                    let _ = self.socket_track(pid, false);
                    return Err(e);
                }
            }
        }
        let attachment = Attachment {
            pid,
            exe: target.exe_path.clone(),
            go_version: target.binary.go_version().map(ToString::to_string),
            offset_source: target.offset_source,
            probes: placed,
            links,
        };
        Ok(self.attached.entry(pid).or_insert(attachment))
    }

    /// Detaches every probe from `pid` and forgets it (e.g. when the process exited).
    pub fn detach(&mut self, pid: u32) -> Result<(), TracerError> {
        let mut a = self
            .attached
            .remove(&pid)
            .ok_or(TracerError::NotAttached(pid))?;
        self.unlink(&mut a.links);
        if let Err(e) = self.socket_track(pid, false) {
            log::debug!("pid {pid}: removing its socket counters: {e}");
        }
        self.set_process(pid, None)
    }

    /// Low level, for benchmarks and probe-set re-creations: registers `target` with the kernel
    /// programs and attaches `program` at an arbitrary file offset of its executable.
    pub fn attach_raw(
        &mut self,
        target: &Target,
        program: &'static str,
        file_offset: u64,
    ) -> Result<RawLink, TracerError> {
        let pid = target.pid;
        self.set_process(pid, Some(target.process_config()))?;
        let scope = UProbeScope::OneProcess(
            NonZeroU32::new(pid).ok_or(TargetError::NoSuchProcess { pid })?,
        );
        let link = self
            .uprobe(program)?
            .attach(
                UProbeAttachLocation::AbsoluteOffset(file_offset),
                &target.exe_link,
                scope,
            )
            .map_err(|source| TracerError::Attach {
                pid,
                symbol: program,
                offset: file_offset,
                source,
            })?;
        Ok(RawLink { program, link })
    }

    /// Undoes `attach_raw` (the process stays registered until `forget_process`).
    pub fn detach_raw(&mut self, raw: RawLink) {
        self.unlink(&mut vec![(raw.program, raw.link)]);
    }

    /// Removes a process registered by `attach_raw`.
    pub fn forget_process(&mut self, pid: u32) -> Result<(), TracerError> {
        self.set_process(pid, None)
    }

    pub fn attached(&self) -> impl Iterator<Item = &Attachment> {
        self.attached.values()
    }

    /// Hands out the event ring buffer (once).
    pub fn take_events(&mut self) -> Result<RingBuf<MapData>, TracerError> {
        let map = self
            .ebpf
            .take_map(EVENTS)
            .ok_or(TracerError::MissingMap(EVENTS))?;
        RingBuf::try_from(map).map_err(|source| TracerError::Map {
            map: EVENTS,
            source,
        })
    }

    pub fn counters(&self) -> Result<Counters, TracerError> {
        let map = self
            .ebpf
            .map(COUNTERS)
            .ok_or(TracerError::MissingMap(COUNTERS))?;
        let arr = PerCpuArray::<_, u64>::try_from(map).map_err(|source| TracerError::Map {
            map: COUNTERS,
            source,
        })?;
        let per_cpu = |i: u32| -> Result<Vec<u64>, TracerError> {
            let v = arr.get(&i, 0).map_err(|source| TracerError::Map {
                map: COUNTERS,
                source,
            })?;
            Ok(v.iter().copied().collect())
        };
        let sum = |i: u32| -> Result<u64, TracerError> { Ok(per_cpu(i)?.iter().sum()) };
        let probe_hits = PROBES
            .iter()
            .map(|p| Ok((p.program, sum(COUNTER_PROBE_HITS + p.id as u32)?)))
            .collect::<Result<Vec<_>, TracerError>>()?;
        let ringbuf_full_per_cpu = per_cpu(COUNTER_RINGBUF_FULL)?;
        Ok(Counters {
            hits: probe_hits.iter().map(|(_, n)| n).sum(),
            probe_hits,
            ringbuf_full: ringbuf_full_per_cpu.iter().sum(),
            ringbuf_full_per_cpu,
            read_errors: sum(COUNTER_READ_ERRORS)?,
            not_traced: sum(COUNTER_NOT_TRACED)?,
            filtered_server: sum(COUNTER_FILTERED_SERVER)?,
            filtered_client: sum(COUNTER_FILTERED_CLIENT)?,
            filtered_ends: sum(COUNTER_FILTERED_ENDS)?,
            propagation: PropagationCounters {
                injected: sum(COUNTER_PROP_INJECTED)?,
                had_header: sum(COUNTER_PROP_HAD_HEADER)?,
                not_http: sum(COUNTER_PROP_NOT_HTTP)?,
                no_line_end: sum(COUNTER_PROP_NO_LINE_END)?,
                no_pending: sum(COUNTER_PROP_NO_PENDING)?,
                push_failed: sum(COUNTER_PROP_PUSH_FAILED)?,
            },
        })
    }

    /// Lets the kernel copy server requests' query strings (processes attached from now on).
    /// Off by default: only the path leaves the traced process.
    pub fn set_capture_query(&mut self, on: bool) {
        if on {
            self.flags |= FLAG_CAPTURE_QUERY;
        } else {
            self.flags &= !FLAG_CAPTURE_QUERY;
        }
    }

    /// Starts inserting `traceparent` into the HTTP/1 requests traced processes send on TCP
    /// connections they open from now on: a sock_ops program on the cgroup2 root collects
    /// those connections, an sk_msg program on them inserts the header. Processes attached
    /// from now on leave their client contexts for it.
    pub fn enable_propagation(&mut self) -> Result<(), TracerError> {
        let cgroup = cgroup2_root()?;
        let dir = fs::File::open(&cgroup).map_err(|source| TracerError::Cgroup {
            path: cgroup.clone(),
            source,
        })?;
        let verifier = |program: &'static str| {
            move |source: ProgramError| TracerError::Program { program, source }
        };
        let sock_ops: &mut SockOps = program(&mut self.ebpf, SOCK_OPS_PROGRAM)?
            .try_into()
            .map_err(verifier(SOCK_OPS_PROGRAM))?;
        sock_ops.load().map_err(verifier(SOCK_OPS_PROGRAM))?;
        // Several tracers (one per node or container) may share the root cgroup.
        sock_ops
            .attach(&dir, CgroupAttachMode::Single)
            .map_err(verifier(SOCK_OPS_PROGRAM))?;
        let map_fd = {
            let map = self
                .ebpf
                .map(SOCKETS)
                .ok_or(TracerError::MissingMap(SOCKETS))?;
            let hash = SockHash::<_, u64>::try_from(map).map_err(|source| TracerError::Map {
                map: SOCKETS,
                source,
            })?;
            hash.fd().try_clone().map_err(|e| TracerError::Program {
                program: SK_MSG_PROGRAM,
                source: ProgramError::IOError(e),
            })?
        };
        let sk_msg: &mut SkMsg = program(&mut self.ebpf, SK_MSG_PROGRAM)?
            .try_into()
            .map_err(verifier(SK_MSG_PROGRAM))?;
        sk_msg.load().map_err(verifier(SK_MSG_PROGRAM))?;
        sk_msg.attach(&map_fd).map_err(verifier(SK_MSG_PROGRAM))?;
        self.flags |= FLAG_PROPAGATE;
        Ok(())
    }

    /// Puts the established outgoing TCP connections `pid` opened before now (Go keeps idle
    /// keep-alive connections) into the propagation sockhash; returns how many.
    pub fn adopt_connections(&mut self, pid: u32) -> Result<usize, TracerError> {
        let conns = crate::sockets::outgoing(pid)?;
        if conns.is_empty() {
            return Ok(0);
        }
        let pidfd = crate::sockets::Pidfd::open(pid)?;
        let map = self
            .ebpf
            .map_mut(SOCKETS)
            .ok_or(TracerError::MissingMap(SOCKETS))?;
        let mut hash = SockHash::<_, u64>::try_from(map).map_err(|source| TracerError::Map {
            map: SOCKETS,
            source,
        })?;
        let mut n = 0;
        use std::os::fd::AsRawFd as _;
        for c in conns {
            // Closed meanwhile, or not a TCP socket the sockhash takes: skipped.
            let Some(fd) = pidfd.get(c.fd) else {
                continue;
            };
            let Some(cookie) = crate::sockets::cookie(&fd) else {
                continue;
            };
            if hash.insert(cookie, fd.as_raw_fd(), 0).is_ok() {
                n += 1;
            }
        }
        Ok(n)
    }

    /// Installs the path rules the kernel applies (requests they drop write no event).
    pub fn set_rules(&mut self, rules: &KernelRules) -> Result<(), TracerError> {
        let map = self
            .ebpf
            .map_mut(RULES)
            .ok_or(TracerError::MissingMap(RULES))?;
        let mut arr = BpfArray::<_, KernelRules>::try_from(map)
            .map_err(|source| TracerError::Map { map: RULES, source })?;
        arr.set(0, rules, 0)
            .map_err(|source| TracerError::Map { map: RULES, source })
    }

    /// Programs this kernel refused and what runs instead (empty on most kernels).
    pub fn substitutes(&self) -> &[Substitute] {
        &self.substitutes
    }

    /// The program loaded for the probe table's `program` (itself, or its stand-in).
    fn program_for(&self, program: &'static str) -> &'static str {
        self.substitutes
            .iter()
            .find(|s| s.program == program)
            .map_or(program, |s| s.instead)
    }

    fn uprobe(&mut self, name: &'static str) -> Result<&mut UProbe, TracerError> {
        self.ebpf
            .program_mut(name)
            .ok_or(TracerError::MissingProgram(name))?
            .try_into()
            .map_err(|source| TracerError::Program {
                program: name,
                source,
            })
    }

    fn unlink(&mut self, links: &mut Vec<(&'static str, UProbeLinkId)>) {
        for (program, link) in links.drain(..) {
            let detached = self.uprobe(program).and_then(|prog| {
                prog.detach(link)
                    .map_err(|source| TracerError::Program { program, source })
            });
            if let Err(e) = detached {
                log::warn!("detaching {program}: {e}");
            }
        }
    }

    fn set_process(&mut self, pid: u32, cfg: Option<ProcessConfig>) -> Result<(), TracerError> {
        let map = self
            .ebpf
            .map_mut(PROCESSES)
            .ok_or(TracerError::MissingMap(PROCESSES))?;
        let mut procs = BpfHashMap::<_, u32, ProcessConfig>::try_from(map).map_err(|source| {
            TracerError::Map {
                map: PROCESSES,
                source,
            }
        })?;
        let r = match cfg {
            Some(mut cfg) => {
                cfg.flags |= self.flags;
                procs.insert(pid, cfg, 0)
            }
            None => procs.remove(&pid),
        };
        r.map_err(|source| TracerError::Map {
            map: PROCESSES,
            source,
        })
    }
}

/// Finds the function of `spec` in `binary` and the cheapest safe instruction(s) to probe.
pub fn place(binary: &Binary, spec: &ProbeSpec) -> Result<Vec<PlacedProbe>, SymbolError> {
    let f = binary.lookup(spec.go_symbol)?;
    let sites = match spec.site {
        Site::Entry { reads_args } => vec![binary.entry_site(&f, reads_args)?],
        Site::AfterCall { callee } => {
            let sites = binary.after_call_sites(&f, callee)?;
            if sites.is_empty() {
                return Err(SymbolError::SymbolNotFound {
                    symbol: format!("a call to {callee} in {}", spec.go_symbol),
                    path: binary.path().to_owned(),
                });
            }
            sites
        }
    };
    Ok(sites
        .into_iter()
        .map(|site| PlacedProbe {
            probe: spec.id,
            symbol: spec.go_symbol,
            address: f.address,
            file_offset: f.file_offset,
            symbol_source: f.source,
            site,
        })
        .collect())
}

/// Places every probe of the table in `binary` (the Kraken-only ones only in Kraken binaries).
/// A missing optional probe is skipped with a warning (returned as text); a missing required
/// one is an error.
pub fn place_all(binary: &Binary) -> Result<(Vec<PlacedProbe>, Vec<String>), SymbolError> {
    let kraken = crate::kraken::kraken_version(binary).is_some();
    let mut placed = Vec::new();
    let mut skipped = Vec::new();
    for spec in PROBES.iter().filter(|s| kraken || !s.kraken_only) {
        match place(binary, spec) {
            Ok(p) => placed.extend(p),
            // Kraken-only probes each exist in some components only (e.g. the agent's cache).
            Err(_) if spec.kraken_only => {}
            Err(e) if spec.optional => skipped.push(format!("{} skipped: {e}", spec.program)),
            Err(e) => return Err(e),
        }
    }
    Ok((placed, skipped))
}

fn program<'a>(
    e: &'a mut Ebpf,
    name: &'static str,
) -> Result<&'a mut aya::programs::Program, TracerError> {
    e.program_mut(name).ok_or(TracerError::MissingProgram(name))
}

/// The mount point of the cgroup2 file system (from /proc/mounts).
fn cgroup2_root() -> Result<PathBuf, TracerError> {
    let mounts = fs::read_to_string("/proc/mounts").map_err(|_| TracerError::NoCgroup2)?;
    cgroup2_in(&mounts).ok_or(TracerError::NoCgroup2)
}

fn cgroup2_in(mounts: &str) -> Option<PathBuf> {
    mounts.lines().find_map(|l| {
        let mut f = l.split_whitespace();
        let (_dev, dir, fstype) = (f.next()?, f.next()?, f.next()?);
        // Octal escapes (\040 for a space) are not expected in a cgroup mount point.
        (fstype == "cgroup2").then(|| PathBuf::from(dir))
    })
}

/// Loads one uprobe program; a verifier rejection saves its log in `verifier_log_dir`.
fn load_uprobe(
    ebpf: &mut Ebpf,
    program: &'static str,
    verifier_log_dir: &Path,
) -> Result<(), TracerError> {
    let prog: &mut UProbe = ebpf
        .program_mut(program)
        .ok_or(TracerError::MissingProgram(program))?
        .try_into()
        .map_err(|source| TracerError::Program { program, source })?;
    match prog.load() {
        Ok(()) => Ok(()),
        Err(ProgramError::LoadError {
            io_error,
            verifier_log,
        }) => {
            let log_path = verifier_log_dir.join(format!("{program}.verifier.log"));
            let _ = fs::write(&log_path, verifier_log.to_string());
            Err(TracerError::Verifier {
                program,
                io_error,
                log_path,
            })
        }
        Err(source) => Err(TracerError::Program { program, source }),
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    #[test]
    fn cgroup2_mount_found_wherever_it_is() {
        let m = "sysfs /sys sysfs rw 0 0\ncgroup /sys/fs/cgroup/cpu cgroup rw 0 0\n\
                 cgroup2 /sys/fs/cgroup/unified cgroup2 rw,nosuid 0 0\n";
        assert_eq!(
            super::cgroup2_in(m),
            Some(std::path::PathBuf::from("/sys/fs/cgroup/unified"))
        );
        assert_eq!(super::cgroup2_in("proc /proc proc rw 0 0\n"), None);
    }

    use tracer_common::probe::PROBES;

    #[test]
    fn object_has_exactly_the_probe_table_programs() {
        if crate::EBPF_OBJECT.is_empty() {
            eprintln!("skipping: built with AYA_BUILD_SKIP (stub object)");
            return;
        }
        let obj = aya_obj::Object::parse(crate::EBPF_OBJECT).expect("parse the eBPF object");
        let in_object: BTreeSet<&str> = obj.programs.keys().map(String::as_str).collect();
        let mut in_table: BTreeSet<&str> = PROBES
            .iter()
            .map(|p| p.program)
            .chain(tracer_common::socket::PROGRAMS)
            .collect();
        in_table.insert(super::SOCK_OPS_PROGRAM);
        in_table.insert(super::SK_MSG_PROGRAM);
        in_table.extend(super::FALLBACKS.iter().map(|(_, instead)| *instead));
        assert_eq!(in_object, in_table);
        for map in [
            tracer_common::maps::EVENTS,
            tracer_common::maps::PROCESSES,
            tracer_common::maps::COUNTERS,
            tracer_common::maps::SOCKET_BYTES,
        ] {
            assert!(obj.maps.contains_key(map), "map {map} missing");
        }
    }
}
