//! The Go runtime's function table (`.gopclntab`): function names, entry addresses and sizes,
//! present even in stripped binaries.
//!
//! Layout (Go 1.16+; see `$GOROOT/src/runtime/symtab.go` and `cmd/link/internal/ld/pcln.go`):
//!
//! ```text
//! pcHeader: magic u32, pad u8 ×2, minLC u8, ptrSize u8, nfunc word, nfiles word,
//!           [1.18+: textStart word — always 0 since Go 1.26, see below],
//!           funcnameOffset, cuOffset, filetabOffset, pctabOffset, pclnOffset   (words, from pcHeader)
//! functab at pclnOffset: nfunc × (entry, funcoff), then the end pc
//!           1.18+: u32 entryoff (from textStart) and u32 funcoff;  1.16: word entry pc and word funcoff
//! _func at pclnOffset+funcoff: 1.18+: entryoff u32, nameOff i32, args, deferreturn, pcsp u32, …
//!                              1.16:  entry word, nameOff i32, args, deferreturn, pcsp u32, …
//! ```
//!
//! Go 1.26 stopped storing `textStart` in the header (it needed a relocation): the base for
//! `entryoff` is `runtime.text`, which the caller finds in `.symtab`, in `runtime.firstmoduledata`
//! (its `text` field; see [`text_start_from_moduledata`]) or, as a last resort, at the start of
//! `.text`.
//!
//! A function's size is the extent of its pc-value tables (pcsp), which is the size the linker
//! records in `.symtab`; the distance to the next function also counts the alignment padding.

use super::{Image, PF_W, Segment, SymbolError, read};

/// Go 1.2–1.15 (not supported).
pub const GO12_MAGIC: u32 = 0xffff_fffb;
/// Go 1.16–1.17.
pub const GO116_MAGIC: u32 = 0xffff_fffa;
/// Go 1.18–1.19.
pub const GO118_MAGIC: u32 = 0xffff_fff0;
/// Go 1.20 and later.
pub const GO120_MAGIC: u32 = 0xffff_fff1;

/// `_func.funcID` and `_func.flag` (same offsets in the 1.16 and 1.18+ layouts).
const FUNC_ID_OFFSET: usize = 40;
const FUNC_FLAG_OFFSET: usize = 41;
/// abi.FuncFlagAsm.
const FUNC_FLAG_ASM: u8 = 4;

/// The decoded `pcHeader`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Header {
    pub magic: u32,
    /// Instruction size quantum (1 on x86, 4 on arm64).
    pub min_lc: u8,
    pub ptr_size: u8,
    pub nfunc: u64,
    pub nfiles: u64,
    /// The header's textStart field (Go 1.18–1.25); `Some(0)` on Go 1.26+, None before 1.18.
    pub text_start: Option<u64>,
    pub funcname_offset: u64,
    pub cu_offset: u64,
    pub filetab_offset: u64,
    pub pctab_offset: u64,
    pub pcln_offset: u64,
}

impl Header {
    pub fn parse(data: &[u8]) -> Result<Header, SymbolError> {
        let bad = |r: &str| SymbolError::malformed(format!("pclntab header: {r}"));
        let magic = read::u32_at(data, 0).ok_or_else(|| bad("truncated"))?;
        match magic {
            GO116_MAGIC | GO118_MAGIC | GO120_MAGIC => {}
            GO12_MAGIC => return Err(bad("Go 1.2–1.15 format is not supported")),
            m => return Err(bad(&format!("unknown magic {m:#x}"))),
        }
        let (pad1, pad2) = (read::u8_at(data, 4), read::u8_at(data, 5));
        let min_lc = read::u8_at(data, 6).ok_or_else(|| bad("truncated"))?;
        let ptr_size = read::u8_at(data, 7).ok_or_else(|| bad("truncated"))?;
        if pad1 != Some(0) || pad2 != Some(0) {
            return Err(bad("non-zero padding"));
        }
        if !matches!(min_lc, 1 | 2 | 4) || !matches!(ptr_size, 4 | 8) {
            return Err(bad(&format!("minLC {min_lc}, ptrSize {ptr_size}")));
        }
        let ps = usize::from(ptr_size);
        let word =
            |i: usize| read::word_at(data, 8 + i * ps, ptr_size).ok_or_else(|| bad("truncated"));
        let nfunc = word(0)?;
        let nfiles = word(1)?;
        let (text_start, first) = if magic == GO116_MAGIC {
            (None, 2)
        } else {
            (Some(word(2)?), 3)
        };
        let h = Header {
            magic,
            min_lc,
            ptr_size,
            nfunc,
            nfiles,
            text_start,
            funcname_offset: word(first)?,
            cu_offset: word(first + 1)?,
            filetab_offset: word(first + 2)?,
            pctab_offset: word(first + 3)?,
            pcln_offset: word(first + 4)?,
        };
        let len = data.len() as u64;
        for (what, off) in [
            ("funcnameOffset", h.funcname_offset),
            ("pctabOffset", h.pctab_offset),
            ("pclnOffset", h.pcln_offset),
        ] {
            if off == 0 || off >= len {
                return Err(bad(&format!(
                    "{what} {off:#x} outside the table ({len:#x} bytes)"
                )));
            }
        }
        if h.nfunc == 0 {
            return Err(bad("no functions"));
        }
        Ok(h)
    }

    /// Whether function entries are offsets from a text start (Go 1.18+) rather than addresses.
    pub fn needs_text_start(&self) -> bool {
        self.magic != GO116_MAGIC
    }

    fn header_len(&self) -> usize {
        let words = if self.magic == GO116_MAGIC { 7 } else { 8 };
        8 + words * usize::from(self.ptr_size)
    }
}

/// A parsed function table, borrowing the table's bytes.
#[derive(Clone, Debug)]
pub struct Pclntab<'a> {
    header: Header,
    text_start: u64,
    funcnametab: &'a [u8],
    pctab: &'a [u8],
    /// functab followed by the _func records.
    pcln: &'a [u8],
    nfunc: usize,
}

impl<'a> Pclntab<'a> {
    /// Parses the table at the start of `data` (the `.gopclntab` section contents).
    ///
    /// `text_start` is the address of `runtime.text`; it is required for Go 1.26+ (whose header
    /// no longer carries it), ignored for Go 1.16/1.17 (absolute entries) and used for Go
    /// 1.18–1.25 only if the header's value is 0.
    pub fn parse(data: &'a [u8], text_start: Option<u64>) -> Result<Self, SymbolError> {
        let header = Header::parse(data)?;
        let text_start = if header.needs_text_start() {
            match header.text_start.filter(|&t| t != 0).or(text_start) {
                Some(t) => t,
                None => {
                    return Err(SymbolError::malformed(
                        "pclntab: no textStart in the header (Go 1.26+) and none given",
                    ));
                }
            }
        } else {
            0
        };
        let at = |off: u64| usize::try_from(off).ok().and_then(|o| data.get(o..));
        let (Some(funcnametab), Some(pctab), Some(pcln)) = (
            at(header.funcname_offset),
            at(header.pctab_offset),
            at(header.pcln_offset),
        ) else {
            return Err(SymbolError::malformed(
                "pclntab: table offsets out of range",
            ));
        };
        let t = Pclntab {
            nfunc: 0,
            header,
            text_start,
            funcnametab,
            pctab,
            pcln,
        };
        let entry_len = t.functab_field_len() * 2;
        let max_funcs = pcln.len().saturating_sub(t.functab_field_len()) / entry_len;
        let nfunc = usize::try_from(t.header.nfunc)
            .ok()
            .filter(|&n| n <= max_funcs)
            .ok_or_else(|| {
                SymbolError::malformed(format!(
                    "pclntab: nfunc {} does not fit in the table",
                    t.header.nfunc
                ))
            })?;
        if t.header.header_len() > data.len() {
            return Err(SymbolError::malformed("pclntab: truncated header"));
        }
        Ok(Pclntab { nfunc, ..t })
    }

    pub fn header(&self) -> &Header {
        &self.header
    }

    pub fn magic(&self) -> u32 {
        self.header.magic
    }

    /// Number of functions in the table.
    pub fn nfunc(&self) -> usize {
        self.nfunc
    }

    /// The base of entry offsets (`runtime.text`); 0 for Go 1.16/1.17 tables.
    pub fn text_start(&self) -> u64 {
        self.text_start
    }

    fn functab_field_len(&self) -> usize {
        if self.header.needs_text_start() {
            4
        } else {
            usize::from(self.header.ptr_size)
        }
    }

    fn functab_field(&self, index: usize) -> Option<u64> {
        let len = self.functab_field_len();
        let off = index.checked_mul(len)?;
        if len == 4 {
            read::u32_at(self.pcln, off).map(u64::from)
        } else {
            read::word_at(self.pcln, off, self.header.ptr_size)
        }
    }

    /// Entry address of function `i`; `i == nfunc` gives the end of the last function.
    fn entry(&self, i: usize) -> Option<u64> {
        if i > self.nfunc {
            return None;
        }
        let v = self.functab_field(i.checked_mul(2)?)?;
        if self.header.needs_text_start() {
            self.text_start.checked_add(v)
        } else {
            Some(v)
        }
    }

    /// Offset of function `i`'s `_func` record within `pcln`.
    fn func_record(&self, i: usize) -> Option<usize> {
        if i >= self.nfunc {
            return None;
        }
        usize::try_from(self.functab_field(i.checked_mul(2)?.checked_add(1)?)?).ok()
    }

    fn field_offset(&self, new_layout: usize) -> usize {
        // In 1.16/1.17 the first field is a pointer-sized entry instead of a u32.
        if self.header.needs_text_start() {
            new_layout
        } else {
            new_layout - 4 + usize::from(self.header.ptr_size)
        }
    }

    fn name_bytes(&self, i: usize) -> Option<&'a [u8]> {
        let rec = self.func_record(i)?;
        let name_off = read::u32_at(self.pcln, rec.checked_add(self.field_offset(4))?)?;
        let name_off = usize::try_from(i32::try_from(name_off).ok()?).ok()?;
        read::cstr_at(self.funcnametab, name_off).filter(|n| !n.is_empty())
    }

    fn name(&self, i: usize) -> Option<&'a str> {
        std::str::from_utf8(self.name_bytes(i)?).ok()
    }

    /// Size of function `i`: the extent of its pcsp table, else the distance to the next entry.
    fn size(&self, i: usize) -> Option<u64> {
        let entry = self.entry(i)?;
        let span = self.entry(i.checked_add(1)?)?.checked_sub(entry)?;
        let rec = self.func_record(i)?;
        let pcsp = read::u32_at(self.pcln, rec.checked_add(self.field_offset(16))?)?;
        let extent = pcvalue_extent(self.pctab, pcsp, self.header.min_lc);
        Some(match extent {
            Some(e) if e > 0 && e <= span => e,
            _ => span,
        })
    }

    /// Every function: (name, entry address, size). Entries whose records are unreadable are
    /// skipped.
    pub fn functions(&self) -> impl Iterator<Item = (&'a str, u64, u64)> + '_ {
        (0..self.nfunc).filter_map(|i| Some((self.name(i)?, self.entry(i)?, self.size(i)?)))
    }

    /// Address and size of the function named `name`.
    ///
    /// Functions with ABI wrappers appear twice under the same name (an ABIInternal and an ABI0
    /// body, one of them the wrapper). Like `.symtab`, `name` means the ABIInternal one (what Go
    /// callers call) and `name.abi0` the other: the ABI0 body is the assembly one (FuncFlagAsm)
    /// of an assembly function, the wrapper (FuncIDWrapper, the highest funcID) of a Go one.
    pub fn lookup(&self, name: &str) -> Option<(u64, u64)> {
        let i = self.lookup_abi(name.as_bytes(), false).or_else(|| {
            let base = name.strip_suffix(".abi0")?;
            self.lookup_abi(base.as_bytes(), true)
        })?;
        Some((self.entry(i)?, self.size(i)?))
    }

    fn lookup_abi(&self, name: &[u8], abi0: bool) -> Option<usize> {
        let mut found: Vec<usize> = (0..self.nfunc)
            .filter(|&i| self.name_bytes(i) == Some(name))
            .collect();
        // Stable: ties keep table order.
        found.sort_by_key(|&i| self.abi_rank(i));
        if abi0 {
            (found.len() >= 2).then(|| found.get(1).copied()).flatten()
        } else {
            found.first().copied()
        }
    }

    /// Lower is more likely the ABIInternal body: (is assembly, funcID).
    fn abi_rank(&self, i: usize) -> (bool, u8) {
        let Some(rec) = self.func_record(i) else {
            return (true, u8::MAX);
        };
        let field = |off: usize| rec.checked_add(off).and_then(|o| read::u8_at(self.pcln, o));
        let func_id = field(FUNC_ID_OFFSET).unwrap_or(u8::MAX);
        let flag = field(FUNC_FLAG_OFFSET).unwrap_or(0);
        (flag & FUNC_FLAG_ASM != 0, func_id)
    }

    /// The function whose code contains `pc`: (name, entry, size).
    pub fn function_containing(&self, pc: u64) -> Option<(&'a str, u64, u64)> {
        // functab is sorted by entry (the runtime checks it); on a garbled table the answer is
        // merely wrong, never a panic.
        let idx = partition_point(self.nfunc, |i| self.entry(i).is_some_and(|e| e <= pc));
        let i = idx.checked_sub(1)?;
        let (entry, size) = (self.entry(i)?, self.size(i)?);
        (pc < entry.checked_add(size)?).then_some((self.name(i)?, entry, size))
    }
}

/// `partition_point` over indexes 0..n.
fn partition_point(n: usize, pred: impl Fn(usize) -> bool) -> usize {
    let (mut lo, mut hi) = (0, n);
    while lo < hi {
        let mid = lo + (hi - lo) / 2;
        if pred(mid) {
            lo = mid + 1;
        } else {
            hi = mid;
        }
    }
    lo
}

/// The pc extent covered by the pc-value table at `off` in pctab (see runtime.step): pairs of
/// (zig-zag value delta, pc delta × quantum) varints, ended by a 0 value delta after the first.
fn pcvalue_extent(pctab: &[u8], off: u32, quantum: u8) -> Option<u64> {
    if off == 0 {
        return None; // no table
    }
    let mut p = usize::try_from(off).ok()?;
    let mut pc: u64 = 0;
    let mut first = true;
    loop {
        let (vdelta, n) = read::uvarint_at(pctab, p)?;
        if vdelta == 0 && !first {
            return Some(pc);
        }
        p = p.checked_add(n)?;
        let (pcdelta, n) = read::uvarint_at(pctab, p)?;
        p = p.checked_add(n)?;
        pc = pc.checked_add(pcdelta.checked_mul(u64::from(quantum))?)?;
        first = false;
    }
}

/// Looks for a pcHeader by its magic in the read-only loaded segments (for binaries whose
/// section headers are gone). Returns the file range (offset, len to the end of the segment).
pub(crate) fn scan_for_magic(image: Image<'_>) -> Option<(usize, usize)> {
    for seg in image
        .segments
        .iter()
        .filter(|s| !s.is_exec() && s.flags & PF_W == 0)
    {
        let Some((start, bytes)) = segment_bytes(image, seg) else {
            continue;
        };
        let mut off = 0usize;
        while off.checked_add(8).is_some_and(|e| e <= bytes.len()) {
            let m = read::u32_at(bytes, off);
            if matches!(m, Some(GO116_MAGIC | GO118_MAGIC | GO120_MAGIC))
                && let Some(data) = bytes.get(off..)
                && Header::parse(data).is_ok()
            {
                return Some((start.checked_add(off)?, data.len()));
            }
            off += 8;
        }
    }
    None
}

/// Offsets in `runtime.moduledata` (64-bit, Go 1.16+): pcHeader *pcHeader at 0, funcnametab
/// []byte at 8, … minpc at 160, text at 176.
const MODULEDATA_FUNCNAMETAB: usize = 8;
const MODULEDATA_MINPC: usize = 160;
const MODULEDATA_TEXT: usize = 176;

/// Finds `runtime.firstmoduledata` in the writable segments (a pointer to the pcHeader followed
/// by a slice pointing at its funcnametab) and returns its `text` field, checked against `minpc`
/// and the first function's entry offset.
pub(crate) fn text_start_from_moduledata(
    image: Image<'_>,
    pclntab: &[u8],
    pclntab_vaddr: u64,
    header: &Header,
) -> Option<u64> {
    if header.ptr_size != 8 {
        return None;
    }
    let funcnametab = pclntab_vaddr.checked_add(header.funcname_offset)?;
    let first_entryoff = read::u32_at(pclntab, usize::try_from(header.pcln_offset).ok()?)?;
    for seg in image.segments.iter().filter(|s| s.flags & PF_W != 0) {
        let Some((start, bytes)) = segment_bytes(image, seg) else {
            continue;
        };
        // Segment offsets and addresses agree modulo the page size, so file alignment is
        // address alignment.
        let mut off = (8 - start % 8) % 8;
        while off
            .checked_add(MODULEDATA_TEXT + 8)
            .is_some_and(|e| e <= bytes.len())
        {
            if read::u64_at(bytes, off) == Some(pclntab_vaddr)
                && read::u64_at(bytes, off + MODULEDATA_FUNCNAMETAB) == Some(funcnametab)
                && let Some(text) = read::u64_at(bytes, off + MODULEDATA_TEXT)
                && let Some(minpc) = read::u64_at(bytes, off + MODULEDATA_MINPC)
                && minpc.checked_sub(text) == Some(u64::from(first_entryoff))
            {
                return Some(text);
            }
            off += 8;
        }
    }
    None
}

/// A segment's file offset and file-backed bytes (clamped to the file), if its offsets are sane.
fn segment_bytes<'a>(image: Image<'a>, seg: &Segment) -> Option<(usize, &'a [u8])> {
    let start = usize::try_from(seg.offset).ok()?;
    let end = start
        .checked_add(usize::try_from(seg.filesz).ok()?)?
        .min(image.bytes.len());
    Some((start, image.bytes.get(start..end)?))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::symbols::{Binary, testutil::httpserver};

    #[test]
    fn go126_header_has_no_text_start_and_moduledata_has_it() {
        let (normal, stripped) = httpserver();
        let bin = Binary::open(normal).unwrap();
        let runtime_text = bin.lookup("runtime.text").map(|f| f.address).ok();
        let p = bin.pclntab().unwrap();
        assert_eq!(p.magic(), GO120_MAGIC);
        assert_eq!(p.header().ptr_size, 8);
        assert_eq!(p.header().min_lc, 1);
        if bin
            .go_version()
            .is_some_and(|v| (v.major, v.minor) >= (1, 26))
        {
            assert_eq!(p.header().text_start, Some(0), "Go 1.26 dropped textStart");
        }
        // The moduledata route (what stripped binaries use) agrees with runtime.text.
        let loc = bin.pcln.clone().unwrap();
        let data = &bin.bytes()[loc.file_offset..loc.file_offset + loc.len];
        let md = text_start_from_moduledata(bin.image(), data, loc.vaddr, p.header());
        assert_eq!(md, Some(runtime_text.unwrap()));
        assert_eq!(p.text_start(), runtime_text.unwrap());
        let strip = Binary::open(stripped).unwrap();
        assert_eq!(strip.pclntab().unwrap().text_start(), p.text_start());
        // Function zero sits at runtime.text.
        assert_eq!(p.functions().next().map(|f| f.1), Some(p.text_start()));
    }

    #[test]
    fn found_by_magic_without_section_headers() {
        let (_, stripped) = httpserver();
        let bin = Binary::open(stripped).unwrap();
        let loc = bin.pcln.clone().unwrap();
        let (off, _) = scan_for_magic(bin.image()).unwrap();
        assert_eq!(off, loc.file_offset);
    }

    #[test]
    fn pcvalue_extent_decodes() {
        // value +1 over 3 pcs, value +2 over 5 pcs, end.
        let tab = [0u8, 2, 3, 4, 5, 0];
        assert_eq!(pcvalue_extent(&tab, 1, 1), Some(8));
        assert_eq!(pcvalue_extent(&tab, 1, 4), Some(32));
        assert_eq!(pcvalue_extent(&tab, 0, 1), None);
        assert_eq!(pcvalue_extent(&tab[..4], 1, 1), None); // truncated
    }

    #[test]
    fn header_rejects_garbage() {
        assert!(Header::parse(&[]).is_err());
        assert!(Header::parse(&[0xf1, 0xff, 0xff, 0xff]).is_err());
        assert!(Header::parse(&[0xfb, 0xff, 0xff, 0xff, 0, 0, 1, 8]).is_err());
        let mut h = vec![0xf1, 0xff, 0xff, 0xff, 0, 0, 1, 8];
        h.extend_from_slice(&[0xff; 64]);
        assert!(Header::parse(&h).is_err()); // offsets out of range
        assert!(Pclntab::parse(&h, Some(0x401000)).is_err());
    }
}
