//! Entry points for the fuzz targets under `fuzz/` (cargo-fuzz, libFuzzer): each one feeds
//! untrusted bytes to a parser and then exercises what the tracer does with the result, so a
//! panic, an overflow, a hang or a huge allocation anywhere on that path is a finding.
//!
//! Not an API: hidden from the documentation, and it may change with the parsers. It exists so
//! the fuzz crate can reach `pub(crate)` parsers (the build info blob, the pclntab scans)
//! without widening their visibility.
//!
//! Every function here must stay cheap on a few kilobytes of input (libFuzzer runs them
//! millions of times) and must not panic on any input unless a property it checks is broken.

use std::path::PathBuf;

use tracer_common::probe::{PROBES, Site};

use crate::{
    events::{self, Event},
    kraken, offsets,
    rules::{self, PathGlob, PathRules, SampleRule},
    symbols::{Binary, BuildInfo, GoVersion, Image, PF_W, Pclntab, Segment, buildinfo, gopclntab},
    traceparent::TraceParent,
};

/// How many functions of a table the targets look at (bounded: a table can list thousands).
const MAX_FUNCTIONS: usize = 64;

/// The whole symbol path of `Binary::from_bytes` on a file: ELF, `.symtab`, `.gopclntab`
/// (section or magic scan, text start from moduledata), build info; then what the tracer does
/// next: resolving every probe's symbol and choosing its sites, and the Kraken version.
pub fn elf_symbols(bytes: &[u8]) {
    let Ok(bin) = Binary::from_bytes(PathBuf::from("fuzz-input"), bytes.to_vec()) else {
        return;
    };
    let _ = (bin.arch(), bin.is_stripped(), bin.has_dwarf());
    let _ = (bin.pclntab_address(), bin.pclntab_error());
    let _ = bin.go_version().map(ToString::to_string);
    let _ = kraken::kraken_version(&bin);
    if let Some(info) = bin.build_info() {
        let _ = info.setting("GOARCH");
    }
    // What the tracer does when it attaches (tracer.rs: resolve, then place the probe).
    for spec in PROBES {
        let Ok(f) = bin.lookup(spec.go_symbol) else {
            continue;
        };
        match spec.site {
            Site::Entry { reads_args } => {
                let _ = bin.entry_site(&f, reads_args);
            }
            Site::AfterCall { callee } => {
                let _ = bin.after_call_sites(&f, callee);
            }
        }
        let _ = bin.return_sites(&f);
    }
    // Every (bounded) function of the table, resolved by name as a user's symbol would be.
    if let Some(table) = bin.pclntab() {
        let _ = table.nfunc();
        let _ = table.text_start();
        for (name, entry, size) in table.functions().take(MAX_FUNCTIONS) {
            let _ = table.function_containing(entry.saturating_add(size / 2));
            if let Ok(f) = bin.lookup(name) {
                let _ = bin.entry_site(&f, true);
                let _ = bin.return_sites(&f);
            }
        }
        let _ = table.lookup("main.main.abi0");
    }
}

/// A `.gopclntab` on its own: the first 8 bytes are the text start the caller would pass
/// (little-endian; 0 for none), the rest is the table. Also the two scans that find a table and
/// its text start in a loaded image, with the table mapped both read-only and writable.
pub fn gopclntab(data: &[u8]) {
    let (text_start, table) = match data.split_first_chunk::<8>() {
        Some((ts, rest)) => (Some(u64::from_le_bytes(*ts)).filter(|&t| t != 0), rest),
        None => (None, data),
    };
    const VADDR: u64 = 0x40_0000;
    let len = table.len() as u64;
    let segments = [
        Segment {
            vaddr: VADDR,
            memsz: len,
            offset: 0,
            filesz: len,
            flags: 4,
        },
        Segment {
            vaddr: VADDR,
            memsz: len,
            offset: 0,
            filesz: len,
            flags: 4 | PF_W,
        },
    ];
    let image = Image {
        bytes: table,
        segments: &segments,
    };
    let _ = gopclntab::scan_for_magic(image);
    let Ok(header) = gopclntab::Header::parse(table) else {
        return;
    };
    let _ = header.needs_text_start();
    let _ = gopclntab::text_start_from_moduledata(image, table, VADDR, &header);
    let Ok(pcln) = Pclntab::parse(table, text_start) else {
        return;
    };
    let _ = (pcln.nfunc(), pcln.magic(), pcln.text_start(), pcln.header());
    let mut first = None;
    for (name, entry, size) in pcln.functions().take(MAX_FUNCTIONS) {
        first.get_or_insert(name);
        let _ = pcln.function_containing(entry);
        let _ = pcln.function_containing(entry.saturating_add(size));
    }
    if let Some(name) = first {
        let _ = pcln.lookup(name);
        let _ = pcln.lookup(&format!("{name}.abi0"));
    }
    let _ = pcln.function_containing(0);
    let _ = pcln.function_containing(u64::MAX);
}

/// A build info blob (starting with its magic), with the blob itself mapped as the writable
/// data segment the pre-1.18 format's pointers point into; also the search for the blob in
/// that segment, and the version and modinfo parsers on the raw text.
pub fn buildinfo(data: &[u8]) {
    let len = data.len() as u64;
    let segments = [Segment {
        vaddr: 0x1000,
        memsz: len,
        offset: 0,
        filesz: len,
        flags: 4 | PF_W,
    }];
    let image = Image {
        bytes: data,
        segments: &segments,
    };
    if let Ok(info) = buildinfo::parse_blob(data, image) {
        let _ = info.go_version.as_ref().map(|v| v.at_least(1, 26));
        let _ = info.module("github.com/uber/kraken");
    }
    let _ = buildinfo::find(image, None);
    let _ = buildinfo::find(image, Some((0, data.len())));
    let text = String::from_utf8_lossy(data);
    let _ = GoVersion::parse(&text);
    BuildInfo::default().parse_modinfo(&text);
}

/// Struct field offsets from an ELF file's DWARF (what `offsets::resolve` reads from every
/// traced binary), falling back to the table.
pub fn dwarf_offsets(bytes: &[u8]) {
    let _ = offsets::resolve(bytes, Some((1, 26, 0)));
}

/// One ring-buffer record, as the kernel wrote it (HTTP request strings copied from the traced
/// process included), and what the pipeline derives from its strings.
pub fn event_decode(bytes: &[u8]) {
    let Ok(event) = events::decode(bytes) else {
        return;
    };
    let _ = event.to_string();
    let _ = event.header();
    let rules = PathRules::new(&[], true, &[], &[], 1.0);
    match &event {
        Event::HttpServe(e) => {
            let path = e.path();
            let _ = e.has_query();
            let _ = TraceParent::parse(e.traceparent.text.as_bytes());
            let _ = kraken::digest_in_path(&e.method.text, path);
            let _ = kraken::is_announce(path);
            let _ = kraken::is_noise(path);
            let _ = rules.decide(path, false);
        }
        Event::HttpClient(e) => {
            let _ = kraken::digest_in_path(&e.method.text, &e.path.text);
            let _ = rules.decide(&e.path.text, true);
        }
        Event::HttpServeEnd(e) => {
            let _ = kraken::digest_in_path("GET", &e.pattern.text);
        }
        Event::HttpClientEnd(_) | Event::Kraken(_) => {}
    }
}

/// A `traceparent` header value; what parses must print back to a value that parses the same.
pub fn traceparent(bytes: &[u8]) {
    let Some(tp) = TraceParent::parse(bytes) else {
        return;
    };
    let printed = tp.to_string();
    assert_eq!(
        TraceParent::parse(printed.as_bytes()),
        Some(tp),
        "{printed}"
    );
    let _ = tp.sampled();
}

/// Path rules as a user writes them: the first line is a `--sample` rule (`GLOB=RATIO`) or a
/// glob, the second a request path. A valid glob must match like a backtracking matcher, print
/// back to itself, and fit the kernel's rule table.
pub fn path_rules(bytes: &[u8]) {
    let text = String::from_utf8_lossy(bytes);
    let (rule, path) = text.split_once('\n').unwrap_or((&text, ""));
    let _ = rules::glob_match(rule.as_bytes(), path.as_bytes());
    let _ = crate::config::parse_ratio(rule);
    let sample = SampleRule::parse(rule);
    let glob = match &sample {
        Ok(r) => Ok(r.glob.clone()),
        Err(_) => rule.parse::<PathGlob>(),
    };
    let Ok(glob) = glob else {
        return;
    };
    let query_free = path.split('?').next().unwrap_or_default();
    assert_eq!(
        glob.matches(path),
        reference_glob(glob.as_str().as_bytes(), query_free.as_bytes()),
        "{glob} vs {path:?}"
    );
    assert_eq!(glob.to_string().parse::<PathGlob>(), Ok(glob.clone()));
    if let Ok(r) = &sample {
        assert_eq!(SampleRule::parse(&r.to_string()), Ok(r.clone()));
    }
    let samples: Vec<SampleRule> = sample.into_iter().collect();
    let globs = [glob];
    let all = PathRules::new(&samples, true, &globs, &globs, 0.5);
    let _ = all.decide(path, false);
    let _ = all.decide(path, true);
    all.kernel()
        .expect("a few rules always fit the kernel table");
}

/// The backtracking definition of the glob language, to check the one-pass matcher against.
fn reference_glob(p: &[u8], t: &[u8]) -> bool {
    match p.first() {
        None => t.is_empty(),
        Some(b'*') if p.get(1) == Some(&b'*') => true,
        Some(b'*') => (0..=t.len())
            .take_while(|&k| k == 0 || t.get(k - 1) != Some(&b'/'))
            .any(|k| {
                reference_glob(
                    p.get(1..).unwrap_or_default(),
                    t.get(k..).unwrap_or_default(),
                )
            }),
        Some(&c) => {
            t.first() == Some(&c)
                && reference_glob(
                    p.get(1..).unwrap_or_default(),
                    t.get(1..).unwrap_or_default(),
                )
        }
    }
}

/// A config file (TOML) as `kraken-tracer config --config FILE` reads it. The file is written
/// to a per-process temporary path, since the parser takes a path.
pub fn config_file(bytes: &[u8]) {
    let path = std::env::temp_dir().join(format!("kraken-tracer-fuzz-{}.toml", std::process::id()));
    if std::fs::write(&path, bytes).is_err() {
        return;
    }
    let config = path.as_os_str().to_owned();
    let _ = crate::config_file::parse_cli([
        "kraken-tracer".into(),
        "config".into(),
        "--config".into(),
        config,
    ]);
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    /// Every committed fuzz input (the seed corpus under fuzz/corpus/ and the crash
    /// regressions under tests/data/fuzz/) goes through its target on every `cargo test`, so a
    /// regression shows without cargo-fuzz or a nightly feature.
    #[test]
    fn committed_fuzz_inputs_do_not_panic() {
        type Target = fn(&[u8]);
        let targets: [(&str, Target); 8] = [
            ("elf_symbols", super::elf_symbols),
            ("gopclntab", super::gopclntab),
            ("buildinfo", super::buildinfo),
            ("dwarf_offsets", super::dwarf_offsets),
            ("event_decode", super::event_decode),
            ("traceparent", super::traceparent),
            ("path_rules", super::path_rules),
            ("config_file", super::config_file),
        ];
        let root = Path::new(env!("CARGO_MANIFEST_DIR"));
        let mut ran = 0;
        for (name, target) in targets {
            let corpus = root.join("../fuzz/corpus").join(name);
            let Ok(dir) = std::fs::read_dir(&corpus) else {
                continue; // the fuzz/ directory is not part of every checkout of the crate
            };
            for entry in dir.flatten() {
                let bytes = std::fs::read(entry.path()).unwrap();
                target(&bytes);
                ran += 1;
            }
        }
        for entry in std::fs::read_dir(root.join("tests/data/fuzz"))
            .unwrap()
            .flatten()
        {
            let bytes = std::fs::read(entry.path()).unwrap();
            super::elf_symbols(&bytes);
            super::dwarf_offsets(&bytes);
            ran += 1;
        }
        assert!(ran > 0);
    }
}
