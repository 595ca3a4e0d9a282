//! `/admin/`: the operator's console, server-rendered and usable without JavaScript. Every page
//! needs a signed-in user with the operator role: a visitor not signed in is sent to the login
//! page to come back, anyone else gets 403, before anything is read or changed. Every form
//! carries the session's CSRF token, and the dangerous actions (delete, rotate a secret, retire
//! a key, disable a user) answer a POST without `confirm=yes` with a confirmation page instead.
//!
//! The pages call the same core operations as the admin API and the CLI, each with a
//! [`crate::oauth::audit::Caller`] for the operator, so the core's audit trail says who did it from where.

mod audit;
mod chart;
mod clients;
mod keys;
mod overview;
mod users;

use std::sync::Arc;

use minijinja::{context, Value};
use percent_encoding::{utf8_percent_encode, NON_ALPHANUMERIC};
use poem::http::StatusCode;
use poem::{get, post, Body, EndpointExt, Request, Response, Route};

use super::{
    caller, checked_form, current_session, error_page, form_can_fix, login_redirect, page, visitor, Templates,
};
use crate::oauth::endpoints as paths;
use crate::oauth::params::Params;
use crate::oauth::session::Session;
use crate::oauth::{Error, Provider};

/// Adds the console's pages, under [`paths::CONSOLE`], to `route`.
pub(super) fn mount(route: Route, templates: Arc<Templates>) -> Route {
    let at = |rest: &str| format!("{}{rest}", paths::CONSOLE);
    let t = || templates.clone();
    route
        .at(paths::CONSOLE, get(overview::show).data(t()))
        .at(paths::CONSOLE.trim_end_matches('/'), get(to_console))
        .at(at("clients"), get(clients::list).data(t()))
        .at(
            at("clients/new"),
            get(clients::new_form).post(clients::create).data(t()),
        )
        .at(at("clients/:id"), get(clients::detail).data(t()))
        .at(
            at("clients/:id/edit"),
            get(clients::edit_form).post(clients::edit).data(t()),
        )
        .at(at("clients/:id/rotate-secret"), post(clients::rotate_secret).data(t()))
        .at(at("clients/:id/delete"), post(clients::delete).data(t()))
        .at(at("users"), get(users::list).data(t()))
        .at(at("users/new"), get(users::new_form).post(users::create).data(t()))
        .at(at("users/:id"), get(users::detail).data(t()))
        .at(at("users/:id/password"), post(users::reset_password).data(t()))
        .at(at("users/:id/disable"), post(users::disable).data(t()))
        .at(at("users/:id/enable"), post(users::enable).data(t()))
        .at(at("users/:id/delete"), post(users::delete).data(t()))
        .at(
            at("users/:id/factors/:factor/remove"),
            post(users::remove_factor).data(t()),
        )
        .at(at("grants"), get(users::grant_list).data(t()))
        .at(at("grants/:id/revoke"), post(users::revoke_grant).data(t()))
        .at(at("keys"), get(keys::list).data(t()))
        .at(at("keys/generate"), post(keys::generate).data(t()))
        .at(at("keys/:kid/promote"), post(keys::promote).data(t()))
        .at(at("keys/:kid/retire"), post(keys::retire).data(t()))
        .at(at("audit"), get(audit::list).data(t()))
}

/// GET /admin: the console is at /admin/.
#[poem::handler]
fn to_console() -> Response {
    super::redirect(StatusCode::MOVED_PERMANENTLY, paths::CONSOLE)
}

/// Every console page's first step: the signed-in operator, or the response that ends the
/// request (the login page for a visitor not signed in, 403 for a user without the role).
async fn operator(
    provider: &Provider,
    templates: &Templates,
    req: &Request,
    status: StatusCode,
) -> Result<Session, Box<Response>> {
    let session = visitor(provider, templates, req, status).await?;
    let session = with_role(templates, session)?;
    with_second_factor(provider, &session, status, &super::this_request(req))?;
    no_nul(templates, req)?;
    Ok(session)
}

/// Refuses a request whose path or query holds a NUL byte: PostgreSQL refuses it in text, and
/// would turn a typo into a server error.
fn no_nul(templates: &Templates, req: &Request) -> Result<(), Box<Response>> {
    match req.uri().to_string().to_ascii_lowercase().contains("%00") {
        true => Err(Box::new(error_page(
            templates,
            &Error::invalid_request("the address holds a NUL byte"),
        ))),
        false => Ok(()),
    }
}

/// The session, if its user holds the operator role; a 403 page otherwise.
fn with_role(templates: &Templates, session: Session) -> Result<Session, Box<Response>> {
    if !session.user.operator || session.user.disabled {
        let html = templates.render(
            "error.html",
            context! {
                title => "Operators only",
                code => "forbidden",
                description => "This console is for operators; your account does not have the operator role.",
            },
        );
        return Err(Box::new(page(StatusCode::FORBIDDEN, html)));
    }
    Ok(session)
}

/// Where operators must use a second factor (`operator_mfa = "required"`, the default), a
/// session that did not show one (opened before the rule, or before the role was given) is
/// sent to show or add one, then back to `back`.
fn with_second_factor(
    provider: &Provider,
    session: &Session,
    status: StatusCode,
    back: &str,
) -> Result<(), Box<Response>> {
    let required = provider.accounts.mfa_policy(&session.user) == crate::config::MfaPolicy::Required;
    let shown = crate::oauth::acr::Level::of(session.amr()) >= crate::oauth::acr::Level::MultiFactor;
    match required && !shown {
        true => Err(Box::new(super::factor_redirect(status, back))),
        false => Ok(()),
    }
}

/// A console POST: the operator, and the form once its CSRF token checked out. Nothing is read
/// from the form before both checks pass. A visitor not signed in is sent to log in and then
/// to the section's page (a browser cannot come back to a POST).
async fn operator_form(
    provider: &Provider,
    templates: &Templates,
    req: &Request,
    body: Body,
) -> Result<(Session, Vec<(String, String)>), Box<Response>> {
    let session = match current_session(provider, req).await {
        Ok(Some(session)) => session,
        Ok(None) => {
            let back = section_of(req.uri().path());
            return Err(Box::new(login_redirect(StatusCode::SEE_OTHER, &back)));
        }
        Err(e) => return Err(Box::new(error_page(templates, &e))),
    };
    let session = with_role(templates, session)?;
    with_second_factor(provider, &session, StatusCode::SEE_OTHER, &section_of(req.uri().path()))?;
    no_nul(templates, req)?;
    let form = checked_form(templates, &session, body).await?;
    Ok((session, form))
}

/// The console page listing what `path` acts on: `/admin/clients/ID/delete` is in
/// `/admin/clients`.
fn section_of(path: &str) -> String {
    let section = path
        .strip_prefix(paths::CONSOLE)
        .and_then(|rest| rest.split('/').next())
        .filter(|s| ["clients", "users", "grants", "keys", "audit"].contains(s));
    match section {
        Some(section) => format!("{}{section}", paths::CONSOLE),
        None => paths::CONSOLE.to_string(),
    }
}

/// A form field, or "" when absent.
fn field(form: &[(String, String)], name: &str) -> String {
    Params::new(form)
        .get(name)
        .ok()
        .flatten()
        .unwrap_or_default()
        .to_string()
}

/// Whether the operator confirmed a dangerous action (the confirmation page sends this).
fn confirmed(form: &[(String, String)]) -> bool {
    field(form, "confirm") == "yes"
}

/// What a confirmation page asks.
struct Confirm<'a> {
    title: &'a str,
    message: String,
    /// Shown as a warning: why doing it now is unsafe.
    warning: Option<String>,
    action: String,
    button: &'a str,
    cancel: String,
    /// Form fields to send again with the confirmation.
    fields: Vec<(&'a str, String)>,
}

fn confirm_page(templates: &Templates, session: &Session, confirm: Confirm<'_>) -> Response {
    let fields: Vec<Value> = confirm
        .fields
        .iter()
        .map(|(name, value)| context! { name, value })
        .collect();
    let html = templates.render(
        "console_confirm.html",
        context! {
            title => confirm.title,
            message => confirm.message,
            warning => confirm.warning,
            action => confirm.action,
            button => confirm.button,
            cancel => confirm.cancel,
            fields,
            csrf_token => session.csrf_token(),
            username => &session.user.username,
        },
    );
    page(StatusCode::OK, html)
}

/// A console page: `name` rendered with `ctx` plus what the layout needs.
fn console_page(templates: &Templates, session: &Session, section: &str, name: &str, ctx: Value) -> Response {
    let html = templates.render(
        name,
        context! {
            section,
            username => &session.user.username,
            csrf_token => session.csrf_token(),
            ..ctx
        },
    );
    page(StatusCode::OK, html)
}

/// A query-string value, percent-encoded.
fn encode(value: &str) -> String {
    utf8_percent_encode(value, NON_ALPHANUMERIC).to_string()
}

/// How long ago (or, negative, how far ahead) `seconds` is, in words.
fn duration_words(seconds: i64) -> String {
    let s = seconds.unsigned_abs();
    match s {
        0..=119 => format!("{s} s"),
        120..=7199 => format!("{} min", s / 60),
        7200..=172_799 => format!("{} h", s / 3600),
        _ => format!("{} days", s / 86400),
    }
}

/// The most records one console listing shows.
const PAGE: usize = 25;

/// How many records one console search reads at most: a search that matches little stops
/// there and offers to go on, so no request reads the whole listing (issue 29).
const SEARCH_BUDGET: usize = 2_000;

/// One page of a search ([`search`]).
struct Found<T> {
    items: Vec<T>,
    /// Where the next page starts, if there may be more.
    next: Option<String>,
    /// How many records the search read, when it stopped at [`SEARCH_BUDGET`] before filling
    /// the page.
    cut_short: Option<usize>,
}

/// One page of a search over a listing the store pages by id: the records after `after` that
/// `matches`, read a store page at a time until a console page is full or [`SEARCH_BUDGET`]
/// records were read, and the cursor of the next page if there are more (the last shown
/// record's id, or the last read one's when the search was cut short).
async fn search<T, Fut>(
    fetch: impl Fn(Option<String>) -> Fut,
    after: Option<String>,
    matches: impl Fn(&T) -> bool,
    key: impl Fn(&T) -> String,
) -> Result<Found<T>, Error>
where
    Fut: std::future::Future<Output = Result<crate::oauth::admin::Page<T>, Error>>,
{
    let mut items = Vec::new();
    let (mut cursor, mut read) = (after, 0);
    loop {
        let page = fetch(cursor).await?;
        read += page.items.len();
        items.extend(page.items.into_iter().filter(|item| matches(item)));
        if items.len() > PAGE {
            items.truncate(PAGE);
            let next = items.last().map(&key);
            return Ok(Found {
                items,
                next,
                cut_short: None,
            });
        }
        match page.next_cursor {
            Some(next) if read >= SEARCH_BUDGET => {
                return Ok(Found {
                    items,
                    next: Some(next),
                    cut_short: Some(read),
                });
            }
            Some(next) => cursor = Some(next),
            None => {
                return Ok(Found {
                    items,
                    next: None,
                    cut_short: None,
                })
            }
        }
    }
}

/// Whether `haystack` contains `needle`, ignoring case.
fn contains(haystack: &str, needle: &str) -> bool {
    haystack.to_lowercase().contains(&needle.to_lowercase())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_post_comes_back_to_its_section_after_the_login() {
        assert_eq!(section_of("/admin/clients/abc/delete"), "/admin/clients");
        assert_eq!(section_of("/admin/keys/generate"), "/admin/keys");
        assert_eq!(section_of("/admin/grants/g/revoke"), "/admin/grants");
        assert_eq!(section_of("/admin/elsewhere"), "/admin/");
    }

    #[test]
    fn durations_read_in_the_largest_sensible_unit() {
        assert_eq!(duration_words(5), "5 s");
        assert_eq!(duration_words(600), "10 min");
        assert_eq!(duration_words(-7200), "2 h");
        assert_eq!(duration_words(90 * 86400), "90 days");
    }
}
