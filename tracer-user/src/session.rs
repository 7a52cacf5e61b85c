//! An attach session: load, attach to each PID, stream events until the targets exit or a
//! signal arrives; detach and report counters on the way out.

use std::{io::Write as _, time::Duration};

use tokio::{signal::unix::SignalKind, sync::mpsc, sync::watch};

use crate::{
    config::AttachArgs,
    features::Features,
    reader::EventReader,
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
}

pub async fn run(args: AttachArgs) -> Result<(), SessionError> {
    let features = Features::detect();
    for line in features.report() {
        log::info!("{line}");
    }
    if !features.uprobes {
        return Err(SessionError::NoUprobes);
    }
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
    for target in targets {
        let pid = target.pid;
        let a = tracer.attach(target)?;
        log::info!(
            "attached pid {pid} ({}, {}, offsets from {:?})",
            a.exe.display(),
            a.go_version.as_deref().unwrap_or("unknown Go version"),
            a.offset_source
        );
        for p in &a.probes {
            log::info!("pid {pid}: {p}");
        }
    }
    let reader = EventReader::new(tracer.take_events()?, args.drain_interval)?;
    let (stop_tx, stop_rx) = watch::channel(false);
    let to_stdout = args.stdout;
    let reader_task = tokio::spawn(reader.run(
        move |ev| {
            if to_stdout {
                let mut out = std::io::stdout().lock();
                let _ = writeln!(out, "{ev}");
            }
        },
        stop_rx,
    ));

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
    // Give in-flight kernel writes a moment, then drain the ring one last time.
    tokio::time::sleep(Duration::from_millis(20)).await;
    let _ = stop_tx.send(true);
    let stats = reader_task.await.unwrap_or_default();
    let c = tracer.counters()?;
    log::info!(
        "events read {} (undecodable {}); kernel: probe hits {}, ring buffer full {}, hits in untraced processes {}",
        stats.records,
        stats.decode_errors,
        c.hits,
        c.ringbuf_full,
        c.not_traced
    );
    Ok(())
}
