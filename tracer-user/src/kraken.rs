//! The Kraken profile, first layer: Kraken's HTTP routes as templates. It turns the generic
//! HTTP spans of Kraken processes into what an SRE searches for: the design review's span
//! names (`agent.download_blob`, `tracker.announce`, `announce.request`), `http.route` as a
//! template (never a raw digest: cardinality), and `kraken.namespace` (unescaped),
//! `kraken.digest` (`sha256:<hex>`), `kraken.info_hash`, `kraken.upload_id`.
//!
//! Pure and table-driven: one row per route (kraken.md, Kraken v0.1.29's routers).

use crate::span::{AttrValue, SpanKind, SpanRecord};

/// One Kraken route: method ("" = any), path template, and the seed's span names for the
/// server side and the client side of it (None = keep "METHOD /template").
struct Route {
    method: &'static str,
    template: &'static str,
    server_name: Option<&'static str>,
    client_name: Option<&'static str>,
}

const fn r(method: &'static str, template: &'static str) -> Route {
    Route {
        method,
        template,
        server_name: None,
        client_name: None,
    }
}

const ROUTES: &[Route] = &[
    // Docker registry v2 (agent: pulls; `{repo...}` spans several segments: library/ubuntu).
    Route {
        server_name: Some("agent.download_blob"),
        ..r("GET", "/v2/{repo...}/blobs/{digest}")
    },
    r("HEAD", "/v2/{repo...}/blobs/{digest}"),
    r("GET", "/v2/{repo...}/manifests/{reference}"),
    r("HEAD", "/v2/{repo...}/manifests/{reference}"),
    r("POST", "/v2/{repo...}/blobs/uploads/"),
    r("PATCH", "/v2/{repo...}/blobs/uploads/{uid}"),
    r("PUT", "/v2/{repo...}/blobs/uploads/{uid}"),
    r("PUT", "/v2/{repo...}/manifests/{reference}"),
    // agent API and origin: blob download (the agent's is the seed's entry span).
    Route {
        server_name: Some("agent.download_blob"),
        ..r("GET", "/namespace/{namespace}/blobs/{digest}")
    },
    r("GET", "/namespace/{namespace}/blobs/{digest}/metainfo"),
    r(
        "GET",
        "/internal/namespace/{namespace}/blobs/{digest}/metainfo",
    ),
    r("HEAD", "/internal/namespace/{namespace}/blobs/{digest}"),
    r("POST", "/namespace/{namespace}/blobs/{digest}/uploads"),
    r(
        "PATCH",
        "/namespace/{namespace}/blobs/{digest}/uploads/{uid}",
    ),
    r("PUT", "/namespace/{namespace}/blobs/{digest}/uploads/{uid}"),
    // The origin pushing a blob to a remote cluster's origin (tag replication's per-blob step).
    Route {
        server_name: Some("origin.replicate_to_remote"),
        ..r(
            "POST",
            "/namespace/{namespace}/blobs/{digest}/remote/{remote}",
        )
    },
    r("POST", "/namespace/{namespace}/blobs/{digest}/prefetch"),
    r(
        "PUT",
        "/internal/duplicate/namespace/{namespace}/blobs/{digest}/uploads/{uid}",
    ),
    r("POST", "/internal/blobs/{digest}/uploads"),
    r("PATCH", "/internal/blobs/{digest}/uploads/{uid}"),
    r("PUT", "/internal/blobs/{digest}/uploads/{uid}"),
    r("GET", "/blobs/{digest}/locations"),
    r("GET", "/internal/peercontext"),
    r("DELETE", "/blobs/{digest}"),
    // tracker
    Route {
        server_name: Some("tracker.announce"),
        client_name: Some("announce.request"),
        ..r("POST", "/announce/{infohash}")
    },
    // agent tags, build-index tags
    r("GET", "/tags/{tag}"),
    r("HEAD", "/tags/{tag}"),
    r("PUT", "/tags/{tag}/digest/{digest}"),
    r("POST", "/remotes/tags/{tag}"),
    r("GET", "/preload/tags/{tag}"),
    // testfs backend: the origin's GET of a blob is the seed's backend.download.
    Route {
        client_name: Some("backend.download"),
        ..r("GET", "/files/blobs/{hex}")
    },
    // The origin's writeback of an uploaded blob (testfs' Upload is a POST).
    Route {
        client_name: Some("backend.upload"),
        ..r("POST", "/files/blobs/{hex}")
    },
    r("", "/files/blobs/{hex}"),
    r("", "/files/{path}"),
    r("GET", "/list/{path}"),
];

/// A matched route: the template and the values of its parameters (raw, as in the path).
struct Match<'p> {
    route: &'static Route,
    params: Vec<(&'static str, &'p str)>,
}

/// Matches a raw path (no query) against the table; `{path}` takes the rest of the path.
fn match_route<'p>(method: &str, path: &'p str) -> Option<Match<'p>> {
    let segs: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    ROUTES.iter().find_map(|route| {
        if !route.method.is_empty() && route.method != method {
            return None;
        }
        let tmpl: Vec<&str> = route.template.trim_start_matches('/').split('/').collect();
        let mut params = Vec::new();
        let mut i = 0;
        for (k, t) in tmpl.iter().enumerate() {
            if let Some(name) = t.strip_prefix('{').and_then(|t| t.strip_suffix("...}")) {
                // Greedy multi-segment parameter: the template's remaining segments take the tail.
                let rest = tmpl.len() - k - 1;
                let end = segs.len().checked_sub(rest)?;
                if end <= i || segs.get(i..end)?.iter().any(|seg| seg.is_empty()) {
                    return None;
                }
                let first = segs.get(i)?;
                let start = first.as_ptr() as usize - path.as_ptr() as usize;
                let last = segs.get(end - 1)?;
                let stop = last.as_ptr() as usize - path.as_ptr() as usize + last.len();
                params.push((name, path.get(start..stop)?));
                i = end;
                continue;
            }
            if *t == "{path}" && k == tmpl.len() - 1 {
                let rest = segs.get(i..)?.join("/");
                // A borrowed slice of the original path for the rest.
                let start = path.len() - rest.len();
                params.push(("path", path.get(start..)?));
                return Some(Match { route, params });
            }
            let s = segs.get(i)?;
            if let Some(name) = t.strip_prefix('{').and_then(|t| t.strip_suffix('}')) {
                if s.is_empty() {
                    return None;
                }
                params.push((name, *s));
            } else if t != s {
                return None;
            }
            i += 1;
        }
        (i == segs.len()).then_some(Match { route, params })
    })
}

/// Percent-decoding (namespaces are PathEscaped: `library%2Fubuntu` → `library/ubuntu`).
fn unescape(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let hex = |c: u8| (c as char).to_digit(16);
        match (
            b[i],
            b.get(i + 1).copied().and_then(hex),
            b.get(i + 2).copied().and_then(hex),
        ) {
            (b'%', Some(h), Some(l)) => {
                out.push(u8::try_from(h * 16 + l).unwrap_or(b'?'));
                i += 3;
            }
            (c, _, _) => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// `sha256:<hex>` whether the path carried `sha256:<hex>`, `sha256%3A<hex>` or a bare hex.
fn digest(raw: &str) -> String {
    let d = unescape(raw);
    if d.contains(':') {
        d
    } else {
        format!("sha256:{d}")
    }
}

fn path_of_url(url: &str) -> &str {
    let after_scheme = url.split_once("://").map_or(url, |(_, r)| r);
    after_scheme.find('/').map_or("/", |i| &after_scheme[i..])
}

/// The Kraken version a binary was built from, if it is a Kraken component (its main module or
/// a dependency is github.com/uber/kraken, per its Go buildinfo).
pub fn kraken_version(binary: &crate::symbols::Binary) -> Option<&str> {
    binary
        .build_info()?
        .module("github.com/uber/kraken")
        .map(|m| m.version.as_str())
}

/// The blob (`sha256:<hex>`) a Kraken request is about, from its method and raw path.
pub fn digest_in_path(method: &str, path: &str) -> Option<String> {
    let m = match_route(method, path)?;
    m.params
        .iter()
        .find(|(name, _)| matches!(*name, "digest" | "hex"))
        .map(|(_, v)| digest(v))
}

/// Kraken's periodic noise: health and readiness checks (readiness even makes client calls).
/// Their traces are not sampled, so they never become root traces in Jaeger.
pub fn is_noise(path: &str) -> bool {
    matches!(path, "/health" | "/readiness")
}

/// Whether a path is a tracker announce (`/announce/{infohash}`).
pub fn is_announce(path: &str) -> bool {
    match_route("POST", path).is_some_and(|m| m.route.template == "/announce/{infohash}")
}

/// One request of a chunked upload: the Docker registry v2 push on the proxy
/// (`POST /v2/<repo>/blobs/uploads/` → `PATCH …/<uid>` → `PUT …/<uid>?digest=`) or Kraken's own
/// on the origin (`POST /namespace/<ns>/blobs/<digest>/uploads` → `PATCH …/<uid>` → `PUT`;
/// `/internal/blobs/<digest>/uploads…` for origin-to-origin transfers).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UploadStep {
    Start,
    Chunk,
    Commit,
}

/// What an upload request says about the upload it belongs to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UploadRequest {
    /// The INTERNAL span that covers the whole upload (`proxy.upload`, `origin.store_blob`,
    /// `origin.receive_replica`).
    pub span_name: &'static str,
    pub step: UploadStep,
    /// The repository (proxy) or namespace (origin), unescaped; empty for transfers.
    pub namespace: String,
    /// `sha256:<hex>` (origin requests name their blob; the proxy's don't).
    pub digest: Option<String>,
    /// The upload id (absent on the start request: it comes back in `Location`).
    pub upload_id: Option<String>,
    /// Origin cluster uploads are duplicated to the replica origins and written back to the
    /// backend on commit; transfers between origins are not.
    pub replicate: Option<bool>,
    /// The commit of a duplicated upload (`PUT /internal/duplicate/…`): the upload it ends is a
    /// replica another origin pushed here.
    pub duplicate: bool,
}

/// The upload a request is a step of, if it is one.
pub fn upload_request(method: &str, path: &str) -> Option<UploadRequest> {
    let m = match_route(method, path)?;
    let (span_name, replicate) = match m.route.template {
        "/v2/{repo...}/blobs/uploads/" | "/v2/{repo...}/blobs/uploads/{uid}" => {
            ("proxy.upload", None)
        }
        "/namespace/{namespace}/blobs/{digest}/uploads"
        | "/namespace/{namespace}/blobs/{digest}/uploads/{uid}" => {
            ("origin.store_blob", Some(true))
        }
        "/internal/blobs/{digest}/uploads" | "/internal/blobs/{digest}/uploads/{uid}" => {
            ("origin.receive_replica", Some(false))
        }
        // A replica's upload starts as a cluster upload and is committed by the duplicate route.
        "/internal/duplicate/namespace/{namespace}/blobs/{digest}/uploads/{uid}" => {
            ("origin.store_blob", Some(true))
        }
        _ => return None,
    };
    let step = match method {
        "POST" => UploadStep::Start,
        "PATCH" => UploadStep::Chunk,
        "PUT" => UploadStep::Commit,
        _ => return None,
    };
    let param = |n: &str| m.params.iter().find(|(k, _)| *k == n).map(|(_, v)| *v);
    Some(UploadRequest {
        span_name,
        step,
        namespace: param("repo")
            .or_else(|| param("namespace"))
            .map(unescape)
            .unwrap_or_default(),
        digest: param("digest").map(digest),
        upload_id: param("uid").map(str::to_owned),
        replicate,
        duplicate: m.route.template.starts_with("/internal/duplicate/"),
    })
}

/// The blob a request to the storage backend (testfs: `/files/blobs/<hex>`) is about.
pub fn backend_blob(method: &str, path: &str) -> Option<String> {
    let m = match_route(method, path)?;
    if m.route.template != "/files/blobs/{hex}" {
        return None;
    }
    m.params
        .iter()
        .find(|(k, _)| *k == "hex")
        .map(|(_, v)| digest(v))
}

/// The tag a build-index request is about (`/tags/{tag}…`), or the one the tag replication
/// executor passes as the namespace of `POST /namespace/{tag}/blobs/{digest}/remote/{remote}`.
pub fn tag_in_path(method: &str, path: &str) -> Option<String> {
    let m = match_route(method, path)?;
    let want = match m.route.template {
        "/namespace/{namespace}/blobs/{digest}/remote/{remote}" => "namespace",
        "/tags/{tag}" | "/tags/{tag}/digest/{digest}" => "tag",
        _ => return None,
    };
    m.params
        .iter()
        .find(|(k, _)| *k == want)
        .map(|(_, v)| unescape(v))
}

/// Whether a request puts a tag (`PUT /tags/{tag}/digest/{digest}`): on a build-index, what
/// starts tag replication; sent by the replication executor, its last step.
pub fn is_tag_put(method: &str, path: &str) -> bool {
    match_route(method, path).is_some_and(|m| m.route.template == "/tags/{tag}/digest/{digest}")
}

/// Adds the Kraken names and attributes to a span of a Kraken process, if its path is a
/// Kraken route. Other spans are left as they are.
pub fn enrich(span: &mut SpanRecord) {
    let method = match span.attr("http.request.method") {
        Some(AttrValue::Str(m)) => m.clone(),
        _ => return,
    };
    let path = match (span.kind, span.attr("url.path"), span.attr("url.full")) {
        (SpanKind::Server, Some(AttrValue::Str(p)), _) => p.clone(),
        (SpanKind::Client, _, Some(AttrValue::Str(u))) => path_of_url(u).to_owned(),
        _ => return,
    };
    let Some(m) = match_route(&method, &path) else {
        return;
    };
    if span.attr("http.route").is_none() {
        span.attributes
            .push(("http.route", m.route.template.into()));
    }
    let seed = match span.kind {
        SpanKind::Server => m.route.server_name,
        SpanKind::Client => m.route.client_name,
        SpanKind::Internal => None,
    };
    span.name = seed.map_or_else(|| format!("{method} {}", m.route.template), str::to_owned);
    if span.name == "backend.download" || span.name == "backend.upload" {
        let ms = span
            .end
            .duration_since(span.start)
            .unwrap_or_default()
            .as_millis();
        span.attributes
            .push(("kraken.backend_type", "testfs".into()));
        // testfs keeps blobs under /files/<root>/<hex>: the root is the "bucket".
        span.attributes
            .push(("kraken.backend_root", "blobs".into()));
        span.attributes.push((
            "kraken.duration_ms",
            i64::try_from(ms).unwrap_or(i64::MAX).into(),
        ));
    }
    // A client's path is captured up to PATH_LEN bytes: a parameter reaching the cut (an upload
    // id after a long digest) is partial, so it is not given as an attribute.
    let cut = span.kind == SpanKind::Client && path.len() >= tracer_common::event::PATH_LEN;
    let n = m.params.len();
    for (i, (name, value)) in m.params.into_iter().enumerate() {
        if cut && i + 1 == n && path.ends_with(value) {
            continue;
        }
        let (key, v) = match name {
            // Kraken uses the repository as the blob's namespace on registry pulls.
            "namespace" | "repo" => ("kraken.namespace", unescape(value)),
            "digest" | "hex" => ("kraken.digest", digest(value)),
            "infohash" => ("kraken.info_hash", value.to_owned()),
            "uid" => ("kraken.upload_id", value.to_owned()),
            "tag" => ("kraken.tag", unescape(value)),
            "reference" => ("kraken.reference", unescape(value)),
            "remote" => ("kraken.remote", unescape(value)),
            _ => continue,
        };
        span.attributes.push((key, v.into()));
    }
}

#[cfg(test)]
mod tests {
    use std::{sync::Arc, time::UNIX_EPOCH};

    use super::*;
    use crate::span::{ProcessResource, SpanStatus};

    fn span(kind: SpanKind, method: &str, key: &'static str, value: &str) -> SpanRecord {
        SpanRecord {
            trace_id: [1; 16],
            span_id: [2; 8],
            parent_span_id: None,
            sampled: true,
            name: method.into(),
            kind,
            start: UNIX_EPOCH,
            end: UNIX_EPOCH,
            attributes: vec![("http.request.method", method.into()), (key, value.into())],
            status: SpanStatus::Unset,
            resource: Arc::new(ProcessResource {
                service_name: "agent".into(),
                pid: 1,
                host_name: "h".into(),
                executable_path: "/agent".into(),
                runtime_version: None,
            }),
        }
    }

    const HEX: &str = "a63bfacddf32883af4c2af71615606bc122b25747d17e4eb67019f18cb5e33dc";

    #[test]
    fn agent_download_gets_the_seed_name_template_and_identity() {
        let mut s = span(
            SpanKind::Server,
            "GET",
            "url.path",
            &format!("/namespace/library%2Fubuntu/blobs/sha256:{HEX}"),
        );
        enrich(&mut s);
        assert_eq!(s.name, "agent.download_blob");
        assert_eq!(
            s.attr("http.route"),
            Some(&AttrValue::Str(
                "/namespace/{namespace}/blobs/{digest}".into()
            ))
        );
        assert_eq!(
            s.attr("kraken.namespace"),
            Some(&AttrValue::Str("library/ubuntu".into()))
        );
        assert_eq!(
            s.attr("kraken.digest"),
            Some(&AttrValue::Str(format!("sha256:{HEX}")))
        );
        assert!(!s.name.contains(HEX), "no digest in span names");
    }

    #[test]
    fn announce_client_and_server() {
        let url = "http://localhost:15003/announce/42b301ff477cff1bce1bc1ad8b9fa3e419fab348";
        let mut c = span(SpanKind::Client, "POST", "url.full", url);
        enrich(&mut c);
        assert_eq!(c.name, "announce.request");
        assert_eq!(
            c.attr("kraken.info_hash"),
            Some(&AttrValue::Str(
                "42b301ff477cff1bce1bc1ad8b9fa3e419fab348".into()
            ))
        );
        let mut s = span(SpanKind::Server, "POST", "url.path", path_of_url(url));
        enrich(&mut s);
        assert_eq!(s.name, "tracker.announce");
    }

    #[test]
    fn other_routes_get_method_and_template_names() {
        let mut s = span(
            SpanKind::Server,
            "GET",
            "url.path",
            &format!("/namespace/testfs/blobs/sha256:{HEX}/metainfo"),
        );
        enrich(&mut s);
        assert_eq!(s.name, "GET /namespace/{namespace}/blobs/{digest}/metainfo");
        let mut c = span(
            SpanKind::Client,
            "HEAD",
            "url.full",
            &format!("http://localhost:14000/files/blobs/{HEX}"),
        );
        enrich(&mut c);
        assert_eq!(c.name, "HEAD /files/blobs/{hex}");
        assert_eq!(
            c.attr("kraken.digest"),
            Some(&AttrValue::Str(format!("sha256:{HEX}")))
        );
        let mut u = span(
            SpanKind::Server,
            "PATCH",
            "url.path",
            &format!("/namespace/ns/blobs/sha256:{HEX}/uploads/u-1"),
        );
        enrich(&mut u);
        assert_eq!(
            u.attr("kraken.upload_id"),
            Some(&AttrValue::Str("u-1".into()))
        );
    }

    #[test]
    fn non_kraken_paths_and_wrong_methods_are_untouched() {
        for (method, path) in [
            ("GET", "/hello"),
            ("POST", "/namespace/x/blobs/y"),
            ("GET", "/namespace//blobs/y"),
            ("GET", "/"),
        ] {
            let mut s = span(SpanKind::Server, method, "url.path", path);
            let before = s.clone();
            enrich(&mut s);
            assert_eq!(s, before, "{method} {path}");
        }
    }

    #[test]
    fn digest_and_announce_lookups() {
        let path = format!("/namespace/library%2Fubuntu/blobs/sha256:{HEX}");
        assert_eq!(digest_in_path("GET", &path), Some(format!("sha256:{HEX}")));
        assert_eq!(digest_in_path("GET", "/hello"), None);
        assert!(is_announce(
            "/announce/42b301ff477cff1bce1bc1ad8b9fa3e419fab348"
        ));
        assert!(!is_announce("/announced"));
        assert!(is_noise("/health") && is_noise("/readiness") && !is_noise("/healthz/x"));
    }

    #[test]
    fn registry_pulls_with_multi_segment_repositories() {
        let mut s = span(
            SpanKind::Server,
            "GET",
            "url.path",
            &format!("/v2/library/ubuntu/blobs/sha256:{HEX}"),
        );
        enrich(&mut s);
        assert_eq!(s.name, "agent.download_blob");
        assert_eq!(
            s.attr("http.route"),
            Some(&AttrValue::Str("/v2/{repo...}/blobs/{digest}".into()))
        );
        assert_eq!(
            s.attr("kraken.namespace"),
            Some(&AttrValue::Str("library/ubuntu".into()))
        );
        assert_eq!(
            s.attr("kraken.digest"),
            Some(&AttrValue::Str(format!("sha256:{HEX}")))
        );
        let mut m = span(
            SpanKind::Server,
            "GET",
            "url.path",
            "/v2/a/b/c/manifests/v1",
        );
        enrich(&mut m);
        assert_eq!(m.name, "GET /v2/{repo...}/manifests/{reference}");
        assert_eq!(
            m.attr("kraken.namespace"),
            Some(&AttrValue::Str("a/b/c".into()))
        );
        for bad in ["/v2/blobs/x", "/v2//blobs/x", "/v2/r/blobs/"] {
            let mut b = span(SpanKind::Server, "GET", "url.path", bad);
            let before = b.clone();
            enrich(&mut b);
            assert_eq!(b, before, "{bad}");
        }
    }

    #[test]
    fn upload_requests_on_proxy_and_origin() {
        let u = upload_request("POST", "/v2/library/ubuntu/blobs/uploads/").unwrap();
        assert_eq!(
            (u.span_name, u.step, u.namespace.as_str(), &u.upload_id),
            ("proxy.upload", UploadStep::Start, "library/ubuntu", &None)
        );
        let u = upload_request("PUT", "/v2/library/ubuntu/blobs/uploads/u-1").unwrap();
        assert_eq!(
            (u.step, u.upload_id.as_deref()),
            (UploadStep::Commit, Some("u-1"))
        );
        let path = format!("/namespace/a%2Fb/blobs/sha256:{HEX}/uploads/u-2");
        let u = upload_request("PATCH", &path).unwrap();
        assert_eq!(u.span_name, "origin.store_blob");
        assert_eq!(u.step, UploadStep::Chunk);
        assert_eq!(u.namespace, "a/b");
        assert_eq!(u.digest, Some(format!("sha256:{HEX}")));
        assert_eq!(u.replicate, Some(true));
        let u = upload_request("POST", &format!("/internal/blobs/sha256:{HEX}/uploads")).unwrap();
        assert_eq!(
            (u.span_name, u.replicate),
            ("origin.receive_replica", Some(false))
        );
        let dup = format!("/internal/duplicate/namespace/a/blobs/sha256:{HEX}/uploads/u-3");
        let u = upload_request("PUT", &dup).unwrap();
        assert_eq!(
            (u.span_name, u.step, u.duplicate),
            ("origin.store_blob", UploadStep::Commit, true)
        );
        assert_eq!(upload_request("GET", "/v2/r/blobs/uploads/u"), None);
        assert_eq!(
            upload_request("HEAD", &format!("/v2/r/blobs/sha256:{HEX}")),
            None
        );
        assert_eq!(
            backend_blob("POST", &format!("/files/blobs/{HEX}")),
            Some(format!("sha256:{HEX}"))
        );
        assert_eq!(backend_blob("POST", "/files/tags/x"), None);
        let mut c = span(
            SpanKind::Client,
            "POST",
            "url.full",
            &format!("http://localhost:14000/files/blobs/{HEX}"),
        );
        enrich(&mut c);
        assert_eq!(c.name, "backend.upload");
        // An upload id cut off by the client path capture is not reported.
        let long = format!(
            "http://o:1/namespace/TODO/blobs/sha256:{HEX}/uploads/8885d7d8-5134-4514-ac13-c7742dceac95"
        );
        let cut = &long[..long.find("/namespace").unwrap() + tracer_common::event::PATH_LEN];
        let mut p = span(SpanKind::Client, "PUT", "url.full", cut);
        enrich(&mut p);
        assert_eq!(p.attr("kraken.upload_id"), None);
        assert_eq!(
            p.attr("kraken.digest"),
            Some(&AttrValue::Str(format!("sha256:{HEX}")))
        );
        assert_eq!(
            c.attr("kraken.backend_type"),
            Some(&AttrValue::Str("testfs".into()))
        );
    }

    #[test]
    fn tags_in_build_index_and_remote_replication_paths() {
        assert_eq!(
            tag_in_path("HEAD", "/tags/repo%2Fa:v1"),
            Some("repo/a:v1".into())
        );
        let put = format!("/tags/repo%2Fa:v1/digest/sha256:{HEX}");
        assert_eq!(tag_in_path("PUT", &put), Some("repo/a:v1".into()));
        assert!(is_tag_put("PUT", &put) && !is_tag_put("GET", "/tags/x"));
        let remote = format!("/namespace/repo%2Fa:v1/blobs/sha256:{HEX}/remote/localhost:15022");
        assert_eq!(tag_in_path("POST", &remote), Some("repo/a:v1".into()));
        let mut s = span(SpanKind::Server, "POST", "url.path", &remote);
        enrich(&mut s);
        assert_eq!(s.name, "origin.replicate_to_remote");
        assert_eq!(
            s.attr("kraken.remote"),
            Some(&AttrValue::Str("localhost:15022".into()))
        );
        assert_eq!(tag_in_path("GET", "/origin"), None);
    }

    #[test]
    fn unescape_and_digest() {
        assert_eq!(unescape("library%2Fubuntu"), "library/ubuntu");
        assert_eq!(unescape("bad%zz%2"), "bad%zz%2");
        assert_eq!(digest("sha256%3Aab"), "sha256:ab");
        assert_eq!(digest("ab"), "sha256:ab");
    }
}
