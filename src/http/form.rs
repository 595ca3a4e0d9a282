//! Request hygiene in front of every endpoint: size limits on the head and the body, for form
//! bodies strict UTF-8 and no repeated parameter (RFC 6749 §3.1, §3.2: "parameters MUST NOT be
//! included more than once"), and no NUL character in the path, the query, a form or a JSON
//! body (no text Tessera keeps may hold one; PostgreSQL cannot store one, and the embedded
//! store must not keep what the cluster could not). Rejected here, bad input never reaches the
//! protocol code.

use std::sync::Arc;

use poem::http::{header, Method, StatusCode};
use poem::{Body, Endpoint, IntoResponse, Request, Response};

use super::admin::AdminErrors;
use super::error::{before_any_endpoint, ErrorResponse, OAuthErrors};
use crate::urlencoded::{json_has_nul, path_has_nul, NUL};
pub use crate::urlencoded::{parse_pairs, repeated_name};

/// A refusal in the format of the endpoint it was meant for: RFC 9457 problem details under the
/// admin API, an OAuth error object everywhere else.
fn reject(problem_details: bool, status: StatusCode, description: &str) -> Response {
    if problem_details {
        return ErrorResponse::<AdminErrors>::at_edge(status, description).into_response();
    }
    let refusal = ErrorResponse::<OAuthErrors>::at_edge(status, description).into_response();
    let mut response = before_any_endpoint(refusal);
    // Not counted among the protocol's errors in /metrics: no endpoint ran to make one.
    response.extensions_mut().remove::<super::error::ErrorCodeTag>();
    response
}

/// The largest request head (request line and headers) served. hyper accepts heads up to its
/// ~400 KB buffer; nothing Tessera reads needs more than a few KB (the largest is a cookie or
/// a JWT), and a bigger head is answered cheaply and its connection closed, so a flood of
/// huge headers cannot keep a buffer that size per connection.
pub const MAX_HEAD_BYTES: usize = 32 * 1024;

fn head_bytes(req: &Request) -> usize {
    let uri = req.uri();
    let line = req.method().as_str().len() + uri.path().len() + uri.query().map_or(0, str::len);
    let headers: usize = req
        .headers()
        .iter()
        .map(|(name, value)| name.as_str().len() + value.len() + 4)
        .sum();
    line + headers
}

/// What a request body may be.
#[derive(Clone, Copy, Debug)]
pub struct BodyLimits {
    pub max_bytes: usize,
    /// How long the whole body may take to arrive: a body trickled a byte at a time must not
    /// hold a connection (and its buffers) indefinitely (review finding 4).
    pub timeout: std::time::Duration,
}

/// A refusal after which the connection is closed: what is left of the request cannot be
/// trusted to be read.
fn closing(mut response: Response) -> Response {
    response
        .headers_mut()
        .insert(header::CONNECTION, header::HeaderValue::from_static("close"));
    response
}

/// Middleware body: refuses heads over [`MAX_HEAD_BYTES`], buffers bodies up to
/// `limits.max_bytes` bytes within `limits.timeout`, and vets form bodies.
pub async fn guard<E: Endpoint>(next: Arc<E>, mut req: Request, limits: BodyLimits) -> poem::Result<Response> {
    let limit = limits.max_bytes;
    let problem_details = req.uri().path().starts_with("/api/");
    if head_bytes(&req) > MAX_HEAD_BYTES {
        return Ok(closing(reject(
            problem_details,
            StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            &format!("the request's headers are larger than {MAX_HEAD_BYTES} bytes"),
        )));
    }
    if path_has_nul(req.uri().path()) {
        return Ok(reject(problem_details, StatusCode::BAD_REQUEST, NUL));
    }
    if let Some(query) = req.uri().query() {
        if let Err(why) = parse_pairs(query.as_bytes()) {
            return Ok(reject(problem_details, StatusCode::BAD_REQUEST, why));
        }
    }
    if matches!(*req.method(), Method::POST | Method::PUT | Method::PATCH) {
        let read = tokio::time::timeout(limits.timeout, req.take_body().into_bytes_limit(limit)).await;
        let Ok(read) = read else {
            return Ok(closing(reject(
                problem_details,
                StatusCode::REQUEST_TIMEOUT,
                &format!("the body did not arrive within {} seconds", limits.timeout.as_secs()),
            )));
        };
        let bytes = match read {
            Ok(bytes) => bytes,
            Err(poem::error::ReadBodyError::PayloadTooLarge) => {
                return Ok(reject(
                    problem_details,
                    StatusCode::PAYLOAD_TOO_LARGE,
                    &format!("the body is larger than {limit} bytes"),
                ));
            }
            Err(_) => {
                return Ok(reject(
                    problem_details,
                    StatusCode::BAD_REQUEST,
                    "the body could not be read",
                ))
            }
        };
        let is_form = req.content_type().is_some_and(|ct| {
            ct.split(';')
                .next()
                .is_some_and(|m| m.trim().eq_ignore_ascii_case("application/x-www-form-urlencoded"))
        });
        if !is_form && json_has_nul(&bytes) {
            return Ok(reject(problem_details, StatusCode::BAD_REQUEST, NUL));
        }
        if is_form {
            match parse_pairs(&bytes) {
                Err(why) => return Ok(reject(problem_details, StatusCode::BAD_REQUEST, why)),
                Ok(pairs) => {
                    if let Some(name) = repeated_name(&pairs) {
                        return Ok(reject(
                            problem_details,
                            StatusCode::BAD_REQUEST,
                            &format!("parameter {name} was given more than once"),
                        ));
                    }
                }
            }
        }
        req.set_body(Body::from(bytes));
    }
    Ok(next.call(req).await?.into_response())
}
