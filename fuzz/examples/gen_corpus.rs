//! Writes the seed corpus of every fuzz target into `fuzz/corpus/<target>/`:
//!
//! ```text
//! cd fuzz && cargo run --example gen_corpus
//! ```
//!
//! The seeds are small synthetic but well-formed inputs (a real Go binary is megabytes, and
//! libFuzzer mutates small inputs far better): little Go-shaped ELF executables (x86_64 and
//! arm64; `.text`, `.gopclntab` in the Go 1.16, 1.18, 1.20 and 1.26 layouts, `.go.buildinfo`
//! inline and pointer formats, `runtime.firstmoduledata`, `.symtab`, DWARF plain and
//! compressed, with and without section headers), the bare tables and blobs, ring-buffer records
//! encoded from the real event structs, traceparent headers, path rules and config files.
//! Deterministic: running it again rewrites the same files.

use std::{fs, io::Write as _, path::Path};

use flate2::{Compression, write::ZlibEncoder};
use tracer_common::{
    event::{
        ADDR_LEN, DIGEST_LEN, EventHeader, GoStr, HttpClientEndEvent, HttpClientEvent,
        HttpServeEndEvent, HttpServeEvent, KrakenDigestEvent, METHOD_LEN, PATH_LEN, SCHEME_LEN,
        TRACEPARENT_LEN, TcpSnapshot, URI_LEN,
    },
    probe::ProbeId,
};

const BASE: u64 = 0x40_0000;
const GO116_MAGIC: u32 = 0xffff_fffa;
const GO118_MAGIC: u32 = 0xffff_fff0;
const GO120_MAGIC: u32 = 0xffff_fff1;
const BUILDINFO_MAGIC: &[u8; 14] = b"\xff Go buildinf:";

// ---------------------------------------------------------------------------------------------
// Machine code.

#[derive(Clone, Copy, PartialEq)]
enum Machine {
    X86_64,
    Aarch64,
}

/// A function of the synthetic binary: its name, the function it calls (if any), its funcID.
struct FuncSpec {
    name: &'static str,
    calls: Option<&'static str>,
    func_id: u8,
}

const fn f(name: &'static str) -> FuncSpec {
    FuncSpec {
        name,
        calls: None,
        func_id: 0,
    }
}

const fn calls(name: &'static str, callee: &'static str) -> FuncSpec {
    FuncSpec {
        name,
        calls: Some(callee),
        func_id: 0,
    }
}

const MORESTACK: &str = "runtime.morestack_noctxt";

/// The functions every synthetic binary has: the ones the probes resolve (tracer-common's
/// PROBES, callees included), a few runtime ones, and an ABI wrapper twin of `main.deep`.
const FUNCS: &[FuncSpec] = &[
    f("go:buildid"),
    f(MORESTACK),
    calls("main.main", "main.deep"),
    f("main.deep"),
    f("net/http.serverHandler.ServeHTTP"),
    f("net/http.(*response).finishRequest"),
    calls(
        "net/http.(*Transport).roundTrip",
        "net/http.(*persistConn).roundTrip",
    ),
    f("net/http.(*persistConn).roundTrip"),
    f("github.com/uber/kraken/lib/torrent/scheduler/announcer.(*Announcer).Announce"),
    f("github.com/uber/kraken/lib/store.(*CADownloadStore).MoveDownloadFileToCache"),
    f("github.com/uber/kraken/lib/blobrefresh.(*Refresher).Refresh"),
    f("github.com/uber/kraken/lib/store.(*CAStore).WriteBlobToCacheWithMetaInfo"),
    calls(
        "github.com/uber/kraken/lib/blobrefresh.(*Refresher).Refresh.func1",
        "github.com/uber/kraken/lib/blobrefresh.(*Refresher).download",
    ),
    f("github.com/uber/kraken/lib/blobrefresh.(*Refresher).download"),
    f("runtime.goexit1"),
    FuncSpec {
        name: "main.deep",
        calls: None,
        func_id: 21, // abi.FuncIDWrapper: the ABI0 wrapper of main.deep
    },
];

/// A laid-out function: entry offset from the text start and code size.
#[derive(Clone, Copy)]
struct Placed {
    off: u64,
    size: u64,
}

/// Assembles `.text`: every function of FUNCS, 32-byte aligned, padded with int3 / udf.
/// x86_64 functions have Go's prologue (stack check, push rbp, frame), an optional call, and the
/// morestack tail; arm64 ones a frame record, an optional `bl` and `ret`.
fn assemble(machine: Machine, funcs: &[FuncSpec]) -> (Vec<u8>, Vec<Placed>) {
    // First pass: sizes (independent of addresses).
    let size_of = |spec: &FuncSpec| -> u64 {
        match machine {
            Machine::X86_64 if spec.name == MORESTACK => 3,
            Machine::X86_64 => 34 + if spec.calls.is_some() { 5 } else { 0 },
            Machine::Aarch64 => 16 + if spec.calls.is_some() { 4 } else { 0 },
        }
    };
    let mut placed = Vec::new();
    let mut off = 0u64;
    for spec in funcs {
        let size = size_of(spec);
        placed.push(Placed { off, size });
        off = (off + size).next_multiple_of(32);
    }
    let index_of = |name: &str| funcs.iter().position(|s| s.name == name).unwrap();
    let mut text = Vec::new();
    for (spec, p) in funcs.iter().zip(&placed) {
        text.resize(
            p.off as usize,
            if machine == Machine::X86_64 { 0xcc } else { 0 },
        );
        let start = text.len() as i64;
        let rel32 = |from_next: i64, to: u64| ((to as i64) - from_next) as i32;
        match machine {
            Machine::X86_64 if spec.name == MORESTACK => text.extend([0x55, 0x5d, 0xc3]),
            Machine::X86_64 => {
                let call_len = if spec.calls.is_some() { 5 } else { 0 };
                let morestack = 27 + call_len as i64; // offset of the tail
                text.extend([0x49, 0x3b, 0x66, 0x10]); // cmp rsp, [r14+0x10]
                text.extend([0x76, (morestack - 6) as u8]); // jbe tail
                text.push(0x55); // push rbp
                text.extend([0x48, 0x89, 0xe5]); // mov rbp, rsp
                text.extend([0x48, 0x83, 0xec, 0x18]); // sub rsp, 0x18
                if let Some(callee) = spec.calls {
                    let next = start + 14 + 5;
                    text.push(0xe8); // call callee
                    text.extend(rel32(next, placed[index_of(callee)].off).to_le_bytes());
                }
                text.extend([0x48, 0x85, 0xdb]); // test rbx, rbx
                text.extend([0x74, 0x02]); // je +2
                text.extend([0x31, 0xc0]); // xor eax, eax
                text.extend([0x48, 0x83, 0xc4, 0x18]); // add rsp, 0x18
                text.push(0x5d); // pop rbp
                text.push(0xc3); // ret
                let next = start + morestack + 5;
                text.push(0xe8); // call runtime.morestack_noctxt
                text.extend(rel32(next, placed[index_of(MORESTACK)].off).to_le_bytes());
                text.extend([0xeb, (-(morestack + 7)) as u8]); // jmp entry
            }
            Machine::Aarch64 => {
                let mut words = vec![0xa9bf_7bfd_u32, 0x9100_03fd]; // stp x29,x30,[sp,#-16]!; mov x29,sp
                if let Some(callee) = spec.calls {
                    let here = start + 8;
                    let delta = (placed[index_of(callee)].off as i64 - here) / 4;
                    words.push(0x9400_0000 | (delta as u32 & 0x03ff_ffff)); // bl callee
                }
                words.extend([0xa8c1_7bfd, 0xd65f_03c0]); // ldp x29,x30,[sp],#16; ret
                for w in words {
                    text.extend(w.to_le_bytes());
                }
            }
        }
        assert_eq!(text.len() as i64 - start, p.size as i64, "{}", spec.name);
    }
    (text, placed)
}

// ---------------------------------------------------------------------------------------------
// .gopclntab.

#[derive(Clone, Copy, PartialEq)]
enum PclnFormat {
    /// Go 1.16–1.17: absolute pointer-sized entries, no textStart.
    Go116,
    /// Go 1.18–1.19.
    Go118,
    /// Go 1.20–1.25: textStart in the header.
    Go120,
    /// Go 1.26+: the header's textStart is 0.
    Go126,
}

fn uvarint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push(v as u8 | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

/// Builds a pcHeader and its tables for functions at `text_start + placed[i].off`.
/// Returns the table and the offset of the functab (pclnOffset) in it.
fn pclntab(
    format: PclnFormat,
    funcs: &[FuncSpec],
    placed: &[Placed],
    text_start: u64,
    min_lc: u8,
) -> (Vec<u8>, usize) {
    let ptr = 8usize;
    let magic = match format {
        PclnFormat::Go116 => GO116_MAGIC,
        PclnFormat::Go118 => GO118_MAGIC,
        PclnFormat::Go120 | PclnFormat::Go126 => GO120_MAGIC,
    };
    let words = if format == PclnFormat::Go116 { 7 } else { 8 };
    let header_len = 8 + words * ptr;

    // funcnametab
    let mut names = Vec::new();
    let mut name_off = Vec::new();
    for spec in funcs {
        // The wrapper shares the name of the function it wraps, as in real tables.
        match funcs.iter().position(|s| s.name == spec.name) {
            Some(first) if first < name_off.len() => name_off.push(name_off[first]),
            _ => {
                name_off.push(names.len() as u32);
                names.extend(spec.name.as_bytes());
                names.push(0);
            }
        }
    }
    let cutab = vec![0u8; 8];
    let filetab = b"main.go\0net/http/server.go\0".to_vec();
    // pctab: offset 0 means "no table"; one pcsp table per function (+8 over the whole body).
    let mut pctab = vec![0u8];
    let mut pcsp = Vec::new();
    for p in placed {
        pcsp.push(pctab.len() as u32);
        uvarint(&mut pctab, 16); // zig-zag +8
        uvarint(&mut pctab, p.size / u64::from(min_lc));
        pctab.push(0);
    }

    // functab + _func records.
    let n = funcs.len();
    let field = if format == PclnFormat::Go116 { ptr } else { 4 };
    let functab_len = (2 * n + 1) * field;
    let mut pcln = vec![0u8; functab_len.next_multiple_of(8)];
    let put = |buf: &mut Vec<u8>, at: usize, v: u64| {
        if field == 4 {
            buf[at..at + 4].copy_from_slice(&(v as u32).to_le_bytes());
        } else {
            buf[at..at + 8].copy_from_slice(&v.to_le_bytes());
        }
    };
    let entry = |p: &Placed| match format {
        PclnFormat::Go116 => text_start + p.off,
        _ => p.off,
    };
    let last = placed.last().unwrap();
    let end = Placed {
        off: last.off + last.size,
        size: 0,
    };
    for (i, (spec, p)) in funcs.iter().zip(placed).enumerate() {
        let funcoff = pcln.len();
        put(&mut pcln, 2 * i * field, entry(p));
        put(&mut pcln, (2 * i + 1) * field, funcoff as u64);
        let mut rec = Vec::new();
        if format == PclnFormat::Go116 {
            rec.extend(entry(p).to_le_bytes());
        } else {
            rec.extend((entry(p) as u32).to_le_bytes());
        }
        rec.extend(name_off[i].to_le_bytes()); // nameOff
        rec.extend(0u32.to_le_bytes()); // args
        rec.extend(0u32.to_le_bytes()); // deferreturn
        rec.extend(pcsp[i].to_le_bytes()); // pcsp
        rec.extend(0u32.to_le_bytes()); // pcfile
        rec.extend(0u32.to_le_bytes()); // pcln
        rec.extend(0u32.to_le_bytes()); // npcdata
        rec.extend(0u32.to_le_bytes()); // cuOffset
        if format != PclnFormat::Go116 {
            rec.extend(0u32.to_le_bytes()); // startLine
        }
        // funcID at 40, flag at 41 in both layouts (1.16: entry is 8 bytes, no startLine).
        rec.resize(40, 0);
        rec.extend([spec.func_id, 0, 0, 0]); // funcID, flag, pad, nfuncdata
        pcln.extend(rec);
        while !pcln.len().is_multiple_of(8) {
            pcln.push(0);
        }
    }
    put(&mut pcln, 2 * n * field, entry(&end));

    let funcname_offset = header_len;
    let cu_offset = funcname_offset + names.len();
    let filetab_offset = cu_offset + cutab.len();
    let pctab_offset = filetab_offset + filetab.len();
    let pcln_offset = (pctab_offset + pctab.len()).next_multiple_of(8);

    let mut t = Vec::new();
    t.extend(magic.to_le_bytes());
    t.extend([0, 0, min_lc, ptr as u8]);
    let mut word = |v: u64| t.extend(v.to_le_bytes());
    word(n as u64); // nfunc
    word(2); // nfiles
    match format {
        PclnFormat::Go116 => {}
        PclnFormat::Go126 => word(0),
        _ => word(text_start),
    }
    for off in [
        funcname_offset,
        cu_offset,
        filetab_offset,
        pctab_offset,
        pcln_offset,
    ] {
        word(off as u64);
    }
    assert_eq!(t.len(), header_len);
    t.extend(&names);
    t.extend(&cutab);
    t.extend(&filetab);
    t.extend(&pctab);
    t.resize(pcln_offset, 0);
    t.extend(&pcln);
    (t, pcln_offset)
}

/// `runtime.firstmoduledata` (64-bit): pcHeader at 0, funcnametab at 8, minpc at 160, text at
/// 176 (the fields the tracer checks), the rest zero.
fn moduledata(pclntab_vaddr: u64, funcname_offset: u64, text_start: u64) -> Vec<u8> {
    let mut m = vec![0u8; 0x200];
    m[0..8].copy_from_slice(&pclntab_vaddr.to_le_bytes());
    m[8..16].copy_from_slice(&(pclntab_vaddr + funcname_offset).to_le_bytes());
    m[160..168].copy_from_slice(&text_start.to_le_bytes()); // minpc (entryoff 0)
    m[176..184].copy_from_slice(&text_start.to_le_bytes()); // text
    m
}

// ---------------------------------------------------------------------------------------------
// Build info.

const MODINFO_START: [u8; 16] = [
    0x30, 0x77, 0xaf, 0x0c, 0x92, 0x74, 0x08, 0x02, 0x41, 0xe1, 0xc1, 0x07, 0xe6, 0xd6, 0x18, 0xe6,
];
const MODINFO_END: [u8; 16] = [
    0xf9, 0x32, 0x43, 0x31, 0x86, 0x18, 0x20, 0x72, 0x00, 0x82, 0x42, 0x10, 0x41, 0x16, 0xd8, 0xf2,
];

fn modinfo() -> Vec<u8> {
    let body = "path\tgithub.com/uber/kraken/agent\n\
                mod\tgithub.com/uber/kraken\tv0.1.4\th1:abcdef=\n\
                dep\tgithub.com/spf13/cobra\tv1.8.0\th1:0123=\n\
                dep\tgolang.org/x/net\tv0.20.0\th1:4567=\n\
                =>\t../net\t(devel)\t\n\
                build\t-buildmode=exe\nbuild\t-trimpath=true\nbuild\tCGO_ENABLED=0\n\
                build\tGOARCH=amd64\nbuild\t\"-ldflags=-s -w\"=\"x\"\n";
    let mut m = MODINFO_START.to_vec();
    m.extend(body.as_bytes());
    m.extend(MODINFO_END);
    m
}

/// The Go 1.18+ inline format: header, then uvarint-prefixed version and modinfo.
fn buildinfo_inline(version: &str, modinfo: &[u8]) -> Vec<u8> {
    let mut b = BUILDINFO_MAGIC.to_vec();
    b.extend([8, 2]);
    b.resize(32, 0);
    uvarint(&mut b, version.len() as u64);
    b.extend(version.as_bytes());
    uvarint(&mut b, modinfo.len() as u64);
    b.extend(modinfo);
    b
}

/// The pre-1.18 pointer format, for a blob that will sit at `vaddr`: the header points to two
/// Go string headers {ptr, len} inside the blob, which point to the strings after them.
fn buildinfo_pointers(vaddr: u64, ptr_size: u8, version: &str, modinfo: &[u8]) -> Vec<u8> {
    let ps = u64::from(ptr_size);
    let word = |b: &mut Vec<u8>, v: u64| {
        if ptr_size == 4 {
            b.extend((v as u32).to_le_bytes());
        } else {
            b.extend(v.to_le_bytes());
        }
    };
    let vers_hdr = vaddr + 32;
    let mod_hdr = vers_hdr + 2 * ps;
    let vers_str = mod_hdr + 2 * ps;
    let mod_str = vers_str + version.len() as u64;
    let mut b = BUILDINFO_MAGIC.to_vec();
    b.extend([ptr_size, 0]);
    word(&mut b, vers_hdr);
    word(&mut b, mod_hdr);
    b.resize(32, 0);
    word(&mut b, vers_str);
    word(&mut b, version.len() as u64);
    word(&mut b, mod_str);
    word(&mut b, modinfo.len() as u64);
    b.extend(version.as_bytes());
    b.extend(modinfo);
    b
}

// ---------------------------------------------------------------------------------------------
// DWARF.

const DW_FORM_STRING: u8 = 0x08;
const DW_FORM_DATA1: u8 = 0x0b;
const DW_FORM_STRP: u8 = 0x0e;
const DW_FORM_UDATA: u8 = 0x0f;
const DW_FORM_EXPRLOC: u8 = 0x18;

/// The structs and fields `offsets::from_dwarf` looks for, with go1.26-like offsets.
const STRUCTS: &[(&str, &[(&str, u64)])] = &[
    (
        "net/http.Request",
        &[
            ("Method", 0),
            ("URL", 16),
            ("Proto", 24),
            ("Header", 56),
            ("ContentLength", 88),
            ("Host", 128),
            ("RemoteAddr", 176),
            ("RequestURI", 192),
            ("Pattern", 248),
        ],
    ),
    (
        "net/url.URL",
        &[("Scheme", 0), ("Host", 40), ("Path", 56), ("RawPath", 72)],
    ),
    (
        "net/http.response",
        &[("conn", 0), ("req", 8), ("status", 128), ("written", 144)],
    ),
    ("net/http.Response", &[("Status", 0), ("StatusCode", 16)]),
    ("runtime.g", &[("goid", 160), ("parentGoid", 272)]),
];

struct Dwarf {
    info: Vec<u8>,
    abbrev: Vec<u8>,
    strs: Vec<u8>,
}

/// Two units: a small DWARF 5 one (the producer is read from the first unit), then a DWARF 4
/// one with the structs; members alternate between `DW_FORM_udata` offsets with inline names
/// and `DW_OP_plus_uconst` expressions with `.debug_str` names.
fn dwarf() -> Dwarf {
    let mut strs = b"\0".to_vec();
    let mut strp = |s: &str| {
        let off = strs.len() as u32;
        strs.extend(s.as_bytes());
        strs.push(0);
        off
    };
    let producer = strp("Go cmd/compile go1.26.8; regabi");
    let abbrev = vec![
        1,
        0x11,
        1,
        0x03,
        DW_FORM_STRING,
        0x25,
        DW_FORM_STRP,
        0x13,
        DW_FORM_DATA1,
        0,
        0, //
        2,
        0x13,
        1,
        0x03,
        DW_FORM_STRING,
        0x0b,
        DW_FORM_UDATA,
        0,
        0, //
        3,
        0x0d,
        0,
        0x03,
        DW_FORM_STRING,
        0x38,
        DW_FORM_UDATA,
        0,
        0, //
        4,
        0x0d,
        0,
        0x03,
        DW_FORM_STRP,
        0x38,
        DW_FORM_EXPRLOC,
        0,
        0, //
        5,
        0x24,
        0,
        0x03,
        DW_FORM_STRING,
        0x0b,
        DW_FORM_DATA1,
        0x3e,
        DW_FORM_DATA1,
        0,
        0, //
        6,
        0x13,
        0,
        0x03,
        DW_FORM_STRING,
        0,
        0, //
        0,
    ];
    let cstr = |d: &mut Vec<u8>, s: &str| {
        d.extend(s.as_bytes());
        d.push(0);
    };
    // Unit 1 (DWARF 5): a compile unit with a base type.
    let mut d1 = Vec::new();
    d1.push(1);
    cstr(&mut d1, "runtime");
    d1.extend(producer.to_le_bytes());
    d1.push(0x16); // DW_LANG_Go
    d1.push(5);
    cstr(&mut d1, "uintptr");
    d1.extend([8, 7]);
    d1.push(0);
    // Unit 2 (DWARF 4): the structs.
    let mut d2 = Vec::new();
    d2.push(1);
    cstr(&mut d2, "net/http");
    d2.extend(producer.to_le_bytes());
    d2.push(0x16);
    d2.push(6);
    cstr(&mut d2, "sync.Mutex"); // a declaration without members
    for (k, (name, fields)) in STRUCTS.iter().enumerate() {
        d2.push(2);
        cstr(&mut d2, name);
        uvarint(&mut d2, 512);
        for (j, (field, off)) in fields.iter().enumerate() {
            if (j + k) % 2 == 0 {
                d2.push(3);
                cstr(&mut d2, field);
                uvarint(&mut d2, *off);
            } else {
                d2.push(4);
                d2.extend(strp(field).to_le_bytes());
                let mut expr = vec![0x23]; // DW_OP_plus_uconst
                uvarint(&mut expr, *off);
                uvarint(&mut d2, expr.len() as u64);
                d2.extend(expr);
            }
        }
        d2.push(0);
    }
    d2.push(0);
    let mut info = Vec::new();
    // DWARF 5 header: unit_length, version, unit_type, address_size, debug_abbrev_offset.
    info.extend(((2 + 1 + 1 + 4 + d1.len()) as u32).to_le_bytes());
    info.extend(5u16.to_le_bytes());
    info.extend([1, 8]);
    info.extend(0u32.to_le_bytes());
    info.extend(d1);
    // DWARF 4 header: unit_length, version, debug_abbrev_offset, address_size.
    info.extend(((2 + 4 + 1 + d2.len()) as u32).to_le_bytes());
    info.extend(4u16.to_le_bytes());
    info.extend(0u32.to_le_bytes());
    info.push(8);
    info.extend(d2);
    Dwarf { info, abbrev, strs }
}

#[derive(Clone, Copy, PartialEq)]
enum DwarfStyle {
    Plain,
    /// SHF_COMPRESSED with an Elf64_Chdr (what Go writes since 1.11 with -compressdwarf).
    Compressed,
    /// The older GNU `.zdebug_*` sections.
    Zdebug,
}

fn zlib(data: &[u8]) -> Vec<u8> {
    let mut e = ZlibEncoder::new(Vec::new(), Compression::best());
    e.write_all(data).unwrap();
    e.finish().unwrap()
}

// ---------------------------------------------------------------------------------------------
// ELF.

const SHT_PROGBITS: u32 = 1;
const SHT_SYMTAB: u32 = 2;
const SHT_STRTAB: u32 = 3;
const SHF_WRITE: u64 = 1;
const SHF_ALLOC: u64 = 2;
const SHF_EXECINSTR: u64 = 4;
const SHF_COMPRESSED: u64 = 0x800;

struct Section {
    name: String,
    sh_type: u32,
    flags: u64,
    offset: u64,
    data: Vec<u8>,
    align: u64,
    /// PT_LOAD index (0 = R-X, 1 = R, 2 = RW), if loaded.
    segment: Option<usize>,
    link: u32,
    info: u32,
    entsize: u64,
}

/// An ELF64 little-endian executable laid out so that every loaded byte has vaddr = BASE +
/// file offset; three PT_LOAD segments (the first also maps the headers).
struct Elf {
    machine: u16,
    sections: Vec<Section>,
    cur: u64,
}

const PHNUM: usize = 3;
/// Alignment of the loaded sections: Go aligns segments to pages, but small seeds mutate better
/// and the parsers only need vaddr and file offset to agree (they do: vaddr = BASE + offset).
const SECTION_ALIGN: u64 = 64;

impl Elf {
    fn new(machine: Machine) -> Elf {
        Elf {
            machine: if machine == Machine::X86_64 { 62 } else { 183 },
            sections: Vec::new(),
            cur: 64 + 56 * PHNUM as u64,
        }
    }

    /// The file offset and address the next section with this alignment gets.
    fn next(&mut self, align: u64) -> (u64, u64) {
        self.cur = self.cur.next_multiple_of(align);
        (self.cur, BASE + self.cur)
    }

    fn add(
        &mut self,
        name: &str,
        sh_type: u32,
        flags: u64,
        align: u64,
        segment: Option<usize>,
        data: Vec<u8>,
    ) -> usize {
        let (offset, _) = self.next(align);
        self.cur = offset + data.len() as u64;
        self.sections.push(Section {
            name: name.into(),
            sh_type,
            flags,
            offset,
            data,
            align,
            segment,
            link: 0,
            info: 0,
            entsize: 0,
        });
        self.sections.len() // its index (0 is the null section)
    }

    /// The file, with or without section headers.
    fn write(mut self, entry: u64, with_sections: bool) -> Vec<u8> {
        let mut shstrtab = b"\0".to_vec();
        let mut name_off = Vec::new();
        for s in &self.sections {
            name_off.push(shstrtab.len() as u32);
            shstrtab.extend(s.name.as_bytes());
            shstrtab.push(0);
        }
        let shstr_name = shstrtab.len() as u32;
        shstrtab.extend(b".shstrtab\0");
        let shstrndx = self.add(".shstrtab", SHT_STRTAB, 0, 1, None, shstrtab) as u16;
        name_off.push(shstr_name);
        let shoff = self.cur.next_multiple_of(8);

        let mut out = vec![0u8; shoff as usize];
        for s in &self.sections {
            out[s.offset as usize..s.offset as usize + s.data.len()].copy_from_slice(&s.data);
        }
        // ELF header.
        let mut h = vec![0x7f, b'E', b'L', b'F', 2, 1, 1, 0];
        h.resize(16, 0);
        h.extend(2u16.to_le_bytes()); // ET_EXEC
        h.extend(self.machine.to_le_bytes());
        h.extend(1u32.to_le_bytes());
        h.extend(entry.to_le_bytes());
        h.extend(64u64.to_le_bytes()); // e_phoff
        h.extend((if with_sections { shoff } else { 0 }).to_le_bytes());
        h.extend(0u32.to_le_bytes()); // e_flags
        h.extend(64u16.to_le_bytes());
        h.extend(56u16.to_le_bytes());
        h.extend((PHNUM as u16).to_le_bytes());
        h.extend(64u16.to_le_bytes());
        let shnum = self.sections.len() as u16 + 1;
        h.extend((if with_sections { shnum } else { 0 }).to_le_bytes());
        h.extend((if with_sections { shstrndx } else { 0 }).to_le_bytes());
        out[..64].copy_from_slice(&h);
        // Program headers.
        for seg in 0..PHNUM {
            let secs: Vec<&Section> = self
                .sections
                .iter()
                .filter(|s| s.segment == Some(seg))
                .collect();
            let start = if seg == 0 {
                0
            } else {
                secs.iter().map(|s| s.offset).min().unwrap_or(0)
            };
            let end = secs
                .iter()
                .map(|s| s.offset + s.data.len() as u64)
                .max()
                .unwrap_or(start);
            let flags: u32 = [5, 4, 6][seg];
            let filesz = end - start;
            let memsz = if seg == 2 { filesz + 0x400 } else { filesz };
            let mut p = Vec::new();
            p.extend(1u32.to_le_bytes()); // PT_LOAD
            p.extend(flags.to_le_bytes());
            p.extend(start.to_le_bytes());
            p.extend((BASE + start).to_le_bytes());
            p.extend((BASE + start).to_le_bytes());
            p.extend(filesz.to_le_bytes());
            p.extend(memsz.to_le_bytes());
            p.extend(0x1000u64.to_le_bytes());
            let at = 64 + 56 * seg;
            out[at..at + 56].copy_from_slice(&p);
        }
        if !with_sections {
            // Keep the bytes where the section headers would be out of the file.
            return out;
        }
        out.extend([0u8; 64]); // the null section
        for (s, name) in self.sections.iter().zip(&name_off) {
            let addr = if s.flags & SHF_ALLOC != 0 {
                BASE + s.offset
            } else {
                0
            };
            out.extend(name.to_le_bytes());
            out.extend(s.sh_type.to_le_bytes());
            out.extend(s.flags.to_le_bytes());
            out.extend(addr.to_le_bytes());
            out.extend(s.offset.to_le_bytes());
            out.extend((s.data.len() as u64).to_le_bytes());
            out.extend(s.link.to_le_bytes());
            out.extend(s.info.to_le_bytes());
            out.extend(s.align.to_le_bytes());
            out.extend(s.entsize.to_le_bytes());
        }
        out
    }
}

/// Adds `.debug_abbrev`, `.debug_info` and `.debug_str` in the given style.
fn add_dwarf(elf: &mut Elf, style: DwarfStyle) {
    let d = dwarf();
    for (name, data) in [("abbrev", d.abbrev), ("info", d.info), ("str", d.strs)] {
        match style {
            DwarfStyle::Plain => {
                elf.add(&format!(".debug_{name}"), SHT_PROGBITS, 0, 1, None, data);
            }
            DwarfStyle::Compressed => {
                let mut c = Vec::new();
                c.extend(1u32.to_le_bytes()); // ELFCOMPRESS_ZLIB
                c.extend(0u32.to_le_bytes());
                c.extend((data.len() as u64).to_le_bytes());
                c.extend(1u64.to_le_bytes());
                c.extend(zlib(&data));
                elf.add(
                    &format!(".debug_{name}"),
                    SHT_PROGBITS,
                    SHF_COMPRESSED,
                    8,
                    None,
                    c,
                );
            }
            DwarfStyle::Zdebug => {
                let mut c = b"ZLIB".to_vec();
                c.extend((data.len() as u64).to_be_bytes());
                c.extend(zlib(&data));
                elf.add(&format!(".zdebug_{name}"), SHT_PROGBITS, 0, 1, None, c);
            }
        }
    }
}

/// What goes into one synthetic Go executable.
struct GoBinary {
    machine: Machine,
    pcln: PclnFormat,
    /// `.symtab` (with `runtime.text`) present.
    symtab: bool,
    /// Section headers present (else everything is found by scanning segments).
    sections: bool,
    /// `runtime.firstmoduledata` present (how stripped Go 1.26 binaries give the text start).
    moduledata: bool,
    /// The pre-1.18 pointer build info instead of the inline one.
    pointer_buildinfo: bool,
    dwarf: Option<DwarfStyle>,
}

fn go_binary(g: &GoBinary) -> Vec<u8> {
    let mut elf = Elf::new(g.machine);
    let min_lc = if g.machine == Machine::X86_64 { 1 } else { 4 };
    let (text, placed) = assemble(g.machine, FUNCS);
    let (_, text_start) = elf.next(SECTION_ALIGN);
    let text_idx = elf.add(
        ".text",
        SHT_PROGBITS,
        SHF_ALLOC | SHF_EXECINSTR,
        SECTION_ALIGN,
        Some(0),
        text,
    );
    let (table, _) = pclntab(g.pcln, FUNCS, &placed, text_start, min_lc);
    let funcname_offset = 8 + if g.pcln == PclnFormat::Go116 { 7 } else { 8 } * 8;
    let (_, pcln_vaddr) = elf.next(SECTION_ALIGN);
    elf.add(
        ".gopclntab",
        SHT_PROGBITS,
        SHF_ALLOC,
        SECTION_ALIGN,
        Some(1),
        table,
    );
    let (_, bi_vaddr) = elf.next(SECTION_ALIGN);
    let version = match g.pcln {
        PclnFormat::Go116 => "go1.17.13",
        PclnFormat::Go118 => "go1.19.13",
        PclnFormat::Go120 => "go1.24.13",
        PclnFormat::Go126 => "go1.26.8",
    };
    let bi = if g.pointer_buildinfo {
        buildinfo_pointers(bi_vaddr, 8, version, &modinfo())
    } else {
        buildinfo_inline(version, &modinfo())
    };
    elf.add(
        ".go.buildinfo",
        SHT_PROGBITS,
        SHF_ALLOC | SHF_WRITE,
        SECTION_ALIGN,
        Some(2),
        bi,
    );
    if g.moduledata {
        let md = moduledata(pcln_vaddr, funcname_offset as u64, text_start);
        elf.add(
            ".noptrdata",
            SHT_PROGBITS,
            SHF_ALLOC | SHF_WRITE,
            32,
            Some(2),
            md,
        );
    }
    if g.symtab {
        let mut strtab = b"\0".to_vec();
        let mut syms = vec![0u8; 24];
        let mut sym = |name: &str, value: u64, size: u64, info: u8| {
            syms.extend((strtab.len() as u32).to_le_bytes());
            strtab.extend(name.as_bytes());
            strtab.push(0);
            syms.extend([info, 0]);
            syms.extend((text_idx as u16).to_le_bytes());
            syms.extend(value.to_le_bytes());
            syms.extend(size.to_le_bytes());
        };
        sym("runtime.text", text_start, 0, 0x02); // STB_LOCAL, STT_FUNC (as Go writes it)
        for (spec, p) in FUNCS.iter().zip(&placed) {
            let name = if spec.func_id == 21 {
                format!("{}.abi0", spec.name)
            } else {
                spec.name.to_string()
            };
            sym(&name, text_start + p.off, p.size, 0x12); // STB_GLOBAL, STT_FUNC
        }
        let strtab_idx = elf.sections.len() as u32 + 2;
        let symtab_idx = elf.add(".symtab", SHT_SYMTAB, 0, 8, None, syms);
        let s = &mut elf.sections[symtab_idx - 1];
        s.link = strtab_idx;
        s.info = 2; // the first global symbol
        s.entsize = 24;
        elf.add(".strtab", SHT_STRTAB, 0, 1, None, strtab);
    }
    if let Some(style) = g.dwarf {
        add_dwarf(&mut elf, style);
    }
    let main = placed[FUNCS.iter().position(|s| s.name == "main.main").unwrap()];
    elf.write(text_start + main.off, g.sections)
}

/// An ELF file with nothing but DWARF sections (what `offsets::from_dwarf` reads).
fn dwarf_only(style: DwarfStyle) -> Vec<u8> {
    let mut elf = Elf::new(Machine::X86_64);
    add_dwarf(&mut elf, style);
    elf.write(0, true)
}

// ---------------------------------------------------------------------------------------------
// Ring-buffer records.

fn gostr<const N: usize>(s: &str) -> GoStr<N> {
    let mut g = GoStr {
        len: s.len() as u32,
        read_error: 0,
        bytes: [0; N],
    };
    let n = s.len().min(N);
    g.bytes[..n].copy_from_slice(&s.as_bytes()[..n]);
    g
}

fn bytes_of<T: Copy>(v: &T) -> Vec<u8> {
    // SAFETY: T is one of tracer-common's #[repr(C)] plain-data event structs.
    unsafe { std::slice::from_raw_parts(std::ptr::from_ref(v).cast::<u8>(), size_of::<T>()) }
        .to_vec()
}

fn header(probe: ProbeId) -> EventHeader {
    EventHeader {
        probe: probe as u32,
        tgid: 4242,
        tid: 4243,
        _pad: 0,
        goroutine: 0x00c0_0000_71c0,
        goid: 77,
        ktime_ns: 1_234_567_890,
    }
}

const DIGEST: &str = "4bf92f3577b34da6a3ce929d0e0e47364bf92f3577b34da6a3ce929d0e0e4736";

fn events() -> Vec<(&'static str, Vec<u8>)> {
    let serve = |uri: &str, tp: &str| HttpServeEvent {
        hdr: header(ProbeId::HttpServe),
        request: 0xc000_1000,
        content_length: 0,
        tcp: TcpSnapshot {
            rx_bytes: 4096,
            tx_bytes: 1 << 20,
            counted: 1,
            _pad: 0,
        },
        method: gostr::<METHOD_LEN>("GET"),
        uri: gostr::<URI_LEN>(uri),
        host: gostr::<ADDR_LEN>("origin:15002"),
        remote_addr: gostr::<ADDR_LEN>("10.0.0.7:51234"),
        traceparent: gostr::<TRACEPARENT_LEN>(tp),
        ids: tracer_common::event::SpanIds::default(),
    };
    let mut out = vec![
        (
            "serve-blob",
            bytes_of(&serve(
                &format!("/namespace/library%2Fubuntu/blobs/sha256:{DIGEST}?token=x"),
                "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            )),
        ),
        ("serve-health", bytes_of(&serve("/health", ""))),
        (
            "serve-announce",
            bytes_of(&serve(&format!("/announce/{DIGEST}"), "")),
        ),
    ];
    let mut long = serve(
        &format!("/blobs/{}", "a".repeat(URI_LEN)),
        "garbage-traceparent",
    );
    long.method.read_error = 1;
    long.traceparent.len = 1000;
    out.push(("serve-truncated", bytes_of(&long)));
    let mut chunk = serve(
        &format!("/namespace/library%2Fubuntu/blobs/sha256:{DIGEST}/uploads/u-1"),
        "",
    );
    chunk.method = gostr::<METHOD_LEN>("PATCH");
    chunk.content_length = 128 << 10;
    out.push(("serve-upload-chunk", bytes_of(&chunk)));
    chunk.content_length = -1; // chunked transfer encoding: unknown
    out.push(("serve-upload-chunk-unknown-size", bytes_of(&chunk)));
    out.push((
        "serve-end",
        bytes_of(&HttpServeEndEvent {
            hdr: header(ProbeId::HttpServeEnd),
            request: 0xc000_1000,
            status: 200,
            written: 1 << 20,
            tcp: TcpSnapshot::default(),
            pattern: gostr::<ADDR_LEN>("GET /namespace/{namespace}/blobs/{digest}"),
        }),
    ));
    out.push((
        "client",
        bytes_of(&HttpClientEvent {
            hdr: header(ProbeId::HttpClient),
            request: 0xc000_2000,
            parent_goid: 77,
            method: gostr::<METHOD_LEN>("HEAD"),
            scheme: gostr::<SCHEME_LEN>("http"),
            host: gostr::<ADDR_LEN>("origin:15002"),
            path: gostr::<PATH_LEN>(&format!("/blobs/sha256:{DIGEST}")),
            traceparent: gostr::<TRACEPARENT_LEN>(""),
            ids: tracer_common::event::SpanIds::default(),
        }),
    ));
    out.push((
        "client-end",
        bytes_of(&HttpClientEndEvent {
            hdr: header(ProbeId::HttpClientEnd),
            response: 0xc000_3000,
            status: 404,
            error: 0,
        }),
    ));
    for (name, probe, value) in [
        ("kraken-announce", ProbeId::KrakenAnnounce, 0),
        ("kraken-cached", ProbeId::KrakenCached, 0),
        ("kraken-refresh", ProbeId::KrakenRefresh, 0),
        ("kraken-cache-write", ProbeId::KrakenCacheWrite, 1 << 30),
        ("kraken-refresh-done", ProbeId::KrakenRefreshDone, 1),
    ] {
        out.push((
            name,
            bytes_of(&KrakenDigestEvent {
                hdr: header(probe),
                digest_hex: gostr::<DIGEST_LEN>(if value == 1 { "" } else { DIGEST }),
                value,
            }),
        ));
    }
    out
}

// ---------------------------------------------------------------------------------------------

fn write(dir: &Path, target: &str, name: &str, data: &[u8]) {
    let d = dir.join(target);
    fs::create_dir_all(&d).unwrap();
    fs::write(d.join(name), data).unwrap();
}

fn main() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("corpus");

    // elf_symbols: Go-shaped executables of every layout the symbol code handles.
    let x86 = |pcln, symtab, sections, moduledata, pointer_buildinfo, dwarf| GoBinary {
        machine: Machine::X86_64,
        pcln,
        symtab,
        sections,
        moduledata,
        pointer_buildinfo,
        dwarf,
    };
    let bins = [
        // Go 1.26, not stripped: runtime.text from .symtab, DWARF compressed like Go's.
        (
            "go126",
            x86(
                PclnFormat::Go126,
                true,
                true,
                true,
                false,
                Some(DwarfStyle::Compressed),
            ),
        ),
        // Go 1.26, stripped (-s -w): text start from runtime.firstmoduledata.
        (
            "go126-stripped",
            x86(PclnFormat::Go126, false, true, true, false, None),
        ),
        // Go 1.26, stripped, no moduledata: text start from the .text section.
        (
            "go126-stripped-textsec",
            x86(PclnFormat::Go126, false, true, false, false, None),
        ),
        // No section headers: pclntab by magic, build info in the first RW segment.
        (
            "go126-nosections",
            x86(PclnFormat::Go126, false, false, true, false, None),
        ),
        // Go 1.20–1.25: textStart in the header.
        (
            "go124",
            x86(
                PclnFormat::Go120,
                true,
                true,
                false,
                false,
                Some(DwarfStyle::Plain),
            ),
        ),
        (
            "go124-stripped",
            x86(PclnFormat::Go120, false, true, false, false, None),
        ),
        // Go 1.18–1.19.
        (
            "go119",
            x86(PclnFormat::Go118, true, true, false, false, None),
        ),
        // Go 1.16–1.17: absolute entries, pointer build info.
        (
            "go117",
            x86(
                PclnFormat::Go116,
                true,
                true,
                false,
                true,
                Some(DwarfStyle::Zdebug),
            ),
        ),
        (
            "go117-stripped",
            x86(PclnFormat::Go116, false, true, false, true, None),
        ),
    ];
    for (name, g) in &bins {
        write(&dir, "elf_symbols", &format!("{name}.elf"), &go_binary(g));
    }
    let arm = GoBinary {
        machine: Machine::Aarch64,
        ..x86(PclnFormat::Go126, true, true, true, false, None)
    };
    write(&dir, "elf_symbols", "go126-arm64.elf", &go_binary(&arm));
    let arm_stripped = GoBinary {
        machine: Machine::Aarch64,
        ..x86(PclnFormat::Go120, false, true, false, false, None)
    };
    write(
        &dir,
        "elf_symbols",
        "go124-arm64-stripped.elf",
        &go_binary(&arm_stripped),
    );
    // Not Go, and not for us: a bare ELF header, a 32-bit one, a big-endian one.
    let bare = Elf::new(Machine::X86_64).write(0, true);
    write(&dir, "elf_symbols", "not-go.elf", &bare);
    let mut elf32 = bare[..64].to_vec();
    elf32[4] = 1;
    write(&dir, "elf_symbols", "elf32-header", &elf32);
    let mut be = bare[..64].to_vec();
    be[5] = 2;
    write(&dir, "elf_symbols", "elf-big-endian-header", &be);

    // gopclntab: 8-byte text start (0 = none), then the table; a moduledata after the table
    // (the target maps the whole input as both a read-only and a writable segment at 0x400000).
    let (_, placed) = assemble(Machine::X86_64, FUNCS);
    let ts = 0x40_1000u64;
    for (name, format, given) in [
        ("go126", PclnFormat::Go126, ts),
        ("go126-no-text-start", PclnFormat::Go126, 0),
        ("go124", PclnFormat::Go120, 0),
        ("go124-text-start-given", PclnFormat::Go120, ts),
        ("go119", PclnFormat::Go118, 0),
        ("go117", PclnFormat::Go116, 0),
    ] {
        let (table, _) = pclntab(format, FUNCS, &placed, ts, 1);
        let mut input = given.to_le_bytes().to_vec();
        input.extend(&table);
        if format == PclnFormat::Go126 {
            while !input.len().is_multiple_of(8) {
                input.push(0);
            }
            let header_len = 8 + 8 * 8;
            input.extend(moduledata(0x40_0000, header_len, ts));
        }
        write(&dir, "gopclntab", name, &input);
    }
    let (_, arm_placed) = assemble(Machine::Aarch64, FUNCS);
    let (table, _) = pclntab(PclnFormat::Go120, FUNCS, &arm_placed, ts, 4);
    let mut input = 0u64.to_le_bytes().to_vec();
    input.extend(table);
    write(&dir, "gopclntab", "go124-arm64", &input);

    // buildinfo: the blob at the start of the input (mapped at 0x1000 by the target).
    write(
        &dir,
        "buildinfo",
        "inline-go126",
        &buildinfo_inline("go1.26.8", &modinfo()),
    );
    write(
        &dir,
        "buildinfo",
        "inline-no-modinfo",
        &buildinfo_inline("go1.22rc1", b""),
    );
    write(
        &dir,
        "buildinfo",
        "inline-devel",
        &buildinfo_inline(
            "devel go1.27-4a5b6c7 Tue Jan 6 10:00:00 2026 +0000",
            &modinfo(),
        ),
    );
    write(
        &dir,
        "buildinfo",
        "pointers-64",
        &buildinfo_pointers(0x1000, 8, "go1.17.13", &modinfo()),
    );
    write(
        &dir,
        "buildinfo",
        "pointers-32",
        &buildinfo_pointers(0x1000, 4, "go1.16.15", &modinfo()),
    );
    let mut shifted = vec![0u8; 16];
    shifted.extend(buildinfo_inline("go1.24.13", &modinfo()));
    write(&dir, "buildinfo", "inline-after-16-bytes", &shifted);
    let mut big_endian = buildinfo_pointers(0x1000, 8, "go1.17.13", b"");
    big_endian[15] = 1;
    write(&dir, "buildinfo", "pointers-big-endian", &big_endian);

    // dwarf_offsets: DWARF-only ELF files in every section style, and a whole Go binary.
    write(
        &dir,
        "dwarf_offsets",
        "plain.elf",
        &dwarf_only(DwarfStyle::Plain),
    );
    write(
        &dir,
        "dwarf_offsets",
        "zlib-chdr.elf",
        &dwarf_only(DwarfStyle::Compressed),
    );
    write(
        &dir,
        "dwarf_offsets",
        "zdebug.elf",
        &dwarf_only(DwarfStyle::Zdebug),
    );
    write(&dir, "dwarf_offsets", "go124.elf", &go_binary(&bins[4].1));

    // event_decode: one record per kind.
    for (name, bytes) in events() {
        write(&dir, "event_decode", name, &bytes);
    }

    // traceparent: valid and invalid header values.
    for (i, tp) in [
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00",
        "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-09-future-field",
        "  00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01  ",
        "00-4BF92F3577B34DA6A3CE929D0E0E4736-00F067AA0BA902B7-01",
        "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
        "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
        "00-4bf92f3577b34da6a3ce929d0e0e4736",
    ]
    .iter()
    .enumerate()
    {
        write(&dir, "traceparent", &format!("header-{i}"), tp.as_bytes());
    }

    // path_rules: "RULE\nPATH".
    for (i, r) in [
        "/namespace/*/blobs/**=0.2\n/namespace/library%2Fubuntu/blobs/sha256:ab",
        "/health=0\n/health?verbose=1",
        "/announce/*\n/announce/abc",
        "/announce/*=0.05\n/announce/a/b",
        "/**\n/anything/at/all",
        "/a/*/b/*=1\n/a//b/",
        " /blobs/** = 0.5 \n/blobs/sha256:1/metainfo",
        "/a*b=1\n/axb",
        "health=0.5\n/health",
        "/x**/y\n/x/y",
        "/q?x=1\n/q",
        "/r=2\n/r",
        "/r=NaN\n/r",
    ]
    .iter()
    .enumerate()
    {
        write(&dir, "path_rules", &format!("rule-{i}"), r.as_bytes());
    }

    // config_file: TOML files as users write them.
    for (i, c) in [
        "otlp-endpoint = \"http://jaeger:4317\"\nsample-ratio = 0.2\nkeep-slower-than = \"500ms\"\n",
        "pid = [123, 456]\nsample = [\"/health=0\", \"/announce/**=0.05\"]\n\
         keep-errors = true\nstdout = false\nno-default-rules = true\n\
         exclude-path = \"/metrics\"\nservice-name-for = [\"123=origin\"]\n",
        "sample-ratio = [0.1]\n",
        "pid = [1, \"x\"]\n",
        "stdout = \"yes\"\n",
        "config = \"/etc/other.toml\"\n",
        "pid = [1\n",
        "[table]\nkey = { a = 1 }\n",
        "sampel-ratio = 0.2\n",
    ]
    .iter()
    .enumerate()
    {
        write(&dir, "config_file", &format!("config-{i}.toml"), c.as_bytes());
    }
    check(&dir);
    eprintln!("seed corpus written to {} and checked", dir.display());
}

/// The seeds parse as intended (a seed the parsers reject early is a poor seed).
fn check(dir: &Path) {
    use kraken_tracer::{
        events,
        offsets::{self, OffsetSource},
        symbols::{Binary, SiteKind, gopclntab::Pclntab},
    };
    let read = |target: &str, name: &str| fs::read(dir.join(target).join(name)).unwrap();
    for entry in fs::read_dir(dir.join("elf_symbols")).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        let bytes = fs::read(&path).unwrap();
        let parsed = Binary::from_bytes(path.clone(), bytes.clone());
        if !name.starts_with("go") {
            assert!(parsed.is_err(), "{name}");
            continue;
        }
        let bin = parsed.unwrap_or_else(|e| panic!("{name}: {e}"));
        let table = bin
            .pclntab()
            .unwrap_or_else(|| panic!("{name}: {:?}", bin.pclntab_error()));
        assert_eq!(table.nfunc(), FUNCS.len(), "{name}");
        assert!(bin.go_version().is_some(), "{name}");
        assert_eq!(
            kraken_tracer::kraken::kraken_version(&bin),
            Some("v0.1.4"),
            "{name}"
        );
        for spec in FUNCS {
            let f = bin
                .lookup(spec.name)
                .unwrap_or_else(|e| panic!("{name}: {e}"));
            assert!(f.size > 0, "{name} {}", spec.name);
            assert!(
                !bin.return_sites(&f).unwrap().is_empty(),
                "{name} {}",
                spec.name
            );
        }
        assert!(bin.lookup("main.deep.abi0").is_ok(), "{name}");
        let f = bin.lookup("net/http.(*Transport).roundTrip").unwrap();
        let after = bin
            .after_call_sites(&f, "net/http.(*persistConn).roundTrip")
            .unwrap();
        let f = bin.lookup("net/http.serverHandler.ServeHTTP").unwrap();
        let site = bin.entry_site(&f, true).unwrap();
        if name.contains("arm64") {
            // The arm64 site finder (symbols/sites_arm64.rs) finds at most the one call.
            assert!(after.len() <= 1, "{name}");
        } else {
            assert_eq!(after.len(), 1, "{name}");
            assert_eq!((site.offset, site.kind), (6, SiteKind::Emulated), "{name}");
        }
        assert_eq!(
            bin.has_dwarf(),
            offsets::from_dwarf(&bytes).is_ok(),
            "{name}"
        );
    }
    for name in ["plain.elf", "zlib-chdr.elf", "zdebug.elf", "go124.elf"] {
        let o = offsets::from_dwarf(&read("dwarf_offsets", name))
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(
            (o.request_header, o.g_parent_goid, o.url_raw_path),
            (56, 272, 72),
            "{name}"
        );
        let (_, source) = offsets::resolve(&read("dwarf_offsets", name), None).unwrap();
        assert_eq!(source, OffsetSource::Dwarf);
    }
    for entry in fs::read_dir(dir.join("gopclntab")).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        let bytes = fs::read(&path).unwrap();
        let (ts, table) = bytes.split_at(8);
        let ts = Some(u64::from_le_bytes(ts.try_into().unwrap())).filter(|&t| t != 0);
        let parsed = Pclntab::parse(table, ts);
        if name.contains("no-text-start") {
            assert!(parsed.is_err(), "{name}");
        } else {
            let t = parsed.unwrap_or_else(|e| panic!("{name}: {e}"));
            assert_eq!(t.functions().count(), FUNCS.len(), "{name}");
        }
    }
    for (name, bytes) in events() {
        events::decode(&bytes).unwrap_or_else(|e| panic!("{name}: {e}"));
    }
}
