//! Client metadata as RFC 7591 §2 names it: what dynamic registration receives and a Client ID
//! Metadata Document publishes, read into one shape before either applies its policy.

use super::switches::SwitchValues;

/// Client metadata as a client sends it (RFC 7591 §2). Fields Tessera does not use
/// (`client_uri`, `logo_uri`, `contacts`, ...) are ignored, as §2 allows.
#[derive(Debug, Clone, Default)]
pub struct ClientMetadata {
    pub redirect_uris: Vec<String>,
    pub token_endpoint_auth_method: Option<String>,
    pub grant_types: Option<Vec<String>>,
    pub response_types: Option<Vec<String>>,
    pub client_name: Option<String>,
    pub scope: Option<String>,
    pub post_logout_redirect_uris: Vec<String>,
    pub id_token_signed_response_alg: Option<String>,
    pub software_statement: Option<String>,
    pub jwks: Option<serde_json::Value>,
    pub jwks_uri: Option<String>,
    /// The self-service switches ([`SwitchValues`]: RFC 9449's `dpop_bound_access_tokens`,
    /// RFC 9126's `require_pushed_authorization_requests`, ...); those not given are off.
    pub switches: SwitchValues,
    /// Tessera's token exchange policy (RFC 8693 defines none), see [`TokenExchangePolicy`].
    pub token_exchange_audiences: Vec<String>,
    pub token_exchange_subject_audiences: Vec<String>,
    pub token_exchange_require_actor: Option<bool>,
}

impl ClientMetadata {
    /// Reads client metadata from a JSON document (a Client ID Metadata Document): the
    /// fields Tessera uses, each of its RFC 7591 type; other fields are ignored.
    pub(crate) fn from_document(document: &serde_json::Value) -> Result<ClientMetadata, String> {
        let string = |name: &str| match document.get(name) {
            None | Some(serde_json::Value::Null) => Ok(None),
            Some(serde_json::Value::String(s)) => Ok(Some(s.clone())),
            Some(_) => Err(format!("{name} must be a string")),
        };
        let strings = |name: &str| match document.get(name) {
            None | Some(serde_json::Value::Null) => Ok(None),
            Some(value) => serde_json::from_value::<Vec<String>>(value.clone())
                .map(Some)
                .map_err(|_| format!("{name} must be an array of strings")),
        };
        let boolean = |name: &str| match document.get(name) {
            None | Some(serde_json::Value::Null) => Ok(None),
            Some(serde_json::Value::Bool(b)) => Ok(Some(*b)),
            Some(_) => Err(format!("{name} must be true or false")),
        };
        let jwks = match document.get("jwks") {
            None | Some(serde_json::Value::Null) => None,
            Some(value) if value.is_object() => Some(value.clone()),
            Some(_) => return Err("jwks must be an object".into()),
        };
        Ok(ClientMetadata {
            redirect_uris: strings("redirect_uris")?.unwrap_or_default(),
            token_endpoint_auth_method: string("token_endpoint_auth_method")?,
            grant_types: strings("grant_types")?,
            response_types: strings("response_types")?,
            client_name: string("client_name")?,
            scope: string("scope")?,
            post_logout_redirect_uris: strings("post_logout_redirect_uris")?.unwrap_or_default(),
            id_token_signed_response_alg: string("id_token_signed_response_alg")?,
            software_statement: string("software_statement")?,
            jwks,
            jwks_uri: string("jwks_uri")?,
            switches: SwitchValues::read(|switch| match switch.offered(false) {
                true => boolean(switch.name),
                false => Ok(None),
            })?,
            token_exchange_audiences: strings("token_exchange_audiences")?.unwrap_or_default(),
            token_exchange_subject_audiences: strings("token_exchange_subject_audiences")?.unwrap_or_default(),
            token_exchange_require_actor: boolean("token_exchange_require_actor")?,
        })
    }
}
