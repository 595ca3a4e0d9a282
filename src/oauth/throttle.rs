//! Login throttling: failed logins are counted per (username, client address), per username
//! and per client address. Past a threshold each further failure of a (username, address) pair
//! locks that pair out for a growing delay (doubling up to a cap), so one attacker cannot guess
//! a password online; failures from one address across many usernames lock that address.
//! Addresses are counted as [`crate::net::address_key`] gives them: an IPv6 host by its /64,
//! or each of its 2^64 addresses would have a fresh count.
//!
//! The username alone is never locked out: if it were, anyone could lock any user out of
//! their account with a few wrong passwords (review finding 11). Instead, past a much higher
//! per-username threshold (failures from many addresses: a distributed guesser) attempts at
//! that username are slowed to one per `lockout`/30 (at most one a second) in all. Attackers
//! racing for those attempts would crowd out the owner, so a browser that has logged in as
//! that user before (it carries a signed *device cookie* for the username, see
//! [`crate::oauth::session`]) is exempt from the slowdown: the owner always gets in from a
//! known device, and only a first login from a new device can be slowed during an attack.
//!
//! An attempt is counted **before** its password is checked ([`LoginThrottle::begin`]), so
//! parallel guesses cannot all pass the check before any failure is recorded (review
//! finding 2); a success gives the reservation back ([`LoginThrottle::succeeded`]).
//!
//! The counts live in memory: they protect a running server, and a restart forgets them (a
//! restart also costs an attacker time). Keys are fixed-size digests, whatever length of
//! username is typed, and the table is bounded: when it is full, stale entries are dropped, then
//! the least recently failed ones.

use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

pub use crate::config::ThrottlePolicy;

/// Entries kept at most (each about 100 bytes).
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
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
enum Kind {
    Pair,
    Address,
    Username,
}

/// A count's key: its kind and a digest of what it counts.
type Key = (Kind, [u8; 32]);

/// One login attempt, as the throttle counts it.
#[derive(Clone, Copy, Debug)]
pub struct Attempt<'a> {
    pub username: &'a str,
    /// The client's address ([`crate::net::address_key`]).
    pub address: &'a str,
    /// The browser carries a device cookie for this username: exempt from the per-username
    /// slowdown.
    pub known_device: bool,
}

/// The in-memory failure table.
pub struct LoginThrottle {
    policy: ThrottlePolicy,
    entries: Mutex<HashMap<Key, Entry>>,
}

fn digest(parts: &[&str]) -> [u8; 32] {
    let mut context = ring::digest::Context::new(&ring::digest::SHA256);
    for part in parts {
        context.update(part.as_bytes());
        context.update(&[0]);
    }
    let mut out = [0u8; 32];
    out.copy_from_slice(context.finish().as_ref());
    out
}

/// The counts an attempt touches (a known device's skips the username's).
fn keys(attempt: &Attempt<'_>) -> Vec<Key> {
    let user = attempt.username.to_lowercase();
    let mut keys = vec![
        (Kind::Pair, digest(&[attempt.address, &user])),
        (Kind::Address, digest(&[attempt.address])),
    ];
    if !attempt.known_device {
        keys.push((Kind::Username, digest(&[&user])));
    }
    keys
}

impl LoginThrottle {
    pub fn new(policy: ThrottlePolicy) -> LoginThrottle {
        LoginThrottle {
            policy,
            entries: Mutex::new(HashMap::new()),
        }
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<Key, Entry>> {
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

    fn wait(entries: &HashMap<Key, Entry>, keys: &[Key], now: Instant) -> Option<Duration> {
        keys.iter()
            .filter_map(|key| entries.get(key)?.locked_until)
            .filter(|until| *until > now)
            .map(|until| until - now)
            .max()
    }

    /// How long the caller must wait before trying again, if at all.
    pub fn retry_after(&self, attempt: &Attempt<'_>) -> Option<Duration> {
        Self::wait(&self.lock(), &keys(attempt), Instant::now())
    }

    /// Reserves one attempt, counted as a failure until [`LoginThrottle::succeeded`] or
    /// [`LoginThrottle::abandoned`] says otherwise. Refused (with how long to wait) while any
    /// of its counts is locked. Check and count happen under one lock, so of many parallel
    /// attempts no more pass than one after another would.
    pub fn begin(&self, attempt: &Attempt<'_>) -> Result<(), Duration> {
        let now = Instant::now();
        let mut entries = self.lock();
        let keys = keys(attempt);
        if let Some(wait) = Self::wait(&entries, &keys, now) {
            return Err(wait);
        }
        if entries.len() + keys.len() > MAX_ENTRIES {
            make_room(&mut entries, now);
        }
        for key in keys {
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
            if entry.failures > self.allowed(key.0) {
                entry.locked_until = Some(now + self.lockout(key.0, entry.failures));
            }
        }
        Ok(())
    }

    /// The reserved attempt succeeded: the username's failures (from this address and
    /// overall) are cleared, and the address is given its reservation back.
    pub fn succeeded(&self, attempt: &Attempt<'_>) {
        let mut entries = self.lock();
        for key in keys(attempt) {
            match key.0 {
                Kind::Pair | Kind::Username => {
                    entries.remove(&key);
                }
                Kind::Address => self.give_back(&mut entries, &key),
            }
        }
    }

    /// The reserved attempt never checked a password (the server was too busy): it does not
    /// count.
    pub fn abandoned(&self, attempt: &Attempt<'_>) {
        let mut entries = self.lock();
        for key in keys(attempt) {
            self.give_back(&mut entries, &key);
        }
    }

    fn give_back(&self, entries: &mut HashMap<Key, Entry>, key: &Key) {
        if let Some(entry) = entries.get_mut(key) {
            entry.failures = entry.failures.saturating_sub(1);
            if entry.failures <= self.allowed(key.0) {
                entry.locked_until = None;
            }
        }
    }

    /// How many counts are kept (for tests of the bound).
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Frees a tenth of the table: stale entries first (neither locked nor recent), then those
/// that failed longest ago.
fn make_room(entries: &mut HashMap<Key, Entry>, now: Instant) {
    entries.retain(|_, e| e.locked_until.is_some_and(|u| u > now) || now - e.last_failure < FORGET_AFTER);
    let target = MAX_ENTRIES - MAX_ENTRIES / 10;
    if entries.len() > target {
        let mut by_age: Vec<(Instant, Key)> = entries.iter().map(|(k, e)| (e.last_failure, *k)).collect();
        by_age.sort_unstable_by_key(|(at, _)| *at);
        for (_, key) in &by_age[..entries.len() - target] {
            entries.remove(key);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at<'a>(username: &'a str, address: &'a str) -> Attempt<'a> {
        Attempt {
            username,
            address,
            known_device: false,
        }
    }

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
            assert!(throttle.begin(&at("alice", "1.1.1.1")).is_ok());
        }
        let wait = throttle.begin(&at("ALICE", "1.1.1.1")).unwrap_err();
        assert!(
            wait > Duration::from_secs(9),
            "usernames are case-insensitive: {wait:?}"
        );
        assert!(
            throttle.begin(&at("alice", "2.2.2.2")).is_ok(),
            "the owner, from elsewhere, is not locked out"
        );
        throttle.succeeded(&at("alice", "1.1.1.1"));
        assert!(
            throttle.begin(&at("alice", "1.1.1.1")).is_ok(),
            "a success clears the pair"
        );
    }

    #[test]
    fn one_address_guessing_many_usernames_is_locked_out() {
        let throttle = LoginThrottle::new(policy());
        for name in ["a", "b", "c", "d", "e"] {
            assert!(throttle.begin(&at(name, "9.9.9.9")).is_ok());
        }
        assert!(throttle.begin(&at("f", "9.9.9.9")).is_err());
        assert!(
            throttle.begin(&at("f", "8.8.8.8")).is_ok(),
            "other addresses are unaffected"
        );
    }

    #[test]
    fn many_addresses_guessing_one_username_are_slowed_not_locked() {
        let throttle = LoginThrottle::new(policy());
        for i in 0..7 {
            assert!(throttle.begin(&at("alice", &format!("10.0.0.{i}"))).is_ok());
        }
        let wait = throttle.begin(&at("alice", "10.0.1.1")).unwrap_err();
        assert!(wait <= Duration::from_secs(1), "a slowdown: {wait:?}");
    }

    #[test]
    fn parallel_attempts_are_counted_before_any_password_is_checked() {
        let throttle = std::sync::Arc::new(LoginThrottle::new(policy()));
        let passed: usize = (0..40)
            .map(|_| {
                let throttle = throttle.clone();
                std::thread::spawn(move || throttle.begin(&at("alice", "1.1.1.1")).is_ok())
            })
            .collect::<Vec<_>>()
            .into_iter()
            .map(|t| usize::from(t.join().unwrap()))
            .sum();
        assert_eq!(
            passed, 3,
            "as many as one after another: the allowed failures and one more"
        );
        throttle.abandoned(&at("alice", "1.1.1.1"));
    }

    #[test]
    fn a_known_device_is_not_slowed_by_a_distributed_guesser() {
        let throttle = LoginThrottle::new(policy());
        for i in 0..7 {
            assert!(throttle.begin(&at("alice", &format!("10.0.0.{i}"))).is_ok());
        }
        assert!(throttle.begin(&at("alice", "10.0.1.1")).is_err(), "slowed");
        let owner = Attempt {
            username: "alice",
            address: "10.0.2.2",
            known_device: true,
        };
        assert!(throttle.begin(&owner).is_ok(), "the owner's device gets in at once");
        // A known device still counts per (username, address): it is no master key.
        assert!(throttle.begin(&owner).is_ok());
        assert!(throttle.begin(&owner).is_ok());
        assert!(throttle.begin(&owner).is_err());
    }

    #[test]
    fn the_table_stays_bounded_whatever_usernames_are_tried() {
        let throttle = LoginThrottle::new(ThrottlePolicy {
            max_failures: 1_000_000,
            max_failures_per_address: 1_000_000,
            max_failures_per_username: 1_000_000,
            ..policy()
        });
        let long = "x".repeat(60_000);
        for i in 0..(MAX_ENTRIES / 2 + 10) {
            let name = format!("{long}{i}");
            assert!(throttle.begin(&at(&name, "1.1.1.1")).is_ok());
        }
        assert!(throttle.len() <= MAX_ENTRIES, "{}", throttle.len());
    }
}
