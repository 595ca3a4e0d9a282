//! The verifier's cost per token against the raw cost of the signature check it contains.
//!
//! Run: `cargo bench --bench verify`. For each algorithm it signs one access token with a
//! fresh Tessera key, then times `tessera::resource::Verifier::verify` (header parse, cache
//! lookup, signature, claim checks) and ring's bare signature verification of the same token.

use std::time::Instant;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use ring::signature::{UnparsedPublicKey, ECDSA_P256_SHA256_FIXED, ED25519, RSA_PKCS1_2048_8192_SHA256};
use serde_json::{json, Value};
use tessera::keys::{Algorithm, FolderVault, KeyVault, Keyring};
use tessera::resource::{Verifier, VerifierConfig};

const ROUNDS: u32 = 20_000;

fn raw_public_key(jwk: &Value) -> Vec<u8> {
    let b = |name: &str| URL_SAFE_NO_PAD.decode(jwk[name].as_str().unwrap()).unwrap();
    match jwk["kty"].as_str().unwrap() {
        "EC" => [vec![4], b("x"), b("y")].concat(),
        "OKP" => b("x"),
        // ring's RSA verifier takes the DER RSAPublicKey; this bench builds it from n and e.
        _ => rsa_public_key_der(&b("n"), &b("e")),
    }
}

fn der_integer(bytes: &[u8]) -> Vec<u8> {
    let mut value = bytes.to_vec();
    if value[0] & 0x80 != 0 {
        value.insert(0, 0);
    }
    [vec![0x02], der_length(value.len()), value].concat()
}

fn der_length(len: usize) -> Vec<u8> {
    match len {
        0..=127 => vec![len as u8],
        128..=255 => vec![0x81, len as u8],
        _ => vec![0x82, (len >> 8) as u8, len as u8],
    }
}

fn rsa_public_key_der(n: &[u8], e: &[u8]) -> Vec<u8> {
    let body = [der_integer(n), der_integer(e)].concat();
    [vec![0x30], der_length(body.len()), body].concat()
}

fn main() {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    println!(
        "{:<7} {:>16} {:>16} {:>8}",
        "alg", "Verifier ns/op", "raw sig ns/op", "ratio"
    );
    for alg in [Algorithm::ES256, Algorithm::EdDSA, Algorithm::RS256] {
        let dir = tempfile::tempdir().unwrap();
        let vault = FolderVault::new(dir.path());
        let keys = runtime.block_on(async {
            Keyring::open_or_init(&vault).await.unwrap();
            Keyring::rotate(&vault, alg).await.unwrap();
            Keyring::key_set(&vault.read().await.unwrap()).unwrap()
        });
        let issuer = "https://issuer.example";
        let claims = json!({"iss": issuer, "sub": "u", "aud": issuer, "exp": tessera::now() + 3600,
            "iat": tessera::now(), "jti": "j", "client_id": "c", "scope": "read"});
        let token = keys.sign_jwt("at+jwt", &claims).unwrap();
        let jwks: Value = serde_json::from_str(&keys.jwks).unwrap();
        let verifier =
            Verifier::from_jwks(VerifierConfig::new(issuer, issuer), &jwks, "http://127.0.0.1:9/unused").unwrap();

        let verified = runtime.block_on(async {
            let started = Instant::now();
            for _ in 0..ROUNDS {
                verifier.verify(&token).await.expect("the token verifies");
            }
            started.elapsed()
        });

        let kid = keys.signing.kid.clone();
        let jwk = jwks["keys"]
            .as_array()
            .unwrap()
            .iter()
            .find(|k| k["kid"] == kid.as_str())
            .unwrap();
        let public = raw_public_key(jwk);
        let algorithm: &dyn ring::signature::VerificationAlgorithm = match alg {
            Algorithm::ES256 => &ECDSA_P256_SHA256_FIXED,
            Algorithm::EdDSA => &ED25519,
            Algorithm::RS256 => &RSA_PKCS1_2048_8192_SHA256,
        };
        let (message, signature) = token.rsplit_once('.').unwrap();
        let signature = URL_SAFE_NO_PAD.decode(signature).unwrap();
        let key = UnparsedPublicKey::new(algorithm, &public);
        let started = Instant::now();
        for _ in 0..ROUNDS {
            key.verify(message.as_bytes(), &signature)
                .expect("the raw signature verifies");
        }
        let raw = started.elapsed();
        let per = |d: std::time::Duration| d.as_nanos() as f64 / ROUNDS as f64;
        println!(
            "{:<7} {:>16.0} {:>16.0} {:>8.2}",
            alg.as_str(),
            per(verified),
            per(raw),
            per(verified) / per(raw)
        );
    }
}
