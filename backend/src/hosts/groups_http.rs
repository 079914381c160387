//! Host groups in the UI (`/host-groups`) and the API
//! (`/api/v1/host-groups`). A caller scoped to some groups sees and changes
//! only those.

use askama::Template;
use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::groups::{self, HostGroup, valid_name};
use crate::access::{Caller, Permission};
use crate::audit::{Action, Outcome};
use crate::db::DbError;
use crate::state::AppState;
use crate::web::form::FormFields;
use crate::web::layout::Layout;
use crate::web::{Access, Routes, WebError, html};

pub fn routes() -> Routes {
    use Permission::*;
    Routes::new()
        .get(
            "/host-groups",
            Access::Permission(HostGroupsRead),
            groups_page,
        )
        .post(
            "/host-groups",
            Access::Permission(HostGroupsCreate),
            create_form,
        )
        .post(
            "/host-groups/{id}",
            Access::Permission(HostGroupsUpdate),
            update_form,
        )
        .post(
            "/host-groups/{id}/delete",
            Access::Permission(HostGroupsDelete),
            delete_form,
        )
        .get(
            "/api/v1/host-groups",
            Access::Permission(HostGroupsRead),
            list_groups,
        )
        .post(
            "/api/v1/host-groups",
            Access::Permission(HostGroupsCreate),
            create_group,
        )
        .patch(
            "/api/v1/host-groups/{id}",
            Access::Permission(HostGroupsUpdate),
            update_group,
        )
        .delete(
            "/api/v1/host-groups/{id}",
            Access::Permission(HostGroupsDelete),
            delete_group,
        )
}

const UNKNOWN: WebError = WebError::NotFound("no such host group");

fn check_name(name: &str) -> Result<(), WebError> {
    if valid_name(name) {
        Ok(())
    } else {
        Err(WebError::BadRequest(
            "a host group name is 1 to 64 printable characters".into(),
        ))
    }
}

fn conflict(e: DbError) -> WebError {
    match e {
        DbError::Conflict { .. } => WebError::Conflict("a host group with that name exists"),
        e => e.into(),
    }
}

async fn visible(
    state: &AppState,
    caller: &Caller,
    id: String,
    p: Permission,
) -> Result<HostGroup, WebError> {
    let group = state
        .db
        .read("load host group", move |tx| groups::get(tx, &id))
        .await?
        .ok_or(UNKNOWN)?;
    caller.require_for_host(p, Some(&group.id), "no such host group")?;
    Ok(group)
}

async fn create(
    state: &AppState,
    caller: &Caller,
    name: String,
    description: String,
) -> Result<String, WebError> {
    check_name(&name)?;
    let now = crate::now_millis();
    let description: String = description.chars().take(500).collect();
    let caller = caller.clone();
    state
        .db
        .write("create host group", move |tx| {
            let id = groups::create(tx, &name, &description, now)?;
            let event = caller
                .event(now, Action::HostGroupCreate, Outcome::Success)
                .target(id.clone())
                .details(serde_json::json!({ "name": name }));
            crate::audit::store::append(tx, &event)?;
            Ok(id)
        })
        .await
        .map_err(conflict)
}

async fn update(
    state: &AppState,
    caller: &Caller,
    id: String,
    name: String,
    description: String,
) -> Result<(), WebError> {
    check_name(&name)?;
    let group = visible(state, caller, id, Permission::HostGroupsUpdate).await?;
    let event = caller
        .event(
            crate::now_millis(),
            Action::HostGroupUpdate,
            Outcome::Success,
        )
        .target(group.id.clone())
        .details(serde_json::json!({ "from": group.name, "to": name }));
    let description: String = description.chars().take(500).collect();
    state
        .db
        .write("update host group", move |tx| {
            groups::update(tx, &group.id, &name, &description)?;
            crate::audit::store::append(tx, &event)?;
            Ok(())
        })
        .await
        .map_err(conflict)
}

async fn delete(state: &AppState, caller: &Caller, id: String) -> Result<(), WebError> {
    let group = visible(state, caller, id, Permission::HostGroupsDelete).await?;
    let event = caller
        .event(
            crate::now_millis(),
            Action::HostGroupDelete,
            Outcome::Success,
        )
        .target(group.id.clone())
        .details(serde_json::json!({ "name": group.name, "hosts": group.hosts }));
    state
        .db
        .write("delete host group", move |tx| {
            groups::delete(tx, &group.id)?;
            crate::audit::store::append(tx, &event)?;
            Ok(())
        })
        .await?;
    Ok(())
}

/// The groups the caller may see.
async fn visible_groups(state: &AppState, caller: &Caller) -> Result<Vec<HostGroup>, WebError> {
    let all = state.db.read("list host groups", groups::list).await?;
    Ok(all
        .into_iter()
        .filter(|g| caller.may(Permission::HostGroupsRead, Some(&g.id)))
        .collect())
}

// ---------------------------------------------------------------------------
// Pages

struct GroupRow {
    id: String,
    name: String,
    description: String,
    hosts: u64,
    can_update: bool,
    can_delete: bool,
}

#[derive(Template)]
#[template(path = "hosts/templates/groups.html")]
struct GroupsPage {
    layout: Layout,
    groups: Vec<GroupRow>,
    can_create: bool,
}

async fn groups_page(caller: Caller, State(state): State<AppState>) -> Result<Response, WebError> {
    let groups = visible_groups(&state, &caller).await?;
    let page = GroupsPage {
        layout: Layout::for_caller(&caller),
        can_create: caller.may(Permission::HostGroupsCreate, None),
        groups: groups
            .into_iter()
            .map(|g| GroupRow {
                can_update: caller.may(Permission::HostGroupsUpdate, Some(&g.id)),
                can_delete: caller.may(Permission::HostGroupsDelete, Some(&g.id)),
                id: g.id,
                name: g.name,
                description: g.description,
                hosts: g.hosts,
            })
            .collect(),
    };
    Ok(html(StatusCode::OK, page.render()?))
}

async fn create_form(
    caller: Caller,
    State(state): State<AppState>,
    form: FormFields,
) -> Result<Response, WebError> {
    create(
        &state,
        &caller,
        form.get("name").to_owned(),
        form.get("description").to_owned(),
    )
    .await?;
    Ok(Redirect::to("/host-groups").into_response())
}

async fn update_form(
    caller: Caller,
    State(state): State<AppState>,
    Path(id): Path<String>,
    form: FormFields,
) -> Result<Response, WebError> {
    update(
        &state,
        &caller,
        id,
        form.get("name").to_owned(),
        form.get("description").to_owned(),
    )
    .await?;
    Ok(Redirect::to("/host-groups").into_response())
}

async fn delete_form(
    caller: Caller,
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Response, WebError> {
    delete(&state, &caller, id).await?;
    Ok(Redirect::to("/host-groups").into_response())
}

// ---------------------------------------------------------------------------
// API

/// A host group as the API shows it.
#[derive(Debug, Serialize, ToSchema)]
pub struct HostGroupJson {
    id: String,
    name: String,
    description: String,
    /// Hosts in it.
    hosts: u64,
    created_at: Option<String>,
}

impl From<HostGroup> for HostGroupJson {
    fn from(g: HostGroup) -> Self {
        HostGroupJson {
            created_at: crate::web::format::rfc3339(g.created_at),
            id: g.id,
            name: g.name,
            description: g.description,
            hosts: g.hosts,
        }
    }
}

/// The body of `POST /api/v1/host-groups` and `PATCH /api/v1/host-groups/{id}`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct HostGroupBody {
    name: String,
    #[serde(default)]
    description: String,
}

/// The host groups the caller may see.
#[utoipa::path(get, path = "/api/v1/host-groups", tag = "hosts",
    responses((status = 200, description = "host groups", body = [HostGroupJson])),
    security(("bearer" = []), ("session" = [])))]
async fn list_groups(
    caller: Caller,
    State(state): State<AppState>,
) -> Result<Json<Vec<HostGroupJson>>, WebError> {
    Ok(Json(
        visible_groups(&state, &caller)
            .await?
            .into_iter()
            .map(HostGroupJson::from)
            .collect(),
    ))
}

/// Create a host group.
#[utoipa::path(post, path = "/api/v1/host-groups", tag = "hosts", request_body = HostGroupBody,
    responses((status = 201, description = "created", body = HostGroupJson), (status = 409, description = "the name is taken")),
    security(("bearer" = []), ("session" = [])))]
async fn create_group(
    caller: Caller,
    State(state): State<AppState>,
    Json(body): Json<HostGroupBody>,
) -> Result<(StatusCode, Json<HostGroupJson>), WebError> {
    let id = create(&state, &caller, body.name, body.description).await?;
    let group = state
        .db
        .read("load host group", move |tx| groups::get(tx, &id))
        .await?
        .ok_or(UNKNOWN)?;
    Ok((StatusCode::CREATED, Json(group.into())))
}

/// Rename a host group or change its description.
#[utoipa::path(patch, path = "/api/v1/host-groups/{id}", tag = "hosts", request_body = HostGroupBody,
    params(("id" = String, Path, description = "the group's id")),
    responses((status = 200, description = "the group as it is now", body = HostGroupJson),
              (status = 404, description = "no such host group"), (status = 409, description = "the name is taken")),
    security(("bearer" = []), ("session" = [])))]
async fn update_group(
    caller: Caller,
    State(state): State<AppState>,
    Path(id): Path<String>,
    Json(body): Json<HostGroupBody>,
) -> Result<Json<HostGroupJson>, WebError> {
    update(&state, &caller, id.clone(), body.name, body.description).await?;
    let group = state
        .db
        .read("load host group", move |tx| groups::get(tx, &id))
        .await?
        .ok_or(UNKNOWN)?;
    Ok(Json(group.into()))
}

/// Delete a host group: its hosts become ungrouped.
#[utoipa::path(delete, path = "/api/v1/host-groups/{id}", tag = "hosts",
    params(("id" = String, Path, description = "the group's id")),
    responses((status = 204, description = "deleted"), (status = 404, description = "no such host group")),
    security(("bearer" = []), ("session" = [])))]
async fn delete_group(
    caller: Caller,
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<StatusCode, WebError> {
    delete(&state, &caller, id).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// The handlers' OpenAPI paths, for [`crate::web::openapi`].
pub(crate) fn openapi_paths() -> utoipa::openapi::OpenApi {
    #[derive(utoipa::OpenApi)]
    #[openapi(paths(list_groups, create_group, update_group, delete_group))]
    struct Paths;
    <Paths as utoipa::OpenApi>::openapi()
}
