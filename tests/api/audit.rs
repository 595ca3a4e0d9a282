//! The audit trail: every change made through the admin API, the pages, dynamic registration
//! and the CLI is recorded once, with the right actor and target, and no secret; and
//! `GET /api/v1/audit` and `tessera audit list` read it back.

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

async fn csrf_of(app: &TestApp, path: &str) -> String {
    hidden_input(&app.get_text(path).await, "csrf_token").expect("the page has a CSRF token")
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
        None => {
            let mut files = vec![data_dir];
            while let Some(path) = files.pop() {
                if path.is_dir() {
                    files.extend(std::fs::read_dir(&path).unwrap().map(|e| e.unwrap().path()));
                } else {
                    contents.push(std::fs::read(&path).unwrap());
                }
            }
        }
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
