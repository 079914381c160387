//! Patch policies and rollouts over the API and as pages:
//!
//! - `GET|POST /api/v1/patch-policies`, `GET|PUT|DELETE /api/v1/patch-policies/{id}`;
//! - `POST /api/v1/patch-policies/{id}/run`: a rollout now, outside any window;
//! - `GET /api/v1/patch-rollouts[?policy_id=]`, `GET /api/v1/patch-rollouts/{id}`
//!   (with its runs), `POST /api/v1/patch-rollouts/{id}/cancel`;
//! - pages `/patch-policies` (list and a creation form), `/patch-policies/{id}`,
//!   `/patch-rollouts/{id}`, and the forms behind their buttons.
//!
//! Scope: a policy reaches hosts through its groups and hosts, so every
//! check is made for each group it reaches (an ungrouped host counts as
//! no group): reading needs `patch_policies:read` for all of them, changing
//! it `patch_policies:create`/`update`/`delete`, and a policy whose runs
//! go without a person (approval `none`, or approval by age) also needs
//! `patch_runs:execute` for all of them, as a single run does. Starting a
//! rollout by hand needs `patch_runs:create` for all of them.

use askama::Template;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use axum::{Extension, Json};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::policy::{self, Policy, PolicyInput, Window};
use super::policy_store::{self, Rollout};
use super::{Approval, PatchRun, RunState, Selection, store};
use crate::access::{Caller, Permission};
use crate::audit::{Action, Outcome};
use crate::state::AppState;
use crate::web::form::FormFields;
use crate::web::format::{self, MISSING};
use crate::web::layout::Layout;
use crate::web::{Access, RequestId, Routes, WebError, html};

pub fn routes() -> Routes {
    Routes::new()
        .get(
            "/api/v1/patch-policies",
            Access::Permission(Permission::PatchPoliciesRead),
            list_policies,
        )
        .post(
            "/api/v1/patch-policies",
            Access::Permission(Permission::PatchPoliciesCreate),
            create_policy,
        )
        .get(
            "/api/v1/patch-policies/{id}",
            Access::Permission(Permission::PatchPoliciesRead),
            get_policy,
        )
        .put(
            "/api/v1/patch-policies/{id}",
            Access::Permission(Permission::PatchPoliciesUpdate),
            update_policy,
        )
        .delete(
            "/api/v1/patch-policies/{id}",
            Access::Permission(Permission::PatchPoliciesDelete),
            delete_policy,
        )
        .post(
            "/api/v1/patch-policies/{id}/run",
            Access::Permission(Permission::PatchRunsCreate),
            run_policy,
        )
        .get(
            "/api/v1/patch-rollouts",
            Access::Permission(Permission::PatchRunsRead),
            list_rollouts,
        )
        .get(
            "/api/v1/patch-rollouts/{id}",
            Access::Permission(Permission::PatchRunsRead),
            get_rollout,
        )
        .post(
            "/api/v1/patch-rollouts/{id}/cancel",
            Access::Permission(Permission::PatchRunsCancel),
            cancel_rollout,
        )
        .get(
            "/patch-policies",
            Access::Permission(Permission::PatchPoliciesRead),
            policies_page,
        )
        .post(
            "/patch-policies",
            Access::Permission(Permission::PatchPoliciesCreate),
            create_form,
        )
        .get(
            "/patch-policies/{id}",
            Access::Permission(Permission::PatchPoliciesRead),
            policy_page,
        )
        .post(
            "/patch-policies/{id}/run",
            Access::Permission(Permission::PatchRunsCreate),
            run_form,
        )
        .post(
            "/patch-policies/{id}/delete",
            Access::Permission(Permission::PatchPoliciesDelete),
            delete_form,
        )
        .get(
            "/patch-rollouts/{id}",
            Access::Permission(Permission::PatchRunsRead),
            rollout_page,
        )
        .post(
            "/patch-rollouts/{id}/cancel",
            Access::Permission(Permission::PatchRunsCancel),
            cancel_rollout_form,
        )
}

/// The groups a policy reaches (`None`: an ungrouped host), from the
/// stored hosts.
async fn reached_groups(
    state: &AppState,
    host_ids: &[String],
    group_ids: &[String],
) -> Result<Vec<Option<String>>, WebError> {
    let hosts = host_ids.to_vec();
    let mut groups: Vec<Option<String>> = group_ids.iter().cloned().map(Some).collect();
    let host_groups = state
        .db
        .read("policy host groups", move |tx| {
            let mut out = Vec::new();
            for id in &hosts {
                if let Some(h) = crate::hosts::store::get(tx, id)? {
                    out.push(h.group_id().map(str::to_owned));
                }
            }
            Ok(out)
        })
        .await?;
    groups.extend(host_groups);
    groups.sort();
    groups.dedup();
    Ok(groups)
}

fn may_all(caller: &Caller, p: Permission, groups: &[Option<String>]) -> bool {
    groups.iter().all(|g| caller.may(p, g.as_deref()))
}

/// Whether the caller may read the policy.
async fn visible(state: &AppState, caller: &Caller, p: &Policy) -> Result<bool, WebError> {
    let groups = reached_groups(state, &p.host_ids, &p.group_ids).await?;
    Ok(may_all(caller, Permission::PatchPoliciesRead, &groups))
}

async fn load_policy(state: &AppState, caller: &Caller, id: &str) -> Result<Policy, WebError> {
    const UNKNOWN: WebError = WebError::NotFound("no such patch policy");
    if id.len() > 64 {
        return Err(UNKNOWN);
    }
    let lookup = id.to_owned();
    let policy = state
        .db
        .read("load patch policy", move |tx| {
            policy_store::get(tx, &lookup)
        })
        .await?
        .ok_or(UNKNOWN)?;
    if !visible(state, caller, &policy).await? {
        return Err(UNKNOWN);
    }
    Ok(policy)
}

/// Checks the caller may set `input` with `p`; audits and refuses if not.
async fn check_may_set(
    state: &AppState,
    caller: &Caller,
    input: &PolicyInput,
    p: Permission,
    action: Action,
    request_id: &str,
) -> Result<(), WebError> {
    let groups = reached_groups(state, &input.host_ids, &input.group_ids).await?;
    let unattended = input.approval == Approval::None || input.auto_approve_after_days.is_some();
    let mut missing = Vec::new();
    if !may_all(caller, p, &groups) {
        missing.push(p.name());
    }
    if unattended && !may_all(caller, Permission::PatchRunsExecute, &groups) {
        missing.push(Permission::PatchRunsExecute.name());
    }
    if missing.is_empty() {
        return Ok(());
    }
    let event = caller
        .event(crate::now_millis(), action, Outcome::Denied)
        .target(input.name.clone())
        .details(serde_json::json!({
            "reason": format!("permission {} for every group the policy reaches", missing.join(" and ")),
            "request_id": request_id,
        }));
    state
        .db
        .write("audit refused patch policy", move |tx| {
            crate::audit::store::append(tx, &event).map(|_| ())
        })
        .await?;
    Err(WebError::Forbidden(
        "you may not set this policy for every host it reaches (runs without a person also need patch_runs:execute)",
    ))
}

async fn create(
    state: &AppState,
    caller: &Caller,
    input: PolicyInput,
    request_id: &str,
) -> Result<Policy, WebError> {
    check_may_set(
        state,
        caller,
        &input,
        Permission::PatchPoliciesCreate,
        Action::PatchPolicyCreate,
        request_id,
    )
    .await?;
    let id = uuid::Uuid::new_v4().to_string();
    let now = crate::now_millis();
    let by = caller.actor.to_string();
    let event = caller
        .event(now, Action::PatchPolicyCreate, Outcome::Success)
        .target(id.clone())
        .details(serde_json::json!({ "name": input.name, "request_id": request_id }));
    let stored = id.clone();
    let inserted = state
        .db
        .write("create patch policy", move |tx| {
            if !policy_store::insert(tx, &stored, &input, &by, now)? {
                return Ok(false);
            }
            crate::audit::store::append(tx, &event)?;
            Ok(true)
        })
        .await?;
    if !inserted {
        return Err(WebError::Conflict("a patch policy with this name exists"));
    }
    load_policy(state, caller, &id).await
}

/// A rollout as the API shows it.
#[derive(Debug, Serialize, ToSchema)]
pub struct RolloutJson {
    id: String,
    policy_id: Option<String>,
    policy_name: String,
    /// The window opening it was made for; null when started by hand.
    occurrence: Option<String>,
    window_end: Option<String>,
    /// running, completed, stopped or cancelled.
    state: &'static str,
    concurrency: u32,
    canary: u32,
    max_failure_percent: u32,
    requested_by: String,
    requested_at: Option<String>,
    finished_at: Option<String>,
    stop_reason: Option<String>,
    /// The policy as it was.
    #[schema(value_type = Object)]
    policy: serde_json::Value,
    /// Its runs in rollout order (canaries first); only in single answers.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Vec<Object>>)]
    runs: Option<Vec<super::api::PatchRunJson>>,
}

impl RolloutJson {
    fn new(r: Rollout, runs: Option<Vec<PatchRun>>) -> Self {
        RolloutJson {
            occurrence: r.occurrence.and_then(format::rfc3339),
            window_end: r.window_end.and_then(format::rfc3339),
            state: r.state.as_str(),
            requested_at: format::rfc3339(r.requested_at),
            finished_at: r.finished_at.and_then(format::rfc3339),
            id: r.id,
            policy_id: r.policy_id,
            policy_name: r.policy_name,
            concurrency: r.concurrency,
            canary: r.canary,
            max_failure_percent: r.max_failure_percent,
            requested_by: r.requested_by,
            stop_reason: r.stop_reason,
            policy: r.policy,
            runs: runs.map(|runs| {
                runs.into_iter()
                    .map(super::api::PatchRunJson::brief)
                    .collect()
            }),
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct PolicyList {
    patch_policies: Vec<Policy>,
}

/// The patch policies the caller may read, by name.
#[utoipa::path(get, path = "/api/v1/patch-policies", tag = "patch-policies",
    responses((status = 200, description = "the policies", body = PolicyList),
              (status = 401, description = "no valid session or API token")),
    security(("bearer" = []), ("session" = [])))]
async fn list_policies(
    caller: Caller,
    State(state): State<AppState>,
) -> Result<Json<PolicyList>, WebError> {
    Ok(Json(PolicyList {
        patch_policies: visible_policies(&state, &caller).await?,
    }))
}

async fn visible_policies(state: &AppState, caller: &Caller) -> Result<Vec<Policy>, WebError> {
    let all = state
        .db
        .read("list patch policies", policy_store::list)
        .await?;
    let mut out = Vec::new();
    for p in all {
        if visible(state, caller, &p).await? {
            out.push(p);
        }
    }
    Ok(out)
}

/// Create a patch policy.
#[utoipa::path(post, path = "/api/v1/patch-policies", tag = "patch-policies",
    request_body(content = policy::PolicyBody, description = "the policy"),
    responses((status = 201, description = "the policy", body = Policy),
              (status = 400, description = "the body is not a valid policy"),
              (status = 403, description = "the caller may not set it for every host it reaches"),
              (status = 409, description = "the name is taken")),
    security(("bearer" = []), ("session" = [])))]
async fn create_policy(
    caller: Caller,
    Extension(request_id): Extension<RequestId>,
    State(state): State<AppState>,
    body: Bytes,
) -> Result<(StatusCode, Json<Policy>), WebError> {
    let input = policy::parse(&body).map_err(|e| WebError::BadRequest(e.0))?;
    let p = create(&state, &caller, input, &request_id.to_string()).await?;
    Ok((StatusCode::CREATED, Json(p)))
}

/// One patch policy.
#[utoipa::path(get, path = "/api/v1/patch-policies/{id}", tag = "patch-policies",
    params(("id" = String, Path, description = "the policy id")),
    responses((status = 200, description = "the policy", body = Policy),
              (status = 404, description = "no such patch policy")),
    security(("bearer" = []), ("session" = [])))]
async fn get_policy(
    caller: Caller,
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<Policy>, WebError> {
    Ok(Json(load_policy(&state, &caller, &id).await?))
}

/// Replace a patch policy's settings (running rollouts keep the policy as
/// it was when they started).
#[utoipa::path(put, path = "/api/v1/patch-policies/{id}", tag = "patch-policies",
    params(("id" = String, Path, description = "the policy id")),
    request_body(content = policy::PolicyBody, description = "the policy"),
    responses((status = 200, description = "the policy", body = Policy),
              (status = 400, description = "the body is not a valid policy"),
              (status = 403, description = "the caller may not set it for every host it reaches"),
              (status = 404, description = "no such patch policy"),
              (status = 409, description = "the name is taken")),
    security(("bearer" = []), ("session" = [])))]
async fn update_policy(
    caller: Caller,
    Extension(request_id): Extension<RequestId>,
    State(state): State<AppState>,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<Json<Policy>, WebError> {
    let before = load_policy(&state, &caller, &id).await?;
    let input = policy::parse(&body).map_err(|e| WebError::BadRequest(e.0))?;
    let request_id = request_id.to_string();
    // Changing needs the right both where the policy reached and where it
    // will reach.
    let old_groups = reached_groups(&state, &before.host_ids, &before.group_ids).await?;
    if !may_all(&caller, Permission::PatchPoliciesUpdate, &old_groups) {
        return Err(WebError::Forbidden(
            "you may not change this policy for every host it reaches",
        ));
    }
    check_may_set(
        &state,
        &caller,
        &input,
        Permission::PatchPoliciesUpdate,
        Action::PatchPolicyUpdate,
        &request_id,
    )
    .await?;
    let now = crate::now_millis();
    let by = caller.actor.to_string();
    let event = caller
        .event(now, Action::PatchPolicyUpdate, Outcome::Success)
        .target(id.clone())
        .details(serde_json::json!({
            "name": input.name,
            "before": before.snapshot(),
            "request_id": request_id,
        }));
    let stored = id.clone();
    let done = state
        .db
        .write("update patch policy", move |tx| {
            if policy_store::name_taken(tx, &input.name, &stored)? {
                return Ok(Err(WebError::Conflict(
                    "a patch policy with this name exists",
                )));
            }
            if !policy_store::update(tx, &stored, &input, &by, now)? {
                return Ok(Err(WebError::NotFound("no such patch policy")));
            }
            crate::audit::store::append(tx, &event)?;
            Ok(Ok(()))
        })
        .await?;
    done?;
    Ok(Json(load_policy(&state, &caller, &id).await?))
}

async fn delete(
    state: &AppState,
    caller: &Caller,
    id: &str,
    request_id: &str,
) -> Result<(), WebError> {
    let p = load_policy(state, caller, id).await?;
    let groups = reached_groups(state, &p.host_ids, &p.group_ids).await?;
    if !may_all(caller, Permission::PatchPoliciesDelete, &groups) {
        return Err(WebError::Forbidden(
            "you may not delete this policy for every host it reaches",
        ));
    }
    let event = caller
        .event(
            crate::now_millis(),
            Action::PatchPolicyDelete,
            Outcome::Success,
        )
        .target(p.id.clone())
        .details(serde_json::json!({ "policy": p.snapshot(), "request_id": request_id }));
    let stored = p.id.clone();
    state
        .db
        .write("delete patch policy", move |tx| {
            if policy_store::delete(tx, &stored)? {
                crate::audit::store::append(tx, &event)?;
            }
            Ok(())
        })
        .await?;
    Ok(())
}

/// Delete a patch policy (its rollouts stay, with the policy as it was).
#[utoipa::path(delete, path = "/api/v1/patch-policies/{id}", tag = "patch-policies",
    params(("id" = String, Path, description = "the policy id")),
    responses((status = 204, description = "deleted"),
              (status = 404, description = "no such patch policy")),
    security(("bearer" = []), ("session" = [])))]
async fn delete_policy(
    caller: Caller,
    Extension(request_id): Extension<RequestId>,
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<StatusCode, WebError> {
    delete(&state, &caller, &id, &request_id.to_string()).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Starts a rollout of the policy now, outside its window.
async fn start(
    state: &AppState,
    caller: &Caller,
    id: &str,
    request_id: &str,
) -> Result<String, WebError> {
    let p = load_policy(state, caller, id).await?;
    let groups = reached_groups(state, &p.host_ids, &p.group_ids).await?;
    let unattended = p.run_approval() == Approval::None;
    if !may_all(caller, Permission::PatchRunsCreate, &groups)
        || (unattended && !may_all(caller, Permission::PatchRunsExecute, &groups))
    {
        return Err(WebError::Forbidden(
            "starting this policy needs patch_runs:create (and, for runs without a person, patch_runs:execute) for every host it reaches",
        ));
    }
    let now = crate::now_millis();
    let actor = caller.actor.clone();
    let user = caller.user.as_ref().map(|u| u.id);
    let event = caller.event(now, Action::PatchRolloutStart, Outcome::Success);
    let request_id = request_id.to_owned();
    let made = state
        .db
        .write("start patch rollout", move |tx| {
            let Some(rollout) = super::rollout::create(tx, &p, None, &actor, user, now)? else {
                return Ok(None);
            };
            let event = event.target(rollout.clone()).details(serde_json::json!({
                "policy_id": p.id,
                "policy": p.name,
                "request_id": request_id,
            }));
            crate::audit::store::append(tx, &event)?;
            Ok(Some(rollout))
        })
        .await?
        .ok_or(WebError::Conflict("the rollout could not be made"))?;
    // The first runs start now rather than at the next tick.
    if let Err(e) = super::rollout::advance(state, now).await {
        tracing::warn!(error = %e, "cannot advance the new rollout");
    }
    Ok(made)
}

/// Run the policy now over its hosts, outside its window.
#[utoipa::path(post, path = "/api/v1/patch-policies/{id}/run", tag = "patch-policies",
    params(("id" = String, Path, description = "the policy id")),
    responses((status = 201, description = "the rollout", body = RolloutJson),
              (status = 403, description = "the caller may not start it"),
              (status = 404, description = "no such patch policy")),
    security(("bearer" = []), ("session" = [])))]
async fn run_policy(
    caller: Caller,
    Extension(request_id): Extension<RequestId>,
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<(StatusCode, Json<RolloutJson>), WebError> {
    let rollout = start(&state, &caller, &id, &request_id.to_string()).await?;
    let (r, runs) = load_rollout(&state, &caller, &rollout).await?;
    Ok((StatusCode::CREATED, Json(RolloutJson::new(r, Some(runs)))))
}

/// The rollout and its runs, if the caller may read every one of its runs'
/// hosts.
async fn load_rollout(
    state: &AppState,
    caller: &Caller,
    id: &str,
) -> Result<(Rollout, Vec<PatchRun>), WebError> {
    const UNKNOWN: WebError = WebError::NotFound("no such rollout");
    if id.len() > 64 {
        return Err(UNKNOWN);
    }
    let lookup = id.to_owned();
    let now = crate::now_millis();
    let (rollout, runs, groups) = state
        .db
        .read("load rollout", move |tx| {
            let Some(rollout) = policy_store::get_rollout(tx, &lookup)? else {
                return Ok((None, Vec::new(), Vec::new()));
            };
            let runs = store::rollout_runs(tx, &lookup, now)?;
            let mut groups = Vec::new();
            for run in &runs {
                if let Some(h) = crate::hosts::store::get(tx, &run.host_id)? {
                    groups.push(h.group_id().map(str::to_owned));
                }
            }
            Ok((Some(rollout), runs, groups))
        })
        .await?;
    let rollout = rollout.ok_or(UNKNOWN)?;
    if !may_all(caller, Permission::PatchRunsRead, &groups) {
        return Err(UNKNOWN);
    }
    Ok((rollout, runs))
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
pub struct RolloutQuery {
    /// Only this policy's rollouts.
    policy_id: Option<String>,
    /// At most this many (1 to 500, default 100).
    limit: Option<u32>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct RolloutList {
    patch_rollouts: Vec<RolloutJson>,
}

/// Rollouts, newest first (for callers who may read patch runs
/// everywhere; others see the rollouts of the policies they may read).
#[utoipa::path(get, path = "/api/v1/patch-rollouts", tag = "patch-policies", params(RolloutQuery),
    responses((status = 200, description = "the rollouts", body = RolloutList)),
    security(("bearer" = []), ("session" = [])))]
async fn list_rollouts(
    caller: Caller,
    State(state): State<AppState>,
    Query(query): Query<RolloutQuery>,
) -> Result<Json<RolloutList>, WebError> {
    let rollouts = rollouts_for(&state, &caller, query.policy_id, query.limit).await?;
    Ok(Json(RolloutList {
        patch_rollouts: rollouts
            .into_iter()
            .map(|r| RolloutJson::new(r, None))
            .collect(),
    }))
}

async fn rollouts_for(
    state: &AppState,
    caller: &Caller,
    policy_id: Option<String>,
    limit: Option<u32>,
) -> Result<Vec<Rollout>, WebError> {
    let limit = limit.unwrap_or(100).clamp(1, 500);
    let all = state
        .db
        .read("list rollouts", move |tx| {
            policy_store::list_rollouts(tx, policy_id.as_deref(), limit)
        })
        .await?;
    let mut out = Vec::new();
    for r in all {
        if load_rollout(state, caller, &r.id).await.is_ok() {
            out.push(r);
        }
    }
    Ok(out)
}

/// One rollout with its runs.
#[utoipa::path(get, path = "/api/v1/patch-rollouts/{id}", tag = "patch-policies",
    params(("id" = String, Path, description = "the rollout id")),
    responses((status = 200, description = "the rollout", body = RolloutJson),
              (status = 404, description = "no such rollout")),
    security(("bearer" = []), ("session" = [])))]
async fn get_rollout(
    caller: Caller,
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<RolloutJson>, WebError> {
    let (r, runs) = load_rollout(&state, &caller, &id).await?;
    Ok(Json(RolloutJson::new(r, Some(runs))))
}

/// Cancels a rollout: its queued runs are skipped and each run still going
/// is cancelled as a single run would be.
async fn cancel(
    state: &AppState,
    caller: &Caller,
    id: &str,
    request_id: &str,
) -> Result<(), WebError> {
    let (rollout, runs) = load_rollout(state, caller, id).await?;
    let now = crate::now_millis();
    let event = caller
        .event(now, Action::PatchRolloutCancel, Outcome::Success)
        .target(rollout.id.clone())
        .details(serde_json::json!({ "request_id": request_id }));
    let rid = rollout.id.clone();
    let by = caller.actor.to_string();
    let done = state
        .db
        .write("cancel rollout", move |tx| {
            let reason = format!("the rollout was cancelled by {by}");
            if !policy_store::finish_rollout(
                tx,
                &rid,
                policy_store::RolloutState::Cancelled,
                Some(&reason),
                now,
            )? {
                return Ok(false);
            }
            store::skip_queued(tx, &rid, &reason)?;
            crate::audit::store::append(tx, &event)?;
            Ok(true)
        })
        .await?;
    if !done {
        return Err(WebError::Conflict("this rollout has ended"));
    }
    for run in runs.iter().filter(|r| {
        !r.state.is_final() && r.state != RunState::Queued && r.cancel_command_id.is_none()
    }) {
        if let Err(e) = super::cancel(state, caller, &run.id, request_id, now).await {
            tracing::warn!(patch_run_id = %run.id, error = %e, "cannot cancel a rollout's run");
        }
    }
    Ok(())
}

/// Cancel a rollout.
#[utoipa::path(post, path = "/api/v1/patch-rollouts/{id}/cancel", tag = "patch-policies",
    params(("id" = String, Path, description = "the rollout id")),
    responses((status = 200, description = "the rollout", body = RolloutJson),
              (status = 404, description = "no such rollout"),
              (status = 409, description = "the rollout has ended")),
    security(("bearer" = []), ("session" = [])))]
async fn cancel_rollout(
    caller: Caller,
    Extension(request_id): Extension<RequestId>,
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<RolloutJson>, WebError> {
    cancel(&state, &caller, &id, &request_id.to_string()).await?;
    let (r, runs) = load_rollout(&state, &caller, &id).await?;
    Ok(Json(RolloutJson::new(r, Some(runs))))
}

/// The handlers' OpenAPI paths, for [`crate::web::openapi`].
pub(crate) fn openapi_paths() -> utoipa::openapi::OpenApi {
    #[derive(utoipa::OpenApi)]
    #[openapi(paths(
        list_policies,
        create_policy,
        get_policy,
        update_policy,
        delete_policy,
        run_policy,
        list_rollouts,
        get_rollout,
        cancel_rollout
    ))]
    struct Paths;
    <Paths as utoipa::OpenApi>::openapi()
}

// ---------------------------------------------------------------------------
// Pages

struct PolicyRow {
    id: String,
    name: String,
    enabled: bool,
    targets: String,
    what: String,
    window: String,
    next: String,
}

fn describe_window(w: Option<&Window>) -> String {
    match w {
        None => "none (by hand only)".to_owned(),
        Some(w) => format!(
            "{} {} for {} min ({})",
            w.days.join(","),
            w.start,
            w.duration_minutes,
            w.time_zone
        ),
    }
}

fn next_window(p: &Policy, now: crate::db::Millis) -> String {
    let Some(schedule) = p.window.as_ref().and_then(|w| w.schedule().ok()) else {
        return MISSING.to_owned();
    };
    if let Some((start, end)) = schedule.open_at(now) {
        return format!(
            "open now, until {}",
            schedule.local(end).clone() + &format!(" (opened {})", schedule.local(start))
        );
    }
    schedule
        .next_after(now)
        .map_or_else(|| MISSING.to_owned(), |(start, _)| schedule.local(start))
}

fn describe_policy(p: &Policy) -> String {
    let mut what = super::api::describe(&p.selection);
    if !p.exclude.is_empty() {
        let names: Vec<&str> = p.exclude.iter().map(|x| x.as_str()).collect();
        what.push_str(&format!(", except {}", names.join(", ")));
    }
    match p.auto_approve_after_days {
        Some(days) => what.push_str(&format!("; approved automatically after {days} days")),
        None => what.push_str(&format!("; approval {}", p.approval.as_str())),
    }
    what.push_str(&format!("; reboot {}", p.reboot.as_str()));
    what
}

#[derive(Template)]
#[template(path = "patching/templates/policies.html")]
struct PoliciesPage {
    layout: Layout,
    policies: Vec<PolicyRow>,
    can_create: bool,
}

async fn policies_page(
    caller: Caller,
    State(state): State<AppState>,
) -> Result<Response, WebError> {
    let now = crate::now_millis();
    let policies = visible_policies(&state, &caller).await?;
    let page = PoliciesPage {
        layout: Layout::for_caller(&caller),
        policies: policies
            .iter()
            .map(|p| PolicyRow {
                id: p.id.clone(),
                name: p.name.clone(),
                enabled: p.enabled,
                targets: format!("{} hosts, {} groups", p.host_ids.len(), p.group_ids.len()),
                what: describe_policy(p),
                window: describe_window(p.window.as_ref()),
                next: if p.enabled {
                    next_window(p, now)
                } else {
                    "disabled".to_owned()
                },
            })
            .collect(),
        can_create: caller.may(Permission::PatchPoliciesCreate, None)
            || !matches!(
                caller.host_scope(Permission::PatchPoliciesCreate),
                crate::access::HostScope::Groups(ref g) if g.is_empty()
            ),
    };
    Ok(html(StatusCode::OK, page.render()?))
}

fn list_field(form: &FormFields, name: &str) -> Vec<String> {
    form.get(name)
        .split(|c: char| c == ',' || c.is_whitespace())
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .collect()
}

/// The creation form: the same checks as the API (the form is turned into
/// the API's JSON body).
async fn create_form(
    caller: Caller,
    Extension(request_id): Extension<RequestId>,
    State(state): State<AppState>,
    body: Bytes,
) -> Result<Response, WebError> {
    let form = FormFields::parse(&body);
    let selection = match form.get("selection") {
        "all" => Selection::All,
        "packages" => Selection::Packages {
            packages: list_field(&form, "packages"),
        },
        _ => Selection::Security,
    };
    let number = |name: &str| -> Option<u32> { form.get(name).trim().parse().ok() };
    let days: Vec<String> = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"]
        .into_iter()
        .filter(|d| form.opt(&format!("day_{d}")).is_some())
        .map(str::to_owned)
        .collect();
    let window = (!days.is_empty()).then(|| {
        serde_json::json!({
            "days": days,
            "start": form.get("start"),
            "duration_minutes": number("duration_minutes").unwrap_or(120),
            "time_zone": form.opt("time_zone").filter(|z| !z.is_empty()).unwrap_or("UTC"),
        })
    });
    let json = serde_json::json!({
        "name": form.get("name"),
        "host_ids": list_field(&form, "host_ids"),
        "group_ids": list_field(&form, "group_ids"),
        "selection": selection,
        "exclude": list_field(&form, "exclude"),
        "approval": form.opt("approval").filter(|a| !a.is_empty()).unwrap_or("other_user"),
        "auto_approve_after_days": number("auto_approve_after_days"),
        "reboot": form.opt("reboot").filter(|r| !r.is_empty()).unwrap_or("never"),
        "window": window,
        "concurrency": number("concurrency"),
        "canary": number("canary"),
        "max_failure_percent": number("max_failure_percent"),
    });
    let input =
        policy::parse(json.to_string().as_bytes()).map_err(|e| WebError::BadRequest(e.0))?;
    let p = create(&state, &caller, input, &request_id.to_string()).await?;
    Ok(Redirect::to(&format!("/patch-policies/{}", p.id)).into_response())
}

struct RolloutRow {
    id: String,
    requested_at: String,
    state: &'static str,
    requested_by: String,
    stop_reason: String,
}

#[derive(Template)]
#[template(path = "patching/templates/policy.html")]
struct PolicyPage {
    layout: Layout,
    id: String,
    name: String,
    facts: Vec<(&'static str, String)>,
    rollouts: Vec<RolloutRow>,
    can_run: bool,
    can_delete: bool,
}

async fn policy_page(
    caller: Caller,
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Response, WebError> {
    let p = load_policy(&state, &caller, &id).await?;
    let now = crate::now_millis();
    let rollouts = rollouts_for(&state, &caller, Some(p.id.clone()), Some(20)).await?;
    let facts = vec![
        ("Enabled", if p.enabled { "yes" } else { "no" }.to_owned()),
        (
            "Hosts",
            if p.host_ids.is_empty() {
                MISSING.to_owned()
            } else {
                p.host_ids.join(", ")
            },
        ),
        (
            "Host groups",
            if p.group_ids.is_empty() {
                MISSING.to_owned()
            } else {
                p.group_ids.join(", ")
            },
        ),
        ("Updates", describe_policy(&p)),
        ("Window", describe_window(p.window.as_ref())),
        ("Next window", next_window(&p, now)),
        ("Concurrency", p.concurrency.to_string()),
        ("Canary hosts", p.canary.to_string()),
        (
            "Stop above",
            format!("{}% failed hosts", p.max_failure_percent),
        ),
        ("Timeout", format::duration(u64::from(p.timeout_secs))),
        (
            "Created",
            format!("{} by {}", format::utc(p.created_at), p.created_by),
        ),
        (
            "Changed",
            format!("{} by {}", format::utc(p.updated_at), p.updated_by),
        ),
    ];
    let page = PolicyPage {
        layout: Layout::for_caller(&caller),
        can_run: caller.may(Permission::PatchRunsCreate, None)
            || p.group_ids
                .iter()
                .all(|g| caller.may(Permission::PatchRunsCreate, Some(g))),
        can_delete: p
            .group_ids
            .iter()
            .all(|g| caller.may(Permission::PatchPoliciesDelete, Some(g))),
        facts,
        rollouts: rollouts
            .into_iter()
            .map(|r| RolloutRow {
                requested_at: format::utc(r.requested_at),
                state: r.state.as_str(),
                requested_by: r.requested_by,
                stop_reason: r.stop_reason.unwrap_or_default(),
                id: r.id,
            })
            .collect(),
        id: p.id,
        name: p.name,
    };
    Ok(html(StatusCode::OK, page.render()?))
}

async fn run_form(
    caller: Caller,
    Extension(request_id): Extension<RequestId>,
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Response, WebError> {
    let rollout = start(&state, &caller, &id, &request_id.to_string()).await?;
    Ok(Redirect::to(&format!("/patch-rollouts/{rollout}")).into_response())
}

async fn delete_form(
    caller: Caller,
    Extension(request_id): Extension<RequestId>,
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Response, WebError> {
    delete(&state, &caller, &id, &request_id.to_string()).await?;
    Ok(Redirect::to("/patch-policies").into_response())
}

struct RolloutRunRow {
    id: String,
    host_id: String,
    canary: bool,
    state: &'static str,
    badge: &'static str,
    reboot: String,
    error: String,
}

#[derive(Template)]
#[template(path = "patching/templates/rollout.html")]
struct RolloutPage {
    layout: Layout,
    id: String,
    title: String,
    state: &'static str,
    refresh: bool,
    facts: Vec<(&'static str, String)>,
    runs: Vec<RolloutRunRow>,
    can_cancel: bool,
}

async fn rollout_page(
    caller: Caller,
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Response, WebError> {
    let (r, runs) = load_rollout(&state, &caller, &id).await?;
    let running = r.state == policy_store::RolloutState::Running;
    let facts = vec![
        ("Policy", r.policy_name.clone()),
        ("State", r.state.as_str().to_owned()),
        (
            "Started",
            format!("{} by {}", format::utc(r.requested_at), r.requested_by),
        ),
        (
            "Window",
            match (r.occurrence, r.window_end) {
                (Some(start), Some(end)) => {
                    format!("{} to {}", format::utc(start), format::utc(end))
                }
                _ => "started by hand".to_owned(),
            },
        ),
        ("Concurrency", r.concurrency.to_string()),
        ("Canary hosts", r.canary.to_string()),
        (
            "Stop above",
            format!("{}% failed hosts", r.max_failure_percent),
        ),
        (
            "Ended",
            r.finished_at
                .map_or_else(|| MISSING.to_owned(), format::utc),
        ),
        (
            "Why it ended",
            r.stop_reason.clone().unwrap_or_else(|| MISSING.to_owned()),
        ),
    ];
    let page = RolloutPage {
        layout: Layout::for_caller(&caller),
        title: format!("Rollout of {}", r.policy_name),
        state: r.state.as_str(),
        refresh: running,
        can_cancel: running && caller.may(Permission::PatchRunsCancel, None),
        facts,
        runs: runs
            .into_iter()
            .map(|run| RolloutRunRow {
                canary: run.rollout_position.is_some_and(|p| p < r.canary),
                state: run.state.as_str(),
                badge: super::api::badge(run.state),
                reboot: super::api::reboot_text(&run),
                error: run.error.unwrap_or_default(),
                id: run.id,
                host_id: run.host_id,
            })
            .collect(),
        id: r.id,
    };
    Ok(html(StatusCode::OK, page.render()?))
}

async fn cancel_rollout_form(
    caller: Caller,
    Extension(request_id): Extension<RequestId>,
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Response, WebError> {
    cancel(&state, &caller, &id, &request_id.to_string()).await?;
    Ok(Redirect::to(&format!("/patch-rollouts/{id}")).into_response())
}
