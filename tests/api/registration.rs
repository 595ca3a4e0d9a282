//! Dynamic client registration (RFC 7591) and its management protocol (RFC 7592), under each
//! registration mode, with every policy rule.

use std::time::Duration;

use serde_json::{json, Value};
use tessera::config::{RegistrationMode, RegistrationPolicy};
use tessera::oauth::audit::Caller;

use crate::helpers::*;

const INITIAL_TOKEN: &str = "initial-access-token-0123456789";
const MCP_SERVER: &str = "https://mcp.example.com/mcp";

async fn spawn_with(mode: RegistrationMode, allow_client_credentials: bool) -> TestApp {
    let dirs = tempfile::tempdir().unwrap();
    let config = tessera::Config {
        registration: RegistrationPolicy {
            mode,
            initial_access_tokens: vec![INITIAL_TOKEN.into()],
            scopes: None,
            allow_client_credentials,
            resources: vec![MCP_SERVER.into()],
            // These tests register many clients from one address; the limit has its own test.
            limit_per_address: tessera::rate_limit::Rate::OFF,
            ..RegistrationPolicy::default()
        },
        ..test_config(&dirs)
    };
    spawn_app_with(config, dirs).await
}

async fn register(app: &TestApp, body: Value, token: Option<&str>) -> reqwest::Response {
    let mut request = app.http.post(app.url("/o/register/")).json(&body);
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    request.send().await.unwrap()
}

async fn error_of(response: reqwest::Response, status: u16) -> String {
    assert_eq!(response.status(), status);
    let body: Value = response.json().await.unwrap();
    body["error"].as_str().unwrap().to_string()
}

fn public_app() -> Value {
    json!({
        "client_name": "MCP client",
        "redirect_uris": ["http://127.0.0.1:33418/callback"],
        "token_endpoint_auth_method": "none",
        "grant_types": ["authorization_code", "refresh_token"],
        "response_types": ["code"],
        "scope": "openid read",
        "logo_uri": "https://example.com/logo.png"
    })
}

#[tokio::test]
async fn registration_is_off_by_default_and_not_advertised() {
    let app = spawn_app().await;
    assert_eq!(
        error_of(register(&app, public_app(), None).await, 404).await,
        "not_found"
    );
    let metadata = app.get_json("/.well-known/openid-configuration").await;
    assert!(metadata.get("registration_endpoint").is_none());
}

#[tokio::test]
async fn an_open_server_registers_a_public_client_that_completes_the_code_flow() {
    let app = spawn_with(RegistrationMode::Open, false).await;
    let metadata = app.get_json("/.well-known/oauth-authorization-server").await;
    assert_eq!(metadata["registration_endpoint"], app.url("/o/register/"));

    let response = register(&app, public_app(), None).await;
    assert_eq!(response.status(), 201);
    assert_eq!(response.headers()["cache-control"], "no-store");
    let registered: Value = response.json().await.unwrap();
    let client_id = registered["client_id"].as_str().unwrap();
    assert!(registered.get("client_secret").is_none() || registered["client_secret"].is_null());
    assert_eq!(registered["token_endpoint_auth_method"], "none");
    assert_eq!(
        registered["grant_types"],
        json!(["authorization_code", "refresh_token"])
    );
    assert_eq!(registered["response_types"], json!(["code"]));
    assert_eq!(registered["scope"], "openid read");
    assert_eq!(registered["client_name"], "MCP client");
    assert!(registered["client_id_issued_at"].as_i64().unwrap() > 0);
    assert!(registered["registration_access_token"].as_str().unwrap().len() >= 43);
    assert_eq!(
        registered["registration_client_uri"],
        app.url(&format!("/o/register/{client_id}/"))
    );

    // The new client runs the code flow with PKCE (any loopback port, RFC 8252).
    let pkce = Pkce::new();
    let redirect_uri = "http://127.0.0.1:40123/callback";
    // As a Model Context Protocol client does: a resource indicator naming the MCP server.
    let query: Vec<(String, String)> = [
        ("response_type", "code"),
        ("client_id", client_id),
        ("redirect_uri", redirect_uri),
        ("scope", "openid read"),
        ("resource", MCP_SERVER),
        ("state", "s"),
        ("code_challenge", pkce.challenge.as_str()),
        ("code_challenge_method", "S256"),
    ]
    .iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    let callback = app.authorize_and_allow(&query).await;
    let code = param(&callback, "code").expect("a code");
    let client = TestClient {
        id: client_id.into(),
        secret: None,
    };
    let tokens = app
        .token(
            &client,
            &[
                ("grant_type", "authorization_code"),
                ("code", &code),
                ("redirect_uri", redirect_uri),
                ("code_verifier", &pkce.verifier),
            ],
        )
        .await;
    assert_eq!(tokens.status(), 200);
    let tokens: Value = tokens.json().await.unwrap();
    assert!(tokens["id_token"].is_string() && tokens["refresh_token"].is_string());
    let claims = app
        .verify_with_jwks(tokens["access_token"].as_str().unwrap())
        .await
        .unwrap();
    assert_eq!(claims["aud"], MCP_SERVER, "the token is for the MCP server it named");

    // A public client must use PKCE.
    let mut no_pkce = query.clone();
    no_pkce.retain(|(k, _)| !k.starts_with("code_challenge"));
    let refused = app.authorize(&no_pkce).await;
    assert_eq!(param(&location(&refused), "error").as_deref(), Some("invalid_request"));
}

#[tokio::test]
async fn a_confidential_registration_gets_a_secret_that_authenticates() {
    let app = spawn_with(RegistrationMode::Open, true).await;
    let body = json!({
        "client_name": "Backend",
        "grant_types": ["client_credentials"],
        "token_endpoint_auth_method": "client_secret_post",
        "scope": "read"
    });
    let registered: Value = register(&app, body, None).await.json().await.unwrap();
    assert_eq!(registered["client_secret_expires_at"], 0);
    assert_eq!(registered["token_endpoint_auth_method"], "client_secret_post");
    assert_eq!(registered["response_types"], json!([]));
    let client = TestClient {
        id: registered["client_id"].as_str().unwrap().into(),
        secret: Some(registered["client_secret"].as_str().unwrap().into()),
    };
    let secret = client.secret.clone().unwrap();
    let post = |scope: &'static str| {
        app.http
            .post(app.url("/o/token/"))
            .form(&[
                ("grant_type", "client_credentials"),
                ("scope", scope),
                ("client_id", client.id.as_str()),
                ("client_secret", secret.as_str()),
            ])
            .send()
    };
    assert_eq!(post("read").await.unwrap().status(), 200);
    // The admin scope is never available to a registered client.
    assert_eq!(post("tessera:admin").await.unwrap().status(), 400);
    // Registered for client_secret_post, it may not use HTTP Basic (review finding 14).
    assert_eq!(app.client_credentials_as(&client, "read").await.status(), 401);
}

#[tokio::test]
async fn every_policy_rule_is_enforced_and_nothing_is_stored_on_refusal() {
    let app = spawn_with(RegistrationMode::Open, false).await;
    let before = app.store.list_clients().await.unwrap().len();
    let with = |changes: Value| {
        let mut body = public_app();
        for (k, v) in changes.as_object().unwrap() {
            if v.is_null() {
                body.as_object_mut().unwrap().remove(k);
            } else {
                body[k] = v.clone();
            }
        }
        body
    };
    for (body, code) in [
        (
            with(json!({"redirect_uris": ["http://app.example/cb"]})),
            "invalid_redirect_uri",
        ),
        (
            with(json!({"redirect_uris": ["com.example.app:/cb"]})),
            "invalid_redirect_uri",
        ),
        (
            with(json!({"redirect_uris": ["https://app.example/cb#frag"]})),
            "invalid_redirect_uri",
        ),
        (with(json!({"redirect_uris": ["not a uri"]})), "invalid_redirect_uri"),
        (with(json!({"redirect_uris": null})), "invalid_redirect_uri"),
        (
            with(json!({"post_logout_redirect_uris": ["javascript:alert(1)"]})),
            "invalid_redirect_uri",
        ),
        (with(json!({"grant_types": ["password"]})), "invalid_client_metadata"),
        (with(json!({"grant_types": ["implicit"]})), "invalid_client_metadata"),
        (
            with(json!({"grant_types": ["client_credentials"]})),
            "invalid_client_metadata",
        ),
        (
            with(json!({"grant_types": ["client_credentials"], "token_endpoint_auth_method": "client_secret_basic"})),
            "invalid_client_metadata",
        ),
        (with(json!({"response_types": ["token"]})), "invalid_client_metadata"),
        (with(json!({"scope": "read tessera:admin"})), "invalid_client_metadata"),
        (with(json!({"scope": "read unknown"})), "invalid_client_metadata"),
        (
            with(json!({"token_endpoint_auth_method": "private_key_jwt"})),
            "invalid_client_metadata",
        ),
        (
            with(json!({"id_token_signed_response_alg": "none"})),
            "invalid_client_metadata",
        ),
        (
            with(json!({"software_statement": "eyJ.e30.x"})),
            "invalid_software_statement",
        ),
        (
            with(json!({"redirect_uris": "https://app.example/cb"})),
            "invalid_client_metadata",
        ),
        // Size limits: a registration cannot store arbitrary amounts of data.
        (
            with(json!({"redirect_uris": [format!("https://app.example/{}", "x".repeat(3000))]})),
            "invalid_redirect_uri",
        ),
        (
            with(json!({"redirect_uris": (0..51).map(|i| format!("https://app.example/{i}")).collect::<Vec<_>>()})),
            "invalid_redirect_uri",
        ),
        (with(json!({"client_name": "n".repeat(101)})), "invalid_client_metadata"),
    ] {
        let response = register(&app, body.clone(), None).await;
        assert_eq!(error_of(response, 400).await, code, "{body}");
    }
    let malformed = app
        .http
        .post(app.url("/o/register/"))
        .header("content-type", "application/json")
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(error_of(malformed, 400).await, "invalid_client_metadata");
    assert_eq!(
        app.store.list_clients().await.unwrap().len(),
        before,
        "nothing was stored"
    );
}

#[tokio::test]
async fn a_registration_is_read_updated_and_deleted_with_its_own_token_only() {
    let app = spawn_with(RegistrationMode::Open, false).await;
    let first: Value = register(&app, public_app(), None).await.json().await.unwrap();
    let second: Value = register(&app, public_app(), None).await.json().await.unwrap();
    let uri = first["registration_client_uri"].as_str().unwrap().to_string();
    let token = first["registration_access_token"].as_str().unwrap().to_string();
    let other_token = second["registration_access_token"].as_str().unwrap().to_string();
    let client_id = first["client_id"].as_str().unwrap().to_string();

    let read = app.http.get(&uri).bearer_auth(&token).send().await.unwrap();
    assert_eq!(read.status(), 200);
    let read: Value = read.json().await.unwrap();
    assert_eq!(read["client_id"], client_id.as_str());
    assert!(read["registration_access_token"].is_null() && read["client_secret"].is_null());
    for bad in [None, Some("wrong"), Some(other_token.as_str())] {
        let mut request = app.http.get(&uri);
        if let Some(t) = bad {
            request = request.bearer_auth(t);
        }
        let response = request.send().await.unwrap();
        assert!(response.headers()["www-authenticate"]
            .to_str()
            .unwrap()
            .starts_with("Bearer"));
        assert_eq!(error_of(response, 401).await, "invalid_token", "{bad:?}");
    }

    // Update: the body repeats client_id; a bad value changes nothing.
    let mut update = public_app();
    update["client_id"] = json!(client_id);
    update["client_name"] = json!("Renamed");
    update["redirect_uris"] = json!(["https://app.example/cb"]);
    let updated = app
        .http
        .put(&uri)
        .bearer_auth(&token)
        .json(&update)
        .send()
        .await
        .unwrap();
    assert_eq!(updated.status(), 200);
    let updated: Value = updated.json().await.unwrap();
    assert_eq!(updated["client_name"], "Renamed");
    assert_eq!(updated["redirect_uris"], json!(["https://app.example/cb"]));
    let mut bad = update.clone();
    bad["redirect_uris"] = json!(["http://evil.example/cb"]);
    let refused = app.http.put(&uri).bearer_auth(&token).json(&bad).send().await.unwrap();
    assert_eq!(error_of(refused, 400).await, "invalid_redirect_uri");
    let mut no_id = update.clone();
    no_id.as_object_mut().unwrap().remove("client_id");
    let refused = app
        .http
        .put(&uri)
        .bearer_auth(&token)
        .json(&no_id)
        .send()
        .await
        .unwrap();
    assert_eq!(error_of(refused, 400).await, "invalid_client_metadata");
    let mut to_secret = update.clone();
    to_secret["token_endpoint_auth_method"] = json!("client_secret_basic");
    let refused = app
        .http
        .put(&uri)
        .bearer_auth(&token)
        .json(&to_secret)
        .send()
        .await
        .unwrap();
    assert_eq!(error_of(refused, 400).await, "invalid_client_metadata");
    let stored = app.store.get_client(&client_id).await.unwrap().unwrap();
    assert_eq!(stored.name, "Renamed");
    assert_eq!(stored.redirect_uris, ["https://app.example/cb"]);

    // Another client's token cannot delete it; its own can.
    let refused = app.http.delete(&uri).bearer_auth(&other_token).send().await.unwrap();
    assert_eq!(error_of(refused, 401).await, "invalid_token");
    let deleted = app.http.delete(&uri).bearer_auth(&token).send().await.unwrap();
    assert_eq!(deleted.status(), 204);
    assert!(app.store.get_client(&client_id).await.unwrap().is_none());
    let gone = app.http.get(&uri).bearer_auth(&token).send().await.unwrap();
    assert_eq!(error_of(gone, 401).await, "invalid_token");
}

#[tokio::test]
async fn token_mode_needs_a_valid_initial_access_token() {
    let app = spawn_with(RegistrationMode::Token, false).await;
    assert_eq!(
        error_of(register(&app, public_app(), None).await, 401).await,
        "invalid_token"
    );
    let wrong = register(&app, public_app(), Some("initial-access-token-wrong-000")).await;
    assert_eq!(error_of(wrong, 401).await, "invalid_token");
    assert_eq!(register(&app, public_app(), Some(INITIAL_TOKEN)).await.status(), 201);
}

// The first adversarial review (issue 11, `SECURITY.md`), each finding as the attack that
// found it; each test failed on the code the review ran against.

/// A server with open registration, changed further by `adjust`.
async fn open_registration(adjust: impl FnOnce(&mut tessera::Config)) -> TestApp {
    let dirs = tempfile::tempdir().unwrap();
    let mut config = test_config(&dirs);
    config.registration.mode = RegistrationMode::Open;
    adjust(&mut config);
    spawn_app_with(config, dirs).await
}

/// Open registration without its budget per address, for tests that register many clients.
fn without_address_limit(config: &mut tessera::Config) {
    config.registration.limit_per_address = tessera::rate_limit::Rate::OFF;
}

/// A registration as the review's script sent it: 50 long redirect URIs (just under the 64 KiB
/// body limit in all).
fn bulky_registration() -> serde_json::Value {
    let uris: Vec<String> = (0..50)
        .map(|i| format!("https://app.example/{i}/{}", "a".repeat(1200)))
        .collect();
    serde_json::json!({ "redirect_uris": uris, "client_name": "bulk" })
}

async fn register_from(app: &TestApp, from: [u8; 4], body: &serde_json::Value) -> reqwest::Response {
    let http = from_address(from);
    http.post(app.url("/o/register/")).json(body).send().await.unwrap()
}

/// Finding 6: 300 open registrations with 50 long redirect URIs each took the data folder from
/// 1.4 to 48 MB in 1.2 s. Now one address gets `registration_limit_per_address` (20 an hour by
/// default), even when it sends them all at once, and other addresses keep theirs.
#[tokio::test]
async fn one_address_cannot_register_clients_without_limit() {
    let app = open_registration(|config| config.registration.allow_client_credentials = true).await;
    let body = bulky_registration();
    let records = app.store.record_count().await.unwrap();
    let attempts = (0..60).map(|_| {
        let (app_url, body) = (app.url("/o/register/"), body.clone());
        tokio::spawn(async move {
            let http = reqwest::Client::new();
            let response = http.post(app_url).json(&body).send().await.unwrap();
            (
                response.status().as_u16(),
                response.headers().contains_key("retry-after"),
            )
        })
    });
    let mut statuses = Vec::new();
    for attempt in attempts.collect::<Vec<_>>() {
        statuses.push(attempt.await.unwrap());
    }
    let created = statuses.iter().filter(|(s, _)| *s == 201).count();
    let refused: Vec<_> = statuses.iter().filter(|(s, _)| *s == 429).collect();
    assert_eq!(created, 20, "{statuses:?}");
    assert_eq!(refused.len(), 40, "{statuses:?}");
    assert!(refused.iter().all(|(_, retry_after)| *retry_after));
    assert_eq!(app.store.record_count().await.unwrap(), records + 20);
    // Another address has its own budget.
    assert_eq!(register_from(&app, [127, 0, 0, 2], &body).await.status(), 201);
}

/// Finding 6, what stays: a registered client that is never issued a token is deleted after
/// `registration_unused_client_ttl`; a used one, and apps made in the pages or the CLI, stay.
#[tokio::test]
async fn registered_clients_never_used_are_purged() {
    let app = open_registration(|config| {
        config.registration.allow_client_credentials = true;
        config.registration.unused_client_ttl = Duration::from_secs(1);
        config.purge_interval = Duration::from_secs(1);
    })
    .await;
    let before = app.store.record_count().await.unwrap();
    let mut unused = Vec::new();
    for _ in 0..5 {
        let response = register_from(&app, [127, 0, 0, 1], &bulky_registration()).await;
        assert_eq!(response.status(), 201);
        let body: serde_json::Value = response.json().await.unwrap();
        unused.push(body["client_id"].as_str().unwrap().to_string());
    }
    let used = register_from(
        &app,
        [127, 0, 0, 1],
        &serde_json::json!({ "grant_types": ["client_credentials"], "scope": "read" }),
    )
    .await;
    let used: serde_json::Value = used.json().await.unwrap();
    let used_client = TestClient {
        id: used["client_id"].as_str().unwrap().into(),
        secret: used["client_secret"].as_str().map(String::from),
    };
    assert_eq!(app.client_credentials_as(&used_client, "read").await.status(), 200);

    tokio::time::sleep(Duration::from_millis(3500)).await;
    for id in &unused {
        assert!(app.provider.find_client(id).await.unwrap().is_none(), "{id} was purged");
    }
    assert!(app.provider.find_client(&used_client.id).await.unwrap().is_some());
    assert!(
        app.provider.find_client(&app.client.id).await.unwrap().is_some(),
        "operator-made clients stay"
    );
    assert_eq!(app.client_credentials_as(&used_client, "read").await.status(), 200);
    // Only the used client is left of the six (the rest of the store is what it was).
    let after = app.store.record_count().await.unwrap();
    assert!(after <= before + 1 + 2, "{before} -> {after}");
}

// Later passes over the first review's fixes (`SECURITY.md`), each as the attack.

/// The third pass: `PUT /o/register/{id}/` read the client, the operator deleted it, and the
/// PUT wrote it back — with its secret, its registration token and every user's consent, so
/// `prompt=none` gave codes again. A delete is now final and takes the consents with it.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_update_racing_a_delete_never_brings_the_client_back() {
    let app = std::sync::Arc::new(open_registration(without_address_limit).await);
    let admin = app.register_admin_client(None).await;
    let admin_token = app.client_credentials_as(&admin, "tessera:admin").await;
    let admin_token = admin_token.json::<Value>().await.unwrap()["access_token"]
        .as_str()
        .unwrap()
        .to_string();
    for round in 0..25 {
        let metadata = json!({ "redirect_uris": ["https://app.example/cb"], "token_endpoint_auth_method": "none",
                               "client_name": format!("Racer {round}"), "scope": "openid" });
        let registered: Value = app
            .http
            .post(app.url("/o/register/"))
            .json(&metadata)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let client_id = registered["client_id"].as_str().unwrap().to_string();
        let token = registered["registration_access_token"].as_str().unwrap().to_string();
        // Alice approves it, so a resurrected client would get codes without asking.
        let client = TestClient {
            id: client_id.clone(),
            secret: None,
        };
        let pkce = Pkce::new();
        let query: Vec<(String, String)> = [
            ("response_type", "code"),
            ("client_id", &client_id),
            ("scope", "openid"),
            ("state", "s"),
            ("code_challenge", &pkce.challenge),
            ("code_challenge_method", "S256"),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        assert!(param(&app.authorize_and_allow(&query).await, "code").is_some());

        let mut update = metadata.clone();
        update["client_id"] = json!(client_id);
        let updaters: Vec<_> = (0..4)
            .map(|_| {
                let (app, url, token, body) = (
                    app.clone(),
                    app.url(&format!("/o/register/{client_id}/")),
                    token.clone(),
                    update.clone(),
                );
                tokio::spawn(async move {
                    for _ in 0..5 {
                        let _ = app.http.put(&url).bearer_auth(&token).json(&body).send().await;
                    }
                })
            })
            .collect();
        let deleted = app
            .http
            .delete(app.url(&format!("/api/v1/clients/{client_id}")))
            .bearer_auth(&admin_token)
            .send()
            .await
            .unwrap();
        assert_eq!(deleted.status(), 200);
        for updater in updaters {
            updater.await.unwrap();
        }
        assert!(
            app.provider.find_client(&client_id).await.unwrap().is_none(),
            "round {round}: stays deleted"
        );
        let user = app.store.get_user_by_name(USERNAME).await.unwrap().unwrap();
        assert!(app
            .store
            .get_consent(&user.user_id, &client_id)
            .await
            .unwrap()
            .is_none());
        let read = app
            .http
            .get(app.url(&format!("/o/register/{client_id}/")))
            .bearer_auth(&token)
            .send()
            .await
            .unwrap();
        assert_eq!(read.status(), 401, "its registration token died with it");
        let mut silent = query.clone();
        silent.push(("prompt".into(), "none".into()));
        let answer = app.authorize(&silent).await;
        assert!(
            answer.headers().get("location").is_none(),
            "no code for a deleted client"
        );
        let _ = client;
    }
}

/// The third pass: open registration took `id_token_signed_response_alg: EdDSA` with no EdDSA
/// key in the keyring, and the code exchange answered 500 after spending the code.
#[tokio::test]
async fn registration_refuses_an_id_token_algorithm_the_server_cannot_sign() {
    let app = open_registration(without_address_limit).await;
    let response = app
        .http
        .post(app.url("/o/register/"))
        .json(&json!({ "redirect_uris": ["https://app.example/cb"], "id_token_signed_response_alg": "EdDSA" }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 400);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"], "invalid_client_metadata");
    assert!(body["error_description"].as_str().unwrap().contains("EdDSA"));
}

/// The third pass: names with invisible characters other than the few the filter knew
/// (Hangul fillers, the blank braille pattern, tag characters, variation selectors) were
/// registered.
#[tokio::test]
async fn names_that_show_as_nothing_are_refused() {
    let app = open_registration(without_address_limit).await;
    for name in [
        "\u{3164}",
        "\u{2800}\u{2800}",
        "Pay\u{e0041}Pal",
        "a\u{fe0f}",
        "\u{115f}x",
    ] {
        let response = app
            .http
            .post(app.url("/o/register/"))
            .json(&json!({ "redirect_uris": ["https://app.example/cb"], "client_name": name }))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 400, "{name:?}");
    }
    assert!(app
        .provider
        .create_user(&Caller::system(), "\u{3164}", "a long enough password", None)
        .await
        .is_err());
}

// The third adversarial review (issue 26, `SECURITY.md`), each finding as the attack that
// found it; each test failed on the code the review ran against.

/// Finding 12: registration accepted P-256 keys that are not points on the curve, and Ed25519
/// keys of any length: they registered, then verified nothing.
#[tokio::test]
async fn registration_refuses_keys_that_are_not_keys() {
    let app = open_registration(|_| {}).await;
    let x = "f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU";
    for (what, jwk, accepted) in [
        (
            "a point on P-256",
            json!({"kty": "EC", "crv": "P-256", "x": x, "y": "x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0"}),
            true,
        ),
        (
            "a point off the curve",
            json!({"kty": "EC", "crv": "P-256", "x": x, "y": "y_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0"}),
            false,
        ),
        (
            "a 16-byte Ed25519 key",
            json!({"kty": "OKP", "crv": "Ed25519", "x": "11qYAYKxCrfVS_7TyWQHOg"}),
            false,
        ),
    ] {
        let response = app
            .http
            .post(app.url("/o/register/"))
            .json(&json!({
                "redirect_uris": ["https://app.example/cb"],
                "token_endpoint_auth_method": "private_key_jwt",
                "jwks": {"keys": [jwk]},
            }))
            .send()
            .await
            .unwrap();
        let status = response.status().as_u16();
        let body: Value = response.json().await.unwrap();
        if accepted {
            assert_eq!(status, 201, "{what}: {body}");
        } else {
            assert_eq!(
                (status, body["error"].as_str()),
                (400, Some("invalid_client_metadata")),
                "{what}: {body}"
            );
        }
    }
}

// The attack on the operator's console (issue 16, `SECURITY.md`): each comment tells the
// finding as it was found, and each test failed until it was fixed.

/// Finding 1c (finding 1 where anyone reaches it): the validation behind the console's client
/// form is the one behind open dynamic registration, so an anonymous caller's registration
/// with a NUL in a redirect URI is a 500 (and a "server error" logged) on PostgreSQL, not the
/// RFC 7591 `invalid_redirect_uri` / `invalid_client_metadata` 400.
#[tokio::test]
async fn an_open_registration_with_a_nul_in_a_redirect_uri_is_a_400_not_a_server_error() {
    let app = open_registration(without_address_limit).await;
    let body = serde_json::json!({
        "client_name": "NUL",
        "redirect_uris": ["https://app.example/cb\u{0}"],
        "token_endpoint_auth_method": "none",
        "grant_types": ["authorization_code"],
        "response_types": ["code"],
    });
    let response = app.http.post(app.url("/o/register/")).json(&body).send().await.unwrap();
    let status = response.status();
    let text = response.text().await.unwrap();
    assert_eq!(status, 400, "{text}");
}
