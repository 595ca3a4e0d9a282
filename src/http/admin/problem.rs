//! The admin API's errors: RFC 9457 problem details with a stable `code`, over the one error
//! mapping of [`crate::http::error`], and the response types every admin operation answers
//! with.

use poem::IntoResponse;
use poem_openapi::payload::{Json, Payload};
use poem_openapi::registry::{MetaSchemaRef, Registry};
use poem_openapi::types::{ToJSON, Type};
use poem_openapi::{ApiResponse, Object};

use crate::http::error::{status_of, Challenge, HttpError, NO_STORE};
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

fn problem(e: &HttpError) -> ProblemJson {
    ProblemJson::new(e.code, e.status.as_u16(), e.description.clone())
}

/// Every outcome of an admin operation that answers with a body.
#[derive(ApiResponse, Debug)]
#[oai(bad_request_handler = "bad_request")]
pub enum AdminResponse<T: ToJSON + Send + Sync> {
    /// Success. Never cached: bodies may carry secrets.
    #[oai(status = 200)]
    Ok(Json<T>, #[oai(header = "Cache-Control")] String),
    /// The request is malformed or breaks a rule (`invalid_request`, `invalid_scope`).
    #[oai(status = 400)]
    BadRequest(ProblemJson),
    /// No valid admin token (`invalid_token`).
    #[oai(status = 401)]
    Unauthorized(ProblemJson, #[oai(header = "WWW-Authenticate")] String),
    /// The token lacks the `tessera:admin` scope (`insufficient_scope`).
    #[oai(status = 403)]
    Forbidden(ProblemJson, #[oai(header = "WWW-Authenticate")] String),
    /// No such record (`not_found`).
    #[oai(status = 404)]
    NotFound(ProblemJson),
    /// The record clashes with an existing one (`conflict`).
    #[oai(status = 409)]
    Conflict(ProblemJson),
    /// The server failed (`server_error`).
    #[oai(status = 500)]
    ServerError(ProblemJson),
}

impl<T: ToJSON + Send + Sync> From<Error> for AdminResponse<T> {
    fn from(err: Error) -> Self {
        let e = HttpError::new(err, ADMIN_CHALLENGE);
        let body = problem(&e);
        match e.status.as_u16() {
            401 => AdminResponse::Unauthorized(body, e.challenge),
            403 => AdminResponse::Forbidden(body, e.challenge),
            404 => AdminResponse::NotFound(body),
            409 => AdminResponse::Conflict(body),
            500 => AdminResponse::ServerError(body),
            _ => AdminResponse::BadRequest(body),
        }
    }
}

impl<T: ToJSON + Send + Sync> AdminResponse<T> {
    pub(super) fn of(result: Result<T, Error>) -> Self {
        match result {
            Ok(value) => AdminResponse::Ok(Json(value), NO_STORE.into()),
            Err(e) => e.into(),
        }
    }
}

/// Every outcome of an admin operation that creates a record: the same errors as
/// [`AdminResponse`], and 201 on success.
#[derive(ApiResponse, Debug)]
#[oai(bad_request_handler = "bad_request_created")]
pub enum AdminCreated<T: ToJSON + Send + Sync> {
    /// Created. Never cached: the body may carry the client secret.
    #[oai(status = 201)]
    Created(Json<T>, #[oai(header = "Cache-Control")] String),
    /// The request is malformed or breaks a rule (`invalid_request`, `invalid_scope`).
    #[oai(status = 400)]
    BadRequest(ProblemJson),
    /// No valid admin token (`invalid_token`).
    #[oai(status = 401)]
    Unauthorized(ProblemJson, #[oai(header = "WWW-Authenticate")] String),
    /// The token lacks the `tessera:admin` scope (`insufficient_scope`).
    #[oai(status = 403)]
    Forbidden(ProblemJson, #[oai(header = "WWW-Authenticate")] String),
    /// The record clashes with an existing one (`conflict`).
    #[oai(status = 409)]
    Conflict(ProblemJson),
    /// The server failed (`server_error`).
    #[oai(status = 500)]
    ServerError(ProblemJson),
}

impl<T: ToJSON + Send + Sync> AdminCreated<T> {
    pub(super) fn of(result: Result<T, Error>) -> Self {
        let err = match result {
            Ok(value) => return AdminCreated::Created(Json(value), NO_STORE.into()),
            Err(e) => e,
        };
        // The same mapping as AdminResponse's (a create has no 404).
        match AdminResponse::<T>::from(err) {
            AdminResponse::Unauthorized(body, challenge) => AdminCreated::Unauthorized(body, challenge),
            AdminResponse::Forbidden(body, challenge) => AdminCreated::Forbidden(body, challenge),
            AdminResponse::Conflict(body) => AdminCreated::Conflict(body),
            AdminResponse::ServerError(body) => AdminCreated::ServerError(body),
            AdminResponse::BadRequest(body) | AdminResponse::NotFound(body) => AdminCreated::BadRequest(body),
            AdminResponse::Ok(value, cache) => AdminCreated::Created(value, cache),
        }
    }
}

fn bad_request_created<T: ToJSON + Send + Sync>(err: poem::Error) -> AdminCreated<T> {
    AdminCreated::of(Err(request_error(err)))
}

/// Requests poem-openapi turns away before an operation runs: a failed token check, no
/// token at all, or a body or parameter that does not parse.
fn request_error(err: poem::Error) -> Error {
    if let Some(AdminAuthError(code, description)) = err.downcast_ref::<AdminAuthError>() {
        return Error::new(*code, description.clone());
    }
    if err.is::<poem_openapi::error::AuthorizationError>() {
        return Error::new(ErrorCode::InvalidToken, "an admin access token is required");
    }
    Error::invalid_request(format!("the request could not be parsed: {err}"))
}

fn bad_request<T: ToJSON + Send + Sync>(err: poem::Error) -> AdminResponse<T> {
    request_error(err).into()
}

/// Why the admin token check failed (`invalid_token` or `insufficient_scope`).
#[derive(Debug, thiserror::Error)]
#[error("{1}")]
pub(super) struct AdminAuthError(pub ErrorCode, pub String);

impl poem::error::ResponseError for AdminAuthError {
    fn status(&self) -> poem::http::StatusCode {
        status_of(self.0)
    }
}
