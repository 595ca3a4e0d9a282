//! DPoP (RFC 9449): proofs of possession of a key, and the tokens bound to it.
//!
//! A client signs a short JWT (the proof, `typ: dpop+jwt`) for each HTTP request with a key
//! whose public half is in the proof's header (`jwk`); the server checks it (§4.3) and binds
//! the tokens it issues to that key's RFC 7638 thumbprint (`cnf.jkt`, §6.1). A stolen token is
//! then useless without the private key: every use needs a fresh proof naming the request's
//! method and URL (`htm`, `htu`), and at a resource the token itself (`ath`, §7).
//!
//! What is checked here, for the token endpoint, UserInfo and `tessera::resource` alike
//! ([`verify_proof`]): an asymmetric `alg` of [`SIGNING_ALGS`] (or `Ed25519`, RFC 9864) that
//! the key allows, a public `jwk` only, the signature, `htm`, `htu` without query and fragment
//! (§4.3 item 9), `iat` no older than the configured window and at most [`FUTURE_SKEW`] ahead,
//! a `jti`, and `ath` when a token is presented. What needs state is done by [`Provider`]:
//! each `jti` is accepted once within its window ([`crate::store::EphemeralStore::remember_once`],
//! shared by every node), and with `dpop_nonce` on, proofs must carry a server nonce (§8):
//! stateless, an HMAC of the current time window under a secret every node shares, so that
//! any node accepts any node's nonce.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use ring::hmac;
use serde_json::Value;
use url::Url;

use super::jws::{parse_jwk, Jws};
use super::{now, Error, ErrorCode, Provider};
use crate::store::ClientRecord;

/// The proof algorithms published as `dpop_signing_alg_values_supported` (RFC 9449 §5.1).
pub const SIGNING_ALGS: [&str; 4] = ["ES256", "EdDSA", "RS256", "PS256"];
/// The `algs` of a `WWW-Authenticate: DPoP` challenge (RFC 9449 §7.1).
pub const CHALLENGE_ALGS: &str = "ES256 EdDSA RS256 PS256";
/// The proof JWT's `typ` (RFC 9449 §4.2).
pub const PROOF_TYPE: &str = "dpop+jwt";
/// How far ahead of this server's clock a proof's `iat` may be.
pub const FUTURE_SKEW: i64 = 5;
/// The longest `jti` accepted (it is remembered for the proof's window).
const MAX_JTI_BYTES: usize = 256;
/// The server secret the nonces are signed with.
const NONCE_SECRET: &str = "dpop-nonce";
/// Proofs one key may spend a second where [`KeyBudget::PerKey`] applies.
pub const PROOFS_PER_KEY: u32 = 50;

/// Whether a proof's key is held to [`PROOFS_PER_KEY`]: where something else already bounds
/// how often proofs are spent (a grant known good at the token endpoint, the per-address push
/// budget at PAR), it is not, so a busy service using one key is not slowed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KeyBudget {
    PerKey,
    Unbounded,
}

/// The DPoP side of an HTTP request, as the HTTP layer hands it over.
#[derive(Debug, Default, Clone)]
pub struct ProofRequest {
    /// Every `DPoP` header value of the request (more than one is an error, RFC 9449 §4.3).
    pub proofs: Vec<String>,
    /// The request's method.
    pub method: String,
    /// The request's URL as the client addressed it: this server's public URL of the endpoint.
    pub url: String,
}

impl ProofRequest {
    /// The single proof of the request; `None` without one.
    pub fn proof(&self) -> Result<Option<&str>, String> {
        match self.proofs.as_slice() {
            [] => Ok(None),
            [one] => Ok(Some(one.as_str())),
            _ => Err("send one DPoP header, not several".into()),
        }
    }
}

/// What a request's proof must match.
#[derive(Debug, Clone, Copy)]
pub struct Expected<'a> {
    pub method: &'a str,
    pub url: &'a str,
    /// The access token presented with the proof (at a resource), whose hash must be `ath`.
    pub access_token: Option<&'a str>,
    /// The current time, in seconds.
    pub now: i64,
    /// The oldest `iat` accepted is `now - max_age`.
    pub max_age: i64,
}

/// A proof that verified.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Proof {
    /// The RFC 7638 thumbprint of its key (base64url SHA-256): what tokens are bound to.
    pub jkt: String,
    pub jti: String,
    pub iat: i64,
    /// The server nonce it carries, if any.
    pub nonce: Option<String>,
}

impl Proof {
    /// The last second (Unix) the proof is accepted; its `jti` must be remembered until then.
    pub fn accepted_until(&self, max_age: i64) -> i64 {
        self.iat + max_age + FUTURE_SKEW
    }
}

/// Checks a DPoP proof JWT against the request (RFC 9449 §4.3, items 1 to 11 but the nonce and
/// `jti` replay, which need state). The error says why, for `error_description`.
pub fn verify_proof(proof: &str, expected: &Expected) -> Result<Proof, String> {
    let jws = Jws::parse(proof)?;
    if jws.header["typ"].as_str() != Some(PROOF_TYPE) {
        return Err(format!("the proof's typ must be {PROOF_TYPE}"));
    }
    let jwk = match &jws.header["jwk"] {
        jwk @ Value::Object(_) => jwk,
        _ => return Err("the proof's header has no jwk".into()),
    };
    // parse_jwk refuses private and symmetric keys (RFC 9449 §4.3 item 7).
    let key = parse_jwk(jwk)?.ok_or("the proof's jwk is not a signing key")?;
    if !key.algs.contains(&jws.alg) {
        return Err("the proof's alg does not fit its jwk".into());
    }
    if !jws.verifies_with(&key.key) {
        return Err("the proof's signature does not verify".into());
    }
    let claims = &jws.claims;
    if claims["htm"].as_str() != Some(expected.method) {
        return Err("the proof's htm is not this request's method".into());
    }
    let htu = claims["htu"].as_str().ok_or("the proof has no htu")?;
    if !same_target(htu, expected.url) {
        return Err("the proof's htu is not this request's URL".into());
    }
    // A NumericDate may have a fraction (RFC 7519 §2).
    let iat = claims["iat"].as_f64().ok_or("the proof has no iat")? as i64;
    if iat > expected.now + FUTURE_SKEW {
        return Err("the proof's iat is in the future".into());
    }
    if iat < expected.now - expected.max_age {
        return Err("the proof is too old (iat)".into());
    }
    let jti = claims["jti"]
        .as_str()
        .filter(|j| !j.is_empty() && j.len() <= MAX_JTI_BYTES)
        .ok_or("the proof has no jti")?;
    if let Some(token) = expected.access_token {
        let ath = URL_SAFE_NO_PAD.encode(ring::digest::digest(&ring::digest::SHA256, token.as_bytes()));
        if claims["ath"].as_str() != Some(ath.as_str()) {
            return Err("the proof's ath is not the hash of the access token".into());
        }
    }
    let nonce = match claims.get("nonce") {
        None => None,
        Some(Value::String(nonce)) => Some(nonce.clone()),
        Some(_) => return Err("the proof's nonce is not a string".into()),
    };
    Ok(Proof {
        jkt: thumbprint(jwk)?,
        jti: jti.to_string(),
        iat,
        nonce,
    })
}

/// Whether `htu` names `url`, ignoring query and fragment (RFC 9449 §4.3 item 9) and the
/// spelling differences URL normalisation removes (case of scheme and host, a default port).
fn same_target(htu: &str, url: &str) -> bool {
    // Most clients copy the URL exactly: no parsing then.
    if htu == url {
        return true;
    }
    let strip = |u: &str| {
        Url::parse(u).ok().map(|mut u| {
            u.set_query(None);
            u.set_fragment(None);
            u
        })
    };
    matches!((strip(htu), strip(url)), (Some(a), Some(b)) if a == b)
}

/// The RFC 7638 thumbprint of a public JWK: base64url SHA-256 of its required members, in
/// lexicographic order, without whitespace.
pub fn thumbprint(jwk: &Value) -> Result<String, String> {
    let member = |name: &str| {
        jwk[name]
            .as_str()
            .map(|v| Value::from(v).to_string())
            .ok_or_else(|| format!("the jwk has no {name}"))
    };
    let canonical = match jwk["kty"].as_str() {
        Some("EC") => format!(
            r#"{{"crv":{},"kty":"EC","x":{},"y":{}}}"#,
            member("crv")?,
            member("x")?,
            member("y")?
        ),
        Some("OKP") => format!(r#"{{"crv":{},"kty":"OKP","x":{}}}"#, member("crv")?, member("x")?),
        Some("RSA") => format!(r#"{{"e":{},"kty":"RSA","n":{}}}"#, member("e")?, member("n")?),
        _ => return Err("the jwk's key type has no thumbprint".into()),
    };
    Ok(URL_SAFE_NO_PAD.encode(ring::digest::digest(&ring::digest::SHA256, canonical.as_bytes())))
}

/// `invalid_dpop_proof` (RFC 9449 §5, §7.1).
pub fn invalid_proof(description: impl Into<String>) -> Error {
    Error::new(ErrorCode::InvalidDpopProof, description)
}

/// Whether a token bound to the key `bound` (its `cnf.jkt`, or a refresh token's) came with a
/// proof of that key (`proven`: the thumbprint of the request's verified proof). A bound
/// token is worthless without its key, and must stay so wherever it is presented: to be
/// exchanged, to be revoked. `what` names the token in the error (`invalid_dpop_proof`).
pub fn require_proof_of_key(bound: Option<&str>, proven: Option<&str>, what: &str) -> Result<(), Error> {
    match (bound, proven) {
        (None, _) => Ok(()),
        (Some(_), None) => Err(invalid_proof(format!(
            "{what} is bound to a DPoP key; send a DPoP proof made with it"
        ))),
        (Some(bound), Some(proven)) if bound != proven => {
            Err(invalid_proof(format!("{what} is bound to another DPoP key")))
        }
        (Some(_), Some(_)) => Ok(()),
    }
}

impl Provider {
    /// The proof of a token request, verified (RFC 9449 §5) but its `jti` not yet spent: the
    /// grant spends it ([`Provider::spend_proof`]) once the request is known good (a real code,
    /// a live refresh token), so a request anyone can make (a public client's, with a made-up
    /// code) never fills the replay memory. `None` when there is none and the client does not
    /// need one; a client with `dpop_bound_access_tokens` must send one. Errors:
    /// `invalid_dpop_proof`, or `use_dpop_nonce` with a fresh nonce to retry with.
    pub async fn token_request_proof(
        &self,
        client: &ClientRecord,
        request: &ProofRequest,
    ) -> Result<Option<Proof>, Error> {
        let proof = self.verify_request_proof(request, None).await?;
        if proof.is_none() && client.policy.dpop_bound_access_tokens {
            return Err(invalid_proof(
                "this client must send a DPoP proof with every token request",
            ));
        }
        Ok(proof)
    }

    /// Checks the request's proof, if it has one, with `access_token` as its `ath` (at a
    /// resource): the proof itself, the server nonce when nonces are on, and its `jti` used
    /// once (on every node). With [`KeyBudget::PerKey`] the key may spend at most
    /// [`PROOFS_PER_KEY`] proofs a second (burst twice that; 429 beyond): where nothing else
    /// bounds how often one key holder may come (UserInfo, revocation), the replay memory must
    /// not be theirs to fill.
    pub async fn check_proof(
        &self,
        request: &ProofRequest,
        access_token: Option<&str>,
        budget: KeyBudget,
    ) -> Result<Option<Proof>, Error> {
        let proof = self.verify_request_proof(request, access_token).await?;
        if let Some(proof) = &proof {
            if budget == KeyBudget::PerKey {
                self.proof_rate.check(&proof.jkt).map_err(Error::rate_limited)?;
            }
            self.spend_proof(proof).await?;
        }
        Ok(proof)
    }

    /// Spends a verified proof's `jti` (on every node), when the request it came with is
    /// known good: a replay fails from then on.
    pub async fn spend_proof(&self, proof: &Proof) -> Result<(), Error> {
        let max_age = self.config.dpop_proof_max_age.as_secs() as i64;
        let key = [
            b"dpop-jti\0".as_slice(),
            proof.jkt.as_bytes(),
            b"\0",
            proof.jti.as_bytes(),
        ]
        .concat();
        let until_ms = (proof.accepted_until(max_age) + 1) * 1000;
        if !self.store.remember_once(&key, until_ms).await? {
            return Err(invalid_proof("the proof's jti was used before"));
        }
        Ok(())
    }

    /// [`Provider::spend_proof`] for a grant's proof, if it has one; its key's thumbprint.
    pub(crate) async fn spend_grant_proof<'p>(&self, proof: Option<&'p Proof>) -> Result<Option<&'p str>, Error> {
        match proof {
            Some(proof) => {
                self.spend_proof(proof).await?;
                Ok(Some(proof.jkt.as_str()))
            }
            None => Ok(None),
        }
    }

    /// Verifies the request's proof, if it has one (the proof itself and the server nonce),
    /// without spending its `jti`.
    async fn verify_request_proof(
        &self,
        request: &ProofRequest,
        access_token: Option<&str>,
    ) -> Result<Option<Proof>, Error> {
        let Some(proof) = request.proof().map_err(invalid_proof)? else {
            return Ok(None);
        };
        let max_age = self.config.dpop_proof_max_age.as_secs() as i64;
        let expected = Expected {
            method: &request.method,
            url: &request.url,
            access_token,
            now: now(),
            max_age,
        };
        let proof = verify_proof(proof, &expected).map_err(invalid_proof)?;
        if self.config.dpop_nonce && !self.nonce_valid(proof.nonce.as_deref()).await? {
            return Err(Error {
                dpop_nonce: Some(self.dpop_nonce().await?),
                ..Error::new(
                    ErrorCode::UseDpopNonce,
                    "the proof must carry the nonce in the DPoP-Nonce header",
                )
            });
        }
        Ok(Some(proof))
    }

    /// A server nonce for proofs (RFC 9449 §8), when nonces are on: valid on every node for
    /// this window and the next.
    pub async fn dpop_nonce(&self) -> Result<String, Error> {
        let window = self.nonce_window(now());
        Ok(encode_nonce(&self.nonce_key().await?, window))
    }

    /// A fresh nonce for a successful response, if nonces are on (for the `DPoP-Nonce` header,
    /// RFC 9449 §8.2): the client's next proof can carry it without a `use_dpop_nonce` round
    /// trip when the window has moved on.
    pub async fn next_dpop_nonce(&self) -> Option<String> {
        if !self.config.dpop_nonce {
            return None;
        }
        self.dpop_nonce().await.ok()
    }

    async fn nonce_valid(&self, nonce: Option<&str>) -> Result<bool, Error> {
        let Some(nonce) = nonce else {
            return Ok(false);
        };
        let key = self.nonce_key().await?;
        let window = self.nonce_window(now());
        Ok([window, window.saturating_sub(1)]
            .iter()
            .any(|w| nonce_matches(&key, *w, nonce)))
    }

    /// Nonce windows are as long as a proof's acceptance window, so a nonce outlives any proof
    /// made with it and changes every window.
    fn nonce_window(&self, now: i64) -> u64 {
        let length = self.config.dpop_proof_max_age.as_secs().max(1);
        now.max(0) as u64 / length
    }

    /// The nonce key: one server secret shared by every node, made on first use.
    async fn nonce_key(&self) -> Result<hmac::Key, Error> {
        self.hmac_key(NONCE_SECRET).await
    }
}

/// `window` (8 bytes, big-endian) and its HMAC-SHA256, base64url.
fn encode_nonce(key: &hmac::Key, window: u64) -> String {
    let tag = hmac::sign(key, &window.to_be_bytes());
    URL_SAFE_NO_PAD.encode([&window.to_be_bytes()[..], tag.as_ref()].concat())
}

/// Whether `nonce` is the nonce of `window` (ring compares the tag in constant time).
fn nonce_matches(key: &hmac::Key, window: u64, nonce: &str) -> bool {
    match URL_SAFE_NO_PAD.decode(nonce) {
        Ok(bytes) if bytes.len() == 40 && bytes[..8] == window.to_be_bytes() => {
            hmac::verify(key, &bytes[..8], &bytes[8..]).is_ok()
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ring::rand::SystemRandom;
    use ring::signature::{Ed25519KeyPair, KeyPair};
    use serde_json::json;

    /// A proof signed with a fresh Ed25519 key: the proof and the key's public JWK.
    fn proof(claims: Value) -> (String, Value) {
        let pkcs8 = Ed25519KeyPair::generate_pkcs8(&SystemRandom::new()).unwrap();
        let pair = Ed25519KeyPair::from_pkcs8(pkcs8.as_ref()).unwrap();
        let jwk = json!({"kty": "OKP", "crv": "Ed25519", "x": URL_SAFE_NO_PAD.encode(pair.public_key())});
        let header = json!({"typ": "dpop+jwt", "alg": "EdDSA", "jwk": jwk});
        let input = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(header.to_string()),
            URL_SAFE_NO_PAD.encode(claims.to_string())
        );
        let signature = URL_SAFE_NO_PAD.encode(pair.sign(input.as_bytes()));
        (format!("{input}.{signature}"), jwk)
    }

    const URL: &str = "https://as.example/o/token/";

    fn expected(now: i64) -> Expected<'static> {
        Expected {
            method: "POST",
            url: URL,
            access_token: None,
            now,
            max_age: 60,
        }
    }

    /// RFC 7638 §3.1's example key and thumbprint.
    #[test]
    fn the_thumbprint_is_rfc_7638s() {
        let jwk = json!({"kty": "RSA", "e": "AQAB", "alg": "RS256", "kid": "2011-04-29",
            "n": "0vx7agoebGcQSuuPiLJXZptN9nndrQmbXEps2aiAFbWhM78LhWx4cbbfAAtVT86zwu1RK7aPFFxuhDR1L6tSoc_BJECPebWKRXjBZCiFV4n3oknjhMstn64tZ_2W-5JsGY4Hc5n9yBXArwl93lqt7_RN5w6Cf0h4QyQ5v-65YGjQR0_FDW2QvzqY368QQMicAtaSqzs8KJZgnYb9c7d0zgdAZHzu6qMQvRL5hajrn1n91CbOpbISD08qNLyrdkt-bFTWhAI4vMQFh6WeZu0fM4lFd2NcRwr3XPksINHaQ-G_xBniIqbw0Ls1jF44-csFCur-kEgU8awapJzKnqDKgw"});
        assert_eq!(thumbprint(&jwk).unwrap(), "NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs");
    }

    #[test]
    fn a_proof_for_this_request_verifies_and_names_its_keys_thumbprint() {
        let now = now();
        let (signed, jwk) = proof(json!({"htm": "POST", "htu": URL, "iat": now, "jti": "j1"}));
        let verified = verify_proof(&signed, &expected(now)).unwrap();
        assert_eq!(verified.jkt, thumbprint(&jwk).unwrap());
        // RFC 9449 §4.3 item 9: query and fragment are not compared.
        let (signed, _) =
            proof(json!({"htm": "POST", "htu": "https://AS.example:443/o/token/?x=1#f", "iat": now, "jti": "j"}));
        assert!(verify_proof(&signed, &expected(now)).is_ok());
    }

    #[test]
    fn a_proof_for_another_request_or_time_is_refused() {
        let now = now();
        for claims in [
            json!({"htm": "GET", "htu": URL, "iat": now, "jti": "j"}),
            json!({"htm": "POST", "htu": "https://as.example/o/userinfo/", "iat": now, "jti": "j"}),
            json!({"htm": "POST", "htu": URL, "iat": now - 61, "jti": "j"}),
            json!({"htm": "POST", "htu": URL, "iat": now + 60, "jti": "j"}),
            json!({"htm": "POST", "htu": URL, "iat": now}),
            json!({"htm": "POST", "htu": URL, "iat": now, "jti": "j", "nonce": 5}),
        ] {
            let (signed, _) = proof(claims.clone());
            assert!(verify_proof(&signed, &expected(now)).is_err(), "{claims}");
        }
        let (signed, _) = proof(json!({"htm": "POST", "htu": URL, "iat": now, "jti": "j", "ath": "x"}));
        let with_token = Expected {
            access_token: Some("token"),
            ..expected(now)
        };
        assert!(verify_proof(&signed, &with_token).is_err());
    }

    #[test]
    fn nonces_hold_for_their_window_only_and_cannot_be_forged() {
        let key = hmac::Key::new(hmac::HMAC_SHA256, &[7; 32]);
        let nonce = encode_nonce(&key, 100);
        assert!(nonce_matches(&key, 100, &nonce));
        assert!(!nonce_matches(&key, 101, &nonce));
        let other = hmac::Key::new(hmac::HMAC_SHA256, &[8; 32]);
        assert!(!nonce_matches(&other, 100, &nonce));
        assert!(!nonce_matches(&key, 100, "not a nonce"));
    }

    #[test]
    fn several_proof_headers_are_an_error() {
        let request = ProofRequest {
            proofs: vec!["a".into(), "b".into()],
            ..Default::default()
        };
        assert!(request.proof().is_err());
    }
}
