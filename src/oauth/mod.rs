//! The OAuth 2.0 protocol core. Nothing here knows about HTTP: the `http` and `pages`
//! layers parse requests into the types below and map [`Error`] to responses.
//!
//! Vocabulary follows the RFCs: a *client* is a registered app, a *user* is the resource
//! owner of RFC 6749 (a person who logs in), and a *grant* is one authorization a user gave a
//! client: every refresh and access token descended from one code belongs to its grant.

pub(crate) mod acr;
pub(crate) mod admin;
pub mod audit;
pub mod authorize;
pub mod client;
pub(crate) mod consent;
pub(crate) mod demo;
pub mod device;
pub(crate) mod discovery;
pub mod dpop;
pub(crate) mod endpoints;
pub(crate) mod error;
pub mod factor;
pub(crate) mod grant;
pub(crate) mod introspect;
/// The JWS reader DPoP proofs and client assertions share; it lives with the resource-server
/// verifier, which checks DPoP proofs with it too.
pub use tessera_resource::jws;
pub(crate) mod login;
pub(crate) mod logout;
pub(crate) mod oidc;
pub(crate) mod params;
pub(crate) mod passkey;
pub(crate) mod password;
pub(crate) mod pkce;
pub mod refresh;
pub(crate) mod revoke;
pub mod scope;
pub(crate) mod scratch;
pub(crate) mod secrets;
pub(crate) mod session;
pub(crate) mod text;
pub mod throttle;
pub(crate) mod token;
pub mod user;

use std::sync::Arc;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use ring::rand::{SecureRandom, SystemRandom};

pub use self::error::{Error, ErrorCode};
pub use crate::clock::now;
use crate::config::Config;
use crate::keys::Keys;
use crate::store::{SecretHash, Store};

/// The front the HTTP layer, the pages and the CLI call: it owns the capability services
/// (each holding only the store traits it uses, and the budgets it owns), the keys, the
/// configuration and the metrics. Where a capability lives:
///
/// - [`audit::Audit`]: the audit trail;
/// - [`user::Accounts`]: users, browser sessions, signing in;
/// - [`client::Clients`]: the client registry, client authentication, dynamic registration,
///   client documents;
/// - [`authorize::Authorization`]: the authorization endpoint, consent, PAR, the device flow;
/// - [`token::Tokens`]: grants, minting, token exchange, introspection, revocation, UserInfo;
/// - shared by those: [`secrets::Secrets`], [`dpop::Dpop`], [`scratch::Scratch`], and
///   `client_rate`, the per-client budget of the token, introspection, PAR and device
///   authorization endpoints (not revocation's).
///
/// What stays here crosses services: the admin API's listings and deletions (`admin.rs`),
/// purging, readiness and the `/metrics` gauges.
pub struct Provider {
    /// The whole store, for what crosses record kinds and services: the admin API's pages and
    /// cascading deletions, [`Store::purge_expired`], readiness probes, record counts and the
    /// gauges of `/metrics`. No capability service holds it.
    store: Arc<dyn Store>,
    /// The audit trail, with the budgets that bound it ([`audit::Audit`]).
    pub(crate) audit: Arc<audit::Audit>,
    /// The server secrets ([`secrets::Secrets`]).
    pub(crate) secrets: Arc<secrets::Secrets>,
    /// Users, browser sessions and signing in ([`user::Accounts`]).
    pub(crate) accounts: user::Accounts,
    /// Clients: the registry, client authentication, dynamic registration and client
    /// documents ([`client::Clients`]).
    pub(crate) clients: Arc<client::Clients>,
    /// The authorization endpoint, consent, pushed requests and the device flow
    /// ([`authorize::Authorization`]).
    pub(crate) authorization: authorize::Authorization,
    /// Grants, minting, exchange, introspection, revocation and UserInfo ([`token::Tokens`]).
    pub(crate) tokens: token::Tokens,
    /// DPoP's replay memory, nonces and per-key budget ([`dpop::Dpop`]).
    pub(crate) dpop: Arc<dpop::Dpop>,
    /// The sealed scratch space ([`scratch::Scratch`]).
    pub(crate) scratch: Arc<scratch::Scratch>,
    pub keys: Arc<Keys>,
    /// The configuration, shared with the services.
    pub config: Arc<Config>,
    /// The issuer identifier, without a trailing slash.
    pub issuer: String,
    /// Counters for `/metrics`.
    pub metrics: Arc<crate::metrics::Metrics>,
    /// Requests per client address at the token, revocation, introspection and login endpoints.
    pub address_rate: crate::rate_limit::RateLimiter,
    /// The active-refresh-token gauge, a full scan, taken in the background no more often
    /// than it is worth.
    active_refresh_tokens: crate::metrics::CostlyCount<u64>,
    /// Requests to URLs chosen by others (the playground's API calls).
    pub outbound: crate::outbound::Outbound,
}

/// What the front hands the services it builds after the first ones: the store (each service
/// keeps a handle for each store trait it uses, and no more), the services they share, and
/// the settings.
pub(crate) struct Shared<'a> {
    pub store: &'a Arc<dyn Store>,
    pub durability: &'a Durability,
    pub scratch: &'a Arc<scratch::Scratch>,
    pub secrets: &'a Arc<secrets::Secrets>,
    pub clients: &'a Arc<client::Clients>,
    pub dpop: &'a Arc<dpop::Dpop>,
    pub audit: &'a Arc<audit::Audit>,
    pub keys: &'a Arc<Keys>,
    pub metrics: &'a Arc<crate::metrics::Metrics>,
    /// Requests per authenticated client, one budget for every endpoint it applies at.
    pub client_rate: &'a Arc<crate::rate_limit::RateLimiter>,
    pub config: &'a Arc<Config>,
    pub issuer: &'a str,
    pub default_audience: &'a str,
}

impl Provider {
    pub fn new(store: Arc<dyn Store>, keys: Arc<Keys>, config: Config, issuer: &str) -> Provider {
        let issuer = issuer.trim_end_matches('/').to_string();
        let default_audience = config.default_audience.clone().unwrap_or_else(|| issuer.clone());
        let (client_rate, address_rate) = (config.rate_limit_per_client, config.rate_limit_per_address);
        let durability = Durability(store.clone());
        let audit = Arc::new(audit::Audit::new(store.clone(), durability.clone(), &config));
        let secrets = Arc::new(secrets::Secrets::new(store.clone()));
        let scratch = Arc::new(scratch::Scratch::new(store.clone(), &secrets));
        let accounts = user::Accounts::new(&store, &durability, &secrets, &scratch, &audit, &config, &issuer);
        let config = Arc::new(config);
        let clients = Arc::new(client::Clients::new(
            &store,
            &audit,
            &keys,
            &config,
            &issuer,
            &default_audience,
        ));
        let client_rate = Arc::new(crate::rate_limit::RateLimiter::new(client_rate));
        let dpop = Arc::new(dpop::Dpop::new(store.clone(), &secrets, &config));
        let metrics = Arc::new(crate::metrics::Metrics::new());
        let shared = Shared {
            store: &store,
            durability: &durability,
            scratch: &scratch,
            secrets: &secrets,
            clients: &clients,
            dpop: &dpop,
            audit: &audit,
            keys: &keys,
            metrics: &metrics,
            client_rate: &client_rate,
            config: &config,
            issuer: &issuer,
            default_audience: &default_audience,
        };
        let authorization = authorize::Authorization::new(&shared);
        let tokens = token::Tokens::new(&shared);
        let outbound = crate::outbound::Outbound::new(config.outbound.clone());
        Provider {
            store,
            audit,
            secrets,
            accounts,
            clients,
            authorization,
            tokens,
            dpop,
            scratch,
            keys,
            config,
            issuer,
            metrics,
            address_rate: crate::rate_limit::RateLimiter::new(address_rate),
            active_refresh_tokens: Default::default(),
            outbound,
        }
    }

    /// The same provider, keeping its server secrets sealed under `kek` in the store (cluster
    /// mode: see [`secrets`]).
    pub(crate) fn with_sealed_secrets(self, kek: crate::keys::database::KeyEncryptionKey) -> Provider {
        self.secrets.seal_with(kek);
        self
    }

    /// An absolute URL on this server.
    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.issuer, path)
    }

    /// The readiness checks of `/readyz`.
    pub async fn readiness(&self) -> Readiness {
        let storage = match self.store.probe_write().await {
            Ok(()) => self.store.durable().await.map_err(|e| e.to_string()),
            Err(e) => Err(e.to_string()),
        };
        let signing_key = self
            .keys
            .current()
            .sign_jwt("JWT", &serde_json::json!({ "iss": self.issuer }))
            .map(|_| ())
            .map_err(|e| e.to_string());
        Readiness { storage, signing_key }
    }

    /// Brings records an earlier version wrote up to date, each upgrade once per store
    /// ([`Store::upgraded`]), so a start reads no record once they ran (issue 29: every start
    /// read every client). Returns how many self-registered clients stopped skipping consent.
    pub(crate) async fn upgrade(&self) -> Result<usize, Error> {
        const SELF_SERVICE_CONSENT: &str = "self-service-apps-ask-consent";
        if self.store.upgraded(SELF_SERVICE_CONSENT).await? {
            return Ok(0);
        }
        let demoted = self.clients.revoke_self_service_first_party().await?;
        // Recorded only once every client was read: a start cut short does it all again.
        self.store.mark_upgraded(SELF_SERVICE_CONSENT).await?;
        Ok(demoted)
    }

    /// Removes expired codes, tokens, sessions and revocation entries, grants no token can use
    /// any more (see [`crate::store::Store::purge_expired`]), and dynamically registered
    /// clients never issued a token within `registration_unused_client_ttl` (review finding 6:
    /// open registration could otherwise fill the store for good).
    pub async fn purge_expired(&self) -> Result<crate::store::Purged, Error> {
        let now = now();
        let unused_cutoff = now - self.config.registration.unused_client_ttl.as_secs() as i64;
        let unused_clients = self.purge_unused_registrations(unused_cutoff).await?;
        let longest = self.longest_access_token_ttl().await?;
        // A grant without a refresh family is also kept while a device authorization may still
        // collect it, and then while the access token collected lives: the user's approval
        // writes the grant, and its first tokens come with the device's next poll, up to the
        // device code's lifetime later.
        let unclaimed = longest.saturating_add(self.config.device_code_ttl.as_secs());
        let before = |secs: u64| now.saturating_sub(i64::try_from(secs).unwrap_or(i64::MAX));
        let mut purged = self
            .store
            .purge_expired(now, before(longest), before(unclaimed))
            .await?;
        purged.clients = unused_clients;
        purged.audit_entries = self.audit.purge_audit().await?;
        Ok(purged)
    }

    /// [`Provider::purge_expired`] asked for by an operator (`tessera purge`), recorded in the
    /// audit trail either way.
    pub async fn purge_now(&self, by: &audit::Caller) -> Result<crate::store::Purged, Error> {
        let purged = self.purge_expired().await;
        let outcome = match &purged {
            Ok(purged) if purged.busy => "busy",
            Ok(_) => "ok",
            Err(_) => "failed",
        };
        self.audit.record(by, "data.purge", None, outcome).await;
        purged
    }

    /// Removes dynamically registered clients never used and created at or before `cutoff`,
    /// oldest first, at most [`UNUSED_REGISTRATIONS_PER_PURGE`] a pass (the rest wait for the
    /// next): read from an index, so a pass costs what it removes, not what is registered.
    async fn purge_unused_registrations(&self, cutoff: i64) -> Result<u64, Error> {
        const PAGE: usize = 500;
        let mut removed = 0;
        for _ in 0..UNUSED_REGISTRATIONS_PER_PURGE / PAGE {
            let page = self.store.unused_registrations(cutoff, PAGE).await?;
            for client in &page {
                // Only if still unused: it may have issued its first token since the page.
                if self.store.delete_unused_client(&client.client_id).await? {
                    removed += 1;
                    let target = audit::Target::client(client);
                    self.audit
                        .record(&audit::Caller::system(), "client.purge_unused", Some(target), "ok")
                        .await;
                }
            }
            if page.len() < PAGE {
                break;
            }
        }
        Ok(removed)
    }

    /// Copies the store and the keyring into the new folder `to` while serving (`tessera
    /// backup`, see [`crate::backup`]); recorded in the audit trail either way.
    pub async fn back_up(&self, by: &audit::Caller, to: &std::path::Path) -> anyhow::Result<String> {
        let done = crate::backup::back_up(self.store.as_ref(), self.keys.vault(), to).await;
        let folder = to.display().to_string();
        let target = audit::Target {
            kind: "backup",
            id: "",
            name: &folder,
        };
        let outcome = if done.is_ok() { "ok" } else { "failed" };
        self.audit.record(by, "data.backup", Some(target), outcome).await;
        done
    }

    /// How many refresh tokens can be used now ([`Provider::active_refresh_tokens`]'s last
    /// count); `None` before the first count finished.
    pub(crate) async fn active_refresh_tokens(&self) -> Option<u64> {
        let store = self.store.clone();
        self.active_refresh_tokens
            .read(|| async move {
                let active = store.count_active_refresh_tokens(now()).await.ok()?;
                Some((active, active))
            })
            .await
    }

    /// The `/metrics` text, with the gauges read now.
    pub(crate) async fn metrics_text(&self) -> String {
        let active = match self.active_refresh_tokens().await {
            Some(active) => i64::try_from(active).unwrap_or(i64::MAX),
            None => -1, // not counted yet, or the count failed
        };
        let age = now() - self.keys.current().signing_created_at;
        let database = self.store.database_health().await;
        self.metrics.render(active, age, database)
    }
}

/// Waiting until earlier writes are on disk ([`Store::durable`]), for services that hand out
/// what a crash must not forget. Durability is the store's as a whole, not one record kind's,
/// so this handle holds the whole store, and offers nothing else of it.
#[derive(Clone)]
pub(crate) struct Durability(Arc<dyn Store>);

impl Durability {
    /// Resolves once every write made before the call is durable.
    pub(crate) fn durable(&self) -> crate::store::Durable {
        self.0.durable()
    }
}

/// The outcome of each readiness check.
pub struct Readiness {
    /// The store takes writes and makes them durable.
    pub storage: Result<(), String>,
    pub signing_key: Result<(), String>,
}

/// How many unused registrations one purge pass removes at most.
const UNUSED_REGISTRATIONS_PER_PURGE: usize = 10_000;

/// A fresh random string of `bytes` bytes of entropy, base64url without padding.
pub fn random_token(bytes: usize) -> String {
    let mut buf = vec![0u8; bytes];
    // The system RNG failing is unrecoverable for a token server; ring documents it as
    // impossible on supported platforms.
    SystemRandom::new()
        .fill(&mut buf)
        .expect("the operating system's random number generator failed");
    URL_SAFE_NO_PAD.encode(buf)
}

/// A fresh random identifier (128 bits, lowercase hex): safe in URLs, forms and command lines,
/// where a base64url value starting with '-' would read as a flag.
pub fn random_id() -> String {
    let mut buf = [0u8; 16];
    SystemRandom::new()
        .fill(&mut buf)
        .expect("the operating system's random number generator failed");
    buf.iter().map(|b| format!("{b:02x}")).collect()
}

/// SHA-256 of a secret. Every secret Tessera hands out carries at least 128 bits of entropy,
/// so a fast hash is as strong as a password KDF here and costs microseconds, not milliseconds.
pub fn secret_hash(secret: &str) -> SecretHash {
    let digest = ring::digest::digest(&ring::digest::SHA256, secret.as_bytes());
    let mut out = [0u8; 32];
    out.copy_from_slice(digest.as_ref());
    out
}
