//! OpenID Connect endpoints that clients call directly: UserInfo (Core §5.3).

use std::sync::Arc;

use poem::web::Data;
use poem::{Body, Request};
use poem_openapi::payload::Json;
use poem_openapi::{ApiResponse, Object, OpenApi};
use serde::Deserialize;

use super::error::{Challenge, ErrorJson, HttpError};
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

const NO_STORE: &str = "no-store";

/// Every outcome of a UserInfo request; errors as RFC 6750 §3 describes them.
#[derive(ApiResponse, Debug)]
#[oai(bad_request_handler = "bad_request")]
pub enum UserInfoResponse {
    /// The user's claims.
    #[oai(status = 200)]
    Ok(Json<Box<UserInfo>>, #[oai(header = "Cache-Control")] String),
    /// The request is malformed (`invalid_request`), e.g. a token sent in two ways at once.
    #[oai(status = 400)]
    BadRequest(ErrorJson, #[oai(header = "WWW-Authenticate")] String),
    /// No access token, or one that is invalid, expired, revoked or for another resource
    /// (`invalid_token`); a DPoP-bound token sent as Bearer or a bearer token sent as DPoP
    /// (`invalid_token`); a DPoP proof that fails (`invalid_dpop_proof`) or lacks the nonce
    /// given in `DPoP-Nonce` (`use_dpop_nonce`, RFC 9449 §8).
    #[oai(status = 401)]
    Unauthorized(
        ErrorJson,
        #[oai(header = "WWW-Authenticate")] String,
        #[oai(header = "DPoP-Nonce")] Option<String>,
    ),
    /// The token was not issued with the `openid` scope (`insufficient_scope`).
    #[oai(status = 403)]
    Forbidden(ErrorJson, #[oai(header = "WWW-Authenticate")] String),
    /// The server could not complete the request.
    #[oai(status = 500)]
    ServerError(ErrorJson),
}

/// How UserInfo challenges: an access token with the `openid` scope, bearer (RFC 6750 §3) or
/// DPoP-bound (RFC 9449 §7.1; `dpop`: the request used the DPoP scheme).
fn userinfo_challenge(dpop: bool) -> Challenge {
    Challenge::BearerOrDpop {
        scope: Some("openid"),
        dpop,
    }
}

impl UserInfoResponse {
    fn error(err: Error, challenge: Challenge) -> Self {
        let e = HttpError::new(err, challenge);
        let body = e.json();
        // RFC 9449 §7.1: a resource answers a failed proof 401 (the token endpoint, 400).
        let dpop_error = matches!(e.code, ErrorCode::InvalidDpopProof | ErrorCode::UseDpopNonce);
        match e.status.as_u16() {
            status if status == 401 || dpop_error => UserInfoResponse::Unauthorized(body, e.challenge, e.dpop_nonce),
            403 => UserInfoResponse::Forbidden(body, e.challenge),
            500 => UserInfoResponse::ServerError(body),
            _ => UserInfoResponse::BadRequest(body, e.challenge),
        }
    }
}

impl From<Error> for UserInfoResponse {
    fn from(err: Error) -> Self {
        UserInfoResponse::error(err, userinfo_challenge(false))
    }
}

fn bad_request(err: poem::Error) -> UserInfoResponse {
    Error::invalid_request(format!("the request could not be parsed: {err}")).into()
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
            let body = ErrorJson::new(ErrorCode::InvalidToken, "an access token is required");
            return UserInfoResponse::Unauthorized(body, userinfo_challenge(false).header(None), None);
        }
        Err(e) => return e.into(),
    };
    let proofs = proof_request(req, provider);
    let presented = match scheme {
        TokenScheme::Bearer => Presentation::Bearer,
        TokenScheme::Dpop => Presentation::Dpop(&proofs),
    };
    match provider.userinfo(&token, presented).await {
        Ok(claims) => match serde_json::from_value::<UserInfo>(serde_json::Value::Object(claims)) {
            Ok(info) => UserInfoResponse::Ok(Json(Box::new(info)), NO_STORE.into()),
            Err(e) => Error::server_error(e).into(),
        },
        Err(e) => UserInfoResponse::error(e, userinfo_challenge(scheme == TokenScheme::Dpop)),
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
