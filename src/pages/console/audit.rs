//! `/admin/audit`: the audit trail, newest first, filtered by actor, action, target and time,
//! a page at a time (the "older" link continues after the last entry shown).

use std::sync::Arc;

use minijinja::context;
use poem::http::StatusCode;
use poem::web::Data;
use poem::{handler, Request, Response};

use super::super::query_pairs;
use super::{console_page, encode, error_page, field, operator, Templates};
use crate::oauth::{Error, Provider};
use crate::store::AuditFilter;

/// Entries on one page.
const AUDIT_PAGE: usize = 50;

/// A time filter: RFC 3339 (`2026-01-02T03:04:05Z`), a date and time without a zone (UTC, as
/// an `<input type="datetime-local">` sends it), or a date; in milliseconds.
fn time_ms(text: &str) -> Result<Option<i64>, Error> {
    use time::format_description::well_known::Rfc3339;
    use time::macros::format_description;
    let text = text.trim();
    if text.is_empty() {
        return Ok(None);
    }
    let at = time::OffsetDateTime::parse(text, &Rfc3339)
        .or_else(|_| {
            time::PrimitiveDateTime::parse(text, format_description!("[year]-[month]-[day]T[hour]:[minute]"))
                .or_else(|_| {
                    time::PrimitiveDateTime::parse(
                        text,
                        format_description!("[year]-[month]-[day]T[hour]:[minute]:[second]"),
                    )
                })
                .map(|t| t.assume_utc())
        })
        .or_else(|_| {
            time::Date::parse(text, format_description!("[year]-[month]-[day]")).map(|d| d.midnight().assume_utc())
        })
        .map_err(|_| Error::invalid_request(format!("{text:?} is not a time (use 2026-01-02T03:04:05Z)")))?;
    Ok(Some((at.unix_timestamp_nanos() / 1_000_000) as i64))
}

fn time_of(ms: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .ok()
        .and_then(|t| t.format(&time::format_description::well_known::Rfc3339).ok())
        .unwrap_or_default()
}

/// GET /admin/audit?actor=…&action=…&target=…&since=…&until=…&before=…
#[handler]
pub(super) async fn list(req: &Request, provider: Data<&Arc<Provider>>, templates: Data<&Arc<Templates>>) -> Response {
    let (provider, templates) = (provider.0.as_ref(), templates.0.as_ref());
    let session = try_page!(operator(provider, templates, req, StatusCode::FOUND).await);
    let query = match query_pairs(req) {
        Ok(query) => query,
        Err(e) => return error_page(templates, &e),
    };
    let text = |name: &str| Some(field(&query, name).trim().to_string()).filter(|v| !v.is_empty());
    let (since, until) = match (time_ms(&field(&query, "since")), time_ms(&field(&query, "until"))) {
        (Ok(since), Ok(until)) => (since, until),
        (Err(e), _) | (_, Err(e)) => return error_page(templates, &e),
    };
    let filter = AuditFilter {
        actor: text("actor"),
        action: text("action"),
        target: text("target"),
        since_ms: since,
        until_ms: until,
    };
    let before = text("before");
    let entries = match provider
        .audit
        .audit_page(&filter, before.as_deref(), AUDIT_PAGE + 1)
        .await
    {
        Ok(entries) => entries,
        Err(e) => return error_page(templates, &e),
    };
    let more = entries.len() > AUDIT_PAGE;
    let entries = &entries[..entries.len().min(AUDIT_PAGE)];
    let filters = format!(
        "actor={}&action={}&target={}&since={}&until={}",
        encode(&field(&query, "actor")),
        encode(&field(&query, "action")),
        encode(&field(&query, "target")),
        encode(&field(&query, "since")),
        encode(&field(&query, "until")),
    );
    let older = entries
        .last()
        .filter(|_| more)
        .map(|last| format!("/admin/audit?{filters}&before={}", encode(&last.id)));
    let rows: Vec<_> = entries
        .iter()
        .map(|e| {
            context! {
                id => &e.id,
                at => time_of(e.at_ms),
                actor_kind => &e.actor.kind,
                actor_id => &e.actor.id,
                actor_name => &e.actor.name,
                address => &e.address,
                action => &e.action,
                target_kind => &e.target_kind,
                target_id => &e.target_id,
                target_name => &e.target_name,
                outcome => &e.outcome,
            }
        })
        .collect();
    let ctx = context! {
        entries => rows,
        older,
        newest => before.is_some().then(|| format!("/admin/audit?{filters}")),
        actor => field(&query, "actor"),
        action => field(&query, "action"),
        target => field(&query, "target"),
        since => field(&query, "since"),
        until => field(&query, "until"),
    };
    console_page(templates, &session, "audit", "console_audit.html", ctx)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn time_filters_read_rfc3339_local_inputs_and_dates_as_utc() {
        assert_eq!(time_ms("").unwrap(), None);
        assert_eq!(time_ms("1970-01-01T00:00:01Z").unwrap(), Some(1000));
        assert_eq!(time_ms("1970-01-01T00:01").unwrap(), Some(60_000));
        assert_eq!(time_ms("1970-01-02").unwrap(), Some(86_400_000));
        assert!(time_ms("yesterday").is_err());
    }
}
