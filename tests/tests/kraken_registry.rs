//! A Docker registry v2 pull through the Kraken agent with a real client (skopeo): the image is
//! pushed through Kraken's proxy first, then pulled from the agent's registry while traced; every
//! blob the pull fetches is an `agent.download_blob` span.

use std::{fs, path::Path, process::Command, time::Duration};

use tracer_it::{
    jaeger::Jaeger,
    kraken::{self, Cluster, Component, ports},
};

const WAIT: Duration = Duration::from_secs(60);
const REPO: &str = "kraken-tracer/demo";

fn write_blob(dir: &Path, bytes: &[u8]) -> (String, usize) {
    let hex = kraken::sha256_hex(bytes);
    fs::write(dir.join("blobs/sha256").join(&hex), bytes).unwrap();
    (hex, bytes.len())
}

/// The config and layer digests (hex) of the image in the OCI layout at `dir`.
fn image_blobs(dir: &Path) -> Vec<String> {
    let read =
        |p: &Path| -> serde_json::Value { serde_json::from_slice(&fs::read(p).unwrap()).unwrap() };
    let hex = |d: &serde_json::Value| d.as_str().unwrap().trim_start_matches("sha256:").to_owned();
    let index = read(&dir.join("index.json"));
    let manifest = read(
        &dir.join("blobs/sha256")
            .join(hex(&index["manifests"][0]["digest"])),
    );
    let mut blobs = vec![hex(&manifest["config"]["digest"])];
    blobs.extend(
        manifest["layers"]
            .as_array()
            .unwrap()
            .iter()
            .map(|l| hex(&l["digest"])),
    );
    blobs
}

/// A one-layer OCI image layout at `dir` (tag v1).
fn oci_image(dir: &Path) {
    fs::create_dir_all(dir.join("blobs/sha256")).unwrap();
    let files = dir.join("rootfs");
    fs::create_dir_all(&files).unwrap();
    fs::write(
        files.join("data.bin"),
        kraken::random_bytes(256 << 10).unwrap(),
    )
    .unwrap();
    let tar = dir.join("layer.tar");
    let ok = Command::new("tar")
        .arg("-cf")
        .arg(&tar)
        .arg("-C")
        .arg(&files)
        .arg(".")
        .status()
        .unwrap();
    assert!(ok.success());
    let (layer, layer_size) = write_blob(dir, &fs::read(&tar).unwrap());
    let config = format!(
        r#"{{"architecture":"amd64","os":"linux","config":{{}},"rootfs":{{"type":"layers","diff_ids":["sha256:{layer}"]}}}}"#
    );
    let (cfg, cfg_size) = write_blob(dir, config.as_bytes());
    let manifest = format!(
        r#"{{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"sha256:{cfg}","size":{cfg_size}}},"layers":[{{"mediaType":"application/vnd.oci.image.layer.v1.tar","digest":"sha256:{layer}","size":{layer_size}}}]}}"#
    );
    let (man, man_size) = write_blob(dir, manifest.as_bytes());
    fs::write(dir.join("oci-layout"), r#"{"imageLayoutVersion":"1.0.0"}"#).unwrap();
    fs::write(
        dir.join("index.json"),
        format!(
            r#"{{"schemaVersion":2,"manifests":[{{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"sha256:{man}","size":{man_size},"annotations":{{"org.opencontainers.image.ref.name":"v1"}}}}]}}"#
        ),
    )
    .unwrap();
}

fn skopeo(args: &[&str]) {
    let out = Command::new("skopeo")
        .arg("--insecure-policy")
        .args(args)
        .output()
        .expect("run skopeo");
    assert!(
        out.status.success(),
        "skopeo {args:?} failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn registry_pull_through_the_agent_is_traced() {
    let cluster = Cluster::start().expect("start the Kraken cluster");
    let jaeger = Jaeger::start().expect("start Jaeger");
    let work = std::env::temp_dir().join(format!("kraken-tracer-oci-{}", std::process::id()));
    let _ = fs::remove_dir_all(&work);
    oci_image(&work.join("src"));

    // Push through Kraken's proxy (Docker schema 2), as a CI system would.
    let src = format!("oci:{}:v1", work.join("src").display());
    let pushed = format!("docker://localhost:{}/{REPO}:v1", ports::PROXY);
    skopeo(&[
        "copy",
        "--dest-tls-verify=false",
        "--format",
        "v2s2",
        &src,
        &pushed,
    ]);

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
