//! The built-in test consumer at /o/playground/, over HTTP.

use crate::helpers::*;
use tessera::oauth::audit::Caller;

fn between<'a>(html: &'a str, start: &str, end: &str) -> Option<&'a str> {
    let from = html.find(start)? + start.len();
    Some(&html[from..from + html[from..].find(end)?])
}

/// A server with the playground on, and the test user logged in. The playground may call
/// loopback addresses here (as in development), where the tests' APIs run.
async fn playground_app() -> TestApp {
    playground_app_with(|config| config.outbound.allow_private_addresses = true).await
}

async fn playground_app_with(adjust: impl FnOnce(&mut tessera::Config)) -> TestApp {
    let dirs = tempfile::tempdir().unwrap();
    let mut config = tessera::Config {
        playground: true,
        ..test_config(&dirs)
    };
    adjust(&mut config);
    let app = spawn_app_with(config, dirs).await;
    assert_eq!(app.log_in("/o/login/", USERNAME, PASSWORD).await.status(), 303);
    app
}

fn unescape(html: &str) -> String {
    html.replace("&amp;", "&")
        .replace("&#x2f;", "/")
        .replace("&quot;", "\"")
}

#[tokio::test]
async fn the_playground_is_off_unless_enabled() {
    let app = spawn_app().await;
    app.log_in("/o/login/", USERNAME, PASSWORD).await;
    assert_eq!(
        app.http.get(app.url("/o/playground/")).send().await.unwrap().status(),
        404
    );
}

/// Walks the playground through the code flow for a new app of the test user's; returns the
/// page it ends on and the access token it shows.
async fn tokens_in_playground(app: &TestApp) -> (String, String) {
    let user = app.store.get_user_by_name(USERNAME).await.unwrap().unwrap();
    let (client, secret) = app
        .provider
        .register_client(
            &Caller::system(),
            tessera::oauth::client::NewClient {
                name: "Tried in the playground".into(),
                client_type: tessera::store::ClientType::Confidential,
                grant_types: vec![
                    tessera::store::GrantType::AuthorizationCode,
                    tessera::store::GrantType::RefreshToken,
                ],
                redirect_uris: vec![format!("{}/o/playground/callback/", app.issuer)],
                scope: "read".into(),
                resources: vec![],
                access_token_ttl: None,
                refresh_token_ttl: None,
                skip_consent: false,
                owner_user_id: Some(user.user_id),
                post_logout_redirect_uris: vec![],
                id_token_signed_response_alg: None,
                admin: false,
                keys: None,
                policy: Default::default(),
            },
        )
        .await
        .unwrap();

    let page = app.get_text("/o/playground/").await;
    assert!(page.contains("Tried in the playground"), "your apps can be picked");
    let csrf = hidden_input(&page, "csrf_token").unwrap();
    let secret = secret.unwrap();
    let start = [
        ("csrf_token", csrf.as_str()),
        ("action", "start"),
        ("client_id", &client.client_id),
        ("client_secret", &secret),
        ("scope", "read"),
    ];
    assert_eq!(
        app.http
            .post(app.url("/o/playground/"))
            .form(&start)
            .send()
            .await
            .unwrap()
            .status(),
        303
    );

    let page = app.get_text("/o/playground/").await;
    let link = unescape(between(&page, "id=\"authorize-link\" href=\"", "\"").expect("an authorization link"));
    assert!(link.contains("code_challenge_method=S256") && link.contains("state="));
    let consent = app.http.get(&link).send().await.unwrap().text().await.unwrap();
    let csrf_consent = hidden_input(&consent, "csrf_token").unwrap();
    let decision = app
        .http
        .post(&link)
        .form(&[("csrf_token", csrf_consent.as_str()), ("decision", "allow")])
        .send()
        .await
        .unwrap();
    let callback = location(&decision);
    assert!(callback.starts_with(&format!("{}/o/playground/callback/", app.issuer)));
    assert_eq!(app.http.get(&callback).send().await.unwrap().status(), 303);

    let page = app.get_text("/o/playground/").await;
    let access = between(&page, "<code id=\"access-token\">", "<")
        .expect("the access token is shown")
        .to_string();
    assert!(app.verify_with_jwks(&access).await.is_some());
    let claims = unescape(between(&page, "<pre id=\"claims\">", "</pre>").unwrap());
    assert!(claims.contains(&client.client_id), "decoded claims are shown: {claims}");
    (page, access)
}

#[tokio::test]
async fn the_playground_walks_the_code_flow_refreshes_and_calls_an_api() {
    let app = playground_app().await;
    let (page, _) = tokens_in_playground(&app).await;
    let refresh = between(&page, "<code id=\"refresh-token\">", "<").unwrap().to_string();

    let csrf = hidden_input(&page, "csrf_token").unwrap();
    app.http
        .post(app.url("/o/playground/"))
        .form(&[("csrf_token", csrf.as_str()), ("action", "refresh")])
        .send()
        .await
        .unwrap();
    let page = app.get_text("/o/playground/").await;
    let refreshed = between(&page, "<code id=\"refresh-token\">", "<").unwrap();
    assert_ne!(refreshed, refresh, "refreshing rotates the refresh token");

    let api = app.url("/healthz");
    let call = [
        ("csrf_token", csrf.as_str()),
        ("action", "call"),
        ("api_url", api.as_str()),
    ];
    app.http
        .post(app.url("/o/playground/"))
        .form(&call)
        .send()
        .await
        .unwrap();
    let page = app.get_text("/o/playground/").await;
    assert_eq!(between(&page, "<strong id=\"api-status\">", "<"), Some("200"));
    assert!(unescape(between(&page, "<pre id=\"api-body\">", "</pre>").unwrap()).contains("\"status\":\"ok\""));
}

#[tokio::test]
async fn the_playground_requires_login_and_csrf() {
    let dirs = tempfile::tempdir().unwrap();
    let app = spawn_app_with(
        tessera::Config {
            playground: true,
            ..test_config(&dirs)
        },
        dirs,
    )
    .await;
    let anonymous = app.http.get(app.url("/o/playground/")).send().await.unwrap();
    assert_eq!(anonymous.status(), 302);
    assert!(location(&anonymous).starts_with("/o/login/?next="));
    app.log_in("/o/login/", USERNAME, PASSWORD).await;
    let forged = app
        .http
        .post(app.url("/o/playground/"))
        .form(&[("action", "start"), ("client_id", "x")])
        .send()
        .await
        .unwrap();
    assert_eq!(forged.status(), 403);
}

#[tokio::test]
async fn a_callback_with_a_foreign_state_is_refused() {
    let app = playground_app().await;
    let forged = format!("/o/playground/callback/?code=x&state=forged&iss={}", app.issuer);
    assert_eq!(app.http.get(app.url(&forged)).send().await.unwrap().status(), 303);
    let page = app.get_text("/o/playground/").await;
    assert!(page.contains("state does not match"));
    assert!(!page.contains("id=\"access-token\""));
}

/// (path, Authorization header) of each request a test service received, in order.
type Seen = std::sync::Arc<std::sync::Mutex<Vec<(String, Option<String>)>>>;

/// An "internal" HTTP service on loopback, standing in for what a server-side request forgery
/// would reach (a cloud metadata address, an admin port): it records every request it gets.
struct Internal {
    base: String,
    requests: Seen,
    /// Body bytes `/huge` managed to hand to the kernel.
    streamed: std::sync::Arc<std::sync::atomic::AtomicUsize>,
}

async fn internal_service() -> Internal {
    use std::sync::atomic::Ordering;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let internal = Internal {
        base: base.clone(),
        requests: Default::default(),
        streamed: Default::default(),
    };
    let (requests, streamed) = (internal.requests.clone(), internal.streamed.clone());
    tokio::spawn(async move {
        loop {
            let Ok((mut stream, _)) = listener.accept().await else {
                return;
            };
            let (requests, streamed, base) = (requests.clone(), streamed.clone(), base.clone());
            tokio::spawn(async move {
                let mut head = Vec::new();
                let mut buf = [0u8; 1024];
                while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                    match stream.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => head.extend_from_slice(&buf[..n]),
                    }
                }
                let head = String::from_utf8_lossy(&head).to_string();
                let path = head.split(' ').nth(1).unwrap_or_default().to_string();
                let authorization = head
                    .lines()
                    .find_map(|l| {
                        l.strip_prefix("authorization: ")
                            .or_else(|| l.strip_prefix("Authorization: "))
                    })
                    .map(str::to_string);
                requests.lock().unwrap().push((path.clone(), authorization));
                match path.as_str() {
                    "/redirect" => {
                        let answer = format!(
                            "HTTP/1.1 302 Found\r\nLocation: {base}/metadata\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                        );
                        let _ = stream.write_all(answer.as_bytes()).await;
                    }
                    "/huge" => {
                        let _ = stream
                            .write_all(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nConnection: close\r\n\r\n")
                            .await;
                        let chunk = vec![b'x'; 64 * 1024];
                        // Up to 300 MB, as in the review; a reader that stops makes writes fail.
                        for _ in 0..(300 * 1024 * 1024 / chunk.len()) {
                            if stream.write_all(&chunk).await.is_err() {
                                break;
                            }
                            streamed.fetch_add(chunk.len(), Ordering::Relaxed);
                        }
                    }
                    "/hang" => tokio::time::sleep(std::time::Duration::from_secs(60)).await,
                    _ => {
                        let body = "secret metadata";
                        let answer = format!(
                            "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                            body.len()
                        );
                        let _ = stream.write_all(answer.as_bytes()).await;
                    }
                }
            });
        }
    });
    internal
}

/// Asks the playground to call `url`; returns the page afterwards.
async fn call_api(app: &TestApp, url: &str) -> String {
    let page = app.get_text("/o/playground/").await;
    let csrf = hidden_input(&page, "csrf_token").unwrap();
    let call = [("csrf_token", csrf.as_str()), ("action", "call"), ("api_url", url)];
    let response = app
        .http
        .post(app.url("/o/playground/"))
        .form(&call)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 303);
    app.get_text("/o/playground/").await
}

/// Finding 7: the playground's "call an API" followed redirects, carrying the bearer token to
/// wherever it was sent (in the review, a cloud metadata address). Now it shows the redirect
/// and goes nowhere else.
#[tokio::test]
async fn the_playground_never_follows_a_redirect_with_the_token() {
    let app = playground_app().await;
    let (_, access) = tokens_in_playground(&app).await;
    let internal = internal_service().await;
    let page = call_api(&app, &format!("{}/redirect", internal.base)).await;
    assert_eq!(between(&page, "<strong id=\"api-status\">", "<"), Some("302"));
    let requests = internal.requests.lock().unwrap().clone();
    assert_eq!(requests.len(), 1, "only the URL typed was called: {requests:?}");
    assert_eq!(requests[0].0, "/redirect");
    assert_eq!(requests[0].1.as_deref(), Some(format!("Bearer {access}").as_str()));
}

/// Finding 7: a 300 MB response took the server's memory to 643 MiB, read whole before it was
/// cut. Now the body is read while it streams, up to 8 KiB (what the playground's state, a
/// bounded scratch value, keeps; 64 KiB until the third review), and the connection dropped.
#[tokio::test]
async fn the_playground_reads_at_most_8_kib_of_a_huge_response() {
    let app = playground_app().await;
    tokens_in_playground(&app).await;
    let internal = internal_service().await;
    let started = std::time::Instant::now();
    let page = call_api(&app, &format!("{}/huge", internal.base)).await;
    assert_eq!(between(&page, "<strong id=\"api-status\">", "<"), Some("200"));
    assert!(page.contains("cut off after 8192 bytes"));
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    let streamed = internal.streamed.load(std::sync::atomic::Ordering::Relaxed);
    assert!(
        streamed < 32 * 1024 * 1024,
        "the sender was stopped after {streamed} bytes, not 300 MB"
    );
    assert!(started.elapsed() < std::time::Duration::from_secs(5));
}

/// Finding 7: an API that never answers is given up on after `outbound_timeout`.
#[tokio::test]
async fn the_playground_gives_up_on_an_api_that_never_answers() {
    let app = playground_app_with(|config| {
        config.outbound.allow_private_addresses = true;
        config.outbound.timeout = std::time::Duration::from_secs(2);
    })
    .await;
    let internal = internal_service().await;
    let started = std::time::Instant::now();
    let page = call_api(&app, &format!("{}/hang", internal.base)).await;
    assert!(page.contains("no answer within 2 seconds"), "{page}");
    assert!(started.elapsed() < std::time::Duration::from_secs(5));
}

/// Finding 7: by default the playground may not reach loopback, private or link-local
/// addresses, however they are spelled (a name that resolves there included); nothing reaches
/// the internal service.
#[tokio::test]
async fn the_playground_refuses_internal_addresses_unless_the_operator_allows_them() {
    let app = playground_app_with(|_| {}).await;
    let internal = internal_service().await;
    let port = internal.base.rsplit(':').next().unwrap().to_string();
    for url in [
        format!("http://127.0.0.1:{port}/metadata"),
        format!("http://localhost:{port}/metadata"),
        format!("http://[::ffff:127.0.0.1]:{port}/metadata"),
        format!("http://0x7f.1:{port}/metadata"),
        "http://169.254.169.254/latest/meta-data/".to_string(),
        "http://[fd00::1]/".to_string(),
    ] {
        let page = call_api(&app, &url).await;
        assert!(
            page.contains("is not a public address") || page.contains("does not resolve to a public address"),
            "{url}: {page}"
        );
        assert!(!page.contains("api-status"), "{url}");
    }
    assert!(internal.requests.lock().unwrap().is_empty());
}

/// RFC 9470 in the playground: the example resource server's `insufficient_user_authentication`
/// challenge gives a new authorization link with its `acr_values` and `max_age`; following it
/// asks the session for its app's code, and the new token passes.
#[tokio::test]
async fn the_playground_follows_a_step_up_challenge_with_a_new_authorization() {
    let app = playground_app().await;
    tokens_in_playground(&app).await;
    let (secret, used_step) = crate::factors::enrol_app(&browser(&app)).await;
    let (_server, base) = crate::resource_server::start_resource_server(&app).await;
    let drafts = format!("{base}/api/posts/drafts/");
    let page = call_api(&app, &drafts).await;
    assert_eq!(between(&page, "<strong id=\"api-status\">", "<"), Some("401"));
    assert!(page.contains("asks for a stronger or more recent login"), "{page}");
    let link = unescape(between(&page, "id=\"authorize-link\" href=\"", "\"").unwrap());
    assert!(
        link.contains("acr_values=urn%3Atessera%3Aacr%3Amulti-factor") && link.contains("max_age=300"),
        "{link}"
    );
    let factor = location(&app.http.get(&link).send().await.unwrap());
    assert!(factor.starts_with("/o/login/factor/"), "{factor}");
    let form = app.get_text(&factor).await;
    let csrf = hidden_input(&form, "csrf_token").unwrap();
    let next = hidden_input(&form, "next").unwrap();
    let code = crate::factors::code_at(&secret, used_step + 1);
    let stepped = crate::factors::submit_code(&app, &csrf, &next, &code).await;
    assert_eq!(stepped.status(), 303);
    let back = app.http.get(app.url(&next)).send().await.unwrap();
    let callback = location(&back);
    assert!(
        callback.starts_with(&format!("{}/o/playground/callback/", app.issuer)),
        "{callback}"
    );
    assert_eq!(app.http.get(&callback).send().await.unwrap().status(), 303);
    let page = call_api(&app, &drafts).await;
    assert_eq!(between(&page, "<strong id=\"api-status\">", "<"), Some("200"), "{page}");
}
