//! The operator role (issue 16): given and taken away through the CLI (`user create
//! --operator`, `user set-operator USERNAME --on|--off`) and the admin API's user resource, and
//! never through a page a user sees.

use serde_json::{json, Value};
use tessera::oauth::audit::Caller;

use crate::helpers::*;

#[tokio::test]
async fn the_cli_gives_and_takes_the_operator_role() {
    let app = spawn_app().await;
    let dirs = app.stop().await;
    let (data, keys) = (dirs.path().join("data"), dirs.path().join("keys"));
    let run = |args: &[&str], stdin: &str| {
        let paths = [
            "--data-dir",
            data.to_str().unwrap(),
            "--keys-dir",
            keys.to_str().unwrap(),
        ];
        run_tessera(dirs.path(), &[args, &paths[..]].concat(), &[], stdin)
    };
    let operator_of = |username: &str| {
        let output = run(&["user", "show", username, "--json"], "");
        assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
        serde_json::from_slice::<Value>(&output.stdout).unwrap()["operator"].clone()
    };
    let created = run(
        &[
            "user",
            "create",
            "--username",
            "olivia",
            "--password-stdin",
            "--operator",
        ],
        "a long password\n",
    );
    assert!(created.status.success(), "{}", String::from_utf8_lossy(&created.stderr));
    assert!(String::from_utf8_lossy(&created.stdout).contains("operator"));
    assert_eq!(operator_of("olivia"), true);
    let created = run(
        &["user", "create", "--username", "bob", "--password-stdin"],
        "a long password\n",
    );
    assert!(created.status.success(), "{}", String::from_utf8_lossy(&created.stderr));
    assert_eq!(operator_of("bob"), false, "users are not operators by default");

    for (flag, expected) in [("--on", true), ("--off", false), ("--on", true)] {
        let output = run(&["user", "set-operator", "bob", flag], "");
        assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
        assert_eq!(operator_of("bob"), expected, "{flag}");
    }
    // Disabling and enabling from the CLI, each recorded in the audit trail by the OS user.
    let disabled_of = |username: &str| {
        let output = run(&["user", "show", username, "--json"], "");
        serde_json::from_slice::<Value>(&output.stdout).unwrap()["disabled"].clone()
    };
    for (command, expected) in [("disable", true), ("enable", false)] {
        let output = run(&["user", command, "bob"], "");
        assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
        assert_eq!(disabled_of("bob"), expected, "{command}");
    }
    assert!(!run(&["user", "disable", "nobody"], "").status.success());
    let trail = run(&["audit", "list", "--json", "--target", "bob"], "");
    let actions: Vec<String> = String::from_utf8_lossy(&trail.stdout)
        .lines()
        .map(|l| {
            serde_json::from_str::<Value>(l).unwrap()["action"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
    assert_eq!(
        actions,
        [
            "user.enable",
            "user.disable",
            "user.operator_on",
            "user.operator_off",
            "user.operator_on",
            "user.create"
        ]
    );
    // Exactly one of --on and --off; an unknown user is an error.
    for args in [
        &["user", "set-operator", "bob"][..],
        &["user", "set-operator", "bob", "--on", "--off"],
        &["user", "set-operator", "nobody", "--on"],
    ] {
        let output = run(args, "");
        assert!(!output.status.success(), "{args:?}");
    }
}

#[tokio::test]
async fn the_admin_api_shows_gives_and_takes_the_operator_role_and_the_profile_page_cannot() {
    let app = spawn_app().await;
    let (_, bearer) = app.admin_bearer().await;
    let alice = app.store.get_user_by_name(USERNAME).await.unwrap().unwrap();
    let user_url = app.url(&format!("/api/v1/users/{}", alice.user_id));

    let shown: Value = app
        .http
        .get(&user_url)
        .bearer_auth(&bearer)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(shown["operator"], false);
    let patched = app
        .http
        .patch(&user_url)
        .bearer_auth(&bearer)
        .json(&json!({"operator": true}))
        .send()
        .await
        .unwrap();
    assert_eq!(patched.status(), 200);
    assert_eq!(patched.json::<Value>().await.unwrap()["operator"], true);
    assert!(app.store.get_user(&alice.user_id).await.unwrap().unwrap().operator);
    // A profile change leaves the role alone.
    let renamed: Value = app
        .http
        .patch(&user_url)
        .bearer_auth(&bearer)
        .json(&json!({"name": "Alice"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(renamed["operator"], true);

    let created = app
        .http
        .post(app.url("/api/v1/users"))
        .bearer_auth(&bearer)
        .json(&json!({"username": "olivia", "password": "a long password", "operator": true}))
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), 201);
    assert_eq!(created.json::<Value>().await.unwrap()["operator"], true);

    // A user cannot make themselves an operator through their profile page.
    let bob = app
        .provider
        .create_user(&Caller::system(), "bob", "bob's long password", None)
        .await
        .unwrap();
    let browser = browser(&app);
    assert_eq!(
        browser.log_in("/o/login/", "bob", "bob's long password").await.status(),
        303
    );
    let page = browser.get_text("/o/profile/").await;
    let csrf = hidden_input(&page, "csrf_token").unwrap();
    let saved = browser
        .http
        .post(browser.url("/o/profile/"))
        .form(&[("csrf_token", csrf.as_str()), ("name", "Bob"), ("operator", "true")])
        .send()
        .await
        .unwrap();
    assert_eq!(saved.status(), 200);
    assert!(!app.store.get_user(&bob.user_id).await.unwrap().unwrap().operator);
}

#[tokio::test]
async fn disabling_a_user_ends_their_sessions_and_grants_and_stops_their_logins() {
    let app = spawn_app().await;
    let tokens = app.get_tokens().await;
    let refresh = tokens["refresh_token"].as_str().unwrap();
    let (_, bearer) = app.admin_bearer().await;
    let alice = app.store.get_user_by_name(USERNAME).await.unwrap().unwrap();
    let set_disabled = |disabled: bool| {
        let request = app
            .http
            .patch(app.url(&format!("/api/v1/users/{}", alice.user_id)))
            .bearer_auth(&bearer)
            .json(&json!({ "disabled": disabled }));
        async move { request.send().await.unwrap().json::<Value>().await.unwrap() }
    };
    assert_eq!(set_disabled(true).await["disabled"], true);

    // Her app's refresh token fails at once, and her access token is reported inactive.
    assert_eq!(app.refresh(refresh).await.status(), 400);
    let access = tokens["access_token"].as_str().unwrap();
    assert_eq!(app.introspect(access).await["active"], false);
    // Her browser's session is over: the next authorization request asks for a login...
    let pkce = Pkce::new();
    let again = app.authorize(&app.authorize_query(&pkce, "s")).await;
    assert!(location(&again).starts_with("/o/login/"), "{}", location(&again));
    // ...which her password no longer passes.
    let login = app.log_in("/o/login/", USERNAME, PASSWORD).await;
    assert_eq!(login.status(), 403);
    assert!(login.text().await.unwrap().contains("disabled"));
    // A wrong password still says only that.
    let wrong = app.log_in("/o/login/", USERNAME, "not her password").await;
    assert_eq!(wrong.status(), 401);

    assert_eq!(set_disabled(false).await["disabled"], false);
    assert_eq!(app.log_in("/o/login/", USERNAME, PASSWORD).await.status(), 303);
}
