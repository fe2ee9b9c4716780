//! `PER_IP_RATE`: requests per second per client address to `/token/ws` and
//! `/ws` together, with a burst of twice that. One token bucket per address,
//! in shards so concurrent handshakes rarely share a lock; memory is bounded
//! however many addresses an attacker uses.

use std::collections::HashMap;
use std::hash::{BuildHasher, RandomState};
use std::net::{IpAddr, Ipv6Addr};
use std::sync::Mutex;

use tokio::time::Instant;

const SHARDS: usize = 16;
/// Addresses tracked per shard (64k in all, a few MiB at most). When a shard
/// is full, buckets that refilled are forgotten (a new bucket is full
/// anyway); only under a flood of distinct addresses are live ones evicted,
/// an eighth of the shard at a time.
const SHARD_CAPACITY: usize = 4096;

#[derive(Clone, Copy)]
struct Bucket {
    tokens: f64,
    last: Instant,
}

/// The per-address limiter. `None` in the state when `PER_IP_RATE=0`.
pub struct IpRateLimiter {
    rate: f64,
    burst: f64,
    hasher: RandomState,
    shards: [Mutex<HashMap<IpAddr, Bucket>>; SHARDS],
}

impl IpRateLimiter {
    /// `per_second` > 0 requests per second, burst `2 × per_second`.
    pub fn new(per_second: u32) -> Self {
        let rate = f64::from(per_second.max(1));
        Self {
            rate,
            burst: 2.0 * rate,
            hasher: RandomState::new(),
            shards: std::array::from_fn(|_| Mutex::new(HashMap::new())),
        }
    }

    /// Takes a token for `client`; `Err(seconds)` to wait before one is back.
    pub fn check(&self, client: IpAddr) -> Result<(), u64> {
        self.check_at(client, Instant::now())
    }

    fn check_at(&self, client: IpAddr, now: Instant) -> Result<(), u64> {
        let key = bucket_key(client);
        let shard = &self.shards[self.hasher.hash_one(key) as usize % SHARDS];
        // A poisoned shard only means a panic elsewhere mid-update of plain
        // numbers: the data is still usable.
        let mut buckets = shard
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if !buckets.contains_key(&key) && buckets.len() >= SHARD_CAPACITY {
            self.forget_refilled(&mut buckets, now);
        }
        let bucket = buckets.entry(key).or_insert(Bucket {
            tokens: self.burst,
            last: now,
        });
        let elapsed = now.saturating_duration_since(bucket.last).as_secs_f64();
        bucket.tokens = (bucket.tokens + elapsed * self.rate).min(self.burst);
        bucket.last = now;
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            Ok(())
        } else {
            let wait = (1.0 - bucket.tokens) / self.rate;
            // Whole seconds (Retry-After's unit), never 0: "retry now" would
            // be refused again.
            Err((wait.ceil() as u64).max(1))
        }
    }

    fn forget_refilled(&self, buckets: &mut HashMap<IpAddr, Bucket>, now: Instant) {
        let refill_s = self.burst / self.rate;
        buckets.retain(|_, bucket| {
            now.saturating_duration_since(bucket.last).as_secs_f64() < refill_s
        });
        // Still full: a flood of distinct addresses. Make room for many at
        // once, so the scan above is paid once per eighth of a shard, not per
        // new address.
        let excess = buckets.len().saturating_sub(SHARD_CAPACITY * 7 / 8);
        if excess > 0 {
            let victims: Vec<IpAddr> = buckets.keys().take(excess).copied().collect();
            for victim in victims {
                buckets.remove(&victim);
            }
        }
    }

    #[cfg(test)]
    fn tracked(&self) -> usize {
        self.shards
            .iter()
            .map(|shard| shard.lock().expect("not poisoned").len())
            .sum()
    }
}

/// IPv6 clients are limited per /64: one host usually holds a whole /64, and
/// would otherwise get a fresh bucket per address.
fn bucket_key(client: IpAddr) -> IpAddr {
    match client.to_canonical() {
        IpAddr::V6(v6) => IpAddr::V6(Ipv6Addr::from_bits(v6.to_bits() & (u128::MAX << 64))),
        v4 => v4,
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn ip(value: &str) -> IpAddr {
        value.parse().expect("test address")
    }

    #[test]
    fn a_burst_of_twice_the_rate_then_a_retry_after() {
        let limiter = IpRateLimiter::new(5);
        let now = Instant::now();
        for _ in 0..10 {
            assert!(limiter.check_at(ip("192.0.2.1"), now).is_ok());
        }
        assert_eq!(limiter.check_at(ip("192.0.2.1"), now), Err(1));
        assert!(
            limiter.check_at(ip("192.0.2.2"), now).is_ok(),
            "another address"
        );
        let later = now + Duration::from_millis(200);
        assert!(
            limiter.check_at(ip("192.0.2.1"), later).is_ok(),
            "one back after 1/rate"
        );
        assert!(limiter.check_at(ip("192.0.2.1"), later).is_err());
    }

    #[test]
    fn retry_after_is_whole_seconds_until_a_token() {
        let limiter = IpRateLimiter::new(1);
        let now = Instant::now();
        assert!(limiter.check_at(ip("192.0.2.1"), now).is_ok());
        assert!(limiter.check_at(ip("192.0.2.1"), now).is_ok());
        assert_eq!(limiter.check_at(ip("192.0.2.1"), now), Err(1));
        assert_eq!(
            limiter.check_at(ip("192.0.2.1"), now + Duration::from_millis(1500)),
            Ok(())
        );
    }

    #[test]
    fn an_ipv6_host_shares_one_bucket_per_64() {
        let limiter = IpRateLimiter::new(1);
        let now = Instant::now();
        assert!(limiter.check_at(ip("2001:db8::1"), now).is_ok());
        assert!(limiter.check_at(ip("2001:db8::2"), now).is_ok());
        assert!(limiter.check_at(ip("2001:db8::3"), now).is_err());
        assert!(
            limiter.check_at(ip("2001:db8:0:1::1"), now).is_ok(),
            "another /64"
        );
    }

    #[test]
    fn a_flood_of_addresses_stays_bounded() {
        let limiter = IpRateLimiter::new(1);
        let now = Instant::now();
        for n in 0..200_000u32 {
            let _ = limiter.check_at(IpAddr::from(n.to_be_bytes()), now);
        }
        assert!(limiter.tracked() <= SHARDS * SHARD_CAPACITY);
        // Later, when the first flood's buckets have refilled.
        let later = now + Duration::from_secs(10);
        for n in 0..100_000u32 {
            let _ = limiter.check_at(IpAddr::from((n + 1_000_000).to_be_bytes()), later);
        }
        assert!(limiter.tracked() <= SHARDS * SHARD_CAPACITY);
    }
}
