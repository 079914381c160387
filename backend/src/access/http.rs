//! Roles in the UI (`/roles`) and the API (`/api/v1/roles`,
//! `/api/v1/permissions`), and `palisade-backend role list|permissions`.
//!
//! Nobody hands out more than they hold: a custom role's permissions must
//! all be held by whoever creates or changes it (for all hosts), and a role
//! is assigned only by someone holding all of its permissions at that scope
//! (see `identity::users_http`).

use std::collections::BTreeSet;

use askama::Template;
use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::catalogue::{Area, Permission};
use super::roles::{self, Role};
use super::{Caller, Grants};
use crate::audit::{Action, Outcome};
use crate::db::{Db, DbError};
use crate::state::AppState;
use crate::web::form::FormFields;
use crate::web::layout::Layout;
use crate::web::{Access, Routes, WebError, html};

pub fn routes() -> Routes {
    use Permission::*;
    Routes::new()
        .get("/roles", Access::Permission(RolesRead), roles_page)
        .post("/roles", Access::Permission(RolesCreate), create_form)
        .get("/roles/{id}", Access::Permission(RolesRead), role_page)
        .post("/roles/{id}", Access::Permission(RolesUpdate), update_form)
        .post(
            "/roles/{id}/delete",
            Access::Permission(RolesDelete),
            delete_form,
        )
        .get("/api/v1/permissions", Access::SignedIn, list_permissions)
        .get("/api/v1/roles", Access::Permission(RolesRead), list_roles)
        .post(
            "/api/v1/roles",
            Access::Permission(RolesCreate),
            create_role,
        )
        .get(
            "/api/v1/roles/{id}",
            Access::Permission(RolesRead),
            get_role,
        )
        .patch(
            "/api/v1/roles/{id}",
            Access::Permission(RolesUpdate),
            update_role,
        )
        .delete(
            "/api/v1/roles/{id}",
            Access::Permission(RolesDelete),
            delete_role,
        )
}

/// A role's permissions as grants for everything (what holding it for all
/// hosts gives).
pub fn role_grants(permissions: &BTreeSet<Permission>, group: Option<&str>) -> Grants {
    let mut g = Grants::none();
    g.add(permissions.iter().copied(), group);
    g
}

fn parse_permissions<'a>(
    names: impl IntoIterator<Item = &'a str>,
) -> Result<BTreeSet<Permission>, WebError> {
    names
        .into_iter()
        .map(|n| {
            n.parse::<Permission>()
                .map_err(|e| WebError::BadRequest(e.to_string()))
        })
        .collect()
}

fn check_name(name: &str) -> Result<(), WebError> {
    if (1..=64).contains(&name.chars().count())
        && name.trim() == name
        && !name.chars().any(char::is_control)
    {
        Ok(())
    } else {
        Err(WebError::BadRequest(
            "a role name is 1 to 64 printable characters".into(),
        ))
    }
}

/// Refuses a role with permissions the caller does not hold everywhere.
fn check_grantable(caller: &Caller, permissions: &BTreeSet<Permission>) -> Result<(), WebError> {
    if caller.grants.covers(&role_grants(permissions, None)) {
        Ok(())
    } else {
        Err(WebError::Forbidden(
            "a role may hold only permissions you hold for all hosts",
        ))
    }
}

fn conflict(e: DbError) -> WebError {
    match e {
        DbError::Conflict { .. } => WebError::Conflict("a role with that name exists"),
        e => e.into(),
    }
}

async fn create(
    state: &AppState,
    caller: &Caller,
    name: String,
    description: String,
    permissions: BTreeSet<Permission>,
) -> Result<Role, WebError> {
    check_name(&name)?;
    check_grantable(caller, &permissions)?;
    let now = crate::now_millis();
    let role = Role {
        id: uuid::Uuid::new_v4().simple().to_string(),
        name,
        description: description.chars().take(500).collect(),
        builtin: false,
        permissions,
        created_at: now,
    };
    let event = caller
        .event(now, Action::RoleCreate, Outcome::Success)
        .target(role.id.clone())
        .details(serde_json::json!({
            "name": role.name,
            "permissions": role.permissions.iter().map(|p| p.name()).collect::<Vec<_>>(),
        }));
    let stored = role.clone();
    state
        .db
        .write("create role", move |tx| {
            roles::create(tx, &stored)?;
            crate::audit::store::append(tx, &event)?;
            Ok(())
        })
        .await
        .map_err(conflict)?;
    Ok(role)
}

async fn update(
    state: &AppState,
    caller: &Caller,
    id: String,
    name: String,
    description: String,
    permissions: BTreeSet<Permission>,
) -> Result<Role, WebError> {
    check_name(&name)?;
    check_grantable(caller, &permissions)?;
    let lookup = id.clone();
    let current = state
        .db
        .read("load role", move |tx| roles::get(tx, &lookup))
        .await?
        .ok_or(WebError::NotFound("no such role"))?;
    if current.builtin {
        return Err(WebError::Conflict("a built-in role cannot change"));
    }
    // Taking permissions away also hands out nothing; but the caller must
    // hold what the role holds now too, or they could strip a role they
    // could never have made.
    check_grantable(caller, &current.permissions)?;
    let event = caller
        .event(crate::now_millis(), Action::RoleUpdate, Outcome::Success)
        .target(id.clone())
        .details(serde_json::json!({
            "name": name,
            "added": permissions.difference(&current.permissions).map(|p| p.name()).collect::<Vec<_>>(),
            "removed": current.permissions.difference(&permissions).map(|p| p.name()).collect::<Vec<_>>(),
        }));
    let description: String = description.chars().take(500).collect();
    let (n, d, p) = (name.clone(), description.clone(), permissions.clone());
    state
        .db
        .write("update role", move |tx| {
            roles::update(tx, &id, &n, &d, &p)?;
            crate::audit::store::append(tx, &event)?;
            Ok(())
        })
        .await
        .map_err(conflict)?;
    Ok(Role {
        name,
        description,
        permissions,
        ..current
    })
}

async fn delete(state: &AppState, caller: &Caller, id: String) -> Result<(), WebError> {
    let lookup = id.clone();
    let current = state
        .db
        .read("load role", move |tx| roles::get(tx, &lookup))
        .await?
        .ok_or(WebError::NotFound("no such role"))?;
    if current.builtin {
        return Err(WebError::Conflict("a built-in role cannot be deleted"));
    }
    check_grantable(caller, &current.permissions)?;
    let event = caller
        .event(crate::now_millis(), Action::RoleDelete, Outcome::Success)
        .target(id.clone())
        .details(serde_json::json!({ "name": current.name }));
    state
        .db
        .write("delete role", move |tx| {
            roles::delete(tx, &id)?;
            crate::audit::store::append(tx, &event)?;
            Ok(())
        })
        .await?;
    Ok(())
}

// ---------------------------------------------------------------------------
// Pages

struct RoleRow {
    id: String,
    name: String,
    description: String,
    builtin: bool,
    permissions: usize,
}

/// The catalogue by area, with what is checked.
struct AreaView {
    title: &'static str,
    permissions: Vec<PermissionView>,
}

struct PermissionView {
    name: &'static str,
    description: &'static str,
    dangerous: bool,
    scopable: bool,
    checked: bool,
    /// Whether the caller could grant it.
    grantable: bool,
}

fn catalogue_view(caller: &Caller, checked: &BTreeSet<Permission>) -> Vec<AreaView> {
    let mut areas: Vec<AreaView> = Vec::new();
    for p in Permission::ALL {
        let view = PermissionView {
            name: p.name(),
            description: p.description(),
            dangerous: p.is_dangerous(),
            scopable: p.is_scopable(),
            checked: checked.contains(p),
            grantable: caller.grants.allows_globally(*p),
        };
        match areas.last_mut() {
            Some(area) if area.title == p.area().title() => area.permissions.push(view),
            _ => areas.push(AreaView {
                title: p.area().title(),
                permissions: vec![view],
            }),
        }
    }
    let _ = Area::Hosts;
    areas
}

#[derive(Template)]
#[template(path = "access/templates/roles.html")]
struct RolesPage {
    layout: Layout,
    roles: Vec<RoleRow>,
    can_create: bool,
    catalogue: Vec<AreaView>,
}

async fn roles_page(caller: Caller, State(state): State<AppState>) -> Result<Response, WebError> {
    let all = state.db.read("list roles", roles::list).await?;
    let page = RolesPage {
        layout: Layout::for_caller(&caller),
        roles: all
            .into_iter()
            .map(|r| RoleRow {
                permissions: r.permissions.len(),
                id: r.id,
                name: r.name,
                description: r.description,
                builtin: r.builtin,
            })
            .collect(),
        can_create: caller.may(Permission::RolesCreate, None),
        catalogue: catalogue_view(&caller, &BTreeSet::new()),
    };
    Ok(html(StatusCode::OK, page.render()?))
}

#[derive(Template)]
#[template(path = "access/templates/role.html")]
struct RolePage {
    layout: Layout,
    id: String,
    name: String,
    description: String,
    builtin: bool,
    can_update: bool,
    can_delete: bool,
    catalogue: Vec<AreaView>,
    held: usize,
}

async fn role_page(
    caller: Caller,
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Response, WebError> {
    let role = state
        .db
        .read("load role", move |tx| roles::get(tx, &id))
        .await?
        .ok_or(WebError::NotFound("no such role"))?;
    let page = RolePage {
        layout: Layout::for_caller(&caller),
        can_update: !role.builtin && caller.may(Permission::RolesUpdate, None),
        can_delete: !role.builtin && caller.may(Permission::RolesDelete, None),
        catalogue: catalogue_view(&caller, &role.permissions),
        held: role.permissions.len(),
        id: role.id,
        name: role.name,
        description: role.description,
        builtin: role.builtin,
    };
    Ok(html(StatusCode::OK, page.render()?))
}

async fn create_form(
    caller: Caller,
    State(state): State<AppState>,
    form: FormFields,
) -> Result<Response, WebError> {
    let permissions = parse_permissions(form.all("permissions"))?;
    let role = create(
        &state,
        &caller,
        form.get("name").to_owned(),
        form.get("description").to_owned(),
        permissions,
    )
    .await?;
    Ok(Redirect::to(&format!("/roles/{}", role.id)).into_response())
}

async fn update_form(
    caller: Caller,
    State(state): State<AppState>,
    Path(id): Path<String>,
    form: FormFields,
) -> Result<Response, WebError> {
    let permissions = parse_permissions(form.all("permissions"))?;
    update(
        &state,
        &caller,
        id.clone(),
        form.get("name").to_owned(),
        form.get("description").to_owned(),
        permissions,
    )
    .await?;
    Ok(Redirect::to(&format!("/roles/{id}")).into_response())
}

async fn delete_form(
    caller: Caller,
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Response, WebError> {
    delete(&state, &caller, id).await?;
    Ok(Redirect::to("/roles").into_response())
}

// ---------------------------------------------------------------------------
// API

/// One permission of the catalogue.
#[derive(Debug, Serialize, ToSchema)]
pub struct PermissionJson {
    /// `resource:verb`.
    name: &'static str,
    description: &'static str,
    area: Area,
    /// Whether it can be granted for host groups (else only for everything).
    scopable: bool,
    /// Whether using it asks for re-authentication.
    dangerous: bool,
    /// Whether it only reads.
    read_only: bool,
}

/// Every permission of the catalogue.
#[utoipa::path(get, path = "/api/v1/permissions", tag = "access",
    responses((status = 200, description = "the permission catalogue", body = [PermissionJson])),
    security(("bearer" = []), ("session" = [])))]
async fn list_permissions() -> Json<Vec<PermissionJson>> {
    Json(
        Permission::ALL
            .iter()
            .map(|p| PermissionJson {
                name: p.name(),
                description: p.description(),
                area: p.area(),
                scopable: p.is_scopable(),
                dangerous: p.is_dangerous(),
                read_only: p.is_read(),
            })
            .collect(),
    )
}

/// A role as the API shows it.
#[derive(Debug, Serialize, ToSchema)]
pub struct RoleJson {
    id: String,
    name: String,
    description: String,
    builtin: bool,
    permissions: Vec<&'static str>,
}

impl From<Role> for RoleJson {
    fn from(r: Role) -> Self {
        RoleJson {
            permissions: r.permissions.iter().map(|p| p.name()).collect(),
            id: r.id,
            name: r.name,
            description: r.description,
            builtin: r.builtin,
        }
    }
}

/// The body of `POST /api/v1/roles` and `PATCH /api/v1/roles/{id}`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RoleBody {
    name: String,
    #[serde(default)]
    description: String,
    /// Permission names.
    permissions: Vec<String>,
}

/// Every role.
#[utoipa::path(get, path = "/api/v1/roles", tag = "access",
    responses((status = 200, description = "built-in and custom roles", body = [RoleJson])),
    security(("bearer" = []), ("session" = [])))]
async fn list_roles(State(state): State<AppState>) -> Result<Json<Vec<RoleJson>>, WebError> {
    let all = state.db.read("list roles", roles::list).await?;
    Ok(Json(all.into_iter().map(RoleJson::from).collect()))
}

/// Create a custom role (only with permissions the caller holds for all hosts).
#[utoipa::path(post, path = "/api/v1/roles", tag = "access", request_body = RoleBody,
    responses((status = 201, description = "created", body = RoleJson),
              (status = 403, description = "a permission the caller does not hold"),
              (status = 409, description = "a role with that name exists")),
    security(("bearer" = []), ("session" = [])))]
async fn create_role(
    caller: Caller,
    State(state): State<AppState>,
    Json(body): Json<RoleBody>,
) -> Result<(StatusCode, Json<RoleJson>), WebError> {
    let permissions = parse_permissions(body.permissions.iter().map(String::as_str))?;
    let role = create(&state, &caller, body.name, body.description, permissions).await?;
    Ok((StatusCode::CREATED, Json(role.into())))
}

/// One role.
#[utoipa::path(get, path = "/api/v1/roles/{id}", tag = "access",
    params(("id" = String, Path, description = "the role's id")),
    responses((status = 200, description = "the role", body = RoleJson), (status = 404, description = "no such role")),
    security(("bearer" = []), ("session" = [])))]
async fn get_role(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<RoleJson>, WebError> {
    let role = state
        .db
        .read("load role", move |tx| roles::get(tx, &id))
        .await?
        .ok_or(WebError::NotFound("no such role"))?;
    Ok(Json(role.into()))
}

/// Change a custom role.
#[utoipa::path(patch, path = "/api/v1/roles/{id}", tag = "access", request_body = RoleBody,
    params(("id" = String, Path, description = "the role's id")),
    responses((status = 200, description = "the role as it is now", body = RoleJson),
              (status = 403, description = "a permission the caller does not hold"),
              (status = 404, description = "no such role"),
              (status = 409, description = "a built-in role, or the name is taken")),
    security(("bearer" = []), ("session" = [])))]
async fn update_role(
    caller: Caller,
    State(state): State<AppState>,
    Path(id): Path<String>,
    Json(body): Json<RoleBody>,
) -> Result<Json<RoleJson>, WebError> {
    let permissions = parse_permissions(body.permissions.iter().map(String::as_str))?;
    let role = update(
        &state,
        &caller,
        id,
        body.name,
        body.description,
        permissions,
    )
    .await?;
    Ok(Json(role.into()))
}

/// Delete a custom role (its assignments go with it).
#[utoipa::path(delete, path = "/api/v1/roles/{id}", tag = "access",
    params(("id" = String, Path, description = "the role's id")),
    responses((status = 204, description = "deleted"), (status = 404, description = "no such role"), (status = 409, description = "a built-in role")),
    security(("bearer" = []), ("session" = [])))]
async fn delete_role(
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
    #[openapi(paths(
        list_permissions,
        list_roles,
        create_role,
        get_role,
        update_role,
        delete_role
    ))]
    struct Paths;
    <Paths as utoipa::OpenApi>::openapi()
}

// ---------------------------------------------------------------------------
// Command line

/// `role list`.
pub async fn cli_list(db: &Db) -> anyhow::Result<String> {
    let all = db.read("list roles", roles::list).await?;
    let mut out = format!(
        "{:<24} {:<8} {:>11}  DESCRIPTION\n",
        "ROLE", "KIND", "PERMISSIONS"
    );
    for r in all {
        out.push_str(&format!(
            "{:<24} {:<8} {:>11}  {}\n",
            r.name,
            if r.builtin { "built-in" } else { "custom" },
            r.permissions.len(),
            r.description
        ));
    }
    Ok(out)
}

/// `role permissions`.
pub fn cli_permissions() -> String {
    let mut out = String::new();
    for p in Permission::ALL {
        let mut flags = Vec::new();
        if p.is_scopable() {
            flags.push("host groups");
        }
        if p.is_dangerous() {
            flags.push("dangerous");
        }
        out.push_str(&format!(
            "{:<32} {:<24} {}\n",
            p.name(),
            flags.join(", "),
            p.description()
        ));
    }
    out
}
