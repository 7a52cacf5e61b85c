//! The user-space data path after the ring buffer, as one synchronous sink:
//! decode (done by the reader) → correlate → [stdout tree] → export queue.
//! It runs on the reader task and never blocks it: the export queue drops when full.

use std::io::Write as _;

use crate::{
    clock, correlate::Correlator, events::Event, export::ExportHandle, reader::EventSink,
    span::SpanRecord, tree::TreePrinter,
};

/// How often open spans are checked for expiry (in drain ticks).
const SWEEP_EVERY_TICKS: u32 = 500;

pub struct Pipeline {
    pub correlator: Correlator,
    printer: Option<TreePrinter>,
    raw_events: bool,
    export: Option<ExportHandle>,
    ticks: u32,
}

impl Pipeline {
    pub fn new(
        correlator: Correlator,
        print_trees: bool,
        raw_events: bool,
        export: Option<ExportHandle>,
    ) -> Pipeline {
        Pipeline {
            correlator,
            printer: print_trees.then(|| TreePrinter::new(1024)),
            raw_events,
            export,
            ticks: 0,
        }
    }

    pub fn export(&self) -> Option<&ExportHandle> {
        self.export.as_ref()
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
        if self.raw_events {
            let _ = writeln!(std::io::stdout().lock(), "{ev}");
        }
        let Pipeline {
            correlator,
            printer,
            export,
            ..
        } = self;
        correlator.push(&ev, &mut |span| emit(printer, export.as_ref(), span));
    }

    fn on_tick(&mut self) {
        self.ticks = self.ticks.wrapping_add(1);
        if self.ticks.is_multiple_of(SWEEP_EVERY_TICKS) {
            self.correlator.sweep(clock::monotonic_ns());
        }
    }
}
