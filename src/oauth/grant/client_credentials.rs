//! `grant_type=client_credentials` (RFC 6749 §4.4): a confidential client acting for itself.

use crate::oauth::scope::Scope;
use crate::oauth::token::Tokens;
use crate::oauth::token::{TokenBinding, TokenResponse};
use crate::oauth::{Error, ErrorCode};
use crate::store::{ClientRecord, ClientType};

impl Tokens {
    /// Issues an access token whose `sub` is the client. No refresh token (RFC 6749 §4.4.3)
    /// and nothing stored: the grant costs one client lookup and one signature. With a DPoP
    /// proof (`dpop_jkt`: its key) the token is bound to the key.
    pub(super) fn client_credentials_grant(
        &self,
        client: &ClientRecord,
        scope: Option<&str>,
        resource: Option<&str>,
        dpop_jkt: Option<&str>,
    ) -> Result<TokenResponse, Error> {
        if client.client_type != ClientType::Confidential {
            return Err(Error::new(
                ErrorCode::UnauthorizedClient,
                "public clients cannot use client_credentials",
            ));
        }
        let scope = Scope::resolve(scope, &client.scopes, |t| {
            crate::oauth::scope::is_known(&self.config, t)
        })?;
        let audience = self.clients.resolve_audience(client, resource)?;
        let binding = TokenBinding::dpop(dpop_jkt);
        let access = self.mint_access_token(client, &client.client_id, &scope, &audience, None, &binding)?;
        Ok(TokenResponse {
            id_token: None,
            access_token: access.jwt,
            token_type: binding.token_type(),
            expires_in: access.expires_in,
            refresh_token: None,
            scope: scope.to_string(),
            issued_token_type: None,
            dpop_nonce: None,
        })
    }
}
