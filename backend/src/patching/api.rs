//! The patch run API and pages:
//!
//! - `POST /api/v1/patch-runs`: start a run (dry run first); 201 with the run;
//! - `GET /api/v1/patch-runs?host_id=&state=&limit=`: runs, newest first;
//! - `GET /api/v1/patch-runs/{id}`: one run, with its output so far when the
//!   caller may read output;
//! - `GET /api/v1/patch-runs/{id}/output?from=N`: the output from byte N;
//! - `POST /api/v1/patch-runs/{id}/approve` and `.../cancel`;
//! - pages: `/patch-runs`, `/patch-runs/{id}` (refreshing itself while the
//!   run is not final, so the output grows without JavaScript), and the
//!   forms behind the host page's "Patch" form and the run page's buttons.

use askama::Template;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use axum::{Extension, Json};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::{PatchRun, RunState, Selection, store};
use crate::access::{Caller, Permission};
use crate::commands::PackageChange;
use crate::state::AppState;
use crate::web::form::FormFields;
use crate::web::format::{self, MISSING};
use crate::web::layout::Layout;
use crate::web::{Access, RequestId, Routes, WebError, html};

const DEFAULT_LIST_LIMIT: u32 = 100;
const MAX_LIST_LIMIT: u32 = 500;
/// Most output one answer carries; the client asks again from `next`.
const MAX_OUTPUT_SLICE: usize = 1024 * 1024;

pub fn routes() -> Routes {
    Routes::new()
        .post(
            "/api/v1/patch-runs",
            Access::Permission(Permission::PatchRunsCreate),
            create_run,
        )
        .get(
            "/api/v1/patch-runs",
            Access::Permission(Permission::PatchRunsRead),
            list_runs,
        )
        .get(
            "/api/v1/patch-runs/{id}",
            Access::Permission(Permission::PatchRunsRead),
            get_run,
        )
        .get(
            "/api/v1/patch-runs/{id}/output",
            Access::Permission(Permission::PatchRunsOutputRead),
            get_output,
        )
        .post(
            "/api/v1/patch-runs/{id}/approve",
            Access::Permission(Permission::PatchRunsApprove),
            approve_run,
        )
        .post(
            "/api/v1/patch-runs/{id}/cancel",
            Access::Permission(Permission::PatchRunsCancel),
            cancel_run,
        )
        .get(
            "/patch-runs",
            Access::Permission(Permission::PatchRunsRead),
            runs_page,
        )
        .get(
            "/patch-runs/{id}",
            Access::Permission(Permission::PatchRunsRead),
            run_page,
        )
        .post(
            "/hosts/{id}/patch",
            Access::Permission(Permission::PatchRunsCreate),
            create_form,
        )
        .post(
            "/patch-runs/{id}/approve",
            Access::Permission(Permission::PatchRunsApprove),
            approve_form,
        )
        .post(
            "/patch-runs/{id}/cancel",
            Access::Permission(Permission::PatchRunsCancel),
            cancel_form,
        )
}

/// A package change as the API shows it (`before` empty: newly installed;
/// `after` empty: removed).
#[derive(Debug, Serialize, ToSchema)]
pub struct ChangeJson {
    name: String,
    arch: String,
    before: String,
    after: String,
}

impl From<&PackageChange> for ChangeJson {
    fn from(c: &PackageChange) -> Self {
        ChangeJson {
            name: c.name.clone(),
            arch: c.arch.clone(),
            before: c.before.clone(),
            after: c.after.clone(),
        }
    }
}

/// A patch run as the API shows it. Times are RFC 3339; `started_at` and
/// `finished_at` come from the agent's clock.
#[derive(Debug, Serialize, ToSchema)]
pub struct PatchRunJson {
    id: String,
    host_id: String,
    /// queued, planning, awaiting_approval, approved, running, succeeded,
    /// failed, cancelled, timed_out, nothing_to_do, agent_offline or skipped.
    state: &'static str,
    /// `{"kind":"all"}`, `{"kind":"security"}` or
    /// `{"kind":"packages","packages":[...]}`.
    #[schema(value_type = Object)]
    selection: Selection,
    /// other_user, any or none.
    approval: &'static str,
    /// dpkg or rpm.
    manager: &'static str,
    requested_by: String,
    requested_at: Option<String>,
    approved_by: Option<String>,
    approved_at: Option<String>,
    cancelled_by: Option<String>,
    cancelled_at: Option<String>,
    started_at: Option<String>,
    finished_at: Option<String>,
    dry_run_command_id: Option<String>,
    command_id: Option<String>,
    cancel_command_id: Option<String>,
    /// What the dry run said would change; null before it reported.
    plan: Option<Vec<ChangeJson>>,
    /// What the real run changed; null before it reported.
    changes: Option<Vec<ChangeJson>>,
    exit_code: Option<i32>,
    error: Option<String>,
    timeout_secs: u32,
    /// The request as it was.
    #[schema(value_type = Object)]
    policy: serde_json::Value,
    /// The rollout (a policy's run over many hosts) the run is part of.
    rollout_id: Option<String>,
    rollout_position: Option<u32>,
    /// Package name patterns left out when planning.
    exclude: Vec<String>,
    auto_approve_after_days: Option<u32>,
    /// never, if_required or always.
    reboot: &'static str,
    /// null, due, issued or not_needed.
    reboot_state: Option<&'static str>,
    reboot_command_id: Option<String>,
    /// What the host said after the upgrade.
    reboot_required: Option<bool>,
    /// Services still running files the upgrade replaced:
    /// `[{"unit", "pids", "files"}]`.
    #[schema(value_type = Option<Vec<Object>>)]
    restarts: Option<serde_json::Value>,
    /// The output so far (only for callers with patch_runs:read_output).
    #[serde(skip_serializing_if = "Option::is_none")]
    output: Option<OutputJson>,
}

impl PatchRunJson {
    /// The run without its output (lists, rollouts).
    pub(super) fn brief(r: PatchRun) -> Self {
        PatchRunJson::new(r, None)
    }

    fn new(r: PatchRun, output: Option<OutputJson>) -> Self {
        let changes = |c: &Option<Vec<PackageChange>>| {
            c.as_ref().map(|c| c.iter().map(ChangeJson::from).collect())
        };
        PatchRunJson {
            state: r.state.as_str(),
            approval: r.approval.as_str(),
            manager: r.manager.as_str(),
            requested_by: r.requested_by.to_string(),
            requested_at: format::rfc3339(r.requested_at),
            approved_by: r.approved_by.map(|a| a.to_string()),
            approved_at: r.approved_at.and_then(format::rfc3339),
            cancelled_by: r.cancelled_by.map(|a| a.to_string()),
            cancelled_at: r.cancelled_at.and_then(format::rfc3339),
            started_at: r.started_at.and_then(format::rfc3339),
            finished_at: r.finished_at.and_then(format::rfc3339),
            plan: changes(&r.plan),
            changes: changes(&r.changes),
            id: r.id,
            host_id: r.host_id,
            selection: r.selection,
            dry_run_command_id: r.dry_run_command_id,
            command_id: r.command_id,
            cancel_command_id: r.cancel_command_id,
            exit_code: r.exit_code,
            error: r.error,
            timeout_secs: r.timeout_secs,
            policy: r.policy,
            rollout_id: r.rollout_id,
            rollout_position: r.rollout_position,
            exclude: r.exclude.iter().map(|p| p.as_str().to_owned()).collect(),
            auto_approve_after_days: r.auto_approve_after_days,
            reboot: r.reboot.as_str(),
            reboot_state: r.reboot_state.map(super::RebootState::as_str),
            reboot_command_id: r.reboot_command_id,
            reboot_required: r.reboot_required,
            restarts: r.restarts,
            output,
        }
    }
}

/// A stretch of a run's output.
#[derive(Debug, Serialize, ToSchema)]
pub struct OutputJson {
    /// The byte offset `text` starts at.
    offset: u64,
    text: String,
    /// The offset to ask for next.
    next: u64,
    /// The run's command has its result and everything stored was returned.
    complete: bool,
    /// Output beyond the backend's cap was dropped.
    truncated: bool,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct PatchRunList {
    patch_runs: Vec<PatchRunJson>,
}

/// The output of the run's current command from byte `from` (the dry run's
/// until the real one exists). When nothing was streamed, a final
/// command's result output stands in (an agent that does not stream).
async fn output(state: &AppState, run: &PatchRun, from: u64) -> Result<OutputJson, WebError> {
    let Some(command_id) = run.current_command().map(str::to_owned) else {
        return Ok(OutputJson {
            offset: from,
            text: String::new(),
            next: from,
            complete: run.state.is_final(),
            truncated: false,
        });
    };
    let (slice, command) = state
        .db
        .read("patch run output", move |tx| {
            Ok((
                crate::commands::store::output_from(tx, &command_id, from, MAX_OUTPUT_SLICE)?,
                crate::commands::store::get(tx, &command_id)?,
            ))
        })
        .await?;
    let finished = command.as_ref().is_some_and(|c| c.status.is_final());
    let truncated = command.as_ref().is_some_and(|c| c.output_truncated);
    if let Some(c) = command.filter(|c| c.output_bytes == 0 && c.status.is_final()) {
        let text = c.output.unwrap_or_default();
        let start = usize::try_from(from).unwrap_or(usize::MAX);
        let rest = text.get(start..).unwrap_or_default().to_owned();
        let next = from + rest.len() as u64;
        return Ok(OutputJson {
            offset: from,
            text: rest,
            next,
            complete: true,
            truncated,
        });
    }
    Ok(OutputJson {
        offset: from,
        complete: finished && !slice.more,
        next: slice.next,
        text: slice.text,
        truncated,
    })
}

/// Start a patch run on a host: a dry run, then (depending on `approval`)
/// an approval, then the upgrade.
#[utoipa::path(post, path = "/api/v1/patch-runs", tag = "patch-runs",
    request_body(content = Object, description = "{\"host_id\", \"selection\": {\"kind\": \"all\" | \"security\" | \"packages\", \"packages\": [names]}, \"approval\": \"other_user\" (default) | \"any\" | \"none\", \"timeout_secs\": 1 to 21600 (default 3600)}"),
    responses((status = 201, description = "the run, planning", body = PatchRunJson),
              (status = 400, description = "the body is not a valid request"),
              (status = 401, description = "no valid session or API token"),
              (status = 403, description = "the caller may not patch this host"),
              (status = 404, description = "no such host"),
              (status = 409, description = "no inventory, no pending security updates, or a revoked host")),
    security(("bearer" = []), ("session" = [])))]
async fn create_run(
    caller: Caller,
    Extension(request_id): Extension<RequestId>,
    State(state): State<AppState>,
    body: Bytes,
) -> Result<(StatusCode, Json<PatchRunJson>), WebError> {
    let request = super::parse_create(&body).map_err(|e| WebError::BadRequest(e.0))?;
    let run = super::create(
        &state,
        &caller,
        request,
        &request_id.to_string(),
        crate::now_millis(),
    )
    .await?;
    Ok((StatusCode::CREATED, Json(PatchRunJson::new(run, None))))
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
pub struct ListQuery {
    /// Only this host's runs.
    host_id: Option<String>,
    /// Only runs in this state.
    state: Option<String>,
    /// At most this many (1 to 500, default 100).
    limit: Option<u32>,
    /// Only runs requested at or after this time (RFC 3339 or a date),
    /// e.g. the last 90 days.
    since: Option<String>,
}

async fn list(
    state: &AppState,
    caller: &Caller,
    query: ListQuery,
) -> Result<Vec<PatchRun>, WebError> {
    let run_state = match query.state.as_deref().filter(|s| !s.is_empty()) {
        None => None,
        Some(s) => Some(s.parse::<RunState>().map_err(|_| {
            WebError::BadRequest(format!(
                "unknown state {:?}",
                s.chars().take(64).collect::<String>()
            ))
        })?),
    };
    let filter = store::RunFilter {
        host_id: query.host_id.filter(|h| !h.is_empty()),
        state: run_state,
        groups: crate::hosts::api::list_groups(caller, Permission::PatchRunsRead),
        limit: query
            .limit
            .unwrap_or(DEFAULT_LIST_LIMIT)
            .clamp(1, MAX_LIST_LIMIT),
    };
    let since = match query
        .since
        .as_deref()
        .map(str::trim)
        .filter(|s| !s.is_empty())
    {
        Some(text) => Some(crate::audit::http::parse_time(text, false)?),
        None => None,
    };
    let now = crate::now_millis();
    Ok(state
        .db
        .read("list patch runs", move |tx| {
            store::list_requested_since(tx, &filter, since, now)
        })
        .await?)
}

/// Patch runs on the hosts the caller may see them for, newest first.
#[utoipa::path(get, path = "/api/v1/patch-runs", tag = "patch-runs", params(ListQuery),
    responses((status = 200, description = "the runs", body = PatchRunList),
              (status = 400, description = "an unknown state"),
              (status = 401, description = "no valid session or API token")),
    security(("bearer" = []), ("session" = [])))]
async fn list_runs(
    caller: Caller,
    State(state): State<AppState>,
    Query(query): Query<ListQuery>,
) -> Result<Json<PatchRunList>, WebError> {
    let runs = list(&state, &caller, query).await?;
    Ok(Json(PatchRunList {
        patch_runs: runs
            .into_iter()
            .map(|r| PatchRunJson::new(r, None))
            .collect(),
    }))
}

/// One patch run: who requested and approved it, the plan, the changes, and
/// the output so far for callers who may read it.
#[utoipa::path(get, path = "/api/v1/patch-runs/{id}", tag = "patch-runs",
    params(("id" = String, Path, description = "the run id")),
    responses((status = 200, description = "the run", body = PatchRunJson),
              (status = 401, description = "no valid session or API token"),
              (status = 404, description = "no such patch run")),
    security(("bearer" = []), ("session" = [])))]
async fn get_run(
    caller: Caller,
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<PatchRunJson>, WebError> {
    let (run, group) = super::visible_run(&state, &caller, &id, Permission::PatchRunsRead).await?;
    let output = if caller.may(Permission::PatchRunsOutputRead, group.as_deref()) {
        Some(output(&state, &run, 0).await?)
    } else {
        None
    };
    Ok(Json(PatchRunJson::new(run, output)))
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
pub struct OutputQuery {
    /// The byte offset to start at: 0, or a `next` from before.
    from: Option<u64>,
}

/// A run's output from a byte offset, as far as it is contiguous.
#[utoipa::path(get, path = "/api/v1/patch-runs/{id}/output", tag = "patch-runs",
    params(("id" = String, Path, description = "the run id"), OutputQuery),
    responses((status = 200, description = "the output", body = OutputJson),
              (status = 401, description = "no valid session or API token"),
              (status = 404, description = "no such patch run")),
    security(("bearer" = []), ("session" = [])))]
async fn get_output(
    caller: Caller,
    State(state): State<AppState>,
    Path(id): Path<String>,
    Query(query): Query<OutputQuery>,
) -> Result<Json<OutputJson>, WebError> {
    let (run, _) =
        super::visible_run(&state, &caller, &id, Permission::PatchRunsOutputRead).await?;
    Ok(Json(output(&state, &run, query.from.unwrap_or(0)).await?))
}

/// Approve a run's plan: its upgrade is issued at once.
#[utoipa::path(post, path = "/api/v1/patch-runs/{id}/approve", tag = "patch-runs",
    params(("id" = String, Path, description = "the run id")),
    responses((status = 200, description = "the run, running", body = PatchRunJson),
              (status = 401, description = "no valid session or API token"),
              (status = 403, description = "the caller may not approve it (or requested it and it needs another user)"),
              (status = 404, description = "no such patch run"),
              (status = 409, description = "the run is not awaiting approval")),
    security(("bearer" = []), ("session" = [])))]
async fn approve_run(
    caller: Caller,
    Extension(request_id): Extension<RequestId>,
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<PatchRunJson>, WebError> {
    let run = super::approve(
        &state,
        &caller,
        &id,
        &request_id.to_string(),
        crate::now_millis(),
    )
    .await?;
    Ok(Json(PatchRunJson::new(run, None)))
}

/// Cancel a run: at once when nothing runs yet; a running upgrade is
/// stopped by the agent and the run ends when it reports.
#[utoipa::path(post, path = "/api/v1/patch-runs/{id}/cancel", tag = "patch-runs",
    params(("id" = String, Path, description = "the run id")),
    responses((status = 200, description = "the run", body = PatchRunJson),
              (status = 401, description = "no valid session or API token"),
              (status = 403, description = "the caller may not cancel it"),
              (status = 404, description = "no such patch run"),
              (status = 409, description = "the run has ended or is being cancelled")),
    security(("bearer" = []), ("session" = [])))]
async fn cancel_run(
    caller: Caller,
    Extension(request_id): Extension<RequestId>,
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<PatchRunJson>, WebError> {
    let run = super::cancel(
        &state,
        &caller,
        &id,
        &request_id.to_string(),
        crate::now_millis(),
    )
    .await?;
    Ok(Json(PatchRunJson::new(run, None)))
}

/// The handlers' OpenAPI paths, for [`crate::web::openapi`].
pub(crate) fn openapi_paths() -> utoipa::openapi::OpenApi {
    #[derive(utoipa::OpenApi)]
    #[openapi(paths(create_run, list_runs, get_run, get_output, approve_run, cancel_run))]
    struct Paths;
    <Paths as utoipa::OpenApi>::openapi()
}

// ---------------------------------------------------------------------------
// Pages

/// One run in the list page.
struct RunRow {
    id: String,
    host_id: String,
    state: &'static str,
    badge: &'static str,
    selection: String,
    requested_by: String,
    requested_at: String,
    finished_at: String,
}

pub(super) fn badge(state: RunState) -> &'static str {
    match state {
        RunState::Succeeded | RunState::NothingToDo => "online",
        RunState::Failed | RunState::TimedOut | RunState::AgentOffline => "bad",
        _ => "offline",
    }
}

pub(super) fn describe(selection: &Selection) -> String {
    match selection {
        Selection::All => "all updates".to_owned(),
        Selection::Security => "security updates".to_owned(),
        Selection::Packages { packages } => packages.join(", "),
    }
}

/// The run's reboot policy and where its reboot stands.
pub(super) fn reboot_text(run: &PatchRun) -> String {
    let required = match run.reboot_required {
        Some(true) => "; the host needs a reboot",
        Some(false) => "; the host needs no reboot",
        None => "",
    };
    let state = match (run.reboot_state, &run.reboot_command_id) {
        (Some(super::RebootState::Issued), Some(id)) => format!("; reboot command {id}"),
        (Some(super::RebootState::Due), _) => "; reboot due".to_owned(),
        (Some(super::RebootState::NotNeeded), _) => "; no reboot needed".to_owned(),
        _ => String::new(),
    };
    format!("{}{required}{state}", run.reboot.as_str())
}

/// Services still running replaced files, as one line.
fn restarts_text(restarts: Option<&serde_json::Value>) -> String {
    let Some(list) = restarts.and_then(|r| r.as_array()) else {
        return MISSING.to_owned();
    };
    if list.is_empty() {
        return "none".to_owned();
    }
    list.iter()
        .map(|r| {
            let unit = r["unit"].as_str().filter(|u| !u.is_empty());
            let pids: Vec<String> = r["pids"]
                .as_array()
                .map(|p| p.iter().map(ToString::to_string).collect())
                .unwrap_or_default();
            match unit {
                Some(unit) => unit.to_owned(),
                None => format!("process {}", pids.join(", ")),
            }
        })
        .collect::<Vec<_>>()
        .join(", ")
}

fn when(at: Option<crate::db::Millis>) -> String {
    at.map_or_else(|| MISSING.to_owned(), format::utc)
}

#[derive(Template)]
#[template(path = "patching/templates/runs.html")]
struct RunsPage {
    layout: Layout,
    runs: Vec<RunRow>,
}

async fn runs_page(
    caller: Caller,
    State(state): State<AppState>,
    Query(query): Query<ListQuery>,
) -> Result<Response, WebError> {
    let runs = list(&state, &caller, query).await?;
    let page = RunsPage {
        layout: Layout::for_caller(&caller),
        runs: runs
            .into_iter()
            .map(|r| RunRow {
                state: r.state.as_str(),
                badge: badge(r.state),
                selection: describe(&r.selection),
                requested_by: r.requested_by.to_string(),
                requested_at: format::utc(r.requested_at),
                finished_at: when(r.finished_at),
                id: r.id,
                host_id: r.host_id,
            })
            .collect(),
    };
    Ok(html(StatusCode::OK, page.render()?))
}

/// A change for the page's tables.
struct ChangeRow {
    name: String,
    arch: String,
    before: String,
    after: String,
}

fn change_rows(changes: Option<&Vec<PackageChange>>) -> Vec<ChangeRow> {
    let shown = |v: &str, empty: &str| {
        if v.is_empty() {
            empty.to_owned()
        } else {
            v.to_owned()
        }
    };
    changes
        .map(|c| {
            c.iter()
                .map(|c| ChangeRow {
                    name: c.name.clone(),
                    arch: c.arch.clone(),
                    before: shown(&c.before, "(new)"),
                    after: shown(&c.after, "(removed)"),
                })
                .collect()
        })
        .unwrap_or_default()
}

#[derive(Template)]
#[template(path = "patching/templates/run.html")]
struct RunPage {
    layout: Layout,
    id: String,
    host_id: String,
    state: &'static str,
    badge: &'static str,
    refresh: bool,
    facts: Vec<(&'static str, String)>,
    plan_in: bool,
    plan: Vec<ChangeRow>,
    changes_in: bool,
    changes: Vec<ChangeRow>,
    error: String,
    can_approve: bool,
    /// The caller requested it and another user must approve it.
    awaiting_other: bool,
    can_cancel: bool,
    /// `None`: the caller may not read the output.
    output: Option<String>,
}

async fn run_page(
    caller: Caller,
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Response, WebError> {
    let (run, group) = super::visible_run(&state, &caller, &id, Permission::PatchRunsRead).await?;
    let group = group.as_deref();
    let output = if caller.may(Permission::PatchRunsOutputRead, group) {
        Some(output(&state, &run, 0).await?.text)
    } else {
        None
    };
    let facts = vec![
        ("Host", run.host_id.clone()),
        ("Packages", describe(&run.selection)),
        ("Approval", run.approval.as_str().to_owned()),
        ("Requested by", run.requested_by.to_string()),
        ("Requested at", format::utc(run.requested_at)),
        (
            "Approved by",
            run.approved_by
                .as_ref()
                .map_or_else(|| MISSING.to_owned(), ToString::to_string),
        ),
        ("Approved at", when(run.approved_at)),
        (
            "Cancelled by",
            run.cancelled_by
                .as_ref()
                .map_or_else(|| MISSING.to_owned(), ToString::to_string),
        ),
        ("Started (agent clock)", when(run.started_at)),
        ("Finished (agent clock)", when(run.finished_at)),
        (
            "Exit code",
            run.exit_code
                .map_or_else(|| MISSING.to_owned(), |c| c.to_string()),
        ),
        ("Timeout", format::duration(u64::from(run.timeout_secs))),
        (
            "Dry-run command",
            run.dry_run_command_id
                .clone()
                .unwrap_or_else(|| MISSING.to_owned()),
        ),
        (
            "Upgrade command",
            run.command_id.clone().unwrap_or_else(|| MISSING.to_owned()),
        ),
        (
            "Rollout",
            run.rollout_id.clone().unwrap_or_else(|| MISSING.to_owned()),
        ),
        (
            "Excluded",
            if run.exclude.is_empty() {
                MISSING.to_owned()
            } else {
                run.exclude
                    .iter()
                    .map(|p| p.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            },
        ),
        ("Reboot", reboot_text(&run)),
        ("Services to restart", restarts_text(run.restarts.as_ref())),
    ];
    let page = RunPage {
        layout: Layout::for_caller(&caller),
        state: run.state.as_str(),
        badge: badge(run.state),
        refresh: !run.state.is_final(),
        facts,
        plan_in: run.plan.is_some(),
        plan: change_rows(run.plan.as_ref()),
        changes_in: run.changes.is_some(),
        changes: change_rows(run.changes.as_ref()),
        error: run.error.clone().unwrap_or_default(),
        awaiting_other: run.state == RunState::AwaitingApproval
            && !super::may_approve_as(&caller, &run),
        can_approve: run.state == RunState::AwaitingApproval
            && super::may_approve_as(&caller, &run)
            && caller.may(Permission::PatchRunsApprove, group)
            && caller.may(Permission::PatchRunsExecute, group),
        can_cancel: !run.state.is_final()
            && run.cancel_command_id.is_none()
            && caller.may(Permission::PatchRunsCancel, group),
        output,
        id: run.id,
        host_id: run.host_id,
    };
    Ok(html(StatusCode::OK, page.render()?))
}

/// The host page's "Patch" form: `selection` (all, security, packages),
/// `packages` (names separated by spaces or commas), `approval`.
async fn create_form(
    caller: Caller,
    Extension(request_id): Extension<RequestId>,
    State(state): State<AppState>,
    Path(host_id): Path<String>,
    body: Bytes,
) -> Result<Response, WebError> {
    let form = FormFields::parse(&body);
    let selection = match form.get("selection") {
        "all" => Selection::All,
        "packages" => Selection::Packages {
            packages: form
                .get("packages")
                .split(|c: char| c == ',' || c.is_whitespace())
                .filter(|p| !p.is_empty())
                .map(str::to_owned)
                .collect(),
        },
        _ => Selection::Security,
    };
    let body = serde_json::json!({
        "host_id": host_id,
        "selection": selection,
        "approval": form.opt("approval").filter(|a| !a.is_empty()).unwrap_or("other_user"),
    });
    let request =
        super::parse_create(body.to_string().as_bytes()).map_err(|e| WebError::BadRequest(e.0))?;
    let run = super::create(
        &state,
        &caller,
        request,
        &request_id.to_string(),
        crate::now_millis(),
    )
    .await?;
    Ok(Redirect::to(&format!("/patch-runs/{}", run.id)).into_response())
}

async fn approve_form(
    caller: Caller,
    Extension(request_id): Extension<RequestId>,
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Response, WebError> {
    let run = super::approve(
        &state,
        &caller,
        &id,
        &request_id.to_string(),
        crate::now_millis(),
    )
    .await?;
    Ok(Redirect::to(&format!("/patch-runs/{}", run.id)).into_response())
}

async fn cancel_form(
    caller: Caller,
    Extension(request_id): Extension<RequestId>,
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Response, WebError> {
    let run = super::cancel(
        &state,
        &caller,
        &id,
        &request_id.to_string(),
        crate::now_millis(),
    )
    .await?;
    Ok(Redirect::to(&format!("/patch-runs/{}", run.id)).into_response())
}
