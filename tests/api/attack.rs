//! Findings of the pre-release attack on the new features (private_key_jwt, Client ID
//! Metadata Documents, the device authorization grant). Each test fails while its bug is there.

use jsonwebtoken::Algorithm;
use serde_json::json;
use tessera::oauth::audit::Caller;
use tessera::oauth::client::NewClient;
use tessera::oauth::client_assertion::ClientKeys;
use tessera::store::{ClientType, GrantType};

use crate::helpers::*;
use crate::private_key_jwt::{register, token_with, TestKey};

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

/// The per-host fetch budget of `src/documents.rs` (`DocumentCache::fetch_and_keep`) is
/// spent by any anonymous visitor naming URLs that do not exist on a host: ten GETs of
/// `/o/authorize/?client_id=https://vendor.example/junkN` a minute (a 404 costs as much as a
/// real fetch, and failures are not cached) keep that host's budget empty, and every real
/// client published on the host (and every `jwks_uri` there) then fails with "too many
/// documents fetched": a targeted denial of service against a popular client vendor.
#[tokio::test]
async fn junk_urls_on_a_host_do_not_lock_out_the_real_client_published_there() {
    use crate::documents::{Doc, DocumentServer};
    let documents = DocumentServer::start().await;
    // Behind a proxy, so that the visitor and the real client's users have their own addresses.
    let app = behind_a_proxy(|config| {
        documents.trusted_by(config);
        config.client_documents.mode = tessera::config::ClientDocumentsMode::Open;
    })
    .await;
    let (visitor, user) = (
        browser_behind_proxy(&app, "203.0.113.7"),
        browser_behind_proxy(&app, "198.51.100.9"),
    );

    let authorize = |from: &Remote, client_id: String| {
        let (http, url) = (from.http.clone(), app.url("/o/authorize/"));
        async move {
            let pkce = Pkce::new();
            let response = http
                .get(url)
                .query(&[
                    ("response_type", "code"),
                    ("client_id", client_id.as_str()),
                    ("redirect_uri", "http://127.0.0.1:53177/callback"),
                    ("scope", "read"),
                    ("state", "s"),
                    ("code_challenge", pkce.challenge.as_str()),
                    ("code_challenge_method", "S256"),
                ])
                .send()
                .await
                .unwrap();
            (response.status().as_u16(), response.text().await.unwrap())
        }
    };
    // An anonymous visitor names a dozen documents that do not exist on the vendor's host.
    for i in 0..12 {
        let (status, _) = authorize(&visitor, documents.url(&format!("/junk/{i}.json"))).await;
        // Past the visitor's own budget: 429, our limit (the third review), not a 400.
        assert!([400, 429].contains(&status), "{status}");
    }
    // The vendor's real client, never fetched before (a new node, a restart, an expired copy).
    let client_id = documents.url("/agent/client.json");
    documents.serve(
        "/agent/client.json",
        Doc::json(&json!({
            "client_id": client_id,
            "client_name": "Real Agent",
            "redirect_uris": ["http://127.0.0.1/callback"],
            "token_endpoint_auth_method": "none",
        })),
    );
    let (status, page) = authorize(&user, client_id.clone()).await;
    assert!(
        status == 302 || status == 200,
        "the real client was locked out by junk requests: {status} {}",
        page.lines()
            .find(|l| l.contains("too many") || l.contains("not usable"))
            .unwrap_or_default()
    );
}

/// With private addresses refused (the default), the error page for a document URL whose
/// host resolves to a private address names that address: `PublicOnly::resolve` in
/// `src/outbound.rs` puts the first resolved IP in `OutboundError::NotPublic`, and the
/// authorization page shows the reason to anyone. An anonymous visitor can so resolve any
/// internal host name through the server's resolver (`https://db.corp.internal/x` ->
/// "10.2.3.4 is not a public address"): an internal DNS oracle.
#[tokio::test]
async fn the_error_page_does_not_reveal_what_an_internal_name_resolves_to() {
    let dirs = tempfile::tempdir().unwrap();
    let mut config = test_config(&dirs);
    config.client_documents.mode = tessera::config::ClientDocumentsMode::Open;
    assert!(!config.outbound.allow_private_addresses);
    let app = spawn_app_with(config, dirs).await;
    let pkce = Pkce::new();
    let response = app
        .http
        .get(app.url("/o/authorize/"))
        .query(&[
            ("response_type", "code"),
            ("client_id", "https://localhost/client.json"),
            ("redirect_uri", "http://127.0.0.1/callback"),
            ("state", "s"),
            ("code_challenge", pkce.challenge.as_str()),
            ("code_challenge_method", "S256"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 400);
    let page = response.text().await.unwrap();
    assert!(page.contains("not usable"), "{page}");
    assert!(
        !page.contains("127.0.0.1 is not") && !page.contains("::1 is not"),
        "the page tells an anonymous visitor what localhost resolves to: {}",
        page.lines().find(|l| l.contains("not usable")).unwrap_or_default()
    );
}

/// The outbound client (`Outbound::new` in `src/outbound.rs`) keeps reqwest's default
/// connection pool: every idle connection to every host is kept for 90 s, with no limit on
/// hosts or connections. An anonymous visitor naming documents on many hosts (a wildcard
/// DNS name and a wildcard certificate are enough: `https://1.evil.example/c`,
/// `https://2.evil.example/c`, ...), served by a server that keeps connections alive, makes
/// Tessera hold one open socket per host (one per concurrent fetch, in fact) long after the
/// fetch: measured by hand, 2,000 requests over 248 hosts left ~1,500 sockets open; at a few
/// hundred requests a second the process runs out of file descriptors and stops accepting
/// connections. A document fetch is a one-off request: its connection should be closed.
#[tokio::test]
async fn document_fetches_do_not_leave_connections_open_to_every_host_named() {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio_rustls::rustls;
    use tokio_rustls::rustls::pki_types::pem::PemObject;
    use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};

    const HOSTS: u8 = 40;
    // A certificate for 127.0.0.2 .. 127.0.0.41: forty "hosts" on loopback.
    let dir = tempfile::tempdir().unwrap();
    let openssl = |args: &str| {
        let out = std::process::Command::new("openssl")
            .args(args.split_whitespace())
            .current_dir(dir.path())
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    };
    openssl("req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 1 -subj /CN=attack-ca -keyout ca.key -out ca.crt");
    openssl("req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -subj /CN=hosts -keyout server.key -out server.csr");
    let sans: Vec<String> = (2..2 + HOSTS).map(|i| format!("IP:127.0.0.{i}")).collect();
    std::fs::write(
        dir.path().join("san.ext"),
        format!("subjectAltName={}\n", sans.join(",")),
    )
    .unwrap();
    openssl(
        "x509 -req -in server.csr -CA ca.crt -CAkey ca.key -CAcreateserial -days 1 -extfile san.ext -out server.crt",
    );

    // A keep-alive https server on every address, answering every request with a 404.
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(dir.path().join("server.crt"))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    let key = PrivateKeyDer::from_pem_file(dir.path().join("server.key")).unwrap();
    let tls = rustls::ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(tls));
    let listener = tokio::net::TcpListener::bind("0.0.0.0:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let open = Arc::new(AtomicUsize::new(0));
    let counted = open.clone();
    let server = tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else { return };
            let (acceptor, open) = (acceptor.clone(), counted.clone());
            tokio::spawn(async move {
                open.fetch_add(1, Ordering::SeqCst);
                if let Ok(mut tls) = acceptor.accept(tcp).await {
                    let mut buf = [0u8; 8192];
                    let mut head = Vec::new();
                    loop {
                        match tls.read(&mut buf).await {
                            Ok(0) | Err(_) => break,
                            Ok(n) => head.extend_from_slice(&buf[..n]),
                        }
                        if head.windows(4).any(|w| w == b"\r\n\r\n") {
                            head.clear();
                            let answer =
                                "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: keep-alive\r\n\r\n";
                            if tls.write_all(answer.as_bytes()).await.is_err() {
                                break;
                            }
                        }
                    }
                }
                open.fetch_sub(1, Ordering::SeqCst);
            });
        }
    });

    let app_dirs = tempfile::tempdir().unwrap();
    let mut config = test_config(&app_dirs);
    let pem = std::fs::read(dir.path().join("ca.crt")).unwrap();
    config.outbound.extra_roots = reqwest::Certificate::from_pem_bundle(&pem).unwrap();
    config.outbound.allow_private_addresses = true;
    config.client_documents.mode = tessera::config::ClientDocumentsMode::Open;
    // One visitor naming forty hosts: past the budget of new documents per caller, which
    // this test is not about.
    config.documents.fetches_per_host.burst = 100.0;
    let app = spawn_app_with(config, app_dirs).await;

    for i in 2..2 + HOSTS {
        let pkce = Pkce::new();
        let client_id = format!("https://127.0.0.{i}:{port}/client.json");
        let response = app
            .http
            .get(app.url("/o/authorize/"))
            .query(&[
                ("response_type", "code"),
                ("client_id", client_id.as_str()),
                ("redirect_uri", "http://127.0.0.1/callback"),
                ("code_challenge", pkce.challenge.as_str()),
                ("code_challenge_method", "S256"),
            ])
            .send()
            .await
            .unwrap();
        let status = response.status().as_u16();
        let page = response.text().await.unwrap();
        assert!(status == 400 && page.contains("answered HTTP 404"), "{status}");
    }
    tokio::time::sleep(std::time::Duration::from_secs(2)).await;
    let still_open = open.load(Ordering::SeqCst);
    server.abort();
    assert!(
        still_open <= 4,
        "{still_open} connections to {HOSTS} document hosts are still open 2 s after their fetches"
    );
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

/// `/o/device_authorization/` for a public client needs nothing but its (public) client id,
/// and each call stores a device record (and syncs the store to disk) that lives for
/// `device_code_ttl` (600 s). The only limits are the generic 500/s per client and address
/// and 1,000/s per address: measured by hand, one address stored 1,000 records in 2.5 s
/// (sled grew 0.7 MB), i.e. ~240,000 live records from a single address, each also a live
/// user code that raises the odds of a guessed code. Registration is held to 20 an hour per
/// address; device authorizations should have a comparable per-address budget
/// (`Provider::device_authorization` in `src/oauth/device.rs`).
#[tokio::test]
async fn one_address_cannot_store_device_authorizations_without_limit() {
    let app = spawn_app().await;
    let (client, _) = app
        .provider
        .register_client(
            &Caller::system(),
            NewClient {
                scope: "read".into(),
                ..client_settings("Living room TV", ClientType::Public, vec![GrantType::DeviceCode])
            },
        )
        .await
        .unwrap();
    let mut stored = 0;
    for _ in 0..300 {
        let response = app
            .http
            .post(app.url("/o/device_authorization/"))
            .form(&[("client_id", client.client_id.as_str())])
            .send()
            .await
            .unwrap();
        if response.status() == 200 {
            stored += 1;
        }
    }
    assert!(
        stored <= 100,
        "{stored} of 300 anonymous device authorizations from one address were stored"
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
