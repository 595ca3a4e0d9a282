//! Consent memory: a user who approved a client's scopes is not asked again for them (unless
//! the request says `prompt=consent`), and first-party apps marked `skip_consent` never ask.

use super::authorize::AuthorizationRequest;
use super::{now, Error, Provider};
use crate::store::ConsentRecord;

impl Provider {
    /// Whether the user must see the consent page for this request.
    pub fn consent_required(&self, request: &AuthorizationRequest, user_id: &str) -> Result<bool, Error> {
        if request.prompt_consent {
            return Ok(true);
        }
        if request.client.skip_consent {
            return Ok(false);
        }
        let remembered = self.store.get_consent(user_id, &request.client.client_id)?;
        Ok(!remembered.is_some_and(|c| request.scope.is_subset_of(&c.scopes)))
    }

    /// Remembers that the user approved this request's scopes for its client, adding to what
    /// they approved before.
    pub fn remember_consent(&self, request: &AuthorizationRequest, user_id: &str) -> Result<(), Error> {
        let client_id = &request.client.client_id;
        let time = now();
        let mut consent = self.store.get_consent(user_id, client_id)?.unwrap_or(ConsentRecord {
            user_id: user_id.to_string(),
            client_id: client_id.clone(),
            scopes: Vec::new(),
            granted_at: time,
            updated_at: time,
        });
        for scope in request.scope.tokens() {
            if !consent.scopes.iter().any(|s| s == scope) {
                consent.scopes.push(scope.to_string());
            }
        }
        consent.scopes.sort();
        consent.updated_at = time;
        Ok(self.store.put_consent(&consent)?)
    }
}
