//! crates/tessera-resource/examples/resource_server.rs, started as a process beside a real Tessera,
//! called over HTTP.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

use crate::helpers::*;

/// The example binary, which `cargo test` builds beside the test binaries.
fn example_binary() -> std::path::PathBuf {
    let deps = std::env::current_exe().unwrap();
    deps.parent()
        .unwrap()
        .parent()
        .unwrap()
        .join("examples")
        .join("resource_server")
}

pub async fn start_resource_server(app: &TestApp) -> (Child, String) {
    let binary = example_binary();
    assert!(
        binary.is_file(),
        "{} is missing: cargo test builds the examples",
        binary.display()
    );
    let mut child = Command::new(binary)
        .args(["--issuer", &app.issuer, "--addr", "127.0.0.1:0"])
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let line = lines
        .next_line()
        .await
        .unwrap()
        .expect("the resource server says where it listens");
    let base = line.strip_prefix("listening on ").unwrap().to_string();
    (child, base)
}

async fn call(http: &reqwest::Client, method: reqwest::Method, url: &str, token: Option<&str>) -> reqwest::Response {
    let mut request = http.request(method, url);
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    request.send().await.unwrap()
}

fn challenge(response: &reqwest::Response) -> String {
    response.headers()["www-authenticate"].to_str().unwrap().to_string()
}

#[tokio::test]
async fn the_example_resource_server_accepts_only_valid_tokens_with_the_right_scope() {
    let app = spawn_app().await;
    let (_server, base) = start_resource_server(&app).await;
    let view = format!("{base}/api/posts/protected_view/");
    let get = reqwest::Method::GET;

    // No token: 401 with a challenge naming the realm and the metadata, and no error code.
    let none = call(&app.http, get.clone(), &view, None).await;
    assert_eq!(none.status(), 401);
    let header = challenge(&none);
    assert!(
        header.starts_with("Bearer realm=") && header.contains("resource_metadata=") && !header.contains("error="),
        "{header}"
    );

    let body: Value = app.client_credentials("read").await.json().await.unwrap();
    let token = body["access_token"].as_str().unwrap().to_string();
    let ok = call(&app.http, get.clone(), &view, Some(&token)).await;
    assert_eq!(ok.status(), 200);
    assert_eq!(ok.text().await.unwrap(), "Hello, there!!");

    // Bad tokens of every kind: 401 invalid_token.
    let (header_json, claims) = jwt_parts(&token);
    let keys = app.provider.keys.current();
    let part = |v: &Value| URL_SAFE_NO_PAD.encode(v.to_string());
    let with = |name: &str, value: Value| {
        let mut c = claims.clone();
        c[name] = value;
        keys.sign_jwt("at+jwt", &c).unwrap()
    };
    let kid = header_json["kid"].clone();
    let bad = [
        ("garbage", "garbage".to_string()),
        ("expired", with("exp", json!(tessera::now() - 600))),
        ("wrong issuer", with("iss", json!("https://evil.example"))),
        ("wrong audience", with("aud", json!("https://other-api.example"))),
        (
            "alg none",
            format!(
                "{}.{}.",
                part(&json!({"alg": "none", "typ": "at+jwt", "kid": kid})),
                part(&claims)
            ),
        ),
        (
            "HS256 with the public key",
            format!(
                "{}.{}.c2ln",
                part(&json!({"alg": "HS256", "typ": "at+jwt", "kid": kid})),
                part(&claims)
            ),
        ),
        ("wrong typ", keys.sign_jwt("JWT", &claims).unwrap()),
        ("tampered", {
            let mut parts: Vec<String> = token.split('.').map(String::from).collect();
            let mut widened = claims.clone();
            widened["scope"] = json!("read write");
            parts[1] = part(&widened);
            parts.join(".")
        }),
    ];
    for (what, bad_token) in bad {
        let response = call(&app.http, get.clone(), &view, Some(&bad_token)).await;
        assert_eq!(response.status(), 401, "{what}");
        assert!(challenge(&response).contains("error=\"invalid_token\""), "{what}");
    }

    // Enough for GET, not for POST: 403 insufficient_scope naming the scope.
    let posts = format!("{base}/api/posts/");
    assert_eq!(call(&app.http, get.clone(), &posts, Some(&token)).await.status(), 200);
    let forbidden = call(&app.http, reqwest::Method::POST, &posts, Some(&token)).await;
    assert_eq!(forbidden.status(), 403);
    let header = challenge(&forbidden);
    assert!(
        header.contains("error=\"insufficient_scope\"") && header.contains("scope=\"write\""),
        "{header}"
    );
    let writer: Value = app.client_credentials("read write").await.json().await.unwrap();
    let created = call(
        &app.http,
        reqwest::Method::POST,
        &posts,
        writer["access_token"].as_str(),
    )
    .await;
    assert_eq!(created.status(), 200);
}

#[tokio::test]
async fn the_example_publishes_protected_resource_metadata() {
    let app = spawn_app().await;
    let (_server, base) = start_resource_server(&app).await;
    let metadata: Value = app
        .http
        .get(format!("{base}/.well-known/oauth-protected-resource"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(metadata["authorization_servers"], json!([app.issuer]));
    assert_eq!(metadata["resource"], app.issuer.as_str(), "the default audience");
    assert_eq!(metadata["bearer_methods_supported"], json!(["header"]));
}

/// The runbook of keys/README.md, under load: generate a key (published, not signing), wait
/// for the resource server's JWKS cache to turn over, promote it, stop using tokens of the old
/// key (as if they had expired), retire it. Not one request may fail.
#[tokio::test]
async fn key_rotation_under_steady_load_fails_no_request() {
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
    use std::sync::Arc;
    use std::time::Duration;
    use tessera::keys::{Algorithm, Keyring};

    let dirs = tempfile::tempdir().unwrap();
    // A short JWKS max-age stands in for "wait until caches have refreshed".
    // The load comes from one client on one address, as fast as it can: no rate limits.
    let config = tessera::Config {
        jwks_max_age: Duration::from_secs(1),
        rate_limit_per_client: tessera::rate_limit::Rate::OFF,
        rate_limit_per_address: tessera::rate_limit::Rate::OFF,
        ..test_config(&dirs)
    };
    let app = Arc::new(spawn_app_with(config, dirs).await);
    let (_server, base) = start_resource_server(&app).await;
    let view = format!("{base}/api/posts/protected_view/");

    let stop = Arc::new(AtomicBool::new(false));
    let use_old_tokens = Arc::new(AtomicBool::new(true));
    let (ok, failed) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let old_token = app.client_credentials("read").await.json::<Value>().await.unwrap()["access_token"]
        .as_str()
        .unwrap()
        .to_string();
    let seen_kids = Arc::new(std::sync::Mutex::new(std::collections::HashSet::new()));
    let mut workers = Vec::new();
    for _ in 0..4 {
        let (app, view, stop, use_old, ok, failed, old, kids) = (
            app.clone(),
            view.clone(),
            stop.clone(),
            use_old_tokens.clone(),
            ok.clone(),
            failed.clone(),
            old_token.clone(),
            seen_kids.clone(),
        );
        workers.push(tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                let fresh = app.client_credentials("read").await.json::<Value>().await.unwrap()["access_token"]
                    .as_str()
                    .unwrap()
                    .to_string();
                kids.lock()
                    .unwrap()
                    .insert(jwt_parts(&fresh).0["kid"].as_str().unwrap().to_string());
                let mut tokens = vec![fresh];
                if use_old.load(Ordering::Relaxed) {
                    tokens.push(old.clone());
                }
                for token in tokens {
                    let response = call(&app.http, reqwest::Method::GET, &view, Some(&token)).await;
                    if response.status() == 200 {
                        ok.fetch_add(1, Ordering::Relaxed);
                    } else {
                        failed.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
        }));
    }

    let vault = app.key_vault().await;
    let old_kid = Keyring::open_or_init(vault.as_ref()).await.unwrap()[0].kid.clone();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let new_key = Keyring::generate(vault.as_ref(), Algorithm::ES256).await.unwrap();
    // The server reloads its keyring within 2 s; the resource server's cache turns over each second.
    tokio::time::sleep(Duration::from_millis(3500)).await;
    Keyring::promote(vault.as_ref(), &new_key.kid).await.unwrap();
    tokio::time::sleep(Duration::from_millis(3000)).await;
    use_old_tokens.store(false, Ordering::Relaxed);
    tokio::time::sleep(Duration::from_millis(300)).await;
    Keyring::retire(vault.as_ref(), &old_kid).await.unwrap();
    tokio::time::sleep(Duration::from_millis(3000)).await;
    stop.store(true, Ordering::Relaxed);
    for worker in workers {
        worker.await.unwrap();
    }

    let (ok, failed) = (ok.load(Ordering::Relaxed), failed.load(Ordering::Relaxed));
    assert_eq!(
        failed,
        0,
        "{failed} of {} requests failed during the rotation",
        ok + failed
    );
    assert!(ok > 100, "the load was steady ({ok} requests)");
    assert!(
        seen_kids.lock().unwrap().contains(&new_key.kid),
        "tokens of the new key were used and accepted"
    );
}
