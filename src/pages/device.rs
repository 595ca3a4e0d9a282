//! `/o/device/`: the verification page of the device authorization grant (RFC 8628 §3.3). A
//! logged-in user enters the code their device shows (or follows `verification_uri_complete`,
//! which fills it in), sees which app asks for what, and allows or denies. The core decides
//! (`Authorization::device_prompt`, `Authorization::device_decide`); this renders it. Anonymous
//! visitors go through the login page and come back with the code still filled in.

use std::sync::Arc;

use minijinja::context;
use poem::http::{header, StatusCode};
use poem::web::Data;
use poem::{handler, Body, Request, Response};

use super::{checked_form, error_page, page, query_pairs, visitor, Templates};
use crate::http::error::status_of;
use crate::net::ClientAddress;
use crate::oauth::authorize::Decision;
use crate::oauth::device::DevicePrompt;
use crate::oauth::endpoints as paths;
use crate::oauth::params::Params;
use crate::oauth::session::Session;
use crate::oauth::{Error, ErrorCode, Provider};

/// GET /o/device/: the code form, prefilled from `?user_code=`.
#[handler]
pub(super) async fn show(req: &Request, provider: Data<&Arc<Provider>>, templates: Data<&Arc<Templates>>) -> Response {
    let (provider, templates) = (provider.0.as_ref(), templates.0.as_ref());
    let session = try_page!(visitor(provider, templates, req, StatusCode::FOUND).await);
    let pairs = query_pairs(req).unwrap_or_default();
    let user_code = Params::new(&pairs).get("user_code").ok().flatten().unwrap_or_default();
    code_form(templates, &session, user_code, None, StatusCode::OK)
}

/// POST /o/device/: a typed code (shows the confirmation), or the user's Allow or Deny.
#[handler]
pub(super) async fn submit(
    req: &Request,
    body: Body,
    provider: Data<&Arc<Provider>>,
    templates: Data<&Arc<Templates>>,
) -> Response {
    let (provider, templates) = (provider.0.as_ref(), templates.0.as_ref());
    let session = try_page!(visitor(provider, templates, req, StatusCode::SEE_OTHER).await);
    let form = try_page!(checked_form(templates, &session, body).await);
    let form = Params::new(&form);
    let user_code = form.get("user_code").ok().flatten().unwrap_or_default();
    let address = ClientAddress::of(req).key().unwrap_or_default();
    let decision = match form.get("decision").ok().flatten() {
        None => None,
        Some("allow") => Some(Decision::Allow),
        Some("deny") => Some(Decision::Deny),
        Some(_) => return error_page(templates, &Error::invalid_request("decision must be allow or deny")),
    };
    match decision {
        None => match provider
            .authorization
            .device_prompt(user_code, &session, &address)
            .await
        {
            Ok(prompt) => confirmation(templates, &session, &prompt),
            Err(e) => refused(templates, &session, user_code, e),
        },
        Some(decision) => match provider
            .authorization
            .device_decide(user_code, &session, &address, decision)
            .await
        {
            Ok(()) => {
                let done = if decision == Decision::Allow { "allow" } else { "deny" };
                let html = templates.render("device.html", context! { done, username => &session.user.username });
                page(StatusCode::OK, html)
            }
            Err(e) => refused(templates, &session, user_code, e),
        },
    }
}

fn code_form(
    templates: &Templates,
    session: &Session,
    user_code: &str,
    error: Option<&str>,
    status: StatusCode,
) -> Response {
    let html = templates.render(
        "device.html",
        context! {
            username => &session.user.username,
            user_code,
            error,
            action => paths::DEVICE,
            csrf_token => session.csrf_token(),
        },
    );
    page(status, html)
}

fn confirmation(templates: &Templates, session: &Session, prompt: &DevicePrompt) -> Response {
    let scopes: Vec<_> = prompt
        .scopes
        .iter()
        .map(|(name, description)| context! { name, description })
        .collect();
    let html = templates.render(
        "device.html",
        context! {
            prompt => context! {
                user_code => &prompt.user_code,
                client_name => &prompt.client_name,
                client_id_prefix => &prompt.client_id_prefix,
                self_registered => prompt.self_registered,
                document_id => prompt.document.as_ref().map(|(id, _)| id),
                document_host => prompt.document.as_ref().map(|(_, host)| host),
                scopes,
            },
            username => &session.user.username,
            action => paths::DEVICE,
            csrf_token => session.csrf_token(),
        },
    );
    page(StatusCode::OK, html)
}

/// A code that was not accepted: the form again with the reason (429 with `Retry-After` while
/// wrong codes are locked out); failures on our side get the error page.
fn refused(templates: &Templates, session: &Session, user_code: &str, error: Error) -> Response {
    // The form again, not an error page: its status is the code's own (an unusable client's
    // 401 included), its `Retry-After` the whole seconds the text beside it names.
    let status = status_of(error.code);
    if status.is_server_error() {
        return error_page(templates, &error);
    }
    let mut response = code_form(templates, session, user_code, Some(&error.description), status);
    if error.code == ErrorCode::RateLimited {
        let wait = error.retry_after.unwrap_or_default().as_secs().max(1);
        if let Ok(value) = wait.to_string().parse() {
            response.headers_mut().insert(header::RETRY_AFTER, value);
        }
    }
    response
}
