//! An ELF file's DWARF (plain or compressed sections) through `offsets::resolve`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| kraken_tracer::fuzzing::dwarf_offsets(data));
