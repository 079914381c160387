//! The audit trail in the UI (`/audit`) and the API (`/api/v1/audit`):
//! filters (category or action, user or actor, outcome, target or host,
//! time range), pages newest first, and a streamed export of everything
//! that matches as CSV or JSON (`?format=csv|json`, `audit:export`), read in
//! one snapshot and never held whole in memory.

use askama::Template;
use axum::Json;
use axum::body::{Body, Bytes};
use axum::extract::{Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::store::{self, AuditQuery};
use super::{Action, AuditEvent, Category, Outcome};
use crate::access::{Caller, Permission};
use crate::db::Millis;
use crate::state::AppState;
use crate::web::layout::Layout;
use crate::web::{Access, Routes, WebError, format, html};

pub fn routes() -> Routes {
    Routes::new()
        .get(
            "/audit",
            Access::Permission(Permission::AuditRead),
            audit_page,
        )
        .get(
            "/api/v1/audit",
            Access::Permission(Permission::AuditRead),
            list_events,
        )
        .get(
            "/api/v1/audit/checkpoints",
            Access::Permission(Permission::AuditExport),
            list_checkpoints,
        )
}

/// The signed checkpoints and the key that verifies them.
#[derive(Debug, Serialize, ToSchema)]
pub struct CheckpointExport {
    /// The Ed25519 public key, hex.
    public_key: String,
    key_id: String,
    #[schema(value_type = Vec<Object>)]
    checkpoints: Vec<super::checkpoint::Checkpoint>,
}

/// Every signed checkpoint of the audit chain, for keeping away from the
/// backend (`palisade-backend audit verify --checkpoints FILE` reads it).
#[utoipa::path(get, path = "/api/v1/audit/checkpoints", tag = "audit",
    responses((status = 200, description = "the checkpoints", body = CheckpointExport)),
    security(("bearer" = []), ("session" = [])))]
async fn list_checkpoints(
    State(state): State<AppState>,
) -> Result<Json<CheckpointExport>, WebError> {
    let checkpoints = state
        .db
        .read("audit checkpoints", super::checkpoint::list)
        .await?;
    let public = state.audit_key.public();
    Ok(Json(CheckpointExport {
        public_key: public.to_hex(),
        key_id: public.key_id(),
        checkpoints,
    }))
}

/// Events per page.
const PAGE: u32 = 100;
/// The most a request may ask for in one page.
const MAX_PAGE: u32 = 1000;

/// The filters, as a query string has them.
#[derive(Debug, Clone, Default, Deserialize, utoipa::IntoParams)]
pub struct Filters {
    /// authentication, user_management, configuration, service_operation,
    /// file_operation or security_event.
    category: Option<String>,
    /// A dotted action, e.g. `auth.login`.
    action: Option<String>,
    /// A user name (events by `user:<name>`).
    user: Option<String>,
    /// An actor as stored: `user:<name>`, `api-token:<id>`, `agent:<id>`, `cli`, `system`, `anonymous`.
    actor: Option<String>,
    /// success, failure or denied.
    outcome: Option<String>,
    /// A host's id (events about that host).
    host: Option<String>,
    /// Any target (a host id, a user name, a token id...).
    target: Option<String>,
    /// From this time (RFC 3339, or a date `2025-11-24`).
    from: Option<String>,
    /// Until this time, excluded (RFC 3339, or a date: the whole day included).
    to: Option<String>,
    /// Events older than this id (the `next` of a page).
    before_id: Option<i64>,
    /// Events per page, 1 to 1000 (default 100).
    limit: Option<u32>,
    /// `csv` or `json`: every matching event, as a download.
    format: Option<String>,
}

fn empty_to_none(v: &Option<String>) -> Option<&str> {
    v.as_deref().map(str::trim).filter(|s| !s.is_empty())
}

/// RFC 3339 or a date; a date as an upper bound means the end of that day.
pub(crate) fn parse_time(text: &str, end_of_day: bool) -> Result<Millis, WebError> {
    use time::format_description::well_known::Rfc3339;
    if let Ok(t) = time::OffsetDateTime::parse(text, &Rfc3339) {
        return Ok((t.unix_timestamp_nanos() / 1_000_000) as Millis);
    }
    let date = time::Date::parse(
        text,
        time::macros::format_description!("[year]-[month]-[day]"),
    )
    .map_err(|_| {
        WebError::BadRequest(format!(
            "{:?} is neither RFC 3339 nor a date",
            text.chars().take(40).collect::<String>()
        ))
    })?;
    let day = date.midnight().assume_utc().unix_timestamp() * 1000;
    Ok(if end_of_day { day + 86_400_000 } else { day })
}

impl Filters {
    fn query(&self) -> Result<AuditQuery, WebError> {
        let actions = match (empty_to_none(&self.action), empty_to_none(&self.category)) {
            (Some(action), _) => Some(vec![
                action
                    .parse::<Action>()
                    .map_err(|e| WebError::BadRequest(e.to_string()))?,
            ]),
            (None, Some(category)) => {
                let category = Category::ALL
                    .into_iter()
                    .find(|c| c.as_str() == category)
                    .ok_or_else(|| {
                        WebError::BadRequest(format!(
                            "unknown category {:?}",
                            category.chars().take(40).collect::<String>()
                        ))
                    })?;
                Some(
                    Action::ALL
                        .iter()
                        .copied()
                        .filter(|a| a.category() == category)
                        .collect(),
                )
            }
            (None, None) => None,
        };
        let actor = match (empty_to_none(&self.actor), empty_to_none(&self.user)) {
            (Some(actor), _) => Some(actor.to_owned()),
            (None, Some(user)) => Some(format!("user:{user}")),
            (None, None) => None,
        };
        let outcome = empty_to_none(&self.outcome)
            .map(|o| {
                o.parse::<Outcome>()
                    .map_err(|e| WebError::BadRequest(e.to_string()))
            })
            .transpose()?;
        let target = empty_to_none(&self.host)
            .or(empty_to_none(&self.target))
            .map(str::to_owned);
        let limit = self.limit.unwrap_or(PAGE);
        if !(1..=MAX_PAGE).contains(&limit) {
            return Err(WebError::BadRequest(format!(
                "limit must be 1 to {MAX_PAGE}"
            )));
        }
        Ok(AuditQuery {
            actions,
            actor,
            outcome,
            target,
            from: empty_to_none(&self.from)
                .map(|t| parse_time(t, false))
                .transpose()?,
            to: empty_to_none(&self.to)
                .map(|t| parse_time(t, true))
                .transpose()?,
            before_id: self.before_id,
            limit: Some(limit),
        })
    }

    /// The query string of these filters (for links), without paging.
    fn to_query_string(&self) -> String {
        let pairs = [
            ("category", &self.category),
            ("action", &self.action),
            ("user", &self.user),
            ("actor", &self.actor),
            ("outcome", &self.outcome),
            ("host", &self.host),
            ("target", &self.target),
            ("from", &self.from),
            ("to", &self.to),
        ];
        let mut out = form_urlencoded::Serializer::new(String::new());
        for (k, v) in pairs {
            if let Some(v) = empty_to_none(v) {
                out.append_pair(k, v);
            }
        }
        out.finish()
    }
}

/// An audit event as the API shows it.
#[derive(Debug, Serialize, ToSchema)]
pub struct AuditEventJson {
    id: i64,
    at: Option<String>,
    actor: String,
    action: &'static str,
    category: &'static str,
    target: Option<String>,
    source_ip: Option<String>,
    user_agent: Option<String>,
    outcome: &'static str,
    #[schema(value_type = Object)]
    details: serde_json::Value,
    /// This row's link in the hash chain.
    hash: String,
}

impl From<AuditEvent> for AuditEventJson {
    fn from(e: AuditEvent) -> Self {
        AuditEventJson {
            at: format::rfc3339(e.at),
            actor: e.actor.to_string(),
            action: e.action.as_str(),
            category: e.action.category().as_str(),
            outcome: e.outcome.as_str(),
            id: e.id,
            target: e.target,
            source_ip: e.source_ip,
            user_agent: e.user_agent,
            details: e.details,
            hash: e.hash,
        }
    }
}

/// A page of events, newest first.
#[derive(Debug, Serialize, ToSchema)]
pub struct AuditPage {
    events: Vec<AuditEventJson>,
    /// Pass as `before_id` for the next (older) page; absent on the last.
    next: Option<i64>,
}

/// Audit events matching the filters, newest first; with `format=csv` or
/// `format=json`, every matching event as a download.
#[utoipa::path(get, path = "/api/v1/audit", tag = "audit", params(Filters),
    responses((status = 200, description = "a page of events, or the export", body = AuditPage),
              (status = 400, description = "a bad filter"),
              (status = 403, description = "an export needs audit:export")),
    security(("bearer" = []), ("session" = [])))]
async fn list_events(
    caller: Caller,
    State(state): State<AppState>,
    Query(filters): Query<Filters>,
) -> Result<Response, WebError> {
    if let Some(format) = empty_to_none(&filters.format) {
        return export(&state, &caller, &filters, format).await;
    }
    let query = filters.query()?;
    let limit = query.limit.unwrap_or(PAGE) as usize;
    let events = state
        .db
        .read("search audit", move |tx| store::search(tx, &query))
        .await?;
    let next = (events.len() == limit)
        .then(|| events.last().map(|e| e.id))
        .flatten();
    Ok(Json(AuditPage {
        events: events.into_iter().map(AuditEventJson::from).collect(),
        next,
    })
    .into_response())
}

/// Quotes a CSV field when it needs it (RFC 4180), and defuses a leading
/// `=`, `+`, `-` or `@` that a spreadsheet would run as a formula.
fn csv_field(text: &str) -> String {
    let text = if text.starts_with(['=', '+', '-', '@']) {
        format!("'{text}")
    } else {
        text.to_owned()
    };
    if text.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", text.replace('"', "\"\""))
    } else {
        text
    }
}

fn csv_line(e: &AuditEventJson) -> String {
    let fields = [
        e.id.to_string(),
        e.at.clone().unwrap_or_default(),
        e.actor.clone(),
        e.action.to_owned(),
        e.category.to_owned(),
        e.target.clone().unwrap_or_default(),
        e.source_ip.clone().unwrap_or_default(),
        e.user_agent.clone().unwrap_or_default(),
        e.outcome.to_owned(),
        e.details.to_string(),
        e.hash.clone(),
    ];
    let mut line = fields
        .iter()
        .map(|f| csv_field(f))
        .collect::<Vec<_>>()
        .join(",");
    line.push_str("\r\n");
    line
}

/// Streams every matching event: a blocking task reads them in one snapshot
/// and sends chunks through a small channel, so memory stays bounded
/// whatever the size of the trail.
async fn export(
    state: &AppState,
    caller: &Caller,
    filters: &Filters,
    format: &str,
) -> Result<Response, WebError> {
    if !caller.may(Permission::AuditExport, None) {
        return Err(WebError::Forbidden(
            "exporting the audit trail needs audit:export",
        ));
    }
    let csv = match format {
        "csv" => true,
        "json" => false,
        _ => return Err(WebError::BadRequest("format is csv or json".into())),
    };
    let mut query = filters.query()?;
    query.limit = None;
    query.before_id = filters.before_id;
    let (tx_chunks, mut rx) = tokio::sync::mpsc::channel::<Result<Bytes, std::io::Error>>(16);
    let db = state.db.clone();
    tokio::task::spawn_blocking(move || {
        let send = |chunk: String| tx_chunks.blocking_send(Ok(Bytes::from(chunk))).is_ok();
        let mut buffer = String::new();
        if csv {
            buffer.push_str(
                "id,at,actor,action,category,target,source_ip,user_agent,outcome,details,hash\r\n",
            );
        } else {
            buffer.push('[');
        }
        let mut first = true;
        let result = db.read_blocking("export audit", |tx| {
            store::each_matching(tx, &query, |event| {
                let json = AuditEventJson::from(event);
                if csv {
                    buffer.push_str(&csv_line(&json));
                } else {
                    if !first {
                        buffer.push(',');
                    }
                    buffer.push_str(&serde_json::to_string(&json).unwrap_or_default());
                }
                first = false;
                if buffer.len() >= 64 * 1024 && !send(std::mem::take(&mut buffer)) {
                    return Err(crate::db::DbError::database(
                        "export audit",
                        "the client went away",
                    ));
                }
                Ok(())
            })
        });
        match result {
            Ok(()) => {
                if !csv {
                    buffer.push(']');
                }
                send(buffer);
            }
            Err(e) => {
                tracing::warn!(error = %e, "audit export stopped");
                let _ = tx_chunks.blocking_send(Err(std::io::Error::other("the export failed")));
            }
        }
    });
    let stream = futures_util::stream::poll_fn(move |cx| rx.poll_recv(cx));
    let (content_type, name) = if csv {
        ("text/csv; charset=utf-8", "palisade-audit.csv")
    } else {
        ("application/json", "palisade-audit.json")
    };
    Ok((
        StatusCode::OK,
        [
            (header::CONTENT_TYPE, content_type.to_owned()),
            (
                header::CONTENT_DISPOSITION,
                format!("attachment; filename=\"{name}\""),
            ),
        ],
        Body::from_stream(stream),
    )
        .into_response())
}

// ---------------------------------------------------------------------------
// Page

struct Row {
    at: String,
    actor: String,
    action: &'static str,
    category: &'static str,
    target: String,
    source: String,
    outcome: &'static str,
    details: String,
}

#[derive(Template)]
#[template(path = "audit/templates/audit.html")]
struct AuditPageView {
    layout: Layout,
    rows: Vec<Row>,
    categories: Vec<&'static str>,
    actions: Vec<&'static str>,
    f: FilterView,
    next: Option<String>,
    export_csv: Option<String>,
    export_json: Option<String>,
    /// "event N, signed at T" of the newest checkpoint.
    signed: Option<String>,
    key_id: String,
}

/// The filters as typed, for the form.
struct FilterView {
    category: String,
    action: String,
    user: String,
    outcome: String,
    host: String,
    from: String,
    to: String,
}

async fn audit_page(
    caller: Caller,
    State(state): State<AppState>,
    Query(filters): Query<Filters>,
) -> Result<Response, WebError> {
    let query = filters.query()?;
    let (events, latest) = state
        .db
        .read("search audit", move |tx| {
            Ok((store::search(tx, &query)?, super::checkpoint::latest(tx)?))
        })
        .await?;
    let base = filters.to_query_string();
    let with = |extra: String| {
        if base.is_empty() {
            extra
        } else {
            format!("{base}&{extra}")
        }
    };
    let next = (events.len() == PAGE as usize)
        .then(|| {
            events
                .last()
                .map(|e| format!("/audit?{}", with(format!("before_id={}", e.id))))
        })
        .flatten();
    let may_export = caller.may(Permission::AuditExport, None);
    let text = |v: &Option<String>| v.clone().unwrap_or_default();
    let page = AuditPageView {
        layout: Layout::for_caller(&caller),
        rows: events
            .into_iter()
            .map(|e| Row {
                at: format::utc(e.at),
                actor: e.actor.to_string(),
                action: e.action.as_str(),
                category: e.action.category().as_str(),
                target: e.target.unwrap_or_default(),
                source: e.source_ip.unwrap_or_default(),
                outcome: e.outcome.as_str(),
                details: e.details.to_string(),
            })
            .collect(),
        categories: Category::ALL.iter().map(|c| c.as_str()).collect(),
        actions: Action::ALL.iter().map(|a| a.as_str()).collect(),
        f: FilterView {
            category: text(&filters.category),
            action: text(&filters.action),
            user: text(&filters.user),
            outcome: text(&filters.outcome),
            host: text(&filters.host),
            from: text(&filters.from),
            to: text(&filters.to),
        },
        next,
        export_csv: may_export.then(|| format!("/api/v1/audit?{}", with("format=csv".into()))),
        export_json: may_export.then(|| format!("/api/v1/audit?{}", with("format=json".into()))),
        signed: latest.map(|c| format!("event {}, signed {}", c.audit_id, format::utc(c.at))),
        key_id: state.audit_key.public().key_id(),
    };
    Ok(html(StatusCode::OK, page.render()?))
}

/// The handlers' OpenAPI paths, for [`crate::web::openapi`].
pub(crate) fn openapi_paths() -> utoipa::openapi::OpenApi {
    #[derive(utoipa::OpenApi)]
    #[openapi(paths(list_events, list_checkpoints))]
    struct Paths;
    <Paths as utoipa::OpenApi>::openapi()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_fields_are_quoted_and_formulas_defused() {
        assert_eq!(csv_field("plain"), "plain");
        assert_eq!(csv_field("a,b"), "\"a,b\"");
        assert_eq!(csv_field("say \"hi\""), "\"say \"\"hi\"\"\"");
        assert_eq!(csv_field("=HYPERLINK(1)"), "'=HYPERLINK(1)");
        assert_eq!(csv_field("line\nbreak"), "\"line\nbreak\"");
    }

    #[test]
    fn times_are_rfc3339_or_whole_days() {
        assert_eq!(
            parse_time("2023-11-14T22:13:20Z", false).ok(),
            Some(1_700_000_000_000)
        );
        assert_eq!(
            parse_time("2023-11-14", false).ok(),
            Some(1_699_920_000_000)
        );
        assert_eq!(parse_time("2023-11-14", true).ok(), Some(1_700_006_400_000));
        assert!(parse_time("yesterday", false).is_err());
    }
}
