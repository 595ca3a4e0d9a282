//! `private_key_jwt` client authentication (RFC 7523 §2.2, OpenID Connect Core §9): clients of
//! every key type authenticate with signed assertions at the token, introspection and
//! revocation endpoints; every kind of bad assertion is refused; keys published at a
//! `jwks_uri` are fetched safely and cached.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use ring::rand::SystemRandom;
use ring::signature::{EcdsaKeyPair, Ed25519KeyPair, KeyPair, ECDSA_P256_SHA256_FIXED_SIGNING};
use serde_json::{json, Value};
use tessera::oauth::audit::Caller;
use tessera::oauth::client::ClientKeys;
use tessera::oauth::client::NewClient;
use tessera::store::{ClientType, GrantType};

use crate::documents::{Doc, DocumentServer};
use crate::helpers::*;

const ASSERTION_TYPE: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";

/// A client's key pair: what signs its assertions, and the public JWK it registers.
pub struct TestKey {
    pub alg: Algorithm,
    encoding: EncodingKey,
    pub jwk: Value,
}

impl TestKey {
    pub fn new(alg: Algorithm) -> TestKey {
        let rng = SystemRandom::new();
        let kid = tessera::oauth::random_id();
        match alg {
            Algorithm::ES256 => {
                let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng).unwrap();
                let pair = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8.as_ref(), &rng).unwrap();
                let point = pair.public_key().as_ref();
                TestKey {
                    alg,
                    encoding: EncodingKey::from_ec_der(pkcs8.as_ref()),
                    jwk: json!({"kty": "EC", "crv": "P-256", "kid": kid,
                        "x": URL_SAFE_NO_PAD.encode(&point[1..33]), "y": URL_SAFE_NO_PAD.encode(&point[33..])}),
                }
            }
            Algorithm::EdDSA => {
                let pkcs8 = Ed25519KeyPair::generate_pkcs8(&rng).unwrap();
                let pair = Ed25519KeyPair::from_pkcs8(pkcs8.as_ref()).unwrap();
                TestKey {
                    alg,
                    encoding: EncodingKey::from_ed_der(pkcs8.as_ref()),
                    jwk: json!({"kty": "OKP", "crv": "Ed25519", "kid": kid,
                        "x": URL_SAFE_NO_PAD.encode(pair.public_key().as_ref())}),
                }
            }
            Algorithm::RS256 | Algorithm::PS256 => {
                use rsa::pkcs1::EncodeRsaPrivateKey;
                use rsa::traits::PublicKeyParts;
                let key = rsa::RsaPrivateKey::new(&mut rand_core::OsRng, 2048).unwrap();
                let der = key.to_pkcs1_der().unwrap();
                TestKey {
                    alg,
                    encoding: EncodingKey::from_rsa_der(der.as_bytes()),
                    jwk: json!({"kty": "RSA", "kid": kid, "alg": format!("{alg:?}"),
                        "n": URL_SAFE_NO_PAD.encode(key.n().to_bytes_be()),
                        "e": URL_SAFE_NO_PAD.encode(key.e().to_bytes_be())}),
                }
            }
            other => panic!("no test keys for {other:?}"),
        }
    }

    pub fn jwks(&self) -> Value {
        json!({ "keys": [self.jwk] })
    }

    /// Signs `claims` with this key, its `kid` in the header.
    pub fn sign(&self, claims: &Value) -> String {
        let mut header = Header::new(self.alg);
        header.kid = self.jwk["kid"].as_str().map(String::from);
        jsonwebtoken::encode(&header, claims, &self.encoding).unwrap()
    }

    /// A fresh, valid assertion for `client_id` addressed to `aud`.
    pub fn assertion(&self, client_id: &str, aud: &str) -> String {
        self.sign(&claims(client_id, aud))
    }
}

/// Valid assertion claims: one minute to live, a fresh `jti`.
fn claims(client_id: &str, aud: &str) -> Value {
    let now = tessera::clock::now();
    json!({"iss": client_id, "sub": client_id, "aud": aud, "iat": now, "exp": now + 60,
        "jti": tessera::oauth::random_id()})
}

/// Registers a confidential client_credentials client that authenticates with `keys`.
pub async fn register(app: &TestApp, keys: ClientKeys) -> String {
    let (client, secret) = app
        .provider
        .register_client(
            &Caller::system(),
            NewClient {
                scope: "read write".into(),
                keys: Some(keys),
                ..client_settings(
                    "Key Client",
                    ClientType::Confidential,
                    vec![GrantType::ClientCredentials],
                )
            },
        )
        .await
        .unwrap();
    assert!(secret.is_none(), "a client with keys gets no secret");
    client.client_id
}

async fn post(app: &TestApp, path: &str, form: &[(&str, &str)]) -> (u16, Value) {
    let response = app.http.post(app.url(path)).form(form).send().await.unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

/// A client_credentials request authenticated by `assertion`.
pub async fn token_with(app: &TestApp, assertion: &str) -> (u16, Value) {
    post(
        app,
        "/o/token/",
        &[
            ("grant_type", "client_credentials"),
            ("scope", "read"),
            ("client_assertion_type", ASSERTION_TYPE),
            ("client_assertion", assertion),
        ],
    )
    .await
}

#[tokio::test]
async fn clients_with_keys_of_every_algorithm_get_introspect_and_revoke_tokens() {
    let app = spawn_app().await;
    for alg in [Algorithm::ES256, Algorithm::EdDSA, Algorithm::RS256, Algorithm::PS256] {
        let key = TestKey::new(alg);
        let client_id = register(&app, ClientKeys::Jwks(key.jwks())).await;
        // aud may be the issuer or the token endpoint (OpenID Connect Core §9).
        let (status, body) = token_with(&app, &key.assertion(&client_id, &app.issuer)).await;
        assert_eq!(status, 200, "{alg:?}: {body}");
        let token = body["access_token"].as_str().unwrap().to_string();
        assert_eq!(jwt_parts(&token).1["client_id"], client_id.as_str());
        let (status, _) = token_with(&app, &key.assertion(&client_id, &app.url("/o/token/"))).await;
        assert_eq!(status, 200, "{alg:?} with the token endpoint as aud");

        let auth = |aud: &str| key.assertion(&client_id, &app.url(aud));
        let introspect = auth("/o/introspect/");
        let (status, body) = post(
            &app,
            "/o/introspect/",
            &[
                ("token", &token),
                ("client_assertion_type", ASSERTION_TYPE),
                ("client_assertion", &introspect),
            ],
        )
        .await;
        assert_eq!((status, body["active"].clone()), (200, json!(true)), "{alg:?}: {body}");
        let revoke = auth("/o/revoke_token/");
        let (status, _) = post(
            &app,
            "/o/revoke_token/",
            &[
                ("token", &token),
                ("client_assertion_type", ASSERTION_TYPE),
                ("client_assertion", &revoke),
            ],
        )
        .await;
        assert_eq!(status, 200, "{alg:?}");
        let introspect = auth("/o/introspect/");
        let (_, body) = post(
            &app,
            "/o/introspect/",
            &[
                ("token", &token),
                ("client_assertion_type", ASSERTION_TYPE),
                ("client_assertion", &introspect),
            ],
        )
        .await;
        assert_eq!(body["active"], false, "{alg:?}: revoked");
    }
}

#[tokio::test]
async fn replayed_expired_misaddressed_and_wrongly_signed_assertions_are_refused() {
    let app = spawn_app().await;
    let key = TestKey::new(Algorithm::ES256);
    let client_id = register(&app, ClientKeys::Jwks(key.jwks())).await;
    let issuer = app.issuer.clone();
    let now = tessera::clock::now();
    let with = |changes: Value| {
        let mut c = claims(&client_id, &issuer);
        for (k, v) in changes.as_object().unwrap() {
            if v.is_null() {
                c.as_object_mut().unwrap().remove(k);
            } else {
                c[k] = v.clone();
            }
        }
        c
    };

    // Replayed: the same assertion twice.
    let once = key.assertion(&client_id, &issuer);
    assert_eq!(token_with(&app, &once).await.0, 200);
    let (status, body) = token_with(&app, &once).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (401, Some("invalid_client")),
        "replay"
    );

    let other_key = TestKey::new(Algorithm::ES256);
    let mut wrong_kid = TestKey::new(Algorithm::ES256);
    wrong_kid.jwk["kid"] = key.jwk["kid"].clone();
    let rsa = TestKey::new(Algorithm::RS256);
    let unsigned = |claims: &Value| {
        format!(
            "{}.{}.",
            URL_SAFE_NO_PAD.encode(r#"{"alg":"none","typ":"JWT"}"#),
            URL_SAFE_NO_PAD.encode(claims.to_string())
        )
    };
    let hmac = jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        &with(json!({})),
        &EncodingKey::from_secret(key.jwk.to_string().as_bytes()),
    )
    .unwrap();
    let cases: Vec<(&str, String)> = vec![
        ("expired", key.sign(&with(json!({"iat": now - 600, "exp": now - 120})))),
        (
            "exp too far ahead without iat",
            key.sign(&with(json!({"exp": now + 3600, "iat": null}))),
        ),
        (
            "issued more than 5 minutes ago",
            key.sign(&with(json!({"iat": now - 400, "exp": now + 3600}))),
        ),
        ("no exp", key.sign(&with(json!({"exp": null})))),
        ("not yet valid", key.sign(&with(json!({"nbf": now + 600})))),
        ("issued in the future", key.sign(&with(json!({"iat": now + 600})))),
        (
            "wrong audience",
            key.sign(&with(json!({"aud": "https://other.example"}))),
        ),
        (
            "another server's token endpoint",
            key.sign(&with(json!({"aud": "https://other.example/o/token/"}))),
        ),
        ("no jti", key.sign(&with(json!({"jti": null})))),
        ("wrong key", other_key.assertion(&client_id, &issuer)),
        (
            "wrong key with the registered kid",
            wrong_kid.assertion(&client_id, &issuer),
        ),
        ("another algorithm's key", rsa.assertion(&client_id, &issuer)),
        ("alg none", unsigned(&with(json!({})))),
        ("HS256 with the public key as secret", hmac),
        ("sub is another client", key.sign(&with(json!({"sub": app.client.id})))),
        ("iss is another client", key.sign(&with(json!({"iss": app.client.id})))),
        ("not a JWT", "not.a.jwt".into()),
        ("garbage", "x".repeat(20_000)),
    ];
    for (why, assertion) in cases {
        let (status, body) = token_with(&app, &assertion).await;
        assert_eq!(status, 401, "{why}: {body}");
        assert_eq!(body["error"], "invalid_client", "{why}");
    }

    // Methods may not be mixed, nor the assertion type be another.
    let fresh = key.assertion(&client_id, &issuer);
    let base = [
        ("grant_type", "client_credentials"),
        ("client_assertion_type", ASSERTION_TYPE),
        ("client_assertion", fresh.as_str()),
    ];
    let (status, body) = post(&app, "/o/token/", &[&base[..], &[("client_secret", "x")]].concat()).await;
    assert_eq!((status, body["error"].as_str()), (400, Some("invalid_request")));
    let (status, body) = post(
        &app,
        "/o/token/",
        &[&base[..], &[("client_id", app.client.id.as_str())]].concat(),
    )
    .await;
    assert_eq!(
        (status, body["error"].as_str()),
        (400, Some("invalid_request")),
        "client_id differs"
    );
    let (status, _) = post(
        &app,
        "/o/token/",
        &[
            ("grant_type", "client_credentials"),
            (
                "client_assertion_type",
                "urn:ietf:params:oauth:client-assertion-type:saml2-bearer",
            ),
            ("client_assertion", fresh.as_str()),
        ],
    )
    .await;
    assert_eq!(status, 401, "another assertion type");
    // A key client cannot fall back to naming itself, nor a secret client use an assertion.
    let (status, _) = post(
        &app,
        "/o/token/",
        &[("grant_type", "client_credentials"), ("client_id", &client_id)],
    )
    .await;
    assert_eq!(status, 401);
    let secret_client = key.assertion(&app.client.id, &issuer);
    assert_eq!(
        token_with(&app, &secret_client).await.0,
        401,
        "a client with a secret has no keys"
    );
    // The fresh assertion was never accepted above, so it still works once.
    assert_eq!(token_with(&app, &fresh).await.0, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn one_assertion_sent_fifty_times_at_once_is_accepted_once() {
    let app = spawn_app().await;
    let key = TestKey::new(Algorithm::EdDSA);
    let client_id = register(&app, ClientKeys::Jwks(key.jwks())).await;
    let assertion = key.assertion(&client_id, &app.issuer);
    let mut set = tokio::task::JoinSet::new();
    for _ in 0..50 {
        let (http, url, assertion) = (app.http.clone(), app.url("/o/token/"), assertion.clone());
        set.spawn(async move {
            let form = [
                ("grant_type", "client_credentials"),
                ("client_assertion_type", ASSERTION_TYPE),
                ("client_assertion", assertion.as_str()),
            ];
            http.post(url).form(&form).send().await.unwrap().status().as_u16()
        });
    }
    let statuses = set.join_all().await;
    assert_eq!(statuses.iter().filter(|s| **s == 200).count(), 1, "{statuses:?}");
    assert!(statuses.iter().all(|s| [200, 401, 429].contains(s)), "{statuses:?}");
}

#[tokio::test]
async fn keys_at_a_jwks_uri_are_fetched_over_https_cached_and_refetched_after_a_rotation() {
    let documents = DocumentServer::start().await;
    let dirs = tempfile::tempdir().unwrap();
    let mut config = test_config(&dirs);
    documents.trusted_by(&mut config);
    config.documents.min_ttl = std::time::Duration::from_secs(1);
    let app = spawn_app_with(config, dirs).await;
    let key = TestKey::new(Algorithm::PS256);
    documents.serve(
        "/jwks.json",
        Doc::json(&key.jwks()).header("Cache-Control", "max-age=600"),
    );
    let client_id = register(&app, ClientKeys::JwksUri(documents.url("/jwks.json"))).await;
    for _ in 0..3 {
        let (status, body) = token_with(&app, &key.assertion(&client_id, &app.issuer)).await;
        assert_eq!(status, 200, "{body}");
    }
    assert_eq!(documents.hits("/jwks.json"), 1, "the key set is cached");

    // A stranger's assertions (a kid not in the set) make at most one refetch per min_ttl.
    let stranger = TestKey::new(Algorithm::ES256);
    for _ in 0..5 {
        assert_eq!(
            token_with(&app, &stranger.assertion(&client_id, &app.issuer)).await.0,
            401
        );
    }
    assert_eq!(
        documents.hits("/jwks.json"),
        1,
        "fetched less than min_ttl ago: not again"
    );
    // The client rotates its key: once min_ttl has passed, an assertion with a kid not in the
    // cached set makes one refetch.
    let rotated = TestKey::new(Algorithm::ES256);
    documents.serve("/jwks.json", Doc::json(&rotated.jwks()));
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    let (status, body) = token_with(&app, &rotated.assertion(&client_id, &app.issuer)).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(documents.hits("/jwks.json"), 2);
    let (status, _) = token_with(&app, &key.assertion(&client_id, &app.issuer)).await;
    assert_eq!(status, 401, "the old key is gone");

    // A key set that is not JSON, too large, or missing: refused, never cached as an error.
    let (mut too_large, mut not_json) = (rotated.jwks(), Doc::json(&rotated.jwks()));
    too_large["padding"] = "x".repeat(20 * 1024).into();
    not_json = not_json.header("Content-Type", "text/html");
    for (path, doc) in [("/large.json", Doc::json(&too_large)), ("/html.json", not_json)] {
        documents.serve(path, doc);
        let client_id = register(&app, ClientKeys::JwksUri(documents.url(path))).await;
        assert_eq!(
            token_with(&app, &rotated.assertion(&client_id, &app.issuer)).await.0,
            401,
            "{path}"
        );
    }
    let missing = register(&app, ClientKeys::JwksUri(documents.url("/missing.json"))).await;
    assert_eq!(token_with(&app, &rotated.assertion(&missing, &app.issuer)).await.0, 401);
    documents.serve("/missing.json", Doc::json(&rotated.jwks()));
    assert_eq!(
        token_with(&app, &rotated.assertion(&missing, &app.issuer)).await.0,
        200,
        "errors are not cached"
    );
}

#[tokio::test]
async fn a_jwks_uri_on_a_private_address_is_never_fetched() {
    let documents = DocumentServer::start().await;
    let dirs = tempfile::tempdir().unwrap();
    let mut config = test_config(&dirs);
    documents.trusted_by(&mut config);
    // The test authority is trusted, but the address rule stays on.
    config.outbound.allow_private_addresses = false;
    let app = spawn_app_with(config, dirs).await;
    let key = TestKey::new(Algorithm::ES256);
    documents.serve("/jwks.json", Doc::json(&key.jwks()));
    let client_id = register(&app, ClientKeys::JwksUri(documents.url("/jwks.json"))).await;
    assert_eq!(token_with(&app, &key.assertion(&client_id, &app.issuer)).await.0, 401);
    let localhost = documents.url("/jwks.json").replace("127.0.0.1", "localhost");
    let client_id = register(&app, ClientKeys::JwksUri(localhost)).await;
    assert_eq!(token_with(&app, &key.assertion(&client_id, &app.issuer)).await.0, 401);
    assert_eq!(
        documents.hits("/jwks.json"),
        0,
        "no request reached the private address"
    );
}

#[tokio::test]
async fn dynamic_registration_the_admin_api_and_the_cli_register_clients_with_keys() {
    let dirs = tempfile::tempdir().unwrap();
    let mut config = test_config(&dirs);
    config.registration.mode = tessera::config::RegistrationMode::Open;
    config.registration.allow_client_credentials = true;
    let app = spawn_app_with(config, dirs).await;
    let key = TestKey::new(Algorithm::RS256);

    let register = |body: Value| {
        let app = &app;
        async move {
            let response = app.http.post(app.url("/o/register/")).json(&body).send().await.unwrap();
            (response.status().as_u16(), response.json::<Value>().await.unwrap())
        }
    };
    let (status, registered) = register(json!({
        "client_name": "Keyed", "token_endpoint_auth_method": "private_key_jwt",
        "grant_types": ["client_credentials"], "jwks": key.jwks(),
    }))
    .await;
    assert_eq!(status, 201, "{registered}");
    assert_eq!(registered["token_endpoint_auth_method"], "private_key_jwt");
    assert!(registered.get("client_secret").is_none(), "{registered}");
    assert_eq!(registered["jwks"], key.jwks());
    let client_id = registered["client_id"].as_str().unwrap();
    assert_eq!(token_with(&app, &key.assertion(client_id, &app.issuer)).await.0, 200);

    let mut private = key.jwk.clone();
    private["d"] = "AQAB".into();
    for (why, body) in [
        (
            "no keys",
            json!({"token_endpoint_auth_method": "private_key_jwt", "grant_types": ["client_credentials"]}),
        ),
        (
            "a private key",
            json!({"token_endpoint_auth_method": "private_key_jwt", "grant_types": ["client_credentials"], "jwks": {"keys": [private]}}),
        ),
        (
            "both jwks and jwks_uri",
            json!({"token_endpoint_auth_method": "private_key_jwt", "grant_types": ["client_credentials"], "jwks": key.jwks(), "jwks_uri": "https://app.example/jwks"}),
        ),
        (
            "an http jwks_uri",
            json!({"token_endpoint_auth_method": "private_key_jwt", "grant_types": ["client_credentials"], "jwks_uri": "http://app.example/jwks"}),
        ),
        (
            "keys with a secret method",
            json!({"token_endpoint_auth_method": "client_secret_basic", "grant_types": ["client_credentials"], "jwks": key.jwks()}),
        ),
    ] {
        let (status, body) = register(body).await;
        assert_eq!(
            (status, body["error"].as_str()),
            (400, Some("invalid_client_metadata")),
            "{why}: {body}"
        );
    }

    // The admin API.
    let admin = app.register_admin_client(None).await;
    let token: Value = app
        .client_credentials_as(&admin, "tessera:admin")
        .await
        .json()
        .await
        .unwrap();
    let response = app
        .http
        .post(app.url("/api/v1/clients"))
        .bearer_auth(token["access_token"].as_str().unwrap())
        .json(&json!({"name": "Keyed by admin", "client_type": "confidential",
            "grant_types": ["client_credentials"], "scope": "read", "jwks_uri": "https://app.example/jwks.json"}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 201);
    let created: Value = response.json().await.unwrap();
    assert!(created.get("client_secret").is_none(), "{created}");
    assert_eq!(created["client"]["token_endpoint_auth_method"], "private_key_jwt");
    assert_eq!(created["client"]["jwks_uri"], "https://app.example/jwks.json");

    // The CLI, on a stopped server's data folder.
    let dirs = app.stop().await;
    let jwks_file = dirs.path().join("jwks.json");
    std::fs::write(&jwks_file, key.jwks().to_string()).unwrap();
    let output = run_tessera(
        dirs.path(),
        &[
            "app",
            "create",
            "--name",
            "CLI keyed",
            "--client-type",
            "confidential",
            "--grant-type",
            "client-credentials",
            "--scope",
            "read",
            "--jwks-file",
            jwks_file.to_str().unwrap(),
            "--json",
            "--data-dir",
            dirs.path().join("data").to_str().unwrap(),
            "--keys-dir",
            dirs.path().join("keys").to_str().unwrap(),
        ],
        &[],
        "",
    );
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let created: Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(created["token_endpoint_auth_method"], "private_key_jwt");
    assert!(created.get("client_secret").is_none());
    std::fs::write(
        &jwks_file,
        json!({"keys": [{"kty": "oct", "k": "c2VjcmV0"}]}).to_string(),
    )
    .unwrap();
    let output = run_tessera(
        dirs.path(),
        &[
            "app",
            "create",
            "--name",
            "CLI bad",
            "--client-type",
            "confidential",
            "--grant-type",
            "client-credentials",
            "--jwks-file",
            jwks_file.to_str().unwrap(),
            "--data-dir",
            dirs.path().join("data").to_str().unwrap(),
            "--keys-dir",
            dirs.path().join("keys").to_str().unwrap(),
        ],
        &[],
        "",
    );
    assert!(!output.status.success());
    assert!(
        String::from_utf8_lossy(&output.stderr).contains("secret key material"),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
}

#[tokio::test]
async fn the_metadata_names_private_key_jwt_and_its_algorithms() {
    let app = spawn_app().await;
    let metadata = app.get_json("/.well-known/oauth-authorization-server").await;
    for endpoint in ["token", "revocation", "introspection"] {
        let methods = &metadata[format!("{endpoint}_endpoint_auth_methods_supported")];
        assert!(
            methods.as_array().unwrap().contains(&json!("private_key_jwt")),
            "{endpoint}"
        );
        assert_eq!(
            metadata[format!("{endpoint}_endpoint_auth_signing_alg_values_supported")],
            json!(["ES256", "EdDSA", "Ed25519", "RS256", "PS256"])
        );
    }
}

#[tokio::test]
async fn a_device_starts_the_device_flow_authenticated_by_its_key() {
    let app = spawn_app().await;
    let key = TestKey::new(Algorithm::ES256);
    let (client, _) = app
        .provider
        .register_client(
            &Caller::system(),
            NewClient {
                keys: Some(ClientKeys::Jwks(key.jwks())),
                ..client_settings("Keyed TV", ClientType::Confidential, vec![GrantType::DeviceCode])
            },
        )
        .await
        .unwrap();
    let assertion = key.assertion(&client.client_id, &app.url("/o/device_authorization/"));
    let form = [
        ("scope", "read"),
        ("client_assertion_type", ASSERTION_TYPE),
        ("client_assertion", assertion.as_str()),
    ];
    let (status, body) = post(&app, "/o/device_authorization/", &form).await;
    assert_eq!(status, 200, "{body}");
    assert!(body["device_code"].is_string() && body["user_code"].is_string());
    let (status, body) = post(&app, "/o/device_authorization/", &form).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (401, Some("invalid_client")),
        "a replay"
    );
    // Polling authenticates the same way.
    let poll = key.assertion(&client.client_id, &app.issuer);
    let (status, body) = post(
        &app,
        "/o/token/",
        &[
            ("grant_type", "urn:ietf:params:oauth:grant-type:device_code"),
            (
                "device_code",
                body_device_code(&app, &key, &client.client_id).await.as_str(),
            ),
            ("client_assertion_type", ASSERTION_TYPE),
            ("client_assertion", poll.as_str()),
        ],
    )
    .await;
    assert_eq!(
        (status, body["error"].as_str()),
        (400, Some("authorization_pending")),
        "{body}"
    );
}

/// A fresh device request by the keyed client; its device code.
async fn body_device_code(app: &TestApp, key: &TestKey, client_id: &str) -> String {
    let assertion = key.assertion(client_id, &app.issuer);
    let (status, body) = post(
        app,
        "/o/device_authorization/",
        &[
            ("client_assertion_type", ASSERTION_TYPE),
            ("client_assertion", assertion.as_str()),
        ],
    )
    .await;
    assert_eq!(status, 200, "{body}");
    body["device_code"].as_str().unwrap().to_string()
}

// The pre-release attack on private_key_jwt, Client ID Metadata Documents and the device
// grant: each comment tells the bug as it was found, and each test failed while it was there.

/// `exp` written as a JSON number with a fraction (or above i64::MAX) passes jsonwebtoken's
/// check (it accepts floats) but `claims["exp"].as_i64()` reads it as 0 in
/// `check_assertion`: the 5-minute lifetime cap is skipped, and the `jti` is remembered only
/// until 30 s after 1970, i.e. not at all. One captured assertion then authenticates the
/// client forever, any number of times.
#[tokio::test]
async fn an_assertion_with_a_fractional_exp_is_neither_replayable_nor_long_lived() {
    let app = spawn_app().await;
    let key = TestKey::new(Algorithm::ES256);
    let client_id = register(&app, ClientKeys::Jwks(key.jwks())).await;
    let now = tessera::clock::now();

    // A normal lifetime, exp with a fraction: accepted once, then a replay.
    let assertion = key.sign(&json!({"iss": client_id, "sub": client_id, "aud": app.issuer,
        "iat": now, "exp": now as f64 + 60.5, "jti": "fractional-exp"}));
    let first = token_with(&app, &assertion).await;
    assert_eq!(first.0, 200, "{first:?}");
    let replay = token_with(&app, &assertion).await;
    assert_eq!(
        (replay.0, replay.1["error"].as_str()),
        (401, Some("invalid_client")),
        "the same assertion (same jti) was accepted twice: {replay:?}"
    );

    // Ten years ahead, or beyond i64: accepted (once) only within 300 s of its iat, as any
    // assertion (the policy that lets Authlib's hour-long exp through), never replayable.
    for (jti, exp) in [
        ("ten-years", json!(now as f64 + 315_360_000.5)),
        ("huge-exp", json!(18_000_000_000_000_000_000u64)),
    ] {
        let fresh = key.sign(&json!({"iss": client_id, "sub": client_id, "aud": app.issuer,
            "iat": now, "exp": exp, "jti": jti}));
        assert_eq!(token_with(&app, &fresh).await.0, 200, "{jti}");
        let replay = token_with(&app, &fresh).await;
        assert_eq!(
            (replay.0, replay.1["error"].as_str()),
            (401, Some("invalid_client")),
            "{jti} replayed: {replay:?}"
        );
        let old = key.sign(&json!({"iss": client_id, "sub": client_id, "aud": app.issuer,
            "iat": now - 400, "exp": exp, "jti": format!("{jti}-old")}));
        let answer = token_with(&app, &old).await;
        assert_eq!(
            (answer.0, answer.1["error"].as_str()),
            (401, Some("invalid_client")),
            "{jti} issued 400 s ago"
        );
        let no_iat = key.sign(&json!({"iss": client_id, "sub": client_id, "aud": app.issuer,
            "exp": exp, "jti": format!("{jti}-no-iat")}));
        let answer = token_with(&app, &no_iat).await;
        assert_eq!(
            (answer.0, answer.1["error"].as_str()),
            (401, Some("invalid_client")),
            "{jti} without iat"
        );
    }
    // An iat that is not a number is no iat.
    let odd = key.sign(&json!({"iss": client_id, "sub": client_id, "aud": app.issuer,
        "iat": "now", "exp": now as f64 + 3600.0, "jti": "odd-iat"}));
    assert_eq!(token_with(&app, &odd).await.0, 401);
}

/// The embedded store remembers used `jti`s in its in-memory counter table, which holds at
/// most 100,000 counters and, when full, drops those that expire first (`make_room` in
/// `src/store/sled.rs`). An assertion's `jti` lives at most ~6 minutes, a failed-login
/// counter 15: anyone who makes the server count enough failed logins (distinct usernames
/// from many addresses, e.g. an IPv6 /48) flushes every remembered `jti`, and a captured
/// assertion can then be replayed within its lifetime. Here the table is filled directly,
/// with counters like the login throttle's, between the first use and the replay.
#[tokio::test]
async fn remembered_assertion_ids_survive_a_full_counter_table() {
    use tessera::store::{Counter, EphemeralStore};
    let app = spawn_app().await;
    let key = TestKey::new(Algorithm::ES256);
    let client_id = register(&app, ClientKeys::Jwks(key.jwks())).await;
    let assertion = key.assertion(&client_id, &app.issuer);
    assert_eq!(token_with(&app, &assertion).await.0, 200);

    // What 100,000 failed logins (15-minute counters) leave in the table: the embedded
    // store's bound; the database has none, and must not forget either. Written a thousand
    // counters at a time.
    let now_ms = tessera::clock::now() * 1000;
    let store: &dyn EphemeralStore = app.store.as_ref();
    for batch in 0..101u32 {
        let keys: Vec<Vec<u8>> = (0..1000)
            .map(|i| format!("lp\0attacker-{batch}-{i}").into_bytes())
            .collect();
        store
            .update_counters(&keys, &|counters: &mut [Counter]| {
                for c in counters.iter_mut() {
                    *c = Counter {
                        failures: 1,
                        last_failure_ms: now_ms,
                        locked_until_ms: 0,
                        expires_at_ms: now_ms + 15 * 60 * 1000,
                    };
                }
            })
            .await
            .unwrap();
    }
    let replay = token_with(&app, &assertion).await;
    assert_eq!(
        (replay.0, replay.1["error"].as_str()),
        (401, Some("invalid_client")),
        "the assertion was accepted a second time once the counter table filled up: {replay:?}"
    );
}

/// An assertion that no cached key verifies makes `check_assertion` forget the client's
/// `jwks_uri` copy and fetch it again, whoever sent it: the client is read from the
/// unverified `sub`. So an anonymous caller, sending assertions "for" a victim client signed
/// with any key, makes the server fetch the victim's key set once per request until that
/// host's budget is spent (`src/oauth/client_assertion.rs` refetch loop, `DocumentCache`'s
/// per-host bucket), and keeps it spent. When the victim then rotates its key (or its copy
/// goes stale) it can no longer authenticate.
#[tokio::test]
async fn anonymous_bad_assertions_do_not_lock_a_jwks_uri_client_out_of_its_key_rotation() {
    use crate::documents::{Doc, DocumentServer};
    let documents = DocumentServer::start().await;
    let dirs = tempfile::tempdir().unwrap();
    let mut config = test_config(&dirs);
    documents.trusted_by(&mut config);
    // A key set is fetched again on demand at most once a second here (a minute by default).
    config.documents.min_ttl = std::time::Duration::from_secs(1);
    let app = spawn_app_with(config, dirs).await;
    let key = TestKey::new(Algorithm::ES256);
    documents.serve(
        "/jwks.json",
        Doc::json(&key.jwks()).header("Cache-Control", "max-age=600"),
    );
    let client_id = register(&app, ClientKeys::JwksUri(documents.url("/jwks.json"))).await;
    assert_eq!(token_with(&app, &key.assertion(&client_id, &app.issuer)).await.0, 200);

    // Anyone: assertions naming the victim, signed with a key of their own.
    let stranger = TestKey::new(Algorithm::ES256);
    for _ in 0..12 {
        let (status, _) = token_with(&app, &stranger.assertion(&client_id, &app.issuer)).await;
        assert_eq!(status, 401);
    }
    let fetches = documents.hits("/jwks.json");
    assert!(fetches <= 2, "12 bad assertions made {} fetches", fetches - 1);

    // The victim rotates its key, as the guide says it may without telling the server, and
    // uses it once the refetch interval has passed.
    let rotated = TestKey::new(Algorithm::ES256);
    documents.serve("/jwks.json", Doc::json(&rotated.jwks()));
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    let (status, body) = token_with(&app, &rotated.assertion(&client_id, &app.issuer)).await;
    assert_eq!(
        status,
        200,
        "after 12 anonymous bad assertions (which made {} fetches of its key set), the client \
         cannot authenticate with its rotated key: {body}",
        fetches - 1
    );
}

// The attack on the third review's fixes before their release (`SECURITY.md`), each as the
// attack.

/// The attack, 7: a NUL in a client assertion's `iss`/`sub` (inside base64 JSON, where the
/// request edge cannot see it) reached PostgreSQL: a 400 and an ERROR line in the log, and not
/// the `invalid_client` every other bad assertion gets. Now such a client id is nobody's.
#[tokio::test]
async fn a_nul_inside_a_client_assertion_is_invalid_client_on_every_backend() {
    let app = spawn_app().await;
    let key = TestKey::new(jsonwebtoken::Algorithm::ES256);
    let assertion = key.assertion("a\u{0}b", &app.issuer);
    let (status, body) = token_with(&app, &assertion).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (401, Some("invalid_client")),
        "{body}"
    );
}
