//! The benchmark's ceiling: a bare poem handler that parses a token-request form and signs one
//! ES256 JWT, with no client lookup, no storage and no OAuth checks. `benches/bench.py` runs it
//! beside Tessera so the token endpoint's overhead can be read against what HTTP plus one
//! signature cost on the same machine.
//!
//! Run: `cargo run --release --example ceiling -- 127.0.0.1:8001`

use std::sync::Arc;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use poem::listener::TcpListener;
use poem::web::{Data, Form, Json};
use poem::{handler, post, EndpointExt, Route, Server};
use ring::rand::SystemRandom;
use ring::signature::{EcdsaKeyPair, ECDSA_P256_SHA256_FIXED_SIGNING};
use serde::Deserialize;
use serde_json::{json, Value};

#[derive(Deserialize)]
struct TokenForm {
    grant_type: String,
    scope: Option<String>,
}

#[handler]
fn token(Form(form): Form<TokenForm>, key: Data<&Arc<EcdsaKeyPair>>) -> Json<Value> {
    let header = URL_SAFE_NO_PAD.encode(r#"{"alg":"ES256","typ":"at+jwt","kid":"ceiling"}"#);
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    let claims = json!({"iss": "http://ceiling", "sub": "client", "aud": "api", "exp": now + 3600, "iat": now,
        "jti": "x", "client_id": "client", "scope": form.scope.unwrap_or_default(), "grant": form.grant_type});
    let mut jwt = format!("{header}.{}", URL_SAFE_NO_PAD.encode(claims.to_string()));
    let signature = key.sign(&SystemRandom::new(), jwt.as_bytes()).expect("signing works");
    jwt = format!("{jwt}.{}", URL_SAFE_NO_PAD.encode(signature));
    Json(json!({"access_token": jwt, "token_type": "Bearer", "expires_in": 3600}))
}

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let addr = std::env::args().nth(1).unwrap_or_else(|| "127.0.0.1:8001".into());
    let rng = SystemRandom::new();
    let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng).expect("key generation works");
    let key =
        EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8.as_ref(), &rng).expect("fresh key parses");
    let app = Route::new().at("/o/token/", post(token)).data(Arc::new(key));
    Server::new(TcpListener::bind(addr)).run(app).await
}
