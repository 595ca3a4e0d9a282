//! Pushed authorization requests (RFC 9126): a client sends its authorization request straight
//! to the server, authenticated, and the browser carries only `client_id` and a `request_uri`
//! naming it. Nothing in the request can then be read or changed in the browser.
//!
//! A pushed request is kept sealed in the store's scratch space (shared by every node). The
//! client must start using its `request_uri` within `par_ttl`; once started, the login and
//! consent pages may take their time, within [`INTERACTION_TTL`]. It yields one authorization
//! response: issuing the code (or the error or denial) uses it up, atomically, through
//! [`crate::store::EphemeralStore::remember_once`], so two tabs racing each other cannot get
//! two codes.

use serde::{Deserialize, Serialize};

use super::request::Origin;
use super::AuthorizeError;
use crate::oauth::client::ClientCredentials;
use crate::oauth::params::Params;
use crate::oauth::{now, random_token, secret_hash, Error, ErrorCode, Provider};

/// The prefix of every `request_uri` this server hands out (RFC 9126 §2.2).
pub const REQUEST_URI_PREFIX: &str = "urn:ietf:params:oauth:request_uri:";

/// How long a started request stays usable: long enough to log in and read the consent page.
pub const INTERACTION_TTL: i64 = 600;

/// The scratch purpose pushed requests are sealed under.
const PURPOSE: &str = "pushed-authorization-request";

/// What the pushed authorization request endpoint answers (RFC 9126 §2.2).
#[derive(Debug, Clone)]
pub struct PushedAuthorization {
    pub request_uri: String,
    /// Seconds the client has to send the browser to the authorization endpoint with it.
    pub expires_in: u64,
}

/// A pushed request as kept in the store.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct PushedRecord {
    client_id: String,
    /// The authorization request's parameters, as the client pushed them (less any that a
    /// login already satisfied, see [`Provider::pushed_login_done`]).
    pairs: Vec<(String, String)>,
    /// Whether the browser has brought it to the authorization endpoint yet.
    started: bool,
    /// Whether it produced its authorization response.
    used: bool,
}

/// An authorization request that arrived by reference: its parameters and its reference.
#[derive(Debug, Clone)]
pub struct Pushed {
    pub pairs: Vec<(String, String)>,
    /// The part of the `request_uri` after [`REQUEST_URI_PREFIX`].
    pub reference: String,
}

fn invalid_request_uri(why: &str) -> Error {
    Error::new(ErrorCode::InvalidRequestUri, why)
}

impl Provider {
    /// The pushed authorization request endpoint (RFC 9126 §2): authenticates the client,
    /// validates `pairs` as the authorization endpoint would (errors are answered here, never
    /// redirected), and keeps them for `par_ttl` under a new `request_uri`.
    pub async fn push_authorization_request(
        &self,
        credentials: &ClientCredentials,
        mut pairs: Vec<(String, String)>,
    ) -> Result<PushedAuthorization, Error> {
        let client = self.authenticate_client(credentials).await?;
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
        let reference = random_token(32);
        let ttl = self.config.par_ttl.as_secs();
        let record = PushedRecord {
            client_id: client.client_id,
            pairs,
            started: false,
            used: false,
        };
        self.put_sealed(PURPOSE, &reference, &record, ttl as i64).await?;
        Ok(PushedAuthorization {
            request_uri: format!("{REQUEST_URI_PREFIX}{reference}"),
            expires_in: ttl,
        })
    }

    /// The pushed request an authorization request refers to, if its query has a
    /// `request_uri`. Then only `client_id` (which must match) and `request_uri` are read
    /// from the query; every other parameter comes from the pushed request (RFC 9126 §4).
    /// The first use starts the interaction and extends the request's life to
    /// [`INTERACTION_TTL`].
    pub(super) async fn pushed_request(&self, query: &[(String, String)]) -> Result<Option<Pushed>, Error> {
        let params = Params::new(query);
        let Some(request_uri) = params.get("request_uri")? else {
            return Ok(None);
        };
        let client_id = params
            .get("client_id")?
            .ok_or_else(|| Error::invalid_request("client_id is missing"))?;
        let reference = request_uri
            .strip_prefix(REQUEST_URI_PREFIX)
            .filter(|r| !r.is_empty() && r.len() <= 64)
            .ok_or_else(|| invalid_request_uri("request_uri was not issued by this server"))?;
        let mut record: PushedRecord = self
            .get_sealed(PURPOSE, reference)
            .await?
            .filter(|r: &PushedRecord| !r.used)
            .ok_or_else(|| invalid_request_uri("request_uri is unknown, expired or already used"))?;
        if record.client_id != client_id {
            return Err(invalid_request_uri("request_uri was pushed by another client"));
        }
        if !record.started {
            record.started = true;
            self.put_sealed(PURPOSE, reference, &record, INTERACTION_TTL).await?;
        }
        Ok(Some(Pushed {
            pairs: record.pairs,
            reference: reference.to_string(),
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
        let record: PushedRecord = self.get_sealed(PURPOSE, reference).await.ok()??;
        if record.used || Some(record.client_id.as_str()) != params.get("client_id").ok()? {
            return None;
        }
        let pairs = Params::new(&record.pairs);
        pairs.get("login_hint").ok()?.map(str::to_string)
    }

    /// Uses up a pushed request: `Ok` exactly once, however many browsers race for it.
    pub(super) async fn use_pushed_request(&self, pushed: &Pushed) -> Result<(), Error> {
        let key = secret_hash(&format!("{PURPOSE}\0{}", pushed.reference));
        let first = self.store.remember_once(&key, (now() + INTERACTION_TTL) * 1000).await?;
        if !first {
            return Err(invalid_request_uri("request_uri was already used"));
        }
        // So that later visits are told at once, rather than at the end.
        let record = PushedRecord {
            client_id: String::new(),
            pairs: Vec::new(),
            started: true,
            used: true,
        };
        self.put_sealed(PURPOSE, &pushed.reference, &record, INTERACTION_TTL)
            .await
    }

    /// A login satisfied `prompt=login` and `max_age`: they are dropped from the pushed request,
    /// as they are from the query of an ordinary one (see `return_path`), or it would ask for a
    /// login forever.
    pub(super) async fn pushed_login_done(&self, pushed: &Pushed, client_id: &str) -> Result<(), Error> {
        let record = PushedRecord {
            client_id: client_id.to_string(),
            pairs: super::after_login(&pushed.pairs),
            started: true,
            used: false,
        };
        self.put_sealed(PURPOSE, &pushed.reference, &record, INTERACTION_TTL)
            .await
    }
}
