//! Draining the event ring buffer. The kernel wakes this reader only when a backlog builds
//! up (see `tracer_common::maps::WAKEUP_BYTES`); otherwise it drains on a short timer, so the
//! traced threads don't pay a wake-up per event. The reader never blocks on its consumer.

use std::time::Duration;

use aya::maps::{MapData, RingBuf};
use tokio::{io::unix::AsyncFd, sync::watch};

use crate::events::{self, DecodeError, Event};

/// Counts kept by the reader.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ReaderStats {
    pub records: u64,
    pub decode_errors: u64,
}

/// Where the reader delivers events. `on_tick` runs on every drain tick (housekeeping).
pub trait EventSink {
    fn on_event(&mut self, ev: Event);
    fn on_tick(&mut self, _stats: ReaderStats) {}
}

impl<F: FnMut(Event)> EventSink for F {
    fn on_event(&mut self, ev: Event) {
        self(ev);
    }
}

/// When the kernel writes faster than the reader reads, the ring never empties: an unbounded
/// drain would then never return and starve the tasks sharing the reader's runtime thread (the
/// metrics server, the exporter, the tick's housekeeping). So a drain in [`EventReader::run`]
/// stops after this long (checked every `DRAIN_CHECK_EVERY` records) and yields first.
const DRAIN_SLICE: Duration = Duration::from_millis(5);
const DRAIN_CHECK_EVERY: usize = 256;

pub struct EventReader {
    ring: AsyncFd<RingBuf<MapData>>,
    interval: Duration,
    stats: ReaderStats,
}

impl EventReader {
    pub fn new(ring: RingBuf<MapData>, interval: Duration) -> std::io::Result<EventReader> {
        Ok(EventReader {
            // SAFETY: the ring buffer owns its map fd for as long as this AsyncFd lives.
            ring: unsafe { AsyncFd::register_with_interest(ring, tokio::io::Interest::READABLE) }?,
            interval,
            stats: ReaderStats::default(),
        })
    }

    pub fn stats(&self) -> ReaderStats {
        self.stats
    }

    /// Decodes every record now in the ring and hands it to `sink`.
    pub fn drain(&mut self, sink: &mut impl EventSink) -> usize {
        self.drain_for(sink, None).0
    }

    /// Like [`drain`](Self::drain), but stops once `slice` has passed. Returns the records
    /// handled and whether it stopped early (records may still be waiting).
    pub fn drain_for(
        &mut self,
        sink: &mut impl EventSink,
        slice: Option<Duration>,
    ) -> (usize, bool) {
        let start = std::time::Instant::now();
        let mut n = 0;
        let stats = &mut self.stats;
        let ring = self.ring.get_mut();
        let mut cut = false;
        loop {
            if let Some(slice) = slice
                && n % DRAIN_CHECK_EVERY == DRAIN_CHECK_EVERY - 1
                && start.elapsed() >= slice
            {
                cut = true;
                break;
            }
            let Some(item) = ring.next() else { break };
            n += 1;
            match events::decode(&item) {
                Ok(ev) => sink.on_event(ev),
                Err(e) => note_decode_error(stats, &e),
            }
        }
        stats.records += n as u64;
        (n, cut)
    }

    /// Runs until `stop` turns true, then drains once more and returns the stats and the sink.
    pub async fn run<S: EventSink>(
        mut self,
        mut sink: S,
        mut stop: watch::Receiver<bool>,
    ) -> (ReaderStats, S) {
        let mut tick = tokio::time::interval(self.interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let slice = Some(DRAIN_SLICE);
        // A drain was cut short: records are waiting.
        let mut more = false;
        loop {
            if more {
                // Let the other tasks (and the I/O driver) run before going on.
                tokio::task::yield_now().await;
            }
            tokio::select! {
                biased;
                changed = stop.changed() => {
                    if changed.is_err() || *stop.borrow() {
                        self.drain_for(&mut sink, Some(Duration::from_secs(1)));
                        return (self.stats, sink);
                    }
                }
                _ = tick.tick() => {
                    more = self.drain_for(&mut sink, slice).1;
                    sink.on_tick(self.stats);
                }
                guard = self.ring.readable_mut() => {
                    if let Ok(mut g) = guard {
                        g.clear_ready();
                    }
                    more = self.drain_for(&mut sink, slice).1;
                }
                () = std::future::ready(()), if more => {
                    more = self.drain_for(&mut sink, slice).1;
                }
            }
        }
    }
}

fn note_decode_error(stats: &mut ReaderStats, e: &DecodeError) {
    stats.decode_errors += 1;
    // Rate-limited: the first, then every 1000th.
    if stats.decode_errors % 1000 == 1 {
        log::warn!(
            "dropping undecodable event ({} so far): {e}",
            stats.decode_errors
        );
    }
}
