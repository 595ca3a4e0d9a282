//! `/o/login/`: the login form and its check. The form is shown without storing anything (a
//! visitor who is not logged in gets a signed login-form cookie instead of a session); a
//! successful login starts a fresh session, marks the browser as a device its user logs in
//! from, and goes back to `next`, which must be a path on this server.

use std::sync::Arc;

use minijinja::context;
use poem::http::{header, StatusCode};
use poem::web::Data;
use poem::{handler, Body, Request, Response};

use super::{current_session, error_page, form_pairs, page, query_pairs, redirect, Cookie, Templates};
use crate::net::ClientAddress;
use crate::oauth::endpoints as paths;
use crate::oauth::factor::TotpEnrolment;
use crate::oauth::login::{CodeAttempt, LoginAttempt, LoginRefusal, LoginStep, PendingForm, PENDING_FACTOR_TTL_SECS};
use crate::oauth::params::Params;
use crate::oauth::passkey::{PasskeyAnswer, PasskeyLogin, PasskeyPrompt};
use crate::oauth::Provider;
use crate::urlencoded::parse_pairs;

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

/// What the login page shows.
struct LoginForm<'a> {
    csrf_token: &'a str,
    next: &'a str,
    username: &'a str,
    /// The passkey prompt (where passkeys are offered).
    passkey: Option<&'a PasskeyPrompt>,
}

fn login_page(templates: &Templates, status: StatusCode, form: &LoginForm<'_>, error: Option<&str>) -> Response {
    let (csrf_token, next, username) = (form.csrf_token, form.next, form.username);
    let passkey = form
        .passkey
        .map(|p| context! { options => &p.options, ceremony => &p.ceremony });
    let html = templates.render("login.html", context! { csrf_token, next, username, error, passkey });
    page(status, html)
}

/// The login page again, with a message and `Retry-After`.
fn busy_login_page(
    templates: &Templates,
    status: StatusCode,
    form: &LoginForm<'_>,
    message: &str,
    wait: std::time::Duration,
) -> Response {
    let mut response = login_page(templates, status, form, Some(message));
    if let Ok(value) = wait.as_secs().max(1).to_string().parse() {
        response.headers_mut().insert(header::RETRY_AFTER, value);
    }
    response
}

/// A form posted to a login step: its fields, where to go afterwards (a path on this server),
/// and the browser's session.
struct Posted {
    pairs: Vec<(String, String)>,
    next: String,
    session: Option<crate::oauth::session::Session>,
}

impl Posted {
    async fn read(req: &Request, body: Body, provider: &Provider) -> Result<Posted, crate::oauth::Error> {
        let pairs = form_pairs(body).await?;
        let next = safe_next(Params::new(&pairs).get("next").ok().flatten())
            .unwrap_or_default()
            .to_string();
        let session = current_session(provider, req).await?;
        Ok(Posted { pairs, next, session })
    }

    fn field(&self, name: &str) -> String {
        Params::new(&self.pairs)
            .get(name)
            .ok()
            .flatten()
            .unwrap_or_default()
            .to_string()
    }
}

/// Renders what a login form's step decided: on a refusal, the login form again (with
/// `username` and a new passkey prompt).
async fn render_login_step(
    provider: &Provider,
    templates: &Templates,
    step: Result<LoginStep, crate::oauth::Error>,
    posted: &Posted,
    username: &str,
) -> Response {
    let csrf_token = posted.field("csrf_token");
    let passkey = provider.accounts.passkey_login_prompt(&csrf_token).await.ok().flatten();
    let again = LoginForm {
        csrf_token: &csrf_token,
        next: &posted.next,
        username,
        passkey: passkey.as_ref(),
    };
    // A refused passkey (not registered here, an expired or used prompt) is said on the login
    // form; a forged form stays an error page.
    if let Err(e) = &step {
        if e.code == crate::oauth::ErrorCode::AccessDenied && !e.description.contains("CSRF") {
            return login_page(templates, StatusCode::UNAUTHORIZED, &again, Some(&e.description));
        }
    }
    let shown = |status, message: &str| login_page(templates, status, &again, Some(message));
    let busy = |status, message: &str, wait| busy_login_page(templates, status, &again, message, wait);
    render_step(provider, templates, step, &posted.next, shown, busy)
}

/// GET /o/login/: the login form. A visitor with a session uses its CSRF token; anyone else
/// gets a signed login-form cookie instead, and nothing is stored.
#[handler]
pub(super) async fn login_form(
    req: &Request,
    provider: Data<&Arc<Provider>>,
    templates: Data<&Arc<Templates>>,
) -> Response {
    let (provider, templates) = (provider.0.as_ref(), templates.0.as_ref());
    let pairs = query_pairs(req).unwrap_or_default();
    let next = Params::new(&pairs).get("next").ok().flatten();
    let next = safe_next(next).unwrap_or_default();
    // OpenID Connect `login_hint`: prefill the username the app suggests.
    let hint_pairs = next
        .strip_prefix(paths::AUTHORIZE)
        .and_then(|rest| rest.strip_prefix('?'))
        .and_then(|query| parse_pairs(query.as_bytes()).ok())
        .unwrap_or_default();
    let login_hint = provider.authorization.login_hint(&hint_pairs).await.unwrap_or_default();
    let login_hint = login_hint.as_str();
    let shown = |csrf_token: &str| {
        let csrf_token = csrf_token.to_string();
        async move {
            let passkey = provider.accounts.passkey_login_prompt(&csrf_token).await?;
            let form = LoginForm {
                csrf_token: &csrf_token,
                next,
                username: login_hint,
                passkey: passkey.as_ref(),
            };
            Ok::<_, crate::oauth::Error>(login_page(templates, StatusCode::OK, &form, None))
        }
    };
    match current_session(provider, req).await {
        Ok(Some(session)) => shown(session.csrf_token())
            .await
            .unwrap_or_else(|e| error_page(templates, &e)),
        Ok(None) => match provider.accounts.new_login_form().await {
            Ok(form) => {
                let mut response = match shown(&form.csrf_token).await {
                    Ok(response) => response,
                    Err(e) => return error_page(templates, &e),
                };
                let max_age = crate::oauth::session::LOGIN_FORM_TTL_SECS as u64;
                Cookie::LoginForm.set(provider, &mut response, &form.cookie, max_age);
                response
            }
            Err(e) => error_page(templates, &e),
        },
        Err(e) => error_page(templates, &e),
    }
}

/// POST /o/login/: hands the form to [`Accounts::sign_in`](crate::oauth::user::Accounts::sign_in) and renders the step it decides.
#[handler]
pub(super) async fn login(
    req: &Request,
    body: Body,
    provider: Data<&Arc<Provider>>,
    templates: Data<&Arc<Templates>>,
) -> Response {
    let (provider, templates) = (provider.0.as_ref(), templates.0.as_ref());
    let posted = match Posted::read(req, body, provider).await {
        Ok(posted) => posted,
        Err(e) => return error_page(templates, &e),
    };
    let (username, password, csrf_token) = (
        posted.field("username"),
        posted.field("password"),
        posted.field("csrf_token"),
    );
    let login_form_cookie = Cookie::LoginForm.read(provider, req);
    let device_cookie = Cookie::Device.read(provider, req);
    let attempt = LoginAttempt {
        username: &username,
        password: &password,
        csrf_token: &csrf_token,
        session: posted.session.as_ref(),
        login_form_cookie: login_form_cookie.as_deref(),
        device_cookie: device_cookie.as_deref(),
        address: ClientAddress::of(req).ip(),
    };
    let step = provider.accounts.sign_in(&attempt).await;
    render_login_step(provider, templates, step, &posted, &username).await
}

/// POST /o/login/passkey/: a passkey's answer to the login page's prompt, handed to
/// [`Accounts::sign_in_with_passkey`](crate::oauth::user::Accounts::sign_in_with_passkey).
#[handler]
pub(super) async fn passkey_login(
    req: &Request,
    body: Body,
    provider: Data<&Arc<Provider>>,
    templates: Data<&Arc<Templates>>,
) -> Response {
    let (provider, templates) = (provider.0.as_ref(), templates.0.as_ref());
    let posted = match Posted::read(req, body, provider).await {
        Ok(posted) => posted,
        Err(e) => return error_page(templates, &e),
    };
    let (csrf_token, ceremony, credential) = (
        posted.field("csrf_token"),
        posted.field("ceremony"),
        posted.field("credential"),
    );
    let login_form_cookie = Cookie::LoginForm.read(provider, req);
    let signing_in = PasskeyLogin {
        answer: PasskeyAnswer {
            ceremony: &ceremony,
            credential: &credential,
        },
        csrf_token: &csrf_token,
        session: posted.session.as_ref(),
        login_form_cookie: login_form_cookie.as_deref(),
    };
    let step = provider.accounts.sign_in_with_passkey(&signing_in).await;
    render_login_step(provider, templates, step, &posted, "").await
}

/// Renders what a login step decided; `shown` and `busy` draw the form it came from again.
fn render_step(
    provider: &Provider,
    templates: &Templates,
    step: Result<LoginStep, crate::oauth::Error>,
    next: &str,
    shown: impl Fn(StatusCode, &str) -> Response,
    busy: impl Fn(StatusCode, &str, std::time::Duration) -> Response,
) -> Response {
    let signed_in = match step {
        Ok(LoginStep::Done(signed_in)) => signed_in,
        Ok(LoginStep::NeedsFactor(pending)) => {
            let mut response = redirect(StatusCode::SEE_OTHER, &with_next(paths::LOGIN_FACTOR, next));
            let max_age = PENDING_FACTOR_TTL_SECS as u64;
            Cookie::LoginFactor.set(provider, &mut response, &pending.cookie, max_age);
            return response;
        }
        Ok(LoginStep::Show(refusal)) => {
            let (status, message) = match refusal {
                // Never say which of the two was wrong.
                LoginRefusal::WrongCredentials => (StatusCode::UNAUTHORIZED, "Invalid username or password."),
                LoginRefusal::Disabled => (
                    StatusCode::FORBIDDEN,
                    "This account is disabled. Ask the server's operator.",
                ),
                LoginRefusal::WrongCode => (StatusCode::UNAUTHORIZED, "That code is not right, or was used already."),
            };
            return shown(status, message);
        }
        Ok(LoginStep::Locked(wait)) => {
            let message = format!(
                "Too many failed attempts. Try again in {} seconds.",
                wait.as_secs().max(1)
            );
            return busy(StatusCode::TOO_MANY_REQUESTS, &message, wait);
        }
        Ok(LoginStep::Busy(wait)) => {
            let message = "The server is busy checking other logins. Try again in a moment.";
            return busy(StatusCode::SERVICE_UNAVAILABLE, message, wait);
        }
        Err(e) => return error_page(templates, &e),
    };
    let location = if next.is_empty() {
        "/".to_string()
    } else {
        next.to_string()
    };
    let mut response = redirect(StatusCode::SEE_OTHER, &location);
    let session_ttl = provider.config.session_ttl.as_secs();
    Cookie::Session.set(provider, &mut response, &signed_in.session.id, session_ttl);
    Cookie::LoginForm.set(provider, &mut response, "", 0);
    Cookie::LoginFactor.set(provider, &mut response, "", 0);
    // This browser is now a device its user logs in from (exempt from the per-username
    // slowdown of the login throttle).
    if let Some(device) = &signed_in.device {
        let max_age = crate::oauth::session::DEVICE_TTL_SECS as u64;
        Cookie::Device.set(provider, &mut response, &device.0, max_age);
    }
    response
}

/// `path` with `next` in its query, when there is one.
fn with_next(path: &str, next: &str) -> String {
    if next.is_empty() {
        return path.to_string();
    }
    let query: String = url::form_urlencoded::Serializer::new(String::new())
        .append_pair("next", next)
        .finish();
    format!("{path}?{query}")
}

fn factor_page(
    templates: &Templates,
    status: StatusCode,
    form: &PendingForm,
    next: &str,
    error: Option<&str>,
) -> Response {
    let enrolment = form.enrolment.as_ref();
    let passkey = form
        .passkey
        .as_ref()
        .map(|p| context! { options => &p.options, ceremony => &p.ceremony });
    let html = templates.render(
        "login_factor.html",
        context! {
            csrf_token => &form.csrf_token,
            next,
            error,
            enrolment_svg => enrolment.map(TotpEnrolment::qr_svg),
            enrolment => enrolment.map(|e| context! { secret => &e.secret }),
            passkey,
            code => form.code,
        },
    );
    let mut response = page(status, html);
    // An enrolment's secret may be on it: never kept by a cache.
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, poem::http::HeaderValue::from_static("no-store"));
    response
}

/// GET /o/login/factor/: the second step of a login, for a browser whose password was right
/// a moment ago; anyone else is sent back to the first step.
#[handler]
pub(super) async fn factor_form(
    req: &Request,
    provider: Data<&Arc<Provider>>,
    templates: Data<&Arc<Templates>>,
) -> Response {
    let (provider, templates) = (provider.0.as_ref(), templates.0.as_ref());
    let pairs = query_pairs(req).unwrap_or_default();
    let next = Params::new(&pairs).get("next").ok().flatten();
    let next = safe_next(next).unwrap_or_default();
    let pending = Cookie::LoginFactor.read(provider, req);
    let form = match provider.accounts.pending_form(pending.as_deref()).await {
        Ok(None) => match current_session(provider, req).await {
            Ok(Some(session)) => provider.accounts.step_up_form(&session).await,
            Ok(None) => Ok(None),
            Err(e) => Err(e),
        },
        other => other,
    };
    match form {
        Ok(Some(form)) => factor_page(templates, StatusCode::OK, &form, next, None),
        Ok(None) => redirect(StatusCode::SEE_OTHER, &with_next(paths::LOGIN, next)),
        Err(e) => error_page(templates, &e),
    }
}

/// POST /o/login/factor/: hands the code to
/// [`Accounts::finish_with_code`](crate::oauth::user::Accounts::finish_with_code) and renders
/// the step it decides.
#[handler]
pub(super) async fn factor(
    req: &Request,
    body: Body,
    provider: Data<&Arc<Provider>>,
    templates: Data<&Arc<Templates>>,
) -> Response {
    let (provider, templates) = (provider.0.as_ref(), templates.0.as_ref());
    let posted = match Posted::read(req, body, provider).await {
        Ok(posted) => posted,
        Err(e) => return error_page(templates, &e),
    };
    let field = |name: &str| posted.field(name);
    let (next, session) = (posted.next.clone(), posted.session.clone());
    let (code, csrf_token) = (field("code"), field("csrf_token"));
    let (ceremony, credential) = (field("ceremony"), field("credential"));
    let pending = Cookie::LoginFactor.read(provider, req);
    let attempt = CodeAttempt {
        code: &code,
        passkey: (!credential.is_empty()).then_some(PasskeyAnswer {
            ceremony: &ceremony,
            credential: &credential,
        }),
        csrf_token: &csrf_token,
        pending: pending.as_deref(),
        session: session.as_ref(),
        address: ClientAddress::of(req).ip(),
    };
    let step = provider.accounts.finish_with_code(&attempt).await;
    // The form again as it was (with the app being added, if one is).
    let form = match provider.accounts.pending_form(pending.as_deref()).await {
        Ok(Some(form)) => Some(form),
        _ => match &session {
            Some(session) => provider.accounts.step_up_form(session).await.ok().flatten(),
            None => None,
        },
    };
    let form = form.unwrap_or(PendingForm {
        csrf_token: csrf_token.clone(),
        enrolment: None,
        passkey: None,
        code: true,
    });
    let shown = |status, message: &str| factor_page(templates, status, &form, &next, Some(message));
    let busy = |status, message: &str, wait: std::time::Duration| {
        let mut response = factor_page(templates, status, &form, &next, Some(message));
        if let Ok(value) = wait.as_secs().max(1).to_string().parse() {
            response.headers_mut().insert(header::RETRY_AFTER, value);
        }
        response
    };
    render_step(provider, templates, step, &next, shown, busy)
}

#[cfg(test)]
mod tests {
    use super::*;

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
