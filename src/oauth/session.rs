//! Browser sessions for the login and consent pages: server-side records behind an opaque
//! cookie value, each carrying its CSRF token (synchronizer-token pattern).
//!
//! A visitor who is not logged in has no session: nothing is stored until there is a user to
//! remember (review finding 5: every anonymous visit to the login page stored a 12-hour
//! session, so anyone could grow the store without limit). The login form's CSRF token
//! travels instead in a [`LoginForm`] cookie signed with a server secret (double-submit
//! cookie): the form must repeat the token the cookie carries.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use ring::hmac;
use subtle::ConstantTimeEq;

use super::{now, random_token, secret_hash, Error, Provider};
use crate::store::{SessionRecord, UserRecord};

/// How long a login form may be left open before submitting it.
pub const LOGIN_FORM_TTL_SECS: i64 = 3600;
/// The name of the server secret that signs login-form cookies.
const LOGIN_FORM_SECRET: &str = "login-form-hmac";

/// A login form's CSRF token for a visitor without a session, and the signed cookie value
/// that carries it: `{expires_at}.{token}.{mac}`.
#[derive(Debug, Clone)]
pub struct LoginForm {
    pub csrf_token: String,
    pub cookie: String,
}

/// A session as the pages see it: the cookie value and its record.
#[derive(Debug, Clone)]
pub struct Session {
    /// The cookie value (256 random bits); only its hash is stored.
    pub id: String,
    pub record: SessionRecord,
}

impl Session {
    /// Whether `token` is this session's CSRF token (constant-time).
    pub fn csrf_matches(&self, token: &str) -> bool {
        bool::from(token.as_bytes().ct_eq(self.record.csrf_token.as_bytes()))
    }

    pub fn user_id(&self) -> Option<&str> {
        self.record.user_id.as_deref()
    }
}

impl Provider {
    /// The live session for a cookie value, if it exists and has not expired. A logged-in
    /// session whose user is gone, or changed their password since (review finding 12), is
    /// over: it is removed and reads as no session.
    pub async fn session(&self, cookie: Option<&str>) -> Result<Option<Session>, Error> {
        let Some(id) = cookie else { return Ok(None) };
        let hash = secret_hash(id);
        let Some(record) = self.store.get_session(&hash).await? else {
            return Ok(None);
        };
        if record.expires_at <= now() {
            return Ok(None);
        }
        if let Some(user_id) = &record.user_id {
            let current = self.store.get_user(user_id).await?;
            if current.is_none_or(|user| user.session_epoch != record.user_epoch) {
                self.store.delete_session(&hash).await?;
                return Ok(None);
            }
        }
        Ok(Some(Session {
            id: id.to_string(),
            record,
        }))
    }

    /// The key that signs login-form cookies: one server secret shared by every node, made on
    /// first use.
    async fn login_form_key(&self) -> Result<hmac::Key, Error> {
        if let Some(key) = self.login_form_key.get() {
            return Ok(key.clone());
        }
        let candidate = secret_hash(&random_token(32));
        let secret = self.store.server_secret(LOGIN_FORM_SECRET, &candidate).await?;
        Ok(self
            .login_form_key
            .get_or_init(|| hmac::Key::new(hmac::HMAC_SHA256, &secret))
            .clone())
    }

    /// A fresh login form for a visitor without a session; nothing is stored.
    pub async fn new_login_form(&self) -> Result<LoginForm, Error> {
        let csrf_token = random_token(32);
        let expires_at = now() + LOGIN_FORM_TTL_SECS;
        let signed = format!("{expires_at}.{csrf_token}");
        let mac = hmac::sign(&self.login_form_key().await?, signed.as_bytes());
        Ok(LoginForm {
            cookie: format!("{signed}.{}", URL_SAFE_NO_PAD.encode(mac.as_ref())),
            csrf_token,
        })
    }

    /// Whether `submitted` is the CSRF token of the login form whose cookie is `cookie`: the
    /// cookie is ours (its signature checks), unexpired, and carries that token.
    pub async fn login_form_matches(&self, cookie: Option<&str>, submitted: &str) -> Result<bool, Error> {
        let Some((signed, mac)) = cookie.and_then(|c| c.rsplit_once('.')) else {
            return Ok(false);
        };
        let Some((expires_at, token)) = signed.split_once('.') else {
            return Ok(false);
        };
        let Ok(mac) = URL_SAFE_NO_PAD.decode(mac) else {
            return Ok(false);
        };
        if hmac::verify(&self.login_form_key().await?, signed.as_bytes(), &mac).is_err() {
            return Ok(false);
        }
        let live = expires_at.parse::<i64>().is_ok_and(|t| t > now());
        Ok(live && bool::from(token.as_bytes().ct_eq(submitted.as_bytes())))
    }

    /// Logs a user in: the old session is dropped and a new id issued, so a session id
    /// planted before login is worthless afterwards (session fixation).
    pub async fn log_in(&self, old: Option<&Session>, user: &UserRecord) -> Result<Session, Error> {
        if let Some(old) = old {
            self.store.delete_session(&secret_hash(&old.id)).await?;
        }
        self.new_session(user, now()).await
    }

    pub async fn log_out(&self, session: &Session) -> Result<(), Error> {
        Ok(self.store.delete_session(&secret_hash(&session.id)).await?)
    }

    async fn new_session(&self, user: &UserRecord, auth_time: i64) -> Result<Session, Error> {
        let id = random_token(32);
        let record = SessionRecord {
            user_id: Some(user.user_id.clone()),
            user_epoch: user.session_epoch,
            csrf_token: random_token(32),
            auth_time: Some(auth_time),
            expires_at: now() + self.config.session_ttl.as_secs() as i64,
        };
        self.store.put_session(&secret_hash(&id), &record).await?;
        Ok(Session { id, record })
    }
}
