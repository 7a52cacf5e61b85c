//! Head sampling by trace id (W3C style): the decision is a function of the trace id, so
//! every tracer that sees the same trace id decides the same way. A trace's root decides, with
//! the ratio of the first path rule matching its request ([`crate::rules`]); every other span
//! follows its parent, including a remote parent named by an incoming `traceparent`.

use crate::rules::{Decision, PathRules};

/// The sampling policy: path rules, then a ratio by trace id.
#[derive(Clone, Debug)]
pub struct Sampler {
    rules: PathRules,
}

impl Sampler {
    pub fn new(rules: PathRules) -> Sampler {
        Sampler { rules }
    }

    /// Every trace kept with probability `ratio`, no path rules.
    pub fn ratio(ratio: f64) -> Sampler {
        Sampler::new(PathRules::ratio_only(ratio))
    }

    pub fn rules(&self) -> &PathRules {
        &self.rules
    }

    /// Whether a trace starting with a request for `path` (None: not an HTTP request) is kept.
    pub fn keep_root(&self, path: Option<&str>, client: bool, trace_id: &[u8; 16]) -> bool {
        let ratio = match path.map(|p| self.rules.decide(p, client)) {
            None => self.rules.default_ratio,
            Some(Decision::Drop) => return false,
            Some(Decision::Ratio(r)) => r,
        };
        RatioSampler::new(ratio).keep(trace_id)
    }
}

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

    /// `ratio × 2^64` (saturating): what the kernel compares with (`u64::MAX` means always).
    pub fn threshold(&self) -> u64 {
        if self.always {
            u64::MAX
        } else {
            self.threshold
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
    fn roots_use_the_first_matching_rule() {
        let rules = PathRules::new(
            &[crate::rules::SampleRule::parse("/always=1").unwrap()],
            true,
            &[],
            &[],
            0.0,
        );
        let s = Sampler::new(rules);
        let t = id(u64::MAX - 1);
        assert!(s.keep_root(Some("/always"), false, &t));
        assert!(!s.keep_root(Some("/health"), false, &t));
        assert!(
            !s.keep_root(Some("/other"), false, &id(0)),
            "default ratio 0"
        );
        assert!(!s.keep_root(None, false, &id(0)));
        assert!(
            s.keep_root(Some("/announce/x"), true, &id(1)),
            "5 % keeps the lowest ids"
        );
        assert!(!s.keep_root(Some("/announce/x"), true, &id(u64::MAX / 10)));
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
