//! The browser side of the authorization endpoint (RFC 6749 §4.1.1-4.1.2): login and consent
//! pages behind a server-side session cookie, each form carrying the session's CSRF token.
//! Every page forbids framing and caching; redirects after a POST are 303 See Other.

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
mod playground;

use std::sync::Arc;

use minijinja::{context, Environment};
use percent_encoding::{utf8_percent_encode, NON_ALPHANUMERIC};
use poem::http::{header, StatusCode};
use poem::web::Data;
use poem::{get, handler, Body, EndpointExt, Request, Response, Route};

use crate::oauth::authorize::{AuthorizationRequest, AuthorizeError, Interaction, Params};
use crate::oauth::session::Session;
use crate::oauth::user::LoginFailure;
use crate::oauth::{Error, ErrorCode, Provider};
use crate::urlencoded::parse_pairs;

/// The compiled page templates.
pub struct Templates(Environment<'static>);

impl Templates {
    fn new() -> Templates {
        let mut env = Environment::new();
        for (name, source) in [
            ("base.html", include_str!("templates/base.html")),
            ("login.html", include_str!("templates/login.html")),
            ("consent.html", include_str!("templates/consent.html")),
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
            ("logout.html", include_str!("templates/logout.html")),
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

/// The paths [`mount`] serves, besides everything under [`APPLICATIONS`].
pub const PATHS: [&str; 10] = [
    "/o/authorize/",
    "/o/login/",
    "/o/static/tessera.css",
    "/o/authorized_tokens/",
    "/",
    "/o/static/tessera.js",
    "/o/playground/",
    "/o/playground/callback/",
    "/o/profile/",
    "/o/logout/",
];
/// The prefix of the application-management pages.
pub const APPLICATIONS: &str = "/o/applications/";

/// Adds the page routes to `route`.
pub fn mount(route: Route) -> Route {
    let templates = Arc::new(Templates::new());
    let playground = Arc::new(playground::Playground::default());
    route
        .at(PATHS[0], get(authorize).post(decide).data(templates.clone()))
        .at(PATHS[1], get(login_form).post(login).data(templates.clone()))
        .at(PATHS[2], get(stylesheet))
        .at(PATHS[3], get(authorized_apps).post(revoke_app).data(templates.clone()))
        .at(PATHS[4], get(home).data(templates.clone()))
        .at(PATHS[5], get(script))
        .at(
            PATHS[6],
            get(playground::show)
                .post(playground::act)
                .data(templates.clone())
                .data(playground.clone()),
        )
        .at(
            PATHS[7],
            get(playground::callback).data(templates.clone()).data(playground),
        )
        .at(
            PATHS[8],
            get(account::show_profile)
                .post(account::save_profile)
                .data(templates.clone()),
        )
        .at(
            PATHS[9],
            get(account::logout).post(account::logout_post).data(templates.clone()),
        )
        .at("/o/applications/", get(applications::list).data(templates.clone()))
        .at(
            "/o/applications/register/",
            get(applications::register_form)
                .post(applications::register)
                .data(templates.clone()),
        )
        .at(
            "/o/applications/:id/",
            get(applications::detail).data(templates.clone()),
        )
        .at(
            "/o/applications/:id/edit/",
            get(applications::edit_form)
                .post(applications::edit)
                .data(templates.clone()),
        )
        .at(
            "/o/applications/:id/rotate-secret/",
            poem::post(applications::rotate_secret).data(templates.clone()),
        )
        .at(
            "/o/applications/:id/delete/",
            get(applications::delete_form)
                .post(applications::delete)
                .data(templates.clone()),
        )
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

fn error_page(templates: &Templates, status: StatusCode, error: &Error) -> Response {
    if let Some(cause) = &error.cause {
        tracing::error!(error = %error, cause = %cause, "page request failed");
    }
    let title = if error.code == ErrorCode::ServerError {
        "Something went wrong"
    } else {
        "Invalid request"
    };
    let html = templates.render(
        "error.html",
        context! { title, code => error.code.as_str(), description => &error.description },
    );
    page(status, html)
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
    let error = Error::invalid_request(
        "the form is stale or was not sent by this site (CSRF check failed); go back and try again",
    );
    Err(Box::new(error_page(templates, StatusCode::FORBIDDEN, &error)))
}

/// The cookies the pages set: the session, a login form's signed CSRF token, and the device
/// cookie of a browser its user has logged in from.
#[derive(Clone, Copy)]
enum Cookie {
    Session,
    LoginForm,
    Device,
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
        }
    }

    /// This cookie's value in the request, if sent.
    fn read(self, provider: &Provider, req: &Request) -> Option<String> {
        let name = self.name(provider);
        req.headers()
            .get_all(header::COOKIE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(';'))
            .filter_map(|pair| pair.trim().split_once('='))
            .find(|(k, _)| *k == name)
            .map(|(_, v)| v.to_string())
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

async fn current_session(provider: &Provider, req: &Request) -> Result<Option<Session>, Error> {
    provider.session(Cookie::Session.read(provider, req).as_deref()).await
}

async fn form_pairs(body: Body) -> Result<Vec<(String, String)>, Error> {
    let bytes = body
        .into_bytes()
        .await
        .map_err(|_| Error::invalid_request("the body could not be read"))?;
    parse_pairs(&bytes).map_err(Error::invalid_request)
}

/// Where login sends the user back to: only a path on this server. Browsers strip tabs and
/// newlines from a `Location` and read `\\` as `/`, so `/\t/evil.example` would become
/// `//evil.example`, another origin (review finding 3). A `next` with any control or
/// whitespace character or a backslash is refused outright, and what is left must resolve
/// to this origin as a path that does not begin with `//`.
fn safe_next(next: Option<&str>) -> Option<&str> {
    let next = next?;
    let plain = next.starts_with('/')
        && !next.starts_with("//")
        && !next
            .chars()
            .any(|c| crate::oauth::text::is_deceptive(c) || c.is_whitespace() || c == '\\');
    if !plain {
        return None;
    }
    let base = url::Url::parse("http://tessera.invalid/").ok()?;
    let resolved = base.join(next).ok()?;
    let same_origin = resolved.origin() == base.origin() && !resolved.path().starts_with("//");
    same_origin.then_some(next)
}

/// Sends the browser to the login page, to come back to this same request afterwards.
fn login_redirect(req: &Request, status: StatusCode) -> Response {
    let original = match req.uri().query() {
        Some(query) => format!("{}?{query}", req.uri().path()),
        None => req.uri().path().to_string(),
    };
    redirect(
        status,
        &format!("/o/login/?next={}", utf8_percent_encode(&original, NON_ALPHANUMERIC)),
    )
}

/// Sends the browser to the login page for an authorization request that needs a (fresh)
/// login. The way back drops `prompt=login` and `max_age`, which that login has just
/// satisfied; kept, they would ask for a login forever (`max_age=0` always would). The
/// ID token's `auth_time` still tells the client when the login happened.
fn reauthenticate(req: &Request) -> Response {
    let pairs = parse_pairs(req.uri().query().unwrap_or_default().as_bytes()).unwrap_or_default();
    let mut query = url::form_urlencoded::Serializer::new(String::new());
    for (name, value) in &pairs {
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
    let next = format!("{}?{}", req.uri().path(), query.finish());
    redirect(
        StatusCode::FOUND,
        &format!("/o/login/?next={}", utf8_percent_encode(&next, NON_ALPHANUMERIC)),
    )
}

/// The page for an authorization error: shown, or a redirect to the client.
fn authorization_error_page(templates: &Templates, error: AuthorizeError) -> Response {
    match error {
        AuthorizeError::Show(error) => {
            let status = match error.code {
                ErrorCode::ServerError => StatusCode::INTERNAL_SERVER_ERROR,
                _ => StatusCode::BAD_REQUEST,
            };
            error_page(templates, status, &error)
        }
        AuthorizeError::Redirect(location) => redirect(StatusCode::FOUND, &location),
    }
}

/// Parses and validates the authorization request in the query string, for the logged-in
/// user `user_id` if any.
async fn authorization_request(
    provider: &Provider,
    templates: &Templates,
    req: &Request,
    user_id: Option<&str>,
) -> Result<AuthorizationRequest, Box<Response>> {
    let pairs = parse_pairs(req.uri().query().unwrap_or_default().as_bytes()).map_err(|why| {
        Box::new(error_page(
            templates,
            StatusCode::BAD_REQUEST,
            &Error::invalid_request(why),
        ))
    })?;
    provider
        .validate_authorization(&pairs, user_id)
        .await
        .map_err(|e| Box::new(authorization_error_page(templates, e)))
}

/// GET /o/authorize/: validate, then log in or ask for consent.
#[handler]
async fn authorize(req: &Request, provider: Data<&Arc<Provider>>, templates: Data<&Arc<Templates>>) -> Response {
    let (provider, templates) = (provider.0.as_ref(), templates.0.as_ref());
    let visitor = match logged_in_user(provider, req).await {
        Ok(v) => v,
        Err(e) => return error_page(templates, StatusCode::INTERNAL_SERVER_ERROR, &e),
    };
    let user_id = visitor.as_ref().map(|(_, user)| user.user_id.as_str());
    let request = match authorization_request(provider, templates, req, user_id).await {
        Ok(r) => r,
        Err(response) => return *response,
    };
    let consent_required = match &visitor {
        Some((_, user)) => match provider.consent_required(&request, &user.user_id).await {
            Ok(required) => required,
            Err(e) => return error_page(templates, StatusCode::INTERNAL_SERVER_ERROR, &e),
        },
        None => true,
    };
    let logged_in = visitor
        .as_ref()
        .map(|(session, user)| (user.user_id.as_str(), session.record.auth_time.unwrap_or_default()));
    let (session, user) = match provider.interaction(&request, logged_in, consent_required) {
        Err(error) => return authorization_error_page(templates, error),
        Ok(Interaction::Login) => return reauthenticate(req),
        Ok(Interaction::None) => {
            // Approved before (or a first-party app): straight back to the client with a code.
            // The approval is still recorded, so the app is listed (and revocable) on the
            // authorized-apps page.
            let (session, user) = visitor.expect("no login needed implies a user");
            if let Err(e) = provider.remember_consent(&request, &user.user_id).await {
                return error_page(templates, StatusCode::INTERNAL_SERVER_ERROR, &e);
            }
            let auth_time = session.record.auth_time.unwrap_or_else(crate::oauth::now);
            return match provider.approve(&request, &user.user_id, auth_time).await {
                Ok(location) => redirect(StatusCode::FOUND, &location),
                Err(e) => error_page(templates, StatusCode::INTERNAL_SERVER_ERROR, &e),
            };
        }
        Ok(Interaction::Consent) => visitor.expect("consent implies a user"),
    };
    let scopes: Vec<_> = request
        .scope
        .tokens()
        .map(|name| {
            let description = provider
                .config
                .scopes
                .iter()
                .find(|s| s.name == name)
                .map(|s| s.description.clone());
            context! { name, description }
        })
        .collect();
    let redirect_host = url::Url::parse(&request.redirect_uri)
        .ok()
        .and_then(|u| u.host_str().map(str::to_string))
        .unwrap_or_else(|| request.redirect_uri.clone());
    let html = templates.render(
        "consent.html",
        context! {
            client_name => &request.client.name,
            username => &user.username,
            scopes,
            redirect_host,
            // Names can be copied; the id and the redirect host tell look-alikes apart.
            client_id_prefix => request.client.client_id.chars().take(8).collect::<String>(),
            self_registered => !crate::oauth::client::operator_made(&request.client),
            action => format!("/o/authorize/?{}", req.uri().query().unwrap_or_default()),
            csrf_token => &session.record.csrf_token,
        },
    );
    page(StatusCode::OK, html)
}

/// POST /o/authorize/: the user's Allow or Deny.
#[handler]
async fn decide(
    req: &Request,
    body: Body,
    provider: Data<&Arc<Provider>>,
    templates: Data<&Arc<Templates>>,
) -> Response {
    let (provider, templates) = (provider.0.as_ref(), templates.0.as_ref());
    let session = match current_session(provider, req).await {
        Ok(Some(s)) if s.user_id().is_some() => s,
        Ok(_) => return login_redirect(req, StatusCode::SEE_OTHER),
        Err(e) => return error_page(templates, StatusCode::INTERNAL_SERVER_ERROR, &e),
    };
    let request = match authorization_request(provider, templates, req, session.user_id()).await {
        Ok(r) => r,
        Err(response) => return *response,
    };
    let form = match form_pairs(body).await {
        Ok(f) => f,
        Err(e) => return error_page(templates, StatusCode::BAD_REQUEST, &e),
    };
    let form = Params::new(&form);
    if let Err(response) = check_csrf(templates, &session, &form) {
        return *response;
    }
    match form.get("decision").ok().flatten() {
        Some("allow") => {
            let user_id = session.user_id().unwrap_or_default();
            let auth_time = session.record.auth_time.unwrap_or_else(crate::oauth::now);
            if let Err(e) = provider.remember_consent(&request, user_id).await {
                return error_page(templates, StatusCode::INTERNAL_SERVER_ERROR, &e);
            }
            match provider.approve(&request, user_id, auth_time).await {
                Ok(location) => redirect(StatusCode::SEE_OTHER, &location),
                Err(e) => error_page(templates, StatusCode::INTERNAL_SERVER_ERROR, &e),
            }
        }
        Some("deny") => redirect(StatusCode::SEE_OTHER, &provider.deny(&request)),
        _ => error_page(
            templates,
            StatusCode::BAD_REQUEST,
            &Error::invalid_request("decision must be allow or deny"),
        ),
    }
}

fn login_page(
    templates: &Templates,
    status: StatusCode,
    csrf_token: &str,
    next: &str,
    username: &str,
    error: Option<&str>,
) -> Response {
    let html = templates.render("login.html", context! { csrf_token, next, username, error });
    page(status, html)
}

/// The login page again, with a message and `Retry-After`.
fn busy_login_page(
    templates: &Templates,
    status: StatusCode,
    csrf_token: &str,
    next: &str,
    username: &str,
    message: &str,
    wait: std::time::Duration,
) -> Response {
    let mut response = login_page(templates, status, csrf_token, next, username, Some(message));
    if let Ok(value) = wait.as_secs().max(1).to_string().parse() {
        response.headers_mut().insert(header::RETRY_AFTER, value);
    }
    response
}

/// GET /o/login/: the login form. A visitor with a session uses its CSRF token; anyone else
/// gets a signed login-form cookie instead, and nothing is stored.
#[handler]
async fn login_form(req: &Request, provider: Data<&Arc<Provider>>, templates: Data<&Arc<Templates>>) -> Response {
    let (provider, templates) = (provider.0.as_ref(), templates.0.as_ref());
    let pairs = parse_pairs(req.uri().query().unwrap_or_default().as_bytes()).unwrap_or_default();
    let next = Params::new(&pairs).get("next").ok().flatten();
    let next = safe_next(next).unwrap_or_default();
    // OpenID Connect `login_hint`: prefill the username the app suggests.
    let hint_pairs = next
        .strip_prefix("/o/authorize/?")
        .and_then(|query| parse_pairs(query.as_bytes()).ok())
        .unwrap_or_default();
    let login_hint = Params::new(&hint_pairs)
        .get("login_hint")
        .ok()
        .flatten()
        .unwrap_or_default();
    match current_session(provider, req).await {
        Ok(Some(session)) => login_page(
            templates,
            StatusCode::OK,
            &session.record.csrf_token,
            next,
            login_hint,
            None,
        ),
        Ok(None) => match provider.new_login_form().await {
            Ok(form) => {
                let mut response = login_page(templates, StatusCode::OK, &form.csrf_token, next, login_hint, None);
                let max_age = crate::oauth::session::LOGIN_FORM_TTL_SECS as u64;
                Cookie::LoginForm.set(provider, &mut response, &form.cookie, max_age);
                response
            }
            Err(e) => error_page(templates, StatusCode::INTERNAL_SERVER_ERROR, &e),
        },
        Err(e) => error_page(templates, StatusCode::INTERNAL_SERVER_ERROR, &e),
    }
}

/// POST /o/login/: check the password, start a fresh session, go back to `next`.
#[handler]
async fn login(
    req: &Request,
    body: Body,
    provider: Data<&Arc<Provider>>,
    templates: Data<&Arc<Templates>>,
) -> Response {
    let templates = templates.0.as_ref();
    let form = match form_pairs(body).await {
        Ok(f) => f,
        Err(e) => return error_page(templates, StatusCode::BAD_REQUEST, &e),
    };
    let form = Params::new(&form);
    let field = |name: &str| form.get(name).ok().flatten().unwrap_or_default().to_string();
    let next = safe_next(Some(&field("next"))).unwrap_or_default().to_string();
    // The form's CSRF token is the session's, or (without a session) the login-form cookie's.
    let session = match current_session(provider.as_ref(), req).await {
        Ok(session) => session,
        Err(e) => return error_page(templates, StatusCode::INTERNAL_SERVER_ERROR, &e),
    };
    let csrf_token = field("csrf_token");
    let form_is_ours = match &session {
        Some(session) => Ok(session.csrf_matches(&csrf_token)),
        None => {
            let cookie = Cookie::LoginForm.read(provider.as_ref(), req);
            provider.login_form_matches(cookie.as_deref(), &csrf_token).await
        }
    };
    match form_is_ours {
        Ok(true) => {}
        Ok(false) => {
            let error = Error::invalid_request(
                "your login form expired or was not sent by this site (CSRF check failed); go back and try again",
            );
            return error_page(templates, StatusCode::FORBIDDEN, &error);
        }
        Err(e) => return error_page(templates, StatusCode::INTERNAL_SERVER_ERROR, &e),
    }
    let (username, password) = (field("username"), field("password"));
    let address = crate::net::client_address(req, &provider.0.config.trusted_proxies);
    let device = Cookie::Device.read(provider.as_ref(), req);
    let user = match provider
        .0
        .log_in_with_password(&username, &password, address, device.as_deref())
        .await
    {
        Ok(user) => user,
        Err(LoginFailure::Invalid) => {
            // Never say which of the two was wrong.
            let message = "Invalid username or password.";
            return login_page(
                templates,
                StatusCode::UNAUTHORIZED,
                &csrf_token,
                &next,
                &username,
                Some(message),
            );
        }
        Err(LoginFailure::Throttled(wait)) => {
            let message = format!(
                "Too many failed attempts. Try again in {} seconds.",
                wait.as_secs().max(1)
            );
            return busy_login_page(
                templates,
                StatusCode::TOO_MANY_REQUESTS,
                &csrf_token,
                &next,
                &username,
                &message,
                wait,
            );
        }
        Err(LoginFailure::Busy(wait)) => {
            let message = "The server is busy checking other logins. Try again in a moment.";
            return busy_login_page(
                templates,
                StatusCode::SERVICE_UNAVAILABLE,
                &csrf_token,
                &next,
                &username,
                message,
                wait,
            );
        }
        Err(LoginFailure::Error(e)) => return error_page(templates, StatusCode::INTERNAL_SERVER_ERROR, &e),
    };
    let fresh = match provider.log_in(session.as_ref(), &user).await {
        Ok(s) => s,
        Err(e) => return error_page(templates, StatusCode::INTERNAL_SERVER_ERROR, &e),
    };
    let location = if next.is_empty() { "/".to_string() } else { next };
    let mut response = redirect(StatusCode::SEE_OTHER, &location);
    let provider = provider.as_ref();
    Cookie::Session.set(
        provider,
        &mut response,
        &fresh.id,
        provider.config.session_ttl.as_secs(),
    );
    Cookie::LoginForm.set(provider, &mut response, "", 0);
    // This browser is now a device its user logs in from (exempt from the per-username
    // slowdown of the login throttle).
    match provider.device_cookie(&user.username).await {
        Ok(device) => {
            let max_age = crate::oauth::session::DEVICE_TTL_SECS as u64;
            Cookie::Device.set(provider, &mut response, &device.0, max_age);
        }
        Err(e) => tracing::warn!(error = %e, "no device cookie could be made"),
    }
    response
}

/// The logged-in user behind a request, with their session.
async fn logged_in_user(
    provider: &Provider,
    req: &Request,
) -> Result<Option<(Session, crate::store::UserRecord)>, Error> {
    let Some(session) = current_session(provider, req).await? else {
        return Ok(None);
    };
    let Some(user_id) = session.user_id() else {
        return Ok(None);
    };
    Ok(provider.find_user(user_id).await?.map(|user| (session, user)))
}

fn date(timestamp: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp(timestamp)
        .ok()
        .and_then(|t| t.format(&time::format_description::well_known::Rfc3339).ok())
        .unwrap_or_default()
}

/// Everything a page for a logged-in user needs first: the user (or a redirect to the login
/// page, with `status`) and, for a POST, the form with a valid CSRF token.
struct Visitor {
    session: Session,
    user: crate::store::UserRecord,
}

async fn visitor(
    provider: &Provider,
    templates: &Templates,
    req: &Request,
    status: StatusCode,
) -> Result<Visitor, Box<Response>> {
    match logged_in_user(provider, req).await {
        Ok(Some((session, user))) => Ok(Visitor { session, user }),
        Ok(None) => Err(Box::new(login_redirect(req, status))),
        Err(e) => Err(Box::new(error_page(templates, StatusCode::INTERNAL_SERVER_ERROR, &e))),
    }
}

async fn checked_form(
    templates: &Templates,
    visitor: &Visitor,
    body: Body,
) -> Result<Vec<(String, String)>, Box<Response>> {
    let form = form_pairs(body)
        .await
        .map_err(|e| Box::new(error_page(templates, StatusCode::BAD_REQUEST, &e)))?;
    check_csrf(templates, &visitor.session, &Params::new(&form))?;
    Ok(form)
}

/// GET /: what this server is, and links for developers and (logged in) users.
#[handler]
async fn home(req: &Request, provider: Data<&Arc<Provider>>, templates: Data<&Arc<Templates>>) -> Response {
    let (username, csrf_token) = match logged_in_user(provider.0, req).await {
        Ok(Some((session, user))) => (Some(user.username), Some(session.record.csrf_token)),
        Ok(None) => (None, None),
        Err(e) => return error_page(templates.0, StatusCode::INTERNAL_SERVER_ERROR, &e),
    };
    let playground = provider.config.playground;
    page(
        StatusCode::OK,
        templates.render("home.html", context! { username, csrf_token, playground }),
    )
}

/// GET /o/authorized_tokens/: the apps this user approved.
#[handler]
async fn authorized_apps(req: &Request, provider: Data<&Arc<Provider>>, templates: Data<&Arc<Templates>>) -> Response {
    let (provider, templates) = (provider.0.as_ref(), templates.0.as_ref());
    let Visitor { session, user } = match visitor(provider, templates, req, StatusCode::FOUND).await {
        Ok(v) => v,
        Err(response) => return *response,
    };
    let apps = match provider.authorized_apps(&user.user_id).await {
        Ok(apps) => apps,
        Err(e) => return error_page(templates, StatusCode::INTERNAL_SERVER_ERROR, &e),
    };
    let apps: Vec<_> = apps
        .iter()
        .map(|app| {
            let name = app
                .client
                .as_ref()
                .map(|c| c.name.clone())
                .unwrap_or_else(|| "(deleted app)".into());
            context! {
                name,
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
        context! { username => &user.username, apps, csrf_token => &session.record.csrf_token },
    );
    page(StatusCode::OK, html)
}

/// POST /o/authorized_tokens/: withdraw an app's access.
#[handler]
async fn revoke_app(
    req: &Request,
    body: Body,
    provider: Data<&Arc<Provider>>,
    templates: Data<&Arc<Templates>>,
) -> Response {
    let (provider, templates) = (provider.0.as_ref(), templates.0.as_ref());
    let visitor = match visitor(provider, templates, req, StatusCode::SEE_OTHER).await {
        Ok(v) => v,
        Err(response) => return *response,
    };
    let form = match checked_form(templates, &visitor, body).await {
        Ok(f) => f,
        Err(response) => return *response,
    };
    let form = Params::new(&form);
    let Some(client_id) = form.get("client_id").ok().flatten() else {
        return error_page(
            templates,
            StatusCode::BAD_REQUEST,
            &Error::invalid_request("client_id is missing"),
        );
    };
    match provider.withdraw_consent(&visitor.user.user_id, client_id).await {
        Ok(_) => redirect(StatusCode::SEE_OTHER, "/o/authorized_tokens/"),
        Err(e) => error_page(templates, StatusCode::INTERNAL_SERVER_ERROR, &e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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

    #[test]
    fn next_must_stay_on_this_server() {
        assert_eq!(safe_next(Some("/o/authorize/?a=b")), Some("/o/authorize/?a=b"));
        for bad in [
            "https://evil.example/",
            "//evil.example/",
            "/\\evil.example",
            "/o/\r\nSet-Cookie: x",
            "/\t/evil.example/phish",
            "/\u{b}/evil.example",
            "/ /evil.example",
            "/\u{a0}/evil.example",
            "/\u{202e}x",
            "/o/\\..\\/evil.example",
        ] {
            assert_eq!(safe_next(Some(bad)), None, "{bad:?}");
        }
    }
}
