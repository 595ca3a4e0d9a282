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
//! The JWS and its keys are read by [`crate::oauth::jws`] (`tessera_resource::jws`), shared with
//! DPoP proofs.

use serde_json::Value;

use super::keys::parse_jwks;
use super::Clients;
use crate::documents::{Kind, Origin};
use crate::oauth::jws::Jws;
use crate::oauth::{now, Error};
use crate::store::ClientRecord;

/// `client_assertion_type` for a JWT assertion (RFC 7523 §2.2).
pub const ASSERTION_TYPE: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";
/// The algorithms assertions may be signed with, as the JWS `alg` names them.
pub const SIGNING_ALGS: [&str; 5] = ["ES256", "EdDSA", "Ed25519", "RS256", "PS256"];
/// The longest an assertion is accepted, from its `iat`: it is a one-request credential.
pub(crate) const MAX_LIFETIME: i64 = 300;
/// Clock skew allowed between the client and this server.
const LEEWAY: u64 = 30;
/// The largest assertion read.
const MAX_ASSERTION_BYTES: usize = 8 * 1024;
/// The client an assertion says it is for (its `sub`, which must equal `iss`), read before
/// anything is verified: it picks the keys to verify with.
pub(crate) fn claimed_client(assertion: &str) -> Option<String> {
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

impl Clients {
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
                    let origin = match super::document::is_document_url(&client.client_id) {
                        true => Origin::Named,
                        false => Origin::Registered,
                    };
                    let jwks = self
                        .documents
                        .get(Kind::KeySet, uri, caller, origin, &usable)
                        .await
                        .map_err(|e| match super::document::capacity_error(&e) {
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
            self.url(crate::oauth::endpoints::TOKEN),
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
        Ok(!self.replays.remember_once(&key, until * 1000).await?)
    }
}

enum Refused {
    Invalid(String),
    Server(Error),
}

#[cfg(test)]
mod tests {
    use super::*;

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
}
