//! The store contract (`tessera::store`): what every backend must do, method by method, with
//! the atomicity the core relies on checked under concurrency (16 parallel redemptions of one
//! code, rotations of one refresh token, inserts of one grant or username, 50 redemptions of one
//! device code: exactly one winner).
//! Each test runs against every backend in [`BACKENDS`]; a new backend is one more entry there.

use std::sync::Arc;

use tempfile::TempDir;
use tessera::store::ScratchRoom::{Continue, Start};
use tessera::store::*;

/// The backends under test.
const BACKENDS: &[Backend] = &[Backend::Sled, Backend::Postgres];

#[derive(Clone, Copy, Debug)]
enum Backend {
    Sled,
    /// A fresh database on the tests' shared PostgreSQL server.
    Postgres,
}

/// A fresh, empty store of `backend`, and what keeps it alive.
async fn open(backend: Backend) -> (Arc<dyn Store>, TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn Store> = match backend {
        Backend::Sled => Arc::new(SledStore::open(dir.path()).unwrap()),
        Backend::Postgres => {
            let url = crate::postgres::PgServer::shared().create_database().await;
            let store = PgStore::connect(&PgOptions {
                url,
                pool_size: 32,
                pool_wait: std::time::Duration::from_secs(10),
                ca_file: None,
            })
            .await
            .unwrap();
            store.migrate().await.unwrap();
            Arc::new(store)
        }
    };
    (store, dir)
}

/// The sled folder `dir` as an earlier version left it (without `trees`, and without the
/// `meta` markers saying they were built), opened again. The store that closed it a moment
/// ago may still hold its lock briefly (its flusher), so the raw open waits for it.
async fn reopened_without(dir: &std::path::Path, trees: &[&str], markers: &[&str]) -> SledStore {
    let mut tries = 0;
    let db = loop {
        match sled::open(dir) {
            Ok(db) => break db,
            Err(e) if tries < 50 && e.to_string().contains("lock") => {
                tries += 1;
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            }
            Err(e) => panic!("the folder opens: {e}"),
        }
    };
    for tree in trees {
        db.drop_tree(tree).unwrap();
    }
    let meta = db.open_tree("meta").unwrap();
    for marker in markers {
        meta.remove(marker).unwrap();
    }
    db.flush().unwrap();
    drop((meta, db));
    crate::helpers::once_unlocked(|| async { SledStore::open(dir) }).await
}

/// Runs `check` against a fresh store of every backend.
async fn for_each_backend<F, Fut>(check: F)
where
    F: Fn(Arc<dyn Store>) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    for backend in BACKENDS {
        let (store, _dir) = open(*backend).await;
        println!("backend: {backend:?}");
        check(store).await;
    }
}

/// Runs `n` copies of `task` at once, each on its own tokio task, and returns their outputs.
async fn race<T, Fut>(n: usize, task: impl Fn() -> Fut) -> Vec<T>
where
    T: Send + 'static,
    Fut: std::future::Future<Output = T> + Send + 'static,
{
    let handles: Vec<_> = (0..n).map(|_| tokio::spawn(task())).collect();
    let mut outputs = Vec::new();
    for handle in handles {
        outputs.push(handle.await.unwrap());
    }
    outputs
}

fn client(id: &str, owner: Option<&str>) -> ClientRecord {
    ClientRecord {
        client_id: id.into(),
        name: format!("client {id}"),
        client_type: ClientType::Confidential,
        secret_hash: Some([7; 32]),
        redirect_uris: vec!["https://app.example/cb".into()],
        grant_types: vec![GrantType::AuthorizationCode, GrantType::RefreshToken],
        scopes: vec!["read".into()],
        resources: vec![],
        access_token_ttl: Some(60),
        refresh_token_ttl: None,
        created_at: 100,
        skip_consent: false,
        owner_user_id: owner.map(str::to_string),
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

fn user(id: &str, name: &str) -> UserRecord {
    UserRecord {
        user_id: id.into(),
        username: name.into(),
        email: Some(format!("{name}@example.com")),
        email_verified: false,
        password_hash: "$argon2id$...".into(),
        created_at: 100,
        profile: Default::default(),
        updated_at: 0,
        session_epoch: 0,
        operator: false,
        disabled: false,
    }
}

fn code(grant_id: &str, expires_at: i64) -> CodeRecord {
    CodeRecord {
        client_id: "c1".into(),
        redirect_uri: "https://app.example/cb".into(),
        redirect_uri_given: true,
        code_challenge: Some("challenge".into()),
        user_id: "u1".into(),
        scope: "read".into(),
        audience: "https://api.example".into(),
        auth_time: 90,
        expires_at,
        grant_id: grant_id.into(),
        redeemed: false,
        nonce: Some("n".into()),
        dpop_jkt: None,
        amr: password_only(),
    }
}

fn grant(id: &str, user_id: &str, client_id: &str, created_at: i64) -> GrantRecord {
    GrantRecord {
        grant_id: id.into(),
        client_id: client_id.into(),
        user_id: user_id.into(),
        scope: "read".into(),
        audience: "https://api.example".into(),
        auth_time: 90,
        created_at,
        revoked: false,
        amr: vec!["pwd".into(), "otp".into(), "mfa".into()],
    }
}

fn refresh(grant_id: &str, issued_at: i64, expires_at: i64) -> RefreshRecord {
    RefreshRecord {
        grant_id: grant_id.into(),
        issued_at,
        expires_at,
        current: CurrentRefresh::First,
        dpop_jkt: None,
    }
}

fn ids(clients: &[ClientRecord]) -> Vec<&str> {
    clients.iter().map(|c| c.client_id.as_str()).collect()
}

#[tokio::test]
async fn clients_are_inserted_updated_listed_paged_and_deleted_for_good() {
    for_each_backend(|store| async move {
        assert!(store.get_client("c1").await.unwrap().is_none());
        for id in ["c3", "c1", "c2"] {
            assert!(store.insert_client(&client(id, None)).await.unwrap());
        }
        assert!(
            !store.insert_client(&client("c1", None)).await.unwrap(),
            "ids are unique"
        );
        let mut renamed = client("c2", None);
        renamed.name = "renamed".into();
        assert!(store.update_client(&renamed).await.unwrap());
        let got = store.get_client("c2").await.unwrap().unwrap();
        assert_eq!((got.name.as_str(), got.secret_hash), ("renamed", Some([7; 32])));
        assert_eq!(ids(&store.list_clients().await.unwrap()), ["c1", "c2", "c3"]);
        assert_eq!(ids(&store.clients_page(None, 2).await.unwrap()), ["c1", "c2"]);
        assert_eq!(ids(&store.clients_page(Some("c2"), 2).await.unwrap()), ["c3"]);
        assert!(store.clients_page(Some("c3"), 2).await.unwrap().is_empty());
        assert!(store.delete_client("c2").await.unwrap());
        assert!(!store.delete_client("c2").await.unwrap(), "gone already");
        assert_eq!(ids(&store.list_clients().await.unwrap()), ["c1", "c3"]);
        // An update never brings a deleted client back.
        assert!(!store.update_client(&renamed).await.unwrap());
        assert!(store.get_client("c2").await.unwrap().is_none());
    })
    .await;
}

#[tokio::test]
async fn the_owner_index_follows_puts_deletes_and_owner_changes() {
    for_each_backend(|store| async move {
        for c in [
            client("a", Some("u1")),
            client("b", Some("u1")),
            client("c", Some("u10")),
            client("d", None),
        ] {
            store.insert_client(&c).await.unwrap();
        }
        let owned = |user: &'static str| {
            let store = store.clone();
            async move { store.clients_owned_by(user).await.unwrap() }
        };
        assert_eq!(ids(&owned("u1").await), ["a", "b"], "u10's client is not u1's");
        store.update_client(&client("b", Some("u2"))).await.unwrap();
        assert_eq!(ids(&owned("u1").await), ["a"]);
        assert_eq!(ids(&owned("u2").await), ["b"]);
        assert!(store.delete_client("a").await.unwrap());
        assert!(owned("u1").await.is_empty());
    })
    .await;
}

#[tokio::test]
async fn a_client_is_marked_used_once_and_a_put_does_not_undo_it_concurrently() {
    for_each_backend(|store| async move {
        store.insert_client(&client("a", None)).await.unwrap();
        let marks = race(16, || {
            let store = store.clone();
            async move { store.mark_client_used("a", 5).await.unwrap() }
        })
        .await;
        assert_eq!(marks.iter().filter(|m| **m).count(), 1, "{marks:?}");
        assert!(!store.mark_client_used("a", 9).await.unwrap());
        assert!(!store.mark_client_used("missing", 9).await.unwrap());
        assert_eq!(store.get_client("a").await.unwrap().unwrap().first_used_at, Some(5));
        // An update from a copy read before the mark keeps it.
        store.update_client(&client("a", None)).await.unwrap();
        assert_eq!(store.get_client("a").await.unwrap().unwrap().first_used_at, Some(5));
    })
    .await;
}

#[tokio::test]
async fn usernames_are_unique_even_under_concurrent_inserts_and_freed_on_delete() {
    for_each_backend(|store| async move {
        let inserted = race(16, || {
            let store = store.clone();
            async move {
                let id = tessera::oauth::random_id();
                match store.insert_user(&user(&id, "alice")).await {
                    Ok(()) => true,
                    Err(StoreError::Conflict("username")) => false,
                    Err(e) => panic!("{e}"),
                }
            }
        })
        .await;
        assert_eq!(inserted.iter().filter(|i| **i).count(), 1, "{inserted:?}");
        let alice = store.get_user_by_name("alice").await.unwrap().unwrap();
        assert_eq!(store.get_user(&alice.user_id).await.unwrap().unwrap().username, "alice");
        let mut changed = alice.clone();
        changed.email_verified = true;
        store.update_user(&changed).await.unwrap();
        assert!(store.get_user(&alice.user_id).await.unwrap().unwrap().email_verified);
        store.insert_user(&user("0", "bob")).await.unwrap();
        let all = store.list_users().await.unwrap();
        assert_eq!(all.len(), 2);
        let names: Vec<&str> = all.iter().map(|u| u.username.as_str()).collect();
        assert_eq!(names, ["alice", "bob"], "ordered by username");
        let first = store.users_page(None, 1).await.unwrap();
        assert_eq!(first.len(), 1);
        let rest = store.users_page(Some(&first[0].user_id), 10).await.unwrap();
        assert_eq!(rest.len(), 1);
        assert!(store.delete_user(&alice.user_id).await.unwrap());
        assert!(!store.delete_user(&alice.user_id).await.unwrap());
        assert!(store.get_user_by_name("alice").await.unwrap().is_none());
        store.insert_user(&user("new", "alice")).await.unwrap();
        assert_eq!(store.get_user_by_name("alice").await.unwrap().unwrap().user_id, "new");
    })
    .await;
}

#[tokio::test]
async fn a_code_is_redeemed_once_however_many_redeem_it_at_once() {
    for_each_backend(|store| async move {
        store.put_code(&[1; 32], &code("g1", 1000)).await.unwrap();
        let outcomes = race(16, || {
            let store = store.clone();
            async move { store.redeem_code(&[1; 32]).await.unwrap() }
        })
        .await;
        let fresh: Vec<_> = outcomes.iter().filter(|o| matches!(o, Redemption::Fresh(_))).collect();
        let replayed = outcomes.iter().filter(|o| matches!(o, Redemption::Replayed(_))).count();
        assert_eq!((fresh.len(), replayed), (1, 15), "{outcomes:?}");
        let Redemption::Fresh(record) = fresh[0] else {
            unreachable!()
        };
        assert_eq!((record.grant_id.as_str(), record.nonce.as_deref()), ("g1", Some("n")));
        assert!(matches!(
            store.redeem_code(&[1; 32]).await.unwrap(),
            Redemption::Replayed(_)
        ));
        assert!(matches!(
            store.redeem_code(&[2; 32]).await.unwrap(),
            Redemption::Unknown
        ));
    })
    .await;
}

#[tokio::test]
async fn grants_are_inserted_once_listed_and_revoked_for_good() {
    for_each_backend(|store| async move {
        let inserted = race(16, || {
            let store = store.clone();
            async move { store.insert_grant(&grant("g1", "u1", "c1", 10)).await.unwrap() }
        })
        .await;
        assert_eq!(inserted.iter().filter(|i| **i).count(), 1, "{inserted:?}");
        let mut other = grant("g1", "u9", "c9", 99);
        other.revoked = true;
        assert!(
            !store.insert_grant(&other).await.unwrap(),
            "never overwritten by insert"
        );
        assert!(!store.get_grant("g1").await.unwrap().unwrap().revoked);
        store.put_grant(&grant("g2", "u1", "c2", 11)).await.unwrap();
        store.put_grant(&grant("g3", "u2", "c1", 12)).await.unwrap();
        store.put_grant(&grant("g0", "u1", "c1", 13)).await.unwrap();
        let grant_ids = |grants: Vec<GrantRecord>| grants.into_iter().map(|g| g.grant_id).collect::<Vec<_>>();
        assert_eq!(
            grant_ids(store.grants_page(Some("u1"), None, None, 10).await.unwrap()),
            ["g0", "g1", "g2"]
        );
        assert_eq!(
            grant_ids(store.grants_page(None, Some("c1"), None, 10).await.unwrap()),
            ["g0", "g1", "g3"]
        );
        assert_eq!(
            grant_ids(store.grants_page(Some("u1"), Some("c1"), None, 10).await.unwrap()),
            ["g0", "g1"]
        );
        assert_eq!(
            grant_ids(store.grants_page(None, None, None, 10).await.unwrap()).len(),
            4
        );
        // Pages: no further than the limit, resumed after the cursor, for every filter.
        for (user, client, all) in [
            (Some("u1"), None, vec!["g0", "g1", "g2"]),
            (None, Some("c1"), vec!["g0", "g1", "g3"]),
            (Some("u1"), Some("c1"), vec!["g0", "g1"]),
            (None, None, vec!["g0", "g1", "g2", "g3"]),
        ] {
            let mut seen = Vec::new();
            let mut after = None::<String>;
            loop {
                let page = grant_ids(store.grants_page(user, client, after.as_deref(), 1).await.unwrap());
                assert!(page.len() <= 1, "{page:?}");
                let Some(last) = page.last().cloned() else { break };
                seen.extend(page);
                after = Some(last);
            }
            assert_eq!(seen, all, "{user:?} {client:?}");
            // A cursor that names no grant resumes at the next id.
            assert_eq!(
                grant_ids(store.grants_page(user, client, Some("g0x"), 10).await.unwrap()),
                all[1..],
                "{user:?} {client:?}"
            );
        }
        // Another user's or client's grants share no prefix: "u" is not "u1".
        assert!(store.grants_page(Some("u"), None, None, 10).await.unwrap().is_empty());
        assert!(store.grants_page(None, Some("c"), None, 10).await.unwrap().is_empty());
        let mut pair = store.grant_ids("u1", "c1").await.unwrap();
        pair.sort();
        assert_eq!(pair, ["g0", "g1"]);
        assert!(store.revoke_grant("g1").await.unwrap());
        assert!(store.revoke_grant("g1").await.unwrap(), "it still exists");
        assert!(!store.revoke_grant("nope").await.unwrap());
        // What a revocation found: of 50 at once on a live grant, exactly one revoked it.
        use tessera::store::GrantRevocation;
        assert_eq!(
            store.revoke_grant_once("g1").await.unwrap(),
            GrantRevocation::WasRevoked
        );
        assert_eq!(store.revoke_grant_once("nope").await.unwrap(), GrantRevocation::Unknown);
        let mut racing = tokio::task::JoinSet::new();
        for _ in 0..50 {
            let store = store.clone();
            racing.spawn(async move { store.revoke_grant_once("g3").await.unwrap() });
        }
        let outcomes = racing.join_all().await;
        let revoked = outcomes.iter().filter(|o| **o == GrantRevocation::Revoked).count();
        assert_eq!(revoked, 1, "{outcomes:?}");
        assert!(store.get_grant("g1").await.unwrap().unwrap().revoked);
        // A put after a revocation is what the core does for a code replay; revoked stays.
        assert!(store.get_grant("g1").await.unwrap().unwrap().revoked);
        assert!(
            store.grant_ids("u1", "c1").await.unwrap().contains(&"g1".to_string()),
            "revoked ones included"
        );
    })
    .await;
}

/// A sled folder written before the grant listings and the audit filters had their own indexes
/// gets them built once, at open: its grants list by user and by client, and its trail filters,
/// as before.
#[tokio::test]
async fn a_sled_folder_from_before_the_grant_indexes_lists_its_grants() {
    let dir = tempfile::tempdir().unwrap();
    {
        let store = SledStore::open(dir.path()).unwrap();
        store.put_grant(&grant("g1", "u1", "c1", 10)).await.unwrap();
        store.put_grant(&grant("g2", "u2", "c1", 11)).await.unwrap();
        store
            .append_audit(&audit_entry(1_000, 1, "olivia", "user.disable", "bob"))
            .await
            .unwrap();
        store.durable().await.unwrap();
    }
    let store = reopened_without(
        dir.path(),
        &["grants_by_user", "grants_by_client", "audit_terms"],
        &["grant-order-indexes", "audit-terms"],
    )
    .await;
    let ids = |grants: Vec<GrantRecord>| grants.into_iter().map(|g| g.grant_id).collect::<Vec<_>>();
    assert_eq!(
        ids(store.grants_page(None, Some("c1"), None, 10).await.unwrap()),
        ["g1", "g2"]
    );
    assert_eq!(
        ids(store.grants_page(Some("u2"), None, None, 10).await.unwrap()),
        ["g2"]
    );
}

/// Issue 29: the purge and the key schedule find the longest access-token lifetime and the
/// unused registrations through an index, kept right by every client write.
#[tokio::test]
async fn the_longest_access_token_lifetime_and_unused_registrations_follow_every_client_write() {
    for_each_backend(|store| async move {
        assert_eq!(store.longest_client_access_token_ttl().await.unwrap(), None);
        assert!(store.unused_registrations(i64::MAX, 10).await.unwrap().is_empty());
        let registered = |id: &str, created_at: i64| ClientRecord {
            registration_token_hash: Some([3; 32]),
            access_token_ttl: None,
            created_at,
            ..client(id, None)
        };
        for (id, ttl) in [("a", Some(60)), ("b", Some(7_200)), ("c", None), ("d", Some(300))] {
            let mut c = client(id, None);
            c.access_token_ttl = ttl;
            assert!(store.insert_client(&c).await.unwrap());
        }
        assert_eq!(store.longest_client_access_token_ttl().await.unwrap(), Some(7_200));
        let mut b = store.get_client("b").await.unwrap().unwrap();
        b.access_token_ttl = Some(120);
        assert!(store.update_client(&b).await.unwrap());
        assert_eq!(store.longest_client_access_token_ttl().await.unwrap(), Some(300));
        assert!(store.delete_client("d").await.unwrap());
        assert_eq!(store.longest_client_access_token_ttl().await.unwrap(), Some(120));

        for (id, at) in [("r3", 30), ("r1", 10), ("r2", 20), ("r2b", 20), ("r4", 40)] {
            assert!(store.insert_client(&registered(id, at)).await.unwrap());
        }
        let unused = |by: i64, limit: usize| {
            let store = store.clone();
            async move {
                let found = store.unused_registrations(by, limit).await.unwrap();
                found.into_iter().map(|c| c.client_id).collect::<Vec<_>>()
            }
        };
        assert_eq!(
            unused(30, 10).await,
            ["r1", "r2", "r2b", "r3"],
            "oldest first, up to the cutoff"
        );
        assert_eq!(unused(30, 2).await, ["r1", "r2"]);
        assert_eq!(unused(9, 10).await, Vec::<String>::new());
        assert!(store.mark_client_used("r2", 50).await.unwrap());
        // An update from a copy read before the first use keeps it used.
        assert!(store.update_client(&registered("r2", 20)).await.unwrap());
        // The purge's delete keeps a client used since it read the page.
        assert!(!store.delete_unused_client("r2").await.unwrap());
        assert!(store.get_client("r2").await.unwrap().is_some());
        assert!(!store.delete_unused_client("nobody").await.unwrap());
        assert!(store.delete_unused_client("r1").await.unwrap());
        assert!(store.get_client("r1").await.unwrap().is_none());
        assert_eq!(unused(i64::MAX, 10).await, ["r2b", "r3", "r4"]);
        let mut r4 = store.get_client("r4").await.unwrap().unwrap();
        r4.registration_token_hash = None;
        assert!(store.update_client(&r4).await.unwrap());
        assert_eq!(unused(i64::MAX, 10).await, ["r2b", "r3"]);
    })
    .await;
}

/// A sled folder from before the client facts gets them built once, at open.
#[tokio::test]
async fn a_sled_folder_from_before_the_client_facts_finds_them() {
    let dir = tempfile::tempdir().unwrap();
    {
        let store = SledStore::open(dir.path()).unwrap();
        let mut registered = client("r1", None);
        registered.registration_token_hash = Some([3; 32]);
        registered.access_token_ttl = Some(900);
        store.insert_client(&registered).await.unwrap();
        store.insert_client(&client("c1", None)).await.unwrap();
        store.durable().await.unwrap();
    }
    let store = reopened_without(dir.path(), &["client_facts"], &["client-facts"]).await;
    assert_eq!(store.longest_client_access_token_ttl().await.unwrap(), Some(900));
    let unused = store.unused_registrations(100, 10).await.unwrap();
    assert_eq!(ids(&unused), ["r1"]);
}

/// A revocation racing the grant's first write (a replayed code while its first exchange writes
/// the grant) never says "revoked already" of a grant it leaves live. On PostgreSQL the grant
/// could appear between the revocation's update and its look-up, and was reported revoked.
#[tokio::test]
async fn a_revocation_racing_the_grants_first_write_never_leaves_it_live() {
    use tessera::store::GrantRevocation;
    for_each_backend(|store| async move {
        for round in 0..300 {
            let id = format!("race{round}");
            let (writer, revoker) = (store.clone(), store.clone());
            let live = grant(&id, "u1", "c1", 10);
            let write = tokio::spawn(async move { writer.insert_grant(&live).await.unwrap() });
            let wanted = id.clone();
            let revoke = tokio::spawn(async move { revoker.revoke_grant_once(&wanted).await.unwrap() });
            let (_, outcome) = (write.await.unwrap(), revoke.await.unwrap());
            let revoked = store.get_grant(&id).await.unwrap().unwrap().revoked;
            match outcome {
                GrantRevocation::Revoked | GrantRevocation::WasRevoked => {
                    assert!(revoked, "round {round}: {outcome:?}, but the grant is live")
                }
                GrantRevocation::Unknown => assert!(!revoked, "round {round}"),
            }
        }
    })
    .await;
}

#[tokio::test]
async fn a_refresh_token_is_read_with_its_grant_or_without_one_that_is_gone() {
    for_each_backend(|store| async move {
        let mut live = grant("g1", "u1", "c1", 10);
        live.scope = "read write".into();
        store.put_grant(&live).await.unwrap();
        store.put_refresh(&[1; 32], &refresh("g1", 10, 1000)).await.unwrap();
        store.put_refresh(&[2; 32], &refresh("gone", 11, 1001)).await.unwrap();
        assert_eq!(
            store.get_refresh_and_grant(&[1; 32]).await.unwrap(),
            Some((refresh("g1", 10, 1000), Some(live.clone())))
        );
        assert_eq!(
            store.get_refresh_and_grant(&[2; 32]).await.unwrap(),
            Some((refresh("gone", 11, 1001), None))
        );
        assert_eq!(store.get_refresh_and_grant(&[3; 32]).await.unwrap(), None);
        store.revoke_grant("g1").await.unwrap();
        let (_, grant) = store.get_refresh_and_grant(&[1; 32]).await.unwrap().unwrap();
        assert!(grant.unwrap().revoked);
    })
    .await;
}

/// A refresh token bound to a DPoP key (RFC 9449 §5) keeps its key thumbprint through every
/// read: alone, with its grant, and through a rotation of its family.
#[tokio::test]
async fn a_refresh_tokens_dpop_binding_is_stored_and_handed_on_by_rotation() {
    for_each_backend(|store| async move {
        let jkt = Some("NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs".to_string());
        store.put_grant(&grant("g1", "u1", "c1", 10)).await.unwrap();
        let bound = RefreshRecord {
            dpop_jkt: jkt.clone(),
            ..refresh("g1", 10, 1000)
        };
        store.put_refresh(&[1; 32], &bound).await.unwrap();
        assert_eq!(store.get_refresh(&[1; 32]).await.unwrap(), Some(bound.clone()));
        let (read, _) = store.get_refresh_and_grant(&[1; 32]).await.unwrap().unwrap();
        assert_eq!(read, bound);
        let next = RefreshRecord {
            current: CurrentRefresh::Later([2; 32]),
            ..bound_next(&jkt, 20)
        };
        assert_eq!(
            store.rotate_refresh(&[1; 32], &[1; 32], &next).await.unwrap(),
            Rotation::Rotated
        );
        assert_eq!(store.get_refresh(&[1; 32]).await.unwrap(), Some(next.clone()));
        assert_eq!(
            store.get_refresh(&[2; 32]).await.unwrap(),
            None,
            "one record per family"
        );
        let (read, _) = store.get_refresh_and_grant(&[1; 32]).await.unwrap().unwrap();
        assert_eq!((read.current, read.dpop_jkt), (CurrentRefresh::Later([2; 32]), jkt));
    })
    .await;
}

fn bound_next(jkt: &Option<String>, at: i64) -> RefreshRecord {
    RefreshRecord {
        dpop_jkt: jkt.clone(),
        ..refresh("g1", at, at * 100)
    }
}

/// Which token of a family is current decides every rotation: the first (the family's id),
/// then each successor in turn; any other token of the family is spent, and a record from
/// before families that was spent never rotates again.
#[tokio::test]
async fn a_refresh_family_rotates_from_its_current_token_only() {
    for_each_backend(|store| async move {
        store.put_grant(&grant("g1", "u1", "c1", 10)).await.unwrap();
        store.put_refresh(&[1; 32], &refresh("g1", 10, 1000)).await.unwrap();
        let later = |hash: u8, at: i64| RefreshRecord {
            current: CurrentRefresh::Later([hash; 32]),
            ..refresh("g1", at, at * 100)
        };
        // A token of the family that is not its current one (here: never issued) is spent.
        let spent = store.rotate_refresh(&[1; 32], &[5; 32], &later(6, 11)).await.unwrap();
        assert_eq!(spent, Rotation::Spent(refresh("g1", 10, 1000)));
        assert_eq!(
            store.rotate_refresh(&[1; 32], &[1; 32], &later(2, 20)).await.unwrap(),
            Rotation::Rotated
        );
        for gone in [[1; 32], [6; 32], [3; 32]] {
            let outcome = store.rotate_refresh(&[1; 32], &gone, &later(9, 99)).await.unwrap();
            assert_eq!(outcome, Rotation::Spent(later(2, 20)), "{gone:?}");
        }
        assert_eq!(
            store.rotate_refresh(&[1; 32], &[2; 32], &later(3, 30)).await.unwrap(),
            Rotation::Rotated
        );
        assert_eq!(store.get_refresh(&[1; 32]).await.unwrap(), Some(later(3, 30)));
        let record = store.get_refresh(&[1; 32]).await.unwrap().unwrap();
        assert!(record.is_current(&[1; 32], &[3; 32]));
        assert!(!record.is_current(&[1; 32], &[2; 32]) && !record.is_current(&[1; 32], &[1; 32]));

        let old_spent = RefreshRecord {
            current: CurrentRefresh::Spent,
            ..refresh("g1", 10, 1000)
        };
        store.put_refresh(&[4; 32], &old_spent).await.unwrap();
        assert_eq!(store.get_refresh(&[4; 32]).await.unwrap(), Some(old_spent.clone()));
        let outcome = store.rotate_refresh(&[4; 32], &[4; 32], &later(9, 99)).await.unwrap();
        assert_eq!(outcome, Rotation::Spent(old_spent));
        assert_eq!(
            store.rotate_refresh(&[7; 32], &[7; 32], &later(9, 99)).await.unwrap(),
            Rotation::Unknown
        );
    })
    .await;
}

#[tokio::test]
async fn a_refresh_token_rotates_once_however_many_rotate_it_at_once() {
    for_each_backend(|store| async move {
        store.put_grant(&grant("g1", "u1", "c1", 10)).await.unwrap();
        let old = refresh("g1", 10, 1000);
        store.put_refresh(&[1; 32], &old).await.unwrap();
        let outcomes = race(16, || {
            let store = store.clone();
            async move {
                // Each racer would make its own successor current.
                let new = tessera::oauth::secret_hash(&tessera::oauth::random_token(16));
                let next = RefreshRecord {
                    current: CurrentRefresh::Later(new),
                    ..refresh("g1", 20, 2000)
                };
                (new, store.rotate_refresh(&[1; 32], &[1; 32], &next).await.unwrap())
            }
        })
        .await;
        let winners: Vec<_> = outcomes.iter().filter(|(_, r)| *r == Rotation::Rotated).collect();
        assert_eq!(winners.len(), 1, "{outcomes:?}");
        let winner_new = winners[0].0;
        let stored = store.get_refresh(&[1; 32]).await.unwrap().unwrap();
        assert_eq!(
            stored.current,
            CurrentRefresh::Later(winner_new),
            "the winner's successor is current"
        );
        for (_, outcome) in &outcomes {
            match outcome {
                Rotation::Rotated => {}
                Rotation::Spent(record) => assert_eq!(record.grant_id, "g1"),
                Rotation::Unknown => panic!("{outcomes:?}"),
            }
        }
        // The store does not judge: a revoked grant's family still rotates (the core refuses
        // it before asking).
        store.revoke_grant("g1").await.unwrap();
        let next = RefreshRecord {
            current: CurrentRefresh::Later([8; 32]),
            ..refresh("g1", 40, 4000)
        };
        assert_eq!(
            store.rotate_refresh(&[1; 32], &winner_new, &next).await.unwrap(),
            Rotation::Rotated
        );
    })
    .await;
}

/// A refresh request's checks (`RefreshUse::check`) are the store's too: each refuses the use
/// and changes nothing, whichever token is presented; only an allowed use of the current token
/// rotates, and an allowed use of a spent one is reported as reuse, with the grant.
#[tokio::test]
async fn a_refresh_use_rotates_only_when_its_checks_allow_it() {
    for_each_backend(|store| async move {
        let live = grant("g1", "u1", "c1", 10);
        store.put_grant(&live).await.unwrap();
        store.put_refresh(&[1; 32], &refresh("g1", 10, 1000)).await.unwrap();
        let bound = RefreshRecord {
            dpop_jkt: Some("k1".into()),
            ..refresh("g1", 10, 1000)
        };
        store.put_refresh(&[2; 32], &bound).await.unwrap();
        store.put_refresh(&[3; 32], &refresh("gone", 10, 1000)).await.unwrap();
        let used = |client_id: &'static str, now: i64, dpop_jkt: Option<&'static str>| RefreshUse {
            client_id,
            now,
            dpop_jkt,
        };
        let next = |token: u8| RefreshSuccessor {
            token: [token; 32],
            issued_at: 500,
            expires_at: 5000,
        };
        use RefreshOutcome::Refused;
        use RefreshRefusal::*;
        let refusals = [
            ([1; 32], used("c2", 500, None), Refused(OtherClient)),
            ([1; 32], used("c1", 1000, None), Refused(Expired)),
            ([2; 32], used("c1", 500, None), Refused(ProofMissing)),
            ([2; 32], used("c1", 500, Some("k2")), Refused(OtherKey)),
            ([3; 32], used("c1", 500, None), Refused(GrantGone)),
            ([9; 32], used("c1", 500, None), RefreshOutcome::Unknown),
        ];
        for (family, use_, outcome) in &refusals {
            for presented in [*family, [7; 32]] {
                let got = store.use_refresh(family, &presented, use_, &next(8)).await.unwrap();
                assert_eq!(&got, outcome, "{family:?} {presented:?} {use_:?}");
            }
        }
        assert_eq!(
            store.get_refresh(&[1; 32]).await.unwrap(),
            Some(refresh("g1", 10, 1000))
        );
        assert_eq!(store.get_refresh(&[2; 32]).await.unwrap(), Some(bound.clone()));

        // Allowed: a token bound to no key may be used with a proof, a bound one with its key.
        let (rotated_use, rotated_next) = (used("c1", 500, Some("k9")), next(4));
        let rotated = store
            .use_refresh(&[1; 32], &[1; 32], &rotated_use, &rotated_next)
            .await
            .unwrap();
        assert_eq!(rotated, RefreshOutcome::Rotated(live.clone()));
        let successor = RefreshRecord {
            current: CurrentRefresh::Later([4; 32]),
            ..refresh("g1", 500, 5000)
        };
        assert_eq!(store.get_refresh(&[1; 32]).await.unwrap(), Some(successor.clone()));
        let (rotated_use, rotated_next) = (used("c1", 500, Some("k1")), next(5));
        let rotated = store
            .use_refresh(&[2; 32], &[2; 32], &rotated_use, &rotated_next)
            .await
            .unwrap();
        assert_eq!(rotated, RefreshOutcome::Rotated(live.clone()));
        let bound_successor = RefreshRecord {
            dpop_jkt: Some("k1".into()),
            ..RefreshRecord {
                current: CurrentRefresh::Later([5; 32]),
                ..refresh("g1", 500, 5000)
            }
        };
        assert_eq!(store.get_refresh(&[2; 32]).await.unwrap(), Some(bound_successor));

        // The first token again: reuse, reported with the grant; nothing changes.
        let (reused_use, reused_next) = (used("c1", 600, None), next(6));
        let reused = store
            .use_refresh(&[1; 32], &[1; 32], &reused_use, &reused_next)
            .await
            .unwrap();
        assert_eq!(reused, RefreshOutcome::Spent(live.clone()));
        assert_eq!(store.get_refresh(&[1; 32]).await.unwrap(), Some(successor));
        // A revoked grant's family refuses every token, its current one too.
        store.revoke_grant("g1").await.unwrap();
        let (refused_use, refused_next) = (used("c1", 600, None), next(6));
        let refused = store
            .use_refresh(&[1; 32], &[4; 32], &refused_use, &refused_next)
            .await
            .unwrap();
        assert_eq!(refused, Refused(GrantGone));
    })
    .await;
}

#[tokio::test]
async fn a_refresh_token_is_used_once_however_many_use_it_at_once() {
    for_each_backend(|store| async move {
        let live = grant("g1", "u1", "c1", 10);
        store.put_grant(&live).await.unwrap();
        store.put_refresh(&[1; 32], &refresh("g1", 10, 1000)).await.unwrap();
        let outcomes = race(16, || {
            let store = store.clone();
            async move {
                let next = RefreshSuccessor {
                    token: tessera::oauth::secret_hash(&tessera::oauth::random_token(16)),
                    issued_at: 20,
                    expires_at: 2000,
                };
                let used = RefreshUse {
                    client_id: "c1",
                    now: 20,
                    dpop_jkt: None,
                };
                (
                    next.token,
                    store.use_refresh(&[1; 32], &[1; 32], &used, &next).await.unwrap(),
                )
            }
        })
        .await;
        let winners: Vec<_> = outcomes
            .iter()
            .filter(|(_, outcome)| *outcome == RefreshOutcome::Rotated(live.clone()))
            .collect();
        assert_eq!(winners.len(), 1, "{outcomes:?}");
        let spent = outcomes
            .iter()
            .filter(|(_, outcome)| *outcome == RefreshOutcome::Spent(live.clone()));
        assert_eq!(spent.count(), 15, "{outcomes:?}");
        let stored = store.get_refresh(&[1; 32]).await.unwrap().unwrap();
        assert_eq!(stored.current, CurrentRefresh::Later(winners[0].0));
    })
    .await;
}

#[tokio::test]
async fn access_token_revocations_are_remembered() {
    for_each_backend(|store| async move {
        assert!(!store.is_access_token_revoked("jti-1").await.unwrap());
        store.revoke_access_token("jti-1", 1000).await.unwrap();
        assert!(store.is_access_token_revoked("jti-1").await.unwrap());
        assert!(!store.is_access_token_revoked("jti-2").await.unwrap());
    })
    .await;
}

#[tokio::test]
async fn consents_are_one_per_user_and_client() {
    for_each_backend(|store| async move {
        let consent = |user_id: &str, client_id: &str, scopes: &[&str]| ConsentRecord {
            user_id: user_id.into(),
            client_id: client_id.into(),
            scopes: scopes.iter().map(|s| s.to_string()).collect(),
            granted_at: 1,
            updated_at: 2,
        };
        store.put_consent(&consent("u1", "c2", &["read"])).await.unwrap();
        store.put_consent(&consent("u1", "c1", &["read"])).await.unwrap();
        store.put_consent(&consent("u10", "c1", &["read"])).await.unwrap();
        store
            .put_consent(&consent("u1", "c1", &["read", "write"]))
            .await
            .unwrap();
        let got = store.get_consent("u1", "c1").await.unwrap().unwrap();
        assert_eq!(got.scopes, ["read", "write"], "replaced");
        let listed: Vec<String> = store
            .list_consents("u1")
            .await
            .unwrap()
            .into_iter()
            .map(|c| c.client_id)
            .collect();
        assert_eq!(listed, ["c1", "c2"], "only u1's, by client id");
        store.delete_consent("u1", "c1").await.unwrap();
        assert!(store.get_consent("u1", "c1").await.unwrap().is_none());
        assert!(store.get_consent("u10", "c1").await.unwrap().is_some());
        store.put_consent(&consent("u1", "c10", &["read"])).await.unwrap();
        assert_eq!(store.delete_consents_for_client("c1").await.unwrap(), 1);
        assert!(store.get_consent("u10", "c1").await.unwrap().is_none());
        assert!(store.get_consent("u1", "c10").await.unwrap().is_some(), "c10 is not c1");
        assert!(store.get_consent("u1", "c2").await.unwrap().is_some());
    })
    .await;
}

#[tokio::test]
async fn sessions_are_stored_by_hash_and_deleted() {
    for_each_backend(|store| async move {
        let session = SessionRecord {
            user_id: Some("u1".into()),
            csrf_token: "csrf".into(),
            auth_time: Some(5),
            expires_at: 1000,
            user_epoch: 3,
            amr: vec!["pwd".into(), "otp".into(), "mfa".into()],
            factor_time: Some(6),
        };
        store.put_session(&[4; 32], &session).await.unwrap();
        let got = store.get_session(&[4; 32]).await.unwrap().unwrap();
        assert_eq!((got.user_id.as_deref(), got.user_epoch), (Some("u1"), 3));
        assert_eq!((got.amr, got.factor_time), (session.amr.clone(), Some(6)));
        assert!(store.get_session(&[5; 32]).await.unwrap().is_none());
        store.delete_session(&[4; 32]).await.unwrap();
        assert!(store.get_session(&[4; 32]).await.unwrap().is_none());
    })
    .await;
}

#[tokio::test]
async fn writes_become_durable_and_the_probe_leaves_nothing_behind() {
    for_each_backend(|store| async move {
        store.insert_client(&client("c1", None)).await.unwrap();
        store.durable().await.unwrap();
        let before = store.record_count().await.unwrap();
        store.probe_write().await.unwrap();
        assert_eq!(store.record_count().await.unwrap(), before);
    })
    .await;
}

#[tokio::test]
async fn records_are_counted_clients_users_and_unrevoked_grants() {
    for_each_backend(|store| async move {
        assert_eq!(store.count_records().await.unwrap(), RecordCounts::default());
        store.insert_client(&client("c1", None)).await.unwrap();
        store.insert_client(&client("c2", Some("u1"))).await.unwrap();
        store.insert_user(&user("u1", "alice")).await.unwrap();
        for id in ["g1", "g2", "g3"] {
            store.put_grant(&grant(id, "u1", "c1", 10)).await.unwrap();
        }
        store.revoke_grant("g2").await.unwrap();
        let counts = store.count_records().await.unwrap();
        assert_eq!(
            counts,
            RecordCounts {
                clients: 2,
                users: 1,
                live_grants: 2
            }
        );
        // Writing a grant again changes nothing; revoking one counts it out.
        store.put_grant(&grant("g1", "u1", "c1", 10)).await.unwrap();
        assert_eq!(store.count_records().await.unwrap().live_grants, 2);
        store.revoke_grant_once("g1").await.unwrap();
        store.revoke_grant_once("g1").await.unwrap();
        assert_eq!(store.count_records().await.unwrap().live_grants, 1);
        // Deletes are counted out at once.
        store.delete_client("c2").await.unwrap();
        store.delete_user("u1").await.unwrap();
        let counts = store.count_records().await.unwrap();
        assert_eq!((counts.clients, counts.users), (1, 0));
        // The purge too: g3 is live, created at 10, and never had a refresh family.
        store.purge_expired(1000, 900, 900).await.unwrap();
        assert_eq!(store.count_records().await.unwrap().live_grants, 0);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn counts_stay_exact_under_concurrent_writes() {
    use tessera::store::GrantRevocation;
    for_each_backend(|store| async move {
        // 50 grants written at once, then 30 of them each revoked by 4 racers, and 20 users
        // signed up at once: every count moves once per record, whoever wins each race.
        let mut racing = tokio::task::JoinSet::new();
        for i in 0..50 {
            let store = store.clone();
            racing.spawn(async move {
                store
                    .insert_grant(&grant(&format!("race-{i}"), "u1", "c1", 10))
                    .await
                    .unwrap()
            });
        }
        assert!(racing.join_all().await.into_iter().all(|stored| stored));
        assert_eq!(store.count_records().await.unwrap().live_grants, 50);
        let mut racing = tokio::task::JoinSet::new();
        for i in 0..30 {
            for _ in 0..4 {
                let store = store.clone();
                racing.spawn(async move { store.revoke_grant_once(&format!("race-{i}")).await.unwrap() });
            }
        }
        let outcomes = racing.join_all().await;
        let revoked = outcomes.iter().filter(|o| **o == GrantRevocation::Revoked).count();
        assert_eq!(revoked, 30, "one racer revokes each");
        let mut racing = tokio::task::JoinSet::new();
        for i in 0..20 {
            let store = store.clone();
            racing.spawn(async move {
                store
                    .insert_user(&user(&format!("racer{i}"), &format!("racer{i}")))
                    .await
                    .unwrap()
            });
        }
        racing.join_all().await;
        let counts = store.count_records().await.unwrap();
        assert_eq!((counts.users, counts.live_grants), (20, 20));
    })
    .await;
}

#[tokio::test]
async fn active_refresh_tokens_exclude_spent_expired_and_revoked_ones() {
    for_each_backend(|store| async move {
        store.put_grant(&grant("live", "u1", "c1", 10)).await.unwrap();
        store.put_grant(&grant("dead", "u1", "c1", 10)).await.unwrap();
        store.revoke_grant("dead").await.unwrap();
        store.put_refresh(&[1; 32], &refresh("live", 10, 1000)).await.unwrap();
        store.put_refresh(&[2; 32], &refresh("live", 10, 50)).await.unwrap(); // expired at 100
        store.put_refresh(&[3; 32], &refresh("dead", 10, 1000)).await.unwrap();
        store.put_refresh(&[4; 32], &refresh("live", 10, 1000)).await.unwrap();
        store
            .rotate_refresh(&[4; 32], &[5; 32], &refresh("live", 20, 1000))
            .await
            .unwrap();
        // Live: [1] and [5]; [4] spent, [2] expired, [3] of a revoked grant.
        assert_eq!(store.count_active_refresh_tokens(100).await.unwrap(), 2);
    })
    .await;
}

#[tokio::test]
async fn a_purge_removes_exactly_what_can_no_longer_be_used() {
    for_each_backend(|store| async move {
        let (now, cutoff) = (1000, 900);
        store.put_code(&[1; 32], &code("gc", now - 1)).await.unwrap(); // expired
        store.put_code(&[2; 32], &code("gc", now + 60)).await.unwrap();
        let session = |expires_at| SessionRecord {
            user_id: None,
            csrf_token: "t".into(),
            auth_time: None,
            expires_at,
            user_epoch: 0,
            amr: password_only(),
            factor_time: None,
        };
        store.put_session(&[1; 32], &session(now)).await.unwrap(); // expired
        store.put_session(&[2; 32], &session(now + 60)).await.unwrap();
        store.revoke_access_token("old", now - 1).await.unwrap(); // expired
        store.revoke_access_token("new", now + 60).await.unwrap();
        // A grant whose only token expired long ago: both go.
        store.put_grant(&grant("stale", "u1", "c1", 100)).await.unwrap();
        store.put_refresh(&[1; 32], &refresh("stale", 100, 500)).await.unwrap();
        // A grant whose token expired but was issued after the cutoff (its access tokens may
        // live): both stay.
        store.put_grant(&grant("recent", "u1", "c1", 950)).await.unwrap();
        store.put_refresh(&[2; 32], &refresh("recent", 950, 990)).await.unwrap();
        // A grant with a live token stays, and so does the token.
        store.put_grant(&grant("live", "u1", "c2", 100)).await.unwrap();
        store
            .put_refresh(&[3; 32], &refresh("live", 100, now + 60))
            .await
            .unwrap();
        // A grant created after the cutoff with no token (a client without refresh tokens)
        // stays: its access tokens are checked against it.
        store.put_grant(&grant("fresh", "u2", "c1", 950)).await.unwrap();
        // One without a family, created before the access cutoff but after the unclaimed one
        // (a device's approved grant it has not collected yet), stays until that passes.
        store.put_grant(&grant("unclaimed", "u2", "c2", 850)).await.unwrap();
        let purged = store.purge_expired(now, cutoff, 800).await.unwrap();
        assert_eq!(
            (
                purged.codes,
                purged.sessions,
                purged.revoked_access,
                purged.refresh_tokens,
                purged.grants
            ),
            (1, 1, 1, 1, 1),
            "{purged:?}"
        );
        assert!(store.get_grant("unclaimed").await.unwrap().is_some());
        assert!(matches!(
            store.redeem_code(&[2; 32]).await.unwrap(),
            Redemption::Fresh(_)
        ));
        assert!(store.get_session(&[2; 32]).await.unwrap().is_some());
        assert!(store.is_access_token_revoked("new").await.unwrap());
        assert!(store.get_grant("stale").await.unwrap().is_none());
        assert!(store.get_refresh(&[1; 32]).await.unwrap().is_none());
        for kept in ["recent", "live", "fresh"] {
            assert!(store.get_grant(kept).await.unwrap().is_some(), "{kept}");
        }
        for (user, client) in [(Some("u1"), None), (None, Some("c1")), (Some("u1"), Some("c1"))] {
            assert!(store
                .grants_page(user, client, None, 100)
                .await
                .unwrap()
                .iter()
                .all(|g| g.grant_id != "stale"));
        }
        let unclaimed = store.purge_expired(now, cutoff, cutoff).await.unwrap();
        assert_eq!((unclaimed.grants, unclaimed.total()), (1, 1), "{unclaimed:?}");
        assert!(store.get_grant("unclaimed").await.unwrap().is_none());
        let again = store.purge_expired(now, cutoff, cutoff).await.unwrap();
        assert_eq!(again.total(), 0, "nothing left to purge: {again:?}");
    })
    .await;
}

/// Issue 29: the purge finds families and grants by when they become due. A family rotated
/// since is filed again rather than removed; a spent record from before families goes without
/// the grant its successor holds; each goes with its grant once nothing can use it.
#[tokio::test]
async fn a_purge_follows_rotations_and_keeps_a_grant_another_family_holds() {
    for_each_backend(|store| async move {
        let record = |grant_id: &str, issued_at: i64, expires_at: i64, current| RefreshRecord {
            current,
            ..refresh(grant_id, issued_at, expires_at)
        };
        store.put_grant(&grant("g1", "u1", "c1", 100)).await.unwrap();
        store.put_refresh(&[1; 32], &refresh("g1", 100, 500)).await.unwrap();
        let rotated = record("g1", 950, 5000, CurrentRefresh::Later([2; 32]));
        assert_eq!(
            store.rotate_refresh(&[1; 32], &[1; 32], &rotated).await.unwrap(),
            Rotation::Rotated
        );
        store.put_grant(&grant("g2", "u1", "c1", 100)).await.unwrap();
        store
            .put_refresh(&[3; 32], &record("g2", 100, 400, CurrentRefresh::Spent))
            .await
            .unwrap();
        store
            .put_refresh(&[4; 32], &record("g2", 400, 5000, CurrentRefresh::First))
            .await
            .unwrap();

        let purged = store.purge_expired(1000, 900, 900).await.unwrap();
        assert_eq!((purged.refresh_tokens, purged.grants), (1, 0), "{purged:?}");
        assert_eq!(store.get_refresh(&[1; 32]).await.unwrap(), Some(rotated));
        assert_eq!(store.get_refresh(&[3; 32]).await.unwrap(), None);
        assert!(store.get_refresh(&[4; 32]).await.unwrap().is_some());
        for kept in ["g1", "g2"] {
            assert!(store.get_grant(kept).await.unwrap().is_some(), "{kept}");
        }
        let again = store.purge_expired(1000, 900, 900).await.unwrap();
        assert_eq!(again.total(), 0, "{again:?}");

        let later = store.purge_expired(6000, 5900, 5900).await.unwrap();
        assert_eq!((later.refresh_tokens, later.grants), (2, 2), "{later:?}");
        for gone in ["g1", "g2"] {
            assert!(store.get_grant(gone).await.unwrap().is_none(), "{gone}");
        }
        assert!(store.grants_page(Some("u1"), None, None, 10).await.unwrap().is_empty());
        assert_eq!(store.purge_expired(6000, 5900, 5900).await.unwrap().total(), 0);
    })
    .await;
}

/// A sled folder from before the purge's indexes gets them built once, at open: its expired
/// family and its grant without one are found.
#[tokio::test]
async fn a_sled_folder_from_before_the_purge_indexes_is_purged() {
    let dir = tempfile::tempdir().unwrap();
    {
        let store = SledStore::open(dir.path()).unwrap();
        store.put_grant(&grant("stale", "u1", "c1", 100)).await.unwrap();
        store.put_refresh(&[1; 32], &refresh("stale", 100, 500)).await.unwrap();
        store.put_grant(&grant("bare", "u1", "c1", 100)).await.unwrap();
        store.put_grant(&grant("live", "u1", "c1", 100)).await.unwrap();
        store.put_refresh(&[2; 32], &refresh("live", 100, 5000)).await.unwrap();
        store.durable().await.unwrap();
    }
    let store = reopened_without(
        dir.path(),
        &["refresh_due", "grants_due", "grant_families"],
        &["purge-indexes", "grants-due"],
    )
    .await;
    let purged = store.purge_expired(1000, 900, 900).await.unwrap();
    assert_eq!((purged.refresh_tokens, purged.grants), (1, 2), "{purged:?}");
    assert!(store.get_grant("live").await.unwrap().is_some());
    assert!(store.get_refresh(&[2; 32]).await.unwrap().is_some());
}

#[tokio::test]
async fn a_one_time_upgrade_is_remembered_by_name() {
    for_each_backend(|store| async move {
        assert!(!store.upgraded("clear-x").await.unwrap());
        store.mark_upgraded("clear-x").await.unwrap();
        store.mark_upgraded("clear-x").await.unwrap();
        assert!(store.upgraded("clear-x").await.unwrap());
        assert!(!store.upgraded("clear-y").await.unwrap());
    })
    .await;
}

#[tokio::test]
async fn every_caller_gets_the_same_server_secret() {
    for_each_backend(|store| async move {
        let secrets = race(16, || {
            let store = store.clone();
            async move {
                let candidate = tessera::oauth::secret_hash(&tessera::oauth::random_token(16));
                store.server_secret("k", &candidate).await.unwrap()
            }
        })
        .await;
        assert!(secrets.windows(2).all(|w| w[0] == w[1]), "one secret for all");
        assert_eq!(store.server_secret("k", &[2; 32]).await.unwrap(), secrets[0]);
        assert_eq!(store.server_secret("other", &[3; 32]).await.unwrap(), [3; 32]);
        // Replacing is a compare-and-swap: of sixteen racing replacements of one value, one
        // happens.
        let replaced = race(16, || {
            let store = store.clone();
            async move {
                let new = tessera::oauth::random_token(32).into_bytes();
                store.replace_server_secret("other", &[3; 32], &new).await.unwrap()
            }
        })
        .await;
        assert_eq!(replaced.iter().filter(|r| **r).count(), 1, "{replaced:?}");
        assert_ne!(store.server_secret("other", &[3; 32]).await.unwrap(), [3; 32]);
    })
    .await;
}

#[tokio::test]
async fn counters_update_atomically_under_concurrency() {
    for_each_backend(|store| async move {
        let keys = vec![b"a".to_vec(), b"b".to_vec()];
        race(16, || {
            let (store, keys) = (store.clone(), keys.clone());
            async move {
                store
                    .update_counters(&keys, &|counters: &mut [Counter]| {
                        for counter in counters.iter_mut() {
                            counter.failures += 1;
                            counter.expires_at_ms = i64::MAX;
                        }
                    })
                    .await
                    .unwrap()
            }
        })
        .await;
        let seen = std::sync::Mutex::new(Vec::new());
        store
            .update_counters(&[b"b".to_vec(), b"c".to_vec()], &|counters: &mut [Counter]| {
                *seen.lock().unwrap() = counters.to_vec();
            })
            .await
            .unwrap();
        let seen = seen.into_inner().unwrap();
        assert_eq!(seen[0].failures, 16, "no increment was lost");
        assert_eq!(seen[1], Counter::default(), "absent counters read as zero");
        // Zeroed counters are forgotten.
        store
            .update_counters(&[b"a".to_vec()], &|counters: &mut [Counter]| {
                counters[0] = Counter::default()
            })
            .await
            .unwrap();
        let before = store.record_count().await.unwrap();
        store
            .update_counters(&[b"a".to_vec()], &|counters: &mut [Counter]| {
                assert_eq!(counters[0], Counter::default())
            })
            .await
            .unwrap();
        assert_eq!(store.record_count().await.unwrap(), before);
    })
    .await;
}

#[tokio::test]
async fn scratch_values_are_kept_until_they_expire() {
    for_each_backend(|store| async move {
        let now = tessera::now();
        store.put_scratch(&[1; 32], b"first", now + 60, Start).await.unwrap();
        store.put_scratch(&[1; 32], b"second", now + 60, Start).await.unwrap();
        store.put_scratch(&[2; 32], b"gone", now - 1, Start).await.unwrap();
        assert_eq!(
            store.get_scratch(&[1; 32]).await.unwrap().as_deref(),
            Some(&b"second"[..])
        );
        assert_eq!(store.get_scratch(&[2; 32]).await.unwrap(), None);
        assert_eq!(store.get_scratch(&[3; 32]).await.unwrap(), None);
    })
    .await;
}

/// The third review (finding 3): a full scratch space dropped the live value that expired
/// first, so anonymous pushes made other clients' pushed requests unknown. Now it refuses new
/// values (503 upstream), keeps a tenth for flows already under way, and never drops a live
/// value; the bound holds on every backend.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_full_scratch_space_refuses_new_values_and_keeps_every_live_one() {
    for_each_backend(|store| async move {
        let now = tessera::now();
        let key = |i: usize| -> [u8; 32] {
            let mut key = [7u8; 32];
            key[..8].copy_from_slice(&(i as u64).to_be_bytes());
            key
        };
        let (starts, _) = Start.limits();
        let mut writers = tokio::task::JoinSet::new();
        for writer in 0..16 {
            let store = store.clone();
            writers.spawn(async move {
                for i in (writer..starts).step_by(16) {
                    store.put_scratch(&key(i), b"value", now + 600, Start).await.unwrap();
                }
            });
        }
        writers.join_all().await;
        let refused = store.put_scratch(&key(starts), b"late", now + 600, Start).await;
        assert!(matches!(refused, Err(StoreError::Full { .. })), "{refused:?}");
        assert_eq!(
            store.get_scratch(&key(0)).await.unwrap().as_deref(),
            Some(&b"value"[..]),
            "the first value is still there"
        );
        // A step of a flow under way still has room; a value may be replaced in place.
        store
            .put_scratch(&key(starts), b"step", now + 600, Continue)
            .await
            .unwrap();
        store.put_scratch(&key(1), b"again", now + 600, Start).await.unwrap();
        assert_eq!(
            store.get_scratch(&key(1)).await.unwrap().as_deref(),
            Some(&b"again"[..])
        );
        // The whole space is bounded too.
        for i in starts + 1..MAX_SCRATCH_VALUES {
            store.put_scratch(&key(i), b"step", now + 600, Continue).await.unwrap();
        }
        let refused = store
            .put_scratch(&key(MAX_SCRATCH_VALUES), b"step", now + 600, Continue)
            .await;
        assert!(matches!(refused, Err(StoreError::Full { .. })), "{refused:?}");
        let oversized = store
            .put_scratch(&[9; 32], &vec![0; MAX_SCRATCH_VALUE_BYTES + 1], now + 600, Continue)
            .await;
        assert!(oversized.is_err());
    })
    .await;
}

/// The third review (finding 7): text with a NUL character is found nowhere, and is either
/// kept or refused as [`StoreError::InvalidText`] (PostgreSQL cannot store it), never a
/// backend failure: the request edge refuses it first, and this is the net below.
#[tokio::test]
async fn text_with_a_nul_is_not_found_or_refused_as_invalid_text() {
    for_each_backend(|store| async move {
        let looked_up = store.get_client("a\0b").await;
        assert!(
            matches!(looked_up, Ok(None) | Err(StoreError::InvalidText(_))),
            "{looked_up:?}"
        );
        let kept = store.insert_client(&client("nul\0id", None)).await;
        assert!(matches!(kept, Ok(true) | Err(StoreError::InvalidText(_))), "{kept:?}");
        let mut named = client("named", None);
        named.name = "a\0b".into();
        let kept = store.insert_client(&named).await;
        assert!(matches!(kept, Ok(true) | Err(StoreError::InvalidText(_))), "{kept:?}");
    })
    .await;
}

fn device(user_code: u8, client_id: &str, expires_at: i64) -> DeviceRecord {
    DeviceRecord {
        user_code_hash: [user_code; 32],
        client_id: client_id.into(),
        scope: "read".into(),
        audience: "https://api.example".into(),
        expires_at,
        interval: 5,
        status: DeviceStatus::Pending,
        user_id: None,
        auth_time: None,
        grant_id: None,
        last_poll_ms: None,
        redeemed: false,
    }
}

#[tokio::test]
async fn device_authorizations_have_unique_codes_and_are_found_by_user_code() {
    for_each_backend(|store| async move {
        assert!(store.insert_device(&[1; 32], &device(11, "c1", 1000)).await.unwrap());
        assert!(
            !store.insert_device(&[2; 32], &device(11, "c2", 1000)).await.unwrap(),
            "a user code is unique"
        );
        assert!(
            !store.insert_device(&[1; 32], &device(12, "c2", 1000)).await.unwrap(),
            "so is a device code"
        );
        assert!(store.get_device_by_user_code(&[12; 32]).await.unwrap().is_none());
        let (hash, found) = store.get_device_by_user_code(&[11; 32]).await.unwrap().unwrap();
        assert_eq!((hash, found), ([1; 32], device(11, "c1", 1000)));
        // Concurrent inserts of one user code: exactly one stores.
        let stored = race(16, || {
            let store = store.clone();
            async move {
                let mut key = [0u8; 32];
                key[..16].copy_from_slice(&tessera::oauth::random_id().as_bytes()[..16]);
                store.insert_device(&key, &device(13, "c1", 1000)).await.unwrap()
            }
        })
        .await;
        assert_eq!(stored.iter().filter(|s| **s).count(), 1, "{stored:?}");
    })
    .await;
}

#[tokio::test]
async fn a_device_update_writes_only_when_asked_and_unknown_codes_are_none() {
    for_each_backend(|store| async move {
        store.insert_device(&[1; 32], &device(11, "c1", 1000)).await.unwrap();
        let unchanged = store
            .update_device(&[1; 32], &|d| {
                d.interval = 99;
                false
            })
            .await
            .unwrap()
            .unwrap();
        assert_eq!(unchanged.interval, 99, "the caller sees what update left");
        let (_, stored) = store.get_device_by_user_code(&[11; 32]).await.unwrap().unwrap();
        assert_eq!(stored.interval, 5, "but nothing was written");
        store
            .update_device(&[1; 32], &|d| {
                d.status = DeviceStatus::Approved;
                d.user_id = Some("u1".into());
                d.grant_id = Some("g1".into());
                true
            })
            .await
            .unwrap();
        let (_, stored) = store.get_device_by_user_code(&[11; 32]).await.unwrap().unwrap();
        assert_eq!(
            (stored.status, stored.user_id.as_deref(), stored.grant_id.as_deref()),
            (DeviceStatus::Approved, Some("u1"), Some("g1"))
        );
        let called = std::sync::atomic::AtomicBool::new(false);
        let missing = store
            .update_device(&[9; 32], &|_| {
                called.store(true, std::sync::atomic::Ordering::SeqCst);
                true
            })
            .await
            .unwrap();
        assert!(missing.is_none() && !called.load(std::sync::atomic::Ordering::SeqCst));
    })
    .await;
}

// Worker threads, so that sled's compare-and-swap loop really races too.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_approved_device_code_is_redeemed_once_however_many_poll_at_once() {
    for_each_backend(|store| async move {
        let approved = DeviceRecord {
            status: DeviceStatus::Approved,
            ..device(11, "c1", 1000)
        };
        store.insert_device(&[1; 32], &approved).await.unwrap();
        let outcomes = race(50, || {
            let store = store.clone();
            async move {
                let won = std::sync::atomic::AtomicBool::new(false);
                store
                    .update_device(&[1; 32], &|d| {
                        // Called again on a retry: only the last call counts.
                        let redeem = !d.redeemed;
                        d.redeemed = true;
                        won.store(redeem, std::sync::atomic::Ordering::SeqCst);
                        redeem
                    })
                    .await
                    .unwrap();
                won.load(std::sync::atomic::Ordering::SeqCst)
            }
        })
        .await;
        assert_eq!(outcomes.iter().filter(|w| **w).count(), 1, "exactly one poll redeems");
        // Counting under concurrency: every increment lands.
        race(20, || {
            let store = store.clone();
            async move {
                store
                    .update_device(&[1; 32], &|d| {
                        d.interval += 1;
                        true
                    })
                    .await
                    .unwrap();
            }
        })
        .await;
        let (_, stored) = store.get_device_by_user_code(&[11; 32]).await.unwrap().unwrap();
        assert_eq!(stored.interval, 25);
    })
    .await;
}

#[tokio::test]
async fn a_purge_removes_expired_device_authorizations_and_frees_their_user_codes() {
    for_each_backend(|store| async move {
        let now = 1000;
        store.insert_device(&[1; 32], &device(11, "c1", now)).await.unwrap(); // expired
        store
            .insert_device(&[2; 32], &device(12, "c1", now + 60))
            .await
            .unwrap();
        let purged = store.purge_expired(now, 0, 0).await.unwrap();
        assert_eq!(purged.device_authorizations, 1, "{purged:?}");
        assert!(store.get_device_by_user_code(&[11; 32]).await.unwrap().is_none());
        assert!(store.get_device_by_user_code(&[12; 32]).await.unwrap().is_some());
        assert!(
            store
                .insert_device(&[3; 32], &device(11, "c1", now + 60))
                .await
                .unwrap(),
            "the expired request's user code is free again"
        );
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_key_is_remembered_once_however_many_remember_it_at_once_and_again_once_expired() {
    for_each_backend(|store| async move {
        let until = tessera::clock::now_ms() + 60_000;
        let fresh = race(50, || {
            let store = store.clone();
            async move { store.remember_once(b"jti-1", until).await.unwrap() }
        })
        .await;
        assert_eq!(fresh.iter().filter(|f| **f).count(), 1, "{fresh:?}");
        assert!(!store.remember_once(b"jti-1", until).await.unwrap(), "still remembered");
        assert!(
            store.remember_once(b"jti-2", until).await.unwrap(),
            "another key is new"
        );
        // A key whose time is over may be remembered again.
        let past = tessera::clock::now_ms() - 1;
        assert!(store.remember_once(b"jti-3", past).await.unwrap());
        assert!(store.remember_once(b"jti-3", until).await.unwrap(), "expired");
    })
    .await;
}

fn audit_entry(at_ms: i64, n: u32, actor: &str, action: &str, target: &str) -> AuditRecord {
    AuditRecord {
        id: audit_id(at_ms, &format!("{n:08x}")),
        at_ms,
        actor: AuditActor {
            kind: "user".into(),
            id: format!("id-{actor}"),
            name: actor.into(),
        },
        address: Some("203.0.113.7".into()),
        action: action.into(),
        target_kind: Some("client".into()),
        target_id: Some(format!("id-{target}")),
        target_name: Some(target.into()),
        outcome: "ok".into(),
    }
}

#[tokio::test]
async fn the_audit_trail_pages_newest_first_filters_and_purges_by_age() {
    for_each_backend(|store| async move {
        // 30 entries a second apart, by two actors on two targets, with two actions.
        let entries: Vec<AuditRecord> = (0..30)
            .map(|i| {
                let (actor, action, target) = match i % 3 {
                    0 => ("olivia", "client.create", "Billing"),
                    1 => ("olivia", "user.disable", "bob"),
                    _ => ("cli", "client.delete", "Billing"),
                };
                audit_entry(1_000_000 + i as i64 * 1000, i, actor, action, target)
            })
            .collect();
        for entry in &entries {
            store.append_audit(entry).await.unwrap();
        }
        // Appended only: an entry under an id already there changes nothing.
        let mut forged = entries[0].clone();
        forged.action = "user.delete".into();
        store.append_audit(&forged).await.unwrap();
        // Every entry, newest first, in pages of 7 that follow each other.
        let mut all = Vec::new();
        let mut before: Option<String> = None;
        loop {
            let page = store
                .audit_page(&AuditFilter::default(), before.as_deref(), 7)
                .await
                .unwrap();
            assert!(page.len() <= 7);
            let Some(last) = page.last() else { break };
            before = Some(last.id.clone());
            all.extend(page);
        }
        let mut newest_first = entries.clone();
        newest_first.reverse();
        assert_eq!(all, newest_first, "every entry once, in order, as written");

        let page = |filter: AuditFilter| {
            let store = store.clone();
            async move { store.audit_page(&filter, None, 100).await.unwrap() }
        };
        let by_actor = page(AuditFilter {
            actor: Some("olivia".into()),
            ..Default::default()
        })
        .await;
        assert_eq!(by_actor.len(), 20);
        let by_actor_id = page(AuditFilter {
            actor: Some("id-cli".into()),
            ..Default::default()
        })
        .await;
        assert_eq!(by_actor_id.len(), 10);
        let by_action_and_target = page(AuditFilter {
            action: Some("client.delete".into()),
            target: Some("Billing".into()),
            ..Default::default()
        })
        .await;
        assert_eq!(by_action_and_target.len(), 10);
        assert!(by_action_and_target.iter().all(|e| e.action == "client.delete"));
        let in_window = page(AuditFilter {
            since_ms: Some(1_010_000),
            until_ms: Some(1_020_000),
            ..Default::default()
        })
        .await;
        assert_eq!(in_window.len(), 10, "entries 10 to 19");
        assert_eq!(in_window.first().unwrap().at_ms, 1_019_000);

        // A filtered listing pages too, newest first, each page after the last one's id, and
        // within a time window.
        for (filter, want) in [
            (
                AuditFilter {
                    actor: Some("olivia".into()),
                    ..Default::default()
                },
                20,
            ),
            (
                AuditFilter {
                    target: Some("id-Billing".into()),
                    until_ms: Some(1_020_000),
                    ..Default::default()
                },
                13,
            ),
            (
                AuditFilter {
                    action: Some("user.disable".into()),
                    since_ms: Some(1_004_000),
                    ..Default::default()
                },
                9,
            ),
            (
                AuditFilter {
                    actor: Some("nobody".into()),
                    ..Default::default()
                },
                0,
            ),
        ] {
            let mut seen: Vec<AuditRecord> = Vec::new();
            let mut before: Option<String> = None;
            loop {
                let page = store.audit_page(&filter, before.as_deref(), 3).await.unwrap();
                assert!(page.len() <= 3);
                let Some(last) = page.last() else { break };
                before = Some(last.id.clone());
                seen.extend(page);
            }
            let expected: Vec<AuditRecord> = newest_first.iter().filter(|e| filter.matches(e)).cloned().collect();
            assert_eq!(seen, expected, "{filter:?}");
            assert_eq!(seen.len(), want, "{filter:?}");
        }
        // A client's name finds nothing: anyone could register one (an id does).
        let mut by_client = audit_entry(1_031_000, 99, "Billing", "token.issue", "x");
        by_client.actor.kind = "client".into();
        store.append_audit(&by_client).await.unwrap();
        let named = |actor: &str| AuditFilter {
            actor: Some(actor.into()),
            ..Default::default()
        };
        assert!(page(named("Billing")).await.is_empty());
        assert_eq!(page(named("id-Billing")).await.len(), 1);

        // Purging by age removes exactly the older entries (and the client's, newest, stays).
        assert_eq!(store.purge_audit(1_015_000).await.unwrap(), 15);
        let left = page(AuditFilter::default()).await;
        assert_eq!(left.len(), 16);
        assert!(left.iter().all(|e| e.at_ms >= 1_015_000));
        // Filters find only what is left.
        assert_eq!(page(named("olivia")).await.len(), 10);
    })
    .await;
}

fn factor(user_id: &str, factor_id: &str, secret: FactorSecret) -> FactorRecord {
    FactorRecord {
        factor_id: factor_id.into(),
        user_id: user_id.into(),
        name: format!("{factor_id} of {user_id}"),
        created_at: 10,
        last_used_at: None,
        revision: 0,
        secret,
    }
}

fn recovery(codes: &[&str]) -> FactorSecret {
    FactorSecret::RecoveryCodes {
        unused: codes.iter().map(|c| c.to_string()).collect(),
        made: codes.len() as u32,
    }
}

#[tokio::test]
async fn factors_are_one_per_id_listed_per_user_and_deleted() {
    for_each_backend(|store| async move {
        let totp = factor("u1", "totp", FactorSecret::Totp { sealed: "abc".into() });
        assert!(store.insert_factor(&totp).await.unwrap());
        let again = factor("u1", "totp", FactorSecret::Totp { sealed: "other".into() });
        assert!(
            !store.insert_factor(&again).await.unwrap(),
            "one factor per id and user"
        );
        assert!(store
            .insert_factor(&factor("u1", "recovery", recovery(&["a", "b"])))
            .await
            .unwrap());
        // Another user, and a user whose id begins with the first's, are apart.
        assert!(store
            .insert_factor(&factor("u2", "totp", FactorSecret::Totp { sealed: "x".into() }))
            .await
            .unwrap());
        assert!(store
            .insert_factor(&factor("u1x", "totp", FactorSecret::Totp { sealed: "y".into() }))
            .await
            .unwrap());
        let mine = store.factors_of("u1").await.unwrap();
        let ids: Vec<&str> = mine.iter().map(|f| f.factor_id.as_str()).collect();
        assert_eq!(ids, ["recovery", "totp"]);
        assert_eq!(mine[1], totp, "stored as written, the first write kept");
        assert!(store.delete_factor("u1", "totp").await.unwrap());
        assert!(!store.delete_factor("u1", "totp").await.unwrap());
        assert_eq!(store.delete_factors_of("u1").await.unwrap(), 1);
        assert!(store.factors_of("u1").await.unwrap().is_empty());
        assert_eq!(store.factors_of("u2").await.unwrap().len(), 1);
        assert_eq!(store.factors_of("u1x").await.unwrap().len(), 1);
    })
    .await;
}

#[tokio::test]
async fn a_factor_is_replaced_only_over_the_revision_read_however_many_race() {
    for_each_backend(|store| async move {
        let set = factor("u1", "recovery", recovery(&["a", "b", "c"]));
        store.insert_factor(&set).await.unwrap();
        // 50 uses of one recovery code at once, each replacing the revision it read.
        let winners = race(50, || {
            let store = store.clone();
            let set = set.clone();
            async move {
                let used = FactorRecord {
                    revision: 1,
                    secret: recovery(&["b", "c"]),
                    last_used_at: Some(20),
                    ..set
                };
                store.replace_factor(&used, 0).await.unwrap()
            }
        })
        .await;
        assert_eq!(winners.iter().filter(|w| **w).count(), 1, "exactly one use wins");
        let stored = store.factors_of("u1").await.unwrap().remove(0);
        assert_eq!((stored.revision, stored.last_used_at), (1, Some(20)));
        assert_eq!(stored.secret, recovery(&["b", "c"]));
        let gone = factor("u1", "nothing", recovery(&[]));
        assert!(
            !store.replace_factor(&gone, 0).await.unwrap(),
            "no factor, nothing replaced"
        );
        assert!(store.factors_of("u1").await.unwrap().len() == 1);
    })
    .await;
}
