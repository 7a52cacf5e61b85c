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
    /// Selects the pattern's leading literal bytes (up to 8, before any `*`) in a
    /// little-endian word: a path whose first 8 bytes differ there can't match, and the kernel
    /// skips the rule without walking it.
    pub prefix_mask: u64,
    /// Sample rules (stage 1): a new trace matching this rule first is sampled when the low 8
    /// bytes of its id, big-endian, are below this (`u64::MAX`: always). See [`sampled`].
    pub threshold: u64,
}

/// The sampling decision for a new trace: the same math as `tracer-user`'s `RatioSampler`
/// (`threshold = ratio × 2^64`, saturating; `u64::MAX` exactly when ratio >= 1).
#[inline(always)]
pub fn sampled(threshold: u64, trace_id: &[u8; 16]) -> bool {
    let mut low = [0u8; 8];
    low.copy_from_slice(&trace_id[8..]);
    threshold == u64::MAX || u64::from_be_bytes(low) < threshold
}

impl Default for KernelRule {
    fn default() -> Self {
        KernelRule {
            len: 0,
            drop: 0,
            stage: 0,
            _pad: [0; 2],
            pattern: [0; PATTERN_LEN],
            prefix_mask: 0,
            threshold: 0,
        }
    }
}

impl KernelRule {
    /// `prefix_mask` for `pattern`.
    pub fn prefix_mask_of(pattern: &[u8]) -> u64 {
        let literal = pattern.iter().take(8).take_while(|&&c| c != b'*').count();
        if literal >= 8 {
            u64::MAX
        } else {
            (1u64 << (8 * literal)) - 1
        }
    }

    /// Whether a path starting with these 8 bytes (little-endian) may match.
    pub fn may_match(&self, first8: u64) -> bool {
        let mut p = [0u8; 8];
        p.copy_from_slice(&self.pattern[..8]);
        (u64::from_le_bytes(p) ^ first8) & self.prefix_mask == 0
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
    /// Sampling threshold of a new trace no sample rule matches (the default ratio).
    pub default_threshold: u64,
    pub rules: [KernelRule; MAX_KERNEL_RULES],
}

#[cfg(feature = "user")]
unsafe impl aya::Pod for KernelRules {}
