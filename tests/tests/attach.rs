//! Attaching to real Go processes: events match requests, scoping by PID, stripped
//! binaries, and the traced process surviving stack growth and GC under probes.

use std::{collections::BTreeMap, thread, time::Duration};

use kraken_tracer::{events::Event, symbols::SymbolSource, symbols::sites::SiteKind};
use tracer_it::{Fixture, Traced, fixture, http, request};

const WAIT: Duration = Duration::from_secs(30);

fn serve_events(events: &[Event], pid: u32) -> Vec<(String, String)> {
    events
        .iter()
        .filter_map(|e| match e {
            Event::HttpServe(s) => Some(s),
            _ => None,
        })
        .filter(|s| s.hdr.tgid == pid)
        .map(|s| (s.method.text.clone(), s.uri.text.clone()))
        .collect()
}

fn counts(v: &[(String, String)]) -> BTreeMap<(String, String), usize> {
    let mut m = BTreeMap::new();
    for k in v {
        *m.entry(k.clone()).or_default() += 1;
    }
    m
}

fn events_match_requests(stripped: bool) {
    let bin = fixture("httpserver", stripped);
    let fx = Fixture::http(&bin).unwrap();
    let traced = Traced::start_capturing_query(&[fx.pid]).unwrap();
    let att = traced.tracer.attached().next().unwrap();
    let probe = &att.probes[0];
    assert_eq!(probe.symbol, "net/http.serverHandler.ServeHTTP");
    assert_eq!(probe.site.kind, SiteKind::Emulated, "{probe}");
    let expected_source = if stripped {
        SymbolSource::Gopclntab
    } else {
        SymbolSource::Symtab
    };
    assert_eq!(probe.symbol_source, expected_source);

    let mut sent = Vec::new();
    // Request.ContentLength by request: POSTs carry i * 10 bytes (each target is unique; /status
    // reads no body: small enough to sit in the server's read buffer, or closing resets).
    let mut bodies = BTreeMap::new();
    for i in 0..50 {
        let (method, target) = match i % 3 {
            0 => ("GET", format!("/hello?i={i}")),
            1 => ("POST", format!("/status/{}", 200 + i)),
            _ => ("DELETE", format!("/deep?n={}", 10 + i)),
        };
        let body = vec![b'x'; if method == "POST" { i * 10 } else { 0 }];
        http::request(fx.addr(), method, &target, &[], &body, WAIT).unwrap();
        bodies.insert(target.clone(), Some(body.len() as i64));
        sent.push((method.to_owned(), target));
    }
    // Two events per request: handler entry and response end.
    let events = traced.wait_for(2 * sent.len(), WAIT).unwrap();
    let got = serve_events(&events, fx.pid);
    assert_eq!(counts(&got), counts(&sent), "events differ from requests");
    for e in &events {
        assert!(e.header().goroutine != 0, "no goroutine pointer");
        assert!(e.header().goid != 0, "no goid");
        if let Event::HttpServe(s) = e {
            assert_eq!(s.host.text, fx.addr().to_string());
            assert_eq!(
                Some(&s.content_length),
                bodies.get(&s.uri.text),
                "Request.ContentLength of {}",
                s.uri.text
            );
            assert!(
                s.remote_addr.text.starts_with("127.0.0.1:"),
                "{}",
                s.remote_addr.text
            );
        }
    }
    let ends = events
        .iter()
        .filter(|e| matches!(e, Event::HttpServeEnd(_)))
        .count();
    assert_eq!(ends, sent.len());
    let c = traced.tracer.counters().unwrap();
    assert_eq!(c.hits, 2 * sent.len() as u64, "kernel hit counter");
    assert_eq!(c.ringbuf_full, 0);
}

#[test]
fn events_match_requests_symtab() {
    events_match_requests(false);
}

#[test]
fn events_match_requests_stripped_gopclntab() {
    events_match_requests(true);
}

#[test]
fn unattached_process_produces_no_events() {
    let bin = fixture("httpserver", false);
    let traced_fx = Fixture::http(&bin).unwrap();
    let other = Fixture::http(&bin).unwrap();
    let traced = Traced::start_capturing_query(&[traced_fx.pid]).unwrap();
    for i in 0..20 {
        request(other.addr(), "GET", &format!("/hello?other={i}")).unwrap();
        request(traced_fx.addr(), "GET", &format!("/hello?traced={i}")).unwrap();
    }
    // A marker request after the others: once its events are here, everything sent before is too.
    request(traced_fx.addr(), "GET", "/hello?marker").unwrap();
    let events = traced.wait_for(42, WAIT).unwrap();
    assert!(
        events.iter().all(|e| e.header().tgid == traced_fx.pid),
        "event from another process"
    );
    assert_eq!(serve_events(&events, traced_fx.pid).len(), 21);
    assert!(
        serve_events(&events, traced_fx.pid)
            .iter()
            .all(|(_, t)| !t.contains("other")),
        "request to the untraced process was seen"
    );
}

#[test]
fn fixture_survives_stack_growth_and_gc_under_probes() {
    const N: usize = 10_000;
    const THREADS: usize = 2;
    let bin = fixture("httpserver", false);
    let mut fx = Fixture::http(&bin).unwrap();
    let traced = Traced::start(&[fx.pid]).unwrap();
    let addr = fx.addr();
    let workers: Vec<_> = (0..THREADS)
        .map(|t| {
            thread::spawn(move || {
                let mut failures = 0;
                for i in (t..N).step_by(THREADS) {
                    // Deep recursion (stack growth of ~0.5 MB) on every other request, GC on every 10th.
                    let target = if i % 2 == 0 {
                        format!("/deep?n=2000&gc={}", u8::from(i % 10 == 0))
                    } else {
                        "/hello".to_owned()
                    };
                    if request(addr, "GET", &target).ok() != Some(200) {
                        failures += 1;
                    }
                }
                failures
            })
        })
        .collect();
    let failures: usize = workers.into_iter().map(|w| w.join().unwrap()).sum();
    assert_eq!(failures, 0, "requests failed while probed");
    assert!(fx.alive(), "the traced process died");
    let events = traced.wait_for(2 * N, Duration::from_secs(60)).unwrap();
    assert_eq!(
        serve_events(&events, fx.pid).len(),
        N,
        "one event per request, even when the stack grows (the probe sits after the stack check)"
    );
}
