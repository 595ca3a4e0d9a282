use crate::helpers::*;
use serde_json::Value;

#[tokio::test]
async fn metadata_lists_the_issuer_every_endpoint_and_capability() {
    let app = spawn_app().await;
    let response = app
        .http
        .get(app.url("/.well-known/oauth-authorization-server"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert!(response.headers()["cache-control"]
        .to_str()
        .unwrap()
        .contains("max-age"));
    let m: Value = response.json().await.unwrap();
    // RFC 8414 §3.3: the issuer is exactly the one tokens carry.
    assert_eq!(m["issuer"], app.issuer.as_str());
    assert_eq!(m["authorization_endpoint"], app.url("/o/authorize/"));
    assert_eq!(m["token_endpoint"], app.url("/o/token/"));
    assert_eq!(m["revocation_endpoint"], app.url("/o/revoke_token/"));
    assert_eq!(m["introspection_endpoint"], app.url("/o/introspect/"));
    assert_eq!(m["jwks_uri"], app.url("/.well-known/jwks.json"));
    assert_eq!(m["code_challenge_methods_supported"], serde_json::json!(["S256"]));
    assert_eq!(m["authorization_response_iss_parameter_supported"], true);
    assert_eq!(
        m["scopes_supported"],
        serde_json::json!(["openid", "profile", "email", "read", "write"])
    );
    assert_eq!(
        m["grant_types_supported"],
        serde_json::json!([
            "authorization_code",
            "client_credentials",
            "refresh_token",
            "urn:ietf:params:oauth:grant-type:device_code",
            "urn:ietf:params:oauth:grant-type:token-exchange"
        ])
    );
    assert_eq!(m["device_authorization_endpoint"], app.url("/o/device_authorization/"));
    let methods = m["token_endpoint_auth_methods_supported"].as_array().unwrap();
    assert!(methods.contains(&"client_secret_basic".into()) && methods.contains(&"client_secret_post".into()));
    // Every advertised endpoint answers (a GET on a POST endpoint is 405, not 404).
    for key in [
        "token_endpoint",
        "revocation_endpoint",
        "introspection_endpoint",
        "device_authorization_endpoint",
        "jwks_uri",
    ] {
        let status = app.http.get(m[key].as_str().unwrap()).send().await.unwrap().status();
        assert_ne!(status, 404, "{key}");
    }
}

#[tokio::test]
async fn jwks_publishes_the_signing_key_with_its_thumbprint_kid() {
    let app = spawn_app().await;
    let response = app.http.get(app.url("/.well-known/jwks.json")).send().await.unwrap();
    assert!(response.headers()["cache-control"]
        .to_str()
        .unwrap()
        .contains("max-age=300"));
    let jwks: Value = response.json().await.unwrap();
    let key = &jwks["keys"][0];
    assert_eq!(key["kty"], "EC");
    assert_eq!(key["crv"], "P-256");
    assert_eq!(key["alg"], "ES256");
    assert_eq!(key["use"], "sig");
    assert!(key.get("d").is_none(), "no private parameters");
    // RFC 7638: the kid is the SHA-256 thumbprint of the required members.
    let canonical = format!(
        r#"{{"crv":"P-256","kty":"EC","x":"{}","y":"{}"}}"#,
        key["x"].as_str().unwrap(),
        key["y"].as_str().unwrap()
    );
    let digest = ring::digest::digest(&ring::digest::SHA256, canonical.as_bytes());
    use base64::Engine;
    assert_eq!(
        key["kid"],
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(digest)
    );
}

#[tokio::test]
async fn the_committed_openapi_document_is_current() {
    let committed = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/openapi/openapi.json")).unwrap();
    let generated = tessera::http::spec();
    assert!(
        committed.trim_end() == generated.trim_end(),
        "openapi/openapi.json is stale: run `cargo run -- openapi > openapi/openapi.json`"
    );
}

#[tokio::test]
async fn openapi_is_served_and_documents_every_endpoint() {
    let app = spawn_app().await;
    let spec: Value = app.get_json("/openapi.json").await;
    for path in [
        "/o/token/",
        "/o/device_authorization/",
        "/o/revoke_token/",
        "/o/introspect/",
        "/.well-known/oauth-authorization-server",
        "/.well-known/jwks.json",
        "/healthz",
    ] {
        assert!(spec["paths"].get(path).is_some(), "{path} is documented");
    }
    let token = &spec["paths"]["/o/token/"]["post"];
    assert!(token["requestBody"]["content"]
        .get("application/x-www-form-urlencoded")
        .is_some());
    assert!(token["responses"].get("400").is_some() && token["responses"].get("401").is_some());
    let docs = app.http.get(app.url("/docs")).send().await.unwrap();
    assert_eq!(docs.status(), 200);
    assert!(docs.text().await.unwrap().contains("/o/token/"));
}

#[tokio::test]
async fn browser_apps_may_call_the_token_jwks_and_metadata_endpoints() {
    let app = spawn_app().await;
    for path in [
        "/o/token/",
        "/o/revoke_token/",
        "/.well-known/jwks.json",
        "/.well-known/oauth-authorization-server",
    ] {
        let response = app
            .http
            .request(reqwest::Method::OPTIONS, app.url(path))
            .header("origin", "https://spa.example")
            .header("access-control-request-method", "POST")
            .header("access-control-request-headers", "content-type")
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200, "{path}");
        assert_eq!(
            response.headers()["access-control-allow-origin"],
            "https://spa.example",
            "{path}"
        );
    }
}

#[tokio::test]
async fn healthz_answers_ok() {
    let app = spawn_app().await;
    let body: Value = app.get_json("/healthz").await;
    assert_eq!(body["status"], "ok");
}

#[tokio::test]
async fn configured_cors_origins_are_the_only_ones_allowed() {
    let dirs = tempfile::tempdir().unwrap();
    let config = tessera::Config {
        cors_origins: vec!["https://spa.example".into()],
        ..test_config(&dirs)
    };
    let app = spawn_app_with(config, dirs).await;
    let preflight = |origin: &'static str| {
        app.http
            .request(reqwest::Method::OPTIONS, app.url("/o/token/"))
            .header("origin", origin)
            .header("access-control-request-method", "POST")
            .send()
    };
    let allowed = preflight("https://spa.example").await.unwrap();
    assert_eq!(allowed.headers()["access-control-allow-origin"], "https://spa.example");
    let refused = preflight("https://evil.example").await.unwrap();
    assert!(refused.headers().get("access-control-allow-origin").is_none());
}

// The first adversarial review (issue 11, `SECURITY.md`), each finding as the attack that
// found it; each test failed on the code the review ran against.

/// Finding 14: the API docs page could be framed and had no content security policy.
#[tokio::test]
async fn the_docs_page_cannot_be_framed_and_loads_nothing_from_elsewhere() {
    let app = spawn_app().await;
    let docs = app.http.get(app.url("/docs")).send().await.unwrap();
    assert_eq!(docs.status(), 200);
    assert_eq!(docs.headers()["x-frame-options"], "DENY");
    let csp = docs.headers()["content-security-policy"].to_str().unwrap().to_string();
    for directive in ["default-src 'none'", "frame-ancestors 'none'", "connect-src 'self'"] {
        assert!(csp.contains(directive), "{csp}");
    }
}
