//! Kernel time (CLOCK_MONOTONIC, from `bpf_ktime_get_ns`) to wall-clock time.
//!
//! One offset (REALTIME − MONOTONIC) is measured and refreshed periodically. A trace keeps the
//! offset that was current when its root span started, and every span of the trace uses it, so
//! a refresh (or an NTP step) can never make a child start before its parent.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

fn now(clock: libc::clockid_t) -> i128 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: ts is a valid out-pointer; both clocks always exist on Linux.
    unsafe { libc::clock_gettime(clock, &raw mut ts) };
    i128::from(ts.tv_sec) * 1_000_000_000 + i128::from(ts.tv_nsec)
}

/// Monotonic nanoseconds now (the same clock the kernel programs stamp events with).
pub fn monotonic_ns() -> u64 {
    u64::try_from(now(libc::CLOCK_MONOTONIC)).unwrap_or(0)
}

/// REALTIME − MONOTONIC in nanoseconds, from the tightest of a few bracketed reads.
pub fn measure_offset() -> i128 {
    (0..5)
        .map(|_| {
            let a = now(libc::CLOCK_MONOTONIC);
            let r = now(libc::CLOCK_REALTIME);
            let b = now(libc::CLOCK_MONOTONIC);
            (b - a, r - (a + (b - a) / 2))
        })
        .min_by_key(|(width, _)| *width)
        .map_or(0, |(_, off)| off)
}

/// The current offset, refreshed by [`Clock::refresh_if_due`].
#[derive(Clone, Copy, Debug)]
pub struct Clock {
    offset_ns: i128,
    refreshed_mono: u64,
    every: Duration,
}

impl Clock {
    pub fn new(every: Duration) -> Clock {
        Clock {
            offset_ns: measure_offset(),
            refreshed_mono: monotonic_ns(),
            every,
        }
    }

    /// A clock with a fixed offset (tests).
    pub fn fixed(offset_ns: i128) -> Clock {
        Clock {
            offset_ns,
            refreshed_mono: u64::MAX,
            every: Duration::MAX,
        }
    }

    pub fn offset_ns(&self) -> i128 {
        self.offset_ns
    }

    pub fn refresh_if_due(&mut self, mono_now: u64) {
        let due = self
            .refreshed_mono
            .saturating_add(u64::try_from(self.every.as_nanos()).unwrap_or(u64::MAX));
        if self.refreshed_mono != u64::MAX && mono_now >= due {
            self.offset_ns = measure_offset();
            self.refreshed_mono = mono_now;
        }
    }
}

/// Converts a monotonic kernel timestamp with a given offset.
pub fn to_wall(ktime_ns: u64, offset_ns: i128) -> SystemTime {
    let wall = i128::from(ktime_ns) + offset_ns;
    u64::try_from(wall).map_or(UNIX_EPOCH, |ns| UNIX_EPOCH + Duration::from_nanos(ns))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offset_maps_now_to_now() {
        let wall = to_wall(monotonic_ns(), measure_offset());
        let diff = SystemTime::now()
            .duration_since(wall)
            .unwrap_or_else(|e| e.duration());
        assert!(diff < Duration::from_millis(50), "off by {diff:?}");
    }

    #[test]
    fn ordering_is_kept_with_one_offset() {
        let off = measure_offset();
        assert!(to_wall(1_000, off) < to_wall(1_001, off));
        assert_eq!(to_wall(5, -10), UNIX_EPOCH, "negative wall time clamps");
    }
}
