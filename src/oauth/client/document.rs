//! Client ID Metadata Documents (draft-ietf-oauth-client-id-metadata-document; MCP
//! authorization 2025-11-25): a client whose `client_id` is an https URL is described by the
//! JSON document at that URL, which Tessera fetches (see [`crate::documents`]) instead of
//! looking the client up in its store. Nothing about such a client is stored but what a user
//! gave it (consent, grants, tokens), all keyed by the URL.
//!
//! The document is client metadata as in dynamic registration (RFC 7591 §2) and is held to
//! the same policy (`registration_scopes`, `registration_resources`, redirect URI rules), plus:
//! its `client_id` is the URL exactly; it has no shared secret (`client_secret_*` methods and
//! `client_secret` are refused: anyone can read the document); `private_key_jwt` needs its
//! keys (`jwks` or `jwks_uri`); `none` is the default method. Such a client is never
//! first-party and never an administration client.

use url::Url;

use super::metadata::ClientMetadata;
pub use super::uri::is_document_url;
use super::Clients;
use crate::config::ClientDocumentsMode;
use crate::documents::{DocumentError, Kind, Origin};
use crate::oauth::{Error, ErrorCode};
use crate::store::ClientRecord;

/// The host and port of an allowlist entry (`host`, or `host:port` for a port other than
/// 443), written as [`document_authority`] writes a document URL's, or `None` if it is not one.
pub(crate) fn document_authority_of(entry: &str) -> Option<String> {
    if entry.is_empty() || entry.contains(['/', '?', '#', '@', '\\']) {
        return None;
    }
    let url = Url::parse(&format!("https://{entry}/c")).ok()?;
    url.host()?;
    Some(authority(&url))
}

/// A document URL's host, with its port when it is not https's own (443).
pub(crate) fn document_authority(client_id: &str) -> Option<String> {
    Url::parse(client_id)
        .ok()
        .filter(|_| is_document_url(client_id))
        .map(|url| authority(&url))
}

fn authority(url: &Url) -> String {
    let host = url.host_str().unwrap_or_default().to_ascii_lowercase();
    match url.port() {
        Some(port) => format!("{host}:{port}"),
        None => host,
    }
}

/// The host a document client id names, as the consent page shows it.
pub(crate) fn document_host(client_id: &str) -> Option<String> {
    Url::parse(client_id)
        .ok()
        .filter(|_| is_document_url(client_id))
        .and_then(|u| u.host_str().map(str::to_string))
}

/// The error of a document that could not be had because of Tessera's own limits (its fetch
/// places or budgets are taken): the caller should come back, not fix its client. 503 or 429
/// with `Retry-After`; `None` for the document's own faults.
pub(super) fn capacity_error(error: &DocumentError) -> Option<Error> {
    let retry_after = error.retry_after()?;
    let code = match error {
        DocumentError::RateLimited { .. } => ErrorCode::RateLimited,
        _ => ErrorCode::TemporarilyUnavailable,
    };
    Some(Error {
        retry_after: Some(retry_after),
        ..Error::new(code, error.to_string())
    })
}

fn invalid(client_id: &str, why: impl std::fmt::Display) -> Error {
    Error::new(
        ErrorCode::InvalidClient,
        format!("the client metadata document at {client_id} is not usable: {why}"),
    )
}

impl Clients {
    /// Whether `client_id` names a client by its metadata document and such clients are
    /// accepted here (the mode, and in `allowlist` mode the host).
    pub(crate) fn accepts_document_client(&self, client_id: &str) -> bool {
        let policy = &self.config.client_documents;
        match policy.mode {
            ClientDocumentsMode::Off => false,
            ClientDocumentsMode::Open => is_document_url(client_id),
            // Host and port: another port on an allowed host is another server.
            ClientDocumentsMode::Allowlist => {
                document_authority(client_id).is_some_and(|authority| policy.hosts.contains(&authority))
            }
        }
    }

    /// The client with this id: a registered one, or one described by the metadata document
    /// at the id (fetched or from the cache) when such clients are accepted. `Ok(None)` for an
    /// unknown id; an `invalid_client` error naming the reason when the document cannot be had
    /// or is not acceptable. This one is for privileged callers (the admin API, the CLI, the
    /// console), whose fetches share one budget: a request from anyone else passes its address
    /// ([`Clients::resolve_client_for`]), so that the fetches it causes are counted against it.
    pub(crate) async fn resolve_client(&self, client_id: &str) -> Result<Option<ClientRecord>, Error> {
        self.resolve_client_for(client_id, None).await
    }

    /// [`Clients::resolve_client`] for a request from `caller` (an address key), against
    /// whom a fetch of a document not fetched before is counted.
    pub(crate) async fn resolve_client_for(
        &self,
        client_id: &str,
        caller: Option<&str>,
    ) -> Result<Option<ClientRecord>, Error> {
        if self.accepts_document_client(client_id) {
            return self.document_client(client_id, caller).await.map(Some);
        }
        Ok(self.store.get_client(client_id).await?)
    }

    /// Whether a client with this id exists now (for access tokens, which stop working when
    /// their client is deleted): a document client exists while such clients are accepted.
    pub(crate) async fn client_exists(&self, client_id: &str) -> Result<bool, Error> {
        Ok(self.accepts_document_client(client_id) || self.store.get_client(client_id).await?.is_some())
    }

    /// Fetches and validates the document at `client_id`. Only a usable document is cached.
    async fn document_client(&self, client_id: &str, caller: Option<&str>) -> Result<ClientRecord, Error> {
        let usable = |document: &serde_json::Value| {
            self.client_from_document(client_id, document)
                .map(drop)
                .map_err(|e| e.description)
        };
        let document = self
            .documents
            .get(Kind::ClientMetadata, client_id, caller, Origin::Named, &usable)
            .await
            .map_err(|e| match e {
                DocumentError::Unusable(description) => Error::new(ErrorCode::InvalidClient, description),
                e => capacity_error(&e).unwrap_or_else(|| invalid(client_id, e)),
            })?;
        self.client_from_document(client_id, &document)
    }

    /// The client `document` describes, if it is acceptable as the client at `client_id`.
    fn client_from_document(&self, client_id: &str, document: &serde_json::Value) -> Result<ClientRecord, Error> {
        if document["client_id"].as_str() != Some(client_id) {
            return Err(invalid(
                client_id,
                "its client_id is not exactly the URL it is served at",
            ));
        }
        for secret in ["client_secret", "client_secret_expires_at"] {
            if document.get(secret).is_some() {
                return Err(invalid(
                    client_id,
                    format!("it has {secret}; a public document cannot hold a secret"),
                ));
            }
        }
        let metadata = ClientMetadata::from_document(document).map_err(|why| invalid(client_id, why))?;
        if metadata.redirect_uris.is_empty() {
            return Err(invalid(client_id, "it has no redirect_uris"));
        }
        let method = metadata.token_endpoint_auth_method.as_deref().unwrap_or("none");
        if method.starts_with("client_secret") {
            return Err(invalid(
                client_id,
                format!("token_endpoint_auth_method {method} needs a shared secret; use none or private_key_jwt"),
            ));
        }
        let metadata = ClientMetadata {
            token_endpoint_auth_method: Some(method.to_string()),
            ..metadata
        };
        let (new, method) = self
            .registered_settings(&metadata, None)
            .map_err(|e| invalid(client_id, e.description))?;
        let host = document_host(client_id).unwrap_or_default();
        let name = metadata.client_name.clone().map_or(host, |_| new.name.clone());
        let scope = self
            .validate_client(&super::model::NewClient {
                name: name.clone(),
                ..new.clone()
            })
            .map_err(|e| invalid(client_id, e.description))?;
        let (jwks, jwks_uri) = super::model::key_fields(new.keys);
        Ok(ClientRecord {
            client_id: client_id.to_string(),
            name,
            client_type: new.client_type,
            secret_hash: None,
            redirect_uris: new.redirect_uris,
            grant_types: new.grant_types,
            scopes: scope.tokens().map(str::to_string).collect(),
            resources: new.resources,
            access_token_ttl: None,
            refresh_token_ttl: None,
            created_at: crate::oauth::now(),
            skip_consent: false,
            owner_user_id: None,
            post_logout_redirect_uris: new.post_logout_redirect_uris,
            id_token_signed_response_alg: new.id_token_signed_response_alg,
            admin: false,
            registration_token_hash: None,
            token_endpoint_auth_method: Some(method),
            // Never stored, so never to be marked used or purged as unused.
            first_used_at: Some(0),
            jwks,
            jwks_uri,
            policy: new.policy,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_canonical_https_urls_with_a_path_are_document_client_ids() {
        for good in [
            "https://app.example/client.json",
            "https://app.example/oauth/metadata",
            "https://app.example:8443/c",
            "https://127.0.0.1:4000/client.json",
        ] {
            assert!(is_document_url(good), "{good}");
        }
        for bad in [
            "http://app.example/client.json",
            "https://app.example",
            "https://app.example/",
            "https://app.example/c#frag",
            "https://user:pw@app.example/c",
            "https://app.example/a/../c",
            "https://APP.example/c",
            "https://app.example:443/c",
            "0c6f2b6e8d1a4c6e9f0e7a1b2c3d4e5f",
            "app.example/c",
        ] {
            assert!(!is_document_url(bad), "{bad}");
        }
    }

    #[test]
    fn allowlist_entries_name_a_host_and_port() {
        assert_eq!(
            document_authority_of("Agents.Example").as_deref(),
            Some("agents.example")
        );
        assert_eq!(
            document_authority_of("agents.example:443").as_deref(),
            Some("agents.example")
        );
        assert_eq!(
            document_authority_of("agents.example:8443").as_deref(),
            Some("agents.example:8443")
        );
        assert_eq!(document_authority_of("[::1]:8443").as_deref(), Some("[::1]:8443"));
        for bad in ["", "a.example/x", "user@a.example", "a.example:99999", "a.example:x"] {
            assert_eq!(document_authority_of(bad), None, "{bad}");
        }
        assert_eq!(
            document_authority("https://agents.example:8443/c.json").as_deref(),
            Some("agents.example:8443")
        );
        assert_eq!(
            document_authority("https://agents.example/c.json").as_deref(),
            Some("agents.example")
        );
    }
}
