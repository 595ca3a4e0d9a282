//! Findings of the pre-release attack on the new features (private_key_jwt, Client ID
//! Metadata Documents, the device authorization grant). Each test fails while its bug is there.

use jsonwebtoken::Algorithm;
use serde_json::{json, Value};
use tessera::oauth::client::NewClient;
use tessera::oauth::client_assertion::ClientKeys;
use tessera::store::{ClientType, GrantType};

use crate::helpers::*;
use crate::private_key_jwt::TestKey;

const ASSERTION_TYPE: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";

async fn key_client(app: &TestApp, key: &TestKey) -> String {
    let (client, _) = app
        .provider
        .register_client(NewClient {
            name: "Key Client".into(),
            client_type: ClientType::Confidential,
            grant_types: vec![GrantType::ClientCredentials],
            redirect_uris: vec![],
            scope: "read".into(),
            resources: vec![],
            access_token_ttl: None,
            refresh_token_ttl: None,
            skip_consent: false,
            owner_user_id: None,
            post_logout_redirect_uris: vec![],
            id_token_signed_response_alg: None,
            admin: false,
            keys: Some(ClientKeys::Jwks(key.jwks())),
        })
        .await
        .unwrap();
    client.client_id
}

async fn client_credentials_with(app: &TestApp, assertion: &str) -> (u16, Value) {
    let response = app
        .http
        .post(app.url("/o/token/"))
        .form(&[
            ("grant_type", "client_credentials"),
            ("scope", "read"),
            ("client_assertion_type", ASSERTION_TYPE),
            ("client_assertion", assertion),
        ])
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

/// `exp` written as a JSON number with a fraction (or above i64::MAX) passes jsonwebtoken's
/// check (it accepts floats) but `claims["exp"].as_i64()` reads it as 0 in
/// `check_assertion`: the 5-minute lifetime cap is skipped, and the `jti` is remembered only
/// until 30 s after 1970, i.e. not at all. One captured assertion then authenticates the
/// client forever, any number of times.
#[tokio::test]
async fn an_assertion_with_a_fractional_exp_is_neither_replayable_nor_long_lived() {
    let app = spawn_app().await;
    let key = TestKey::new(Algorithm::ES256);
    let client_id = key_client(&app, &key).await;
    let now = tessera::clock::now();

    // A normal lifetime, exp with a fraction: accepted once, then a replay.
    let assertion = key.sign(&json!({"iss": client_id, "sub": client_id, "aud": app.issuer,
        "iat": now, "exp": now as f64 + 60.5, "jti": "fractional-exp"}));
    let first = client_credentials_with(&app, &assertion).await;
    assert_eq!(first.0, 200, "{first:?}");
    let replay = client_credentials_with(&app, &assertion).await;
    assert_eq!(
        (replay.0, replay.1["error"].as_str()),
        (401, Some("invalid_client")),
        "the same assertion (same jti) was accepted twice: {replay:?}"
    );

    // Ten years ahead: must be refused as more than 300 s ahead.
    let long_lived = key.sign(&json!({"iss": client_id, "sub": client_id, "aud": app.issuer,
        "iat": now, "exp": now as f64 + 315_360_000.5, "jti": "ten-years"}));
    let answer = client_credentials_with(&app, &long_lived).await;
    assert_eq!(
        (answer.0, answer.1["error"].as_str()),
        (401, Some("invalid_client")),
        "an assertion valid for ten years was accepted: {answer:?}"
    );

    // exp above i64::MAX (but a valid u64): the same bypass.
    let huge = key.sign(&json!({"iss": client_id, "sub": client_id, "aud": app.issuer,
        "iat": now, "exp": 18_000_000_000_000_000_000u64, "jti": "huge-exp"}));
    let answer = client_credentials_with(&app, &huge).await;
    assert_eq!(
        (answer.0, answer.1["error"].as_str()),
        (401, Some("invalid_client")),
        "an assertion with exp beyond i64 was accepted: {answer:?}"
    );
}
