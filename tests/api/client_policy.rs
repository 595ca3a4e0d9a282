//! The DPoP, PAR and token exchange client settings (`dpop_bound_access_tokens`,
//! `require_pushed_authorization_requests`, `require_dpop_nonce`, the token exchange audiences,
//! subject audiences and actor requirement) through every way a client is made: the CLI, the admin API, dynamic
//! registration and the applications pages; and what each refuses.

use serde_json::{json, Value};

use crate::helpers::*;

const TOKEN_EXCHANGE: &str = "urn:ietf:params:oauth:grant-type:token-exchange";

#[tokio::test]
async fn the_admin_api_sets_shows_and_checks_the_policy() {
    let app = spawn_app().await;
    let (_, bearer) = app.admin_bearer().await;
    let create = |body: Value| {
        let (app, bearer) = (&app, &bearer);
        async move {
            let response = app
                .http
                .post(app.url("/api/v1/clients"))
                .bearer_auth(bearer)
                .json(&body)
                .send()
                .await
                .unwrap();
            (response.status().as_u16(), response.json::<Value>().await.unwrap())
        }
    };
    let (status, created) = create(json!({
        "name": "Gateway", "client_type": "confidential", "scope": "read",
        "grant_types": ["client_credentials", TOKEN_EXCHANGE],
        "dpop_bound_access_tokens": true, "require_pushed_authorization_requests": true,
        "require_dpop_nonce": true,
        "token_exchange_audiences": ["https://orders.example"],
        "token_exchange_subject_audiences": ["https://gateway.example"],
        "token_exchange_require_actor": true,
    }))
    .await;
    assert_eq!(status, 201, "{created}");
    let client = &created["client"];
    assert_eq!(client["dpop_bound_access_tokens"], true);
    assert_eq!(client["require_pushed_authorization_requests"], true);
    assert_eq!(client["require_dpop_nonce"], true);
    assert_eq!(client["token_exchange_audiences"], json!(["https://orders.example"]));
    assert_eq!(
        client["token_exchange_subject_audiences"],
        json!(["https://gateway.example"])
    );
    assert_eq!(client["token_exchange_require_actor"], true);
    let id = client["client_id"].as_str().unwrap();
    let record = app.store.get_client(id).await.unwrap().unwrap();
    assert!(record.policy.dpop_bound_access_tokens && record.policy.require_pushed_authorization_requests);
    assert!(record.policy.require_dpop_nonce);
    assert_eq!(record.policy.token_exchange.audiences, ["https://orders.example"]);

    // Defaults: all off.
    let (status, plain) = create(json!({"name": "Plain", "client_type": "confidential",
        "grant_types": ["client_credentials"], "scope": "read"}))
    .await;
    assert_eq!(status, 201);
    assert_eq!(plain["client"]["dpop_bound_access_tokens"], false);
    assert_eq!(plain["client"]["require_dpop_nonce"], false);
    assert_eq!(plain["client"]["token_exchange_audiences"], json!([]));

    for (why, body) in [
        (
            "audiences without the grant",
            json!({"name": "x", "client_type": "confidential", "grant_types": ["client_credentials"],
                "scope": "read", "token_exchange_audiences": ["https://orders.example"]}),
        ),
        (
            "the grant without audiences",
            json!({"name": "x", "client_type": "confidential", "grant_types": [TOKEN_EXCHANGE], "scope": "read"}),
        ),
        (
            "a public exchanger",
            json!({"name": "x", "client_type": "public", "grant_types": [TOKEN_EXCHANGE], "scope": "read",
                "token_exchange_audiences": ["https://orders.example"]}),
        ),
        (
            "an audience with a space",
            json!({"name": "x", "client_type": "confidential", "grant_types": [TOKEN_EXCHANGE], "scope": "read",
                "token_exchange_audiences": ["https://orders.example other"]}),
        ),
        (
            "too many audiences",
            json!({"name": "x", "client_type": "confidential", "grant_types": [TOKEN_EXCHANGE], "scope": "read",
                "token_exchange_audiences": (0..21).map(|i| format!("https://a{i}.example")).collect::<Vec<_>>()}),
        ),
    ] {
        let (status, body) = create(body).await;
        assert_eq!(status, 400, "{why}: {body}");
    }
}

#[tokio::test]
async fn the_cli_sets_the_policy() {
    let app = spawn_app().await;
    let dirs = app.stop().await;
    let data = dirs.path().join("data");
    let keys = dirs.path().join("keys");
    let create = |extra: &[&str]| {
        let mut args = vec![
            "app",
            "create",
            "--name",
            "CLI gateway",
            "--client-type",
            "confidential",
            "--scope",
            "read",
            "--json",
            "--data-dir",
            data.to_str().unwrap(),
            "--keys-dir",
            keys.to_str().unwrap(),
        ];
        args.extend_from_slice(extra);
        run_tessera(dirs.path(), &args, &[], "")
    };
    let output = create(&[
        "--grant-type",
        "client-credentials",
        "--grant-type",
        "token-exchange",
        "--token-exchange-audience",
        "https://orders.example",
        "--token-exchange-audience",
        "https://billing.example",
        "--token-exchange-subject-audience",
        "https://gateway.example",
        "--token-exchange-require-actor",
        "--dpop-bound-access-tokens",
        "--require-pushed-authorization-requests",
        "--require-dpop-nonce",
    ]);
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let created: Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(created["grant_types"], json!(["client-credentials", "token-exchange"]));
    assert_eq!(
        created["token_exchange_audiences"],
        json!(["https://orders.example", "https://billing.example"])
    );
    assert_eq!(
        created["token_exchange_subject_audiences"],
        json!(["https://gateway.example"])
    );
    assert_eq!(created["token_exchange_require_actor"], true);
    assert_eq!(created["dpop_bound_access_tokens"], true);
    assert_eq!(created["require_pushed_authorization_requests"], true);
    assert_eq!(created["require_dpop_nonce"], true);

    // The human-readable listing says so too.
    let id = created["client_id"].as_str().unwrap();
    let output = run_tessera(
        dirs.path(),
        &[
            "app",
            "show",
            id,
            "--data-dir",
            data.to_str().unwrap(),
            "--keys-dir",
            keys.to_str().unwrap(),
        ],
        &[],
        "",
    );
    let shown = String::from_utf8_lossy(&output.stdout);
    assert!(
        shown.contains("DPoP:") && shown.contains("Pushed authorization requests: required"),
        "{shown}"
    );
    assert!(shown.contains("DPoP nonce:    required"), "{shown}");
    assert!(
        shown.contains("exchanges for: https://orders.example https://billing.example"),
        "{shown}"
    );

    let output = create(&["--grant-type", "token-exchange"]);
    assert!(!output.status.success());
    assert!(
        String::from_utf8_lossy(&output.stderr).contains("at least one audience"),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
}

#[tokio::test]
async fn dynamic_registration_takes_dpop_and_par_and_token_exchange_only_by_policy() {
    let dirs = tempfile::tempdir().unwrap();
    let mut config = test_config(&dirs);
    config.registration.mode = tessera::config::RegistrationMode::Open;
    config.registration.resources = vec!["https://mcp.example".into(), "https://tools.example".into()];
    let app = spawn_app_with(config, dirs).await;
    let register = |app: &TestApp, body: Value| {
        let request = app.http.post(app.url("/o/register/")).json(&body);
        async move {
            let response = request.send().await.unwrap();
            (response.status().as_u16(), response.json::<Value>().await.unwrap())
        }
    };
    let (status, registered) = register(
        &app,
        json!({"client_name": "Strict", "redirect_uris": ["https://app.example/cb"],
            "dpop_bound_access_tokens": true, "require_pushed_authorization_requests": true,
            "require_dpop_nonce": true}),
    )
    .await;
    assert_eq!(status, 201, "{registered}");
    assert_eq!(registered["dpop_bound_access_tokens"], true);
    assert_eq!(registered["require_pushed_authorization_requests"], true);
    assert_eq!(registered["require_dpop_nonce"], true);
    assert!(registered.get("token_exchange_audiences").is_none());
    let read = app
        .http
        .get(registered["registration_client_uri"].as_str().unwrap())
        .bearer_auth(registered["registration_access_token"].as_str().unwrap())
        .send()
        .await
        .unwrap()
        .json::<Value>()
        .await
        .unwrap();
    assert_eq!(read["require_pushed_authorization_requests"], true, "{read}");

    let exchanger = json!({"client_name": "Agent", "grant_types": [TOKEN_EXCHANGE],
        "token_exchange_audiences": ["https://tools.example"],
        "token_exchange_subject_audiences": ["https://mcp.example"]});
    let (status, body) = register(&app, exchanger.clone()).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (400, Some("invalid_client_metadata")),
        "{body}"
    );
    let (status, body) = register(&app, json!({"client_name": "Bad", "dpop_bound_access_tokens": "yes"})).await;
    assert_eq!(status, 400, "{body}");

    // With the policy on: only between the registration resources, and never from tokens
    // for the server's default audience.
    let app = {
        let dirs = tempfile::tempdir().unwrap();
        let mut config = test_config(&dirs);
        config.registration.mode = tessera::config::RegistrationMode::Open;
        config.registration.resources = vec!["https://mcp.example".into(), "https://tools.example".into()];
        config.registration.allow_token_exchange = true;
        spawn_app_with(config, dirs).await
    };
    let (status, registered) = register(&app, exchanger).await;
    assert_eq!(status, 201, "{registered}");
    assert_eq!(registered["grant_types"], json!([TOKEN_EXCHANGE]));
    assert_eq!(registered["token_exchange_audiences"], json!(["https://tools.example"]));
    assert_eq!(registered["token_exchange_require_actor"], false);
    for (why, body) in [
        (
            "an audience outside the registration resources",
            json!({"grant_types": [TOKEN_EXCHANGE], "token_exchange_audiences": ["https://bank.example"],
                "token_exchange_subject_audiences": ["https://mcp.example"]}),
        ),
        (
            "no subject audiences (the default audience would be every user's tokens)",
            json!({"grant_types": [TOKEN_EXCHANGE], "token_exchange_audiences": ["https://tools.example"]}),
        ),
        (
            "a public exchanger",
            json!({"grant_types": [TOKEN_EXCHANGE], "token_endpoint_auth_method": "none",
                "token_exchange_audiences": ["https://tools.example"],
                "token_exchange_subject_audiences": ["https://mcp.example"]}),
        ),
    ] {
        let (status, body) = register(&app, body).await;
        assert_eq!(
            (status, body["error"].as_str()),
            (400, Some("invalid_client_metadata")),
            "{why}: {body}"
        );
    }
}

#[tokio::test]
async fn the_applications_pages_set_dpop_and_par_and_offer_token_exchange_by_policy() {
    let app = spawn_app().await;
    assert_eq!(app.log_in("/o/login/", USERNAME, PASSWORD).await.status(), 303);
    let form = app.get_text("/o/applications/register/").await;
    assert!(form.contains("name=\"dpop_bound_access_tokens\""), "{form}");
    assert!(form.contains("name=\"require_pushed_authorization_requests\""));
    assert!(form.contains("name=\"require_dpop_nonce\""));
    assert!(
        !form.contains("token_exchange"),
        "not offered unless the policy allows it"
    );
    let csrf = hidden_input(&form, "csrf_token").unwrap();
    let registered = app
        .http
        .post(app.url("/o/applications/register/"))
        .form(&[
            ("csrf_token", csrf.as_str()),
            ("name", "Careful app"),
            ("client_type", "public"),
            ("grant_authorization_code", "on"),
            ("redirect_uris", "https://app.example/cb"),
            ("scope_read", "on"),
            ("dpop_bound_access_tokens", "on"),
            ("require_pushed_authorization_requests", "on"),
            ("require_dpop_nonce", "on"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(registered.status(), 200);
    let html = registered.text().await.unwrap();
    assert!(html.contains("required: every token is bound"), "{html}");
    let client = app
        .store
        .clients_owned_by(&app.store.get_user_by_name(USERNAME).await.unwrap().unwrap().user_id)
        .await
        .unwrap()
        .pop()
        .unwrap();
    assert!(client.policy.dpop_bound_access_tokens && client.policy.require_pushed_authorization_requests);
    assert!(client.policy.require_dpop_nonce);
    // The edit form keeps them checked.
    let edit = app
        .get_text(&format!("/o/applications/{}/edit/", client.client_id))
        .await;
    assert!(edit.contains("name=\"dpop_bound_access_tokens\" checked"), "{edit}");

    // A forged token exchange grant is refused when the policy does not allow it.
    let csrf = hidden_input(&app.get_text("/o/applications/register/").await, "csrf_token").unwrap();
    let forged = app
        .http
        .post(app.url("/o/applications/register/"))
        .form(&[
            ("csrf_token", csrf.as_str()),
            ("name", "Sneaky"),
            ("client_type", "confidential"),
            ("grant_token_exchange", "on"),
            ("token_exchange_audiences", "https://bank.example"),
            ("scope_read", "on"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(forged.status(), 400);
    assert!(forged.text().await.unwrap().contains("token exchange"));
}

/// `require_mfa` makes a client's users add a second factor on the way, so an anonymous
/// registrant may set it only where the operator allows it (`registration_allow_require_mfa`);
/// an RFC 7592 update cannot slip it in either.
#[tokio::test]
async fn dynamic_registration_requires_two_factors_only_where_the_operator_allows_it() {
    let spawn = |allow: bool| async move {
        let dirs = tempfile::tempdir().unwrap();
        let mut config = test_config(&dirs);
        config.registration.mode = tessera::config::RegistrationMode::Open;
        config.registration.allow_require_mfa = allow;
        spawn_app_with(config, dirs).await
    };
    let body = json!({"client_name": "Strict", "redirect_uris": ["https://app.example/cb"], "require_mfa": true});
    let app = spawn(false).await;
    let response = app.http.post(app.url("/o/register/")).json(&body).send().await.unwrap();
    assert_eq!(response.status(), 400);
    let refused: Value = response.json().await.unwrap();
    assert_eq!(refused["error"], "invalid_client_metadata");
    assert!(
        refused["error_description"]
            .as_str()
            .unwrap()
            .contains("registration_allow_require_mfa"),
        "{refused}"
    );
    // Registered without it, then updated to have it: refused the same way.
    let plain = json!({"client_name": "Plain", "redirect_uris": ["https://app.example/cb"]});
    let registered: Value = app
        .http
        .post(app.url("/o/register/"))
        .json(&plain)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let mut update = plain.clone();
    update["client_id"] = registered["client_id"].clone();
    update["require_mfa"] = json!(true);
    let response = app
        .http
        .put(registered["registration_client_uri"].as_str().unwrap())
        .bearer_auth(registered["registration_access_token"].as_str().unwrap())
        .json(&update)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 400);
    let id = registered["client_id"].as_str().unwrap();
    assert!(!app.store.get_client(id).await.unwrap().unwrap().policy.require_mfa);

    // The operator turns it on for that client: the registrant's updates may repeat it
    // (a read-modify-write) and cannot turn it off.
    let mut record = app.store.get_client(id).await.unwrap().unwrap();
    record.policy.require_mfa = true;
    app.store.update_client(&record).await.unwrap();
    for (why, update) in [
        ("echoed", update.clone()),
        ("left out", {
            let mut left_out = update.clone();
            left_out.as_object_mut().unwrap().remove("require_mfa");
            left_out
        }),
    ] {
        let response = app
            .http
            .put(registered["registration_client_uri"].as_str().unwrap())
            .bearer_auth(registered["registration_access_token"].as_str().unwrap())
            .json(&update)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200, "{why}");
        assert!(
            app.store.get_client(id).await.unwrap().unwrap().policy.require_mfa,
            "{why}"
        );
    }

    let app = spawn(true).await;
    let response = app.http.post(app.url("/o/register/")).json(&body).send().await.unwrap();
    assert_eq!(response.status(), 201);
    let registered: Value = response.json().await.unwrap();
    assert_eq!(registered["require_mfa"], true);
    let id = registered["client_id"].as_str().unwrap();
    assert!(app.store.get_client(id).await.unwrap().unwrap().policy.require_mfa);
}
