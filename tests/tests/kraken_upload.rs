//! Uploads through Kraken, traced on a real cluster and read back from a real Jaeger:
//! - a Docker registry v2 push with skopeo through the proxy: per blob one trace
//!   `proxy.upload` → the proxy's POST/PATCH/PUT requests → the commit's calls to the origin →
//!   `origin.store_blob` with the origin's POST/PATCH/PUT as children → `backend.upload` (the
//!   origin's asynchronous writeback to testfs, linked by digest);
//! - a direct chunked upload to the origin: one `origin.store_blob` root with every request as
//!   its child;
//! - with two origins, the commit's duplicate to the replica: `origin.replicate` → requests →
//!   `origin.receive_replica` in the upload's trace;
//! - with two origins, a download through the agent: the origin that fetched the blob from the
//!   backend transfers it to the other (`origin.blob_refresh` → `origin.replicate` → requests →
//!   `origin.receive_replica`) in the download's trace.

use std::{collections::BTreeMap, fs, time::Duration};

use tracer_it::{
    http,
    jaeger::{Jaeger, Span, Trace},
    kraken::{self, Cluster, Component},
    oci::push_through_proxy,
};

const WAIT: Duration = Duration::from_secs(60);
const REPO: &str = "kraken-tracer/upload";

fn method(s: &Span) -> &str {
    s.attr("http.request.method").unwrap_or("")
}

/// The direct children of `parent` in `trace` of this kind, by HTTP method.
fn child_methods(trace: &Trace, parent: &Span, kind: &str) -> Vec<String> {
    let mut m: Vec<String> = trace
        .children(&parent.span_id)
        .filter(|s| s.kind == kind)
        .map(|s| method(s).to_owned())
        .collect();
    m.sort();
    m
}

/// The pushed image's blobs (`sha256:<hex>` → bytes) as the registry serves them back: the
/// manifest itself, and the config and layers it lists (skopeo compressed the layer on the way,
/// so the OCI layout's sizes are not the pushed ones).
fn pushed_sizes(cluster: &Cluster) -> BTreeMap<String, u64> {
    let r = http::request(
        cluster.addr(Component::Proxy),
        "GET",
        &format!("/v2/{REPO}/manifests/v1"),
        &[(
            "Accept",
            "application/vnd.docker.distribution.manifest.v2+json",
        )],
        &[],
        WAIT,
    )
    .expect("read the pushed manifest back");
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    let m: serde_json::Value = serde_json::from_slice(&r.body).expect("a JSON manifest");
    let mut sizes = BTreeMap::new();
    sizes.insert(
        format!("sha256:{}", kraken::sha256_hex(&r.body)),
        r.body.len() as u64,
    );
    let layers = m["layers"].as_array().expect("layers");
    assert!(!layers.is_empty(), "{m}");
    for d in layers.iter().chain([&m["config"]]) {
        let digest = d["digest"].as_str().expect("digest");
        let size = d["size"].as_u64().expect("size");
        sizes.insert(digest.to_owned(), size);
    }
    sizes
}

/// The size of the pushed blob `digest` (which must be one of the push's).
fn size_of_pushed(sizes: &BTreeMap<String, u64>, digest: &str) -> String {
    sizes
        .get(digest)
        .unwrap_or_else(|| panic!("{digest} is not a blob of the push: {sizes:?}"))
        .to_string()
}

/// The whole trace `id` once it holds every span in `names` (the exporters of the proxy and
/// origin send independently).
fn full_trace(jaeger: &Jaeger, id: &str, names: &[&str]) -> Trace {
    let mut last = None;
    let ok = tracer_it::wait_until(WAIT, || {
        last = jaeger.trace(id).ok().flatten();
        last.as_ref()
            .is_some_and(|t| names.iter().all(|n| t.span(n).is_some()))
    });
    let t = last.unwrap_or_else(|| panic!("trace {id} not in Jaeger"));
    assert!(ok, "trace {id} lacks one of {names:?}: {t:#?}");
    t
}

/// The first span of `service` in Jaeger that `pred` accepts (waited for), and its trace once
/// that trace holds a span of each of `names`.
fn trace_of_first(
    jaeger: &Jaeger,
    service: &str,
    pred: impl Fn(&Span) -> bool,
    names: &[&str],
) -> (Span, Trace) {
    let since = std::time::SystemTime::now() - Duration::from_secs(600);
    let first = || -> Option<Span> {
        jaeger
            .traces(service, since)
            .unwrap_or_default()
            .into_iter()
            .flat_map(|t| t.spans)
            .find(|s| pred(s))
    };
    assert!(tracer_it::wait_until(WAIT, || first().is_some()));
    let span = first().unwrap();
    let trace = full_trace(jaeger, &span.trace_id, names);
    (span, trace)
}

/// The trace as an indented tree (for the README), with the few attributes that matter.
fn render(trace: &Trace) -> String {
    fn walk(t: &Trace, s: &Span, depth: usize, out: &mut String) {
        let keys = [
            "kraken.repo",
            "kraken.namespace",
            "kraken.upload_id",
            "kraken.chunks",
            "kraken.size",
            "kraken.replicate",
            "kraken.replica",
            "kraken.tag",
            "kraken.remote",
            "kraken.digest",
            "kraken.backend_type",
            "http.response.status_code",
        ];
        let attrs: Vec<String> = keys
            .iter()
            .filter_map(|k| s.attr(k).map(|v| format!("{k}={v}")))
            .collect();
        out.push_str(&format!(
            "{}└─ {} [{}] {} {:.3} ms {}\n",
            "   ".repeat(depth),
            s.name,
            s.kind.trim_start_matches("SPAN_KIND_"),
            s.service_name,
            s.duration().as_secs_f64() * 1000.0,
            attrs.join(" ")
        ));
        let mut kids: Vec<&Span> = t.children(&s.span_id).collect();
        kids.sort_by_key(|k| k.start_unix_nano);
        for k in kids {
            walk(t, k, depth + 1, out);
        }
    }
    let mut out = String::new();
    for r in trace.roots() {
        walk(trace, r, 0, &mut out);
    }
    out
}

/// `origin.store_blob` of `digest` in `trace`: INTERNAL on the origin, its requests as direct
/// children, `size` bytes in its chunks, and the writeback to testfs (`backend.upload`) under it.
fn assert_store_blob<'t>(trace: &'t Trace, digest: &str, patches: usize, size: u64) -> &'t Span {
    let store = trace
        .spans
        .iter()
        .find(|s| s.name == "origin.store_blob" && s.attr("kraken.digest") == Some(digest))
        .unwrap_or_else(|| panic!("no origin.store_blob of {digest}: {trace:#?}"));
    assert_eq!(store.kind, "SPAN_KIND_INTERNAL");
    assert_eq!(store.service_name, "kraken-origin");
    assert_eq!(store.attr("kraken.replicate"), Some("true"));
    assert!(
        store
            .attr("kraken.upload_id")
            .is_some_and(|u| !u.is_empty())
    );
    assert_eq!(
        store.attr("kraken.chunks"),
        Some(patches.to_string().as_str())
    );
    assert_eq!(
        store.attr("kraken.size"),
        Some(size.to_string().as_str()),
        "the blob's size"
    );
    assert_patch_bodies(trace, store, size);
    let mut want = vec!["PATCH".to_owned(); patches];
    want.extend(["POST".to_owned(), "PUT".to_owned()]);
    want.sort();
    assert_eq!(
        child_methods(trace, store, "SPAN_KIND_SERVER"),
        want,
        "the upload's requests are children of origin.store_blob, not roots"
    );
    for r in trace
        .children(&store.span_id)
        .filter(|s| s.kind == "SPAN_KIND_SERVER")
    {
        assert!(
            r.start_unix_nano >= store.start_unix_nano && r.end_unix_nano <= store.end_unix_nano
        );
        assert_eq!(r.attr("kraken.upload_id").is_some(), method(r) != "POST");
    }
    let backend = trace
        .children(&store.span_id)
        .find(|s| s.name == "backend.upload")
        .unwrap_or_else(|| panic!("no backend.upload under origin.store_blob: {trace:#?}"));
    assert_eq!(backend.kind, "SPAN_KIND_CLIENT");
    assert_eq!(backend.attr("kraken.backend_type"), Some("testfs"));
    assert_eq!(backend.attr("kraken.backend_root"), Some("blobs"));
    assert_eq!(backend.attr("kraken.digest"), Some(digest));
    assert!(backend.attr("kraken.duration_ms").is_some());
    assert_eq!(backend.attr("http.response.status_code"), Some("200"));
    // Asynchronous: queued by the commit (it may run while the commit still duplicates).
    let commit = trace
        .children(&store.span_id)
        .find(|s| method(s) == "PUT")
        .unwrap();
    assert!(backend.start_unix_nano >= commit.start_unix_nano);
    store
}

/// The upload's chunks (its PATCH children) carried `size` bytes between them, each request's
/// own `http.request.body.size` (Content-Length) adding up to the upload's `kraken.size`.
fn assert_patch_bodies(trace: &Trace, upload: &Span, size: u64) {
    let bodies: Vec<u64> = trace
        .children(&upload.span_id)
        .filter(|s| s.kind == "SPAN_KIND_SERVER" && method(s) == "PATCH")
        .map(|s| {
            s.attr("http.request.body.size")
                .and_then(|v| v.parse().ok())
                .unwrap_or_else(|| panic!("PATCH without a body size: {s:#?}"))
        })
        .collect();
    assert!(bodies.iter().all(|b| *b > 0), "{bodies:?}");
    assert_eq!(bodies.iter().sum::<u64>(), size, "{bodies:?}");
}

#[test]
fn uploads_through_proxy_and_to_origin_are_traced() {
    let cluster = Cluster::start().expect("start the Kraken cluster");
    let jaeger = Jaeger::start().expect("start Jaeger");
    let tracer = cluster
        .trace(
            &[Component::Proxy, Component::Origin],
            &["--stdout", "--otlp-endpoint", &jaeger.otlp_grpc],
        )
        .expect("attach to Kraken");
    let work = std::env::temp_dir().join(format!("kraken-tracer-up-{}", std::process::id()));
    push_through_proxy(&work, REPO);

    // A direct chunked upload: 300 KiB in 128 KiB chunks is 3 PATCHes.
    let blob = kraken::random_bytes(300 << 10).unwrap();
    let direct = format!(
        "sha256:{}",
        cluster
            .upload_to_origin("direct/ns", &blob, 128 << 10)
            .unwrap()
    );

    // Writebacks are asynchronous (and end after their upload's trace was printed, so they
    // are in Jaeger first): wait for them (config, layer, manifest, direct blob).
    let since = std::time::SystemTime::now() - Duration::from_secs(600);
    let written = || {
        jaeger
            .traces("kraken-origin", since)
            .unwrap_or_default()
            .iter()
            .flat_map(|t| t.spans.iter())
            .filter(|s| s.name == "backend.upload" && s.parent_span_id.is_some())
            .count()
    };
    let all_written = tracer_it::wait_until(WAIT, || written() >= 4);
    let trees = tracer.stdout_text();
    let (status, log) = tracer.stop().unwrap();
    assert!(
        all_written,
        "{} linked writebacks in Jaeger, want 4:\n{trees}\n{log}",
        written()
    );
    assert!(status.success(), "{log}");
    eprintln!("{trees}");
    cluster.check_alive().expect("Kraken survived being traced");
    let sizes = pushed_sizes(&cluster);

    // The push: one proxy.upload per blob (config, layer, and Kraken stores the manifest as a
    // blob too), each one trace down to the backend.
    let proxy = jaeger.wait_for_traces("kraken-proxy", 12, WAIT).unwrap();
    let uploads: Vec<&Span> = proxy
        .iter()
        .flat_map(|t| t.spans.iter())
        .filter(|s| s.name == "proxy.upload")
        .collect();
    assert!(uploads.len() >= 2, "{proxy:#?}");
    for up in uploads {
        assert_eq!(up.kind, "SPAN_KIND_INTERNAL");
        assert_eq!(up.parent_span_id, None, "a push's blob upload is a root");
        assert_eq!(up.attr("kraken.repo"), Some(REPO));
        assert_eq!(up.attr("kraken.namespace"), Some(REPO));
        let id = up.attr("kraken.upload_id").expect("upload id");
        assert_eq!(id.len(), 36, "a UUID: {id}");
        let digest = up.attr("kraken.digest").expect("the blob's digest");
        let size = size_of_pushed(&sizes, digest);
        assert_eq!(up.attr("kraken.size"), Some(size.as_str()), "{digest}");
        let trace = full_trace(
            &jaeger,
            &up.trace_id,
            &["proxy.upload", "origin.store_blob", "backend.upload"],
        );
        // The registry's POST, PATCH and PUT are the upload's children.
        assert_eq!(
            child_methods(&trace, up, "SPAN_KIND_SERVER"),
            ["PATCH", "POST", "PUT"]
        );
        let put = trace
            .children(&up.span_id)
            .find(|s| method(s) == "PUT")
            .unwrap();
        assert_eq!(put.attr("kraken.upload_id"), Some(id));
        // The commit moves the blob to the origin: its own chunked upload.
        let calls: Vec<&Span> = trace
            .children(&put.span_id)
            .filter(|s| s.kind == "SPAN_KIND_CLIENT")
            .collect();
        let post = calls
            .iter()
            .find(|s| s.name == "POST /namespace/{namespace}/blobs/{digest}/uploads")
            .unwrap_or_else(|| panic!("the commit's POST to the origin: {trace:#?}"));
        for m in ["PATCH", "PUT"] {
            assert!(calls.iter().any(|s| method(s) == m), "{m} to the origin");
        }
        eprintln!("{}", render(&trace));
        assert_patch_bodies(&trace, up, size.parse().unwrap());
        let store = assert_store_blob(&trace, digest, 1, size.parse().unwrap());
        assert_eq!(
            store.parent_span_id.as_deref(),
            Some(post.span_id.as_str()),
            "origin.store_blob under the proxy's call"
        );
        assert_eq!(
            store.attr("kraken.namespace"),
            Some("TODO"),
            "Kraken v0.1.29's proxy"
        );
        assert!(
            up.start_unix_nano <= store.start_unix_nano && store.end_unix_nano <= up.end_unix_nano
        );
    }

    // The direct upload: one origin.store_blob, a root, its requests under it.
    let origin = jaeger.wait_for_traces("kraken-origin", 1, WAIT).unwrap();
    let stores: Vec<&Span> = origin
        .iter()
        .flat_map(|t| t.spans.iter())
        .filter(|s| {
            s.name == "origin.store_blob" && s.attr("kraken.digest") == Some(direct.as_str())
        })
        .collect();
    assert_eq!(stores.len(), 1, "one span per upload");
    assert_eq!(stores[0].parent_span_id, None);
    let trace = full_trace(
        &jaeger,
        &stores[0].trace_id,
        &["origin.store_blob", "backend.upload"],
    );
    eprintln!("{}", render(&trace));
    let store = assert_store_blob(&trace, &direct, 3, blob.len() as u64);
    assert_eq!(store.attr("kraken.namespace"), Some("direct/ns"));
    assert_eq!(
        trace.roots().count(),
        1,
        "POST, PATCH and PUT are not separate roots"
    );
    let _ = fs::remove_dir_all(&work);
}

/// Replication inside a cluster: with two origins in the hash ring, the commit of an upload to
/// the first is duplicated to the second. The upload's trace holds the three spans of the hop:
/// `origin.replicate` on the first (source), its requests to the second (transfer), and
/// `origin.receive_replica` on the second (destination) with those requests as children.
#[test]
fn commit_duplicated_to_the_replica_origin_is_in_the_upload_trace() {
    let cluster = Cluster::start_with_replica().expect("start the Kraken cluster with 2 origins");
    let jaeger = Jaeger::start().expect("start Jaeger");
    let tracer = cluster
        .trace(
            &[Component::Origin, Component::Origin2],
            &["--stdout", "--otlp-endpoint", &jaeger.otlp_grpc],
        )
        .expect("attach to Kraken");
    let blob = kraken::random_bytes(200 << 10).unwrap();
    let digest = format!(
        "sha256:{}",
        cluster
            .upload_to_origin("rep/ns", &blob, 128 << 10)
            .unwrap()
    );
    let (_, trace) = trace_of_first(
        &jaeger,
        "kraken-origin",
        |s| s.name == "origin.store_blob" && s.attr("kraken.digest") == Some(&digest),
        &[
            "origin.store_blob",
            "origin.replicate",
            "origin.receive_replica",
            "backend.upload",
        ],
    );
    let trees = tracer.stdout_text();
    let (status, log) = tracer.stop().unwrap();
    assert!(status.success(), "{log}");
    eprintln!("{trees}\n{}", render(&trace));
    cluster.check_alive().expect("Kraken survived being traced");

    let store = assert_store_blob(&trace, &digest, 2, blob.len() as u64);
    assert_eq!(store.parent_span_id, None);
    let commit = trace
        .children(&store.span_id)
        .find(|s| method(s) == "PUT")
        .unwrap();
    let source = trace.span("origin.replicate").unwrap();
    assert_eq!(source.kind, "SPAN_KIND_INTERNAL");
    assert_eq!(source.service_name, "kraken-origin");
    assert_eq!(
        source.parent_span_id.as_deref(),
        Some(commit.span_id.as_str())
    );
    assert_eq!(source.attr("kraken.replica"), Some("localhost:15012"));
    assert_eq!(source.attr("kraken.digest"), Some(digest.as_str()));
    // Transfer: the first origin's requests to the replica (upload start, chunk, duplicate commit).
    let transfers: Vec<&Span> = trace.children(&source.span_id).collect();
    assert!(transfers.iter().all(|t| t.kind == "SPAN_KIND_CLIENT"));
    assert_eq!(
        child_methods(&trace, source, "SPAN_KIND_CLIENT"),
        ["PATCH", "POST", "PUT"]
    );
    let dup_commit = transfers
        .iter()
        .find(|t| {
            t.attr("http.route")
                == Some("/internal/duplicate/namespace/{namespace}/blobs/{digest}/uploads/{uid}")
        })
        .unwrap_or_else(|| panic!("the duplicate commit: {}", render(&trace)));
    // Its path is longer than the client capture, yet it is known as the commit that ends the push.
    assert_eq!(source.end_unix_nano, dup_commit.end_unix_nano);
    assert_ne!(source.status_code, "STATUS_CODE_ERROR", "{source:?}");
    // Destination: the replica's upload, under the transfer that started it.
    let dest = trace.span("origin.receive_replica").unwrap();
    assert_eq!(dest.service_name, "kraken-origin2");
    assert_eq!(dest.kind, "SPAN_KIND_INTERNAL");
    assert_eq!(dest.attr("kraken.replicate"), Some("false"));
    assert_eq!(dest.attr("kraken.digest"), Some(digest.as_str()));
    let post = transfers.iter().find(|t| method(t) == "POST").unwrap();
    assert_eq!(dest.parent_span_id.as_deref(), Some(post.span_id.as_str()));
    assert_eq!(
        dest.attr("kraken.size"),
        Some(blob.len().to_string().as_str()),
        "the whole blob reached the replica"
    );
    assert_patch_bodies(&trace, dest, blob.len() as u64);
    let received = child_methods(&trace, dest, "SPAN_KIND_SERVER");
    assert_eq!(received, ["PATCH", "POST", "PUT"], "{}", render(&trace));
    assert!(
        trace
            .children(&dest.span_id)
            .all(|s| s.service_name == "kraken-origin2")
    );
    assert!(
        source.start_unix_nano >= commit.start_unix_nano
            && source.end_unix_nano <= commit.end_unix_nano
    );
}

/// Replication after a backend refresh: with two origins in the hash ring, a download through
/// the agent makes an origin (whichever the tracker asked) fetch the blob from testfs; its
/// refresh's post-download hook then transfers the blob to the other origin
/// (`POST|PATCH|PUT /internal/blobs/<digest>/uploads…`). The download's trace holds the three
/// spans of the hop: `origin.replicate` under `origin.blob_refresh` (source), its requests
/// (transfer), `origin.receive_replica` on the other origin (destination).
#[test]
fn transfer_after_a_backend_refresh_is_in_the_download_trace() {
    let cluster = Cluster::start_with_replica().expect("start the Kraken cluster with 2 origins");
    let jaeger = Jaeger::start().expect("start Jaeger");
    let tracer = cluster
        .trace(
            &[
                Component::Agent,
                Component::Tracker,
                Component::Origin,
                Component::Origin2,
            ],
            &["--stdout", "--otlp-endpoint", &jaeger.otlp_grpc],
        )
        .expect("attach to Kraken");
    let blob = kraken::random_bytes(300 << 10).unwrap();
    let hex = cluster.upload_to_testfs(&blob).unwrap();
    let digest = format!("sha256:{hex}");
    assert_eq!(cluster.download_via_agent("testfs", &hex).unwrap(), blob);
    let (_, trace) = trace_of_first(
        &jaeger,
        "kraken-agent",
        |s| s.name == "agent.download_blob" && s.attr("kraken.digest") == Some(&digest),
        &[
            "agent.download_blob",
            "origin.blob_refresh",
            "origin.replicate",
            "origin.receive_replica",
        ],
    );
    let trees = tracer.stdout_text();
    let (status, log) = tracer.stop().unwrap();
    assert!(status.success(), "{log}");
    eprintln!("{trees}\n{}", render(&trace));
    cluster.check_alive().expect("Kraken survived being traced");

    let other = |service: &str| match service {
        "kraken-origin" => ("kraken-origin2", "localhost:15012"),
        _ => ("kraken-origin", "localhost:15002"),
    };
    // Source: under the backend fetch of the blob, on the origin that fetched it (either one;
    // both may have, if the tracker asked both before either had it).
    let mut hops = 0;
    for source in trace.spans.iter().filter(|s| s.name == "origin.replicate") {
        let refresh = trace
            .spans
            .iter()
            .find(|s| Some(s.span_id.as_str()) == source.parent_span_id.as_deref())
            .unwrap_or_else(|| panic!("origin.replicate has its parent in the trace: {trace:#?}"));
        assert_eq!(refresh.name, "origin.blob_refresh", "{}", render(&trace));
        assert_eq!(refresh.attr("kraken.digest"), Some(digest.as_str()));
        assert_eq!(source.service_name, refresh.service_name);
        assert_eq!(source.kind, "SPAN_KIND_INTERNAL");
        assert_eq!(source.attr("kraken.digest"), Some(digest.as_str()));
        let (dest_service, dest_addr) = other(&source.service_name);
        assert_eq!(source.attr("kraken.replica"), Some(dest_addr));
        assert!(source.start_unix_nano >= refresh.start_unix_nano);
        // Transfer: the source origin's requests to the other one.
        let transfers: Vec<&Span> = trace.children(&source.span_id).collect();
        assert!(
            transfers
                .iter()
                .all(|t| t.kind == "SPAN_KIND_CLIENT" && t.service_name == source.service_name)
        );
        let post = transfers
            .iter()
            .find(|t| t.name == "POST /internal/blobs/{digest}/uploads")
            .unwrap_or_else(|| panic!("the transfer's start: {}", render(&trace)));
        if transfers
            .iter()
            .any(|t| t.attr("http.response.status_code") == Some("409"))
        {
            // The other origin had fetched the blob itself meanwhile: it answered "already
            // there", which ends the transfer.
            continue;
        }
        assert_eq!(
            child_methods(&trace, source, "SPAN_KIND_CLIENT"),
            ["PATCH", "POST", "PUT"],
            "300 KiB is one chunk"
        );
        assert!(transfers.iter().all(|t| {
            t.attr("http.route")
                .is_some_and(|r| r.starts_with("/internal/blobs/{digest}/uploads"))
        }));
        let put = transfers.iter().find(|t| method(t) == "PUT").unwrap();
        assert_eq!(put.attr("http.response.status_code"), Some("200"));
        assert_eq!(
            source.end_unix_nano, put.end_unix_nano,
            "the commit ends it"
        );
        assert_ne!(source.status_code, "STATUS_CODE_ERROR", "{source:?}");
        // Destination: the other origin's upload, under the transfer's start.
        let dest = trace
            .children(&post.span_id)
            .find(|s| s.name == "origin.receive_replica")
            .unwrap_or_else(|| panic!("origin.receive_replica under the POST: {}", render(&trace)));
        assert_eq!(dest.service_name, dest_service);
        assert_eq!(dest.kind, "SPAN_KIND_INTERNAL");
        assert_eq!(dest.attr("kraken.digest"), Some(digest.as_str()));
        assert_eq!(dest.attr("kraken.replicate"), Some("false"));
        assert_eq!(
            child_methods(&trace, dest, "SPAN_KIND_SERVER"),
            ["PATCH", "POST", "PUT"]
        );
        assert!(
            trace
                .children(&dest.span_id)
                .all(|s| s.service_name == dest_service)
        );
        hops += 1;
    }
    assert!(hops >= 1, "no complete transfer: {}", render(&trace));
    // Linked by goroutine ancestry (the refresher's worker spawned the transfers), not by digest.
    assert!(
        log.contains("transfers after a backend fetch linked to it: ")
            && !log.contains("linked to it: 0 by goroutine"),
        "{log}"
    );
}

/// Cross-cluster replication: a push through the proxy puts the tag on the build-index with
/// `?replicate=true`; its tag replication executor (a persisted-retry worker) asks the remote
/// build-index, has the origin push every blob of the image to the remote cluster's origin
/// (`replicateToRemote`), then puts the tag there. One tracer traces both clusters: all of it
/// is in the push's trace.
#[test]
fn tag_replication_to_a_remote_cluster_is_in_the_push_trace() {
    let cluster = Cluster::start_with_remote().expect("start the Kraken clusters");
    let jaeger = Jaeger::start().expect("start Jaeger");
    let tracer = cluster
        .trace(
            &[
                Component::Proxy,
                Component::Origin,
                Component::BuildIndex,
                Component::RemoteOrigin,
                Component::RemoteBuildIndex,
            ],
            &["--stdout", "--otlp-endpoint", &jaeger.otlp_grpc],
        )
        .expect("attach to Kraken");
    let work = std::env::temp_dir().join(format!("kraken-tracer-rem-{}", std::process::id()));
    push_through_proxy(&work, REPO);
    let tag = format!("{REPO}:v1");
    assert!(
        tracer_it::wait_until(WAIT, || tracer_it::request(
            Component::RemoteBuildIndex.addr(),
            "GET",
            "/tags/kraken-tracer%2Fupload:v1"
        )
        .unwrap_or(0)
            == 200),
        "the tag never reached the remote build-index"
    );
    let (rep, trace) = trace_of_first(
        &jaeger,
        "kraken-build-index",
        |s| s.name == "build_index.replicate_tag",
        &[
            "build_index.replicate_tag",
            "origin.replicate_to_remote",
            "origin.store_blob",
        ],
    );
    let (status, log) = tracer.stop().unwrap();
    assert!(status.success(), "{log}");
    // Every exporter flushed at exit: read the whole trace again.
    let trace = jaeger.trace(&trace.trace_id).unwrap().unwrap_or(trace);
    eprintln!("{}", render(&trace));
    cluster.check_alive().expect("Kraken survived being traced");
    let sizes = pushed_sizes(&cluster);

    let by_id = |id: &str| trace.spans.iter().find(|s| s.span_id == id);
    // Source: the worker's replication, under the tag put that queued it (itself under the
    // proxy's call: the push's trace).
    assert_eq!(rep.kind, "SPAN_KIND_INTERNAL");
    assert_eq!(rep.attr("kraken.tag"), Some(tag.as_str()));
    let put = by_id(rep.parent_span_id.as_deref().unwrap()).expect("the tag put");
    assert_eq!(put.service_name, "kraken-build-index");
    assert_eq!(put.attr("http.route"), Some("/tags/{tag}/digest/{digest}"));
    let caller = by_id(put.parent_span_id.as_deref().unwrap()).expect("the proxy's call");
    assert_eq!(caller.service_name, "kraken-proxy");
    assert_eq!(trace.roots().count(), 1);
    assert_eq!(trace.roots().next().unwrap().service_name, "kraken-proxy");
    // Transfer: per blob, the origin pushes it to the remote origin; destination: the remote
    // origin's origin.store_blob.
    let pushes: Vec<&Span> = trace
        .spans
        .iter()
        .filter(|s| s.name == "origin.replicate_to_remote")
        .collect();
    assert!(
        pushes.len() >= 2,
        "config, layer (and manifest): {}",
        render(&trace)
    );
    for push in pushes {
        assert_eq!(push.service_name, "kraken-origin");
        assert_eq!(push.kind, "SPAN_KIND_SERVER");
        let call = by_id(push.parent_span_id.as_deref().unwrap()).unwrap();
        assert_eq!(call.parent_span_id.as_deref(), Some(rep.span_id.as_str()));
        let digest = push.attr("kraken.digest").unwrap();
        let stored = trace
            .spans
            .iter()
            .find(|s| {
                s.name == "origin.store_blob"
                    && s.service_name == "kraken-remote-origin"
                    && s.attr("kraken.digest") == Some(digest)
            })
            .unwrap_or_else(|| panic!("{digest} not stored remotely: {}", render(&trace)));
        let upload_call = by_id(stored.parent_span_id.as_deref().unwrap()).unwrap();
        assert_eq!(
            upload_call.parent_span_id.as_deref(),
            Some(push.span_id.as_str())
        );
        assert_eq!(
            child_methods(&trace, stored, "SPAN_KIND_SERVER"),
            ["PATCH", "POST", "PUT"]
        );
        assert_eq!(
            stored.attr("kraken.size"),
            Some(size_of_pushed(&sizes, digest).as_str()),
            "{digest} stored remotely whole"
        );
    }
    // Last, the tag itself on the remote build-index.
    let remote_put = trace
        .spans
        .iter()
        .find(|s| {
            s.service_name == "kraken-remote-build-index"
                && s.attr("http.route") == Some("/tags/{tag}/digest/{digest}")
        })
        .expect("the remote tag put");
    let call = by_id(remote_put.parent_span_id.as_deref().unwrap()).unwrap();
    assert_eq!(call.parent_span_id.as_deref(), Some(rep.span_id.as_str()));
    assert_eq!(
        rep.end_unix_nano, call.end_unix_nano,
        "the replication ends with it"
    );
    let _ = fs::remove_dir_all(&work);
}
