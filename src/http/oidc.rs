//! OpenID Connect endpoints that clients call directly: UserInfo (Core §5.3).

use std::sync::Arc;

use poem::web::Data;
use poem::{Body, Request};
use poem_openapi::payload::Json;
use poem_openapi::{ApiResponse, Object, OpenApi};
use serde::Deserialize;

use super::error::{describe, Answer, Challenge, ErrorGroup, ErrorJson, ErrorResponse, HttpError, NO_STORE};
use super::form::parse_pairs;
use super::security::{proof_request, TokenScheme};
use super::Tag;
use crate::oauth::authorize::Params;
use crate::oauth::token::Presentation;
use crate::oauth::{Error, ErrorCode, Provider};

/// The claims about the user that the access token's scopes release (Core §5.1). Only `sub`
/// is always present; absent values are left out.
#[derive(Object, Deserialize, Debug)]
pub struct UserInfo {
    /// The user's stable identifier (the `sub` of their ID tokens).
    pub sub: String,
    #[oai(skip_serializing_if_is_none)]
    pub name: Option<String>,
    #[oai(skip_serializing_if_is_none)]
    pub given_name: Option<String>,
    #[oai(skip_serializing_if_is_none)]
    pub family_name: Option<String>,
    #[oai(skip_serializing_if_is_none)]
    pub nickname: Option<String>,
    /// The username they log in with (`profile` scope).
    #[oai(skip_serializing_if_is_none)]
    pub preferred_username: Option<String>,
    #[oai(skip_serializing_if_is_none)]
    pub picture: Option<String>,
    #[oai(skip_serializing_if_is_none)]
    pub website: Option<String>,
    #[oai(skip_serializing_if_is_none)]
    pub locale: Option<String>,
    #[oai(skip_serializing_if_is_none)]
    pub zoneinfo: Option<String>,
    /// When the profile last changed, in seconds since the epoch.
    #[oai(skip_serializing_if_is_none)]
    pub updated_at: Option<i64>,
    /// `email` scope.
    #[oai(skip_serializing_if_is_none)]
    pub email: Option<String>,
    #[oai(skip_serializing_if_is_none)]
    pub email_verified: Option<bool>,
}

/// UserInfo's success: the user's claims.
#[derive(ApiResponse, Debug)]
pub enum UserInfoOk {
    /// The user's claims.
    #[oai(status = 200)]
    Ok(Json<Box<UserInfo>>, #[oai(header = "Cache-Control")] String),
}

/// UserInfo's errors, as RFC 6750 §3 describes them: `invalid_request` (400), `invalid_token`
/// or a DPoP proof that fails (401; RFC 9449 §7.1: a resource answers a failed proof 401, the
/// token endpoint 400), `insufficient_scope` (403, the token was not issued with `openid`),
/// each with its challenge.
pub struct UserInfoErrors;

impl ErrorGroup for UserInfoErrors {
    type Body = ErrorJson;
    const STATUSES: &'static [u16] = &[400, 401, 403, 429, 500, 503];
    const CHALLENGED: &'static [u16] = &[400, 401, 403];
    const NONCED: &'static [u16] = &[401];
    const CHALLENGE: Challenge = userinfo_challenge(false);

    fn body(error: &HttpError, _status: u16) -> ErrorJson {
        error.json()
    }

    fn describe(status: u16) -> &'static str {
        match status {
            400 => "The request is malformed (`invalid_request`), e.g. a token sent in two ways at once.",
            401 => {
                "No access token, or one that is invalid, expired, revoked or for another resource \
                    (`invalid_token`); a DPoP-bound token sent as Bearer or a bearer token sent as DPoP \
                    (`invalid_token`); a DPoP proof that fails (`invalid_dpop_proof`) or lacks the nonce \
                    given in `DPoP-Nonce` (`use_dpop_nonce`, RFC 9449 §8)."
            }
            403 => "The token was not issued with the `openid` scope (`insufficient_scope`).",
            429 => {
                "The token's DPoP key made more than 50 proofs a second (`rate_limited`); wait \
                    `Retry-After` seconds."
            }
            status => describe(status),
        }
    }

    fn status(error: &HttpError) -> u16 {
        match error.code {
            ErrorCode::InvalidDpopProof | ErrorCode::UseDpopNonce => 401,
            _ if Self::STATUSES.contains(&error.status.as_u16()) => error.status.as_u16(),
            _ => 400,
        }
    }
}

/// Every outcome of a UserInfo request.
pub type UserInfoResponse = Answer<UserInfoOk, UserInfoErrors>;

/// How UserInfo challenges: an access token with the `openid` scope, bearer (RFC 6750 §3) or
/// DPoP-bound (RFC 9449 §7.1; `dpop`: the request used the DPoP scheme).
const fn userinfo_challenge(dpop: bool) -> Challenge {
    Challenge::BearerOrDpop {
        scope: Some("openid"),
        dpop,
    }
}

/// The access token of the request and how it came: from the `Authorization` header (Bearer
/// or DPoP) or the form body (as a bearer token), never both (RFC 6750 §2: one method per
/// request).
fn presented_token(
    req: &Request,
    body_token: Result<Option<String>, Error>,
) -> Result<Option<(TokenScheme, String)>, Error> {
    let body_token = body_token?;
    let header = super::security::access_token(req)?;
    let body_token = body_token.filter(|t| !t.is_empty());
    match (header, body_token) {
        (Some(_), Some(_)) => Err(Error::invalid_request(
            "send the access token in the Authorization header or the body, not both",
        )),
        (header, body) => Ok(header.or(body.map(|token| (TokenScheme::Bearer, token)))),
    }
}

/// The `access_token` of a form-encoded body (RFC 6750 §2.2), if the request has one.
async fn body_token(req: &Request, body: Body) -> Result<Option<String>, Error> {
    let is_form = req
        .content_type()
        .is_some_and(|t| t.starts_with("application/x-www-form-urlencoded"));
    let bytes = body
        .into_bytes()
        .await
        .map_err(|_| Error::invalid_request("the body could not be read"))?;
    if bytes.is_empty() {
        return Ok(None);
    }
    if !is_form {
        return Err(Error::invalid_request(
            "the body must be application/x-www-form-urlencoded",
        ));
    }
    let pairs = parse_pairs(&bytes).map_err(Error::invalid_request)?;
    Ok(Params::new(&pairs).get("access_token")?.map(str::to_string))
}

async fn userinfo(
    provider: &Provider,
    req: &Request,
    token: Result<Option<(TokenScheme, String)>, Error>,
) -> UserInfoResponse {
    let (scheme, token) = match token {
        Ok(Some(found)) => found,
        Ok(None) => {
            return Answer::Err(ErrorResponse::no_credentials(
                userinfo_challenge(false),
                "an access token is required",
            ))
        }
        Err(e) => return e.into(),
    };
    let proofs = proof_request(req, provider);
    let presented = match scheme {
        TokenScheme::Bearer => Presentation::Bearer,
        TokenScheme::Dpop => Presentation::Dpop(&proofs),
    };
    match provider.tokens.userinfo(&token, presented).await {
        Ok(claims) => match serde_json::from_value::<UserInfo>(serde_json::Value::Object(claims)) {
            Ok(info) => Answer::Ok(UserInfoOk::Ok(Json(Box::new(info)), NO_STORE.into())),
            Err(e) => Error::server_error(e).into(),
        },
        Err(e) => Answer::error_with(e, userinfo_challenge(scheme == TokenScheme::Dpop)),
    }
}

pub struct OidcApi;

#[OpenApi(tag = "Tag::OpenIdConnect")]
impl OidcApi {
    /// User info
    ///
    /// The signed-in user's claims, for an access token issued with the `openid` scope
    /// (OpenID Connect Core §5.3). Send the token as `Authorization: Bearer ...`, or, for a
    /// DPoP-bound token, as `Authorization: DPoP ...` with a `DPoP` proof whose `ath` is the
    /// token's hash (RFC 9449 §7).
    #[oai(path = "/o/userinfo/", method = "get", operation_id = "getUserInfo")]
    async fn userinfo_get(&self, provider: Data<&Arc<Provider>>, req: &Request) -> UserInfoResponse {
        userinfo(&provider, req, presented_token(req, Ok(None))).await
    }

    /// User info (POST)
    ///
    /// The same as `GET`, for clients that prefer POST. The access token goes in the
    /// `Authorization: Bearer` header, or in an `application/x-www-form-urlencoded` body as
    /// `access_token` (RFC 6750 §2.2); not both.
    #[oai(path = "/o/userinfo/", method = "post", operation_id = "postUserInfo")]
    async fn userinfo_post(&self, provider: Data<&Arc<Provider>>, req: &Request, body: Body) -> UserInfoResponse {
        userinfo(&provider, req, presented_token(req, body_token(req, body).await)).await
    }
}
