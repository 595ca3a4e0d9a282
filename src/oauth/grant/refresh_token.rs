//! `grant_type=refresh_token` (RFC 6749 §6) with rotation and reuse detection (RFC 9700 §4.14.2).

use crate::oauth::dpop::{invalid_proof, Proof};
use crate::oauth::oidc::IdTokenInput;
use crate::oauth::refresh::PresentedRefresh;
use crate::oauth::scope::Scope;
use crate::oauth::token::Tokens;
use crate::oauth::token::{TokenBinding, TokenResponse};
use crate::oauth::{now, Error, ErrorCode};
use crate::store::{ClientRecord, CurrentRefresh, RefreshRecord, Rotation};

impl Tokens {
    /// Exchanges a refresh token for a new access token and a new refresh token. The old
    /// refresh token is spent; presenting it again revokes its whole grant. The new refresh
    /// token is durable before the response is returned.
    pub(super) async fn refresh_token_grant(
        &self,
        client: &ClientRecord,
        presented: &str,
        requested_scope: Option<&str>,
        proof: Option<&Proof>,
        address: Option<&str>,
    ) -> Result<TokenResponse, Error> {
        let dpop_jkt = proof.map(|p| p.jkt.as_str());
        let invalid = || Error::invalid_grant("the refresh token is invalid");
        let presented = PresentedRefresh::parse(presented).ok_or_else(invalid)?;
        let (current, grant) = self
            .grants
            .get_refresh_and_grant(&presented.family)
            .await?
            .ok_or_else(invalid)?;
        let grant = grant.filter(|grant| !grant.revoked).ok_or_else(invalid)?;
        // Checked before rotating, so another client presenting a stolen token cannot spend it.
        if grant.client_id != client.client_id {
            return Err(Error::invalid_grant("the refresh token was issued to another client"));
        }
        if current.expires_at <= now() {
            return Err(Error::invalid_grant("the refresh token has expired"));
        }
        // RFC 9449 §5: a bound refresh token is used with a proof of its key; checked before
        // rotating, so a stolen token cannot be spent (and its family revoked) without the key.
        match (&current.dpop_jkt, dpop_jkt) {
            (Some(_), None) => {
                return Err(invalid_proof(
                    "the refresh token is bound to a DPoP key; send a proof made with it",
                ))
            }
            (Some(bound), Some(jkt)) if bound != jkt => {
                return Err(Error::invalid_grant("the refresh token is bound to another DPoP key"))
            }
            _ => {}
        }
        let granted = Scope::parse(&grant.scope)?;
        // RFC 6749 §6: the new access token may carry less scope, never more.
        let scope = match requested_scope {
            Some(requested) => {
                let requested = Scope::parse(requested)?;
                if !requested.tokens().all(|t| granted.tokens().any(|g| g == t)) {
                    return Err(Error::new(
                        ErrorCode::InvalidScope,
                        "scope exceeds what was originally granted",
                    ));
                }
                requested
            }
            None => granted,
        };
        let (new_token, new_hash) = presented.successor();
        let issued_at = now();
        let next = RefreshRecord {
            grant_id: grant.grant_id.clone(),
            issued_at,
            expires_at: issued_at.saturating_add(self.refresh_token_ttl(client)),
            current: CurrentRefresh::Later(new_hash),
            // The family keeps its binding.
            dpop_jkt: current.dpop_jkt.clone(),
        };
        // The token is real and its binding holds: now the proof is spent (before rotating, so
        // a replayed proof cannot rotate it).
        self.dpop.spend_grant_proof(proof).await?;
        // Rotate first, sign after: the loser of a race, or a reused token, costs no signature.
        match self
            .grants
            .rotate_refresh(&presented.family, &presented.token, &next)
            .await?
        {
            Rotation::Rotated => {}
            Rotation::Spent(spent) => {
                // RFC 9700 §4.14.2: a spent token presented again has leaked; its whole family
                // (every token of the grant) is revoked. A token of the family that was never
                // handed out counts too: only a holder of one of its tokens knows the family.
                let revoked = self.grants.revoke_grant_once(&spent.grant_id).await?;
                self.durability.durable().await?;
                // Recorded once: by the request that revoked the family.
                if revoked == crate::store::GrantRevocation::Revoked {
                    self.record_leak(client, address, "refresh_token.reuse", &grant).await;
                }
                return Err(Error::invalid_grant(
                    "the refresh token was already used; its grant has been revoked",
                ));
            }
            Rotation::Unknown => return Err(invalid()),
        }
        // The new access token is bound to the proof's key, whether or not the refresh token is
        // (RFC 9449 §5: a confidential client's refresh token is not).
        let binding = TokenBinding::dpop(dpop_jkt);
        let access = self.mint_access_token(client, &grant.user_id, &scope, &grant.audience, Some(&grant), &binding)?;
        // OpenID Connect Core §12.2: the same subject, audience and auth_time, no nonce.
        let id_token = self
            .mint_id_token(IdTokenInput {
                client,
                user_id: &grant.user_id,
                scope: &scope,
                login: crate::oauth::acr::LoginClaims::of_grant(&grant),
                nonce: None,
                access_token: &access.jwt,
            })
            .await?;
        self.durability.durable().await?;
        Ok(TokenResponse {
            access_token: access.jwt,
            token_type: binding.token_type(),
            expires_in: access.expires_in,
            refresh_token: Some(new_token),
            scope: scope.to_string(),
            id_token,
            issued_token_type: None,
            dpop_nonce: None,
        })
    }
}
