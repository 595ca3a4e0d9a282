//! Authorization server metadata (RFC 8414 §2).

use super::Provider;

/// The metadata document's fields.
#[derive(Debug, Clone)]
pub struct ServerMetadata {
    pub issuer: String,
    pub authorization_endpoint: String,
    pub token_endpoint: String,
    pub jwks_uri: String,
    pub revocation_endpoint: String,
    pub introspection_endpoint: String,
    pub scopes_supported: Vec<String>,
    pub response_types_supported: Vec<String>,
    pub response_modes_supported: Vec<String>,
    pub grant_types_supported: Vec<String>,
    pub token_endpoint_auth_methods_supported: Vec<String>,
    pub revocation_endpoint_auth_methods_supported: Vec<String>,
    pub introspection_endpoint_auth_methods_supported: Vec<String>,
    pub code_challenge_methods_supported: Vec<String>,
    pub authorization_response_iss_parameter_supported: bool,
    pub service_documentation: String,
}

fn strings(values: &[&str]) -> Vec<String> {
    values.iter().map(|s| s.to_string()).collect()
}

impl Provider {
    pub fn metadata(&self) -> ServerMetadata {
        ServerMetadata {
            issuer: self.issuer.clone(),
            authorization_endpoint: self.url("/o/authorize/"),
            token_endpoint: self.url("/o/token/"),
            jwks_uri: self.url("/.well-known/jwks.json"),
            revocation_endpoint: self.url("/o/revoke_token/"),
            introspection_endpoint: self.url("/o/introspect/"),
            scopes_supported: self.config.scopes.iter().map(|s| s.name.clone()).collect(),
            response_types_supported: strings(&["code"]),
            response_modes_supported: strings(&["query"]),
            grant_types_supported: strings(&["authorization_code", "client_credentials", "refresh_token"]),
            token_endpoint_auth_methods_supported: strings(&["client_secret_basic", "client_secret_post", "none"]),
            revocation_endpoint_auth_methods_supported: strings(&["client_secret_basic", "client_secret_post", "none"]),
            introspection_endpoint_auth_methods_supported: strings(&["client_secret_basic", "client_secret_post"]),
            code_challenge_methods_supported: strings(&["S256"]),
            authorization_response_iss_parameter_supported: true,
            service_documentation: self.url("/docs"),
        }
    }
}
