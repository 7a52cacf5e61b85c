//! An attach session: resolve targets, load, attach, then run the pipeline (reader →
//! correlate → stdout/export) until the targets exit or a signal arrives; detach, flush the
//! export queue, and report counters on the way out.
//!
//! With `--follow-exe` the session also scans /proc (see `follow`) and attaches every new process
//! of the followed executables as it appears, detaching each when it exits (pidfds, `watch`); it
//! runs until a signal, even with no process left.

use std::{sync::Arc, time::Duration};

use tokio::{
    signal::unix::SignalKind,
    sync::{mpsc, watch},
};

use crate::{
    clock::Clock,
    config::{AttachArgs, Propagation},
    correlate::{Correlator, Limits, Profile},
    export,
    features::Features,
    follow::{FollowError, Follower, Found},
    keep::{KeepBuffer, KeepPolicy},
    metrics::{self, AttachSnapshot, KernelSnapshot, Metrics, SocketSnapshot},
    pipeline::{Pipeline, Registration},
    reader::EventReader,
    rules::{PathRules, RulesError},
    sample::Sampler,
    socket,
    span::ProcessResource,
    target::{Target, TargetError},
    tracer::{Tracer, TracerError},
};

#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    #[error(transparent)]
    Tracer(#[from] TracerError),
    #[error("cannot watch the ring buffer: {0}")]
    Io(#[from] std::io::Error),
    #[error("the kernel has no uprobe support (no /sys/bus/event_source/devices/uprobe)")]
    NoUprobes,
    #[error("--otlp-protocol: {0}")]
    Protocol(String),
    #[error("--pid, --follow-exe or --follow-name: at least one process to trace is required")]
    NoPid,
    #[error(transparent)]
    Follow(#[from] FollowError),
    /// A permission error, explained in terms of capabilities.
    #[error("{0}")]
    Privileges(String),
    #[error(transparent)]
    Rules(#[from] RulesError),
    #[error(transparent)]
    Metrics(#[from] metrics::MetricsError),
    #[error(transparent)]
    Socket(#[from] socket::SocketError),
}

/// How often the kernel counters are copied into the self-metrics.
const KERNEL_METRICS_EVERY: Duration = Duration::from_millis(500);

/// The path rules in effect for these arguments.
pub fn path_rules(args: &AttachArgs) -> PathRules {
    PathRules::new(
        &args.sample,
        !args.no_default_rules,
        &args.include_path,
        &args.exclude_path,
        args.sample_ratio,
    )
}

fn kernel_snapshot(c: &crate::tracer::Counters) -> KernelSnapshot {
    KernelSnapshot {
        probe_hits: c.probe_hits.clone(),
        ringbuf_full_per_cpu: c.ringbuf_full_per_cpu.clone(),
        read_errors: c.read_errors,
        not_traced: c.not_traced,
        filtered_server: c.filtered_server,
        filtered_client: c.filtered_client,
        filtered_ends: c.filtered_ends,
        propagation: c.propagation.clone(),
    }
}

/// The resource (service.name etc.) of one traced process.
pub fn resource_for(target: &Target, args: &AttachArgs) -> ProcessResource {
    let service_name = args
        .service_name_for
        .iter()
        .find(|(pid, _)| *pid == target.pid)
        .map(|(_, n)| n.clone())
        .or_else(|| args.service_name.clone())
        .unwrap_or_else(|| target.exe_name());
    ProcessResource {
        service_name,
        pid: target.pid,
        host_name: host_name(),
        executable_path: target.exe_path.display().to_string(),
        runtime_version: target.binary.go_version().map(ToString::to_string),
    }
}

fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_owned())
        .unwrap_or_else(|_| "unknown".to_owned())
}

pub async fn run(args: AttachArgs) -> Result<(), SessionError> {
    // Handle SIGINT/SIGTERM from the start: one that arrives while attaching (a log line that
    // says "attached" is already out) stops the session cleanly instead of killing it.
    let mut sigint = tokio::signal::unix::signal(SignalKind::interrupt())?;
    let mut sigterm = tokio::signal::unix::signal(SignalKind::terminate())?;
    let features = Features::detect();
    for line in features.report() {
        log::info!("{line}");
    }
    if !features.uprobes {
        return Err(SessionError::NoUprobes);
    }
    let following = !args.follow_exe.is_empty() || !args.follow_name.is_empty();
    if args.pids.is_empty() && !following {
        return Err(SessionError::NoPid);
    }
    let mut follower = if following {
        Some(Follower::new(&args.follow_exe, &args.follow_name)?)
    } else {
        None
    };
    // Decided before loading anything: forcing a mode this kernel lacks fails at once.
    let socket_plan = socket::choose(args.socket_probes, &socket::Support::detect(&features))?;
    let rules = path_rules(&args);
    let kernel_rules = rules.kernel()?;
    let protocol: export::Protocol = args
        .otlp_protocol
        .parse()
        .map_err(|e: export::ExportError| SessionError::Protocol(e.to_string()))?;
    // Resolve every target before touching the kernel: bad PIDs fail fast and clearly.
    let targets = args
        .pids
        .iter()
        .map(|&pid| {
            let target = Target::resolve(pid)?;
            check_offsets(&target, &args)?;
            Ok(target)
        })
        .collect::<Result<Vec<_>, TargetError>>()
        .map_err(TracerError::from)?;
    let mut tracer = Tracer::load(
        &args
            .verifier_log_dir
            .clone()
            .unwrap_or_else(std::env::temp_dir),
    )
    .map_err(explain)?;
    tracer.set_rules(&kernel_rules)?;
    tracer.set_capture_query(args.capture_query);
    let socket_status = socket::start(&mut tracer, &socket_plan)?;
    log::info!("{socket_status}");
    for s in tracer.substitutes() {
        log::warn!(
            "this kernel's verifier refused {} (log: {}); using {} instead",
            s.program,
            s.log_path.display(),
            s.instead
        );
    }
    let client_basic = tracer
        .substitutes()
        .iter()
        .any(|s| s.program == "http_client");
    match args.propagation {
        Propagation::Off => log::info!("propagation: off (--propagation off)"),
        // The stand-in cannot tell whether a request already carries a traceparent, so it
        // never asks for one to be inserted: the sk_msg programs would have nothing to do.
        Propagation::On if client_basic => log::warn!(
            "propagation: incoming only (this kernel's verifier refused http_client, which reads \
             a request's own traceparent: outgoing requests get none; incoming ones are still continued)"
        ),
        Propagation::On => match tracer.enable_propagation() {
            Ok(()) => log::info!(
                "propagation: sk_msg (traceparent inserted into outgoing HTTP/1 requests)"
            ),
            // Not fatal: every node still gets its own correct local traces.
            Err(e) => log::warn!("propagation: off ({})", error_chain(&e)),
        },
    }
    log::info!(
        "sampling: {:.1} % by default; path rules (first match wins): {}; {} of them dropped in the kernel",
        args.sample_ratio * 100.0,
        describe_rules(&rules),
        kernel_rules.count,
    );
    let metrics = Metrics::new();
    let socket_snapshot = |tracer: &Tracer| SocketSnapshot {
        mode: socket_status.mode(),
        processes: tracer.socket_bytes().unwrap_or_else(|e| {
            log::debug!("reading the socket counters: {e}");
            Vec::new()
        }),
    };
    metrics.set_socket(socket_snapshot(&tracer));
    let metrics_task = match args.metrics_addr {
        Some(addr) => {
            let (bound, task) = metrics::serve(addr, Arc::clone(&metrics)).await?;
            log::info!("self-metrics at http://{bound}/metrics");
            Some(task)
        }
        None => None,
    };
    let mut correlator = Correlator::new(
        Clock::new(Duration::from_secs(10)),
        Sampler::new(rules),
        Limits::default(),
    );
    let mut register_now = |r: Registration| correlator.register(r.pid, r.resource, r.profile);
    for target in targets {
        if let Err(e) = attach_target(&mut tracer, target, &args, &mut register_now) {
            metrics.set_attach(AttachSnapshot {
                attach_failures: 1,
                ..AttachSnapshot::default()
            });
            return Err(explain(e));
        }
    }
    // The processes that already run a followed executable.
    let mut attach_failures = 0u64;
    if let Some(f) = follower.as_mut() {
        let found = follow_scan(
            f,
            &mut tracer,
            &args,
            &mut attach_failures,
            &mut register_now,
            false,
        );
        log::info!(
            "following {}: {} running process(es) attached; checking for new ones every {:?}",
            f.describe(),
            found.len(),
            args.follow_interval
        );
    }
    let (register_tx, register_rx) = std::sync::mpsc::channel::<Registration>();

    let exporter = if args.no_export {
        None
    } else {
        let endpoint = args
            .otlp_endpoint
            .clone()
            .unwrap_or_else(|| protocol.default_endpoint().to_owned());
        log::info!("exporting OTLP ({protocol}) to {endpoint}");
        Some(export::spawn(export::Config {
            endpoint,
            protocol,
            ..export::Config::default()
        }))
    };
    let (export_handle, export_task) = match exporter {
        Some((h, t)) => (Some(h), Some(t)),
        None => (None, None),
    };
    let policy = KeepPolicy {
        errors: args.keep_errors,
        slower_than: args.keep_slower_than,
    };
    if policy.enabled() {
        log::info!(
            "always keeping unsampled traces with {}{}{} (holding at most {} spans)",
            if policy.errors { "errors" } else { "" },
            if policy.errors && policy.slower_than.is_some() {
                " or "
            } else {
                ""
            },
            policy
                .slower_than
                .map(|d| format!("a span slower than {d:?}"))
                .unwrap_or_default(),
            args.keep_buffer_spans
        );
    }
    let keep = KeepBuffer::new(policy, args.keep_buffer_spans);
    let pipeline = Pipeline::new(correlator, keep, args.stdout, args.events, export_handle)
        .with_metrics(Arc::clone(&metrics))
        .with_registrations(register_rx);
    let mut exited = 0u64;
    metrics.set_attach(attach_snapshot(&tracer, attach_failures, exited));
    let reader = EventReader::new(tracer.take_events()?, args.drain_interval)?;
    let (stop_tx, stop_rx) = watch::channel(false);
    let reader_task = tokio::spawn(reader.run(pipeline, stop_rx));

    let (exit_tx, mut exit_rx) = mpsc::channel::<u32>(64);
    let watch_exit = |pid: u32| {
        let tx = exit_tx.clone();
        tokio::spawn(async move {
            crate::watch::exited(pid).await;
            let _ = tx.send(pid).await;
        });
    };
    for pid in tracer.attached().map(|a| a.pid).collect::<Vec<_>>() {
        watch_exit(pid);
    }
    let mut kernel_tick = tokio::time::interval(KERNEL_METRICS_EVERY);
    let mut follow_tick =
        tokio::time::interval(args.follow_interval.max(Duration::from_millis(10)));
    follow_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    follow_tick.reset(); // the first scan ran above
    let mut register_later = |r: Registration| {
        // The pipeline registers it before handling its next event.
        let _ = register_tx.send(r);
    };
    loop {
        tokio::select! {
            _ = kernel_tick.tick() => {
                match tracer.counters() {
                    Ok(c) => metrics.set_kernel(kernel_snapshot(&c)),
                    Err(e) => log::debug!("reading kernel counters: {e}"),
                }
                metrics.set_socket(socket_snapshot(&tracer));
            }
            _ = sigint.recv() => { log::info!("SIGINT: stopping"); break; }
            _ = sigterm.recv() => { log::info!("SIGTERM: stopping"); break; }
            _ = follow_tick.tick(), if follower.is_some() => {
                let Some(f) = follower.as_mut() else { continue };
                let found = follow_scan(
                    f,
                    &mut tracer,
                    &args,
                    &mut attach_failures,
                    &mut register_later,
                    true,
                );
                for (pid, _) in &found {
                    watch_exit(*pid);
                }
                metrics.set_attach(attach_snapshot(&tracer, attach_failures, exited));
            }
            Some(pid) = exit_rx.recv() => {
                match tracer.detach(pid) {
                    Ok(()) => {
                        log::info!("pid {pid} exited; its probes are detached");
                        exited += 1;
                    }
                    Err(e) => log::warn!("pid {pid} exited; detaching: {e}"),
                }
                if let Some(f) = follower.as_mut() {
                    f.forget(pid);
                }
                metrics.set_attach(attach_snapshot(&tracer, attach_failures, exited));
                if tracer.attached().next().is_none() && !args.keep_running {
                    match &follower {
                        None => {
                            log::info!("every traced process has exited");
                            break;
                        }
                        Some(f) => log::info!(
                            "no traced process left; still following {}",
                            f.describe()
                        ),
                    }
                }
            }
        }
    }
    // Let in-flight kernel writes land, then drain the ring one last time.
    tokio::time::sleep(Duration::from_millis(20)).await;
    let _ = stop_tx.send(true);
    let (stats, pipeline) = match reader_task.await {
        Ok(r) => r,
        Err(e) => {
            log::error!("the reader task failed: {e}");
            return Ok(());
        }
    };
    if let Some(t) = metrics_task {
        t.abort();
    }
    let cstats = pipeline.correlator.stats();
    let kstats = pipeline.keep().stats();
    if let Some(h) = pipeline.finish() {
        h.shutdown().await;
        let x = h.stats();
        log::info!(
            "export: {} spans exported, {} dropped (queue full), {} export errors, {} unsampled",
            x.exported,
            x.dropped_queue_full,
            x.export_errors,
            x.unsampled
        );
    }
    if let Some(t) = export_task {
        let _ = t.await;
    }
    log::info!(
        "links: {} server spans linked to another process's client span; kraken: {} announces linked \
         to their download, {} re-announces unsampled, {} health/readiness checks unsampled; {} uploads \
         committed, {} abandoned, {} backend writeback requests linked to their upload; transfers after \
         a backend fetch linked to it: {} by goroutine, {} by digest",
        cstats.linked_across_processes,
        cstats.kraken_announces_linked,
        cstats.kraken_announces_unlinked,
        cstats.kraken_noise,
        cstats.kraken_uploads,
        cstats.kraken_uploads_abandoned,
        cstats.kraken_backend_uploads_linked,
        cstats.kraken_transfers_by_goroutine,
        cstats.kraken_transfers_by_digest
    );
    if policy.enabled() {
        log::info!(
            "keep: {} spans kept for errors, {} for slowness; {} let go early (buffer full)",
            kstats.kept_error,
            kstats.kept_slow,
            kstats.evicted
        );
    }
    let c = tracer.counters()?;
    log::info!(
        "events read {} (undecodable {}); spans {} (unmatched ends {}, expired {}, {} continued from a traceparent); \
         kernel: probe hits {}, ring buffer full {}, dropped by path rules {} server + {} client requests; \
         traceparent inserted {} (kept the application's {}, no context waiting {})",
        stats.records,
        stats.decode_errors,
        cstats.spans,
        cstats.unmatched_ends,
        cstats.expired,
        cstats.from_traceparent,
        c.hits,
        c.ringbuf_full,
        c.filtered_server,
        c.filtered_client,
        c.propagation.injected,
        c.propagation.had_header,
        c.propagation.no_pending,
    );
    Ok(())
}

/// The attach gauges and counters as they are now.
fn attach_snapshot(tracer: &Tracer, attach_failures: u64, exited: u64) -> AttachSnapshot {
    AttachSnapshot {
        processes_attached: tracer.attached().count() as u64,
        probes_attached: tracer.attached().map(|a| a.probes.len() as u64).sum(),
        attach_failures,
        processes_exited: exited,
    }
}

/// Refuses guessed struct offsets unless `--allow-unverified-offsets` (see
/// [`Target::require_verified_offsets`]).
fn check_offsets(target: &Target, args: &AttachArgs) -> Result<(), TargetError> {
    match target.require_verified_offsets() {
        Err(e) if args.allow_unverified_offsets => {
            log::warn!("{e}: attaching anyway (--allow-unverified-offsets)");
            Ok(())
        }
        r => r,
    }
}

/// Registers `target` (through `register`, before its probes can fire) and attaches it.
fn attach_target(
    tracer: &mut Tracer,
    target: Target,
    args: &AttachArgs,
    register: &mut dyn FnMut(Registration),
) -> Result<(), TracerError> {
    let pid = target.pid;
    let resource = Arc::new(resource_for(&target, args));
    let profile = match crate::kraken::kraken_version(&target.binary) {
        Some(v) => {
            log::info!("pid {pid}: Kraken {v}: Kraken route names and attributes on");
            Profile::Kraken
        }
        None => Profile::Generic,
    };
    register(Registration {
        pid,
        resource: Arc::clone(&resource),
        profile,
    });
    let a = tracer.attach(target)?;
    log::info!(
        "attached pid {pid} as service {:?} ({}, {}, offsets from {:?})",
        resource.service_name,
        a.exe.display(),
        a.go_version.as_deref().unwrap_or("unknown Go version"),
        a.offset_source
    );
    for p in &a.probes {
        log::info!("pid {pid}: {p}");
    }
    Ok(())
}

/// Attaches every process that newly runs a followed executable. A failure is logged and
/// counted in `failures`, never fatal. Returns the PIDs attached and the path each matched.
fn follow_scan(
    follower: &mut Follower,
    tracer: &mut Tracer,
    args: &AttachArgs,
    failures: &mut u64,
    register: &mut dyn FnMut(Registration),
    new: bool,
) -> Vec<(u32, String)> {
    let found = match follower.scan(|pid| tracer.attached().any(|a| a.pid == pid)) {
        Ok(found) => found,
        Err(e) => {
            log::warn!("{e}");
            return Vec::new();
        }
    };
    let mut attached = Vec::new();
    for Found { pid, matched } in found {
        let result = Target::resolve(pid)
            .and_then(|t| check_offsets(&t, args).map(|()| t))
            .map_err(TracerError::from)
            .and_then(|t| attach_target(tracer, t, args, register));
        match result {
            Ok(()) => {
                if new {
                    log::info!("following {matched}: attached new pid {pid}");
                }
                attached.push((pid, matched));
            }
            Err(TracerError::Target(TargetError::NoSuchProcess { .. })) => {
                log::info!("following {matched}: pid {pid} exited before it could be attached");
            }
            Err(e) => {
                *failures += 1;
                log::warn!(
                    "following {matched}: cannot attach pid {pid}: {}",
                    explain(e)
                );
            }
        }
    }
    attached
}

/// A tracer error, with permission errors explained in terms of capabilities
/// (docs/capabilities.md).
fn explain(e: TracerError) -> SessionError {
    use aya::{programs::ProgramError, sys::SyscallError};
    match e {
        TracerError::NotPermitted => SessionError::Privileges(
            "permission denied creating BPF maps: loading the eBPF programs needs CAP_BPF and \
             CAP_PERFMON, or CAP_SYS_ADMIN (with CAP_BPF instead of CAP_SYS_ADMIN, also \
             CAP_NET_ADMIN: the propagation sockhash; see docs/capabilities.md)"
                .to_owned(),
        ),
        TracerError::Attach {
            pid,
            symbol,
            source:
                ProgramError::SyscallError(SyscallError {
                    call: "perf_event_open",
                    io_error,
                }),
            ..
        } if matches!(io_error.kind(), std::io::ErrorKind::PermissionDenied)
            || io_error.raw_os_error() == Some(libc::EPERM) =>
        {
            SessionError::Privileges(format!(
                "pid {pid}: permission denied creating the uprobe on {symbol} (perf_event_open: \
                 {io_error}): uprobes need CAP_SYS_ADMIN (since Linux 6.16 and its stable \
                 backports; CAP_PERFMON sufficed before), and CAP_SYS_PTRACE for another user's \
                 process (see docs/capabilities.md)"
            ))
        }
        e => SessionError::Tracer(e),
    }
}

fn describe_rules(rules: &PathRules) -> String {
    let mut parts: Vec<String> = Vec::new();
    parts.extend(rules.exclude.iter().map(|g| format!("exclude {g}")));
    parts.extend(rules.include.iter().map(|g| format!("include {g}")));
    parts.extend(rules.sample.iter().map(ToString::to_string));
    if parts.is_empty() {
        "none".to_owned()
    } else {
        parts.join(", ")
    }
}

/// An error and its sources, joined ("a: b: c").
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}
