//! The administration API under `/api/v1/`: clients, users, grants and keys, for programs.
//! Every operation needs an access token with the `tessera:admin` scope, which only admin
//! clients (`tessera app create --admin`) get, through client_credentials. Errors are RFC 9457
//! problem details with a stable `code`. The operations are the ones the CLI and the pages
//! use (`Provider::register_client`, `update_profile`, `change_keys`, ...).

use std::sync::Arc;

use poem::web::Data;
use poem::{IntoResponse, Request};
use poem_openapi::auth::Bearer;
use poem_openapi::param::{Path, Query};
use poem_openapi::payload::{Json, Payload};
use poem_openapi::registry::{MetaSchemaRef, Registry};
use poem_openapi::types::{ToJSON, Type};
use poem_openapi::{ApiResponse, Enum, OAuthScopes, Object, OpenApi, SecurityScheme};

use super::Tag;
use crate::keys::{Algorithm, KeyInfo, KeyStatus};
use crate::oauth::admin::{not_found, page_size, AdminCaller, KeyChange, Page};
use crate::oauth::client::NewClient;
use crate::oauth::user::{ProfileChanges, ProfileEdit};
use crate::oauth::{Error, ErrorCode, Provider};
use crate::store::{ClientRecord, ClientType, GrantRecord, GrantType, UserRecord};

// ---- Problem details (RFC 9457) ----

/// An error, as RFC 9457 problem details.
#[derive(Object, Debug, Clone)]
pub struct Problem {
    /// A URI naming the kind of problem: `urn:tessera:problem:` + `code`.
    #[oai(rename = "type")]
    pub type_: String,
    /// A short summary of the kind of problem.
    pub title: String,
    /// The HTTP status code.
    pub status: u16,
    /// What went wrong with this request.
    pub detail: String,
    /// A stable machine-readable code: `invalid_request`, `invalid_scope`, `invalid_token`,
    /// `insufficient_scope`, `not_found`, `conflict` or `server_error`.
    pub code: String,
}

/// A [`Problem`] sent as `application/problem+json`.
#[derive(Debug)]
pub struct ProblemJson(pub Problem, ErrorCode);

impl Payload for ProblemJson {
    const CONTENT_TYPE: &'static str = "application/problem+json";

    fn schema_ref() -> MetaSchemaRef {
        Problem::schema_ref()
    }

    fn register(registry: &mut Registry) {
        Problem::register(registry);
    }
}

impl IntoResponse for ProblemJson {
    fn into_response(self) -> poem::Response {
        let mut response = poem::Response::builder()
            .status(poem::http::StatusCode::from_u16(self.0.status).unwrap_or_default())
            .content_type(Self::CONTENT_TYPE)
            .header(poem::http::header::CACHE_CONTROL, "no-store")
            .body(self.0.to_json_string());
        response
            .extensions_mut()
            .insert(super::error::ErrorCodeTag(self.1.as_str()));
        response
    }
}

fn status_of(code: ErrorCode) -> u16 {
    match code {
        ErrorCode::InvalidToken => 401,
        ErrorCode::InsufficientScope => 403,
        ErrorCode::NotFound => 404,
        ErrorCode::Conflict => 409,
        ErrorCode::ServerError => 500,
        _ => 400,
    }
}

impl ProblemJson {
    /// The problem of an error with this code, sent with this status.
    pub fn new(code: ErrorCode, status: u16, detail: impl Into<String>) -> ProblemJson {
        let title = poem::http::StatusCode::from_u16(status)
            .ok()
            .and_then(|s| s.canonical_reason())
            .unwrap_or("Error");
        ProblemJson(
            Problem {
                type_: format!("urn:tessera:problem:{}", code.as_str()),
                title: title.into(),
                status,
                detail: detail.into(),
                code: code.as_str().into(),
            },
            code,
        )
    }
}

fn problem(err: &Error) -> ProblemJson {
    if let Some(cause) = &err.cause {
        tracing::error!(error = %err, cause = %cause, "admin request failed");
    }
    ProblemJson::new(err.code, status_of(err.code), err.description.clone())
}

/// The `WWW-Authenticate` challenge of a 401 or 403 (RFC 6750 §3).
fn challenge(err: &Error) -> String {
    format!(
        "Bearer realm=\"tessera\", error=\"{}\", error_description=\"{}\", scope=\"tessera:admin\"",
        err.code.as_str(),
        err.description.replace(['"', '\\'], "'")
    )
}

/// Every outcome of an admin operation that answers with a body.
#[derive(ApiResponse, Debug)]
#[oai(bad_request_handler = "bad_request")]
pub enum AdminResponse<T: ToJSON + Send + Sync> {
    /// Success. Never cached: bodies may carry secrets.
    #[oai(status = 200)]
    Ok(Json<T>, #[oai(header = "Cache-Control")] String),
    /// The request is malformed or breaks a rule (`invalid_request`, `invalid_scope`).
    #[oai(status = 400)]
    BadRequest(ProblemJson),
    /// No valid admin token (`invalid_token`).
    #[oai(status = 401)]
    Unauthorized(ProblemJson, #[oai(header = "WWW-Authenticate")] String),
    /// The token lacks the `tessera:admin` scope (`insufficient_scope`).
    #[oai(status = 403)]
    Forbidden(ProblemJson, #[oai(header = "WWW-Authenticate")] String),
    /// No such record (`not_found`).
    #[oai(status = 404)]
    NotFound(ProblemJson),
    /// The record clashes with an existing one (`conflict`).
    #[oai(status = 409)]
    Conflict(ProblemJson),
    /// The server failed (`server_error`).
    #[oai(status = 500)]
    ServerError(ProblemJson),
}

impl<T: ToJSON + Send + Sync> From<Error> for AdminResponse<T> {
    fn from(err: Error) -> Self {
        let body = problem(&err);
        match err.code {
            ErrorCode::InvalidToken => AdminResponse::Unauthorized(body, challenge(&err)),
            ErrorCode::InsufficientScope => AdminResponse::Forbidden(body, challenge(&err)),
            ErrorCode::NotFound => AdminResponse::NotFound(body),
            ErrorCode::Conflict => AdminResponse::Conflict(body),
            ErrorCode::ServerError => AdminResponse::ServerError(body),
            _ => AdminResponse::BadRequest(body),
        }
    }
}

impl<T: ToJSON + Send + Sync> AdminResponse<T> {
    fn of(result: Result<T, Error>) -> Self {
        match result {
            Ok(value) => AdminResponse::Ok(Json(value), NO_STORE.into()),
            Err(e) => e.into(),
        }
    }
}

/// Every outcome of an admin operation that creates a record: the same errors as
/// [`AdminResponse`], and 201 on success.
#[derive(ApiResponse, Debug)]
#[oai(bad_request_handler = "bad_request_created")]
pub enum AdminCreated<T: ToJSON + Send + Sync> {
    /// Created. Never cached: the body may carry the client secret.
    #[oai(status = 201)]
    Created(Json<T>, #[oai(header = "Cache-Control")] String),
    /// The request is malformed or breaks a rule (`invalid_request`, `invalid_scope`).
    #[oai(status = 400)]
    BadRequest(ProblemJson),
    /// No valid admin token (`invalid_token`).
    #[oai(status = 401)]
    Unauthorized(ProblemJson, #[oai(header = "WWW-Authenticate")] String),
    /// The token lacks the `tessera:admin` scope (`insufficient_scope`).
    #[oai(status = 403)]
    Forbidden(ProblemJson, #[oai(header = "WWW-Authenticate")] String),
    /// The record clashes with an existing one (`conflict`).
    #[oai(status = 409)]
    Conflict(ProblemJson),
    /// The server failed (`server_error`).
    #[oai(status = 500)]
    ServerError(ProblemJson),
}

impl<T: ToJSON + Send + Sync> AdminCreated<T> {
    fn of(result: Result<T, Error>) -> Self {
        let err = match result {
            Ok(value) => return AdminCreated::Created(Json(value), NO_STORE.into()),
            Err(e) => e,
        };
        // The same mapping as AdminResponse's (a create has no 404).
        match AdminResponse::<T>::from(err) {
            AdminResponse::Unauthorized(body, challenge) => AdminCreated::Unauthorized(body, challenge),
            AdminResponse::Forbidden(body, challenge) => AdminCreated::Forbidden(body, challenge),
            AdminResponse::Conflict(body) => AdminCreated::Conflict(body),
            AdminResponse::ServerError(body) => AdminCreated::ServerError(body),
            AdminResponse::BadRequest(body) | AdminResponse::NotFound(body) => AdminCreated::BadRequest(body),
            AdminResponse::Ok(value, cache) => AdminCreated::Created(value, cache),
        }
    }
}

fn bad_request_created<T: ToJSON + Send + Sync>(err: poem::Error) -> AdminCreated<T> {
    AdminCreated::of(Err(request_error(err)))
}

/// Requests poem-openapi turns away before an operation runs: a failed token check, no
/// token at all, or a body or parameter that does not parse.
fn request_error(err: poem::Error) -> Error {
    if let Some(AdminAuthError(code, description)) = err.downcast_ref::<AdminAuthError>() {
        return Error::new(*code, description.clone());
    }
    if err.is::<poem_openapi::error::AuthorizationError>() {
        return Error::new(ErrorCode::InvalidToken, "an admin access token is required");
    }
    Error::invalid_request(format!("the request could not be parsed: {err}"))
}

fn bad_request<T: ToJSON + Send + Sync>(err: poem::Error) -> AdminResponse<T> {
    request_error(err).into()
}

/// Why the admin token check failed (`invalid_token` or `insufficient_scope`).
#[derive(Debug, thiserror::Error)]
#[error("{1}")]
struct AdminAuthError(ErrorCode, String);

impl poem::error::ResponseError for AdminAuthError {
    fn status(&self) -> poem::http::StatusCode {
        poem::http::StatusCode::from_u16(status_of(self.0)).unwrap_or_default()
    }
}

const NO_STORE: &str = "no-store";

// ---- Authorization ----

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
pub struct AdminToken(pub AdminCaller);

async fn check_admin_token(req: &Request, bearer: Bearer) -> poem::Result<AdminCaller> {
    let Some(provider) = req.data::<Arc<Provider>>() else {
        return Err(poem::Error::from_status(poem::http::StatusCode::INTERNAL_SERVER_ERROR));
    };
    let caller = provider
        .authorize_admin(&bearer.token)
        .await
        .map_err(|e| AdminAuthError(e.code, e.description))?;
    // An audit line per admin call: who, and what (the request line is logged anyway).
    tracing::info!(admin_client = %caller.client_id, method = %req.method(), path = %req.uri().path(), "admin request");
    Ok(caller)
}

// ---- Clients ----

/// RFC 6749 client types.
#[derive(Enum, Debug, Clone, Copy, PartialEq, Eq)]
#[oai(rename_all = "snake_case")]
pub enum ClientKind {
    Confidential,
    Public,
}

/// Grant types a client may use.
#[derive(Enum, Debug, Clone, Copy, PartialEq, Eq)]
#[oai(rename_all = "snake_case")]
pub enum GrantKind {
    AuthorizationCode,
    ClientCredentials,
    RefreshToken,
}

/// JWS algorithms of Tessera's keys.
#[derive(Enum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum Alg {
    RS256,
    ES256,
    EdDSA,
}

impl From<Alg> for Algorithm {
    fn from(alg: Alg) -> Self {
        match alg {
            Alg::RS256 => Algorithm::RS256,
            Alg::ES256 => Algorithm::ES256,
            Alg::EdDSA => Algorithm::EdDSA,
        }
    }
}

impl From<Algorithm> for Alg {
    fn from(alg: Algorithm) -> Self {
        match alg {
            Algorithm::RS256 => Alg::RS256,
            Algorithm::ES256 => Alg::ES256,
            Algorithm::EdDSA => Alg::EdDSA,
        }
    }
}

impl From<GrantType> for GrantKind {
    fn from(g: GrantType) -> Self {
        match g {
            GrantType::AuthorizationCode => GrantKind::AuthorizationCode,
            GrantType::ClientCredentials => GrantKind::ClientCredentials,
            GrantType::RefreshToken => GrantKind::RefreshToken,
        }
    }
}

impl From<GrantKind> for GrantType {
    fn from(g: GrantKind) -> Self {
        match g {
            GrantKind::AuthorizationCode => GrantType::AuthorizationCode,
            GrantKind::ClientCredentials => GrantType::ClientCredentials,
            GrantKind::RefreshToken => GrantType::RefreshToken,
        }
    }
}

/// A registered client.
#[derive(Object, Debug)]
pub struct Client {
    pub client_id: String,
    pub name: String,
    pub client_type: ClientKind,
    pub grant_types: Vec<GrantKind>,
    pub redirect_uris: Vec<String>,
    pub post_logout_redirect_uris: Vec<String>,
    /// Space-separated scopes the client may be granted.
    pub scope: String,
    /// RFC 8707 resources (token audiences) it may ask for.
    pub resources: Vec<String>,
    #[oai(skip_serializing_if_is_none)]
    pub access_token_ttl: Option<u64>,
    #[oai(skip_serializing_if_is_none)]
    pub refresh_token_ttl: Option<u64>,
    /// A first-party app: users are not asked for consent.
    pub skip_consent: bool,
    /// An admin client (may get `tessera:admin`).
    pub admin: bool,
    pub id_token_signed_response_alg: Alg,
    /// Seconds since the epoch.
    pub created_at: i64,
}

impl From<ClientRecord> for Client {
    fn from(c: ClientRecord) -> Self {
        Client {
            client_id: c.client_id,
            name: c.name,
            client_type: match c.client_type {
                ClientType::Confidential => ClientKind::Confidential,
                ClientType::Public => ClientKind::Public,
            },
            grant_types: c.grant_types.into_iter().map(GrantKind::from).collect(),
            redirect_uris: c.redirect_uris,
            post_logout_redirect_uris: c.post_logout_redirect_uris,
            scope: c.scopes.join(" "),
            resources: c.resources,
            access_token_ttl: c.access_token_ttl,
            refresh_token_ttl: c.refresh_token_ttl,
            skip_consent: c.skip_consent,
            admin: c.admin,
            id_token_signed_response_alg: c.id_token_signed_response_alg.unwrap_or(Algorithm::RS256).into(),
            created_at: c.created_at,
        }
    }
}

/// A client's settings, to register one or to replace an existing one's. `client_type` is
/// fixed at registration; an update must repeat it.
#[derive(Object, Debug)]
pub struct ClientSettings {
    #[oai(validator(min_length = 1, max_length = 200))]
    pub name: String,
    pub client_type: ClientKind,
    pub grant_types: Vec<GrantKind>,
    /// Compared exactly at the authorization endpoint (default none).
    #[oai(skip_serializing_if_is_none, validator(max_items = 50, max_length = 2048))]
    pub redirect_uris: Option<Vec<String>>,
    /// Where RP-initiated logout may return to (default none).
    #[oai(skip_serializing_if_is_none, validator(max_items = 50, max_length = 2048))]
    pub post_logout_redirect_uris: Option<Vec<String>>,
    /// Space-separated; default `openid profile email read write` (`tessera:admin` for admin clients).
    #[oai(skip_serializing_if_is_none)]
    pub scope: Option<String>,
    /// RFC 8707 resources the client may ask for as token audience (default none).
    #[oai(skip_serializing_if_is_none, validator(max_items = 50, max_length = 2048))]
    pub resources: Option<Vec<String>>,
    #[oai(skip_serializing_if_is_none)]
    pub access_token_ttl: Option<u64>,
    #[oai(skip_serializing_if_is_none)]
    pub refresh_token_ttl: Option<u64>,
    /// A first-party app whose users are not asked for consent (default false).
    #[oai(skip_serializing_if_is_none)]
    pub skip_consent: Option<bool>,
    /// An admin client: confidential, client_credentials, `tessera:admin` (default false).
    #[oai(skip_serializing_if_is_none)]
    pub admin: Option<bool>,
    #[oai(skip_serializing_if_is_none)]
    pub id_token_signed_response_alg: Option<Alg>,
}

impl ClientSettings {
    fn into_new_client(self) -> NewClient {
        let admin = self.admin.unwrap_or(false);
        let default_scope = if admin {
            crate::oauth::scope::ADMIN_SCOPE
        } else {
            "openid profile email read write"
        };
        NewClient {
            name: self.name,
            client_type: match self.client_type {
                ClientKind::Confidential => ClientType::Confidential,
                ClientKind::Public => ClientType::Public,
            },
            grant_types: self.grant_types.into_iter().map(GrantType::from).collect(),
            redirect_uris: self.redirect_uris.unwrap_or_default(),
            scope: self.scope.unwrap_or_else(|| default_scope.into()),
            resources: self.resources.unwrap_or_default(),
            access_token_ttl: self.access_token_ttl,
            refresh_token_ttl: self.refresh_token_ttl,
            skip_consent: self.skip_consent.unwrap_or(false),
            owner_user_id: None,
            post_logout_redirect_uris: self.post_logout_redirect_uris.unwrap_or_default(),
            id_token_signed_response_alg: self.id_token_signed_response_alg.map(Algorithm::from),
            admin,
        }
    }
}

/// A client and, for a confidential one just registered or rotated, its secret: shown only
/// in this response, never again.
#[derive(Object, Debug)]
pub struct ClientWithSecret {
    pub client: Client,
    #[oai(skip_serializing_if_is_none)]
    pub client_secret: Option<String>,
}

/// One page of clients, ordered by `client_id`.
#[derive(Object, Debug)]
pub struct ClientPage {
    pub items: Vec<Client>,
    /// Pass as `cursor` for the next page; absent on the last page.
    #[oai(skip_serializing_if_is_none)]
    pub next_cursor: Option<String>,
}

// ---- Users ----

/// A user and their profile claims.
#[derive(Object, Debug)]
pub struct User {
    pub user_id: String,
    pub username: String,
    #[oai(skip_serializing_if_is_none)]
    pub email: Option<String>,
    pub email_verified: bool,
    #[oai(skip_serializing_if_is_none)]
    pub name: Option<String>,
    #[oai(skip_serializing_if_is_none)]
    pub given_name: Option<String>,
    #[oai(skip_serializing_if_is_none)]
    pub family_name: Option<String>,
    #[oai(skip_serializing_if_is_none)]
    pub nickname: Option<String>,
    #[oai(skip_serializing_if_is_none)]
    pub picture: Option<String>,
    #[oai(skip_serializing_if_is_none)]
    pub website: Option<String>,
    #[oai(skip_serializing_if_is_none)]
    pub locale: Option<String>,
    #[oai(skip_serializing_if_is_none)]
    pub zoneinfo: Option<String>,
    pub created_at: i64,
    /// When the profile last changed (0: never).
    pub updated_at: i64,
}

impl From<UserRecord> for User {
    fn from(u: UserRecord) -> Self {
        let p = u.profile;
        User {
            user_id: u.user_id,
            username: u.username,
            email: u.email,
            email_verified: u.email_verified,
            name: p.name,
            given_name: p.given_name,
            family_name: p.family_name,
            nickname: p.nickname,
            picture: p.picture,
            website: p.website,
            locale: p.locale,
            zoneinfo: p.zoneinfo,
            created_at: u.created_at,
            updated_at: u.updated_at,
        }
    }
}

/// Profile fields to change: an absent field stays as it is, an empty string clears it.
#[derive(Object, Debug, Default)]
pub struct UserChanges {
    #[oai(skip_serializing_if_is_none)]
    pub email: Option<String>,
    /// Whether the email is verified; a changed email is unverified unless this says so.
    #[oai(skip_serializing_if_is_none)]
    pub email_verified: Option<bool>,
    #[oai(skip_serializing_if_is_none)]
    pub name: Option<String>,
    #[oai(skip_serializing_if_is_none)]
    pub given_name: Option<String>,
    #[oai(skip_serializing_if_is_none)]
    pub family_name: Option<String>,
    #[oai(skip_serializing_if_is_none)]
    pub nickname: Option<String>,
    #[oai(skip_serializing_if_is_none)]
    pub picture: Option<String>,
    #[oai(skip_serializing_if_is_none)]
    pub website: Option<String>,
    #[oai(skip_serializing_if_is_none)]
    pub locale: Option<String>,
    #[oai(skip_serializing_if_is_none)]
    pub zoneinfo: Option<String>,
}

impl UserChanges {
    fn profile_changes(&self) -> ProfileChanges {
        ProfileChanges {
            name: self.name.clone(),
            given_name: self.given_name.clone(),
            family_name: self.family_name.clone(),
            nickname: self.nickname.clone(),
            email: self.email.clone(),
            picture: self.picture.clone(),
            website: self.website.clone(),
            locale: self.locale.clone(),
            zoneinfo: self.zoneinfo.clone(),
        }
    }
}

/// A new user.
#[derive(Object, Debug)]
pub struct NewUser {
    /// 1-64 letters, digits, `.`, `_`, `-` or `@`.
    pub username: String,
    /// At least 8 characters; stored only as an Argon2id hash.
    #[oai(write_only)]
    pub password: String,
    #[oai(flatten)]
    pub profile: UserChanges,
}

/// A new password. Every session the user has ends; with `revoke_grants`, every grant they
/// gave is revoked too.
#[derive(Object, Debug)]
pub struct Password {
    #[oai(write_only)]
    pub password: String,
    /// Also revoke every grant the user gave (default false).
    pub revoke_grants: Option<bool>,
}

/// One page of users, ordered by `user_id`.
#[derive(Object, Debug)]
pub struct UserPage {
    pub items: Vec<User>,
    #[oai(skip_serializing_if_is_none)]
    pub next_cursor: Option<String>,
}

// ---- Grants ----

/// One authorization a user gave a client; its refresh tokens live and die with it.
#[derive(Object, Debug)]
pub struct Grant {
    pub grant_id: String,
    pub client_id: String,
    pub user_id: String,
    pub scope: String,
    pub audience: String,
    pub auth_time: i64,
    pub created_at: i64,
    pub revoked: bool,
}

impl From<GrantRecord> for Grant {
    fn from(g: GrantRecord) -> Self {
        Grant {
            grant_id: g.grant_id,
            client_id: g.client_id,
            user_id: g.user_id,
            scope: g.scope,
            audience: g.audience,
            auth_time: g.auth_time,
            created_at: g.created_at,
            revoked: g.revoked,
        }
    }
}

/// One page of grants, ordered by `grant_id`.
#[derive(Object, Debug)]
pub struct GrantPage {
    pub items: Vec<Grant>,
    #[oai(skip_serializing_if_is_none)]
    pub next_cursor: Option<String>,
}

// ---- Keys ----

/// Where a key is in its life.
#[derive(Enum, Debug, Clone, Copy, PartialEq, Eq)]
#[oai(rename_all = "snake_case")]
pub enum KeyState {
    /// Signs new access tokens.
    Signing,
    /// In the JWKS, not signing access tokens.
    Published,
    /// Out of the JWKS.
    Retired,
}

/// A key of the keyring.
#[derive(Object, Debug)]
pub struct Key {
    /// The RFC 7638 thumbprint, as in the JWKS.
    pub kid: String,
    pub alg: Alg,
    pub status: KeyState,
    pub created_at: i64,
}

impl From<KeyInfo> for Key {
    fn from(k: KeyInfo) -> Self {
        Key {
            kid: k.kid,
            alg: k.alg.into(),
            status: match k.status {
                KeyStatus::Signing => KeyState::Signing,
                KeyStatus::Published => KeyState::Published,
                KeyStatus::Retired => KeyState::Retired,
            },
            created_at: k.created_at,
        }
    }
}

/// A key to add.
#[derive(Object, Debug)]
pub struct NewKey {
    pub alg: Alg,
}

/// An operation with nothing to return.
#[derive(Object, Debug)]
pub struct Done {
    /// Always true.
    pub done: bool,
}

fn map_page<T, U: From<T>>(page: Page<T>) -> (Vec<U>, Option<String>) {
    (page.items.into_iter().map(U::from).collect(), page.next_cursor)
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
        #[oai(scope = "AdminScopes::Admin")] _auth: AdminToken,
        body: Json<ClientSettings>,
    ) -> AdminCreated<ClientWithSecret> {
        AdminCreated::of(
            provider
                .register_client(body.0.into_new_client())
                .await
                .map(|(client, client_secret)| ClientWithSecret {
                    client: client.into(),
                    client_secret,
                }),
        )
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
        #[oai(scope = "AdminScopes::Admin")] _auth: AdminToken,
        client_id: Path<String>,
        body: Json<ClientSettings>,
    ) -> AdminResponse<Client> {
        AdminResponse::of(
            provider
                .update_client(&client_id.0, body.0.into_new_client())
                .await
                .map(Client::from),
        )
    }

    /// Delete a client
    ///
    /// Every grant it holds is revoked first.
    #[oai(path = "/clients/:client_id", method = "delete", operation_id = "deleteClient")]
    async fn delete_client(
        &self,
        provider: Data<&Arc<Provider>>,
        #[oai(scope = "AdminScopes::Admin")] _auth: AdminToken,
        client_id: Path<String>,
    ) -> AdminResponse<Done> {
        AdminResponse::of(match provider.delete_client(&client_id.0).await {
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
        #[oai(scope = "AdminScopes::Admin")] _auth: AdminToken,
        client_id: Path<String>,
    ) -> AdminResponse<ClientWithSecret> {
        let result = async {
            let secret = provider.rotate_client_secret(&client_id.0).await?;
            let client = provider
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
        #[oai(scope = "AdminScopes::Admin")] _auth: AdminToken,
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
        let result = provider.create_user_with_profile(&username, &password, edit).await;
        AdminCreated::of(result.map(User::from))
    }

    /// Get a user
    #[oai(path = "/users/:user_id", method = "get", operation_id = "getUser")]
    async fn get_user(
        &self,
        provider: Data<&Arc<Provider>>,
        #[oai(scope = "AdminScopes::Admin")] _auth: AdminToken,
        user_id: Path<String>,
    ) -> AdminResponse<User> {
        let user = provider.find_user(&user_id.0).await;
        AdminResponse::of(user.and_then(|u| u.map(User::from).ok_or_else(|| not_found("user"))))
    }

    /// Change a user's profile
    ///
    /// Only the fields sent change; an empty string clears one.
    #[oai(path = "/users/:user_id", method = "patch", operation_id = "updateUser")]
    async fn update_user(
        &self,
        provider: Data<&Arc<Provider>>,
        #[oai(scope = "AdminScopes::Admin")] _auth: AdminToken,
        user_id: Path<String>,
        body: Json<UserChanges>,
    ) -> AdminResponse<User> {
        let result = async {
            let user = provider.find_user(&user_id.0).await?.ok_or_else(|| not_found("user"))?;
            let mut edit = ProfileEdit::of(&user);
            body.0.profile_changes().apply(&mut edit);
            edit.email_verified = body.0.email_verified;
            provider.update_profile(&user.user_id, edit).await
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
        #[oai(scope = "AdminScopes::Admin")] _auth: AdminToken,
        user_id: Path<String>,
    ) -> AdminResponse<Done> {
        AdminResponse::of(match provider.delete_user(&user_id.0).await {
            Ok(true) => Ok(Done { done: true }),
            Ok(false) => Err(not_found("user")),
            Err(e) => Err(e),
        })
    }

    /// Set a user's password
    #[oai(path = "/users/:user_id/password", method = "put", operation_id = "setUserPassword")]
    async fn set_user_password(
        &self,
        provider: Data<&Arc<Provider>>,
        #[oai(scope = "AdminScopes::Admin")] _auth: AdminToken,
        user_id: Path<String>,
        body: Json<Password>,
    ) -> AdminResponse<Done> {
        let result = match provider.set_password(&user_id.0, &body.0.password).await {
            Ok(()) if body.0.revoke_grants == Some(true) => provider.revoke_user_grants(&user_id.0).await.map(|_| ()),
            other => other,
        };
        AdminResponse::of(result.map(|_| Done { done: true }))
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
        #[oai(scope = "AdminScopes::Admin")] _auth: AdminToken,
        grant_id: Path<String>,
    ) -> AdminResponse<Grant> {
        AdminResponse::of(provider.revoke_grant(&grant_id.0).await.map(Grant::from))
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
        AdminResponse::of(
            provider
                .list_keys()
                .map(|keys| keys.into_iter().map(Key::from).collect()),
        )
    }

    /// Add a key
    ///
    /// Published in the JWKS at once; it signs access tokens only once promoted.
    #[oai(path = "/keys", method = "post", operation_id = "addKey")]
    async fn add_key(
        &self,
        provider: Data<&Arc<Provider>>,
        #[oai(scope = "AdminScopes::Admin")] _auth: AdminToken,
        body: Json<NewKey>,
    ) -> AdminCreated<Key> {
        let worker = provider.0.clone();
        // RSA key generation takes a while: off the async workers.
        let result = tokio::task::spawn_blocking(move || worker.change_keys(KeyChange::Generate(body.0.alg.into())))
            .await
            .unwrap_or_else(|e| Err(Error::server_error(e)));
        AdminCreated::of(result.map(Key::from))
    }

    /// Promote a key
    ///
    /// It becomes the signing key; the previous one stays published.
    #[oai(path = "/keys/:kid/promote", method = "post", operation_id = "promoteKey")]
    async fn promote_key(
        &self,
        provider: Data<&Arc<Provider>>,
        #[oai(scope = "AdminScopes::Admin")] _auth: AdminToken,
        kid: Path<String>,
    ) -> AdminResponse<Key> {
        AdminResponse::of(provider.change_keys(KeyChange::Promote(&kid.0)).map(Key::from))
    }

    /// Retire a key
    ///
    /// It leaves the JWKS; tokens it signed stop verifying. The signing key cannot be retired.
    #[oai(path = "/keys/:kid/retire", method = "post", operation_id = "retireKey")]
    async fn retire_key(
        &self,
        provider: Data<&Arc<Provider>>,
        #[oai(scope = "AdminScopes::Admin")] _auth: AdminToken,
        kid: Path<String>,
    ) -> AdminResponse<Key> {
        AdminResponse::of(provider.change_keys(KeyChange::Retire(&kid.0)).map(Key::from))
    }
}
