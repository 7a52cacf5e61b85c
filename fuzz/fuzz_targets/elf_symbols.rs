//! A whole file through `Binary::from_bytes` (ELF, .symtab, .gopclntab, build info), then
//! probe-site selection for every probe, as the tracer does when it attaches.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| kraken_tracer::fuzzing::elf_symbols(data));
