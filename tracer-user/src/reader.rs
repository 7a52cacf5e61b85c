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
        let mut n = 0;
        let stats = &mut self.stats;
        let ring = self.ring.get_mut();
        while let Some(item) = ring.next() {
            n += 1;
            match events::decode(&item) {
                Ok(ev) => sink.on_event(ev),
                Err(e) => note_decode_error(stats, &e),
            }
        }
        stats.records += n as u64;
        n
    }

    /// Runs until `stop` turns true, then drains once more and returns the stats and the sink.
    pub async fn run<S: EventSink>(
        mut self,
        mut sink: S,
        mut stop: watch::Receiver<bool>,
    ) -> (ReaderStats, S) {
        let mut tick = tokio::time::interval(self.interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                guard = self.ring.readable_mut() => {
                    if let Ok(mut g) = guard {
                        g.clear_ready();
                    }
                    self.drain(&mut sink);
                }
                _ = tick.tick() => {
                    self.drain(&mut sink);
                    sink.on_tick(self.stats);
                }
                changed = stop.changed() => {
                    if changed.is_err() || *stop.borrow() {
                        self.drain(&mut sink);
                        return (self.stats, sink);
                    }
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
