//! The per-connection limit on client frames: a token bucket.

use tokio::time::Instant;

/// A token bucket refilled at `rate` per second with a burst of `rate`.
/// Small on purpose: one per connection.
#[derive(Debug)]
pub struct RateLimiter {
    rate: f32,
    tokens: f32,
    last: Instant,
}

impl RateLimiter {
    pub fn new(per_second: u32) -> Self {
        let rate = per_second.max(1) as f32;
        Self {
            rate,
            tokens: rate,
            last: Instant::now(),
        }
    }

    /// Takes one token; false when the client is over its rate.
    pub fn allow(&mut self) -> bool {
        let now = Instant::now();
        let elapsed = now.duration_since(self.last).as_secs_f32();
        self.last = now;
        self.tokens = (self.tokens + elapsed * self.rate).min(self.rate);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test(start_paused = true)]
    async fn a_burst_of_rate_passes_and_one_more_does_not() {
        let mut limiter = RateLimiter::new(10);
        for _ in 0..10 {
            assert!(limiter.allow());
        }
        assert!(!limiter.allow());
    }

    #[tokio::test(start_paused = true)]
    async fn tokens_come_back_with_time_up_to_the_burst() {
        let mut limiter = RateLimiter::new(10);
        while limiter.allow() {}
        tokio::time::advance(Duration::from_millis(100)).await;
        assert!(limiter.allow(), "one token after 1/rate seconds");
        assert!(!limiter.allow());
        tokio::time::advance(Duration::from_secs(60)).await;
        let allowed = (0..100).filter(|_| limiter.allow()).count();
        assert_eq!(allowed, 10, "refill is capped at the burst");
    }

    #[tokio::test(start_paused = true)]
    async fn a_steady_client_at_the_rate_is_never_refused() {
        let mut limiter = RateLimiter::new(100);
        for _ in 0..1000 {
            tokio::time::advance(Duration::from_millis(10)).await;
            assert!(limiter.allow());
        }
    }
}
