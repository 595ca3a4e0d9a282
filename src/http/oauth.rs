//! The OAuth endpoints that clients call directly: token, device authorization (RFC 8628),
//! revocation, introspection.

use std::sync::Arc;

use poem::web::Data;
use poem::Request;
use poem_openapi::param::Header;
use poem_openapi::payload::Form;
use poem_openapi::{Object, OpenApi};
use serde::Deserialize;

use super::error::{OAuthResponse, PushedResponse};
use super::security::{client_credentials, proof_request, ClientAuthentication};
use super::Tag;
use crate::net::ClientAddress;
use crate::oauth::client::ClientCredentials;
use crate::oauth::grant::TokenRequest;
use crate::oauth::introspect::Introspection;
use crate::oauth::Provider;

/// A token request (RFC 6749 §4.1.3, §4.4.2, §6; RFC 8628 §3.4; RFC 8693 §2.1). Which fields
/// apply depends on `grant_type`. Each parameter may be sent once (RFC 6749 §3.1), `audience`
/// and `resource` included.
/// Clients authenticate with HTTP Basic (`client_secret_basic`), or with `client_id` and
/// `client_secret` in this form (`client_secret_post`); public clients send `client_id` only.
#[derive(Object, Deserialize, Debug)]
pub struct TokenForm {
    /// `authorization_code`, `client_credentials`, `refresh_token`,
    /// `urn:ietf:params:oauth:grant-type:device_code` (RFC 8628) or
    /// `urn:ietf:params:oauth:grant-type:token-exchange` (RFC 8693).
    pub grant_type: Option<String>,
    /// The authorization code (authorization_code grant).
    pub code: Option<String>,
    /// The redirect URI used in the authorization request, if it named one.
    pub redirect_uri: Option<String>,
    /// The PKCE code verifier (RFC 7636).
    pub code_verifier: Option<String>,
    /// The refresh token (refresh_token grant).
    pub refresh_token: Option<String>,
    /// Space-separated scopes (client_credentials; or a narrower scope on refresh or token
    /// exchange).
    pub scope: Option<String>,
    /// The resource server the token is for (RFC 8707); becomes the token's `aud`.
    pub resource: Option<String>,
    /// The device code from the device authorization endpoint (device code grant).
    pub device_code: Option<String>,
    /// Token exchange: the access token (issued by this server) to exchange; the new token
    /// is for its subject.
    pub subject_token: Option<String>,
    /// Token exchange: `urn:ietf:params:oauth:token-type:access_token` or
    /// `urn:ietf:params:oauth:token-type:jwt`.
    pub subject_token_type: Option<String>,
    /// Token exchange: an access token issued by this server to the calling client, naming who
    /// acts for the subject; it becomes the new token's `act` claim.
    pub actor_token: Option<String>,
    /// Token exchange: the type of `actor_token` (as `subject_token_type`); required with it.
    pub actor_token_type: Option<String>,
    /// Token exchange: `urn:ietf:params:oauth:token-type:access_token` (the default) or
    /// `urn:ietf:params:oauth:token-type:jwt`; either way a JWT access token is issued.
    pub requested_token_type: Option<String>,
    /// Token exchange: the audience of the new token, one of those the client may exchange
    /// for (as `resource`; if both are sent they must be equal).
    pub audience: Option<String>,
    /// Client authentication, unless it is in the `Authorization` header.
    #[oai(flatten)]
    #[serde(flatten)]
    pub auth: ClientAuthentication,
}

/// A device authorization request (RFC 8628 §3.1). Clients authenticate as at the token
/// endpoint; public clients send `client_id` only.
#[derive(Object, Deserialize, Debug)]
pub struct DeviceAuthorizationForm {
    /// Space-separated scopes; without it, every scope the client is registered for.
    pub scope: Option<String>,
    /// The resource server the tokens are for (RFC 8707); becomes their `aud`.
    pub resource: Option<String>,
    /// Client authentication, unless it is in the `Authorization` header.
    #[oai(flatten)]
    #[serde(flatten)]
    pub auth: ClientAuthentication,
}

/// A pushed authorization request (RFC 9126 §2.1): the authorization request's parameters,
/// as they would be sent to `/o/authorize/`, plus client authentication as at the token
/// endpoint. Parameters the authorization endpoint ignores are ignored here too.
#[derive(Object, Deserialize, Debug)]
pub struct PushedAuthorizationForm {
    /// `code`.
    pub response_type: Option<String>,
    /// Compared exactly with the client's registered URIs; may be left out if it has one.
    pub redirect_uri: Option<String>,
    /// Space-separated; default: every scope the client is registered for.
    pub scope: Option<String>,
    pub state: Option<String>,
    /// PKCE (RFC 7636): the S256 challenge.
    pub code_challenge: Option<String>,
    /// `S256`.
    pub code_challenge_method: Option<String>,
    /// The resource server the tokens are for (RFC 8707).
    pub resource: Option<String>,
    /// OpenID Connect: `none`, `login`, `consent` or `select_account`.
    pub prompt: Option<String>,
    /// OpenID Connect: the longest time in seconds since the user last logged in.
    pub max_age: Option<String>,
    /// OpenID Connect: echoed in the ID token.
    pub nonce: Option<String>,
    /// OpenID Connect: a username to prefill on the login page.
    pub login_hint: Option<String>,
    /// OpenID Connect: an ID token this server issued to the client.
    pub id_token_hint: Option<String>,
    /// `query` (the only mode).
    pub response_mode: Option<String>,
    /// RFC 9449 §10: the JWK thumbprint of the DPoP key the code is bound to.
    pub dpop_jkt: Option<String>,
    /// Not supported (`request_not_supported`).
    pub request: Option<String>,
    /// Refused: a `request_uri` cannot be pushed.
    pub request_uri: Option<String>,
    /// Client authentication, unless it is in the `Authorization` header.
    #[oai(flatten)]
    #[serde(flatten)]
    pub auth: ClientAuthentication,
}

impl PushedAuthorizationForm {
    /// The authorization request's parameters, as the authorization endpoint reads them.
    fn pairs(&self) -> Vec<(String, String)> {
        [
            ("client_id", &self.auth.client_id),
            ("response_type", &self.response_type),
            ("redirect_uri", &self.redirect_uri),
            ("scope", &self.scope),
            ("state", &self.state),
            ("code_challenge", &self.code_challenge),
            ("code_challenge_method", &self.code_challenge_method),
            ("resource", &self.resource),
            ("prompt", &self.prompt),
            ("max_age", &self.max_age),
            ("nonce", &self.nonce),
            ("login_hint", &self.login_hint),
            ("id_token_hint", &self.id_token_hint),
            ("response_mode", &self.response_mode),
            ("dpop_jkt", &self.dpop_jkt),
            ("request", &self.request),
            ("request_uri", &self.request_uri),
        ]
        .into_iter()
        // RFC 6749 §3.1: a parameter sent without a value is treated as omitted.
        .filter_map(|(name, value)| {
            let value = value.as_deref().filter(|v| !v.is_empty())?;
            Some((name.to_string(), value.to_string()))
        })
        .collect()
    }
}

/// A pushed authorization response (RFC 9126 §2.2).
#[derive(Object, Debug)]
pub struct PushedAuthorizationBody {
    /// Send the browser to `/o/authorize/?client_id=…&request_uri=…` with it.
    pub request_uri: String,
    /// Seconds the `request_uri` can be first used in.
    pub expires_in: u64,
}

/// A device authorization response (RFC 8628 §3.2).
#[derive(Object, Debug)]
pub struct DeviceAuthorizationBody {
    /// The device's secret for polling the token endpoint.
    pub device_code: String,
    /// The code the user enters at `verification_uri` (8 letters, shown as `BCDF-GHJK`).
    pub user_code: String,
    /// Where the user enters the code, logged in to this server.
    pub verification_uri: String,
    /// `verification_uri` with the code filled in (for a QR code, say).
    pub verification_uri_complete: String,
    /// Seconds until both codes expire.
    pub expires_in: u64,
    /// Seconds the device must wait between polls (more after a `slow_down`).
    pub interval: u64,
}

/// Tokens issued by the token endpoint (RFC 6749 §5.1).
#[derive(Object, Debug)]
pub struct TokenBody {
    /// A JWT access token (RFC 9068), verifiable with the keys at `/.well-known/jwks.json`.
    pub access_token: String,
    /// `DPoP` when the access token is bound to the key of the request's DPoP proof (RFC 9449
    /// §5), else `Bearer`.
    pub token_type: String,
    /// Seconds until the access token expires.
    pub expires_in: u64,
    /// An opaque refresh token; single use: each refresh returns a new one.
    #[oai(skip_serializing_if_is_none)]
    pub refresh_token: Option<String>,
    /// The scopes granted.
    pub scope: String,
    /// An OpenID Connect ID token (a JWT for the client), when `openid` was granted.
    #[oai(skip_serializing_if_is_none)]
    pub id_token: Option<String>,
    /// Token exchange only (RFC 8693 §2.2.1): the type of `access_token`, as
    /// `requested_token_type` asked (`...:token-type:access_token` or `...:token-type:jwt`).
    #[oai(skip_serializing_if_is_none)]
    pub issued_token_type: Option<String>,
}

/// A revocation or introspection request (RFC 7009 §2.1, RFC 7662 §2.1).
#[derive(Object, Deserialize, Debug)]
pub struct TokenHintForm {
    /// The token to revoke or introspect.
    pub token: Option<String>,
    /// `access_token` or `refresh_token`: where to look first.
    pub token_type_hint: Option<String>,
    /// Client authentication, unless it is in the `Authorization` header.
    #[oai(flatten)]
    #[serde(flatten)]
    pub auth: ClientAuthentication,
}

/// Revocation succeeded, or the token was unknown (RFC 7009 §2.2 answers both alike).
#[derive(Object, Debug)]
pub struct RevocationBody {}

/// The state of a token (RFC 7662 §2.2). An inactive token has `active: false` and nothing else.
#[derive(Object, Debug)]
pub struct IntrospectionBody {
    /// Whether the token is currently valid.
    pub active: bool,
    /// `Bearer` or `DPoP` (a DPoP-bound token, RFC 9449 §6.2) for access tokens,
    /// `refresh_token` for refresh tokens.
    #[oai(skip_serializing_if_is_none)]
    pub token_type: Option<String>,
    /// The confirmation of a DPoP-bound token: the thumbprint of its key (RFC 9449 §6.2).
    #[oai(skip_serializing_if_is_none)]
    pub cnf: Option<ConfirmationBody>,
    #[oai(skip_serializing_if_is_none)]
    pub scope: Option<String>,
    #[oai(skip_serializing_if_is_none)]
    pub client_id: Option<String>,
    /// The user, or the client for client_credentials tokens.
    #[oai(skip_serializing_if_is_none)]
    pub sub: Option<String>,
    #[oai(skip_serializing_if_is_none)]
    pub aud: Option<String>,
    #[oai(skip_serializing_if_is_none)]
    pub iss: Option<String>,
    #[oai(skip_serializing_if_is_none)]
    pub exp: Option<i64>,
    #[oai(skip_serializing_if_is_none)]
    pub iat: Option<i64>,
    #[oai(skip_serializing_if_is_none)]
    pub jti: Option<String>,
}

/// A token's `cnf` claim (RFC 7800 §3.1).
#[derive(Object, Debug)]
pub struct ConfirmationBody {
    /// The base64url SHA-256 JWK thumbprint (RFC 7638) of the DPoP key.
    pub jkt: String,
}

impl From<Introspection> for IntrospectionBody {
    fn from(i: Introspection) -> Self {
        IntrospectionBody {
            active: i.active,
            token_type: i.token_type,
            cnf: i.cnf_jkt.map(|jkt| ConfirmationBody { jkt }),
            scope: i.scope,
            client_id: i.client_id,
            sub: i.sub,
            aud: i.aud,
            iss: i.iss,
            exp: i.exp,
            iat: i.iat,
            jti: i.jti,
        }
    }
}

/// The credentials with the caller's address (behind trusted proxies, the forwarded one).
fn with_address(mut credentials: ClientCredentials, req: &Request) -> ClientCredentials {
    credentials.address = ClientAddress::of(req).key();
    credentials
}

pub struct OAuthApi;

#[OpenApi(tag = "Tag::OAuth")]
impl OAuthApi {
    /// Token endpoint
    ///
    /// Exchanges an authorization code (with its PKCE verifier), client credentials, a
    /// refresh token, a device code, or (token exchange, RFC 8693) an access token for an
    /// access token. Refresh tokens rotate: each use returns a new one, and presenting a used
    /// one revokes every token of its grant. An exchanged token keeps its subject token's user
    /// and grant, is for an audience the client may exchange for, has no refresh token and
    /// never outlives the subject token.
    ///
    /// With a `DPoP` proof header (RFC 9449), the access token is bound to the proof's key
    /// (`token_type` `DPoP`, claim `cnf.jkt`), and so is a public client's refresh token.
    #[oai(path = "/o/token/", method = "post", operation_id = "token")]
    async fn token(
        &self,
        provider: Data<&Arc<Provider>>,
        req: &Request,
        form: Form<TokenForm>,
        /// A DPoP proof (RFC 9449 §4): a JWT with `typ` `dpop+jwt`, signed with ES256, EdDSA,
        /// RS256 or PS256 by the key in its `jwk` header, with `htm` `POST`, `htu` this
        /// endpoint's URL, a fresh `iat` and a unique `jti` (and `nonce`, when the server asks
        /// for one with `use_dpop_nonce`). Read from the raw headers: sending it twice is an error.
        #[oai(name = "DPoP")]
        _dpop: Header<Option<String>>,
    ) -> OAuthResponse<TokenBody> {
        let Form(form) = form;
        let credentials = match client_credentials(req, &form.auth) {
            Ok(c) => with_address(c, req),
            Err(e) => return e.into(),
        };
        // RFC 6749 §3.1: a parameter sent without a value is treated as omitted.
        let present = |v: Option<String>| v.filter(|v| !v.is_empty());
        let request = TokenRequest {
            grant_type: present(form.grant_type),
            code: present(form.code),
            redirect_uri: present(form.redirect_uri),
            code_verifier: present(form.code_verifier),
            refresh_token: present(form.refresh_token),
            scope: present(form.scope),
            resource: present(form.resource),
            device_code: present(form.device_code),
            subject_token: present(form.subject_token),
            subject_token_type: present(form.subject_token_type),
            actor_token: present(form.actor_token),
            actor_token_type: present(form.actor_token_type),
            requested_token_type: present(form.requested_token_type),
            audience: present(form.audience),
        };
        let proofs = proof_request(req, &provider);
        match provider.tokens.token(&credentials, request, &proofs).await {
            Ok(t) => {
                let nonce = t.dpop_nonce;
                let body = TokenBody {
                    access_token: t.access_token,
                    token_type: t.token_type.into(),
                    expires_in: t.expires_in,
                    refresh_token: t.refresh_token,
                    scope: t.scope,
                    id_token: t.id_token,
                    issued_token_type: t.issued_token_type.map(str::to_string),
                };
                OAuthResponse::ok_with_nonce(body, nonce)
            }
            Err(e) => e.into(),
        }
    }

    /// Device authorization endpoint
    ///
    /// Starts the device authorization grant (RFC 8628) for a client registered for it:
    /// returns a device code to poll the token endpoint with, and a user code for the user to
    /// enter at `verification_uri` (or to open `verification_uri_complete`), where they log in
    /// and approve or deny.
    #[oai(
        path = "/o/device_authorization/",
        method = "post",
        operation_id = "deviceAuthorization"
    )]
    async fn device_authorization(
        &self,
        provider: Data<&Arc<Provider>>,
        req: &Request,
        form: Form<DeviceAuthorizationForm>,
    ) -> OAuthResponse<DeviceAuthorizationBody> {
        let Form(form) = form;
        let result = async {
            let credentials = client_credentials(req, &form.auth)?;
            // RFC 6749 §3.1: a parameter sent without a value is treated as omitted.
            let scope = form.scope.as_deref().filter(|v| !v.is_empty());
            let resource = form.resource.as_deref().filter(|v| !v.is_empty());
            provider
                .authorization
                .device_authorization(&with_address(credentials, req), scope, resource)
                .await
        };
        match result.await {
            Ok(d) => OAuthResponse::ok(DeviceAuthorizationBody {
                device_code: d.device_code,
                user_code: d.user_code,
                verification_uri: d.verification_uri,
                verification_uri_complete: d.verification_uri_complete,
                expires_in: d.expires_in,
                interval: d.interval,
            }),
            Err(e) => e.into(),
        }
    }

    /// Pushed authorization request
    ///
    /// Takes an authorization request straight from an authenticated client (RFC 9126),
    /// validates it as the authorization endpoint would, and returns a single-use
    /// `request_uri` for `/o/authorize/?client_id=…&request_uri=…`. Only `client_id` and
    /// `request_uri` are then read from the browser; the pushed parameters are used as pushed.
    #[oai(path = "/o/par/", method = "post", operation_id = "pushAuthorizationRequest")]
    async fn pushed_authorization_request(
        &self,
        provider: Data<&Arc<Provider>>,
        req: &Request,
        form: Form<PushedAuthorizationForm>,
    ) -> PushedResponse<PushedAuthorizationBody> {
        let result = async {
            let credentials = with_address(client_credentials(req, &form.auth)?, req);
            let proofs = proof_request(req, &provider);
            provider
                .authorization
                .push_authorization_request(&credentials, form.pairs(), &proofs)
                .await
        };
        match result.await {
            Ok(pushed) => PushedResponse::created(PushedAuthorizationBody {
                request_uri: pushed.request_uri,
                expires_in: pushed.expires_in,
            }),
            Err(e) => e.into(),
        }
    }

    /// Revoke a token
    ///
    /// Revokes a refresh token (and every token of its grant) or an access token (RFC 7009).
    /// Unknown tokens are answered like success. A public client's DPoP-bound token is revoked
    /// only with a `DPoP` proof of its key (`invalid_dpop_proof` otherwise).
    #[oai(path = "/o/revoke_token/", method = "post", operation_id = "revokeToken")]
    async fn revoke_token(
        &self,
        provider: Data<&Arc<Provider>>,
        req: &Request,
        form: Form<TokenHintForm>,
        /// A DPoP proof (RFC 9449 §4) made with the key the token is bound to, with `htm`
        /// `POST` and `htu` this endpoint's URL: needed to revoke a public client's bound token.
        #[oai(name = "DPoP")]
        _dpop: Header<Option<String>>,
    ) -> OAuthResponse<RevocationBody> {
        let result = match client_credentials(req, &form.auth) {
            Ok(credentials) => {
                let credentials = with_address(credentials, req);
                let proofs = proof_request(req, &provider);
                provider
                    .tokens
                    .revoke(
                        &credentials,
                        form.token.as_deref(),
                        form.token_type_hint.as_deref(),
                        &proofs,
                    )
                    .await
            }
            Err(e) => Err(e),
        };
        match result {
            Ok(()) => OAuthResponse::ok(RevocationBody {}),
            Err(e) => e.into(),
        }
    }

    /// Introspect a token
    ///
    /// Tells a confidential client (typically a resource server) whether a token is active
    /// and what it grants (RFC 7662).
    #[oai(path = "/o/introspect/", method = "post", operation_id = "introspectToken")]
    async fn introspect(
        &self,
        provider: Data<&Arc<Provider>>,
        req: &Request,
        form: Form<TokenHintForm>,
    ) -> OAuthResponse<IntrospectionBody> {
        let result = async {
            let credentials = client_credentials(req, &form.auth)?;
            provider
                .tokens
                .introspect(&with_address(credentials, req), form.token.as_deref())
                .await
        };
        match result.await {
            Ok(i) => OAuthResponse::ok(i.into()),
            Err(e) => e.into(),
        }
    }
}
