//! OpenID Connect: ID tokens (Core §2, §3.1.3.6), the claims each scope releases (Core §5.4)
//! and the UserInfo endpoint's logic (Core §5.3).

use serde::Serialize;
use serde_json::{json, Map, Value};

use super::scope::Scope;
use super::{now, Error, ErrorCode};
use crate::keys::Algorithm;
use crate::oauth::token::Tokens;
use crate::store::{ClientRecord, UserRecord};

/// The scope that makes an authorization request an OpenID Connect one.
pub const OPENID: &str = "openid";

/// The longest `nonce` accepted; it is echoed in every ID token of the grant's first exchange.
pub const MAX_NONCE_LEN: usize = 512;

/// The user claims each standard scope releases (Core §5.4). `sub` is always released.
const PROFILE_CLAIMS: [&str; 10] = [
    "name",
    "given_name",
    "family_name",
    "nickname",
    "preferred_username",
    "picture",
    "website",
    "locale",
    "zoneinfo",
    "updated_at",
];
const EMAIL_CLAIMS: [&str; 2] = ["email", "email_verified"];

/// Every claim this server can release, for `claims_supported` in discovery.
pub fn claims_supported() -> Vec<String> {
    let registered = [
        "sub",
        "iss",
        "aud",
        "exp",
        "iat",
        "auth_time",
        "nonce",
        "at_hash",
        "amr",
        "acr",
    ];
    registered
        .into_iter()
        .chain(PROFILE_CLAIMS)
        .chain(EMAIL_CLAIMS)
        .map(str::to_string)
        .collect()
}

/// The user's claims that `scope` releases, without `sub`. Absent values are left out rather
/// than sent as null (Core §5.3.2).
pub fn user_claims(user: &UserRecord, scope: &Scope) -> Map<String, Value> {
    let mut claims = Map::new();
    let mut put = |name: &str, value: Option<&String>| {
        if let Some(value) = value {
            claims.insert(name.to_string(), json!(value));
        }
    };
    if scope.contains("profile") {
        let p = &user.profile;
        put("name", p.name.as_ref());
        put("given_name", p.given_name.as_ref());
        put("family_name", p.family_name.as_ref());
        put("nickname", p.nickname.as_ref());
        put("preferred_username", Some(&user.username));
        put("picture", p.picture.as_ref());
        put("website", p.website.as_ref());
        put("locale", p.locale.as_ref());
        put("zoneinfo", p.zoneinfo.as_ref());
        let updated_at = if user.updated_at > 0 {
            user.updated_at
        } else {
            user.created_at
        };
        claims.insert("updated_at".into(), json!(updated_at));
    }
    if scope.contains("email") {
        if let Some(email) = &user.email {
            claims.insert("email".into(), json!(email));
            claims.insert("email_verified".into(), json!(user.email_verified));
        }
    }
    claims
}

/// The ID token's claims. The user claims of the granted scope are flattened in beside the
/// registered ones.
#[derive(Debug, Serialize)]
struct IdTokenClaims<'a> {
    iss: &'a str,
    sub: &'a str,
    /// The client: an ID token is addressed to the relying party alone, so `azp` is not needed
    /// (Core §2: it is for an `aud` with several members).
    aud: &'a str,
    exp: i64,
    iat: i64,
    /// When the user last logged in (always present, so `max_age` can be checked), how
    /// (`amr`, RFC 8176) and the level that makes (`acr`).
    #[serde(flatten)]
    login: super::acr::LoginClaims<'a>,
    #[serde(skip_serializing_if = "Option::is_none")]
    nonce: Option<&'a str>,
    at_hash: String,
    #[serde(flatten)]
    user: Map<String, Value>,
}

/// What an ID token is issued from: the grant's facts at the token endpoint.
pub struct IdTokenInput<'a> {
    pub client: &'a ClientRecord,
    pub user_id: &'a str,
    pub scope: &'a Scope,
    /// The login behind the grant.
    pub login: super::acr::LoginClaims<'a>,
    /// Present only at the code exchange: a refreshed ID token carries none (Core §12.2).
    pub nonce: Option<&'a str>,
    pub access_token: &'a str,
}

/// `at_hash` (Core §3.1.3.6): the left half of the hash of the access token's ASCII octets,
/// with the hash function of the ID token's algorithm (SHA-512 for Ed25519).
pub fn at_hash(alg: Algorithm, access_token: &str) -> String {
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use base64::Engine;
    let function = match alg {
        Algorithm::ES256 | Algorithm::RS256 => &ring::digest::SHA256,
        Algorithm::EdDSA => &ring::digest::SHA512,
    };
    let digest = ring::digest::digest(function, access_token.as_bytes());
    let bytes = digest.as_ref();
    URL_SAFE_NO_PAD.encode(&bytes[..bytes.len() / 2])
}

impl Tokens {
    /// The algorithm a client's ID tokens are signed with (RS256 unless it registered another).
    pub fn id_token_alg(&self, client: &ClientRecord) -> Algorithm {
        client.id_token_signed_response_alg.unwrap_or(Algorithm::RS256)
    }

    /// Refuses, before anything is spent, a token request of a client whose ID tokens need an
    /// algorithm the keyring has no key for (an operator registered it ahead of the key):
    /// the request is retried once the key exists, instead of failing after its code or
    /// refresh token is used up.
    pub fn ensure_id_token_key(&self, client: &ClientRecord) -> Result<(), Error> {
        let alg = self.id_token_alg(client);
        if self.keys.current().signer_for(alg).is_some() {
            return Ok(());
        }
        Err(Error::invalid_request(format!(
            "the server has no {alg} key to sign this client's ID tokens (id_token_signed_response_alg); ask its operator"
        )))
    }

    /// Signs an ID token for a grant whose scope includes `openid`; `None` otherwise.
    pub async fn mint_id_token(&self, input: IdTokenInput<'_>) -> Result<Option<String>, Error> {
        if !input.scope.contains(OPENID) {
            return Ok(None);
        }
        let user = self
            .users
            .get_user(input.user_id)
            .await?
            .ok_or_else(|| Error::invalid_grant("the user of this grant no longer exists"))?;
        let alg = self.id_token_alg(input.client);
        let iat = now();
        let claims = IdTokenClaims {
            iss: &self.issuer,
            sub: &user.user_id,
            aud: &input.client.client_id,
            exp: iat + self.config.id_token_ttl.as_secs() as i64,
            iat,
            login: input.login,
            nonce: input.nonce,
            at_hash: at_hash(alg, input.access_token),
            user: user_claims(&user, input.scope),
        };
        let jwt = self
            .keys
            .current()
            .sign_jwt_with(alg, "JWT", &claims)
            .map_err(|e| match e {
                crate::keys::KeyError::Refused(_) => no_key_for(alg),
                other => other.into(),
            })?;
        self.metrics.token_signed("id_token");
        Ok(Some(jwt))
    }

    /// The UserInfo response for a bearer or DPoP-bound access token (Core §5.3, RFC 9449 §7):
    /// `sub` plus the claims its scope releases. The token must be one of ours, unexpired, unrevoked, issued for this
    /// server (not for another resource) and carry `openid`.
    ///
    /// Errors are RFC 6750 §3.1 codes: `invalid_token` (no valid token) or `insufficient_scope`.
    pub async fn userinfo(
        &self,
        access_token: &str,
        presented: super::token::Presentation<'_>,
    ) -> Result<Map<String, Value>, Error> {
        let insufficient = || Error::new(ErrorCode::InsufficientScope, "the access token lacks the openid scope");
        let claims = self.verify_presented_token(access_token, presented).await?;
        if claims["gid"].as_str().is_none() {
            // client_credentials tokens have no user behind them.
            return Err(insufficient());
        }
        let scope = Scope::parse(claims["scope"].as_str().unwrap_or_default()).map_err(|_| insufficient())?;
        if !scope.contains(OPENID) {
            return Err(insufficient());
        }
        let sub = claims["sub"].as_str().unwrap_or_default();
        let user = self
            .users
            .get_user(sub)
            .await?
            .ok_or_else(|| Error::new(ErrorCode::InvalidToken, "the user no longer exists"))?;
        let mut response = Map::new();
        response.insert("sub".into(), json!(user.user_id));
        response.extend(user_claims(&user, &scope));
        Ok(response)
    }
}

/// The operator must add a key of this algorithm; the client sees a plain server_error.
fn no_key_for(alg: Algorithm) -> Error {
    Error::server_error(format!(
        "no published {alg} key to sign ID tokens; run `tessera keys generate --alg {alg}`"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn at_hash_matches_the_openid_connect_example() {
        // OpenID Connect Core, Appendix A.3 (ID token with at_hash, RS256).
        assert_eq!(
            at_hash(Algorithm::RS256, "jHkWEdUXMU1BwAsC4vtUsZwnNvTIxEl0z9K3vx5KF0Y"),
            "77QmUPtjPfzWtF2AnpK9RQ"
        );
    }

    #[test]
    fn claims_follow_the_scope() {
        let user = UserRecord {
            user_id: "u1".into(),
            username: "alice".into(),
            email: Some("alice@example.com".into()),
            email_verified: true,
            password_hash: String::new(),
            created_at: 100,
            profile: crate::store::UserProfile {
                name: Some("Alice Liddell".into()),
                ..Default::default()
            },
            updated_at: 0,
            session_epoch: 0,
            operator: false,
            disabled: false,
        };
        let only_openid = user_claims(&user, &Scope::parse("openid").unwrap());
        assert!(only_openid.is_empty());
        let profile = user_claims(&user, &Scope::parse("openid profile").unwrap());
        assert_eq!(profile["name"], "Alice Liddell");
        assert_eq!(profile["preferred_username"], "alice");
        assert_eq!(profile["updated_at"], 100);
        assert!(!profile.contains_key("email") && !profile.contains_key("given_name"));
        let email = user_claims(&user, &Scope::parse("openid email").unwrap());
        assert_eq!(email["email"], "alice@example.com");
        assert_eq!(email["email_verified"], true);
        assert!(!email.contains_key("name"));
    }
}
