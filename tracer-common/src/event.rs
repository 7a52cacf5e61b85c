//! Events sent through the ring buffer: a fixed header first, then a payload.

/// Bytes kept of the request method.
pub const METHOD_LEN: usize = 16;
/// Bytes kept of the request target (path and query).
pub const URI_LEN: usize = 192;
/// Bytes kept of Host and RemoteAddr.
pub const ADDR_LEN: usize = 64;

/// Common header; user space reads `probe` to know the payload type.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct EventHeader {
    /// `ProbeId` as u32.
    pub probe: u32,
    /// Process id (tgid) in the root PID namespace.
    pub tgid: u32,
    /// Thread id in the root PID namespace.
    pub tid: u32,
    pub _pad: u32,
    /// Address of the running goroutine's `g` (R14 on amd64, X28 on arm64).
    pub goroutine: u64,
    /// `bpf_ktime_get_ns()` (CLOCK_MONOTONIC) at the probe hit.
    pub ktime_ns: u64,
}

/// A Go string copied from the target: `len` is the real length, of which at most
/// `N` bytes are in `bytes`.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct GoStr<const N: usize> {
    pub len: u32,
    /// Non-zero when reading the bytes failed (page not resident, bad pointer).
    pub read_error: u32,
    pub bytes: [u8; N],
}

impl<const N: usize> GoStr<N> {
    /// The captured bytes (possibly truncated).
    pub fn captured(&self) -> &[u8] {
        let n = (self.len as usize).min(N);
        &self.bytes[..n]
    }

    pub fn truncated(&self) -> bool {
        self.len as usize > N
    }
}

/// `ProbeId::HttpServe`: a Go net/http server request enters its handler.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct HttpServeEvent {
    pub hdr: EventHeader,
    /// `*http.Request`, to pair with later events of the same request.
    pub request: u64,
    pub method: GoStr<METHOD_LEN>,
    pub uri: GoStr<URI_LEN>,
    pub host: GoStr<ADDR_LEN>,
    pub remote_addr: GoStr<ADDR_LEN>,
}

/// Offset of `EventHeader::probe` in every event; the decoder relies on it.
pub const PROBE_FIELD_OFFSET: usize = 0;
