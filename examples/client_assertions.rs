//! Mints `private_key_jwt` client assertions for the benchmark (`benches/bench.py`), which
//! cannot sign one per request from wrk's Lua: makes an ES256 key, writes its public JWK Set,
//! and writes COUNT assertions (one per line, each with its own `jti`) for CLIENT_ID addressed
//! to AUDIENCE, valid for the next five minutes.
//!
//! Run: `cargo run --release --example client_assertions -- jwks OUT.json`
//!      `cargo run --release --example client_assertions -- sign KEY.p8 CLIENT_ID AUDIENCE COUNT OUT.txt`
//! (`jwks` also writes the private key, PKCS#8, beside OUT.json as OUT.json.p8.)

use std::io::Write;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use ring::rand::SystemRandom;
use ring::signature::{EcdsaKeyPair, KeyPair, ECDSA_P256_SHA256_FIXED_SIGNING};
use serde_json::json;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let rng = SystemRandom::new();
    match args.iter().map(String::as_str).collect::<Vec<_>>().as_slice() {
        ["jwks", out] => {
            let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng).expect("a key");
            let pair = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8.as_ref(), &rng).expect("a key");
            let point = pair.public_key().as_ref();
            let jwks = json!({"keys": [{"kty": "EC", "crv": "P-256", "kid": "bench", "alg": "ES256",
                "x": URL_SAFE_NO_PAD.encode(&point[1..33]), "y": URL_SAFE_NO_PAD.encode(&point[33..])}]});
            std::fs::write(out, jwks.to_string()).expect("the JWK Set is written");
            std::fs::write(format!("{out}.p8"), pkcs8.as_ref()).expect("the key is written");
        }
        ["sign", key, client_id, audience, count, out] => {
            let pkcs8 = std::fs::read(key).expect("the key file");
            let pair = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &pkcs8, &rng).expect("a PKCS#8 key");
            let header = URL_SAFE_NO_PAD.encode(r#"{"alg":"ES256","kid":"bench","typ":"JWT"}"#);
            let now = time::OffsetDateTime::now_utc().unix_timestamp();
            let mut file = std::io::BufWriter::new(std::fs::File::create(out).expect("the output file"));
            for i in 0..count.parse::<u64>().expect("COUNT is a number") {
                let claims = json!({"iss": client_id, "sub": client_id, "aud": audience, "iat": now,
                    "exp": now + 300, "jti": format!("bench-{now}-{i}")});
                let input = format!("{header}.{}", URL_SAFE_NO_PAD.encode(claims.to_string()));
                let signature = pair.sign(&rng, input.as_bytes()).expect("signing works");
                writeln!(file, "{input}.{}", URL_SAFE_NO_PAD.encode(signature.as_ref())).expect("written");
            }
        }
        _ => {
            eprintln!("usage: client_assertions jwks OUT.json | sign KEY.p8 CLIENT_ID AUDIENCE COUNT OUT.txt");
            std::process::exit(2);
        }
    }
}
