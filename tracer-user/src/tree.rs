//! `--stdout`: finished traces printed as trees, for people debugging without Jaeger.
//!
//! Spans are held per trace until the trace's root span finishes (children finish first),
//! then the trace is printed at once. Bounded: the oldest pending trace is printed as it is
//! when too many are pending.

use std::{
    collections::{HashMap, VecDeque},
    fmt::Write as _,
    time::Duration,
};

use crate::span::{AttrValue, SpanKind, SpanRecord, SpanStatus, hex};

/// Attributes shown after a span's name (the rest are only exported).
const SHOWN: &[&str] = &[
    "url.path",
    "url.query",
    "url.full",
    "http.route",
    "http.response.status_code",
    "client.address",
    "error.type",
];

pub struct TreePrinter {
    pending: HashMap<[u8; 16], Vec<SpanRecord>>,
    order: VecDeque<[u8; 16]>,
    max_pending: usize,
}

impl TreePrinter {
    pub fn new(max_pending: usize) -> TreePrinter {
        TreePrinter {
            pending: HashMap::new(),
            order: VecDeque::new(),
            max_pending,
        }
    }

    /// Adds a finished span; returns the text of any trace now complete.
    pub fn push(&mut self, span: SpanRecord) -> Option<String> {
        let id = span.trace_id;
        let is_root = span.parent_span_id.is_none();
        let entry = self.pending.entry(id).or_insert_with(|| {
            self.order.push_back(id);
            Vec::new()
        });
        entry.push(span);
        if is_root {
            self.order.retain(|t| *t != id);
            return self.pending.remove(&id).map(|s| render(&s));
        }
        if self.order.len() > self.max_pending {
            let oldest = self.order.pop_front()?;
            return self.pending.remove(&oldest).map(|s| render(&s));
        }
        None
    }

    /// Everything still pending (at shutdown).
    pub fn flush(&mut self) -> Vec<String> {
        let order: Vec<_> = self.order.drain(..).collect();
        order
            .iter()
            .filter_map(|id| self.pending.remove(id))
            .map(|s| render(&s))
            .collect()
    }
}

fn ms(d: Duration) -> String {
    format!("{:.3} ms", d.as_secs_f64() * 1000.0)
}

/// Renders the spans of one trace as an indented tree.
pub fn render(spans: &[SpanRecord]) -> String {
    let mut out = String::new();
    // Name the trace after its root span's process (children may finish, and arrive, first).
    let Some(first) = spans
        .iter()
        .find(|s| s.parent_span_id.is_none())
        .or_else(|| spans.first())
    else {
        return out;
    };
    let _ = writeln!(
        out,
        "trace {} ({} pid {})",
        hex(&first.trace_id),
        first.resource.service_name,
        first.resource.pid
    );
    let ids: Vec<[u8; 8]> = spans.iter().map(|s| s.span_id).collect();
    // Roots: no parent, or a parent not in this set (it lives elsewhere or was not seen).
    let mut roots: Vec<&SpanRecord> = spans
        .iter()
        .filter(|s| s.parent_span_id.is_none_or(|p| !ids.contains(&p)))
        .collect();
    roots.sort_by_key(|s| s.start);
    for r in roots {
        write_span(&mut out, spans, r, 1);
    }
    out
}

fn write_span(out: &mut String, all: &[SpanRecord], s: &SpanRecord, depth: usize) {
    let kind = match s.kind {
        SpanKind::Server => "SERVER",
        SpanKind::Client => "CLIENT",
        SpanKind::Internal => "INTERNAL",
    };
    let dur = s.end.duration_since(s.start).unwrap_or_default();
    let _ = write!(
        out,
        "{}└─ {} [{kind}] {}",
        "   ".repeat(depth - 1),
        s.name,
        ms(dur)
    );
    for key in SHOWN {
        if let Some(v) = s.attr(key) {
            let v = match v {
                AttrValue::Str(x) => x.clone(),
                AttrValue::Int(i) => i.to_string(),
                AttrValue::Bool(b) => b.to_string(),
            };
            let _ = write!(out, " {key}={v}");
        }
    }
    if let SpanStatus::Error(msg) = &s.status {
        let _ = write!(out, " ERROR({msg})");
    }
    if !s.sampled {
        out.push_str(" (unsampled)");
    }
    out.push('\n');
    let mut children: Vec<&SpanRecord> = all
        .iter()
        .filter(|c| c.parent_span_id == Some(s.span_id))
        .collect();
    children.sort_by_key(|c| c.start);
    for c in children {
        write_span(out, all, c, depth + 1);
    }
}

#[cfg(test)]
mod tests {
    use std::{sync::Arc, time::UNIX_EPOCH};

    use super::*;
    use crate::span::ProcessResource;

    fn span(id: u8, parent: Option<u8>, name: &str, start: u64, end: u64) -> SpanRecord {
        SpanRecord {
            trace_id: [7; 16],
            span_id: [id; 8],
            parent_span_id: parent.map(|p| [p; 8]),
            sampled: true,
            name: name.into(),
            kind: if parent.is_some() {
                SpanKind::Client
            } else {
                SpanKind::Server
            },
            start: UNIX_EPOCH + Duration::from_micros(start),
            end: UNIX_EPOCH + Duration::from_micros(end),
            attributes: vec![("http.response.status_code", AttrValue::Int(200))],
            status: SpanStatus::Unset,
            resource: Arc::new(ProcessResource {
                service_name: "svc".into(),
                pid: 1,
                host_name: "h".into(),
                executable_path: "/x".into(),
                runtime_version: None,
            }),
        }
    }

    #[test]
    fn prints_when_the_root_arrives_children_indented() {
        let mut p = TreePrinter::new(10);
        assert!(p.push(span(2, Some(1), "GET", 10, 20)).is_none());
        let mut root = span(1, None, "GET /call", 0, 30);
        root.resource = Arc::new(ProcessResource {
            service_name: "root".into(),
            ..(*root.resource).clone()
        });
        let text = p.push(root).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert!(lines[0].starts_with("trace 0707"), "{text}");
        assert!(
            lines[0].ends_with("(root pid 1)"),
            "named after the root: {text}"
        );
        assert!(
            lines[1].starts_with("└─ GET /call [SERVER] 0.030 ms"),
            "{text}"
        );
        assert!(
            lines[2].starts_with("   └─ GET [CLIENT] 0.010 ms http.response.status_code=200"),
            "{text}"
        );
        assert!(p.flush().is_empty());
    }

    #[test]
    fn bounded_pending() {
        let mut p = TreePrinter::new(1);
        assert!(p.push(span(2, Some(1), "a", 0, 1)).is_none());
        let mut s = span(3, Some(1), "b", 0, 1);
        s.trace_id = [8; 16];
        assert!(p.push(s).is_some(), "the oldest pending trace is printed");
        assert_eq!(p.flush().len(), 1);
    }
}
