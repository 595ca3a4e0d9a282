//! A compact JWS taken apart (RFC 7515 §7.1) and the public JWKs (RFC 7517) its signature may be
//! checked with: what `private_key_jwt` client assertions (RFC 7523) and DPoP proofs (RFC 9449)
//! share. Only asymmetric algorithms are known here: `none` and HMACs are refused before any
//! key is looked at, and a JWK holding private or secret material is refused outright.
//!
//! Ed25519 signatures are accepted under both of their JWS names: `EdDSA` (RFC 8037) and
//! `Ed25519` (RFC 9864, which deprecates `EdDSA`; openid-client v6 sends it).

use jsonwebtoken::{Algorithm, DecodingKey};
use serde_json::Value;

/// The largest JWS read.
const MAX_JWS_BYTES: usize = 8 * 1024;

/// The algorithm a JWS `alg` name stands for: ES256, EdDSA (or Ed25519), RS256 or PS256.
pub fn algorithm(name: &str) -> Option<Algorithm> {
    match name {
        "ES256" => Some(Algorithm::ES256),
        "EdDSA" | "Ed25519" => Some(Algorithm::EdDSA),
        "RS256" => Some(Algorithm::RS256),
        "PS256" => Some(Algorithm::PS256),
        _ => None,
    }
}

/// A public key a JWS may be verified with.
pub struct VerificationKey {
    pub kid: Option<String>,
    /// The algorithms the key may be used with: fixed by its type, or by its `alg`.
    pub algs: &'static [Algorithm],
    pub key: DecodingKey,
}

/// One public JWK: `Ok(None)` for a key that is not for signatures; an error for a private,
/// symmetric, unsupported or malformed key, or an RSA key under 2048 bits.
pub fn parse_jwk(jwk: &Value) -> Result<Option<VerificationKey>, String> {
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
        (Some("EC"), Some("P-256")) => {
            check_p256_point(s("x")?, s("y")?)?;
            (ES256, DecodingKey::from_ec_components(s("x")?, s("y")?))
        }
        (Some("OKP"), Some("Ed25519")) => {
            if coordinate(s("x")?).map(|x| x.len()) != Some(32) {
                return Err("an Ed25519 key's x must be 32 bytes".into());
            }
            (EDDSA, DecodingKey::from_ed_components(s("x")?))
        }
        (Some("RSA"), _) => {
            // ring verifies RS256 and PS256 with 2048- to 8192-bit keys only: a smaller key would
            // register and then never authenticate.
            if !(2048..=8192).contains(&rsa_bits(s("n")?)) {
                return Err("an RSA key needs 2048 to 8192 bits".into());
            }
            (RSA, DecodingKey::from_rsa_components(s("n")?, s("e")?))
        }
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
            let index = algorithm(alg)
                .and_then(|a| family.iter().position(|f| *f == a))
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

/// A JWK coordinate's bytes (base64url without padding), if it is one.
fn coordinate(text: &str) -> Option<Vec<u8>> {
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use base64::Engine;
    URL_SAFE_NO_PAD.decode(text).ok()
}

/// Refuses a P-256 key whose coordinates are not 32 bytes each or not a point on the curve: it
/// would register and then verify nothing (or, with a careless verifier, worse).
fn check_p256_point(x: &str, y: &str) -> Result<(), String> {
    let (Some(x), Some(y)) = (coordinate(x), coordinate(y)) else {
        return Err("an EC key's x and y must be base64url".into());
    };
    if x.len() != 32 || y.len() != 32 {
        return Err("a P-256 key's x and y must be 32 bytes each".into());
    }
    let point = [&[0x04][..], &x, &y].concat();
    p256::PublicKey::from_sec1_bytes(&point)
        .map(drop)
        .map_err(|_| "the EC key is not a point on P-256".into())
}

/// The size of an RSA modulus given as a JWK's base64url `n` (0 if it is not base64url).
fn rsa_bits(n: &str) -> usize {
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use base64::Engine;
    let bytes = URL_SAFE_NO_PAD.decode(n).unwrap_or_default();
    match bytes.iter().position(|b| *b != 0) {
        Some(first) => (bytes.len() - first) * 8 - bytes[first].leading_zeros() as usize,
        None => 0,
    }
}

/// A compact JWS taken apart, its signature not yet verified.
pub struct Jws<'a> {
    pub alg: Algorithm,
    pub kid: Option<String>,
    /// The protected header, a JSON object.
    pub header: Value,
    pub claims: Value,
    signing_input: &'a str,
    signature: &'a str,
}

impl<'a> Jws<'a> {
    /// Reads a compact JWS's header and claims. The header is read here rather than by
    /// jsonwebtoken, which does not know RFC 9864's `Ed25519`.
    pub fn parse(assertion: &'a str) -> Result<Jws<'a>, String> {
        use base64::engine::general_purpose::URL_SAFE_NO_PAD;
        use base64::Engine;
        if assertion.len() > MAX_JWS_BYTES {
            return Err("the JWS is too large".into());
        }
        let json = |part: &str| -> Result<Value, String> {
            let bytes = URL_SAFE_NO_PAD.decode(part).map_err(|_| "the JWS is not base64url")?;
            match serde_json::from_slice(&bytes) {
                Ok(value @ Value::Object(_)) => Ok(value),
                _ => Err("the JWS header or claims are not a JSON object".into()),
            }
        };
        let (signing_input, signature) = assertion.rsplit_once('.').ok_or("not a JWS")?;
        let (header, claims) = signing_input
            .split_once('.')
            .filter(|(_, claims)| !claims.contains('.'))
            .ok_or("not a compact JWS")?;
        let header = json(header)?;
        let name = header["alg"].as_str().unwrap_or_default();
        // An HMAC, `none` or anything else is refused before any key is looked at.
        let alg = algorithm(name).ok_or_else(|| format!("alg {name:?} is not accepted"))?;
        // RFC 7515 §4.1.11: extensions listed in `crit` must be understood; none is.
        if header.get("crit").is_some() {
            return Err("the header has crit extensions".into());
        }
        let kid = match header.get("kid") {
            None => None,
            Some(Value::String(kid)) => Some(kid.clone()),
            Some(_) => return Err("kid is not a string".into()),
        };
        Ok(Jws {
            alg,
            kid,
            header,
            claims: json(claims)?,
            signing_input,
            signature,
        })
    }

    pub fn verifies_with(&self, key: &DecodingKey) -> bool {
        jsonwebtoken::crypto::verify(self.signature, self.signing_input.as_bytes(), key, self.alg).unwrap_or(false)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use base64::Engine;
    use serde_json::json;

    /// RFC 9864 §2.2 names Ed25519 signatures `Ed25519` and deprecates `EdDSA`: an Ed25519 key
    /// may carry either name, and an assertion's header may use either.
    #[test]
    fn ed25519_is_accepted_under_both_of_its_jws_names() {
        let okp = json!({"kty": "OKP", "crv": "Ed25519", "x": "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"});
        for name in ["EdDSA", "Ed25519"] {
            assert_eq!(algorithm(name), Some(Algorithm::EdDSA));
            let mut named = okp.clone();
            named["alg"] = name.into();
            let key = parse_jwk(&named).unwrap().unwrap();
            assert_eq!(key.algs, [Algorithm::EdDSA]);
        }
        let rsa = json!({"kty": "RSA", "alg": "Ed25519", "n": "sXchDaQebHnPiGvyDOAT4saGEUetSyo9MKLOoWFsueri23bOdgWp4Dy1WlUzewbgBHod5pcM9H95GQRV3JDXboIRROSBigeC5yjU1hGzHHyXss8UDprecbAYxknTcQkhslANGRUZmdTOQ5qTRsLAt6BTYuyvVRdhS8exSZEy_c4gs_7svlJJQ4H9_NxsiIoLwAEk7-Q3UXERGYw_75IDrGA84-lA_-Ct4eTlXHBIY2EaV7t7LjJaynVJCpkv4LKjTTAumiGUIuQhrNhZLuF_RJLqHpM2kgWFLU7-VTdL1VbC2tejvcI2BlMkEpk1BzBZI0KQB0GaDWFLN-aEAw3vRw", "e": "AQAB"});
        assert!(parse_jwk(&rsa).is_err(), "an RSA key cannot be an Ed25519 key");
        for name in ["none", "HS256", "ES384", "eddsa", ""] {
            assert_eq!(algorithm(name), None, "{name}");
        }
    }

    /// The third review (finding 12): registration took P-256 points off the curve and
    /// Ed25519 keys of any length.
    #[test]
    fn ec_keys_must_be_points_on_the_curve_and_ed25519_keys_32_bytes() {
        // RFC 7515 Appendix A.3's key.
        let x = "f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU";
        let y = "x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0";
        let ec = |x: &str, y: &str| json!({"kty": "EC", "crv": "P-256", "x": x, "y": y});
        assert!(parse_jwk(&ec(x, y)).unwrap().is_some());
        let off_curve = "y_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0";
        let refusal = |jwk: Value| parse_jwk(&jwk).err().unwrap_or_default();
        assert!(refusal(ec(x, off_curve)).contains("not a point"));
        assert!(refusal(ec(&x[..40], y)).contains("32 bytes"));
        let okp = |x: &str| json!({"kty": "OKP", "crv": "Ed25519", "x": x});
        assert!(parse_jwk(&okp("11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo")).is_ok());
        assert!(refusal(okp("11qYAYKxCrfVS_7TyWQHOg")).contains("32 bytes"));
        assert!(parse_jwk(&okp(&URL_SAFE_NO_PAD.encode([1u8; 40]))).is_err());
    }

    #[test]
    fn a_header_without_an_accepted_alg_or_with_crit_is_refused_before_any_key() {
        let jws = |header: Value| {
            let claims = json!({"iss": "c", "sub": "c"});
            format!(
                "{}.{}.c2ln",
                URL_SAFE_NO_PAD.encode(header.to_string()),
                URL_SAFE_NO_PAD.encode(claims.to_string())
            )
        };
        let ed25519 = jws(json!({"alg": "Ed25519", "kid": "k"}));
        let parsed = Jws::parse(&ed25519).unwrap();
        assert_eq!((parsed.alg, parsed.kid.as_deref()), (Algorithm::EdDSA, Some("k")));
        for header in [
            json!({"alg": "none"}),
            json!({"alg": "HS256"}),
            json!({}),
            json!({"alg": "ES256", "crit": ["exp"], "exp": 1}),
            json!({"alg": "ES256", "kid": 7}),
        ] {
            assert!(Jws::parse(&jws(header.clone())).is_err(), "{header}");
        }
        let five_parts = format!("{}.e30.e30", jws(json!({"alg": "ES256"})));
        assert!(Jws::parse(&five_parts).is_err(), "a JWE's five parts are not a JWS");
    }
}
