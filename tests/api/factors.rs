//! Second factors: an authenticator app (TOTP, RFC 6238) enrolled on the security page and
//! asked for after the password, recovery codes, and what tokens then say about the login
//! (`amr`, `acr`, `auth_time`). The codes are computed here by a second implementation of
//! RFC 6238 (HMAC-SHA-1 from ring, not the server's crate); the attacks: a replayed code,
//! parallel guesses against the throttle, a pending login's cookie without its password.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;

use crate::helpers::*;

/// RFC 4648 base32 (no padding), as authenticator apps read the secret shown.
pub(crate) fn base32_decode(text: &str) -> Vec<u8> {
    let alphabet = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
    let (mut bits, mut value, mut out) = (0u32, 0u64, Vec::new());
    for c in text.bytes().filter(|c| *c != b'=') {
        let index = alphabet
            .iter()
            .position(|a| *a == c.to_ascii_uppercase())
            .expect("base32") as u64;
        value = (value << 5) | index;
        bits += 5;
        if bits >= 8 {
            bits -= 8;
            out.push((value >> bits) as u8);
            value &= (1 << bits) - 1;
        }
    }
    out
}

/// The RFC 6238 code (SHA-1, 6 digits, 30 s) of `secret` for time step `step`.
pub(crate) fn code_at(secret: &[u8], step: u64) -> String {
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA1_FOR_LEGACY_USE_ONLY, secret);
    let mac = ring::hmac::sign(&key, &step.to_be_bytes());
    let mac = mac.as_ref();
    let offset = usize::from(mac[19] & 0xf);
    let number = u32::from_be_bytes(mac[offset..offset + 4].try_into().unwrap()) & 0x7fff_ffff;
    format!("{:06}", number % 1_000_000)
}

pub(crate) fn step_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        / 30
}

#[test]
fn the_tests_own_totp_matches_rfc_6238() {
    // RFC 6238 Appendix B, SHA-1, T = 59 s: 94287082 (8 digits), so 287082.
    assert_eq!(code_at(b"12345678901234567890", 59 / 30), "287082");
    assert_eq!(base32_decode("GEZDGNBV"), b"12345");
    assert_eq!(base32_encode(b"12345"), "GEZDGNBV");
}

/// Posts one action of the security page, with its CSRF token.
pub(crate) async fn security_action(browser: &Remote, fields: &[(&str, &str)]) -> reqwest::Response {
    let csrf = csrf_of(browser, "/o/security/").await;
    let mut form = vec![("csrf_token", csrf.as_str())];
    form.extend_from_slice(fields);
    browser
        .http
        .post(browser.url("/o/security/"))
        .form(&form)
        .send()
        .await
        .unwrap()
}

/// Logs `browser` in and adds an authenticator app from the security page, as a person would:
/// the secret read from the page, the first code typed. Returns the secret and the step whose
/// code was used.
pub(crate) async fn enrol_app(browser: &Remote) -> (Vec<u8>, u64) {
    assert_eq!(browser.log_in("/o/login/", USERNAME, PASSWORD).await.status(), 303);
    let started = security_action(browser, &[("action", "start_totp")]).await;
    assert_eq!(started.status(), 200);
    let page = started.text().await.unwrap();
    assert!(page.contains("<svg"), "the QR code is drawn on the server");
    let secret = base32_decode(&code_element(&page, "totp-secret").expect("the secret as text"));
    assert_eq!(secret.len(), 20, "a 160-bit secret");
    let step = step_now();
    let confirmed = security_action(
        browser,
        &[("action", "confirm_totp"), ("code", &code_at(&secret, step))],
    )
    .await;
    let page = confirmed.text().await.unwrap();
    assert!(page.contains("Your authenticator app is on"), "{page}");
    (secret, step)
}

/// Logs in with the password, and expects to be asked for a second factor: returns the
/// factor form's CSRF token and `next`.
pub(crate) async fn password_step(browser: &Remote, next: &str) -> (String, String) {
    let login = browser.log_in(next, USERNAME, PASSWORD).await;
    assert_eq!(login.status(), 303);
    let factor = location(&login);
    assert!(
        factor.starts_with("/o/login/factor/"),
        "asked for a second factor: {factor}"
    );
    let page = browser.get_text(&factor).await;
    let csrf = hidden_input(&page, "csrf_token").expect("the factor form's CSRF token");
    (csrf, hidden_input(&page, "next").unwrap_or_default())
}

pub(crate) async fn submit_code(browser: &Remote, csrf: &str, next: &str, code: &str) -> reqwest::Response {
    browser
        .http
        .post(browser.url("/o/login/factor/"))
        .form(&[("csrf_token", csrf), ("next", next), ("code", code)])
        .send()
        .await
        .unwrap()
}

#[tokio::test]
async fn an_authenticator_app_is_asked_for_after_the_password_and_tokens_say_so() {
    let app = spawn_app().await;
    let (secret, used_step) = enrol_app(&browser(&app)).await;

    let rp = app.register_relying_party(None, None).await;
    let person = browser(&app);
    let pkce = Pkce::new();
    let query = rp_query(&person, &rp, &pkce, &[]);
    let to_login = person.authorize(&query).await;
    assert_eq!(to_login.status(), 302);
    let (csrf, next) = password_step(&person, &location(&to_login)).await;
    assert!(next.starts_with("/o/authorize/"), "the way back is kept: {next}");

    // The code used to turn the app on is spent (it is still in its window), and so is a
    // wrong one.
    assert!(
        step_now() <= used_step + 1,
        "the enrolment's code would still be accepted"
    );
    let replayed = submit_code(&person, &csrf, &next, &code_at(&secret, used_step)).await;
    assert_eq!(replayed.status(), 401, "a code is accepted once");
    let wrong = submit_code(&person, &csrf, &next, "000000").await;
    assert_eq!(wrong.status(), 401);
    assert!(wrong.text().await.unwrap().contains("That code is not right"));

    // The next step's code (one step of drift is allowed) logs in.
    let right = submit_code(&person, &csrf, &next, &code_at(&secret, used_step + 1)).await;
    assert_eq!(right.status(), 303);
    assert_eq!(location(&right), next);

    let redirect = person.authorize_and_allow(&query).await;
    let code = param(&redirect, "code").expect("a code");
    let exchange = [
        ("grant_type", "authorization_code"),
        ("code", code.as_str()),
        ("redirect_uri", REDIRECT_URI),
        ("code_verifier", pkce.verifier.as_str()),
    ];
    let tokens: serde_json::Value = app.token(&rp, &exchange).await.json().await.unwrap();
    let (_, id_token) = jwt_parts(tokens["id_token"].as_str().unwrap());
    assert_eq!(id_token["amr"], serde_json::json!(["pwd", "otp", "mfa"]));
    assert_eq!(id_token["acr"], "urn:tessera:acr:multi-factor");
    let (_, access) = jwt_parts(tokens["access_token"].as_str().unwrap());
    assert_eq!(
        access["amr"], id_token["amr"],
        "RFC 9068 §2.2.1: the access token says it too"
    );
    assert_eq!(access["acr"], id_token["acr"]);
    assert_eq!(access["auth_time"], id_token["auth_time"]);

    // A refreshed access token still says how the user logged in.
    let refresh = [
        ("grant_type", "refresh_token"),
        ("refresh_token", tokens["refresh_token"].as_str().unwrap()),
    ];
    let refreshed: serde_json::Value = app.token(&rp, &refresh).await.json().await.unwrap();
    let (_, id_again) = jwt_parts(refreshed["id_token"].as_str().unwrap());
    assert_eq!(id_again["amr"], id_token["amr"], "a refreshed ID token too");
    let (_, again) = jwt_parts(refreshed["access_token"].as_str().unwrap());
    assert_eq!(again["acr"], "urn:tessera:acr:multi-factor");

    // Without a factor, a password login says so.
    let discovery = app.get_json("/.well-known/openid-configuration").await;
    assert_eq!(
        discovery["acr_values_supported"],
        serde_json::json!(["urn:tessera:acr:single-factor", "urn:tessera:acr:multi-factor"])
    );
}

#[tokio::test]
async fn a_password_alone_is_one_factor_in_the_tokens() {
    let app = spawn_app().await;
    let tokens = app.get_tokens().await;
    let (_, access) = jwt_parts(tokens["access_token"].as_str().unwrap());
    assert_eq!(access["amr"], serde_json::json!(["pwd"]));
    assert_eq!(access["acr"], "urn:tessera:acr:single-factor");
    assert!(access["auth_time"].as_i64().is_some());
}

#[tokio::test]
async fn recovery_codes_are_shown_once_and_each_works_once() {
    let app = spawn_app().await;
    let owner = browser(&app);
    enrol_app(&owner).await;
    let made = security_action(&owner, &[("action", "recovery_codes")]).await;
    assert_eq!(made.headers()["cache-control"], "no-store");
    let page = made.text().await.unwrap();
    let codes: Vec<String> = page
        .split("<li><code>")
        .skip(1)
        .map(|rest| rest[..rest.find('<').unwrap()].to_string())
        .collect();
    assert_eq!(codes.len(), 10, "{page}");
    let again = owner.get_text("/o/security/").await;
    assert!(!again.contains(&codes[0]), "shown only once");
    assert!(again.contains("10 of 10 left"));

    let person = browser(&app);
    let (csrf, next) = password_step(&person, "/o/login/").await;
    let typed = codes[3].to_uppercase().replace('-', " ");
    assert_eq!(
        submit_code(&person, &csrf, &next, &typed).await.status(),
        303,
        "typed loosely, it works"
    );

    let other = browser(&app);
    let (csrf, next) = password_step(&other, "/o/login/").await;
    assert_eq!(
        submit_code(&other, &csrf, &next, &codes[3]).await.status(),
        401,
        "a recovery code works once"
    );
    assert!(owner.get_text("/o/security/").await.contains("9 of 10 left"));
    let trail = app.provider.audit_page(&Default::default(), None, 100).await.unwrap();
    assert!(
        trail
            .iter()
            .any(|e| e.action == "factor.recovery_code_used" && e.outcome == "9 left"),
        "using one is recorded"
    );

    // New codes replace the old.
    security_action(&owner, &[("action", "recovery_codes")]).await;
    let (csrf, next) = password_step(&other, "/o/login/").await;
    assert_eq!(submit_code(&other, &csrf, &next, &codes[4]).await.status(), 401);
}

#[tokio::test]
async fn fifty_parallel_guesses_at_the_second_step_stay_within_the_throttle() {
    let app = spawn_app().await;
    let (secret, _) = enrol_app(&browser(&app)).await;
    let guesser = browser(&app);
    let (csrf, next) = password_step(&guesser, "/o/login/").await;
    let guesses = (0..50).map(|i| {
        let (guesser, csrf, next) = (guesser.clone(), csrf.clone(), next.clone());
        async move {
            let guess = format!("{:06}", 100_000 + i);
            submit_code(&guesser, &csrf, &next, &guess).await.status().as_u16()
        }
    });
    let statuses = join_all(guesses).await;
    let checked = statuses.iter().filter(|s| **s == 401).count();
    assert!(
        checked <= 6,
        "at most 5 failures and the one that locks out are checked: {statuses:?}"
    );
    assert!(statuses.iter().all(|s| [401, 429].contains(s)), "{statuses:?}");
    let right = submit_code(&guesser, &csrf, &next, &code_at(&secret, step_now() + 1)).await;
    assert_eq!(right.status(), 429, "the right code waits too");
    let trail = app.provider.audit_page(&Default::default(), None, 100).await.unwrap();
    assert!(
        trail.iter().any(|e| e.action == "factor.lockout"),
        "the burst is recorded"
    );
}

#[tokio::test]
async fn the_second_step_needs_the_first() {
    let app = spawn_app().await;
    let (secret, _) = enrol_app(&browser(&app)).await;
    let stranger = browser(&app);
    // No pending login: the form sends back to the first step, a post is refused.
    let form = stranger
        .http
        .get(stranger.url("/o/login/factor/"))
        .send()
        .await
        .unwrap();
    assert_eq!(form.status(), 303);
    assert!(location(&form).starts_with("/o/login/"));
    let code = code_at(&secret, step_now());
    let post = submit_code(&stranger, "anything", "", &code).await;
    assert_eq!(post.status(), 403, "no pending login, no session");
    assert!(!post
        .headers()
        .get_all("set-cookie")
        .iter()
        .any(|c| c.to_str().unwrap().contains("tessera_session=") && !c.to_str().unwrap().contains("Max-Age=0")));

    // A pending login's form with another token (a cross-site post) is refused.
    let person = browser(&app);
    let (_, next) = password_step(&person, "/o/login/").await;
    assert_eq!(submit_code(&person, "forged", &next, &code).await.status(), 403);

    // A password change ends the pending login.
    let (csrf, next) = password_step(&person, "/o/login/").await;
    let user = app.store.get_user_by_name(USERNAME).await.unwrap().unwrap();
    app.provider
        .set_password(
            &tessera::oauth::audit::Caller::system(),
            &user.user_id,
            "a new long password",
        )
        .await
        .unwrap();
    assert_eq!(submit_code(&person, &csrf, &next, &code).await.status(), 403);
}

#[tokio::test]
async fn a_totp_secret_is_sealed_in_the_store() {
    let app = spawn_app().await;
    let (secret, _) = enrol_app(&browser(&app)).await;
    let user = app.store.get_user_by_name(USERNAME).await.unwrap().unwrap();
    let factors = app.store.factors_of(&user.user_id).await.unwrap();
    let stored = serde_json::to_string(&factors).unwrap();
    // As apps read it (base32, as the page shows it), and the usual binary-to-text forms.
    let plain = [
        base32_encode(&secret),
        URL_SAFE_NO_PAD.encode(&secret),
        base64::engine::general_purpose::STANDARD.encode(&secret),
        secret.iter().map(|b| format!("{b:02x}")).collect::<String>(),
    ];
    for form in plain {
        assert!(!stored.contains(&form), "the secret is not stored as it is");
    }
    assert!(stored.contains("\"kind\":\"totp\""));
}

/// The first login of a user who must have a second factor: the second step shows a new app's
/// secret, and the first code from it finishes both the enrolment and the login.
async fn enrol_at_login(browser: &Remote, username: &str, password: &str, next: &str) -> (reqwest::Response, Vec<u8>) {
    let login = browser.log_in(next, username, password).await;
    assert_eq!(login.status(), 303);
    let factor = location(&login);
    assert!(factor.starts_with("/o/login/factor/"), "{factor}");
    let page = browser.get_text(&factor).await;
    let secret = base32_decode(&code_element(&page, "totp-secret").expect("a new app's secret"));
    let csrf = hidden_input(&page, "csrf_token").unwrap();
    let next = hidden_input(&page, "next").unwrap_or_default();
    assert_eq!(submit_code(browser, &csrf, &next, "000000").await.status(), 401);
    let again = browser.get_text(&factor).await;
    assert_eq!(
        code_element(&again, "totp-secret").map(|s| base32_decode(&s)),
        Some(secret.clone()),
        "the same app is being added"
    );
    let done = submit_code(browser, &csrf, &next, &code_at(&secret, step_now())).await;
    (done, secret)
}

#[tokio::test]
async fn an_operator_without_a_factor_adds_one_before_reaching_the_console() {
    let dirs = tempfile::tempdir().unwrap();
    let config = tessera::Config {
        // The default: operators need an authenticator app.
        operator_mfa: tessera::Config::default().operator_mfa,
        ..test_config(&dirs)
    };
    assert_eq!(config.operator_mfa, tessera::config::MfaPolicy::Required);
    let app = spawn_app_with(config, dirs).await;
    let by = tessera::oauth::audit::Caller::system();
    let olivia = app
        .provider
        .create_user(&by, "olivia", "olivia's long password", None)
        .await
        .unwrap();
    let olivia = tessera::store::UserRecord {
        operator: true,
        ..olivia
    };
    app.store.update_user(&olivia).await.unwrap();

    let operator = browser(&app);
    let console = operator.http.get(operator.url("/admin/")).send().await.unwrap();
    let to_login = location(&console);
    let (done, secret) = enrol_at_login(&operator, "olivia", "olivia's long password", &to_login).await;
    assert_eq!(done.status(), 303);
    let console = operator.http.get(operator.url("/admin/")).send().await.unwrap();
    assert_eq!(console.status(), 200, "the console, after the app is added");

    // From now on the operator's logins ask for it; an ordinary user's (optional) do not.
    let next_time = browser(&app);
    let (csrf, next) = password_step_as(&next_time, "olivia", "olivia's long password", "/admin/").await;
    let signed_in = submit_code(&next_time, &csrf, &next, &code_at(&secret, step_now() + 1)).await;
    assert_eq!(signed_in.status(), 303);
    assert_eq!(
        browser(&app).log_in("/o/login/", USERNAME, PASSWORD).await.status(),
        303
    );
    assert_eq!(
        location(&browser(&app).log_in("/o/login/", USERNAME, PASSWORD).await),
        "/",
        "a user with no factor under `optional` is not asked"
    );
}

#[tokio::test]
async fn when_second_factors_are_required_every_user_adds_one_at_login() {
    let dirs = tempfile::tempdir().unwrap();
    let config = tessera::Config {
        mfa: tessera::config::MfaPolicy::Required,
        ..test_config(&dirs)
    };
    let app = spawn_app_with(config, dirs).await;
    let person = browser(&app);
    let (done, _) = enrol_at_login(&person, USERNAME, PASSWORD, "/o/login/").await;
    assert_eq!(done.status(), 303);
    let user = app.store.get_user_by_name(USERNAME).await.unwrap().unwrap();
    let factors = app.store.factors_of(&user.user_id).await.unwrap();
    assert_eq!(factors.len(), 1);
    assert_eq!(factors[0].factor_id, "totp");
    // Until the app is added there is no session.
    let stranger = browser(&app);
    let login = stranger.log_in("/o/login/", USERNAME, PASSWORD).await;
    assert!(location(&login).starts_with("/o/login/factor/"));
    let profile = stranger.http.get(stranger.url("/o/profile/")).send().await.unwrap();
    assert_eq!(profile.status(), 302, "no session before the second step");
}

#[tokio::test]
async fn when_second_factors_are_off_none_is_asked_for_or_added() {
    let dirs = tempfile::tempdir().unwrap();
    let config = tessera::Config {
        mfa: tessera::config::MfaPolicy::Off,
        ..test_config(&dirs)
    };
    let app = spawn_app_with(config, dirs).await;
    let user = app.store.get_user_by_name(USERNAME).await.unwrap().unwrap();
    let app_factor = tessera::store::FactorRecord {
        factor_id: "totp".into(),
        user_id: user.user_id.clone(),
        name: "Authenticator app".into(),
        created_at: 1,
        last_used_at: None,
        revision: 0,
        secret: tessera::store::FactorSecret::Totp { sealed: "AAAA".into() },
    };
    assert!(app.store.insert_factor(&app_factor).await.unwrap());
    let person = browser(&app);
    let login = person.log_in("/o/login/", USERNAME, PASSWORD).await;
    assert_eq!(location(&login), "/", "an enrolled app is not asked for");
    let refused = security_action(&person, &[("action", "start_totp")]).await;
    assert_eq!(refused.status(), 403);
}

async fn password_step_as(browser: &Remote, username: &str, password: &str, next: &str) -> (String, String) {
    let to_login = browser.http.get(browser.url(next)).send().await.unwrap();
    let login = browser.log_in(&location(&to_login), username, password).await;
    let factor = location(&login);
    assert!(factor.starts_with("/o/login/factor/"), "{factor}");
    let page = browser.get_text(&factor).await;
    (
        hidden_input(&page, "csrf_token").unwrap(),
        hidden_input(&page, "next").unwrap_or_default(),
    )
}

/// An authorization request of the relying party `rp` with extra parameters.
pub(crate) fn rp_query(
    browser: &Remote,
    rp: &TestClient,
    pkce: &Pkce,
    extra: &[(&str, &str)],
) -> Vec<(String, String)> {
    let mut query = browser.authorize_query(pkce, "st");
    for (name, value) in query.iter_mut() {
        match name.as_str() {
            "scope" => *value = "openid read".into(),
            "client_id" => *value = rp.id.clone(),
            _ => {}
        }
    }
    query.extend(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())));
    query
}

const MULTI_FACTOR: &str = "urn:tessera:acr:multi-factor";

#[tokio::test]
async fn a_request_for_a_stronger_login_asks_a_signed_in_user_for_their_factor() {
    let app = spawn_app().await;
    let rp = app.register_relying_party(None, None).await;
    // Signed in with a password before the app was added elsewhere: a one-factor session.
    let person = browser(&app);
    assert_eq!(person.log_in("/o/login/", USERNAME, PASSWORD).await.status(), 303);
    let (secret, used_step) = enrol_app(&browser(&app)).await;

    // prompt=none cannot ask: interaction_required, at the client.
    let pkce = Pkce::new();
    let silent = rp_query(&person, &rp, &pkce, &[("acr_values", MULTI_FACTOR), ("prompt", "none")]);
    let answer = location(&person.authorize(&silent).await);
    assert_eq!(
        param(&answer, "error").as_deref(),
        Some("interaction_required"),
        "{answer}"
    );

    let query = rp_query(&person, &rp, &pkce, &[("acr_values", MULTI_FACTOR)]);
    let asked = person.authorize(&query).await;
    assert_eq!(asked.status(), 302);
    let factor = location(&asked);
    assert!(factor.starts_with("/o/login/factor/?next="), "{factor}");
    let page = person.get_text(&factor).await;
    let csrf = hidden_input(&page, "csrf_token").unwrap();
    let next = hidden_input(&page, "next").unwrap();
    assert_eq!(submit_code(&person, &csrf, &next, "123456").await.status(), 401);
    let stepped = submit_code(&person, &csrf, &next, &code_at(&secret, used_step + 1)).await;
    assert_eq!(stepped.status(), 303);

    let redirect = person.authorize_and_allow(&query).await;
    let code = param(&redirect, "code").expect("a code once the factor is shown");
    let exchange = [
        ("grant_type", "authorization_code"),
        ("code", code.as_str()),
        ("redirect_uri", REDIRECT_URI),
        ("code_verifier", pkce.verifier.as_str()),
    ];
    let tokens: serde_json::Value = app.token(&rp, &exchange).await.json().await.unwrap();
    let (_, id_token) = jwt_parts(tokens["id_token"].as_str().unwrap());
    assert_eq!(id_token["acr"], MULTI_FACTOR);
    assert_eq!(id_token["amr"], serde_json::json!(["pwd", "otp", "mfa"]));
}

#[tokio::test]
async fn an_essential_acr_makes_a_user_add_an_app_and_where_factors_are_off_it_is_refused() {
    let app = spawn_app().await;
    let rp = app.register_relying_party(None, None).await;
    let person = browser(&app);
    assert_eq!(person.log_in("/o/login/", USERNAME, PASSWORD).await.status(), 303);
    let pkce = Pkce::new();
    let claims = format!(r#"{{"id_token":{{"acr":{{"essential":true,"values":["{MULTI_FACTOR}"]}}}}}}"#);

    // acr_values alone is a wish: granted with what the login has, and the token says which.
    let voluntary = rp_query(&person, &rp, &pkce, &[("acr_values", MULTI_FACTOR)]);
    let redirect = person.authorize_and_allow(&voluntary).await;
    let code = param(&redirect, "code").expect("a code");
    let exchange = [
        ("grant_type", "authorization_code"),
        ("code", code.as_str()),
        ("redirect_uri", REDIRECT_URI),
        ("code_verifier", pkce.verifier.as_str()),
    ];
    let tokens: serde_json::Value = app.token(&rp, &exchange).await.json().await.unwrap();
    let (_, id_token) = jwt_parts(tokens["id_token"].as_str().unwrap());
    assert_eq!(id_token["acr"], "urn:tessera:acr:single-factor");

    // Essential: the user adds an app on the way, and the code finishes the step-up.
    let essential = rp_query(&person, &rp, &pkce, &[("claims", &claims)]);
    let factor = location(&person.authorize(&essential).await);
    assert!(factor.starts_with("/o/login/factor/"), "{factor}");
    let page = person.get_text(&factor).await;
    let secret = base32_decode(&code_element(&page, "totp-secret").expect("an app to add"));
    let csrf = hidden_input(&page, "csrf_token").unwrap();
    let next = hidden_input(&page, "next").unwrap();
    let added = submit_code(&person, &csrf, &next, &code_at(&secret, step_now())).await;
    assert_eq!(added.status(), 303);
    let redirect = person.authorize_and_allow(&essential).await;
    assert!(param(&redirect, "code").is_some(), "{redirect}");

    // A claims parameter that is not JSON is the client's error.
    let broken = rp_query(&person, &rp, &pkce, &[("claims", "{not json")]);
    let answer = location(&person.authorize(&broken).await);
    assert_eq!(param(&answer, "error").as_deref(), Some("invalid_request"));

    // Where second factors are off, nobody can reach it: no silent downgrade.
    let dirs = tempfile::tempdir().unwrap();
    let config = tessera::Config {
        mfa: tessera::config::MfaPolicy::Off,
        ..test_config(&dirs)
    };
    let off = spawn_app_with(config, dirs).await;
    let rp = off.register_relying_party(None, None).await;
    let person = browser(&off);
    assert_eq!(person.log_in("/o/login/", USERNAME, PASSWORD).await.status(), 303);
    let essential = rp_query(&person, &rp, &pkce, &[("claims", &claims)]);
    let refused = location(&person.authorize(&essential).await);
    assert_eq!(
        param(&refused, "error").as_deref(),
        Some("unmet_authentication_requirements"),
        "{refused}"
    );
    assert_eq!(param(&refused, "state").as_deref(), Some("st"));
}

#[tokio::test]
async fn a_client_that_requires_two_factors_gets_only_two_factor_logins() {
    let app = spawn_app().await;
    let by = tessera::oauth::audit::Caller::system();
    let mut settings = client_settings(
        "Bank",
        tessera::store::ClientType::Confidential,
        vec![tessera::store::GrantType::AuthorizationCode],
    );
    settings.redirect_uris = vec![REDIRECT_URI.into()];
    settings.scope = "openid read".into();
    settings.policy.require_mfa = true;
    let (client, secret) = app.provider.register_client(&by, settings).await.unwrap();
    let bank = TestClient {
        id: client.client_id,
        secret,
    };
    let person = browser(&app);
    assert_eq!(person.log_in("/o/login/", USERNAME, PASSWORD).await.status(), 303);
    let pkce = Pkce::new();
    let query = rp_query(&person, &bank, &pkce, &[]);
    // prompt=none cannot add an app either.
    let mut silent = query.clone();
    silent.push(("prompt".into(), "none".into()));
    let answer = location(&person.authorize(&silent).await);
    assert!(answer.starts_with(REDIRECT_URI), "{answer}");
    assert_eq!(param(&answer, "error").as_deref(), Some("interaction_required"));
    let factor = location(&person.authorize(&query).await);
    assert!(factor.starts_with("/o/login/factor/"), "{factor}");
    let page = person.get_text(&factor).await;
    let secret = base32_decode(&code_element(&page, "totp-secret").expect("an app to add"));
    let csrf = hidden_input(&page, "csrf_token").unwrap();
    let next = hidden_input(&page, "next").unwrap();
    assert_eq!(
        submit_code(&person, &csrf, &next, &code_at(&secret, step_now()))
            .await
            .status(),
        303
    );
    let redirect = person.authorize_and_allow(&query).await;
    let code = param(&redirect, "code").expect("a code");
    let exchange = [
        ("grant_type", "authorization_code"),
        ("code", code.as_str()),
        ("redirect_uri", REDIRECT_URI),
        ("code_verifier", pkce.verifier.as_str()),
    ];
    let tokens: serde_json::Value = app.token(&bank, &exchange).await.json().await.unwrap();
    let (_, id_token) = jwt_parts(tokens["id_token"].as_str().unwrap());
    assert_eq!(id_token["acr"], MULTI_FACTOR);
}

/// RFC 9470 end to end: the example resource server's step-up route refuses a password-only
/// token with `insufficient_user_authentication` naming `acr_values` and `max_age`; the client
/// asks for a new authorization with them, the user shows their app's code, and the new token
/// passes.
#[tokio::test]
async fn a_step_up_route_challenges_and_the_token_of_the_stronger_login_passes() {
    let app = spawn_app().await;
    let (_server, base) = crate::resource_server::start_resource_server(&app).await;
    let posts = format!("{base}/api/posts/drafts/");
    let tokens = app.get_tokens().await;
    let weak = tokens["access_token"].as_str().unwrap();
    let refused = app.http.get(&posts).bearer_auth(weak).send().await.unwrap();
    assert_eq!(refused.status(), 401);
    let challenge = refused.headers()["www-authenticate"].to_str().unwrap().to_string();
    assert!(
        challenge.contains(r#"error="insufficient_user_authentication""#),
        "{challenge}"
    );
    assert!(
        challenge.contains(&format!(r#"acr_values="{MULTI_FACTOR}""#)),
        "{challenge}"
    );
    assert!(challenge.contains("max_age=300"), "{challenge}");
    let body: serde_json::Value = refused.json().await.unwrap();
    assert_eq!(body["error"], "insufficient_user_authentication");

    // The user adds an app (elsewhere); the client asks again with the challenge's values.
    let (secret, used_step) = enrol_app(&browser(&app)).await;
    let acr_values = challenge
        .split("acr_values=\"")
        .nth(1)
        .unwrap()
        .split('"')
        .next()
        .unwrap();
    let pkce = Pkce::new();
    let mut query = app.authorize_query(&pkce, "again");
    query.push(("acr_values".into(), acr_values.into()));
    query.push(("max_age".into(), "300".into()));
    let asked = app.authorize(&query).await;
    let factor = location(&asked);
    assert!(
        factor.starts_with("/o/login/factor/"),
        "the session is asked for its factor: {factor}"
    );
    let page = app.get_text(&factor).await;
    let csrf = hidden_input(&page, "csrf_token").unwrap();
    let next = hidden_input(&page, "next").unwrap();
    let stepped = submit_code(&app, &csrf, &next, &code_at(&secret, used_step + 1)).await;
    assert_eq!(stepped.status(), 303);
    let redirect = app.authorize_and_allow(&query).await;
    let code = param(&redirect, "code").unwrap();
    let strong: serde_json::Value = app.exchange_code(&code, &pkce.verifier).await.json().await.unwrap();
    let strong = strong["access_token"].as_str().unwrap();
    let passed = app.http.get(&posts).bearer_auth(strong).send().await.unwrap();
    assert_eq!(passed.status(), 200, "{:?}", passed.headers().get("www-authenticate"));
}

#[tokio::test]
async fn operators_see_a_users_factors_and_remove_them_on_the_record() {
    let app = spawn_app().await;
    let owner = browser(&app);
    enrol_app(&owner).await;
    security_action(&owner, &[("action", "recovery_codes")]).await;
    let user = app.store.get_user_by_name(USERNAME).await.unwrap().unwrap();

    // The admin API lists them, never with a secret.
    let (_, bearer) = app.admin_bearer().await;
    let factors_url = app.url(&format!("/api/v1/users/{}/factors", user.user_id));
    let listed = app.http.get(&factors_url).bearer_auth(&bearer).send().await.unwrap();
    assert_eq!(listed.status(), 200);
    let listed: serde_json::Value = listed.json().await.unwrap();
    let kinds: Vec<&str> = listed["factors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["kind"].as_str().unwrap())
        .collect();
    assert_eq!(kinds, ["recovery_codes", "totp"]);
    assert_eq!(listed["factors"][0]["remaining"], 10);
    let text = listed.to_string();
    assert!(
        !text.contains("sealed") && !text.contains("unused"),
        "no secret: {text}"
    );

    // It removes one, recorded with the admin client.
    let removed = app
        .http
        .delete(format!("{factors_url}/recovery"))
        .bearer_auth(&bearer)
        .send()
        .await
        .unwrap();
    assert_eq!(removed.status(), 200);
    let again = app
        .http
        .delete(format!("{factors_url}/recovery"))
        .bearer_auth(&bearer)
        .send()
        .await
        .unwrap();
    assert_eq!(again.status(), 404);
    let missing = app
        .http
        .get(app.url("/api/v1/users/nobody/factors"))
        .bearer_auth(&bearer)
        .send()
        .await
        .unwrap();
    assert_eq!(missing.status(), 404);

    // The console shows the app and removes it after a confirmation, recorded with the operator.
    let operator = crate::console::operator_browser(&app).await;
    let page = operator.get_text(&format!("/admin/users/{}", user.user_id)).await;
    assert!(page.contains("id=\"factor-totp\""), "{page}");
    let csrf = crate::console::csrf(&operator).await;
    let remove = format!("/admin/users/{}/factors/totp/remove", user.user_id);
    let asked = operator
        .http
        .post(operator.url(&remove))
        .form(&[("csrf_token", csrf.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(asked.status(), 200);
    assert!(asked.text().await.unwrap().contains("Remove this sign-in factor?"));
    assert_eq!(
        app.store.factors_of(&user.user_id).await.unwrap().len(),
        1,
        "not before confirming"
    );
    let done = operator
        .http
        .post(operator.url(&remove))
        .form(&[("csrf_token", csrf.as_str()), ("confirm", "yes")])
        .send()
        .await
        .unwrap();
    assert_eq!(done.status(), 303);
    assert!(app.store.factors_of(&user.user_id).await.unwrap().is_empty());
    let trail = app.provider.audit_page(&Default::default(), None, 100).await.unwrap();
    let removals: Vec<_> = trail.iter().filter(|e| e.action == "factor.removed").collect();
    assert_eq!(removals.len(), 2, "{removals:?}");
    assert!(removals
        .iter()
        .any(|e| e.actor.kind == "user" && e.actor.name == crate::console::OPERATOR));
    assert!(removals.iter().any(|e| e.actor.kind == "client"));
    // The user signs in with the password alone again.
    assert_eq!(
        location(&browser(&app).log_in("/o/login/", USERNAME, PASSWORD).await),
        "/"
    );
}

#[tokio::test]
async fn the_cli_resets_a_users_factors() {
    let app = spawn_app().await;
    enrol_app(&browser(&app)).await;
    let dirs = app.stop().await;
    let (data, keys) = (dirs.path().join("data"), dirs.path().join("keys"));
    let env = backend_env(dirs.path());
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let args = [
        "user",
        "reset-factors",
        USERNAME,
        "--data-dir",
        data.to_str().unwrap(),
        "--keys-dir",
        keys.to_str().unwrap(),
    ];
    let output = run_tessera(dirs.path(), &args, &env, "");
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    assert!(String::from_utf8_lossy(&output.stdout).contains("removed 1 sign-in factor(s)"));
    let store = open_test_store(dirs.path()).await;
    let user = store.get_user_by_name(USERNAME).await.unwrap().unwrap();
    assert!(store.factors_of(&user.user_id).await.unwrap().is_empty());
    let trail = store.audit_page(&Default::default(), None, 100).await.unwrap();
    assert!(trail
        .iter()
        .any(|e| e.action == "factor.reset" && e.actor.kind == "cli"));
}

/// PyPI's pyotp, a second RFC 6238 implementation, makes the codes: enrolment from the page's
/// secret, a login, a replay refused, a recovery code working once.
#[tokio::test]
async fn pyotp_enrols_and_signs_in_and_codes_work_once() {
    let app = spawn_app().await;
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/interop/pyotp_second_factor.py");
    let output = tokio::process::Command::new("python3")
        .args([script, &app.base, USERNAME, PASSWORD])
        .output()
        .await
        .expect("python3 runs");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "the pyotp script failed: {stderr}");
    let report: serde_json::Value = serde_json::from_slice(&output.stdout).expect("a JSON report");
    assert_eq!(report["replayed_enrolment_code"], 401, "{report}");
    assert_eq!(report["next_code"], 303, "{report}");
    assert_eq!(report["signed_in_page"], 200, "{report}");
    assert_eq!(report["same_code_again"], 401, "{report}");
    assert_eq!(report["recovery_code"], 303, "{report}");
    assert_eq!(report["recovery_code_again"], 401, "{report}");
}

/// openid-client (a certified relying-party library) through step-up: the example resource
/// server's RFC 9470 challenge, a new authorization with its `acr_values` and `max_age` that
/// asks for the app's code, `max_age=0` forcing a whole new login; and an essential `acr` that
/// cannot be reached coming back as `unmet_authentication_requirements`.
#[tokio::test]
async fn openid_client_steps_up_through_the_resource_servers_challenge() {
    let app = spawn_app().await;
    let rp = app.register_relying_party(None, None).await;
    let (_server, base) = crate::resource_server::start_resource_server(&app).await;
    let args = |app: &TestApp, rp: &TestClient, mode: &'static str| {
        vec![
            app.issuer.clone(),
            rp.id.clone(),
            rp.secret.clone().unwrap(),
            REDIRECT_URI.to_string(),
            USERNAME.to_string(),
            PASSWORD.to_string(),
            format!("{base}/api/posts/drafts/"),
            mode.to_string(),
        ]
    };
    let run = args(&app, &rp, "step-up");
    let run: Vec<&str> = run.iter().map(String::as_str).collect();
    let report = crate::interop::node_script("openid_client_step_up.mjs", &run).await;
    assert!(report["acr_values_supported"]
        .as_array()
        .unwrap()
        .contains(&MULTI_FACTOR.into()));
    assert_eq!(report["weak_acr"], "urn:tessera:acr:single-factor", "{report}");
    assert_eq!(report["refused_status"], 401, "{report}");
    assert_eq!(
        report["challenge"]["error"], "insufficient_user_authentication",
        "{report}"
    );
    assert_eq!(report["challenge"]["acr_values"], MULTI_FACTOR, "{report}");
    assert_eq!(report["challenge"]["max_age"], "300", "{report}");
    assert_eq!(
        report["step_up_codes_typed"], 1,
        "the session showed its app's code: {report}"
    );
    assert_eq!(report["strong_claims"]["acr"], MULTI_FACTOR, "{report}");
    assert_eq!(report["strong_claims"]["amr"], serde_json::json!(["pwd", "otp", "mfa"]));
    assert_eq!(report["strong_call"], 200, "the new token passes: {report}");
    assert_eq!(
        report["fresh_codes_typed"], 2,
        "max_age=0: password and code again: {report}"
    );
    assert_eq!(report["fresh_claims"]["acr"], MULTI_FACTOR);
    assert_eq!(
        report["fresh_passwords_typed"], 1,
        "max_age=0: a whole new login: {report}"
    );
    let auth_time = |claims: &str| report[claims]["auth_time"].as_i64().unwrap();
    assert!(auth_time("fresh_claims") >= auth_time("strong_claims"), "{report}");

    let dirs = tempfile::tempdir().unwrap();
    let config = tessera::Config {
        mfa: tessera::config::MfaPolicy::Off,
        ..test_config(&dirs)
    };
    let off = spawn_app_with(config, dirs).await;
    let off_rp = off.register_relying_party(None, None).await;
    let run = args(&off, &off_rp, "unmet");
    let run: Vec<&str> = run.iter().map(String::as_str).collect();
    let report = crate::interop::node_script("openid_client_step_up.mjs", &run).await;
    assert_eq!(report["unmet"], "unmet_authentication_requirements", "{report}");
}

/// The review of this work: a session that signed in with a password alone (before the app was
/// added elsewhere) could make recovery codes, then show one and call itself two-factor, or
/// remove the app and add its own. Changing the factors of an account with an app needs a
/// second factor shown in the last 15 minutes.
#[tokio::test]
async fn a_password_only_session_cannot_change_an_accounts_factors() {
    let app = spawn_app().await;
    let thief = browser(&app);
    assert_eq!(thief.log_in("/o/login/", USERNAME, PASSWORD).await.status(), 303);
    let (secret, used_step) = enrol_app(&browser(&app)).await;
    let user = app.store.get_user_by_name(USERNAME).await.unwrap().unwrap();
    for action in [
        vec![("action", "recovery_codes")],
        vec![("action", "remove_confirmed"), ("factor", "totp")],
        vec![("action", "start_totp")],
    ] {
        let refused = security_action(&thief, &action).await;
        assert_eq!(refused.status(), 303, "{action:?}");
        assert!(location(&refused).starts_with("/o/login/factor/"), "{action:?}");
    }
    let factors = app.store.factors_of(&user.user_id).await.unwrap();
    assert_eq!(factors.len(), 1, "nothing was made or removed: {factors:?}");
    // Showing the app's code lets the same session change them.
    let factor = location(&security_action(&thief, &[("action", "recovery_codes")]).await);
    let page = thief.get_text(&factor).await;
    let csrf = hidden_input(&page, "csrf_token").unwrap();
    let next = hidden_input(&page, "next").unwrap();
    assert_eq!(next, "/o/security/");
    let stepped = submit_code(&thief, &csrf, &next, &code_at(&secret, used_step + 1)).await;
    assert_eq!(stepped.status(), 303);
    let made = security_action(&thief, &[("action", "recovery_codes")]).await;
    assert_eq!(made.status(), 200);
}

/// The review of this work: guesses spread over many addresses added up to one a second per
/// user for ever (the login throttle only slows a user down). The second step locks the user's
/// codes after the allowed failures, from wherever they come, and says so in the trail.
#[tokio::test]
async fn guesses_from_many_addresses_lock_the_users_second_step() {
    let app = behind_a_proxy(|_| {}).await;
    let (secret, _) = enrol_app(&browser(&app)).await;
    let mut statuses = Vec::new();
    for i in 0..12u8 {
        let guesser = browser_behind_proxy(&app, &format!("198.51.100.{}", i + 1));
        let (csrf, next) = password_step(&guesser, "/o/login/").await;
        statuses.push(
            submit_code(&guesser, &csrf, &next, &format!("{:06}", 200_000 + u32::from(i)))
                .await
                .status()
                .as_u16(),
        );
    }
    let checked = statuses.iter().filter(|s| **s == 401).count();
    assert!(
        checked <= 6,
        "five failures and the one that locks are checked, from any address: {statuses:?}"
    );
    assert_eq!(statuses.last(), Some(&429), "{statuses:?}");
    let owner = browser_behind_proxy(&app, "203.0.113.9");
    let (csrf, next) = password_step(&owner, "/o/login/").await;
    let right = submit_code(&owner, &csrf, &next, &code_at(&secret, step_now() + 1)).await;
    assert_eq!(right.status(), 429, "the user's codes wait, wherever they come from");
    let trail = app.provider.audit_page(&Default::default(), None, 100).await.unwrap();
    assert!(trail.iter().any(|e| e.action == "factor.lockout"));
}

/// The review of this work: a device approval and a token exchange made single-factor tokens
/// for a client that requires two factors.
#[tokio::test]
async fn a_client_that_requires_two_factors_gets_no_device_grant_from_a_one_factor_session() {
    let app = spawn_app().await;
    let mut settings = client_settings(
        "Bank TV",
        tessera::store::ClientType::Confidential,
        vec![tessera::store::GrantType::DeviceCode],
    );
    settings.scope = "read".into();
    settings.policy.require_mfa = true;
    let (client, secret) = app
        .provider
        .register_client(&tessera::oauth::audit::Caller::system(), settings)
        .await
        .unwrap();
    let tv = TestClient {
        id: client.client_id,
        secret,
    };
    let started = crate::device::start(&app, &tv, "read").await;
    crate::device::log_in(&app).await;
    let user_code = started["user_code"].as_str().unwrap();
    assert_eq!(
        crate::device::submit(&app, &[("user_code", user_code)]).await.status(),
        200
    );
    let refused = crate::device::submit(&app, &[("user_code", user_code), ("decision", "allow")]).await;
    assert_ne!(refused.status(), 200);
    assert!(refused.text().await.unwrap().contains("two-factor sign-in"));
    let poll = app
        .token(
            &tv,
            &[
                ("grant_type", "urn:ietf:params:oauth:grant-type:device_code"),
                ("device_code", started["device_code"].as_str().unwrap()),
            ],
        )
        .await;
    let body: serde_json::Value = poll.json().await.unwrap();
    assert_eq!(body["error"], "authorization_pending", "no grant was made");
}

/// The review of this work: an operator whose session showed no second factor (opened before
/// `operator_mfa = "required"` applied to them) is sent to show or add one before the console.
#[tokio::test]
async fn an_operator_session_without_a_second_factor_shows_one_before_the_console() {
    let dirs = tempfile::tempdir().unwrap();
    let config = tessera::Config {
        operator_mfa: tessera::config::MfaPolicy::Required,
        ..test_config(&dirs)
    };
    let app = spawn_app_with(config, dirs).await;
    let person = browser(&app);
    assert_eq!(person.log_in("/o/login/", USERNAME, PASSWORD).await.status(), 303);
    // Made an operator while signed in with a password alone.
    let user = app.store.get_user_by_name(USERNAME).await.unwrap().unwrap();
    let user = tessera::store::UserRecord { operator: true, ..user };
    app.store.update_user(&user).await.unwrap();
    let console = person.http.get(person.url("/admin/users")).send().await.unwrap();
    assert_eq!(console.status(), 302);
    let factor = location(&console);
    assert!(factor.starts_with("/o/login/factor/?next=%2Fadmin%2Fusers"), "{factor}");
    let page = person.get_text(&factor).await;
    let secret = base32_decode(&code_element(&page, "totp-secret").expect("an app to add"));
    let csrf = hidden_input(&page, "csrf_token").unwrap();
    let next = hidden_input(&page, "next").unwrap();
    assert_eq!(submit_code(&person, &csrf, &next, "000000").await.status(), 401);
    let again = person.get_text(&factor).await;
    assert!(again.contains("totp-secret"), "the app being added is shown again");
    assert_eq!(
        submit_code(&person, &csrf, &next, &code_at(&secret, step_now()))
            .await
            .status(),
        303
    );
    let console = person.http.get(person.url("/admin/users")).send().await.unwrap();
    assert_eq!(console.status(), 200);
}

/// The review of this work: an operator removing a user's factor (a lost phone) ends the
/// sessions it proved.
#[tokio::test]
async fn removing_a_users_factor_for_them_ends_their_sessions() {
    let app = spawn_app().await;
    let owner = browser(&app);
    enrol_app(&owner).await;
    assert_eq!(
        owner.http.get(owner.url("/o/profile/")).send().await.unwrap().status(),
        200
    );
    let user = app.store.get_user_by_name(USERNAME).await.unwrap().unwrap();
    let (_, bearer) = app.admin_bearer().await;
    let removed = app
        .http
        .delete(app.url(&format!("/api/v1/users/{}/factors/totp", user.user_id)))
        .bearer_auth(&bearer)
        .send()
        .await
        .unwrap();
    assert_eq!(removed.status(), 200);
    let profile = owner.http.get(owner.url("/o/profile/")).send().await.unwrap();
    assert_eq!(profile.status(), 302, "the session the app proved is over");
}

/// RFC 4648 base32 without padding.
fn base32_encode(bytes: &[u8]) -> String {
    let alphabet = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
    let (mut bits, mut value, mut out) = (0u32, 0u64, String::new());
    for byte in bytes {
        value = (value << 8) | u64::from(*byte);
        bits += 8;
        while bits >= 5 {
            bits -= 5;
            out.push(alphabet[((value >> bits) & 31) as usize] as char);
        }
    }
    if bits > 0 {
        out.push(alphabet[((value << (5 - bits)) & 31) as usize] as char);
    }
    out
}
