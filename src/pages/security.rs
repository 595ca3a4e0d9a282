//! `/o/security/`: a user's sign-in factors. They register passkeys (named; the browser's
//! prompt runs in `passkey.js`), add an authenticator app (a QR code drawn
//! on the server, and the secret as text), make recovery codes (shown once), and remove a
//! factor after confirming. Once the account has an app or a passkey, every change needs a
//! session that showed a second factor in the last 15 minutes; before that, a password typed in
//! the last 15 minutes. The core decides; this page renders.

use std::sync::Arc;

use minijinja::context;
use poem::http::StatusCode;
use poem::web::Data;
use poem::{handler, Body, Request, Response};

use super::{caller, checked_form, date, error_page, page, visitor, Templates};
use crate::config::MfaPolicy;
use crate::net::ClientAddress;
use crate::oauth::endpoints as paths;
use crate::oauth::factor::{CodeCheck, FactorChange, FactorSummary, TotpEnrolment, RECOVERY_ID, TOTP_ID};
use crate::oauth::params::Params;
use crate::oauth::passkey::{PasskeyAnswer, PasskeyPrompt, MAX_PASSKEY_NAME_CHARS};
use crate::oauth::session::Session;
use crate::oauth::Provider;

/// What the page shows besides the factors.
#[derive(Default)]
struct Shown<'a> {
    message: Option<&'a str>,
    error: Option<&'a str>,
    recovery_codes: Vec<String>,
    confirm: Option<FactorSummary>,
    /// A passkey being registered: the browser's prompt.
    passkey: Option<PasskeyPrompt>,
    /// The name typed for a passkey, kept when the form is shown again.
    passkey_name: Option<&'a str>,
}

impl<'a> Shown<'a> {
    /// The page with `error` said on it.
    fn error(error: &'a str) -> Shown<'a> {
        Shown {
            error: Some(error),
            ..Shown::default()
        }
    }
}

fn kind_label(kind: &str) -> &'static str {
    match kind {
        "totp" => "Authenticator app",
        "recovery_codes" => "Recovery codes",
        "passkey" => "Passkey",
        _ => "Other",
    }
}

async fn security_page(
    provider: &Provider,
    templates: &Templates,
    status: StatusCode,
    session: &Session,
    shown: Shown<'_>,
) -> Response {
    let accounts = &provider.accounts;
    let factors = match accounts.factors(session.user_id()).await {
        Ok(factors) => factors,
        Err(e) => return error_page(templates, &e),
    };
    let enrolment: Option<TotpEnrolment> = match accounts.totp_enrolment(&session.id).await {
        Ok(enrolment) => enrolment,
        Err(e) => return error_page(templates, &e),
    };
    let has = |id: &str| factors.iter().any(|f| f.id == id);
    let (has_totp, has_recovery) = (has(TOTP_ID), has(RECOVERY_ID));
    let rows: Vec<_> = factors
        .iter()
        .map(|f| {
            context! {
                id => &f.id,
                kind_label => kind_label(f.kind),
                name => &f.name,
                created => date(f.created_at),
                last_used => f.last_used_at.map(date),
                remaining => f.remaining,
                made => f.made,
            }
        })
        .collect();
    let enabled = accounts.mfa_policy(&session.user) != MfaPolicy::Off;
    let confirm = shown
        .confirm
        .as_ref()
        .map(|f| context! { id => &f.id, name => &f.name });
    let html = templates.render(
        "security.html",
        context! {
            username => &session.user.username,
            csrf_token => session.csrf_token(),
            factors => rows,
            enabled,
            has_totp,
            has_recovery,
            enrolment_svg => enrolment.as_ref().filter(|_| !has_totp).map(TotpEnrolment::qr_svg),
            enrolment => enrolment.filter(|_| !has_totp).map(|e| context! { secret => e.secret }),
            recovery_codes => shown.recovery_codes,
            confirm,
            passkeys_offered => accounts.passkeys_offered(Some(&session.user)),
            passkey => shown.passkey.as_ref().map(|p| context! { options => &p.options, ceremony => &p.ceremony }),
            passkey_name => shown.passkey_name,
            passkey_name_max => MAX_PASSKEY_NAME_CHARS,
            message => shown.message,
            error => shown.error,
        },
    );
    let mut response = page(status, html);
    // Secrets and recovery codes are on it: never kept by a cache.
    response.headers_mut().insert(
        poem::http::header::CACHE_CONTROL,
        poem::http::HeaderValue::from_static("no-store"),
    );
    response
}

/// GET /o/security/: the user's factors.
#[handler]
pub async fn show(req: &Request, provider: Data<&Arc<Provider>>, templates: Data<&Arc<Templates>>) -> Response {
    let (provider, templates) = (provider.0.as_ref(), templates.0.as_ref());
    let visitor = try_page!(visitor(provider, templates, req, StatusCode::FOUND).await);
    security_page(provider, templates, StatusCode::OK, &visitor, Shown::default()).await
}

/// POST /o/security/: one action (`start_passkey`, `finish_passkey`, `start_totp`,
/// `confirm_totp`, `recovery_codes`, `remove`, `remove_confirmed`).
#[handler]
pub async fn act(
    req: &Request,
    body: Body,
    provider: Data<&Arc<Provider>>,
    templates: Data<&Arc<Templates>>,
) -> Response {
    let (provider, templates) = (provider.0.as_ref(), templates.0.as_ref());
    let visitor = try_page!(visitor(provider, templates, req, StatusCode::SEE_OTHER).await);
    let form = try_page!(checked_form(templates, &visitor, body).await);
    let form = Params::new(&form);
    let field = |name: &str| form.get(name).ok().flatten().unwrap_or_default().to_string();
    let accounts = &provider.accounts;
    let by = caller(&visitor, req);
    let address = ClientAddress::of(req).shown();
    // Changing the factors of an account that has one needs a recent second factor (the
    // session shows one first, then comes back here); adding the first, a recent password.
    match accounts.may_change_factors(&visitor).await {
        Ok(FactorChange::Allowed) => {}
        Ok(FactorChange::ShowFactor) => return super::factor_redirect(StatusCode::SEE_OTHER, paths::SECURITY),
        Ok(FactorChange::LogInAgain) => {
            let login = format!("{}?next={}", paths::LOGIN, paths::SECURITY);
            return super::redirect(StatusCode::SEE_OTHER, &login);
        }
        Err(e) => return error_page(templates, &e),
    }
    let render = |status, shown| security_page(provider, templates, status, &visitor, shown);
    match field("action").as_str() {
        "start_totp" => match accounts.start_totp(&visitor.user, &visitor.id).await {
            Ok(_) => render(StatusCode::OK, Shown::default()).await,
            Err(e) => error_page(templates, &e),
        },
        "confirm_totp" => match accounts
            .confirm_totp(&visitor.user, &visitor.id, &field("code"), address.as_deref())
            .await
        {
            Ok(CodeCheck::Accepted(methods)) => {
                // The session just proved the app: it counts as a two-factor login now.
                if let Err(e) = accounts.step_up(&visitor, &methods).await {
                    return error_page(templates, &e);
                }
                let message = "Your authenticator app is on: it is asked for at every sign-in. Make recovery codes too, in case you lose it.";
                let shown = Shown {
                    message: Some(message),
                    ..Shown::default()
                };
                render(StatusCode::OK, shown).await
            }
            Ok(CodeCheck::Wrong) => {
                let shown =
                    Shown::error("That code is not right. Check the app's clock, and enter the code it shows now.");
                render(StatusCode::BAD_REQUEST, shown).await
            }
            Ok(CodeCheck::Locked(_)) => {
                let shown = Shown::error("Too many wrong codes. Wait a while, then try again.");
                render(StatusCode::TOO_MANY_REQUESTS, shown).await
            }
            Err(e) if super::form_can_fix(&e) => {
                let shown = Shown::error(&e.description);
                render(StatusCode::BAD_REQUEST, shown).await
            }
            Err(e) => error_page(templates, &e),
        },
        "start_passkey" => {
            let name = field("name");
            match accounts.start_passkey(&visitor, &name).await {
                Ok(prompt) => {
                    let shown = Shown {
                        passkey: Some(prompt),
                        passkey_name: Some(&name),
                        ..Shown::default()
                    };
                    render(StatusCode::OK, shown).await
                }
                Err(e) if super::form_can_fix(&e) => {
                    let shown = Shown {
                        error: Some(&e.description),
                        passkey_name: Some(&name),
                        ..Shown::default()
                    };
                    render(StatusCode::BAD_REQUEST, shown).await
                }
                Err(e) => error_page(templates, &e),
            }
        }
        "finish_passkey" => {
            let (ceremony, credential) = (field("ceremony"), field("credential"));
            let answer = PasskeyAnswer {
                ceremony: &ceremony,
                credential: &credential,
            };
            match accounts.finish_passkey(&visitor, answer, address.as_deref()).await {
                Ok(methods) => {
                    // The session just proved the passkey (with user verification).
                    if let Err(e) = accounts.step_up(&visitor, &methods).await {
                        return error_page(templates, &e);
                    }
                    let shown = Shown {
                        message: Some("Your passkey is added: sign in with it, without your password, or show it after your password."),
                        ..Shown::default()
                    };
                    render(StatusCode::OK, shown).await
                }
                Err(e) if super::form_can_fix(&e) => {
                    let shown = Shown::error(&e.description);
                    render(StatusCode::BAD_REQUEST, shown).await
                }
                Err(e) => error_page(templates, &e),
            }
        }
        "recovery_codes" => match accounts.new_recovery_codes(&by, &visitor.user).await {
            Ok(codes) => {
                let shown = Shown {
                    recovery_codes: codes,
                    ..Shown::default()
                };
                render(StatusCode::OK, shown).await
            }
            Err(e) => error_page(templates, &e),
        },
        "remove" => {
            let factors = match accounts.factors(visitor.user_id()).await {
                Ok(factors) => factors,
                Err(e) => return error_page(templates, &e),
            };
            let confirm = factors.into_iter().find(|f| f.id == field("factor"));
            let status = if confirm.is_some() {
                StatusCode::OK
            } else {
                StatusCode::NOT_FOUND
            };
            let shown = Shown {
                error: confirm.is_none().then_some("There is no such factor."),
                confirm,
                ..Shown::default()
            };
            render(status, shown).await
        }
        "remove_confirmed" => match accounts.remove_factor(&by, &visitor.user, &field("factor")).await {
            Ok(true) => {
                let shown = Shown {
                    message: Some("Removed."),
                    ..Shown::default()
                };
                render(StatusCode::OK, shown).await
            }
            Ok(false) => {
                let shown = Shown::error("There is no such factor.");
                render(StatusCode::NOT_FOUND, shown).await
            }
            Err(e) => error_page(templates, &e),
        },
        _ => {
            let shown = Shown::error("Unknown action.");
            render(StatusCode::BAD_REQUEST, shown).await
        }
    }
}
