//! Passkeys (WebAuthn Level 2): a signed-in user registers them on their account page, and
//! signs in with one, without typing a username (a discoverable credential, offered by the
//! browser's autofill where it supports conditional mediation), or shows one as the second
//! step after a password. The checks are `webauthn-rs`'s; this module keeps what they need
//! between the two halves of a ceremony and decides what a passkey proves.
//!
//! The relying party is the issuer: its host is the RP id and its origin the only origin
//! accepted. An issuer on an IP address (the embedded default, `http://127.0.0.1:8000`) cannot
//! be a relying party (browsers refuse IP addresses as RP ids), so passkeys are not offered
//! there; `http://localhost:…` works.
//!
//! A ceremony's state travels with the page, signed (HMAC-SHA256 under the server secret that
//! signs cookie values; nothing in it is secret, and a MAC has no nonce that anonymous traffic
//! could wear out), so anonymous visitors of the login page store nothing. It is bound to its
//! form (the session's or login form's CSRF token, or the pending login's) and to a deadline,
//! and is accepted once: its id is remembered on every node when it succeeds, so a replayed
//! answer is refused. The state names no key: an answer is always checked against the passkey
//! as stored (its public key and counter), never against one the state could carry.
//! Registration asks for user verification and no attestation; a passkey with user
//! verification counts as two factors (`amr` `hwk` or, for a passkey that syncs between
//! devices, `swk`, plus `user` and `mfa`). A passkey belongs to the account it was registered
//! on: a sign-in looks it up under the user handle the authenticator returns, among that
//! user's passkeys only.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use serde::{Deserialize, Serialize};
use webauthn_rs::prelude::{
    AuthenticationResult, DiscoverableAuthentication, Passkey, PasskeyRegistration, PublicKeyCredential,
    RegisterPublicKeyCredential, Url, Uuid, Webauthn, WebauthnBuilder,
};

use super::audit::{Caller, Target};
use super::factor::is_passkey;
use super::login::LoginStep;
use super::session::Session;
use super::user::Accounts;
use super::{acr, now, secret_hash, Error, ErrorCode};
use crate::config::MfaPolicy;
use crate::store::{FactorRecord, FactorSecret, UserRecord};

/// The prefix of a passkey's factor id (the rest: a hash of its credential id).
pub const PASSKEY_ID_PREFIX: &str = "passkey-";
/// Passkeys one account may hold.
pub const MAX_PASSKEYS: usize = 20;
/// The longest name a passkey may have, in characters.
pub const MAX_PASSKEY_NAME_CHARS: usize = 64;
/// How long a ceremony (the browser's prompt) may take.
const CEREMONY_TTL_SECS: i64 = 300;
/// What each kind of ceremony is signed for (the signed values' purposes).
const REGISTRATION: &str = "passkey-registration";
const DISCOVERY: &str = "passkey-discovery";
const CHALLENGE: &str = "passkey-challenge";
/// RFC 8176: a key kept in hardware, a key kept in software (a passkey that syncs), a user
/// verification gesture.
pub const HWK: &str = "hwk";
pub const SWK: &str = "swk";
pub const USER: &str = "user";

/// What a page hands the browser to run a ceremony: the options for
/// `navigator.credentials.create` or `.get` (JSON, binary fields in base64url), and the sealed
/// state to post back with the answer.
#[derive(Debug, Clone)]
pub struct PasskeyPrompt {
    pub options: String,
    pub ceremony: String,
}

/// A browser's answer to a ceremony: the sealed state it was given, and the credential JSON.
#[derive(Debug, Clone, Copy)]
pub struct PasskeyAnswer<'a> {
    pub ceremony: &'a str,
    pub credential: &'a str,
}

/// A submitted passkey sign-in (no username: the passkey names its user).
pub struct PasskeyLogin<'a> {
    pub answer: PasskeyAnswer<'a>,
    /// The form's CSRF token: the session's, or (without a session) the login-form cookie's.
    pub csrf_token: &'a str,
    pub session: Option<&'a Session>,
    pub login_form_cookie: Option<&'a str>,
}

/// A ceremony's state as it travels: whose form it belongs to, and (for a registration) the
/// name the user chose.
#[derive(Serialize, Deserialize)]
struct Ceremony<S> {
    id: String,
    owner: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    name: Option<String>,
    state: S,
}

/// Whether passkeys can work for `issuer` (its host is a domain name, not an IP address).
pub(crate) fn usable(issuer: &str) -> bool {
    Url::parse(issuer).is_ok_and(|u| u.domain().is_some())
}

/// The relying party for `issuer`, or `None` where passkeys cannot work (an IP address).
pub(super) fn relying_party(issuer: &str) -> Option<Webauthn> {
    let issuer = Url::parse(issuer).ok()?;
    let host = issuer.domain()?.to_string();
    let origin = Url::parse(&issuer.origin().ascii_serialization()).ok()?;
    match WebauthnBuilder::new(&host, &origin).and_then(|b| b.rp_name(&host).build()) {
        Ok(webauthn) => Some(webauthn),
        Err(e) => {
            tracing::warn!(error = %e, "passkeys are off: the issuer cannot be a WebAuthn relying party");
            None
        }
    }
}

/// The WebAuthn user handle of a user: their id's 16 bytes (ids are 32 hex digits).
fn user_handle(user: &UserRecord) -> Result<Uuid, Error> {
    let bytes: Option<Vec<u8>> = (user.user_id.len() == 32)
        .then(|| {
            (0..16)
                .map(|i| u8::from_str_radix(&user.user_id[2 * i..2 * i + 2], 16).ok())
                .collect()
        })
        .flatten();
    bytes
        .and_then(|b| Uuid::from_slice(&b).ok())
        .ok_or_else(|| Error::invalid_request("this account's id cannot name a passkey"))
}

/// The user id a user handle names.
fn user_id_of(handle: &Uuid) -> String {
    handle.as_bytes().iter().map(|b| format!("{b:02x}")).collect()
}

/// The factor id of a credential: a hash of its id (credential ids may be 1,023 bytes).
fn factor_id_of(credential_id: &[u8]) -> String {
    let digest = ring::digest::digest(&ring::digest::SHA256, credential_id);
    let hex: String = digest.as_ref()[..16].iter().map(|b| format!("{b:02x}")).collect();
    format!("{PASSKEY_ID_PREFIX}{hex}")
}

/// A name a user chose for a passkey, trimmed; refused when empty, too long or odd.
fn passkey_name(name: &str) -> Result<String, Error> {
    let name = name.trim();
    if name.is_empty() {
        return Err(Error::invalid_request(
            "give the passkey a name (where it lives: \"laptop\", \"phone\")",
        ));
    }
    if name.chars().count() > MAX_PASSKEY_NAME_CHARS
        || name.chars().any(|c| c.is_control() || super::text::is_deceptive(c))
    {
        return Err(Error::invalid_request(format!(
            "a passkey's name is at most {MAX_PASSKEY_NAME_CHARS} plain characters"
        )));
    }
    Ok(name.to_string())
}

fn refused(why: &str) -> Error {
    Error::new(ErrorCode::AccessDenied, why)
}

/// The stored passkey of a factor.
fn passkey_of(factor: &FactorRecord) -> Option<Passkey> {
    match &factor.secret {
        FactorSecret::Passkey { credential } => serde_json::from_value(credential.clone()).ok(),
        _ => None,
    }
}

/// What an accepted passkey proved (RFC 8176).
fn methods_of(result: &AuthenticationResult) -> Vec<&'static str> {
    let key = if result.backup_eligible() { SWK } else { HWK };
    vec![key, USER]
}

impl Accounts {
    /// Whether passkeys are offered to `user` (or, with `None`, on the login page): the issuer
    /// can be a relying party and second factors are not off.
    pub fn passkeys_offered(&self, user: Option<&UserRecord>) -> bool {
        self.webauthn.is_some()
            && match user {
                Some(user) => self.mfa_policy(user) != MfaPolicy::Off,
                None => self.mfa != MfaPolicy::Off || self.operator_mfa != MfaPolicy::Off,
            }
    }

    fn relying_party(&self) -> Result<&Webauthn, Error> {
        self.webauthn.as_ref().ok_or_else(|| {
            Error::invalid_request("passkeys need the server's issuer to be a domain name (not an IP address)")
        })
    }

    /// Signs a ceremony's state for the form `owner` (a CSRF token) names, for five minutes.
    async fn seal_ceremony<S: Serialize>(
        &self,
        purpose: &str,
        owner: &str,
        name: Option<String>,
        state: S,
    ) -> Result<String, Error> {
        let ceremony = Ceremony {
            id: super::random_token(16),
            owner: URL_SAFE_NO_PAD.encode(secret_hash(owner)),
            name,
            state,
        };
        let plain = serde_json::to_vec(&ceremony).map_err(Error::server_error)?;
        self.sign_value(purpose, &URL_SAFE_NO_PAD.encode(plain), CEREMONY_TTL_SECS)
            .await
    }

    /// Opens a ceremony signed for `owner`'s form, unexpired; refused otherwise.
    async fn open_ceremony<S: for<'de> Deserialize<'de>>(
        &self,
        purpose: &str,
        owner: &str,
        signed: &str,
    ) -> Result<Ceremony<S>, Error> {
        let expired = || refused("this passkey prompt expired or was not made for this page; try again");
        let payload = self.signed_payload(purpose, signed.trim()).await?.ok_or_else(expired)?;
        let plain = URL_SAFE_NO_PAD.decode(payload).map_err(|_| expired())?;
        let ceremony: Ceremony<S> = serde_json::from_slice(&plain).map_err(|_| expired())?;
        let mine = bool::from(subtle::ConstantTimeEq::ct_eq(
            ceremony.owner.as_bytes(),
            URL_SAFE_NO_PAD.encode(secret_hash(owner)).as_bytes(),
        ));
        if !mine {
            return Err(expired());
        }
        Ok(ceremony)
    }

    /// Accepts a ceremony once, on every node: `false` if it was accepted before (a replay).
    async fn first_use(&self, ceremony_id: &str) -> Result<bool, Error> {
        let key = format!("passkey-ceremony\0{ceremony_id}");
        let until_ms = (now() + CEREMONY_TTL_SECS + 1) * 1000;
        Ok(self.counters.remember_once(key.as_bytes(), until_ms).await?)
    }

    /// Starts registering a passkey named `name` for the session's user: the options for
    /// `navigator.credentials.create`, which ask for a discoverable credential with user
    /// verification and no attestation, and exclude the user's passkeys already registered.
    pub async fn start_passkey(&self, session: &Session, name: &str) -> Result<PasskeyPrompt, Error> {
        let webauthn = self.relying_party()?;
        if self.mfa_policy(&session.user) == MfaPolicy::Off {
            return Err(refused("second factors are switched off on this server"));
        }
        let name = passkey_name(name)?;
        let factors = self.factors.factors_of(session.user_id()).await?;
        let registered: Vec<Passkey> = factors.iter().filter_map(passkey_of).collect();
        if registered.len() >= MAX_PASSKEYS {
            return Err(Error::invalid_request(format!(
                "an account holds at most {MAX_PASSKEYS} passkeys; remove one first"
            )));
        }
        let user = &session.user;
        let display = user.profile.name.as_deref().unwrap_or(&user.username);
        let exclude = registered.iter().map(|p| p.cred_id().clone()).collect();
        let (options, state) = webauthn
            .start_passkey_registration(user_handle(user)?, &user.username, display, Some(exclude))
            .map_err(|e| Error::server_error(format!("a passkey registration could not start: {e}")))?;
        let mut options = serde_json::to_value(&options.public_key).map_err(Error::server_error)?;
        // A passkey that can sign in without a username: the authenticator keeps it (a
        // discoverable credential). webauthn-rs asks for none by default.
        if let Some(selection) = options
            .get_mut("authenticatorSelection")
            .and_then(|s| s.as_object_mut())
        {
            selection.insert("residentKey".into(), "required".into());
            selection.insert("requireResidentKey".into(), true.into());
        }
        let ceremony = self
            .seal_ceremony::<PasskeyRegistration>(REGISTRATION, session.csrf_token(), Some(name), state)
            .await?;
        Ok(PasskeyPrompt {
            options: options.to_string(),
            ceremony,
        })
    }

    /// Finishes a registration the session started: the browser's answer must carry the
    /// challenge, this origin, user verification and a key of an accepted algorithm. The
    /// passkey is then the user's, under the name they chose; what it proved is returned (a
    /// registration is a use).
    pub async fn finish_passkey(
        &self,
        session: &Session,
        answer: PasskeyAnswer<'_>,
        address: Option<&str>,
    ) -> Result<Vec<&'static str>, Error> {
        let webauthn = self.relying_party()?;
        let ceremony: Ceremony<PasskeyRegistration> = self
            .open_ceremony(REGISTRATION, session.csrf_token(), answer.ceremony)
            .await?;
        let credential: RegisterPublicKeyCredential = serde_json::from_str(answer.credential)
            .map_err(|_| Error::invalid_request("the browser's passkey answer is malformed"))?;
        let passkey = webauthn
            .finish_passkey_registration(&credential, &ceremony.state)
            .map_err(|e| refused(&format!("the passkey was not accepted ({e})")))?;
        if !self.first_use(&ceremony.id).await? {
            return Err(refused("this passkey prompt was answered already"));
        }
        let user = &session.user;
        let factor = FactorRecord {
            factor_id: factor_id_of(passkey.cred_id()),
            user_id: user.user_id.clone(),
            name: ceremony.name.unwrap_or_else(|| "Passkey".to_string()),
            created_at: now(),
            last_used_at: Some(now()),
            revision: super::factor::first_revision(),
            secret: FactorSecret::Passkey {
                credential: serde_json::to_value(&passkey).map_err(Error::server_error)?,
            },
        };
        let count = self
            .factors
            .factors_of(&user.user_id)
            .await?
            .iter()
            .filter(|f| is_passkey(f))
            .count();
        if count >= MAX_PASSKEYS {
            return Err(Error::invalid_request(format!(
                "an account holds at most {MAX_PASSKEYS} passkeys; remove one first"
            )));
        }
        if !self.factors.insert_factor(&factor).await? {
            return Err(Error::invalid_request(
                "this passkey is registered on this account already",
            ));
        }
        self.durability.durable().await?;
        let by = Caller::user(user, address);
        self.audit
            .record(&by, "factor.added", Some(Target::user(user)), &factor.factor_id)
            .await;
        // User verification was required: the registration proved the passkey.
        let key = if passkey_backs_up(&passkey) { SWK } else { HWK };
        Ok(vec![key, USER])
    }

    /// The prompt of the login page: a discoverable-credential request (no user named, so the
    /// browser offers every passkey it has for this site), for the form `csrf_token` names.
    /// `None` where passkeys are not offered.
    pub async fn passkey_login_prompt(&self, csrf_token: &str) -> Result<Option<PasskeyPrompt>, Error> {
        if !self.passkeys_offered(None) {
            return Ok(None);
        }
        let webauthn = self.relying_party()?;
        let (options, state) = webauthn
            .start_discoverable_authentication()
            .map_err(|e| Error::server_error(format!("a passkey sign-in could not start: {e}")))?;
        let ceremony = self
            .seal_ceremony::<DiscoverableAuthentication>(DISCOVERY, csrf_token, None, state)
            .await?;
        Ok(Some(PasskeyPrompt {
            options: serde_json::to_string(&options.public_key).map_err(Error::server_error)?,
            ceremony,
        }))
    }

    /// Signs in with a passkey alone: the form must be ours, the answer the prompt's (once),
    /// made by a passkey registered on the account its user handle names, with user
    /// verification. A fresh session, two factors.
    pub async fn sign_in_with_passkey(&self, login: &PasskeyLogin<'_>) -> Result<LoginStep, Error> {
        let form_is_ours = match login.session {
            Some(session) => session.csrf_matches(login.csrf_token),
            None => {
                self.login_form_matches(login.login_form_cookie, login.csrf_token)
                    .await?
            }
        };
        if !form_is_ours {
            return Err(refused(
                "your login form expired or was not sent by this site (CSRF check failed); go back and try again",
            ));
        }
        let webauthn = self.relying_party()?;
        let ceremony: Ceremony<DiscoverableAuthentication> = self
            .open_ceremony(DISCOVERY, login.csrf_token, login.answer.ceremony)
            .await?;
        let credential = parse_assertion(login.answer.credential)?;
        let unknown = || refused("this passkey is not registered here (it may have been removed)");
        let (handle, credential_id) = webauthn
            .identify_discoverable_authentication(&credential)
            .map_err(|_| unknown())?;
        let Some(user) = self.users.get_user(&user_id_of(&handle)).await? else {
            return Err(unknown());
        };
        if self.mfa_policy(&user) == MfaPolicy::Off {
            return Err(unknown());
        }
        let factor_id = factor_id_of(credential_id);
        let factors = self.factors.factors_of(&user.user_id).await?;
        let Some(factor) = factors.into_iter().find(|f| f.factor_id == factor_id) else {
            return Err(unknown());
        };
        let passkey = passkey_of(&factor).ok_or_else(unknown)?;
        let result = webauthn
            .finish_discoverable_authentication_v2(&credential, ceremony.state, &passkey)
            .map_err(|e| refused(&format!("the passkey's answer was not accepted ({e})")))?;
        self.accept_assertion(&ceremony.id, &factor, passkey, &result).await?;
        if user.disabled {
            return Ok(LoginStep::Show(super::login::LoginRefusal::Disabled));
        }
        let amr = acr::adding(&[], &methods_of(&result));
        self.signed_in(login.session, &user, amr).await
    }

    /// The prompt of a second step (after a password, or a step-up) for `user`, whose form
    /// `csrf_token` names: their passkeys only. `None` if they have none (or passkeys are off).
    pub async fn passkey_factor_prompt(
        &self,
        user: &UserRecord,
        csrf_token: &str,
    ) -> Result<Option<PasskeyPrompt>, Error> {
        if !self.passkeys_offered(Some(user)) {
            return Ok(None);
        }
        let passkeys: Vec<Passkey> = self
            .factors
            .factors_of(&user.user_id)
            .await?
            .iter()
            .filter_map(passkey_of)
            .collect();
        if passkeys.is_empty() {
            return Ok(None);
        }
        // The state of a discoverable request names no key: the answer is checked against the
        // passkey as stored. The browser is told which passkeys are the user's.
        let webauthn = self.relying_party()?;
        let (options, state) = webauthn
            .start_discoverable_authentication()
            .map_err(|e| Error::server_error(format!("a passkey check could not start: {e}")))?;
        let mut options = serde_json::to_value(&options.public_key).map_err(Error::server_error)?;
        let allowed: Vec<serde_json::Value> = passkeys
            .iter()
            .map(|p| serde_json::json!({ "type": "public-key", "id": URL_SAFE_NO_PAD.encode(p.cred_id()) }))
            .collect();
        if let Some(fields) = options.as_object_mut() {
            fields.insert("allowCredentials".into(), allowed.into());
        }
        let ceremony = self
            .seal_ceremony::<DiscoverableAuthentication>(CHALLENGE, csrf_token, None, state)
            .await?;
        Ok(Some(PasskeyPrompt {
            options: options.to_string(),
            ceremony,
        }))
    }

    /// Checks a passkey answer to [`Accounts::passkey_factor_prompt`] for `user`: what it
    /// proved, or `None` if it is not one of their passkeys or not valid.
    pub(super) async fn check_passkey(
        &self,
        user: &UserRecord,
        csrf_token: &str,
        answer: PasskeyAnswer<'_>,
    ) -> Result<Option<Vec<&'static str>>, Error> {
        let webauthn = self.relying_party()?;
        let ceremony: Ceremony<DiscoverableAuthentication> =
            self.open_ceremony(CHALLENGE, csrf_token, answer.ceremony).await?;
        let credential = parse_assertion(answer.credential)?;
        // An authenticator that names a user must name this one.
        if let Some(handle) = credential.get_user_unique_id() {
            if handle != user_handle(user)?.as_bytes() {
                return Ok(None);
            }
        }
        let factor_id = factor_id_of(credential.get_credential_id());
        let factors = self.factors.factors_of(&user.user_id).await?;
        let Some(factor) = factors.into_iter().find(|f| f.factor_id == factor_id) else {
            return Ok(None);
        };
        let Some(passkey) = passkey_of(&factor) else {
            return Ok(None);
        };
        let Ok(result) = webauthn.finish_discoverable_authentication_v2(&credential, ceremony.state, &passkey) else {
            return Ok(None);
        };
        self.accept_assertion(&ceremony.id, &factor, passkey, &result).await?;
        Ok(Some(methods_of(&result)))
    }

    /// After a valid assertion: the ceremony is used up (a replay is refused), and the
    /// passkey's counter and backup state are kept (a counter that went back was refused by
    /// the check: a cloned authenticator).
    async fn accept_assertion(
        &self,
        ceremony_id: &str,
        factor: &FactorRecord,
        mut passkey: Passkey,
        result: &AuthenticationResult,
    ) -> Result<(), Error> {
        if !self.first_use(ceremony_id).await? {
            return Err(refused("this passkey prompt was answered already"));
        }
        passkey.update_credential(result);
        let used = FactorRecord {
            last_used_at: Some(now()),
            revision: factor.revision + 1,
            secret: FactorSecret::Passkey {
                credential: serde_json::to_value(&passkey).map_err(Error::server_error)?,
            },
            ..factor.clone()
        };
        // A lost race (two sign-ins at once with one passkey) loses only a counter step, which
        // the other write carries.
        if let Err(e) = self.factors.replace_factor(&used, factor.revision).await {
            tracing::warn!(error = %e, "a passkey's use could not be recorded");
        }
        Ok(())
    }
}

/// Whether a passkey syncs between devices (backup eligible), read from its stored form.
fn passkey_backs_up(passkey: &Passkey) -> bool {
    serde_json::to_value(passkey)
        .ok()
        .and_then(|v| v.pointer("/cred/backup_eligible").and_then(|b| b.as_bool()))
        .unwrap_or(false)
}

fn parse_assertion(credential: &str) -> Result<PublicKeyCredential, Error> {
    serde_json::from_str(credential).map_err(|_| Error::invalid_request("the browser's passkey answer is malformed"))
}
