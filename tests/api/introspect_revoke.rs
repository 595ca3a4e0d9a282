//! Introspection (RFC 7662) and revocation (RFC 7009): what a token's holder and its client may
//! learn and end, and what other clients may not.

use serde_json::{json, Value};
use tessera::oauth::audit::Caller;

use crate::helpers::*;

#[tokio::test]
async fn introspection_reports_an_active_access_token_with_its_claims() {
    let app = spawn_app().await;
    let tokens = app.get_tokens().await;
    let access = tokens["access_token"].as_str().unwrap();
    let info = app.introspect(access).await;
    assert_eq!(info["active"], true);
    assert_eq!(info["token_type"], "Bearer");
    assert_eq!(info["client_id"], app.client.id.as_str());
    assert_eq!(info["scope"], "read write");
    assert_eq!(info["iss"], app.issuer.as_str());
    assert!(info["exp"].as_i64().is_some() && info["sub"].is_string());

    let refresh = app.introspect(tokens["refresh_token"].as_str().unwrap()).await;
    assert_eq!(refresh["active"], true);
    assert_eq!(refresh["token_type"], "refresh_token");
}

#[tokio::test]
async fn introspection_reports_garbage_and_tampered_tokens_inactive() {
    let app = spawn_app().await;
    let body: Value = app.client_credentials("read").await.json().await.unwrap();
    let token = body["access_token"].as_str().unwrap();
    let (head, rest) = token.split_once('.').unwrap();
    let (_, signature) = rest.split_once('.').unwrap();
    let forged_claims = base64::Engine::encode(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD,
        serde_json::json!({"iss": app.issuer, "scope": "admin", "exp": 9999999999i64}).to_string(),
    );
    let tampered = format!("{head}.{forged_claims}.{signature}");
    for token in ["garbage", tampered.as_str()] {
        let info = app.introspect(token).await;
        assert_eq!(
            info,
            serde_json::json!({"active": false}),
            "RFC 7662 §2.2: nothing else is revealed"
        );
    }
}

#[tokio::test]
async fn introspection_requires_a_confidential_client() {
    let app = spawn_app().await;
    let response = app
        .http
        .post(app.url("/o/introspect/"))
        .form(&[("token", "x"), ("client_id", app.public_client.id.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 401);
    assert_eq!(response.json::<Value>().await.unwrap()["error"], "invalid_client");
}

#[tokio::test]
async fn revoking_a_refresh_token_revokes_its_grant() {
    let app = spawn_app().await;
    let tokens = app.get_tokens().await;
    let response = app
        .revoke(tokens["refresh_token"].as_str().unwrap(), Some("refresh_token"))
        .await;
    assert_eq!(response.status(), 200);
    assert_eq!(
        app.refresh(tokens["refresh_token"].as_str().unwrap()).await.status(),
        400
    );
    // RFC 7009 §2.1: the access tokens of the same grant go too.
    assert_eq!(
        app.introspect(tokens["access_token"].as_str().unwrap()).await["active"],
        false
    );
}

#[tokio::test]
async fn revoking_an_access_token_makes_it_inactive() {
    let app = spawn_app().await;
    let body: Value = app.client_credentials("read").await.json().await.unwrap();
    let token = body["access_token"].as_str().unwrap();
    assert_eq!(app.introspect(token).await["active"], true);
    assert_eq!(app.revoke(token, Some("access_token")).await.status(), 200);
    assert_eq!(app.introspect(token).await["active"], false);
}

#[tokio::test]
async fn revoking_unknown_tokens_succeeds_and_bad_hints_are_refused() {
    let app = spawn_app().await;
    assert_eq!(app.revoke("never-issued", None).await.status(), 200, "RFC 7009 §2.2");
    let response = app.revoke("never-issued", Some("id_token")).await;
    assert_eq!(response.status(), 400);
    assert_eq!(
        response.json::<Value>().await.unwrap()["error"],
        "unsupported_token_type"
    );
    let response = app
        .http
        .post(app.url("/o/revoke_token/"))
        .form(&[("token", "x")])
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 401, "revocation authenticates the client");
}

#[tokio::test]
async fn a_client_cannot_revoke_another_clients_token() {
    let app = spawn_app().await;
    let tokens = app.get_tokens().await;
    let refresh = tokens["refresh_token"].as_str().unwrap();
    let response = app
        .http
        .post(app.url("/o/revoke_token/"))
        .form(&[("token", refresh), ("client_id", app.public_client.id.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200, "answered like success, revealing nothing");
    assert_eq!(app.refresh(refresh).await.status(), 200, "but nothing was revoked");
}

// The first adversarial review (issue 11, `SECURITY.md`), each finding as the attack that
// found it; each test failed on the code the review ran against.

/// Finding 9: a deleted client's access tokens stayed active at introspection (its
/// client_credentials tokens have no grant to revoke).
#[tokio::test]
async fn a_deleted_clients_access_tokens_are_inactive_everywhere() {
    let app = spawn_app().await;
    let settings = client_settings(
        "First party",
        tessera::store::ClientType::Confidential,
        vec![tessera::store::GrantType::ClientCredentials],
    );
    let (doomed, secret) = app.provider.register_client(&Caller::system(), settings).await.unwrap();
    let doomed = TestClient {
        id: doomed.client_id,
        secret,
    };
    let response = app.client_credentials_as(&doomed, "read").await;
    assert_eq!(response.status(), 200);
    let token = response.json::<serde_json::Value>().await.unwrap()["access_token"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(app.introspect(&token).await["active"], true);
    assert!(app.provider.delete_client(&Caller::system(), &doomed.id).await.unwrap());
    assert_eq!(app.introspect(&token).await["active"], false);
    assert!(
        app.provider.verify_access_token(&token).await.is_err(),
        "nor at UserInfo or the admin API"
    );
}

// The third adversarial review (issue 26, `SECURITY.md`), each finding as the attack that
// found it; each test failed on the code the review ran against.

/// Finding 10: any confidential client, one registered anonymously included, introspected
/// other clients' refresh and access tokens (`active`, `sub`, `client_id`, `scope`, `cnf`).
/// Now a client learns only about its own tokens (RFC 7662 §4) unless the operator lists it in
/// `introspection_clients` or it is an administration client.
#[tokio::test]
async fn a_client_introspects_only_its_own_tokens_unless_the_operator_allows_it() {
    let dirs = tempfile::tempdir().unwrap();
    let mut config = tessera::Config {
        registration: tessera::config::RegistrationPolicy {
            mode: tessera::config::RegistrationMode::Open,
            ..Default::default()
        },
        ..test_config(&dirs)
    };
    config.introspection_clients = vec!["resource-server-placeholder".into()];
    let app = spawn_app_with(config, dirs).await;
    let tokens = app.get_tokens().await;
    let registered: Value = app
        .http
        .post(app.url("/o/register/"))
        .json(&json!({"redirect_uris": ["https://snoop.example/cb"], "client_name": "Snoop"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let snoop = TestClient {
        id: registered["client_id"].as_str().unwrap().into(),
        secret: registered["client_secret"].as_str().map(str::to_string),
    };
    assert!(snoop.secret.is_some(), "{registered}");
    let introspect = |client: TestClient, token: String| {
        let http = app.http.clone();
        let url = app.url("/o/introspect/");
        async move {
            let response = http
                .post(url)
                .basic_auth(&client.id, client.secret.as_ref())
                .form(&[("token", token.as_str())])
                .send()
                .await
                .unwrap();
            assert_eq!(response.status(), 200);
            response.json::<Value>().await.unwrap()
        }
    };
    for kind in ["access_token", "refresh_token"] {
        let token = tokens[kind].as_str().unwrap().to_string();
        let answer = introspect(snoop.clone(), token.clone()).await;
        assert_eq!(answer, json!({"active": false}), "{kind}: another client's token");
        let answer = introspect(app.client.clone(), token.clone()).await;
        assert_eq!(answer["active"], true, "{kind}: the client's own token");
        let admin = app.register_admin_client(None).await;
        assert_eq!(
            introspect(admin, token).await["active"],
            true,
            "{kind}: an admin client"
        );
    }
    drop(app);

    // A resource server the operator lists may introspect any token (the issuer is fixed, so
    // that tokens stay good across the restart).
    let issuer = url::Url::parse("https://tessera.example").unwrap();
    let dirs = tempfile::tempdir().unwrap();
    let app = spawn_app_with(
        tessera::Config {
            issuer: Some(issuer.clone()),
            ..test_config(&dirs)
        },
        dirs,
    )
    .await;
    let (resource_server, secret) = app
        .provider
        .register_client(
            &tessera::oauth::audit::Caller::system(),
            client_settings(
                "API",
                tessera::store::ClientType::Confidential,
                vec![tessera::store::GrantType::ClientCredentials],
            ),
        )
        .await
        .unwrap();
    let resource_server = TestClient {
        id: resource_server.client_id,
        secret,
    };
    let tokens = app.get_tokens().await;
    let token = tokens["access_token"].as_str().unwrap().to_string();
    assert_eq!(app.introspect_as(&resource_server, &token).await["active"], false);
    let dirs = app.stop().await;
    let mut config = test_config(&dirs);
    config.issuer = Some(issuer);
    config.introspection_clients = vec![resource_server.id.clone()];
    let app = spawn_app_with(config, dirs).await;
    assert_eq!(app.introspect_as(&resource_server, &token).await["active"], true);
}
