//! `/admin/users` and `/admin/grants`: users searchable by username, email or id and paged;
//! create a user, reset a password, disable (after confirmation: it ends the user's sessions and
//! revokes their grants) or enable, delete (after confirmation); and grants by user or client,
//! each revocable.
//!
//! Sessions are not listed: the store keeps them by the hash of their cookie only, with no
//! index by user. Disabling a user or resetting their password ends every session they have
//! at once (their session epoch moves on).

use std::sync::Arc;

use minijinja::{context, Value};
use poem::http::StatusCode;
use poem::web::{Data, Path};
use poem::{handler, Body, Request, Response};

use super::super::{date, query_pairs, redirect};
use super::{
    caller, confirm_page, confirmed, console_page, contains, encode, error_page, field, form_can_fix, operator,
    operator_form, search, Confirm, Templates, PAGE,
};
use crate::oauth::admin::{not_found, MAX_PAGE};
use crate::oauth::factor::FactorSummary;
use crate::oauth::session::Session;
use crate::oauth::user::ProfileEdit;
use crate::oauth::Provider;
use crate::store::{GrantRecord, UserRecord};

fn summary(user: &UserRecord) -> Value {
    context! {
        user_id => &user.user_id,
        username => &user.username,
        email => &user.email,
        email_verified => user.email_verified,
        operator => user.operator,
        disabled => user.disabled,
        created_at => date(user.created_at),
    }
}

/// GET /admin/users?q=…&after=…
#[handler]
pub(super) async fn list(req: &Request, provider: Data<&Arc<Provider>>, templates: Data<&Arc<Templates>>) -> Response {
    let (provider, templates) = (provider.0.as_ref(), templates.0.as_ref());
    let session = try_page!(operator(provider, templates, req, StatusCode::FOUND).await);
    let query = match query_pairs(req) {
        Ok(query) => query,
        Err(e) => return error_page(templates, &e),
    };
    let q = field(&query, "q").trim().to_string();
    let after = Some(field(&query, "after")).filter(|a| !a.is_empty());
    let found = search(
        |after| async move { provider.users_page(after.as_deref(), MAX_PAGE).await },
        after.clone(),
        |u: &UserRecord| {
            q.is_empty()
                || contains(&u.username, &q)
                || contains(&u.user_id, &q)
                || u.email.as_deref().is_some_and(|e| contains(e, &q))
        },
        |u| u.user_id.clone(),
    )
    .await;
    let found = match found {
        Ok(found) => found,
        Err(e) => return error_page(templates, &e),
    };
    let (users, cut_short): (Vec<_>, _) = (found.items.iter().map(summary).collect(), found.cut_short);
    let next = found
        .next
        .map(|n| format!("/admin/users?q={}&after={}", encode(&q), encode(&n)));
    let ctx = context! { users, q, next, cut_short, paged => after.is_some() };
    console_page(templates, &session, "users", "console_users.html", ctx)
}

async fn user(provider: &Provider, templates: &Templates, user_id: &str) -> Result<UserRecord, Box<Response>> {
    match provider.accounts.find_user(user_id).await {
        Ok(Some(user)) => Ok(user),
        Ok(None) => Err(Box::new(error_page(templates, &not_found("user")))),
        Err(e) => Err(Box::new(error_page(templates, &e))),
    }
}

/// Grants as the pages list them, with the client's and user's names.
async fn grant_rows(provider: &Provider, grants: &[GrantRecord]) -> Vec<Value> {
    let mut rows = Vec::new();
    for grant in grants {
        let client = provider.clients.find_client(&grant.client_id).await.ok().flatten();
        let user = provider.accounts.find_user(&grant.user_id).await.ok().flatten();
        rows.push(context! {
            grant_id => &grant.grant_id,
            client_id => &grant.client_id,
            client_name => client.map(|c| c.name),
            user_id => &grant.user_id,
            username => user.map(|u| u.username),
            scope => &grant.scope,
            created_at => date(grant.created_at),
            revoked => grant.revoked,
        });
    }
    rows
}

fn user_page(
    templates: &Templates,
    session: &Session,
    user: &UserRecord,
    grants: Vec<Value>,
    more_grants: bool,
    factors: &[FactorSummary],
    notice: Option<String>,
) -> Response {
    let factors: Vec<Value> = factors
        .iter()
        .map(|f| {
            context! {
                id => &f.id,
                kind => f.kind,
                name => &f.name,
                created => date(f.created_at),
                last_used => f.last_used_at.map(date),
                remaining => f.remaining,
            }
        })
        .collect();
    let ctx = context! {
        user => summary(user),
        grants,
        factors,
        more_grants,
        notice,
        given_name => &user.profile.given_name,
        family_name => &user.profile.family_name,
        name => &user.profile.name,
    };
    console_page(templates, session, "users", "console_user.html", ctx)
}

/// GET /admin/users/:id
#[handler]
pub(super) async fn detail(
    req: &Request,
    Path(id): Path<String>,
    provider: Data<&Arc<Provider>>,
    templates: Data<&Arc<Templates>>,
) -> Response {
    let (provider, templates) = (provider.0.as_ref(), templates.0.as_ref());
    let session = try_page!(operator(provider, templates, req, StatusCode::FOUND).await);
    let user = try_page!(user(provider, templates, &id).await);
    let page = match provider.grants_page(Some(&id), None, None, PAGE).await {
        Ok(page) => page,
        Err(e) => return error_page(templates, &e),
    };
    let grants = grant_rows(provider, &page.items).await;
    let factors = match provider.accounts.factors(&user.user_id).await {
        Ok(factors) => factors,
        Err(e) => return error_page(templates, &e),
    };
    user_page(
        templates,
        &session,
        &user,
        grants,
        page.next_cursor.is_some(),
        &factors,
        None,
    )
}

/// POST /admin/users/:id/factors/:factor/remove: asks for confirmation, then removes one of
/// the user's sign-in factors (recorded with the operator).
#[handler]
pub(super) async fn remove_factor(
    req: &Request,
    Path((id, factor)): Path<(String, String)>,
    body: Body,
    provider: Data<&Arc<Provider>>,
    templates: Data<&Arc<Templates>>,
) -> Response {
    let (provider, templates) = (provider.0.as_ref(), templates.0.as_ref());
    let (session, form) = try_page!(operator_form(provider, templates, req, body).await);
    let user = try_page!(user(provider, templates, &id).await);
    if !confirmed(&form) {
        return confirm_page(
            templates,
            &session,
            Confirm {
                title: "Remove this sign-in factor?",
                message: format!(
                    "{} can no longer sign in with it ({factor}). If second factors are required of them, they add one again at their next login.",
                    user.username
                ),
                warning: None,
                action: format!("/admin/users/{}/factors/{}/remove", encode(&id), encode(&factor)),
                button: "Remove factor",
                cancel: format!("/admin/users/{}", encode(&id)),
                fields: vec![],
            },
        );
    }
    let by = caller(&session, req);
    match provider.accounts.remove_factor(&by, &user, &factor).await {
        Ok(true) => redirect(StatusCode::SEE_OTHER, &format!("/admin/users/{}", encode(&id))),
        Ok(false) => error_page(templates, &not_found("factor")),
        Err(e) => error_page(templates, &e),
    }
}

/// GET /admin/users/new
#[handler]
pub(super) async fn new_form(
    req: &Request,
    provider: Data<&Arc<Provider>>,
    templates: Data<&Arc<Templates>>,
) -> Response {
    let (provider, templates) = (provider.0.as_ref(), templates.0.as_ref());
    let session = try_page!(operator(provider, templates, req, StatusCode::FOUND).await);
    let ctx = context! { error => None::<String>, username => "", email => "" };
    console_page(templates, &session, "users", "console_user_form.html", ctx)
}

/// POST /admin/users/new
#[handler]
pub(super) async fn create(
    req: &Request,
    body: Body,
    provider: Data<&Arc<Provider>>,
    templates: Data<&Arc<Templates>>,
) -> Response {
    let (provider, templates) = (provider.0.as_ref(), templates.0.as_ref());
    let (session, form) = try_page!(operator_form(provider, templates, req, body).await);
    let by = caller(&session, req);
    let (username, email) = (field(&form, "username").trim().to_string(), field(&form, "email"));
    let edit = ProfileEdit {
        email: Some(email.trim().to_string()).filter(|e| !e.is_empty()),
        ..ProfileEdit::default()
    };
    let created = provider
        .accounts
        .create_user_with_profile(&by, &username, &field(&form, "password"), edit)
        .await;
    match created {
        Ok(user) => redirect(
            StatusCode::SEE_OTHER,
            &format!("/admin/users/{}", encode(&user.user_id)),
        ),
        Err(e) if !form_can_fix(&e) => error_page(templates, &e),
        Err(e) => {
            let ctx = context! { error => e.description, username, email };
            let mut response = console_page(templates, &session, "users", "console_user_form.html", ctx);
            response.set_status(StatusCode::BAD_REQUEST);
            response
        }
    }
}

/// POST /admin/users/:id/password: sets a new password; every session of the user ends, and
/// with `revoke_grants` their grants are revoked too (after a compromise).
#[handler]
pub(super) async fn reset_password(
    req: &Request,
    Path(id): Path<String>,
    body: Body,
    provider: Data<&Arc<Provider>>,
    templates: Data<&Arc<Templates>>,
) -> Response {
    let (provider, templates) = (provider.0.as_ref(), templates.0.as_ref());
    let (session, form) = try_page!(operator_form(provider, templates, req, body).await);
    let user = try_page!(user(provider, templates, &id).await);
    let by = caller(&session, req);
    let set = provider
        .accounts
        .set_password(&by, &id, &field(&form, "password"))
        .await;
    if let Err(e) = set {
        return error_page(templates, &e);
    }
    let mut notice = format!(
        "The password of {} was reset; their sessions have ended.",
        user.username
    );
    if !field(&form, "revoke_grants").is_empty() {
        let revoked = provider.accounts.revoke_user_grants(&by, &id).await;
        match revoked {
            Ok(n) => notice.push_str(&format!(" {n} grant(s) revoked.")),
            Err(e) => return error_page(templates, &e),
        }
    }
    let page = match provider.grants_page(Some(&id), None, None, PAGE).await {
        Ok(page) => page,
        Err(e) => return error_page(templates, &e),
    };
    let grants = grant_rows(provider, &page.items).await;
    let factors = match provider.accounts.factors(&user.user_id).await {
        Ok(factors) => factors,
        Err(e) => return error_page(templates, &e),
    };
    user_page(
        templates,
        &session,
        &user,
        grants,
        page.next_cursor.is_some(),
        &factors,
        Some(notice),
    )
}

/// POST /admin/users/:id/disable: asks for confirmation, then disables the account, which ends
/// its sessions and revokes its grants at once.
#[handler]
pub(super) async fn disable(
    req: &Request,
    Path(id): Path<String>,
    body: Body,
    provider: Data<&Arc<Provider>>,
    templates: Data<&Arc<Templates>>,
) -> Response {
    let (provider, templates) = (provider.0.as_ref(), templates.0.as_ref());
    let (session, form) = try_page!(operator_form(provider, templates, req, body).await);
    let user = try_page!(user(provider, templates, &id).await);
    if !confirmed(&form) {
        let message = format!(
            "{} will not be able to log in. Every session they have ends and every grant they gave is revoked at once: their apps' refresh tokens stop working.",
            user.username
        );
        return confirm_page(
            templates,
            &session,
            Confirm {
                title: "Disable this user?",
                message,
                warning: (user.user_id == session.user.user_id).then(|| {
                    "This is your own account: it cannot be disabled from its own session; another operator can."
                        .to_string()
                }),
                action: format!("/admin/users/{}/disable", encode(&id)),
                button: "Disable user",
                cancel: format!("/admin/users/{}", encode(&id)),
                fields: vec![],
            },
        );
    }
    let by = caller(&session, req);
    let disabled = provider.accounts.set_disabled(&by, &id, true).await;
    match disabled {
        Ok(_) => redirect(StatusCode::SEE_OTHER, &format!("/admin/users/{}", encode(&id))),
        Err(e) => error_page(templates, &e),
    }
}

/// POST /admin/users/:id/enable
#[handler]
pub(super) async fn enable(
    req: &Request,
    Path(id): Path<String>,
    body: Body,
    provider: Data<&Arc<Provider>>,
    templates: Data<&Arc<Templates>>,
) -> Response {
    let (provider, templates) = (provider.0.as_ref(), templates.0.as_ref());
    let (session, _form) = try_page!(operator_form(provider, templates, req, body).await);
    try_page!(user(provider, templates, &id).await);
    let by = caller(&session, req);
    let enabled = provider.accounts.set_disabled(&by, &id, false).await;
    match enabled {
        Ok(_) => redirect(StatusCode::SEE_OTHER, &format!("/admin/users/{}", encode(&id))),
        Err(e) => error_page(templates, &e),
    }
}

/// POST /admin/users/:id/delete: asks for confirmation, then deletes the user and revokes
/// their grants.
#[handler]
pub(super) async fn delete(
    req: &Request,
    Path(id): Path<String>,
    body: Body,
    provider: Data<&Arc<Provider>>,
    templates: Data<&Arc<Templates>>,
) -> Response {
    let (provider, templates) = (provider.0.as_ref(), templates.0.as_ref());
    let (session, form) = try_page!(operator_form(provider, templates, req, body).await);
    let user = try_page!(user(provider, templates, &id).await);
    if !confirmed(&form) {
        return confirm_page(
            templates,
            &session,
            Confirm {
                title: "Delete this user?",
                message: format!(
                    "{} and their account are removed and every grant they gave is revoked. This cannot be undone.",
                    user.username
                ),
                warning: (user.user_id == session.user.user_id).then(|| {
                    "This is your own account: it cannot be deleted from its own session; another operator can."
                        .to_string()
                }),
                action: format!("/admin/users/{}/delete", encode(&id)),
                button: "Delete user",
                cancel: format!("/admin/users/{}", encode(&id)),
                fields: vec![],
            },
        );
    }
    let by = caller(&session, req);
    let deleted = provider.delete_user(&by, &id).await;
    match deleted {
        Ok(_) => redirect(StatusCode::SEE_OTHER, "/admin/users"),
        Err(e) => error_page(templates, &e),
    }
}

/// GET /admin/grants?user=…&client=…&after=…: `user` is a user id or a username.
#[handler]
pub(super) async fn grant_list(
    req: &Request,
    provider: Data<&Arc<Provider>>,
    templates: Data<&Arc<Templates>>,
) -> Response {
    let (provider, templates) = (provider.0.as_ref(), templates.0.as_ref());
    let session = try_page!(operator(provider, templates, req, StatusCode::FOUND).await);
    let query = match query_pairs(req) {
        Ok(query) => query,
        Err(e) => return error_page(templates, &e),
    };
    let (user_q, client_q) = (
        field(&query, "user").trim().to_string(),
        field(&query, "client").trim().to_string(),
    );
    let after = Some(field(&query, "after")).filter(|a| !a.is_empty());
    let user_id = match user_q.as_str() {
        "" => None,
        q => match provider.accounts.find_user(q).await {
            Ok(Some(user)) => Some(user.user_id),
            Ok(None) => match provider.accounts.find_user_by_name(q).await {
                Ok(found) => Some(found.map_or_else(|| q.to_string(), |u| u.user_id)),
                Err(e) => return error_page(templates, &e),
            },
            Err(e) => return error_page(templates, &e),
        },
    };
    let client_id = Some(client_q.clone()).filter(|c| !c.is_empty());
    let page = match provider
        .grants_page(user_id.as_deref(), client_id.as_deref(), after.as_deref(), PAGE)
        .await
    {
        Ok(page) => page,
        Err(e) => return error_page(templates, &e),
    };
    let grants = grant_rows(provider, &page.items).await;
    let return_to = format!("/admin/grants?user={}&client={}", encode(&user_q), encode(&client_q));
    let next = page.next_cursor.map(|n| format!("{return_to}&after={}", encode(&n)));
    let ctx = context! { grants, user => user_q, client => client_q, next, return_to, paged => after.is_some() };
    console_page(templates, &session, "grants", "console_grants.html", ctx)
}

/// Where to go back to after an action: a console path given by the form, else `fallback`.
fn back_to(form: &[(String, String)], fallback: &str) -> String {
    let wanted = field(form, "return_to");
    // Only a path of the console: never another origin (`//host`) or a scheme.
    let plain = !wanted.contains("//") && !wanted.contains('\\') && !wanted.chars().any(char::is_control);
    if wanted.starts_with("/admin/") && plain {
        wanted
    } else {
        fallback.to_string()
    }
}

/// POST /admin/grants/:id/revoke: every refresh token of the grant stops working at once.
#[handler]
pub(super) async fn revoke_grant(
    req: &Request,
    Path(id): Path<String>,
    body: Body,
    provider: Data<&Arc<Provider>>,
    templates: Data<&Arc<Templates>>,
) -> Response {
    let (provider, templates) = (provider.0.as_ref(), templates.0.as_ref());
    let (session, form) = try_page!(operator_form(provider, templates, req, body).await);
    let by = caller(&session, req);
    let revoked = provider.revoke_grant(&by, &id).await;
    match revoked {
        Ok(grant) => redirect(
            StatusCode::SEE_OTHER,
            &back_to(&form, &format!("/admin/users/{}", encode(&grant.user_id))),
        ),
        Err(e) => error_page(templates, &e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_action_returns_only_to_a_console_path() {
        let form = |to: &str| vec![("return_to".to_string(), to.to_string())];
        assert_eq!(back_to(&form("/admin/grants?user=a"), "/x"), "/admin/grants?user=a");
        for bad in [
            "//evil.example/admin/",
            "https://evil.example/",
            "/admin/..//evil",
            "/o/login/",
            "",
        ] {
            assert_eq!(back_to(&form(bad), "/admin/users"), "/admin/users", "{bad}");
        }
    }
}
