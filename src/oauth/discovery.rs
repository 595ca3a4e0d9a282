//! Server metadata: one document that is both the RFC 8414 authorization server metadata and
//! the OpenID Provider metadata (OpenID Connect Discovery 1.0 §3, RP-Initiated Logout §2.1),
//! so the two can never disagree.

use super::client::assertion;
use super::client::catalogue::{AUTH_METHODS, GRANTS};
use super::{endpoints, Provider};
use crate::config::ClientDocumentsMode;

/// The metadata document's fields.
#[derive(Debug, Clone)]
pub struct ServerMetadata {
    pub issuer: String,
    pub authorization_endpoint: String,
    pub token_endpoint: String,
    pub userinfo_endpoint: String,
    pub jwks_uri: String,
    pub end_session_endpoint: String,
    /// Present when dynamic client registration is on.
    pub registration_endpoint: Option<String>,
    pub revocation_endpoint: String,
    pub introspection_endpoint: String,
    /// RFC 8628 §4.
    pub device_authorization_endpoint: String,
    /// RFC 9126 §5.
    pub pushed_authorization_request_endpoint: String,
    pub require_pushed_authorization_requests: bool,
    pub scopes_supported: Vec<String>,
    pub response_types_supported: Vec<String>,
    pub response_modes_supported: Vec<String>,
    pub grant_types_supported: Vec<String>,
    pub subject_types_supported: Vec<String>,
    pub id_token_signing_alg_values_supported: Vec<String>,
    pub claims_supported: Vec<String>,
    pub claim_types_supported: Vec<String>,
    pub prompt_values_supported: Vec<String>,
    /// The login levels apps may ask for with `acr_values` (weakest first).
    pub acr_values_supported: Vec<String>,
    pub token_endpoint_auth_methods_supported: Vec<String>,
    pub revocation_endpoint_auth_methods_supported: Vec<String>,
    pub introspection_endpoint_auth_methods_supported: Vec<String>,
    /// The algorithms of `private_key_jwt` assertions, at each endpoint alike.
    pub endpoint_auth_signing_alg_values_supported: Vec<String>,
    /// Client ids may be URLs of Client ID Metadata Documents.
    pub client_id_metadata_document_supported: bool,
    pub code_challenge_methods_supported: Vec<String>,
    /// RFC 9449 §5.1: the algorithms DPoP proofs may be signed with.
    pub dpop_signing_alg_values_supported: Vec<String>,
    pub authorization_response_iss_parameter_supported: bool,
    pub claims_parameter_supported: bool,
    pub request_parameter_supported: bool,
    pub request_uri_parameter_supported: bool,
    pub service_documentation: String,
}

fn strings(values: &[&str]) -> Vec<String> {
    values.iter().map(|s| s.to_string()).collect()
}

impl Provider {
    pub fn metadata(&self) -> ServerMetadata {
        ServerMetadata {
            issuer: self.issuer.clone(),
            authorization_endpoint: self.url(endpoints::AUTHORIZE),
            token_endpoint: self.url(endpoints::TOKEN),
            userinfo_endpoint: self.url(endpoints::USERINFO),
            jwks_uri: self.url(endpoints::JWKS),
            end_session_endpoint: self.url(endpoints::LOGOUT),
            registration_endpoint: self.clients.registration_endpoint(),
            revocation_endpoint: self.url(endpoints::REVOCATION),
            introspection_endpoint: self.url(endpoints::INTROSPECTION),
            device_authorization_endpoint: self.url(endpoints::DEVICE_AUTHORIZATION),
            pushed_authorization_request_endpoint: self.url(endpoints::PUSHED_AUTHORIZATION_REQUEST),
            require_pushed_authorization_requests: self.config.require_pushed_authorization_requests,
            scopes_supported: self.config.scopes.iter().map(|s| s.name.clone()).collect(),
            response_types_supported: strings(&["code"]),
            response_modes_supported: strings(&["query"]),
            // Every grant, always: whether a client may use one is its own setting.
            grant_types_supported: GRANTS.iter().map(|g| g.wire.to_string()).collect(),
            // `sub` is the user's id, the same for every client.
            subject_types_supported: strings(&["public"]),
            // What the current keyring can sign; RS256 is always there (Keyring::open_or_init).
            id_token_signing_alg_values_supported: self
                .keys
                .current()
                .algorithms()
                .iter()
                .map(|a| a.as_str().to_string())
                .collect(),
            claims_supported: super::oidc::claims_supported(),
            claim_types_supported: strings(&["normal"]),
            prompt_values_supported: strings(&["none", "login", "consent", "select_account"]),
            acr_values_supported: super::acr::Level::ALL.iter().map(|l| l.as_str().to_string()).collect(),
            token_endpoint_auth_methods_supported: AUTH_METHODS.iter().map(|m| m.wire.to_string()).collect(),
            revocation_endpoint_auth_methods_supported: AUTH_METHODS.iter().map(|m| m.wire.to_string()).collect(),
            introspection_endpoint_auth_methods_supported: AUTH_METHODS
                .iter()
                .filter(|m| m.introspects)
                .map(|m| m.wire.to_string())
                .collect(),
            endpoint_auth_signing_alg_values_supported: strings(&assertion::SIGNING_ALGS),
            client_id_metadata_document_supported: self.config.client_documents.mode != ClientDocumentsMode::Off,
            code_challenge_methods_supported: strings(&["S256"]),
            dpop_signing_alg_values_supported: strings(&super::dpop::SIGNING_ALGS),
            authorization_response_iss_parameter_supported: true,
            // For `acr` (Core §5.5.1.1); other requested claims are released by scope.
            claims_parameter_supported: true,
            request_parameter_supported: false,
            // Its default is true, so it must be said.
            request_uri_parameter_supported: false,
            service_documentation: self.url("/docs"),
        }
    }
}
