//! The adversarial review's findings about wearing the server down (issue 11): slow clients
//! holding connections (4), anonymous visits filling the store (5), registrations filling the
//! store (6). Each test is the attack; each failed on the code the review ran against.

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

use crate::helpers::*;

/// Connects to the server from `from` (a loopback address of the test's choosing).
async fn connect_from(app: &TestApp, from: [u8; 4]) -> TcpStream {
    let server: SocketAddr = app.base.trim_start_matches("http://").parse().unwrap();
    let socket = TcpSocket::new_v4().unwrap();
    socket.bind(SocketAddr::new(IpAddr::from(from), 0)).unwrap();
    socket.connect(server).await.unwrap()
}

/// Reads until the server closes the connection (or `limit` passes); returns what was read
/// and how long the connection stayed open.
async fn read_until_closed(stream: &mut TcpStream, limit: Duration) -> (String, Duration, bool) {
    let started = Instant::now();
    let mut seen = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match tokio::time::timeout_at((started + limit).into(), stream.read(&mut buf)).await {
            Err(_) => return (String::from_utf8_lossy(&seen).into(), started.elapsed(), false),
            Ok(Ok(0)) | Ok(Err(_)) => return (String::from_utf8_lossy(&seen).into(), started.elapsed(), true),
            Ok(Ok(n)) => seen.extend_from_slice(&buf[..n]),
        }
    }
}

async fn slow_app() -> TestApp {
    let dirs = tempfile::tempdir().unwrap();
    let config = tessera::Config {
        request_head_timeout: Duration::from_secs(2),
        request_body_timeout: Duration::from_secs(2),
        max_connections_per_address: 3,
        ..test_config(&dirs)
    };
    spawn_app_with(config, dirs).await
}

/// Finding 4: a head trickled one header line every 5 s reset the idle timer, and the
/// connection stayed open past 75 s. Now the whole head must arrive within
/// `request_head_timeout`, however busy the trickle keeps the connection.
#[tokio::test]
async fn a_request_head_trickled_line_by_line_is_cut_off() {
    let app = slow_app().await;
    let mut stream = connect_from(&app, [127, 0, 0, 1]).await;
    stream.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n").await.unwrap();
    let (mut reader, mut writer) = stream.into_split();
    // A header line every 300 ms: far more often than any idle timeout.
    let trickle = tokio::spawn(async move {
        for i in 0..100 {
            tokio::time::sleep(Duration::from_millis(300)).await;
            if writer.write_all(format!("X-Slow-{i}: a\r\n").as_bytes()).await.is_err() {
                return i;
            }
        }
        100
    });
    let started = Instant::now();
    let mut buf = [0u8; 1024];
    let read = tokio::time::timeout(Duration::from_secs(10), reader.read(&mut buf)).await;
    let open_for = started.elapsed();
    let answered = match read {
        Ok(Ok(n)) => String::from_utf8_lossy(&buf[..n]).to_string(),
        Ok(Err(_)) => String::new(),
        Err(_) => panic!("the trickled head kept its connection open for 10 s"),
    };
    assert!(
        !answered.contains("200 OK"),
        "the incomplete request was never served: {answered}"
    );
    assert!(
        open_for < Duration::from_secs(4),
        "cut off at the 2 s head deadline, not after {open_for:?}"
    );
    let lines_sent = trickle.await.unwrap();
    assert!(lines_sent < 100, "the server stopped taking the trickle");
    // A normal request is still served at once.
    assert_eq!(app.http.get(app.url("/healthz")).send().await.unwrap().status(), 200);
}

/// Finding 4, found again by the second review: a connection that sends nothing at all was
/// kept for the 60 s idle timeout (hyper waited for its first bytes before starting the head
/// deadline), so reconnecting silent sockets held every slot. Now the head deadline runs from
/// the moment the connection opens.
#[tokio::test]
async fn a_connection_that_says_nothing_is_closed_at_the_head_deadline() {
    let app = slow_app().await;
    let mut silent = connect_from(&app, [127, 0, 0, 1]).await;
    let (answer, open_for, closed) = read_until_closed(&mut silent, Duration::from_secs(8)).await;
    assert!(closed, "a silent connection stayed open 8 s");
    assert!(
        open_for >= Duration::from_millis(1500) && open_for < Duration::from_secs(4),
        "closed at the 2 s deadline, not after {open_for:?} ({answer:?})"
    );
}

/// The second review: cleartext HTTP/2 (h2c, prior knowledge) multiplied each connection into
/// 200 streams each buffering a body (one address took the server to 1.2 GB) and kept idle
/// connections alive on PINGs. Tessera speaks HTTP/1.1 only: an HTTP/2 preface gets no HTTP/2
/// answer and the connection is closed.
#[tokio::test]
async fn cleartext_http2_is_refused() {
    let app = slow_app().await;
    let mut stream = connect_from(&app, [127, 0, 0, 1]).await;
    // The client connection preface (RFC 9113 §3.4) and an empty SETTINGS frame.
    stream.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n").await.unwrap();
    let _ = stream.write_all(&[0, 0, 0, 4, 0, 0, 0, 0, 0]).await;
    let (answer, open_for, closed) = read_until_closed(&mut stream, Duration::from_secs(5)).await;
    assert!(closed && open_for < Duration::from_secs(3), "{open_for:?}");
    assert!(
        answer.is_empty() || answer.starts_with("HTTP/1.1 4") || answer.starts_with("HTTP/1.1 5"),
        "no HTTP/2 frames: {answer:?}"
    );
}

/// Finding 4, bodies: a body trickled a byte at a time is answered 408 after
/// `request_body_timeout`, and the connection is closed.
#[tokio::test]
async fn a_request_body_trickled_byte_by_byte_is_cut_off() {
    let app = slow_app().await;
    let mut stream = connect_from(&app, [127, 0, 0, 1]).await;
    stream
        .write_all(
            b"POST /o/token/ HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: 200\r\n\r\n",
        )
        .await
        .unwrap();
    let (mut reader, mut writer) = stream.into_split();
    let trickle = tokio::spawn(async move {
        for _ in 0..200 {
            tokio::time::sleep(Duration::from_millis(200)).await;
            if writer.write_all(b"a").await.is_err() {
                break;
            }
        }
    });
    let started = Instant::now();
    let mut seen = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match tokio::time::timeout(Duration::from_secs(10), reader.read(&mut buf)).await {
            Err(_) => panic!("the trickled body kept its connection open for 10 s"),
            Ok(Ok(0)) | Ok(Err(_)) => break,
            Ok(Ok(n)) => seen.extend_from_slice(&buf[..n]),
        }
    }
    let response = String::from_utf8_lossy(&seen);
    assert!(response.starts_with("HTTP/1.1 408"), "{response}");
    assert!(response.contains("did not arrive within 2 seconds"), "{response}");
    assert!(started.elapsed() < Duration::from_secs(5), "{:?}", started.elapsed());
    trickle.abort();
}

/// Finding 4, one host holding every connection: past `max_connections_per_address` a new
/// connection from that address is closed at once, while other addresses are served; a
/// closed connection gives its place back.
#[tokio::test]
async fn one_address_cannot_hold_more_than_its_share_of_connections() {
    let app = slow_app().await;
    let mut held = Vec::new();
    for _ in 0..3 {
        let mut stream = connect_from(&app, [127, 0, 0, 1]).await;
        // A started head: the connection counts as open and busy.
        stream.write_all(b"GET /healthz HTTP/1.1\r\n").await.unwrap();
        held.push(stream);
    }
    // Let the server accept all three before the fourth arrives.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut fourth = connect_from(&app, [127, 0, 0, 1]).await;
    let _ = fourth.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n").await;
    let (answer, open_for, closed) = read_until_closed(&mut fourth, Duration::from_secs(5)).await;
    assert!(closed && answer.is_empty(), "refused without an answer: {answer:?}");
    assert!(
        open_for < Duration::from_secs(1),
        "refused at once, not after {open_for:?}"
    );

    let mut other = connect_from(&app, [127, 0, 0, 2]).await;
    other
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let (answer, _, _) = read_until_closed(&mut other, Duration::from_secs(5)).await;
    assert!(
        answer.starts_with("HTTP/1.1 200"),
        "another address is served: {answer}"
    );

    drop(held.pop());
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut again = connect_from(&app, [127, 0, 0, 1]).await;
    again
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let (answer, _, _) = read_until_closed(&mut again, Duration::from_secs(5)).await;
    assert!(
        answer.starts_with("HTTP/1.1 200"),
        "the freed place is usable: {answer}"
    );
}

/// The bytes of every file under `dir`.
fn dir_bytes(dir: &std::path::Path) -> u64 {
    // No data folder (cluster mode keeps everything in the database): nothing on disk.
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .map(|entry| {
            let entry = entry.unwrap();
            let meta = entry.metadata().unwrap();
            if meta.is_dir() {
                dir_bytes(&entry.path())
            } else {
                meta.len()
            }
        })
        .sum()
}

/// Finding 5: every cookieless visit to the login page stored a 12-hour session (3,000 visits
/// made 3,000 sessions in 1.5 s). Now a visitor without a session gets a signed login-form
/// cookie and nothing is stored: 3,000 visits leave the record count as it was and grow the
/// data folder by less than 256 KiB; logging in still works.
#[tokio::test]
async fn anonymous_visits_to_the_login_page_store_nothing() {
    let app = spawn_app().await;
    app.store.durable().await.unwrap();
    let (records, bytes) = (app.store.record_count().await.unwrap(), dir_bytes(&app.data_dir));
    let visits = (0..50).map(|_| {
        let (http, url) = (reqwest::Client::new(), app.url("/o/login/"));
        tokio::spawn(async move {
            for _ in 0..60 {
                let page = http.get(&url).send().await.unwrap();
                assert_eq!(page.status(), 200);
                assert!(page.headers()["set-cookie"]
                    .to_str()
                    .unwrap()
                    .starts_with("tessera_login="));
            }
        })
    });
    for visit in visits.collect::<Vec<_>>() {
        visit.await.unwrap();
    }
    app.store.durable().await.unwrap();
    let grown = dir_bytes(&app.data_dir).saturating_sub(bytes);
    println!("3,000 anonymous login-page visits grew the data folder by {grown} bytes");
    assert_eq!(app.store.record_count().await.unwrap(), records, "no record was stored");
    assert!(grown < 256 * 1024, "the data folder grew by {grown} bytes");

    // The form still works, with the token its cookie carries and no other.
    assert_eq!(app.log_in("/o/login/", USERNAME, PASSWORD).await.status(), 303);
    let browser = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let page = browser.get(app.url("/o/login/")).send().await.unwrap();
    let cookie = page.headers()["set-cookie"]
        .to_str()
        .unwrap()
        .split(';')
        .next()
        .unwrap()
        .to_string();
    let csrf = hidden_input(&page.text().await.unwrap(), "csrf_token").unwrap();
    let other = reqwest::Client::new().get(app.url("/o/login/")).send().await.unwrap();
    let other_csrf = hidden_input(&other.text().await.unwrap(), "csrf_token").unwrap();
    let (expires, token, _mac) = {
        let value = cookie.trim_start_matches("tessera_login=");
        let parts: Vec<&str> = value.split('.').collect();
        (parts[0].to_string(), parts[1].to_string(), parts[2].to_string())
    };
    let forged_mac = format!("tessera_login={expires}.{token}.{}", "A".repeat(43));
    let attempts = [
        (cookie.as_str(), other_csrf.as_str(), "another form's token"),
        (forged_mac.as_str(), csrf.as_str(), "a cookie not signed by the server"),
        ("", csrf.as_str(), "no cookie"),
    ];
    for (cookie, csrf, what) in attempts {
        let response = browser
            .post(app.url("/o/login/"))
            .header("cookie", cookie)
            .form(&[("csrf_token", csrf), ("username", USERNAME), ("password", PASSWORD)])
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 403, "{what}");
    }
    let response = browser
        .post(app.url("/o/login/"))
        .header("cookie", &cookie)
        .form(&[
            ("csrf_token", csrf.as_str()),
            ("username", USERNAME),
            ("password", PASSWORD),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 303);
    let cookies: Vec<&str> = response
        .headers()
        .get_all("set-cookie")
        .iter()
        .map(|v| v.to_str().unwrap())
        .collect();
    assert!(cookies.iter().any(|c| c.starts_with("tessera_session=")), "{cookies:?}");
    assert!(
        cookies.iter().any(|c| c.starts_with("tessera_login=;")),
        "the form cookie is cleared: {cookies:?}"
    );
}

async fn open_registration(adjust: impl FnOnce(&mut tessera::Config)) -> TestApp {
    let dirs = tempfile::tempdir().unwrap();
    let mut config = tessera::Config {
        registration: tessera::config::RegistrationPolicy {
            mode: tessera::config::RegistrationMode::Open,
            allow_client_credentials: true,
            ..Default::default()
        },
        ..test_config(&dirs)
    };
    adjust(&mut config);
    spawn_app_with(config, dirs).await
}

/// A registration as the review's script sent it: 50 long redirect URIs (just under the 64 KiB
/// body limit in all).
fn bulky_registration() -> serde_json::Value {
    let uris: Vec<String> = (0..50)
        .map(|i| format!("https://app.example/{i}/{}", "a".repeat(1200)))
        .collect();
    serde_json::json!({ "redirect_uris": uris, "client_name": "bulk" })
}

async fn register_from(app: &TestApp, from: [u8; 4], body: &serde_json::Value) -> reqwest::Response {
    let http = reqwest::Client::builder()
        .local_address(IpAddr::from(from))
        .build()
        .unwrap();
    http.post(app.url("/o/register/")).json(body).send().await.unwrap()
}

/// Finding 6: 300 open registrations with 50 long redirect URIs each took the data folder from
/// 1.4 to 48 MB in 1.2 s. Now one address gets `registration_limit_per_address` (20 an hour by
/// default), even when it sends them all at once, and other addresses keep theirs.
#[tokio::test]
async fn one_address_cannot_register_clients_without_limit() {
    let app = open_registration(|_| {}).await;
    let body = bulky_registration();
    let records = app.store.record_count().await.unwrap();
    let attempts = (0..60).map(|_| {
        let (app_url, body) = (app.url("/o/register/"), body.clone());
        tokio::spawn(async move {
            let http = reqwest::Client::new();
            let response = http.post(app_url).json(&body).send().await.unwrap();
            (
                response.status().as_u16(),
                response.headers().contains_key("retry-after"),
            )
        })
    });
    let mut statuses = Vec::new();
    for attempt in attempts.collect::<Vec<_>>() {
        statuses.push(attempt.await.unwrap());
    }
    let created = statuses.iter().filter(|(s, _)| *s == 201).count();
    let refused: Vec<_> = statuses.iter().filter(|(s, _)| *s == 429).collect();
    assert_eq!(created, 20, "{statuses:?}");
    assert_eq!(refused.len(), 40, "{statuses:?}");
    assert!(refused.iter().all(|(_, retry_after)| *retry_after));
    assert_eq!(app.store.record_count().await.unwrap(), records + 20);
    // Another address has its own budget.
    assert_eq!(register_from(&app, [127, 0, 0, 2], &body).await.status(), 201);
}

/// Finding 6, what stays: a registered client that is never issued a token is deleted after
/// `registration_unused_client_ttl`; a used one, and apps made in the pages or the CLI, stay.
#[tokio::test]
async fn registered_clients_never_used_are_purged() {
    let app = open_registration(|config| {
        config.registration.unused_client_ttl = Duration::from_secs(1);
        config.purge_interval = Duration::from_secs(1);
    })
    .await;
    let before = app.store.record_count().await.unwrap();
    let mut unused = Vec::new();
    for _ in 0..5 {
        let response = register_from(&app, [127, 0, 0, 1], &bulky_registration()).await;
        assert_eq!(response.status(), 201);
        let body: serde_json::Value = response.json().await.unwrap();
        unused.push(body["client_id"].as_str().unwrap().to_string());
    }
    let used = register_from(
        &app,
        [127, 0, 0, 1],
        &serde_json::json!({ "grant_types": ["client_credentials"], "scope": "read" }),
    )
    .await;
    let used: serde_json::Value = used.json().await.unwrap();
    let used_client = TestClient {
        id: used["client_id"].as_str().unwrap().into(),
        secret: used["client_secret"].as_str().map(String::from),
    };
    assert_eq!(app.client_credentials_as(&used_client, "read").await.status(), 200);

    tokio::time::sleep(Duration::from_millis(3500)).await;
    for id in &unused {
        assert!(app.provider.find_client(id).await.unwrap().is_none(), "{id} was purged");
    }
    assert!(app.provider.find_client(&used_client.id).await.unwrap().is_some());
    assert!(
        app.provider.find_client(&app.client.id).await.unwrap().is_some(),
        "operator-made clients stay"
    );
    assert_eq!(app.client_credentials_as(&used_client, "read").await.status(), 200);
    // Only the used client is left of the six (the rest of the store is what it was).
    let after = app.store.record_count().await.unwrap();
    assert!(after <= before + 1 + 2, "{before} -> {after}");
}
