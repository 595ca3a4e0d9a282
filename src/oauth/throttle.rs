//! Login throttling: failed logins are counted per username and per client address, and past
//! a threshold each further failure locks that key out for a growing delay (doubling up to a
//! cap), so a password cannot be guessed online. A success clears the username's count.
//!
//! The counts live in memory: they protect a running server, and a restart forgets them (a
//! restart also costs an attacker time). The table is bounded: when it is full, entries that
//! are neither locked nor recent are dropped first.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Entries kept at most; beyond that, stale ones are pruned.
const MAX_ENTRIES: usize = 100_000;
/// A failure older than this no longer counts.
const FORGET_AFTER: Duration = Duration::from_secs(15 * 60);

/// How strict the throttle is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ThrottlePolicy {
    /// Failures allowed per username before lockouts start.
    pub max_failures: u32,
    /// The first lockout; each further failure doubles it.
    pub lockout: Duration,
    /// The longest lockout.
    pub max_lockout: Duration,
    /// Failures allowed per client address (higher: many people may share an address).
    pub max_failures_per_address: u32,
}

impl Default for ThrottlePolicy {
    fn default() -> Self {
        ThrottlePolicy {
            max_failures: 5,
            lockout: Duration::from_secs(30),
            max_lockout: Duration::from_secs(15 * 60),
            max_failures_per_address: 20,
        }
    }
}

#[derive(Clone, Copy, Debug)]
struct Entry {
    failures: u32,
    last_failure: Instant,
    locked_until: Option<Instant>,
}

/// The in-memory failure table.
pub struct LoginThrottle {
    policy: ThrottlePolicy,
    entries: Mutex<HashMap<String, Entry>>,
}

fn user_key(username: &str) -> String {
    format!("user:{}", username.to_lowercase())
}

fn address_key(address: &str) -> String {
    format!("addr:{address}")
}

impl LoginThrottle {
    pub fn new(policy: ThrottlePolicy) -> LoginThrottle {
        LoginThrottle {
            policy,
            entries: Mutex::new(HashMap::new()),
        }
    }

    /// How long the caller must wait before trying this username from this address, if at all.
    pub fn retry_after(&self, username: &str, address: &str) -> Option<Duration> {
        let now = Instant::now();
        let entries = self.entries.lock().ok()?;
        [user_key(username), address_key(address)]
            .iter()
            .filter_map(|key| entries.get(key)?.locked_until)
            .filter(|until| *until > now)
            .map(|until| until - now)
            .max()
    }

    /// Records a failed attempt; returns the lockout it started, if any.
    pub fn record_failure(&self, username: &str, address: &str) -> Option<Duration> {
        let now = Instant::now();
        let Ok(mut entries) = self.entries.lock() else {
            return None;
        };
        if entries.len() >= MAX_ENTRIES {
            entries.retain(|_, e| e.locked_until.is_some_and(|u| u > now) || now - e.last_failure < FORGET_AFTER);
        }
        let policy = self.policy;
        let mut longest = None;
        for (key, allowed) in [
            (user_key(username), policy.max_failures),
            (address_key(address), policy.max_failures_per_address),
        ] {
            let entry = entries.entry(key).or_insert(Entry {
                failures: 0,
                last_failure: now,
                locked_until: None,
            });
            if now - entry.last_failure >= FORGET_AFTER {
                entry.failures = 0;
            }
            entry.failures += 1;
            entry.last_failure = now;
            if entry.failures > allowed {
                let doublings = (entry.failures - allowed - 1).min(16);
                let lockout = policy.lockout.saturating_mul(1 << doublings).min(policy.max_lockout);
                entry.locked_until = Some(now + lockout);
                longest = longest.max(Some(lockout));
            }
        }
        longest
    }

    /// A successful login clears the username's failures (the address keeps its count).
    pub fn record_success(&self, username: &str) {
        if let Ok(mut entries) = self.entries.lock() {
            entries.remove(&user_key(username));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> ThrottlePolicy {
        ThrottlePolicy {
            max_failures: 2,
            lockout: Duration::from_secs(10),
            max_lockout: Duration::from_secs(25),
            max_failures_per_address: 4,
        }
    }

    #[test]
    fn lockouts_start_after_the_allowed_failures_and_double_up_to_the_cap() {
        let throttle = LoginThrottle::new(policy());
        assert_eq!(throttle.record_failure("alice", "1.1.1.1"), None);
        assert_eq!(throttle.record_failure("alice", "2.2.2.2"), None);
        assert!(throttle.retry_after("alice", "3.3.3.3").is_none());
        assert_eq!(
            throttle.record_failure("alice", "3.3.3.3"),
            Some(Duration::from_secs(10))
        );
        assert!(
            throttle.retry_after("ALICE", "4.4.4.4").is_some(),
            "usernames are case-insensitive here"
        );
        assert_eq!(
            throttle.record_failure("alice", "5.5.5.5"),
            Some(Duration::from_secs(20))
        );
        assert_eq!(
            throttle.record_failure("alice", "6.6.6.6"),
            Some(Duration::from_secs(25)),
            "capped"
        );
        throttle.record_success("alice");
        assert!(throttle.retry_after("alice", "7.7.7.7").is_none());
    }

    #[test]
    fn one_address_guessing_many_usernames_is_locked_out() {
        let throttle = LoginThrottle::new(policy());
        for name in ["a", "b", "c", "d"] {
            throttle.record_failure(name, "9.9.9.9");
        }
        assert!(throttle.retry_after("e", "9.9.9.9").is_none());
        assert!(throttle.record_failure("e", "9.9.9.9").is_some());
        assert!(throttle.retry_after("f", "9.9.9.9").is_some());
        assert!(
            throttle.retry_after("f", "8.8.8.8").is_none(),
            "other addresses are unaffected"
        );
    }
}
