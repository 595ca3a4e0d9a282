use std::sync::Arc;
use std::time::Duration;

use crate::helpers::*;
use serde_json::Value;
use tessera::oauth::audit::Caller;

#[tokio::test]
async fn client_credentials_yields_an_rfc9068_access_token() {
    let app = spawn_app().await;
    let response = app.client_credentials("read").await;
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["cache-control"], "no-store");
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["token_type"], "Bearer");
    assert_eq!(body["expires_in"], 3600);
    assert!(body.get("refresh_token").is_none(), "RFC 6749 §4.4.3: no refresh token");
    let token = body["access_token"].as_str().unwrap();

    let (header, claims) = jwt_parts(token);
    // RFC 9068 §2.1: typ at+jwt, and a kid that names a JWKS key.
    assert_eq!(header["typ"], "at+jwt");
    assert_eq!(header["alg"], "ES256");
    let jwks = app.get_jwks().await;
    assert!(jwks["keys"]
        .as_array()
        .unwrap()
        .iter()
        .any(|k| k["kid"] == header["kid"]));
    // RFC 9068 §2.2: iss, exp, aud, sub, client_id, iat, jti (and scope).
    assert_eq!(claims["iss"], app.issuer.as_str());
    assert_eq!(claims["sub"], app.client.id.as_str(), "sub is the client itself");
    assert_eq!(claims["client_id"], app.client.id.as_str());
    assert_eq!(claims["aud"], app.issuer.as_str(), "the default audience");
    assert_eq!(claims["scope"], "read");
    assert_eq!(claims["exp"].as_i64().unwrap() - claims["iat"].as_i64().unwrap(), 3600);
    assert!(claims["jti"].as_str().unwrap().len() >= 16);
    assert!(app.verify_with_jwks(token).await.is_some());
}

#[tokio::test]
async fn client_secret_post_is_accepted() {
    let app = spawn_app().await;
    let secret = app.client.secret.clone().unwrap();
    let response = app
        .http
        .post(app.url("/o/token/"))
        .form(&[
            ("grant_type", "client_credentials"),
            ("client_id", &app.client.id),
            ("client_secret", &secret),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
}

#[tokio::test]
async fn an_allowed_resource_becomes_the_audience_and_others_are_invalid_target() {
    let app = spawn_app().await;
    let ok = app
        .token(
            &app.client,
            &[("grant_type", "client_credentials"), ("resource", RESOURCE)],
        )
        .await;
    let token: Value = ok.json().await.unwrap();
    assert_eq!(jwt_parts(token["access_token"].as_str().unwrap()).1["aud"], RESOURCE);
    let refused = app
        .token(
            &app.client,
            &[
                ("grant_type", "client_credentials"),
                ("resource", "https://other.example"),
            ],
        )
        .await;
    assert_eq!(refused.status(), 400);
    assert_eq!(refused.json::<Value>().await.unwrap()["error"], "invalid_target");
}

#[tokio::test]
async fn no_scope_means_the_clients_whole_allowance() {
    let app = spawn_app().await;
    let body: Value = app
        .token(&app.client, &[("grant_type", "client_credentials")])
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(body["scope"], "read write");
}

#[tokio::test]
async fn a_grant_the_client_may_not_use_is_unauthorized_client() {
    let app = spawn_app().await;
    let response = app
        .token(&app.public_client, &[("grant_type", "client_credentials")])
        .await;
    assert_eq!(response.status(), 400);
    assert_eq!(response.json::<Value>().await.unwrap()["error"], "unauthorized_client");
}

#[tokio::test]
async fn an_unknown_grant_type_is_unsupported_grant_type() {
    let app = spawn_app().await;
    let response = app.token(&app.client, &[("grant_type", "password")]).await;
    assert_eq!(response.status(), 400);
    assert_eq!(
        response.json::<Value>().await.unwrap()["error"],
        "unsupported_grant_type"
    );
}

#[tokio::test]
async fn per_client_lifetimes_override_the_servers() {
    let app = spawn_app().await;
    let (client, secret) = app
        .provider
        .register_client(
            &Caller::system(),
            tessera::oauth::client::NewClient {
                name: "Short".into(),
                client_type: tessera::store::ClientType::Confidential,
                grant_types: vec![tessera::store::GrantType::ClientCredentials],
                redirect_uris: vec![],
                scope: "read".into(),
                resources: vec![],
                access_token_ttl: Some(120),
                refresh_token_ttl: None,
                skip_consent: false,
                owner_user_id: None,
                post_logout_redirect_uris: vec![],
                id_token_signed_response_alg: None,
                admin: false,
                keys: None,
                policy: Default::default(),
            },
        )
        .await
        .unwrap();
    let short = TestClient {
        id: client.client_id,
        secret,
    };
    let body: Value = app
        .token(&short, &[("grant_type", "client_credentials")])
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(body["expires_in"], 120);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn rotating_a_secret_under_load_switches_from_old_to_new_at_one_point() {
    let app = Arc::new(spawn_app().await);
    let old = app.client.clone();
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    // Steady client_credentials traffic with the old secret while the secret rotates.
    let hammer = {
        let (app, old, stop) = (app.clone(), old.clone(), stop.clone());
        tokio::spawn(async move {
            let mut log = Vec::new();
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let sent = std::time::Instant::now();
                let status = app.client_credentials_as(&old, "read").await.status().as_u16();
                log.push((sent, std::time::Instant::now(), status));
            }
            log
        })
    };
    tokio::time::sleep(Duration::from_millis(200)).await;
    let rotation_started = std::time::Instant::now();
    let secret = app
        .provider
        .rotate_client_secret(&Caller::system(), &old.id)
        .await
        .unwrap();
    let rotated = std::time::Instant::now();
    let new = TestClient {
        id: old.id.clone(),
        secret: Some(secret),
    };
    assert_eq!(
        app.client_credentials_as(&new, "read").await.status(),
        200,
        "the new secret works at once"
    );
    tokio::time::sleep(Duration::from_millis(200)).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let log = hammer.await.unwrap();
    assert!(
        log.iter().all(|(_, _, s)| *s == 200 || *s == 401),
        "only success or invalid_client"
    );
    // The old secret worked for every request answered before the rotation began, and for
    // none sent after it finished.
    assert!(log
        .iter()
        .filter(|(_, answered, _)| *answered < rotation_started)
        .all(|(_, _, s)| *s == 200));
    let after: Vec<_> = log.iter().filter(|(sent, _, _)| *sent > rotated).collect();
    assert!(
        !after.is_empty() && after.iter().all(|(_, _, s)| *s == 401),
        "the old secret is dead at once"
    );
}
