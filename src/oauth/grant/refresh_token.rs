//! `grant_type=refresh_token` (RFC 6749 §6) with rotation and reuse detection (RFC 9700 §4.14.2).

use crate::oauth::dpop::{invalid_proof, Proof};
use crate::oauth::oidc::IdTokenInput;
use crate::oauth::refresh::PresentedRefresh;
use crate::oauth::scope::Scope;
use crate::oauth::token::Tokens;
use crate::oauth::token::{TokenBinding, TokenResponse};
use crate::oauth::{now, Error, ErrorCode};
use crate::store::{ClientRecord, RefreshOutcome, RefreshRefusal, RefreshSuccessor, RefreshUse};

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
        let used = RefreshUse {
            client_id: &client.client_id,
            now: now(),
            dpop_jkt,
        };
        // A narrower scope, or a proof, is checked before anything is spent: the family is read
        // first. Otherwise the store checks the family as it rotates it (one round trip where it
        // can); either way the checks are `RefreshUse::check`'s, made before rotating, so that
        // another client, or a thief without the token's DPoP key, cannot spend a stolen token
        // (and so revoke its family).
        let narrowed = if requested_scope.is_some() || proof.is_some() {
            let (current, grant) = self
                .grants
                .get_refresh_and_grant(&presented.family)
                .await?
                .ok_or_else(invalid)?;
            let grant = used.check(&current, grant).map_err(refused)?;
            let narrowed = match requested_scope {
                Some(requested) => Some(narrow(requested, &grant.scope)?),
                None => None,
            };
            // The token is real and its binding holds: now the proof is spent (before rotating,
            // so a replayed proof cannot rotate it).
            self.dpop.spend_grant_proof(proof).await?;
            narrowed
        } else {
            None
        };
        let (new_token, new_hash) = presented.successor();
        let issued_at = now();
        let next = RefreshSuccessor {
            token: new_hash,
            issued_at,
            expires_at: issued_at.saturating_add(self.refresh_token_ttl(client)),
        };
        // Rotate first, sign after: the loser of a race, or a reused token, costs no signature.
        let grant = match self
            .grants
            .use_refresh(&presented.family, &presented.token, &used, &next)
            .await?
        {
            RefreshOutcome::Rotated(grant) => grant,
            RefreshOutcome::Refused(refusal) => return Err(refused(refusal)),
            RefreshOutcome::Spent(grant) => {
                // RFC 9700 §4.14.2: a spent token presented again has leaked; its whole family
                // (every token of the grant) is revoked. A token of the family that was never
                // handed out counts too: only a holder of one of its tokens knows the family.
                let revoked = self.grants.revoke_grant_once(&grant.grant_id).await?;
                self.durability.durable().await?;
                // Recorded once: by the request that revoked the family.
                if revoked == crate::store::GrantRevocation::Revoked {
                    self.record_leak(client, address, "refresh_token.reuse", &grant).await;
                }
                return Err(Error::invalid_grant(
                    "the refresh token was already used; its grant has been revoked",
                ));
            }
            RefreshOutcome::Unknown => return Err(invalid()),
        };
        let scope = match narrowed {
            Some(scope) => scope,
            None => Scope::parse(&grant.scope)?,
        };
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

/// The answer to a use of a refresh token its family refuses.
fn refused(refusal: RefreshRefusal) -> Error {
    match refusal {
        RefreshRefusal::GrantGone => Error::invalid_grant("the refresh token is invalid"),
        RefreshRefusal::OtherClient => Error::invalid_grant("the refresh token was issued to another client"),
        RefreshRefusal::Expired => Error::invalid_grant("the refresh token has expired"),
        // RFC 9449 §5: a bound refresh token is used with a proof of its key.
        RefreshRefusal::ProofMissing => {
            invalid_proof("the refresh token is bound to a DPoP key; send a proof made with it")
        }
        RefreshRefusal::OtherKey => Error::invalid_grant("the refresh token is bound to another DPoP key"),
    }
}

/// RFC 6749 §6: the new access token may carry less scope than the grant, never more.
fn narrow(requested: &str, granted: &str) -> Result<Scope, Error> {
    let granted = Scope::parse(granted)?;
    let requested = Scope::parse(requested)?;
    if !requested.tokens().all(|t| granted.tokens().any(|g| g == t)) {
        return Err(Error::new(
            ErrorCode::InvalidScope,
            "scope exceeds what was originally granted",
        ));
    }
    Ok(requested)
}
