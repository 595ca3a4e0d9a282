//! The single mapping from protocol errors to HTTP (RFC 6749 §5.2, RFC 6750 §3, RFC 7009
//! §2.2.1, RFC 7591 §3.2.2, RFC 7662 §2.3): each error code's status ([`status_of`]), the
//! `WWW-Authenticate` challenge of each kind of endpoint ([`Challenge`]), `Retry-After`,
//! `Cache-Control: no-store` on every error, and the logging of underlying causes
//! ([`HttpError::new`], the one place they are logged). The OAuth JSON body is here; the admin
//! API's problem details, UserInfo, registration and the pages are thin adapters over
//! [`HttpError`].

use poem::http::StatusCode;
use poem::IntoResponse;
use poem_openapi::payload::{Json, Payload};
use poem_openapi::registry::{MetaSchemaRef, Registry};
use poem_openapi::types::{ToJSON, Type};
use poem_openapi::{ApiResponse, Object};

use crate::oauth::{Error, ErrorCode};

/// An OAuth error response body (RFC 6749 §5.2).
#[derive(Object, Debug, Clone)]
pub struct ErrorBody {
    /// The error code, e.g. `invalid_request`, `invalid_client`, `invalid_grant`,
    /// `unauthorized_client`, `unsupported_grant_type`, `invalid_scope`, `invalid_target`;
    /// while a device polls (RFC 8628 §3.5), `authorization_pending`, `slow_down`,
    /// `access_denied` or `expired_token`.
    pub error: String,
    /// A human-readable explanation for the client's developer.
    #[oai(skip_serializing_if_is_none)]
    pub error_description: Option<String>,
}

/// Marks a response with the error code it carries, so `/metrics` can count errors by code.
#[derive(Clone, Copy, Debug)]
pub struct ErrorCodeTag(pub &'static str);

/// An [`ErrorBody`] as `application/json`, tagged with its [`ErrorCodeTag`].
#[derive(Debug)]
pub struct ErrorJson {
    code: ErrorCode,
    body: ErrorBody,
}

impl ErrorJson {
    pub fn new(code: ErrorCode, description: impl Into<String>) -> ErrorJson {
        ErrorJson {
            code,
            body: ErrorBody {
                error: code.as_str().into(),
                error_description: Some(description.into()),
            },
        }
    }

    pub fn of(err: Error) -> ErrorJson {
        ErrorJson::new(err.code, err.description)
    }
}

impl Payload for ErrorJson {
    const CONTENT_TYPE: &'static str = "application/json";

    fn schema_ref() -> MetaSchemaRef {
        ErrorBody::schema_ref()
    }

    fn register(registry: &mut Registry) {
        ErrorBody::register(registry);
    }
}

impl IntoResponse for ErrorJson {
    fn into_response(self) -> poem::Response {
        let mut response = Json(self.body).into_response();
        response.headers_mut().insert(
            poem::http::header::CACHE_CONTROL,
            poem::http::HeaderValue::from_static(NO_STORE),
        );
        response.extensions_mut().insert(ErrorCodeTag(self.code.as_str()));
        response
    }
}

/// The HTTP status of each error code, for every endpoint and page. (The token endpoint folds
/// every 4xx but 401 and 429 into 400, as RFC 6749 §5.2 says.)
pub fn status_of(code: ErrorCode) -> StatusCode {
    match code {
        ErrorCode::InvalidClient | ErrorCode::InvalidToken => StatusCode::UNAUTHORIZED,
        ErrorCode::InsufficientScope | ErrorCode::AccessDenied => StatusCode::FORBIDDEN,
        ErrorCode::NotFound => StatusCode::NOT_FOUND,
        ErrorCode::Conflict => StatusCode::CONFLICT,
        ErrorCode::RateLimited => StatusCode::TOO_MANY_REQUESTS,
        ErrorCode::ServerError => StatusCode::INTERNAL_SERVER_ERROR,
        ErrorCode::TemporarilyUnavailable => StatusCode::SERVICE_UNAVAILABLE,
        ErrorCode::InvalidRequest
        | ErrorCode::InvalidGrant
        | ErrorCode::UnauthorizedClient
        | ErrorCode::UnsupportedGrantType
        | ErrorCode::UnsupportedResponseType
        | ErrorCode::InvalidScope
        | ErrorCode::InvalidTarget
        | ErrorCode::AuthorizationPending
        | ErrorCode::SlowDown
        | ErrorCode::ExpiredToken
        | ErrorCode::UnsupportedTokenType
        | ErrorCode::LoginRequired
        | ErrorCode::ConsentRequired
        | ErrorCode::RequestNotSupported
        | ErrorCode::RequestUriNotSupported
        | ErrorCode::RegistrationNotSupported
        | ErrorCode::InvalidRequestUri
        | ErrorCode::InvalidRedirectUri
        | ErrorCode::InvalidClientMetadata
        | ErrorCode::InvalidSoftwareStatement
        // At the token endpoint (RFC 9449 §5); a resource answers them 401 (§7.1).
        | ErrorCode::InvalidDpopProof
        | ErrorCode::UseDpopNonce => StatusCode::BAD_REQUEST,
    }
}

/// The authentication scheme an endpoint challenges with in `WWW-Authenticate`.
#[derive(Clone, Copy, Debug)]
pub enum Challenge {
    /// Client authentication with HTTP Basic (RFC 6749 §2.3.1): the token endpoint's family.
    Basic,
    /// A bearer token (RFC 6750 §3), optionally naming the scope the endpoint needs: on every
    /// error (`always`), or only on `insufficient_scope`.
    Bearer { scope: Option<&'static str>, always: bool },
    /// A bearer or DPoP-bound token (RFC 9449 §7.1): both challenges, the error on the one of
    /// the scheme at fault (`dpop`: the token was sent as DPoP, is DPoP-bound, or its proof
    /// failed).
    BearerOrDpop { scope: Option<&'static str>, dpop: bool },
}

impl Challenge {
    /// The header value for `error` (or, with `None`, for a request with no credentials at
    /// all: no error attributes, RFC 6750 §3.1).
    pub fn header(self, error: Option<&Error>) -> String {
        match self {
            Challenge::Basic => BASIC_CHALLENGE.into(),
            Challenge::Bearer { scope, always } => {
                let mut value = String::from("Bearer realm=\"tessera\"");
                if let Some(error) = error {
                    push_error(&mut value, error);
                    if let Some(scope) = scope.filter(|_| always || error.code == ErrorCode::InsufficientScope) {
                        value.push_str(&format!(", scope=\"{scope}\""));
                    }
                }
                value
            }
            Challenge::BearerOrDpop { scope, dpop } => {
                let dpop = dpop
                    || error.is_some_and(|e| matches!(e.code, ErrorCode::InvalidDpopProof | ErrorCode::UseDpopNonce));
                let bearer = Challenge::Bearer { scope, always: false };
                let mut challenge = format!("DPoP algs=\"{}\"", crate::oauth::dpop::CHALLENGE_ALGS);
                match error {
                    Some(error) if dpop => {
                        push_error(&mut challenge, error);
                        format!("{}, {challenge}", bearer.header(None))
                    }
                    _ => format!("{}, {challenge}", bearer.header(error)),
                }
            }
        }
    }
}

/// `error` and `error_description` attributes (RFC 6750 §3, RFC 9449 §7.1).
fn push_error(challenge: &mut String, error: &Error) {
    challenge.push_str(&format!(
        ", error=\"{}\", error_description=\"{}\"",
        error.code.as_str(),
        error.description.replace(['"', '\\'], "'")
    ));
}

/// An error as HTTP answers it.
#[derive(Debug)]
pub struct HttpError {
    pub status: StatusCode,
    pub code: ErrorCode,
    pub description: String,
    /// The `WWW-Authenticate` value for this endpoint's scheme.
    pub challenge: String,
    /// The `Retry-After` value, for 429s.
    pub retry_after: String,
    /// The `DPoP-Nonce` value, for `use_dpop_nonce` (RFC 9449 §8).
    pub dpop_nonce: Option<String>,
}

impl HttpError {
    /// `err` as an endpoint that challenges with `challenge` answers it. Its cause, if any, is
    /// logged here: the one place a failure's underlying error is written down.
    pub fn new(err: Error, challenge: Challenge) -> HttpError {
        log_cause(&err);
        HttpError {
            status: status_of(err.code),
            code: err.code,
            challenge: challenge.header(Some(&err)),
            retry_after: retry_after_seconds(err.retry_after.unwrap_or_default()),
            dpop_nonce: err.dpop_nonce,
            description: err.description,
        }
    }

    /// The OAuth JSON body (RFC 6749 §5.2).
    pub fn json(&self) -> ErrorJson {
        ErrorJson::new(self.code, self.description.clone())
    }
}

/// Logs the underlying cause of a failure (never rendered to the caller).
pub fn log_cause(err: &Error) {
    if let Some(cause) = &err.cause {
        tracing::error!(error = %err, cause = %cause, "request failed");
    }
}

pub const NO_STORE: &str = "no-store";
const BASIC_CHALLENGE: &str = "Basic realm=\"tessera\", charset=\"UTF-8\"";

/// Every outcome of a client-authenticated OAuth endpoint.
#[derive(ApiResponse, Debug)]
#[oai(bad_request_handler = "bad_request")]
pub enum OAuthResponse<T: ToJSON + Send + Sync> {
    /// Success. Never cached, since the body may carry tokens (RFC 6749 §5.1). When the server
    /// asks for DPoP nonces, a token response to a request with a proof carries the nonce for
    /// the next one (`DPoP-Nonce`, RFC 9449 §8.2).
    #[oai(status = 200)]
    Ok(
        Json<T>,
        #[oai(header = "Cache-Control")] String,
        #[oai(header = "Pragma")] String,
        #[oai(header = "DPoP-Nonce")] Option<String>,
    ),
    /// The request is malformed, or the grant, scope or target is not acceptable (RFC 6749 §5.2),
    /// or the DPoP proof is not (`invalid_dpop_proof`), or it must carry the nonce given in
    /// `DPoP-Nonce` (`use_dpop_nonce`, RFC 9449 §8).
    #[oai(status = 400)]
    BadRequest(
        ErrorJson,
        #[oai(header = "Cache-Control")] String,
        #[oai(header = "DPoP-Nonce")] Option<String>,
    ),
    /// Client authentication failed (`invalid_client`).
    #[oai(status = 401)]
    Unauthorized(
        ErrorJson,
        #[oai(header = "WWW-Authenticate")] String,
        #[oai(header = "Cache-Control")] String,
    ),
    /// Too many requests from this client or address (`rate_limited`); wait `Retry-After` seconds.
    #[oai(status = 429)]
    TooManyRequests(
        ErrorJson,
        #[oai(header = "Retry-After")] String,
        #[oai(header = "Cache-Control")] String,
    ),
    /// The server could not complete the request; retrying may help.
    #[oai(status = 500)]
    ServerError(ErrorJson, #[oai(header = "Cache-Control")] String),
    /// The server is temporarily unable to handle the request (`temporarily_unavailable`:
    /// its database is unreachable, say); retry after `Retry-After` seconds.
    #[oai(status = 503)]
    Unavailable(
        ErrorJson,
        #[oai(header = "Retry-After")] String,
        #[oai(header = "Cache-Control")] String,
    ),
}

impl<T: ToJSON + Send + Sync> OAuthResponse<T> {
    pub fn ok(body: T) -> Self {
        OAuthResponse::Ok(Json(body), NO_STORE.into(), "no-cache".into(), None)
    }

    /// Success, with the DPoP nonce for the client's next proof, if any.
    pub fn ok_with_nonce(body: T, dpop_nonce: Option<String>) -> Self {
        OAuthResponse::Ok(Json(body), NO_STORE.into(), "no-cache".into(), dpop_nonce)
    }
}

impl<T: ToJSON + Send + Sync> From<Error> for OAuthResponse<T> {
    fn from(err: Error) -> Self {
        let e = HttpError::new(err, Challenge::Basic);
        let body = e.json();
        match e.status.as_u16() {
            429 => OAuthResponse::TooManyRequests(body, e.retry_after, NO_STORE.into()),
            // RFC 6749 §5.2: 401 with a challenge for the scheme the client can use.
            401 => OAuthResponse::Unauthorized(body, e.challenge, NO_STORE.into()),
            500 => OAuthResponse::ServerError(body, NO_STORE.into()),
            503 => OAuthResponse::Unavailable(body, e.retry_after, NO_STORE.into()),
            _ => OAuthResponse::BadRequest(body, NO_STORE.into(), e.dpop_nonce),
        }
    }
}

/// Every outcome of the pushed authorization request endpoint (RFC 9126 §2.2, §2.3): as
/// [`OAuthResponse`], but success is 201 Created.
#[derive(ApiResponse, Debug)]
#[oai(bad_request_handler = "bad_request_pushed")]
pub enum PushedResponse<T: ToJSON + Send + Sync> {
    /// Stored: the `request_uri` to send the browser to the authorization endpoint with.
    #[oai(status = 201)]
    Created(
        Json<T>,
        #[oai(header = "Cache-Control")] String,
        #[oai(header = "Pragma")] String,
    ),
    /// The request is malformed, or would be refused at the authorization endpoint, or its
    /// DPoP proof is not good (`invalid_dpop_proof`, `use_dpop_nonce` with `DPoP-Nonce`).
    #[oai(status = 400)]
    BadRequest(
        ErrorJson,
        #[oai(header = "Cache-Control")] String,
        #[oai(header = "DPoP-Nonce")] Option<String>,
    ),
    /// Client authentication failed (`invalid_client`).
    #[oai(status = 401)]
    Unauthorized(
        ErrorJson,
        #[oai(header = "WWW-Authenticate")] String,
        #[oai(header = "Cache-Control")] String,
    ),
    /// Too many requests from this client; wait `Retry-After` seconds.
    #[oai(status = 429)]
    TooManyRequests(
        ErrorJson,
        #[oai(header = "Retry-After")] String,
        #[oai(header = "Cache-Control")] String,
    ),
    /// The server could not complete the request; retrying may help.
    #[oai(status = 500)]
    ServerError(ErrorJson, #[oai(header = "Cache-Control")] String),
    /// The server is temporarily unable to handle the request; retry after `Retry-After` seconds.
    #[oai(status = 503)]
    Unavailable(
        ErrorJson,
        #[oai(header = "Retry-After")] String,
        #[oai(header = "Cache-Control")] String,
    ),
}

impl<T: ToJSON + Send + Sync> PushedResponse<T> {
    pub fn created(body: T) -> Self {
        PushedResponse::Created(Json(body), NO_STORE.into(), "no-cache".into())
    }
}

impl<T: ToJSON + Send + Sync> From<Error> for PushedResponse<T> {
    fn from(err: Error) -> Self {
        match OAuthResponse::<T>::from(err) {
            OAuthResponse::Ok(body, cache, pragma, _) => PushedResponse::Created(body, cache, pragma),
            OAuthResponse::BadRequest(body, cache, nonce) => PushedResponse::BadRequest(body, cache, nonce),
            OAuthResponse::Unauthorized(body, challenge, cache) => PushedResponse::Unauthorized(body, challenge, cache),
            OAuthResponse::TooManyRequests(body, wait, cache) => PushedResponse::TooManyRequests(body, wait, cache),
            OAuthResponse::ServerError(body, cache) => PushedResponse::ServerError(body, cache),
            OAuthResponse::Unavailable(body, wait, cache) => PushedResponse::Unavailable(body, wait, cache),
        }
    }
}

fn bad_request_pushed<T: ToJSON + Send + Sync>(err: poem::Error) -> PushedResponse<T> {
    unparsable(err).into()
}

/// A request poem-openapi could not parse (wrong content type, malformed form) is an
/// `invalid_request`, never a framework-shaped error.
fn bad_request<T: ToJSON + Send + Sync>(err: poem::Error) -> OAuthResponse<T> {
    unparsable(err).into()
}

fn unparsable(err: poem::Error) -> Error {
    let description = if err.is::<poem_openapi::error::ContentTypeError>() {
        "the body must be application/x-www-form-urlencoded".to_string()
    } else {
        format!("the request could not be parsed: {err}")
    };
    Error::invalid_request(description)
}

/// A `Retry-After` value: whole seconds, rounded up.
pub fn retry_after_seconds(wait: std::time::Duration) -> String {
    wait.as_secs_f64().ceil().max(1.0).to_string()
}

/// The JSON error body as raw bytes, for middleware that answers before any endpoint runs.
pub fn error_json(code: ErrorCode, description: &str) -> String {
    serde_json::json!({"error": code.as_str(), "error_description": description}).to_string()
}
