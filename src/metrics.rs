//! Prometheus metrics: requests and latency by route and status, tokens issued by grant type,
//! errors by OAuth error code, and two gauges read at scrape time (active refresh tokens and
//! the signing key's age). Served as Prometheus text at `/metrics`. Tokens issued are also
//! kept per minute for the last hour ([`TokenHistory`], this node only) for the console's chart.

use std::sync::atomic::{AtomicI64, AtomicU64};
use std::time::{Duration, Instant};

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    route: &'static str,
    method: String,
    status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouteLabel {
    route: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct GrantLabel {
    grant_type: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TokenKindLabel {
    kind: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ErrorLabel {
    error: &'static str,
}

/// The server's metrics. Counters are cheap (a hash lookup and an atomic add per request).
pub struct Metrics {
    registry: Registry,
    requests: Family<RequestLabels, Counter>,
    latency: Family<RouteLabel, Histogram>,
    tokens_issued: Family<GrantLabel, Counter>,
    tokens_signed: Family<TokenKindLabel, Counter>,
    oauth_errors: Family<ErrorLabel, Counter>,
    active_refresh_tokens: Gauge<i64, AtomicI64>,
    signing_key_age: Gauge<i64, AtomicI64>,
    open_connections: Gauge<i64, AtomicI64>,
    database_connections: Family<DatabaseConnectionLabel, Gauge<i64, AtomicI64>>,
    database_up: Gauge<i64, AtomicI64>,
    database_round_trip: Gauge<f64, AtomicU64>,
    token_history: TokenHistory,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DatabaseConnectionLabel {
    state: &'static str,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl Metrics {
    pub fn new() -> Metrics {
        let mut registry = Registry::with_prefix("tessera");
        let requests = Family::<RequestLabels, Counter>::default();
        // 0.25 ms to about 4 s.
        let latency = Family::<RouteLabel, Histogram>::new_with_constructor(|| {
            Histogram::new(exponential_buckets(0.000_25, 2.0, 15))
        });
        let tokens_issued = Family::<GrantLabel, Counter>::default();
        let oauth_errors = Family::<ErrorLabel, Counter>::default();
        let tokens_signed = Family::<TokenKindLabel, Counter>::default();
        let active_refresh_tokens = Gauge::<i64, AtomicI64>::default();
        let signing_key_age = Gauge::<i64, AtomicI64>::default();
        let open_connections = Gauge::<i64, AtomicI64>::default();
        registry.register(
            "http_requests",
            "HTTP requests by route, method and status",
            requests.clone(),
        );
        registry.register(
            "http_request_duration_seconds",
            "Time to answer a request, by route",
            latency.clone(),
        );
        registry.register(
            "tokens_issued",
            "Access tokens issued, by grant type",
            tokens_issued.clone(),
        );
        registry.register(
            "tokens_signed",
            "JWTs signed, by kind (access_token, id_token): what the server spends its CPU on",
            tokens_signed.clone(),
        );
        registry.register(
            "oauth_errors",
            "OAuth and API error responses, by error code",
            oauth_errors.clone(),
        );
        registry.register(
            "active_refresh_tokens",
            "Refresh tokens neither spent nor expired (counted at scrape time)",
            active_refresh_tokens.clone(),
        );
        registry.register(
            "signing_key_age_seconds",
            "Age of the key that signs access tokens",
            signing_key_age.clone(),
        );
        registry.register(
            "open_connections",
            "Client connections open now (at most max_connections; more wait to be accepted)",
            open_connections.clone(),
        );
        let database_connections = Family::<DatabaseConnectionLabel, Gauge<i64, AtomicI64>>::default();
        let database_up = Gauge::<i64, AtomicI64>::default();
        let database_round_trip = Gauge::<f64, AtomicU64>::default();
        registry.register(
            "database_connections",
            "Cluster mode: this node's pooled database connections, by state (open, idle)",
            database_connections.clone(),
        );
        registry.register(
            "database_up",
            "Cluster mode: 1 when the database answered at scrape time, else 0",
            database_up.clone(),
        );
        registry.register(
            "database_round_trip_seconds",
            "Cluster mode: one SELECT 1 to the database, timed at scrape time",
            database_round_trip.clone(),
        );
        Metrics {
            token_history: TokenHistory::default(),
            registry,
            database_connections,
            database_up,
            database_round_trip,
            requests,
            latency,
            tokens_issued,
            tokens_signed,
            oauth_errors,
            active_refresh_tokens,
            signing_key_age,
            open_connections,
        }
    }

    /// The open-connections gauge, for the connection limiter to move as connections come and go.
    pub fn open_connections(&self) -> Gauge<i64, AtomicI64> {
        self.open_connections.clone()
    }

    /// Counts one answered request. `route` is a route template, never a raw path, so the
    /// number of series stays bounded whatever paths clients send.
    pub fn request(&self, route: &'static str, method: &str, status: u16, seconds: f64) {
        let method = match method {
            "GET" | "POST" | "PUT" | "PATCH" | "DELETE" | "HEAD" | "OPTIONS" => method.to_string(),
            _ => "other".to_string(),
        };
        self.requests
            .get_or_create(&RequestLabels { route, method, status })
            .inc();
        self.latency.get_or_create(&RouteLabel { route }).observe(seconds);
    }

    pub fn token_issued(&self, grant_type: &'static str) {
        self.tokens_issued.get_or_create(&GrantLabel { grant_type }).inc();
        self.token_history.add(crate::clock::now() / 60, grant_type);
    }

    /// Tokens this node issued in each of the last [`HISTORY_MINUTES`] minutes, by grant type.
    pub fn tokens_per_minute(&self) -> TokensPerMinute {
        self.token_history.read(crate::clock::now() / 60)
    }

    /// Counts one JWT signed (`access_token` or `id_token`).
    pub fn token_signed(&self, kind: &'static str) {
        self.tokens_signed.get_or_create(&TokenKindLabel { kind }).inc();
    }

    pub fn oauth_error(&self, error: &'static str) {
        self.oauth_errors.get_or_create(&ErrorLabel { error }).inc();
    }

    /// The Prometheus text exposition, with the gauges set to the given readings.
    pub fn render(
        &self,
        active_refresh_tokens: i64,
        signing_key_age_seconds: i64,
        database: Option<crate::store::DatabaseHealth>,
    ) -> String {
        self.active_refresh_tokens.set(active_refresh_tokens);
        self.signing_key_age.set(signing_key_age_seconds);
        if let Some(db) = database {
            let state = |state| DatabaseConnectionLabel { state };
            self.database_connections
                .get_or_create(&state("open"))
                .set(db.open as i64);
            self.database_connections
                .get_or_create(&state("idle"))
                .set(db.idle as i64);
            self.database_up.set(i64::from(db.round_trip.is_some()));
            self.database_round_trip
                .set(db.round_trip.map_or(0.0, |t| t.as_secs_f64()));
        }
        let mut text = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut text, &self.registry);
        text
    }
}

/// How many minutes [`TokenHistory`] keeps.
pub const HISTORY_MINUTES: usize = 60;

/// Tokens issued per minute and grant type over the last hour, in memory on this node (a
/// restart starts it afresh; each node of a cluster counts its own).
#[derive(Default)]
struct TokenHistory {
    /// (minute since the epoch, grant type, count), oldest first; at most an hour of minutes.
    minutes: std::sync::Mutex<std::collections::VecDeque<(i64, &'static str, u64)>>,
}

/// The last hour, minute by minute: `series` holds, per grant type, [`HISTORY_MINUTES`]
/// counts, oldest first, the last being the minute now under way.
#[derive(Debug, Clone, Default)]
pub struct TokensPerMinute {
    /// The minute (since the epoch) the last count is for.
    pub last_minute: i64,
    pub series: Vec<(&'static str, Vec<u64>)>,
}

impl TokenHistory {
    fn add(&self, minute: i64, grant_type: &'static str) {
        // A poisoned lock only means another thread panicked mid-count: the counts stay usable.
        let mut minutes = self.minutes.lock().unwrap_or_else(|e| e.into_inner());
        let oldest = minute - HISTORY_MINUTES as i64;
        while minutes.front().is_some_and(|(m, _, _)| *m <= oldest) {
            minutes.pop_front();
        }
        match minutes
            .iter_mut()
            .rev()
            .take_while(|(m, _, _)| *m == minute)
            .find(|(_, g, _)| *g == grant_type)
        {
            Some(entry) => entry.2 += 1,
            None => minutes.push_back((minute, grant_type, 1)),
        }
    }

    fn read(&self, now_minute: i64) -> TokensPerMinute {
        let minutes = self.minutes.lock().unwrap_or_else(|e| e.into_inner());
        let first = now_minute - HISTORY_MINUTES as i64 + 1;
        let mut series: Vec<(&'static str, Vec<u64>)> = Vec::new();
        for &(minute, grant_type, count) in minutes.iter().filter(|(m, _, _)| (first..=now_minute).contains(m)) {
            let index = match series.iter().position(|(g, _)| *g == grant_type) {
                Some(index) => index,
                None => {
                    series.push((grant_type, vec![0; HISTORY_MINUTES]));
                    series.len() - 1
                }
            };
            series[index].1[(minute - first) as usize] += count;
        }
        series.sort_by_key(|(g, _)| *g);
        TokensPerMinute {
            last_minute: now_minute,
            series,
        }
    }
}

/// A count that costs a scan of as many records as it counts (the active refresh tokens),
/// taken off the request path. A read starts a new count once the last one is older than
/// 100 µs per record counted and than 99 times what the last count took, so however often
/// `/metrics` is scraped, or flooded, and however slowly the store scans (sled took 14 s for a
/// million grants, issue 29), the scans use at most 1% of one core; on a small store a count
/// is a few milliseconds old at most. One count runs at a
/// time, in a task of its own; a read waits for it at most [`COUNT_WAIT`] (not at all when the
/// last count took longer), then answers with the last count (issue 29: the first scrape
/// after a restart took 3.5 s on a large store).
pub struct CostlyCount<T> {
    state: std::sync::Arc<CountState<T>>,
}

struct CountState<T> {
    /// The last count, when it was taken, and how many records it read.
    last: std::sync::Mutex<Option<(T, Instant, u64)>>,
    /// How long the last count took: a read does not wait for one that will not be done in time.
    took: std::sync::Mutex<Duration>,
    counting: std::sync::atomic::AtomicBool,
    counted: tokio::sync::Notify,
}

impl<T> Default for CostlyCount<T> {
    fn default() -> Self {
        CostlyCount {
            state: std::sync::Arc::new(CountState {
                last: std::sync::Mutex::new(None),
                took: Default::default(),
                counting: Default::default(),
                counted: Default::default(),
            }),
        }
    }
}

const REUSE_PER_RECORD: Duration = Duration::from_micros(100);
/// A count is reused for this many times what it took, at least: the scans' share of a core.
const REUSE_PER_COUNT_TIME: u32 = 99;

/// How long a read waits for a count it started: a small store's count is fresh on every read,
/// a large one's is the last one taken.
pub const COUNT_WAIT: Duration = Duration::from_millis(20);

impl<T: Clone + Send + 'static> CostlyCount<T> {
    /// The count: fresh if `take` (the count and how many records it read; `None` when it
    /// failed) finishes within [`COUNT_WAIT`] of a read that needs it, else the last one taken
    /// (`None` before the first).
    pub async fn read<F>(&self, take: impl FnOnce() -> F) -> Option<T>
    where
        F: std::future::Future<Output = Option<(T, u64)>> + Send + 'static,
    {
        self.read_at(Instant::now(), COUNT_WAIT, take).await
    }

    async fn read_at<F>(&self, now: Instant, wait: Duration, take: impl FnOnce() -> F) -> Option<T>
    where
        F: std::future::Future<Output = Option<(T, u64)>> + Send + 'static,
    {
        use std::sync::atomic::Ordering::SeqCst;
        let state = &self.state;
        let took = *state.took.lock().unwrap_or_else(|e| e.into_inner());
        let fresh = |last: &Option<(T, Instant, u64)>| {
            last.as_ref().is_some_and(|(_, taken_at, records)| {
                let by_records = REUSE_PER_RECORD.saturating_mul(u32::try_from(*records).unwrap_or(u32::MAX));
                let reuse = by_records.max(took.saturating_mul(REUSE_PER_COUNT_TIME));
                now.saturating_duration_since(*taken_at) < reuse
            })
        };
        if fresh(&state.last.lock().unwrap_or_else(|e| e.into_inner())) {
            return self.last();
        }
        // Registered before the count can end, so its end is never missed.
        let counted = state.counted.notified();
        tokio::pin!(counted);
        counted.as_mut().enable();
        if !state.counting.swap(true, SeqCst) {
            let (state, count) = (state.clone(), take());
            tokio::spawn(async move {
                // Even a count that panics ends its turn, so the next read starts another.
                let done = CountDone(state.clone(), Instant::now());
                if let Some((value, records)) = count.await {
                    *state.last.lock().unwrap_or_else(|e| e.into_inner()) = Some((value, Instant::now(), records));
                }
                drop(done);
            });
        }
        let slow = took >= wait;
        if !(slow && self.last().is_some()) {
            let _ = tokio::time::timeout(wait, counted).await;
        }
        self.last()
    }

    fn last(&self) -> Option<T> {
        let last = self.state.last.lock().unwrap_or_else(|e| e.into_inner());
        last.as_ref().map(|(value, _, _)| value.clone())
    }
}

/// Ends a count's turn when dropped (done, or unwound by a panic): records how long it took,
/// lets the next read start one, and wakes the reads waiting for it.
struct CountDone<T>(std::sync::Arc<CountState<T>>, Instant);

impl<T> Drop for CountDone<T> {
    fn drop(&mut self) {
        let state = &self.0;
        *state.took.lock().unwrap_or_else(|e| e.into_inner()) = self.1.elapsed();
        state.counting.store(false, std::sync::atomic::Ordering::SeqCst);
        state.counted.notify_waiters();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_costly_count_is_reused_for_100_microseconds_per_record() {
        use std::time::Duration;
        let count = CostlyCount::<i64>::default();
        let wait = Duration::from_secs(5);
        let start = std::time::Instant::now();
        let counted = |n: i64| move || async move { Some((n, n as u64)) };
        assert_eq!(count.read_at(start, wait, counted(10_000)).await, Some(10_000));
        // Ten thousand records buy one second of reuse (from when the count was taken).
        let taken = count.state.last.lock().unwrap().as_ref().unwrap().1;
        let at = |ms: u64| taken + Duration::from_millis(ms);
        assert_eq!(count.read_at(at(900), wait, counted(7)).await, Some(10_000));
        assert_eq!(count.read_at(at(1100), wait, counted(7)).await, Some(7));
        // A failed count is not kept: the last good one is answered.
        assert_eq!(count.read_at(at(9000), wait, || async { None }).await, Some(7));
        assert_eq!(count.read_at(at(9000), wait, counted(5)).await, Some(5));
        // Nor is one that panics, and the next read counts again.
        let panics = || async {
            if true {
                panic!("a count that fails hard");
            }
            Some((0, 0))
        };
        assert_eq!(count.read_at(at(90_000), wait, panics).await, Some(5));
        assert_eq!(count.read_at(at(90_000), wait, counted(3)).await, Some(3));
    }

    #[tokio::test]
    async fn a_count_is_reused_for_99_times_what_it_took_however_few_records_it_read() {
        use std::time::Duration;
        let count = CostlyCount::<i64>::default();
        let wait = Duration::from_secs(5);
        // Two records that took 50 ms to count (a slow store): reused for 4.95 s, not 200 µs.
        let slow = |n: i64| {
            move || async move {
                tokio::time::sleep(Duration::from_millis(50)).await;
                Some((n, 2))
            }
        };
        assert_eq!(count.read_at(std::time::Instant::now(), wait, slow(2)).await, Some(2));
        let taken = count.state.last.lock().unwrap().as_ref().unwrap().1;
        let at = |ms: u64| taken + Duration::from_millis(ms);
        assert_eq!(count.read_at(at(4000), wait, slow(3)).await, Some(2));
        assert_eq!(count.read_at(at(6000), wait, slow(3)).await, Some(3));
    }

    #[tokio::test]
    async fn a_slow_count_is_not_waited_for_and_runs_once_for_many_readers() {
        use std::sync::atomic::{AtomicUsize, Ordering};
        use std::sync::Arc;
        use std::time::Duration;
        let count = CostlyCount::<i64>::default();
        let (started, release) = (Arc::new(AtomicUsize::new(0)), Arc::new(tokio::sync::Notify::new()));
        let slow = |n: i64| {
            let (started, release) = (started.clone(), release.clone());
            move || async move {
                started.fetch_add(1, Ordering::SeqCst);
                release.notified().await;
                Some((n, 1_000_000))
            }
        };
        let now = std::time::Instant::now();
        // Twenty readers while a count is under way: none waits past its bound, one count runs.
        for _ in 0..20 {
            assert_eq!(count.read_at(now, Duration::from_millis(5), slow(42)).await, None);
        }
        tokio::task::yield_now().await;
        assert_eq!(started.load(Ordering::SeqCst), 1);
        // It takes 400 ms at least.
        tokio::time::sleep(Duration::from_millis(400)).await;
        release.notify_waiters();
        for _ in 0..100 {
            if count.last().is_some() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        // Then every reader gets it, without a new count (a million records: 100 s of reuse).
        assert_eq!(count.read_at(now, Duration::from_millis(5), slow(7)).await, Some(42));
        assert_eq!(started.load(Ordering::SeqCst), 1);
        // Once stale, a read starts the next count but does not wait for it (here it would
        // wait 350 ms for a count that never ends): the last one took longer than that.
        let later = now + Duration::from_secs(200);
        let begun = std::time::Instant::now();
        assert_eq!(
            count.read_at(later, Duration::from_millis(350), slow(7)).await,
            Some(42)
        );
        assert!(begun.elapsed() < Duration::from_millis(350), "{:?}", begun.elapsed());
        tokio::task::yield_now().await;
        assert_eq!(started.load(Ordering::SeqCst), 2);
        release.notify_waiters();
    }

    #[test]
    fn token_history_keeps_the_last_hour_by_minute_and_grant_type() {
        let history = TokenHistory::default();
        history.add(1000, "client_credentials");
        history.add(1000, "client_credentials");
        history.add(1000, "refresh_token");
        history.add(1030, "refresh_token");
        let read = history.read(1030);
        assert_eq!(read.series.len(), 2);
        let (grant, counts) = &read.series[0];
        assert_eq!(
            (*grant, counts[HISTORY_MINUTES - 31], counts.iter().sum::<u64>()),
            ("client_credentials", 2, 2)
        );
        let (grant, counts) = &read.series[1];
        assert_eq!(
            (*grant, counts[HISTORY_MINUTES - 1], counts.iter().sum::<u64>()),
            ("refresh_token", 1, 2)
        );
        // An hour later minute 1000 has left the window, and a new count drops it for good.
        assert_eq!(
            history
                .read(1060)
                .series
                .iter()
                .map(|(_, c)| c.iter().sum::<u64>())
                .sum::<u64>(),
            1
        );
        history.add(1070, "authorization_code");
        assert_eq!(history.minutes.lock().unwrap().len(), 2);
    }

    #[test]
    fn the_text_exposition_has_every_family() {
        let metrics = Metrics::new();
        metrics.request("/o/token", "POST", 200, 0.001);
        metrics.token_issued("client_credentials");
        metrics.oauth_error("invalid_grant");
        let text = metrics.render(3, 60, None);
        for line in [
            "tessera_http_requests_total{route=\"/o/token\",method=\"POST\",status=\"200\"} 1",
            "tessera_tokens_issued_total{grant_type=\"client_credentials\"} 1",
            "tessera_oauth_errors_total{error=\"invalid_grant\"} 1",
            "tessera_active_refresh_tokens 3",
            "tessera_signing_key_age_seconds 60",
        ] {
            assert!(text.contains(line), "{line} missing from\n{text}");
        }
        assert!(text.contains("tessera_http_request_duration_seconds_bucket"));
    }
}
