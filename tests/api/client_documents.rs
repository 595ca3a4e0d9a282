//! Client ID Metadata Documents: clients identified by the https URL of their metadata,
//! fetched safely (tests/api/documents.rs serves them over https on loopback), held to the
//! registration policy, shown on the consent page by host, listed and revocable like any
//! other app; every way a document can be wrong is an error page, never a redirect.

use jsonwebtoken::Algorithm;
use serde_json::{json, Value};
use std::time::Duration;

use crate::documents::{Doc, DocumentServer};
use crate::helpers::*;
use crate::private_key_jwt::TestKey;
use tessera::config::ClientDocumentsMode;

const CALLBACK: &str = "http://127.0.0.1/callback";

/// A document server, and a server accepting documents in `mode` that trusts it; `adjust`
/// changes the configuration further.
async fn setup(mode: ClientDocumentsMode, adjust: impl FnOnce(&mut tessera::Config)) -> (DocumentServer, TestApp) {
    let documents = DocumentServer::start().await;
    let dirs = tempfile::tempdir().unwrap();
    let mut config = test_config(&dirs);
    documents.trusted_by(&mut config);
    config.client_documents.mode = mode;
    adjust(&mut config);
    (documents, spawn_app_with(config, dirs).await)
}

/// A valid public client's document for `client_id`.
fn document(client_id: &str) -> Value {
    json!({
        "client_id": client_id,
        "client_name": "Doc Agent",
        "redirect_uris": [CALLBACK],
        "grant_types": ["authorization_code", "refresh_token"],
        "response_types": ["code"],
        "token_endpoint_auth_method": "none",
    })
}

fn authorize_params(client_id: &str, pkce: &Pkce, scope: &str) -> Vec<(String, String)> {
    [
        ("response_type", "code"),
        ("client_id", client_id),
        ("redirect_uri", "http://127.0.0.1:53177/callback"),
        ("scope", scope),
        ("state", "s1"),
        ("code_challenge", &pkce.challenge),
        ("code_challenge_method", "S256"),
    ]
    .iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect()
}

async fn logged_in(app: &TestApp) {
    let login = app.log_in("/o/login/?next=/", USERNAME, PASSWORD).await;
    assert_eq!(login.status(), 303);
}

async fn exchange(app: &TestApp, form: &[(&str, &str)]) -> (u16, Value) {
    let response = app.http.post(app.url("/o/token/")).form(form).send().await.unwrap();
    (response.status().as_u16(), response.json().await.unwrap())
}

#[tokio::test]
async fn a_client_named_by_its_document_logs_a_user_in_and_can_be_revoked() {
    let (documents, app) = setup(ClientDocumentsMode::Open, |_| {}).await;
    let client_id = documents.url("/agents/client.json");
    documents.serve(
        "/agents/client.json",
        Doc::json(&document(&client_id)).header("Cache-Control", "max-age=300"),
    );
    let metadata = app.get_json("/.well-known/oauth-authorization-server").await;
    assert_eq!(metadata["client_id_metadata_document_supported"], true);
    assert!(metadata["token_endpoint_auth_methods_supported"]
        .as_array()
        .unwrap()
        .contains(&json!("none")));

    logged_in(&app).await;
    let pkce = Pkce::new();
    let params = authorize_params(&client_id, &pkce, "read");
    let page = app.authorize(&params).await;
    assert_eq!(page.status(), 200);
    let html = page.text().await.unwrap();
    assert!(html.contains("Doc Agent"), "{html}");
    assert!(
        html.contains(r#"<strong id="client-host">127.0.0.1</strong>"#),
        "the host is shown: {html}"
    );
    assert!(
        html.contains(r#"id="loopback-warning""#),
        "every redirect URI is on localhost: {html}"
    );
    let redirect = app.authorize_and_allow(&params).await;
    let code = param(&redirect, "code").expect("a code");
    let (status, tokens) = exchange(
        &app,
        &[
            ("grant_type", "authorization_code"),
            ("code", &code),
            ("redirect_uri", "http://127.0.0.1:53177/callback"),
            ("code_verifier", &pkce.verifier),
            ("client_id", &client_id),
        ],
    )
    .await;
    assert_eq!(status, 200, "{tokens}");
    let claims = jwt_parts(tokens["access_token"].as_str().unwrap()).1;
    assert_eq!(claims["client_id"], client_id.as_str());
    assert!(app
        .verify_with_jwks(tokens["access_token"].as_str().unwrap())
        .await
        .is_some());
    assert_eq!(
        app.introspect(tokens["access_token"].as_str().unwrap()).await["active"],
        true
    );
    assert_eq!(documents.hits("/agents/client.json"), 1, "the document is cached");

    // Listed among the user's apps, by name and host, and revocable.
    let listing = app.get_text("/o/authorized_tokens/").await;
    assert!(
        listing.contains("Doc Agent") && listing.contains("from 127.0.0.1"),
        "{listing}"
    );
    let csrf = hidden_input(&listing, "csrf_token").unwrap();
    let revoked = app
        .http
        .post(app.url("/o/authorized_tokens/"))
        .form(&[("csrf_token", csrf.as_str()), ("client_id", client_id.as_str())])
        .send()
        .await
        .unwrap();
    assert!(revoked.status().is_redirection() || revoked.status() == 200);
    let (status, body) = exchange(
        &app,
        &[
            ("grant_type", "refresh_token"),
            ("refresh_token", tokens["refresh_token"].as_str().unwrap()),
            ("client_id", &client_id),
        ],
    )
    .await;
    assert_eq!(
        (status, body["error"].as_str()),
        (400, Some("invalid_grant")),
        "revoked"
    );
}

#[tokio::test]
async fn every_unusable_document_is_an_error_page_naming_why_and_never_a_redirect() {
    let (documents, app) = setup(ClientDocumentsMode::Open, |config| {
        config.registration.scopes = Some(vec!["read".into()]);
        // Errors are never cached: each case below fetches twice, beyond one host's budget.
        config.documents.fetches_per_host = tessera::rate_limit::Rate::OFF;
    })
    .await;
    logged_in(&app).await;
    let url = |path: &str| documents.url(path);
    let with = |path: &str, change: Value| {
        let mut doc = document(&url(path));
        for (k, v) in change.as_object().unwrap() {
            if v.is_null() {
                doc.as_object_mut().unwrap().remove(k);
            } else {
                doc[k] = v.clone();
            }
        }
        Doc::json(&doc)
    };
    let mut moved = Doc::json(&json!({}));
    moved.status = 302;
    moved = moved.header("Location", &url("/elsewhere.json"));
    let cases: Vec<(&str, Doc, &str)> = vec![
        (
            "/other-id.json",
            with("/other-id.json", json!({"client_id": url("/something-else.json")})),
            "client_id is not exactly",
        ),
        (
            "/secret.json",
            with("/secret.json", json!({"client_secret": "s3cret"})),
            "cannot hold a secret",
        ),
        (
            "/basic.json",
            with(
                "/basic.json",
                json!({"token_endpoint_auth_method": "client_secret_basic"}),
            ),
            "shared secret",
        ),
        (
            "/no-redirects.json",
            with("/no-redirects.json", json!({"redirect_uris": null})),
            "no redirect_uris",
        ),
        (
            "/bad-redirect.json",
            with(
                "/bad-redirect.json",
                json!({"redirect_uris": ["http://evil.example/cb"]}),
            ),
            "redirect URI",
        ),
        (
            "/scope.json",
            with("/scope.json", json!({"scope": "read write"})),
            "may not be registered",
        ),
        (
            "/keyless.json",
            with(
                "/keyless.json",
                json!({"token_endpoint_auth_method": "private_key_jwt"}),
            ),
            "jwks",
        ),
        (
            "/types.json",
            with("/types.json", json!({"redirect_uris": "http://127.0.0.1/callback"})),
            "array of strings",
        ),
        (
            "/html.json",
            with("/html.json", json!({})).header("Content-Type", "text/html"),
            "not served as JSON",
        ),
        (
            "/huge.json",
            with("/huge.json", json!({"logo_uri": "x".repeat(6000)})),
            "larger than 5120 bytes",
        ),
        (
            "/missing.json",
            Doc {
                status: 404,
                ..Doc::json(&json!({}))
            },
            "HTTP 404",
        ),
        ("/moved.json", moved, "HTTP 302"),
        ("/list.json", Doc::json(&json!([1, 2])), "not a JSON object"),
    ];
    for (path, doc, reason) in cases {
        documents.serve(path, doc);
        let pkce = Pkce::new();
        let page = app.authorize(&authorize_params(&url(path), &pkce, "read")).await;
        assert_eq!(page.status(), 400, "{path}");
        assert!(page.headers().get("location").is_none(), "{path}: never a redirect");
        let html = page.text().await.unwrap();
        assert!(html.contains(reason), "{path}: expected {reason:?} in {html}");
        // At the token endpoint the same client is invalid_client.
        let (status, body) = exchange(
            &app,
            &[
                ("grant_type", "authorization_code"),
                ("code", "x"),
                ("code_verifier", &pkce.verifier),
                ("client_id", &url(path)),
            ],
        )
        .await;
        assert_eq!(
            (status, body["error"].as_str()),
            (401, Some("invalid_client")),
            "{path}: {body}"
        );
    }
    assert_eq!(documents.hits("/elsewhere.json"), 0, "a redirect is never followed");

    // A redirect URI the document does not list is refused on the page too.
    documents.serve("/good.json", Doc::json(&document(&url("/good.json"))));
    let pkce = Pkce::new();
    let mut params = authorize_params(&url("/good.json"), &pkce, "read");
    params[2].1 = "https://evil.example/cb".into();
    let page = app.authorize(&params).await;
    assert_eq!(page.status(), 400);
    assert!(page.headers().get("location").is_none());
    // A scope beyond the registration policy is refused by the usual rules (shown, since the
    // user never approved this client: its redirect URI is not trusted yet).
    let page = app
        .authorize(&authorize_params(&url("/good.json"), &pkce, "write"))
        .await;
    assert_eq!(page.status(), 400);
    assert!(page.text().await.unwrap().contains("invalid_scope"));
}

#[tokio::test]
async fn documents_are_off_by_default_and_the_allowlist_names_hosts() {
    let documents = DocumentServer::start().await;
    let dirs = tempfile::tempdir().unwrap();
    let mut config = test_config(&dirs);
    documents.trusted_by(&mut config);
    let app = spawn_app_with(config, dirs).await;
    let client_id = documents.url("/client.json");
    documents.serve("/client.json", Doc::json(&document(&client_id)));
    let metadata = app.get_json("/.well-known/oauth-authorization-server").await;
    assert!(metadata.get("client_id_metadata_document_supported").is_none());
    let page = app.authorize(&authorize_params(&client_id, &Pkce::new(), "read")).await;
    assert_eq!(page.status(), 400);
    assert!(page.text().await.unwrap().contains("unknown client"));
    assert_eq!(
        documents.hits("/client.json"),
        0,
        "nothing is fetched when documents are off"
    );
    drop(app);

    let (documents, app) = setup(ClientDocumentsMode::Allowlist, |config| {
        config.client_documents.hosts = vec!["agents.example".into()];
    })
    .await;
    let client_id = documents.url("/client.json");
    documents.serve("/client.json", Doc::json(&document(&client_id)));
    let page = app.authorize(&authorize_params(&client_id, &Pkce::new(), "read")).await;
    assert!(
        page.text().await.unwrap().contains("unknown client"),
        "127.0.0.1 is not on the list"
    );
    assert_eq!(documents.hits("/client.json"), 0);
    drop(app);

    // The third review (finding 12): an entry names a host and port; another port on an
    // allowed host is another server.
    let documents = DocumentServer::start().await;
    let client_id = documents.url("/client.json");
    documents.serve("/client.json", Doc::json(&document(&client_id)));
    let authority = client_id
        .trim_start_matches("https://")
        .split('/')
        .next()
        .unwrap()
        .to_string();
    for (entry, allowed) in [("127.0.0.1".to_string(), false), (authority, true)] {
        let dirs = tempfile::tempdir().unwrap();
        let mut config = test_config(&dirs);
        documents.trusted_by(&mut config);
        config.client_documents.mode = ClientDocumentsMode::Allowlist;
        config.client_documents.hosts = vec![entry.clone()];
        let app = spawn_app_with(config, dirs).await;
        let page = app.authorize(&authorize_params(&client_id, &Pkce::new(), "read")).await;
        if allowed {
            assert_eq!(page.status(), 302, "{entry}: to the login page");
            assert!(location(&page).starts_with("/o/login/"));
        } else {
            assert!(page.text().await.unwrap().contains("unknown client"), "{entry}");
        }
    }
}

#[tokio::test]
async fn a_document_on_a_private_address_is_never_fetched_without_the_development_switch() {
    let (documents, app) = setup(ClientDocumentsMode::Open, |config| {
        config.outbound.allow_private_addresses = false;
    })
    .await;
    for host in ["127.0.0.1", "localhost"] {
        let client_id = documents.url("/client.json").replace("127.0.0.1", host);
        documents.serve("/client.json", Doc::json(&document(&client_id)));
        let page = app.authorize(&authorize_params(&client_id, &Pkce::new(), "read")).await;
        assert_eq!(page.status(), 400);
        let html = page.text().await.unwrap();
        assert!(html.contains("public address"), "{host}: {html}");
    }
    assert_eq!(documents.hits("/client.json"), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn documents_are_fetched_once_for_concurrent_requests_served_stale_and_limited_per_host() {
    let (documents, app) = setup(ClientDocumentsMode::Open, |config| {
        config.documents.min_ttl = Duration::from_secs(1);
        config.documents.stale_ttl = Duration::from_secs(30);
        config.documents.fetches_per_host = tessera::rate_limit::Rate {
            per_second: 0.01,
            burst: 8.0,
        };
    })
    .await;
    let client_id = documents.url("/slow.json");
    let mut slow = Doc::json(&document(&client_id));
    slow.delay = Duration::from_millis(500);
    documents.serve("/slow.json", slow);
    let mut set = tokio::task::JoinSet::new();
    for _ in 0..20 {
        let (http, url, client_id) = (app.http.clone(), app.url("/o/authorize/"), client_id.clone());
        set.spawn(async move {
            let params = authorize_params(&client_id, &Pkce::new(), "read");
            http.get(url).query(&params).send().await.unwrap().status().as_u16()
        });
    }
    let statuses = set.join_all().await;
    assert!(statuses.iter().all(|s| *s == 302), "{statuses:?}");
    assert_eq!(documents.hits("/slow.json"), 1, "one fetch for 20 concurrent requests");

    // Stale while refetching fails: the document's server breaks after it expired.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    documents.serve(
        "/slow.json",
        Doc {
            status: 500,
            ..Doc::json(&json!({}))
        },
    );
    let page = app.authorize(&authorize_params(&client_id, &Pkce::new(), "read")).await;
    assert_eq!(page.status(), 302, "the stale copy serves");
    assert_eq!(documents.hits("/slow.json"), 2, "a refetch was tried");

    // One host's budget: distinct URLs cannot make the server fetch in a loop.
    let mut refused = 0;
    for i in 0..20 {
        let id = documents.url(&format!("/loop/{i}.json"));
        documents.serve(&format!("/loop/{i}.json"), Doc::json(&document(&id)));
        let page = app.authorize(&authorize_params(&id, &Pkce::new(), "read")).await;
        // Our budget, not the client's fault: 429 with Retry-After (the third review).
        if page.status() == 429
            && page.headers().contains_key("retry-after")
            && page
                .text()
                .await
                .unwrap()
                .contains("too many documents fetched from 127.0.0.1")
        {
            refused += 1;
        }
    }
    assert!(refused >= 12, "{refused} of 20 refused");
    let fetched: usize = (0..20).map(|i| documents.hits(&format!("/loop/{i}.json"))).sum();
    assert!(fetched <= 8, "{fetched} fetches");
}

#[tokio::test]
async fn a_document_client_may_authenticate_with_its_keys() {
    let (documents, app) = setup(ClientDocumentsMode::Open, |_| {}).await;
    let key = TestKey::new(Algorithm::ES256);
    let client_id = documents.url("/keyed.json");
    let mut doc = document(&client_id);
    doc["token_endpoint_auth_method"] = "private_key_jwt".into();
    doc["jwks"] = key.jwks();
    documents.serve("/keyed.json", Doc::json(&doc));
    logged_in(&app).await;
    let pkce = Pkce::new();
    let redirect = app
        .authorize_and_allow(&authorize_params(&client_id, &pkce, "read"))
        .await;
    let code = param(&redirect, "code").unwrap();
    let form = |assertion: Option<&str>| {
        let mut form = vec![
            ("grant_type", "authorization_code".to_string()),
            ("code", code.clone()),
            ("redirect_uri", "http://127.0.0.1:53177/callback".into()),
            ("code_verifier", pkce.verifier.clone()),
        ];
        match assertion {
            Some(a) => {
                form.push((
                    "client_assertion_type",
                    "urn:ietf:params:oauth:client-assertion-type:jwt-bearer".into(),
                ));
                form.push(("client_assertion", a.into()));
            }
            None => form.push(("client_id", client_id.clone())),
        }
        form
    };
    let without: Vec<(&str, String)> = form(None);
    let without: Vec<(&str, &str)> = without.iter().map(|(k, v)| (*k, v.as_str())).collect();
    assert_eq!(
        exchange(&app, &without).await.0,
        401,
        "a keyed client must authenticate"
    );
    let with = form(Some(&key.assertion(&client_id, &app.issuer)));
    let with: Vec<(&str, &str)> = with.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let (status, body) = exchange(&app, &with).await;
    assert_eq!(status, 200, "{body}");
}

#[tokio::test]
async fn a_document_client_on_a_device_is_confirmed_by_its_host_and_gets_tokens() {
    const DEVICE_GRANT: &str = "urn:ietf:params:oauth:grant-type:device_code";
    let (documents, app) = setup(ClientDocumentsMode::Open, |config| {
        config.device_code_interval = Duration::from_secs(1);
    })
    .await;
    let client_id = documents.url("/cli.json");
    let mut doc = document(&client_id);
    doc["client_name"] = "Agent CLI".into();
    doc["grant_types"] = json!([DEVICE_GRANT, "refresh_token"]);
    doc.as_object_mut().unwrap().remove("response_types");
    documents.serve("/cli.json", Doc::json(&doc));
    let response = app
        .http
        .post(app.url("/o/device_authorization/"))
        .form(&[("client_id", client_id.as_str()), ("scope", "read")])
        .send()
        .await
        .unwrap();
    let status = response.status();
    let started: Value = response.json().await.unwrap();
    assert_eq!(status, 200, "{started}");
    let user_code = started["user_code"].as_str().unwrap();
    let device_code = started["device_code"].as_str().unwrap();

    logged_in(&app).await;
    let csrf = hidden_input(&app.get_text("/o/device/").await, "csrf_token").unwrap();
    let submit = |fields: Vec<(&'static str, String)>| {
        let mut form = vec![("csrf_token", csrf.clone())];
        form.extend(fields);
        app.http.post(app.url("/o/device/")).form(&form).send()
    };
    let confirmation = submit(vec![("user_code", user_code.to_string())]).await.unwrap();
    let html = confirmation.text().await.unwrap();
    assert!(html.contains("Agent CLI"), "{html}");
    assert!(
        html.contains(r#"<strong id="client-host">127.0.0.1</strong>"#),
        "{html}"
    );
    assert!(
        html.contains(&client_id.replace('/', "&#x2f;")),
        "the full client id is shown"
    );
    let done = submit(vec![("user_code", user_code.to_string()), ("decision", "allow".into())])
        .await
        .unwrap();
    assert_eq!(done.status(), 200);
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let (status, tokens) = exchange(
        &app,
        &[
            ("grant_type", DEVICE_GRANT),
            ("device_code", device_code),
            ("client_id", &client_id),
        ],
    )
    .await;
    assert_eq!(status, 200, "{tokens}");
    assert_eq!(
        jwt_parts(tokens["access_token"].as_str().unwrap()).1["client_id"],
        client_id.as_str()
    );
}
