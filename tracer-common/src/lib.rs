//! Types shared by the kernel programs (`tracer-ebpf`) and user space (`tracer-user`).
//!
//! Everything here is `#[repr(C)]`, has no implicit padding, and contains no `bool`,
//! so it can be copied in and out of BPF maps as plain bytes.
#![no_std]

pub mod event;
pub mod maps;
pub mod offsets;
pub mod probe;
pub mod rules;
pub mod socket;
