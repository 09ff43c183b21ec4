//! Exponential backoff with jitter.
//!
//! The n-th consecutive failure waits `d = min(max, initial × 2ⁿ)`, drawn uniformly
//! from `[d/2, d]` ("equal jitter"): replicas that failed together spread out instead
//! of retrying in lockstep, and the wait never collapses to nothing, as it can with
//! full jitter.

use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};
use std::time::Duration;

#[derive(Debug, Clone)]
pub(crate) struct Backoff {
    initial: Duration,
    max: Duration,
    failures: u32,
}

impl Backoff {
    pub(crate) fn new(initial: Duration, max: Duration) -> Self {
        Backoff {
            // A zero initial delay would retry in a hot loop.
            initial: initial.max(Duration::from_millis(1)),
            max: max.max(initial),
            failures: 0,
        }
    }

    /// The wait before the next attempt.
    pub(crate) fn next_delay(&mut self) -> Duration {
        let ceiling = self.ceiling();
        self.failures = self.failures.saturating_add(1);
        let half = ceiling / 2;
        half + half.mul_f64(random_fraction())
    }

    /// Counts a failure whose wait the receiver chose (`Retry-After`).
    pub(crate) fn skip(&mut self) {
        self.failures = self.failures.saturating_add(1);
    }

    /// After a success.
    pub(crate) fn reset(&mut self) {
        self.failures = 0;
    }

    fn ceiling(&self) -> Duration {
        let factor = 1u32 << self.failures.min(20);
        self.initial.saturating_mul(factor).min(self.max)
    }
}

/// A number in [0, 1). `RandomState` is seeded from the OS once per thread and stepped
/// on every construction: random enough to spread retries, without a dependency.
fn random_fraction() -> f64 {
    let mut hasher = RandomState::new().build_hasher();
    hasher.write_u64(0);
    (hasher.finish() >> 11) as f64 / (1u64 << 53) as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doubles_up_to_the_max_within_jitter_bounds() {
        let mut b = Backoff::new(Duration::from_millis(100), Duration::from_millis(1000));
        for ceiling_ms in [100u64, 200, 400, 800, 1000, 1000] {
            let d = b.next_delay();
            let ceiling = Duration::from_millis(ceiling_ms);
            assert!(
                d >= ceiling / 2 && d <= ceiling,
                "{d:?} outside [{:?}, {ceiling:?}]",
                ceiling / 2
            );
        }
        b.reset();
        assert!(b.next_delay() <= Duration::from_millis(100));
    }

    #[test]
    fn jitter_varies() {
        let mut seen = std::collections::HashSet::new();
        for _ in 0..20 {
            let mut b = Backoff::new(Duration::from_secs(1), Duration::from_secs(1));
            seen.insert(b.next_delay());
        }
        assert!(seen.len() > 1, "20 draws gave one value: no jitter");
    }

    #[test]
    fn retry_after_counts_as_a_failure() {
        let mut b = Backoff::new(Duration::from_millis(100), Duration::from_secs(10));
        b.skip();
        assert!(b.next_delay() >= Duration::from_millis(100));
    }
}
