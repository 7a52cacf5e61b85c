//! Socket probes (`--socket-probes`): the real tracer binary counts a traced Go server's TCP
//! bytes in the kernel, reports them as self-metrics, and puts the bytes moved while each
//! request was served on its server span (read back from a real Jaeger).
//!
//! The path under test follows the kernel: kprobes where the kernel has them (e.g. a Debian
//! kernel under qemu), else the `sock:sock_{send,recv}_length` tracepoints (this project's
//! hardened VMs: no kprobes). Either way the counts must match what the test sent.

use std::{collections::BTreeMap, time::Duration};

use kraken_tracer::{
    features::Features,
    socket::{ATTR_BYTES_RECEIVED, ATTR_BYTES_SENT, Plan, SocketProbes, Support, choose},
};
use tracer_it::{
    Fixture, TracerProcess, fixture, http,
    jaeger::{Jaeger, Span},
    procstat, tracer_bin, wait_until,
};

const WAIT: Duration = Duration::from_secs(60);
/// Requests made, each posting `BODY` bytes and asking for `RESPONSE` bytes back.
const REQUESTS: u64 = 3;
const BODY: u64 = 256 * 1024;
const RESPONSE: u64 = 1024 * 1024;
/// Headers and request/status lines of one request or response, at most (they are ~100–250
/// bytes here): what the process-wide counters may hold beyond the payloads.
const HEADERS: u64 = 1024;
/// Go's server reads a connection through a 4 KiB bufio.Reader: reading the request headers
/// (before the handler starts, so before the span) may take up to this much of the body along.
const READ_AHEAD: u64 = 4096;

/// The start-up line this kernel must give with `--socket-probes auto`.
fn expected_auto_line() -> &'static str {
    let support = Support::detect(&Features::detect());
    match choose(SocketProbes::Auto, &support) {
        Ok(Plan::Try(modes)) if modes.first() == Some(&kraken_tracer::socket::Mode::Kprobe) => {
            "socket probes: kprobe (tcp_sendmsg, tcp_cleanup_rbuf"
        }
        Ok(Plan::Try(_)) => {
            "socket probes: tracepoint (sock:sock_send_length, sock:sock_recv_length)"
        }
        other => panic!("this kernel offers no socket probes at all ({other:?})"),
    }
}

fn post_bytes(fx: &Fixture) -> http::Response {
    let body = vec![b'x'; BODY as usize];
    let r = http::request(
        fx.addr(),
        "POST",
        &format!("/bytes?n={RESPONSE}"),
        &[],
        &body,
        Duration::from_secs(30),
    )
    .expect("POST /bytes");
    assert_eq!(r.status, 200);
    assert_eq!(r.body.len() as u64, RESPONSE, "the fixture answers n bytes");
    r
}

fn metric(m: &BTreeMap<String, f64>, name: &str, pid: u32, direction: &str) -> u64 {
    procstat::get(
        m,
        &format!("{name}{{pid=\"{pid}\",direction=\"{direction}\"}}"),
    ) as u64
}

fn attr(span: &Span, key: &str) -> Option<u64> {
    span.attr(key).map(|v| {
        v.parse()
            .unwrap_or_else(|_| panic!("{key} is not a number: {v:?}"))
    })
}

fn bytes_spans(jaeger: &Jaeger, service: &str) -> Vec<Span> {
    let traces = jaeger
        .wait_for_traces(service, REQUESTS as usize, WAIT)
        .expect("spans in Jaeger");
    traces
        .into_iter()
        .flat_map(|t| t.spans)
        .filter(|s| s.attr("url.path") == Some("/bytes"))
        .collect()
}

#[test]
fn counts_tcp_bytes_into_metrics_and_server_spans() {
    let features = Features::detect();
    let expected = expected_auto_line();
    if !features.kprobes {
        // This project's VMs: no kprobes, so the fallback must be the one in use.
        assert!(expected.contains("tracepoint"), "{expected}");
    }
    let jaeger = Jaeger::start().unwrap();
    let fx = Fixture::http(&fixture("httpserver", false)).unwrap();
    let service = "socket-probes-auto";
    let mut tracer = TracerProcess::start(
        &[fx.pid],
        &[
            "--sample-ratio",
            "1",
            "--otlp-endpoint",
            &jaeger.otlp_grpc,
            "--service-name",
            service,
            "--metrics-addr",
            "127.0.0.1:0",
            "--socket-probes",
            "auto",
        ],
    )
    .unwrap();
    let log = tracer.log_text();
    let lines: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("socket probes: "))
        .collect();
    assert_eq!(lines.len(), 1, "exactly one socket-probes line:\n{log}");
    assert!(lines[0].contains(expected), "want {expected:?}:\n{log}");
    let metrics = procstat::metrics_addr(&mut tracer).unwrap();

    for _ in 0..REQUESTS {
        post_bytes(&fx);
    }

    // The kernel counters reach the metrics within one refresh (500 ms): wait for them.
    let mut m = BTreeMap::new();
    let counted = wait_until(WAIT, || {
        m = procstat::scrape(metrics, Duration::from_secs(5)).unwrap_or_default();
        metric(&m, "kraken_tracer_socket_bytes_total", fx.pid, "sent") >= REQUESTS * RESPONSE
            && metric(&m, "kraken_tracer_socket_bytes_total", fx.pid, "received") >= REQUESTS * BODY
    });
    assert!(
        counted,
        "socket byte counters never reached the payloads: {m:#?}"
    );
    let received = metric(&m, "kraken_tracer_socket_bytes_total", fx.pid, "received");
    let sent = metric(&m, "kraken_tracer_socket_bytes_total", fx.pid, "sent");
    // Nothing else talks to the fixture: payloads plus headers, never more.
    assert!(
        received <= REQUESTS * (BODY + HEADERS),
        "received {received} > {} payload + headers",
        REQUESTS * BODY
    );
    assert!(
        sent <= REQUESTS * (RESPONSE + HEADERS),
        "sent {sent} > {} payload + headers",
        REQUESTS * RESPONSE
    );
    eprintln!("metrics: received {received}, sent {sent}");
    let calls = metric(&m, "kraken_tracer_socket_calls_total", fx.pid, "received");
    assert!(calls >= REQUESTS, "receive calls {calls}");
    let mode = if expected.contains("kprobe") {
        "kprobe"
    } else {
        "tracepoint"
    };
    assert_eq!(
        procstat::get(
            &m,
            &format!("kraken_tracer_socket_probes_info{{mode=\"{mode}\"}}")
        ),
        1.0,
        "{m:#?}"
    );

    let (status, log) = tracer.stop().unwrap();
    assert!(status.success(), "tracer failed:\n{log}");
    let spans = bytes_spans(&jaeger, service);
    assert_eq!(spans.len() as u64, REQUESTS, "{spans:#?}");
    for s in &spans {
        let rx = attr(s, ATTR_BYTES_RECEIVED).expect("bytes_received attribute");
        let tx = attr(s, ATTR_BYTES_SENT).expect("bytes_sent attribute");
        eprintln!("server span: {ATTR_BYTES_RECEIVED}={rx} {ATTR_BYTES_SENT}={tx}");
        // Received: the body, less what Go read along with the headers before the handler.
        assert!(
            (BODY - READ_AHEAD..=BODY).contains(&rx),
            "bytes_received {rx} not within [{}, {BODY}]",
            BODY - READ_AHEAD
        );
        // Sent: the whole response (written in one call by the handler) and its headers.
        assert!(
            (RESPONSE..=RESPONSE + HEADERS).contains(&tx),
            "bytes_sent {tx} not within [{RESPONSE}, {}]",
            RESPONSE + HEADERS
        );
    }
}

#[test]
fn forcing_kprobes_without_them_is_a_one_line_error() {
    if Features::detect().kprobes {
        eprintln!("skipping: this kernel has kprobes (the error path needs a kernel without)");
        return;
    }
    let fx = Fixture::http(&fixture("httpserver", false)).unwrap();
    let pid = fx.pid.to_string();
    let mut tracer =
        TracerProcess::spawn(&["--pid", &pid, "--no-export", "--socket-probes", "kprobe"]).unwrap();
    let status = tracer.wait_exit(WAIT).expect("the tracer exits by itself");
    assert!(!status.success());
    let log = tracer.log_text();
    let errors: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("kraken-tracer: error"))
        .collect();
    assert_eq!(errors.len(), 1, "one error line:\n{log}");
    assert!(
        errors[0].starts_with(
            "kraken-tracer: error: --socket-probes kprobe: this kernel has no kprobes ("
        ) && errors[0].ends_with("use --socket-probes auto, tracepoint or off"),
        "{log}"
    );
    // It fails before attaching anything.
    assert!(!log.contains(&format!("attached pid {pid}")), "{log}");
}

#[test]
fn off_means_no_counting_and_no_span_attributes() {
    let jaeger = Jaeger::start().unwrap();
    let fx = Fixture::http(&fixture("httpserver", false)).unwrap();
    let service = "socket-probes-off";
    let mut tracer = TracerProcess::start(
        &[fx.pid],
        &[
            "--sample-ratio",
            "1",
            "--otlp-endpoint",
            &jaeger.otlp_grpc,
            "--service-name",
            service,
            "--metrics-addr",
            "127.0.0.1:0",
            "--socket-probes",
            "off",
        ],
    )
    .unwrap();
    assert!(
        tracer
            .log_text()
            .contains("socket probes: off (--socket-probes off)"),
        "{}",
        tracer.log_text()
    );
    let metrics = procstat::metrics_addr(&mut tracer).unwrap();
    for _ in 0..REQUESTS {
        post_bytes(&fx);
    }
    let m = procstat::scrape(metrics, Duration::from_secs(5)).unwrap();
    assert_eq!(
        procstat::get(&m, "kraken_tracer_socket_probes_info{mode=\"off\"}"),
        1.0
    );
    assert_eq!(procstat::sum(&m, "kraken_tracer_socket_bytes_total"), 0.0);
    let (status, log) = tracer.stop().unwrap();
    assert!(status.success(), "tracer failed:\n{log}");
    let spans = bytes_spans(&jaeger, service);
    assert_eq!(spans.len() as u64, REQUESTS);
    for s in &spans {
        assert_eq!(s.attr(ATTR_BYTES_RECEIVED), None, "{s:#?}");
        assert_eq!(s.attr(ATTR_BYTES_SENT), None, "{s:#?}");
        // The span itself is complete.
        assert_eq!(s.attr("http.response.status_code"), Some("200"));
    }
}

#[test]
fn flag_env_and_config_file_reach_the_effective_config() {
    let print = |args: &[&str], env: Option<&str>| {
        let mut cmd = std::process::Command::new(tracer_bin());
        cmd.args(["config", "--print"]).args(args);
        cmd.env_remove("KRAKEN_TRACER_SOCKET_PROBES");
        if let Some(v) = env {
            cmd.env("KRAKEN_TRACER_SOCKET_PROBES", v);
        }
        let out = cmd.output().expect("kraken-tracer config --print");
        assert!(out.status.success(), "{out:?}");
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let has = |text: &str, line: &str| text.lines().any(|l| l == line);
    let text = print(&[], None);
    assert!(has(&text, "socket-probes = \"off\"  # default"), "{text}");
    let text = print(&["--socket-probes", "tracepoint"], Some("off"));
    assert!(
        has(&text, "socket-probes = \"tracepoint\"  # cli"),
        "{text}"
    );
    let text = print(&[], Some("auto"));
    assert!(
        has(
            &text,
            "socket-probes = \"auto\"  # env KRAKEN_TRACER_SOCKET_PROBES"
        ),
        "{text}"
    );
    let file = std::env::temp_dir().join(format!(
        "kraken-tracer-socket-probes-{}.toml",
        std::process::id()
    ));
    std::fs::write(&file, "socket-probes = \"kprobe\"\n").unwrap();
    let text = print(&["--config", &file.display().to_string()], None);
    let _ = std::fs::remove_file(&file);
    assert!(has(&text, "socket-probes = \"kprobe\"  # file"), "{text}");
    let out = std::process::Command::new(tracer_bin())
        .args(["config", "--print", "--socket-probes", "sometimes"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("--socket-probes"),
        "{out:?}"
    );
}
