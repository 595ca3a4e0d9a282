//! `tessera::resource::Verifier`: offline verification as a resource server does it.

use std::time::Duration;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use serde_json::{json, Value};
use tessera::keys::{Algorithm, Keyring};
use tessera::resource::{Verifier, VerifierConfig, VerifyError};

use crate::helpers::*;

async fn verifier(app: &TestApp) -> Verifier {
    Verifier::discover(VerifierConfig::new(&app.issuer, &app.issuer))
        .await
        .expect("discovery works")
}

async fn access_token(app: &TestApp) -> String {
    let body: Value = app.client_credentials("read").await.json().await.unwrap();
    body["access_token"].as_str().unwrap().to_string()
}

fn forge(header: Value, claims: Value, signature: &[u8]) -> String {
    let part = |v: &Value| URL_SAFE_NO_PAD.encode(v.to_string());
    format!(
        "{}.{}.{}",
        part(&header),
        part(&claims),
        URL_SAFE_NO_PAD.encode(signature)
    )
}

#[tokio::test]
async fn a_valid_token_verifies_with_its_claims() {
    let app = spawn_app().await;
    let claims = verifier(&app).await.verify(&access_token(&app).await).await.unwrap();
    assert_eq!(claims.client_id, app.client.id);
    assert!(claims.has_scope("read") && !claims.has_scope("write"));
}

#[tokio::test]
async fn bad_tokens_are_rejected() {
    let app = spawn_app().await;
    let verifier = verifier(&app).await;
    let token = access_token(&app).await;
    let (header, claims) = jwt_parts(&token);
    let kid = header["kid"].clone();

    assert_eq!(verifier.verify("garbage").await.unwrap_err(), VerifyError::Malformed);
    // alg "none": not even a parsable JWS header for a verifier that never accepts it.
    let none = forge(json!({"alg": "none", "typ": "at+jwt", "kid": kid}), claims.clone(), b"");
    assert!(verifier.verify(&none).await.is_err());
    // HS256 "signed" with the public key: the key's algorithm wins.
    let hs = forge(
        json!({"alg": "HS256", "typ": "at+jwt", "kid": kid}),
        claims.clone(),
        b"mac",
    );
    assert_eq!(verifier.verify(&hs).await.unwrap_err(), VerifyError::WrongAlgorithm);
    // Another typ.
    let keys = app.provider.keys.current();
    let id_token_like = keys.sign_jwt("JWT", &claims).unwrap();
    assert_eq!(
        verifier.verify(&id_token_like).await.unwrap_err(),
        VerifyError::WrongType
    );
    // Tampered claims.
    let mut parts: Vec<&str> = token.split('.').collect();
    let widened = URL_SAFE_NO_PAD.encode(json!({"scope": "read write admin"}).to_string());
    parts[1] = &widened;
    assert!(matches!(
        verifier.verify(&parts.join(".")).await,
        Err(VerifyError::Invalid(_))
    ));
    // Expired beyond the leeway, and issued for another audience.
    let mut expired = claims.clone();
    expired["exp"] = json!(tessera::now() - 120);
    assert!(matches!(
        verifier.verify(&keys.sign_jwt("at+jwt", &expired).unwrap()).await,
        Err(VerifyError::Invalid(_))
    ));
    let mut elsewhere = claims.clone();
    elsewhere["aud"] = json!("https://another-api.example");
    assert!(matches!(
        verifier.verify(&keys.sign_jwt("at+jwt", &elsewhere).unwrap()).await,
        Err(VerifyError::Invalid(_))
    ));
}

#[tokio::test]
async fn discovery_refuses_metadata_of_another_issuer() {
    let app = spawn_app().await;
    let config = VerifierConfig::new(&format!("{}/other", app.issuer), &app.issuer);
    assert!(matches!(Verifier::discover(config).await, Err(VerifyError::Fetch(_))));
}

#[tokio::test]
async fn unknown_kids_refetch_the_jwks_at_most_once_per_interval() {
    let app = spawn_app().await;
    let verifier = verifier(&app).await;
    let token = access_token(&app).await;
    let (_, claims) = jwt_parts(&token);
    let before = verifier.jwks_fetches();
    for i in 0..50 {
        let forged = forge(
            json!({"alg": "ES256", "typ": "at+jwt", "kid": format!("made-up-{i}")}),
            claims.clone(),
            b"x",
        );
        assert_eq!(verifier.verify(&forged).await.unwrap_err(), VerifyError::UnknownKey);
    }
    assert_eq!(
        verifier.jwks_fetches() - before,
        1,
        "a flood of unknown kids causes one fetch"
    );
    assert!(verifier.verify(&token).await.is_ok(), "real tokens still verify");
}

#[tokio::test]
async fn a_token_from_a_rotated_key_is_verified_after_one_refetch() {
    let app = spawn_app().await;
    let config = VerifierConfig {
        min_refetch_interval: Duration::from_millis(0),
        ..VerifierConfig::new(&app.issuer, &app.issuer)
    };
    let verifier = Verifier::discover(config).await.unwrap();
    let vault = app.key_vault().await;
    let new_key = Keyring::rotate(vault.as_ref(), Algorithm::EdDSA).await.unwrap();
    let mut token = access_token(&app).await;
    for _ in 0..50 {
        if jwt_parts(&token).0["kid"] == new_key.kid.as_str() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
        token = access_token(&app).await;
    }
    assert_eq!(jwt_parts(&token).0["kid"], new_key.kid.as_str());
    assert!(
        verifier.verify(&token).await.is_ok(),
        "the new kid is fetched and accepted"
    );
}
