//! Token exchange (RFC 8693) at /o/token/: a service trades a user's access token for a
//! narrower one for another audience, optionally naming who acts (`act`), within its client
//! policy; exchanged tokens die with the subject's grant.

use serde_json::{json, Value};
use tessera::oauth::audit::Caller;
use tessera::oauth::client::NewClient;
use tessera::store::{ClientPolicy, ClientType, GrantType, TokenExchangePolicy};

use crate::helpers::*;

const EXCHANGE: &str = "urn:ietf:params:oauth:grant-type:token-exchange";
const ACCESS_TOKEN: &str = "urn:ietf:params:oauth:token-type:access_token";
const JWT: &str = "urn:ietf:params:oauth:token-type:jwt";
const SERVICE_B: &str = "https://b.example";
const SERVICE_C: &str = "https://c.example";

fn policy(audiences: &[&str], subject_audiences: &[&str], require_actor: bool) -> TokenExchangePolicy {
    TokenExchangePolicy {
        audiences: audiences.iter().map(|a| a.to_string()).collect(),
        subject_audiences: subject_audiences.iter().map(|a| a.to_string()).collect(),
        require_actor,
    }
}

/// Registers a confidential client that may exchange tokens under `policy` (and get its own
/// client_credentials tokens, to present as actor tokens), with scopes `read write`.
async fn register_exchanger(app: &TestApp, name: &str, policy: TokenExchangePolicy) -> TestClient {
    let (client, secret) = app
        .provider
        .register_client(
            &Caller::system(),
            NewClient {
                scope: "read write".into(),
                policy: ClientPolicy {
                    token_exchange: policy,
                    ..ClientPolicy::default()
                },
                ..client_settings(
                    name,
                    ClientType::Confidential,
                    vec![GrantType::TokenExchange, GrantType::ClientCredentials],
                )
            },
        )
        .await
        .unwrap();
    TestClient {
        id: client.client_id,
        secret,
    }
}

/// POSTs a token exchange request for `subject` (typed as an access token) plus `extra`.
async fn exchange(app: &TestApp, client: &TestClient, subject: &str, extra: &[(&str, &str)]) -> reqwest::Response {
    let mut form = vec![
        ("grant_type", EXCHANGE),
        ("subject_token", subject),
        ("subject_token_type", ACCESS_TOKEN),
    ];
    form.extend_from_slice(extra);
    app.token(client, &form).await
}

/// A successful exchange's new access token.
async fn exchanged(app: &TestApp, client: &TestClient, subject: &str, extra: &[(&str, &str)]) -> String {
    let response = exchange(app, client, subject, extra).await;
    let status = response.status();
    let body: Value = response.json().await.unwrap();
    assert_eq!(status, 200, "{body}");
    body["access_token"].as_str().unwrap().to_string()
}

/// The `error` of a refused token request, which must be a 400 that is not cached.
async fn error_of(response: reqwest::Response) -> String {
    assert_eq!(response.status(), 400);
    assert_eq!(response.headers()["cache-control"], "no-store");
    let body: Value = response.json().await.unwrap();
    body["error"].as_str().unwrap().to_string()
}

/// A client_credentials access token of `client` (scope `read`), for `resource` if given.
async fn own_token(app: &TestApp, client: &TestClient, resource: Option<&str>) -> String {
    let mut form = vec![("grant_type", "client_credentials"), ("scope", "read")];
    if let Some(resource) = resource {
        form.push(("resource", resource));
    }
    let body: Value = app.token(client, &form).await.json().await.unwrap();
    body["access_token"]
        .as_str()
        .expect("a client_credentials token")
        .to_string()
}

#[tokio::test]
async fn a_users_token_is_exchanged_for_a_narrower_one_for_another_audience() {
    let app = spawn_app().await;
    let service = register_exchanger(&app, "Service A", policy(&[SERVICE_B], &[], false)).await;
    // The user logs in through the real code flow; the app's token (scope read write, for this
    // server) reaches the service, which trades it for a read-only token for service B.
    let tokens = app.get_tokens().await;
    let subject = tokens["access_token"].as_str().unwrap();
    let (_, subject_claims) = jwt_parts(subject);

    let response = exchange(&app, &service, subject, &[("audience", SERVICE_B), ("scope", "read")]).await;
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["cache-control"], "no-store");
    let body: Value = response.json().await.unwrap();
    // RFC 8693 §2.2.1: access_token, issued_token_type, token_type, expires_in, scope.
    assert_eq!(body["issued_token_type"], ACCESS_TOKEN);
    assert_eq!(body["token_type"], "Bearer");
    assert_eq!(body["scope"], "read");
    assert!(
        body.get("refresh_token").is_none(),
        "no refresh token for an exchanged token"
    );
    assert!(body.get("id_token").is_none());
    // A second may tick between the server's clock reading and this one.
    let remaining = subject_claims["exp"].as_i64().unwrap() - tessera::oauth::now();
    assert!(body["expires_in"].as_i64().unwrap() <= remaining + 1);

    let token = body["access_token"].as_str().unwrap();
    let claims = app.verify_with_jwks(token).await.expect("signed with a published key");
    let (header, _) = jwt_parts(token);
    assert_eq!(header["typ"], "at+jwt");
    assert_eq!(claims["sub"], subject_claims["sub"], "the same user");
    assert_eq!(
        claims["client_id"],
        service.id.as_str(),
        "issued to the exchanging client"
    );
    assert_eq!(claims["aud"], SERVICE_B);
    assert_eq!(claims["scope"], "read");
    assert_eq!(claims["gid"], subject_claims["gid"], "the subject's grant");
    assert!(claims["exp"].as_i64().unwrap() <= subject_claims["exp"].as_i64().unwrap());
    assert!(claims.get("act").is_none(), "no actor token, no act");
    assert_ne!(claims["jti"], subject_claims["jti"]);

    let introspected = app.introspect(token).await;
    assert_eq!(introspected["active"], true);
    assert_eq!(introspected["aud"], SERVICE_B);
    assert_eq!(introspected["client_id"], service.id.as_str());

    // `resource` names the target as well as `audience`; `jwt` is asked for and named back.
    let response = exchange(
        &app,
        &service,
        subject,
        &[("resource", SERVICE_B), ("requested_token_type", JWT)],
    )
    .await;
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["issued_token_type"], JWT, "{body}");
    assert_eq!(body["scope"], "read write", "the subject's scope by default");
    assert_eq!(jwt_parts(body["access_token"].as_str().unwrap()).1["aud"], SERVICE_B);
}

#[tokio::test]
async fn an_exchanged_token_never_outlives_its_subject_token() {
    let app = spawn_app().await;
    let service = register_exchanger(&app, "Service A", policy(&[SERVICE_B], &[], false)).await;
    let (short_lived, secret) = app
        .provider
        .register_client(
            &Caller::system(),
            NewClient {
                access_token_ttl: Some(30),
                ..client_settings("Short", ClientType::Confidential, vec![GrantType::ClientCredentials])
            },
        )
        .await
        .unwrap();
    let short_lived = TestClient {
        id: short_lived.client_id,
        secret,
    };
    let subject = own_token(&app, &short_lived, None).await;
    let response = exchange(&app, &service, &subject, &[]).await;
    let body: Value = response.json().await.unwrap();
    assert!(body["expires_in"].as_u64().unwrap() <= 30, "{body}");
    let claims = jwt_parts(body["access_token"].as_str().unwrap()).1;
    assert!(claims["exp"].as_i64().unwrap() <= jwt_parts(&subject).1["exp"].as_i64().unwrap());
    assert_eq!(
        claims["sub"],
        short_lived.id.as_str(),
        "a client's own token: the client is the subject"
    );
    assert_eq!(claims["aud"], SERVICE_B, "the only allowed audience is the default");
}

#[tokio::test]
async fn scope_beyond_the_subject_tokens_is_invalid_scope() {
    let app = spawn_app().await;
    let service = register_exchanger(&app, "Service A", policy(&[SERVICE_B], &[], false)).await;
    let subject = own_token(&app, &app.client, None).await; // scope read
    for scope in ["read write", "write", "tessera:admin", "no such scope"] {
        let response = exchange(&app, &service, &subject, &[("scope", scope)]).await;
        assert_eq!(error_of(response).await, "invalid_scope", "{scope}");
    }
    let narrow = register_exchanger(&app, "Another", policy(&[SERVICE_B], &[], false)).await;
    let user = app.get_tokens().await;
    let ok = exchange(
        &app,
        &narrow,
        user["access_token"].as_str().unwrap(),
        &[("scope", "write")],
    )
    .await;
    assert_eq!(ok.status(), 200, "within both the subject's scope and the client's");
}

#[tokio::test]
async fn a_target_outside_the_policy_is_invalid_target() {
    let app = spawn_app().await;
    let service = register_exchanger(&app, "Service A", policy(&[SERVICE_B, SERVICE_C], &[], false)).await;
    let subject = own_token(&app, &app.client, None).await;
    for extra in [
        vec![("audience", "https://evil.example")],
        vec![("resource", "https://evil.example")],
        vec![("audience", &*app.issuer)],
        vec![("audience", SERVICE_B), ("resource", SERVICE_C)],
    ] {
        let response = exchange(&app, &service, &subject, &extra).await;
        assert_eq!(error_of(response).await, "invalid_target", "{extra:?}");
    }
    // Two audiences allowed and none named: the server cannot pick.
    assert_eq!(
        error_of(exchange(&app, &service, &subject, &[]).await).await,
        "invalid_request"
    );
    for target in [SERVICE_B, SERVICE_C] {
        let token = exchanged(&app, &service, &subject, &[("audience", target), ("resource", target)]).await;
        assert_eq!(jwt_parts(&token).1["aud"], target);
    }
}

#[tokio::test]
async fn a_client_without_the_grant_is_unauthorized_client() {
    let app = spawn_app().await;
    let subject = own_token(&app, &app.client, None).await;
    // The seeded client has authorization_code, client_credentials and refresh_token only.
    let response = exchange(&app, &app.client, &subject, &[("audience", SERVICE_B)]).await;
    assert_eq!(error_of(response).await, "unauthorized_client");
    // And a client that fails authentication is invalid_client, before anything else.
    let impostor = TestClient {
        id: app.client.id.clone(),
        secret: Some("wrong".into()),
    };
    assert_eq!(exchange(&app, &impostor, &subject, &[]).await.status(), 401);
}

#[tokio::test]
async fn client_secret_post_authenticates_an_exchange() {
    let app = spawn_app().await;
    let service = register_exchanger(&app, "Service A", policy(&[SERVICE_B], &[], false)).await;
    let subject = own_token(&app, &app.client, None).await;
    let response = app
        .http
        .post(app.url("/o/token/"))
        .form(&[
            ("grant_type", EXCHANGE),
            ("subject_token", &subject),
            ("subject_token_type", ACCESS_TOKEN),
            ("client_id", &service.id),
            ("client_secret", service.secret.as_deref().unwrap()),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
}

#[tokio::test]
async fn only_subject_tokens_for_the_policys_subject_audiences_are_exchanged() {
    let app = spawn_app().await;
    let for_this_server = own_token(&app, &app.client, None).await;
    let for_the_api = own_token(&app, &app.client, Some(RESOURCE)).await;
    assert_eq!(jwt_parts(&for_the_api).1["aud"], RESOURCE);

    // No subject audiences: tokens for the server's default audience only.
    let default = register_exchanger(&app, "Default", policy(&[SERVICE_B], &[], false)).await;
    assert_eq!(exchange(&app, &default, &for_this_server, &[]).await.status(), 200);
    assert_eq!(
        error_of(exchange(&app, &default, &for_the_api, &[]).await).await,
        "invalid_request"
    );

    // The API itself, as a client, exchanges the tokens sent to it, and only those.
    let api = register_exchanger(&app, "API", policy(&[SERVICE_B], &[RESOURCE], false)).await;
    assert_eq!(exchange(&app, &api, &for_the_api, &[]).await.status(), 200);
    assert_eq!(
        error_of(exchange(&app, &api, &for_this_server, &[]).await).await,
        "invalid_request"
    );
}

#[tokio::test]
async fn require_actor_is_enforced_and_the_actor_must_be_the_client_itself() {
    let app = spawn_app().await;
    let service = register_exchanger(&app, "Service A", policy(&[SERVICE_B], &[], true)).await;
    let user = app.get_tokens().await;
    let subject = user["access_token"].as_str().unwrap();

    // RFC 8693 §2.2.2: a missing or unacceptable actor token is invalid_request.
    assert_eq!(
        error_of(exchange(&app, &service, subject, &[]).await).await,
        "invalid_request"
    );
    let someone_elses = own_token(&app, &app.client, None).await;
    let extra = [
        ("actor_token", someone_elses.as_str()),
        ("actor_token_type", ACCESS_TOKEN),
    ];
    assert_eq!(
        error_of(exchange(&app, &service, subject, &extra).await).await,
        "invalid_request",
        "an actor token issued to another client names someone this client is not"
    );
    let own = own_token(&app, &service, None).await;
    // RFC 8693 §2.1: actor_token_type is required with actor_token, and only with it.
    assert_eq!(
        error_of(exchange(&app, &service, subject, &[("actor_token", &own)]).await).await,
        "invalid_request"
    );
    assert_eq!(
        error_of(exchange(&app, &service, subject, &[("actor_token_type", ACCESS_TOKEN)]).await).await,
        "invalid_request"
    );
    let token = exchanged(
        &app,
        &service,
        subject,
        &[("actor_token", &own), ("actor_token_type", JWT)],
    )
    .await;
    let claims = jwt_parts(&token).1;
    assert_eq!(claims["sub"], jwt_parts(subject).1["sub"], "the user stays the subject");
    assert_eq!(claims["act"], json!({"sub": service.id, "client_id": service.id}));
}

/// Runs tests/interop/pyjwt_token_exchange.py: PyJWT verifies the token against the JWKS for
/// `audience` and lists its actors, outermost first; `None` if PyJWT rejects it.
async fn pyjwt_actors(app: &TestApp, audience: &str, token: &str) -> Option<(Value, Vec<String>)> {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/interop/pyjwt_token_exchange.py");
    let output = tokio::process::Command::new("python3")
        .args([script, &app.url("/.well-known/jwks.json"), &app.issuer, audience, token])
        .output()
        .await
        .expect("python3 runs");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        !stderr.contains("ModuleNotFoundError"),
        "PyJWT is not installed (pip install 'pyjwt[crypto]'): {stderr}"
    );
    if !output.status.success() {
        return None;
    }
    let out: Value = serde_json::from_slice(&output.stdout).expect("JSON");
    let actors = serde_json::from_value(out["actors"].clone()).unwrap();
    Some((out["claims"].clone(), actors))
}

#[tokio::test]
async fn act_claims_nest_over_two_hops_and_verify_with_pyjwt() {
    let app = spawn_app().await;
    // The user's app calls service A; A calls B for the user; B calls C.
    let service_a = register_exchanger(&app, "Service A", policy(&[SERVICE_B], &[], false)).await;
    let service_b = register_exchanger(&app, "Service B", policy(&[SERVICE_C], &[SERVICE_B], false)).await;
    let user = app.get_tokens().await;
    let subject = user["access_token"].as_str().unwrap();
    let user_id = jwt_parts(subject).1["sub"].clone();

    let actor_a = own_token(&app, &service_a, None).await;
    let for_b = exchanged(
        &app,
        &service_a,
        subject,
        &[("actor_token", &actor_a), ("actor_token_type", ACCESS_TOKEN)],
    )
    .await;
    let actor_b = own_token(&app, &service_b, None).await;
    let for_c = exchanged(
        &app,
        &service_b,
        &for_b,
        &[
            ("audience", SERVICE_C),
            ("scope", "read"),
            ("actor_token", &actor_b),
            ("actor_token_type", ACCESS_TOKEN),
        ],
    )
    .await;

    let (claims, actors) = pyjwt_actors(&app, SERVICE_C, &for_c).await.expect("PyJWT accepts it");
    // RFC 8693 §4.1: the outermost act is the current actor, earlier ones nested inside.
    assert_eq!(actors, [service_b.id.as_str(), service_a.id.as_str()]);
    assert_eq!(
        claims["act"],
        json!({"sub": service_b.id, "client_id": service_b.id,
               "act": {"sub": service_a.id, "client_id": service_a.id}})
    );
    assert_eq!(claims["sub"], user_id);
    assert_eq!(claims["client_id"], service_b.id.as_str());
    assert_eq!(claims["scope"], "read");
    assert_eq!(claims["gid"], jwt_parts(subject).1["gid"]);
    let (_, first_hop) = pyjwt_actors(&app, SERVICE_B, &for_b).await.expect("PyJWT accepts it");
    assert_eq!(first_hop, [service_a.id.as_str()]);
    // PyJWT checks the audience: the token for C is no good at B.
    assert!(pyjwt_actors(&app, SERVICE_B, &for_c).await.is_none());

    // Without an actor token the chain is carried over, never dropped.
    let service_c = register_exchanger(&app, "Service C", policy(&[SERVICE_B], &[SERVICE_C], false)).await;
    let onward = exchanged(&app, &service_c, &for_c, &[]).await;
    let (_, kept) = pyjwt_actors(&app, SERVICE_B, &onward).await.expect("PyJWT accepts it");
    assert_eq!(kept, [service_b.id.as_str(), service_a.id.as_str()]);
}

#[tokio::test]
async fn a_revoked_subject_token_is_refused() {
    let app = spawn_app().await;
    let service = register_exchanger(&app, "Service A", policy(&[SERVICE_B], &[], false)).await;
    let user = app.get_tokens().await;
    let subject = user["access_token"].as_str().unwrap();
    let earlier = exchanged(&app, &service, subject, &[]).await;
    // The app revokes its access token (RFC 7009).
    assert_eq!(app.revoke(subject, Some("access_token")).await.status(), 200);
    assert_eq!(
        error_of(exchange(&app, &service, subject, &[]).await).await,
        "invalid_request",
        "RFC 8693 §2.2.2: an invalid subject_token is invalid_request"
    );
    // A token exchanged before lives on until it expires (no later than the subject would
    // have): revoking one access token does not reach its descendants; revoking the grant does.
    assert_eq!(app.introspect(&earlier).await["active"], true);
}

#[tokio::test]
async fn revoking_the_subjects_grant_kills_every_token_exchanged_from_it() {
    let app = spawn_app().await;
    let service_a = register_exchanger(&app, "Service A", policy(&[SERVICE_B], &[], false)).await;
    let service_b = register_exchanger(&app, "Service B", policy(&[SERVICE_C], &[SERVICE_B], false)).await;
    let user = app.get_tokens().await;
    let subject = user["access_token"].as_str().unwrap();
    let for_b = exchanged(&app, &service_a, subject, &[]).await;
    let for_c = exchanged(&app, &service_b, &for_b, &[]).await;
    for token in [subject, &for_b, &for_c] {
        assert_eq!(app.introspect(token).await["active"], true);
    }
    // The app revokes its refresh token, and with it the grant (RFC 7009 §2.1).
    let refresh_token = user["refresh_token"].as_str().unwrap();
    assert_eq!(app.revoke(refresh_token, Some("refresh_token")).await.status(), 200);
    for token in [subject, &for_b, &for_c] {
        assert_eq!(app.introspect(token).await, json!({"active": false}));
    }
    assert_eq!(
        error_of(exchange(&app, &service_a, subject, &[]).await).await,
        "invalid_request"
    );
    assert_eq!(
        error_of(exchange(&app, &service_b, &for_b, &[]).await).await,
        "invalid_request",
        "an exchanged token of a revoked grant cannot be exchanged further"
    );
}

#[tokio::test]
async fn revoking_the_grant_through_the_admin_api_kills_exchanged_tokens() {
    let app = spawn_app().await;
    let service = register_exchanger(&app, "Service A", policy(&[SERVICE_B], &[], false)).await;
    let user = app.get_tokens().await;
    let subject = user["access_token"].as_str().unwrap();
    let token = exchanged(&app, &service, subject, &[]).await;
    let admin = app.register_admin_client(None).await;
    let body: Value = app
        .token(
            &admin,
            &[("grant_type", "client_credentials"), ("scope", "tessera:admin")],
        )
        .await
        .json()
        .await
        .unwrap();
    let admin_token = body["access_token"].as_str().unwrap();
    let gid = jwt_parts(&token).1["gid"].as_str().unwrap().to_string();
    let revoked = app
        .http
        .post(app.url(&format!("/api/v1/grants/{gid}/revoke")))
        .bearer_auth(admin_token)
        .send()
        .await
        .unwrap();
    assert_eq!(revoked.status(), 200);
    assert_eq!(app.introspect(&token).await["active"], false);
}

#[tokio::test]
async fn the_user_revoking_the_app_on_the_authorized_apps_page_kills_exchanged_tokens() {
    let app = spawn_app().await;
    let service = register_exchanger(&app, "Service A", policy(&[SERVICE_B], &[], false)).await;
    let user = app.get_tokens().await;
    let token = exchanged(&app, &service, user["access_token"].as_str().unwrap(), &[]).await;
    assert_eq!(app.introspect(&token).await["active"], true);
    // The user (still logged in, in the same browser) withdraws the app they authorized.
    let page = app.get_text("/o/authorized_tokens/").await;
    let csrf = hidden_input(&page, "csrf_token").unwrap();
    let revoked = app
        .http
        .post(app.url("/o/authorized_tokens/"))
        .form(&[("csrf_token", csrf.as_str()), ("client_id", app.client.id.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(revoked.status(), 303);
    assert_eq!(app.introspect(&token).await["active"], false);
}

#[tokio::test]
async fn bad_subject_tokens_and_types_are_invalid_request_never_a_server_error() {
    let app = spawn_app().await;
    let service = register_exchanger(&app, "Service A", policy(&[SERVICE_B], &[], false)).await;
    let user = app.get_tokens().await;
    let subject = user["access_token"].as_str().unwrap().to_string();
    let (header, payload) = subject.split_once('.').unwrap();
    let signature = subject.rsplit('.').next().unwrap();
    // The same claims, the signature of other bytes; alg none; a token that is all padding.
    let forged_payload = {
        use base64::Engine;
        let engine = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        let mut claims = jwt_parts(&subject).1;
        claims["scope"] = json!("read write tessera:admin");
        engine.encode(claims.to_string())
    };
    let forged = format!("{header}.{forged_payload}.{signature}");
    let unsigned = {
        use base64::Engine;
        let engine = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        format!(
            "{}.{}.",
            engine.encode(r#"{"alg":"none","typ":"at+jwt"}"#),
            payload.split('.').next().unwrap()
        )
    };
    let huge = format!("{header}.{}.{signature}", "A".repeat(40 * 1024));
    for bad in [
        "not a token".to_string(),
        "a.b.c".to_string(),
        "....".to_string(),
        forged,
        unsigned,
        huge,
        user["refresh_token"].as_str().unwrap().to_string(),
        format!("{subject}x"),
    ] {
        let response = exchange(&app, &service, &bad, &[]).await;
        assert_eq!(error_of(response).await, "invalid_request", "{:.40}", bad);
    }
    // Wrong or missing types (RFC 8693 §3 lists more; Tessera's tokens are access tokens/JWTs).
    let cases: Vec<Vec<(&str, &str)>> = vec![
        vec![
            ("subject_token", &subject),
            ("subject_token_type", "urn:ietf:params:oauth:token-type:id_token"),
        ],
        vec![
            ("subject_token", &subject),
            ("subject_token_type", "urn:ietf:params:oauth:token-type:refresh_token"),
        ],
        vec![("subject_token", &subject), ("subject_token_type", "access_token")],
        vec![("subject_token", &subject)],
        vec![("subject_token_type", ACCESS_TOKEN)],
        vec![("subject_token", ""), ("subject_token_type", ACCESS_TOKEN)],
        vec![
            ("subject_token", &subject),
            ("subject_token_type", ACCESS_TOKEN),
            ("requested_token_type", "urn:ietf:params:oauth:token-type:refresh_token"),
        ],
        vec![
            ("subject_token", &subject),
            ("subject_token_type", ACCESS_TOKEN),
            ("actor_token", &subject),
            ("actor_token_type", "urn:ietf:params:oauth:token-type:saml2"),
        ],
        // RFC 6749 §3.2: parameters are not repeated.
        vec![
            ("subject_token", &subject),
            ("subject_token", &subject),
            ("subject_token_type", ACCESS_TOKEN),
        ],
        vec![
            ("subject_token", &subject),
            ("subject_token_type", ACCESS_TOKEN),
            ("audience", SERVICE_B),
            ("audience", SERVICE_C),
        ],
    ];
    for case in cases {
        let mut form = vec![("grant_type", EXCHANGE)];
        form.extend(case.iter().copied());
        let response = app.token(&service, &form).await;
        assert_eq!(error_of(response).await, "invalid_request", "{case:?}");
    }
    // A body over the server's limit is refused before it is parsed.
    let too_big = "A".repeat(80 * 1024);
    let response = exchange(&app, &service, &too_big, &[]).await;
    assert_eq!(response.status(), 413);
}

#[tokio::test]
async fn fifty_parallel_exchanges_of_one_token_all_succeed() {
    let app = spawn_app().await;
    let service = register_exchanger(&app, "Service A", policy(&[SERVICE_B], &[], false)).await;
    let user = app.get_tokens().await;
    let subject = user["access_token"].as_str().unwrap();
    let actor = own_token(&app, &service, None).await;
    let mut set = tokio::task::JoinSet::new();
    for _ in 0..50 {
        let request = app
            .http
            .post(app.url("/o/token/"))
            .basic_auth(&service.id, service.secret.as_ref())
            .form(&[
                ("grant_type", EXCHANGE),
                ("subject_token", subject),
                ("subject_token_type", ACCESS_TOKEN),
                ("actor_token", &actor),
                ("actor_token_type", ACCESS_TOKEN),
            ]);
        set.spawn(async move {
            let response = request.send().await.unwrap();
            (response.status(), response.json::<Value>().await.unwrap())
        });
    }
    let mut jtis = std::collections::HashSet::new();
    for (status, body) in set.join_all().await {
        assert_eq!(status, 200, "{body}");
        let claims = jwt_parts(body["access_token"].as_str().unwrap()).1;
        assert_eq!(claims["aud"], SERVICE_B);
        assert_eq!(claims["act"]["sub"], service.id.as_str());
        jtis.insert(claims["jti"].as_str().unwrap().to_string());
    }
    assert_eq!(jtis.len(), 50, "every exchange mints its own token");
    // The server is still well: the subject token and a new exchange both work.
    assert_eq!(app.introspect(subject).await["active"], true);
    assert_eq!(exchange(&app, &service, subject, &[]).await.status(), 200);
}

async fn spawn_registering(allow_token_exchange: bool) -> TestApp {
    let dirs = tempfile::tempdir().unwrap();
    let config = tessera::Config {
        registration: tessera::config::RegistrationPolicy {
            mode: tessera::config::RegistrationMode::Open,
            resources: vec![RESOURCE.into(), SERVICE_B.into()],
            allow_token_exchange,
            ..tessera::config::RegistrationPolicy::default()
        },
        ..test_config(&dirs)
    };
    spawn_app_with(config, dirs).await
}

fn exchanger_registration() -> Value {
    json!({
        "client_name": "Exchanging API",
        "grant_types": [EXCHANGE],
        "token_endpoint_auth_method": "client_secret_basic",
        "scope": "read",
        "token_exchange_audiences": [SERVICE_B],
        "token_exchange_subject_audiences": [RESOURCE]
    })
}

#[tokio::test]
async fn dynamic_registration_of_an_exchanger_follows_registration_allow_token_exchange() {
    let closed = spawn_registering(false).await;
    let refused = closed
        .http
        .post(closed.url("/o/register/"))
        .json(&exchanger_registration())
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 400);
    let body: Value = refused.json().await.unwrap();
    assert_eq!(body["error"], "invalid_client_metadata", "{body}");

    let open = spawn_registering(true).await;
    let registered = open
        .http
        .post(open.url("/o/register/"))
        .json(&exchanger_registration())
        .send()
        .await
        .unwrap();
    assert_eq!(registered.status(), 201);
    let registered: Value = registered.json().await.unwrap();
    assert_eq!(registered["grant_types"], json!([EXCHANGE]));
    let client = TestClient {
        id: registered["client_id"].as_str().unwrap().into(),
        secret: Some(registered["client_secret"].as_str().unwrap().into()),
    };
    let for_the_api = own_token(&open, &open.client, Some(RESOURCE)).await;
    let token = exchanged(&open, &client, &for_the_api, &[]).await;
    assert_eq!(jwt_parts(&token).1["aud"], SERVICE_B);
    // Only tokens for the registration's subject audiences: never the server's own.
    let for_the_server = own_token(&open, &open.client, None).await;
    assert_eq!(
        error_of(exchange(&open, &client, &for_the_server, &[]).await).await,
        "invalid_request"
    );
}

#[tokio::test]
async fn an_exchanger_made_with_the_cli_flags_exchanges_tokens() {
    let dir = tempfile::tempdir().unwrap();
    let tessera = |args: &[&str]| -> Value {
        let output = std::process::Command::new(env!("CARGO_BIN_EXE_tessera"))
            .args(args)
            .arg("--json")
            .env("TESSERA_DATA_DIR", dir.path().join("data"))
            .env("TESSERA_KEYS_DIR", dir.path().join("keys"))
            .env_remove("RUST_LOG")
            .output()
            .unwrap();
        assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
        serde_json::from_slice(&output.stdout).unwrap()
    };
    let caller = tessera(&[
        "app",
        "create",
        "--name",
        "Caller",
        "--client-type",
        "confidential",
        "--grant-type",
        "client-credentials",
        "--scope",
        "read",
        "--resource",
        RESOURCE,
    ]);
    let api = tessera(&[
        "app",
        "create",
        "--name",
        "API",
        "--client-type",
        "confidential",
        "--grant-type",
        "token-exchange",
        "--grant-type",
        "client-credentials",
        "--scope",
        "read",
        "--token-exchange-audience",
        SERVICE_B,
        "--token-exchange-subject-audience",
        RESOURCE,
        "--token-exchange-require-actor",
    ]);
    assert_eq!(api["token_exchange_audiences"], json!([SERVICE_B]));
    assert_eq!(api["token_exchange_require_actor"], true);
    let client = |v: &Value| TestClient {
        id: v["client_id"].as_str().unwrap().into(),
        secret: Some(v["client_secret"].as_str().unwrap().into()),
    };
    let (caller, api) = (client(&caller), client(&api));

    let server = ServerProcess::start(dir.path(), &[], &[]);
    let remote = Remote::new(server.base.clone(), server.base.clone(), caller.clone(), caller.clone());
    let token = |client: &TestClient, form: Vec<(&'static str, String)>| {
        let request = remote
            .http
            .post(remote.url("/o/token/"))
            .basic_auth(&client.id, client.secret.as_ref())
            .form(&form);
        async move { request.send().await.unwrap() }
    };
    let subject: Value = token(
        &caller,
        vec![
            ("grant_type", "client_credentials".into()),
            ("resource", RESOURCE.into()),
        ],
    )
    .await
    .json()
    .await
    .unwrap();
    let subject = subject["access_token"].as_str().unwrap().to_string();
    let actor: Value = token(&api, vec![("grant_type", "client_credentials".into())])
        .await
        .json()
        .await
        .unwrap();
    let actor = actor["access_token"].as_str().unwrap().to_string();
    let base = vec![
        ("grant_type", EXCHANGE.to_string()),
        ("subject_token", subject),
        ("subject_token_type", ACCESS_TOKEN.to_string()),
    ];
    // --token-exchange-require-actor: no actor, no token.
    assert_eq!(error_of(token(&api, base.clone()).await).await, "invalid_request");
    let mut with_actor = base.clone();
    with_actor.extend([("actor_token", actor), ("actor_token_type", ACCESS_TOKEN.to_string())]);
    let response = token(&api, with_actor).await;
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.unwrap();
    let claims = jwt_parts(body["access_token"].as_str().unwrap()).1;
    assert_eq!(claims["aud"], SERVICE_B);
    assert_eq!(claims["sub"], caller.id.as_str());
    assert_eq!(claims["act"]["sub"], api.id.as_str());
    server.terminate();
}

#[tokio::test]
async fn authlib_exchanges_a_token_found_through_the_metadata() {
    let app = spawn_app().await;
    let service = register_exchanger(&app, "Service A", policy(&[SERVICE_B], &[], false)).await;
    let user = app.get_tokens().await;
    let subject = user["access_token"].as_str().unwrap();
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/interop/authlib_token_exchange.py");
    let output = tokio::process::Command::new("python3")
        .args([
            script,
            &app.base,
            &service.id,
            service.secret.as_deref().unwrap(),
            subject,
            SERVICE_B,
        ])
        .output()
        .await
        .expect("python3 runs");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "Authlib's exchange failed: {stderr}");
    let token: Value = serde_json::from_slice(&output.stdout).expect("token JSON");
    assert_eq!(token["issued_token_type"], ACCESS_TOKEN);
    assert_eq!(token["token_type"], "Bearer");
    assert_eq!(token["scope"], "read");
    let access = token["access_token"].as_str().unwrap();
    let claims = app.verify_with_jwks(access).await.expect("it verifies");
    assert_eq!(claims["aud"], SERVICE_B);
    assert_eq!(claims["sub"], jwt_parts(subject).1["sub"]);
}

// The third adversarial review (issue 26, `SECURITY.md`), each finding as the attack that
// found it; each test failed on the code the review ran against.

/// Finding 4: a DPoP-bound subject token was exchanged without a proof of its key, and the
/// new token was a bearer token: an exchange client with the server's default subject audience
/// turned any user's stolen bound token into one that UserInfo accepted. Now a bound subject
/// token is exchanged only with a proof of its key, and the new token is bound to that key.
#[tokio::test]
async fn token_exchange_does_not_turn_a_stolen_bound_token_into_a_bearer_token() {
    use tessera::oauth::audit::Caller;
    use tessera::oauth::client::NewClient;
    use tessera::store::{ClientPolicy, ClientType, GrantType, TokenExchangePolicy};
    let app = spawn_app().await;
    let mut jose = crate::dpop::Jose::with_keys(&[("mine", "ES256"), ("thief", "ES256")]).await;
    let (_, tokens) = crate::dpop::bound_tokens(&app, &mut jose).await;
    let stolen = tokens["access_token"].as_str().unwrap();
    // The operator's exchanger: the default subject audience (the server itself), and the
    // server as a target too.
    let (exchanger, secret) = app
        .provider
        .register_client(
            &Caller::system(),
            NewClient {
                scope: "openid read".into(),
                policy: ClientPolicy {
                    token_exchange: TokenExchangePolicy {
                        audiences: vec![app.issuer.clone()],
                        subject_audiences: vec![],
                        require_actor: false,
                    },
                    ..ClientPolicy::default()
                },
                ..client_settings("Exchanger", ClientType::Confidential, vec![GrantType::TokenExchange])
            },
        )
        .await
        .unwrap();
    let exchanger = TestClient {
        id: exchanger.client_id,
        secret,
    };
    let form = [
        ("grant_type", "urn:ietf:params:oauth:grant-type:token-exchange"),
        ("subject_token", stolen),
        ("subject_token_type", "urn:ietf:params:oauth:token-type:access_token"),
    ];
    let token_url = format!("{}/o/token/", app.issuer);
    for proofs in [vec![], vec![jose.proof("thief", "POST", &token_url, json!({})).await]] {
        let proofs: Vec<&str> = proofs.iter().map(String::as_str).collect();
        let response = crate::dpop::token_with_proofs(&app, &exchanger, &form, &proofs).await;
        let status = response.status();
        let body: Value = response.json().await.unwrap();
        assert_eq!(
            (status.as_u16(), body["error"].as_str()),
            (400, Some("invalid_dpop_proof")),
            "{body}"
        );
    }
    // With the key, the exchanged token stays bound to it.
    let proof = jose.proof("mine", "POST", &token_url, json!({})).await;
    let response = crate::dpop::token_with_proofs(&app, &exchanger, &form, &[&proof]).await;
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["token_type"], "DPoP", "{body}");
    let exchanged = body["access_token"].as_str().unwrap();
    assert_eq!(
        app.verify_with_jwks(exchanged).await.unwrap()["cnf"]["jkt"],
        jose.jkt("mine").as_str()
    );
    let userinfo = crate::dpop::get_with(&app, &app.url("/o/userinfo/"), "Bearer", exchanged, &[]).await;
    assert_eq!(userinfo.status(), 401, "a bound token is no bearer token");
}

/// A client that requires two-factor logins (`require_mfa`) takes no one-factor login in
/// another form: a password-only user's token is refused, and the acr the subject token said
/// is what the exchanged token says (never more).
#[tokio::test]
async fn a_client_that_requires_two_factors_exchanges_no_one_factor_login() {
    let app = spawn_app().await;
    let (client, secret) = app
        .provider
        .register_client(
            &Caller::system(),
            NewClient {
                scope: "read write".into(),
                policy: ClientPolicy {
                    token_exchange: policy(&[SERVICE_B], &[], false),
                    require_mfa: true,
                    ..ClientPolicy::default()
                },
                ..client_settings(
                    "Strict service",
                    ClientType::Confidential,
                    vec![GrantType::TokenExchange, GrantType::ClientCredentials],
                )
            },
        )
        .await
        .unwrap();
    let strict = TestClient {
        id: client.client_id,
        secret,
    };
    let relaxed = register_exchanger(&app, "Service A", policy(&[SERVICE_B], &[], false)).await;
    let tokens = app.get_tokens().await;
    let subject = tokens["access_token"].as_str().unwrap();
    assert_eq!(jwt_parts(subject).1["acr"], "urn:tessera:acr:single-factor");
    let refused = exchange(&app, &strict, subject, &[("audience", SERVICE_B)]).await;
    assert_eq!(error_of(refused).await, "invalid_grant");
    let token = exchanged(&app, &relaxed, subject, &[("audience", SERVICE_B)]).await;
    let claims = jwt_parts(&token).1;
    assert_eq!(claims["acr"], "urn:tessera:acr:single-factor");
    assert_eq!(claims["amr"], serde_json::json!(["pwd"]));
}
