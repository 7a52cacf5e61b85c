//! The server probe reads the incoming `traceparent` header out of Go's `http.Header` map in the
//! kernel: runtime.hmap buckets (Go <= 1.23) and swiss tables (Go >= 1.24), small maps (one
//! group) and big ones (a directory of tables, overflow buckets), for every request.

use std::{collections::BTreeMap, path::Path, time::Duration};

use kraken_tracer::events::{Captured, Event};
use tracer_it::{Fixture, Traced, fixture, gofixture::fixture_with_go, http};

const WAIT: Duration = Duration::from_secs(30);

/// A W3C trace context header whose trace id encodes `n` (so each request has its own value).
fn traceparent(n: usize) -> String {
    format!("00-{n:032x}-00f067aa0ba902b7-01")
}

/// One request: its target (unique, identifies the event), headers, and the expected capture.
struct Case {
    target: String,
    headers: Vec<(String, String)>,
    expected: Captured,
}

fn captured(text: &str, truncated: bool) -> Captured {
    Captured {
        text: text.to_owned(),
        truncated,
        read_error: false,
    }
}

/// `n` filler headers; among them a 11-byte key that is not Traceparent (`X-B3-Spanid`), so the
/// key bytes comparison is exercised, not only the length check.
fn filler(n: usize) -> Vec<(String, String)> {
    (0..n)
        .map(|i| match i {
            1 => ("X-B3-Spanid".to_owned(), "00f067aa0ba902b7".to_owned()),
            2 => ("tracestate".to_owned(), "vendor=value".to_owned()),
            _ => (format!("X-Extra-{i}"), format!("value-{i}")),
        })
        .collect()
}

fn cases() -> Vec<Case> {
    let mut cases = Vec::new();
    // The harness also sends Host (not kept in the map), Connection and Content-Length: 0, 3,
    // 9, 20 and 40 extra headers make maps of 3 to 43 entries: one group, then several groups
    // (swiss) or buckets with overflow buckets (hmap).
    for (i, extra) in [0usize, 3, 9, 20, 40].into_iter().enumerate() {
        let value = traceparent(i + 1);
        let mut headers = filler(extra);
        // Canonicalized by Go to "Traceparent"; placed in the middle of the header block.
        headers.insert(extra / 2, ("traceparent".to_owned(), value.clone()));
        cases.push(Case {
            target: format!("/hello?extra={extra}&tp=1"),
            headers,
            expected: captured(&value, false),
        });
        cases.push(Case {
            target: format!("/hello?extra={extra}&tp=0"),
            headers: filler(extra),
            expected: captured("", false),
        });
    }
    // Long values: the header block exceeds bufio's 4 KB, Go's size hint (header lines in the
    // buffer) undercounts, and the map grows while it is filled (go1.21: an hmap can still be
    // evacuating into new buckets when the handler starts).
    for (i, extra) in [24usize, 28, 45].into_iter().enumerate() {
        let value = traceparent(200 + i);
        let mut headers: Vec<(String, String)> = (0..extra)
            .map(|k| (format!("X-Long-{k}"), "x".repeat(200)))
            .collect();
        headers.push(("traceparent".to_owned(), value.clone()));
        cases.push(Case {
            target: format!("/hello?long={extra}"),
            headers,
            expected: captured(&value, false),
        });
    }
    // Repeated header: the first value is the one Go's Header.Get returns.
    let first = traceparent(100);
    cases.push(Case {
        target: "/hello?case=repeated".to_owned(),
        headers: vec![
            ("Traceparent".to_owned(), first.clone()),
            ("Traceparent".to_owned(), traceparent(101)),
        ],
        expected: captured(&first, false),
    });
    // Longer than the 64 bytes kept: cut, and flagged as such.
    let long = format!("{}-{}", traceparent(102), "f".repeat(30));
    cases.push(Case {
        target: "/hello?case=long".to_owned(),
        headers: vec![("TRACEPARENT".to_owned(), long.clone())],
        expected: captured(&long[..64], true),
    });
    cases
}

fn check(bin: &Path, go_minor: &str) {
    let fx = Fixture::http(bin).unwrap();
    let traced = Traced::start_capturing_query(&[fx.pid]).unwrap();
    let att = traced.tracer.attached().next().unwrap();
    let version = att.go_version.clone().unwrap_or_default();
    assert!(
        version.starts_with(&format!("{go_minor}.")),
        "{} was built by {version}, expected {go_minor}",
        bin.display()
    );
    let cases = cases();
    for case in &cases {
        let headers: Vec<(&str, &str)> = case
            .headers
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        let resp = http::request(fx.addr(), "GET", &case.target, &headers, &[], WAIT).unwrap();
        assert_eq!(resp.status, 200, "{}", case.target);
    }
    // Handler entry and response end for every request.
    let events = traced.wait_for(2 * cases.len(), WAIT).unwrap();
    let got: BTreeMap<String, Captured> = events
        .iter()
        .filter_map(|e| match e {
            Event::HttpServe(s) if s.hdr.tgid == fx.pid => {
                Some((s.uri.text.clone(), s.traceparent.clone()))
            }
            _ => None,
        })
        .collect();
    assert_eq!(got.len(), cases.len(), "one server event per request");
    for case in &cases {
        assert_eq!(
            got.get(&case.target),
            Some(&case.expected),
            "{version}: {} with {} headers",
            case.target,
            case.headers.len()
        );
    }
}

/// The installed Go (1.26 on the project's machines): swiss tables.
#[test]
fn traceparent_installed_go() {
    check(&fixture("httpserver", false), "go1.26");
}

/// Go 1.24: the first swiss-table release.
#[test]
fn traceparent_go1_24() {
    check(&fixture_with_go("httpserver", "1.24.13").unwrap(), "go1.24");
}

/// Go 1.21: runtime.hmap buckets.
#[test]
fn traceparent_go1_21() {
    check(&fixture_with_go("httpserver", "1.21.13").unwrap(), "go1.21");
}

/// A stripped binary (installed Go): `Request.Header`'s offset comes from the built-in table.
#[test]
fn traceparent_stripped_uses_table_offsets() {
    let bin = fixture("httpserver", true);
    check(&bin, "go1.26");
}
