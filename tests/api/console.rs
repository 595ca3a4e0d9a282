//! `/admin/`, the operator's console, over HTTP: who may see it (operators only; others get
//! 403, visitors not signed in are sent to log in), CSRF on every form, confirmation before
//! dangerous actions, the security headers, search and paging, and secrets never shown except
//! the one just made.

use crate::helpers::*;

pub const OPERATOR: &str = "olivia";
pub const OPERATOR_PASSWORD: &str = "a long operator password";

/// A user with the operator role, made in the store as the CLI would.
pub async fn make_operator(app: &TestApp, username: &str) -> String {
    let user = tessera::store::UserRecord {
        user_id: tessera::oauth::random_id(),
        username: username.into(),
        email: None,
        email_verified: false,
        password_hash: tessera::oauth::user::hash_password(OPERATOR_PASSWORD).unwrap(),
        created_at: tessera::oauth::now(),
        profile: Default::default(),
        updated_at: 0,
        session_epoch: 0,
        operator: true,
        disabled: false,
    };
    app.store.insert_user(&user).await.unwrap();
    user.user_id
}

/// Another browser, logged in as a fresh operator.
pub async fn operator_browser(app: &TestApp) -> Remote {
    make_operator(app, OPERATOR).await;
    let browser = browser(app);
    let login = browser
        .log_in("/o/login/?next=%2Fadmin%2F", OPERATOR, OPERATOR_PASSWORD)
        .await;
    assert_eq!(login.status(), 303);
    assert_eq!(location(&login), "/admin/");
    browser
}

pub async fn csrf(browser: &Remote) -> String {
    let home = browser.get_text("/").await;
    hidden_input(&home, "csrf_token").expect("a signed-in home page has a CSRF token")
}

async fn try_get(browser: &Remote, path: &str) -> reqwest::Result<reqwest::Response> {
    browser.http.get(browser.url(path)).send().await
}

async fn try_post(browser: &Remote, path: &str, form: &[(&str, &str)]) -> reqwest::Result<reqwest::Response> {
    browser.http.post(browser.url(path)).form(form).send().await
}

async fn get(browser: &Remote, path: &str) -> reqwest::Response {
    try_get(browser, path).await.unwrap()
}

async fn post(browser: &Remote, path: &str, form: &[(&str, &str)]) -> reqwest::Response {
    try_post(browser, path, form).await.unwrap()
}

/// Every console page, with real ids in it.
fn get_urls(user_id: &str, client_id: &str) -> Vec<String> {
    vec![
        "/admin/".into(),
        "/admin/clients".into(),
        "/admin/clients?q=x".into(),
        "/admin/clients/new".into(),
        format!("/admin/clients/{client_id}"),
        format!("/admin/clients/{client_id}/edit"),
        "/admin/users".into(),
        "/admin/users/new".into(),
        format!("/admin/users/{user_id}"),
        format!("/admin/grants?user={user_id}"),
        format!("/admin/grants?client={client_id}"),
        "/admin/keys".into(),
        "/admin/audit".into(),
        "/admin/audit?action=user.disable".into(),
        format!("/admin/users?q={user_id}"),
    ]
}

/// Every console form's target.
fn post_urls(user_id: &str, client_id: &str, grant_id: &str, kid: &str) -> Vec<String> {
    vec![
        "/admin/clients/new".into(),
        format!("/admin/clients/{client_id}/edit"),
        format!("/admin/clients/{client_id}/rotate-secret"),
        format!("/admin/clients/{client_id}/delete"),
        "/admin/users/new".into(),
        format!("/admin/users/{user_id}/password"),
        format!("/admin/users/{user_id}/disable"),
        format!("/admin/users/{user_id}/enable"),
        format!("/admin/users/{user_id}/delete"),
        format!("/admin/grants/{grant_id}/revoke"),
        "/admin/keys/generate".into(),
        format!("/admin/keys/{kid}/promote"),
        format!("/admin/keys/{kid}/retire"),
    ]
}

/// alice's id, the seeded client's id, a live grant of alice's and a published key.
async fn targets(app: &TestApp) -> (String, String, String, String, String) {
    let tokens = app.get_tokens().await;
    let refresh = tokens["refresh_token"].as_str().unwrap().to_string();
    let alice = app.store.get_user_by_name(USERNAME).await.unwrap().unwrap();
    let grants = app
        .store
        .grants_page(Some(&alice.user_id), None, None, 100)
        .await
        .unwrap();
    let keys = app.provider.list_keys().await.unwrap();
    let kid = keys
        .iter()
        .find(|k| k.status == tessera::keys::KeyStatus::Published)
        .expect("a published key")
        .kid
        .clone();
    (
        alice.user_id,
        app.client.id.clone(),
        grants[0].grant_id.clone(),
        kid,
        refresh,
    )
}

/// Nothing a refused POST could have done has happened.
async fn assert_nothing_changed(app: &TestApp, user_id: &str, client_id: &str, grant_id: &str, keys_before: usize) {
    let user = app
        .store
        .get_user(user_id)
        .await
        .unwrap()
        .expect("the user is still there");
    assert!(!user.disabled);
    assert!(
        app.store.get_client(client_id).await.unwrap().is_some(),
        "the client is still there"
    );
    assert!(!app.store.get_grant(grant_id).await.unwrap().unwrap().revoked);
    assert_eq!(app.provider.list_keys().await.unwrap().len(), keys_before);
    assert!(app.store.get_user_by_name("mallory").await.unwrap().is_none());
}

#[tokio::test]
async fn anonymous_visitors_are_sent_to_log_in_on_every_console_url() {
    let app = spawn_app().await;
    let (user_id, client_id, grant_id, kid, _) = targets(&app).await;
    let keys_before = app.provider.list_keys().await.unwrap().len();
    let anonymous = browser(&app);
    for path in get_urls(&user_id, &client_id) {
        let response = get(&anonymous, &path).await;
        assert_eq!(response.status(), 302, "GET {path}");
        let expected = format!(
            "/o/login/?next={}",
            percent_encoding::utf8_percent_encode(&path, percent_encoding::NON_ALPHANUMERIC)
        );
        assert_eq!(location(&response), expected, "GET {path} comes back after the login");
    }
    for path in post_urls(&user_id, &client_id, &grant_id, &kid) {
        let form = [
            ("confirm", "yes"),
            ("username", "mallory"),
            ("password", "a long password"),
        ];
        let response = post(&anonymous, &path, &form).await;
        assert_eq!(response.status(), 303, "POST {path}");
        assert!(
            location(&response).starts_with("/o/login/?next=%2Fadmin%2F"),
            "POST {path}"
        );
    }
    assert_nothing_changed(&app, &user_id, &client_id, &grant_id, keys_before).await;
    let bare = get(&anonymous, "/admin").await;
    assert_eq!((bare.status().as_u16(), location(&bare)), (301, "/admin/".to_string()));
}

#[tokio::test]
async fn a_signed_in_non_operator_gets_403_on_every_console_url() {
    let app = spawn_app().await;
    let (user_id, client_id, grant_id, kid, _) = targets(&app).await;
    let keys_before = app.provider.list_keys().await.unwrap().len();
    // app's own browser is logged in as alice, who is not an operator; her CSRF token is
    // valid, so it is the role, not the token, that refuses her.
    let token = csrf(&app).await;
    for path in get_urls(&user_id, &client_id) {
        let response = get(&app, &path).await;
        assert_eq!(response.status(), 403, "GET {path}");
        assert!(response.text().await.unwrap().contains("operator role"), "GET {path}");
    }
    for path in post_urls(&user_id, &client_id, &grant_id, &kid) {
        let form = [
            ("csrf_token", token.as_str()),
            ("confirm", "yes"),
            ("username", "mallory"),
            ("password", "a long password"),
            ("name", "Renamed"),
        ];
        let response = post(&app, &path, &form).await;
        assert_eq!(response.status(), 403, "POST {path}");
    }
    assert_nothing_changed(&app, &user_id, &client_id, &grant_id, keys_before).await;
    assert_ne!(app.store.get_client(&client_id).await.unwrap().unwrap().name, "Renamed");
    // Nor does the home page offer her the console.
    assert!(!app.get_text("/").await.contains("/admin/"));
}

#[tokio::test]
async fn a_console_post_without_or_with_a_wrong_csrf_token_is_refused_and_changes_nothing() {
    let app = spawn_app().await;
    let (user_id, client_id, grant_id, kid, _) = targets(&app).await;
    let keys_before = app.provider.list_keys().await.unwrap().len();
    let operator = operator_browser(&app).await;
    // Another session's token is as wrong as none at all.
    let other = csrf(&app).await;
    for token in [None, Some("forged"), Some(other.as_str())] {
        for path in post_urls(&user_id, &client_id, &grant_id, &kid) {
            let mut form = vec![
                ("confirm", "yes"),
                ("username", "mallory"),
                ("password", "a long password"),
                ("name", "Renamed"),
            ];
            if let Some(token) = token {
                form.push(("csrf_token", token));
            }
            let response = post(&operator, &path, &form).await;
            assert_eq!(response.status(), 403, "POST {path} with token {token:?}");
            assert!(response.text().await.unwrap().contains("CSRF"), "POST {path}");
        }
    }
    assert_nothing_changed(&app, &user_id, &client_id, &grant_id, keys_before).await;
}

#[tokio::test]
async fn an_operator_disables_a_user_after_confirming_and_their_refresh_token_fails_at_once() {
    let app = spawn_app().await;
    let (user_id, _, _, _, refresh) = targets(&app).await;
    let operator = operator_browser(&app).await;
    let token = csrf(&operator).await;
    let path = format!("/admin/users/{user_id}/disable");

    // Without confirm=yes the POST only asks.
    let asked = post(&operator, &path, &[("csrf_token", token.as_str())]).await;
    assert_eq!(asked.status(), 200);
    let html = asked.text().await.unwrap();
    assert!(html.contains("Disable this user?") && html.contains(r#"name="confirm" value="yes""#));
    assert!(!app.store.get_user(&user_id).await.unwrap().unwrap().disabled);

    let done = post(&operator, &path, &[("csrf_token", token.as_str()), ("confirm", "yes")]).await;
    assert_eq!(done.status(), 303);
    assert_eq!(location(&done), format!("/admin/users/{user_id}"));
    assert!(app.store.get_user(&user_id).await.unwrap().unwrap().disabled);
    let refreshed = app.refresh(&refresh).await;
    assert_eq!(refreshed.status(), 400);
    assert_eq!(
        refreshed.json::<serde_json::Value>().await.unwrap()["error"],
        "invalid_grant"
    );
    // Her session ended too: the console's own pages show her disabled.
    assert!(operator
        .get_text(&format!("/admin/users/{user_id}"))
        .await
        .contains(r#"<dd id="user-state">disabled</dd>"#));
    let home = get(&app, "/o/authorized_tokens/").await;
    assert_eq!(home.status(), 302, "her session is over");

    // Enabling needs no confirmation, and gives back no grant.
    let enabled = post(
        &operator,
        &format!("/admin/users/{user_id}/enable"),
        &[("csrf_token", token.as_str())],
    )
    .await;
    assert_eq!(enabled.status(), 303);
    assert!(!app.store.get_user(&user_id).await.unwrap().unwrap().disabled);
    assert_eq!(app.refresh(&refresh).await.status(), 400);
}

#[tokio::test]
async fn an_operator_revokes_one_grant_and_its_refresh_token_fails() {
    let app = spawn_app().await;
    let (user_id, _, grant_id, _, refresh) = targets(&app).await;
    let operator = operator_browser(&app).await;
    let token = csrf(&operator).await;
    let listed = operator.get_text(&format!("/admin/grants?user={USERNAME}")).await;
    assert!(
        listed.contains(&format!(r#"id="grant-{grant_id}""#)),
        "grants by username: {listed}"
    );
    let back = format!("/admin/grants?user={USERNAME}");
    let revoked = post(
        &operator,
        &format!("/admin/grants/{grant_id}/revoke"),
        &[("csrf_token", token.as_str()), ("return_to", back.as_str())],
    )
    .await;
    assert_eq!(revoked.status(), 303);
    assert_eq!(location(&revoked), back);
    assert!(app.store.get_grant(&grant_id).await.unwrap().unwrap().revoked);
    assert_eq!(app.refresh(&refresh).await.status(), 400);
    // An address off the console is not followed.
    let away = post(
        &operator,
        &format!("/admin/grants/{grant_id}/revoke"),
        &[("csrf_token", token.as_str()), ("return_to", "//evil.example/")],
    )
    .await;
    assert_eq!(location(&away), format!("/admin/users/{user_id}"));
}

#[tokio::test]
async fn every_console_page_carries_the_security_headers() {
    let app = spawn_app().await;
    let (user_id, client_id, _, _, _) = targets(&app).await;
    let operator = operator_browser(&app).await;
    for path in get_urls(&user_id, &client_id) {
        let response = get(&operator, &path).await;
        assert_eq!(response.status(), 200, "GET {path}");
        let headers = response.headers();
        let header = |name: &str| headers.get(name).map(|v| v.to_str().unwrap().to_string());
        let csp = header("content-security-policy").unwrap_or_default();
        assert!(
            csp.contains("default-src 'none'") && csp.contains("frame-ancestors 'none'"),
            "{path}: {csp}"
        );
        assert_eq!(header("x-frame-options").as_deref(), Some("DENY"), "{path}");
        assert_eq!(header("x-content-type-options").as_deref(), Some("nosniff"), "{path}");
        assert_eq!(header("referrer-policy").as_deref(), Some("no-referrer"), "{path}");
        assert_eq!(header("cache-control").as_deref(), Some("no-store"), "{path}");
        let html = response.text().await.unwrap();
        assert!(html.contains("Tessera console"), "{path} renders: {html}");
        // No external assets: everything comes from this server.
        assert!(
            !html.contains("http://") || html.contains("http://www.w3.org/2000/svg"),
            "{path}"
        );
        assert!(!html.contains("https://") || !html.contains("src=\"https://"), "{path}");
    }
    // A confirmation page is a page like any other.
    let token = csrf(&operator).await;
    let asked = post(
        &operator,
        &format!("/admin/clients/{client_id}/delete"),
        &[("csrf_token", token.as_str())],
    )
    .await;
    assert_eq!(asked.headers()["x-frame-options"], "DENY");
    // Operators find the console from the home page.
    assert!(operator.get_text("/").await.contains(r#"<a href="/admin/">"#));
}

/// The page's link onward (its `after=` cursor), unescaped.
fn next_page_link(page: &str) -> Option<String> {
    let href = page
        .split(r#"<a href=""#)
        .filter_map(|s| s.split('"').next())
        .find(|href| href.contains("after="))?;
    Some(href.replace("&#x2f;", "/").replace("&#x3d;", "=").replace("&amp;", "&"))
}

#[tokio::test]
async fn clients_and_users_can_be_searched_and_paged() {
    let app = spawn_app().await;
    let operator = operator_browser(&app).await;
    let token = csrf(&operator).await;
    for i in 0..30 {
        let name = format!("Bulk app {i:02}");
        let created = post(
            &operator,
            "/admin/clients/new",
            &[
                ("csrf_token", token.as_str()),
                ("name", name.as_str()),
                ("client_type", "confidential"),
                ("grant_client_credentials", "on"),
                ("scope_read", "on"),
            ],
        )
        .await;
        assert_eq!(created.status(), 200, "{name}");
    }
    let first = operator.get_text("/admin/clients?q=bulk+APP").await;
    assert_eq!(first.matches("Bulk app ").count(), 25, "a page holds 25");
    assert!(!first.contains(&app.client.id), "the seeded client does not match");
    let next = next_page_link(&first).expect("a next-page link");
    let second = operator.get_text(&next).await;
    assert_eq!(second.matches("Bulk app ").count(), 5);
    assert!(!second.contains("after="), "the last page has no next link");
    // The two pages together hold every match once.
    let mut names: Vec<&str> = [first.as_str(), second.as_str()]
        .iter()
        .flat_map(|p| p.match_indices("Bulk app ").map(|(i, _)| &p[i..i + 11]))
        .collect();
    names.sort();
    names.dedup();
    assert_eq!(names.len(), 30);
    // By client_id.
    let by_id = operator.get_text(&format!("/admin/clients?q={}", app.client.id)).await;
    assert!(by_id.contains(&app.client.id));
    assert_eq!(by_id.matches("Bulk app ").count(), 0);

    for name in ["carol", "carlos", "dave"] {
        let created = post(
            &operator,
            "/admin/users/new",
            &[
                ("csrf_token", token.as_str()),
                ("username", name),
                ("password", "a long password"),
                ("email", &format!("{name}@example.com")),
            ],
        )
        .await;
        assert_eq!(created.status(), 303, "{name}");
    }
    let found = operator.get_text("/admin/users?q=car").await;
    assert!(found.contains(">carol<") && found.contains(">carlos<") && !found.contains(">dave<"));
    let by_email = operator.get_text("/admin/users?q=dave%40example").await;
    assert!(by_email.contains(">dave<") && !by_email.contains(">carol<"));
    // A username that is taken is refused on the form.
    let taken = post(
        &operator,
        "/admin/users/new",
        &[
            ("csrf_token", token.as_str()),
            ("username", "carol"),
            ("password", "a long password"),
        ],
    )
    .await;
    assert_eq!(taken.status(), 400);
}

/// A search that matches little reads a bounded number of records a request (issue 29), says
/// so, and goes on from where it stopped when asked: a match past the bound is still found.
#[tokio::test]
async fn a_search_that_matches_little_stops_at_its_budget_and_goes_on_from_there() {
    let app = spawn_app().await;
    let operator = operator_browser(&app).await;
    let alice = app.store.get_user_by_name(USERNAME).await.unwrap().unwrap();
    // 2,500 users that do not match, then one that does, last in id order.
    for i in 0..2_500 {
        let filler = tessera::store::UserRecord {
            user_id: format!("filler-{i:05}"),
            username: format!("filler{i:05}"),
            email: None,
            ..alice.clone()
        };
        app.store.insert_user(&filler).await.unwrap();
    }
    let needle = tessera::store::UserRecord {
        user_id: "zz-needle".into(),
        username: "needle".into(),
        email: None,
        ..alice.clone()
    };
    app.store.insert_user(&needle).await.unwrap();
    let first = operator.get_text("/admin/users?q=needle").await;
    assert!(!first.contains(">needle<"), "not within the first 2,000 read");
    assert!(
        first.contains("so far") && first.contains(r#"id="cut-short""#),
        "{first}"
    );
    let further = next_page_link(&first).expect("a search-further link");
    assert!(first.contains("Search further"));
    let second = operator.get_text(&further).await;
    assert!(second.contains(">needle<"), "{second}");
    assert!(!second.contains(r#"id="cut-short""#) && !second.contains("after="));
}

#[tokio::test]
async fn no_secret_is_shown_except_once_when_made() {
    let app = spawn_app().await;
    let operator = operator_browser(&app).await;
    let token = csrf(&operator).await;
    let created = post(
        &operator,
        "/admin/clients/new",
        &[
            ("csrf_token", token.as_str()),
            ("name", "Reports"),
            ("client_type", "confidential"),
            ("grant_client_credentials", "on"),
            ("scope_read", "on"),
        ],
    )
    .await;
    let html = created.text().await.unwrap();
    let first_secret = code_element(&html, "client-secret").expect("the new secret, once");
    let client_id = code_element(&html, "client-id").unwrap();
    let client = TestClient {
        id: client_id.clone(),
        secret: Some(first_secret.clone()),
    };
    assert_eq!(operator.client_credentials_as(&client, "read").await.status(), 200);

    let detail = operator.get_text(&format!("/admin/clients/{client_id}")).await;
    assert!(code_element(&detail, "client-secret").is_none());
    assert!(!detail.contains(&first_secret));
    // The seeded client's secret is nowhere either.
    let seeded = operator.get_text(&format!("/admin/clients/{}", app.client.id)).await;
    assert!(!seeded.contains(app.client.secret.as_deref().unwrap()));

    let rotate = format!("/admin/clients/{client_id}/rotate-secret");
    let asked = post(&operator, &rotate, &[("csrf_token", token.as_str())]).await;
    let asked = asked.text().await.unwrap();
    assert!(asked.contains("Rotate the client secret?") && code_element(&asked, "client-secret").is_none());
    assert_eq!(
        operator.client_credentials_as(&client, "read").await.status(),
        200,
        "not rotated yet"
    );

    let rotated = post(
        &operator,
        &rotate,
        &[("csrf_token", token.as_str()), ("confirm", "yes")],
    )
    .await;
    assert_eq!(rotated.status(), 200);
    let new_secret = code_element(&rotated.text().await.unwrap(), "client-secret").expect("the new secret, once");
    assert_ne!(new_secret, first_secret);
    assert_eq!(
        operator.client_credentials_as(&client, "read").await.status(),
        401,
        "the old secret"
    );
    let client = TestClient {
        id: client_id.clone(),
        secret: Some(new_secret.clone()),
    };
    assert_eq!(operator.client_credentials_as(&client, "read").await.status(), 200);
    let detail = operator.get_text(&format!("/admin/clients/{client_id}")).await;
    assert!(!detail.contains(&new_secret), "shown once only");
    for page in ["/admin/", "/admin/clients", "/admin/audit"] {
        let html = operator.get_text(page).await;
        assert!(!html.contains(&new_secret) && !html.contains(&first_secret), "{page}");
    }

    // Deleting asks first, then revokes what the client holds.
    let delete = format!("/admin/clients/{client_id}/delete");
    let asked = post(&operator, &delete, &[("csrf_token", token.as_str())]).await;
    assert!(asked.text().await.unwrap().contains("Delete this client?"));
    assert!(app.store.get_client(&client_id).await.unwrap().is_some());
    let deleted = post(
        &operator,
        &delete,
        &[("csrf_token", token.as_str()), ("confirm", "yes")],
    )
    .await;
    assert_eq!(deleted.status(), 303);
    assert!(app.store.get_client(&client_id).await.unwrap().is_none());
}

#[tokio::test]
async fn an_operator_edits_a_client_and_sees_its_live_grants() {
    let app = spawn_app().await;
    let (_, client_id, _, _, _) = targets(&app).await;
    let operator = operator_browser(&app).await;
    let token = csrf(&operator).await;
    let detail = operator.get_text(&format!("/admin/clients/{client_id}")).await;
    assert!(
        detail.contains(r#"id="live-grants""#) && detail.contains(">1</a>"),
        "one live grant"
    );
    // A client with more grants than are read to count them shows a lower bound: 1,004 more,
    // the first ten revoked (ids "a…" sort before the real one's).
    let grant = app
        .store
        .grants_page(None, Some(&client_id), None, 1)
        .await
        .unwrap()
        .remove(0);
    for i in 0..1_004 {
        let more = tessera::store::GrantRecord {
            grant_id: format!("a-{i:05}"),
            revoked: i < 10,
            ..grant.clone()
        };
        app.store.put_grant(&more).await.unwrap();
    }
    let detail = operator.get_text(&format!("/admin/clients/{client_id}")).await;
    assert!(detail.contains(">at least 990</a>"), "990 live among the first 1,000");
    let form = operator.get_text(&format!("/admin/clients/{client_id}/edit")).await;
    assert!(form.contains("app.example&#x2f;callback"), "{form}");
    let saved = post(
        &operator,
        &format!("/admin/clients/{client_id}/edit"),
        &[
            ("csrf_token", token.as_str()),
            ("name", "Renamed app"),
            ("grant_authorization_code", "on"),
            ("grant_refresh_token", "on"),
            ("redirect_uris", REDIRECT_URI),
            ("scope_openid", "on"),
            ("scope_read", "on"),
            ("access_token_ttl", "600"),
        ],
    )
    .await;
    assert_eq!(saved.status(), 303);
    let client = app.store.get_client(&client_id).await.unwrap().unwrap();
    assert_eq!(
        (client.name.as_str(), client.access_token_ttl),
        ("Renamed app", Some(600))
    );
    let bad = post(
        &operator,
        &format!("/admin/clients/{client_id}/edit"),
        &[
            ("csrf_token", token.as_str()),
            ("name", "X"),
            ("access_token_ttl", "soon"),
        ],
    )
    .await;
    assert_eq!(bad.status(), 400);
}

#[tokio::test]
async fn the_keys_page_warns_before_an_early_promote_or_retire() {
    let app = spawn_app().await;
    let operator = operator_browser(&app).await;
    let token = csrf(&operator).await;
    let before = app.provider.list_keys().await.unwrap();
    let old = before
        .iter()
        .find(|k| k.status == tessera::keys::KeyStatus::Signing)
        .unwrap()
        .clone();
    let generated = post(
        &operator,
        "/admin/keys/generate",
        &[("csrf_token", token.as_str()), ("alg", "ES256")],
    )
    .await;
    assert_eq!(generated.status(), 303);
    let after = app.provider.list_keys().await.unwrap();
    let new = after
        .iter()
        .find(|k| !before.iter().any(|b| b.kid == k.kid))
        .unwrap()
        .clone();
    assert_eq!(new.status, tessera::keys::KeyStatus::Published);
    let page = operator.get_text("/admin/keys").await;
    assert!(page.contains("safe to promote at"), "the wait is shown");

    // Promoting at once (jwks_max_age is 300 s) asks, with the warning.
    let promote = format!("/admin/keys/{}/promote", new.kid);
    let asked = post(&operator, &promote, &[("csrf_token", token.as_str())]).await;
    let html = asked.text().await.unwrap();
    assert!(html.contains("Not safe yet") && html.contains("jwks_max_age"), "{html}");
    assert_eq!(
        app.provider
            .list_keys()
            .await
            .unwrap()
            .iter()
            .find(|k| k.kid == new.kid)
            .unwrap()
            .status,
        tessera::keys::KeyStatus::Published
    );
    let promoted = post(
        &operator,
        &promote,
        &[("csrf_token", token.as_str()), ("confirm", "yes")],
    )
    .await;
    assert_eq!(promoted.status(), 303);
    let keys = app.provider.list_keys().await.unwrap();
    let now_signing = keys.iter().find(|k| k.kid == new.kid).unwrap();
    assert_eq!(now_signing.status, tessera::keys::KeyStatus::Signing);
    assert!(now_signing.promoted_at.is_some(), "promotion is recorded");

    // Retiring the old key within the access-token lifetime warns too.
    let retire = format!("/admin/keys/{}/retire", old.kid);
    let asked = post(&operator, &retire, &[("csrf_token", token.as_str())]).await;
    let html = asked.text().await.unwrap();
    assert!(html.contains("Retire this key?") && html.contains("Not safe yet"));
    let retired = post(
        &operator,
        &retire,
        &[("csrf_token", token.as_str()), ("confirm", "yes")],
    )
    .await;
    assert_eq!(retired.status(), 303);
    let jwks = operator.get_jwks().await;
    assert!(!jwks.to_string().contains(&old.kid), "a retired key leaves the JWKS");
}

#[tokio::test]
async fn the_overview_counts_and_charts_what_the_server_holds_and_issued() {
    let app = spawn_app().await;
    targets(&app).await;
    assert_eq!(app.client_credentials("read").await.status(), 200);
    let operator = operator_browser(&app).await;
    let html = operator.get_text("/admin/").await;
    assert!(
        html.contains(r#"<strong id="count-users">2</strong>"#),
        "alice and the operator"
    );
    assert!(html.contains(r#"<strong id="count-grants">1</strong>"#));
    assert!(html.contains(r#"<strong id="count-refresh-tokens">1</strong>"#));
    assert!(html.contains("<svg") && html.contains(r#"data-grant-type="client_credentials""#));
    assert!(html.contains(r#"data-grant-type="authorization_code""#));
    assert!(html.contains(r#"id="rotation-not-due""#));
    assert!(html.contains(r#"<li id="health-storage"><span class="ok">OK</span>"#));
}

#[tokio::test]
async fn the_audit_page_filters_and_pages() {
    let app = spawn_app().await;
    let operator = operator_browser(&app).await;
    let page = get(
        &operator,
        "/admin/audit?actor=nobody&action=user.disable&since=2020-01-01",
    )
    .await;
    assert_eq!(page.status(), 200);
    assert!(page.text().await.unwrap().contains("No entries match these filters"));
    let bad = get(&operator, "/admin/audit?since=yesterday").await;
    assert_eq!(bad.status(), 400);
    // A NUL byte is a bad request, not a server error (PostgreSQL refuses it in text).
    for path in [
        "/admin/audit?actor=%00",
        "/admin/grants?user=a%00b",
        "/admin/users/%00",
        "/admin/clients?q=%00",
    ] {
        assert_eq!(get(&operator, path).await.status(), 400, "{path}");
    }
}

#[tokio::test]
async fn each_console_action_is_recorded_once_with_the_operator_and_their_address() {
    let app = spawn_app().await;
    let (user_id, _, grant_id, _, _) = targets(&app).await;
    let operator = operator_browser(&app).await;
    let token = csrf(&operator).await;
    let revoked = post(
        &operator,
        &format!("/admin/grants/{grant_id}/revoke"),
        &[("csrf_token", token.as_str())],
    )
    .await;
    assert_eq!(revoked.status(), 303);
    // Asking for confirmation records nothing; the confirmed action once.
    let path = format!("/admin/users/{user_id}/disable");
    post(&operator, &path, &[("csrf_token", token.as_str())]).await;
    post(&operator, &path, &[("csrf_token", token.as_str()), ("confirm", "yes")]).await;
    let filter = tessera::store::AuditFilter {
        actor: Some(OPERATOR.into()),
        ..Default::default()
    };
    let entries = app.provider.audit_page(&filter, None, 100).await.unwrap();
    let actions: Vec<&str> = entries.iter().map(|e| e.action.as_str()).collect();
    assert_eq!(actions, ["user.disable", "grant.revoke"], "newest first, once each");
    for entry in &entries {
        assert_eq!(entry.actor.kind, "user");
        assert_eq!(entry.address.as_deref(), Some("127.0.0.1"));
        assert_eq!(entry.outcome, "ok");
    }
    assert_eq!(entries[0].target_id.as_deref(), Some(user_id.as_str()));
    assert_eq!(entries[1].target_id.as_deref(), Some(grant_id.as_str()));
    let page = operator
        .get_text(&format!("/admin/audit?actor={OPERATOR}&action=user.disable"))
        .await;
    assert_eq!(page.matches(r#"<tr data-action="user.disable">"#).count(), 1);
    assert!(!page.contains(r#"data-action="grant.revoke""#), "filtered by action");
}

#[tokio::test]
async fn the_audit_page_pages_older_entries_by_cursor() {
    let app = spawn_app().await;
    let operator = operator_browser(&app).await;
    let token = csrf(&operator).await;
    for _ in 0..55 {
        let generated = post(
            &operator,
            "/admin/keys/generate",
            &[("csrf_token", token.as_str()), ("alg", "EdDSA")],
        )
        .await;
        assert_eq!(generated.status(), 303);
    }
    let first = operator.get_text("/admin/audit?action=key.generate").await;
    assert_eq!(first.matches(r#"<tr data-action="key.generate">"#).count(), 50);
    let older = first
        .split(r#"<a href=""#)
        .filter_map(|s| s.split('"').next())
        .find(|href| href.contains("before="))
        .expect("an older link")
        .replace("&#x2f;", "/")
        .replace("&#x3d;", "=")
        .replace("&amp;", "&");
    let second = operator.get_text(&older).await;
    assert_eq!(second.matches(r#"<tr data-action="key.generate">"#).count(), 5);
    assert!(!second.contains("before="), "the oldest page has no older link");
}

#[tokio::test]
async fn an_operator_resets_a_password_and_deletes_a_user_after_confirming() {
    let app = spawn_app().await;
    let (user_id, _, grant_id, _, _) = targets(&app).await;
    let operator = operator_browser(&app).await;
    let token = csrf(&operator).await;
    let reset = post(
        &operator,
        &format!("/admin/users/{user_id}/password"),
        &[
            ("csrf_token", token.as_str()),
            ("password", "a brand new password"),
            ("revoke_grants", "yes"),
        ],
    )
    .await;
    assert_eq!(reset.status(), 200);
    assert!(reset.text().await.unwrap().contains("1 grant(s) revoked"));
    assert!(app.store.get_grant(&grant_id).await.unwrap().unwrap().revoked);
    assert_eq!(
        get(&app, "/o/authorized_tokens/").await.status(),
        302,
        "her session ended"
    );
    let fresh = browser(&app);
    assert_ne!(
        fresh.log_in("/o/login/", USERNAME, PASSWORD).await.status(),
        303,
        "the old password"
    );
    assert_eq!(
        fresh
            .log_in("/o/login/", USERNAME, "a brand new password")
            .await
            .status(),
        303
    );
    // Too short a password is refused and changes nothing.
    let short = post(
        &operator,
        &format!("/admin/users/{user_id}/password"),
        &[("csrf_token", token.as_str()), ("password", "x")],
    )
    .await;
    assert_eq!(short.status(), 400);

    let delete = format!("/admin/users/{user_id}/delete");
    let asked = post(&operator, &delete, &[("csrf_token", token.as_str())]).await;
    assert!(asked.text().await.unwrap().contains("Delete this user?"));
    assert!(app.store.get_user(&user_id).await.unwrap().is_some());
    let deleted = post(
        &operator,
        &delete,
        &[("csrf_token", token.as_str()), ("confirm", "yes")],
    )
    .await;
    assert_eq!(
        (deleted.status().as_u16(), location(&deleted)),
        (303, "/admin/users".to_string())
    );
    assert!(app.store.get_user(&user_id).await.unwrap().is_none());
}

// The attack on the operator's console (issue 16, `SECURITY.md`): each comment tells the
// finding as it was found, and each test failed until it was fixed.

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
pub fn error_line(html: &str) -> String {
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
