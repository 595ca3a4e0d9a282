//! Pushed authorization requests (RFC 9126): a client pushes its request to `/o/par/`, the
//! browser brings only `client_id` and the `request_uri`; the request is validated when pushed,
//! used once, expires, cannot be changed from the browser, and can be required.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tessera::oauth::audit::Caller;

use jsonwebtoken::Algorithm;
use serde_json::Value;
use tessera::oauth::client::ClientKeys;
use tessera::oauth::client::NewClient;
use tessera::store::{ClientPolicy, ClientType, GrantType};

use crate::helpers::*;
use crate::private_key_jwt::TestKey;

const PREFIX: &str = "urn:ietf:params:oauth:request_uri:";

/// POSTs a pushed authorization request as `client` (HTTP Basic for a confidential one,
/// `client_id` in the form for a public one).
async fn push(
    app: &Remote,
    client: &TestClient,
    form: &[(String, String)],
) -> (u16, reqwest::header::HeaderMap, Value) {
    let mut request = app.http.post(app.url("/o/par/"));
    let mut form = form.to_vec();
    match &client.secret {
        Some(secret) => request = request.basic_auth(&client.id, Some(secret)),
        None => form.push(("client_id".into(), client.id.clone())),
    }
    let response = request.form(&form).send().await.unwrap();
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    (status, headers, response.json().await.unwrap_or(Value::Null))
}

/// The confidential client's usual request, less `client_id` (the authentication names it).
fn request(app: &Remote, pkce: &Pkce, state: &str) -> Vec<(String, String)> {
    app.authorize_query(pkce, state)
        .into_iter()
        .filter(|(name, _)| name != "client_id")
        .collect()
}

/// Pushes the confidential client's usual request, plus `extra`, and returns its `request_uri`.
async fn pushed(app: &Remote, pkce: &Pkce, state: &str, extra: &[(&str, &str)]) -> String {
    let mut form = request(app, pkce, state);
    form.extend(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())));
    let (status, _, body) = push(app, &app.client, &form).await;
    assert_eq!(status, 201, "{body}");
    body["request_uri"].as_str().unwrap().to_string()
}

fn by_reference(client_id: &str, request_uri: &str) -> Vec<(String, String)> {
    vec![
        ("client_id".into(), client_id.into()),
        ("request_uri".into(), request_uri.into()),
    ]
}

/// The error page a refused authorization request shows: status, and the page text.
async fn refused(app: &Remote, params: &[(String, String)]) -> (u16, String) {
    let response = app.authorize(params).await;
    assert!(
        response.headers().get("location").is_none(),
        "a refused request is shown, never redirected"
    );
    let status = response.status().as_u16();
    (status, response.text().await.unwrap())
}

#[tokio::test]
async fn a_pushed_request_runs_the_code_flow_once() {
    let app = spawn_app().await;
    let pkce = Pkce::new();
    let (status, headers, body) = push(&app, &app.client, &request(&app, &pkce, "pushed-state")).await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(headers["cache-control"], "no-store");
    assert_eq!(body["expires_in"], 60);
    let request_uri = body["request_uri"].as_str().unwrap();
    assert!(request_uri.starts_with(PREFIX), "{request_uri}");
    assert!(request_uri.len() > PREFIX.len() + 40, "the reference is unguessable");

    let params = by_reference(&app.client.id, request_uri);
    let redirect = app.authorize_and_allow(&params).await;
    assert!(redirect.starts_with(REDIRECT_URI), "{redirect}");
    assert_eq!(param(&redirect, "state").as_deref(), Some("pushed-state"));
    let code = param(&redirect, "code").expect("a code");
    let tokens = app.exchange_code(&code, &pkce.verifier).await;
    assert_eq!(tokens.status(), 200);
    let tokens: Value = tokens.json().await.unwrap();
    assert_eq!(tokens["scope"], "read write");

    // Used up: the consent is remembered now, so only single use stands between this and a
    // second code.
    let (status, page) = refused(&app, &params).await;
    assert_eq!(status, 400);
    assert!(page.contains("invalid_request_uri"), "{page}");
}

#[tokio::test]
async fn parameters_in_the_query_beside_a_request_uri_are_ignored() {
    let app = spawn_app().await;
    let pkce = Pkce::new();
    let mut form = request(&app, &pkce, "honest");
    form.retain(|(name, _)| name != "scope");
    form.push(("scope".into(), "read".into()));
    let (status, _, body) = push(&app, &app.client, &form).await;
    assert_eq!(status, 201, "{body}");
    let mut params = by_reference(&app.client.id, body["request_uri"].as_str().unwrap());
    // What someone at the browser might add to widen or redirect the request.
    for (name, value) in [
        ("scope", "read write"),
        ("state", "tampered"),
        ("redirect_uri", "https://evil.example/cb"),
        ("code_challenge", "tampered-challenge-tampered-challenge-tampered"),
    ] {
        params.push((name.into(), value.into()));
    }
    let redirect = app.authorize_and_allow(&params).await;
    assert!(redirect.starts_with(REDIRECT_URI), "{redirect}");
    assert_eq!(param(&redirect, "state").as_deref(), Some("honest"));
    let code = param(&redirect, "code").unwrap();
    let tokens: Value = app.exchange_code(&code, &pkce.verifier).await.json().await.unwrap();
    assert_eq!(tokens["scope"], "read", "{tokens}");
}

#[tokio::test]
async fn a_request_uri_must_be_ours_unexpired_and_the_clients() {
    let dirs = tempfile::tempdir().unwrap();
    let mut config = test_config(&dirs);
    // Two seconds: times count in whole seconds, so a one-second lifetime can be over within
    // milliseconds of the push on a loaded machine.
    config.par_ttl = Duration::from_secs(2);
    let app = spawn_app_with(config, dirs).await;
    let pkce = Pkce::new();

    // Another client's request_uri.
    let request_uri = pushed(&app, &pkce, "s", &[]).await;
    let (status, page) = refused(&app, &by_reference(&app.public_client.id, &request_uri)).await;
    assert_eq!(status, 400);
    assert!(page.contains("another client"), "{page}");
    // Made up, or not ours at all.
    for made_up in [
        format!("{PREFIX}{}", "A".repeat(43)),
        PREFIX.to_string(),
        format!("{PREFIX}{}", "A".repeat(5000)),
    ] {
        let (status, page) = refused(&app, &by_reference(&app.client.id, &made_up)).await;
        assert_eq!(status, 400, "{made_up}");
        assert!(page.contains("invalid_request_uri"), "{page}");
    }
    // Any other request_uri would name a request object: not supported (OpenID Connect Core §6).
    let mut query = app.authorize_query(&pkce, "s");
    query.push(("request_uri".into(), "https://evil.example/request.jwt".into()));
    let object = app.authorize(&query).await;
    assert_eq!(
        param(&location(&object), "error").as_deref(),
        Some("request_uri_not_supported")
    );
    // Without client_id (RFC 9126 §4 requires it).
    let (status, _) = refused(&app, &[("request_uri".into(), request_uri.clone())]).await;
    assert_eq!(status, 400);

    // Expired before it was used (times count in whole seconds)...
    tokio::time::sleep(Duration::from_millis(3100)).await;
    let (status, page) = refused(&app, &by_reference(&app.client.id, &request_uri)).await;
    assert_eq!(status, 400);
    assert!(page.contains("expired"), "{page}");

    // ...but once started, the login and consent may take longer than `par_ttl`.
    let request_uri = pushed(&app, &pkce, "slow", &[]).await;
    let params = by_reference(&app.client.id, &request_uri);
    let first = app.authorize(&params).await;
    assert_eq!(first.status(), 302, "off to the login page");
    assert!(location(&first).starts_with("/o/login/"));
    tokio::time::sleep(Duration::from_millis(3100)).await;
    let redirect = app.authorize_and_allow(&params).await;
    assert_eq!(param(&redirect, "state").as_deref(), Some("slow"), "{redirect}");
}

#[tokio::test]
async fn pushing_validates_the_request_and_authenticates_the_client() {
    let app = spawn_app().await;
    let pkce = Pkce::new();
    let good = request(&app, &pkce, "s");
    let with = |name: &str, value: &str| {
        let mut form: Vec<(String, String)> = good.iter().filter(|(n, _)| n != name).cloned().collect();
        form.push((name.into(), value.into()));
        form
    };
    for (form, code) in [
        (with("redirect_uri", "https://evil.example/cb"), "invalid_request"),
        (with("response_type", "token"), "unsupported_response_type"),
        (with("scope", "read admin-everything"), "invalid_scope"),
        (with("code_challenge_method", "plain"), "invalid_request"),
        (with("request_uri", &format!("{PREFIX}abc")), "invalid_request"),
        (with("request", "eyJhbGciOiJub25lIn0.e30."), "request_not_supported"),
        (with("prompt", "none login"), "invalid_request"),
        (with("client_id", &app.public_client.id), "invalid_request"),
    ] {
        let (status, headers, body) = push(&app, &app.client, &form).await;
        assert_eq!(status, 400, "{form:?}: {body}");
        assert_eq!(body["error"], code, "{form:?}: {body}");
        assert!(headers.get("location").is_none());
    }
    // Duplicated parameters are refused, not guessed between.
    let mut duplicated = good.clone();
    duplicated.push(("state".into(), "second".into()));
    let (status, _, body) = push(&app, &app.client, &duplicated).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (400, Some("invalid_request")),
        "{body}"
    );

    // Client authentication: a wrong secret, nobody, a GET.
    let wrong = TestClient {
        id: app.client.id.clone(),
        secret: Some("wrong".into()),
    };
    let (status, headers, body) = push(&app, &wrong, &good).await;
    assert_eq!((status, body["error"].as_str()), (401, Some("invalid_client")));
    assert!(headers.get("www-authenticate").is_some());
    let anonymous = app.http.post(app.url("/o/par/")).form(&good).send().await.unwrap();
    assert_eq!(anonymous.status(), 401);
    let get = app.http.get(app.url("/o/par/")).send().await.unwrap();
    assert_eq!(get.status(), 405);
    let json = app
        .http
        .post(app.url("/o/par/"))
        .basic_auth(&app.client.id, app.client.secret.as_ref())
        .json(&serde_json::json!({"response_type": "code"}))
        .send()
        .await
        .unwrap();
    assert_eq!(json.status(), 400);

    // A public client pushes with its client_id, and must use PKCE.
    let public_request = |challenge: bool| {
        let mut form: Vec<(String, String)> = vec![
            ("response_type".into(), "code".into()),
            ("redirect_uri".into(), "http://127.0.0.1/callback".into()),
            ("scope".into(), "read".into()),
        ];
        if challenge {
            form.push(("code_challenge".into(), pkce.challenge.clone()));
            form.push(("code_challenge_method".into(), "S256".into()));
        }
        form
    };
    let (status, _, body) = push(&app, &app.public_client, &public_request(false)).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (400, Some("invalid_request")),
        "{body}"
    );
    let (status, _, body) = push(&app, &app.public_client, &public_request(true)).await;
    assert_eq!(status, 201, "{body}");
}

#[tokio::test]
async fn a_client_pushes_with_client_secret_post_and_private_key_jwt() {
    let app = spawn_app().await;
    let pkce = Pkce::new();
    // client_secret_post
    let mut form = request(&app, &pkce, "post");
    form.push(("client_id".into(), app.client.id.clone()));
    form.push(("client_secret".into(), app.client.secret.clone().unwrap()));
    let response = app.http.post(app.url("/o/par/")).form(&form).send().await.unwrap();
    assert_eq!(response.status(), 201);

    // private_key_jwt, with the PAR endpoint or the issuer as the audience.
    let key = TestKey::new(Algorithm::ES256);
    let (client, _) = app
        .provider
        .register_client(
            &Caller::system(),
            NewClient {
                redirect_uris: vec![REDIRECT_URI.into()],
                keys: Some(ClientKeys::Jwks(key.jwks())),
                ..client_settings(
                    "Key Client",
                    ClientType::Confidential,
                    vec![GrantType::AuthorizationCode],
                )
            },
        )
        .await
        .unwrap();
    for audience in [app.url("/o/par/"), app.issuer.clone()] {
        let mut form = request(&app, &pkce, "key");
        form.retain(|(name, _)| name != "scope");
        form.push(("scope".into(), "read".into()));
        form.push((
            "client_assertion_type".into(),
            "urn:ietf:params:oauth:client-assertion-type:jwt-bearer".into(),
        ));
        form.push(("client_assertion".into(), key.assertion(&client.client_id, &audience)));
        form.push(("client_id".into(), client.client_id.clone()));
        let response = app.http.post(app.url("/o/par/")).form(&form).send().await.unwrap();
        assert_eq!(response.status(), 201, "{audience}: {}", response.text().await.unwrap());
    }
}

#[tokio::test]
async fn require_pushed_authorization_requests_is_enforced_per_client_and_server_wide() {
    let app = spawn_app().await;
    let pkce = Pkce::new();
    let metadata = app.get_json("/.well-known/oauth-authorization-server").await;
    assert_eq!(metadata["pushed_authorization_request_endpoint"], app.url("/o/par/"));
    assert_eq!(metadata["require_pushed_authorization_requests"], false);

    let (strict, secret) = app
        .provider
        .register_client(
            &Caller::system(),
            NewClient {
                redirect_uris: vec![REDIRECT_URI.into()],
                policy: ClientPolicy {
                    require_pushed_authorization_requests: true,
                    ..Default::default()
                },
                ..client_settings("Strict", ClientType::Confidential, vec![GrantType::AuthorizationCode])
            },
        )
        .await
        .unwrap();
    let strict = TestClient {
        id: strict.client_id,
        secret,
    };
    let mut query = app.authorize_query(&pkce, "s");
    for (name, value) in query.iter_mut() {
        if name == "client_id" {
            *value = strict.id.clone();
        } else if name == "scope" {
            *value = "read".into();
        }
    }
    let (status, page) = refused(&app, &query).await;
    assert_eq!(status, 400);
    assert!(page.contains("push"), "{page}");
    // The seeded client is not required to.
    let ordinary = app.authorize(&app.authorize_query(&pkce, "s")).await;
    assert_eq!(ordinary.status(), 302);
    // Pushed, the strict client's request goes through.
    let form: Vec<_> = query.into_iter().filter(|(n, _)| n != "client_id").collect();
    let (status, _, body) = push(&app, &strict, &form).await;
    assert_eq!(status, 201, "{body}");
    let redirect = app
        .authorize_and_allow(&by_reference(&strict.id, body["request_uri"].as_str().unwrap()))
        .await;
    assert!(param(&redirect, "code").is_some(), "{redirect}");

    // Server-wide.
    let dirs = tempfile::tempdir().unwrap();
    let mut config = test_config(&dirs);
    config.require_pushed_authorization_requests = true;
    let app = spawn_app_with(config, dirs).await;
    let metadata = app.get_json("/.well-known/openid-configuration").await;
    assert_eq!(metadata["require_pushed_authorization_requests"], true);
    let (status, page) = refused(&app, &app.authorize_query(&pkce, "s")).await;
    assert_eq!(status, 400);
    assert!(page.contains("push"), "{page}");
    let request_uri = pushed(&app, &pkce, "s", &[]).await;
    let redirect = app
        .authorize_and_allow(&by_reference(&app.client.id, &request_uri))
        .await;
    assert!(param(&redirect, "code").is_some(), "{redirect}");
}

#[tokio::test]
async fn fifty_browsers_racing_one_request_uri_get_one_code() {
    let app = spawn_app().await;
    // Log in and approve once, so the next request goes straight to a code.
    app.get_code().await;
    let pkce = Pkce::new();
    let request_uri = pushed(&app, &pkce, "race", &[]).await;
    let params = by_reference(&app.client.id, &request_uri);
    let mut tasks = Vec::new();
    for _ in 0..50 {
        let (remote, params) = ((*app).clone(), params.clone());
        tasks.push(tokio::spawn(async move {
            let response = remote.authorize(&params).await;
            response
                .headers()
                .get("location")
                .map(|l| l.to_str().unwrap().to_string())
        }));
    }
    let mut codes = 0;
    for task in tasks {
        if let Some(location) = task.await.unwrap() {
            assert!(param(&location, "code").is_some(), "{location}");
            codes += 1;
        }
    }
    assert_eq!(codes, 1, "one pushed request, one code");
}

#[tokio::test]
async fn a_login_on_the_way_satisfies_prompt_login_in_a_pushed_request() {
    let app = spawn_app().await;
    app.get_code().await;
    let pkce = Pkce::new();
    let mut form = request(&app, &pkce, "again");
    form.push(("prompt".into(), "login".into()));
    let (status, _, body) = push(&app, &app.client, &form).await;
    assert_eq!(status, 201, "{body}");
    let params = by_reference(&app.client.id, body["request_uri"].as_str().unwrap());
    let first = app.authorize(&params).await;
    assert_eq!(first.status(), 302);
    let next = location(&first);
    assert!(next.starts_with("/o/login/"), "prompt=login asks for a login: {next}");
    // Login times count in whole seconds: a login in the second of the push does not count.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let login = app.log_in(&next, USERNAME, PASSWORD).await;
    assert_eq!(login.status(), 303);
    // Back at the authorization endpoint, the login counts: a code, not another login page.
    let back = app.authorize(&params).await;
    assert_eq!(back.status(), 302);
    let redirect = location(&back);
    assert!(param(&redirect, "code").is_some(), "{redirect}");
}

#[tokio::test]
async fn openid_client_uses_the_par_endpoint_from_discovery() {
    let app = spawn_app().await;
    let rp = app.register_relying_party(None, None).await;
    let report = crate::interop::node_script(
        "openid_client_par.mjs",
        &[
            &app.issuer,
            &rp.id,
            rp.secret.as_deref().unwrap(),
            REDIRECT_URI,
            USERNAME,
            PASSWORD,
        ],
    )
    .await;
    let query = report["authorization_query"].as_object().unwrap();
    let mut names: Vec<_> = query.keys().map(String::as_str).collect();
    names.sort();
    assert_eq!(
        names,
        ["client_id", "request_uri"],
        "only the reference reaches the browser"
    );
    assert!(query["request_uri"].as_str().unwrap().starts_with(PREFIX));
    assert!(report["consent_page"].as_str().unwrap().contains("profile"), "{report}");
    let user = app.store.get_user_by_name(USERNAME).await.unwrap().unwrap();
    assert_eq!(report["claims"]["sub"], user.user_id.as_str());
    assert_eq!(report["claims"]["aud"], rp.id.as_str());
    assert_eq!(report["reuse_status"], 400, "{report}");
    assert_eq!(report["reuse_location"], Value::Null);
    assert_eq!(report["reuse_page"], "invalid_request_uri");
}

#[tokio::test]
async fn the_login_page_prefills_a_pushed_login_hint() {
    let app = spawn_app().await;
    let pkce = Pkce::new();
    let mut form = request(&app, &pkce, "s");
    form.push(("login_hint".into(), "hinted-user".into()));
    let (status, _, body) = push(&app, &app.client, &form).await;
    assert_eq!(status, 201, "{body}");
    let request_uri = body["request_uri"].as_str().unwrap();
    let to_login = app.authorize(&by_reference(&app.client.id, request_uri)).await;
    assert_eq!(to_login.status(), 302);
    let page = app.get_text(&location(&to_login)).await;
    assert!(page.contains("value=\"hinted-user\""), "{page}");
    // Named with another client's id, the pushed request says nothing.
    let other = format!(
        "/o/login/?next={}",
        url::form_urlencoded::byte_serialize(
            format!(
                "/o/authorize/?client_id={}&request_uri={request_uri}",
                app.public_client.id
            )
            .as_bytes()
        )
        .collect::<String>()
    );
    assert!(!app.get_text(&other).await.contains("hinted-user"));
}

#[tokio::test]
async fn errors_for_visitors_do_not_use_a_pushed_request_up() {
    let app = spawn_app().await;
    app.get_code().await;
    let pkce = Pkce::new();
    let mut form = request(&app, &pkce, "quiet");
    form.push(("prompt".into(), "none".into()));
    let (status, _, body) = push(&app, &app.client, &form).await;
    assert_eq!(status, 201, "{body}");
    let params = by_reference(&app.client.id, body["request_uri"].as_str().unwrap());
    // Strangers without a session get the client's login_required, as often as they like,
    // and spend nothing (review finding: each error used to take a one-time entry).
    for _ in 0..3 {
        let stranger = browser(&app).authorize(&params).await;
        assert_eq!(stranger.status(), 302);
        assert_eq!(param(&location(&stranger), "error").as_deref(), Some("login_required"));
    }
    // The user it was meant for still gets the code.
    let response = app.authorize(&params).await;
    assert_eq!(response.status(), 302);
    let redirect = location(&response);
    assert_eq!(param(&redirect, "state").as_deref(), Some("quiet"));
    assert!(param(&redirect, "code").is_some(), "{redirect}");
}

// The pre-release attack on pushed authorization requests and the client policy settings
// (DPoP required, PAR required, token exchange): each test failed while its bug was there.

fn location_of(response: &reqwest::Response) -> Option<String> {
    response
        .headers()
        .get("location")
        .map(|l| l.to_str().unwrap().to_string())
}

/// Was: `pushed_login_done` dropped `prompt=login` and `max_age` from the stored request when
/// the browser was *sent* to the login page, not when a login actually happened. A browser with a
/// stale session that simply comes back to the same URL (without logging in) gets a code with
/// its old `auth_time`: the browser removed two parameters of a pushed request, which RFC 9126
/// exists to prevent, and `max_age`/`prompt=login` (OpenID Connect Core §3.1.2.1: the OP
/// MUST actively re-authenticate) are not enforced. Anyone who knows the `request_uri` (it is
/// in the URL) can strip them before the user arrives, by one anonymous visit.
#[tokio::test]
async fn prompt_login_and_max_age_of_a_pushed_request_need_an_actual_login() {
    let app = spawn_app().await;
    // Logged in, and the app approved: the next request would go straight to a code.
    app.get_code().await;
    for extra in [("prompt", "login"), ("max_age", "0")] {
        let params = by_reference(&app.client.id, &pushed(&app, &Pkce::new(), "stale", &[extra]).await);
        let first = app.authorize(&params).await;
        assert_eq!(first.status(), 302);
        let next = location_of(&first).unwrap();
        assert!(next.starts_with("/o/login/"), "{extra:?} asks for a login: {next}");
        // The user does not log in; the browser just asks again.
        let again = app.authorize(&params).await;
        let step = location_of(&again).unwrap_or_else(|| format!("a {} page", again.status()));
        assert!(
            step.starts_with("/o/login/"),
            "{extra:?} of a pushed request was dropped without any login: {step}"
        );
    }
    // The same by a third party's anonymous visit first.
    let params = by_reference(
        &app.client.id,
        &pushed(&app, &Pkce::new(), "stale", &[("max_age", "0")]).await,
    );
    let stranger = browser(&app);
    let visit = stranger.authorize(&params).await;
    assert_eq!(visit.status(), 302);
    let step = app.authorize(&params).await;
    let step = location_of(&step).unwrap_or_else(|| format!("a {} page", step.status()));
    assert!(
        step.starts_with("/o/login/"),
        "a stranger's visit removed max_age=0 from the user's pushed request: {step}"
    );
}

/// Was: `decide` (POST /o/authorize/) never re-checked the interaction: a pushed request with
/// `max_age=0` (or `prompt=login`) is approved with a stale session by posting the consent
/// answer directly, with the session's CSRF token (shown on any consent page).
#[tokio::test]
async fn the_consent_answer_to_a_pushed_request_enforces_max_age() {
    let app = spawn_app().await;
    app.get_code().await;
    // Any consent page carries the session's CSRF token.
    let mut query = app.authorize_query(&Pkce::new(), "csrf");
    query.push(("prompt".into(), "consent".into()));
    let page = app.authorize(&query).await;
    assert_eq!(page.status(), 200);
    let csrf = hidden_input(&page.text().await.unwrap(), "csrf_token").unwrap();

    let params = by_reference(
        &app.client.id,
        &pushed(&app, &Pkce::new(), "stale", &[("max_age", "0")]).await,
    );
    let answer = app
        .http
        .post(app.url("/o/authorize/"))
        .query(&params)
        .form(&[("csrf_token", csrf.as_str()), ("decision", "allow")])
        .send()
        .await
        .unwrap();
    let step = location_of(&answer).unwrap_or_default();
    assert!(
        step.starts_with("/o/login/"),
        "a max_age=0 pushed request approved without a login: {step}"
    );
}

/// Was: the pushed record was read, changed and written back without any compare-and-set
/// (`pushed_request` marking it started, `pushed_login_done` after a login redirect). An
/// anonymous visit that read the record just before the code was issued writes it back with
/// `used: false` after `use_pushed_request` marked it used: the request_uri comes back to life.
/// Every later anonymous visit then renews it for another 600 s (`pushed_login_done`), so it
/// outlives the 600 s `remember_once` guard, after which it yields a second code.
/// (Shown against `target/debug/tessera serve`: revived in round 36 of 200, kept alive by an
/// anonymous visit every 120 s, then 610 s after the first code the logged-in browser got a
/// second code from the same request_uri. This test stops at the revival, which takes no wait.)
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_used_request_uri_is_not_revived_by_racing_anonymous_visits() {
    let app = spawn_app().await;
    app.get_code().await;
    for round in 0..100 {
        let params = by_reference(&app.client.id, &pushed(&app, &Pkce::new(), "race", &[]).await);
        let stop = Arc::new(AtomicBool::new(false));
        let mut visitors = Vec::new();
        for _ in 0..12 {
            let (stranger, params, stop) = (browser(&app), params.clone(), stop.clone());
            visitors.push(tokio::spawn(async move {
                while !stop.load(Ordering::Relaxed) {
                    let _ = stranger.authorize(&params).await;
                }
            }));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
        let redirect = app.authorize(&params).await;
        let code = location_of(&redirect).and_then(|l| param(&l, "code"));
        tokio::time::sleep(Duration::from_millis(20)).await;
        stop.store(true, Ordering::Relaxed);
        for visitor in visitors {
            visitor.await.unwrap();
        }
        if code.is_none() {
            continue;
        }
        // The request_uri is used: everyone is told so from now on.
        let after = browser(&app).authorize(&params).await;
        let step = location_of(&after).unwrap_or_else(|| format!("a {} page", after.status()));
        assert!(
            !step.starts_with("/o/login/"),
            "round {round}: a used request_uri was revived by a racing anonymous visit ({step})"
        );
    }
}

/// Pushed requests live in the store's scratch space, which on one node holds at most 10,000
/// values and then drops the one that expires first. Anyone can push for a public client (no
/// secret): before the fix 1,000 at once and 500 a second per address, each up to the 64 KiB
/// body limit (`state` and `login_hint` had no length limit), so a few seconds of pushes (and
/// anonymous visits to start them) pushed every other user's pending request out, and 10,000 x
/// 64 KiB is ~640 MB of memory. Now a pushed request holds at most 8 KiB of parameters, and
/// pushes for clients anyone can push for are counted per address
/// (`pushed_requests_per_address_per_minute`, 30).
#[tokio::test]
async fn anonymous_pushes_cannot_evict_another_users_pending_request() {
    let app = spawn_app().await;
    // The victim: sent to log in by a pushed request of the confidential client.
    let victim = browser(&app);
    let pkce = Pkce::new();
    let params = by_reference(&app.client.id, &pushed(&app, &pkce, "victim", &[]).await);
    let first = victim.authorize(&params).await;
    let login = location_of(&first).unwrap();
    assert!(login.starts_with("/o/login/"), "{login}");

    // The attacker: pushes for the public client, and starts each push anonymously.
    let public = app.public_client.clone();
    let attacker_pkce = Pkce::new();
    let mut form: Vec<(String, String)> = [
        ("response_type", "code"),
        ("redirect_uri", "http://127.0.0.1/callback"),
        ("scope", "read"),
        ("code_challenge", attacker_pkce.challenge.as_str()),
        ("code_challenge_method", "S256"),
    ]
    .iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    let attacker = browser(&app);
    let mut big = form.clone();
    big.push(("state".into(), "x".repeat(9000)));
    let (status, _, body) = push(&attacker, &public, &big).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (400, Some("invalid_request")),
        "{body}"
    );
    form.push(("state".into(), "x".repeat(7000)));
    let (mut stored, mut refused) = (0, 0);
    for _ in 0..200 {
        let (status, _, body) = push(&attacker, &public, &form).await;
        match status {
            201 => {
                stored += 1;
                let params = by_reference(&public.id, body["request_uri"].as_str().unwrap());
                let _ = attacker.authorize(&params).await;
            }
            429 => refused += 1,
            other => panic!("{other}: {body}"),
        }
    }
    // Since the third review the budget is also in bytes kept (64 KiB a minute): eight such
    // pushes, not thirty.
    assert_eq!((stored, refused), (8, 192), "one address gets its budget, no more");

    // The victim logs in and comes back: their request must still be there.
    let logged_in = victim.log_in(&login, USERNAME, PASSWORD).await;
    assert_eq!(logged_in.status(), 303);
    let back = victim.authorize(&params).await;
    let status = back.status().as_u16();
    let text = back.text().await.unwrap();
    assert!(
        !text.contains("unknown, expired or already used"),
        "another client's anonymous pushes evicted the user's pending request ({status})"
    );
}

// The third adversarial review (issue 26, `SECURITY.md`), each finding as the attack that
// found it; each test failed on the code the review ran against.

/// Finding 3: the scratch space dropped the live value that expired first when full: 10,500
/// anonymous pushes for a public client (from 350 IPv6 /64s) made a victim's `request_uri`
/// unknown; on PostgreSQL the table grew without bound. Now pushes past the bound are refused
/// with 503 and `Retry-After`, and every pushed request already made keeps working.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn anonymous_pushes_never_evict_another_clients_pushed_request() {
    let dirs = tempfile::tempdir().unwrap();
    let config = tessera::Config {
        // As many addresses as the attacker likes.
        pushed_requests_per_address: tessera::rate_limit::Rate::OFF,
        rate_limit_per_address: tessera::rate_limit::Rate::OFF,
        rate_limit_per_client: tessera::rate_limit::Rate::OFF,
        ..test_config(&dirs)
    };
    let app = std::sync::Arc::new(spawn_app_with(config, dirs).await);
    let push = |app: std::sync::Arc<TestApp>, client: TestClient, state: String, http: reqwest::Client| async move {
        let pkce = Pkce::new();
        let redirect_uri = match client.secret {
            Some(_) => REDIRECT_URI,
            None => "http://127.0.0.1/callback",
        };
        let mut form = vec![
            ("response_type", "code".to_string()),
            ("redirect_uri", redirect_uri.into()),
            ("scope", "read".into()),
            ("state", state),
            ("code_challenge", pkce.challenge.clone()),
            ("code_challenge_method", "S256".into()),
        ];
        let mut request = http.post(app.url("/o/par/"));
        match &client.secret {
            Some(secret) => request = request.basic_auth(&client.id, Some(secret)),
            None => form.push(("client_id", client.id.clone())),
        }
        let response = request.form(&form).send().await.unwrap();
        let status = response.status().as_u16();
        let retry_after = response
            .headers()
            .get("retry-after")
            .and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
        let body: Value = response.json().await.unwrap_or(Value::Null);
        (status, retry_after, body)
    };
    let (status, _, body) = push(app.clone(), app.client.clone(), "victim".into(), app.http.clone()).await;
    assert_eq!(status, 201, "{body}");
    let victim = body["request_uri"].as_str().unwrap().to_string();

    // 10,500 pushes, 50 from each of 210 addresses (each within its byte budget).
    let attempts: Vec<usize> = (0..tessera::store::MAX_SCRATCH_VALUES + 500).collect();
    let public = app.public_client.clone();
    let flooders: Vec<reqwest::Client> = (0..=attempts.len() / 50)
        .map(|a| from_address([127, 0, 4 + (a / 200) as u8, (a % 200) as u8 + 1]))
        .collect();
    let outcomes = for_each_concurrent(attempts, 16, {
        let app = app.clone();
        move |i| {
            push(
                app.clone(),
                public.clone(),
                format!("flood-{i}"),
                flooders[i / 50].clone(),
            )
        }
    })
    .await;
    let stored = outcomes.iter().filter(|(status, ..)| *status == 201).count();
    let refused: Vec<_> = outcomes.iter().filter(|(status, ..)| *status != 201).collect();
    assert!(!refused.is_empty(), "the flood reached the bound ({stored} stored)");
    for (status, retry_after, body) in &refused {
        assert_eq!(*status, 503, "{body}");
        assert_eq!(body["error"], "temporarily_unavailable");
        // Room frees when the first push expires (`par_ttl`, 60 s), not in a second.
        assert!(retry_after.is_some_and(|s| s > 5 && s <= 60), "{retry_after:?}");
    }
    // The victim's request is still there, and starts (the login page), using the room kept
    // for flows under way.
    let page = app
        .authorize(&[
            ("client_id".to_string(), app.client.id.clone()),
            ("request_uri".to_string(), victim),
        ])
        .await;
    assert_eq!(page.status(), 302, "{}", page.text().await.unwrap());
    assert!(location(&page).starts_with("/o/login/"));
}

// The attack on the third review's fixes before their release (`SECURITY.md`), each as the
// attack.

/// The attack, 2: a pushed request of 8,000 control characters was 8,000 bytes as counted but
/// 48,000 as kept (each one escaped in JSON), past the scratch space's 16 KiB a value: a 500
/// on both backends. Now a pushed request is measured as kept, and a value too big to keep is
/// a 400.
#[tokio::test]
async fn a_pushed_request_of_control_characters_is_refused_not_a_500() {
    let app = spawn_app().await;
    let pkce = Pkce::new();
    for state in ["\u{1}".repeat(8000), "\u{1}".repeat(2000)] {
        let response = app
            .http
            .post(app.url("/o/par/"))
            .form(&[
                ("client_id", app.public_client.id.as_str()),
                ("response_type", "code"),
                ("redirect_uri", "http://127.0.0.1/callback"),
                ("code_challenge", pkce.challenge.as_str()),
                ("code_challenge_method", "S256"),
                ("state", state.as_str()),
            ])
            .send()
            .await
            .unwrap();
        let status = response.status().as_u16();
        let body: Value = response.json().await.unwrap();
        assert_eq!(
            (status, body["error"].as_str()),
            (400, Some("invalid_request")),
            "{body}"
        );
    }
}

/// The attack, 3: pushes of up to 16 KB each, 30 a minute from each of 70 addresses, filled
/// the scratch space in 3 s, and a push nobody started kept its room for 11 minutes. Now an
/// address may keep 64 KiB a minute there with such pushes, and an unstarted push keeps its room
/// for `par_ttl` only.
#[tokio::test]
async fn one_address_cannot_fill_the_scratch_space_with_big_pushes() {
    let app = spawn_app().await;
    let pkce = Pkce::new();
    let push = || {
        app.http
            .post(app.url("/o/par/"))
            .form(&[
                ("client_id", app.public_client.id.as_str()),
                ("response_type", "code"),
                ("redirect_uri", "http://127.0.0.1/callback"),
                ("code_challenge", pkce.challenge.as_str()),
                ("code_challenge_method", "S256"),
                ("state", "x".repeat(7900).as_str()),
            ])
            .send()
    };
    let mut statuses = Vec::new();
    for _ in 0..12 {
        statuses.push(push().await.unwrap().status().as_u16());
    }
    let stored = statuses.iter().filter(|s| **s == 201).count();
    assert!((7..=8).contains(&stored), "64 KiB of 8 KB pushes: {statuses:?}");
    assert!(statuses.iter().all(|s| [201, 429].contains(s)), "{statuses:?}");
}
