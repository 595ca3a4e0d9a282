//! The home page, and `/o/authorized_tokens/`: the apps a user approved, each of which they
//! can withdraw.

use std::sync::Arc;

use minijinja::context;
use poem::http::StatusCode;
use poem::web::Data;
use poem::{handler, Body, Request, Response};

use super::{checked_form, current_session, date, error_page, page, redirect, visitor, Templates};
use crate::net::ClientAddress;
use crate::oauth::endpoints as paths;
use crate::oauth::params::Params;
use crate::oauth::{Error, Provider};

/// GET /: what this server is, and links for developers and (logged in) users.
#[handler]
pub(super) async fn home(req: &Request, provider: Data<&Arc<Provider>>, templates: Data<&Arc<Templates>>) -> Response {
    let (username, csrf_token, operator) = match current_session(provider.0, req).await {
        Ok(Some(session)) => (
            Some(session.user.username),
            Some(session.record.csrf_token),
            session.user.operator,
        ),
        Ok(None) => (None, None, false),
        Err(e) => return error_page(templates.0, &e),
    };
    let playground = provider.config.playground;
    page(
        StatusCode::OK,
        templates.render("home.html", context! { username, csrf_token, playground, operator }),
    )
}

/// GET /o/authorized_tokens/: the apps this user approved.
#[handler]
pub(super) async fn authorized_apps(
    req: &Request,
    provider: Data<&Arc<Provider>>,
    templates: Data<&Arc<Templates>>,
) -> Response {
    let (provider, templates) = (provider.0.as_ref(), templates.0.as_ref());
    let session = try_page!(visitor(provider, templates, req, StatusCode::FOUND).await);
    let caller = ClientAddress::of(req).key();
    let apps = match provider
        .authorization
        .authorized_apps(session.user_id(), caller.as_deref())
        .await
    {
        Ok(apps) => apps,
        Err(e) => return error_page(templates, &e),
    };
    let apps: Vec<_> = apps
        .iter()
        .map(|app| {
            let host = crate::oauth::client::document::document_host(&app.consent.client_id);
            let name = match (&app.client, &host) {
                (Some(client), _) => client.name.clone(),
                (None, Some(host)) => host.clone(),
                (None, None) => "(deleted app)".into(),
            };
            context! {
                name,
                host,
                client_id => &app.consent.client_id,
                first_party => app.client.as_ref().is_some_and(crate::oauth::client::is_first_party),
                scopes => app.consent.scopes.join(" "),
                granted_at => date(app.consent.granted_at),
                updated_at => date(app.consent.updated_at),
            }
        })
        .collect();
    let html = templates.render(
        "authorized_tokens.html",
        context! { username => &session.user.username, apps, csrf_token => session.csrf_token() },
    );
    page(StatusCode::OK, html)
}

/// POST /o/authorized_tokens/: withdraw an app's access.
#[handler]
pub(super) async fn revoke_app(
    req: &Request,
    body: Body,
    provider: Data<&Arc<Provider>>,
    templates: Data<&Arc<Templates>>,
) -> Response {
    let (provider, templates) = (provider.0.as_ref(), templates.0.as_ref());
    let visitor = try_page!(visitor(provider, templates, req, StatusCode::SEE_OTHER).await);
    let form = try_page!(checked_form(templates, &visitor, body).await);
    let form = Params::new(&form);
    let Some(client_id) = form.get("client_id").ok().flatten() else {
        return error_page(templates, &Error::invalid_request("client_id is missing"));
    };
    match provider
        .authorization
        .withdraw_consent(&super::caller(&visitor, req), visitor.user_id(), client_id)
        .await
    {
        Ok(_) => redirect(StatusCode::SEE_OTHER, paths::AUTHORIZED_APPS),
        Err(e) => error_page(templates, &e),
    }
}
