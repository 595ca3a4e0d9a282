//! The built-in test consumer at /o/playground/, over HTTP.

use crate::helpers::*;

fn between<'a>(html: &'a str, start: &str, end: &str) -> Option<&'a str> {
    let from = html.find(start)? + start.len();
    Some(&html[from..from + html[from..].find(end)?])
}

/// A server with the playground on, and the test user logged in.
async fn playground_app() -> TestApp {
    let dirs = tempfile::tempdir().unwrap();
    let app = spawn_app_with(
        tessera::Config {
            playground: true,
            ..test_config(&dirs)
        },
        dirs,
    )
    .await;
    assert_eq!(app.log_in("/o/login/", USERNAME, PASSWORD).await.status(), 303);
    app
}

fn unescape(html: &str) -> String {
    html.replace("&amp;", "&")
        .replace("&#x2f;", "/")
        .replace("&quot;", "\"")
}

#[tokio::test]
async fn the_playground_is_off_unless_enabled() {
    let app = spawn_app().await;
    app.log_in("/o/login/", USERNAME, PASSWORD).await;
    assert_eq!(
        app.http.get(app.url("/o/playground/")).send().await.unwrap().status(),
        404
    );
}

#[tokio::test]
async fn the_playground_walks_the_code_flow_refreshes_and_calls_an_api() {
    let app = playground_app().await;
    let user = app.provider.store.get_user_by_name(USERNAME).unwrap().unwrap();
    let (client, secret) = app
        .provider
        .register_client(tessera::oauth::client::NewClient {
            name: "Tried in the playground".into(),
            client_type: tessera::store::ClientType::Confidential,
            grant_types: vec![
                tessera::store::GrantType::AuthorizationCode,
                tessera::store::GrantType::RefreshToken,
            ],
            redirect_uris: vec![format!("{}/o/playground/callback/", app.issuer)],
            scope: "read".into(),
            resources: vec![],
            access_token_ttl: None,
            refresh_token_ttl: None,
            skip_consent: false,
            owner_user_id: Some(user.user_id),
            post_logout_redirect_uris: vec![],
            id_token_signed_response_alg: None,
            admin: false,
        })
        .unwrap();

    let page = app.get_text("/o/playground/").await;
    assert!(page.contains("Tried in the playground"), "your apps can be picked");
    let csrf = hidden_input(&page, "csrf_token").unwrap();
    let secret = secret.unwrap();
    let start = [
        ("csrf_token", csrf.as_str()),
        ("action", "start"),
        ("client_id", &client.client_id),
        ("client_secret", &secret),
        ("scope", "read"),
    ];
    assert_eq!(
        app.http
            .post(app.url("/o/playground/"))
            .form(&start)
            .send()
            .await
            .unwrap()
            .status(),
        303
    );

    let page = app.get_text("/o/playground/").await;
    let link = unescape(between(&page, "id=\"authorize-link\" href=\"", "\"").expect("an authorization link"));
    assert!(link.contains("code_challenge_method=S256") && link.contains("state="));
    let consent = app.http.get(&link).send().await.unwrap().text().await.unwrap();
    let csrf_consent = hidden_input(&consent, "csrf_token").unwrap();
    let decision = app
        .http
        .post(&link)
        .form(&[("csrf_token", csrf_consent.as_str()), ("decision", "allow")])
        .send()
        .await
        .unwrap();
    let callback = location(&decision);
    assert!(callback.starts_with(&format!("{}/o/playground/callback/", app.issuer)));
    assert_eq!(app.http.get(&callback).send().await.unwrap().status(), 303);

    let page = app.get_text("/o/playground/").await;
    let access = between(&page, "<code id=\"access-token\">", "<")
        .expect("the access token is shown")
        .to_string();
    assert!(app.verify_with_jwks(&access).await.is_some());
    let claims = unescape(between(&page, "<pre id=\"claims\">", "</pre>").unwrap());
    assert!(claims.contains(&client.client_id), "decoded claims are shown: {claims}");
    let refresh = between(&page, "<code id=\"refresh-token\">", "<").unwrap().to_string();

    let csrf = hidden_input(&page, "csrf_token").unwrap();
    app.http
        .post(app.url("/o/playground/"))
        .form(&[("csrf_token", csrf.as_str()), ("action", "refresh")])
        .send()
        .await
        .unwrap();
    let page = app.get_text("/o/playground/").await;
    let refreshed = between(&page, "<code id=\"refresh-token\">", "<").unwrap();
    assert_ne!(refreshed, refresh, "refreshing rotates the refresh token");

    let api = app.url("/healthz");
    let call = [
        ("csrf_token", csrf.as_str()),
        ("action", "call"),
        ("api_url", api.as_str()),
    ];
    app.http
        .post(app.url("/o/playground/"))
        .form(&call)
        .send()
        .await
        .unwrap();
    let page = app.get_text("/o/playground/").await;
    assert_eq!(between(&page, "<strong id=\"api-status\">", "<"), Some("200"));
    assert!(unescape(between(&page, "<pre id=\"api-body\">", "</pre>").unwrap()).contains("\"status\":\"ok\""));
}

#[tokio::test]
async fn the_playground_requires_login_and_csrf() {
    let dirs = tempfile::tempdir().unwrap();
    let app = spawn_app_with(
        tessera::Config {
            playground: true,
            ..test_config(&dirs)
        },
        dirs,
    )
    .await;
    let anonymous = app.http.get(app.url("/o/playground/")).send().await.unwrap();
    assert_eq!(anonymous.status(), 302);
    assert!(location(&anonymous).starts_with("/o/login/?next="));
    app.log_in("/o/login/", USERNAME, PASSWORD).await;
    let forged = app
        .http
        .post(app.url("/o/playground/"))
        .form(&[("action", "start"), ("client_id", "x")])
        .send()
        .await
        .unwrap();
    assert_eq!(forged.status(), 403);
}

#[tokio::test]
async fn a_callback_with_a_foreign_state_is_refused() {
    let app = playground_app().await;
    let forged = format!("/o/playground/callback/?code=x&state=forged&iss={}", app.issuer);
    assert_eq!(app.http.get(app.url(&forged)).send().await.unwrap().status(), 303);
    let page = app.get_text("/o/playground/").await;
    assert!(page.contains("state does not match"));
    assert!(!page.contains("id=\"access-token\""));
}
