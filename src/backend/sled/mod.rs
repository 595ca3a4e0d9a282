//! The embedded default: the store in a sled database in the data folder (one process at a
//! time holds it), the keyring as PEM files and a manifest in the keys folder (0600, in a
//! 0700 folder). Nothing is sealed at rest: both folders are the operator's own.

mod client_memo;
pub mod store;
pub mod vault;

use std::sync::Arc;

use self::store::SledStore;
use self::vault::FolderVault;
use super::Backend;
use crate::config::Config;

pub fn open(config: &Config) -> anyhow::Result<Backend> {
    Ok(Backend {
        store: Arc::new(open_store(config)?),
        vault: Arc::new(open_key_vault(config)),
        sealing: None,
    })
}

pub fn open_store(config: &Config) -> anyhow::Result<SledStore> {
    Ok(SledStore::open(&config.data_dir)?)
}

pub fn open_key_vault(config: &Config) -> FolderVault {
    FolderVault::new(&config.keys_dir)
}
