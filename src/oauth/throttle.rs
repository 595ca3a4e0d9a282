//! Login throttling: failed logins are counted per (username, client address), per username
//! and per client address. Past a threshold each further failure of a (username, address) pair
//! locks that pair out for a growing delay (doubling up to a cap), so one attacker cannot guess
//! a password online; failures from one address across many usernames lock that address.
//!
//! The username alone is never locked out: if it were, anyone could lock any user out of
//! their account with a few wrong passwords (review finding 11). Instead, past a much higher
//! per-username threshold (failures from many addresses: a distributed guesser) each further
//! failure for that username slows everyone trying it to one attempt per `lockout`/30 s
//! (at most one a second). The trade-off: a botnet can keep guessing one account slowly, but
//! the account's owner can still log in between its guesses.
//!
//! An attempt is counted **before** its password is checked ([`LoginThrottle::begin`]), so
//! parallel guesses cannot all pass the check before any failure is recorded (review
//! finding 2); a success gives the reservation back ([`LoginThrottle::succeeded`]).
//!
//! The counts live in memory: they protect a running server, and a restart forgets them (a
//! restart also costs an attacker time). The table is bounded: when it is full, entries that
//! are neither locked nor recent are dropped first.

use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

pub use crate::config::ThrottlePolicy;

/// Entries kept at most; beyond that, stale ones are pruned.
const MAX_ENTRIES: usize = 100_000;
/// A failure older than this no longer counts.
const FORGET_AFTER: Duration = Duration::from_secs(15 * 60);

#[derive(Clone, Copy, Debug)]
struct Entry {
    failures: u32,
    last_failure: Instant,
    locked_until: Option<Instant>,
}

/// The three counts an attempt touches.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Pair,
    Address,
    Username,
}

/// The in-memory failure table.
pub struct LoginThrottle {
    policy: ThrottlePolicy,
    entries: Mutex<HashMap<String, Entry>>,
}

fn keys(username: &str, address: &str) -> [(Kind, String); 3] {
    let user = username.to_lowercase();
    [
        (Kind::Pair, format!("pair:{address}|{user}")),
        (Kind::Address, format!("addr:{address}")),
        (Kind::Username, format!("user:{user}")),
    ]
}

impl LoginThrottle {
    pub fn new(policy: ThrottlePolicy) -> LoginThrottle {
        LoginThrottle {
            policy,
            entries: Mutex::new(HashMap::new()),
        }
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<String, Entry>> {
        match self.entries.lock() {
            Ok(guard) => guard,
            Err(poisoned) => poisoned.into_inner(),
        }
    }

    fn allowed(&self, kind: Kind) -> u32 {
        match kind {
            Kind::Pair => self.policy.max_failures,
            Kind::Address => self.policy.max_failures_per_address,
            Kind::Username => self.policy.max_failures_per_username,
        }
    }

    /// The delay a failure past the threshold starts.
    fn lockout(&self, kind: Kind, failures: u32) -> Duration {
        let policy = self.policy;
        match kind {
            // A slowdown, not a lockout: no doubling, at most a second.
            Kind::Username => (policy.lockout / 30).clamp(Duration::from_millis(1), Duration::from_secs(1)),
            _ => {
                let doublings = (failures - self.allowed(kind) - 1).min(16);
                policy.lockout.saturating_mul(1 << doublings).min(policy.max_lockout)
            }
        }
    }

    /// How long the caller must wait before trying this username from this address, if at all.
    pub fn retry_after(&self, username: &str, address: &str) -> Option<Duration> {
        let now = Instant::now();
        let entries = self.lock();
        keys(username, address)
            .iter()
            .filter_map(|(_, key)| entries.get(key)?.locked_until)
            .filter(|until| *until > now)
            .map(|until| until - now)
            .max()
    }

    /// Reserves one attempt for this username from this address, counted as a failure until
    /// [`LoginThrottle::succeeded`] or [`LoginThrottle::abandoned`] says otherwise. Refused
    /// (with how long to wait) while any of its counts is locked. Check and count happen under
    /// one lock, so of many parallel attempts no more pass than one after another would.
    pub fn begin(&self, username: &str, address: &str) -> Result<(), Duration> {
        let now = Instant::now();
        let mut entries = self.lock();
        let keys = keys(username, address);
        let wait = keys
            .iter()
            .filter_map(|(_, key)| entries.get(key)?.locked_until)
            .filter(|until| *until > now)
            .map(|until| until - now)
            .max();
        if let Some(wait) = wait {
            return Err(wait);
        }
        if entries.len() >= MAX_ENTRIES {
            entries.retain(|_, e| e.locked_until.is_some_and(|u| u > now) || now - e.last_failure < FORGET_AFTER);
        }
        for (kind, key) in keys {
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
            if entry.failures > self.allowed(kind) {
                entry.locked_until = Some(now + self.lockout(kind, entry.failures));
            }
        }
        Ok(())
    }

    /// The reserved attempt succeeded: the username's failures (from this address and
    /// overall) are cleared, and the address is given its reservation back.
    pub fn succeeded(&self, username: &str, address: &str) {
        let mut entries = self.lock();
        for (kind, key) in keys(username, address) {
            match kind {
                Kind::Pair | Kind::Username => {
                    entries.remove(&key);
                }
                Kind::Address => self.give_back(&mut entries, kind, &key),
            }
        }
    }

    /// The reserved attempt never checked a password (the server was too busy): it does not
    /// count.
    pub fn abandoned(&self, username: &str, address: &str) {
        let mut entries = self.lock();
        for (kind, key) in keys(username, address) {
            self.give_back(&mut entries, kind, &key);
        }
    }

    fn give_back(&self, entries: &mut HashMap<String, Entry>, kind: Kind, key: &str) {
        if let Some(entry) = entries.get_mut(key) {
            entry.failures = entry.failures.saturating_sub(1);
            if entry.failures <= self.allowed(kind) {
                entry.locked_until = None;
            }
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
            max_failures_per_username: 6,
        }
    }

    #[test]
    fn a_pair_is_locked_after_the_allowed_failures_with_doubling_up_to_the_cap() {
        let throttle = LoginThrottle::new(policy());
        for _ in 0..3 {
            assert!(throttle.begin("alice", "1.1.1.1").is_ok());
        }
        let wait = throttle.begin("ALICE", "1.1.1.1").unwrap_err();
        assert!(
            wait > Duration::from_secs(9),
            "usernames are case-insensitive: {wait:?}"
        );
        assert!(
            throttle.begin("alice", "2.2.2.2").is_ok(),
            "the owner, from elsewhere, is not locked out"
        );
        throttle.succeeded("alice", "1.1.1.1");
        assert!(throttle.begin("alice", "1.1.1.1").is_ok(), "a success clears the pair");
    }

    #[test]
    fn one_address_guessing_many_usernames_is_locked_out() {
        let throttle = LoginThrottle::new(policy());
        for name in ["a", "b", "c", "d", "e"] {
            assert!(throttle.begin(name, "9.9.9.9").is_ok());
        }
        assert!(throttle.begin("f", "9.9.9.9").is_err());
        assert!(throttle.begin("f", "8.8.8.8").is_ok(), "other addresses are unaffected");
    }

    #[test]
    fn many_addresses_guessing_one_username_are_slowed_not_locked() {
        let throttle = LoginThrottle::new(policy());
        for i in 0..7 {
            assert!(throttle.begin("alice", &format!("10.0.0.{i}")).is_ok());
        }
        let wait = throttle.begin("alice", "10.0.1.1").unwrap_err();
        assert!(wait <= Duration::from_secs(1), "a slowdown: {wait:?}");
    }

    #[test]
    fn parallel_attempts_are_counted_before_any_password_is_checked() {
        let throttle = std::sync::Arc::new(LoginThrottle::new(policy()));
        let passed: usize = (0..40)
            .map(|_| {
                let throttle = throttle.clone();
                std::thread::spawn(move || throttle.begin("alice", "1.1.1.1").is_ok())
            })
            .collect::<Vec<_>>()
            .into_iter()
            .map(|t| usize::from(t.join().unwrap()))
            .sum();
        assert_eq!(
            passed, 3,
            "as many as one after another: the allowed failures and one more"
        );
        throttle.abandoned("alice", "1.1.1.1");
    }
}
