//! Documents other parties publish at a URL for Tessera to read: Client ID Metadata Documents
//! (a client identified by the URL of its metadata) and clients' key sets (`jwks_uri`).
//!
//! They are fetched through [`crate::outbound`] (https only, no redirects, public addresses
//! only, connect and total timeouts, a capped body) and cached in memory on each node:
//!
//! - a document is fresh for its `Cache-Control: max-age`, held within `[min_ttl, max_ttl]`
//!   (`no-store` and `no-cache` count as 0, so `min_ttl`): the lower bound is what stops a
//!   publisher from making the server fetch on every request;
//! - a failed fetch is never cached; while a refetch fails, the last good copy keeps serving
//!   for at most `stale_ttl` past its freshness;
//! - concurrent requests for one URL share one fetch (and its outcome);
//! - fetching a URL not fetched before is budgeted (token buckets) per host and whoever asks
//!   (the caller's address), and per host overall (ten times that), so one client, even one
//!   naming a new URL on every request, cannot make the server fetch in a loop, and one
//!   visitor naming junk URLs on a host spends only their own share of its budget, not that of
//!   the real clients published there; refreshing a document fetched before is not budgeted;
//! - a caller may ask for a document to be fetched again before it expires (a client's key
//!   set, when no cached key verifies its assertion), at most once per `min_ttl`: anyone can
//!   send a bad assertion, and must not be able to make the server fetch for each;
//! - at most [`MAX_CONCURRENT_FETCHES`] fetches run at once, the cache holds a bounded number
//!   of documents, and no connection outlives its fetch.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;
use tokio::sync::OnceCell;

use crate::outbound::{Outbound, OutboundPolicy};
use crate::rate_limit::{Rate, RateLimiter};

/// Documents kept at most.
const MAX_DOCUMENTS: usize = 10_000;
/// Fetches running at once, over every host: what bounds sockets and memory for fetches.
pub const MAX_CONCURRENT_FETCHES: usize = 32;
/// How long a fetch waits for one of those places before it is refused.
const FETCH_QUEUE_WAIT: Duration = Duration::from_secs(2);

/// How documents are fetched and cached.
#[derive(Clone, Debug)]
pub struct DocumentPolicy {
    /// The shortest time a fetched document is used before it is fetched again.
    pub min_ttl: Duration,
    /// The longest, whatever its `Cache-Control` says.
    pub max_ttl: Duration,
    /// How long past its freshness a copy may serve while refetches fail.
    pub stale_ttl: Duration,
    /// Fetches of new URLs per host and caller address (and ten times that per host): what a
    /// flood of distinct URLs on one host can cost.
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

/// Why a document could not be had. Each says what a client's developer needs to fix.
#[derive(Clone, Debug, thiserror::Error, PartialEq, Eq)]
pub enum DocumentError {
    #[error("fetching {url} failed: {reason}")]
    Fetch { url: String, reason: String },
    #[error("{url} answered HTTP {status}, not 200")]
    Status { url: String, status: u16 },
    #[error("{url} is not served as JSON (Content-Type application/json)")]
    NotJson { url: String },
    #[error("{url} is larger than {limit} bytes")]
    TooLarge { url: String, limit: usize },
    #[error("{url} is not a JSON object: {reason}")]
    Invalid { url: String, reason: String },
    #[error("too many documents fetched from {host} lately; try again in a minute")]
    RateLimited { host: String },
    #[error("too many documents are being fetched now; try again in a moment")]
    Busy,
}

struct Entry {
    document: Arc<Value>,
    fetched_at: Instant,
    fresh_until: Instant,
    stale_until: Instant,
}

type Outcome = Result<Arc<Value>, DocumentError>;

/// The cache, with the fetches now in flight.
pub struct DocumentCache {
    outbound: Outbound,
    policy: DocumentPolicy,
    entries: Mutex<HashMap<String, Entry>>,
    in_flight: Mutex<HashMap<String, Arc<OnceCell<Outcome>>>>,
    per_caller: RateLimiter,
    per_host: RateLimiter,
    fetching: tokio::sync::Semaphore,
}

impl DocumentCache {
    pub fn new(outbound: OutboundPolicy, policy: DocumentPolicy) -> DocumentCache {
        DocumentCache {
            outbound: Outbound::new(outbound),
            per_caller: RateLimiter::new(policy.fetches_per_host),
            per_host: RateLimiter::new(Rate {
                per_second: policy.fetches_per_host.per_second * 10.0,
                burst: policy.fetches_per_host.burst * 10.0,
            }),
            policy,
            entries: Mutex::new(HashMap::new()),
            in_flight: Mutex::new(HashMap::new()),
            fetching: tokio::sync::Semaphore::new(MAX_CONCURRENT_FETCHES),
        }
    }

    /// The JSON object at `url` (https), at most `max_body` bytes: from the cache while fresh,
    /// else fetched (one fetch for all concurrent callers), else the stale copy if the fetch
    /// failed and one is still allowed to serve. `caller` (an address key, when known) is who
    /// a fetch of a new URL is counted against.
    pub async fn get(&self, url: &str, max_body: usize, caller: Option<&str>) -> Outcome {
        let now = Instant::now();
        if let Some(entry) = lock(&self.entries).get(url) {
            if entry.fresh_until > now {
                return Ok(entry.document.clone());
            }
        }
        let waiting = InFlight {
            cache: self,
            url,
            cell: lock(&self.in_flight).entry(url.to_string()).or_default().clone(),
        };
        let outcome = waiting
            .cell
            .get_or_init(|| self.fetch_and_keep(url, max_body, caller))
            .await
            .clone();
        drop(waiting);
        match outcome {
            Ok(document) => Ok(document),
            Err(error) => match lock(&self.entries).get(url) {
                Some(entry) if entry.stale_until > Instant::now() => {
                    tracing::warn!(%error, "serving a stale copy of a client document");
                    Ok(entry.document.clone())
                }
                _ => Err(error),
            },
        }
    }

    /// Marks `url` for fetching again at the next [`DocumentCache::get`] (when a client's
    /// keys did not verify its assertion: it may have rotated them), unless it was fetched
    /// less than `min_ttl` ago. Returns whether it will be fetched again.
    pub fn refresh_soon(&self, url: &str) -> bool {
        let now = Instant::now();
        match lock(&self.entries).get_mut(url) {
            Some(entry) if now.duration_since(entry.fetched_at) >= self.policy.min_ttl => {
                entry.fresh_until = now;
                true
            }
            Some(_) => false,
            None => true,
        }
    }

    async fn fetch_and_keep(&self, url: &str, max_body: usize, caller: Option<&str>) -> Outcome {
        let host = url::Url::parse(url)
            .ok()
            .and_then(|u| u.host_str().map(str::to_string))
            .unwrap_or_default();
        // A document fetched before (a client that exists) is refreshed whatever the host's
        // budget, which only new URLs spend.
        let known = lock(&self.entries).contains_key(url);
        if !known {
            let caller_key = format!("{host}\0{}", caller.unwrap_or_default());
            if self.per_caller.check(&caller_key).is_err() || self.per_host.check(&host).is_err() {
                return Err(DocumentError::RateLimited { host });
            }
        }
        let _place = tokio::time::timeout(FETCH_QUEUE_WAIT, self.fetching.acquire())
            .await
            .map_err(|_| DocumentError::Busy)?
            .map_err(|_| DocumentError::Busy)?;
        let (document, max_age) = self.fetch(url, max_body).await?;
        let ttl = max_age.clamp(self.policy.min_ttl, self.policy.max_ttl);
        let now = Instant::now();
        let entry = Entry {
            document: document.clone(),
            fetched_at: now,
            fresh_until: now + ttl,
            stale_until: now + ttl + self.policy.stale_ttl,
        };
        let mut entries = lock(&self.entries);
        if entries.len() >= MAX_DOCUMENTS && !entries.contains_key(url) {
            entries.retain(|_, e| e.stale_until > now);
            if entries.len() >= MAX_DOCUMENTS {
                if let Some(first) = entries
                    .iter()
                    .min_by_key(|(_, e)| e.stale_until)
                    .map(|(k, _)| k.clone())
                {
                    entries.remove(&first);
                }
            }
        }
        entries.insert(url.to_string(), entry);
        Ok(document)
    }

    async fn fetch(&self, url: &str, max_body: usize) -> Result<(Arc<Value>, Duration), DocumentError> {
        let fetched = self
            .outbound
            .get(url, true, None, "application/json", max_body)
            .await
            .map_err(|e| DocumentError::Fetch {
                url: url.to_string(),
                reason: e.to_string(),
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
                limit: max_body,
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
        let document: Value = serde_json::from_slice(&fetched.body).map_err(|e| DocumentError::Invalid {
            url: url.to_string(),
            reason: e.to_string(),
        })?;
        if !document.is_object() {
            return Err(DocumentError::Invalid {
                url: url.to_string(),
                reason: "the document must be an object".into(),
            });
        }
        Ok((Arc::new(document), max_age(fetched.cache_control.as_deref())))
    }
}

/// A caller waiting on a fetch. When the last one stops waiting (the fetch finished, or every
/// caller went away, a browser closing its connection, say), the fetch leaves the in-flight
/// table: nothing stays there for a request nobody waits on.
struct InFlight<'a> {
    cache: &'a DocumentCache,
    url: &'a str,
    cell: Arc<OnceCell<Outcome>>,
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        let mut in_flight = lock(&self.cache.in_flight);
        let ours = in_flight.get(self.url).is_some_and(|c| Arc::ptr_eq(c, &self.cell));
        // The table's reference and ours: no one else is waiting.
        if ours && (self.cell.initialized() || Arc::strong_count(&self.cell) <= 2) {
            in_flight.remove(self.url);
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
}
