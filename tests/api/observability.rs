//! /metrics (parsed by the official Prometheus Python client), /readyz and JSON log lines.

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
    assert_eq!(value(&after, "tessera_active_refresh_tokens{}"), 1.0);
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
