//! Finding Go functions in an executable, and where to probe them.
//!
//! * [`Binary`] opens an ELF executable produced by the Go toolchain and resolves function names
//!   to virtual addresses, sizes and file offsets (what a uprobe needs): from `.symtab` when it is
//!   there, else from the Go runtime's own function table `.gopclntab`, which stripped binaries
//!   keep ([`gopclntab`]).
//! * [`buildinfo`] reads the Go version and the module list the toolchain embeds.
//! * [`sites`] chooses the instruction to put a function's entry probe on (one the kernel can
//!   emulate instead of single-stepping) and lists a function's RET instructions; arm64 code
//!   (by the ELF's e_machine) is decoded by [`a64`] and placed by `sites_arm64`.
//!
//! Everything here reads bytes from an untrusted file: no panics on malformed input, only
//! [`SymbolError`]s (or "not found").

pub mod a64;
pub mod buildinfo;
mod elf;
pub mod gopclntab;
pub mod sites;
mod sites_arm64;

use std::{
    collections::HashMap,
    fmt,
    path::{Path, PathBuf},
};

pub use buildinfo::{BuildInfo, GoVersion, Module};
pub use gopclntab::Pclntab;
pub use sites::{ProbeSite, SiteKind, entry_site, return_sites};

/// Everything that can go wrong while reading a binary's symbols.
#[derive(Debug, thiserror::Error)]
pub enum SymbolError {
    #[error("cannot read {}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{} is not an ELF file: {reason}", path.display())]
    NotElf { path: PathBuf, reason: String },
    #[error("{} is for an unsupported machine ({machine}); only x86_64 and aarch64 are supported", path.display())]
    UnsupportedArch { path: PathBuf, machine: String },
    #[error("{} is not a Go executable: {reason}", path.display())]
    NotGo { path: PathBuf, reason: String },
    #[error("{} is malformed: {reason}", path.display())]
    Malformed { path: PathBuf, reason: String },
    #[error("symbol {symbol} not found in {}", path.display())]
    SymbolNotFound { symbol: String, path: PathBuf },
    #[error("symbol {symbol} in {} at {address:#x} is not in an executable, file-backed segment", path.display())]
    NotMapped {
        symbol: String,
        path: PathBuf,
        address: u64,
    },
}

impl SymbolError {
    /// A format error found by a parser that does not know the file name (left empty).
    pub(crate) fn malformed(reason: impl Into<String>) -> Self {
        SymbolError::Malformed {
            path: PathBuf::new(),
            reason: reason.into(),
        }
    }
}

/// The machines we support.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Arch {
    X86_64,
    Aarch64,
}

impl Arch {
    /// The architecture this tracer is built for (uprobes only work on the kernel's own).
    pub const HOST: Option<Arch> = if cfg!(target_arch = "x86_64") {
        Some(Arch::X86_64)
    } else if cfg!(target_arch = "aarch64") {
        Some(Arch::Aarch64)
    } else {
        None
    };
}

impl fmt::Display for Arch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Arch::X86_64 => "x86_64",
            Arch::Aarch64 => "aarch64",
        })
    }
}

/// Where a [`Function`] was found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SymbolSource {
    Symtab,
    Gopclntab,
}

/// A function in the binary.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Function {
    pub name: String,
    /// Virtual address of the entry.
    pub address: u64,
    /// Size of the code in bytes (without the alignment padding that follows it).
    pub size: u64,
    /// File offset of the entry: what a uprobe is attached at.
    pub file_offset: u64,
    pub source: SymbolSource,
}

/// A PT_LOAD segment.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Segment {
    pub vaddr: u64,
    pub memsz: u64,
    pub offset: u64,
    pub filesz: u64,
    /// PF_X = 1, PF_W = 2, PF_R = 4.
    pub flags: u32,
}

pub(crate) const PF_X: u32 = 1;
pub(crate) const PF_W: u32 = 2;

impl Segment {
    pub fn is_exec(&self) -> bool {
        self.flags & PF_X != 0
    }

    /// The file offset of `vaddr` if it lies in the file-backed part of this segment.
    pub fn file_offset(&self, vaddr: u64) -> Option<u64> {
        let rel = vaddr.checked_sub(self.vaddr)?;
        (rel < self.filesz).then_some(self.offset.checked_add(rel)?)
    }
}

/// The loadable image: the file bytes seen through the PT_LOAD segments.
#[derive(Clone, Copy)]
pub(crate) struct Image<'a> {
    pub bytes: &'a [u8],
    pub segments: &'a [Segment],
}

impl<'a> Image<'a> {
    /// `len` bytes at virtual address `vaddr`, if they are all file-backed in one segment.
    pub fn read(&self, vaddr: u64, len: u64) -> Option<&'a [u8]> {
        self.read_up_to(vaddr, len)
            .filter(|b| u64::try_from(b.len()).ok() == Some(len))
    }

    /// Up to `max` bytes at `vaddr` (fewer at the end of the segment).
    pub fn read_up_to(&self, vaddr: u64, max: u64) -> Option<&'a [u8]> {
        let seg = self
            .segments
            .iter()
            .find(|s| s.file_offset(vaddr).is_some())?;
        let off = seg.file_offset(vaddr)?;
        let seg_end = seg.offset.checked_add(seg.filesz)?;
        let end = off.saturating_add(max).min(seg_end);
        let end = end.min(self.bytes.len() as u64);
        self.bytes
            .get(usize::try_from(off).ok()?..usize::try_from(end).ok()?)
    }

    /// The virtual address of a file offset (first segment that maps it).
    pub fn vaddr_of_offset(&self, off: u64) -> Option<u64> {
        self.segments.iter().find_map(|s| {
            let rel = off.checked_sub(s.offset)?;
            (rel < s.filesz).then(|| s.vaddr.checked_add(rel))?
        })
    }

    /// The file offset of `vaddr` within an executable segment.
    pub fn exec_file_offset(&self, vaddr: u64) -> Option<u64> {
        self.segments
            .iter()
            .filter(|s| s.is_exec())
            .find_map(|s| s.file_offset(vaddr))
    }
}

/// Where the pclntab is and how to read it (the parsed form borrows the bytes, so it is rebuilt
/// on demand by [`Binary::pclntab`]).
#[derive(Clone, Debug)]
struct PclnLocation {
    file_offset: usize,
    len: usize,
    vaddr: u64,
    text_start: Option<u64>,
}

/// An opened Go executable.
pub struct Binary {
    path: PathBuf,
    bytes: Vec<u8>,
    arch: Arch,
    segments: Vec<Segment>,
    stripped: bool,
    dwarf: bool,
    /// Function symbols from .symtab: name -> (address, size). First definition wins.
    symtab: HashMap<String, (u64, u64)>,
    pcln: Option<PclnLocation>,
    /// Why the pclntab could not be used (when `pcln` is None).
    pcln_error: Option<String>,
    build_info: Option<BuildInfo>,
}

impl fmt::Debug for Binary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Binary")
            .field("path", &self.path)
            .field("len", &self.bytes.len())
            .field("arch", &self.arch)
            .field("stripped", &self.stripped)
            .field("dwarf", &self.dwarf)
            .field("go_version", &self.go_version())
            .finish_non_exhaustive()
    }
}

impl Binary {
    /// Reads and indexes the executable at `path`.
    pub fn open(path: &Path) -> Result<Binary, SymbolError> {
        let bytes = std::fs::read(path).map_err(|source| SymbolError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        Binary::from_bytes(path.to_path_buf(), bytes)
    }

    /// Indexes an executable already in memory; `path` is only used in messages.
    pub fn from_bytes(path: PathBuf, bytes: Vec<u8>) -> Result<Binary, SymbolError> {
        let parsed = elf::parse(&path, &bytes)?;
        let image = Image {
            bytes: &bytes,
            segments: &parsed.segments,
        };

        let build_info = buildinfo::find(image, parsed.buildinfo_section);

        let (pcln, pcln_error) = match locate_pclntab(image, &parsed) {
            Ok(loc) => (Some(loc), None),
            Err(e) => (None, Some(e)),
        };

        let has_runtime_symbols = parsed.symtab.contains_key("runtime.main");
        if pcln.is_none() && build_info.is_none() && !has_runtime_symbols {
            return Err(SymbolError::NotGo {
                path,
                reason: format!(
                    "no Go build info, no runtime symbols and no usable .gopclntab ({})",
                    pcln_error.as_deref().unwrap_or("not found")
                ),
            });
        }
        if pcln.is_none() && parsed.symtab.is_empty() {
            return Err(SymbolError::Malformed {
                path,
                reason: format!(
                    "no .symtab and the Go function table is unusable: {}",
                    pcln_error.as_deref().unwrap_or("not found")
                ),
            });
        }
        if let Some(e) = &pcln_error {
            log::warn!(
                "{}: Go function table unusable ({e}); using .symtab only",
                path.display()
            );
        }

        Ok(Binary {
            path,
            arch: parsed.arch,
            segments: parsed.segments,
            stripped: parsed.stripped,
            dwarf: parsed.dwarf,
            symtab: parsed.symtab,
            pcln,
            pcln_error,
            build_info,
            bytes,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn bytes(&self) -> &[u8] {
        &self.bytes
    }

    pub fn arch(&self) -> Arch {
        self.arch
    }

    /// The Go toolchain version from the build info, if it was found and parsed.
    pub fn go_version(&self) -> Option<&GoVersion> {
        self.build_info.as_ref().and_then(|b| b.go_version.as_ref())
    }

    /// The whole build info (main module, dependencies with versions, build settings).
    pub fn build_info(&self) -> Option<&BuildInfo> {
        self.build_info.as_ref()
    }

    /// No `.symtab` (built with `-ldflags=-s`, or stripped afterwards).
    pub fn is_stripped(&self) -> bool {
        self.stripped
    }

    /// Has DWARF (`.debug_info` or `.zdebug_info`).
    pub fn has_dwarf(&self) -> bool {
        self.dwarf
    }

    /// The Go function table, if one was found and is usable.
    pub fn pclntab(&self) -> Option<Pclntab<'_>> {
        let loc = self.pcln.as_ref()?;
        let end = loc.file_offset.checked_add(loc.len)?;
        let data = self.bytes.get(loc.file_offset..end)?;
        Pclntab::parse(data, loc.text_start).ok()
    }

    /// The virtual address of the Go function table (its pcHeader), if one is usable.
    pub fn pclntab_address(&self) -> Option<u64> {
        self.pcln.as_ref().map(|l| l.vaddr)
    }

    /// Why the Go function table is not usable, if it is not.
    pub fn pclntab_error(&self) -> Option<&str> {
        self.pcln_error.as_deref()
    }

    /// Resolves a function by its Go symbol name (e.g. `net/http.serverHandler.ServeHTTP`,
    /// `net/http.(*response).finishRequest`): `.symtab` first, then `.gopclntab`.
    pub fn lookup(&self, symbol: &str) -> Result<Function, SymbolError> {
        let (address, size, source) = if let Some(&(a, s)) = self.symtab.get(symbol) {
            (a, s, SymbolSource::Symtab)
        } else if let Some((a, s)) = self.pclntab().and_then(|p| p.lookup(symbol)) {
            (a, s, SymbolSource::Gopclntab)
        } else {
            return Err(SymbolError::SymbolNotFound {
                symbol: symbol.to_string(),
                path: self.path.clone(),
            });
        };
        let file_offset =
            self.image()
                .exec_file_offset(address)
                .ok_or_else(|| SymbolError::NotMapped {
                    symbol: symbol.to_string(),
                    path: self.path.clone(),
                    address,
                })?;
        Ok(Function {
            name: symbol.to_string(),
            address,
            size,
            file_offset,
            source,
        })
    }

    /// The machine code of `f` (`f.size` bytes from its entry; shorter if the file ends early).
    pub fn code(&self, f: &Function) -> Result<&[u8], SymbolError> {
        self.image()
            .read_up_to(f.address, f.size)
            .filter(|c| !c.is_empty())
            .ok_or_else(|| SymbolError::NotMapped {
                symbol: f.name.clone(),
                path: self.path.clone(),
                address: f.address,
            })
    }

    /// Where to put `f`'s entry probe (see [`sites::entry_site`]).
    pub fn entry_site(&self, f: &Function, needs_args: bool) -> Result<ProbeSite, SymbolError> {
        Ok(entry_site(self.arch, self.code(f)?, f.address, needs_args))
    }

    /// Sites where each call from `f` to the function `callee` has just returned
    /// (see [`sites::after_call_sites`]).
    pub fn after_call_sites(
        &self,
        f: &Function,
        callee: &str,
    ) -> Result<Vec<ProbeSite>, SymbolError> {
        let target = self.lookup(callee)?;
        Ok(sites::after_call_sites(
            self.arch,
            self.code(f)?,
            f.address,
            target.address,
        ))
    }

    /// Offsets (from `f`'s entry) of its RET instructions (see [`sites::return_sites`]).
    pub fn return_sites(&self, f: &Function) -> Result<Vec<u64>, SymbolError> {
        Ok(return_sites(self.arch, self.code(f)?, f.address))
    }

    pub(crate) fn image(&self) -> Image<'_> {
        Image {
            bytes: &self.bytes,
            segments: &self.segments,
        }
    }
}

/// Finds the pclntab (section, else by its magic in a read-only segment) and its text start.
fn locate_pclntab(image: Image<'_>, parsed: &elf::Parsed) -> Result<PclnLocation, String> {
    let (file_offset, len) = match parsed.pclntab_section {
        Some(r) => r,
        None => gopclntab::scan_for_magic(image)
            .ok_or("no .gopclntab section and no pclntab magic found")?,
    };
    let end = file_offset
        .checked_add(len)
        .ok_or("section range overflows")?;
    let data = image
        .bytes
        .get(file_offset..end)
        .ok_or(".gopclntab is outside the file")?;
    let vaddr = image
        .vaddr_of_offset(file_offset as u64)
        .ok_or(".gopclntab is not in a loaded segment")?;
    let header = gopclntab::Header::parse(data).map_err(|e| e.to_string())?;

    let text_start = if !header.needs_text_start() {
        None
    } else if let Some(t) = header.text_start.filter(|&t| t != 0) {
        Some(t)
    } else {
        // Go 1.26 no longer stores textStart in the header: use runtime.text, else
        // moduledata.text, else the start of .text (equal for internally linked binaries).
        parsed
            .symtab
            .get("runtime.text")
            .map(|&(t, _)| t)
            .or_else(|| gopclntab::text_start_from_moduledata(image, data, vaddr, &header))
            .or(parsed.text_section_addr)
    };
    if header.needs_text_start() && text_start.is_none() {
        return Err("cannot find the text start (no runtime.text, moduledata or .text)".into());
    }

    let pcln = Pclntab::parse(data, text_start).map_err(|e| e.to_string())?;
    // Sanity: the first function must be in executable code.
    if let Some((name, entry, _)) = pcln.functions().next()
        && image.exec_file_offset(entry).is_none()
    {
        return Err(format!(
            "first function {name} at {entry:#x} is not in an executable segment (wrong text start?)"
        ));
    }
    Ok(PclnLocation {
        file_offset,
        len,
        vaddr,
        text_start,
    })
}

/// Little-endian readers that never panic.
pub(crate) mod read {
    pub fn u8_at(d: &[u8], off: usize) -> Option<u8> {
        d.get(off).copied()
    }

    pub fn u32_at(d: &[u8], off: usize) -> Option<u32> {
        let b = d.get(off..off.checked_add(4)?)?;
        Some(u32::from_le_bytes(b.try_into().ok()?))
    }

    pub fn u64_at(d: &[u8], off: usize) -> Option<u64> {
        let b = d.get(off..off.checked_add(8)?)?;
        Some(u64::from_le_bytes(b.try_into().ok()?))
    }

    /// A pointer-sized little-endian word (4 or 8 bytes).
    pub fn word_at(d: &[u8], off: usize, ptr_size: u8) -> Option<u64> {
        match ptr_size {
            4 => u32_at(d, off).map(u64::from),
            8 => u64_at(d, off),
            _ => None,
        }
    }

    /// The NUL-terminated string starting at `off` (without the NUL; to the end if none).
    pub fn cstr_at(d: &[u8], off: usize) -> Option<&[u8]> {
        let rest = d.get(off..)?;
        let n = rest.iter().position(|&b| b == 0).unwrap_or(rest.len());
        rest.get(..n)
    }

    /// An unsigned LEB128 varint (at most 10 bytes); returns the value and its length.
    pub fn uvarint_at(d: &[u8], off: usize) -> Option<(u64, usize)> {
        let mut v: u64 = 0;
        for i in 0..10 {
            let b = *d.get(off.checked_add(i)?)?;
            v |= u64::from(b & 0x7f).checked_shl(7 * i as u32)?;
            if b & 0x80 == 0 {
                return Some((v, i + 1));
            }
        }
        None
    }
}

#[cfg(test)]
pub(crate) mod testutil {
    //! Builds the Go fixtures the tests read (once per process; cached under target/fixtures).

    use std::{
        path::{Path, PathBuf},
        process::Command,
        sync::{Mutex, OnceLock},
    };

    pub fn workspace_root() -> PathBuf {
        let manifest = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
        manifest.parent().map(Path::to_path_buf).unwrap_or(manifest)
    }

    static BUILD_LOCK: Mutex<()> = Mutex::new(());

    /// Builds `tests/fixtures/httpserver` into `target/fixtures/<out_name>` unless it is there.
    fn build(out_name: &str, ldflags: &str, toolchain: Option<&str>) -> Result<PathBuf, String> {
        build_for(out_name, ldflags, toolchain, None)
    }

    /// [`build`] for another GOARCH (e.g. "arm64"; `cargo xtask fixtures` builds the same).
    fn build_for(
        out_name: &str,
        ldflags: &str,
        toolchain: Option<&str>,
        goarch: Option<&str>,
    ) -> Result<PathBuf, String> {
        let _guard = BUILD_LOCK.lock().unwrap_or_else(|e| e.into_inner());
        let root = workspace_root();
        let out = root.join("target/fixtures").join(out_name);
        if out.exists() {
            return Ok(out);
        }
        std::fs::create_dir_all(out.parent().unwrap_or(&root)).map_err(|e| e.to_string())?;
        let tmp = out.with_extension("tmp");
        let mut cmd = Command::new("go");
        cmd.current_dir(root.join("tests/fixtures/httpserver"))
            .env("CGO_ENABLED", "0")
            .args(["build", "-trimpath", "-o"])
            .arg(&tmp)
            .arg(format!("-ldflags={ldflags}"))
            .arg(".");
        if let Some(t) = toolchain {
            cmd.env("GOTOOLCHAIN", t);
        }
        if let Some(a) = goarch {
            cmd.env("GOARCH", a);
        }
        let status = cmd.status().map_err(|e| format!("running go: {e}"))?;
        if !status.success() {
            return Err(format!("go build {out_name} failed: {status}"));
        }
        std::fs::rename(&tmp, &out).map_err(|e| e.to_string())?;
        Ok(out)
    }

    /// The normal and the stripped (`-s -w`) build of the httpserver fixture with the installed Go.
    pub fn httpserver() -> &'static (PathBuf, PathBuf) {
        static PATHS: OnceLock<(PathBuf, PathBuf)> = OnceLock::new();
        PATHS.get_or_init(|| {
            let normal = build("httpserver", "", None).unwrap_or_else(|e| panic!("{e}"));
            let stripped =
                build("httpserver-stripped", "-s -w", None).unwrap_or_else(|e| panic!("{e}"));
            (normal, stripped)
        })
    }

    /// The arm64 builds (normal, stripped) of the fixture: `target/fixtures/arm64/httpserver`.
    pub fn httpserver_arm64() -> &'static (PathBuf, PathBuf) {
        static PATHS: OnceLock<(PathBuf, PathBuf)> = OnceLock::new();
        PATHS.get_or_init(|| {
            let arm = Some("arm64");
            let normal =
                build_for("arm64/httpserver", "", None, arm).unwrap_or_else(|e| panic!("{e}"));
            let stripped = build_for("arm64/httpserver-stripped", "-s -w", None, arm)
                .unwrap_or_else(|e| panic!("{e}"));
            (normal, stripped)
        })
    }

    /// The fixture built with an older toolchain through GOTOOLCHAIN (downloaded on first use);
    /// None when that fails (e.g. offline).
    pub fn httpserver_with(toolchain: &str, ldflags: &str, suffix: &str) -> Option<PathBuf> {
        match build(
            &format!("httpserver-{toolchain}{suffix}"),
            ldflags,
            Some(toolchain),
        ) {
            Ok(p) => Some(p),
            Err(e) => {
                eprintln!("skipping {toolchain}: {e}");
                None
            }
        }
    }

    /// What `go version` prints, e.g. "go1.26.8".
    pub fn installed_go_version() -> String {
        let out = Command::new("go")
            .arg("version")
            .output()
            .unwrap_or_else(|e| panic!("go version: {e}"));
        let s = String::from_utf8_lossy(&out.stdout).into_owned();
        s.split_whitespace()
            .nth(2)
            .unwrap_or_else(|| panic!("unexpected `go version` output {s:?}"))
            .to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::{testutil::*, *};

    const FUNCS: &[&str] = &[
        "net/http.serverHandler.ServeHTTP",
        "net/http.(*response).finishRequest",
        "net/http.(*Transport).roundTrip",
        "runtime.goexit1",
        "runtime.newproc1",
        "main.main",
        "main.deep",
    ];

    #[test]
    fn symtab_and_pclntab_agree() {
        let (normal, stripped) = httpserver();
        let bin = Binary::open(normal).unwrap();
        let strip = Binary::open(stripped).unwrap();
        assert_eq!(bin.arch(), Arch::X86_64);
        assert!(!bin.is_stripped());
        assert!(bin.has_dwarf());
        assert!(strip.is_stripped());
        assert!(!strip.has_dwarf());
        let pcln = bin.pclntab().expect("pclntab of the normal build");
        let spcln = strip.pclntab().expect("pclntab of the stripped build");
        assert!(pcln.nfunc() > 1000, "nfunc {}", pcln.nfunc());
        for &name in FUNCS {
            let f = bin.lookup(name).unwrap();
            assert_eq!(f.source, SymbolSource::Symtab, "{name}");
            assert_eq!(f.name, name);
            assert!(f.size > 0, "{name}");
            assert_eq!(pcln.lookup(name), Some((f.address, f.size)), "{name}");
            // A uprobe offset: the bytes at file_offset are the function's first bytes.
            let code = bin.code(&f).unwrap();
            let at = usize::try_from(f.file_offset).unwrap();
            assert_eq!(&bin.bytes()[at..at + 8], &code[..8], "{name}");

            let s = strip.lookup(name).unwrap();
            assert_eq!(s.source, SymbolSource::Gopclntab, "{name}");
            assert_eq!(
                (s.address, s.size, s.file_offset),
                (f.address, f.size, f.file_offset),
                "{name}"
            );
            assert_eq!(spcln.lookup(name), Some((f.address, f.size)), "{name}");
        }
        // Every function of the table has a .symtab twin with the same address and size: the
        // name for the ABIInternal body, name.abi0 for the other one of ABI-wrapped functions.
        let mut count = HashMap::new();
        for (name, _, _) in pcln.functions() {
            *count.entry(name).or_insert(0) += 1;
        }
        let mut checked = 0;
        let mut abi0 = 0;
        for (name, addr, size) in pcln.functions() {
            // Linker markers (go:textfipsstart...) have no meaningful size.
            let Some(f) = bin.lookup(name).ok().filter(|_| !name.starts_with("go:")) else {
                continue;
            };
            if count.get(name) == Some(&1) {
                assert_eq!((f.address, f.size), (addr, size), "{name}");
            } else {
                assert_eq!(pcln.lookup(name), Some((f.address, f.size)), "{name}");
                if f.address != addr {
                    let f0 = bin.lookup(&format!("{name}.abi0")).unwrap();
                    assert_eq!((f0.address, f0.size), (addr, size), "{name}.abi0");
                    assert_eq!(pcln.lookup(&f0.name), Some((addr, size)), "{name}.abi0");
                    abi0 += 1;
                }
            }
            checked += 1;
        }
        assert!(checked > 1000, "only {checked} functions compared");
        assert!(abi0 > 0, "no ABI wrappers seen");
        // Reverse lookup by pc.
        let f = bin.lookup("main.deep").unwrap();
        assert_eq!(
            pcln.function_containing(f.address + 3).map(|x| x.0),
            Some("main.deep")
        );
    }

    #[test]
    fn go_version_from_buildinfo() {
        let (normal, stripped) = httpserver();
        let want = installed_go_version();
        for p in [normal, stripped] {
            let bin = Binary::open(p).unwrap();
            let v = bin.go_version().expect("go version");
            assert_eq!(v.raw, want);
            assert_eq!(v.to_string(), want);
            assert_eq!(format!("go{}.{}.{}", v.major, v.minor, v.patch), want);
            let bi = bin.build_info().unwrap();
            assert_eq!(bi.path.as_deref(), Some("krakentracer/fixtures/httpserver"));
            assert_eq!(
                bi.main.as_ref().map(|m| m.path.as_str()),
                Some("krakentracer/fixtures/httpserver")
            );
            assert!(
                bi.settings
                    .iter()
                    .any(|(k, v)| k == "CGO_ENABLED" && v == "0"),
                "{:?}",
                bi.settings
            );
        }
    }

    #[test]
    fn entry_site_of_serve_http_is_push_rbp() {
        let (normal, stripped) = httpserver();
        for p in [normal, stripped] {
            let bin = Binary::open(p).unwrap();
            let f = bin.lookup("net/http.serverHandler.ServeHTTP").unwrap();
            let site = bin.entry_site(&f, true).unwrap();
            assert_eq!(site.offset, 0xa, "{site:?}");
            assert_eq!(site.kind, SiteKind::Emulated, "{site:?}");
            assert_eq!(site.instruction, "push rbp");
            // main.deep has a large frame: lea r12 / cmp / jbe, then push rbp.
            let f = bin.lookup("main.deep").unwrap();
            let site = bin.entry_site(&f, true).unwrap();
            assert_eq!(site.kind, SiteKind::Emulated, "{site:?}");
            assert_eq!(site.instruction, "push rbp");
            assert_eq!(bin.code(&f).unwrap()[site.offset as usize], 0x55);
        }
    }

    #[test]
    fn return_sites_are_rets() {
        let (normal, _) = httpserver();
        let bin = Binary::open(normal).unwrap();
        for name in ["net/http.serverHandler.ServeHTTP", "main.deep"] {
            let f = bin.lookup(name).unwrap();
            let rets = bin.return_sites(&f).unwrap();
            assert!(!rets.is_empty(), "{name}");
            let code = bin.code(&f).unwrap();
            for r in rets {
                assert!(r < f.size);
                assert_eq!(code[r as usize], 0xc3, "{name}+{r:#x}");
            }
        }
    }

    #[test]
    fn errors() {
        let e = Binary::open(Path::new("/nonexistent/kraken")).unwrap_err();
        assert!(matches!(e, SymbolError::Io { .. }), "{e}");

        let e = Binary::from_bytes("hostname".into(), b"my-host\n".to_vec()).unwrap_err();
        assert!(matches!(e, SymbolError::NotElf { .. }), "{e}");
        if let Ok(bytes) = std::fs::read("/etc/hostname") {
            let e = Binary::from_bytes("/etc/hostname".into(), bytes).unwrap_err();
            assert!(matches!(e, SymbolError::NotElf { .. }), "{e}");
        }

        let e = Binary::open(Path::new("/bin/true")).unwrap_err();
        assert!(matches!(e, SymbolError::NotGo { .. }), "{e}");

        let (normal, stripped) = httpserver();
        for p in [normal, stripped] {
            let bin = Binary::open(p).unwrap();
            match bin.lookup("main.doesNotExist") {
                Err(SymbolError::SymbolNotFound { symbol, path }) => {
                    assert_eq!(symbol, "main.doesNotExist");
                    assert_eq!(&path, p);
                }
                other => panic!("{other:?}"),
            }
        }
    }

    /// Corrupted inputs give errors or "not found", never panics.
    #[test]
    fn corrupt_inputs_do_not_panic() {
        let (normal, stripped) = httpserver();
        for p in [normal, stripped] {
            let bytes = std::fs::read(p).unwrap();
            let bin = Binary::open(p).unwrap();
            let loc = bin.pcln.clone().unwrap();

            // Truncations.
            for len in [
                0,
                3,
                16,
                64,
                1000,
                64 << 10,
                bytes.len() / 2,
                bytes.len() - 1,
            ] {
                let r = Binary::from_bytes(p.clone(), bytes[..len].to_vec());
                if let Ok(b) = r {
                    let _ = b.lookup("main.main");
                    let _ = b.go_version();
                }
            }

            // The pclntab zeroed: the normal build still resolves through .symtab.
            let mut zeroed = bytes.clone();
            zeroed[loc.file_offset..loc.file_offset + loc.len].fill(0);
            match Binary::from_bytes(p.clone(), zeroed) {
                Ok(b) => {
                    assert!(b.pclntab().is_none());
                    assert!(b.pclntab_error().is_some());
                    let f = b.lookup("main.main").unwrap();
                    assert_eq!(f.source, SymbolSource::Symtab);
                }
                Err(e) => {
                    assert!(bin.is_stripped(), "{e}");
                    assert!(matches!(e, SymbolError::Malformed { .. }), "{e}");
                }
            }

            // Pseudo-random garbage over the pclntab, keeping its header (so parsing proceeds).
            for seed in 1..=8u64 {
                let mut garbled = bytes.clone();
                let mut x = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15);
                let start = loc.file_offset + if seed % 2 == 0 { 64 } else { 8 };
                let step = 1 + (seed as usize) * 7;
                for b in garbled[start..loc.file_offset + loc.len]
                    .iter_mut()
                    .step_by(step)
                {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    *b = x as u8;
                }
                if let Ok(b) = Binary::from_bytes(p.clone(), garbled) {
                    let _ = b.lookup("main.main");
                    let _ = b.lookup("net/http.serverHandler.ServeHTTP");
                    if let Some(t) = b.pclntab() {
                        let n = t.functions().take(100_000).count();
                        assert!(n <= t.nfunc());
                        let _ = t.function_containing(0x401000);
                    }
                    if let Ok(f) = b.lookup("main.main") {
                        let _ = b.entry_site(&f, true);
                        let _ = b.return_sites(&f);
                    }
                }
            }

            // Garbage over the build info.
            let mut garbled = bytes.clone();
            if let Some(i) = garbled.windows(14).position(|w| w == b"\xff Go buildinf:") {
                for b in &mut garbled[i + 14..i + 64] {
                    *b = 0xff;
                }
                if let Ok(b) = Binary::from_bytes(p.clone(), garbled) {
                    let _ = b.go_version();
                }
            }
        }
    }

    /// Fuzzing regression (fuzz/, elf_symbols, at sizes beyond libFuzzer's inputs): thousands
    /// of PT_LOAD segments over the whole file, each scanned for a pclntab magic (60000 of them
    /// in 3.3 MB took over 5 minutes). Refused up front now.
    #[test]
    fn too_many_segments_are_refused() {
        fn elf(phnum: usize) -> Vec<u8> {
            let len = 64 + 56 * phnum as u64;
            let mut b = vec![0x7f, b'E', b'L', b'F', 2, 1, 1, 0];
            b.resize(16, 0);
            b.extend(2u16.to_le_bytes()); // ET_EXEC
            b.extend(62u16.to_le_bytes()); // EM_X86_64
            b.extend(1u32.to_le_bytes());
            b.extend(0x40_1000u64.to_le_bytes()); // e_entry
            b.extend(64u64.to_le_bytes()); // e_phoff
            b.extend(0u64.to_le_bytes()); // e_shoff
            b.extend(0u32.to_le_bytes());
            b.extend([64, 0, 56, 0]);
            b.extend(u16::try_from(phnum).unwrap().to_le_bytes());
            b.extend([64, 0, 0, 0, 0, 0]);
            for _ in 0..phnum {
                b.extend(1u32.to_le_bytes()); // PT_LOAD
                b.extend(4u32.to_le_bytes()); // R
                b.extend(0u64.to_le_bytes());
                b.extend(0x40_0000u64.to_le_bytes());
                b.extend(0x40_0000u64.to_le_bytes());
                b.extend(len.to_le_bytes());
                b.extend(len.to_le_bytes());
                b.extend(0x1000u64.to_le_bytes());
            }
            b
        }
        let e = Binary::from_bytes("many".into(), elf(5000)).unwrap_err();
        assert!(
            matches!(&e, SymbolError::Malformed { reason, .. } if reason.contains("5000 PT_LOAD")),
            "{e}"
        );
        // A few are fine (and this one is simply not Go).
        let e = Binary::from_bytes("few".into(), elf(elf::MAX_LOAD_SEGMENTS)).unwrap_err();
        assert!(matches!(e, SymbolError::NotGo { .. }), "{e}");
    }

    /// Older toolchains: go1.21 (pcHeader still has textStart) parses like go1.26 (it does not).
    #[test]
    fn older_toolchain() {
        let Some(p) = httpserver_with("go1.21.13", "", "") else {
            return;
        };
        let Some(ps) = httpserver_with("go1.21.13", "-s -w", "-stripped") else {
            return;
        };
        let bin = Binary::open(&p).unwrap();
        let strip = Binary::open(&ps).unwrap();
        for b in [&bin, &strip] {
            let v = b.go_version().unwrap();
            assert_eq!((v.major, v.minor, v.patch), (1, 21, 13), "{v}");
        }
        let pcln = bin.pclntab().unwrap();
        assert_eq!(pcln.magic(), gopclntab::GO120_MAGIC);
        assert!(pcln.header().text_start.is_some_and(|t| t != 0));
        for &name in FUNCS {
            let f = bin.lookup(name).unwrap();
            assert_eq!(pcln.lookup(name), Some((f.address, f.size)), "{name}");
            let s = strip.lookup(name).unwrap();
            assert_eq!(s.source, SymbolSource::Gopclntab);
            assert_eq!((s.address, s.size), (f.address, f.size), "{name}");
        }
        let f = bin.lookup("net/http.serverHandler.ServeHTTP").unwrap();
        let site = bin.entry_site(&f, true).unwrap();
        assert_eq!(site.kind, SiteKind::Emulated, "{site:?}");
    }
}
