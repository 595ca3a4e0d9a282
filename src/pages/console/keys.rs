//! `/admin/keys`: the keyring, and its rotation following the runbook (docs/operations.md):
//! generate a key (published, not signing), wait `jwks_max_age` so every resource server has
//! fetched it, promote it, wait the longest access-token lifetime so no unexpired token was
//! signed by the old key, retire the old one. The page says when each next step becomes safe,
//! and a step taken early asks for confirmation with a warning of what will fail.

use std::sync::Arc;

use minijinja::context;
use poem::http::StatusCode;
use poem::web::{Data, Path};
use poem::{handler, Body, Request, Response};

use super::super::{date, redirect};
use super::{
    caller, confirm_page, confirmed, console_page, duration_words, encode, error_page, field, operator, operator_form,
    Confirm, Templates,
};
use crate::keys::{Algorithm, KeyInfo, KeyStatus};
use crate::oauth::admin::{not_found, KeyChange};
use crate::oauth::{now, Error, Provider};

/// Seconds a running server may take to notice a changed keyring (it polls every 2 s).
const RELOAD_DELAY: i64 = 2;

/// When the runbook's next step for each key becomes safe.
struct Schedule {
    /// A published key may be promoted from `created_at` plus this.
    promote_after: i64,
    /// Keys that stopped signing may be retired from this time on.
    retire_from: i64,
}

async fn schedule(provider: &Provider, keys: &[KeyInfo]) -> Result<Schedule, Error> {
    let longest = i64::try_from(provider.longest_access_token_ttl().await?).unwrap_or(i64::MAX);
    let signing = keys.iter().find(|k| k.status == KeyStatus::Signing);
    // A key promoted before promotions were recorded: its creation is the earliest it can
    // have started signing, so the wait may be too short; the page says so.
    let promoted = signing.map(|k| k.promoted_at.unwrap_or(k.created_at)).unwrap_or(0);
    Ok(Schedule {
        promote_after: (provider.config.jwks_max_age.as_secs() as i64).saturating_add(RELOAD_DELAY),
        retire_from: promoted.saturating_add(longest).saturating_add(RELOAD_DELAY),
    })
}

/// Why promoting `key` now is unsafe, if it is.
fn promote_warning(schedule: &Schedule, key: &KeyInfo, now: i64) -> Option<String> {
    let safe_at = key.created_at + schedule.promote_after;
    (now < safe_at).then(|| {
        format!(
            "This key was published {} ago. Resource servers may cache the key set for up to jwks_max_age; until {} (in {}) some of them may not know this key yet and would reject the tokens it signs.",
            duration_words(now - key.created_at),
            date(safe_at),
            duration_words(safe_at - now)
        )
    })
}

/// Why retiring `key` now is unsafe, if it is.
fn retire_warning(schedule: &Schedule, key: &KeyInfo, now: i64) -> Option<String> {
    if key.status == KeyStatus::Retired {
        return None;
    }
    let ever_signed = key.promoted_at.is_some() || key.status != KeyStatus::Published;
    if now < schedule.retire_from {
        return Some(format!(
            "The current signing key was promoted less than the longest access-token lifetime ago. Until {} (in {}) tokens signed by {} may still be in use, and they stop verifying the moment it leaves the key set.",
            date(schedule.retire_from),
            duration_words(schedule.retire_from - now),
            key.kid
        ));
    }
    (!ever_signed).then(|| {
        format!(
            "{} may sign ID tokens for clients registered for {}: they would fail to verify.",
            key.kid,
            key.alg.as_str()
        )
    })
}

/// GET /admin/keys
#[handler]
pub(super) async fn list(req: &Request, provider: Data<&Arc<Provider>>, templates: Data<&Arc<Templates>>) -> Response {
    let (provider, templates) = (provider.0.as_ref(), templates.0.as_ref());
    let session = try_page!(operator(provider, templates, req, StatusCode::FOUND).await);
    let keys = match provider.list_keys().await {
        Ok(keys) => keys,
        Err(e) => return error_page(templates, &e),
    };
    let schedule = match schedule(provider, &keys).await {
        Ok(schedule) => schedule,
        Err(e) => return error_page(templates, &e),
    };
    let now = now();
    let signing = keys.iter().find(|k| k.status == KeyStatus::Signing);
    let interval = provider.config.key_rotation_interval.as_secs() as i64;
    let rows: Vec<_> = keys
        .iter()
        .map(|k| {
            let (next_step, safe) = match k.status {
                KeyStatus::Signing => (String::new(), true),
                KeyStatus::Retired => (String::new(), true),
                KeyStatus::Published if k.promoted_at.is_none() => {
                    let at = k.created_at + schedule.promote_after;
                    match at <= now {
                        true => ("safe to promote now".to_string(), true),
                        false => (
                            format!("safe to promote at {} (in {})", date(at), duration_words(at - now)),
                            false,
                        ),
                    }
                }
                KeyStatus::Published => match schedule.retire_from <= now {
                    true => ("safe to retire now".to_string(), true),
                    false => (
                        format!(
                            "safe to retire at {} (in {})",
                            date(schedule.retire_from),
                            duration_words(schedule.retire_from - now)
                        ),
                        false,
                    ),
                },
            };
            context! {
                kid => &k.kid,
                alg => k.alg.as_str(),
                status => match k.status {
                    KeyStatus::Signing => "signing",
                    KeyStatus::Published => "published",
                    KeyStatus::Retired => "retired",
                },
                created_at => date(k.created_at),
                age => duration_words(now - k.created_at),
                promoted_at => k.promoted_at.map(date),
                next_step,
                safe,
                can_promote => k.status == KeyStatus::Published,
                can_retire => k.status == KeyStatus::Published,
            }
        })
        .collect();
    let ctx = context! {
        keys => rows,
        rotation_due => signing.is_some_and(|k| now - k.created_at >= interval),
        rotation_interval => duration_words(interval),
        jwks_max_age => duration_words(provider.config.jwks_max_age.as_secs() as i64),
        algorithms => ["ES256", "EdDSA", "RS256"],
    };
    console_page(templates, &session, "keys", "console_keys.html", ctx)
}

/// POST /admin/keys/generate: a new key, published but not signing.
#[handler]
pub(super) async fn generate(
    req: &Request,
    body: Body,
    provider: Data<&Arc<Provider>>,
    templates: Data<&Arc<Templates>>,
) -> Response {
    let (provider, templates) = (provider.0.as_ref(), templates.0.as_ref());
    let (session, form) = try_page!(operator_form(provider, templates, req, body).await);
    let alg = match field(&form, "alg").as_str() {
        "ES256" | "" => Algorithm::ES256,
        "EdDSA" => Algorithm::EdDSA,
        "RS256" => Algorithm::RS256,
        other => {
            return error_page(
                templates,
                &Error::invalid_request(format!("unknown algorithm {other:?}")),
            )
        }
    };
    let by = caller(&session, req);
    let generated = provider.change_keys(&by, KeyChange::Generate(alg)).await;
    match generated {
        Ok(_) => redirect(StatusCode::SEE_OTHER, "/admin/keys"),
        Err(e) => error_page(templates, &e),
    }
}

async fn key(provider: &Provider, templates: &Templates, kid: &str) -> Result<(KeyInfo, Schedule), Box<Response>> {
    let keys = provider
        .list_keys()
        .await
        .map_err(|e| Box::new(error_page(templates, &e)))?;
    let schedule = schedule(provider, &keys)
        .await
        .map_err(|e| Box::new(error_page(templates, &e)))?;
    match keys.into_iter().find(|k| k.kid == kid) {
        Some(key) => Ok((key, schedule)),
        None => Err(Box::new(error_page(templates, &not_found("key")))),
    }
}

/// POST /admin/keys/:kid/promote: the key signs new tokens from now on. Early (less than
/// `jwks_max_age` after it was published) it asks for confirmation with a warning first.
#[handler]
pub(super) async fn promote(
    req: &Request,
    Path(kid): Path<String>,
    body: Body,
    provider: Data<&Arc<Provider>>,
    templates: Data<&Arc<Templates>>,
) -> Response {
    let (provider, templates) = (provider.0.as_ref(), templates.0.as_ref());
    let (session, form) = try_page!(operator_form(provider, templates, req, body).await);
    let (key, schedule) = try_page!(key(provider, templates, &kid).await);
    if let Some(warning) = promote_warning(&schedule, &key, now()) {
        if !confirmed(&form) {
            return confirm_page(
                templates,
                &session,
                Confirm {
                    title: "Promote this key early?",
                    message: format!(
                        "{} ({}) would sign every new token from now on.",
                        key.kid,
                        key.alg.as_str()
                    ),
                    warning: Some(warning),
                    action: format!("/admin/keys/{}/promote", encode(&kid)),
                    button: "Promote anyway",
                    cancel: "/admin/keys".into(),
                    fields: vec![],
                },
            );
        }
    }
    let by = caller(&session, req);
    let promoted = provider.change_keys(&by, KeyChange::Promote(&kid)).await;
    match promoted {
        Ok(_) => redirect(StatusCode::SEE_OTHER, "/admin/keys"),
        Err(e) => error_page(templates, &e),
    }
}

/// POST /admin/keys/:kid/retire: always asks for confirmation (tokens the key signed stop
/// verifying), with a warning when it is earlier than the runbook says is safe.
#[handler]
pub(super) async fn retire(
    req: &Request,
    Path(kid): Path<String>,
    body: Body,
    provider: Data<&Arc<Provider>>,
    templates: Data<&Arc<Templates>>,
) -> Response {
    let (provider, templates) = (provider.0.as_ref(), templates.0.as_ref());
    let (session, form) = try_page!(operator_form(provider, templates, req, body).await);
    let (key, schedule) = try_page!(key(provider, templates, &kid).await);
    if !confirmed(&form) {
        return confirm_page(
            templates,
            &session,
            Confirm {
                title: "Retire this key?",
                message: format!(
                    "{} ({}) leaves the published key set: any token it signed stops verifying. A retired key cannot sign again.",
                    key.kid,
                    key.alg.as_str()
                ),
                warning: retire_warning(&schedule, &key, now()),
                action: format!("/admin/keys/{}/retire", encode(&kid)),
                button: "Retire key",
                cancel: "/admin/keys".into(),
                fields: vec![],
            },
        );
    }
    let by = caller(&session, req);
    let retired = provider.change_keys(&by, KeyChange::Retire(&kid)).await;
    match retired {
        Ok(_) => redirect(StatusCode::SEE_OTHER, "/admin/keys"),
        Err(e) => error_page(templates, &e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(status: KeyStatus, created_at: i64, promoted_at: Option<i64>) -> KeyInfo {
        KeyInfo {
            kid: "k".into(),
            alg: Algorithm::ES256,
            status,
            created_at,
            promoted_at,
        }
    }

    #[test]
    fn each_step_is_safe_only_after_its_wait() {
        let schedule = Schedule {
            promote_after: 302,
            retire_from: 5000,
        };
        let new = key(KeyStatus::Published, 1000, None);
        assert!(promote_warning(&schedule, &new, 1301).is_some());
        assert!(promote_warning(&schedule, &new, 1302).is_none());
        let old = key(KeyStatus::Published, 0, Some(10));
        assert!(retire_warning(&schedule, &old, 4999).is_some());
        assert!(retire_warning(&schedule, &old, 5000).is_none());
    }
}
