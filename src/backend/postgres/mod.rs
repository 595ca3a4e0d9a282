//! Cluster mode: every node shares one PostgreSQL database. The keyring's vault has a small
//! pool of its own (its reload every two seconds never waits behind requests); the schema is brought up to date on open (under an advisory lock,
//! one process at a time, `migrations/`); the keyring and server secrets are sealed under the
//! key-encryption key every node is given.

mod client_cache;
pub mod store;
pub mod vault;

use std::sync::Arc;

use self::store::{PgOptions, PgStore};
use self::vault::{DatabaseVault, KeyEncryptionKey};
use super::Backend;
use crate::config::Config;

pub async fn open(config: &Config) -> anyhow::Result<Backend> {
    let store = open_database(config).await?;
    Ok(Backend {
        store: Arc::new(store),
        vault: Arc::new(open_key_vault(config).await?),
        sealing: Some(key_encryption_key(config)?),
    })
}

/// The keyring alone, on a small pool of its own (`tessera keys`, or beside a store the
/// caller opened).
pub async fn open_key_vault(config: &Config) -> anyhow::Result<DatabaseVault> {
    let kek = key_encryption_key(config)?;
    let database = open_database(&Config {
        database: crate::config::DatabaseSettings {
            pool_size: 2,
            ..config.database.clone()
        },
        ..config.clone()
    })
    .await?;
    Ok(DatabaseVault::new(database.pool(), kek))
}

/// Cluster mode's database, connected, migrated and checked.
pub async fn open_database(config: &Config) -> anyhow::Result<PgStore> {
    let url = config
        .database_url
        .clone()
        .ok_or_else(|| anyhow::anyhow!("no database_url is set"))?;
    let options = PgOptions {
        url,
        pool_size: config.database.pool_size,
        pool_wait: config.database.pool_wait,
        ca_file: config.database.ca_file.clone(),
    };
    let store = PgStore::connect(&options).await?;
    let applied = store.migrate().await?;
    if !applied.is_empty() {
        tracing::info!(versions = ?applied, "database schema migrated");
    }
    store.check_schema().await?;
    Ok(store)
}

/// The key-encryption key of a cluster's keyring: from `key_encryption_key_file` (which only
/// its owner may read), else `TESSERA_KEY_ENCRYPTION_KEY`.
pub fn key_encryption_key(config: &Config) -> anyhow::Result<KeyEncryptionKey> {
    const HOW: &str = "make one with `tessera keys new-encryption-key` and give every node the same one";
    let text = match &config.database.key_encryption_key_file {
        Some(path) => {
            #[cfg(unix)]
            {
                use std::os::unix::fs::PermissionsExt;
                let mode = std::fs::metadata(path)
                    .map_err(|e| anyhow::anyhow!("cannot read key_encryption_key_file {}: {e}", path.display()))?
                    .permissions()
                    .mode();
                if mode & 0o077 != 0 {
                    anyhow::bail!(
                        "key_encryption_key_file {} may be read by others (mode {:o}): chmod 600 it",
                        path.display(),
                        mode & 0o777
                    );
                }
            }
            std::fs::read_to_string(path)
                .map_err(|e| anyhow::anyhow!("cannot read key_encryption_key_file {}: {e}", path.display()))?
        }
        None => std::env::var("TESSERA_KEY_ENCRYPTION_KEY").map_err(|_| {
            anyhow::anyhow!(
                "cluster mode keeps the signing keys in the database, sealed under a key-encryption key: \
                 set TESSERA_KEY_ENCRYPTION_KEY or key_encryption_key_file ({HOW})"
            )
        })?,
    };
    KeyEncryptionKey::parse(&text).map_err(|e| anyhow::anyhow!("{e} ({HOW})"))
}
