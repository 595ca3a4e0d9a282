//! What the later adversarial passes over issue 11's fixes found (`SECURITY.md`), each as the
//! attack: a deleted client brought back by an update racing the delete, device cookies that
//! passed for other accounts or outlived a password reset, guessers sharing the owner's
//! address locking the owner out, a 500 after a spent code, and one foreign cookie making
//! logins impossible.

use serde_json::{json, Value};
use tessera::oauth::audit::Caller;

use crate::helpers::*;

async fn open_registration() -> TestApp {
    let dirs = tempfile::tempdir().unwrap();
    let config = tessera::Config {
        registration: tessera::config::RegistrationPolicy {
            mode: tessera::config::RegistrationMode::Open,
            limit_per_address: tessera::rate_limit::Rate::OFF,
            ..Default::default()
        },
        ..test_config(&dirs)
    };
    spawn_app_with(config, dirs).await
}

/// The third pass: `PUT /o/register/{id}/` read the client, the operator deleted it, and the
/// PUT wrote it back — with its secret, its registration token and every user's consent, so
/// `prompt=none` gave codes again. A delete is now final and takes the consents with it.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_update_racing_a_delete_never_brings_the_client_back() {
    let app = std::sync::Arc::new(open_registration().await);
    let admin = app.register_admin_client(None).await;
    let admin_token = app.client_credentials_as(&admin, "tessera:admin").await;
    let admin_token = admin_token.json::<Value>().await.unwrap()["access_token"]
        .as_str()
        .unwrap()
        .to_string();
    for round in 0..25 {
        let metadata = json!({ "redirect_uris": ["https://app.example/cb"], "token_endpoint_auth_method": "none",
                               "client_name": format!("Racer {round}"), "scope": "openid" });
        let registered: Value = app
            .http
            .post(app.url("/o/register/"))
            .json(&metadata)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let client_id = registered["client_id"].as_str().unwrap().to_string();
        let token = registered["registration_access_token"].as_str().unwrap().to_string();
        // Alice approves it, so a resurrected client would get codes without asking.
        let client = TestClient {
            id: client_id.clone(),
            secret: None,
        };
        let pkce = Pkce::new();
        let query: Vec<(String, String)> = [
            ("response_type", "code"),
            ("client_id", &client_id),
            ("scope", "openid"),
            ("state", "s"),
            ("code_challenge", &pkce.challenge),
            ("code_challenge_method", "S256"),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        assert!(param(&app.authorize_and_allow(&query).await, "code").is_some());

        let mut update = metadata.clone();
        update["client_id"] = json!(client_id);
        let updaters: Vec<_> = (0..4)
            .map(|_| {
                let (app, url, token, body) = (
                    app.clone(),
                    app.url(&format!("/o/register/{client_id}/")),
                    token.clone(),
                    update.clone(),
                );
                tokio::spawn(async move {
                    for _ in 0..5 {
                        let _ = app.http.put(&url).bearer_auth(&token).json(&body).send().await;
                    }
                })
            })
            .collect();
        let deleted = app
            .http
            .delete(app.url(&format!("/api/v1/clients/{client_id}")))
            .bearer_auth(&admin_token)
            .send()
            .await
            .unwrap();
        assert_eq!(deleted.status(), 200);
        for updater in updaters {
            updater.await.unwrap();
        }
        assert!(
            app.provider.find_client(&client_id).await.unwrap().is_none(),
            "round {round}: stays deleted"
        );
        let user = app.store.get_user_by_name(USERNAME).await.unwrap().unwrap();
        assert!(app
            .store
            .get_consent(&user.user_id, &client_id)
            .await
            .unwrap()
            .is_none());
        let read = app
            .http
            .get(app.url(&format!("/o/register/{client_id}/")))
            .bearer_auth(&token)
            .send()
            .await
            .unwrap();
        assert_eq!(read.status(), 401, "its registration token died with it");
        let mut silent = query.clone();
        silent.push(("prompt".into(), "none".into()));
        let answer = app.authorize(&silent).await;
        assert!(
            answer.headers().get("location").is_none(),
            "no code for a deleted client"
        );
        let _ = client;
    }
}

/// The third pass: the device cookie named a lowercased username, so `Alice`'s cookie passed
/// for the account `alice`, and it outlived a password reset. It now names the account and its
/// password's generation.
#[tokio::test]
async fn a_device_cookie_is_good_for_its_own_account_and_password_only() {
    let app = behind_a_proxy(|config| {
        config.login_throttle.max_failures_per_username = 3;
        config.login_throttle.max_failures_per_address = 1000;
    })
    .await;
    app.provider
        .create_user(&Caller::system(), "Alice", "another long password", None)
        .await
        .unwrap();
    let namesake = browser_behind_proxy(&app, "192.0.2.50");
    assert_eq!(
        namesake
            .log_in("/o/login/", "Alice", "another long password")
            .await
            .status(),
        303
    );
    let owner = browser_behind_proxy(&app, "192.0.2.51");
    assert_eq!(owner.log_in("/o/login/", USERNAME, PASSWORD).await.status(), 303);
    // Guessers push `alice` past the per-username threshold: attempts are slowed now.
    for i in 0..6 {
        let guesser = browser_behind_proxy(&app, &format!("10.9.0.{i}"));
        guesser.log_in("/o/login/", USERNAME, "a wrong guess").await;
    }
    // Alice's namesake's cookie is no pass for `alice` (and does not reset its counts).
    let mut slowed = false;
    for _ in 0..5 {
        slowed |= namesake.log_in("/o/login/", USERNAME, "a wrong guess").await.status() == 429;
    }
    assert!(slowed, "another account's device cookie does not exempt");
    // The owner's does, until the password changes.
    assert_eq!(owner.log_in("/o/login/", USERNAME, PASSWORD).await.status(), 303);
    let user = app.store.get_user_by_name(USERNAME).await.unwrap().unwrap();
    app.provider
        .set_password(&Caller::system(), &user.user_id, "a brand new password")
        .await
        .unwrap();
    let mut slowed = false;
    for _ in 0..5 {
        slowed |= owner.log_in("/o/login/", USERNAME, "a wrong guess").await.status() == 429;
    }
    assert!(slowed, "a device cookie from before a password reset no longer exempts");
}

/// The third pass: 20 failures with made-up usernames from the owner's address (a shared NAT,
/// the same IPv6 /64) locked the address, and the owner's correct password from a known
/// device got 429 for as long as the guessing went on.
#[tokio::test]
async fn guessers_sharing_the_owners_address_cannot_lock_the_owner_out() {
    let app = behind_a_proxy(|_| {}).await;
    let owner = browser_behind_proxy(&app, "2001:db8:1:2::77");
    assert_eq!(owner.log_in("/o/login/", USERNAME, PASSWORD).await.status(), 303);
    let mut last = 0;
    for i in 0..25 {
        let neighbour = browser_behind_proxy(&app, &format!("2001:db8:1:2::{:x}", 0x100 + i));
        last = neighbour
            .log_in("/o/login/", &format!("user{i}"), "guess")
            .await
            .status()
            .as_u16();
    }
    assert_eq!(last, 429, "the address is locked for guessers");
    let stranger = browser_behind_proxy(&app, "2001:db8:1:2::99");
    assert_eq!(
        stranger.log_in("/o/login/", USERNAME, PASSWORD).await.status(),
        429,
        "and for new browsers"
    );
    assert_eq!(
        owner.log_in("/o/login/", USERNAME, PASSWORD).await.status(),
        303,
        "but not for the owner's own browser"
    );
}

/// The third pass: open registration took `id_token_signed_response_alg: EdDSA` with no EdDSA
/// key in the keyring, and the code exchange answered 500 after spending the code.
#[tokio::test]
async fn registration_refuses_an_id_token_algorithm_the_server_cannot_sign() {
    let app = open_registration().await;
    let response = app
        .http
        .post(app.url("/o/register/"))
        .json(&json!({ "redirect_uris": ["https://app.example/cb"], "id_token_signed_response_alg": "EdDSA" }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 400);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"], "invalid_client_metadata");
    assert!(body["error_description"].as_str().unwrap().contains("EdDSA"));
}

/// The third pass: names with invisible characters other than the few the filter knew
/// (Hangul fillers, the blank braille pattern, tag characters, variation selectors) were
/// registered.
#[tokio::test]
async fn names_that_show_as_nothing_are_refused() {
    let app = open_registration().await;
    for name in [
        "\u{3164}",
        "\u{2800}\u{2800}",
        "Pay\u{e0041}Pal",
        "a\u{fe0f}",
        "\u{115f}x",
    ] {
        let response = app
            .http
            .post(app.url("/o/register/"))
            .json(&json!({ "redirect_uris": ["https://app.example/cb"], "client_name": name }))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 400, "{name:?}");
    }
    assert!(app
        .provider
        .create_user(&Caller::system(), "\u{3164}", "a long enough password", None)
        .await
        .is_err());
}

/// The third pass: a single cookie with a non-ASCII byte (another app on the host, a sibling
/// subdomain) made the whole `Cookie` header unreadable, and every login failed the CSRF check.
#[tokio::test]
async fn a_foreign_cookie_with_non_ascii_bytes_does_not_stop_logins() {
    let app = spawn_app().await;
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let form = http.get(app.url("/o/login/")).send().await.unwrap();
    let cookie = form.headers()["set-cookie"]
        .to_str()
        .unwrap()
        .split(';')
        .next()
        .unwrap()
        .to_string();
    let csrf = hidden_input(&form.text().await.unwrap(), "csrf_token").unwrap();
    let mut header = b"junk=caf\xc3\xa9; ".to_vec();
    header.extend_from_slice(cookie.as_bytes());
    let response = http
        .post(app.url("/o/login/"))
        .header("cookie", reqwest::header::HeaderValue::from_bytes(&header).unwrap())
        .form(&[
            ("csrf_token", csrf.as_str()),
            ("username", USERNAME),
            ("password", PASSWORD),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 303);
}
