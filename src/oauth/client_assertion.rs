//! `private_key_jwt` client authentication (RFC 7523 §2.2 and §3, OpenID Connect Core §9): a
//! client signs a short-lived JWT about itself with a private key whose public half it
//! registered, inline (`jwks`) or at a URL (`jwks_uri`), and sends it as `client_assertion`.
//!
//! What is checked: the algorithm is one the key fixes (its `alg`, else its type's: ES256 for
//! P-256, EdDSA for Ed25519, RS256 or PS256 for RSA; never `none` or an HMAC), the signature,
//! `iss` = `sub` = the client, `aud` naming this server (its issuer, its token endpoint, or the
//! endpoint called), `exp` present, `nbf`/`iat` not in the future, an assertion accepted for at
//! most [`MAX_LIFETIME`] (after its `iat`, or from now when it has none), and `jti` used once:
//! every `jti` is remembered in the store's counters for as long as its assertion is accepted,
//! so a replay fails on every node.
//!
//! The JWS and its keys are read by [`super::jws`] (`tessera_resource::jws`), shared with DPoP
//! proofs.

use serde_json::Value;
use url::Url;

use super::jws::{parse_jwk, Jws, VerificationKey};
use super::{now, Error, Provider};
use crate::documents::{Kind, Origin};
use crate::store::ClientRecord;

/// `client_assertion_type` for a JWT assertion (RFC 7523 §2.2).
pub const ASSERTION_TYPE: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";
/// The `token_endpoint_auth_method` name (RFC 7591 §2).
pub const METHOD: &str = "private_key_jwt";
/// The algorithms assertions may be signed with, as the JWS `alg` names them.
pub const SIGNING_ALGS: [&str; 5] = ["ES256", "EdDSA", "Ed25519", "RS256", "PS256"];
/// The longest an assertion is accepted, from its `iat`: it is a one-request credential.
pub const MAX_LIFETIME: i64 = 300;
/// Clock skew allowed between the client and this server.
const LEEWAY: u64 = 30;
/// The largest assertion read.
const MAX_ASSERTION_BYTES: usize = 8 * 1024;
/// The largest key set a client may register or publish, and its most keys.
pub const MAX_JWKS_BYTES: usize = Kind::KeySet.limits().max_bytes;
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
    // A NUL is in no client id (and PostgreSQL could not even look one up): nobody's.
    let sub = claims["sub"].as_str().filter(|s| !s.is_empty() && !s.contains('\0'))?;
    (claims["iss"].as_str() == Some(sub)).then(|| sub.to_string())
}

impl Provider {
    /// Checks a client assertion for `client`, presented at `endpoint` (a path on this
    /// server) by `caller` (an address key: what fetching the client's keys is counted
    /// against). Every failure is `invalid_client`; the reason is logged, not answered.
    pub(super) async fn verify_client_assertion(
        &self,
        client: &ClientRecord,
        assertion: &str,
        endpoint: &str,
        caller: Option<&str>,
    ) -> Result<(), Error> {
        match self.check_assertion(client, assertion, endpoint, caller).await {
            Ok(()) => Ok(()),
            Err(Refused::Server(e)) => Err(e),
            Err(Refused::Invalid(reason)) => {
                tracing::info!(client_id = %client.client_id, %reason, "client assertion refused");
                Err(Error::invalid_client())
            }
        }
    }

    async fn check_assertion(
        &self,
        client: &ClientRecord,
        assertion: &str,
        endpoint: &str,
        caller: Option<&str>,
    ) -> Result<(), Refused> {
        let jws = Jws::parse(assertion).map_err(Refused::Invalid)?;
        let mut verified = false;
        for refetched in [false, true] {
            // Borrowed from the record, not copied: this runs on every authenticated request.
            let candidates = match (&client.jwks, &client.jwks_uri) {
                (Some(jwks), _) => parse_jwks(jwks, false).map_err(Refused::Invalid)?,
                (None, Some(uri)) => {
                    // Once per min_ttl at most: anyone can send an assertion that fails.
                    if refetched && !self.documents.refresh_soon(Kind::KeySet, uri) {
                        break;
                    }
                    let usable = |jwks: &Value| parse_jwks(jwks, false).map(drop);
                    // A document client's key set is a URL anyone named; a stored client's was
                    // registered.
                    let origin = match super::client_document::is_document_url(&client.client_id) {
                        true => Origin::Named,
                        false => Origin::Registered,
                    };
                    let jwks = self
                        .documents
                        .get(Kind::KeySet, uri, caller, origin, &usable)
                        .await
                        .map_err(|e| match super::client_document::capacity_error(&e) {
                            // Our limits, not the client's keys: retry later, not invalid_client.
                            Some(busy) => Refused::Server(busy),
                            None => Refused::Invalid(e.to_string()),
                        })?;
                    parse_jwks(&jwks, false).map_err(Refused::Invalid)?
                }
                (None, None) => return Err(Refused::Invalid("the client has no keys".into())),
            };
            verified = candidates
                .iter()
                .filter(|k| jws.kid.is_none() || k.kid == jws.kid)
                .filter(|k| k.algs.contains(&jws.alg))
                .any(|k| jws.verifies_with(&k.key));
            // Keys given inline do not change; a published set may have rotated to a key not
            // seen yet: read it again, once. A known kid that does not verify is just wrong.
            let known_kid = jws.kid.is_some() && candidates.iter().any(|k| k.kid == jws.kid);
            if verified || known_kid || client.jwks.is_some() {
                break;
            }
        }
        if !verified {
            return Err(Refused::Invalid("no registered key verifies the assertion".into()));
        }
        let until = self
            .check_claims(client, &jws.claims, endpoint)
            .map_err(Refused::Invalid)?;
        let jti = jws.claims["jti"]
            .as_str()
            .filter(|j| !j.is_empty() && j.len() <= 256)
            .ok_or_else(|| Refused::Invalid("jti is missing".into()))?;
        if self
            .assertion_replayed(&client.client_id, jti, until)
            .await
            .map_err(Refused::Server)?
        {
            return Err(Refused::Invalid("the assertion's jti was used before".into()));
        }
        Ok(())
    }

    /// Checks a verified assertion's registered claims (RFC 7523 §3); returns the second from
    /// which it is no longer accepted.
    fn check_claims(&self, client: &ClientRecord, claims: &Value, endpoint: &str) -> Result<i64, String> {
        let (now, leeway) = (now(), LEEWAY as i64);
        let client_id = client.client_id.as_str();
        if claims["iss"].as_str() != Some(client_id) || claims["sub"].as_str() != Some(client_id) {
            return Err("iss and sub must both be the client".into());
        }
        // The endpoint called, with or without the trailing slash the metadata gives it.
        let endpoint = endpoint.trim_end_matches('/');
        let audiences = [
            self.issuer.clone(),
            format!("{}/", self.issuer),
            self.url("/o/token/"),
            self.url(endpoint),
            self.url(&format!("{endpoint}/")),
        ];
        let ours = |aud: &Value| aud.as_str().is_some_and(|aud| audiences.iter().any(|a| a == aud));
        let for_us = match &claims["aud"] {
            Value::Array(list) => list.iter().any(ours),
            aud => ours(aud),
        };
        if !for_us {
            return Err("aud does not name this server".into());
        }
        let time = |name: &str| claims[name].as_f64().map(|t| t as i64);
        let exp = time("exp").ok_or("exp is missing")?;
        let iat = time("iat");
        if time("nbf").is_some_and(|nbf| nbf > now + leeway) || iat.is_some_and(|iat| iat > now + leeway) {
            return Err("nbf or iat is in the future".into());
        }
        // RFC 7523 §3 lets a server refuse an `exp` unreasonably far ahead, and libraries
        // differ (openid-client: 60 s, Authlib: an hour): what is bounded instead is how long
        // the assertion is accepted, so that its jti is remembered for that long only.
        let last = match iat {
            Some(iat) => exp.min(iat + MAX_LIFETIME),
            None if exp <= now + MAX_LIFETIME + leeway => exp,
            None => return Err(format!("without iat, exp may be at most {MAX_LIFETIME} seconds ahead")),
        };
        let until = last + leeway + 1;
        if now >= until {
            return Err(format!(
                "the assertion has expired (exp, or {MAX_LIFETIME} seconds after iat)"
            ));
        }
        Ok(until)
    }

    /// Records `jti` for `client_id` until the second `until`; whether it was already
    /// recorded. Atomic in the store, so two nodes given one assertion accept it once.
    async fn assertion_replayed(&self, client_id: &str, jti: &str, until: i64) -> Result<bool, Error> {
        let key = [
            b"assertion-jti\0".as_slice(),
            client_id.as_bytes(),
            b"\0",
            jti.as_bytes(),
        ]
        .concat();
        Ok(!self.store.remember_once(&key, until * 1000).await?)
    }
}

enum Refused {
    Invalid(String),
    Server(Error),
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use base64::Engine;
    use serde_json::json;

    /// What discovery publishes, `tessera_resource::jws` (the one JWS reader) accepts.
    #[test]
    fn every_published_signing_alg_is_accepted() {
        for name in SIGNING_ALGS {
            assert!(
                crate::oauth::jws::algorithm(name).is_some(),
                "{name} is published and so accepted"
            );
        }
    }

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
        // ring verifies no RSA key under 2048 bits.
        let n_1024 = URL_SAFE_NO_PAD.encode([0xc5; 128]);
        let small = json!({"kty": "RSA", "n": n_1024, "e": "AQAB"});
        let refused = ClientKeys::Jwks(json!({ "keys": [small] })).validate();
        assert!(refused.is_err_and(|e| e.description.contains("2048")));
        let n_2048 = URL_SAFE_NO_PAD.encode([[0u8].as_slice(), &[0xc5; 256]].concat());
        let rsa = json!({"kty": "RSA", "n": n_2048, "e": "AQAB"});
        assert!(ClientKeys::Jwks(json!({ "keys": [rsa] })).validate().is_ok());
        assert!(ClientKeys::JwksUri("https://app.example/jwks.json".into())
            .validate()
            .is_ok());
        assert!(ClientKeys::JwksUri("http://app.example/jwks.json".into())
            .validate()
            .is_err());
    }
}
