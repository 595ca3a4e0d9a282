//! Access-token claims (RFC 9068) and the token response (RFC 6749 §5.1).

use serde::Serialize;

use super::dpop::{invalid_proof, KeyBudget, ProofRequest};
use super::scope::Scope;
use std::sync::Arc;

use super::audit::Audit;
use super::client::Clients;
use super::dpop::Dpop;
use super::{now, random_token, Durability, Error, ErrorCode, Provider, Shared};
use crate::config::Config;
use crate::keys::Keys;
use crate::metrics::Metrics;
use crate::rate_limit::RateLimiter;
use crate::store::{ClientRecord, DeviceStore, GrantRecord, GrantStore, UserStore};

/// Tokens: the grants and what descends from them, minting and verifying access and ID
/// tokens, token exchange, introspection, revocation and UserInfo. Its fields are the `oauth`
/// module's, so that `grant/`, `oidc.rs`, `revoke.rs` and `introspect.rs` can hold their
/// parts of it.
pub(crate) struct Tokens {
    /// Codes, grants, refresh tokens and revoked access tokens.
    pub(in crate::oauth) grants: Arc<dyn GrantStore>,
    /// Device requests, polled with the device code.
    pub(in crate::oauth) devices: Arc<dyn DeviceStore>,
    /// UserInfo's claims, and a grant's name in the audit trail.
    pub(in crate::oauth) users: Arc<dyn UserStore>,
    pub(in crate::oauth) durability: Durability,
    /// Client authentication at the token, revocation and introspection endpoints, and
    /// whether a token's client still exists.
    pub(in crate::oauth) clients: Arc<Clients>,
    /// DPoP proofs of token requests, revocations and UserInfo calls.
    pub(in crate::oauth) dpop: Arc<Dpop>,
    pub(in crate::oauth) audit: Arc<Audit>,
    pub(in crate::oauth) keys: Arc<Keys>,
    pub(in crate::oauth) config: Arc<Config>,
    /// The issuer identifier, without a trailing slash.
    pub(in crate::oauth) issuer: String,
    /// The `aud` of access tokens when no `resource` is asked for.
    pub(in crate::oauth) default_audience: String,
    /// Tokens issued and signed, for `/metrics`.
    pub(in crate::oauth) metrics: Arc<Metrics>,
    /// Requests per authenticated client, shared with the PAR and device endpoints.
    pub(in crate::oauth) client_rate: Arc<RateLimiter>,
}

impl Tokens {
    pub(crate) fn new(shared: &Shared<'_>) -> Tokens {
        Tokens {
            grants: shared.store.clone(),
            devices: shared.store.clone(),
            users: shared.store.clone(),
            durability: shared.durability.clone(),
            clients: shared.clients.clone(),
            dpop: shared.dpop.clone(),
            audit: shared.audit.clone(),
            keys: shared.keys.clone(),
            config: shared.config.clone(),
            issuer: shared.issuer.to_string(),
            default_audience: shared.default_audience.to_string(),
            metrics: shared.metrics.clone(),
            client_rate: shared.client_rate.clone(),
        }
    }

    /// A leaked credential was presented (a used code, a spent refresh token) by `client` from
    /// `address`, and `grant` was revoked for it.
    pub(super) async fn record_leak(
        &self,
        client: &ClientRecord,
        address: Option<&str>,
        action: &str,
        grant: &GrantRecord,
    ) {
        let by = super::audit::Caller::client(client, address);
        let name = super::audit::grant_name(self.users.as_ref(), &self.clients, grant).await;
        let target = super::audit::Target {
            kind: "grant",
            id: &grant.grant_id,
            name: &name,
        };
        self.audit.record(&by, action, Some(target), "grant revoked").await;
    }
}

/// Tokens as the front offers them to other crates.
impl Provider {
    /// The claims of a valid access token (`Tokens::verify_access_token`).
    pub async fn verify_access_token(&self, token: &str) -> Result<serde_json::Value, Error> {
        self.tokens.verify_access_token(token).await
    }
}

/// The JWT access token's claims, as RFC 9068 §2.2 lists them.
#[derive(Debug, Serialize)]
pub struct AccessTokenClaims<'a> {
    pub iss: &'a str,
    /// The user, or the client itself for client_credentials.
    pub sub: &'a str,
    pub aud: &'a str,
    pub exp: i64,
    pub iat: i64,
    pub jti: &'a str,
    pub client_id: &'a str,
    pub scope: &'a str,
    /// The grant the token was issued in (absent for client_credentials). Introspection uses
    /// it to report the token inactive once its grant is revoked; it is an opaque id, not a
    /// credential.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub gid: Option<&'a str>,
    /// The key a DPoP-bound token is bound to (RFC 9449 §6.1: `{"jkt": thumbprint}`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cnf: Option<Confirmation<'a>>,
    /// Who acts for the subject in an exchanged token, with earlier actors nested (RFC 8693 §4.1).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub act: Option<&'a serde_json::Value>,
    /// When and how the user logged in, for a token of a user's grant (RFC 9068 §2.2.1:
    /// `auth_time`, `acr`, `amr`), so a resource server can ask for a stronger login (RFC 9470).
    #[serde(flatten)]
    pub login: Option<super::acr::LoginClaims<'a>>,
}

/// The `cnf` claim of a sender-constrained token (RFC 7800 §3.1, RFC 9449 §6.1).
#[derive(Debug, Serialize)]
pub struct Confirmation<'a> {
    /// The base64url SHA-256 JWK thumbprint (RFC 7638) of the DPoP key.
    pub jkt: &'a str,
}

/// What qualifies an access token beyond its client, subject, scope and audience.
#[derive(Debug, Default, Clone)]
pub struct TokenBinding {
    /// The thumbprint of the DPoP key the token is bound to (RFC 9449); `None`: a bearer token.
    pub jkt: Option<String>,
    /// For an exchanged token, the `act` claim (RFC 8693 §4.1).
    pub act: Option<serde_json::Value>,
}

impl TokenBinding {
    /// A token bound to the DPoP key with thumbprint `jkt`, if a proof came with the request.
    pub fn dpop(jkt: Option<&str>) -> TokenBinding {
        TokenBinding {
            jkt: jkt.map(str::to_string),
            act: None,
        }
    }

    /// The `token_type` of a token so bound: `DPoP` (RFC 9449 §5) or `Bearer` (RFC 6750).
    pub fn token_type(&self) -> &'static str {
        if self.jkt.is_some() {
            "DPoP"
        } else {
            "Bearer"
        }
    }
}

/// How an access token was presented to Tessera.
#[derive(Debug, Clone, Copy)]
pub enum Presentation<'a> {
    /// `Authorization: Bearer` (RFC 6750).
    Bearer,
    /// `Authorization: DPoP`, with the request's proof (RFC 9449 §7.1).
    Dpop(&'a ProofRequest),
}

/// A successful token response.
#[derive(Debug, Clone)]
pub struct TokenResponse {
    pub access_token: String,
    /// "Bearer" (RFC 6750), or "DPoP" for a token bound to a DPoP key (RFC 9449 §5).
    pub token_type: &'static str,
    pub expires_in: u64,
    pub refresh_token: Option<String>,
    pub scope: String,
    /// An OpenID Connect ID token, when the grant's scope includes `openid`.
    pub id_token: Option<String>,
    /// The type of `access_token` as token exchange names it (RFC 8693 §2.2.1); `None` for
    /// every other grant.
    pub issued_token_type: Option<&'static str>,
    /// A fresh server nonce for the client's next DPoP proof (RFC 9449 §8.2), when its proofs
    /// must carry one; set by [`Tokens::token`] for every grant.
    pub dpop_nonce: Option<String>,
}

/// A signed access token and the facts the caller needs to record it.
pub struct MintedAccessToken {
    pub jwt: String,
    pub expires_in: u64,
}

/// Everything an access token says beyond its client: what [`Tokens::mint_access_token`]
/// takes, plus the latest expiry an exchanged token may have.
pub struct AccessTokenContent<'a> {
    pub sub: &'a str,
    pub scope: &'a Scope,
    pub audience: &'a str,
    pub grant_id: Option<&'a str>,
    /// The user's login behind the grant, if there is a user.
    pub login: Option<super::acr::LoginClaims<'a>>,
    pub binding: &'a TokenBinding,
    /// The token expires by then at the latest (RFC 8693: an exchanged token never outlives
    /// its subject token); `None`: the client's access token lifetime alone decides.
    pub not_after: Option<i64>,
}

impl Tokens {
    /// Signs an access token for `sub` with the current signing key; a token of a user's
    /// `grant` names it and says how the user logged in.
    pub fn mint_access_token(
        &self,
        client: &ClientRecord,
        sub: &str,
        scope: &Scope,
        audience: &str,
        grant: Option<&GrantRecord>,
        binding: &TokenBinding,
    ) -> Result<MintedAccessToken, Error> {
        self.mint_access_token_with(
            client,
            &AccessTokenContent {
                sub,
                scope,
                audience,
                grant_id: grant.map(|g| g.grant_id.as_str()),
                login: grant.map(super::acr::LoginClaims::of_grant),
                binding,
                not_after: None,
            },
        )
    }

    /// Signs an access token with `content` with the current signing key; it lives for the
    /// client's access token lifetime, cut short at `content.not_after`.
    pub fn mint_access_token_with(
        &self,
        client: &ClientRecord,
        content: &AccessTokenContent<'_>,
    ) -> Result<MintedAccessToken, Error> {
        let iat = now();
        let mut expires_in = client
            .access_token_ttl
            .unwrap_or(self.config.access_token_ttl.as_secs());
        if let Some(not_after) = content.not_after {
            expires_in = expires_in.min(not_after.saturating_sub(iat).max(0) as u64);
        }
        let jti = random_token(16);
        let scope = content.scope.to_string();
        let claims = AccessTokenClaims {
            iss: &self.issuer,
            sub: content.sub,
            aud: content.audience,
            exp: iat.saturating_add(i64::try_from(expires_in).unwrap_or(i64::MAX)),
            iat,
            jti: &jti,
            client_id: &client.client_id,
            scope: &scope,
            gid: content.grant_id,
            cnf: content.binding.jkt.as_deref().map(|jkt| Confirmation { jkt }),
            act: content.binding.act.as_ref(),
            login: content.login,
        };
        let jwt = self.keys.current().sign_jwt("at+jwt", &claims)?;
        self.metrics.token_signed("access_token");
        Ok(MintedAccessToken { jwt, expires_in })
    }

    /// Checks a bearer access token presented to Tessera itself (UserInfo, the admin API):
    /// signed by a published key, `typ` at+jwt, ours, unexpired, issued for this server (not
    /// for another resource), and neither it nor its grant revoked. Returns its claims; any
    /// failure is `invalid_token` (RFC 6750 §3.1). A DPoP-bound token is refused: its holder
    /// must prove the key ([`Tokens::verify_presented_token`]).
    pub async fn verify_access_token(&self, token: &str) -> Result<serde_json::Value, Error> {
        self.verify_presented_token(token, Presentation::Bearer).await
    }

    /// [`Tokens::verify_access_token`] for a token presented as `presented`: a DPoP-bound
    /// token only with the DPoP scheme and a proof of its key whose `ath` is the token's hash
    /// (RFC 9449 §7), a bearer token only as Bearer. A failed proof is `invalid_dpop_proof`
    /// (or `use_dpop_nonce`); a token sent with the wrong scheme is `invalid_token`.
    pub async fn verify_presented_token(
        &self,
        token: &str,
        presented: Presentation<'_>,
    ) -> Result<serde_json::Value, Error> {
        let claims = self.verify_token_itself(token).await?;
        let invalid = |why: &str| Error::new(ErrorCode::InvalidToken, why);
        match (presented, claims["cnf"]["jkt"].as_str()) {
            (Presentation::Bearer, None) => {}
            (Presentation::Bearer, Some(_)) => {
                return Err(invalid(
                    "the access token is DPoP-bound: send it with the DPoP scheme and a proof",
                ))
            }
            (Presentation::Dpop(_), None) => {
                return Err(invalid("the access token is not DPoP-bound: send it as Bearer"))
            }
            (Presentation::Dpop(request), Some(jkt)) => {
                let proof = self
                    .dpop
                    .check_proof(request, Some(token), KeyBudget::PerKey)
                    .await?
                    .ok_or_else(|| invalid_proof("a DPoP proof is required with a DPoP-bound token"))?;
                if proof.jkt != jkt {
                    return Err(invalid_proof("the proof is made with another key than the token's"));
                }
            }
        }
        Ok(claims)
    }

    async fn verify_token_itself(&self, token: &str) -> Result<serde_json::Value, Error> {
        let invalid = |why: &str| Error::new(ErrorCode::InvalidToken, why);
        let claims = self
            .keys
            .current()
            .verify_jwt(token, "at+jwt", &self.issuer)
            .ok_or_else(|| invalid("the access token is invalid or expired"))?;
        let audience = claims["aud"].as_str().unwrap_or_default();
        if audience != self.issuer && audience != self.default_audience {
            return Err(invalid("the access token is for another resource"));
        }
        if !self.access_token_live(&claims).await? {
            return Err(invalid("the access token was revoked"));
        }
        Ok(claims)
    }

    /// Whether a verified access token's claims are still good here: the token is not
    /// revoked, its grant (if any) is not revoked, and its client still exists. A deleted
    /// client's tokens (client_credentials ones have no grant) die with it.
    pub async fn access_token_live(&self, claims: &serde_json::Value) -> Result<bool, Error> {
        if self
            .grants
            .is_access_token_revoked(claims["jti"].as_str().unwrap_or_default())
            .await?
        {
            return Ok(false);
        }
        if let Some(grant_id) = claims["gid"].as_str() {
            if self.grants.get_grant(grant_id).await?.is_none_or(|g| g.revoked) {
                return Ok(false);
            }
        }
        let client_id = claims["client_id"].as_str().unwrap_or_default();
        self.clients.client_exists(client_id).await
    }

    pub fn refresh_token_ttl(&self, client: &ClientRecord) -> i64 {
        let ttl = client
            .refresh_token_ttl
            .unwrap_or(self.config.refresh_token_ttl.as_secs());
        i64::try_from(ttl).unwrap_or(i64::MAX)
    }
}
