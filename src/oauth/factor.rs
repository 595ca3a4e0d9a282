//! Second factors: one-time codes from an authenticator app (TOTP, RFC 6238) and recovery
//! codes. A user enrols them on their account page; a login that passed the password asks for
//! one ([`super::login`]); so does a request that wants a stronger login than the session has
//! (step-up). Every check is throttled with the login throttle's rules, per user and per
//! address, on counters every node shares.
//!
//! Secrets at rest: a TOTP secret is sealed under a server secret, and recovery codes are kept
//! as HMACs under another. In cluster mode the server secrets are sealed in turn under the
//! key-encryption key, so a reader of the database (a dump, a replica) cannot make codes; the
//! embedded store keeps both in the one data folder, which only the server's account reads. A
//! code is accepted once: a TOTP time step is remembered for as long as its code is valid, on
//! every node; a recovery code is removed by a compare-and-swap, so of parallel uses of one
//! code exactly one succeeds. Codes are throttled per user from every address together (a
//! lockout), besides per address. Changing the factors of an account that has an app needs a
//! session that showed a second factor in the last 15 minutes; removing one for someone else
//! ends their sessions.

use std::time::Duration;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use ring::rand::{SecureRandom, SystemRandom};
use serde::{Deserialize, Serialize};
use subtle::ConstantTimeEq;
use totp_rs::{Algorithm, TOTP};

use super::acr;
use super::audit::{Caller, Target};
use super::session::Session;
use super::user::Accounts;
use super::{now, Error, ErrorCode};
use crate::config::MfaPolicy;
use crate::store::{FactorRecord, FactorSecret, ScratchRoom, UserRecord};

/// The id of a user's authenticator app (one each).
pub const TOTP_ID: &str = "totp";
/// The id of a user's recovery codes (one set each).
pub const RECOVERY_ID: &str = "recovery";

/// The server secret that seals TOTP secrets, and what they are sealed for.
const TOTP_SEAL: &str = "factor-aead";
const TOTP_PURPOSE: &str = "totp-secret";
/// The server secret that keys recovery-code hashes.
const RECOVERY_KEY: &str = "recovery-hmac";
/// What a TOTP enrolment under way is kept as in the scratch space.
const ENROLMENT_PURPOSE: &str = "totp-enrolment";
/// How long an enrolment (its QR code on screen) waits for its first code.
const ENROLMENT_TTL: i64 = 600;

/// RFC 6238 parameters every authenticator app understands: SHA-1, 6 digits, 30 s steps, and
/// one step either side for clocks that drift.
const TOTP_DIGITS: usize = 6;
const TOTP_STEP: u64 = 30;
const TOTP_SKEW_STEPS: i64 = 1;
/// 160-bit secrets (RFC 4226 §4 recommends them).
const TOTP_SECRET_BYTES: usize = 20;
/// How recently a session must have shown a second factor to change the user's factors.
pub const RECENT_FACTOR_SECS: i64 = 900;
/// Recovery codes made at a time, and their size: 16 characters of base32, 80 bits.
pub const RECOVERY_CODES: usize = 10;
const RECOVERY_CODE_CHARS: usize = 16;

/// A factor as its user and the operator see it: never its secret.
#[derive(Debug, Clone, Serialize)]
pub struct FactorSummary {
    pub id: String,
    /// `totp`, `recovery_codes` or `passkey`.
    pub kind: &'static str,
    pub name: String,
    pub created_at: i64,
    pub last_used_at: Option<i64>,
    /// Recovery codes: how many are left, of how many made.
    pub remaining: Option<usize>,
    pub made: Option<u32>,
}

impl FactorSummary {
    fn of(factor: &FactorRecord) -> FactorSummary {
        FactorSummary {
            id: factor.factor_id.clone(),
            kind: factor.secret.kind(),
            name: factor.name.clone(),
            created_at: factor.created_at,
            last_used_at: factor.last_used_at,
            remaining: match &factor.secret {
                FactorSecret::RecoveryCodes { unused, .. } => Some(unused.len()),
                _ => None,
            },
            made: match &factor.secret {
                FactorSecret::RecoveryCodes { made, .. } => Some(*made),
                _ => None,
            },
        }
    }
}

/// An authenticator app being added: the secret shown once, as text and as a QR code.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TotpEnrolment {
    /// The secret in base32, for typing into an app.
    pub secret: String,
    /// The `otpauth://` URL the QR code holds.
    pub url: String,
}

impl TotpEnrolment {
    /// The QR code of [`TotpEnrolment::url`] as an SVG image, drawn here so the page needs no
    /// script to show it.
    pub fn qr_svg(&self) -> String {
        match qrcode::QrCode::new(self.url.as_bytes()) {
            Ok(code) => code
                .render::<qrcode::render::svg::Color>()
                .min_dimensions(200, 200)
                .build(),
            Err(_) => String::new(),
        }
    }
}

/// What a session must do before it changes the user's factors
/// ([`Accounts::may_change_factors`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FactorChange {
    Allowed,
    /// Show a second factor first (the account has one).
    ShowFactor,
    /// Type the password again first (the account has none, and the login is old).
    LogInAgain,
}

/// The second step of a login.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SecondStep {
    /// A code from the user's authenticator app, or a recovery code.
    Code,
    /// The user has no second factor and must add one now: the code proves the new app.
    Enrol,
}

/// What a submitted code did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CodeCheck {
    /// Accepted: these RFC 8176 methods were proved.
    Accepted(Vec<&'static str>),
    /// Not a code of the user's now (or one used already).
    Wrong,
    /// Too many wrong codes: try again after this long.
    Locked(Duration),
}

/// A TOTP generator for `secret`. Usernames may hold characters the otpauth label cannot, so
/// the label's checks are the caller's; the secret is always 160 bits.
fn totp(secret: Vec<u8>, issuer: &str, account: &str) -> TOTP {
    TOTP::new_unchecked(
        Algorithm::SHA1,
        TOTP_DIGITS,
        0,
        TOTP_STEP,
        secret,
        Some(issuer.to_string()),
        account.to_string(),
    )
}

fn random_bytes(len: usize) -> Result<Vec<u8>, Error> {
    let mut bytes = vec![0u8; len];
    SystemRandom::new()
        .fill(&mut bytes)
        .map_err(|_| Error::server_error("the system random number generator failed"))?;
    Ok(bytes)
}

/// A code as typed: spaces and dashes dropped, letters lowercase.
fn normalized(code: &str) -> String {
    code.chars()
        .filter(|c| !c.is_whitespace() && *c != '-')
        .flat_map(char::to_lowercase)
        .collect()
}

/// Recovery codes are shown as `xxxx-xxxx-xxxx-xxxx`.
fn grouped(code: &str) -> String {
    code.as_bytes()
        .chunks(4)
        .map(|chunk| String::from_utf8_lossy(chunk).into_owned())
        .collect::<Vec<_>>()
        .join("-")
}

impl Accounts {
    /// The user's factors, as they and the operator may see them.
    pub async fn factors(&self, user_id: &str) -> Result<Vec<FactorSummary>, Error> {
        Ok(self
            .factors
            .factors_of(user_id)
            .await?
            .iter()
            .map(FactorSummary::of)
            .collect())
    }

    /// What a login as `user` asks after the password: a code from the user's authenticator
    /// app if they have one, or (when second factors are required of them) adding one;
    /// nothing when second factors are off, or optional and the user has none.
    pub async fn second_step(&self, user: &UserRecord) -> Result<Option<SecondStep>, Error> {
        let policy = self.mfa_policy(user);
        if policy == MfaPolicy::Off {
            return Ok(None);
        }
        let factors = self.factors.factors_of(&user.user_id).await?;
        Ok(match (has_second_factor(&factors, self.webauthn.is_some()), policy) {
            (true, _) => Some(SecondStep::Code),
            (false, MfaPolicy::Required) => Some(SecondStep::Enrol),
            (false, _) => None,
        })
    }

    /// The second-factor policy that applies to `user`.
    pub(crate) fn mfa_policy(&self, user: &UserRecord) -> MfaPolicy {
        mfa_policy_of(self.mfa, self.operator_mfa, user)
    }

    /// Starts adding an authenticator app for `user`: a new secret, kept (sealed) for `owner`
    /// (their session, or their pending login) until [`Accounts::confirm_totp`] sees a first
    /// code made with it. An enrolment already under way for `owner` is shown again.
    pub async fn start_totp(&self, user: &UserRecord, owner: &str) -> Result<TotpEnrolment, Error> {
        if self.mfa_policy(user) == MfaPolicy::Off {
            return Err(Error::new(
                ErrorCode::AccessDenied,
                "second factors are switched off on this server",
            ));
        }
        if let Some(enrolment) = self.totp_enrolment(owner).await? {
            return Ok(enrolment);
        }
        let generator = totp(random_bytes(TOTP_SECRET_BYTES)?, &self.issuer_host, &user.username);
        let enrolment = TotpEnrolment {
            secret: generator.get_secret_base32(),
            url: generator.get_url(),
        };
        let room = ScratchRoom::Start;
        self.scratch
            .put_sealed(ENROLMENT_PURPOSE, owner, &enrolment, ENROLMENT_TTL, room)
            .await?;
        Ok(enrolment)
    }

    /// The enrolment under way for `owner`, if any.
    pub async fn totp_enrolment(&self, owner: &str) -> Result<Option<TotpEnrolment>, Error> {
        self.scratch.get_sealed(ENROLMENT_PURPOSE, owner).await
    }

    /// Finishes adding an authenticator app for `user`: `code` must be its code now (checked
    /// like a login's, throttled). On [`CodeCheck::Accepted`] the app is the user's second
    /// factor (a user has one app).
    pub async fn confirm_totp(
        &self,
        user: &UserRecord,
        owner: &str,
        code: &str,
        address: Option<&str>,
    ) -> Result<CodeCheck, Error> {
        let Some(enrolment) = self.totp_enrolment(owner).await? else {
            return Err(Error::invalid_request(
                "no authenticator app is being added (it took longer than ten minutes); start again",
            ));
        };
        let secret = totp_rs::Secret::Encoded(enrolment.secret.clone())
            .to_bytes()
            .map_err(|_| Error::server_error("an enrolment's secret is malformed"))?;
        let typed = normalized(code);
        let check = self
            .throttled(user, address, |this| {
                let (secret, typed) = (secret.clone(), typed.clone());
                async move { Ok(this.totp_matches(user, &secret, &typed).await?.then(|| vec![acr::OTP])) }
            })
            .await?;
        let CodeCheck::Accepted(_) = check else {
            return Ok(check);
        };
        let sealed = self.secrets.seal(TOTP_SEAL, TOTP_PURPOSE, &secret).await?;
        let factor = FactorRecord {
            factor_id: TOTP_ID.to_string(),
            user_id: user.user_id.clone(),
            name: "Authenticator app".to_string(),
            created_at: now(),
            last_used_at: Some(now()),
            revision: first_revision(),
            secret: FactorSecret::Totp {
                sealed: URL_SAFE_NO_PAD.encode(sealed),
            },
        };
        if !self.factors.insert_factor(&factor).await? {
            return Err(Error::invalid_request(
                "this account has an authenticator app already; remove it first",
            ));
        }
        self.durability.durable().await?;
        let by = Caller::user(user, address);
        self.audit
            .record(&by, "factor.added", Some(Target::user(user)), TOTP_ID)
            .await;
        Ok(check)
    }

    /// Makes a new set of recovery codes for the user, replacing any earlier set; the codes
    /// are returned to be shown once, and only their keyed hashes are kept.
    pub async fn new_recovery_codes(&self, by: &Caller, user: &UserRecord) -> Result<Vec<String>, Error> {
        let key = self.secrets.hmac_key(RECOVERY_KEY).await?;
        let alphabet = b"abcdefghijklmnopqrstuvwxyz234567";
        let mut codes = Vec::with_capacity(RECOVERY_CODES);
        let mut unused = Vec::with_capacity(RECOVERY_CODES);
        for _ in 0..RECOVERY_CODES {
            let code: String = random_bytes(RECOVERY_CODE_CHARS)?
                .iter()
                .map(|b| alphabet[usize::from(b & 31)] as char)
                .collect();
            unused.push(hex(ring::hmac::sign(&key, code.as_bytes()).as_ref()));
            codes.push(grouped(&code));
        }
        let mut factor = FactorRecord {
            factor_id: RECOVERY_ID.to_string(),
            user_id: user.user_id.clone(),
            name: "Recovery codes".to_string(),
            created_at: now(),
            last_used_at: None,
            revision: first_revision(),
            secret: FactorSecret::RecoveryCodes {
                unused,
                made: RECOVERY_CODES as u32,
            },
        };
        // A set replaces the one before it, whoever wrote that one last.
        loop {
            if self.factors.insert_factor(&factor).await? {
                break;
            }
            let stored = self.factors.factors_of(&user.user_id).await?;
            let Some(old) = stored.iter().find(|f| f.factor_id == RECOVERY_ID) else {
                continue;
            };
            factor.revision = old.revision + 1;
            if self.factors.replace_factor(&factor, old.revision).await? {
                break;
            }
        }
        self.durability.durable().await?;
        self.audit
            .record(by, "factor.added", Some(Target::user(user)), "recovery_codes")
            .await;
        Ok(codes)
    }

    /// Removes one of the user's factors (by them, or an operator); whether it was there.
    /// Removed by someone else (an operator, an admin client, the CLI: a lost or stolen device),
    /// every session the user has ends too: what the factor proved must not outlive it.
    pub async fn remove_factor(&self, by: &Caller, user: &UserRecord, factor_id: &str) -> Result<bool, Error> {
        let removed = self.factors.delete_factor(&user.user_id, factor_id).await?;
        if removed {
            if !is_self(by, user) {
                self.end_sessions(user).await?;
            }
            self.durability.durable().await?;
            self.audit
                .record(by, "factor.removed", Some(Target::user(user)), factor_id)
                .await;
        }
        Ok(removed)
    }

    /// Removes every factor of the user (`tessera user reset-factors`, the console); how many.
    pub async fn reset_factors(&self, by: &Caller, user: &UserRecord) -> Result<u64, Error> {
        let removed = self.factors.delete_factors_of(&user.user_id).await?;
        if !is_self(by, user) {
            self.end_sessions(user).await?;
        }
        self.durability.durable().await?;
        self.audit
            .record(by, "factor.reset", Some(Target::user(user)), &removed.to_string())
            .await;
        Ok(removed)
    }

    /// Checks a code `user` typed as their second factor: their authenticator app's code now,
    /// or one of their recovery codes. Throttled like a password.
    pub async fn check_code(&self, user: &UserRecord, code: &str, address: Option<&str>) -> Result<CodeCheck, Error> {
        self.throttled(user, address, |this| async move {
            let typed = normalized(code);
            if typed.len() == TOTP_DIGITS && typed.bytes().all(|b| b.is_ascii_digit()) {
                let factors = this.factors.factors_of(&user.user_id).await?;
                let Some(app) = factors.iter().find(|f| f.factor_id == TOTP_ID) else {
                    return Ok(None);
                };
                let FactorSecret::Totp { sealed } = &app.secret else {
                    return Ok(None);
                };
                let sealed = URL_SAFE_NO_PAD
                    .decode(sealed)
                    .map_err(|_| Error::server_error("a sealed TOTP secret is malformed"))?;
                let Some(secret) = this.secrets.open(TOTP_SEAL, TOTP_PURPOSE, &sealed).await? else {
                    return Err(Error::server_error("a TOTP secret no longer opens"));
                };
                if !this.totp_matches(user, &secret, &typed).await? {
                    return Ok(None);
                }
                this.mark_used(app).await;
                Ok(Some(vec![acr::OTP]))
            } else if this.use_recovery_code(user, &typed, address).await? {
                Ok(Some(vec![acr::OTP]))
            } else {
                Ok(None)
            }
        })
        .await
    }

    /// Ends every session of `user`: their session generation moves on (as a password change
    /// does), so each session, pending login and device cookie made before reads as over.
    async fn end_sessions(&self, user: &UserRecord) -> Result<(), Error> {
        if let Some(mut stored) = self.users.get_user(&user.user_id).await? {
            stored.session_epoch += 1;
            self.users.update_user(&stored).await?;
        }
        Ok(())
    }

    /// Records the session as having proved `methods` just now (a step-up): the same session,
    /// its `amr` grown.
    /// A session that ended meanwhile (a logout) is not brought back.
    pub async fn step_up(&self, session: &Session, methods: &[&str]) -> Result<Session, Error> {
        let hash = super::secret_hash(&session.id);
        if self.sessions.get_session(&hash).await?.is_none() {
            return Err(Error::new(ErrorCode::AccessDenied, "this session ended; log in again"));
        }
        let mut stepped = session.clone();
        stepped.record.amr = acr::adding(&session.record.amr, methods);
        stepped.record.factor_time = Some(now());
        self.sessions.put_session(&hash, &stepped.record).await?;
        Ok(stepped)
    }

    /// What `session` must do before it may change the user's factors. An account with a
    /// second factor: show one in the last [`RECENT_FACTOR_SECS`] (a password alone, or a
    /// stolen session of a day ago, must not take the account's factors over). An account
    /// without one: a password typed in the last [`RECENT_FACTOR_SECS`], since the first factor
    /// binds the account to whoever adds it (a passkey then signs in without the password).
    /// Where second factors are off there is nothing to change.
    pub async fn may_change_factors(&self, session: &Session) -> Result<FactorChange, Error> {
        if self.mfa_policy(&session.user) == MfaPolicy::Off {
            return Ok(FactorChange::Allowed);
        }
        let factors = self.factors.factors_of(session.user_id()).await?;
        let recent = |time: Option<i64>| time.is_some_and(|t| now() - t <= RECENT_FACTOR_SECS);
        Ok(if has_second_factor(&factors, self.webauthn.is_some()) {
            let shown = acr::Level::of(session.amr()) >= acr::Level::MultiFactor;
            match shown && recent(session.record.factor_time) {
                true => FactorChange::Allowed,
                false => FactorChange::ShowFactor,
            }
        } else {
            match recent(session.record.auth_time) {
                true => FactorChange::Allowed,
                false => FactorChange::LogInAgain,
            }
        })
    }

    /// Whether `session` may add the user's first factor on the way (a request that needs two
    /// factors): only after a password typed in the last [`RECENT_FACTOR_SECS`].
    pub fn may_add_first_factor(&self, session: &Session) -> bool {
        session
            .record
            .auth_time
            .is_some_and(|t| now() - t <= RECENT_FACTOR_SECS)
    }

    /// Runs `check` as one attempt of the login throttle for `user` from `address`: refused
    /// while locked out, counted as a failure unless it accepts. A lockout it starts is
    /// recorded in the audit trail (a burst of wrong codes).
    async fn throttled<'a, F, Fut>(
        &'a self,
        user: &'a UserRecord,
        address: Option<&str>,
        check: F,
    ) -> Result<CodeCheck, Error>
    where
        F: FnOnce(&'a Accounts) -> Fut,
        Fut: std::future::Future<Output = Result<Option<Vec<&'static str>>, Error>>,
    {
        let address_key = address
            .and_then(|a| a.parse().ok())
            .map(crate::net::address_key)
            .unwrap_or_default();
        // Codes are counted apart from passwords, under keys no username can have: per user and
        // address, per address (as logins are), and per user from every address together. The
        // last is a lockout, not the login throttle's slowdown: whoever guesses codes has the
        // password already, so keeping them out matters more than sparing the owner a wait,
        // and guesses spread over many addresses must not add up to a million tries.
        let (per_address, per_user) = (
            format!("\0factor\0{}", user.user_id),
            format!("\0factor-user\0{}", user.user_id),
        );
        let attempts = [
            super::throttle::Attempt {
                username: &per_address,
                address: &address_key,
                known_device: false,
            },
            // A "known device" attempt touches only its (user, address) count; with one address
            // for everyone, that is a count of the user's codes from anywhere.
            super::throttle::Attempt {
                username: &per_user,
                address: "",
                known_device: true,
            },
        ];
        let store = self.counters.as_ref();
        let mut locks_out = false;
        for (begun, attempt) in attempts.iter().enumerate() {
            match self.login_throttle.begin(store, attempt).await? {
                Ok(locks) => locks_out |= locks,
                Err(wait) => {
                    for earlier in &attempts[..begun] {
                        self.login_throttle.abandoned(store, earlier).await?;
                    }
                    return Ok(CodeCheck::Locked(wait));
                }
            }
        }
        if let Some(methods) = check(self).await? {
            for attempt in &attempts {
                self.login_throttle.succeeded(store, attempt).await?;
            }
            return Ok(CodeCheck::Accepted(methods));
        }
        if locks_out {
            let by = Caller::user(user, address);
            self.audit
                .record(&by, "factor.lockout", Some(Target::user(user)), "locked")
                .await;
        }
        let mut wait = None;
        for attempt in &attempts {
            wait = wait.max(self.login_throttle.retry_after(store, attempt).await?);
        }
        Ok(match wait {
            Some(wait) => CodeCheck::Locked(wait),
            None => CodeCheck::Wrong,
        })
    }

    /// Whether `code` is the code of `secret` within one step of now, and its step was not
    /// used before (remembered on every node until the code expires).
    async fn totp_matches(&self, user: &UserRecord, secret: &[u8], code: &str) -> Result<bool, Error> {
        let generator = totp(secret.to_vec(), &self.issuer_host, &user.username);
        let step_now = now() / TOTP_STEP as i64;
        for step in step_now - TOTP_SKEW_STEPS..=step_now + TOTP_SKEW_STEPS {
            let expected = generator.generate((step.max(0) as u64) * TOTP_STEP);
            if !bool::from(expected.as_bytes().ct_eq(code.as_bytes())) {
                continue;
            }
            let key = format!("totp\0{}\0{step}", user.user_id);
            let valid_until_ms = (step + TOTP_SKEW_STEPS + 1) * TOTP_STEP as i64 * 1000;
            return Ok(self.counters.remember_once(key.as_bytes(), valid_until_ms).await?);
        }
        Ok(false)
    }

    /// Uses up one of the user's recovery codes, if `typed` is one; recorded in the trail.
    async fn use_recovery_code(&self, user: &UserRecord, typed: &str, address: Option<&str>) -> Result<bool, Error> {
        if typed.len() != RECOVERY_CODE_CHARS {
            return Ok(false);
        }
        let key = self.secrets.hmac_key(RECOVERY_KEY).await?;
        let hash = hex(ring::hmac::sign(&key, typed.as_bytes()).as_ref());
        loop {
            let factors = self.factors.factors_of(&user.user_id).await?;
            let Some(set) = factors.into_iter().find(|f| f.factor_id == RECOVERY_ID) else {
                return Ok(false);
            };
            let FactorSecret::RecoveryCodes { unused, made } = &set.secret else {
                return Ok(false);
            };
            let Some(at) = unused
                .iter()
                .position(|h| bool::from(h.as_bytes().ct_eq(hash.as_bytes())))
            else {
                return Ok(false);
            };
            let mut left = unused.clone();
            left.remove(at);
            let used = FactorRecord {
                last_used_at: Some(now()),
                revision: set.revision + 1,
                secret: FactorSecret::RecoveryCodes {
                    unused: left.clone(),
                    made: *made,
                },
                ..set.clone()
            };
            // Another use of a code of this set got in first: read it again.
            if !self.factors.replace_factor(&used, set.revision).await? {
                continue;
            }
            self.durability.durable().await?;
            let by = Caller::user(user, address);
            let outcome = format!("{} left", left.len());
            self.audit
                .record(&by, "factor.recovery_code_used", Some(Target::user(user)), &outcome)
                .await;
            return Ok(true);
        }
    }

    /// Notes when a factor was last used (best effort: a lost race loses only the time).
    async fn mark_used(&self, factor: &FactorRecord) {
        let used = FactorRecord {
            last_used_at: Some(now()),
            revision: factor.revision + 1,
            ..factor.clone()
        };
        if let Err(e) = self.factors.replace_factor(&used, factor.revision).await {
            tracing::warn!(error = %e, "a factor's last use could not be recorded");
        }
    }
}

/// Whether `by` is `user` acting on their own account.
fn is_self(by: &Caller, user: &UserRecord) -> bool {
    by.actor.kind == "user" && by.actor.id == user.user_id
}

/// The revision a new factor starts at: never one an earlier factor of the same id had (a
/// write that read the factor before it was removed and added again must not land on the new
/// one), since it is the time in microseconds.
pub(super) fn first_revision() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(1, |d| d.as_micros() as u64)
}

/// The second-factor policy for `user` under the server's settings for users and operators.
pub(crate) fn mfa_policy_of(mfa: MfaPolicy, operator_mfa: MfaPolicy, user: &UserRecord) -> MfaPolicy {
    if user.operator {
        operator_mfa
    } else {
        mfa
    }
}

/// Whether these factors include an authenticator app or a passkey (what a login's second
/// step asks for; recovery codes stand in for them, not beside them). Passkeys count only
/// where they can be used (`passkeys_usable`): after the issuer moved to an IP address, a
/// passkey-only user is treated as having no factor rather than asked for one they cannot show.
pub(crate) fn has_second_factor(factors: &[FactorRecord], passkeys_usable: bool) -> bool {
    factors
        .iter()
        .any(|f| f.factor_id == TOTP_ID || (passkeys_usable && is_passkey(f)))
}

/// Whether this factor is a passkey.
pub(crate) fn is_passkey(factor: &FactorRecord) -> bool {
    matches!(factor.secret, FactorSecret::Passkey { .. })
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_read_as_typed_and_shown_in_groups() {
        assert_eq!(normalized(" 123 456 "), "123456");
        assert_eq!(normalized("ABCD-efgh-2345-6789"), "abcdefgh23456789");
        assert_eq!(grouped("abcdefgh23456789"), "abcd-efgh-2345-6789");
    }

    #[test]
    fn the_rfc_6238_test_vector_for_sha_1() {
        // RFC 6238 Appendix B: the 20-byte ASCII secret "12345678901234567890", T = 59 s,
        // 8 digits: 94287082. With 6 digits, the last six.
        let generator = totp(b"12345678901234567890".to_vec(), "tessera.example", "alice");
        assert_eq!(generator.generate(59), "287082");
        assert_eq!(generator.generate(1111111109), "081804");
    }

    #[test]
    fn a_passkey_counts_as_a_second_factor_only_where_passkeys_can_be_used() {
        let factor = |id: &str, secret: FactorSecret| FactorRecord {
            factor_id: id.into(),
            user_id: "u".into(),
            name: id.into(),
            created_at: 0,
            last_used_at: None,
            revision: 1,
            secret,
        };
        let passkey = factor(
            "passkey-1",
            FactorSecret::Passkey {
                credential: serde_json::json!({}),
            },
        );
        let codes = factor(
            RECOVERY_ID,
            FactorSecret::RecoveryCodes {
                unused: vec![],
                made: 10,
            },
        );
        assert!(has_second_factor(std::slice::from_ref(&passkey), true));
        // The issuer moved to an IP address: the login does not ask for a passkey that cannot
        // be shown (the review's L5), and recovery codes alone are no second factor.
        assert!(!has_second_factor(&[passkey, codes.clone()], false));
        assert!(!has_second_factor(&[codes], true));
        let app = factor(TOTP_ID, FactorSecret::Totp { sealed: String::new() });
        assert!(has_second_factor(&[app], false));
    }

    #[test]
    fn the_qr_code_is_an_svg_of_the_url() {
        let enrolment = TotpEnrolment {
            secret: "JBSWY3DPEHPK3PXP".into(),
            url: "otpauth://totp/tessera.example:alice?secret=JBSWY3DPEHPK3PXP&issuer=tessera.example".into(),
        };
        let svg = enrolment.qr_svg();
        assert!(svg.contains("<svg") && svg.contains("</svg>"), "{svg}");
    }
}
