//! Consent memory and first-party apps.

use crate::helpers::*;
use tessera::oauth::audit::Caller;

fn with_scope(mut params: Vec<(String, String)>, scope: &str) -> Vec<(String, String)> {
    params.retain(|(k, _)| k != "scope");
    params.push(("scope".into(), scope.into()));
    params
}

async fn logged_in_app() -> TestApp {
    let app = spawn_app().await;
    assert_eq!(app.log_in("/o/login/", USERNAME, PASSWORD).await.status(), 303);
    app
}

#[tokio::test]
async fn a_second_authorization_of_the_same_scopes_skips_consent() {
    let app = logged_in_app().await;
    let first = app.authorize_query(&Pkce::new(), "one");
    assert_eq!(app.authorize(&first).await.status(), 200, "asked the first time");
    assert_eq!(app.consent(&first, "allow").await.status(), 303);

    let pkce = Pkce::new();
    let again = app.authorize(&app.authorize_query(&pkce, "two")).await;
    assert_eq!(again.status(), 302, "not asked again");
    let redirect = location(&again);
    assert!(redirect.starts_with(REDIRECT_URI));
    assert_eq!(param(&redirect, "state").as_deref(), Some("two"));
    let code = param(&redirect, "code").unwrap();
    assert_eq!(app.exchange_code(&code, &pkce.verifier).await.status(), 200);

    // A subset of what was approved is covered too.
    let subset = app
        .authorize(&with_scope(app.authorize_query(&Pkce::new(), "s"), "read"))
        .await;
    assert_eq!(subset.status(), 302);
}

#[tokio::test]
async fn a_scope_not_approved_before_asks_again() {
    let app = logged_in_app().await;
    let read_only = with_scope(app.authorize_query(&Pkce::new(), "s"), "read");
    assert_eq!(app.consent(&read_only, "allow").await.status(), 303);
    let more = app.authorize(&app.authorize_query(&Pkce::new(), "s")).await;
    assert_eq!(more.status(), 200, "write was never approved");
    assert!(more.text().await.unwrap().contains("Change your data"));
}

#[tokio::test]
async fn prompt_consent_asks_again() {
    let app = logged_in_app().await;
    let params = app.authorize_query(&Pkce::new(), "s");
    assert_eq!(app.consent(&params, "allow").await.status(), 303);
    let mut forced = params.clone();
    forced.push(("prompt".into(), "consent".into()));
    assert_eq!(app.authorize(&forced).await.status(), 200);
}

#[tokio::test]
async fn a_denial_is_not_remembered() {
    let app = logged_in_app().await;
    let params = app.authorize_query(&Pkce::new(), "s");
    assert_eq!(app.consent(&params, "deny").await.status(), 303);
    assert_eq!(app.authorize(&params).await.status(), 200, "asked again after a denial");
}

#[tokio::test]
async fn a_first_party_app_never_asks() {
    let app = logged_in_app().await;
    let (client, _) = app
        .provider
        .register_client(
            &Caller::system(),
            tessera::oauth::client::NewClient {
                name: "First party".into(),
                client_type: tessera::store::ClientType::Public,
                grant_types: vec![tessera::store::GrantType::AuthorizationCode],
                redirect_uris: vec![REDIRECT_URI.into()],
                scope: "read".into(),
                resources: vec![],
                access_token_ttl: None,
                refresh_token_ttl: None,
                skip_consent: true,
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
    let params: Vec<(String, String)> = with_scope(app.authorize_query(&Pkce::new(), "s"), "read")
        .into_iter()
        .map(|(k, v)| {
            if k == "client_id" {
                (k, client.client_id.clone())
            } else {
                (k, v)
            }
        })
        .collect();
    let response = app.authorize(&params).await;
    assert_eq!(response.status(), 302);
    assert!(param(&location(&response), "code").is_some());
    // Not asked, but listed (and revocable) among the authorized apps, marked first-party.
    let page = app.get_text("/o/authorized_tokens/").await;
    assert!(page.contains("First party") && page.contains("(first-party)"));
}
