//! The keyring in a folder (the embedded default): one PKCS#8 PEM file per key (mode 0600)
//! and a manifest, `keyring.json`, recording each key's algorithm and status. Changes hold an
//! exclusive lock on `keyring.lock`, so the CLI and a running server never interleave theirs;
//! the manifest is replaced atomically (temp file and rename), so a reader never sees half of
//! one. The stamp is the manifest's modification time and size.

use std::fs;
use std::path::{Path, PathBuf};

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use crate::keys::{
    pem_decode, pem_encode, KeyChangeFn, KeyError, KeyInfo, KeyVault, KeyringDraft, Stamp, StoredKeyring,
};

const MANIFEST: &str = "keyring.json";
const LOCK: &str = "keyring.lock";

#[derive(Default, Serialize, Deserialize)]
struct Manifest {
    keys: Vec<KeyInfo>,
}

/// A keyring folder.
pub struct FolderVault {
    dir: PathBuf,
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> KeyError + '_ {
    move |source| KeyError::Io {
        path: path.to_path_buf(),
        source,
    }
}

impl FolderVault {
    /// The keyring in `dir` (created, mode 0700, when first changed).
    pub fn new(dir: &Path) -> FolderVault {
        FolderVault { dir: dir.to_path_buf() }
    }

    fn manifest(&self) -> Result<Manifest, KeyError> {
        let path = self.dir.join(MANIFEST);
        match fs::read(&path) {
            Ok(bytes) => Ok(serde_json::from_slice(&bytes)?),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Manifest::default()),
            Err(e) => Err(io_err(&path)(e)),
        }
    }

    fn current_stamp(&self) -> Stamp {
        match fs::metadata(self.dir.join(MANIFEST)) {
            Ok(meta) => format!("{:?}/{}", meta.modified().ok(), meta.len()),
            Err(_) => String::new(),
        }
    }

    /// The file of key `kid`. A kid is base64url (a thumbprint): one from a manifest written
    /// elsewhere (a backup being restored) never names a path outside this folder.
    fn pem_path(&self, kid: &str) -> Result<PathBuf, KeyError> {
        let safe = !kid.is_empty()
            && kid.len() <= 128
            && kid.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
        if !safe {
            return Err(KeyError::BadKey {
                kid: kid.chars().take(64).collect(),
                reason: "a key id must be base64url".into(),
            });
        }
        Ok(self.dir.join(format!("{kid}.pem")))
    }

    fn read_now(&self) -> Result<StoredKeyring, KeyError> {
        let stamp = self.current_stamp();
        let mut keys = Vec::new();
        for info in self.manifest()?.keys {
            let path = self.pem_path(&info.kid)?;
            let pem = fs::read_to_string(&path).map_err(io_err(&path))?;
            let der = pem_decode(&pem).ok_or_else(|| KeyError::BadKey {
                kid: info.kid.clone(),
                reason: "not a PEM document".into(),
            })?;
            keys.push((info, der));
        }
        Ok(StoredKeyring { keys, stamp })
    }

    fn change_now(&self, change: KeyChangeFn) -> Result<KeyInfo, KeyError> {
        crate::files::create_private_dir(&self.dir).map_err(io_err(&self.dir))?;
        let lock_path = self.dir.join(LOCK);
        let lock = fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(io_err(&lock_path))?;
        lock.lock().map_err(io_err(&lock_path))?;
        let mut draft = KeyringDraft {
            keys: self.manifest()?.keys,
            added: Vec::new(),
        };
        let outcome = change(&mut draft)?;
        for (info, pkcs8) in &draft.added {
            write_private(&self.pem_path(&info.kid)?, pem_encode(pkcs8).as_bytes())?;
        }
        let path = self.dir.join(MANIFEST);
        let tmp = self.dir.join(format!(".{MANIFEST}.tmp"));
        let manifest = Manifest { keys: draft.keys };
        write_private(&tmp, &serde_json::to_vec_pretty(&manifest)?)?;
        fs::rename(&tmp, &path).map_err(io_err(&path))?;
        // The lock is released when `lock` is dropped.
        Ok(outcome)
    }
}

#[async_trait]
impl KeyVault for FolderVault {
    async fn read(&self) -> Result<StoredKeyring, KeyError> {
        self.read_now()
    }

    async fn stamp(&self) -> Result<Stamp, KeyError> {
        Ok(self.current_stamp())
    }

    async fn change(&self, change: KeyChangeFn) -> Result<KeyInfo, KeyError> {
        // File locking and fsync block: off the async workers.
        let vault = FolderVault { dir: self.dir.clone() };
        tokio::task::spawn_blocking(move || vault.change_now(change))
            .await
            .map_err(|e| KeyError::Vault(format!("the keyring change failed: {e}")))?
    }
}

/// Writes a file that only the owner can read (0600), replacing any old one.
fn write_private(path: &Path, bytes: &[u8]) -> Result<(), KeyError> {
    crate::files::write_private(path, bytes).map_err(io_err(path))
}
