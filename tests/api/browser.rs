//! The pages in a real browser: tests/browser/flow.test.mjs drives Debian's chromium with
//! playwright-core against a server started here, and saves screenshots under
//! test-output/browser/.

use std::path::Path;

use crate::helpers::*;

#[tokio::test]
async fn a_person_logs_in_consents_and_withdraws_the_app_in_a_real_browser() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/browser");
    assert!(
        dir.join("node_modules/playwright-core").is_dir(),
        "playwright-core is not installed: run `npm ci --prefix tests/browser` (tests/run.sh does)"
    );
    let dirs = tempfile::tempdir().unwrap();
    let mut config = tessera::Config {
        playground: true,
        ..test_config(&dirs)
    };
    // The playground calls an API on this machine, as in development.
    config.outbound.allow_private_addresses = true;
    let app = spawn_app_with(config, dirs).await;
    let screenshots = Path::new(env!("CARGO_MANIFEST_DIR")).join("test-output/browser");
    let output = tokio::process::Command::new("node")
        .args(["--test", "flow.test.mjs"])
        .current_dir(&dir)
        .env("TESSERA_URL", &app.base)
        .env("USERNAME", USERNAME)
        .env("PASSWORD", PASSWORD)
        .env("SCREENSHOTS", &screenshots)
        .output()
        .await
        .expect("node runs");
    let report = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(output.status.success(), "the browser test failed:\n{report}");
    assert!(report.contains("# pass 1"), "{report}");
    assert!(screenshots.join("05-consent.png").is_file(), "screenshots are saved");
}
