//! The `tessera` binary, run as an operator would.

use std::io::Write;
use std::process::{Command, Output, Stdio};

use crate::helpers::*;
use serde_json::Value;

/// `tessera` on the test folder `dir`: its data and keys folders, or its database when a
/// cluster-mode test server made one there.
fn tessera(dir: &std::path::Path, args: &[&str], stdin: Option<&str>) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_tessera"))
        .args(args)
        .env("TESSERA_DATA_DIR", dir.join("data"))
        .env("TESSERA_KEYS_DIR", dir.join("keys"))
        .envs(backend_env(dir))
        .env_remove("TESSERA_CONFIG")
        .env_remove("RUST_LOG")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("tessera runs");
    if let Some(input) = stdin {
        child.stdin.take().unwrap().write_all(input.as_bytes()).unwrap();
    }
    drop(child.stdin.take());
    child.wait_with_output().unwrap()
}

fn ok(output: Output) -> String {
    assert!(
        output.status.success(),
        "stderr: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).unwrap()
}

#[test]
fn app_commands_create_list_show_rotate_and_delete() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let created: Value = serde_json::from_str(&ok(tessera(
        d,
        &[
            "app",
            "create",
            "--name",
            "Web",
            "--client-type",
            "confidential",
            "--grant-type",
            "authorization-code",
            "--grant-type",
            "refresh-token",
            "--redirect-uri",
            "https://web.example/cb",
            "--scope",
            "read write",
            "--json",
        ],
        None,
    )))
    .unwrap();
    let id = created["client_id"].as_str().unwrap();
    let secret = created["client_secret"].as_str().unwrap();
    assert!(secret.len() >= 43, "a 256-bit secret");
    assert_eq!(created["redirect_uris"], serde_json::json!(["https://web.example/cb"]));

    let list = ok(tessera(d, &["app", "list"], None));
    assert!(list.contains(id) && list.contains("Web"));
    let shown: Value = serde_json::from_str(&ok(tessera(d, &["app", "show", id, "--json"], None))).unwrap();
    assert!(shown.get("client_secret").is_none(), "the secret is never shown again");
    assert_eq!(shown["scope"], "read write");

    let rotated: Value = serde_json::from_str(&ok(tessera(d, &["app", "rotate-secret", id, "--json"], None))).unwrap();
    assert_ne!(rotated["client_secret"], secret);
    // Only a hash is stored: the plaintext secret appears nowhere in the data folder.
    let found = file_contents(&d.join("data"))
        .iter()
        .any(|bytes| bytes.windows(secret.len()).any(|w| w == secret.as_bytes()));
    assert!(!found, "the client secret is not stored in plaintext");

    ok(tessera(d, &["app", "delete", id], None));
    assert!(!tessera(d, &["app", "show", id], None).status.success());
}

#[test]
fn app_create_rejects_unsafe_registrations() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let bad_uri = tessera(
        d,
        &[
            "app",
            "create",
            "--name",
            "X",
            "--client-type",
            "public",
            "--grant-type",
            "authorization-code",
            "--redirect-uri",
            "http://evil.example/cb",
        ],
        None,
    );
    assert!(!bad_uri.status.success());
    assert!(String::from_utf8_lossy(&bad_uri.stderr).contains("https"));
    let public_cc = tessera(
        d,
        &[
            "app",
            "create",
            "--name",
            "X",
            "--client-type",
            "public",
            "--grant-type",
            "client-credentials",
        ],
        None,
    );
    assert!(!public_cc.status.success());
    let unknown_scope = tessera(
        d,
        &[
            "app",
            "create",
            "--name",
            "X",
            "--client-type",
            "confidential",
            "--grant-type",
            "client-credentials",
            "--scope",
            "admin",
        ],
        None,
    );
    assert!(!unknown_scope.status.success());
}

#[test]
fn user_commands_create_list_set_password_and_delete() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    ok(tessera(
        d,
        &[
            "user",
            "create",
            "--username",
            "bob",
            "--password-stdin",
            "--email",
            "bob@example.com",
        ],
        Some("a long password\n"),
    ));
    assert!(
        !tessera(
            d,
            &["user", "create", "--username", "bob", "--password-stdin"],
            Some("another password\n")
        )
        .status
        .success(),
        "usernames are unique"
    );
    assert!(
        !tessera(d, &["user", "create", "--username", "eve"], None)
            .status
            .success(),
        "passwords only come from stdin"
    );
    let list = ok(tessera(d, &["user", "list"], None));
    assert!(list.contains("bob") && list.contains("bob@example.com"));
    ok(tessera(
        d,
        &["user", "set-password", "bob", "--password-stdin"],
        Some("a new long password\n"),
    ));
    let reset = ok(tessera(
        d,
        &["user", "set-password", "bob", "--password-stdin", "--revoke-grants"],
        Some("a third long password\n"),
    ));
    assert!(reset.contains("revoked 0 grants of bob"), "{reset}");
    ok(tessera(d, &["user", "delete", "bob"], None));
    assert!(!ok(tessera(d, &["user", "list"], None)).contains("bob"));
}

#[test]
fn user_profiles_are_set_and_shown_from_the_cli() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    ok(tessera(
        d,
        &[
            "user",
            "create",
            "--username",
            "carol",
            "--password-stdin",
            "--email",
            "carol@example.com",
        ],
        Some("a long password\n"),
    ));
    let shown: Value = serde_json::from_str(&ok(tessera(d, &["user", "show", "carol", "--json"], None))).unwrap();
    assert_eq!(shown["email"], "carol@example.com");
    assert_eq!(shown["email_verified"], false);
    assert!(shown["name"].is_null());

    ok(tessera(
        d,
        &[
            "user",
            "set-profile",
            "carol",
            "--name",
            "Carol Danvers",
            "--given-name",
            "Carol",
            "--locale",
            "en-US",
            "--email-verified",
            "true",
        ],
        None,
    ));
    let shown: Value = serde_json::from_str(&ok(tessera(d, &["user", "show", "carol", "--json"], None))).unwrap();
    assert_eq!(shown["name"], "Carol Danvers");
    assert_eq!(shown["given_name"], "Carol");
    assert_eq!(shown["locale"], "en-US");
    assert_eq!(shown["email_verified"], true);
    assert!(shown["updated_at"].as_i64().unwrap() > 0);

    // Only the flags given change; an empty value clears; a new email is unverified.
    ok(tessera(
        d,
        &[
            "user",
            "set-profile",
            "carol",
            "--given-name",
            "",
            "--email",
            "carol@new.example",
        ],
        None,
    ));
    let shown: Value = serde_json::from_str(&ok(tessera(d, &["user", "show", "carol", "--json"], None))).unwrap();
    assert_eq!(shown["name"], "Carol Danvers");
    assert!(shown["given_name"].is_null());
    assert_eq!(shown["email"], "carol@new.example");
    assert_eq!(shown["email_verified"], false);

    let bad = tessera(d, &["user", "set-profile", "carol", "--website", "ftp://x"], None);
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("http(s) URL"));
    assert!(!tessera(d, &["user", "show", "nobody"], None).status.success());
}

#[test]
fn an_openid_connect_client_gets_its_logout_uris_and_id_token_algorithm() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let created: Value = serde_json::from_str(&ok(tessera(
        d,
        &[
            "app",
            "create",
            "--name",
            "RP",
            "--client-type",
            "confidential",
            "--grant-type",
            "authorization-code",
            "--redirect-uri",
            "https://rp.example/cb",
            "--post-logout-redirect-uri",
            "https://rp.example/bye",
            "--id-token-alg",
            "ES256",
            "--json",
        ],
        None,
    )))
    .unwrap();
    assert_eq!(
        created["post_logout_redirect_uris"],
        serde_json::json!(["https://rp.example/bye"])
    );
    assert_eq!(created["id_token_signed_response_alg"], "ES256");
    assert_eq!(
        created["scope"], "email openid profile read write",
        "OpenID Connect scopes by default"
    );
    let refused = tessera(
        d,
        &[
            "app",
            "create",
            "--name",
            "RP",
            "--client-type",
            "public",
            "--grant-type",
            "authorization-code",
            "--redirect-uri",
            "https://rp.example/cb",
            "--post-logout-redirect-uri",
            "https://rp.example/bye#fragment",
        ],
        None,
    );
    assert!(
        !refused.status.success(),
        "post-logout URIs follow the redirect URI rules"
    );
}

#[test]
fn keys_commands_generate_rotate_retire_and_list() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let first = ok(tessera(d, &["keys", "list"], None));
    assert!(first.contains("ES256") && first.contains("Signing"), "{first}");
    let first_kid = first.split_whitespace().next().unwrap().to_string();
    let generated = ok(tessera(d, &["keys", "generate", "--alg", "RS256"], None));
    assert!(generated.contains("RS256") && generated.contains("Published"));
    let rotated = ok(tessera(d, &["keys", "rotate", "--alg", "EdDSA"], None));
    assert!(rotated.contains("EdDSA") && rotated.contains("Signing"));
    ok(tessera(d, &["keys", "retire", &first_kid], None));
    let list = ok(tessera(d, &["keys", "list"], None));
    assert!(list.contains(&format!("{first_kid}  ES256  Retired")), "{list}");
    let retire_signing = tessera(d, &["keys", "retire", rotated.split_whitespace().next().unwrap()], None);
    assert!(!retire_signing.status.success(), "the signing key cannot be retired");
}

/// The OS account the tests run as, as `id -un` names it.
fn os_account() -> String {
    let output = Command::new("id").arg("-un").output().unwrap();
    String::from_utf8(output.stdout).unwrap().trim().to_string()
}

/// `tessera` run on the blocking pool, beside a server of this test process.
fn tessera_beside(
    root: &std::path::Path,
    args: &[&str],
    stdin: Option<&str>,
) -> impl std::future::Future<Output = Output> + Send + 'static {
    let (root, stdin) = (root.to_path_buf(), stdin.map(str::to_string));
    let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
    let run = tokio::task::spawn_blocking(move || {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        tessera(&root, &args, stdin.as_deref())
    });
    async move { run.await.unwrap() }
}

#[tokio::test]
async fn data_commands_work_beside_a_running_server() {
    let app = spawn_app().await;
    let root = app.data_dir.parent().unwrap().to_path_buf();
    let create = ["app", "create", "--name", "Beside", "--client-type", "confidential"];
    let create = [&create[..], &["--grant-type", "client-credentials", "--json"]].concat();
    if on_postgres() {
        // Cluster mode has no folder lock: the CLI opens the database beside the running
        // server, which sees what it made.
        let created: Value = serde_json::from_str(&ok(tessera_beside(&root, &create, None).await)).unwrap();
        let client = TestClient {
            id: created["client_id"].as_str().unwrap().into(),
            secret: created["client_secret"].as_str().map(str::to_string),
        };
        assert_eq!(app.client_credentials_as(&client, "read").await.status(), 200);
        return;
    }
    // The server holds the folder; the command is handed to it and works at once.
    let created: Value = serde_json::from_str(&ok(tessera_beside(&root, &create, None).await)).unwrap();
    let client = TestClient {
        id: created["client_id"].as_str().unwrap().into(),
        secret: created["client_secret"].as_str().map(str::to_string),
    };
    assert_eq!(app.client_credentials_as(&client, "read").await.status(), 200);
    let shown = ok(tessera_beside(&root, &["app", "show", &client.id], None).await);
    assert!(
        shown.starts_with(&format!("client_id:     {}\nname:          Beside\n", client.id)),
        "{shown}"
    );

    // What is read from standard input travels with the command.
    let created = ok(tessera_beside(
        &root,
        &["user", "create", "--username", "carol", "--password-stdin"],
        Some("a long password\n"),
    )
    .await);
    assert!(created.starts_with("created user carol ("), "{created}");
    assert_eq!(app.log_in("/o/login/", "carol", "a long password").await.status(), 303);

    // Failures read as they would on a stopped server: on stderr, with a failing exit.
    let missing = tessera_beside(&root, &["app", "delete", "no-such-client"], None).await;
    assert!(!missing.status.success());
    assert_eq!(
        String::from_utf8_lossy(&missing.stderr).trim(),
        "error: no client no-such-client"
    );
    let no_stdin = tessera_beside(&root, &["user", "set-password", "carol"], None).await;
    assert!(String::from_utf8_lossy(&no_stdin.stderr).contains("pass --password-stdin"));

    // The audit trail names the OS account that typed the commands, not the server.
    let trail = ok(tessera_beside(&root, &["audit", "list", "--json", "--action", "client.create"], None).await);
    let entry: Value = serde_json::from_str(trail.lines().next().expect("an entry")).unwrap();
    assert_eq!(entry["actor"]["kind"], "cli", "{entry}");
    assert_eq!(entry["actor"]["id"], os_account(), "{entry}");
    assert_eq!(entry["target_id"], client.id.as_str(), "{entry}");

    // Commands in parallel each run once.
    let runs = (0..10).map(|_| tessera_beside(&root, &create, None));
    let ids: std::collections::BTreeSet<String> = join_all(runs)
        .await
        .into_iter()
        .map(|output| {
            serde_json::from_str::<Value>(&ok(output)).unwrap()["client_id"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
    assert_eq!(ids.len(), 10);
    let listed = ok(tessera_beside(&root, &["app", "list"], None).await);
    assert_eq!(
        listed.lines().filter(|l| l.ends_with(" Beside")).count(),
        11,
        "{listed}"
    );
}

/// `tessera purge` (issue 29) removes what expired now: handed to the running server on sled,
/// run on the database itself in cluster mode. It says what it removed, and the audit trail
/// names who asked.
#[tokio::test]
async fn purge_removes_what_expired_while_the_server_runs() {
    let dirs = tempfile::tempdir().unwrap();
    let config = tessera::Config {
        access_token_ttl: std::time::Duration::from_secs(1),
        refresh_token_ttl: std::time::Duration::from_secs(1),
        purge_interval: std::time::Duration::from_secs(3600),
        ..test_config(&dirs)
    };
    let app = spawn_app_with(config, dirs).await;
    let root = app.data_dir.parent().unwrap().to_path_buf();
    let tokens = app.get_tokens().await;
    let refresh = tokens["refresh_token"].as_str().unwrap().to_string();
    tokio::time::sleep(std::time::Duration::from_millis(3100)).await;
    // In cluster mode the command line purges with its own configuration: the nodes' one,
    // which it must be given.
    let config = root.join("purge.toml");
    std::fs::write(&config, "access_token_ttl = 1\n").unwrap();
    if on_postgres() {
        let refused = tessera_beside(&root, &["purge"], None).await;
        assert!(!refused.status.success());
        let stderr = String::from_utf8_lossy(&refused.stderr);
        assert!(stderr.contains("name the nodes' configuration file"), "{stderr}");
    }
    let printed = ok(tessera_beside(&root, &["--config", config.to_str().unwrap(), "purge"], None).await);
    assert!(printed.starts_with("purged "), "{printed}");
    assert!(
        printed.contains(" 1 refresh families, ") && printed.contains(" 1 grants, "),
        "{printed}"
    );
    let refused = app.refresh(&refresh).await;
    assert_eq!(refused.json::<Value>().await.unwrap()["error"], "invalid_grant");
    let filter = tessera::store::AuditFilter {
        action: Some("data.purge".into()),
        ..Default::default()
    };
    let trail = app.store.audit_page(&filter, None, 10).await.unwrap();
    assert_eq!(trail.len(), 1, "{trail:?}");
    assert_eq!((trail[0].actor.kind.as_str(), trail[0].outcome.as_str()), ("cli", "ok"));
}

/// A socket another account planted where the CLI looks (a relative `data` folder in a shared
/// folder such as /tmp): the CLI hands it nothing, a password least of all.
#[tokio::test]
async fn the_cli_hands_nothing_to_a_socket_another_account_planted() {
    use std::os::unix::fs::PermissionsExt;
    if os_account() != "root" {
        return; // planting it takes a second account, which root can act as
    }
    let shared = tempfile::tempdir().unwrap();
    std::fs::set_permissions(shared.path(), std::fs::Permissions::from_mode(0o1777)).unwrap();
    let plant = r#"
import os, socket
os.mkdir('data')
listener = socket.socket(socket.AF_UNIX)
listener.bind('data/control.sock')
listener.listen(1)
open('ready', 'w').close()
listener.settimeout(30)
got = b''
try:
    conn, _ = listener.accept()
    conn.settimeout(5)
    while True:
        chunk = conn.recv(65536)
        if not chunk:
            break
        got += chunk
except OSError:
    pass
open('got', 'wb').write(got)
"#;
    // The system's interpreter: one installed for root alone (pyenv under a 0700 /root, first
    // on the PATH) is not one `nobody` may run.
    let python = ["/usr/bin/python3", "/usr/local/bin/python3"]
        .into_iter()
        .find(|path| std::path::Path::new(path).exists())
        .unwrap_or("python3");
    let mut planted = Command::new("setpriv")
        .args([
            "--reuid=nobody",
            "--regid=nogroup",
            "--clear-groups",
            python,
            "-c",
            plant,
        ])
        .current_dir(shared.path())
        .spawn()
        .unwrap();
    for _ in 0..200 {
        if shared.path().join("ready").exists() {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(25));
    }
    let output = tessera(
        shared.path(),
        &["user", "set-password", "alice", "--password-stdin"],
        Some("the operator's new password\n"),
    );
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("refusing to hand it the command"), "{stderr}");
    planted.wait().unwrap();
    let got = std::fs::read(shared.path().join("got")).unwrap();
    assert!(
        got.is_empty(),
        "the planted socket received {}",
        String::from_utf8_lossy(&got)
    );
}

/// What the control socket does with requests `tessera` would never send.
#[tokio::test]
async fn the_control_socket_refuses_what_is_not_a_data_command_and_stays_up() {
    use std::os::unix::fs::PermissionsExt;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    if on_postgres() {
        return; // cluster mode listens on no socket
    }
    let app = spawn_app().await;
    let socket = app.data_dir.join(tessera::control::SOCKET_FILE);
    let mode = std::fs::metadata(&socket).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600, "only the server's own account may connect");
    let ask = |body: Vec<u8>| {
        let socket = socket.clone();
        async move {
            let mut stream = tokio::net::UnixStream::connect(&socket).await.unwrap();
            // A request larger than the bound is cut off: the writer may see the socket
            // close, and the reader have it reset under the answer.
            let _ = stream.write_all(&body).await;
            let _ = stream.shutdown().await;
            let mut answer = Vec::new();
            match stream.read_to_end(&mut answer).await {
                Ok(_) => serde_json::from_slice::<Value>(&answer).unwrap(),
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => Value::Null,
                Err(e) => panic!("{e}"),
            }
        }
    };
    let request = |args: &[&str]| {
        serde_json::to_vec(&serde_json::json!({"args": args, "inputs": {}, "claimed": "mallory"})).unwrap()
    };
    for (body, says) in [
        (b"not json".to_vec(), "not one this server reads"),
        (vec![b' '; 2 << 20], "at most"),
        (
            request(&["tessera", "serve", "--addr", "127.0.0.1:0"]),
            "only the app, user, audit, backup and purge commands",
        ),
        (
            request(&["tessera", "keys", "rotate"]),
            "only the app, user, audit, backup and purge commands",
        ),
        (request(&["tessera", "app", "nonsense"]), "unrecognized subcommand"),
        (
            request(&["tessera", "user", "create", "--username", "x", "--password-stdin"]),
            "no password was read",
        ),
    ] {
        let answer = ask(body).await;
        if answer.is_null() && says == "at most" {
            continue; // cut off before its answer could be read
        }
        assert!(
            answer["error"].as_str().is_some_and(|e| e.contains(says)),
            "{says}: {answer}"
        );
        assert_eq!(answer["out"], "");
    }
    // The actor is the account the kernel names; what the request claims is shown beside it.
    let create = serde_json::json!({
        "args": ["tessera", "user", "create", "--username", "dave", "--password-stdin"],
        "inputs": {"password": "a long password"},
        "claimed": "mallory",
    });
    let answer = ask(serde_json::to_vec(&create).unwrap()).await;
    assert!(answer["error"].is_null(), "{answer}");
    assert!(
        answer["out"].as_str().unwrap().starts_with("created user dave ("),
        "{answer}"
    );
    let trail = ask(request(&["tessera", "audit", "list", "--json", "--limit", "1"])).await;
    let entry: Value = serde_json::from_str(trail["out"].as_str().unwrap().trim()).unwrap();
    let account = os_account();
    assert_eq!(entry["action"], "user.create");
    assert_eq!(entry["actor"]["id"], account);
    assert_eq!(entry["actor"]["name"], format!("{account} (says mallory)"));
    assert_eq!(
        app.client_credentials("read").await.status(),
        200,
        "the server is unharmed"
    );
}

#[test]
fn openapi_prints_the_committed_document() {
    let dir = tempfile::tempdir().unwrap();
    let printed = ok(tessera(dir.path(), &["openapi"], None));
    let committed = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/openapi/openapi.json")).unwrap();
    assert_eq!(printed.trim_end(), committed.trim_end());
}

#[test]
fn serve_runs_on_defaults_and_stops_cleanly_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    // The first log line names the bound address.
    let server = ServerProcess::start(dir.path(), &[], &[("RUST_LOG", "info")]);
    let health = std::process::Command::new("python3")
        .args([
            "-c",
            &format!(
                "import urllib.request;print(urllib.request.urlopen('{}/healthz').read().decode())",
                server.base
            ),
        ])
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&health.stdout).contains("ok"));
    // The embedded defaults: ./data and ./keys under the working directory.
    assert!(dir.path().join("data").is_dir() && dir.path().join("keys/keyring.json").is_file());
    // Graceful shutdown exits 0 (terminate checks it) and says so.
    assert!(server.terminate().contains("stopped"));
}

#[test]
fn app_create_registers_a_device_code_app_without_a_redirect_uri() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let created: Value = serde_json::from_str(&ok(tessera(
        d,
        &[
            "app",
            "create",
            "--name",
            "TV",
            "--client-type",
            "public",
            "--grant-type",
            "device-code",
            "--scope",
            "read",
            "--json",
        ],
        None,
    )))
    .unwrap();
    assert_eq!(created["grant_types"], serde_json::json!(["device-code"]));
    let id = created["client_id"].as_str().unwrap().to_string();
    assert!(ok(tessera(d, &["app", "show", &id], None)).contains("urn:ietf:params:oauth:grant-type:device_code"));
    // The server started on that folder hands the app a device code.
    let server = ServerProcess::start(d, &[], &[]);
    let script = format!(
        "import urllib.request,urllib.parse;print(urllib.request.urlopen('{}/o/device_authorization/', \
         urllib.parse.urlencode({{'client_id': '{id}', 'scope': 'read'}}).encode()).read().decode())",
        server.base
    );
    let output = std::process::Command::new("python3")
        .args(["-c", &script])
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let body: Value = serde_json::from_slice(&output.stdout).unwrap();
    assert!(body["user_code"].as_str().is_some_and(|c| c.len() == 9), "{body}");
    server.terminate();
}
