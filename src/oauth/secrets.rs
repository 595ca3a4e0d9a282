//! Server secrets: the keys every node of a deployment shares and makes on first use (the
//! one that seals scratch values, the one that signs cookie values, the DPoP nonce key). They
//! live in the store; in cluster mode they are sealed there under the key-encryption key, like
//! the signing keys, so a reader of the database (a dump, a backup, a replica) cannot open
//! pushed requests or playground state, nor forge cookies. The embedded store keeps them in
//! the data folder, which only the server's account can read.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};

use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_256_GCM, NONCE_LEN};
use ring::rand::{SecureRandom, SystemRandom};

use super::Error;
use crate::keys::database::KeyEncryptionKey;
use crate::store::Store;

/// A server secret's length.
const SECRET_BYTES: usize = 32;

/// The server secrets, shared by the services that sign or seal with one (sessions, device
/// user codes, DPoP nonces, the scratch space).
pub(crate) struct Secrets {
    /// The whole store: server secrets are kept beside the records, not in any one record
    /// kind's trait ([`Store::server_secret`]).
    store: Arc<dyn Store>,
    /// The secrets read so far, by name: a handful, read once.
    cache: Mutex<HashMap<&'static str, [u8; SECRET_BYTES]>>,
    /// In cluster mode, the key-encryption key that seals them in the database; set once at
    /// startup, before any secret is read.
    seal: OnceLock<KeyEncryptionKey>,
}

impl Secrets {
    pub(super) fn new(store: Arc<dyn Store>) -> Secrets {
        Secrets {
            store,
            cache: Mutex::default(),
            seal: OnceLock::new(),
        }
    }

    /// Seals the secrets under `kek` from now on (cluster mode).
    pub(super) fn seal_with(&self, kek: KeyEncryptionKey) {
        if self.seal.set(kek).is_err() {
            tracing::warn!("the server secrets' sealing key was set twice; the first one is kept");
        }
    }

    /// The server secret named `name`, made (and stored) on first use by whichever node asks
    /// first, and read from the store once per process. In cluster mode a secret an earlier
    /// version stored in the clear is replaced by a new sealed one: it was readable by anyone
    /// who could read the database, so it is not kept (what it protected is short-lived:
    /// pending requests, form and device cookies, device user codes).
    pub(crate) async fn server_secret(&self, name: &'static str) -> Result<[u8; SECRET_BYTES], Error> {
        let cached = self.cache.lock().unwrap_or_else(|p| p.into_inner()).get(name).copied();
        if let Some(secret) = cached {
            return Ok(secret);
        }
        let secret = self.read_server_secret(name).await?;
        Ok(*self
            .cache
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(name)
            .or_insert(secret))
    }

    /// An HMAC-SHA256 key made from the server secret `name`.
    pub(crate) async fn hmac_key(&self, name: &'static str) -> Result<ring::hmac::Key, Error> {
        Ok(ring::hmac::Key::new(
            ring::hmac::HMAC_SHA256,
            &self.server_secret(name).await?,
        ))
    }

    /// Seals `plaintext` with AES-256-GCM under the server secret `name`, bound to `purpose`
    /// (one purpose's value never opens as another's): a random nonce, then the sealed bytes.
    pub(crate) async fn seal(&self, name: &'static str, purpose: &str, plaintext: &[u8]) -> Result<Vec<u8>, Error> {
        let key = self.aead_key(name).await?;
        let mut nonce = [0u8; NONCE_LEN];
        SystemRandom::new()
            .fill(&mut nonce)
            .map_err(|_| Error::server_error("the system random number generator failed"))?;
        let mut sealed = plaintext.to_vec();
        key.seal_in_place_append_tag(Nonce::assume_unique_for_key(nonce), Aad::from(purpose), &mut sealed)
            .map_err(|_| Error::server_error("sealing failed"))?;
        let mut stored = nonce.to_vec();
        stored.extend_from_slice(&sealed);
        Ok(stored)
    }

    /// What [`Secrets::seal`] sealed under `name` for `purpose`; `None` if it does not open
    /// (another secret, another purpose, or altered bytes).
    pub(crate) async fn open(
        &self,
        name: &'static str,
        purpose: &str,
        stored: &[u8],
    ) -> Result<Option<Vec<u8>>, Error> {
        if stored.len() < NONCE_LEN {
            return Ok(None);
        }
        let (nonce, sealed) = stored.split_at(NONCE_LEN);
        let Ok(nonce) = Nonce::try_assume_unique_for_key(nonce) else {
            return Ok(None);
        };
        let key = self.aead_key(name).await?;
        let mut sealed = sealed.to_vec();
        Ok(key
            .open_in_place(nonce, Aad::from(purpose), &mut sealed)
            .ok()
            .map(|opened| opened.to_vec()))
    }

    async fn aead_key(&self, name: &'static str) -> Result<LessSafeKey, Error> {
        let secret = self.server_secret(name).await?;
        let key = UnboundKey::new(&AES_256_GCM, &secret).map_err(|_| Error::server_error("bad sealing key"))?;
        Ok(LessSafeKey::new(key))
    }

    async fn read_server_secret(&self, name: &str) -> Result<[u8; SECRET_BYTES], Error> {
        let mut candidate = [0u8; SECRET_BYTES];
        SystemRandom::new()
            .fill(&mut candidate)
            .map_err(|_| Error::server_error("the system random number generator failed"))?;
        let Some(kek) = self.seal.get() else {
            let stored = self.store.server_secret(name, &candidate).await?;
            return as_secret(name, &stored);
        };
        let sealed = kek.seal_secret(name, &candidate)?;
        let stored = self.store.server_secret(name, &sealed).await?;
        if stored.len() != SECRET_BYTES {
            return as_secret(name, &kek.open_secret(name, &stored)?);
        }
        // Stored in the clear by an earlier version: replaced, once, by whichever node is
        // first; the others read what it stored.
        if self.store.replace_server_secret(name, &stored, &sealed).await? {
            tracing::warn!(
                secret = name,
                "a server secret kept in the clear was replaced by a sealed one"
            );
            return Ok(candidate);
        }
        let stored = self.store.server_secret(name, &sealed).await?;
        as_secret(name, &kek.open_secret(name, &stored)?)
    }
}

fn as_secret(name: &str, bytes: &[u8]) -> Result<[u8; SECRET_BYTES], Error> {
    bytes
        .try_into()
        .map_err(|_| Error::server_error(format!("the server secret {name} is malformed")))
}
