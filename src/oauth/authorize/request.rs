//! The authorization request (RFC 6749 §4.1.1, RFC 7636 §4.3, OpenID Connect Core §3.1.2.1):
//! its parameters, checked in the order that keeps errors from ever reaching an unverified
//! redirect URI.

use super::Authorization;
use crate::oauth::acr::Level;
use crate::oauth::client::match_redirect_uri;
use crate::oauth::params::Params;
use crate::oauth::scope::{self, Scope};
use crate::oauth::{pkce, Error, ErrorCode};
use crate::store::{ClientRecord, GrantType};

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
    pub prompt: Prompt,
    /// OpenID Connect `max_age`: the longest time in seconds since the user last logged in.
    pub max_age: Option<i64>,
    /// The login level asked for (`acr_values`, or `acr` in the `claims` parameter).
    pub acr: Option<AcrRequest>,
    /// OpenID Connect `nonce`, echoed in the ID token.
    pub nonce: Option<String>,
    /// OpenID Connect `login_hint`: a username to prefill on the login page.
    pub login_hint: Option<String>,
    /// The `sub` of a valid `id_token_hint`: the user the client believes is logged in.
    pub hinted_user_id: Option<String>,
    /// RFC 9449 §10: the thumbprint of the DPoP key the code will be bound to.
    pub dpop_jkt: Option<String>,
    /// Whether errors may be sent to the redirect URI without asking anyone: the client is an
    /// operator's, or the logged-in user has approved it before (see
    /// [`Authorization::validate_request`]).
    pub redirect_errors: bool,
}

/// The login level a request asks for (OpenID Connect Core §3.1.2.1 `acr_values`, §5.5.1.1
/// `acr` as a requested claim).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AcrRequest {
    /// The weakest level that satisfies the request.
    pub level: Level,
    /// Essential (`"essential": true` in `claims`): a login that cannot reach it is refused
    /// with `unmet_authentication_requirements`; otherwise a lower level is issued.
    pub essential: bool,
}

impl AcrRequest {
    /// From `acr_values` (values in order of preference: the first one this server knows) and
    /// the `claims` parameter (an `acr` request for the ID token or UserInfo; its `values`, or
    /// `value`, the weakest of which satisfies it). Unknown values are ignored (Core §5.5.1.1:
    /// they are requests); a `claims` value that is not JSON is an error.
    pub fn parse(acr_values: Option<&str>, claims: Option<&str>) -> Result<Option<AcrRequest>, Error> {
        let mut request = acr_values
            .and_then(|values| values.split(' ').find_map(Level::parse))
            .map(|level| AcrRequest {
                level,
                essential: false,
            });
        let Some(claims) = claims else { return Ok(request) };
        let claims: serde_json::Value = serde_json::from_str(claims)
            .map_err(|_| Error::invalid_request("the claims parameter must be a JSON object"))?;
        if !claims.is_object() {
            return Err(Error::invalid_request("the claims parameter must be a JSON object"));
        }
        for member in ["id_token", "userinfo"] {
            let acr = &claims[member]["acr"];
            if !acr.is_object() {
                continue;
            }
            let values: Vec<&str> = match (&acr["values"], &acr["value"]) {
                (serde_json::Value::Array(values), _) => values.iter().filter_map(|v| v.as_str()).collect(),
                (_, serde_json::Value::String(value)) => vec![value.as_str()],
                _ => Vec::new(),
            };
            let Some(level) = values.iter().filter_map(|v| Level::parse(v)).min() else {
                continue;
            };
            let essential = acr["essential"] == serde_json::Value::Bool(true);
            request = Some(match request {
                // The stronger of the two asks, essential if either is.
                Some(earlier) => AcrRequest {
                    level: earlier.level.max(level),
                    essential: earlier.essential || essential,
                },
                None => AcrRequest { level, essential },
            });
        }
        Ok(request)
    }
}

/// The OpenID Connect `prompt` parameter (Core §3.1.2.1).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Prompt {
    /// Show no page: answer `login_required` or `consent_required` instead.
    pub none: bool,
    /// Log in again even with a live session (`select_account` means the same here: the
    /// login page is where another account is chosen).
    pub login: bool,
    /// Ask for consent again even if the user approved these scopes before.
    pub consent: bool,
}

impl Prompt {
    /// Parses the space-separated values; `none` must stand alone.
    pub fn parse(value: Option<&str>) -> Result<Prompt, Error> {
        let mut prompt = Prompt::default();
        for word in value.unwrap_or_default().split(' ').filter(|w| !w.is_empty()) {
            match word {
                "none" => prompt.none = true,
                "login" | "select_account" => prompt.login = true,
                "consent" => prompt.consent = true,
                _ => {
                    return Err(Error::invalid_request(format!(
                        "prompt {word:?} is not supported (none, login, consent, select_account)"
                    )))
                }
            }
        }
        if prompt.none && (prompt.login || prompt.consent) {
            return Err(Error::invalid_request(
                "prompt=none cannot be combined with other values",
            ));
        }
        Ok(prompt)
    }
}

/// Where an authorization request's parameters come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Origin {
    /// The browser's query string.
    Query,
    /// A request pushed earlier (RFC 9126), which the browser named by its `request_uri`.
    Pushed,
    /// A request being pushed now: every error is answered to the client, never redirected.
    Pushing,
}

/// The two kinds of authorization error (RFC 6749 §4.1.2.1).
#[derive(Debug)]
pub enum AuthorizeError {
    /// The client or redirect URI cannot be trusted: tell the user, never redirect.
    Show(Error),
    /// Everything else: send the error to the client's (verified) redirect URI.
    Redirect(String),
}

impl Authorization {
    /// Validates an authorization request. Client and redirect URI are checked first, so that
    /// no error is ever redirected to a URI that was not registered for the client.
    ///
    /// A redirect URI that anyone could register (a client made in the pages or by dynamic
    /// registration) is trusted with errors only once the user has approved the client: until
    /// then the error is shown instead, so such a client's authorization URL cannot serve as an
    /// open redirector to its redirect URI (RFC 9700 §4.11.2; review finding 10), for visitors
    /// who are logged in as much as for those who are not. `user_id` is the logged-in user's.
    /// `origin` says where the parameters came from: a client that must push its requests
    /// (RFC 9126 §5) is refused with them in the query.
    pub(super) async fn validate_request(
        &self,
        pairs: &[(String, String)],
        user_id: Option<&str>,
        caller: Option<&str>,
        origin: Origin,
    ) -> Result<AuthorizationRequest, AuthorizeError> {
        let params = Params::new(pairs);
        let show = AuthorizeError::Show;
        let client_id = params
            .get("client_id")
            .map_err(show)?
            .ok_or_else(|| show(Error::invalid_request("client_id is missing")))?;
        let client = self
            .clients
            .resolve_client_for(client_id, caller)
            .await
            .map_err(show)?
            .ok_or_else(|| show(Error::new(ErrorCode::InvalidClient, "unknown client")))?;
        if origin == Origin::Query
            && (self.config.require_pushed_authorization_requests
                || client.policy.require_pushed_authorization_requests)
        {
            return Err(show(Error::invalid_request(
                "this client must push its authorization requests to the pushed authorization request endpoint first (RFC 9126)",
            )));
        }
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

        // From here on the redirect URI is the client's: errors go back to the client (if its
        // redirect URI may be sent to without a login, see above).
        let redirect_errors = origin != Origin::Pushing
            && (crate::oauth::client::operator_made(&client)
                || match user_id {
                    Some(user_id) => self
                        .consents
                        .get_consent(user_id, &client.client_id)
                        .await
                        .map_err(|e| show(e.into()))?
                        .is_some(),
                    None => false,
                });
        let state_param = params.get("state");
        let state = state_param.as_ref().ok().copied().flatten().map(str::to_string);
        let redirect = |error: Error| {
            if redirect_errors {
                AuthorizeError::Redirect(self.error_redirect(&redirect_uri, &error, state.as_deref()))
            } else {
                AuthorizeError::Show(error)
            }
        };
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
            crate::oauth::scope::is_known(&self.config, t)
        })
        .map_err(redirect)?;
        if scope.contains(scope::ADMIN_SCOPE) {
            return Err(redirect(Error::new(
                ErrorCode::InvalidScope,
                "the admin scope is only issued to admin clients through client_credentials",
            )));
        }
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
            .clients
            .resolve_audience(&client, params.get("resource").map_err(redirect)?)
            .map_err(redirect)?;
        // OpenID Connect Core §3.1.2.1 and §6: request objects are not supported. A pushed
        // request's `request_uri` (RFC 9126) was resolved before the request got here; any
        // other would name a request object.
        for (name, code) in [
            ("request", ErrorCode::RequestNotSupported),
            ("request_uri", ErrorCode::RequestUriNotSupported),
            ("registration", ErrorCode::RegistrationNotSupported),
        ] {
            if params.get(name).map_err(redirect)?.is_some() {
                return Err(redirect(Error::new(
                    code,
                    format!("the {name} parameter is not supported"),
                )));
            }
        }
        if let Some(mode) = params.get("response_mode").map_err(redirect)? {
            if mode != "query" {
                return Err(redirect(Error::invalid_request(
                    "only response_mode=query is supported",
                )));
            }
        }
        let prompt = Prompt::parse(params.get("prompt").map_err(redirect)?).map_err(redirect)?;
        let max_age = match params.get("max_age").map_err(redirect)? {
            None => None,
            Some(value) => Some(
                value
                    .parse::<u32>()
                    .map_err(|_| redirect(Error::invalid_request("max_age must be a number of seconds")))?
                    as i64,
            ),
        };
        let acr = AcrRequest::parse(
            params.get("acr_values").map_err(redirect)?,
            params.get("claims").map_err(redirect)?,
        )
        .map_err(redirect)?;
        // A client that requires two factors asks for them, essentially, in every request.
        let acr = match client.policy.require_mfa {
            true => Some(AcrRequest {
                level: acr.map_or(Level::MultiFactor, |asked| asked.level.max(Level::MultiFactor)),
                essential: true,
            }),
            false => acr,
        };
        let nonce = params.get("nonce").map_err(redirect)?;
        if nonce.is_some_and(|n| n.len() > crate::oauth::oidc::MAX_NONCE_LEN) {
            return Err(redirect(Error::invalid_request(format!(
                "nonce is longer than {} characters",
                crate::oauth::oidc::MAX_NONCE_LEN
            ))));
        }
        let login_hint = params.get("login_hint").map_err(redirect)?;
        // Core §3.1.2.1: an ID token we issued to this client, possibly expired.
        let hinted_user_id = match params.get("id_token_hint").map_err(redirect)? {
            None => None,
            Some(hint) => {
                let claims = self
                    .keys
                    .current()
                    .verify_jwt_ignoring_expiry(hint, "JWT", &self.issuer)
                    .filter(|claims| claims["aud"] == client.client_id.as_str())
                    .ok_or_else(|| {
                        redirect(Error::invalid_request(
                            "id_token_hint is not an ID token this server issued to this client",
                        ))
                    })?;
                claims["sub"].as_str().map(str::to_string)
            }
        };
        // RFC 9449 §10: a base64url SHA-256 thumbprint (43 characters).
        let dpop_jkt = match params.get("dpop_jkt").map_err(redirect)? {
            None => None,
            Some(jkt)
                if jkt.len() == 43 && jkt.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_') =>
            {
                Some(jkt.to_string())
            }
            Some(_) => {
                return Err(redirect(Error::invalid_request(
                    "dpop_jkt must be the base64url SHA-256 thumbprint of a JWK (RFC 7638)",
                )))
            }
        };
        Ok(AuthorizationRequest {
            client,
            dpop_jkt,
            redirect_uri,
            redirect_uri_given,
            scope,
            state,
            code_challenge,
            audience,
            prompt,
            max_age,
            acr,
            nonce: nonce.map(str::to_string),
            login_hint: login_hint.map(str::to_string),
            hinted_user_id,
            redirect_errors,
        })
    }

    fn pkce_required(&self, client: &ClientRecord) -> bool {
        // RFC 9700 §2.1.1: public clients MUST use PKCE; we require it of everyone by default.
        client.client_type == crate::store::ClientType::Public || self.config.require_pkce
    }
}

#[cfg(test)]
mod acr_tests {
    use super::*;

    const MFA: &str = "urn:tessera:acr:multi-factor";
    const ONE: &str = "urn:tessera:acr:single-factor";

    #[test]
    fn acr_values_are_wishes_and_claims_may_make_them_essential() {
        assert_eq!(AcrRequest::parse(None, None).unwrap(), None);
        let wish = AcrRequest::parse(Some(&format!("urn:other {MFA} {ONE}")), None).unwrap();
        assert_eq!(
            wish,
            Some(AcrRequest {
                level: Level::MultiFactor,
                essential: false
            }),
            "the first value this server knows"
        );
        assert_eq!(AcrRequest::parse(Some("urn:unknown"), None).unwrap(), None);
        let essential = format!(r#"{{"id_token":{{"acr":{{"essential":true,"values":["{MFA}","{ONE}"]}}}}}}"#);
        let asked = AcrRequest::parse(None, Some(&essential)).unwrap().unwrap();
        assert_eq!(
            (asked.level, asked.essential),
            (Level::SingleFactor, true),
            "the weakest value satisfies"
        );
        let one = format!(r#"{{"userinfo":{{"acr":{{"value":"{MFA}"}}}}}}"#);
        let asked = AcrRequest::parse(Some(ONE), Some(&one)).unwrap().unwrap();
        assert_eq!(
            (asked.level, asked.essential),
            (Level::MultiFactor, false),
            "the stronger ask"
        );
        assert!(AcrRequest::parse(None, Some("[1]")).is_err());
        assert!(AcrRequest::parse(None, Some("{")).is_err());
        assert_eq!(
            AcrRequest::parse(None, Some(r#"{"id_token":{"email":null}}"#)).unwrap(),
            None
        );
    }
}
