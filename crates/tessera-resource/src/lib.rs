//! Verification of Tessera access tokens for resource servers, usable by any Rust API: discover
//! the issuer's metadata (RFC 8414), fetch its JWKS and verify bearer JWTs offline (RFC 9068
//! §4). This crate is what a resource server embeds; it depends on no part of the
//! authorization server (which uses its [`dpop`] and [`jws`] modules in turn, so that a proof
//! is checked by the same code at the server and at a resource).
//!
//! - Keys are cached by `kid` for the JWKS response's `Cache-Control: max-age`. An unknown
//!   `kid` triggers a refetch, but at most once per [`VerifierConfig::min_refetch_interval`],
//!   so a flood of tokens with made-up kids cannot hammer the issuer. A failed refetch keeps
//!   the keys already known.
//! - The algorithm comes from the key, never from the token: a token whose header names
//!   another algorithm (`none`, `HS256` signed with the public key, ...) is rejected.
//! - `typ` must be `at+jwt`; `iss`, `aud`, `exp` and `nbf` are checked with a small leeway.
//! - DPoP-bound tokens (RFC 9449 §7, claim `cnf.jkt`) are accepted only with a proof of their
//!   key ([`Verifier::verify_dpop`]): its signature, `htm`, `htu`, `ath` (the token's hash), an
//!   `iat` within [`VerifierConfig::dpop_max_age`], and a `jti` not seen before, remembered in
//!   a bounded in-memory cache for as long as the proof is accepted. [`Verifier::verify`]
//!   (Bearer) refuses them: a stolen bound token is useless without the key.
//!
//! `bearer` (the `poem` feature, on by default) puts it in front of poem handlers, with RFC 6750
//! errors and RFC 9728 metadata.

#[cfg(feature = "poem")]
pub mod bearer;
pub mod dpop;
pub mod jws;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde_json::Value;
use tokio::sync::{Mutex, RwLock};

/// How a [`Verifier`] checks tokens.
#[derive(Clone, Debug)]
pub struct VerifierConfig {
    /// The issuer identifier, exactly as in the tokens' `iss`.
    pub issuer: String,
    /// The audience this resource server accepts in `aud`.
    pub audience: String,
    /// Clock skew allowed on `exp` and `nbf`.
    pub leeway: Duration,
    /// The shortest time between two JWKS fetches caused by unknown `kid`s.
    pub min_refetch_interval: Duration,
    /// How long after its `iat` a DPoP proof is accepted (and its `jti` remembered).
    pub dpop_max_age: Duration,
    /// The most DPoP `jti`s remembered at once (about 100 bytes each); when they are all live,
    /// new proofs are refused rather than one forgotten early. The default, 500,000, holds
    /// about 7,500 proofs a second sustained with the default `dpop_max_age`.
    pub dpop_replay_capacity: usize,
}

impl VerifierConfig {
    pub fn new(issuer: &str, audience: &str) -> VerifierConfig {
        VerifierConfig {
            issuer: issuer.trim_end_matches('/').to_string(),
            audience: audience.to_string(),
            leeway: Duration::from_secs(30),
            min_refetch_interval: Duration::from_secs(10),
            dpop_max_age: Duration::from_secs(60),
            dpop_replay_capacity: 500_000,
        }
    }
}

/// Why a token was not accepted. The `Display` text is safe to put in `error_description`.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum VerifyError {
    #[error("the token is not a well-formed JWT")]
    Malformed,
    #[error("the token is not an access token (typ must be at+jwt)")]
    WrongType,
    #[error("the token was signed by an unknown key")]
    UnknownKey,
    #[error("the token's algorithm does not match its key")]
    WrongAlgorithm,
    #[error("the token is invalid: {0}")]
    Invalid(String),
    #[error("the issuer's keys could not be fetched: {0}")]
    Fetch(String),
    #[error("the token is DPoP-bound: send it with the DPoP scheme and a proof")]
    DpopBound,
    #[error("the token is not DPoP-bound: send it as Bearer")]
    NotDpopBound,
    /// The DPoP proof failed (RFC 9449 §7.1 `invalid_dpop_proof`).
    #[error("{0}")]
    InvalidProof(String),
}

impl VerifyError {
    /// The RFC 6750 / RFC 9449 error code a resource answers with.
    pub fn code(&self) -> &'static str {
        match self {
            VerifyError::InvalidProof(_) => "invalid_dpop_proof",
            _ => "invalid_token",
        }
    }
}

/// The DPoP side of a request to a resource.
#[derive(Debug, Clone, Copy)]
pub struct DpopRequest<'a> {
    /// The request's `DPoP` header, if it has exactly one (several are refused before this).
    pub proof: Option<&'a str>,
    pub method: &'a str,
    /// The URL the client called, as it knows it (this resource's public URL).
    pub url: &'a str,
}

/// The `jti`s of DPoP proofs accepted recently (by the SHA-256 of key thumbprint and `jti`),
/// each until its proof expires, with an index by expiry so that expired ones leave in order,
/// never by a full scan. Bounded: full of live entries, it refuses new proofs rather than
/// forget one early.
struct ReplayCache {
    seen: std::sync::Mutex<SeenProofs>,
    capacity: usize,
}

#[derive(Default)]
struct SeenProofs {
    until: HashMap<[u8; 32], i64>,
    by_expiry: std::collections::BTreeSet<(i64, [u8; 32])>,
}

impl ReplayCache {
    fn new(capacity: usize) -> ReplayCache {
        ReplayCache {
            seen: Default::default(),
            capacity: capacity.max(1),
        }
    }

    /// Records `key` until the second `until`; whether it was new at `now`.
    fn remember_once(&self, key: &[u8], until: i64, now: i64) -> Result<bool, VerifyError> {
        let mut hash = [0u8; 32];
        hash.copy_from_slice(ring::digest::digest(&ring::digest::SHA256, key).as_ref());
        let mut seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
        while let Some(&(expires, old)) = seen.by_expiry.first() {
            if expires >= now {
                break;
            }
            seen.by_expiry.pop_first();
            if seen.until.get(&old) == Some(&expires) {
                seen.until.remove(&old);
            }
        }
        if seen.until.contains_key(&hash) {
            return Ok(false);
        }
        if seen.until.len() >= self.capacity {
            return Err(VerifyError::InvalidProof(
                "too many DPoP proofs at once; retry shortly".into(),
            ));
        }
        seen.until.insert(hash, until);
        seen.by_expiry.insert((until, hash));
        Ok(true)
    }
}

/// The verified claims of an access token.
#[derive(Clone, Debug)]
pub struct AccessClaims {
    pub sub: String,
    pub client_id: String,
    pub scopes: Vec<String>,
    pub exp: i64,
    /// Every claim, for anything not modelled above.
    pub all: Value,
}

impl AccessClaims {
    pub fn has_scope(&self, scope: &str) -> bool {
        self.scopes.iter().any(|s| s == scope)
    }

    /// The login behind the token, as it says (RFC 9068 §2.2.1): its `acr`, and when it
    /// happened (`auth_time`). A token without a user (client credentials) has neither.
    pub fn acr(&self) -> Option<&str> {
        self.all["acr"].as_str()
    }

    pub fn auth_time(&self) -> Option<i64> {
        self.all["auth_time"].as_i64()
    }

    /// Whether the token's login meets `required` at `now` (Unix seconds): its `acr` is one of
    /// the acceptable values, and it happened at most `max_age` seconds ago (RFC 9470 §3).
    pub fn meets(&self, required: &AuthenticationRequirement, now: i64) -> bool {
        let acr_ok = required.acr_values.is_empty()
            || self
                .acr()
                .is_some_and(|acr| required.acr_values.iter().any(|v| v == acr));
        let age_ok = match required.max_age {
            None => true,
            Some(max_age) => self
                .auth_time()
                .is_some_and(|t| now.saturating_sub(t) <= max_age as i64),
        };
        acr_ok && age_ok
    }
}

/// What a protected route needs of the user's login (RFC 9470): an `acr` among
/// `acr_values` (any, when empty) and/or a login at most `max_age` seconds old.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AuthenticationRequirement {
    pub acr_values: Vec<String>,
    pub max_age: Option<u64>,
}

impl AuthenticationRequirement {
    /// A login at one of these levels.
    pub fn acr(values: &[&str]) -> AuthenticationRequirement {
        AuthenticationRequirement {
            acr_values: values.iter().map(|v| v.to_string()).collect(),
            max_age: None,
        }
    }

    /// And at most `seconds` ago.
    pub fn max_age(self, seconds: u64) -> AuthenticationRequirement {
        AuthenticationRequirement {
            max_age: Some(seconds),
            ..self
        }
    }
}

struct KeyCache {
    keys: HashMap<String, (Algorithm, DecodingKey)>,
    /// When the cached set goes stale (the JWKS response's max-age).
    fresh_until: Instant,
    /// When an unknown kid last caused a fetch.
    last_forced_fetch: Option<Instant>,
}

/// Verifies access tokens of one issuer for one audience. Cheap to share (`Arc<Verifier>`).
pub struct Verifier {
    config: VerifierConfig,
    jwks_uri: String,
    http: reqwest::Client,
    cache: RwLock<KeyCache>,
    /// Serialises fetches so concurrent misses cause one request.
    fetching: Mutex<()>,
    fetches: AtomicU64,
    replays: ReplayCache,
}

/// Seconds since the Unix epoch: the clock `iat`, `exp` and replay windows are measured on.
fn now() -> i64 {
    let since_epoch = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    since_epoch.as_secs() as i64
}

fn fetch_error(err: impl std::fmt::Display) -> VerifyError {
    VerifyError::Fetch(err.to_string())
}

fn max_age(headers: &reqwest::header::HeaderMap) -> Option<Duration> {
    let value = headers.get(reqwest::header::CACHE_CONTROL)?.to_str().ok()?;
    value
        .split(',')
        .filter_map(|d| d.trim().strip_prefix("max-age="))
        .find_map(|s| s.parse().ok())
        .map(Duration::from_secs)
}

fn algorithm_of(jwk: &Value) -> Option<Algorithm> {
    match (jwk["alg"].as_str(), jwk["kty"].as_str()) {
        (Some("ES256"), Some("EC")) => Some(Algorithm::ES256),
        (Some("EdDSA"), Some("OKP")) => Some(Algorithm::EdDSA),
        (Some("RS256"), Some("RSA")) => Some(Algorithm::RS256),
        _ => None, // symmetric or unknown keys are never used to verify
    }
}

fn decoding_key(jwk: &Value) -> Option<DecodingKey> {
    let s = |name: &str| jwk[name].as_str();
    match jwk["kty"].as_str()? {
        "EC" => DecodingKey::from_ec_components(s("x")?, s("y")?).ok(),
        "OKP" => DecodingKey::from_ed_components(s("x")?).ok(),
        "RSA" => DecodingKey::from_rsa_components(s("n")?, s("e")?).ok(),
        _ => None,
    }
}

/// The usable signing keys of a JWKS document, by `kid`.
fn parse_jwks(jwks: &Value) -> Result<HashMap<String, (Algorithm, DecodingKey)>, VerifyError> {
    Ok(jwks["keys"]
        .as_array()
        .ok_or_else(|| fetch_error("the JWKS has no keys array"))?
        .iter()
        .filter_map(|jwk| {
            Some((
                jwk["kid"].as_str()?.to_string(),
                (algorithm_of(jwk)?, decoding_key(jwk)?),
            ))
        })
        .collect())
}

impl Verifier {
    /// Reads the issuer's RFC 8414 metadata (whose `issuer` must match) and loads its JWKS.
    pub async fn discover(config: VerifierConfig) -> Result<Verifier, VerifyError> {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .build()
            .map_err(fetch_error)?;
        let url = format!("{}/.well-known/oauth-authorization-server", config.issuer);
        let metadata: Value = http
            .get(&url)
            .send()
            .await
            .map_err(fetch_error)?
            .json()
            .await
            .map_err(fetch_error)?;
        if metadata["issuer"].as_str() != Some(config.issuer.as_str()) {
            return Err(VerifyError::Fetch(
                "the metadata names another issuer (RFC 8414 §3.3)".into(),
            ));
        }
        let jwks_uri = metadata["jwks_uri"]
            .as_str()
            .ok_or_else(|| fetch_error("the metadata has no jwks_uri"))?
            .to_string();
        let verifier = Verifier {
            jwks_uri,
            http,
            cache: RwLock::new(KeyCache {
                keys: HashMap::new(),
                fresh_until: Instant::now(),
                last_forced_fetch: None,
            }),
            fetching: Mutex::new(()),
            fetches: AtomicU64::new(0),
            replays: ReplayCache::new(config.dpop_replay_capacity),
            config,
        };
        verifier.refresh_keys().await?;
        Ok(verifier)
    }

    /// A verifier for a key set already in hand (no discovery; the keys never refresh unless
    /// `jwks_uri` is reachable). For offline setups and benchmarks.
    pub fn from_jwks(config: VerifierConfig, jwks: &Value, jwks_uri: &str) -> Result<Verifier, VerifyError> {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .build()
            .map_err(fetch_error)?;
        Ok(Verifier {
            replays: ReplayCache::new(config.dpop_replay_capacity),
            config,
            jwks_uri: jwks_uri.to_string(),
            http,
            cache: RwLock::new(KeyCache {
                keys: parse_jwks(jwks)?,
                fresh_until: Instant::now() + Duration::from_secs(365 * 24 * 3600),
                last_forced_fetch: None,
            }),
            fetching: Mutex::new(()),
            fetches: AtomicU64::new(0),
        })
    }

    /// Fetches the JWKS and replaces the cache (a failure leaves the old keys in place).
    async fn refresh_keys(&self) -> Result<(), VerifyError> {
        self.fetches.fetch_add(1, Ordering::Relaxed);
        let response = self.http.get(&self.jwks_uri).send().await.map_err(fetch_error)?;
        let ttl = max_age(response.headers()).unwrap_or(Duration::from_secs(300));
        let jwks: Value = response.json().await.map_err(fetch_error)?;
        let keys = parse_jwks(&jwks)?;
        let mut cache = self.cache.write().await;
        cache.keys = keys;
        cache.fresh_until = Instant::now() + ttl;
        Ok(())
    }

    /// The key for `kid`, refetching the JWKS when the cache is stale or (rate-limited) when
    /// the kid is unknown.
    async fn key(&self, kid: &str) -> Result<(Algorithm, DecodingKey), VerifyError> {
        {
            let cache = self.cache.read().await;
            if cache.fresh_until > Instant::now() {
                if let Some(key) = cache.keys.get(kid) {
                    return Ok(key.clone());
                }
            }
        }
        let _one_fetch = self.fetching.lock().await;
        let (known, stale, may_force) = {
            let cache = self.cache.read().await;
            let may_force = cache
                .last_forced_fetch
                .is_none_or(|t| t.elapsed() >= self.config.min_refetch_interval);
            (
                cache.keys.get(kid).cloned(),
                cache.fresh_until <= Instant::now(),
                may_force,
            )
        };
        if known.is_none() && !may_force && !stale {
            return Err(VerifyError::UnknownKey);
        }
        if known.is_none() {
            self.cache.write().await.last_forced_fetch = Some(Instant::now());
        }
        // A failed refetch of a stale cache keeps serving the keys it has.
        let fetched = self.refresh_keys().await;
        let cache = self.cache.read().await;
        match cache.keys.get(kid) {
            Some(key) => Ok(key.clone()),
            None => match fetched {
                Err(e) if known.is_none() && cache.keys.is_empty() => Err(e),
                _ => known.ok_or(VerifyError::UnknownKey),
            },
        }
    }

    /// How many times the JWKS has been fetched (for monitoring the refetch limit).
    pub fn jwks_fetches(&self) -> u64 {
        self.fetches.load(Ordering::Relaxed)
    }

    /// Verifies a bearer token and returns its claims. A DPoP-bound token is refused
    /// ([`VerifyError::DpopBound`]): it must come with a proof ([`Verifier::verify_dpop`]).
    pub async fn verify(&self, token: &str) -> Result<AccessClaims, VerifyError> {
        let claims = self.verify_jwt(token).await?;
        if claims.all["cnf"]["jkt"].is_string() {
            return Err(VerifyError::DpopBound);
        }
        Ok(claims)
    }

    /// Verifies a DPoP-bound token sent with `Authorization: DPoP` and the request's proof
    /// (RFC 9449 §7.1, §4.3): the token as [`Verifier::verify`] does, then the proof (made
    /// with the token's key, for this method and URL, `ath` the token's hash, fresh, its `jti`
    /// not seen before). A bearer token sent this way is refused ([`VerifyError::NotDpopBound`]).
    pub async fn verify_dpop(&self, token: &str, request: DpopRequest<'_>) -> Result<AccessClaims, VerifyError> {
        use crate::dpop::{verify_proof, Expected};
        let claims = self.verify_jwt(token).await?;
        let jkt = claims.all["cnf"]["jkt"].as_str().ok_or(VerifyError::NotDpopBound)?;
        let proof = request
            .proof
            .ok_or_else(|| VerifyError::InvalidProof("a DPoP proof is required".into()))?;
        let now = now();
        let max_age = self.config.dpop_max_age.as_secs() as i64;
        let expected = Expected {
            method: request.method,
            url: request.url,
            access_token: Some(token),
            now,
            max_age,
        };
        let proof = verify_proof(proof, &expected).map_err(VerifyError::InvalidProof)?;
        if proof.jkt != jkt {
            return Err(VerifyError::InvalidProof(
                "the proof is made with another key than the token's".into(),
            ));
        }
        let key = [proof.jkt.as_bytes(), b"\0", proof.jti.as_bytes()].concat();
        if !self.replays.remember_once(&key, proof.accepted_until(max_age), now)? {
            return Err(VerifyError::InvalidProof("the proof's jti was used before".into()));
        }
        Ok(claims)
    }

    async fn verify_jwt(&self, token: &str) -> Result<AccessClaims, VerifyError> {
        let header = jsonwebtoken::decode_header(token).map_err(|_| VerifyError::Malformed)?;
        let typ = header.typ.as_deref().map(str::to_ascii_lowercase);
        if !matches!(typ.as_deref(), Some("at+jwt") | Some("application/at+jwt")) {
            return Err(VerifyError::WrongType);
        }
        let kid = header.kid.as_deref().ok_or(VerifyError::UnknownKey)?;
        let (algorithm, key) = self.key(kid).await?;
        if header.alg != algorithm {
            return Err(VerifyError::WrongAlgorithm);
        }
        let mut validation = Validation::new(algorithm);
        validation.set_issuer(&[&self.config.issuer]);
        validation.set_audience(&[&self.config.audience]);
        validation.leeway = self.config.leeway.as_secs();
        validation.validate_nbf = true;
        validation.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
        let claims = jsonwebtoken::decode::<Value>(token, &key, &validation)
            .map_err(|e| VerifyError::Invalid(e.to_string()))?
            .claims;
        let text = |name: &str| claims[name].as_str().unwrap_or_default().to_string();
        Ok(AccessClaims {
            sub: text("sub"),
            client_id: text("client_id"),
            scopes: text("scope")
                .split(' ')
                .filter(|s| !s.is_empty())
                .map(String::from)
                .collect(),
            exp: claims["exp"].as_i64().unwrap_or_default(),
            all: claims,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The README tells services to build one verifier and share it across their tasks.
    #[test]
    fn a_verifier_can_be_shared_between_tasks() {
        fn shareable<T: Send + Sync + 'static>() {}
        shareable::<Verifier>();
        #[cfg(feature = "poem")]
        shareable::<bearer::ProtectedResource>();
    }

    #[test]
    fn a_login_meets_a_requirement_by_its_acr_and_its_age() {
        let claims = |all: Value| AccessClaims {
            sub: "u".into(),
            client_id: "c".into(),
            scopes: vec![],
            exp: 0,
            all,
        };
        let mfa = "urn:tessera:acr:multi-factor";
        let strong = claims(serde_json::json!({"acr": mfa, "auth_time": 1000}));
        let weak = claims(serde_json::json!({"acr": "urn:tessera:acr:single-factor", "auth_time": 1000}));
        let machine = claims(serde_json::json!({}));
        let required = AuthenticationRequirement::acr(&[mfa]);
        assert!(strong.meets(&required, 5000));
        assert!(!weak.meets(&required, 1000));
        assert!(!machine.meets(&required, 1000), "no login, no acr");
        let recent = required.clone().max_age(300);
        assert!(strong.meets(&recent, 1300));
        assert!(!strong.meets(&recent, 1301));
        let any_recent = AuthenticationRequirement::default().max_age(60);
        assert!(weak.meets(&any_recent, 1060) && !machine.meets(&any_recent, 1060));
        assert!(machine.meets(&AuthenticationRequirement::default(), 0));
    }

    #[test]
    fn the_replay_cache_remembers_each_proof_until_it_expires_and_refuses_when_full_of_live_ones() {
        let cache = ReplayCache::new(2);
        assert_eq!(cache.remember_once(b"a", 100, 0), Ok(true));
        assert_eq!(cache.remember_once(b"a", 100, 50), Ok(false));
        assert_eq!(cache.remember_once(b"b", 200, 50), Ok(true));
        // Full of live proofs: a new one is refused, no live one is forgotten.
        assert!(cache.remember_once(b"c", 200, 60).is_err());
        assert_eq!(cache.remember_once(b"a", 100, 60), Ok(false));
        // Once "a" has expired, it leaves and makes room.
        assert_eq!(cache.remember_once(b"c", 200, 101), Ok(true));
        assert_eq!(cache.remember_once(b"a", 300, 201), Ok(true));
    }
}
