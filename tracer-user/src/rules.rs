//! Path rules: sampling ratios (`--sample GLOB=RATIO`) and filters (`--include-path`,
//! `--exclude-path`), matched against a request's path as sent (escaped, without the query).
//!
//! Glob syntax, chosen so the kernel can match it in one pass without backtracking:
//! - `*` matches any run of characters except `/` (one path segment or part of one); it must be
//!   the last character or be followed by `/`;
//! - `**` at the very end matches the rest of the path, `/` included;
//! - everything else matches itself; a pattern starts with `/` and is at most
//!   [`PATTERN_LEN`] bytes.
//!
//! Rules are tried in order and the first match wins. Requests whose decision is "never trace"
//! (excluded, not included, or a rule with ratio 0) are dropped in the kernel: they produce no
//! event at all ([`KernelRules`]).

use std::{fmt, str::FromStr};

use tracer_common::rules::{KernelRule, KernelRules, MAX_KERNEL_RULES, PATTERN_LEN};

/// A path glob (see the module documentation).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PathGlob(String);

impl PathGlob {
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Whether `path` (escaped, as sent; anything from `?` on is ignored) matches.
    pub fn matches(&self, path: &str) -> bool {
        glob_match(self.0.as_bytes(), path.as_bytes())
    }
}

impl FromStr for PathGlob {
    type Err = String;

    fn from_str(s: &str) -> Result<PathGlob, String> {
        let s = s.trim();
        if !s.starts_with('/') {
            return Err(format!("path glob {s:?} must start with '/'"));
        }
        if s.len() > PATTERN_LEN {
            return Err(format!(
                "path glob {s:?} is longer than {PATTERN_LEN} bytes"
            ));
        }
        if s.contains('?') {
            return Err(format!(
                "path glob {s:?} contains '?': globs match the path only, never the query"
            ));
        }
        let b = s.as_bytes();
        let mut i = 0;
        while i < b.len() {
            if b[i] == b'*' {
                if b.get(i + 1) == Some(&b'*') {
                    if i + 2 != b.len() {
                        return Err(format!("path glob {s:?}: '**' may only end the pattern"));
                    }
                    break;
                }
                if !matches!(b.get(i + 1), None | Some(b'/')) {
                    return Err(format!(
                        "path glob {s:?}: '*' must end the pattern or be followed by '/'"
                    ));
                }
            }
            i += 1;
        }
        Ok(PathGlob(s.to_owned()))
    }
}

impl fmt::Display for PathGlob {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// One-pass glob match, the same algorithm the kernel runs (`tracer-ebpf/src/rules.rs`).
/// `?` in the text ends the path.
pub fn glob_match(pattern: &[u8], text: &[u8]) -> bool {
    let end = text.iter().position(|&c| c == b'?').unwrap_or(text.len());
    let text = &text[..end];
    let (mut i, mut j) = (0, 0);
    loop {
        let Some(&c) = pattern.get(i) else {
            return j == text.len();
        };
        if c == b'*' {
            if pattern.get(i + 1) == Some(&b'*') {
                return true;
            }
            match text.get(j) {
                Some(&t) if t != b'/' => j += 1,
                _ => i += 1,
            }
        } else if text.get(j) == Some(&c) {
            i += 1;
            j += 1;
        } else {
            return false;
        }
    }
}

/// `GLOB=RATIO`: requests whose path matches GLOB start traces kept with probability RATIO.
#[derive(Clone, Debug, PartialEq)]
pub struct SampleRule {
    pub glob: PathGlob,
    pub ratio: f64,
}

impl SampleRule {
    pub fn parse(s: &str) -> Result<SampleRule, String> {
        s.parse()
    }
}

impl FromStr for SampleRule {
    type Err = String;

    fn from_str(s: &str) -> Result<SampleRule, String> {
        let (glob, ratio) = s
            .rsplit_once('=')
            .ok_or_else(|| format!("expected GLOB=RATIO (e.g. /health=0), got {s:?}"))?;
        Ok(SampleRule {
            glob: glob.parse()?,
            ratio: crate::config::parse_ratio(ratio)?,
        })
    }
}

impl fmt::Display for SampleRule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}={}", self.glob, self.ratio)
    }
}

/// The design review's rules (§4.2), mapped onto Kraken's real routes. They come after the
/// user's `--sample` rules (the user's win) unless `--no-default-rules`.
pub fn default_rules() -> Vec<SampleRule> {
    [
        ("/health", 0.0),
        ("/readiness", 0.0),
        ("/announce", 0.05),
        ("/announce/**", 0.05),
        ("/namespace/*/blobs/**", 0.2),
        ("/blobs/**", 0.2),
    ]
    .into_iter()
    .map(|(g, ratio)| SampleRule {
        glob: PathGlob(g.to_owned()),
        ratio,
    })
    .collect()
}

/// What the rules decide for one request path.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Decision {
    /// Never traced (and dropped in the kernel).
    Drop,
    /// A new trace starting here is kept with this probability.
    Ratio(f64),
}

/// Every path rule in effect, in evaluation order.
#[derive(Clone, Debug, PartialEq)]
pub struct PathRules {
    pub exclude: Vec<PathGlob>,
    pub include: Vec<PathGlob>,
    pub sample: Vec<SampleRule>,
    pub default_ratio: f64,
}

impl PathRules {
    pub fn new(
        user_rules: &[SampleRule],
        with_defaults: bool,
        include: &[PathGlob],
        exclude: &[PathGlob],
        default_ratio: f64,
    ) -> PathRules {
        let mut sample = user_rules.to_vec();
        if with_defaults {
            sample.extend(default_rules());
        }
        PathRules {
            exclude: exclude.to_vec(),
            include: include.to_vec(),
            sample,
            default_ratio,
        }
    }

    /// Rules that trace everything at `ratio` (tests, and processes without rules).
    pub fn ratio_only(ratio: f64) -> PathRules {
        PathRules::new(&[], false, &[], &[], ratio)
    }

    /// Excludes, then includes, then the first matching sample rule (else the default ratio).
    ///
    /// `client`: for an outgoing request, only explicit drops apply (an exclude, or a
    /// matching rule with ratio 0): a call made inside a traced request must not vanish
    /// because its path isn't one of the paths this node serves.
    pub fn decide(&self, path: &str, client: bool) -> Decision {
        if self.exclude.iter().any(|g| g.matches(path)) {
            return Decision::Drop;
        }
        if !client && !self.include.is_empty() && !self.include.iter().any(|g| g.matches(path)) {
            return Decision::Drop;
        }
        let ratio = match self.sample.iter().find(|r| r.glob.matches(path)) {
            Some(r) => r.ratio,
            None if client => return Decision::Ratio(self.default_ratio),
            None => self.default_ratio,
        };
        if ratio <= 0.0 {
            Decision::Drop
        } else {
            Decision::Ratio(ratio)
        }
    }

    /// The kernel's share: the same drop decisions, as two first-match stages (filters, then
    /// sample rules reduced to drop/pass). Rules that can never change a stage's outcome are
    /// left out, so with no 0 % rules and no filters the kernel matches nothing at all.
    pub fn kernel(&self) -> Result<KernelRules, RulesError> {
        let mut out = KernelRules::default();
        let mut rules: Vec<KernelRule> = Vec::new();
        // Stage 0: excludes drop, includes pass, and with includes the default is drop.
        let mut stage0: Vec<(&PathGlob, bool)> = self.exclude.iter().map(|g| (g, true)).collect();
        let include_default_drop = !self.include.is_empty();
        stage0.extend(self.include.iter().map(|g| (g, false)));
        push_stage(&mut rules, 0, &stage0, include_default_drop);
        out.default_drop[0] = u8::from(include_default_drop);
        // Stage 1: sample rules; ratio 0 drops. Each carries its sampling threshold (the
        // kernel decides new traces, so the `traceparent` it sends says the same as user space).
        let default_drop = self.default_ratio <= 0.0;
        let default_threshold = threshold(self.default_ratio);
        // Rules after the last one that can change an outcome (a drop, or another threshold)
        // are left out: the default decides the same.
        if let Some(last) = self
            .sample
            .iter()
            .rposition(|r| r.ratio <= 0.0 || threshold(r.ratio) != default_threshold)
        {
            for r in &self.sample[..=last] {
                let mut k = kernel_rule(&r.glob, r.ratio <= 0.0, 1);
                k.threshold = threshold(r.ratio);
                rules.push(k);
            }
        }
        out.default_drop[1] = u8::from(default_drop);
        out.default_threshold = default_threshold;
        if rules.len() > MAX_KERNEL_RULES {
            return Err(RulesError::TooMany {
                needed: rules.len(),
                max: MAX_KERNEL_RULES,
            });
        }
        out.count = rules.len() as u32;
        for (slot, r) in out.rules.iter_mut().zip(rules) {
            *slot = r;
        }
        Ok(out)
    }
}

/// Appends one stage's rules, trimmed: after the last rule that can change an outcome (one
/// whose action differs from the stage default, or a drop, which matters to client requests
/// where defaults don't apply), nothing can.
fn push_stage(
    out: &mut Vec<KernelRule>,
    stage: u8,
    rules: &[(&PathGlob, bool)],
    default_drop: bool,
) {
    let Some(last) = rules
        .iter()
        .rposition(|(_, drop)| *drop != default_drop || *drop)
    else {
        return;
    };
    for (glob, drop) in &rules[..=last] {
        out.push(kernel_rule(glob, *drop, stage));
    }
}

fn kernel_rule(glob: &PathGlob, drop: bool, stage: u8) -> KernelRule {
    let mut r = KernelRule {
        len: glob.0.len() as u32,
        drop: u8::from(drop),
        stage,
        ..KernelRule::default()
    };
    r.pattern[..glob.0.len()].copy_from_slice(glob.0.as_bytes());
    r.prefix_mask = KernelRule::prefix_mask_of(glob.0.as_bytes());
    r
}

/// The kernel's sampling threshold for a ratio: the same number as `sample::RatioSampler`.
pub fn threshold(ratio: f64) -> u64 {
    crate::sample::RatioSampler::new(ratio).threshold()
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum RulesError {
    #[error(
        "--sample/--include-path/--exclude-path: the kernel filter holds {max} path rules, these need {needed}"
    )]
    TooMany { needed: usize, max: usize },
}

#[cfg(test)]
mod tests {
    use super::*;

    fn g(s: &str) -> PathGlob {
        s.parse().unwrap()
    }

    /// Reference matcher with backtracking, for cross-checking the one-pass one.
    fn reference(p: &[u8], t: &[u8]) -> bool {
        match p.first() {
            None => t.is_empty(),
            Some(b'*') if p.get(1) == Some(&b'*') => true,
            Some(b'*') => (0..=t.len())
                .take_while(|&k| k == 0 || t[k - 1] != b'/')
                .any(|k| reference(&p[1..], &t[k..])),
            Some(&c) => t.first() == Some(&c) && reference(&p[1..], &t[1..]),
        }
    }

    #[test]
    fn glob_semantics() {
        assert!(g("/health").matches("/health"));
        assert!(g("/health").matches("/health?verbose=1"));
        assert!(!g("/health").matches("/healthz"));
        assert!(!g("/health").matches("/health/x"));
        assert!(g("/announce/*").matches("/announce/abc"));
        assert!(g("/announce/*").matches("/announce/"));
        assert!(!g("/announce/*").matches("/announce/a/b"));
        assert!(g("/namespace/*/blobs/*").matches("/namespace/library%2Fubuntu/blobs/sha256:00"));
        assert!(!g("/namespace/*/blobs/*").matches("/namespace/a/b/blobs/x"));
        assert!(g("/blobs/**").matches("/blobs/sha256:1/metainfo"));
        assert!(!g("/blobs/**").matches("/blob"));
        assert!(g("/**").matches("/anything/at/all"));
        assert!(g("/v2/*").matches("/v2/"));
    }

    #[test]
    fn bad_globs_are_refused_with_the_reason() {
        assert!(
            "health"
                .parse::<PathGlob>()
                .unwrap_err()
                .contains("start with '/'")
        );
        assert!("/a**/b".parse::<PathGlob>().unwrap_err().contains("'**'"));
        assert!(
            "/a*b"
                .parse::<PathGlob>()
                .unwrap_err()
                .contains("followed by '/'")
        );
        assert!("/a?b".parse::<PathGlob>().unwrap_err().contains("query"));
        let long = format!("/{}", "a".repeat(PATTERN_LEN));
        assert!(long.parse::<PathGlob>().unwrap_err().contains("longer"));
        assert!(SampleRule::parse("/x").unwrap_err().contains("GLOB=RATIO"));
        assert!(SampleRule::parse("/x=1.5").unwrap_err().contains("outside"));
        assert_eq!(
            SampleRule::parse("/a/*=0.25").unwrap(),
            SampleRule {
                glob: g("/a/*"),
                ratio: 0.25
            }
        );
    }

    #[test]
    fn one_pass_matcher_agrees_with_backtracking() {
        let patterns = [
            "/a/*",
            "/*/b",
            "/a/*/c/**",
            "/*",
            "/**",
            "/a",
            "/*/*",
            "/ab/*/",
        ];
        let alphabet = [b'a', b'b', b'c', b'/', b'x'];
        let mut x: u64 = 0x2545_f491_4f6c_dd1d;
        for _ in 0..20_000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let len = (x % 9) as usize;
            let mut t = vec![b'/'];
            let mut y = x;
            for _ in 0..len {
                t.push(alphabet[(y % 5) as usize]);
                y /= 5;
            }
            for p in patterns {
                assert_eq!(
                    glob_match(p.as_bytes(), &t),
                    reference(p.as_bytes(), &t),
                    "{p} vs {}",
                    String::from_utf8_lossy(&t)
                );
            }
        }
    }

    #[test]
    fn first_match_wins_and_filters_come_first() {
        let rules = PathRules::new(
            &[SampleRule::parse("/health=0.5").unwrap()],
            true,
            &[],
            &[g("/debug/**")],
            0.1,
        );
        assert_eq!(rules.decide_server("/health"), Decision::Ratio(0.5));
        assert_eq!(rules.decide_server("/readiness"), Decision::Drop);
        assert_eq!(rules.decide_server("/announce/x"), Decision::Ratio(0.05));
        assert_eq!(
            rules.decide_server("/namespace/n/blobs/d"),
            Decision::Ratio(0.2)
        );
        assert_eq!(rules.decide_server("/other"), Decision::Ratio(0.1));
        assert_eq!(rules.decide_server("/debug/pprof"), Decision::Drop);
        let only = PathRules::new(&[], false, &[g("/hello")], &[], 1.0);
        assert_eq!(only.decide_server("/hello"), Decision::Ratio(1.0));
        assert_eq!(only.decide_server("/deep"), Decision::Drop);
        // Outgoing calls: includes and the default don't drop them, explicit rules do.
        assert_eq!(only.decide("/deep", true), Decision::Ratio(1.0));
        assert_eq!(rules.decide("/readiness", true), Decision::Drop);
        assert_eq!(rules.decide("/debug/x", true), Decision::Drop);
    }

    impl PathRules {
        fn decide_server(&self, path: &str) -> Decision {
            self.decide(path, false)
        }
    }

    fn kernel_decide(k: &KernelRules, path: &str, client: bool) -> bool {
        // Mirrors tracer-ebpf/src/rules.rs: returns true when dropped. Bytes past the path's
        // end are garbage in the kernel: fill them with something no pattern holds.
        let mut first = [0xffu8; 8];
        for (d, s) in first.iter_mut().zip(path.as_bytes()) {
            *d = *s;
        }
        let first8 = u64::from_le_bytes(first);
        let rules = &k.rules[..k.count as usize];
        for r in rules {
            // The prefix filter never rejects a rule that matches.
            if glob_match(&r.pattern[..r.len as usize], path.as_bytes()) {
                assert!(
                    r.may_match(first8),
                    "{path} vs {:?}",
                    &r.pattern[..r.len as usize]
                );
            }
        }
        (0..2u8).any(|stage| {
            rules
                .iter()
                .filter(|r| r.stage == stage && !(client && stage == 0 && r.drop == 0))
                .find(|r| glob_match(&r.pattern[..r.len as usize], path.as_bytes()))
                .map_or(!client && k.default_drop[stage as usize] != 0, |r| {
                    r.drop != 0
                })
        })
    }

    #[test]
    fn kernel_rules_drop_exactly_what_user_space_drops() {
        let sets = [
            PathRules::new(&[], true, &[], &[], 0.1),
            PathRules::new(
                &[
                    SampleRule::parse("/health=1").unwrap(),
                    SampleRule::parse("/x/*=0").unwrap(),
                ],
                true,
                &[g("/x/**"), g("/health")],
                &[g("/x/secret")],
                0.0,
            ),
            PathRules::ratio_only(0.0),
            PathRules::ratio_only(1.0),
            PathRules::new(
                &[
                    SampleRule::parse("/a=0.5").unwrap(),
                    SampleRule::parse("/b=0").unwrap(),
                ],
                false,
                &[],
                &[],
                0.0,
            ),
        ];
        let paths = [
            "/health",
            "/readiness",
            "/x/secret",
            "/x/a",
            "/x/a/b",
            "/announce/1",
            "/other",
            "/health?x=1",
            "/a",
            "/b",
        ];
        for rules in &sets {
            let k = rules.kernel().unwrap();
            for p in paths {
                for client in [false, true] {
                    assert_eq!(
                        kernel_decide(&k, p, client),
                        rules.decide(p, client) == Decision::Drop,
                        "{p} (client: {client}) with {rules:?}"
                    );
                }
            }
        }
        // Defaults only: every default rule reaches the kernel (two drop, four carry a
        // sampling threshold other than the default's).
        assert_eq!(
            PathRules::new(&[], true, &[], &[], 0.1)
                .kernel()
                .unwrap()
                .count,
            6
        );
        assert_eq!(PathRules::ratio_only(0.5).kernel().unwrap().count, 0);
        // A rule with the default's own ratio can't change a decision: left out.
        let same = PathRules::new(
            &[SampleRule::parse("/same=0.5").unwrap()],
            false,
            &[],
            &[],
            0.5,
        );
        assert_eq!(same.kernel().unwrap().count, 0);
    }

    /// Mirrors tracer-ebpf/src/rules.rs `threshold` and propagation.rs: the first matching
    /// sample rule's threshold, else the default's, compared with the trace id's low 8 bytes.
    fn kernel_sampled(k: &KernelRules, path: &str, trace_id: &[u8; 16]) -> bool {
        let threshold = k.rules[..k.count as usize]
            .iter()
            .filter(|r| r.stage == 1)
            .find(|r| glob_match(&r.pattern[..r.len as usize], path.as_bytes()))
            .map_or(k.default_threshold, |r| r.threshold);
        tracer_common::rules::sampled(threshold, trace_id)
    }

    #[test]
    fn kernel_sampling_decides_exactly_like_user_space() {
        let sets = [
            PathRules::new(&[], true, &[], &[], 0.1),
            PathRules::new(&[], true, &[], &[], 1.0),
            PathRules::new(&[], true, &[], &[], 0.0),
            PathRules::ratio_only(0.5),
            PathRules::ratio_only(0.999_999_999),
            PathRules::new(
                &[
                    SampleRule::parse("/a/*=0.25").unwrap(),
                    SampleRule::parse("/a/**=0.75").unwrap(),
                    SampleRule::parse("/b=1").unwrap(),
                    SampleRule::parse("/c/**=0").unwrap(),
                ],
                true,
                &[],
                &[g("/x/**")],
                0.3,
            ),
        ];
        let paths = [
            "/a/1",
            "/a/1/2",
            "/b",
            "/c/d",
            "/health",
            "/announce/x",
            "/other",
            "/namespace/n/blobs/sha256:00",
            "/blobs/x",
            "/x/y",
        ];
        // splitmix64: many (path, trace id) pairs, with edge ids mixed in.
        let mut x: u64 = 0x1234_5678_9abc_def0;
        let mut next = || {
            x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
            let mut z = x;
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            z ^ (z >> 31)
        };
        let mut compared = 0;
        for rules in &sets {
            let k = rules.kernel().unwrap();
            let sampler = crate::sample::Sampler::new(rules.clone());
            for i in 0..20_000u64 {
                let mut id = [0u8; 16];
                id[..8].copy_from_slice(&next().to_be_bytes());
                let low = match i {
                    0 => 0,
                    1 => u64::MAX,
                    2 => threshold(0.25),
                    3 => threshold(0.25) - 1,
                    _ => next(),
                };
                id[8..].copy_from_slice(&low.to_be_bytes());
                let path = paths[(i as usize) % paths.len()];
                for client in [false, true] {
                    if rules.decide(path, client) == Decision::Drop {
                        continue; // never reaches a sampling decision
                    }
                    assert_eq!(
                        kernel_sampled(&k, path, &id),
                        sampler.keep_root(Some(path), client, &id),
                        "{path} client={client} id={id:02x?} rules {rules:?}"
                    );
                    compared += 1;
                }
            }
        }
        assert!(compared > 100_000, "{compared}");
    }

    #[test]
    fn too_many_kernel_rules_is_an_error() {
        let many: Vec<PathGlob> = (0..=MAX_KERNEL_RULES)
            .map(|i| g(&format!("/p{i}")))
            .collect();
        let err = PathRules::new(&[], false, &[], &many, 0.1)
            .kernel()
            .unwrap_err();
        assert!(err.to_string().contains("path rules"), "{err}");
    }
}
