//! The audit trail: who changed what, from where, and how it ended, plus security events.
//! Every surface (the console, the admin API, the CLI, the pages, dynamic registration) records
//! through the [`Audit`] service (the front's `audit`), so an action is written once whichever
//! surface called it.
//! Entries never hold a secret, token or password: only ids and names.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use super::{random_token, Durability, Error, Provider};
use crate::clock::now_ms;
use crate::config::Config;
use crate::rate_limit::{Rate, RateLimiter};
use crate::store::{
    audit_id, AuditActor, AuditFilter, AuditRecord, AuditStore, ClientRecord, GrantRecord, UserRecord, UserStore,
};

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

    /// The OS account running the `tessera` command line, by its user id: `$USER` is
    /// whatever the person running it says, so it is only added to the name, after `sudo`'s.
    pub fn cli() -> Caller {
        match own_uid() {
            Some(uid) => Caller::cli_as(uid, claimed_account().as_deref()),
            None => Caller::new("cli", "unknown (no /proc)", "unknown (no /proc)", None, true),
        }
    }

    /// The command line of the OS account `uid`, which says it is `claimed`: a command handed
    /// to the server through its control socket is recorded as the same actor as when it ran
    /// on the data folder itself (the server learns `uid` from the socket, not from the request).
    pub fn cli_as(uid: u32, claimed: Option<&str>) -> Caller {
        let account = os_account(uid);
        let name = match claimed {
            Some(claimed) if claimed != account => format!("{account} (says {claimed})"),
            _ => account.clone(),
        };
        Caller::new("cli", &account, &name, None, true)
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

/// The name of the OS account this process runs as: the owner of `/proc/self` (its real uid),
/// looked up in `/etc/passwd`; `uid N` when it has no entry there.
/// This process's effective user id (Linux: the second field of `Uid:` in
/// `/proc/self/status`; the owner of `/proc/self` is root for a process that may not dump core).
pub fn own_uid() -> Option<u32> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let ids = status.lines().find_map(|line| line.strip_prefix("Uid:"))?;
    ids.split_whitespace().nth(1)?.parse().ok()
}

/// The account this process's caller says it is: `sudo`'s original user, else `$USER`.
pub fn claimed_account() -> Option<String> {
    std::env::var("SUDO_USER").or_else(|_| std::env::var("USER")).ok()
}

/// The name of the OS account `uid`, from `/etc/passwd`.
fn os_account(uid: u32) -> String {
    let passwd = std::fs::read_to_string("/etc/passwd").unwrap_or_default();
    passwd
        .lines()
        .map(|line| line.split(':').collect::<Vec<_>>())
        .find(|fields| fields.len() > 2 && fields[2] == uid.to_string())
        .map(|fields| fields[0].to_string())
        .unwrap_or_else(|| format!("uid {uid}"))
}

/// A number that grows with every entry this process makes, placed after the time in an
/// entry's id: two changes in the same millisecond (a password set, then the grants revoked)
/// keep their order. Entries of different nodes in one millisecond fall in random order.
fn next_sequence() -> u32 {
    static SEQUENCE: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    SEQUENCE.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
}

/// A new entry saying that `by` did `action` to `target`, now.
pub fn audit_entry(by: &Caller, action: &str, target: Option<Target<'_>>, outcome: &str) -> AuditRecord {
    let at_ms = now_ms();
    cleaned(AuditRecord {
        id: audit_id(at_ms, &format!("{:08x}{}", next_sequence(), random_token(6))),
        at_ms,
        actor: by.actor.clone(),
        address: by.address.clone(),
        action: action.to_string(),
        target_kind: target.map(|t| t.kind.to_string()),
        target_id: target.map(|t| t.id.to_string()),
        target_name: target.map(|t| t.name.to_string()),
        outcome: outcome.to_string(),
    })
}

/// The most characters of one field of an entry.
const MAX_FIELD_CHARS: usize = 200;

/// `text` made safe to show on one line of a terminal or page: control characters (newlines,
/// escape sequences, NUL, which PostgreSQL refuses) and bidirectional overrides become U+FFFD,
/// and it is cut to [`MAX_FIELD_CHARS`]. A name someone else typed cannot forge a line.
pub fn clean(text: &str) -> String {
    let unsafe_char = |c: char| {
        c.is_control() || matches!(c, '\u{200e}' | '\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
    };
    text.chars()
        .take(MAX_FIELD_CHARS)
        .map(|c| if unsafe_char(c) { '\u{fffd}' } else { c })
        .collect()
}

/// `entry` with every text field [`clean`]ed.
fn cleaned(entry: AuditRecord) -> AuditRecord {
    let opt = |v: Option<String>| v.map(|s| clean(&s));
    AuditRecord {
        actor: AuditActor {
            kind: clean(&entry.actor.kind),
            id: clean(&entry.actor.id),
            name: clean(&entry.actor.name),
        },
        address: opt(entry.address),
        action: clean(&entry.action),
        target_kind: opt(entry.target_kind),
        target_id: opt(entry.target_id),
        target_name: opt(entry.target_name),
        outcome: clean(&entry.outcome),
        ..entry
    }
}

/// Where `tessera keys` leaves its entries when a running server holds the data folder (sled
/// allows one process): in the keys folder it has just changed, which the server watches. The
/// server moves them into the trail within seconds ([`Audit::import_pending_audit`]).
pub(crate) const PENDING_AUDIT_FILE: &str = "audit-pending.jsonl";

/// The most a pending file is read: far more than any run of commands writes.
const MAX_PENDING_BYTES: u64 = 1 << 20;

/// Appends `entry` to the keys folder's pending entries (a private file, like the keys),
/// under the file's lock, so the server never takes the file half-written.
pub(crate) fn queue_pending_audit(keys_dir: &Path, entry: &AuditRecord) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let path = keys_dir.join(PENDING_AUDIT_FILE);
    if let Ok(meta) = std::fs::symlink_metadata(&path) {
        if !meta.file_type().is_file() {
            return Err(std::io::Error::other(format!("{} is not a plain file", path.display())));
        }
    }
    let mut line = serde_json::to_vec(entry).map_err(std::io::Error::other)?;
    line.push(b'\n');
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .open(&path)?;
    file.lock()?;
    file.write_all(&line)?;
    file.sync_all()
}

/// How far back a pending entry may date: `tessera keys` leaves it just now, and a server
/// takes it within seconds (or at its next start).
const PENDING_MAX_AGE_MS: i64 = 7 * 86_400_000;

/// A pending line as the trail may take it: only what `tessera keys` writes (a `cli` actor, a
/// `key.*` action on a key, made lately), cleaned, with an id rebuilt from its time (so it
/// sorts where it belongs) and its content (so importing it twice is harmless).
fn pending_entry(line: &[u8], now_ms: i64) -> Option<AuditRecord> {
    let entry: AuditRecord = serde_json::from_slice(line).ok()?;
    let genuine = entry.actor.kind == "cli"
        && entry.action.starts_with("key.")
        && entry.target_kind.as_deref() == Some("key")
        && entry.at_ms > now_ms - PENDING_MAX_AGE_MS
        && entry.at_ms <= now_ms + 60_000;
    if !genuine {
        return None;
    }
    let digest = ring::digest::digest(&ring::digest::SHA256, line);
    let suffix: String = digest.as_ref()[..8].iter().map(|b| format!("{b:02x}")).collect();
    Some(cleaned(AuditRecord {
        id: audit_id(entry.at_ms, &suffix),
        ..entry
    }))
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
    /// Bursts recorded per caller address: naming many clients (any published URL is one,
    /// when client documents are open) makes no more entries than attacking one.
    reports_per_address: RateLimiter,
}

impl AuthFailureWatch {
    fn new() -> AuthFailureWatch {
        AuthFailureWatch {
            failures: RateLimiter::new(Rate::per_minute(AUTH_FAILURE_BURST)),
            reports: RateLimiter::new(Self::ONE_PER_TEN_MINUTES),
            reports_per_address: RateLimiter::new(Self::ONE_PER_TEN_MINUTES),
        }
    }

    const ONE_PER_TEN_MINUTES: Rate = Rate {
        per_second: 1.0 / 600.0,
        burst: 1.0,
    };

    /// Counts one failure for `client_id` from `address`; true when it starts a burst to record.
    fn burst(&self, client_id: &str, address: Option<&str>) -> bool {
        // A document client's id is a URL of up to 2 KB: counted by a digest, so the bounded
        // tables stay small too.
        let digest;
        let key = match client_id.len() {
            0..=64 => client_id,
            _ => {
                let hash = ring::digest::digest(&ring::digest::SHA256, client_id.as_bytes());
                digest = hash.as_ref()[..16]
                    .iter()
                    .map(|b| format!("{b:02x}"))
                    .collect::<String>();
                &digest
            }
        };
        self.failures.check(key).is_err()
            && self.reports.check(key).is_ok()
            && self.reports_per_address.check(address.unwrap_or_default()).is_ok()
    }
}

/// The most entries one page of the trail may hold.
pub(crate) const MAX_AUDIT_PAGE: usize = 500;

/// The audit trail and the budgets that keep it bounded: every service that changes something
/// holds a reference to it and records through it.
pub(crate) struct Audit {
    store: Arc<dyn AuditStore>,
    /// Importing the CLI's pending entries must know they are on disk before it empties
    /// their file.
    durability: Durability,
    /// How long entries are kept (`audit_retention`).
    retention: Duration,
    /// Changes per ordinary actor ([`Caller::privileged`] ones are not counted).
    change_rate: RateLimiter,
    /// Bursts of rejected client authentications.
    auth_failures: AuthFailureWatch,
}

impl Audit {
    pub(super) fn new(store: Arc<dyn AuditStore>, durability: Durability, config: &Config) -> Audit {
        Audit {
            store,
            durability,
            retention: config.audit_retention,
            change_rate: RateLimiter::new(config.self_service_changes),
            auth_failures: AuthFailureWatch::new(),
        }
    }

    /// Records what `by` did, with `outcome`. A failure to record is logged, not returned: the
    /// change it describes has already happened and must not be reported as failed.
    pub async fn record(&self, by: &Caller, action: &str, target: Option<Target<'_>>, outcome: &str) {
        if let Err(e) = self.store.append_audit(&audit_entry(by, action, target, outcome)).await {
            tracing::error!(action, error = %e, "could not record an audit entry");
        }
    }

    /// Refuses `what` when `by` is the signed-in user it would be done to: an operator who
    /// disabled, deleted or demoted themselves in the console could lock every operator out
    /// (the CLI and the admin API can still do it to anyone).
    pub(super) fn refuse_own_account(&self, by: &Caller, user_id: &str, what: &str) -> Result<(), Error> {
        match by.actor.kind == "user" && by.actor.id == user_id {
            true => Err(Error::invalid_request(format!(
                "you cannot {what} your own account; another operator can"
            ))),
            false => Ok(()),
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
    pub(crate) async fn record_result<T>(
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
        // No entry holds a control character (see `clean`), and PostgreSQL refuses a NUL.
        let given = [&filter.actor, &filter.action, &filter.target].into_iter().flatten();
        if given
            .map(String::as_str)
            .chain(before)
            .any(|s| s.chars().any(char::is_control))
        {
            return Err(Error::invalid_request("a filter or cursor holds a control character"));
        }
        Ok(self
            .store
            .audit_page(filter, before, limit.clamp(1, MAX_AUDIT_PAGE))
            .await?)
    }

    /// Moves the entries `tessera keys` left in `keys_dir` into the trail; returns how many.
    /// The file is read, its entries stored, then emptied, all under its lock, so an entry the
    /// CLI adds meanwhile waits for the next call and none is lost or taken twice. Lines that
    /// are not what `tessera keys` writes are skipped and logged.
    pub(crate) async fn import_pending_audit(&self, keys_dir: &Path) -> Result<usize, Error> {
        let path = keys_dir.join(PENDING_AUDIT_FILE);
        match std::fs::symlink_metadata(&path) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(0),
            Err(e) => return Err(Error::server_error(e)),
            Ok(meta) if !meta.file_type().is_file() => {
                tracing::warn!(path = %path.display(), "the pending audit file is not a plain file; not read");
                return Ok(0);
            }
            Ok(_) => {}
        }
        let taken = tokio::task::spawn_blocking(move || -> std::io::Result<Option<(std::fs::File, Vec<u8>)>> {
            use std::io::Read;
            let file = std::fs::OpenOptions::new().read(true).write(true).open(&path)?;
            match file.try_lock() {
                Ok(()) => {}
                // The CLI is writing: next time.
                Err(std::fs::TryLockError::WouldBlock) => return Ok(None),
                Err(std::fs::TryLockError::Error(e)) => return Err(e),
            }
            let mut bytes = Vec::new();
            (&file).take(MAX_PENDING_BYTES).read_to_end(&mut bytes)?;
            Ok(Some((file, bytes)))
        })
        .await
        .map_err(Error::server_error)?
        .map_err(Error::server_error)?;
        let Some((file, bytes)) = taken else { return Ok(0) };
        let now = now_ms();
        let mut imported = 0;
        for line in bytes.split(|b| *b == b'\n').filter(|l| !l.trim_ascii().is_empty()) {
            match pending_entry(line, now) {
                Some(entry) => {
                    self.store.append_audit(&entry).await?;
                    imported += 1;
                }
                None => tracing::warn!("skipped a line of the pending audit file that tessera keys did not write"),
            }
        }
        self.durability.durable().await?;
        tokio::task::spawn_blocking(move || {
            file.set_len(0)?;
            file.sync_all()
        })
        .await
        .map_err(Error::server_error)?
        .map_err(Error::server_error)?;
        Ok(imported)
    }

    /// A client's authentication was rejected (from `address`): recorded when it makes a burst.
    pub(super) async fn client_auth_rejected(&self, client: &ClientRecord, address: Option<&str>) {
        if self.auth_failures.burst(&client.client_id, address) {
            let by = Caller::anonymous(address);
            let outcome = format!("more than {AUTH_FAILURE_BURST} a minute");
            self.record(&by, "client_auth.burst", Some(Target::client(client)), &outcome)
                .await;
        }
    }

    /// Removes entries older than `audit_retention`.
    pub(super) async fn purge_audit(&self) -> Result<u64, Error> {
        let cutoff = now_ms() - self.retention.as_millis() as i64;
        Ok(self.store.purge_audit(cutoff).await?)
    }
}

/// The trail as the front offers it to other crates.
impl Provider {
    /// One page of the trail, newest first (`Audit::audit_page`).
    pub async fn audit_page(
        &self,
        filter: &AuditFilter,
        before: Option<&str>,
        limit: usize,
    ) -> Result<Vec<AuditRecord>, Error> {
        self.audit.audit_page(filter, before, limit).await
    }
}

/// A grant as a person reads it in the trail: whose, to which app.
pub(super) async fn grant_name(users: &dyn UserStore, clients: &super::client::Clients, grant: &GrantRecord) -> String {
    let user = match users.get_user(&grant.user_id).await {
        Ok(Some(user)) => user.username,
        _ => grant.user_id.clone(),
    };
    let client = match clients.stored_client(&grant.client_id).await {
        Ok(Some(client)) => client.name,
        _ => grant.client_id.clone(),
    };
    format!("{user} to {client}")
}
