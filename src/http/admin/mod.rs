//! The administration API under `/api/v1/`: clients, users, grants and keys, for programs.
//! Every operation needs an access token with the `tessera:admin` scope, which only admin
//! clients (`tessera app create --admin`) get, through client_credentials. Errors are RFC 9457
//! problem details with a stable `code` ([`problem`]); the bodies are in [`types`]. The
//! operations are the ones the CLI and the pages use (`Clients::register_client`,
//! `update_profile`, `change_keys`, ...).

mod problem;
mod types;

use std::sync::Arc;

use poem::web::Data;
use poem::Request;
use poem_openapi::auth::Bearer;
use poem_openapi::param::{Path, Query};
use poem_openapi::payload::Json;
use poem_openapi::{OAuthScopes, OpenApi, SecurityScheme};

pub use self::problem::AdminErrors;
use self::problem::{AdminAuthError, AdminCreated, AdminResponse};
pub use self::types::*;
use super::Tag;
use crate::oauth::admin::{not_found, page_size, KeyChange};
use crate::oauth::audit::Caller;
use crate::oauth::user::ProfileEdit;
use crate::oauth::{Error, Provider};

/// The scope the admin API needs.
#[derive(OAuthScopes)]
pub enum AdminScopes {
    /// Administer Tessera: clients, users, grants and keys.
    #[oai(rename = "tessera:admin")]
    Admin,
}

/// An access token from `POST /o/token/` with `grant_type=client_credentials` and
/// `scope=tessera:admin`, sent as `Authorization: Bearer`.
#[derive(SecurityScheme)]
#[oai(
    rename = "adminToken",
    ty = "oauth2",
    flows(client_credentials(token_url = "/o/token/", scopes = "AdminScopes")),
    checker = "check_admin_token"
)]
pub struct AdminToken(pub Caller);

async fn check_admin_token(req: &Request, bearer: Bearer) -> poem::Result<Caller> {
    let Some(provider) = req.data::<Arc<Provider>>() else {
        return Err(poem::Error::from_status(poem::http::StatusCode::INTERNAL_SERVER_ERROR));
    };
    let mut caller = provider.authorize_admin(&bearer.token).await.map_err(AdminAuthError)?;
    // An audit line per admin call: who, and what (the request line is logged anyway).
    caller.address = crate::net::ClientAddress::of(req).shown();
    tracing::info!(admin_client = %caller.actor.id, method = %req.method(), path = %req.uri().path(), "admin request");
    Ok(caller)
}

pub struct AdminApi;

#[OpenApi(prefix_path = "/api/v1", tag = "Tag::Admin")]
impl AdminApi {
    /// List clients
    ///
    /// A page of registered clients, ordered by `client_id`.
    #[oai(path = "/clients", method = "get", operation_id = "listClients")]
    async fn list_clients(
        &self,
        provider: Data<&Arc<Provider>>,
        #[oai(scope = "AdminScopes::Admin")] _auth: AdminToken,
        /// Page size, 1-200 (default 50).
        limit: Query<Option<u32>>,
        /// The `next_cursor` of the previous page.
        cursor: Query<Option<String>>,
    ) -> AdminResponse<ClientPage> {
        let page = async {
            let limit = page_size(limit.0)?;
            let (items, next_cursor) = map_page(provider.clients_page(cursor.0.as_deref(), limit).await?);
            Ok(ClientPage { items, next_cursor })
        };
        AdminResponse::of(page.await)
    }

    /// Register a client
    ///
    /// The response carries a confidential client's secret, this once.
    #[oai(path = "/clients", method = "post", operation_id = "createClient")]
    async fn create_client(
        &self,
        provider: Data<&Arc<Provider>>,
        #[oai(scope = "AdminScopes::Admin")] auth: AdminToken,
        body: Json<ClientSettings>,
    ) -> AdminCreated<ClientWithSecret> {
        let registered = match body.0.into_new_client() {
            Ok(new) => provider.clients.register_client(&auth.0, new).await,
            Err(e) => Err(e),
        };
        AdminCreated::of(registered.map(|(client, client_secret)| ClientWithSecret {
            client: client.into(),
            client_secret,
        }))
    }

    /// Get a client
    #[oai(path = "/clients/:client_id", method = "get", operation_id = "getClient")]
    async fn get_client(
        &self,
        provider: Data<&Arc<Provider>>,
        #[oai(scope = "AdminScopes::Admin")] _auth: AdminToken,
        client_id: Path<String>,
    ) -> AdminResponse<Client> {
        AdminResponse::of(
            provider
                .clients
                .find_client(&client_id.0)
                .await
                .and_then(|c| c.map(Client::from).ok_or_else(|| not_found("client"))),
        )
    }

    /// Replace a client's settings
    ///
    /// Its id, type, secret and creation time stay.
    #[oai(path = "/clients/:client_id", method = "put", operation_id = "updateClient")]
    async fn update_client(
        &self,
        provider: Data<&Arc<Provider>>,
        #[oai(scope = "AdminScopes::Admin")] auth: AdminToken,
        client_id: Path<String>,
        body: Json<ClientSettings>,
    ) -> AdminResponse<Client> {
        let updated = match body.0.into_new_client() {
            Ok(new) => provider.clients.update_client(&auth.0, &client_id.0, new).await,
            Err(e) => Err(e),
        };
        AdminResponse::of(updated.map(Client::from))
    }

    /// Delete a client
    ///
    /// Every grant it holds is revoked first.
    #[oai(path = "/clients/:client_id", method = "delete", operation_id = "deleteClient")]
    async fn delete_client(
        &self,
        provider: Data<&Arc<Provider>>,
        #[oai(scope = "AdminScopes::Admin")] auth: AdminToken,
        client_id: Path<String>,
    ) -> AdminResponse<Done> {
        AdminResponse::of(match provider.delete_client(&auth.0, &client_id.0).await {
            Ok(true) => Ok(Done { done: true }),
            Ok(false) => Err(not_found("client")),
            Err(e) => Err(e),
        })
    }

    /// Rotate a client's secret
    ///
    /// The old secret stops working at once; the new one is in this response only.
    #[oai(
        path = "/clients/:client_id/secret",
        method = "post",
        operation_id = "rotateClientSecret"
    )]
    async fn rotate_client_secret(
        &self,
        provider: Data<&Arc<Provider>>,
        #[oai(scope = "AdminScopes::Admin")] auth: AdminToken,
        client_id: Path<String>,
    ) -> AdminResponse<ClientWithSecret> {
        let result = async {
            let secret = provider.clients.rotate_client_secret(&auth.0, &client_id.0).await?;
            let client = provider
                .clients
                .find_client(&client_id.0)
                .await?
                .ok_or_else(|| not_found("client"))?;
            Ok(ClientWithSecret {
                client: client.into(),
                client_secret: Some(secret),
            })
        };
        AdminResponse::of(result.await)
    }

    /// List users
    ///
    /// A page of users, ordered by `user_id`.
    #[oai(path = "/users", method = "get", operation_id = "listUsers")]
    async fn list_users(
        &self,
        provider: Data<&Arc<Provider>>,
        #[oai(scope = "AdminScopes::Admin")] _auth: AdminToken,
        /// Page size, 1-200 (default 50).
        limit: Query<Option<u32>>,
        /// The `next_cursor` of the previous page.
        cursor: Query<Option<String>>,
    ) -> AdminResponse<UserPage> {
        let page = async {
            let limit = page_size(limit.0)?;
            let (items, next_cursor) = map_page(provider.users_page(cursor.0.as_deref(), limit).await?);
            Ok(UserPage { items, next_cursor })
        };
        AdminResponse::of(page.await)
    }

    /// Create a user
    #[oai(path = "/users", method = "post", operation_id = "createUser")]
    async fn create_user(
        &self,
        provider: Data<&Arc<Provider>>,
        #[oai(scope = "AdminScopes::Admin")] auth: AdminToken,
        body: Json<NewUser>,
    ) -> AdminCreated<User> {
        let NewUser {
            username,
            password,
            profile,
        } = body.0;
        let mut edit = ProfileEdit::default();
        profile.profile_changes().apply(&mut edit);
        edit.email_verified = profile.email_verified;
        let result = async {
            let mut user = provider
                .accounts
                .create_user_with_profile(&auth.0, &username, &password, edit)
                .await?;
            if profile.operator == Some(true) {
                user = provider.accounts.set_operator(&auth.0, &user.user_id, true).await?;
            }
            if profile.disabled == Some(true) {
                user = provider.accounts.set_disabled(&auth.0, &user.user_id, true).await?.0;
            }
            Ok(user)
        };
        AdminCreated::of(result.await.map(User::from))
    }

    /// Get a user
    #[oai(path = "/users/:user_id", method = "get", operation_id = "getUser")]
    async fn get_user(
        &self,
        provider: Data<&Arc<Provider>>,
        #[oai(scope = "AdminScopes::Admin")] _auth: AdminToken,
        user_id: Path<String>,
    ) -> AdminResponse<User> {
        let user = provider.accounts.find_user(&user_id.0).await;
        AdminResponse::of(user.and_then(|u| u.map(User::from).ok_or_else(|| not_found("user"))))
    }

    /// Change a user's profile
    ///
    /// Only the fields sent change; an empty string clears one.
    #[oai(path = "/users/:user_id", method = "patch", operation_id = "updateUser")]
    async fn update_user(
        &self,
        provider: Data<&Arc<Provider>>,
        #[oai(scope = "AdminScopes::Admin")] auth: AdminToken,
        user_id: Path<String>,
        body: Json<UserChanges>,
    ) -> AdminResponse<User> {
        let result = async {
            let user = provider
                .accounts
                .find_user(&user_id.0)
                .await?
                .ok_or_else(|| not_found("user"))?;
            let mut edit = ProfileEdit::of(&user);
            body.0.profile_changes().apply(&mut edit);
            edit.email_verified = body.0.email_verified;
            // Only a change is recorded: a PATCH of `disabled` alone is one entry, not two.
            let mut user = match edit == ProfileEdit::of(&user) {
                true => user,
                false => provider.accounts.update_profile(&auth.0, &user.user_id, edit).await?,
            };
            if let Some(operator) = body.0.operator {
                user = provider.accounts.set_operator(&auth.0, &user.user_id, operator).await?;
            }
            if let Some(disabled) = body.0.disabled {
                user = provider
                    .accounts
                    .set_disabled(&auth.0, &user.user_id, disabled)
                    .await?
                    .0;
            }
            Ok(user)
        };
        AdminResponse::of(result.await.map(User::from))
    }

    /// Delete a user
    ///
    /// Every grant they gave is revoked first.
    #[oai(path = "/users/:user_id", method = "delete", operation_id = "deleteUser")]
    async fn delete_user(
        &self,
        provider: Data<&Arc<Provider>>,
        #[oai(scope = "AdminScopes::Admin")] auth: AdminToken,
        user_id: Path<String>,
    ) -> AdminResponse<Done> {
        AdminResponse::of(match provider.delete_user(&auth.0, &user_id.0).await {
            Ok(true) => Ok(Done { done: true }),
            Ok(false) => Err(not_found("user")),
            Err(e) => Err(e),
        })
    }

    /// List a user's sign-in factors
    ///
    /// Their kinds, names and when they were added and last used; never their secrets.
    #[oai(path = "/users/:user_id/factors", method = "get", operation_id = "listUserFactors")]
    async fn list_user_factors(
        &self,
        provider: Data<&Arc<Provider>>,
        #[oai(scope = "AdminScopes::Admin")] _auth: AdminToken,
        user_id: Path<String>,
    ) -> AdminResponse<FactorList> {
        let result = async {
            let user = provider
                .accounts
                .find_user(&user_id.0)
                .await?
                .ok_or_else(|| not_found("user"))?;
            let factors = provider.accounts.factors(&user.user_id).await?;
            Ok(FactorList {
                factors: factors.into_iter().map(Factor::from).collect(),
            })
        };
        AdminResponse::of(result.await)
    }

    /// Remove one of a user's sign-in factors
    ///
    /// Recorded in the audit trail with the operator. A user who must have a second factor
    /// adds one again at their next login.
    #[oai(
        path = "/users/:user_id/factors/:factor_id",
        method = "delete",
        operation_id = "deleteUserFactor"
    )]
    async fn delete_user_factor(
        &self,
        provider: Data<&Arc<Provider>>,
        #[oai(scope = "AdminScopes::Admin")] auth: AdminToken,
        user_id: Path<String>,
        factor_id: Path<String>,
    ) -> AdminResponse<Done> {
        let result = async {
            let user = provider
                .accounts
                .find_user(&user_id.0)
                .await?
                .ok_or_else(|| not_found("user"))?;
            match provider.accounts.remove_factor(&auth.0, &user, &factor_id.0).await? {
                true => Ok(Done { done: true }),
                false => Err(not_found("factor")),
            }
        };
        AdminResponse::of(result.await)
    }

    /// Set a user's password
    #[oai(path = "/users/:user_id/password", method = "put", operation_id = "setUserPassword")]
    async fn set_user_password(
        &self,
        provider: Data<&Arc<Provider>>,
        #[oai(scope = "AdminScopes::Admin")] auth: AdminToken,
        user_id: Path<String>,
        body: Json<Password>,
    ) -> AdminResponse<Done> {
        let result = match provider
            .accounts
            .set_password(&auth.0, &user_id.0, &body.0.password)
            .await
        {
            Ok(()) if body.0.revoke_grants == Some(true) => provider
                .accounts
                .revoke_user_grants(&auth.0, &user_id.0)
                .await
                .map(|_| ()),
            other => other,
        };
        AdminResponse::of(result.map(|_| Done { done: true }))
    }

    /// List the audit trail
    ///
    /// Who changed what, newest first; every filter given must match.
    #[oai(path = "/audit", method = "get", operation_id = "listAudit")]
    #[allow(clippy::too_many_arguments)]
    async fn list_audit(
        &self,
        provider: Data<&Arc<Provider>>,
        #[oai(scope = "AdminScopes::Admin")] _auth: AdminToken,
        /// The actor's id, or a user's or OS user's name (a client is found by id only).
        actor: Query<Option<String>>,
        /// The action, e.g. `client.create`.
        action: Query<Option<String>>,
        /// The target's id or name.
        target: Query<Option<String>>,
        /// Entries at or after this time (seconds since the epoch).
        since: Query<Option<i64>>,
        /// Entries before this time (seconds since the epoch).
        until: Query<Option<i64>>,
        /// Page size, 1-200 (default 50).
        limit: Query<Option<u32>>,
        /// The `next_cursor` of the previous page.
        cursor: Query<Option<String>>,
    ) -> AdminResponse<AuditPage> {
        let page = async {
            let limit = page_size(limit.0)?;
            let filter = crate::store::AuditFilter {
                actor: actor.0,
                action: action.0,
                target: target.0,
                since_ms: since.0.map(|s| s.saturating_mul(1000)),
                until_ms: until.0.map(|s| s.saturating_mul(1000)),
            };
            let entries = provider.audit.audit_page(&filter, cursor.0.as_deref(), limit).await?;
            let next_cursor = (entries.len() == limit)
                .then(|| entries.last().map(|e| e.id.clone()))
                .flatten();
            Ok(AuditPage {
                items: entries.into_iter().map(AuditEntry::from).collect(),
                next_cursor,
            })
        };
        AdminResponse::of(page.await)
    }

    /// List grants
    ///
    /// Grants of a user and/or a client (at least one filter), ordered by `grant_id`.
    #[oai(path = "/grants", method = "get", operation_id = "listGrants")]
    async fn list_grants(
        &self,
        provider: Data<&Arc<Provider>>,
        #[oai(scope = "AdminScopes::Admin")] _auth: AdminToken,
        user_id: Query<Option<String>>,
        client_id: Query<Option<String>>,
        /// Page size, 1-200 (default 50).
        limit: Query<Option<u32>>,
        /// The `next_cursor` of the previous page.
        cursor: Query<Option<String>>,
    ) -> AdminResponse<GrantPage> {
        if user_id.0.is_none() && client_id.0.is_none() {
            return Error::invalid_request("give user_id, client_id or both").into();
        }
        let page = async {
            let limit = page_size(limit.0)?;
            let page = provider
                .grants_page(user_id.0.as_deref(), client_id.0.as_deref(), cursor.0.as_deref(), limit)
                .await?;
            let (items, next_cursor) = map_page(page);
            Ok(GrantPage { items, next_cursor })
        };
        AdminResponse::of(page.await)
    }

    /// Revoke a grant
    ///
    /// Its refresh tokens stop working at once; introspection reports its access tokens inactive.
    #[oai(path = "/grants/:grant_id/revoke", method = "post", operation_id = "revokeGrant")]
    async fn revoke_grant(
        &self,
        provider: Data<&Arc<Provider>>,
        #[oai(scope = "AdminScopes::Admin")] auth: AdminToken,
        grant_id: Path<String>,
    ) -> AdminResponse<Grant> {
        AdminResponse::of(provider.revoke_grant(&auth.0, &grant_id.0).await.map(Grant::from))
    }

    /// List keys
    ///
    /// Every key of the keyring, retired ones included.
    #[oai(path = "/keys", method = "get", operation_id = "listKeys")]
    async fn list_keys(
        &self,
        provider: Data<&Arc<Provider>>,
        #[oai(scope = "AdminScopes::Admin")] _auth: AdminToken,
    ) -> AdminResponse<Vec<Key>> {
        let keys = provider.list_keys().await;
        AdminResponse::of(keys.map(|keys| keys.into_iter().map(Key::from).collect()))
    }

    /// Add a key
    ///
    /// Published in the JWKS at once; it signs access tokens only once promoted.
    #[oai(path = "/keys", method = "post", operation_id = "addKey")]
    async fn add_key(
        &self,
        provider: Data<&Arc<Provider>>,
        #[oai(scope = "AdminScopes::Admin")] auth: AdminToken,
        body: Json<NewKey>,
    ) -> AdminCreated<Key> {
        // RSA key generation runs on the blocking pool (see `keys`).
        let result = provider
            .change_keys(&auth.0, KeyChange::Generate(body.0.alg.into()))
            .await;
        AdminCreated::of(result.map(Key::from))
    }

    /// Promote a key
    ///
    /// It becomes the signing key; the previous one stays published.
    #[oai(path = "/keys/:kid/promote", method = "post", operation_id = "promoteKey")]
    async fn promote_key(
        &self,
        provider: Data<&Arc<Provider>>,
        #[oai(scope = "AdminScopes::Admin")] auth: AdminToken,
        kid: Path<String>,
    ) -> AdminResponse<Key> {
        AdminResponse::of(
            provider
                .change_keys(&auth.0, KeyChange::Promote(&kid.0))
                .await
                .map(Key::from),
        )
    }

    /// Retire a key
    ///
    /// It leaves the JWKS; tokens it signed stop verifying. The signing key cannot be retired.
    #[oai(path = "/keys/:kid/retire", method = "post", operation_id = "retireKey")]
    async fn retire_key(
        &self,
        provider: Data<&Arc<Provider>>,
        #[oai(scope = "AdminScopes::Admin")] auth: AdminToken,
        kid: Path<String>,
    ) -> AdminResponse<Key> {
        AdminResponse::of(
            provider
                .change_keys(&auth.0, KeyChange::Retire(&kid.0))
                .await
                .map(Key::from),
        )
    }
}
