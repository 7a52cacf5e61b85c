//! Go's internal register ABI (ABIInternal) as seen from a uprobe's `pt_regs`.

use aya_ebpf::programs::ProbeContext;

/// Integer argument `n` (0-based) of a Go ABIInternal function, at its entry.
/// amd64: RAX, RBX, RCX, RDI, RSI, R8, R9, R10, R11. arm64: X0–X15.
#[cfg(bpf_target_arch = "x86_64")]
#[inline(always)]
pub fn arg(ctx: &ProbeContext, n: usize) -> u64 {
    let r = unsafe { &*ctx.regs };
    match n {
        0 => r.rax,
        1 => r.rbx,
        2 => r.rcx,
        3 => r.rdi,
        4 => r.rsi,
        5 => r.r8,
        6 => r.r9,
        7 => r.r10,
        8 => r.r11,
        _ => 0,
    }
}

/// The current goroutine's `g` pointer (R14 on amd64).
#[cfg(bpf_target_arch = "x86_64")]
#[inline(always)]
pub fn goroutine(ctx: &ProbeContext) -> u64 {
    unsafe { (*ctx.regs).r14 }
}

#[cfg(bpf_target_arch = "aarch64")]
#[inline(always)]
pub fn arg(ctx: &ProbeContext, n: usize) -> u64 {
    let r = unsafe { &*ctx.regs };
    if n < 16 { r.regs[n] } else { 0 }
}

/// The current goroutine's `g` pointer (X28 on arm64).
#[cfg(bpf_target_arch = "aarch64")]
#[inline(always)]
pub fn goroutine(ctx: &ProbeContext) -> u64 {
    unsafe { (*ctx.regs).regs[28] }
}
