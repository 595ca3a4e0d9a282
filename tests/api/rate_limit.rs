//! Request rates: a token bucket per authenticated client and per address (a public client per
//! client and address), answered 429 with `Retry-After` before any work is done; behind a
//! trusted proxy the forwarded address is the one counted.

use std::time::Duration;

use serde_json::Value;

use crate::helpers::*;

#[tokio::test]
async fn a_client_over_its_rate_gets_429_with_retry_after_and_others_are_unaffected() {
    use tessera::rate_limit::Rate;
    let dirs = tempfile::tempdir().unwrap();
    let config = tessera::Config {
        rate_limit_per_client: Rate {
            per_second: 1.0,
            burst: 3.0,
        },
        rate_limit_per_address: Rate::OFF,
        ..test_config(&dirs)
    };
    let app = spawn_app_with(config, dirs).await;
    for _ in 0..3 {
        assert_eq!(app.client_credentials("read").await.status(), 200);
    }
    let limited = app.client_credentials("read").await;
    assert_eq!(limited.status(), 429);
    let wait: u64 = limited.headers()["retry-after"].to_str().unwrap().parse().unwrap();
    assert!((1..=2).contains(&wait));
    assert_eq!(limited.json::<Value>().await.unwrap()["error"], "rate_limited");
    // Another client, same address: its own bucket.
    let other = app.register_relying_party(None, None).await;
    let other_cc = app.token(&other, &[("grant_type", "client_credentials")]).await;
    assert_ne!(other_cc.status(), 429);
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert_eq!(app.client_credentials("read").await.status(), 200, "the bucket refills");
}

#[tokio::test]
async fn an_address_over_its_rate_gets_429_before_any_work_is_done() {
    use tessera::rate_limit::Rate;
    let dirs = tempfile::tempdir().unwrap();
    let config = tessera::Config {
        rate_limit_per_address: Rate {
            per_second: 1.0,
            burst: 3.0,
        },
        ..test_config(&dirs)
    };
    let app = spawn_app_with(config, dirs).await;
    let garbage = TestClient {
        id: "nobody".into(),
        secret: Some("wrong".into()),
    };
    for _ in 0..3 {
        assert_eq!(app.client_credentials_as(&garbage, "read").await.status(), 401);
    }
    let limited = app.client_credentials_as(&garbage, "read").await;
    assert_eq!(limited.status(), 429);
    assert!(limited.headers().contains_key("retry-after"));
    // The flood is cut off at the address: the login form is limited too, reads are not.
    let login = app
        .http
        .post(app.url("/o/login/"))
        .form(&[("username", "x")])
        .send()
        .await
        .unwrap();
    assert_eq!(login.status(), 429);
    let registration = app
        .http
        .post(app.url("/o/register/"))
        .json(&serde_json::json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(
        registration.status(),
        429,
        "registration is limited too (and documents it)"
    );
    assert_eq!(
        app.http
            .get(app.url("/.well-known/jwks.json"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
}

/// Behind a trusted reverse proxy each client has its own budget (the nearest untrusted
/// `X-Forwarded-For` hop); from anyone else the header is ignored, so it cannot be used to
/// dodge the limit.
#[tokio::test]
async fn behind_a_trusted_proxy_the_forwarded_address_is_limited_and_elsewhere_the_header_is_ignored() {
    use tessera::rate_limit::Rate;
    let limited_app = |trusted: &[&str]| {
        let dirs = tempfile::tempdir().unwrap();
        let config = tessera::Config {
            rate_limit_per_address: Rate {
                per_second: 0.01,
                burst: 2.0,
            },
            trusted_proxies: trusted.iter().map(|t| t.parse().unwrap()).collect(),
            ..test_config(&dirs)
        };
        spawn_app_with(config, dirs)
    };
    let revoke_from = |app: &TestApp, forwarded: &str| {
        app.http
            .post(app.url("/o/revoke_token/"))
            .header("X-Forwarded-For", forwarded)
            .basic_auth(&app.client.id, app.client.secret.as_ref())
            .form(&[("token", "whatever")])
            .send()
    };
    // The tests connect from 127.0.0.1: here that is the proxy.
    let proxied = limited_app(&["127.0.0.0/8"]).await;
    for _ in 0..2 {
        assert_eq!(revoke_from(&proxied, "203.0.113.1").await.unwrap().status(), 200);
    }
    assert_eq!(revoke_from(&proxied, "203.0.113.1").await.unwrap().status(), 429);
    // A forged entry on the left does not help: the proxy appended the real address.
    let forged = revoke_from(&proxied, "198.51.100.99, 203.0.113.1").await.unwrap();
    assert_eq!(forged.status(), 429);
    assert_eq!(
        revoke_from(&proxied, "203.0.113.2").await.unwrap().status(),
        200,
        "another client"
    );

    let direct = limited_app(&[]).await;
    for _ in 0..2 {
        assert_eq!(revoke_from(&direct, "203.0.113.1").await.unwrap().status(), 200);
    }
    let spoofed = revoke_from(&direct, "203.0.113.2").await.unwrap();
    assert_eq!(spoofed.status(), 429, "an untrusted peer's X-Forwarded-For is ignored");
}

// The first adversarial review (issue 11, `SECURITY.md`), each finding as the attack that
// found it; each test failed on the code the review ran against.

/// Finding 13: anyone knowing a public client's id drained its per-client rate budget, and a
/// real user of the app got 429. A public client is now counted per (client, address).
#[tokio::test]
async fn naming_a_public_client_does_not_drain_its_other_users_rate_budget() {
    let dirs = tempfile::tempdir().unwrap();
    let app = spawn_app_with(
        tessera::Config {
            rate_limit_per_client: tessera::rate_limit::Rate::per_second(10),
            ..test_config(&dirs)
        },
        dirs,
    )
    .await;
    let bogus = [
        ("grant_type", "authorization_code"),
        ("code", "nonsense"),
        ("code_verifier", "x"),
    ];
    let mut drained = false;
    for _ in 0..40 {
        drained |= app.token(&app.public_client, &bogus).await.status() == 429;
    }
    assert!(drained, "the limit is on: the attacker's own address is refused");
    let mut user = browser(&app);
    user.http = from_address([127, 0, 0, 2]);
    let real = user.token(&app.public_client, &bogus).await;
    assert_eq!(real.status(), 400, "another address still has the app's budget");
    // A confidential client authenticates, so its budget stays per client.
    let mut limited = false;
    for _ in 0..40 {
        limited |= app.client_credentials("read").await.status() == 429;
    }
    assert!(limited);
}
