//! Token revocation (RFC 7009).

use super::client::ClientCredentials;
use super::{secret_hash, Error, ErrorCode, Provider};

impl Provider {
    /// Revokes a refresh token (and with it its whole grant, RFC 7009 §2.1) or an access
    /// token. Unknown tokens, and tokens of other clients, are answered like success so the
    /// endpoint cannot be used to probe for valid tokens (RFC 7009 §2.2).
    pub async fn revoke(
        &self,
        credentials: &ClientCredentials,
        token: Option<&str>,
        hint: Option<&str>,
    ) -> Result<(), Error> {
        let client = self.authenticate_client(credentials).await?;
        let token = token
            .filter(|t| !t.is_empty())
            .ok_or_else(|| Error::invalid_request("token is missing"))?;
        // The hint only says where to look first (RFC 7009 §2.1) and both lookups are cheap,
        // so both kinds are always tried; an unknown hint is still refused.
        if !matches!(hint, None | Some("refresh_token") | Some("access_token")) {
            let description = "token_type_hint must be access_token or refresh_token";
            return Err(Error::new(ErrorCode::UnsupportedTokenType, description));
        }
        let revoked = self.revoke_refresh(&client.client_id, token).await?
            || self.revoke_access(&client.client_id, token).await?;
        if revoked {
            self.store.durable().await?;
        }
        Ok(())
    }

    async fn revoke_refresh(&self, client_id: &str, token: &str) -> Result<bool, Error> {
        let Some((_, grant)) = self.store.get_refresh_and_grant(&secret_hash(token)).await? else {
            return Ok(false);
        };
        match grant {
            Some(grant) if grant.client_id == client_id => Ok(self.store.revoke_grant(&grant.grant_id).await?),
            _ => Ok(false),
        }
    }

    async fn revoke_access(&self, client_id: &str, token: &str) -> Result<bool, Error> {
        let Some(claims) = self.keys.current().verify_jwt(token, "at+jwt", &self.issuer) else {
            return Ok(false);
        };
        if claims["client_id"].as_str() != Some(client_id) {
            return Ok(false);
        }
        let (Some(jti), Some(exp)) = (claims["jti"].as_str(), claims["exp"].as_i64()) else {
            return Ok(false);
        };
        self.store.revoke_access_token(jti, exp).await?;
        Ok(true)
    }
}
