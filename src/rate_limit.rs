//! Request rate limits: a token bucket per key (a client id, or a client address). A key may
//! spend `burst` requests at once and regains `per_second` each second; past that it is told
//! how long to wait. The table lives in memory and is bounded: when full, buckets that have
//! refilled (idle keys) are dropped first, so a flood of distinct keys cannot grow it without end.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Buckets kept at most.
const MAX_KEYS: usize = 100_000;

/// A rate: `per_second` sustained, `burst` at once. Zero turns the limit off.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Rate {
    pub per_second: f64,
    pub burst: f64,
}

impl Rate {
    pub const OFF: Rate = Rate {
        per_second: 0.0,
        burst: 0.0,
    };

    /// `per_second` sustained with a burst of twice that.
    pub fn per_second(per_second: u32) -> Rate {
        Rate {
            per_second: per_second as f64,
            burst: (per_second as f64 * 2.0).max(1.0),
        }
    }

    /// `per_minute` a minute, all of which may be spent at once.
    pub fn per_minute(per_minute: u32) -> Rate {
        Rate {
            per_second: per_minute as f64 / 60.0,
            burst: per_minute as f64,
        }
    }

    /// `per_hour` an hour, all of which may be spent at once.
    pub fn per_hour(per_hour: u32) -> Rate {
        Rate {
            per_second: per_hour as f64 / 3600.0,
            burst: per_hour as f64,
        }
    }
}

struct Bucket {
    tokens: f64,
    updated: Instant,
}

pub struct RateLimiter {
    rate: Rate,
    buckets: Mutex<HashMap<String, Bucket>>,
}

impl RateLimiter {
    pub fn new(rate: Rate) -> RateLimiter {
        RateLimiter {
            rate,
            buckets: Mutex::new(HashMap::new()),
        }
    }

    /// Takes one request from `key`'s bucket, or says how long until one is available.
    pub fn check(&self, key: &str) -> Result<(), Duration> {
        if self.rate.per_second <= 0.0 {
            return Ok(());
        }
        let now = Instant::now();
        let mut buckets = match self.buckets.lock() {
            Ok(guard) => guard,
            Err(poisoned) => poisoned.into_inner(),
        };
        if buckets.len() >= MAX_KEYS && !buckets.contains_key(key) {
            let rate = self.rate;
            buckets
                .retain(|_, b| b.tokens + now.duration_since(b.updated).as_secs_f64() * rate.per_second < rate.burst);
            if buckets.len() >= MAX_KEYS {
                // Every key is busy: refuse newcomers rather than grow.
                return Err(Duration::from_secs(1));
            }
        }
        let bucket = buckets.entry(key.to_string()).or_insert(Bucket {
            tokens: self.rate.burst,
            updated: now,
        });
        let refilled = now.duration_since(bucket.updated).as_secs_f64() * self.rate.per_second;
        bucket.tokens = (bucket.tokens + refilled).min(self.rate.burst);
        bucket.updated = now;
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            Ok(())
        } else {
            let wait = (1.0 - bucket.tokens) / self.rate.per_second;
            Err(Duration::from_secs_f64(wait.max(0.001)))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_gets_its_burst_then_waits_while_other_keys_are_unaffected() {
        let limiter = RateLimiter::new(Rate {
            per_second: 1.0,
            burst: 3.0,
        });
        for _ in 0..3 {
            assert!(limiter.check("a").is_ok());
        }
        let wait = limiter.check("a").unwrap_err();
        assert!(
            wait > Duration::from_millis(500) && wait <= Duration::from_secs(1),
            "{wait:?}"
        );
        assert!(limiter.check("b").is_ok());
        assert!(RateLimiter::new(Rate::OFF).check("a").is_ok());
    }
}
