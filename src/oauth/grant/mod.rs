//! The token endpoint's logic (RFC 6749 §3.2, §5): the request, and one module per `grant_type`.

pub mod authorization_code;
pub mod client_credentials;
pub mod device_code;
pub mod refresh_token;
pub mod token_exchange;

use self::token_exchange::ExchangeRequest;
use super::client::catalogue;
use super::client::ClientCredentials;
use super::dpop::ProofRequest;
use super::token::TokenResponse;
use super::{Error, ErrorCode};
use crate::oauth::token::Tokens;
use crate::store::{ClientRecord, GrantType};

/// The token request's form parameters as they arrive (client credentials travel
/// separately); [`TokenRequest::parse`] turns them into a [`GrantRequest`].
#[derive(Debug, Default, Clone)]
pub struct TokenRequest {
    pub grant_type: Option<String>,
    pub code: Option<String>,
    pub redirect_uri: Option<String>,
    pub code_verifier: Option<String>,
    pub refresh_token: Option<String>,
    pub scope: Option<String>,
    pub resource: Option<String>,
    pub device_code: Option<String>,
    pub subject_token: Option<String>,
    pub subject_token_type: Option<String>,
    pub actor_token: Option<String>,
    pub actor_token_type: Option<String>,
    pub requested_token_type: Option<String>,
    pub audience: Option<String>,
}

/// A token request, one variant per grant type, with the parameters that grant reads
/// (required ones present). Parameters a grant does not use are ignored (RFC 6749 §3.2).
#[derive(Debug, Clone)]
pub enum GrantRequest {
    /// RFC 6749 §4.1.3, RFC 7636 §4.5.
    AuthorizationCode {
        code: String,
        redirect_uri: Option<String>,
        code_verifier: Option<String>,
    },
    /// RFC 6749 §4.4.2, RFC 8707 §2.2.
    ClientCredentials {
        scope: Option<String>,
        resource: Option<String>,
    },
    /// RFC 6749 §6.
    RefreshToken {
        refresh_token: String,
        scope: Option<String>,
    },
    /// RFC 8628 §3.4.
    DeviceCode { device_code: String },
    /// RFC 8693 §2.1.
    TokenExchange(ExchangeRequest),
}

impl GrantRequest {
    /// The client setting that allows this grant.
    pub fn grant_type(&self) -> GrantType {
        match self {
            GrantRequest::AuthorizationCode { .. } => GrantType::AuthorizationCode,
            GrantRequest::ClientCredentials { .. } => GrantType::ClientCredentials,
            GrantRequest::RefreshToken { .. } => GrantType::RefreshToken,
            GrantRequest::DeviceCode { .. } => GrantType::DeviceCode,
            GrantRequest::TokenExchange(_) => GrantType::TokenExchange,
        }
    }
}

impl TokenRequest {
    /// Picks the grant and checks that its required parameters are there.
    pub fn parse(self) -> Result<GrantRequest, Error> {
        match self.grant_type.as_deref() {
            None => Err(Error::invalid_request("grant_type is missing")),
            Some("authorization_code") => Ok(GrantRequest::AuthorizationCode {
                code: required(self.code, "code")?,
                redirect_uri: self.redirect_uri,
                code_verifier: self.code_verifier,
            }),
            Some("client_credentials") => Ok(GrantRequest::ClientCredentials {
                scope: self.scope,
                resource: self.resource,
            }),
            Some("refresh_token") => Ok(GrantRequest::RefreshToken {
                refresh_token: required(self.refresh_token, "refresh_token")?,
                scope: self.scope,
            }),
            Some(catalogue::DEVICE_CODE) => Ok(GrantRequest::DeviceCode {
                device_code: required(self.device_code, "device_code")?,
            }),
            Some(catalogue::TOKEN_EXCHANGE) => Ok(GrantRequest::TokenExchange(ExchangeRequest {
                subject_token: required(self.subject_token, "subject_token")?,
                subject_token_type: required(self.subject_token_type, "subject_token_type")?,
                actor_token: self.actor_token,
                actor_token_type: self.actor_token_type,
                requested_token_type: self.requested_token_type,
                audience: self.audience,
                resource: self.resource,
                scope: self.scope,
            })),
            Some(_) => Err(Error::new(
                ErrorCode::UnsupportedGrantType,
                "this grant_type is not supported",
            )),
        }
    }
}

impl Tokens {
    /// Runs a token request: parses it into its grant, authenticates the client, checks that
    /// the client may use the grant, checks the DPoP proof if there is one (RFC 9449 §5: for
    /// every grant, here), and hands over to the grant's module with the proof's key.
    pub async fn token(
        &self,
        credentials: &ClientCredentials,
        request: TokenRequest,
        dpop: &ProofRequest,
    ) -> Result<TokenResponse, Error> {
        let request = request.parse()?;
        let client = self.clients.authenticate_client(credentials).await?;
        self.client_rate
            .check(&credentials.rate_key(&client))
            .map_err(Error::rate_limited)?;
        let grant = request.grant_type();
        ensure_grant_allowed(&client, grant)?;
        // Only grants that can return an ID token need a key for this client's algorithm.
        if !matches!(grant, GrantType::ClientCredentials | GrantType::TokenExchange) {
            self.ensure_id_token_key(&client)?;
        }
        // Verified here; its jti is spent by the grant once the request is known good.
        let proof = self.dpop.token_request_proof(&client, dpop).await?;
        let proof = proof.as_ref();
        let issued = match request {
            GrantRequest::AuthorizationCode {
                code,
                redirect_uri,
                code_verifier,
            } => {
                let from = credentials.address.as_deref();
                self.authorization_code_grant(
                    &client,
                    &code,
                    redirect_uri.as_deref(),
                    code_verifier.as_deref(),
                    proof,
                    from,
                )
                .await
            }
            // The client authenticated: its proof is spent at once.
            GrantRequest::ClientCredentials { scope, resource } => {
                let jkt = self.dpop.spend_grant_proof(proof).await?;
                self.client_credentials_grant(&client, scope.as_deref(), resource.as_deref(), jkt)
            }
            GrantRequest::RefreshToken { refresh_token, scope } => {
                self.refresh_token_grant(
                    &client,
                    &refresh_token,
                    scope.as_deref(),
                    proof,
                    credentials.address.as_deref(),
                )
                .await
            }
            GrantRequest::DeviceCode { device_code } => self.device_code_grant(&client, &device_code, proof).await,
            GrantRequest::TokenExchange(request) => {
                let jkt = self.dpop.spend_grant_proof(proof).await?;
                self.token_exchange_grant(&client, request, jkt).await
            }
        }?;
        // Only for a request with a proof: a client without DPoP has no use for a nonce.
        let issued = match proof {
            Some(_) => TokenResponse {
                dpop_nonce: self.dpop.next_dpop_nonce(&client).await,
                ..issued
            },
            None => issued,
        };
        if client.first_used_at.is_none() {
            // Once per client: a registered client that is used is never purged as unused.
            self.clients.mark_used(&client.client_id, super::now()).await?;
        }
        self.metrics.token_issued(catalogue::wire(grant));
        Ok(issued)
    }
}

fn ensure_grant_allowed(client: &ClientRecord, grant: GrantType) -> Result<(), Error> {
    if client.grant_types.contains(&grant) {
        Ok(())
    } else {
        Err(Error::new(
            ErrorCode::UnauthorizedClient,
            format!("this client may not use the {} grant", catalogue::wire(grant)),
        ))
    }
}

/// A required parameter: present and not empty.
fn required(value: Option<String>, name: &str) -> Result<String, Error> {
    value
        .filter(|v| !v.is_empty())
        .ok_or_else(|| Error::invalid_request(format!("{name} is missing")))
}
