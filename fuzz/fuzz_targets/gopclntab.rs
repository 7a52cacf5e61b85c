//! A `.gopclntab` table (after an 8-byte text start): header, function table, lookups, and
//! the magic and moduledata scans.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| kraken_tracer::fuzzing::gopclntab(data));
