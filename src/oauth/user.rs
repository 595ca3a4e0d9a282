//! Users: creation, password hashing with Argon2id, and password checks for login; and
//! [`Accounts`], the service that owns users, browser sessions ([`super::session`]) and
//! signing in ([`super::login`]).

use std::sync::Arc;
use std::time::Duration;

use super::audit::{Audit, Caller, Target};
use super::scratch::Scratch;
use super::secrets::Secrets;
use super::throttle::LoginThrottle;
use super::{now, Durability, Error, Provider};
use crate::config::Config;
use crate::config::MfaPolicy;
use crate::store::{
    EphemeralStore, FactorStore, GrantStore, SessionStore, Store, StoreError, UserProfile, UserRecord, UserStore,
};

/// Accounts: users, their browser sessions and signing in, with the login throttle and the
/// password-check places. Its fields are the `oauth` module's, so that `session.rs` and
/// `login.rs` beside this file can hold their parts of it.
pub(crate) struct Accounts {
    pub(super) users: Arc<dyn UserStore>,
    pub(super) sessions: Arc<dyn SessionStore>,
    /// Second factors ([`super::factor`]).
    pub(super) factors: Arc<dyn FactorStore>,
    /// The login throttle's shared counters, and the TOTP steps used.
    pub(super) counters: Arc<dyn EphemeralStore>,
    /// Enrolments under way, sealed.
    pub(super) scratch: Arc<Scratch>,
    /// Second factors for users and for operators.
    pub(super) mfa: MfaPolicy,
    pub(super) operator_mfa: MfaPolicy,
    /// The issuer's host: the name authenticator apps list a code under.
    pub(super) issuer_host: String,
    /// Disabling a user revokes the grants they gave.
    pub(super) grants: Arc<dyn GrantStore>,
    pub(super) durability: Durability,
    /// Cookie values are signed with a server secret.
    pub(super) secrets: Arc<Secrets>,
    pub(super) audit: Arc<Audit>,
    pub(super) session_ttl: Duration,
    /// Failed-login counts, per username and per client address.
    pub(super) login_throttle: LoginThrottle,
    /// Places for password checks (Argon2id takes 19 MiB each): what bounds login memory.
    pub(super) password_checks: Arc<tokio::sync::Semaphore>,
    /// The WebAuthn relying party (the issuer), where the issuer can be one ([`super::passkey`]).
    pub(super) webauthn: Option<webauthn_rs::Webauthn>,
}

impl Accounts {
    pub(super) fn new(
        store: &Arc<dyn Store>,
        durability: &Durability,
        secrets: &Arc<Secrets>,
        scratch: &Arc<Scratch>,
        audit: &Arc<Audit>,
        config: &Config,
        issuer: &str,
    ) -> Accounts {
        Accounts {
            users: store.clone(),
            sessions: store.clone(),
            factors: store.clone(),
            counters: store.clone(),
            scratch: scratch.clone(),
            mfa: config.mfa,
            operator_mfa: config.operator_mfa,
            issuer_host: url::Url::parse(issuer)
                .ok()
                .and_then(|u| u.host_str().map(str::to_string))
                .unwrap_or_else(|| issuer.to_string()),
            grants: store.clone(),
            durability: durability.clone(),
            secrets: secrets.clone(),
            audit: audit.clone(),
            session_ttl: config.session_ttl,
            login_throttle: LoginThrottle::new(config.login_throttle),
            password_checks: Arc::new(tokio::sync::Semaphore::new(config.max_parallel_password_checks.max(1))),
            webauthn: super::passkey::relying_party(issuer),
        }
    }
}

/// Accounts as the front offers them to other crates (the tests seed users with these).
impl Provider {
    /// Creates a user (`Accounts::create_user`).
    pub async fn create_user(
        &self,
        by: &Caller,
        username: &str,
        password: &str,
        email: Option<String>,
    ) -> Result<UserRecord, Error> {
        self.accounts.create_user(by, username, password, email).await
    }

    /// Changes a user's email and profile claims (`Accounts::update_profile`).
    pub async fn update_profile(&self, by: &Caller, user_id: &str, edit: ProfileEdit) -> Result<UserRecord, Error> {
        self.accounts.update_profile(by, user_id, edit).await
    }

    /// Sets a user's password (`Accounts::set_password`).
    pub async fn set_password(&self, by: &Caller, user_id: &str, password: &str) -> Result<(), Error> {
        self.accounts.set_password(by, user_id, password).await
    }

    /// The user if the password is right (`Accounts::check_password`).
    pub async fn check_password(&self, username: &str, password: &str) -> Result<Option<UserRecord>, Error> {
        self.accounts.check_password(username, password).await
    }
}

/// Hashes a password with Argon2id and the crate's default (OWASP-recommended) parameters.
pub fn hash_password(password: &str) -> Result<String, Error> {
    super::password::hash_password(password).map_err(Error::server_error)
}

/// A well-formed Argon2id hash with the default parameters, of a random password nobody knows.
/// Checking a password against it costs as much as checking a real one.
pub(crate) const DUMMY_PASSWORD_HASH: &str =
    "$argon2id$v=19$m=19456,t=2,p=1$8m+0Yp3JQnsyHR4oAaDXuw$kg/aXuUJIoNePTNPrjoIbQa0mrm1zGv1hRlA4/sOHeM";

use super::password::password_matches;

/// [`hash_password`] on the blocking pool: Argon2id takes tens of milliseconds of CPU, which
/// must not hold an async worker.
async fn hash_password_off_workers(password: &str) -> Result<String, Error> {
    let password = password.to_string();
    tokio::task::spawn_blocking(move || hash_password(&password))
        .await
        .map_err(Error::server_error)?
}

/// [`password_matches`] on the blocking pool.
async fn password_matches_off_workers(password: &str, phc: &str) -> Result<bool, Error> {
    let (password, phc) = (password.to_string(), phc.to_string());
    tokio::task::spawn_blocking(move || password_matches(&password, &phc))
        .await
        .map_err(Error::server_error)
}

pub(super) fn validate_username(username: &str) -> Result<(), Error> {
    let ok = (1..=64).contains(&username.chars().count())
        && username
            .chars()
            .all(|c| (c.is_alphanumeric() || matches!(c, '.' | '_' | '-' | '@')) && !super::text::is_deceptive(c));
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

/// A user's editable details: what the profile page and `tessera user set-profile` change.
/// Blank values clear a field.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ProfileEdit {
    pub email: Option<String>,
    /// `None` keeps the current flag, except that a changed email is unverified.
    pub email_verified: Option<bool>,
    pub profile: UserProfile,
}

impl ProfileEdit {
    /// The user's current details, as a starting point for an edit.
    pub fn of(user: &UserRecord) -> ProfileEdit {
        ProfileEdit {
            email: user.email.clone(),
            email_verified: None,
            profile: user.profile.clone(),
        }
    }
}

/// Changes to a user's details, as `tessera user set-profile` flags and admin API fields:
/// an absent field keeps its value, an empty one clears it (OpenID Connect Core §5.1 claims).
#[derive(clap::Args, Debug, Default, Clone)]
pub struct ProfileChanges {
    #[arg(long)]
    pub name: Option<String>,
    #[arg(long)]
    pub given_name: Option<String>,
    #[arg(long)]
    pub family_name: Option<String>,
    #[arg(long)]
    pub nickname: Option<String>,
    #[arg(long)]
    pub email: Option<String>,
    /// URL of a profile picture.
    #[arg(long)]
    pub picture: Option<String>,
    #[arg(long)]
    pub website: Option<String>,
    /// BCP 47 language tag, e.g. en-GB.
    #[arg(long)]
    pub locale: Option<String>,
    /// IANA time zone, e.g. Europe/Paris.
    #[arg(long)]
    pub zoneinfo: Option<String>,
}

impl ProfileChanges {
    /// Applies the given flags to `edit`; an absent flag keeps the current value.
    pub fn apply(&self, edit: &mut ProfileEdit) {
        let profile = &mut edit.profile;
        for (flag, slot) in [
            (&self.name, &mut profile.name),
            (&self.given_name, &mut profile.given_name),
            (&self.family_name, &mut profile.family_name),
            (&self.nickname, &mut profile.nickname),
            (&self.email, &mut edit.email),
            (&self.picture, &mut profile.picture),
            (&self.website, &mut profile.website),
            (&self.locale, &mut profile.locale),
            (&self.zoneinfo, &mut profile.zoneinfo),
        ] {
            if let Some(value) = flag {
                *slot = Some(value.clone());
            }
        }
    }
}

/// Trims a field; blank means absent.
fn normalized(value: &Option<String>) -> Option<String> {
    value
        .as_deref()
        .map(str::trim)
        .filter(|v| !v.is_empty())
        .map(str::to_string)
}

fn validate_email(email: &str) -> Result<(), Error> {
    let ok = email.len() <= 254
        && !email.chars().any(|c| c.is_whitespace() || c.is_control())
        && email
            .split_once('@')
            .is_some_and(|(local, domain)| !local.is_empty() && domain.contains('.') && !domain.contains('@'));
    if ok {
        Ok(())
    } else {
        Err(Error::invalid_request(format!("{email:?} is not an email address")))
    }
}

/// Checks and normalizes profile fields: plain text of a sane length, http(s) URLs, and the
/// shapes of a language tag and a time zone name.
fn validated_profile(profile: &UserProfile) -> Result<UserProfile, Error> {
    let profile = UserProfile {
        name: normalized(&profile.name),
        given_name: normalized(&profile.given_name),
        family_name: normalized(&profile.family_name),
        nickname: normalized(&profile.nickname),
        picture: normalized(&profile.picture),
        website: normalized(&profile.website),
        locale: normalized(&profile.locale),
        zoneinfo: normalized(&profile.zoneinfo),
    };
    let texts = [
        ("name", &profile.name),
        ("given name", &profile.given_name),
        ("family name", &profile.family_name),
        ("nickname", &profile.nickname),
    ];
    for (label, value) in texts {
        if let Some(v) = value {
            if v.chars().count() > 100 || super::text::has_deceptive(v) {
                return Err(Error::invalid_request(format!(
                    "the {label} must be at most 100 characters, without control characters"
                )));
            }
        }
    }
    for (label, value) in [("picture", &profile.picture), ("website", &profile.website)] {
        if let Some(v) = value {
            let ok = v.len() <= 2048 && url::Url::parse(v).is_ok_and(|u| matches!(u.scheme(), "https" | "http"));
            if !ok {
                return Err(Error::invalid_request(format!("the {label} must be an http(s) URL")));
            }
        }
    }
    if let Some(locale) = &profile.locale {
        let ok = locale.len() <= 35
            && locale.starts_with(|c: char| c.is_ascii_alphabetic())
            && locale
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
        if !ok {
            return Err(Error::invalid_request(
                "the locale must be a language tag such as en-GB",
            ));
        }
    }
    if let Some(zone) = &profile.zoneinfo {
        let ok = zone.len() <= 64 && zone.chars().all(|c| c.is_ascii_alphanumeric() || "/_+-".contains(c));
        if !ok {
            return Err(Error::invalid_request(
                "the time zone must be a name such as Europe/Paris",
            ));
        }
    }
    Ok(profile)
}

impl Accounts {
    /// Creates a user; fails with `invalid_request` when the username is taken or invalid.
    pub async fn create_user(
        &self,
        by: &Caller,
        username: &str,
        password: &str,
        email: Option<String>,
    ) -> Result<UserRecord, Error> {
        let edit = ProfileEdit {
            email,
            ..ProfileEdit::default()
        };
        self.create_user_with_profile(by, username, password, edit).await
    }

    /// Creates a user with an email and profile. Everything is checked before anything is
    /// stored, so a bad profile leaves no half-made user behind.
    pub(crate) async fn create_user_with_profile(
        &self,
        by: &Caller,
        username: &str,
        password: &str,
        edit: ProfileEdit,
    ) -> Result<UserRecord, Error> {
        let result = self.store_new_user(username, password, edit).await;
        let target = match &result {
            Ok(user) => Target::user(user),
            Err(_) => Target {
                kind: "user",
                id: "",
                name: username,
            },
        };
        self.audit.record_result(by, "user.create", Some(target), &result).await;
        result
    }

    async fn store_new_user(&self, username: &str, password: &str, edit: ProfileEdit) -> Result<UserRecord, Error> {
        validate_username(username)?;
        validate_password(password)?;
        let email = normalized(&edit.email);
        if let Some(email) = &email {
            validate_email(email)?;
        }
        let profile = validated_profile(&edit.profile)?;
        let created_at = now();
        let updated = email.is_some() || profile != UserProfile::default();
        let user = UserRecord {
            user_id: super::random_id(),
            username: username.to_string(),
            email_verified: edit.email_verified.unwrap_or(false) && email.is_some(),
            email,
            password_hash: hash_password_off_workers(password).await?,
            created_at,
            profile,
            updated_at: if updated { created_at } else { 0 },
            session_epoch: 0,
            operator: false,
            disabled: false,
        };
        match self.users.insert_user(&user).await {
            Err(StoreError::Conflict(_)) => Err(Error::new(
                super::ErrorCode::Conflict,
                format!("username {username:?} is taken"),
            )),
            other => other.map(|_| user).map_err(Error::from),
        }
    }

    /// The user with this id, if any.
    pub(crate) async fn find_user(&self, user_id: &str) -> Result<Option<UserRecord>, Error> {
        Ok(self.users.get_user(user_id).await?)
    }

    /// Every user, ordered by username (a full scan: for the CLI, not for requests).
    pub async fn list_users(&self) -> Result<Vec<UserRecord>, Error> {
        Ok(self.users.list_users().await?)
    }

    /// The user with this username, if any.
    pub(crate) async fn find_user_by_name(&self, username: &str) -> Result<Option<UserRecord>, Error> {
        Ok(self.users.get_user_by_name(username).await?)
    }

    /// Changes a user's email and profile claims. A new email address is unverified unless
    /// the edit says otherwise (only the operator's CLI can).
    pub async fn update_profile(&self, by: &Caller, user_id: &str, edit: ProfileEdit) -> Result<UserRecord, Error> {
        let result = self.store_profile(by, user_id, edit).await;
        // An edit that changes nothing is no change: not recorded, not counted.
        if !matches!(result, Ok((_, false))) {
            self.record_user_result(by, "user.update", user_id, &result).await;
        }
        result.map(|(user, _)| user)
    }

    /// Stores the edited profile if it differs; returns the user and whether it did.
    async fn store_profile(&self, by: &Caller, user_id: &str, edit: ProfileEdit) -> Result<(UserRecord, bool), Error> {
        let mut user = self
            .users
            .get_user(user_id)
            .await?
            .ok_or_else(|| super::admin::not_found("user"))?;
        let email = normalized(&edit.email);
        if let Some(email) = &email {
            validate_email(email)?;
        }
        let profile = validated_profile(&edit.profile)?;
        let email_changed = email != user.email;
        let email_verified = match edit.email_verified {
            Some(verified) => verified && email.is_some(),
            None => user.email_verified && !email_changed,
        };
        if !email_changed && profile == user.profile && email_verified == user.email_verified {
            return Ok((user, false));
        }
        self.audit.spend_change(by)?;
        user.updated_at = now();
        user.email_verified = email_verified;
        user.email = email;
        user.profile = profile;
        self.users.update_user(&user).await?;
        Ok((user, true))
    }

    /// Gives a user the operator role, or takes it away. Only the CLI and the admin API call
    /// this: no page a user sees can.
    pub(crate) async fn set_operator(&self, by: &Caller, user_id: &str, operator: bool) -> Result<UserRecord, Error> {
        if !operator {
            self.audit
                .refuse_own_account(by, user_id, "take the operator role from")?;
        }
        let result = async {
            let mut user = self.existing_user(user_id).await?;
            let changed = user.operator != operator;
            if changed {
                user.operator = operator;
                self.users.update_user(&user).await?;
            }
            Ok((user, changed))
        }
        .await;
        // Setting what is already so is no change, and not recorded.
        if matches!(result, Ok((_, false))) {
            return result.map(|(user, _)| user);
        }
        let action = if operator {
            "user.operator_on"
        } else {
            "user.operator_off"
        };
        self.record_user_result(by, action, user_id, &result).await;
        result.map(|(user, _)| user)
    }

    async fn existing_user(&self, user_id: &str) -> Result<UserRecord, Error> {
        self.users
            .get_user(user_id)
            .await?
            .ok_or_else(|| super::admin::not_found("user"))
    }

    /// Records what happened to a user, named by their username when they exist.
    async fn record_user_result<T>(&self, by: &Caller, action: &str, user_id: &str, result: &Result<T, Error>) {
        let name = match self.users.get_user(user_id).await {
            Ok(Some(user)) => user.username,
            _ => String::new(),
        };
        let target = Target {
            kind: "user",
            id: user_id,
            name: &name,
        };
        self.audit.record_result(by, action, Some(target), result).await;
    }

    /// Disables an account or enables it again. Disabling ends every session the user has and
    /// revokes every grant they gave, so their apps' refresh tokens fail at once. Returns the
    /// user and how many grants were revoked.
    pub async fn set_disabled(&self, by: &Caller, user_id: &str, disabled: bool) -> Result<(UserRecord, usize), Error> {
        if disabled {
            self.audit.refuse_own_account(by, user_id, "disable")?;
        }
        let result = async {
            let mut user = self.existing_user(user_id).await?;
            let changed = user.disabled != disabled;
            if changed {
                user.disabled = disabled;
                if disabled {
                    user.session_epoch += 1;
                }
                self.users.update_user(&user).await?;
            }
            // Also when it was disabled already: nothing it holds may outlive the decision.
            let revoked = match disabled {
                true => self.revoke_grants_of(user_id).await?,
                false => 0,
            };
            Ok((user, revoked, changed))
        }
        .await;
        // Setting what is already so (and revoking nothing) is no change, and not recorded.
        let result = match result {
            Ok((user, 0, false)) => return Ok((user, 0)),
            other => other.map(|(user, revoked, _)| (user, revoked)),
        };
        let action = if disabled { "user.disable" } else { "user.enable" };
        self.record_user_result(by, action, user_id, &result).await;
        result
    }

    /// Sets a user's password; every session opened with the old one ends.
    pub async fn set_password(&self, by: &Caller, user_id: &str, password: &str) -> Result<(), Error> {
        let result = async {
            validate_password(password)?;
            let mut user = self.existing_user(user_id).await?;
            user.password_hash = hash_password_off_workers(password).await?;
            // Every session opened with the old password ends (review finding 12).
            user.session_epoch += 1;
            Ok(self.users.update_user(&user).await?)
        }
        .await;
        self.record_user_result(by, "user.set_password", user_id, &result).await;
        result
    }

    /// Revokes every grant a user gave (an operator's password reset after a compromise):
    /// all their apps' refresh tokens stop working, and their access tokens turn inactive.
    /// Returns how many grants were revoked.
    pub(crate) async fn revoke_user_grants(&self, by: &Caller, user_id: &str) -> Result<usize, Error> {
        let result = self.revoke_grants_of(user_id).await;
        self.record_user_result(by, "user.revoke_grants", user_id, &result)
            .await;
        result
    }

    async fn revoke_grants_of(&self, user_id: &str) -> Result<usize, Error> {
        let revoked = self.grants.revoke_grants_of(Some(user_id), None).await?;
        self.durability.durable().await?;
        Ok(revoked)
    }

    /// Returns the user if the password is right. Unknown users cost the same hash check as
    /// known ones, so response time does not reveal which usernames exist.
    pub async fn check_password(&self, username: &str, password: &str) -> Result<Option<UserRecord>, Error> {
        // A name no user could have (a NUL, say, which PostgreSQL refuses) is nobody's, at
        // the same cost.
        let user = match validate_username(username) {
            Ok(()) => self.users.get_user_by_name(username).await?,
            Err(_) => None,
        };
        let phc = user.as_ref().map_or(DUMMY_PASSWORD_HASH, |u| u.password_hash.as_str());
        let matches = password_matches_off_workers(password, phc).await?;
        Ok(user.filter(|_| matches))
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
        use argon2::password_hash::PasswordHash;
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
    fn profile_fields_are_validated_and_blank_means_absent() {
        let ok = validated_profile(&UserProfile {
            name: Some("  Alice Liddell ".into()),
            nickname: Some("".into()),
            website: Some("https://alice.example/".into()),
            locale: Some("en-GB".into()),
            zoneinfo: Some("Europe/London".into()),
            ..Default::default()
        })
        .unwrap();
        assert_eq!(ok.name.as_deref(), Some("Alice Liddell"));
        assert_eq!(ok.nickname, None);
        for bad in [
            UserProfile {
                picture: Some("javascript:alert(1)".into()),
                ..Default::default()
            },
            UserProfile {
                name: Some("x".repeat(101)),
                ..Default::default()
            },
            UserProfile {
                locale: Some("en GB".into()),
                ..Default::default()
            },
            UserProfile {
                zoneinfo: Some("../etc".into()),
                ..Default::default()
            },
        ] {
            assert!(validated_profile(&bad).is_err(), "{bad:?}");
        }
        assert!(validate_email("alice@example.com").is_ok());
        for bad in ["alice", "@example.com", "alice@localhost", "a b@example.com", "a@b@c.d"] {
            assert!(validate_email(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn usernames_are_restricted() {
        assert!(validate_username("alice.smith@example").is_ok());
        assert!(validate_username("").is_err());
        assert!(validate_username("a b").is_err());
        assert!(validate_username("<script>").is_err());
    }
}
