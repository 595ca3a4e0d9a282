//! Cluster mode (issue 13): real `tessera` processes sharing one PostgreSQL database (the tests'
//! throwaway server, a fresh database per test), and the CLI working against it while they run.

use std::io::Write;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

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
        let mut child = Command::new(env!("CARGO_BIN_EXE_tessera"))
            .args(args)
            .current_dir(self.dir.path())
            .env_remove("TESSERA_DATA_DIR")
            .env_remove("TESSERA_KEYS_DIR")
            .env_remove("TESSERA_CONFIG")
            .envs(self.env())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        child.stdin.take().unwrap().write_all(stdin.as_bytes()).unwrap();
        child.wait_with_output().unwrap()
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
        ServerProcess::start(self.dir.path(), &["--issuer", ISSUER], &self.env())
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
async fn two_nodes_share_logins_codes_refresh_tokens_keys_and_throttling() {
    let cluster = Cluster::new().await;
    // The CLI against an empty database migrates it and just works.
    let client = cluster.seed();
    let (a, b) = (cluster.node(), cluster.node());
    let jar = Remote::new(ISSUER.into(), a.base.clone(), client.clone(), client.clone()).http;
    let (on_a, on_b) = (browser_on(&a, &client, &jar), browser_on(&b, &client, &jar));

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

    // Both nodes publish the same keys; a token from one verifies with the other's JWKS.
    assert_eq!(on_a.get_jwks().await, on_b.get_jwks().await);
    assert!(on_b.verify_with_jwks(&access).await.is_some());

    // 16 concurrent uses of one refresh token, spread over both nodes: exactly one wins.
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
            let remote = if i % 2 == 0 {
                browser_on(&a, &client, &jar)
            } else {
                browser_on(&b, &client, &jar)
            };
            let refresh = refresh.clone();
            tokio::spawn(async move { remote.refresh(&refresh).await.status().as_u16() })
        })
        .collect();
    let mut statuses = Vec::new();
    for task in tasks {
        statuses.push(task.await.unwrap());
    }
    assert_eq!(statuses.iter().filter(|s| **s == 200).count(), 1, "{statuses:?}");
    assert_eq!(statuses.iter().filter(|s| **s == 400).count(), 15, "{statuses:?}");
    assert_eq!(
        on_b.exchange_code(&code, &pkce.verifier).await.status(),
        400,
        "a code is redeemed once"
    );

    // A key rotated with the CLI while both nodes run: both publish and sign with it.
    let rotated = cluster.ok(&["keys", "rotate", "--alg", "ES256"], "");
    let kid = rotated.split_whitespace().next().unwrap().to_string();
    let took = eventually(Duration::from_secs(5), "both nodes signing with the new key", || {
        let (on_a, on_b, client, kid) = (&on_a, &on_b, &client, &kid);
        async move {
            let mut signed_by_new = true;
            for remote in [on_a, on_b] {
                let body: Value = remote.client_credentials_as(client, "read").await.json().await.unwrap();
                let (header, _) = jwt_parts(body["access_token"].as_str().unwrap());
                signed_by_new &= header["kid"] == kid.as_str();
            }
            signed_by_new
        }
    })
    .await;
    println!("key rotation reached both nodes in {took:?}");

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
}

#[tokio::test]
async fn a_node_refuses_a_missing_or_wrong_encryption_key_and_a_newer_schema() {
    let cluster = Cluster::new().await;
    cluster.seed();
    let run = |env: &[(&str, &str)]| {
        let output = Command::new(env!("CARGO_BIN_EXE_tessera"))
            .args(["keys", "list"])
            .current_dir(cluster.dir.path())
            .env_remove("TESSERA_KEY_ENCRYPTION_KEY")
            .envs(env.iter().copied())
            .output()
            .unwrap();
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
        let mut child = Command::new(env!("CARGO_BIN_EXE_tessera"))
            .args(args)
            .current_dir(node_dir.path())
            .env_remove("TESSERA_DATA_DIR")
            .env_remove("TESSERA_KEYS_DIR")
            .env_remove("TESSERA_CONFIG")
            .env_remove("TESSERA_DATABASE_URL")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        child.stdin.take().unwrap().write_all(stdin.as_bytes()).unwrap();
        let output = child.wait_with_output().unwrap();
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
        summary.contains("imported 1 clients, 1 users, 1 grants, 1 consents, 1 refresh tokens, 1 sessions"),
        "{summary}"
    );
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
    assert_eq!(
        fresh_browser.log_in("/o/login/", USERNAME, PASSWORD).await.status(),
        303
    );
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
