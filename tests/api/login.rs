//! Login hardening: failed logins are throttled per user and per address.

use std::time::Duration;

use crate::helpers::*;
use tessera::oauth::throttle::ThrottlePolicy;

async fn throttled_app(max_failures: u32, per_address: u32) -> TestApp {
    let dirs = tempfile::tempdir().unwrap();
    let policy = ThrottlePolicy {
        max_failures,
        lockout: Duration::from_secs(1),
        max_lockout: Duration::from_secs(1),
        max_failures_per_address: per_address,
        ..ThrottlePolicy::default()
    };
    spawn_app_with(
        tessera::Config {
            login_throttle: policy,
            ..test_config(&dirs)
        },
        dirs,
    )
    .await
}

#[tokio::test]
async fn throttling_kicks_in_after_n_failures_and_lifts_after_the_delay() {
    let app = throttled_app(2, 100).await;
    for _ in 0..2 {
        assert_eq!(app.log_in("/o/login/", USERNAME, "wrong password").await.status(), 401);
    }
    // The third failure starts a lockout, and during it even the right password is refused
    // without being checked.
    let locked = app.log_in("/o/login/", USERNAME, "wrong password").await;
    assert_eq!(locked.status(), 429);
    assert_eq!(locked.headers()["retry-after"], "1");
    let right_but_locked = app.log_in("/o/login/", USERNAME, PASSWORD).await;
    assert_eq!(right_but_locked.status(), 429);
    let page = right_but_locked.text().await.unwrap();
    assert!(
        page.contains("Too many failed attempts. Try again in 1 seconds."),
        "the page says when to retry"
    );

    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert_eq!(
        app.log_in("/o/login/", USERNAME, PASSWORD).await.status(),
        303,
        "the lockout lifts"
    );
}

#[tokio::test]
async fn one_address_trying_many_usernames_is_throttled() {
    let app = throttled_app(100, 3).await;
    for name in ["bob", "carol", "dave"] {
        assert_eq!(app.log_in("/o/login/", name, "guess").await.status(), 401);
    }
    assert_eq!(app.log_in("/o/login/", "erin", "guess").await.status(), 429);
    assert_eq!(
        app.log_in("/o/login/", USERNAME, PASSWORD).await.status(),
        429,
        "the whole address waits"
    );
}

#[tokio::test]
async fn a_successful_login_clears_the_users_failures() {
    let app = throttled_app(2, 100).await;
    app.log_in("/o/login/", USERNAME, "wrong password").await;
    app.log_in("/o/login/", USERNAME, "wrong password").await;
    assert_eq!(app.log_in("/o/login/", USERNAME, PASSWORD).await.status(), 303);
    assert_eq!(
        app.log_in("/o/login/", USERNAME, "wrong password").await.status(),
        401,
        "the count started over"
    );
}
