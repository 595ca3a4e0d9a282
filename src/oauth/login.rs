//! Signing in: the steps from a submitted login form to a session. The pages only render what
//! [`Accounts::sign_in`] decides: whether the form is ours (CSRF), the login throttle (lockout
//! per username and per address, the known-device exemption), the password check, a disabled
//! account, the fresh session and the device cookie. A second factor or a passkey is one more
//! [`LoginStep`] here, not page code.

use std::net::IpAddr;
use std::time::Duration;

use super::audit::{Caller, Target};
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
}

/// Why the form is shown again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LoginRefusal {
    /// Wrong username or password; which one is never said.
    WrongCredentials,
    /// The password was right, but an operator disabled the account.
    Disabled,
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
        let session = self.log_in(attempt.session, &user).await?;
        let device = match self.device_cookie(&user).await {
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
