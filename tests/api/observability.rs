//! /metrics (parsed by the official Prometheus Python client), /readyz, JSON log lines, and no
//! secret, token, code or password in any log line.

use std::collections::BTreeMap;
use std::io::Write;
use std::process::{Command, Stdio};

use serde_json::Value;

use crate::helpers::*;

/// The samples of a /metrics scrape, as Prometheus' own parser reads them: name and sorted
/// labels -> value.
async fn scrape(app: &TestApp) -> BTreeMap<String, f64> {
    let response = app.http.get(app.url("/metrics")).send().await.unwrap();
    assert_eq!(response.status(), 200);
    assert!(response.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/plain"));
    let text = response.text().await.unwrap();
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/interop/prometheus_parse.py");
    let mut child = Command::new("python3")
        .arg(script)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(text.as_bytes()).unwrap();
    let output = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        !stderr.contains("ModuleNotFoundError"),
        "prometheus-client is not installed (pip install -r tests/requirements.txt): {stderr}"
    );
    assert!(
        output.status.success(),
        "the Prometheus parser rejected /metrics: {stderr}\n{text}"
    );
    let samples: Vec<Value> = serde_json::from_slice(&output.stdout).unwrap();
    samples
        .iter()
        .map(|s| {
            let labels: BTreeMap<String, String> = serde_json::from_value(s["labels"].clone()).unwrap();
            let labels: Vec<String> = labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
            (
                format!("{}{{{}}}", s["name"].as_str().unwrap(), labels.join(",")),
                s["value"].as_f64().unwrap(),
            )
        })
        .collect()
}

fn value(samples: &BTreeMap<String, f64>, key: &str) -> f64 {
    samples.get(key).copied().unwrap_or(0.0)
}

#[tokio::test]
async fn metrics_parse_as_prometheus_text_and_move_when_tokens_are_issued() {
    let app = spawn_app().await;
    let before = scrape(&app).await;
    assert!(value(&before, "tessera_signing_key_age_seconds{}") >= 0.0);

    assert_eq!(app.client_credentials("read").await.status(), 200);
    let bad = app
        .token(
            &app.client,
            &[("grant_type", "refresh_token"), ("refresh_token", "nope")],
        )
        .await;
    assert_eq!(bad.status(), 400);
    let tokens = app.get_tokens().await;
    assert!(tokens["refresh_token"].is_string());

    let after = scrape(&app).await;
    let issued = |s: &BTreeMap<String, f64>, grant: &str| {
        value(s, &format!("tessera_tokens_issued_total{{grant_type={grant}}}"))
    };
    assert_eq!(
        issued(&after, "client_credentials") - issued(&before, "client_credentials"),
        1.0
    );
    assert_eq!(
        issued(&after, "authorization_code") - issued(&before, "authorization_code"),
        1.0
    );
    let errors = |s: &BTreeMap<String, f64>| value(s, "tessera_oauth_errors_total{error=invalid_grant}");
    assert_eq!(errors(&after) - errors(&before), 1.0);
    let ok_tokens =
        |s: &BTreeMap<String, f64>| value(s, "tessera_http_requests_total{method=POST,route=/o/token,status=200}");
    assert_eq!(ok_tokens(&after) - ok_tokens(&before), 2.0);
    // A background count, reused for 99 times what the last one took (CostlyCount): on a
    // loaded machine the scrape before may have taken one that is still fresh enough.
    let mut active = value(&after, "tessera_active_refresh_tokens{}");
    for _ in 0..50 {
        if active == 1.0 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        active = value(&scrape(&app).await, "tessera_active_refresh_tokens{}");
    }
    assert_eq!(active, 1.0, "the gauge counts the refresh token issued");
    assert!(
        value(&after, "tessera_http_request_duration_seconds_count{route=/o/token}") >= 3.0,
        "latency is observed per route"
    );
    // The label values are route templates, whatever path was asked for.
    app.http.get(app.url("/no/such/path/12345")).send().await.unwrap();
    let scraped = scrape(&app).await;
    assert!(scraped.keys().all(|k| !k.contains("12345")));
}

#[tokio::test]
async fn readiness_checks_the_store_and_the_signing_key() {
    let app = spawn_app().await;
    let response = app.http.get(app.url("/readyz")).send().await.unwrap();
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["status"], "ready");
    assert_eq!(body["store"], "ok");
    assert_eq!(body["signing_key"], "ok");
    assert_eq!(app.get_json("/healthz").await["status"], "ok");
}

#[test]
fn serve_can_log_one_json_object_per_line() {
    let dir = tempfile::tempdir().unwrap();
    let server = ServerProcess::start(dir.path(), &["--log-format", "json"], &[("RUST_LOG", "info")]);
    let fetch = Command::new("python3")
        .args([
            "-c",
            &format!(
                "import urllib.request;urllib.request.urlopen('{}/healthz').read()",
                server.base
            ),
        ])
        .status()
        .unwrap();
    assert!(fetch.success());
    let lines: Vec<Value> = server
        .terminate()
        .lines()
        .map(|line| serde_json::from_str(line).unwrap_or_else(|_| panic!("not JSON: {line}")))
        .collect();
    assert!(lines[0]["addr"].is_string(), "the first line names the address");
    let request = lines
        .iter()
        .find(|line| line["message"] == "request")
        .expect("a request line");
    assert_eq!(request["path"], "/healthz");
    assert_eq!(request["status"], 200);
    assert_eq!(request["level"], "INFO");
}

/// `tessera_open_connections` follows connections as they open and close, so an operator can
/// see how close the server is to `max_connections`.
#[tokio::test]
async fn the_open_connections_gauge_follows_connections() {
    let app = spawn_app().await;
    let open = |s: &BTreeMap<String, f64>| value(s, "tessera_open_connections{}");
    let before = open(&scrape(&app).await);
    assert!(before >= 1.0, "the scrape's own connection is open: {before}");
    let addr = app.base.trim_start_matches("http://").to_string();
    let mut extra = Vec::new();
    for _ in 0..3 {
        extra.push(tokio::net::TcpStream::connect(&addr).await.unwrap());
    }
    // Accepting is asynchronous: wait until the server has taken all three.
    let mut seen = before;
    for _ in 0..50 {
        seen = open(&scrape(&app).await);
        if seen >= before + 3.0 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert_eq!(seen, before + 3.0);
    drop(extra);
    for _ in 0..50 {
        seen = open(&scrape(&app).await);
        if seen == before {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert_eq!(seen, before, "closed connections are counted out");
}

/// Starts the real binary with debug logging on a fresh data folder, runs a full session
/// against it (CLI, a failed and a good login, the code flow through Authlib, refresh,
/// client_credentials with the secret in the form, introspection, UserInfo, revocation), and
/// checks that no secret, token, code, password or session id it used appears in any log line.
#[tokio::test]
async fn no_secret_token_code_or_password_reaches_the_logs() {
    let dir = tempfile::tempdir().unwrap();
    let cli = |args: &[&str], stdin: &str| run_tessera_traced(dir.path(), args, stdin);
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
        "",
    );
    logs += &err;
    let app: Value = serde_json::from_str(&out).unwrap();
    let (client_id, secret) = (
        app["client_id"].as_str().unwrap(),
        app["client_secret"].as_str().unwrap(),
    );
    logs += &cli(
        &["user", "create", "--username", "logan", "--password-stdin"],
        &format!("{PASSWORD}\n"),
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
