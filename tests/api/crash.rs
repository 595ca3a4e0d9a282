//! Crash safety: the real binary is killed with SIGKILL at random moments while clients
//! refresh tokens and exchange codes, and restarted on the same data folder each time. What
//! the server answered must survive; what it never answered must not come back to life.

use serde_json::Value;
use tessera::oauth::refresh::PresentedRefresh;

use crate::helpers::*;

/// Client programs driving the server at once.
const WORKERS: usize = 6;
/// SIGKILLs in one run.
const KILLS: usize = 6;

/// One refresh-token family as its client knows it.
#[derive(Default)]
struct Chain {
    /// The latest refresh token the client received and has not used yet.
    current: Option<String>,
    /// Tokens the client exchanged and got an answer for.
    spent: Vec<String>,
    /// A token that was on its way to the server when the server died: the client never
    /// learnt whether it was spent.
    in_doubt: Option<String>,
    /// What the data folder said of `in_doubt` after the crash: was it spent?
    in_doubt_spent: Option<bool>,
}

/// One client program's state across crashes.
#[derive(Default)]
struct Worker {
    chains: Vec<Chain>,
    /// Codes received in a redirect and kept to be exchanged after the next crash.
    held_codes: Vec<(String, Pkce)>,
    /// A code on its way to the token endpoint when the server died.
    code_in_doubt: Option<(String, Pkce)>,
    steps: u64,
    refreshes: u64,
    exchanges: u64,
}

/// A token response, read whole: a transport error (the server died) is `Err`.
async fn answer(sent: reqwest::Result<reqwest::Response>) -> reqwest::Result<(u16, Value)> {
    let response = sent?;
    let status = response.status().as_u16();
    let body = response.bytes().await?;
    Ok((status, serde_json::from_slice(&body).unwrap_or(Value::Null)))
}

async fn refresh(remote: &Remote, token: &str) -> reqwest::Result<(u16, Value)> {
    let form = [("grant_type", "refresh_token"), ("refresh_token", token)];
    answer(remote.try_token(&remote.client, &form).await).await
}

async fn exchange(remote: &Remote, code: &str, pkce: &Pkce) -> reqwest::Result<(u16, Value)> {
    let form = [
        ("grant_type", "authorization_code"),
        ("code", code),
        ("redirect_uri", REDIRECT_URI),
        ("code_verifier", &pkce.verifier),
    ];
    answer(remote.try_token(&remote.client, &form).await).await
}

fn refresh_token_of(status: u16, body: &Value) -> String {
    assert_eq!(status, 200, "{body}");
    body["refresh_token"].as_str().expect("a refresh token").to_string()
}

fn assert_invalid_grant(status: u16, body: &Value, what: &str) {
    assert_eq!(
        (status, body["error"].as_str()),
        (400, Some("invalid_grant")),
        "{what}: {body}"
    );
}

impl Worker {
    /// Settles what the last crash left in doubt and exchanges the codes held over it. The
    /// server is up and stays up meanwhile.
    async fn recover(&mut self, remote: &Remote) {
        for chain in &mut self.chains {
            let Some(token) = chain.in_doubt.take() else { continue };
            let spent = chain.in_doubt_spent.take().expect("the data folder was read");
            let (status, body) = refresh(remote, &token).await.unwrap();
            if spent {
                // The server spent it and died before answering: presenting it again is
                // reuse, and the family (with the token nobody received) is revoked.
                assert_invalid_grant(status, &body, "a token spent before the crash");
            } else {
                chain.current = Some(refresh_token_of(status, &body));
            }
            chain.spent.push(token);
        }
        for (code, pkce) in std::mem::take(&mut self.held_codes) {
            let (status, body) = exchange(remote, &code, &pkce).await.unwrap();
            self.new_chain(refresh_token_of(status, &body));
        }
        if let Some((code, pkce)) = self.code_in_doubt.take() {
            // Either the exchange never happened, or it did and this is a replay, which
            // revokes what the lost response carried.
            let (status, body) = exchange(remote, &code, &pkce).await.unwrap();
            if status == 200 {
                self.new_chain(refresh_token_of(status, &body));
            } else {
                assert_invalid_grant(status, &body, "a code exchanged before the crash");
            }
        }
    }

    fn new_chain(&mut self, token: String) {
        self.exchanges += 1;
        self.chains.push(Chain {
            current: Some(token),
            ..Chain::default()
        });
    }

    /// Refreshes, and now and then runs the code flow, until a server goes away. Each step
    /// goes to the next of `remotes` (the nodes of a cluster), so a code issued by one node is
    /// exchanged on another and a refresh token is spent where it was not issued.
    async fn drive(&mut self, remotes: &[Remote]) {
        loop {
            self.steps += 1;
            let remote = &remotes[self.steps as usize % remotes.len()];
            let next = &remotes[(self.steps as usize + 1) % remotes.len()];
            let live: Vec<usize> = (0..self.chains.len())
                .filter(|i| self.chains[*i].current.is_some())
                .collect();
            if self.steps % 4 == 1 || live.is_empty() {
                let Ok((code, pkce)) = remote.try_get_code().await else {
                    return;
                };
                if self.steps.is_multiple_of(3) {
                    self.held_codes.push((code, pkce));
                    continue;
                }
                match exchange(next, &code, &pkce).await {
                    Ok((status, body)) => self.new_chain(refresh_token_of(status, &body)),
                    Err(_) => {
                        self.code_in_doubt = Some((code, pkce));
                        return;
                    }
                }
            } else {
                let chain = &mut self.chains[live[self.steps as usize % live.len()]];
                let token = chain.current.take().unwrap();
                match refresh(remote, &token).await {
                    Ok((status, body)) => {
                        chain.current = Some(refresh_token_of(status, &body));
                        chain.spent.push(token);
                        self.refreshes += 1;
                    }
                    Err(_) => {
                        chain.in_doubt = Some(token);
                        return;
                    }
                }
            }
        }
    }
}

/// Whether the data folder holds `token` as usable: unspent, unexpired, its grant alive.
async fn usable(store: &dyn tessera::store::Store, token: &str) -> bool {
    let presented = PresentedRefresh::parse(token).expect("a refresh token");
    let Some(record) = store.get_refresh(&presented.family).await.unwrap() else {
        return false;
    };
    let grant = store.get_grant(&record.grant_id).await.unwrap();
    record.is_current(&presented.family, &presented.token)
        && record.expires_at > tessera::now()
        && grant.is_some_and(|g| !g.revoked)
}

/// Reads the data folder as the next start will find it, while no server runs.
async fn check_data_folder(dirs: &tempfile::TempDir, workers: &mut [Worker], after: &str) {
    println!("checking the store {after}");
    let store = open_test_store(dirs.path()).await;
    let store = store.as_ref();
    for chain in workers.iter_mut().flat_map(|w| w.chains.iter_mut()) {
        if let Some(token) = &chain.current {
            assert!(
                usable(store, token).await,
                "a refresh token the client received survives {after}"
            );
        }
        for token in &chain.spent {
            assert!(!usable(store, token).await, "a spent refresh token stays spent {after}");
        }
        if let Some(token) = &chain.in_doubt {
            let presented = PresentedRefresh::parse(token).expect("a refresh token");
            let record = store.get_refresh(&presented.family).await.unwrap();
            let record = record.expect("a token the client received is on disk");
            chain.in_doubt_spent = Some(!record.is_current(&presented.family, &presented.token));
        }
    }
}

/// A small deterministic generator, seeded from the clock and printed, so a failing run can
/// be told apart from another.
struct XorShift(u64);

impl XorShift {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sigkill_under_load_loses_no_answered_token_and_revives_no_unanswered_one() {
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64
        | 1;
    eprintln!("crash test seed: {seed}");
    let mut random = XorShift(seed);

    // Clients, the user and the user's remembered consent are set up in-process; then the
    // folder goes to the real binary. The set-up's own grant is revoked so every live token
    // in the store belongs to a worker.
    let dirs = tempfile::tempdir().unwrap();
    let app = spawn_app_with(test_config(&dirs), dirs).await;
    let tokens = app.get_tokens().await;
    let seeded = tokens["refresh_token"].as_str().unwrap();
    assert_eq!(app.revoke(seeded, Some("refresh_token")).await.status(), 200);
    let (client, public_client) = (app.client.clone(), app.public_client.clone());
    let dirs = app.stop().await;
    // The load is one address and one client, far above the default rate limits.
    std::fs::write(
        dirs.path().join("tessera.toml"),
        "rate_limit_per_client = 0\nrate_limit_per_address = 0\n",
    )
    .unwrap();
    // On PostgreSQL the binary serves the same database the set-up used.
    let backend = backend_env(dirs.path());
    let env: Vec<(&str, &str)> = backend.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let serve = || ServerProcess::start(dirs.path(), &["--config", "tessera.toml"], &env);
    let remote = |server: &ServerProcess| {
        Remote::new(
            server.base.clone(),
            server.base.clone(),
            client.clone(),
            public_client.clone(),
        )
    };

    // In cluster mode a second node serves the same database throughout: the workers spread
    // their requests over both, and only the other node is killed.
    let steady = on_postgres().then(serve);

    let mut workers: Vec<Worker> = (0..WORKERS).map(|_| Worker::default()).collect();
    let mut in_doubt = 0;
    let mut logs = String::new();
    for round in 1..=KILLS {
        let server = serve();
        for worker in &mut workers {
            worker.recover(&remote(&server)).await;
        }
        let tasks: Vec<_> = workers
            .drain(..)
            .map(|mut worker| {
                let mut remotes = vec![remote(&server)];
                remotes.extend(steady.as_ref().map(remote));
                tokio::spawn(async move {
                    worker.drive(&remotes).await;
                    worker
                })
            })
            .collect();
        tokio::time::sleep(std::time::Duration::from_millis(200 + random.below(800))).await;
        logs += &server.kill();
        for task in tasks {
            workers.push(task.await.expect("a worker saw nothing unexpected"));
        }
        in_doubt += workers
            .iter()
            .flat_map(|w| &w.chains)
            .filter(|c| c.in_doubt.is_some())
            .count();
        in_doubt += workers.iter().filter(|w| w.code_in_doubt.is_some()).count();
        check_data_folder(&dirs, &mut workers, &format!("SIGKILL {round}")).await;
    }

    // Settle the last crash, stop gracefully, and count: the live refresh tokens in the store
    // are exactly those the clients hold.
    let server = serve();
    for worker in &mut workers {
        worker.recover(&remote(&server)).await;
    }
    logs += &server.terminate();
    if let Some(steady) = steady {
        logs += &steady.terminate();
    }
    check_data_folder(&dirs, &mut workers, "a clean stop").await;
    let held: Vec<(usize, usize)> = workers
        .iter()
        .enumerate()
        .flat_map(|(w, worker)| {
            let chains = worker.chains.iter().enumerate();
            chains.filter(|(_, c)| c.current.is_some()).map(move |(c, _)| (w, c))
        })
        .collect();
    {
        let store = open_test_store(dirs.path()).await;
        let active = store.count_active_refresh_tokens(tessera::now()).await.unwrap();
        assert_eq!(
            active as usize,
            held.len(),
            "no live refresh token the clients never received"
        );
    }

    // Every token held works exactly once; a spent one is refused and takes its family along.
    let server = serve();
    let remote = remote(&server);
    for (n, (w, c)) in held.iter().enumerate() {
        let chain = &workers[*w].chains[*c];
        let current = chain.current.as_deref().unwrap();
        if n % 2 == 0 && !chain.spent.is_empty() {
            let old = &chain.spent[random.below(chain.spent.len() as u64) as usize];
            let (status, body) = refresh(&remote, old).await.unwrap();
            assert_invalid_grant(status, &body, "a spent token");
            let (status, body) = refresh(&remote, current).await.unwrap();
            assert_invalid_grant(status, &body, "the family of a reused token");
        } else {
            let (status, body) = refresh(&remote, current).await.unwrap();
            let next = refresh_token_of(status, &body);
            let (status, body) = refresh(&remote, current).await.unwrap();
            assert_invalid_grant(status, &body, "a token used twice");
            let (status, body) = refresh(&remote, &next).await.unwrap();
            assert_invalid_grant(status, &body, "the family of a reused token");
        }
    }
    logs += &server.terminate();
    assert!(
        logs.matches("path=/o/token/").count() > 100,
        "the request lines were captured"
    );
    let tokens = workers
        .iter()
        .flat_map(|w| &w.chains)
        .flat_map(|c| c.spent.iter().chain(&c.current));
    for token in tokens {
        assert!(!logs.contains(token.as_str()), "a refresh token appears in the logs");
    }
    assert!(
        !logs.contains(client.secret.as_deref().unwrap()),
        "the client secret appears in the logs"
    );
    assert!(!logs.contains(PASSWORD), "the password appears in the logs");

    // The run did what it claims: real load, and crashes that caught requests in flight.
    let refreshes: u64 = workers.iter().map(|w| w.refreshes).sum();
    let exchanges: u64 = workers.iter().map(|w| w.exchanges).sum();
    eprintln!("{refreshes} refreshes, {exchanges} code exchanges, {in_doubt} requests cut off by {KILLS} SIGKILLs");
    assert!(
        refreshes >= 100 && exchanges >= 20,
        "{refreshes} refreshes, {exchanges} exchanges"
    );
    assert!(in_doubt >= KILLS, "most kills catch a request in flight: {in_doubt}");
}
