//! `/o/applications/`: registering and managing apps in the pages, over HTTP.

use crate::helpers::*;
use serde_json::Value;
use tessera::oauth::audit::Caller;

/// A logged-in user on a server whose registration policy lets users register service apps
/// (client_credentials), which these tests use; the policy itself has a test of its own
/// (`self_service_apps_follow_the_registration_policy`).
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

/// Registers an app in the pages as the user logged in to `app`; returns the response.
pub async fn register(app: &Remote, fields: &[(&str, &str)]) -> reqwest::Response {
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

// A second user who registers apps of their own, as the adversarial reviews did.
pub const ATTACKER: &str = "mallory";
pub const ATTACKER_PASSWORD: &str = "mallory's long password";
pub const EVIL_REDIRECT: &str = "https://evil.example/cb";

/// A second user, logged in in a browser of their own.
pub async fn attacker(app: &TestApp) -> Remote {
    app.provider
        .create_user(&Caller::system(), ATTACKER, ATTACKER_PASSWORD, None)
        .await
        .unwrap();
    let browser = browser(app);
    assert_eq!(
        browser.log_in("/o/login/", ATTACKER, ATTACKER_PASSWORD).await.status(),
        303
    );
    browser
}

/// An authorization request for `client_id` to the attacker's redirect URI.
pub fn evil_request(client_id: &str) -> Vec<(String, String)> {
    let pkce = Pkce::new();
    [
        ("response_type", "code"),
        ("client_id", client_id),
        ("redirect_uri", EVIL_REDIRECT),
        ("scope", "openid profile email read write"),
        ("state", "s"),
        ("code_challenge", pkce.challenge.as_str()),
        ("code_challenge_method", "S256"),
    ]
    .iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect()
}

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

// The first adversarial review (issue 11, `SECURITY.md`), each finding as the attack that
// found it; each test failed on the code the review ran against.

/// Finding 14: names with bidirectional controls (U+202E makes "ppa.evil" read as "live.app")
/// are refused wherever an app name is taken in.
#[tokio::test]
async fn app_names_with_bidirectional_controls_are_refused() {
    let app = spawn_app().await;
    let mallory = attacker(&app).await;
    let response = register(
        &mallory,
        &[
            ("name", "Bank \u{202e}ppa.evil"),
            ("client_type", "confidential"),
            ("grant_authorization_code", "on"),
            ("redirect_uris", EVIL_REDIRECT),
            ("scope_read", "on"),
        ],
    )
    .await;
    assert_eq!(response.status(), 400);
    assert!(response.text().await.unwrap().contains("bidirectional"));
}

/// Finding 8: through the pages any user made a client_credentials app with every scope (the
/// example resource server then accepted its writes), which dynamic registration refuses by
/// default. The pages now follow the registration policy; only the CLI and admin API don't.
#[tokio::test]
async fn self_service_apps_follow_the_registration_policy() {
    let dirs = tempfile::tempdir().unwrap();
    let config = tessera::Config {
        registration: tessera::config::RegistrationPolicy {
            scopes: Some(vec!["openid".into(), "read".into()]),
            ..Default::default()
        },
        ..test_config(&dirs)
    };
    let app = spawn_app_with(config, dirs).await;
    let mallory = attacker(&app).await;
    let form = mallory.get_text("/o/applications/register/").await;
    assert!(!form.contains("grant_client_credentials"), "not offered");
    assert!(!form.contains("scope_write") && form.contains("scope_read"));

    let machine = [
        ("name", "Robot"),
        ("client_type", "confidential"),
        ("grant_client_credentials", "on"),
        ("scope_read", "on"),
    ];
    let response = register(&mallory, &machine).await;
    assert_eq!(response.status(), 400);
    assert!(response.text().await.unwrap().contains("client_credentials"));
    let everything = [
        ("name", "Greedy"),
        ("client_type", "confidential"),
        ("grant_authorization_code", "on"),
        ("redirect_uris", EVIL_REDIRECT),
        ("scope_read", "on"),
        ("scope_write", "on"),
    ];
    let response = register(&mallory, &everything).await;
    assert_eq!(response.status(), 200, "an unoffered scope is dropped, not granted");
    let client_id = code_element(&response.text().await.unwrap(), "client-id").unwrap();
    let stored = app.provider.find_client(&client_id).await.unwrap().unwrap();
    assert_eq!(stored.scopes, ["read"]);
    // Nor can an edit add them (the core refuses whatever the form sends).
    let mut settings = tessera::oauth::client::NewClient {
        grant_types: vec![tessera::store::GrantType::ClientCredentials],
        ..tessera::oauth::client::NewClient::of(&stored)
    };
    assert!(app
        .provider
        .update_client(&Caller::system(), &client_id, settings.clone())
        .await
        .is_err());
    settings.grant_types = stored.grant_types.clone();
    settings.scope = "read write".into();
    assert!(app
        .provider
        .update_client(&Caller::system(), &client_id, settings.clone())
        .await
        .is_err());
    settings.name = "x".repeat(101);
    settings.scope = "read".into();
    assert!(
        app.provider
            .update_client(&Caller::system(), &client_id, settings)
            .await
            .is_err(),
        "names up to 100"
    );
    // An operator still can: the CLI and admin API register without the policy.
    let operator = tessera::oauth::client::NewClient {
        owner_user_id: None,
        grant_types: vec![tessera::store::GrantType::ClientCredentials],
        redirect_uris: vec![],
        scope: "read write".into(),
        name: "Operator's robot".into(),
        ..tessera::oauth::client::NewClient::of(&stored)
    };
    assert!(app.provider.register_client(&Caller::system(), operator).await.is_ok());
}

/// Finding 8, store growth: one account may own at most 50 apps.
#[tokio::test]
async fn one_user_cannot_register_apps_without_limit() {
    // Without the budget of changes a minute (tested in `audit`), to reach the cap at once.
    let dirs = tempfile::tempdir().unwrap();
    let config = tessera::Config {
        self_service_changes: tessera::rate_limit::Rate::OFF,
        ..test_config(&dirs)
    };
    let app = spawn_app_with(config, dirs).await;
    let mallory = attacker(&app).await;
    let fields = [
        ("name", "Spam"),
        ("client_type", "public"),
        ("grant_authorization_code", "on"),
        ("redirect_uris", EVIL_REDIRECT),
        ("scope_read", "on"),
    ];
    for _ in 0..50 {
        assert_eq!(register(&mallory, &fields).await.status(), 200);
    }
    let refused = register(&mallory, &fields).await;
    assert_eq!(refused.status(), 400);
    assert!(refused.text().await.unwrap().contains("50 apps"));
    assert_eq!(mallory.get_text("/o/applications/").await.matches("Spam").count(), 50);
}

// The attack on the operator's console (issue 16, `SECURITY.md`): each comment tells the
// finding as it was found, and each test failed until it was fixed.

/// Finding 1d (finding 1 for every signed-in user): the applications pages share the
/// validation, so any user registering an app with a NUL in a redirect URI gets a 500 on
/// PostgreSQL (on sled the app is stored with the NUL in its redirect URI).
#[tokio::test]
async fn a_user_registering_an_app_with_a_nul_in_a_redirect_uri_gets_a_400() {
    let app = spawn_app().await;
    let user = browser(&app);
    user.log_in("/o/login/", USERNAME, PASSWORD).await;
    let token = crate::console::csrf(&user).await;
    let form = [
        ("csrf_token", token.as_str()),
        ("name", "NUL app"),
        ("client_type", "public"),
        ("grant_authorization_code", "on"),
        ("scope_openid", "on"),
        ("redirect_uris", "https://app.example/cb\u{0}"),
    ];
    let response = user
        .http
        .post(user.url("/o/applications/register/"))
        .form(&form)
        .send()
        .await
        .unwrap();
    let status = response.status();
    let html = response.text().await.unwrap();
    assert_eq!(status, 400, "{}", crate::console::error_line(&html));
}
