//! The pages people use, server-rendered: login and consent for the authorization endpoint,
//! the device verification page ([`device`], RFC 8628),
//! the home page, authorized apps, profile and logout ([`account`]), app management
//! ([`applications`]), the playground, and the operator's console ([`console`]). Each handler reads the request, calls the core, and
//! renders what it decides; the paths come from the route table ([`crate::http::routes`]) and
//! errors take their status from the one mapping ([`crate::http::error`]).
//!
//! A logged-in browser carries a session cookie; every form carries the session's CSRF token
//! (synchronizer-token pattern), and the login form, shown before any session exists, a token
//! in a signed cookie. Every page forbids framing and caching; redirects after a POST are
//! 303 See Other.

/// The value of a page helper's `Ok`, or return its ready-made error response.
macro_rules! try_page {
    ($e:expr) => {
        match $e {
            Ok(v) => v,
            Err(response) => return *response,
        }
    };
}

mod account;
mod applications;
mod authorize;
mod console;
mod device;
mod home;
mod login;
mod playground;
mod security;

use std::sync::Arc;

use minijinja::{context, Environment};
use percent_encoding::{utf8_percent_encode, NON_ALPHANUMERIC};
use poem::http::{header, StatusCode};
use poem::{get, handler, post, Body, EndpointExt, Request, Response, Route};

use crate::http::error::{log_cause, ErrorHead, ErrorResponse, PageErrors};
use crate::net::ClientAddress;
use crate::oauth::endpoints as paths;
use crate::oauth::params::Params;
use crate::oauth::session::Session;
use crate::oauth::{Error, ErrorCode, Provider};
use crate::urlencoded::parse_pairs;

/// The compiled page templates.
pub struct Templates(Environment<'static>);

impl Templates {
    fn new() -> Templates {
        let mut env = Environment::new();
        // minijinja's own leaves `/` alone, so a client id that is a URL (a Client ID Metadata
        // Document's) would become several path segments: encode all but the unreserved.
        env.add_filter("urlencode", |value: String| {
            const RESERVED: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
                .remove(b'-')
                .remove(b'.')
                .remove(b'_')
                .remove(b'~');
            percent_encoding::utf8_percent_encode(&value, RESERVED).to_string()
        });
        for (name, source) in [
            ("base.html", include_str!("templates/base.html")),
            ("login.html", include_str!("templates/login.html")),
            ("consent.html", include_str!("templates/consent.html")),
            ("device.html", include_str!("templates/device.html")),
            ("error.html", include_str!("templates/error.html")),
            ("home.html", include_str!("templates/home.html")),
            (
                "authorized_tokens.html",
                include_str!("templates/authorized_tokens.html"),
            ),
            ("applications.html", include_str!("templates/applications.html")),
            ("application.html", include_str!("templates/application.html")),
            ("application_form.html", include_str!("templates/application_form.html")),
            (
                "application_delete.html",
                include_str!("templates/application_delete.html"),
            ),
            ("playground.html", include_str!("templates/playground.html")),
            ("profile.html", include_str!("templates/profile.html")),
            ("security.html", include_str!("templates/security.html")),
            ("login_factor.html", include_str!("templates/login_factor.html")),
            ("logout.html", include_str!("templates/logout.html")),
            ("console_layout.html", include_str!("templates/console_layout.html")),
            ("console_confirm.html", include_str!("templates/console_confirm.html")),
            ("console_overview.html", include_str!("templates/console_overview.html")),
            ("console_clients.html", include_str!("templates/console_clients.html")),
            ("console_client.html", include_str!("templates/console_client.html")),
            (
                "console_client_form.html",
                include_str!("templates/console_client_form.html"),
            ),
            ("console_users.html", include_str!("templates/console_users.html")),
            ("console_user.html", include_str!("templates/console_user.html")),
            (
                "console_user_form.html",
                include_str!("templates/console_user_form.html"),
            ),
            ("console_grants.html", include_str!("templates/console_grants.html")),
            ("console_keys.html", include_str!("templates/console_keys.html")),
            ("console_audit.html", include_str!("templates/console_audit.html")),
        ] {
            // The templates are compiled into the binary; a syntax error is a build defect.
            env.add_template(name, source).expect("built-in template must parse");
        }
        Templates(env)
    }

    fn render(&self, name: &str, ctx: minijinja::Value) -> String {
        self.0
            .get_template(name)
            .and_then(|t| t.render(ctx))
            .unwrap_or_else(|e| {
                tracing::error!(template = name, error = %e, "template failed to render");
                "<!doctype html><title>Error</title><p>Internal error.</p>".into()
            })
    }
}

/// The page routes, on the paths of the route table.
pub fn routes() -> Route {
    let templates = Arc::new(Templates::new());
    let route = Route::new()
        .at(
            paths::AUTHORIZE,
            get(authorize::authorize)
                .post(authorize::decide)
                .data(templates.clone()),
        )
        .at(
            paths::LOGIN,
            get(login::login_form).post(login::login).data(templates.clone()),
        )
        .at(
            paths::LOGIN_FACTOR,
            get(login::factor_form).post(login::factor).data(templates.clone()),
        )
        .at(
            paths::SECURITY,
            get(security::show).post(security::act).data(templates.clone()),
        )
        .at(
            paths::DEVICE,
            get(device::show).post(device::submit).data(templates.clone()),
        )
        .at(paths::STYLESHEET, get(stylesheet))
        .at(paths::SCRIPT, get(script))
        .at(paths::PASSKEY_SCRIPT, get(passkey_script))
        .at(paths::LOGIN_PASSKEY, post(login::passkey_login).data(templates.clone()))
        .at(
            paths::AUTHORIZED_APPS,
            get(home::authorized_apps)
                .post(home::revoke_app)
                .data(templates.clone()),
        )
        .at(paths::HOME, get(home::home).data(templates.clone()))
        .at(
            paths::PLAYGROUND,
            get(playground::show).post(playground::act).data(templates.clone()),
        )
        .at(
            paths::PLAYGROUND_CALLBACK,
            get(playground::callback).data(templates.clone()),
        )
        .at(
            paths::PROFILE,
            get(account::show_profile)
                .post(account::save_profile)
                .data(templates.clone()),
        )
        .at(
            paths::LOGOUT,
            get(account::logout).post(account::logout_post).data(templates.clone()),
        );
    let route = applications::mount(route, templates.clone());
    console::mount(route, templates)
}

#[handler]
fn stylesheet() -> Response {
    Response::builder()
        .content_type("text/css; charset=utf-8")
        .header(header::CACHE_CONTROL, "public, max-age=3600")
        .header("X-Content-Type-Options", "nosniff")
        .body(include_str!("tessera.css"))
}

#[handler]
fn script() -> Response {
    Response::builder()
        .content_type("text/javascript; charset=utf-8")
        .header(header::CACHE_CONTROL, "public, max-age=3600")
        .header("X-Content-Type-Options", "nosniff")
        .body(include_str!("tessera.js"))
}

#[handler]
fn passkey_script() -> Response {
    Response::builder()
        .content_type("text/javascript; charset=utf-8")
        .header(header::CACHE_CONTROL, "public, max-age=3600")
        .header("X-Content-Type-Options", "nosniff")
        .body(include_str!("passkey.js"))
}

/// An HTML response with the headers every page carries.
fn page(status: StatusCode, html: String) -> Response {
    Response::builder()
        .status(status)
        .content_type("text/html; charset=utf-8")
        .header(
            "Content-Security-Policy",
            "default-src 'none'; style-src 'self'; script-src 'self'; img-src 'self'; base-uri 'none'; frame-ancestors 'none'",
        )
        .header("X-Frame-Options", "DENY")
        .header("X-Content-Type-Options", "nosniff")
        .header("Referrer-Policy", "no-referrer")
        .header(header::CACHE_CONTROL, "no-store")
        .body(html)
}

fn redirect(status: StatusCode, location: &str) -> Response {
    Response::builder()
        .status(status)
        .header(header::LOCATION, location)
        .header(header::CACHE_CONTROL, "no-store")
        .header("Referrer-Policy", "no-referrer")
        .finish()
}

/// The error page for `error`: its status and headers from the pages' group of the one error
/// contract ([`PageErrors`]), its text from the template.
fn error_page(templates: &Templates, error: &Error) -> Response {
    log_cause(error);
    let title = if error.code == ErrorCode::ServerError {
        "Something went wrong"
    } else {
        "Invalid request"
    };
    let html = templates.render(
        "error.html",
        context! { title, code => error.code.as_str(), description => &error.description },
    );
    let mut response = page(StatusCode::OK, html);
    error_head(error).apply(&mut response);
    response
}

/// The status and headers of `error` on a page ([`PageErrors`]).
fn error_head(error: &Error) -> ErrorHead {
    let answer = ErrorResponse::<PageErrors>::from(Error {
        retry_after: error.retry_after,
        ..Error::new(error.code, error.description.clone())
    });
    answer.into_head()
}

/// Every form carries its session's CSRF token (synchronizer-token pattern); a form without
/// it, or with another session's, is refused before anything happens.
fn check_csrf(templates: &Templates, session: &Session, form: &Params<'_>) -> Result<(), Box<Response>> {
    if form
        .get("csrf_token")
        .ok()
        .flatten()
        .is_some_and(|t| session.csrf_matches(t))
    {
        return Ok(());
    }
    let error = Error::new(
        ErrorCode::AccessDenied,
        "the form is stale or was not sent by this site (CSRF check failed); go back and try again",
    );
    Err(Box::new(error_page(templates, &error)))
}

/// The cookies the pages set: the session, a login form's signed CSRF token, and the device
/// cookie of a browser its user has logged in from.
#[derive(Clone, Copy)]
pub(crate) enum Cookie {
    Session,
    LoginForm,
    Device,
    /// A login whose password was right, waiting for its second factor.
    LoginFactor,
}

impl Cookie {
    fn name(self, provider: &Provider) -> &'static str {
        // The __Host- prefix pins a cookie to this exact origin, but browsers accept it only
        // with Secure, i.e. on https.
        let https = provider.issuer.starts_with("https://");
        match (self, https) {
            (Cookie::Session, true) => "__Host-tessera_session",
            (Cookie::Session, false) => "tessera_session",
            (Cookie::LoginForm, true) => "__Host-tessera_login",
            (Cookie::LoginForm, false) => "tessera_login",
            (Cookie::Device, true) => "__Host-tessera_device",
            (Cookie::Device, false) => "tessera_device",
            (Cookie::LoginFactor, true) => "__Host-tessera_login_factor",
            (Cookie::LoginFactor, false) => "tessera_login_factor",
        }
    }

    /// This cookie's value in the request, if sent. The header is read as bytes: another
    /// site's cookie with non-ASCII bytes in it (another app on this host, a sibling
    /// subdomain) must not make ours unreadable and lock users out of logging in.
    fn read(self, provider: &Provider, req: &Request) -> Option<String> {
        let name = self.name(provider).as_bytes();
        req.headers()
            .get_all(header::COOKIE)
            .iter()
            .flat_map(|v| v.as_bytes().split(|b| *b == b';'))
            .filter_map(|pair| {
                let pair = pair.trim_ascii();
                let at = pair.iter().position(|b| *b == b'=')?;
                Some((&pair[..at], &pair[at + 1..]))
            })
            .find(|(k, _)| *k == name)
            .and_then(|(_, v)| std::str::from_utf8(v).ok())
            .map(str::to_string)
    }

    /// A `Set-Cookie` value; `Max-Age=0` with an empty value clears the cookie.
    fn header(self, provider: &Provider, value: &str, max_age: u64) -> String {
        let secure = if provider.issuer.starts_with("https://") {
            "; Secure"
        } else {
            ""
        };
        format!(
            "{}={value}; Path=/; HttpOnly; SameSite=Lax; Max-Age={max_age}{secure}",
            self.name(provider)
        )
    }

    /// Adds the `Set-Cookie` header to `response`.
    fn set(self, provider: &Provider, response: &mut Response, value: &str, max_age: u64) {
        if let Ok(value) = self.header(provider, value, max_age).parse() {
            response.headers_mut().append(header::SET_COOKIE, value);
        }
    }
}

/// The browser's logged-in session, if it has a live one.
async fn current_session(provider: &Provider, req: &Request) -> Result<Option<Session>, Error> {
    provider
        .accounts
        .session(Cookie::Session.read(provider, req).as_deref())
        .await
}

/// The query string's parameters.
fn query_pairs(req: &Request) -> Result<Vec<(String, String)>, Error> {
    parse_pairs(req.uri().query().unwrap_or_default().as_bytes()).map_err(Error::invalid_request)
}

async fn form_pairs(body: Body) -> Result<Vec<(String, String)>, Error> {
    let bytes = body
        .into_bytes()
        .await
        .map_err(|_| Error::invalid_request("the body could not be read"))?;
    parse_pairs(&bytes).map_err(Error::invalid_request)
}

/// Sends the browser to the login page, to come back to `return_to` (a path on this server).
fn login_redirect(status: StatusCode, return_to: &str) -> Response {
    redirect(
        status,
        &format!(
            "{}?next={}",
            paths::LOGIN,
            utf8_percent_encode(return_to, NON_ALPHANUMERIC)
        ),
    )
}

/// Off to the second-factor form (a step-up), then back to `return_to`.
fn factor_redirect(status: StatusCode, return_to: &str) -> Response {
    redirect(
        status,
        &format!(
            "{}?next={}",
            paths::LOGIN_FACTOR,
            utf8_percent_encode(return_to, NON_ALPHANUMERIC)
        ),
    )
}

/// The path and query of this request, to come back to after a login.
fn this_request(req: &Request) -> String {
    match req.uri().query() {
        Some(query) => format!("{}?{query}", req.uri().path()),
        None => req.uri().path().to_string(),
    }
}

fn date(timestamp: i64) -> String {
    crate::clock::rfc3339(timestamp)
}

/// The logged-in session every page for a user needs first, or a redirect to the login page
/// (with `status`) to come back here.
async fn visitor(
    provider: &Provider,
    templates: &Templates,
    req: &Request,
    status: StatusCode,
) -> Result<Session, Box<Response>> {
    match current_session(provider, req).await {
        Ok(Some(session)) => Ok(session),
        Ok(None) => Err(Box::new(login_redirect(status, &this_request(req)))),
        Err(e) => Err(Box::new(error_page(templates, &e))),
    }
}

/// Whether an error is about what was typed (show the form again) rather than the server or
/// the visitor's budget (an error page).
fn form_can_fix(error: &Error) -> bool {
    !matches!(error.code, ErrorCode::ServerError | ErrorCode::RateLimited)
}

/// The signed-in visitor as the audit trail names them, with their address.
fn caller(session: &Session, req: &Request) -> crate::oauth::audit::Caller {
    let address = ClientAddress::of(req).shown();
    crate::oauth::audit::Caller::user(&session.user, address.as_deref())
}

/// A POSTed form with a valid CSRF token for `visitor`'s session.
async fn checked_form(
    templates: &Templates,
    visitor: &Session,
    body: Body,
) -> Result<Vec<(String, String)>, Box<Response>> {
    let form = form_pairs(body)
        .await
        .map_err(|e| Box::new(error_page(templates, &e)))?;
    check_csrf(templates, visitor, &Params::new(&form))?;
    Ok(form)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urlencode_makes_a_url_one_path_segment() {
        let templates = Templates::new();
        let out = templates
            .0
            .render_str(
                "{{ id|urlencode }}",
                minijinja::context! { id => "https://a.example/c.json?x=1 y" },
            )
            .unwrap();
        assert_eq!(out, "https%3A%2F%2Fa.example%2Fc.json%3Fx%3D1%20y");
    }

    #[test]
    fn every_template_is_registered_and_parses() {
        let templates = Templates::new();
        for entry in std::fs::read_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/src/pages/templates")).unwrap() {
            let name = entry.unwrap().file_name().into_string().unwrap();
            assert!(
                templates.0.get_template(&name).is_ok(),
                "{name} is not registered in Templates::new"
            );
        }
    }
}
