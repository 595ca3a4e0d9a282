//! DPoP (RFC 9449): proofs built by jose (tests/interop/dpop_proofs.mjs) at the token endpoint
//! for every grant, every kind of bad proof refused, one proof used once (also in parallel),
//! server nonces, refresh tokens of public clients bound to the key, tokens bound to the key at
//! UserInfo, introspection and the example resource server.

use reqwest::{Response, StatusCode};
use serde_json::{json, Value};
use tessera::oauth::audit::Caller;
use tessera::oauth::client::NewClient;
use tessera::store::{ClientPolicy, ClientType, GrantType};

use crate::helpers::*;

/// Proofs from jose: keys by name, kept between runs so that later proofs use the same keys.
pub struct Jose {
    keys: Value,
}

impl Jose {
    /// Generates keys named `names` with these algorithms.
    pub async fn with_keys(keys: &[(&str, &str)]) -> Jose {
        let mut jose = Jose { keys: json!({}) };
        for (name, alg) in keys {
            jose.keys[*name] = json!({ "alg": alg });
        }
        jose.mint(vec![]).await;
        jose
    }

    /// Runs the script for `proofs` (see dpop_proofs.mjs for their fields).
    async fn mint(&mut self, proofs: Vec<Value>) -> Vec<String> {
        use tokio::io::AsyncWriteExt;
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/interop");
        assert!(
            std::path::Path::new(dir).join("node_modules/jose").is_dir(),
            "jose is not installed: run `npm ci --prefix tests/interop` (tests/run.sh does)"
        );
        let keys: serde_json::Map<String, Value> = self
            .keys
            .as_object()
            .unwrap()
            .iter()
            .map(|(name, key)| (name.clone(), json!({"alg": key["alg"], "private": key["private"]})))
            .map(|(name, mut key)| {
                if key["private"].is_null() {
                    key.as_object_mut().unwrap().remove("private");
                }
                (name, key)
            })
            .collect();
        let input = json!({ "keys": keys, "proofs": proofs }).to_string();
        let mut child = tokio::process::Command::new("node")
            .arg("dpop_proofs.mjs")
            .current_dir(dir)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("node runs");
        child.stdin.take().unwrap().write_all(input.as_bytes()).await.unwrap();
        let output = child.wait_with_output().await.unwrap();
        assert!(
            output.status.success(),
            "dpop_proofs.mjs failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        let report: Value = serde_json::from_slice(&output.stdout).unwrap();
        self.keys = report["keys"].clone();
        report["proofs"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p.as_str().unwrap().to_string())
            .collect()
    }

    /// Proofs for these specs (`key`, `htm`, `htu` and any extra fields), minted in one run.
    pub async fn proofs(&mut self, specs: Vec<Value>) -> Vec<String> {
        self.mint(specs).await
    }

    /// One proof by key `key` for `method` on `url`, with `extra` fields.
    pub async fn proof(&mut self, key: &str, method: &str, url: &str, extra: Value) -> String {
        let mut spec = json!({"key": key, "htm": method, "htu": url});
        spec.as_object_mut()
            .unwrap()
            .extend(extra.as_object().cloned().unwrap_or_default());
        self.mint(vec![spec]).await.remove(0)
    }

    /// jose's RFC 7638 thumbprint of key `name`.
    pub fn jkt(&self, name: &str) -> String {
        self.keys[name]["jkt"].as_str().unwrap().to_string()
    }
}

fn token_url(app: &TestApp) -> String {
    format!("{}/o/token/", app.issuer)
}

fn userinfo_url(app: &TestApp) -> String {
    format!("{}/o/userinfo/", app.issuer)
}

/// A token request by `client` with these DPoP headers.
pub async fn token_with_proofs(app: &TestApp, client: &TestClient, form: &[(&str, &str)], proofs: &[&str]) -> Response {
    let mut request = app.http.post(app.url("/o/token/"));
    let mut form: Vec<(&str, &str)> = form.to_vec();
    match &client.secret {
        Some(secret) => request = request.basic_auth(&client.id, Some(secret)),
        None => form.push(("client_id", &client.id)),
    }
    for proof in proofs {
        request = request.header("DPoP", *proof);
    }
    request.form(&form).send().await.unwrap()
}

async fn client_credentials_with(app: &TestApp, proofs: &[&str]) -> Response {
    let form = [("grant_type", "client_credentials"), ("scope", "read")];
    token_with_proofs(app, &app.client, &form, proofs).await
}

/// The status and `error` of a refused request.
async fn refusal(response: Response) -> (StatusCode, String) {
    let status = response.status();
    let body: Value = response.json().await.unwrap_or_default();
    (status, body["error"].as_str().unwrap_or_default().to_string())
}

/// Registers a client of `client_type` for the code and refresh grants with the OpenID Connect
/// scope, at [`REDIRECT_URI`], with `policy`.
pub async fn register(app: &TestApp, client_type: ClientType, policy: ClientPolicy) -> TestClient {
    let grants = vec![
        GrantType::AuthorizationCode,
        GrantType::RefreshToken,
        GrantType::ClientCredentials,
    ];
    let grants = match client_type {
        ClientType::Public => grants[..2].to_vec(),
        ClientType::Confidential => grants,
    };
    let (client, secret) = app
        .provider
        .register_client(
            &Caller::system(),
            NewClient {
                redirect_uris: vec![REDIRECT_URI.into()],
                scope: "openid read".into(),
                policy,
                ..client_settings("DPoP app", client_type, grants)
            },
        )
        .await
        .unwrap();
    TestClient {
        id: client.client_id,
        secret,
    }
}

/// The code flow for `client` (PKCE, scope `openid read`), exchanged with these proofs.
pub async fn code_flow(app: &TestApp, client: &TestClient, proofs: &[&str]) -> Response {
    let pkce = Pkce::new();
    let params: Vec<(String, String)> = [
        ("response_type", "code"),
        ("client_id", client.id.as_str()),
        ("redirect_uri", REDIRECT_URI),
        ("scope", "openid read"),
        ("state", "s"),
        ("nonce", "n"),
        ("code_challenge", pkce.challenge.as_str()),
        ("code_challenge_method", "S256"),
    ]
    .iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    let redirect = app.authorize_and_allow(&params).await;
    let code = param(&redirect, "code").expect("a code");
    let form = [
        ("grant_type", "authorization_code"),
        ("code", code.as_str()),
        ("redirect_uri", REDIRECT_URI),
        ("code_verifier", pkce.verifier.as_str()),
    ];
    token_with_proofs(app, client, &form, proofs).await
}

pub async fn refresh_with(app: &TestApp, client: &TestClient, refresh_token: &str, proofs: &[&str]) -> Response {
    let form = [("grant_type", "refresh_token"), ("refresh_token", refresh_token)];
    token_with_proofs(app, client, &form, proofs).await
}

/// A GET of `url` with `Authorization: <scheme> <token>` and these DPoP headers.
pub async fn get_with(app: &TestApp, url: &str, scheme: &str, token: &str, proofs: &[&str]) -> Response {
    let mut request = app.http.get(url).header("Authorization", format!("{scheme} {token}"));
    for proof in proofs {
        request = request.header("DPoP", *proof);
    }
    request.send().await.unwrap()
}

fn challenge(response: &Response) -> String {
    response
        .headers()
        .get("www-authenticate")
        .map(|v| v.to_str().unwrap().to_string())
        .unwrap_or_default()
}

/// RFC 9449 §5, §6.1: a token request with a good proof gets a token of type DPoP whose
/// `cnf.jkt` is the proof key's RFC 7638 thumbprint (as jose computes it), and introspection
/// (§6.2) reports the binding.
#[tokio::test]
async fn a_proof_binds_the_access_token_to_its_key_and_introspection_shows_cnf() {
    let app = spawn_app().await;
    let metadata = app.get_json("/.well-known/oauth-authorization-server").await;
    assert_eq!(
        metadata["dpop_signing_alg_values_supported"],
        json!(["ES256", "EdDSA", "RS256", "PS256"])
    );
    let oidc = app.get_json("/.well-known/openid-configuration").await;
    assert_eq!(
        oidc["dpop_signing_alg_values_supported"],
        metadata["dpop_signing_alg_values_supported"]
    );
    // Ed25519 under both its JWS names: EdDSA (RFC 8037) and Ed25519 (RFC 9864).
    let keys = [
        ("es", "ES256"),
        ("ed", "EdDSA"),
        ("ed2", "Ed25519"),
        ("rs", "RS256"),
        ("ps", "PS256"),
    ];
    let mut jose = Jose::with_keys(&keys).await;
    for (key, _) in keys {
        let proof = jose.proof(key, "POST", &token_url(&app), json!({})).await;
        let response = client_credentials_with(&app, &[&proof]).await;
        assert_eq!(response.status(), 200, "{key}");
        let body: Value = response.json().await.unwrap();
        assert_eq!(body["token_type"], "DPoP", "{key}");
        let access = body["access_token"].as_str().unwrap();
        let claims = app.verify_with_jwks(access).await.unwrap();
        assert_eq!(claims["cnf"]["jkt"], jose.jkt(key).as_str(), "{key}");
        let introspected = app.introspect(access).await;
        assert_eq!(introspected["active"], true);
        assert_eq!(introspected["token_type"], "DPoP");
        assert_eq!(introspected["cnf"]["jkt"], jose.jkt(key).as_str());
    }
    // Without a proof: a bearer token, as before.
    let body: Value = app.client_credentials("read").await.json().await.unwrap();
    assert_eq!(body["token_type"], "Bearer");
    let access = body["access_token"].as_str().unwrap();
    assert!(app.verify_with_jwks(access).await.unwrap().get("cnf").is_none());
    let introspected = app.introspect(access).await;
    assert_eq!(introspected["token_type"], "Bearer");
    assert!(introspected.get("cnf").is_none());
}

/// RFC 9449 §4.3: each check of a proof, failed by a proof jose built, is `invalid_dpop_proof`
/// (400 at the token endpoint, §5) and no token.
#[tokio::test]
async fn every_kind_of_bad_proof_is_refused_with_invalid_dpop_proof() {
    let app = spawn_app().await;
    let mut jose = Jose::with_keys(&[("es", "ES256"), ("ed", "EdDSA")]).await;
    let url = token_url(&app);
    let now = tessera::now();
    let cases = [
        (
            "wrong htu",
            json!({"key": "es", "htm": "POST", "htu": format!("{}/o/introspect/", app.issuer)}),
        ),
        (
            "wrong htu host",
            json!({"key": "es", "htm": "POST", "htu": "https://other.example/o/token/"}),
        ),
        ("wrong htm", json!({"key": "es", "htm": "GET", "htu": url})),
        (
            "old iat",
            json!({"key": "es", "htm": "POST", "htu": url, "iat": now - 120}),
        ),
        (
            "future iat",
            json!({"key": "es", "htm": "POST", "htu": url, "iat": now + 120}),
        ),
        (
            "private key in jwk",
            json!({"key": "es", "htm": "POST", "htu": url, "private_jwk": true}),
        ),
        (
            "private Ed25519 key in jwk",
            json!({"key": "ed", "htm": "POST", "htu": url, "private_jwk": true}),
        ),
        (
            "alg none",
            json!({"key": "es", "htm": "POST", "htu": url, "alg": "none"}),
        ),
        ("HS256", json!({"key": "es", "htm": "POST", "htu": url, "alg": "HS256"})),
        ("typ JWT", json!({"key": "es", "htm": "POST", "htu": url, "typ": "JWT"})),
    ];
    let proofs = jose.mint(cases.iter().map(|(_, spec)| spec.clone()).collect()).await;
    for ((case, _), proof) in cases.iter().zip(&proofs) {
        let response = client_credentials_with(&app, &[proof]).await;
        assert_eq!(
            refusal(response).await,
            (StatusCode::BAD_REQUEST, "invalid_dpop_proof".into()),
            "{case}"
        );
    }
    // Not a JWS at all, and a signature that does not verify: refused, never a 500.
    let good = jose.proof("es", "POST", &url, json!({})).await;
    let (input, _) = good.rsplit_once('.').unwrap();
    let forged = format!("{input}.{}", "A".repeat(86));
    for bad in ["garbage", "a.b.c", "", forged.as_str()] {
        let response = client_credentials_with(&app, &[bad]).await;
        assert_eq!(
            refusal(response).await,
            (StatusCode::BAD_REQUEST, "invalid_dpop_proof".into()),
            "{bad:?}"
        );
    }
    // RFC 9449 §4.3 item 1: one DPoP header; two good ones are refused.
    let two = jose
        .mint(vec![json!({"key": "es", "htm": "POST", "htu": url}); 2])
        .await;
    let response = client_credentials_with(&app, &[&two[0], &two[1]]).await;
    assert_eq!(
        refusal(response).await,
        (StatusCode::BAD_REQUEST, "invalid_dpop_proof".into())
    );
    // The same proofs are good on their own: the refusals above were for what was wrong.
    assert_eq!(client_credentials_with(&app, &[&two[0]]).await.status(), 200);
    assert_eq!(client_credentials_with(&app, &[&good]).await.status(), 200);
    // RFC 9449 §11.1: a proof is used once.
    let replay = client_credentials_with(&app, &[&good]).await;
    assert_eq!(
        refusal(replay).await,
        (StatusCode::BAD_REQUEST, "invalid_dpop_proof".into())
    );
}

/// RFC 9449 §11.1: one proof sent fifty times at once gets exactly one token, whichever
/// request wins (the jti is recorded atomically in the store, shared by every node).
#[tokio::test]
async fn one_proof_sent_fifty_times_at_once_gets_exactly_one_token() {
    let app = spawn_app().await;
    let mut jose = Jose::with_keys(&[("ed", "EdDSA")]).await;
    let proof = jose.proof("ed", "POST", &token_url(&app), json!({})).await;
    let handles: Vec<_> = (0..50)
        .map(|_| {
            let request = app
                .http
                .post(app.url("/o/token/"))
                .basic_auth(&app.client.id, app.client.secret.as_ref())
                .header("DPoP", &proof)
                .form(&[("grant_type", "client_credentials"), ("scope", "read")]);
            tokio::spawn(async move { request.send().await.unwrap().status().as_u16() })
        })
        .collect();
    let mut statuses = Vec::new();
    for handle in handles {
        statuses.push(handle.await.unwrap());
    }
    assert_eq!(statuses.iter().filter(|s| **s == 200).count(), 1, "{statuses:?}");
    assert_eq!(statuses.iter().filter(|s| **s == 400).count(), 49, "{statuses:?}");
}

/// A token request by `client` whose proof (by jose's `es` key) carries no nonce is answered
/// `use_dpop_nonce` with a `DPoP-Nonce` header, and one with a made-up nonce the same; the
/// server's nonce, for the retry.
async fn refused_without_the_servers_nonce(
    app: &TestApp,
    client: &TestClient,
    form: &[(&str, &str)],
    jose: &mut Jose,
) -> String {
    let url = token_url(app);
    let proof = jose.proof("es", "POST", &url, json!({})).await;
    let response = token_with_proofs(app, client, form, &[&proof]).await;
    let nonce = response
        .headers()
        .get("dpop-nonce")
        .expect("a DPoP-Nonce header")
        .to_str()
        .unwrap()
        .to_string();
    assert_eq!(
        refusal(response).await,
        (StatusCode::BAD_REQUEST, "use_dpop_nonce".into())
    );
    let forged = jose
        .proof("es", "POST", &url, json!({"nonce": "AAAAAAAAAAAAAAAA"}))
        .await;
    let response = token_with_proofs(app, client, form, &[&forged]).await;
    assert_eq!(
        refusal(response).await,
        (StatusCode::BAD_REQUEST, "use_dpop_nonce".into())
    );
    nonce
}

/// RFC 9449 §8: with `dpop_nonce` on, a proof without the server's nonce is answered
/// `use_dpop_nonce` with a `DPoP-Nonce` header; a proof with that nonce succeeds, and a made-up
/// nonce is refused.
#[tokio::test]
async fn with_nonces_on_a_proof_needs_the_servers_nonce() {
    let dirs = tempfile::tempdir().unwrap();
    let config = tessera::Config {
        dpop_nonce: true,
        ..test_config(&dirs)
    };
    let app = spawn_app_with(config, dirs).await;
    let mut jose = Jose::with_keys(&[("es", "ES256")]).await;
    let url = token_url(&app);
    let form = [("grant_type", "client_credentials"), ("scope", "read")];
    let nonce = refused_without_the_servers_nonce(&app, &app.client, &form, &mut jose).await;
    let with_nonce = jose.proof("es", "POST", &url, json!({ "nonce": nonce })).await;
    let response = client_credentials_with(&app, &[&with_nonce]).await;
    assert_eq!(response.status(), 200);
    // RFC 9449 §8.2: the answer carries the nonce for the next proof.
    assert!(response.headers().contains_key("dpop-nonce"));
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["token_type"], "DPoP");
    let plain = app.client_credentials("read").await;
    assert!(
        !plain.headers().contains_key("dpop-nonce"),
        "not for a request without a proof"
    );

    // At UserInfo (RFC 9449 §9): 401 with the nonce and a DPoP challenge saying why.
    let access = body["access_token"].as_str().unwrap();
    let userinfo = userinfo_url(&app);
    let proof = jose
        .proof("es", "GET", &userinfo, json!({ "access_token": access }))
        .await;
    let response = get_with(&app, &userinfo, "DPoP", access, &[&proof]).await;
    assert!(response.headers().contains_key("dpop-nonce"));
    assert!(
        challenge(&response).contains("error=\"use_dpop_nonce\""),
        "{}",
        challenge(&response)
    );
    assert_eq!(
        refusal(response).await,
        (StatusCode::UNAUTHORIZED, "use_dpop_nonce".into())
    );
}

/// RFC 9449 §8 for one client: with the server's nonces off, a client registered with
/// `require_dpop_nonce` gets `use_dpop_nonce` and a `DPoP-Nonce` header for a proof without the
/// nonce (or with a made-up one) and its token with the nonce, while another client's proof
/// needs none.
#[tokio::test]
async fn a_client_that_requires_dpop_nonces_needs_the_servers_nonce_and_others_do_not() {
    let app = spawn_app().await;
    let policy = ClientPolicy {
        require_dpop_nonce: true,
        ..Default::default()
    };
    let strict = register(&app, ClientType::Confidential, policy).await;
    let form = [("grant_type", "client_credentials"), ("scope", "read")];
    let mut jose = Jose::with_keys(&[("es", "ES256")]).await;
    let url = token_url(&app);
    let nonce = refused_without_the_servers_nonce(&app, &strict, &form, &mut jose).await;
    let with_nonce = jose.proof("es", "POST", &url, json!({ "nonce": nonce })).await;
    let response = token_with_proofs(&app, &strict, &form, &[&with_nonce]).await;
    assert_eq!(response.status(), 200);
    // RFC 9449 §8.2: the answer carries the nonce for its next proof.
    assert!(response.headers().contains_key("dpop-nonce"));
    assert_eq!(response.json::<Value>().await.unwrap()["token_type"], "DPoP");

    let other = jose.proof("es", "POST", &url, json!({})).await;
    let response = client_credentials_with(&app, &[&other]).await;
    assert_eq!(response.status(), 200, "another client's proof needs no nonce");
    assert!(!response.headers().contains_key("dpop-nonce"), "nor gets one");
    assert_eq!(response.json::<Value>().await.unwrap()["token_type"], "DPoP");
}

/// RFC 9449 §5: a public client's refresh token is bound to the key of the proof it was issued
/// with: refreshing with another key, or without a proof, fails (before the token is spent),
/// and the binding passes to each new refresh token.
#[tokio::test]
async fn a_public_clients_refresh_token_is_bound_to_the_proofs_key() {
    let app = spawn_app().await;
    let spa = register(&app, ClientType::Public, ClientPolicy::default()).await;
    let mut jose = Jose::with_keys(&[("mine", "ES256"), ("thief", "ES256")]).await;
    let url = token_url(&app);
    let proof = jose.proof("mine", "POST", &url, json!({})).await;
    let response = code_flow(&app, &spa, &[&proof]).await;
    assert_eq!(response.status(), 200);
    let tokens: Value = response.json().await.unwrap();
    assert_eq!(tokens["token_type"], "DPoP");
    let refresh_token = tokens["refresh_token"].as_str().unwrap();
    let introspected = app.introspect(refresh_token).await;
    assert_eq!(introspected["cnf"]["jkt"], jose.jkt("mine").as_str());

    let stolen = jose.proof("thief", "POST", &url, json!({})).await;
    let response = refresh_with(&app, &spa, refresh_token, &[&stolen]).await;
    assert_eq!(
        refusal(response).await,
        (StatusCode::BAD_REQUEST, "invalid_grant".into())
    );
    let response = refresh_with(&app, &spa, refresh_token, &[]).await;
    assert_eq!(
        refusal(response).await,
        (StatusCode::BAD_REQUEST, "invalid_dpop_proof".into())
    );

    // The holder of the key still can: the failed attempts did not spend the token.
    let proof = jose.proof("mine", "POST", &url, json!({})).await;
    let response = refresh_with(&app, &spa, refresh_token, &[&proof]).await;
    assert_eq!(response.status(), 200);
    let refreshed: Value = response.json().await.unwrap();
    assert_eq!(refreshed["token_type"], "DPoP");
    let access = refreshed["access_token"].as_str().unwrap();
    assert_eq!(
        app.verify_with_jwks(access).await.unwrap()["cnf"]["jkt"],
        jose.jkt("mine").as_str()
    );
    let next = refreshed["refresh_token"].as_str().unwrap();
    let stolen = jose.proof("thief", "POST", &url, json!({})).await;
    let response = refresh_with(&app, &spa, next, &[&stolen]).await;
    assert_eq!(
        refusal(response).await,
        (StatusCode::BAD_REQUEST, "invalid_grant".into())
    );
}

/// RFC 9449 §5: a confidential client's refresh token is not bound (its client authentication
/// protects it), but each new access token is bound to the key of the request's proof.
#[tokio::test]
async fn a_confidential_clients_refresh_token_is_not_bound_but_its_access_tokens_are() {
    let app = spawn_app().await;
    let web = register(&app, ClientType::Confidential, ClientPolicy::default()).await;
    let mut jose = Jose::with_keys(&[("first", "EdDSA"), ("second", "ES256")]).await;
    let url = token_url(&app);
    let proof = jose.proof("first", "POST", &url, json!({})).await;
    let tokens: Value = code_flow(&app, &web, &[&proof]).await.json().await.unwrap();
    assert_eq!(tokens["token_type"], "DPoP");
    let refresh_token = tokens["refresh_token"].as_str().unwrap();
    assert!(app.introspect(refresh_token).await.get("cnf").is_none());
    let proof = jose.proof("second", "POST", &url, json!({})).await;
    let response = refresh_with(&app, &web, refresh_token, &[&proof]).await;
    assert_eq!(response.status(), 200);
    let refreshed: Value = response.json().await.unwrap();
    let access = refreshed["access_token"].as_str().unwrap();
    assert_eq!(
        app.verify_with_jwks(access).await.unwrap()["cnf"]["jkt"],
        jose.jkt("second").as_str()
    );
    // Without a proof, a bearer access token.
    let next = refreshed["refresh_token"].as_str().unwrap();
    let bearer: Value = refresh_with(&app, &web, next, &[]).await.json().await.unwrap();
    assert_eq!(bearer["token_type"], "Bearer");
}

/// RFC 9449 §5.2: a client registered with `dpop_bound_access_tokens` gets no token without a
/// proof, whatever the grant.
#[tokio::test]
async fn a_client_that_must_use_dpop_gets_no_token_without_a_proof() {
    let app = spawn_app().await;
    let policy = ClientPolicy {
        dpop_bound_access_tokens: true,
        ..Default::default()
    };
    let bound = register(&app, ClientType::Confidential, policy).await;
    let form = [("grant_type", "client_credentials"), ("scope", "read")];
    let response = token_with_proofs(&app, &bound, &form, &[]).await;
    assert_eq!(
        refusal(response).await,
        (StatusCode::BAD_REQUEST, "invalid_dpop_proof".into())
    );
    let response = code_flow(&app, &bound, &[]).await;
    assert_eq!(
        refusal(response).await,
        (StatusCode::BAD_REQUEST, "invalid_dpop_proof".into())
    );
    let mut jose = Jose::with_keys(&[("es", "ES256")]).await;
    let proof = jose.proof("es", "POST", &token_url(&app), json!({})).await;
    let response = token_with_proofs(&app, &bound, &form, &[&proof]).await;
    assert_eq!(response.status(), 200);
    assert_eq!(response.json::<Value>().await.unwrap()["token_type"], "DPoP");
}

/// RFC 9449 §7: UserInfo takes a DPoP-bound token with the DPoP scheme and a proof of its key
/// naming the request and the token (`ath`); it refuses the token sent as Bearer, a proof by
/// another key, one without `ath`, a replayed one, and a bearer token sent as DPoP. Its
/// challenges name DPoP and its algorithms (§7.1).
#[tokio::test]
async fn userinfo_takes_a_bound_token_only_with_a_proof_of_its_key() {
    let app = spawn_app().await;
    let spa = register(&app, ClientType::Public, ClientPolicy::default()).await;
    let mut jose = Jose::with_keys(&[("mine", "EdDSA"), ("thief", "EdDSA")]).await;
    let proof = jose.proof("mine", "POST", &token_url(&app), json!({})).await;
    let tokens: Value = code_flow(&app, &spa, &[&proof]).await.json().await.unwrap();
    let access = tokens["access_token"].as_str().unwrap();
    let url = userinfo_url(&app);
    let algs = "DPoP algs=\"ES256 EdDSA RS256 PS256\"";

    let proof = jose.proof("mine", "GET", &url, json!({ "access_token": access })).await;
    let response = get_with(&app, &url, "DPoP", access, &[&proof]).await;
    assert_eq!(response.status(), 200);
    assert!(response.json::<Value>().await.unwrap()["sub"].is_string());

    let replayed = get_with(&app, &url, "DPoP", access, &[&proof]).await;
    let header = challenge(&replayed);
    assert_eq!(
        refusal(replayed).await,
        (StatusCode::UNAUTHORIZED, "invalid_dpop_proof".into())
    );
    assert!(
        header.contains(&format!("{algs}, error=\"invalid_dpop_proof\"")),
        "{header}"
    );

    let as_bearer = get_with(&app, &url, "Bearer", access, &[]).await;
    let header = challenge(&as_bearer);
    assert_eq!(
        refusal(as_bearer).await,
        (StatusCode::UNAUTHORIZED, "invalid_token".into())
    );
    assert!(header.contains(algs), "{header}");

    let cases = [
        (
            "another key",
            json!({"key": "thief", "htm": "GET", "htu": url, "access_token": access}),
        ),
        ("no ath", json!({"key": "mine", "htm": "GET", "htu": url})),
        (
            "wrong ath",
            json!({"key": "mine", "htm": "GET", "htu": url, "access_token": "another token"}),
        ),
        (
            "wrong htm",
            json!({"key": "mine", "htm": "POST", "htu": url, "access_token": access}),
        ),
        (
            "token endpoint's htu",
            json!({"key": "mine", "htm": "GET", "htu": token_url(&app), "access_token": access}),
        ),
    ];
    let proofs = jose.mint(cases.iter().map(|(_, spec)| spec.clone()).collect()).await;
    for ((case, _), proof) in cases.iter().zip(&proofs) {
        let response = get_with(&app, &url, "DPoP", access, &[proof]).await;
        let header = challenge(&response);
        assert_eq!(
            refusal(response).await,
            (StatusCode::UNAUTHORIZED, "invalid_dpop_proof".into()),
            "{case}"
        );
        assert!(header.contains(algs), "{case}: {header}");
    }
    let response = get_with(&app, &url, "DPoP", access, &[]).await;
    assert_eq!(
        refusal(response).await,
        (StatusCode::UNAUTHORIZED, "invalid_dpop_proof".into())
    );

    // A bearer token sent as DPoP, even with a good proof.
    let rp = register(&app, ClientType::Confidential, ClientPolicy::default()).await;
    let bearer: Value = code_flow(&app, &rp, &[]).await.json().await.unwrap();
    let bearer = bearer["access_token"].as_str().unwrap();
    let proof = jose.proof("mine", "GET", &url, json!({ "access_token": bearer })).await;
    let response = get_with(&app, &url, "DPoP", bearer, &[&proof]).await;
    assert_eq!(
        refusal(response).await,
        (StatusCode::UNAUTHORIZED, "invalid_token".into())
    );
    assert_eq!(get_with(&app, &url, "Bearer", bearer, &[]).await.status(), 200);
    // No token: both schemes are offered, without an error.
    let none = app.http.get(&url).send().await.unwrap();
    let header = challenge(&none);
    assert!(
        header.starts_with("Bearer ") && header.contains(algs) && !header.contains("error="),
        "{header}"
    );
}

/// RFC 9449 §7 at a resource server built on `tessera::resource`
/// (crates/tessera-resource/examples/resource_server.rs): a bound token works with a proof of its key, and not with another key, without a proof, as
/// Bearer, or with a replayed proof; bearer tokens still work as Bearer.
#[tokio::test]
async fn the_example_resource_server_takes_a_bound_token_only_with_a_proof_of_its_key() {
    let app = spawn_app().await;
    let (_server, base) = crate::resource_server::start_resource_server(&app).await;
    let view = format!("{base}/api/posts/protected_view/");
    let mut jose = Jose::with_keys(&[("mine", "ES256"), ("thief", "ES256")]).await;
    let proof = jose.proof("mine", "POST", &token_url(&app), json!({})).await;
    let body: Value = client_credentials_with(&app, &[&proof]).await.json().await.unwrap();
    let access = body["access_token"].as_str().unwrap();

    let proof = jose
        .proof("mine", "GET", &view, json!({ "access_token": access }))
        .await;
    let response = get_with(&app, &view, "DPoP", access, &[&proof]).await;
    assert_eq!(response.status(), 200);
    assert_eq!(response.text().await.unwrap(), "Hello, there!!");

    let replayed = get_with(&app, &view, "DPoP", access, &[&proof]).await;
    let header = challenge(&replayed);
    assert_eq!(
        refusal(replayed).await,
        (StatusCode::UNAUTHORIZED, "invalid_dpop_proof".into())
    );
    assert!(
        header.contains("DPoP algs=\"ES256 EdDSA RS256 PS256\", error=\"invalid_dpop_proof\""),
        "{header}"
    );
    let stolen = jose
        .proof("thief", "GET", &view, json!({ "access_token": access }))
        .await;
    let response = get_with(&app, &view, "DPoP", access, &[&stolen]).await;
    assert_eq!(
        refusal(response).await,
        (StatusCode::UNAUTHORIZED, "invalid_dpop_proof".into())
    );
    let response = get_with(&app, &view, "DPoP", access, &[]).await;
    assert_eq!(
        refusal(response).await,
        (StatusCode::UNAUTHORIZED, "invalid_dpop_proof".into())
    );
    let response = get_with(&app, &view, "Bearer", access, &[]).await;
    assert_eq!(
        refusal(response).await,
        (StatusCode::UNAUTHORIZED, "invalid_token".into())
    );
    let wrong_url = jose
        .proof(
            "mine",
            "GET",
            &format!("{base}/api/posts/"),
            json!({ "access_token": access }),
        )
        .await;
    let response = get_with(&app, &view, "DPoP", access, &[&wrong_url]).await;
    assert_eq!(
        refusal(response).await,
        (StatusCode::UNAUTHORIZED, "invalid_dpop_proof".into())
    );

    let bearer: Value = app.client_credentials("read").await.json().await.unwrap();
    let bearer = bearer["access_token"].as_str().unwrap();
    assert_eq!(get_with(&app, &view, "Bearer", bearer, &[]).await.status(), 200);
    let proof = jose
        .proof("mine", "GET", &view, json!({ "access_token": bearer }))
        .await;
    let response = get_with(&app, &view, "DPoP", bearer, &[&proof]).await;
    assert_eq!(
        refusal(response).await,
        (StatusCode::UNAUTHORIZED, "invalid_token".into())
    );
}

/// Runs tests/interop/openid_client_dpop.mjs: openid-client's DPoP handle with a key of `alg`,
/// through the code flow, a refresh, UserInfo, client_credentials and the resource server at
/// `resource_url`.
async fn openid_client(app: &TestApp, rp: &TestClient, alg: &str, resource_url: &str) -> Value {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/interop");
    assert!(
        std::path::Path::new(dir).join("node_modules/openid-client").is_dir(),
        "openid-client is not installed: run `npm ci --prefix tests/interop` (tests/run.sh does)"
    );
    let output = tokio::process::Command::new("node")
        .arg("openid_client_dpop.mjs")
        .args([
            &app.issuer,
            &rp.id,
            rp.secret.as_deref().unwrap(),
            REDIRECT_URI,
            USERNAME,
            PASSWORD,
            alg,
            resource_url,
        ])
        .current_dir(dir)
        .output()
        .await
        .expect("node runs");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "openid-client with {alg} failed: {stderr}");
    serde_json::from_slice(&output.stdout).expect("a JSON report")
}

/// The checks on a run of openid-client: every token it got is a DPoP token bound to its key,
/// UserInfo and the resource server answered it, and every request carried a proof of the
/// algorithm asked for (UserInfo's and the resource's with `ath`).
async fn assert_bound_run(app: &TestApp, alg: &str, report: &Value) {
    let jkt = tessera::oauth::dpop::thumbprint(&report["public_jwk"]).unwrap();
    for step in ["code", "refresh", "client_credentials"] {
        // openid-client lowercases it (RFC 6749 §7.1: case-insensitive).
        let token_type = report[step]["token_type"].as_str().unwrap();
        assert!(token_type.eq_ignore_ascii_case("DPoP"), "{alg} {step}: {report}");
        let access = report[step]["access_token"].as_str().unwrap();
        let claims = app.verify_with_jwks(access).await.unwrap();
        assert_eq!(claims["cnf"]["jkt"], jkt.as_str(), "{alg} {step}");
    }
    assert_eq!(report["userinfo"]["sub"], report["code"]["sub"], "{alg}");
    assert_eq!(report["resource"]["status"], 200, "{alg}: {report}");
    assert_eq!(report["resource"]["body"], "Hello, there!!");
    let proofs = report["proofs"].as_array().unwrap();
    // Token endpoint three times, UserInfo, the resource: at least one proof each.
    assert!(proofs.len() >= 5, "{alg}: {report}");
    let jws_alg = if alg == "EdDSA" {
        ["EdDSA", "Ed25519"].as_slice()
    } else {
        &[alg][..]
    };
    for proof in proofs {
        assert_eq!(proof["header"]["typ"], "dpop+jwt");
        assert!(
            jws_alg.contains(&proof["header"]["alg"].as_str().unwrap()),
            "{alg}: {proof}"
        );
        let url = proof["url"].as_str().unwrap();
        let at_resource = !url.ends_with("/o/token/");
        assert_eq!(proof["claims"]["ath"].is_string(), at_resource, "{proof}");
    }
}

/// RFC 9449 with a certified client library: openid-client v6's DPoP support, with keys of each
/// algorithm Tessera publishes, gets bound tokens from every grant it uses and uses them at
/// UserInfo and at a `tessera::resource` server.
#[tokio::test]
async fn openid_client_uses_dpop_for_the_code_flow_refresh_userinfo_and_client_credentials() {
    let app = spawn_app().await;
    let rp = register(&app, ClientType::Confidential, ClientPolicy::default()).await;
    let (_server, base) = crate::resource_server::start_resource_server(&app).await;
    let view = format!("{base}/api/posts/protected_view/");
    for alg in ["ES256", "EdDSA", "RS256", "PS256"] {
        let report = openid_client(&app, &rp, alg, &view).await;
        assert_bound_run(&app, alg, &report).await;
    }
}

/// RFC 9449 §8 with openid-client: when Tessera asks for nonces, the library gets one from the
/// `use_dpop_nonce` answer at the token endpoint, retries with it, and uses it from then on
/// (UserInfo, on the same server, takes it too).
#[tokio::test]
async fn openid_client_retries_with_the_servers_dpop_nonce() {
    let dirs = tempfile::tempdir().unwrap();
    let config = tessera::Config {
        dpop_nonce: true,
        ..test_config(&dirs)
    };
    let app = spawn_app_with(config, dirs).await;
    let rp = register(&app, ClientType::Confidential, ClientPolicy::default()).await;
    let (_server, base) = crate::resource_server::start_resource_server(&app).await;
    let report = openid_client(&app, &rp, "ES256", &format!("{base}/api/posts/protected_view/")).await;
    assert_bound_run(&app, "ES256", &report).await;
    let statuses = report["statuses"].as_array().unwrap();
    let asked = statuses
        .iter()
        .filter(|s| s["status"] == 400 || s["status"] == 401)
        .count();
    assert!(asked >= 1, "the server asked for a nonce: {report}");
    let token_proofs: Vec<&Value> = report["proofs"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| p["url"].as_str().unwrap().ends_with("/o/token/"))
        .collect();
    assert!(token_proofs[0]["claims"].get("nonce").is_none(), "{report}");
    assert!(token_proofs.last().unwrap()["claims"]["nonce"].is_string(), "{report}");
}

/// RFC 9449 §5 for the device grant (RFC 8628): the poll that gets the tokens carries the
/// proof, and a public device's refresh token is bound to the key like any public client's.
#[tokio::test]
async fn the_device_grant_binds_its_tokens_and_a_public_devices_refresh_token_to_the_key() {
    use crate::device::{answer, device_client, log_in, start, DEVICE_GRANT};
    let app = spawn_app().await;
    let tv = device_client(&app, ClientType::Public).await;
    let started = start(&app, &tv, "read").await;
    log_in(&app).await;
    answer(&app, started["user_code"].as_str().unwrap(), "allow").await;
    let mut jose = Jose::with_keys(&[("tv", "EdDSA"), ("thief", "EdDSA")]).await;
    let url = token_url(&app);
    let proof = jose.proof("tv", "POST", &url, json!({})).await;
    let form = [
        ("grant_type", DEVICE_GRANT),
        ("device_code", started["device_code"].as_str().unwrap()),
    ];
    let response = token_with_proofs(&app, &tv, &form, &[&proof]).await;
    assert_eq!(response.status(), 200);
    let tokens: Value = response.json().await.unwrap();
    assert_eq!(tokens["token_type"], "DPoP");
    let access = tokens["access_token"].as_str().unwrap();
    assert_eq!(
        app.verify_with_jwks(access).await.unwrap()["cnf"]["jkt"],
        jose.jkt("tv").as_str()
    );
    let refresh_token = tokens["refresh_token"].as_str().unwrap();
    assert_eq!(
        app.introspect(refresh_token).await["cnf"]["jkt"],
        jose.jkt("tv").as_str()
    );
    let stolen = jose.proof("thief", "POST", &url, json!({})).await;
    let response = refresh_with(&app, &tv, refresh_token, &[&stolen]).await;
    assert_eq!(
        refusal(response).await,
        (StatusCode::BAD_REQUEST, "invalid_grant".into())
    );
}

/// RFC 9449 §10: a code bound to a DPoP key, by `dpop_jkt` in the authorization request or by a
/// proof sent with the pushed request (§10.1), is exchanged only with a proof of that key.
#[tokio::test]
async fn a_code_bound_by_dpop_jkt_or_a_pushed_proof_needs_a_proof_of_that_key() {
    let app = spawn_app().await;
    let mut jose = Jose::with_keys(&[("mine", "ES256"), ("other", "EdDSA")]).await;
    let exchange = |code: String, verifier: String, proofs: Vec<String>| {
        let app = &app;
        async move {
            let form = [
                ("grant_type", "authorization_code"),
                ("code", code.as_str()),
                ("redirect_uri", REDIRECT_URI),
                ("code_verifier", verifier.as_str()),
            ];
            let proofs: Vec<&str> = proofs.iter().map(String::as_str).collect();
            token_with_proofs(app, &app.client, &form, &proofs).await
        }
    };

    // dpop_jkt in an ordinary authorization request.
    let pkce = Pkce::new();
    let mut query = app.authorize_query(&pkce, "s");
    query.push(("dpop_jkt".into(), jose.jkt("mine")));
    let code = param(&app.authorize_and_allow(&query).await, "code").unwrap();
    let other = jose.proof("other", "POST", &token_url(&app), json!({})).await;
    let (status, error) = refusal(exchange(code, pkce.verifier.clone(), vec![other]).await).await;
    assert_eq!((status.as_u16(), error.as_str()), (400, "invalid_dpop_proof"));
    let code = param(&app.authorize_and_allow(&query).await, "code").unwrap();
    let (status, _) = refusal(exchange(code, pkce.verifier.clone(), vec![]).await).await;
    assert_eq!(status, 400, "no proof at all");
    let code = param(&app.authorize_and_allow(&query).await, "code").unwrap();
    let mine = jose.proof("mine", "POST", &token_url(&app), json!({})).await;
    let tokens: Value = exchange(code, pkce.verifier.clone(), vec![mine])
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(tokens["token_type"], "DPoP", "{tokens}");

    // A malformed dpop_jkt is refused.
    let mut bad = app.authorize_query(&pkce, "s");
    bad.push(("dpop_jkt".into(), "not a thumbprint".into()));
    let response = app.authorize(&bad).await;
    assert_eq!(param(&location(&response), "error").as_deref(), Some("invalid_request"));

    // A proof sent with the pushed request binds the code the same way.
    let par_url = format!("{}/o/par/", app.issuer);
    let push_proof = jose.proof("mine", "POST", &par_url, json!({})).await;
    let form: Vec<(String, String)> = app
        .authorize_query(&pkce, "pushed")
        .into_iter()
        .filter(|(name, _)| name != "client_id")
        .collect();
    let pushed: Value = app
        .http
        .post(app.url("/o/par/"))
        .basic_auth(&app.client.id, app.client.secret.as_ref())
        .header("DPoP", push_proof)
        .form(&form)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let by_reference = [
        ("client_id".to_string(), app.client.id.clone()),
        (
            "request_uri".to_string(),
            pushed["request_uri"].as_str().unwrap().to_string(),
        ),
    ];
    let code = param(&app.authorize_and_allow(&by_reference).await, "code").unwrap();
    let other = jose.proof("other", "POST", &token_url(&app), json!({})).await;
    let (status, error) = refusal(exchange(code, pkce.verifier.clone(), vec![other]).await).await;
    assert_eq!((status.as_u16(), error.as_str()), (400, "invalid_dpop_proof"));
    // A pushed dpop_jkt that contradicts the proof is refused at the push.
    let push_proof = jose.proof("mine", "POST", &par_url, json!({})).await;
    let mut contradicting = form.clone();
    contradicting.push(("dpop_jkt".into(), jose.jkt("other")));
    let response = app
        .http
        .post(app.url("/o/par/"))
        .basic_auth(&app.client.id, app.client.secret.as_ref())
        .header("DPoP", push_proof)
        .form(&contradicting)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 400);
}

// The pre-release attack on pushed authorization requests and the client policy settings
// (DPoP required, PAR required, token exchange): each test failed while its bug was there.

#[tokio::test]
async fn a_client_that_requires_dpop_gets_no_token_without_a_proof() {
    let app = spawn_app().await;
    let (client, secret) = app
        .provider
        .register_client(
            &Caller::system(),
            NewClient {
                policy: ClientPolicy {
                    dpop_bound_access_tokens: true,
                    ..Default::default()
                },
                ..client_settings(
                    "DPoP only",
                    ClientType::Confidential,
                    vec![GrantType::ClientCredentials],
                )
            },
        )
        .await
        .unwrap();
    let client = TestClient {
        id: client.client_id,
        secret,
    };
    let response = app.client_credentials_as(&client, "read").await;
    let status = response.status().as_u16();
    let body: Value = response.json().await.unwrap();
    assert_ne!(
        status, 200,
        "a DPoP-only client got a token without a DPoP proof: {body}"
    );
}

// The third adversarial review (issue 26, `SECURITY.md`), each finding as the attack that
// found it; each test failed on the code the review ran against.

/// A public app's tokens bound to the DPoP key `mine`: its access and refresh tokens.
pub async fn bound_tokens(app: &TestApp, jose: &mut Jose) -> (TestClient, Value) {
    use tessera::store::{ClientPolicy, ClientType};
    let spa = register(app, ClientType::Public, ClientPolicy::default()).await;
    let proof = jose
        .proof("mine", "POST", &format!("{}/o/token/", app.issuer), json!({}))
        .await;
    let response = code_flow(app, &spa, &[&proof]).await;
    assert_eq!(response.status(), 200);
    let tokens: Value = response.json().await.unwrap();
    assert_eq!(tokens["token_type"], "DPoP");
    (spa, tokens)
}

/// Finding 5: revocation ignored a public client's bound refresh token's key: anyone holding
/// the token (worthless to them without the key) revoked its owner's whole grant with just the
/// public `client_id`. Now revoking a public client's bound token takes a proof of its key.
#[tokio::test]
async fn a_thief_cannot_revoke_a_bound_refresh_token_without_its_key() {
    let app = spawn_app().await;
    let mut jose = Jose::with_keys(&[("mine", "ES256"), ("thief", "ES256")]).await;
    let (spa, tokens) = bound_tokens(&app, &mut jose).await;
    let refresh_token = tokens["refresh_token"].as_str().unwrap().to_string();
    let revoke_url = format!("{}/o/revoke_token/", app.issuer);
    let revoke = |proof: Option<String>, token: String| {
        let mut request = app
            .http
            .post(app.url("/o/revoke_token/"))
            .form(&[("client_id", spa.id.as_str()), ("token", token.as_str())]);
        if let Some(proof) = proof {
            request = request.header("DPoP", proof);
        }
        request.send()
    };
    for proof in [None, Some(jose.proof("thief", "POST", &revoke_url, json!({})).await)] {
        let response = revoke(proof, refresh_token.clone()).await.unwrap();
        let status = response.status();
        let body: Value = response.json().await.unwrap();
        assert_eq!(
            (status.as_u16(), body["error"].as_str()),
            (400, Some("invalid_dpop_proof")),
            "{body}"
        );
    }
    // The bound access token too.
    let access = tokens["access_token"].as_str().unwrap().to_string();
    assert_eq!(revoke(None, access).await.unwrap().status(), 400);
    // The grant is alive: its owner refreshes (with the key).
    let token_url = format!("{}/o/token/", app.issuer);
    let proof = jose.proof("mine", "POST", &token_url, json!({})).await;
    let refreshed = refresh_with(&app, &spa, &refresh_token, &[&proof]).await;
    assert_eq!(refreshed.status(), 200);
    let next: Value = refreshed.json().await.unwrap();
    let next = next["refresh_token"].as_str().unwrap().to_string();
    // The owner revokes with a proof of the key, and then the grant is gone.
    let proof = jose.proof("mine", "POST", &revoke_url, json!({})).await;
    assert_eq!(revoke(Some(proof), next.clone()).await.unwrap().status(), 200);
    let proof = jose.proof("mine", "POST", &token_url, json!({})).await;
    let after = refresh_with(&app, &spa, &next, &[&proof]).await;
    assert_eq!(after.status(), 400, "revoked");
}

// The attack on the third review's fixes before their release (`SECURITY.md`), each as the
// attack.

/// The attack, 1: a DPoP proof's `jti` was remembered before the grant was checked, so anyone
/// (a public client needs no secret) filled the 500,000-entry replay memory with made-up codes
/// and fresh proofs at ~8,000 requests a second from 16 addresses, and then every DPoP request
/// was refused. Now a token request's proof is spent only once its grant is known good, and
/// where nothing else bounds a key holder (UserInfo, revocation) one key may spend 50 proofs
/// a second.
#[tokio::test]
async fn proofs_sent_with_made_up_grants_are_not_spent_and_one_key_cannot_fill_the_replay_memory() {
    use tessera::store::{ClientPolicy, ClientType};
    let app = spawn_app().await;
    let mut jose = Jose::with_keys(&[("mine", "ES256")]).await;
    let spa = register(&app, ClientType::Public, ClientPolicy::default()).await;
    let token_url = format!("{}/o/token/", app.issuer);
    let proof = jose.proof("mine", "POST", &token_url, json!({})).await;
    // A made-up code with the proof: refused, and the proof not spent...
    let form = [
        ("grant_type", "authorization_code"),
        ("code", "made-up"),
        ("redirect_uri", REDIRECT_URI),
        ("code_verifier", "x".repeat(43).as_str()),
    ]
    .map(|(k, v)| (k, v.to_string()));
    let form: Vec<(&str, &str)> = form.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let refused = token_with_proofs(&app, &spa, &form, &[&proof]).await;
    assert_eq!(refused.status(), 400);
    let body: Value = refused.json().await.unwrap();
    assert_eq!(body["error"], "invalid_grant");
    // ...so the same proof still works with a real code, once.
    let response = code_flow(&app, &spa, &[&proof]).await;
    assert_eq!(response.status(), 200, "the proof was not spent by the made-up code");
    let tokens: Value = response.json().await.unwrap();
    let replayed = code_flow(&app, &spa, &[&proof]).await;
    let body: Value = replayed.json().await.unwrap();
    assert_eq!(body["error"], "invalid_dpop_proof", "and then it is spent: {body}");

    // One key holder at UserInfo: 50 proofs a second (burst 100), then 429.
    let access = tokens["access_token"].as_str().unwrap();
    let userinfo = format!("{}/o/userinfo/", app.issuer);
    let specs: Vec<Value> = (0..300)
        .map(|_| json!({"key": "mine", "htm": "GET", "htu": userinfo, "access_token": access}))
        .collect();
    let proofs = jose.proofs(specs).await;
    let started = std::time::Instant::now();
    let app = std::sync::Arc::new(app);
    let statuses = for_each_concurrent(proofs, 16, {
        let (app, access) = (app.clone(), access.to_string());
        move |proof| {
            let (app, access) = (app.clone(), access.clone());
            async move {
                let url = app.url("/o/userinfo/");
                get_with(&app, &url, "DPoP", &access, &[&proof]).await.status().as_u16()
            }
        }
    })
    .await;
    println!("300 UserInfo calls in {:?}", started.elapsed());
    assert!(statuses.iter().filter(|s| **s == 200).count() >= 100, "{statuses:?}");
    assert!(
        statuses.contains(&429),
        "one key cannot spend without limit: {statuses:?}"
    );
    assert!(statuses.iter().all(|s| [200, 429].contains(s)), "{statuses:?}");
}
