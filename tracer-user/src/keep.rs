//! Always-keep rules on top of head sampling (`--keep-errors`, `--keep-slower-than`).
//!
//! Head sampling decides when a trace starts, before anyone knows whether it will fail or be
//! slow. So spans of *unsampled* traces are held here, per trace, while the trace is open:
//! - a span that is an error (5xx, failed call) or slower than the threshold keeps its whole
//!   trace: the held spans and every later span of that trace are exported as sampled;
//! - when the trace's root ends without that happening, its held spans are let go;
//! - spans whose root is on another node (their trace never ends here) are let go after
//!   `HOLD_FOR`.
//!
//! Memory is bounded by `max_spans` held spans over all traces: when full, the oldest trace's
//! spans are let go first (counted). Sampled spans pass straight through and cost nothing.

use std::{
    collections::{HashMap, VecDeque},
    time::{Duration, SystemTime},
};

use crate::span::{SpanRecord, SpanStatus};

/// How long spans of a trace whose root never ends here are held.
const HOLD_FOR: Duration = Duration::from_secs(60);
/// Trace ids remembered as kept, so their later spans (a parent ends after its child) are too.
const MAX_KEPT_TRACES: usize = 4096;

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct KeepPolicy {
    pub errors: bool,
    pub slower_than: Option<Duration>,
}

impl KeepPolicy {
    pub fn enabled(&self) -> bool {
        self.errors || self.slower_than.is_some()
    }

    fn reason(&self, s: &SpanRecord) -> Option<Reason> {
        if self.errors && matches!(s.status, SpanStatus::Error(_)) {
            return Some(Reason::Error);
        }
        let took = s.end.duration_since(s.start).unwrap_or_default();
        match self.slower_than {
            Some(limit) if took >= limit => Some(Reason::Slow),
            _ => None,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Reason {
    Error,
    Slow,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct KeepStats {
    /// Unsampled spans exported because their trace had an error.
    pub kept_error: u64,
    /// Unsampled spans exported because their trace had a slow span.
    pub kept_slow: u64,
    /// Held spans let go because the buffer was full.
    pub evicted: u64,
    /// Held spans let go because their trace ended (or aged out) with nothing to keep.
    pub released: u64,
}

struct Held {
    since: SystemTime,
    spans: Vec<SpanRecord>,
}

pub struct KeepBuffer {
    policy: KeepPolicy,
    max_spans: usize,
    held: HashMap<[u8; 16], Held>,
    /// Trace ids in the order they were first held (may hold ids already gone).
    order: VecDeque<[u8; 16]>,
    held_spans: usize,
    kept: HashMap<[u8; 16], Reason>,
    kept_order: VecDeque<[u8; 16]>,
    stats: KeepStats,
}

impl KeepBuffer {
    pub fn new(policy: KeepPolicy, max_spans: usize) -> KeepBuffer {
        KeepBuffer {
            policy,
            max_spans: max_spans.max(1),
            held: HashMap::new(),
            order: VecDeque::new(),
            held_spans: 0,
            kept: HashMap::new(),
            kept_order: VecDeque::new(),
            stats: KeepStats::default(),
        }
    }

    pub fn stats(&self) -> KeepStats {
        self.stats
    }

    /// Spans held now (gauge).
    pub fn held_spans(&self) -> usize {
        self.held_spans
    }

    /// Passes `span` on (sampled, or kept), or holds it until its trace's fate is known.
    pub fn offer(&mut self, mut span: SpanRecord, out: &mut impl FnMut(SpanRecord)) {
        if span.sampled || !self.policy.enabled() {
            out(span);
            return;
        }
        if let Some(&reason) = self.kept.get(&span.trace_id) {
            self.count(reason, 1);
            span.sampled = true;
            out(span);
            return;
        }
        if let Some(reason) = self.policy.reason(&span) {
            self.remember_kept(span.trace_id, reason);
            let held = self.take(&span.trace_id);
            self.count(reason, held.len() as u64 + 1);
            for mut s in held {
                s.sampled = true;
                out(s);
            }
            span.sampled = true;
            out(span);
            return;
        }
        if span.parent_span_id.is_none() {
            // The root ended with nothing worth keeping: the whole trace goes on unsampled (the
            // exporter counts it as sampled out).
            let held = self.take(&span.trace_id);
            self.stats.released += held.len() as u64 + 1;
            held.into_iter().for_each(&mut *out);
            out(span);
            return;
        }
        self.hold(span, out);
    }

    /// Lets go of traces held longer than `HOLD_FOR` (their root is on another node).
    pub fn sweep(&mut self, now: SystemTime, out: &mut impl FnMut(SpanRecord)) {
        while let Some(id) = self.order.front().copied() {
            match self.held.get(&id) {
                Some(h) if now.duration_since(h.since).unwrap_or_default() < HOLD_FOR => break,
                _ => {}
            }
            self.order.pop_front();
            let spans = self.take(&id);
            self.stats.released += spans.len() as u64;
            spans.into_iter().for_each(&mut *out);
        }
    }

    fn hold(&mut self, span: SpanRecord, out: &mut impl FnMut(SpanRecord)) {
        while self.held_spans >= self.max_spans {
            let Some(oldest) = self.order.pop_front() else {
                break;
            };
            let spans = self.take(&oldest);
            self.stats.evicted += spans.len() as u64;
            spans.into_iter().for_each(&mut *out);
        }
        let id = span.trace_id;
        let now = span.end;
        let h = self.held.entry(id).or_insert_with(|| {
            self.order.push_back(id);
            Held {
                since: now,
                spans: Vec::new(),
            }
        });
        h.spans.push(span);
        self.held_spans += 1;
    }

    fn take(&mut self, id: &[u8; 16]) -> Vec<SpanRecord> {
        let spans = self.held.remove(id).map(|h| h.spans).unwrap_or_default();
        self.held_spans -= spans.len();
        spans
    }

    fn remember_kept(&mut self, id: [u8; 16], reason: Reason) {
        if self.kept.len() >= MAX_KEPT_TRACES
            && let Some(old) = self.kept_order.pop_front()
        {
            self.kept.remove(&old);
        }
        if self.kept.insert(id, reason).is_none() {
            self.kept_order.push_back(id);
        }
    }

    fn count(&mut self, reason: Reason, n: u64) {
        match reason {
            Reason::Error => self.stats.kept_error += n,
            Reason::Slow => self.stats.kept_slow += n,
        }
    }
}

#[cfg(test)]
impl KeepBuffer {
    fn held_traces(&self) -> std::collections::HashSet<[u8; 16]> {
        self.held.keys().copied().collect()
    }
}

#[cfg(test)]
mod tests {
    use std::{sync::Arc, time::UNIX_EPOCH};

    use super::*;
    use crate::span::{ProcessResource, SpanKind};

    fn span(trace: u8, id: u8, parent: Option<u8>, ms: u64, error: bool) -> SpanRecord {
        let start = UNIX_EPOCH + Duration::from_secs(1_000_000);
        SpanRecord {
            trace_id: [trace; 16],
            span_id: [id; 8],
            parent_span_id: parent.map(|p| [p; 8]),
            sampled: false,
            name: format!("s{id}"),
            kind: SpanKind::Server,
            start,
            end: start + Duration::from_millis(ms),
            attributes: vec![],
            status: if error {
                SpanStatus::Error("HTTP 500".into())
            } else {
                SpanStatus::Unset
            },
            resource: Arc::new(ProcessResource {
                service_name: "t".into(),
                pid: 1,
                host_name: "h".into(),
                executable_path: "/x".into(),
                runtime_version: None,
            }),
        }
    }

    fn run(k: &mut KeepBuffer, spans: Vec<SpanRecord>) -> Vec<SpanRecord> {
        let mut out = Vec::new();
        for s in spans {
            k.offer(s, &mut |s| out.push(s));
        }
        out
    }

    #[test]
    fn an_error_keeps_its_whole_trace() {
        let mut k = KeepBuffer::new(
            KeepPolicy {
                errors: true,
                slower_than: None,
            },
            100,
        );
        let out = run(
            &mut k,
            vec![
                span(1, 2, Some(1), 1, false),
                span(1, 3, Some(1), 1, true),
                span(1, 1, None, 5, false),
            ],
        );
        assert_eq!(out.len(), 3);
        assert!(out.iter().all(|s| s.sampled), "{out:?}");
        assert_eq!(k.stats().kept_error, 3);
        assert!(k.held_traces().is_empty());
    }

    #[test]
    fn a_fast_successful_trace_is_let_go_when_its_root_ends() {
        let mut k = KeepBuffer::new(
            KeepPolicy {
                errors: true,
                slower_than: Some(Duration::from_millis(500)),
            },
            100,
        );
        let out = run(
            &mut k,
            vec![span(1, 2, Some(1), 1, false), span(1, 1, None, 5, false)],
        );
        // Both go on unsampled (the exporter counts them as sampled out).
        assert_eq!(out.len(), 2);
        assert!(out.iter().all(|s| !s.sampled));
        assert_eq!(k.stats().released, 2);
        assert_eq!(k.held_spans(), 0);
        // A slow one is kept.
        let out = run(&mut k, vec![span(2, 1, None, 600, false)]);
        assert!(out[0].sampled);
        assert_eq!(k.stats().kept_slow, 1);
    }

    #[test]
    fn memory_is_bounded_and_overflow_counted() {
        let mut k = KeepBuffer::new(
            KeepPolicy {
                errors: true,
                slower_than: None,
            },
            10,
        );
        let spans: Vec<_> = (0..50).map(|t| span(t, 2, Some(1), 1, false)).collect();
        let out = run(&mut k, spans);
        assert_eq!(out.len(), 40, "let go early, still counted downstream");
        assert!(out.iter().all(|s| !s.sampled));
        assert_eq!(k.held_spans(), 10);
        assert_eq!(k.stats().evicted, 40);
        // The newest traces are the ones still held.
        assert!(k.held_traces().contains(&[49; 16]));
        assert!(!k.held_traces().contains(&[0; 16]));
    }

    #[test]
    fn held_traces_age_out() {
        let mut k = KeepBuffer::new(
            KeepPolicy {
                errors: true,
                slower_than: None,
            },
            10,
        );
        run(&mut k, vec![span(1, 2, Some(9), 1, false)]);
        let mut out = Vec::new();
        let t0 = UNIX_EPOCH + Duration::from_secs(1_000_000);
        k.sweep(t0 + Duration::from_secs(1), &mut |s| out.push(s));
        assert!(out.is_empty());
        k.sweep(t0 + HOLD_FOR + Duration::from_secs(1), &mut |s| out.push(s));
        assert_eq!(out.len(), 1);
        assert_eq!(k.held_spans(), 0);
    }

    #[test]
    fn disabled_or_sampled_spans_pass_straight_through() {
        let mut k = KeepBuffer::new(KeepPolicy::default(), 10);
        let out = run(&mut k, vec![span(1, 2, Some(1), 1, false)]);
        assert_eq!(out.len(), 1);
        let mut k = KeepBuffer::new(
            KeepPolicy {
                errors: true,
                slower_than: None,
            },
            10,
        );
        let mut s = span(1, 2, Some(1), 1, false);
        s.sampled = true;
        assert_eq!(run(&mut k, vec![s]).len(), 1);
    }
}
