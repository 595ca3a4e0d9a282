//! The poem side of resource-server verification: an extractor that hands a handler the
//! verified claims of a bearer token (RFC 6750) or a DPoP-bound one with its proof (RFC 9449
//! §7), RFC 6750 §3 / RFC 9449 §7.1 error responses, and RFC 9728 protected resource metadata.
//!
//! `examples/resource_server.rs` (in this crate) is a complete server built on it:
//!
//! ```text
//! #[handler]
//! async fn create(Bearer(claims): Bearer, resource: Data<&Arc<ProtectedResource>>) -> poem::Result<String> {
//!     require_scope(&resource, &claims, "write")?;
//!     Ok("created".into())
//! }
//! // Route::new().at("/posts", post(create)).data(Arc::new(ProtectedResource { .. }))
//! ```

use std::sync::Arc;

use poem::http::{header, StatusCode};
use poem::{FromRequest, Request, RequestBody, Response};
use serde_json::json;

use crate::{AccessClaims, AuthenticationRequirement, DpopRequest, Verifier, VerifyError};

/// A protected resource: its verifier and how it describes itself in challenges.
pub struct ProtectedResource {
    pub verifier: Verifier,
    /// This resource's identifier (its `aud`), also the `resource` of its metadata.
    pub resource: String,
    /// The issuer that protects it.
    pub issuer: String,
    pub scopes_supported: Vec<String>,
    /// Where its RFC 9728 metadata is served, for the `resource_metadata` challenge parameter.
    pub metadata_url: String,
    /// The scheme and authority clients call it at (`https://api.example`): with the request's
    /// path, the URL a DPoP proof's `htu` must name.
    pub base_url: String,
}

impl ProtectedResource {
    /// The RFC 9728 §2 metadata document.
    pub fn metadata(&self) -> serde_json::Value {
        json!({
            "resource": self.resource,
            "authorization_servers": [self.issuer],
            "scopes_supported": self.scopes_supported,
            "bearer_methods_supported": ["header"],
            "dpop_signing_alg_values_supported": crate::dpop::SIGNING_ALGS,
        })
    }

    /// Both challenges (RFC 9449 §7.1), the error attributes on the one of the scheme at fault;
    /// `extra` are more attributes of that one (already quoted where they need it).
    fn challenge(&self, error: Option<(&str, &str)>, scope: Option<&str>, dpop: bool, extra: &str) -> String {
        let attributes = |error: Option<(&str, &str)>| {
            let mut out = String::new();
            if let Some((code, description)) = error {
                out.push_str(&format!(
                    ", error=\"{code}\", error_description=\"{}\"",
                    description.replace(['"', '\\'], "'")
                ));
            }
            if let Some(scope) = scope {
                out.push_str(&format!(", scope=\"{scope}\""));
            }
            if error.is_some() {
                out.push_str(extra);
            }
            out
        };
        let (bearer_error, dpop_error) = if dpop { (None, error) } else { (error, None) };
        format!(
            "Bearer realm=\"{}\", resource_metadata=\"{}\"{}, DPoP algs=\"{}\"{}",
            self.resource,
            self.metadata_url,
            attributes(bearer_error),
            crate::dpop::CHALLENGE_ALGS,
            if dpop { attributes(dpop_error) } else { String::new() },
        )
    }

    fn error(&self, status: StatusCode, error: Option<(&str, &str)>, scope: Option<&str>, dpop: bool) -> poem::Error {
        self.error_with(status, error, scope, dpop, "")
    }

    fn error_with(
        &self,
        status: StatusCode,
        error: Option<(&str, &str)>,
        scope: Option<&str>,
        dpop: bool,
        extra: &str,
    ) -> poem::Error {
        let body = match error {
            Some((code, description)) => json!({"error": code, "error_description": description}).to_string(),
            None => String::new(),
        };
        let response = Response::builder()
            .status(status)
            .header(header::WWW_AUTHENTICATE, self.challenge(error, scope, dpop, extra))
            .content_type("application/json")
            .body(body);
        poem::Error::from_response(response)
    }
}

/// The verified claims of the request's access token: `Authorization: Bearer` for a bearer
/// token, `Authorization: DPoP` with a `DPoP` proof header for a DPoP-bound one. Extracting it
/// answers 401 with `WWW-Authenticate: Bearer ..., DPoP algs="..."` when the token is missing
/// (RFC 6750 §3.1: no error code), invalid or sent with the wrong scheme (`invalid_token`), or
/// its proof fails (`invalid_dpop_proof`, RFC 9449 §7.1).
pub struct Bearer(pub AccessClaims);

impl<'a> FromRequest<'a> for Bearer {
    async fn from_request(req: &'a Request, _body: &mut RequestBody) -> poem::Result<Self> {
        let resource = req
            .data::<Arc<ProtectedResource>>()
            .ok_or_else(|| poem::Error::from_string("no ProtectedResource data", StatusCode::INTERNAL_SERVER_ERROR))?;
        let unauthorized = |code: &str, description: &str, dpop: bool| {
            resource.error(StatusCode::UNAUTHORIZED, Some((code, description)), None, dpop)
        };
        let Some(value) = req.headers().get(header::AUTHORIZATION) else {
            return Err(resource.error(StatusCode::UNAUTHORIZED, None, None, false));
        };
        let presented = value.to_str().ok().and_then(|v| v.split_once(' '));
        let (scheme, token) = match presented {
            Some((scheme, token)) if scheme.eq_ignore_ascii_case("bearer") => (Scheme::Bearer, token.trim()),
            Some((scheme, token)) if scheme.eq_ignore_ascii_case("dpop") => (Scheme::Dpop, token.trim()),
            _ => return Err(unauthorized("invalid_request", "use the Bearer or DPoP scheme", false)),
        };
        let verified = match scheme {
            Scheme::Bearer => resource.verifier.verify(token).await,
            Scheme::Dpop => {
                let proofs: Vec<&str> = req
                    .headers()
                    .get_all("dpop")
                    .iter()
                    .map(|v| v.to_str().unwrap_or_default())
                    .collect();
                if proofs.len() > 1 {
                    return Err(unauthorized(
                        "invalid_dpop_proof",
                        "send one DPoP header, not several",
                        true,
                    ));
                }
                // As called: poem's `uri()` loses a trailing slash, `original_uri()` does not.
                let url = format!("{}{}", resource.base_url, req.original_uri().path());
                let request = DpopRequest {
                    proof: proofs.first().copied(),
                    method: req.method().as_str(),
                    url: &url,
                };
                resource.verifier.verify_dpop(token, request).await
            }
        };
        match verified {
            Ok(claims) => Ok(Bearer(claims)),
            Err(e) => {
                let dpop = scheme == Scheme::Dpop || e == VerifyError::DpopBound;
                Err(unauthorized(e.code(), &e.to_string(), dpop))
            }
        }
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Scheme {
    Bearer,
    Dpop,
}

/// 403 `insufficient_scope` naming the scope needed (RFC 6750 §3.1), unless `claims` has it.
pub fn require_scope(resource: &ProtectedResource, claims: &AccessClaims, scope: &str) -> poem::Result<()> {
    if claims.has_scope(scope) {
        return Ok(());
    }
    let description = format!("this request needs the {scope} scope");
    let dpop = claims.all["cnf"]["jkt"].is_string();
    Err(resource.error(
        StatusCode::FORBIDDEN,
        Some(("insufficient_scope", &description)),
        Some(scope),
        dpop,
    ))
}

/// 401 `insufficient_user_authentication` (RFC 9470 §3) unless the token's login meets
/// `required`: the challenge names the `acr_values` and `max_age` a new authorization must ask
/// for, so the client can get a token from a stronger or more recent login and retry.
pub fn require_authentication(
    resource: &ProtectedResource,
    claims: &AccessClaims,
    required: &AuthenticationRequirement,
) -> poem::Result<()> {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or_default();
    if claims.meets(required, now) {
        return Ok(());
    }
    let mut extra = String::new();
    if !required.acr_values.is_empty() {
        extra.push_str(&format!(
            ", acr_values=\"{}\"",
            required.acr_values.join(" ").replace(['"', '\\'], "")
        ));
    }
    if let Some(max_age) = required.max_age {
        extra.push_str(&format!(", max_age={max_age}"));
    }
    let description = "a stronger or more recent login is needed for this request";
    let dpop = claims.all["cnf"]["jkt"].is_string();
    Err(resource.error_with(
        StatusCode::UNAUTHORIZED,
        Some(("insufficient_user_authentication", description)),
        None,
        dpop,
        &extra,
    ))
}
