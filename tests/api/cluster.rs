//! Cluster mode (issue 13): real `tessera` processes sharing one PostgreSQL database (the tests'
//! throwaway server, a fresh database per test), and the CLI working against it while they run;
//! what the database holds opens none of the server's secrets, the client cache is bounded in
//! bytes, and every operation and page answers 503 with `Retry-After` while the database is down.

use std::process::Output;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tessera::store::{GrantStore, Store};

use crate::helpers::*;
use crate::postgres::PgServer;

/// The issuer every node of a test cluster shares (they listen on their own ports).
const ISSUER: &str = "http://tessera.cluster.test";

/// A database and a key-encryption key: what a cluster's nodes and CLI share.
struct Cluster {
    url: String,
    kek: String,
    dir: tempfile::TempDir,
}

impl Cluster {
    async fn new() -> Cluster {
        Cluster::on(PgServer::shared()).await
    }

    async fn on(server: &PgServer) -> Cluster {
        Cluster {
            url: server.create_database().await,
            kek: tessera::keys::database::KeyEncryptionKey::generate(),
            dir: tempfile::tempdir().unwrap(),
        }
    }

    fn env(&self) -> [(&str, &str); 2] {
        [
            ("TESSERA_DATABASE_URL", self.url.as_str()),
            ("TESSERA_KEY_ENCRYPTION_KEY", self.kek.as_str()),
        ]
    }

    /// `tessera ARGS` against the cluster's database, with `stdin`.
    fn cli(&self, args: &[&str], stdin: &str) -> Output {
        run_tessera(self.dir.path(), args, &self.env(), stdin)
    }

    fn ok(&self, args: &[&str], stdin: &str) -> String {
        let output = self.cli(args, stdin);
        assert!(
            output.status.success(),
            "tessera {args:?} failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8(output.stdout).unwrap()
    }

    /// A node serving the cluster.
    fn node(&self) -> ServerProcess {
        self.node_with(&[])
    }

    /// A node serving the cluster, with more `serve` arguments.
    fn node_with(&self, args: &[&str]) -> ServerProcess {
        let args = [&["--issuer", ISSUER], args].concat();
        ServerProcess::start(self.dir.path(), &args, &self.env())
    }

    /// Seeds the user and the confidential app the helpers drive, through the CLI.
    fn seed(&self) -> TestClient {
        self.ok(
            &["user", "create", "--username", USERNAME, "--password-stdin"],
            &format!("{PASSWORD}\n"),
        );
        let app: Value = serde_json::from_str(&self.ok(
            &[
                "app",
                "create",
                "--name",
                "Cluster app",
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
                "--scope",
                "openid read write",
                "--json",
            ],
            "",
        ))
        .unwrap();
        TestClient {
            id: app["client_id"].as_str().unwrap().into(),
            secret: app["client_secret"].as_str().map(str::to_string),
        }
    }
}

/// A browser for `node`, sharing `jar`'s cookies (as one browser behind a load balancer).
fn browser_on(node: &ServerProcess, client: &TestClient, jar: &reqwest::Client) -> Remote {
    let mut remote = Remote::new(ISSUER.into(), node.base.clone(), client.clone(), client.clone());
    remote.http = jar.clone();
    remote
}

/// Polls `check` every 50 ms until it holds or `within` passes; returns how long it took.
async fn eventually<F, Fut>(within: Duration, what: &str, check: F) -> Duration
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let start = Instant::now();
    while !check().await {
        assert!(start.elapsed() < within, "{what} did not happen within {within:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    start.elapsed()
}

#[tokio::test]
async fn three_nodes_share_logins_codes_refresh_tokens_keys_throttling_and_revocations() {
    let cluster = Cluster::new().await;
    // The CLI against an empty database migrates it and just works.
    let client = cluster.seed();
    let (a, b, c) = (cluster.node(), cluster.node(), cluster.node());
    let jar = Remote::new(ISSUER.into(), a.base.clone(), client.clone(), client.clone()).http;
    let (on_a, on_b, on_c) = (
        browser_on(&a, &client, &jar),
        browser_on(&b, &client, &jar),
        browser_on(&c, &client, &jar),
    );

    // The authorization request goes to B, the login to A, the consent and the code to B:
    // sessions and consent pages are shared.
    let pkce = Pkce::new();
    let params = on_b.authorize_query(&pkce, "st");
    let to_login = on_b.authorize(&params).await;
    assert_eq!(to_login.status(), 302);
    assert_eq!(
        on_a.log_in(&location(&to_login), USERNAME, PASSWORD).await.status(),
        303
    );
    let allowed = on_b.consent(&params, "allow").await;
    let code = param(&location(&allowed), "code").expect("a code");
    // The code, issued by B, is exchanged at A, once.
    let tokens: Value = on_a.exchange_code(&code, &pkce.verifier).await.json().await.unwrap();
    let access = tokens["access_token"].as_str().expect("tokens").to_string();

    // Every node publishes the same keys; a token from one verifies with another's JWKS.
    assert_eq!(on_a.get_jwks().await, on_b.get_jwks().await);
    assert_eq!(on_a.get_jwks().await, on_c.get_jwks().await);
    assert!(on_c.verify_with_jwks(&access).await.is_some());

    // 16 concurrent uses of one refresh token, spread over the nodes: exactly one wins, and
    // the reuse revokes the family (the winner's new refresh token is dead too).
    let fresh: Value = on_b
        .token(&client, &[("grant_type", "client_credentials"), ("scope", "read")])
        .await
        .json()
        .await
        .unwrap();
    assert!(fresh["access_token"].is_string());
    let refresh = tokens["refresh_token"].as_str().unwrap().to_string();
    let tasks: Vec<_> = (0..16)
        .map(|i| {
            let node = [&a, &b, &c][i % 3];
            let remote = browser_on(node, &client, &jar);
            let refresh = refresh.clone();
            tokio::spawn(async move {
                let response = remote.refresh(&refresh).await;
                let status = response.status().as_u16();
                let body: Value = response.json().await.unwrap();
                (status, body["refresh_token"].as_str().map(str::to_string))
            })
        })
        .collect();
    let mut statuses = Vec::new();
    let mut successor = None;
    for task in tasks {
        let (status, next) = task.await.unwrap();
        statuses.push(status);
        successor = successor.or(next);
    }
    assert_eq!(statuses.iter().filter(|s| **s == 200).count(), 1, "{statuses:?}");
    assert_eq!(statuses.iter().filter(|s| **s == 400).count(), 15, "{statuses:?}");
    let successor = successor.expect("the winner's refresh token");
    assert_eq!(on_c.refresh(&successor).await.status(), 400, "the family is revoked");
    assert_eq!(
        on_b.exchange_code(&code, &pkce.verifier).await.status(),
        400,
        "a code is redeemed once"
    );

    // The key rotation runbook through the CLI while the nodes run: a generated key is
    // published by every node within the 2 s reload; once promoted, every node signs with it;
    // throughout, a token signed by any node verifies against the JWKS another node serves.
    let generated = cluster.ok(&["keys", "generate", "--alg", "ES256"], "");
    let kid = generated.split_whitespace().next().unwrap().to_string();
    let nodes = [&on_a, &on_b, &on_c];
    let published = eventually(Duration::from_secs(5), "every node publishing the new key", || {
        let kid = &kid;
        async move {
            let mut everywhere = true;
            for remote in nodes {
                everywhere &= remote.get_jwks().await.to_string().contains(kid.as_str());
            }
            everywhere
        }
    })
    .await;
    cluster.ok(&["keys", "promote", &kid], "");
    let promoted = eventually(Duration::from_secs(5), "every node signing with the new key", || {
        let (client, kid) = (&client, &kid);
        async move {
            let mut signed_by_new = true;
            for (i, remote) in nodes.iter().enumerate() {
                let body: Value = remote.client_credentials_as(client, "read").await.json().await.unwrap();
                let token = body["access_token"].as_str().unwrap();
                let (header, _) = jwt_parts(token);
                signed_by_new &= header["kid"] == kid.as_str();
                let other = nodes[(i + 1) % nodes.len()];
                assert!(
                    other.verify_with_jwks(token).await.is_some(),
                    "no request fails mid-rotation"
                );
            }
            signed_by_new
        }
    })
    .await;
    println!("a new key was published everywhere in {published:?}, signed with everywhere in {promoted:?}");
    assert!(published < Duration::from_millis(2600) && promoted < Duration::from_millis(2600));

    // Password guessing spread over both nodes (from a browser that never logged in, so no
    // known-device cookie) is counted once, as on one node: five failures are allowed, the
    // sixth locks the username for this address everywhere.
    let guesser = Remote::new(ISSUER.into(), a.base.clone(), client.clone(), client.clone()).http;
    let (guess_a, guess_b) = (browser_on(&a, &client, &guesser), browser_on(&b, &client, &guesser));
    for i in 0..5 {
        let remote = if i % 2 == 0 { &guess_a } else { &guess_b };
        let failed = remote.log_in("/o/login/", USERNAME, "wrong password").await;
        assert_eq!(failed.status(), 401, "failure {i}");
    }
    // The sixth failure, on B, starts the lockout; A then refuses even the right password.
    assert_eq!(
        guess_b.log_in("/o/login/", USERNAME, "wrong password").await.status(),
        429
    );
    let locked = guess_a.log_in("/o/login/", USERNAME, PASSWORD).await;
    assert_eq!(locked.status(), 429, "the lockout holds on the other node");

    // A grant revoked at one node is refused at the others at once (grants are not cached).
    let (code, pkce) = on_a.get_code().await;
    let grant: Value = on_a.exchange_code(&code, &pkce.verifier).await.json().await.unwrap();
    assert_eq!(
        on_a.revoke(grant["refresh_token"].as_str().unwrap(), None)
            .await
            .status(),
        200
    );
    assert_eq!(
        on_c.refresh(grant["refresh_token"].as_str().unwrap()).await.status(),
        400
    );
    assert_eq!(
        on_b.introspect_as(&on_b.client, grant["access_token"].as_str().unwrap())
            .await["active"],
        false
    );

    // A secret rotated with the CLI: the old one is refused on every node within the client
    // cache's second, the new one works.
    let rotated: Value =
        serde_json::from_str(&cluster.ok(&["app", "rotate-secret", &client.id, "--json"], "")).unwrap();
    let new_client = TestClient {
        id: client.id.clone(),
        secret: rotated["client_secret"].as_str().map(str::to_string),
    };
    assert!(new_client.secret.is_some(), "{rotated}");
    let took = eventually(Duration::from_secs(3), "the old secret refused on every node", || {
        let (on_a, on_b, on_c, client) = (&on_a, &on_b, &on_c, &client);
        async move {
            let mut refused = true;
            for remote in [on_a, on_b, on_c] {
                refused &= remote.client_credentials_as(client, "read").await.status() == 401;
            }
            refused
        }
    })
    .await;
    assert!(
        took < Duration::from_millis(1500),
        "within the one-second cache: {took:?}"
    );
    assert_eq!(on_c.client_credentials_as(&new_client, "read").await.status(), 200);
    let client = new_client;

    // Deleting the app with the CLI stops it on every node within the client cache's second.
    cluster.ok(&["app", "delete", &client.id], "");
    let took = eventually(
        Duration::from_secs(3),
        "the deleted client refused on both nodes",
        || {
            let (on_a, on_b, client) = (&on_a, &on_b, &client);
            async move {
                on_a.client_credentials_as(client, "read").await.status() == 401
                    && on_b.client_credentials_as(client, "read").await.status() == 401
            }
        },
    )
    .await;
    assert!(
        took < Duration::from_millis(1500),
        "within the one-second cache: {took:?}"
    );
    // Each node reports its pool and the database's round trip.
    let metrics = on_a.get_text("/metrics").await;
    assert!(metrics.contains("tessera_database_up 1"), "{metrics}");
    assert!(
        metrics.contains("tessera_database_connections{state=\"open\"}"),
        "{metrics}"
    );
    a.terminate();
    b.terminate();
    c.terminate();
}

#[tokio::test]
async fn nodes_started_at_once_on_an_empty_database_agree_on_one_schema_and_one_keyring() {
    let cluster = Cluster::new().await;
    let nodes: Vec<ServerProcess> = std::thread::scope(|scope| {
        let starting: Vec<_> = (0..3).map(|_| scope.spawn(|| cluster.node())).collect();
        starting.into_iter().map(|n| n.join().unwrap()).collect()
    });
    let http = reqwest::Client::new();
    let mut jwks = Vec::new();
    for node in &nodes {
        let keys: Value = http
            .get(format!("{}/.well-known/jwks.json", node.base))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        jwks.push(keys);
    }
    assert_eq!(
        jwks[0]["keys"].as_array().unwrap().len(),
        2,
        "one ES256 and one RS256 key: {}",
        jwks[0]
    );
    assert!(jwks.iter().all(|k| *k == jwks[0]), "{jwks:?}");
    let listed = cluster.ok(&["keys", "list"], "");
    assert_eq!(listed.lines().count(), 2, "{listed}");
    for node in nodes {
        node.terminate();
    }
}

#[tokio::test]
async fn a_node_refuses_a_missing_or_wrong_encryption_key_and_a_newer_schema() {
    let cluster = Cluster::new().await;
    cluster.seed();
    let run = |env: &[(&str, &str)]| {
        let output = run_tessera(cluster.dir.path(), &["keys", "list"], env, "");
        assert!(!output.status.success());
        String::from_utf8_lossy(&output.stderr).into_owned()
    };
    let missing = run(&[("TESSERA_DATABASE_URL", &cluster.url)]);
    assert!(missing.contains("TESSERA_KEY_ENCRYPTION_KEY"), "{missing}");
    let other = tessera::keys::database::KeyEncryptionKey::generate();
    let wrong = run(&[
        ("TESSERA_DATABASE_URL", &cluster.url),
        ("TESSERA_KEY_ENCRYPTION_KEY", &other),
    ]);
    assert!(wrong.contains("does not open with this key-encryption key"), "{wrong}");

    // A database migrated by a newer Tessera is refused, by the CLI and by serve.
    let (db, connection) = tokio_postgres::connect(&cluster.url, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(connection);
    db.batch_execute("INSERT INTO tessera_schema (version, applied_at) VALUES (999, 0)")
        .await
        .unwrap();
    let newer = cluster.cli(&["serve", "--addr", "127.0.0.1:0"], "");
    assert!(!newer.status.success());
    let message = String::from_utf8_lossy(&newer.stderr);
    assert!(
        message.contains("version 999, newer than this Tessera knows"),
        "{message}"
    );
}

#[tokio::test]
async fn db_import_moves_a_node_with_its_users_sessions_tokens_and_keys() {
    // A single node on its data folder, with a user who logged in and holds tokens.
    let node_dir = tempfile::tempdir().unwrap();
    let local = |args: &[&str], stdin: &str| {
        let output = run_tessera(node_dir.path(), args, &[], stdin);
        assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
        String::from_utf8(output.stdout).unwrap()
    };
    local(
        &["user", "create", "--username", USERNAME, "--password-stdin"],
        &format!("{PASSWORD}\n"),
    );
    let app: Value = serde_json::from_str(&local(
        &[
            "app",
            "create",
            "--name",
            "Moved app",
            "--client-type",
            "confidential",
            "--grant-type",
            "authorization-code",
            "--grant-type",
            "refresh-token",
            "--redirect-uri",
            REDIRECT_URI,
            "--json",
        ],
        "",
    ))
    .unwrap();
    let client = TestClient {
        id: app["client_id"].as_str().unwrap().into(),
        secret: app["client_secret"].as_str().map(str::to_string),
    };
    let single = ServerProcess::start(node_dir.path(), &["--issuer", ISSUER], &[]);
    let before = browser_on(
        &single,
        &client,
        &Remote::new(ISSUER.into(), single.base.clone(), client.clone(), client.clone()).http,
    );
    let (code, pkce) = before.get_code().await;
    let tokens: Value = before.exchange_code(&code, &pkce.verifier).await.json().await.unwrap();
    // The user adds an authenticator app (on another device: the browser above keeps its
    // password-only session).
    let phone = browser_on(
        &single,
        &client,
        &Remote::new(ISSUER.into(), single.base.clone(), client.clone(), client.clone()).http,
    );
    let (secret, used_step) = crate::factors::enrol_app(&phone).await;
    single.terminate();

    // Import into an empty cluster database.
    let cluster = Cluster::new().await;
    let summary = cluster.ok(
        &[
            "db",
            "import",
            "--from-data-dir",
            node_dir.path().join("data").to_str().unwrap(),
            "--from-keys-dir",
            node_dir.path().join("keys").to_str().unwrap(),
        ],
        "",
    );
    assert!(
        summary.contains("imported 1 clients, 1 users, 1 grants, 1 consents, 1 refresh tokens, 2 sessions"),
        "{summary}"
    );
    assert!(summary.contains("1 sign-in factors"), "{summary}");
    let again = cluster.cli(
        &[
            "db",
            "import",
            "--from-data-dir",
            node_dir.path().join("data").to_str().unwrap(),
        ],
        "",
    );
    assert!(
        !again.status.success(),
        "a second import into a non-empty database is refused"
    );

    // On the cluster: the old access token verifies, the refresh token works, the browser's
    // session still holds (no login page), and the password still logs in.
    let node = cluster.node();
    let after = browser_on(&node, &client, &before.http);
    assert!(after
        .verify_with_jwks(tokens["access_token"].as_str().unwrap())
        .await
        .is_some());
    let refreshed = after.refresh(tokens["refresh_token"].as_str().unwrap()).await;
    assert_eq!(refreshed.status(), 200, "the node's refresh token works on the cluster");
    let pkce = Pkce::new();
    let remembered = after.authorize(&after.authorize_query(&pkce, "s2")).await;
    assert_eq!(remembered.status(), 302);
    assert!(
        location(&remembered).starts_with(REDIRECT_URI),
        "session and consent moved: {}",
        location(&remembered)
    );
    let fresh_browser = browser_on(
        &node,
        &client,
        &Remote::new(ISSUER.into(), node.base.clone(), client.clone(), client.clone()).http,
    );
    // The app moved, and its sealed secret still opens on the cluster: the next code signs in.
    let (csrf, next) = crate::factors::password_step(&fresh_browser, "/o/login/").await;
    let code = crate::factors::code_at(&secret, used_step + 1);
    let signed_in = crate::factors::submit_code(&fresh_browser, &csrf, &next, &code).await;
    assert_eq!(signed_in.status(), 303);
    assert_eq!(location(&signed_in), "/");
    node.terminate();
}

#[tokio::test]
async fn nodes_survive_a_killed_peer_and_answer_503_while_the_database_is_down() {
    let server = PgServer::dedicated();
    let cluster = Cluster::on(&server).await;
    let client = cluster.seed();
    let (a, b) = (cluster.node(), cluster.node());
    let jar = Remote::new(ISSUER.into(), a.base.clone(), client.clone(), client.clone()).http;
    let (on_a, on_b) = (browser_on(&a, &client, &jar), browser_on(&b, &client, &jar));

    // A user logs in on A; A is killed mid-flow; B carries on with the same session.
    let pkce = Pkce::new();
    let params = on_a.authorize_query(&pkce, "st");
    let to_login = on_a.authorize(&params).await;
    assert_eq!(
        on_a.log_in(&location(&to_login), USERNAME, PASSWORD).await.status(),
        303
    );
    a.kill();
    let allowed = on_b.consent(&params, "allow").await;
    let code = param(&location(&allowed), "code").expect("a code from B");
    let tokens: Value = on_b.exchange_code(&code, &pkce.verifier).await.json().await.unwrap();
    let refresh = tokens["refresh_token"].as_str().unwrap().to_string();

    // The database goes away: requests get 503 temporarily_unavailable with Retry-After (never
    // a 500), readiness fails, liveness holds.
    server.stop();
    let down = on_b.refresh(&refresh).await;
    assert_eq!(down.status(), 503);
    assert!(down.headers().contains_key("retry-after"));
    let body: Value = down.json().await.unwrap();
    assert_eq!(body["error"], "temporarily_unavailable");
    let ready = on_b.http.get(on_b.url("/readyz")).send().await.unwrap();
    assert_eq!(ready.status(), 503);
    let live = on_b.http.get(on_b.url("/healthz")).send().await.unwrap();
    assert_eq!(live.status(), 200);

    // It comes back: the pool reconnects and the refresh token, untouched by the failed
    // attempt, works once.
    server.restart();
    let took = eventually(Duration::from_secs(10), "B serving again", || {
        let on_b = &on_b;
        async move { on_b.http.get(on_b.url("/readyz")).send().await.unwrap().status() == 200 }
    })
    .await;
    println!("B was ready {took:?} after the database restarted");
    assert_eq!(on_b.refresh(&refresh).await.status(), 200);
    assert_eq!(on_b.refresh(&refresh).await.status(), 400, "and only once");
    b.terminate();
}

/// What one refresh-token family saw while the database went away and came back.
#[derive(Default)]
struct Family {
    /// The refresh token the client holds.
    current: Option<String>,
    /// Tokens it exchanged for a new one.
    spent: Vec<String>,
    succeeded: u64,
    unavailable: u64,
    /// 503s whose refresh the database had committed (the answer was lost with the
    /// connection): presenting that token again is reuse.
    committed_unanswered: u64,
    slowest_503: Duration,
}

impl Family {
    /// Refreshes through `nodes` in turn until `stop`; on a 503 waits for the database to
    /// come back, asks it whether the refresh had been committed, and carries on accordingly.
    async fn drive(mut self, nodes: &[Remote], url: &str, stop: &std::sync::atomic::AtomicBool) -> Family {
        let mut turn = 0;
        while !stop.load(std::sync::atomic::Ordering::Relaxed) {
            turn += 1;
            let node = &nodes[turn % nodes.len()];
            let Some(token) = self.current.clone() else { break };
            let started = Instant::now();
            let response = node.refresh(&token).await;
            let status = response.status().as_u16();
            let retry_after = response.headers().contains_key("retry-after");
            let body: Value = response.json().await.unwrap();
            match status {
                200 => {
                    self.current = Some(body["refresh_token"].as_str().unwrap().to_string());
                    self.spent.push(token);
                    self.succeeded += 1;
                }
                503 => {
                    assert_eq!(body["error"], "temporarily_unavailable");
                    assert!(retry_after, "a 503 says when to retry");
                    self.slowest_503 = self.slowest_503.max(started.elapsed());
                    self.unavailable += 1;
                    self.settle(nodes, url, token).await;
                }
                _ => panic!("only 200 or 503 while the database restarts, not {status}: {body}"),
            }
        }
        self
    }

    /// After a 503 for `token`: once every node is ready, the database says whether the
    /// refresh happened; a token it spent is refused (reuse), one it did not still works.
    async fn settle(&mut self, nodes: &[Remote], url: &str, token: String) {
        for node in nodes {
            eventually(Duration::from_secs(30), "the node ready again", || async {
                let ready = node.http.get(node.url("/readyz")).send().await;
                ready.is_ok_and(|r| r.status() == 200)
            })
            .await;
        }
        let store = open_database(url).await;
        let presented = tessera::oauth::refresh::PresentedRefresh::parse(&token).expect("a refresh token");
        let record = store
            .get_refresh(&presented.family)
            .await
            .unwrap()
            .expect("a token the client received is in the database");
        if !record.is_current(&presented.family, &presented.token) {
            self.committed_unanswered += 1;
            let refused = nodes[0].refresh(&token).await;
            assert_eq!(refused.status(), 400, "a token spent before its 503 is reuse");
            self.spent.push(token);
            self.current = None;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_database_restart_under_load_gives_only_503s_and_loses_or_duplicates_no_token() {
    const FAMILIES: usize = 8;
    let server = PgServer::dedicated();
    let cluster = Cluster::on(&server).await;
    let client = cluster.seed();
    // The load is one address and one client, far above the default rate limits.
    std::fs::write(
        cluster.dir.path().join("tessera.toml"),
        "rate_limit_per_client = 0\nrate_limit_per_address = 0\n",
    )
    .unwrap();
    let (a, b) = (
        cluster.node_with(&["--config", "tessera.toml"]),
        cluster.node_with(&["--config", "tessera.toml"]),
    );
    let jar = Remote::new(ISSUER.into(), a.base.clone(), client.clone(), client.clone()).http;
    let nodes = vec![browser_on(&a, &client, &jar), browser_on(&b, &client, &jar)];
    let mut families = Vec::new();
    for n in 0..FAMILIES {
        let tokens = nodes[n % 2].get_tokens().await;
        families.push(Family {
            current: Some(tokens["refresh_token"].as_str().unwrap().to_string()),
            ..Family::default()
        });
    }

    // Load on both nodes; the database stops for 2 s in the middle and comes back.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let tasks: Vec<_> = families
        .into_iter()
        .map(|family| {
            let (nodes, url, stop) = (nodes.clone(), cluster.url.clone(), stop.clone());
            tokio::spawn(async move { family.drive(&nodes, &url, &stop).await })
        })
        .collect();
    tokio::time::sleep(Duration::from_secs(1)).await;
    server.stop();
    tokio::time::sleep(Duration::from_millis(500)).await;
    for node in &nodes {
        let ready = node.http.get(node.url("/readyz")).send().await.unwrap();
        assert_eq!(ready.status(), 503, "not ready while the database is down");
    }
    tokio::time::sleep(Duration::from_millis(1500)).await;
    server.restart();
    for node in &nodes {
        let took = eventually(Duration::from_secs(30), "the node ready again", || async {
            node.http.get(node.url("/readyz")).send().await.unwrap().status() == 200
        })
        .await;
        println!("ready {took:?} after the database restarted");
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let mut families = Vec::new();
    for task in tasks {
        families.push(task.await.expect("a family saw only 200s and 503s"));
    }

    let sum = |f: fn(&Family) -> u64| families.iter().map(f).sum::<u64>();
    let slowest = families.iter().map(|f| f.slowest_503).max().unwrap();
    println!(
        "{} refreshes, {} 503s (slowest {slowest:?}), {} committed but unanswered",
        sum(|f| f.succeeded),
        sum(|f| f.unavailable),
        sum(|f| f.committed_unanswered)
    );
    assert!(sum(|f| f.unavailable) >= FAMILIES as u64, "every family met the outage");
    assert!(sum(|f| f.succeeded) >= 100, "real load on both sides of the outage");
    assert!(
        slowest < Duration::from_secs(5),
        "a 503 comes within the pool's wait: {slowest:?}"
    );

    // Nothing lost, nothing duplicated: the live refresh tokens are exactly those the clients
    // hold; each works once, and a spent one is refused.
    let store = open_database(&cluster.url).await;
    let held: Vec<&String> = families.iter().filter_map(|f| f.current.as_ref()).collect();
    let active = store.count_active_refresh_tokens(tessera::now()).await;
    assert_eq!(
        active.unwrap() as usize,
        held.len(),
        "no live token the clients never received"
    );
    for family in &families {
        if let Some(last) = family.spent.last() {
            assert_eq!(nodes[1].refresh(last).await.status(), 400, "a spent token stays spent");
        } else if let Some(current) = &family.current {
            assert_eq!(nodes[0].refresh(current).await.status(), 200, "a held token works");
        }
    }
    a.terminate();
    b.terminate();
}

/// A statement the database cuts off (as it does to every statement in flight when it shuts
/// down, the error arriving as a reported `57P01`, not as a broken connection) is a 503 too,
/// and changes nothing: the refresh token still works afterwards, at once (the cut connection
/// is not handed to the next request).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_statement_the_database_cuts_off_is_a_503_and_changes_nothing() {
    let cluster = Cluster::new().await;
    let client = cluster.seed();
    let node = cluster.node();
    let jar = Remote::new(ISSUER.into(), node.base.clone(), client.clone(), client.clone()).http;
    let on_node = browser_on(&node, &client, &jar);
    let tokens = on_node.get_tokens().await;
    let refresh = tokens["refresh_token"].as_str().unwrap().to_string();

    // Hold every refresh token's row, so the node's rotation waits on the lock.
    let (mut db, connection) = tokio_postgres::connect(&cluster.url, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(connection);
    let holder = db.transaction().await.unwrap();
    holder
        .batch_execute("SELECT 1 FROM refresh_tokens FOR UPDATE")
        .await
        .unwrap();
    let waiting = {
        let on_node = on_node.clone();
        let refresh = refresh.clone();
        tokio::spawn(async move {
            let response = on_node.refresh(&refresh).await;
            let retry_after = response.headers().contains_key("retry-after");
            (
                response.status().as_u16(),
                retry_after,
                response.json::<Value>().await.unwrap(),
            )
        })
    };
    let (observer, connection) = tokio_postgres::connect(&cluster.url, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(connection);
    let blocked = "SELECT pid FROM pg_stat_activity \
                   WHERE datname = current_database() AND wait_event_type = 'Lock'";
    eventually(
        Duration::from_secs(10),
        "the node's rotation waits on the lock",
        || async { !observer.query(blocked, &[]).await.unwrap().is_empty() },
    )
    .await;
    let terminated = observer
        .query(&format!("SELECT pg_terminate_backend(pid) FROM ({blocked}) AS b"), &[])
        .await
        .unwrap();
    assert_eq!(terminated.len(), 1);

    let (status, retry_after, body) = waiting.await.unwrap();
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["error"], "temporarily_unavailable");
    assert!(retry_after, "a 503 says when to retry");
    holder.rollback().await.unwrap();
    assert_eq!(on_node.refresh(&refresh).await.status(), 200, "the token was not spent");
    assert_eq!(on_node.refresh(&refresh).await.status(), 400, "and is spent once");
    node.terminate();
}

/// `sslmode=require` in the URL means TLS to the database, verified against the public roots
/// and `database_ca_file`: with the server's authority named the CLI and a node work over TLS
/// (as PostgreSQL itself reports), and without it they refuse the unknown certificate.
#[tokio::test]
async fn sslmode_require_speaks_tls_to_the_database_and_checks_its_certificate() {
    let (server, ca) = PgServer::dedicated_with_tls();
    let mut cluster = Cluster::on(&server).await;
    let plain_url = cluster.url.clone();
    cluster.url = format!("{plain_url}?sslmode=require");
    let config = cluster.dir.path().join("tls.toml");
    std::fs::write(&config, format!("database_ca_file = {:?}\n", ca.display().to_string())).unwrap();
    let config = config.display().to_string();

    // Without the authority: the certificate is unknown, and nothing is done.
    let refused = cluster.cli(&["user", "list"], "");
    assert!(!refused.status.success());
    let message = String::from_utf8_lossy(&refused.stderr);
    assert!(message.to_lowercase().contains("certificate"), "{message}");

    // With it: the CLI and a node work, over TLS.
    let env = [cluster.env().as_slice(), &[("TESSERA_CONFIG", config.as_str())]].concat();
    let created = run_tessera(
        cluster.dir.path(),
        &["user", "create", "--username", USERNAME, "--password-stdin"],
        &env,
        &format!("{PASSWORD}\n"),
    );
    assert!(created.status.success(), "{}", String::from_utf8_lossy(&created.stderr));
    let node = ServerProcess::start(cluster.dir.path(), &["--issuer", ISSUER], &env);
    let ready = reqwest::get(format!("{}/readyz", node.base)).await.unwrap();
    assert_eq!(ready.status(), 200);

    let (db, connection) = tokio_postgres::connect(&plain_url, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(connection);
    let rows = db
        .query(
            "SELECT s.ssl FROM pg_stat_activity a JOIN pg_stat_ssl s USING (pid) \
             WHERE a.application_name = 'tessera' AND a.datname = current_database()",
            &[],
        )
        .await
        .unwrap();
    assert!(!rows.is_empty(), "the node holds connections");
    assert!(
        rows.iter().all(|row| row.get::<_, bool>(0)),
        "every one of them over TLS"
    );
    node.terminate();
}

#[tokio::test]
async fn a_request_pushed_to_one_node_is_used_once_across_the_nodes() {
    let cluster = Cluster::new().await;
    let client = cluster.seed();
    let (a, b, c) = (cluster.node(), cluster.node(), cluster.node());
    let jar = Remote::new(ISSUER.into(), a.base.clone(), client.clone(), client.clone()).http;
    let nodes = [&a, &b, &c].map(|node| browser_on(node, &client, &jar));
    // Log in and approve once (the login on A, the consent on B), so a request goes straight
    // to a code.
    let pkce = Pkce::new();
    let params = nodes[1].authorize_query(&pkce, "st");
    let to_login = nodes[1].authorize(&params).await;
    assert_eq!(
        nodes[0].log_in(&location(&to_login), USERNAME, PASSWORD).await.status(),
        303
    );
    assert!(param(&location(&nodes[1].consent(&params, "allow").await), "code").is_some());

    // Pushed to A...
    let mut form: Vec<(String, String)> = params.into_iter().filter(|(name, _)| name != "client_id").collect();
    form.retain(|(name, _)| name != "state");
    form.push(("state".into(), "pushed".into()));
    let pushed: Value = nodes[0]
        .http
        .post(nodes[0].url("/o/par/"))
        .basic_auth(&client.id, client.secret.as_ref())
        .form(&form)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let by_reference = vec![
        ("client_id".to_string(), client.id.clone()),
        (
            "request_uri".to_string(),
            pushed["request_uri"].as_str().expect("a request_uri").to_string(),
        ),
    ];
    // ...used by 30 browsers at once on all three nodes: one code between them.
    let tasks: Vec<_> = (0..30)
        .map(|i| {
            let (node, by_reference) = (nodes[i % 3].clone(), by_reference.clone());
            tokio::spawn(async move {
                let response = node.authorize(&by_reference).await;
                response
                    .headers()
                    .get("location")
                    .map(|l| l.to_str().unwrap().to_string())
            })
        })
        .collect();
    let mut codes = 0;
    for task in tasks {
        if let Some(location) = task.await.unwrap() {
            assert_eq!(param(&location, "state").as_deref(), Some("pushed"), "{location}");
            codes += 1;
        }
    }
    assert_eq!(codes, 1, "one pushed request, one code, whichever node answers");
}

/// DPoP (RFC 9449) in cluster mode: a nonce one node gives is accepted by another (§8: every
/// node derives it from a secret they share), and a proof one node accepted is refused by the
/// other (§11.1: its `jti` is in the shared database). Proofs name the cluster's issuer URL.
#[tokio::test]
async fn a_dpop_nonce_from_one_node_works_on_another_and_a_proof_is_used_once_across_nodes() {
    let cluster = Cluster::new().await;
    let client = cluster.seed();
    let config = cluster.dir.path().join("dpop.toml");
    std::fs::write(&config, "dpop_nonce = true\n").unwrap();
    let env = [
        cluster.env().as_slice(),
        &[("TESSERA_CONFIG", config.to_str().unwrap())],
    ]
    .concat();
    let a = ServerProcess::start(cluster.dir.path(), &["--issuer", ISSUER], &env);
    let b = ServerProcess::start(cluster.dir.path(), &["--issuer", ISSUER], &env);
    let http = reqwest::Client::new();
    let token = |node: &ServerProcess, proof: &str| {
        http.post(format!("{}/o/token/", node.base))
            .basic_auth(&client.id, client.secret.as_ref())
            .header("DPoP", proof)
            .form(&[("grant_type", "client_credentials"), ("scope", "read")])
            .send()
    };
    let mut jose = crate::dpop::Jose::with_keys(&[("key", "ES256")]).await;
    let htu = format!("{ISSUER}/o/token/");
    let proof = jose.proof("key", "POST", &htu, serde_json::json!({})).await;
    let asked = token(&a, &proof).await.unwrap();
    assert_eq!(asked.status(), 400);
    let nonce = asked.headers()["dpop-nonce"].to_str().unwrap().to_string();
    let proof = jose
        .proof("key", "POST", &htu, serde_json::json!({ "nonce": nonce }))
        .await;
    let issued = token(&b, &proof).await.unwrap();
    assert_eq!(issued.status(), 200);
    assert_eq!(issued.json::<Value>().await.unwrap()["token_type"], "DPoP");
    let replayed = token(&a, &proof).await.unwrap();
    assert_eq!(replayed.status(), 400);
    assert_eq!(replayed.json::<Value>().await.unwrap()["error"], "invalid_dpop_proof");
}

// The third adversarial review (issue 26, `SECURITY.md`), each finding as the attack that
// found it; each test failed on the code the review ran against.

/// Every `bytea` value in every table of the database at `url`, by table.
async fn bytea_values(url: &str) -> Vec<(String, Vec<u8>)> {
    let (db, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls).await.unwrap();
    tokio::spawn(connection);
    let columns = db
        .query(
            "SELECT table_name::text, column_name::text FROM information_schema.columns \
             WHERE table_schema = 'public' AND data_type = 'bytea'",
            &[],
        )
        .await
        .unwrap();
    let mut values = Vec::new();
    for column in columns {
        let (table, name): (String, String) = (column.get(0), column.get(1));
        for row in db
            .query(&format!("SELECT {name} FROM {table} WHERE {name} IS NOT NULL"), &[])
            .await
            .unwrap()
        {
            values.push((table.clone(), row.get::<_, Vec<u8>>(0)));
        }
    }
    values
}

/// Finding 8: in cluster mode the server secrets that seal scratch values and sign cookies
/// were stored in the clear: a reader of the database opened pushed requests and playground
/// state (client secrets, PKCE verifiers, tokens) and forged `tessera_device` cookies (which
/// spare a browser the login slow-downs). Now they are sealed under the key-encryption key,
/// and nothing secret opens with what the database holds.
#[tokio::test]
async fn nothing_secret_opens_with_the_databases_own_contents() {
    use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_256_GCM, NONCE_LEN};
    let (app, url) = spawn_on_postgres(|config| config.dpop_nonce = true).await;
    // A pushed request (a scratch value), a device cookie, a DPoP nonce.
    let pkce = Pkce::new();
    let query: Vec<(String, String)> = app
        .authorize_query(&pkce, "s")
        .into_iter()
        .filter(|(name, _)| name != "client_id")
        .collect();
    let pushed = app
        .http
        .post(app.url("/o/par/"))
        .basic_auth(&app.client.id, app.client.secret.as_ref())
        .form(&query)
        .send()
        .await
        .unwrap();
    assert_eq!(pushed.status(), 201);
    let login = app.log_in("/o/login/", USERNAME, PASSWORD).await;
    let device_cookie = login
        .headers()
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find_map(|c| c.strip_prefix("tessera_device="))
        .and_then(|c| c.split(';').next())
        .expect("a device cookie")
        .to_string();
    let nonce = app.provider.dpop_nonce().await.unwrap();

    let values = bytea_values(&url).await;
    let secrets: Vec<&Vec<u8>> = values
        .iter()
        .filter(|(t, _)| t == "server_secrets")
        .map(|(_, v)| v)
        .collect();
    assert!(secrets.len() >= 3, "{} server secrets", secrets.len());
    let scratch: Vec<&Vec<u8>> = values.iter().filter(|(t, _)| t == "scratch").map(|(_, v)| v).collect();
    assert!(!scratch.is_empty());
    // Every 32 bytes the database holds, wherever, tried as each key.
    let candidates: Vec<&[u8]> = values.iter().flat_map(|(_, v)| v.windows(32).step_by(1)).collect();
    let (signed, mac) = device_cookie.rsplit_once('.').unwrap();
    use base64::Engine;
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let mac = b64.decode(mac).unwrap();
    let nonce = b64.decode(nonce).unwrap();
    for key in &candidates {
        let hmac = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, key);
        assert!(
            ring::hmac::verify(&hmac, format!("device\0{signed}").as_bytes(), &mac).is_err(),
            "the device cookie's key is in the database"
        );
        assert!(
            ring::hmac::verify(&hmac, &nonce[..8], &nonce[8..]).is_err(),
            "the DPoP nonce key is in the database"
        );
        let aead = LessSafeKey::new(UnboundKey::new(&AES_256_GCM, key).unwrap());
        for value in &scratch {
            let (nonce, sealed) = value.split_at(NONCE_LEN);
            let mut sealed = sealed.to_vec();
            let opened = aead.open_in_place(
                Nonce::try_assume_unique_for_key(nonce).unwrap(),
                Aad::from("pushed-authorization-request"),
                &mut sealed,
            );
            assert!(
                opened.is_err(),
                "a pushed request opens with the database's own contents"
            );
        }
    }
    // And the server itself still opens what it sealed: the pushed request is usable.
    let body: Value = pushed.json().await.unwrap();
    let page = app
        .authorize(&[
            ("client_id".into(), app.client.id.clone()),
            ("request_uri".into(), body["request_uri"].as_str().unwrap().into()),
        ])
        .await;
    assert_eq!(page.status(), 200, "the consent page");
}

/// Finding 8, upgrading: a secret an earlier version stored in the clear is replaced by a new
/// sealed one on first use (it was readable by anyone who read the database).
#[tokio::test]
async fn a_server_secret_stored_in_the_clear_is_replaced_by_a_sealed_one() {
    let url = crate::postgres::PgServer::shared().create_database().await;
    let store = open_database(&url).await;
    store.migrate().await.unwrap();
    use tessera::store::Store;
    let clear = [42u8; 32];
    store.server_secret("cookie-hmac", &clear).await.unwrap();
    let (app, _) = spawn_on_postgres(|config| config.database_url = Some(url.clone())).await;
    assert_eq!(app.log_in("/o/login/", USERNAME, PASSWORD).await.status(), 303);
    let stored = store.server_secret("cookie-hmac", &clear).await.unwrap();
    assert_ne!(stored, clear.to_vec(), "replaced");
    assert!(stored.len() > 32, "sealed: {} bytes", stored.len());
}

/// A database from before the trail's index (migration 8) gets its entries' terms computed in
/// SQL at the upgrade: the same terms the server computes, so every filter finds old entries.
#[tokio::test]
async fn an_audit_trail_from_before_its_index_is_found_by_every_filter() {
    use tessera::store::{audit_id, AuditActor, AuditFilter, AuditRecord, AuditStore};
    let url = crate::postgres::PgServer::shared().create_database().await;
    let store = open_database(&url).await;
    store.migrate().await.unwrap();
    let entry = |n: u32, kind: &str, actor: &str, action: &str, target: &str| AuditRecord {
        id: audit_id(1_000 + i64::from(n), &format!("{n:08x}")),
        at_ms: 1_000 + i64::from(n),
        actor: AuditActor {
            kind: kind.into(),
            id: format!("id-{actor}"),
            name: actor.into(),
        },
        address: None,
        action: action.into(),
        target_kind: Some("user".into()),
        target_id: Some(format!("id-{target}")),
        target_name: Some(target.into()),
        outcome: "ok".into(),
    };
    store
        .append_audit(&entry(1, "user", "olivia", "user.disable", "bob"))
        .await
        .unwrap();
    store
        .append_audit(&entry(2, "client", "Ops bot", "user.enable", "bob"))
        .await
        .unwrap();
    store
        .append_audit(&entry(3, "cli", "root", "client.create", "Billing ü"))
        .await
        .unwrap();
    // Back to version 7: the trail without its terms (and without what later versions add).
    back_to_schema(&url, 7).await;
    assert_eq!(store.migrate().await.unwrap(), [8, 9, 10, 11, 12, 13]);
    let found = |actor: Option<&str>, action: Option<&str>, target: Option<&str>| {
        let filter = AuditFilter {
            actor: actor.map(str::to_string),
            action: action.map(str::to_string),
            target: target.map(str::to_string),
            ..Default::default()
        };
        let store = &store;
        async move {
            let page = store.audit_page(&filter, None, 10).await.unwrap();
            page.iter().map(|e| e.at_ms - 1_000).collect::<Vec<_>>()
        }
    };
    assert_eq!(found(Some("olivia"), None, None).await, [1]);
    assert_eq!(found(Some("id-olivia"), None, None).await, [1]);
    assert_eq!(found(Some("id-Ops bot"), None, None).await, [2]);
    assert!(
        found(Some("Ops bot"), None, None).await.is_empty(),
        "a client's name finds nothing"
    );
    assert_eq!(found(Some("root"), None, None).await, [3]);
    assert_eq!(found(None, Some("user.enable"), None).await, [2]);
    assert_eq!(found(None, None, Some("bob")).await, [2, 1]);
    assert_eq!(found(None, None, Some("id-bob")).await, [2, 1]);
    assert_eq!(found(None, None, Some("Billing ü")).await, [3]);
    // Entries appended after the upgrade are indexed as they are written.
    store
        .append_audit(&entry(4, "user", "olivia", "user.enable", "carol"))
        .await
        .unwrap();
    assert_eq!(found(Some("olivia"), None, None).await, [4, 1]);
}

/// Undoes the migrations after `version`, newest first, as if the database were that old.
async fn back_to_schema(url: &str, version: i64) {
    const UNDO: &[(i64, &str)] = &[
        (
            13,
            "DROP TABLE record_counts; DROP TRIGGER clients_counted_in ON clients; \
             DROP TRIGGER clients_counted_out ON clients; DROP TRIGGER users_counted_in ON users; \
             DROP TRIGGER users_counted_out ON users; DROP TRIGGER grants_counted_in ON grants; \
             DROP TRIGGER grants_counted_out ON grants; DROP TRIGGER grants_counted_changed ON grants; \
             DROP FUNCTION record_counts_inserted(), record_counts_deleted(), live_grants_inserted(), \
             live_grants_deleted(), live_grants_updated(), record_counts_add(text, bigint)",
        ),
        (
            12,
            "DROP TRIGGER refresh_tokens_purge_at ON refresh_tokens; DROP FUNCTION refresh_tokens_purge_at(); \
             ALTER TABLE refresh_tokens DROP COLUMN purge_at; DROP TRIGGER grants_due_at ON grants; \
             DROP FUNCTION grants_due_at(); ALTER TABLE grants DROP COLUMN due_at; \
             DROP INDEX codes_by_expiry, sessions_by_expiry, revoked_access_by_expiry, scratch_by_expiry",
        ),
        (11, "DROP INDEX clients_by_access_ttl, clients_unused_registrations"),
        (10, "ALTER TABLE refresh_tokens DROP COLUMN current_hash"),
        (9, "DROP TABLE upgrades"),
        (
            8,
            "DROP TRIGGER audit_terms_on_insert ON audit; DROP FUNCTION audit_terms_on_insert(); \
             DROP FUNCTION audit_terms_of(text, jsonb); DROP TABLE audit_terms",
        ),
    ];
    let (db, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls).await.unwrap();
    tokio::spawn(connection);
    for (undone, sql) in UNDO.iter().filter(|(v, _)| *v > version) {
        db.batch_execute(sql).await.unwrap();
        db.execute("DELETE FROM tessera_schema WHERE version = $1", &[undone])
            .await
            .unwrap();
    }
}

/// A database from before refresh families and the purge's indexes (version 9): a spent
/// token's row beside its successor's, a grant without refresh tokens. After the upgrade the
/// successor refreshes in place, the spent token stays spent, and the purge finds what is
/// due: the expired family goes with its grant, the grant that never had a family goes, the
/// rest stays (issue 29).
#[tokio::test]
async fn a_database_from_before_refresh_families_keeps_its_tokens_and_purges_by_index() {
    use tessera::store::{CurrentRefresh, RefreshRecord, Rotation};
    let url = crate::postgres::PgServer::shared().create_database().await;
    let store = open_database(&url).await;
    store.migrate().await.unwrap();
    back_to_schema(&url, 9).await;
    let (db, connection) = tokio_postgres::connect(&url, tokio_postgres::NoTls).await.unwrap();
    tokio::spawn(connection);
    db.batch_execute(
        "INSERT INTO grants (grant_id, client_id, user_id, scope, audience, auth_time, created_at, revoked, amr) VALUES \
           ('live', 'c', 'u', 'read', 'a', 1, 100, false, '{pwd}'), \
           ('stale', 'c', 'u', 'read', 'a', 1, 100, false, '{pwd}'), \
           ('bare', 'c', 'u', 'read', 'a', 1, 100, false, '{pwd}'), \
           ('new', 'c', 'u', 'read', 'a', 1, 950, false, '{pwd}'); \
         INSERT INTO refresh_tokens (token_hash, grant_id, issued_at, expires_at, rotated) VALUES \
           ('\\x0101010101010101010101010101010101010101010101010101010101010101', 'live', 100, 5000, true), \
           ('\\x0202020202020202020202020202020202020202020202020202020202020202', 'live', 200, 5000, false), \
           ('\\x0303030303030303030303030303030303030303030303030303030303030303', 'stale', 100, 500, false);",
    )
    .await
    .unwrap();
    assert_eq!(store.migrate().await.unwrap(), [10, 11, 12, 13]);
    let spent = store.get_refresh(&[1; 32]).await.unwrap().unwrap();
    assert_eq!(spent.current, CurrentRefresh::Spent);
    let successor = store.get_refresh(&[2; 32]).await.unwrap().unwrap();
    assert_eq!(successor.current, CurrentRefresh::First);
    let next = RefreshRecord {
        current: CurrentRefresh::Later([9; 32]),
        issued_at: 300,
        expires_at: 6000,
        ..successor
    };
    assert_eq!(
        store.rotate_refresh(&[2; 32], &[2; 32], &next).await.unwrap(),
        Rotation::Rotated
    );
    assert!(matches!(
        store.rotate_refresh(&[1; 32], &[1; 32], &next).await.unwrap(),
        Rotation::Spent(_)
    ));
    let purged = store.purge_expired(1000, 900, 900).await.unwrap();
    assert_eq!((purged.refresh_tokens, purged.grants), (1, 2), "{purged:?}");
    assert!(store.get_grant("stale").await.unwrap().is_none());
    assert!(store.get_grant("bare").await.unwrap().is_none());
    for kept in ["live", "new"] {
        assert!(store.get_grant(kept).await.unwrap().is_some(), "{kept}");
    }
    assert_eq!(store.get_refresh(&[2; 32]).await.unwrap(), Some(next));
    // Rows a node of the earlier version inserts get their purge time from the triggers.
    db.batch_execute(
        "INSERT INTO grants (grant_id, client_id, user_id, scope, audience, auth_time, created_at, revoked, amr) VALUES \
           ('old-node', 'c', 'u', 'read', 'a', 1, 100, false, '{pwd}'); \
         INSERT INTO refresh_tokens (token_hash, grant_id, issued_at, expires_at, rotated) VALUES \
           ('\\x0404040404040404040404040404040404040404040404040404040404040404', 'old-node', 100, 500, false);",
    )
    .await
    .unwrap();
    let purged = store.purge_expired(1000, 900, 900).await.unwrap();
    assert_eq!((purged.refresh_tokens, purged.grants), (1, 1), "{purged:?}");
    assert!(store.get_grant("old-node").await.unwrap().is_none());
}

/// A database from before the record counters (version 12) starts them from its rows, and
/// every later write keeps them: rows inserted and deleted a statement at a time or many at
/// once, grants revoked and made live again (issue 29).
#[tokio::test]
async fn a_database_from_before_the_record_counters_counts_its_rows_and_keeps_counting() {
    use tessera::store::RecordCounts;
    let url = crate::postgres::PgServer::shared().create_database().await;
    let store = open_database(&url).await;
    store.migrate().await.unwrap();
    back_to_schema(&url, 12).await;
    let (db, connection) = tokio_postgres::connect(&url, tokio_postgres::NoTls).await.unwrap();
    tokio::spawn(connection);
    let grant = |id: &str, revoked: bool| format!("('{id}', 'c1', 'u1', 'read', 'a', 1, 100, {revoked}, '{{pwd}}')");
    db.batch_execute(&format!(
        "INSERT INTO clients (client_id, record) VALUES ('c1', '{{}}'), ('c2', '{{}}'); \
         INSERT INTO users (user_id, username, record) VALUES ('u1', 'alice', '{{}}'); \
         INSERT INTO grants (grant_id, client_id, user_id, scope, audience, auth_time, created_at, revoked, amr) \
         VALUES {}, {}, {};",
        grant("g1", false),
        grant("g2", false),
        grant("g3", true)
    ))
    .await
    .unwrap();
    assert_eq!(store.migrate().await.unwrap(), [13]);
    let counts = |clients, users, live_grants| RecordCounts {
        clients,
        users,
        live_grants,
    };
    assert_eq!(store.count_records().await.unwrap(), counts(2, 1, 2));
    db.batch_execute(&format!(
        "INSERT INTO grants (grant_id, client_id, user_id, scope, audience, auth_time, created_at, revoked, amr) \
         VALUES {}, {}; \
         UPDATE grants SET revoked = true WHERE grant_id IN ('g1', 'g4'); \
         UPDATE grants SET revoked = false WHERE grant_id = 'g3'; \
         UPDATE grants SET scope = 'read write'; \
         DELETE FROM grants WHERE grant_id IN ('g2', 'g5', 'nothing'); \
         INSERT INTO users (user_id, username, record) VALUES ('u2', 'bob', '{{}}'), ('u3', 'carol', '{{}}'); \
         DELETE FROM clients; DELETE FROM users WHERE user_id = 'u1';",
        grant("g4", false),
        grant("g5", false)
    ))
    .await
    .unwrap();
    // Left: g1 and g4 revoked, g3 live again; no client; bob and carol.
    assert_eq!(store.count_records().await.unwrap(), counts(0, 2, 1));
}

/// A client in use is re-read in the background before its cached copy expires (issue 29):
/// four seconds of lookups every 20 ms read it on the request path once, not every second, and
/// a change made behind the node's back still shows within the cache's second.
#[tokio::test]
async fn a_client_in_use_is_reread_in_the_background_and_changes_still_show_within_a_second() {
    use tessera::store::{ClientStore, CLIENT_CACHE_TTL};
    let url = crate::postgres::PgServer::shared().create_database().await;
    let store = open_database(&url).await;
    store.migrate().await.unwrap();
    let (app, _) = spawn_on_postgres(|config| config.database_url = Some(url.clone())).await;
    let client_id = app.client.id.clone();
    drop(app);
    assert!(store.get_client(&client_id).await.unwrap().is_some());
    let start = std::time::Instant::now();
    while start.elapsed() < Duration::from_secs(4) {
        assert!(store.get_client(&client_id).await.unwrap().is_some());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let reads = store.client_reads_on_request_path();
    assert!(reads <= 2, "{reads} reads on the request path in 4 s");
    // Renamed behind this store's back: the background re-read brings it within the bound.
    let (db, connection) = tokio_postgres::connect(&url, tokio_postgres::NoTls).await.unwrap();
    tokio::spawn(connection);
    db.execute(
        "UPDATE clients SET record = jsonb_set(record, '{name}', '\"Renamed\"') WHERE client_id = $1",
        &[&client_id],
    )
    .await
    .unwrap();
    let changed = std::time::Instant::now();
    while store.get_client(&client_id).await.unwrap().unwrap().name != "Renamed" {
        assert!(changed.elapsed() < CLIENT_CACHE_TTL + Duration::from_millis(500));
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Deleted behind its back: gone within the bound too.
    db.execute("DELETE FROM clients WHERE client_id = $1", &[&client_id])
        .await
        .unwrap();
    let deleted = std::time::Instant::now();
    while store.get_client(&client_id).await.unwrap().is_some() {
        assert!(deleted.elapsed() < CLIENT_CACHE_TTL + Duration::from_millis(500));
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A minimal JSON value of `schema`: its required members, each a plausible value of its type.
fn example_of(spec: &Value, schema: &Value) -> Value {
    let schema = resolved(spec, schema);
    if let Some(first) = schema["enum"].as_array().and_then(|e| e.first()) {
        return first.clone();
    }
    match schema["type"].as_str() {
        Some("object") | None if schema["properties"].is_object() => {
            let mut object = serde_json::Map::new();
            for name in schema["required"].as_array().cloned().unwrap_or_default() {
                let name = name.as_str().unwrap();
                object.insert(name.into(), example_of(spec, &schema["properties"][name]));
            }
            Value::Object(object)
        }
        Some("array") => json!([]),
        Some("boolean") => json!(false),
        Some("integer") | Some("number") => json!(1),
        Some("string") => json!("a long enough value"),
        _ => json!({}),
    }
}

/// Finding 11: with PostgreSQL stopped, the admin API and UserInfo answered HTTP 400 (the
/// problem body said 503) without `Retry-After`; only the token endpoint answered 503. Clients
/// and load balancers read 400 as "do not retry". Now every operation of the spec, and every
/// page, that needs the store answers 503 with `Retry-After` while it is unreachable; those
/// that need nothing of it keep answering.
#[tokio::test]
async fn every_operation_and_page_answers_503_with_retry_after_while_the_database_is_down() {
    let server = crate::postgres::PgServer::dedicated();
    let url = server.create_database().await;
    let (app, _) = spawn_on_postgres(|config| {
        config.database_url = Some(url.clone());
        config.registration.mode = tessera::config::RegistrationMode::Open;
    })
    .await;
    // Everything a caller holds before the outage: an admin token, a user's access token and
    // session, a registration access token.
    let (_, admin_token) = app.admin_bearer().await;
    let user_token = app.get_tokens().await["access_token"].as_str().unwrap().to_string();
    let registered: Value = app
        .http
        .post(app.url("/o/register/"))
        .json(&json!({"redirect_uris": ["https://app.example/cb"]}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let registration_token = registered["registration_access_token"].as_str().unwrap().to_string();
    let registered_id = registered["client_id"].as_str().unwrap().to_string();
    let user_id = app.store.get_user_by_name(USERNAME).await.unwrap().unwrap().user_id;
    let spec = committed_spec();

    server.stop();
    // Past the client cache's second.
    tokio::time::sleep(Duration::from_millis(1500)).await;

    // What needs nothing of the store: the documents, liveness, metrics (which report the
    // database down).
    let store_free = [
        "GET /.well-known/jwks.json",
        "GET /.well-known/oauth-authorization-server",
        "GET /.well-known/openid-configuration",
        "GET /healthz",
        "GET /metrics",
    ];
    let mut failures = Vec::new();
    let mut checked = 0;
    for (path, operations) in spec["paths"].as_object().unwrap() {
        for (method, operation) in operations.as_object().unwrap() {
            let name = format!("{} {path}", method.to_uppercase());
            let concrete = path
                .replace(
                    "{client_id}",
                    if path.starts_with("/o/register") {
                        &registered_id
                    } else {
                        &app.client.id
                    },
                )
                .replace("{user_id}", &user_id)
                .replace("{grant_id}", "some-grant")
                .replace("{kid}", "some-key");
            let mut request = app
                .http
                .request(method.to_uppercase().parse().unwrap(), app.url(&concrete));
            request = match path.as_str() {
                p if p.starts_with("/api/") => request.bearer_auth(&admin_token),
                p if p.starts_with("/o/register/{") => request.bearer_auth(&registration_token),
                "/o/userinfo/" => request.bearer_auth(&user_token),
                "/o/register/" => request,
                p if p.starts_with("/o/") => request.basic_auth(&app.client.id, app.client.secret.as_ref()),
                _ => request,
            };
            let content = &operation["requestBody"]["content"];
            if let Some((media_type, body)) = content.as_object().and_then(|c| c.iter().next()) {
                if media_type.starts_with("application/x-www-form-urlencoded") {
                    let form: Vec<(&str, &str)> = match path.as_str() {
                        "/o/token/" => vec![("grant_type", "client_credentials"), ("scope", "read")],
                        "/o/device_authorization/" => vec![("scope", "read")],
                        "/o/par/" => vec![
                            ("response_type", "code"),
                            ("redirect_uri", REDIRECT_URI),
                            ("code_challenge", "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"),
                            ("code_challenge_method", "S256"),
                        ],
                        _ => vec![("token", user_token.as_str())],
                    };
                    request = request.form(&form);
                } else {
                    let mut example = example_of(&spec, &body["schema"]);
                    if path.starts_with("/o/register") {
                        example["redirect_uris"] = json!(["https://app.example/cb"]);
                    }
                    request = request.json(&example);
                }
            }
            checked += 1;
            let response = request.send().await.unwrap();
            let status = response.status().as_u16();
            let retry_after = response.headers().get("retry-after").cloned();
            let body = response.text().await.unwrap_or_default();
            let fine = if store_free.contains(&name.as_str()) {
                status == 200
            } else {
                status == 503 && retry_after.is_some()
            };
            if !fine {
                failures.push(format!(
                    "{name}: {status} retry-after={retry_after:?} {}",
                    body.chars().take(160).collect::<String>()
                ));
            }
        }
    }
    // The pages, with the user's browser session.
    for (method, path) in [
        (
            "GET",
            "/o/authorize/?response_type=code&client_id=x&code_challenge=x&code_challenge_method=S256",
        ),
        ("GET", "/o/authorized_tokens/"),
        ("GET", "/o/applications/"),
        ("GET", "/o/profile/"),
        ("GET", "/admin/"),
        ("GET", "/"),
    ] {
        checked += 1;
        let response = app
            .http
            .request(method.parse().unwrap(), app.url(path))
            .send()
            .await
            .unwrap();
        let status = response.status().as_u16();
        let retry_after = response.headers().get("retry-after").cloned();
        if status != 503 || retry_after.is_none() {
            failures.push(format!("{method} {path}: {status} retry-after={retry_after:?}"));
        }
    }
    server.restart();
    assert!(
        failures.is_empty(),
        "{} of {checked}:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

/// The same pattern as finding 1, in cluster mode's client cache: it kept up to 10,000 client
/// records by count, and a registered client may hold 50 redirect URIs of 2 KB (about 110 KB
/// of record): anyone who registered bulky clients and named each once filled gigabytes. Now
/// the cache is bounded in bytes too.
#[tokio::test]
async fn the_cluster_client_cache_is_bounded_in_bytes() {
    use tessera::store::{ClientStore, CLIENT_CACHE_BYTES};
    let url = crate::postgres::PgServer::shared().create_database().await;
    let store = open_database(&url).await;
    store.migrate().await.unwrap();
    let uris: Vec<String> = (0..50)
        .map(|i| format!("https://app.example/{i}/{}", "a".repeat(2000)))
        .collect();
    let template = tessera::store::ClientRecord {
        redirect_uris: uris.clone(),
        post_logout_redirect_uris: uris,
        ..serde_json::from_value(json!({
            "client_id": "x", "name": "bulky", "client_type": "public", "secret_hash": null,
            "redirect_uris": [], "grant_types": ["authorization-code"], "scopes": ["read"],
            "resources": [], "access_token_ttl": null, "refresh_token_ttl": null,
            "created_at": 0, "skip_consent": false, "owner_user_id": null,
        }))
        .unwrap()
    };
    let mut biggest = 0;
    for i in 0..200 {
        let client = tessera::store::ClientRecord {
            client_id: format!("bulky-{i}"),
            ..template.clone()
        };
        assert!(store.insert_client(&client).await.unwrap());
        assert!(store.get_client(&client.client_id).await.unwrap().is_some());
        biggest = biggest.max(store.client_cache_size().1);
    }
    println!("client cache at most {} KiB for 200 clients of ~200 KB", biggest / 1024);
    assert!(biggest <= CLIENT_CACHE_BYTES, "{biggest} bytes");
    assert!(biggest > CLIENT_CACHE_BYTES / 2, "the cache was used: {biggest} bytes");
}
