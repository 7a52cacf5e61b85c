//! A Go build info blob (`\xff Go buildinf:` ...), inline and pointer formats, and modinfo.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| kraken_tracer::fuzzing::buildinfo(data));
