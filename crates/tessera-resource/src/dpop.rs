//! DPoP proofs (RFC 9449) checked without state: what the authorization server (token
//! endpoint, UserInfo) and a resource server ([`crate::Verifier::verify_dpop`]) both check,
//! in one implementation.
//!
//! A client signs a short JWT (the proof, `typ: dpop+jwt`) for each HTTP request with a key
//! whose public half is in the proof's header (`jwk`); tokens are bound to that key's RFC 7638
//! thumbprint (`cnf.jkt`, §6.1). A stolen token is then useless without the private key: every
//! use needs a fresh proof naming the request's method and URL (`htm`, `htu`), and at a
//! resource the token itself (`ath`, §7).
//!
//! [`verify_proof`] checks an asymmetric `alg` of [`SIGNING_ALGS`] (or `Ed25519`, RFC 9864)
//! that the key allows, a public `jwk` only, the signature, `htm`, `htu` without query and
//! fragment (§4.3 item 9), `iat` no older than the caller's window and at most [`FUTURE_SKEW`]
//! ahead, a `jti`, and `ath` when a token is presented. What needs state is the caller's: each
//! `jti` accepted once within [`Proof::accepted_until`], and server nonces (§8) if it uses them.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use serde_json::Value;
use url::Url;

use crate::jws::{parse_jwk, Jws};

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

#[cfg(test)]
mod tests {
    use super::*;
    use ring::rand::SystemRandom;
    use ring::signature::{Ed25519KeyPair, KeyPair};
    use serde_json::json;

    use crate::now;

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
}
