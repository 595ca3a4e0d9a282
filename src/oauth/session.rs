//! Browser sessions for the login and consent pages: server-side records behind an opaque
//! cookie value, each carrying its CSRF token (synchronizer-token pattern).
//!
//! A visitor who is not logged in has no session: nothing is stored until there is a user to
//! remember (review finding 5: every anonymous visit to the login page stored a 12-hour
//! session, so anyone could grow the store without limit). The login form's CSRF token
//! travels instead in a [`LoginForm`] cookie signed with a server secret (double-submit
//! cookie): the form must repeat the token the cookie carries.
//!
//! A browser that logs in also gets a [`DeviceCookie`] naming the username (signed, long-lived):
//! the login throttle lets it past the per-username slowdown, so a password-guessing botnet
//! cannot keep the owner out of their account (see [`super::throttle`]).
//!
//! Both cookies are [signed values](Accounts::sign_value): `{expires_at}.{payload}.{mac}`, the
//! MAC over a purpose, the expiry and the payload, with one server secret kept in the store (so
//! every node shares it), so one purpose's value never passes for another's.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use ring::hmac;
use subtle::ConstantTimeEq;

use super::user::Accounts;
use super::{now, random_token, secret_hash, Error};
use crate::store::{SessionRecord, UserRecord};

/// How long a login form may be left open before submitting it.
pub const LOGIN_FORM_TTL_SECS: i64 = 3600;
/// How long a browser is remembered as a device its user logged in from.
pub const DEVICE_TTL_SECS: i64 = 180 * 24 * 3600;
/// The name of the server secret that signs the cookies.
const COOKIE_SECRET: &str = "cookie-hmac";
const LOGIN_FORM: &str = "login-form";
const DEVICE: &str = "device";

/// A device cookie's value: it names the user who logged in from it, and their password's
/// generation (`session_epoch`), so it ends with a password change, or with the account.
#[derive(Debug, Clone)]
pub struct DeviceCookie(pub String);

/// What a device cookie carries for `user`.
fn device_payload(user: &UserRecord) -> String {
    format!("{}-{}", user.user_id, user.session_epoch)
}

/// A login form's CSRF token for a visitor without a session, and the signed cookie value
/// that carries it: `{expires_at}.{token}.{mac}`.
#[derive(Debug, Clone)]
pub struct LoginForm {
    pub csrf_token: String,
    pub cookie: String,
}

/// A logged-in browser session: the cookie value, its record, and its user.
#[derive(Debug, Clone)]
pub struct Session {
    /// The cookie value (256 random bits); only its hash is stored.
    pub id: String,
    pub record: SessionRecord,
    pub user: UserRecord,
}

impl Session {
    /// Whether `token` is this session's CSRF token (constant-time).
    pub fn csrf_matches(&self, token: &str) -> bool {
        bool::from(token.as_bytes().ct_eq(self.record.csrf_token.as_bytes()))
    }

    pub fn csrf_token(&self) -> &str {
        &self.record.csrf_token
    }

    pub fn user_id(&self) -> &str {
        &self.user.user_id
    }

    /// When the user logged in (OpenID Connect `auth_time`).
    pub fn auth_time(&self) -> i64 {
        self.record.auth_time.unwrap_or_default()
    }

    /// How the user proved who they are in this session (RFC 8176 `amr`).
    pub fn amr(&self) -> &[String] {
        &self.record.amr
    }
}

impl Accounts {
    /// The live session for a cookie value, if it exists, has not expired, and its user still
    /// exists and has not changed their password since (review finding 12): otherwise it is
    /// over, removed, and reads as no session.
    pub async fn session(&self, cookie: Option<&str>) -> Result<Option<Session>, Error> {
        let Some(id) = cookie else { return Ok(None) };
        let hash = secret_hash(id);
        let Some(record) = self.sessions.get_session(&hash).await? else {
            return Ok(None);
        };
        if record.expires_at <= now() {
            return Ok(None);
        }
        let user = match &record.user_id {
            Some(user_id) => self.users.get_user(user_id).await?,
            // An anonymous session left by an earlier version: nothing to keep.
            None => None,
        };
        match user {
            Some(user) if user.session_epoch == record.user_epoch => Ok(Some(Session {
                id: id.to_string(),
                record,
                user,
            })),
            _ => {
                self.sessions.delete_session(&hash).await?;
                Ok(None)
            }
        }
    }

    /// The key that signs cookie values: one server secret shared by every node, made on
    /// first use.
    async fn cookie_key(&self) -> Result<hmac::Key, Error> {
        self.secrets.hmac_key(COOKIE_SECRET).await
    }

    /// A value for the browser to hand back: `payload` (base64url, no dots) signed for
    /// `purpose`, good for `ttl` seconds.
    pub(super) async fn sign_value(&self, purpose: &str, payload: &str, ttl: i64) -> Result<String, Error> {
        let signed = format!("{}.{payload}", now() + ttl);
        let mac = hmac::sign(&self.cookie_key().await?, format!("{purpose}\0{signed}").as_bytes());
        Ok(format!("{signed}.{}", URL_SAFE_NO_PAD.encode(mac.as_ref())))
    }

    /// The payload of a value [`Accounts::sign_value`] made for `purpose`, if its signature
    /// checks and it has not expired.
    pub(super) async fn signed_payload<'a>(&self, purpose: &str, value: &'a str) -> Result<Option<&'a str>, Error> {
        let Some((signed, mac)) = value.rsplit_once('.') else {
            return Ok(None);
        };
        let Some((expires_at, payload)) = signed.split_once('.') else {
            return Ok(None);
        };
        let Ok(mac) = URL_SAFE_NO_PAD.decode(mac) else {
            return Ok(None);
        };
        let message = format!("{purpose}\0{signed}");
        if hmac::verify(&self.cookie_key().await?, message.as_bytes(), &mac).is_err() {
            return Ok(None);
        }
        let live = expires_at.parse::<i64>().is_ok_and(|t| t > now());
        Ok(live.then_some(payload))
    }

    /// A fresh login form for a visitor without a session; nothing is stored.
    pub async fn new_login_form(&self) -> Result<LoginForm, Error> {
        let csrf_token = random_token(32);
        Ok(LoginForm {
            cookie: self.sign_value(LOGIN_FORM, &csrf_token, LOGIN_FORM_TTL_SECS).await?,
            csrf_token,
        })
    }

    /// Whether `submitted` is the CSRF token of the login form whose cookie is `cookie`: the
    /// cookie is ours (its signature checks), unexpired, and carries that token.
    pub async fn login_form_matches(&self, cookie: Option<&str>, submitted: &str) -> Result<bool, Error> {
        let Some(cookie) = cookie else { return Ok(false) };
        Ok(self
            .signed_payload(LOGIN_FORM, cookie)
            .await?
            .is_some_and(|token| bool::from(token.as_bytes().ct_eq(submitted.as_bytes()))))
    }

    /// The device cookie for a browser that just logged in as `user`.
    pub async fn device_cookie(&self, user: &UserRecord) -> Result<DeviceCookie, Error> {
        let value = self.sign_value(DEVICE, &device_payload(user), DEVICE_TTL_SECS).await?;
        Ok(DeviceCookie(value))
    }

    /// Whether `cookie` is a device cookie this server made for the user `username` is now:
    /// the same account (not one of the same name made since) with the same password.
    pub async fn is_known_device(&self, cookie: Option<&str>, username: &str) -> Result<bool, Error> {
        let Some(cookie) = cookie else { return Ok(false) };
        let Some(payload) = self.signed_payload(DEVICE, cookie).await? else {
            return Ok(false);
        };
        let Some(user) = self.users.get_user_by_name(username).await? else {
            return Ok(false);
        };
        Ok(bool::from(payload.as_bytes().ct_eq(device_payload(&user).as_bytes())))
    }

    /// Logs a user in who proved `amr` (RFC 8176): the old session is dropped and a new id
    /// issued, so a session id planted before login is worthless afterwards (session fixation).
    pub async fn log_in(&self, old: Option<&Session>, user: &UserRecord, amr: Vec<String>) -> Result<Session, Error> {
        if let Some(old) = old {
            self.sessions.delete_session(&secret_hash(&old.id)).await?;
        }
        self.new_session(user, now(), amr).await
    }

    pub async fn log_out(&self, session: &Session) -> Result<(), Error> {
        Ok(self.sessions.delete_session(&secret_hash(&session.id)).await?)
    }

    async fn new_session(&self, user: &UserRecord, auth_time: i64, amr: Vec<String>) -> Result<Session, Error> {
        let id = random_token(32);
        let factor_time = (amr.len() > 1).then_some(auth_time);
        let record = SessionRecord {
            user_id: Some(user.user_id.clone()),
            user_epoch: user.session_epoch,
            csrf_token: random_token(32),
            auth_time: Some(auth_time),
            expires_at: now() + self.session_ttl.as_secs() as i64,
            amr,
            factor_time,
        };
        self.sessions.put_session(&secret_hash(&id), &record).await?;
        Ok(Session {
            id,
            record,
            user: user.clone(),
        })
    }
}
