//! Configuration: defaults, an optional TOML file and command-line/environment overrides,
//! turned once at startup into one validated [`Config`].

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use url::Url;

use crate::net::AddressRange;
use crate::rate_limit::Rate;

/// A scope the server knows, with the text the consent page shows for it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ScopeInfo {
    pub name: String,
    pub description: String,
}

const OPENID_DESCRIPTION: &str = "Know who you are (your user id)";
const PROFILE_DESCRIPTION: &str = "See your name, username, picture and other profile details";
const EMAIL_DESCRIPTION: &str = "See your email address";

/// The OpenID Connect scopes: always configured, whatever the file's `[scopes]` says.
fn oidc_scopes() -> [ScopeInfo; 3] {
    [
        ("openid", OPENID_DESCRIPTION),
        ("profile", PROFILE_DESCRIPTION),
        ("email", EMAIL_DESCRIPTION),
    ]
    .map(|(name, description)| ScopeInfo {
        name: name.into(),
        description: description.into(),
    })
}

/// Who may register clients at the RFC 7591 registration endpoint.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RegistrationMode {
    /// No registration endpoint (the default): clients come from the CLI, the pages or the
    /// admin API.
    Off,
    /// Anyone may register a client (within the registration policy).
    Open,
    /// Registration needs one of the configured initial access tokens (RFC 7591 §3).
    Token,
}

/// Whether a client may be identified by the https URL of its metadata (Client ID Metadata
/// Documents, draft-ietf-oauth-client-id-metadata-document).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ClientDocumentsMode {
    /// Client ids are only those registered here (the default).
    Off,
    /// Any https URL with a path is a client id, within the registration policy.
    Open,
    /// Only URLs on the hosts of `client_id_metadata_document_hosts`.
    Allowlist,
}

/// Whether people sign in with a second factor (`mfa`, `operator_mfa`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MfaPolicy {
    /// Passwords only: nobody enrols, and factors already enrolled are not asked for.
    Off,
    /// Users may enrol second factors; a user who has one is asked for it at every login.
    Optional,
    /// Every user must have one: a user without one enrols at their next login.
    Required,
}

/// Which Client ID Metadata Documents are accepted.
#[derive(Clone, Debug)]
pub struct ClientDocumentsPolicy {
    pub mode: ClientDocumentsMode,
    /// The hosts of `allowlist` mode, lowercase.
    pub hosts: Vec<String>,
}

/// The dynamic client registration policy.
#[derive(Clone, Debug)]
pub struct RegistrationPolicy {
    pub mode: RegistrationMode,
    /// Initial access tokens accepted in `token` mode (compared in constant time).
    pub initial_access_tokens: Vec<String>,
    /// Scopes a registered client may ask for; `None`: every configured scope.
    pub scopes: Option<Vec<String>>,
    /// Whether confidential registered clients may use client_credentials.
    pub allow_client_credentials: bool,
    /// Whether registered clients may use token exchange (RFC 8693), limited to `resources`.
    pub allow_token_exchange: bool,
    /// Whether dynamically registered clients may require two-factor logins (`require_mfa`),
    /// which makes their users add a factor on the way.
    pub allow_require_mfa: bool,
    /// RFC 8707 resources every registered client may ask tokens for (Model Context Protocol
    /// clients send their server's URL as `resource`).
    pub resources: Vec<String>,
    /// Registrations one client address may make (per hour, all at once if it likes).
    pub limit_per_address: Rate,
    /// A registered client that has not been issued a token this long after registering is
    /// deleted by the purge.
    pub unused_client_ttl: Duration,
}

impl Default for RegistrationPolicy {
    fn default() -> Self {
        RegistrationPolicy {
            mode: RegistrationMode::Off,
            initial_access_tokens: Vec::new(),
            scopes: None,
            allow_client_credentials: false,
            allow_token_exchange: false,
            allow_require_mfa: false,
            resources: Vec::new(),
            limit_per_address: Rate::per_hour(20),
            unused_client_ttl: Duration::from_secs(24 * 3600),
        }
    }
}

/// How strict the throttle is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ThrottlePolicy {
    /// Failures allowed per (username, address) before lockouts start.
    pub max_failures: u32,
    /// The first lockout; each further failure doubles it.
    pub lockout: Duration,
    /// The longest lockout.
    pub max_lockout: Duration,
    /// Failures allowed per client address (higher: many people may share an address).
    pub max_failures_per_address: u32,
    /// Failures of one username, from any address, after which attempts on it are slowed.
    pub max_failures_per_username: u32,
}

impl Default for ThrottlePolicy {
    fn default() -> Self {
        ThrottlePolicy {
            max_failures: 5,
            lockout: Duration::from_secs(30),
            max_lockout: Duration::from_secs(15 * 60),
            max_failures_per_address: 20,
            max_failures_per_username: 100,
        }
    }
}

/// The validated server configuration.
#[derive(Clone, Debug)]
pub struct Config {
    /// The issuer identifier; `None` means "http://" + the bound address, known after binding.
    pub issuer: Option<Url>,
    pub addr: String,
    pub data_dir: PathBuf,
    pub keys_dir: PathBuf,
    pub access_token_ttl: Duration,
    pub refresh_token_ttl: Duration,
    /// ID token lifetime (OpenID Connect).
    pub id_token_ttl: Duration,
    /// Authorization code lifetime (RFC 6749 §4.1.2 recommends at most 10 minutes; we use 60 s).
    pub code_ttl: Duration,
    /// Device code and user code lifetime (RFC 8628 §3.2 `expires_in`).
    pub device_code_ttl: Duration,
    /// How long a pushed authorization request's `request_uri` may be first used (RFC 9126
    /// §2.2 `expires_in`).
    pub par_ttl: Duration,
    /// Every client must push its authorization requests first (RFC 9126 §5).
    pub require_pushed_authorization_requests: bool,
    /// How long audit entries are kept before the purge removes them.
    pub audit_retention: Duration,
    /// Changes one ordinary user, self-registered client or anonymous address may make (each
    /// is an audit entry, so the budget bounds how fast anyone but an operator grows the trail).
    pub self_service_changes: Rate,
    /// Pushed authorization requests one client address may make for clients anyone can
    /// push for (public ones, and those users registered themselves).
    pub pushed_requests_per_address: Rate,
    /// The least time between a device's polls of the token endpoint (RFC 8628 §3.2 `interval`).
    pub device_code_interval: Duration,
    /// Device authorizations one client address may start an hour (all at once if it likes).
    pub device_authorizations_per_address: Rate,
    pub session_ttl: Duration,
    /// The `aud` of access tokens when the client names no allowed `resource`; defaults to the issuer.
    pub default_audience: Option<String>,
    pub scopes: Vec<ScopeInfo>,
    /// PKCE for confidential clients too (RFC 9700 §2.1.1); public clients always need it.
    pub require_pkce: bool,
    /// Origins allowed to call the token, revocation, JWKS and discovery endpoints from a
    /// browser; empty means any origin (these endpoints never rely on cookies).
    pub cors_origins: Vec<String>,
    /// Largest accepted request body.
    pub max_body_bytes: usize,
    /// `Cache-Control: max-age` of the JWKS and metadata documents.
    pub jwks_max_age: Duration,
    /// How old the signing key may get before the console says a rotation is due.
    pub key_rotation_interval: Duration,
    /// How failed logins are throttled.
    pub login_throttle: ThrottlePolicy,
    /// Serve the built-in test consumer at `/o/playground/` (on with `tessera serve --dev`).
    pub playground: bool,
    /// Dynamic client registration (RFC 7591/7592).
    pub registration: RegistrationPolicy,
    /// How often expired codes, tokens, sessions and revocation entries are purged.
    pub purge_interval: Duration,
    /// Requests per second per authenticated client at the token and introspection endpoints.
    pub rate_limit_per_client: Rate,
    /// Requests per second per client address at the token, revocation, introspection and
    /// login endpoints.
    pub rate_limit_per_address: Rate,
    /// Connections open at once; at the cap new ones wait in the kernel's backlog. With each
    /// connection's request head limited to ~400 KB, this bounds what a flood can take.
    pub max_connections: usize,
    /// A connection with no traffic for this long is closed.
    pub idle_timeout: Duration,
    /// Connections open at once from one client address (trusted proxies are exempt).
    pub max_connections_per_address: usize,
    /// The longest wait for a whole request head, from when the server starts waiting for it
    /// (so also the longest a keep-alive connection stays idle between requests).
    pub request_head_timeout: Duration,
    /// The longest a request body may take to arrive.
    pub request_body_timeout: Duration,
    /// Reverse proxies whose `X-Forwarded-For` is believed when they connect; the client's
    /// address (for rate limits and login throttling) is then the nearest untrusted hop.
    pub trusted_proxies: Vec<AddressRange>,
    /// Password checks (Argon2id, 19 MiB each) running at once; a login beyond them waits
    /// briefly, then is answered 503 with `Retry-After`. This is what bounds the memory a
    /// flood of logins can take.
    pub max_parallel_password_checks: usize,
    /// How requests to URLs chosen by others are made (see [`crate::outbound`]).
    pub outbound: crate::outbound::OutboundPolicy,
    /// How documents clients publish are cached (see [`crate::documents`]).
    pub documents: crate::documents::DocumentPolicy,
    /// Clients identified by the URL of their metadata document.
    pub client_documents: ClientDocumentsPolicy,
    /// Cluster mode: a PostgreSQL database shared by every node, instead of the data folder
    /// (`database_url`, a `postgres://` URL; `sslmode=require` asks for TLS).
    pub database_url: Option<String>,
    /// How the database is used, when there is one.
    pub database: DatabaseSettings,
    /// How long after its `iat` a DPoP proof is accepted (RFC 9449 §11.1); its `jti` is
    /// remembered that long.
    pub dpop_proof_max_age: Duration,
    /// Require a server nonce in DPoP proofs (RFC 9449 §8).
    pub dpop_nonce: bool,
    /// Second factors for users (default `optional`).
    pub mfa: MfaPolicy,
    /// Second factors for operators (default `required`): an operator without one enrols
    /// before reaching the console.
    pub operator_mfa: MfaPolicy,
    /// Clients that may introspect any token (resource servers); every other client learns
    /// only about its own tokens (RFC 7662 §4).
    pub introspection_clients: Vec<String>,
}

/// Cluster mode's database settings besides its URL.
#[derive(Clone, Debug)]
pub struct DatabaseSettings {
    /// Connections per node at most.
    pub pool_size: usize,
    /// The longest a request waits for a connection (or for the database to answer a connect).
    pub pool_wait: Duration,
    /// Extra certificate authorities (PEM) for TLS to the database.
    pub ca_file: Option<PathBuf>,
    /// The file holding the key-encryption key that seals the keyring's private keys (else
    /// `TESSERA_KEY_ENCRYPTION_KEY`).
    pub key_encryption_key_file: Option<PathBuf>,
}

impl Default for DatabaseSettings {
    fn default() -> Self {
        DatabaseSettings {
            pool_size: 16,
            pool_wait: Duration::from_secs(2),
            ca_file: None,
            key_encryption_key_file: None,
        }
    }
}

fn check_database_url(url: &str) -> Result<String, ConfigError> {
    if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        Ok(url.to_string())
    } else {
        Err(ConfigError::Invalid(
            "database_url",
            "must be a postgres:// or postgresql:// URL".into(),
        ))
    }
}

impl Default for Config {
    fn default() -> Self {
        Config {
            issuer: None,
            addr: "127.0.0.1:8000".into(),
            data_dir: "data".into(),
            keys_dir: "keys".into(),
            access_token_ttl: Duration::from_secs(3600),
            refresh_token_ttl: Duration::from_secs(30 * 24 * 3600),
            id_token_ttl: Duration::from_secs(3600),
            code_ttl: Duration::from_secs(60),
            device_code_ttl: Duration::from_secs(600),
            par_ttl: Duration::from_secs(60),
            require_pushed_authorization_requests: false,
            audit_retention: Duration::from_secs(90 * 86400),
            self_service_changes: Rate::per_minute(30),
            pushed_requests_per_address: Rate::per_minute(30),
            device_code_interval: Duration::from_secs(5),
            device_authorizations_per_address: Rate::per_hour(60),
            session_ttl: Duration::from_secs(12 * 3600),
            default_audience: None,
            scopes: vec![
                ScopeInfo {
                    name: "openid".into(),
                    description: OPENID_DESCRIPTION.into(),
                },
                ScopeInfo {
                    name: "profile".into(),
                    description: PROFILE_DESCRIPTION.into(),
                },
                ScopeInfo {
                    name: "email".into(),
                    description: EMAIL_DESCRIPTION.into(),
                },
                ScopeInfo {
                    name: "read".into(),
                    description: "Read your data".into(),
                },
                ScopeInfo {
                    name: "write".into(),
                    description: "Change your data".into(),
                },
            ],
            require_pkce: true,
            cors_origins: Vec::new(),
            max_body_bytes: 64 * 1024,
            jwks_max_age: Duration::from_secs(300),
            key_rotation_interval: Duration::from_secs(90 * 86400),
            login_throttle: ThrottlePolicy::default(),
            playground: false,
            registration: RegistrationPolicy::default(),
            purge_interval: Duration::from_secs(600),
            rate_limit_per_client: Rate::per_second(500),
            rate_limit_per_address: Rate::per_second(1000),
            max_connections: 1024,
            idle_timeout: Duration::from_secs(60),
            max_connections_per_address: 64,
            request_head_timeout: Duration::from_secs(10),
            request_body_timeout: Duration::from_secs(10),
            trusted_proxies: Vec::new(),
            introspection_clients: Vec::new(),
            max_parallel_password_checks: default_parallel_password_checks(),
            outbound: Default::default(),
            documents: Default::default(),
            client_documents: ClientDocumentsPolicy {
                mode: ClientDocumentsMode::Off,
                hosts: Vec::new(),
            },
            database_url: None,
            database: DatabaseSettings::default(),
            dpop_proof_max_age: Duration::from_secs(60),
            dpop_nonce: false,
            mfa: MfaPolicy::Optional,
            operator_mfa: MfaPolicy::Required,
        }
    }
}

/// The TOML file's shape: every field optional, durations in seconds.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct FileConfig {
    pub issuer: Option<String>,
    pub addr: Option<String>,
    pub data_dir: Option<PathBuf>,
    pub keys_dir: Option<PathBuf>,
    pub access_token_ttl: Option<u64>,
    pub refresh_token_ttl: Option<u64>,
    pub id_token_ttl: Option<u64>,
    pub session_ttl: Option<u64>,
    /// Seconds a device code (and its user code) stays valid (RFC 8628; default 600).
    pub device_code_ttl: Option<u64>,
    /// Seconds a pushed authorization request's `request_uri` may be first used in (RFC 9126;
    /// default 60).
    pub par_ttl: Option<u64>,
    /// Refuse authorization requests that were not pushed to `/o/par/` first (default false).
    pub require_pushed_authorization_requests: Option<bool>,
    /// Seconds audit entries are kept (default 7776000, 90 days).
    pub audit_retention: Option<u64>,
    /// Changes per minute one ordinary user, self-registered client or anonymous address may
    /// make: app registrations and edits, profile saves, withdrawals (default 30; 0 = no limit).
    pub self_service_changes_per_minute: Option<u32>,
    /// Pushed authorization requests per minute one client address may make for public or
    /// self-registered clients (default 30, all at once if it likes; 0 = no limit).
    pub pushed_requests_per_address_per_minute: Option<u32>,
    /// Seconds a device must wait between polls of the token endpoint (RFC 8628; default 5).
    pub device_code_interval: Option<u64>,
    /// Device authorizations per hour one client address may start (default 60; 0 = no limit).
    pub device_authorizations_per_address_per_hour: Option<u32>,
    pub default_audience: Option<String>,
    /// Scope name -> description; replaces the default `read`/`write` set (the OpenID Connect
    /// scopes `openid`, `profile` and `email` stay, with their descriptions overridable here).
    pub scopes: Option<BTreeMap<String, String>>,
    pub require_pkce: Option<bool>,
    pub cors_origins: Option<Vec<String>>,
    pub max_body_bytes: Option<usize>,
    pub jwks_max_age: Option<u64>,
    /// Seconds the signing key may age before the console says a rotation is due (default
    /// 7776000, 90 days).
    pub key_rotation_interval: Option<u64>,
    /// Failed logins allowed per username before lockouts start.
    pub login_max_failures: Option<u32>,
    /// Failed logins allowed per client address before lockouts start.
    pub login_max_failures_per_address: Option<u32>,
    /// First lockout in seconds; it doubles with each further failure.
    pub login_lockout: Option<u64>,
    /// Longest lockout in seconds.
    pub login_max_lockout: Option<u64>,
    /// Serve the built-in test consumer at `/o/playground/`.
    pub playground: Option<bool>,
    /// Dynamic client registration: `off` (default), `open` or `token`.
    pub registration: Option<RegistrationMode>,
    /// Initial access tokens for `registration = "token"`.
    pub registration_initial_access_tokens: Option<Vec<String>>,
    /// Scopes registered clients may ask for (default: every configured scope).
    pub registration_scopes: Option<Vec<String>>,
    /// Let confidential registered clients use client_credentials (default false).
    pub registration_allow_client_credentials: Option<bool>,
    /// Let registered clients use token exchange, between `registration_resources` only
    /// (default false).
    pub registration_allow_token_exchange: Option<bool>,
    /// Let dynamically registered clients require two-factor logins (default false).
    pub registration_allow_require_mfa: Option<bool>,
    /// Resources (token audiences) registered clients may ask for.
    pub registration_resources: Option<Vec<String>>,
    /// Registrations per hour one client address may make (default 20); 0 turns the limit off.
    pub registration_limit_per_address: Option<u32>,
    /// Seconds after which a registered client that was never issued a token is deleted
    /// (default 86400).
    pub registration_unused_client_ttl: Option<u64>,
    /// Seconds between purges of expired records.
    pub purge_interval: Option<u64>,
    /// Requests per second per client (burst: twice that); 0 turns the limit off.
    pub rate_limit_per_client: Option<u32>,
    /// Requests per second per client address (burst: twice that); 0 turns the limit off.
    pub rate_limit_per_address: Option<u32>,
    /// Connections open at once (at least 1).
    pub max_connections: Option<usize>,
    /// Seconds without traffic after which a connection is closed.
    pub idle_timeout: Option<u64>,
    /// Connections open at once from one client address (at least 1; trusted proxies exempt).
    pub max_connections_per_address: Option<usize>,
    /// Seconds a request head may take to arrive whole (also the idle keep-alive limit).
    pub request_head_timeout: Option<u64>,
    /// Seconds a request body may take to arrive.
    pub request_body_timeout: Option<u64>,
    /// Addresses or CIDR blocks of reverse proxies whose `X-Forwarded-For` is believed.
    pub trusted_proxies: Option<Vec<String>>,
    /// Failed logins of one username (from any address) after which attempts are slowed.
    pub login_max_failures_per_username: Option<u32>,
    /// Password checks running at once (at least 1; default: two per core, at most 13,
    /// i.e. 256 MiB of Argon2 memory).
    pub max_parallel_password_checks: Option<usize>,
    /// Let requests to URLs chosen by others reach loopback, private and other special-use
    /// addresses (default false; for development and tests only).
    pub outbound_allow_private_addresses: Option<bool>,
    /// A PEM bundle of certificate authorities trusted, besides the public ones, for those
    /// requests.
    pub outbound_ca_file: Option<PathBuf>,
    /// Seconds such a request may take in all (default 10).
    pub outbound_timeout: Option<u64>,
    /// Client ID Metadata Documents: `off` (default), `open` or `allowlist`.
    pub client_id_metadata_documents: Option<ClientDocumentsMode>,
    /// The hosts whose documents `allowlist` accepts.
    pub client_id_metadata_document_hosts: Option<Vec<String>>,
    /// Seconds a fetched client document (metadata, JWKS) is used at least (default 60)...
    pub document_cache_min_ttl: Option<u64>,
    /// ... and at most, whatever its Cache-Control says (default 86400).
    pub document_cache_max_ttl: Option<u64>,
    /// Seconds past that a copy may serve while refetching fails (default 3600; 0: never).
    pub document_stale_ttl: Option<u64>,
    /// Document fetches a minute per host (default 30, 10 at once).
    pub document_fetches_per_host_per_minute: Option<u32>,
    /// Client ids that may introspect tokens issued to other clients.
    pub introspection_clients: Option<Vec<String>>,
    /// Seconds a DPoP proof is accepted after its `iat` (default 60).
    pub dpop_proof_max_age: Option<u64>,
    /// Require a server nonce in DPoP proofs (default false).
    pub dpop_nonce: Option<bool>,
    /// Second factors for users: off, optional (default) or required.
    pub mfa: Option<MfaPolicy>,
    /// Second factors for operators: off, optional or required (default).
    pub operator_mfa: Option<MfaPolicy>,
    /// Cluster mode: the PostgreSQL database every node shares.
    pub database_url: Option<String>,
    /// Connections per node (default 16).
    pub database_pool_size: Option<usize>,
    /// Seconds a request waits for a database connection (default 2).
    pub database_pool_wait: Option<u64>,
    /// Extra certificate authorities (PEM) for TLS to the database.
    pub database_ca_file: Option<PathBuf>,
    /// The file holding the keyring's key-encryption key (cluster mode).
    pub key_encryption_key_file: Option<PathBuf>,
}

/// Values given on the command line or in the environment; they win over the file.
#[derive(Debug, Default, Clone)]
pub struct Overrides {
    pub config_file: Option<PathBuf>,
    pub issuer: Option<String>,
    pub addr: Option<String>,
    pub data_dir: Option<PathBuf>,
    pub keys_dir: Option<PathBuf>,
    /// `serve --dev`: development conveniences on (the playground, calling local APIs).
    pub dev: bool,
    /// `--database-url` / `TESSERA_DATABASE_URL`.
    pub database_url: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {0}: {1}")]
    Read(PathBuf, std::io::Error),
    #[error("config file {0} is invalid: {1}")]
    Parse(PathBuf, toml::de::Error),
    #[error("invalid setting `{0}`: {1}")]
    Invalid(&'static str, String),
}

impl Config {
    fn apply_client_documents(&mut self, file: &FileConfig) -> Result<(), ConfigError> {
        if let Some(mode) = file.client_id_metadata_documents {
            self.client_documents.mode = mode;
        }
        if let Some(hosts) = &file.client_id_metadata_document_hosts {
            let mut allowed = Vec::new();
            for entry in hosts {
                allowed.push(
                    crate::oauth::client::document::document_authority_of(entry).ok_or_else(|| {
                        ConfigError::Invalid(
                            "client_id_metadata_document_hosts",
                            format!("{entry:?} is not a host name, or a host name and port"),
                        )
                    })?,
                );
            }
            self.client_documents.hosts = allowed;
        }
        if self.client_documents.mode == ClientDocumentsMode::Allowlist && self.client_documents.hosts.is_empty() {
            return Err(ConfigError::Invalid(
                "client_id_metadata_documents",
                "\"allowlist\" needs client_id_metadata_document_hosts".into(),
            ));
        }
        let documents = &mut self.documents;
        if let Some(v) = file.document_cache_min_ttl {
            documents.min_ttl = Duration::from_secs(v);
        }
        if let Some(v) = file.document_cache_max_ttl {
            documents.max_ttl = Duration::from_secs(v);
        }
        if documents.max_ttl < documents.min_ttl {
            return Err(ConfigError::Invalid(
                "document_cache_max_ttl",
                "must be at least document_cache_min_ttl".into(),
            ));
        }
        if let Some(v) = file.document_stale_ttl {
            documents.stale_ttl = Duration::from_secs(v);
        }
        if let Some(v) = file.document_fetches_per_host_per_minute {
            documents.fetches_per_host = Rate {
                per_second: v as f64 / 60.0,
                burst: (v as f64 / 3.0).ceil().max(1.0),
            };
        }
        Ok(())
    }

    /// Builds the configuration: defaults, then the file named in `overrides`, then the overrides.
    pub fn load(overrides: &Overrides) -> Result<Config, ConfigError> {
        let file = match &overrides.config_file {
            Some(path) => read_file(path)?,
            None => FileConfig::default(),
        };
        let mut config = Config::default();
        config.apply(file)?;
        if let Some(issuer) = &overrides.issuer {
            config.issuer = Some(parse_issuer(issuer)?);
        }
        if let Some(addr) = &overrides.addr {
            config.addr = addr.clone();
        }
        if let Some(dir) = &overrides.data_dir {
            config.data_dir = dir.clone();
        }
        if let Some(dir) = &overrides.keys_dir {
            config.keys_dir = dir.clone();
        }
        if let Some(url) = &overrides.database_url {
            config.database_url = Some(check_database_url(url)?);
        }
        if overrides.dev {
            // Development: the playground, which calls APIs on this machine.
            config.playground = true;
            config.outbound.allow_private_addresses = true;
        }
        Ok(config)
    }

    fn apply(&mut self, file: FileConfig) -> Result<(), ConfigError> {
        self.apply_client_documents(&file)?;
        if let Some(v) = file.device_authorizations_per_address_per_hour {
            self.device_authorizations_per_address = if v == 0 { Rate::OFF } else { Rate::per_hour(v) };
        }
        let secs = Duration::from_secs;
        if let Some(issuer) = file.issuer {
            self.issuer = Some(parse_issuer(&issuer)?);
        }
        if let Some(v) = file.addr {
            self.addr = v;
        }
        if let Some(v) = file.data_dir {
            self.data_dir = v;
        }
        if let Some(v) = file.keys_dir {
            self.keys_dir = v;
        }
        for (name, value, slot) in [
            ("access_token_ttl", file.access_token_ttl, &mut self.access_token_ttl),
            ("refresh_token_ttl", file.refresh_token_ttl, &mut self.refresh_token_ttl),
            ("id_token_ttl", file.id_token_ttl, &mut self.id_token_ttl),
            ("session_ttl", file.session_ttl, &mut self.session_ttl),
            ("device_code_ttl", file.device_code_ttl, &mut self.device_code_ttl),
            ("par_ttl", file.par_ttl, &mut self.par_ttl),
            ("audit_retention", file.audit_retention, &mut self.audit_retention),
            (
                "key_rotation_interval",
                file.key_rotation_interval,
                &mut self.key_rotation_interval,
            ),
            (
                "device_code_interval",
                file.device_code_interval,
                &mut self.device_code_interval,
            ),
            ("purge_interval", file.purge_interval, &mut self.purge_interval),
            (
                "dpop_proof_max_age",
                file.dpop_proof_max_age,
                &mut self.dpop_proof_max_age,
            ),
            ("idle_timeout", file.idle_timeout, &mut self.idle_timeout),
            (
                "registration_unused_client_ttl",
                file.registration_unused_client_ttl,
                &mut self.registration.unused_client_ttl,
            ),
            (
                "request_head_timeout",
                file.request_head_timeout,
                &mut self.request_head_timeout,
            ),
            (
                "request_body_timeout",
                file.request_body_timeout,
                &mut self.request_body_timeout,
            ),
        ] {
            if let Some(v) = value {
                if v == 0 {
                    return Err(ConfigError::Invalid(name, "must be at least 1 second".into()));
                }
                *slot = secs(v);
            }
        }
        if let Some(v) = file.default_audience {
            self.default_audience = Some(v);
        }
        if let Some(scopes) = file.scopes {
            for name in scopes.keys() {
                if !crate::syntax::is_scope_token(name) {
                    return Err(ConfigError::Invalid(
                        "scopes",
                        format!("{name:?} is not a valid scope name (RFC 6749 §3.3)"),
                    ));
                }
            }
            let mut all: Vec<ScopeInfo> = oidc_scopes()
                .into_iter()
                .filter(|s| !scopes.contains_key(&s.name))
                .collect();
            all.extend(
                scopes
                    .into_iter()
                    .map(|(name, description)| ScopeInfo { name, description }),
            );
            self.scopes = all;
        }
        if let Some(v) = file.require_pushed_authorization_requests {
            self.require_pushed_authorization_requests = v;
        }
        if let Some(v) = file.self_service_changes_per_minute {
            self.self_service_changes = if v == 0 { Rate::OFF } else { Rate::per_minute(v) };
        }
        if let Some(v) = file.pushed_requests_per_address_per_minute {
            self.pushed_requests_per_address = if v == 0 { Rate::OFF } else { Rate::per_minute(v) };
        }
        if let Some(v) = file.require_pkce {
            self.require_pkce = v;
        }
        if let Some(v) = file.dpop_nonce {
            self.dpop_nonce = v;
        }
        if let Some(v) = file.mfa {
            self.mfa = v;
        }
        if let Some(v) = file.operator_mfa {
            self.operator_mfa = v;
        }
        if let Some(v) = file.cors_origins {
            self.cors_origins = v;
        }
        if let Some(v) = file.max_body_bytes {
            self.max_body_bytes = v;
        }
        if let Some(v) = file.jwks_max_age {
            self.jwks_max_age = secs(v);
        }
        let throttle = &mut self.login_throttle;
        throttle.max_failures = file.login_max_failures.unwrap_or(throttle.max_failures);
        throttle.max_failures_per_address = file
            .login_max_failures_per_address
            .unwrap_or(throttle.max_failures_per_address);
        throttle.max_failures_per_username = file
            .login_max_failures_per_username
            .unwrap_or(throttle.max_failures_per_username);
        throttle.lockout = file.login_lockout.map(secs).unwrap_or(throttle.lockout);
        throttle.max_lockout = file.login_max_lockout.map(secs).unwrap_or(throttle.max_lockout);
        if let Some(v) = file.playground {
            self.playground = v;
        }
        use Rate;
        if let Some(v) = file.rate_limit_per_client {
            self.rate_limit_per_client = if v == 0 { Rate::OFF } else { Rate::per_second(v) };
        }
        if let Some(clients) = file.introspection_clients {
            self.introspection_clients = clients;
        }
        if let Some(proxies) = file.trusted_proxies {
            self.trusted_proxies = proxies
                .iter()
                .map(|p| p.parse())
                .collect::<Result<_, _>>()
                .map_err(|why| ConfigError::Invalid("trusted_proxies", why))?;
        }
        match file.max_parallel_password_checks {
            Some(0) => {
                return Err(ConfigError::Invalid(
                    "max_parallel_password_checks",
                    "must be at least 1".into(),
                ))
            }
            Some(v) => self.max_parallel_password_checks = v,
            None => {}
        }
        match file.max_connections {
            Some(0) => return Err(ConfigError::Invalid("max_connections", "must be at least 1".into())),
            Some(v) => self.max_connections = v,
            None => {}
        }
        match file.max_connections_per_address {
            Some(0) => {
                return Err(ConfigError::Invalid(
                    "max_connections_per_address",
                    "must be at least 1".into(),
                ))
            }
            Some(v) => self.max_connections_per_address = v,
            None => {}
        }
        if let Some(v) = file.rate_limit_per_address {
            self.rate_limit_per_address = if v == 0 { Rate::OFF } else { Rate::per_second(v) };
        }
        let registration = &mut self.registration;
        if let Some(mode) = file.registration {
            registration.mode = mode;
        }
        if let Some(tokens) = file.registration_initial_access_tokens {
            if tokens.iter().any(|t| t.len() < 16) {
                return Err(ConfigError::Invalid(
                    "registration_initial_access_tokens",
                    "each token needs at least 16 characters".into(),
                ));
            }
            registration.initial_access_tokens = tokens;
        }
        if registration.mode == RegistrationMode::Token && registration.initial_access_tokens.is_empty() {
            return Err(ConfigError::Invalid(
                "registration",
                "\"token\" needs registration_initial_access_tokens".into(),
            ));
        }
        if let Some(scopes) = file.registration_scopes {
            if let Some(unknown) = scopes.iter().find(|name| !self.scopes.iter().any(|s| &s.name == *name)) {
                return Err(ConfigError::Invalid(
                    "registration_scopes",
                    format!("{unknown:?} is not a configured scope"),
                ));
            }
            self.registration.scopes = Some(scopes);
        }
        if let Some(v) = file.registration_limit_per_address {
            self.registration.limit_per_address = if v == 0 { Rate::OFF } else { Rate::per_hour(v) };
        }
        if let Some(v) = file.registration_allow_client_credentials {
            self.registration.allow_client_credentials = v;
        }
        if let Some(v) = file.registration_allow_token_exchange {
            self.registration.allow_token_exchange = v;
        }
        if let Some(v) = file.registration_allow_require_mfa {
            self.registration.allow_require_mfa = v;
        }
        if let Some(resources) = file.registration_resources {
            if let Some(bad) = resources.iter().find(|r| Url::parse(r).is_err() || r.contains('#')) {
                return Err(ConfigError::Invalid(
                    "registration_resources",
                    format!("{bad:?} is not an absolute URI without a fragment"),
                ));
            }
            self.registration.resources = resources;
        }
        if let Some(v) = file.outbound_allow_private_addresses {
            self.outbound.allow_private_addresses = v;
        }
        if let Some(path) = file.outbound_ca_file {
            let pem = std::fs::read(&path).map_err(|e| ConfigError::Read(path.clone(), e))?;
            self.outbound.extra_roots = reqwest::Certificate::from_pem_bundle(&pem)
                .ok()
                .filter(|roots| !roots.is_empty())
                .ok_or_else(|| {
                    ConfigError::Invalid(
                        "outbound_ca_file",
                        format!("{} holds no PEM certificate", path.display()),
                    )
                })?;
        }
        if let Some(url) = file.database_url {
            self.database_url = Some(check_database_url(&url)?);
        }
        if let Some(size) = file.database_pool_size {
            if size == 0 {
                return Err(ConfigError::Invalid("database_pool_size", "must be at least 1".into()));
            }
            self.database.pool_size = size;
        }
        if let Some(wait) = file.database_pool_wait {
            if wait == 0 {
                return Err(ConfigError::Invalid(
                    "database_pool_wait",
                    "must be at least 1 second".into(),
                ));
            }
            self.database.pool_wait = secs(wait);
        }
        if let Some(path) = file.database_ca_file {
            self.database.ca_file = Some(path);
        }
        if let Some(path) = file.key_encryption_key_file {
            self.database.key_encryption_key_file = Some(path);
        }
        match file.outbound_timeout {
            Some(0) => {
                return Err(ConfigError::Invalid(
                    "outbound_timeout",
                    "must be at least 1 second".into(),
                ))
            }
            Some(v) => self.outbound.timeout = secs(v),
            None => {}
        }
        if throttle.max_lockout < throttle.lockout {
            return Err(ConfigError::Invalid(
                "login_max_lockout",
                "must be at least login_lockout".into(),
            ));
        }
        Ok(())
    }
}

/// Two password checks per core, but no more than 256 MiB of Argon2id memory (19 MiB each).
fn default_parallel_password_checks() -> usize {
    let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
    (cores * 2).clamp(1, 256 / 19)
}

fn read_file(path: &Path) -> Result<FileConfig, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|e| ConfigError::Read(path.to_path_buf(), e))?;
    toml::from_str(&text).map_err(|e| ConfigError::Parse(path.to_path_buf(), e))
}

/// RFC 8414 §2: the issuer is an https (or, for development, http) URL with no query or fragment.
fn parse_issuer(value: &str) -> Result<Url, ConfigError> {
    let url = Url::parse(value).map_err(|e| ConfigError::Invalid("issuer", e.to_string()))?;
    if !matches!(url.scheme(), "https" | "http") || url.query().is_some() || url.fragment().is_some() {
        return Err(ConfigError::Invalid(
            "issuer",
            "must be an http(s) URL without query or fragment".into(),
        ));
    }
    Ok(url)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_values_apply_and_overrides_win() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tessera.toml");
        std::fs::write(
            &path,
            "addr = \"0.0.0.0:9000\"\naccess_token_ttl = 600\n[scopes]\nprofile = \"Your profile\"\nfiles = \"Your files\"\n",
        )
        .unwrap();
        let overrides = Overrides {
            config_file: Some(path),
            addr: Some("127.0.0.1:1".into()),
            ..Default::default()
        };
        let config = Config::load(&overrides).unwrap();
        assert_eq!(config.addr, "127.0.0.1:1");
        assert_eq!(config.access_token_ttl, Duration::from_secs(600));
        let scopes: Vec<_> = config
            .scopes
            .iter()
            .map(|s| (s.name.as_str(), s.description.as_str()))
            .collect();
        assert_eq!(
            scopes,
            [
                ("openid", OPENID_DESCRIPTION),
                ("email", EMAIL_DESCRIPTION),
                ("files", "Your files"),
                ("profile", "Your profile"),
            ],
            "the file's scopes replace read/write; the OpenID Connect ones stay"
        );
    }

    #[test]
    fn unknown_keys_and_bad_issuers_are_rejected() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tessera.toml");
        std::fs::write(&path, "acces_token_ttl = 600\n").unwrap();
        assert!(matches!(
            Config::load(&Overrides {
                config_file: Some(path),
                ..Default::default()
            }),
            Err(ConfigError::Parse(..))
        ));
        let bad = Overrides {
            issuer: Some("https://x/?a=b".into()),
            ..Default::default()
        };
        assert!(Config::load(&bad).is_err());
    }

    #[test]
    fn connection_and_proxy_settings_are_read_and_checked() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tessera.toml");
        let load = |text: &str| {
            std::fs::write(&path, text).unwrap();
            Config::load(&Overrides {
                config_file: Some(path.clone()),
                ..Default::default()
            })
        };
        let config =
            load("trusted_proxies = [\"10.0.0.0/8\", \"::1\"]\nmax_connections = 64\nidle_timeout = 5\n").unwrap();
        assert_eq!(config.trusted_proxies.len(), 2);
        assert!(config.trusted_proxies[0].contains("10.9.8.7".parse().unwrap()));
        assert_eq!(
            (config.max_connections, config.idle_timeout),
            (64, Duration::from_secs(5))
        );
        for bad in [
            "trusted_proxies = [\"10.0.0.0/40\"]",
            "max_connections = 0",
            "idle_timeout = 0",
        ] {
            assert!(matches!(load(bad), Err(ConfigError::Invalid(..))), "{bad}");
        }
    }
}
