//! `tessera backup` and `tessera restore`: a copy of an embedded deployment (its data folder
//! and its keyring) taken while the server serves, and brought back on an empty folder.
//!
//! A backup folder (mode 0700) holds `data/`, a sled database copied with writes paused for
//! the moment of the copy ([`crate::store::SledStore::back_up`]), `keys/`, the keyring as the
//! keys folder keeps it (PEM files, 0600), and `backup.json`, what it holds. The private keys
//! are in it as they are in the keys folder, unencrypted and protected by file modes: keep a
//! backup where the keys folder may be (SECURITY.md). Memory-only state is not in it (replay
//! memories, failure counters), as it is lost by a restart.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use serde::{Deserialize, Serialize};

use crate::config::Config;
use crate::files::create_private_dir;
use crate::keys::{FolderVault, KeyVault, Keyring};
use crate::store::Store;

/// The description of a backup, in its folder.
const MANIFEST: &str = "backup.json";
/// The layout this version writes and reads.
const FORMAT: u32 = 1;

#[derive(Serialize, Deserialize)]
struct Manifest {
    format: u32,
    /// The Tessera version that took it.
    version: String,
    /// When the copy was taken (seconds since the epoch).
    taken_at: i64,
    records: u64,
    keys: usize,
}

/// Backs `store` and the keyring in `vault` up into `to`, which must not exist or be empty.
/// On failure nothing is left in `to`.
pub async fn back_up(store: &dyn Store, vault: &dyn KeyVault, to: &Path) -> anyhow::Result<String> {
    ensure_own_folder(to)?;
    ensure_empty(to)?;
    create_private_dir(to).with_context(|| format!("cannot create {}", to.display()))?;
    // The claim: of two backups started into one folder, one creates `data` and the other
    // stops here, leaving the first one's files alone.
    std::fs::create_dir(to.join("data")).with_context(|| format!("another backup is writing into {}", to.display()))?;
    let copied = async {
        let records = store.back_up(&to.join("data")).await?;
        let keys = Keyring::copy(vault, &FolderVault::new(&to.join("keys"))).await?;
        let manifest = Manifest {
            format: FORMAT,
            version: env!("CARGO_PKG_VERSION").to_string(),
            taken_at: crate::clock::now(),
            records,
            keys,
        };
        crate::files::write_private(&to.join(MANIFEST), &serde_json::to_vec_pretty(&manifest)?)?;
        Ok::<_, anyhow::Error>(manifest)
    }
    .await;
    match copied {
        Ok(manifest) => Ok(format!(
            "backed up {} records and {} keys to {}",
            manifest.records,
            manifest.keys,
            to.display()
        )),
        Err(e) => {
            empty(to);
            Err(e.context("the backup failed and was removed"))
        }
    }
}

/// Brings the backup in `from` back as the data and keys folders `config` names, which must
/// not exist or be empty. Both are written beside their place and moved there at the end, so a
/// failed restore leaves them as they were.
pub async fn restore(config: &Config, from: &Path) -> anyhow::Result<String> {
    if config.database_url.is_some() {
        bail!("a cluster restores its database with PostgreSQL's own tools (docs/cluster.md)");
    }
    let manifest: Manifest = std::fs::read(from.join(MANIFEST))
        .ok()
        .and_then(|bytes| serde_json::from_slice(&bytes).ok())
        .with_context(|| format!("{} is not a Tessera backup (no readable {MANIFEST})", from.display()))?;
    if manifest.format != FORMAT {
        bail!(
            "{} is a backup of format {}; this Tessera reads format {FORMAT}",
            from.display(),
            manifest.format
        );
    }
    if !from.join("data/conf").is_file() || !from.join("data/db").is_file() {
        bail!(
            "{} holds no database (data/conf and data/db): the backup is incomplete",
            from.display()
        );
    }
    let (data_dir, keys_dir) = (&config.data_dir, &config.keys_dir);
    ensure_empty(data_dir)?;
    ensure_empty(keys_dir)?;
    let staged_data = beside(data_dir, "restoring");
    let staged_keys = beside(keys_dir, "restoring");
    for staged in [&staged_data, &staged_keys] {
        if staged.exists() {
            bail!(
                "{} exists (left by a restore that stopped?): remove it first",
                staged.display()
            );
        }
    }
    let staged = async {
        // Opening the backup takes its lock: two restores from one backup take turns.
        let backup = ::sled::Config::new().path(from.join("data")).open()?;
        let records = crate::store::copy_database(&backup, &staged_data)?;
        if records != manifest.records {
            bail!(
                "the backup holds {records} records where its manifest says {}",
                manifest.records
            );
        }
        let keys = Keyring::copy(&FolderVault::new(&from.join("keys")), &FolderVault::new(&staged_keys)).await?;
        Ok::<_, anyhow::Error>((records, keys))
    }
    .await;
    let (records, keys) = match staged {
        Ok(counts) => counts,
        Err(e) => {
            let _ = std::fs::remove_dir_all(&staged_data);
            let _ = std::fs::remove_dir_all(&staged_keys);
            return Err(e.context("the restore failed; the data and keys folders are unchanged"));
        }
    };
    move_into_place(&staged_keys, keys_dir)?;
    if let Err(e) = move_into_place(&staged_data, data_dir) {
        let _ = std::fs::remove_dir_all(keys_dir);
        let _ = std::fs::remove_dir_all(&staged_data);
        return Err(e.context("the restore failed; the data and keys folders are unchanged"));
    }
    Ok(format!(
        "restored {records} records and {keys} keys (backed up by Tessera {} at {}) into {} and {}",
        manifest.version,
        crate::clock::rfc3339(manifest.taken_at),
        data_dir.display(),
        keys_dir.display()
    ))
}

/// Refuses a `to` that is a symbolic link or another account's folder: whoever owns the folder
/// a backup is written into could swap its keys before a restore.
fn ensure_own_folder(to: &Path) -> anyhow::Result<()> {
    use std::os::unix::fs::MetadataExt;
    match std::fs::symlink_metadata(to) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e).with_context(|| format!("cannot read {}", to.display())),
        Ok(meta) if meta.file_type().is_symlink() => {
            bail!("{} is a symbolic link: name the folder itself", to.display())
        }
        Ok(meta) if Some(meta.uid()) != crate::oauth::audit::own_uid() => {
            bail!(
                "{} belongs to another account: choose a folder of this one",
                to.display()
            )
        }
        Ok(_) => Ok(()),
    }
}

/// Refuses a folder that holds anything.
fn ensure_empty(dir: &Path) -> anyhow::Result<()> {
    match std::fs::read_dir(dir).map(|mut entries| entries.next().is_none()) {
        Ok(true) => Ok(()),
        Ok(false) => bail!("{} is not empty: choose a new or empty folder", dir.display()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e).with_context(|| format!("cannot read {}", dir.display())),
    }
}

/// Removes what is in `dir`, keeping the folder.
fn empty(dir: &Path) {
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let path = entry.path();
        let _ = match entry.file_type().is_ok_and(|t| t.is_dir()) {
            true => std::fs::remove_dir_all(&path),
            false => std::fs::remove_file(&path),
        };
    }
}

/// `dir` with `.suffix` added to its name.
fn beside(dir: &Path, suffix: &str) -> PathBuf {
    let mut name = dir.file_name().unwrap_or_default().to_os_string();
    name.push(format!(".{suffix}"));
    dir.with_file_name(name)
}

/// Moves the staged folder `staged` to `place`, which is absent or an empty folder.
fn move_into_place(staged: &Path, place: &Path) -> anyhow::Result<()> {
    if place.exists() {
        std::fs::remove_dir(place).with_context(|| format!("cannot replace {}", place.display()))?;
    }
    std::fs::rename(staged, place).with_context(|| format!("cannot move the restored folder to {}", place.display()))
}
