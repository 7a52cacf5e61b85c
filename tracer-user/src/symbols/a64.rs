//! A deliberately small AArch64 (A64) instruction decoder: just what probe-site selection needs.
//!
//! Hand-written instead of a disassembler crate (e.g. yaxpeax-arm): every A64 instruction is one
//! little-endian 32-bit word, and the questions asked here are few and fixed — is this a branch
//! and where does it go, how does the kernel's uprobe code treat it (simulate, single-step or
//! refuse: `arch/arm64/kernel/probes/decode-insn.c`), and may it write a Go argument register or
//! g. Each is a mask test on the word (encodings from the Arm ARM, "A64 instruction set
//! encoding"), unit-tested below, with no dependency and nothing that can panic on garbage.
//! Anything not recognised is treated conservatively: "may write any register", "not simulated".

use std::fmt;

/// Condition code `ls` (unsigned lower or same): Go's stack-check branch is `b.ls`.
pub const COND_LS: u8 = 0b1001;

/// `ret` (x30).
pub const RET_X30: u32 = 0xd65f_03c0;

/// The kinds of instructions probe-site selection tells apart.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Insn {
    /// `b` (`link` false) or `bl` to an absolute `target`.
    Branch { target: u64, link: bool },
    /// `b.<cond>`.
    BranchCond { cond: u8, target: u64 },
    /// `cbz`/`cbnz` (`nonzero`) on register `rt` (`wide`: x, else w).
    CompareBranch {
        nonzero: bool,
        wide: bool,
        rt: u8,
        target: u64,
    },
    /// `tbz`/`tbnz` (`nonzero`) testing `bit` of register `rt`.
    TestBranch {
        nonzero: bool,
        bit: u8,
        rt: u8,
        target: u64,
    },
    /// `br`, `blr` or `ret` through register `rn`.
    BranchReg { kind: RegBranch, rn: u8 },
    /// `adr` / `adrp` (`page`) into `rd`; `target` is the computed address.
    Adr { page: bool, rd: u8, target: u64 },
    /// A PC-relative literal load (`ldr`/`ldrsw`/`prfm` literal, also SIMD): uprobes refuse it.
    LoadLiteral { word: u32 },
    /// `nop`.
    Nop,
    /// Anything else (the raw word).
    Other(u32),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RegBranch {
    Br,
    Blr,
    Ret,
}

/// How the arm64 kernel handles a uprobe on an instruction.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Uprobe {
    /// Simulated in the breakpoint handler (no single-step): cheap. The text names the class.
    Simulated(&'static str),
    /// Copied out of line and single-stepped: a second trap.
    SingleStepped,
    /// Refused at attach time (`-EINVAL`), or not known to be accepted: never chosen.
    Rejected,
}

/// Sign-extends the low `bits` bits of `v`.
fn sext(v: u32, bits: u32) -> i64 {
    let shift = 64 - bits;
    (i64::from(v) << shift) >> shift
}

fn rel(pc: u64, imm: u32, bits: u32) -> u64 {
    pc.wrapping_add_signed(sext(imm, bits) * 4)
}

/// Decodes the instruction `word` located at address `pc`.
pub fn decode(word: u32, pc: u64) -> Insn {
    let rt = (word & 0x1f) as u8;
    let rn = ((word >> 5) & 0x1f) as u8;
    if word & 0x7c00_0000 == 0x1400_0000 {
        return Insn::Branch {
            target: rel(pc, word & 0x03ff_ffff, 26),
            link: word & 0x8000_0000 != 0,
        };
    }
    if word & 0xff00_0010 == 0x5400_0000 {
        return Insn::BranchCond {
            cond: (word & 0xf) as u8,
            target: rel(pc, (word >> 5) & 0x7_ffff, 19),
        };
    }
    if word & 0x7e00_0000 == 0x3400_0000 {
        return Insn::CompareBranch {
            nonzero: word & 0x0100_0000 != 0,
            wide: word & 0x8000_0000 != 0,
            rt,
            target: rel(pc, (word >> 5) & 0x7_ffff, 19),
        };
    }
    if word & 0x7e00_0000 == 0x3600_0000 {
        return Insn::TestBranch {
            nonzero: word & 0x0100_0000 != 0,
            bit: (((word >> 26) & 0x20) | ((word >> 19) & 0x1f)) as u8,
            rt,
            target: rel(pc, (word >> 5) & 0x3fff, 14),
        };
    }
    let kind = match word & 0xffff_fc1f {
        0xd61f_0000 => Some(RegBranch::Br),
        0xd63f_0000 => Some(RegBranch::Blr),
        0xd65f_0000 => Some(RegBranch::Ret),
        _ => None,
    };
    if let Some(kind) = kind {
        return Insn::BranchReg { kind, rn };
    }
    if word & 0x1f00_0000 == 0x1000_0000 {
        let imm = ((word >> 3) & 0x1f_fffc) | ((word >> 29) & 0x3);
        let page = word & 0x8000_0000 != 0;
        let target = if page {
            (pc & !0xfff).wrapping_add_signed(sext(imm, 21) << 12)
        } else {
            pc.wrapping_add_signed(sext(imm, 21))
        };
        return Insn::Adr {
            page,
            rd: rt,
            target,
        };
    }
    if word & 0x3b00_0000 == 0x1800_0000 {
        return Insn::LoadLiteral { word };
    }
    if word == 0xd503_201f {
        return Insn::Nop;
    }
    Insn::Other(word)
}

impl Insn {
    /// The in-function branch target of a `b`, `b.cond`, `cbz`/`cbnz` or `tbz`/`tbnz` (not `bl`).
    pub fn local_branch_target(&self) -> Option<u64> {
        match *self {
            Insn::Branch {
                target,
                link: false,
            }
            | Insn::BranchCond { target, .. }
            | Insn::CompareBranch { target, .. }
            | Insn::TestBranch { target, .. } => Some(target),
            _ => None,
        }
    }

    /// A call: `bl` or `blr`.
    pub fn is_call(&self) -> bool {
        matches!(
            self,
            Insn::Branch { link: true, .. }
                | Insn::BranchReg {
                    kind: RegBranch::Blr,
                    ..
                }
        )
    }

    /// Execution may continue somewhere other than the next instruction (calls included).
    pub fn changes_flow(&self) -> bool {
        matches!(
            self,
            Insn::Branch { .. }
                | Insn::BranchCond { .. }
                | Insn::CompareBranch { .. }
                | Insn::TestBranch { .. }
                | Insn::BranchReg { .. }
        )
    }

    /// How the kernel treats a uprobe here (Linux `arm_probe_decode_insn`).
    pub fn uprobe(&self) -> Uprobe {
        match *self {
            Insn::Branch { link: false, .. } => Uprobe::Simulated("b"),
            Insn::Branch { link: true, .. } => Uprobe::Simulated("bl"),
            Insn::BranchCond { .. } => Uprobe::Simulated("b.cond"),
            Insn::CompareBranch { .. } => Uprobe::Simulated("cbz/cbnz"),
            Insn::TestBranch { .. } => Uprobe::Simulated("tbz/tbnz"),
            Insn::BranchReg { .. } => Uprobe::Simulated("br/blr/ret"),
            Insn::Adr { .. } => Uprobe::Simulated("adr/adrp"),
            Insn::LoadLiteral { .. } => Uprobe::Rejected,
            Insn::Nop => Uprobe::SingleStepped,
            Insn::Other(w) => {
                let rejected =
                    // Exclusive loads and stores (ldxr, stxr, ldaxr...; not ldar/stlr, o2 = 1).
                    w & 0x3f80_0000 == 0x0800_0000
                    // Exception generation (svc, brk...), other register branches (eret, braa...).
                    || w & 0xff00_0000 == 0xd400_0000
                    || w & 0xfe00_0000 == 0xd600_0000
                    // System instructions (msr, mrs, hints other than nop): only some are
                    // steppable; none is ever needed as a probe site.
                    || w & 0xffc0_0000 == 0xd500_0000
                    // Unallocated / SVE / SME space (op0 = 0b00xx), including udf (0x00000000).
                    || (w >> 25) & 0b1100 == 0;
                if rejected {
                    Uprobe::Rejected
                } else {
                    Uprobe::SingleStepped
                }
            }
        }
    }

    /// Whether the instruction may write a Go ABIInternal argument register (X0–X15, F0–F15 /
    /// V0–V15) or g (X28). Conservative: `true` for anything not understood.
    pub fn writes_arg_or_g(&self) -> bool {
        let w = writes(self);
        w.x & ARG_OR_G_X != 0 || w.v & ARG_V != 0
    }

    /// Whether this is Go's stack-guard load: `ldr xN, [x28, #16]` (`MOVD 16(g), RN`).
    pub fn is_guard_load(&self) -> bool {
        matches!(self, Insn::Other(w) if w & 0xffff_ffe0 == 0xf940_0b80)
    }

    /// A compare that only sets flags (`cmp`/`cmn`: subs/adds into xzr, any form).
    pub fn is_compare(&self) -> bool {
        let Insn::Other(w) = *self else {
            return false;
        };
        // add/sub with S=1: shifted/extended register (x01 1011 ...) or immediate (x01 1000 1...).
        let addsub_s = w & 0x3f00_0000 == 0x2b00_0000 || w & 0x3f80_0000 == 0x3100_0000;
        addsub_s && w & 0x2000_0000 != 0 && w & 0x1f == 0x1f
    }
}

const ARG_OR_G_X: u32 = 0xffff | (1 << 28);
const ARG_V: u32 = 0xffff;

/// Registers an instruction may write: bit n of `x` is Xn (31 = SP/XZR, never an argument),
/// bit n of `v` is Vn.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Writes {
    x: u32,
    v: u32,
}

const NONE: Writes = Writes { x: 0, v: 0 };
const ALL: Writes = Writes {
    x: u32::MAX,
    v: u32::MAX,
};

fn x(r: u32) -> Writes {
    Writes {
        x: 1 << (r & 0x1f),
        v: 0,
    }
}

fn v(r: u32) -> Writes {
    Writes {
        x: 0,
        v: 1 << (r & 0x1f),
    }
}

fn or(a: Writes, b: Writes) -> Writes {
    Writes {
        x: a.x | b.x,
        v: a.v | b.v,
    }
}

fn writes(insn: &Insn) -> Writes {
    match *insn {
        Insn::Branch { link, .. } => {
            if link {
                ALL
            } else {
                NONE
            }
        }
        Insn::BranchReg { kind, .. } => {
            if kind == RegBranch::Blr {
                ALL
            } else {
                NONE
            }
        }
        Insn::BranchCond { .. }
        | Insn::CompareBranch { .. }
        | Insn::TestBranch { .. }
        | Insn::Nop => NONE,
        Insn::Adr { rd, .. } => x(u32::from(rd)),
        Insn::LoadLiteral { word } => {
            if word & 0x0400_0000 != 0 {
                v(word)
            } else {
                x(word)
            }
        }
        Insn::Other(w) => writes_other(w),
    }
}

fn writes_other(w: u32) -> Writes {
    let rd = w & 0x1f;
    let rn = (w >> 5) & 0x1f;
    let rt2 = (w >> 10) & 0x1f;
    let simd = w & 0x0400_0000 != 0;
    let reg = |r: u32| if simd { v(r) } else { x(r) };
    let op0 = (w >> 25) & 0xf;
    match op0 {
        // Data processing, immediate: writes Rd (31 is SP or XZR).
        0b1000 | 0b1001 => x(rd),
        // Branches, exception generation, system.
        0b1010 | 0b1011 => {
            if w & 0xffc0_0000 == 0xd500_0000 {
                // System: mrs/sysl (L, bit 21) write Rt; msr, hints and barriers write nothing.
                if w & 0x0020_0000 != 0 { x(rd) } else { NONE }
            } else {
                ALL
            }
        }
        // Data processing, register: writes Rd, except conditional compare (flags only).
        0b0101 | 0b1101 => {
            if w & 0x1fe0_0010 == 0x1a40_0000 {
                NONE
            } else {
                x(rd)
            }
        }
        // SIMD and floating point: Rd names a V or an X register depending on the opcode.
        0b0111 | 0b1111 => or(x(rd), v(rd)),
        // Loads and stores.
        _ if op0 & 0b0101 == 0b0100 => writes_load_store(w, rd, rn, rt2, reg),
        _ => ALL,
    }
}

fn writes_load_store(w: u32, rt: u32, rn: u32, rt2: u32, reg: impl Fn(u32) -> Writes) -> Writes {
    let load = w & 0x0040_0000 != 0;
    let simd = w & 0x0400_0000 != 0;
    match (w >> 27) & 0b111 {
        // Exclusive / ordered (ldxr, stxr, ldar, stlr, cas...): stores write the status Rs.
        0b001 if !simd && (w >> 24) & 0b11 == 0 => {
            let rs = x((w >> 16) & 0x1f);
            if load { or(rs, or(x(rt), x(rt2))) } else { rs }
        }
        // Load/store pair: stp/ldp, with writeback of the base for pre/post-index.
        0b101 => {
            let wb = if (w >> 23) & 1 == 1 { x(rn) } else { NONE };
            if load {
                or(wb, or(reg(rt), reg(rt2)))
            } else {
                wb
            }
        }
        // Load/store register (all addressing modes) and atomic memory operations.
        0b111 => {
            let opc = (w >> 22) & 0b11;
            let is_load = if simd { opc & 1 == 1 } else { opc != 0 };
            let unsigned_imm = w & 0x0100_0000 != 0;
            let has_reg_form = w & 0x0020_0000 != 0;
            let mode = (w >> 10) & 0b11;
            if !unsigned_imm && has_reg_form && mode == 0b00 {
                // Atomic memory operation (ldadd, swp...): returns the old value in Rt.
                return or(x(rt), x((w >> 16) & 0x1f));
            }
            if !unsigned_imm && has_reg_form && mode != 0b10 {
                // ldraa/ldrab (pointer authentication): rare; be conservative.
                return ALL;
            }
            let wb = if !unsigned_imm && !has_reg_form && mode & 1 == 1 {
                x(rn)
            } else {
                NONE
            };
            if is_load { or(wb, reg(rt)) } else { wb }
        }
        _ => ALL,
    }
}

impl fmt::Display for Insn {
    /// Assembly-like text: branches, adr/adrp and a few prologue instructions by name;
    /// anything else as `.inst 0x…`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const CONDS: [&str; 16] = [
            "eq", "ne", "hs", "lo", "mi", "pl", "vs", "vc", "hi", "ls", "ge", "lt", "gt", "le",
            "al", "nv",
        ];
        let xr = |r: u8| {
            if r == 30 {
                "x30".to_string()
            } else {
                format!("x{r}")
            }
        };
        match *self {
            Insn::Branch { target, link } => {
                write!(f, "{} {target:#x}", if link { "bl" } else { "b" })
            }
            Insn::BranchCond { cond, target } => {
                let c = CONDS.get(usize::from(cond)).copied().unwrap_or("?");
                write!(f, "b.{c} {target:#x}")
            }
            Insn::CompareBranch {
                nonzero,
                wide,
                rt,
                target,
            } => write!(
                f,
                "{} {}{rt}, {target:#x}",
                if nonzero { "cbnz" } else { "cbz" },
                if wide { 'x' } else { 'w' }
            ),
            Insn::TestBranch {
                nonzero,
                bit,
                rt,
                target,
            } => write!(
                f,
                "{} {}{rt}, #{bit}, {target:#x}",
                if nonzero { "tbnz" } else { "tbz" },
                if bit >= 32 { 'x' } else { 'w' }
            ),
            Insn::BranchReg { kind, rn } => match kind {
                RegBranch::Ret if rn == 30 => f.write_str("ret"),
                RegBranch::Ret => write!(f, "ret {}", xr(rn)),
                RegBranch::Br => write!(f, "br {}", xr(rn)),
                RegBranch::Blr => write!(f, "blr {}", xr(rn)),
            },
            Insn::Adr { page, rd, target } => {
                write!(
                    f,
                    "{} {}, {target:#x}",
                    if page { "adrp" } else { "adr" },
                    xr(rd)
                )
            }
            Insn::LoadLiteral { word } => write!(f, "ldr (literal) .inst {word:#010x}"),
            Insn::Nop => f.write_str("nop"),
            Insn::Other(w) if self.is_guard_load() => write!(f, "ldr x{}, [x28,#16]", w & 0x1f),
            Insn::Other(w) if self.is_compare() && w & 0x1f00_0000 == 0x0b00_0000 => {
                // cmp (register forms): Rn is SP in the extended form when 31.
                let extended = w & 0x0020_0000 != 0;
                let rn = (w >> 5) & 0x1f;
                let rm = (w >> 16) & 0x1f;
                let name = |r: u32, sp_ok: bool| {
                    if r == 31 && sp_ok {
                        "sp".to_string()
                    } else if r == 31 {
                        "xzr".to_string()
                    } else {
                        format!("x{r}")
                    }
                };
                let op = if w & 0x4000_0000 != 0 { "cmp" } else { "cmn" };
                write!(f, "{op} {}, {}", name(rn, extended), name(rm, false))
            }
            Insn::Other(w) => write!(f, ".inst {w:#010x}"),
        }
    }
}

/// The instructions of `code` (at `address`), one per whole 32-bit word, with their addresses.
pub fn decode_all(code: &[u8], address: u64) -> Vec<(u64, Insn)> {
    code.chunks_exact(4)
        .enumerate()
        .map(|(i, w)| {
            let pc = address.wrapping_add((i as u64) * 4);
            let word = u32::from_le_bytes([w[0], w[1], w[2], w[3]]);
            (pc, decode(word, pc))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const PC: u64 = 0x21_eaf0;

    fn d(w: u32) -> Insn {
        decode(w, PC)
    }

    /// Encodings taken from `go tool objdump` of the arm64 httpserver fixture and from the Arm
    /// ARM; each checks the decoded fields and the uprobe class.
    #[test]
    fn branches() {
        // BLS 45(PC)
        let i = d(0x5400_05a9);
        assert_eq!(
            i,
            Insn::BranchCond {
                cond: COND_LS,
                target: PC + 45 * 4
            }
        );
        assert_eq!(i.to_string(), format!("b.ls {:#x}", PC + 180));
        assert_eq!(i.uprobe(), Uprobe::Simulated("b.cond"));
        // BNE 23(PC), and a backwards b.cond (imm19 = -1).
        assert_eq!(
            d(0x5400_02e1),
            Insn::BranchCond {
                cond: 1,
                target: PC + 23 * 4
            }
        );
        assert_eq!(
            d(0x54ff_ffe0).local_branch_target(),
            Some(PC - 4),
            "b.eq .-4"
        );
        // CALL (bl) forwards and JMP (b) backwards: 0x97fff562 at 0x2028f8 -> 0x1ffe80.
        assert_eq!(
            decode(0x97ff_f562, 0x20_28f8),
            Insn::Branch {
                target: 0x20_28f8 - 0xa9e * 4,
                link: true
            }
        );
        let jmp = decode(0x17ff_ffcb, 0x21_ebc4);
        assert_eq!(jmp.local_branch_target(), Some(0x21_eaf0));
        assert!(!jmp.is_call() && jmp.changes_flow());
        assert!(decode(0x9400_284f, 0).is_call());
        assert_eq!(decode(0x9400_284f, 0).local_branch_target(), None);
        // CBNZ R4, 5(PC); CBZ R1, 47(PC); CBNZW R3, 6(PC)
        assert_eq!(
            d(0xb500_00a4),
            Insn::CompareBranch {
                nonzero: true,
                wide: true,
                rt: 4,
                target: PC + 20
            }
        );
        assert_eq!(
            d(0xb400_05e1),
            Insn::CompareBranch {
                nonzero: false,
                wide: true,
                rt: 1,
                target: PC + 47 * 4
            }
        );
        assert!(matches!(
            d(0x3500_00c3),
            Insn::CompareBranch {
                wide: false,
                rt: 3,
                ..
            }
        ));
        // TBNZ $0, R6, 26(PC); tbz x1, #33 (b5 = 1).
        assert_eq!(
            d(0x3700_0346),
            Insn::TestBranch {
                nonzero: true,
                bit: 0,
                rt: 6,
                target: PC + 26 * 4
            }
        );
        assert!(matches!(
            d(0xb608_0001),
            Insn::TestBranch {
                bit: 33,
                nonzero: false,
                ..
            }
        ));
        assert_eq!(d(0x3700_0346).uprobe(), Uprobe::Simulated("tbz/tbnz"));
        // ret, ret x1, br x16, blr x2
        assert_eq!(d(RET_X30).to_string(), "ret");
        assert_eq!(d(RET_X30).uprobe(), Uprobe::Simulated("br/blr/ret"));
        assert_eq!(
            d(0xd65f_0020),
            Insn::BranchReg {
                kind: RegBranch::Ret,
                rn: 1
            }
        );
        assert_eq!(d(0xd61f_0200).to_string(), "br x16");
        assert!(d(0xd63f_0040).is_call());
        // retaa is not ret: the kernel refuses it.
        assert_eq!(d(0xd65f_0bff).uprobe(), Uprobe::Rejected);
    }

    #[test]
    fn adr_adrp_and_literals() {
        // ADRP 90112(PC), R3 at 0x2110dc: page of pc + 22 pages.
        let i = decode(0xd000_00a3, 0x21_10dc);
        assert_eq!(
            i,
            Insn::Adr {
                page: true,
                rd: 3,
                target: 0x21_1000 + 22 * 0x1000
            }
        );
        assert_eq!(i.uprobe(), Uprobe::Simulated("adr/adrp"));
        assert!(i.writes_arg_or_g());
        // adr x27, .+8 (not an argument register).
        let adr = decode(0x1000_005b, 0x1000);
        assert_eq!(
            adr,
            Insn::Adr {
                page: false,
                rd: 27,
                target: 0x1008
            }
        );
        assert!(!adr.writes_arg_or_g());
        // ldr x0, .+8 (literal): refused by uprobes.
        assert!(matches!(d(0x5800_0040), Insn::LoadLiteral { .. }));
        assert_eq!(d(0x5800_0040).uprobe(), Uprobe::Rejected);
        assert!(d(0x5800_0040).writes_arg_or_g());
        assert_eq!(d(0xd503_201f), Insn::Nop);
        assert_eq!(d(0xd503_201f).uprobe(), Uprobe::SingleStepped);
    }

    #[test]
    fn prologue_instructions() {
        // MOVD 16(R28), R16: the stack guard load; writes x16 only.
        let g = d(0xf940_0b90);
        assert!(g.is_guard_load());
        assert_eq!(g.to_string(), "ldr x16, [x28,#16]");
        assert!(!g.writes_arg_or_g());
        assert_eq!(g.uprobe(), Uprobe::SingleStepped);
        assert!(!d(0xf940_0800 | (5 << 5) | 16).is_guard_load(), "base x5");
        // CMP R16, RSP (extended) and CMP R16, R17 (shifted).
        for (w, text) in [(0xeb30_63ff, "cmp sp, x16"), (0xeb10_023f, "cmp x17, x16")] {
            let i = d(w);
            assert!(i.is_compare(), "{w:#x}");
            assert_eq!(i.to_string(), text);
            assert!(!i.writes_arg_or_g());
        }
        // CMP $1, R7 (immediate) and CMPW $42, R6; subs x1, x2, x3 is not a compare.
        assert!(d(0xf100_04ff).is_compare());
        assert!(d(0x7100_a8df).is_compare());
        assert!(!d(0xeb03_0041).is_compare());
        assert!(d(0xeb03_0041).writes_arg_or_g());
        // SUB $352, RSP, R17; SUB $8, RSP, R29; MOVD R20, RSP: not argument registers.
        for w in [0xd105_83f1, 0xd100_23fd, 0x9100_029f] {
            assert!(!d(w).writes_arg_or_g(), "{w:#x}");
        }
        // ADD $160, R0, R2; ORR $1, ZR, R3; MOVD $200, R1; SUB $1, R0, R0: arguments.
        for w in [0x9102_8002, 0xb240_03e3, 0xd280_1901, 0xd100_0400] {
            assert!(d(w).writes_arg_or_g(), "{w:#x}");
        }
        // Stores write nothing unless they write back an argument register as the base:
        // MOVD.W R30, -48(RSP); MOVD R29, -8(RSP); MOVD R1, 64(RSP); STP (R29, R30), -8(R20);
        // STP (R0, R1), 8(RSP); STLRW R3, (R2).
        for w in [
            0xf81d_0ffe,
            0xf81f_83fd,
            0xf900_23e1,
            0xa93f_fa9d,
            0xa900_87e0,
            0x889f_fc43,
        ] {
            assert!(!d(w).writes_arg_or_g(), "{w:#x}");
        }
        // STP.P (ZR, ZR), 16(R1): post-index writeback of x1.
        assert!(d(0xa881_7c3f).writes_arg_or_g());
        // Loads: LDP 16(R0), (R4, R5); MOVBU 32(R0), R6; LDARW (R3), R3; MOVB (R0), R27 (x27:
        // not an argument); LDP -8(RSP), (R29, R30); MOVD.P 48(RSP), R30.
        for (w, writes) in [
            (0xa941_1404, true),
            (0x3940_8006, true),
            (0x88df_fc63, true),
            (0x3980_001b, false),
            (0xa97f_fbfd, false),
            (0xf843_07fe, false),
        ] {
            assert_eq!(d(w).writes_arg_or_g(), writes, "{w:#x}");
        }
        // ldr x28, [sp, #8]: g itself.
        assert!(d(0xf940_07fc).writes_arg_or_g());
        // ldr d0, [sp, #8] (float argument register F0) and ldr d20 (not one).
        assert!(d(0xfd40_07e0).writes_arg_or_g());
        assert!(!d(0xfd40_07f4).writes_arg_or_g());
        // ccmp x1, #0, #4, ne: flags only.
        assert!(!d(0xfa40_1824).writes_arg_or_g());
        // ldadd x1, x2, [x3]: writes x2.
        assert!(d(0xf821_0062).writes_arg_or_g());
        // Exclusive accesses are refused by uprobes (ldxr w3, [x3]), ordered ones (stlr) are
        // single-stepped; system instructions are refused.
        assert_eq!(d(0x885f_7c63).uprobe(), Uprobe::Rejected);
        assert!(d(0x885f_7c63).writes_arg_or_g());
        assert_eq!(d(0x889f_fc43).uprobe(), Uprobe::SingleStepped);
        assert_eq!(d(0xd53b_d040).uprobe(), Uprobe::Rejected, "mrs");
        assert_eq!(d(0xd400_0001).uprobe(), Uprobe::Rejected, "svc");
        assert_eq!(d(0).uprobe(), Uprobe::Rejected, "udf");
        assert!(d(0).writes_arg_or_g());
        assert_eq!(d(0).to_string(), ".inst 0x00000000");
        assert_eq!(d(0xf81d_0ffe).uprobe(), Uprobe::SingleStepped);
    }

    #[test]
    fn decode_all_splits_words_and_ignores_a_tail() {
        let code = [0xc0, 0x03, 0x5f, 0xd6, 0x1f, 0x20, 0x03, 0xd5, 0xff];
        let insns = decode_all(&code, u64::MAX - 3);
        assert_eq!(insns.len(), 2);
        assert_eq!(insns[0], (u64::MAX - 3, d(RET_X30)));
        assert_eq!(insns[1], (0, Insn::Nop));
    }
}
