//! Documents that describe the server: RFC 8414 metadata, the JWKS (RFC 7517), health.

use std::marker::PhantomData;
use std::sync::Arc;

use poem::web::Data;
use poem::IntoResponse;
use poem_openapi::payload::{Json, Payload, PlainText};
use poem_openapi::registry::{MetaSchemaRef, Registry};
use poem_openapi::types::Type;
use poem_openapi::{ApiResponse, Object, OpenApi};

use super::Tag;
use crate::oauth::Provider;

/// A JSON body serialised ahead of time, documented in the spec as `T`. The JWKS and the
/// metadata change rarely and are fetched often, so they are not re-serialised per request.
pub struct CachedJson<T> {
    body: Arc<str>,
    schema: PhantomData<fn() -> T>,
}

impl<T> CachedJson<T> {
    pub fn new(body: Arc<str>) -> Self {
        CachedJson {
            body,
            schema: PhantomData,
        }
    }
}

impl<T: Type> Payload for CachedJson<T> {
    const CONTENT_TYPE: &'static str = "application/json";

    fn schema_ref() -> MetaSchemaRef {
        T::schema_ref()
    }

    fn register(registry: &mut Registry) {
        T::register(registry);
    }
}

impl<T: Send> IntoResponse for CachedJson<T> {
    fn into_response(self) -> poem::Response {
        poem::Response::builder()
            .content_type("application/json")
            .body(self.body.to_string())
    }
}

/// A public key (RFC 7517 §4). Which of `crv`, `x`, `y`, `n`, `e` appear depends on `kty`.
#[derive(Object)]
pub struct Jwk {
    /// `EC`, `OKP` or `RSA`.
    pub kty: String,
    /// The RFC 7638 thumbprint of the key; matches the `kid` header of tokens it signed.
    pub kid: String,
    /// `ES256`, `EdDSA` or `RS256`.
    pub alg: String,
    /// Always `sig`.
    #[oai(rename = "use")]
    pub use_: String,
    #[oai(skip_serializing_if_is_none)]
    pub crv: Option<String>,
    #[oai(skip_serializing_if_is_none)]
    pub x: Option<String>,
    #[oai(skip_serializing_if_is_none)]
    pub y: Option<String>,
    #[oai(skip_serializing_if_is_none)]
    pub n: Option<String>,
    #[oai(skip_serializing_if_is_none)]
    pub e: Option<String>,
}

/// The published signing keys.
#[derive(Object)]
pub struct Jwks {
    pub keys: Vec<Jwk>,
}

/// Server metadata: RFC 8414 authorization server metadata and OpenID Provider metadata
/// (OpenID Connect Discovery 1.0 §3) in one document, served at both well-known paths.
#[derive(Object, serde::Serialize)]
pub struct AuthorizationServerMetadata {
    pub issuer: String,
    pub authorization_endpoint: String,
    pub token_endpoint: String,
    /// OpenID Connect UserInfo (bearer access token with `openid`).
    pub userinfo_endpoint: String,
    pub jwks_uri: String,
    /// OpenID Connect RP-Initiated Logout.
    pub end_session_endpoint: String,
    /// RFC 7591 dynamic client registration, when the server has it on.
    #[oai(skip_serializing_if_is_none)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub registration_endpoint: Option<String>,
    pub revocation_endpoint: String,
    pub introspection_endpoint: String,
    /// RFC 8628 §4: where devices start the device authorization grant.
    pub device_authorization_endpoint: String,
    /// Where pushed authorization requests are taken (RFC 9126).
    pub pushed_authorization_request_endpoint: String,
    /// Whether every authorization request must be pushed first.
    pub require_pushed_authorization_requests: bool,
    pub scopes_supported: Vec<String>,
    pub response_types_supported: Vec<String>,
    pub response_modes_supported: Vec<String>,
    pub grant_types_supported: Vec<String>,
    pub subject_types_supported: Vec<String>,
    /// The algorithms ID tokens can be signed with; clients pick one at registration (RS256 by default).
    pub id_token_signing_alg_values_supported: Vec<String>,
    pub claims_supported: Vec<String>,
    pub claim_types_supported: Vec<String>,
    pub prompt_values_supported: Vec<String>,
    /// The login levels (`acr` values) apps may ask for with `acr_values`, weakest first.
    pub acr_values_supported: Vec<String>,
    pub token_endpoint_auth_methods_supported: Vec<String>,
    pub revocation_endpoint_auth_methods_supported: Vec<String>,
    pub introspection_endpoint_auth_methods_supported: Vec<String>,
    /// The algorithms `private_key_jwt` assertions may be signed with (RFC 8414 §2).
    pub token_endpoint_auth_signing_alg_values_supported: Vec<String>,
    pub revocation_endpoint_auth_signing_alg_values_supported: Vec<String>,
    pub introspection_endpoint_auth_signing_alg_values_supported: Vec<String>,
    /// Client ids may be https URLs of Client ID Metadata Documents (present when they may).
    #[oai(skip_serializing_if_is_none)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client_id_metadata_document_supported: Option<bool>,
    pub code_challenge_methods_supported: Vec<String>,
    /// RFC 9449 §5.1: the algorithms DPoP proofs may be signed with.
    pub dpop_signing_alg_values_supported: Vec<String>,
    /// RFC 9207: authorization responses carry `iss`.
    pub authorization_response_iss_parameter_supported: bool,
    pub claims_parameter_supported: bool,
    pub request_parameter_supported: bool,
    pub request_uri_parameter_supported: bool,
    pub service_documentation: String,
}

impl AuthorizationServerMetadata {
    pub fn of(provider: &Provider) -> Self {
        let m = provider.metadata();
        AuthorizationServerMetadata {
            issuer: m.issuer,
            authorization_endpoint: m.authorization_endpoint,
            token_endpoint: m.token_endpoint,
            userinfo_endpoint: m.userinfo_endpoint,
            jwks_uri: m.jwks_uri,
            end_session_endpoint: m.end_session_endpoint,
            registration_endpoint: m.registration_endpoint,
            revocation_endpoint: m.revocation_endpoint,
            introspection_endpoint: m.introspection_endpoint,
            device_authorization_endpoint: m.device_authorization_endpoint,
            pushed_authorization_request_endpoint: m.pushed_authorization_request_endpoint,
            require_pushed_authorization_requests: m.require_pushed_authorization_requests,
            scopes_supported: m.scopes_supported,
            response_types_supported: m.response_types_supported,
            response_modes_supported: m.response_modes_supported,
            grant_types_supported: m.grant_types_supported,
            subject_types_supported: m.subject_types_supported,
            id_token_signing_alg_values_supported: m.id_token_signing_alg_values_supported,
            claims_supported: m.claims_supported,
            claim_types_supported: m.claim_types_supported,
            prompt_values_supported: m.prompt_values_supported,
            acr_values_supported: m.acr_values_supported,
            token_endpoint_auth_methods_supported: m.token_endpoint_auth_methods_supported,
            revocation_endpoint_auth_methods_supported: m.revocation_endpoint_auth_methods_supported,
            introspection_endpoint_auth_methods_supported: m.introspection_endpoint_auth_methods_supported,
            token_endpoint_auth_signing_alg_values_supported: m.endpoint_auth_signing_alg_values_supported.clone(),
            revocation_endpoint_auth_signing_alg_values_supported: m.endpoint_auth_signing_alg_values_supported.clone(),
            introspection_endpoint_auth_signing_alg_values_supported: m.endpoint_auth_signing_alg_values_supported,
            client_id_metadata_document_supported: m.client_id_metadata_document_supported.then_some(true),
            code_challenge_methods_supported: m.code_challenge_methods_supported,
            dpop_signing_alg_values_supported: m.dpop_signing_alg_values_supported,
            authorization_response_iss_parameter_supported: m.authorization_response_iss_parameter_supported,
            claims_parameter_supported: m.claims_parameter_supported,
            request_parameter_supported: m.request_parameter_supported,
            request_uri_parameter_supported: m.request_uri_parameter_supported,
            service_documentation: m.service_documentation,
        }
    }
}

#[derive(ApiResponse)]
pub enum JwksResponse {
    /// The JWKS. Cache it for at most `max-age` seconds; refetch on an unknown `kid`.
    #[oai(status = 200)]
    Ok(CachedJson<Jwks>, #[oai(header = "Cache-Control")] String),
}

#[derive(ApiResponse)]
pub enum MetadataResponse {
    /// The metadata document.
    #[oai(status = 200)]
    Ok(
        CachedJson<AuthorizationServerMetadata>,
        #[oai(header = "Cache-Control")] String,
    ),
}

/// Liveness.
#[derive(Object)]
pub struct Health {
    /// `ok` when the server is serving.
    pub status: String,
}

/// The metadata document. It is built per request (a few microseconds) because the ID token
/// algorithms it lists follow the live keyring.
fn metadata_response(provider: &Provider) -> MetadataResponse {
    let max_age = provider.config.jwks_max_age.as_secs();
    let body = serde_json::to_string(&AuthorizationServerMetadata::of(provider)).unwrap_or_default();
    MetadataResponse::Ok(CachedJson::new(body.into()), format!("public, max-age={max_age}"))
}

/// Which readiness checks pass: `ok`, or why not.
#[derive(Object)]
pub struct Readiness {
    /// `ready` or `not_ready`.
    pub status: String,
    /// The store accepted a write and made it durable.
    pub store: String,
    /// The signing key signed a test token.
    pub signing_key: String,
}

#[derive(ApiResponse)]
pub enum ReadyResponse {
    /// Every check passed.
    #[oai(status = 200)]
    Ready(Json<Readiness>),
    /// A check failed; the body says which. Check again after `Retry-After` seconds.
    #[oai(status = 503)]
    NotReady(Json<Readiness>, #[oai(header = "Retry-After")] String),
}

#[derive(ApiResponse)]
pub enum MetricsResponse {
    /// Prometheus text format 0.0.4.
    #[oai(status = 200)]
    Ok(PlainText<String>, #[oai(header = "Cache-Control")] String),
}

pub struct WellKnownApi;

#[OpenApi(tag = "Tag::Discovery")]
impl WellKnownApi {
    /// Authorization server metadata
    ///
    /// Every endpoint and capability of this server (RFC 8414).
    #[oai(
        path = "/.well-known/oauth-authorization-server",
        method = "get",
        operation_id = "getServerMetadata"
    )]
    async fn metadata(&self, provider: Data<&Arc<Provider>>) -> MetadataResponse {
        metadata_response(&provider)
    }

    /// OpenID Provider metadata
    ///
    /// The same document as `/.well-known/oauth-authorization-server`, at the path OpenID
    /// Connect Discovery defines.
    #[oai(
        path = "/.well-known/openid-configuration",
        method = "get",
        operation_id = "getOpenIdConfiguration"
    )]
    async fn openid_configuration(&self, provider: Data<&Arc<Provider>>) -> MetadataResponse {
        metadata_response(&provider)
    }

    /// JSON Web Key Set
    ///
    /// The public keys that verify access tokens (RFC 7517). Retired keys are not listed.
    #[oai(path = "/.well-known/jwks.json", method = "get", operation_id = "getJwks")]
    async fn jwks(&self, provider: Data<&Arc<Provider>>) -> JwksResponse {
        let max_age = provider.config.jwks_max_age.as_secs();
        JwksResponse::Ok(
            CachedJson::new(provider.keys.current().jwks.clone()),
            format!("public, max-age={max_age}"),
        )
    }

    /// Liveness
    ///
    /// `ok` whenever the process is serving requests.
    #[oai(path = "/healthz", method = "get", operation_id = "health", tag = "Tag::Operations")]
    async fn healthz(&self) -> Json<Health> {
        Json(Health { status: "ok".into() })
    }

    /// Readiness
    ///
    /// 200 when the store takes writes and the signing key signs; 503 (with which check
    /// failed) otherwise. Point load balancers here.
    #[oai(path = "/readyz", method = "get", operation_id = "ready", tag = "Tag::Operations")]
    async fn readyz(&self, provider: Data<&Arc<Provider>>) -> ReadyResponse {
        let check = provider.readiness().await;
        let word = |r: &Result<(), String>| match r {
            Ok(()) => "ok".to_string(),
            Err(why) => why.clone(),
        };
        let ready = check.storage.is_ok() && check.signing_key.is_ok();
        let body = Json(Readiness {
            status: if ready { "ready" } else { "not_ready" }.into(),
            store: word(&check.storage),
            signing_key: word(&check.signing_key),
        });
        if ready {
            ReadyResponse::Ready(body)
        } else {
            ReadyResponse::NotReady(body, "1".into())
        }
    }

    /// Metrics
    ///
    /// Prometheus text exposition: `tessera_http_requests_total` and
    /// `tessera_http_request_duration_seconds` by route, method and status,
    /// `tessera_tokens_issued_total` by grant type, `tessera_tokens_signed_total` by kind,
    /// `tessera_oauth_errors_total` by error code,
    /// `tessera_active_refresh_tokens`, `tessera_signing_key_age_seconds` and
    /// `tessera_open_connections`.
    #[oai(path = "/metrics", method = "get", operation_id = "metrics", tag = "Tag::Operations")]
    async fn metrics(&self, provider: Data<&Arc<Provider>>) -> MetricsResponse {
        // The active-token gauge scans the refresh tokens, which the store does off the
        // async workers.
        let text = provider.metrics_text().await;
        MetricsResponse::Ok(PlainText(text), "no-store".into())
    }
}
