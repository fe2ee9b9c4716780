//! The one retry backoff: exponential, capped, jittered.

use std::time::Duration;

/// Delays between reconnection attempts: base·2^attempt up to `max`, each
/// drawn from [ceiling/2, ceiling] so that replicas which lost a peer together
/// do not come back in lockstep, yet never retry sooner than half the ceiling.
#[derive(Debug, Clone)]
pub struct Backoff {
    base: Duration,
    max: Duration,
    attempt: u32,
}

impl Backoff {
    pub fn new(base: Duration, max: Duration) -> Self {
        Self {
            base,
            max,
            attempt: 0,
        }
    }

    /// The ceiling of the next delay.
    pub fn ceiling(&self) -> Duration {
        // 2^16 times any sensible base is past any sensible max.
        let factor = 1u32 << self.attempt.min(16);
        self.base.saturating_mul(factor).min(self.max)
    }

    /// The next delay; each call moves one attempt further.
    pub fn next_delay(&mut self) -> Duration {
        let ceiling = self.ceiling();
        self.attempt = self.attempt.saturating_add(1);
        let half = ceiling / 2;
        half + half.mul_f64(rand::random::<f64>())
    }

    /// After an attempt that worked: start again from `base`.
    pub fn reset(&mut self) {
        self.attempt = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doubles_up_to_the_cap_with_jitter_below_the_ceiling() {
        let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(5));
        let mut ceilings = Vec::new();
        for _ in 0..10 {
            let ceiling = backoff.ceiling();
            let delay = backoff.next_delay();
            assert!(
                delay >= ceiling / 2 && delay <= ceiling,
                "{delay:?} vs {ceiling:?}"
            );
            ceilings.push(ceiling.as_millis());
        }
        assert_eq!(
            ceilings,
            [100, 200, 400, 800, 1600, 3200, 5000, 5000, 5000, 5000]
        );
        backoff.reset();
        assert_eq!(backoff.ceiling(), Duration::from_millis(100));
    }

    #[test]
    fn many_attempts_neither_overflow_nor_pass_the_cap() {
        let mut backoff = Backoff::new(Duration::from_secs(3600), Duration::from_secs(7200));
        for _ in 0..100 {
            assert!(backoff.next_delay() <= Duration::from_secs(7200));
        }
    }
}
