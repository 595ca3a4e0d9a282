//! The device authorization grant (RFC 8628) over HTTP: the device authorization endpoint,
//! the verification page at /o/device/ (login, code, confirmation), and polling the token
//! endpoint through every answer RFC 8628 §3.5 defines.

use std::time::Duration;
use tessera::oauth::audit::Caller;

use serde_json::Value;
use tessera::oauth::client::NewClient;
use tessera::store::{ClientType, GrantType};
use tessera::Config;

use crate::helpers::*;

pub const DEVICE_GRANT: &str = "urn:ietf:params:oauth:grant-type:device_code";

/// A server whose devices may poll every second (the default is 5), with this config change.
async fn spawn(change: impl FnOnce(&mut Config)) -> TestApp {
    let dirs = tempfile::tempdir().unwrap();
    let mut config = test_config(&dirs);
    config.device_code_interval = Duration::from_secs(1);
    change(&mut config);
    spawn_app_with(config, dirs).await
}

/// Registers a device app (with the refresh token grant too) of this type.
pub async fn device_client(app: &TestApp, client_type: ClientType) -> TestClient {
    let (client, secret) = app
        .provider
        .register_client(
            &Caller::system(),
            NewClient {
                scope: "openid profile read".into(),
                resources: vec![RESOURCE.into()],
                ..client_settings(
                    "Living Room TV",
                    client_type,
                    vec![GrantType::DeviceCode, GrantType::RefreshToken],
                )
            },
        )
        .await
        .unwrap();
    TestClient {
        id: client.client_id,
        secret,
    }
}

/// POST /o/device_authorization/ as `client` (HTTP Basic, or `client_id` for a public one).
async fn device_authorization(app: &TestApp, client: &TestClient, form: &[(&str, &str)]) -> reqwest::Response {
    let mut request = app.http.post(app.url("/o/device_authorization/"));
    let mut form = form.to_vec();
    match &client.secret {
        Some(secret) => request = request.basic_auth(&client.id, Some(secret)),
        None => form.push(("client_id", &client.id)),
    }
    request.form(&form).send().await.unwrap()
}

/// Starts a device request for `scope`; returns the response body.
pub async fn start(app: &TestApp, client: &TestClient, scope: &str) -> Value {
    let response = device_authorization(app, client, &[("scope", scope)]).await;
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["cache-control"], "no-store");
    response.json().await.unwrap()
}

/// One poll of the token endpoint.
async fn poll(app: &TestApp, client: &TestClient, device_code: &str) -> reqwest::Response {
    app.token(client, &[("grant_type", DEVICE_GRANT), ("device_code", device_code)])
        .await
}

/// The error code of a 400 token response.
async fn poll_error(app: &TestApp, client: &TestClient, device_code: &str) -> String {
    let response = poll(app, client, device_code).await;
    assert_eq!(response.status(), 400);
    let body: Value = response.json().await.unwrap();
    body["error"].as_str().unwrap().to_string()
}

/// Logs the cookie-keeping client in (through the login page, coming back to /o/device/).
pub async fn log_in(app: &TestApp) {
    let login = app.log_in("/o/login/?next=%2Fo%2Fdevice%2F", USERNAME, PASSWORD).await;
    assert_eq!(login.status(), 303);
    assert_eq!(location(&login), "/o/device/");
}

/// The CSRF token of the code form.
async fn form_csrf(app: &TestApp) -> String {
    let html = app.get_text("/o/device/").await;
    hidden_input(&html, "csrf_token").expect("the code form has a CSRF token")
}

/// POSTs the code form (and a decision, if any) with the page's CSRF token.
pub async fn submit(app: &TestApp, fields: &[(&str, &str)]) -> reqwest::Response {
    let csrf = form_csrf(app).await;
    let mut form = vec![("csrf_token", csrf.as_str())];
    form.extend_from_slice(fields);
    app.http.post(app.url("/o/device/")).form(&form).send().await.unwrap()
}

/// A logged-in user enters the code and answers `decision`.
pub async fn answer(app: &TestApp, user_code: &str, decision: &str) {
    let confirmation = submit(app, &[("user_code", user_code)]).await;
    assert_eq!(confirmation.status(), 200);
    let done = submit(app, &[("user_code", user_code), ("decision", decision)]).await;
    assert_eq!(done.status(), 200, "{}", done.text().await.unwrap());
}

#[tokio::test]
async fn the_whole_flow_over_http_gets_tokens_once_the_user_approves() {
    let app = spawn(|_| {}).await;
    let tv = device_client(&app, ClientType::Confidential).await;
    let started = start(&app, &tv, "openid read").await;
    // RFC 8628 §3.2.
    let user_code = started["user_code"].as_str().unwrap();
    assert!(
        user_code.len() == 9
            && user_code.as_bytes()[4] == b'-'
            && user_code
                .replace('-', "")
                .bytes()
                .all(|b| b"BCDFGHJKLMNPQRSTVWXZ".contains(&b)),
        "{user_code}"
    );
    let device_code = started["device_code"].as_str().unwrap();
    assert!(device_code.len() >= 43, "at least 256 bits");
    assert_eq!(started["verification_uri"], format!("{}/o/device/", app.issuer));
    assert_eq!(
        started["verification_uri_complete"],
        format!("{}/o/device/?user_code={user_code}", app.issuer)
    );
    assert_eq!(
        (started["expires_in"].as_u64(), started["interval"].as_u64()),
        (Some(600), Some(1))
    );
    assert_eq!(poll_error(&app, &tv, device_code).await, "authorization_pending");

    // The user opens verification_uri_complete: a login first, then back with the code.
    let complete = format!("/o/device/?user_code={user_code}");
    let first = app.http.get(app.url(&complete)).send().await.unwrap();
    assert_eq!(first.status(), 302);
    let to_login = location(&first);
    assert!(to_login.starts_with("/o/login/?next="), "{to_login}");
    let login = app.log_in(&to_login, USERNAME, PASSWORD).await;
    assert_eq!(login.status(), 303);
    assert_eq!(location(&login), complete, "back to the page, code and all");
    let form = app.get_text(&complete).await;
    assert!(
        form.contains(&format!("value=\"{user_code}\"")),
        "the code is filled in"
    );

    let confirmation = submit(&app, &[("user_code", user_code)]).await;
    assert_eq!(confirmation.status(), 200);
    assert_eq!(confirmation.headers()["x-frame-options"], "DENY");
    let html = confirmation.text().await.unwrap();
    assert!(html.contains("Living Room TV") && html.contains("device"), "{html}");
    assert!(html.contains("Read your data"), "scopes are described: {html}");
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert_eq!(
        poll_error(&app, &tv, device_code).await,
        "authorization_pending",
        "seeing the confirmation approves nothing (RFC 8628 §5.4)"
    );
    let done = submit(&app, &[("user_code", user_code), ("decision", "allow")]).await;
    assert_eq!(done.status(), 200);
    assert!(done.text().await.unwrap().contains("return to it"));

    tokio::time::sleep(Duration::from_millis(1100)).await;
    let tokens = poll(&app, &tv, device_code).await;
    assert_eq!(tokens.status(), 200);
    let tokens: Value = tokens.json().await.unwrap();
    assert_eq!(tokens["scope"], "openid read");
    let claims = app
        .verify_with_jwks(tokens["access_token"].as_str().unwrap())
        .await
        .unwrap();
    assert_eq!(claims["client_id"], tv.id.as_str());
    let (_, id_token) = jwt_parts(tokens["id_token"].as_str().unwrap());
    assert_eq!(
        (id_token["aud"].as_str(), id_token["sub"] == claims["sub"]),
        (Some(tv.id.as_str()), true)
    );
    let refreshed = app
        .token(
            &tv,
            &[
                ("grant_type", "refresh_token"),
                ("refresh_token", tokens["refresh_token"].as_str().unwrap()),
            ],
        )
        .await;
    assert_eq!(refreshed.status(), 200, "the refresh token works");
    assert_eq!(
        poll_error(&app, &tv, device_code).await,
        "invalid_grant",
        "a device code is exchanged once"
    );

    // The grant is listed with the user's authorized apps, and revoking it ends the tokens.
    let apps = app.get_text("/o/authorized_tokens/").await;
    assert!(apps.contains("Living Room TV"), "{apps}");
    assert!(app.introspect(tokens["access_token"].as_str().unwrap()).await["active"] == true);
    app.provider
        .withdraw_consent(&Caller::system(), claims["sub"].as_str().unwrap(), &tv.id)
        .await
        .unwrap();
    assert_eq!(
        app.introspect(tokens["access_token"].as_str().unwrap()).await["active"],
        false
    );
}

#[tokio::test]
async fn polling_too_fast_is_slow_down_and_the_interval_grows_by_5_seconds() {
    let app = spawn(|_| {}).await;
    let tv = device_client(&app, ClientType::Public).await;
    let started = start(&app, &tv, "read").await;
    let device_code = started["device_code"].as_str().unwrap();
    assert_eq!(poll_error(&app, &tv, device_code).await, "authorization_pending");
    assert_eq!(poll_error(&app, &tv, device_code).await, "slow_down");
    // RFC 8628 §3.5: the interval is now 1 + 5 seconds, for every later poll: waiting out
    // the original second is still too soon.
    tokio::time::sleep(Duration::from_millis(1300)).await;
    let response = poll(&app, &tv, device_code).await;
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"], "slow_down");
    assert!(
        body["error_description"].as_str().unwrap().contains("11 seconds"),
        "grown twice: {body}"
    );
}

#[tokio::test]
async fn a_denied_request_answers_access_denied() {
    let app = spawn(|_| {}).await;
    let tv = device_client(&app, ClientType::Confidential).await;
    let started = start(&app, &tv, "read").await;
    log_in(&app).await;
    answer(&app, started["user_code"].as_str().unwrap(), "deny").await;
    assert_eq!(
        poll_error(&app, &tv, started["device_code"].as_str().unwrap()).await,
        "access_denied"
    );
    let again = submit(&app, &[("user_code", started["user_code"].as_str().unwrap())]).await;
    assert_eq!(again.status(), 400);
    assert!(again.text().await.unwrap().contains("already been used"));
}

/// The approval writes the grant; its refresh family comes with the device's next poll. A purge
/// in between keeps the grant however short access tokens live: the device may collect it
/// for as long as its code lives.
#[tokio::test]
async fn a_purge_between_the_approval_and_the_poll_keeps_the_grant() {
    let app = spawn(|c| c.access_token_ttl = Duration::from_secs(1)).await;
    let tv = device_client(&app, ClientType::Confidential).await;
    let started = start(&app, &tv, "read").await;
    log_in(&app).await;
    answer(&app, started["user_code"].as_str().unwrap(), "allow").await;
    // Past every access token's lifetime, and the second it is counted in.
    tokio::time::sleep(Duration::from_millis(2100)).await;
    app.provider.purge_expired().await.unwrap();
    let tokens = poll(&app, &tv, started["device_code"].as_str().unwrap()).await;
    assert_eq!(tokens.status(), 200);
    let tokens: Value = tokens.json().await.unwrap();
    assert!(tokens["refresh_token"].is_string(), "{tokens}");
}

/// A device app with no refresh token grant: its grant never has a refresh family, so only
/// the purge's window for unclaimed grants keeps it while its access token lives.
#[tokio::test]
async fn a_late_poll_without_a_refresh_token_keeps_its_grant_while_the_token_lives() {
    let app = spawn(|c| {
        c.access_token_ttl = Duration::from_secs(3);
        c.device_code_ttl = Duration::from_secs(4);
    })
    .await;
    let (client, secret) = app
        .provider
        .register_client(
            &Caller::system(),
            NewClient {
                scope: "read".into(),
                resources: vec![RESOURCE.into()],
                ..client_settings("Thermostat", ClientType::Confidential, vec![GrantType::DeviceCode])
            },
        )
        .await
        .unwrap();
    let thermostat = TestClient {
        id: client.client_id,
        secret,
    };
    let started = start(&app, &thermostat, "read").await;
    log_in(&app).await;
    answer(&app, started["user_code"].as_str().unwrap(), "allow").await;
    let approved = std::time::Instant::now();
    // Collected late in the device code's life: the token lives 3 s from here.
    tokio::time::sleep(Duration::from_millis(2800)).await;
    let tokens = poll(&app, &thermostat, started["device_code"].as_str().unwrap()).await;
    assert_eq!(tokens.status(), 200);
    let tokens: Value = tokens.json().await.unwrap();
    assert!(tokens.get("refresh_token").is_none(), "{tokens}");
    // Past the device code's lifetime and the token's since the approval, not since the poll.
    tokio::time::sleep(Duration::from_millis(4100).saturating_sub(approved.elapsed())).await;
    app.provider.purge_expired().await.unwrap();
    let access = tokens["access_token"].as_str().unwrap();
    assert_eq!(
        app.introspect(access).await["active"],
        true,
        "the grant was purged under its token"
    );
}

#[tokio::test]
async fn an_expired_code_answers_expired_token_and_the_page_says_so() {
    let app = spawn(|c| c.device_code_ttl = Duration::from_secs(1)).await;
    let tv = device_client(&app, ClientType::Confidential).await;
    let started = start(&app, &tv, "read").await;
    assert_eq!(started["expires_in"], 1);
    log_in(&app).await;
    tokio::time::sleep(Duration::from_millis(2100)).await;
    assert_eq!(
        poll_error(&app, &tv, started["device_code"].as_str().unwrap()).await,
        "expired_token"
    );
    let page = submit(&app, &[("user_code", started["user_code"].as_str().unwrap())]).await;
    assert_eq!(page.status(), 400);
    assert!(page.text().await.unwrap().contains("expired"));
}

#[tokio::test]
async fn unknown_missing_and_other_clients_device_codes_are_refused() {
    let app = spawn(|_| {}).await;
    let tv = device_client(&app, ClientType::Confidential).await;
    let other = device_client(&app, ClientType::Confidential).await;
    let started = start(&app, &tv, "read").await;
    let device_code = started["device_code"].as_str().unwrap();
    assert_eq!(poll_error(&app, &tv, "not-a-device-code").await, "invalid_grant");
    assert_eq!(poll_error(&app, &other, device_code).await, "invalid_grant");
    let missing = app.token(&tv, &[("grant_type", DEVICE_GRANT)]).await;
    assert_eq!(missing.status(), 400);
    assert_eq!(missing.json::<Value>().await.unwrap()["error"], "invalid_request");
    // The other client's attempt neither spent nor paced the code.
    assert_eq!(poll_error(&app, &tv, device_code).await, "authorization_pending");
}

#[tokio::test]
async fn fifty_parallel_polls_redeem_an_approved_code_once() {
    let app = spawn(|_| {}).await;
    let tv = device_client(&app, ClientType::Confidential).await;
    let started = start(&app, &tv, "read").await;
    log_in(&app).await;
    answer(&app, started["user_code"].as_str().unwrap(), "allow").await;
    let device_code = started["device_code"].as_str().unwrap().to_string();
    let polls: Vec<_> = (0..50)
        .map(|_| {
            let (remote, tv, device_code) = ((*app).clone(), tv.clone(), device_code.clone());
            tokio::spawn(async move {
                remote
                    .token(&tv, &[("grant_type", DEVICE_GRANT), ("device_code", &device_code)])
                    .await
                    .status()
                    .as_u16()
            })
        })
        .collect();
    let mut statuses = Vec::new();
    for poll in polls {
        statuses.push(poll.await.unwrap());
    }
    assert_eq!(statuses.iter().filter(|s| **s == 200).count(), 1, "{statuses:?}");
    assert!(statuses.iter().all(|s| *s == 200 || *s == 400), "{statuses:?}");
}

#[tokio::test]
async fn guessing_user_codes_is_throttled_per_user() {
    let app = spawn(|c| c.login_throttle.max_failures = 3).await;
    let tv = device_client(&app, ClientType::Confidential).await;
    let started = start(&app, &tv, "read").await;
    log_in(&app).await;
    // The allowed failures, and the one that starts the lockout.
    for guess in ["BCDF-GHJK", "BBBB-BBBB", "ZZZZ-ZZZZ", "not a code"] {
        let wrong = submit(&app, &[("user_code", guess)]).await;
        assert_eq!(wrong.status(), 400);
        assert!(wrong.text().await.unwrap().contains("not valid"));
    }
    let locked = submit(&app, &[("user_code", "XXXX-XXXX")]).await;
    assert_eq!(locked.status(), 429);
    assert!(
        locked.headers()["retry-after"]
            .to_str()
            .unwrap()
            .parse::<u64>()
            .unwrap()
            >= 1
    );
    assert!(locked.text().await.unwrap().contains("too many wrong codes"));
    let right = submit(&app, &[("user_code", started["user_code"].as_str().unwrap())]).await;
    assert_eq!(
        right.status(),
        429,
        "while locked, even the right code is not looked up"
    );
}

#[tokio::test]
async fn both_posts_refuse_a_missing_or_foreign_csrf_token() {
    let app = spawn(|_| {}).await;
    let tv = device_client(&app, ClientType::Confidential).await;
    let started = start(&app, &tv, "read").await;
    let user_code = started["user_code"].as_str().unwrap();
    log_in(&app).await;
    let post = |form: Vec<(&'static str, String)>| {
        let app = &app;
        async move { app.http.post(app.url("/o/device/")).form(&form).send().await.unwrap() }
    };
    let without = post(vec![("user_code", user_code.to_string())]).await;
    assert_eq!(without.status(), 403);
    let foreign = post(vec![
        ("csrf_token", "forged".into()),
        ("user_code", user_code.to_string()),
        ("decision", "allow".into()),
    ])
    .await;
    assert_eq!(foreign.status(), 403);
    let no_token_decision = post(vec![("user_code", user_code.to_string()), ("decision", "allow".into())]).await;
    assert_eq!(no_token_decision.status(), 403);
    assert_eq!(
        poll_error(&app, &tv, started["device_code"].as_str().unwrap()).await,
        "authorization_pending",
        "nothing was approved"
    );
}

#[tokio::test]
async fn an_anonymous_visitor_is_sent_to_log_in_and_nowhere_else() {
    let app = spawn(|_| {}).await;
    let get = app
        .http
        .get(app.url("/o/device/?user_code=BCDF-GHJK"))
        .send()
        .await
        .unwrap();
    assert_eq!(get.status(), 302);
    assert_eq!(
        location(&get),
        "/o/login/?next=%2Fo%2Fdevice%2F%3Fuser%5Fcode%3DBCDF%2DGHJK"
    );
    let post = app
        .http
        .post(app.url("/o/device/"))
        .form(&[("user_code", "BCDF-GHJK"), ("decision", "allow")])
        .send()
        .await
        .unwrap();
    assert_eq!(post.status(), 303);
    assert!(location(&post).starts_with("/o/login/?next="));
    // The login page's open-redirect rules still hold on the way back.
    let login = app
        .log_in("/o/login/?next=%2F%2Fevil.example%2F", USERNAME, PASSWORD)
        .await;
    assert_eq!(location(&login), "/");
}

#[tokio::test]
async fn a_client_without_the_device_grant_is_refused() {
    let app = spawn(|_| {}).await;
    // The seeded clients have the code, refresh and client_credentials grants only.
    let response = device_authorization(&app, &app.client, &[("scope", "read")]).await;
    assert_eq!(response.status(), 400);
    assert_eq!(response.json::<Value>().await.unwrap()["error"], "unauthorized_client");
    let tv = device_client(&app, ClientType::Confidential).await;
    let started = start(&app, &tv, "read").await;
    let polled = poll(&app, &app.client, started["device_code"].as_str().unwrap()).await;
    assert_eq!(polled.json::<Value>().await.unwrap()["error"], "unauthorized_client");
}

#[tokio::test]
async fn the_device_endpoint_authenticates_clients_and_checks_scope_and_resource() {
    let app = spawn(|_| {}).await;
    let tv = device_client(&app, ClientType::Confidential).await;
    let wrong = TestClient {
        id: tv.id.clone(),
        secret: Some("wrong".into()),
    };
    let response = device_authorization(&app, &wrong, &[]).await;
    assert_eq!(response.status(), 401);
    assert!(response.headers().contains_key("www-authenticate"));
    let anonymous = TestClient {
        id: tv.id.clone(),
        secret: None,
    };
    assert_eq!(device_authorization(&app, &anonymous, &[]).await.status(), 401);
    let public = device_client(&app, ClientType::Public).await;
    assert_eq!(start(&app, &public, "read").await["interval"], 1);
    for (form, error) in [
        (vec![("scope", "write")], "invalid_scope"),
        (vec![("scope", "tessera:admin")], "invalid_scope"),
        (vec![("resource", "https://elsewhere.example")], "invalid_target"),
    ] {
        let response = device_authorization(&app, &tv, &form).await;
        assert_eq!(response.status(), 400, "{form:?}");
        assert_eq!(response.json::<Value>().await.unwrap()["error"], error, "{form:?}");
    }
    let with_resource = device_authorization(&app, &tv, &[("resource", RESOURCE)]).await;
    assert_eq!(with_resource.status(), 200);
    let json = app
        .http
        .post(app.url("/o/device_authorization/"))
        .json(&serde_json::json!({"client_id": public.id}))
        .send()
        .await
        .unwrap();
    assert_eq!(json.status(), 400, "a form body only");
    assert_eq!(json.json::<Value>().await.unwrap()["error"], "invalid_request");
}

#[tokio::test]
async fn discovery_advertises_the_device_endpoint_and_grant() {
    let app = spawn(|_| {}).await;
    let metadata = app.get_json("/.well-known/oauth-authorization-server").await;
    assert_eq!(
        metadata["device_authorization_endpoint"],
        format!("{}/o/device_authorization/", app.issuer)
    );
    assert!(metadata["grant_types_supported"]
        .as_array()
        .unwrap()
        .contains(&Value::from(DEVICE_GRANT)));
}

#[tokio::test]
async fn dynamic_registration_accepts_the_device_grant_without_redirect_uris() {
    let app = spawn(|c| c.registration.mode = tessera::config::RegistrationMode::Open).await;
    let response = app
        .http
        .post(app.url("/o/register/"))
        .json(&serde_json::json!({
            "client_name": "CLI",
            "token_endpoint_auth_method": "none",
            "grant_types": [DEVICE_GRANT],
            "response_types": [],
            "scope": "read",
        }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 201);
    let registered: Value = response.json().await.unwrap();
    assert_eq!(registered["grant_types"], serde_json::json!([DEVICE_GRANT]));
    let cli = TestClient {
        id: registered["client_id"].as_str().unwrap().into(),
        secret: None,
    };
    assert_eq!(start(&app, &cli, "read").await["interval"], 1);
}

#[tokio::test]
async fn the_applications_pages_and_the_admin_api_register_device_apps_without_redirect_uris() {
    let app = spawn(|_| {}).await;
    // A user, in the applications pages.
    log_in(&app).await;
    let page = app.get_text("/o/applications/register/").await;
    assert!(page.contains("name=\"grant_device_code\""), "the form offers the grant");
    let csrf = hidden_input(&page, "csrf_token").unwrap();
    let registered = app
        .http
        .post(app.url("/o/applications/register/"))
        .form(&[
            ("csrf_token", csrf.as_str()),
            ("name", "My CLI"),
            ("client_type", "public"),
            ("grant_device_code", "on"),
            ("scope_read", "on"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(registered.status(), 200);
    let html = registered.text().await.unwrap();
    let marker = "<code id=\"client-id\">";
    let at = html.find(marker).expect("the new app's id is shown") + marker.len();
    let cli = TestClient {
        id: html[at..at + html[at..].find('<').unwrap()].to_string(),
        secret: None,
    };
    assert!(html.contains(DEVICE_GRANT), "{html}");
    assert_eq!(start(&app, &cli, "read").await["interval"], 1);

    // An operator, through the admin API.
    let admin = app.register_admin_client(None).await;
    let token: Value = app
        .token(
            &admin,
            &[("grant_type", "client_credentials"), ("scope", "tessera:admin")],
        )
        .await
        .json()
        .await
        .unwrap();
    let created = app
        .http
        .post(app.url("/api/v1/clients"))
        .bearer_auth(token["access_token"].as_str().unwrap())
        .json(&serde_json::json!({
            "name": "Console",
            "client_type": "confidential",
            "grant_types": [DEVICE_GRANT],
            "scope": "read",
        }))
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), 201);
    let created: Value = created.json().await.unwrap();
    assert_eq!(created["client"]["grant_types"], serde_json::json!([DEVICE_GRANT]));
    let console = TestClient {
        id: created["client"]["client_id"].as_str().unwrap().into(),
        secret: created["client_secret"].as_str().map(String::from),
    };
    assert_eq!(start(&app, &console, "read").await["interval"], 1);
}

#[tokio::test]
async fn device_codes_and_user_codes_are_stored_only_as_hashes() {
    let app = spawn(|_| {}).await;
    let tv = device_client(&app, ClientType::Confidential).await;
    let started = start(&app, &tv, "read").await;
    let device_code = started["device_code"].as_str().unwrap().to_string();
    let user_code = started["user_code"].as_str().unwrap().to_string();
    log_in(&app).await;
    answer(&app, &user_code, "allow").await;
    // Everything above was made durable before its response.
    let contents = match &app.provider.config.database_url {
        Some(url) => vec![database_text(url).await],
        None => file_contents(&app.data_dir),
    };

    assert!(contents.iter().map(Vec::len).sum::<usize>() > 0);
    for secret in [device_code, user_code.clone(), user_code.replace('-', "")] {
        let found = contents
            .iter()
            .any(|c| c.windows(secret.len()).any(|w| w == secret.as_bytes()));
        assert!(!found, "a plaintext code was found in the store");
    }
}

/// The real binary with trace logging runs the device flow (approve, poll, refresh): neither
/// code, nor a token, nor the password appears in any log line (the user code travels in the
/// query of `verification_uri_complete`, which is never logged).
#[tokio::test]
async fn no_device_code_user_code_or_token_reaches_the_logs() {
    let dir = tempfile::tempdir().unwrap();
    let cli = |args: &[&str], stdin: &str| run_tessera_traced(dir.path(), args, stdin);
    let (out, mut logs) = cli(
        &[
            "app",
            "create",
            "--name",
            "TV",
            "--client-type",
            "confidential",
            "--grant-type",
            "device-code",
            "--grant-type",
            "refresh-token",
            "--scope",
            "openid read",
            "--json",
        ],
        "",
    );
    let created: Value = serde_json::from_str(&out).unwrap();
    let tv = TestClient {
        id: created["client_id"].as_str().unwrap().into(),
        secret: created["client_secret"].as_str().map(String::from),
    };
    logs += &cli(
        &["user", "create", "--username", USERNAME, "--password-stdin"],
        &format!("{PASSWORD}\n"),
    )
    .1;
    let server = ServerProcess::start(dir.path(), &[], &[("RUST_LOG", "trace")]);
    // A browser with a cookie jar, as the person approving.
    let remote = Remote::new(server.base.clone(), server.base.clone(), tv.clone(), tv.clone());
    let started: Value = remote
        .http
        .post(remote.url("/o/device_authorization/"))
        .basic_auth(&tv.id, tv.secret.as_deref())
        .form(&[("scope", "openid read")])
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let (device_code, user_code) = (
        started["device_code"].as_str().unwrap(),
        started["user_code"].as_str().unwrap(),
    );
    let complete = format!("/o/device/?user_code={user_code}");
    let to_login = location(&remote.http.get(remote.url(&complete)).send().await.unwrap());
    assert_eq!(remote.log_in(&to_login, USERNAME, PASSWORD).await.status(), 303);
    let form = remote.get_text(&complete).await;
    let csrf = hidden_input(&form, "csrf_token").unwrap();
    for decision in [None, Some("allow")] {
        let mut fields = vec![("csrf_token", csrf.as_str()), ("user_code", user_code)];
        fields.extend(decision.map(|d| ("decision", d)));
        let response = remote
            .http
            .post(remote.url("/o/device/"))
            .form(&fields)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
    }
    let tokens: Value = remote
        .token(&tv, &[("grant_type", DEVICE_GRANT), ("device_code", device_code)])
        .await
        .json()
        .await
        .unwrap();
    let refresh = tokens["refresh_token"].as_str().unwrap();
    let refreshed = remote
        .token(&tv, &[("grant_type", "refresh_token"), ("refresh_token", refresh)])
        .await;
    assert_eq!(refreshed.status(), 200);
    logs += &server.terminate();
    assert!(
        logs.contains("/o/device_authorization"),
        "the logs were captured:\n{logs}"
    );
    for (what, secret) in [
        ("device code", device_code.to_string()),
        ("user code", user_code.to_string()),
        ("user code, bare", user_code.replace('-', "")),
        ("access token", tokens["access_token"].as_str().unwrap().to_string()),
        ("refresh token", refresh.to_string()),
        ("ID token", tokens["id_token"].as_str().unwrap().to_string()),
        ("client secret", tv.secret.clone().unwrap()),
        ("password", PASSWORD.to_string()),
    ] {
        assert!(!logs.contains(&secret), "the {what} is in the logs");
    }
}

#[tokio::test]
async fn the_device_endpoint_and_page_are_limited_per_address_like_the_token_endpoint() {
    use tessera::rate_limit::Rate;
    let app = spawn(|c| {
        c.rate_limit_per_address = Rate {
            per_second: 1.0,
            burst: 3.0,
        }
    })
    .await;
    let nobody = TestClient {
        id: "nobody".into(),
        secret: Some("wrong".into()),
    };
    for _ in 0..3 {
        assert_eq!(device_authorization(&app, &nobody, &[]).await.status(), 401);
    }
    let limited = device_authorization(&app, &nobody, &[]).await;
    assert_eq!(limited.status(), 429);
    assert!(limited.headers().contains_key("retry-after"));
    let page = app
        .http
        .post(app.url("/o/device/"))
        .form(&[("user_code", "BCDF-GHJK")])
        .send()
        .await
        .unwrap();
    assert_eq!(page.status(), 429, "the verification page's POST is limited too");
}

#[tokio::test]
async fn the_user_confirms_every_request_even_for_an_app_they_approved_before() {
    let app = spawn(|_| {}).await;
    let tv = device_client(&app, ClientType::Confidential).await;
    log_in(&app).await;
    let first = start(&app, &tv, "read").await;
    answer(&app, first["user_code"].as_str().unwrap(), "allow").await;
    // RFC 8628 §5.4: a remembered consent must not approve a code someone else may have sent.
    let second = start(&app, &tv, "read").await;
    let confirmation = submit(&app, &[("user_code", second["user_code"].as_str().unwrap())]).await;
    assert_eq!(confirmation.status(), 200);
    assert!(confirmation.text().await.unwrap().contains("name=\"decision\""));
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert_eq!(
        poll_error(&app, &tv, second["device_code"].as_str().unwrap()).await,
        "authorization_pending"
    );
}

// The pre-release attack on private_key_jwt, Client ID Metadata Documents and the device
// grant: each comment tells the bug as it was found, and each test failed while it was there.

/// `/o/device_authorization/` for a public client needs nothing but its (public) client id,
/// and each call stores a device record (and syncs the store to disk) that lives for
/// `device_code_ttl` (600 s). The only limits are the generic 500/s per client and address
/// and 1,000/s per address: measured by hand, one address stored 1,000 records in 2.5 s
/// (sled grew 0.7 MB), i.e. ~240,000 live records from a single address, each also a live
/// user code that raises the odds of a guessed code. Registration is held to 20 an hour per
/// address; device authorizations should have a comparable per-address budget
/// (`Authorization::device_authorization` in `src/oauth/device.rs`).
#[tokio::test]
async fn one_address_cannot_store_device_authorizations_without_limit() {
    let app = spawn_app().await;
    let (client, _) = app
        .provider
        .register_client(
            &Caller::system(),
            NewClient {
                scope: "read".into(),
                ..client_settings("Living room TV", ClientType::Public, vec![GrantType::DeviceCode])
            },
        )
        .await
        .unwrap();
    let mut stored = 0;
    for _ in 0..300 {
        let response = app
            .http
            .post(app.url("/o/device_authorization/"))
            .form(&[("client_id", client.client_id.as_str())])
            .send()
            .await
            .unwrap();
        if response.status() == 200 {
            stored += 1;
        }
    }
    assert!(
        stored <= 100,
        "{stored} of 300 anonymous device authorizations from one address were stored"
    );
}

// The third adversarial review (issue 26, `SECURITY.md`), each finding as the attack that
// found it; each test failed on the code the review ran against.

/// Finding 12: device user codes (about 34 bits each) were indexed by their plain SHA-256, so
/// a reader of the database recovered every live code at once. Now the index is an HMAC under
/// a server secret.
#[tokio::test]
async fn device_user_codes_are_not_stored_as_plain_hashes() {
    let app = spawn_app().await;
    let client = device_client(&app, tessera::store::ClientType::Public).await;
    let started = start(&app, &client, "read").await;
    let code = tessera::oauth::device::normalize_user_code(started["user_code"].as_str().unwrap()).unwrap();
    let plain = tessera::oauth::secret_hash(&code);
    assert!(
        app.store.get_device_by_user_code(&plain).await.unwrap().is_none(),
        "the store indexes the code by its plain SHA-256"
    );
    // The code still works where the user types it.
    assert_eq!(app.log_in("/o/login/", USERNAME, PASSWORD).await.status(), 303);
    let page = app
        .http
        .get(app.url("/o/device/"))
        .query(&[("user_code", started["user_code"].as_str().unwrap())])
        .send()
        .await
        .unwrap();
    let html = page.text().await.unwrap();
    assert!(!html.contains("not valid"), "{html}");
}
