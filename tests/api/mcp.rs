//! The official MCP TypeScript SDK (tests/interop/mcp_login.mjs) logs in against Tessera and
//! calls a tool on an MCP server that verifies the access token offline, with the RFC 8707
//! audience: once registering itself (RFC 7591), once as a Client ID Metadata Document.

use std::process::Stdio;
use std::time::Duration;

use serde_json::Value;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, ChildStdout, Command};

use crate::helpers::*;

const INTEROP: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/interop");

/// The script, listening: its MCP server's URL and its client's callback, waiting for the issuer.
struct McpLogin {
    child: Child,
    stdout: BufReader<ChildStdout>,
    mcp_url: String,
    client_id_url: Option<String>,
}

impl McpLogin {
    /// Starts `node mcp_login.mjs MODE USERNAME PASSWORD ARGS...` and reads its first line.
    async fn start(mode: &str, args: &[&str]) -> McpLogin {
        assert!(
            std::path::Path::new(INTEROP)
                .join("node_modules/@modelcontextprotocol/sdk")
                .is_dir(),
            "the MCP SDK is not installed: run `npm ci --prefix tests/interop` (tests/run.sh does)"
        );
        let mut child = Command::new("node")
            .args(["mcp_login.mjs", mode, USERNAME, PASSWORD])
            .args(args)
            .current_dir(INTEROP)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("node runs");
        let mut stdout = BufReader::new(child.stdout.take().unwrap());
        let mut line = String::new();
        let read = tokio::time::timeout(Duration::from_secs(30), stdout.read_line(&mut line)).await;
        assert!(
            matches!(read, Ok(Ok(n)) if n > 0),
            "mcp_login.mjs did not start: {}",
            stderr_of(&mut child).await
        );
        let hello: Value = serde_json::from_str(&line).expect("the script's first line is JSON");
        McpLogin {
            child,
            stdout,
            mcp_url: hello["mcp_url"].as_str().unwrap().to_string(),
            client_id_url: hello["client_id_url"].as_str().map(String::from),
        }
    }

    /// Hands the script Tessera's issuer (and a token Tessera issued for another audience, which
    /// the MCP server must refuse) and returns its report once the login and tool call are
    /// done; fails the test with the script's stderr if it fails.
    async fn run_against(mut self, app: &TestApp) -> Value {
        let other: Value = app.client_credentials("read").await.json().await.unwrap();
        let other = other["access_token"].as_str().unwrap();
        assert_ne!(jwt_parts(other).1["aud"], self.mcp_url.as_str());
        let mut stdin = self.child.stdin.take().unwrap();
        stdin
            .write_all(format!("{}\n{other}\n", app.issuer).as_bytes())
            .await
            .unwrap();
        drop(stdin);
        let mut rest = String::new();
        let finished = tokio::time::timeout(Duration::from_secs(90), async {
            self.stdout.read_to_string(&mut rest).await.unwrap();
            self.child.wait().await.unwrap()
        })
        .await;
        let stderr = stderr_of(&mut self.child).await;
        let status = finished.unwrap_or_else(|_| panic!("mcp_login.mjs did not finish: {stderr}"));
        assert!(status.success(), "mcp_login.mjs failed ({status}): {stderr}\n{rest}");
        serde_json::from_str(rest.lines().last().unwrap_or_default())
            .unwrap_or_else(|e| panic!("a JSON report ({e}): {rest}"))
    }
}

async fn stderr_of(child: &mut Child) -> String {
    let mut stderr = String::new();
    if let Some(mut pipe) = child.stderr.take() {
        let _ = tokio::time::timeout(Duration::from_secs(5), pipe.read_to_string(&mut stderr)).await;
    }
    stderr
}

/// Starts Tessera with `toml` as its config file (plus the test's folders), the way an operator
/// would configure it.
async fn spawn_app_configured(toml: &str) -> TestApp {
    let dirs = tempfile::tempdir().expect("temp dir");
    let path = dirs.path().join("tessera.toml");
    std::fs::write(&path, toml).unwrap();
    let overrides = tessera::config::Overrides {
        config_file: Some(path),
        ..Default::default()
    };
    let mut config = tessera::Config::load(&overrides).unwrap_or_else(|e| panic!("the config loads: {e}"));
    let defaults = test_config(&dirs);
    config.addr = defaults.addr;
    config.data_dir = defaults.data_dir;
    config.keys_dir = defaults.keys_dir;
    spawn_app_with(config, dirs).await
}

/// What every mode checks: the SDK connected and called the tool, and the MCP server saw a
/// token for this user, for itself (RFC 8707), that it verified offline.
async fn assert_logged_in_and_called_the_tool(app: &TestApp, report: &Value, mcp_url: &str) {
    let user = app.store.get_user_by_name(USERNAME).await.unwrap().unwrap();
    // Before login the MCP server refused and pointed at its RFC 9728 metadata.
    assert_eq!(report["unauthenticated"]["status"], 401, "{report}");
    let challenge = report["unauthenticated"]["www_authenticate"].as_str().unwrap();
    assert!(
        challenge.starts_with("Bearer ") && challenge.contains("resource_metadata=\"http://127.0.0.1:"),
        "{challenge}"
    );
    let metadata = &report["protected_resource_metadata"];
    assert_eq!(metadata["resource"], mcp_url);
    assert_eq!(metadata["authorization_servers"][0], app.issuer.as_str());
    // A genuine Tessera token for another audience is refused (RFC 8707, RFC 6750 §3.1).
    assert_eq!(report["other_audience"]["status"], 401, "{report}");
    assert!(report["other_audience"]["www_authenticate"]
        .as_str()
        .unwrap()
        .contains("error=\"invalid_token\""));
    // The SDK asked Tessera for a token for this MCP server (RFC 8707 §2.1) with PKCE.
    let request = &report["authorization_request"];
    assert_eq!(request["resource"], mcp_url, "{report}");
    assert_eq!(request["code_challenge_method"], "S256");
    assert_eq!(request["scope"], "read");
    // RFC 9207: the callback says which server answered.
    assert_eq!(report["callback_iss"], app.issuer.as_str());
    // The tool's answer comes from the token the MCP server verified with jose.
    assert_eq!(report["tools"], serde_json::json!(["whoami"]));
    let whoami = &report["whoami"];
    assert_eq!(whoami["sub"], user.user_id.as_str(), "{report}");
    assert_eq!(whoami["aud"], mcp_url);
    assert_eq!(whoami["scope"], "read");
    assert_eq!(whoami["client_id"], report["client_id"]);
    let claims = &report["token_claims"];
    assert_eq!(claims["iss"], app.issuer.as_str());
    assert_eq!(claims["aud"], mcp_url);
    assert_eq!(report["has_refresh_token"], true);
    // A refresh through the SDK (RFC 6749 §6) keeps the user and the audience, and rotates.
    let refreshed = &report["after_refresh"];
    assert_eq!(refreshed["whoami"]["sub"], user.user_id.as_str(), "{report}");
    assert_eq!(refreshed["whoami"]["aud"], mcp_url);
    assert_eq!(refreshed["refresh_token_rotated"], true);
    assert_ne!(refreshed["token_claims"]["jti"], claims["jti"]);
    // Tessera agrees: the token is live, for this user and client.
    let introspected = app.introspect(report["access_token"].as_str().unwrap()).await;
    assert_eq!(introspected["active"], true, "{introspected}");
    assert_eq!(introspected["sub"], user.user_id.as_str());
    // The user sees the app among those they authorized.
    assert_eq!(report["authorized_tokens"]["status"], 200);
    assert!(
        report["authorized_tokens"]["client_ids"]
            .as_array()
            .unwrap()
            .contains(&report["client_id"]),
        "{report}"
    );
    assert!(report["authorized_tokens"]["text"]
        .as_str()
        .unwrap()
        .contains("MCP interop client"));
}

#[tokio::test]
async fn mcp_sdk_registers_itself_logs_in_and_calls_a_tool_with_an_audience_bound_token() {
    let script = McpLogin::start("dcr", &[]).await;
    let mcp_url = script.mcp_url.clone();
    // An MCP server's URL is the resource its clients ask tokens for (MCP 2025-06-18
    // authorization, RFC 8707); self-registered clients may ask for it.
    let app = spawn_app_configured(&format!(
        "registration = \"open\"\nregistration_scopes = [\"read\"]\nregistration_resources = [\"{mcp_url}\"]\n"
    ))
    .await;
    let report = script.run_against(&app).await;

    assert_logged_in_and_called_the_tool(&app, &report, &mcp_url).await;
    // The SDK registered a public client (RFC 7591) with its loopback callback.
    let registered = &report["registered"];
    assert_eq!(registered["token_endpoint_auth_method"], "none", "{report}");
    assert_eq!(registered["redirect_uris"][0], report["redirect_uri"]);
    let client_id = report["client_id"].as_str().unwrap();
    let client = app
        .store
        .get_client(client_id)
        .await
        .unwrap()
        .expect("the client is stored");
    assert_eq!(client.name, "MCP interop client");
    assert_eq!(client.resources, vec![mcp_url.clone()]);
}

#[tokio::test]
async fn mcp_sdk_logs_in_with_a_client_id_metadata_document() {
    // A throwaway authority and a certificate for 127.0.0.1: the script serves the document
    // over https, and Tessera trusts the authority through outbound_ca_file.
    let tls = tempfile::tempdir().expect("temp dir");
    crate::postgres::make_certificates(tls.path());
    let (cert, key, ca) = (
        tls.path().join("server.crt"),
        tls.path().join("server.key"),
        tls.path().join("ca.crt"),
    );
    let script = McpLogin::start("cimd", &[cert.to_str().unwrap(), key.to_str().unwrap()]).await;
    let mcp_url = script.mcp_url.clone();
    let client_id_url = script.client_id_url.clone().expect("the document's URL");
    // Documents are held to the registration policy: its scopes and resources apply.
    let app = spawn_app_configured(&format!(
        "client_id_metadata_documents = \"open\"\n\
         outbound_allow_private_addresses = true\n\
         outbound_ca_file = \"{}\"\n\
         registration_scopes = [\"read\"]\n\
         registration_resources = [\"{mcp_url}\"]\n",
        ca.display()
    ))
    .await;
    let report = script.run_against(&app).await;

    assert_logged_in_and_called_the_tool(&app, &report, &mcp_url).await;
    // The SDK used the document's URL as its client_id (no registration), and Tessera fetched
    // the document from the script's https server.
    assert_eq!(report["client_id"], client_id_url.as_str(), "{report}");
    assert_eq!(report["whoami"]["client_id"], client_id_url.as_str());
    assert!(
        report["document_fetches"]
            .as_array()
            .unwrap()
            .iter()
            .any(|p| p == "/mcp-client/client.json"),
        "{report}"
    );
    // The consent page names the site that published the document, and the whole client_id,
    // so the user can tell who asks; the user's list of apps names the site too.
    let consent = report["consent_page"].as_str().unwrap();
    assert!(consent.contains("Published by 127.0.0.1"), "{consent}");
    assert!(consent.contains(&client_id_url), "{consent}");
    let authorized = report["authorized_tokens"]["text"].as_str().unwrap();
    assert!(authorized.contains("MCP interop client from 127.0.0.1"), "{authorized}");
}
