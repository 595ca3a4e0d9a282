//! The audit trail: every change made through the admin API, the pages, dynamic registration
//! and the CLI is recorded once, with the right actor and target, and no secret; and
//! `GET /api/v1/audit` and `tessera audit list` read it back.

use std::time::Duration;

use serde_json::{json, Value};

use crate::helpers::*;

/// A server with open dynamic registration.
async fn spawn_open() -> TestApp {
    let dirs = tempfile::tempdir().unwrap();
    let config = tessera::Config {
        registration: tessera::config::RegistrationPolicy {
            mode: tessera::config::RegistrationMode::Open,
            ..Default::default()
        },
        ..test_config(&dirs)
    };
    spawn_app_with(config, dirs).await
}

/// The trail's entries matching `query`, oldest first.
pub async fn trail(app: &TestApp, bearer: &str, query: &str) -> Vec<Value> {
    let response = app
        .http
        .get(app.url(&format!("/api/v1/audit?limit=200&{query}")))
        .bearer_auth(bearer)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200, "{query}");
    let page: Value = response.json().await.unwrap();
    let mut items = page["items"].as_array().unwrap().clone();
    items.reverse();
    items
}

fn actions(items: &[Value]) -> Vec<String> {
    items
        .iter()
        .map(|e| e["action"].as_str().unwrap().to_string())
        .collect()
}

/// `method path body` with the admin token; the response's JSON (or null).
pub async fn admin_call(app: &TestApp, bearer: &str, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
    let mut request = app
        .http
        .request(method.parse().unwrap(), app.url(path))
        .bearer_auth(bearer);
    if let Some(body) = body {
        request = request.json(&body);
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

#[tokio::test]
async fn every_admin_api_change_is_recorded_once_with_the_admin_client_as_actor() {
    let app = spawn_app().await;
    let (admin, bearer) = app.admin_bearer().await;
    // Alice's grant to the test app, for the admin to revoke.
    app.get_tokens().await;
    assert!(trail(&app, &bearer, &format!("actor={}", admin.id)).await.is_empty());

    let settings = json!({"name": "Billing", "client_type": "confidential",
        "grant_types": ["client_credentials"], "scope": "read"});
    let (status, created) = admin_call(&app, &bearer, "POST", "/api/v1/clients", Some(settings.clone())).await;
    assert_eq!(status, 201);
    let client_id = created["client"]["client_id"].as_str().unwrap().to_string();
    let mut secrets = vec![created["client_secret"].as_str().unwrap().to_string()];
    let client = format!("/api/v1/clients/{client_id}");
    let renamed = json!({"name": "Billing v2", "client_type": "confidential",
        "grant_types": ["client_credentials"], "scope": "read"});
    assert_eq!(admin_call(&app, &bearer, "PUT", &client, Some(renamed)).await.0, 200);
    let (status, rotated) = admin_call(&app, &bearer, "POST", &format!("{client}/secret"), None).await;
    assert_eq!(status, 200);
    secrets.push(rotated["client_secret"].as_str().unwrap().to_string());
    assert_eq!(admin_call(&app, &bearer, "DELETE", &client, None).await.0, 200);
    // A refused attempt by an admin is recorded too, with why.
    assert_eq!(admin_call(&app, &bearer, "DELETE", &client, None).await.0, 404);

    let password = "a long enough password 1";
    let new_user = json!({"username": "bob", "password": password});
    let (status, bob) = admin_call(&app, &bearer, "POST", "/api/v1/users", Some(new_user)).await;
    assert_eq!(status, 201);
    let user = format!("/api/v1/users/{}", bob["user_id"].as_str().unwrap());
    for change in [
        json!({"name": "Bob Builder"}),
        json!({"disabled": true}),
        json!({"disabled": false}),
        json!({"operator": true}),
    ] {
        assert_eq!(admin_call(&app, &bearer, "PATCH", &user, Some(change)).await.0, 200);
    }
    let new_password = json!({"password": "another long password 2", "revoke_grants": true});
    let path = format!("{user}/password");
    assert_eq!(admin_call(&app, &bearer, "PUT", &path, Some(new_password)).await.0, 200);
    assert_eq!(admin_call(&app, &bearer, "DELETE", &user, None).await.0, 200);

    let path = format!("/api/v1/grants?client_id={}", app.client.id);
    let (_, grants) = admin_call(&app, &bearer, "GET", &path, None).await;
    let grant_id = grants["items"][0]["grant_id"].as_str().unwrap().to_string();
    let path = format!("/api/v1/grants/{grant_id}/revoke");
    assert_eq!(admin_call(&app, &bearer, "POST", &path, None).await.0, 200);

    let (_, keys) = admin_call(&app, &bearer, "GET", "/api/v1/keys", None).await;
    let (status, key) = admin_call(&app, &bearer, "POST", "/api/v1/keys", Some(json!({"alg": "ES256"}))).await;
    assert_eq!(status, 201);
    let kid = key["kid"].as_str().unwrap();
    assert_eq!(
        admin_call(&app, &bearer, "POST", &format!("/api/v1/keys/{kid}/promote"), None)
            .await
            .0,
        200
    );
    let old = keys
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["alg"] == "ES256" && k["status"] != "retired")
        .map(|k| k["kid"].as_str().unwrap().to_string())
        .unwrap();
    assert_eq!(
        admin_call(&app, &bearer, "POST", &format!("/api/v1/keys/{old}/retire"), None)
            .await
            .0,
        200
    );

    // The retired key signed the token used so far: a new one, from the new signing key.
    let token: Value = app
        .client_credentials_as(&admin, "tessera:admin")
        .await
        .json()
        .await
        .unwrap();
    let bearer = token["access_token"].as_str().unwrap();
    let entries = trail(&app, bearer, &format!("actor={}", admin.id)).await;
    assert_eq!(
        actions(&entries),
        [
            "client.create",
            "client.update",
            "client.rotate_secret",
            "client.delete",
            "client.delete",
            "user.create",
            "user.update",
            "user.disable",
            "user.enable",
            "user.operator_on",
            "user.set_password",
            "user.revoke_grants",
            "user.delete",
            "grant.revoke",
            "key.generate",
            "key.promote",
            "key.retire",
        ]
    );
    for entry in &entries {
        assert_eq!(entry["actor"]["kind"], "client", "{entry}");
        assert_eq!(entry["actor"]["id"], admin.id.as_str());
        assert_eq!(entry["actor"]["name"], "Admin");
        assert_eq!(entry["address"], "127.0.0.1");
    }
    let outcomes: Vec<&str> = entries.iter().map(|e| e["outcome"].as_str().unwrap()).collect();
    assert_eq!(
        outcomes.iter().filter(|o| **o != "ok").collect::<Vec<_>>(),
        [&"not_found"]
    );
    assert_eq!(outcomes[4], "not_found", "the second delete");
    let targets: Vec<(&str, &str)> = entries
        .iter()
        .map(|e| (e["target_kind"].as_str().unwrap(), e["target_name"].as_str().unwrap()))
        .collect();
    assert_eq!(targets[0], ("client", "Billing"));
    assert_eq!(targets[1], ("client", "Billing v2"));
    assert_eq!(targets[3], ("client", "Billing v2"));
    assert!(targets[5..13].iter().all(|t| *t == ("user", "bob")), "{targets:?}");
    assert_eq!(targets[13], ("grant", &*format!("{USERNAME} to Test App")));
    assert_eq!(targets[14], ("key", "ES256"));
    assert_eq!(entries[14]["target_id"], kid);
    assert_eq!(entries[16]["target_id"], old.as_str());
    assert_eq!(entries[0]["target_id"], client_id.as_str());

    let text = serde_json::to_string(&entries).unwrap();
    for secret in secrets
        .iter()
        .map(String::as_str)
        .chain([password, "another long password 2"])
    {
        assert!(!text.contains(secret), "a secret in the trail");
    }
}

/// Filters and paging of `GET /api/v1/audit`: each filter narrows, the cursor continues.
#[tokio::test]
async fn the_audit_api_filters_and_pages() {
    let app = spawn_app().await;
    let (admin, bearer) = app.admin_bearer().await;
    for name in ["one", "two", "three"] {
        let settings = json!({"name": name, "client_type": "confidential",
            "grant_types": ["client_credentials"], "scope": "read"});
        assert_eq!(
            admin_call(&app, &bearer, "POST", "/api/v1/clients", Some(settings))
                .await
                .0,
            201
        );
    }
    let (_, first) = admin_call(
        &app,
        &bearer,
        "GET",
        &format!("/api/v1/audit?actor={}&limit=2", admin.id),
        None,
    )
    .await;
    let names: Vec<&str> = first["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["target_name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["three", "two"], "newest first");
    let cursor = first["next_cursor"].as_str().unwrap();
    let (_, rest) = admin_call(
        &app,
        &bearer,
        "GET",
        &format!("/api/v1/audit?actor={}&limit=2&cursor={cursor}", admin.id),
        None,
    )
    .await;
    assert_eq!(rest["items"].as_array().unwrap().len(), 1);
    assert_eq!(rest["items"][0]["target_name"], "one");
    assert!(rest.get("next_cursor").is_none_or(Value::is_null));

    assert_eq!(trail(&app, &bearer, "target=two").await.len(), 1);
    let query = format!("action=client.create&actor={}", admin.id);
    assert_eq!(trail(&app, &bearer, &query).await.len(), 3);
    // A client is found by id only: anyone could register one named "Admin".
    assert!(trail(&app, &bearer, "actor=Admin").await.is_empty());
    for query in [
        "action=client.delete",
        "actor=someone-else",
        "since=4102444800",
        "until=1",
    ] {
        assert!(trail(&app, &bearer, query).await.is_empty(), "{query}");
    }
    let anonymous = app.http.get(app.url("/api/v1/audit")).send().await.unwrap();
    assert_eq!(anonymous.status(), 401);
    let bad = app
        .http
        .get(app.url("/api/v1/audit?limit=0"))
        .bearer_auth(&bearer)
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status(), 400);
}

#[tokio::test]
async fn what_users_do_on_their_pages_is_recorded_with_them_as_actor() {
    let app = spawn_app().await;
    let (_, bearer) = app.admin_bearer().await;
    app.get_tokens().await; // logged in as alice, with a consent to the test app

    let csrf = csrf_of(&app, "/o/applications/register/").await;
    let form = [
        ("csrf_token", csrf.as_str()),
        ("name", "Alice's tool"),
        ("client_type", "confidential"),
        ("grant_authorization_code", "on"),
        ("redirect_uris", "https://tool.example/cb"),
        ("scope_read", "on"),
    ];
    let registered = app
        .http
        .post(app.url("/o/applications/register/"))
        .form(&form)
        .send()
        .await
        .unwrap();
    assert_eq!(registered.status(), 200);
    let html = registered.text().await.unwrap();
    let id = code_element(&html, "client-id").unwrap();
    let secret = code_element(&html, "client-secret").unwrap();
    let detail = format!("/o/applications/{id}/");
    // A refused registration by a user records nothing: nobody fills the trail by failing.
    let csrf = csrf_of(&app, "/o/applications/register/").await;
    let refused = app
        .http
        .post(app.url("/o/applications/register/"))
        .form(&[("csrf_token", csrf.as_str()), ("name", "")])
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 400);

    let csrf = csrf_of(&app, &format!("{detail}edit/")).await;
    let edit = [
        ("csrf_token", csrf.as_str()),
        ("name", "Alice's tool v2"),
        ("grant_authorization_code", "on"),
        ("redirect_uris", "https://tool.example/cb"),
        ("scope_read", "on"),
    ];
    let edited = app
        .http
        .post(app.url(&format!("{detail}edit/")))
        .form(&edit)
        .send()
        .await
        .unwrap();
    assert_eq!(edited.status(), 303);
    let csrf = csrf_of(&app, &detail).await;
    let rotated = app
        .http
        .post(app.url(&format!("{detail}rotate-secret/")))
        .form(&[("csrf_token", csrf.as_str())])
        .send()
        .await
        .unwrap();
    let new_secret = code_element(&rotated.text().await.unwrap(), "client-secret").unwrap();
    let csrf = csrf_of(&app, &format!("{detail}delete/")).await;
    let deleted = app
        .http
        .post(app.url(&format!("{detail}delete/")))
        .form(&[("csrf_token", csrf.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(deleted.status(), 303);

    let csrf = csrf_of(&app, "/o/profile/").await;
    let saved = app
        .http
        .post(app.url("/o/profile/"))
        .form(&[("csrf_token", csrf.as_str()), ("name", "Alice Liddell")])
        .send()
        .await
        .unwrap();
    assert_eq!(saved.status(), 200);

    let csrf = csrf_of(&app, "/o/authorized_tokens/").await;
    let withdraw = |csrf: String| {
        let client_id = app.client.id.clone();
        let http = app.http.clone();
        let url = app.url("/o/authorized_tokens/");
        async move {
            http.post(url)
                .form(&[("csrf_token", csrf.as_str()), ("client_id", client_id.as_str())])
                .send()
                .await
                .unwrap()
        }
    };
    assert_eq!(withdraw(csrf.clone()).await.status(), 303);
    // Withdrawing again changes nothing, and records nothing.
    assert_eq!(withdraw(csrf).await.status(), 303);

    let entries = trail(&app, &bearer, &format!("actor={USERNAME}")).await;
    assert_eq!(
        actions(&entries),
        [
            "client.create",
            "client.update",
            "client.rotate_secret",
            "client.delete",
            "user.update",
            "consent.withdraw"
        ]
    );
    for entry in &entries {
        assert_eq!(entry["actor"]["kind"], "user");
        assert_eq!(entry["actor"]["name"], USERNAME);
        assert_eq!(entry["address"], "127.0.0.1");
        assert_eq!(entry["outcome"], "ok");
    }
    assert_eq!(entries[0]["target_name"], "Alice's tool");
    assert_eq!(entries[3]["target_id"], id.as_str());
    assert_eq!(entries[4]["target_name"], USERNAME);
    assert_eq!(entries[5]["target_name"], "Test App");
    let text = serde_json::to_string(&entries).unwrap();
    assert!(!text.contains(&secret) && !text.contains(&new_secret) && !text.contains(PASSWORD));
}

#[tokio::test]
async fn dynamic_registration_is_recorded_anonymous_then_as_the_client_itself() {
    let app = spawn_open().await;
    let (_, bearer) = app.admin_bearer().await;
    let metadata = json!({"client_name": "Agent", "redirect_uris": ["https://agent.example/cb"],
        "token_endpoint_auth_method": "client_secret_basic"});
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
    let client_id = registered["client_id"].as_str().unwrap();
    let token = registered["registration_access_token"].as_str().unwrap();
    let uri = registered["registration_client_uri"].as_str().unwrap();
    // An anonymous refused registration leaves no entry.
    let refused = app
        .http
        .post(app.url("/o/register/"))
        .json(&json!({"redirect_uris": ["http://evil.example/cb"]}))
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 400);

    let mut update = metadata.clone();
    update["client_id"] = json!(client_id);
    update["client_name"] = json!("Agent v2");
    let updated = app.http.put(uri).bearer_auth(token).json(&update).send().await.unwrap();
    assert_eq!(updated.status(), 200);
    let deleted = app.http.delete(uri).bearer_auth(token).send().await.unwrap();
    assert_eq!(deleted.status(), 204);

    let entries = trail(&app, &bearer, &format!("target={client_id}")).await;
    assert_eq!(actions(&entries), ["client.create", "client.update", "client.delete"]);
    assert_eq!(entries[0]["actor"]["kind"], "anonymous");
    assert_eq!(entries[0]["address"], "127.0.0.1");
    assert_eq!(entries[0]["target_name"], "Agent");
    for entry in &entries[1..] {
        assert_eq!(entry["actor"]["kind"], "client");
        assert_eq!(entry["actor"]["id"], client_id);
    }
    assert_eq!(
        trail(&app, &bearer, "actor=anonymous").await.len(),
        1,
        "the refusal is not recorded"
    );
    let text = serde_json::to_string(&entries).unwrap();
    assert!(!text.contains(token));
    assert!(!text.contains(registered["client_secret"].as_str().unwrap()));
}

/// The CLI records as the OS user running it. While a server holds the data folder,
/// `tessera keys` leaves its entry for that server, which moves it into the trail.
#[tokio::test]
async fn the_cli_records_as_its_os_user_and_tessera_audit_list_reads_the_trail() {
    let app = spawn_app().await;
    let (_, bearer) = app.admin_bearer().await;
    let dir = app.data_dir.parent().unwrap().to_path_buf();
    let env = backend_env(&dir);
    let mut env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    // The actor is the OS account running the command; `$USER` is only what it says.
    env.push(("USER", "opsperson"));
    let account = std::process::Command::new("id").arg("-un").output().unwrap();
    let account = String::from_utf8_lossy(&account.stdout).trim().to_string();
    let generated = run_tessera(&dir, &["keys", "generate", "--alg", "EdDSA"], &env, "");
    assert!(generated.status.success(), "{generated:?}");
    let kid = String::from_utf8_lossy(&generated.stdout)
        .split_whitespace()
        .next()
        .unwrap()
        .to_string();
    let mut entries = Vec::new();
    for _ in 0..50 {
        entries = trail(&app, &bearer, &format!("action=key.generate&actor={account}")).await;
        if !entries.is_empty() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert_eq!(entries.len(), 1, "the key change reached the trail");
    let name = format!("{account} (says opsperson)");
    assert_eq!(entries[0]["actor"], json!({"kind": "cli", "id": account, "name": name}));
    assert_eq!(entries[0]["target_id"], kid.as_str());
    let pending = app.data_dir.parent().unwrap().join("keys/audit-pending.jsonl");
    assert!(
        std::fs::metadata(pending).map_or(true, |m| m.len() == 0),
        "the server took it"
    );
    let dir = app.stop().await;

    let created = run_tessera(
        dir.path(),
        &["user", "create", "--username", "carol", "--password-stdin"],
        &env,
        "carol's long password\n",
    );
    assert!(created.status.success(), "{created:?}");
    let listed = run_tessera(dir.path(), &["audit", "list", "--json", "--actor", &account], &env, "");
    assert!(listed.status.success(), "{listed:?}");
    let lines: Vec<Value> = String::from_utf8_lossy(&listed.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let listed_actions: Vec<&str> = lines.iter().map(|e| e["action"].as_str().unwrap()).collect();
    assert_eq!(listed_actions, ["user.create", "key.generate"], "newest first");
    assert_eq!(lines[0]["target_name"], "carol");
    let text = run_tessera(dir.path(), &["audit", "list", "--since", "1h"], &env, "");
    let text = String::from_utf8_lossy(&text.stdout);
    assert!(
        text.contains(&format!("cli:{account} (says opsperson)")) && text.contains("carol"),
        "{text}"
    );
    let none = run_tessera(
        dir.path(),
        &["audit", "list", "--json", "--since", "2099-01-01T00:00:00Z"],
        &env,
        "",
    );
    assert!(none.status.success() && none.stdout.is_empty());
    let bad = run_tessera(dir.path(), &["audit", "list", "--since", "yesterday-ish"], &env, "");
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("--since"));
}

/// After a full run of changes, the store's bytes hold what the trail names (proof that the
/// entries are there) but not one secret, token or password.
#[tokio::test]
async fn no_secret_token_or_password_is_anywhere_in_the_store() {
    let app = spawn_open().await;
    let (_, bearer) = app.admin_bearer().await;
    let tokens = app.get_tokens().await;
    let mut secrets: Vec<String> = vec![PASSWORD.into(), bearer.clone()];
    for name in ["access_token", "refresh_token"] {
        secrets.push(tokens[name].as_str().unwrap().into());
    }
    let settings = json!({"name": "Visible-Name-7781", "client_type": "confidential",
        "grant_types": ["client_credentials"], "scope": "read"});
    let (_, created) = admin_call(&app, &bearer, "POST", "/api/v1/clients", Some(settings)).await;
    secrets.push(created["client_secret"].as_str().unwrap().into());
    let client_id = created["client"]["client_id"].as_str().unwrap();
    let (_, rotated) = admin_call(
        &app,
        &bearer,
        "POST",
        &format!("/api/v1/clients/{client_id}/secret"),
        None,
    )
    .await;
    secrets.push(rotated["client_secret"].as_str().unwrap().into());
    let password = "Visible-Password-8812 long enough";
    let user = json!({"username": "dora-5512", "password": password});
    let (_, dora) = admin_call(&app, &bearer, "POST", "/api/v1/users", Some(user)).await;
    let reset = json!({"password": "Other-Password-9917 long enough"});
    let path = format!("/api/v1/users/{}/password", dora["user_id"].as_str().unwrap());
    assert_eq!(admin_call(&app, &bearer, "PUT", &path, Some(reset)).await.0, 200);
    secrets.extend([password.to_string(), "Other-Password-9917 long enough".into()]);
    let registered: Value = app
        .http
        .post(app.url("/o/register/"))
        .json(&json!({"client_name": "Dyn-Name-3391", "redirect_uris": ["https://dyn.example/cb"]}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    secrets.push(registered["registration_access_token"].as_str().unwrap().into());
    secrets.push(registered["client_secret"].as_str().unwrap().into());
    assert!(trail(&app, &bearer, "").await.len() >= 5);

    let database_url = app.provider.config.database_url.clone();
    let data_dir = app.data_dir.clone();
    let _dir = app.stop().await;
    let mut contents = Vec::new();
    match &database_url {
        Some(url) => contents.push(database_text(url).await),
        None => contents = file_contents(&data_dir),
    }
    let found = |needle: &str| {
        contents
            .iter()
            .any(|c| c.windows(needle.len()).any(|w| w == needle.as_bytes()))
    };
    for name in [
        "Visible-Name-7781",
        "dora-5512",
        "Dyn-Name-3391",
        "client.rotate_secret",
        "user.set_password",
    ] {
        assert!(found(name), "{name} is in the store: the trail was written");
    }
    for secret in &secrets {
        assert!(!found(secret), "a secret, token or password is in the store");
    }
}

/// Security events are recorded once each: a replayed code, a reused refresh token, a login
/// lockout, a burst of rejected client authentications; repeats of the same attack add none.
#[tokio::test]
async fn security_events_are_recorded_once_each_with_who_and_from_where() {
    let dirs = tempfile::tempdir().unwrap();
    let config = tessera::Config {
        login_throttle: tessera::oauth::throttle::ThrottlePolicy {
            max_failures: 2,
            ..Default::default()
        },
        ..test_config(&dirs)
    };
    let app = spawn_app_with(config, dirs).await;
    let (_, bearer) = app.admin_bearer().await;

    let (code, pkce) = app.get_code().await;
    assert_eq!(app.exchange_code(&code, &pkce.verifier).await.status(), 200);
    for _ in 0..2 {
        assert_eq!(app.exchange_code(&code, &pkce.verifier).await.status(), 400);
    }
    let replays = trail(&app, &bearer, "action=code.replay").await;
    assert_eq!(replays.len(), 1, "{replays:?}");
    assert_eq!(replays[0]["actor"]["id"], app.client.id.as_str());
    assert_eq!(replays[0]["target_kind"], "grant");
    assert_eq!(replays[0]["target_name"], format!("{USERNAME} to Test App"));
    assert_eq!(replays[0]["address"], "127.0.0.1");

    let tokens = app.get_tokens().await;
    let first = tokens["refresh_token"].as_str().unwrap();
    assert_eq!(app.refresh(first).await.status(), 200);
    for _ in 0..2 {
        assert_eq!(app.refresh(first).await.status(), 400);
    }
    let reuses = trail(&app, &bearer, "action=refresh_token.reuse").await;
    assert_eq!(reuses.len(), 1, "{reuses:?}");
    assert_eq!(reuses[0]["actor"]["kind"], "client");
    assert_eq!(reuses[0]["outcome"], "grant revoked");
    assert!(!serde_json::to_string(&reuses).unwrap().contains(first));

    for _ in 0..2 {
        assert_eq!(app.log_in("/o/login/", USERNAME, "wrong password").await.status(), 401);
    }
    assert_eq!(app.log_in("/o/login/", USERNAME, "wrong password").await.status(), 429);
    // Refused while locked: no new lockout, no new entry.
    assert_eq!(app.log_in("/o/login/", USERNAME, "wrong password").await.status(), 429);
    let lockouts = trail(&app, &bearer, "action=login.lockout").await;
    assert_eq!(lockouts.len(), 1, "{lockouts:?}");
    assert_eq!(lockouts[0]["actor"]["kind"], "anonymous");
    assert_eq!(lockouts[0]["target_name"], USERNAME);
    assert_eq!(lockouts[0]["address"], "127.0.0.1");
    assert!(!serde_json::to_string(&lockouts).unwrap().contains("wrong password"));

    let wrong = TestClient {
        id: app.client.id.clone(),
        secret: Some("not the secret".into()),
    };
    for _ in 0..30 {
        let response = app.client_credentials_as(&wrong, "read").await;
        assert_eq!(response.status(), 401);
    }
    let bursts = trail(&app, &bearer, "action=client_auth.burst").await;
    assert_eq!(bursts.len(), 1, "one burst, one entry: {bursts:?}");
    assert_eq!(bursts[0]["target_id"], app.client.id.as_str());
    assert_eq!(bursts[0]["target_name"], "Test App");
    assert!(!serde_json::to_string(&bursts).unwrap().contains("not the secret"));
    // Failures for a client that does not exist are nobody's burst.
    let unknown = TestClient {
        id: "no-such-client".into(),
        secret: Some("x".into()),
    };
    for _ in 0..30 {
        app.client_credentials_as(&unknown, "read").await;
    }
    assert_eq!(trail(&app, &bearer, "action=client_auth.burst").await.len(), 1);
}

/// Each change is an entry, so ordinary actors have a budget of changes (an operator, an
/// admin client or the CLI has none): past it a user's page answers 429 and nothing is
/// changed or recorded.
#[tokio::test]
async fn ordinary_users_cannot_grow_the_trail_without_end() {
    let dirs = tempfile::tempdir().unwrap();
    let config = tessera::Config {
        self_service_changes: tessera::rate_limit::Rate::per_minute(3),
        ..test_config(&dirs)
    };
    let app = spawn_app_with(config, dirs).await;
    let (_, bearer) = app.admin_bearer().await;
    assert_eq!(app.log_in("/o/login/", USERNAME, PASSWORD).await.status(), 303);
    let mut statuses = Vec::new();
    for n in 0..5 {
        let csrf = csrf_of(&app, "/o/profile/").await;
        let name = format!("Alice {n}");
        let saved = app
            .http
            .post(app.url("/o/profile/"))
            .form(&[("csrf_token", csrf.as_str()), ("name", name.as_str())])
            .send()
            .await
            .unwrap();
        statuses.push(saved.status().as_u16());
    }
    assert_eq!(statuses, [200, 200, 200, 429, 429]);
    assert_eq!(trail(&app, &bearer, "action=user.update").await.len(), 3);
    let alice = app.store.get_user_by_name(USERNAME).await.unwrap().unwrap();
    assert_eq!(
        alice.profile.name.as_deref(),
        Some("Alice 2"),
        "the refused saves changed nothing"
    );
    // The admin API is not budgeted.
    for n in 0..5 {
        let change = json!({"name": format!("Set by admin {n}")});
        let path = format!("/api/v1/users/{}", alice.user_id);
        assert_eq!(admin_call(&app, &bearer, "PATCH", &path, Some(change)).await.0, 200);
    }
    assert_eq!(trail(&app, &bearer, "action=user.update").await.len(), 8);
}

// The adversarial review of the audit trail (issue 16, `SECURITY.md`): each comment tells the
// finding as it was found, and each test failed until it was fixed.

/// Waits (up to 6 s, three key-reload ticks) for the server to take the keys folder's pending
/// file; true when it is gone.
async fn pending_taken(app: &TestApp) -> bool {
    // The server empties the file once it has taken its lines.
    let pending = app.keys_dir.join("audit-pending.jsonl");
    for _ in 0..60 {
        if std::fs::metadata(&pending).map_or(true, |m| m.len() == 0) {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    false
}

fn write_pending(app: &TestApp, bytes: &[u8]) {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .open(app.keys_dir.join("audit-pending.jsonl"))
        .unwrap();
    file.write_all(bytes).unwrap();
}

/// An entry as `tessera keys` would leave it, at `at_ms`.
fn key_entry(id_suffix: &str, at_ms: i64, kid: &str) -> Value {
    json!({
        "id": format!("{:016x}{id_suffix}", at_ms),
        "at_ms": at_ms,
        "actor": {"kind": "cli", "id": "opsperson", "name": "opsperson"},
        "address": null,
        "action": "key.generate",
        "target_kind": "key",
        "target_id": kid,
        "target_name": "EdDSA",
        "outcome": "ok",
    })
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

/// A server whose login throttle locks a name out at its first failure, and an admin token to
/// read its trail with.
async fn locking_out_at_the_first_failure() -> (TestApp, String) {
    let dirs = tempfile::tempdir().unwrap();
    let config = tessera::Config {
        login_throttle: tessera::oauth::throttle::ThrottlePolicy {
            max_failures: 1,
            ..Default::default()
        },
        ..test_config(&dirs)
    };
    let app = spawn_app_with(config, dirs).await;
    let (_, bearer) = app.admin_bearer().await;
    (app, bearer)
}

/// Finding 1 (anonymous log injection): a failed login that starts a lockout records the
/// username *as typed* (up to 64 characters, unvalidated) as the entry's target name, and
/// `tessera audit list` prints names raw. An anonymous visitor types a username holding a
/// newline and a fake entry (or terminal escape sequences), and the operator's listing shows a
/// forged line: here "cli:root deleted user alice". Every entry must stay one line, with no
/// control character an attacker chose.
#[tokio::test]
async fn audit_list_prints_one_line_per_entry_whatever_username_an_anonymous_visitor_types() {
    let (app, bearer) = locking_out_at_the_first_failure().await;
    let forged = "bob\n2026-12-05T09:00:00Z  cli:root  user.delete  user alice [x]  ok\x1b[1A\x1b[2K";
    for _ in 0..3 {
        app.log_in("/o/login/", forged, "wrong password").await;
    }
    let lockouts = trail(&app, &bearer, "action=login.lockout").await;
    assert_eq!(lockouts.len(), 1, "precondition: the lockout is recorded: {lockouts:?}");

    let dir = app.stop().await;
    let env = backend_env(dir.path());
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let json = run_tessera(dir.path(), &["audit", "list", "--json"], &env, "");
    assert!(json.status.success(), "{json:?}");
    let entries = String::from_utf8_lossy(&json.stdout).lines().count();
    let text = run_tessera(dir.path(), &["audit", "list"], &env, "");
    assert!(text.status.success(), "{text:?}");
    let text = String::from_utf8_lossy(&text.stdout).to_string();
    assert!(
        !text.chars().any(|c| c.is_control() && c != '\n'),
        "a control character chosen by an anonymous visitor reached the operator's terminal:\n{text:?}"
    );
    assert_eq!(
        text.lines().count(),
        entries,
        "an anonymous visitor's username forged a line of `tessera audit list`:\n{text}"
    );
    assert!(
        !text.lines().any(|l| l.starts_with("2026-12-05T09:00:00Z  cli:root")),
        "{text}"
    );
}

/// Parallel presentations of one credential per round, and rounds: the race is won in some.
const PARALLEL: usize = 50;

const ROUNDS: usize = 100;

/// A server without the token endpoint's request rates, so parallel requests all reach it.
async fn spawn_unlimited() -> TestApp {
    let dirs = tempfile::tempdir().unwrap();
    let config = tessera::Config {
        rate_limit_per_client: tessera::rate_limit::Rate::OFF,
        rate_limit_per_address: tessera::rate_limit::Rate::OFF,
        ..test_config(&dirs)
    };
    spawn_app_with(config, dirs).await
}

/// Finding 2 (duplicate security events): a replayed code is recorded by every replay that
/// reads the grant as live before the first replay revokes it (`was_live` is read, then
/// `revoke_grant` answers true for a grant revoked already). Fifty parallel replays of one
/// used code must give one `code.replay` entry.
#[tokio::test(flavor = "multi_thread", worker_threads = 8)]
async fn parallel_replays_of_one_code_are_recorded_once() {
    let app = spawn_unlimited().await;
    let (_, bearer) = app.admin_bearer().await;
    let mut recorded = 0;
    for _round in 0..ROUNDS {
        let (code, pkce) = app.get_code().await;
        assert_eq!(app.exchange_code(&code, &pkce.verifier).await.status(), 200);
        let mut replays = Vec::new();
        let start = std::sync::Arc::new(tokio::sync::Barrier::new(PARALLEL));
        for _ in 0..PARALLEL {
            let (remote, code, verifier) = ((*app).clone(), code.clone(), pkce.verifier.clone());
            let start = start.clone();
            replays.push(tokio::spawn(async move {
                start.wait().await;
                remote.exchange_code(&code, &verifier).await.status().as_u16()
            }));
        }
        for replay in replays {
            assert_eq!(replay.await.unwrap(), 400);
        }
        recorded += 1;
        let entries = trail(&app, &bearer, "action=code.replay").await;
        assert_eq!(
            entries.len(),
            recorded,
            "one used code replayed 50 times at once was recorded more than once"
        );
    }
}

/// Finding 3 (duplicate security events): a spent refresh token presented by many requests at
/// once is recorded by each of them: every request reads the grant live, finds the token
/// spent, revokes the grant and records `refresh_token.reuse`. One leak must be one entry.
#[tokio::test(flavor = "multi_thread", worker_threads = 8)]
async fn parallel_reuses_of_one_refresh_token_are_recorded_once() {
    let app = spawn_unlimited().await;
    let (_, bearer) = app.admin_bearer().await;
    let mut recorded = 0;
    for _round in 0..ROUNDS {
        let tokens = app.get_tokens().await;
        let first = tokens["refresh_token"].as_str().unwrap().to_string();
        assert_eq!(app.refresh(&first).await.status(), 200);
        let mut reuses = Vec::new();
        let start = std::sync::Arc::new(tokio::sync::Barrier::new(PARALLEL));
        for _ in 0..PARALLEL {
            let (remote, token) = ((*app).clone(), first.clone());
            let start = start.clone();
            reuses.push(tokio::spawn(async move {
                start.wait().await;
                remote.refresh(&token).await.status().as_u16()
            }));
        }
        for reuse in reuses {
            assert_eq!(reuse.await.unwrap(), 400);
        }
        recorded += 1;
        let entries = trail(&app, &bearer, "action=refresh_token.reuse").await;
        assert_eq!(
            entries.len(),
            recorded,
            "one spent refresh token presented 50 times at once was recorded more than once"
        );
    }
}

/// Finding 4 (history rewrite through the pending file, data folder only): the server imports
/// the keys folder's `audit-pending.jsonl` line by line with `append_audit`, which on the data
/// folder is a sled `insert`: an entry with the id of one already in the trail *replaces* it.
/// Whoever can write one line to the keys folder (or a buggy tool) can rewrite any past entry:
/// here an admin's `client.create` becomes a `cli:root` one of an innocent-looking app. An
/// import must never change an entry already in the trail (PostgreSQL's ON CONFLICT DO
/// NOTHING is the intended behaviour).
#[tokio::test]
async fn a_pending_entry_cannot_replace_an_entry_already_in_the_trail() {
    if on_postgres() {
        return; // the pending file is a data-folder matter
    }
    let app = spawn_app().await;
    let (admin, bearer) = app.admin_bearer().await;
    let settings = json!({"name": "Payroll export", "client_type": "confidential",
        "grant_types": ["client_credentials"], "scope": "read"});
    let (status, created) = admin_call(&app, &bearer, "POST", "/api/v1/clients", Some(settings)).await;
    assert_eq!(status, 201);
    let client_id = created["client"]["client_id"].as_str().unwrap().to_string();
    let original = trail(&app, &bearer, &format!("target={client_id}")).await;
    assert_eq!(original.len(), 1);
    let original = original[0].clone();
    assert_eq!(original["actor"]["id"], admin.id.as_str());

    let mut forged = original.clone();
    forged["actor"] = json!({"kind": "cli", "id": "root", "name": "root"});
    forged["target_name"] = json!("Test widget");
    forged["address"] = Value::Null;
    let mut line = serde_json::to_vec(&forged).unwrap();
    line.push(b'\n');
    write_pending(&app, &line);
    assert!(pending_taken(&app).await, "the server takes the pending file");

    let after = trail(&app, &bearer, &format!("target={client_id}")).await;
    assert_eq!(after.len(), 1);
    assert_eq!(
        after[0], original,
        "a line in the keys folder rewrote who created the client"
    );
}

/// Finding 5 (forged history through the pending file): the import trusts every field of
/// every line. Only `tessera keys` writes there, so only what it writes (a `cli` actor and a
/// `key.*` action, made just now) may be imported; an entry saying an admin client deleted a
/// user two weeks ago must be refused (and logged), not put in the trail.
#[tokio::test]
async fn only_key_changes_by_the_cli_are_imported_from_the_keys_folder() {
    if on_postgres() {
        return;
    }
    let app = spawn_app().await;
    let (admin, bearer) = app.admin_bearer().await;
    let two_weeks_ago = now_ms() - 14 * 86_400_000;
    let forged = json!({
        "id": format!("{:016x}forged1", two_weeks_ago),
        "at_ms": two_weeks_ago,
        "actor": {"kind": "client", "id": admin.id, "name": admin.id},
        "address": "203.0.113.9",
        "action": "user.delete",
        "target_kind": "user",
        "target_id": "u-bob",
        "target_name": "bob",
        "outcome": "ok",
    });
    let genuine = key_entry("genuine1", now_ms(), "kid-genuine");
    let mut lines = Vec::new();
    for entry in [&forged, &genuine] {
        lines.extend(serde_json::to_vec(entry).unwrap());
        lines.push(b'\n');
    }
    write_pending(&app, &lines);
    assert!(pending_taken(&app).await, "the server takes the pending file");
    assert_eq!(
        trail(&app, &bearer, "action=key.generate").await.len(),
        1,
        "the genuine key change is imported"
    );
    let deletes = trail(&app, &bearer, "action=user.delete").await;
    assert!(
        deletes.is_empty(),
        "a line in the keys folder made the admin client delete a user: {deletes:?}"
    );
}

/// Finding 6 (key changes silently never recorded): one line that is not UTF-8 in the pending
/// file (a crafted or damaged file, or the 1 MiB read limit cutting a multi-byte character)
/// makes `read_to_string` fail: the import errors every two seconds forever, the
/// `.importing` file is never removed, and since the pending file is only renamed when no
/// `.importing` file exists, no later `tessera keys` change ever reaches the trail. A bad line
/// must be skipped like any other unreadable line, and the good ones imported.
#[tokio::test]
async fn a_damaged_pending_file_does_not_stop_key_changes_reaching_the_trail() {
    if on_postgres() {
        return;
    }
    let app = spawn_app().await;
    let (_, bearer) = app.admin_bearer().await;
    let mut bytes = b"\xff\xfe not utf-8\n".to_vec();
    bytes.extend(serde_json::to_vec(&key_entry("before01", now_ms(), "kid-before")).unwrap());
    bytes.push(b'\n');
    write_pending(&app, &bytes);
    tokio::time::sleep(Duration::from_secs(3)).await;

    // A key change made afterwards, while the server runs, as `tessera keys` makes it.
    let dir = app.data_dir.parent().unwrap().to_path_buf();
    let env = [("USER", "opsperson")];
    let generated = run_tessera(&dir, &["keys", "generate", "--alg", "EdDSA"], &env, "");
    assert!(generated.status.success(), "{generated:?}");
    let kid = String::from_utf8_lossy(&generated.stdout)
        .split_whitespace()
        .next()
        .unwrap()
        .to_string();
    let taken = pending_taken(&app).await;
    let entries = trail(&app, &bearer, "action=key.generate").await;
    let kids: Vec<&str> = entries.iter().filter_map(|e| e["target_id"].as_str()).collect();
    assert!(
        kids.contains(&kid.as_str()),
        "`tessera keys generate` is never recorded once the pending file held one bad line: {kids:?}"
    );
    assert!(kids.contains(&"kid-before"), "{kids:?}");
    assert!(taken, "the pending files are stuck in the keys folder");
}

/// Finding 7 (forgeable CLI actor): the CLI names its actor after `$USER` (or `$LOGNAME`), which
/// the person running it sets at will: `USER=alice tessera user delete bob` is recorded as
/// `cli:alice`. The actor must be the OS account actually running the command (its uid), so
/// one operator cannot put their change on another.
#[tokio::test]
async fn the_cli_actor_is_the_real_os_account_not_the_user_variable() {
    let app = spawn_app().await;
    let dir = app.stop().await;
    let real = std::process::Command::new("id").arg("-un").output().unwrap();
    let real = String::from_utf8_lossy(&real.stdout).trim().to_string();
    assert!(!real.is_empty());
    let framed = "someone-else-entirely";
    let env = backend_env(dir.path());
    let mut env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    env.extend([("USER", framed), ("LOGNAME", framed)]);
    let created = run_tessera(
        dir.path(),
        &["user", "create", "--username", "mallory-made", "--password-stdin"],
        &env,
        "a long enough password\n",
    );
    assert!(created.status.success(), "{created:?}");
    let listed = run_tessera(
        dir.path(),
        &[
            "audit",
            "list",
            "--json",
            "--action",
            "user.create",
            "--target",
            "mallory-made",
        ],
        &env,
        "",
    );
    let entry: Value = serde_json::from_slice(listed.stdout.split(|b| *b == b'\n').next().unwrap()).unwrap();
    assert_ne!(
        entry["actor"]["id"], framed,
        "the CLI's change was put on whoever $USER names: {entry}"
    );
    assert_eq!(entry["actor"]["id"], real.as_str(), "{entry}");
}

/// Finding 8 (entries for changes that did not happen): `PATCH /api/v1/users/{id}` records
/// `user.operator_off` and `user.enable` whenever the fields are sent, even when the user was
/// never an operator and never disabled. The trail then says an admin took away someone's
/// operator role. Only a change is recorded.
#[tokio::test]
async fn a_patch_that_changes_nothing_records_nothing() {
    let app = spawn_app().await;
    let (_, bearer) = app.admin_bearer().await;
    let alice = app.store.get_user_by_name(USERNAME).await.unwrap().unwrap();
    assert!(!alice.operator && !alice.disabled);
    let path = format!("/api/v1/users/{}", alice.user_id);
    let (status, _) = admin_call(
        &app,
        &bearer,
        "PATCH",
        &path,
        Some(json!({"operator": false, "disabled": false})),
    )
    .await;
    assert_eq!(status, 200);
    let entries = trail(&app, &bearer, &format!("target={}", alice.user_id)).await;
    let actions: Vec<&str> = entries
        .iter()
        .filter_map(|e| e["action"].as_str())
        .filter(|a| *a != "user.create") // the seed
        .collect();
    assert!(
        actions.is_empty(),
        "a PATCH that changed nothing was recorded as {actions:?}"
    );
}

/// Finding 9 (the whole trail lost on a move to a cluster): `tessera db import` copies every
/// record of a single node's data folder into the cluster's database (clients, users, grants,
/// consents, codes, tokens, sessions, secrets, keys) but not its audit trail (`Export` has no
/// audit entries): after the documented move from one node to a cluster, who changed what
/// before the move is gone, and with it the security events. The trail must move too.
#[tokio::test]
async fn db_import_moves_the_audit_trail_too() {
    let node_dir = tempfile::tempdir().unwrap();
    let env = [("USER", "opsperson")];
    let created = run_tessera(
        node_dir.path(),
        &["user", "create", "--username", "moved-user", "--password-stdin"],
        &env,
        "a long enough password\n",
    );
    assert!(created.status.success(), "{created:?}");
    let before = run_tessera(node_dir.path(), &["audit", "list", "--json"], &env, "");
    assert!(
        String::from_utf8_lossy(&before.stdout).contains("moved-user"),
        "precondition: the node's trail holds the change"
    );

    let url = crate::postgres::PgServer::shared().create_database().await;
    let kek = tessera::keys::database::KeyEncryptionKey::generate();
    let cluster_dir = tempfile::tempdir().unwrap();
    let cluster_env = [
        ("TESSERA_DATABASE_URL", url.as_str()),
        ("TESSERA_KEY_ENCRYPTION_KEY", kek.as_str()),
        ("USER", "opsperson"),
    ];
    let data = node_dir.path().join("data");
    let keys = node_dir.path().join("keys");
    let imported = run_tessera(
        cluster_dir.path(),
        &[
            "db",
            "import",
            "--from-data-dir",
            data.to_str().unwrap(),
            "--from-keys-dir",
            keys.to_str().unwrap(),
        ],
        &cluster_env,
        "",
    );
    assert!(imported.status.success(), "{imported:?}");
    let after = run_tessera(cluster_dir.path(), &["audit", "list", "--json"], &cluster_env, "");
    assert!(after.status.success(), "{after:?}");
    let after = String::from_utf8_lossy(&after.stdout);
    assert!(
        after.contains("moved-user") && after.contains("user.create"),
        "the node's audit trail did not move to the cluster: {after:?}"
    );
}

/// Finding 10 (anonymous 500, and a lockout that is never recorded, on PostgreSQL): a username
/// holding a NUL byte reaches `SELECT ... WHERE username = $1`, which PostgreSQL refuses, so the
/// login answers 500. The throttle counted the attempt before the lookup failed, so such an
/// attempt still locks the address out, but the error path skips the `login.lockout` entry:
/// a guesser makes the attempt that crosses the per-address threshold one with a NUL in the
/// username, and the lockout never reaches the trail. A NUL in a username is just a wrong
/// username: 401, counted, and its lockout recorded.
#[tokio::test]
async fn a_nul_in_a_typed_username_is_a_wrong_login_and_its_lockout_is_recorded() {
    let (app, _) = spawn_on_postgres(|config| {
        config.login_throttle = tessera::oauth::throttle::ThrottlePolicy {
            max_failures: 5,
            max_failures_per_address: 2,
            ..Default::default()
        };
    })
    .await;
    let (_, bearer) = app.admin_bearer().await;
    let mut statuses = Vec::new();
    for name in ["carol", "dave", "eve\0"] {
        statuses.push(app.log_in("/o/login/", name, "wrong password").await.status().as_u16());
    }
    // The address is locked out now, whichever way the third attempt was answered.
    let locked = app.log_in("/o/login/", "frank", "wrong password").await.status();
    assert_eq!(locked, 429, "precondition: three failures lock the address out");
    let lockouts = trail(&app, &bearer, "action=login.lockout").await;
    assert_eq!(
        lockouts.len(),
        1,
        "the address lockout is not in the trail: {lockouts:?}"
    );
    // Since the third review (finding 7) the request edge refuses a NUL anywhere in a form
    // with 400, before anything is counted or looked up.
    assert_eq!(
        statuses,
        [401, 401, 400],
        "a NUL in a username is answered {statuses:?}"
    );
}

/// Finding 11 (admin-API 500 on PostgreSQL): a NUL byte in `cursor`, `actor`, `action` or
/// `target` of `GET /api/v1/audit` goes to PostgreSQL as text, which refuses it: 500 (and an
/// error logged) instead of an empty page or a 400.
#[tokio::test]
async fn the_audit_api_never_answers_500_for_a_nul_in_a_filter_or_cursor() {
    let (app, _) = spawn_on_postgres(|_| ()).await;
    let (_, bearer) = app.admin_bearer().await;
    for query in ["cursor=%00", "actor=%00", "action=%00", "target=a%00b"] {
        let status = app
            .http
            .get(app.url(&format!("/api/v1/audit?{query}")))
            .bearer_auth(&bearer)
            .send()
            .await
            .unwrap()
            .status()
            .as_u16();
        assert!(status == 200 || status == 400, "{query}: {status}");
    }
}

/// Finding 12 (an anonymous client passes itself off as the admin client): an actor is shown
/// by `tessera audit list` as `kind:NAME` only, and a client's name is whatever it registered.
/// Anyone (open dynamic registration) registers a client named like the admin client
/// ("Admin"), then updates and deletes itself with its registration token: those entries read
/// `client:Admin ... client.update` / `client.delete`, exactly like the admin client's own,
/// and `?actor=Admin` returns them with the admin's. An actor shown to a person must be told
/// apart from every other one (its id, and whether it is an admin client or a self-registered
/// one).
#[tokio::test]
async fn a_self_registered_client_cannot_pass_for_the_admin_client_in_the_listing() {
    let app = spawn_open().await;
    let (admin, bearer) = app.admin_bearer().await;
    let settings = json!({"name": "Billing", "client_type": "confidential",
        "grant_types": ["client_credentials"], "scope": "read"});
    let (status, created) = admin_call(&app, &bearer, "POST", "/api/v1/clients", Some(settings)).await;
    assert_eq!(status, 201);
    let admin_name = trail(&app, &bearer, &format!("actor={}", admin.id)).await[0]["actor"]["name"]
        .as_str()
        .unwrap()
        .to_string();

    // Anonymous: a client with the admin client's name, which then changes itself.
    let metadata = json!({"client_name": admin_name, "redirect_uris": ["https://impostor.example/cb"],
        "token_endpoint_auth_method": "client_secret_basic"});
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
    let impostor = registered["client_id"].as_str().unwrap().to_string();
    let token = registered["registration_access_token"].as_str().unwrap();
    let uri = registered["registration_client_uri"].as_str().unwrap();
    let mut update = metadata.clone();
    update["client_id"] = json!(impostor);
    let updated = app.http.put(uri).bearer_auth(token).json(&update).send().await.unwrap();
    assert_eq!(updated.status(), 200);
    let by_name = trail(&app, &bearer, &format!("actor={admin_name}")).await;
    let _ = created;

    let dir = app.stop().await;
    let env = backend_env(dir.path());
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let text = run_tessera(dir.path(), &["audit", "list"], &env, "");
    let text = String::from_utf8_lossy(&text.stdout).to_string();
    let actor_of = |needle: &str| -> String {
        let line = text
            .lines()
            .find(|l| l.contains(needle))
            .unwrap_or_else(|| panic!("{needle}: {text}"));
        line.split("  ").nth(1).unwrap().to_string()
    };
    let real = actor_of("client Billing");
    let fake = actor_of("client.update");
    assert_ne!(
        real, fake,
        "the self-registered client's change reads as the admin client's:\n{text}"
    );
    assert!(
        by_name.iter().all(|e| e["actor"]["id"] == admin.id.as_str()),
        "?actor={admin_name} mixes an anonymous client's entries with the admin client's: {by_name:?}"
    );
}

/// Regression guard (held up): fifty wrong passwords at once for one username from one address
/// start one lockout, recorded once.
#[tokio::test(flavor = "multi_thread", worker_threads = 8)]
async fn parallel_wrong_passwords_record_one_lockout() {
    let dirs = tempfile::tempdir().unwrap();
    let config = tessera::Config {
        login_throttle: tessera::oauth::throttle::ThrottlePolicy {
            max_failures: 2,
            ..Default::default()
        },
        rate_limit_per_address: tessera::rate_limit::Rate::OFF,
        ..test_config(&dirs)
    };
    let app = spawn_app_with(config, dirs).await;
    let (_, bearer) = app.admin_bearer().await;
    let start = std::sync::Arc::new(tokio::sync::Barrier::new(PARALLEL));
    let mut attempts = Vec::new();
    for _ in 0..PARALLEL {
        let (remote, start) = (browser(&app), start.clone());
        attempts.push(tokio::spawn(async move {
            start.wait().await;
            remote
                .log_in("/o/login/", USERNAME, "wrong password")
                .await
                .status()
                .as_u16()
        }));
    }
    let mut statuses = Vec::new();
    for attempt in attempts {
        statuses.push(attempt.await.unwrap());
    }
    assert!(statuses.iter().all(|s| *s == 401 || *s == 429), "{statuses:?}");
    assert_eq!(trail(&app, &bearer, "action=login.lockout").await.len(), 1);
}

/// Finding 13 (trail growth by an ordinary user): a profile save records `user.update` even
/// when nothing changed, so a signed-in user re-posting the same form grows the trail by one
/// entry per request, up to the whole change budget (30 a minute: 43,200 entries a day, some
/// 4 million over the 90-day retention, per account) without changing anything. A save that
/// changes nothing is no change: no entry (and no budget spent).
#[tokio::test]
async fn a_profile_save_that_changes_nothing_records_nothing() {
    let app = spawn_app().await;
    let (_, bearer) = app.admin_bearer().await;
    assert_eq!(app.log_in("/o/login/", USERNAME, PASSWORD).await.status(), 303);
    let alice = app.store.get_user_by_name(USERNAME).await.unwrap().unwrap();
    let before = trail(&app, &bearer, &format!("action=user.update&target={}", alice.user_id))
        .await
        .len();
    for _ in 0..5 {
        let page = app.get_text("/o/profile/").await;
        let csrf = hidden_input(&page, "csrf_token").unwrap();
        let saved = app
            .http
            .post(app.url("/o/profile/"))
            .form(&[("csrf_token", csrf.as_str()), ("name", "Alice Example")])
            .send()
            .await
            .unwrap();
        assert_eq!(saved.status(), 200);
    }
    let after = trail(&app, &bearer, &format!("action=user.update&target={}", alice.user_id))
        .await
        .len();
    assert_eq!(
        after - before,
        1,
        "five saves of the same profile made {} entries",
        after - before
    );
}

/// Finding 14 (a password can reach the trail): the lockout entry stores the username *as
/// typed*, even when it is nobody's. People type their password into the username field (or
/// paste it there); the failures that follow lock the pair out, and the trail keeps the
/// password for 90 days, readable by every admin client. A name that is no user's must not be
/// stored as typed (store the user's name when there is one, or a marker / a keyed digest).
#[tokio::test]
async fn a_lockout_does_not_store_a_typed_name_that_is_nobodys() {
    let (app, bearer) = locking_out_at_the_first_failure().await;
    let typed = "Tr0ub4dor&3 horse";
    for _ in 0..3 {
        app.log_in("/o/login/", typed, "whatever").await;
    }
    let lockouts = trail(&app, &bearer, "action=login.lockout").await;
    assert_eq!(lockouts.len(), 1, "precondition: the lockout is recorded");
    let text = serde_json::to_string(&lockouts).unwrap();
    assert!(
        !text.contains("Tr0ub4dor"),
        "what was typed as a username (a password, here) is in the trail: {text}"
    );
}

/// Finding 15 (anonymous trail flooding through document clients): `client_auth.burst` is
/// budgeted per *client* (one entry per client per 10 minutes), and with Client ID Metadata
/// Documents accepted (`open`) every https URL an attacker publishes is an existing client.
/// Eleven requests with a wrong secret per URL earn an entry each, from one address, with no
/// budget per caller: with a wildcard domain (the document fetch budget is per host) that is
/// roughly one entry per eleven requests, bounded only by the per-address request rate (1,000
/// a second), i.e. millions of entries a day. Here five URLs give five entries; rejected
/// authentications from one address must add at most one entry per burst window, whatever
/// client ids they name.
#[tokio::test]
async fn one_address_naming_many_document_clients_makes_at_most_one_burst_entry() {
    use crate::documents::{Doc, DocumentServer};
    let documents = DocumentServer::start().await;
    let dirs = tempfile::tempdir().unwrap();
    let mut config = test_config(&dirs);
    documents.trusted_by(&mut config);
    config.client_documents.mode = tessera::config::ClientDocumentsMode::Open;
    let app = spawn_app_with(config, dirs).await;
    let (_, bearer) = app.admin_bearer().await;
    for n in 0..5 {
        let path = format!("/agents/{n}.json");
        let client_id = documents.url(&path);
        documents.serve(
            &path,
            Doc::json(&json!({
                "client_id": client_id,
                "client_name": format!("Flood {n}"),
                "redirect_uris": ["http://127.0.0.1/callback"],
                "grant_types": ["authorization_code"],
                "response_types": ["code"],
                "token_endpoint_auth_method": "none",
            }))
            .header("Cache-Control", "max-age=300"),
        );
        for _ in 0..12 {
            let response = app
                .http
                .post(app.url("/o/token/"))
                .form(&[
                    ("grant_type", "authorization_code"),
                    ("code", "x"),
                    ("client_id", client_id.as_str()),
                    ("client_secret", "guess"),
                ])
                .send()
                .await
                .unwrap();
            assert_eq!(response.status(), 401, "{n}");
        }
    }
    let bursts = trail(&app, &bearer, "action=client_auth.burst").await;
    assert!(
        bursts.len() <= 1,
        "one anonymous address made {} burst entries by naming {} document URLs",
        bursts.len(),
        5
    );
}

/// Finding 16 (an operator changes the keyring without a trace): `tessera keys generate|
/// rotate|promote|retire` prints the key *before* recording the change, and returns on a
/// failed print: run into a pipe whose reader has gone (`tessera keys generate | true`, a closed
/// SSH session), the key is made, the command fails, and no entry is ever written. The change
/// must be recorded whatever happens to the output (record first, then print).
#[tokio::test]
async fn a_key_change_is_recorded_even_when_its_output_cannot_be_written() {
    let app = spawn_app().await;
    let dir = app.stop().await;
    let env = backend_env(dir.path());
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let before = run_tessera(dir.path(), &["keys", "list"], &env, "");
    let before = String::from_utf8_lossy(&before.stdout).lines().count();

    // Its output is a pipe whose reader has gone (`tessera keys generate | true`).
    let mut child = tessera_command(dir.path(), &["keys", "generate", "--alg", "EdDSA"], &env)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stdout.take());
    let closed = child.wait_with_output().unwrap();

    let after = run_tessera(dir.path(), &["keys", "list"], &env, "");
    let after = String::from_utf8_lossy(&after.stdout).lines().count();
    assert_eq!(after, before + 1, "precondition: the key was made: {closed:?}");
    let listed = run_tessera(
        dir.path(),
        &["audit", "list", "--json", "--action", "key.generate"],
        &env,
        "",
    );
    assert!(listed.status.success(), "{listed:?}");
    assert_eq!(
        String::from_utf8_lossy(&listed.stdout).lines().count(),
        1,
        "a key was generated and the trail does not say so ({})",
        String::from_utf8_lossy(&closed.stderr)
    );
}

/// Finding 17 (one pending line blinds every `since` query, for good): the data folder's
/// `audit_page` walks ids newest first and stops at the first entry older than `since`,
/// trusting that ids sort like times. The import keeps a pending line's `id` and `at_ms` as
/// they are, so a line whose id sorts after every real one (`ffff...`) but whose time is old
/// sits "newest" forever: every `?since=` query (and `tessera audit list --since 7d`) stops
/// at it and answers nothing, and the purge (by id) never removes it. An imported entry must
/// get an id made from its time (or be refused), so `since` keeps finding recent entries.
#[tokio::test]
async fn a_pending_entry_cannot_hide_the_trail_from_since_queries() {
    if on_postgres() {
        return;
    }
    let app = spawn_app().await;
    let (_, bearer) = app.admin_bearer().await;
    let settings = json!({"name": "Recent change", "client_type": "confidential",
        "grant_types": ["client_credentials"], "scope": "read"});
    assert_eq!(
        admin_call(&app, &bearer, "POST", "/api/v1/clients", Some(settings))
            .await
            .0,
        201
    );
    let hour_ago = now_ms() / 1000 - 3600;
    assert!(!trail(&app, &bearer, &format!("since={hour_ago}")).await.is_empty());

    let mut blind = key_entry("", 1_000, "kid-old");
    blind["id"] = json!("ffffffffffffffffzzzz");
    let mut line = serde_json::to_vec(&blind).unwrap();
    line.push(b'\n');
    write_pending(&app, &line);
    assert!(pending_taken(&app).await, "the server takes the pending file");

    let recent = trail(&app, &bearer, &format!("since={hour_ago}")).await;
    assert!(
        recent.iter().any(|e| e["target_name"] == "Recent change"),
        "after one pending line, `since` finds nothing of the last hour: {recent:?}"
    );
}
