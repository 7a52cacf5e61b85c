//! Path rules as the kernel holds them (the `RULES` map): requests the rules never trace are
//! dropped before any event is written. Built by `tracer-user`'s `rules` module.

/// Bytes of a path glob.
pub const PATTERN_LEN: usize = 64;
/// Rules the kernel holds.
pub const MAX_KERNEL_RULES: usize = 16;

/// One glob and what a match decides.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KernelRule {
    pub len: u32,
    /// 1: a match drops the request; 0: a match lets it through (this stage).
    pub drop: u8,
    /// 0: include/exclude filters; 1: sample rules (first match per stage).
    pub stage: u8,
    pub _pad: [u8; 2],
    pub pattern: [u8; PATTERN_LEN],
}

impl Default for KernelRule {
    fn default() -> Self {
        KernelRule {
            len: 0,
            drop: 0,
            stage: 0,
            _pad: [0; 2],
            pattern: [0; PATTERN_LEN],
        }
    }
}

/// Every rule, in order, grouped by stage. `count == 0` means no filtering at all.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct KernelRules {
    pub count: u32,
    /// Per stage: drop when no rule of the stage matches.
    pub default_drop: [u8; 2],
    pub _pad: [u8; 2],
    pub rules: [KernelRule; MAX_KERNEL_RULES],
}

#[cfg(feature = "user")]
unsafe impl aya::Pod for KernelRules {}
