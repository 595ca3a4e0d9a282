//! Dynamic client registration (RFC 7591) and its management protocol (RFC 7592), within the
//! configured policy: which grant types, scopes and redirect URIs a self-registered client may
//! have. Every client registered here is an ordinary one (never admin, never first-party).

use subtle::ConstantTimeEq;
use url::Url;

use super::catalogue;
use super::keys::ClientKeys;
pub use super::metadata::ClientMetadata;
use super::model::{NewClient, MAX_SELF_SERVICE_NAME_CHARS};
use super::uri::{check_uri_list, is_loopback};
use super::Clients;
use crate::config::RegistrationMode;
use crate::keys::Algorithm;
use crate::oauth::audit::Caller;
use crate::oauth::scope::{Scope, ADMIN_SCOPE};
use crate::oauth::{random_token, secret_hash, Error, ErrorCode, Provider};
use crate::store::{ClientRecord, ClientType, GrantType, TokenExchangePolicy};

/// A registered client as RFC 7591 §3.2.1 describes it back to the client.
#[derive(Debug, Clone)]
pub struct Registration {
    pub client: ClientRecord,
    /// Only in the response to the registration itself.
    pub client_secret: Option<String>,
    /// Only in the response to the registration itself.
    pub registration_access_token: Option<String>,
    pub registration_client_uri: String,
}

impl Registration {
    pub fn token_endpoint_auth_method(&self) -> String {
        self.client.token_endpoint_auth_method.clone().unwrap_or_else(|| {
            match self.client.client_type {
                ClientType::Public => "none",
                ClientType::Confidential => "client_secret_basic",
            }
            .into()
        })
    }

    pub fn response_types(&self) -> Vec<String> {
        if self.client.grant_types.contains(&GrantType::AuthorizationCode) {
            vec!["code".into()]
        } else {
            vec![]
        }
    }
}

fn invalid_metadata(why: impl Into<String>) -> Error {
    Error::new(ErrorCode::InvalidClientMetadata, why)
}

fn invalid_token() -> Error {
    Error::new(ErrorCode::InvalidToken, "the registration access token is invalid")
}

/// Redirect URIs of self-registered clients: https, or http on a loopback address (RFC 8252
/// §7.3). No private-use schemes and no fragments.
fn check_redirect_uri(uri: &str) -> Result<(), Error> {
    let bad = |why: &str| Error::new(ErrorCode::InvalidRedirectUri, format!("redirect URI {uri:?} {why}"));
    let url = Url::parse(uri).map_err(|_| bad("is not an absolute URI"))?;
    if url.fragment().is_some() || uri.contains('#') {
        return Err(bad("must not contain a fragment"));
    }
    match url.scheme() {
        "https" if url.host().is_some() => Ok(()),
        "http" if is_loopback(&url) => Ok(()),
        _ => Err(bad("must use https, or http on a loopback address")),
    }
}

impl Clients {
    /// Whether registration is on, and the registration endpoint's URL if so.
    pub fn registration_endpoint(&self) -> Option<String> {
        (self.config.registration.mode != RegistrationMode::Off)
            .then(|| self.url(crate::oauth::endpoints::REGISTRATION))
    }

    /// Checks the initial access token of a registration request (RFC 7591 §3).
    fn check_initial_access_token(&self, token: Option<&str>) -> Result<(), Error> {
        let policy = &self.config.registration;
        match policy.mode {
            RegistrationMode::Off => Err(Error::new(ErrorCode::NotFound, "registration is not enabled")),
            RegistrationMode::Open => Ok(()),
            RegistrationMode::Token => {
                let presented = token
                    .ok_or_else(|| Error::new(ErrorCode::InvalidToken, "registration needs an initial access token"))?;
                let known = policy
                    .initial_access_tokens
                    .iter()
                    .any(|t| bool::from(secret_hash(t).ct_eq(&secret_hash(presented))));
                if known {
                    Ok(())
                } else {
                    Err(Error::new(
                        ErrorCode::InvalidToken,
                        "the initial access token is invalid",
                    ))
                }
            }
        }
    }

    /// The scopes a client registered by anyone but an operator may have (the pages and
    /// dynamic registration alike): `registration_scopes`, or every configured scope.
    pub(crate) fn self_service_scopes(&self) -> Vec<String> {
        match &self.config.registration.scopes {
            Some(scopes) => scopes.clone(),
            None => self.config.scopes.iter().map(|s| s.name.clone()).collect(),
        }
    }

    /// Applies the registration policy to client metadata, giving the client to store.
    /// The settings of a client registered (or, with `current`, updated) with `metadata`.
    pub(super) fn registered_settings(
        &self,
        metadata: &ClientMetadata,
        current: Option<&crate::store::ClientPolicy>,
    ) -> Result<(NewClient, String), Error> {
        if metadata.software_statement.is_some() {
            return Err(Error::new(
                ErrorCode::InvalidSoftwareStatement,
                "software statements are not supported",
            ));
        }
        let method = metadata
            .token_endpoint_auth_method
            .clone()
            .unwrap_or_else(|| "client_secret_basic".into());
        let Some(auth_method) = catalogue::auth_method(&method) else {
            let known: Vec<&str> = catalogue::AUTH_METHODS.iter().map(|m| m.wire).collect();
            return Err(invalid_metadata(format!(
                "token_endpoint_auth_method {method:?} is not supported ({})",
                known.join(", ")
            )));
        };
        let client_type = auth_method.client_type;
        let keys = match (&metadata.jwks, &metadata.jwks_uri) {
            (Some(_), Some(_)) => return Err(invalid_metadata("give jwks or jwks_uri, not both (RFC 7591 §2)")),
            (Some(jwks), None) => Some(ClientKeys::Jwks(jwks.clone())),
            (None, Some(uri)) => Some(ClientKeys::JwksUri(uri.clone())),
            (None, None) => None,
        };
        if auth_method.keys != keys.is_some() {
            return Err(invalid_metadata(
                "private_key_jwt needs jwks or jwks_uri, and keys are only for private_key_jwt",
            ));
        }
        let names = metadata
            .grant_types
            .clone()
            .unwrap_or_else(|| vec!["authorization_code".into()]);
        let mut grant_types = Vec::new();
        for name in &names {
            let grant = match catalogue::grant_by_wire(name) {
                Some(grant) if grant.self_service(client_type, &self.config.registration) => grant.grant,
                _ => {
                    return Err(invalid_metadata(format!(
                        "grant type {name:?} is not allowed for this client"
                    )))
                }
            };
            if !grant_types.contains(&grant) {
                grant_types.push(grant);
            }
        }
        let wants_code = grant_types.contains(&GrantType::AuthorizationCode);
        match metadata.response_types.as_deref() {
            None => {}
            Some([only]) if only == "code" && wants_code => {}
            Some([]) if !wants_code => {}
            Some(_) => {
                return Err(invalid_metadata(
                    "response_types must be [\"code\"], matching the authorization_code grant",
                ))
            }
        }
        if wants_code && metadata.redirect_uris.is_empty() {
            return Err(Error::new(
                ErrorCode::InvalidRedirectUri,
                "the authorization_code grant needs at least one redirect URI",
            ));
        }
        for (what, uris) in [
            ("redirect URIs", &metadata.redirect_uris),
            ("post-logout redirect URIs", &metadata.post_logout_redirect_uris),
        ] {
            check_uri_list(what, uris).map_err(|e| Error::new(ErrorCode::InvalidRedirectUri, e.description))?;
        }
        for uri in metadata.redirect_uris.iter().chain(&metadata.post_logout_redirect_uris) {
            check_redirect_uri(uri)?;
        }
        let allowed = self.self_service_scopes();
        let scope = match metadata.scope.as_deref() {
            None => Scope::from_tokens(allowed.iter().cloned()),
            Some(requested) => {
                let scope = Scope::parse(requested).map_err(|_| invalid_metadata("scope is malformed"))?;
                if let Some(denied) = scope
                    .tokens()
                    .find(|t| *t == ADMIN_SCOPE || !allowed.iter().any(|a| a == t))
                {
                    return Err(invalid_metadata(format!("scope {denied:?} may not be registered")));
                }
                scope
            }
        };
        let id_token_signed_response_alg = match metadata.id_token_signed_response_alg.as_deref() {
            None => None,
            Some("RS256") => Some(Algorithm::RS256),
            Some("ES256") => Some(Algorithm::ES256),
            Some("EdDSA") => Some(Algorithm::EdDSA),
            Some(other) => {
                return Err(invalid_metadata(format!(
                    "id_token_signed_response_alg {other:?} is not supported"
                )))
            }
        };
        // Anyone may register: only what the keyring can sign now (an operator may register
        // ahead of a key; see `ensure_id_token_key`).
        if let Some(alg) = id_token_signed_response_alg {
            if self.keys.current().signer_for(alg).is_none() {
                return Err(invalid_metadata(format!(
                    "this server has no {alg} key for id_token_signed_response_alg"
                )));
            }
        }
        if let Some(switch) = metadata
            .switches
            .closed_to_registration(&self.config.registration, current)
        {
            return Err(invalid_metadata(format!(
                "{} is not open to dynamic registration on this server (registration_allow_{})",
                switch.name, switch.name
            )));
        }
        let name = metadata
            .client_name
            .clone()
            .filter(|n| !n.trim().is_empty())
            .unwrap_or_else(|| "Unnamed app".into());
        if name.chars().count() > MAX_SELF_SERVICE_NAME_CHARS || crate::oauth::text::has_deceptive(&name) {
            return Err(invalid_metadata(format!(
                "client_name must be at most {} characters, without control, invisible or bidirectional-control characters",
                MAX_SELF_SERVICE_NAME_CHARS
            )));
        }
        let new = NewClient {
            name,
            client_type,
            grant_types,
            redirect_uris: metadata.redirect_uris.clone(),
            scope: scope.to_string(),
            resources: self.config.registration.resources.clone(),
            access_token_ttl: None,
            refresh_token_ttl: None,
            skip_consent: false,
            owner_user_id: None,
            post_logout_redirect_uris: metadata.post_logout_redirect_uris.clone(),
            id_token_signed_response_alg,
            admin: false,
            keys,
            policy: metadata.switches.with(TokenExchangePolicy {
                audiences: metadata.token_exchange_audiences.clone(),
                subject_audiences: metadata.token_exchange_subject_audiences.clone(),
                require_actor: metadata.token_exchange_require_actor.unwrap_or(false),
            }),
        };
        self.check_self_service_exchange(&new)
            .map_err(Self::as_registration_error)?;
        Ok((new, method))
    }

    /// Maps a validation error of the shared client rules to RFC 7591's codes.
    fn as_registration_error(err: Error) -> Error {
        match err.code {
            // The server's own failures keep their class (a 503 stays a 503).
            ErrorCode::ServerError
            | ErrorCode::TemporarilyUnavailable
            | ErrorCode::RateLimited
            | ErrorCode::InvalidRedirectUri
            | ErrorCode::InvalidClientMetadata => err,
            _ => invalid_metadata(err.description),
        }
    }

    /// Registers a client (RFC 7591 §3.1). The response carries its secret (confidential
    /// clients) and its registration access token, both shown only this once.
    /// `address` is the caller's: each may register `registration_limit_per_address` clients
    /// an hour (review finding 6), counted only for registrations that would be stored.
    pub(crate) async fn register_dynamically(
        &self,
        metadata: &ClientMetadata,
        initial_access_token: Option<&str>,
        address: Option<std::net::IpAddr>,
    ) -> Result<Registration, Error> {
        self.check_initial_access_token(initial_access_token)?;
        let (new, method) = self.registered_settings(metadata, None)?;
        let key = address.map(crate::net::address_key).unwrap_or_default();
        self.registration_rate.check(&key).map_err(Error::rate_limited)?;
        let token = random_token(32);
        let token_hash = secret_hash(&token);
        let by = Caller::anonymous(address.map(|a| a.to_string()).as_deref());
        let (client, client_secret) = self
            .register_client_with(&by, new, |client| {
                client.registration_token_hash = Some(token_hash);
                client.token_endpoint_auth_method = Some(method);
            })
            .await
            .map_err(Self::as_registration_error)?;
        Ok(self.registration(client, client_secret, Some(token)))
    }

    fn registration(
        &self,
        client: ClientRecord,
        client_secret: Option<String>,
        registration_access_token: Option<String>,
    ) -> Registration {
        let registration_client_uri =
            self.url(&crate::oauth::endpoints::CLIENT_REGISTRATION.replace("{client_id}", &client.client_id));
        Registration {
            client,
            client_secret,
            registration_access_token,
            registration_client_uri,
        }
    }

    /// The client behind a registration access token (RFC 7592 §3): the token must be this
    /// client's. An unknown client is answered like a wrong token (§2.1).
    pub(super) async fn registered_client(&self, client_id: &str, token: Option<&str>) -> Result<ClientRecord, Error> {
        let token = token.ok_or_else(invalid_token)?;
        let client = self.store.get_client(client_id).await?.ok_or_else(invalid_token)?;
        match &client.registration_token_hash {
            Some(hash) if bool::from(hash.ct_eq(&secret_hash(token))) => Ok(client),
            _ => Err(invalid_token()),
        }
    }

    /// RFC 7592 §2.1: read a registration.
    pub(crate) async fn read_registration(&self, client_id: &str, token: Option<&str>) -> Result<Registration, Error> {
        let client = self.registered_client(client_id, token).await?;
        Ok(self.registration(client, None, None))
    }

    /// RFC 7592 §2.2: replace a registration's metadata. `client_id` must be repeated; a
    /// `client_secret`, if sent, must be the current one.
    pub(crate) async fn update_registration(
        &self,
        client_id: &str,
        token: Option<&str>,
        body_client_id: Option<&str>,
        body_client_secret: Option<&str>,
        metadata: &ClientMetadata,
        address: Option<std::net::IpAddr>,
    ) -> Result<Registration, Error> {
        let client = self.registered_client(client_id, token).await?;
        let by = Caller::client(&client, address.map(|a| a.to_string()).as_deref());
        if body_client_id != Some(client_id) {
            return Err(invalid_metadata("client_id must be sent and match the registration"));
        }
        if let Some(secret) = body_client_secret {
            let matches = client
                .secret_hash
                .is_some_and(|hash| bool::from(hash.ct_eq(&secret_hash(secret))));
            if !matches {
                return Err(invalid_metadata("client_secret does not match"));
            }
        }
        let (mut new, method) = self.registered_settings(metadata, Some(&client.policy))?;
        super::switches::keep_operator_switches(&mut new.policy, &client.policy);
        super::switches::keep_closed_switches(&mut new.policy, &client.policy, &self.config.registration);
        let had_keys = client.jwks.is_some() || client.jwks_uri.is_some();
        if new.client_type != client.client_type || new.keys.is_some() != had_keys {
            return Err(invalid_metadata(
                "token_endpoint_auth_method cannot change between none, a secret and keys",
            ));
        }
        let updated = self
            .update_client_with(&by, client_id, new, |client| {
                client.token_endpoint_auth_method = Some(method)
            })
            .await
            .map_err(Self::as_registration_error)?;
        Ok(self.registration(updated, None, None))
    }
}

/// Deleting a registration revokes the client's grants: the front's, which reaches them.
impl Provider {
    /// RFC 7592 §2.3: delete a registration (its grants are revoked first).
    pub(crate) async fn delete_registration(
        &self,
        client_id: &str,
        token: Option<&str>,
        address: Option<std::net::IpAddr>,
    ) -> Result<(), Error> {
        let client = self.clients.registered_client(client_id, token).await?;
        let by = Caller::client(&client, address.map(|a| a.to_string()).as_deref());
        self.delete_client(&by, client_id).await?;
        Ok(())
    }
}
