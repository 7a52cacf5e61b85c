//! Decoding ring-buffer records into typed events. Pure: no I/O, never panics on bad bytes.

use std::fmt;

use tracer_common::{
    event::{
        EventHeader, HttpClientEndEvent, HttpClientEvent, HttpServeEndEvent, HttpServeEvent,
        IDS_LOCAL_PARENT, IDS_PENDING, IDS_REMOTE_PARENT, IDS_SAMPLED, IDS_VALID,
        KrakenDigestEvent, SpanIds,
    },
    probe::ProbeId,
};

use crate::socket::TcpCounters;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DecodeError {
    #[error("record of {len} bytes is shorter than the event header")]
    TooShort { len: usize },
    #[error("unknown probe id {0}")]
    UnknownProbe(u32),
    #[error("{probe:?} record has {len} bytes, expected {expected}")]
    WrongSize {
        probe: ProbeId,
        len: usize,
        expected: usize,
    },
}

/// A decoded event. Strings are copied out and made lossy-UTF-8.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    HttpServe(HttpServe),
    HttpServeEnd(HttpServeEnd),
    HttpClient(HttpClient),
    HttpClientEnd(HttpClientEnd),
    /// One of the Kraken probes (`hdr.probe` tells which).
    Kraken(KrakenEvent),
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Header {
    pub probe: ProbeId,
    pub tgid: u32,
    pub tid: u32,
    pub goroutine: u64,
    pub goid: u64,
    pub ktime_ns: u64,
}

/// A captured Go string: its text (possibly cut at the capture limit) and whether it was cut.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Captured {
    pub text: String,
    pub truncated: bool,
    pub read_error: bool,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HttpServe {
    pub hdr: Header,
    pub request: u64,
    pub method: Captured,
    /// The request target as sent (path and query).
    pub uri: Captured,
    pub host: Captured,
    pub remote_addr: Captured,
    /// The `traceparent` header as received (empty when absent).
    pub traceparent: Captured,
    /// The request body's size (`Request.ContentLength`): `None` when unknown (chunked
    /// transfer encoding, or unreadable), `Some(0)` for no body.
    pub content_length: Option<i64>,
    /// The process's TCP counters as the handler starts (`None`: socket probes off).
    pub tcp: Option<TcpCounters>,
    /// The ids the kernel gave the span.
    pub ids: Option<KernelIds>,
}

/// Ids the kernel gave a span (it knows them when the request is written, so it can send them
/// on in `traceparent`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KernelIds {
    pub trace_id: [u8; 16],
    pub span_id: [u8; 8],
    /// The parent the kernel knew: the remote caller (from `traceparent`) or the local span
    /// of the calling goroutine.
    pub parent_span_id: Option<[u8; 8]>,
    /// The parent came from an incoming `traceparent`, or (client) the application's own.
    pub remote_parent: bool,
    pub sampled: bool,
    /// Client: the kernel queued this context for insertion into the request.
    pub pending: bool,
}

impl KernelIds {
    fn from(ids: &SpanIds) -> Option<KernelIds> {
        if ids.flags & IDS_VALID == 0 || ids.span_id == [0; 8] || ids.trace_id == [0; 16] {
            return None;
        }
        let has_parent =
            ids.flags & (IDS_REMOTE_PARENT | IDS_LOCAL_PARENT) != 0 && ids.parent_span_id != [0; 8];
        Some(KernelIds {
            trace_id: ids.trace_id,
            span_id: ids.span_id,
            parent_span_id: has_parent.then_some(ids.parent_span_id),
            remote_parent: ids.flags & IDS_REMOTE_PARENT != 0,
            sampled: ids.flags & IDS_SAMPLED != 0,
            pending: ids.flags & IDS_PENDING != 0,
        })
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HttpServeEnd {
    pub hdr: Header,
    pub request: u64,
    pub status: i64,
    pub written: i64,
    /// Go >= 1.23 ServeMux pattern (e.g. "GET /items/{id}"), empty otherwise.
    pub pattern: Captured,
    /// The process's TCP counters as the response finishes (`None`: socket probes off).
    pub tcp: Option<TcpCounters>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HttpClient {
    pub hdr: Header,
    pub request: u64,
    pub parent_goid: u64,
    pub method: Captured,
    pub scheme: Captured,
    pub host: Captured,
    pub path: Captured,
    /// The application's own `traceparent` header on this request (empty when absent).
    pub traceparent: Captured,
    pub ids: Option<KernelIds>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HttpClientEnd {
    pub hdr: Header,
    pub response: u64,
    pub status: i64,
    pub error: bool,
}

/// A Kraken probe's event (see `tracer_common::event::KrakenDigestEvent`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KrakenEvent {
    pub hdr: Header,
    /// The blob's digest hex (empty for `KrakenRefreshDone`).
    pub digest_hex: Captured,
    /// Blob size (`KrakenCacheWrite`), non-zero on error (`KrakenRefreshDone`), else 0.
    pub value: u64,
}

impl Event {
    pub fn header(&self) -> &Header {
        match self {
            Event::Kraken(e) => &e.hdr,
            Event::HttpServe(e) => &e.hdr,
            Event::HttpServeEnd(e) => &e.hdr,
            Event::HttpClient(e) => &e.hdr,
            Event::HttpClientEnd(e) => &e.hdr,
        }
    }
}

fn captured<const N: usize>(s: &tracer_common::event::GoStr<N>) -> Captured {
    Captured {
        text: String::from_utf8_lossy(s.captured()).into_owned(),
        truncated: s.truncated(),
        read_error: s.read_error != 0,
    }
}

/// Copies a `#[repr(C)]` plain-data value out of an unaligned byte slice of exactly its size.
fn read_pod<T: Copy>(bytes: &[u8]) -> Option<T> {
    if bytes.len() < size_of::<T>() {
        return None;
    }
    // SAFETY: the length is checked above; T is a repr(C) type made only of integers and byte
    // arrays, for which every bit pattern is valid; read_unaligned copes with any alignment.
    Some(unsafe { std::ptr::read_unaligned(bytes.as_ptr().cast::<T>()) })
}

pub fn decode(bytes: &[u8]) -> Result<Event, DecodeError> {
    let raw: EventHeader = read_pod(bytes).ok_or(DecodeError::TooShort { len: bytes.len() })?;
    let probe = ProbeId::from_u32(raw.probe).ok_or(DecodeError::UnknownProbe(raw.probe))?;
    let hdr = Header {
        probe,
        tgid: raw.tgid,
        tid: raw.tid,
        goroutine: raw.goroutine,
        goid: raw.goid,
        ktime_ns: raw.ktime_ns,
    };
    let sized = |expected: usize| {
        if bytes.len() == expected {
            Ok(())
        } else {
            Err(DecodeError::WrongSize {
                probe,
                len: bytes.len(),
                expected,
            })
        }
    };
    let short = || DecodeError::TooShort { len: bytes.len() };
    match probe {
        ProbeId::HttpServe => {
            sized(size_of::<HttpServeEvent>())?;
            let e: HttpServeEvent = read_pod(bytes).ok_or_else(short)?;
            Ok(Event::HttpServe(HttpServe {
                hdr,
                request: e.request,
                method: captured(&e.method),
                uri: captured(&e.uri),
                host: captured(&e.host),
                remote_addr: captured(&e.remote_addr),
                traceparent: captured(&e.traceparent),
                content_length: Some(e.content_length).filter(|n| *n >= 0),
                tcp: TcpCounters::from_snapshot(&e.tcp),
                ids: KernelIds::from(&e.ids),
            }))
        }
        ProbeId::HttpServeEnd => {
            sized(size_of::<HttpServeEndEvent>())?;
            let e: HttpServeEndEvent = read_pod(bytes).ok_or_else(short)?;
            Ok(Event::HttpServeEnd(HttpServeEnd {
                hdr,
                request: e.request,
                status: e.status,
                written: e.written,
                pattern: captured(&e.pattern),
                tcp: TcpCounters::from_snapshot(&e.tcp),
            }))
        }
        ProbeId::HttpClient => {
            sized(size_of::<HttpClientEvent>())?;
            let e: HttpClientEvent = read_pod(bytes).ok_or_else(short)?;
            Ok(Event::HttpClient(HttpClient {
                hdr,
                request: e.request,
                parent_goid: e.parent_goid,
                method: captured(&e.method),
                scheme: captured(&e.scheme),
                host: captured(&e.host),
                path: captured(&e.path),
                traceparent: captured(&e.traceparent),
                ids: KernelIds::from(&e.ids),
            }))
        }
        ProbeId::KrakenAnnounce
        | ProbeId::KrakenCached
        | ProbeId::KrakenRefresh
        | ProbeId::KrakenCacheWrite
        | ProbeId::KrakenRefreshDone => {
            sized(size_of::<KrakenDigestEvent>())?;
            let e: KrakenDigestEvent = read_pod(bytes).ok_or_else(short)?;
            Ok(Event::Kraken(KrakenEvent {
                hdr,
                digest_hex: captured(&e.digest_hex),
                value: e.value,
            }))
        }
        ProbeId::HttpClientEnd => {
            sized(size_of::<HttpClientEndEvent>())?;
            let e: HttpClientEndEvent = read_pod(bytes).ok_or_else(short)?;
            Ok(Event::HttpClientEnd(HttpClientEnd {
                hdr,
                response: e.response,
                status: e.status,
                error: e.error != 0,
            }))
        }
    }
}

impl HttpServe {
    /// The path part of the request target, without the query string.
    pub fn path(&self) -> &str {
        self.uri.text.split('?').next().unwrap_or_default()
    }

    pub fn has_query(&self) -> bool {
        self.uri.text.contains('?')
    }
}

impl fmt::Display for Event {
    /// One line per event; query strings are never printed (they may carry secrets).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let h = self.header();
        write!(
            f,
            "{:?} pid={} tid={} goid={} t={}",
            h.probe, h.tgid, h.tid, h.goid, h.ktime_ns
        )?;
        match self {
            Event::HttpServe(e) => {
                write!(
                    f,
                    " method={} path={}{}{} host={} remote={}",
                    e.method.text,
                    e.path(),
                    if e.has_query() { "?<redacted>" } else { "" },
                    if e.uri.truncated { " (truncated)" } else { "" },
                    e.host.text,
                    e.remote_addr.text
                )?;
                if !e.traceparent.text.is_empty() {
                    write!(
                        f,
                        " traceparent={}{}",
                        e.traceparent.text,
                        if e.traceparent.truncated {
                            " (truncated)"
                        } else {
                            ""
                        }
                    )?;
                }
                if e.traceparent.read_error {
                    f.write_str(" traceparent_read_error")?;
                }
                Ok(())
            }
            Event::HttpServeEnd(e) => write!(
                f,
                " status={} bytes={} pattern={:?}",
                e.status, e.written, e.pattern.text
            ),
            Event::HttpClient(e) => write!(
                f,
                " parent_goid={} method={} url={}://{}{}",
                e.parent_goid, e.method.text, e.scheme.text, e.host.text, e.path.text
            ),
            Event::HttpClientEnd(e) => write!(f, " status={} error={}", e.status, e.error),
            Event::Kraken(e) => write!(f, " digest=sha256:{} value={}", e.digest_hex.text, e.value),
        }
    }
}

#[cfg(test)]
mod tests {
    use tracer_common::event::{ADDR_LEN, GoStr, METHOD_LEN, TRACEPARENT_LEN, URI_LEN};

    use super::*;

    fn gostr<const N: usize>(s: &str) -> GoStr<N> {
        let mut g = GoStr {
            len: u32::try_from(s.len()).unwrap(),
            read_error: 0,
            bytes: [0; N],
        };
        let n = s.len().min(N);
        g.bytes[..n].copy_from_slice(&s.as_bytes()[..n]);
        g
    }

    fn encode(e: &HttpServeEvent) -> Vec<u8> {
        let p = std::ptr::from_ref(e).cast::<u8>();
        unsafe { std::slice::from_raw_parts(p, size_of::<HttpServeEvent>()) }.to_vec()
    }

    fn sample(uri: &str) -> HttpServeEvent {
        HttpServeEvent {
            hdr: EventHeader {
                probe: ProbeId::HttpServe as u32,
                tgid: 42,
                tid: 43,
                _pad: 0,
                goroutine: 0xc000_0001,
                goid: 7,
                ktime_ns: 123,
            },
            request: 0xc000_1000,
            content_length: 4096,
            tcp: tracer_common::event::TcpSnapshot {
                rx_bytes: 10,
                tx_bytes: 20,
                counted: 1,
                _pad: 0,
            },
            method: gostr::<METHOD_LEN>("GET"),
            uri: gostr::<URI_LEN>(uri),
            host: gostr::<ADDR_LEN>("127.0.0.1:8080"),
            remote_addr: gostr::<ADDR_LEN>("127.0.0.1:5555"),
            traceparent: gostr::<TRACEPARENT_LEN>(""),
            ids: tracer_common::event::SpanIds::default(),
        }
    }

    #[test]
    fn round_trip() {
        let bytes = encode(&sample("/namespace/x/blobs/sha256:ab?token=secret"));
        let Event::HttpServe(e) = decode(&bytes).unwrap() else {
            panic!("kind")
        };
        assert_eq!(e.hdr.tgid, 42);
        assert_eq!(e.hdr.goid, 7);
        assert_eq!(e.hdr.goroutine, 0xc000_0001);
        assert_eq!(e.method.text, "GET");
        assert_eq!(e.path(), "/namespace/x/blobs/sha256:ab");
        assert_eq!(e.host.text, "127.0.0.1:8080");
        assert_eq!(e.content_length, Some(4096));
        assert_eq!(
            e.tcp,
            Some(TcpCounters {
                rx_bytes: 10,
                tx_bytes: 20
            })
        );
        let line = decode(&bytes).unwrap().to_string();
        assert!(!line.contains("secret"), "query leaked: {line}");
        assert!(line.contains("?<redacted>"));
    }

    #[test]
    fn request_body_size_is_known_only_when_not_negative() {
        for (raw, want) in [
            (0, Some(0)),
            (131_072, Some(131_072)),
            (-1, None),
            (i64::MIN, None),
            (i64::MAX, Some(i64::MAX)),
        ] {
            let mut ev = sample("/");
            ev.content_length = raw;
            let Event::HttpServe(e) = decode(&encode(&ev)).unwrap() else {
                panic!("kind")
            };
            assert_eq!(e.content_length, want, "{raw}");
        }
    }

    #[test]
    fn long_uri_is_marked_truncated() {
        let long = format!("/{}", "a".repeat(URI_LEN + 10));
        let Event::HttpServe(e) = decode(&encode(&sample(&long))).unwrap() else {
            panic!("kind")
        };
        assert!(e.uri.truncated);
        assert_eq!(e.uri.text.len(), URI_LEN);
    }

    #[test]
    fn bad_records_are_errors() {
        assert_eq!(decode(&[1, 2, 3]), Err(DecodeError::TooShort { len: 3 }));
        let mut bytes = encode(&sample("/"));
        bytes[0] = 200;
        assert_eq!(decode(&bytes), Err(DecodeError::UnknownProbe(200)));
        let bytes = encode(&sample("/"));
        assert!(matches!(
            decode(&bytes[..bytes.len() - 1]),
            Err(DecodeError::WrongSize { .. })
        ));
    }

    #[test]
    fn layout_is_stable() {
        // The kernel writes these; a change of size or field offset must be deliberate.
        assert_eq!(size_of::<EventHeader>(), 40);
        assert_eq!(std::mem::offset_of!(EventHeader, probe), 0);
        assert_eq!(std::mem::offset_of!(HttpServeEvent, request), 40);
        assert_eq!(std::mem::offset_of!(HttpServeEvent, content_length), 48);
        for size in [
            size_of::<HttpServeEvent>(),
            size_of::<HttpServeEndEvent>(),
            size_of::<HttpClientEvent>(),
            size_of::<HttpClientEndEvent>(),
            size_of::<KrakenDigestEvent>(),
        ] {
            assert_eq!(size % 8, 0, "ring-buffer records are 8-byte aligned");
        }
    }
}
