//! `private_key_jwt` client authentication (RFC 7523 §2.2 and §3, OpenID Connect Core §9): a
//! client signs a short-lived JWT about itself with a private key whose public half it
//! registered, inline (`jwks`) or at a URL (`jwks_uri`), and sends it as `client_assertion`.
//!
//! What is checked: the algorithm is one the key fixes (its `alg`, else its type's: ES256 for
//! P-256, EdDSA for Ed25519, RS256 or PS256 for RSA; never `none` or an HMAC), the signature,
//! `iss` = `sub` = the client, `aud` naming this server (its issuer, its token endpoint, or the
//! endpoint called), `exp` present and at most [`MAX_LIFETIME`] ahead, `nbf`/`iat` not in the
//! future, and `jti` used once: every `jti` is remembered in the store's counters until the
//! assertion expires, so a replay fails on every node.

use std::sync::atomic::{AtomicBool, Ordering};

use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde_json::Value;
use url::Url;

use super::{now, Error, Provider};
use crate::store::{ClientRecord, Counter};

/// `client_assertion_type` for a JWT assertion (RFC 7523 §2.2).
pub const ASSERTION_TYPE: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";
/// The `token_endpoint_auth_method` name (RFC 7591 §2).
pub const METHOD: &str = "private_key_jwt";
/// The algorithms assertions may be signed with.
pub const SIGNING_ALGS: [&str; 4] = ["ES256", "EdDSA", "RS256", "PS256"];
/// The furthest ahead an assertion's `exp` may be: it is a one-request credential.
pub const MAX_LIFETIME: i64 = 300;
/// Clock skew allowed between the client and this server.
const LEEWAY: u64 = 30;
/// The largest assertion read.
const MAX_ASSERTION_BYTES: usize = 8 * 1024;
/// The largest key set a client may register or publish, and its most keys.
pub const MAX_JWKS_BYTES: usize = 16 * 1024;
const MAX_KEYS: usize = 10;

/// Where a client's public keys are.
#[derive(Clone, Debug, PartialEq)]
pub enum ClientKeys {
    /// A JWK Set given at registration (RFC 7591 `jwks`).
    Jwks(Value),
    /// A URL that serves the JWK Set (RFC 7591 `jwks_uri`), fetched and cached.
    JwksUri(String),
}

impl ClientKeys {
    /// The keys a client record names, if any.
    pub fn of(client: &ClientRecord) -> Option<ClientKeys> {
        match (&client.jwks, &client.jwks_uri) {
            (Some(jwks), _) => Some(ClientKeys::Jwks(jwks.clone())),
            (None, Some(uri)) => Some(ClientKeys::JwksUri(uri.clone())),
            (None, None) => None,
        }
    }

    /// Checks the keys at registration: a JWK Set of public signing keys of the supported
    /// types, or an https URL.
    pub fn validate(&self) -> Result<(), Error> {
        match self {
            ClientKeys::Jwks(jwks) => {
                if jwks.to_string().len() > MAX_JWKS_BYTES {
                    return Err(Error::invalid_request(format!(
                        "jwks is larger than {MAX_JWKS_BYTES} bytes"
                    )));
                }
                parse_jwks(jwks, true).map(drop).map_err(Error::invalid_request)
            }
            ClientKeys::JwksUri(uri) => {
                let url = Url::parse(uri).map_err(|_| Error::invalid_request("jwks_uri is not an absolute URL"))?;
                if url.scheme() != "https" || url.host().is_none() || uri.contains('#') {
                    return Err(Error::invalid_request(
                        "jwks_uri must be an https URL without a fragment",
                    ));
                }
                if uri.len() > super::client::MAX_URI_BYTES {
                    return Err(Error::invalid_request("jwks_uri is too long"));
                }
                Ok(())
            }
        }
    }
}

/// A public key an assertion may be verified with.
struct VerificationKey {
    kid: Option<String>,
    algs: &'static [Algorithm],
    key: DecodingKey,
}

/// The usable keys of a JWK Set. `strict` (registration) refuses any key it cannot use;
/// otherwise (a published set) keys for encryption or of unknown types are skipped. A private
/// or symmetric key is refused either way: publishing one is a mistake to report, not skip.
fn parse_jwks(jwks: &Value, strict: bool) -> Result<Vec<VerificationKey>, String> {
    let keys = jwks["keys"]
        .as_array()
        .ok_or("a JWK Set is an object with a \"keys\" array")?;
    if keys.is_empty() || keys.len() > MAX_KEYS {
        return Err(format!("a JWK Set needs 1 to {MAX_KEYS} keys"));
    }
    let mut usable = Vec::new();
    for jwk in keys {
        match parse_jwk(jwk) {
            Ok(Some(key)) => usable.push(key),
            Ok(None) if !strict => {}
            Ok(None) => return Err("every key must be a signing key (\"use\": \"sig\", or no \"use\")".into()),
            Err(why) => return Err(why),
        }
    }
    if usable.is_empty() {
        return Err("the JWK Set has no signing key of a supported type".into());
    }
    Ok(usable)
}

/// One JWK: `Ok(None)` for a key that is not for signatures.
fn parse_jwk(jwk: &Value) -> Result<Option<VerificationKey>, String> {
    const PRIVATE: [&str; 8] = ["d", "p", "q", "dp", "dq", "qi", "oth", "k"];
    if let Some(member) = PRIVATE.iter().find(|m| jwk.get(**m).is_some()) {
        return Err(format!(
            "a JWK holds private or secret key material (\"{member}\"); register the public key only"
        ));
    }
    if jwk["use"].as_str().is_some_and(|u| u != "sig") {
        return Ok(None);
    }
    let s = |name: &str| {
        jwk[name]
            .as_str()
            .ok_or_else(|| format!("a {} JWK needs \"{name}\"", jwk["kty"]))
    };
    const ES256: &[Algorithm] = &[Algorithm::ES256];
    const EDDSA: &[Algorithm] = &[Algorithm::EdDSA];
    const RSA: &[Algorithm] = &[Algorithm::RS256, Algorithm::PS256];
    let (family, key) = match (jwk["kty"].as_str(), jwk["crv"].as_str()) {
        (Some("EC"), Some("P-256")) => (ES256, DecodingKey::from_ec_components(s("x")?, s("y")?)),
        (Some("OKP"), Some("Ed25519")) => (EDDSA, DecodingKey::from_ed_components(s("x")?)),
        (Some("RSA"), _) => (RSA, DecodingKey::from_rsa_components(s("n")?, s("e")?)),
        (Some("oct"), _) => return Err("symmetric (\"oct\") keys are not accepted".into()),
        (kty, crv) => {
            return Err(format!(
                "unsupported key type {} {}; use EC P-256, OKP Ed25519 or RSA",
                kty.unwrap_or("(none)"),
                crv.unwrap_or("")
            ))
        }
    };
    let key = key.map_err(|e| format!("a JWK is malformed: {e}"))?;
    let algs = match jwk["alg"].as_str() {
        None => family,
        Some(alg) => {
            let index = family
                .iter()
                .position(|a| format!("{a:?}") == alg)
                .ok_or_else(|| format!("a {} key cannot be used with alg {alg}", jwk["kty"]))?;
            &family[index..=index]
        }
    };
    Ok(Some(VerificationKey {
        kid: jwk["kid"].as_str().map(str::to_string),
        algs,
        key,
    }))
}

/// The client an assertion says it is for (its `sub`, which must equal `iss`), read before
/// anything is verified: it picks the keys to verify with.
pub fn claimed_client(assertion: &str) -> Option<String> {
    use base64::Engine;
    if assertion.len() > MAX_ASSERTION_BYTES {
        return None;
    }
    let payload = assertion.split('.').nth(1)?;
    let claims: Value =
        serde_json::from_slice(&base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(payload).ok()?).ok()?;
    let sub = claims["sub"].as_str().filter(|s| !s.is_empty())?;
    (claims["iss"].as_str() == Some(sub)).then(|| sub.to_string())
}

impl Provider {
    /// Checks a client assertion for `client`, presented at `endpoint` (a path on this
    /// server). Every failure is `invalid_client`; the reason is logged, not answered.
    pub(super) async fn verify_client_assertion(
        &self,
        client: &ClientRecord,
        assertion: &str,
        endpoint: &str,
    ) -> Result<(), Error> {
        match self.check_assertion(client, assertion, endpoint).await {
            Ok(()) => Ok(()),
            Err(Refused::Server(e)) => Err(e),
            Err(Refused::Invalid(reason)) => {
                tracing::info!(client_id = %client.client_id, %reason, "client assertion refused");
                Err(Error::invalid_client())
            }
        }
    }

    async fn check_assertion(&self, client: &ClientRecord, assertion: &str, endpoint: &str) -> Result<(), Refused> {
        if assertion.len() > MAX_ASSERTION_BYTES {
            return Err(Refused::Invalid("the assertion is too large".into()));
        }
        let header = jsonwebtoken::decode_header(assertion)
            .map_err(|e| Refused::Invalid(format!("the assertion is not a JWS: {e}")))?;
        // jsonwebtoken has no `none`; HMAC is refused here, before any key is looked at.
        if !SIGNING_ALGS.contains(&format!("{:?}", header.alg).as_str()) {
            return Err(Refused::Invalid(format!("alg {:?} is not accepted", header.alg)));
        }
        let keys = ClientKeys::of(client).ok_or_else(|| Refused::Invalid("the client has no keys".into()))?;
        let mut claims = None;
        for refetched in [false, true] {
            let candidates = match &keys {
                ClientKeys::Jwks(jwks) => parse_jwks(jwks, false).map_err(Refused::Invalid)?,
                ClientKeys::JwksUri(uri) => {
                    if refetched {
                        self.documents.forget(uri);
                    }
                    let jwks = self
                        .documents
                        .get(uri, MAX_JWKS_BYTES)
                        .await
                        .map_err(|e| Refused::Invalid(e.to_string()))?;
                    parse_jwks(&jwks, false).map_err(Refused::Invalid)?
                }
            };
            claims = candidates
                .iter()
                .filter(|k| header.kid.is_none() || k.kid == header.kid)
                .filter(|k| k.algs.contains(&header.alg))
                .find_map(|k| {
                    self.decode_assertion(client, assertion, header.alg, &k.key, endpoint)
                        .ok()
                });
            // Keys given inline do not change; a published set may have rotated: read it again once.
            if claims.is_some() || matches!(keys, ClientKeys::Jwks(_)) {
                break;
            }
        }
        let claims = claims
            .ok_or_else(|| Refused::Invalid("no registered key verifies the assertion with valid claims".into()))?;
        let now = now();
        let exp = claims["exp"].as_i64().unwrap_or_default();
        if exp > now + MAX_LIFETIME + LEEWAY as i64 {
            return Err(Refused::Invalid(format!(
                "exp is more than {MAX_LIFETIME} seconds ahead"
            )));
        }
        if claims["iat"].as_i64().is_some_and(|iat| iat > now + LEEWAY as i64) {
            return Err(Refused::Invalid("iat is in the future".into()));
        }
        let jti = claims["jti"]
            .as_str()
            .filter(|j| !j.is_empty() && j.len() <= 256)
            .ok_or_else(|| Refused::Invalid("jti is missing".into()))?;
        if self
            .assertion_replayed(&client.client_id, jti, exp)
            .await
            .map_err(Refused::Server)?
        {
            return Err(Refused::Invalid("the assertion's jti was used before".into()));
        }
        Ok(())
    }

    /// The assertion's claims if `key` verifies it and its registered claims hold.
    fn decode_assertion(
        &self,
        client: &ClientRecord,
        assertion: &str,
        alg: Algorithm,
        key: &DecodingKey,
        endpoint: &str,
    ) -> Result<Value, jsonwebtoken::errors::Error> {
        let mut validation = Validation::new(alg);
        validation.leeway = LEEWAY;
        validation.validate_nbf = true;
        validation.set_required_spec_claims(&["exp", "iss", "sub", "aud"]);
        validation.set_issuer(&[&client.client_id]);
        validation.sub = Some(client.client_id.clone());
        // The endpoint as the metadata names it (with its trailing slash) or as it was called.
        let endpoint = endpoint.trim_end_matches('/');
        validation.set_audience(&[
            self.issuer.clone(),
            format!("{}/", self.issuer),
            self.url("/o/token/"),
            self.url(endpoint),
            self.url(&format!("{endpoint}/")),
        ]);
        Ok(jsonwebtoken::decode::<Value>(assertion, key, &validation)?.claims)
    }

    /// Records `jti` for `client_id` until `exp` (plus the leeway); whether it was already
    /// recorded. Atomic in the store, so two nodes given one assertion accept it once.
    async fn assertion_replayed(&self, client_id: &str, jti: &str, exp: i64) -> Result<bool, Error> {
        let key = [
            b"assertion-jti\0".as_slice(),
            client_id.as_bytes(),
            b"\0",
            jti.as_bytes(),
        ]
        .concat();
        let now_ms = now() * 1000;
        let until_ms = (exp + LEEWAY as i64) * 1000;
        let replayed = AtomicBool::new(false);
        self.store
            .update_counters(&[key], &|counters: &mut [Counter]| {
                let seen = &mut counters[0];
                if seen.failures > 0 && seen.expires_at_ms > now_ms {
                    replayed.store(true, Ordering::Relaxed);
                } else {
                    *seen = Counter {
                        failures: 1,
                        last_failure_ms: now_ms,
                        locked_until_ms: 0,
                        expires_at_ms: until_ms,
                    };
                }
            })
            .await?;
        Ok(replayed.load(Ordering::Relaxed))
    }
}

enum Refused {
    Invalid(String),
    Server(Error),
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn registered_key_sets_hold_public_signing_keys_only() {
        let ec = json!({"kty": "EC", "crv": "P-256", "x": "f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU", "y": "x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0"});
        assert!(ClientKeys::Jwks(json!({ "keys": [ec] })).validate().is_ok());
        let mut private = ec.clone();
        private["d"] = "jpsQnnGQmL-YBIffH1136cspYG6-0iY7X1fCE9-E9LI".into();
        let mut hs = ec.clone();
        hs["alg"] = "HS256".into();
        for bad in [
            json!({ "keys": [private] }),
            json!({ "keys": [{"kty": "oct", "k": "c2VjcmV0"}] }),
            json!({ "keys": [hs] }),
            json!({ "keys": [] }),
            json!({ "keys": "nope" }),
            json!([ec]),
        ] {
            assert!(ClientKeys::Jwks(bad.clone()).validate().is_err(), "{bad}");
        }
        assert!(ClientKeys::JwksUri("https://app.example/jwks.json".into())
            .validate()
            .is_ok());
        assert!(ClientKeys::JwksUri("http://app.example/jwks.json".into())
            .validate()
            .is_err());
    }
}
