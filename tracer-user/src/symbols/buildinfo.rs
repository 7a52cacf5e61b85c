//! The build info blob the Go toolchain embeds (`runtime/debug.BuildInfo`): the Go version, the
//! main module and every dependency module with its version.
//!
//! Format (see `$GOROOT/src/debug/buildinfo/buildinfo.go`): a 32-byte header, 16-byte aligned,
//! in `.go.buildinfo` or near the start of the writable data segment:
//!
//! ```text
//! magic "\xff Go buildinf:" (14 bytes), ptrSize u8, flags u8,
//! flags & 2 (Go 1.18+): then inline: uvarint len + version, uvarint len + modinfo
//! else (older):         versPtr word, modPtr word -> Go string headers {ptr, len}
//! ```
//!
//! modinfo is framed by two 16-byte sentinels; its lines are `path\t…`, `mod\tpath\tversion\tsum`,
//! `dep\tpath\tversion\tsum`, `=>\tpath\tversion\tsum` (replaces the line before), `build\tk=v`.

use std::fmt;

use super::{Image, PF_W, SymbolError, read};

pub const MAGIC: &[u8; 14] = b"\xff Go buildinf:";
const HEADER_LEN: usize = 32;
const ALIGN: usize = 16;
const FLAGS_BIG_ENDIAN: u8 = 1;
const FLAGS_INLINE: u8 = 2;

/// A Go toolchain version, e.g. `go1.26.8` (1, 26, 8); `go1.22rc1` is (1, 22, 0).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct GoVersion {
    pub major: u32,
    pub minor: u32,
    pub patch: u32,
    /// As the binary states it, e.g. "go1.26.8", "go1.22rc1", "devel go1.27-abcdef …".
    pub raw: String,
}

impl GoVersion {
    /// Best effort: finds `goM.N[.P]` in the string; None if there is none.
    pub fn parse(s: &str) -> Option<GoVersion> {
        let raw = s.trim();
        let bytes = raw.as_bytes();
        let start = (0..bytes.len()).find(|&i| {
            bytes.get(i..i + 2) == Some(b"go".as_slice())
                && bytes.get(i + 2).is_some_and(u8::is_ascii_digit)
        })?;
        let rest = raw.get(start + 2..)?;
        let (major, rest) = leading_number(rest)?;
        let rest = rest.strip_prefix('.')?;
        let (minor, rest) = leading_number(rest)?;
        let patch = rest
            .strip_prefix('.')
            .and_then(leading_number)
            .map_or(0, |(p, _)| p);
        Some(GoVersion {
            major,
            minor,
            patch,
            raw: raw.to_string(),
        })
    }

    /// Whether this is at least Go `major.minor`.
    pub fn at_least(&self, major: u32, minor: u32) -> bool {
        (self.major, self.minor) >= (major, minor)
    }
}

fn leading_number(s: &str) -> Option<(u32, &str)> {
    let n = s.bytes().take_while(u8::is_ascii_digit).count();
    let (digits, rest) = s.split_at_checked(n)?;
    Some((digits.parse().ok()?, rest))
}

impl fmt::Display for GoVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.raw)
    }
}

impl PartialOrd for GoVersion {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for GoVersion {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        (self.major, self.minor, self.patch, &self.raw).cmp(&(
            other.major,
            other.minor,
            other.patch,
            &other.raw,
        ))
    }
}

/// A module of the build: the main module or a dependency.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Module {
    pub path: String,
    /// e.g. "v0.9.1", "(devel)".
    pub version: String,
    pub sum: Option<String>,
    /// The `=>` replacement, if any.
    pub replace: Option<Box<Module>>,
}

/// The decoded build info.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct BuildInfo {
    /// The version string as stored.
    pub go_version_raw: String,
    pub go_version: Option<GoVersion>,
    /// The main package path.
    pub path: Option<String>,
    pub main: Option<Module>,
    pub deps: Vec<Module>,
    /// `build` settings, e.g. ("CGO_ENABLED", "0"), ("GOARCH", "amd64").
    pub settings: Vec<(String, String)>,
}

impl BuildInfo {
    /// The dependency (or main module) with this module path.
    pub fn module(&self, path: &str) -> Option<&Module> {
        self.main
            .iter()
            .chain(self.deps.iter())
            .find(|m| m.path == path)
    }

    /// The value of a `build` setting.
    pub fn setting(&self, key: &str) -> Option<&str> {
        self.settings
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// Parses the modinfo text (with or without its sentinels).
    pub fn parse_modinfo(&mut self, modinfo: &str) {
        let mut last_is_main = false;
        for line in modinfo.lines() {
            let mut fields = line.split('\t');
            let kind = fields.next().unwrap_or_default();
            let module = |mut f: std::str::Split<'_, char>| -> Option<Module> {
                Some(Module {
                    path: f.next()?.to_string(),
                    version: f.next().unwrap_or_default().to_string(),
                    sum: f.next().filter(|s| !s.is_empty()).map(str::to_string),
                    replace: None,
                })
            };
            match kind {
                "path" => self.path = fields.next().map(str::to_string),
                "mod" => {
                    self.main = module(fields);
                    last_is_main = true;
                }
                "dep" => {
                    if let Some(m) = module(fields) {
                        self.deps.push(m);
                        last_is_main = false;
                    }
                }
                "=>" => {
                    let target = if last_is_main {
                        self.main.as_mut()
                    } else {
                        self.deps.last_mut()
                    };
                    if let (Some(t), Some(r)) = (target, module(fields)) {
                        t.replace = Some(Box::new(r));
                    }
                }
                "build" => {
                    let kv = line.get("build\t".len()..).unwrap_or_default();
                    if let Some((k, v)) = kv.split_once('=') {
                        self.settings.push((unquote(k), unquote(v)));
                    }
                }
                _ => {}
            }
        }
    }
}

/// Strips the quotes Go adds around keys/values with special characters (escapes are kept).
fn unquote(s: &str) -> String {
    s.strip_prefix('"')
        .and_then(|s| s.strip_suffix('"'))
        .unwrap_or(s)
        .to_string()
}

/// Decodes the blob starting at `blob` (which begins with the magic). `image` resolves the
/// pointers of the pre-1.18 format.
///
/// Nothing is copied before the blob is known to be usable: `find` tries every aligned magic of
/// a segment, and copying each candidate's modinfo was quadratic in the segment size.
pub(crate) fn parse_blob<'a>(blob: &'a [u8], image: Image<'a>) -> Result<BuildInfo, SymbolError> {
    let bad = |r: &str| SymbolError::malformed(format!("Go build info: {r}"));
    if blob.get(..MAGIC.len()) != Some(MAGIC.as_slice()) {
        return Err(bad("no magic"));
    }
    let header = blob
        .get(..HEADER_LEN)
        .ok_or_else(|| bad("truncated header"))?;
    let ptr_size = header.get(14).copied().unwrap_or_default();
    let flags = header.get(15).copied().unwrap_or_default();
    let (version, modinfo) = if flags & FLAGS_INLINE != 0 {
        let (v, next) = inline_string(blob, HEADER_LEN).ok_or_else(|| bad("bad version string"))?;
        let m = inline_string(blob, next)
            .map(|(m, _)| m)
            .unwrap_or_default();
        (v, m)
    } else {
        if flags & FLAGS_BIG_ENDIAN != 0 {
            return Err(bad("big-endian pointers are not supported"));
        }
        let vers_ptr = read::word_at(header, 16, ptr_size).ok_or_else(|| bad("bad ptrSize"))?;
        let mod_ptr = read::word_at(header, 16 + usize::from(ptr_size), ptr_size)
            .ok_or_else(|| bad("bad ptrSize"))?;
        let v = go_string(image, vers_ptr, ptr_size).ok_or_else(|| bad("bad version pointer"))?;
        let m = go_string(image, mod_ptr, ptr_size).unwrap_or_default();
        (v, m)
    };
    if version.is_empty() {
        return Err(bad("empty version"));
    }
    let version = String::from_utf8_lossy(version).into_owned();
    let mut info = BuildInfo {
        go_version: GoVersion::parse(&version),
        go_version_raw: version,
        ..BuildInfo::default()
    };
    // Strip the 16-byte sentinels around modinfo (cmd/go/internal/modload.infoStart/infoEnd).
    // The sentinels are binary, so this is done on bytes.
    let n = modinfo.len();
    if n >= 33
        && modinfo.get(n - 17) == Some(&b'\n')
        && let Some(inner) = modinfo.get(16..n - 16)
    {
        info.parse_modinfo(&String::from_utf8_lossy(inner));
    }
    Ok(info)
}

/// A uvarint-length-prefixed string at `off`; returns it and the offset after it.
fn inline_string(blob: &[u8], off: usize) -> Option<(&[u8], usize)> {
    let (len, n) = read::uvarint_at(blob, off)?;
    let start = off.checked_add(n)?;
    let end = start.checked_add(usize::try_from(len).ok()?)?;
    Some((blob.get(start..end)?, end))
}

/// A Go string header {ptr, len} at `addr`, and the bytes it points to.
fn go_string<'a>(image: Image<'a>, addr: u64, ptr_size: u8) -> Option<&'a [u8]> {
    let ps = u64::from(ptr_size);
    let hdr = image.read(addr, ps.checked_mul(2)?)?;
    let ptr = read::word_at(hdr, 0, ptr_size)?;
    let len = read::word_at(hdr, usize::from(ptr_size), ptr_size)?;
    if len > 1 << 24 {
        return None;
    }
    image.read(ptr, len)
}

/// Finds and decodes the build info: in `.go.buildinfo` if given (file range), else in the first
/// writable data segment, as `debug/buildinfo` does.
pub(crate) fn find(image: Image<'_>, section: Option<(usize, usize)>) -> Option<BuildInfo> {
    let (start, len) = match section {
        Some(r) => r,
        None => {
            let seg = image
                .segments
                .iter()
                .find(|s| s.flags & PF_W != 0 && !s.is_exec())?;
            (
                usize::try_from(seg.offset).ok()?,
                usize::try_from(seg.filesz).ok()?,
            )
        }
    };
    let end = start.checked_add(len)?.min(image.bytes.len());
    let region = image.bytes.get(start..end)?;
    let mut off = (ALIGN - start % ALIGN) % ALIGN;
    while off
        .checked_add(HEADER_LEN)
        .is_some_and(|e| e <= region.len())
    {
        if region.get(off..off + MAGIC.len()) == Some(MAGIC.as_slice())
            && let Some(blob) = region.get(off..)
        {
            match parse_blob(blob, image) {
                Ok(info) => return Some(info),
                Err(e) => log::debug!("build info at file offset {:#x}: {e}", start + off),
            }
        }
        off += ALIGN;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_versions() {
        let v = GoVersion::parse("go1.26.8").unwrap();
        assert_eq!(
            (v.major, v.minor, v.patch, v.raw.as_str()),
            (1, 26, 8, "go1.26.8")
        );
        assert_eq!(v.to_string(), "go1.26.8");
        let v = GoVersion::parse("go1.22rc1").unwrap();
        assert_eq!((v.major, v.minor, v.patch), (1, 22, 0));
        let v = GoVersion::parse("go1.21").unwrap();
        assert_eq!((v.major, v.minor, v.patch), (1, 21, 0));
        let v = GoVersion::parse("devel go1.27-4a5b6c7 Tue Jan 6 10:00:00 2026 +0000").unwrap();
        assert_eq!((v.major, v.minor, v.patch), (1, 27, 0));
        let v = GoVersion::parse("go1.25.3 X:jsonv2").unwrap();
        assert_eq!((v.major, v.minor, v.patch), (1, 25, 3));
        assert!(GoVersion::parse("devel +abcdef").is_none());
        assert!(GoVersion::parse("").is_none());
        assert!(GoVersion::parse("go").is_none());
        assert!(GoVersion::parse("go1.").is_none());
        assert!(GoVersion::parse("go99999999999.1").is_none());
        assert!(GoVersion::parse("go1.21.13").unwrap() < GoVersion::parse("go1.26.0").unwrap());
        assert!(GoVersion::parse("go1.26.0").unwrap().at_least(1, 26));
        assert!(!GoVersion::parse("go1.25.9").unwrap().at_least(1, 26));
    }

    fn inline_blob(version: &str, modinfo: &str) -> Vec<u8> {
        let mut b = MAGIC.to_vec();
        b.extend_from_slice(&[8, FLAGS_INLINE]);
        b.resize(HEADER_LEN, 0);
        for s in [version, modinfo] {
            let mut n = s.len();
            while n >= 0x80 {
                b.push((n as u8) | 0x80);
                n >>= 7;
            }
            b.push(n as u8);
            b.extend_from_slice(s.as_bytes());
        }
        b
    }

    #[test]
    fn parses_inline_blob_and_modinfo() {
        let sentinel = "0123456789abcdef";
        let body = "path\tex.com/cmd/app\nmod\tex.com\t(devel)\t\n\
                    dep\tgithub.com/uber/kraken\tv0.1.4\th1:abc=\n\
                    dep\tgolang.org/x/net\tv0.20.0\th1:def=\n=>\t../net\t(devel)\t\n\
                    build\t-trimpath=true\nbuild\tCGO_ENABLED=0\n";
        let modinfo = format!("{sentinel}{body}{sentinel}");
        // The end sentinel is 16 bytes preceded by '\n'.
        assert_eq!(modinfo.as_bytes()[modinfo.len() - 17], b'\n');
        let blob = inline_blob("go1.26.8", &modinfo);
        let image = Image {
            bytes: &[],
            segments: &[],
        };
        let bi = parse_blob(&blob, image).unwrap();
        assert_eq!(bi.go_version.as_ref().unwrap().raw, "go1.26.8");
        assert_eq!(bi.path.as_deref(), Some("ex.com/cmd/app"));
        assert_eq!(bi.main.as_ref().unwrap().version, "(devel)");
        assert_eq!(
            bi.module("github.com/uber/kraken").unwrap().version,
            "v0.1.4"
        );
        let net = bi.module("golang.org/x/net").unwrap();
        assert_eq!(net.replace.as_ref().unwrap().path, "../net");
        assert_eq!(bi.setting("CGO_ENABLED"), Some("0"));
        assert_eq!(bi.setting("-trimpath"), Some("true"));

        // Truncations never panic.
        for n in 0..blob.len() {
            let _ = parse_blob(&blob[..n], image);
        }
        assert!(parse_blob(&blob[..HEADER_LEN], image).is_err());
    }

    /// Fuzzing regression (found reviewing what the buildinfo target reaches, at sizes beyond
    /// libFuzzer's inputs): a data segment full of blobs with an empty version, each with a
    /// modinfo running to the end of the segment. Each modinfo was copied before the blob was
    /// refused: quadratic (these 4 MiB took 8.5 s; a crafted binary could stall the tracer).
    #[test]
    fn refused_blobs_are_not_copied() {
        use crate::symbols::Segment;
        const SIZE: usize = 4 << 20;
        const STRIDE: usize = 48;
        let mut data = Vec::with_capacity(SIZE);
        while data.len() + STRIDE <= SIZE {
            let start = data.len();
            data.extend_from_slice(MAGIC);
            data.extend([8, FLAGS_INLINE]);
            data.resize(start + HEADER_LEN, 0);
            data.push(0); // empty version
            let len = SIZE - (start + HEADER_LEN + 5);
            data.extend([
                (len as u8) | 0x80,
                ((len >> 7) as u8) | 0x80,
                ((len >> 14) as u8) | 0x80,
                (len >> 21) as u8,
            ]);
            data.resize(start + STRIDE, 0);
        }
        data.resize(SIZE, 0);
        let segs = [Segment {
            vaddr: 0x1000,
            memsz: SIZE as u64,
            offset: 0,
            filesz: SIZE as u64,
            flags: 6,
        }];
        let image = Image {
            bytes: &data,
            segments: &segs,
        };
        let started = std::time::Instant::now();
        assert!(find(image, None).is_none());
        let took = started.elapsed();
        assert!(took < std::time::Duration::from_secs(2), "{took:?}");
    }

    #[test]
    fn parses_pointer_blob() {
        use crate::symbols::Segment;
        // A fake data segment at 0x1000: header at 0, version string header at 0x40 -> 0x60.
        let mut data = vec![0u8; 0x100];
        data[..14].copy_from_slice(MAGIC);
        data[14] = 8;
        data[15] = 0;
        data[16..24].copy_from_slice(&0x1040u64.to_le_bytes());
        data[24..32].copy_from_slice(&0u64.to_le_bytes()); // no modinfo
        data[0x40..0x48].copy_from_slice(&0x1060u64.to_le_bytes());
        data[0x48..0x50].copy_from_slice(&9u64.to_le_bytes());
        data[0x60..0x69].copy_from_slice(b"go1.17.13");
        let segs = [Segment {
            vaddr: 0x1000,
            memsz: 0x100,
            offset: 0,
            filesz: 0x100,
            flags: 6,
        }];
        let image = Image {
            bytes: &data,
            segments: &segs,
        };
        let bi = find(image, None).unwrap();
        let v = bi.go_version.unwrap();
        assert_eq!((v.major, v.minor, v.patch), (1, 17, 13));
        // A pointer outside the image: an error, not a panic.
        data[16..24].copy_from_slice(&0xdead_beefu64.to_le_bytes());
        let image = Image {
            bytes: &data,
            segments: &segs,
        };
        assert!(find(image, None).is_none());
    }
}
