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
use poem_openapi::registry::{MetaHeader, MetaResponse, MetaResponses, MetaSchemaRef, Registry};
use poem_openapi::types::{ToJSON, Type};
use poem_openapi::{ApiResponse, Object, ResponseContent};

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
        | ErrorCode::InteractionRequired
        | ErrorCode::UnmetAuthenticationRequirements
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

/// A group of endpoints that answer errors alike: their body format, the statuses they
/// answer errors with, and which of those carry a challenge or a DPoP nonce. Every response
/// type's error statuses, headers and spec entries come from here ([`ErrorResponse`]), so a
/// status cannot be forgotten by one response type (the third review, finding 11: a database
/// outage was a 400 wherever a hand-written mapping folded "the rest" into 400).
pub trait ErrorGroup: Send + Sync + 'static {
    /// The error body.
    type Body: Payload + IntoResponse + Send + Sync;
    /// The statuses this group answers errors with; any other status the one mapping
    /// ([`status_of`]) gives is answered 400 (RFC 6749 §5.2 at the token endpoint).
    const STATUSES: &'static [u16];
    /// The statuses whose answer carries `WWW-Authenticate`.
    const CHALLENGED: &'static [u16];
    /// The statuses whose answer may carry `DPoP-Nonce` (RFC 9449 §8).
    const NONCED: &'static [u16] = &[];
    /// How the group's endpoints challenge.
    const CHALLENGE: Challenge;

    /// The body of an error answered with `status`.
    fn body(error: &HttpError, status: u16) -> Self::Body;

    /// What a request poem-openapi could not parse is.
    fn unparsable(err: poem::Error) -> Error {
        unparsable(err)
    }

    /// The status an error is answered with here.
    fn status(error: &HttpError) -> u16 {
        let status = error.status.as_u16();
        if Self::STATUSES.contains(&status) {
            status
        } else {
            400
        }
    }

    /// What a status means in this group, for the spec.
    fn describe(status: u16) -> &'static str {
        describe(status)
    }
}

/// What each error status means, for the spec (groups say more where they can).
pub fn describe(status: u16) -> &'static str {
    match status {
        400 => "The request is malformed or not acceptable; `error` says why.",
        401 => "Authentication failed: the client's credentials or the token are missing, wrong or expired.",
        403 => "The token lacks the scope this operation needs (`insufficient_scope`).",
        404 => "No such record, or the feature is off on this server (`not_found`).",
        409 => "The record clashes with an existing one (`conflict`).",
        429 => "Too many requests (`rate_limited`); wait `Retry-After` seconds.",
        500 => "The server failed; the details are in its log.",
        503 => {
            "The server is temporarily unable to answer (`temporarily_unavailable`: its database is \
                unreachable, say); retry after `Retry-After` seconds."
        }
        _ => "An error.",
    }
}

/// What the request edge ([`super::form::guard`]) answers before any operation runs, whatever
/// the group: a body over `max_body_bytes`, a body slower than `request_body_timeout` (both
/// documented on every operation that takes a body), a head over the head limit.
pub const EDGE_STATUSES: &[(u16, &str)] = &[
    (
        413,
        "The body is larger than the server accepts (`max_body_bytes`, 64 KiB by default).",
    ),
    (
        408,
        "The body did not arrive within `request_body_timeout` (10 s by default); the connection is closed.",
    ),
];

/// The pages and the operator's console: HTML error pages. A page has no authentication scheme
/// to challenge with, so an unknown client, say, is a bad request there, not a 401.
pub struct PageErrors;

impl ErrorGroup for PageErrors {
    type Body = poem_openapi::payload::PlainText<String>;
    const STATUSES: &'static [u16] = &[400, 403, 404, 409, 429, 500, 503];
    const CHALLENGED: &'static [u16] = &[];
    const CHALLENGE: Challenge = Challenge::Basic;

    /// The page's text, when no template renders it (the pages render their own HTML).
    fn body(error: &HttpError, _status: u16) -> Self::Body {
        poem_openapi::payload::PlainText(error.description.clone())
    }
}

/// An OAuth error answered before any endpoint runs (the body guard, the per-address limit) is
/// sent as these always were: `application/json` without a charset.
pub fn before_any_endpoint(mut response: poem::Response) -> poem::Response {
    response.headers_mut().insert(
        poem::http::header::CONTENT_TYPE,
        poem::http::HeaderValue::from_static("application/json"),
    );
    response
}

/// An error as one group of endpoints answers it: status, body and headers
/// (`Cache-Control: no-store` always, `WWW-Authenticate`, `Retry-After`, `DPoP-Nonce`).
pub struct ErrorResponse<G: ErrorGroup> {
    head: ErrorHead,
    body: G::Body,
}

/// An error answer's status and headers, whatever its body.
#[derive(Debug)]
pub struct ErrorHead {
    status: u16,
    challenge: Option<String>,
    retry_after: Option<String>,
    dpop_nonce: Option<String>,
}

impl ErrorHead {
    /// The status the error is answered with.
    pub fn status(&self) -> StatusCode {
        StatusCode::from_u16(self.status).unwrap_or(StatusCode::BAD_REQUEST)
    }

    /// Sets the status and the error's headers on a response: `Cache-Control: no-store`,
    /// `WWW-Authenticate`, `Retry-After`, `DPoP-Nonce` (each where the group answers it).
    pub fn apply(&self, response: &mut poem::Response) {
        response.set_status(self.status());
        let headers = response.headers_mut();
        headers.insert(
            poem::http::header::CACHE_CONTROL,
            poem::http::HeaderValue::from_static(NO_STORE),
        );
        let mut set = |name: poem::http::header::HeaderName, value: &Option<String>| {
            if let Some(value) = value.as_deref().and_then(|v| poem::http::HeaderValue::from_str(v).ok()) {
                headers.insert(name, value);
            }
        };
        set(poem::http::header::WWW_AUTHENTICATE, &self.challenge);
        set(poem::http::header::RETRY_AFTER, &self.retry_after);
        set(
            poem::http::header::HeaderName::from_static("dpop-nonce"),
            &self.dpop_nonce,
        );
    }
}

impl<G: ErrorGroup> std::fmt::Debug for ErrorResponse<G> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ErrorResponse")
            .field("status", &self.head.status)
            .finish()
    }
}

impl<G: ErrorGroup> ErrorResponse<G> {
    /// `err` as the group answers it, challenging with `challenge`.
    pub fn with_challenge(err: Error, challenge: Challenge) -> Self {
        let error = HttpError::new(err, challenge);
        let status = G::status(&error);
        ErrorResponse {
            body: G::body(&error, status),
            head: ErrorHead {
                status,
                challenge: G::CHALLENGED.contains(&status).then(|| error.challenge.clone()),
                retry_after: matches!(status, 429 | 503).then(|| error.retry_after.clone()),
                dpop_nonce: error.dpop_nonce.filter(|_| G::NONCED.contains(&status)),
            },
        }
    }
}

impl<G: ErrorGroup> ErrorResponse<G> {
    /// A refusal of the request edge ([`EDGE_STATUSES`]: a body too large or too slow, a head
    /// too large), in the group's body format, before any operation runs.
    pub fn at_edge(status: StatusCode, description: &str) -> Self {
        let error = HttpError::new(Error::invalid_request(description), G::CHALLENGE);
        ErrorResponse {
            body: G::body(&error, status.as_u16()),
            head: ErrorHead {
                status: status.as_u16(),
                challenge: None,
                retry_after: None,
                dpop_nonce: None,
            },
        }
    }

    /// The status and headers, for an answer whose body is made elsewhere (a page's HTML).
    pub fn into_head(self) -> ErrorHead {
        self.head
    }

    /// The 401 of a request that sent no credentials at all: challenged without error
    /// attributes (RFC 6750 §3.1).
    pub fn no_credentials(challenge: Challenge, description: &str) -> Self {
        let mut response = ErrorResponse::with_challenge(Error::new(ErrorCode::InvalidToken, description), challenge);
        response.head.challenge = Some(challenge.header(None));
        response
    }
}

impl<G: ErrorGroup> From<Error> for ErrorResponse<G> {
    fn from(err: Error) -> Self {
        ErrorResponse::with_challenge(err, G::CHALLENGE)
    }
}

fn header(name: &str, description: &str, required: bool) -> MetaHeader {
    MetaHeader {
        name: name.into(),
        description: Some(description.into()),
        required,
        deprecated: false,
        schema: String::schema_ref(),
    }
}

impl<G: ErrorGroup> ApiResponse for ErrorResponse<G> {
    fn meta() -> MetaResponses {
        let responses = G::STATUSES
            .iter()
            .map(|&status| {
                let mut headers = vec![header("Cache-Control", "`no-store`: errors are never cached.", true)];
                if G::CHALLENGED.contains(&status) {
                    headers.push(header(
                        "WWW-Authenticate",
                        "The authentication scheme to use, with the error (RFC 6750 §3, RFC 9449 §7.1).",
                        true,
                    ));
                }
                if matches!(status, 429 | 503) {
                    headers.push(header("Retry-After", "Seconds to wait before retrying.", true));
                }
                if G::NONCED.contains(&status) {
                    headers.push(header(
                        "DPoP-Nonce",
                        "The nonce the next DPoP proof must carry (`use_dpop_nonce`, RFC 9449 §8).",
                        false,
                    ));
                }
                MetaResponse {
                    description: G::describe(status),
                    status: Some(status),
                    status_range: None,
                    content: <G::Body as ResponseContent>::media_types(),
                    headers,
                }
            })
            .collect();
        MetaResponses { responses }
    }

    fn register(registry: &mut Registry) {
        <G::Body as Payload>::register(registry);
    }
}

impl<G: ErrorGroup> IntoResponse for ErrorResponse<G> {
    fn into_response(self) -> poem::Response {
        let mut response = self.body.into_response();
        self.head.apply(&mut response);
        response
    }
}

/// An operation's outcome: its success responses (`T`, an [`ApiResponse`] of success
/// statuses only) or an error as its group answers errors. The spec lists both.
pub enum Answer<T, G: ErrorGroup> {
    Ok(T),
    Err(ErrorResponse<G>),
}

impl<T, G: ErrorGroup> Answer<T, G> {
    /// An error, challenging with `challenge` rather than the group's usual one.
    pub fn error_with(err: Error, challenge: Challenge) -> Self {
        Answer::Err(ErrorResponse::with_challenge(err, challenge))
    }
}

impl<T, G: ErrorGroup> From<Error> for Answer<T, G> {
    fn from(err: Error) -> Self {
        Answer::Err(err.into())
    }
}

impl<T: ApiResponse, G: ErrorGroup> ApiResponse for Answer<T, G> {
    const BAD_REQUEST_HANDLER: bool = true;

    fn meta() -> MetaResponses {
        let mut meta = T::meta();
        meta.responses.extend(ErrorResponse::<G>::meta().responses);
        meta
    }

    fn register(registry: &mut Registry) {
        T::register(registry);
        ErrorResponse::<G>::register(registry);
    }

    /// A request poem-openapi turned away before the operation ran (a body that does not
    /// parse, a failed security check) is an error of the group, never a framework-shaped one.
    fn from_parse_request_error(err: poem::Error) -> Self {
        G::unparsable(err).into()
    }
}

impl<T: IntoResponse, G: ErrorGroup> IntoResponse for Answer<T, G> {
    fn into_response(self) -> poem::Response {
        match self {
            Answer::Ok(success) => success.into_response(),
            Answer::Err(error) => error.into_response(),
        }
    }
}

/// The token endpoint's family (token, device authorization, PAR, revocation, introspection):
/// OAuth JSON errors (RFC 6749 §5.2), `invalid_client` challenged with Basic.
pub struct OAuthErrors;

impl ErrorGroup for OAuthErrors {
    type Body = ErrorJson;
    const STATUSES: &'static [u16] = &[400, 401, 429, 500, 503];
    const CHALLENGED: &'static [u16] = &[401];
    const NONCED: &'static [u16] = &[400];
    const CHALLENGE: Challenge = Challenge::Basic;

    fn body(error: &HttpError, _status: u16) -> ErrorJson {
        error.json()
    }

    fn describe(status: u16) -> &'static str {
        match status {
            400 => {
                "The request is malformed, or the grant, scope or target is not acceptable (RFC 6749 §5.2), \
                    or the DPoP proof is not (`invalid_dpop_proof`), or it must carry the nonce given in \
                    `DPoP-Nonce` (`use_dpop_nonce`, RFC 9449 §8); while a device polls (RFC 8628 §3.5), \
                    `authorization_pending`, `slow_down`, `access_denied` or `expired_token`."
            }
            401 => "Client authentication failed (`invalid_client`).",
            status => describe(status),
        }
    }
}

/// A success of the token endpoint's family: never cached, since the body may carry tokens
/// (RFC 6749 §5.1); a token response to a request with a DPoP proof carries the nonce for the
/// next one when the server asks for nonces (RFC 9449 §8.2).
#[derive(ApiResponse, Debug)]
pub enum OAuthOk<T: ToJSON + Send + Sync> {
    /// Success.
    #[oai(status = 200)]
    Ok(
        Json<T>,
        #[oai(header = "Cache-Control")] String,
        #[oai(header = "Pragma")] String,
        #[oai(header = "DPoP-Nonce")] Option<String>,
    ),
}

/// Every outcome of a client-authenticated OAuth endpoint.
pub type OAuthResponse<T> = Answer<OAuthOk<T>, OAuthErrors>;

impl<T: ToJSON + Send + Sync> OAuthResponse<T> {
    pub fn ok(body: T) -> Self {
        Answer::Ok(OAuthOk::Ok(Json(body), NO_STORE.into(), "no-cache".into(), None))
    }

    /// Success, with the DPoP nonce for the client's next proof, if any.
    pub fn ok_with_nonce(body: T, dpop_nonce: Option<String>) -> Self {
        Answer::Ok(OAuthOk::Ok(Json(body), NO_STORE.into(), "no-cache".into(), dpop_nonce))
    }
}

/// The pushed authorization request endpoint's success (RFC 9126 §2.2): 201 Created.
#[derive(ApiResponse, Debug)]
pub enum PushedOk<T: ToJSON + Send + Sync> {
    /// Stored: the `request_uri` to send the browser to the authorization endpoint with.
    #[oai(status = 201)]
    Created(
        Json<T>,
        #[oai(header = "Cache-Control")] String,
        #[oai(header = "Pragma")] String,
    ),
}

/// Every outcome of the pushed authorization request endpoint (RFC 9126 §2.2, §2.3).
pub type PushedResponse<T> = Answer<PushedOk<T>, OAuthErrors>;

impl<T: ToJSON + Send + Sync> PushedResponse<T> {
    pub fn created(body: T) -> Self {
        Answer::Ok(PushedOk::Created(Json(body), NO_STORE.into(), "no-cache".into()))
    }
}

/// A request poem-openapi could not parse (wrong content type, malformed form) is an
/// `invalid_request`, never a framework-shaped error.
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

#[cfg(test)]
mod tests {
    //! The one error contract, held to the spec: every error code, through every group of API
    //! endpoints, is answered with a status the spec lists for every operation of that group,
    //! with the headers the spec says (and no header it does not), in its media type.

    use std::time::Duration;

    use serde_json::Value;

    use super::*;
    use crate::http::admin::AdminErrors;
    use crate::http::oidc::UserInfoErrors;
    use crate::http::registration::RegistrationErrors;

    /// Every way an error can be dressed: plain, with a wait, with a DPoP nonce.
    fn errors_of(code: ErrorCode) -> Vec<Error> {
        vec![
            Error::new(code, "why"),
            Error {
                retry_after: Some(Duration::from_millis(1500)),
                ..Error::new(code, "why")
            },
            Error {
                dpop_nonce: Some("n0nce".into()),
                ..Error::new(code, "why")
            },
        ]
    }

    fn answer<G: ErrorGroup>(error: Error) -> poem::Response {
        ErrorResponse::<G>::from(error).into_response()
    }

    fn edge<G: ErrorGroup>(status: StatusCode) -> poem::Response {
        ErrorResponse::<G>::at_edge(status, "too big").into_response()
    }

    /// How one group answers an error, and a refusal at the request edge.
    type Group = (fn(Error) -> poem::Response, fn(StatusCode) -> poem::Response);

    /// Which group answers an operation of the spec, by its path.
    fn group_of(path: &str) -> Option<Group> {
        match path {
            p if p.starts_with("/api/") => Some((answer::<AdminErrors>, edge::<AdminErrors>)),
            p if p.starts_with("/o/userinfo") => Some((answer::<UserInfoErrors>, edge::<UserInfoErrors>)),
            p if p.starts_with("/o/register") => Some((answer::<RegistrationErrors>, edge::<RegistrationErrors>)),
            p if p.starts_with("/o/") => Some((answer::<OAuthErrors>, edge::<OAuthErrors>)),
            // Metadata, the JWKS, health and metrics answer no protocol errors.
            _ => None,
        }
    }

    /// Whether `response` is what the spec's `responses` of an operation say it may be, and its
    /// body (problem details name their status) agrees with its status.
    async fn check(what: &str, responses: &Value, mut response: poem::Response) {
        let body = response.take_body().into_vec().await.unwrap();
        let body: Value = serde_json::from_slice(&body).unwrap_or_default();
        if let Some(status) = body.get("status") {
            assert_eq!(status, response.status().as_u16(), "{what}: the body's status");
        }
        let response = &response;
        let status = response.status().as_u16().to_string();
        let documented = &responses[&status];
        assert!(documented.is_object(), "{what}: {status} is not in the spec");
        let headers = documented["headers"].as_object().cloned().unwrap_or_default();
        let named = |name: &str| headers.keys().any(|h| h.eq_ignore_ascii_case(name));
        for (name, spec) in &headers {
            if spec["required"] == Value::Bool(true) {
                assert!(
                    response.headers().contains_key(name.as_str()),
                    "{what} {status}: no {name}"
                );
            }
        }
        for name in ["cache-control", "www-authenticate", "retry-after", "dpop-nonce"] {
            if response.headers().contains_key(name) {
                assert!(named(name), "{what} {status}: {name} is sent but not in the spec");
            }
        }
        assert_eq!(response.headers()["cache-control"], NO_STORE, "{what} {status}");
        let media = response.headers()["content-type"]
            .to_str()
            .unwrap()
            .split(';')
            .next()
            .unwrap()
            .to_string();
        assert!(
            documented["content"].get(&media).is_some(),
            "{what} {status}: {media} is not in the spec"
        );
    }

    #[tokio::test]
    async fn every_error_code_through_every_group_is_answered_as_the_spec_says() {
        let spec: Value = serde_json::from_str(&crate::http::spec()).unwrap();
        let mut checked = 0;
        for (path, item) in spec["paths"].as_object().unwrap() {
            let Some((answer, edge)) = group_of(path) else { continue };
            for (method, operation) in item.as_object().unwrap() {
                let responses = &operation["responses"];
                for code in ErrorCode::ALL {
                    for error in errors_of(code) {
                        check(&format!("{method} {path} {}", code.as_str()), responses, answer(error)).await;
                        checked += 1;
                    }
                }
                if operation.get("requestBody").is_some() {
                    for (status, _) in EDGE_STATUSES {
                        let status = StatusCode::from_u16(*status).unwrap();
                        check(&format!("{method} {path} edge"), responses, edge(status)).await;
                    }
                }
            }
        }
        // 31 codes, 3 dressings, every operation of the four groups.
        assert!(checked > 31 * 3 * 20, "{checked}");
    }

    #[test]
    fn a_database_outage_is_503_with_retry_after_in_every_group() {
        let outage = || Error {
            retry_after: Some(Duration::from_secs(2)),
            ..Error::new(ErrorCode::TemporarilyUnavailable, "the database is unreachable")
        };
        for response in [
            answer::<OAuthErrors>(outage()),
            answer::<UserInfoErrors>(outage()),
            answer::<RegistrationErrors>(outage()),
            answer::<AdminErrors>(outage()),
            answer::<PageErrors>(outage()),
        ] {
            assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
            assert_eq!(response.headers()["retry-after"], "2");
        }
    }

    #[test]
    fn pages_never_challenge_and_say_when_to_come_back() {
        for code in ErrorCode::ALL {
            for error in errors_of(code) {
                let response = answer::<PageErrors>(error);
                let status = response.status().as_u16();
                assert!(PageErrors::STATUSES.contains(&status), "{} {status}", code.as_str());
                assert!(!response.headers().contains_key("www-authenticate"));
                assert!(!response.headers().contains_key("dpop-nonce"));
                assert_eq!(
                    response.headers().contains_key("retry-after"),
                    matches!(status, 429 | 503)
                );
                assert_eq!(response.headers()["cache-control"], NO_STORE);
            }
        }
    }
}
