//! Backends: the ways Tessera keeps its data. A backend is one unit of everything that depends
//! on where the data lives: the [`Store`] (clients, users, grants, codes, sessions, the audit
//! trail, scratch values), the keyring's [`KeyVault`], its schema and how it is brought up to
//! date, and whether server secrets are sealed at rest. [`open`] is the one factory: it reads
//! `database_url` and opens [`sled`] (the data and keys folders, the embedded default) or
//! [`postgres`] (cluster mode: one database shared by every node).
//!
//! A third backend is a folder beside these two with a `store.rs` implementing the traits of
//! [`crate::store`] (and passing `tests/api/store_contract.rs`), a `vault.rs` implementing
//! [`KeyVault`], and a `mod.rs` whose `open` returns a [`Backend`]; then one arm in [`open`]
//! and the setting that chooses it in `config.rs`.

pub mod postgres;
pub mod sled;

use std::sync::Arc;

use crate::config::Config;
use crate::keys::KeyVault;
use crate::store::Store;

pub use self::postgres::vault::KeyEncryptionKey;

/// One backend, opened.
pub struct Backend {
    pub store: Arc<dyn Store>,
    pub vault: Arc<dyn KeyVault>,
    /// The key server secrets are sealed under in the store (cluster mode's key-encryption
    /// key); `None` when the store is the operator's own folder and keeps them as they are.
    pub sealing: Option<KeyEncryptionKey>,
}

/// Opens the backend `config` names: the folders, or the database of `database_url`.
pub async fn open(config: &Config) -> anyhow::Result<Backend> {
    match &config.database_url {
        None => sled::open(config),
        Some(_) => postgres::open(config).await,
    }
}

/// Only the store of the backend `config` names (the CLI's commands on records; the tests).
pub async fn open_store(config: &Config) -> anyhow::Result<Arc<dyn Store>> {
    match &config.database_url {
        None => Ok(Arc::new(sled::open_store(config)?)),
        Some(_) => Ok(Arc::new(postgres::open_database(config).await?)),
    }
}

/// Only the keyring's vault of the backend `config` names (`tessera keys`; a server whose
/// store the caller opened).
pub async fn open_key_vault(config: &Config) -> anyhow::Result<Arc<dyn KeyVault>> {
    match &config.database_url {
        None => Ok(Arc::new(sled::open_key_vault(config))),
        Some(_) => Ok(Arc::new(postgres::open_key_vault(config).await?)),
    }
}

/// How server secrets are kept in the store of the backend `config` names.
pub fn sealing(config: &Config) -> anyhow::Result<Option<KeyEncryptionKey>> {
    match &config.database_url {
        None => Ok(None),
        Some(_) => Ok(Some(postgres::key_encryption_key(config)?)),
    }
}
