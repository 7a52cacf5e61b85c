//! End to end: the real tracer binary traces two Go servers (A calls B) and exports OTLP to a
//! real Jaeger v2; the traces are read back through Jaeger's query API. One tracer traces both
//! processes, so B's server span is the child of A's client span: one trace per request.

use std::{collections::BTreeMap, time::Duration};

use tracer_it::{
    Fixture, TracerProcess, fixture,
    jaeger::{Jaeger, Span, Trace},
    request,
};

const WAIT: Duration = Duration::from_secs(60);

fn spans_named<'a>(t: &'a Trace, service: &str, path_attr: (&str, &str)) -> Vec<&'a Span> {
    t.spans
        .iter()
        .filter(|s| {
            s.service_name == service
                && s.attributes.get(path_attr.0).map(String::as_str) == Some(path_attr.1)
        })
        .collect()
}

fn by_id(t: &Trace) -> BTreeMap<&str, &Span> {
    t.spans.iter().map(|s| (s.span_id.as_str(), s)).collect()
}

fn assert_nested(child: &Span, parent: &Span) {
    assert!(
        child.start_unix_nano >= parent.start_unix_nano
            && child.end_unix_nano <= parent.end_unix_nano,
        "child {} [{}, {}] not inside parent {} [{}, {}]",
        child.name,
        child.start_unix_nano,
        child.end_unix_nano,
        parent.name,
        parent.start_unix_nano,
        parent.end_unix_nano
    );
}

fn two_servers_traced(protocol: &str) {
    let jaeger = Jaeger::start().unwrap();
    let bin = fixture("httpserver", false);
    let a = Fixture::http(&bin).unwrap();
    let b = Fixture::http(&bin).unwrap();
    let front = format!("frontend-{protocol}").replace('/', "-");
    let back = format!("backend-{protocol}").replace('/', "-");
    let endpoint = if protocol == "grpc" {
        jaeger.otlp_grpc.clone()
    } else {
        jaeger.otlp_http.clone()
    };
    let tracer = TracerProcess::start(
        &[a.pid, b.pid],
        &[
            "--sample-ratio",
            "1",
            "--otlp-protocol",
            protocol,
            "--otlp-endpoint",
            &endpoint,
            "--service-name-for",
            &format!("{}={front}", a.pid),
            "--service-name-for",
            &format!("{}={back}", b.pid),
        ],
    )
    .unwrap();

    let hello = format!("http://{}/hello", b.addr());
    let fail = format!("http://{}/status/503", b.addr());
    for _ in 0..5 {
        assert_eq!(
            request(a.addr(), "GET", &format!("/call?url={hello}")).unwrap(),
            200
        );
    }
    for _ in 0..3 {
        assert_eq!(
            request(a.addr(), "GET", &format!("/spawn?url={fail}")).unwrap(),
            503
        );
    }
    assert_eq!(request(a.addr(), "POST", "/status/500").unwrap(), 500);
    let (status, log) = tracer.stop().unwrap();
    assert!(status.success(), "tracer failed: {log}");
    assert!(
        log.contains("0 dropped (queue full), 0 export errors"),
        "export trouble:\n{log}"
    );

    // 5 /call and 3 /spawn traces of frontend server + client + backend server, 1 lone server span.
    let traces = jaeger.wait_for_traces(&front, 25, WAIT).unwrap();
    let calls: Vec<&Trace> = traces
        .iter()
        .filter(|t| !spans_named(t, &front, ("url.path", "/call")).is_empty())
        .collect();
    assert_eq!(calls.len(), 5, "one trace per /call request");
    for t in &calls {
        assert_eq!(t.spans.len(), 3, "server → client → backend server: {t:?}");
        let server = spans_named(t, &front, ("url.path", "/call"))[0];
        let client = t
            .spans
            .iter()
            .find(|s| s.kind == "SPAN_KIND_CLIENT")
            .unwrap();
        let served = spans_named(t, &back, ("url.path", "/hello"));
        assert_eq!(served.len(), 1, "the backend's side is in the same trace");
        assert_eq!(
            served[0].parent_span_id.as_deref(),
            Some(client.span_id.as_str())
        );
        assert_nested(served[0], client);
        assert_eq!(server.kind, "SPAN_KIND_SERVER");
        assert_eq!(server.parent_span_id, None);
        assert_eq!(server.attributes["http.request.method"], "GET");
        assert_eq!(server.attributes["http.response.status_code"], "200");
        // GETs without a body: Request.ContentLength 0, read by the server probe.
        assert_eq!(server.attributes["http.request.body.size"], "0");
        assert_eq!(served[0].attributes["http.request.body.size"], "0");
        assert_eq!(
            server.attributes["server.port"],
            a.addr().port().to_string()
        );
        assert_eq!(server.attributes["client.address"], "127.0.0.1");
        assert!(!server.attributes["url.path"].contains('?'), "query leaked");
        assert_eq!(client.kind, "SPAN_KIND_CLIENT");
        assert_eq!(
            client.parent_span_id.as_deref(),
            Some(server.span_id.as_str())
        );
        assert_eq!(client.attributes["url.full"], hello);
        assert_eq!(
            client.attributes["server.port"],
            b.addr().port().to_string()
        );
        assert_eq!(client.attributes["http.response.status_code"], "200");
        assert_nested(client, server);
        assert_eq!(server.resource["process.pid"], a.pid.to_string());
        assert!(server.resource.contains_key("host.name"));
    }
    let spawned: Vec<&Trace> = traces
        .iter()
        .filter(|t| !spans_named(t, &front, ("url.path", "/spawn")).is_empty())
        .collect();
    assert_eq!(spawned.len(), 3);
    for t in &spawned {
        let ids = by_id(t);
        let client = t
            .spans
            .iter()
            .find(|s| s.kind == "SPAN_KIND_CLIENT")
            .expect("client span from the spawned goroutine");
        let parent = ids[client.parent_span_id.as_deref().expect("has a parent")];
        assert_eq!(
            parent.attributes["url.path"], "/spawn",
            "parent is the handler's server span"
        );
        assert_eq!(client.attributes["http.response.status_code"], "503");
        assert_eq!(client.status_code, "STATUS_CODE_ERROR");
        assert_nested(client, parent);
    }
    let errors = traces
        .iter()
        .flat_map(|t| spans_named(t, &front, ("url.path", "/status/500")))
        .collect::<Vec<_>>();
    assert_eq!(errors.len(), 1);
    assert_eq!(errors[0].status_code, "STATUS_CODE_ERROR");
    assert_eq!(errors[0].attributes["http.request.method"], "POST");

    let services = jaeger.services().unwrap();
    assert!(
        services.contains(&front) && services.contains(&back),
        "services: {services:?}"
    );

    // backend: every server span is the child of the frontend client span that called it.
    let back_traces = jaeger.wait_for_traces(&back, 8, WAIT).unwrap();
    let served: Vec<&Span> = back_traces
        .iter()
        .flat_map(|t| t.spans.iter())
        .filter(|s| s.service_name == back)
        .collect();
    assert_eq!(served.len(), 8, "5 /hello + 3 /status/503");
    for t in &back_traces {
        let ids = by_id(t);
        for s in t.spans.iter().filter(|s| s.service_name == back) {
            assert_eq!(s.kind, "SPAN_KIND_SERVER");
            let caller = ids[s.parent_span_id.as_deref().expect("linked to its caller")];
            assert_eq!(caller.service_name, front);
            assert_eq!(caller.kind, "SPAN_KIND_CLIENT");
        }
    }
}

#[test]
fn spans_reach_jaeger_over_grpc() {
    two_servers_traced("grpc");
}

#[test]
fn spans_reach_jaeger_over_http_protobuf() {
    two_servers_traced("http/protobuf");
}

#[test]
fn unreachable_collector_is_counted_not_fatal() {
    let bin = fixture("httpserver", false);
    let a = Fixture::http(&bin).unwrap();
    // A port nothing listens on (bound then released).
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut tracer = TracerProcess::start(
        &[a.pid],
        &[
            "--sample-ratio",
            "1",
            "--otlp-endpoint",
            &format!("http://127.0.0.1:{port}"),
        ],
    )
    .unwrap();
    for _ in 0..3 {
        assert_eq!(request(a.addr(), "GET", "/hello").unwrap(), 200);
    }
    assert!(tracer.running());
    let (status, log) = tracer.stop().unwrap();
    assert!(status.success(), "{log}");
    assert!(!log.contains("panicked"), "{log}");
    assert!(
        log.contains("0 spans exported"),
        "nothing can be exported:\n{log}"
    );
    assert!(
        !log.contains(" 0 export errors"),
        "the failure must be counted:\n{log}"
    );
}

#[test]
fn stdout_prints_trace_trees() {
    let bin = fixture("httpserver", false);
    let a = Fixture::http(&bin).unwrap();
    let tracer = TracerProcess::start(
        &[a.pid],
        &["--sample-ratio", "1", "--no-export", "--stdout"],
    )
    .unwrap();
    let url = format!("http://{}/hello", a.addr());
    assert_eq!(
        request(a.addr(), "GET", &format!("/call?url={url}")).unwrap(),
        200
    );
    let printed = tracer_it::wait_until(WAIT, || tracer.stdout_text().contains("url.full="));
    let out = tracer.stdout_text();
    let (status, log) = tracer.stop().unwrap();
    assert!(printed, "no client span printed:\n{out}\n{log}");
    assert!(status.success(), "{log}");
    let lines: Vec<&str> = out.lines().collect();
    let call = lines
        .iter()
        .position(|l| l.contains("url.path=/call"))
        .expect("server span line");
    assert!(lines[call].starts_with("└─ GET [SERVER]"), "{out}");
    assert!(lines[call + 1].starts_with("   └─ GET [CLIENT]"), "{out}");
    assert!(
        lines[call + 1].contains(&format!("url.full={url}")),
        "{out}"
    );
    assert!(lines[call - 1].starts_with("trace "), "{out}");
}
