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

// The pre-release attack on private_key_jwt, Client ID Metadata Documents and the device
// grant: each comment tells the bug as it was found, and each test failed while it was there.

/// The per-host fetch budget of `src/documents.rs` (`DocumentCache::fetch_and_keep`) is
/// spent by any anonymous visitor naming URLs that do not exist on a host: ten GETs of
/// `/o/authorize/?client_id=https://vendor.example/junkN` a minute (a 404 costs as much as a
/// real fetch, and failures are not cached) keep that host's budget empty, and every real
/// client published on the host (and every `jwks_uri` there) then fails with "too many
/// documents fetched": a targeted denial of service against a popular client vendor.
#[tokio::test]
async fn junk_urls_on_a_host_do_not_lock_out_the_real_client_published_there() {
    let documents = DocumentServer::start().await;
    // Behind a proxy, so that the visitor and the real client's users have their own addresses.
    let app = behind_a_proxy(|config| {
        documents.trusted_by(config);
        config.client_documents.mode = tessera::config::ClientDocumentsMode::Open;
    })
    .await;
    let (visitor, user) = (
        browser_behind_proxy(&app, "203.0.113.7"),
        browser_behind_proxy(&app, "198.51.100.9"),
    );

    let authorize = |from: &Remote, client_id: String| {
        let (http, url) = (from.http.clone(), app.url("/o/authorize/"));
        async move {
            let pkce = Pkce::new();
            let response = http
                .get(url)
                .query(&[
                    ("response_type", "code"),
                    ("client_id", client_id.as_str()),
                    ("redirect_uri", "http://127.0.0.1:53177/callback"),
                    ("scope", "read"),
                    ("state", "s"),
                    ("code_challenge", pkce.challenge.as_str()),
                    ("code_challenge_method", "S256"),
                ])
                .send()
                .await
                .unwrap();
            (response.status().as_u16(), response.text().await.unwrap())
        }
    };
    // An anonymous visitor names a dozen documents that do not exist on the vendor's host.
    for i in 0..12 {
        let (status, _) = authorize(&visitor, documents.url(&format!("/junk/{i}.json"))).await;
        // Past the visitor's own budget: 429, our limit (the third review), not a 400.
        assert!([400, 429].contains(&status), "{status}");
    }
    // The vendor's real client, never fetched before (a new node, a restart, an expired copy).
    let client_id = documents.url("/agent/client.json");
    documents.serve(
        "/agent/client.json",
        Doc::json(&json!({
            "client_id": client_id,
            "client_name": "Real Agent",
            "redirect_uris": ["http://127.0.0.1/callback"],
            "token_endpoint_auth_method": "none",
        })),
    );
    let (status, page) = authorize(&user, client_id.clone()).await;
    assert!(
        status == 302 || status == 200,
        "the real client was locked out by junk requests: {status} {}",
        page.lines()
            .find(|l| l.contains("too many") || l.contains("not usable"))
            .unwrap_or_default()
    );
}

/// With private addresses refused (the default), the error page for a document URL whose
/// host resolves to a private address names that address: `PublicOnly::resolve` in
/// `src/outbound.rs` puts the first resolved IP in `OutboundError::NotPublic`, and the
/// authorization page shows the reason to anyone. An anonymous visitor can so resolve any
/// internal host name through the server's resolver (`https://db.corp.internal/x` ->
/// "10.2.3.4 is not a public address"): an internal DNS oracle.
#[tokio::test]
async fn the_error_page_does_not_reveal_what_an_internal_name_resolves_to() {
    let dirs = tempfile::tempdir().unwrap();
    let mut config = test_config(&dirs);
    config.client_documents.mode = tessera::config::ClientDocumentsMode::Open;
    assert!(!config.outbound.allow_private_addresses);
    let app = spawn_app_with(config, dirs).await;
    let pkce = Pkce::new();
    let response = app
        .http
        .get(app.url("/o/authorize/"))
        .query(&[
            ("response_type", "code"),
            ("client_id", "https://localhost/client.json"),
            ("redirect_uri", "http://127.0.0.1/callback"),
            ("state", "s"),
            ("code_challenge", pkce.challenge.as_str()),
            ("code_challenge_method", "S256"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 400);
    let page = response.text().await.unwrap();
    assert!(page.contains("not usable"), "{page}");
    assert!(
        !page.contains("127.0.0.1 is not") && !page.contains("::1 is not"),
        "the page tells an anonymous visitor what localhost resolves to: {}",
        page.lines().find(|l| l.contains("not usable")).unwrap_or_default()
    );
}

/// The outbound client (`Outbound::new` in `src/outbound.rs`) keeps reqwest's default
/// connection pool: every idle connection to every host is kept for 90 s, with no limit on
/// hosts or connections. An anonymous visitor naming documents on many hosts (a wildcard
/// DNS name and a wildcard certificate are enough: `https://1.evil.example/c`,
/// `https://2.evil.example/c`, ...), served by a server that keeps connections alive, makes
/// Tessera hold one open socket per host (one per concurrent fetch, in fact) long after the
/// fetch: measured by hand, 2,000 requests over 248 hosts left ~1,500 sockets open; at a few
/// hundred requests a second the process runs out of file descriptors and stops accepting
/// connections. A document fetch is a one-off request: its connection should be closed.
#[tokio::test]
async fn document_fetches_do_not_leave_connections_open_to_every_host_named() {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio_rustls::rustls;
    use tokio_rustls::rustls::pki_types::pem::PemObject;
    use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};

    const HOSTS: u8 = 40;
    // A certificate for 127.0.0.2 .. 127.0.0.41: forty "hosts" on loopback.
    let dir = tempfile::tempdir().unwrap();
    let openssl = |args: &str| {
        let out = std::process::Command::new("openssl")
            .args(args.split_whitespace())
            .current_dir(dir.path())
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    };
    openssl("req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 1 -subj /CN=attack-ca -keyout ca.key -out ca.crt");
    openssl("req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -subj /CN=hosts -keyout server.key -out server.csr");
    let sans: Vec<String> = (2..2 + HOSTS).map(|i| format!("IP:127.0.0.{i}")).collect();
    std::fs::write(
        dir.path().join("san.ext"),
        format!("subjectAltName={}\n", sans.join(",")),
    )
    .unwrap();
    openssl(
        "x509 -req -in server.csr -CA ca.crt -CAkey ca.key -CAcreateserial -days 1 -extfile san.ext -out server.crt",
    );

    // A keep-alive https server on every address, answering every request with a 404.
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(dir.path().join("server.crt"))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    let key = PrivateKeyDer::from_pem_file(dir.path().join("server.key")).unwrap();
    let tls = rustls::ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(tls));
    let listener = tokio::net::TcpListener::bind("0.0.0.0:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let open = Arc::new(AtomicUsize::new(0));
    let counted = open.clone();
    let server = tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else { return };
            let (acceptor, open) = (acceptor.clone(), counted.clone());
            tokio::spawn(async move {
                open.fetch_add(1, Ordering::SeqCst);
                if let Ok(mut tls) = acceptor.accept(tcp).await {
                    let mut buf = [0u8; 8192];
                    let mut head = Vec::new();
                    loop {
                        match tls.read(&mut buf).await {
                            Ok(0) | Err(_) => break,
                            Ok(n) => head.extend_from_slice(&buf[..n]),
                        }
                        if head.windows(4).any(|w| w == b"\r\n\r\n") {
                            head.clear();
                            let answer =
                                "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: keep-alive\r\n\r\n";
                            if tls.write_all(answer.as_bytes()).await.is_err() {
                                break;
                            }
                        }
                    }
                }
                open.fetch_sub(1, Ordering::SeqCst);
            });
        }
    });

    let app_dirs = tempfile::tempdir().unwrap();
    let mut config = test_config(&app_dirs);
    let pem = std::fs::read(dir.path().join("ca.crt")).unwrap();
    config.outbound.extra_roots = reqwest::Certificate::from_pem_bundle(&pem).unwrap();
    config.outbound.allow_private_addresses = true;
    config.client_documents.mode = tessera::config::ClientDocumentsMode::Open;
    // One visitor naming forty hosts: past the budget of new documents per caller, which
    // this test is not about.
    config.documents.fetches_per_host.burst = 100.0;
    let app = spawn_app_with(config, app_dirs).await;

    for i in 2..2 + HOSTS {
        let pkce = Pkce::new();
        let client_id = format!("https://127.0.0.{i}:{port}/client.json");
        let response = app
            .http
            .get(app.url("/o/authorize/"))
            .query(&[
                ("response_type", "code"),
                ("client_id", client_id.as_str()),
                ("redirect_uri", "http://127.0.0.1/callback"),
                ("code_challenge", pkce.challenge.as_str()),
                ("code_challenge_method", "S256"),
            ])
            .send()
            .await
            .unwrap();
        let status = response.status().as_u16();
        let page = response.text().await.unwrap();
        assert!(status == 400 && page.contains("answered HTTP 404"), "{status}");
    }
    tokio::time::sleep(std::time::Duration::from_secs(2)).await;
    let still_open = open.load(Ordering::SeqCst);
    server.abort();
    assert!(
        still_open <= 4,
        "{still_open} connections to {HOSTS} document hosts are still open 2 s after their fetches"
    );
}

// The third adversarial review (issue 26, `SECURITY.md`), each finding as the attack that
// found it; each test failed on the code the review ran against.

/// The real binary with client documents open, trusting `documents`, with every per-address
/// budget off: as an attacker with a wildcard DNS name and many addresses sees it.
fn document_server_process(dir: &std::path::Path, documents: &DocumentServer, extra: &str) -> ServerProcess {
    std::fs::write(
        dir.join("tessera.toml"),
        format!(
            "client_id_metadata_documents = \"open\"\noutbound_allow_private_addresses = true\n\
             outbound_ca_file = {:?}\ndocument_fetches_per_host_per_minute = 1000000\n\
             rate_limit_per_address = 0\nmax_connections_per_address = 1000\n{extra}",
            documents.ca_file.display().to_string()
        ),
    )
    .unwrap();
    ServerProcess::start(dir, &["--config", "tessera.toml"], &[])
}

/// GETs `/o/authorize/` naming each client id, `parallel` at a time; returns the statuses.
async fn authorize_each(base: &str, client_ids: Vec<String>, parallel: usize) -> Vec<u16> {
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let url = format!("{base}/o/authorize/");
    for_each_concurrent(client_ids, parallel, move |client_id| {
        let (http, url) = (http.clone(), url.clone());
        async move {
            let pkce = Pkce::new();
            http.get(&url)
                .query(&[
                    ("response_type", "code"),
                    ("client_id", client_id.as_str()),
                    ("redirect_uri", "http://127.0.0.1:53177/callback"),
                    ("scope", "read"),
                    ("state", "s"),
                    ("code_challenge", pkce.challenge.as_str()),
                    ("code_challenge_method", "S256"),
                ])
                .send()
                .await
                .map_or(0, |r| r.status().as_u16())
        }
    })
    .await
}

/// A document of nearly 5 KB whose 8 members are objects nested 100 deep: ~640 bytes of
/// parsed tree for each 5 bytes of text.
fn nested_document(client_id: &str) -> Vec<u8> {
    let deep = format!("{}1{}", "{\"a\":".repeat(100), "}".repeat(100));
    let members: Vec<String> = (0..8).map(|i| format!("\"m{i}\":{deep}")).collect();
    format!("{{\"client_id\":{client_id:?},{}}}", members.join(",")).into_bytes()
}

/// Finding 1: the document cache kept the parsed JSON tree of whatever a URL served, before
/// anyone checked it was a usable client, bounded by count only: 100 nested 4.9 KB documents
/// named as `client_id`s at `/o/authorize/` by anyone raised RSS 24 -> 85 MB. Now the shape
/// is refused before parsing and only usable documents are cached, as bytes.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn nested_documents_named_as_client_ids_do_not_fill_memory() {
    let documents = DocumentServer::start().await;
    let mut client_ids = Vec::new();
    for i in 0..300 {
        let path = format!("/nested/{i}.json");
        let client_id = documents.url(&path);
        let body = nested_document(&client_id);
        assert!(body.len() > 4_800 && body.len() < 5 * 1024, "{}", body.len());
        documents.serve(
            &path,
            Doc {
                body,
                ..Doc::json(&json!({}))
            },
        );
        client_ids.push(client_id);
    }
    let dir = tempfile::tempdir().unwrap();
    let server = document_server_process(dir.path(), &documents, "");
    // One request first, so start-up allocations are behind us.
    authorize_each(&server.base, client_ids[..1].to_vec(), 1).await;
    let before = memory_kib(server.pid(), "VmRSS");
    // Four at a time: one host's share of the fetch places (an attacker has as many hosts as
    // names under a wildcard DNS entry).
    let statuses = authorize_each(&server.base, client_ids.clone(), 4).await;
    let after = memory_kib(server.pid(), "VmRSS");
    let logs = server.terminate();
    assert!(statuses.iter().all(|s| *s == 400), "{statuses:?}\n{logs}");
    let fetched: usize = (0..300).map(|i| documents.hits(&format!("/nested/{i}.json"))).sum();
    assert!(fetched >= 300, "every document was fetched ({fetched}): the attack ran");
    println!(
        "RSS after 300 nested documents: {} -> {} MiB",
        before / 1024,
        after / 1024
    );
    assert!(
        after < before + 16 * 1024,
        "RSS grew {} -> {} MiB",
        before / 1024,
        after / 1024
    );
}

/// Finding 9: the fetch budgets kept each key as the text it was given, the host name an
/// anonymous visitor chose among them: 40,000 `client_id=https://<1,900 letters>.example/c.json`
/// raised RSS 25 -> 188 MB. Now every rate limiter keeps a fixed-size digest of its key.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn long_host_names_do_not_fill_the_fetch_budgets() {
    let documents = DocumentServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let server = document_server_process(dir.path(), &documents, "");
    let letters = |i: usize| -> String {
        let mut state = i as u64 * 2_654_435_761 + 1;
        (0..1_900)
            .map(|_| {
                state = state.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
                (b'a' + (state >> 59) as u8 % 26) as char
            })
            .collect()
    };
    let client_ids: Vec<String> = (0..8_000)
        .map(|i| format!("https://{}{i}.example/c.json", letters(i)))
        .collect();
    authorize_each(&server.base, client_ids[..10].to_vec(), 1).await;
    let before = memory_kib(server.pid(), "VmRSS");
    let statuses = authorize_each(&server.base, client_ids[10..].to_vec(), 32).await;
    let after = memory_kib(server.pid(), "VmRSS");
    let logs = server.terminate();
    assert!(statuses.iter().all(|s| *s == 400), "{logs}");
    println!(
        "RSS after 8,000 long host names: {} -> {} MiB",
        before / 1024,
        after / 1024
    );
    // The keys alone were 3 x 8,000 x ~2 KB = 46 MB before.
    assert!(
        after < before + 16 * 1024,
        "RSS grew {} -> {} MiB",
        before / 1024,
        after / 1024
    );
}

/// Finding 2: the 32 fetch places were shared by every host: ~3 requests a second to a host
/// that answers slowly kept every other host's new documents failing with "too many documents
/// are being fetched now". Now one host holds at most 4 places.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_slow_host_cannot_take_every_fetch_place() {
    let slow = DocumentServer::start().await;
    let fast = slow.another().await;
    let dirs = tempfile::tempdir().unwrap();
    let mut config = test_config(&dirs);
    slow.trusted_by(&mut config);
    config.client_documents.mode = tessera::config::ClientDocumentsMode::Open;
    config.documents.fetches_per_host = tessera::rate_limit::Rate {
        per_second: 1000.0,
        burst: 1000.0,
    };
    config.rate_limit_per_address = tessera::rate_limit::Rate::OFF;
    let app = spawn_app_with(config, dirs).await;
    let mut slow_ids = Vec::new();
    for i in 0..40 {
        let path = format!("/slow/{i}.json");
        let mut doc = Doc::json(&document(&slow.url(&path)));
        doc.delay = Duration::from_secs(6);
        slow.serve(&path, doc);
        slow_ids.push(slow.url(&path));
    }
    // Forty slow fetches at once, from addresses of the attacker's (ten of them).
    let base = app.base.clone();
    let flood = tokio::spawn(async move {
        let numbered: Vec<(usize, String)> = slow_ids.into_iter().enumerate().collect();
        for_each_concurrent(numbered, 40, move |(i, id)| {
            let base = base.clone();
            async move {
                let http = from_address([127, 0, 3, (i % 10) as u8 + 1]);
                let params = authorize_params(&id, &Pkce::new(), "read");
                http.get(format!("{base}/o/authorize/"))
                    .query(&params)
                    .send()
                    .await
                    .map_or(0, |r| r.status().as_u16())
            }
        })
        .await
    });
    tokio::time::sleep(Duration::from_millis(700)).await;
    let client_id = fast.url("/fast.json");
    fast.serve("/fast.json", Doc::json(&document(&client_id)));
    let started = std::time::Instant::now();
    let page = app.authorize(&authorize_params(&client_id, &Pkce::new(), "read")).await;
    let status = page.status();
    let html = page.text().await.unwrap();
    assert_eq!(status, 302, "another host's document is fetched at once: {html}");
    assert!(started.elapsed() < Duration::from_secs(2), "{:?}", started.elapsed());
    let statuses = flood.await.unwrap();
    assert!(
        statuses.iter().filter(|s| **s == 302).count() <= 4,
        "the slow host had 4 places: {statuses:?}"
    );
}

/// Finding 6: the consent page's localhost warning was computed from every registered redirect
/// URI: a document listing an https URI besides the loopback one got no warning, though the
/// code of this request went to localhost. Now the warning follows the request's redirect URI.
#[tokio::test]
async fn the_localhost_warning_follows_the_requests_redirect_uri() {
    let documents = DocumentServer::start().await;
    let dirs = tempfile::tempdir().unwrap();
    let mut config = test_config(&dirs);
    documents.trusted_by(&mut config);
    config.client_documents.mode = tessera::config::ClientDocumentsMode::Open;
    let app = spawn_app_with(config, dirs).await;
    let client_id = documents.url("/mixed.json");
    let mut doc = document(&client_id);
    doc["redirect_uris"] = json!(["http://127.0.0.1:53177/callback", "https://app.example/callback"]);
    documents.serve("/mixed.json", Doc::json(&doc));
    assert_eq!(app.log_in("/o/login/", USERNAME, PASSWORD).await.status(), 303);
    for (redirect_uri, warned) in [
        ("http://127.0.0.1:53177/callback", true),
        ("https://app.example/callback", false),
    ] {
        let mut params = authorize_params(&client_id, &Pkce::new(), "read");
        params[2].1 = redirect_uri.into();
        let page = app.authorize(&params).await;
        assert_eq!(page.status(), 200);
        let html = page.text().await.unwrap();
        assert_eq!(
            html.contains(r#"id="loopback-warning""#),
            warned,
            "{redirect_uri}: {html}"
        );
    }
}

/// Finding 12: the document error page told "does not resolve to a public address" from
/// "failed to lookup address", and named connection and TLS errors: an oracle for internal
/// DNS names and open ports. Now every failed fetch shows one reason; the detail is logged.
#[tokio::test]
async fn a_failed_document_fetch_shows_one_reason_whatever_went_wrong() {
    let documents = DocumentServer::start().await;
    let dirs = tempfile::tempdir().unwrap();
    let mut config = test_config(&dirs);
    config.client_documents.mode = tessera::config::ClientDocumentsMode::Open;
    let app = spawn_app_with(config, dirs).await;
    let closed = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().port()
    };
    let mut reasons = Vec::new();
    for client_id in [
        // Resolves, to loopback (not public).
        "https://localhost/c.json".to_string(),
        // Resolves to nothing.
        "https://no-such-host.invalid/c.json".to_string(),
        // A private literal, a closed port.
        format!("https://127.0.0.1:{closed}/c.json"),
        // An open port whose certificate no one trusts (the server here has its own CA).
        documents.url("/c.json"),
    ] {
        let page = app.authorize(&authorize_params(&client_id, &Pkce::new(), "read")).await;
        assert_eq!(page.status(), 400, "{client_id}");
        let html = page.text().await.unwrap();
        let reason = html
            .lines()
            .find(|l| l.contains("not usable"))
            .unwrap_or_default()
            .replace(&client_id.replace('/', "&#x2f;"), "URL");
        for leak in [
            "resolve",
            "lookup",
            "refused",
            "certificate",
            "tls",
            "127.0.0.1 is",
            "::1",
        ] {
            assert!(!reason.to_lowercase().contains(leak), "{client_id}: {reason}");
        }
        reasons.push(reason);
    }
    assert!(reasons.windows(2).all(|w| w[0] == w[1]), "{reasons:#?}");
}

// The attack on the third review's fixes before their release (`SECURITY.md`), each as the
// attack.

/// Slow documents on a host of its own (with `authority`'s certificate).
async fn slow_host(authority: &DocumentServer, delay: Duration) -> DocumentServer {
    let host = authority.another().await;
    for i in 0..8 {
        let path = format!("/slow/{i}.json");
        let mut doc = Doc::json(&document(&host.url(&path)));
        doc.delay = delay;
        host.serve(&path, doc);
    }
    host
}

/// The attack, 4 and 5: four addresses naming slow documents on hosts of their own held every
/// fetch place, so new document clients, and an operator's `private_key_jwt` client whose key
/// set was not cached, failed; and our own limits were answered as the client's fault (400 or
/// 401 `invalid_client`). Now registered clients' key sets have places of their own, one caller
/// holds at most 4, and a full house is 503 (or 429) with `Retry-After`.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn slow_documents_from_many_callers_cannot_stop_a_registered_clients_keys() {
    use tessera::oauth::client::ClientKeys;
    let delay = Duration::from_secs(6);
    let keys = DocumentServer::start().await;
    let mut hosts = Vec::new();
    for _ in 0..9 {
        hosts.push(slow_host(&keys, delay).await);
    }
    let dirs = tempfile::tempdir().unwrap();
    let mut config = test_config(&dirs);
    keys.trusted_by(&mut config);
    config.client_documents.mode = tessera::config::ClientDocumentsMode::Open;
    config.rate_limit_per_address = tessera::rate_limit::Rate::OFF;
    let app = spawn_app_with(config, dirs).await;
    // Every server here has the same certificate authority.
    let key = TestKey::new(jsonwebtoken::Algorithm::ES256);
    keys.serve("/jwks.json", Doc::json(&key.jwks()));
    let client_id = crate::private_key_jwt::register(&app, ClientKeys::JwksUri(keys.url("/jwks.json"))).await;

    // Eight attackers, four slow fetches each, on eight hosts: 32 places.
    let mut flood = tokio::task::JoinSet::new();
    for attacker in 0..8u8 {
        for i in 0..4 {
            let http = from_address([127, 0, 1, attacker + 1]);
            let (base, id) = (
                app.base.clone(),
                hosts[attacker as usize].url(&format!("/slow/{i}.json")),
            );
            flood.spawn(async move {
                let params = authorize_params(&id, &Pkce::new(), "read");
                http.get(format!("{base}/o/authorize/"))
                    .query(&params)
                    .send()
                    .await
                    .map(|r| r.status().as_u16())
            });
        }
    }
    tokio::time::sleep(Duration::from_millis(800)).await;
    // The registered client's keys are still read.
    let (status, body) = crate::private_key_jwt::token_with(&app, &key.assertion(&client_id, &app.issuer)).await;
    assert_eq!(status, 200, "{body}");
    // A ninth caller's new document: our limit, answered as one (503 + Retry-After).
    let victim = from_address([127, 0, 1, 100]);
    let id = hosts[8].url("/slow/0.json");
    let response = victim
        .get(app.url("/o/authorize/"))
        .query(&authorize_params(&id, &Pkce::new(), "read"))
        .send()
        .await
        .unwrap();
    let (status, retry_after) = (
        response.status().as_u16(),
        response.headers().contains_key("retry-after"),
    );
    assert_eq!((status, retry_after), (503, true), "{}", response.text().await.unwrap());
    flood.join_all().await;
}

/// The attack, 6: a logout (or the device page, or the authorized-apps page) looked a document
/// client up with no caller, so every anonymous visitor shared one fetch budget: one address's
/// logouts naming new documents refused everyone else's. Now each is counted against its own
/// address.
#[tokio::test]
async fn one_visitors_logouts_do_not_spend_another_visitors_fetch_budget() {
    let documents = DocumentServer::start().await;
    let dirs = tempfile::tempdir().unwrap();
    let mut config = test_config(&dirs);
    documents.trusted_by(&mut config);
    config.client_documents.mode = tessera::config::ClientDocumentsMode::Open;
    let app = spawn_app_with(config, dirs).await;
    let logout = |http: reqwest::Client, client_id: String| {
        let url = app.url("/o/logout/");
        async move {
            let response = http
                .get(url)
                .query(&[("client_id", client_id.as_str())])
                .send()
                .await
                .unwrap();
            (response.status().as_u16(), response.text().await.unwrap())
        }
    };
    let attacker = from_address([127, 0, 2, 1]);
    let mut attacker_refused = false;
    for i in 0..40 {
        let path = format!("/logout/{i}.json");
        documents.serve(&path, Doc::json(&document(&documents.url(&path))));
        let (status, page) = logout(attacker.clone(), documents.url(&path)).await;
        attacker_refused |= status == 429 && page.contains("too many documents");
    }
    assert!(attacker_refused, "the attacker met their own budget");
    let victim = from_address([127, 0, 2, 2]);
    let path = "/logout/victim.json";
    documents.serve(path, Doc::json(&document(&documents.url(path))));
    let (status, page) = logout(victim, documents.url(path)).await;
    assert!(!page.contains("too many documents"), "{status}: {page}");
    assert_eq!(documents.hits(path), 1, "the victim's document was fetched");
}

/// The attack, 8: a stale copy served on any failed refetch, so a document its publisher
/// withdrew (404) or emptied kept working for `stale_ttl` (an hour). Now only a publisher that
/// cannot be reached (or answers 5xx) keeps the stale copy serving.
#[tokio::test]
async fn a_withdrawn_document_stops_working_when_it_is_fetched_again() {
    let documents = DocumentServer::start().await;
    let dirs = tempfile::tempdir().unwrap();
    let mut config = test_config(&dirs);
    documents.trusted_by(&mut config);
    config.client_documents.mode = tessera::config::ClientDocumentsMode::Open;
    config.documents.min_ttl = Duration::from_secs(1);
    let app = spawn_app_with(config, dirs).await;
    for (path, withdrawn) in [
        (
            "/gone.json",
            Doc {
                status: 404,
                ..Doc::json(&json!({}))
            },
        ),
        ("/emptied.json", Doc::json(&json!({"client_id": "x"}))),
    ] {
        let id = documents.url(path);
        documents.serve(path, Doc::json(&document(&id)));
        assert_eq!(
            app.authorize(&authorize_params(&id, &Pkce::new(), "read"))
                .await
                .status(),
            302,
            "{path}"
        );
        let withdrawn = match path {
            "/emptied.json" => Doc::json(&json!({"client_id": id, "redirect_uris": []})),
            _ => withdrawn,
        };
        documents.serve(path, withdrawn);
        tokio::time::sleep(Duration::from_millis(1100)).await;
        assert_eq!(
            app.authorize(&authorize_params(&id, &Pkce::new(), "read"))
                .await
                .status(),
            400,
            "{path}"
        );
    }
}
