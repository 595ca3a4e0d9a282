//! The admin API's errors: RFC 9457 problem details with a stable `code`, over the one error
//! mapping of [`crate::http::error`], and the response types every admin operation answers
//! with.

use poem::IntoResponse;
use poem_openapi::payload::{Json, Payload};
use poem_openapi::registry::{MetaSchemaRef, Registry};
use poem_openapi::types::{ToJSON, Type};
use poem_openapi::{ApiResponse, Object};

use crate::http::error::{describe, status_of, Answer, Challenge, ErrorGroup, HttpError, NO_STORE};
use crate::oauth::{Error, ErrorCode};

/// How the admin API challenges: a bearer token with the `tessera:admin` scope.
const ADMIN_CHALLENGE: Challenge = Challenge::Bearer {
    scope: Some("tessera:admin"),
    always: true,
};

/// An error, as RFC 9457 problem details.
#[derive(Object, Debug, Clone)]
pub struct Problem {
    /// A URI naming the kind of problem: `urn:tessera:problem:` + `code`.
    #[oai(rename = "type")]
    pub type_: String,
    /// A short summary of the kind of problem.
    pub title: String,
    /// The HTTP status code.
    pub status: u16,
    /// What went wrong with this request.
    pub detail: String,
    /// A stable machine-readable code: `invalid_request`, `invalid_scope`, `invalid_token`,
    /// `insufficient_scope`, `not_found`, `conflict` or `server_error`.
    pub code: String,
}

/// A [`Problem`] sent as `application/problem+json`.
#[derive(Debug)]
pub struct ProblemJson(pub Problem, ErrorCode);

impl Payload for ProblemJson {
    const CONTENT_TYPE: &'static str = "application/problem+json";

    fn schema_ref() -> MetaSchemaRef {
        Problem::schema_ref()
    }

    fn register(registry: &mut Registry) {
        Problem::register(registry);
    }
}

impl IntoResponse for ProblemJson {
    fn into_response(self) -> poem::Response {
        let mut response = poem::Response::builder()
            .status(poem::http::StatusCode::from_u16(self.0.status).unwrap_or_default())
            .content_type(Self::CONTENT_TYPE)
            .header(poem::http::header::CACHE_CONTROL, "no-store")
            .body(self.0.to_json_string());
        response
            .extensions_mut()
            .insert(crate::http::error::ErrorCodeTag(self.1.as_str()));
        response
    }
}

impl ProblemJson {
    /// The problem of an error with this code, sent with this status.
    pub fn new(code: ErrorCode, status: u16, detail: impl Into<String>) -> ProblemJson {
        let title = poem::http::StatusCode::from_u16(status)
            .ok()
            .and_then(|s| s.canonical_reason())
            .unwrap_or("Error");
        ProblemJson(
            Problem {
                type_: format!("urn:tessera:problem:{}", code.as_str()),
                title: title.into(),
                status,
                detail: detail.into(),
                code: code.as_str().into(),
            },
            code,
        )
    }
}

/// The admin API's errors, as RFC 9457 problem details: `invalid_request` or `invalid_scope`
/// (400), no valid admin token (401, `invalid_token`), a token without `tessera:admin` (403,
/// `insufficient_scope`), no such record (404), a clash with an existing one (409).
pub struct AdminErrors;

impl ErrorGroup for AdminErrors {
    type Body = ProblemJson;
    const STATUSES: &'static [u16] = &[400, 401, 403, 404, 409, 429, 500, 503];
    const CHALLENGED: &'static [u16] = &[401, 403];
    const CHALLENGE: Challenge = ADMIN_CHALLENGE;

    fn body(error: &HttpError, status: u16) -> ProblemJson {
        ProblemJson::new(error.code, status, error.description.clone())
    }

    fn describe(status: u16) -> &'static str {
        match status {
            400 => "The request is malformed or breaks a rule (`invalid_request`, `invalid_scope`).",
            401 => "No valid admin token (`invalid_token`).",
            403 => "The token lacks the `tessera:admin` scope (`insufficient_scope`).",
            404 => "No such record (`not_found`).",
            status => describe(status),
        }
    }

    /// Requests poem-openapi turns away before an operation runs: a failed token check, no
    /// token at all, or a body or parameter that does not parse.
    fn unparsable(err: poem::Error) -> Error {
        if let Some(AdminAuthError(error)) = err.downcast_ref::<AdminAuthError>() {
            return Error {
                retry_after: error.retry_after,
                ..Error::new(error.code, error.description.clone())
            };
        }
        if err.is::<poem_openapi::error::AuthorizationError>() {
            return Error::new(ErrorCode::InvalidToken, "an admin access token is required");
        }
        Error::invalid_request(format!("the request could not be parsed: {err}"))
    }
}

/// An admin operation's success: the record or page, never cached (bodies may carry secrets).
#[derive(ApiResponse, Debug)]
pub enum AdminOk<T: ToJSON + Send + Sync> {
    /// Success.
    #[oai(status = 200)]
    Ok(Json<T>, #[oai(header = "Cache-Control")] String),
}

/// Every outcome of an admin operation that answers with a body.
pub type AdminResponse<T> = Answer<AdminOk<T>, AdminErrors>;

impl<T: ToJSON + Send + Sync> AdminResponse<T> {
    pub(super) fn of(result: Result<T, Error>) -> Self {
        match result {
            Ok(value) => Answer::Ok(AdminOk::Ok(Json(value), NO_STORE.into())),
            Err(e) => e.into(),
        }
    }
}

/// An admin operation's record created: never cached (the body may carry the client secret).
#[derive(ApiResponse, Debug)]
pub enum AdminCreatedOk<T: ToJSON + Send + Sync> {
    /// Created.
    #[oai(status = 201)]
    Created(Json<T>, #[oai(header = "Cache-Control")] String),
}

/// Every outcome of an admin operation that creates a record.
pub type AdminCreated<T> = Answer<AdminCreatedOk<T>, AdminErrors>;

impl<T: ToJSON + Send + Sync> AdminCreated<T> {
    pub(super) fn of(result: Result<T, Error>) -> Self {
        match result {
            Ok(value) => Answer::Ok(AdminCreatedOk::Created(Json(value), NO_STORE.into())),
            Err(e) => e.into(),
        }
    }
}

/// Why the admin token check failed (`invalid_token`, `insufficient_scope`, or the store
/// being unavailable), carried through poem-openapi's security checker to [`AdminErrors`].
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub(super) struct AdminAuthError(pub Error);

impl poem::error::ResponseError for AdminAuthError {
    fn status(&self) -> poem::http::StatusCode {
        status_of(self.0.code)
    }
}
