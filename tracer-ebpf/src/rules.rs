//! The path rules in the kernel: a request whose path the rules never trace is dropped here,
//! before any event is written, and its end probe is silenced through `SUPPRESSED`.
//! Same algorithm and semantics as `tracer-user/src/rules.rs` (`glob_match`, `drops_*`).

use aya_ebpf::{cty::c_void, helpers::generated::bpf_loop, macros::map, maps::PerCpuArray};
use tracer_common::{
    event::GoStr,
    maps::{COUNTER_FILTERED_ENDS, SuppressKey},
    rules::{KernelRule, KernelRules, MAX_KERNEL_RULES, PATTERN_LEN},
};

use crate::maps::{self, RULES};

/// The rule table, or `None` when it drops nothing (the common, cheapest case).
#[inline(always)]
pub fn active() -> Option<&'static KernelRules> {
    let r = maps::RULES.get(0)?;
    if r.count == 0 && r.default_drop == [0, 0] {
        None
    } else {
        Some(r)
    }
}

/// What the rules decide for one request.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Pass,
    Drop,
    /// No sample rule matched and the default ratio is 0: a request continuing a trace (with a
    /// `traceparent`) still goes through, since its caller decided (parent-based sampling).
    DropUnlessContinued,
}

/// Where one match is in its walk over the rules (a per-CPU map, not registers: the verifier
/// then checks one step of the walk once, instead of every path through 16 × 256 steps).
#[repr(C)]
pub struct MatchState {
    rule: u32,
    i: u32,
    j: u32,
    tlen: u32,
    truncated: u32,
    client: u32,
    decided: [u32; 2],
    verdict: u32,
    /// 1 + index of the first sample rule (stage 1) that matched, 0 when none did.
    sample_rule: u32,
    /// Bit r: rule r's literal prefix matches the path's first bytes (else it can't match).
    candidates: u32,
    text: [u8; TEXT_LEN],
}

/// Path bytes matched (server targets are longer; the rest can't change a verdict often).
const TEXT_LEN: usize = 192;
/// Most steps of a whole walk: every rule, each pattern byte and text byte once, plus one
/// step per rule to conclude.
const MAX_STEPS: u32 = (MAX_KERNEL_RULES * (PATTERN_LEN + TEXT_LEN + 2)) as u32;

const VERDICT_PASS: u32 = 0;
const VERDICT_DROP: u32 = 1;

#[map]
static MATCH_STATE: PerCpuArray<MatchState> = PerCpuArray::with_max_entries(1, 0);

/// The sampling threshold of a new trace whose first request is this one: the first
/// matching sample rule's (found by the last `verdict` walk on this CPU), else the default.
#[inline(always)]
pub fn threshold(rules: &KernelRules) -> u64 {
    let Some(st) = MATCH_STATE.get_ptr(0) else {
        return rules.default_threshold;
    };
    let idx = unsafe { (*st).sample_rule } as usize;
    if idx == 0 {
        return rules.default_threshold;
    }
    match rules.rules.get(idx - 1) {
        Some(r) => r.threshold,
        None => rules.default_threshold,
    }
}

/// The default threshold, for when no rule is active (no walk ran).
#[inline(always)]
pub fn default_threshold() -> u64 {
    match maps::RULES.get(0) {
        Some(r) => r.default_threshold,
        None => u64::MAX,
    }
}

/// What the rules decide for this request. `client`: include rules and stage defaults don't
/// apply (a call made inside a traced request must not vanish because its path isn't one
/// the node serves), only explicit drops do.
#[inline(always)]
pub fn verdict<const N: usize>(rules: &KernelRules, path: &GoStr<N>, client: bool) -> Verdict {
    let Some(st) = MATCH_STATE.get_ptr_mut(0) else {
        return Verdict::Pass;
    };
    let st = unsafe { &mut *st };
    st.decided = [0, 0];
    st.verdict = VERDICT_PASS;
    st.sample_rule = 0;
    let mut first = [0u8; 8];
    first.copy_from_slice(&path.bytes[..8]);
    let first8 = u64::from_le_bytes(first);
    let count = rules.count as usize;
    // Accumulated in map memory, not a register: the verifier doesn't track map values, so
    // the 16 branches don't multiply into 2^16 states.
    let cand: *mut u32 = &mut st.candidates;
    unsafe { core::ptr::write_volatile(cand, 0) };
    for (idx, rule) in rules.rules.iter().enumerate() {
        if idx >= count {
            break;
        }
        if rule.may_match(first8) {
            // Volatile: LLVM must not keep the accumulator in a register.
            unsafe { core::ptr::write_volatile(cand, core::ptr::read_volatile(cand) | 1 << idx) };
        }
    }
    // Most requests match no rule's literal prefix: no walk at all.
    if st.candidates != 0 {
        st.rule = 0;
        st.i = 0;
        st.j = 0;
        st.tlen = (path.len as usize).min(N).min(TEXT_LEN) as u32;
        st.truncated = u32::from(path.len as usize > N.min(TEXT_LEN));
        st.client = u32::from(client);
        let n = N.min(TEXT_LEN);
        st.text[..n].copy_from_slice(&path.bytes[..n]);
        unsafe {
            bpf_loop(MAX_STEPS, step as *mut c_void, core::ptr::null_mut(), 0);
        }
    }
    if st.verdict == VERDICT_DROP {
        Verdict::Drop
    } else if client {
        Verdict::Pass
    } else if st.decided[0] == 0 && rules.default_drop[0] != 0 {
        Verdict::Drop
    } else if st.decided[1] == 0 && rules.default_drop[1] != 0 {
        Verdict::DropUnlessContinued
    } else {
        Verdict::Pass
    }
}

/// One step of the walk: one byte of one glob (see `tracer-user/src/rules.rs`, `glob_match`:
/// the same one-pass algorithm). Returns 1 to stop the loop.
extern "C" fn step(_index: u64, _ctx: *mut c_void) -> i64 {
    let (Some(st), Some(rules)) = (MATCH_STATE.get_ptr_mut(0), RULES.get(0)) else {
        return 1;
    };
    let st = unsafe { &mut *st };
    let r = st.rule as usize;
    // Unclamped, so `get(r)` below keeps its constant bound (see `glob_step`).
    if r >= rules.count as usize {
        return 1;
    }
    let Some(rule) = rules.rules.get(r) else {
        return 1;
    };
    let stage = usize::from(rule.stage & 1);
    if (st.candidates >> (r & 31)) & 1 == 0
        || st.decided[stage] != 0
        || (st.client != 0 && rule.drop == 0 && stage == 0)
    {
        next_rule(st);
        return 0;
    }
    match glob_step(st, rule) {
        None => 0,
        Some(false) => {
            next_rule(st);
            0
        }
        Some(true) if rule.drop != 0 => {
            st.verdict = VERDICT_DROP;
            1
        }
        Some(true) => {
            st.decided[stage] = 1;
            if stage == 1 {
                st.sample_rule = st.rule + 1;
            }
            next_rule(st);
            0
        }
    }
}

#[inline(always)]
fn next_rule(st: &mut MatchState) {
    st.rule += 1;
    st.i = 0;
    st.j = 0;
}

/// Advances the match of `rule` by one byte: `Some(matched)` when it is decided.
#[inline(always)]
fn glob_step(st: &mut MatchState, rule: &KernelRule) -> Option<bool> {
    // Not clamped to PATTERN_LEN: a clamp lets LLVM drop the constant bounds checks of
    // `pattern.get(i)`, leaving only `i < plen`, a register-register bound that verifiers
    // before ~6.7 don't use ("unbounded memory access" on Debian's 6.1).
    let plen = rule.len as usize;
    let (i, j) = (st.i as usize, st.j as usize);
    let tlen = st.tlen as usize;
    let t = if j < tlen {
        st.text.get(j).copied().unwrap_or(b'?')
    } else {
        b'?'
    };
    let at_end = t == b'?' && (j < tlen || st.truncated == 0);
    if i >= plen {
        return Some(at_end);
    }
    let c = rule.pattern.get(i).copied().unwrap_or(0);
    if c == b'*' {
        if i + 1 < plen && rule.pattern.get(i + 1).copied() == Some(b'*') {
            return Some(true);
        }
        if t != b'/' && t != b'?' {
            st.j += 1;
        } else {
            st.i += 1;
        }
        None
    } else if t == c {
        st.i += 1;
        st.j += 1;
        None
    } else {
        Some(false)
    }
}

/// Remembers that the request running on this goroutine was dropped.
#[inline(always)]
pub fn suppress(tgid: u32, kind: u32, goid: u64) {
    let key = SuppressKey { tgid, kind, goid };
    let _ = maps::SUPPRESSED.insert(&key, &1, 0);
}

/// Whether the request ending on this goroutine was dropped (then forgets it, counted).
#[inline(always)]
pub fn take_suppressed(tgid: u32, kind: u32, goid: u64) -> bool {
    let key = SuppressKey { tgid, kind, goid };
    if maps::SUPPRESSED.get_ptr(&key).is_none() {
        return false;
    }
    let _ = maps::SUPPRESSED.remove(&key);
    maps::count(COUNTER_FILTERED_ENDS);
    true
}
