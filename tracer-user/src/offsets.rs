//! Go struct field offsets for the kernel programs ([`GoOffsets`]), per traced binary.
//!
//! Two sources, in order of preference:
//! 1. the binary's own DWARF (exact for whatever Go version built it), when it was not stripped;
//! 2. a built-in table keyed by Go version *ranges* ("since go1.21", "since go1.23", ...), so a new
//!    patch release, or a newer minor than the newest verified one, still resolves (the latter
//!    reported as not covered, so the caller can warn).
//!
//! Go compresses its DWARF sections (zlib, `SHF_COMPRESSED` or the older `.zdebug_*`); `object`'s
//! `compression` feature (flate2 + ruzstd) unpacks them.

use std::borrow::Cow;

use gimli::{AttributeValue, RunTimeEndian};
use object::{CompressionFormat, Object, ObjectSection};
pub use tracer_common::offsets::GoOffsets;

#[path = "offsets_table.rs"]
mod table;

pub use table::TABLE_COVERS;

/// Where the offsets of a binary came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OffsetSource {
    /// The binary's DWARF.
    Dwarf,
    /// The built-in table; `covered` is false when the Go version is outside the verified range
    /// ([`TABLE_COVERS`]) and the nearest row was used as a best effort.
    Table { covered: bool },
}

/// Why offsets could not be determined.
#[derive(thiserror::Error, Debug)]
pub enum OffsetsError {
    #[error("not a readable ELF file: {0}")]
    Elf(#[source] object::read::Error),
    #[error("binary has no DWARF (.debug_info missing: stripped, or linked with -w)")]
    NoDwarf,
    #[error("cannot read DWARF section {section}: {reason}")]
    Section {
        section: &'static str,
        reason: String,
    },
    #[error("malformed DWARF ({producer}): {source}")]
    Dwarf {
        producer: String,
        #[source]
        source: gimli::Error,
    },
    #[error("DWARF ({producer}) has no struct type `{strukt}`")]
    MissingStruct {
        strukt: &'static str,
        producer: String,
    },
    #[error("DWARF ({producer}): struct `{strukt}` has no field `{field}`")]
    MissingField {
        strukt: &'static str,
        field: &'static str,
        producer: String,
    },
    #[error("DWARF ({producer}): `{strukt}.{field}` has no usable constant offset")]
    BadFieldLocation {
        strukt: &'static str,
        field: &'static str,
        producer: String,
    },
    #[error("no usable DWARF ({dwarf}) and no Go version to pick a table row")]
    NoVersion {
        #[source]
        dwarf: Box<OffsetsError>,
    },
}

/// Offsets for one binary: DWARF first (when the binary has complete DWARF for the needed
/// structs); else the built-in table by Go version `(major, minor, patch)`.
///
/// A file that is not a readable ELF is an error even when a version is given.
pub fn resolve(
    elf_bytes: &[u8],
    go_version: Option<(u32, u32, u32)>,
) -> Result<(GoOffsets, OffsetSource), OffsetsError> {
    match from_dwarf(elf_bytes) {
        Ok(offsets) => Ok((offsets, OffsetSource::Dwarf)),
        Err(err @ OffsetsError::Elf(_)) => Err(err),
        Err(err) => match go_version {
            Some((major, minor, patch)) => {
                let (offsets, covered) = from_table(major, minor, patch);
                if matches!(err, OffsetsError::NoDwarf) {
                    log::debug!("go{major}.{minor}.{patch}: {err}; using the offsets table");
                } else {
                    log::warn!("go{major}.{minor}.{patch}: {err}; using the offsets table");
                }
                if !covered {
                    log::warn!(
                        "go{major}.{minor}.{patch} is outside the verified offsets table \
                         ({TABLE_COVERS}); using the nearest row, spans may be incomplete"
                    );
                }
                Ok((offsets, OffsetSource::Table { covered }))
            }
            None => Err(OffsetsError::NoVersion {
                dwarf: Box::new(err),
            }),
        },
    }
}

/// Offsets from the table for Go `major.minor.patch` (the patch matters: go1.26.11 changed
/// `http.response`); `covered` is false when the minor is outside [`TABLE_COVERS`] (newer
/// versions get the newest row, older ones the oldest).
pub fn from_table(major: u32, minor: u32, patch: u32) -> (GoOffsets, bool) {
    table::lookup(major, minor, patch)
}

/// Which struct field a [`GoOffsets`] slot holds.
struct FieldSpec {
    strukt: &'static str,
    field: &'static str,
    /// Absent in some supported versions (left as `u32::MAX` when missing).
    optional: bool,
    slot: fn(&mut GoOffsets) -> &mut u32,
}

const STRUCTS: [&str; 5] = [
    "net/http.Request",
    "net/url.URL",
    "net/http.response",
    "net/http.Response",
    "runtime.g",
];

macro_rules! field {
    ($s:expr, $f:expr, $slot:ident) => {
        field!($s, $f, $slot, false)
    };
    ($s:expr, $f:expr, $slot:ident, $opt:expr) => {
        FieldSpec {
            strukt: $s,
            field: $f,
            optional: $opt,
            slot: |o: &mut GoOffsets| &mut o.$slot,
        }
    };
}

const FIELDS: [FieldSpec; 18] = [
    field!("net/http.Request", "Method", request_method),
    field!("net/http.Request", "URL", request_url),
    field!("net/http.Request", "Host", request_host),
    field!("net/http.Request", "RemoteAddr", request_remote_addr),
    field!("net/http.Request", "RequestURI", request_uri),
    field!("net/http.Request", "Pattern", request_pattern, true),
    field!("net/url.URL", "Scheme", url_scheme),
    field!("net/url.URL", "Host", url_host),
    field!("net/url.URL", "Path", url_path),
    field!("net/url.URL", "RawPath", url_raw_path),
    field!("net/http.response", "req", response_req),
    field!("net/http.response", "status", response_status),
    field!("net/http.response", "written", response_written),
    field!("net/http.Response", "StatusCode", resp_status_code),
    field!("runtime.g", "goid", g_goid),
    field!("runtime.g", "parentGoid", g_parent_goid),
    field!("net/http.Request", "Header", request_header),
    field!("net/http.Request", "ContentLength", request_content_length),
];

/// Section bytes, decompressed if needed.
fn section_data<'d>(
    file: &object::File<'d>,
    name: &'static str,
) -> Result<Option<Cow<'d, [u8]>>, OffsetsError> {
    // `section_by_name` also finds the GNU `.zdebug_*` spelling.
    let Some(section) = file.section_by_name(name) else {
        return Ok(None);
    };
    let error = |reason: String| OffsetsError::Section {
        section: name,
        reason,
    };
    let compressed = section
        .compressed_data()
        .map_err(|e| error(e.to_string()))?;
    // The size comes from the file: allocate it only if the data can inflate to it.
    if compressed.format != CompressionFormat::None {
        let ratio = match compressed.format {
            CompressionFormat::Zlib => MAX_ZLIB_RATIO,
            _ => MAX_ZSTD_RATIO,
        };
        let claimed = compressed.uncompressed_size;
        let possible = (compressed.data.len() as u64).saturating_mul(ratio);
        if claimed > possible.min(MAX_SECTION_SIZE) {
            return Err(error(format!(
                "claims {claimed} bytes uncompressed from {} compressed (at most {} possible, \
                 limit {MAX_SECTION_SIZE})",
                compressed.data.len(),
                possible
            )));
        }
    }
    compressed
        .decompress()
        .map(Some)
        .map_err(|e| error(e.to_string()))
}

/// The largest DWARF section decompressed (Go's are tens of MiB for large binaries); beyond it
/// the offsets come from the table.
const MAX_SECTION_SIZE: u64 = 1 << 30;
/// Upper bounds of the compression ratios: deflate codes a 258-byte match in 2 bits at best;
/// zstd's densest block is a 128 KiB RLE block from 4 bytes.
const MAX_ZLIB_RATIO: u64 = 1032;
const MAX_ZSTD_RATIO: u64 = 32 * 1024;

/// Offsets from the binary's DWARF. Errors when the binary has no DWARF, when it is malformed,
/// or when a required struct or field is missing (only `Request.Pattern` is optional).
pub fn from_dwarf(elf_bytes: &[u8]) -> Result<GoOffsets, OffsetsError> {
    let file = object::File::parse(elf_bytes).map_err(OffsetsError::Elf)?;
    let endian = if file.is_little_endian() {
        RunTimeEndian::Little
    } else {
        RunTimeEndian::Big
    };
    let info = section_data(&file, ".debug_info")?.ok_or(OffsetsError::NoDwarf)?;
    let abbrev = section_data(&file, ".debug_abbrev")?.ok_or(OffsetsError::NoDwarf)?;
    let strs = section_data(&file, ".debug_str")?.unwrap_or_default();
    let line_strs = section_data(&file, ".debug_line_str")?.unwrap_or_default();
    let sections = Sections {
        info: gimli::DebugInfo::new(&info, endian),
        abbrev: gimli::DebugAbbrev::new(&abbrev, endian),
        strs: gimli::DebugStr::new(&strs, endian),
        line_strs: gimli::DebugLineStr::new(&line_strs, endian),
    };
    let mut producer = String::from("unknown producer");
    let found = scan(&sections, &mut producer).map_err(|source| OffsetsError::Dwarf {
        producer: producer.clone(),
        source,
    })?;
    let mut offsets = GoOffsets::default();
    for (spec, value) in FIELDS.iter().zip(found.fields) {
        let value = match value {
            Some(Some(v)) => v,
            Some(None) => {
                return Err(OffsetsError::BadFieldLocation {
                    strukt: spec.strukt,
                    field: spec.field,
                    producer,
                });
            }
            None if spec.optional => u32::MAX,
            None if !found.structs.contains(&Some(spec.strukt)) => {
                return Err(OffsetsError::MissingStruct {
                    strukt: spec.strukt,
                    producer,
                });
            }
            None => {
                return Err(OffsetsError::MissingField {
                    strukt: spec.strukt,
                    field: spec.field,
                    producer,
                });
            }
        };
        *(spec.slot)(&mut offsets) = value;
    }
    Ok(offsets)
}

type Reader<'a> = gimli::EndianSlice<'a, RunTimeEndian>;

struct Sections<'a> {
    info: gimli::DebugInfo<Reader<'a>>,
    abbrev: gimli::DebugAbbrev<Reader<'a>>,
    strs: gimli::DebugStr<Reader<'a>>,
    line_strs: gimli::DebugLineStr<Reader<'a>>,
}

impl<'a> Sections<'a> {
    fn string(&self, value: AttributeValue<Reader<'a>>) -> Option<&'a [u8]> {
        match value {
            AttributeValue::String(s) => Some(s.slice()),
            AttributeValue::DebugStrRef(o) => self.strs.get_str(o).ok().map(|s| s.slice()),
            AttributeValue::DebugLineStrRef(o) => self.line_strs.get_str(o).ok().map(|s| s.slice()),
            _ => None,
        }
    }
}

struct Found {
    /// Per wanted struct: Some(name) once a definition with members was seen.
    structs: [Option<&'static str>; STRUCTS.len()],
    /// Per field: None = not seen; Some(None) = seen, offset not a usable constant.
    fields: [Option<Option<u32>>; FIELDS.len()],
}

/// One pass over all units, raw DIE parsing, attributes skipped except for struct types and
/// the members of wanted structs. Stops once every wanted struct has been seen.
fn scan(s: &Sections<'_>, producer: &mut String) -> gimli::Result<Found> {
    let mut found = Found {
        structs: [None; STRUCTS.len()],
        fields: [None; FIELDS.len()],
    };
    let mut abbrev_cache: Vec<(gimli::DebugAbbrevOffset, gimli::Abbreviations)> = Vec::new();
    let mut units = s.info.units();
    let mut first_unit = true;
    while let Some(header) = units.next()? {
        let abbrev_offset = header.debug_abbrev_offset();
        let index = match abbrev_cache.iter().position(|(o, _)| *o == abbrev_offset) {
            Some(i) => i,
            None => {
                abbrev_cache.push((abbrev_offset, header.abbreviations(&s.abbrev)?));
                abbrev_cache.len() - 1
            }
        };
        let Some((_, abbrevs)) = abbrev_cache.get(index) else {
            continue;
        };
        let mut entries = header.entries_raw(abbrevs, None)?;
        // The wanted struct whose members are being read, and the depth of those members.
        let mut current: Option<(usize, isize)> = None;
        while !entries.is_empty() {
            let depth = entries.next_depth();
            let Some(abbrev) = entries.read_abbreviation()? else {
                continue;
            };
            if let Some((_, member_depth)) = current
                && depth < member_depth
            {
                current = None;
            }
            match abbrev.tag() {
                gimli::DW_TAG_compile_unit if first_unit => {
                    first_unit = false;
                    for spec in abbrev.attributes() {
                        let attr = entries.read_attribute(*spec)?;
                        if attr.name() == gimli::DW_AT_producer
                            && let Some(p) = s.string(attr.value())
                        {
                            *producer = String::from_utf8_lossy(p).into_owned();
                        }
                    }
                }
                gimli::DW_TAG_structure_type => {
                    let mut name = None;
                    for spec in abbrev.attributes() {
                        let attr = entries.read_attribute(*spec)?;
                        if attr.name() == gimli::DW_AT_name {
                            name = s.string(attr.value());
                        }
                    }
                    let wanted = name.and_then(|n| STRUCTS.iter().position(|w| w.as_bytes() == n));
                    current = match wanted {
                        Some(i) if abbrev.has_children() => {
                            if let Some(slot) = found.structs.get_mut(i) {
                                *slot = STRUCTS.get(i).copied();
                            }
                            Some((i, depth + 1))
                        }
                        _ => None,
                    };
                }
                gimli::DW_TAG_member
                    if current.is_some_and(|(_, member_depth)| member_depth == depth) =>
                {
                    let mut name = None;
                    let mut location = None;
                    for spec in abbrev.attributes() {
                        let attr = entries.read_attribute(*spec)?;
                        match attr.name() {
                            gimli::DW_AT_name => name = s.string(attr.value()),
                            gimli::DW_AT_data_member_location => {
                                location = Some(member_offset(attr.value()))
                            }
                            _ => {}
                        }
                    }
                    let strukt = current.and_then(|(i, _)| STRUCTS.get(i)).copied();
                    if let (Some(strukt), Some(name), Some(location)) = (strukt, name, location) {
                        for (spec, slot) in FIELDS.iter().zip(found.fields.iter_mut()) {
                            if slot.is_none()
                                && spec.strukt == strukt
                                && spec.field.as_bytes() == name
                            {
                                *slot = Some(location);
                            }
                        }
                    }
                }
                _ => entries.skip_attributes(abbrev.attributes())?,
            }
        }
        first_unit = false;
        if found.structs.iter().all(Option::is_some) {
            break;
        }
    }
    Ok(found)
}

/// A member offset: a constant, or the `DW_OP_plus_uconst N` expression older producers use.
fn member_offset(value: AttributeValue<Reader<'_>>) -> Option<u32> {
    let offset = match value {
        AttributeValue::Exprloc(expr) => {
            let mut r = expr.0;
            let op = gimli::Reader::read_u8(&mut r).ok()?;
            if op != gimli::DW_OP_plus_uconst.0 {
                return None;
            }
            let n = gimli::Reader::read_uleb128(&mut r).ok()?;
            if !r.is_empty() {
                return None;
            }
            n
        }
        AttributeValue::Sdata(n) => u64::try_from(n).ok()?,
        other => other.udata_value()?,
    };
    u32::try_from(offset).ok().filter(|o| *o != u32::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::{Path, PathBuf};
    use std::process::Command;
    use std::sync::{Mutex, OnceLock};
    use std::time::Instant;

    fn workspace() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
    }

    /// Fixture builds by the installed Go: (version, with DWARF, stripped). None if no Go.
    struct Installed {
        version: (u32, u32, u32),
        full: PathBuf,
        stripped: PathBuf,
    }

    fn parse_go_version(v: &str) -> Option<(u32, u32, u32)> {
        let mut parts = v.trim().strip_prefix("go")?.split('.');
        let major = parts.next()?.parse().ok()?;
        let minor = parts.next()?.parse().ok()?;
        // "1.26rc1" style pre-releases have no patch component.
        let patch = parts.next().map_or(Some(0), |p| p.parse().ok())?;
        Some((major, minor, patch))
    }

    fn go_build(out: &Path, extra: &[&str]) -> Result<(), String> {
        let tmp = out.with_extension(format!("tmp{}", std::process::id()));
        let status = Command::new("go")
            .arg("build")
            .arg("-trimpath")
            .args(extra)
            .arg("-o")
            .arg(&tmp)
            .arg(".")
            .current_dir(workspace().join("tests/fixtures/httpserver"))
            .env("CGO_ENABLED", "0")
            .env("GOTOOLCHAIN", "local")
            .status()
            .map_err(|e| format!("go: {e}"))?;
        if !status.success() {
            return Err(format!("go build failed: {status}"));
        }
        std::fs::rename(&tmp, out).map_err(|e| e.to_string())
    }

    /// Builds once per test process (a go build with a warm cache takes well under a second).
    fn installed() -> Option<&'static Installed> {
        static BUILT: OnceLock<Option<Installed>> = OnceLock::new();
        static LOCK: Mutex<()> = Mutex::new(());
        let _guard = LOCK.lock().unwrap_or_else(|e| e.into_inner());
        BUILT
            .get_or_init(|| {
                let out = Command::new("go")
                    .args(["env", "GOVERSION"])
                    .env("GOTOOLCHAIN", "local")
                    .output();
                let Some(version) = out
                    .ok()
                    .and_then(|o| parse_go_version(&String::from_utf8_lossy(&o.stdout)))
                else {
                    eprintln!("skipping: no usable `go` in PATH");
                    return None;
                };
                let dir = workspace().join("target/fixtures/installed");
                std::fs::create_dir_all(&dir).ok()?;
                let full = dir.join("httpserver");
                let stripped = dir.join("httpserver-stripped");
                let built =
                    go_build(&full, &[]).and_then(|()| go_build(&stripped, &["-ldflags=-s -w"]));
                if let Err(e) = built {
                    eprintln!("skipping: cannot build the fixture: {e}");
                    return None;
                }
                Some(Installed {
                    version,
                    full,
                    stripped,
                })
            })
            .as_ref()
    }

    #[test]
    fn dwarf_of_installed_go_matches_table() {
        let Some(go) = installed() else { return };
        let bytes = std::fs::read(&go.full).unwrap();
        let start = Instant::now();
        let dwarf = from_dwarf(&bytes).unwrap();
        eprintln!(
            "from_dwarf({}, {} bytes): {:?}",
            go.full.display(),
            bytes.len(),
            start.elapsed()
        );
        let (major, minor, patch) = go.version;
        assert_eq!(buildinfo_version(&bytes), Some(go.version));
        let (table, covered) = from_table(major, minor, patch);
        assert!(covered, "installed go{major}.{minor} not in {TABLE_COVERS}");
        assert_eq!(
            dwarf, table,
            "go{major}.{minor}.{patch}: DWARF (left) vs table"
        );
        assert_eq!(
            resolve(&bytes, Some(go.version)).unwrap(),
            (dwarf, OffsetSource::Dwarf)
        );
    }

    /// The Go version recorded in a binary's buildinfo (Go >= 1.18 inline format).
    fn buildinfo_version(bytes: &[u8]) -> Option<(u32, u32, u32)> {
        const MAGIC: &[u8] = b"\xff Go buildinf:";
        let at = bytes.windows(MAGIC.len()).position(|w| w == MAGIC)?;
        let rest = bytes.get(at + 32..)?;
        let len = usize::from(*rest.first()?);
        if len >= 0x80 {
            return None;
        }
        parse_go_version(std::str::from_utf8(rest.get(1..1 + len)?).ok()?)
    }

    #[test]
    fn dwarf_of_each_version_matches_table() {
        let dir = workspace().join("target/fixtures/versions");
        let (oldest, newest) = table::VERIFIED_MINORS;
        for minor in oldest..=newest {
            let path = dir.join(format!("go1.{minor}/httpserver"));
            if !path.exists() {
                eprintln!(
                    "skipping go1.{minor}: {} missing (not built on demand: it downloads a \
                     toolchain; run tracer-user/tests-data/build-go-versions.sh)",
                    path.display()
                );
            }
        }
        // go1.N/ (latest patch of each minor) and any extra go1.N.P/ builds.
        let mut checked = Vec::new();
        for entry in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
            let Ok(bytes) = std::fs::read(entry.path().join("httpserver")) else {
                continue;
            };
            let (major, minor, patch) = buildinfo_version(&bytes).unwrap();
            let dwarf = from_dwarf(&bytes).unwrap();
            let (table, covered) = from_table(major, minor, patch);
            assert!(covered);
            assert_eq!(
                dwarf, table,
                "go{major}.{minor}.{patch}: DWARF (left) vs table"
            );
            checked.push(format!("go{major}.{minor}.{patch}"));
        }
        checked.sort();
        eprintln!("DWARF == table for {checked:?}");
    }

    #[test]
    fn stripped_binary_falls_back_to_table() {
        let Some(go) = installed() else { return };
        let stripped = std::fs::read(&go.stripped).unwrap();
        assert!(matches!(from_dwarf(&stripped), Err(OffsetsError::NoDwarf)));
        let (offsets, source) = resolve(&stripped, Some(go.version)).unwrap();
        assert_eq!(source, OffsetSource::Table { covered: true });
        let full = std::fs::read(&go.full).unwrap();
        assert_eq!(offsets, from_dwarf(&full).unwrap());
        // No DWARF and no version: nothing to go on.
        assert!(matches!(
            resolve(&stripped, None),
            Err(OffsetsError::NoVersion { .. })
        ));
        // A future version still resolves, flagged as not covered.
        let (future, source) = resolve(&stripped, Some((1, 99, 0))).unwrap();
        assert_eq!(source, OffsetSource::Table { covered: false });
        assert_eq!(future, from_table(1, table::VERIFIED_MINORS.1, u32::MAX).0);
    }

    #[test]
    fn table_ranges() {
        let (oldest, newest) = table::VERIFIED_MINORS;
        assert_eq!(TABLE_COVERS, format!("go1.{oldest} – go1.{newest}"));
        let (latest, covered) = from_table(1, newest, 99);
        assert!(covered);
        // Unknown future versions: newest row, not covered.
        assert_eq!(from_table(1, 99, 0), (latest, false));
        assert_eq!(from_table(2, 0, 0), (latest, false));
        // Older than the table: oldest row, best effort.
        let (first, covered) = from_table(1, oldest, 0);
        assert!(covered);
        assert_eq!(from_table(1, 18, 3), (first, false));
        assert_eq!(from_table(0, 0, 0), (first, false));
        // Within the range, every minor is covered; Pattern exists from go1.23.
        for minor in oldest..=newest {
            let (o, covered) = from_table(1, minor, 0);
            assert!(covered);
            assert_eq!(o.request_pattern == u32::MAX, minor < 23, "go1.{minor}");
            assert_eq!(o.request_header, 56, "go1.{minor}");
            assert_eq!(o.request_content_length, 88, "go1.{minor}");
            assert_ne!(o.g_parent_goid, 0);
        }
        let goid = |minor| from_table(1, minor, 0).0.g_goid;
        assert_eq!(
            (goid(22), goid(23), goid(24), goid(25)),
            (152, 160, 160, 152)
        );
        // A patch release changed http.response.
        let status = |patch| from_table(1, 26, patch).0.response_status;
        assert_eq!(
            (status(0), status(10), status(11), status(12)),
            (120, 120, 128, 128)
        );
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        for bytes in [&b""[..], b"garbage", b"\x7fELF", &[0xff; 4096]] {
            assert!(from_dwarf(bytes).is_err());
            assert!(resolve(bytes, Some((1, 26, 0))).is_err());
            assert!(resolve(bytes, None).is_err());
        }
        let Some(go) = installed() else { return };
        let full = std::fs::read(&go.full).unwrap();
        for len in [16, 64, 100, 4096, full.len() / 2, full.len() - 1] {
            let truncated = full.get(..len).unwrap();
            assert!(from_dwarf(truncated).is_err(), "truncated to {len}");
            let _ = resolve(truncated, Some(go.version));
        }
    }

    /// Fuzzing regressions (fuzz/, target dwarf_offsets): a compressed section's header claims
    /// an uncompressed size its data cannot inflate to; it was allocated as claimed (16 TiB:
    /// an abort under the fuzzer's allocator; a few GiB would really be reserved).
    #[test]
    fn compressed_section_size_is_capped() {
        for (bytes, claimed) in [
            (
                &include_bytes!("../tests/data/fuzz/dwarf-chdr-size-16tib.elf")[..],
                "17592186044766 bytes",
            ),
            (
                &include_bytes!("../tests/data/fuzz/dwarf-chdr-size-64mib.elf")[..],
                "67108864 bytes",
            ),
        ] {
            match from_dwarf(bytes) {
                Err(OffsetsError::Section { reason, .. }) => {
                    assert!(reason.contains(claimed), "{reason}");
                    assert!(reason.contains("claims"), "{reason}");
                }
                other => panic!("{other:?}"),
            }
            let (_, source) = resolve(bytes, Some((1, 26, 0))).unwrap();
            assert_eq!(source, OffsetSource::Table { covered: true });
        }
    }

    #[test]
    fn corrupt_dwarf_is_an_error_and_resolve_falls_back() {
        let Some(go) = installed() else { return };
        let full = std::fs::read(&go.full).unwrap();
        let file = object::File::parse(&*full).unwrap();
        let info = file.section_by_name(".debug_info").unwrap();
        let (start, size) = info
            .compressed_file_range()
            .map(|r| (r.offset, r.compressed_size))
            .unwrap();
        let (start, size) = (start as usize, size as usize);
        drop(file);
        // Flip bytes at spread-out places in the compressed stream (header included).
        for k in 0..24 {
            let mut bytes = full.clone();
            let at = start + k * size / 24;
            bytes[at] ^= 0x5a;
            bytes[at + 1] = bytes[at + 1].wrapping_add(0x33);
            match from_dwarf(&bytes) {
                Ok(o) => assert_eq!(o, from_dwarf(&full).unwrap()),
                Err(e) => {
                    let (_, source) = resolve(&bytes, Some(go.version)).unwrap();
                    assert_eq!(source, OffsetSource::Table { covered: true }, "{e}");
                }
            }
        }
    }
}
