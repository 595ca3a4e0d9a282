//! The device authorization grant (RFC 8628), except its token request ([`super::grant::device_code`]):
//! the device authorization endpoint (§3.1-3.2), which hands a device a device code and a
//! user code, and the verification page's logic (§3.3), where a logged-in user enters the user
//! code, sees which app asks for what, and approves or denies.
//!
//! Only hashes of both codes are stored. The user code is short enough to type (8 letters from
//! [`USER_CODE_ALPHABET`], about 34.6 bits), so wrong codes are throttled per user and per
//! address ([`super::throttle::UserCodeThrottle`], RFC 8628 §5.1), and every request expires
//! after `device_code_ttl`. The user is always asked to confirm, even when they approved the
//! app before (§5.4: the code may have been sent to them by someone else).

use std::time::Duration;

use ring::rand::{SecureRandom, SystemRandom};

use super::authorize::Authorization;
use super::authorize::Decision;
use super::client::ClientCredentials;
use super::scope::{self, Scope};
use super::session::Session;
use super::{now, random_id, random_token, secret_hash, Error, ErrorCode};
use crate::store::{ClientRecord, DeviceRecord, DeviceStatus, GrantRecord, GrantType, SecretHash};

/// Twenty consonants that are hard to misread or mistype, and spell no words (RFC 8628 §6.1).
pub(crate) const USER_CODE_ALPHABET: &[u8; 20] = b"BCDFGHJKLMNPQRSTVWXZ";
/// Letters in a user code (shown as two groups of four).
pub(crate) const USER_CODE_LEN: usize = 8;
/// How many fresh user codes to try if one is taken (a clash is a 1 in 20^8 event per live code).
const USER_CODE_ATTEMPTS: usize = 5;
/// The server secret user codes are hashed under: a user code has about 34 bits, so a plain
/// hash in the store would give a reader of the database every live code in seconds.
const USER_CODE_SECRET: &str = "device-user-code";

/// The device authorization response (RFC 8628 §3.2).
#[derive(Debug)]
pub struct DeviceAuthorization {
    pub device_code: String,
    /// As shown to the user: `BCDF-GHJK`.
    pub user_code: String,
    pub verification_uri: String,
    pub verification_uri_complete: String,
    pub expires_in: u64,
    pub interval: u64,
}

/// What the confirmation page shows for a user code that was found.
#[derive(Debug)]
pub(crate) struct DevicePrompt {
    /// The code as shown to the user (`BCDF-GHJK`).
    pub user_code: String,
    pub client_name: String,
    /// The client id's first characters: names can be copied, ids cannot.
    pub client_id_prefix: String,
    /// Whether a user or dynamic registration made the client, rather than an operator.
    pub self_registered: bool,
    /// Each requested scope and its description from the configuration.
    pub scopes: Vec<(String, Option<String>)>,
    /// For a client identified by its metadata document's URL, the full id and its host.
    pub document: Option<(String, String)>,
}

/// A fresh user code, normalised (no separator): uniform over the alphabet.
fn new_user_code() -> String {
    let rng = SystemRandom::new();
    let mut code = String::with_capacity(USER_CODE_LEN);
    while code.len() < USER_CODE_LEN {
        let mut byte = [0u8; 1];
        rng.fill(&mut byte)
            .expect("the operating system's random number generator failed");
        // Rejection sampling: 240 is the largest multiple of 20 below 256, so no letter is
        // likelier than another.
        if byte[0] < 240 {
            code.push(USER_CODE_ALPHABET[(byte[0] % 20) as usize] as char);
        }
    }
    code
}

/// A normalised user code as the user sees it: `BCDFGHJK` -> `BCDF-GHJK`.
pub(crate) fn display_user_code(code: &str) -> String {
    let (head, tail) = code.split_at(code.len().min(USER_CODE_LEN / 2));
    if tail.is_empty() {
        head.to_string()
    } else {
        format!("{head}-{tail}")
    }
}

/// The user code as typed, normalised: uppercase, without dashes and white space. `None` if
/// what is left cannot be a user code.
pub fn normalize_user_code(typed: &str) -> Option<String> {
    let code: String = typed
        .chars()
        .filter(|c| *c != '-' && !c.is_whitespace())
        .map(|c| c.to_ascii_uppercase())
        .collect();
    let valid = code.len() == USER_CODE_LEN && code.bytes().all(|b| USER_CODE_ALPHABET.contains(&b));
    valid.then_some(code)
}

impl Authorization {
    /// A user code as the store indexes it: HMAC-SHA256 under a server secret (sealed in
    /// cluster mode), never a plain hash.
    async fn user_code_hash(&self, user_code: &str) -> Result<SecretHash, Error> {
        let tag = ring::hmac::sign(&self.secrets.hmac_key(USER_CODE_SECRET).await?, user_code.as_bytes());
        let mut hash = [0u8; 32];
        hash.copy_from_slice(tag.as_ref());
        Ok(hash)
    }

    /// The device authorization endpoint (RFC 8628 §3.1-3.2): authenticates the client like
    /// the token endpoint does, checks it may use the device code grant (`unauthorized_client`)
    /// and the scope and resource as the authorization endpoint would for it, and stores a new
    /// pending request under fresh codes.
    pub async fn device_authorization(
        &self,
        credentials: &ClientCredentials,
        scope: Option<&str>,
        resource: Option<&str>,
    ) -> Result<DeviceAuthorization, Error> {
        let client = self.clients.authenticate_client(credentials).await?;
        self.client_rate
            .check(&credentials.rate_key(&client))
            .map_err(Error::rate_limited)?;
        if !client.grant_types.contains(&GrantType::DeviceCode) {
            return Err(Error::new(
                ErrorCode::UnauthorizedClient,
                "this client may not use the device authorization grant",
            ));
        }
        let scope = Scope::resolve(scope, &client.scopes, |t| {
            crate::oauth::scope::is_known(&self.config, t)
        })?;
        if scope.contains(scope::ADMIN_SCOPE) {
            return Err(Error::new(
                ErrorCode::InvalidScope,
                "the admin scope is only issued to admin clients through client_credentials",
            ));
        }
        let audience = self.clients.resolve_audience(&client, resource)?;
        // Counted once the request is otherwise good: only what would be stored.
        self.device_rate
            .check(credentials.address.as_deref().unwrap_or_default())
            .map_err(Error::rate_limited)?;
        let expires_in = self.config.device_code_ttl.as_secs();
        let interval = self.config.device_code_interval.as_secs();
        // 256 bits: the device code is a bearer secret for the tokens once approved.
        let device_code = random_token(32);
        let mut record = DeviceRecord {
            user_code_hash: [0; 32],
            client_id: client.client_id.clone(),
            scope: scope.to_string(),
            audience,
            expires_at: now() + expires_in as i64,
            interval,
            status: DeviceStatus::Pending,
            user_id: None,
            auth_time: None,
            grant_id: None,
            last_poll_ms: None,
            redeemed: false,
        };
        for _ in 0..USER_CODE_ATTEMPTS {
            let user_code = new_user_code();
            record.user_code_hash = self.user_code_hash(&user_code).await?;
            if self.devices.insert_device(&secret_hash(&device_code), &record).await? {
                self.durability.durable().await?;
                let verification_uri = self.url(super::endpoints::DEVICE);
                let shown = display_user_code(&user_code);
                return Ok(DeviceAuthorization {
                    device_code,
                    verification_uri_complete: format!("{verification_uri}?user_code={shown}"),
                    verification_uri,
                    user_code: shown,
                    expires_in,
                    interval,
                });
            }
        }
        Err(Error::server_error("no free user code was found"))
    }

    /// The confirmation the verification page shows for a typed user code, for the logged-in
    /// `session` at `address` ([`crate::net::address_key`]). Wrong codes are throttled:
    /// `rate_limited` (with the wait) while the user or the address is locked out; an unknown
    /// code is an `invalid_request`, an expired one `expired_token`, one already answered an
    /// `invalid_grant`.
    pub(crate) async fn device_prompt(
        &self,
        typed: &str,
        session: &Session,
        address: &str,
    ) -> Result<DevicePrompt, Error> {
        let (_, device) = self.find_device(typed, session.user_id(), address).await?;
        let client = self.device_client(&device, address).await?;
        let scope = Scope::parse(&device.scope)?;
        Ok(DevicePrompt {
            user_code: display_user_code(&normalize_user_code(typed).unwrap_or_default()),
            client_name: client.name.clone(),
            client_id_prefix: client.client_id.chars().take(8).collect(),
            self_registered: !super::client::operator_made(&client),
            scopes: self.describe_scopes(&scope),
            document: super::client::document::document_host(&client.client_id)
                .map(|host| (client.client_id.clone(), host)),
        })
    }

    /// The user's answer to a device request: records it (only while the request is pending
    /// and unexpired; errors as [`Authorization::device_prompt`]). An approval remembers the consent
    /// and creates the grant the device's tokens will belong to, so it is listed (and
    /// revocable) among the user's authorized apps at once.
    pub(crate) async fn device_decide(
        &self,
        typed: &str,
        session: &Session,
        address: &str,
        decision: Decision,
    ) -> Result<(), Error> {
        let (hash, device) = self.find_device(typed, session.user_id(), address).await?;
        let client = self.device_client(&device, address).await?;
        // A client that requires two-factor logins gets no grant from a one-factor session.
        let one_factor = super::acr::Level::of(session.amr()) < super::acr::Level::MultiFactor;
        if client.policy.require_mfa && one_factor && decision == Decision::Allow {
            return Err(Error::new(
                ErrorCode::AccessDenied,
                format!(
                    "this app needs a two-factor sign-in: show your authenticator app's code at {} first, then enter the device's code again",
                    super::endpoints::LOGIN_FACTOR
                ),
            ));
        }
        let (user_id, auth_time) = (session.user_id().to_string(), session.auth_time());
        match decision {
            Decision::Deny => {
                let user = user_id.clone();
                let answered = self
                    .devices
                    .update_device(&hash, &move |d| answer(d, DeviceStatus::Denied, &user, auth_time, None))
                    .await?;
                answered_by(answered, &user_id, DeviceStatus::Denied)?;
            }
            Decision::Allow => {
                // The grant exists before the device can see the approval, so a poll that
                // finds it approved always finds its grant.
                let grant = GrantRecord {
                    grant_id: random_id(),
                    client_id: device.client_id.clone(),
                    user_id: user_id.clone(),
                    scope: device.scope.clone(),
                    audience: device.audience.clone(),
                    auth_time,
                    created_at: now(),
                    revoked: false,
                    amr: session.amr().to_vec(),
                };
                self.grants.put_grant(&grant).await?;
                let (user, grant_id) = (user_id.clone(), grant.grant_id.clone());
                let answered = self
                    .devices
                    .update_device(&hash, &move |d| {
                        answer(d, DeviceStatus::Approved, &user, auth_time, Some(&grant_id))
                    })
                    .await?;
                if let Err(e) = answered_by(answered, &user_id, DeviceStatus::Approved) {
                    self.grants.revoke_grant(&grant.grant_id).await?;
                    return Err(e);
                }
                self.remember_scopes(&user_id, &device.client_id, &Scope::parse(&device.scope)?)
                    .await?;
            }
        }
        self.durability.durable().await?;
        Ok(())
    }

    /// The client that asked, if it still exists and may still use the grant.
    async fn device_client(&self, device: &DeviceRecord, address: &str) -> Result<ClientRecord, Error> {
        self.clients
            .find_client_for(&device.client_id, Some(address))
            .await?
            .filter(|c| c.grant_types.contains(&GrantType::DeviceCode))
            .ok_or_else(|| Error::invalid_grant("the app that asked for this code no longer exists"))
    }

    /// The pending request behind a typed user code, counting the attempt against the user's
    /// and the address's budget unless the code is found.
    async fn find_device(
        &self,
        typed: &str,
        user_id: &str,
        address: &str,
    ) -> Result<(SecretHash, DeviceRecord), Error> {
        let throttle = &self.user_code_throttle;
        if let Err(wait) = throttle.begin(self.counters.as_ref(), user_id, address).await? {
            return Err(Error {
                description: format!("too many wrong codes; try again in {} seconds", wait.as_secs().max(1)),
                ..Error::rate_limited(wait.max(Duration::from_secs(1)))
            });
        }
        let found = match normalize_user_code(typed) {
            Some(code) => {
                let hash = self.user_code_hash(&code).await?;
                self.devices.get_device_by_user_code(&hash).await?
            }
            None => None,
        };
        let Some((hash, device)) = found else {
            return Err(Error::invalid_request(
                "this code is not valid; check it on your device and try again",
            ));
        };
        throttle.found(self.counters.as_ref(), user_id, address).await?;
        if device.expires_at <= now() {
            return Err(Error::new(
                ErrorCode::ExpiredToken,
                "this code has expired; start again on your device to get a new one",
            ));
        }
        if device.status != DeviceStatus::Pending {
            return Err(Error::invalid_grant("this code has already been used"));
        }
        Ok((hash, device))
    }
}

/// Records the user's answer on a pending, unexpired request; returns whether it changed.
fn answer(
    device: &mut DeviceRecord,
    status: DeviceStatus,
    user_id: &str,
    auth_time: i64,
    grant_id: Option<&str>,
) -> bool {
    if device.status != DeviceStatus::Pending || device.expires_at <= now() {
        return false;
    }
    device.status = status;
    device.user_id = Some(user_id.to_string());
    device.auth_time = Some(auth_time);
    device.grant_id = grant_id.map(str::to_string);
    true
}

/// Whether the update left the request answered as this user answered it (and not by a
/// concurrent answer, or too late).
fn answered_by(device: Option<DeviceRecord>, user_id: &str, status: DeviceStatus) -> Result<(), Error> {
    match device {
        Some(d) if d.status == status && d.user_id.as_deref() == Some(user_id) => Ok(()),
        Some(d) if d.status == DeviceStatus::Pending => Err(Error::new(
            ErrorCode::ExpiredToken,
            "this code has expired; start again on your device to get a new one",
        )),
        _ => Err(Error::invalid_grant("this code has already been used")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_codes_use_the_alphabet_and_read_back_however_typed() {
        for _ in 0..200 {
            let code = new_user_code();
            assert_eq!(code.len(), USER_CODE_LEN);
            assert!(code.bytes().all(|b| USER_CODE_ALPHABET.contains(&b)), "{code}");
            let shown = display_user_code(&code);
            assert_eq!(shown.len(), USER_CODE_LEN + 1);
            assert_eq!(normalize_user_code(&shown).as_deref(), Some(code.as_str()));
            let typed = format!(" {} ", shown.to_lowercase().replace('-', " "));
            assert_eq!(normalize_user_code(&typed).as_deref(), Some(code.as_str()));
        }
        for bad in ["", "BCDF-GHJ", "BCDF-GHJKL", "BCDA-GHJK", "BCDF_GHJK", "ВCDF-GHJK"] {
            assert_eq!(normalize_user_code(bad), None, "{bad}");
        }
    }
}
