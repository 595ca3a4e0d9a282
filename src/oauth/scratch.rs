//! Short-lived state a browser flow keeps between requests (the playground's), kept in the
//! store's scratch space so that every node sees it. It is sealed with AES-256-GCM under a
//! server secret first: it may hold what a developer typed (a client secret), and a shared
//! database must never hold that in the clear.

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
        let value = serde_json::to_vec(value).map_err(Error::server_error)?;
        let stored = self.secrets.seal(SEALING_SECRET, purpose, &value).await?;
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
        let opened = self.secrets.open(SEALING_SECRET, purpose, &stored).await?;
        Ok(opened.and_then(|value| serde_json::from_slice(&value).ok()))
    }
}
