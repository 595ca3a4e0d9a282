//! `/o/applications/`: a logged-in user registers and manages their own apps. The pages call
//! the same client code as `tessera app` (register, update, rotate the secret, delete); a new
//! or rotated secret is rendered once, in the response to the POST that made it, and is never
//! stored or shown again.

use std::sync::Arc;

use minijinja::{context, Value};
use poem::http::StatusCode;
use poem::web::{Data, Path};
use poem::{get, handler, Body, EndpointExt, Request, Response, Route};

use super::{caller, checked_form, date, error_page, page, redirect, visitor, Templates};
use crate::oauth::client::catalogue::{self, Grant};
use crate::oauth::client::switches::{Switch, SwitchValues};
use crate::oauth::client::ClientKeys;
use crate::oauth::client::NewClient;
use crate::oauth::endpoints as paths;
use crate::oauth::params::Params;
use crate::oauth::session::Session;
use crate::oauth::{Error, ErrorCode, Provider};
use crate::store::{ClientPolicy, ClientRecord, ClientType, GrantType, TokenExchangePolicy};

/// Adds the application pages, under [`paths::APPLICATIONS`], to `route`.
pub(super) fn mount(route: Route, templates: Arc<Templates>) -> Route {
    let at = |rest: &str| format!("{}{rest}", paths::APPLICATIONS);
    route
        .at(paths::APPLICATIONS, get(list).data(templates.clone()))
        .at(
            at("register/"),
            get(register_form).post(register).data(templates.clone()),
        )
        .at(at(":id/"), get(detail).data(templates.clone()))
        .at(at(":id/edit/"), get(edit_form).post(edit).data(templates.clone()))
        .at(
            at(":id/rotate-secret/"),
            poem::post(rotate_secret).data(templates.clone()),
        )
        .at(at(":id/delete/"), get(delete_form).post(delete).data(templates))
}

pub(super) fn client_type_name(client_type: ClientType) -> &'static str {
    match client_type {
        ClientType::Confidential => "confidential",
        ClientType::Public => "public",
    }
}

/// What the form shows: a client's settings, or what the user typed.
fn form_values(provider: &Provider, new: &NewClient) -> Value {
    let grants: Vec<_> = offered_grants(provider).map(|grant| grant_choice(grant, new)).collect();
    let chosen: Vec<&str> = new.scope.split(' ').collect();
    let scopes: Vec<_> = offered_scopes(provider)
        .map(|s| context! { name => &s.name, description => &s.description, checked => chosen.contains(&s.name.as_str()) })
        .collect();
    context! {
        name => &new.name,
        client_type => client_type_name(new.client_type),
        grants,
        redirect_uris => new.redirect_uris.join("\n"),
        post_logout_redirect_uris => new.post_logout_redirect_uris.join("\n"),
        scopes,
        jwks_uri => match &new.keys { Some(ClientKeys::JwksUri(uri)) => uri.clone(), _ => String::new() },
        jwks => match &new.keys {
            Some(ClientKeys::Jwks(jwks)) => serde_json::to_string_pretty(jwks).unwrap_or_default(),
            _ => String::new(),
        },
        switches => switch_boxes(&new.policy, false),
        token_exchange_offered => provider.config.registration.allow_token_exchange,
        token_exchange_resources => &provider.config.registration.resources,
        token_exchange_audiences => new.policy.token_exchange.audiences.join("\n"),
        token_exchange_subject_audiences => new.policy.token_exchange.subject_audiences.join("\n"),
        token_exchange_require_actor => new.policy.token_exchange.require_actor,
    }
}

/// The grants a user may choose: client_credentials and token exchange only where the
/// registration policy allows them.
fn offered_grants(provider: &Provider) -> impl Iterator<Item = &'static Grant> + '_ {
    catalogue::in_form_order().filter(|grant| grant.offered_to_people(&provider.config.registration))
}

/// A grant's checkbox in a client form (`grant_<form>`).
pub(super) fn grant_choice(grant: &Grant, new: &NewClient) -> Value {
    context! { value => grant.form, label => grant.label, checked => new.grant_types.contains(&grant.grant) }
}

/// The grants whose checkboxes a submitted client form ticked.
pub(super) fn chosen_grants(checked: impl Fn(&str) -> bool) -> Vec<GrantType> {
    catalogue::in_form_order()
        .filter(|grant| checked(&format!("grant_{}", grant.form)))
        .map(|grant| grant.grant)
        .collect()
}

/// The checkboxes of the switches a form offers: every one to an operator, the self-service
/// ones to the applications pages.
pub(super) fn switch_boxes(policy: &ClientPolicy, operator: bool) -> Vec<Value> {
    SwitchValues::of(policy)
        .offered(operator)
        .map(|(switch, on)| context! { name => switch.name, label => switch.description, checked => on })
        .collect()
}

/// The switches a submitted form ticked; those it does not offer keep `base`'s values.
pub(super) fn chosen_switches(checked: impl Fn(&str) -> bool, base: &ClientPolicy, operator: bool) -> SwitchValues {
    let value = |switch: &Switch| match switch.offered(operator) {
        true => checked(switch.name),
        false => switch.of(base),
    };
    SwitchValues::read(|switch| Ok::<_, std::convert::Infallible>(Some(value(switch)))).unwrap_or_default()
}

/// A client's switches as its page shows them (title, and what it means on or off).
pub(super) fn switch_lines(policy: &ClientPolicy, operator: bool) -> Vec<Value> {
    SwitchValues::of(policy)
        .offered(operator)
        .map(|(switch, on)| context! { title => switch.title, shown => switch.shown(on) })
        .collect()
}

/// The scopes a user may choose: the registration policy's.
fn offered_scopes(provider: &Provider) -> impl Iterator<Item = &crate::config::ScopeInfo> {
    let allowed = provider.clients.self_service_scopes();
    provider.config.scopes.iter().filter(move |s| allowed.contains(&s.name))
}

/// The non-blank lines of a textarea, trimmed.
pub(super) fn lines(text: &str) -> Vec<String> {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(String::from)
        .collect()
}

/// The public keys named in the form (a JWKS URL or a JWK Set), or why they cannot be used.
pub(super) fn keys_from_form(jwks_uri: &str, jwks: &str) -> Result<Option<ClientKeys>, String> {
    match (jwks_uri.trim(), jwks.trim()) {
        ("", "") => Ok(None),
        (uri, "") => Ok(Some(ClientKeys::JwksUri(uri.to_string()))),
        ("", jwks) => serde_json::from_str(jwks)
            .map(|jwks| Some(ClientKeys::Jwks(jwks)))
            .map_err(|e| format!("the JWK Set is not JSON: {e}")),
        _ => Err("give a JWK Set URL or a JWK Set, not both".into()),
    }
}

/// Reads the submitted form into client settings (`client_type` only matters on registration).
fn settings_from_form(provider: &Provider, form: &Params<'_>, base: NewClient) -> (NewClient, Option<String>) {
    let field = |name: &str| form.get(name).ok().flatten().unwrap_or_default().to_string();
    let checked = |name: &str| form.get(name).ok().flatten().is_some();
    let client_type = match field("client_type").as_str() {
        "public" => ClientType::Public,
        "confidential" => ClientType::Confidential,
        _ => base.client_type,
    };
    let (keys, error) = match keys_from_form(&field("jwks_uri"), &field("jwks")) {
        Ok(keys) => (keys, None),
        Err(why) => (base.keys.clone(), Some(why)),
    };
    let new = NewClient {
        name: field("name"),
        client_type,
        grant_types: chosen_grants(checked),
        redirect_uris: lines(&field("redirect_uris")),
        post_logout_redirect_uris: lines(&field("post_logout_redirect_uris")),
        scope: offered_scopes(provider)
            .filter(|s| checked(&format!("scope_{}", s.name)))
            .map(|s| s.name.clone())
            .collect::<Vec<_>>()
            .join(" "),
        // Only an operator can make an app skip consent; the pages never read such a field.
        skip_consent: false,
        keys,
        policy: chosen_switches(checked, &base.policy, false).with(TokenExchangePolicy {
            audiences: lines(&field("token_exchange_audiences")),
            subject_audiences: lines(&field("token_exchange_subject_audiences")),
            require_actor: checked("token_exchange_require_actor"),
        }),
        ..base
    };
    (new, error)
}

fn detail_page(templates: &Templates, client: &ClientRecord, session: &Session, secret: Option<&str>) -> Response {
    let grants: Vec<&str> = client
        .grant_types
        .iter()
        .map(|g| crate::oauth::client::catalogue::wire(*g))
        .collect();
    let app = context! {
        client_id => &client.client_id,
        name => &client.name,
        client_type => client_type_name(client.client_type),
        confidential => client.client_type == ClientType::Confidential,
        has_secret => client.secret_hash.is_some(),
        jwks_uri => &client.jwks_uri,
        key_count => client.jwks.as_ref().and_then(|j| j["keys"].as_array()).map(Vec::len),
        grant_types => grants.join(", "),
        redirect_uris => &client.redirect_uris,
        post_logout_redirect_uris => &client.post_logout_redirect_uris,
        scopes => client.scopes.join(" "),
        created_at => date(client.created_at),
        switches => switch_lines(&client.policy, false),
        token_exchange => client.grant_types.contains(&GrantType::TokenExchange).then(|| {
            let exchange = &client.policy.token_exchange;
            context! {
                audiences => &exchange.audiences,
                subject_audiences => &exchange.subject_audiences,
                require_actor => exchange.require_actor,
            }
        }),
    };
    page(
        StatusCode::OK,
        templates.render(
            "application.html",
            context! { app, secret, csrf_token => &session.record.csrf_token },
        ),
    )
}

#[allow(clippy::too_many_arguments)]
fn form_page(
    provider: &Provider,
    templates: &Templates,
    status: StatusCode,
    session: &Session,
    new: &NewClient,
    editing: Option<&str>,
    error: Option<&str>,
) -> Response {
    let (heading, action, submit) = match editing {
        Some(id) => (
            "Edit application".to_string(),
            format!("{}{id}/edit/", paths::APPLICATIONS),
            "Save",
        ),
        None => (
            "Register a new application".to_string(),
            format!("{}register/", paths::APPLICATIONS),
            "Register",
        ),
    };
    let html = templates.render(
        "application_form.html",
        context! {
            heading, action, submit, error,
            editing => editing.is_some(),
            form => form_values(provider, new),
            csrf_token => &session.record.csrf_token,
        },
    );
    page(status, html)
}

/// The visitor's own client, or a 404 page: other people's apps do not exist for them.
async fn owned_client(
    provider: &Provider,
    templates: &Templates,
    visitor: &Session,
    client_id: &str,
) -> Result<ClientRecord, Box<Response>> {
    match provider.clients.find_client(client_id).await {
        Ok(Some(client)) if client.owner_user_id.as_deref() == Some(visitor.user.user_id.as_str()) => Ok(client),
        Ok(_) => Err(Box::new(error_page(
            templates,
            &Error::new(ErrorCode::NotFound, "no such application"),
        ))),
        Err(e) => Err(Box::new(error_page(templates, &e))),
    }
}

/// GET /o/applications/
#[handler]
pub async fn list(req: &Request, provider: Data<&Arc<Provider>>, templates: Data<&Arc<Templates>>) -> Response {
    let (provider, templates) = (provider.0.as_ref(), templates.0.as_ref());
    let visitor = try_page!(visitor(provider, templates, req, StatusCode::FOUND).await);
    let apps = match provider.clients.clients_owned_by(&visitor.user.user_id).await {
        Ok(apps) => apps,
        Err(e) => return error_page(templates, &e),
    };
    let apps: Vec<_> = apps
        .iter()
        .map(
            |c| context! { client_id => &c.client_id, name => &c.name, client_type => client_type_name(c.client_type) },
        )
        .collect();
    page(
        StatusCode::OK,
        templates.render(
            "applications.html",
            context! { username => &visitor.user.username, apps },
        ),
    )
}

/// GET /o/applications/register/
#[handler]
pub async fn register_form(
    req: &Request,
    provider: Data<&Arc<Provider>>,
    templates: Data<&Arc<Templates>>,
) -> Response {
    let (provider, templates) = (provider.0.as_ref(), templates.0.as_ref());
    let visitor = try_page!(visitor(provider, templates, req, StatusCode::FOUND).await);
    let blank = NewClient {
        name: String::new(),
        client_type: ClientType::Confidential,
        grant_types: vec![GrantType::AuthorizationCode, GrantType::RefreshToken],
        redirect_uris: vec![],
        scope: provider.clients.self_service_scopes().join(" "),
        resources: vec![],
        access_token_ttl: None,
        refresh_token_ttl: None,
        skip_consent: false,
        owner_user_id: Some(visitor.user.user_id.clone()),
        post_logout_redirect_uris: vec![],
        id_token_signed_response_alg: None,
        admin: false,
        keys: None,
        policy: Default::default(),
    };
    form_page(provider, templates, StatusCode::OK, &visitor, &blank, None, None)
}

/// POST /o/applications/register/: the new app's page, with its secret shown this once.
#[handler]
pub async fn register(
    req: &Request,
    body: Body,
    provider: Data<&Arc<Provider>>,
    templates: Data<&Arc<Templates>>,
) -> Response {
    let (provider, templates) = (provider.0.as_ref(), templates.0.as_ref());
    let visitor = try_page!(visitor(provider, templates, req, StatusCode::SEE_OTHER).await);
    let form = try_page!(checked_form(templates, &visitor, body).await);
    let base = NewClient {
        name: String::new(),
        client_type: ClientType::Confidential,
        grant_types: vec![],
        redirect_uris: vec![],
        scope: String::new(),
        resources: vec![],
        access_token_ttl: None,
        refresh_token_ttl: None,
        skip_consent: false,
        owner_user_id: Some(visitor.user.user_id.clone()),
        post_logout_redirect_uris: vec![],
        id_token_signed_response_alg: None,
        admin: false,
        keys: None,
        policy: Default::default(),
    };
    let (new, form_error) = settings_from_form(provider, &Params::new(&form), base);
    let registered = match form_error {
        Some(why) => Err(Error::invalid_request(why)),
        None => {
            provider
                .clients
                .register_client(&caller(&visitor, req), new.clone())
                .await
        }
    };
    match registered {
        Ok((client, secret)) => detail_page(templates, &client, &visitor, secret.as_deref()),
        Err(e) if !super::form_can_fix(&e) => error_page(templates, &e),
        Err(e) => form_page(
            provider,
            templates,
            StatusCode::BAD_REQUEST,
            &visitor,
            &new,
            None,
            Some(&e.description),
        ),
    }
}

/// GET /o/applications/:id/
#[handler]
pub async fn detail(
    req: &Request,
    Path(id): Path<String>,
    provider: Data<&Arc<Provider>>,
    templates: Data<&Arc<Templates>>,
) -> Response {
    let (provider, templates) = (provider.0.as_ref(), templates.0.as_ref());
    let visitor = try_page!(visitor(provider, templates, req, StatusCode::FOUND).await);
    let client = try_page!(owned_client(provider, templates, &visitor, &id).await);
    detail_page(templates, &client, &visitor, None)
}

/// GET /o/applications/:id/edit/
#[handler]
pub async fn edit_form(
    req: &Request,
    Path(id): Path<String>,
    provider: Data<&Arc<Provider>>,
    templates: Data<&Arc<Templates>>,
) -> Response {
    let (provider, templates) = (provider.0.as_ref(), templates.0.as_ref());
    let visitor = try_page!(visitor(provider, templates, req, StatusCode::FOUND).await);
    let client = try_page!(owned_client(provider, templates, &visitor, &id).await);
    form_page(
        provider,
        templates,
        StatusCode::OK,
        &visitor,
        &NewClient::of(&client),
        Some(&id),
        None,
    )
}

/// POST /o/applications/:id/edit/
#[handler]
pub async fn edit(
    req: &Request,
    Path(id): Path<String>,
    body: Body,
    provider: Data<&Arc<Provider>>,
    templates: Data<&Arc<Templates>>,
) -> Response {
    let (provider, templates) = (provider.0.as_ref(), templates.0.as_ref());
    let visitor = try_page!(visitor(provider, templates, req, StatusCode::SEE_OTHER).await);
    let client = try_page!(owned_client(provider, templates, &visitor, &id).await);
    let form = try_page!(checked_form(templates, &visitor, body).await);
    let (new, form_error) = settings_from_form(provider, &Params::new(&form), NewClient::of(&client));
    let updated = match form_error {
        Some(why) => Err(Error::invalid_request(why)),
        None => {
            provider
                .clients
                .update_client(&caller(&visitor, req), &id, new.clone())
                .await
        }
    };
    match updated {
        Ok(_) => redirect(StatusCode::SEE_OTHER, &format!("{}{id}/", paths::APPLICATIONS)),
        Err(e) if !super::form_can_fix(&e) => error_page(templates, &e),
        Err(e) => form_page(
            provider,
            templates,
            StatusCode::BAD_REQUEST,
            &visitor,
            &new,
            Some(&id),
            Some(&e.description),
        ),
    }
}

/// POST /o/applications/:id/rotate-secret/: the app's page with the new secret, shown once.
#[handler]
pub async fn rotate_secret(
    req: &Request,
    Path(id): Path<String>,
    body: Body,
    provider: Data<&Arc<Provider>>,
    templates: Data<&Arc<Templates>>,
) -> Response {
    let (provider, templates) = (provider.0.as_ref(), templates.0.as_ref());
    let visitor = try_page!(visitor(provider, templates, req, StatusCode::SEE_OTHER).await);
    let client = try_page!(owned_client(provider, templates, &visitor, &id).await);
    try_page!(checked_form(templates, &visitor, body).await);
    match provider.clients.rotate_client_secret(&caller(&visitor, req), &id).await {
        Ok(secret) => detail_page(templates, &client, &visitor, Some(&secret)),
        Err(e) => error_page(templates, &e),
    }
}

/// GET /o/applications/:id/delete/: asks for confirmation.
#[handler]
pub async fn delete_form(
    req: &Request,
    Path(id): Path<String>,
    provider: Data<&Arc<Provider>>,
    templates: Data<&Arc<Templates>>,
) -> Response {
    let (provider, templates) = (provider.0.as_ref(), templates.0.as_ref());
    let visitor = try_page!(visitor(provider, templates, req, StatusCode::FOUND).await);
    let client = try_page!(owned_client(provider, templates, &visitor, &id).await);
    let ctx =
        context! { name => &client.name, client_id => &client.client_id, csrf_token => &visitor.record.csrf_token };
    page(StatusCode::OK, templates.render("application_delete.html", ctx))
}

/// POST /o/applications/:id/delete/
#[handler]
pub async fn delete(
    req: &Request,
    Path(id): Path<String>,
    body: Body,
    provider: Data<&Arc<Provider>>,
    templates: Data<&Arc<Templates>>,
) -> Response {
    let (provider, templates) = (provider.0.as_ref(), templates.0.as_ref());
    let visitor = try_page!(visitor(provider, templates, req, StatusCode::SEE_OTHER).await);
    try_page!(owned_client(provider, templates, &visitor, &id).await);
    try_page!(checked_form(templates, &visitor, body).await);
    match provider.delete_client(&caller(&visitor, req), &id).await {
        Ok(_) => redirect(StatusCode::SEE_OTHER, paths::APPLICATIONS),
        Err(e) => error_page(templates, &e),
    }
}
