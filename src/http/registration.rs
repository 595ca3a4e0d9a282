//! Dynamic client registration (RFC 7591) at `/o/register/` and its management protocol
//! (RFC 7592) at `/o/register/{client_id}`, when the configuration turns registration on.

use std::sync::Arc;

use poem::web::Data;
use poem::Request;
use poem_openapi::param::Path;
use poem_openapi::payload::Json;
use poem_openapi::{ApiResponse, Object, OpenApi};

use super::client_switches::{SelfServiceSwitches, SelfServiceSwitchesShown, SwitchFields};
use super::error::{describe, Answer, Challenge, ErrorGroup, ErrorJson, HttpError, NO_STORE};
use super::security::bearer_token;
use super::Tag;
use crate::net::ClientAddress;
use crate::oauth::client::registration::{ClientMetadata, Registration};
use crate::oauth::client::switches::SwitchValues;
use crate::oauth::{Error, ErrorCode, Provider};

/// Client metadata (RFC 7591 §2; OpenID Connect Registration for the ID token algorithm).
/// Unknown fields are ignored.
#[derive(Object, Debug, Default)]
pub struct ClientRegistrationRequest {
    /// https, or http on a loopback address; required for the authorization_code grant. At
    /// most 50, each at most 2048 bytes.
    #[oai(skip_serializing_if_is_none)]
    pub redirect_uris: Option<Vec<String>>,
    /// `client_secret_basic` (default), `client_secret_post`, `private_key_jwt` (with `jwks`
    /// or `jwks_uri`; no secret is issued), or `none` for a public client.
    #[oai(skip_serializing_if_is_none)]
    pub token_endpoint_auth_method: Option<String>,
    /// The client's public keys (a JWK Set), for `private_key_jwt`.
    #[oai(skip_serializing_if_is_none)]
    pub jwks: Option<serde_json::Value>,
    /// The https URL where the client publishes its JWK Set, for `private_key_jwt`.
    #[oai(skip_serializing_if_is_none)]
    pub jwks_uri: Option<String>,
    /// Default `["authorization_code"]`; `refresh_token` and
    /// `urn:ietf:params:oauth:grant-type:device_code` (RFC 8628, no redirect URI needed) may
    /// be added; `client_credentials` only for confidential clients and only if the server's
    /// policy allows it.
    #[oai(skip_serializing_if_is_none)]
    pub grant_types: Option<Vec<String>>,
    /// `["code"]` (the default) for the authorization_code grant.
    #[oai(skip_serializing_if_is_none)]
    pub response_types: Option<Vec<String>>,
    /// Shown to users on the consent page; at most 100 characters.
    #[oai(skip_serializing_if_is_none)]
    pub client_name: Option<String>,
    /// Space-separated; default: every scope the registration policy allows.
    #[oai(skip_serializing_if_is_none)]
    pub scope: Option<String>,
    /// Where RP-initiated logout may return to (same rules and limits as redirect URIs).
    #[oai(skip_serializing_if_is_none)]
    pub post_logout_redirect_uris: Option<Vec<String>>,
    /// `RS256` (default), `ES256` or `EdDSA`.
    #[oai(skip_serializing_if_is_none)]
    pub id_token_signed_response_alg: Option<String>,
    /// The client's switches (`dpop_bound_access_tokens`, ...: `oauth::client::switches`).
    #[oai(flatten)]
    pub switches: SelfServiceSwitches,
    /// Token exchange (grant type `urn:ietf:params:oauth:grant-type:token-exchange`, only if
    /// the server's policy allows it): the audiences the client may ask exchanged tokens for,
    /// from the server's registration resources.
    #[oai(skip_serializing_if_is_none)]
    pub token_exchange_audiences: Option<Vec<String>>,
    /// Token exchange: the client may present subject tokens whose audience includes one of
    /// these (from the server's registration resources; required with the grant).
    #[oai(skip_serializing_if_is_none)]
    pub token_exchange_subject_audiences: Option<Vec<String>>,
    /// Token exchange: every exchange must present an `actor_token` (default false).
    #[oai(skip_serializing_if_is_none)]
    pub token_exchange_require_actor: Option<bool>,
    /// Not supported: sending one is an `invalid_software_statement`.
    #[oai(skip_serializing_if_is_none)]
    pub software_statement: Option<String>,
    /// Accepted and ignored.
    #[oai(skip_serializing_if_is_none)]
    pub client_uri: Option<String>,
    /// Accepted and ignored.
    #[oai(skip_serializing_if_is_none)]
    pub logo_uri: Option<String>,
    /// Accepted and ignored.
    #[oai(skip_serializing_if_is_none)]
    pub contacts: Option<Vec<String>>,
    /// RFC 7592 updates only: must repeat the client's id.
    #[oai(skip_serializing_if_is_none)]
    pub client_id: Option<String>,
    /// RFC 7592 updates only: if sent, must be the current secret.
    #[oai(skip_serializing_if_is_none)]
    pub client_secret: Option<String>,
}

impl ClientRegistrationRequest {
    fn metadata(&self) -> ClientMetadata {
        ClientMetadata {
            redirect_uris: self.redirect_uris.clone().unwrap_or_default(),
            token_endpoint_auth_method: self.token_endpoint_auth_method.clone(),
            grant_types: self.grant_types.clone(),
            response_types: self.response_types.clone(),
            client_name: self.client_name.clone(),
            scope: self.scope.clone(),
            post_logout_redirect_uris: self.post_logout_redirect_uris.clone().unwrap_or_default(),
            id_token_signed_response_alg: self.id_token_signed_response_alg.clone(),
            software_statement: self.software_statement.clone(),
            jwks: self.jwks.clone(),
            jwks_uri: self.jwks_uri.clone(),
            switches: self.switches.0,
            token_exchange_audiences: self.token_exchange_audiences.clone().unwrap_or_default(),
            token_exchange_subject_audiences: self.token_exchange_subject_audiences.clone().unwrap_or_default(),
            token_exchange_require_actor: self.token_exchange_require_actor,
        }
    }
}

/// A registered client (RFC 7591 §3.2.1, RFC 7592 §3).
#[derive(Object, Debug)]
pub struct ClientInformation {
    pub client_id: String,
    /// Only in the response to the registration; stored as a hash, never shown again.
    #[oai(skip_serializing_if_is_none)]
    pub client_secret: Option<String>,
    /// Seconds since the epoch.
    pub client_id_issued_at: i64,
    /// 0: the secret does not expire. Present when the client has a secret.
    #[oai(skip_serializing_if_is_none)]
    pub client_secret_expires_at: Option<i64>,
    /// Only in the response to the registration: the bearer token for `registration_client_uri`.
    #[oai(skip_serializing_if_is_none)]
    pub registration_access_token: Option<String>,
    /// Where to read, update or delete this registration (RFC 7592).
    pub registration_client_uri: String,
    pub redirect_uris: Vec<String>,
    pub token_endpoint_auth_method: String,
    pub grant_types: Vec<String>,
    pub response_types: Vec<String>,
    pub client_name: String,
    pub scope: String,
    pub post_logout_redirect_uris: Vec<String>,
    pub id_token_signed_response_alg: String,
    #[oai(skip_serializing_if_is_none)]
    pub jwks: Option<serde_json::Value>,
    #[oai(skip_serializing_if_is_none)]
    pub jwks_uri: Option<String>,
    /// The client's switches (`dpop_bound_access_tokens`, ...: `oauth::client::switches`).
    #[oai(flatten)]
    pub switches: SelfServiceSwitchesShown,
    /// Present for clients with the token exchange grant.
    #[oai(skip_serializing_if_is_none)]
    pub token_exchange_audiences: Option<Vec<String>>,
    #[oai(skip_serializing_if_is_none)]
    pub token_exchange_subject_audiences: Option<Vec<String>>,
    #[oai(skip_serializing_if_is_none)]
    pub token_exchange_require_actor: Option<bool>,
}

impl From<Registration> for ClientInformation {
    fn from(r: Registration) -> Self {
        let token_endpoint_auth_method = r.token_endpoint_auth_method();
        let response_types = r.response_types();
        let has_secret = r.client.secret_hash.is_some();
        let c = r.client;
        let exchanges = c.grant_types.contains(&crate::store::GrantType::TokenExchange);
        let exchange = &c.policy.token_exchange;
        ClientInformation {
            client_id: c.client_id,
            client_secret: r.client_secret,
            client_id_issued_at: c.created_at,
            client_secret_expires_at: has_secret.then_some(0),
            registration_access_token: r.registration_access_token,
            registration_client_uri: r.registration_client_uri,
            redirect_uris: c.redirect_uris,
            token_endpoint_auth_method,
            grant_types: c
                .grant_types
                .iter()
                .map(|g| crate::oauth::client::catalogue::wire(*g).to_string())
                .collect(),
            response_types,
            client_name: c.name,
            scope: c.scopes.join(" "),
            post_logout_redirect_uris: c.post_logout_redirect_uris,
            id_token_signed_response_alg: c
                .id_token_signed_response_alg
                .unwrap_or(crate::keys::Algorithm::RS256)
                .as_str()
                .into(),
            jwks: c.jwks,
            jwks_uri: c.jwks_uri,
            switches: SwitchFields(SwitchValues::of(&c.policy)),
            token_exchange_audiences: exchanges.then(|| exchange.audiences.clone()),
            token_exchange_subject_audiences: exchanges.then(|| exchange.subject_audiences.clone()),
            token_exchange_require_actor: exchanges.then_some(exchange.require_actor),
        }
    }
}

/// How registration endpoints challenge: an initial or registration access token (RFC 6750).
const REGISTRATION_CHALLENGE: Challenge = Challenge::Bearer {
    scope: None,
    always: false,
};

/// Registration's errors (RFC 7591 §3.2.2, RFC 6750 §3): `invalid_redirect_uri`,
/// `invalid_client_metadata` or `invalid_software_statement` (400), a missing or wrong initial
/// or registration access token (401), registration off (404), this address's registrations
/// spent (429, `registration_limit_per_address`).
pub struct RegistrationErrors;

impl ErrorGroup for RegistrationErrors {
    type Body = ErrorJson;
    const STATUSES: &'static [u16] = &[400, 401, 404, 429, 500, 503];
    const CHALLENGED: &'static [u16] = &[401];
    const CHALLENGE: Challenge = REGISTRATION_CHALLENGE;

    fn body(error: &HttpError, _status: u16) -> ErrorJson {
        error.json()
    }

    fn describe(status: u16) -> &'static str {
        match status {
            400 => "`invalid_redirect_uri`, `invalid_client_metadata` or `invalid_software_statement`.",
            401 => "A missing or wrong initial or registration access token, or no such client (`invalid_token`).",
            404 => "Registration is not enabled on this server.",
            429 => {
                "This address made as many registrations as it may this hour \
                    (`registration_limit_per_address`), or too many requests; wait `Retry-After` seconds."
            }
            status => describe(status),
        }
    }

    /// A body or parameter poem-openapi could not parse.
    fn unparsable(err: poem::Error) -> Error {
        Error::new(
            ErrorCode::InvalidClientMetadata,
            format!("the client metadata could not be parsed: {err}"),
        )
    }
}

/// A registration's success (RFC 7591 §3.2).
#[derive(ApiResponse, Debug)]
pub enum RegistrationCreatedOk {
    /// Registered; the body holds the secret and the registration access token, this once.
    #[oai(status = 201)]
    Created(Json<Box<ClientInformation>>, #[oai(header = "Cache-Control")] String),
}

/// The outcome of a registration.
pub type RegistrationCreated = Answer<RegistrationCreatedOk, RegistrationErrors>;

/// A registration read or updated (RFC 7592 §2.1-2.2).
#[derive(ApiResponse, Debug)]
pub enum RegistrationOk {
    /// The registration, without secret or registration access token.
    #[oai(status = 200)]
    Ok(Json<Box<ClientInformation>>, #[oai(header = "Cache-Control")] String),
}

/// The outcome of reading or updating a registration.
pub type RegistrationResponse = Answer<RegistrationOk, RegistrationErrors>;

/// A registration deleted (RFC 7592 §2.3).
#[derive(ApiResponse, Debug)]
pub enum RegistrationDeletedOk {
    /// Deleted, with every grant the client held.
    #[oai(status = 204)]
    Deleted,
}

/// The outcome of deleting a registration.
pub type RegistrationDeleted = Answer<RegistrationDeletedOk, RegistrationErrors>;

fn registration_read(result: Result<Registration, Error>) -> RegistrationResponse {
    match result {
        Ok(r) => Answer::Ok(RegistrationOk::Ok(Json(Box::new(r.into())), NO_STORE.into())),
        Err(e) => e.into(),
    }
}

/// Registration is refused with 404 while it is off, whatever else the request says.
fn enabled(provider: &Provider) -> Result<(), Error> {
    provider
        .clients
        .registration_endpoint()
        .map(|_| ())
        .ok_or_else(|| Error::new(ErrorCode::NotFound, "registration is not enabled on this server"))
}

pub struct RegistrationApi;

#[OpenApi(tag = "Tag::OAuth")]
impl RegistrationApi {
    /// Register a client
    ///
    /// Dynamic client registration (RFC 7591). Depending on the server's configuration it is
    /// open, or needs an initial access token as `Authorization: Bearer`. The response holds
    /// the client secret and the registration access token: store them, they are not shown again.
    #[oai(path = "/o/register/", method = "post", operation_id = "registerClient")]
    async fn register(
        &self,
        provider: Data<&Arc<Provider>>,
        req: &Request,
        body: Json<ClientRegistrationRequest>,
    ) -> RegistrationCreated {
        let result = async {
            enabled(&provider)?;
            let token = bearer_token(req)?;
            let address = ClientAddress::of(req).ip();
            provider
                .clients
                .register_dynamically(&body.0.metadata(), token.as_deref(), address)
                .await
        };
        match result.await {
            Ok(r) => Answer::Ok(RegistrationCreatedOk::Created(
                Json(Box::new(r.into())),
                NO_STORE.into(),
            )),
            Err(e) => e.into(),
        }
    }

    /// Read a registration
    ///
    /// RFC 7592 §2.1, with the registration access token as `Authorization: Bearer`.
    #[oai(path = "/o/register/:client_id", method = "get", operation_id = "getRegistration")]
    async fn read(
        &self,
        provider: Data<&Arc<Provider>>,
        req: &Request,
        client_id: Path<String>,
    ) -> RegistrationResponse {
        let result = async {
            enabled(&provider)?;
            let token = bearer_token(req)?;
            provider.clients.read_registration(&client_id.0, token.as_deref()).await
        };
        registration_read(result.await)
    }

    /// Update a registration
    ///
    /// RFC 7592 §2.2: replaces the client's metadata (the body repeats `client_id`).
    #[oai(path = "/o/register/:client_id", method = "put", operation_id = "updateRegistration")]
    async fn update(
        &self,
        provider: Data<&Arc<Provider>>,
        req: &Request,
        client_id: Path<String>,
        body: Json<ClientRegistrationRequest>,
    ) -> RegistrationResponse {
        let result = async {
            enabled(&provider)?;
            let token = bearer_token(req)?;
            provider
                .clients
                .update_registration(
                    &client_id.0,
                    token.as_deref(),
                    body.0.client_id.as_deref(),
                    body.0.client_secret.as_deref(),
                    &body.0.metadata(),
                    ClientAddress::of(req).ip(),
                )
                .await
        };
        registration_read(result.await)
    }

    /// Delete a registration
    ///
    /// RFC 7592 §2.3: the client and every grant it holds are gone.
    #[oai(
        path = "/o/register/:client_id",
        method = "delete",
        operation_id = "deleteRegistration"
    )]
    async fn delete(
        &self,
        provider: Data<&Arc<Provider>>,
        req: &Request,
        client_id: Path<String>,
    ) -> RegistrationDeleted {
        let token = match enabled(&provider).and_then(|_| bearer_token(req)) {
            Ok(token) => token,
            Err(e) => return e.into(),
        };
        let address = ClientAddress::of(req).ip();
        match provider
            .delete_registration(&client_id.0, token.as_deref(), address)
            .await
        {
            Ok(()) => Answer::Ok(RegistrationDeletedOk::Deleted),
            Err(e) => e.into(),
        }
    }
}
