//! Draws one trace read back from Jaeger as an SVG waterfall (one row per span, parents above
//! their children, bars on a common time axis, one colour per service). The demo writes one
//! for the README; no plotting dependency is needed for rectangles and text.

use std::{collections::BTreeMap, fmt::Write as _};

use crate::jaeger::{Span, Trace};

const WIDTH: f64 = 1500.0;
const LABEL_WIDTH: f64 = 660.0;
/// Average advance of one 12 px DejaVu Sans character, for truncating labels.
const CHAR_WIDTH: f64 = 6.8;
const ROW: f64 = 22.0;
const TOP: f64 = 56.0;
const PALETTE: &[&str] = &[
    "#4e79a7", "#f28e2b", "#59a14f", "#e15759", "#76b7b2", "#b07aa1", "#edc948", "#9c755f",
];

/// Spans in display order (depth-first, children by start time) with their depth. Spans whose
/// parent is not in the trace are treated as roots.
pub fn rows(trace: &Trace) -> Vec<(usize, &Span)> {
    let ids: std::collections::HashSet<&str> =
        trace.spans.iter().map(|s| s.span_id.as_str()).collect();
    let mut children: BTreeMap<&str, Vec<&Span>> = BTreeMap::new();
    let mut roots = Vec::new();
    for s in &trace.spans {
        match s.parent_span_id.as_deref() {
            Some(p) if ids.contains(p) => children.entry(p).or_default().push(s),
            _ => roots.push(s),
        }
    }
    let by_start = |v: &mut Vec<&Span>| v.sort_by_key(|s| (s.start_unix_nano, s.span_id.clone()));
    by_start(&mut roots);
    children.values_mut().for_each(by_start);
    let mut out = Vec::with_capacity(trace.spans.len());
    let mut stack: Vec<(usize, &Span)> = roots.into_iter().rev().map(|s| (0, s)).collect();
    while let Some((depth, s)) = stack.pop() {
        out.push((depth, s));
        if let Some(kids) = children.get(s.span_id.as_str()) {
            stack.extend(kids.iter().rev().map(|k| (depth + 1, *k)));
        }
    }
    out
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

fn kind(s: &Span) -> &str {
    s.kind.strip_prefix("SPAN_KIND_").unwrap_or(&s.kind)
}

fn millis(ns: u64) -> String {
    let ms = ns as f64 / 1e6;
    if ns == 0 {
        "0".to_owned()
    } else if ms >= 100.0 {
        format!("{ms:.0} ms")
    } else if ms >= 1.0 {
        format!("{ms:.2} ms")
    } else {
        format!("{:.0} µs", ns as f64 / 1e3)
    }
}

/// `label` cut to about `width` pixels, with an ellipsis where it was cut.
fn fit(label: &str, width: f64) -> String {
    let max = (width / CHAR_WIDTH).max(4.0) as usize;
    if label.chars().count() <= max {
        return label.to_owned();
    }
    let mut cut: String = label.chars().take(max - 1).collect();
    cut.push('…');
    cut
}

/// The SVG document for `trace`, headed by `title`.
pub fn svg(trace: &Trace, title: &str) -> String {
    let rows = rows(trace);
    let start = trace
        .spans
        .iter()
        .map(|s| s.start_unix_nano)
        .min()
        .unwrap_or(0);
    let end = trace
        .spans
        .iter()
        .map(|s| s.end_unix_nano)
        .max()
        .unwrap_or(start)
        .max(start + 1);
    let span_ns = (end - start) as f64;
    let plot = WIDTH - LABEL_WIDTH - 20.0;
    let x = |t: u64| LABEL_WIDTH + (t.saturating_sub(start)) as f64 / span_ns * plot;
    let mut colours: BTreeMap<&str, &str> = BTreeMap::new();
    for s in &trace.spans {
        let n = colours.len();
        colours
            .entry(s.service_name.as_str())
            .or_insert(PALETTE[n % PALETTE.len()]);
    }
    let height = TOP + ROW * rows.len() as f64 + 40.0;
    let mut o = String::new();
    let _ = writeln!(
        o,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{height}" font-family="DejaVu Sans, Helvetica, Arial, sans-serif" font-size="12">"#
    );
    let _ = writeln!(
        o,
        r##"<rect width="100%" height="100%" fill="#ffffff"/><text x="10" y="22" font-size="15" font-weight="bold">{}</text>"##,
        escape(title)
    );
    let _ = writeln!(
        o,
        r##"<text x="10" y="42" fill="#555">trace {} · {} spans · {}</text>"##,
        escape(&trace.trace_id),
        trace.spans.len(),
        millis(end - start)
    );
    // Time axis: five ticks.
    for i in 0..=4 {
        let t = start + ((end - start) as f64 * f64::from(i) / 4.0) as u64;
        let tx = x(t);
        let _ = writeln!(
            o,
            r##"<line x1="{tx:.1}" y1="{TOP}" x2="{tx:.1}" y2="{:.1}" stroke="#ddd"/><text x="{tx:.1}" y="{:.1}" fill="#555" text-anchor="middle">{}</text>"##,
            height - 30.0,
            height - 14.0,
            millis(t - start)
        );
    }
    for (i, (depth, s)) in rows.iter().enumerate() {
        let y = TOP + ROW * i as f64;
        let colour = colours
            .get(s.service_name.as_str())
            .copied()
            .unwrap_or(PALETTE[0]);
        let indent = 10.0 + 14.0 * *depth as f64;
        let label = fit(
            &format!("{} {} [{}]", s.service_name, s.name, kind(s)),
            LABEL_WIDTH - indent - 12.0,
        );
        let _ = writeln!(
            o,
            r#"<text x="{indent:.1}" y="{:.1}">{}</text>"#,
            y + 15.0,
            escape(&label)
        );
        let (x0, x1) = (
            x(s.start_unix_nano),
            x(s.end_unix_nano.max(s.start_unix_nano)),
        );
        let w = (x1 - x0).max(1.5);
        let stroke = if s.status_code == "STATUS_CODE_ERROR" {
            r##" stroke="#c00" stroke-width="2""##
        } else {
            ""
        };
        let _ = writeln!(
            o,
            r#"<rect x="{x0:.1}" y="{:.1}" width="{w:.1}" height="14" rx="2" fill="{colour}"{stroke}><title>{}</title></rect>"#,
            y + 4.0,
            escape(&format!(
                "{} {} {}",
                s.name,
                millis(s.duration().as_nanos() as u64),
                s.attributes
                    .iter()
                    .map(|(k, v)| format!("{k}={v}"))
                    .collect::<Vec<_>>()
                    .join(" ")
            ))
        );
        let text_x = if x1 + 90.0 < WIDTH {
            x1 + 4.0
        } else {
            x0 - 4.0
        };
        let anchor = if x1 + 90.0 < WIDTH { "start" } else { "end" };
        let _ = writeln!(
            o,
            r##"<text x="{text_x:.1}" y="{:.1}" fill="#333" text-anchor="{anchor}">{}</text>"##,
            y + 15.0,
            millis(s.duration().as_nanos() as u64)
        );
    }
    // Legend.
    let mut lx = LABEL_WIDTH;
    for (service, colour) in &colours {
        let _ = writeln!(
            o,
            r##"<rect x="{lx:.1}" y="30" width="12" height="12" fill="{colour}"/><text x="{:.1}" y="41" fill="#333">{}</text>"##,
            lx + 16.0,
            escape(service)
        );
        lx += 30.0 + 7.5 * service.len() as f64;
    }
    o.push_str("</svg>\n");
    o
}

#[cfg(test)]
mod tests {
    use super::*;

    fn span(id: &str, parent: Option<&str>, name: &str, start: u64, end: u64) -> Span {
        Span {
            trace_id: "t".into(),
            span_id: id.into(),
            parent_span_id: parent.map(Into::into),
            name: name.into(),
            kind: "SPAN_KIND_SERVER".into(),
            start_unix_nano: start,
            end_unix_nano: end,
            attributes: BTreeMap::new(),
            status_code: "STATUS_CODE_UNSET".into(),
            status_message: String::new(),
            service_name: if name.starts_with('o') {
                "origin".into()
            } else {
                "agent".into()
            },
            resource: BTreeMap::new(),
            scope: String::new(),
        }
    }

    #[test]
    fn rows_are_depth_first_with_children_by_start() {
        let trace = Trace {
            trace_id: "t".into(),
            spans: vec![
                span("c2", Some("r"), "late child", 30, 40),
                span("g", Some("c1"), "grandchild", 12, 15),
                span("r", None, "root", 0, 100),
                span("c1", Some("r"), "early child", 10, 20),
                span("x", Some("missing"), "orphan", 50, 60),
            ],
        };
        let got: Vec<(usize, &str)> = rows(&trace)
            .into_iter()
            .map(|(d, s)| (d, s.name.as_str()))
            .collect();
        assert_eq!(
            got,
            vec![
                (0, "root"),
                (1, "early child"),
                (2, "grandchild"),
                (1, "late child"),
                (0, "orphan"),
            ]
        );
    }

    #[test]
    fn svg_has_one_bar_per_span_scaled_to_the_trace_and_escapes_text() {
        let trace = Trace {
            trace_id: "abc".into(),
            spans: vec![
                span("r", None, "root <GET>", 1_000, 2_001_000),
                span("c", Some("r"), "origin call", 1_001_000, 2_001_000),
            ],
        };
        let doc = svg(&trace, "a & b");
        assert!(doc.starts_with("<svg"));
        assert!(doc.trim_end().ends_with("</svg>"));
        assert_eq!(
            doc.matches("<rect x=").count(),
            2 + 2,
            "2 bars + 2 legend boxes"
        );
        assert!(doc.contains("root &lt;GET&gt;"));
        assert!(doc.contains("a &amp; b"));
        assert!(doc.contains(">2.00 ms<"), "root duration label");
        // The child starts halfway through: its bar starts at the middle of the plot.
        let mid = LABEL_WIDTH + (WIDTH - LABEL_WIDTH - 20.0) / 2.0;
        assert!(doc.contains(&format!("<rect x=\"{mid:.1}\"")), "{doc}");
        assert!(doc.contains(">agent<") && doc.contains(">origin<"));
    }

    #[test]
    fn long_labels_are_cut_to_the_label_column() {
        assert_eq!(fit("short", 100.0), "short");
        let cut = fit(&"x".repeat(200), 68.0);
        assert_eq!(cut.chars().count(), 10);
        assert!(cut.ends_with('…'));
    }
}
