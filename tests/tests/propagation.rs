//! Cross-node traces: two simulated nodes (network namespaces), each with its own
//! kraken-tracer, exporting to one Jaeger. Node A's Go server calls node B's Go server through
//! nginx on B (TCP in, HTTP/1.0 over a unix socket to Go, as Kraken runs). A's tracer inserts
//! `traceparent` into A's outgoing requests (sk_msg); B's tracer continues that trace.

use std::{
    collections::{BTreeMap, BTreeSet},
    time::{Duration, Instant},
};

use tracer_it::{
    Fixture, TracerProcess, fixture,
    http::{self, Response},
    jaeger::{Jaeger, Span, Trace},
    netns::{Net, Nginx},
};

const WAIT: Duration = Duration::from_secs(40);
const B_PORT: u16 = 8080;

/// Node A (the caller) and node B (nginx → Go on a unix socket), each traced by its own
/// tracer process.
struct Nodes {
    // Field order is drop order: tracers first, then processes, then the network.
    tracers: Vec<TracerProcess>,
    a: Fixture,
    _b: Fixture,
    b_nginx: Nginx,
    _net: Net,
}

fn nodes(jaeger: &Jaeger, extra: &[&str]) -> Nodes {
    let mut n = nodes_untraced();
    n.trace(jaeger, extra);
    n
}

/// The two nodes, not traced yet.
fn nodes_untraced() -> Nodes {
    let bin = fixture("httpserver", false);
    let net = Net::new(&["a", "b"]).expect("network namespaces");
    let a_addr = net.node("a").addr;
    let b_addr = net.node("b").addr;
    let sock = net.dir.join("b.sock");
    let a = Fixture::http_command(
        net.command("a", &bin)
            .args(["-addr", &format!("{a_addr}:0")]),
    )
    .expect("fixture on node a");
    let b = Fixture::http_command(
        net.command("b", &bin)
            .args(["-addr", &format!("{b_addr}:0"), "-unix"])
            .arg(&sock),
    )
    .expect("fixture on node b");
    let b_nginx = net.nginx("b", B_PORT, &sock).expect("nginx on node b");
    Nodes {
        tracers: Vec::new(),
        a,
        _b: b,
        b_nginx,
        _net: net,
    }
}

impl Nodes {
    /// Starts one tracer per node.
    fn trace(&mut self, jaeger: &Jaeger, extra: &[&str]) {
        let tracer = |pid: u32, service: &str| {
            let mut args = vec![
                "--otlp-endpoint",
                &jaeger.otlp_grpc,
                "--service-name",
                service,
                "--no-default-rules",
            ];
            args.extend_from_slice(extra);
            TracerProcess::start(&[pid], &args).expect("tracer")
        };
        self.tracers = vec![tracer(self.a.pid, "node-a"), tracer(self._b.pid, "node-b")];
    }

    /// A's /relay to `path` on B (through B's nginx), with extra query parameters.
    fn relay(&self, path: &str, query: &str) -> Response {
        let b = self.b_nginx.addr;
        let target = format!("/relay?url=http://{b}{path}{query}");
        let r = http::request(self.a.addr(), "GET", &target, &[], &[], WAIT).expect("relay");
        assert_eq!(
            r.status,
            200,
            "{target}: {}\nnginx: {}",
            String::from_utf8_lossy(&r.body),
            self.b_nginx.error_log()
        );
        r
    }
}

/// Every `traceparent=VALUE` line B's server answered with, in order.
fn echoed_traceparents(body: &[u8]) -> Vec<String> {
    String::from_utf8_lossy(body)
        .split(['\n', ' '])
        .filter_map(|l| l.strip_prefix("traceparent="))
        .map(str::to_owned)
        .collect()
}

/// (trace id, parent span id, sampled) of a version-00 traceparent.
fn parts(tp: &str) -> (String, String, bool) {
    let f: Vec<&str> = tp.split('-').collect();
    assert_eq!(f.len(), 4, "{tp:?}");
    assert_eq!(f[0], "00", "{tp:?}");
    assert_eq!((f[1].len(), f[2].len(), f[3].len()), (32, 16, 2), "{tp:?}");
    (f[1].to_owned(), f[2].to_owned(), f[3] == "01")
}

/// Waits until Jaeger has trace `id` with at least `n` spans.
fn wait_trace(jaeger: &Jaeger, id: &str, n: usize) -> Trace {
    let deadline = Instant::now() + WAIT;
    loop {
        if let Some(t) = jaeger.trace(id).expect("query Jaeger")
            && t.spans.len() >= n
        {
            return t;
        }
        assert!(
            Instant::now() < deadline,
            "trace {id} never had {n} spans: {:#?}",
            jaeger.trace(id)
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn by_service<'a>(t: &'a Trace, service: &str, kind: &str) -> Vec<&'a Span> {
    t.spans
        .iter()
        .filter(|s| s.service_name == service && s.kind == kind)
        .collect()
}

#[test]
fn one_trace_across_two_nodes_with_parent_across_tracers() {
    let jaeger = Jaeger::start().expect("start Jaeger");
    let mut n = nodes(&jaeger, &["--sample-ratio", "1"]);
    for t in &mut n.tracers {
        t.wait_log(
            "propagation: sk_msg (traceparent inserted into outgoing HTTP/1 requests)",
            WAIT,
        )
        .expect("propagation on by default");
    }

    // One call: B sees exactly one, well-formed traceparent, and the rest of the request
    // as Go's client wrote it (nginx adds Connection: close; nothing else changed).
    let r = n.relay("/headers", "");
    let text = String::from_utf8_lossy(&r.body).into_owned();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(
        lines.first().copied(),
        Some("GET /headers HTTP/1.0"),
        "{text}"
    );
    let names: BTreeSet<&str> = lines[1..]
        .iter()
        .filter_map(|l| l.split_once(": ").map(|(k, _)| k))
        .collect();
    let expected: BTreeSet<&str> = ["Accept-Encoding", "Connection", "Traceparent", "User-Agent"]
        .into_iter()
        .collect();
    assert_eq!(names, expected, "{text}");
    let tps = echoed_traceparents(&r.body);
    assert_eq!(tps.len(), 1, "{text}");
    let (trace_id, client_span, sampled) = parts(&tps[0]);
    assert!(sampled, "ratio 1: sampled");
    let t = wait_trace(&jaeger, &trace_id, 3);
    let a_server = by_service(&t, "node-a", "SPAN_KIND_SERVER");
    let a_client = by_service(&t, "node-a", "SPAN_KIND_CLIENT");
    let b_server = by_service(&t, "node-b", "SPAN_KIND_SERVER");
    assert_eq!(
        (a_server.len(), a_client.len(), b_server.len()),
        (1, 1, 1),
        "{t:#?}"
    );
    assert_eq!(
        a_client[0].span_id, client_span,
        "the header names A's client span"
    );
    assert_eq!(
        a_client[0].parent_span_id.as_deref(),
        Some(a_server[0].span_id.as_str())
    );
    assert_eq!(
        b_server[0].parent_span_id.as_deref(),
        Some(client_span.as_str()),
        "B's server span is a child of A's client span, across tracer processes"
    );
    assert_eq!(b_server[0].attr("url.path"), Some("/headers"));
    assert!(
        a_server[0].parent_span_id.is_none(),
        "A's server span is the root"
    );

    // Keep-alive: 20 requests over one connection to B's nginx, each with its own context.
    let r = n.relay("/headers", "&n=20");
    let tps = echoed_traceparents(&r.body);
    assert_eq!(tps.len(), 20);
    let (trace_id, _, _) = parts(&tps[0]);
    let span_ids: BTreeSet<String> = tps
        .iter()
        .map(|tp| {
            let (t, s, _) = parts(tp);
            assert_eq!(t, trace_id, "one handler, one trace");
            s
        })
        .collect();
    assert_eq!(span_ids.len(), 20, "every request its own client span id");
    let t = wait_trace(&jaeger, &trace_id, 41);
    let clients: BTreeMap<&str, &Span> = by_service(&t, "node-a", "SPAN_KIND_CLIENT")
        .into_iter()
        .map(|s| (s.span_id.as_str(), s))
        .collect();
    let b_parents: BTreeSet<&str> = by_service(&t, "node-b", "SPAN_KIND_SERVER")
        .iter()
        .filter_map(|s| s.parent_span_id.as_deref())
        .collect();
    assert_eq!(clients.len(), 20);
    assert_eq!(
        b_parents,
        clients.keys().copied().collect::<BTreeSet<_>>(),
        "each of B's 20 server spans is the child of its own client span"
    );
    assert_eq!(
        span_ids,
        clients.keys().map(|s| (*s).to_owned()).collect(),
        "the header sent is the client span's"
    );

    // A body much bigger than the socket buffer arrives intact and linked.
    let r = n.relay("/sum", "&size=8388608");
    let text = String::from_utf8_lossy(&r.body).into_owned();
    let mut words = text.split_whitespace();
    let (len, got, tp) = (words.next(), words.next(), words.next());
    let sent = text
        .lines()
        .find_map(|l| l.strip_prefix("sent "))
        .expect("sent hash");
    assert_eq!(len, Some("8388608"), "{text}");
    assert_eq!(got, Some(sent), "the body B received is the one A sent");
    let (trace_id, client_span, _) =
        parts(tp.and_then(|t| t.strip_prefix("traceparent=")).expect("tp"));
    let t = wait_trace(&jaeger, &trace_id, 3);
    let b_server = by_service(&t, "node-b", "SPAN_KIND_SERVER");
    assert_eq!(b_server.len(), 1, "{t:#?}");
    assert_eq!(
        b_server[0].parent_span_id.as_deref(),
        Some(client_span.as_str())
    );
    assert_eq!(b_server[0].attr("http.request.method"), Some("POST"));

    // A request that already carries a traceparent keeps exactly that value.
    let own = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";
    let r = n.relay("/headers", &format!("&tp={own}"));
    assert_eq!(echoed_traceparents(&r.body), vec![own.to_owned()]);
    let t = wait_trace(&jaeger, "0af7651916cd43dd8448eb211c80319c", 2);
    let a_client = by_service(&t, "node-a", "SPAN_KIND_CLIENT");
    let b_server = by_service(&t, "node-b", "SPAN_KIND_SERVER");
    assert_eq!((a_client.len(), b_server.len()), (1, 1), "{t:#?}");
    assert_eq!(
        a_client[0].parent_span_id.as_deref(),
        Some("b7ad6b7169203331"),
        "the client span joins the trace its own header names"
    );
    assert_eq!(
        b_server[0].parent_span_id.as_deref(),
        Some("b7ad6b7169203331")
    );

    let a = n.tracers.remove(0);
    let (_, log) = a.stop().expect("stop tracer a");
    assert!(
        log.contains("traceparent inserted 22 (kept the application's 1"),
        "counters: {log}"
    );
}

#[test]
fn sampling_follows_the_header_so_traces_are_whole_or_absent() {
    let jaeger = Jaeger::start().expect("start Jaeger");
    let n = nodes(&jaeger, &["--sample-ratio", "0.5"]);
    let mut kept = Vec::new();
    let mut dropped = Vec::new();
    for _ in 0..40 {
        let r = n.relay("/headers", "");
        let tps = echoed_traceparents(&r.body);
        assert_eq!(tps.len(), 1);
        let (trace_id, client_span, sampled) = parts(&tps[0]);
        // The kernel decided with user space's rule: low 8 bytes < 0.5 × 2^64.
        let low = u64::from_str_radix(&trace_id[16..], 16).expect("hex");
        assert_eq!(sampled, low < 1 << 63, "{trace_id}");
        if sampled {
            kept.push((trace_id, client_span));
        } else {
            dropped.push(trace_id);
        }
    }
    assert!(
        !kept.is_empty() && !dropped.is_empty(),
        "40 traces at 50 %: {} kept",
        kept.len()
    );
    for (id, client_span) in &kept {
        let t = wait_trace(&jaeger, id, 3);
        let b = by_service(&t, "node-b", "SPAN_KIND_SERVER");
        assert_eq!(b.len(), 1, "{t:#?}");
        assert_eq!(b[0].parent_span_id.as_deref(), Some(client_span.as_str()));
        assert_eq!(by_service(&t, "node-a", "SPAN_KIND_SERVER").len(), 1);
    }
    // Every kept trace arrived whole; the dropped ones went through the same export path
    // at the same time, and neither node exported any of their spans.
    for id in &dropped {
        assert!(
            jaeger.trace(id).expect("query").is_none(),
            "unsampled trace {id} was exported (by one node): not whole-or-absent"
        );
    }
}

#[test]
fn propagation_off_leaves_requests_alone_and_gives_local_traces() {
    let jaeger = Jaeger::start().expect("start Jaeger");
    let mut n = nodes(&jaeger, &["--sample-ratio", "1", "--propagation", "off"]);
    for t in &mut n.tracers {
        t.wait_log("propagation: off (--propagation off)", WAIT)
            .expect("log line");
    }
    let r = n.relay("/headers", "");
    assert_eq!(
        echoed_traceparents(&r.body),
        vec![String::new()],
        "no header sent"
    );
    let a = jaeger
        .wait_for_traces("node-a", 2, WAIT)
        .expect("node a's trace");
    let b = jaeger
        .wait_for_traces("node-b", 1, WAIT)
        .expect("node b's trace");
    assert_eq!((a.len(), b.len()), (1, 1));
    let (a, b) = (&a[0], &b[0]);
    assert_ne!(
        a.trace_id, b.trace_id,
        "separate traces without propagation"
    );
    let a_server = by_service(a, "node-a", "SPAN_KIND_SERVER");
    let a_client = by_service(a, "node-a", "SPAN_KIND_CLIENT");
    assert_eq!((a_server.len(), a_client.len()), (1, 1));
    assert_eq!(
        a_client[0].parent_span_id.as_deref(),
        Some(a_server[0].span_id.as_str())
    );
    let b_server = by_service(b, "node-b", "SPAN_KIND_SERVER");
    assert_eq!(b_server.len(), 1);
    assert!(
        b_server[0].parent_span_id.is_none(),
        "B's span is its own root"
    );
}

#[test]
fn a_connection_opened_before_the_tracer_attached_is_adopted() {
    let jaeger = Jaeger::start().expect("start Jaeger");
    let mut n = nodes_untraced();
    // A opens its keep-alive connection to B's nginx, untraced, and keeps it idle.
    let r = n.relay("/headers", "");
    assert_eq!(echoed_traceparents(&r.body), vec![String::new()]);
    n.trace(&jaeger, &["--sample-ratio", "1"]);
    n.tracers[0]
        .wait_log(
            "1 TCP connection(s) it opened before the tracer attached",
            WAIT,
        )
        .expect("the idle connection was adopted");
    // Same connection (no reset): the header is inserted now.
    let r = n.relay("/headers", "");
    let tps = echoed_traceparents(&r.body);
    assert_eq!(tps.len(), 1);
    let (trace_id, client_span, _) = parts(&tps[0]);
    let t = wait_trace(&jaeger, &trace_id, 3);
    let b_server = by_service(&t, "node-b", "SPAN_KIND_SERVER");
    assert_eq!(b_server.len(), 1, "{t:#?}");
    assert_eq!(
        b_server[0].parent_span_id.as_deref(),
        Some(client_span.as_str())
    );
}
