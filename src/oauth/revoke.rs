//! Token revocation (RFC 7009). A public client's token bound to a DPoP key (RFC 9449) is
//! revoked only with a proof of that key: anyone may name a public client, so without the
//! proof a thief holding the token (useless to them without the key) could still revoke its
//! owner's whole grant.

use super::client::ClientCredentials;
use super::dpop::{require_proof_of_key, KeyBudget, ProofRequest};
use super::refresh::PresentedRefresh;
use super::{Error, ErrorCode};
use crate::oauth::token::Tokens;
use crate::store::{ClientRecord, ClientType};

impl Tokens {
    /// Revokes a refresh token (and with it its whole grant, RFC 7009 §2.1) or an access
    /// token. Unknown tokens, and tokens of other clients, are answered like success so the
    /// endpoint cannot be used to probe for valid tokens (RFC 7009 §2.2).
    pub async fn revoke(
        &self,
        credentials: &ClientCredentials,
        token: Option<&str>,
        hint: Option<&str>,
        proofs: &ProofRequest,
    ) -> Result<(), Error> {
        let client = self.clients.authenticate_client(credentials).await?;
        let token = token
            .filter(|t| !t.is_empty())
            .ok_or_else(|| Error::invalid_request("token is missing"))?;
        // The hint only says where to look first (RFC 7009 §2.1) and both lookups are cheap,
        // so both kinds are always tried; an unknown hint is still refused.
        if !matches!(hint, None | Some("refresh_token") | Some("access_token")) {
            let description = "token_type_hint must be access_token or refresh_token";
            return Err(Error::new(ErrorCode::UnsupportedTokenType, description));
        }
        let revoked =
            self.revoke_refresh(&client, token, proofs).await? || self.revoke_access(&client, token, proofs).await?;
        if revoked {
            self.durability.durable().await?;
        }
        Ok(())
    }

    async fn revoke_refresh(&self, client: &ClientRecord, token: &str, proofs: &ProofRequest) -> Result<bool, Error> {
        // Any token of the family, spent or not, revokes it: its holder held one of its tokens.
        let Some(presented) = PresentedRefresh::parse(token) else {
            return Ok(false);
        };
        let Some((record, grant)) = self.grants.get_refresh_and_grant(&presented.family).await? else {
            return Ok(false);
        };
        match grant {
            // A revoked grant has nothing left to revoke: no proof is spent on it.
            Some(grant) if grant.revoked => Ok(false),
            Some(grant) if grant.client_id == client.client_id => {
                self.check_revocation_proof(client, record.dpop_jkt.as_deref(), proofs, "the refresh token")
                    .await?;
                Ok(self.grants.revoke_grant(&grant.grant_id).await?)
            }
            _ => Ok(false),
        }
    }

    async fn revoke_access(&self, client: &ClientRecord, token: &str, proofs: &ProofRequest) -> Result<bool, Error> {
        let Some(claims) = self.keys.current().verify_jwt(token, "at+jwt", &self.issuer) else {
            return Ok(false);
        };
        if claims["client_id"].as_str() != Some(client.client_id.as_str()) {
            return Ok(false);
        }
        let (Some(jti), Some(exp)) = (claims["jti"].as_str(), claims["exp"].as_i64()) else {
            return Ok(false);
        };
        self.check_revocation_proof(client, claims["cnf"]["jkt"].as_str(), proofs, "the access token")
            .await?;
        self.grants.revoke_access_token(jti, exp).await?;
        Ok(true)
    }

    /// A public client's bound token needs a proof of its key (a confidential client's
    /// authentication is its own proof). The proof is checked (and its `jti` spent) only then.
    async fn check_revocation_proof(
        &self,
        client: &ClientRecord,
        bound: Option<&str>,
        proofs: &ProofRequest,
        what: &str,
    ) -> Result<(), Error> {
        if bound.is_none() || client.client_type != ClientType::Public {
            return Ok(());
        }
        let proof = self.dpop.check_proof(proofs, None, KeyBudget::PerKey).await?;
        require_proof_of_key(bound, proof.as_ref().map(|p| p.jkt.as_str()), what)
    }
}
