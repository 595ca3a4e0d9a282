use std::time::Duration;

use crate::helpers::*;
use serde_json::Value;
use tessera::keys::{Algorithm, Keyring};

async fn wait_for_key_count(app: &TestApp, count: usize) -> Value {
    for _ in 0..50 {
        let jwks = app.get_jwks().await;
        if jwks["keys"].as_array().unwrap().len() == count {
            return jwks;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    panic!("the JWKS never reached {count} keys");
}

#[tokio::test]
async fn key_rotation_keeps_old_tokens_verifiable_through_the_jwks() {
    let app = spawn_app().await;
    let old: Value = app.client_credentials("read").await.json().await.unwrap();
    let old_token = old["access_token"].as_str().unwrap().to_string();
    let old_kid = jwt_parts(&old_token).0["kid"].as_str().unwrap().to_string();

    // `tessera keys rotate` while the server runs: it picks the change up by itself.
    let vault = app.key_vault().await;
    let new_key = Keyring::rotate(vault.as_ref(), Algorithm::RS256).await.unwrap();
    // The first ES256 key, the RS256 key every keyring has for ID tokens, and the new one.
    wait_for_key_count(&app, 3).await;

    let new: Value = app.client_credentials("read").await.json().await.unwrap();
    let new_token = new["access_token"].as_str().unwrap();
    let (header, _) = jwt_parts(new_token);
    assert_eq!(header["kid"], new_key.kid.as_str());
    assert_eq!(header["alg"], "RS256");
    assert!(app.verify_with_jwks(new_token).await.is_some(), "new tokens verify");
    assert!(
        app.verify_with_jwks(&old_token).await.is_some(),
        "old tokens still verify"
    );

    // Retiring the old key takes it out of the JWKS; its tokens stop verifying.
    Keyring::retire(vault.as_ref(), &old_kid).await.unwrap();
    wait_for_key_count(&app, 2).await;
    assert!(app.verify_with_jwks(&old_token).await.is_none());
    assert_eq!(app.introspect(&old_token).await["active"], false);
}

#[tokio::test]
async fn a_generated_key_is_published_before_it_signs() {
    let app = spawn_app().await;
    let vault = app.key_vault().await;
    let signing_kid = Keyring::open_or_init(vault.as_ref()).await.unwrap()[0].kid.clone();
    let added = Keyring::generate(vault.as_ref(), Algorithm::EdDSA).await.unwrap();
    let jwks = wait_for_key_count(&app, 3).await;
    assert!(jwks["keys"]
        .as_array()
        .unwrap()
        .iter()
        .any(|k| k["kid"] == added.kid.as_str() && k["kty"] == "OKP"));
    let token: Value = app.client_credentials("read").await.json().await.unwrap();
    assert_eq!(
        jwt_parts(token["access_token"].as_str().unwrap()).0["kid"],
        signing_kid.as_str(),
        "still signed by the old key"
    );
    Keyring::promote(vault.as_ref(), &added.kid).await.unwrap();
    for _ in 0..50 {
        let token: Value = app.client_credentials("read").await.json().await.unwrap();
        let (header, _) = jwt_parts(token["access_token"].as_str().unwrap());
        if header["kid"] == added.kid.as_str() {
            assert_eq!(header["alg"], "EdDSA");
            assert!(app
                .verify_with_jwks(token["access_token"].as_str().unwrap())
                .await
                .is_some());
            return;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    panic!("the promoted key never started signing");
}

#[tokio::test]
async fn after_a_restart_on_the_same_data_refresh_tokens_work_and_the_jwks_is_unchanged() {
    // A fixed issuer, as in production: the restarted server listens on another port.
    let issuer = Some(url::Url::parse("http://tessera.test").unwrap());
    let dirs = tempfile::tempdir().unwrap();
    let app = spawn_app_with(
        tessera::Config {
            issuer: issuer.clone(),
            ..test_config(&dirs)
        },
        dirs,
    )
    .await;
    let tokens = app.get_tokens().await;
    let jwks_before = app.get_jwks().await;
    let config_dirs = (app.data_dir.clone(), app.keys_dir.clone());
    let dirs = app.stop().await;

    let config = tessera::Config {
        issuer,
        data_dir: config_dirs.0,
        keys_dir: config_dirs.1,
        ..test_config(&dirs)
    };
    let app = spawn_app_with(config, dirs).await;
    assert_eq!(app.get_jwks().await, jwks_before);
    let response = app.refresh(tokens["refresh_token"].as_str().unwrap()).await;
    assert_eq!(
        response.status(),
        200,
        "the refresh token issued before the restart still works"
    );
    assert!(app
        .verify_with_jwks(tokens["access_token"].as_str().unwrap())
        .await
        .is_some());
}

#[tokio::test]
async fn key_files_and_folders_are_private() {
    use std::os::unix::fs::PermissionsExt;
    let app = spawn_app().await;
    if let Some(url) = &app.provider.config.database_url {
        // Cluster mode: no key files; the database holds the private keys only sealed.
        let rows = database_text(url).await;
        for (info, pkcs8) in app.key_vault().await.read().await.unwrap().keys {
            let encoded = base64::Engine::encode(&base64::engine::general_purpose::STANDARD, &pkcs8);
            let hex: String = pkcs8.iter().map(|b| format!("{b:02x}")).collect();
            for plain in [encoded, hex] {
                let found = rows.windows(plain.len()).any(|w| w == plain.as_bytes());
                assert!(!found, "key {} is stored in the clear", info.kid);
            }
        }
        return;
    }
    let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&app.keys_dir), 0o700);
    assert_eq!(mode(&app.data_dir), 0o700);
    for entry in std::fs::read_dir(&app.keys_dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "pem") {
            assert_eq!(mode(&path), 0o600, "{}", path.display());
        }
    }
}
