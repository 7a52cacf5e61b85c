//! A small OCI image layout on disk and the skopeo client, for registry pushes and pulls
//! through Kraken's proxy and agent (Debian's skopeo).

use std::{fs, path::Path, process::Command};

use crate::kraken;

fn write_blob(dir: &Path, bytes: &[u8]) -> (String, usize) {
    let hex = kraken::sha256_hex(bytes);
    fs::write(dir.join("blobs/sha256").join(&hex), bytes).unwrap();
    (hex, bytes.len())
}

/// The config and layer digests (hex) of the image in the OCI layout at `dir`.
pub fn image_blobs(dir: &Path) -> Vec<String> {
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
pub fn oci_image(dir: &Path) {
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

/// Writes a fresh image layout at `work/src` (the directory is emptied first) and pushes it
/// through the local cluster's proxy as `repo:v1` (Docker schema 2), as a CI system would.
pub fn push_through_proxy(work: &Path, repo: &str) {
    let _ = fs::remove_dir_all(work);
    oci_image(&work.join("src"));
    let src = format!("oci:{}:v1", work.join("src").display());
    let pushed = format!("docker://localhost:{}/{repo}:v1", kraken::ports::PROXY);
    skopeo(&[
        "copy",
        "--dest-tls-verify=false",
        "--format",
        "v2s2",
        &src,
        &pushed,
    ]);
}

pub fn skopeo(args: &[&str]) {
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
