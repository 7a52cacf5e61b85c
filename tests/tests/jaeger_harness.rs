//! The Jaeger harness itself: a real Jaeger v2 (built by `cargo xtask setup`) takes one span
//! over OTLP/HTTP JSON and gives it back, unchanged, through its query API.

use std::{
    collections::BTreeMap,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use tracer_it::jaeger::{self, Jaeger};

#[test]
fn span_round_trips_through_jaeger() {
    let jaeger = Jaeger::start().expect("start Jaeger");
    // Unique ids per run (the store is fresh anyway, but a reused id would hide a mix-up).
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap();
    let nanos = u64::try_from(now.as_nanos()).unwrap();
    let trace_id = format!("4b7261{:026x}", nanos);
    let span_id = format!("{:016x}", nanos ^ 0x5a5a_5a5a_5a5a_5a5a);
    let parent_id = "00f067aa0ba902b7";
    let start = nanos - 2_000_000;
    let end = nanos;
    let body = format!(
        r#"{{"resourceSpans":[{{
            "resource":{{"attributes":[
                {{"key":"service.name","value":{{"stringValue":"harness-check"}}}},
                {{"key":"host.name","value":{{"stringValue":"ci"}}}}]}},
            "scopeSpans":[{{"scope":{{"name":"kraken-tracer"}},"spans":[{{
                "traceId":"{trace_id}","spanId":"{span_id}","parentSpanId":"{parent_id}",
                "name":"GET /blobs/:digest","kind":2,
                "startTimeUnixNano":"{start}","endTimeUnixNano":"{end}",
                "attributes":[
                    {{"key":"http.request.method","value":{{"stringValue":"GET"}}}},
                    {{"key":"http.response.status_code","value":{{"intValue":"404"}}}},
                    {{"key":"kraken.cache_hit","value":{{"boolValue":false}}}},
                    {{"key":"ratio","value":{{"doubleValue":0.25}}}}],
                "status":{{"code":2,"message":"not found"}}}}]}}]}}]}}"#
    );
    jaeger.post_otlp_json(&body).expect("export the span");

    let traces = jaeger
        .wait_for_traces("harness-check", 1, Duration::from_secs(20))
        .expect("the span comes back");
    assert_eq!(traces.len(), 1, "{traces:#?}");
    let trace = &traces[0];
    assert_eq!(trace.trace_id, trace_id);
    assert_eq!(trace.spans.len(), 1, "{trace:#?}");
    let span = &trace.spans[0];
    assert_eq!(span.trace_id, trace_id);
    assert_eq!(span.span_id, span_id);
    assert_eq!(span.parent_span_id.as_deref(), Some(parent_id));
    assert_eq!(span.name, "GET /blobs/:digest");
    assert_eq!(span.kind, "SPAN_KIND_SERVER");
    assert_eq!((span.start_unix_nano, span.end_unix_nano), (start, end));
    assert_eq!(span.duration(), Duration::from_millis(2));
    let expected: BTreeMap<String, String> = [
        ("http.request.method", "GET"),
        ("http.response.status_code", "404"),
        ("kraken.cache_hit", "false"),
        ("ratio", "0.25"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect();
    assert_eq!(span.attributes, expected);
    assert_eq!(span.status_code, "STATUS_CODE_ERROR");
    assert_eq!(span.status_message, "not found");
    assert_eq!(span.service_name, "harness-check");
    assert_eq!(
        span.resource.get("host.name").map(String::as_str),
        Some("ci")
    );
    assert_eq!(span.scope, "kraken-tracer");

    assert!(
        jaeger
            .services()
            .unwrap()
            .contains(&"harness-check".to_owned())
    );
    let by_id = jaeger.trace(&trace_id).unwrap().expect("trace by id");
    assert_eq!(&by_id, trace);
    assert!(jaeger.trace(&"ab".repeat(16)).unwrap().is_none());
    // A window that ends before the span started finds nothing.
    let later = SystemTime::now() + Duration::from_secs(30);
    assert!(jaeger.traces("harness-check", later).unwrap().is_empty());
}

#[test]
fn two_instances_run_side_by_side() {
    let a = Jaeger::start().expect("first Jaeger");
    let b = Jaeger::start().expect("second Jaeger");
    assert_ne!(a.query, b.query);
    assert_ne!(a.otlp_grpc, b.otlp_grpc);
    assert_ne!(a.otlp_http, b.otlp_http);
    assert!(a.services().unwrap().is_empty());
    assert!(b.services().unwrap().is_empty());
}

#[test]
fn parses_streamed_chunks_and_enum_names() {
    // api_v3 may stream one {"result":…} object per chunk, and OTLP JSON allows enum names.
    let chunk = |trace: &str, span: &str, start: u64| {
        format!(
            r#"{{"result":{{"resourceSpans":[{{"resource":{{"attributes":[
                {{"key":"service.name","value":{{"stringValue":"svc"}}}}]}},
                "scopeSpans":[{{"spans":[{{"traceId":"{trace}","spanId":"{span}",
                "parentSpanId":"","name":"n","kind":"SPAN_KIND_CLIENT",
                "startTimeUnixNano":"{start}","endTimeUnixNano":"{start}",
                "attributes":[{{"key":"l","value":{{"arrayValue":{{"values":[
                    {{"stringValue":"a"}},{{"intValue":"2"}}]}}}}}}],
                "status":{{"code":"STATUS_CODE_OK"}}}}]}}]}}]}}}}"#
        )
    };
    let t1 = "0af7651916cd43dd8448eb211c80319c";
    let body = [
        chunk(t1, "b7ad6b7169203331", 20),
        chunk("0af7651916cd43dd8448eb211c80319d", "b7ad6b7169203332", 5),
        chunk(t1, "b7ad6b7169203330", 10),
    ]
    .join("\n");
    let traces = jaeger::parse_traces(body.as_bytes()).unwrap();
    assert_eq!(traces.len(), 2);
    assert_eq!(traces[1].trace_id, t1);
    let ids: Vec<&str> = traces[1].spans.iter().map(|s| s.span_id.as_str()).collect();
    assert_eq!(ids, ["b7ad6b7169203330", "b7ad6b7169203331"]);
    let s = &traces[1].spans[0];
    assert_eq!(s.parent_span_id, None);
    assert_eq!(s.kind, "SPAN_KIND_CLIENT");
    assert_eq!(s.status_code, "STATUS_CODE_OK");
    assert_eq!(s.attr("l"), Some(r#"["a","2"]"#));
    assert_eq!(traces[1].roots().count(), 2);
    assert!(jaeger::parse_traces(br#"{"error":{"httpCode":500,"message":"x"}}"#).is_err());
}

#[test]
fn helpers() {
    assert_eq!(
        jaeger::rfc3339(UNIX_EPOCH),
        "1970-01-01T00:00:00.000000000Z"
    );
    assert_eq!(
        jaeger::rfc3339(UNIX_EPOCH + Duration::new(1_795_530_048, 123_456_789)),
        "2026-11-24T14:20:48.123456789Z"
    );
    assert_eq!(
        jaeger::rfc3339(UNIX_EPOCH + Duration::from_secs(951_782_400)),
        "2000-02-29T00:00:00.000000000Z"
    );
    assert_eq!(
        jaeger::dechunk(b"3\r\nabc\r\n2;x=y\r\nde\r\n0\r\n\r\n").unwrap(),
        b"abcde"
    );
}
