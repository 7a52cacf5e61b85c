//! Where to put a uprobe: the entry site the kernel can emulate, and the RET sites.
//!
//! A uprobe replaces an instruction with a breakpoint. On a hit, the kernel either *emulates*
//! the original instruction (cheap: ~0.5 µs on our VM) or copies it out of line and
//! *single-steps* it (a second trap: ~13 µs on our VM). x86 emulates (arch/x86/kernel/uprobes.c):
//! `jmp rel8/rel32`, `call rel32`, `jcc rel8/rel32` (without a 0x66 prefix), `push r64`
//! (one byte, or `41 5x` for r8–r15) and nops. Everything else is single-stepped.
//!
//! A Go amd64 function starts with the stack check, `cmp 0x10(%r14),%rsp ; jbe morestack`
//! (large frames: `lea -N(%rsp),%r12 ; cmp 0x10(%r14),%r12 ; jbe`), then `push %rbp ;
//! mov %rsp,%rbp ; sub $N,%rsp` and argument spills. [`entry_site`] picks the `push %rbp`:
//! emulated, executed exactly once per call (the `jbe` is emulated too, but when the stack must
//! grow, morestack re-runs the function from its entry, so a probe before or on the branch fires
//! twice for that call), and with every argument register still holding the argument.
//!
//! arm64 code (chosen by the ELF's e_machine, not the host) goes to [`super::sites_arm64`].

use std::{collections::HashSet, fmt::Write as _};

use iced_x86::{
    Decoder, DecoderOptions, FlowControl, Instruction, InstructionInfoFactory, Mnemonic, OpAccess,
    OpKind, Register,
};

use super::Arch;

/// How the kernel handles a uprobe hit at a site.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SiteKind {
    /// The kernel emulates the instruction: cheap.
    Emulated,
    /// The kernel single-steps the instruction out of line: expensive.
    SingleStepped,
}

/// A chosen probe site.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProbeSite {
    /// Offset from the function's entry.
    pub offset: u64,
    pub kind: SiteKind,
    /// The instruction at the site, e.g. "push rbp".
    pub instruction: String,
    /// Why this site, for the user (printed at attach time).
    pub reason: String,
}

/// How many instructions of the prologue are considered.
const MAX_PROLOGUE: usize = 16;
/// How far a morestack trampoline is followed to find its jump back to the entry.
const MAX_TRAMPOLINE: usize = 48;

/// Chooses the entry probe site of the function whose code (`code`, the whole function) starts
/// at `address`. With `needs_args`, the site must come before any write to an argument
/// register (amd64: RAX RBX RCX RDI RSI R8–R11, X0–X14; arm64: X0–X15, F0–F15) or to g
/// (R14; X28).
pub fn entry_site(arch: Arch, code: &[u8], address: u64, needs_args: bool) -> ProbeSite {
    match arch {
        Arch::X86_64 => entry_site_x86(code, address, needs_args),
        Arch::Aarch64 => super::sites_arm64::entry_site(code, address, needs_args),
    }
}

/// How many instructions after a call's return address are considered for its return site.
const MAX_AFTER_CALL: usize = 4;

/// Return sites without RET probes: for each `call callee` in the function (`code` at
/// `address`), the first instruction from the return address on that the kernel emulates,
/// reached only by falling through from the return and before the callee's results (RAX, RBX,
/// RCX, RDI, …) are overwritten. A probe there sees the results as the caller does. Where no
/// such instruction exists, the return address itself (single-stepped) is used.
/// A multi-byte nop is passed over in favour of a following branch, which every kernel emulates.
///
/// Offsets are taken modulo 2^64, like the decoder's addresses: a function placed by a crafted
/// file at the top of the address space wraps around instead of overflowing.
pub fn after_call_sites(arch: Arch, code: &[u8], address: u64, callee: u64) -> Vec<ProbeSite> {
    if arch == Arch::Aarch64 {
        return super::sites_arm64::after_call_sites(code, address, callee);
    }
    let insns = decode_all(code, address);
    let end = address.saturating_add(code.len() as u64);
    // Branch targets that something other than a call's return reaches. A `jmp` right after
    // another call is a call's return too (e.g. the HTTP/2 `alt.RoundTrip` path joining the
    // HTTP/1 one with its results in the same registers), so it does not count.
    let targets: HashSet<u64> = insns
        .iter()
        .enumerate()
        .filter(|(_, i)| i.is_jcc_short_or_near() || i.is_jmp_short_or_near())
        .filter(|(j, i)| {
            let after_call = j
                .checked_sub(1)
                .and_then(|p| insns.get(p))
                .is_some_and(|p| {
                    p.flow_control() == FlowControl::Call
                        || p.flow_control() == FlowControl::IndirectCall
                });
            !(i.is_jmp_short_or_near() && after_call)
        })
        .map(|(_, i)| i.near_branch_target())
        .filter(|&t| t > address && t < end)
        .collect();
    let bytes_of = |i: &Instruction| {
        let start = usize::try_from(i.ip().wrapping_sub(address)).unwrap_or(usize::MAX);
        code.get(start..start.saturating_add(i.len()))
            .unwrap_or_default()
    };
    let mut info = InstructionInfoFactory::new();
    let mut sites = Vec::new();
    for (k, call) in insns.iter().enumerate() {
        if !(call.is_call_near() && call.near_branch_target() == callee) {
            continue;
        }
        let ret_addr = call.next_ip();
        let mut chosen = None;
        let mut stop = String::from("no emulated instruction follows the call");
        for ins in insns.iter().skip(k + 1).take(MAX_AFTER_CALL) {
            if ins.code() == iced_x86::Code::INVALID {
                stop = "undecodable bytes after the call".into();
                break;
            }
            if targets.contains(&ins.ip()) {
                stop = format!(
                    "{:#x} is a branch target (reachable without returning)",
                    ins.ip().wrapping_sub(address)
                );
                break;
            }
            match emulated(ins, bytes_of(ins)) {
                Some("multi-byte nop") | None => {}
                Some(what) => {
                    chosen = Some((ins, what));
                    break;
                }
            }
            if ins.flow_control() != FlowControl::Next {
                stop = format!("`{}` leaves the straight line", format_insn(ins));
                break;
            }
            if writes_arg_register(&mut info, ins) {
                stop = format!("`{}` overwrites a result register", format_insn(ins));
                break;
            }
        }
        sites.push(match chosen {
            Some((ins, what)) => ProbeSite {
                offset: ins.ip().wrapping_sub(address),
                kind: SiteKind::Emulated,
                instruction: format_insn(ins),
                reason: format!(
                    "{} after the call at +{:#x} returns: emulated ({what}), results still in registers",
                    format_insn(ins),
                    call.ip().wrapping_sub(address)
                ),
            },
            None => ProbeSite {
                offset: ret_addr.wrapping_sub(address),
                kind: SiteKind::SingleStepped,
                instruction: insns
                    .get(k + 1)
                    .map(format_insn)
                    .unwrap_or_default(),
                reason: format!("the return address: single-stepped (slow), since {stop}"),
            },
        });
    }
    sites
}

/// Offsets (from the function's entry) of every RET instruction in `code`.
pub fn return_sites(arch: Arch, code: &[u8], address: u64) -> Vec<u64> {
    match arch {
        Arch::X86_64 => decode_all(code, address)
            .iter()
            .filter(|i| i.mnemonic() == Mnemonic::Ret)
            .map(|i| i.ip().wrapping_sub(address))
            .collect(),
        Arch::Aarch64 => super::sites_arm64::return_sites(code, address),
    }
}

fn decode_all(code: &[u8], address: u64) -> Vec<Instruction> {
    let mut decoder = Decoder::with_ip(64, code, address, DecoderOptions::NONE);
    let mut out = Vec::new();
    let mut ins = Instruction::default();
    while decoder.can_decode() {
        decoder.decode_out(&mut ins);
        out.push(ins);
    }
    out
}

fn entry_site_x86(code: &[u8], address: u64, needs_args: bool) -> ProbeSite {
    let insns = decode_all(code, address);
    let end = address.saturating_add(code.len() as u64);
    let offset_of = |i: &Instruction| i.ip().wrapping_sub(address);
    let bytes_of = |i: &Instruction| {
        let start = usize::try_from(offset_of(i)).unwrap_or(usize::MAX);
        code.get(start..start.saturating_add(i.len()))
            .unwrap_or_default()
    };

    // Offsets (> 0) that some branch in the function jumps to: a site at or after one of them
    // would fire more than once per call. (Jumping to the entry itself, as the morestack
    // trampoline does, is expected.)
    let targets: HashSet<u64> = insns
        .iter()
        .filter(|i| i.code() != iced_x86::Code::INVALID)
        .filter(|i| i.is_jcc_short_or_near() || i.is_jmp_short_or_near() || i.is_call_near())
        .map(Instruction::near_branch_target)
        .filter(|&t| t > address && t < end)
        .map(|t| t - address)
        .collect();

    let mut info = InstructionInfoFactory::new();
    let mut stack_check: Option<&Instruction> = None;
    let mut stop = String::from("the prologue has no emulated instruction");
    let mut arg_writer: Option<&Instruction> = None;

    for (k, ins) in insns.iter().take(MAX_PROLOGUE).enumerate() {
        let off = offset_of(ins);
        if ins.code() == iced_x86::Code::INVALID {
            stop = format!("undecodable bytes at +{off:#x}");
            break;
        }
        if off > 0 && targets.contains(&off) {
            stop = format!("+{off:#x} is a branch target (a probe there could fire repeatedly)");
            break;
        }
        if let Some(w) = arg_writer {
            stop = format!(
                "`{}` at +{:#x} overwrites an argument register",
                format_insn(w),
                offset_of(w)
            );
            break;
        }
        let is_stack_check = is_stack_check_branch(&insns, k, address);
        if let Some(what) = emulated(ins, bytes_of(ins)) {
            if is_stack_check {
                stack_check.get_or_insert(ins);
            } else {
                let place = if stack_check.is_some() {
                    "after the stack check".to_string()
                } else if off == 0 {
                    "at the entry".to_string()
                } else if needs_args {
                    "before any argument register is written".to_string()
                } else {
                    "in the straight-line prologue".to_string()
                };
                return ProbeSite {
                    offset: off,
                    kind: SiteKind::Emulated,
                    instruction: format_insn(ins),
                    reason: format!(
                        "{} {place}: emulated ({what}), fires once per call",
                        format_insn(ins)
                    ),
                };
            }
        }
        if !is_stack_check && ins.flow_control() != FlowControl::Next {
            stop = format!(
                "`{}` at +{off:#x} leaves the straight-line prologue",
                format_insn(ins)
            );
            break;
        }
        if needs_args && writes_arg_register(&mut info, ins) {
            arg_writer = Some(ins);
        }
    }
    if insns.len() > MAX_PROLOGUE && stop == "the prologue has no emulated instruction" {
        stop = format!("no emulated instruction in the first {MAX_PROLOGUE} instructions");
    }

    if let Some(sc) = stack_check {
        return ProbeSite {
            offset: offset_of(sc),
            kind: SiteKind::Emulated,
            instruction: format_insn(sc),
            reason: format!(
                "{} (the stack-check branch): emulated, but fires twice for a call whose stack \
                 must grow (morestack re-runs the function); nothing later qualifies: {stop}",
                format_insn(sc)
            ),
        };
    }
    let first = insns
        .first()
        .filter(|i| i.code() != iced_x86::Code::INVALID);
    ProbeSite {
        offset: 0,
        kind: SiteKind::SingleStepped,
        instruction: first.map(format_insn).unwrap_or_default(),
        reason: format!(
            "{} at the entry: single-stepped (slow), since {stop}",
            first.map_or_else(|| "no instruction".to_string(), format_insn)
        ),
    }
}

/// Whether the kernel emulates this instruction (x86 uprobes); a short description if so.
fn emulated(ins: &Instruction, bytes: &[u8]) -> Option<&'static str> {
    if ins.code() == iced_x86::Code::INVALID {
        return None;
    }
    match bytes {
        [0xeb, _] | [0xe9, _, _, _, _] => Some("jmp rel"),
        [0xe8, _, _, _, _] => Some("call rel32"),
        [0x70..=0x7f, _] | [0x0f, 0x80..=0x8f, _, _, _, _] => Some("jcc rel"),
        [0x50..=0x57] | [0x41, 0x50..=0x57] => Some("push r64"),
        [.., 0x90] if bytes.iter().rev().skip(1).all(|&b| b == 0x66) => Some("nop"),
        // Multi-byte nop (0f 1f /0): emulated by recent kernels, single-stepped by older ones.
        _ if matches!(ins.mnemonic(), Mnemonic::Nop)
            && bytes.windows(2).any(|w| w == [0x0f, 0x1f]) =>
        {
            Some("multi-byte nop")
        }
        _ => None,
    }
}

/// Whether instruction `k` is the stack-check branch: a conditional branch right after
/// `cmp <reg>, [r14+0x10]` (g.stackguard0), or one whose target calls a function and then jumps
/// back to the entry (the morestack trampoline).
fn is_stack_check_branch(insns: &[Instruction], k: usize, address: u64) -> bool {
    let Some(ins) = insns.get(k) else {
        return false;
    };
    if !ins.is_jcc_short_or_near() {
        return false;
    }
    let after_guard_cmp = k
        .checked_sub(1)
        .and_then(|p| insns.get(p))
        .is_some_and(|p| {
            p.mnemonic() == Mnemonic::Cmp
                && p.op_count() == 2
                && p.op_kind(1) == OpKind::Memory
                && p.memory_base() == Register::R14
                && p.memory_index() == Register::None
                && p.memory_displacement64() == 0x10
        });
    if after_guard_cmp {
        return true;
    }
    let target = ins.near_branch_target();
    let Ok(start) = insns.binary_search_by_key(&target, Instruction::ip) else {
        return false;
    };
    let mut called = false;
    for t in insns.iter().skip(start).take(MAX_TRAMPOLINE) {
        if t.is_call_near() {
            called = true;
        } else if t.is_jmp_short_or_near() {
            return called && t.near_branch_target() == address;
        } else if !matches!(t.flow_control(), FlowControl::Next | FlowControl::Call) {
            return false;
        }
    }
    false
}

/// Whether `ins` writes a Go ABIInternal argument register or g (R14).
fn writes_arg_register(info: &mut InstructionInfoFactory, ins: &Instruction) -> bool {
    info.info(ins).used_registers().iter().any(|u| {
        matches!(
            u.access(),
            OpAccess::Write | OpAccess::CondWrite | OpAccess::ReadWrite | OpAccess::ReadCondWrite
        ) && is_arg_register(u.register().full_register())
    })
}

fn is_arg_register(full: Register) -> bool {
    use Register::*;
    matches!(
        full,
        RAX | RBX | RCX | RDI | RSI | R8 | R9 | R10 | R11 | R14
    ) || (full >= ZMM0 && full <= ZMM14)
}

/// Intel-syntax text of an instruction, e.g. `push rbp`, `cmp rsp,[r14+0x10]`.
pub(crate) fn format_insn(ins: &Instruction) -> String {
    let mut s = format!("{:?}", ins.mnemonic()).to_lowercase();
    for i in 0..ins.op_count() {
        s.push(if i == 0 { ' ' } else { ',' });
        match ins.op_kind(i) {
            OpKind::Register => s.push_str(&reg_name(ins.op_register(i))),
            OpKind::NearBranch16 | OpKind::NearBranch32 | OpKind::NearBranch64 => {
                let _ = write!(s, "{:#x}", ins.near_branch_target());
            }
            OpKind::Immediate8to16 | OpKind::Immediate8to32 | OpKind::Immediate8to64 => {
                let _ = write!(s, "{}", signed_hex(ins.immediate8to64()));
            }
            OpKind::Immediate32to64 => {
                let _ = write!(s, "{}", signed_hex(ins.immediate32to64()));
            }
            OpKind::Immediate8
            | OpKind::Immediate8_2nd
            | OpKind::Immediate16
            | OpKind::Immediate32
            | OpKind::Immediate64 => {
                let _ = write!(s, "{:#x}", ins.immediate(i));
            }
            OpKind::Memory => {
                if ins.is_ip_rel_memory_operand() {
                    let _ = write!(s, "[{:#x}]", ins.ip_rel_memory_address());
                    continue;
                }
                let mut m = String::new();
                if ins.memory_base() != Register::None {
                    m.push_str(&reg_name(ins.memory_base()));
                }
                if ins.memory_index() != Register::None {
                    if !m.is_empty() {
                        m.push('+');
                    }
                    m.push_str(&reg_name(ins.memory_index()));
                    if ins.memory_index_scale() > 1 {
                        let _ = write!(m, "*{}", ins.memory_index_scale());
                    }
                }
                let disp = ins.memory_displacement64() as i64;
                if disp != 0 || m.is_empty() {
                    let d = signed_hex(disp);
                    if !m.is_empty() && !d.starts_with('-') {
                        m.push('+');
                    }
                    m.push_str(&d);
                }
                let _ = write!(s, "[{m}]");
            }
            _ => s.push('?'),
        }
    }
    s
}

fn reg_name(r: Register) -> String {
    format!("{r:?}").to_lowercase()
}

fn signed_hex(v: i64) -> String {
    if v < 0 {
        format!("-{:#x}", v.unsigned_abs())
    } else {
        format!("{v:#x}")
    }
}

#[cfg(test)]
mod after_call_tests {
    use super::*;

    #[test]
    fn picks_the_branch_after_test_and_nop() {
        // call +0x100 (to 0x1105) ; nopw 0(rax,rax) ; test rbx,rbx ; je +0x10 ; ret
        let code = [
            0xe8, 0x00, 0x01, 0x00, 0x00, // call
            0x66, 0x0f, 0x1f, 0x44, 0x00, 0x00, // nopw
            0x48, 0x85, 0xdb, // test rbx,rbx
            0x74, 0x10, // je
            0xc3,
        ];
        let sites = after_call_sites(Arch::X86_64, &code, 0x1000, 0x1105);
        assert_eq!(sites.len(), 1);
        assert_eq!(sites[0].offset, 14, "{:?}", sites[0]);
        assert_eq!(sites[0].kind, SiteKind::Emulated);
    }

    #[test]
    fn result_register_write_falls_back_to_the_return_address() {
        // call ; mov rax,rbx ; je
        let code = [0xe8, 0x00, 0x01, 0x00, 0x00, 0x48, 0x89, 0xd8, 0x74, 0x10];
        let sites = after_call_sites(Arch::X86_64, &code, 0x1000, 0x1105);
        assert_eq!(sites[0].offset, 5);
        assert_eq!(sites[0].kind, SiteKind::SingleStepped);
        assert!(
            sites[0].reason.contains("overwrites"),
            "{}",
            sites[0].reason
        );
    }

    #[test]
    fn a_join_with_another_calls_return_is_allowed_but_not_other_jumps() {
        // call *rcx ; jmp J ; call X ; J: test rbx,rbx ; je
        let code = [
            0xff, 0xd1, // call *rcx
            0xeb, 0x05, // jmp +5 -> 0x1009
            0xe8, 0xfc, 0x00, 0x00, 0x00, // call 0x1105
            0x48, 0x85, 0xdb, // test rbx,rbx (0x1009)
            0x74, 0x10, // je
        ];
        let sites = after_call_sites(Arch::X86_64, &code, 0x1000, 0x1105);
        assert_eq!(sites[0].kind, SiteKind::Emulated, "{:?}", sites[0]);
        assert_eq!(sites[0].offset, 12);
        // Same, but the jump comes after a plain instruction: the join is refused.
        let mut code2 = code;
        code2[0] = 0x90;
        code2[1] = 0x90;
        let sites = after_call_sites(Arch::X86_64, &code2, 0x1000, 0x1105);
        assert_eq!(sites[0].kind, SiteKind::SingleStepped, "{:?}", sites[0]);
    }

    /// Fuzzing regression (fuzz/, found reviewing what elf_symbols reaches): a function at the
    /// very top of the address space (a crafted PT_LOAD and symbol can put it there) decodes
    /// with wrapping addresses; the offsets overflowed (a panic in debug builds).
    #[test]
    fn code_wrapping_around_the_address_space() {
        let address = u64::MAX - 2;
        // call +0 (to the return address, 2 after the wrap) ; nop ; test rbx,rbx ; je
        let code = [0xe8, 0, 0, 0, 0, 0x90, 0x48, 0x85, 0xdb, 0x74, 0x10];
        let sites = after_call_sites(Arch::X86_64, &code, address, address.wrapping_add(5));
        assert_eq!(sites.len(), 1);
        assert_eq!((sites[0].offset, sites[0].kind), (5, SiteKind::Emulated));
        // call ; mov rax,rbx ; je: the return address itself.
        let clobber = [0xe8, 0, 0, 0, 0, 0x48, 0x89, 0xd8, 0x74, 0x10];
        let sites = after_call_sites(Arch::X86_64, &clobber, address, address.wrapping_add(5));
        assert_eq!(
            (sites[0].offset, sites[0].kind),
            (5, SiteKind::SingleStepped)
        );
        let entry = entry_site(Arch::X86_64, &code, address, true);
        assert!(entry.offset < code.len() as u64);
        assert_eq!(
            return_sites(Arch::X86_64, &[0x90, 0x90, 0x90, 0xc3], address),
            vec![3]
        );
    }

    #[test]
    fn other_callees_are_ignored() {
        let code = [0xe8, 0x00, 0x01, 0x00, 0x00, 0x74, 0x10];
        assert!(after_call_sites(Arch::X86_64, &code, 0x1000, 0x2000).is_empty());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BASE: u64 = 0x40_1000;

    /// A tiny assembler: appends bytes; `jbe32`/`jmp8` patch relative targets later.
    #[derive(Default)]
    struct Asm {
        code: Vec<u8>,
        /// (position of rel32 field, label)
        fixups32: Vec<(usize, &'static str)>,
        fixups8: Vec<(usize, &'static str)>,
        labels: Vec<(&'static str, usize)>,
    }

    impl Asm {
        fn b(mut self, bytes: &[u8]) -> Self {
            self.code.extend_from_slice(bytes);
            self
        }
        fn label(mut self, l: &'static str) -> Self {
            self.labels.push((l, self.code.len()));
            self
        }
        fn jbe32(mut self, l: &'static str) -> Self {
            self.code.extend_from_slice(&[0x0f, 0x86]);
            self.fixups32.push((self.code.len(), l));
            self.code.extend_from_slice(&[0; 4]);
            self
        }
        fn jmp8(mut self, l: &'static str) -> Self {
            self.code.push(0xeb);
            self.fixups8.push((self.code.len(), l));
            self.code.push(0);
            self
        }
        fn jne8(mut self, l: &'static str) -> Self {
            self.code.push(0x75);
            self.fixups8.push((self.code.len(), l));
            self.code.push(0);
            self
        }
        /// The morestack trampoline: spill, call, unspill, jmp back to the entry.
        fn trampoline(self) -> Self {
            self.label("more")
                .b(&[0x48, 0x89, 0x44, 0x24, 0x08]) // mov [rsp+8],rax
                .b(&[0xe8, 0x11, 0x22, 0x33, 0x00]) // call morestack_noctxt
                .b(&[0x48, 0x8b, 0x44, 0x24, 0x08]) // mov rax,[rsp+8]
                .jmp8("entry")
        }
        fn build(self) -> Vec<u8> {
            let mut code = self.code;
            let at = |l: &str| self.labels.iter().find(|(n, _)| *n == l).unwrap().1 as i64;
            for (pos, l) in self.fixups32 {
                let rel = (at(l) - (pos as i64 + 4)) as i32;
                code[pos..pos + 4].copy_from_slice(&rel.to_le_bytes());
            }
            for (pos, l) in self.fixups8 {
                let rel = i8::try_from(at(l) - (pos as i64 + 1)).unwrap();
                code[pos] = rel as u8;
            }
            code
        }
    }

    fn asm() -> Asm {
        Asm::default().label("entry")
    }

    const CMP_RSP_G: &[u8] = &[0x49, 0x3b, 0x66, 0x10]; // cmp rsp,[r14+0x10]
    const PUSH_RBP: &[u8] = &[0x55];
    const MOV_RBP_RSP: &[u8] = &[0x48, 0x89, 0xe5];
    const SUB_RSP_20: &[u8] = &[0x48, 0x83, 0xec, 0x20];
    const SPILL_RBX: &[u8] = &[0x48, 0x89, 0x5c, 0x24, 0x38]; // mov [rsp+0x38],rbx
    const MOV_RAX_MEM: &[u8] = &[0x48, 0x8b, 0x40, 0x10]; // mov rax,[rax+0x10]
    const RET: &[u8] = &[0xc3];

    fn site(code: &[u8], needs_args: bool) -> ProbeSite {
        let s = entry_site(Arch::X86_64, code, BASE, needs_args);
        eprintln!("{s:?}");
        s
    }

    #[test]
    fn small_frame_prologue_picks_push_rbp() {
        let code = asm()
            .b(CMP_RSP_G)
            .jbe32("more")
            .b(PUSH_RBP)
            .b(MOV_RBP_RSP)
            .b(SUB_RSP_20)
            .b(SPILL_RBX)
            .b(RET)
            .trampoline()
            .build();
        for needs_args in [true, false] {
            let s = site(&code, needs_args);
            assert_eq!(s.offset, 0xa);
            assert_eq!(s.kind, SiteKind::Emulated);
            assert_eq!(s.instruction, "push rbp");
            assert!(s.reason.contains("after the stack check"), "{}", s.reason);
        }
        assert_eq!(return_sites(Arch::X86_64, &code, BASE), vec![0x17]);
    }

    #[test]
    fn large_frame_prologue_picks_push_rbp() {
        let code = asm()
            .b(&[0x4c, 0x8d, 0xa4, 0x24, 0xc8, 0xfe, 0xff, 0xff]) // lea r12,[rsp-0x138]
            .b(&[0x4d, 0x3b, 0x66, 0x10]) // cmp r12,[r14+0x10]
            .jbe32("more")
            .b(PUSH_RBP)
            .b(MOV_RBP_RSP)
            .b(&[0x48, 0x81, 0xec, 0x30, 0x01, 0x00, 0x00]) // sub rsp,0x130
            .b(RET)
            .trampoline()
            .build();
        let s = site(&code, true);
        assert_eq!((s.offset, s.kind), (0x12, SiteKind::Emulated));
        assert_eq!(s.instruction, "push rbp");
    }

    #[test]
    fn mov_after_the_check_falls_back_to_the_jbe() {
        // A frameless function: after the check it overwrites RAX, and has no push.
        let code = asm()
            .b(CMP_RSP_G)
            .jbe32("more")
            .b(MOV_RAX_MEM)
            .b(PUSH_RBP) // only reachable after the argument is gone
            .b(RET)
            .trampoline()
            .build();
        let s = site(&code, true);
        assert_eq!((s.offset, s.kind), (4, SiteKind::Emulated));
        assert_eq!(s.instruction, format!("jbe {:#x}", BASE + 0x10));
        assert!(s.reason.contains("fires twice"), "{}", s.reason);
        assert!(s.reason.contains("mov rax,[rax+0x10]"), "{}", s.reason);
        // Without arguments to read, the push after the mov is fine.
        let s = site(&code, false);
        assert_eq!((s.offset, s.kind), (0xe, SiteKind::Emulated));

        // With nothing emulated after the check at all, the jbe either way.
        let code = asm()
            .b(CMP_RSP_G)
            .jbe32("more")
            .b(MOV_RAX_MEM)
            .b(RET)
            .trampoline()
            .build();
        for needs_args in [true, false] {
            let s = site(&code, needs_args);
            assert_eq!((s.offset, s.kind), (4, SiteKind::Emulated));
        }
    }

    #[test]
    fn stack_check_recognised_by_its_trampoline_alone() {
        // cmp with another register layout: only the trampoline identifies the branch.
        let code = asm()
            .b(&[0x48, 0x3b, 0x60, 0x10]) // cmp rsp,[rax+0x10]
            .jbe32("more")
            .b(PUSH_RBP)
            .b(RET)
            .trampoline()
            .build();
        let s = site(&code, true);
        assert_eq!((s.offset, s.instruction.as_str()), (0xa, "push rbp"));
    }

    #[test]
    fn no_stack_check() {
        // Leaf: mov rax,[rsp+8]; ret -> nothing emulated.
        let code = asm().b(&[0x48, 0x8b, 0x44, 0x24, 0x08]).b(RET).build();
        let s = site(&code, true);
        assert_eq!((s.offset, s.kind), (0, SiteKind::SingleStepped));
        assert_eq!(s.instruction, "mov rax,[rsp+0x8]");
        assert!(s.reason.contains("single-stepped"), "{}", s.reason);

        // NOSPLIT with a frame: push rbp first.
        let code = asm().b(PUSH_RBP).b(MOV_RBP_RSP).b(RET).build();
        let s = site(&code, true);
        assert_eq!((s.offset, s.kind), (0, SiteKind::Emulated));
        assert!(s.reason.contains("at the entry"), "{}", s.reason);

        // An argument register written before the push.
        let code = asm().b(&[0x48, 0x89, 0xc1]).b(PUSH_RBP).b(RET).build(); // mov rcx,rax
        let s = site(&code, true);
        assert_eq!((s.offset, s.kind), (0, SiteKind::SingleStepped));
        assert!(s.reason.contains("mov rcx,rax"), "{}", s.reason);
        let s = site(&code, false);
        assert_eq!((s.offset, s.kind), (3, SiteKind::Emulated));

        // Writing R14 (g) also counts; writing RDX does not (not an argument register).
        let code = asm().b(&[0x4d, 0x31, 0xf6]).b(PUSH_RBP).b(RET).build(); // xor r14,r14
        assert_eq!(site(&code, true).offset, 0);
        let code = asm().b(&[0x31, 0xd2]).b(PUSH_RBP).b(RET).build(); // xor edx,edx
        assert_eq!(site(&code, true).offset, 2);
        // Sub-registers: writing cl is writing rcx.
        let code = asm().b(&[0xb1, 0x01]).b(PUSH_RBP).b(RET).build(); // mov cl,1
        assert_eq!(site(&code, true).offset, 0);
        // Float argument registers too.
        let code = asm().b(&[0x0f, 0x57, 0xc0]).b(PUSH_RBP).b(RET).build(); // xorps xmm0,xmm0
        assert_eq!(site(&code, true).offset, 0);
    }

    #[test]
    fn loop_targets_are_not_sites() {
        // mov rcx,[rax]; loop: nop; dec rcx; jne loop; ret  -> the nop is a loop head.
        let code = asm()
            .b(&[0x48, 0x8b, 0x08])
            .label("loop")
            .b(&[0x90])
            .b(&[0x48, 0xff, 0xc9])
            .jne8("loop")
            .b(RET)
            .build();
        let s = site(&code, false);
        assert_eq!((s.offset, s.kind), (0, SiteKind::SingleStepped));
        assert!(s.reason.contains("branch target"), "{}", s.reason);
        // The same nop before the loop head is fine.
        let code = asm()
            .b(&[0x48, 0x8b, 0x08])
            .b(&[0x90])
            .label("loop")
            .b(&[0x48, 0xff, 0xc9])
            .jne8("loop")
            .b(RET)
            .build();
        let s = site(&code, false);
        assert_eq!((s.offset, s.kind), (3, SiteKind::Emulated));
    }

    #[test]
    fn kernel_emulation_table() {
        let one = |bytes: &[u8]| {
            let insns = decode_all(bytes, BASE);
            assert_eq!(insns.len(), 1, "{bytes:x?}");
            emulated(&insns[0], bytes).is_some()
        };
        assert!(one(&[0x55])); // push rbp
        assert!(one(&[0x41, 0x55])); // push r13
        assert!(!one(&[0x48, 0x50])); // rex.w push rax: only 41 is accepted
        assert!(!one(&[0x66, 0x50])); // push ax
        assert!(one(&[0x74, 0x00])); // je rel8
        assert!(one(&[0x0f, 0x86, 0, 0, 0, 0])); // jbe rel32
        assert!(!one(&[0x66, 0x0f, 0x86, 0, 0])); // jbe rel16
        assert!(one(&[0xe8, 0, 0, 0, 0])); // call rel32
        assert!(one(&[0xe9, 0, 0, 0, 0])); // jmp rel32
        assert!(one(&[0xeb, 0])); // jmp rel8
        assert!(one(&[0x90])); // nop
        assert!(one(&[0x66, 0x90])); // xchg ax,ax
        assert!(one(&[0x0f, 0x1f, 0x44, 0x00, 0x00])); // nop5
        assert!(!one(&[0xc3])); // ret
        assert!(!one(&[0x49, 0x3b, 0x66, 0x10])); // cmp
        assert!(!one(&[0xff, 0xd0])); // call rax
        assert!(!one(&[0x48, 0x89, 0xe5])); // mov
    }

    #[test]
    fn garbage_and_arm64_do_not_panic() {
        assert_eq!(site(&[], true).kind, SiteKind::SingleStepped);
        assert!(return_sites(Arch::X86_64, &[], BASE).is_empty());
        let mut x = 0x1234_5678_9abc_def1u64;
        for _ in 0..200 {
            let code: Vec<u8> = (0..64)
                .map(|_| {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    x as u8
                })
                .collect();
            let s = site(&code, true);
            assert!((s.offset as usize) < code.len().max(1));
            let _ = return_sites(Arch::X86_64, &code, BASE);
            let _ = entry_site(Arch::Aarch64, &code, BASE, true);
        }
        // str x30, [sp,#-32]! alone: single-stepped at the entry (see sites_arm64 for more).
        let s = entry_site(Arch::Aarch64, &[0xfe, 0x0f, 0x1e, 0xf8], BASE, true);
        assert_eq!((s.offset, s.kind), (0, SiteKind::SingleStepped));
        assert!(s.reason.contains("single-stepped"), "{}", s.reason);
        let code = [[0x1f, 0x20, 0x03, 0xd5], [0xc0, 0x03, 0x5f, 0xd6]].concat(); // nop; ret
        assert_eq!(return_sites(Arch::Aarch64, &code, BASE), vec![4]);
    }
}
