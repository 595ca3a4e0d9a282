//! The token endpoint's logic (RFC 6749 §3.2, §5): the request, and one module per `grant_type`.

pub mod authorization_code;
pub mod client_credentials;
pub mod refresh_token;

use super::client::ClientCredentials;
use super::token::TokenResponse;
use super::{Error, ErrorCode, Provider};
use crate::store::{ClientRecord, GrantType};

/// The token request's form parameters (client credentials travel separately).
#[derive(Debug, Default, Clone)]
pub struct TokenRequest {
    pub grant_type: Option<String>,
    pub code: Option<String>,
    pub redirect_uri: Option<String>,
    pub code_verifier: Option<String>,
    pub refresh_token: Option<String>,
    pub scope: Option<String>,
    pub resource: Option<String>,
}

impl Provider {
    /// Runs a token request: picks the grant, authenticates the client, checks that the client
    /// may use the grant, and hands over to the grant's module.
    pub async fn token(&self, credentials: &ClientCredentials, request: TokenRequest) -> Result<TokenResponse, Error> {
        let grant = match request.grant_type.as_deref() {
            None => return Err(Error::invalid_request("grant_type is missing")),
            Some("authorization_code") => GrantType::AuthorizationCode,
            Some("client_credentials") => GrantType::ClientCredentials,
            Some("refresh_token") => GrantType::RefreshToken,
            Some(_) => {
                return Err(Error::new(
                    ErrorCode::UnsupportedGrantType,
                    "this grant_type is not supported",
                ))
            }
        };
        let client = self.authenticate_client(credentials).await?;
        self.client_rate
            .check(&credentials.rate_key(&client))
            .map_err(Error::rate_limited)?;
        ensure_grant_allowed(&client, grant)?;
        let issued = match grant {
            GrantType::AuthorizationCode => self.authorization_code_grant(&client, request).await,
            GrantType::ClientCredentials => self.client_credentials_grant(&client, request),
            GrantType::RefreshToken => self.refresh_token_grant(&client, request).await,
        }?;
        if client.first_used_at.is_none() {
            // Once per client: a registered client that is used is never purged as unused.
            self.store.mark_client_used(&client.client_id, super::now()).await?;
        }
        self.metrics.token_issued(grant.as_oauth_str());
        Ok(issued)
    }
}

fn ensure_grant_allowed(client: &ClientRecord, grant: GrantType) -> Result<(), Error> {
    if client.grant_types.contains(&grant) {
        Ok(())
    } else {
        Err(Error::new(
            ErrorCode::UnauthorizedClient,
            format!("this client may not use the {} grant", grant.as_oauth_str()),
        ))
    }
}

/// A required parameter.
fn required<'a>(value: &'a Option<String>, name: &str) -> Result<&'a str, Error> {
    value
        .as_deref()
        .filter(|v| !v.is_empty())
        .ok_or_else(|| Error::invalid_request(format!("{name} is missing")))
}
