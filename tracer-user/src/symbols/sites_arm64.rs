//! arm64 probe sites: the same choices as the x86 code in [`super::sites`], for A64 code.
//!
//! The arm64 kernel *simulates* a probed `b`, `bl`, `b.cond`, `cbz`/`cbnz`, `tbz`/`tbnz`, `br`,
//! `blr`, `ret` and `adr`/`adrp` in the breakpoint handler (cheap); it single-steps everything
//! else out of line (a second trap), and refuses literal loads, exclusive loads/stores and
//! most system instructions (see [`super::a64`]).
//!
//! A Go arm64 function starts with the stack check, `ldr x16, [x28,#16] ; cmp sp, x16 ;
//! b.ls morestack` (large frames: `sub x17, sp, #N ; cmp x17, x16`), then the frame set-up
//! (`str x30, [sp,#-N]!` or `stp x29, x30, [x20,#-8]`, neither simulated) and argument spills.
//! [`entry_site`] takes the first simulated instruction after the check that still sees every
//! argument register (often an `adrp` or a `cbz`), else the `b.ls` itself: simulated, but it
//! fires twice for a call whose stack must grow (morestack re-runs the function from its entry).
//! RET is simulated on arm64, unlike x86, so RET sites are cheap here.

use std::collections::HashSet;

use super::{
    a64::{self, COND_LS, Insn, RegBranch, Uprobe},
    sites::{ProbeSite, SiteKind},
};

/// How many instructions of the prologue are considered.
const MAX_PROLOGUE: usize = 16;
/// How far a morestack trampoline is followed to find its jump back to the entry (spills of
/// up to 16 argument registers, the call, the reloads).
const MAX_TRAMPOLINE: usize = 40;
/// How many instructions after a call's return address are considered for its return site.
const MAX_AFTER_CALL: usize = 4;

fn off(pc: u64, address: u64) -> u64 {
    pc.wrapping_sub(address)
}

/// See [`super::sites::entry_site`]; `code` is A64.
pub fn entry_site(code: &[u8], address: u64, needs_args: bool) -> ProbeSite {
    let insns = a64::decode_all(code, address);
    let end = address.saturating_add(code.len() as u64);
    // Offsets (> 0) that a branch of the function jumps to: a site there could fire repeatedly.
    let targets: HashSet<u64> = insns
        .iter()
        .filter_map(|(_, i)| i.local_branch_target())
        .filter(|&t| t > address && t < end)
        .map(|t| t - address)
        .collect();

    let mut stack_check: Option<(u64, Insn)> = None;
    let mut stop = String::from("the prologue has no simulated instruction");
    let mut arg_writer: Option<(u64, Insn)> = None;

    for (k, &(pc, ins)) in insns.iter().take(MAX_PROLOGUE).enumerate() {
        let o = off(pc, address);
        if o > 0 && targets.contains(&o) {
            stop = format!("+{o:#x} is a branch target (a probe there could fire repeatedly)");
            break;
        }
        if let Some((wpc, w)) = arg_writer {
            stop = format!(
                "`{w}` at +{:#x} overwrites an argument register",
                off(wpc, address)
            );
            break;
        }
        let is_stack_check = is_stack_check_branch(&insns, k, address);
        if let Uprobe::Simulated(what) = ins.uprobe() {
            if is_stack_check {
                stack_check.get_or_insert((pc, ins));
            } else {
                let place = if stack_check.is_some() {
                    "after the stack check"
                } else if o == 0 {
                    "at the entry"
                } else if needs_args {
                    "before any argument register is written"
                } else {
                    "in the straight-line prologue"
                };
                return ProbeSite {
                    offset: o,
                    kind: SiteKind::Emulated,
                    instruction: ins.to_string(),
                    reason: format!("{ins} {place}: simulated ({what}), fires once per call"),
                };
            }
        }
        if !is_stack_check && ins.changes_flow() {
            stop = format!("`{ins}` at +{o:#x} leaves the straight-line prologue");
            break;
        }
        if needs_args && ins.writes_arg_or_g() {
            arg_writer = Some((pc, ins));
        }
    }
    if insns.len() > MAX_PROLOGUE && stop == "the prologue has no simulated instruction" {
        stop = format!("no simulated instruction in the first {MAX_PROLOGUE} instructions");
    }

    if let Some((pc, sc)) = stack_check {
        return ProbeSite {
            offset: off(pc, address),
            kind: SiteKind::Emulated,
            instruction: sc.to_string(),
            reason: format!(
                "{sc} (the stack-check branch): simulated, but fires twice for a call whose \
                 stack must grow (morestack re-runs the function); nothing later qualifies: {stop}"
            ),
        };
    }
    let first = insns.first().map(|&(_, i)| i);
    let how = match first.map(|i| i.uprobe()) {
        Some(Uprobe::Rejected) => "refused by the kernel's arm64 uprobe decoder",
        _ => "single-stepped (slow)",
    };
    ProbeSite {
        offset: 0,
        kind: SiteKind::SingleStepped,
        instruction: first.map(|i| i.to_string()).unwrap_or_default(),
        reason: format!(
            "{} at the entry: {how}, since {stop}",
            first.map_or_else(|| "no instruction".to_string(), |i| i.to_string())
        ),
    }
}

/// Whether instruction `k` is the stack-check branch: a `b.ls` right after a compare, with
/// Go's guard load `ldr xN, [x28,#16]` before them; or a conditional branch whose target calls
/// a function and then branches back to the entry (the morestack trampoline).
fn is_stack_check_branch(insns: &[(u64, Insn)], k: usize, address: u64) -> bool {
    let Some(&(_, Insn::BranchCond { cond, target })) = insns.get(k) else {
        return false;
    };
    let after_guard_cmp = cond == COND_LS
        && k.checked_sub(1)
            .and_then(|p| insns.get(p))
            .is_some_and(|(_, p)| p.is_compare())
        && insns
            .iter()
            .take(k.saturating_sub(1))
            .any(|(_, i)| i.is_guard_load());
    if after_guard_cmp {
        return true;
    }
    let Ok(start) = insns.binary_search_by_key(&target, |&(pc, _)| pc) else {
        return false;
    };
    let mut called = false;
    for (_, t) in insns.iter().skip(start).take(MAX_TRAMPOLINE) {
        if t.is_call() {
            called = true;
        } else if let Insn::Branch {
            target,
            link: false,
        } = *t
        {
            return called && target == address;
        } else if t.changes_flow() {
            return false;
        }
    }
    false
}

/// See [`super::sites::after_call_sites`]; `code` is A64. The site is the first simulated
/// instruction from the return address on (reached only by falling through from the return,
/// before the callee's results in X0–X15 are overwritten), else the return address itself.
pub fn after_call_sites(code: &[u8], address: u64, callee: u64) -> Vec<ProbeSite> {
    let insns = a64::decode_all(code, address);
    let end = address.saturating_add(code.len() as u64);
    // Branch targets reached other than by a call's return; a `b` right after a call is that
    // call's return joining this one (results in the same registers), so it does not count.
    let targets: HashSet<u64> = insns
        .iter()
        .enumerate()
        .filter(|&(j, (_, i))| {
            let after_call = j
                .checked_sub(1)
                .and_then(|p| insns.get(p))
                .is_some_and(|(_, p)| p.is_call());
            !(matches!(i, Insn::Branch { link: false, .. }) && after_call)
        })
        .filter_map(|(_, (_, i))| i.local_branch_target())
        .filter(|&t| t > address && t < end)
        .collect();
    let mut sites = Vec::new();
    for (k, &(call_pc, call)) in insns.iter().enumerate() {
        if call
            != (Insn::Branch {
                target: callee,
                link: true,
            })
        {
            continue;
        }
        let mut chosen = None;
        let mut stop = String::from("no simulated instruction follows the call");
        for &(pc, ins) in insns.iter().skip(k + 1).take(MAX_AFTER_CALL) {
            if targets.contains(&pc) {
                stop = format!(
                    "{:#x} is a branch target (reachable without returning)",
                    off(pc, address)
                );
                break;
            }
            if let Uprobe::Simulated(what) = ins.uprobe() {
                chosen = Some((pc, ins, what));
                break;
            }
            if ins.writes_arg_or_g() {
                stop = format!("`{ins}` overwrites a result register");
                break;
            }
        }
        sites.push(match chosen {
            Some((pc, ins, what)) => ProbeSite {
                offset: off(pc, address),
                kind: SiteKind::Emulated,
                instruction: ins.to_string(),
                reason: format!(
                    "{ins} after the call at +{:#x} returns: simulated ({what}), results still in registers",
                    off(call_pc, address)
                ),
            },
            None => {
                let ret = insns.get(k + 1).map(|&(_, i)| i);
                let how = match ret.map(|i| i.uprobe()) {
                    Some(Uprobe::Rejected) => "refused by the kernel's arm64 uprobe decoder",
                    _ => "single-stepped (slow)",
                };
                ProbeSite {
                    offset: off(call_pc.wrapping_add(4), address),
                    kind: SiteKind::SingleStepped,
                    instruction: ret.map(|i| i.to_string()).unwrap_or_default(),
                    reason: format!("the return address: {how}, since {stop}"),
                }
            }
        });
    }
    sites
}

/// Offsets (from the function's entry) of every `ret` in `code` (A64; simulated by the kernel).
pub fn return_sites(code: &[u8], address: u64) -> Vec<u64> {
    a64::decode_all(code, address)
        .iter()
        .filter(|(_, i)| {
            matches!(
                i,
                Insn::BranchReg {
                    kind: RegBranch::Ret,
                    ..
                }
            )
        })
        .map(|&(pc, _)| off(pc, address))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const BASE: u64 = 0x21_eaf0;

    fn code(words: &[u32]) -> Vec<u8> {
        words.iter().flat_map(|w| w.to_le_bytes()).collect()
    }

    /// `b.<cond>` from word index `from` to word index `to`.
    fn bcond(cond: u32, from: usize, to: usize) -> u32 {
        let imm = (to as i64 - from as i64) as u32 & 0x7_ffff;
        0x5400_0000 | (imm << 5) | cond
    }

    /// `b` / `bl` from word index `from` to byte address `to` (code at BASE).
    fn b(link: bool, from: usize, to: u64) -> u32 {
        let imm = ((to as i64 - (BASE as i64 + 4 * from as i64)) / 4) as u32 & 0x03ff_ffff;
        (if link { 0x9400_0000 } else { 0x1400_0000 }) | imm
    }

    const GUARD: u32 = 0xf940_0b90; // ldr x16, [x28,#16]
    const CMP_SP: u32 = 0xeb30_63ff; // cmp sp, x16
    const STR_LR: u32 = 0xf81d_0ffe; // str x30, [sp,#-48]!
    const STUR_FP: u32 = 0xf81f_83fd; // stur x29, [sp,#-8]
    const SUB_FP: u32 = 0xd100_23fd; // sub x29, sp, #8
    const SPILL_X1: u32 = 0xf900_23e1; // str x1, [sp,#64]
    const LDP_X4: u32 = 0xa941_1404; // ldp x4, x5, [x0,#16]
    const ADRP_X3: u32 = 0xd000_00a3; // adrp x3, ...
    const MOV_X3_LR: u32 = 0xaa1e_03e3; // mov x3, x30
    const RET: u32 = a64::RET_X30;
    const MORESTACK: u64 = 0x8_0000;

    /// The fixture's ServeHTTP shape: check, frame, spills, then `body` at word 8, `ret`, and
    /// the morestack trampoline (mov x3, x30 ; bl morestack ; b entry).
    fn function(body: &[u32]) -> Vec<u8> {
        let mut w = vec![GUARD, CMP_SP, 0, STR_LR, STUR_FP, SUB_FP, SPILL_X1];
        w.extend_from_slice(body);
        w.push(RET);
        let tramp = w.len();
        w[2] = bcond(COND_LS.into(), 2, tramp);
        w.push(MOV_X3_LR);
        w.push(b(true, tramp + 1, MORESTACK));
        w.push(b(false, tramp + 2, BASE));
        code(&w)
    }

    #[test]
    fn stack_check_branch_when_an_argument_is_overwritten_first() {
        // ldp x4, x5 overwrites an argument register before the adrp.
        let c = function(&[LDP_X4, ADRP_X3]);
        let s = entry_site(&c, BASE, true);
        assert_eq!((s.offset, s.kind), (8, SiteKind::Emulated), "{s:?}");
        assert!(s.instruction.starts_with("b.ls "), "{s:?}");
        assert!(s.reason.contains("fires twice"), "{}", s.reason);
        assert!(
            s.reason.contains("ldp") || s.reason.contains(".inst 0xa9411404"),
            "{}",
            s.reason
        );
        // Without arguments to read, the adrp after it is fine.
        let s = entry_site(&c, BASE, false);
        assert_eq!((s.offset, s.kind), (0x20, SiteKind::Emulated), "{s:?}");
        assert!(s.reason.contains("after the stack check"), "{}", s.reason);
    }

    #[test]
    fn simulated_instruction_after_the_check() {
        let c = function(&[ADRP_X3, LDP_X4]);
        let s = entry_site(&c, BASE, true);
        assert_eq!((s.offset, s.kind), (0x1c, SiteKind::Emulated), "{s:?}");
        assert!(s.instruction.starts_with("adrp x3, "), "{s:?}");
        assert!(s.reason.contains("fires once"), "{}", s.reason);
    }

    #[test]
    fn stack_check_recognised_by_its_trampoline_alone() {
        // No guard load (another register layout): only the trampoline identifies the b.ls.
        let mut c = function(&[LDP_X4]);
        c[..4].copy_from_slice(&0xf940_0810u32.to_le_bytes()); // ldr x16, [x0,#16]
        let s = entry_site(&c, BASE, true);
        assert_eq!(s.offset, 8, "{s:?}");
        assert!(s.reason.contains("stack-check"), "{}", s.reason);
        // A b.ls that is not a stack check (its target returns) is a simulated site itself.
        let w = [0xf940_0810, CMP_SP, bcond(COND_LS.into(), 2, 3), RET];
        let s = entry_site(&code(&w), BASE, true);
        assert_eq!(s.offset, 8);
        assert!(s.reason.contains("fires once"), "{}", s.reason);
    }

    #[test]
    fn no_stack_check() {
        // A frameless leaf: add x0, x0, x1 ; ret -> the ret is the first simulated
        // instruction, but the add overwrites an argument first.
        let c = code(&[0x8b01_0000, RET]);
        let s = entry_site(&c, BASE, true);
        assert_eq!((s.offset, s.kind), (0, SiteKind::SingleStepped), "{s:?}");
        assert!(s.reason.contains("overwrites"), "{}", s.reason);
        assert_eq!(entry_site(&c, BASE, false).offset, 4);
        // Starting with a cbz: the entry is simulated.
        let c = code(&[0xb400_0040, RET, RET]);
        let s = entry_site(&c, BASE, true);
        assert_eq!((s.offset, s.kind), (0, SiteKind::Emulated));
        assert!(s.reason.contains("at the entry"), "{}", s.reason);
        // A loop head is not a site: mov x3, x0 ; L: adr x27 ; subs x3.. ; b.ne L.
        let c = code(&[0xaa00_03e3, 0x1000_005b, 0xf100_0463, bcond(1, 3, 1), RET]);
        let s = entry_site(&c, BASE, false);
        assert_eq!((s.offset, s.kind), (0, SiteKind::SingleStepped), "{s:?}");
        assert!(s.reason.contains("branch target"), "{}", s.reason);
        // An entry the kernel refuses (ldxr) is reported as such.
        let s = entry_site(&code(&[0x885f_7c63, RET]), BASE, true);
        assert!(s.reason.contains("refused"), "{}", s.reason);
    }

    #[test]
    fn after_call_sites_mirror_x86() {
        let callee = 0x30_0000;
        // bl callee ; cbz x1 -> the cbz at the return address.
        let c = code(&[b(true, 0, callee), 0xb400_05e1, RET]);
        let s = after_call_sites(&c, BASE, callee);
        assert_eq!(s.len(), 1);
        assert_eq!(
            (s[0].offset, s[0].kind),
            (4, SiteKind::Emulated),
            "{:?}",
            s[0]
        );
        assert!(s[0].instruction.starts_with("cbz x1, "), "{:?}", s[0]);
        // bl ; str x1, [sp,#64] ; nop ; cbz -> passes the store and the nop.
        let c = code(&[b(true, 0, callee), SPILL_X1, 0xd503_201f, 0xb400_05e1]);
        let s = after_call_sites(&c, BASE, callee);
        assert_eq!(
            (s[0].offset, s[0].kind),
            (0xc, SiteKind::Emulated),
            "{:?}",
            s[0]
        );
        // bl ; mov x3, x30 (a result register) ; cbz -> the return address, single-stepped.
        let c = code(&[b(true, 0, callee), MOV_X3_LR, 0xb400_05e1]);
        let s = after_call_sites(&c, BASE, callee);
        assert_eq!(
            (s[0].offset, s[0].kind),
            (4, SiteKind::SingleStepped),
            "{:?}",
            s[0]
        );
        assert!(s[0].reason.contains("overwrites"), "{}", s[0].reason);
        // Another callee: nothing.
        assert!(after_call_sites(&c, BASE, callee + 4).is_empty());
        // A join: blr x2 ; b J ; bl callee ; J: str ; cbz -> allowed (both are returns).
        let w = [
            0xd63f_0040,
            b(false, 1, BASE + 12),
            b(true, 2, callee),
            SPILL_X1,
            0xb400_05e1,
        ];
        let s = after_call_sites(&code(&w), BASE, callee);
        assert_eq!(
            (s[0].offset, s[0].kind),
            (0x10, SiteKind::Emulated),
            "{:?}",
            s[0]
        );
        // The same jump after a plain instruction: the join is refused.
        let mut w2 = w;
        w2[0] = 0xd503_201f;
        let s = after_call_sites(&code(&w2), BASE, callee);
        assert_eq!(
            (s[0].offset, s[0].kind),
            (0xc, SiteKind::SingleStepped),
            "{:?}",
            s[0]
        );
        assert!(s[0].reason.contains("branch target"), "{}", s[0].reason);
    }

    #[test]
    fn returns_and_garbage() {
        let c = function(&[LDP_X4]);
        assert_eq!(return_sites(&c, BASE), vec![0x20]);
        assert_eq!(return_sites(&code(&[0xd65f_0020]), BASE), vec![0], "ret x1");
        assert!(
            return_sites(&code(&[0xd65f_0bff]), BASE).is_empty(),
            "retaa"
        );
        assert_eq!(entry_site(&[], BASE, true).kind, SiteKind::SingleStepped);
        let mut x = 0x1234_5678_9abc_def1u64;
        for _ in 0..300 {
            let c: Vec<u8> = (0..96)
                .map(|_| {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    x as u8
                })
                .collect();
            for address in [BASE, u64::MAX - 8] {
                let s = entry_site(&c, address, true);
                assert!(
                    s.offset < c.len() as u64 && s.offset.is_multiple_of(4),
                    "{s:?}"
                );
                for s in after_call_sites(&c, address, BASE) {
                    assert!(s.offset < c.len() as u64, "{s:?}");
                }
                let _ = return_sites(&c, address);
            }
        }
    }
}

/// Site discovery on the real arm64 Go fixture (`GOARCH=arm64`), on any host.
#[cfg(test)]
mod fixture_tests {
    use tracer_common::probe::{PROBES, Site};

    use super::*;
    use crate::symbols::{Arch, Binary, testutil::httpserver_arm64};

    fn word(code: &[u8], off: u64) -> u32 {
        let at = usize::try_from(off).unwrap();
        u32::from_le_bytes(code[at..at + 4].try_into().unwrap())
    }

    #[test]
    fn every_probe_gets_a_simulated_site() {
        let (normal, stripped) = httpserver_arm64();
        for p in [normal, stripped] {
            let bin = Binary::open(p).unwrap();
            assert_eq!(bin.arch(), Arch::Aarch64);
            let mut checked = 0;
            for spec in PROBES.iter().filter(|s| !s.kraken_only) {
                let placed = crate::tracer::place(&bin, spec)
                    .unwrap_or_else(|e| panic!("{}: {e}", spec.go_symbol));
                assert!(!placed.is_empty(), "{}", spec.go_symbol);
                let f = bin.lookup(spec.go_symbol).unwrap();
                let code = bin.code(&f).unwrap();
                for pp in placed {
                    let site = &pp.site;
                    let name = format!("{}+{:#x} ({})", spec.go_symbol, site.offset, site.reason);
                    assert!(
                        site.offset < f.size && site.offset.is_multiple_of(4),
                        "{name}"
                    );
                    // Every site of the fixture is one the kernel simulates.
                    assert_eq!(site.kind, SiteKind::Emulated, "{name}");
                    let at = a64::decode(word(code, site.offset), f.address + site.offset);
                    assert!(matches!(at.uprobe(), Uprobe::Simulated(_)), "{name}");
                    assert_eq!(site.instruction, at.to_string(), "{name}");
                    let before: Vec<Insn> = (0..site.offset / 4)
                        .map(|k| a64::decode(word(code, 4 * k), f.address + 4 * k))
                        .collect();
                    match spec.site {
                        Site::Entry { reads_args } => {
                            // The stack-check b.ls (after the guard load and the compare), or
                            // a later simulated instruction on the straight line after it that
                            // still sees every argument register.
                            let is_bls = matches!(at, Insn::BranchCond { cond: COND_LS, .. });
                            if is_bls {
                                assert!(before.iter().any(Insn::is_guard_load), "{name}");
                                assert!(before.last().is_some_and(Insn::is_compare), "{name}");
                            } else {
                                assert!(site.reason.contains("after the stack check"), "{name}");
                                let checks = before
                                    .iter()
                                    .filter(|i| matches!(i, Insn::BranchCond { cond: COND_LS, .. }))
                                    .count();
                                assert_eq!(checks, 1, "{name}");
                                for i in before
                                    .iter()
                                    .filter(|i| !matches!(i, Insn::BranchCond { .. }))
                                {
                                    assert!(!i.changes_flow(), "{name}: {i}");
                                    assert!(!(reads_args && i.writes_arg_or_g()), "{name}: {i}");
                                }
                            }
                        }
                        Site::AfterCall { callee } => {
                            // Up to 4 instructions after a `bl callee`, with no result
                            // register overwritten in between.
                            let target = bin.lookup(callee).unwrap().address;
                            let call = (1..=MAX_AFTER_CALL)
                                .filter_map(|j| before.len().checked_sub(j))
                                .find(|&k| before[k] == Insn::Branch { target, link: true })
                                .unwrap_or_else(|| panic!("{name}: no bl {callee} before"));
                            for i in &before[call + 1..] {
                                assert!(!i.writes_arg_or_g(), "{name}: {i}");
                            }
                        }
                    }
                    checked += 1;
                }
            }
            assert!(checked >= 4, "only {checked} sites");
        }
    }

    #[test]
    fn arch_comes_from_the_elf_and_a_mismatch_is_one_clear_line() {
        let (arm, _) = httpserver_arm64();
        let (host, _) = crate::symbols::testutil::httpserver();
        assert_eq!(Binary::open(arm).unwrap().arch(), Arch::Aarch64);
        assert_eq!(
            Arch::HOST.map(|a| a.to_string()).as_deref(),
            Some(std::env::consts::ARCH)
        );
        assert_eq!(Binary::open(host).unwrap().arch(), Arch::HOST.unwrap());
        let e = crate::tracer::TracerError::ArchMismatch {
            pid: 123,
            binary: Arch::Aarch64,
        };
        assert_eq!(
            e.to_string(),
            format!(
                "pid 123 runs an aarch64 binary; this tracer is built for {}",
                std::env::consts::ARCH
            )
        );
    }

    #[test]
    fn known_sites_of_the_fixture() {
        let (normal, _) = httpserver_arm64();
        let bin = Binary::open(normal).unwrap();
        // ServeHTTP: ldr x16, [x28,#16] ; cmp sp, x16 ; b.ls — an ldp overwrites x4 before any
        // later simulated instruction, so the b.ls it is.
        let f = bin.lookup("net/http.serverHandler.ServeHTTP").unwrap();
        let s = bin.entry_site(&f, true).unwrap();
        assert_eq!((s.offset, s.kind), (8, SiteKind::Emulated), "{s:?}");
        assert!(s.instruction.starts_with("b.ls "), "{s:?}");
        let code = bin.code(&f).unwrap();
        assert_eq!(word(code, 0), 0xf940_0b90, "ldr x16, [x28,#16]");
        assert_eq!(word(code, 8) & 0xff00_001f, 0x5400_0009, "b.ls");
        // Every RET site is `ret`.
        for name in ["net/http.serverHandler.ServeHTTP", "main.deep", "main.main"] {
            let f = bin.lookup(name).unwrap();
            let rets = bin.return_sites(&f).unwrap();
            assert!(!rets.is_empty(), "{name}");
            let code = bin.code(&f).unwrap();
            for r in rets {
                assert_eq!(word(code, r), a64::RET_X30, "{name}+{r:#x}");
            }
        }
        // The client's end probe: right after `bl (*persistConn).roundTrip`.
        let f = bin.lookup("net/http.(*Transport).roundTrip").unwrap();
        let sites = bin
            .after_call_sites(&f, "net/http.(*persistConn).roundTrip")
            .unwrap();
        assert!(!sites.is_empty());
        let code = bin.code(&f).unwrap();
        let callee = bin.lookup("net/http.(*persistConn).roundTrip").unwrap();
        for s in sites {
            let call = a64::decode(word(code, s.offset - 4), f.address + s.offset - 4);
            assert_eq!(
                call,
                Insn::Branch {
                    target: callee.address,
                    link: true
                },
                "{s:?}"
            );
        }
    }
}
