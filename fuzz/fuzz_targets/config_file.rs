//! A TOML config file as `kraken-tracer config --config FILE` reads it.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| kraken_tracer::fuzzing::config_file(data));
