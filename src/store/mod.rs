//! Storage: the record types Tessera keeps and the small traits a backend implements.
//!
//! The store is a data contract, not a place for policy: each method says what it did ("this
//! refresh token was live / already spent / unknown") and the protocol core in `oauth/`
//! decides what that means (revoke the grant, refuse the request). Every method documents its
//! contract; anything that must be atomic says so, and holds across processes sharing one
//! backend. Secrets never reach this layer in plaintext: callers pass the SHA-256 of a code,
//! refresh token, session id or client secret as the key or field.
//!
//! The traits are grouped by record and are async, so that a backend that talks to a database
//! over the network awaits its I/O instead of blocking the runtime's worker threads. sled,
//! the embedded default, answers point reads and writes from memory in microseconds and runs
//! them inline; its full scans (purge, counts, listings) move to the blocking pool.
//!
//! Every backend passes the same contract suite (`tests/api/store_contract.rs`).

use async_trait::async_trait;

use std::future::Future;
use std::pin::Pin;

use serde::{Deserialize, Serialize};

// The backends' stores, where callers (the tests, `db import`) named them before they moved
// into their backends.
pub use crate::backend::postgres::store::{PgOptions, PgStore, CLIENT_CACHE_BYTES, CLIENT_CACHE_TTL};
pub use crate::backend::sled::store::{copy_database, SledStore};

/// What can go wrong below the protocol.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// Another process (normally a running `tessera serve`) holds the data folder.
    #[error("the data folder {0} is in use by another Tessera process (a server without a control socket in it, such as an older version); stop it first")]
    Locked(String),
    #[error("a record with this {0} already exists")]
    Conflict(&'static str),
    #[error("storage error: {0}")]
    Backend(#[from] ::sled::Error),
    #[error("transaction failed: {0}")]
    Transaction(String),
    #[error("stored record is corrupt: {0}")]
    Corrupt(#[from] serde_json::Error),
    /// The database refused or failed a statement.
    #[error("database error: {0}")]
    Database(String),
    /// The database cannot be reached now (or no pooled connection came free in time):
    /// requests answer 503 with `Retry-After`.
    #[error("the database is unavailable: {0}")]
    Unavailable(String),
    /// The database refused text it cannot hold (a NUL character): the input's fault, not
    /// the server's. What the HTTP edge lets through never gets here; this is the net below it.
    #[error("the database cannot store this text: {0}")]
    InvalidText(String),
    /// A bounded space (the scratch space, the replay memory) is full of live entries; room
    /// frees as they expire, the first after `retry_after`. Requests answer 503 with it as
    /// `Retry-After`.
    #[error("the {what} is full of live entries; room frees in {} s", retry_after.as_secs())]
    Full {
        what: &'static str,
        retry_after: std::time::Duration,
    },
    /// The database was migrated by a newer Tessera.
    #[error("the database schema is at version {0}, newer than this Tessera knows ({1}); run a newer Tessera")]
    SchemaTooNew(i64, i64),
}

pub type Result<T> = std::result::Result<T, StoreError>;

/// A 32-byte SHA-256 digest of a secret; the only form in which secrets are stored.
pub(crate) type SecretHash = [u8; 32];

/// A future that resolves once everything written before it is on disk.
pub(crate) type Durable = Pin<Box<dyn Future<Output = Result<()>> + Send>>;

/// RFC 6749 §2.1 client types.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ClientType {
    /// Can keep a secret (a server-side app); authenticates at the token endpoint.
    Confidential,
    /// Cannot keep a secret (a SPA, a native app); identified by `client_id` and PKCE.
    Public,
}

/// The grants a client may use, stored as the CLI spells them (their names and who may give
/// them are in `oauth::client::catalogue`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum GrantType {
    AuthorizationCode,
    ClientCredentials,
    RefreshToken,
    /// The device authorization grant (RFC 8628), for devices without a browser.
    DeviceCode,
    /// Token exchange (RFC 8693): a service trades a user's token for a narrower one.
    TokenExchange,
}

/// What a client must do, and may do, beyond its grants and scopes: sender-constrained tokens
/// (RFC 9449), pushed authorization requests (RFC 9126) and token exchange (RFC 8693).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct ClientPolicy {
    /// Every token request must carry a DPoP proof, so every access token is bound to a key
    /// (RFC 9449 §5.2 `dpop_bound_access_tokens`).
    pub dpop_bound_access_tokens: bool,
    /// The authorization endpoint only takes this client's requests pushed first to the PAR
    /// endpoint (RFC 9126 §6 `require_pushed_authorization_requests`).
    pub require_pushed_authorization_requests: bool,
    /// Every DPoP proof of this client's token requests must carry a server nonce (RFC 9449
    /// §8), as the server's `dpop_nonce` asks of every client.
    pub require_dpop_nonce: bool,
    /// Every login this client's users make for it has two factors (`acr` multi-factor): a
    /// one-factor session shows its app's code first, or adds an app.
    pub require_mfa: bool,
    /// What this client may do with the token exchange grant.
    pub token_exchange: TokenExchangePolicy,
}

/// A client's token exchange permissions (RFC 8693): which audiences it may ask a new token
/// for, and whose tokens it may present as the subject.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct TokenExchangePolicy {
    /// The audiences (`audience` or `resource`) an exchanged token may be issued for.
    pub audiences: Vec<String>,
    /// A subject token is accepted only if its audience includes one of these; empty means
    /// the server's default audience.
    pub subject_audiences: Vec<String>,
    /// Every exchange must present an `actor_token`, so the new token names who acts (`act`).
    pub require_actor: bool,
}

/// A registered client (RFC 6749 §2).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ClientRecord {
    pub client_id: String,
    pub name: String,
    pub client_type: ClientType,
    /// SHA-256 of the client secret; `None` for public clients.
    pub secret_hash: Option<SecretHash>,
    /// Registered redirect URIs, compared exactly (RFC 9700 §4.1.3).
    pub redirect_uris: Vec<String>,
    pub grant_types: Vec<GrantType>,
    /// Scopes this client may be granted.
    pub scopes: Vec<String>,
    /// RFC 8707 resource indicators this client may ask for as the token audience.
    pub resources: Vec<String>,
    /// Per-client lifetimes in seconds, overriding the server's.
    pub access_token_ttl: Option<u64>,
    pub refresh_token_ttl: Option<u64>,
    pub created_at: i64,
    /// A first-party app: users are not asked for consent.
    #[serde(default)]
    pub skip_consent: bool,
    /// The user who registered it in the applications pages (`None`: made with the CLI).
    #[serde(default)]
    pub owner_user_id: Option<String>,
    /// Where RP-initiated logout may send the browser afterwards, compared exactly
    /// (OpenID Connect RP-Initiated Logout §3.1).
    #[serde(default)]
    pub post_logout_redirect_uris: Vec<String>,
    /// The algorithm of this client's ID tokens (OpenID Connect Registration §2); `None` is
    /// the standard default, RS256.
    #[serde(default)]
    pub id_token_signed_response_alg: Option<crate::jose::Algorithm>,
    /// An administration client: it may hold the `tessera:admin` scope.
    #[serde(default)]
    pub admin: bool,
    /// SHA-256 of the RFC 7592 registration access token, for dynamically registered clients.
    #[serde(default)]
    pub registration_token_hash: Option<SecretHash>,
    /// The `token_endpoint_auth_method` a dynamically registered client asked for (RFC 7591).
    #[serde(default)]
    pub token_endpoint_auth_method: Option<String>,
    /// When the client was first issued a token; dynamically registered clients that never
    /// are, are purged after `registration_unused_client_ttl`.
    #[serde(default)]
    pub first_used_at: Option<i64>,
    /// The public keys of a `private_key_jwt` client, given inline (RFC 7591 `jwks`)...
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jwks: Option<serde_json::Value>,
    /// ... or at a URL (RFC 7591 `jwks_uri`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jwks_uri: Option<String>,
    /// DPoP, PAR and token exchange settings.
    #[serde(default)]
    pub policy: ClientPolicy,
}

/// A person who can log in (the resource owner of RFC 6749).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct UserRecord {
    pub user_id: String,
    pub username: String,
    pub email: Option<String>,
    /// Whether the operator (or a verification flow) confirmed the user owns `email`.
    #[serde(default)]
    pub email_verified: bool,
    /// Argon2id PHC string.
    pub password_hash: String,
    pub created_at: i64,
    #[serde(default)]
    pub profile: UserProfile,
    /// When the profile or email last changed (OpenID Connect `updated_at`); 0 means never.
    #[serde(default)]
    pub updated_at: i64,
    /// Bumped by every password change: a session opened under an earlier value is over.
    #[serde(default)]
    pub session_epoch: u64,
    /// Holds the operator role: may use the operator's console. Only the CLI and the admin API
    /// grant it.
    #[serde(default)]
    pub operator: bool,
    /// An operator disabled the account: it cannot log in (its grants and sessions were ended
    /// when it was disabled).
    #[serde(default)]
    pub disabled: bool,
}

/// The OpenID Connect `profile` claims a user may have (OpenID Connect Core §5.1).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserProfile {
    pub name: Option<String>,
    pub given_name: Option<String>,
    pub family_name: Option<String>,
    pub nickname: Option<String>,
    /// URL of a profile picture.
    pub picture: Option<String>,
    pub website: Option<String>,
    /// BCP 47 language tag, e.g. `en-GB`.
    pub locale: Option<String>,
    /// IANA time zone, e.g. `Europe/Paris`.
    pub zoneinfo: Option<String>,
}

/// An authorization code and everything it is bound to (RFC 6749 §4.1.2, RFC 7636 §4.4).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct CodeRecord {
    pub client_id: String,
    pub redirect_uri: String,
    /// Whether the authorization request named `redirect_uri`; if so the token request must too.
    pub redirect_uri_given: bool,
    pub code_challenge: Option<String>,
    pub user_id: String,
    pub scope: String,
    pub audience: String,
    pub auth_time: i64,
    pub expires_at: i64,
    /// The grant the code turns into when it is exchanged.
    pub grant_id: String,
    pub redeemed: bool,
    /// The OpenID Connect `nonce` of the authorization request, echoed in the ID token.
    #[serde(default)]
    pub nonce: Option<String>,
    /// The thumbprint of the DPoP key the code is bound to (RFC 9449 §10 `dpop_jkt`): only a
    /// token request with a proof of that key may exchange it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dpop_jkt: Option<String>,
    /// How the user proved who they were (RFC 8176 `amr` values), for the grant.
    #[serde(default = "password_only")]
    pub amr: Vec<String>,
}

/// One authorization a user gave a client, as exchanged at the token endpoint. Every refresh
/// token descended from it, and every access token issued with them, belongs to this grant;
/// revoking the grant revokes them all.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct GrantRecord {
    pub grant_id: String,
    pub client_id: String,
    pub user_id: String,
    pub scope: String,
    pub audience: String,
    pub auth_time: i64,
    pub created_at: i64,
    pub revoked: bool,
    /// How the user proved who they were (RFC 8176 `amr` values) when they gave the grant:
    /// every token of the grant says so. A grant stored before factors existed read `["pwd"]`.
    #[serde(default = "password_only")]
    pub amr: Vec<String>,
}

/// The authentication methods of a login, or a grant, from before second factors existed.
pub fn password_only() -> Vec<String> {
    // RFC 8176 `pwd` (the store names no `oauth` item: dependencies point the other way).
    vec!["pwd".to_string()]
}

/// A grant's refresh tokens, one record for the whole family (RFC 9700 §4.14.2), kept under
/// the hash of the family's id. The family's first token is its id; every later one is the id
/// followed by a fresh secret (`oauth::refresh`). A rotation rewrites this record in place, so
/// a grant refreshed every hour for a month still has one record, not 720: a spent token is
/// recognised as one of the family that is not the current one. What the tokens grant lives
/// in the [`GrantRecord`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RefreshRecord {
    pub grant_id: String,
    /// When the current token was issued, and until when it may be used.
    pub issued_at: i64,
    pub expires_at: i64,
    /// Which of the family's tokens may be used now.
    pub current: CurrentRefresh,
    /// The thumbprint of the DPoP key the token is bound to (RFC 9449 §5): using it needs a
    /// proof made with that key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dpop_jkt: Option<String>,
}

/// Which token of a refresh family ([`RefreshRecord`]) may be used now.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CurrentRefresh {
    /// The first: the family's id itself, whose hash is the record's key.
    First,
    /// A later one, by its hash.
    Later(SecretHash),
    /// None: a record from before families, spent, whose successor has a record of its own.
    Spent,
}

impl RefreshRecord {
    /// Whether the token hashing to `presented` is the current one of the family kept under
    /// `family`.
    pub fn is_current(&self, family: &SecretHash, presented: &SecretHash) -> bool {
        match &self.current {
            CurrentRefresh::First => family == presented,
            CurrentRefresh::Later(hash) => hash == presented,
            CurrentRefresh::Spent => false,
        }
    }
}

/// What a refresh request asks of a family besides presenting its current token: the checks
/// [`GrantStore::use_refresh`] makes before rotating, in the statement that rotates where the
/// store can, so that the usual refresh is one round trip.
#[derive(Clone, Copy, Debug)]
pub struct RefreshUse<'a> {
    /// The authenticated client: only the grant's own client may use its tokens.
    pub client_id: &'a str,
    pub now: i64,
    /// The thumbprint of the request's DPoP proof key, if it sent a proof.
    pub dpop_jkt: Option<&'a str>,
}

/// Why a family refuses a [`RefreshUse`], whatever token was presented.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RefreshRefusal {
    /// Its grant is revoked or gone.
    GrantGone,
    /// Its grant is another client's.
    OtherClient,
    /// Its current token has expired.
    Expired,
    /// It is bound to a DPoP key (RFC 9449 §5) and the request sent no proof.
    ProofMissing,
    /// It is bound to another DPoP key than the proof's.
    OtherKey,
}

impl RefreshUse<'_> {
    /// The family's live grant if `family` allows this use, else why it refuses. A store that
    /// checks in SQL mirrors this, condition for condition.
    pub fn check(
        &self,
        family: &RefreshRecord,
        grant: Option<GrantRecord>,
    ) -> std::result::Result<GrantRecord, RefreshRefusal> {
        let Some(grant) = grant.filter(|grant| !grant.revoked) else {
            return Err(RefreshRefusal::GrantGone);
        };
        if grant.client_id != self.client_id {
            return Err(RefreshRefusal::OtherClient);
        }
        if family.expires_at <= self.now {
            return Err(RefreshRefusal::Expired);
        }
        match (family.dpop_jkt.as_deref(), self.dpop_jkt) {
            (Some(_), None) => Err(RefreshRefusal::ProofMissing),
            (Some(bound), Some(jkt)) if bound != jkt => Err(RefreshRefusal::OtherKey),
            _ => Ok(grant),
        }
    }
}

/// The token that replaces a family's current one: the family keeps its grant and binding.
#[derive(Clone, Copy, Debug)]
pub struct RefreshSuccessor {
    pub token: SecretHash,
    pub issued_at: i64,
    pub expires_at: i64,
}

/// Outcome of [`GrantStore::use_refresh`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RefreshOutcome {
    /// The presented token was current and the use allowed: its successor is current now.
    /// Carries the family's grant.
    Rotated(GrantRecord),
    /// The family refuses the use; nothing changed.
    Refused(RefreshRefusal),
    /// The use is allowed but the presented token is a spent one of the family (reuse, RFC 9700
    /// §4.14.2, which the core answers); nothing changed. Carries the family's grant.
    Spent(GrantRecord),
    /// No such family.
    Unknown,
}

/// What a user has approved for a client, remembered so they are not asked again.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ConsentRecord {
    pub user_id: String,
    pub client_id: String,
    /// Every scope the user has approved for this client.
    pub scopes: Vec<String>,
    pub granted_at: i64,
    pub updated_at: i64,
}

/// A browser session behind the session cookie.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct SessionRecord {
    /// The logged-in user, if any; anonymous sessions exist to carry a CSRF token.
    pub user_id: Option<String>,
    pub csrf_token: String,
    pub auth_time: Option<i64>,
    pub expires_at: i64,
    /// The user's `session_epoch` when they logged in.
    #[serde(default)]
    pub user_epoch: u64,
    /// How the user proved who they were (RFC 8176 `amr` values), in the order they did.
    #[serde(default = "password_only")]
    pub amr: Vec<String>,
    /// When a second factor, or a passkey, was last proved in this session (step-up and
    /// `max_age` count from `auth_time`; this says which factors are how fresh).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub factor_time: Option<i64>,
}

/// Where a device authorization stands (RFC 8628 §3.3-3.5).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DeviceStatus {
    /// The user has not answered yet.
    Pending,
    Approved,
    Denied,
}

/// A device authorization request (RFC 8628 §3.1-3.2), kept under the hash of its device code.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeviceRecord {
    /// SHA-256 of the user code (normalised: uppercase, no separator); unique among records.
    pub user_code_hash: SecretHash,
    pub client_id: String,
    pub scope: String,
    pub audience: String,
    pub expires_at: i64,
    /// Seconds the client must wait between polls; grows by 5 with each `slow_down`.
    pub interval: u64,
    pub status: DeviceStatus,
    /// The user who answered, when they logged in, and the grant the approval made.
    pub user_id: Option<String>,
    pub auth_time: Option<i64>,
    pub grant_id: Option<String>,
    /// Unix milliseconds of the client's last poll at the token endpoint.
    pub last_poll_ms: Option<i64>,
    /// Set once the device code has been exchanged for tokens.
    pub redeemed: bool,
}

/// A database backend's state, read at scrape time.
#[derive(Debug, Clone, Copy)]
pub struct DatabaseHealth {
    /// Connections open, and of those idle.
    pub open: usize,
    pub idle: usize,
    /// One `SELECT 1`'s round trip; `None` when the database did not answer.
    pub round_trip: Option<std::time::Duration>,
}

/// What [`Store::count_records`] counts.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct RecordCounts {
    pub clients: u64,
    pub users: u64,
    /// Grants not revoked (some may hold only expired tokens until the purge removes them).
    pub live_grants: u64,
}

/// What one purge removed.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Purged {
    pub codes: u64,
    pub refresh_tokens: u64,
    pub revoked_access: u64,
    pub sessions: u64,
    pub grants: u64,
    /// Expired device authorizations.
    pub device_authorizations: u64,
    /// Dynamically registered clients never used (removed by the core, not the store).
    pub clients: u64,
    /// Audit entries older than `audit_retention` (removed by the core, not `purge_expired`).
    pub audit_entries: u64,
    /// Another node was purging (cluster mode): this call removed nothing.
    pub busy: bool,
}

impl Purged {
    /// What was removed, kind by kind, as `tessera purge` prints it.
    pub fn summary(&self) -> String {
        format!(
            "{} codes, {} refresh families, {} access-token revocations, {} sessions, {} grants, \
             {} device authorizations, {} unused clients, {} audit entries",
            self.codes,
            self.refresh_tokens,
            self.revoked_access,
            self.sessions,
            self.grants,
            self.device_authorizations,
            self.clients,
            self.audit_entries
        )
    }

    pub fn total(&self) -> u64 {
        self.codes
            + self.refresh_tokens
            + self.revoked_access
            + self.sessions
            + self.grants
            + self.device_authorizations
            + self.clients
            + self.audit_entries
    }
}

/// Outcome of redeeming an authorization code.
#[derive(Debug)]
pub enum Redemption {
    /// First use: the code was marked redeemed and is returned.
    Fresh(CodeRecord),
    /// The code had been redeemed before (a replay, RFC 6749 §4.1.2).
    Replayed(CodeRecord),
    Unknown,
}

/// What a grant was when it was revoked ([`GrantStore::revoke_grant_once`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GrantRevocation {
    /// It was live: this call revoked it.
    Revoked,
    /// It had been revoked before: nothing changed.
    WasRevoked,
    /// No such grant.
    Unknown,
}

/// How many refresh families, and how many grants, one [`Store::purge_expired`] looks at at
/// most; the rest wait for the next pass.
pub const PURGE_BATCH: usize = 50_000;

/// Outcome of exchanging a refresh token ([`GrantStore::rotate_refresh`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Rotation {
    /// The presented token was the family's current one: its successor is current now.
    Rotated,
    /// The presented token is of the family but not its current one: nothing changed. Carries
    /// the family's record; presenting a spent token is reuse (RFC 9700 §4.14.2), which the
    /// core answers.
    Spent(RefreshRecord),
    /// No such family.
    Unknown,
}

/// Every client in id order, a page at a time ([`ClientStore::clients_page`]): what reads them
/// all (a one-time upgrade, the purge) never holds more than a page of them.
pub struct ClientPages<'a> {
    store: &'a dyn ClientStore,
    after: Option<String>,
    done: bool,
}

impl<'a> ClientPages<'a> {
    const PAGE: usize = 500;

    pub fn new(store: &'a dyn ClientStore) -> ClientPages<'a> {
        ClientPages {
            store,
            after: None,
            done: false,
        }
    }

    /// The next page; `None` once every client was read.
    pub async fn next(&mut self) -> Result<Option<Vec<ClientRecord>>> {
        if self.done {
            return Ok(None);
        }
        let page = self.store.clients_page(self.after.as_deref(), Self::PAGE).await?;
        self.done = page.len() < Self::PAGE;
        self.after = page.last().map(|c| c.client_id.clone());
        Ok(Some(page).filter(|page| !page.is_empty()))
    }
}

/// Registered clients.
#[async_trait]
pub trait ClientStore: Send + Sync {
    /// Stores a new client (and indexes its owner) if no client has its `client_id`; returns
    /// whether it was stored.
    async fn insert_client(&self, client: &ClientRecord) -> Result<bool>;
    /// Replaces the client with this `client_id` (and keeps the owner index) if it exists;
    /// returns whether it did. Atomic with [`ClientStore::delete_client`]: a deleted client is
    /// never written back by an update that read it before the delete. A `first_used_at`
    /// already stored is kept.
    async fn update_client(&self, client: &ClientRecord) -> Result<bool>;
    async fn get_client(&self, client_id: &str) -> Result<Option<ClientRecord>>;
    /// All clients, ordered by `client_id` (a full scan).
    async fn list_clients(&self) -> Result<Vec<ClientRecord>>;
    /// Up to `limit` clients whose `client_id` sorts after `after`, in `client_id` order.
    async fn clients_page(&self, after: Option<&str>, limit: usize) -> Result<Vec<ClientRecord>>;
    /// Returns whether a client was removed.
    async fn delete_client(&self, client_id: &str) -> Result<bool>;
    /// Removes the client only if it was never used (no `first_used_at`); returns whether it
    /// did. Atomic with respect to [`ClientStore::mark_client_used`]: the purge of unused
    /// registrations reads a page of them before removing each, and one marked used in between
    /// is kept. (A client is marked after its first tokens are issued, so one removed between
    /// the two loses those tokens: a registration unused for `unused_client_ttl` that chose
    /// that moment.)
    async fn delete_unused_client(&self, client_id: &str) -> Result<bool>;
    /// The clients whose `owner_user_id` is `user_id`, ordered by `client_id`. Reads an index,
    /// not every client.
    async fn clients_owned_by(&self, user_id: &str) -> Result<Vec<ClientRecord>>;
    /// Sets the client's `first_used_at` to `at` if it has none; returns whether it changed.
    /// Atomic with respect to [`ClientStore::update_client`], which keeps a stored
    /// `first_used_at`: neither undoes the other.
    async fn mark_client_used(&self, client_id: &str, at: i64) -> Result<bool>;
    /// The longest `access_token_ttl` a client sets for itself (`None`: no client sets one).
    /// Reads an index: how long an access token may live decides what the purge keeps and
    /// when a retired key may go, and neither may cost a read of every client.
    async fn longest_client_access_token_ttl(&self) -> Result<Option<u64>>;
    /// Up to `limit` dynamically registered clients never used (a registration token, no
    /// `first_used_at`) created at or before `created_by`, oldest first. Reads an index.
    async fn unused_registrations(&self, created_by: i64, limit: usize) -> Result<Vec<ClientRecord>>;
}

/// Users and their usernames, kept unique together.
#[async_trait]
pub trait UserStore: Send + Sync {
    /// Inserts a new user; `Conflict("username")` if the name is taken. Atomic: of two
    /// concurrent inserts of one username exactly one succeeds.
    async fn insert_user(&self, user: &UserRecord) -> Result<()>;
    /// Replaces an existing user's record (the username must not change).
    async fn update_user(&self, user: &UserRecord) -> Result<()>;
    async fn get_user(&self, user_id: &str) -> Result<Option<UserRecord>>;
    async fn get_user_by_name(&self, username: &str) -> Result<Option<UserRecord>>;
    /// All users, ordered by username (a full scan).
    async fn list_users(&self) -> Result<Vec<UserRecord>>;
    /// Up to `limit` users whose `user_id` sorts after `after`, in `user_id` order.
    async fn users_page(&self, after: Option<&str>, limit: usize) -> Result<Vec<UserRecord>>;
    /// Removes the user and their username; returns whether one was removed.
    async fn delete_user(&self, user_id: &str) -> Result<bool>;
}

/// Codes, grants, refresh tokens and revocations: everything an authorization leaves behind.
#[async_trait]
pub trait GrantStore: Send + Sync {
    async fn put_code(&self, code_hash: &SecretHash, code: &CodeRecord) -> Result<()>;
    /// Marks the code redeemed. Atomic: of any number of concurrent redemptions of one code
    /// exactly one sees `Fresh`; every later one sees `Replayed`.
    async fn redeem_code(&self, code_hash: &SecretHash) -> Result<Redemption>;
    /// Stores a grant (insert or replace) and indexes it under its user and client.
    async fn put_grant(&self, grant: &GrantRecord) -> Result<()>;
    /// Stores a grant (indexed like [`GrantStore::put_grant`]) only if no grant with its id
    /// exists; returns whether it was stored. Atomic: of two concurrent calls for one id,
    /// exactly one stores.
    async fn insert_grant(&self, grant: &GrantRecord) -> Result<bool>;
    async fn get_grant(&self, grant_id: &str) -> Result<Option<GrantRecord>>;
    /// Up to `limit` grants of a user and/or a client (of anyone when both are `None`) whose
    /// ids sort after `after`, ordered by id. Every filter is read from an index, no further
    /// than the page: the cost follows `limit`, not how many grants are stored.
    async fn grants_page(
        &self,
        user_id: Option<&str>,
        client_id: Option<&str>,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<GrantRecord>>;
    /// The ids of every grant a user gave a client (revoked ones included).
    async fn grant_ids(&self, user_id: &str, client_id: &str) -> Result<Vec<String>>;
    /// Marks a grant revoked, and says what it was before (see [`GrantRevocation`]): of many
    /// concurrent calls on a live grant, on however many nodes, exactly one sees `Revoked`.
    async fn revoke_grant_once(&self, grant_id: &str) -> Result<GrantRevocation>;
    /// Marks a grant revoked; returns whether it existed. Revoked stays revoked.
    async fn revoke_grant(&self, grant_id: &str) -> Result<bool> {
        Ok(self.revoke_grant_once(grant_id).await? != GrantRevocation::Unknown)
    }
    /// Revokes every grant of a user and/or a client, a page at a time; returns how many this
    /// call revoked (grants revoked already, or by a concurrent call, are not counted).
    async fn revoke_grants_of(&self, user_id: Option<&str>, client_id: Option<&str>) -> Result<usize> {
        const PAGE: usize = 500;
        let (mut after, mut revoked) = (None::<String>, 0);
        loop {
            let page = self.grants_page(user_id, client_id, after.as_deref(), PAGE).await?;
            for grant in page.iter().filter(|g| !g.revoked) {
                if self.revoke_grant_once(&grant.grant_id).await? == GrantRevocation::Revoked {
                    revoked += 1;
                }
            }
            match page.last() {
                Some(last) if page.len() == PAGE => after = Some(last.grant_id.clone()),
                _ => return Ok(revoked),
            }
        }
    }
    /// Stores a refresh family's record under the hash of its id (a new grant's first token, or
    /// an import).
    async fn put_refresh(&self, family: &SecretHash, token: &RefreshRecord) -> Result<()>;
    async fn get_refresh(&self, family: &SecretHash) -> Result<Option<RefreshRecord>>;
    /// A refresh family with its grant (`None` when the grant is gone): what every use of a
    /// refresh token reads first. One round trip where the store can join them.
    async fn get_refresh_and_grant(&self, family: &SecretHash) -> Result<Option<(RefreshRecord, Option<GrantRecord>)>> {
        let Some(refresh) = self.get_refresh(family).await? else {
            return Ok(None);
        };
        let grant = self.get_grant(&refresh.grant_id).await?;
        Ok(Some((refresh, grant)))
    }
    /// Replaces the family's record with `next` if the token hashing to `presented` is its
    /// current one ([`RefreshRecord::is_current`]); see [`Rotation`]. A compare-and-swap: of
    /// any number of concurrent rotations presenting one token exactly one gets `Rotated`, the
    /// others `Spent`. Whether the family's grant is live is not looked at.
    async fn rotate_refresh(
        &self,
        family: &SecretHash,
        presented: &SecretHash,
        next: &RefreshRecord,
    ) -> Result<Rotation>;
    /// Uses a refresh token: if the family under `family` allows `used` ([`RefreshUse::check`])
    /// and `presented` is its current token, replaces that with `next`, as one compare-and-swap
    /// like [`GrantStore::rotate_refresh`]; see [`RefreshOutcome`]. This default reads, then
    /// rotates; a store that can do both in one statement does.
    async fn use_refresh(
        &self,
        family: &SecretHash,
        presented: &SecretHash,
        used: &RefreshUse<'_>,
        next: &RefreshSuccessor,
    ) -> Result<RefreshOutcome> {
        let Some((current, grant)) = self.get_refresh_and_grant(family).await? else {
            return Ok(RefreshOutcome::Unknown);
        };
        let grant = match used.check(&current, grant) {
            Ok(grant) => grant,
            Err(refusal) => return Ok(RefreshOutcome::Refused(refusal)),
        };
        let successor = RefreshRecord {
            grant_id: current.grant_id,
            issued_at: next.issued_at,
            expires_at: next.expires_at,
            current: CurrentRefresh::Later(next.token),
            dpop_jkt: current.dpop_jkt,
        };
        Ok(match self.rotate_refresh(family, presented, &successor).await? {
            Rotation::Rotated => RefreshOutcome::Rotated(grant),
            Rotation::Spent(_) => RefreshOutcome::Spent(grant),
            Rotation::Unknown => RefreshOutcome::Unknown,
        })
    }
    /// Marks one access token revoked until it expires (RFC 7009).
    async fn revoke_access_token(&self, jti: &str, expires_at: i64) -> Result<()>;
    async fn is_access_token_revoked(&self, jti: &str) -> Result<bool>;
}

/// Device authorizations (RFC 8628), keyed by the hash of the device code, with a unique
/// index on the hash of the user code.
#[async_trait]
pub trait DeviceStore: Send + Sync {
    /// Stores a new device authorization under `device_code_hash`; returns `false` (storing
    /// nothing) if a record already has this device code hash or this user code hash. Atomic:
    /// of two concurrent inserts of one user code exactly one stores.
    async fn insert_device(&self, device_code_hash: &SecretHash, device: &DeviceRecord) -> Result<bool>;
    /// The record with this user code hash and its device code hash, if any (expired ones
    /// included, until purged).
    async fn get_device_by_user_code(&self, user_code_hash: &SecretHash) -> Result<Option<(SecretHash, DeviceRecord)>>;
    /// Reads the record under `device_code_hash`, lets `update` change it, and writes it back
    /// if `update` returns `true`. Returns the record as `update` left it (`None`: no such
    /// record, and `update` is not called). Atomic: concurrent updates of one record, on any
    /// node, happen one after another, so a check and a change made in one `update` (redeem
    /// once, approve only while pending) cannot be outrun. `update` may be called more than
    /// once (a retried compare-and-swap); only the last call's outcome counts. The user code
    /// hash must not be changed.
    async fn update_device(
        &self,
        device_code_hash: &SecretHash,
        update: &(dyn for<'d> Fn(&'d mut DeviceRecord) -> bool + Send + Sync),
    ) -> Result<Option<DeviceRecord>>;
}

/// Remembered consent, one record per (user, client).
#[async_trait]
pub trait ConsentStore: Send + Sync {
    /// Inserts or replaces the (user, client) consent.
    async fn put_consent(&self, consent: &ConsentRecord) -> Result<()>;
    async fn get_consent(&self, user_id: &str, client_id: &str) -> Result<Option<ConsentRecord>>;
    /// Every client this user has approved, ordered by client id.
    async fn list_consents(&self, user_id: &str) -> Result<Vec<ConsentRecord>>;
    async fn delete_consent(&self, user_id: &str, client_id: &str) -> Result<()>;
    /// Removes every user's consent for a client; returns how many there were. May scan.
    async fn delete_consents_for_client(&self, client_id: &str) -> Result<u64>;
}

/// Browser sessions, keyed by the hash of the cookie value.
#[async_trait]
pub trait SessionStore: Send + Sync {
    async fn put_session(&self, id_hash: &SecretHash, session: &SessionRecord) -> Result<()>;
    async fn get_session(&self, id_hash: &SecretHash) -> Result<Option<SessionRecord>>;
    async fn delete_session(&self, id_hash: &SecretHash) -> Result<()>;
}

/// A counter of failed attempts (the login throttle's); all zero when absent.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counter {
    pub failures: u32,
    /// Unix milliseconds of the last failure counted.
    pub last_failure_ms: i64,
    /// Unix milliseconds until which attempts are refused; 0 if none.
    pub locked_until_ms: i64,
    /// Unix milliseconds after which the counter means nothing and may be dropped.
    pub expires_at_ms: i64,
}

/// Scratch values kept at most, on every backend.
pub const MAX_SCRATCH_VALUES: usize = 10_000;
/// The largest scratch value (a sealed pushed request is at most about 9 KB).
pub const MAX_SCRATCH_VALUE_BYTES: usize = 16 * 1024;
/// The bytes a backend that keeps scratch values in memory holds at most (each value counted
/// with its key and [`SCRATCH_OVERHEAD_BYTES`]).
pub(crate) const MAX_SCRATCH_BYTES: usize = 32 << 20;
pub(crate) const SCRATCH_OVERHEAD_BYTES: usize = 128;

/// Which share of the scratch space a value may take. A flow's first value (a pushed request,
/// a playground's state) starts something anyone may start, so it gets nine tenths: a flood
/// of new ones then still leaves room for the flows already under way to record their steps.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ScratchRoom {
    /// The first value of a new flow.
    Start,
    /// A step of a flow already under way.
    Continue,
}

impl ScratchRoom {
    /// The values and bytes this room's writes may fill the space up to.
    pub fn limits(self) -> (usize, usize) {
        match self {
            ScratchRoom::Start => (MAX_SCRATCH_VALUES / 10 * 9, MAX_SCRATCH_BYTES / 10 * 9),
            ScratchRoom::Continue => (MAX_SCRATCH_VALUES, MAX_SCRATCH_BYTES),
        }
    }
}

/// The error of a write the scratch space has no room for, when its first live value expires
/// at `first_expiry` (Unix seconds).
pub(crate) fn scratch_full(first_expiry: i64) -> StoreError {
    let wait = first_expiry.saturating_sub(crate::clock::now()).max(1);
    StoreError::Full {
        what: "scratch space",
        retry_after: std::time::Duration::from_secs(wait as u64),
    }
}

/// Short-lived state every node must see alike: failure counters, and scratch values a browser
/// flow keeps between requests. Nothing here needs to survive a restart of a single process,
/// so the embedded backend keeps it in memory (bounded); a shared backend keeps it in tables.
#[async_trait]
pub trait EphemeralStore: Send + Sync {
    /// Reads the counters under `keys` (zero where absent), lets `update` change them, and
    /// writes them back. Atomic: concurrent updates touching any of these keys, on any node,
    /// happen one after another, so a check and a count made in one `update` cannot be
    /// outrun. `update` is called exactly once.
    async fn update_counters(
        &self,
        keys: &[Vec<u8>],
        update: &(dyn for<'c> Fn(&'c mut [Counter]) + Send + Sync),
    ) -> Result<()>;
    /// Remembers `key` until `expires_at_ms` (Unix milliseconds) unless it is remembered
    /// already; returns whether it was new. Atomic across nodes: of any number of concurrent
    /// calls with one key exactly one sees `true`. What guards against replays (a client
    /// assertion's `jti`) lives here, so it is never forgotten early to make room: a backend
    /// that must bound it refuses new keys ([`StoreError::Unavailable`]) rather than drop live
    /// ones.
    async fn remember_once(&self, key: &[u8], expires_at_ms: i64) -> Result<bool> {
        let fresh = std::sync::atomic::AtomicBool::new(false);
        let now_ms = crate::clock::now_ms();
        self.update_counters(&[key.to_vec()], &|counters: &mut [Counter]| {
            let seen = &mut counters[0];
            if seen.failures == 0 || seen.expires_at_ms <= now_ms {
                *seen = Counter {
                    failures: 1,
                    last_failure_ms: now_ms,
                    locked_until_ms: 0,
                    expires_at_ms,
                };
                fresh.store(true, std::sync::atomic::Ordering::Relaxed);
            }
        })
        .await?;
        Ok(fresh.load(std::sync::atomic::Ordering::Relaxed))
    }
    /// Stores `value` under `key` until `expires_at` (replacing any value there). The space is
    /// bounded ([`MAX_SCRATCH_VALUES`], [`MAX_SCRATCH_VALUE_BYTES`] each, and in memory
    /// [`MAX_SCRATCH_BYTES`]): a value that would not fit in the share `room` may use is
    /// refused with [`StoreError::Unavailable`], and no live value is ever dropped to make
    /// room (someone's pushed request depends on it).
    async fn put_scratch(&self, key: &SecretHash, value: &[u8], expires_at: i64, room: ScratchRoom) -> Result<()>;
    /// The value under `key`, unless it is absent or expired.
    async fn get_scratch(&self, key: &SecretHash) -> Result<Option<Vec<u8>>>;
}

/// Who did something the audit trail records.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditActor {
    /// `user` (an operator in the console, or a user in the pages), `client` (an admin API
    /// client, or a dynamically registered client managing itself), `cli` (the OS user running
    /// `tessera`), `anonymous` (a dynamic registration, a failed login) or `system`.
    pub kind: String,
    /// The user id, client id or OS user name.
    pub id: String,
    /// A name a person recognises: the username or the client's name.
    pub name: String,
}

/// One entry of the audit trail: when, who, from where, what to what, and how it ended. Never
/// a secret, token or password.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditRecord {
    /// Unique and in time order: the time in milliseconds as 16 hex digits, then random ones.
    pub id: String,
    /// Milliseconds since the epoch.
    pub at_ms: i64,
    pub actor: AuditActor,
    /// The caller's address, where known.
    pub address: Option<String>,
    /// What was done, as `area.verb` (`client.create`, `user.disable`, `login.lockout`, ...).
    pub action: String,
    /// What it was done to: a kind (`client`, `user`, `grant`, `key`), its id and its name.
    pub target_kind: Option<String>,
    pub target_id: Option<String>,
    pub target_name: Option<String>,
    /// `ok`, or why not (`denied`, `invalid`, ...).
    pub outcome: String,
}

/// Which audit entries to list; every field given must match.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AuditFilter {
    /// The actor's id, or its name unless it is a client (whose names are not unique).
    pub actor: Option<String>,
    pub action: Option<String>,
    /// The target's id or name.
    pub target: Option<String>,
    /// Entries at or after this time (ms).
    pub since_ms: Option<i64>,
    /// Entries before this time (ms).
    pub until_ms: Option<i64>,
}

impl AuditFilter {
    /// Whether `entry` passes the filter.
    pub fn matches(&self, entry: &AuditRecord) -> bool {
        let named = |want: &Option<String>, id: Option<&str>, name: Option<&str>| {
            want.as_deref()
                .is_none_or(|want| Some(want) == id || Some(want) == name)
        };
        // A client is found by id only: its name is whatever it registered, so anyone could
        // take an admin client's (users' and OS users' names are their own).
        let actor_name = (entry.actor.kind != "client").then_some(entry.actor.name.as_str());
        named(&self.actor, Some(&entry.actor.id), actor_name)
            && self.action.as_deref().is_none_or(|a| a == entry.action)
            && named(&self.target, entry.target_id.as_deref(), entry.target_name.as_deref())
            && self.since_ms.is_none_or(|t| entry.at_ms >= t)
            && self.until_ms.is_none_or(|t| entry.at_ms < t)
    }

    /// The term the entries are looked up by ([`AuditRecord::terms`]), so that a filter reads
    /// only entries with that term: the target's, else the actor's, else the action's (the
    /// most selective given first). `None`: the filter names none, and the trail is read in
    /// time order.
    pub fn term(&self) -> Option<AuditTerm> {
        let (facet, value) = match (&self.target, &self.actor, &self.action) {
            (Some(target), _, _) => (AUDIT_TARGET, target),
            (None, Some(actor), _) => (AUDIT_ACTOR, actor),
            (None, None, Some(action)) => (AUDIT_ACTION, action),
            (None, None, None) => return None,
        };
        Some(audit_term(facet, value))
    }

    /// The ids a page may hold, given the previous page's last id: from the first id at
    /// `since_ms` (inclusive), to the lower of `before` and the first id at `until_ms`
    /// (exclusive; `None`: the newest).
    pub fn ids(&self, before: Option<&str>) -> (String, Option<String>) {
        let since = self.since_ms.map_or_else(String::new, |t| audit_id(t, ""));
        let until = self.until_ms.map(|t| audit_id(t, ""));
        let upper = match (before, until) {
            (Some(before), Some(until)) => Some(until.min(before.to_string())),
            (before, until) => before.map(str::to_string).or(until),
        };
        (since, upper)
    }
}

/// One term an audit entry is found by: which field (a byte) and the first 16 bytes of the
/// SHA-256 of its value, so every term has one size whatever the value holds. Two values with
/// one term are told apart by [`AuditFilter::matches`], which every backend applies as well.
pub type AuditTerm = [u8; 17];

const AUDIT_ACTION: u8 = b'a';
const AUDIT_ACTOR: u8 = b'c';
const AUDIT_TARGET: u8 = b't';

fn audit_term(facet: u8, value: &str) -> AuditTerm {
    let digest = ring::digest::digest(&ring::digest::SHA256, value.as_bytes());
    let mut term = [facet; 17];
    term[1..].copy_from_slice(&digest.as_ref()[..16]);
    term
}

impl AuditRecord {
    /// The terms an [`AuditFilter`] may look this entry up by: its action; its actor's id, and
    /// name unless a client's; its target's id and name.
    pub fn terms(&self) -> Vec<AuditTerm> {
        let actor_name = (self.actor.kind != "client").then_some(self.actor.name.as_str());
        let mut terms = vec![
            audit_term(AUDIT_ACTION, &self.action),
            audit_term(AUDIT_ACTOR, &self.actor.id),
        ];
        terms.extend(actor_name.map(|name| audit_term(AUDIT_ACTOR, name)));
        let target = [self.target_id.as_deref(), self.target_name.as_deref()];
        terms.extend(
            target
                .into_iter()
                .flatten()
                .map(|value| audit_term(AUDIT_TARGET, value)),
        );
        terms.sort_unstable();
        terms.dedup();
        terms
    }
}

/// The audit trail: appended to, read newest first, purged by age. Shared by every node.
#[async_trait]
pub trait AuditStore: Send + Sync {
    /// Appends `entry`; an entry with its id already there stays as it is.
    async fn append_audit(&self, entry: &AuditRecord) -> Result<()>;
    /// At most `limit` entries passing `filter`, newest first, all older than the entry with
    /// id `before` when given (the previous page's last id).
    async fn audit_page(&self, filter: &AuditFilter, before: Option<&str>, limit: usize) -> Result<Vec<AuditRecord>>;
    /// Removes the entries from before `cutoff_ms`; returns how many.
    async fn purge_audit(&self, cutoff_ms: i64) -> Result<u64>;
}

/// The id of an audit entry made at `at_ms`: in time order as text.
pub fn audit_id(at_ms: i64, random: &str) -> String {
    format!("{:016x}{random}", at_ms.max(0))
}

/// A way a user proves who they are besides their password: a one-time-code app (TOTP,
/// RFC 6238), their recovery codes, or a passkey (WebAuthn). The secret that checks it is
/// never shown again once enrolled.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FactorRecord {
    /// Unique for the user: `totp` and `recovery` (one each), or a passkey's own id.
    pub factor_id: String,
    pub user_id: String,
    /// What the user calls it (a passkey's name), or the kind's own name.
    pub name: String,
    pub created_at: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_used_at: Option<i64>,
    /// Bumped by every change: [`FactorStore::replace_factor`] writes only over the revision
    /// it read, so two nodes checking one code cannot both accept it.
    #[serde(default)]
    pub revision: u64,
    pub secret: FactorSecret,
}

/// What checks a factor.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum FactorSecret {
    /// The TOTP shared secret, sealed under a server secret (base64url of nonce and sealed
    /// bytes): a reader of the store alone cannot make codes.
    Totp { sealed: String },
    /// The keyed hashes (HMAC-SHA256 under a server secret, hex) of the recovery codes not
    /// used yet, and how many were made.
    RecoveryCodes { unused: Vec<String>, made: u32 },
    /// A WebAuthn credential as the relying-party library keeps it (public key, counter).
    Passkey { credential: serde_json::Value },
}

impl FactorSecret {
    /// The kind's name, as the audit trail, the pages and the admin API show it.
    pub fn kind(&self) -> &'static str {
        match self {
            FactorSecret::Totp { .. } => "totp",
            FactorSecret::RecoveryCodes { .. } => "recovery_codes",
            FactorSecret::Passkey { .. } => "passkey",
        }
    }
}

/// Users' factors ([`FactorRecord`]).
#[async_trait]
pub trait FactorStore: Send + Sync {
    /// Adds a factor; `false`, writing nothing, if the user has one with that `factor_id`.
    async fn insert_factor(&self, factor: &FactorRecord) -> Result<bool>;
    /// The user's factors, by `factor_id`.
    async fn factors_of(&self, user_id: &str) -> Result<Vec<FactorRecord>>;
    /// Writes `factor` over the stored one of its user and id if that one's revision is still
    /// `expected_revision` (compare-and-swap, atomic across nodes); whether it did.
    async fn replace_factor(&self, factor: &FactorRecord, expected_revision: u64) -> Result<bool>;
    /// Removes one factor; whether it was there.
    async fn delete_factor(&self, user_id: &str, factor_id: &str) -> Result<bool>;
    /// Removes every factor of a user; how many there were.
    async fn delete_factors_of(&self, user_id: &str) -> Result<u64>;
}

/// A complete backend.
#[async_trait]
pub trait Store:
    ClientStore
    + UserStore
    + FactorStore
    + GrantStore
    + DeviceStore
    + ConsentStore
    + SessionStore
    + EphemeralStore
    + AuditStore
{
    /// Resolves once every write made before the call is durable. Callers await it before
    /// handing a credential out, so a crash can never forget a token a client holds.
    fn durable(&self) -> Durable;
    /// Writes and removes a probe record: fails if the store cannot take writes (readiness).
    async fn probe_write(&self) -> Result<()>;
    /// How many refresh tokens are neither spent, expired at `now`, nor of a revoked grant (a
    /// full scan).
    async fn count_active_refresh_tokens(&self, now: i64) -> Result<u64>;
    /// Removes what can no longer be used at `now`. `access_cutoff` is the moment before
    /// which every access token issued has expired; `unclaimed_cutoff` (no later) the moment
    /// before which a grant that has no refresh family can hold no live token, however late
    /// its first tokens were collected (a device authorization collects them up to the device
    /// code's lifetime after the approval wrote the grant). Removed: expired codes, sessions and
    /// device authorizations, revocation entries of expired access tokens, refresh families
    /// whose current token has expired and was issued before `access_cutoff` (with their
    /// grant, unless a family from before families still holds it), and grants created
    /// before `unclaimed_cutoff` that never had a refresh family. A grant with a live access
    /// token is never removed, since its access tokens are checked against it. Families and
    /// grants are found through indexes by when they become due, at most [`PURGE_BATCH`] of
    /// each a call: a call's work follows what expired, not what is stored. Meant for a
    /// background task.
    async fn purge_expired(&self, now: i64, access_cutoff: i64, unclaimed_cutoff: i64) -> Result<Purged>;
    /// How many records the store holds, all kinds together (the listing indexes included;
    /// not the purge's and the client facts, which follow the records they index).
    async fn record_count(&self) -> Result<u64>;
    /// How many clients and users there are, and how many grants are not revoked (the
    /// console's overview), from counters kept with the records, whatever the data's size:
    /// PostgreSQL's statement triggers keep them, the embedded store its write transactions.
    async fn count_records(&self) -> Result<RecordCounts>;
    /// Copies the whole store into a new folder `to` while it serves (`tessera backup`):
    /// consistent, as if taken at one moment. How many records it copied. A database backend
    /// is backed up with the database's own tools, and refuses.
    async fn back_up(&self, _to: &std::path::Path) -> Result<u64> {
        Err(StoreError::Database(
            "a cluster's database is backed up with PostgreSQL's own tools (docs/cluster.md)".into(),
        ))
    }
    /// A database backend's connection pool and one round trip to it, for `/metrics`;
    /// `None` for an embedded store.
    async fn database_health(&self) -> Option<DatabaseHealth> {
        None
    }
    /// The server secret named `name` as stored (sealed, in cluster mode: the store never sees
    /// it in the clear): the stored value, or, if there is none yet, `candidate`, which is then
    /// stored. Atomic: concurrent callers (on every node sharing the store) all get the same
    /// value.
    async fn server_secret(&self, name: &str, candidate: &[u8]) -> Result<Vec<u8>>;
    /// Replaces the server secret `name` with `new` if it is still `expected`; whether it was.
    /// Atomic like [`Store::server_secret`]: of nodes racing to replace one value, one does.
    async fn replace_server_secret(&self, name: &str, expected: &[u8], new: &[u8]) -> Result<bool>;
    /// Whether the one-time upgrade `name` of the records (a cleanup an earlier version's data
    /// needs once) ran on this store: recorded by [`Store::mark_upgraded`]. A store brought in
    /// by `tessera db import` starts without any, so its records get each upgrade once.
    async fn upgraded(&self, name: &str) -> Result<bool>;
    /// Records that the one-time upgrade `name` ran.
    async fn mark_upgraded(&self, name: &str) -> Result<()>;
}
