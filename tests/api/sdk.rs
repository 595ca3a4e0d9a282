//! SDKs generated from openapi/openapi.json by generators people use, without hand edits, and
//! a short program on each run against the live server: admin token, create a client, use it
//! for client_credentials, introspect its token, list clients, delete it.

use std::path::Path;

use serde_json::Value;
use tokio::process::Command;

use crate::helpers::*;

const ROOT: &str = env!("CARGO_MANIFEST_DIR");

fn spec_path() -> String {
    format!("{ROOT}/openapi/openapi.json")
}

/// Runs a command to success and returns its standard output.
async fn run(command: &mut Command, what: &str) -> String {
    let output = command
        .output()
        .await
        .unwrap_or_else(|e| panic!("{what} could not start: {e}"));
    let stderr = String::from_utf8_lossy(&output.stderr);
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{what} failed:\n{stdout}\n{stderr}");
    stdout.into_owned()
}

/// What both demo programs must report.
async fn check_report(app: &TestApp, report: &Value) {
    let created = report["created"].as_str().expect("a client was created");
    assert_eq!(report["active"], true, "{report}");
    assert_eq!(report["introspected_client_id"], created);
    assert_eq!(report["listed"], true);
    assert_eq!(report["deleted"], true);
    assert_eq!(report["after_delete"], "not_found");
    assert!(app.store.get_client(created).await.unwrap().is_none());
}

#[tokio::test]
async fn a_python_sdk_generated_by_openapi_python_client_runs_the_admin_flow() {
    let app = spawn_app().await;
    let admin = app.register_admin_client(None).await;
    let out = tempfile::tempdir().unwrap();
    let package = out.path().join("tessera-client");
    run(
        Command::new("openapi-python-client").args([
            "generate",
            "--path",
            &spec_path(),
            "--output-path",
            package.to_str().unwrap(),
        ]),
        "openapi-python-client (pip install -r tests/requirements.txt)",
    )
    .await;
    assert!(package.join("tessera_client/api/admin/create_client.py").is_file());
    let report = run(
        Command::new("python3")
            .arg(format!("{ROOT}/tests/sdk/python/sdk_demo.py"))
            .args([&app.base, &admin.id, admin.secret.as_deref().unwrap()])
            .env("PYTHONPATH", &package),
        "the Python SDK demo",
    )
    .await;
    check_report(&app, &serde_json::from_str(&report).unwrap()).await;
}

#[tokio::test]
async fn a_typescript_client_typed_by_openapi_typescript_runs_the_admin_flow() {
    let app = spawn_app().await;
    let admin = app.register_admin_client(None).await;
    let dir = format!("{ROOT}/tests/sdk/typescript");
    assert!(
        Path::new(&dir).join("node_modules/openapi-typescript").is_dir(),
        "run `npm ci --prefix tests/sdk/typescript` (tests/run.sh does)"
    );
    run(
        Command::new("npx")
            .args(["openapi-typescript", &spec_path(), "-o", "generated/schema.d.ts"])
            .current_dir(&dir),
        "openapi-typescript",
    )
    .await;
    // tsc checks every call of the program against the generated types.
    run(Command::new("npx").args(["tsc", "-p", "."]).current_dir(&dir), "tsc").await;
    let report = run(
        Command::new("node")
            .args(["dist/demo.js", &app.base, &admin.id, admin.secret.as_deref().unwrap()])
            .current_dir(&dir),
        "the TypeScript demo",
    )
    .await;
    let report: Value = serde_json::from_str(&report).unwrap();
    assert_eq!(report["after_delete_status"], 404);
    check_report(&app, &report).await;
}
