use crate::applications::{attacker, evil_request, register, EVIL_REDIRECT};
use crate::helpers::*;

#[tokio::test]
async fn code_flow_with_pkce_through_login_and_consent_issues_tokens() {
    let app = spawn_app().await;
    let pkce = Pkce::new();
    let params = app.authorize_query(&pkce, "state-123");

    // Not logged in: sent to the login page, which leads back to the same request.
    let first = app.authorize(&params).await;
    assert_eq!(first.status(), 302);
    let login_url = location(&first);
    assert!(login_url.starts_with("/o/login/?next="), "{login_url}");
    let login = app.log_in(&login_url, USERNAME, PASSWORD).await;
    assert_eq!(login.status(), 303, "redirects after a POST use 303");
    assert!(
        location(&login).starts_with("/o/authorize/?"),
        "back to the authorization request"
    );

    // Consent page names the app and each scope with its description.
    let page = app.authorize(&params).await;
    assert_eq!(page.status(), 200);
    let html = page.text().await.unwrap();
    assert!(html.contains("Test App"));
    assert!(html.contains("Read your data") && html.contains("Change your data"));
    assert!(html.contains("Allow") && html.contains("Deny"));

    let decision = app.consent(&params, "allow").await;
    assert_eq!(decision.status(), 303);
    let redirect = location(&decision);
    assert!(redirect.starts_with(REDIRECT_URI));
    // RFC 6749 §4.1.2 and RFC 9207 §2: code, state and iss come back.
    assert_eq!(param(&redirect, "state").as_deref(), Some("state-123"));
    assert_eq!(param(&redirect, "iss").as_deref(), Some(app.issuer.as_str()));
    let code = param(&redirect, "code").unwrap();
    assert!(code.len() >= 22, "a code carries at least 128 bits");

    let response = app.exchange_code(&code, &pkce.verifier).await;
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["cache-control"], "no-store");
    let tokens: serde_json::Value = response.json().await.unwrap();
    assert_eq!(tokens["token_type"], "Bearer");
    assert_eq!(tokens["scope"], "read write");
    assert!(tokens["refresh_token"].is_string());
    let claims = app
        .verify_with_jwks(tokens["access_token"].as_str().unwrap())
        .await
        .expect("verifies against the JWKS");
    let user = app.store.get_user_by_name(USERNAME).await.unwrap().unwrap();
    assert_eq!(claims["sub"], user.user_id.as_str());
    assert_eq!(claims["client_id"], app.client.id.as_str());
}

#[tokio::test]
async fn public_client_completes_the_flow_with_pkce_and_no_secret() {
    let app = spawn_app().await;
    let pkce = Pkce::new();
    // RFC 8252 §7.3: a loopback redirect may use any port.
    let redirect_uri = "http://127.0.0.1:49152/callback";
    let params: Vec<(String, String)> = [
        ("response_type", "code"),
        ("client_id", app.public_client.id.as_str()),
        ("redirect_uri", redirect_uri),
        ("scope", "read"),
        ("code_challenge", pkce.challenge.as_str()),
        ("code_challenge_method", "S256"),
    ]
    .iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    let redirect = app.authorize_and_allow(&params).await;
    assert!(redirect.starts_with(redirect_uri));
    let code = param(&redirect, "code").unwrap();
    let form = [
        ("grant_type", "authorization_code"),
        ("code", &code),
        ("redirect_uri", redirect_uri),
        ("code_verifier", &pkce.verifier),
    ];
    let response = app.token(&app.public_client, &form).await;
    assert_eq!(response.status(), 200);
}

#[tokio::test]
async fn mismatched_redirect_uri_shows_an_error_and_never_redirects() {
    let app = spawn_app().await;
    let pkce = Pkce::new();
    for bad in [
        "https://evil.example/callback",
        "https://app.example/callback/",
        "https://app.example/callback?x=1",
        "not a uri",
    ] {
        let mut params = app.authorize_query(&pkce, "s");
        params.retain(|(k, _)| k != "redirect_uri");
        params.push(("redirect_uri".into(), bad.into()));
        let response = app.authorize(&params).await;
        assert_eq!(response.status(), 400, "{bad}");
        assert!(
            response.headers().get("location").is_none(),
            "RFC 6749 §4.1.2.1: never redirect to {bad}"
        );
    }
}

#[tokio::test]
async fn unknown_or_missing_client_shows_an_error_and_never_redirects() {
    let app = spawn_app().await;
    for query in [
        vec![
            ("client_id", "nope"),
            ("redirect_uri", REDIRECT_URI),
            ("response_type", "code"),
        ],
        vec![("redirect_uri", REDIRECT_URI), ("response_type", "code")],
    ] {
        let response = app
            .http
            .get(app.url("/o/authorize/"))
            .query(&query)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 400);
        assert!(response.headers().get("location").is_none());
    }
}

/// Errors after the client and redirect URI are verified go back to the client with
/// `error`, `state` and `iss` (RFC 6749 §4.1.2.1, RFC 9207).
async fn assert_redirected_error(app: &TestApp, params: Vec<(String, String)>, expected: &str) {
    let response = app.authorize(&params).await;
    assert_eq!(response.status(), 302, "{expected}");
    let redirect = location(&response);
    assert!(redirect.starts_with(REDIRECT_URI), "{redirect}");
    assert_eq!(param(&redirect, "error").as_deref(), Some(expected), "{redirect}");
    assert!(param(&redirect, "error_description").is_some());
    assert_eq!(param(&redirect, "state").as_deref(), Some("st"));
    assert_eq!(param(&redirect, "iss").as_deref(), Some(app.issuer.as_str()));
}

fn without(mut params: Vec<(String, String)>, name: &str) -> Vec<(String, String)> {
    params.retain(|(k, _)| k != name);
    params
}

fn with(params: Vec<(String, String)>, name: &str, value: &str) -> Vec<(String, String)> {
    let mut params = without(params, name);
    params.push((name.into(), value.into()));
    params
}

#[tokio::test]
async fn missing_or_plain_pkce_is_rejected_with_a_redirect() {
    let app = spawn_app().await;
    let pkce = Pkce::new();
    let base = app.authorize_query(&pkce, "st");
    assert_redirected_error(
        &app,
        without(without(base.clone(), "code_challenge"), "code_challenge_method"),
        "invalid_request",
    )
    .await;
    assert_redirected_error(
        &app,
        with(base.clone(), "code_challenge_method", "plain"),
        "invalid_request",
    )
    .await;
    assert_redirected_error(&app, without(base.clone(), "code_challenge_method"), "invalid_request").await;
    assert_redirected_error(&app, with(base, "code_challenge", "too-short"), "invalid_request").await;
}

#[tokio::test]
async fn other_authorization_errors_redirect_with_state_and_iss() {
    let app = spawn_app().await;
    let base = app.authorize_query(&Pkce::new(), "st");
    assert_redirected_error(
        &app,
        with(base.clone(), "response_type", "token"),
        "unsupported_response_type",
    )
    .await;
    assert_redirected_error(&app, without(base.clone(), "response_type"), "invalid_request").await;
    assert_redirected_error(&app, with(base.clone(), "scope", "admin"), "invalid_scope").await;
    assert_redirected_error(
        &app,
        with(base.clone(), "resource", "https://not-allowed.example"),
        "invalid_target",
    )
    .await;
    let mut repeated = base.clone();
    repeated.push(("scope".into(), "read".into()));
    assert_redirected_error(&app, repeated, "invalid_request").await;
}

#[tokio::test]
async fn deny_redirects_with_access_denied() {
    let app = spawn_app().await;
    let params = app.authorize_query(&Pkce::new(), "st");
    let login = app.authorize(&params).await;
    app.log_in(&location(&login), USERNAME, PASSWORD).await;
    let response = app.consent(&params, "deny").await;
    assert_eq!(response.status(), 303);
    let redirect = location(&response);
    assert_eq!(param(&redirect, "error").as_deref(), Some("access_denied"));
    assert_eq!(param(&redirect, "state").as_deref(), Some("st"));
    assert_eq!(param(&redirect, "iss").as_deref(), Some(app.issuer.as_str()));
}

#[tokio::test]
async fn consent_without_the_csrf_token_is_refused() {
    let app = spawn_app().await;
    let params = app.authorize_query(&Pkce::new(), "st");
    let login = app.authorize(&params).await;
    app.log_in(&location(&login), USERNAME, PASSWORD).await;
    for form in [
        vec![("decision", "allow")],
        vec![("decision", "allow"), ("csrf_token", "forged")],
    ] {
        let response = app
            .http
            .post(app.url("/o/authorize/"))
            .query(&params)
            .form(&form)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 403);
        assert!(response.headers().get("location").is_none(), "no code is issued");
    }
}

#[tokio::test]
async fn login_without_the_csrf_token_is_refused() {
    let app = spawn_app().await;
    // Visit the login page so the browser has a session, then post without its token.
    app.http.get(app.url("/o/login/")).send().await.unwrap();
    let response = app
        .http
        .post(app.url("/o/login/"))
        .form(&[("username", USERNAME), ("password", PASSWORD), ("csrf_token", "")])
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 403);
    assert!(response.headers().get("set-cookie").is_none(), "no session is started");
}

#[tokio::test]
async fn failed_login_does_not_say_which_field_was_wrong() {
    let app = spawn_app().await;
    let params = app.authorize_query(&Pkce::new(), "st");
    let next = location(&app.authorize(&params).await);
    let wrong_password = app.log_in(&next, USERNAME, "wrong password").await;
    let unknown_user = app.log_in(&next, "mallory", "wrong password").await;
    assert_eq!(wrong_password.status(), 401);
    assert_eq!(unknown_user.status(), 401);
    let (a, b) = (wrong_password.text().await.unwrap(), unknown_user.text().await.unwrap());
    assert!(a.contains("Invalid username or password.") && b.contains("Invalid username or password."));
}

#[tokio::test]
async fn pages_forbid_framing_and_the_session_cookie_is_httponly_and_lax() {
    let app = spawn_app().await;
    let response = app.http.get(app.url("/o/login/")).send().await.unwrap();
    let headers = response.headers();
    assert!(headers["content-security-policy"]
        .to_str()
        .unwrap()
        .contains("frame-ancestors 'none'"));
    assert_eq!(headers["x-frame-options"], "DENY");
    let cookie = headers["set-cookie"].to_str().unwrap();
    assert!(
        cookie.contains("HttpOnly") && cookie.contains("SameSite=Lax"),
        "{cookie}"
    );
    assert!(!cookie.contains("Secure"), "the issuer is http here");
}

#[tokio::test]
async fn login_never_redirects_off_site() {
    let app = spawn_app().await;
    let login = app
        .log_in("/o/login/?next=https%3A%2F%2Fevil.example%2F", USERNAME, PASSWORD)
        .await;
    assert_eq!(login.status(), 303);
    assert_eq!(location(&login), "/", "an off-site next is replaced by the home page");
}

#[tokio::test]
async fn code_cannot_be_redeemed_twice_and_replay_revokes_its_tokens() {
    let app = spawn_app().await;
    let (code, pkce) = app.get_code().await;
    let first = app.exchange_code(&code, &pkce.verifier).await;
    assert_eq!(first.status(), 200);
    let tokens: serde_json::Value = first.json().await.unwrap();
    let replay = app.exchange_code(&code, &pkce.verifier).await;
    assert_eq!(replay.status(), 400);
    assert_eq!(
        replay.json::<serde_json::Value>().await.unwrap()["error"],
        "invalid_grant"
    );
    // RFC 6749 §4.1.2: tokens issued from a replayed code are revoked.
    let refresh = app.refresh(tokens["refresh_token"].as_str().unwrap()).await;
    assert_eq!(refresh.status(), 400);
    assert_eq!(
        app.introspect(tokens["access_token"].as_str().unwrap()).await["active"],
        false
    );
}

#[tokio::test]
async fn wrong_or_missing_pkce_verifier_is_invalid_grant() {
    let app = spawn_app().await;
    let (code, _) = app.get_code().await;
    let response = app.exchange_code(&code, &Pkce::new().verifier).await;
    assert_eq!(response.status(), 400);
    assert_eq!(
        response.json::<serde_json::Value>().await.unwrap()["error"],
        "invalid_grant"
    );

    let (code, _) = app.get_code().await;
    let form = [
        ("grant_type", "authorization_code"),
        ("code", code.as_str()),
        ("redirect_uri", REDIRECT_URI),
    ];
    let response = app.token(&app.client, &form).await;
    assert_eq!(
        response.json::<serde_json::Value>().await.unwrap()["error"],
        "invalid_grant"
    );
}

#[tokio::test]
async fn a_verifier_without_a_challenge_is_a_downgrade_and_rejected() {
    // With PKCE optional for confidential clients, a code may be issued without a challenge;
    // sending a verifier for it anyway is refused (RFC 9700 §4.8.2).
    let dirs = tempfile::tempdir().unwrap();
    let config = tessera::Config {
        require_pkce: false,
        ..test_config(&dirs)
    };
    let app = spawn_app_with(config, dirs).await;
    let params: Vec<(String, String)> = app
        .authorize_query(&Pkce::new(), "st")
        .into_iter()
        .filter(|(k, _)| !k.starts_with("code_challenge"))
        .collect();
    let redirect = app.authorize_and_allow(&params).await;
    let code = param(&redirect, "code").unwrap();
    let response = app.exchange_code(&code, &Pkce::new().verifier).await;
    assert_eq!(response.status(), 400);
    assert_eq!(
        response.json::<serde_json::Value>().await.unwrap()["error"],
        "invalid_grant"
    );
}

#[tokio::test]
async fn a_code_issued_to_another_client_is_invalid_grant() {
    let app = spawn_app().await;
    let (code, pkce) = app.get_code().await;
    let form = [
        ("grant_type", "authorization_code"),
        ("code", code.as_str()),
        ("redirect_uri", REDIRECT_URI),
        ("code_verifier", pkce.verifier.as_str()),
    ];
    let response = app.token(&app.public_client, &form).await;
    assert_eq!(response.status(), 400);
    assert_eq!(
        response.json::<serde_json::Value>().await.unwrap()["error"],
        "invalid_grant"
    );
}

#[tokio::test]
async fn a_different_redirect_uri_at_the_token_endpoint_is_invalid_grant() {
    let app = spawn_app().await;
    let (code, pkce) = app.get_code().await;
    let form = [
        ("grant_type", "authorization_code"),
        ("code", code.as_str()),
        ("redirect_uri", "https://app.example/other"),
        ("code_verifier", pkce.verifier.as_str()),
    ];
    let response = app.token(&app.client, &form).await;
    assert_eq!(
        response.json::<serde_json::Value>().await.unwrap()["error"],
        "invalid_grant"
    );
}

#[tokio::test]
async fn an_expired_code_is_invalid_grant() {
    let dirs = tempfile::tempdir().unwrap();
    let config = tessera::Config {
        code_ttl: std::time::Duration::from_secs(1),
        ..test_config(&dirs)
    };
    let app = spawn_app_with(config, dirs).await;
    let (code, pkce) = app.get_code().await;
    tokio::time::sleep(std::time::Duration::from_millis(2100)).await;
    let response = app.exchange_code(&code, &pkce.verifier).await;
    assert_eq!(response.status(), 400);
    let body: serde_json::Value = response.json().await.unwrap();
    assert_eq!(body["error"], "invalid_grant");
    assert_eq!(body["error_description"], "the code has expired");
}

#[tokio::test]
async fn with_an_https_issuer_the_session_cookie_is_secure_and_host_only() {
    let dirs = tempfile::tempdir().unwrap();
    let issuer = Some(url::Url::parse("https://auth.example").unwrap());
    let app = spawn_app_with(
        tessera::Config {
            issuer,
            ..test_config(&dirs)
        },
        dirs,
    )
    .await;
    let form = app.http.get(app.url("/o/login/")).send().await.unwrap();
    let cookie = form.headers()["set-cookie"].to_str().unwrap().to_string();
    assert!(cookie.starts_with("__Host-tessera_login="), "{cookie}");
    assert!(cookie.contains("; Secure") && cookie.contains("HttpOnly") && cookie.contains("SameSite=Lax"));
    // The session cookie comes with the login, and is pinned the same way. (The test client
    // talks plain http, so it sends the Secure form cookie back by hand.)
    let csrf = hidden_input(&form.text().await.unwrap(), "csrf_token").unwrap();
    let login = app
        .http
        .post(app.url("/o/login/"))
        .header("cookie", cookie.split(';').next().unwrap())
        .form(&[
            ("csrf_token", csrf.as_str()),
            ("username", USERNAME),
            ("password", PASSWORD),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(login.status(), 303);
    let session = login
        .headers()
        .get_all("set-cookie")
        .iter()
        .map(|v| v.to_str().unwrap())
        .find(|c| c.starts_with("__Host-tessera_session="))
        .expect("a session cookie")
        .to_string();
    assert!(session.contains("; Secure") && session.contains("HttpOnly") && session.contains("SameSite=Lax"));
}

// The first adversarial review (issue 11, `SECURITY.md`), each finding as the attack that
// found it; each test failed on the code the review ran against.

/// Finding 15: a replay that lands between the first exchange's redemption and its writing of
/// the grant found no grant to revoke, and the first exchange's tokens escaped revocation.
/// Then, codes exchanged 8 times at once, 20 times over: at most one exchange wins each time,
/// and its tokens are always dead afterwards, since every code was replayed.
#[tokio::test]
async fn a_code_replayed_during_its_first_exchange_still_revokes_what_it_produced() {
    let app = std::sync::Arc::new(spawn_app().await);
    // The exact interleaving: the first exchange has redeemed the code (here, directly in the
    // store) but not yet written its grant when the replay arrives.
    let (code, pkce) = app.get_code().await;
    let tessera::store::Redemption::Fresh(first) = app
        .store
        .redeem_code(&tessera::oauth::secret_hash(&code))
        .await
        .unwrap()
    else {
        panic!("a fresh code")
    };
    assert_eq!(app.exchange_code(&code, &pkce.verifier).await.status(), 400);
    let grant = app.store.get_grant(&first.grant_id).await.unwrap();
    assert!(
        grant.is_some_and(|g| g.revoked),
        "the replay leaves a revoked grant for the first exchange to find"
    );
    let late = tessera::store::GrantRecord {
        grant_id: first.grant_id.clone(),
        client_id: first.client_id.clone(),
        user_id: first.user_id.clone(),
        scope: first.scope.clone(),
        audience: first.audience.clone(),
        auth_time: first.auth_time,
        created_at: 0,
        revoked: false,
        amr: first.amr.clone(),
    };
    assert!(
        !app.store.insert_grant(&late).await.unwrap(),
        "the first exchange cannot write a live grant over it"
    );

    for round in 0..20 {
        let (code, pkce) = app.get_code().await;
        let exchanges = (0..8).map(|_| {
            let (app, code, verifier) = (app.clone(), code.clone(), pkce.verifier.clone());
            async move {
                let response = app.exchange_code(&code, &verifier).await;
                (
                    response.status().as_u16(),
                    response.json::<serde_json::Value>().await.unwrap(),
                )
            }
        });
        let outcomes = join_all(exchanges).await;
        let winners: Vec<_> = outcomes.iter().filter(|(status, _)| *status == 200).collect();
        assert!(winners.len() <= 1, "round {round}: {outcomes:?}");
        for (_, tokens) in winners {
            let access = tokens["access_token"].as_str().unwrap();
            assert_eq!(app.introspect(access).await["active"], false, "round {round}");
            let refreshed = app.refresh(tokens["refresh_token"].as_str().unwrap()).await;
            assert_eq!(refreshed.status(), 400, "round {round}");
        }
    }
}

/// Finding 10: with an app anyone registered (in the pages, or by open dynamic registration)
/// whose redirect URI is the attacker's, `/o/authorize/?client_id=X&response_type=x` sent
/// any visitor there (RFC 9700 §4.11.2), and so did `/o/logout/` with its post-logout URI.
/// Now such a client's errors are shown, not redirected, until someone has logged in, and
/// its post-logout URI is only offered as a link to a visitor who was not logged in.
#[tokio::test]
async fn an_app_anyone_registered_cannot_turn_tessera_into_an_open_redirector() {
    let app = spawn_app().await;
    let mallory = attacker(&app).await;
    let evil_logout = "https://evil.example/logged-out";
    let response = register(
        &mallory,
        &[
            ("name", "Redirector"),
            ("client_type", "public"),
            ("grant_authorization_code", "on"),
            ("redirect_uris", EVIL_REDIRECT),
            ("post_logout_redirect_uris", evil_logout),
            ("scope_openid", "on"),
        ],
    )
    .await;
    let client_id = code_element(&response.text().await.unwrap(), "client-id").unwrap();

    let anyone = browser(&app);
    let with = |name: &str, value: &str| {
        let mut request = evil_request(&client_id);
        request.retain(|(k, _)| k != name && k != "scope");
        request.push((name.into(), value.into()));
        request.push(("scope".into(), "openid".into()));
        request
    };
    let bad_type = with("response_type", "x");
    let silent = with("prompt", "none");
    for (request, what) in [(&bad_type, "unsupported_response_type"), (&silent, "login_required")] {
        let answer = anyone.authorize(request).await;
        assert_eq!(answer.status(), 400, "{what} is shown, not redirected");
        assert!(answer.headers().get("location").is_none());
        let html = answer.text().await.unwrap();
        assert!(html.contains(what), "{what}: {html}");
    }
    // A logged-in user who never approved the app is not sent there either (the second
    // review: most visitors are logged in).
    let answer = mallory.authorize(&bad_type).await;
    assert_eq!(answer.status(), 400);
    assert!(answer.headers().get("location").is_none());
    // An operator's client is trusted with errors even before anyone logs in.
    let mut operator_request = app.authorize_query(&Pkce::new(), "s");
    operator_request.retain(|(k, _)| k != "response_type");
    operator_request.push(("response_type".into(), "x".into()));
    assert_eq!(anyone.authorize(&operator_request).await.status(), 302);

    // Logout: a visitor who was not logged in gets a page with a link, not a redirect; the
    // attacker's own ID token for the app changes nothing.
    let tokens = {
        let pkce = Pkce::new();
        let request = with("code_challenge", &pkce.challenge);
        let redirect = mallory.authorize_and_allow(&request).await;
        let code = param(&redirect, "code").unwrap();
        let client = TestClient {
            id: client_id.clone(),
            secret: None,
        };
        let form = [
            ("grant_type", "authorization_code"),
            ("code", code.as_str()),
            ("redirect_uri", EVIL_REDIRECT),
            ("code_verifier", pkce.verifier.as_str()),
        ];
        let response = mallory.token(&client, &form).await;
        assert_eq!(response.status(), 200);
        response.json::<serde_json::Value>().await.unwrap()
    };
    let id_token = tokens["id_token"].as_str().unwrap();
    // Once the user has approved the app, its errors go back to it as usual.
    let answer = mallory.authorize(&bad_type).await;
    assert_eq!(answer.status(), 302);
    assert!(location(&answer).starts_with(EVIL_REDIRECT));
    for query in [
        vec![
            ("client_id", client_id.as_str()),
            ("post_logout_redirect_uri", evil_logout),
        ],
        vec![("id_token_hint", id_token), ("post_logout_redirect_uri", evil_logout)],
    ] {
        let answer = anyone
            .http
            .get(app.url("/o/logout/"))
            .query(&query)
            .send()
            .await
            .unwrap();
        assert_eq!(answer.status(), 200);
        assert!(answer.headers().get("location").is_none());
        let html = answer.text().await.unwrap();
        assert!(
            html.contains("continue there") && html.contains("evil.example"),
            "{html}"
        );
    }
    // The user who was logged in, logging out through the app, is sent on.
    let answer = mallory
        .http
        .get(app.url("/o/logout/"))
        .query(&[("id_token_hint", id_token), ("post_logout_redirect_uri", evil_logout)])
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 303);
    assert!(location(&answer).starts_with(evil_logout));
}
