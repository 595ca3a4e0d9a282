//! The poem side of resource-server verification: an extractor that hands a handler the
//! verified claims, RFC 6750 §3 error responses, and RFC 9728 protected resource metadata.
//!
//! `examples/resource_server.rs` is a complete server built on it:
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

use super::{AccessClaims, Verifier};

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
}

impl ProtectedResource {
    /// The RFC 9728 §2 metadata document.
    pub fn metadata(&self) -> serde_json::Value {
        json!({
            "resource": self.resource,
            "authorization_servers": [self.issuer],
            "scopes_supported": self.scopes_supported,
            "bearer_methods_supported": ["header"],
        })
    }

    fn challenge(&self, error: Option<(&str, &str)>, scope: Option<&str>) -> String {
        let mut challenge = format!(
            "Bearer realm=\"{}\", resource_metadata=\"{}\"",
            self.resource, self.metadata_url
        );
        if let Some((code, description)) = error {
            challenge.push_str(&format!(
                ", error=\"{code}\", error_description=\"{}\"",
                description.replace('"', "'")
            ));
        }
        if let Some(scope) = scope {
            challenge.push_str(&format!(", scope=\"{scope}\""));
        }
        challenge
    }

    fn error(&self, status: StatusCode, error: Option<(&str, &str)>, scope: Option<&str>) -> poem::Error {
        let body = match error {
            Some((code, description)) => json!({"error": code, "error_description": description}).to_string(),
            None => String::new(),
        };
        let response = Response::builder()
            .status(status)
            .header(header::WWW_AUTHENTICATE, self.challenge(error, scope))
            .content_type("application/json")
            .body(body);
        poem::Error::from_response(response)
    }
}

/// The verified claims of the request's bearer token. Extracting it answers 401 with
/// `WWW-Authenticate: Bearer` when the token is missing (RFC 6750 §3.1: no error code) or
/// invalid (`invalid_token`).
pub struct Bearer(pub AccessClaims);

impl<'a> FromRequest<'a> for Bearer {
    async fn from_request(req: &'a Request, _body: &mut RequestBody) -> poem::Result<Self> {
        let resource = req
            .data::<Arc<ProtectedResource>>()
            .ok_or_else(|| poem::Error::from_string("no ProtectedResource data", StatusCode::INTERNAL_SERVER_ERROR))?;
        let Some(value) = req.headers().get(header::AUTHORIZATION) else {
            return Err(resource.error(StatusCode::UNAUTHORIZED, None, None));
        };
        let token = value
            .to_str()
            .ok()
            .and_then(|v| v.split_once(' '))
            .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
            .map(|(_, token)| token.trim());
        let Some(token) = token else {
            let description = "use the Bearer scheme";
            return Err(resource.error(StatusCode::UNAUTHORIZED, Some(("invalid_request", description)), None));
        };
        match resource.verifier.verify(token).await {
            Ok(claims) => Ok(Bearer(claims)),
            Err(e) => Err(resource.error(StatusCode::UNAUTHORIZED, Some(("invalid_token", &e.to_string())), None)),
        }
    }
}

/// 403 `insufficient_scope` naming the scope needed (RFC 6750 §3.1), unless `claims` has it.
pub fn require_scope(resource: &ProtectedResource, claims: &AccessClaims, scope: &str) -> poem::Result<()> {
    if claims.has_scope(scope) {
        return Ok(());
    }
    let description = format!("this request needs the {scope} scope");
    Err(resource.error(
        StatusCode::FORBIDDEN,
        Some(("insufficient_scope", &description)),
        Some(scope),
    ))
}
