//! The tracer on a real Kraken cluster (v0.1.29 built from the Go module proxy, nginx in front):
//! a blob download through the agent, traced with the generic Go net/http probes and read back
//! from a real Jaeger. (The seed's Kraken-specific spans are a later layer on top of these.)

use std::time::Duration;

use tracer_it::{
    jaeger::{Jaeger, Span, Trace},
    kraken::{self, Cluster, Component},
};

const WAIT: Duration = Duration::from_secs(60);

fn assert_nested(child: &Span, parent: &Span) {
    assert!(
        child.start_unix_nano >= parent.start_unix_nano
            && child.end_unix_nano <= parent.end_unix_nano,
        "{} not inside {}",
        child.name,
        parent.name
    );
}

fn find(traces: &[Trace], pred: impl Fn(&Span) -> bool) -> Vec<(&Trace, &Span)> {
    traces
        .iter()
        .flat_map(|t| t.spans.iter().map(move |s| (t, s)))
        .filter(|(_, s)| pred(s))
        .collect()
}

#[test]
fn kraken_blob_download_is_traced() {
    let cluster = Cluster::start().expect("start the Kraken cluster");
    let jaeger = Jaeger::start().expect("start Jaeger");
    let tracer = cluster
        .trace(
            &[Component::Agent, Component::Origin, Component::Tracker],
            &["--stdout", "--otlp-endpoint", &jaeger.otlp_grpc],
        )
        .expect("attach to Kraken");

    let blob = kraken::random_bytes(1 << 20).unwrap();
    let digest = cluster.upload_to_testfs(&blob).unwrap();
    assert_eq!(cluster.download_via_agent("testfs", &digest).unwrap(), blob);
    // Health checks are Kraken's periodic noise: traced, but never exported as root traces.
    assert_eq!(
        tracer_it::request(cluster.addr(Component::Agent), "GET", "/health").unwrap(),
        200
    );
    // Again: now from the agent's cache.
    assert_eq!(cluster.download_via_agent("testfs", &digest).unwrap(), blob);
    assert!(
        tracer_it::wait_until(WAIT, || tracer
            .stdout_text()
            .contains("agent.download_blob")),
        "the download's trace was not printed"
    );
    let trees = tracer.stdout_text();
    let (status, log) = tracer.stop().unwrap();
    assert!(status.success(), "{log}");
    eprintln!("{trees}");
    cluster.check_alive().expect("Kraken survived being traced");

    // Agent: the download is one SERVER span with its tracker metainfo calls as children.
    let agent = jaeger.wait_for_traces("kraken-agent", 2, WAIT).unwrap();
    let blob_path = format!("/namespace/testfs/blobs/sha256:{digest}");
    let downloads = find(&agent, |s| {
        s.kind == "SPAN_KIND_SERVER" && s.attributes.get("url.path") == Some(&blob_path)
    });
    assert_eq!(downloads.len(), 2, "one span per download");
    let (trace, download) = downloads
        .iter()
        .copied()
        .min_by_key(|(_, s)| s.start_unix_nano)
        .unwrap();
    let (cached_trace, cached) = downloads
        .iter()
        .copied()
        .max_by_key(|(_, s)| s.start_unix_nano)
        .unwrap();

    // agent.download_blob.complete: when the blob entered the agent's cache, with its size.
    let first_complete = trace
        .spans
        .iter()
        .find(|s| s.name == "agent.download_blob.complete")
        .expect("agent.download_blob.complete in the first download's trace");
    assert_eq!(
        first_complete.parent_span_id.as_deref(),
        Some(download.span_id.as_str())
    );
    assert_eq!(first_complete.kind, "SPAN_KIND_INTERNAL");
    assert_eq!(
        first_complete.attributes["kraken.size"],
        (1u32 << 20).to_string()
    );
    assert_eq!(first_complete.attributes["kraken.cache_hit"], "false");
    assert!(first_complete.end_unix_nano > first_complete.start_unix_nano);
    assert!(first_complete.end_unix_nano <= download.end_unix_nano);
    // The second download came from the cache: no tracker, origin or backend work.
    let cached_complete = cached_trace
        .spans
        .iter()
        .find(|s| s.name == "agent.download_blob.complete")
        .expect("agent.download_blob.complete in the cached download's trace");
    assert_eq!(cached_complete.attributes["kraken.cache_hit"], "true");
    assert!(
        cached_trace
            .spans
            .iter()
            .all(|s| s.service_name == "kraken-agent"),
        "a cached download touches no other component: {cached_trace:?}"
    );
    assert!(
        cached_trace
            .spans
            .iter()
            .all(|s| !s.attributes.contains_key("url.full")),
        "no client calls"
    );
    assert_eq!(cached.attributes["http.response.status_code"], "200");
    assert_eq!(download.attributes["http.response.status_code"], "200");
    assert_eq!(download.name, "agent.download_blob");
    assert_eq!(
        download.attributes["http.route"],
        "/namespace/{namespace}/blobs/{digest}"
    );
    assert_eq!(download.attributes["kraken.namespace"], "testfs");
    assert_eq!(
        download.attributes["kraken.digest"],
        format!("sha256:{digest}")
    );
    assert_eq!(
        download.attributes["client.address"], "127.0.0.1",
        "the agent API is plain TCP"
    );
    let metainfo: Vec<&Span> = trace
        .spans
        .iter()
        .filter(|s| s.parent_span_id.as_deref() == Some(download.span_id.as_str()))
        .filter(|s| s.kind == "SPAN_KIND_CLIENT" && s.name != "announce.request")
        .collect();
    assert!(
        !metainfo.is_empty(),
        "no client calls under the download: {trace:?}"
    );
    for m in &metainfo {
        assert_eq!(m.kind, "SPAN_KIND_CLIENT");
        assert!(
            m.attributes["url.full"].ends_with(&format!("{blob_path}/metainfo")),
            "{m:?}"
        );
        assert!(
            m.start_unix_nano >= download.start_unix_nano
                && m.end_unix_nano <= download.end_unix_nano
        );
    }
    assert_eq!(
        metainfo.last().unwrap().attributes["http.response.status_code"],
        "200"
    );

    // One node, one tracer: the processes it traces are linked by request (method + path as
    // sent, through nginx), so the download is ONE trace: agent → tracker → origin → testfs.
    let services: std::collections::BTreeSet<&str> = trace
        .spans
        .iter()
        .map(|s| s.service_name.as_str())
        .collect();
    assert_eq!(
        services,
        ["kraken-agent", "kraken-origin", "kraken-tracker"]
            .into_iter()
            .collect(),
        "{trace:?}"
    );
    let by_id: std::collections::BTreeMap<&str, &Span> = trace
        .spans
        .iter()
        .map(|s| (s.span_id.as_str(), s))
        .collect();
    // Each metainfo call that reached the tracker has the tracker's server span as its child
    // (nginx in front of the tracker answers some repeats from its cache: those have none).
    let mut reached = 0;
    for m in &metainfo {
        let Some(served) = trace
            .spans
            .iter()
            .find(|s| s.parent_span_id.as_deref() == Some(m.span_id.as_str()))
        else {
            continue;
        };
        reached += 1;
        assert_eq!(served.service_name, "kraken-tracker");
        assert_eq!(served.kind, "SPAN_KIND_SERVER");
        assert_eq!(
            served.attributes["http.response.status_code"],
            m.attributes["http.response.status_code"]
        );
        assert!(
            served.start_unix_nano >= m.start_unix_nano && served.end_unix_nano <= m.end_unix_nano
        );
    }
    assert!(
        reached >= 1,
        "no metainfo call linked to the tracker: {trace:?}"
    );
    let backend_stat = trace
        .spans
        .iter()
        .find(|s| s.attributes.get("http.request.method").map(String::as_str) == Some("HEAD"))
        .expect("the origin's backend stat is in the download's trace");
    // HEAD testfs ← origin metainfo (server) ← tracker → origin (client) ← tracker metainfo ← …
    let mut chain = vec![backend_stat.service_name.as_str()];
    let mut at = backend_stat;
    while let Some(parent) = at.parent_span_id.as_deref().and_then(|p| by_id.get(p)) {
        chain.push(parent.service_name.as_str());
        at = parent;
    }
    assert_eq!(
        at.span_id, download.span_id,
        "the chain ends at the download: {chain:?}"
    );

    assert!(
        find(&agent, |s| s.attributes.get("url.path").map(String::as_str)
            == Some("/health"))
        .is_empty(),
        "a health check reached Jaeger"
    );
    // Health checks never leave the kernel (a 0 % path rule): none reach user space at all.
    assert!(
        log.contains(" 0 health/readiness checks unsampled"),
        "{log}"
    );
    let dropped: u64 = log
        .split("dropped by path rules ")
        .nth(1)
        .and_then(|r| r.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    assert!(
        dropped >= 1,
        "the health check was not dropped in the kernel:\n{log}"
    );

    // Tracker: announces served; behind nginx the peer is a unix socket.
    let tracker = jaeger.wait_for_traces("kraken-tracker", 1, WAIT).unwrap();
    let announces = find(&tracker, |s| {
        s.kind == "SPAN_KIND_SERVER"
            && s.attributes
                .get("url.path")
                .is_some_and(|p| p.starts_with("/announce/"))
    });
    assert!(!announces.is_empty(), "no announce served");
    for (_, a) in &announces {
        assert_eq!(a.name, "tracker.announce");
        assert_eq!(a.attributes["http.route"], "/announce/{infohash}");
        assert_eq!(a.attributes["kraken.info_hash"].len(), 40);
        assert_eq!(a.attributes["http.request.method"], "POST");
        assert_eq!(
            a.attributes.get("network.transport").map(String::as_str),
            Some("unix")
        );
        assert!(!a.attributes.contains_key("client.address"));
    }

    // The origin's backend fetch, in the same trace: origin.blob_refresh (under the origin's
    // metainfo handler) → cache.write (on the dedup worker) → backend.download (testfs GET).
    let named = |n: &str| -> &Span {
        trace
            .spans
            .iter()
            .find(|s| s.name == n)
            .unwrap_or_else(|| panic!("no {n} in the download's trace: {trace:?}"))
    };
    let refresh = named("origin.blob_refresh");
    let write = named("cache.write");
    let backend = named("backend.download");
    assert_eq!(refresh.service_name, "kraken-origin");
    let refresh_parent = trace
        .spans
        .iter()
        .find(|s| Some(s.span_id.as_str()) == refresh.parent_span_id.as_deref())
        .expect("origin.blob_refresh has its parent in the trace");
    assert!(
        refresh_parent.attributes["url.path"].ends_with("/metainfo"),
        "{refresh_parent:?}"
    );
    assert_eq!(
        write.parent_span_id.as_deref(),
        Some(refresh.span_id.as_str())
    );
    assert_eq!(
        backend.parent_span_id.as_deref(),
        Some(write.span_id.as_str())
    );
    assert_eq!(write.attributes["kraken.size"], (1u32 << 20).to_string());
    assert_eq!(backend.attributes["kraken.backend_type"], "testfs");
    assert_eq!(backend.attributes["kraken.backend_root"], "blobs");
    assert!(
        backend.attributes["kraken.duration_ms"]
            .parse::<u64>()
            .is_ok()
    );
    assert_eq!(write.attributes["kraken.cache_file"], digest);
    assert_eq!(
        backend.attributes["kraken.digest"],
        format!("sha256:{digest}")
    );
    assert_nested(backend, write);
    assert_nested(write, refresh);

    // Timestamps nest across the whole trace, across three processes: no span starts before its
    // parent; only Kraken's asynchronous work may end after its parent: the announces (they
    // outlive the download) and the origin's backend fetch (its handler answers 202 at once).
    const ASYNC: [&str; 2] = ["announce.request", "origin.blob_refresh"];
    for span in &trace.spans {
        let Some(parent) = span.parent_span_id.as_deref().and_then(|p| by_id.get(p)) else {
            continue;
        };
        assert!(
            span.start_unix_nano >= parent.start_unix_nano,
            "{} starts before {}",
            span.name,
            parent.name
        );
        if !ASYNC.contains(&span.name.as_str()) {
            assert!(
                span.end_unix_nano <= parent.end_unix_nano,
                "{} ends after {}",
                span.name,
                parent.name
            );
        }
    }

    // The agent's announces run on a scheduler goroutine, not the handler's: the announcer
    // probe ties them to the download by digest, and the tracker's side is their child.
    let announce = trace
        .spans
        .iter()
        .find(|s| s.name == "announce.request")
        .unwrap_or_else(|| panic!("no announce.request in the download's trace: {trace:?}"));
    assert_eq!(
        announce.parent_span_id.as_deref(),
        Some(download.span_id.as_str())
    );
    assert_eq!(announce.kind, "SPAN_KIND_CLIENT");
    let tracker_side = trace
        .spans
        .iter()
        .find(|s| s.parent_span_id.as_deref() == Some(announce.span_id.as_str()))
        .expect("tracker.announce under announce.request");
    assert_eq!(tracker_side.name, "tracker.announce");
    assert_eq!(
        announce.attributes["kraken.digest"],
        format!("sha256:{digest}")
    );
    assert_eq!(
        tracker_side.attributes["kraken.digest"],
        format!("sha256:{digest}")
    );
    assert_eq!(tracker_side.service_name, "kraken-tracker");
    assert_eq!(
        tracker_side.attributes["kraken.info_hash"],
        announce.attributes["kraken.info_hash"]
    );
    // No raw digest in any span name (cardinality).
    for t in agent.iter().chain(&tracker) {
        assert!(
            t.spans.iter().all(|s| !s.name.contains(&digest)),
            "digest in a span name"
        );
    }

    // Origin: the metainfo request made it ask testfs (a HEAD child span).
    let origin = jaeger.wait_for_traces("kraken-origin", 2, WAIT).unwrap();
    let heads = find(&origin, |s| {
        s.kind == "SPAN_KIND_CLIENT"
            && s.attributes.get("http.request.method").map(String::as_str) == Some("HEAD")
            && s.attributes
                .get("url.full")
                .is_some_and(|u| u.ends_with(&format!("/files/blobs/{digest}")))
    });
    assert!(!heads.is_empty(), "no backend stat call");
    let (t, head) = heads[0];
    let parent = t
        .spans
        .iter()
        .find(|s| Some(s.span_id.as_str()) == head.parent_span_id.as_deref())
        .expect("parent");
    assert!(
        parent.attributes["url.path"].ends_with(&format!("sha256:{digest}/metainfo")),
        "{parent:?}"
    );
}
