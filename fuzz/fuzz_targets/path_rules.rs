//! A path rule (`GLOB=RATIO` or a glob) and a request path, on two lines; checks the
//! one-pass matcher against a backtracking one.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| kraken_tracer::fuzzing::path_rules(data));
