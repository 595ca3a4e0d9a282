//! Every malformed request gets the right RFC 6749 §5.2 error: never a 500, never a panic,
//! and nothing is written. A NUL character anywhere in any operation of the spec, or in a
//! page's form or query, is a 4xx on every backend.

use crate::helpers::*;
use serde_json::{json, Value};

async fn post_raw(app: &TestApp, content_type: &str, body: Vec<u8>) -> reqwest::Response {
    app.http
        .post(app.url("/o/token/"))
        .basic_auth(&app.client.id, app.client.secret.as_ref())
        .header("content-type", content_type)
        .body(body)
        .send()
        .await
        .unwrap()
}

async fn assert_error(response: reqwest::Response, status: u16, error: &str) {
    assert_eq!(response.status(), status);
    assert_eq!(response.headers()["cache-control"], "no-store");
    let body: Value = response.json().await.expect("a JSON error body");
    assert_eq!(body["error"], error, "{body}");
}

const FORM: &str = "application/x-www-form-urlencoded";

#[tokio::test]
async fn non_utf8_bodies_are_invalid_request() {
    let app = spawn_app().await;
    assert_error(
        post_raw(&app, FORM, b"grant_type=client_credentials&scope=%FF".to_vec()).await,
        400,
        "invalid_request",
    )
    .await;
    assert_error(
        post_raw(&app, FORM, b"grant_type=client_credentials&scope=\xff\xfe".to_vec()).await,
        400,
        "invalid_request",
    )
    .await;
}

#[tokio::test]
async fn malformed_bodies_are_invalid_request() {
    let app = spawn_app().await;
    for body in ["grant_type", "&&&", "=client_credentials", "grant_type="] {
        assert_error(post_raw(&app, FORM, body.into()).await, 400, "invalid_request").await;
    }
}

#[tokio::test]
async fn wrong_content_type_is_invalid_request() {
    let app = spawn_app().await;
    assert_error(
        post_raw(
            &app,
            "application/json",
            br#"{"grant_type":"client_credentials"}"#.to_vec(),
        )
        .await,
        400,
        "invalid_request",
    )
    .await;
    assert_error(
        post_raw(&app, "text/plain", b"grant_type=client_credentials".to_vec()).await,
        400,
        "invalid_request",
    )
    .await;
}

#[tokio::test]
async fn a_parameter_given_twice_is_invalid_request() {
    let app = spawn_app().await;
    let body = "grant_type=client_credentials&scope=read&scope=write";
    assert_error(post_raw(&app, FORM, body.into()).await, 400, "invalid_request").await;
    let body = "grant_type=client_credentials&grant_type=client_credentials";
    assert_error(post_raw(&app, FORM, body.into()).await, 400, "invalid_request").await;
}

#[tokio::test]
async fn missing_parameters_are_invalid_request() {
    let app = spawn_app().await;
    assert_error(app.token(&app.client, &[]).await, 400, "invalid_request").await;
    assert_error(
        app.token(&app.client, &[("grant_type", "authorization_code")]).await,
        400,
        "invalid_request",
    )
    .await;
    assert_error(
        app.token(&app.client, &[("grant_type", "refresh_token")]).await,
        400,
        "invalid_request",
    )
    .await;
}

#[tokio::test]
async fn an_oversized_body_is_refused_with_413() {
    let app = spawn_app().await;
    let body = format!("grant_type=client_credentials&scope={}", "a".repeat(100 * 1024));
    assert_error(post_raw(&app, FORM, body.into()).await, 413, "invalid_request").await;
}

/// A head over 32 KiB is refused with 431 and its connection closed, so a flood of huge
/// headers cannot keep hyper's large buffer per connection; a big but sane head is served.
#[tokio::test]
async fn an_oversized_head_is_refused_with_431_and_the_connection_closed() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let app = spawn_app().await;
    let addr = app.base.trim_start_matches("http://").to_string();
    let exchange = |padding: usize| {
        let addr = addr.clone();
        async move {
            let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
            let request = format!(
                "POST /o/token/ HTTP/1.1\r\nHost: x\r\nX-Padding: {}\r\nContent-Type: {FORM}\r\n\
                 Content-Length: 29\r\n\r\ngrant_type=client_credentials",
                "p".repeat(padding)
            );
            stream.write_all(request.as_bytes()).await.unwrap();
            // The server must close the connection by itself for read_to_end to return.
            let mut answer = Vec::new();
            let read = tokio::time::timeout(std::time::Duration::from_secs(5), stream.read_to_end(&mut answer)).await;
            (String::from_utf8_lossy(&answer).into_owned(), read.is_ok())
        }
    };
    let (answer, closed) = exchange(40 * 1024).await;
    assert!(answer.starts_with("HTTP/1.1 431"), "{answer}");
    assert!(answer.contains("\"error\":\"invalid_request\""), "{answer}");
    assert!(closed, "the connection is closed after a 431");
    let sane = app
        .http
        .post(app.url("/o/token/"))
        .header("X-Padding", "p".repeat(20 * 1024))
        .basic_auth(&app.client.id, app.client.secret.as_ref())
        .form(&[("grant_type", "client_credentials"), ("scope", "read")])
        .send()
        .await
        .unwrap();
    assert_eq!(sane.status(), 200, "a 20 KiB header is fine");
}

#[tokio::test]
async fn unknown_client_and_wrong_secret_are_invalid_client_with_a_challenge() {
    let app = spawn_app().await;
    let unknown = TestClient {
        id: "nobody".into(),
        secret: Some("x".into()),
    };
    let wrong = TestClient {
        id: app.client.id.clone(),
        secret: Some("not-the-secret".into()),
    };
    for client in [unknown, wrong] {
        let response = app.token(&client, &[("grant_type", "client_credentials")]).await;
        assert!(response.headers()["www-authenticate"]
            .to_str()
            .unwrap()
            .starts_with("Basic"));
        assert_error(response, 401, "invalid_client").await;
    }
    // A garbled Basic header, and no credentials at all.
    let response = app
        .http
        .post(app.url("/o/token/"))
        .header("authorization", "Basic %%%")
        .form(&[("grant_type", "client_credentials")])
        .send()
        .await
        .unwrap();
    assert_error(response, 401, "invalid_client").await;
    let response = app
        .http
        .post(app.url("/o/token/"))
        .form(&[("grant_type", "client_credentials")])
        .send()
        .await
        .unwrap();
    assert_error(response, 401, "invalid_client").await;
}

#[tokio::test]
async fn two_authentication_methods_at_once_are_invalid_request() {
    let app = spawn_app().await;
    let secret = app.client.secret.clone().unwrap();
    let response = app
        .http
        .post(app.url("/o/token/"))
        .basic_auth(&app.client.id, Some(&secret))
        .form(&[("grant_type", "client_credentials"), ("client_secret", &secret)])
        .send()
        .await
        .unwrap();
    assert_error(response, 400, "invalid_request").await;
}

#[tokio::test]
async fn garbage_refresh_token_is_invalid_grant() {
    let app = spawn_app().await;
    assert_error(app.refresh("garbage").await, 400, "invalid_grant").await;
    assert_error(app.refresh(&"\u{1F600}".repeat(1000)).await, 400, "invalid_grant").await;
}

#[tokio::test]
async fn scope_outside_the_clients_allowance_is_invalid_scope() {
    let app = spawn_app().await;
    assert_error(app.client_credentials("admin").await, 400, "invalid_scope").await;
    assert_error(app.client_credentials("read  write").await, 400, "invalid_scope").await;
}

#[tokio::test]
async fn bad_requests_write_nothing_and_break_nothing() {
    let app = spawn_app().await;
    let tokens = app.get_tokens().await;
    let clients_before = app.store.list_clients().await.unwrap().len();
    let users_before = app.store.list_users().await.unwrap().len();
    // A barrage of bad requests...
    post_raw(&app, FORM, b"grant_type=refresh_token&refresh_token=%FF".to_vec()).await;
    post_raw(
        &app,
        FORM,
        format!("grant_type=refresh_token&refresh_token={}", "x".repeat(70_000)).into(),
    )
    .await;
    post_raw(
        &app,
        FORM,
        b"grant_type=refresh_token&refresh_token=a&refresh_token=b".to_vec(),
    )
    .await;
    app.token(
        &app.client,
        &[
            ("grant_type", "refresh_token"),
            ("refresh_token", "nope"),
            ("scope", "admin"),
        ],
    )
    .await;
    // ...leaves the store as it was: the refresh token still rotates once, nothing was added.
    assert_eq!(app.store.list_clients().await.unwrap().len(), clients_before);
    assert_eq!(app.store.list_users().await.unwrap().len(), users_before);
    assert_eq!(
        app.refresh(tokens["refresh_token"].as_str().unwrap()).await.status(),
        200
    );
}

#[tokio::test]
async fn a_method_an_endpoint_does_not_have_is_405_with_allow() {
    let app = spawn_app().await;
    for (method, path, allow) in [
        ("GET", "/o/token/", "POST"),
        ("TRACE", "/.well-known/jwks.json", "GET"),
        ("PATCH", "/o/register/abc/", "GET, PUT, DELETE"),
        ("PUT", "/o/userinfo/", "GET, POST"),
    ] {
        let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
        let response = app.http.request(method.clone(), app.url(path)).send().await.unwrap();
        assert_eq!(response.status(), 405, "{method} {path}");
        let header = response.headers()["allow"].to_str().unwrap().to_string();
        let mut got: Vec<&str> = header.split(", ").collect();
        let mut want: Vec<&str> = allow.split(", ").collect();
        got.sort();
        want.sort();
        assert_eq!(got, want, "{method} {path}");
    }
}

// The third adversarial review (issue 26, `SECURITY.md`), each finding as the attack that
// found it; each test failed on the code the review ran against.

/// One request a NUL probe sends.
struct Probe {
    method: reqwest::Method,
    path: String,
    query: Vec<(String, String)>,
    form: Option<Vec<(String, String)>>,
    json: Option<Value>,
    basic: Option<(String, String)>,
    what: String,
}

/// A probe for every path parameter, query parameter, form field and JSON member of every
/// operation of the spec, and for HTTP Basic credentials where the operation takes them.
fn probes_from_the_spec(spec: &Value) -> Vec<Probe> {
    const NUL: &str = "a\u{0}b";
    let mut probes = Vec::new();
    for (path, operations) in spec["paths"].as_object().unwrap() {
        for (method, operation) in operations.as_object().unwrap() {
            let method: reqwest::Method = method.to_uppercase().parse().unwrap();
            let parameters = operation["parameters"].as_array().cloned().unwrap_or_default();
            let benign_path = parameters
                .iter()
                .filter(|p| p["in"] == "path")
                .fold(path.clone(), |p, param| {
                    p.replace(&format!("{{{}}}", param["name"].as_str().unwrap()), "x")
                });
            let probe = |what: String| Probe {
                method: method.clone(),
                path: benign_path.clone(),
                query: vec![],
                form: None,
                json: None,
                basic: None,
                what: format!("{method} {path}: {what}"),
            };
            for param in &parameters {
                let name = param["name"].as_str().unwrap();
                match param["in"].as_str() {
                    Some("path") => probes.push(Probe {
                        path: path.replace(&format!("{{{name}}}"), "a%00b"),
                        ..probe(format!("path parameter {name}"))
                    }),
                    Some("query") => probes.push(Probe {
                        query: vec![(name.into(), NUL.into())],
                        ..probe(format!("query parameter {name}"))
                    }),
                    _ => {}
                }
            }
            let content = &operation["requestBody"]["content"];
            for (media_type, body) in content.as_object().cloned().unwrap_or_default() {
                let schema = resolved(spec, &body["schema"]);
                for (name, property) in schema["properties"].as_object().cloned().unwrap_or_default() {
                    if media_type.starts_with("application/x-www-form-urlencoded") {
                        probes.push(Probe {
                            form: Some(vec![(name.clone(), NUL.into())]),
                            ..probe(format!("form field {name}"))
                        });
                    } else {
                        let value = match resolved(spec, &property)["type"].as_str() {
                            Some("array") => json!([NUL]),
                            _ => json!(NUL),
                        };
                        probes.push(Probe {
                            json: Some(json!({ name.clone(): value })),
                            ..probe(format!("JSON member {name}"))
                        });
                    }
                }
            }
            let basic = operation["security"]
                .as_array()
                .is_some_and(|s| s.iter().any(|s| s.get("clientSecretBasic").is_some()));
            if basic {
                probes.push(Probe {
                    basic: Some((NUL.into(), "secret".into())),
                    form: Some(vec![
                        ("token".into(), "x".into()),
                        ("grant_type".into(), "client_credentials".into()),
                    ]),
                    ..probe("HTTP Basic client id".into())
                });
            }
        }
    }
    probes
}

/// Finding 7: on PostgreSQL (which cannot store a NUL in text) a NUL in a client id was a 500
/// at the token, authorize, device, PAR, revocation, introspection (Basic), logout, registration
/// and admin endpoints and two pages; only the console refused it. Now the request edge refuses
/// a NUL in the path, the query, a form or a JSON body, Basic credentials with one are nobody's,
/// and PostgreSQL's refusal is a 400 below that: a 4xx everywhere, on both backends (the suite
/// runs this on each).
#[tokio::test]
async fn a_nul_character_anywhere_in_any_operation_is_a_4xx_on_every_backend() {
    let app = spawn_app().await;
    let (_, admin_token) = app.admin_bearer().await;
    assert_eq!(app.log_in("/o/login/", USERNAME, PASSWORD).await.status(), 303);
    let spec = committed_spec();
    let mut probes = probes_from_the_spec(&spec);
    assert!(probes.len() > 80, "{} probes", probes.len());
    // What the spec cannot list: the UserInfo form, and the pages.
    let page = |method: reqwest::Method, path: &str, query: &[(&str, &str)], form: &[(&str, &str)]| Probe {
        method: method.clone(),
        path: path.into(),
        query: query.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
        form: (!form.is_empty()).then(|| form.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()),
        json: None,
        basic: None,
        what: format!("{method} {path} {query:?} {form:?}"),
    };
    use reqwest::Method;
    let nul = "a\u{0}b";
    probes.extend([
        page(Method::POST, "/o/userinfo/", &[], &[("access_token", nul)]),
        page(
            Method::GET,
            "/o/authorize/",
            &[("client_id", nul), ("response_type", "code")],
            &[],
        ),
        page(Method::GET, "/o/logout/", &[("client_id", nul)], &[]),
        page(Method::GET, "/o/device/", &[("user_code", nul)], &[]),
        page(Method::GET, "/o/applications/a%00b/", &[], &[]),
        page(Method::GET, "/o/applications/a%00b/edit/", &[], &[]),
        page(
            Method::POST,
            "/o/authorized_tokens/",
            &[],
            &[("client_id", nul), ("csrf_token", "x")],
        ),
        page(
            Method::POST,
            "/o/login/",
            &[],
            &[("username", nul), ("password", "x"), ("csrf_token", "x")],
        ),
        page(Method::GET, "/admin/clients/a%00b", &[], &[]),
        page(Method::GET, "/admin/users/a%00b", &[], &[]),
    ]);
    let mut failures = Vec::new();
    for probe in &probes {
        let mut url = app.url(&probe.path);
        if !probe.query.is_empty() {
            let query: Vec<String> = probe
                .query
                .iter()
                .map(|(k, v)| format!("{k}={}", v.replace('\u{0}', "%00")))
                .collect();
            url = format!("{url}?{}", query.join("&"));
        }
        let mut request = app.http.request(probe.method.clone(), &url);
        if probe.path.starts_with("/api/") {
            request = request.bearer_auth(&admin_token);
        }
        if let Some((id, secret)) = &probe.basic {
            request = request.basic_auth(id.replace('\u{0}', "%00"), Some(secret));
        }
        if let Some(form) = &probe.form {
            request = request.form(form);
        }
        if let Some(json) = &probe.json {
            request = request.json(json);
        }
        let response = request.send().await.unwrap();
        let status = response.status().as_u16();
        let body = response.text().await.unwrap_or_default();
        if !(400..500).contains(&status) {
            failures.push(format!(
                "{}: {status} {}",
                probe.what,
                body.chars().take(200).collect::<String>()
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} probes:\n{}",
        failures.len(),
        probes.len(),
        failures.join("\n")
    );
}
