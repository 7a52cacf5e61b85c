//! A Docker registry v2 pull through the Kraken agent with a real client (skopeo): the image is
//! pushed through Kraken's proxy first, then pulled from the agent's registry while traced; every
//! blob the pull fetches is an `agent.download_blob` span.

use std::{fs, time::Duration};

use tracer_it::{
    jaeger::Jaeger,
    kraken::{Cluster, Component, ports},
    oci::{image_blobs, push_through_proxy, skopeo},
};

const WAIT: Duration = Duration::from_secs(60);
const REPO: &str = "kraken-tracer/demo";

#[test]
fn registry_pull_through_the_agent_is_traced() {
    let cluster = Cluster::start().expect("start the Kraken cluster");
    let jaeger = Jaeger::start().expect("start Jaeger");
    let work = std::env::temp_dir().join(format!("kraken-tracer-oci-{}", std::process::id()));
    push_through_proxy(&work, REPO);

    let tracer = cluster
        .trace(
            &[Component::Agent, Component::Origin, Component::Tracker],
            &["--otlp-endpoint", &jaeger.otlp_grpc],
        )
        .expect("attach to Kraken");

    // Pull through the agent's registry.
    let pulled = format!("docker://localhost:{}/{REPO}:v1", ports::AGENT_REGISTRY);
    let dst = format!("oci:{}:v1", work.join("dst").display());
    skopeo(&["copy", "--src-tls-verify=false", &pulled, &dst]);
    let (status, log) = tracer.stop().unwrap();
    assert!(status.success(), "{log}");
    cluster.check_alive().unwrap();

    let traces = jaeger.wait_for_traces("kraken-agent", 2, WAIT).unwrap();
    let downloads: Vec<_> = traces
        .iter()
        .flat_map(|t| t.spans.iter())
        .filter(|s| s.name == "agent.download_blob")
        .collect();
    // The pulled image's blobs (skopeo re-encodes the layer for Docker schema 2 on push).
    let blobs = image_blobs(&work.join("dst"));
    assert_eq!(blobs.len(), 2, "config + one layer");
    for blob in &blobs {
        let d = downloads
            .iter()
            .find(|s| s.attributes.get("kraken.digest") == Some(&format!("sha256:{blob}")))
            .unwrap_or_else(|| {
                let seen: Vec<(&str, Option<&String>, &str)> = traces
                    .iter()
                    .flat_map(|t| t.spans.iter())
                    .map(|s| {
                        (
                            s.name.as_str(),
                            s.attributes.get("url.path"),
                            s.service_name.as_str(),
                        )
                    })
                    .collect();
                panic!("no agent.download_blob for sha256:{blob}; spans seen: {seen:?}")
            });
        assert_eq!(d.kind, "SPAN_KIND_SERVER");
        assert_eq!(d.attributes["kraken.namespace"], REPO);
        assert_eq!(d.attributes["http.route"], "/v2/{repo...}/blobs/{digest}");
        assert_eq!(d.attributes["http.response.status_code"], "200");
    }
    let _ = fs::remove_dir_all(&work);
}
