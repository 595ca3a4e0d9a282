//! `/admin/`: what the server holds, what it issued in the last hour, its keys and its health.

use std::sync::Arc;

use minijinja::context;
use poem::http::StatusCode;
use poem::web::Data;
use poem::{handler, Request, Response};

use super::{chart, console_page, duration_words, error_page, operator, Templates};
use crate::keys::KeyStatus;
use crate::oauth::{now, Provider};

/// GET /admin/
#[handler]
pub(super) async fn show(req: &Request, provider: Data<&Arc<Provider>>, templates: Data<&Arc<Templates>>) -> Response {
    let (provider, templates) = (provider.0.as_ref(), templates.0.as_ref());
    let session = try_page!(operator(provider, templates, req, StatusCode::FOUND).await);
    let counts = provider.counts().await;
    let keys = match provider.list_keys().await {
        Ok(keys) => keys,
        Err(e) => return error_page(templates, &e),
    };
    let now = now();
    let signing = keys.iter().find(|k| k.status == KeyStatus::Signing);
    let signing_age = signing.map(|k| now - k.created_at);
    let interval = provider.config.key_rotation_interval.as_secs() as i64;
    let rotation_due = signing_age.is_some_and(|age| age >= interval);
    let published: Vec<_> = keys
        .iter()
        .filter(|k| k.status != KeyStatus::Retired)
        .map(|k| {
            context! {
                kid => &k.kid,
                alg => k.alg.as_str(),
                signing => k.status == KeyStatus::Signing,
                age => duration_words(now - k.created_at),
            }
        })
        .collect();
    let readiness = provider.readiness().await;
    let cluster = provider.config.database_url.is_some();
    let history = provider.metrics.tokens_per_minute();
    let legend: Vec<_> = chart::legend(&history)
        .into_iter()
        .map(|(grant_type, colour, total)| context! { grant_type, colour, total })
        .collect();
    let ctx = context! {
        counts => counts.map(|counts| context! {
            clients => counts.clients,
            users => counts.users,
            live_grants => counts.live_grants,
            refresh_tokens => counts.refresh_tokens,
        }),
        chart => chart::svg(&history),
        legend,
        signing_kid => signing.map(|k| k.kid.clone()),
        signing_alg => signing.map(|k| k.alg.as_str()),
        signing_age => signing_age.map(duration_words),
        rotation_interval => duration_words(interval),
        rotation_due,
        published,
        storage_ok => readiness.storage.is_ok(),
        storage_error => readiness.storage.err(),
        signing_ok => readiness.signing_key.is_ok(),
        signing_error => readiness.signing_key.err(),
        cluster,
    };
    console_page(templates, &session, "overview", "console_overview.html", ctx)
}
