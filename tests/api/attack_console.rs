//! Findings of the attack on the operator's console (`/admin/`). Each test asserts the secure
//! behaviour: it fails while the finding stands and passes once it is fixed.

use crate::console::{csrf, operator_browser, OPERATOR};
use crate::helpers::*;

async fn try_get(browser: &Remote, path: &str) -> reqwest::Result<reqwest::Response> {
    browser.http.get(browser.url(path)).send().await
}

async fn try_post(browser: &Remote, path: &str, form: &[(&str, &str)]) -> reqwest::Result<reqwest::Response> {
    browser.http.post(browser.url(path)).form(form).send().await
}

/// Finding 1 (NUL bytes in the console's client form): the console refuses a NUL byte in its
/// addresses, but not in the client form's fields. A NUL in a redirect URI, post-logout
/// redirect URI, resource or JWK Set URL passes validation (the URL parser percent-encodes it
/// in its own copy, the raw text is stored), and PostgreSQL refuses `\u0000` in the jsonb
/// record: the operator gets a 500 "Something went wrong" instead of a form saying what is
/// wrong (on sled the NUL is stored in the client's settings). The same core validation is
/// behind the admin API, the applications pages and dynamic registration.
#[tokio::test]
async fn a_nul_byte_in_a_console_client_form_field_is_refused_as_a_400() {
    let app = spawn_app().await;
    let operator = operator_browser(&app).await;
    let token = csrf(&operator).await;
    let mut wrong = vec![];
    for (field, value, extra) in [
        (
            "redirect_uris",
            "https://app.example/cb\u{0}x",
            ("grant_authorization_code", "on"),
        ),
        (
            "post_logout_redirect_uris",
            "https://app.example/bye\u{0}",
            ("grant_client_credentials", "on"),
        ),
        (
            "resources",
            "https://api.example/\u{0}",
            ("grant_client_credentials", "on"),
        ),
        (
            "jwks_uri",
            "https://keys.example/jwks\u{0}.json",
            ("grant_client_credentials", "on"),
        ),
    ] {
        let mut form = vec![
            ("csrf_token", token.as_str()),
            ("name", "NUL app"),
            ("client_type", "confidential"),
            extra,
            ("scope_read", "on"),
            (field, value),
        ];
        if field != "redirect_uris" {
            form.push(("redirect_uris", "https://app.example/cb"));
        }
        let response = try_post(&operator, "/admin/clients/new", &form)
            .await
            .unwrap_or_else(|e| panic!("{field}: the server dropped the request: {e}"));
        let status = response.status();
        let html = response.text().await.unwrap();
        if status != 400 {
            wrong.push(format!("a NUL byte in {field}: {status} {}", error_line(&html)));
        }
    }
    assert!(wrong.is_empty(), "refused with the form (400): {wrong:#?}");
    let clients = app.store.list_clients().await.unwrap();
    assert!(
        !clients.iter().any(|c| c.name == "NUL app"),
        "no client with a NUL byte in its settings was stored"
    );
}

/// The error line of a console page.
fn error_line(html: &str) -> String {
    html.lines()
        .filter(|l| l.contains("class=\"error\""))
        .collect::<Vec<_>>()
        .join(" ")
}

/// Finding 1b (a NUL escaped in a client's JWK Set breaks PostgreSQL): as finding 1, but in
/// the JWK Set, which is JSON, where a NUL is written `\u0000`. A key with such a
/// member passes validation, the record is stored as jsonb, and PostgreSQL refuses
/// `\u0000` in jsonb: the operator gets a 500 "Something went wrong" instead of the form
/// saying what is wrong. The same validation is behind the admin API, the applications pages
/// and dynamic registration (`jwks` in the registration request).
#[tokio::test]
async fn a_jwk_set_with_an_escaped_nul_is_refused_as_a_400_not_a_server_error() {
    let app = spawn_app().await;
    let operator = operator_browser(&app).await;
    let token = csrf(&operator).await;
    let jwks = app.get_jwks().await;
    let mut wrong = vec![];
    for (member, value) in [("kid", "a\u{0}b"), ("x-note", "\u{0}")] {
        let mut key = jwks["keys"][0].clone();
        key[member] = serde_json::Value::String(value.to_string());
        let set = serde_json::json!({ "keys": [key] }).to_string();
        let form = [
            ("csrf_token", token.as_str()),
            ("name", "NUL key app"),
            ("client_type", "confidential"),
            ("grant_client_credentials", "on"),
            ("scope_read", "on"),
            ("jwks", set.as_str()),
        ];
        let response = try_post(&operator, "/admin/clients/new", &form)
            .await
            .unwrap_or_else(|e| panic!("{member}: the server dropped the request: {e}"));
        let status = response.status();
        let html = response.text().await.unwrap();
        if status != 400 {
            wrong.push(format!("a NUL in the key's {member}: {status} {}", error_line(&html)));
        }
    }
    assert!(wrong.is_empty(), "refused with the form (400): {wrong:#?}");
}

/// Generates a key and promotes it at once (confirming the warning), as an operator rotating
/// keys does; returns the kid of the key that signed before.
async fn rotate_keys(app: &TestApp, operator: &Remote, token: &str) -> String {
    let before = app.provider.list_keys().await.unwrap();
    let old = before
        .iter()
        .find(|k| k.status == tessera::keys::KeyStatus::Signing)
        .unwrap()
        .kid
        .clone();
    let generated = try_post(
        operator,
        "/admin/keys/generate",
        &[("csrf_token", token), ("alg", "ES256")],
    )
    .await
    .unwrap();
    assert_eq!(generated.status(), 303);
    let after = app.provider.list_keys().await.unwrap();
    let new = after.iter().find(|k| !before.iter().any(|b| b.kid == k.kid)).unwrap();
    let promote = format!("/admin/keys/{}/promote", new.kid);
    let promoted = try_post(operator, &promote, &[("csrf_token", token), ("confirm", "yes")])
        .await
        .unwrap();
    assert_eq!(promoted.status(), 303);
    old
}

/// Creates a client_credentials client in the console with this access-token lifetime.
async fn client_with_ttl(operator: &Remote, token: &str, ttl: &str) -> reqwest::Response {
    try_post(
        operator,
        "/admin/clients/new",
        &[
            ("csrf_token", token),
            ("name", "Long-lived"),
            ("client_type", "confidential"),
            ("grant_client_credentials", "on"),
            ("scope_read", "on"),
            ("access_token_ttl", ttl),
        ],
    )
    .await
    .unwrap()
}

/// Finding 2 (unbounded token lifetimes defeat the key runbook): the console takes any
/// access-token lifetime above 0, up to u64::MAX. The keys page computes when retiring the old
/// key becomes safe as `promoted_at + longest_access_token_ttl as i64`: a lifetime of 2^63 s
/// or more turns negative, the "longest lifetime" becomes negative, and right after a
/// promotion the page says the old key is "safe to retire now" and retiring it asks without
/// any warning, although every token of every other client (the server's 1 h default) still
/// needs the old key to verify. Lifetimes should be bounded (and the arithmetic saturating).
#[tokio::test]
async fn a_huge_token_lifetime_cannot_make_retiring_the_old_key_look_safe_right_after_a_promotion() {
    let app = spawn_app().await;
    let operator = operator_browser(&app).await;
    let token = csrf(&operator).await;
    let old = rotate_keys(&app, &operator, &token).await;
    let page = operator.get_text("/admin/keys").await;
    assert!(page.contains("safe to retire at"), "before: the wait is shown");

    // 2^63 seconds: accepted (should be refused as absurd).
    let created = client_with_ttl(&operator, &token, "9223372036854775808").await;
    let created_status = created.status();

    let keys = try_get(&operator, "/admin/keys").await.unwrap();
    assert_eq!(keys.status(), 200);
    let page = keys.text().await.unwrap();
    let row = page
        .split("<tr id=\"key-")
        .find(|row| row.starts_with(&old))
        .expect("the old key's row")
        .to_string();
    assert!(
        !row.contains("safe to retire now"),
        "the old key was promoted away a moment ago; the client was {created_status}: {row}"
    );
    let retire = format!("/admin/keys/{old}/retire");
    let asked = try_post(&operator, &retire, &[("csrf_token", token.as_str())])
        .await
        .unwrap();
    let html = asked.text().await.unwrap();
    assert!(
        html.contains("Not safe yet"),
        "retiring the key that signed until a moment ago warns: {html}"
    );
}

/// Finding 3 (a token lifetime of i64::MAX panics the server in debug builds, wraps in
/// release): `iat + expires_in as i64` at the token endpoint and `promoted + longest +
/// RELOAD_DELAY` on the keys page overflow. In a debug build the handler panics and the
/// connection is dropped; in a release build the access token is issued already expired
/// (`exp` wraps negative) and the keys page says "safe to retire now". While such a client
/// exists, every keys page, promote and retire in the console panics. The refresh-token
/// lifetime has the same `issued_at + ttl as i64` (grant/refresh_token.rs,
/// grant/authorization_code.rs).
#[tokio::test]
async fn a_token_lifetime_of_i64_max_is_refused_and_never_panics_the_token_endpoint_or_the_keys_page() {
    let app = spawn_app().await;
    let operator = operator_browser(&app).await;
    let token = csrf(&operator).await;
    rotate_keys(&app, &operator, &token).await;
    let created = client_with_ttl(&operator, &token, "9223372036854775807").await;
    let status = created.status();
    let html = created.text().await.unwrap();
    let mut wrong = vec![];
    match try_get(&operator, "/admin/keys").await {
        Ok(keys) if keys.status() == 200 => {}
        Ok(keys) => wrong.push(format!("the keys page answers {}", keys.status())),
        Err(e) => wrong.push(format!("the keys page panicked and dropped the connection: {e}")),
    }
    if let (Some(id), Some(secret)) = (code_element(&html, "client-id"), code_element(&html, "client-secret")) {
        let client = TestClient {
            id,
            secret: Some(secret),
        };
        let issued = operator
            .try_token(&client, &[("grant_type", "client_credentials"), ("scope", "read")])
            .await;
        match issued {
            Ok(issued) if issued.status() == 200 => {
                let body: serde_json::Value = issued.json().await.unwrap();
                let (_, claims) = jwt_parts(body["access_token"].as_str().unwrap());
                if claims["exp"].as_i64().unwrap() <= claims["iat"].as_i64().unwrap() {
                    wrong.push(format!("the access token is born expired: {claims}"));
                }
            }
            Ok(_) => {}
            Err(e) => wrong.push(format!("the token endpoint panicked and dropped the connection: {e}")),
        }
    }
    assert!(wrong.is_empty(), "{wrong:#?}");
    assert_eq!(status, 400, "a lifetime beyond any timestamp is refused");
}

/// Finding 1c (finding 1 where anyone reaches it): the validation behind the console's client
/// form is the one behind open dynamic registration, so an anonymous caller's registration
/// with a NUL in a redirect URI is a 500 (and a "server error" logged) on PostgreSQL, not the
/// RFC 7591 `invalid_redirect_uri` / `invalid_client_metadata` 400.
#[tokio::test]
async fn an_open_registration_with_a_nul_in_a_redirect_uri_is_a_400_not_a_server_error() {
    let dirs = tempfile::tempdir().unwrap();
    let config = tessera::Config {
        registration: tessera::config::RegistrationPolicy {
            mode: tessera::config::RegistrationMode::Open,
            limit_per_address: tessera::rate_limit::Rate::OFF,
            ..tessera::config::RegistrationPolicy::default()
        },
        ..test_config(&dirs)
    };
    let app = spawn_app_with(config, dirs).await;
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

/// Finding 4 (the last operator can lock everyone out of the console): nothing stops the only
/// operator from disabling or deleting their own account (the confirmation only warns "This is
/// your own account"); afterwards nobody can reach `/admin/`, and on the default sled store the
/// CLI that gives the role back refuses to run while the server holds the data, so restoring
/// access means stopping the server (or holding an admin API client). The core should refuse
/// to disable, delete (or demote) the last enabled operator.
#[tokio::test]
async fn the_last_operator_cannot_disable_or_delete_their_own_account() {
    let app = spawn_app().await;
    let operator = operator_browser(&app).await;
    let me = app.store.get_user_by_name(OPERATOR).await.unwrap().unwrap().user_id;
    for action in ["disable", "delete"] {
        let token = csrf(&operator).await;
        let path = format!("/admin/users/{me}/{action}");
        let response = try_post(&operator, &path, &[("csrf_token", token.as_str()), ("confirm", "yes")])
            .await
            .unwrap();
        let status = response.status();
        let user = app.store.get_user(&me).await.unwrap();
        assert!(
            user.as_ref().is_some_and(|u| u.operator && !u.disabled),
            "{action}: the only operator's account is kept ({status}); now: {:?}",
            user.map(|u| (u.operator, u.disabled))
        );
    }
    let console = try_get(&operator, "/admin/").await.unwrap();
    assert_eq!(console.status(), 200, "the last operator still reaches the console");
}

/// Finding 1d (finding 1 for every signed-in user): the applications pages share the
/// validation, so any user registering an app with a NUL in a redirect URI gets a 500 on
/// PostgreSQL (on sled the app is stored with the NUL in its redirect URI).
#[tokio::test]
async fn a_user_registering_an_app_with_a_nul_in_a_redirect_uri_gets_a_400() {
    let app = spawn_app().await;
    let user = browser(&app);
    user.log_in("/o/login/", USERNAME, PASSWORD).await;
    let token = csrf(&user).await;
    let form = [
        ("csrf_token", token.as_str()),
        ("name", "NUL app"),
        ("client_type", "public"),
        ("grant_authorization_code", "on"),
        ("scope_openid", "on"),
        ("redirect_uris", "https://app.example/cb\u{0}"),
    ];
    let response = try_post(&user, "/o/applications/register/", &form).await.unwrap();
    let status = response.status();
    let html = response.text().await.unwrap();
    assert_eq!(status, 400, "{}", error_line(&html));
}
