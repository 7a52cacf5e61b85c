//! Head sampling by trace id (W3C style): the decision is a function of the trace id, so
//! every tracer that sees the same trace id decides the same way.

/// Keeps a trace when the low 8 bytes of its id, as a big-endian number, fall below
/// `ratio × 2^64`.
#[derive(Clone, Copy, Debug)]
pub struct RatioSampler {
    threshold: u64,
    always: bool,
}

impl RatioSampler {
    pub fn new(ratio: f64) -> RatioSampler {
        let ratio = if ratio.is_nan() {
            0.0
        } else {
            ratio.clamp(0.0, 1.0)
        };
        RatioSampler {
            // The float-to-int `as` saturates, which is what is wanted at the top end.
            threshold: (ratio * 18_446_744_073_709_551_616.0) as u64,
            always: ratio >= 1.0,
        }
    }

    pub fn keep(&self, trace_id: &[u8; 16]) -> bool {
        if self.always {
            return true;
        }
        let mut low = [0u8; 8];
        low.copy_from_slice(&trace_id[8..]);
        u64::from_be_bytes(low) < self.threshold
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(n: u64) -> [u8; 16] {
        let mut t = [0u8; 16];
        t[8..].copy_from_slice(&n.to_be_bytes());
        t
    }

    #[test]
    fn edges() {
        assert!(RatioSampler::new(1.0).keep(&id(u64::MAX)));
        assert!(!RatioSampler::new(0.0).keep(&id(0)));
        let half = RatioSampler::new(0.5);
        assert!(half.keep(&id(u64::MAX / 2 - 1)));
        assert!(!half.keep(&id(u64::MAX / 2 + 2)));
        assert!(!RatioSampler::new(f64::NAN).keep(&id(0)));
    }

    #[test]
    fn ratio_holds_statistically() {
        let s = RatioSampler::new(0.1);
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        let n = 100_000;
        let kept = (0..n)
            .filter(|_| {
                // splitmix64
                x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
                let mut z = x;
                z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
                z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
                s.keep(&id(z ^ (z >> 31)))
            })
            .count();
        // 10 % of 100k: σ ≈ 95, allow 5σ.
        assert!((9_525..=10_475).contains(&kept), "kept {kept}");
    }
}
