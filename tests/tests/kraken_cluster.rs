//! The Kraken cluster harness itself: a real local Kraken (built by `cargo xtask setup`) serves
//! a blob stored in testfs through the agent: tracker metainfo, origin backend fetch, P2P.

use std::time::Instant;

use tracer_it::kraken::{self, Cluster, Component};

#[test]
fn blob_downloads_through_the_agent() {
    let cluster = Cluster::start().expect("start the Kraken cluster");
    eprintln!(
        "kraken {}: cluster started in {:.2?} ({})",
        kraken::version(),
        cluster.start_duration(),
        Component::ALL
            .iter()
            .map(|c| format!("{} {:.2?}", c.name(), cluster.ready_after(*c)))
            .collect::<Vec<_>>()
            .join(", ")
    );
    for c in Component::ALL {
        let pid = cluster.pid(c);
        assert!(pid > 0);
        if c.uses_nginx() {
            assert!(
                !cluster.nginx_pids(c).is_empty(),
                "{} runs no nginx",
                c.name()
            );
            assert!(!cluster.nginx_pids(c).contains(&pid));
        }
    }

    let blob = kraken::random_bytes(1 << 20).expect("random blob");
    let digest = cluster.upload_to_testfs(&blob).expect("upload to testfs");
    assert_eq!(digest, kraken::sha256_hex(&blob));

    let t = Instant::now();
    let got = cluster
        .download_via_agent("testfs", &digest)
        .expect("first download through the agent");
    let first = t.elapsed();
    assert!(got == blob, "first download differs ({} bytes)", got.len());

    let t = Instant::now();
    let again = cluster
        .download_via_agent("testfs", &digest)
        .expect("cached download through the agent");
    let cached = t.elapsed();
    assert!(
        again == blob,
        "cached download differs ({} bytes)",
        again.len()
    );
    eprintln!("kraken: 1 MiB blob: first download {first:.2?}, cached {cached:.2?}");

    cluster.check_alive().expect("all components still alive");
}

#[test]
fn chunked_upload_to_origin() {
    let cluster = Cluster::start().expect("start the Kraken cluster");
    // Not a multiple of the chunk size: the last PATCH is short.
    let blob = kraken::random_bytes(300_000).expect("random blob");
    let digest = cluster
        .upload_to_origin("testfs", &blob, 64 << 10)
        .expect("chunked upload to the origin");
    assert_eq!(digest, kraken::sha256_hex(&blob));
    let got = cluster
        .download_from_origin("testfs", &digest)
        .expect("download from the origin");
    assert!(got == blob, "origin returned {} different bytes", got.len());
    let t = Instant::now();
    let got = cluster
        .download_via_agent("testfs", &digest)
        .expect("download through the agent");
    assert!(got == blob, "agent returned {} different bytes", got.len());
    eprintln!(
        "kraken: uploaded blob through the agent in {:.2?}",
        t.elapsed()
    );
    cluster.check_alive().expect("all components still alive");
}

#[test]
fn sha256_matches_known_vectors() {
    assert_eq!(
        kraken::sha256_hex(b""),
        "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
    );
    assert_eq!(
        kraken::sha256_hex(b"abc"),
        "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    );
    let long = vec![b'a'; 1_000_000];
    assert_eq!(
        kraken::sha256_hex(&long),
        "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0"
    );
}
