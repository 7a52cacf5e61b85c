//! A finished span as the correlator produces it: plain data, no OpenTelemetry types. The
//! exporter turns it into OTLP; `--stdout` prints it.

use std::{sync::Arc, time::SystemTime};

/// Who produced a span: one per traced process (OTLP resource attributes).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct ProcessResource {
    /// `service.name`: the executable's name unless overridden per PID.
    pub service_name: String,
    /// `process.pid`.
    pub pid: u32,
    /// `host.name`.
    pub host_name: String,
    /// `process.executable.path`.
    pub executable_path: String,
    /// `process.runtime.version` (the target's Go version), if known.
    pub runtime_version: Option<String>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum SpanKind {
    Server,
    Client,
    Internal,
}

#[derive(Clone, Debug, PartialEq)]
pub enum AttrValue {
    Str(String),
    Int(i64),
    Bool(bool),
}

impl From<String> for AttrValue {
    fn from(v: String) -> Self {
        AttrValue::Str(v)
    }
}
impl From<&str> for AttrValue {
    fn from(v: &str) -> Self {
        AttrValue::Str(v.to_owned())
    }
}
impl From<i64> for AttrValue {
    fn from(v: i64) -> Self {
        AttrValue::Int(v)
    }
}
impl From<bool> for AttrValue {
    fn from(v: bool) -> Self {
        AttrValue::Bool(v)
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SpanStatus {
    Unset,
    Error(String),
}

#[derive(Clone, Debug, PartialEq)]
pub struct SpanRecord {
    pub trace_id: [u8; 16],
    pub span_id: [u8; 8],
    pub parent_span_id: Option<[u8; 8]>,
    /// W3C sampled flag of the trace (unsampled spans are never exported).
    pub sampled: bool,
    pub name: String,
    pub kind: SpanKind,
    pub start: SystemTime,
    pub end: SystemTime,
    pub attributes: Vec<(&'static str, AttrValue)>,
    pub status: SpanStatus,
    pub resource: Arc<ProcessResource>,
}

impl SpanRecord {
    pub fn attr(&self, key: &str) -> Option<&AttrValue> {
        self.attributes
            .iter()
            .find(|(k, _)| *k == key)
            .map(|(_, v)| v)
    }
}

pub fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write as _;
    bytes
        .iter()
        .fold(String::with_capacity(bytes.len() * 2), |mut s, b| {
            let _ = write!(s, "{b:02x}");
            s
        })
}
