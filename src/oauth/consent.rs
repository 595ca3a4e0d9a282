//! Consent memory: a user who approved a client's scopes is not asked again for them (unless
//! the request says `prompt=consent`), and first-party apps marked `skip_consent` by an operator never ask
//! ([`super::client::is_first_party`]).
//! A user can list the apps they approved and withdraw an approval, which revokes every
//! grant (so every refresh token) that app holds for them.

use super::audit::{Caller, Target};
use super::authorize::Authorization;
use super::authorize::AuthorizationRequest;
use super::scope::Scope;
use super::{now, Error};
use crate::store::{ClientRecord, ConsentRecord};

/// An app the user approved, as their "authorized apps" page shows it.
#[derive(Debug, Clone)]
pub struct AuthorizedApp {
    pub consent: ConsentRecord,
    /// `None` if the client has since been deleted.
    pub client: Option<ClientRecord>,
}

impl Authorization {
    /// Whether the user must see the consent page for this request.
    pub async fn consent_required(&self, request: &AuthorizationRequest, user_id: &str) -> Result<bool, Error> {
        if request.prompt.consent {
            return Ok(true);
        }
        if super::client::is_first_party(&request.client) {
            return Ok(false);
        }
        let remembered = self.consents.get_consent(user_id, &request.client.client_id).await?;
        Ok(!remembered.is_some_and(|c| request.scope.is_subset_of(&c.scopes)))
    }

    /// Remembers that the user approved this request's scopes for its client, adding to what
    /// they approved before.
    pub async fn remember_consent(&self, request: &AuthorizationRequest, user_id: &str) -> Result<(), Error> {
        self.remember_scopes(user_id, &request.client.client_id, &request.scope)
            .await
    }

    /// Remembers that the user approved `scope` for the client (the authorization endpoint's
    /// consent page, or a device request's confirmation), adding to what they approved before.
    pub async fn remember_scopes(&self, user_id: &str, client_id: &str, scope: &Scope) -> Result<(), Error> {
        let time = now();
        let mut consent = self
            .consents
            .get_consent(user_id, client_id)
            .await?
            .unwrap_or(ConsentRecord {
                user_id: user_id.to_string(),
                client_id: client_id.to_string(),
                scopes: Vec::new(),
                granted_at: time,
                updated_at: time,
            });
        for scope in scope.tokens() {
            if !consent.scopes.iter().any(|s| s == scope) {
                consent.scopes.push(scope.to_string());
            }
        }
        consent.scopes.sort();
        consent.updated_at = time;
        Ok(self.consents.put_consent(&consent).await?)
    }

    /// Each scope token with its description from the configuration, as the consent and
    /// device confirmation pages list them.
    pub fn describe_scopes(&self, scope: &Scope) -> Vec<(String, Option<String>)> {
        scope
            .tokens()
            .map(|name| {
                let description = self
                    .config
                    .scopes
                    .iter()
                    .find(|s| s.name == name)
                    .map(|s| s.description.clone());
                (name.to_string(), description)
            })
            .collect()
    }

    /// Every app this user has approved; `caller` (an address key) is who a document fetch
    /// is counted against.
    pub async fn authorized_apps(&self, user_id: &str, caller: Option<&str>) -> Result<Vec<AuthorizedApp>, Error> {
        let mut apps = Vec::new();
        for consent in self.consents.list_consents(user_id).await? {
            // A document client whose document cannot be had now is still listed, by its host.
            let client = match self.clients.resolve_client_for(&consent.client_id, caller).await {
                Ok(client) => client,
                Err(e) if e.code == super::ErrorCode::InvalidClient => None,
                Err(e) => return Err(e),
            };
            apps.push(AuthorizedApp { client, consent });
        }
        Ok(apps)
    }

    /// Withdraws the user's approval of a client: forgets the consent and revokes every grant
    /// the client holds for the user, so its refresh tokens stop working at once. Returns
    /// whether anything was approved.
    /// Recorded in the audit trail when there was an approval to withdraw.
    pub async fn withdraw_consent(&self, by: &Caller, user_id: &str, client_id: &str) -> Result<bool, Error> {
        self.audit.spend_change(by)?;
        let known = self.consents.get_consent(user_id, client_id).await?.is_some();
        for grant_id in self.grants.grant_ids(user_id, client_id).await? {
            self.grants.revoke_grant(&grant_id).await?;
        }
        self.consents.delete_consent(user_id, client_id).await?;
        self.durability.durable().await?;
        if known {
            // Named without fetching: a document client's name would mean a request out.
            let name = match self.clients.stored_client(client_id).await? {
                Some(client) => client.name,
                None => client_id.to_string(),
            };
            let target = Target {
                kind: "client",
                id: client_id,
                name: &name,
            };
            self.audit.record(by, "consent.withdraw", Some(target), "ok").await;
        }
        Ok(known)
    }
}
