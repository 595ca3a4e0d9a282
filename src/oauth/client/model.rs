//! The client model: the settings every surface fills ([`NewClient`]: the CLI, the admin API,
//! the applications pages, the console, dynamic registration, Client ID Metadata Documents),
//! the rules those settings obey (lengths, URIs, token exchange), and who made a client.

use super::keys::ClientKeys;
use super::uri::is_document_url;
use crate::oauth::Error;
use crate::store::{ClientPolicy, ClientRecord, ClientType, GrantType};

/// What an operator asks for when registering a client.
#[derive(Debug, Clone)]
pub struct NewClient {
    pub name: String,
    pub client_type: ClientType,
    pub grant_types: Vec<GrantType>,
    pub redirect_uris: Vec<String>,
    pub scope: String,
    pub resources: Vec<String>,
    pub access_token_ttl: Option<u64>,
    pub refresh_token_ttl: Option<u64>,
    /// A first-party app whose users are not asked for consent.
    pub skip_consent: bool,
    /// The user registering it from the applications pages.
    pub owner_user_id: Option<String>,
    /// Where RP-initiated logout may return to (same rules as redirect URIs).
    pub post_logout_redirect_uris: Vec<String>,
    /// The ID token algorithm; `None` is RS256.
    pub id_token_signed_response_alg: Option<crate::keys::Algorithm>,
    /// An administration client (`tessera app create --admin`): confidential,
    /// client_credentials only, and the only kind that may hold the `tessera:admin` scope.
    pub admin: bool,
    /// The public keys of a client that authenticates with `private_key_jwt` (confidential,
    /// and then without a secret).
    pub keys: Option<ClientKeys>,
    /// DPoP, PAR and token exchange settings.
    pub policy: ClientPolicy,
}

impl NewClient {
    /// The settings a stored client has: what a form to change it starts from.
    pub fn of(client: &ClientRecord) -> NewClient {
        NewClient {
            name: client.name.clone(),
            client_type: client.client_type,
            grant_types: client.grant_types.clone(),
            redirect_uris: client.redirect_uris.clone(),
            scope: client.scopes.join(" "),
            resources: client.resources.clone(),
            access_token_ttl: client.access_token_ttl,
            refresh_token_ttl: client.refresh_token_ttl,
            skip_consent: client.skip_consent,
            owner_user_id: client.owner_user_id.clone(),
            post_logout_redirect_uris: client.post_logout_redirect_uris.clone(),
            id_token_signed_response_alg: client.id_token_signed_response_alg,
            admin: client.admin,
            keys: ClientKeys::of(client),
            policy: client.policy.clone(),
        }
    }
}

/// The scope a new client is given when whoever makes it names none (the CLI, the admin
/// API): the OpenID Connect scopes and the demo API's, or for an admin client only the admin
/// API's. The operator's console starts its form from the OpenID Connect scopes alone.
pub(crate) fn default_scope(admin: bool) -> &'static str {
    if admin {
        crate::oauth::scope::ADMIN_SCOPE
    } else {
        "openid profile email read write"
    }
}

/// The scopes the console's new-client form starts with.
pub(crate) const CONSOLE_FORM_SCOPE: &str = "openid profile email";

/// Whether a client is a first-party app whose users are never asked for consent. Only an
/// operator (the CLI or the admin API) can make one: a client registered by a user in the
/// applications pages or through dynamic registration never is, whatever its record says, so
/// no one can register an app that takes codes from other users without asking them.
pub(crate) fn is_first_party(client: &ClientRecord) -> bool {
    client.skip_consent && operator_made(client)
}

/// Whether a client was made by an operator (the CLI or the admin API), not by a user in the
/// applications pages or through dynamic registration.
pub(crate) fn operator_made(client: &ClientRecord) -> bool {
    client.owner_user_id.is_none() && client.registration_token_hash.is_none() && !is_document_url(&client.client_id)
}

/// The record's `jwks` and `jwks_uri` for `keys`.
pub(super) fn key_fields(keys: Option<ClientKeys>) -> (Option<serde_json::Value>, Option<String>) {
    match keys {
        Some(ClientKeys::Jwks(jwks)) => (Some(jwks), None),
        Some(ClientKeys::JwksUri(uri)) => (None, Some(uri)),
        None => (None, None),
    }
}

/// Most audiences a token exchange policy may list, in each of its two lists.
pub(crate) const MAX_EXCHANGE_AUDIENCES: usize = 20;

/// The token exchange settings make sense only with the grant, for a client that can
/// authenticate (an exchange hands out tokens for other users' subjects), and name audiences.
pub(super) fn validate_token_exchange(new: &NewClient) -> Result<(), Error> {
    let exchange = &new.policy.token_exchange;
    if !new.grant_types.contains(&GrantType::TokenExchange) {
        if *exchange != Default::default() {
            return Err(Error::invalid_request(
                "token exchange audiences and settings need the token-exchange grant type",
            ));
        }
        return Ok(());
    }
    if new.client_type != ClientType::Confidential {
        return Err(Error::invalid_request(
            "a public client cannot use token exchange: it cannot authenticate",
        ));
    }
    if exchange.audiences.is_empty() {
        return Err(Error::invalid_request(
            "the token-exchange grant needs at least one audience the client may request (token exchange audience)",
        ));
    }
    for (what, list) in [
        ("audiences", &exchange.audiences),
        ("subject audiences", &exchange.subject_audiences),
    ] {
        if list.len() > MAX_EXCHANGE_AUDIENCES {
            return Err(Error::invalid_request(format!(
                "at most {MAX_EXCHANGE_AUDIENCES} token exchange {what}"
            )));
        }
        for audience in list {
            if audience.is_empty()
                || audience.len() > 255
                || audience.chars().any(|c| c.is_whitespace() || c.is_control())
            {
                return Err(Error::invalid_request(format!(
                    "token exchange {what} must be 1 to 255 characters without spaces: {audience:?}"
                )));
            }
        }
    }
    Ok(())
}

/// The longest lifetimes a client may have: far beyond any sensible one, and small enough
/// that no time computed from them can overflow.
pub(crate) const MAX_ACCESS_TOKEN_TTL: u64 = 366 * 86_400;
pub(crate) const MAX_REFRESH_TOKEN_TTL: u64 = 10 * 366 * 86_400;
pub(super) const MAX_NAME_CHARS: usize = 200;
/// The longest name of a client registered by a user or by dynamic registration.
pub(crate) const MAX_SELF_SERVICE_NAME_CHARS: usize = 100;
/// The most apps one user may register in the pages: what bounds the store one account can
/// fill.
pub(crate) const MAX_APPS_PER_USER: usize = 50;

/// Refuses a client record holding a NUL anywhere (a JWK Set's member, say): PostgreSQL
/// cannot store one, and no setting needs one. The last check before a client is stored.
pub(super) fn no_nul_anywhere(client: &ClientRecord) -> Result<(), Error> {
    let json = serde_json::to_string(client).map_err(Error::server_error)?;
    match json.contains("\\u0000") {
        true => Err(Error::invalid_request(
            "a client's settings must not contain a NUL character",
        )),
        false => Ok(()),
    }
}
