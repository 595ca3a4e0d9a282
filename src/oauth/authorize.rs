//! The authorization endpoint's logic (RFC 6749 §4.1.1-4.1.2, RFC 7636 §4.3, RFC 9207):
//! validating the request, and turning the user's decision into a redirect.

use url::Url;

use super::client::match_redirect_uri;
use super::scope::Scope;
use super::{now, pkce, random_token, secret_hash, Error, ErrorCode, Provider};
use crate::store::{ClientRecord, CodeRecord, GrantType};

/// A request that passed every check: it may be shown to the user for consent.
#[derive(Debug, Clone)]
pub struct AuthorizationRequest {
    pub client: ClientRecord,
    /// The redirect URI the response goes to.
    pub redirect_uri: String,
    /// Whether the request named the redirect URI (then the token request must repeat it).
    pub redirect_uri_given: bool,
    pub scope: Scope,
    pub state: Option<String>,
    pub code_challenge: Option<String>,
    pub audience: String,
    /// `prompt=consent`: ask again even if the user approved these scopes before.
    pub prompt_consent: bool,
}

/// The two kinds of authorization error (RFC 6749 §4.1.2.1).
#[derive(Debug)]
pub enum AuthorizeError {
    /// The client or redirect URI cannot be trusted: tell the user, never redirect.
    Show(Error),
    /// Everything else: send the error to the client's (verified) redirect URI.
    Redirect(String),
}

/// Request parameters, where each name may appear at most once (RFC 6749 §3.1) and an empty
/// value counts as absent.
pub struct Params<'a> {
    pairs: &'a [(String, String)],
}

impl<'a> Params<'a> {
    pub fn new(pairs: &'a [(String, String)]) -> Params<'a> {
        Params { pairs }
    }

    /// The single value of `name`; an error if it was sent more than once.
    pub fn get(&self, name: &str) -> Result<Option<&'a str>, Error> {
        let mut values = self.pairs.iter().filter(|(k, _)| k == name).map(|(_, v)| v.as_str());
        let first = values.next();
        if values.next().is_some() {
            return Err(Error::invalid_request(format!(
                "parameter {name} was given more than once"
            )));
        }
        Ok(first.filter(|v| !v.is_empty()))
    }
}

impl Provider {
    /// Validates an authorization request. Client and redirect URI are checked first, so that
    /// no error is ever redirected to a URI that was not registered for the client.
    pub fn validate_authorization(&self, pairs: &[(String, String)]) -> Result<AuthorizationRequest, AuthorizeError> {
        let params = Params::new(pairs);
        let show = AuthorizeError::Show;
        let client_id = params
            .get("client_id")
            .map_err(show)?
            .ok_or_else(|| show(Error::invalid_request("client_id is missing")))?;
        let client = self
            .find_client(client_id)
            .map_err(show)?
            .ok_or_else(|| show(Error::new(ErrorCode::InvalidClient, "unknown client")))?;
        let (redirect_uri, redirect_uri_given) = match params.get("redirect_uri").map_err(show)? {
            Some(requested) => match match_redirect_uri(&client.redirect_uris, requested) {
                Some(_) => (requested.to_string(), true),
                None => {
                    return Err(show(Error::invalid_request(
                        "redirect_uri does not match any URI registered for this client",
                    )))
                }
            },
            // RFC 6749 §3.1.2.3: may be omitted only when exactly one is registered.
            None => match client.redirect_uris.as_slice() {
                [only] => (only.clone(), false),
                _ => return Err(show(Error::invalid_request("redirect_uri is required for this client"))),
            },
        };

        // From here on the redirect URI is trusted: errors go back to the client.
        let state_param = params.get("state");
        let state = state_param.as_ref().ok().copied().flatten().map(str::to_string);
        let redirect =
            |error: Error| AuthorizeError::Redirect(self.error_redirect(&redirect_uri, &error, state.as_deref()));
        state_param.map_err(redirect)?;
        let response_type = params.get("response_type").map_err(redirect)?;
        match response_type {
            Some("code") => {}
            Some(_) => {
                return Err(redirect(Error::new(
                    ErrorCode::UnsupportedResponseType,
                    "only response_type=code is supported",
                )))
            }
            None => return Err(redirect(Error::invalid_request("response_type is missing"))),
        }
        if !client.grant_types.contains(&GrantType::AuthorizationCode) {
            return Err(redirect(Error::new(
                ErrorCode::UnauthorizedClient,
                "this client may not use the authorization code grant",
            )));
        }
        let scope = Scope::resolve(params.get("scope").map_err(redirect)?, &client.scopes, |t| {
            self.scope_is_known(t)
        })
        .map_err(redirect)?;
        let challenge = params.get("code_challenge").map_err(redirect)?;
        let method = params.get("code_challenge_method").map_err(redirect)?;
        let code_challenge = match challenge {
            Some(challenge) => Some(pkce::parse_challenge(challenge, method).map_err(redirect)?),
            None if self.pkce_required(&client) => {
                return Err(redirect(Error::invalid_request(
                    "code_challenge is required (PKCE with S256)",
                )));
            }
            None if method.is_some() => {
                return Err(redirect(Error::invalid_request(
                    "code_challenge_method without code_challenge",
                )))
            }
            None => None,
        };
        let audience = self
            .resolve_audience(&client, params.get("resource").map_err(redirect)?)
            .map_err(redirect)?;
        // OpenID Connect Core §3.1.2.1 `prompt` is space-separated; `consent` asks again.
        let prompt = params.get("prompt").map_err(redirect)?;
        let prompt_consent = prompt.is_some_and(|p| p.split(' ').any(|v| v == "consent"));
        Ok(AuthorizationRequest {
            client,
            redirect_uri,
            redirect_uri_given,
            scope,
            state,
            code_challenge,
            audience,
            prompt_consent,
        })
    }

    fn pkce_required(&self, client: &ClientRecord) -> bool {
        // RFC 9700 §2.1.1: public clients MUST use PKCE; we require it of everyone by default.
        client.client_type == crate::store::ClientType::Public || self.config.require_pkce
    }

    /// Issues a code for the approved request and returns the redirect carrying it. The code
    /// is durable before the redirect is returned.
    pub async fn approve(
        &self,
        request: &AuthorizationRequest,
        user_id: &str,
        auth_time: i64,
    ) -> Result<String, Error> {
        let code = random_token(32);
        let record = CodeRecord {
            client_id: request.client.client_id.clone(),
            redirect_uri: request.redirect_uri.clone(),
            redirect_uri_given: request.redirect_uri_given,
            code_challenge: request.code_challenge.clone(),
            user_id: user_id.to_string(),
            scope: request.scope.to_string(),
            audience: request.audience.clone(),
            auth_time,
            expires_at: now() + self.config.code_ttl.as_secs() as i64,
            grant_id: super::random_id(),
            redeemed: false,
        };
        self.store.put_code(&secret_hash(&code), &record)?;
        self.store.durable().await?;
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
