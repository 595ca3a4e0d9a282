//! Mints DPoP proofs (RFC 9449 §4.2) for the benchmark (`benches/bench.py`), which cannot sign
//! one per request from wrk's Lua: makes an Ed25519 key, and writes COUNT proofs (one per line,
//! each with its own `jti`) for METHOD on URL, issued now; with ACCESS_TOKEN, each carries its
//! hash as `ath` (for a resource server).
//!
//! Run: `cargo run --release --example dpop_proofs -- key OUT.p8`
//!      `cargo run --release --example dpop_proofs -- sign KEY.p8 METHOD URL COUNT OUT.txt [ACCESS_TOKEN]`

use std::io::Write;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use ring::rand::SystemRandom;
use ring::signature::{Ed25519KeyPair, KeyPair};
use serde_json::json;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.iter().map(String::as_str).collect::<Vec<_>>().as_slice() {
        ["key", out] => {
            let pkcs8 = Ed25519KeyPair::generate_pkcs8(&SystemRandom::new()).expect("a key");
            std::fs::write(out, pkcs8.as_ref()).expect("the key is written");
        }
        ["sign", key, method, url, count, out, rest @ ..] => {
            let pkcs8 = std::fs::read(key).expect("the key file");
            let pair = Ed25519KeyPair::from_pkcs8(&pkcs8).expect("a PKCS#8 Ed25519 key");
            let jwk = json!({"kty": "OKP", "crv": "Ed25519", "x": URL_SAFE_NO_PAD.encode(pair.public_key())});
            let header = URL_SAFE_NO_PAD.encode(json!({"typ": "dpop+jwt", "alg": "EdDSA", "jwk": jwk}).to_string());
            let ath = rest
                .first()
                .map(|token| URL_SAFE_NO_PAD.encode(ring::digest::digest(&ring::digest::SHA256, token.as_bytes())));
            let now = time::OffsetDateTime::now_utc().unix_timestamp();
            let mut file = std::io::BufWriter::new(std::fs::File::create(out).expect("the output file"));
            for i in 0..count.parse::<u64>().expect("COUNT is a number") {
                let mut claims = json!({"htm": method, "htu": url, "iat": now, "jti": format!("bench-{now}-{i}")});
                if let Some(ath) = &ath {
                    claims["ath"] = ath.as_str().into();
                }
                let input = format!("{header}.{}", URL_SAFE_NO_PAD.encode(claims.to_string()));
                let signature = pair.sign(input.as_bytes());
                writeln!(file, "{input}.{}", URL_SAFE_NO_PAD.encode(signature.as_ref())).expect("written");
            }
        }
        _ => {
            eprintln!("usage: dpop_proofs key OUT.p8 | sign KEY.p8 METHOD URL COUNT OUT.txt [ACCESS_TOKEN]");
            std::process::exit(2);
        }
    }
}
