//! `/o/authorize/`: the browser side of the authorization endpoint. The core decides the step
//! (`Authorization::authorize`, `Authorization::decide`); this renders it: the login page, the
//! consent page, a redirect, or an error shown on the spot.

use std::sync::Arc;

use minijinja::context;
use poem::http::StatusCode;
use poem::web::Data;
use poem::{handler, Body, Request, Response};

use super::{
    check_csrf, current_session, error_page, factor_redirect, form_pairs, login_redirect, page, query_pairs, redirect,
    Templates,
};
use crate::net::ClientAddress;
use crate::oauth::authorize::{AuthorizeStep, ConsentPrompt, Decision};
use crate::oauth::params::Params;
use crate::oauth::session::Session;
use crate::oauth::{Error, Provider};

/// GET /o/authorize/: the authorization request as the browser brings it.
#[handler]
pub(super) async fn authorize(
    req: &Request,
    provider: Data<&Arc<Provider>>,
    templates: Data<&Arc<Templates>>,
) -> Response {
    let (provider, templates) = (provider.0.as_ref(), templates.0.as_ref());
    let session = match current_session(provider, req).await {
        Ok(session) => session,
        Err(e) => return error_page(templates, &e),
    };
    let pairs = match query_pairs(req) {
        Ok(pairs) => pairs,
        Err(e) => return error_page(templates, &e),
    };
    let caller = ClientAddress::of(req).key();
    let step = provider
        .authorization
        .authorize(&pairs, session.as_ref(), caller.as_deref())
        .await;
    respond(templates, req, session.as_ref(), step, StatusCode::FOUND)
}

/// POST /o/authorize/: the user's Allow or Deny on the consent page.
#[handler]
pub(super) async fn decide(
    req: &Request,
    body: Body,
    provider: Data<&Arc<Provider>>,
    templates: Data<&Arc<Templates>>,
) -> Response {
    let (provider, templates) = (provider.0.as_ref(), templates.0.as_ref());
    let session = match current_session(provider, req).await {
        Ok(session) => session,
        Err(e) => return error_page(templates, &e),
    };
    let pairs = match query_pairs(req) {
        Ok(pairs) => pairs,
        Err(e) => return error_page(templates, &e),
    };
    let form = match form_pairs(body).await {
        Ok(form) => form,
        Err(e) => return error_page(templates, &e),
    };
    let form = Params::new(&form);
    if let Some(session) = &session {
        try_page!(check_csrf(templates, session, &form));
    }
    let decision = match form.get("decision").ok().flatten() {
        Some("allow") => Decision::Allow,
        Some("deny") => Decision::Deny,
        _ => return error_page(templates, &Error::invalid_request("decision must be allow or deny")),
    };
    let step = provider.authorization.decide(&pairs, session.as_ref(), decision).await;
    respond(templates, req, session.as_ref(), step, StatusCode::SEE_OTHER)
}

/// The page for a step; redirects use `status` (302 after a GET, 303 after a POST).
fn respond(
    templates: &Templates,
    req: &Request,
    session: Option<&Session>,
    step: AuthorizeStep,
    status: StatusCode,
) -> Response {
    match step {
        AuthorizeStep::Login { return_to } => login_redirect(status, &return_to),
        AuthorizeStep::Factor { return_to } => factor_redirect(status, &return_to),
        AuthorizeStep::Redirect(location) => redirect(status, &location),
        AuthorizeStep::Show(error) => error_page(templates, &error),
        AuthorizeStep::Consent(prompt) => match session {
            Some(session) => consent_page(templates, req, session, &prompt),
            None => error_page(templates, &Error::server_error("a consent page without a session")),
        },
    }
}

fn consent_page(templates: &Templates, req: &Request, session: &Session, prompt: &ConsentPrompt) -> Response {
    let scopes: Vec<_> = prompt
        .scopes
        .iter()
        .map(|(name, description)| context! { name, description })
        .collect();
    let html = templates.render(
        "consent.html",
        context! {
            client_name => &prompt.request.client.name,
            username => &session.user.username,
            scopes,
            redirect_host => &prompt.redirect_host,
            // Names can be copied; the id and the redirect host tell look-alikes apart.
            client_id_prefix => &prompt.client_id_prefix,
            client_id => &prompt.request.client.client_id,
            self_registered => prompt.self_registered,
            document_host => &prompt.document_host,
            loopback_redirect => prompt.loopback_redirect && prompt.document_host.is_some(),
            action => format!("{}?{}", req.uri().path(), req.uri().query().unwrap_or_default()),
            csrf_token => session.csrf_token(),
        },
    );
    page(StatusCode::OK, html)
}
