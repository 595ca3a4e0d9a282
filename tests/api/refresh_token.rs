use std::sync::Arc;

use crate::helpers::*;
use serde_json::Value;
use tessera::oauth::audit::Caller;
use tessera::oauth::refresh::PresentedRefresh;
use tessera::store::CurrentRefresh;

#[tokio::test]
async fn refresh_token_is_rotated_and_old_one_rejected() {
    let app = spawn_app().await;
    let tokens = app.get_tokens().await;
    let first = tokens["refresh_token"].as_str().unwrap();
    let response = app.refresh(first).await;
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["cache-control"], "no-store");
    let next: Value = response.json().await.unwrap();
    let second = next["refresh_token"].as_str().unwrap();
    assert_ne!(first, second, "a new refresh token on every use");
    assert_eq!(next["scope"], "read write");
    assert!(app
        .verify_with_jwks(next["access_token"].as_str().unwrap())
        .await
        .is_some());
    // The second one works once, too.
    assert_eq!(app.refresh(second).await.status(), 200);
}

#[tokio::test]
async fn reusing_a_rotated_refresh_token_revokes_the_whole_grant() {
    let app = spawn_app().await;
    let tokens = app.get_tokens().await;
    let first = tokens["refresh_token"].as_str().unwrap();
    let next: Value = app.refresh(first).await.json().await.unwrap();
    let second = next["refresh_token"].as_str().unwrap();

    // RFC 9700 §4.14.2: the old token comes back, so it leaked.
    let reuse = app.refresh(first).await;
    assert_eq!(reuse.status(), 400);
    assert_eq!(reuse.json::<Value>().await.unwrap()["error"], "invalid_grant");
    // The legitimate successor dies with the grant, and so do its access tokens.
    let successor = app.refresh(second).await;
    assert_eq!(successor.json::<Value>().await.unwrap()["error"], "invalid_grant");
    assert_eq!(
        app.introspect(next["access_token"].as_str().unwrap()).await["active"],
        false
    );
    assert_eq!(
        app.introspect(tokens["access_token"].as_str().unwrap()).await["active"],
        false
    );
}

/// Issue 29: a grant keeps one refresh record however often it is refreshed (the family's,
/// rewritten by each rotation), and every spent token of the family is still known as one.
#[tokio::test]
async fn a_grant_refreshed_many_times_keeps_one_record_and_knows_every_spent_token() {
    let app = spawn_app().await;
    let tokens = app.get_tokens().await;
    let mut chain = vec![tokens["refresh_token"].as_str().unwrap().to_string()];
    let records = app.store.record_count().await.unwrap();
    for _ in 0..10 {
        let next: Value = app.refresh(chain.last().unwrap()).await.json().await.unwrap();
        chain.push(next["refresh_token"].as_str().unwrap().to_string());
    }
    assert_eq!(
        app.store.record_count().await.unwrap(),
        records,
        "no record per rotation"
    );
    let newest = chain.last().unwrap();
    let presented = PresentedRefresh::parse(newest).unwrap();
    let record = app.store.get_refresh(&presented.family).await.unwrap().unwrap();
    assert!(record.is_current(&presented.family, &presented.token));
    assert_eq!(app.introspect(newest).await["active"], true);
    for spent in &chain[..10] {
        assert_eq!(
            app.introspect(spent).await["active"],
            false,
            "a spent token is inactive"
        );
    }
    // The fifth token, spent long ago, is reuse: the family goes.
    let reuse = app.refresh(&chain[4]).await;
    assert_eq!(reuse.json::<Value>().await.unwrap()["error"], "invalid_grant");
    assert_eq!(app.refresh(newest).await.status(), 400);
    assert_eq!(app.introspect(newest).await["active"], false);
}

/// What only a holder of one of the family's tokens can make (its id with a suffix never
/// issued) counts as reuse; anything else is an unknown token that touches no family.
#[tokio::test]
async fn a_made_up_refresh_token_is_invalid_and_only_a_family_holder_can_spend_its_family() {
    let app = spawn_app().await;
    let tokens = app.get_tokens().await;
    let first = tokens["refresh_token"].as_str().unwrap();
    let unknown = tessera::oauth::random_token(32);
    let unknown_later = format!("{unknown}{}", tessera::oauth::random_token(16));
    for made_up in [&unknown, &unknown_later, &format!("{first}x"), &first[..42].to_string()] {
        let response = app.refresh(made_up).await;
        assert_eq!(response.status(), 400, "{made_up}");
        assert_eq!(response.json::<Value>().await.unwrap()["error"], "invalid_grant");
    }
    assert_eq!(
        app.introspect(first).await["active"],
        true,
        "no made-up token touched the family"
    );
    let forged = format!("{first}{}", tessera::oauth::random_token(16));
    assert_eq!(app.refresh(&forged).await.status(), 400);
    assert_eq!(app.refresh(first).await.status(), 400, "the family was revoked");
}

/// A data folder or database from before families holds one record per token: a spent one
/// (`CurrentRefresh::Spent`) and its successor under the successor's own hash. Both keep
/// their meaning: the successor refreshes (and starts a family), the spent one is reuse.
#[tokio::test]
async fn refresh_tokens_stored_before_families_keep_working_and_stay_spent() {
    let app = spawn_app().await;
    let tokens = app.get_tokens().await;
    let first = tokens["refresh_token"].as_str().unwrap();
    let family = PresentedRefresh::parse(first).unwrap().family;
    let mut record = app.store.get_refresh(&family).await.unwrap().unwrap();
    // What the earlier version left after one rotation.
    let successor = tessera::oauth::random_token(32);
    app.store
        .put_refresh(&tessera::oauth::secret_hash(&successor), &record)
        .await
        .unwrap();
    record.current = CurrentRefresh::Spent;
    app.store.put_refresh(&family, &record).await.unwrap();

    let next: Value = app.refresh(&successor).await.json().await.unwrap();
    let third = next["refresh_token"].as_str().unwrap();
    assert!(third.starts_with(&successor), "the successor's family goes on");
    assert_eq!(app.introspect(third).await["active"], true);
    assert_eq!(app.introspect(&successor).await["active"], false);
    let reuse = app.refresh(first).await;
    assert_eq!(reuse.json::<Value>().await.unwrap()["error"], "invalid_grant");
    assert_eq!(app.introspect(third).await["active"], false, "the grant was revoked");
}

#[tokio::test]
async fn two_concurrent_uses_of_one_refresh_token_yield_exactly_one_success() {
    let app = spawn_app().await;
    for _ in 0..5 {
        let tokens = app.get_tokens().await;
        let token = tokens["refresh_token"].as_str().unwrap();
        let (a, b) = tokio::join!(app.refresh(token), app.refresh(token));
        let successes = [a.status(), b.status()].iter().filter(|s| s.as_u16() == 200).count();
        assert_eq!(successes, 1, "statuses {} and {}", a.status(), b.status());
    }
}

#[tokio::test]
async fn a_refresh_may_narrow_the_scope_but_never_widen_it() {
    let app = spawn_app().await;
    let tokens = app.get_tokens().await;
    let token = tokens["refresh_token"].as_str().unwrap();
    let narrowed = app
        .token(
            &app.client,
            &[
                ("grant_type", "refresh_token"),
                ("refresh_token", token),
                ("scope", "read"),
            ],
        )
        .await;
    let narrowed: Value = narrowed.json().await.unwrap();
    assert_eq!(narrowed["scope"], "read");
    let next = narrowed["refresh_token"].as_str().unwrap();
    let widened = app
        .token(
            &app.client,
            &[
                ("grant_type", "refresh_token"),
                ("refresh_token", next),
                ("scope", "read admin"),
            ],
        )
        .await;
    assert_eq!(widened.status(), 400);
    assert_eq!(widened.json::<Value>().await.unwrap()["error"], "invalid_scope");
    // The failed attempt did not spend the token.
    assert_eq!(app.refresh(next).await.status(), 200);
}

#[tokio::test]
async fn another_clients_refresh_token_is_invalid_grant() {
    let app = spawn_app().await;
    let tokens = app.get_tokens().await;
    let token = tokens["refresh_token"].as_str().unwrap();
    let response = app
        .token(
            &app.public_client,
            &[("grant_type", "refresh_token"), ("refresh_token", token)],
        )
        .await;
    assert_eq!(response.json::<Value>().await.unwrap()["error"], "invalid_grant");
    assert_eq!(app.refresh(token).await.status(), 200, "the owner can still use it");
}

#[tokio::test]
async fn an_expired_refresh_token_is_invalid_grant() {
    let app = spawn_app().await;
    let (client, secret) = app
        .provider
        .register_client(
            &Caller::system(),
            tessera::oauth::client::NewClient {
                name: "Short refresh".into(),
                client_type: tessera::store::ClientType::Confidential,
                grant_types: vec![
                    tessera::store::GrantType::AuthorizationCode,
                    tessera::store::GrantType::RefreshToken,
                ],
                redirect_uris: vec![REDIRECT_URI.into()],
                scope: "read".into(),
                resources: vec![],
                access_token_ttl: None,
                refresh_token_ttl: Some(1),
                skip_consent: false,
                owner_user_id: None,
                post_logout_redirect_uris: vec![],
                id_token_signed_response_alg: None,
                admin: false,
                keys: None,
                policy: Default::default(),
            },
        )
        .await
        .unwrap();
    let short = TestClient {
        id: client.client_id.clone(),
        secret,
    };
    let pkce = Pkce::new();
    let params: Vec<(String, String)> = app
        .authorize_query(&pkce, "s")
        .into_iter()
        .map(|(k, v)| match k.as_str() {
            "client_id" => (k, client.client_id.clone()),
            "scope" => (k, "read".into()),
            _ => (k, v),
        })
        .collect();
    let code = param(&app.authorize_and_allow(&params).await, "code").unwrap();
    let form = [
        ("grant_type", "authorization_code"),
        ("code", code.as_str()),
        ("redirect_uri", REDIRECT_URI),
        ("code_verifier", pkce.verifier.as_str()),
    ];
    let tokens: Value = app.token(&short, &form).await.json().await.unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(2100)).await;
    let response = app
        .token(
            &short,
            &[
                ("grant_type", "refresh_token"),
                ("refresh_token", tokens["refresh_token"].as_str().unwrap()),
            ],
        )
        .await;
    assert_eq!(response.status(), 400);
    assert_eq!(response.json::<Value>().await.unwrap()["error"], "invalid_grant");
}

#[tokio::test]
async fn refresh_tokens_and_codes_are_stored_only_as_hashes() {
    let app = spawn_app().await;
    let (code, pkce) = app.get_code().await;
    let tokens: Value = app.exchange_code(&code, &pkce.verifier).await.json().await.unwrap();
    let refresh = tokens["refresh_token"].as_str().unwrap().to_string();
    let next: Value = app.refresh(&refresh).await.json().await.unwrap();
    let newest = next["refresh_token"].as_str().unwrap().to_string();
    // Everything above was made durable before its response, so it is in the files (or the
    // database's rows) now.
    let contents = match &app.provider.config.database_url {
        Some(url) => vec![database_text(url).await],
        None => file_contents(&app.data_dir),
    };

    assert!(contents.iter().map(Vec::len).sum::<usize>() > 0);
    for secret in [&code, &refresh, &newest] {
        let found = contents
            .iter()
            .any(|c| c.windows(secret.len()).any(|w| w == secret.as_bytes()));
        assert!(!found, "a plaintext credential was found in the store");
    }
}

/// Sends `n` copies of one token request at once (on a multi-threaded runtime, so the server
/// really handles them in parallel) and returns the statuses.
async fn all_at_once(app: &Arc<TestApp>, n: usize, form: Vec<(&'static str, String)>) -> Vec<u16> {
    let mut set = tokio::task::JoinSet::new();
    for _ in 0..n {
        let (app, form) = (app.clone(), form.clone());
        set.spawn(async move {
            let form: Vec<(&str, &str)> = form.iter().map(|(k, v)| (*k, v.as_str())).collect();
            app.token(&app.client, &form).await.status().as_u16()
        });
    }
    set.join_all().await
}

/// The `tessera_tokens_signed_total` counter for `kind`, as `/metrics` shows it.
async fn tokens_signed(app: &TestApp, kind: &str) -> u64 {
    let text = app.get_text("/metrics").await;
    let prefix = format!("tessera_tokens_signed_total{{kind=\"{kind}\"}} ");
    text.lines()
        .find_map(|line| line.strip_prefix(&prefix))
        .map_or(0, |n| n.trim().parse().unwrap())
}

/// Also: the losers of a refresh race sign nothing (the grant rotates first and signs after),
/// so 16 uses of one token cost exactly one access token's signature.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn many_concurrent_uses_of_one_refresh_token_or_code_succeed_exactly_once() {
    let app = Arc::new(spawn_app().await);
    for _ in 0..3 {
        let tokens = app.get_tokens().await;
        let refresh = tokens["refresh_token"].as_str().unwrap().to_string();
        let signed_before = tokens_signed(&app, "access_token").await;
        let statuses = all_at_once(
            &app,
            16,
            vec![("grant_type", "refresh_token".into()), ("refresh_token", refresh)],
        )
        .await;
        assert_eq!(
            statuses.iter().filter(|s| **s == 200).count(),
            1,
            "one rotation wins: {statuses:?}"
        );
        assert!(statuses.iter().all(|s| *s == 200 || *s == 400), "{statuses:?}");
        assert_eq!(
            tokens_signed(&app, "access_token").await - signed_before,
            1,
            "only the winner signed"
        );

        let (code, pkce) = app.get_code().await;
        let form = vec![
            ("grant_type", "authorization_code".to_string()),
            ("code", code),
            ("redirect_uri", REDIRECT_URI.to_string()),
            ("code_verifier", pkce.verifier),
        ];
        let statuses = all_at_once(&app, 16, form).await;
        assert_eq!(
            statuses.iter().filter(|s| **s == 200).count(),
            1,
            "one exchange wins: {statuses:?}"
        );
        assert!(statuses.iter().all(|s| *s == 200 || *s == 400), "{statuses:?}");
    }
}
