//! The audit trail: who changed what, from where, and how it ended, plus security events.
//! Every surface (the console, the admin API, the CLI, the pages, dynamic registration) records
//! through [`Provider::audit`], so an action is written once whichever surface called it.
//! Entries never hold a secret, token or password: only ids and names.

use std::path::Path;

use super::{random_token, Error, Provider};
use crate::clock::now_ms;
use crate::rate_limit::{Rate, RateLimiter};
use crate::store::{audit_id, AuditActor, AuditFilter, AuditRecord, ClientRecord, GrantRecord, UserRecord};

/// Who is calling a core function that changes something, and from where: every such function
/// takes one and records its entry with it.
#[derive(Debug, Clone)]
pub struct Caller {
    pub actor: AuditActor,
    pub address: Option<String>,
    /// An operator, an admin client, the CLI or Tessera itself: their refused attempts are
    /// recorded too. Others' are not, so nobody can fill the trail by failing on purpose.
    pub privileged: bool,
}

impl Caller {
    fn new(kind: &str, id: &str, name: &str, address: Option<&str>, privileged: bool) -> Caller {
        Caller {
            privileged,
            actor: AuditActor {
                kind: kind.to_string(),
                id: id.to_string(),
                name: name.to_string(),
            },
            address: address.map(str::to_string),
        }
    }

    /// A signed-in user: an operator in the console, or a user on their own pages.
    pub fn user(user: &UserRecord, address: Option<&str>) -> Caller {
        Caller::new("user", &user.user_id, &user.username, address, user.operator)
    }

    /// A client acting on the server: an admin API client, or a dynamically registered client
    /// managing its own registration.
    pub fn client(client: &ClientRecord, address: Option<&str>) -> Caller {
        Caller::new("client", &client.client_id, &client.name, address, client.admin)
    }

    /// An admin API client known only by its id.
    pub fn client_id(client_id: &str, address: Option<&str>) -> Caller {
        Caller::new("client", client_id, client_id, address, true)
    }

    /// The OS user running the `tessera` command line.
    pub fn cli() -> Caller {
        let user = std::env::var("USER")
            .or_else(|_| std::env::var("LOGNAME"))
            .unwrap_or_else(|_| "unknown".to_string());
        Caller::new("cli", &user, &user, None, true)
    }

    /// Someone not signed in: an open dynamic registration, a failed login.
    pub fn anonymous(address: Option<&str>) -> Caller {
        Caller::new("anonymous", "", "anonymous", address, false)
    }

    /// Tessera itself: the demo seed at first start, the purge of unused clients.
    pub fn system() -> Caller {
        Caller::new("system", "tessera", "tessera", None, true)
    }
}

/// What an action was done to: its kind (`client`, `user`, `grant`, `key`), id and name.
#[derive(Debug, Clone, Copy)]
pub struct Target<'a> {
    pub kind: &'a str,
    pub id: &'a str,
    pub name: &'a str,
}

/// A new entry saying that `by` did `action` to `target`, now.
pub fn audit_entry(by: &Caller, action: &str, target: Option<Target<'_>>, outcome: &str) -> AuditRecord {
    let at_ms = now_ms();
    AuditRecord {
        id: audit_id(at_ms, &random_token(6)),
        at_ms,
        actor: by.actor.clone(),
        address: by.address.clone(),
        action: action.to_string(),
        target_kind: target.map(|t| t.kind.to_string()),
        target_id: target.map(|t| t.id.to_string()),
        target_name: target.map(|t| t.name.to_string()),
        outcome: outcome.to_string(),
    }
}

/// Where `tessera keys` leaves its entries when a running server holds the data folder (sled
/// allows one process): in the keys folder it has just changed, which the server watches. The
/// server moves them into the trail within seconds ([`Provider::import_pending_audit`]).
pub const PENDING_AUDIT_FILE: &str = "audit-pending.jsonl";

/// The most a pending file is read: far more than any run of commands writes.
const MAX_PENDING_BYTES: u64 = 1 << 20;

/// Appends `entry` to the keys folder's pending entries (a private file, like the keys).
pub fn queue_pending_audit(keys_dir: &Path, entry: &AuditRecord) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut line = serde_json::to_vec(entry).map_err(std::io::Error::other)?;
    line.push(b'\n');
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .open(keys_dir.join(PENDING_AUDIT_FILE))?;
    file.write_all(&line)?;
    file.sync_all()
}

impl<'a> Target<'a> {
    pub fn client(client: &'a ClientRecord) -> Target<'a> {
        Target {
            kind: "client",
            id: &client.client_id,
            name: &client.name,
        }
    }

    pub fn user(user: &'a UserRecord) -> Target<'a> {
        Target {
            kind: "user",
            id: &user.user_id,
            name: &user.username,
        }
    }
}

/// Rejected client authentications that make a burst: more than this many for one client
/// within a minute (a client with a stale secret retries a few times; a guesser does not stop).
const AUTH_FAILURE_BURST: u32 = 10;

/// Notices bursts of rejected authentications of a client, so the trail records each burst
/// once (and a client under steady attack at most every ten minutes), not every failure.
/// Node-local and bounded like every [`RateLimiter`].
pub(super) struct AuthFailureWatch {
    failures: RateLimiter,
    reports: RateLimiter,
}

impl AuthFailureWatch {
    pub(super) fn new() -> AuthFailureWatch {
        AuthFailureWatch {
            failures: RateLimiter::new(Rate::per_minute(AUTH_FAILURE_BURST)),
            reports: RateLimiter::new(Rate {
                per_second: 1.0 / 600.0,
                burst: 1.0,
            }),
        }
    }

    /// Counts one failure for `client_id`; true when it starts a burst to record.
    fn burst(&self, client_id: &str) -> bool {
        self.failures.check(client_id).is_err() && self.reports.check(client_id).is_ok()
    }
}

/// The most entries one page of the trail may hold.
pub const MAX_AUDIT_PAGE: usize = 500;

impl Provider {
    /// Records that `actor` (from `address`) did `action` to `target`, with `outcome`.
    pub async fn audit(
        &self,
        actor: &AuditActor,
        address: Option<&str>,
        action: &str,
        target: Option<Target<'_>>,
        outcome: &str,
    ) -> Result<(), Error> {
        let by = Caller {
            actor: actor.clone(),
            address: address.map(str::to_string),
            privileged: false,
        };
        Ok(self
            .store
            .append_audit(&audit_entry(&by, action, target, outcome))
            .await?)
    }

    /// Records what `by` did, with `outcome`. A failure to record is logged, not returned: the
    /// change it describes has already happened and must not be reported as failed.
    pub async fn record(&self, by: &Caller, action: &str, target: Option<Target<'_>>, outcome: &str) {
        if let Err(e) = self
            .audit(&by.actor, by.address.as_deref(), action, target, outcome)
            .await
        {
            tracing::error!(action, error = %e.description, "could not record an audit entry");
        }
    }

    /// Takes one change from `by`'s budget (`self_service_changes`), unless `by` is privileged.
    /// Each change is an audit entry: without a budget a script with a user account, or a
    /// registration access token, could grow the trail without end.
    pub(super) fn spend_change(&self, by: &Caller) -> Result<(), Error> {
        if by.privileged {
            return Ok(());
        }
        let who = match by.actor.id.as_str() {
            "" => by.address.as_deref().unwrap_or_default(),
            id => id,
        };
        let key = format!("{}:{who}", by.actor.kind);
        self.change_rate.check(&key).map_err(Error::rate_limited)
    }

    /// Records how an attempt by `by` ended: `ok`, or the error's code. Refused attempts are
    /// recorded for privileged callers only (see [`Caller::privileged`]).
    pub async fn record_result<T>(
        &self,
        by: &Caller,
        action: &str,
        target: Option<Target<'_>>,
        result: &Result<T, Error>,
    ) {
        match result {
            Ok(_) => self.record(by, action, target, "ok").await,
            Err(e) if by.privileged => self.record(by, action, target, e.code.as_str()).await,
            Err(_) => {}
        }
    }

    /// One page of the trail, newest first (see [`crate::store::AuditStore::audit_page`]).
    pub async fn audit_page(
        &self,
        filter: &AuditFilter,
        before: Option<&str>,
        limit: usize,
    ) -> Result<Vec<AuditRecord>, Error> {
        Ok(self
            .store
            .audit_page(filter, before, limit.clamp(1, MAX_AUDIT_PAGE))
            .await?)
    }

    /// Moves the entries `tessera keys` left in `keys_dir` into the trail; returns how many.
    /// The file is renamed first, so entries the CLI appends meanwhile wait for the next call,
    /// and an import cut short is finished next time (an entry's id makes a repeat harmless).
    pub async fn import_pending_audit(&self, keys_dir: &Path) -> Result<usize, Error> {
        let pending = keys_dir.join(PENDING_AUDIT_FILE);
        let importing = keys_dir.join(format!("{PENDING_AUDIT_FILE}.importing"));
        if !importing.exists() {
            match std::fs::rename(&pending, &importing) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(0),
                Err(e) => return Err(Error::server_error(e)),
            }
        }
        let text = {
            use std::io::Read;
            let mut text = String::new();
            std::fs::File::open(&importing)
                .and_then(|f| f.take(MAX_PENDING_BYTES).read_to_string(&mut text))
                .map_err(Error::server_error)?;
            text
        };
        let mut imported = 0;
        for line in text.lines().filter(|l| !l.trim().is_empty()) {
            match serde_json::from_str::<AuditRecord>(line) {
                Ok(entry) => {
                    self.store.append_audit(&entry).await?;
                    imported += 1;
                }
                Err(e) => tracing::warn!(error = %e, "skipped a pending audit entry that is not one"),
            }
        }
        self.store.durable().await?;
        std::fs::remove_file(&importing).map_err(Error::server_error)?;
        Ok(imported)
    }

    /// A client's authentication was rejected (from `address`): recorded when it makes a burst.
    pub(super) async fn client_auth_rejected(&self, client: &ClientRecord, address: Option<&str>) {
        if self.auth_failures.burst(&client.client_id) {
            let by = Caller::anonymous(address);
            let outcome = format!("more than {AUTH_FAILURE_BURST} a minute");
            self.record(&by, "client_auth.burst", Some(Target::client(client)), &outcome)
                .await;
        }
    }

    /// A leaked credential was presented (a used code, a spent refresh token) by `client` from
    /// `address`, and `grant` was revoked for it.
    pub(super) async fn record_leak(
        &self,
        client: &ClientRecord,
        address: Option<&str>,
        action: &str,
        grant: &GrantRecord,
    ) {
        let by = Caller::client(client, address);
        let name = self.grant_name(grant).await;
        let target = Target {
            kind: "grant",
            id: &grant.grant_id,
            name: &name,
        };
        self.record(&by, action, Some(target), "grant revoked").await;
    }

    /// Removes entries older than `audit_retention`.
    pub(super) async fn purge_audit(&self) -> Result<u64, Error> {
        let cutoff = now_ms() - self.config.audit_retention.as_millis() as i64;
        Ok(self.store.purge_audit(cutoff).await?)
    }
}
