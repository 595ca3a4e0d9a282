//! The HTTP layer: routes, the OpenAPI service, and middleware. Handlers here only parse
//! input, call [`Provider`], and map the result.

pub(crate) mod admin;
pub(crate) mod client_switches;
pub(crate) mod connections;
pub(crate) mod error;
pub(crate) mod form;
pub(crate) mod oauth;
pub(crate) mod oidc;
pub(crate) mod registration;
use crate::net::ClientAddress;
use crate::oauth::endpoints as routes;
pub mod security;
pub(crate) mod server;
pub(crate) mod wellknown;

use std::sync::Arc;
use std::time::Instant;

use poem::http::Method;
use poem::middleware::Cors;
use poem::{Endpoint, EndpointExt, IntoResponse, Request, Response, Route};
use poem_openapi::{OpenApiService, Tags};

use self::admin::AdminApi;
use self::oauth::OAuthApi;
use self::oidc::OidcApi;
use self::registration::RegistrationApi;
use self::wellknown::WellKnownApi;
use crate::oauth::Provider;

#[derive(Tags)]
pub enum Tag {
    /// Endpoints OAuth clients call: token, revocation, introspection.
    #[oai(rename = "OAuth 2.0")]
    OAuth,
    /// OpenID Connect: who the user is.
    #[oai(rename = "OpenID Connect")]
    OpenIdConnect,
    /// Documents describing this server: metadata and signing keys.
    Discovery,
    /// Administration: clients, users, grants and keys (needs a `tessera:admin` token).
    Admin,
    /// Running the server.
    Operations,
}

type Apis = (OAuthApi, RegistrationApi, OidcApi, WellKnownApi, AdminApi);

/// The OpenAPI service; it needs no server state, so `tessera openapi` can print the spec.
pub fn api_service() -> OpenApiService<Apis, ()> {
    OpenApiService::new(
        (OAuthApi, RegistrationApi, OidcApi, WellKnownApi, AdminApi),
        "Tessera",
        env!("CARGO_PKG_VERSION"),
    )
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
    with_guard_responses(&with_client_security(&with_trailing_slashes(&api_service().spec())))
}

/// Answers the middleware gives before an operation runs, which poem-openapi cannot know: every
/// operation that takes a body may answer 413 or 408 (the body guard in [`form`]), and the POST
/// endpoints limited per address may answer 429 ([`limit_by_address`]). The admin API answers
/// in problem details.
fn with_guard_responses(spec: &str) -> String {
    use serde_json::{json, Value};
    let Ok(mut doc) = serde_json::from_str::<Value>(spec) else {
        return spec.to_string();
    };
    if let Some(paths) = doc["paths"].as_object_mut() {
        for (path, item) in paths.iter_mut() {
            let (media, schema) = if path.starts_with("/api/") {
                ("application/problem+json", "Problem")
            } else {
                ("application/json", "ErrorBody")
            };
            let limited = routes::limited_per_address(path);
            for (method, operation) in item.as_object_mut().into_iter().flat_map(|item| item.iter_mut()) {
                let has_body = operation.get("requestBody").is_some();
                let responses = &mut operation["responses"];
                if has_body {
                    let content = json!({ media: { "schema": { "$ref": format!("#/components/schemas/{schema}") } } });
                    for (status, description) in error::EDGE_STATUSES {
                        responses[status.to_string()] = json!({
                            "description": description,
                            "headers": { "Cache-Control": {
                                "description": "`no-store`: errors are never cached.",
                                "required": true,
                                "schema": { "type": "string" }
                            } },
                            "content": content
                        });
                    }
                }
                if limited && method == "post" && responses.get("429").is_none() {
                    responses["429"] = json!({
                        "description": "Too many requests from this address (`rate_limited`); wait `Retry-After` seconds.",
                        "headers": {
                            "Cache-Control": { "required": true, "schema": { "type": "string" } },
                            "Retry-After": { "required": true, "schema": { "type": "string" } }
                        },
                        "content": { "application/json": { "schema": { "$ref": "#/components/schemas/ErrorBody" } } }
                    });
                }
            }
        }
    }
    serde_json::to_string_pretty(&doc).unwrap_or_else(|_| spec.to_string())
}

/// Security requirements poem-openapi cannot express, because these endpoints read the
/// credentials themselves (the route table's [`routes::ClientAuth`]): client authentication is
/// HTTP Basic *or* form fields (or none, for a public client), so Basic is declared optional
/// (`{}`), and bearer tokens that are checked by the operation (UserInfo, RFC 7591/7592 tokens).
fn with_client_security(spec: &str) -> String {
    use serde_json::{json, Value};
    let Ok(mut doc) = serde_json::from_str::<Value>(spec) else {
        return spec.to_string();
    };
    let schemes = &mut doc["components"]["securitySchemes"];
    schemes["clientSecretBasic"] = json!({
        "type": "http",
        "scheme": "basic",
        "description": "Client authentication (RFC 6749 §2.3.1): the url-encoded client_id and client_secret. \
            Confidential clients may instead send client_id and client_secret as form fields; public clients send client_id only."
    });
    schemes["bearerAuth"] = json!({
        "type": "http",
        "scheme": "bearer",
        "description": "A bearer token (RFC 6750): an access token for UserInfo, an initial access token for \
            registration, or a client's registration access token for its registration."
    });
    if let Some(paths) = doc["paths"].as_object_mut() {
        for (path, item) in paths.iter_mut() {
            for (method, operation) in item.as_object_mut().into_iter().flat_map(|item| item.iter_mut()) {
                let Some(auth) = routes::client_auth(path, method) else {
                    continue;
                };
                operation["security"] = match auth {
                    routes::ClientAuth::BasicOrForm => json!([{ "clientSecretBasic": [] }, {}]),
                    routes::ClientAuth::Bearer => json!([{ "bearerAuth": [] }]),
                    routes::ClientAuth::BearerOrForm | routes::ClientAuth::BearerOrNone => {
                        json!([{ "bearerAuth": [] }, {}])
                    }
                };
            }
        }
    }
    serde_json::to_string_pretty(&doc).unwrap_or_else(|_| spec.to_string())
}

/// poem-openapi drops a trailing slash from operation paths, but Tessera's endpoint paths
/// (`/o/token/`, ...) are a published contract. The document is rewritten to the real paths,
/// and [`Dispatch`] accepts both spellings.
fn with_trailing_slashes(spec: &str) -> String {
    let Ok(mut doc) = serde_json::from_str::<serde_json::Value>(spec) else {
        return spec.to_string();
    };
    if let Some(paths) = doc.get_mut("paths").and_then(|p| p.as_object_mut()) {
        let renamed: serde_json::Map<String, serde_json::Value> = std::mem::take(paths)
            .into_iter()
            .map(|(path, item)| {
                if path.starts_with("/o/") {
                    (format!("{path}/"), item)
                } else {
                    (path, item)
                }
            })
            .collect();
        *paths = renamed;
    }
    serde_json::to_string_pretty(&doc).unwrap_or_else(|_| spec.to_string())
}

/// Every route of the server: the OpenAPI service, and `pages` (served by the pages module,
/// which this layer does not import) with the docs beside them.
pub fn routes(provider: Arc<Provider>, pages: Route) -> impl Endpoint {
    let service = api_service();
    let document = spec();
    let methods = allowed_methods(&document);
    // The Swagger UI page embeds the document verbatim; give it the real paths.
    let docs_html = service.swagger_ui_html().replace(&service.spec(), &document);
    // Swagger UI is one page of inline scripts and styles: they are allowed, nothing from
    // elsewhere is, and no other site may frame it.
    let docs = poem::endpoint::make_sync(move |_| {
        Response::builder()
            .content_type("text/html; charset=utf-8")
            .header(
                "Content-Security-Policy",
                "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; img-src 'self' data:; \
                 connect-src 'self'; font-src data:; base-uri 'none'; form-action 'self'; frame-ancestors 'none'",
            )
            .header("X-Frame-Options", "DENY")
            .header("X-Content-Type-Options", "nosniff")
            .header("Referrer-Policy", "no-referrer")
            .body(docs_html.clone())
    });
    let spec = poem::endpoint::make_sync(move |_| {
        Response::builder()
            .content_type("application/json")
            .body(document.clone())
    });
    let body_limits = form::BodyLimits {
        max_bytes: provider.config.max_body_bytes,
        timeout: provider.config.request_body_timeout,
    };
    let metrics = provider.metrics.clone();
    let rate_provider = provider.clone();
    let cors = cors(&provider.config.cors_origins);
    let pages = pages.at(routes::SPEC, spec).at(routes::DOCS, docs);
    Dispatch {
        pages,
        api: service.with(cors),
        methods,
    }
    .data(provider)
    .around(move |next, req| form::guard(next, req, body_limits))
    .around(move |next, req| limit_by_address(next, req, rate_provider.clone()))
    .around(move |next, req| log_request(next, req, metrics.clone()))
}

/// Sends each request either to the pages (and docs) or to the OpenAPI service. Both own
/// paths under `/o/`, which one poem `Route` cannot split between a nested service and
/// plain routes, so the split is made here by path.
struct Dispatch<P, A> {
    pages: P,
    api: A,
    /// The API's path templates (no trailing slash) and their methods, for `Allow` on a 405.
    methods: Vec<(String, String)>,
}

/// Each documented path (without its trailing slash) and its methods, e.g.
/// `("/o/register/{client_id}", "GET, PUT, DELETE")`.
fn allowed_methods(document: &str) -> Vec<(String, String)> {
    let Ok(doc) = serde_json::from_str::<serde_json::Value>(document) else {
        return Vec::new();
    };
    doc["paths"]
        .as_object()
        .map(|paths| {
            paths
                .iter()
                .map(|(path, item)| {
                    let methods: Vec<String> = item
                        .as_object()
                        .map(|ops| ops.keys().map(|m| m.to_uppercase()).collect())
                        .unwrap_or_default();
                    (path.trim_end_matches('/').to_string(), methods.join(", "))
                })
                .collect()
        })
        .unwrap_or_default()
}

impl<P: Endpoint, A: Endpoint> Endpoint for Dispatch<P, A> {
    type Output = Response;

    async fn call(&self, req: Request) -> poem::Result<Response> {
        if routes::is_page(req.uri().path()) {
            self.pages.call(req).await.map(IntoResponse::into_response)
        } else {
            let mut req = req;
            let path = req.uri().path();
            if path.starts_with("/o/") && path.len() > 3 && path.ends_with('/') {
                let mut uri = path.trim_end_matches('/').to_string();
                if let Some(query) = req.uri().query() {
                    uri = format!("{uri}?{query}");
                }
                if let Ok(uri) = uri.parse() {
                    *req.uri_mut() = uri;
                }
            }
            let path = req.uri().path().trim_end_matches('/').to_string();
            let mut response = match self.api.call(req).await {
                Ok(response) => response.into_response(),
                Err(err) => err.into_response(),
            };
            // RFC 9110 §15.5.6: a 405 names the methods the resource has.
            if response.status() == poem::http::StatusCode::METHOD_NOT_ALLOWED {
                let allow = self.methods.iter().find(|(template, _)| routes::fits(template, &path));
                if let Some(value) = allow.and_then(|(_, methods)| methods.parse().ok()) {
                    response.headers_mut().insert(poem::http::header::ALLOW, value);
                }
            }
            Ok(response)
        }
    }
}

/// Browser apps must be able to reach the token, revocation, JWKS and metadata endpoints.
/// Credentials (cookies) are never allowed cross-origin: none of these endpoints use them.
fn cors(origins: &[String]) -> Cors {
    let cors = Cors::new()
        .allow_methods([Method::GET, Method::POST])
        .allow_headers(["authorization", "content-type"])
        .allow_credentials(false)
        .max_age(3600);
    origins
        .iter()
        .fold(cors, |cors, origin| cors.allow_origin(origin.as_str()))
}

/// POSTs to the route table's limited paths are counted per client address before any work
/// is done: no body parsing, no password hashing, no signing.
/// The caller's address is worked out here, once per request, for every handler after it.
async fn limit_by_address<E: Endpoint>(
    next: Arc<E>,
    mut req: Request,
    provider: Arc<Provider>,
) -> poem::Result<Response> {
    let address = ClientAddress::remember(&mut req, &provider.config.trusted_proxies);
    if req.method() == Method::POST && routes::limited_per_address(req.uri().path()) {
        if let Err(wait) = provider.address_rate.check(&address.key().unwrap_or_default()) {
            let error = crate::oauth::Error {
                retry_after: Some(wait),
                ..crate::oauth::Error::new(
                    crate::oauth::ErrorCode::RateLimited,
                    "too many requests from this address; retry later",
                )
            };
            let response = error::ErrorResponse::<error::OAuthErrors>::from(error).into_response();
            return Ok(error::before_any_endpoint(response));
        }
    }
    next.call(req).await.map(IntoResponse::into_response)
}

/// One log line per request (method, path, status, duration) and the request metrics. The
/// query string and bodies are never logged: they carry codes, tokens and secrets.
async fn log_request<E: Endpoint>(
    next: Arc<E>,
    req: Request,
    metrics: Arc<crate::metrics::Metrics>,
) -> poem::Result<Response> {
    let started = Instant::now();
    let method = req.method().clone();
    let path = req.uri().path().to_string();
    let response = match next.call(req).await {
        Ok(r) => r.into_response(),
        Err(e) => e.into_response(),
    };
    let elapsed = started.elapsed();
    let status = response.status().as_u16();
    metrics.request(
        routes::metric_label(&path),
        method.as_str(),
        status,
        elapsed.as_secs_f64(),
    );
    if let Some(error::ErrorCodeTag(code)) = response.extensions().get::<error::ErrorCodeTag>() {
        metrics.oauth_error(code);
    }
    tracing::info!(%method, %path, status, micros = elapsed.as_micros() as u64, "request");
    Ok(response)
}
