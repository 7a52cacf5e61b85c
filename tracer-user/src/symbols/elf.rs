//! The ELF side: header checks, PT_LOAD segments, the sections we care about, `.symtab`.

use std::{collections::HashMap, path::Path};

use object::{
    Endianness, Object as _, ObjectSection as _, ObjectSymbol as _, ObjectSymbolTable as _,
    SymbolKind,
    elf::{EM_AARCH64, EM_X86_64, PT_LOAD},
    read::elf::{ElfFile64, FileHeader as _, ProgramHeader as _},
};

use super::{Arch, Segment, SymbolError};

/// What [`super::Binary`] needs from the ELF structure.
pub(crate) struct Parsed {
    pub arch: Arch,
    pub segments: Vec<Segment>,
    pub stripped: bool,
    pub dwarf: bool,
    /// FUNC symbols of `.symtab`: name -> (address, size); first definition wins.
    pub symtab: HashMap<String, (u64, u64)>,
    /// File range (offset, len) of `.gopclntab`.
    pub pclntab_section: Option<(usize, usize)>,
    /// File range (offset, len) of `.go.buildinfo`.
    pub buildinfo_section: Option<(usize, usize)>,
    pub text_section_addr: Option<u64>,
}

const ELF_MAGIC: &[u8] = b"\x7fELF";
/// More PT_LOAD segments than any linker writes (Go's linker writes 3 or 4) make a file
/// malformed: the scans for the pclntab, the build info and moduledata walk every segment, so
/// thousands of overlapping ones made opening a crafted file take minutes.
pub(crate) const MAX_LOAD_SEGMENTS: usize = 64;
const ELFCLASS64: u8 = 2;
const ELFDATA2LSB: u8 = 1;

fn machine_name(m: u16) -> String {
    match m {
        3 => "i386".into(),
        40 => "arm".into(),
        8 => "mips".into(),
        20 => "ppc".into(),
        21 => "ppc64".into(),
        22 => "s390".into(),
        243 => "riscv".into(),
        258 => "loongarch".into(),
        _ => format!("e_machine {m}"),
    }
}

pub(crate) fn parse(path: &Path, bytes: &[u8]) -> Result<Parsed, SymbolError> {
    let not_elf = |reason: &str| SymbolError::NotElf {
        path: path.to_path_buf(),
        reason: reason.to_string(),
    };
    if bytes.get(..4) != Some(ELF_MAGIC) {
        return Err(not_elf("no ELF magic"));
    }
    let class = bytes
        .get(4)
        .copied()
        .ok_or_else(|| not_elf("truncated ELF header"))?;
    let data = bytes
        .get(5)
        .copied()
        .ok_or_else(|| not_elf("truncated ELF header"))?;
    if class != ELFCLASS64 || data != ELFDATA2LSB {
        // e_machine is at 18 in both classes; read it in the file's byte order for the message.
        let m = bytes.get(18..20).map_or(0, |b| {
            if data == ELFDATA2LSB {
                u16::from_le_bytes([b[0], b[1]])
            } else {
                u16::from_be_bytes([b[0], b[1]])
            }
        });
        let width = if class == ELFCLASS64 { "64" } else { "32" };
        let order = if data == ELFDATA2LSB { "little" } else { "big" };
        return Err(SymbolError::UnsupportedArch {
            path: path.to_path_buf(),
            machine: format!("{}, {width}-bit {order}-endian", machine_name(m)),
        });
    }

    let elf = ElfFile64::<Endianness>::parse(bytes).map_err(|e| SymbolError::Malformed {
        path: path.to_path_buf(),
        reason: format!("ELF: {e}"),
    })?;
    let endian = elf.endian();
    let machine = elf.elf_header().e_machine(endian);
    let arch = match machine {
        EM_X86_64 => Arch::X86_64,
        EM_AARCH64 => Arch::Aarch64,
        m => {
            return Err(SymbolError::UnsupportedArch {
                path: path.to_path_buf(),
                machine: machine_name(m),
            });
        }
    };

    let segments = elf
        .elf_program_headers()
        .iter()
        .filter(|ph| ph.p_type(endian) == PT_LOAD)
        .map(|ph| Segment {
            vaddr: ph.p_vaddr(endian),
            memsz: ph.p_memsz(endian),
            offset: ph.p_offset(endian),
            filesz: ph.p_filesz(endian),
            flags: ph.p_flags(endian),
        })
        .collect::<Vec<_>>();
    if segments.len() > MAX_LOAD_SEGMENTS {
        return Err(SymbolError::Malformed {
            path: path.to_path_buf(),
            reason: format!(
                "{} PT_LOAD segments (linkers write a handful; at most {MAX_LOAD_SEGMENTS} are read)",
                segments.len()
            ),
        });
    }

    let file_range = |name: &str| -> Option<(usize, usize)> {
        let s = elf.section_by_name(name)?;
        let (off, len) = s.file_range()?;
        let off = usize::try_from(off).ok()?;
        let len = usize::try_from(len).ok()?;
        // Only ranges that are really in the file.
        (off.checked_add(len)? <= bytes.len() && len > 0).then_some((off, len))
    };

    let stripped = elf.symbol_table().is_none();
    let dwarf = elf.section_by_name(".debug_info").is_some()
        || elf.section_by_name(".zdebug_info").is_some();

    let mut symtab = HashMap::new();
    if let Some(table) = elf.symbol_table() {
        for sym in table.symbols() {
            if sym.kind() != SymbolKind::Text || sym.address() == 0 {
                continue;
            }
            let Ok(name) = sym.name() else { continue };
            symtab
                .entry(name.to_string())
                .or_insert((sym.address(), sym.size()));
        }
    }

    Ok(Parsed {
        arch,
        segments,
        stripped,
        dwarf,
        symtab,
        pclntab_section: file_range(".gopclntab"),
        buildinfo_section: file_range(".go.buildinfo"),
        text_section_addr: elf.section_by_name(".text").map(|s| s.address()),
    })
}
