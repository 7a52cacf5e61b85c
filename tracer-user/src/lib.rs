//! kraken-tracer's library: everything the `kraken-tracer` binary does, stage by stage.

pub mod offsets;
pub mod symbols;
