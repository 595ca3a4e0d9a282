//! Purging expired records: codes, tokens, sessions and dead grants go every `purge_interval`,
//! so the store stays flat over many issue-and-expire cycles, and a purge takes nothing that
//! is still usable.

use std::time::Duration;

use serde_json::Value;

use crate::helpers::*;

async fn wait_for_count(app: &TestApp, expected: u64) -> u64 {
    let mut count = 0;
    for _ in 0..50 {
        count = app.store.record_count().await.unwrap();
        if count == expected {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    count
}

#[tokio::test]
async fn expired_records_are_purged_so_the_store_stays_flat_over_many_cycles() {
    let dirs = tempfile::tempdir().unwrap();
    let config = tessera::Config {
        access_token_ttl: Duration::from_secs(2),
        refresh_token_ttl: Duration::from_secs(2),
        // Two seconds, not one: a token must outlive its use right after it is issued, even on
        // a loaded machine (expiry is counted in whole seconds, so a one-second lifetime can
        // be over within milliseconds).
        code_ttl: Duration::from_secs(2),
        session_ttl: Duration::from_secs(2),
        purge_interval: Duration::from_secs(1),
        ..test_config(&dirs)
    };
    let app = spawn_app_with(config, dirs).await;
    let mut after_purge = Vec::new();
    for cycle in 0..4 {
        for _ in 0..5 {
            let tokens = app.get_tokens().await;
            let refreshed = app.refresh(tokens["refresh_token"].as_str().unwrap()).await;
            assert_eq!(refreshed.status(), 200);
            let cc: Value = app.client_credentials("read").await.json().await.unwrap();
            assert_eq!(
                app.revoke(cc["access_token"].as_str().unwrap(), None).await.status(),
                200
            );
        }
        let filled = app.store.record_count().await.unwrap();
        // Everything issued expires within two seconds, and the last access token a second
        // or two later still; the background purge runs every second.
        tokio::time::sleep(Duration::from_millis(5000)).await;
        let baseline = after_purge.first().copied().unwrap_or(0);
        let count = if cycle == 0 {
            app.store.record_count().await.unwrap()
        } else {
            wait_for_count(&app, baseline).await
        };
        assert!(
            count < filled,
            "cycle {cycle}: the purge removed records ({filled} -> {count})"
        );
        after_purge.push(count);
    }
    assert!(
        after_purge.windows(2).all(|w| w[1] <= w[0]),
        "the store stays flat: {after_purge:?}"
    );
    // What remains is what lasts: clients, the user, the remembered consent.
    // (The embedded store indexes usernames in a record of their own.)
    let user_records = if on_postgres() { 1 } else { 2 };
    let lasting = app.store.list_clients().await.unwrap().len() as u64 + user_records + 1 /* consent */;
    assert_eq!(*after_purge.last().unwrap(), lasting, "{after_purge:?}");
}

#[tokio::test]
async fn a_purge_keeps_everything_still_usable() {
    let app = spawn_app().await;
    let tokens = app.get_tokens().await;
    let before = app.store.record_count().await.unwrap();
    let purged = app.provider.purge_expired().await.unwrap();
    assert_eq!(purged.total(), 0, "{purged:?}");
    assert_eq!(app.store.record_count().await.unwrap(), before);
    assert_eq!(
        app.introspect(tokens["access_token"].as_str().unwrap()).await["active"],
        true
    );
    assert_eq!(
        app.refresh(tokens["refresh_token"].as_str().unwrap()).await.status(),
        200
    );
}
