//! Fills a store for the scale benchmark (`benches/scale.py`): the fastest honest path to a large
//! deployment. Every record is written through the store contract (`tessera::store`), the same
//! calls the server makes, with the same indexes kept; what it skips is the HTTP layer, the
//! password hashing (every user shares one Argon2id hash) and the signing of tokens nobody will
//! present (each grant's refresh token is a random hash, live for 30 days).
//!
//! Shape: `--clients` clients `c-000000…`, `--users` users `u-000000…` (username `user000000…`),
//! `--grants` grants each with one live refresh token, and `--audit` audit entries. One user
//! (`u-heavy`) and one client (`c-heavy`) hold a tenth of the grants each; client `c-000001`
//! holds exactly one. Audit entries are by 100 actors on users and clients, over 12 actions.
//!
//! Run: `cargo run --release --example fill -- (--data DIR | --database-url URL)
//!       [--clients N] [--users N] [--grants N] [--audit N] [--only clients|users|grants|audit]`
//! (the server must not be running on DIR); `--only` writes one kind, in a store filled before.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use tessera::store::*;

/// What to write.
#[derive(Clone, Copy)]
struct Shape {
    clients: u64,
    users: u64,
    grants: u64,
    audit: u64,
}

/// Writers at once (each with its own connection on PostgreSQL).
const WRITERS: u64 = 16;

const ACTIONS: [&str; 12] = [
    "client.create",
    "client.update",
    "client.delete",
    "user.create",
    "user.update",
    "user.disable",
    "user.enable",
    "grant.revoke",
    "login.failure",
    "login.lockout",
    "key.generate",
    "user.delete",
];

fn client_id(i: u64) -> String {
    format!("c-{i:06}")
}

fn user_id(i: u64) -> String {
    format!("u-{i:06}")
}

fn client(i: u64, now: i64) -> ClientRecord {
    let id = if i == 0 { "c-heavy".to_string() } else { client_id(i) };
    ClientRecord {
        name: format!("Filler app {id}"),
        client_id: id,
        client_type: ClientType::Confidential,
        secret_hash: Some(
            *ring::digest::digest(&ring::digest::SHA256, &i.to_be_bytes())
                .as_ref()
                .first_chunk()
                .unwrap(),
        ),
        redirect_uris: vec!["https://app.example/cb".into()],
        grant_types: vec![GrantType::AuthorizationCode, GrantType::RefreshToken],
        scopes: vec!["read".into()],
        resources: vec![],
        access_token_ttl: None,
        refresh_token_ttl: None,
        created_at: now,
        skip_consent: false,
        owner_user_id: None,
        post_logout_redirect_uris: vec![],
        id_token_signed_response_alg: None,
        admin: false,
        registration_token_hash: None,
        token_endpoint_auth_method: None,
        first_used_at: None,
        jwks: None,
        jwks_uri: None,
        policy: Default::default(),
    }
}

fn user(i: u64, now: i64, password_hash: &str) -> UserRecord {
    let id = if i == 0 { "u-heavy".to_string() } else { user_id(i) };
    UserRecord {
        username: format!("user{i:06}"),
        user_id: id,
        email: Some(format!("user{i:06}@example.com")),
        email_verified: false,
        password_hash: password_hash.into(),
        created_at: now,
        profile: Default::default(),
        updated_at: 0,
        session_epoch: 0,
        operator: false,
        disabled: false,
    }
}

/// Grant `i`: every tenth is the heavy user's, every tenth (offset by one) the heavy client's,
/// the third is `c-000001`'s only one; the rest spread over the others.
fn grant(i: u64, shape: Shape, now: i64) -> GrantRecord {
    let user = match i % 10 {
        0 => "u-heavy".to_string(),
        _ => user_id(1 + i % (shape.users - 1).max(1)),
    };
    let client = match (i, i % 10) {
        (2, _) => client_id(1),
        (_, 1) => "c-heavy".to_string(),
        _ => client_id(2 + i % (shape.clients - 2).max(1)),
    };
    GrantRecord {
        grant_id: format!("g-{i:08}"),
        client_id: client,
        user_id: user,
        scope: "read".into(),
        audience: String::new(),
        auth_time: now,
        created_at: now,
        revoked: false,
        amr: vec!["pwd".into()],
    }
}

fn audit(i: u64, shape: Shape, now_ms: i64) -> AuditRecord {
    // Spread over the last 30 days, in id order with `i`.
    let at_ms = now_ms - 30 * 86_400_000 + (i as i64) * (30 * 86_400_000 / shape.audit.max(1) as i64);
    let actor = i % 100;
    let (kind, target) = match i % 2 {
        0 => ("user", user_id(i % shape.users.max(1))),
        _ => ("client", client_id(i % shape.clients.max(1))),
    };
    AuditRecord {
        id: audit_id(at_ms, &format!("{i:08x}fill")),
        at_ms,
        actor: AuditActor {
            kind: "user".into(),
            id: format!("u-op{actor:03}"),
            name: format!("operator{actor:03}"),
        },
        address: Some("203.0.113.7".into()),
        action: ACTIONS[(i % ACTIONS.len() as u64) as usize].into(),
        target_kind: Some(kind.into()),
        target_name: Some(format!("name of {target}")),
        target_id: Some(target),
        outcome: "ok".into(),
    }
}

/// Runs `write(i)` for every `i` below `count`, from [`WRITERS`] tasks, and reports the rate.
async fn fill<F, Fut>(what: &str, count: u64, write: F)
where
    F: Fn(u64) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = Result<()>> + Send,
{
    let (start, next, write) = (Instant::now(), Arc::new(AtomicU64::new(0)), Arc::new(write));
    let writers: Vec<_> = (0..WRITERS)
        .map(|_| {
            let (next, write) = (next.clone(), write.clone());
            tokio::spawn(async move {
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= count {
                        return;
                    }
                    write(i).await.expect("a record is written");
                }
            })
        })
        .collect();
    for writer in writers {
        writer.await.expect("a writer finished");
    }
    let seconds = start.elapsed().as_secs_f64();
    eprintln!(
        "{what}: {count} in {seconds:.1} s ({:.0}/s)",
        count as f64 / seconds.max(1e-9)
    );
}

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let value = |name: &str| {
        args.iter()
            .position(|a| a == name)
            .and_then(|i| args.get(i + 1))
            .cloned()
    };
    let number = |name: &str, default: u64| value(name).map_or(default, |v| v.parse().expect("a number"));
    let shape = Shape {
        clients: number("--clients", 500).max(3),
        users: number("--users", 1_000).max(2),
        grants: number("--grants", 10_000),
        audit: number("--audit", 10_000),
    };
    let store: Arc<dyn Store> = match (value("--data"), value("--database-url")) {
        (Some(dir), None) => Arc::new(SledStore::open(std::path::Path::new(&dir)).expect("the data folder opens")),
        (None, Some(url)) => {
            let store = PgStore::connect(&PgOptions {
                url,
                pool_size: WRITERS as usize,
                pool_wait: std::time::Duration::from_secs(30),
                ca_file: None,
            })
            .await
            .expect("the database connects");
            store.migrate().await.expect("the schema is migrated");
            Arc::new(store)
        }
        _ => panic!("give --data DIR or --database-url URL"),
    };
    let now = tessera::clock::now();
    let only = value("--only");
    let wanted = |kind: &str, count: u64| match &only {
        Some(only) if only != kind => 0,
        _ => count,
    };
    let s = store.clone();
    fill("clients", wanted("clients", shape.clients), move |i| {
        let s = s.clone();
        async move { s.insert_client(&client(i, now)).await.map(drop) }
    })
    .await;
    // One Argon2id hash, made as the server makes them, for every filler user.
    let password_hash: Arc<str> = tessera::oauth::user::hash_password("filler password")
        .expect("a password hash")
        .into();
    let s = store.clone();
    fill("users", wanted("users", shape.users), move |i| {
        let (s, password_hash) = (s.clone(), password_hash.clone());
        async move { s.insert_user(&user(i, now, &password_hash)).await }
    })
    .await;
    let s = store.clone();
    fill(
        "grants with a refresh token each",
        wanted("grants", shape.grants),
        move |i| {
            let s = s.clone();
            async move {
                let grant = grant(i, shape, now);
                s.put_grant(&grant).await?;
                let hash: [u8; 32] = *ring::digest::digest(&ring::digest::SHA256, format!("fill-{i}").as_bytes())
                    .as_ref()
                    .first_chunk()
                    .unwrap();
                let token = RefreshRecord {
                    grant_id: grant.grant_id,
                    issued_at: now,
                    expires_at: now + 30 * 86_400,
                    current: CurrentRefresh::First,
                    dpop_jkt: None,
                };
                s.put_refresh(&hash, &token).await
            }
        },
    )
    .await;
    let s = store.clone();
    fill("audit entries", wanted("audit", shape.audit), move |i| {
        let s = s.clone();
        async move { s.append_audit(&audit(i, shape, now * 1000)).await }
    })
    .await;
    store.durable().await.expect("every write is durable");
}
