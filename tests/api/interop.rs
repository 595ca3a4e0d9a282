//! Third-party libraries against the live server: PyJWT (Python) and jose (Node) verify tokens
//! through the JWKS, and Authlib (an OAuth client) completes the code + PKCE flow.

use crate::helpers::*;
use serde_json::Value;
use tessera::keys::{Algorithm, Keyring};

/// Runs PyJWT's `PyJWKClient` on a token; returns the claims, or `None` if PyJWT rejects it.
async fn pyjwt_verify(app: &TestApp, audience: &str, token: &str) -> Option<Value> {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/interop/pyjwt_verify.py");
    let args = [
        script.to_string(),
        app.url("/.well-known/jwks.json"),
        app.issuer.clone(),
        audience.to_string(),
        token.to_string(),
    ];
    let output = tokio::process::Command::new("python3")
        .args(&args)
        .output()
        .await
        .expect("python3 runs");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        !stderr.contains("ModuleNotFoundError"),
        "PyJWT is not installed (pip install 'pyjwt[crypto]'): {stderr}"
    );
    output
        .status
        .success()
        .then(|| serde_json::from_slice(&output.stdout).expect("claims JSON"))
}

/// Runs jose's `createRemoteJWKSet` + `jwtVerify` (Node) on a token; `None` if jose rejects it.
async fn jose_verify(app: &TestApp, audience: &str, token: &str) -> Option<Value> {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/interop");
    assert!(
        std::path::Path::new(dir).join("node_modules/jose").is_dir(),
        "jose is not installed: run `npm ci --prefix tests/interop` (tests/run.sh does)"
    );
    let args = [
        "jose_verify.mjs".to_string(),
        app.url("/.well-known/jwks.json"),
        app.issuer.clone(),
        audience.to_string(),
        token.to_string(),
    ];
    let output = tokio::process::Command::new("node")
        .args(&args)
        .current_dir(dir)
        .output()
        .await
        .expect("node runs");
    output
        .status
        .success()
        .then(|| serde_json::from_slice(&output.stdout).expect("claims JSON"))
}

fn tamper(token: &str) -> String {
    let mut parts: Vec<String> = token.split('.').map(String::from).collect();
    let (_, claims) = jwt_parts(token);
    let mut claims = claims;
    claims["scope"] = "read write admin".into();
    parts[1] = base64::Engine::encode(&base64::engine::general_purpose::URL_SAFE_NO_PAD, claims.to_string());
    parts.join(".")
}

#[tokio::test]
async fn pyjwt_and_jose_verify_tokens_of_every_algorithm_and_reject_tampered_ones() {
    let app = spawn_app().await;
    let vault = app.key_vault().await;
    for alg in [Algorithm::ES256, Algorithm::RS256, Algorithm::EdDSA] {
        if alg != Algorithm::ES256 {
            let key = Keyring::rotate(vault.as_ref(), alg).await.unwrap();
            // Wait for the server to pick up the rotated keyring.
            let mut tries = 0;
            loop {
                let token: Value = app.client_credentials("read").await.json().await.unwrap();
                if jwt_parts(token["access_token"].as_str().unwrap()).0["kid"] == key.kid.as_str() {
                    break;
                }
                tries += 1;
                assert!(tries < 50, "the rotated key never started signing");
                tokio::time::sleep(std::time::Duration::from_millis(200)).await;
            }
        }
        let body: Value = app.client_credentials("read").await.json().await.unwrap();
        let token = body["access_token"].as_str().unwrap();
        assert_eq!(jwt_parts(token).0["alg"], alg.as_str());
        let claims = pyjwt_verify(&app, &app.issuer, token)
            .await
            .unwrap_or_else(|| panic!("PyJWT accepts the {alg} token"));
        assert_eq!(claims["client_id"], app.client.id.as_str());
        assert!(
            pyjwt_verify(&app, &app.issuer, &tamper(token)).await.is_none(),
            "PyJWT rejects a tampered {alg} token"
        );
        assert!(
            pyjwt_verify(&app, "https://someone-else.example", token)
                .await
                .is_none(),
            "PyJWT checks aud"
        );
        let claims = jose_verify(&app, &app.issuer, token)
            .await
            .unwrap_or_else(|| panic!("jose accepts the {alg} token"));
        assert_eq!(claims["client_id"], app.client.id.as_str());
        assert!(
            jose_verify(&app, &app.issuer, &tamper(token)).await.is_none(),
            "jose rejects a tampered {alg} token"
        );
        assert!(
            jose_verify(&app, "https://someone-else.example", token).await.is_none(),
            "jose checks aud"
        );
    }
}

#[tokio::test]
async fn authlib_completes_the_code_flow_with_pkce_and_refreshes() {
    let app = spawn_app().await;
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/interop/authlib_code_flow.py");
    let args = [
        script,
        &app.base,
        &app.client.id,
        app.client.secret.as_deref().unwrap(),
        REDIRECT_URI,
        USERNAME,
        PASSWORD,
    ];
    let output = tokio::process::Command::new("python3")
        .args(args)
        .output()
        .await
        .expect("python3 runs");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "Authlib's flow failed: {stderr}");
    let result: Value = serde_json::from_slice(&output.stdout).expect("token JSON");
    let access = result["refreshed"]["access_token"].as_str().unwrap();
    assert!(
        app.verify_with_jwks(access).await.is_some(),
        "the refreshed access token verifies"
    );
    assert_eq!(app.introspect(access).await["active"], true);
}

/// Runs a Node script from tests/interop (whose packages `npm ci` installed) and parses the
/// JSON it prints.
pub async fn node_script(script: &str, args: &[&str]) -> Value {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/interop");
    assert!(
        std::path::Path::new(dir).join("node_modules/openid-client").is_dir(),
        "openid-client is not installed: run `npm ci --prefix tests/interop` (tests/run.sh does)"
    );
    let output = tokio::process::Command::new("node")
        .arg(script)
        .args(args)
        .current_dir(dir)
        .output()
        .await
        .expect("node runs");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{script} failed: {stderr}");
    serde_json::from_slice(&output.stdout).expect("a JSON report")
}

#[tokio::test]
async fn openid_client_logs_in_with_discovery_pkce_nonce_and_id_token_validation() {
    let app = spawn_app().await;
    let rp = app.register_relying_party(None, None).await;
    let user = app.store.get_user_by_name(USERNAME).await.unwrap().unwrap();
    let report = node_script(
        "openid_client_login.mjs",
        &[
            &app.issuer,
            &rp.id,
            rp.secret.as_deref().unwrap(),
            REDIRECT_URI,
            LOGGED_OUT,
            USERNAME,
            PASSWORD,
        ],
    )
    .await;
    // The library validated the ID token; these are the claims it accepted.
    let claims = &report["claims"];
    assert_eq!(claims["iss"], app.issuer.as_str());
    assert_eq!(claims["sub"], user.user_id.as_str());
    assert_eq!(claims["aud"], rp.id.as_str());
    assert!(claims["nonce"].is_string() && claims["at_hash"].is_string());
    assert_eq!(claims["preferred_username"], USERNAME);
    assert_eq!(report["userinfo"]["sub"], user.user_id.as_str());
    assert_eq!(report["userinfo"]["email"], "alice@example.com");
    assert_eq!(report["refreshed_claims"]["sub"], user.user_id.as_str());
    assert_eq!(report["refreshed_claims"]["auth_time"], claims["auth_time"]);
    assert_eq!(report["refresh_rotated"], true);
    let wrong_nonce = report["wrong_nonce"].as_str().unwrap();
    assert!(
        wrong_nonce.starts_with("rejected") && wrong_nonce.contains("nonce"),
        "{wrong_nonce}"
    );
    assert_eq!(report["logout_status"], 303);
    assert_eq!(report["logout_location"], format!("{LOGGED_OUT}?state=bye").as_str());
    assert_eq!(report["after_logout"]["error"], "login_required", "{report}");
}

#[tokio::test]
async fn the_rust_openidconnect_crate_logs_in_with_its_default_strict_verifier() {
    use openidconnect::core::{CoreAuthenticationFlow, CoreClient, CoreProviderMetadata, CoreUserInfoClaims};
    use openidconnect::{
        AccessTokenHash, AuthorizationCode, ClientId, ClientSecret, CsrfToken, IssuerUrl, Nonce, OAuth2TokenResponse,
        PkceCodeChallenge, RedirectUrl, Scope, TokenResponse,
    };

    let app = spawn_app().await;
    let rp = app.register_relying_party(None, None).await;
    // The crate's own HTTP client (redirects off, as its docs advise against SSRF).
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let metadata = CoreProviderMetadata::discover_async(IssuerUrl::new(app.issuer.clone()).unwrap(), &http)
        .await
        .expect("discovery succeeds and the issuer matches");
    let client = CoreClient::from_provider_metadata(
        metadata,
        ClientId::new(rp.id.clone()),
        Some(ClientSecret::new(rp.secret.clone().unwrap())),
    )
    .set_redirect_uri(RedirectUrl::new(REDIRECT_URI.into()).unwrap());
    let (challenge, pkce_verifier) = PkceCodeChallenge::new_random_sha256();
    let (url, state, nonce) = client
        .authorize_url(
            CoreAuthenticationFlow::AuthorizationCode,
            CsrfToken::new_random,
            Nonce::new_random,
        )
        .add_scope(Scope::new("profile".into()))
        .add_scope(Scope::new("email".into()))
        .set_pkce_challenge(challenge)
        .url();

    // The test client plays the browser: login and consent pages.
    let params: Vec<(String, String)> = url.query_pairs().into_owned().collect();
    let callback = app.authorize_and_allow(&params).await;
    assert_eq!(param(&callback, "state").as_deref(), Some(state.secret().as_str()));
    let code = param(&callback, "code").expect("a code");

    let tokens = client
        .exchange_code(AuthorizationCode::new(code))
        .unwrap()
        .set_pkce_verifier(pkce_verifier)
        .request_async(&http)
        .await
        .expect("the code exchange succeeds");
    let id_token = tokens.id_token().expect("an ID token");
    // The default verifier: RS256 only, signature through the JWKS, iss, aud, exp, nonce.
    let verifier = client.id_token_verifier();
    let claims = id_token.claims(&verifier, &nonce).expect("the ID token validates");
    let user = app.store.get_user_by_name(USERNAME).await.unwrap().unwrap();
    assert_eq!(claims.subject().as_str(), user.user_id);
    assert_eq!(claims.preferred_username().map(|u| u.as_str()), Some(USERNAME));
    let expected_hash = claims.access_token_hash().expect("at_hash is present");
    let actual_hash = AccessTokenHash::from_token(
        tokens.access_token(),
        id_token.signing_alg().unwrap(),
        id_token.signing_key(&verifier).unwrap(),
    )
    .unwrap();
    assert_eq!(
        &actual_hash, expected_hash,
        "at_hash binds the ID token to the access token"
    );
    assert!(
        id_token
            .claims(&verifier, &Nonce::new("another login's nonce".into()))
            .is_err(),
        "a different nonce is rejected"
    );

    let info: CoreUserInfoClaims = client
        .user_info(tokens.access_token().clone(), Some(claims.subject().clone()))
        .unwrap()
        .request_async(&http)
        .await
        .expect("UserInfo answers for the same subject");
    assert_eq!(info.email().map(|e| e.as_str()), Some("alice@example.com"));
    assert_eq!(info.email_verified(), Some(false));
}
