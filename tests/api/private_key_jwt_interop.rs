//! Third-party clients authenticate with `private_key_jwt` (RFC 7523 §2.2, OpenID Connect Core
//! §9): openid-client (Node) and Authlib (Python) sign client assertions with keys of each
//! accepted algorithm, for clients registered through each surface (the admin API, `tessera app
//! create --jwks-file`, dynamic registration) with a JWK Set or a `jwks_uri`, at the token,
//! introspection and revocation endpoints. Then each rule the libraries showed Tessera had wrong, as an assertion
//! signed here.

use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine;
use ring::rand::SystemRandom;
use ring::signature::{EcdsaKeyPair, Ed25519KeyPair, KeyPair, ECDSA_P256_SHA256_FIXED_SIGNING};
use serde_json::{json, Value};

use crate::helpers::*;

/// The algorithms Tessera accepts for client assertions, as the libraries name them.
const ALGORITHMS: [&str; 4] = ["ES256", "EdDSA", "RS256", "PS256"];

/// A client's key pair: the private key as the scripts read it (PKCS#8 PEM, or a JWK) and the
/// public key as a JWK (what is registered).
struct ClientKey {
    alg: &'static str,
    private_file: String,
    /// The private scalar (EC) or seed (Ed25519): a private JWK's `d`.
    d: Option<Vec<u8>>,
    public_jwk: Value,
}

impl ClientKey {
    /// A new key pair for `alg`; `kid` names it in the JWK (and in the assertions' header).
    fn generate(alg: &'static str, kid: &str) -> ClientKey {
        let rng = SystemRandom::new();
        let b64 = |bytes: &[u8]| URL_SAFE_NO_PAD.encode(bytes);
        let (pkcs8, d, mut jwk) = match alg {
            "ES256" => {
                let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng).unwrap();
                let pair = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8.as_ref(), &rng).unwrap();
                // An uncompressed point: 0x04, then x and y.
                let point = pair.public_key().as_ref();
                let jwk = json!({"kty": "EC", "crv": "P-256", "x": b64(&point[1..33]), "y": b64(&point[33..])});
                // ring's P-256 PKCS#8: a fixed prefix, then the private scalar.
                let prefix = "308187020100301306072a8648ce3d020106082a8648ce3d030107046d306b0201010420";
                assert_eq!(pkcs8.as_ref()[..36], hex_bytes(prefix));
                let d = pkcs8.as_ref()[36..68].to_vec();
                (pkcs8.as_ref().to_vec(), Some(d), jwk)
            }
            "EdDSA" => {
                let pkcs8 = Ed25519KeyPair::generate_pkcs8(&rng).unwrap();
                let pair = Ed25519KeyPair::from_pkcs8(pkcs8.as_ref()).unwrap();
                let jwk = json!({"kty": "OKP", "crv": "Ed25519", "x": b64(pair.public_key().as_ref())});
                // ring writes PKCS#8 v2 (RFC 5958, with the public key), which Node's WebCrypto
                // refuses; v1 (RFC 8410 §7) is a fixed prefix and the 32-byte seed.
                let seed = pkcs8.as_ref()[16..48].to_vec();
                let mut v1 = hex_bytes("302e020100300506032b657004220420");
                v1.extend_from_slice(&seed);
                (v1, Some(seed), jwk)
            }
            "RS256" | "PS256" => {
                use rsa::pkcs8::EncodePrivateKey;
                use rsa::traits::PublicKeyParts;
                let key = rsa::RsaPrivateKey::new(&mut rand_core::OsRng, 2048).unwrap();
                let jwk = json!({"kty": "RSA", "n": b64(&key.n().to_bytes_be()), "e": b64(&key.e().to_bytes_be())});
                (key.to_pkcs8_der().unwrap().as_bytes().to_vec(), None, jwk)
            }
            other => panic!("no key type for {other}"),
        };
        jwk["kid"] = kid.into();
        jwk["use"] = "sig".into();
        let lines: Vec<String> = STANDARD
            .encode(&pkcs8)
            .as_bytes()
            .chunks(64)
            .map(|line| String::from_utf8(line.to_vec()).unwrap())
            .collect();
        let private_file = format!(
            "-----BEGIN PRIVATE KEY-----\n{}\n-----END PRIVATE KEY-----\n",
            lines.join("\n")
        );
        ClientKey {
            alg,
            private_file,
            d,
            public_jwk: jwk,
        }
    }

    /// The same key, handed to the scripts as a private JWK instead of PEM (EC and Ed25519).
    fn into_private_jwk(mut self) -> ClientKey {
        let mut jwk = self.public_jwk.clone();
        jwk["d"] = URL_SAFE_NO_PAD
            .encode(self.d.as_ref().expect("an EC or Ed25519 key"))
            .into();
        self.private_file = jwk.to_string();
        self
    }

    fn kid(&self) -> &str {
        self.public_jwk["kid"].as_str().unwrap()
    }
}

fn hex_bytes(hex: &str) -> Vec<u8> {
    (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap())
        .collect()
}

/// Registers a confidential client_credentials client with these public keys through the
/// admin API, as an operator would; returns its id.
async fn register_with_keys(app: &TestApp, keys: &[&ClientKey]) -> String {
    let jwks: Vec<&Value> = keys.iter().map(|k| &k.public_jwk).collect();
    register_with(app, json!({"jwks": {"keys": jwks}})).await
}

/// [`register_with_keys`], the keys given by `keys` (`jwks` or `jwks_uri`).
async fn register_with(app: &TestApp, keys: Value) -> String {
    let admin = app.register_admin_client(None).await;
    let response = app
        .token(
            &admin,
            &[("grant_type", "client_credentials"), ("scope", "tessera:admin")],
        )
        .await;
    assert_eq!(response.status(), 200);
    let admin_token = response.json::<Value>().await.unwrap()["access_token"]
        .as_str()
        .unwrap()
        .to_string();
    let mut settings = json!({
        "name": "Key-holding service",
        "client_type": "confidential",
        "grant_types": ["client_credentials"],
        "scope": "read",
    });
    settings
        .as_object_mut()
        .unwrap()
        .extend(keys.as_object().unwrap().clone());
    let response = app
        .http
        .post(app.url("/api/v1/clients"))
        .bearer_auth(admin_token)
        .json(&settings)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 201);
    let body: Value = response.json().await.unwrap();
    assert!(
        body.get("client_secret").is_none(),
        "a client with keys has no secret: {body}"
    );
    assert_eq!(body["client"]["token_endpoint_auth_method"], "private_key_jwt");
    body["client"]["client_id"].as_str().unwrap().to_string()
}

/// What a library script reported: its exit code and its JSON report.
struct Run {
    library: &'static str,
    /// The JWS `alg` the library should have put in its assertions' header.
    jws_alg: &'static str,
    kid: String,
    code: Option<i32>,
    report: Value,
}

/// Runs a library script with `key`'s private half (written to a file the script reads).
async fn run_script(
    (library, program, script): (&'static str, &str, &str),
    app: &TestApp,
    client_id: &str,
    key: &ClientKey,
) -> Run {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/interop");
    let key_file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(key_file.path(), &key.private_file).unwrap();
    let output = tokio::process::Command::new(program)
        .arg(script)
        .args([&app.issuer, client_id])
        .arg(key_file.path())
        .args([key.alg, key.kid()])
        .current_dir(dir)
        .output()
        .await
        .unwrap_or_else(|e| panic!("{program} runs: {e}"));
    let stderr = String::from_utf8_lossy(&output.stderr);
    let report = serde_json::from_slice(&output.stdout)
        .unwrap_or_else(|_| panic!("{script} ({}) reported nothing; stderr:\n{stderr}", key.alg));
    Run {
        library,
        jws_alg: key.alg,
        kid: key.kid().to_string(),
        code: output.status.code(),
        report,
    }
}

async fn openid_client(app: &TestApp, client_id: &str, key: &ClientKey) -> Run {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/interop");
    assert!(
        std::path::Path::new(dir).join("node_modules/openid-client").is_dir(),
        "openid-client is not installed: run `npm ci --prefix tests/interop` (tests/run.sh does)"
    );
    let script = ("openid-client", "node", "openid_client_private_key_jwt.mjs");
    let mut run = run_script(script, app, client_id, key).await;
    // oauth4webapi names Ed25519 signatures as RFC 9864 does.
    if key.alg == "EdDSA" {
        run.jws_alg = "Ed25519";
    }
    run
}

async fn authlib(app: &TestApp, client_id: &str, key: &ClientKey) -> Run {
    let script = ("Authlib", "python3", "authlib_private_key_jwt.py");
    run_script(script, app, client_id, key).await
}

/// The checks on a library's full run: it signed each of its four requests' assertion with the
/// key and algorithm asked for, the token is the client's, the library's introspection calls
/// see it active and then, after its revocation call, inactive (and so does another client's
/// introspection).
async fn assert_full_run(app: &TestApp, client_id: &str, run: &Run) {
    let (library, alg, report) = (run.library, run.jws_alg, &run.report);
    assert_eq!(run.code, Some(0), "{library} with {alg}: {report}");
    let assertions = report["assertions"].as_array().unwrap();
    assert_eq!(
        assertions.len(),
        4,
        "token, introspection, revocation, introspection: {report}"
    );
    let mut jtis: Vec<&str> = assertions
        .iter()
        .map(|a| a["claims"]["jti"].as_str().unwrap())
        .collect();
    for assertion in assertions {
        assert_eq!(assertion["header"]["alg"], alg, "{library}: {assertion}");
        assert_eq!(assertion["header"]["kid"], run.kid.as_str(), "{library}: {assertion}");
        assert_eq!(assertion["claims"]["sub"], client_id, "{library}: {assertion}");
    }
    jtis.sort();
    jtis.dedup();
    assert_eq!(jtis.len(), 4, "a fresh jti each time");
    let access = report["token"]["access_token"].as_str().unwrap();
    let claims = app
        .verify_with_jwks(access)
        .await
        .unwrap_or_else(|| panic!("{library} with {alg}: Tessera signed the token"));
    assert_eq!(claims["client_id"], client_id, "{library} with {alg}");
    assert_eq!(claims["sub"], client_id, "{library} with {alg}");
    assert_eq!(report["introspected"]["active"], true, "{library} with {alg}: {report}");
    assert_eq!(report["introspected"]["client_id"], client_id);
    assert_eq!(
        report["introspected_after_revocation"]["active"], false,
        "{library} with {alg}: the library's revocation took: {report}"
    );
    assert_eq!(app.introspect(access).await["active"], false);
}

/// The check on a run with a key that is not the registered one: the token endpoint refuses it
/// as `invalid_client` (RFC 6749 §5.2) with a 401, and nothing was issued.
fn assert_refused(run: &Run) {
    let (library, report) = (run.library, &run.report);
    assert_eq!(run.code, Some(3), "{library} did not stop at a refusal: {report}");
    assert_eq!(report["failed_at"], "token", "{report}");
    assert_eq!(report["status"], 401, "{report}");
    assert_eq!(report["error"], "invalid_client", "{report}");
    assert!(report.get("token").is_none());
}

#[tokio::test]
async fn openid_client_authenticates_with_private_key_jwt_for_every_algorithm() {
    let app = spawn_app().await;
    for alg in ALGORITHMS {
        let key = ClientKey::generate(alg, &format!("openid-client-{alg}"));
        let client_id = register_with_keys(&app, &[&key]).await;
        let run = openid_client(&app, &client_id, &key).await;
        assert_full_run(&app, &client_id, &run).await;
    }
}

#[tokio::test]
async fn authlib_authenticates_with_private_key_jwt_for_every_algorithm() {
    let app = spawn_app().await;
    for alg in ALGORITHMS {
        let key = ClientKey::generate(alg, &format!("authlib-{alg}"));
        let client_id = register_with_keys(&app, &[&key]).await;
        let run = authlib(&app, &client_id, &key).await;
        assert_full_run(&app, &client_id, &run).await;
    }
}

#[tokio::test]
async fn openid_client_signing_with_an_unregistered_key_gets_invalid_client() {
    let app = spawn_app().await;
    let registered = ClientKey::generate("ES256", "k1");
    let client_id = register_with_keys(&app, &[&registered]).await;
    // Another key under the registered key's kid: the signature is what fails.
    let other = ClientKey::generate("ES256", "k1");
    assert_refused(&openid_client(&app, &client_id, &other).await);
    // The registered key still works: the refusal was about the key.
    let run = openid_client(&app, &client_id, &registered).await;
    assert_full_run(&app, &client_id, &run).await;
}

#[tokio::test]
async fn authlib_signing_with_an_unregistered_key_gets_invalid_client() {
    let app = spawn_app().await;
    let registered = ClientKey::generate("RS256", "k1");
    let client_id = register_with_keys(&app, &[&registered]).await;
    let other = ClientKey::generate("RS256", "k1");
    assert_refused(&authlib(&app, &client_id, &other).await);
    let run = authlib(&app, &client_id, &registered).await;
    assert_full_run(&app, &client_id, &run).await;
}

/// The operator's path: `tessera app create --jwks-file` registers a JWK Set of two keys, and
/// each library authenticates with the one it holds (found by its `kid`), given to it as a
/// private JWK.
#[tokio::test]
async fn a_client_registered_with_app_create_jwks_file_authenticates_with_either_of_its_keys() {
    let dirs = tempfile::tempdir().unwrap();
    let app = spawn_app_with(test_config(&dirs), dirs).await;
    // The CLI refuses a data folder a running server holds.
    let dirs = app.stop().await;
    let ed25519 = ClientKey::generate("EdDSA", "node").into_private_jwk();
    let ec = ClientKey::generate("ES256", "python").into_private_jwk();
    let jwks_file = dirs.path().join("jwks.json");
    let jwks = json!({"keys": [ed25519.public_jwk, ec.public_jwk]});
    std::fs::write(&jwks_file, jwks.to_string()).unwrap();
    let backend = backend_env(dirs.path());
    let env: Vec<(&str, &str)> = backend.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let output = run_tessera(
        dirs.path(),
        &[
            "app",
            "create",
            "--name",
            "Batch job",
            "--client-type",
            "confidential",
            "--grant-type",
            "client-credentials",
            "--scope",
            "read",
            "--jwks-file",
            jwks_file.to_str().unwrap(),
            "--json",
        ],
        &env,
        "",
    );
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let created: Value = serde_json::from_slice(&output.stdout).unwrap();
    assert!(created.get("client_secret").is_none(), "{created}");
    assert_eq!(created["token_endpoint_auth_method"], "private_key_jwt");
    let client_id = created["client_id"].as_str().unwrap();

    let app = spawn_app_with(test_config(&dirs), dirs).await;
    let run = openid_client(&app, client_id, &ed25519).await;
    assert_full_run(&app, client_id, &run).await;
    let run = authlib(&app, client_id, &ec).await;
    assert_full_run(&app, client_id, &run).await;
}

/// A client that publishes its keys at a `jwks_uri` (RFC 7591 §2) and rotates them: openid-client
/// authenticates with the published key, then, once the set at the URL holds only a new key,
/// with the new key at once (Tessera reads a cached set again when none of its keys verifies),
/// and no longer with the old one.
#[tokio::test]
async fn openid_client_authenticates_with_a_key_published_at_a_jwks_uri_across_a_rotation() {
    let certs = tempfile::tempdir().unwrap();
    crate::postgres::make_certificates(certs.path());
    let dirs = tempfile::tempdir().unwrap();
    let mut config = test_config(&dirs);
    // The key set is served from loopback, with a certificate from a throwaway authority.
    config.outbound.allow_private_addresses = true;
    let ca = std::fs::read(certs.path().join("ca.crt")).unwrap();
    config.outbound.extra_roots = vec![reqwest::Certificate::from_pem(&ca).unwrap()];
    // A key set is read again on demand at most once per min_ttl: a second here.
    config.documents.min_ttl = std::time::Duration::from_secs(1);
    let app = spawn_app_with(config, dirs).await;

    let old = ClientKey::generate("ES256", "2025");
    let new = ClientKey::generate("EdDSA", "2026");
    let jwks_file = certs.path().join("jwks.json");
    std::fs::write(&jwks_file, json!({"keys": [old.public_jwk]}).to_string()).unwrap();
    let mut host = tokio::process::Command::new("node")
        .arg("serve_jwks.mjs")
        .args([
            certs.path().join("server.crt"),
            certs.path().join("server.key"),
            jwks_file.clone(),
        ])
        .current_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/interop"))
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("node runs");
    let mut served = tokio::io::AsyncBufReadExt::lines(tokio::io::BufReader::new(host.stdout.take().unwrap()));
    let port = served.next_line().await.unwrap().expect("the key-set host's port");
    let jwks_uri = format!("https://127.0.0.1:{port}/jwks.json");
    let client_id = register_with(&app, json!({ "jwks_uri": jwks_uri })).await;

    let run = openid_client(&app, &client_id, &old).await;
    assert_full_run(&app, &client_id, &run).await;
    std::fs::write(&jwks_file, json!({"keys": [new.public_jwk]}).to_string()).unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    let run = openid_client(&app, &client_id, &new).await;
    assert_full_run(&app, &client_id, &run).await;
    assert_refused(&openid_client(&app, &client_id, &old).await);
    assert_eq!(
        served.next_line().await.unwrap().as_deref(),
        Some("served /jwks.json"),
        "Tessera read the set from the URL"
    );
}

/// The third registration surface: openid-client registers itself (RFC 7591) as a
/// `private_key_jwt` client with its public key inline, gets no secret, and authenticates with
/// the key at the introspection and revocation endpoints.
#[tokio::test]
async fn openid_client_registers_itself_with_its_key_and_authenticates_with_it() {
    let dirs = tempfile::tempdir().unwrap();
    let mut config = test_config(&dirs);
    config.registration.mode = tessera::config::RegistrationMode::Open;
    let app = spawn_app_with(config, dirs).await;
    let key = ClientKey::generate("ES256", "registered");
    let key_file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(key_file.path(), &key.private_file).unwrap();
    let token: Value = app.client_credentials("read").await.json().await.unwrap();
    let token = token["access_token"].as_str().unwrap();
    let output = tokio::process::Command::new("node")
        .arg("openid_client_private_key_jwt_registration.mjs")
        .arg(&app.issuer)
        .arg(key_file.path())
        .args([key.alg, &key.public_jwk.to_string(), token])
        .current_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/interop"))
        .output()
        .await
        .expect("node runs");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "openid-client's registration failed: {stderr}");
    let report: Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(report["token_endpoint_auth_method"], "private_key_jwt", "{report}");
    assert_eq!(report["client_secret"], Value::Null, "{report}");
    let client_id = report["client_id"].as_str().unwrap();
    let stored = app.store.get_client(client_id).await.unwrap().unwrap();
    assert_eq!(stored.jwks, Some(json!({"keys": [key.public_jwk]})));
    // Authenticated (a 200, not a 401), and told nothing about another client's token: a
    // client learns only about its own (RFC 7662 §4; the third review, finding 10).
    assert_eq!(report["introspected"], json!({"active": false}), "{report}");
    assert_eq!(report["revocation"], "accepted");
    // RFC 7009 §2.1: a client revokes only its own tokens; this one was another's.
    assert_eq!(app.introspect(token).await["active"], true);
}

// What the libraries send, each as one assertion signed here: the rules they showed Tessera
// had wrong, checked without Node or Python.

impl ClientKey {
    /// An assertion with this (Ed25519) key over exactly this header and these claims.
    fn sign_ed25519(&self, header: Value, claims: Value) -> String {
        assert_eq!(self.alg, "EdDSA");
        let pair = Ed25519KeyPair::from_seed_unchecked(self.d.as_ref().unwrap()).unwrap();
        let input = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(header.to_string()),
            URL_SAFE_NO_PAD.encode(claims.to_string())
        );
        let signature = URL_SAFE_NO_PAD.encode(pair.sign(input.as_bytes()));
        format!("{input}.{signature}")
    }
}

/// An assertion's claims for `client_id`: `aud`, `exp` and (if given) `iat`, a fresh `jti`.
fn claims(client_id: &str, aud: &str, iat: Option<i64>, exp: i64) -> Value {
    let mut claims = json!({
        "iss": client_id,
        "sub": client_id,
        "aud": aud,
        "exp": exp,
        "jti": tessera::oauth::random_token(16),
    });
    if let Some(iat) = iat {
        claims["iat"] = iat.into();
    }
    claims
}

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

/// POSTs `form` and the assertion to `path`; the status.
async fn post_with_assertion(app: &TestApp, path: &str, form: &[(&str, &str)], assertion: &str) -> u16 {
    let mut form = form.to_vec();
    form.push((
        "client_assertion_type",
        "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
    ));
    form.push(("client_assertion", assertion));
    let response = app.http.post(app.url(path)).form(&form).send().await.unwrap();
    response.status().as_u16()
}

const CLIENT_CREDENTIALS: [(&str, &str); 2] = [("grant_type", "client_credentials"), ("scope", "read")];

/// openid-client v6 (oauth4webapi) names an Ed25519 signature `Ed25519`, as RFC 9864 §2.2 does
/// (it deprecates `EdDSA`); Tessera refused every such assertion.
#[tokio::test]
async fn an_ed25519_assertion_may_name_its_alg_ed25519_as_rfc_9864_does() {
    let app = spawn_app().await;
    let key = ClientKey::generate("EdDSA", "ed");
    let client_id = register_with_keys(&app, &[&key]).await;
    let fresh = || claims(&client_id, &app.issuer, Some(now()), now() + 60);
    for alg in ["Ed25519", "EdDSA"] {
        let assertion = key.sign_ed25519(json!({"alg": alg, "kid": "ed"}), fresh());
        assert_eq!(
            post_with_assertion(&app, "/o/token/", &CLIENT_CREDENTIALS, &assertion).await,
            200,
            "{alg}"
        );
    }
    // The name must still be one of the key's algorithms.
    let mislabelled = key.sign_ed25519(json!({"alg": "ES256", "kid": "ed"}), fresh());
    assert_eq!(
        post_with_assertion(&app, "/o/token/", &CLIENT_CREDENTIALS, &mislabelled).await,
        401
    );
}

/// Authlib's assertions expire an hour after their `iat`, which Tessera refused (at most 300 s
/// ahead). RFC 7523 §3 lets a server refuse such an `exp`; Tessera instead accepts an assertion
/// for at most 300 s after its `iat`, and once.
#[tokio::test]
async fn an_assertion_is_accepted_at_most_300_seconds_after_its_iat_and_once() {
    let app = spawn_app().await;
    let key = ClientKey::generate("EdDSA", "ed");
    let client_id = register_with_keys(&app, &[&key]).await;
    let header = json!({"alg": "EdDSA"});
    let token = |claims| key.sign_ed25519(header.clone(), claims);
    let status = |assertion: String| {
        let app = &app;
        async move { post_with_assertion(app, "/o/token/", &CLIENT_CREDENTIALS, &assertion).await }
    };

    let hour = token(claims(&client_id, &app.issuer, Some(now()), now() + 3600));
    assert_eq!(status(hour.clone()).await, 200, "Authlib's default lifetime");
    assert_eq!(status(hour).await, 401, "RFC 7523 §3: the jti is used once");
    let old = token(claims(&client_id, &app.issuer, Some(now() - 400), now() + 3200));
    assert_eq!(status(old).await, 401, "issued more than 300 s (and the leeway) ago");
    let no_iat = token(claims(&client_id, &app.issuer, None, now() + 3600));
    assert_eq!(status(no_iat).await, 401, "without iat, exp bounds the lifetime");
    let short_no_iat = token(claims(&client_id, &app.issuer, None, now() + 60));
    assert_eq!(status(short_no_iat).await, 200);
    let expired = token(claims(&client_id, &app.issuer, Some(now() - 100), now() - 60));
    assert_eq!(status(expired).await, 401, "exp still ends it");
}

/// Authlib puts the URL of the endpoint it calls in `aud`; the metadata publishes them with a
/// trailing slash, which routing had dropped from the path Tessera compared `aud` with.
#[tokio::test]
async fn aud_may_be_the_published_url_of_the_endpoint_called() {
    let app = spawn_app().await;
    let key = ClientKey::generate("EdDSA", "ed");
    let client_id = register_with_keys(&app, &[&key]).await;
    let metadata = app.get_json("/.well-known/oauth-authorization-server").await;
    let sign = |aud: &Value| {
        key.sign_ed25519(
            json!({"alg": "EdDSA"}),
            claims(&client_id, aud.as_str().unwrap(), Some(now()), now() + 60),
        )
    };
    let token: Value = app.client_credentials("read").await.json().await.unwrap();
    let token = token["access_token"].as_str().unwrap();

    let at_introspection = sign(&metadata["introspection_endpoint"]);
    assert_eq!(
        post_with_assertion(&app, "/o/introspect/", &[("token", token)], &at_introspection).await,
        200
    );
    let at_revocation = sign(&metadata["revocation_endpoint"]);
    assert_eq!(
        post_with_assertion(&app, "/o/revoke_token/", &[("token", token)], &at_revocation).await,
        200
    );
    // Another endpoint's URL does not name this one.
    let elsewhere = sign(&metadata["introspection_endpoint"]);
    assert_eq!(
        post_with_assertion(&app, "/o/token/", &CLIENT_CREDENTIALS, &elsewhere).await,
        401
    );
    let at_token = sign(&metadata["token_endpoint"]);
    assert_eq!(
        post_with_assertion(&app, "/o/token/", &CLIENT_CREDENTIALS, &at_token).await,
        200
    );
}
