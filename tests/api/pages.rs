//! The pages a user sees outside the authorization flow: home and authorized apps.

use crate::helpers::*;
use serde_json::Value;

#[tokio::test]
async fn the_home_page_links_docs_discovery_and_jwks_and_the_users_pages() {
    let app = spawn_app().await;
    let anonymous = app.http.get(app.url("/")).send().await.unwrap();
    assert_eq!(anonymous.status(), 200);
    assert!(anonymous.headers()["content-security-policy"]
        .to_str()
        .unwrap()
        .contains("frame-ancestors 'none'"));
    let html = anonymous.text().await.unwrap();
    for link in [
        "/docs",
        "/.well-known/openid-configuration",
        "/.well-known/jwks.json",
        "/o/login/",
    ] {
        assert!(html.contains(&format!("href=\"{link}\"")), "{link}");
    }
    assert!(!html.contains("/o/authorized_tokens/"));
    app.log_in("/o/login/", USERNAME, PASSWORD).await;
    let html = app.get_text("/").await;
    assert!(
        html.contains(USERNAME)
            && html.contains("href=\"/o/authorized_tokens/\"")
            && html.contains("href=\"/o/applications/\"")
    );
}

#[tokio::test]
async fn authorized_apps_require_login_and_come_back_after_it() {
    let app = spawn_app().await;
    let response = app.http.get(app.url("/o/authorized_tokens/")).send().await.unwrap();
    assert_eq!(response.status(), 302);
    let login = location(&response);
    assert!(login.starts_with("/o/login/?next="), "{login}");
    let after = app.log_in(&login, USERNAME, PASSWORD).await;
    assert_eq!(location(&after), "/o/authorized_tokens/");
}

#[tokio::test]
async fn revoking_an_app_from_the_page_kills_its_refresh_tokens_and_forgets_consent() {
    let app = spawn_app().await;
    let tokens = app.get_tokens().await;
    let page = app.get_text("/o/authorized_tokens/").await;
    assert!(
        page.contains("Test App") && page.contains("read write"),
        "the app and its scopes are listed"
    );
    let csrf = hidden_input(&page, "csrf_token").unwrap();

    // Without the CSRF token nothing happens.
    let forged = app
        .http
        .post(app.url("/o/authorized_tokens/"))
        .form(&[("client_id", app.client.id.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(forged.status(), 403);
    assert_eq!(
        app.introspect(tokens["refresh_token"].as_str().unwrap()).await["active"],
        true
    );

    let revoked = app
        .http
        .post(app.url("/o/authorized_tokens/"))
        .form(&[("client_id", app.client.id.as_str()), ("csrf_token", csrf.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(revoked.status(), 303);
    let refresh = app.refresh(tokens["refresh_token"].as_str().unwrap()).await;
    assert_eq!(refresh.status(), 400, "the refresh token stops working at once");
    assert_eq!(refresh.json::<Value>().await.unwrap()["error"], "invalid_grant");
    assert_eq!(
        app.introspect(tokens["access_token"].as_str().unwrap()).await["active"],
        false
    );
    let page = app.get_text("/o/authorized_tokens/").await;
    assert!(!page.contains("Test App"));
    // The next authorization asks for consent again.
    assert_eq!(
        app.authorize(&app.authorize_query(&Pkce::new(), "s")).await.status(),
        200
    );
}
