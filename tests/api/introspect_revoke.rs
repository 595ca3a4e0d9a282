use crate::helpers::*;
use serde_json::Value;

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
