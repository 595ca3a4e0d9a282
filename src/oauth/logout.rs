//! RP-initiated logout (OpenID Connect RP-Initiated Logout 1.0): validating the request and
//! deciding where the browser goes afterwards. Ending the session is the pages' job.

use url::Url;

use super::authorize::Params;
use super::{Error, Provider};
use crate::store::ClientRecord;

/// A logout request that passed every check.
#[derive(Debug, Clone, Default)]
pub struct LogoutRequest {
    /// The relying party, named by the `id_token_hint`'s audience or by `client_id`.
    pub client: Option<ClientRecord>,
    /// The user the `id_token_hint` was issued for.
    pub hinted_user_id: Option<String>,
    /// A registered post-logout redirect URI of `client`, if one was asked for.
    pub post_logout_redirect_uri: Option<String>,
    pub state: Option<String>,
    /// The request's parameters, to carry through a confirmation form.
    pub params: Vec<(String, String)>,
}

/// The parameters a logout request may carry (§2); others are ignored.
const LOGOUT_PARAMS: [&str; 4] = ["id_token_hint", "client_id", "post_logout_redirect_uri", "state"];

impl LogoutRequest {
    /// Whether the user may be logged out without being asked: the relying party proved
    /// (with an ID token we issued) that it speaks for the user whose session this is.
    pub fn is_for(&self, user_id: &str) -> bool {
        self.hinted_user_id.as_deref() == Some(user_id)
    }
}

impl Provider {
    /// Validates a logout request. Every failure is shown to the user, never redirected: an
    /// unverified redirect URI must not be followed (no open redirect).
    pub async fn validate_logout(
        &self,
        pairs: &[(String, String)],
        caller: Option<&str>,
    ) -> Result<LogoutRequest, Error> {
        let params = Params::new(pairs);
        let mut hinted_client_id = None;
        let mut hinted_user_id = None;
        if let Some(hint) = params.get("id_token_hint")? {
            // Usually expired by now, which is fine: it only has to be one we issued.
            let claims = self
                .keys
                .current()
                .verify_jwt_ignoring_expiry(hint, "JWT", &self.issuer)
                .ok_or_else(|| Error::invalid_request("id_token_hint is not an ID token issued by this server"))?;
            hinted_client_id = claims["aud"].as_str().map(str::to_string);
            hinted_user_id = claims["sub"].as_str().map(str::to_string);
        }
        let client_id = match (params.get("client_id")?, hinted_client_id.as_deref()) {
            (Some(given), Some(hinted)) if given != hinted => {
                return Err(Error::invalid_request("client_id is not the audience of id_token_hint"))
            }
            (given, hinted) => given.or(hinted),
        };
        let client = match client_id {
            Some(id) => Some(
                self.clients
                    .find_client_for(id, caller)
                    .await?
                    .ok_or_else(|| Error::invalid_request("unknown client_id"))?,
            ),
            None => None,
        };
        let post_logout_redirect_uri = match params.get("post_logout_redirect_uri")? {
            None => None,
            Some(uri) => {
                let client = client.as_ref().ok_or_else(|| {
                    Error::invalid_request("post_logout_redirect_uri needs id_token_hint or client_id")
                })?;
                if !client
                    .post_logout_redirect_uris
                    .iter()
                    .any(|registered| registered == uri)
                {
                    return Err(Error::invalid_request(
                        "post_logout_redirect_uri is not registered for this client",
                    ));
                }
                Some(uri.to_string())
            }
        };
        Ok(LogoutRequest {
            client,
            hinted_user_id,
            post_logout_redirect_uri,
            state: params.get("state")?.map(str::to_string),
            params: pairs
                .iter()
                .filter(|(k, _)| LOGOUT_PARAMS.contains(&k.as_str()))
                .cloned()
                .collect(),
        })
    }

    /// Where the browser goes after logging out. `ended_session` says whether a logged-in
    /// session was ended. The post-logout redirect URI of a client anyone could register (the
    /// pages, dynamic registration) is followed only for a user who was logged in; for anyone
    /// else it is offered as a link, so the logout URL cannot serve as an open redirector
    /// (RFC 9700 §4.11.2; review finding 10).
    pub fn after_logout(&self, request: &LogoutRequest, ended_session: bool) -> AfterLogout {
        let Some(url) = request
            .post_logout_redirect_uri
            .as_deref()
            .and_then(|uri| Url::parse(uri).ok())
        else {
            return AfterLogout::Done;
        };
        let mut url = url;
        if let Some(state) = &request.state {
            url.query_pairs_mut().append_pair("state", state);
        }
        let trusted = request.client.as_ref().is_some_and(super::client::operator_made);
        if trusted || ended_session {
            AfterLogout::Redirect(url.to_string())
        } else {
            AfterLogout::Offer(url.to_string())
        }
    }
}

/// What the browser sees after logging out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AfterLogout {
    /// Sent on to the client's post-logout redirect URI.
    Redirect(String),
    /// A "logged out" page with a link to it.
    Offer(String),
    /// A "logged out" page.
    Done,
}
