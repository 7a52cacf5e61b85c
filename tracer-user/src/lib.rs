//! kraken-tracer's library: everything the `kraken-tracer` binary does, stage by stage.
//!
//! target (pid → executable, Go version, offsets) → symbols (functions, probe sites)
//! → tracer (load eBPF, attach uprobes) → reader (ring buffer) → events (decode) → output.

pub mod clock;
pub mod config;
pub mod config_file;
pub mod correlate;
pub mod events;
pub mod export;
pub mod features;
pub mod follow;
#[doc(hidden)]
pub mod fuzzing;
pub mod inspect;
pub mod keep;
pub mod kraken;
pub mod metrics;
pub mod offsets;
pub mod pipeline;
pub mod reader;
pub mod rules;
pub mod sample;
pub mod session;
pub mod socket;
pub mod sockets;
pub mod span;
pub mod symbols;
pub mod target;
pub mod traceparent;
pub mod tracer;
pub mod tree;
pub mod watch;

/// The eBPF object built from `tracer-ebpf` (empty when built with AYA_BUILD_SKIP=1).
pub static EBPF_OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/tracer"));
