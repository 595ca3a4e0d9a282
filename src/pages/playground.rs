//! `/o/playground/`: a test consumer built into Tessera (on with `tessera serve --dev`, or
//! `playground = true`). It plays an OAuth client for the logged-in developer: builds the
//! authorization link with PKCE and a state, receives the code at its own callback, exchanges
//! it, shows the tokens and their decoded claims, refreshes, and calls an API URL with the
//! access token. Its per-browser state (including a client secret typed into it) is sealed
//! (AES-256-GCM) in the store's scratch space: in memory for the embedded store, in the
//! shared database for a cluster, and gone an hour after its last change.

use std::sync::Arc;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use minijinja::context;
use poem::http::StatusCode;
use poem::web::Data;
use poem::{handler, Body, Request, Response};
use serde::{Deserialize, Serialize};

use super::{error_page, page, redirect, Templates};
use crate::oauth::authorize::Params;
use crate::oauth::client::{AuthMethod, ClientCredentials};
use crate::oauth::endpoints as paths;
use crate::oauth::grant::TokenRequest;
use crate::oauth::session::Session;
use crate::oauth::token::TokenResponse;
use crate::oauth::{now, random_token, Error, ErrorCode, Provider};
use crate::store::ScratchRoom;
use crate::urlencoded::parse_pairs;

/// The most of an API response body read (while it streams in) and shown. It is kept in the
/// browser's playground state, a scratch value, which holds at most
/// [`crate::store::MAX_SCRATCH_VALUE_BYTES`] with the tokens beside it.
const MAX_BODY: usize = 8 * 1024;
/// How long a browser's playground state is kept after its last change.
const STATE_TTL_SECS: i64 = 3600;
/// The scratch purpose of playground states.
const PURPOSE: &str = "playground";

/// The tokens the playground holds.
#[derive(Default, Clone, Serialize, Deserialize)]
struct Tokens {
    access_token: String,
    refresh_token: Option<String>,
    scope: String,
    expires_in: u64,
    obtained_at: i64,
}

impl From<TokenResponse> for Tokens {
    fn from(t: TokenResponse) -> Tokens {
        Tokens {
            access_token: t.access_token,
            refresh_token: t.refresh_token,
            scope: t.scope,
            expires_in: t.expires_in,
            obtained_at: now(),
        }
    }
}

/// One browser's playground session, kept (sealed) in the store's scratch space, so every
/// node of a cluster sees it.
#[derive(Default, Clone, Serialize, Deserialize)]
struct State {
    client_id: String,
    client_secret: Option<String>,
    scope: String,
    verifier: Option<String>,
    state: Option<String>,
    authorize_url: Option<String>,
    tokens: Option<Tokens>,
    api_url: String,
    api_result: Option<(u16, String)>,
    error: Option<String>,
}

/// This browser's playground state (a fresh one if it has none or it could not be read).
async fn load_state(provider: &Provider, visitor: &Session) -> State {
    match provider.scratch.get_sealed(PURPOSE, &visitor.id).await {
        Ok(state) => state.unwrap_or_default(),
        Err(e) => {
            tracing::warn!(error = %e, "the playground state could not be read");
            State::default()
        }
    }
}

async fn save_state(provider: &Provider, visitor: &Session, state: State) {
    if let Err(e) = provider
        .scratch
        .put_sealed(PURPOSE, &visitor.id, &state, STATE_TTL_SECS, ScratchRoom::Start)
        .await
    {
        tracing::warn!(error = %e, "the playground state could not be kept");
    }
}

fn callback_url(provider: &Provider) -> String {
    provider.url(paths::PLAYGROUND_CALLBACK)
}

fn decode_segment(jwt: &str, index: usize) -> String {
    jwt.split('.')
        .nth(index)
        .and_then(|segment| URL_SAFE_NO_PAD.decode(segment).ok())
        .and_then(|bytes| serde_json::from_slice::<serde_json::Value>(&bytes).ok())
        .and_then(|value| serde_json::to_string_pretty(&value).ok())
        .unwrap_or_else(|| "(not a JWT)".into())
}

/// Every playground request: 404 while the playground is off, then the logged-in visitor
/// (or a redirect to the login page, with `status`).
async fn enter(
    provider: &Provider,
    templates: &Templates,
    req: &Request,
    status: StatusCode,
) -> Result<Session, Box<Response>> {
    if !provider.config.playground {
        let error = Error::new(
            ErrorCode::NotFound,
            "the playground is off; start the server with `tessera serve --dev` to use it",
        );
        return Err(Box::new(error_page(templates, &error)));
    }
    super::visitor(provider, templates, req, status).await
}

async fn show_page(provider: &Provider, templates: &Templates, visitor: &Session, state: &State) -> Response {
    let apps: Vec<_> = provider
        .clients
        .clients_owned_by(&visitor.user.user_id)
        .await
        .unwrap_or_default()
        .iter()
        .map(|c| context! { client_id => &c.client_id, name => &c.name })
        .collect();
    let tokens = state.tokens.as_ref().map(|t| {
        let expires_at = t.obtained_at + t.expires_in as i64;
        context! {
            access_token => &t.access_token,
            refresh_token => &t.refresh_token,
            scope => &t.scope,
            expires_at,
            expires_at_text => format!("in {} s", (expires_at - now()).max(0)),
            header => decode_segment(&t.access_token, 0),
            claims => decode_segment(&t.access_token, 1),
        }
    });
    let scope = if state.scope.is_empty() {
        provider
            .config
            .scopes
            .iter()
            .map(|s| s.name.clone())
            .collect::<Vec<_>>()
            .join(" ")
    } else {
        state.scope.clone()
    };
    let html = templates.render(
        "playground.html",
        context! {
            callback => callback_url(provider),
            apps,
            client_id => &state.client_id,
            scope,
            authorize_url => &state.authorize_url,
            tokens,
            api_url => &state.api_url,
            api_status => state.api_result.as_ref().map(|r| r.0),
            api_body => state.api_result.as_ref().map(|r| &r.1),
            error => &state.error,
            csrf_token => &visitor.record.csrf_token,
        },
    );
    page(StatusCode::OK, html)
}

/// Starts an authorization for the state's client and scope, with `extra` parameters: a fresh
/// PKCE verifier and state, and the URL to follow.
fn new_authorization(provider: &Provider, state: &mut State, extra: &[(&str, &str)]) {
    let verifier = random_token(32);
    let challenge = URL_SAFE_NO_PAD.encode(ring::digest::digest(&ring::digest::SHA256, verifier.as_bytes()));
    let nonce = random_token(16);
    let mut query = url::form_urlencoded::Serializer::new(String::new());
    query
        .append_pair("response_type", "code")
        .append_pair("client_id", &state.client_id)
        .append_pair("redirect_uri", &callback_url(provider))
        .append_pair("scope", &state.scope)
        .append_pair("state", &nonce)
        .append_pair("code_challenge", &challenge)
        .append_pair("code_challenge_method", "S256");
    for (name, value) in extra {
        query.append_pair(name, value);
    }
    state.authorize_url = Some(format!("{}?{}", provider.url(paths::AUTHORIZE), query.finish()));
    state.verifier = Some(verifier);
    state.state = Some(nonce);
}

/// The `acr_values` and `max_age` of an RFC 9470 `insufficient_user_authentication`
/// challenge, if `header` is one.
fn step_up_challenge(header: &str) -> Option<Vec<(&'static str, String)>> {
    if !header.contains("error=\"insufficient_user_authentication\"") {
        return None;
    }
    let quoted = |name: &str| {
        let start = header.find(&format!("{name}=\""))? + name.len() + 2;
        Some(header[start..start + header[start..].find('"')?].to_string())
    };
    let plain = |name: &str| {
        let start = header.find(&format!("{name}="))? + name.len() + 1;
        let value: String = header[start..].chars().take_while(char::is_ascii_digit).collect();
        (!value.is_empty()).then_some(value)
    };
    let mut asked = Vec::new();
    if let Some(acr_values) = quoted("acr_values") {
        asked.push(("acr_values", acr_values));
    }
    if let Some(max_age) = plain("max_age") {
        asked.push(("max_age", max_age));
    }
    Some(asked)
}

fn credentials(state: &State) -> ClientCredentials {
    ClientCredentials {
        client_id: state.client_id.clone(),
        secret: state.client_secret.clone(),
        method: if state.client_secret.is_some() {
            AuthMethod::Basic
        } else {
            AuthMethod::None
        },
        address: None,
        assertion: None,
        endpoint: paths::TOKEN.into(),
    }
}

/// GET /o/playground/
#[handler]
pub async fn show(req: &Request, provider: Data<&Arc<Provider>>, templates: Data<&Arc<Templates>>) -> Response {
    let (provider, templates) = (provider.0.as_ref(), templates.0.as_ref());
    let visitor = match enter(provider, templates, req, StatusCode::FOUND).await {
        Ok(v) => v,
        Err(response) => return *response,
    };
    show_page(provider, templates, &visitor, &load_state(provider, &visitor).await).await
}

/// POST /o/playground/: `action` is `start`, `refresh` or `call`; then back to the page.
#[handler]
pub async fn act(
    req: &Request,
    body: Body,
    provider: Data<&Arc<Provider>>,
    templates: Data<&Arc<Templates>>,
) -> Response {
    let (provider, templates) = (provider.0.as_ref(), templates.0.as_ref());
    let visitor = match enter(provider, templates, req, StatusCode::SEE_OTHER).await {
        Ok(v) => v,
        Err(response) => return *response,
    };
    let form = match super::checked_form(templates, &visitor, body).await {
        Ok(f) => f,
        Err(response) => return *response,
    };
    let form = Params::new(&form);
    let field = |name: &str| form.get(name).ok().flatten().map(str::to_string);
    let mut state = load_state(provider, &visitor).await;
    state.error = None;
    match field("action").as_deref() {
        Some("start") => {
            state = State {
                client_id: field("app").or_else(|| field("client_id")).unwrap_or_default(),
                client_secret: field("client_secret"),
                scope: field("scope").unwrap_or_default(),
                ..State::default()
            };
            new_authorization(provider, &mut state, &[]);
        }
        Some("refresh") => {
            let refresh_token = state.tokens.as_ref().and_then(|t| t.refresh_token.clone());
            let request = TokenRequest {
                grant_type: Some("refresh_token".into()),
                refresh_token,
                ..TokenRequest::default()
            };
            match provider
                .tokens
                .token(&credentials(&state), request, &Default::default())
                .await
            {
                Ok(tokens) => state.tokens = Some(tokens.into()),
                Err(e) => state.error = Some(format!("refresh failed: {}: {}", e.code.as_str(), e.description)),
            }
        }
        Some("call") => {
            let url = field("api_url").unwrap_or_default();
            state.api_url = url.clone();
            let token = state
                .tokens
                .as_ref()
                .map(|t| t.access_token.clone())
                .unwrap_or_default();
            state.api_result = None;
            // Through the outbound client (review finding 7): no redirects followed, so the
            // token goes nowhere but the URL typed; the body read only up to MAX_BODY; public
            // addresses only unless the operator allows private ones.
            let call = provider
                .outbound
                .get(&url, false, Some(&token), "application/json, */*", MAX_BODY)
                .await;
            match call {
                Ok(fetched) => {
                    let mut body = String::from_utf8_lossy(&fetched.body).into_owned();
                    if fetched.truncated {
                        body.push_str(&format!("\n… (cut off after {MAX_BODY} bytes)"));
                    }
                    // RFC 9470: the API wants a stronger or more recent login; a new
                    // authorization asks for what its challenge names.
                    let step_up = fetched.www_authenticate.as_deref().and_then(step_up_challenge);
                    if fetched.status == 401 && !state.client_id.is_empty() {
                        if let Some(asked) = step_up {
                            let named: Vec<String> = asked.iter().map(|(k, v)| format!("{k}={v}")).collect();
                            state.error = Some(format!(
                                "the API asks for a stronger or more recent login ({}): authorize again with the link below",
                                named.join(", ")
                            ));
                            let asked: Vec<(&str, &str)> = asked.iter().map(|(k, v)| (*k, v.as_str())).collect();
                            new_authorization(provider, &mut state, &asked);
                        }
                    }
                    state.api_result = Some((fetched.status, body));
                }
                Err(e) => state.error = Some(format!("the call failed: {e}")),
            }
        }
        _ => state.error = Some("unknown action".into()),
    }
    save_state(provider, &visitor, state).await;
    redirect(StatusCode::SEE_OTHER, paths::PLAYGROUND)
}

/// GET /o/playground/callback/: where the authorization response lands; exchanges the code.
#[handler]
pub async fn callback(req: &Request, provider: Data<&Arc<Provider>>, templates: Data<&Arc<Templates>>) -> Response {
    let (provider, templates) = (provider.0.as_ref(), templates.0.as_ref());
    let visitor = match enter(provider, templates, req, StatusCode::FOUND).await {
        Ok(v) => v,
        Err(response) => return *response,
    };
    let pairs = parse_pairs(req.uri().query().unwrap_or_default().as_bytes()).unwrap_or_default();
    let params = Params::new(&pairs);
    let get = |name: &str| params.get(name).ok().flatten();
    let mut state = load_state(provider, &visitor).await;
    state.error = None;
    if state.state.is_none() || get("state") != state.state.as_deref() {
        state.error = Some("the callback's state does not match the request this playground made".into());
    } else if let Some(error) = get("error") {
        state.error = Some(format!(
            "authorization failed: {error}: {}",
            get("error_description").unwrap_or_default()
        ));
    } else if get("iss") != Some(provider.issuer.as_str()) {
        state.error = Some("the callback's iss is not this server (RFC 9207)".into());
    } else {
        let request = TokenRequest {
            grant_type: Some("authorization_code".into()),
            code: get("code").map(str::to_string),
            redirect_uri: Some(callback_url(provider)),
            code_verifier: state.verifier.clone(),
            ..TokenRequest::default()
        };
        match provider
            .tokens
            .token(&credentials(&state), request, &Default::default())
            .await
        {
            Ok(tokens) => state.tokens = Some(tokens.into()),
            Err(e) => {
                state.error = Some(format!(
                    "the code exchange failed: {}: {}",
                    e.code.as_str(),
                    e.description
                ))
            }
        }
        // A state is good for one callback.
        state.state = None;
    }
    save_state(provider, &visitor, state).await;
    redirect(StatusCode::SEE_OTHER, paths::PLAYGROUND)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_step_up_challenge_names_what_to_ask_for() {
        let header = r#"Bearer realm="api", error="insufficient_user_authentication", error_description="more", acr_values="urn:a urn:b", max_age=300, DPoP algs="ES256""#;
        assert_eq!(
            step_up_challenge(header),
            Some(vec![
                ("acr_values", "urn:a urn:b".to_string()),
                ("max_age", "300".to_string())
            ])
        );
        assert_eq!(step_up_challenge(r#"Bearer error="invalid_token""#), None);
        let only_age = r#"Bearer error="insufficient_user_authentication", max_age=0"#;
        assert_eq!(step_up_challenge(only_age), Some(vec![("max_age", "0".to_string())]));
    }
}
