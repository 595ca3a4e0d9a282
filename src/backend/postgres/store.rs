//! `PgStore`: the store of a cluster, PostgreSQL 13 or newer, shared by every node.
//!
//! The driver is tokio-postgres with a deadpool pool: async all the way (no worker thread waits
//! on the network), prepared statements cached per connection, and nothing generated at
//! compile time, so the build needs no database. The pool is bounded (`database_pool_size`)
//! and so is the wait for a connection (`database_pool_wait`): past it, and whenever the
//! database cannot be reached, operations fail with [`StoreError::Unavailable`], which requests
//! answer with 503 and `Retry-After`. TLS is used when the URL asks for it (`sslmode=require`),
//! with the public roots and `database_ca_file`.
//!
//! Atomicity lives in single statements or short transactions: a code is redeemed by one
//! `UPDATE ... WHERE NOT redeemed`, a refresh token rotated by one `UPDATE` of its family's row
//! that matches only while the presented token is the current one, counters are updated in a
//! transaction holding their rows' locks. Commits are synchronous (`synchronous_commit = on`),
//! so [`Store::durable`] has nothing left to wait for.
//!
//! Clients are cached per node for up to [`CLIENT_CACHE_TTL`], re-read in the background while
//! in use ([`ClientCache`]): a deleted client, a rotated secret or a changed setting reaches
//! every other node within that bound (this node at once). Nothing else is cached.
//!
//! The schema is in `migrations/`, applied in order by [`PgStore::migrate`] under an advisory
//! lock; a database newer than this binary is refused.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod, Runtime};
use serde::de::DeserializeOwned;
use serde::Serialize;
use tokio_postgres::config::SslMode;
use tokio_postgres::types::ToSql;
use tokio_postgres::{NoTls, Row};

use crate::store::*;

use super::client_cache::ClientCache;
pub use super::client_cache::{CLIENT_CACHE_BYTES, CLIENT_CACHE_TTL};

/// The advisory lock migrations take (any constant the database does not otherwise use).
const MIGRATION_LOCK: i64 = 0x7465_7373_6572_6101;
/// The advisory lock a node holds while it purges expired records.
const PURGE_LOCK: i64 = 0x7465_7373_6572_6102;

/// The schema migrations, in order: version N is `MIGRATIONS[N - 1]`.
const MIGRATIONS: &[&str] = &[
    include_str!("migrations/0001_initial.sql"),
    include_str!("migrations/0002_device.sql"),
    include_str!("migrations/0003_dpop.sql"),
    include_str!("migrations/0004_audit.sql"),
    include_str!("migrations/0005_key_promoted_at.sql"),
    include_str!("migrations/0006_factors.sql"),
    include_str!("migrations/0007_grant_listings.sql"),
    include_str!("migrations/0008_audit_terms.sql"),
    include_str!("migrations/0009_upgrades.sql"),
    include_str!("migrations/0010_refresh_families.sql"),
    include_str!("migrations/0011_purge_indexes.sql"),
    include_str!("migrations/0012_purge_due.sql"),
    include_str!("migrations/0013_record_counts.sql"),
];

/// The schema version this binary knows.
pub const SCHEMA_VERSION: i64 = MIGRATIONS.len() as i64;

/// How to reach the database.
#[derive(Clone, Debug)]
pub struct PgOptions {
    pub url: String,
    /// Connections at most.
    pub pool_size: usize,
    /// The longest wait for a free connection (and for a new one to connect).
    pub pool_wait: Duration,
    /// Extra certificate authorities for TLS to the database (PEM), besides the public ones.
    pub ca_file: Option<std::path::PathBuf>,
}

/// The PostgreSQL store.
pub struct PgStore {
    pool: Pool,
    clients: std::sync::Arc<ClientCache>,
}

fn database(e: tokio_postgres::Error) -> StoreError {
    // A connection that broke, or could not be made, is the database being unreachable, and
    // so is an error the database reports about itself rather than the statement (shutting
    // down, starting up, out of connections); any other reported error is a failed statement.
    match e.as_db_error() {
        Some(db) if is_transient(db.code()) => {
            StoreError::Unavailable(format!("{}: {}", db.code().code(), db.message()))
        }
        // 22021: a NUL in text; 22P05: a \u0000 escape in JSON.
        Some(db) if matches!(db.code().code(), "22021" | "22P05") => StoreError::InvalidText(db.message().into()),
        Some(db) => StoreError::Database(format!("{}: {}", db.code().code(), db.message())),
        None => StoreError::Unavailable(with_causes(&e)),
    }
}

/// An error with the errors that caused it ("error performing TLS handshake: invalid peer
/// certificate: UnknownIssuer"): the driver's own message alone rarely says what to fix.
fn with_causes(e: &dyn std::error::Error) -> String {
    let mut message = e.to_string();
    let mut cause = e.source();
    while let Some(inner) = cause {
        let text = inner.to_string();
        if !message.ends_with(&text) {
            message = format!("{message}: {text}");
        }
        cause = inner.source();
    }
    message
}

/// Whether an error the database reported says it cannot serve now, so that the same request
/// later may well succeed: a connection exception (class 08), too many connections or another
/// shortage of resources (class 53), the server shutting down, crashing or still starting
/// (57P01-57P03, sent to a query in flight when the server stops and to a connection made
/// while it starts), a cancelled statement (57014), a serialization failure or deadlock
/// (40001, 40P01), or a read-only standby answering during a failover (25006).
fn is_transient(code: &tokio_postgres::error::SqlState) -> bool {
    let code = code.code();
    code.starts_with("08")
        || code.starts_with("53")
        || matches!(
            code,
            "57P01" | "57P02" | "57P03" | "57014" | "40001" | "40P01" | "25006"
        )
}

/// A statement's failure on `client`. A connection that failed for its own sake or the
/// server's (not the statement's) is closed rather than handed to the next request: the pool
/// sees a connection closed only once its task has read the end of the stream, which, after
/// an error the server sent as it cut the connection, may not have happened yet.
fn failed(client: deadpool_postgres::Object, e: tokio_postgres::Error) -> StoreError {
    let error = database(e);
    if matches!(error, StoreError::Unavailable(_)) {
        drop(deadpool_postgres::Object::take(client));
    }
    error
}

fn pool_error(e: deadpool_postgres::PoolError) -> StoreError {
    match e {
        deadpool_postgres::PoolError::Backend(e) => database(e),
        other => StoreError::Unavailable(other.to_string()),
    }
}

fn to_value<T: Serialize>(value: &T) -> Result<serde_json::Value> {
    Ok(serde_json::to_value(value)?)
}

fn from_value<T: DeserializeOwned>(value: serde_json::Value) -> Result<T> {
    Ok(serde_json::from_value(value)?)
}

fn record<T: DeserializeOwned>(row: &Row, column: &str) -> Result<T> {
    from_value(row.try_get(column).map_err(database)?)
}

impl PgStore {
    /// Connects (lazily: the pool opens connections as they are needed) and checks that the
    /// database answers.
    pub async fn connect(options: &PgOptions) -> Result<PgStore> {
        let mut config: tokio_postgres::Config = options
            .url
            .parse()
            .map_err(|e: tokio_postgres::Error| StoreError::Database(format!("the database URL is invalid: {e}")))?;
        config.application_name("tessera");
        // A credential is committed before its response is sent, whatever the server's default.
        config.options("-c synchronous_commit=on");
        config.connect_timeout(options.pool_wait);
        let manager_config = ManagerConfig {
            recycling_method: RecyclingMethod::Fast,
        };
        let manager = match config.get_ssl_mode() {
            SslMode::Disable => Manager::from_config(config, NoTls, manager_config),
            _ => Manager::from_config(config, tls_connector(options.ca_file.as_deref())?, manager_config),
        };
        let pool = Pool::builder(manager)
            .max_size(options.pool_size.max(1))
            .wait_timeout(Some(options.pool_wait))
            .create_timeout(Some(options.pool_wait))
            .recycle_timeout(Some(options.pool_wait))
            .runtime(Runtime::Tokio1)
            .build()
            .map_err(|e| StoreError::Database(e.to_string()))?;
        let store = PgStore {
            pool,
            clients: Default::default(),
        };
        let cache = std::sync::Arc::downgrade(&store.clients);
        tokio::spawn(super::client_cache::refresh_in_background(cache, store.pool.clone()));
        store.client().await?.simple_query("SELECT 1").await.map_err(database)?;
        Ok(store)
    }

    async fn client(&self) -> Result<deadpool_postgres::Object> {
        self.pool.get().await.map_err(pool_error)
    }

    /// Runs one statement and returns its rows.
    async fn query(&self, sql: &str, params: &[&(dyn ToSql + Sync)]) -> Result<Vec<Row>> {
        let client = self.client().await?;
        let rows = match client.prepare_cached(sql).await {
            Ok(statement) => client.query(&statement, params).await,
            Err(e) => Err(e),
        };
        rows.map_err(|e| failed(client, e))
    }

    async fn query_opt(&self, sql: &str, params: &[&(dyn ToSql + Sync)]) -> Result<Option<Row>> {
        Ok(self.query(sql, params).await?.into_iter().next())
    }

    /// The `record` column of every row, decoded.
    async fn records<T: DeserializeOwned>(&self, sql: &str, params: &[&(dyn ToSql + Sync)]) -> Result<Vec<T>> {
        let rows = self.query(sql, params).await?;
        rows.iter().map(|row| record(row, "record")).collect()
    }

    /// The `record` column of the first row, if any, decoded.
    async fn record_opt<T: DeserializeOwned>(&self, sql: &str, params: &[&(dyn ToSql + Sync)]) -> Result<Option<T>> {
        match self.query_opt(sql, params).await? {
            Some(row) => Ok(Some(record(&row, "record")?)),
            None => Ok(None),
        }
    }

    async fn execute(&self, sql: &str, params: &[&(dyn ToSql + Sync)]) -> Result<u64> {
        let client = self.client().await?;
        let changed = match client.prepare_cached(sql).await {
            Ok(statement) => client.execute(&statement, params).await,
            Err(e) => Err(e),
        };
        changed.map_err(|e| failed(client, e))
    }

    /// The pool's state, for `/metrics`: connections open and idle.
    pub fn pool_status(&self) -> (usize, usize) {
        let status = self.pool.status();
        (status.size, status.available)
    }

    /// A connection pool on the same database, for the keyring vault.
    pub fn pool(&self) -> Pool {
        self.pool.clone()
    }

    /// The schema version the database is at (0: empty).
    pub async fn schema_version(&self) -> Result<i64> {
        let client = self.client().await?;
        schema_version(&client).await
    }

    /// Brings the schema up to date, one process at a time (under an advisory lock, so nodes
    /// starting together migrate once). Refuses a database whose schema is newer than this
    /// binary knows. Returns the versions applied.
    pub async fn migrate(&self) -> Result<Vec<i64>> {
        let mut client = self.client().await?;
        client
            .execute("SELECT pg_advisory_lock($1)", &[&MIGRATION_LOCK])
            .await
            .map_err(database)?;
        let outcome = apply_migrations(&mut client).await;
        let unlocked = client
            .execute("SELECT pg_advisory_unlock($1)", &[&MIGRATION_LOCK])
            .await;
        let applied = outcome?;
        unlocked.map_err(database)?;
        Ok(applied)
    }

    /// Refuses to serve a database whose schema is not this binary's.
    pub async fn check_schema(&self) -> Result<()> {
        let version = self.schema_version().await?;
        if version > SCHEMA_VERSION {
            return Err(StoreError::SchemaTooNew(version, SCHEMA_VERSION));
        }
        if version < SCHEMA_VERSION {
            return Err(StoreError::Database(format!(
                "the database schema is at version {version}, this Tessera needs {SCHEMA_VERSION}: run `tessera db migrate`"
            )));
        }
        Ok(())
    }

    /// Whether the database holds any record (an import refuses such a database).
    pub async fn is_empty(&self) -> Result<bool> {
        let row = self
            .query(
                "SELECT NOT EXISTS (SELECT 1 FROM clients) AND NOT EXISTS (SELECT 1 FROM users) \
                 AND NOT EXISTS (SELECT 1 FROM grants) AND NOT EXISTS (SELECT 1 FROM keys)",
                &[],
            )
            .await?;
        Ok(row.first().map(|r| r.get::<_, bool>(0)).unwrap_or(false))
    }

    /// Empties every table (an import that failed half-way undoes itself with this).
    pub async fn clear(&self) -> Result<()> {
        let client = self.client().await?;
        client
            .batch_execute(
                "TRUNCATE clients, users, codes, grants, refresh_tokens, revoked_access, consents, \
                 sessions, server_secrets, counters, scratch, keys, device_authorizations, audit, audit_terms, \
                 factors, upgrades, record_counts; UPDATE keyring SET version = version + 1",
            )
            .await
            .map_err(database)
    }

    fn forget_client(&self, client_id: &str) {
        self.clients.forget(client_id);
    }

    /// How many client lookups are cached, and the bytes they are counted at.
    pub fn client_cache_size(&self) -> (usize, usize) {
        self.clients.size()
    }

    /// How many client reads requests made themselves (the entry missing or expired), rather
    /// than finding the background re-read's.
    pub fn client_reads_on_request_path(&self) -> u64 {
        self.clients.request_reads()
    }
}

/// TLS to the database: the public roots, plus `ca_file`'s certificates.
fn tls_connector(ca_file: Option<&std::path::Path>) -> Result<tokio_postgres_rustls::MakeRustlsConnect> {
    let mut roots = rustls::RootCertStore::empty();
    roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    if let Some(path) = ca_file {
        let pem = std::fs::read(path)
            .map_err(|e| StoreError::Database(format!("cannot read database_ca_file {}: {e}", path.display())))?;
        let certs = rustls_pemfile_certs(&pem);
        if certs.is_empty() {
            return Err(StoreError::Database(format!(
                "database_ca_file {} holds no PEM certificate",
                path.display()
            )));
        }
        for cert in certs {
            roots
                .add(cert)
                .map_err(|e| StoreError::Database(format!("database_ca_file: {e}")))?;
        }
    }
    let config =
        rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .map_err(|e| StoreError::Database(e.to_string()))?
            .with_root_certificates(roots)
            .with_no_client_auth();
    Ok(tokio_postgres_rustls::MakeRustlsConnect::new(config))
}

/// The DER certificates of a PEM bundle.
fn rustls_pemfile_certs(pem: &[u8]) -> Vec<rustls::pki_types::CertificateDer<'static>> {
    use rustls::pki_types::pem::PemObject;
    rustls::pki_types::CertificateDer::pem_slice_iter(pem)
        .filter_map(|cert| cert.ok())
        .collect()
}

async fn schema_version(client: &tokio_postgres::Client) -> Result<i64> {
    let exists: bool = client
        .query_one("SELECT to_regclass('tessera_schema') IS NOT NULL", &[])
        .await
        .map_err(database)?
        .get(0);
    if !exists {
        return Ok(0);
    }
    let row = client
        .query_one("SELECT coalesce(max(version), 0) FROM tessera_schema", &[])
        .await
        .map_err(database)?;
    Ok(row.get::<_, i64>(0))
}

async fn apply_migrations(client: &mut tokio_postgres::Client) -> Result<Vec<i64>> {
    client
        .batch_execute(
            "CREATE TABLE IF NOT EXISTS tessera_schema (version bigint PRIMARY KEY, applied_at bigint NOT NULL)",
        )
        .await
        .map_err(database)?;
    let current = schema_version(client).await?;
    if current > SCHEMA_VERSION {
        return Err(StoreError::SchemaTooNew(current, SCHEMA_VERSION));
    }
    let mut applied = Vec::new();
    for (index, sql) in MIGRATIONS.iter().enumerate().skip(current as usize) {
        let version = index as i64 + 1;
        let tx = client.transaction().await.map_err(database)?;
        tx.batch_execute(sql).await.map_err(database)?;
        tx.execute(
            "INSERT INTO tessera_schema (version, applied_at) VALUES ($1, $2)",
            &[&version, &crate::clock::now()],
        )
        .await
        .map_err(database)?;
        tx.commit().await.map_err(database)?;
        applied.push(version);
    }
    Ok(applied)
}

/// [`EphemeralStore::update_counters`]'s transaction on `keys` (`sorted`: sorted, deduplicated).
async fn update_counter_rows(
    client: &mut tokio_postgres::Client,
    keys: &[Vec<u8>],
    sorted: &[&[u8]],
    update: &(dyn for<'c> Fn(&'c mut [Counter]) + Send + Sync),
) -> std::result::Result<(), tokio_postgres::Error> {
    let tx = client.transaction().await?;
    tx.execute(
        "INSERT INTO counters (key, failures, last_failure_ms, locked_until_ms, expires_at_ms) \
         SELECT k, 0, 0, 0, 0 FROM unnest($1::bytea[]) AS k ORDER BY k ON CONFLICT DO NOTHING",
        &[&sorted],
    )
    .await?;
    let rows = tx
        .query(
            "SELECT key, failures, last_failure_ms, locked_until_ms, expires_at_ms FROM counters \
             WHERE key = ANY($1::bytea[]) ORDER BY key FOR UPDATE",
            &[&sorted],
        )
        .await?;
    let stored: HashMap<Vec<u8>, Counter> = rows
        .iter()
        .map(|row| {
            let counter = Counter {
                failures: row.get::<_, i32>(1).max(0) as u32,
                last_failure_ms: row.get(2),
                locked_until_ms: row.get(3),
                expires_at_ms: row.get(4),
            };
            (row.get::<_, Vec<u8>>(0), counter)
        })
        .collect();
    let mut counters: Vec<Counter> = keys
        .iter()
        .map(|k| stored.get(k).copied().unwrap_or_default())
        .collect();
    update(&mut counters);
    let failures: Vec<i32> = counters
        .iter()
        .map(|c| c.failures.min(i32::MAX as u32) as i32)
        .collect();
    let last: Vec<i64> = counters.iter().map(|c| c.last_failure_ms).collect();
    let locked: Vec<i64> = counters.iter().map(|c| c.locked_until_ms).collect();
    let expires: Vec<i64> = counters.iter().map(|c| c.expires_at_ms).collect();
    let key_slices: Vec<&[u8]> = keys.iter().map(|k| k.as_slice()).collect();
    tx.execute(
        "UPDATE counters AS c SET failures = v.failures, last_failure_ms = v.last, \
           locked_until_ms = v.locked, expires_at_ms = v.expires \
         FROM unnest($1::bytea[], $2::int[], $3::bigint[], $4::bigint[], $5::bigint[]) \
           AS v(key, failures, last, locked, expires) WHERE c.key = v.key",
        &[&key_slices, &failures, &last, &locked, &expires],
    )
    .await?;
    // A counter back at zero means nothing: it is not kept.
    tx.execute(
        "DELETE FROM counters WHERE key = ANY($1::bytea[]) AND failures = 0 AND locked_until_ms = 0",
        &[&sorted],
    )
    .await?;
    tx.commit().await
}

/// [`DeviceStore::update_device`]'s transaction: the row locked, changed, written back.
async fn update_device_row(
    client: &mut tokio_postgres::Client,
    device_code_hash: &SecretHash,
    update: &(dyn for<'d> Fn(&'d mut DeviceRecord) -> bool + Send + Sync),
) -> std::result::Result<Result<Option<DeviceRecord>>, tokio_postgres::Error> {
    let tx = client.transaction().await?;
    let Some(row) = tx
        .query_opt(
            "SELECT record FROM device_authorizations WHERE device_code_hash = $1 FOR UPDATE",
            &[&&device_code_hash[..]],
        )
        .await?
    else {
        return Ok(Ok(None));
    };
    let mut device: DeviceRecord = match record(&row, "record") {
        Ok(device) => device,
        Err(e) => return Ok(Err(e)),
    };
    if update(&mut device) {
        let value = match to_value(&device) {
            Ok(value) => value,
            Err(e) => return Ok(Err(e)),
        };
        tx.execute(
            "UPDATE device_authorizations SET record = $2, expires_at = $3 WHERE device_code_hash = $1",
            &[&&device_code_hash[..], &value, &device.expires_at],
        )
        .await?;
    }
    tx.commit().await?;
    Ok(Ok(Some(device)))
}

/// Rows one purge statement looks at: short statements, so no lock is held for long.
const PURGE_STATEMENT_ROWS: i64 = 5_000;

/// Looks at the refresh families due by `now` (`purge_at`), at most [`PURGE_BATCH`]: one that
/// cannot be used any more goes, with its grant unless another family of the grant is still
/// kept (rows from before families); one rotated since it was filed is filed again for when
/// its current token may be purged. Returns the families and the grants removed.
async fn purge_families(client: &tokio_postgres::Client, now: i64, access_cutoff: i64) -> Result<(u64, u64)> {
    let (mut families, mut grants) = (0, 0);
    for _ in 0..PURGE_BATCH as i64 / PURGE_STATEMENT_ROWS {
        let row = client
            .query_one(
                "WITH due AS ( \
                   SELECT token_hash FROM refresh_tokens WHERE purge_at <= $1 ORDER BY purge_at LIMIT $3 \
                   FOR UPDATE SKIP LOCKED \
                 ), gone AS ( \
                   DELETE FROM refresh_tokens r USING due WHERE r.token_hash = due.token_hash \
                   AND r.expires_at <= $1 AND r.issued_at <= $2 RETURNING r.grant_id \
                 ), refiled AS ( \
                   UPDATE refresh_tokens r SET purge_at = greatest(r.expires_at, r.issued_at + ($1 - $2), $1 + 1) \
                   FROM due WHERE r.token_hash = due.token_hash AND NOT (r.expires_at <= $1 AND r.issued_at <= $2) \
                   RETURNING 1 \
                 ), grants_gone AS ( \
                   DELETE FROM grants g WHERE g.grant_id IN (SELECT grant_id FROM gone) AND g.created_at <= $2 \
                   AND NOT EXISTS (SELECT 1 FROM refresh_tokens o WHERE o.grant_id = g.grant_id \
                     AND NOT (o.expires_at <= $1 AND o.issued_at <= $2)) \
                   RETURNING 1 \
                 ) SELECT (SELECT count(*) FROM due), (SELECT count(*) FROM gone), (SELECT count(*) FROM grants_gone)",
                &[&now, &access_cutoff, &PURGE_STATEMENT_ROWS],
            )
            .await
            .map_err(database)?;
        let (due, gone, grants_gone): (i64, i64, i64) = (row.get(0), row.get(1), row.get(2));
        families += gone as u64;
        grants += grants_gone as u64;
        if due < PURGE_STATEMENT_ROWS {
            break;
        }
    }
    Ok((families, grants))
}

/// Looks at the grants that are due (`due_at` by `cutoff`), at most [`PURGE_BATCH`]: one
/// created by then without a refresh family goes; one with a family is no longer due (it goes
/// with its family); one created since (due early: a row from before migration 12) is due at
/// its creation. Returns the grants removed.
async fn purge_grants_without_family(client: &tokio_postgres::Client, cutoff: i64) -> Result<u64> {
    let mut grants = 0;
    for _ in 0..PURGE_BATCH as i64 / PURGE_STATEMENT_ROWS {
        let row = client
            .query_one(
                "WITH due AS ( \
                   SELECT grant_id FROM grants WHERE due_at <= $1 ORDER BY due_at LIMIT $2 FOR UPDATE SKIP LOCKED \
                 ), gone AS ( \
                   DELETE FROM grants g USING due WHERE g.grant_id = due.grant_id AND g.created_at <= $1 \
                   AND NOT EXISTS (SELECT 1 FROM refresh_tokens r WHERE r.grant_id = g.grant_id) RETURNING 1 \
                 ), kept AS ( \
                   UPDATE grants g SET due_at = CASE WHEN EXISTS \
                     (SELECT 1 FROM refresh_tokens r WHERE r.grant_id = g.grant_id) THEN NULL ELSE g.created_at END \
                   FROM due WHERE g.grant_id = due.grant_id AND (g.created_at > $1 \
                     OR EXISTS (SELECT 1 FROM refresh_tokens r WHERE r.grant_id = g.grant_id)) RETURNING 1 \
                 ) SELECT (SELECT count(*) FROM due), (SELECT count(*) FROM gone)",
                &[&cutoff, &PURGE_STATEMENT_ROWS],
            )
            .await
            .map_err(database)?;
        let (due, gone): (i64, i64) = (row.get(0), row.get(1));
        grants += gone as u64;
        if due < PURGE_STATEMENT_ROWS {
            break;
        }
    }
    Ok(grants)
}

/// Deletes what can no longer be used, one kind at a time (each delete is its own statement,
/// so no long transaction holds locks against requests).
async fn purge(client: &tokio_postgres::Client, now: i64, access_cutoff: i64, unclaimed_cutoff: i64) -> Result<Purged> {
    let delete = |sql: &'static str, params: Vec<i64>| async move {
        let refs: Vec<&(dyn ToSql + Sync)> = params.iter().map(|p| p as &(dyn ToSql + Sync)).collect();
        client.execute(sql, &refs).await.map_err(database)
    };
    let codes = delete("DELETE FROM codes WHERE expires_at <= $1", vec![now]).await?;
    let sessions = delete("DELETE FROM sessions WHERE expires_at <= $1", vec![now]).await?;
    let revoked_access = delete("DELETE FROM revoked_access WHERE expires_at <= $1", vec![now]).await?;
    let (refresh_tokens, family_grants) = purge_families(client, now, access_cutoff).await?;
    let grants = family_grants + purge_grants_without_family(client, unclaimed_cutoff).await?;
    let device_authorizations = delete("DELETE FROM device_authorizations WHERE expires_at <= $1", vec![now]).await?;
    delete("DELETE FROM scratch WHERE expires_at <= $1", vec![now]).await?;
    delete("DELETE FROM counters WHERE expires_at_ms <= $1", vec![now * 1000]).await?;
    Ok(Purged {
        codes,
        refresh_tokens,
        revoked_access,
        sessions,
        grants,
        device_authorizations,
        clients: 0,
        audit_entries: 0,
        busy: false,
    })
}

fn grant_of(row: &Row) -> GrantRecord {
    GrantRecord {
        grant_id: row.get("grant_id"),
        client_id: row.get("client_id"),
        user_id: row.get("user_id"),
        scope: row.get("scope"),
        audience: row.get("audience"),
        auth_time: row.get("auth_time"),
        created_at: row.get("created_at"),
        revoked: row.get("revoked"),
        amr: row.get("amr"),
    }
}

/// `rotated` and `current_hash` say which token of the family is current (migration 10).
fn refresh_of(row: &Row) -> RefreshRecord {
    let current_hash: Option<Vec<u8>> = row.get("current_hash");
    let current = match (row.get::<_, bool>("rotated"), current_hash) {
        (_, Some(hash)) => hash
            .try_into()
            .map(CurrentRefresh::Later)
            // A hash of another length matches no token: the family is spent.
            .unwrap_or(CurrentRefresh::Spent),
        (false, None) => CurrentRefresh::First,
        (true, None) => CurrentRefresh::Spent,
    };
    RefreshRecord {
        grant_id: row.get("grant_id"),
        issued_at: row.get("issued_at"),
        expires_at: row.get("expires_at"),
        current,
        dpop_jkt: row.get("dpop_jkt"),
    }
}

/// The `rotated` and `current_hash` columns of a family's row ([`refresh_of`] reversed).
fn refresh_columns(current: &CurrentRefresh) -> (bool, Option<&[u8]>) {
    match current {
        CurrentRefresh::First => (false, None),
        CurrentRefresh::Later(hash) => (true, Some(&hash[..])),
        CurrentRefresh::Spent => (true, None),
    }
}

const REFRESH_COLUMNS: &str = "grant_id, issued_at, expires_at, rotated, current_hash, dpop_jkt";

const GRANT_COLUMNS: &str = "grant_id, client_id, user_id, scope, audience, auth_time, created_at, revoked, amr";

#[async_trait]
impl ClientStore for PgStore {
    async fn insert_client(&self, client: &ClientRecord) -> Result<bool> {
        let stored = self
            .execute(
                "INSERT INTO clients (client_id, owner_user_id, record) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING",
                &[&client.client_id, &client.owner_user_id, &to_value(client)?],
            )
            .await?;
        self.forget_client(&client.client_id);
        Ok(stored == 1)
    }

    async fn update_client(&self, client: &ClientRecord) -> Result<bool> {
        // A stored first_used_at survives an update from a copy read before it was set.
        let updated = self
            .execute(
                "UPDATE clients SET owner_user_id = $2, record = CASE \
                   WHEN $3::jsonb -> 'first_used_at' IS NULL OR $3::jsonb -> 'first_used_at' = 'null'::jsonb \
                   THEN jsonb_set($3::jsonb, '{first_used_at}', coalesce(record -> 'first_used_at', 'null'::jsonb)) \
                   ELSE $3::jsonb END \
                 WHERE client_id = $1",
                &[&client.client_id, &client.owner_user_id, &to_value(client)?],
            )
            .await?;
        self.forget_client(&client.client_id);
        Ok(updated == 1)
    }

    async fn get_client(&self, client_id: &str) -> Result<Option<ClientRecord>> {
        if let Some(cached) = self.clients.get(client_id) {
            return Ok(cached);
        }
        let start = self.clients.read_start();
        let client: Option<ClientRecord> = self
            .record_opt("SELECT record FROM clients WHERE client_id = $1", &[&client_id])
            .await?;
        self.clients.put(client_id, client.clone(), start);
        Ok(client)
    }

    async fn list_clients(&self) -> Result<Vec<ClientRecord>> {
        self.records("SELECT record FROM clients ORDER BY client_id", &[]).await
    }

    async fn clients_page(&self, after: Option<&str>, limit: usize) -> Result<Vec<ClientRecord>> {
        self.records(
            "SELECT record FROM clients WHERE client_id > $1 ORDER BY client_id LIMIT $2",
            &[&after.unwrap_or(""), &(limit as i64)],
        )
        .await
    }

    async fn delete_client(&self, client_id: &str) -> Result<bool> {
        let deleted = self
            .execute("DELETE FROM clients WHERE client_id = $1", &[&client_id])
            .await?;
        self.forget_client(client_id);
        Ok(deleted == 1)
    }

    async fn delete_unused_client(&self, client_id: &str) -> Result<bool> {
        // The condition is `mark_client_used`'s, negated: whichever runs second sees the other.
        let deleted = self
            .execute(
                "DELETE FROM clients WHERE client_id = $1 \
                 AND (record -> 'first_used_at' IS NULL OR record -> 'first_used_at' = 'null'::jsonb)",
                &[&client_id],
            )
            .await?;
        self.forget_client(client_id);
        Ok(deleted == 1)
    }

    async fn clients_owned_by(&self, user_id: &str) -> Result<Vec<ClientRecord>> {
        self.records(
            "SELECT record FROM clients WHERE owner_user_id = $1 ORDER BY client_id",
            &[&user_id],
        )
        .await
    }

    async fn longest_client_access_token_ttl(&self) -> Result<Option<u64>> {
        // The expression and the condition are those of the index `clients_by_access_ttl`.
        let row = self
            .query_opt(
                "SELECT max((record ->> 'access_token_ttl')::bigint) FROM clients \
                 WHERE record ->> 'access_token_ttl' IS NOT NULL",
                &[],
            )
            .await?;
        let longest: Option<i64> = row.and_then(|row| row.get(0));
        Ok(longest.map(|ttl| ttl.max(0) as u64))
    }

    async fn unused_registrations(&self, created_by: i64, limit: usize) -> Result<Vec<ClientRecord>> {
        // The expressions and the condition are those of the index `clients_unused_registrations`.
        self.records(
            "SELECT record FROM clients WHERE record ->> 'registration_token_hash' IS NOT NULL \
             AND record ->> 'first_used_at' IS NULL AND (record ->> 'created_at')::bigint <= $1 \
             ORDER BY (record ->> 'created_at')::bigint, client_id LIMIT $2",
            &[&created_by, &(limit as i64)],
        )
        .await
    }

    async fn mark_client_used(&self, client_id: &str, at: i64) -> Result<bool> {
        let marked = self
            .execute(
                "UPDATE clients SET record = jsonb_set(record, '{first_used_at}', to_jsonb($2::bigint)) \
                 WHERE client_id = $1 AND (record -> 'first_used_at' IS NULL OR record -> 'first_used_at' = 'null'::jsonb)",
                &[&client_id, &at],
            )
            .await?;
        self.forget_client(client_id);
        Ok(marked == 1)
    }
}

#[async_trait]
impl UserStore for PgStore {
    async fn insert_user(&self, user: &UserRecord) -> Result<()> {
        let inserted = self
            .execute(
                "INSERT INTO users (user_id, username, record) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING",
                &[&user.user_id, &user.username, &to_value(user)?],
            )
            .await?;
        if inserted == 0 {
            return Err(StoreError::Conflict("username"));
        }
        Ok(())
    }

    async fn update_user(&self, user: &UserRecord) -> Result<()> {
        self.execute(
            "UPDATE users SET record = $2 WHERE user_id = $1",
            &[&user.user_id, &to_value(user)?],
        )
        .await?;
        Ok(())
    }

    async fn get_user(&self, user_id: &str) -> Result<Option<UserRecord>> {
        self.record_opt("SELECT record FROM users WHERE user_id = $1", &[&user_id])
            .await
    }

    async fn get_user_by_name(&self, username: &str) -> Result<Option<UserRecord>> {
        self.record_opt("SELECT record FROM users WHERE username = $1", &[&username])
            .await
    }

    async fn list_users(&self) -> Result<Vec<UserRecord>> {
        self.records("SELECT record FROM users ORDER BY username COLLATE \"C\"", &[])
            .await
    }

    async fn users_page(&self, after: Option<&str>, limit: usize) -> Result<Vec<UserRecord>> {
        self.records(
            "SELECT record FROM users WHERE user_id > $1 ORDER BY user_id LIMIT $2",
            &[&after.unwrap_or(""), &(limit as i64)],
        )
        .await
    }

    async fn delete_user(&self, user_id: &str) -> Result<bool> {
        Ok(self
            .execute("DELETE FROM users WHERE user_id = $1", &[&user_id])
            .await?
            == 1)
    }
}

#[async_trait]
impl GrantStore for PgStore {
    async fn put_code(&self, code_hash: &SecretHash, code: &CodeRecord) -> Result<()> {
        self.execute(
            "INSERT INTO codes (code_hash, expires_at, redeemed, record) VALUES ($1, $2, $3, $4) \
             ON CONFLICT (code_hash) DO UPDATE SET expires_at = $2, redeemed = $3, record = $4",
            &[&&code_hash[..], &code.expires_at, &code.redeemed, &to_value(code)?],
        )
        .await?;
        Ok(())
    }

    async fn redeem_code(&self, code_hash: &SecretHash) -> Result<Redemption> {
        if let Some(row) = self
            .query_opt(
                "UPDATE codes SET redeemed = true WHERE code_hash = $1 AND NOT redeemed RETURNING record",
                &[&&code_hash[..]],
            )
            .await?
        {
            let mut code: CodeRecord = record(&row, "record")?;
            code.redeemed = true;
            return Ok(Redemption::Fresh(code));
        }
        match self
            .query_opt("SELECT record FROM codes WHERE code_hash = $1", &[&&code_hash[..]])
            .await?
        {
            Some(row) => {
                let mut code: CodeRecord = record(&row, "record")?;
                code.redeemed = true;
                Ok(Redemption::Replayed(code))
            }
            None => Ok(Redemption::Unknown),
        }
    }

    async fn put_grant(&self, grant: &GrantRecord) -> Result<()> {
        self.execute(
            "INSERT INTO grants (grant_id, client_id, user_id, scope, audience, auth_time, created_at, revoked, amr) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) ON CONFLICT (grant_id) DO UPDATE SET \
             client_id = $2, user_id = $3, scope = $4, audience = $5, auth_time = $6, created_at = $7, revoked = $8, \
             amr = $9",
            &[
                &grant.grant_id,
                &grant.client_id,
                &grant.user_id,
                &grant.scope,
                &grant.audience,
                &grant.auth_time,
                &grant.created_at,
                &grant.revoked,
                &grant.amr,
            ],
        )
        .await?;
        Ok(())
    }

    async fn insert_grant(&self, grant: &GrantRecord) -> Result<bool> {
        let inserted = self
            .execute(
                "INSERT INTO grants (grant_id, client_id, user_id, scope, audience, auth_time, created_at, revoked, amr) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) ON CONFLICT DO NOTHING",
                &[
                    &grant.grant_id,
                    &grant.client_id,
                    &grant.user_id,
                    &grant.scope,
                    &grant.audience,
                    &grant.auth_time,
                    &grant.created_at,
                    &grant.revoked,
                    &grant.amr,
                ],
            )
            .await?;
        Ok(inserted == 1)
    }

    async fn get_grant(&self, grant_id: &str) -> Result<Option<GrantRecord>> {
        let sql = format!("SELECT {GRANT_COLUMNS} FROM grants WHERE grant_id = $1");
        Ok(self.query_opt(&sql, &[&grant_id]).await?.as_ref().map(grant_of))
    }

    async fn grants_page(
        &self,
        user_id: Option<&str>,
        client_id: Option<&str>,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<GrantRecord>> {
        // One statement per filter, so each is planned on its own index (migration 7): a
        // generic `$1 IS NULL OR …` would be planned once for all of them.
        let filter = match (user_id, client_id) {
            (Some(_), Some(_)) => "user_id = $1 AND client_id = $2",
            (Some(_), None) => "user_id = $1 AND $2::text IS NULL",
            (None, Some(_)) => "$1::text IS NULL AND client_id = $2",
            (None, None) => "$1::text IS NULL AND $2::text IS NULL",
        };
        let sql =
            format!("SELECT {GRANT_COLUMNS} FROM grants WHERE {filter} AND grant_id > $3 ORDER BY grant_id LIMIT $4");
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let rows = self
            .query(&sql, &[&user_id, &client_id, &after.unwrap_or(""), &limit])
            .await?;
        Ok(rows.iter().map(grant_of).collect())
    }

    async fn grant_ids(&self, user_id: &str, client_id: &str) -> Result<Vec<String>> {
        let rows = self
            .query(
                "SELECT grant_id FROM grants WHERE user_id = $1 AND client_id = $2 ORDER BY grant_id",
                &[&user_id, &client_id],
            )
            .await?;
        Ok(rows.iter().map(|row| row.get(0)).collect())
    }

    async fn revoke_grant_once(&self, grant_id: &str) -> Result<GrantRevocation> {
        // The row lock of the update decides: one concurrent caller finds it unrevoked. A grant
        // the update did not find may be written between the two statements (a code's first
        // exchange writing its grant while a replay revokes it): found live, it is revoked on
        // the next turn, never reported as revoked already. A revoked grant stays revoked, so
        // the second turn decides.
        loop {
            let revoked = self
                .execute(
                    "UPDATE grants SET revoked = true WHERE grant_id = $1 AND NOT revoked",
                    &[&grant_id],
                )
                .await?;
            if revoked == 1 {
                return Ok(GrantRevocation::Revoked);
            }
            let row = self
                .query_opt("SELECT revoked FROM grants WHERE grant_id = $1", &[&grant_id])
                .await?;
            match row.map(|row| row.get::<_, bool>(0)) {
                None => return Ok(GrantRevocation::Unknown),
                Some(true) => return Ok(GrantRevocation::WasRevoked),
                Some(false) => continue,
            }
        }
    }

    async fn put_refresh(&self, family: &SecretHash, token: &RefreshRecord) -> Result<()> {
        let (rotated, current_hash) = refresh_columns(&token.current);
        self.execute(
            "INSERT INTO refresh_tokens (token_hash, grant_id, issued_at, expires_at, rotated, current_hash, dpop_jkt) \
             VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT (token_hash) DO UPDATE SET \
             grant_id = $2, issued_at = $3, expires_at = $4, rotated = $5, current_hash = $6, dpop_jkt = $7",
            &[
                &&family[..],
                &token.grant_id,
                &token.issued_at,
                &token.expires_at,
                &rotated,
                &current_hash,
                &token.dpop_jkt,
            ],
        )
        .await?;
        Ok(())
    }

    async fn get_refresh(&self, family: &SecretHash) -> Result<Option<RefreshRecord>> {
        let sql = format!("SELECT {REFRESH_COLUMNS} FROM refresh_tokens WHERE token_hash = $1");
        Ok(self.query_opt(&sql, &[&&family[..]]).await?.as_ref().map(refresh_of))
    }

    async fn get_refresh_and_grant(&self, family: &SecretHash) -> Result<Option<(RefreshRecord, Option<GrantRecord>)>> {
        let row = self
            .query_opt(
                "SELECT r.grant_id, r.issued_at, r.expires_at, r.rotated, r.current_hash, r.dpop_jkt, \
                 g.grant_id IS NOT NULL AS grant_found, \
                 g.client_id, g.user_id, g.scope, g.audience, g.auth_time, g.created_at, g.revoked, g.amr \
                 FROM refresh_tokens r LEFT JOIN grants g ON g.grant_id = r.grant_id WHERE r.token_hash = $1",
                &[&&family[..]],
            )
            .await?;
        Ok(row.map(|row| {
            let grant = row.get::<_, bool>("grant_found").then(|| grant_of(&row));
            (refresh_of(&row), grant)
        }))
    }

    async fn rotate_refresh(
        &self,
        family: &SecretHash,
        presented: &SecretHash,
        next: &RefreshRecord,
    ) -> Result<Rotation> {
        // One statement rewrites the family's row if the presented token is its current one
        // (`RefreshRecord::is_current` in SQL). The update takes the row's lock and a
        // concurrent one re-reads the row after it, so of concurrent rotations presenting one
        // token exactly one matches.
        let (rotated, current_hash) = refresh_columns(&next.current);
        let rotated_rows = self
            .execute(
                "UPDATE refresh_tokens SET issued_at = $3, expires_at = $4, rotated = $5, current_hash = $6, \
                 dpop_jkt = $7 WHERE token_hash = $1 AND CASE WHEN current_hash IS NOT NULL \
                 THEN current_hash = $2 ELSE NOT rotated AND token_hash = $2 END",
                &[
                    &&family[..],
                    &&presented[..],
                    &next.issued_at,
                    &next.expires_at,
                    &rotated,
                    &current_hash,
                    &next.dpop_jkt,
                ],
            )
            .await?;
        if rotated_rows == 1 {
            return Ok(Rotation::Rotated);
        }
        Ok(match self.get_refresh(family).await? {
            Some(spent) => Rotation::Spent(spent),
            None => Rotation::Unknown,
        })
    }

    async fn use_refresh(
        &self,
        family: &SecretHash,
        presented: &SecretHash,
        used: &RefreshUse<'_>,
        next: &RefreshSuccessor,
    ) -> Result<RefreshOutcome> {
        // One statement, one round trip: `before` reads the family and its grant as they were,
        // and `rotated` rewrites the family's row only if `RefreshUse::check` finds nothing
        // (its conditions, in SQL) and the presented token is the current one
        // (`RefreshRecord::is_current`). The update takes the row's lock and re-checks the
        // row's conditions on the version a concurrent rotation left, so of concurrent uses of
        // one token exactly one rotates. The grant's are checked as `before` read it, as the
        // two-step path checks them. Why a use did not rotate is read from `before`.
        let row = self
            .query_opt(
                "WITH before AS (SELECT r.grant_id, r.issued_at, r.expires_at, r.rotated, r.current_hash, \
                 r.dpop_jkt, g.grant_id IS NOT NULL AS grant_found, g.client_id, g.user_id, g.scope, g.audience, \
                 g.auth_time, g.created_at, g.revoked, g.amr \
                 FROM refresh_tokens r LEFT JOIN grants g ON g.grant_id = r.grant_id WHERE r.token_hash = $1), \
                 rotated AS (UPDATE refresh_tokens r SET issued_at = $3, expires_at = $4, rotated = true, \
                 current_hash = $5 FROM before b WHERE r.token_hash = $1 AND b.grant_found \
                 AND NOT b.revoked AND b.client_id = $6 AND r.expires_at > $7 \
                 AND (r.dpop_jkt IS NULL OR r.dpop_jkt = $8) \
                 AND CASE WHEN r.current_hash IS NOT NULL THEN r.current_hash = $2 \
                 ELSE NOT r.rotated AND r.token_hash = $2 END RETURNING 1) \
                 SELECT before.*, EXISTS (SELECT 1 FROM rotated) AS rotated_now FROM before",
                &[
                    &&family[..],
                    &&presented[..],
                    &next.issued_at,
                    &next.expires_at,
                    &&next.token[..],
                    &used.client_id,
                    &used.now,
                    &used.dpop_jkt,
                ],
            )
            .await?;
        let Some(row) = row else {
            return Ok(RefreshOutcome::Unknown);
        };
        let current = refresh_of(&row);
        let grant = row.get::<_, bool>("grant_found").then(|| grant_of(&row));
        let grant = match used.check(&current, grant) {
            Ok(grant) => grant,
            Err(refusal) => return Ok(RefreshOutcome::Refused(refusal)),
        };
        Ok(if row.get("rotated_now") {
            RefreshOutcome::Rotated(grant)
        } else {
            RefreshOutcome::Spent(grant)
        })
    }

    async fn revoke_access_token(&self, jti: &str, expires_at: i64) -> Result<()> {
        self.execute(
            "INSERT INTO revoked_access (jti, expires_at) VALUES ($1, $2) ON CONFLICT (jti) DO UPDATE SET expires_at = $2",
            &[&jti, &expires_at],
        )
        .await?;
        Ok(())
    }

    async fn is_access_token_revoked(&self, jti: &str) -> Result<bool> {
        Ok(self
            .query_opt("SELECT 1 FROM revoked_access WHERE jti = $1", &[&jti])
            .await?
            .is_some())
    }
}

#[async_trait]
impl ConsentStore for PgStore {
    async fn put_consent(&self, consent: &ConsentRecord) -> Result<()> {
        self.execute(
            "INSERT INTO consents (user_id, client_id, record) VALUES ($1, $2, $3) \
             ON CONFLICT (user_id, client_id) DO UPDATE SET record = $3",
            &[&consent.user_id, &consent.client_id, &to_value(consent)?],
        )
        .await?;
        Ok(())
    }

    async fn get_consent(&self, user_id: &str, client_id: &str) -> Result<Option<ConsentRecord>> {
        self.record_opt(
            "SELECT record FROM consents WHERE user_id = $1 AND client_id = $2",
            &[&user_id, &client_id],
        )
        .await
    }

    async fn list_consents(&self, user_id: &str) -> Result<Vec<ConsentRecord>> {
        self.records(
            "SELECT record FROM consents WHERE user_id = $1 ORDER BY client_id",
            &[&user_id],
        )
        .await
    }

    async fn delete_consent(&self, user_id: &str, client_id: &str) -> Result<()> {
        self.execute(
            "DELETE FROM consents WHERE user_id = $1 AND client_id = $2",
            &[&user_id, &client_id],
        )
        .await?;
        Ok(())
    }

    async fn delete_consents_for_client(&self, client_id: &str) -> Result<u64> {
        self.execute("DELETE FROM consents WHERE client_id = $1", &[&client_id])
            .await
    }
}

#[async_trait]
impl SessionStore for PgStore {
    async fn put_session(&self, id_hash: &SecretHash, session: &SessionRecord) -> Result<()> {
        self.execute(
            "INSERT INTO sessions (id_hash, expires_at, record) VALUES ($1, $2, $3) \
             ON CONFLICT (id_hash) DO UPDATE SET expires_at = $2, record = $3",
            &[&&id_hash[..], &session.expires_at, &to_value(session)?],
        )
        .await?;
        Ok(())
    }

    async fn get_session(&self, id_hash: &SecretHash) -> Result<Option<SessionRecord>> {
        self.record_opt("SELECT record FROM sessions WHERE id_hash = $1", &[&&id_hash[..]])
            .await
    }

    async fn delete_session(&self, id_hash: &SecretHash) -> Result<()> {
        self.execute("DELETE FROM sessions WHERE id_hash = $1", &[&&id_hash[..]])
            .await?;
        Ok(())
    }
}

#[async_trait]
impl FactorStore for PgStore {
    async fn insert_factor(&self, factor: &FactorRecord) -> Result<bool> {
        let inserted = self
            .execute(
                "INSERT INTO factors (user_id, factor_id, revision, record) VALUES ($1, $2, $3, $4) \
                 ON CONFLICT DO NOTHING",
                &[
                    &factor.user_id,
                    &factor.factor_id,
                    &(factor.revision as i64),
                    &to_value(factor)?,
                ],
            )
            .await?;
        Ok(inserted == 1)
    }

    async fn factors_of(&self, user_id: &str) -> Result<Vec<FactorRecord>> {
        self.records(
            "SELECT record FROM factors WHERE user_id = $1 ORDER BY factor_id",
            &[&user_id],
        )
        .await
    }

    async fn replace_factor(&self, factor: &FactorRecord, expected_revision: u64) -> Result<bool> {
        let replaced = self
            .execute(
                "UPDATE factors SET revision = $3, record = $4 \
                 WHERE user_id = $1 AND factor_id = $2 AND revision = $5",
                &[
                    &factor.user_id,
                    &factor.factor_id,
                    &(factor.revision as i64),
                    &to_value(factor)?,
                    &(expected_revision as i64),
                ],
            )
            .await?;
        Ok(replaced == 1)
    }

    async fn delete_factor(&self, user_id: &str, factor_id: &str) -> Result<bool> {
        let deleted = self
            .execute(
                "DELETE FROM factors WHERE user_id = $1 AND factor_id = $2",
                &[&user_id, &factor_id],
            )
            .await?;
        Ok(deleted == 1)
    }

    async fn delete_factors_of(&self, user_id: &str) -> Result<u64> {
        self.execute("DELETE FROM factors WHERE user_id = $1", &[&user_id])
            .await
    }
}

#[async_trait]
impl AuditStore for PgStore {
    async fn append_audit(&self, entry: &AuditRecord) -> Result<()> {
        // Its terms are written by a trigger (migration 8), so entries that nodes of an earlier
        // version append during a rolling upgrade are found by the filters too.
        self.execute(
            "INSERT INTO audit (id, at_ms, record) VALUES ($1, $2, $3) ON CONFLICT (id) DO NOTHING",
            &[&entry.id, &entry.at_ms, &to_value(entry)?],
        )
        .await?;
        Ok(())
    }

    async fn audit_page(&self, filter: &AuditFilter, before: Option<&str>, limit: usize) -> Result<Vec<AuditRecord>> {
        // The entries under the filter's term (or the whole trail, when it names none) are read
        // newest first off an index, a batch at a time, and the filter is applied here, as the
        // embedded store does: a condition on the JSON in the statement would let the planner
        // guess it matches few rows and read every entry under the term to sort them.
        let limit = limit.clamp(1, 10_000);
        // Never fewer than this a round trip, however little of the page is left to fill.
        let batch = i64::try_from(limit.max(256)).unwrap_or(i64::MAX);
        let (since, mut upper) = filter.ids(before);
        let term = filter.term().map(|term| term.to_vec());
        let sql = match term {
            Some(_) => "SELECT a.id, a.record FROM audit_terms t JOIN audit a ON a.id = t.id \
                        WHERE t.term = $1 AND t.id >= $2"
                .to_string(),
            None => "SELECT a.id, a.record FROM audit a WHERE $1::bytea IS NULL AND a.id >= $2".to_string(),
        };
        let column = if term.is_some() { "t.id" } else { "a.id" };
        let mut page = Vec::new();
        loop {
            let rows = match &upper {
                Some(upper) => {
                    let sql = format!("{sql} AND {column} < $3 ORDER BY {column} DESC LIMIT $4");
                    self.query(&sql, &[&term, &since, upper, &batch]).await?
                }
                None => {
                    let sql = format!("{sql} ORDER BY {column} DESC LIMIT $3");
                    self.query(&sql, &[&term, &since, &batch]).await?
                }
            };
            for row in &rows {
                let entry: AuditRecord = from_value(row.get(1))?;
                if filter.matches(&entry) {
                    page.push(entry);
                    if page.len() == limit {
                        return Ok(page);
                    }
                }
            }
            match rows.last() {
                Some(last) if rows.len() as i64 == batch => upper = Some(last.get(0)),
                _ => return Ok(page),
            }
        }
    }

    async fn purge_audit(&self, cutoff_ms: i64) -> Result<u64> {
        self.execute("DELETE FROM audit WHERE at_ms < $1", &[&cutoff_ms]).await
    }
}

#[async_trait]
impl DeviceStore for PgStore {
    async fn insert_device(&self, device_code_hash: &SecretHash, device: &DeviceRecord) -> Result<bool> {
        // Either unique column taken: nothing is stored.
        let stored = self
            .execute(
                "INSERT INTO device_authorizations (device_code_hash, user_code_hash, expires_at, record) \
                 VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING",
                &[
                    &&device_code_hash[..],
                    &&device.user_code_hash[..],
                    &device.expires_at,
                    &to_value(device)?,
                ],
            )
            .await?;
        Ok(stored == 1)
    }

    async fn get_device_by_user_code(&self, user_code_hash: &SecretHash) -> Result<Option<(SecretHash, DeviceRecord)>> {
        let Some(row) = self
            .query_opt(
                "SELECT device_code_hash, record FROM device_authorizations WHERE user_code_hash = $1",
                &[&&user_code_hash[..]],
            )
            .await?
        else {
            return Ok(None);
        };
        let key: Vec<u8> = row.get(0);
        let key: SecretHash = key
            .try_into()
            .map_err(|_| StoreError::Corrupt(serde::de::Error::custom("a device code hash is malformed")))?;
        Ok(Some((key, record(&row, "record")?)))
    }

    async fn update_device(
        &self,
        device_code_hash: &SecretHash,
        update: &(dyn for<'d> Fn(&'d mut DeviceRecord) -> bool + Send + Sync),
    ) -> Result<Option<DeviceRecord>> {
        let mut client = self.client().await?;
        match update_device_row(&mut client, device_code_hash, update).await {
            Ok(outcome) => outcome,
            Err(e) => Err(failed(client, e)),
        }
    }
}

#[async_trait]
impl EphemeralStore for PgStore {
    async fn update_counters(
        &self,
        keys: &[Vec<u8>],
        update: &(dyn for<'c> Fn(&'c mut [Counter]) + Send + Sync),
    ) -> Result<()> {
        // The rows are made to exist, then locked in key order (so two updates of overlapping
        // keys cannot deadlock), read, changed and written back in one transaction.
        let mut sorted: Vec<&Vec<u8>> = keys.iter().collect();
        sorted.sort();
        sorted.dedup();
        let sorted: Vec<&[u8]> = sorted.into_iter().map(|k| k.as_slice()).collect();
        let mut client = self.client().await?;
        let outcome = update_counter_rows(&mut client, keys, &sorted, update).await;
        outcome.map_err(|e| failed(client, e))
    }

    async fn put_scratch(&self, key: &SecretHash, value: &[u8], expires_at: i64, room: ScratchRoom) -> Result<()> {
        if value.len() > MAX_SCRATCH_VALUE_BYTES {
            return Err(StoreError::Database(format!(
                "a scratch value holds at most {MAX_SCRATCH_VALUE_BYTES} bytes"
            )));
        }
        // A new key is stored only while fewer than the room's share of live values are
        // (counted up to that share, so the count costs at most that many rows). Nodes
        // writing at once may each see room for one more: the table can pass the bound by at
        // most the number of concurrent writers.
        let (max_values, _) = room.limits();
        let stored = self
            .execute(
                "INSERT INTO scratch (key, value, expires_at) \
                 SELECT $1, $2, $3 WHERE EXISTS (SELECT 1 FROM scratch WHERE key = $1) \
                    OR (SELECT count(*) FROM (SELECT 1 FROM scratch WHERE expires_at > $4 LIMIT $5) live) < $5 \
                 ON CONFLICT (key) DO UPDATE SET value = $2, expires_at = $3",
                &[
                    &&key[..],
                    &value,
                    &expires_at,
                    &crate::clock::now(),
                    &(max_values as i64),
                ],
            )
            .await?;
        if stored == 0 {
            let first = self
                .query_opt(
                    "SELECT min(expires_at) FROM scratch WHERE expires_at > $1",
                    &[&crate::clock::now()],
                )
                .await?
                .and_then(|row| row.get::<_, Option<i64>>(0))
                .unwrap_or_default();
            return Err(scratch_full(first));
        }
        Ok(())
    }

    async fn get_scratch(&self, key: &SecretHash) -> Result<Option<Vec<u8>>> {
        Ok(self
            .query_opt(
                "SELECT value FROM scratch WHERE key = $1 AND expires_at > $2",
                &[&&key[..], &crate::clock::now()],
            )
            .await?
            .map(|row| row.get(0)))
    }
}

#[async_trait]
impl Store for PgStore {
    fn durable(&self) -> Durable {
        // Every statement above committed synchronously before it returned.
        Box::pin(async { Ok(()) })
    }

    async fn probe_write(&self) -> Result<()> {
        self.execute(
            "INSERT INTO readiness_probe (id, at) VALUES (1, $1) ON CONFLICT (id) DO UPDATE SET at = $1",
            &[&crate::clock::now()],
        )
        .await?;
        Ok(())
    }

    async fn count_records(&self) -> Result<RecordCounts> {
        // Kept by triggers (migration 13): eight rows per count, not a row per record.
        let rows = self
            .query(
                "SELECT coalesce(sum(n) FILTER (WHERE kind = 'clients'), 0)::bigint, \
                 coalesce(sum(n) FILTER (WHERE kind = 'users'), 0)::bigint, \
                 coalesce(sum(n) FILTER (WHERE kind = 'live_grants'), 0)::bigint FROM record_counts",
                &[],
            )
            .await?;
        let count = |i: usize| rows.first().map_or(0, |r| r.get::<_, i64>(i)) as u64;
        Ok(RecordCounts {
            clients: count(0),
            users: count(1),
            live_grants: count(2),
        })
    }

    async fn count_active_refresh_tokens(&self, now: i64) -> Result<u64> {
        let row = self
            .query(
                "SELECT count(*) FROM refresh_tokens r JOIN grants g ON g.grant_id = r.grant_id \
                 WHERE (NOT r.rotated OR r.current_hash IS NOT NULL) AND r.expires_at > $1 AND NOT g.revoked",
                &[&now],
            )
            .await?;
        Ok(row.first().map_or(0, |r| r.get::<_, i64>(0)) as u64)
    }

    async fn purge_expired(&self, now: i64, access_cutoff: i64, unclaimed_cutoff: i64) -> Result<Purged> {
        // One node purges at a time: the others find the lock taken and skip this round
        // (the lock is the session's, so it goes with the connection if this node dies).
        let client = self.client().await?;
        let locked: bool = client
            .query_one("SELECT pg_try_advisory_lock($1)", &[&PURGE_LOCK])
            .await
            .map_err(database)?
            .get(0);
        if !locked {
            return Ok(Purged {
                busy: true,
                ..Purged::default()
            });
        }
        let purged = purge(&client, now, access_cutoff, unclaimed_cutoff).await;
        let unlocked = client.execute("SELECT pg_advisory_unlock($1)", &[&PURGE_LOCK]).await;
        let purged = purged?;
        unlocked.map_err(database)?;
        Ok(purged)
    }

    async fn record_count(&self) -> Result<u64> {
        let row = self
            .query(
                "SELECT (SELECT count(*) FROM clients) + (SELECT count(*) FROM users) \
                 + (SELECT count(*) FROM codes) + (SELECT count(*) FROM grants) \
                 + (SELECT count(*) FROM refresh_tokens) + (SELECT count(*) FROM revoked_access) \
                 + (SELECT count(*) FROM consents) + (SELECT count(*) FROM sessions) \
                 + (SELECT count(*) FROM device_authorizations) + (SELECT count(*) FROM factors)",
                &[],
            )
            .await?;
        Ok(row.first().map_or(0, |r| r.get::<_, i64>(0)) as u64)
    }

    async fn database_health(&self) -> Option<DatabaseHealth> {
        let (open, idle) = self.pool_status();
        let start = Instant::now();
        let answered = match self.client().await {
            Ok(client) => match client.simple_query("SELECT 1").await {
                Ok(_) => true,
                Err(e) => {
                    failed(client, e);
                    false
                }
            },
            Err(_) => false,
        };
        Some(DatabaseHealth {
            open,
            idle,
            round_trip: answered.then(|| start.elapsed()),
        })
    }

    async fn server_secret(&self, name: &str, candidate: &[u8]) -> Result<Vec<u8>> {
        self.execute(
            "INSERT INTO server_secrets (name, value) VALUES ($1, $2) ON CONFLICT DO NOTHING",
            &[&name, &candidate],
        )
        .await?;
        let row = self
            .query_opt("SELECT value FROM server_secrets WHERE name = $1", &[&name])
            .await?
            .ok_or_else(|| StoreError::Database("a server secret vanished".into()))?;
        Ok(row.get(0))
    }

    async fn replace_server_secret(&self, name: &str, expected: &[u8], new: &[u8]) -> Result<bool> {
        let replaced = self
            .execute(
                "UPDATE server_secrets SET value = $3 WHERE name = $1 AND value = $2",
                &[&name, &expected, &new],
            )
            .await?;
        Ok(replaced == 1)
    }

    async fn upgraded(&self, name: &str) -> Result<bool> {
        Ok(self
            .query_opt("SELECT 1 FROM upgrades WHERE name = $1", &[&name])
            .await?
            .is_some())
    }

    async fn mark_upgraded(&self, name: &str) -> Result<()> {
        self.execute(
            "INSERT INTO upgrades (name, at) VALUES ($1, $2) ON CONFLICT (name) DO NOTHING",
            &[&name, &crate::clock::now()],
        )
        .await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use tokio_postgres::error::SqlState;

    use super::is_transient;

    #[test]
    fn the_database_going_away_is_transient_and_a_failed_statement_is_not() {
        for code in [
            SqlState::ADMIN_SHUTDOWN,
            SqlState::CRASH_SHUTDOWN,
            SqlState::CANNOT_CONNECT_NOW,
            SqlState::TOO_MANY_CONNECTIONS,
            SqlState::CONNECTION_FAILURE,
            SqlState::T_R_SERIALIZATION_FAILURE,
            SqlState::READ_ONLY_SQL_TRANSACTION,
        ] {
            assert!(is_transient(&code), "{}", code.code());
        }
        for code in [
            SqlState::UNIQUE_VIOLATION,
            SqlState::UNDEFINED_TABLE,
            SqlState::SYNTAX_ERROR,
            SqlState::INVALID_TEXT_REPRESENTATION,
        ] {
            assert!(!is_transient(&code), "{}", code.code());
        }
    }
}
