//! An attach session: resolve targets, load, attach, then run the pipeline (reader →
//! correlate → stdout/export) until the targets exit or a signal arrives; detach, flush the
//! export queue, and report counters on the way out.

use std::{sync::Arc, time::Duration};

use tokio::{
    signal::unix::SignalKind,
    sync::{mpsc, watch},
};

use crate::{
    clock::Clock,
    config::AttachArgs,
    correlate::{Correlator, Limits, Profile},
    export,
    features::Features,
    keep::{KeepBuffer, KeepPolicy},
    metrics::{self, AttachSnapshot, KernelSnapshot, Metrics},
    pipeline::Pipeline,
    reader::EventReader,
    rules::{PathRules, RulesError},
    sample::Sampler,
    span::ProcessResource,
    target::Target,
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
    #[error("--pid: at least one process to trace is required")]
    NoPid,
    #[error(transparent)]
    Rules(#[from] RulesError),
    #[error(transparent)]
    Metrics(#[from] metrics::MetricsError),
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
    let features = Features::detect();
    for line in features.report() {
        log::info!("{line}");
    }
    if !features.uprobes {
        return Err(SessionError::NoUprobes);
    }
    if args.pids.is_empty() {
        return Err(SessionError::NoPid);
    }
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
        .map(|&pid| Target::resolve(pid).map_err(TracerError::from))
        .collect::<Result<Vec<_>, _>>()?;
    let mut tracer = Tracer::load(
        &args
            .verifier_log_dir
            .clone()
            .unwrap_or_else(std::env::temp_dir),
    )?;
    tracer.set_rules(&kernel_rules)?;
    tracer.set_capture_query(args.capture_query);
    log::info!(
        "sampling: {:.1} % by default; path rules (first match wins): {}; {} of them dropped in the kernel",
        args.sample_ratio * 100.0,
        describe_rules(&rules),
        kernel_rules.count,
    );
    let metrics = Metrics::new();
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
    for target in targets {
        let pid = target.pid;
        let resource = Arc::new(resource_for(&target, &args));
        let profile = match crate::kraken::kraken_version(&target.binary) {
            Some(v) => {
                log::info!("pid {pid}: Kraken {v}: Kraken route names and attributes on");
                Profile::Kraken
            }
            None => Profile::Generic,
        };
        let a = match tracer.attach(target) {
            Ok(a) => a,
            Err(e) => {
                metrics.set_attach(AttachSnapshot {
                    attach_failures: 1,
                    ..AttachSnapshot::default()
                });
                return Err(e.into());
            }
        };
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
        correlator.register(pid, resource, profile);
    }

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
            if policy.errors && policy.slower_than.is_some() { " or " } else { "" },
            policy
                .slower_than
                .map(|d| format!("a span slower than {d:?}"))
                .unwrap_or_default(),
            args.keep_buffer_spans
        );
    }
    let keep = KeepBuffer::new(policy, args.keep_buffer_spans);
    let pipeline = Pipeline::new(correlator, keep, args.stdout, args.events, export_handle)
        .with_metrics(Arc::clone(&metrics));
    let probes_attached: usize = tracer.attached().map(|a| a.probes.len()).sum();
    let mut exited = 0u64;
    let attach_snapshot = |live: usize, exited: u64| AttachSnapshot {
        processes_attached: live as u64,
        probes_attached: if live == 0 { 0 } else { probes_attached as u64 },
        attach_failures: 0,
        processes_exited: exited,
    };
    metrics.set_attach(attach_snapshot(args.pids.len(), 0));
    let reader = EventReader::new(tracer.take_events()?, args.drain_interval)?;
    let (stop_tx, stop_rx) = watch::channel(false);
    let reader_task = tokio::spawn(reader.run(pipeline, stop_rx));

    let (exit_tx, mut exit_rx) = mpsc::channel::<u32>(args.pids.len().max(1));
    for &pid in &args.pids {
        let tx = exit_tx.clone();
        tokio::spawn(async move {
            crate::watch::exited(pid).await;
            let _ = tx.send(pid).await;
        });
    }
    let mut sigterm = tokio::signal::unix::signal(SignalKind::terminate())?;
    let mut live = args.pids.len();
    let mut kernel_tick = tokio::time::interval(KERNEL_METRICS_EVERY);
    loop {
        tokio::select! {
            _ = kernel_tick.tick() => {
                match tracer.counters() {
                    Ok(c) => metrics.set_kernel(kernel_snapshot(&c)),
                    Err(e) => log::debug!("reading kernel counters: {e}"),
                }
            }
            _ = tokio::signal::ctrl_c() => { log::info!("SIGINT: stopping"); break; }
            _ = sigterm.recv() => { log::info!("SIGTERM: stopping"); break; }
            Some(pid) = exit_rx.recv() => {
                match tracer.detach(pid) {
                    Ok(()) => log::info!("pid {pid} exited; its probes are detached"),
                    Err(e) => log::warn!("pid {pid} exited; detaching: {e}"),
                }
                live -= 1;
                exited += 1;
                metrics.set_attach(attach_snapshot(live, exited));
                if live == 0 && !args.keep_running {
                    log::info!("every traced process has exited");
                    break;
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
         to their download, {} re-announces unsampled, {} health/readiness checks unsampled",
        cstats.linked_across_processes,
        cstats.kraken_announces_linked,
        cstats.kraken_announces_unlinked,
        cstats.kraken_noise
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
         kernel: probe hits {}, ring buffer full {}, dropped by path rules {} server + {} client requests",
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
    );
    Ok(())
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
