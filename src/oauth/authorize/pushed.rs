//! Pushed authorization requests (RFC 9126): a client sends its authorization request straight
//! to the server, authenticated, and the browser carries only `client_id` and a `request_uri`
//! naming it. Nothing in the request can then be read or changed in the browser.
//!
//! A pushed request is sealed in the store's scratch space (shared by every node) once, and
//! never rewritten: what happens to it later is kept beside it, in values that only ever say
//! one thing (started at, used), so no visit racing another can undo what the other did. The
//! client must start using its `request_uri` within `par_ttl`; once started, the login and
//! consent pages may take up to [`INTERACTION_TTL`], counted from the start and never renewed.
//! It yields one code: issuing it (or the user's denial) uses the request up, atomically,
//! through [`crate::store::EphemeralStore::remember_once`], remembered for longer than the
//! request can live. Errors for visitors do not use it up, so anonymous traffic spends nothing.

use serde::{Deserialize, Serialize};

use super::request::Origin;
use super::Authorization;
use super::AuthorizeError;
use crate::oauth::client::{operator_made, ClientCredentials};
use crate::oauth::dpop::{KeyBudget, ProofRequest};
use crate::oauth::params::Params;
use crate::oauth::{now, random_token, secret_hash, Error, ErrorCode};
use crate::store::{ClientType, ScratchRoom};

/// The prefix of every `request_uri` this server hands out (RFC 9126 §2.2).
pub(crate) const REQUEST_URI_PREFIX: &str = "urn:ietf:params:oauth:request_uri:";

/// How long a started request stays usable: long enough to log in and read the consent page.
pub(crate) const INTERACTION_TTL: i64 = 600;

/// The most bytes of parameters a pushed request may hold, as kept (JSON, where a control
/// character takes six bytes): an `id_token_hint` is the longest usual one, at about 1.5 KB.
pub(crate) const MAX_PUSHED_BYTES: usize = 8192;

/// What one address may keep in the scratch space with pushes for clients anyone can push
/// for: 64 KiB a minute (a usual push is under 2 KiB), counted in KiB; with pushes living
/// `par_ttl` until started, a few hundred addresses are needed to fill the space.
pub(crate) const PUSHED_KIB_PER_MINUTE: crate::rate_limit::Rate = crate::rate_limit::Rate {
    per_second: 64.0 / 60.0,
    burst: 64.0,
};

/// The scratch purposes: the request, when it was started, and that it was used.
const PURPOSE: &str = "pushed-authorization-request";
const STARTED: &str = "pushed-authorization-request-started";
const USED: &str = "pushed-authorization-request-used";

/// What the pushed authorization request endpoint answers (RFC 9126 §2.2).
#[derive(Debug, Clone)]
pub(crate) struct PushedAuthorization {
    pub request_uri: String,
    /// Seconds the client has to send the browser to the authorization endpoint with it.
    pub expires_in: u64,
}

/// A pushed request as kept in the store, as the client pushed it.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct PushedRecord {
    client_id: String,
    pairs: Vec<(String, String)>,
    pushed_at: i64,
}

/// An authorization request that arrived by reference: its parameters and its reference.
#[derive(Debug, Clone)]
pub struct Pushed {
    pub pairs: Vec<(String, String)>,
    /// The part of the `request_uri` after [`REQUEST_URI_PREFIX`].
    pub reference: String,
    /// When it was pushed: a login since then satisfies its `prompt=login` or `max_age=0`.
    pub pushed_at: i64,
}

fn invalid_request_uri(why: &str) -> Error {
    Error::new(ErrorCode::InvalidRequestUri, why)
}

impl Authorization {
    /// The pushed authorization request endpoint (RFC 9126 §2): authenticates the client,
    /// validates `pairs` as the authorization endpoint would (errors are answered here, never
    /// redirected), and keeps them for `par_ttl` under a new `request_uri`. A DPoP proof in
    /// `proofs` binds the code to its key (RFC 9449 §10.1), as `dpop_jkt` would.
    pub(crate) async fn push_authorization_request(
        &self,
        credentials: &ClientCredentials,
        mut pairs: Vec<(String, String)>,
        proofs: &ProofRequest,
    ) -> Result<PushedAuthorization, Error> {
        let client = self.clients.authenticate_client(credentials).await?;
        self.client_rate
            .check(&credentials.rate_key(&client))
            .map_err(Error::rate_limited)?;
        let params = Params::new(&pairs);
        // §2.1: a request_uri cannot itself be pushed; request objects are not supported.
        if params.get("request_uri")?.is_some() {
            return Err(Error::invalid_request("request_uri cannot be pushed"));
        }
        if params.get("request")?.is_some() {
            return Err(Error::new(
                ErrorCode::RequestNotSupported,
                "request objects (the request parameter) are not supported",
            ));
        }
        let kept = serde_json::to_vec(&pairs).map_or(usize::MAX, |json| json.len());
        if kept > MAX_PUSHED_BYTES {
            return Err(Error::invalid_request(format!(
                "a pushed request holds at most {MAX_PUSHED_BYTES} bytes of parameters"
            )));
        }
        // The request is the authenticated client's, whatever the form says.
        match params.get("client_id")? {
            Some(named) if named != client.client_id => {
                return Err(Error::invalid_request(
                    "client_id does not match the authenticated client",
                ))
            }
            Some(_) => {}
            None => pairs.push(("client_id".into(), client.client_id.clone())),
        }
        self.validate_request(&pairs, None, credentials.address.as_deref(), Origin::Pushing)
            .await
            .map_err(|e| match e {
                AuthorizeError::Show(error) => error,
                // Pushing never redirects (see `Origin::Pushing`).
                AuthorizeError::Redirect(_) => Error::server_error("a pushed request's error was redirected"),
            })?;
        // Anyone can push for a public client, and anyone can register a client of their own:
        // those pushes are counted per address, once they would be stored.
        if client.client_type == ClientType::Public || !operator_made(&client) {
            let address = credentials.address.as_deref().unwrap_or_default();
            self.pushed_rate.check(address).map_err(Error::rate_limited)?;
            let kib = (kept as f64 / 1024.0).ceil().max(1.0);
            self.pushed_bytes_rate
                .check_n(address, kib)
                .map_err(Error::rate_limited)?;
        }
        // Last, so that only pushes that would be stored spend a proof's one-time entry.
        if let Some(proof) = self.dpop.check_proof(proofs, None, KeyBudget::Unbounded).await? {
            match Params::new(&pairs).get("dpop_jkt")? {
                Some(named) if named != proof.jkt => {
                    return Err(Error::new(
                        ErrorCode::InvalidDpopProof,
                        "dpop_jkt is not the thumbprint of the proof's key",
                    ))
                }
                Some(_) => {}
                None => pairs.push(("dpop_jkt".into(), proof.jkt)),
            }
        }
        let reference = random_token(32);
        let ttl = self.config.par_ttl.as_secs();
        let record = PushedRecord {
            client_id: client.client_id,
            pairs,
            pushed_at: now(),
        };
        // Kept for `par_ttl` only: a request nobody starts frees its room then. Starting it
        // keeps it for the interaction.
        self.scratch
            .put_sealed(PURPOSE, &reference, &record, ttl as i64, ScratchRoom::Start)
            .await?;
        Ok(PushedAuthorization {
            request_uri: format!("{REQUEST_URI_PREFIX}{reference}"),
            expires_in: ttl,
        })
    }

    /// The pushed request an authorization request refers to, if its query has a
    /// `request_uri`. Then only `client_id` (which must match) and `request_uri` are read
    /// from the query; every other parameter comes from the pushed request (RFC 9126 §4).
    /// The first use must come within `par_ttl` and starts the [`INTERACTION_TTL`].
    pub(super) async fn pushed_request(&self, query: &[(String, String)]) -> Result<Option<Pushed>, Error> {
        let params = Params::new(query);
        // Any other `request_uri` would name a request object: refused as unsupported by the
        // request's validation, as OpenID Connect Core §6 has it.
        let Some(reference) = params
            .get("request_uri")?
            .and_then(|uri| uri.strip_prefix(REQUEST_URI_PREFIX))
        else {
            return Ok(None);
        };
        let client_id = params
            .get("client_id")?
            .ok_or_else(|| Error::invalid_request("client_id is missing"))?;
        if reference.is_empty() || reference.len() > 64 {
            return Err(invalid_request_uri("request_uri was not issued by this server"));
        }
        let gone = || invalid_request_uri("request_uri is unknown, expired or already used");
        let record: PushedRecord = self.scratch.get_sealed(PURPOSE, reference).await?.ok_or_else(gone)?;
        if record.client_id != client_id {
            return Err(invalid_request_uri("request_uri was pushed by another client"));
        }
        if self.scratch.get_sealed::<bool>(USED, reference).await?.is_some() {
            return Err(gone());
        }
        let now = now();
        let started_at = match self.scratch.get_sealed::<i64>(STARTED, reference).await? {
            Some(started_at) => started_at,
            None if now > record.pushed_at + self.config.par_ttl.as_secs() as i64 => return Err(gone()),
            None => {
                self.scratch
                    .put_sealed(STARTED, reference, &now, INTERACTION_TTL, ScratchRoom::Continue)
                    .await?;
                // The same request, kept for the interaction (its content never changes).
                self.scratch
                    .put_sealed(PURPOSE, reference, &record, INTERACTION_TTL, ScratchRoom::Continue)
                    .await?;
                now
            }
        };
        if now > started_at + INTERACTION_TTL {
            return Err(gone());
        }
        Ok(Some(Pushed {
            pairs: record.pairs,
            reference: reference.to_string(),
            pushed_at: record.pushed_at,
        }))
    }

    /// The `login_hint` of the authorization request in `query`, pushed or not: the login page
    /// prefills it (OpenID Connect Core §3.1.2.1).
    pub async fn login_hint(&self, query: &[(String, String)]) -> Option<String> {
        let params = Params::new(query);
        let reference = match params.get("request_uri").ok()? {
            None => return params.get("login_hint").ok()?.map(str::to_string),
            Some(uri) => uri.strip_prefix(REQUEST_URI_PREFIX)?,
        };
        let record: PushedRecord = self.scratch.get_sealed(PURPOSE, reference).await.ok()??;
        if Some(record.client_id.as_str()) != params.get("client_id").ok()? {
            return None;
        }
        let pairs = Params::new(&record.pairs);
        pairs.get("login_hint").ok()?.map(str::to_string)
    }

    /// Uses up a pushed request: `Ok` exactly once, however many browsers race for it (and
    /// remembered for longer than the request can live).
    pub(super) async fn use_pushed_request(&self, pushed: &Pushed) -> Result<(), Error> {
        let key = secret_hash(&format!("{PURPOSE}\0{}", pushed.reference));
        let lives_until = pushed.pushed_at + self.config.par_ttl.as_secs() as i64 + 2 * INTERACTION_TTL;
        if !self.counters.remember_once(&key, lives_until * 1000).await? {
            return Err(invalid_request_uri("request_uri was already used"));
        }
        // So that later visits are told at once, rather than at the end.
        self.scratch
            .put_sealed(
                USED,
                &pushed.reference,
                &true,
                lives_until - now(),
                ScratchRoom::Continue,
            )
            .await
    }
}
