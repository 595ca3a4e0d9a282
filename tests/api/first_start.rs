//! A newcomer's first start (issue 17): the banner `tessera serve` prints, the demo user and app
//! `serve --dev` creates on an empty data folder, shell completions and `--version`, all with the
//! real binary.

use std::io::Write;
use std::process::{Command, Stdio};

use serde_json::Value;

use crate::helpers::*;

/// The value after `label` on its banner line.
fn banner_value(banner: &str, label: &str) -> String {
    banner
        .lines()
        .find_map(|line| line.trim_start().strip_prefix(label))
        .unwrap_or_else(|| panic!("the banner has no {label:?} line:\n{banner}"))
        .trim()
        .to_string()
}

fn tessera(dir: &std::path::Path, args: &[&str], stdin: &str) -> std::process::Output {
    run_tessera(dir, args, &[], stdin)
}

#[tokio::test]
async fn the_first_start_says_where_it_serves_and_gives_the_command_that_creates_a_user() {
    let dir = tempfile::tempdir().unwrap();
    let server = ServerProcess::start(dir.path(), &[], &[]);
    let banner = server.stdout_once_it_has("user create");
    let address = server.base.trim_start_matches("http://");
    assert!(banner.contains(&format!("is listening on {address}")), "{banner}");
    assert_eq!(banner_value(&banner, "issuer:"), server.base);
    let http = reqwest::Client::new();
    for label in ["API docs:", "discovery:"] {
        let url = banner_value(&banner, label);
        let status = http.get(&url).send().await.unwrap().status();
        assert_eq!(status, 200, "{label} {url} answers");
    }
    assert!(!banner.contains("playground:"), "no playground without --dev: {banner}");

    // The command, exactly as printed, creates a user while the server runs: the server is
    // handed it through its control socket, and the user logs in at once.
    let line = banner.lines().find(|l| l.contains("user create")).unwrap().trim();
    let (echo, command) = line.split_once(" | ").expect("a pipeline");
    let password = echo.strip_prefix("echo '").and_then(|p| p.strip_suffix('\'')).unwrap();
    let args = command
        .strip_prefix("cargo run -- ")
        .unwrap_or_else(|| panic!("the debug binary names itself `cargo run --`: {command}"));
    let created = tessera(
        dir.path(),
        &args.split_whitespace().collect::<Vec<_>>(),
        &format!("{password}\n"),
    );
    assert!(created.status.success(), "{}", String::from_utf8_lossy(&created.stderr));
    assert!(String::from_utf8_lossy(&created.stdout).starts_with("created user alice"));
    assert_eq!(log_in_status(&server.base, "alice", password).await, 303);
    server.terminate();
    assert!(
        !dir.path().join("data").join(tessera::control::SOCKET_FILE).exists(),
        "a stopped server leaves no socket behind"
    );

    // With a user, the hint is gone and the user logs in.
    let server = ServerProcess::start(dir.path(), &[], &[]);
    let banner = server.stdout_once_it_has("data:");
    assert!(!banner.contains("no user yet"), "{banner}");
    assert_eq!(log_in_status(&server.base, "alice", password).await, 303);
    server.terminate();
}

#[tokio::test]
async fn dev_mode_on_an_empty_folder_creates_a_demo_user_and_app_that_run_the_code_flow_once() {
    let dir = tempfile::tempdir().unwrap();
    let server = ServerProcess::start(dir.path(), &["--dev"], &[]);
    let banner = server.stdout_once_it_has("press Authorize");
    assert_eq!(
        banner_value(&banner, "playground:"),
        format!("{}/o/playground/", server.base)
    );
    assert!(!banner.contains("no user yet"), "the demo user is there: {banner}");
    let username = banner_value(&banner, "username:");
    let password = banner_value(&banner, "password:");
    let client = TestClient {
        id: banner_value(&banner, "client_id:"),
        secret: Some(banner_value(&banner, "client_secret:")),
    };
    let redirect_uri = banner_value(&banner, "redirect_uri:");
    assert_eq!(redirect_uri, format!("{}/o/playground/callback/", server.base));
    assert!(password.len() >= 16, "a generated password: {password}");

    // The seed tutorial's path with the printed credentials: log in, consent, tokens.
    let remote = Remote::new(server.base.clone(), server.base.clone(), client.clone(), client.clone());
    let pkce = Pkce::new();
    let params: Vec<(String, String)> = [
        ("response_type", "code"),
        ("client_id", client.id.as_str()),
        ("redirect_uri", redirect_uri.as_str()),
        ("scope", "openid read"),
        ("state", "s1"),
        ("code_challenge", pkce.challenge.as_str()),
        ("code_challenge_method", "S256"),
    ]
    .iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    let login = remote.authorize(&params).await;
    assert_eq!(login.status(), 302);
    assert_eq!(
        remote.log_in(&location(&login), &username, &password).await.status(),
        303
    );
    let allowed = remote.consent(&params, "allow").await;
    assert_eq!(allowed.status(), 303, "the demo app asks for consent like any app");
    let code = param(&location(&allowed), "code").expect("a code at the playground's callback");
    let tokens: Value = remote
        .token(
            &client,
            &[
                ("grant_type", "authorization_code"),
                ("code", &code),
                ("redirect_uri", &redirect_uri),
                ("code_verifier", &pkce.verifier),
            ],
        )
        .await
        .json()
        .await
        .unwrap();
    assert!(
        tokens["access_token"].is_string() && tokens["id_token"].is_string(),
        "{tokens}"
    );
    assert!(
        tokens["refresh_token"].is_string(),
        "the demo app may refresh: {tokens}"
    );
    server.terminate();

    // A second start creates nothing more and shows no secret again.
    let server = ServerProcess::start(dir.path(), &["--dev"], &[]);
    let banner = server.stdout_once_it_has("data:");
    assert!(
        !banner.contains("client_secret") && !banner.contains(&password),
        "{banner}"
    );
    server.terminate();
    let apps = tessera(dir.path(), &["app", "list"], "");
    assert_eq!(String::from_utf8_lossy(&apps.stdout).lines().count(), 1, "one demo app");
    let users = tessera(dir.path(), &["user", "list"], "");
    assert_eq!(
        String::from_utf8_lossy(&users.stdout).lines().count(),
        1,
        "one demo user"
    );
}

#[test]
fn completions_load_in_bash_and_version_names_the_build() {
    let dir = tempfile::tempdir().unwrap();
    let version = String::from_utf8(tessera(dir.path(), &["--version"], "").stdout).unwrap();
    assert!(
        version.starts_with(&format!("tessera {} (", env!("CARGO_PKG_VERSION"))) && version.contains("build)"),
        "{version}"
    );
    let script = tessera(dir.path(), &["completions", "bash"], "").stdout;
    let loaded = Command::new("bash")
        .args(["-c", "source /dev/stdin; complete -p tessera"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .and_then(|mut bash| {
            bash.stdin.take().unwrap().write_all(&script)?;
            bash.wait_with_output()
        })
        .unwrap();
    assert!(String::from_utf8_lossy(&loaded.stdout).contains("-F _tessera tessera"));
    let zsh = String::from_utf8(tessera(dir.path(), &["completions", "zsh"], "").stdout).unwrap();
    assert!(zsh.starts_with("#compdef tessera") && zsh.contains("user"), "{zsh}");
    let fish = String::from_utf8(tessera(dir.path(), &["completions", "fish"], "").stdout).unwrap();
    assert!(fish.contains("complete -c tessera") && fish.contains("serve"), "{fish}");
}

/// The status of a login through the login page of the server at `base`.
async fn log_in_status(base: &str, username: &str, password: &str) -> u16 {
    let no_client = || TestClient {
        id: String::new(),
        secret: None,
    };
    let remote = Remote::new(base.to_string(), base.to_string(), no_client(), no_client());
    remote.log_in("/o/login/", username, password).await.status().as_u16()
}
