//! The HTTP layer: routes, the OpenAPI service, and middleware. Handlers here only parse
//! input, call [`Provider`], and map the result.

pub mod error;
pub mod form;
pub mod oauth;
pub mod security;
pub mod wellknown;

use std::sync::Arc;
use std::time::Instant;

use poem::http::Method;
use poem::middleware::Cors;
use poem::{Endpoint, EndpointExt, IntoResponse, Request, Response, Route};
use poem_openapi::{OpenApiService, Tags};

use self::oauth::OAuthApi;
use self::wellknown::{AuthorizationServerMetadata, MetadataDocument, WellKnownApi};
use crate::oauth::Provider;

#[derive(Tags)]
pub enum Tag {
    /// Endpoints OAuth clients call: token, revocation, introspection.
    #[oai(rename = "OAuth 2.0")]
    OAuth,
    /// Documents describing this server: metadata and signing keys.
    Discovery,
    /// Running the server.
    Operations,
}

type Apis = (OAuthApi, WellKnownApi);

/// The OpenAPI service; it needs no server state, so `tessera openapi` can print the spec.
pub fn api_service() -> OpenApiService<Apis, ()> {
    OpenApiService::new((OAuthApi, WellKnownApi), "Tessera", env!("CARGO_PKG_VERSION"))
        .description(
            "An OAuth 2.0 authorization server. Access tokens are JWTs (RFC 9068) that resource \
             servers verify offline with the keys at /.well-known/jwks.json; refresh tokens are \
             opaque and rotate on every use. The browser-facing authorization endpoint \
             (/o/authorize/) is described by the server metadata, not here.",
        )
        .license("Apache-2.0")
}

/// The OpenAPI document as committed under `openapi/openapi.json`.
pub fn spec() -> String {
    api_service().spec()
}

/// Every route of the server.
pub fn routes(provider: Arc<Provider>) -> impl Endpoint {
    let service = api_service();
    let docs = service.swagger_ui();
    let spec = service.spec_endpoint();
    let metadata = serde_json::to_string(&AuthorizationServerMetadata::of(&provider)).unwrap_or_default();
    let limit = provider.config.max_body_bytes;
    let cors = cors(&provider.config.cors_origins);
    crate::pages::mount(Route::new())
        .at("/openapi.json", spec)
        .nest("/docs", docs)
        .nest("/", service.with(cors))
        .data(provider)
        .data(Arc::new(MetadataDocument(metadata.into())))
        .around(move |next, req| form::guard(next, req, limit))
        .around(log_request)
}

/// Browser apps must be able to reach the token, revocation, JWKS and metadata endpoints.
/// Credentials (cookies) are never allowed cross-origin: none of these endpoints use them.
fn cors(origins: &[String]) -> Cors {
    let cors = Cors::new()
        .allow_methods([Method::GET, Method::POST])
        .allow_headers(["authorization", "content-type"])
        .allow_credentials(false)
        .max_age(3600);
    origins.iter().fold(cors, |cors, origin| cors.allow_origin(origin.as_str()))
}

/// One log line per request: method, path and status. The query string and bodies are never
/// logged: they carry codes, tokens and secrets.
async fn log_request<E: Endpoint>(next: Arc<E>, req: Request) -> poem::Result<Response> {
    let started = Instant::now();
    let method = req.method().clone();
    let path = req.uri().path().to_string();
    let response = match next.call(req).await {
        Ok(r) => r.into_response(),
        Err(e) => e.into_response(),
    };
    tracing::info!(%method, %path, status = response.status().as_u16(), micros = started.elapsed().as_micros() as u64, "request");
    Ok(response)
}
