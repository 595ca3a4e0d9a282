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
//! The counts are the store's failure counters ([`crate::store::EphemeralStore`]): shared by
//! every node of a cluster, so guesses spread over nodes are counted once, and checked and
//! counted atomically. Keys are fixed-size digests, whatever length of username is typed.
//! The embedded store keeps them in memory (a restart forgets them, and costs an attacker time),
//! in a bounded table.

use std::sync::Mutex;
use std::time::Duration;

pub use crate::config::ThrottlePolicy;
use crate::store::{Counter, EphemeralStore, StoreError};

/// A failure older than this no longer counts.
const FORGET_AFTER_MS: i64 = 15 * 60 * 1000;

/// The three counts an attempt touches.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Kind {
    Pair = 1,
    Address = 2,
    Username = 3,
}

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

/// The login throttle: the policy, applied to the store's counters.
pub struct LoginThrottle {
    policy: ThrottlePolicy,
}

/// A counter's key: its kind, then a digest of what it counts.
fn key(kind: Kind, parts: &[&str]) -> Vec<u8> {
    let mut context = ring::digest::Context::new(&ring::digest::SHA256);
    for part in parts {
        context.update(part.as_bytes());
        context.update(&[0]);
    }
    let mut key = vec![b'l', kind as u8];
    key.extend_from_slice(context.finish().as_ref());
    key
}

/// The counts an attempt touches. Usernames count exactly as they are matched at login (case
/// and all): `Alice` and `alice` are two accounts. A known device's attempt touches only its
/// (username, address) count: the per-username slowdown and the per-address lockout guard
/// against guessers, which a browser the user has logged in from is not.
fn keys(attempt: &Attempt<'_>) -> (Vec<Kind>, Vec<Vec<u8>>) {
    let user = attempt.username;
    let mut kinds = vec![Kind::Pair];
    let mut keys = vec![key(Kind::Pair, &[attempt.address, user])];
    if !attempt.known_device {
        kinds.extend([Kind::Address, Kind::Username]);
        keys.extend([key(Kind::Address, &[attempt.address]), key(Kind::Username, &[user])]);
    }
    (kinds, keys)
}

fn wait_of(counters: &[Counter], now_ms: i64) -> Option<Duration> {
    counters
        .iter()
        .map(|c| c.locked_until_ms - now_ms)
        .filter(|wait| *wait > 0)
        .max()
        .map(|wait| Duration::from_millis(wait as u64))
}

impl LoginThrottle {
    pub fn new(policy: ThrottlePolicy) -> LoginThrottle {
        LoginThrottle { policy }
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

    /// How long the caller must wait before trying again, if at all.
    pub async fn retry_after(
        &self,
        store: &dyn EphemeralStore,
        attempt: &Attempt<'_>,
    ) -> Result<Option<Duration>, StoreError> {
        let (_, keys) = keys(attempt);
        let now = crate::clock::now_ms();
        let wait = Mutex::new(None);
        store
            .update_counters(&keys, &|counters| {
                *wait.lock().unwrap_or_else(|p| p.into_inner()) = wait_of(counters, now);
            })
            .await?;
        Ok(wait.into_inner().unwrap_or_else(|p| p.into_inner()))
    }

    /// Reserves one attempt, counted as a failure until [`LoginThrottle::succeeded`] or
    /// [`LoginThrottle::abandoned`] says otherwise. Refused (`Ok(Err(wait))`) while any of its
    /// counts is locked. Check and count happen in one atomic update, so of many parallel
    /// attempts, on however many nodes, no more pass than one after another would.
    /// `Ok(Ok(true))` when this attempt, should it fail, is the one that locks out its
    /// (username, address) pair or its address: exactly one attempt starts each lockout.
    pub(crate) async fn begin(
        &self,
        store: &dyn EphemeralStore,
        attempt: &Attempt<'_>,
    ) -> Result<Result<bool, Duration>, StoreError> {
        let (kinds, keys) = keys(attempt);
        let now = crate::clock::now_ms();
        let outcome = Mutex::new(Ok(false));
        store
            .update_counters(&keys, &|counters| {
                if let Some(wait) = wait_of(counters, now) {
                    *outcome.lock().unwrap_or_else(|p| p.into_inner()) = Err(wait);
                    return;
                }
                for (kind, counter) in kinds.iter().zip(counters.iter_mut()) {
                    if now - counter.last_failure_ms >= FORGET_AFTER_MS {
                        counter.failures = 0;
                    }
                    counter.failures += 1;
                    counter.last_failure_ms = now;
                    if counter.failures > self.allowed(*kind) {
                        counter.locked_until_ms = now + self.lockout(*kind, counter.failures).as_millis() as i64;
                        if *kind != Kind::Username {
                            *outcome.lock().unwrap_or_else(|p| p.into_inner()) = Ok(true);
                        }
                    }
                    counter.expires_at_ms = (now + FORGET_AFTER_MS).max(counter.locked_until_ms);
                }
            })
            .await?;
        Ok(outcome.into_inner().unwrap_or_else(|p| p.into_inner()))
    }

    /// The reserved attempt succeeded: the username's failures (from this address and
    /// overall) are cleared, and the address is given its reservation back.
    pub async fn succeeded(&self, store: &dyn EphemeralStore, attempt: &Attempt<'_>) -> Result<(), StoreError> {
        let (kinds, keys) = keys(attempt);
        store
            .update_counters(&keys, &|counters| {
                for (kind, counter) in kinds.iter().zip(counters.iter_mut()) {
                    match kind {
                        Kind::Pair | Kind::Username => *counter = Counter::default(),
                        Kind::Address => self.give_back(*kind, counter),
                    }
                }
            })
            .await
    }

    /// The reserved attempt never checked a password (the server was too busy): it does not
    /// count.
    pub(crate) async fn abandoned(&self, store: &dyn EphemeralStore, attempt: &Attempt<'_>) -> Result<(), StoreError> {
        let (kinds, keys) = keys(attempt);
        store
            .update_counters(&keys, &|counters| {
                for (kind, counter) in kinds.iter().zip(counters.iter_mut()) {
                    self.give_back(*kind, counter);
                }
            })
            .await
    }

    fn give_back(&self, kind: Kind, counter: &mut Counter) {
        counter.failures = counter.failures.saturating_sub(1);
        if counter.failures <= self.allowed(kind) {
            counter.locked_until_ms = 0;
        }
        if counter.failures == 0 && counter.locked_until_ms == 0 {
            *counter = Counter::default();
        }
    }
}

/// Guesses of device user codes (RFC 8628 §5.1): wrong codes are counted per logged-in user
/// and per client address, with the login policy's thresholds and growing lockouts (per user
/// `max_failures`, per address `max_failures_per_address`). With 20^8 possible codes and a
/// handful live at once, a guesser gets a few attempts per lockout and no useful odds. Like the
/// login throttle, an attempt is counted before the code is looked up, so parallel guesses
/// cannot all get in before the first failure is recorded; a code that is found gives its
/// attempt back.
pub struct UserCodeThrottle {
    policy: ThrottlePolicy,
}

impl UserCodeThrottle {
    pub fn new(policy: ThrottlePolicy) -> UserCodeThrottle {
        UserCodeThrottle { policy }
    }

    fn keys(user_id: &str, address: &str) -> Vec<Vec<u8>> {
        // Their own prefix: user-code guesses never lock anyone out of logging in.
        let mut user = vec![b'u', b'u'];
        user.extend_from_slice(&key(Kind::Pair, &[user_id])[2..]);
        let mut addr = vec![b'u', b'a'];
        addr.extend_from_slice(&key(Kind::Address, &[address])[2..]);
        vec![user, addr]
    }

    fn allowed(&self) -> [u32; 2] {
        [self.policy.max_failures, self.policy.max_failures_per_address]
    }

    /// Reserves one attempt by `user_id` from `address`, counted as a failure until
    /// [`UserCodeThrottle::found`]. Refused (`Ok(Err(wait))`) while the user or the address
    /// is locked out.
    pub(crate) async fn begin(
        &self,
        store: &dyn EphemeralStore,
        user_id: &str,
        address: &str,
    ) -> Result<Result<(), Duration>, StoreError> {
        let now = crate::clock::now_ms();
        let allowed = self.allowed();
        let policy = self.policy;
        let outcome = Mutex::new(Ok(()));
        store
            .update_counters(&Self::keys(user_id, address), &|counters| {
                if let Some(wait) = wait_of(counters, now) {
                    *outcome.lock().unwrap_or_else(|p| p.into_inner()) = Err(wait);
                    return;
                }
                for (allowed, counter) in allowed.iter().zip(counters.iter_mut()) {
                    if now - counter.last_failure_ms >= FORGET_AFTER_MS {
                        counter.failures = 0;
                    }
                    counter.failures += 1;
                    counter.last_failure_ms = now;
                    if counter.failures > *allowed {
                        let doublings = (counter.failures - allowed - 1).min(16);
                        let lockout = policy.lockout.saturating_mul(1 << doublings).min(policy.max_lockout);
                        counter.locked_until_ms = now + lockout.as_millis() as i64;
                    }
                    counter.expires_at_ms = (now + FORGET_AFTER_MS).max(counter.locked_until_ms);
                }
            })
            .await?;
        Ok(outcome.into_inner().unwrap_or_else(|p| p.into_inner()))
    }

    /// The reserved attempt named a real code: it is not a failure.
    pub async fn found(&self, store: &dyn EphemeralStore, user_id: &str, address: &str) -> Result<(), StoreError> {
        let allowed = self.allowed();
        store
            .update_counters(&Self::keys(user_id, address), &|counters| {
                for (allowed, counter) in allowed.iter().zip(counters.iter_mut()) {
                    counter.failures = counter.failures.saturating_sub(1);
                    if counter.failures <= *allowed {
                        counter.locked_until_ms = 0;
                    }
                    if counter.failures == 0 && counter.locked_until_ms == 0 {
                        *counter = Counter::default();
                    }
                }
            })
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A store for the counters (the embedded one keeps them in memory).
    fn store() -> (std::sync::Arc<crate::store::SledStore>, tempfile::TempDir) {
        let dir = tempfile::tempdir().unwrap();
        (
            std::sync::Arc::new(crate::store::SledStore::open(dir.path()).unwrap()),
            dir,
        )
    }

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

    async fn begin(
        throttle: &LoginThrottle,
        store: &crate::store::SledStore,
        attempt: Attempt<'_>,
    ) -> Result<(), Duration> {
        throttle.begin(store, &attempt).await.unwrap().map(|_| ())
    }

    #[tokio::test]
    async fn a_pair_is_locked_after_the_allowed_failures_with_doubling_up_to_the_cap() {
        let (store, _dir) = store();
        let throttle = LoginThrottle::new(policy());
        for _ in 0..3 {
            assert!(begin(&throttle, &store, at("alice", "1.1.1.1")).await.is_ok());
        }
        let wait = begin(&throttle, &store, at("alice", "1.1.1.1")).await.unwrap_err();
        assert!(wait > Duration::from_secs(9), "{wait:?}");
        assert!(
            begin(&throttle, &store, at("ALICE", "1.1.1.1")).await.is_ok(),
            "usernames count exactly as they log in: ALICE is another account"
        );
        assert!(
            begin(&throttle, &store, at("alice", "2.2.2.2")).await.is_ok(),
            "the owner, from elsewhere, is not locked out"
        );
        throttle.succeeded(&*store, &at("alice", "1.1.1.1")).await.unwrap();
        assert!(
            begin(&throttle, &store, at("alice", "1.1.1.1")).await.is_ok(),
            "a success clears the pair"
        );
    }

    #[tokio::test]
    async fn one_address_guessing_many_usernames_is_locked_out() {
        let (store, _dir) = store();
        let throttle = LoginThrottle::new(policy());
        for name in ["a", "b", "c", "d", "e"] {
            assert!(begin(&throttle, &store, at(name, "9.9.9.9")).await.is_ok());
        }
        assert!(begin(&throttle, &store, at("f", "9.9.9.9")).await.is_err());
        assert!(
            begin(&throttle, &store, at("f", "8.8.8.8")).await.is_ok(),
            "other addresses are unaffected"
        );
    }

    #[tokio::test]
    async fn many_addresses_guessing_one_username_are_slowed_not_locked() {
        let (store, _dir) = store();
        let throttle = LoginThrottle::new(policy());
        for i in 0..7 {
            let address = format!("10.0.0.{i}");
            assert!(begin(&throttle, &store, at("alice", &address)).await.is_ok());
        }
        let wait = begin(&throttle, &store, at("alice", "10.0.1.1")).await.unwrap_err();
        assert!(wait <= Duration::from_secs(1), "a slowdown: {wait:?}");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn parallel_attempts_are_counted_before_any_password_is_checked() {
        let (store, _dir) = store();
        let throttle = std::sync::Arc::new(LoginThrottle::new(policy()));
        let tasks: Vec<_> = (0..40)
            .map(|_| {
                let (throttle, store) = (throttle.clone(), store.clone());
                tokio::spawn(async move { begin(&throttle, &store, at("alice", "1.1.1.1")).await.is_ok() })
            })
            .collect();
        let mut passed = 0;
        for task in tasks {
            passed += usize::from(task.await.unwrap());
        }
        assert_eq!(
            passed, 3,
            "as many as one after another: the allowed failures and one more"
        );
    }

    #[tokio::test]
    async fn a_known_device_is_not_slowed_by_a_distributed_guesser() {
        let (store, _dir) = store();
        let throttle = LoginThrottle::new(policy());
        for i in 0..7 {
            let address = format!("10.0.0.{i}");
            assert!(begin(&throttle, &store, at("alice", &address)).await.is_ok());
        }
        assert!(
            begin(&throttle, &store, at("alice", "10.0.1.1")).await.is_err(),
            "slowed"
        );
        let owner = Attempt {
            username: "alice",
            address: "10.0.2.2",
            known_device: true,
        };
        assert!(
            begin(&throttle, &store, owner).await.is_ok(),
            "the owner's device gets in at once"
        );
        // A known device still counts per (username, address): it is no master key.
        assert!(begin(&throttle, &store, owner).await.is_ok());
        assert!(begin(&throttle, &store, owner).await.is_ok());
        assert!(begin(&throttle, &store, owner).await.is_err());
    }

    #[tokio::test]
    async fn wrong_user_codes_lock_the_user_and_the_address_but_not_logins() {
        let (store, _dir) = store();
        let codes = UserCodeThrottle::new(policy());
        for _ in 0..3 {
            assert!(codes.begin(&*store, "u1", "1.1.1.1").await.unwrap().is_ok());
        }
        assert!(
            codes.begin(&*store, "u1", "2.2.2.2").await.unwrap().is_err(),
            "the user is locked"
        );
        assert!(codes.begin(&*store, "u2", "3.3.3.3").await.unwrap().is_ok());
        assert!(codes.begin(&*store, "u3", "3.3.3.3").await.unwrap().is_ok());
        assert!(codes.begin(&*store, "u4", "3.3.3.3").await.unwrap().is_ok());
        assert!(codes.begin(&*store, "u5", "3.3.3.3").await.unwrap().is_ok());
        assert!(codes.begin(&*store, "u6", "3.3.3.3").await.unwrap().is_ok());
        assert!(
            codes.begin(&*store, "u7", "3.3.3.3").await.unwrap().is_err(),
            "the address is locked"
        );
        let logins = LoginThrottle::new(policy());
        assert!(
            begin(&logins, &store, at("u7", "3.3.3.3")).await.is_ok(),
            "logins are counted apart"
        );
        let (store, _dir) = self::store();
        for _ in 0..10 {
            assert!(codes.begin(&*store, "u1", "1.1.1.1").await.unwrap().is_ok());
            codes.found(&*store, "u1", "1.1.1.1").await.unwrap();
        }
    }

    #[tokio::test]
    async fn a_known_device_is_not_locked_out_by_guessers_sharing_its_address() {
        let (store, _dir) = store();
        let throttle = LoginThrottle::new(policy());
        for name in ["a", "b", "c", "d", "e"] {
            assert!(begin(&throttle, &store, at(name, "9.9.9.9")).await.is_ok());
        }
        assert!(
            begin(&throttle, &store, at("alice", "9.9.9.9")).await.is_err(),
            "the address is locked"
        );
        let owner = Attempt {
            username: "alice",
            address: "9.9.9.9",
            known_device: true,
        };
        assert!(
            begin(&throttle, &store, owner).await.is_ok(),
            "but not for alice's own browser"
        );
    }
}
