//! A ring-buffer record as the kernel writes it (with the HTTP strings copied from the
//! traced process), decoded and turned into paths, digests and trace context.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| kraken_tracer::fuzzing::event_decode(data));
