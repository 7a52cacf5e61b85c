//! The Kraken download across three simulated nodes (network namespaces: agent / tracker /
//! origin + testfs + build-index + proxy), each node traced by its OWN kraken-tracer process,
//! all exporting to one Jaeger: the download must be ONE trace, its parent links crossing
//! tracer processes through the `traceparent` each tracer inserts (Kraken propagates nothing;
//! nginx sits in front of tracker and origin).

use std::{
    collections::{BTreeMap, BTreeSet},
    time::Duration,
};

use tracer_it::{
    TracerProcess,
    jaeger::{Jaeger, Span, Trace},
    kraken::{self, Cluster, Component},
};

const WAIT: Duration = Duration::from_secs(60);

fn trace_node(cluster: &Cluster, jaeger: &Jaeger, components: &[Component]) -> TracerProcess {
    cluster
        .trace(components, &["--otlp-endpoint", &jaeger.otlp_grpc])
        .expect("attach a node's tracer")
}

#[test]
fn kraken_download_across_three_nodes_is_one_trace() {
    let cluster = Cluster::start_on_nodes().expect("start Kraken on three nodes");
    let jaeger = Jaeger::start().expect("start Jaeger");
    let tracers = [
        trace_node(&cluster, &jaeger, &[Component::Agent]),
        trace_node(&cluster, &jaeger, &[Component::Tracker]),
        trace_node(&cluster, &jaeger, &[Component::Origin, Component::Testfs]),
    ];

    let blob = kraken::random_bytes(1 << 20).unwrap();
    let digest = cluster.upload_to_testfs(&blob).unwrap();
    assert_eq!(cluster.download_via_agent("testfs", &digest).unwrap(), blob);

    let agent = jaeger.wait_for_traces("kraken-agent", 2, WAIT).unwrap();
    let blob_path = format!("/namespace/testfs/blobs/sha256:{digest}");
    let (trace_id, download_id) = agent
        .iter()
        .flat_map(|t| t.spans.iter())
        .find(|s| s.kind == "SPAN_KIND_SERVER" && s.attr("url.path") == Some(&blob_path))
        .map(|s| (s.trace_id.clone(), s.span_id.clone()))
        .expect("the agent's download span");

    // Wait until the other nodes' spans of that trace (exported by other tracers, on their
    // own schedule) are in: the tracker's metainfo and announce, the origin's metainfo.
    let mut trace: Option<Trace> = None;
    let complete = tracer_it::wait_until(WAIT, || {
        let t = jaeger.trace(&trace_id).ok().flatten();
        let done = t.as_ref().is_some_and(|t| {
            let services: BTreeSet<&str> =
                t.spans.iter().map(|s| s.service_name.as_str()).collect();
            services.contains("kraken-tracker")
                && services.contains("kraken-origin")
                && t.spans.iter().any(|s| s.name == "tracker.announce")
        });
        trace = t;
        done
    });
    let trace = trace.expect("the download's trace");
    assert!(
        complete,
        "the download's trace never held the tracker's and origin's spans: {trace:#?}\n\
         tracer logs:\n{}",
        tracers
            .iter()
            .map(TracerProcess::log_text)
            .collect::<Vec<_>>()
            .join("\n---\n")
    );

    let by_id: BTreeMap<&str, &Span> = trace
        .spans
        .iter()
        .map(|s| (s.span_id.as_str(), s))
        .collect();
    // Whole: every parent named in the trace is in it, and there is one root, the download.
    for s in &trace.spans {
        if let Some(p) = s.parent_span_id.as_deref() {
            assert!(
                by_id.contains_key(p),
                "{} ({}) has a parent {p} missing from the trace: {trace:#?}",
                s.name,
                s.service_name
            );
        }
    }
    let roots: Vec<&Span> = trace.roots().collect();
    assert_eq!(roots.len(), 1, "{trace:#?}");
    assert_eq!(roots[0].span_id, download_id);

    // Each server span on the tracker and origin nodes is the child of a client span of
    // another service: the parent link crossed tracer processes.
    let mut crossings = 0;
    for s in trace
        .spans
        .iter()
        .filter(|s| s.kind == "SPAN_KIND_SERVER" && s.span_id != download_id)
    {
        let parent = by_id[s.parent_span_id.as_deref().expect("a parent")];
        assert_eq!(parent.kind, "SPAN_KIND_CLIENT", "{s:#?}");
        assert_ne!(parent.service_name, s.service_name, "{s:#?}");
        crossings += 1;
    }
    assert!(crossings >= 3, "{crossings} crossings: {trace:#?}");

    // The announce, sent by the agent's scheduler goroutine: its request carried the
    // download's context (the kernel's digest link), so the tracker's span is in this trace,
    // under the agent's announce.request.
    let announce = trace
        .spans
        .iter()
        .find(|s| s.name == "tracker.announce")
        .expect("tracker.announce");
    let announce_client = by_id[announce.parent_span_id.as_deref().expect("parent")];
    assert_eq!(announce_client.name, "announce.request");
    assert_eq!(announce_client.service_name, "kraken-agent");
    // The tracker's metainfo call to the origin is under the tracker's own server span.
    let origin_metainfo = trace
        .spans
        .iter()
        .find(|s| s.service_name == "kraken-origin" && s.kind == "SPAN_KIND_SERVER")
        .expect("the origin's server span");
    let via = by_id[origin_metainfo.parent_span_id.as_deref().expect("parent")];
    assert_eq!(via.service_name, "kraken-tracker");

    for t in tracers {
        let (status, log) = t.stop().expect("stop a tracer");
        assert!(status.success(), "{log}");
        assert!(
            log.contains("propagation: sk_msg"),
            "propagation was on: {log}"
        );
    }
    cluster.check_alive().expect("Kraken survived being traced");
}
