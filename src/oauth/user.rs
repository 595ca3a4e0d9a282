//! Users: creation, password hashing with Argon2id, and password checks for login.

use argon2::password_hash::{rand_core::OsRng, PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::Argon2;

use super::{now, Error, Provider};
use crate::store::{StoreError, UserRecord};

/// Hashes a password with Argon2id and the crate's default (OWASP-recommended) parameters.
pub fn hash_password(password: &str) -> Result<String, Error> {
    let salt = SaltString::generate(&mut OsRng);
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(Error::server_error)
}

/// A well-formed Argon2id hash with the default parameters, of a random password nobody knows.
/// Checking a password against it costs as much as checking a real one.
pub const DUMMY_PASSWORD_HASH: &str =
    "$argon2id$v=19$m=19456,t=2,p=1$8m+0Yp3JQnsyHR4oAaDXuw$kg/aXuUJIoNePTNPrjoIbQa0mrm1zGv1hRlA4/sOHeM";

fn password_matches(password: &str, phc: &str) -> bool {
    PasswordHash::new(phc).is_ok_and(|hash| Argon2::default().verify_password(password.as_bytes(), &hash).is_ok())
}

fn validate_username(username: &str) -> Result<(), Error> {
    let ok = (1..=64).contains(&username.chars().count())
        && username
            .chars()
            .all(|c| c.is_alphanumeric() || matches!(c, '.' | '_' | '-' | '@'));
    if ok {
        Ok(())
    } else {
        Err(Error::invalid_request(
            "a username is 1-64 letters, digits, '.', '_', '-' or '@'",
        ))
    }
}

fn validate_password(password: &str) -> Result<(), Error> {
    if password.chars().count() < 8 {
        return Err(Error::invalid_request("a password needs at least 8 characters"));
    }
    Ok(())
}

/// Why a login did not succeed.
#[derive(Debug)]
pub enum LoginFailure {
    /// Wrong username or password; which one is never said.
    Invalid,
    /// Too many failures: try again after this long.
    Throttled(std::time::Duration),
    Error(Error),
}

impl Provider {
    /// Checks a login attempt from `address`, applying the login throttle: a locked-out
    /// username or address is refused before any password is hashed.
    pub fn log_in_with_password(
        &self,
        username: &str,
        password: &str,
        address: &str,
    ) -> Result<UserRecord, LoginFailure> {
        if let Some(wait) = self.login_throttle.retry_after(username, address) {
            return Err(LoginFailure::Throttled(wait));
        }
        match self.check_password(username, password) {
            Ok(Some(user)) => {
                self.login_throttle.record_success(username);
                Ok(user)
            }
            Ok(None) => match self.login_throttle.record_failure(username, address) {
                Some(wait) => Err(LoginFailure::Throttled(wait)),
                None => Err(LoginFailure::Invalid),
            },
            Err(e) => Err(LoginFailure::Error(e)),
        }
    }

    /// Creates a user; fails with `invalid_request` when the username is taken or invalid.
    pub fn create_user(&self, username: &str, password: &str, email: Option<String>) -> Result<UserRecord, Error> {
        validate_username(username)?;
        validate_password(password)?;
        let user = UserRecord {
            user_id: super::random_id(),
            username: username.to_string(),
            email,
            password_hash: hash_password(password)?,
            created_at: now(),
        };
        match self.store.insert_user(&user) {
            Err(StoreError::Conflict(_)) => Err(Error::invalid_request(format!("username {username:?} is taken"))),
            other => other.map(|_| user).map_err(Error::from),
        }
    }

    pub fn set_password(&self, username: &str, password: &str) -> Result<(), Error> {
        validate_password(password)?;
        let mut user = self
            .store
            .get_user_by_name(username)?
            .ok_or_else(|| Error::invalid_request("no such user"))?;
        user.password_hash = hash_password(password)?;
        Ok(self.store.update_user(&user)?)
    }

    /// Returns the user if the password is right. Unknown users cost the same hash check as
    /// known ones, so response time does not reveal which usernames exist.
    pub fn check_password(&self, username: &str, password: &str) -> Result<Option<UserRecord>, Error> {
        match self.store.get_user_by_name(username)? {
            Some(user) if password_matches(password, &user.password_hash) => Ok(Some(user)),
            Some(_) => Ok(None),
            None => {
                password_matches(password, DUMMY_PASSWORD_HASH);
                Ok(None)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn password_hashes_are_argon2id_and_verify() {
        let hash = hash_password("correct horse").unwrap();
        assert!(hash.starts_with("$argon2id$"));
        assert!(password_matches("correct horse", &hash));
        assert!(!password_matches("wrong horse", &hash));
    }

    #[test]
    fn the_dummy_hash_is_a_real_argon2id_hash_with_the_default_cost() {
        let hash = PasswordHash::new(DUMMY_PASSWORD_HASH).unwrap();
        let real = hash_password("anything").unwrap();
        let real = PasswordHash::new(&real).unwrap();
        assert_eq!(hash.algorithm, real.algorithm);
        assert_eq!(
            hash.params, real.params,
            "same cost, so an unknown user takes as long as a wrong password"
        );
        assert!(!password_matches("", DUMMY_PASSWORD_HASH));
    }

    #[test]
    fn usernames_are_restricted() {
        assert!(validate_username("alice.smith@example").is_ok());
        assert!(validate_username("").is_err());
        assert!(validate_username("a b").is_err());
        assert!(validate_username("<script>").is_err());
    }
}
