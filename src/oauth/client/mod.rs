//! Clients: registration, client authentication (RFC 6749 §2.3) and redirect URI matching
//! (RFC 6749 §3.1.2, RFC 9700 §4.1.3, RFC 8252 §7.3).

use std::sync::Arc;

use subtle::ConstantTimeEq;

use super::audit::{Audit, Caller, Target};
pub mod assertion;
pub mod catalogue;
pub mod document;
pub mod keys;
pub mod metadata;
pub mod model;
pub mod registration;
pub mod switches;
pub mod uri;

pub use self::keys::ClientKeys;
pub use self::model::*;
pub use self::uri::*;
use super::scope::ADMIN_SCOPE;
use super::{now, random_token, secret_hash, Error, ErrorCode, Provider};
use crate::config::Config;
use crate::documents::DocumentCache;
use crate::keys::Keys;
use crate::rate_limit::RateLimiter;
use crate::store::{ClientRecord, ClientStore, ClientType, EphemeralStore, GrantType, Store};

/// Clients: the registry, client authentication (secrets and `private_key_jwt`), dynamic
/// registration and clients named by their metadata document. Its fields are the `client`
/// module's, so that the files beside this one can hold their parts of it.
pub(crate) struct Clients {
    pub(super) store: Arc<dyn ClientStore>,
    /// The memory of client assertions' `jti`s (RFC 7523 §3).
    pub(super) replays: Arc<dyn EphemeralStore>,
    pub(super) audit: Arc<Audit>,
    /// A client's ID-token algorithm must be one Tessera can sign with.
    pub(super) keys: Arc<Keys>,
    pub(super) config: Arc<Config>,
    /// The issuer identifier, without a trailing slash.
    pub(super) issuer: String,
    /// The `aud` of access tokens when no `resource` is asked for.
    pub(super) default_audience: String,
    /// Dynamic registrations per client address (review finding 6).
    pub(super) registration_rate: RateLimiter,
    /// Documents clients publish (their metadata, their keys), fetched safely and cached.
    pub(super) documents: DocumentCache,
}

impl Clients {
    pub(super) fn new(
        store: &Arc<dyn Store>,
        audit: &Arc<Audit>,
        keys: &Arc<Keys>,
        config: &Arc<Config>,
        issuer: &str,
        default_audience: &str,
    ) -> Clients {
        Clients {
            store: store.clone(),
            replays: store.clone(),
            audit: audit.clone(),
            keys: keys.clone(),
            config: config.clone(),
            issuer: issuer.to_string(),
            default_audience: default_audience.to_string(),
            registration_rate: RateLimiter::new(config.registration.limit_per_address),
            documents: DocumentCache::new(config.outbound.clone(), config.documents.clone()),
        }
    }

    /// An absolute URL on this server.
    fn url(&self, path: &str) -> String {
        format!("{}{}", self.issuer, path)
    }

    /// The `aud` for a token: the RFC 8707 `resource` if the client may have it, the default
    /// audience if none was asked for, `invalid_target` otherwise.
    pub fn resolve_audience(&self, client: &ClientRecord, resource: Option<&str>) -> Result<String, Error> {
        match resource {
            None => Ok(self.default_audience.clone()),
            Some(r) if r == self.default_audience || client.resources.iter().any(|allowed| allowed == r) => {
                Ok(r.to_string())
            }
            Some(_) => Err(Error::new(
                ErrorCode::InvalidTarget,
                "this client may not get tokens for that resource",
            )),
        }
    }
}

/// Clients as the front offers them to other crates (the tests register clients with these).
impl Provider {
    /// Validates and stores a new client (`Clients::register_client`).
    pub async fn register_client(&self, by: &Caller, new: NewClient) -> Result<(ClientRecord, Option<String>), Error> {
        self.clients.register_client(by, new).await
    }

    /// Changes a client's settings (`Clients::update_client`).
    pub async fn update_client(&self, by: &Caller, client_id: &str, new: NewClient) -> Result<ClientRecord, Error> {
        self.clients.update_client(by, client_id, new).await
    }

    /// Replaces a confidential client's secret (`Clients::rotate_client_secret`).
    pub async fn rotate_client_secret(&self, by: &Caller, client_id: &str) -> Result<String, Error> {
        self.clients.rotate_client_secret(by, client_id).await
    }

    /// The clients a user registered in the applications pages (`Clients::clients_owned_by`).
    pub async fn clients_owned_by(&self, user_id: &str) -> Result<Vec<ClientRecord>, Error> {
        self.clients.clients_owned_by(user_id).await
    }

    /// Looks up a client where no authentication happens (`Clients::find_client`).
    pub async fn find_client(&self, client_id: &str) -> Result<Option<ClientRecord>, Error> {
        self.clients.find_client(client_id).await
    }
}

/// How the client presented its credentials at the token, revocation or introspection endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthMethod {
    /// `client_secret_basic`: HTTP Basic with the url-encoded id and secret.
    Basic,
    /// `client_secret_post`: `client_id` and `client_secret` in the form body.
    Post,
    /// A public client naming itself by `client_id` only.
    None,
    /// `private_key_jwt`: a JWT signed with the client's key (RFC 7523 §2.2).
    PrivateKeyJwt,
}

/// The credentials found on a request, before they are checked.
#[derive(Debug, Clone)]
pub struct ClientCredentials {
    pub client_id: String,
    pub secret: Option<String>,
    pub method: AuthMethod,
    /// The caller's address, where known: a public client's rate budget is counted per
    /// (client, address), since anyone can name a public client (review finding 13).
    pub address: Option<String>,
    /// The `client_assertion` JWT, for [`AuthMethod::PrivateKeyJwt`].
    pub assertion: Option<String>,
    /// The path of the endpoint called: an assertion's `aud` may name it.
    pub endpoint: String,
}

impl ClientCredentials {
    /// The key the per-client rate limit counts this request under, once `client` is
    /// authenticated: its id, or for a public client its id and the caller's address.
    pub(crate) fn rate_key(&self, client: &ClientRecord) -> String {
        match client.client_type {
            ClientType::Confidential => client.client_id.clone(),
            ClientType::Public => format!("{}@{}", client.client_id, self.address.as_deref().unwrap_or_default()),
        }
    }
}

/// A client secret has 256 bits of entropy; only its SHA-256 is stored.
fn new_secret() -> String {
    random_token(32)
}

impl Clients {
    /// Validates and stores a new client. Returns it with the plaintext secret (confidential
    /// clients only), which is never stored and cannot be shown again.
    pub async fn register_client(&self, by: &Caller, new: NewClient) -> Result<(ClientRecord, Option<String>), Error> {
        self.register_client_with(by, new, |_| ()).await
    }

    /// [`Clients::register_client`], letting `finish` set what registration adds (a
    /// registration access token, say) before the client is stored.
    pub(super) async fn register_client_with(
        &self,
        by: &Caller,
        new: NewClient,
        finish: impl FnOnce(&mut ClientRecord),
    ) -> Result<(ClientRecord, Option<String>), Error> {
        self.audit.spend_change(by)?;
        let name = new.name.trim().to_string();
        let result = self.store_new_client(new, finish).await;
        let target = match &result {
            Ok((client, _)) => Target::client(client),
            Err(_) => Target {
                kind: "client",
                id: "",
                name: &name,
            },
        };
        self.audit
            .record_result(by, "client.create", Some(target), &result)
            .await;
        result
    }

    async fn store_new_client(
        &self,
        new: NewClient,
        finish: impl FnOnce(&mut ClientRecord),
    ) -> Result<(ClientRecord, Option<String>), Error> {
        let scope = self.validate_client(&new)?;
        if let Some(owner) = &new.owner_user_id {
            if self.store.clients_owned_by(owner).await?.len() >= MAX_APPS_PER_USER {
                return Err(Error::invalid_request(format!(
                    "you already have {MAX_APPS_PER_USER} apps, the most one user may register; delete one first"
                )));
            }
        }
        // A client with keys authenticates with them: it has no secret to leak.
        let secret = (new.client_type == ClientType::Confidential && new.keys.is_none()).then(new_secret);
        let jwks_or_uri = new.keys.is_some();
        let (jwks, jwks_uri) = key_fields(new.keys);
        let mut client = ClientRecord {
            client_id: super::random_id(),
            name: new.name.trim().to_string(),
            client_type: new.client_type,
            secret_hash: secret.as_deref().map(secret_hash),
            redirect_uris: new.redirect_uris,
            grant_types: new.grant_types,
            scopes: scope.tokens().map(str::to_string).collect(),
            resources: new.resources,
            access_token_ttl: new.access_token_ttl,
            refresh_token_ttl: new.refresh_token_ttl,
            created_at: now(),
            skip_consent: new.skip_consent,
            owner_user_id: new.owner_user_id,
            post_logout_redirect_uris: new.post_logout_redirect_uris,
            id_token_signed_response_alg: new.id_token_signed_response_alg,
            admin: new.admin,
            registration_token_hash: None,
            token_endpoint_auth_method: jwks_or_uri.then(|| catalogue::PRIVATE_KEY_JWT.to_string()),
            first_used_at: None,
            jwks,
            jwks_uri,
            policy: new.policy,
        };
        finish(&mut client);
        no_nul_anywhere(&client)?;
        if !self.store.insert_client(&client).await? {
            return Err(Error::server_error("a new client id was taken"));
        }
        Ok((client, secret))
    }

    /// Checks everything a registration or an edit asks for; returns the parsed scope.
    pub(super) fn validate_client(&self, new: &NewClient) -> Result<super::scope::Scope, Error> {
        let invalid = Error::invalid_request;
        if new.name.trim().is_empty() {
            return Err(invalid("the app needs a name"));
        }
        if new.name.trim().chars().count() > MAX_NAME_CHARS {
            return Err(Error::invalid_request(format!(
                "an app name is at most {MAX_NAME_CHARS} characters"
            )));
        }
        if super::text::has_deceptive(&new.name) {
            return Err(invalid(
                "an app name must not contain control, invisible or bidirectional-control characters",
            ));
        }
        check_uri_list("redirect URIs", &new.redirect_uris)?;
        check_uri_list("post-logout redirect URIs", &new.post_logout_redirect_uris)?;
        check_uri_list("resources", &new.resources)?;
        if new.skip_consent && new.owner_user_id.is_some() {
            return Err(invalid(
                "only an operator (tessera app create --skip-consent, or the admin API) can make an app skip consent",
            ));
        }
        if new.grant_types.is_empty() {
            return Err(invalid("the app needs at least one grant type"));
        }
        if new.client_type == ClientType::Public && new.grant_types.contains(&GrantType::ClientCredentials) {
            return Err(invalid(
                "a public client cannot use client_credentials: it has no secret",
            ));
        }
        if new.grant_types.contains(&GrantType::AuthorizationCode) && new.redirect_uris.is_empty() {
            return Err(invalid("the authorization code grant needs at least one redirect URI"));
        }
        for uri in new.redirect_uris.iter().chain(&new.post_logout_redirect_uris) {
            validate_redirect_uri(uri)?;
        }
        for resource in &new.resources {
            validate_resource(resource)?;
        }
        let scope = super::scope::Scope::parse(&new.scope)?;
        if let Some(unknown) = scope.tokens().find(|t| !super::scope::is_known(&self.config, t)) {
            let description = format!("scope {unknown:?} is not configured on this server");
            return Err(Error::new(ErrorCode::InvalidScope, description));
        }
        if new.admin {
            if new.client_type != ClientType::Confidential || new.grant_types != [GrantType::ClientCredentials] {
                return Err(invalid(
                    "an admin client is confidential and uses client_credentials only",
                ));
            }
            if !scope.contains(ADMIN_SCOPE) {
                return Err(invalid("an admin client needs the tessera:admin scope"));
            }
        } else if scope.contains(ADMIN_SCOPE) {
            return Err(Error::new(
                ErrorCode::InvalidScope,
                "only admin clients (tessera app create --admin) may have the tessera:admin scope",
            ));
        }
        if let Some(keys) = &new.keys {
            if new.client_type != ClientType::Confidential {
                return Err(invalid(
                    "a client with keys (jwks or jwks_uri) is confidential: it authenticates with private_key_jwt",
                ));
            }
            keys.validate()?;
        }
        if new.access_token_ttl == Some(0) || new.refresh_token_ttl == Some(0) {
            return Err(invalid("token lifetimes must be at least 1 second"));
        }
        if new.access_token_ttl > Some(MAX_ACCESS_TOKEN_TTL) || new.refresh_token_ttl > Some(MAX_REFRESH_TOKEN_TTL) {
            return Err(Error::invalid_request(format!(
                "an access token lives at most {MAX_ACCESS_TOKEN_TTL} s (a year), a refresh token at most {MAX_REFRESH_TOKEN_TTL} s (ten years)"
            )));
        }
        if let Some(ClientKeys::JwksUri(uri)) = &new.keys {
            check_uri_list("JWK Set URLs", std::slice::from_ref(uri))?;
        }
        validate_token_exchange(new)?;
        if new.owner_user_id.is_some() {
            self.check_self_service_policy(new, &scope)?;
        }
        Ok(scope)
    }

    /// What a user may register for themselves in the pages is what dynamic registration
    /// allows anyone (review finding 8: the pages let any user make a client_credentials app
    /// with every scope): the registration scopes and resources, client_credentials only if
    /// `registration_allow_client_credentials`, and the shorter name limit. Only the CLI and the
    /// admin API are unrestricted.
    fn check_self_service_policy(&self, new: &NewClient, scope: &super::scope::Scope) -> Result<(), Error> {
        let policy = &self.config.registration;
        if new.name.trim().chars().count() > MAX_SELF_SERVICE_NAME_CHARS {
            return Err(Error::invalid_request(format!(
                "an app name is at most {MAX_SELF_SERVICE_NAME_CHARS} characters"
            )));
        }
        if new.grant_types.contains(&GrantType::ClientCredentials) && !policy.allow_client_credentials {
            return Err(Error::new(
                ErrorCode::UnauthorizedClient,
                "this server does not let users register apps for the client_credentials grant; ask an operator",
            ));
        }
        let allowed = self.self_service_scopes();
        if let Some(denied) = scope.tokens().find(|t| !allowed.iter().any(|a| a == t)) {
            return Err(Error::new(
                ErrorCode::InvalidScope,
                format!("scope {denied:?} is not available to apps registered by users"),
            ));
        }
        if let Some(denied) = new.resources.iter().find(|r| !policy.resources.contains(r)) {
            return Err(Error::new(
                ErrorCode::InvalidTarget,
                format!("resource {denied:?} is not available to apps registered by users"),
            ));
        }
        self.check_self_service_exchange(new)
    }

    /// Token exchange for a client registered by a user (pages or dynamic registration): only
    /// if `registration_allow_token_exchange`, and only between the registration resources.
    pub(super) fn check_self_service_exchange(&self, new: &NewClient) -> Result<(), Error> {
        let policy = &self.config.registration;
        if new.grant_types.contains(&GrantType::TokenExchange) {
            if !policy.allow_token_exchange {
                return Err(Error::new(
                    ErrorCode::UnauthorizedClient,
                    "this server does not let users register apps for token exchange; ask an operator",
                ));
            }
            // A self-registered exchanger may only mint tokens for the registration resources,
            // and only from tokens meant for it or for them: never for the server's default
            // audience, which would let anyone trade any user's token.
            let exchange = &new.policy.token_exchange;
            if let Some(denied) = exchange
                .audiences
                .iter()
                .chain(&exchange.subject_audiences)
                .find(|a| !policy.resources.contains(a))
            {
                return Err(Error::new(
                    ErrorCode::InvalidTarget,
                    format!("token exchange audience {denied:?} is not available to apps registered by users"),
                ));
            }
            if exchange.subject_audiences.is_empty() {
                return Err(Error::invalid_request(
                    "an app registered by a user must name the audiences of the tokens it exchanges (token_exchange_subject_audiences)",
                ));
            }
        }
        Ok(())
    }

    /// Changes a client's settings. Its id, type, secret, owner and creation time stay.
    pub async fn update_client(&self, by: &Caller, client_id: &str, new: NewClient) -> Result<ClientRecord, Error> {
        self.update_client_with(by, client_id, new, |_| ()).await
    }

    /// [`Clients::update_client`], letting `finish` set what registration changes too.
    pub(super) async fn update_client_with(
        &self,
        by: &Caller,
        client_id: &str,
        new: NewClient,
        finish: impl FnOnce(&mut ClientRecord),
    ) -> Result<ClientRecord, Error> {
        self.audit.spend_change(by)?;
        let name = new.name.trim().to_string();
        let result = self.store_client_update(client_id, new, finish).await;
        let target = match &result {
            Ok(client) => Target::client(client),
            Err(_) => Target {
                kind: "client",
                id: client_id,
                name: &name,
            },
        };
        self.audit
            .record_result(by, "client.update", Some(target), &result)
            .await;
        result
    }

    async fn store_client_update(
        &self,
        client_id: &str,
        new: NewClient,
        finish: impl FnOnce(&mut ClientRecord),
    ) -> Result<ClientRecord, Error> {
        let mut client = self
            .store
            .get_client(client_id)
            .await?
            .ok_or_else(|| super::admin::not_found("client"))?;
        if new.client_type != client.client_type {
            return Err(Error::invalid_request(
                "a client's type cannot change; register a new app instead",
            ));
        }
        let scope = self.validate_client(&new)?;
        client.name = new.name.trim().to_string();
        client.grant_types = new.grant_types;
        client.redirect_uris = new.redirect_uris;
        client.scopes = scope.tokens().map(str::to_string).collect();
        client.resources = new.resources;
        client.access_token_ttl = new.access_token_ttl;
        client.refresh_token_ttl = new.refresh_token_ttl;
        client.skip_consent = new.skip_consent;
        client.post_logout_redirect_uris = new.post_logout_redirect_uris;
        client.id_token_signed_response_alg = new.id_token_signed_response_alg;
        client.admin = new.admin;
        client.policy = new.policy;
        let had_keys = client.jwks.is_some() || client.jwks_uri.is_some();
        if new.keys.is_some() != had_keys {
            return Err(Error::invalid_request(
                "a client cannot change between a secret and keys; register a new app instead",
            ));
        }
        (client.jwks, client.jwks_uri) = key_fields(new.keys);
        finish(&mut client);
        no_nul_anywhere(&client)?;
        // Only if it still exists: an update racing a delete must not bring the client back.
        if !self.store.update_client(&client).await? {
            return Err(super::admin::not_found("client"));
        }
        Ok(client)
    }

    /// Clears `skip_consent` on clients that users registered themselves (pages or dynamic
    /// registration): earlier versions let the pages set it, which let any user take codes
    /// from other users without their consent. Returns how many clients were changed. The
    /// clients are read a page at a time; it runs once per store ([`Provider::upgrade`]).
    ///
    /// [`Provider::upgrade`]: crate::oauth::Provider::upgrade
    pub(crate) async fn revoke_self_service_first_party(&self) -> Result<usize, Error> {
        let (mut changed, mut pages) = (0, crate::store::ClientPages::new(self.store.as_ref()));
        while let Some(page) = pages.next().await? {
            for mut client in page {
                if client.skip_consent && !operator_made(&client) {
                    client.skip_consent = false;
                    if self.store.update_client(&client).await? {
                        changed += 1;
                        let target = Target::client(&client);
                        self.audit
                            .record(&Caller::system(), "client.clear_skip_consent", Some(target), "ok")
                            .await;
                    }
                }
            }
        }
        Ok(changed)
    }

    /// The clients a user registered in the applications pages, by name.
    pub async fn clients_owned_by(&self, user_id: &str) -> Result<Vec<ClientRecord>, Error> {
        let mut clients = self.store.clients_owned_by(user_id).await?;
        clients.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(clients)
    }

    /// Replaces a confidential client's secret; the old one stops working at once.
    pub async fn rotate_client_secret(&self, by: &Caller, client_id: &str) -> Result<String, Error> {
        self.audit.spend_change(by)?;
        let mut name = String::new();
        let result = async {
            let mut client = self
                .store
                .get_client(client_id)
                .await?
                .ok_or_else(|| super::admin::not_found("client"))?;
            name.clone_from(&client.name);
            if client.client_type != ClientType::Confidential {
                return Err(Error::invalid_request("public clients have no secret"));
            }
            let secret = new_secret();
            client.secret_hash = Some(secret_hash(&secret));
            if !self.store.update_client(&client).await? {
                return Err(super::admin::not_found("client"));
            }
            Ok(secret)
        }
        .await;
        let target = Target {
            kind: "client",
            id: client_id,
            name: &name,
        };
        self.audit
            .record_result(by, "client.rotate_secret", Some(target), &result)
            .await;
        result
    }

    /// Client authentication (RFC 6749 §2.3). Confidential clients must present their secret;
    /// public clients must not present one. Every failure is the same `invalid_client`, so a
    /// caller cannot tell an unknown client from a wrong secret.
    pub(crate) async fn authenticate_client(&self, credentials: &ClientCredentials) -> Result<ClientRecord, Error> {
        let client = self
            .resolve_client_for(&credentials.client_id, credentials.address.as_deref())
            .await?
            .ok_or_else(Error::invalid_client)?;
        let checked = self.check_client_credentials(&client, credentials).await;
        if let Err(e) = &checked {
            if e.code == ErrorCode::InvalidClient {
                self.audit
                    .client_auth_rejected(&client, credentials.address.as_deref())
                    .await;
            }
        }
        checked.map(|()| client)
    }

    /// Whether `credentials` authenticate `client`, by the method it registered.
    async fn check_client_credentials(
        &self,
        client: &ClientRecord,
        credentials: &ClientCredentials,
    ) -> Result<(), Error> {
        // RFC 7591 §2: a client registered for one method may not use another (clients made by
        // an operator name none and may use either secret method).
        let registered = client.token_endpoint_auth_method.as_deref();
        let method_allowed = match credentials.method {
            AuthMethod::Basic => registered.is_none_or(|m| m == "client_secret_basic"),
            AuthMethod::Post => registered.is_none_or(|m| m == "client_secret_post"),
            AuthMethod::None => registered.is_none_or(|m| m == "none"),
            AuthMethod::PrivateKeyJwt => registered == Some(catalogue::PRIVATE_KEY_JWT),
        };
        if !method_allowed {
            return Err(Error::invalid_client());
        }
        if let (AuthMethod::PrivateKeyJwt, Some(assertion)) = (credentials.method, &credentials.assertion) {
            return self
                .verify_client_assertion(client, assertion, &credentials.endpoint, credentials.address.as_deref())
                .await;
        }
        match (client.client_type, &client.secret_hash, &credentials.secret) {
            (ClientType::Confidential, Some(stored), Some(given)) => {
                if bool::from(secret_hash(given).ct_eq(stored)) {
                    Ok(())
                } else {
                    Err(Error::invalid_client())
                }
            }
            (ClientType::Public, _, None) => Ok(()),
            _ => Err(Error::invalid_client()),
        }
    }

    /// Notes that `client_id` was first issued a token at `at`: a registered client that is
    /// used is never purged as unused.
    pub(crate) async fn mark_used(&self, client_id: &str, at: i64) -> Result<(), Error> {
        self.store.mark_client_used(client_id, at).await?;
        Ok(())
    }

    /// The registered client with this id, never a document fetched for it: for naming a
    /// client (in the trail, say) where a request out is not worth it.
    pub(crate) async fn stored_client(&self, client_id: &str) -> Result<Option<ClientRecord>, Error> {
        Ok(self.store.get_client(client_id).await?)
    }

    /// Every client, ordered by id (a full scan: for the CLI, not for requests).
    pub async fn list_clients(&self) -> Result<Vec<ClientRecord>, Error> {
        Ok(self.store.list_clients().await?)
    }

    /// Looks up a client where no authentication happens (the admin API, the CLI, the pages):
    /// see [`Clients::resolve_client`].
    pub async fn find_client(&self, client_id: &str) -> Result<Option<ClientRecord>, Error> {
        self.resolve_client(client_id).await
    }

    /// [`Clients::find_client`] for a request from `caller` (an address key), against whom a
    /// fetch of a document not cached is counted.
    pub(crate) async fn find_client_for(
        &self,
        client_id: &str,
        caller: Option<&str>,
    ) -> Result<Option<ClientRecord>, Error> {
        self.resolve_client_for(client_id, caller).await
    }
}
#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redirect_uris_match_exactly() {
        let registered = vec!["https://app.example/cb".to_string()];
        assert!(match_redirect_uri(&registered, "https://app.example/cb").is_some());
        for near_miss in [
            "https://app.example/cb/",
            "https://app.example/cb?x=1",
            "https://app.example/CB",
            "https://app.example:443/cb",
            "https://app.example/cb#f",
            "https://evil.example/cb",
            "https://app.example.evil/cb",
        ] {
            assert!(match_redirect_uri(&registered, near_miss).is_none(), "{near_miss}");
        }
    }

    #[test]
    fn loopback_redirect_uris_may_differ_only_in_port() {
        let registered = vec![
            "http://127.0.0.1/callback".to_string(),
            "http://[::1]:8080/cb".to_string(),
        ];
        assert!(match_redirect_uri(&registered, "http://127.0.0.1:51234/callback").is_some());
        assert!(match_redirect_uri(&registered, "http://[::1]:9/cb").is_some());
        assert!(match_redirect_uri(&registered, "http://127.0.0.1:51234/other").is_none());
        assert!(match_redirect_uri(&registered, "https://127.0.0.1:51234/callback").is_none());
        assert!(match_redirect_uri(&registered, "http://127.0.0.2:51234/callback").is_none());
    }

    #[test]
    fn registration_refuses_unsafe_redirect_uris() {
        assert!(validate_redirect_uri("https://app.example/cb").is_ok());
        assert!(validate_redirect_uri("http://localhost:3000/cb").is_ok());
        assert!(validate_redirect_uri("com.example.app:/oauth").is_ok());
        for bad in [
            "/relative",
            "http://app.example/cb",
            "https://app.example/cb#frag",
            "javascript:alert(1)",
            "myapp:/cb",
        ] {
            assert!(validate_redirect_uri(bad).is_err(), "{bad}");
        }
    }
}
