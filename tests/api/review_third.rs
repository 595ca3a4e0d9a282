//! The third adversarial review (issue 26), each finding as the attack that found it: memory
//! anonymous traffic could fill, bindings that did not hold everywhere, and 500s and 400s
//! where 4xx and 503 were due. Memory findings run the real binary and read its resident
//! memory from `/proc`, as `tests/api/review.rs` does.

use std::time::Duration;

use serde_json::{json, Value};

use crate::documents::{Doc, DocumentServer};
use crate::helpers::*;

/// The real binary's resident memory now, in KiB.
fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

/// The real binary with client documents open, trusting `documents`, with every per-address
/// budget off: as an attacker with a wildcard DNS name and many addresses sees it.
fn document_server_process(dir: &std::path::Path, documents: &DocumentServer, extra: &str) -> ServerProcess {
    std::fs::write(
        dir.join("tessera.toml"),
        format!(
            "client_id_metadata_documents = \"open\"\noutbound_allow_private_addresses = true\n\
             outbound_ca_file = {:?}\ndocument_fetches_per_host_per_minute = 1000000\n\
             rate_limit_per_address = 0\nmax_connections_per_address = 1000\n{extra}",
            documents.ca_file.display().to_string()
        ),
    )
    .unwrap();
    ServerProcess::start(dir, &["--config", "tessera.toml"], &[])
}

/// GETs `/o/authorize/` naming each client id, `parallel` at a time; returns the statuses.
async fn authorize_each(base: &str, client_ids: Vec<String>, parallel: usize) -> Vec<u16> {
    use futures_lite_free::for_each_concurrent;
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let url = format!("{base}/o/authorize/");
    for_each_concurrent(client_ids, parallel, move |client_id| {
        let (http, url) = (http.clone(), url.clone());
        async move {
            let pkce = Pkce::new();
            http.get(&url)
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
                .map_or(0, |r| r.status().as_u16())
        }
    })
    .await
}

/// A tiny bounded-concurrency runner (the tests have no futures crate).
mod futures_lite_free {
    use std::future::Future;

    pub async fn for_each_concurrent<I, F, Fut, T>(items: Vec<I>, parallel: usize, run: F) -> Vec<T>
    where
        I: Send + 'static,
        F: Fn(I) -> Fut,
        Fut: Future<Output = T> + Send + 'static,
        T: Send + 'static,
    {
        let mut set = tokio::task::JoinSet::new();
        let mut results = Vec::with_capacity(items.len());
        for item in items {
            if set.len() >= parallel {
                results.push(set.join_next().await.unwrap().unwrap());
            }
            set.spawn(run(item));
        }
        while let Some(result) = set.join_next().await {
            results.push(result.unwrap());
        }
        results
    }
}

/// A document of nearly 5 KB whose 8 members are objects nested 100 deep: ~640 bytes of
/// parsed tree for each 5 bytes of text.
fn nested_document(client_id: &str) -> Vec<u8> {
    let deep = format!("{}1{}", "{\"a\":".repeat(100), "}".repeat(100));
    let members: Vec<String> = (0..8).map(|i| format!("\"m{i}\":{deep}")).collect();
    format!("{{\"client_id\":{client_id:?},{}}}", members.join(",")).into_bytes()
}

/// Finding 1: the document cache kept the parsed JSON tree of whatever a URL served, before
/// anyone checked it was a usable client, bounded by count only: 100 nested 4.9 KB documents
/// named as `client_id`s at `/o/authorize/` by anyone raised RSS 24 -> 85 MB. Now the shape
/// is refused before parsing and only usable documents are cached, as bytes.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn nested_documents_named_as_client_ids_do_not_fill_memory() {
    let documents = DocumentServer::start().await;
    let mut client_ids = Vec::new();
    for i in 0..300 {
        let path = format!("/nested/{i}.json");
        let client_id = documents.url(&path);
        let body = nested_document(&client_id);
        assert!(body.len() > 4_800 && body.len() < 5 * 1024, "{}", body.len());
        documents.serve(
            &path,
            Doc {
                body,
                ..Doc::json(&json!({}))
            },
        );
        client_ids.push(client_id);
    }
    let dir = tempfile::tempdir().unwrap();
    let server = document_server_process(dir.path(), &documents, "");
    // One request first, so start-up allocations are behind us.
    authorize_each(&server.base, client_ids[..1].to_vec(), 1).await;
    let before = rss_kib(server.pid());
    // Four at a time: one host's share of the fetch places (an attacker has as many hosts as
    // names under a wildcard DNS entry).
    let statuses = authorize_each(&server.base, client_ids.clone(), 4).await;
    let after = rss_kib(server.pid());
    let logs = server.terminate();
    assert!(statuses.iter().all(|s| *s == 400), "{statuses:?}\n{logs}");
    let fetched: usize = (0..300).map(|i| documents.hits(&format!("/nested/{i}.json"))).sum();
    assert!(fetched >= 300, "every document was fetched ({fetched}): the attack ran");
    println!(
        "RSS after 300 nested documents: {} -> {} MiB",
        before / 1024,
        after / 1024
    );
    assert!(
        after < before + 16 * 1024,
        "RSS grew {} -> {} MiB",
        before / 1024,
        after / 1024
    );
}

/// Finding 9: the fetch budgets kept each key as the text it was given, the host name an
/// anonymous visitor chose among them: 40,000 `client_id=https://<1,900 letters>.example/c.json`
/// raised RSS 25 -> 188 MB. Now every rate limiter keeps a fixed-size digest of its key.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn long_host_names_do_not_fill_the_fetch_budgets() {
    let documents = DocumentServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let server = document_server_process(dir.path(), &documents, "");
    let letters = |i: usize| -> String {
        let mut state = i as u64 * 2_654_435_761 + 1;
        (0..1_900)
            .map(|_| {
                state = state.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
                (b'a' + (state >> 59) as u8 % 26) as char
            })
            .collect()
    };
    let client_ids: Vec<String> = (0..8_000)
        .map(|i| format!("https://{}{i}.example/c.json", letters(i)))
        .collect();
    authorize_each(&server.base, client_ids[..10].to_vec(), 1).await;
    let before = rss_kib(server.pid());
    let statuses = authorize_each(&server.base, client_ids[10..].to_vec(), 32).await;
    let after = rss_kib(server.pid());
    let logs = server.terminate();
    assert!(statuses.iter().all(|s| *s == 400), "{logs}");
    println!(
        "RSS after 8,000 long host names: {} -> {} MiB",
        before / 1024,
        after / 1024
    );
    // The keys alone were 3 x 8,000 x ~2 KB = 46 MB before.
    assert!(
        after < before + 16 * 1024,
        "RSS grew {} -> {} MiB",
        before / 1024,
        after / 1024
    );
}

/// A valid public client's document for `client_id`.
fn usable_document(client_id: &str) -> Value {
    json!({
        "client_id": client_id,
        "client_name": "Doc Agent",
        "redirect_uris": ["http://127.0.0.1:53177/callback"],
        "grant_types": ["authorization_code", "refresh_token"],
        "response_types": ["code"],
        "token_endpoint_auth_method": "none",
    })
}

/// Finding 2: the 32 fetch places were shared by every host: ~3 requests a second to a host
/// that answers slowly kept every other host's new documents failing with "too many documents
/// are being fetched now". Now one host holds at most 4 places.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_slow_host_cannot_take_every_fetch_place() {
    let slow = DocumentServer::start().await;
    let fast = slow.another().await;
    let dirs = tempfile::tempdir().unwrap();
    let mut config = test_config(&dirs);
    slow.trusted_by(&mut config);
    config.client_documents.mode = tessera::config::ClientDocumentsMode::Open;
    config.documents.fetches_per_host = tessera::rate_limit::Rate {
        per_second: 1000.0,
        burst: 1000.0,
    };
    config.rate_limit_per_address = tessera::rate_limit::Rate::OFF;
    let app = spawn_app_with(config, dirs).await;
    let mut slow_ids = Vec::new();
    for i in 0..40 {
        let path = format!("/slow/{i}.json");
        let mut doc = Doc::json(&usable_document(&slow.url(&path)));
        doc.delay = Duration::from_secs(6);
        slow.serve(&path, doc);
        slow_ids.push(slow.url(&path));
    }
    // Forty slow fetches at once, from as many addresses as an attacker likes.
    let base = app.base.clone();
    let flood = tokio::spawn(async move {
        futures_lite_free::for_each_concurrent(slow_ids, 40, move |id| {
            let base = base.clone();
            async move { authorize_each(&base, vec![id], 1).await[0] }
        })
        .await
    });
    tokio::time::sleep(Duration::from_millis(700)).await;
    let client_id = fast.url("/fast.json");
    fast.serve("/fast.json", Doc::json(&usable_document(&client_id)));
    let started = std::time::Instant::now();
    let page = app.authorize(&authorize_params(&client_id)).await;
    let status = page.status();
    let html = page.text().await.unwrap();
    assert_eq!(status, 302, "another host's document is fetched at once: {html}");
    assert!(started.elapsed() < Duration::from_secs(2), "{:?}", started.elapsed());
    let statuses = flood.await.unwrap();
    assert!(
        statuses.iter().filter(|s| **s == 302).count() <= 4,
        "the slow host had 4 places: {statuses:?}"
    );
}

fn authorize_params(client_id: &str) -> Vec<(String, String)> {
    let pkce = Pkce::new();
    [
        ("response_type", "code"),
        ("client_id", client_id),
        ("redirect_uri", "http://127.0.0.1:53177/callback"),
        ("scope", "read"),
        ("state", "s"),
        ("code_challenge", pkce.challenge.as_str()),
        ("code_challenge_method", "S256"),
    ]
    .iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect()
}

/// Finding 3: the scratch space dropped the live value that expired first when full: 10,500
/// anonymous pushes for a public client (from 350 IPv6 /64s) made a victim's `request_uri`
/// unknown; on PostgreSQL the table grew without bound. Now pushes past the bound are refused
/// with 503 and `Retry-After`, and every pushed request already made keeps working.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn anonymous_pushes_never_evict_another_clients_pushed_request() {
    let dirs = tempfile::tempdir().unwrap();
    let config = tessera::Config {
        // As many addresses as the attacker likes.
        pushed_requests_per_address: tessera::rate_limit::Rate::OFF,
        rate_limit_per_address: tessera::rate_limit::Rate::OFF,
        rate_limit_per_client: tessera::rate_limit::Rate::OFF,
        ..test_config(&dirs)
    };
    let app = std::sync::Arc::new(spawn_app_with(config, dirs).await);
    let push = |app: std::sync::Arc<TestApp>, client: TestClient, state: String| async move {
        let pkce = Pkce::new();
        let redirect_uri = match client.secret {
            Some(_) => REDIRECT_URI,
            None => "http://127.0.0.1/callback",
        };
        let mut form = vec![
            ("response_type", "code".to_string()),
            ("redirect_uri", redirect_uri.into()),
            ("scope", "read".into()),
            ("state", state),
            ("code_challenge", pkce.challenge.clone()),
            ("code_challenge_method", "S256".into()),
        ];
        let mut request = app.http.post(app.url("/o/par/"));
        match &client.secret {
            Some(secret) => request = request.basic_auth(&client.id, Some(secret)),
            None => form.push(("client_id", client.id.clone())),
        }
        let response = request.form(&form).send().await.unwrap();
        let status = response.status().as_u16();
        let retry_after = response.headers().get("retry-after").is_some();
        let body: Value = response.json().await.unwrap_or(Value::Null);
        (status, retry_after, body)
    };
    let (status, _, body) = push(app.clone(), app.client.clone(), "victim".into()).await;
    assert_eq!(status, 201, "{body}");
    let victim = body["request_uri"].as_str().unwrap().to_string();

    let attempts: Vec<usize> = (0..tessera::store::MAX_SCRATCH_VALUES + 500).collect();
    let public = app.public_client.clone();
    let outcomes = futures_lite_free::for_each_concurrent(attempts, 16, {
        let app = app.clone();
        move |i| push(app.clone(), public.clone(), format!("flood-{i}"))
    })
    .await;
    let stored = outcomes.iter().filter(|(status, ..)| *status == 201).count();
    let refused: Vec<_> = outcomes.iter().filter(|(status, ..)| *status != 201).collect();
    assert!(!refused.is_empty(), "the flood reached the bound ({stored} stored)");
    for (status, retry_after, body) in &refused {
        assert_eq!((*status, *retry_after), (503, true), "{body}");
        assert_eq!(body["error"], "temporarily_unavailable");
    }
    // The victim's request is still there, and starts (the login page), using the room kept
    // for flows under way.
    let page = app
        .authorize(&[
            ("client_id".to_string(), app.client.id.clone()),
            ("request_uri".to_string(), victim),
        ])
        .await;
    assert_eq!(page.status(), 302, "{}", page.text().await.unwrap());
    assert!(location(&page).starts_with("/o/login/"));
}
