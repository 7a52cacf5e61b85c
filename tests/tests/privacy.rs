//! Privacy: what leaves the traced process. By default the kernel copies the request path,
//! never the query string (it often carries tokens), no request body and no header value but
//! `traceparent`; `--capture-query` opts in to the query, exported as `url.query`.

use std::time::Duration;

use tracer_it::{Fixture, TracerProcess, fixture, http, wait_until};

const SECRET: &str = "token=hunter2";

fn traced_output(extra: &[&str]) -> String {
    let fx = Fixture::http(&fixture("httpserver", false)).unwrap();
    let mut args = vec!["--no-export", "--sample-ratio", "1", "--events", "--stdout"];
    args.extend_from_slice(extra);
    let tracer = TracerProcess::start(&[fx.pid], &args).unwrap();
    let r = http::request(
        fx.addr(),
        "POST",
        &format!("/hello?{SECRET}"),
        &[
            ("Authorization", "Bearer hunter2"),
            ("X-Api-Key", "hunter2"),
        ],
        b"password=hunter2",
        Duration::from_secs(10),
    )
    .unwrap();
    assert_eq!(r.status, 200);
    assert!(
        wait_until(Duration::from_secs(30), || tracer
            .stdout_text()
            .contains("url.path=/hello")),
        "no span:\n{}",
        tracer.stdout_text()
    );
    let out = tracer.stdout_text();
    let (status, log) = tracer.stop().unwrap();
    assert!(status.success(), "{log}");
    out
}

#[test]
fn no_query_body_or_header_value_leaves_the_kernel_by_default() {
    let out = traced_output(&[]);
    // The raw event line (--events) prints what the kernel copied: no query at all.
    let serve = out
        .lines()
        .find(|l| l.contains("/hello") && !l.contains("url.path"))
        .unwrap_or_else(|| panic!("no raw event:\n{out}"));
    assert!(!serve.contains('?'), "the kernel copied a query: {serve}");
    assert!(
        !out.contains("hunter2"),
        "a secret reached user space:\n{out}"
    );
    assert!(!out.contains("url.query"), "{out}");
}

#[test]
fn capture_query_is_opt_in() {
    let out = traced_output(&["--capture-query"]);
    assert!(
        out.contains("?<redacted>"),
        "the raw event shows a query:\n{out}"
    );
    assert!(out.contains(&format!("url.query={SECRET}")), "{out}");
    // Still never a body or another header's value.
    assert_eq!(out.matches("hunter2").count(), 1, "{out}");
}
