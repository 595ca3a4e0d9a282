//! Client records kept decoded in memory. The token endpoint reads its client on every
//! request, and decoding the record's JSON is most of what a sled read costs. This process is
//! the only one writing the data folder, so a record is kept until it changes, not for a
//! while: every client write forgets it, and a generation counter stops a read that raced a
//! write from keeping what it read before the write.

use std::collections::HashMap;
use std::sync::Mutex;

use crate::store::ClientRecord;

/// Records kept at most, and the bytes they may take, counted as their JSON, their id and
/// [`OVERHEAD`]: a registered client may be bulky (50 redirect URIs of 2 KB, a 16 KB key
/// set), and open registration lets anyone make clients, so a count alone is no bound.
const MAX_ENTRIES: usize = 10_000;
const MAX_BYTES: usize = 16 << 20;
const OVERHEAD: usize = 256;

#[derive(Default)]
pub(super) struct ClientMemo {
    inner: Mutex<Memo>,
}

#[derive(Default)]
struct Memo {
    /// Grows with every client write.
    generation: u64,
    entries: HashMap<String, (ClientRecord, usize)>,
    bytes: usize,
}

/// A lookup that found nothing kept: read the record, then hand it to [`ClientMemo::keep`]
/// with this, which keeps it only if no client was written since.
pub(super) struct Miss(u64);

impl ClientMemo {
    pub(super) fn get(&self, client_id: &str) -> Result<ClientRecord, Miss> {
        let memo = self.lock();
        match memo.entries.get(client_id) {
            Some((client, _)) => Ok(client.clone()),
            None => Err(Miss(memo.generation)),
        }
    }

    /// Keeps `client`, read as `json_len` bytes after `miss`, unless a client was written
    /// since (what was read may be older than what is stored now).
    pub(super) fn keep(&self, miss: Miss, client: &ClientRecord, json_len: usize) {
        let weight = OVERHEAD + json_len + client.client_id.len();
        let mut memo = self.lock();
        if memo.generation != miss.0 || weight > MAX_BYTES {
            return;
        }
        if memo.entries.len() >= MAX_ENTRIES || memo.bytes + weight > MAX_BYTES {
            // Full: start again rather than track which record was read last.
            memo.entries.clear();
            memo.bytes = 0;
        }
        memo.bytes += weight;
        if let Some((_, replaced)) = memo.entries.insert(client.client_id.clone(), (client.clone(), weight)) {
            memo.bytes -= replaced;
        }
    }

    /// Forgets `client_id`, after it was written (or deleted).
    pub(super) fn forget(&self, client_id: &str) {
        let mut memo = self.lock();
        memo.generation += 1;
        if let Some((_, weight)) = memo.entries.remove(client_id) {
            memo.bytes -= weight;
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Memo> {
        self.inner.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn client(id: &str, name: &str) -> ClientRecord {
        serde_json::from_value(serde_json::json!({
            "client_id": id, "name": name, "client_type": "confidential",
            "grant_types": ["client-credentials"], "redirect_uris": [], "scopes": ["read"],
            "resources": [], "created_at": 0, "skip_consent": false, "post_logout_redirect_uris": [],
            "admin": false,
        }))
        .unwrap()
    }

    #[test]
    fn a_record_read_before_a_write_is_not_kept_after_it() {
        let memo = ClientMemo::default();
        let Err(miss) = memo.get("a") else {
            panic!("nothing kept yet")
        };
        // A write lands between the read and the keep: what was read is old.
        memo.forget("a");
        memo.keep(miss, &client("a", "old"), 100);
        assert!(memo.get("a").is_err(), "the old record is not kept");
        let Err(miss) = memo.get("a") else { panic!() };
        memo.keep(miss, &client("a", "new"), 100);
        assert_eq!(memo.get("a").ok().unwrap().name, "new");
        memo.forget("a");
        assert!(memo.get("a").is_err(), "a write forgets it");
    }

    #[test]
    fn the_memo_stays_within_its_bytes() {
        let memo = ClientMemo::default();
        for i in 0..2_000 {
            let id = format!("client-{i}");
            let Err(miss) = memo.get(&id) else { panic!() };
            memo.keep(miss, &client(&id, "bulky"), 20_000);
        }
        let kept = memo.lock();
        assert!(
            kept.bytes <= MAX_BYTES && kept.entries.len() < 2_000,
            "{} bytes",
            kept.bytes
        );
        assert_eq!(kept.bytes, kept.entries.values().map(|(_, w)| w).sum::<usize>());
    }
}
