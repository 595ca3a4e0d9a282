//! The single mapping from protocol errors to HTTP responses (RFC 6749 §5.2, RFC 7009 §2.2.1,
//! RFC 7662 §2.3): status, headers and the JSON error body.

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
    /// `unauthorized_client`, `unsupported_grant_type`, `invalid_scope`, `invalid_target`.
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
        response.extensions_mut().insert(ErrorCodeTag(self.code.as_str()));
        response
    }
}

const NO_STORE: &str = "no-store";
const BASIC_CHALLENGE: &str = "Basic realm=\"tessera\", charset=\"UTF-8\"";

/// Every outcome of a client-authenticated OAuth endpoint.
#[derive(ApiResponse, Debug)]
#[oai(bad_request_handler = "bad_request")]
pub enum OAuthResponse<T: ToJSON + Send + Sync> {
    /// Success. Never cached, since the body may carry tokens (RFC 6749 §5.1).
    #[oai(status = 200)]
    Ok(
        Json<T>,
        #[oai(header = "Cache-Control")] String,
        #[oai(header = "Pragma")] String,
    ),
    /// The request is malformed, or the grant, scope or target is not acceptable (RFC 6749 §5.2).
    #[oai(status = 400)]
    BadRequest(ErrorJson, #[oai(header = "Cache-Control")] String),
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
    /// The server is temporarily unable to handle the request.
    #[oai(status = 503)]
    Unavailable(ErrorJson, #[oai(header = "Cache-Control")] String),
}

impl<T: ToJSON + Send + Sync> OAuthResponse<T> {
    pub fn ok(body: T) -> Self {
        OAuthResponse::Ok(Json(body), NO_STORE.into(), "no-cache".into())
    }
}

impl<T: ToJSON + Send + Sync> From<Error> for OAuthResponse<T> {
    fn from(err: Error) -> Self {
        if let Some(cause) = &err.cause {
            tracing::error!(error = %err, cause = %cause, "request failed");
        }
        let code = err.code;
        let retry_after = err.retry_after.map(retry_after_seconds);
        let body = ErrorJson::of(err);
        match code {
            ErrorCode::RateLimited => {
                OAuthResponse::TooManyRequests(body, retry_after.unwrap_or_else(|| "1".into()), NO_STORE.into())
            }
            // RFC 6749 §5.2: 401 with a challenge for the scheme the client can use.
            ErrorCode::InvalidClient => OAuthResponse::Unauthorized(body, BASIC_CHALLENGE.into(), NO_STORE.into()),
            ErrorCode::ServerError => OAuthResponse::ServerError(body, NO_STORE.into()),
            ErrorCode::TemporarilyUnavailable => OAuthResponse::Unavailable(body, NO_STORE.into()),
            _ => OAuthResponse::BadRequest(body, NO_STORE.into()),
        }
    }
}

/// A request poem-openapi could not parse (wrong content type, malformed form) is an
/// `invalid_request`, never a framework-shaped error.
fn bad_request<T: ToJSON + Send + Sync>(err: poem::Error) -> OAuthResponse<T> {
    let description = if err.is::<poem_openapi::error::ContentTypeError>() {
        "the body must be application/x-www-form-urlencoded".to_string()
    } else {
        format!("the request could not be parsed: {err}")
    };
    Error::invalid_request(description).into()
}

/// A `Retry-After` value: whole seconds, rounded up.
pub fn retry_after_seconds(wait: std::time::Duration) -> String {
    wait.as_secs_f64().ceil().max(1.0).to_string()
}

/// The JSON error body as raw bytes, for middleware that answers before any endpoint runs.
pub fn error_json(code: ErrorCode, description: &str) -> String {
    serde_json::json!({"error": code.as_str(), "error_description": description}).to_string()
}
