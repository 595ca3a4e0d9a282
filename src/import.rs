//! `tessera db import`: moves a single node into a cluster. Every record of a stopped node's
//! data folder (clients, users, grants, consents, live codes, refresh tokens, revocations,
//! sessions, server secrets, the audit trail, users' sign-in factors) and its keyring go into an empty database, so users stay logged
//! in, refresh tokens keep working and tokens already issued still verify. If anything fails
//! half-way, the database is emptied again: an import happens whole or not at all.

use std::path::Path;

use anyhow::bail;

use crate::backend::sled::store::Export;
use crate::config::Config;
use crate::keys::database::KeyEncryptionKey;
use crate::keys::{FolderVault, Keyring};
use crate::store::{SledStore, Store};

/// Imports `data_dir` and `keys_dir` into the database `config` names; returns a summary.
pub async fn import(config: &Config, data_dir: &Path, keys_dir: &Path) -> anyhow::Result<String> {
    if !data_dir.join("db").exists() && !data_dir.join("conf").exists() {
        bail!("{} is not a Tessera data folder", data_dir.display());
    }
    // Opening takes the folder's lock: a running node refuses it.
    let export = SledStore::open(data_dir)?.export()?;
    let database = crate::open_database(config).await?;
    if !database.is_empty().await? {
        bail!("the database already holds data: import only into an empty one");
    }
    let vault = crate::open_key_vault(config).await?;
    let kek = crate::key_encryption_key(config)?;
    let copied = async {
        write(&database, &export, &kek).await?;
        Ok::<_, anyhow::Error>(Keyring::copy(&FolderVault::new(keys_dir), vault.as_ref()).await?)
    }
    .await;
    match copied {
        Ok(keys) => Ok(format!(
            "imported {} clients, {} users, {} grants, {} consents, {} refresh tokens, {} sessions, \
             {} codes, {} access-token revocations, {} audit entries, {} sign-in factors and {} keys",
            export.clients.len(),
            export.users.len(),
            export.grants.len(),
            export.consents.len(),
            export.refresh_tokens.len(),
            export.sessions.len(),
            export.codes.len(),
            export.revoked_access.len(),
            export.audit.len(),
            export.factors.len(),
            keys
        )),
        Err(e) => {
            database.clear().await?;
            Err(anyhow::anyhow!("the import failed and was undone: {e}"))
        }
    }
}

async fn write(store: &dyn Store, export: &Export, kek: &KeyEncryptionKey) -> anyhow::Result<()> {
    for client in &export.clients {
        store.insert_client(client).await?;
    }
    for user in &export.users {
        store.insert_user(user).await?;
    }
    // TOTP secrets stay sealed under the server secret that sealed them, which moves below.
    for factor in &export.factors {
        store.insert_factor(factor).await?;
    }
    for grant in &export.grants {
        store.insert_grant(grant).await?;
    }
    for consent in &export.consents {
        store.put_consent(consent).await?;
    }
    for (hash, code) in &export.codes {
        store.put_code(hash, code).await?;
    }
    for (hash, token) in &export.refresh_tokens {
        store.put_refresh(hash, token).await?;
    }
    for (jti, expires_at) in &export.revoked_access {
        store.revoke_access_token(jti, *expires_at).await?;
    }
    for (hash, session) in &export.sessions {
        store.put_session(hash, session).await?;
    }
    for entry in &export.audit {
        store.append_audit(entry).await?;
    }
    // Sealed under the cluster's KEK, as the nodes keep them (see `oauth::secrets`).
    for (name, secret) in &export.secrets {
        let sealed = kek.seal_secret(name, secret)?;
        let stored = store.server_secret(name, &sealed).await?;
        if stored != sealed {
            bail!("the database already had the server secret {name}");
        }
    }
    Ok(())
}
