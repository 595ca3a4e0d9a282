//! The audit trail: who changed what, from where, and how it ended, plus security events.
//! Every surface (the console, the admin API, the CLI, the pages, dynamic registration) records
//! through [`Provider::audit`], so an action is written once whichever surface called it.
//! Entries never hold a secret, token or password: only ids and names.

use super::{random_token, Error, Provider};
use crate::clock::now_ms;
use crate::store::{audit_id, AuditActor, AuditFilter, AuditRecord};

/// What an action was done to: its kind (`client`, `user`, `grant`, `key`), id and name.
#[derive(Debug, Clone, Copy)]
pub struct Target<'a> {
    pub kind: &'a str,
    pub id: &'a str,
    pub name: &'a str,
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
