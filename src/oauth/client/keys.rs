//! Where a client's public keys are (RFC 7591 `jwks` or `jwks_uri`), and the checks a JWK Set
//! passes: at registration strictly, when published leniently.

use serde_json::Value;
use url::Url;

use super::uri::MAX_URI_BYTES;
use crate::documents::Kind;
use crate::oauth::jws::{parse_jwk, VerificationKey};
use crate::oauth::Error;
use crate::store::ClientRecord;

/// The largest key set a client may register or publish, and its most keys.
pub(crate) const MAX_JWKS_BYTES: usize = Kind::KeySet.limits().max_bytes;
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
    pub(crate) fn validate(&self) -> Result<(), Error> {
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
                if uri.len() > MAX_URI_BYTES {
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
pub(super) fn parse_jwks(jwks: &Value, strict: bool) -> Result<Vec<VerificationKey>, String> {
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

#[cfg(test)]
mod tests {
    use super::*;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use base64::Engine;
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
