//! The administration API's logic: who may call it, and the operations the CLI and the pages
//! do not already have. Handlers in `http/admin.rs` call these and the shared client, user
//! and key operations; nothing here knows about HTTP.

use super::audit::{Caller, Target};
use super::scope::{Scope, ADMIN_SCOPE};
use super::{Error, ErrorCode, Provider};
use crate::keys::{Algorithm, KeyInfo, Keyring};
use crate::store::{ClientRecord, GrantRecord, UserRecord};

/// The most records one page may hold, and the default page size.
pub const MAX_PAGE: usize = 200;
pub const DEFAULT_PAGE: usize = 50;

/// One page of a listing; `next_cursor` continues it (absent on the last page).
#[derive(Debug, Clone)]
pub struct Page<T> {
    pub items: Vec<T>,
    pub next_cursor: Option<String>,
}

fn page_of<T>(mut items: Vec<T>, limit: usize, key: impl Fn(&T) -> String) -> Page<T> {
    let next_cursor = if items.len() > limit {
        items.truncate(limit);
        items.last().map(key)
    } else {
        None
    };
    Page { items, next_cursor }
}

/// A page size asked for: 1 to [`MAX_PAGE`], [`DEFAULT_PAGE`] when not given.
pub fn page_size(limit: Option<u32>) -> Result<usize, Error> {
    match limit {
        None => Ok(DEFAULT_PAGE),
        Some(n) if (1..=MAX_PAGE as u32).contains(&n) => Ok(n as usize),
        Some(_) => Err(Error::invalid_request(format!(
            "limit must be between 1 and {MAX_PAGE}"
        ))),
    }
}

pub fn not_found(what: &str) -> Error {
    Error::new(ErrorCode::NotFound, format!("no such {what}"))
}

impl Provider {
    /// Checks a bearer token for the admin API: a valid access token of ours with the
    /// `tessera:admin` scope, issued to a client that still exists and is still an admin client.
    /// The admin client behind a bearer token, as the audit trail names it.
    pub async fn authorize_admin(&self, token: &str) -> Result<Caller, Error> {
        let claims = self.tokens.verify_access_token(token).await?;
        let scope = Scope::parse(claims["scope"].as_str().unwrap_or_default()).unwrap_or_default();
        if !scope.contains(ADMIN_SCOPE) {
            return Err(Error::new(
                ErrorCode::InsufficientScope,
                "the admin API needs a token with the tessera:admin scope",
            ));
        }
        let client_id = claims["client_id"].as_str().unwrap_or_default();
        match self.store.get_client(client_id).await? {
            Some(client) if client.admin => Ok(Caller::client(&client, None)),
            _ => Err(Error::new(
                ErrorCode::InvalidToken,
                "the token's client is no longer an admin client",
            )),
        }
    }

    pub async fn clients_page(&self, after: Option<&str>, limit: usize) -> Result<Page<ClientRecord>, Error> {
        let items = self.store.clients_page(after, limit + 1).await?;
        Ok(page_of(items, limit, |c| c.client_id.clone()))
    }

    pub async fn users_page(&self, after: Option<&str>, limit: usize) -> Result<Page<UserRecord>, Error> {
        let items = self.store.users_page(after, limit + 1).await?;
        Ok(page_of(items, limit, |u| u.user_id.clone()))
    }

    /// Grants of a user and/or a client, a page at a time (ordered by grant id).
    pub async fn grants_page(
        &self,
        user_id: Option<&str>,
        client_id: Option<&str>,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Page<GrantRecord>, Error> {
        let grants = self.store.grants_page(user_id, client_id, after, limit + 1).await?;
        Ok(page_of(grants, limit, |g| g.grant_id.clone()))
    }

    /// Revokes one grant: every refresh token of it stops working at once, and its access
    /// tokens are reported inactive by introspection.
    pub async fn revoke_grant(&self, by: &Caller, grant_id: &str) -> Result<GrantRecord, Error> {
        let result = async {
            if !self.store.revoke_grant(grant_id).await? {
                return Err(not_found("grant"));
            }
            self.store.durable().await?;
            self.store.get_grant(grant_id).await?.ok_or_else(|| not_found("grant"))
        }
        .await;
        let name = match &result {
            Ok(grant) => super::audit::grant_name(self.store.as_ref(), &self.clients, grant).await,
            Err(_) => String::new(),
        };
        let target = Target {
            kind: "grant",
            id: grant_id,
            name: &name,
        };
        self.audit
            .record_result(by, "grant.revoke", Some(target), &result)
            .await;
        result
    }

    /// Deletes a client after revoking every grant it holds, so no token of it outlives it.
    pub async fn delete_client(&self, by: &Caller, client_id: &str) -> Result<bool, Error> {
        self.audit.spend_change(by)?;
        let name = match self.store.get_client(client_id).await? {
            Some(client) => client.name,
            None => String::new(),
        };
        let result = self.delete_client_and_grants(client_id).await;
        let target = Target {
            kind: "client",
            id: client_id,
            name: &name,
        };
        match &result {
            Ok(true) => self.audit.record(by, "client.delete", Some(target), "ok").await,
            Ok(false) => {
                self.audit
                    .record_result(by, "client.delete", Some(target), &Err::<(), _>(not_found("client")))
                    .await
            }
            Err(_) => {
                self.audit
                    .record_result(by, "client.delete", Some(target), &result)
                    .await
            }
        }
        result
    }

    pub(super) async fn delete_client_and_grants(&self, client_id: &str) -> Result<bool, Error> {
        // The client goes first, so no update can bring it back (updates write only clients
        // that exist); then what it holds: every grant is revoked and every user's consent
        // forgotten, so nothing it was allowed survives it.
        let deleted = self.store.delete_client(client_id).await?;
        self.store.revoke_grants_of(None, Some(client_id)).await?;
        self.store.delete_consents_for_client(client_id).await?;
        self.store.durable().await?;
        Ok(deleted)
    }

    /// Deletes a user after revoking every grant they gave.
    pub async fn delete_user(&self, by: &Caller, user_id: &str) -> Result<bool, Error> {
        self.audit.refuse_own_account(by, user_id, "delete")?;
        let name = match self.store.get_user(user_id).await? {
            Some(user) => user.username,
            None => String::new(),
        };
        let result = async {
            self.store.revoke_grants_of(Some(user_id), None).await?;
            self.store.delete_factors_of(user_id).await?;
            let deleted = self.store.delete_user(user_id).await?;
            self.store.durable().await?;
            Ok(deleted)
        }
        .await;
        let target = Target {
            kind: "user",
            id: user_id,
            name: &name,
        };
        match &result {
            Ok(true) => self.audit.record(by, "user.delete", Some(target), "ok").await,
            Ok(false) => {
                self.audit
                    .record_result(by, "user.delete", Some(target), &Err::<(), _>(not_found("user")))
                    .await
            }
            Err(_) => self.audit.record_result(by, "user.delete", Some(target), &result).await,
        }
        result
    }

    /// How many clients, users, live (unrevoked) grants and active refresh tokens the store
    /// holds, for the console's overview: the first three from the store's counters, now; the
    /// refresh tokens counted in the background ([`CostlyCount`]), so on a large store the
    /// last count taken. `None` when a count failed or the first background one has not
    /// finished.
    ///
    /// [`CostlyCount`]: crate::metrics::CostlyCount
    pub async fn counts(&self) -> Option<Counts> {
        let (records, refresh_tokens) = tokio::join!(self.store.count_records(), self.active_refresh_tokens());
        let records = records.ok()?;
        Some(Counts {
            clients: records.clients,
            users: records.users,
            live_grants: records.live_grants,
            refresh_tokens: refresh_tokens?,
        })
    }

    /// The longest access-token lifetime in seconds, a client's own included: how long a key
    /// that stopped signing must stay published (the rotation runbook's step 4).
    pub async fn longest_access_token_ttl(&self) -> Result<u64, Error> {
        let longest_own = self.store.longest_client_access_token_ttl().await?.unwrap_or(0);
        Ok(longest_own.max(self.config.access_token_ttl.as_secs()))
    }

    /// How many unrevoked grants a client holds, counted among its first
    /// [`GrantTally::SCANNED`] grants: a client with more shows as "at least N".
    pub async fn live_grants_of_client(&self, client_id: &str) -> Result<GrantTally, Error> {
        let grants = self
            .store
            .grants_page(None, Some(client_id), None, GrantTally::SCANNED + 1)
            .await?;
        Ok(GrantTally {
            live: grants.iter().take(GrantTally::SCANNED).filter(|g| !g.revoked).count(),
            more: grants.len() > GrantTally::SCANNED,
        })
    }

    /// The keyring's keys, as `tessera keys list` shows them.
    pub async fn list_keys(&self) -> Result<Vec<KeyInfo>, Error> {
        Ok(Keyring::open_or_init(self.keys.vault()).await?)
    }

    /// Changes the keyring as `tessera keys generate|promote|retire` would, then loads it at
    /// once (the periodic reload would pick it up within two seconds anyway).
    pub async fn change_keys(&self, by: &Caller, change: KeyChange<'_>) -> Result<KeyInfo, Error> {
        let result = self.change_keyring(change).await;
        let (action, kid) = match change {
            KeyChange::Generate(_) => ("key.generate", result.as_ref().map(|k| k.kid.as_str()).unwrap_or("")),
            KeyChange::Promote(kid) => ("key.promote", kid),
            KeyChange::Retire(kid) => ("key.retire", kid),
        };
        let alg = match (&result, change) {
            (Ok(key), _) => key.alg.to_string(),
            (Err(_), KeyChange::Generate(alg)) => alg.to_string(),
            (Err(_), _) => String::new(),
        };
        let target = Target {
            kind: "key",
            id: kid,
            name: &alg,
        };
        self.audit.record_result(by, action, Some(target), &result).await;
        result
    }

    async fn change_keyring(&self, change: KeyChange<'_>) -> Result<KeyInfo, Error> {
        let vault = self.keys.vault();
        let result = match change {
            KeyChange::Generate(alg) => Keyring::generate(vault, alg).await,
            KeyChange::Promote(kid) => Keyring::promote(vault, kid).await,
            KeyChange::Retire(kid) => Keyring::retire(vault, kid).await,
        };
        let info = result.map_err(|e| match e {
            crate::keys::KeyError::UnknownKid(_) => not_found("key"),
            crate::keys::KeyError::Refused(why) => Error::invalid_request(why),
            other => Error::server_error(other),
        })?;
        self.keys.reload_if_changed().await?;
        Ok(info)
    }
}

/// What the store holds, counted now ([`Provider::counts`]).
#[derive(Debug, Clone, Copy, Default)]
pub struct Counts {
    pub clients: u64,
    pub users: u64,
    pub live_grants: u64,
    pub refresh_tokens: u64,
}

/// A client's live grants, counted without reading more than a bounded number of its grants
/// ([`Provider::live_grants_of_client`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GrantTally {
    /// Unrevoked grants among the first [`GrantTally::SCANNED`].
    pub live: usize,
    /// Whether the client holds more grants than were read.
    pub more: bool,
}

impl GrantTally {
    /// How many of a client's grants are read to count them.
    pub const SCANNED: usize = 1_000;
}

/// "3", or "at least 12" when the client holds grants that were not read.
impl std::fmt::Display for GrantTally {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.more {
            write!(f, "at least {}", self.live)
        } else {
            write!(f, "{}", self.live)
        }
    }
}

/// A change to the keyring.
#[derive(Debug, Clone, Copy)]
pub enum KeyChange<'a> {
    Generate(Algorithm),
    Promote(&'a str),
    Retire(&'a str),
}
