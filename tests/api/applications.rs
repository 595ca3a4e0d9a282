//! `/o/applications/`: registering and managing apps in the pages, over HTTP.

use crate::helpers::*;
use serde_json::Value;
use tessera::oauth::audit::Caller;

/// A logged-in user on a server whose registration policy lets users register service apps
/// (client_credentials), which these tests use; the policy itself is tested in `review`.
async fn logged_in() -> TestApp {
    let dirs = tempfile::tempdir().unwrap();
    let config = tessera::Config {
        registration: tessera::config::RegistrationPolicy {
            allow_client_credentials: true,
            ..Default::default()
        },
        ..test_config(&dirs)
    };
    let app = spawn_app_with(config, dirs).await;
    assert_eq!(app.log_in("/o/login/", USERNAME, PASSWORD).await.status(), 303);
    app
}

async fn csrf_of(app: &TestApp, path: &str) -> String {
    let page = app.get_text(path).await;
    hidden_input(&page, "csrf_token").expect("the page has a CSRF token")
}

async fn register(app: &TestApp, fields: &[(&str, &str)]) -> reqwest::Response {
    let csrf = csrf_of(app, "/o/applications/register/").await;
    let mut form = vec![("csrf_token", csrf.as_str())];
    form.extend_from_slice(fields);
    app.http
        .post(app.url("/o/applications/register/"))
        .form(&form)
        .send()
        .await
        .unwrap()
}

const SERVICE: [(&str, &str); 4] = [
    ("name", "Nightly export"),
    ("client_type", "confidential"),
    ("grant_client_credentials", "on"),
    ("scope_read", "on"),
];

#[tokio::test]
async fn the_pages_require_login() {
    let app = spawn_app().await;
    for path in ["/o/applications/", "/o/applications/register/"] {
        let response = app.http.get(app.url(path)).send().await.unwrap();
        assert_eq!(response.status(), 302, "{path}");
        assert!(location(&response).starts_with("/o/login/?next="));
    }
}

#[tokio::test]
async fn a_registered_app_shows_its_secret_exactly_once_and_works() {
    let app = logged_in().await;
    let response = register(&app, &SERVICE).await;
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["cache-control"], "no-store");
    let html = response.text().await.unwrap();
    let client_id = code_element(&html, "client-id").unwrap();
    let secret = code_element(&html, "client-secret").expect("the secret is shown on creation");
    assert!(html.contains("shown only this once"));

    let client = TestClient {
        id: client_id.clone(),
        secret: Some(secret.clone()),
    };
    let token = app.token(&client, &[("grant_type", "client_credentials")]).await;
    assert_eq!(token.status(), 200);
    assert_eq!(token.json::<Value>().await.unwrap()["scope"], "read");

    let again = app.get_text(&format!("/o/applications/{client_id}/")).await;
    assert!(again.contains(&client_id));
    assert!(!again.contains(&secret), "never shown again");
    let list = app.get_text("/o/applications/").await;
    assert!(list.contains("Nightly export"));
}

#[tokio::test]
async fn invalid_registrations_are_explained_and_create_nothing() {
    let app = logged_in().await;
    let cases: [(&[(&str, &str)], &str); 3] = [
        (
            &[
                ("name", "Web"),
                ("client_type", "confidential"),
                ("grant_authorization_code", "on"),
                ("redirect_uris", "http://evil.example/cb"),
                ("scope_read", "on"),
            ],
            "must use https",
        ),
        (
            &[
                ("name", "Web"),
                ("client_type", "public"),
                ("grant_authorization_code", "on"),
                ("redirect_uris", "https://app.example/cb#frag"),
            ],
            "fragment",
        ),
        (
            &[
                ("name", ""),
                ("client_type", "confidential"),
                ("grant_client_credentials", "on"),
            ],
            "needs a name",
        ),
    ];
    for (fields, message) in cases {
        let response = register(&app, fields).await;
        assert_eq!(response.status(), 400, "{message}");
        let html = response.text().await.unwrap();
        assert!(html.contains(message), "{message}: {html}");
    }
    let user = app.store.get_user_by_name(USERNAME).await.unwrap().unwrap();
    assert!(app.provider.clients_owned_by(&user.user_id).await.unwrap().is_empty());
}

#[tokio::test]
async fn forms_without_the_csrf_token_are_refused() {
    let app = logged_in().await;
    let response = app
        .http
        .post(app.url("/o/applications/register/"))
        .form(&SERVICE)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 403);
    let user = app.store.get_user_by_name(USERNAME).await.unwrap().unwrap();
    assert!(app.provider.clients_owned_by(&user.user_id).await.unwrap().is_empty());
}

#[tokio::test]
async fn an_app_can_be_edited_its_secret_rotated_and_deleted_after_confirmation() {
    let app = logged_in().await;
    let html = register(&app, &SERVICE).await.text().await.unwrap();
    let id = code_element(&html, "client-id").unwrap();
    let old_secret = code_element(&html, "client-secret").unwrap();
    let detail = format!("/o/applications/{id}/");

    let csrf = csrf_of(&app, &format!("{detail}edit/")).await;
    let edited = app
        .http
        .post(app.url(&format!("{detail}edit/")))
        .form(&[
            ("csrf_token", csrf.as_str()),
            ("name", "Renamed"),
            ("grant_client_credentials", "on"),
            ("scope_read", "on"),
            ("scope_write", "on"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(edited.status(), 303);
    let page = app.get_text(&detail).await;
    assert!(page.contains("Renamed") && page.contains("read write"));

    let csrf = csrf_of(&app, &detail).await;
    let rotated = app
        .http
        .post(app.url(&format!("{detail}rotate-secret/")))
        .form(&[("csrf_token", csrf.as_str())])
        .send()
        .await
        .unwrap();
    let new_secret = code_element(&rotated.text().await.unwrap(), "client-secret").unwrap();
    assert_ne!(new_secret, old_secret);
    let old = TestClient {
        id: id.clone(),
        secret: Some(old_secret),
    };
    let new = TestClient {
        id: id.clone(),
        secret: Some(new_secret),
    };
    assert_eq!(
        app.token(&old, &[("grant_type", "client_credentials")]).await.status(),
        401
    );
    assert_eq!(
        app.token(&new, &[("grant_type", "client_credentials")]).await.status(),
        200
    );

    let confirm = app.http.get(app.url(&format!("{detail}delete/"))).send().await.unwrap();
    assert_eq!(confirm.status(), 200);
    let csrf = hidden_input(&confirm.text().await.unwrap(), "csrf_token").unwrap();
    let deleted = app
        .http
        .post(app.url(&format!("{detail}delete/")))
        .form(&[("csrf_token", csrf.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(deleted.status(), 303);
    assert_eq!(app.http.get(app.url(&detail)).send().await.unwrap().status(), 404);
    assert_eq!(
        app.token(&new, &[("grant_type", "client_credentials")]).await.status(),
        401
    );
}

#[tokio::test]
async fn other_users_apps_do_not_exist_for_you() {
    let app = logged_in().await;
    let html = register(&app, &SERVICE).await.text().await.unwrap();
    let id = code_element(&html, "client-id").unwrap();
    app.provider
        .create_user(&Caller::system(), "bob", "bobs long password", None)
        .await
        .unwrap();
    let bob = reqwest::Client::builder()
        .cookie_store(true)
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let login_page = bob
        .get(app.url("/o/login/"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let csrf = hidden_input(&login_page, "csrf_token").unwrap();
    let form = [
        ("csrf_token", csrf.as_str()),
        ("username", "bob"),
        ("password", "bobs long password"),
        ("next", ""),
    ];
    assert_eq!(
        bob.post(app.url("/o/login/"))
            .form(&form)
            .send()
            .await
            .unwrap()
            .status(),
        303
    );
    for path in [
        format!("/o/applications/{id}/"),
        format!("/o/applications/{id}/edit/"),
        format!("/o/applications/{id}/delete/"),
    ] {
        assert_eq!(bob.get(app.url(&path)).send().await.unwrap().status(), 404, "{path}");
    }
    assert!(!bob
        .get(app.url("/o/applications/"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
        .contains("Nightly export"));
}

#[tokio::test]
async fn an_app_registered_with_its_public_keys_has_no_secret_and_authenticates_with_them() {
    use crate::private_key_jwt::TestKey;
    let app = logged_in().await;
    let key = TestKey::new(jsonwebtoken::Algorithm::EdDSA);
    let jwks = key.jwks().to_string();
    let both = register(
        &app,
        &[
            &SERVICE[..],
            &[("jwks", jwks.as_str()), ("jwks_uri", "https://app.example/jwks")],
        ]
        .concat(),
    )
    .await;
    assert_eq!(both.status(), 400);
    assert!(both.text().await.unwrap().contains("not both"));
    let not_json = register(&app, &[&SERVICE[..], &[("jwks", "{keys")]].concat()).await;
    assert_eq!(not_json.status(), 400);

    let response = register(&app, &[&SERVICE[..], &[("jwks", jwks.as_str())]].concat()).await;
    assert_eq!(response.status(), 200);
    let html = response.text().await.unwrap();
    let client_id = code_element(&html, "client-id").unwrap();
    assert!(code_element(&html, "client-secret").is_none(), "no secret is made");
    assert!(html.contains("private_key_jwt, 1 registered key"), "{html}");
    assert!(!html.contains("rotate-secret"), "nothing to rotate");
    let assertion = key.assertion(&client_id, &app.issuer);
    let token = app
        .http
        .post(app.url("/o/token/"))
        .form(&[
            ("grant_type", "client_credentials"),
            (
                "client_assertion_type",
                "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
            ),
            ("client_assertion", assertion.as_str()),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(token.status(), 200);
    // The edit form shows the keys and saving it keeps them.
    let edit = app.get_text(&format!("/o/applications/{client_id}/edit/")).await;
    assert!(edit.contains("Ed25519"), "{edit}");
}
