//! Signing in: the steps from a submitted login form to a session. The pages only render what
//! [`Accounts::sign_in`] decides: whether the form is ours (CSRF), the login throttle (lockout
//! per username and per address, the known-device exemption), the password check, a disabled
//! account, the fresh session and the device cookie. A user with a second factor gets
//! [`LoginStep::NeedsFactor`] after the password: a signed, short-lived cookie that says the
//! password was right, and [`Accounts::finish_with_code`] takes the code to the session.

use std::net::IpAddr;
use std::time::Duration;

use super::audit::{Caller, Target};
use super::factor::SecondStep;
use super::session::{DeviceCookie, Session};
use super::user::validate_username;
use super::user::Accounts;
use super::{Error, ErrorCode};
use crate::store::UserRecord;

/// A submitted login form, with what the browser sent beside it.
pub struct LoginAttempt<'a> {
    pub username: &'a str,
    pub password: &'a str,
    /// The form's CSRF token: the session's, or (without a session) the login-form cookie's.
    pub csrf_token: &'a str,
    /// The browser's current session, if it has one; it is replaced on success.
    pub session: Option<&'a Session>,
    /// The signed login-form cookie, for a browser without a session.
    pub login_form_cookie: Option<&'a str>,
    /// The browser's [`DeviceCookie`], if it sent one.
    pub device_cookie: Option<&'a str>,
    pub address: Option<IpAddr>,
}

/// What happens after a login form is submitted.
#[derive(Debug)]
pub enum LoginStep {
    /// Signed in: a fresh session, and this browser remembered as a device its user logs in from.
    Done(Box<SignedIn>),
    /// Too many failed attempts for this username or address: try again after this long.
    Locked(Duration),
    /// Every password-check place stayed taken: try again after this long.
    Busy(Duration),
    /// The form again, with this refusal.
    Show(LoginRefusal),
    /// The password was right; now a second factor (the browser keeps this pending login).
    NeedsFactor(PendingFactor),
}

/// A login that passed its password and waits for a second factor: a value for a cookie,
/// signed, naming the user, their password's generation and the factor form's CSRF token.
#[derive(Debug, Clone)]
pub struct PendingFactor {
    pub cookie: String,
}

/// What the second step's form shows.
#[derive(Debug, Clone)]
pub struct PendingForm {
    pub csrf_token: String,
    /// A user who must add an authenticator app first: its secret, to scan or type.
    pub enrolment: Option<super::factor::TotpEnrolment>,
    /// A user with passkeys: the prompt for one of them.
    pub passkey: Option<super::passkey::PasskeyPrompt>,
    /// Whether a code is asked for: the app's (or the one being added), or a recovery code.
    pub code: bool,
}

/// How long a login may wait between its password and its second factor.
pub const PENDING_FACTOR_TTL_SECS: i64 = 300;
const PENDING_FACTOR: &str = "login-factor";

/// A submitted second-factor form: a code, or a passkey's answer.
pub struct CodeAttempt<'a> {
    pub code: &'a str,
    pub passkey: Option<super::passkey::PasskeyAnswer<'a>>,
    pub csrf_token: &'a str,
    /// The pending login's cookie ([`PendingFactor::cookie`]).
    pub pending: Option<&'a str>,
    /// The browser's current session, if it has one; it is replaced on success.
    pub session: Option<&'a Session>,
    pub address: Option<IpAddr>,
}

/// Why the form is shown again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LoginRefusal {
    /// Wrong username or password; which one is never said.
    WrongCredentials,
    /// The password was right, but an operator disabled the account.
    Disabled,
    /// The second factor's code was wrong (or used already).
    WrongCode,
}

/// A completed login.
#[derive(Debug)]
pub struct SignedIn {
    pub session: Session,
    /// `None` when no device cookie could be made (logged; the login still counts).
    pub device: Option<DeviceCookie>,
}

/// Why a password check did not give a user.
enum Refused {
    Step(LoginStep),
    Error(Error),
}

/// How long a login waits for a free password-check place before it is told to come back.
const PASSWORD_CHECK_WAIT: Duration = Duration::from_secs(2);

impl Accounts {
    /// Takes a submitted login form through every step: the form must be ours (else
    /// `access_denied`), then the throttled password check, then a fresh session (the old one is
    /// dropped: session fixation) and a device cookie.
    pub async fn sign_in(&self, attempt: &LoginAttempt<'_>) -> Result<LoginStep, Error> {
        let form_is_ours = match attempt.session {
            Some(session) => session.csrf_matches(attempt.csrf_token),
            None => {
                self.login_form_matches(attempt.login_form_cookie, attempt.csrf_token)
                    .await?
            }
        };
        if !form_is_ours {
            return Err(Error::new(
                ErrorCode::AccessDenied,
                "your login form expired or was not sent by this site (CSRF check failed); go back and try again",
            ));
        }
        let user = match self
            .check_password_attempt(
                attempt.username,
                attempt.password,
                attempt.address,
                attempt.device_cookie,
            )
            .await
        {
            Ok(user) => user,
            Err(Refused::Step(step)) => return Ok(step),
            Err(Refused::Error(e)) => return Err(e),
        };
        if self.second_step(&user).await?.is_some() {
            return Ok(LoginStep::NeedsFactor(self.pending_factor(&user).await?));
        }
        self.signed_in(attempt.session, &user, vec![super::acr::PWD.to_string()])
            .await
    }

    /// The user's pending login after a right password.
    async fn pending_factor(&self, user: &UserRecord) -> Result<PendingFactor, Error> {
        let csrf_token = super::random_token(32);
        let payload = format!("{}-{}-{csrf_token}", user.user_id, user.session_epoch);
        let cookie = self
            .sign_value(PENDING_FACTOR, &payload, PENDING_FACTOR_TTL_SECS)
            .await?;
        Ok(PendingFactor { cookie })
    }

    /// The user of a pending login, if `cookie` is one this server made, unexpired, for the
    /// user as they are now (same password, not disabled), and `csrf_token` is its form's.
    pub async fn pending_user(&self, cookie: Option<&str>, csrf_token: &str) -> Result<Option<UserRecord>, Error> {
        let Some(cookie) = cookie else { return Ok(None) };
        let Some(payload) = self.signed_payload(PENDING_FACTOR, cookie).await? else {
            return Ok(None);
        };
        let mut parts = payload.splitn(3, '-');
        let (Some(user_id), Some(epoch), Some(token)) = (parts.next(), parts.next(), parts.next()) else {
            return Ok(None);
        };
        if !bool::from(subtle::ConstantTimeEq::ct_eq(token.as_bytes(), csrf_token.as_bytes())) {
            return Ok(None);
        }
        let user = self.users.get_user(user_id).await?;
        Ok(user.filter(|u| u.session_epoch.to_string() == epoch && !u.disabled))
    }

    /// The second step a pending login's form shows, if `cookie` is a live pending login: its
    /// CSRF token, and for a user who must add an authenticator app first, the app's secret.
    pub async fn pending_form(&self, cookie: Option<&str>) -> Result<Option<PendingForm>, Error> {
        let Some(cookie) = cookie else { return Ok(None) };
        let Some(payload) = self.signed_payload(PENDING_FACTOR, cookie).await? else {
            return Ok(None);
        };
        let Some(csrf_token) = payload.splitn(3, '-').nth(2).map(str::to_string) else {
            return Ok(None);
        };
        let Some(user) = self.pending_user(Some(cookie), &csrf_token).await? else {
            return Ok(None);
        };
        let enrolment = match self.second_step(&user).await? {
            Some(SecondStep::Enrol) => Some(self.start_totp(&user, &csrf_token).await?),
            _ => None,
        };
        self.factor_form(&user, csrf_token, enrolment).await.map(Some)
    }

    /// The second step's form for `user`: the app being added, if any, or what they have (a
    /// passkey prompt, a code field for their app or recovery codes).
    async fn factor_form(
        &self,
        user: &UserRecord,
        csrf_token: String,
        enrolment: Option<super::factor::TotpEnrolment>,
    ) -> Result<PendingForm, Error> {
        let factors = self.factors.factors_of(&user.user_id).await?;
        let code = enrolment.is_some()
            || factors
                .iter()
                .any(|f| f.factor_id == super::factor::TOTP_ID || f.factor_id == super::factor::RECOVERY_ID);
        let passkey = match enrolment {
            Some(_) => None,
            None => self.passkey_factor_prompt(user, &csrf_token).await?,
        };
        Ok(PendingForm {
            csrf_token,
            enrolment,
            passkey,
            code,
        })
    }

    /// Takes a submitted second-factor form to a session: the pending login must be live and
    /// the form its own (else `access_denied`), then the code is checked (throttled).
    pub async fn finish_with_code(&self, attempt: &CodeAttempt<'_>) -> Result<LoginStep, Error> {
        let pending = self.pending_user(attempt.pending, attempt.csrf_token).await?;
        // No pending login but a session: a step-up (a request asked for more than it has).
        if let (None, Some(session)) = (&pending, attempt.session) {
            if session.csrf_matches(attempt.csrf_token) {
                return self.step_up_with_code(session, attempt).await;
            }
        }
        let Some(user) = pending else {
            return Err(Error::new(
                ErrorCode::AccessDenied,
                "this login took too long or was not started here; log in again",
            ));
        };
        let shown = attempt.address.map(|a| a.to_string());
        let shown = shown.as_deref();
        let check = match self.second_step(&user).await? {
            Some(SecondStep::Code) => match attempt.passkey {
                Some(answer) => self.passkey_check(&user, attempt.csrf_token, answer).await?,
                None => self.check_code(&user, attempt.code, shown).await?,
            },
            // The code proves the app the user is made to add (the pending login owns it).
            Some(SecondStep::Enrol) => {
                self.confirm_totp(&user, attempt.csrf_token, attempt.code, shown)
                    .await?
            }
            // Nothing is asked any more (the policy changed since the password): the password
            // was right.
            None => {
                return self
                    .signed_in(attempt.session, &user, vec![super::acr::PWD.to_string()])
                    .await
            }
        };
        match check {
            super::factor::CodeCheck::Accepted(methods) => {
                let amr = super::acr::adding(&[super::acr::PWD.to_string()], &methods);
                self.signed_in(attempt.session, &user, amr).await
            }
            super::factor::CodeCheck::Wrong => Ok(LoginStep::Show(LoginRefusal::WrongCode)),
            super::factor::CodeCheck::Locked(wait) => Ok(LoginStep::Locked(wait)),
        }
    }

    /// A signed-in user shows a code to raise their session's level (step-up): the same
    /// session, its `amr` grown. A user without an app proves the one they are adding.
    async fn step_up_with_code(&self, session: &Session, attempt: &CodeAttempt<'_>) -> Result<LoginStep, Error> {
        let shown = attempt.address.map(|a| a.to_string());
        let (user, shown) = (&session.user, shown.as_deref());
        let check = match (attempt.passkey, self.user_has_second_factor(user).await?) {
            (Some(answer), _) => self.passkey_check(user, attempt.csrf_token, answer).await?,
            (None, true) => self.check_code(user, attempt.code, shown).await?,
            // Adding the first factor binds the account to it: only after a recent password.
            (None, false) if !self.may_add_first_factor(session) => {
                return Err(Error::new(
                    ErrorCode::AccessDenied,
                    "log in again before adding a second factor to this account",
                ))
            }
            (None, false) => self.confirm_totp(user, &session.id, attempt.code, shown).await?,
        };
        match check {
            super::factor::CodeCheck::Accepted(methods) => {
                let session = self.step_up(session, &methods).await?;
                Ok(LoginStep::Done(Box::new(SignedIn { session, device: None })))
            }
            super::factor::CodeCheck::Wrong => Ok(LoginStep::Show(LoginRefusal::WrongCode)),
            super::factor::CodeCheck::Locked(wait) => Ok(LoginStep::Locked(wait)),
        }
    }

    /// The form of a step-up for a signed-in session: its app's code, or (for a user without
    /// one, where second factors are not off) adding one. `None` where they are off.
    pub async fn step_up_form(&self, session: &Session) -> Result<Option<PendingForm>, Error> {
        if self.mfa_policy(&session.user) == crate::config::MfaPolicy::Off {
            return Ok(None);
        }
        let enrolment = match self.user_has_second_factor(&session.user).await? {
            true => None,
            // The first factor only after a recent password: the form sends to the login.
            false if !self.may_add_first_factor(session) => return Ok(None),
            false => Some(self.start_totp(&session.user, &session.id).await?),
        };
        let csrf_token = session.csrf_token().to_string();
        self.factor_form(&session.user, csrf_token, enrolment).await.map(Some)
    }

    async fn user_has_second_factor(&self, user: &UserRecord) -> Result<bool, Error> {
        Ok(super::factor::has_second_factor(
            &self.factors.factors_of(&user.user_id).await?,
            self.webauthn.is_some(),
        ))
    }

    /// A passkey's answer as a second step: accepted, or wrong (not theirs, not valid).
    async fn passkey_check(
        &self,
        user: &UserRecord,
        csrf_token: &str,
        answer: super::passkey::PasskeyAnswer<'_>,
    ) -> Result<super::factor::CodeCheck, Error> {
        Ok(match self.check_passkey(user, csrf_token, answer).await? {
            Some(methods) => super::factor::CodeCheck::Accepted(methods),
            None => super::factor::CodeCheck::Wrong,
        })
    }

    /// A fresh session for `user`, who proved `amr`, and a device cookie for the browser.
    pub(super) async fn signed_in(
        &self,
        old: Option<&Session>,
        user: &UserRecord,
        amr: Vec<String>,
    ) -> Result<LoginStep, Error> {
        let session = self.log_in(old, user, amr).await?;
        let device = match self.device_cookie(user).await {
            Ok(device) => Some(device),
            Err(e) => {
                tracing::warn!(error = %e, "no device cookie could be made");
                None
            }
        };
        Ok(LoginStep::Done(Box::new(SignedIn { session, device })))
    }

    /// Checks a login attempt from `address`, applying the login throttle: the attempt is
    /// counted before its password is hashed (so parallel guesses cannot outrun the count),
    /// and a locked-out username or address is refused without hashing anything. At most
    /// `max_parallel_password_checks` hashes run at once, off the async workers.
    /// `device_cookie` is the browser's [`super::session::DeviceCookie`], if it sent one.
    async fn check_password_attempt(
        &self,
        username: &str,
        password: &str,
        address: Option<std::net::IpAddr>,
        device_cookie: Option<&str>,
    ) -> Result<UserRecord, Refused> {
        let from = address;
        let address = address.map(crate::net::address_key).unwrap_or_default();
        let known_device = self
            .is_known_device(device_cookie, username)
            .await
            .map_err(Refused::Error)?;
        let attempt = super::throttle::Attempt {
            username,
            address: &address,
            known_device,
        };
        let failed = |e: crate::store::StoreError| Refused::Error(e.into());
        let store = self.counters.as_ref();
        let locks_out = self
            .login_throttle
            .begin(store, &attempt)
            .await
            .map_err(failed)?
            .map_err(|wait| Refused::Step(LoginStep::Locked(wait)))?;
        let place = tokio::time::timeout(PASSWORD_CHECK_WAIT, self.password_checks.clone().acquire_owned()).await;
        let Ok(Ok(place)) = place else {
            self.login_throttle.abandoned(store, &attempt).await.map_err(failed)?;
            return Err(Refused::Step(LoginStep::Busy(PASSWORD_CHECK_WAIT)));
        };
        let checked = self.check_password(username, password).await;
        drop(place);
        match checked {
            Ok(Some(user)) => {
                self.login_throttle.succeeded(store, &attempt).await.map_err(failed)?;
                // Said only to someone who knows the password.
                if user.disabled {
                    return Err(Refused::Step(LoginStep::Show(LoginRefusal::Disabled)));
                }
                Ok(user)
            }
            Ok(None) => {
                if locks_out {
                    // Named only if someone has that name: what was typed may be a password.
                    let user = match validate_username(username) {
                        Ok(()) => self.users.get_user_by_name(username).await.ok().flatten(),
                        Err(_) => None,
                    };
                    let target = match &user {
                        Some(user) => Target::user(user),
                        None => Target {
                            kind: "user",
                            id: "",
                            name: "(no such user)",
                        },
                    };
                    let by = Caller::anonymous(from.map(|a| a.to_string()).as_deref());
                    self.audit.record(&by, "login.lockout", Some(target), "locked").await;
                }
                self.login_failed(&attempt).await
            }
            Err(e) => Err(Refused::Error(e)),
        }
    }

    /// A wrong password: `WrongCredentials`, or `Locked` if that failure locked the attempt out.
    async fn login_failed(&self, attempt: &super::throttle::Attempt<'_>) -> Result<UserRecord, Refused> {
        let failed = |e: crate::store::StoreError| Refused::Error(e.into());
        match self
            .login_throttle
            .retry_after(self.counters.as_ref(), attempt)
            .await
            .map_err(failed)?
        {
            Some(wait) => Err(Refused::Step(LoginStep::Locked(wait))),
            None => Err(Refused::Step(LoginStep::Show(LoginRefusal::WrongCredentials))),
        }
    }
}
