//! `grant_type=authorization_code` (RFC 6749 §4.1.3, RFC 7636 §4.5-4.6).

use crate::oauth::dpop::Proof;
use crate::oauth::oidc::IdTokenInput;
use crate::oauth::refresh::first_refresh_token;
use crate::oauth::scope::Scope;
use crate::oauth::token::Tokens;
use crate::oauth::token::{TokenBinding, TokenResponse};
use crate::oauth::{now, pkce, secret_hash, Error, ErrorCode};
use crate::store::{
    ClientRecord, ClientType, CodeRecord, CurrentRefresh, GrantRecord, GrantRevocation, GrantType, Redemption,
    RefreshRecord,
};

impl Tokens {
    /// Exchanges a code for tokens. The code is spent by the first attempt, whatever its
    /// outcome; presenting it again revokes everything it produced.
    pub(super) async fn authorization_code_grant(
        &self,
        client: &ClientRecord,
        code: &str,
        redirect_uri: Option<&str>,
        code_verifier: Option<&str>,
        proof: Option<&Proof>,
        address: Option<&str>,
    ) -> Result<TokenResponse, Error> {
        let dpop_jkt = proof.map(|p| p.jkt.as_str());
        let record = match self.grants.redeem_code(&secret_hash(code)).await? {
            Redemption::Fresh(record) => record,
            Redemption::Replayed(record) => {
                // RFC 6749 §4.1.2: a code used twice has leaked; revoke what it produced.
                // The first exchange may not have written its grant yet: then a revoked one
                // is written in its place, and that exchange, finding it, cannot make it live.
                // The replay that revokes the grant is recorded; the others find it revoked.
                let first = match self.grants.revoke_grant_once(&record.grant_id).await? {
                    GrantRevocation::Revoked => true,
                    GrantRevocation::WasRevoked => false,
                    GrantRevocation::Unknown => {
                        let revoked = grant_of(&record, now(), true);
                        self.grants.insert_grant(&revoked).await?
                            || self.grants.revoke_grant_once(&record.grant_id).await? == GrantRevocation::Revoked
                    }
                };
                self.durability.durable().await?;
                if first {
                    let grant = grant_of(&record, now(), true);
                    self.record_leak(client, address, "code.replay", &grant).await;
                }
                return Err(Error::invalid_grant(
                    "the code was already used; tokens issued from it are revoked",
                ));
            }
            Redemption::Unknown => return Err(Error::invalid_grant("the code is invalid")),
        };
        // The code is spent from here on, whatever the outcome: a failed attempt must not
        // leave a stolen code usable.
        if record.client_id != client.client_id {
            return Err(Error::invalid_grant("the code was issued to another client"));
        }
        if record.expires_at <= now() {
            return Err(Error::invalid_grant("the code has expired"));
        }
        match redirect_uri {
            Some(uri) if uri != record.redirect_uri => {
                return Err(Error::invalid_grant(
                    "redirect_uri differs from the authorization request",
                ))
            }
            None if record.redirect_uri_given => return Err(Error::invalid_request("redirect_uri is missing")),
            _ => {}
        }
        match (&record.code_challenge, code_verifier) {
            (Some(challenge), Some(verifier)) => pkce::verify(verifier, challenge)?,
            (Some(_), None) => return Err(Error::invalid_grant("code_verifier is missing")),
            // RFC 9700 §4.8.2: a verifier without a challenge is a downgrade attempt.
            (None, Some(_)) => {
                return Err(Error::invalid_grant(
                    "code_verifier sent but the authorization request had no code_challenge",
                ))
            }
            (None, None) => {}
        }
        // RFC 9449 §10: a code bound to a key (`dpop_jkt`) needs a proof of that key.
        if let Some(bound) = &record.dpop_jkt {
            if dpop_jkt != Some(bound.as_str()) {
                return Err(Error::new(
                    ErrorCode::InvalidDpopProof,
                    "the code is bound to another DPoP key (dpop_jkt)",
                ));
            }
        }

        let issued_at = now();
        // A replay of this code may have got in first and written the grant revoked (see
        // above). Then this exchange still answers, as the one that redeemed the code, but
        // with tokens of the revoked grant: dead on arrival, like everything the code produced.
        let grant = grant_of(&record, issued_at, false);
        // The code was real: now the proof is spent (a made-up code spends nothing).
        self.dpop.spend_grant_proof(proof).await?;
        self.grants.insert_grant(&grant).await?;
        self.issue_user_tokens(client, &grant, record.nonce.as_deref(), issued_at, dpop_jkt)
            .await
    }

    /// What a grant a user gave is exchanged for (the authorization code and device code
    /// grants): an access token of the grant, an ID token when `openid` was granted, and a
    /// refresh token when the client may use the refresh token grant. Durable before it
    /// returns. With a DPoP proof (`dpop_jkt`: its key) the access token is bound to the key,
    /// and so is a public client's refresh token (RFC 9449 §5); a confidential client's is
    /// not, since it is already bound to the client's credentials.
    pub(super) async fn issue_user_tokens(
        &self,
        client: &ClientRecord,
        grant: &GrantRecord,
        nonce: Option<&str>,
        issued_at: i64,
        dpop_jkt: Option<&str>,
    ) -> Result<TokenResponse, Error> {
        let scope = Scope::parse(&grant.scope)?;
        let binding = TokenBinding::dpop(dpop_jkt);
        let access = self.mint_access_token(client, &grant.user_id, &scope, &grant.audience, Some(grant), &binding)?;
        let id_token = self
            .mint_id_token(IdTokenInput {
                client,
                user_id: &grant.user_id,
                scope: &scope,
                login: crate::oauth::acr::LoginClaims::of_grant(grant),
                nonce,
                access_token: &access.jwt,
            })
            .await?;
        let refresh_token = if client.grant_types.contains(&GrantType::RefreshToken) {
            let (token, family) = first_refresh_token();
            let refresh = RefreshRecord {
                grant_id: grant.grant_id.clone(),
                issued_at,
                expires_at: issued_at.saturating_add(self.refresh_token_ttl(client)),
                current: CurrentRefresh::First,
                dpop_jkt: dpop_jkt
                    .filter(|_| client.client_type == ClientType::Public)
                    .map(str::to_string),
            };
            self.grants.put_refresh(&family, &refresh).await?;
            Some(token)
        } else {
            None
        };
        self.durability.durable().await?;
        Ok(TokenResponse {
            access_token: access.jwt,
            token_type: binding.token_type(),
            expires_in: access.expires_in,
            refresh_token,
            scope: grant.scope.clone(),
            id_token,
            issued_token_type: None,
            dpop_nonce: None,
        })
    }
}

/// The grant a code turns into.
fn grant_of(record: &CodeRecord, created_at: i64, revoked: bool) -> GrantRecord {
    GrantRecord {
        grant_id: record.grant_id.clone(),
        client_id: record.client_id.clone(),
        user_id: record.user_id.clone(),
        scope: record.scope.clone(),
        audience: record.audience.clone(),
        auth_time: record.auth_time,
        created_at,
        revoked,
        amr: record.amr.clone(),
    }
}
