//! Token introspection (RFC 7662).

use serde_json::Value;

use super::client::ClientCredentials;
use super::refresh::PresentedRefresh;
use super::{now, Error};
use crate::oauth::token::Tokens;
use crate::store::{ClientRecord, ClientType};

/// What introspection reveals about a token (RFC 7662 §2.2). Inactive tokens reveal nothing.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Introspection {
    pub active: bool,
    /// `Bearer` or `DPoP` (RFC 9449 §6.2) for access tokens, `refresh_token` for refresh tokens.
    pub token_type: Option<String>,
    /// The thumbprint of the key a DPoP-bound token is bound to (`cnf.jkt`, RFC 9449 §6.2).
    pub cnf_jkt: Option<String>,
    pub scope: Option<String>,
    pub client_id: Option<String>,
    pub sub: Option<String>,
    pub aud: Option<String>,
    pub iss: Option<String>,
    pub exp: Option<i64>,
    pub iat: Option<i64>,
    pub jti: Option<String>,
}

fn claim(claims: &Value, name: &str) -> Option<String> {
    claims[name].as_str().map(str::to_string)
}

impl Tokens {
    /// Answers whether `token` is active and, if so, its claims. Only confidential clients may
    /// ask (RFC 7662 §2.1 requires the caller to be authorised), and each learns only about
    /// the tokens issued to it, unless the operator lists it in `introspection_clients` (a
    /// resource server) or it is an administration client: anyone may register a confidential
    /// client, and must not learn from it whose refresh token they hold (RFC 7662 §4). Any
    /// other token is answered `active: false`, like an unknown one.
    ///
    /// An access token is inactive once revoked, once its grant is revoked (refresh
    /// token reuse, a replayed code, revocation of its refresh token), once its client is
    /// deleted, or when it expires.
    pub async fn introspect(
        &self,
        credentials: &ClientCredentials,
        token: Option<&str>,
    ) -> Result<Introspection, Error> {
        let client = self.clients.authenticate_client(credentials).await?;
        self.client_rate
            .check(&credentials.rate_key(&client))
            .map_err(Error::rate_limited)?;
        if client.client_type != ClientType::Confidential {
            return Err(Error::invalid_client());
        }
        let token = token
            .filter(|t| !t.is_empty())
            .ok_or_else(|| Error::invalid_request("token is missing"))?;
        let inactive = Introspection::default();

        // An access token is a JWT; a refresh token is opaque and never holds a dot. Looking
        // at the shape first spares every access token a refresh-token lookup.
        if !token.contains('.') {
            let Some(presented) = PresentedRefresh::parse(token) else {
                return Ok(inactive);
            };
            let Some((record, grant)) = self.grants.get_refresh_and_grant(&presented.family).await? else {
                return Ok(inactive);
            };
            let Some(grant) = grant else {
                return Ok(inactive);
            };
            if !record.is_current(&presented.family, &presented.token)
                || record.expires_at <= now()
                || grant.revoked
                || !self.may_introspect(&client, &grant.client_id)
            {
                return Ok(inactive);
            }
            return Ok(Introspection {
                active: true,
                token_type: Some("refresh_token".into()),
                scope: Some(grant.scope),
                client_id: Some(grant.client_id),
                sub: Some(grant.user_id),
                aud: Some(grant.audience),
                iss: Some(self.issuer.clone()),
                iat: Some(record.issued_at),
                exp: Some(record.expires_at),
                jti: None,
                cnf_jkt: record.dpop_jkt,
            });
        }

        let Some(claims) = self.keys.current().verify_jwt(token, "at+jwt", &self.issuer) else {
            return Ok(inactive);
        };
        let jti = claims["jti"].as_str().unwrap_or_default().to_string();
        if !self.may_introspect(&client, claims["client_id"].as_str().unwrap_or_default()) {
            return Ok(inactive);
        }
        if !self.access_token_live(&claims).await? {
            return Ok(inactive);
        }
        let cnf_jkt = claims["cnf"]["jkt"].as_str().map(str::to_string);
        Ok(Introspection {
            active: true,
            token_type: Some(if cnf_jkt.is_some() { "DPoP" } else { "Bearer" }.into()),
            cnf_jkt,
            scope: claim(&claims, "scope"),
            client_id: claim(&claims, "client_id"),
            sub: claim(&claims, "sub"),
            aud: claim(&claims, "aud"),
            iss: claim(&claims, "iss"),
            exp: claims["exp"].as_i64(),
            iat: claims["iat"].as_i64(),
            jti: Some(jti),
        })
    }

    /// Whether `caller` may learn about a token issued to `issued_to`.
    fn may_introspect(&self, caller: &ClientRecord, issued_to: &str) -> bool {
        caller.client_id == issued_to || caller.admin || self.config.introspection_clients.contains(&caller.client_id)
    }
}
