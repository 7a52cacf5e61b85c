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
    pipeline::Pipeline,
    reader::EventReader,
    sample::RatioSampler,
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
    let mut correlator = Correlator::new(
        Clock::new(Duration::from_secs(10)),
        RatioSampler::new(args.sample_ratio),
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
        correlator.register(pid, resource, profile);
    }

    let exporter = if args.no_export {
        None
    } else {
        let endpoint = args
            .otlp_endpoint
            .clone()
            .unwrap_or_else(|| protocol.default_endpoint().to_owned());
        log::info!(
            "exporting OTLP ({protocol}) to {endpoint}, sampling {:.1} %",
            args.sample_ratio * 100.0
        );
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
    let pipeline = Pipeline::new(correlator, args.stdout, args.events, export_handle);
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
    loop {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => { log::info!("SIGINT: stopping"); break; }
            _ = sigterm.recv() => { log::info!("SIGTERM: stopping"); break; }
            Some(pid) = exit_rx.recv() => {
                match tracer.detach(pid) {
                    Ok(()) => log::info!("pid {pid} exited; its probes are detached"),
                    Err(e) => log::warn!("pid {pid} exited; detaching: {e}"),
                }
                live -= 1;
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
    let cstats = pipeline.correlator.stats();
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
    let c = tracer.counters()?;
    log::info!(
        "events read {} (undecodable {}); spans {} (unmatched ends {}, expired {}); kernel: probe hits {}, ring buffer full {}",
        stats.records,
        stats.decode_errors,
        cstats.spans,
        cstats.unmatched_ends,
        cstats.expired,
        c.hits,
        c.ringbuf_full,
    );
    Ok(())
}
