//! The admin API under /api/v1/: who may call it, problem details, paging, and each area
//! (clients, users, grants, keys) doing what the CLI does.

use std::time::Duration;
use tessera::oauth::audit::Caller;

use serde_json::{json, Value};

use crate::helpers::*;

async fn token_for(app: &TestApp, client: &TestClient, scope: &str) -> String {
    let response = app
        .token(client, &[("grant_type", "client_credentials"), ("scope", scope)])
        .await;
    assert_eq!(response.status(), 200);
    response.json::<Value>().await.unwrap()["access_token"]
        .as_str()
        .unwrap()
        .to_string()
}

async fn admin_token(app: &TestApp) -> String {
    let admin = app.register_admin_client(None).await;
    token_for(app, &admin, "tessera:admin").await
}

async fn call(app: &TestApp, method: &str, path: &str, token: Option<&str>, body: Option<Value>) -> reqwest::Response {
    let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
    let mut request = app.http.request(method, app.url(path));
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    if let Some(body) = body {
        request = request.json(&body);
    }
    request.send().await.unwrap()
}

/// Asserts a problem-details response and returns its body.
async fn problem(response: reqwest::Response, status: u16, code: &str) -> Value {
    assert_eq!(response.status(), status);
    assert_eq!(response.headers()["content-type"], "application/problem+json");
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["code"], code, "{body}");
    assert_eq!(body["status"], status);
    assert_eq!(body["type"], format!("urn:tessera:problem:{code}").as_str());
    assert!(body["title"].is_string() && body["detail"].is_string());
    body
}

fn new_client_body(name: &str) -> Value {
    json!({
        "name": name,
        "client_type": "confidential",
        "grant_types": ["client_credentials"],
        "scope": "read",
    })
}

#[tokio::test]
async fn without_a_valid_admin_token_nothing_is_read_or_changed() {
    let app = spawn_app().await;
    let clients_before = app.store.list_clients().await.unwrap().len();

    let none = call(&app, "POST", "/api/v1/clients", None, Some(new_client_body("x"))).await;
    assert!(none.headers()["www-authenticate"]
        .to_str()
        .unwrap()
        .starts_with("Bearer"));
    problem(none, 401, "invalid_token").await;
    let garbage = call(
        &app,
        "POST",
        "/api/v1/clients",
        Some("garbage"),
        Some(new_client_body("x")),
    )
    .await;
    problem(garbage, 401, "invalid_token").await;

    // A valid token without the admin scope.
    let ordinary = token_for(&app, &app.client, "read").await;
    let forbidden = call(
        &app,
        "POST",
        "/api/v1/clients",
        Some(&ordinary),
        Some(new_client_body("x")),
    )
    .await;
    assert!(forbidden.headers()["www-authenticate"]
        .to_str()
        .unwrap()
        .contains("insufficient_scope"));
    problem(forbidden, 403, "insufficient_scope").await;
    problem(
        call(&app, "GET", "/api/v1/users", Some(&ordinary), None).await,
        403,
        "insufficient_scope",
    )
    .await;

    // Ordinary clients cannot get the admin scope at all, nor register it.
    let refused = app
        .token(
            &app.client,
            &[("grant_type", "client_credentials"), ("scope", "tessera:admin")],
        )
        .await;
    assert_eq!(refused.status(), 400);
    assert_eq!(refused.json::<Value>().await.unwrap()["error"], "invalid_scope");

    // An expired admin token.
    let short = app.register_admin_client(Some(1)).await;
    let expiring = token_for(&app, &short, "tessera:admin").await;
    assert_eq!(
        call(&app, "GET", "/api/v1/keys", Some(&expiring), None).await.status(),
        200
    );
    tokio::time::sleep(Duration::from_millis(2100)).await;
    let expired = call(
        &app,
        "POST",
        "/api/v1/clients",
        Some(&expiring),
        Some(new_client_body("x")),
    )
    .await;
    problem(expired, 401, "invalid_token").await;

    // A revoked one, and one whose admin client was deleted.
    let admin = app.register_admin_client(None).await;
    let token = token_for(&app, &admin, "tessera:admin").await;
    app.http
        .post(app.url("/o/revoke_token/"))
        .basic_auth(&admin.id, admin.secret.as_ref())
        .form(&[("token", token.as_str())])
        .send()
        .await
        .unwrap();
    problem(
        call(&app, "GET", "/api/v1/clients", Some(&token), None).await,
        401,
        "invalid_token",
    )
    .await;
    let token = token_for(&app, &admin, "tessera:admin").await;
    app.provider.delete_client(&Caller::system(), &admin.id).await.unwrap();
    problem(
        call(&app, "GET", "/api/v1/clients", Some(&token), None).await,
        401,
        "invalid_token",
    )
    .await;

    // Two admin clients were registered by the test itself and one deleted; nothing else.
    assert_eq!(app.store.list_clients().await.unwrap().len(), clients_before + 1);
}

#[tokio::test]
async fn clients_are_created_paged_read_replaced_rotated_and_deleted() {
    let app = spawn_app().await;
    let bearer = admin_token(&app).await;
    let token = Some(bearer.as_str());

    let mut created = Vec::new();
    for i in 0..5 {
        let response = call(
            &app,
            "POST",
            "/api/v1/clients",
            token,
            Some(new_client_body(&format!("c{i}"))),
        )
        .await;
        assert_eq!(response.status(), 201);
        assert_eq!(
            response.headers()["cache-control"],
            "no-store",
            "the secret is never cached"
        );
        let body: Value = response.json().await.unwrap();
        assert!(body["client_secret"].as_str().unwrap().len() >= 43);
        created.push(body);
    }
    // Page through everything, two at a time.
    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let path = match &cursor {
            Some(c) => format!("/api/v1/clients?limit=2&cursor={c}"),
            None => "/api/v1/clients?limit=2".to_string(),
        };
        let page: Value = call(&app, "GET", &path, token, None).await.json().await.unwrap();
        let items = page["items"].as_array().unwrap();
        assert!(items.len() <= 2);
        seen.extend(items.iter().map(|c| c["client_id"].as_str().unwrap().to_string()));
        match page["next_cursor"].as_str() {
            Some(next) => cursor = Some(next.to_string()),
            None => break,
        }
    }
    let all = app.store.list_clients().await.unwrap();
    assert_eq!(seen.len(), all.len(), "every client once");
    let mut sorted = seen.clone();
    sorted.sort();
    sorted.dedup();
    assert_eq!(sorted, seen, "in client_id order, no duplicates");
    problem(
        call(&app, "GET", "/api/v1/clients?limit=0", token, None).await,
        400,
        "invalid_request",
    )
    .await;
    problem(
        call(&app, "GET", "/api/v1/clients?limit=201", token, None).await,
        400,
        "invalid_request",
    )
    .await;

    let id = created[0]["client"]["client_id"].as_str().unwrap();
    let secret = created[0]["client_secret"].as_str().unwrap();
    let got: Value = call(&app, "GET", &format!("/api/v1/clients/{id}"), token, None)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(got["name"], "c0");
    assert_eq!(got["grant_types"], json!(["client_credentials"]));
    assert!(got.get("client_secret").is_none());

    // Replace its settings; a bad one is refused and changes nothing.
    let path = format!("/api/v1/clients/{id}");
    let replace = |settings: &Value| call(&app, "PUT", &path, token, Some(settings.clone()));
    let mut settings = new_client_body("renamed");
    assert_eq!(replace(&settings).await.status(), 200);
    settings["grant_types"] = json!(["authorization_code"]);
    settings["redirect_uris"] = json!(["http://evil.example/cb"]);
    problem(replace(&settings).await, 400, "invalid_request").await;
    // The size limits every way of registering a client shares.
    let many: Vec<String> = (0..51).map(|i| format!("https://app.example/{i}")).collect();
    settings["redirect_uris"] = json!(many);
    problem(replace(&settings).await, 400, "invalid_request").await;
    settings["redirect_uris"] = json!(["https://app.example/cb"]);
    settings["name"] = json!("n".repeat(201));
    problem(replace(&settings).await, 400, "invalid_request").await;
    let got: Value = call(&app, "GET", &format!("/api/v1/clients/{id}"), token, None)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(got["name"], "renamed");
    assert_eq!(got["grant_types"], json!(["client_credentials"]));
    let malformed = app
        .http
        .post(app.url("/api/v1/clients"))
        .bearer_auth(&bearer)
        .header("content-type", "application/json")
        .body("{not json")
        .send()
        .await
        .unwrap();
    problem(malformed, 400, "invalid_request").await;
    // The body limit answers in the admin API's own format too.
    let oversized = app
        .http
        .post(app.url("/api/v1/clients"))
        .bearer_auth(&bearer)
        .header("content-type", "application/json")
        .body(format!("{{\"name\": \"{}\"}}", "x".repeat(100 * 1024)))
        .send()
        .await
        .unwrap();
    problem(oversized, 413, "invalid_request").await;
    let admin_scope = json!({"name": "x", "client_type": "confidential", "grant_types": ["client_credentials"], "scope": "tessera:admin"});
    problem(
        call(&app, "POST", "/api/v1/clients", token, Some(admin_scope)).await,
        400,
        "invalid_scope",
    )
    .await;

    // Rotate the secret: the old one stops working.
    let rotated: Value = call(&app, "POST", &format!("/api/v1/clients/{id}/secret"), token, None)
        .await
        .json()
        .await
        .unwrap();
    let new_secret = rotated["client_secret"].as_str().unwrap();
    assert_ne!(new_secret, secret);
    let old = TestClient {
        id: id.into(),
        secret: Some(secret.into()),
    };
    assert_eq!(app.client_credentials_as(&old, "read").await.status(), 401);
    let new = TestClient {
        id: id.into(),
        secret: Some(new_secret.into()),
    };
    assert_eq!(app.client_credentials_as(&new, "read").await.status(), 200);

    assert_eq!(
        call(&app, "DELETE", &format!("/api/v1/clients/{id}"), token, None)
            .await
            .status(),
        200
    );
    problem(
        call(&app, "GET", &format!("/api/v1/clients/{id}"), token, None).await,
        404,
        "not_found",
    )
    .await;
    problem(
        call(&app, "DELETE", &format!("/api/v1/clients/{id}"), token, None).await,
        404,
        "not_found",
    )
    .await;
    problem(
        call(&app, "POST", "/api/v1/clients/nope/secret", token, None).await,
        404,
        "not_found",
    )
    .await;
}

#[tokio::test]
async fn users_are_created_with_a_profile_changed_and_deleted_with_their_grants() {
    let app = spawn_app().await;
    let token = admin_token(&app).await;
    let token = Some(token.as_str());
    let body = json!({"username": "dora", "password": "a long password", "name": "Dora", "email": "dora@example.com", "email_verified": true});
    let created = call(&app, "POST", "/api/v1/users", token, Some(body.clone())).await;
    assert_eq!(created.status(), 201);
    let dora: Value = created.json().await.unwrap();
    assert_eq!(dora["name"], "Dora");
    assert_eq!(dora["email_verified"], true);
    assert!(dora.get("password").is_none());
    problem(
        call(&app, "POST", "/api/v1/users", token, Some(body)).await,
        409,
        "conflict",
    )
    .await;
    let bad_profile = json!({"username": "eve", "password": "a long password", "website": "javascript:x"});
    problem(
        call(&app, "POST", "/api/v1/users", token, Some(bad_profile)).await,
        400,
        "invalid_request",
    )
    .await;
    assert!(
        app.store.get_user_by_name("eve").await.unwrap().is_none(),
        "no half-made user"
    );

    let id = dora["user_id"].as_str().unwrap();
    let patched: Value = call(
        &app,
        "PATCH",
        &format!("/api/v1/users/{id}"),
        token,
        Some(json!({"nickname": "D", "name": ""})),
    )
    .await
    .json()
    .await
    .unwrap();
    assert_eq!(patched["nickname"], "D");
    assert!(patched["name"].is_null(), "an empty string clears");
    assert_eq!(patched["email"], "dora@example.com", "absent fields stay");

    let set = call(
        &app,
        "PUT",
        &format!("/api/v1/users/{id}/password"),
        token,
        Some(json!({"password": "another long one"})),
    )
    .await;
    assert_eq!(set.status(), 200);
    assert!(app
        .provider
        .check_password("dora", "another long one")
        .await
        .unwrap()
        .is_some());
    let short = call(
        &app,
        "PUT",
        &format!("/api/v1/users/{id}/password"),
        token,
        Some(json!({"password": "short"})),
    )
    .await;
    problem(short, 400, "invalid_request").await;

    let page: Value = call(&app, "GET", "/api/v1/users?limit=1", token, None)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(page["items"].as_array().unwrap().len(), 1);
    assert!(page["next_cursor"].is_string(), "alice and dora: a second page");

    // Deleting Alice revokes what she granted.
    let tokens = app.get_tokens().await;
    let alice = app.store.get_user_by_name(USERNAME).await.unwrap().unwrap();
    assert_eq!(
        call(&app, "DELETE", &format!("/api/v1/users/{}", alice.user_id), token, None)
            .await
            .status(),
        200
    );
    let refresh = app.refresh(tokens["refresh_token"].as_str().unwrap()).await;
    assert_eq!(refresh.status(), 400, "her refresh token died with her");
    problem(
        call(&app, "GET", &format!("/api/v1/users/{}", alice.user_id), token, None).await,
        404,
        "not_found",
    )
    .await;
}

#[tokio::test]
async fn grants_are_listed_by_user_or_client_and_revoked() {
    let app = spawn_app().await;
    let token = admin_token(&app).await;
    let token = Some(token.as_str());
    let tokens = app.get_tokens().await;
    let alice = app.store.get_user_by_name(USERNAME).await.unwrap().unwrap();

    let by_user: Value = call(
        &app,
        "GET",
        &format!("/api/v1/grants?user_id={}", alice.user_id),
        token,
        None,
    )
    .await
    .json()
    .await
    .unwrap();
    let items = by_user["items"].as_array().unwrap();
    assert_eq!(items.len(), 1);
    assert_eq!(items[0]["client_id"], app.client.id.as_str());
    assert_eq!(items[0]["revoked"], false);
    let by_client: Value = call(
        &app,
        "GET",
        &format!("/api/v1/grants?client_id={}", app.client.id),
        token,
        None,
    )
    .await
    .json()
    .await
    .unwrap();
    assert_eq!(by_client["items"], by_user["items"]);
    problem(
        call(&app, "GET", "/api/v1/grants", token, None).await,
        400,
        "invalid_request",
    )
    .await;

    let grant_id = items[0]["grant_id"].as_str().unwrap();
    let revoked: Value = call(&app, "POST", &format!("/api/v1/grants/{grant_id}/revoke"), token, None)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(revoked["revoked"], true);
    assert_eq!(
        app.refresh(tokens["refresh_token"].as_str().unwrap()).await.status(),
        400
    );
    assert_eq!(
        app.introspect(tokens["access_token"].as_str().unwrap()).await["active"],
        false
    );
    problem(
        call(&app, "POST", "/api/v1/grants/nope/revoke", token, None).await,
        404,
        "not_found",
    )
    .await;
}

#[tokio::test]
async fn keys_are_added_promoted_and_retired() {
    let app = spawn_app().await;
    let token = admin_token(&app).await;
    let token = Some(token.as_str());
    let keys: Value = call(&app, "GET", "/api/v1/keys", token, None)
        .await
        .json()
        .await
        .unwrap();
    let signing = keys
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["status"] == "signing")
        .unwrap()["kid"]
        .as_str()
        .unwrap()
        .to_string();
    let added = call(&app, "POST", "/api/v1/keys", token, Some(json!({"alg": "EdDSA"}))).await;
    assert_eq!(added.status(), 201);
    let added: Value = added.json().await.unwrap();
    assert_eq!(added["status"], "published");
    let kid = added["kid"].as_str().unwrap();
    assert!(app.get_jwks().await.to_string().contains(kid), "published at once");

    problem(
        call(&app, "POST", &format!("/api/v1/keys/{signing}/retire"), token, None).await,
        400,
        "invalid_request",
    )
    .await;
    let promoted: Value = call(&app, "POST", &format!("/api/v1/keys/{kid}/promote"), token, None)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(promoted["status"], "signing");
    let fresh = token_for(&app, &app.client, "read").await;
    assert_eq!(jwt_parts(&fresh).0["kid"], kid, "new tokens use the promoted key");
    let retired: Value = call(&app, "POST", &format!("/api/v1/keys/{signing}/retire"), token, None)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(retired["status"], "retired");
    assert!(!app.get_jwks().await.to_string().contains(&signing));
    // The admin token itself was signed by the retired key: it no longer works either.
    problem(
        call(&app, "GET", "/api/v1/keys", token, None).await,
        401,
        "invalid_token",
    )
    .await;
    let token = admin_token(&app).await;
    let token = Some(token.as_str());
    problem(
        call(&app, "POST", "/api/v1/keys/nope/promote", token, None).await,
        404,
        "not_found",
    )
    .await;
    problem(
        call(&app, "POST", "/api/v1/keys", token, Some(json!({"alg": "HS256"}))).await,
        400,
        "invalid_request",
    )
    .await;
}

// The first adversarial review (issue 11, `SECURITY.md`), each finding as the attack that
// found it; each test failed on the code the review ran against.

/// Finding 12: after a password change the old session still opened `/o/profile/`. Now a
/// password change ends the user's sessions, and an operator's reset can also revoke every
/// grant the user gave (`revoke_grants` in the admin API, `--revoke-grants` in the CLI).
#[tokio::test]
async fn a_password_change_ends_the_users_sessions_and_a_reset_can_revoke_their_grants() {
    let app = spawn_app().await;
    let tokens = app.get_tokens().await;
    let refresh_token = tokens["refresh_token"].as_str().unwrap().to_string();
    let profile = app.http.get(app.url("/o/profile/")).send().await.unwrap();
    assert_eq!(profile.status(), 200, "logged in");
    let alice = app.store.get_user_by_name(USERNAME).await.unwrap().unwrap();

    let admin = app.register_admin_client(None).await;
    let response = app.client_credentials_as(&admin, "tessera:admin").await;
    let admin_token = response.json::<serde_json::Value>().await.unwrap()["access_token"]
        .as_str()
        .unwrap()
        .to_string();
    let reset = |revoke_grants: bool| {
        app.http
            .put(app.url(&format!("/api/v1/users/{}/password", alice.user_id)))
            .bearer_auth(&admin_token)
            .json(&serde_json::json!({ "password": "a brand new password", "revoke_grants": revoke_grants }))
            .send()
    };
    assert_eq!(reset(false).await.unwrap().status(), 200);
    let profile = app.http.get(app.url("/o/profile/")).send().await.unwrap();
    assert_eq!(profile.status(), 302, "the old session is over");
    assert!(location(&profile).starts_with("/o/login/"));
    let refreshed = app.refresh(&refresh_token).await;
    assert_eq!(
        refreshed.status(),
        200,
        "without revoke_grants the apps keep their grants"
    );
    let refresh_token = refreshed.json::<serde_json::Value>().await.unwrap()["refresh_token"]
        .as_str()
        .unwrap()
        .to_string();

    assert_eq!(
        app.log_in("/o/login/", USERNAME, "a brand new password").await.status(),
        303,
        "the new password opens a new session"
    );
    assert_eq!(reset(true).await.unwrap().status(), 200);
    assert_eq!(app.refresh(&refresh_token).await.status(), 400, "grants revoked");
    let profile = app.http.get(app.url("/o/profile/")).send().await.unwrap();
    assert_eq!(profile.status(), 302);
}
