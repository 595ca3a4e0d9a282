//! Request rate limits: a token bucket per key (a client id, or a client address). A key may
//! spend `burst` requests at once and regains `per_second` each second; past that it is told
//! how long to wait. The table lives in memory and is bounded in entries and in bytes: a key
//! is kept as a keyed 64-bit digest ([`KeyDigest`]), never as the text it was given (a client
//! id or a host name chosen by anyone may be kilobytes long), and when the table is full,
//! buckets that have refilled (idle keys) are dropped first; if every bucket is busy, new
//! keys are refused rather than old ones forgotten.

use std::collections::HashMap;
use std::hash::{BuildHasher, RandomState};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Buckets kept at most. A full table has 131,072 slots of 33 bytes (a digest, a bucket, a
/// control byte): about 4.3 MB, whatever the keys were (SECURITY.md, Memory budget).
pub(crate) const MAX_KEYS: usize = 100_000;
/// How long a full table whose sweep freed nothing is not swept again: a sweep walks every
/// bucket, and a flood of new keys must not make each request pay for one.
const SWEEP_PAUSE: Duration = Duration::from_secs(1);

/// A key as the table keeps it: SipHash of the key under a secret per-limiter seed, so its
/// size does not depend on the key's, and no one can choose keys that collide.
pub(crate) struct KeyDigest(RandomState);

impl KeyDigest {
    pub fn new() -> KeyDigest {
        KeyDigest(RandomState::new())
    }

    pub fn of(&self, key: &str) -> u64 {
        self.0.hash_one(key)
    }
}

impl Default for KeyDigest {
    fn default() -> Self {
        KeyDigest::new()
    }
}

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
    pub(crate) fn per_hour(per_hour: u32) -> Rate {
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
    digest: KeyDigest,
    table: Mutex<Table>,
}

#[derive(Default)]
struct Table {
    buckets: HashMap<u64, Bucket>,
    /// Until when a full table is not swept again (its last sweep freed nothing).
    no_sweep_until: Option<Instant>,
}

impl RateLimiter {
    pub fn new(rate: Rate) -> RateLimiter {
        RateLimiter {
            rate,
            digest: KeyDigest::new(),
            table: Mutex::new(Table::default()),
        }
    }

    /// How many keys the table holds now.
    pub fn keys(&self) -> usize {
        self.lock().buckets.len()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Table> {
        self.table.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Takes one request from `key`'s bucket, or says how long until one is available.
    pub fn check(&self, key: &str) -> Result<(), Duration> {
        self.check_n(key, 1.0)
    }

    /// Takes `cost` requests' worth from `key`'s bucket (a cost above the burst is charged as
    /// the burst), or says how long until that much is available.
    pub(crate) fn check_n(&self, key: &str, cost: f64) -> Result<(), Duration> {
        if self.rate.per_second <= 0.0 {
            return Ok(());
        }
        let now = Instant::now();
        let key = self.digest.of(key);
        let mut table = self.lock();
        if table.buckets.len() >= MAX_KEYS && !table.buckets.contains_key(&key) {
            if table.no_sweep_until.is_some_and(|until| now < until) {
                return Err(SWEEP_PAUSE);
            }
            let rate = self.rate;
            table
                .buckets
                .retain(|_, b| b.tokens + now.duration_since(b.updated).as_secs_f64() * rate.per_second < rate.burst);
            if table.buckets.len() >= MAX_KEYS {
                // Every key is busy: refuse newcomers rather than grow, or forget a busy key
                // (which would hand its owner a fresh burst).
                table.no_sweep_until = Some(now + SWEEP_PAUSE);
                return Err(SWEEP_PAUSE);
            }
            table.no_sweep_until = None;
        }
        let bucket = table.buckets.entry(key).or_insert(Bucket {
            tokens: self.rate.burst,
            updated: now,
        });
        let refilled = now.duration_since(bucket.updated).as_secs_f64() * self.rate.per_second;
        bucket.tokens = (bucket.tokens + refilled).min(self.rate.burst);
        bucket.updated = now;
        let cost = cost.clamp(0.0, self.rate.burst);
        if bucket.tokens >= cost {
            bucket.tokens -= cost;
            Ok(())
        } else {
            let wait = (cost - bucket.tokens) / self.rate.per_second;
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

    #[test]
    fn keys_are_kept_as_fixed_size_digests_whatever_their_length() {
        let limiter = RateLimiter::new(Rate::per_minute(1));
        let long = "x".repeat(100_000);
        assert!(limiter.check(&long).is_ok());
        assert!(limiter.check(&long).is_err(), "the same long key is the same bucket");
        assert!(limiter.check(&long[1..]).is_ok(), "a different key is another bucket");
        assert_eq!(limiter.keys(), 2);
        assert_eq!(std::mem::size_of::<u64>() + std::mem::size_of::<Bucket>(), 32);
    }

    #[test]
    fn a_full_table_of_busy_keys_refuses_newcomers_without_sweeping_each_time() {
        let limiter = RateLimiter::new(Rate::per_hour(1));
        for i in 0..MAX_KEYS {
            assert!(limiter.check(&i.to_string()).is_ok());
        }
        assert_eq!(limiter.check("newcomer").unwrap_err(), SWEEP_PAUSE);
        assert_eq!(limiter.keys(), MAX_KEYS, "no busy key was forgotten");
        assert!(limiter.check("0").is_err(), "an old key keeps its spent bucket");
    }
}
