//! Go struct field offsets the kernel programs need, per traced process.

/// Offsets (in bytes) of the Go struct fields read by the kernel programs.
/// `u32::MAX` marks a field that does not exist in the target's Go version.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct GoOffsets {
    /// `net/http.Request.Method` (string).
    pub request_method: u32,
    /// `net/http.Request.URL` (*url.URL).
    pub request_url: u32,
    /// `net/http.Request.Host` (string).
    pub request_host: u32,
    /// `net/http.Request.RemoteAddr` (string).
    pub request_remote_addr: u32,
    /// `net/http.Request.RequestURI` (string): the request target exactly as sent.
    pub request_uri: u32,
    /// `net/http.Request.Pattern` (string, Go >= 1.23; else `u32::MAX`).
    pub request_pattern: u32,
    /// `net/url.URL.Scheme` (string).
    pub url_scheme: u32,
    /// `net/url.URL.Host` (string).
    pub url_host: u32,
    /// `net/url.URL.Path` (string).
    pub url_path: u32,
    /// `net/url.URL.RawPath` (string).
    pub url_raw_path: u32,
    /// `net/http.response.req` (*Request).
    pub response_req: u32,
    /// `net/http.response.status` (int).
    pub response_status: u32,
    /// `net/http.response.written` (int64): body bytes written.
    pub response_written: u32,
    /// `net/http.Response.StatusCode` (int).
    pub resp_status_code: u32,
    /// `runtime.g.goid` (uint64).
    pub g_goid: u32,
    /// `runtime.g.parentGoid` (uint64): goid of the goroutine that started this one.
    pub g_parent_goid: u32,
    /// `net/http.Request.Header` (http.Header, a map: one pointer).
    pub request_header: u32,
    /// `net/http.Request.ContentLength` (int64: -1 unknown, 0 no body).
    pub request_content_length: u32,
}

/// What the kernel knows about one traced process (value of the PROCESSES map).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ProcessConfig {
    pub offsets: GoOffsets,
    /// Go version of the target as major*100+minor (e.g. 126), for version-dependent logic.
    pub go_version: u32,
    /// `FLAG_*` bits: what this process's probes may capture.
    pub flags: u32,
}

/// Capture the query string of server requests (off: the kernel reads the path only).
pub const FLAG_CAPTURE_QUERY: u32 = 1;
/// Leave client requests' contexts for the sk_msg program (`--propagation on`).
pub const FLAG_PROPAGATE: u32 = 2;
/// A Kraken process: its blob downloads keep their context by blob digest, for the announces.
pub const FLAG_KRAKEN: u32 = 4;

#[cfg(feature = "user")]
unsafe impl aya::Pod for ProcessConfig {}
