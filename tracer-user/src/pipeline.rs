//! The user-space data path after the ring buffer, as one synchronous sink:
//! decode (done by the reader) → correlate → keep (errors/slow) → [stdout tree] → export queue.
//! It runs on the reader task and never blocks it: the export queue drops when full.

use std::{io::Write as _, sync::Arc, sync::mpsc};

use crate::{
    clock,
    correlate::{Correlator, Profile},
    events::Event,
    export::ExportHandle,
    keep::KeepBuffer,
    metrics::{ExportSnapshot, Metrics, PipelineSnapshot},
    reader::{EventSink, ReaderStats},
    span::{ProcessResource, SpanRecord},
    tree::TreePrinter,
};

/// A process attached while the pipeline runs (`--follow-exe`), for the correlator.
pub struct Registration {
    pub pid: u32,
    pub resource: Arc<ProcessResource>,
    pub profile: Profile,
}

/// How often open spans are checked for expiry (in drain ticks).
const SWEEP_EVERY_TICKS: u32 = 500;
/// How often self-metrics are refreshed (in drain ticks).
const METRICS_EVERY_TICKS: u32 = 10;

pub struct Pipeline {
    pub correlator: Correlator,
    keep: KeepBuffer,
    printer: Option<TreePrinter>,
    raw_events: bool,
    export: Option<ExportHandle>,
    metrics: Option<Arc<Metrics>>,
    ticks: u32,
    registrations: Option<mpsc::Receiver<Registration>>,
}

impl Pipeline {
    pub fn new(
        correlator: Correlator,
        keep: KeepBuffer,
        print_trees: bool,
        raw_events: bool,
        export: Option<ExportHandle>,
    ) -> Pipeline {
        Pipeline {
            correlator,
            keep,
            printer: print_trees.then(|| TreePrinter::new(1024)),
            raw_events,
            export,
            metrics: None,
            ticks: 0,
            registrations: None,
        }
    }

    /// Registers with the correlator the processes sent on `rx` (before the next event).
    pub fn with_registrations(mut self, rx: mpsc::Receiver<Registration>) -> Pipeline {
        self.registrations = Some(rx);
        self
    }

    fn take_registrations(&mut self) {
        if let Some(rx) = &self.registrations {
            while let Ok(r) = rx.try_recv() {
                self.correlator.register(r.pid, r.resource, r.profile);
            }
        }
    }

    /// Publishes this pipeline's counters to `metrics` (every few drain ticks).
    pub fn with_metrics(mut self, metrics: Arc<Metrics>) -> Pipeline {
        self.metrics = Some(metrics);
        self
    }

    pub fn export(&self) -> Option<&ExportHandle> {
        self.export.as_ref()
    }

    pub fn keep(&self) -> &KeepBuffer {
        &self.keep
    }

    /// Prints what the tree printer still holds and hands back the export handle (to shut it
    /// down, which flushes its queue).
    pub fn finish(mut self) -> Option<ExportHandle> {
        if let Some(p) = self.printer.as_mut() {
            let mut out = std::io::stdout().lock();
            for t in p.flush() {
                let _ = write!(out, "{t}");
            }
        }
        self.export.take()
    }

    fn publish(&self, reader: ReaderStats) {
        let Some(m) = &self.metrics else { return };
        let c = self.correlator.stats();
        let k = self.keep.stats();
        let sizes = self.correlator.sizes();
        let x = self.export.as_ref().map(ExportHandle::stats);
        m.set_pipeline(PipelineSnapshot {
            events_read: reader.records,
            events_undecodable: reader.decode_errors,
            spans_created: c.spans,
            spans_sampled_out: x.map_or(0, |x| x.unsampled),
            spans_kept_error: k.kept_error,
            spans_kept_slow: k.kept_slow,
            keep_buffer_evicted: k.evicted,
            unmatched_ends: c.unmatched_ends,
            expired: c.expired,
            evicted: c.evicted,
            linked_across_processes: c.linked_across_processes,
            from_traceparent: c.from_traceparent,
            open_spans: sizes.open_spans as u64,
            goroutine_parents: sizes.goroutine_parents as u64,
            outbound_links: sizes.outbound_links as u64,
            keep_buffer_spans: self.keep.held_spans() as u64,
        });
        if let (Some(h), Some(x)) = (&self.export, x) {
            m.set_export(ExportSnapshot {
                queued: x.queued,
                exported: x.exported,
                dropped_queue_full: x.dropped_queue_full,
                dropped_export_failed: x.dropped_export_failed + x.dropped_closed,
                export_errors: x.export_errors,
                export_retries: x.export_retries,
                queue_len: h.queue_len() as u64,
                retry_len: h.retry_len() as u64,
            });
        }
    }
}

fn emit(printer: &mut Option<TreePrinter>, export: Option<&ExportHandle>, span: SpanRecord) {
    if let Some(text) = printer.as_mut().and_then(|p| p.push(span.clone())) {
        let _ = write!(std::io::stdout().lock(), "{text}");
    }
    if let Some(x) = export {
        // Non-blocking: a full queue drops and counts.
        let _ = x.try_send(span);
    }
}

impl EventSink for Pipeline {
    fn on_event(&mut self, ev: Event) {
        self.take_registrations();
        if self.raw_events {
            let _ = writeln!(std::io::stdout().lock(), "{ev}");
        }
        let Pipeline {
            correlator,
            keep,
            printer,
            export,
            ..
        } = self;
        correlator.push(&ev, &mut |span| {
            keep.offer(span, &mut |s| emit(printer, export.as_ref(), s));
        });
    }

    fn on_tick(&mut self, reader: ReaderStats) {
        self.take_registrations();
        self.ticks = self.ticks.wrapping_add(1);
        if self.ticks.is_multiple_of(SWEEP_EVERY_TICKS) {
            self.correlator.sweep(clock::monotonic_ns());
            let Pipeline {
                keep,
                printer,
                export,
                ..
            } = self;
            keep.sweep(std::time::SystemTime::now(), &mut |s| {
                emit(printer, export.as_ref(), s)
            });
        }
        if self.ticks.is_multiple_of(METRICS_EVERY_TICKS) {
            self.publish(reader);
        }
    }
}
