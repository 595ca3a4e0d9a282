//! `ClientCache`: each node's client records, read from the database at most
//! [`CLIENT_CACHE_TTL`] ago, so a changed or deleted client reaches every node within that bound
//! (the node that wrote it at once).
//!
//! A request never waits for a re-read of a client in use: one background task
//! ([`refresh_in_background`]) re-reads, in one statement, every cached client used since it was
//! read once half the bound has passed (issue 29: with the re-read on the request path, two nodes'
//! client_credentials p99 reached a second, requests queueing behind it on a saturated machine).
//! Clients not used since their last read are left to expire, and an id no client has is never
//! re-read (anyone can send any id).
//!
//! Bounded in entries and in bytes ([`CLIENT_CACHE_ENTRIES`], [`CLIENT_CACHE_BYTES`]): a
//! registered client may hold 50 redirect URIs of 2 KB and a 16 KB key set, so a count alone
//! would let anyone who registers bulky clients and names them fill gigabytes. Entries are kept
//! under the SHA-256 of the id asked for: an entry's size never depends on what was asked.

use std::collections::HashMap;
use std::sync::{Mutex, Weak};
use std::time::{Duration, Instant};

use deadpool_postgres::Pool;

use crate::store::{ClientRecord, SecretHash};

/// How long a node may use a client record it read from the database.
pub const CLIENT_CACHE_TTL: Duration = Duration::from_secs(1);
/// Client records cached at most, and the bytes they may take (a record counted at its JSON
/// size and [`CLIENT_CACHE_OVERHEAD`]).
const CLIENT_CACHE_ENTRIES: usize = 10_000;
pub const CLIENT_CACHE_BYTES: usize = 16 << 20;
const CLIENT_CACHE_OVERHEAD: usize = 256;
/// How often the background task looks for clients to re-read.
const REFRESH_EVERY: Duration = Duration::from_millis(250);

#[derive(Default)]
pub(super) struct ClientCache {
    inner: Mutex<Entries>,
}

#[derive(Default)]
struct Entries {
    by_id: HashMap<SecretHash, Cached>,
    bytes: usize,
    /// Bumped by every write this node makes to a client: a read that began before one is not
    /// kept (it may hold what the write replaced).
    generation: u64,
    /// Reads a request made itself, the entry missing or expired.
    request_reads: u64,
}

struct Cached {
    read_at: Instant,
    client: Option<ClientRecord>,
    weight: usize,
    /// Asked for since it was read: re-read in the background before it expires.
    used: bool,
}

/// Where a database read of a client began: its time and the cache's generation.
#[derive(Clone, Copy)]
pub(super) struct ReadStart {
    at: Instant,
    generation: u64,
}

impl Entries {
    fn remove(&mut self, key: &SecretHash) {
        if let Some(entry) = self.by_id.remove(key) {
            self.bytes -= entry.weight;
        }
    }

    fn insert(&mut self, key: SecretHash, client: Option<ClientRecord>, read_at: Instant, used: bool) {
        let weight = CLIENT_CACHE_OVERHEAD
            + client
                .as_ref()
                .map_or(0, |c| serde_json::to_vec(c).map_or(0, |j| j.len()));
        self.remove(&key);
        let full = |entries: &Entries| {
            entries.by_id.len() >= CLIENT_CACHE_ENTRIES || entries.bytes + weight > CLIENT_CACHE_BYTES
        };
        if full(self) {
            self.by_id.retain(|_, entry| entry.read_at.elapsed() < CLIENT_CACHE_TTL);
            self.bytes = self.by_id.values().map(|entry| entry.weight).sum();
            if full(self) {
                self.by_id.clear();
                self.bytes = 0;
            }
        }
        self.bytes += weight;
        let entry = Cached {
            read_at,
            client,
            weight,
            used,
        };
        self.by_id.insert(key, entry);
    }
}

impl ClientCache {
    fn entries(&self) -> std::sync::MutexGuard<'_, Entries> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The cached lookup of `client_id` (`Some(None)`: no such client), if read within the bound.
    pub(super) fn get(&self, client_id: &str) -> Option<Option<ClientRecord>> {
        let mut entries = self.entries();
        let entry = entries
            .by_id
            .get_mut(&id_digest(client_id))
            .filter(|entry| entry.read_at.elapsed() < CLIENT_CACHE_TTL)?;
        entry.used = true;
        Some(entry.client.clone())
    }

    /// Taken before reading a client from the database, for [`ClientCache::put`].
    pub(super) fn read_start(&self) -> ReadStart {
        ReadStart {
            at: Instant::now(),
            generation: self.entries().generation,
        }
    }

    /// Keeps what a read begun at `start` found, unless this node wrote a client since.
    pub(super) fn put(&self, client_id: &str, client: Option<ClientRecord>, start: ReadStart) {
        let mut entries = self.entries();
        entries.request_reads += 1;
        if entries.generation == start.generation {
            entries.insert(id_digest(client_id), client, start.at, false);
        }
    }

    /// Forgets `client_id` once this node changed it.
    pub(super) fn forget(&self, client_id: &str) {
        let mut entries = self.entries();
        entries.generation += 1;
        entries.remove(&id_digest(client_id));
    }

    /// How many lookups are cached, and the bytes they are counted at.
    pub(super) fn size(&self) -> (usize, usize) {
        let entries = self.entries();
        (entries.by_id.len(), entries.bytes)
    }

    /// How many reads requests made themselves.
    pub(super) fn request_reads(&self) -> u64 {
        self.entries().request_reads
    }

    /// The ids of the clients to re-read now: used since they were read, and read more than
    /// half the bound ago.
    fn due(&self) -> Vec<String> {
        let entries = self.entries();
        entries
            .by_id
            .values()
            .filter(|entry| entry.used && entry.read_at.elapsed() >= CLIENT_CACHE_TTL / 2)
            .filter_map(|entry| entry.client.as_ref().map(|c| c.client_id.clone()))
            .collect()
    }

    /// Keeps what a re-read of `ids` begun at `start` found; an id it did not find was deleted.
    fn refreshed(&self, ids: &[String], mut found: HashMap<String, ClientRecord>, start: ReadStart) {
        let mut entries = self.entries();
        if entries.generation != start.generation {
            return; // a write on this node raced the read: the requests read for themselves
        }
        for id in ids {
            entries.insert(id_digest(id), found.remove(id), start.at, false);
        }
    }
}

/// Re-reads the clients in use before they expire ([`ClientCache::due`]), one statement every
/// [`REFRESH_EVERY`], until the cache is dropped with its store. A failed re-read is left to
/// the requests, which read a client themselves once its entry expires.
pub(super) async fn refresh_in_background(cache: Weak<ClientCache>, pool: Pool) {
    let mut tick = tokio::time::interval(REFRESH_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let Some(cache) = cache.upgrade() else {
            return;
        };
        let ids = cache.due();
        if ids.is_empty() {
            continue;
        }
        let start = cache.read_start();
        let Ok(db) = pool.get().await else {
            continue;
        };
        let rows = match db
            .prepare_cached("SELECT client_id, record FROM clients WHERE client_id = ANY($1)")
            .await
        {
            Ok(statement) => db.query(&statement, &[&ids]).await,
            Err(e) => Err(e),
        };
        let Ok(rows) = rows else {
            continue;
        };
        let found = rows
            .iter()
            .filter_map(|row| {
                let record = serde_json::from_value(row.get(1)).ok()?;
                Some((row.get(0), record))
            })
            .collect();
        cache.refreshed(&ids, found, start);
    }
}

/// The cache's key for an id.
fn id_digest(client_id: &str) -> SecretHash {
    let mut out = [0u8; 32];
    out.copy_from_slice(ring::digest::digest(&ring::digest::SHA256, client_id.as_bytes()).as_ref());
    out
}
