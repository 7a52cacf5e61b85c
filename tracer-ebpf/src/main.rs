//! kraken-tracer's kernel programs. One object; every program is a thin `#[uprobe]` entry
//! point forwarding to a `try_` function.
#![no_std]
#![no_main]
// `atomic_xadd` for the socket counters: the bpf target lacks CAS, so core's atomics have no
// fetch_add. The build already runs with RUSTC_BOOTSTRAP=1 (-Z build-std).
#![feature(core_intrinsics)]
#![allow(internal_features)]

mod goabi;
mod gomap;
mod gostr;
mod maps;
mod probes;
mod propagation;
mod rules;

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    // The verifier rejects any program that could reach here; it is never executed.
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 4] = *b"GPL\0";
