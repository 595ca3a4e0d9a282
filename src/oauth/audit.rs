//! The audit trail: who changed what, from where, and how it ended, plus security events.
//! Every surface (the console, the admin API, the CLI, the pages, dynamic registration) records
//! through [`Provider::audit`], so an action is written once whichever surface called it.
//! Entries never hold a secret, token or password: only ids and names.

use super::{random_token, Error, Provider};
use crate::clock::now_ms;
use crate::store::{audit_id, AuditActor, AuditFilter, AuditRecord, ClientRecord, UserRecord};

/// Who is calling a core function that changes something, and from where: every such function
/// takes one and records its entry with it.
#[derive(Debug, Clone)]
pub struct Caller {
    pub actor: AuditActor,
    pub address: Option<String>,
}

impl Caller {
    fn new(kind: &str, id: &str, name: &str, address: Option<&str>) -> Caller {
        Caller {
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
        Caller::new("user", &user.user_id, &user.username, address)
    }

    /// A client acting on the server: an admin API client, or a dynamically registered client
    /// managing its own registration.
    pub fn client(client: &ClientRecord, address: Option<&str>) -> Caller {
        Caller::new("client", &client.client_id, &client.name, address)
    }

    /// An admin API client known only by its id.
    pub fn client_id(client_id: &str, address: Option<&str>) -> Caller {
        Caller::new("client", client_id, client_id, address)
    }

    /// The OS user running the `tessera` command line.
    pub fn cli() -> Caller {
        let user = std::env::var("USER")
            .or_else(|_| std::env::var("LOGNAME"))
            .unwrap_or_else(|_| "unknown".to_string());
        Caller::new("cli", &user, &user, None)
    }

    /// Someone not signed in: an open dynamic registration, a failed login.
    pub fn anonymous(address: Option<&str>) -> Caller {
        Caller::new("anonymous", "", "anonymous", address)
    }

    /// Tessera itself: the demo seed at first start, the purge of unused clients.
    pub fn system() -> Caller {
        Caller::new("system", "tessera", "tessera", None)
    }
}

/// What an action was done to: its kind (`client`, `user`, `grant`, `key`), id and name.
#[derive(Debug, Clone, Copy)]
pub struct Target<'a> {
    pub kind: &'a str,
    pub id: &'a str,
    pub name: &'a str,
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
        let at_ms = now_ms();
        let entry = AuditRecord {
            id: audit_id(at_ms, &random_token(6)),
            at_ms,
            actor: actor.clone(),
            address: address.map(str::to_string),
            action: action.to_string(),
            target_kind: target.map(|t| t.kind.to_string()),
            target_id: target.map(|t| t.id.to_string()),
            target_name: target.map(|t| t.name.to_string()),
            outcome: outcome.to_string(),
        };
        Ok(self.store.append_audit(&entry).await?)
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

    /// Removes entries older than `audit_retention`.
    pub(super) async fn purge_audit(&self) -> Result<u64, Error> {
        let cutoff = now_ms() - self.config.audit_retention.as_millis() as i64;
        Ok(self.store.purge_audit(cutoff).await?)
    }
}
