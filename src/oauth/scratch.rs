//! Short-lived state a browser flow keeps between requests (the playground's), kept in the
//! store's scratch space so that every node sees it. It is sealed with AES-256-GCM under a
//! server secret first: it may hold what a developer typed (a client secret), and a shared
//! database must never hold that in the clear.

use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_256_GCM, NONCE_LEN};
use ring::rand::{SecureRandom, SystemRandom};
use serde::de::DeserializeOwned;
use serde::Serialize;

use std::sync::Arc;

use super::secrets::Secrets;
use super::{now, secret_hash, Error};
use crate::store::{EphemeralStore, ScratchRoom, MAX_SCRATCH_VALUE_BYTES};

/// The scratch space, its values sealed under a server secret.
pub(crate) struct Scratch {
    store: Arc<dyn EphemeralStore>,
    secrets: Arc<Secrets>,
}

impl Scratch {
    pub(super) fn new(store: Arc<dyn EphemeralStore>, secrets: &Arc<Secrets>) -> Scratch {
        Scratch {
            store,
            secrets: secrets.clone(),
        }
    }
}

/// The name of the server secret that seals scratch values.
const SEALING_SECRET: &str = "scratch-aead";

impl Scratch {
    /// The sealing key: one server secret shared by every node, made on first use.
    async fn sealing_key(&self) -> Result<LessSafeKey, Error> {
        let secret = self.secrets.server_secret(SEALING_SECRET).await?;
        let key = UnboundKey::new(&AES_256_GCM, &secret).map_err(|_| Error::server_error("bad sealing key"))?;
        Ok(LessSafeKey::new(key))
    }

    /// Keeps `value` for `owner` (a session id) under `purpose` for `ttl` seconds, in `room`
    /// (a temporarily_unavailable error when the scratch space has none).
    pub async fn put_sealed<T: Serialize>(
        &self,
        purpose: &str,
        owner: &str,
        value: &T,
        ttl: i64,
        room: ScratchRoom,
    ) -> Result<(), Error> {
        let mut sealed = serde_json::to_vec(value).map_err(Error::server_error)?;
        let mut nonce = [0u8; NONCE_LEN];
        SystemRandom::new()
            .fill(&mut nonce)
            .map_err(|_| Error::server_error("the system random number generator failed"))?;
        self.sealing_key()
            .await?
            .seal_in_place_append_tag(Nonce::assume_unique_for_key(nonce), Aad::from(purpose), &mut sealed)
            .map_err(|_| Error::server_error("sealing failed"))?;
        let mut stored = nonce.to_vec();
        stored.extend_from_slice(&sealed);
        if stored.len() > MAX_SCRATCH_VALUE_BYTES {
            return Err(Error::invalid_request("the request holds too much to keep"));
        }
        let key = secret_hash(&format!("{purpose}\0{owner}"));
        Ok(self.store.put_scratch(&key, &stored, now() + ttl, room).await?)
    }

    /// What [`Scratch::put_sealed`] kept for `owner` under `purpose`, if it is still there
    /// (and opens: a value sealed under another secret reads as absent).
    pub async fn get_sealed<T: DeserializeOwned>(&self, purpose: &str, owner: &str) -> Result<Option<T>, Error> {
        let key = secret_hash(&format!("{purpose}\0{owner}"));
        let Some(stored) = self.store.get_scratch(&key).await? else {
            return Ok(None);
        };
        if stored.len() < NONCE_LEN {
            return Ok(None);
        }
        let (nonce, sealed) = stored.split_at(NONCE_LEN);
        let Ok(nonce) = Nonce::try_assume_unique_for_key(nonce) else {
            return Ok(None);
        };
        let mut sealed = sealed.to_vec();
        let key = self.sealing_key().await?;
        let Ok(opened) = key.open_in_place(nonce, Aad::from(purpose), &mut sealed) else {
            return Ok(None);
        };
        Ok(serde_json::from_slice(opened).ok())
    }
}
