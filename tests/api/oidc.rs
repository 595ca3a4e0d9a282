//! OpenID Connect: ID tokens, UserInfo, discovery, `prompt`/`max_age`/`login_hint`, logout and
//! the profile page, over HTTP against the real server.

use std::time::Duration;
use tessera::oauth::audit::Caller;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use serde_json::Value;
use tessera::keys::Algorithm;
use tessera::oauth::user::ProfileEdit;
use tessera::store::UserProfile;

use crate::helpers::*;
use tessera::keys::Keyring;

fn oidc_query(client: &TestClient, pkce: &Pkce, scope: &str, extra: &[(&str, &str)]) -> Vec<(String, String)> {
    let mut query: Vec<(String, String)> = [
        ("response_type", "code"),
        ("client_id", client.id.as_str()),
        ("redirect_uri", REDIRECT_URI),
        ("scope", scope),
        ("state", "st4te"),
        ("code_challenge", pkce.challenge.as_str()),
        ("code_challenge_method", "S256"),
    ]
    .iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    query.extend(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())));
    query
}

async fn exchange(app: &TestApp, client: &TestClient, code: &str, pkce: &Pkce) -> reqwest::Response {
    let form = [
        ("grant_type", "authorization_code"),
        ("code", code),
        ("redirect_uri", REDIRECT_URI),
        ("code_verifier", pkce.verifier.as_str()),
    ];
    app.token(client, &form).await
}

/// Runs the whole flow (log in and consent as needed) and returns the token response.
async fn login_flow(app: &TestApp, client: &TestClient, scope: &str, extra: &[(&str, &str)]) -> Value {
    let pkce = Pkce::new();
    let redirect = app.authorize_and_allow(&oidc_query(client, &pkce, scope, extra)).await;
    let code = param(&redirect, "code").unwrap_or_else(|| panic!("a code in {redirect}"));
    let response = exchange(app, client, &code, &pkce).await;
    assert_eq!(response.status(), 200);
    response.json().await.unwrap()
}

/// The ID token's claims after checking its signature through the JWKS, `typ` and `aud`.
async fn id_token_claims(app: &TestApp, client: &TestClient, tokens: &Value) -> Value {
    let id_token = tokens["id_token"].as_str().expect("an id_token");
    let (header, _) = jwt_parts(id_token);
    assert_eq!(header["typ"], "JWT");
    let claims = app
        .verify_with_jwks(id_token)
        .await
        .expect("the ID token verifies through the JWKS");
    assert_eq!(claims["aud"], client.id.as_str());
    claims
}

async fn alice_id(app: &TestApp) -> String {
    app.store.get_user_by_name(USERNAME).await.unwrap().unwrap().user_id
}

async fn give_alice_a_profile(app: &TestApp) {
    let edit = ProfileEdit {
        email: Some("alice@example.com".into()),
        email_verified: Some(true),
        profile: UserProfile {
            name: Some("Alice Liddell".into()),
            given_name: Some("Alice".into()),
            locale: Some("en-GB".into()),
            ..Default::default()
        },
    };
    app.provider
        .update_profile(&Caller::system(), &alice_id(app).await, edit)
        .await
        .unwrap();
}

async fn userinfo(app: &TestApp, access_token: &str) -> reqwest::Response {
    app.http
        .get(app.url("/o/userinfo/"))
        .bearer_auth(access_token)
        .send()
        .await
        .unwrap()
}

fn www_authenticate(response: &reqwest::Response) -> String {
    response.headers()["www-authenticate"].to_str().unwrap().to_string()
}

#[tokio::test]
async fn the_openid_scope_yields_an_rs256_id_token_with_the_core_claims() {
    let app = spawn_app().await;
    let rp = app.register_relying_party(None, None).await;
    give_alice_a_profile(&app).await;
    let before = tessera::oauth::now();
    let tokens = login_flow(&app, &rp, "openid profile email", &[("nonce", "n-0S6_WzA2Mj")]).await;
    let id_token = tokens["id_token"].as_str().unwrap();
    let (header, _) = jwt_parts(id_token);
    assert_eq!(header["alg"], "RS256", "RS256 unless the client registered another");
    let access_alg = jwt_parts(tokens["access_token"].as_str().unwrap()).0["alg"].clone();
    assert_eq!(access_alg, "ES256", "access tokens keep the server's algorithm");

    let claims = id_token_claims(&app, &rp, &tokens).await;
    assert_eq!(claims["iss"], app.issuer.as_str());
    assert_eq!(claims["sub"], alice_id(&app).await.as_str());
    assert_eq!(claims["nonce"], "n-0S6_WzA2Mj");
    let (iat, exp, auth_time) = (
        claims["iat"].as_i64().unwrap(),
        claims["exp"].as_i64().unwrap(),
        claims["auth_time"].as_i64().unwrap(),
    );
    assert!(iat >= before && exp > iat && auth_time >= before && auth_time <= iat);
    // at_hash: the left half of SHA-256 of the access token (Core §3.1.3.6).
    let digest = ring::digest::digest(
        &ring::digest::SHA256,
        tokens["access_token"].as_str().unwrap().as_bytes(),
    );
    assert_eq!(
        claims["at_hash"],
        URL_SAFE_NO_PAD.encode(&digest.as_ref()[..16]).as_str()
    );
    assert_eq!(claims["name"], "Alice Liddell");
    assert_eq!(claims["given_name"], "Alice");
    assert_eq!(claims["preferred_username"], USERNAME);
    assert_eq!(claims["email"], "alice@example.com");
    assert_eq!(claims["email_verified"], true);
    assert!(claims.get("azp").is_none(), "a single audience needs no azp");
}

#[tokio::test]
async fn without_openid_there_is_no_id_token() {
    let app = spawn_app().await;
    let rp = app.register_relying_party(None, None).await;
    let tokens = login_flow(&app, &rp, "read", &[]).await;
    assert!(tokens.get("id_token").is_none(), "{tokens}");
    let cc = app.client_credentials("read").await.json::<Value>().await.unwrap();
    assert!(cc.get("id_token").is_none());
}

#[tokio::test]
async fn claims_are_filtered_by_scope_in_the_id_token_and_userinfo() {
    let app = spawn_app().await;
    let rp = app.register_relying_party(None, None).await;
    give_alice_a_profile(&app).await;
    for (scope, present, absent) in [
        (
            "openid",
            vec![],
            vec!["name", "preferred_username", "email", "email_verified"],
        ),
        (
            "openid email",
            vec!["email", "email_verified"],
            vec!["name", "preferred_username", "locale"],
        ),
        (
            "openid profile",
            vec!["name", "given_name", "preferred_username", "locale", "updated_at"],
            vec!["email", "email_verified"],
        ),
    ] {
        let tokens = login_flow(&app, &rp, scope, &[]).await;
        let claims = id_token_claims(&app, &rp, &tokens).await;
        let response = userinfo(&app, tokens["access_token"].as_str().unwrap()).await;
        assert_eq!(response.status(), 200);
        assert_eq!(response.headers()["cache-control"], "no-store");
        let info: Value = response.json().await.unwrap();
        assert_eq!(info["sub"], claims["sub"], "{scope}");
        for name in &present {
            assert!(claims.get(*name).is_some(), "{scope}: ID token lacks {name}");
            assert_eq!(info[*name], claims[*name], "{scope}: userinfo {name}");
        }
        for name in &absent {
            assert!(claims.get(*name).is_none(), "{scope}: ID token has {name}");
            assert!(info.get(*name).is_none(), "{scope}: userinfo has {name}");
        }
    }
}

#[tokio::test]
async fn nonce_is_echoed_only_when_sent_bounded_and_never_reissued() {
    let app = spawn_app().await;
    let rp = app.register_relying_party(None, None).await;
    let tokens = login_flow(&app, &rp, "openid", &[]).await;
    let claims = id_token_claims(&app, &rp, &tokens).await;
    assert!(claims.get("nonce").is_none(), "no nonce sent, none in the ID token");

    // A replayed code gives no second ID token with the nonce; it revokes the first grant.
    let pkce = Pkce::new();
    let query = oidc_query(&rp, &pkce, "openid", &[("nonce", "once-only")]);
    let code = param(&app.authorize_and_allow(&query).await, "code").unwrap();
    let first: Value = exchange(&app, &rp, &code, &pkce).await.json().await.unwrap();
    assert_eq!(id_token_claims(&app, &rp, &first).await["nonce"], "once-only");
    let replay = exchange(&app, &rp, &code, &pkce).await;
    assert_eq!(replay.status(), 400);
    let body: Value = replay.json().await.unwrap();
    assert_eq!(body["error"], "invalid_grant");
    assert!(body.get("id_token").is_none());
    let revoked = userinfo(&app, first["access_token"].as_str().unwrap()).await;
    assert_eq!(revoked.status(), 401, "the replay revoked what the code produced");

    // A refreshed ID token has no nonce (Core §12.2).
    let tokens = login_flow(&app, &rp, "openid", &[("nonce", "n1")]).await;
    let refreshed = app
        .token(
            &rp,
            &[
                ("grant_type", "refresh_token"),
                ("refresh_token", tokens["refresh_token"].as_str().unwrap()),
            ],
        )
        .await;
    let refreshed: Value = refreshed.json().await.unwrap();
    assert!(id_token_claims(&app, &rp, &refreshed).await.get("nonce").is_none());

    // An absurdly long nonce is refused at the (verified) redirect URI.
    let long = "n".repeat(513);
    let response = app
        .authorize(&oidc_query(&rp, &Pkce::new(), "openid", &[("nonce", &long)]))
        .await;
    assert_eq!(response.status(), 302);
    let to_client = location(&response);
    assert!(to_client.starts_with(REDIRECT_URI));
    assert_eq!(param(&to_client, "error").as_deref(), Some("invalid_request"));
}

#[tokio::test]
async fn a_refreshed_id_token_keeps_subject_audience_and_auth_time() {
    let app = spawn_app().await;
    let rp = app.register_relying_party(None, None).await;
    let tokens = login_flow(&app, &rp, "openid profile", &[]).await;
    let first = id_token_claims(&app, &rp, &tokens).await;
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let form = [
        ("grant_type", "refresh_token"),
        ("refresh_token", tokens["refresh_token"].as_str().unwrap()),
    ];
    let refreshed: Value = app.token(&rp, &form).await.json().await.unwrap();
    let second = id_token_claims(&app, &rp, &refreshed).await;
    assert_eq!(second["sub"], first["sub"]);
    assert_eq!(second["auth_time"], first["auth_time"]);
    assert!(second["iat"].as_i64() > first["iat"].as_i64());
    // Narrowing the scope to drop openid drops the ID token.
    let form = [
        ("grant_type", "refresh_token"),
        ("refresh_token", refreshed["refresh_token"].as_str().unwrap()),
        ("scope", "profile"),
    ];
    let narrowed: Value = app.token(&rp, &form).await.json().await.unwrap();
    assert!(narrowed.get("id_token").is_none(), "{narrowed}");
}

#[tokio::test]
async fn prompt_none_without_a_session_is_login_required_at_a_registered_redirect_only() {
    let app = spawn_app().await;
    let rp = app.register_relying_party(None, None).await;
    let response = app
        .authorize(&oidc_query(&rp, &Pkce::new(), "openid", &[("prompt", "none")]))
        .await;
    assert_eq!(response.status(), 302);
    let to_client = location(&response);
    assert!(to_client.starts_with(REDIRECT_URI), "{to_client}");
    assert_eq!(param(&to_client, "error").as_deref(), Some("login_required"));
    assert_eq!(param(&to_client, "state").as_deref(), Some("st4te"));
    assert_eq!(param(&to_client, "iss").as_deref(), Some(app.issuer.as_str()));

    // With a redirect URI that is not registered, nothing is redirected anywhere.
    let mut query = oidc_query(&rp, &Pkce::new(), "openid", &[("prompt", "none")]);
    query.retain(|(k, _)| k != "redirect_uri");
    query.push(("redirect_uri".into(), "https://evil.example/cb".into()));
    let response = app.authorize(&query).await;
    assert_eq!(response.status(), 400);
    assert!(response.headers().get("location").is_none());

    // `none` cannot be combined with another value.
    let response = app
        .authorize(&oidc_query(&rp, &Pkce::new(), "openid", &[("prompt", "none login")]))
        .await;
    assert_eq!(param(&location(&response), "error").as_deref(), Some("invalid_request"));
}

#[tokio::test]
async fn prompt_none_with_a_session_issues_a_code_or_reports_consent_required() {
    let app = spawn_app().await;
    let rp = app.register_relying_party(None, None).await;
    let login = app.log_in("/o/login/", USERNAME, PASSWORD).await;
    assert_eq!(login.status(), 303);
    // Logged in but never approved this client: no page may be shown.
    let response = app
        .authorize(&oidc_query(&rp, &Pkce::new(), "openid", &[("prompt", "none")]))
        .await;
    assert_eq!(
        param(&location(&response), "error").as_deref(),
        Some("consent_required")
    );
    // Approve once; then prompt=none returns a code silently.
    login_flow(&app, &rp, "openid", &[]).await;
    let pkce = Pkce::new();
    let response = app
        .authorize(&oidc_query(
            &rp,
            &pkce,
            "openid",
            &[("prompt", "none"), ("nonce", "silent")],
        ))
        .await;
    assert_eq!(response.status(), 302);
    let code = param(&location(&response), "code").expect("a code without any page");
    let tokens: Value = exchange(&app, &rp, &code, &pkce).await.json().await.unwrap();
    assert_eq!(id_token_claims(&app, &rp, &tokens).await["nonce"], "silent");
}

#[tokio::test]
async fn prompt_login_and_max_age_force_a_fresh_login_that_auth_time_reports() {
    let app = spawn_app().await;
    let rp = app.register_relying_party(None, None).await;
    let first = id_token_claims(&app, &rp, &login_flow(&app, &rp, "openid", &[]).await).await;
    let first_auth = first["auth_time"].as_i64().unwrap();
    tokio::time::sleep(Duration::from_millis(2100)).await;

    // A recent enough login is reused, and auth_time says when it happened.
    let reused = login_flow(&app, &rp, "openid", &[("max_age", "3600")]).await;
    assert_eq!(id_token_claims(&app, &rp, &reused).await["auth_time"], first_auth);

    for extra in [("max_age", "1"), ("prompt", "login"), ("max_age", "0")] {
        let pkce = Pkce::new();
        let query = oidc_query(&rp, &pkce, "openid", &[extra]);
        let response = app.authorize(&query).await;
        assert_eq!(response.status(), 302, "{extra:?}");
        let to_login = location(&response);
        assert!(to_login.starts_with("/o/login/"), "{extra:?}: {to_login}");
        let login = app.log_in(&to_login, USERNAME, PASSWORD).await;
        assert_eq!(login.status(), 303);
        // Back to the authorization request, which now goes straight to the client.
        let back = app.http.get(app.url(&location(&login))).send().await.unwrap();
        assert_eq!(back.status(), 302, "{extra:?}: no second login");
        let code = param(&location(&back), "code").expect("a code");
        let tokens: Value = exchange(&app, &rp, &code, &pkce).await.json().await.unwrap();
        let auth_time = id_token_claims(&app, &rp, &tokens).await["auth_time"].as_i64().unwrap();
        assert!(auth_time > first_auth, "{extra:?}: auth_time is the new login");
        assert!(tessera::oauth::now() - auth_time <= 1);
    }

    let bad = app
        .authorize(&oidc_query(&rp, &Pkce::new(), "openid", &[("max_age", "soon")]))
        .await;
    assert_eq!(param(&location(&bad), "error").as_deref(), Some("invalid_request"));
}

#[tokio::test]
async fn login_hint_prefills_the_username() {
    let app = spawn_app().await;
    let rp = app.register_relying_party(None, None).await;
    let response = app
        .authorize(&oidc_query(
            &rp,
            &Pkce::new(),
            "openid",
            &[("login_hint", "bob@example")],
        ))
        .await;
    let page = app.get_text(&location(&response)).await;
    assert!(page.contains("value=\"bob@example\""), "{page}");
}

#[tokio::test]
async fn request_objects_and_other_response_modes_are_refused() {
    let app = spawn_app().await;
    let rp = app.register_relying_party(None, None).await;
    for (extra, error) in [
        (("request", "eyJhbGciOiJub25lIn0.e30."), "request_not_supported"),
        (("request_uri", "https://evil.example/r"), "request_uri_not_supported"),
        (("response_mode", "fragment"), "invalid_request"),
        (("prompt", "create"), "invalid_request"),
    ] {
        let response = app.authorize(&oidc_query(&rp, &Pkce::new(), "openid", &[extra])).await;
        assert_eq!(
            param(&location(&response), "error").as_deref(),
            Some(error),
            "{extra:?}"
        );
    }
}

#[tokio::test]
async fn userinfo_takes_a_bearer_header_or_form_body_and_answers_rfc6750_errors() {
    let app = spawn_app().await;
    let rp = app.register_relying_party(None, None).await;
    let tokens = login_flow(&app, &rp, "openid email", &[]).await;
    let access = tokens["access_token"].as_str().unwrap();

    let post_header = app
        .http
        .post(app.url("/o/userinfo/"))
        .bearer_auth(access)
        .send()
        .await
        .unwrap();
    assert_eq!(post_header.status(), 200);
    let post_form = app
        .http
        .post(app.url("/o/userinfo/"))
        .form(&[("access_token", access)])
        .send()
        .await
        .unwrap();
    assert_eq!(post_form.status(), 200);
    let info: Value = post_form.json().await.unwrap();
    assert_eq!(info["email"], "alice@example.com");

    let none = app.http.get(app.url("/o/userinfo/")).send().await.unwrap();
    assert_eq!(none.status(), 401);
    let challenge = www_authenticate(&none);
    assert!(
        challenge.starts_with("Bearer") && !challenge.contains("error="),
        "{challenge}"
    );

    // An ID token is not an access token (its typ is JWT, not at+jwt).
    let id_token = tokens["id_token"].as_str().unwrap();
    assert_eq!(userinfo(&app, id_token).await.status(), 401);
    assert_eq!(app.introspect(id_token).await["active"], false);

    let garbage = userinfo(&app, "not-a-token").await;
    assert_eq!(garbage.status(), 401);
    assert!(www_authenticate(&garbage).contains("error=\"invalid_token\""));

    let both = app
        .http
        .post(app.url("/o/userinfo/"))
        .bearer_auth(access)
        .form(&[("access_token", access)])
        .send()
        .await
        .unwrap();
    assert_eq!(both.status(), 400);
    assert!(www_authenticate(&both).contains("error=\"invalid_request\""));

    let basic = app
        .http
        .get(app.url("/o/userinfo/"))
        .basic_auth("x", Some("y"))
        .send()
        .await
        .unwrap();
    // Another scheme is no bearer authentication at all (RFC 6750 §3.1): no error code.
    assert_eq!(basic.status(), 401);
    assert!(
        !www_authenticate(&basic).contains("error="),
        "{}",
        www_authenticate(&basic)
    );
    let empty = app
        .http
        .get(app.url("/o/userinfo/"))
        .header("Authorization", "Bearer ")
        .send()
        .await
        .unwrap();
    assert_eq!(empty.status(), 400);
    assert!(www_authenticate(&empty).contains("error=\"invalid_request\""));

    // An access token without openid (client_credentials, or a plain OAuth grant).
    let cc: Value = app.client_credentials("read").await.json().await.unwrap();
    let forbidden = userinfo(&app, cc["access_token"].as_str().unwrap()).await;
    assert_eq!(forbidden.status(), 403);
    assert!(www_authenticate(&forbidden).contains("error=\"insufficient_scope\""));
    let plain = login_flow(&app, &rp, "read", &[]).await;
    assert_eq!(
        userinfo(&app, plain["access_token"].as_str().unwrap()).await.status(),
        403
    );

    // A token for another resource server is not accepted here.
    let pkce = Pkce::new();
    let query = oidc_query(&rp, &pkce, "openid", &[("resource", RESOURCE)]);
    let code = param(&app.authorize_and_allow(&query).await, "code").unwrap();
    let elsewhere: Value = exchange(&app, &rp, &code, &pkce).await.json().await.unwrap();
    assert_eq!(
        userinfo(&app, elsewhere["access_token"].as_str().unwrap())
            .await
            .status(),
        401
    );
}

#[tokio::test]
async fn userinfo_refuses_revoked_and_expired_tokens() {
    let app = spawn_app().await;
    let rp = app.register_relying_party(None, None).await;
    let tokens = login_flow(&app, &rp, "openid", &[]).await;
    let access = tokens["access_token"].as_str().unwrap();
    assert_eq!(userinfo(&app, access).await.status(), 200);
    let revoke = app
        .http
        .post(app.url("/o/revoke_token/"))
        .basic_auth(&rp.id, rp.secret.as_ref())
        .form(&[("token", access)])
        .send()
        .await
        .unwrap();
    assert_eq!(revoke.status(), 200);
    let revoked = userinfo(&app, access).await;
    assert_eq!(revoked.status(), 401);
    assert!(www_authenticate(&revoked).contains("invalid_token"));

    let short_lived = app.register_relying_party(None, Some(1)).await;
    let tokens = login_flow(&app, &short_lived, "openid", &[]).await;
    let access = tokens["access_token"].as_str().unwrap();
    assert_eq!(userinfo(&app, access).await.status(), 200);
    tokio::time::sleep(Duration::from_millis(2100)).await;
    assert_eq!(userinfo(&app, access).await.status(), 401, "expired");
}

#[tokio::test]
async fn both_discovery_documents_are_the_same_and_carry_the_openid_fields() {
    let app = spawn_app().await;
    let openid = app.get_json("/.well-known/openid-configuration").await;
    let oauth = app.get_json("/.well-known/oauth-authorization-server").await;
    assert_eq!(openid, oauth);
    assert_eq!(openid["issuer"], app.issuer.as_str());
    assert_eq!(openid["userinfo_endpoint"], app.url("/o/userinfo/"));
    assert_eq!(openid["end_session_endpoint"], app.url("/o/logout/"));
    assert_eq!(openid["subject_types_supported"], serde_json::json!(["public"]));
    assert_eq!(openid["response_types_supported"], serde_json::json!(["code"]));
    assert_eq!(openid["request_uri_parameter_supported"], false);
    let algs = openid["id_token_signing_alg_values_supported"].as_array().unwrap();
    assert!(
        algs.contains(&"RS256".into()) && algs.contains(&"ES256".into()),
        "{algs:?}"
    );
    for scope in ["openid", "profile", "email"] {
        assert!(openid["scopes_supported"].as_array().unwrap().contains(&scope.into()));
    }
    for claim in [
        "sub",
        "auth_time",
        "nonce",
        "at_hash",
        "name",
        "email",
        "email_verified",
    ] {
        assert!(
            openid["claims_supported"].as_array().unwrap().contains(&claim.into()),
            "{claim}"
        );
    }
    for prompt in ["none", "login", "consent"] {
        assert!(openid["prompt_values_supported"]
            .as_array()
            .unwrap()
            .contains(&prompt.into()));
    }
    for endpoint in ["userinfo_endpoint", "end_session_endpoint"] {
        let url = openid[endpoint].as_str().unwrap();
        assert_ne!(app.http.get(url).send().await.unwrap().status(), 404, "{endpoint}");
    }
}

#[tokio::test]
async fn a_client_may_register_es256_or_eddsa_id_tokens() {
    let app = spawn_app().await;
    let es256 = app.register_relying_party(Some(Algorithm::ES256), None).await;
    let tokens = login_flow(&app, &es256, "openid", &[]).await;
    assert_eq!(jwt_parts(tokens["id_token"].as_str().unwrap()).0["alg"], "ES256");
    id_token_claims(&app, &es256, &tokens).await;

    // EdDSA needs an Ed25519 key; the keyring has none yet, so the exchange is refused
    // cleanly, before the code is spent (an operator may register a client ahead of its key).
    let eddsa = app.register_relying_party(Some(Algorithm::EdDSA), None).await;
    let pkce = Pkce::new();
    let code = param(
        &app.authorize_and_allow(&oidc_query(&eddsa, &pkce, "openid", &[])).await,
        "code",
    )
    .unwrap();
    let response = exchange(&app, &eddsa, &code, &pkce).await;
    assert_eq!(response.status(), 400);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"], "invalid_request");
    assert!(body["error_description"].as_str().unwrap().contains("EdDSA"));
    let vault = app.key_vault().await;
    Keyring::generate(vault.as_ref(), Algorithm::EdDSA).await.unwrap();
    for _ in 0..50 {
        let algs =
            app.get_json("/.well-known/openid-configuration").await["id_token_signing_alg_values_supported"].clone();
        if algs.as_array().unwrap().contains(&"EdDSA".into()) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // The code was not spent: once the key exists it is exchanged.
    let response = exchange(&app, &eddsa, &code, &pkce).await;
    assert_eq!(response.status(), 200);
    let tokens: Value = response.json().await.unwrap();
    let id_token = tokens["id_token"].as_str().unwrap();
    assert_eq!(jwt_parts(id_token).0["alg"], "EdDSA");
    let claims = id_token_claims(&app, &eddsa, &tokens).await;
    // For Ed25519 at_hash uses SHA-512.
    let digest = ring::digest::digest(
        &ring::digest::SHA512,
        tokens["access_token"].as_str().unwrap().as_bytes(),
    );
    assert_eq!(
        claims["at_hash"],
        URL_SAFE_NO_PAD.encode(&digest.as_ref()[..32]).as_str()
    );
}

/// Logs out through the end-session endpoint with these parameters.
async fn end_session(app: &TestApp, params: &[(&str, &str)]) -> reqwest::Response {
    app.http.get(app.url("/o/logout/")).query(params).send().await.unwrap()
}

async fn is_logged_in(app: &TestApp) -> bool {
    app.get_text("/").await.contains("Signed in as")
}

#[tokio::test]
async fn logout_with_id_token_hint_ends_the_session_and_returns_to_the_registered_uri() {
    let app = spawn_app().await;
    let rp = app.register_relying_party(None, None).await;
    let tokens = login_flow(&app, &rp, "openid", &[]).await;
    let id_token = tokens["id_token"].as_str().unwrap();
    assert!(is_logged_in(&app).await);

    let response = end_session(
        &app,
        &[
            ("id_token_hint", id_token),
            ("post_logout_redirect_uri", LOGGED_OUT),
            ("state", "bye"),
        ],
    )
    .await;
    assert_eq!(response.status(), 303);
    assert_eq!(location(&response), format!("{LOGGED_OUT}?state=bye"));
    assert!(response.headers()["set-cookie"].to_str().unwrap().contains("Max-Age=0"));
    assert!(!is_logged_in(&app).await, "the session is over");

    // The next authorization asks for a login again, and prompt=none says so.
    let again = app.authorize(&oidc_query(&rp, &Pkce::new(), "openid", &[])).await;
    assert!(location(&again).starts_with("/o/login/"));
    let silent = app
        .authorize(&oidc_query(&rp, &Pkce::new(), "openid", &[("prompt", "none")]))
        .await;
    assert_eq!(param(&location(&silent), "error").as_deref(), Some("login_required"));
    // Tokens are not part of the session: the RP revokes them itself if it wants.
    assert_eq!(
        userinfo(&app, tokens["access_token"].as_str().unwrap()).await.status(),
        200
    );
}

#[tokio::test]
async fn logout_without_proof_asks_first_and_never_redirects_to_an_unregistered_uri() {
    let app = spawn_app().await;
    let rp = app.register_relying_party(None, None).await;
    let tokens = login_flow(&app, &rp, "openid", &[]).await;
    let id_token = tokens["id_token"].as_str().unwrap();

    // Unregistered or unproven redirect targets are an error page, never a redirect.
    for params in [
        vec![
            ("id_token_hint", id_token),
            ("post_logout_redirect_uri", "https://evil.example/"),
        ],
        vec![("post_logout_redirect_uri", LOGGED_OUT)],
        vec![("id_token_hint", "eyJhbGciOiJub25lIn0.eyJzdWIiOiJ4In0.")],
        vec![
            ("client_id", app.client.id.as_str()),
            ("post_logout_redirect_uri", LOGGED_OUT),
        ],
    ] {
        let response = end_session(&app, &params).await;
        assert_eq!(response.status(), 400, "{params:?}");
        assert!(response.headers().get("location").is_none());
    }
    // Change one character of the signed payload (the signature's last character may carry
    // only padding bits, so changing that is not always a change).
    let dot = id_token.find('.').unwrap() + 5;
    let replacement = if &id_token[dot..dot + 1] == "A" { "B" } else { "A" };
    let tampered = format!("{}{replacement}{}", &id_token[..dot], &id_token[dot + 1..]);
    assert_eq!(end_session(&app, &[("id_token_hint", &tampered)]).await.status(), 400);
    assert!(is_logged_in(&app).await, "none of that logged the user out");

    // A bare link (another site could embed it) only shows a confirmation page.
    let ask = end_session(&app, &[("client_id", &rp.id), ("post_logout_redirect_uri", LOGGED_OUT)]).await;
    assert_eq!(ask.status(), 200);
    let html = ask.text().await.unwrap();
    assert!(html.contains("Relying Party") && html.contains("Log out"));
    assert!(is_logged_in(&app).await);
    // Confirming without the CSRF token does nothing.
    let forged = app
        .http
        .post(app.url("/o/logout/"))
        .form(&[("confirm", "yes"), ("client_id", rp.id.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(forged.status(), 403);
    assert!(is_logged_in(&app).await);
    // The user's own confirmation logs out and goes back to the app.
    let csrf = hidden_input(&html, "csrf_token").unwrap();
    let confirmed = app
        .http
        .post(app.url("/o/logout/"))
        .form(&[
            ("csrf_token", csrf.as_str()),
            ("confirm", "yes"),
            ("client_id", rp.id.as_str()),
            ("post_logout_redirect_uri", LOGGED_OUT),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(confirmed.status(), 303);
    assert_eq!(location(&confirmed), LOGGED_OUT);
    assert!(!is_logged_in(&app).await);
}

#[tokio::test]
async fn users_edit_their_profile_and_apps_see_the_change() {
    let app = spawn_app().await;
    let rp = app.register_relying_party(None, None).await;
    let unauthenticated = app.http.get(app.url("/o/profile/")).send().await.unwrap();
    assert!(location(&unauthenticated).starts_with("/o/login/"));
    app.log_in("/o/login/", USERNAME, PASSWORD).await;
    let page = app.get_text("/o/profile/").await;
    let csrf = hidden_input(&page, "csrf_token").unwrap();
    let form = |csrf: &str, picture: &str| {
        vec![
            ("csrf_token", csrf.to_string()),
            ("name", "Alice Pleasance Liddell".to_string()),
            ("email", "alice@wonderland.example".to_string()),
            ("picture", picture.to_string()),
            ("zoneinfo", "Europe/London".to_string()),
        ]
    };
    let saved = app
        .http
        .post(app.url("/o/profile/"))
        .form(&form(&csrf, "https://wonderland.example/alice.png"))
        .send()
        .await
        .unwrap();
    assert_eq!(saved.status(), 200);
    assert!(saved.text().await.unwrap().contains("Saved."));

    let bad = app
        .http
        .post(app.url("/o/profile/"))
        .form(&form(&csrf, "javascript:alert(1)"))
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status(), 400);
    let html = bad.text().await.unwrap();
    assert!(
        html.contains("http(s) URL") && html.contains("Alice Pleasance Liddell"),
        "what was typed is kept"
    );
    let forged = app
        .http
        .post(app.url("/o/profile/"))
        .form(&form("wrong", "https://x.example/"))
        .send()
        .await
        .unwrap();
    assert_eq!(forged.status(), 403);

    let tokens = login_flow(&app, &rp, "openid profile email", &[]).await;
    let info: Value = userinfo(&app, tokens["access_token"].as_str().unwrap())
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(info["name"], "Alice Pleasance Liddell");
    assert_eq!(
        info["picture"], "https://wonderland.example/alice.png",
        "the invalid edit changed nothing"
    );
    assert_eq!(info["zoneinfo"], "Europe/London");
    assert_eq!(info["email"], "alice@wonderland.example");
    assert_eq!(info["email_verified"], false, "a changed email is unverified");
}

#[tokio::test]
async fn id_token_hint_at_the_authorization_endpoint_names_the_user_who_must_be_logged_in() {
    let app = spawn_app().await;
    let rp = app.register_relying_party(None, None).await;
    app.provider
        .create_user(&Caller::system(), "bob", PASSWORD, None)
        .await
        .unwrap();
    // Bob logs in once and gets an ID token; then he logs out and Alice logs in.
    let pkce = Pkce::new();
    let query = oidc_query(&rp, &pkce, "openid", &[]);
    let to_login = location(&app.authorize(&query).await);
    assert_eq!(app.log_in(&to_login, "bob", PASSWORD).await.status(), 303);
    let code = param(&app.authorize_and_allow(&query).await, "code").unwrap();
    let bobs: Value = exchange(&app, &rp, &code, &pkce).await.json().await.unwrap();
    let bobs_id_token = bobs["id_token"].as_str().unwrap().to_string();
    assert_eq!(
        end_session(&app, &[("id_token_hint", &bobs_id_token)]).await.status(),
        200
    );
    let alices = login_flow(&app, &rp, "openid", &[]).await;
    let alices_id_token = alices["id_token"].as_str().unwrap().to_string();
    assert_ne!(
        id_token_claims(&app, &rp, &alices).await["sub"],
        id_token_claims(&app, &rp, &bobs).await["sub"]
    );

    let silent = |hint: String| {
        oidc_query(&rp, &Pkce::new(), "openid", &[("prompt", "none")])
            .into_iter()
            .chain([("id_token_hint".to_string(), hint)])
            .collect::<Vec<_>>()
    };
    // Alice is logged in: her own hint gets a code, Bob's is login_required.
    let ok = app.authorize(&silent(alices_id_token.clone())).await;
    assert!(param(&location(&ok), "code").is_some(), "{}", location(&ok));
    let other = app.authorize(&silent(bobs_id_token)).await;
    assert_eq!(param(&location(&other), "error").as_deref(), Some("login_required"));
    // A hint that is not ours, or not for this client, is a bad request.
    let mut forged = alices_id_token.clone();
    forged.push('x');
    let bad = app.authorize(&silent(forged)).await;
    assert_eq!(param(&location(&bad), "error").as_deref(), Some("invalid_request"));
    let stranger = app.register_relying_party(None, None).await;
    let mut for_other_client = silent(alices_id_token);
    for (k, v) in &mut for_other_client {
        if k == "client_id" {
            *v = stranger.id.clone();
        }
    }
    let bad = app.authorize(&for_other_client).await;
    assert_eq!(param(&location(&bad), "error").as_deref(), Some("invalid_request"));
}
