//! `/admin/clients`: every client, searchable by name or client_id and paged; a client's
//! settings and live grants; create, edit, rotate the secret (the new one shown once, in the
//! response to the POST that made it) and delete (after confirmation).

use std::sync::Arc;

use minijinja::{context, Value};
use poem::http::StatusCode;
use poem::web::{Data, Path};
use poem::{handler, Body, Request, Response};

use super::super::applications::{
    chosen_grants, chosen_switches, client_type_name, grant_choice, keys_from_form, lines, switch_boxes, switch_lines,
};
use super::super::redirect;
use super::{
    caller, confirm_page, confirmed, console_page, contains, encode, error_page, field, form_can_fix, operator,
    operator_form, search, Confirm, Templates,
};
use crate::oauth::admin::{not_found, MAX_PAGE};
use crate::oauth::client::catalogue;
use crate::oauth::client::ClientKeys;
use crate::oauth::client::NewClient;
use crate::oauth::scope::ADMIN_SCOPE;
use crate::oauth::session::Session;
use crate::oauth::{Error, Provider};
use crate::store::{ClientPolicy, ClientRecord, ClientType, GrantType, TokenExchangePolicy};

fn summary(client: &ClientRecord) -> Value {
    let grants: Vec<&str> = client
        .grant_types
        .iter()
        .map(|g| crate::oauth::client::catalogue::wire(*g))
        .collect();
    context! {
        client_id => &client.client_id,
        name => &client.name,
        client_type => client_type_name(client.client_type),
        grant_types => grants.join(", "),
        admin => client.admin,
        created_at => super::super::date(client.created_at),
    }
}

/// GET /admin/clients?q=…&after=…
#[handler]
pub(super) async fn list(req: &Request, provider: Data<&Arc<Provider>>, templates: Data<&Arc<Templates>>) -> Response {
    let (provider, templates) = (provider.0.as_ref(), templates.0.as_ref());
    let session = try_page!(operator(provider, templates, req, StatusCode::FOUND).await);
    let query = match super::super::query_pairs(req) {
        Ok(query) => query,
        Err(e) => return error_page(templates, &e),
    };
    let q = field(&query, "q").trim().to_string();
    let after = Some(field(&query, "after")).filter(|a| !a.is_empty());
    let found = search(
        |after| async move { provider.clients_page(after.as_deref(), MAX_PAGE).await },
        after.clone(),
        |c: &ClientRecord| q.is_empty() || contains(&c.name, &q) || contains(&c.client_id, &q),
        |c| c.client_id.clone(),
    )
    .await;
    let found = match found {
        Ok(found) => found,
        Err(e) => return error_page(templates, &e),
    };
    let (clients, cut_short): (Vec<_>, _) = (found.items.iter().map(summary).collect(), found.cut_short);
    let next = found
        .next
        .map(|n| format!("/admin/clients?q={}&after={}", encode(&q), encode(&n)));
    let ctx = context! { clients, q, next, cut_short, paged => after.is_some() };
    console_page(templates, &session, "clients", "console_clients.html", ctx)
}

/// The client, or a 404 page.
async fn client(provider: &Provider, templates: &Templates, client_id: &str) -> Result<ClientRecord, Box<Response>> {
    match provider.clients.find_client(client_id).await {
        Ok(Some(client)) => Ok(client),
        Ok(None) => Err(Box::new(error_page(templates, &not_found("client")))),
        Err(e) => Err(Box::new(error_page(templates, &e))),
    }
}

/// The client's page, with every setting, its live grants, and (once) a new secret.
async fn detail_page(
    provider: &Provider,
    templates: &Templates,
    session: &Session,
    client: &ClientRecord,
    secret: Option<&str>,
) -> Response {
    let live_grants = match provider.live_grants_of_client(&client.client_id).await {
        Ok(tally) => tally.to_string(),
        Err(e) => return error_page(templates, &e),
    };
    let owner = match &client.owner_user_id {
        Some(id) => provider.accounts.find_user(id).await.ok().flatten().map(|u| u.username),
        None => None,
    };
    let exchange = &client.policy.token_exchange;
    let ctx = context! {
        client => summary(client),
        secret,
        live_grants,
        owner,
        owner_user_id => &client.owner_user_id,
        has_secret => client.secret_hash.is_some(),
        redirect_uris => &client.redirect_uris,
        post_logout_redirect_uris => &client.post_logout_redirect_uris,
        scopes => client.scopes.join(" "),
        resources => &client.resources,
        access_token_ttl => client.access_token_ttl,
        refresh_token_ttl => client.refresh_token_ttl,
        skip_consent => client.skip_consent,
        id_token_alg => client.id_token_signed_response_alg.map(|a| a.as_str()).unwrap_or("RS256"),
        jwks_uri => &client.jwks_uri,
        key_count => client.jwks.as_ref().and_then(|j| j["keys"].as_array()).map(Vec::len),
        dynamically_registered => client.registration_token_hash.is_some(),
        auth_method => &client.token_endpoint_auth_method,
        first_used_at => client.first_used_at.map(super::super::date),
        switches => switch_lines(&client.policy, true),
        token_exchange_audiences => &exchange.audiences,
        token_exchange_subject_audiences => &exchange.subject_audiences,
        token_exchange_require_actor => exchange.require_actor,
    };
    console_page(templates, session, "clients", "console_client.html", ctx)
}

/// GET /admin/clients/:id
#[handler]
pub(super) async fn detail(
    req: &Request,
    Path(id): Path<String>,
    provider: Data<&Arc<Provider>>,
    templates: Data<&Arc<Templates>>,
) -> Response {
    let (provider, templates) = (provider.0.as_ref(), templates.0.as_ref());
    let session = try_page!(operator(provider, templates, req, StatusCode::FOUND).await);
    let client = try_page!(client(provider, templates, &id).await);
    detail_page(provider, templates, &session, &client, None).await
}

fn blank() -> NewClient {
    NewClient {
        name: String::new(),
        client_type: ClientType::Confidential,
        grant_types: vec![GrantType::AuthorizationCode, GrantType::RefreshToken],
        redirect_uris: vec![],
        scope: crate::oauth::client::CONSOLE_FORM_SCOPE.into(),
        resources: vec![],
        access_token_ttl: None,
        refresh_token_ttl: None,
        skip_consent: false,
        owner_user_id: None,
        post_logout_redirect_uris: vec![],
        id_token_signed_response_alg: None,
        admin: false,
        keys: None,
        policy: ClientPolicy::default(),
    }
}

/// Every scope an operator may give a client: the configured ones and the admin scope.
fn all_scopes(provider: &Provider) -> Vec<(String, String)> {
    let mut scopes: Vec<(String, String)> = provider
        .config
        .scopes
        .iter()
        .map(|s| (s.name.clone(), s.description.clone()))
        .collect();
    scopes.push((
        ADMIN_SCOPE.to_string(),
        "The admin API (admin clients only)".to_string(),
    ));
    scopes
}

fn form_values(provider: &Provider, new: &NewClient) -> Value {
    let grants: Vec<_> = catalogue::in_form_order()
        .map(|grant| grant_choice(grant, new))
        .collect();
    let chosen: Vec<&str> = new.scope.split(' ').collect();
    let scopes: Vec<_> = all_scopes(provider)
        .into_iter()
        .map(|(name, description)| {
            let checked = chosen.contains(&name.as_str());
            context! { name, description, checked }
        })
        .collect();
    let ttl = |t: Option<u64>| t.map(|t| t.to_string()).unwrap_or_default();
    context! {
        name => &new.name,
        client_type => client_type_name(new.client_type),
        grants,
        scopes,
        redirect_uris => new.redirect_uris.join("\n"),
        post_logout_redirect_uris => new.post_logout_redirect_uris.join("\n"),
        resources => new.resources.join("\n"),
        access_token_ttl => ttl(new.access_token_ttl),
        refresh_token_ttl => ttl(new.refresh_token_ttl),
        skip_consent => new.skip_consent,
        admin => new.admin,
        jwks_uri => match &new.keys { Some(ClientKeys::JwksUri(uri)) => uri.clone(), _ => String::new() },
        jwks => match &new.keys {
            Some(ClientKeys::Jwks(jwks)) => serde_json::to_string_pretty(jwks).unwrap_or_default(),
            _ => String::new(),
        },
        switches => switch_boxes(&new.policy, true),
        token_exchange_audiences => new.policy.token_exchange.audiences.join("\n"),
        token_exchange_subject_audiences => new.policy.token_exchange.subject_audiences.join("\n"),
        token_exchange_require_actor => new.policy.token_exchange.require_actor,
    }
}

/// The submitted settings over `base`, or why they cannot be used.
fn settings_from_form(provider: &Provider, form: &[(String, String)], base: NewClient) -> (NewClient, Option<String>) {
    let checked = |name: &str| !field(form, name).is_empty();
    let mut error = None;
    let mut ttl = |name: &str| match field(form, name).trim() {
        "" => None,
        text => match text.parse::<u64>() {
            Ok(n) if n > 0 => Some(n),
            _ => {
                error = Some(format!("{name} must be a whole number of seconds"));
                None
            }
        },
    };
    let (access_token_ttl, refresh_token_ttl) = (ttl("access_token_ttl"), ttl("refresh_token_ttl"));
    let keys = match keys_from_form(&field(form, "jwks_uri"), &field(form, "jwks")) {
        Ok(keys) => keys,
        Err(why) => {
            error = Some(why);
            base.keys.clone()
        }
    };
    let client_type = match field(form, "client_type").as_str() {
        "public" => ClientType::Public,
        "confidential" => ClientType::Confidential,
        _ => base.client_type,
    };
    let new = NewClient {
        name: field(form, "name").trim().to_string(),
        client_type,
        grant_types: chosen_grants(checked),
        redirect_uris: lines(&field(form, "redirect_uris")),
        post_logout_redirect_uris: lines(&field(form, "post_logout_redirect_uris")),
        resources: lines(&field(form, "resources")),
        scope: all_scopes(provider)
            .into_iter()
            .filter(|(name, _)| checked(&format!("scope_{name}")))
            .map(|(name, _)| name)
            .collect::<Vec<_>>()
            .join(" "),
        access_token_ttl,
        refresh_token_ttl,
        skip_consent: checked("skip_consent"),
        admin: checked("admin"),
        keys,
        policy: chosen_switches(checked, &base.policy, true).with(TokenExchangePolicy {
            audiences: lines(&field(form, "token_exchange_audiences")),
            subject_audiences: lines(&field(form, "token_exchange_subject_audiences")),
            require_actor: checked("token_exchange_require_actor"),
        }),
        ..base
    };
    (new, error)
}

fn form_page(
    provider: &Provider,
    templates: &Templates,
    status: StatusCode,
    session: &Session,
    new: &NewClient,
    editing: Option<&str>,
    error: Option<&str>,
) -> Response {
    let (heading, action) = match editing {
        Some(id) => (format!("Edit client {}", new.name), format!("/admin/clients/{id}/edit")),
        None => ("New client".to_string(), "/admin/clients/new".to_string()),
    };
    let ctx = context! {
        heading, action, error,
        editing => editing.is_some(),
        cancel => editing.map(|id| format!("/admin/clients/{id}")).unwrap_or_else(|| "/admin/clients".into()),
        form => form_values(provider, new),
    };
    let mut response = console_page(templates, session, "clients", "console_client_form.html", ctx);
    response.set_status(status);
    response
}

/// GET /admin/clients/new
#[handler]
pub(super) async fn new_form(
    req: &Request,
    provider: Data<&Arc<Provider>>,
    templates: Data<&Arc<Templates>>,
) -> Response {
    let (provider, templates) = (provider.0.as_ref(), templates.0.as_ref());
    let session = try_page!(operator(provider, templates, req, StatusCode::FOUND).await);
    form_page(provider, templates, StatusCode::OK, &session, &blank(), None, None)
}

/// POST /admin/clients/new: the new client's page, with its secret shown this once.
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
    let (new, form_error) = settings_from_form(provider, &form, blank());
    let registered = match form_error {
        Some(why) => Err(Error::invalid_request(why)),
        None => provider.clients.register_client(&by, new.clone()).await,
    };
    match registered {
        Ok((client, secret)) => detail_page(provider, templates, &session, &client, secret.as_deref()).await,
        Err(e) if !form_can_fix(&e) => error_page(templates, &e),
        Err(e) => form_page(
            provider,
            templates,
            StatusCode::BAD_REQUEST,
            &session,
            &new,
            None,
            Some(&e.description),
        ),
    }
}

/// GET /admin/clients/:id/edit
#[handler]
pub(super) async fn edit_form(
    req: &Request,
    Path(id): Path<String>,
    provider: Data<&Arc<Provider>>,
    templates: Data<&Arc<Templates>>,
) -> Response {
    let (provider, templates) = (provider.0.as_ref(), templates.0.as_ref());
    let session = try_page!(operator(provider, templates, req, StatusCode::FOUND).await);
    let client = try_page!(client(provider, templates, &id).await);
    form_page(
        provider,
        templates,
        StatusCode::OK,
        &session,
        &NewClient::of(&client),
        Some(&id),
        None,
    )
}

/// POST /admin/clients/:id/edit
#[handler]
pub(super) async fn edit(
    req: &Request,
    Path(id): Path<String>,
    body: Body,
    provider: Data<&Arc<Provider>>,
    templates: Data<&Arc<Templates>>,
) -> Response {
    let (provider, templates) = (provider.0.as_ref(), templates.0.as_ref());
    let (session, form) = try_page!(operator_form(provider, templates, req, body).await);
    let client = try_page!(client(provider, templates, &id).await);
    let by = caller(&session, req);
    let (new, form_error) = settings_from_form(provider, &form, NewClient::of(&client));
    let updated = match form_error {
        Some(why) => Err(Error::invalid_request(why)),
        None => provider.clients.update_client(&by, &id, new.clone()).await,
    };
    match updated {
        Ok(_) => redirect(StatusCode::SEE_OTHER, &format!("/admin/clients/{}", encode(&id))),
        Err(e) if !form_can_fix(&e) => error_page(templates, &e),
        Err(e) => form_page(
            provider,
            templates,
            StatusCode::BAD_REQUEST,
            &session,
            &new,
            Some(&id),
            Some(&e.description),
        ),
    }
}

/// POST /admin/clients/:id/rotate-secret: asks for confirmation, then shows the new secret once.
#[handler]
pub(super) async fn rotate_secret(
    req: &Request,
    Path(id): Path<String>,
    body: Body,
    provider: Data<&Arc<Provider>>,
    templates: Data<&Arc<Templates>>,
) -> Response {
    let (provider, templates) = (provider.0.as_ref(), templates.0.as_ref());
    let (session, form) = try_page!(operator_form(provider, templates, req, body).await);
    let client = try_page!(client(provider, templates, &id).await);
    if !confirmed(&form) {
        return confirm_page(
            templates,
            &session,
            Confirm {
                title: "Rotate the client secret?",
                message: format!(
                    "{} gets a new secret, shown once on the next page. The current secret stops working at once: the app fails to authenticate until it is given the new one.",
                    client.name
                ),
                warning: None,
                action: format!("/admin/clients/{}/rotate-secret", encode(&id)),
                button: "Rotate secret",
                cancel: format!("/admin/clients/{}", encode(&id)),
                fields: vec![],
            },
        );
    }
    let by = caller(&session, req);
    let rotated = provider.clients.rotate_client_secret(&by, &id).await;
    match rotated {
        Ok(secret) => detail_page(provider, templates, &session, &client, Some(&secret)).await,
        Err(e) => error_page(templates, &e),
    }
}

/// POST /admin/clients/:id/delete: asks for confirmation, then deletes.
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
    let client = try_page!(client(provider, templates, &id).await);
    if !confirmed(&form) {
        let live = match provider.live_grants_of_client(&id).await {
            Ok(tally) => format!("{tally} "),
            Err(_) => String::new(),
        };
        return confirm_page(
            templates,
            &session,
            Confirm {
                title: "Delete this client?",
                message: format!(
                    "{} ({}) will no longer be able to log anyone in or get tokens; its {live}live grant(s) are revoked and every user's consent to it forgotten. This cannot be undone.",
                    client.name, client.client_id
                ),
                warning: None,
                action: format!("/admin/clients/{}/delete", encode(&id)),
                button: "Delete client",
                cancel: format!("/admin/clients/{}", encode(&id)),
                fields: vec![],
            },
        );
    }
    let by = caller(&session, req);
    let deleted = provider.delete_client(&by, &id).await;
    match deleted {
        Ok(_) => redirect(StatusCode::SEE_OTHER, "/admin/clients"),
        Err(e) => error_page(templates, &e),
    }
}
