//! Where the set-up installs built tools (Jaeger, Kraken), shared by xtask and the test harness
//! (`tests/src/lib.rs` includes this file), so the convention is written once:
//! `<cache>/kraken-tracer/<name>`, `<cache>` being `$XDG_CACHE_HOME` or `~/.cache`.
//! An environment variable, when set and non-empty, overrides the path.

use std::{env, path::PathBuf};

/// `$override_var` if set, else `<cache>/kraken-tracer/<name>`.
pub fn tool_path(override_var: &str, name: &str) -> PathBuf {
    if let Some(p) = env::var_os(override_var).filter(|p| !p.is_empty()) {
        return PathBuf::from(p);
    }
    env::var_os("XDG_CACHE_HOME")
        .filter(|v| !v.is_empty())
        .map_or_else(
            || PathBuf::from(env::var_os("HOME").unwrap_or_default()).join(".cache"),
            PathBuf::from,
        )
        .join("kraken-tracer")
        .join(name)
}

/// The Jaeger binary (`KRAKEN_TRACER_JAEGER_BIN` overrides).
pub fn jaeger_bin(version: &str) -> PathBuf {
    tool_path("KRAKEN_TRACER_JAEGER_BIN", &format!("bin/jaeger-{version}"))
}

/// Kraken's install folder, holding `bin/` and `config/` (`KRAKEN_TRACER_KRAKEN_DIR` overrides).
pub fn kraken_dir(version: &str) -> PathBuf {
    tool_path("KRAKEN_TRACER_KRAKEN_DIR", &format!("kraken-{version}"))
}
