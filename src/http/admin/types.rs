//! The admin API's request and response bodies, and their conversions from the core's records.

use std::borrow::Cow;

use poem_openapi::registry::{MetaSchema, MetaSchemaRef, Registry};
use poem_openapi::types::{ParseError, ParseFromJSON, ParseResult, ToJSON, Type};
use poem_openapi::{Enum, Object};
use serde_json::Value;

use crate::http::client_switches::{OperatorSwitches, OperatorSwitchesShown, SwitchFields};
use crate::oauth::client::catalogue::{self, GRANTS};
use crate::oauth::client::switches::SwitchValues;

use crate::keys::{Algorithm, KeyInfo, KeyStatus};
use crate::oauth::admin::Page;
use crate::oauth::client::ClientKeys;
use crate::oauth::client::NewClient;
use crate::oauth::user::ProfileChanges;
use crate::store::{ClientRecord, ClientType, GrantRecord, GrantType, TokenExchangePolicy, UserRecord};

// ---- Clients ----

/// RFC 6749 client types.
#[derive(Enum, Debug, Clone, Copy, PartialEq, Eq)]
#[oai(rename_all = "snake_case")]
pub enum ClientKind {
    Confidential,
    Public,
}

/// A grant type a client may use, named by its `grant_type`. The values are the catalogue's
/// (`oauth::client::catalogue`): the type is written out here, not derived, so that they are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GrantKind(pub GrantType);

impl Type for GrantKind {
    const IS_REQUIRED: bool = true;
    type RawValueType = Self;
    type RawElementValueType = Self;

    fn name() -> Cow<'static, str> {
        "GrantKind".into()
    }

    fn as_raw_value(&self) -> Option<&Self::RawValueType> {
        Some(self)
    }

    fn schema_ref() -> MetaSchemaRef {
        MetaSchemaRef::Reference(Self::name().into_owned())
    }

    fn register(registry: &mut Registry) {
        registry.create_schema::<Self, _>(Self::name().into_owned(), |_| MetaSchema {
            description: Some("Grant types a client may use."),
            enum_items: GRANTS.iter().map(|g| Value::String(g.wire.into())).collect(),
            ..MetaSchema::new("string")
        });
    }

    fn raw_element_iter<'a>(&'a self) -> Box<dyn Iterator<Item = &'a Self::RawElementValueType> + 'a> {
        Box::new(self.as_raw_value().into_iter())
    }
}

impl ParseFromJSON for GrantKind {
    fn parse_from_json(value: Option<Value>) -> ParseResult<Self> {
        let value = value.unwrap_or_default();
        match value.as_str().and_then(catalogue::grant_by_wire) {
            Some(grant) => Ok(GrantKind(grant.grant)),
            None => Err(ParseError::expected_type(value)),
        }
    }
}

impl ToJSON for GrantKind {
    fn to_json(&self) -> Option<Value> {
        Some(Value::String(catalogue::wire(self.0).into()))
    }
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
    fn from(grant: GrantType) -> Self {
        GrantKind(grant)
    }
}

impl From<GrantKind> for GrantType {
    fn from(grant: GrantKind) -> Self {
        grant.0
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
    /// `private_key_jwt` for a client that authenticates with its keys; absent for a client
    /// with a secret (either secret method) or a public one.
    #[oai(skip_serializing_if_is_none)]
    pub token_endpoint_auth_method: Option<String>,
    /// The client's public keys (a JWK Set), for `private_key_jwt`.
    #[oai(skip_serializing_if_is_none)]
    pub jwks: Option<serde_json::Value>,
    /// Where the client publishes its JWK Set, for `private_key_jwt`.
    #[oai(skip_serializing_if_is_none)]
    pub jwks_uri: Option<String>,
    /// The client's switches (`dpop_bound_access_tokens`, ...: `oauth::client::switches`).
    #[oai(flatten)]
    pub switches: OperatorSwitchesShown,
    /// Token exchange: the audiences exchanged tokens may be issued for.
    pub token_exchange_audiences: Vec<String>,
    /// Token exchange: subject tokens are accepted if their audience includes one of these
    /// (empty: the server's default audience).
    pub token_exchange_subject_audiences: Vec<String>,
    /// Token exchange: an `actor_token` is required.
    pub token_exchange_require_actor: bool,
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
            token_endpoint_auth_method: c.token_endpoint_auth_method,
            jwks: c.jwks,
            jwks_uri: c.jwks_uri,
            switches: SwitchFields(SwitchValues::of(&c.policy)),
            token_exchange_audiences: c.policy.token_exchange.audiences,
            token_exchange_subject_audiences: c.policy.token_exchange.subject_audiences,
            token_exchange_require_actor: c.policy.token_exchange.require_actor,
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
    /// The client's public keys (a JWK Set): it then authenticates with `private_key_jwt`
    /// (RFC 7523) and has no secret. Confidential clients only; not with `jwks_uri`.
    #[oai(skip_serializing_if_is_none)]
    pub jwks: Option<serde_json::Value>,
    /// The https URL where the client publishes its JWK Set, for `private_key_jwt`.
    #[oai(skip_serializing_if_is_none, validator(max_length = 2048))]
    pub jwks_uri: Option<String>,
    /// The client's switches (`dpop_bound_access_tokens`, ...: `oauth::client::switches`).
    #[oai(flatten)]
    pub switches: OperatorSwitches,
    /// With the token exchange grant (required then): the audiences (`audience` or
    /// `resource`) the client may ask exchanged tokens for.
    #[oai(skip_serializing_if_is_none, validator(max_items = 20, max_length = 255))]
    pub token_exchange_audiences: Option<Vec<String>>,
    /// With the token exchange grant: subject tokens are accepted only if their audience
    /// includes one of these (default: the server's default audience).
    #[oai(skip_serializing_if_is_none, validator(max_items = 20, max_length = 255))]
    pub token_exchange_subject_audiences: Option<Vec<String>>,
    /// With the token exchange grant: an `actor_token` is required (default false).
    #[oai(skip_serializing_if_is_none)]
    pub token_exchange_require_actor: Option<bool>,
}

impl ClientSettings {
    pub(super) fn into_new_client(self) -> Result<NewClient, crate::oauth::Error> {
        let keys = match (self.jwks, self.jwks_uri) {
            (Some(_), Some(_)) => return Err(crate::oauth::Error::invalid_request("give jwks or jwks_uri, not both")),
            (Some(jwks), None) => Some(ClientKeys::Jwks(jwks)),
            (None, Some(uri)) => Some(ClientKeys::JwksUri(uri)),
            (None, None) => None,
        };
        let admin = self.admin.unwrap_or(false);
        Ok(NewClient {
            name: self.name,
            client_type: match self.client_type {
                ClientKind::Confidential => ClientType::Confidential,
                ClientKind::Public => ClientType::Public,
            },
            grant_types: self.grant_types.into_iter().map(GrantType::from).collect(),
            redirect_uris: self.redirect_uris.unwrap_or_default(),
            scope: self
                .scope
                .unwrap_or_else(|| crate::oauth::client::default_scope(admin).into()),
            resources: self.resources.unwrap_or_default(),
            access_token_ttl: self.access_token_ttl,
            refresh_token_ttl: self.refresh_token_ttl,
            skip_consent: self.skip_consent.unwrap_or(false),
            owner_user_id: None,
            post_logout_redirect_uris: self.post_logout_redirect_uris.unwrap_or_default(),
            id_token_signed_response_alg: self.id_token_signed_response_alg.map(Algorithm::from),
            admin,
            keys,
            policy: self.switches.0.with(TokenExchangePolicy {
                audiences: self.token_exchange_audiences.unwrap_or_default(),
                subject_audiences: self.token_exchange_subject_audiences.unwrap_or_default(),
                require_actor: self.token_exchange_require_actor.unwrap_or(false),
            }),
        })
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
    /// Holds the operator role (may use the operator's console).
    pub operator: bool,
    /// Disabled by an operator: cannot log in.
    pub disabled: bool,
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
            operator: u.operator,
            disabled: u.disabled,
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
    /// Give or take away the operator role (the operator's console).
    #[oai(skip_serializing_if_is_none)]
    pub operator: Option<bool>,
    /// Disable the account (it cannot log in; its sessions end and every grant it gave is
    /// revoked at once) or enable it again.
    #[oai(skip_serializing_if_is_none)]
    pub disabled: Option<bool>,
}

impl UserChanges {
    pub(super) fn profile_changes(&self) -> ProfileChanges {
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

/// One of a user's sign-in factors, without its secret.
#[derive(Object, Debug)]
pub struct Factor {
    /// `totp` (their authenticator app), `recovery` (their recovery codes), or a passkey's id.
    pub factor_id: String,
    /// `totp`, `recovery_codes` or `passkey`.
    pub kind: String,
    pub name: String,
    /// When it was added (Unix seconds).
    pub created_at: i64,
    /// When it was last used to sign in (Unix seconds).
    #[oai(skip_serializing_if_is_none)]
    pub last_used_at: Option<i64>,
    /// Recovery codes: how many are left unused.
    #[oai(skip_serializing_if_is_none)]
    pub remaining: Option<u32>,
}

impl From<crate::oauth::factor::FactorSummary> for Factor {
    fn from(factor: crate::oauth::factor::FactorSummary) -> Factor {
        Factor {
            factor_id: factor.id,
            kind: factor.kind.to_string(),
            name: factor.name,
            created_at: factor.created_at,
            last_used_at: factor.last_used_at,
            remaining: factor.remaining.map(|n| n as u32),
        }
    }
}

/// A user's sign-in factors.
#[derive(Object, Debug)]
pub struct FactorList {
    pub factors: Vec<Factor>,
}

/// An operation with nothing to return.
#[derive(Object, Debug)]
pub struct Done {
    /// Always true.
    pub done: bool,
}

pub(super) fn map_page<T, U: From<T>>(page: Page<T>) -> (Vec<U>, Option<String>) {
    (page.items.into_iter().map(U::from).collect(), page.next_cursor)
}

// ---- Audit ----

/// Who did something the audit trail records.
#[derive(Object, Debug)]
pub struct AuditActorBody {
    /// `user`, `client`, `cli`, `anonymous` or `system`.
    pub kind: String,
    pub id: String,
    pub name: String,
}

/// One entry of the audit trail.
#[derive(Object, Debug)]
pub struct AuditEntry {
    pub id: String,
    /// Milliseconds since the epoch.
    pub at_ms: i64,
    pub actor: AuditActorBody,
    #[oai(skip_serializing_if_is_none)]
    pub address: Option<String>,
    /// `area.verb`, e.g. `client.create`.
    pub action: String,
    #[oai(skip_serializing_if_is_none)]
    pub target_kind: Option<String>,
    #[oai(skip_serializing_if_is_none)]
    pub target_id: Option<String>,
    #[oai(skip_serializing_if_is_none)]
    pub target_name: Option<String>,
    pub outcome: String,
}

impl From<crate::store::AuditRecord> for AuditEntry {
    fn from(e: crate::store::AuditRecord) -> Self {
        AuditEntry {
            id: e.id,
            at_ms: e.at_ms,
            actor: AuditActorBody {
                kind: e.actor.kind,
                id: e.actor.id,
                name: e.actor.name,
            },
            address: e.address,
            action: e.action,
            target_kind: e.target_kind,
            target_id: e.target_id,
            target_name: e.target_name,
            outcome: e.outcome,
        }
    }
}

/// One page of the audit trail, newest first.
#[derive(Object, Debug)]
pub struct AuditPage {
    pub items: Vec<AuditEntry>,
    /// Pass as `cursor` for the next (older) page; absent on the last page.
    #[oai(skip_serializing_if_is_none)]
    pub next_cursor: Option<String>,
}
