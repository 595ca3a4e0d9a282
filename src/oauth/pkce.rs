//! Proof Key for Code Exchange (RFC 7636), S256 only.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use subtle::ConstantTimeEq;

use super::error::Error;

/// `code-verifier = 43*128unreserved` and the challenge has the same alphabet (RFC 7636 §4.1-4.2).
fn is_pkce_string(value: &str) -> bool {
    (43..=128).contains(&value.len())
        && value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~'))
}

/// Validates the authorization request's challenge. Only S256 is accepted: `plain` (or no
/// method, which RFC 7636 §4.3 defines as `plain`) gives no protection against a stolen code.
pub fn parse_challenge(challenge: &str, method: Option<&str>) -> Result<String, Error> {
    match method {
        Some("S256") => {}
        Some(_) | None => return Err(Error::invalid_request("code_challenge_method must be S256")),
    }
    // An S256 challenge is the unpadded base64url of a SHA-256 digest: exactly 43 characters.
    if challenge.len() != 43 || !is_pkce_string(challenge) {
        return Err(Error::invalid_request("code_challenge is malformed"));
    }
    Ok(challenge.to_string())
}

/// Checks a `code_verifier` against the stored S256 challenge (RFC 7636 §4.6).
pub fn verify(verifier: &str, challenge: &str) -> Result<(), Error> {
    if !is_pkce_string(verifier) {
        return Err(Error::invalid_grant("code_verifier is malformed"));
    }
    let digest = ring::digest::digest(&ring::digest::SHA256, verifier.as_bytes());
    let computed = URL_SAFE_NO_PAD.encode(digest);
    if bool::from(computed.as_bytes().ct_eq(challenge.as_bytes())) {
        Ok(())
    } else {
        Err(Error::invalid_grant("code_verifier does not match the code_challenge"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // RFC 7636 Appendix B.
    const VERIFIER: &str = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk";
    const CHALLENGE: &str = "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM";

    #[test]
    fn rfc7636_appendix_b_verifier_matches() {
        assert!(verify(VERIFIER, CHALLENGE).is_ok());
        assert!(verify(&VERIFIER.replace('d', "e"), CHALLENGE).is_err());
    }

    #[test]
    fn only_s256_challenges_are_accepted() {
        assert!(parse_challenge(CHALLENGE, Some("S256")).is_ok());
        assert!(parse_challenge(CHALLENGE, Some("plain")).is_err());
        assert!(parse_challenge(CHALLENGE, None).is_err());
        assert!(parse_challenge("short", Some("S256")).is_err());
    }

    #[test]
    fn malformed_verifiers_are_rejected() {
        assert!(verify("too-short", CHALLENGE).is_err());
        assert!(verify(&"a".repeat(129), CHALLENGE).is_err());
        assert!(verify(&format!("{}+", &VERIFIER[..42]), CHALLENGE).is_err());
    }
}
