//! A user's own account: their profile (the OpenID Connect claims apps may see) and logging
//! out, including RP-initiated logout (OpenID Connect RP-Initiated Logout 1.0).

use std::sync::Arc;

use minijinja::context;
use poem::http::StatusCode;
use poem::web::Data;
use poem::{handler, Body, Request, Response};

use super::{caller, checked_form, current_session, error_page, form_pairs, page, redirect, visitor, Templates};
use crate::net::ClientAddress;
use crate::oauth::authorize::Params;
use crate::oauth::logout::{AfterLogout, LogoutRequest};
use crate::oauth::user::ProfileEdit;
use crate::oauth::{Error, Provider};
use crate::store::{UserProfile, UserRecord};
use crate::urlencoded::parse_pairs;

/// The profile fields the page edits, in display order: (form name, label, input type).
const PROFILE_FIELDS: [(&str, &str, &str); 9] = [
    ("name", "Full name", "text"),
    ("given_name", "Given name", "text"),
    ("family_name", "Family name", "text"),
    ("nickname", "Nickname", "text"),
    ("email", "Email", "email"),
    ("picture", "Picture URL", "url"),
    ("website", "Website", "url"),
    ("locale", "Locale (e.g. en-GB)", "text"),
    ("zoneinfo", "Time zone (e.g. Europe/Paris)", "text"),
];

fn field_value<'a>(edit: &'a ProfileEdit, name: &str) -> Option<&'a String> {
    let p = &edit.profile;
    match name {
        "name" => p.name.as_ref(),
        "given_name" => p.given_name.as_ref(),
        "family_name" => p.family_name.as_ref(),
        "nickname" => p.nickname.as_ref(),
        "email" => edit.email.as_ref(),
        "picture" => p.picture.as_ref(),
        "website" => p.website.as_ref(),
        "locale" => p.locale.as_ref(),
        "zoneinfo" => p.zoneinfo.as_ref(),
        _ => None,
    }
}

fn profile_page(
    templates: &Templates,
    status: StatusCode,
    user: &UserRecord,
    edit: &ProfileEdit,
    csrf_token: &str,
    message: Option<&str>,
    error: Option<&str>,
) -> Response {
    let fields: Vec<_> = PROFILE_FIELDS
        .iter()
        .map(|(name, label, kind)| context! { name, label, kind, value => field_value(edit, name) })
        .collect();
    let html = templates.render(
        "profile.html",
        context! {
            username => &user.username,
            user_id => &user.user_id,
            email_verified => user.email_verified,
            fields,
            csrf_token,
            message,
            error,
        },
    );
    page(status, html)
}

/// GET /o/profile/: the user's profile form.
#[handler]
pub async fn show_profile(req: &Request, provider: Data<&Arc<Provider>>, templates: Data<&Arc<Templates>>) -> Response {
    let (provider, templates) = (provider.0.as_ref(), templates.0.as_ref());
    let visitor = try_page!(visitor(provider, templates, req, StatusCode::FOUND).await);
    let edit = ProfileEdit::of(&visitor.user);
    let csrf = &visitor.record.csrf_token;
    profile_page(templates, StatusCode::OK, &visitor.user, &edit, csrf, None, None)
}

/// POST /o/profile/: save the profile.
#[handler]
pub async fn save_profile(
    req: &Request,
    body: Body,
    provider: Data<&Arc<Provider>>,
    templates: Data<&Arc<Templates>>,
) -> Response {
    let (provider, templates) = (provider.0.as_ref(), templates.0.as_ref());
    let visitor = try_page!(visitor(provider, templates, req, StatusCode::SEE_OTHER).await);
    let form = try_page!(checked_form(templates, &visitor, body).await);
    let form = Params::new(&form);
    let field = |name: &str| form.get(name).ok().flatten().map(str::to_string);
    let edit = ProfileEdit {
        email: field("email"),
        email_verified: None,
        profile: UserProfile {
            name: field("name"),
            given_name: field("given_name"),
            family_name: field("family_name"),
            nickname: field("nickname"),
            picture: field("picture"),
            website: field("website"),
            locale: field("locale"),
            zoneinfo: field("zoneinfo"),
        },
    };
    let csrf = &visitor.record.csrf_token;
    match provider
        .accounts
        .update_profile(&caller(&visitor, req), &visitor.user.user_id, edit.clone())
        .await
    {
        Ok(user) => {
            let saved = ProfileEdit::of(&user);
            profile_page(templates, StatusCode::OK, &user, &saved, csrf, Some("Saved."), None)
        }
        Err(e) if !super::form_can_fix(&e) => error_page(templates, &e),
        // Show the form again with what they typed, so nothing is lost.
        Err(e) => profile_page(
            templates,
            StatusCode::BAD_REQUEST,
            &visitor.user,
            &edit,
            csrf,
            None,
            Some(&e.description),
        ),
    }
}

/// Clears the session cookie in the browser.
fn clear_cookie(provider: &Provider, response: &mut Response) {
    super::Cookie::Session.set(provider, response, "", 0);
}

/// Ends the session (if any) and sends the browser where the request said, or to the
/// "logged out" page.
async fn finish_logout(provider: &Provider, templates: &Templates, req: &Request, request: &LogoutRequest) -> Response {
    let ended_session = match current_session(provider, req).await {
        Ok(Some(session)) => {
            if let Err(e) = provider.accounts.log_out(&session).await {
                return error_page(templates, &e);
            }
            true
        }
        Ok(None) => false,
        Err(e) => return error_page(templates, &e),
    };
    let client_name = request.client.as_ref().map(|c| c.name.as_str());
    let logged_out_page = |continue_url: Option<&str>| {
        let continue_host = continue_url
            .and_then(|u| url::Url::parse(u).ok())
            .and_then(|u| u.host_str().map(str::to_string));
        let ctx = context! { done => true, client_name, continue_url, continue_host };
        page(StatusCode::OK, templates.render("logout.html", ctx))
    };
    let mut response = match provider.after_logout(request, ended_session) {
        AfterLogout::Redirect(location) => redirect(StatusCode::SEE_OTHER, &location),
        AfterLogout::Offer(location) => logged_out_page(Some(&location)),
        AfterLogout::Done => logged_out_page(None),
    };
    clear_cookie(provider, &mut response);
    response
}

/// Handles a logout request (from a relying party, or the user's own "Log out" button):
/// without a session there is nothing to end; a relying party that proves with an ID token
/// that it speaks for this session's user ends it at once; anyone else gets a confirmation
/// page, so a link on another site cannot log the user out.
async fn handle_logout(
    provider: &Provider,
    templates: &Templates,
    req: &Request,
    pairs: &[(String, String)],
    confirmed: bool,
) -> Response {
    let caller = ClientAddress::of(req).key();
    let request = match provider.validate_logout(pairs, caller.as_deref()).await {
        Ok(r) => r,
        Err(e) => return error_page(templates, &e),
    };
    let session = match current_session(provider, req).await {
        Ok(Some(session)) => session,
        Ok(None) => return finish_logout(provider, templates, req, &request).await,
        Err(e) => return error_page(templates, &e),
    };
    let user = &session.user;
    if confirmed || request.is_for(&user.user_id) {
        return finish_logout(provider, templates, req, &request).await;
    }
    let client_name = request.client.as_ref().map(|c| c.name.as_str());
    let html = templates.render(
        "logout.html",
        context! {
            done => false,
            username => &user.username,
            client_name,
            params => &request.params,
            csrf_token => &session.record.csrf_token,
        },
    );
    page(StatusCode::OK, html)
}

/// GET /o/logout/: the end-session endpoint.
#[handler]
pub async fn logout(req: &Request, provider: Data<&Arc<Provider>>, templates: Data<&Arc<Templates>>) -> Response {
    let (provider, templates) = (provider.0.as_ref(), templates.0.as_ref());
    let pairs = match parse_pairs(req.uri().query().unwrap_or_default().as_bytes()) {
        Ok(p) => p,
        Err(why) => return error_page(templates, &Error::invalid_request(why)),
    };
    handle_logout(provider, templates, req, &pairs, false).await
}

/// POST /o/logout/: a relying party's form-posted logout request, or the user confirming
/// (a form carrying this session's CSRF token and `confirm=yes`).
#[handler]
pub async fn logout_post(
    req: &Request,
    body: Body,
    provider: Data<&Arc<Provider>>,
    templates: Data<&Arc<Templates>>,
) -> Response {
    let (provider, templates) = (provider.0.as_ref(), templates.0.as_ref());
    let pairs = match form_pairs(body).await {
        Ok(p) => p,
        Err(e) => return error_page(templates, &e),
    };
    let form = Params::new(&pairs);
    let confirmed = form.get("confirm").ok().flatten() == Some("yes");
    if confirmed {
        // Only a form this site rendered for this session may skip the question.
        let session = match current_session(provider, req).await {
            Ok(Some(s)) => s,
            Ok(None) => return handle_logout(provider, templates, req, &[], false).await,
            Err(e) => return error_page(templates, &e),
        };
        try_page!(super::check_csrf(templates, &session, &form));
    }
    let rp_params: Vec<(String, String)> = pairs
        .iter()
        .filter(|(k, _)| k != "csrf_token" && k != "confirm")
        .cloned()
        .collect();
    handle_logout(provider, templates, req, &rp_params, confirmed).await
}
