//! `kraken-tracer inspect <exe|pid>`: what the tracer would probe, without attaching.

use std::path::PathBuf;

use crate::{
    offsets,
    symbols::{Binary, SymbolError},
    tracer::place_all,
};

#[derive(Debug, thiserror::Error)]
pub enum InspectError {
    #[error(transparent)]
    Symbol(#[from] SymbolError),
    #[error("cannot find Go struct offsets: {0}")]
    Offsets(#[from] offsets::OffsetsError),
}

pub fn run(target: &str) -> Result<(), InspectError> {
    let path = match target.parse::<u32>() {
        Ok(pid) => PathBuf::from(format!("/proc/{pid}/exe")),
        Err(_) => PathBuf::from(target),
    };
    let binary = Binary::open(&path)?;
    println!("executable: {}", binary.path().display());
    println!("architecture: {}", binary.arch());
    println!(
        "go version: {}",
        binary
            .go_version()
            .map_or_else(|| "unknown".to_owned(), ToString::to_string)
    );
    println!(
        "symbols: {}; DWARF: {}",
        if binary.is_stripped() {
            "stripped (using .gopclntab)"
        } else {
            ".symtab"
        },
        if binary.has_dwarf() { "yes" } else { "no" }
    );
    let version = binary.go_version().map(|v| (v.major, v.minor, v.patch));
    let (offs, source) = offsets::resolve(binary.bytes(), version)?;
    println!("struct offsets ({source:?}): {offs:?}");
    if let Some(v) = crate::kraken::kraken_version(&binary) {
        println!("Kraken {v}: Kraken route names, attributes and probes apply");
    }
    let (placed, skipped) = place_all(&binary)?;
    placed.iter().for_each(|p| println!("{p}"));
    skipped.iter().for_each(|s| println!("{s}"));
    Ok(())
}
