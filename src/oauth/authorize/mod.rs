//! The authorization endpoint (RFC 6749 §4.1.1-4.1.2, RFC 7636, RFC 9207, OpenID Connect Core
//! §3.1.2): from a request and whoever is at the browser, the next step. The pages only render
//! what this decides: a login, the consent page, a redirect, or an error shown on the spot.
//!
//! [`Authorization::authorize`] takes the request as it arrives; [`Authorization::decide`] takes the
//! user's answer on the consent page. The request itself (its parameters and their checks)
//! is in [`request`].

pub mod pushed;
mod request;

use url::Url;

use self::pushed::Pushed;
use self::request::Origin;
pub use self::request::{AcrRequest, AuthorizationRequest, AuthorizeError, Prompt};
pub use super::params::Params;
use super::session::Session;
use std::sync::Arc;

use super::acr::Level;
use super::audit::Audit;
use super::client::Clients;
use super::dpop::Dpop;
use super::factor::SecondStep;
use super::scratch::Scratch;
use super::secrets::Secrets;
use super::throttle::UserCodeThrottle;
use super::{now, random_token, secret_hash, Durability, Error, ErrorCode, Provider, Shared};
use crate::config::Config;
use crate::keys::Keys;
use crate::rate_limit::RateLimiter;
use crate::store::{CodeRecord, ConsentStore, DeviceStore, EphemeralStore, FactorStore, GrantStore};

/// Authorization: the authorization endpoint and the code it issues, consent, pushed
/// authorization requests and the device flow, with the budgets of the last two. Its fields
/// are the `oauth` module's, so that `consent.rs` and `device.rs` can hold their parts of it.
pub(crate) struct Authorization {
    /// Codes, and the grants a device approval creates (or a withdrawn consent revokes).
    pub(in crate::oauth) grants: Arc<dyn GrantStore>,
    pub(in crate::oauth) consents: Arc<dyn ConsentStore>,
    /// Whether a user can show a second factor when a request asks for a stronger login.
    pub(in crate::oauth) factors: Arc<dyn FactorStore>,
    pub(in crate::oauth) devices: Arc<dyn DeviceStore>,
    /// The wrong-user-code counters, and the memory of pushed requests used once.
    pub(in crate::oauth) counters: Arc<dyn EphemeralStore>,
    pub(in crate::oauth) durability: Durability,
    /// Pushed requests are kept sealed in the scratch space.
    pub(in crate::oauth) scratch: Arc<Scratch>,
    /// Device user codes are indexed by an HMAC under a server secret.
    pub(in crate::oauth) secrets: Arc<Secrets>,
    /// The clients that ask, and their authentication at the PAR and device endpoints.
    pub(in crate::oauth) clients: Arc<Clients>,
    /// A DPoP proof sent with a pushed request binds its code.
    pub(in crate::oauth) dpop: Arc<Dpop>,
    pub(in crate::oauth) audit: Arc<Audit>,
    /// To read `id_token_hint`s.
    pub(in crate::oauth) keys: Arc<Keys>,
    pub(in crate::oauth) config: Arc<Config>,
    /// The issuer identifier, without a trailing slash.
    pub(in crate::oauth) issuer: String,
    /// Requests per authenticated client, shared with the token and introspection endpoints.
    pub(in crate::oauth) client_rate: Arc<RateLimiter>,
    /// Pushed authorization requests per client address, for clients anyone can push for, by
    /// count and by the bytes they keep in the scratch space.
    pub(in crate::oauth) pushed_rate: RateLimiter,
    pub(in crate::oauth) pushed_bytes_rate: RateLimiter,
    /// Device authorizations started per client address: each is a stored record and a live
    /// user code for `device_code_ttl`.
    pub(in crate::oauth) device_rate: RateLimiter,
    /// Wrong device user codes, per user and per client address (RFC 8628 §5.1).
    pub(in crate::oauth) user_code_throttle: UserCodeThrottle,
}

impl Authorization {
    pub(crate) fn new(shared: &Shared<'_>) -> Authorization {
        let config = shared.config;
        Authorization {
            grants: shared.store.clone(),
            consents: shared.store.clone(),
            factors: shared.store.clone(),
            devices: shared.store.clone(),
            counters: shared.store.clone(),
            durability: shared.durability.clone(),
            scratch: shared.scratch.clone(),
            secrets: shared.secrets.clone(),
            clients: shared.clients.clone(),
            dpop: shared.dpop.clone(),
            audit: shared.audit.clone(),
            keys: shared.keys.clone(),
            config: config.clone(),
            issuer: shared.issuer.to_string(),
            client_rate: shared.client_rate.clone(),
            pushed_rate: RateLimiter::new(config.pushed_requests_per_address),
            pushed_bytes_rate: RateLimiter::new(pushed::PUSHED_KIB_PER_MINUTE),
            device_rate: RateLimiter::new(config.device_authorizations_per_address),
            user_code_throttle: UserCodeThrottle::new(config.login_throttle),
        }
    }

    /// An absolute URL on this server.
    pub(in crate::oauth) fn url(&self, path: &str) -> String {
        format!("{}{}", self.issuer, path)
    }
}

/// Consent as the front offers it to other crates.
impl Provider {
    /// Withdraws a user's consent to a client (`Authorization::withdraw_consent`).
    pub async fn withdraw_consent(
        &self,
        by: &super::audit::Caller,
        user_id: &str,
        client_id: &str,
    ) -> Result<bool, Error> {
        self.authorization.withdraw_consent(by, user_id, client_id).await
    }
}

/// What the browser sees next.
#[derive(Debug)]
pub enum AuthorizeStep {
    /// The login page, and afterwards back to `return_to` (a path and query on this server).
    Login { return_to: String },
    /// The request asks for a stronger login than the session's: a second factor, then back
    /// to `return_to` (step-up).
    Factor { return_to: String },
    /// The consent page for this request.
    Consent(Box<ConsentPrompt>),
    /// Off to this URL: the client's redirect URI with a code or an error.
    Redirect(String),
    /// This error, shown to the user; never sent to the client.
    Show(Error),
}

/// What the consent page shows.
#[derive(Debug)]
pub struct ConsentPrompt {
    pub request: AuthorizationRequest,
    /// Each requested scope and its description from the configuration.
    pub scopes: Vec<(String, Option<String>)>,
    /// The host the user will be sent back to.
    pub redirect_host: String,
    /// The client id's first characters: names can be copied, ids cannot.
    pub client_id_prefix: String,
    /// Whether a user or dynamic registration made the client, rather than an operator.
    pub self_registered: bool,
    /// For a client identified by its metadata document's URL, that URL's host: the one thing
    /// about it nobody else can claim.
    pub document_host: Option<String>,
    /// This request's redirect URI is on the user's machine (localhost): any program on their
    /// computer could receive the code, so the name is only as good as the software they run
    /// (whatever other redirect URIs the client has: the code goes to this one).
    pub loopback_redirect: bool,
}

/// The user's answer on the consent page.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    Allow,
    Deny,
}

/// What the browser must see before a code can be issued.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Interaction {
    Login,
    /// A second factor, to reach the login level the request asks for.
    Factor,
    Consent,
    None,
}

impl From<AuthorizeError> for AuthorizeStep {
    fn from(error: AuthorizeError) -> Self {
        match error {
            AuthorizeError::Show(error) => AuthorizeStep::Show(error),
            AuthorizeError::Redirect(location) => AuthorizeStep::Redirect(location),
        }
    }
}

impl Authorization {
    /// The authorization request in `pairs` (the query string), for the browser's logged-in
    /// `session` if it has one: validated, then a login if nobody (or not the right person, or
    /// not recently enough) is logged in, the consent page if the user has not approved these
    /// scopes for this client, or else straight back to the client with a code. The approval
    /// is recorded then too, so the app is listed (and revocable) on the authorized-apps page.
    /// `caller` is the browser's address key: a client's metadata document fetched for the
    /// first time is counted against it. A query with a `request_uri` names a pushed request
    /// (RFC 9126), whose parameters are used instead.
    pub async fn authorize(
        &self,
        pairs: &[(String, String)],
        session: Option<&Session>,
        caller: Option<&str>,
    ) -> AuthorizeStep {
        let pushed = match self.pushed_request(pairs).await {
            Ok(pushed) => pushed,
            Err(e) => return AuthorizeStep::Show(e),
        };
        let (params, origin) = match &pushed {
            Some(pushed) => (pushed.pairs.as_slice(), Origin::Pushed),
            None => (pairs, Origin::Query),
        };
        let request = match self
            .validate_request(params, session.map(Session::user_id), caller, origin)
            .await
        {
            Ok(request) => request,
            Err(error) => return error.into(),
        };
        let consent_required = match session {
            Some(session) => match self.consent_required(&request, session.user_id()).await {
                Ok(required) => required,
                Err(e) => return AuthorizeStep::Show(e),
            },
            None => true,
        };
        let pushed_at = pushed.as_ref().map(|p| p.pushed_at);
        let can_step_up = match self.can_step_up(&request, session).await {
            Ok(can) => can,
            Err(e) => return AuthorizeStep::Show(e),
        };
        match self.interaction(&request, session, consent_required, pushed_at, can_step_up) {
            Err(error) => error.into(),
            Ok(Interaction::Login) => AuthorizeStep::Login {
                return_to: return_path(pairs),
            },
            Ok(Interaction::Factor) => AuthorizeStep::Factor {
                return_to: return_path(pairs),
            },
            Ok(Interaction::Consent) => AuthorizeStep::Consent(Box::new(self.consent_prompt(request))),
            Ok(Interaction::None) => match session {
                Some(session) => self.approve_for(&request, session, pushed.as_ref()).await,
                None => AuthorizeStep::Show(Error::server_error("no login needed but nobody is logged in")),
            },
        }
    }

    /// The user's answer to the consent page for the request in `pairs`. Without a logged-in
    /// session the browser is sent to log in first.
    pub async fn decide(
        &self,
        pairs: &[(String, String)],
        session: Option<&Session>,
        decision: Decision,
    ) -> AuthorizeStep {
        let Some(session) = session else {
            return AuthorizeStep::Login {
                return_to: return_path(pairs),
            };
        };
        let pushed = match self.pushed_request(pairs).await {
            Ok(pushed) => pushed,
            Err(e) => return AuthorizeStep::Show(e),
        };
        let (params, origin) = match &pushed {
            Some(pushed) => (pushed.pairs.as_slice(), Origin::Pushed),
            None => (pairs, Origin::Query),
        };
        let request = match self
            .validate_request(params, Some(session.user_id()), None, origin)
            .await
        {
            Ok(request) => request,
            Err(error) => return error.into(),
        };
        // The answer counts only from someone the request would have shown the consent page
        // to: logged in recently enough, as the user an `id_token_hint` names.
        let pushed_at = pushed.as_ref().map(|p| p.pushed_at);
        let can_step_up = match self.can_step_up(&request, Some(session)).await {
            Ok(can) => can,
            Err(e) => return AuthorizeStep::Show(e),
        };
        match self.interaction(&request, Some(session), false, pushed_at, can_step_up) {
            Err(error) => return error.into(),
            Ok(Interaction::Login) => {
                return AuthorizeStep::Login {
                    return_to: return_path(pairs),
                }
            }
            Ok(Interaction::Factor) => {
                return AuthorizeStep::Factor {
                    return_to: return_path(pairs),
                }
            }
            Ok(Interaction::Consent | Interaction::None) => {}
        }
        match decision {
            Decision::Allow => self.approve_for(&request, session, pushed.as_ref()).await,
            Decision::Deny => {
                // A denial answers a pushed request too: it cannot be approved afterwards.
                if let Some(pushed) = &pushed {
                    if let Err(e) = self.use_pushed_request(pushed).await {
                        return AuthorizeStep::Show(e);
                    }
                }
                AuthorizeStep::Redirect(self.deny(&request))
            }
        }
    }

    /// Records the approval and issues the code (using up the pushed request it came from
    /// first, if any: one pushed request, one code).
    async fn approve_for(
        &self,
        request: &AuthorizationRequest,
        session: &Session,
        pushed: Option<&Pushed>,
    ) -> AuthorizeStep {
        let outcome = async {
            if let Some(pushed) = pushed {
                self.use_pushed_request(pushed).await?;
            }
            self.remember_consent(request, session.user_id()).await?;
            self.approve(request, session).await
        };
        match outcome.await {
            Ok(location) => AuthorizeStep::Redirect(location),
            Err(e) => AuthorizeStep::Show(e),
        }
    }

    fn consent_prompt(&self, request: AuthorizationRequest) -> ConsentPrompt {
        let scopes = self.describe_scopes(&request.scope);
        let redirect_host = Url::parse(&request.redirect_uri)
            .ok()
            .and_then(|u| u.host_str().map(str::to_string))
            .unwrap_or_else(|| request.redirect_uri.clone());
        ConsentPrompt {
            scopes,
            redirect_host,
            client_id_prefix: request.client.client_id.chars().take(8).collect(),
            self_registered: !super::client::operator_made(&request.client),
            document_host: super::client::document::document_host(&request.client.client_id),
            loopback_redirect: Url::parse(&request.redirect_uri).is_ok_and(|u| super::client::is_loopback(&u)),
            request,
        }
    }

    /// Decides what the user must see, given who is logged in (and when) and whether the
    /// client still needs their consent ([`Authorization::consent_required`], which already counts
    /// `prompt=consent`). Under `prompt=none` anything but [`Interaction::None`] is an error
    /// for the client. `pushed_at` is when a pushed request was pushed: its `prompt=login` and
    /// `max_age=0` are satisfied by a login since then (an ordinary request's are dropped from
    /// the way back after the login, see [`return_path`]; a pushed one cannot be changed).
    /// Whether the session's user could raise its level to what `request` asks, with a second
    /// factor they have (only asked when the session falls short).
    async fn can_step_up(
        &self,
        request: &AuthorizationRequest,
        session: Option<&Session>,
    ) -> Result<Option<SecondStep>, Error> {
        let (Some(asked), Some(session)) = (request.acr, session) else {
            return Ok(None);
        };
        if Level::of(session.amr()) >= asked.level {
            return Ok(None);
        }
        let policy = super::factor::mfa_policy_of(self.config.mfa, self.config.operator_mfa, &session.user);
        if policy == crate::config::MfaPolicy::Off {
            return Ok(None);
        }
        let factors = self.factors.factors_of(session.user_id()).await?;
        let passkeys_usable = super::passkey::usable(&self.issuer);
        Ok(Some(
            match super::factor::has_second_factor(&factors, passkeys_usable) {
                true => SecondStep::Code,
                false => SecondStep::Enrol,
            },
        ))
    }

    fn interaction(
        &self,
        request: &AuthorizationRequest,
        session: Option<&Session>,
        consent_required: bool,
        pushed_at: Option<i64>,
        can_step_up: Option<SecondStep>,
    ) -> Result<Interaction, AuthorizeError> {
        // Another user than the `id_token_hint` names must log in as that user.
        let auth_time = session
            .filter(|session| {
                request
                    .hinted_user_id
                    .as_deref()
                    .is_none_or(|hinted| hinted == session.user_id())
            })
            .map(Session::auth_time);
        // Core §3.1.2.1: `max_age=0` means the same as `prompt=login`.
        let fresh_login_asked = request.prompt.login || request.max_age == Some(0);
        let logged_in_since_pushed = |auth_time: i64| pushed_at.is_some_and(|pushed_at| auth_time > pushed_at);
        let login_too_old = |auth_time: i64| request.max_age.is_some_and(|max| max > 0 && now() - auth_time > max);
        // The level asked for, against the session's (Core §3.1.2.1, §5.5.1.1).
        let short_of_acr = match (request.acr, session) {
            (Some(asked), Some(session)) => Level::of(session.amr()) < asked.level,
            _ => false,
        };
        let essential = request.acr.is_some_and(|asked| asked.essential);
        // A wish is met by an app the user has; a requirement also by one they add now.
        let step_up = matches!(
            (can_step_up, essential),
            (Some(SecondStep::Code), _) | (Some(SecondStep::Enrol), true)
        );
        let needed = match auth_time {
            None => Interaction::Login,
            Some(t) if fresh_login_asked && !logged_in_since_pushed(t) => Interaction::Login,
            Some(t) if login_too_old(t) => Interaction::Login,
            Some(_) if short_of_acr && step_up => Interaction::Factor,
            Some(_) if short_of_acr && essential => {
                return Err(self.authorization_error(
                    request,
                    Error::new(
                        ErrorCode::UnmetAuthenticationRequirements,
                        "the login level asked for (acr) cannot be reached: second factors are off for this user",
                    ),
                ))
            }
            Some(_) if consent_required => Interaction::Consent,
            Some(_) => Interaction::None,
        };
        match (needed, request.prompt.none) {
            (Interaction::Factor, true) => Err(self.authorization_error(
                request,
                Error::new(ErrorCode::InteractionRequired, "the user must show a second factor"),
            )),
            (Interaction::Login, true) => {
                Err(self.authorization_error(request, Error::new(ErrorCode::LoginRequired, "the user must log in")))
            }
            (Interaction::Consent, true) => Err(self.authorization_error(
                request,
                Error::new(ErrorCode::ConsentRequired, "the user must approve this app"),
            )),
            (needed, _) => Ok(needed),
        }
    }

    /// An error for a validated request: redirected to the client, or shown if its redirect
    /// URI is not trusted with errors (see [`AuthorizationRequest::redirect_errors`]).
    pub(crate) fn authorization_error(&self, request: &AuthorizationRequest, error: Error) -> AuthorizeError {
        if request.redirect_errors {
            AuthorizeError::Redirect(self.error_redirect(&request.redirect_uri, &error, request.state.as_deref()))
        } else {
            AuthorizeError::Show(error)
        }
    }

    /// Issues a code for the approved request and returns the redirect carrying it. The code
    /// is durable before the redirect is returned.
    pub async fn approve(&self, request: &AuthorizationRequest, session: &Session) -> Result<String, Error> {
        let code = random_token(32);
        let record = CodeRecord {
            client_id: request.client.client_id.clone(),
            redirect_uri: request.redirect_uri.clone(),
            redirect_uri_given: request.redirect_uri_given,
            code_challenge: request.code_challenge.clone(),
            user_id: session.user_id().to_string(),
            scope: request.scope.to_string(),
            audience: request.audience.clone(),
            auth_time: session.auth_time(),
            expires_at: now() + self.config.code_ttl.as_secs() as i64,
            grant_id: super::random_id(),
            redeemed: false,
            nonce: request.nonce.clone(),
            dpop_jkt: request.dpop_jkt.clone(),
            amr: session.amr().to_vec(),
        };
        self.grants.put_code(&secret_hash(&code), &record).await?;
        self.durability.durable().await?;
        Ok(self.redirect_with(&request.redirect_uri, &[("code", &code)], request.state.as_deref()))
    }

    /// The redirect for a user who said no (RFC 6749 §4.1.2.1 `access_denied`).
    pub fn deny(&self, request: &AuthorizationRequest) -> String {
        let error = Error::new(ErrorCode::AccessDenied, "the user denied the request");
        self.error_redirect(&request.redirect_uri, &error, request.state.as_deref())
    }

    fn error_redirect(&self, redirect_uri: &str, error: &Error, state: Option<&str>) -> String {
        self.redirect_with(
            redirect_uri,
            &[
                ("error", error.code.as_str()),
                ("error_description", &error.description),
            ],
            state,
        )
    }

    /// Appends response parameters, `state` and `iss` (RFC 9207) to the redirect URI, keeping
    /// its own query (RFC 6749 §3.1.2).
    fn redirect_with(&self, redirect_uri: &str, params: &[(&str, &str)], state: Option<&str>) -> String {
        let Ok(mut url) = Url::parse(redirect_uri) else {
            // Registered URIs are validated as absolute URLs, so this cannot happen.
            return redirect_uri.to_string();
        };
        {
            let mut query = url.query_pairs_mut();
            for (name, value) in params {
                query.append_pair(name, value);
            }
            if let Some(state) = state {
                query.append_pair("state", state);
            }
            query.append_pair("iss", &self.issuer);
        }
        url.to_string()
    }
}

/// The way back to this request after a login. It drops `prompt=login` and `max_age`, which
/// that login satisfies; kept, they would ask for a login forever (`max_age=0` always would).
/// The ID token's `auth_time` still tells the client when the login happened.
fn return_path(pairs: &[(String, String)]) -> String {
    let mut query = url::form_urlencoded::Serializer::new(String::new());
    for (name, value) in pairs {
        if name == "max_age" {
            continue;
        }
        if name == "prompt" {
            let rest: Vec<&str> = value
                .split(' ')
                .filter(|w| !w.is_empty() && !matches!(*w, "login" | "select_account"))
                .collect();
            if !rest.is_empty() {
                query.append_pair(name, &rest.join(" "));
            }
        } else {
            query.append_pair(name, value);
        }
    }
    format!("{}?{}", super::endpoints::AUTHORIZE, query.finish())
}
