//! Credentials on a request: a client's (RFC 6749 §2.3.1: HTTP Basic, or the form body),
//! access tokens in the `Authorization` header (RFC 6750 §2.1 `Bearer`, RFC 9449 §7.1 `DPoP`)
//! and DPoP proofs (RFC 9449 §4.1).

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use percent_encoding::percent_decode_str;
use poem::http::header;
use poem::Request;
use poem_openapi::Object;
use serde::Deserialize;

use crate::oauth::client::assertion;
use crate::oauth::client::{AuthMethod, ClientCredentials};
use crate::oauth::dpop::ProofRequest;
use crate::oauth::{Error, Provider};

/// Client authentication in a form body: `client_secret_post` (RFC 6749 §2.3.1),
/// `private_key_jwt` (RFC 7521 §4.2, RFC 7523 §2.2), or a public client's `client_id`.
#[derive(Object, Deserialize, Debug, Default)]
pub struct ClientAuthentication {
    /// The client's id, when not using HTTP Basic.
    pub client_id: Option<String>,
    /// The client's secret, for `client_secret_post`.
    pub client_secret: Option<String>,
    /// `urn:ietf:params:oauth:client-assertion-type:jwt-bearer`, for `private_key_jwt`.
    pub client_assertion_type: Option<String>,
    /// A JWT signed with the client's private key (RFC 7523 §2.2), for `private_key_jwt`.
    pub client_assertion: Option<String>,
}

/// Finds the client's credentials. Using more than one method at once is an
/// `invalid_request` (RFC 6749 §2.3); a malformed Basic header or an assertion of another
/// type is an `invalid_client` (RFC 7521 §4.2.1).
pub fn client_credentials(req: &Request, fields: &ClientAuthentication) -> Result<ClientCredentials, Error> {
    fn present(v: Option<&str>) -> Option<&str> {
        v.filter(|v| !v.is_empty())
    }
    let form_client_id = present(fields.client_id.as_deref());
    let form_secret = present(fields.client_secret.as_deref());
    let assertion = present(fields.client_assertion.as_deref());
    let assertion_type = present(fields.client_assertion_type.as_deref());
    let credentials = |client_id: String, secret: Option<String>, method| ClientCredentials {
        client_id,
        secret,
        method,
        address: None,
        assertion: None,
        // As called: routing drops a trailing slash from `uri()`, and an assertion's `aud`
        // names the endpoint as the metadata publishes it (`/o/introspect/`).
        endpoint: req.original_uri().path().to_string(),
    };
    if assertion.is_some() || assertion_type.is_some() {
        if req.headers().contains_key(header::AUTHORIZATION) || form_secret.is_some() {
            return Err(Error::invalid_request("use one client authentication method, not two"));
        }
        if assertion_type != Some(assertion::ASSERTION_TYPE) {
            return Err(Error::invalid_client());
        }
        let assertion = assertion.ok_or_else(|| Error::invalid_request("client_assertion is missing"))?;
        let client_id = assertion::claimed_client(assertion).ok_or_else(Error::invalid_client)?;
        if form_client_id.is_some_and(|id| id != client_id) {
            return Err(Error::invalid_request(
                "client_id differs from the client the assertion is for",
            ));
        }
        let mut found = credentials(client_id, None, AuthMethod::PrivateKeyJwt);
        found.assertion = Some(assertion.to_string());
        return Ok(found);
    }
    if let Some(value) = req.headers().get(header::AUTHORIZATION) {
        let (client_id, secret) = parse_basic(value.to_str().unwrap_or_default()).ok_or_else(Error::invalid_client)?;
        if form_secret.is_some() {
            return Err(Error::invalid_request("use one client authentication method, not two"));
        }
        if form_client_id.is_some_and(|id| id != client_id) {
            return Err(Error::invalid_request(
                "client_id differs from the authenticated client",
            ));
        }
        return Ok(credentials(client_id, Some(secret), AuthMethod::Basic));
    }
    match (form_client_id, form_secret) {
        (Some(id), Some(secret)) => Ok(credentials(id.into(), Some(secret.into()), AuthMethod::Post)),
        (Some(id), None) => Ok(credentials(id.into(), None, AuthMethod::None)),
        _ => Err(Error::invalid_client()),
    }
}

/// The token of an `Authorization: Bearer` header. `None` without the header or with another
/// scheme: RFC 6750 §3.1 counts "an unsupported authentication method" as no authentication
/// (401 without an error code). `invalid_request` for `Bearer` without a token.
pub(crate) fn bearer_token(req: &Request) -> Result<Option<String>, Error> {
    let Some(value) = req.headers().get(header::AUTHORIZATION) else {
        return Ok(None);
    };
    let value = value.to_str().unwrap_or_default().trim();
    let (scheme, token) = value.split_once(' ').unwrap_or((value, ""));
    if !scheme.eq_ignore_ascii_case("bearer") {
        return Ok(None);
    }
    match token.trim() {
        "" => Err(Error::invalid_request("the Bearer authorization has no token")),
        token => Ok(Some(token.to_string())),
    }
}

/// How an access token was presented.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TokenScheme {
    Bearer,
    /// With a DPoP proof of the key it is bound to (RFC 9449 §7.1).
    Dpop,
}

/// The access token of an `Authorization: Bearer` or `Authorization: DPoP` header, with its
/// scheme. `None` without the header or with another scheme; `invalid_request` for a scheme
/// without a token.
pub fn access_token(req: &Request) -> Result<Option<(TokenScheme, String)>, Error> {
    let Some(value) = req.headers().get(header::AUTHORIZATION) else {
        return Ok(None);
    };
    let value = value.to_str().unwrap_or_default().trim();
    let (scheme, token) = value.split_once(' ').unwrap_or((value, ""));
    let scheme = if scheme.eq_ignore_ascii_case("dpop") {
        TokenScheme::Dpop
    } else if scheme.eq_ignore_ascii_case("bearer") {
        TokenScheme::Bearer
    } else {
        return Ok(None);
    };
    match token.trim() {
        "" => Err(Error::invalid_request("the authorization header has no token")),
        token => Ok(Some((scheme, token.to_string()))),
    }
}

/// The DPoP side of a request: every `DPoP` header (a repeated one is refused by the core),
/// the method, and the URL as this server publishes it (issuer-based, as called: poem drops a
/// trailing slash from `uri()`, not from `original_uri()`).
pub(crate) fn proof_request(req: &Request, provider: &Provider) -> ProofRequest {
    ProofRequest {
        proofs: req
            .headers()
            .get_all("dpop")
            .iter()
            // A value that is not text cannot be a JWS: left for the core to refuse.
            .map(|v| v.to_str().unwrap_or_default().to_string())
            .collect(),
        method: req.method().as_str().to_string(),
        url: provider.url(req.original_uri().path()),
    }
}

/// `Basic base64(urlencode(id) ":" urlencode(secret))`.
pub fn parse_basic(value: &str) -> Option<(String, String)> {
    let (scheme, encoded) = value.trim().split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = String::from_utf8(STANDARD.decode(encoded.trim()).ok()?).ok()?;
    let (id, secret) = decoded.split_once(':')?;
    let unescape = |s: &str| {
        percent_decode_str(&s.replace('+', " "))
            .decode_utf8()
            .ok()
            .map(|c| c.into_owned())
    };
    let (id, secret) = (unescape(id)?, unescape(secret)?);
    // Credentials with a NUL character are nobody's (and could not be looked up in PostgreSQL).
    let nul = id.contains('\0') || secret.contains('\0');
    (!id.is_empty() && !nul).then_some((id, secret))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn basic_credentials_are_url_decoded() {
        let header = format!("Basic {}", STANDARD.encode("my%20app:s%3Acret"));
        assert_eq!(parse_basic(&header), Some(("my app".into(), "s:cret".into())));
        assert_eq!(parse_basic("Bearer abc"), None);
        let nul = format!("Basic {}", STANDARD.encode("a%00b:secret"));
        assert_eq!(parse_basic(&nul), None, "a NUL in the client id");
        assert_eq!(parse_basic("Basic !!!"), None);
    }
}
