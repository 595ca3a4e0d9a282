//! Documents other parties publish at a URL for Tessera to read: Client ID Metadata Documents
//! (a client identified by the URL of its metadata) and clients' key sets (`jwks_uri`).
//!
//! They are fetched through [`crate::outbound`] (https only, no redirects, public addresses
//! only, connect and total timeouts, a capped body) and cached in memory on each node:
//!
//! - each [`Kind`] has its own cache, size limit and shape limits, so a 16 KB key set is never
//!   read as a 5 KB metadata document;
//! - a document's shape (nesting depth, number of values) is checked on its bytes before it is
//!   parsed, and only a document its reader found usable is cached. The cache keeps the bytes
//!   as fetched, never a parsed JSON tree (which costs up to a hundred times the text), and is
//!   bounded in entries and in bytes: when full, stale entries go first, then the least
//!   recently used;
//! - a document is fresh for its `Cache-Control: max-age`, held within `[min_ttl, max_ttl]`
//!   (`no-store` and `no-cache` count as 0, so `min_ttl`): the lower bound is what stops a
//!   publisher from making the server fetch on every request;
//! - a failed fetch is never cached; while a refetch fails, the last good copy keeps serving
//!   for at most `stale_ttl` past its freshness;
//! - concurrent requests for one URL share one fetch (and its outcome);
//! - fetching a URL not cached is budgeted (token buckets) per host and whoever asks (the
//!   caller's address), per host overall (ten times that), and per caller over every host
//!   (three times that: a wildcard DNS name makes hosts free), so one client, even one naming
//!   a new URL on every request, cannot make the server fetch in a loop, and one visitor
//!   naming junk URLs on a host spends only their own share of its budget, not that of the
//!   real clients published there; refreshing a cached document is not budgeted;
//! - a caller may ask for a document to be fetched again before it expires (a client's key
//!   set, when no cached key verifies its assertion), at most once per `min_ttl`: anyone can
//!   send a bad assertion, and must not be able to make the server fetch for each;
//! - at most [`MAX_CONCURRENT_FETCHES`] fetches of new URLs run at once, at most
//!   [`MAX_FETCHES_PER_HOST`] of them to one host and [`MAX_FETCHES_PER_CALLER`] for one
//!   caller (a host that answers slowly cannot hold every place); refreshes and registered
//!   clients' key sets have [`MAX_KNOWN_FETCHES`] places of their own; no connection outlives
//!   its fetch;
//! - a stale copy serves only while its publisher cannot be reached (or we are too busy to
//!   ask): a document its publisher withdrew (4xx) or made unusable leaves the cache at once;
//! - why a fetch failed (a name that does not resolve, a refused connection, a TLS error) is
//!   logged, not told: a visitor could otherwise map internal names and ports through us.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;
use tokio::sync::OnceCell;

use crate::outbound::{Outbound, OutboundPolicy};
use crate::rate_limit::{KeyDigest, Rate, RateLimiter};

/// Fetches of URLs not cached, named by anyone, running at once over every host: what bounds
/// sockets and memory for fetches.
pub const MAX_CONCURRENT_FETCHES: usize = 32;
/// Fetches of documents cached before (refreshes) and of registered clients' key sets, which
/// have places of their own: a flood of new URLs cannot stop a known client's keys from being
/// read.
pub const MAX_KNOWN_FETCHES: usize = 8;
/// Fetches running at once to one host (and port), and for one caller.
pub const MAX_FETCHES_PER_HOST: usize = 4;
pub const MAX_FETCHES_PER_CALLER: usize = 4;
/// How long a caller told the fetch places are taken should wait.
pub const BUSY_RETRY_AFTER: Duration = Duration::from_secs(2);
/// How long a fetch waits for one of those places before it is refused.
const FETCH_QUEUE_WAIT: Duration = Duration::from_secs(2);
/// What a cache entry costs besides its URL and body: the entry, the table's slot, and the
/// allocator's rounding of the two allocations.
pub const ENTRY_OVERHEAD_BYTES: usize = 192;

/// What a document is, which fixes its limits and its cache.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// A Client ID Metadata Document.
    ClientMetadata,
    /// A client's JWK Set, at its `jwks_uri`.
    KeySet,
}

/// A kind's limits.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// The largest document read.
    pub max_bytes: usize,
    /// The deepest nesting of objects and arrays.
    pub max_depth: usize,
    /// The most objects, arrays and values, counted on the text before parsing.
    pub max_values: usize,
    /// Documents cached at most.
    pub max_entries: usize,
    /// Bytes the cache holds at most (URLs, bodies and [`ENTRY_OVERHEAD_BYTES`] each).
    pub max_cache_bytes: usize,
}

impl Kind {
    pub const fn limits(self) -> Limits {
        match self {
            // The draft suggests 5 KB. Metadata nests three deep at most (an inline `jwks`
            // with a certificate chain: object, keys, key, x5c).
            Kind::ClientMetadata => Limits {
                max_bytes: 5 * 1024,
                max_depth: 6,
                max_values: 600,
                max_entries: 10_000,
                max_cache_bytes: 16 << 20,
            },
            // Ten keys, with certificate chains.
            Kind::KeySet => Limits {
                max_bytes: 16 * 1024,
                max_depth: 5,
                max_values: 600,
                max_entries: 2_000,
                max_cache_bytes: 8 << 20,
            },
        }
    }

    fn name(self) -> &'static str {
        match self {
            Kind::ClientMetadata => "client metadata document",
            Kind::KeySet => "key set",
        }
    }
}

/// How documents are fetched and cached.
#[derive(Clone, Debug)]
pub struct DocumentPolicy {
    /// The shortest time a fetched document is used before it is fetched again.
    pub min_ttl: Duration,
    /// The longest, whatever its `Cache-Control` says.
    pub max_ttl: Duration,
    /// How long past its freshness a copy may serve while refetches fail.
    pub stale_ttl: Duration,
    /// Fetches of new URLs per host and caller address (ten times that per host, three times
    /// that per caller over all hosts): what a flood of distinct URLs can cost.
    pub fetches_per_host: Rate,
}

impl Default for DocumentPolicy {
    fn default() -> Self {
        DocumentPolicy {
            min_ttl: Duration::from_secs(60),
            max_ttl: Duration::from_secs(24 * 3600),
            stale_ttl: Duration::from_secs(3600),
            // 30 a minute, 10 at once.
            fetches_per_host: Rate {
                per_second: 0.5,
                burst: 10.0,
            },
        }
    }
}

/// Why a document could not be had. Each says what a client's developer needs to fix, and no
/// more than the document's own server would tell anyone.
#[derive(Clone, Debug, thiserror::Error, PartialEq, Eq)]
pub enum DocumentError {
    /// The fetch failed before an answer came (its reason is logged, not told).
    #[error("{url} could not be fetched (no answer from a public address over https)")]
    Fetch { url: String },
    #[error("{url} answered HTTP {status}, not 200")]
    Status { url: String, status: u16 },
    #[error("{url} is not served as JSON (Content-Type application/json)")]
    NotJson { url: String },
    #[error("{url} is larger than {limit} bytes")]
    TooLarge { url: String, limit: usize },
    #[error("{url} is not a JSON object: {reason}")]
    Invalid { url: String, reason: String },
    /// Fetched and well-formed, but refused by its reader (a metadata document that is not a
    /// usable client, a key set with no usable key).
    #[error("{0}")]
    Unusable(String),
    #[error("too many documents fetched from {host} lately; try again in a minute")]
    RateLimited { host: String, retry_after: Duration },
    #[error("too many documents are being fetched now; try again in a moment")]
    Busy,
    #[error("too many documents are being fetched from {host} now; try again in a moment")]
    HostBusy { host: String },
}

impl DocumentError {
    /// Whether the error says only that Tessera cannot fetch now (its places or budgets are
    /// taken, the publisher does not answer): a stale copy may serve, and the caller is told
    /// to retry rather than that the client is bad.
    pub fn is_transient(&self) -> bool {
        match self {
            DocumentError::Fetch { .. }
            | DocumentError::Busy
            | DocumentError::HostBusy { .. }
            | DocumentError::RateLimited { .. } => true,
            DocumentError::Status { status, .. } => *status >= 500,
            _ => false,
        }
    }

    /// How long to wait, for the errors that are Tessera's limits rather than the document's.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            DocumentError::Busy | DocumentError::HostBusy { .. } => Some(BUSY_RETRY_AFTER),
            DocumentError::RateLimited { retry_after, .. } => Some(*retry_after),
            _ => None,
        }
    }
}

/// Who a fetch is for, which decides the places it may take.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Origin {
    /// A URL anyone may name (a client id, a document's `jwks_uri`).
    Named,
    /// A registered client's `jwks_uri`: stored by an operator or a (rate-limited) registration.
    Registered,
}

/// A document as cached: its bytes, and when to fetch it again.
struct Entry {
    body: Arc<[u8]>,
    fetched_at: Instant,
    fresh_until: Instant,
    stale_until: Instant,
    used_at: Instant,
}

type Outcome = Result<Arc<[u8]>, DocumentError>;
/// A fetch in flight: the URL, and whether it is read as a key set.
type FetchKey = (String, bool);

/// Whether a fetched document is one its reader can use (`Err` says why not).
pub type Usable<'a> = &'a (dyn Fn(&Value) -> Result<(), String> + Send + Sync);

/// One kind's cache: bounded in entries and bytes.
struct Shelf {
    limits: Limits,
    entries: HashMap<String, Entry>,
    bytes: usize,
}

impl Shelf {
    fn new(limits: Limits) -> Shelf {
        Shelf {
            limits,
            entries: HashMap::new(),
            bytes: 0,
        }
    }

    fn cost(url: &str, body: &[u8]) -> usize {
        url.len() + body.len() + ENTRY_OVERHEAD_BYTES
    }

    fn remove(&mut self, url: &str) {
        if let Some(old) = self.entries.remove(url) {
            self.bytes -= Self::cost(url, &old.body);
        }
    }

    /// Keeps `entry`, first making room: stale entries leave, then the least recently used.
    fn insert(&mut self, url: &str, entry: Entry, now: Instant) {
        self.remove(url);
        let cost = Self::cost(url, &entry.body);
        let full = |shelf: &Shelf| {
            shelf.entries.len() >= shelf.limits.max_entries || shelf.bytes + cost > shelf.limits.max_cache_bytes
        };
        if full(self) {
            let stale: Vec<String> = self
                .entries
                .iter()
                .filter(|(_, e)| e.stale_until <= now)
                .map(|(k, _)| k.clone())
                .collect();
            for url in stale {
                self.remove(&url);
            }
        }
        if full(self) {
            let mut by_use: Vec<(Instant, String)> = self.entries.iter().map(|(k, e)| (e.used_at, k.clone())).collect();
            by_use.sort_unstable();
            for (_, url) in by_use {
                if !full(self) {
                    break;
                }
                self.remove(&url);
            }
        }
        self.bytes += cost;
        self.entries.insert(url.to_string(), entry);
    }
}

/// The caches, with the fetches now in flight.
pub struct DocumentCache {
    outbound: Outbound,
    policy: DocumentPolicy,
    metadata: Mutex<Shelf>,
    key_sets: Mutex<Shelf>,
    in_flight: Mutex<HashMap<FetchKey, Arc<OnceCell<Outcome>>>>,
    per_caller_host: RateLimiter,
    per_host: RateLimiter,
    per_caller: RateLimiter,
    fetching: tokio::sync::Semaphore,
    fetching_known: tokio::sync::Semaphore,
    fetching_per_host: Places,
    fetching_per_caller: Places,
}

impl DocumentCache {
    pub fn new(outbound: OutboundPolicy, policy: DocumentPolicy) -> DocumentCache {
        let scaled = |times: f64| Rate {
            per_second: policy.fetches_per_host.per_second * times,
            burst: policy.fetches_per_host.burst * times,
        };
        DocumentCache {
            outbound: Outbound::new(outbound),
            per_caller_host: RateLimiter::new(policy.fetches_per_host),
            per_host: RateLimiter::new(scaled(10.0)),
            per_caller: RateLimiter::new(scaled(3.0)),
            policy,
            metadata: Mutex::new(Shelf::new(Kind::ClientMetadata.limits())),
            key_sets: Mutex::new(Shelf::new(Kind::KeySet.limits())),
            in_flight: Mutex::new(HashMap::new()),
            fetching: tokio::sync::Semaphore::new(MAX_CONCURRENT_FETCHES),
            fetching_known: tokio::sync::Semaphore::new(MAX_KNOWN_FETCHES),
            fetching_per_host: Places::new(MAX_FETCHES_PER_HOST),
            fetching_per_caller: Places::new(MAX_FETCHES_PER_CALLER),
        }
    }

    fn shelf(&self, kind: Kind) -> &Mutex<Shelf> {
        match kind {
            Kind::ClientMetadata => &self.metadata,
            Kind::KeySet => &self.key_sets,
        }
    }

    /// The JSON object of `kind` at `url` (https): from the cache while fresh, else fetched
    /// (one fetch for all concurrent callers) and cached if `usable` accepts it, else the stale
    /// copy if the fetch failed for a passing reason and one is still allowed to serve.
    /// `caller` (an address key, when known) is who a fetch of a new URL is counted against;
    /// `origin` says whose URL it is.
    pub async fn get(
        &self,
        kind: Kind,
        url: &str,
        caller: Option<&str>,
        origin: Origin,
        usable: Usable<'_>,
    ) -> Result<Value, DocumentError> {
        let now = Instant::now();
        let cached = {
            let mut shelf = lock(self.shelf(kind));
            shelf.entries.get_mut(url).filter(|e| e.fresh_until > now).map(|entry| {
                entry.used_at = now;
                entry.body.clone()
            })
        };
        if let Some(body) = cached {
            return parse(url, &body);
        }
        let waiting = InFlight {
            cache: self,
            key: (url.to_string(), kind == Kind::KeySet),
            cell: lock(&self.in_flight)
                .entry((url.to_string(), kind == Kind::KeySet))
                .or_default()
                .clone(),
        };
        let outcome = waiting
            .cell
            .get_or_init(|| self.fetch_and_keep(kind, url, caller, origin, usable))
            .await
            .clone();
        drop(waiting);
        let body = match outcome {
            Ok(body) => body,
            Err(error) if !error.is_transient() => {
                // The publisher answered: the document is gone or no longer usable.
                lock(self.shelf(kind)).remove(url);
                return Err(error);
            }
            Err(error) => {
                let stale = lock(self.shelf(kind))
                    .entries
                    .get(url)
                    .filter(|e| e.stale_until > Instant::now())
                    .map(|e| e.body.clone());
                match stale {
                    Some(body) => {
                        tracing::warn!(%error, "serving a stale copy of a client document");
                        body
                    }
                    None => return Err(error),
                }
            }
        };
        parse(url, &body)
    }

    /// Marks `url` for fetching again at the next [`DocumentCache::get`] (when a client's
    /// keys did not verify its assertion: it may have rotated them), unless it was fetched
    /// less than `min_ttl` ago. Returns whether it will be fetched again.
    pub fn refresh_soon(&self, kind: Kind, url: &str) -> bool {
        let now = Instant::now();
        match lock(self.shelf(kind)).entries.get_mut(url) {
            Some(entry) if now.duration_since(entry.fetched_at) >= self.policy.min_ttl => {
                entry.fresh_until = now;
                true
            }
            Some(_) => false,
            None => true,
        }
    }

    async fn fetch_and_keep(
        &self,
        kind: Kind,
        url: &str,
        caller: Option<&str>,
        origin: Origin,
        usable: Usable<'_>,
    ) -> Outcome {
        let parsed = url::Url::parse(url).ok();
        let host = parsed
            .as_ref()
            .and_then(|u| u.host_str().map(str::to_string))
            .unwrap_or_default();
        let host_and_port = format!(
            "{host}:{}",
            parsed.as_ref().and_then(url::Url::port_or_known_default).unwrap_or(0)
        );
        // A cached document (a client that exists) is refreshed whatever the budgets, which
        // only new URLs spend.
        let known = lock(self.shelf(kind)).entries.contains_key(url);
        if !known {
            let caller = caller.unwrap_or_default();
            let budgets = self
                .per_caller
                .check(caller)
                .and_then(|_| self.per_caller_host.check(&format!("{host}\0{caller}")))
                .and_then(|_| self.per_host.check(&host));
            if let Err(retry_after) = budgets {
                return Err(DocumentError::RateLimited { host, retry_after });
            }
        }
        let _host_place = self
            .fetching_per_host
            .take(&host_and_port)
            .ok_or_else(|| DocumentError::HostBusy { host: host.clone() })?;
        // Known documents and registered key sets have places of their own; new URLs named by
        // anyone share the rest, a few per caller.
        let (places, _caller_place) = if known || origin == Origin::Registered {
            (&self.fetching_known, None)
        } else {
            let place = self
                .fetching_per_caller
                .take(caller.unwrap_or_default())
                .ok_or(DocumentError::Busy)?;
            (&self.fetching, Some(place))
        };
        let _place = tokio::time::timeout(FETCH_QUEUE_WAIT, places.acquire())
            .await
            .map_err(|_| DocumentError::Busy)?
            .map_err(|_| DocumentError::Busy)?;
        let (body, max_age) = self.fetch(kind, url).await?;
        let document = parse(url, &body)?;
        usable(&document).map_err(DocumentError::Unusable)?;
        let ttl = max_age.clamp(self.policy.min_ttl, self.policy.max_ttl);
        let now = Instant::now();
        let entry = Entry {
            body: body.clone(),
            fetched_at: now,
            fresh_until: now + ttl,
            stale_until: now + ttl + self.policy.stale_ttl,
            used_at: now,
        };
        lock(self.shelf(kind)).insert(url, entry, now);
        Ok(body)
    }

    async fn fetch(&self, kind: Kind, url: &str) -> Result<(Arc<[u8]>, Duration), DocumentError> {
        let limits = kind.limits();
        let fetched = self
            .outbound
            .get(url, true, None, "application/json", limits.max_bytes)
            .await
            .map_err(|e| {
                tracing::info!(%url, error = %e, "fetching a {} failed", kind.name());
                DocumentError::Fetch { url: url.to_string() }
            })?;
        if fetched.status != 200 {
            return Err(DocumentError::Status {
                url: url.to_string(),
                status: fetched.status,
            });
        }
        if fetched.truncated {
            return Err(DocumentError::TooLarge {
                url: url.to_string(),
                limit: limits.max_bytes,
            });
        }
        let media_type = fetched
            .content_type
            .as_deref()
            .and_then(|t| t.split(';').next())
            .map(|t| t.trim().to_ascii_lowercase())
            .unwrap_or_default();
        if media_type != "application/json" && !media_type.ends_with("+json") {
            return Err(DocumentError::NotJson { url: url.to_string() });
        }
        check_shape(&fetched.body, &limits).map_err(|reason| DocumentError::Invalid {
            url: url.to_string(),
            reason,
        })?;
        Ok((fetched.body.into(), max_age(fetched.cache_control.as_deref())))
    }
}

/// The JSON object in `body`.
fn parse(url: &str, body: &[u8]) -> Result<Value, DocumentError> {
    let invalid = |reason: String| DocumentError::Invalid {
        url: url.to_string(),
        reason,
    };
    let document: Value = serde_json::from_slice(body).map_err(|e| invalid(e.to_string()))?;
    if !document.is_object() {
        return Err(invalid("the document must be an object".into()));
    }
    Ok(document)
}

/// Refuses text nested deeper than `limits.max_depth`, or holding more than
/// `limits.max_values` objects, arrays and values, before anything is parsed: a parsed JSON
/// tree costs up to a hundred times its text, and a few kilobytes of `[[[[` would cost
/// megabytes. Counts on the raw text (strings skipped, escapes included), so malformed JSON
/// passes here and fails at the parser.
pub fn check_shape(text: &[u8], limits: &Limits) -> Result<(), String> {
    let (mut depth, mut values) = (0usize, 1usize);
    let (mut in_string, mut escaped) = (false, false);
    for &byte in text {
        if in_string {
            match byte {
                _ if escaped => escaped = false,
                b'\\' => escaped = true,
                b'"' => in_string = false,
                _ => {}
            }
            continue;
        }
        match byte {
            b'"' => in_string = true,
            b'{' | b'[' => {
                depth += 1;
                values += 1;
                if depth > limits.max_depth {
                    return Err(format!("it nests deeper than {} levels", limits.max_depth));
                }
            }
            b'}' | b']' => depth = depth.saturating_sub(1),
            b',' => values += 1,
            _ => {}
        }
        if values > limits.max_values {
            return Err(format!("it holds more than {} values", limits.max_values));
        }
    }
    Ok(())
}

/// A caller waiting on a fetch. When the last one stops waiting (the fetch finished, or every
/// caller went away, a browser closing its connection, say), the fetch leaves the in-flight
/// table: nothing stays there for a request nobody waits on.
struct InFlight<'a> {
    cache: &'a DocumentCache,
    key: FetchKey,
    cell: Arc<OnceCell<Outcome>>,
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        let mut in_flight = lock(&self.cache.in_flight);
        let ours = in_flight.get(&self.key).is_some_and(|c| Arc::ptr_eq(c, &self.cell));
        // The table's reference and ours: no one else is waiting.
        if ours && (self.cell.initialized() || Arc::strong_count(&self.cell) <= 2) {
            in_flight.remove(&self.key);
        }
    }
}

/// Fetches running now per key (a host, a caller), each key at most `cap` at once. Keys are
/// digests, and a key leaves when its last fetch ends: the table holds at most
/// [`MAX_CONCURRENT_FETCHES`] keys plus those refused at the global queue.
struct Places {
    cap: usize,
    digest: KeyDigest,
    running: Mutex<HashMap<u64, usize>>,
}

impl Places {
    fn new(cap: usize) -> Places {
        Places {
            cap,
            digest: KeyDigest::new(),
            running: Mutex::new(HashMap::new()),
        }
    }

    fn take(&self, key: &str) -> Option<Place<'_>> {
        let key = self.digest.of(key);
        let mut running = lock(&self.running);
        let count = running.entry(key).or_default();
        if *count >= self.cap {
            return None;
        }
        *count += 1;
        Some(Place { places: self, key })
    }
}

/// One of a key's places, given back when dropped.
struct Place<'a> {
    places: &'a Places,
    key: u64,
}

impl Drop for Place<'_> {
    fn drop(&mut self) {
        let mut running = lock(&self.places.running);
        if let Some(count) = running.get_mut(&self.key) {
            *count -= 1;
            if *count == 0 {
                running.remove(&self.key);
            }
        }
    }
}

/// A `Cache-Control` header's freshness: its `max-age`, or nothing for `no-store`/`no-cache`
/// or when it says nothing.
fn max_age(cache_control: Option<&str>) -> Duration {
    let Some(value) = cache_control else {
        return Duration::ZERO;
    };
    let directives: Vec<String> = value.split(',').map(|d| d.trim().to_ascii_lowercase()).collect();
    if directives.iter().any(|d| d == "no-store" || d == "no-cache") {
        return Duration::ZERO;
    }
    directives
        .iter()
        .find_map(|d| d.strip_prefix("max-age=")?.trim_matches('"').parse().ok())
        .map_or(Duration::ZERO, Duration::from_secs)
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn freshness_comes_from_max_age_unless_caching_is_refused() {
        assert_eq!(max_age(Some("public, max-age=300")), Duration::from_secs(300));
        assert_eq!(max_age(Some("max-age=300, no-store")), Duration::ZERO);
        assert_eq!(max_age(Some("no-cache")), Duration::ZERO);
        assert_eq!(max_age(Some("max-age=abc")), Duration::ZERO);
        assert_eq!(max_age(None), Duration::ZERO);
    }

    #[test]
    fn deep_or_crowded_text_is_refused_before_parsing() {
        let limits = Kind::ClientMetadata.limits();
        let ok = br#"{"a": [1, 2, {"b": "[[[[[[[[[[ \" {{{{{{"}], "jwks": {"keys": [{"x5c": ["x"]}]}}"#;
        assert_eq!(check_shape(ok, &limits), Ok(()));
        let deep = format!("{{\"a\":{}1{}}}", "[".repeat(6), "]".repeat(6));
        assert!(check_shape(deep.as_bytes(), &limits).unwrap_err().contains("deeper"));
        let crowded = format!("{{\"a\":[{}]}}", vec!["1"; 700].join(","));
        assert!(check_shape(crowded.as_bytes(), &limits).unwrap_err().contains("values"));
    }

    fn entry(now: Instant, body: &[u8], stale_in: Duration) -> Entry {
        Entry {
            body: body.into(),
            fetched_at: now,
            fresh_until: now,
            stale_until: now + stale_in,
            used_at: now,
        }
    }

    #[test]
    fn a_full_shelf_drops_stale_then_least_recently_used_entries_and_counts_bytes() {
        let now = Instant::now();
        let mut shelf = Shelf::new(Limits {
            max_entries: 3,
            max_cache_bytes: 3 * (ENTRY_OVERHEAD_BYTES + 101),
            ..Kind::ClientMetadata.limits()
        });
        let body = [b'x'; 100];
        shelf.insert("a", entry(now, &body, Duration::from_secs(60)), now);
        shelf.insert("b", entry(now, &body, Duration::ZERO), now);
        shelf.insert("c", entry(now, &body, Duration::from_secs(60)), now);
        shelf.entries.get_mut("a").unwrap().used_at = now + Duration::from_secs(1);
        shelf.insert("d", entry(now, &body, Duration::from_secs(60)), now);
        assert!(!shelf.entries.contains_key("b"), "the stale one went first");
        shelf.insert("e", entry(now, &body, Duration::from_secs(60)), now);
        assert!(!shelf.entries.contains_key("c"), "then the least recently used");
        assert!(shelf.entries.contains_key("a"));
        assert_eq!(shelf.bytes, 3 * (ENTRY_OVERHEAD_BYTES + 101));
        // A bigger body takes the room of two.
        shelf.insert("f", entry(now, &[b'y'; 250], Duration::from_secs(60)), now);
        assert!(shelf.bytes <= shelf.limits.max_cache_bytes);
        assert_eq!(
            shelf.bytes,
            shelf
                .entries
                .iter()
                .map(|(k, e)| Shelf::cost(k, &e.body))
                .sum::<usize>()
        );
    }
}
