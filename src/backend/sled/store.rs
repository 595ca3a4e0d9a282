//! `SledStore`: the default backend, one sled tree per record kind.
//!
//! Key layout (kept in this file only):
//! - `clients`: client_id -> JSON `ClientRecord`
//! - `users`: user_id -> JSON `UserRecord`; `usernames`: username -> user_id
//! - `codes`: SHA-256(code) -> JSON `CodeRecord`
//! - `grants`: grant_id -> JSON `GrantRecord`; `user_grants`: user_id NUL client_id NUL
//!   grant_id -> empty (the index behind "revoke everything this app has");
//!   `grants_by_user`: user_id NUL grant_id and `grants_by_client`: client_id NUL grant_id ->
//!   empty (a user's or a client's grants in id order, a page at a time)
//! - `refresh_tokens`: SHA-256(family id) -> `RefreshRecord` in a compact binary layout (see
//!   `encode_refresh`): one record per grant's refresh tokens, rewritten by every rotation
//! - `revoked_access`: jti -> expires_at (i64 BE)
//! - `consents`: user_id NUL client_id -> JSON `ConsentRecord` (so a user's are one prefix)
//! - `sessions`: SHA-256(session id) -> JSON `SessionRecord`
//! - `factors`: user_id NUL factor_id -> JSON `FactorRecord` (so a user's are one prefix)
//! - `devices`: SHA-256(device code) -> JSON `DeviceRecord`; `device_user_codes`:
//!   SHA-256(user code) -> SHA-256(device code) (the unique user-code index)
//! - `client_facts`: what the purge and the key schedule look clients up by (see
//!   `client_fact_keys`)
//! - `refresh_due`: expiry, SHA-256(family id) -> empty, and `grants_due`: creation time,
//!   grant_id -> empty: when the purge should look at a family or a grant (`due_key`);
//!   `grant_families`: grant_id -> SHA-256(family id)
//!
//! Clients read lately are also kept decoded in memory until written ([`ClientMemo`]), and
//! every write takes a turn of the write gate, which a backup takes whole (`back_up`).
//!
//! Durability: sled writes land in its in-memory log buffer; `durable()` resolves once a
//! `Db::flush` that started after the call has finished. One flusher thread runs those
//! flushes back to back (group commit): every request that arrives while a flush is under way
//! is covered by the next one, so the cost is one flush per batch of concurrent requests
//! rather than one per request. A flush costs about 0.15-0.3 ms here (rarely tens of ms when
//! the file system commits its journal); a request waits for at most two, and a credential is
//! never handed out before its record is on disk. On Linux sled writes its log with
//! `sync_file_range`, which survives a crash of the process or the kernel; surviving power
//! loss as well relies on the disk not losing its write cache.

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;

use ::sled::transaction::{
    ConflictableTransactionError, ConflictableTransactionResult, TransactionError, TransactionalTree,
};
use ::sled::{Db, Transactional, Tree};

use crate::store::*;
use serde::de::DeserializeOwned;
use serde::Serialize;

use async_trait::async_trait;

use super::client_memo::ClientMemo;
use crate::files::create_private_dir;

/// The layout of the data folder this binary writes: its trees and how their records and index
/// entries are kept. It is recorded in the `meta` tree, and a binary refuses a folder of a
/// later format than its own (`StoreError::SchemaTooNew`), so a rollback never writes records
/// without the indexes a later version reads them by. 1: the indexes and refresh families of
/// issue 29; 2: the record counts kept with the records ([`Trees::counts`]). Binaries from
/// before it record no format and cannot refuse: docs/operations.md.
const FORMAT: i64 = 2;
/// Where the format is recorded (8 bytes, big-endian).
const FORMAT_KEY: &[u8] = b"format";

/// The folder's [`FORMAT`] (`None` before formats were recorded); refused if later than ours.
fn folder_format(meta: &Tree) -> Result<Option<i64>> {
    let Some(bytes) = meta.get(FORMAT_KEY)? else {
        return Ok(None);
    };
    let found = bytes
        .as_ref()
        .try_into()
        .map(i64::from_be_bytes)
        .map_err(|_| StoreError::Corrupt(serde::de::Error::custom("the data folder's format is malformed")))?;
    if found > FORMAT {
        return Err(StoreError::SchemaTooNew(found, FORMAT));
    }
    Ok(Some(found))
}

/// How often the flusher flushes when nothing asks it to.
const IDLE_FLUSH: std::time::Duration = std::time::Duration::from_millis(500);

/// The sled page cache is capped so that the whole server stays within a small memory budget.
const CACHE_BYTES: u64 = 8 * 1024 * 1024;

/// The sled backend: the synchronous trees behind the async store traits.
pub struct SledStore {
    commits: Arc<GroupCommit>,
    flusher: Option<JoinHandle<()>>,
    db: Db,
    trees: Arc<Trees>,
    /// Taken shared by every write (through [`SledStore::write_turn`]) and whole by a backup,
    /// which so copies the trees as they stood at one moment: sled has no snapshots.
    writes: Arc<tokio::sync::RwLock<()>>,
    /// Clients read lately, decoded ([`ClientMemo`]): forgotten by every client write.
    client_memo: ClientMemo,
    /// Failure counters and scratch values: memory only (see [`EphemeralStore`]).
    ephemeral: Ephemeral,
}

/// Counters kept at most (each well under 100 bytes).
const MAX_COUNTERS: usize = 100_000;
/// Keys remembered once (assertion `jti`s, each for at most five and a half minutes; DPoP
/// proof `jti`s, for `dpop_proof_max_age` + 5 s): never evicted while live, so at the bound new
/// ones are refused (503). About 54 bytes each ([`OnceTable`]; measured: 27 MB for 500,000):
/// 27 MB at most, reached only by more than ~1,500 assertions, or ~7,500 DPoP proofs (default
/// window), a second sustained on one node.
const MAX_ONCE: usize = 500_000;

/// The in-memory [`EphemeralStore`] of one process.
#[derive(Default)]
struct Ephemeral {
    counters: Mutex<std::collections::HashMap<Vec<u8>, Counter>>,
    scratch: Mutex<ScratchTable>,
    once: Mutex<OnceTable>,
}

/// Scratch values, with an index by expiry (expired values leave in order, never by a full
/// scan) and the bytes they are counted at.
#[derive(Default)]
struct ScratchTable {
    values: std::collections::HashMap<SecretHash, (Vec<u8>, i64)>,
    by_expiry: std::collections::BTreeSet<(i64, SecretHash)>,
    bytes: usize,
}

impl ScratchTable {
    fn cost(value: &[u8]) -> usize {
        value.len() + std::mem::size_of::<SecretHash>() + SCRATCH_OVERHEAD_BYTES
    }

    fn remove(&mut self, key: &SecretHash) {
        if let Some((value, expires)) = self.values.remove(key) {
            self.by_expiry.remove(&(expires, *key));
            self.bytes -= Self::cost(&value);
        }
    }

    fn put(&mut self, key: &SecretHash, value: &[u8], expires_at: i64, room: ScratchRoom) -> Result<()> {
        if value.len() > MAX_SCRATCH_VALUE_BYTES {
            return Err(StoreError::Database(format!(
                "a scratch value holds at most {MAX_SCRATCH_VALUE_BYTES} bytes"
            )));
        }
        let now = crate::clock::now();
        while let Some(&(expires, expired)) = self.by_expiry.first() {
            if expires > now {
                break;
            }
            self.remove(&expired);
        }
        let (max_values, max_bytes) = room.limits();
        let replaced = self.values.get(key).map_or(0, |(old, _)| Self::cost(old));
        // Replacing a value adds none.
        let grows = replaced == 0 && self.values.len() >= max_values;
        if grows || self.bytes - replaced + Self::cost(value) > max_bytes {
            let first = self.by_expiry.first().map_or(now, |(expires, _)| *expires);
            return Err(scratch_full(first));
        }
        self.remove(key);
        self.bytes += Self::cost(value);
        self.values.insert(*key, (value.to_vec(), expires_at));
        self.by_expiry.insert((expires_at, *key));
        Ok(())
    }
}

/// A remembered key: the first 64 bits of its SHA-256, 8 bytes whatever the key's length. Two
/// keys with one digest can only make the second refused as if replayed, never let a replay
/// through; with the memory full, a new key meets a remembered digest by chance once in
/// 2^64 / 500,000 (about 4·10^13). A key that can be foreseen (a TOTP step's) could be made
/// refused ahead by a key ground to the same digest: about 2^64 SHA-256s for one refusal.
type OnceDigest = u64;

/// Keys remembered once, compactly (issue 29: busy workloads fill it, one DPoP proof or
/// client assertion a request): each key is its digest and its expiry in milliseconds (16
/// bytes in the table), plus its digest again in the queue of the second it expires in (8
/// bytes), 54 bytes a key measured with the tables' slack, against 81 with 16-byte digests and
/// 155 when keys and expiries were kept in a map and an ordered set of (expiry, hash). Expired
/// seconds leave whole, in order, never by a full scan; the expiry itself is kept to the
/// millisecond, as the contract says. The table keeps the standard library's keyed hashing:
/// the keys are chosen by whoever sends them, so a digest is not trusted to spread them.
#[derive(Default)]
struct OnceTable {
    /// Each key's expiry (Unix milliseconds).
    until: std::collections::HashMap<OnceDigest, i64>,
    /// The keys by the second their expiry falls in (rounded up).
    by_second: std::collections::BTreeMap<i64, Vec<OnceDigest>>,
}

impl OnceTable {
    /// Forgets the keys of the seconds that have passed at `now_ms`.
    fn forget_expired(&mut self, now_ms: i64) {
        while let Some(entry) = self.by_second.first_entry() {
            if *entry.key() * 1000 > now_ms {
                break;
            }
            for digest in entry.remove() {
                // A key remembered again since, for longer, stays.
                if self.until.get(&digest).is_some_and(|until| *until <= now_ms) {
                    self.until.remove(&digest);
                }
            }
        }
    }
}

impl Ephemeral {
    fn remember_once(&self, key: &[u8], expires_at_ms: i64) -> Result<bool> {
        let mut table = self.once.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let now_ms = crate::clock::now_ms();
        table.forget_expired(now_ms);
        let sha = ring::digest::digest(&ring::digest::SHA256, key);
        let digest = OnceDigest::from_be_bytes(sha.as_ref()[..8].try_into().unwrap_or_default());
        if table.until.get(&digest).is_some_and(|until| *until > now_ms) {
            return Ok(false);
        }
        if expires_at_ms <= now_ms {
            // Its time is over already: nothing to remember.
            table.until.remove(&digest);
            return Ok(true);
        }
        if table.until.len() >= MAX_ONCE && !table.until.contains_key(&digest) {
            let first = table.by_second.keys().next().map_or(now_ms, |s| s * 1000);
            return Err(StoreError::Full {
                what: "replay memory",
                retry_after: std::time::Duration::from_millis((first - now_ms).max(1000) as u64),
            });
        }
        table.until.insert(digest, expires_at_ms);
        let second = (expires_at_ms + 999).div_euclid(1000);
        table.by_second.entry(second).or_default().push(digest);
        Ok(true)
    }

    fn update_counters<F: Fn(&mut [Counter]) + ?Sized>(&self, keys: &[Vec<u8>], update: &F) {
        let mut table = self.counters.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let mut counters: Vec<Counter> = keys.iter().map(|k| table.get(k).copied().unwrap_or_default()).collect();
        update(&mut counters);
        let fresh = keys.iter().filter(|k| !table.contains_key(*k)).count();
        if table.len() + fresh > MAX_COUNTERS {
            make_room(&mut table, crate::clock::now_ms());
        }
        for (key, counter) in keys.iter().zip(counters) {
            if counter == Counter::default() {
                table.remove(key);
            } else {
                table.insert(key.clone(), counter);
            }
        }
    }

    fn put_scratch(&self, key: &SecretHash, value: &[u8], expires_at: i64, room: ScratchRoom) -> Result<()> {
        let mut table = self.scratch.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        table.put(key, value, expires_at, room)
    }

    fn get_scratch(&self, key: &SecretHash) -> Option<Vec<u8>> {
        let table = self.scratch.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let (value, expires) = table.values.get(key)?;
        (*expires > crate::clock::now()).then(|| value.clone())
    }
}

/// Frees a tenth of the counter table: expired counters first, then those that expire first.
fn make_room(table: &mut std::collections::HashMap<Vec<u8>, Counter>, now_ms: i64) {
    table.retain(|_, c| c.expires_at_ms > now_ms);
    let target = MAX_COUNTERS - MAX_COUNTERS / 10;
    if table.len() > target {
        let mut by_expiry: Vec<(i64, Vec<u8>)> = table.iter().map(|(k, c)| (c.expires_at_ms, k.clone())).collect();
        by_expiry.sort_unstable();
        for (_, key) in &by_expiry[..table.len() - target] {
            table.remove(key);
        }
    }
}

/// One sled tree per record kind. Every method here is synchronous; the async trait
/// implementations call the quick ones inline and run full scans on the blocking pool.
struct Trees {
    clients: Tree,
    users: Tree,
    usernames: Tree,
    codes: Tree,
    grants: Tree,
    user_grants: Tree,
    grants_by_user: Tree,
    grants_by_client: Tree,
    refresh_tokens: Tree,
    revoked_access: Tree,
    consents: Tree,
    sessions: Tree,
    /// Server secrets by name (e.g. the key that signs login-form cookies).
    secrets: Tree,
    /// `owner_user_id \0 client_id` -> empty: the clients each user registered.
    client_owners: Tree,
    /// What clients are looked up by besides id and owner ([`client_fact_keys`]).
    client_facts: Tree,
    /// When each refresh family becomes due for the purge: ordered time, family -> empty.
    refresh_due: Tree,
    /// When each grant becomes due: ordered creation time, grant id -> empty.
    grants_due: Tree,
    /// Each grant's refresh family: grant id -> SHA-256(family id).
    grant_families: Tree,
    devices: Tree,
    device_user_codes: Tree,
    /// `AuditRecord::id` -> the entry: ids sort in time order.
    audit: Tree,
    /// `AuditTerm` then `AuditRecord::id` -> empty: an entry under each of its terms, so a
    /// filtered page reads only the entries it could show, newest first.
    audit_terms: Tree,
    /// How many clients (`c`), users (`u`) and live grants (`g`) there are, each an i64,
    /// big-endian. Kept in the transactions that write the records, so the console's counts
    /// need no scan (issue 29: 14 s at a million grants). One key each: sled runs one write
    /// transaction at a time whatever keys it touches, so spreading a count would gain nothing.
    counts: Tree,
    /// `user_id \0 factor_id` -> the factor.
    factors: Tree,
    /// Which index builds and one-time upgrades ran, by name -> empty.
    meta: Tree,
}

fn to_json<T: Serialize>(value: &T) -> Result<Vec<u8>> {
    Ok(serde_json::to_vec(value)?)
}

fn from_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T> {
    Ok(serde_json::from_slice(bytes)?)
}

const REFRESH_FORMAT: u8 = 1;
/// [`REFRESH_FORMAT`] with a DPoP key thumbprint.
const REFRESH_FORMAT_DPOP: u8 = 2;
/// The state byte: which token of the family is current ([`CurrentRefresh`]).
const REFRESH_FIRST: u8 = 0;
const REFRESH_SPENT: u8 = 1;
const REFRESH_LATER: u8 = 2;

/// `[format 1][state][issued_at i64 BE][expires_at i64 BE][grant_id UTF-8]`, where the state
/// is 0 (the first token is current), 1 (spent: a record from before families) or 2 (a later
/// token is, and its 32-byte hash follows `expires_at`): about half the bytes of the JSON form.
/// A token bound to a DPoP key is `[format 2]`, the same fields, then `[jkt length u8][jkt]`
/// before the grant id. (Versions before families wrote states 0 and 1 only, and read a 2 as
/// corrupt rather than as a live token.)
fn encode_refresh(token: &RefreshRecord) -> Vec<u8> {
    let jkt = token.dpop_jkt.as_deref().filter(|j| j.len() <= usize::from(u8::MAX));
    let mut out = Vec::with_capacity(51 + token.grant_id.len() + jkt.map_or(0, str::len));
    out.push(if jkt.is_some() {
        REFRESH_FORMAT_DPOP
    } else {
        REFRESH_FORMAT
    });
    out.push(match token.current {
        CurrentRefresh::First => REFRESH_FIRST,
        CurrentRefresh::Spent => REFRESH_SPENT,
        CurrentRefresh::Later(_) => REFRESH_LATER,
    });
    out.extend_from_slice(&token.issued_at.to_be_bytes());
    out.extend_from_slice(&token.expires_at.to_be_bytes());
    if let CurrentRefresh::Later(hash) = &token.current {
        out.extend_from_slice(hash);
    }
    if let Some(jkt) = jkt {
        out.push(jkt.len() as u8);
        out.extend_from_slice(jkt.as_bytes());
    }
    out.extend_from_slice(token.grant_id.as_bytes());
    out
}

fn decode_refresh(bytes: &[u8]) -> Result<RefreshRecord> {
    let corrupt = || StoreError::Corrupt(serde::de::Error::custom("refresh token record is malformed"));
    let text = |b: &[u8]| String::from_utf8(b.to_vec()).map_err(|_| corrupt());
    if bytes.len() < 18 {
        return Err(corrupt());
    }
    let (current, rest) = match bytes[1] {
        REFRESH_FIRST => (CurrentRefresh::First, &bytes[18..]),
        REFRESH_SPENT => (CurrentRefresh::Spent, &bytes[18..]),
        REFRESH_LATER => {
            let hash = bytes.get(18..50).ok_or_else(corrupt)?;
            (
                CurrentRefresh::Later(hash.try_into().map_err(|_| corrupt())?),
                &bytes[50..],
            )
        }
        _ => return Err(corrupt()),
    };
    let (dpop_jkt, grant_id) = match bytes[0] {
        REFRESH_FORMAT => (None, rest),
        REFRESH_FORMAT_DPOP => {
            let len = usize::from(*rest.first().ok_or_else(corrupt)?);
            let jkt = rest.get(1..1 + len).ok_or_else(corrupt)?;
            (Some(text(jkt)?), &rest[1 + len..])
        }
        _ => return Err(corrupt()),
    };
    let int = |at: usize| i64::from_be_bytes(bytes[at..at + 8].try_into().unwrap_or_default());
    Ok(RefreshRecord {
        current,
        issued_at: int(2),
        expires_at: int(10),
        grant_id: text(grant_id)?,
        dpop_jkt,
    })
}

/// Copies every tree of `from` into a new database in `to`, durably; how many records.
/// Refuses a folder that already holds a database.
pub fn copy_database(from: &Db, to: &Path) -> Result<u64> {
    if to.join("conf").exists() || to.join("db").exists() {
        return Err(StoreError::Conflict("database folder"));
    }
    create_private_dir(to).map_err(|e| StoreError::Backend(e.into()))?;
    let copy = ::sled::Config::new().path(to).cache_capacity(CACHE_BYTES).open()?;
    let mut copied = 0;
    for name in from.tree_names() {
        let (source, target) = (from.open_tree(&name)?, copy.open_tree(&name)?);
        for entry in source.iter() {
            // One insert at a time: a batch would take sled's process-wide lock whole, and
            // stall every read of the serving database with it.
            let (key, value) = entry?;
            target.insert(key, value)?;
            copied += 1;
        }
    }
    copy.flush()?;
    Ok(copied)
}

fn tx_error(err: TransactionError<StoreError>) -> StoreError {
    match err {
        TransactionError::Abort(e) => e,
        TransactionError::Storage(e) => StoreError::Backend(e),
    }
}

fn abort(err: impl Into<StoreError>) -> ConflictableTransactionError<StoreError> {
    ConflictableTransactionError::Abort(err.into())
}

impl SledStore {
    /// Opens (creating if needed, mode 0700) the data folder. Fails with `Locked` when
    /// another process has it open: sled takes an exclusive file lock, which is what stops
    /// the CLI from writing under a running server.
    pub fn open(dir: &Path) -> Result<SledStore> {
        create_private_dir(dir).map_err(|e| StoreError::Backend(e.into()))?;
        let db = ::sled::Config::new()
            .path(dir)
            .cache_capacity(CACHE_BYTES)
            .flush_every_ms(None)
            .open()
            .map_err(|e| match &e {
                ::sled::Error::Io(io) if io.to_string().contains("lock") => {
                    StoreError::Locked(dir.display().to_string())
                }
                _ => StoreError::Backend(e),
            })?;
        // Checked before any other tree is opened: opening one creates it.
        let format = folder_format(&db.open_tree("meta")?)?;
        let tree = |name: &str| db.open_tree(name);
        let trees = Trees {
            clients: tree("clients")?,
            users: tree("users")?,
            usernames: tree("usernames")?,
            codes: tree("codes")?,
            grants: tree("grants")?,
            user_grants: tree("user_grants")?,
            grants_by_user: tree("grants_by_user")?,
            grants_by_client: tree("grants_by_client")?,
            refresh_tokens: tree("refresh_tokens")?,
            revoked_access: tree("revoked_access")?,
            consents: tree("consents")?,
            sessions: tree("sessions")?,
            secrets: tree("secrets")?,
            client_owners: tree("client_owners")?,
            client_facts: tree("client_facts")?,
            refresh_due: tree("refresh_due")?,
            grants_due: tree("grants_due")?,
            grant_families: tree("grant_families")?,
            devices: tree("devices")?,
            device_user_codes: tree("device_user_codes")?,
            audit: tree("audit")?,
            audit_terms: tree("audit_terms")?,
            factors: tree("factors")?,
            counts: tree("counts")?,
            meta: tree("meta")?,
        }
        .migrated(format)?;
        // Started once the folder is known good: a refused folder is let go with the database.
        let commits = Arc::new(GroupCommit::new());
        let flusher = {
            let (db, commits) = (db.clone(), commits.clone());
            std::thread::Builder::new()
                .name("tessera-flusher".into())
                .spawn(move || commits.run_flusher(&db))
                .map_err(|e| StoreError::Backend(e.into()))?
        };
        Ok(SledStore {
            commits,
            flusher: Some(flusher),
            db,
            trees: Arc::new(trees),
            writes: Arc::default(),
            client_memo: ClientMemo::default(),
            ephemeral: Ephemeral::default(),
        })
    }

    /// Runs a full scan on the blocking pool, off the async workers.
    async fn scan<T: Send + 'static>(&self, work: impl FnOnce(&Trees) -> Result<T> + Send + 'static) -> Result<T> {
        let trees = self.trees.clone();
        tokio::task::spawn_blocking(move || work(&trees))
            .await
            .map_err(|e| StoreError::Transaction(format!("a store scan failed: {e}")))?
    }

    /// A turn to write: waits while a backup copies the trees.
    async fn write_turn(&self) -> tokio::sync::RwLockReadGuard<'_, ()> {
        self.writes.read().await
    }

    /// [`SledStore::scan`] for work that writes, in a write turn.
    async fn scan_writing<T: Send + 'static>(
        &self,
        work: impl FnOnce(&Trees) -> Result<T> + Send + 'static,
    ) -> Result<T> {
        let turn = self.writes.clone().read_owned().await;
        self.scan(move |trees| {
            let _turn = turn;
            work(trees)
        })
        .await
    }
}

impl Trees {
    /// Brings a data folder written by an earlier version up to date: builds indexes it did
    /// not have. Each step runs once; a marker in the `meta` tree records it. A folder of a
    /// later [`FORMAT`] is refused before anything is written to it.
    fn migrated(self, format: Option<i64>) -> Result<Trees> {
        self.build_index_once(b"client-owner-index", &self.clients, |t, client: ClientRecord| {
            if let Some(owner) = &client.owner_user_id {
                t.client_owners.insert(owner_key(owner, &client.client_id), &[])?;
            }
            Ok(())
        })?;
        // Before issue 29 the purge and the key schedule read every client.
        self.build_index_once(b"client-facts", &self.clients, |t, client: ClientRecord| {
            for key in client_fact_keys(&client) {
                t.client_facts.insert(key, &[])?;
            }
            Ok(())
        })?;
        // Folders written before issue 29 listed a user's or a client's grants, and filtered
        // the trail, by reading all of it.
        self.build_index_once(b"grant-order-indexes", &self.grants, |t, grant: GrantRecord| {
            t.index_grant(&grant)
        })?;
        self.build_index_once(b"audit-terms", &self.audit, |t, entry: AuditRecord| {
            t.index_audit(&entry)
        })?;
        // Before issue 29 the purge read every refresh token and every grant.
        if self.meta.get(PURGE_INDEXES)?.is_none() {
            for entry in self.refresh_tokens.iter() {
                let (family, value) = entry?;
                match decode_refresh(&value) {
                    Ok(record) => self.file_family(&family, &record)?,
                    // Due at once: the purge removes what cannot be read, as it always did.
                    Err(_) => {
                        self.refresh_due.insert(due_key(i64::MIN, &family), &[])?;
                    }
                }
            }
            self.build_index_once(b"grants-due", &self.grants, |t, grant: GrantRecord| {
                t.grants_due
                    .insert(due_key(grant.created_at, grant.grant_id.as_bytes()), &[])?;
                Ok(())
            })?;
            self.meta.insert(PURGE_INDEXES, &[])?;
        }
        // Before format 2 the console counted by reading every record.
        if self.meta.get(RECORD_COUNTS)?.is_none() {
            self.count_by_scan()?;
            self.meta.insert(RECORD_COUNTS, &[])?;
        }
        if format != Some(FORMAT) {
            self.meta.insert(FORMAT_KEY, &FORMAT.to_be_bytes())?;
        }
        Ok(self)
    }

    /// Runs `index` on every record of `records` (those that decode), unless the `meta` tree
    /// says the build `name` ran; then records that it did.
    fn build_index_once<T: DeserializeOwned>(
        &self,
        name: &[u8],
        records: &Tree,
        index: impl Fn(&Trees, T) -> Result<()>,
    ) -> Result<()> {
        if self.meta.get(name)?.is_none() {
            for value in records.iter().values() {
                if let Ok(record) = from_json::<T>(&value?) {
                    index(self, record)?;
                }
            }
            self.meta.insert(name, &[])?;
        }
        Ok(())
    }

    fn list<T: DeserializeOwned>(tree: &Tree) -> Result<Vec<T>> {
        tree.iter().values().map(|v| from_json(&v?)).collect()
    }

    /// Up to `limit` records with keys after `after`, in key order.
    fn page<T: DeserializeOwned>(tree: &Tree, after: Option<&str>, limit: usize) -> Result<Vec<T>> {
        use std::ops::Bound;
        let start = match after {
            Some(key) => Bound::Excluded(key.as_bytes().to_vec()),
            None => Bound::Unbounded,
        };
        tree.range::<Vec<u8>, _>((start, Bound::Unbounded))
            .values()
            .take(limit)
            .map(|v| from_json(&v?))
            .collect()
    }

    fn get<T: DeserializeOwned>(tree: &Tree, key: &[u8]) -> Result<Option<T>> {
        tree.get(key)?.map(|v| from_json(&v)).transpose()
    }
}

/// Removes `key` if it still holds `value`: the purge removes by compare-and-swap on what it
/// read, so a record rewritten meanwhile (a code being redeemed, a token rotated) is left for
/// the next purge.
fn remove_if(tree: &Tree, key: &[u8], value: &[u8]) -> Result<bool> {
    Ok(tree.compare_and_swap(key, Some(value), None::<&[u8]>)?.is_ok())
}

/// [`Trees::counts`]' key of the clients.
const CLIENT_COUNT: &[u8] = b"c";
/// [`Trees::counts`]' key of the users.
const USER_COUNT: &[u8] = b"u";
/// [`Trees::counts`]' key of the live grants.
const GRANT_COUNT: &[u8] = b"g";
/// The `meta` marker of [`Trees::counts`] (a folder from before them is counted once).
const RECORD_COUNTS: &[u8] = b"record-counts";

/// A count as stored: an i64, big-endian (anything else reads as 0).
fn read_count(bytes: &[u8]) -> i64 {
    bytes.try_into().map(i64::from_be_bytes).unwrap_or(0)
}

/// Adds `delta` to the count under `key`, in the transaction writing what it counts.
fn add_count(counts: &TransactionalTree, key: &[u8], delta: i64) -> ConflictableTransactionResult<(), StoreError> {
    let count = counts.get(key)?.map_or(0, |bytes| read_count(&bytes));
    counts.insert(key, &(count + delta).to_be_bytes())?;
    Ok(())
}

/// Whether stored grant bytes are a grant counted live (unreadable ones are not).
fn live_grant(bytes: &[u8]) -> bool {
    from_json::<GrantRecord>(bytes).is_ok_and(|grant| !grant.revoked)
}

/// The `meta` marker of the purge's indexes (`refresh_due`, `grants_due`, `grant_families`).
const PURGE_INDEXES: &[u8] = b"purge-indexes";

/// A key of `refresh_due` or `grants_due`: when, then what.
fn due_key(at: i64, what: &[u8]) -> Vec<u8> {
    [&ordered_time(at)[..], what].concat()
}

/// The first [`PURGE_BATCH`] keys of `due` (`refresh_due` or `grants_due`) for moments up to
/// `at`, read before the purge changes the tree.
fn due_keys(due: &Tree, at: i64) -> Vec<::sled::Result<::sled::IVec>> {
    // 33 bytes 0xff sort after every family hash (32 bytes) and every grant id (text, never a
    // 0xff byte).
    let end = [&ordered_time(at)[..], &[0xff; 33][..]].concat();
    due.range(..end).keys().take(PURGE_BATCH).collect()
}

/// The owner index's key: the user, a separator no id contains, the client.
fn owner_key(user_id: &str, client_id: &str) -> Vec<u8> {
    [user_id.as_bytes(), &[0], client_id.as_bytes()].concat()
}

/// A client's keys in `client_facts`: `t`, its own access-token lifetime (u64 BE), its id, if
/// it sets one (the last such key is the longest lifetime); `u`, its creation time (ordered
/// BE), its id, while it is a registration never used (the purge's, oldest first).
fn client_fact_keys(client: &ClientRecord) -> Vec<Vec<u8>> {
    let id = client.client_id.as_bytes();
    let mut keys = Vec::new();
    if let Some(ttl) = client.access_token_ttl {
        keys.push([b"t", &ttl.to_be_bytes()[..], id].concat());
    }
    if client.registration_token_hash.is_some() && client.first_used_at.is_none() {
        keys.push([b"u", &ordered_time(client.created_at)[..], id].concat());
    }
    keys
}

/// `at` as 8 bytes that sort as the numbers do, negative ones first.
fn ordered_time(at: i64) -> [u8; 8] {
    ((at as u64) ^ (1 << 63)).to_be_bytes()
}

/// Moves a client's `client_facts` keys from what `previous` had to what `current` has.
fn refile_client_facts(
    facts: &::sled::transaction::TransactionalTree,
    previous: Option<&ClientRecord>,
    current: Option<&ClientRecord>,
) -> std::result::Result<(), ::sled::transaction::UnabortableTransactionError> {
    let new = current.map(client_fact_keys).unwrap_or_default();
    for key in previous.map(client_fact_keys).unwrap_or_default() {
        if !new.contains(&key) {
            facts.remove(key)?;
        }
    }
    for key in new {
        facts.insert(key, &[])?;
    }
    Ok(())
}

impl Trees {
    /// Writes `client` if `write` says so given the stored one (`None`: absent), keeping the
    /// owner index, the client facts and a stored `first_used_at`; returns whether it wrote.
    fn write_client(&self, client: &ClientRecord, write: fn(Option<&ClientRecord>) -> bool) -> Result<bool> {
        (&self.clients, &self.client_owners, &self.client_facts, &self.counts)
            .transaction(|(clients, owners, facts, counts)| {
                let previous = clients
                    .get(client.client_id.as_bytes())?
                    .map(|bytes| from_json::<ClientRecord>(&bytes))
                    .transpose()
                    .map_err(abort)?;
                if !write(previous.as_ref()) {
                    return Ok(false);
                }
                let mut client = client.clone();
                if client.first_used_at.is_none() {
                    client.first_used_at = previous.as_ref().and_then(|p| p.first_used_at);
                }
                clients.insert(client.client_id.as_bytes(), to_json(&client).map_err(abort)?)?;
                refile_client_facts(facts, previous.as_ref(), Some(&client))?;
                if previous.is_none() {
                    add_count(counts, CLIENT_COUNT, 1)?;
                }
                let previous_owner = previous.and_then(|c| c.owner_user_id);
                if previous_owner != client.owner_user_id {
                    if let Some(old) = &previous_owner {
                        owners.remove(owner_key(old, &client.client_id))?;
                    }
                }
                if let Some(owner) = &client.owner_user_id {
                    owners.insert(owner_key(owner, &client.client_id), &[])?;
                }
                Ok(true)
            })
            .map_err(tx_error)
    }

    fn insert_client(&self, client: &ClientRecord) -> Result<bool> {
        self.write_client(client, |previous| previous.is_none())
    }

    fn update_client(&self, client: &ClientRecord) -> Result<bool> {
        self.write_client(client, |previous| previous.is_some())
    }

    fn list_clients(&self) -> Result<Vec<ClientRecord>> {
        Self::list(&self.clients)
    }

    fn clients_page(&self, after: Option<&str>, limit: usize) -> Result<Vec<ClientRecord>> {
        Self::page(&self.clients, after, limit)
    }

    /// Removes the client, if `only_unused` only when it has no `first_used_at`.
    fn delete_client(&self, client_id: &str, only_unused: bool) -> Result<bool> {
        (&self.clients, &self.client_owners, &self.client_facts, &self.counts)
            .transaction(|(clients, owners, facts, counts)| {
                let Some(previous) = clients.get(client_id.as_bytes())? else {
                    return Ok(false);
                };
                let previous = from_json::<ClientRecord>(&previous).map_err(abort)?;
                if only_unused && previous.first_used_at.is_some() {
                    return Ok(false);
                }
                clients.remove(client_id.as_bytes())?;
                refile_client_facts(facts, Some(&previous), None)?;
                add_count(counts, CLIENT_COUNT, -1)?;
                if let Some(owner) = &previous.owner_user_id {
                    owners.remove(owner_key(owner, client_id))?;
                }
                Ok(true)
            })
            .map_err(tx_error)
    }

    fn clients_owned_by(&self, user_id: &str) -> Result<Vec<ClientRecord>> {
        let prefix = owner_key(user_id, "");
        let mut clients = Vec::new();
        for key in self.client_owners.scan_prefix(&prefix).keys() {
            let key = key?;
            if let Some(client) = Self::get(&self.clients, &key[prefix.len()..])? {
                clients.push(client);
            }
        }
        Ok(clients)
    }

    fn mark_client_used(&self, client_id: &str, at: i64) -> Result<bool> {
        (&self.clients, &self.client_facts)
            .transaction(|(clients, facts)| {
                let Some(bytes) = clients.get(client_id.as_bytes())? else {
                    return Ok(false);
                };
                let previous: ClientRecord = from_json(&bytes).map_err(abort)?;
                if previous.first_used_at.is_some() {
                    return Ok(false);
                }
                let client = ClientRecord {
                    first_used_at: Some(at),
                    ..previous.clone()
                };
                clients.insert(client_id.as_bytes(), to_json(&client).map_err(abort)?)?;
                refile_client_facts(facts, Some(&previous), Some(&client))?;
                Ok(true)
            })
            .map_err(tx_error)
    }

    fn longest_client_access_token_ttl(&self) -> Result<Option<u64>> {
        let Some((key, _)) = self.client_facts.scan_prefix(b"t").next_back().transpose()? else {
            return Ok(None);
        };
        Ok(key.get(1..9).and_then(|b| b.try_into().ok()).map(u64::from_be_bytes))
    }

    fn unused_registrations(&self, created_by: i64, limit: usize) -> Result<Vec<ClientRecord>> {
        let end = [b"u", &ordered_time(created_by)[..], &[0xff]].concat();
        let mut clients = Vec::new();
        for key in self.client_facts.range(&b"u"[..]..&end[..]).keys().take(limit) {
            let key = key?;
            // The last byte of `end` sorts after every id's first byte (ids are text).
            if let Some(client) = Self::get(&self.clients, &key[9..])? {
                clients.push(client);
            }
        }
        Ok(clients)
    }
}

impl Trees {
    fn insert_user(&self, user: &UserRecord) -> Result<()> {
        let record = to_json(user)?;
        (&self.users, &self.usernames, &self.counts)
            .transaction(|(users, usernames, counts)| {
                if usernames.get(user.username.as_bytes())?.is_some() {
                    return Err(abort(StoreError::Conflict("username")));
                }
                usernames.insert(user.username.as_bytes(), user.user_id.as_bytes())?;
                if users.insert(user.user_id.as_bytes(), record.clone())?.is_none() {
                    add_count(counts, USER_COUNT, 1)?;
                }
                Ok(())
            })
            .map_err(tx_error)
    }

    fn update_user(&self, user: &UserRecord) -> Result<()> {
        let record = to_json(user)?;
        (&self.users, &self.counts)
            .transaction(|(users, counts)| {
                // One deleted meanwhile comes back (as it always has), and is counted again.
                if users.insert(user.user_id.as_bytes(), record.clone())?.is_none() {
                    add_count(counts, USER_COUNT, 1)?;
                }
                Ok(())
            })
            .map_err(tx_error)
    }

    fn get_user(&self, user_id: &str) -> Result<Option<UserRecord>> {
        Self::get(&self.users, user_id.as_bytes())
    }

    fn get_user_by_name(&self, username: &str) -> Result<Option<UserRecord>> {
        match self.usernames.get(username.as_bytes())? {
            Some(id) => Self::get(&self.users, &id),
            None => Ok(None),
        }
    }

    fn list_users(&self) -> Result<Vec<UserRecord>> {
        let mut users: Vec<UserRecord> = Self::list(&self.users)?;
        users.sort_by(|a, b| a.username.cmp(&b.username));
        Ok(users)
    }

    fn users_page(&self, after: Option<&str>, limit: usize) -> Result<Vec<UserRecord>> {
        Self::page(&self.users, after, limit)
    }

    fn delete_user(&self, user_id: &str) -> Result<bool> {
        (&self.users, &self.usernames, &self.counts)
            .transaction(|(users, usernames, counts)| {
                let Some(bytes) = users.remove(user_id.as_bytes())? else {
                    return Ok(false);
                };
                add_count(counts, USER_COUNT, -1)?;
                let user: UserRecord = from_json(&bytes).map_err(abort)?;
                usernames.remove(user.username.as_bytes())?;
                Ok(true)
            })
            .map_err(tx_error)
    }
}

/// A factor's key: the user, a separator no id contains, the factor.
fn factor_key(user_id: &str, factor_id: &str) -> Vec<u8> {
    [user_id.as_bytes(), &[0], factor_id.as_bytes()].concat()
}

impl Trees {
    fn insert_factor(&self, factor: &FactorRecord) -> Result<bool> {
        let key = factor_key(&factor.user_id, &factor.factor_id);
        Ok(self
            .factors
            .compare_and_swap(key, None::<&[u8]>, Some(to_json(factor)?))?
            .is_ok())
    }

    fn factors_of(&self, user_id: &str) -> Result<Vec<FactorRecord>> {
        let prefix = [user_id.as_bytes(), &[0]].concat();
        self.factors
            .scan_prefix(prefix)
            .values()
            .map(|v| from_json(&v?))
            .collect()
    }

    fn replace_factor(&self, factor: &FactorRecord, expected_revision: u64) -> Result<bool> {
        let key = factor_key(&factor.user_id, &factor.factor_id);
        let new = to_json(factor)?;
        loop {
            let Some(stored) = self.factors.get(&key)? else {
                return Ok(false);
            };
            if from_json::<FactorRecord>(&stored)?.revision != expected_revision {
                return Ok(false);
            }
            // The bytes just read: a write in between makes this fail, and the loop reads again.
            if self
                .factors
                .compare_and_swap(&key, Some(stored), Some(new.clone()))?
                .is_ok()
            {
                return Ok(true);
            }
        }
    }

    fn delete_factor(&self, user_id: &str, factor_id: &str) -> Result<bool> {
        Ok(self.factors.remove(factor_key(user_id, factor_id))?.is_some())
    }

    fn delete_factors_of(&self, user_id: &str) -> Result<u64> {
        let prefix = [user_id.as_bytes(), &[0]].concat();
        let mut removed = 0;
        for key in self.factors.scan_prefix(prefix).keys() {
            if self.factors.remove(key?)?.is_some() {
                removed += 1;
            }
        }
        Ok(removed)
    }
}

impl Trees {
    fn put_code(&self, code_hash: &SecretHash, code: &CodeRecord) -> Result<()> {
        self.codes.insert(code_hash, to_json(code)?)?;
        Ok(())
    }

    fn redeem_code(&self, code_hash: &SecretHash) -> Result<Redemption> {
        // fetch_and_update is one atomic compare-and-swap loop: of two concurrent
        // redemptions exactly one sees the record unredeemed.
        let old = self.codes.fetch_and_update(code_hash, |old| {
            let old = old?;
            match serde_json::from_slice::<CodeRecord>(old) {
                Ok(mut code) => {
                    code.redeemed = true;
                    serde_json::to_vec(&code).ok().or_else(|| Some(old.to_vec()))
                }
                Err(_) => Some(old.to_vec()),
            }
        })?;
        Ok(match old {
            None => Redemption::Unknown,
            Some(bytes) => {
                let code: CodeRecord = from_json(&bytes)?;
                if code.redeemed {
                    Redemption::Replayed(code)
                } else {
                    Redemption::Fresh(code)
                }
            }
        })
    }

    /// The index entries of a grant: (index, key) for each of its three indexes.
    fn grant_index_keys<'t>(&'t self, grant: &GrantRecord) -> [(&'t Tree, Vec<u8>); 4] {
        let id = grant.grant_id.as_bytes();
        [
            (&self.grants_due, due_key(grant.created_at, id)),
            (
                &self.user_grants,
                [&consent_key(&grant.user_id, &grant.client_id)[..], &[0], id].concat(),
            ),
            (&self.grants_by_user, [grant.user_id.as_bytes(), &[0], id].concat()),
            (&self.grants_by_client, [grant.client_id.as_bytes(), &[0], id].concat()),
        ]
    }

    /// Indexes a grant; written before the grant itself, so a listing never misses a stored
    /// grant (an entry whose grant is not there yet is skipped).
    fn index_grant(&self, grant: &GrantRecord) -> Result<()> {
        for (index, key) in self.grant_index_keys(grant) {
            index.insert(key, &[])?;
        }
        Ok(())
    }

    fn put_grant(&self, grant: &GrantRecord) -> Result<()> {
        self.write_grant(grant, true).map(|_| ())
    }

    fn insert_grant(&self, grant: &GrantRecord) -> Result<bool> {
        self.write_grant(grant, false)
    }

    /// Indexes and stores a grant, over one with its id only if `replace`; counts it in or
    /// out as it is live or not. Whether it was stored.
    fn write_grant(&self, grant: &GrantRecord, replace: bool) -> Result<bool> {
        self.index_grant(grant)?;
        let (id, record) = (grant.grant_id.as_bytes(), to_json(grant)?);
        (&self.grants, &self.counts)
            .transaction(|(grants, counts)| {
                let previous = grants.get(id)?;
                if previous.is_some() && !replace {
                    return Ok(false);
                }
                grants.insert(id, record.clone())?;
                let delta = i64::from(!grant.revoked) - i64::from(previous.is_some_and(|p| live_grant(&p)));
                if delta != 0 {
                    add_count(counts, GRANT_COUNT, delta)?;
                }
                Ok(true)
            })
            .map_err(tx_error)
    }

    fn grant_ids(&self, user_id: &str, client_id: &str) -> Result<Vec<String>> {
        let prefix = [&consent_key(user_id, client_id)[..], &[0]].concat();
        self.user_grants
            .scan_prefix(&prefix)
            .keys()
            .map(|key| Ok(String::from_utf8_lossy(&key?[prefix.len()..]).into_owned()))
            .collect()
    }

    fn get_grant(&self, grant_id: &str) -> Result<Option<GrantRecord>> {
        Self::get(&self.grants, grant_id.as_bytes())
    }

    /// Up to `limit` grants of a user and/or a client with ids after `after`, in id order: one
    /// index range (or the grants tree itself, unfiltered), read no further than the page.
    fn grants_page(
        &self,
        user_id: Option<&str>,
        client_id: Option<&str>,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<GrantRecord>> {
        let (index, prefix) = match (user_id, client_id) {
            (Some(user_id), Some(client_id)) => {
                (&self.user_grants, [&consent_key(user_id, client_id)[..], &[0]].concat())
            }
            (Some(user_id), None) => (&self.grants_by_user, [user_id.as_bytes(), &[0]].concat()),
            (None, Some(client_id)) => (&self.grants_by_client, [client_id.as_bytes(), &[0]].concat()),
            (None, None) => return Self::page(&self.grants, after, limit),
        };
        // Grant ids are never empty, so the bare prefix is no key: excluding it starts at the
        // first grant.
        let start = [&prefix[..], after.unwrap_or_default().as_bytes()].concat();
        let range = (std::ops::Bound::Excluded(start), std::ops::Bound::Unbounded);
        let mut grants = Vec::new();
        for key in index.range::<Vec<u8>, _>(range).keys() {
            let key = key?;
            if grants.len() == limit || !key.starts_with(&prefix) {
                break;
            }
            let matches =
                |g: &GrantRecord| user_id.is_none_or(|u| g.user_id == u) && client_id.is_none_or(|c| g.client_id == c);
            match Self::get::<GrantRecord>(&self.grants, &key[prefix.len()..])? {
                Some(grant) if matches(&grant) => grants.push(grant),
                _ => {} // purged since, or an id with a NUL in it: not this listing's
            }
        }
        Ok(grants)
    }

    fn index_audit(&self, entry: &AuditRecord) -> Result<()> {
        for term in entry.terms() {
            self.audit_terms
                .insert([&term[..], entry.id.as_bytes()].concat(), &[])?;
        }
        Ok(())
    }

    /// A page of the trail, newest first: the entries under the filter's term
    /// ([`AuditFilter::term`]) or, with none, the trail itself, read from the page's upper id
    /// down and no further than its lower one.
    fn audit_page(&self, filter: &AuditFilter, before: Option<&str>, limit: usize) -> Result<Vec<AuditRecord>> {
        use std::ops::Bound::{Excluded, Included, Unbounded};
        let (since, upper) = filter.ids(before);
        let prefix = filter.term().map_or_else(Vec::new, |term| term.to_vec());
        let (index, from_key) = match filter.term() {
            Some(_) => (&self.audit_terms, prefix.len()),
            None => (&self.audit, 0),
        };
        let key = |id: &str| [&prefix[..], id.as_bytes()].concat();
        let high = upper.as_deref().map_or_else(
            || match prefix.is_empty() {
                true => Unbounded,
                // Past every id under the term: no UTF-8 text holds the byte 0xff.
                false => Excluded([&prefix[..], &[0xff]].concat()),
            },
            |upper| Excluded(key(upper)),
        );
        let mut page = Vec::new();
        for item in index.range::<Vec<u8>, _>((Included(key(&since)), high)).rev() {
            let (k, v) = item?;
            let entry: AuditRecord = match prefix.is_empty() {
                true => from_json(&v)?,
                false => match Self::get(&self.audit, &k[from_key..])? {
                    Some(entry) => entry,
                    None => continue, // purged since
                },
            };
            if filter.matches(&entry) {
                page.push(entry);
                if page.len() == limit {
                    break;
                }
            }
        }
        Ok(page)
    }

    fn revoke_grant_once(&self, grant_id: &str) -> Result<GrantRevocation> {
        // One transaction, so of concurrent calls exactly one sees the grant live.
        (&self.grants, &self.counts)
            .transaction(|(grants, counts)| {
                let Some(old) = grants.get(grant_id.as_bytes())? else {
                    return Ok(GrantRevocation::Unknown);
                };
                match from_json::<GrantRecord>(&old) {
                    Ok(grant) if !grant.revoked => {
                        let revoked = to_json(&GrantRecord { revoked: true, ..grant }).map_err(abort)?;
                        grants.insert(grant_id.as_bytes(), revoked)?;
                        add_count(counts, GRANT_COUNT, -1)?;
                        Ok(GrantRevocation::Revoked)
                    }
                    // Revoked already, or unreadable (left as it is).
                    _ => Ok(GrantRevocation::WasRevoked),
                }
            })
            .map_err(tx_error)
    }

    fn put_refresh(&self, family: &SecretHash, token: &RefreshRecord) -> Result<()> {
        // The indexes first: a crash in between leaves an entry the purge drops, never a
        // family the purge cannot find.
        if !self.refresh_tokens.contains_key(family)? {
            self.file_family(family, token)?;
        }
        self.refresh_tokens.insert(family, encode_refresh(token))?;
        Ok(())
    }

    /// Lists a new family in the purge's indexes: due when its token expires, and its grant's
    /// family (a spent record from before families yields to a live one).
    fn file_family(&self, family: &[u8], token: &RefreshRecord) -> Result<()> {
        let grant = token.grant_id.as_bytes();
        if token.current == CurrentRefresh::Spent {
            let _ = self
                .grant_families
                .compare_and_swap(grant, None::<&[u8]>, Some(family))?;
        } else {
            self.grant_families.insert(grant, family)?;
        }
        self.refresh_due.insert(due_key(token.expires_at, family), &[])?;
        Ok(())
    }

    fn get_refresh(&self, token_hash: &SecretHash) -> Result<Option<RefreshRecord>> {
        self.refresh_tokens
            .get(token_hash)?
            .map(|v| decode_refresh(&v))
            .transpose()
    }

    fn rotate_refresh(&self, family: &SecretHash, presented: &SecretHash, next: &RefreshRecord) -> Result<Rotation> {
        // One compare-and-swap on the family's record decides the race: of concurrent
        // rotations presenting one token exactly one replaces it. One write per rotation, in
        // place: the family never holds more than one record however often it is refreshed.
        loop {
            let Some(bytes) = self.refresh_tokens.get(family)? else {
                return Ok(Rotation::Unknown);
            };
            let current = decode_refresh(&bytes)?;
            if !current.is_current(family, presented) {
                return Ok(Rotation::Spent(current));
            }
            if self
                .refresh_tokens
                .compare_and_swap(family, Some(bytes), Some(encode_refresh(next)))?
                .is_ok()
            {
                return Ok(Rotation::Rotated);
            }
            // Changed under us: look again.
        }
    }

    fn revoke_access_token(&self, jti: &str, expires_at: i64) -> Result<()> {
        self.revoked_access.insert(jti.as_bytes(), &expires_at.to_be_bytes())?;
        Ok(())
    }

    fn is_access_token_revoked(&self, jti: &str) -> Result<bool> {
        Ok(self.revoked_access.contains_key(jti.as_bytes())?)
    }
}

fn consent_key(user_id: &str, client_id: &str) -> Vec<u8> {
    [user_id.as_bytes(), &[0], client_id.as_bytes()].concat()
}

/// Everything in a data folder, for `tessera db import` (the in-memory counters and scratch
/// values are not kept across restarts anyway, so they are not exported).
pub struct Export {
    pub clients: Vec<ClientRecord>,
    pub users: Vec<UserRecord>,
    pub grants: Vec<GrantRecord>,
    pub consents: Vec<ConsentRecord>,
    pub codes: Vec<(SecretHash, CodeRecord)>,
    pub refresh_tokens: Vec<(SecretHash, RefreshRecord)>,
    pub revoked_access: Vec<(String, i64)>,
    pub sessions: Vec<(SecretHash, SessionRecord)>,
    pub secrets: Vec<(String, SecretHash)>,
    pub audit: Vec<AuditRecord>,
    pub factors: Vec<FactorRecord>,
}

fn hash_key(key: &[u8]) -> Option<SecretHash> {
    key.try_into().ok()
}

impl SledStore {
    /// Reads every record of the folder (the store must not be serving).
    pub fn export(&self) -> Result<Export> {
        let t = &self.trees;
        let values = |tree: &Tree| -> Result<Vec<(::sled::IVec, ::sled::IVec)>> {
            tree.iter().map(|entry| entry.map_err(StoreError::from)).collect()
        };
        let mut export = Export {
            clients: Vec::new(),
            users: Vec::new(),
            grants: Vec::new(),
            consents: Vec::new(),
            codes: Vec::new(),
            refresh_tokens: Vec::new(),
            revoked_access: Vec::new(),
            sessions: Vec::new(),
            secrets: Vec::new(),
            audit: Vec::new(),
            factors: Vec::new(),
        };
        for (_, v) in values(&t.clients)? {
            export.clients.push(from_json(&v)?);
        }
        for (_, v) in values(&t.users)? {
            export.users.push(from_json(&v)?);
        }
        for (_, v) in values(&t.grants)? {
            export.grants.push(from_json(&v)?);
        }
        for (_, v) in values(&t.consents)? {
            export.consents.push(from_json(&v)?);
        }
        for (k, v) in values(&t.codes)? {
            if let Some(hash) = hash_key(&k) {
                export.codes.push((hash, from_json(&v)?));
            }
        }
        for (k, v) in values(&t.refresh_tokens)? {
            if let Some(hash) = hash_key(&k) {
                export.refresh_tokens.push((hash, decode_refresh(&v)?));
            }
        }
        for (k, v) in values(&t.revoked_access)? {
            let expires: [u8; 8] = v.as_ref().try_into().unwrap_or_default();
            export
                .revoked_access
                .push((String::from_utf8_lossy(&k).into_owned(), i64::from_be_bytes(expires)));
        }
        for (k, v) in values(&t.sessions)? {
            // The readiness probe's key is not a session's.
            if let Some(hash) = hash_key(&k) {
                export.sessions.push((hash, from_json(&v)?));
            }
        }
        for (_, v) in values(&t.audit)? {
            export.audit.push(from_json(&v)?);
        }
        for (_, v) in values(&t.factors)? {
            export.factors.push(from_json(&v)?);
        }
        for (k, v) in values(&t.secrets)? {
            if let Some(secret) = hash_key(&v) {
                export.secrets.push((String::from_utf8_lossy(&k).into_owned(), secret));
            }
        }
        Ok(export)
    }
}

impl Trees {
    fn insert_device(&self, device_code_hash: &SecretHash, device: &DeviceRecord) -> Result<bool> {
        let record = to_json(device)?;
        (&self.devices, &self.device_user_codes)
            .transaction(|(devices, user_codes)| {
                if devices.get(device_code_hash)?.is_some() || user_codes.get(device.user_code_hash)?.is_some() {
                    return Ok(false);
                }
                user_codes.insert(&device.user_code_hash[..], &device_code_hash[..])?;
                devices.insert(&device_code_hash[..], record.clone())?;
                Ok(true)
            })
            .map_err(tx_error)
    }

    fn get_device_by_user_code(&self, user_code_hash: &SecretHash) -> Result<Option<(SecretHash, DeviceRecord)>> {
        let Some(device_code_hash) = self.device_user_codes.get(user_code_hash)? else {
            return Ok(None);
        };
        let Some(key) = hash_key(&device_code_hash) else {
            return Ok(None);
        };
        Ok(Self::get(&self.devices, &key)?.map(|device| (key, device)))
    }

    fn update_device(
        &self,
        device_code_hash: &SecretHash,
        update: &(dyn for<'d> Fn(&'d mut DeviceRecord) -> bool + Send + Sync),
    ) -> Result<Option<DeviceRecord>> {
        // A compare-and-swap loop: a record changed by another update since it was read is
        // read again, so every update sees the one before it.
        loop {
            let Some(old) = self.devices.get(device_code_hash)? else {
                return Ok(None);
            };
            let mut device: DeviceRecord = from_json(&old)?;
            if !update(&mut device) {
                return Ok(Some(device));
            }
            let new = to_json(&device)?;
            if self
                .devices
                .compare_and_swap(device_code_hash, Some(&old), Some(new))?
                .is_ok()
            {
                return Ok(Some(device));
            }
        }
    }
}

impl Trees {
    fn put_consent(&self, consent: &ConsentRecord) -> Result<()> {
        self.consents
            .insert(consent_key(&consent.user_id, &consent.client_id), to_json(consent)?)?;
        Ok(())
    }

    fn get_consent(&self, user_id: &str, client_id: &str) -> Result<Option<ConsentRecord>> {
        Self::get(&self.consents, &consent_key(user_id, client_id))
    }

    fn list_consents(&self, user_id: &str) -> Result<Vec<ConsentRecord>> {
        let prefix = [user_id.as_bytes(), &[0]].concat();
        self.consents
            .scan_prefix(prefix)
            .values()
            .map(|v| from_json(&v?))
            .collect()
    }

    fn delete_consent(&self, user_id: &str, client_id: &str) -> Result<()> {
        self.consents.remove(consent_key(user_id, client_id))?;
        Ok(())
    }

    fn delete_consents_for_client(&self, client_id: &str) -> Result<u64> {
        let mut removed = 0;
        for key in self.consents.iter().keys() {
            let key = key?;
            let of_client = key
                .iter()
                .position(|b| *b == 0)
                .is_some_and(|at| &key[at + 1..] == client_id.as_bytes());
            if of_client && self.consents.remove(&key)?.is_some() {
                removed += 1;
            }
        }
        Ok(removed)
    }
}

impl Trees {
    fn put_session(&self, id_hash: &SecretHash, session: &SessionRecord) -> Result<()> {
        self.sessions.insert(id_hash, to_json(session)?)?;
        Ok(())
    }

    fn get_session(&self, id_hash: &SecretHash) -> Result<Option<SessionRecord>> {
        Self::get(&self.sessions, id_hash)
    }

    fn delete_session(&self, id_hash: &SecretHash) -> Result<()> {
        self.sessions.remove(id_hash)?;
        Ok(())
    }
}

impl Trees {
    fn probe_write(&self) -> Result<()> {
        self.sessions.insert(b"\0readiness-probe", &[])?;
        self.sessions.remove(b"\0readiness-probe")?;
        Ok(())
    }

    fn purge_expired(&self, now: i64, access_cutoff: i64, unclaimed_cutoff: i64) -> Result<Purged> {
        let mut purged = Purged::default();
        for entry in self.codes.iter() {
            let (key, value) = entry?;
            let expired = from_json::<CodeRecord>(&value).map_or(true, |c| c.expires_at <= now);
            if expired && remove_if(&self.codes, &key, &value)? {
                purged.codes += 1;
            }
        }
        for entry in self.devices.iter() {
            let (key, value) = entry?;
            let device = from_json::<DeviceRecord>(&value);
            let expired = device.as_ref().map_or(true, |d| d.expires_at <= now);
            if expired && remove_if(&self.devices, &key, &value)? {
                purged.device_authorizations += 1;
                if let Ok(device) = device {
                    // The index entry goes only if it still points here.
                    remove_if(&self.device_user_codes, &device.user_code_hash, &key)?;
                }
            }
        }
        for entry in self.revoked_access.iter() {
            let (key, value) = entry?;
            let expires_at = value.as_ref().try_into().map(i64::from_be_bytes).unwrap_or(i64::MIN);
            if expires_at <= now && remove_if(&self.revoked_access, &key, &value)? {
                purged.revoked_access += 1;
            }
        }
        for entry in self.sessions.iter() {
            let (key, value) = entry?;
            let expired = from_json::<SessionRecord>(&value).map_or(true, |s| s.expires_at <= now);
            if expired && remove_if(&self.sessions, &key, &value)? {
                purged.sessions += 1;
            }
        }
        self.purge_families(now, access_cutoff, &mut purged)?;
        self.purge_grants_without_family(unclaimed_cutoff, &mut purged)?;
        Ok(purged)
    }

    /// Looks at the refresh families due by `now`, oldest first, at most [`PURGE_BATCH`]: one
    /// that cannot be used any more goes, with its grant; one rotated since it was filed is
    /// filed again for when its current token may be purged.
    fn purge_families(&self, now: i64, access_cutoff: i64, purged: &mut Purged) -> Result<()> {
        for key in due_keys(&self.refresh_due, now) {
            let key = key?;
            let family = &key[8..];
            if let Some(value) = self.refresh_tokens.get(family)? {
                match decode_refresh(&value) {
                    // Kept while it may be used, or an access token issued with it may be alive.
                    Ok(record) if record.expires_at > now || record.issued_at > access_cutoff => {
                        let window = now.saturating_sub(access_cutoff);
                        let again = record
                            .expires_at
                            .max(record.issued_at.saturating_add(window))
                            .max(now + 1);
                        self.refresh_due.insert(due_key(again, family), &[])?;
                    }
                    record => {
                        // The grant is listed as due first: if the family's removal lands
                        // and the grant's does not (a crash, an error), the grant is still
                        // found, as one without a family.
                        let grant_id = record.as_ref().ok().map(|r| r.grant_id.as_str());
                        if let Some(grant) = grant_id.map(|id| self.get_grant(id)).transpose()?.flatten() {
                            self.grants_due
                                .insert(due_key(grant.created_at, grant.grant_id.as_bytes()), &[])?;
                        }
                        if !remove_if(&self.refresh_tokens, family, &value)? {
                            continue; // rotated meanwhile: looked at again next time
                        }
                        purged.refresh_tokens += 1;
                        if let Some(grant_id) = grant_id {
                            self.purge_family_grant(grant_id, family, access_cutoff, purged)?;
                        }
                    }
                }
            }
            self.refresh_due.remove(&key)?;
        }
        Ok(())
    }

    /// The grant of a family just purged goes too, unless another family holds it (records
    /// from before families: a spent token's record beside its successor's).
    fn purge_family_grant(&self, grant_id: &str, family: &[u8], access_cutoff: i64, purged: &mut Purged) -> Result<()> {
        match self.grant_families.get(grant_id)? {
            Some(holder) if holder != family => return Ok(()),
            Some(_) => {
                remove_if(&self.grant_families, grant_id.as_bytes(), family)?;
            }
            None => {}
        }
        self.purge_grant(grant_id, access_cutoff, purged)?;
        Ok(())
    }

    /// Looks at the grants created by `access_cutoff` that are due, oldest first, at most
    /// [`PURGE_BATCH`]: one without a refresh family goes; one with a family leaves the list
    /// (it goes with its family).
    fn purge_grants_without_family(&self, access_cutoff: i64, purged: &mut Purged) -> Result<()> {
        for key in due_keys(&self.grants_due, access_cutoff) {
            let key = key?;
            let grant_id = String::from_utf8_lossy(&key[8..]).into_owned();
            let has_family = match self.grant_families.get(grant_id.as_bytes())? {
                Some(family) => self.refresh_tokens.contains_key(family)?,
                None => false,
            };
            if !has_family && !self.purge_grant(&grant_id, access_cutoff, purged)? {
                continue; // changed meanwhile: looked at again next time
            }
            self.grants_due.remove(&key)?;
        }
        Ok(())
    }

    /// Removes a grant created by `access_cutoff`, with its index entries; false if it changed
    /// while being read (it stays, for the next pass).
    fn purge_grant(&self, grant_id: &str, access_cutoff: i64, purged: &mut Purged) -> Result<bool> {
        let Some(value) = self.grants.get(grant_id.as_bytes())? else {
            return Ok(true);
        };
        let Ok(grant) = from_json::<GrantRecord>(&value) else {
            return Ok(true);
        };
        if grant.created_at > access_cutoff {
            return Ok(true);
        }
        let removed = (&self.grants, &self.counts)
            .transaction(|(grants, counts)| {
                if grants.get(grant_id.as_bytes())?.as_deref() != Some(&value[..]) {
                    return Ok(false);
                }
                grants.remove(grant_id.as_bytes())?;
                if !grant.revoked {
                    add_count(counts, GRANT_COUNT, -1)?;
                }
                Ok(true)
            })
            .map_err(tx_error)?;
        if !removed {
            // Listed as due, so the next pass looks again (its family, if any, is gone).
            self.grants_due
                .insert(due_key(grant.created_at, grant_id.as_bytes()), &[])?;
            return Ok(false);
        }
        purged.grants += 1;
        for (index, key) in self.grant_index_keys(&grant) {
            index.remove(key)?;
        }
        self.grant_families.remove(grant_id.as_bytes())?;
        Ok(true)
    }

    fn record_count(&self) -> Result<u64> {
        let trees = [
            &self.clients,
            &self.users,
            &self.usernames,
            &self.codes,
            &self.grants,
            &self.user_grants,
            &self.grants_by_user,
            &self.grants_by_client,
            &self.refresh_tokens,
            &self.revoked_access,
            &self.consents,
            &self.sessions,
            &self.factors,
            &self.client_owners,
            &self.devices,
            &self.device_user_codes,
        ];
        Ok(trees.iter().map(|t| t.len() as u64).sum())
    }

    fn server_secret(&self, name: &str, candidate: &[u8]) -> Result<Vec<u8>> {
        let stored = match self.secrets.compare_and_swap(name, None::<&[u8]>, Some(candidate))? {
            Ok(()) => return Ok(candidate.to_vec()),
            Err(existing) => existing.current,
        };
        let corrupt = || StoreError::Corrupt(serde::de::Error::custom("a server secret is malformed"));
        stored.map(|bytes| bytes.to_vec()).ok_or_else(corrupt)
    }

    fn replace_server_secret(&self, name: &str, expected: &[u8], new: &[u8]) -> Result<bool> {
        Ok(self.secrets.compare_and_swap(name, Some(expected), Some(new))?.is_ok())
    }

    /// [`Trees::counts`]: a few keys read, whatever the data's size.
    fn count_records(&self) -> Result<RecordCounts> {
        let count = |key: &[u8]| -> Result<u64> {
            Ok(self.counts.get(key)?.map_or(0, |bytes| read_count(&bytes)).max(0) as u64)
        };
        Ok(RecordCounts {
            clients: count(CLIENT_COUNT)?,
            users: count(USER_COUNT)?,
            live_grants: count(GRANT_COUNT)?,
        })
    }

    /// Counts a folder's records by reading them all, for [`Trees::counts`].
    fn count_by_scan(&self) -> Result<()> {
        let mut live = 0i64;
        for value in self.grants.iter().values() {
            live += i64::from(live_grant(&value?));
        }
        for (key, count) in [
            (CLIENT_COUNT, self.clients.len() as i64),
            (USER_COUNT, self.users.len() as i64),
            (GRANT_COUNT, live),
        ] {
            self.counts.insert(key, &count.to_be_bytes())?;
        }
        Ok(())
    }

    fn count_active_refresh_tokens(&self, now: i64) -> Result<u64> {
        // A token of a revoked grant is dead although its own record is untouched (revoking
        // a family flips one flag on the grant), so each grant is looked up once.
        let mut grant_live = std::collections::HashMap::new();
        let mut active = 0;
        for value in self.refresh_tokens.iter().values() {
            let record = decode_refresh(&value?)?;
            if record.current == CurrentRefresh::Spent || record.expires_at <= now {
                continue;
            }
            let live = match grant_live.get(&record.grant_id) {
                Some(live) => *live,
                None => {
                    let live = self.get_grant(&record.grant_id)?.is_some_and(|g| !g.revoked);
                    grant_live.insert(record.grant_id, live);
                    live
                }
            };
            if live {
                active += 1;
            }
        }
        Ok(active)
    }
}

#[async_trait]
impl ClientStore for SledStore {
    async fn insert_client(&self, client: &ClientRecord) -> Result<bool> {
        let _turn = self.write_turn().await;
        let written = self.trees.insert_client(client);
        self.client_memo.forget(&client.client_id);
        written
    }
    async fn update_client(&self, client: &ClientRecord) -> Result<bool> {
        let _turn = self.write_turn().await;
        let written = self.trees.update_client(client);
        self.client_memo.forget(&client.client_id);
        written
    }
    async fn get_client(&self, client_id: &str) -> Result<Option<ClientRecord>> {
        let miss = match self.client_memo.get(client_id) {
            Ok(client) => return Ok(Some(client)),
            Err(miss) => miss,
        };
        // Ids no client has are not kept: anyone can ask for any, and a miss decodes nothing.
        let Some(bytes) = self.trees.clients.get(client_id.as_bytes())? else {
            return Ok(None);
        };
        let client: ClientRecord = from_json(&bytes)?;
        self.client_memo.keep(miss, &client, bytes.len());
        Ok(Some(client))
    }
    async fn list_clients(&self) -> Result<Vec<ClientRecord>> {
        self.scan(|t| t.list_clients()).await
    }
    async fn clients_page(&self, after: Option<&str>, limit: usize) -> Result<Vec<ClientRecord>> {
        self.trees.clients_page(after, limit)
    }
    async fn delete_client(&self, client_id: &str) -> Result<bool> {
        let _turn = self.write_turn().await;
        let deleted = self.trees.delete_client(client_id, false);
        self.client_memo.forget(client_id);
        deleted
    }
    async fn delete_unused_client(&self, client_id: &str) -> Result<bool> {
        let _turn = self.write_turn().await;
        let deleted = self.trees.delete_client(client_id, true);
        self.client_memo.forget(client_id);
        deleted
    }
    async fn clients_owned_by(&self, user_id: &str) -> Result<Vec<ClientRecord>> {
        self.trees.clients_owned_by(user_id)
    }
    async fn mark_client_used(&self, client_id: &str, at: i64) -> Result<bool> {
        let _turn = self.write_turn().await;
        let marked = self.trees.mark_client_used(client_id, at);
        self.client_memo.forget(client_id);
        marked
    }
    async fn longest_client_access_token_ttl(&self) -> Result<Option<u64>> {
        self.trees.longest_client_access_token_ttl()
    }
    async fn unused_registrations(&self, created_by: i64, limit: usize) -> Result<Vec<ClientRecord>> {
        self.trees.unused_registrations(created_by, limit)
    }
}

#[async_trait]
impl UserStore for SledStore {
    async fn insert_user(&self, user: &UserRecord) -> Result<()> {
        let _turn = self.write_turn().await;
        self.trees.insert_user(user)
    }
    async fn update_user(&self, user: &UserRecord) -> Result<()> {
        let _turn = self.write_turn().await;
        self.trees.update_user(user)
    }
    async fn get_user(&self, user_id: &str) -> Result<Option<UserRecord>> {
        self.trees.get_user(user_id)
    }
    async fn get_user_by_name(&self, username: &str) -> Result<Option<UserRecord>> {
        self.trees.get_user_by_name(username)
    }
    async fn list_users(&self) -> Result<Vec<UserRecord>> {
        self.scan(|t| t.list_users()).await
    }
    async fn users_page(&self, after: Option<&str>, limit: usize) -> Result<Vec<UserRecord>> {
        self.trees.users_page(after, limit)
    }
    async fn delete_user(&self, user_id: &str) -> Result<bool> {
        let _turn = self.write_turn().await;
        self.trees.delete_user(user_id)
    }
}

#[async_trait]
impl FactorStore for SledStore {
    async fn insert_factor(&self, factor: &FactorRecord) -> Result<bool> {
        let _turn = self.write_turn().await;
        self.trees.insert_factor(factor)
    }
    async fn factors_of(&self, user_id: &str) -> Result<Vec<FactorRecord>> {
        self.trees.factors_of(user_id)
    }
    async fn replace_factor(&self, factor: &FactorRecord, expected_revision: u64) -> Result<bool> {
        let _turn = self.write_turn().await;
        self.trees.replace_factor(factor, expected_revision)
    }
    async fn delete_factor(&self, user_id: &str, factor_id: &str) -> Result<bool> {
        let _turn = self.write_turn().await;
        self.trees.delete_factor(user_id, factor_id)
    }
    async fn delete_factors_of(&self, user_id: &str) -> Result<u64> {
        let _turn = self.write_turn().await;
        self.trees.delete_factors_of(user_id)
    }
}

#[async_trait]
impl GrantStore for SledStore {
    async fn put_code(&self, code_hash: &SecretHash, code: &CodeRecord) -> Result<()> {
        let _turn = self.write_turn().await;
        self.trees.put_code(code_hash, code)
    }
    async fn redeem_code(&self, code_hash: &SecretHash) -> Result<Redemption> {
        let _turn = self.write_turn().await;
        self.trees.redeem_code(code_hash)
    }
    async fn put_grant(&self, grant: &GrantRecord) -> Result<()> {
        let _turn = self.write_turn().await;
        self.trees.put_grant(grant)
    }
    async fn insert_grant(&self, grant: &GrantRecord) -> Result<bool> {
        let _turn = self.write_turn().await;
        self.trees.insert_grant(grant)
    }
    async fn get_grant(&self, grant_id: &str) -> Result<Option<GrantRecord>> {
        self.trees.get_grant(grant_id)
    }
    async fn grants_page(
        &self,
        user_id: Option<&str>,
        client_id: Option<&str>,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<GrantRecord>> {
        self.trees.grants_page(user_id, client_id, after, limit)
    }
    async fn grant_ids(&self, user_id: &str, client_id: &str) -> Result<Vec<String>> {
        self.trees.grant_ids(user_id, client_id)
    }
    async fn revoke_grant_once(&self, grant_id: &str) -> Result<GrantRevocation> {
        let _turn = self.write_turn().await;
        self.trees.revoke_grant_once(grant_id)
    }
    async fn put_refresh(&self, token_hash: &SecretHash, token: &RefreshRecord) -> Result<()> {
        let _turn = self.write_turn().await;
        self.trees.put_refresh(token_hash, token)
    }
    async fn get_refresh(&self, token_hash: &SecretHash) -> Result<Option<RefreshRecord>> {
        self.trees.get_refresh(token_hash)
    }
    async fn rotate_refresh(&self, old: &SecretHash, new: &SecretHash, next: &RefreshRecord) -> Result<Rotation> {
        let _turn = self.write_turn().await;
        self.trees.rotate_refresh(old, new, next)
    }
    async fn revoke_access_token(&self, jti: &str, expires_at: i64) -> Result<()> {
        let _turn = self.write_turn().await;
        self.trees.revoke_access_token(jti, expires_at)
    }
    async fn is_access_token_revoked(&self, jti: &str) -> Result<bool> {
        self.trees.is_access_token_revoked(jti)
    }
}

#[async_trait]
impl DeviceStore for SledStore {
    async fn insert_device(&self, device_code_hash: &SecretHash, device: &DeviceRecord) -> Result<bool> {
        let _turn = self.write_turn().await;
        self.trees.insert_device(device_code_hash, device)
    }
    async fn get_device_by_user_code(&self, user_code_hash: &SecretHash) -> Result<Option<(SecretHash, DeviceRecord)>> {
        self.trees.get_device_by_user_code(user_code_hash)
    }
    async fn update_device(
        &self,
        device_code_hash: &SecretHash,
        update: &(dyn for<'d> Fn(&'d mut DeviceRecord) -> bool + Send + Sync),
    ) -> Result<Option<DeviceRecord>> {
        let _turn = self.write_turn().await;
        self.trees.update_device(device_code_hash, update)
    }
}

#[async_trait]
impl AuditStore for SledStore {
    async fn append_audit(&self, entry: &AuditRecord) -> Result<()> {
        let _turn = self.write_turn().await;
        // Indexed first, so no page misses a stored entry (a term without its entry is skipped).
        self.trees.index_audit(entry)?;
        // Appended only: an id already in the trail is never overwritten.
        let _ = self
            .trees
            .audit
            .compare_and_swap(entry.id.as_bytes(), None::<&[u8]>, Some(to_json(entry)?))?;
        Ok(())
    }
    async fn audit_page(&self, filter: &AuditFilter, before: Option<&str>, limit: usize) -> Result<Vec<AuditRecord>> {
        let (filter, before) = (filter.clone(), before.map(str::to_string));
        self.scan(move |t| t.audit_page(&filter, before.as_deref(), limit))
            .await
    }
    async fn purge_audit(&self, cutoff_ms: i64) -> Result<u64> {
        self.scan_writing(move |t| {
            let cutoff = audit_id(cutoff_ms, "");
            let mut removed = 0;
            for item in t.audit.range(..cutoff.into_bytes()) {
                let (id, value) = item?;
                if let Ok(entry) = from_json::<AuditRecord>(&value) {
                    for term in entry.terms() {
                        t.audit_terms.remove([&term[..], &id].concat())?;
                    }
                }
                t.audit.remove(id)?;
                removed += 1;
            }
            Ok(removed)
        })
        .await
    }
}

#[async_trait]
impl ConsentStore for SledStore {
    async fn put_consent(&self, consent: &ConsentRecord) -> Result<()> {
        let _turn = self.write_turn().await;
        self.trees.put_consent(consent)
    }
    async fn get_consent(&self, user_id: &str, client_id: &str) -> Result<Option<ConsentRecord>> {
        self.trees.get_consent(user_id, client_id)
    }
    async fn list_consents(&self, user_id: &str) -> Result<Vec<ConsentRecord>> {
        self.trees.list_consents(user_id)
    }
    async fn delete_consent(&self, user_id: &str, client_id: &str) -> Result<()> {
        let _turn = self.write_turn().await;
        self.trees.delete_consent(user_id, client_id)
    }
    async fn delete_consents_for_client(&self, client_id: &str) -> Result<u64> {
        let client_id = client_id.to_string();
        self.scan_writing(move |t| t.delete_consents_for_client(&client_id))
            .await
    }
}

#[async_trait]
impl SessionStore for SledStore {
    async fn put_session(&self, id_hash: &SecretHash, session: &SessionRecord) -> Result<()> {
        let _turn = self.write_turn().await;
        self.trees.put_session(id_hash, session)
    }
    async fn get_session(&self, id_hash: &SecretHash) -> Result<Option<SessionRecord>> {
        self.trees.get_session(id_hash)
    }
    async fn delete_session(&self, id_hash: &SecretHash) -> Result<()> {
        let _turn = self.write_turn().await;
        self.trees.delete_session(id_hash)
    }
}

#[async_trait]
impl EphemeralStore for SledStore {
    async fn update_counters(
        &self,
        keys: &[Vec<u8>],
        update: &(dyn for<'c> Fn(&'c mut [Counter]) + Send + Sync),
    ) -> Result<()> {
        self.ephemeral.update_counters(keys, update);
        Ok(())
    }
    async fn remember_once(&self, key: &[u8], expires_at_ms: i64) -> Result<bool> {
        self.ephemeral.remember_once(key, expires_at_ms)
    }

    async fn put_scratch(&self, key: &SecretHash, value: &[u8], expires_at: i64, room: ScratchRoom) -> Result<()> {
        self.ephemeral.put_scratch(key, value, expires_at, room)
    }
    async fn get_scratch(&self, key: &SecretHash) -> Result<Option<Vec<u8>>> {
        Ok(self.ephemeral.get_scratch(key))
    }
}

#[async_trait]
impl Store for SledStore {
    fn durable(&self) -> Durable {
        let commits = self.commits.clone();
        Box::pin(async move { commits.wait_durable().await })
    }
    async fn probe_write(&self) -> Result<()> {
        // While a backup copies the trees, writes wait for it: the store is writable, and
        // readiness must not hang (an orchestrator would restart the node mid-backup).
        match self.writes.try_read() {
            Ok(_turn) => self.trees.probe_write(),
            Err(_) => Ok(()),
        }
    }
    async fn count_active_refresh_tokens(&self, now: i64) -> Result<u64> {
        self.scan(move |t| t.count_active_refresh_tokens(now)).await
    }
    async fn purge_expired(&self, now: i64, access_cutoff: i64, unclaimed_cutoff: i64) -> Result<Purged> {
        self.scan_writing(move |t| t.purge_expired(now, access_cutoff, unclaimed_cutoff))
            .await
    }
    async fn record_count(&self) -> Result<u64> {
        self.trees.record_count()
    }
    /// Every tree, with writes paused meanwhile (reads go on): each write is in the copy
    /// whole or not at all, as after a crash at one moment.
    async fn back_up(&self, to: &Path) -> Result<u64> {
        let turn = self.writes.clone().write_owned().await;
        let (db, to) = (self.db.clone(), to.to_path_buf());
        tokio::task::spawn_blocking(move || {
            let _turn = turn;
            copy_database(&db, &to)
        })
        .await
        .map_err(|e| StoreError::Transaction(format!("the backup failed: {e}")))?
    }
    async fn count_records(&self) -> Result<RecordCounts> {
        self.trees.count_records()
    }
    async fn server_secret(&self, name: &str, candidate: &[u8]) -> Result<Vec<u8>> {
        let _turn = self.write_turn().await;
        self.trees.server_secret(name, candidate)
    }
    async fn replace_server_secret(&self, name: &str, expected: &[u8], new: &[u8]) -> Result<bool> {
        let _turn = self.write_turn().await;
        self.trees.replace_server_secret(name, expected, new)
    }
    async fn upgraded(&self, name: &str) -> Result<bool> {
        Ok(self.trees.meta.contains_key(upgrade_key(name))?)
    }
    async fn mark_upgraded(&self, name: &str) -> Result<()> {
        let _turn = self.write_turn().await;
        self.trees.meta.insert(upgrade_key(name), &[])?;
        Ok(())
    }
}

/// The `meta` key recording a one-time upgrade (apart from the index builds' own names).
fn upgrade_key(name: &str) -> Vec<u8> {
    [b"upgrade:".as_slice(), name.as_bytes()].concat()
}

impl Drop for SledStore {
    fn drop(&mut self) {
        self.commits.stop();
        if let Some(flusher) = self.flusher.take() {
            let _ = flusher.join();
        }
    }
}

/// Group commit: callers take a ticket and wait; one flusher thread flushes repeatedly and
/// publishes the highest ticket each flush covered.
struct GroupCommit {
    /// The last ticket handed out. A ticket is taken after the caller's writes.
    issued: AtomicU64,
    /// The highest ticket the last flush covered, and that flush's error if it failed.
    durable: tokio::sync::watch::Sender<(u64, Option<String>)>,
    /// (work pending, stop requested), guarded for the flusher's condition variable.
    wake: Mutex<(bool, bool)>,
    wake_signal: Condvar,
}

impl GroupCommit {
    fn new() -> GroupCommit {
        GroupCommit {
            issued: AtomicU64::new(0),
            durable: tokio::sync::watch::channel((0, None)).0,
            wake: Mutex::new((false, false)),
            wake_signal: Condvar::new(),
        }
    }

    async fn wait_durable(&self) -> Result<()> {
        let ticket = self.issued.fetch_add(1, Ordering::SeqCst) + 1;
        let mut durable = self.durable.subscribe();
        if let Ok(mut wake) = self.wake.lock() {
            wake.0 = true;
            self.wake_signal.notify_one();
        }
        let outcome = durable
            .wait_for(|(covered, _)| *covered >= ticket)
            .await
            .map_err(|_| StoreError::Transaction("the store is shutting down".into()))?;
        match &outcome.1 {
            None => Ok(()),
            Some(message) => Err(StoreError::Transaction(format!("flush failed: {message}"))),
        }
    }

    fn run_flusher(&self, db: &Db) {
        loop {
            {
                let Ok(mut wake) = self.wake.lock() else { return };
                // Idle, it still flushes every half second, so that writes nobody awaited (a
                // session, a consent) are on disk soon too: sled's own flush thread is off,
                // since it would keep the folder locked for up to that long after a drop.
                let mut idle = false;
                while !wake.0 && !wake.1 && !idle {
                    wake = match self.wake_signal.wait_timeout(wake, IDLE_FLUSH) {
                        Ok((w, timeout)) => {
                            idle = timeout.timed_out();
                            w
                        }
                        Err(_) => return,
                    };
                }
                if wake.1 && !wake.0 {
                    // Closing: leave nothing unflushed behind.
                    let _ = db.flush();
                    return;
                }
                wake.0 = false;
            }
            // Every ticket up to here was taken after its writes, so this flush covers it.
            let covered = self.issued.load(Ordering::SeqCst);
            let failure = db.flush().err().map(|e| e.to_string());
            self.durable.send_replace((covered, failure));
        }
    }

    fn stop(&self) {
        if let Ok(mut wake) = self.wake.lock() {
            wake.1 = true;
            self.wake_signal.notify_one();
        }
    }
}

#[cfg(test)]
mod tests {
    //! What is particular to sled. The contract every backend keeps is tested against sled in
    //! `tests/api/store_contract.rs`.
    use super::*;

    #[test]
    fn refresh_records_round_trip_and_garbage_is_corrupt_not_a_panic() {
        let token = RefreshRecord {
            grant_id: "0123456789abcdef".into(),
            issued_at: -5,
            expires_at: 1 << 40,
            current: CurrentRefresh::Spent,
            dpop_jkt: None,
        };
        let decoded = decode_refresh(&encode_refresh(&token)).unwrap();
        assert_eq!(
            (decoded.grant_id, decoded.issued_at, decoded.expires_at, decoded.current),
            (token.grant_id.clone(), -5, 1 << 40, CurrentRefresh::Spent)
        );
        // A record written before families: format 1, not rotated.
        let mut legacy = vec![1, 0];
        legacy.extend_from_slice(&7i64.to_be_bytes());
        legacy.extend_from_slice(&9i64.to_be_bytes());
        legacy.extend_from_slice(b"g1");
        let read = decode_refresh(&legacy).unwrap();
        assert_eq!((read.current, read.grant_id.as_str()), (CurrentRefresh::First, "g1"));
        for current in [
            CurrentRefresh::First,
            CurrentRefresh::Later([7; 32]),
            CurrentRefresh::Spent,
        ] {
            let plain = RefreshRecord {
                current,
                ..token.clone()
            };
            assert_eq!(decode_refresh(&encode_refresh(&plain)).unwrap(), plain);
            let bound = RefreshRecord {
                dpop_jkt: Some("NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs".into()),
                ..plain
            };
            assert_eq!(decode_refresh(&encode_refresh(&bound)).unwrap(), bound);
        }
        for garbage in [
            &b""[..],
            b"\x01",
            b"\x02\x00aaaaaaaaaaaaaaaa",
            b"\x01\x07aaaaaaaaaaaaaaaa",
            b"\x02\x00aaaaaaaaaaaaaaaa\x09abc",
            b"\x01\x02aaaaaaaaaaaaaaaa0123456789",
            b"\x03\x00aaaaaaaaaaaaaaaag1",
        ] {
            assert!(matches!(decode_refresh(garbage), Err(StoreError::Corrupt(_))));
        }
    }

    #[test]
    fn a_second_open_of_the_same_folder_is_refused_as_locked() {
        let dir = tempfile::tempdir().unwrap();
        let _first = SledStore::open(dir.path()).unwrap();
        assert!(matches!(SledStore::open(dir.path()), Err(StoreError::Locked(_))));
    }

    fn client(id: &str, owner: Option<&str>) -> ClientRecord {
        ClientRecord {
            client_id: id.into(),
            name: id.into(),
            client_type: ClientType::Public,
            secret_hash: None,
            redirect_uris: vec![],
            grant_types: vec![],
            scopes: vec![],
            resources: vec![],
            access_token_ttl: None,
            refresh_token_ttl: None,
            created_at: 0,
            skip_consent: false,
            owner_user_id: owner.map(str::to_string),
            post_logout_redirect_uris: vec![],
            id_token_signed_response_alg: None,
            admin: false,
            registration_token_hash: None,
            token_endpoint_auth_method: None,
            first_used_at: None,
            jwks: None,
            jwks_uri: None,
            policy: Default::default(),
        }
    }

    #[test]
    fn a_data_folder_without_the_owner_index_gets_one_when_opened() {
        let dir = tempfile::tempdir().unwrap();
        {
            // What an earlier version left: client records, no index, no marker.
            let db = ::sled::open(dir.path()).unwrap();
            let clients = db.open_tree("clients").unwrap();
            for c in [client("a", Some("u1")), client("b", None)] {
                clients.insert(c.client_id.as_bytes(), to_json(&c).unwrap()).unwrap();
            }
            db.flush().unwrap();
        }
        let store = open_when_released(dir.path()).unwrap();
        let owned = store.trees.clients_owned_by("u1").unwrap();
        assert_eq!(owned.iter().map(|c| c.client_id.as_str()).collect::<Vec<_>>(), ["a"]);
    }

    #[test]
    fn a_data_folder_from_before_the_counts_is_counted_once_then_kept_counting() {
        let dir = tempfile::tempdir().unwrap();
        let grant = |id: &str, revoked: bool| GrantRecord {
            grant_id: id.into(),
            client_id: "a".into(),
            user_id: "u1".into(),
            scope: "read".into(),
            audience: String::new(),
            auth_time: 1,
            created_at: 1,
            revoked,
            amr: vec![],
        };
        {
            // What an earlier version left: records, no counts, no format.
            let db = ::sled::open(dir.path()).unwrap();
            let clients = db.open_tree("clients").unwrap();
            for c in [client("a", Some("u1")), client("b", None)] {
                clients.insert(c.client_id.as_bytes(), to_json(&c).unwrap()).unwrap();
            }
            db.open_tree("users").unwrap().insert(b"u1", &b"{}"[..]).unwrap();
            let grants = db.open_tree("grants").unwrap();
            for g in [grant("g1", false), grant("g2", true), grant("g3", false)] {
                grants.insert(g.grant_id.as_bytes(), to_json(&g).unwrap()).unwrap();
            }
            grants.insert(b"g4", &b"unreadable"[..]).unwrap();
            db.flush().unwrap();
        }
        let store = open_when_released(dir.path()).unwrap();
        let counts = |clients, users, live_grants| RecordCounts {
            clients,
            users,
            live_grants,
        };
        assert_eq!(store.trees.count_records().unwrap(), counts(2, 1, 2));
        store.trees.insert_grant(&grant("g5", false)).unwrap();
        assert_eq!(store.trees.revoke_grant_once("g1").unwrap(), GrantRevocation::Revoked);
        assert_eq!(
            store.trees.revoke_grant_once("g4").unwrap(),
            GrantRevocation::WasRevoked
        );
        store.trees.delete_client("b", false).unwrap();
        assert_eq!(store.trees.count_records().unwrap(), counts(1, 1, 2));
        drop(store);
        // Counted once: a later open reads the counts as they are, it does not count again.
        {
            let db = open_raw(dir.path());
            db.open_tree("counts")
                .unwrap()
                .insert(USER_COUNT, &7i64.to_be_bytes())
                .unwrap();
            db.flush().unwrap();
        }
        let store = open_when_released(dir.path()).unwrap();
        assert_eq!(store.trees.count_records().unwrap(), counts(1, 7, 2));
    }

    /// Opens the folder once sled's background threads have let go of its lock, a moment
    /// after the database that held it was dropped.
    fn open_when_released(dir: &Path) -> Result<SledStore> {
        for _ in 0..100 {
            match SledStore::open(dir) {
                Err(StoreError::Locked(_)) => std::thread::sleep(std::time::Duration::from_millis(20)),
                other => return other,
            }
        }
        panic!("the folder stays locked");
    }

    #[test]
    fn a_folder_of_a_later_format_is_refused_and_left_as_it_was() {
        let dir = tempfile::tempdir().unwrap();
        drop(SledStore::open(dir.path()).unwrap());
        {
            let db = open_raw(dir.path());
            let meta = db.open_tree("meta").unwrap();
            assert_eq!(meta.get(FORMAT_KEY).unwrap().unwrap().as_ref(), FORMAT.to_be_bytes());
            // What a later version would leave: its own format, and an index this one builds
            // (its marker removed to see whether this binary touches the folder).
            meta.insert(FORMAT_KEY, &(FORMAT + 1).to_be_bytes()).unwrap();
            meta.remove(b"client-owner-index").unwrap();
            assert!(db.drop_tree("counts").unwrap());
            db.flush().unwrap();
        }
        match open_when_released(dir.path()) {
            Err(StoreError::SchemaTooNew(found, known)) => assert_eq!((found, known), (FORMAT + 1, FORMAT)),
            other => panic!("a later format must be refused, got {:?}", other.map(|_| ())),
        }
        let db = open_raw(dir.path());
        let meta = db.open_tree("meta").unwrap();
        assert_eq!(
            meta.get(FORMAT_KEY).unwrap().unwrap().as_ref(),
            (FORMAT + 1).to_be_bytes()
        );
        assert!(meta.get(b"client-owner-index").unwrap().is_none(), "nothing was built");
        assert!(
            !db.tree_names().iter().any(|name| name.as_ref() == b"counts"),
            "no tree was created"
        );
    }

    /// The folder opened by sled itself, as another version of Tessera would.
    fn open_raw(dir: &Path) -> ::sled::Db {
        for _ in 0..100 {
            match ::sled::open(dir) {
                Ok(db) => return db,
                Err(_) => std::thread::sleep(std::time::Duration::from_millis(20)),
            }
        }
        panic!("the folder stays locked");
    }

    #[test]
    fn remembered_keys_are_never_dropped_to_make_room_new_ones_are_refused() {
        let ephemeral = Ephemeral::default();
        let live = crate::clock::now_ms() + 60_000;
        for i in 0..MAX_ONCE as u64 {
            assert!(ephemeral.remember_once(&i.to_be_bytes(), live).unwrap());
        }
        assert!(matches!(
            ephemeral.remember_once(b"one more", live),
            Err(StoreError::Full { .. })
        ));
        assert!(
            !ephemeral.remember_once(&0u64.to_be_bytes(), live).unwrap(),
            "the first is still there"
        );
    }

    #[test]
    fn a_remembered_key_is_refused_until_it_expires_then_forgotten_with_its_second() {
        let ephemeral = Ephemeral::default();
        let now = crate::clock::now_ms();
        assert!(ephemeral.remember_once(b"proof", now + 1_500).unwrap());
        assert!(!ephemeral.remember_once(b"proof", now + 60_000).unwrap(), "a replay");
        assert!(ephemeral.remember_once(b"other", now + 1_500).unwrap());
        let table = ephemeral.once.lock().unwrap();
        assert_eq!(table.by_second.len(), 1, "both keys wait in one second's queue");
        assert!(
            table.until.values().all(|until| *until == now + 1_500),
            "kept to the millisecond"
        );
        drop(table);
        // Once their second has passed, both are forgotten, queue and all.
        ephemeral.once.lock().unwrap().forget_expired(now + 3_000);
        assert!(ephemeral.once.lock().unwrap().until.is_empty());
        assert!(ephemeral.once.lock().unwrap().by_second.is_empty());
        // A key whose time is over is accepted, kept nowhere, and may be remembered again.
        assert!(ephemeral.remember_once(b"late", now - 1).unwrap());
        assert!(ephemeral.once.lock().unwrap().until.is_empty());
        assert!(ephemeral.remember_once(b"late", now + 60_000).unwrap());
        assert!(!ephemeral.remember_once(b"late", now + 60_000).unwrap());
    }

    #[test]
    fn the_counter_table_stays_bounded() {
        let ephemeral = Ephemeral::default();
        let far = crate::clock::now_ms() + 3_600_000;
        for i in 0..(MAX_COUNTERS + 50) {
            let key = (i as u64).to_be_bytes().to_vec();
            ephemeral.update_counters(&[key], &|counters: &mut [Counter]| {
                counters[0] = Counter {
                    failures: 1,
                    last_failure_ms: 1,
                    locked_until_ms: 0,
                    expires_at_ms: far + i as i64,
                };
            });
        }
        let len = ephemeral.counters.lock().unwrap().len();
        assert!(len <= MAX_COUNTERS, "{len}");
        // The counters that expire last are the ones kept.
        let newest = ((MAX_COUNTERS + 49) as u64).to_be_bytes().to_vec();
        assert!(ephemeral.counters.lock().unwrap().contains_key(&newest));
    }
}
