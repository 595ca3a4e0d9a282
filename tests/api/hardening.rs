//! Hardening: the store does not grow with every token ever issued, concurrent use of one
//! credential succeeds exactly once, and secrets never reach the logs.

use std::sync::Arc;
use std::time::Duration;
use tessera::oauth::audit::Caller;

use serde_json::Value;

use crate::helpers::*;

async fn wait_for_count(app: &TestApp, expected: u64) -> u64 {
    let mut count = 0;
    for _ in 0..50 {
        count = app.store.record_count().await.unwrap();
        if count == expected {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    count
}

#[tokio::test]
async fn expired_records_are_purged_so_the_store_stays_flat_over_many_cycles() {
    let dirs = tempfile::tempdir().unwrap();
    let config = tessera::Config {
        access_token_ttl: Duration::from_secs(2),
        refresh_token_ttl: Duration::from_secs(2),
        // Two seconds, not one: a token must outlive its use right after it is issued, even on
        // a loaded machine (expiry is counted in whole seconds, so a one-second lifetime can
        // be over within milliseconds).
        code_ttl: Duration::from_secs(2),
        session_ttl: Duration::from_secs(2),
        purge_interval: Duration::from_secs(1),
        ..test_config(&dirs)
    };
    let app = spawn_app_with(config, dirs).await;
    let mut after_purge = Vec::new();
    for cycle in 0..4 {
        for _ in 0..5 {
            let tokens = app.get_tokens().await;
            let refreshed = app.refresh(tokens["refresh_token"].as_str().unwrap()).await;
            assert_eq!(refreshed.status(), 200);
            let cc: Value = app.client_credentials("read").await.json().await.unwrap();
            assert_eq!(
                app.revoke(cc["access_token"].as_str().unwrap(), None).await.status(),
                200
            );
        }
        let filled = app.store.record_count().await.unwrap();
        // Everything issued expires within two seconds, and the last access token a second
        // or two later still; the background purge runs every second.
        tokio::time::sleep(Duration::from_millis(5000)).await;
        let baseline = after_purge.first().copied().unwrap_or(0);
        let count = if cycle == 0 {
            app.store.record_count().await.unwrap()
        } else {
            wait_for_count(&app, baseline).await
        };
        assert!(
            count < filled,
            "cycle {cycle}: the purge removed records ({filled} -> {count})"
        );
        after_purge.push(count);
    }
    assert!(
        after_purge.windows(2).all(|w| w[1] <= w[0]),
        "the store stays flat: {after_purge:?}"
    );
    // What remains is what lasts: clients, the user, the remembered consent.
    // (The embedded store indexes usernames in a record of their own.)
    let user_records = if on_postgres() { 1 } else { 2 };
    let lasting = app.store.list_clients().await.unwrap().len() as u64 + user_records + 1 /* consent */;
    assert_eq!(*after_purge.last().unwrap(), lasting, "{after_purge:?}");
}

#[tokio::test]
async fn a_purge_keeps_everything_still_usable() {
    let app = spawn_app().await;
    let tokens = app.get_tokens().await;
    let before = app.store.record_count().await.unwrap();
    let purged = app.provider.purge_expired().await.unwrap();
    assert_eq!(purged.total(), 0, "{purged:?}");
    assert_eq!(app.store.record_count().await.unwrap(), before);
    assert_eq!(
        app.introspect(tokens["access_token"].as_str().unwrap()).await["active"],
        true
    );
    assert_eq!(
        app.refresh(tokens["refresh_token"].as_str().unwrap()).await.status(),
        200
    );
}

/// Sends `n` copies of one token request at once (on a multi-threaded runtime, so the server
/// really handles them in parallel) and returns the statuses.
async fn all_at_once(app: &Arc<TestApp>, n: usize, form: Vec<(&'static str, String)>) -> Vec<u16> {
    let mut set = tokio::task::JoinSet::new();
    for _ in 0..n {
        let (app, form) = (app.clone(), form.clone());
        set.spawn(async move {
            let form: Vec<(&str, &str)> = form.iter().map(|(k, v)| (*k, v.as_str())).collect();
            app.token(&app.client, &form).await.status().as_u16()
        });
    }
    set.join_all().await
}

/// The `tessera_tokens_signed_total` counter for `kind`, as `/metrics` shows it.
async fn tokens_signed(app: &TestApp, kind: &str) -> u64 {
    let text = app.get_text("/metrics").await;
    let prefix = format!("tessera_tokens_signed_total{{kind=\"{kind}\"}} ");
    text.lines()
        .find_map(|line| line.strip_prefix(&prefix))
        .map_or(0, |n| n.trim().parse().unwrap())
}

/// Also: the losers of a refresh race sign nothing (the grant rotates first and signs after),
/// so 16 uses of one token cost exactly one access token's signature.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn many_concurrent_uses_of_one_refresh_token_or_code_succeed_exactly_once() {
    let app = Arc::new(spawn_app().await);
    for _ in 0..3 {
        let tokens = app.get_tokens().await;
        let refresh = tokens["refresh_token"].as_str().unwrap().to_string();
        let signed_before = tokens_signed(&app, "access_token").await;
        let statuses = all_at_once(
            &app,
            16,
            vec![("grant_type", "refresh_token".into()), ("refresh_token", refresh)],
        )
        .await;
        assert_eq!(
            statuses.iter().filter(|s| **s == 200).count(),
            1,
            "one rotation wins: {statuses:?}"
        );
        assert!(statuses.iter().all(|s| *s == 200 || *s == 400), "{statuses:?}");
        assert_eq!(
            tokens_signed(&app, "access_token").await - signed_before,
            1,
            "only the winner signed"
        );

        let (code, pkce) = app.get_code().await;
        let form = vec![
            ("grant_type", "authorization_code".to_string()),
            ("code", code),
            ("redirect_uri", REDIRECT_URI.to_string()),
            ("code_verifier", pkce.verifier),
        ];
        let statuses = all_at_once(&app, 16, form).await;
        assert_eq!(
            statuses.iter().filter(|s| **s == 200).count(),
            1,
            "one exchange wins: {statuses:?}"
        );
        assert!(statuses.iter().all(|s| *s == 200 || *s == 400), "{statuses:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn rotating_a_secret_under_load_switches_from_old_to_new_at_one_point() {
    let app = Arc::new(spawn_app().await);
    let old = app.client.clone();
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    // Steady client_credentials traffic with the old secret while the secret rotates.
    let hammer = {
        let (app, old, stop) = (app.clone(), old.clone(), stop.clone());
        tokio::spawn(async move {
            let mut log = Vec::new();
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let sent = std::time::Instant::now();
                let status = app.client_credentials_as(&old, "read").await.status().as_u16();
                log.push((sent, std::time::Instant::now(), status));
            }
            log
        })
    };
    tokio::time::sleep(Duration::from_millis(200)).await;
    let rotation_started = std::time::Instant::now();
    let secret = app
        .provider
        .rotate_client_secret(&Caller::system(), &old.id)
        .await
        .unwrap();
    let rotated = std::time::Instant::now();
    let new = TestClient {
        id: old.id.clone(),
        secret: Some(secret),
    };
    assert_eq!(
        app.client_credentials_as(&new, "read").await.status(),
        200,
        "the new secret works at once"
    );
    tokio::time::sleep(Duration::from_millis(200)).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let log = hammer.await.unwrap();
    assert!(
        log.iter().all(|(_, _, s)| *s == 200 || *s == 401),
        "only success or invalid_client"
    );
    // The old secret worked for every request answered before the rotation began, and for
    // none sent after it finished.
    assert!(log
        .iter()
        .filter(|(_, answered, _)| *answered < rotation_started)
        .all(|(_, _, s)| *s == 200));
    let after: Vec<_> = log.iter().filter(|(sent, _, _)| *sent > rotated).collect();
    assert!(
        !after.is_empty() && after.iter().all(|(_, _, s)| *s == 401),
        "the old secret is dead at once"
    );
}

/// Starts the real binary with debug logging on a fresh data folder, runs a full session
/// against it (CLI, a failed and a good login, the code flow through Authlib, refresh,
/// client_credentials with the secret in the form, introspection, UserInfo, revocation), and
/// checks that no secret, token, code, password or session id it used appears in any log line.
#[tokio::test]
async fn no_secret_token_code_or_password_reaches_the_logs() {
    use std::process::{Command, Stdio};
    let dir = tempfile::tempdir().unwrap();
    let bin = env!("CARGO_BIN_EXE_tessera");
    let cli = |args: &[&str], stdin: Option<&str>| {
        let mut child = Command::new(bin)
            .args(args)
            .current_dir(dir.path())
            .env("RUST_LOG", "trace")
            .env_remove("TESSERA_DATA_DIR")
            .env_remove("TESSERA_KEYS_DIR")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        if let Some(input) = stdin {
            use std::io::Write;
            child.stdin.take().unwrap().write_all(input.as_bytes()).unwrap();
        }
        drop(child.stdin.take());
        let out = child.wait_with_output().unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        (
            String::from_utf8(out.stdout).unwrap(),
            String::from_utf8(out.stderr).unwrap(),
        )
    };
    let mut logs = String::new();
    let (out, err) = cli(
        &[
            "app",
            "create",
            "--name",
            "Logged",
            "--client-type",
            "confidential",
            "--grant-type",
            "authorization-code",
            "--grant-type",
            "refresh-token",
            "--grant-type",
            "client-credentials",
            "--redirect-uri",
            REDIRECT_URI,
            "--json",
        ],
        None,
    );
    logs += &err;
    let app: Value = serde_json::from_str(&out).unwrap();
    let (client_id, secret) = (
        app["client_id"].as_str().unwrap(),
        app["client_secret"].as_str().unwrap(),
    );
    logs += &cli(
        &["user", "create", "--username", "logan", "--password-stdin"],
        Some(&format!("{PASSWORD}\n")),
    )
    .1;

    let server = ServerProcess::start(dir.path(), &[], &[("RUST_LOG", "trace")]);
    let base = server.base.clone();
    let http = reqwest::Client::new();

    // A failed login: the wrong password must not be logged either.
    let wrong_password = "wrong horse battery staple";
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/interop/authlib_code_flow.py");
    let failed = tokio::process::Command::new("python3")
        .args([script, &base, client_id, secret, REDIRECT_URI, "logan", wrong_password])
        .output()
        .await
        .unwrap();
    assert!(!failed.status.success(), "the wrong password does not log in");
    let flow = tokio::process::Command::new("python3")
        .args([script, &base, client_id, secret, REDIRECT_URI, "logan", PASSWORD])
        .output()
        .await
        .unwrap();
    assert!(flow.status.success(), "{}", String::from_utf8_lossy(&flow.stderr));
    let flow: Value = serde_json::from_slice(&flow.stdout).unwrap();
    let cc: Value = http
        .post(format!("{base}/o/token/"))
        .form(&[
            ("grant_type", "client_credentials"),
            ("client_id", client_id),
            ("client_secret", secret),
            ("scope", "read"),
        ])
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let cc_token = cc["access_token"].as_str().unwrap();
    let refreshed_access = flow["refreshed"]["access_token"].as_str().unwrap();
    for (path, token) in [("/o/introspect/", refreshed_access), ("/o/revoke_token/", cc_token)] {
        let status = http
            .post(format!("{base}{path}"))
            .basic_auth(client_id, Some(secret))
            .form(&[("token", token)])
            .send()
            .await
            .unwrap()
            .status();
        assert_eq!(status, 200);
    }
    http.get(format!("{base}/o/userinfo/"))
        .bearer_auth(refreshed_access)
        .send()
        .await
        .unwrap();
    logs += &server.terminate();
    assert!(logs.contains("request"), "the logs were captured:\n{logs}");

    let mut secrets = vec![
        ("client secret", secret.to_string()),
        ("password", PASSWORD.to_string()),
        ("wrong password", wrong_password.to_string()),
        ("code", flow["code"].as_str().unwrap().to_string()),
        ("client_credentials token", cc_token.to_string()),
    ];
    for step in ["first", "refreshed"] {
        for field in ["access_token", "refresh_token"] {
            secrets.push((field, flow[step][field].as_str().unwrap().to_string()));
        }
    }
    // HTTP Basic carries the secret base64-encoded.
    use base64::Engine;
    let basic = base64::engine::general_purpose::STANDARD.encode(format!("{client_id}:{secret}"));
    secrets.push(("Basic credentials", basic));
    if let Some(session) = flow["session"].as_str() {
        secrets.push(("session cookie", session.to_string()));
    }
    for (what, value) in &secrets {
        // A JWT's signature alone is enough to find it; opaque values are searched whole.
        let needle = value.rsplit('.').next().unwrap();
        assert!(!logs.contains(needle), "the {what} appears in the logs");
    }
}

#[tokio::test]
async fn a_client_over_its_rate_gets_429_with_retry_after_and_others_are_unaffected() {
    use tessera::rate_limit::Rate;
    let dirs = tempfile::tempdir().unwrap();
    let config = tessera::Config {
        rate_limit_per_client: Rate {
            per_second: 1.0,
            burst: 3.0,
        },
        rate_limit_per_address: Rate::OFF,
        ..test_config(&dirs)
    };
    let app = spawn_app_with(config, dirs).await;
    for _ in 0..3 {
        assert_eq!(app.client_credentials("read").await.status(), 200);
    }
    let limited = app.client_credentials("read").await;
    assert_eq!(limited.status(), 429);
    let wait: u64 = limited.headers()["retry-after"].to_str().unwrap().parse().unwrap();
    assert!((1..=2).contains(&wait));
    assert_eq!(limited.json::<Value>().await.unwrap()["error"], "rate_limited");
    // Another client, same address: its own bucket.
    let other = app.register_relying_party(None, None).await;
    let other_cc = app.token(&other, &[("grant_type", "client_credentials")]).await;
    assert_ne!(other_cc.status(), 429);
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert_eq!(app.client_credentials("read").await.status(), 200, "the bucket refills");
}

#[tokio::test]
async fn an_address_over_its_rate_gets_429_before_any_work_is_done() {
    use tessera::rate_limit::Rate;
    let dirs = tempfile::tempdir().unwrap();
    let config = tessera::Config {
        rate_limit_per_address: Rate {
            per_second: 1.0,
            burst: 3.0,
        },
        ..test_config(&dirs)
    };
    let app = spawn_app_with(config, dirs).await;
    let garbage = TestClient {
        id: "nobody".into(),
        secret: Some("wrong".into()),
    };
    for _ in 0..3 {
        assert_eq!(app.client_credentials_as(&garbage, "read").await.status(), 401);
    }
    let limited = app.client_credentials_as(&garbage, "read").await;
    assert_eq!(limited.status(), 429);
    assert!(limited.headers().contains_key("retry-after"));
    // The flood is cut off at the address: the login form is limited too, reads are not.
    let login = app
        .http
        .post(app.url("/o/login/"))
        .form(&[("username", "x")])
        .send()
        .await
        .unwrap();
    assert_eq!(login.status(), 429);
    let registration = app
        .http
        .post(app.url("/o/register/"))
        .json(&serde_json::json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(
        registration.status(),
        429,
        "registration is limited too (and documents it)"
    );
    assert_eq!(
        app.http
            .get(app.url("/.well-known/jwks.json"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
}

/// `max_connections` bounds what a flood of connections (each may hold a ~400 KB request head)
/// can take: at the cap a new connection waits, unserved, until one closes. `idle_timeout`
/// closes connections that send nothing.
#[tokio::test]
async fn connections_beyond_the_cap_wait_for_a_free_slot_and_idle_ones_are_closed() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpStream;
    let dirs = tempfile::tempdir().unwrap();
    let config = tessera::Config {
        max_connections: 2,
        idle_timeout: Duration::from_secs(3),
        ..test_config(&dirs)
    };
    let app = spawn_app_with(config, dirs).await;
    let addr = app.base.trim_start_matches("http://").to_string();
    let first = TcpStream::connect(&addr).await.unwrap();
    let mut second = TcpStream::connect(&addr).await.unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    let mut third = TcpStream::connect(&addr).await.unwrap();
    third
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut answer = Vec::new();
    let waited = tokio::time::timeout(Duration::from_millis(500), third.read_to_end(&mut answer)).await;
    assert!(waited.is_err(), "a connection over the cap is not served: {answer:?}");
    drop(first);
    tokio::time::timeout(Duration::from_secs(5), third.read_to_end(&mut answer))
        .await
        .expect("a freed slot lets the waiting connection in")
        .unwrap();
    assert!(
        answer.starts_with(b"HTTP/1.1 200"),
        "{}",
        String::from_utf8_lossy(&answer)
    );
    // The second connection never sent a byte: the idle timeout closes it.
    let mut rest = Vec::new();
    let closed = tokio::time::timeout(Duration::from_secs(10), second.read_to_end(&mut rest)).await;
    assert_eq!(closed.expect("an idle connection is closed").unwrap(), 0);
}

/// Behind a trusted reverse proxy each client has its own budget (the nearest untrusted
/// `X-Forwarded-For` hop); from anyone else the header is ignored, so it cannot be used to
/// dodge the limit.
#[tokio::test]
async fn behind_a_trusted_proxy_the_forwarded_address_is_limited_and_elsewhere_the_header_is_ignored() {
    use tessera::rate_limit::Rate;
    let limited_app = |trusted: &[&str]| {
        let dirs = tempfile::tempdir().unwrap();
        let config = tessera::Config {
            rate_limit_per_address: Rate {
                per_second: 0.01,
                burst: 2.0,
            },
            trusted_proxies: trusted.iter().map(|t| t.parse().unwrap()).collect(),
            ..test_config(&dirs)
        };
        spawn_app_with(config, dirs)
    };
    let revoke_from = |app: &TestApp, forwarded: &str| {
        app.http
            .post(app.url("/o/revoke_token/"))
            .header("X-Forwarded-For", forwarded)
            .basic_auth(&app.client.id, app.client.secret.as_ref())
            .form(&[("token", "whatever")])
            .send()
    };
    // The tests connect from 127.0.0.1: here that is the proxy.
    let proxied = limited_app(&["127.0.0.0/8"]).await;
    for _ in 0..2 {
        assert_eq!(revoke_from(&proxied, "203.0.113.1").await.unwrap().status(), 200);
    }
    assert_eq!(revoke_from(&proxied, "203.0.113.1").await.unwrap().status(), 429);
    // A forged entry on the left does not help: the proxy appended the real address.
    let forged = revoke_from(&proxied, "198.51.100.99, 203.0.113.1").await.unwrap();
    assert_eq!(forged.status(), 429);
    assert_eq!(
        revoke_from(&proxied, "203.0.113.2").await.unwrap().status(),
        200,
        "another client"
    );

    let direct = limited_app(&[]).await;
    for _ in 0..2 {
        assert_eq!(revoke_from(&direct, "203.0.113.1").await.unwrap().status(), 200);
    }
    let spoofed = revoke_from(&direct, "203.0.113.2").await.unwrap();
    assert_eq!(spoofed.status(), 429, "an untrusted peer's X-Forwarded-For is ignored");
}
