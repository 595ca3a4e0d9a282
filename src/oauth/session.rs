//! Browser sessions for the login and consent pages: server-side records behind an opaque
//! cookie value, each carrying its CSRF token (synchronizer-token pattern).

use subtle::ConstantTimeEq;

use super::{now, random_token, secret_hash, Error, Provider};
use crate::store::{SessionRecord, UserRecord};

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
    pub fn session(&self, cookie: Option<&str>) -> Result<Option<Session>, Error> {
        let Some(id) = cookie else { return Ok(None) };
        let hash = secret_hash(id);
        let Some(record) = self.store.get_session(&hash)? else {
            return Ok(None);
        };
        if record.expires_at <= now() {
            return Ok(None);
        }
        if let Some(user_id) = &record.user_id {
            let current = self.store.get_user(user_id)?;
            if current.is_none_or(|user| user.session_epoch != record.user_epoch) {
                self.store.delete_session(&hash)?;
                return Ok(None);
            }
        }
        Ok(Some(Session {
            id: id.to_string(),
            record,
        }))
    }

    /// Starts an anonymous session: it exists only to carry the login form's CSRF token.
    pub fn start_session(&self) -> Result<Session, Error> {
        self.new_session(None, None)
    }

    /// Logs a user in: the old session is dropped and a new id issued, so a session id
    /// planted before login is worthless afterwards (session fixation).
    pub fn log_in(&self, old: Option<&Session>, user: &UserRecord) -> Result<Session, Error> {
        if let Some(old) = old {
            self.store.delete_session(&secret_hash(&old.id))?;
        }
        self.new_session(Some(user), Some(now()))
    }

    pub fn log_out(&self, session: &Session) -> Result<(), Error> {
        Ok(self.store.delete_session(&secret_hash(&session.id))?)
    }

    fn new_session(&self, user: Option<&UserRecord>, auth_time: Option<i64>) -> Result<Session, Error> {
        let id = random_token(32);
        let record = SessionRecord {
            user_id: user.map(|u| u.user_id.clone()),
            user_epoch: user.map_or(0, |u| u.session_epoch),
            csrf_token: random_token(32),
            auth_time,
            expires_at: now() + self.config.session_ttl.as_secs() as i64,
        };
        self.store.put_session(&secret_hash(&id), &record)?;
        Ok(Session { id, record })
    }
}
