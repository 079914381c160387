//! User accounts in the UI (`/users`) and the API (`/api/v1/users`):
//! create, disable and enable, delete, and their roles.
//!
//! Guards: nobody disables or deletes themselves; the last enabled admin
//! (for all hosts) cannot be disabled, deleted or lose that role; a role is
//! granted or withdrawn only by someone who holds all of its permissions at
//! that scope.

use askama::Template;
use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::{NewUser, User, store, valid_username};
use crate::access::http::role_grants;
use crate::access::roles::{self, Assignment, Role};
use crate::access::{Caller, Permission};
use crate::audit::{Action, Outcome};
use crate::db::{DbError, Tx};
use crate::hosts::groups::{self, HostGroup};
use crate::state::AppState;
use crate::web::form::FormFields;
use crate::web::layout::Layout;
use crate::web::{Access, Routes, WebError, html};

pub fn routes() -> Routes {
    use Permission::*;
    Routes::new()
        .get("/users", Access::Permission(UsersRead), users_page)
        .post("/users", Access::Permission(UsersCreate), create_form)
        .get("/users/{id}", Access::Permission(UsersRead), user_page)
        .post(
            "/users/{id}/disable",
            Access::Permission(UsersDisable),
            disable_form,
        )
        .post(
            "/users/{id}/enable",
            Access::Permission(UsersDisable),
            enable_form,
        )
        .post(
            "/users/{id}/delete",
            Access::Permission(UsersDelete),
            delete_form,
        )
        .post(
            "/users/{id}/roles",
            Access::Permission(RolesAssign),
            assign_form,
        )
        .post(
            "/users/{id}/roles/{assignment}/delete",
            Access::Permission(RolesAssign),
            unassign_form,
        )
        .get("/api/v1/users", Access::Permission(UsersRead), list_users)
        .post(
            "/api/v1/users",
            Access::Permission(UsersCreate),
            create_user,
        )
        .get(
            "/api/v1/users/{id}",
            Access::Permission(UsersRead),
            get_user,
        )
        .patch(
            "/api/v1/users/{id}",
            Access::Permission(UsersDisable),
            update_user,
        )
        .delete(
            "/api/v1/users/{id}",
            Access::Permission(UsersDelete),
            delete_user,
        )
        .post(
            "/api/v1/users/{id}/roles",
            Access::Permission(RolesAssign),
            assign_role,
        )
        .delete(
            "/api/v1/users/{id}/roles/{assignment}",
            Access::Permission(RolesAssign),
            unassign_role,
        )
}

const UNKNOWN: WebError = WebError::NotFound("no such user");

fn user_id(id: &str) -> Result<i64, WebError> {
    id.parse().map_err(|_| UNKNOWN)
}

async fn load(state: &AppState, id: i64) -> Result<(User, Vec<Assignment>), WebError> {
    state
        .db
        .read("load user", move |tx| {
            let Some(user) = store::user_by_id(tx, id)? else {
                return Ok(None);
            };
            Ok(Some((user, roles::assignments(tx, Some(id))?)))
        })
        .await?
        .ok_or(UNKNOWN)
}

fn is_self(caller: &Caller, user: &User) -> bool {
    caller.user.as_ref().is_some_and(|u| u.id == user.id)
}

/// Fails when the change would leave no enabled admin for all hosts.
fn keep_an_admin(tx: &mut Tx<'_>) -> crate::db::Result<bool> {
    Ok(store::enabled_global_admins(tx)? > 0)
}

const LAST_ADMIN: WebError = WebError::Conflict("this is the last enabled admin for all hosts");

async fn create(
    state: &AppState,
    caller: &Caller,
    name: String,
    role: String,
    group: Option<String>,
) -> Result<(User, String), WebError> {
    if !valid_username(&name) {
        return Err(WebError::BadRequest(
            "a user name is 1 to 64 letters, digits, '.', '_', '-' or '@'".into(),
        ));
    }
    let now = crate::now_millis();
    let password = crate::secrets::generate_password().map_err(WebError::internal)?;
    let hash = tokio::task::spawn_blocking({
        let password = password.clone();
        move || crate::secrets::hash_password(&password)
    })
    .await
    .map_err(WebError::internal)?
    .map_err(WebError::internal)?;
    let caller_for_tx = caller.clone();
    let created = state
        .db
        .write("create user", move |tx| {
            let Some(role) = roles::get(tx, &role)? else {
                return Ok(Err(WebError::BadRequest("no such role".into())));
            };
            if let Some(group) = &group
                && groups::get(tx, group)?.is_none()
            {
                return Ok(Err(WebError::BadRequest("no such host group".into())));
            }
            if !caller_for_tx
                .grants
                .covers(&role_grants(&role.permissions, group.as_deref()))
            {
                return Ok(Err(WebError::Forbidden(
                    "you may grant only roles whose permissions you hold there",
                )));
            }
            let user = store::create_user(
                tx,
                &NewUser {
                    username: name.clone(),
                    password_hash: hash,
                    created_at: now,
                },
            )?;
            // The generated password is shown to the admin: the user
            // chooses their own at the first sign-in.
            store::require_password_change(tx, user.id, true)?;
            roles::assign(tx, user.id, &role.id, group.as_deref(), now)?;
            let event = caller_for_tx
                .event(now, Action::UserCreate, Outcome::Success)
                .target(name.clone())
                .details(serde_json::json!({ "role": role.name, "host_group": group }));
            crate::audit::store::append(tx, &event)?;
            Ok(Ok(user))
        })
        .await
        .map_err(|e| match e {
            DbError::Conflict { .. } => WebError::Conflict("a user with that name exists"),
            e => e.into(),
        })??;
    Ok((created, password))
}

async fn set_disabled(
    state: &AppState,
    caller: &Caller,
    id: i64,
    disabled: bool,
) -> Result<(), WebError> {
    let (user, _) = load(state, id).await?;
    if disabled && is_self(caller, &user) {
        return Err(WebError::Conflict("you cannot disable yourself"));
    }
    let action = if disabled {
        Action::UserDisable
    } else {
        Action::UserEnable
    };
    let event = caller
        .event(crate::now_millis(), action, Outcome::Success)
        .target(user.username.clone());
    state
        .db
        .write("disable user", move |tx| {
            store::set_disabled(tx, id, disabled)?;
            if !keep_an_admin(tx)? {
                return Ok(Err(LAST_ADMIN));
            }
            crate::audit::store::append(tx, &event)?;
            Ok(Ok(()))
        })
        .await??;
    Ok(())
}

async fn delete(state: &AppState, caller: &Caller, id: i64) -> Result<(), WebError> {
    let (user, _) = load(state, id).await?;
    if is_self(caller, &user) {
        return Err(WebError::Conflict("you cannot delete yourself"));
    }
    let event = caller
        .event(crate::now_millis(), Action::UserDelete, Outcome::Success)
        .target(user.username.clone());
    state
        .db
        .write("delete user", move |tx| {
            store::delete_user(tx, id)?;
            if !keep_an_admin(tx)? {
                return Ok(Err(LAST_ADMIN));
            }
            crate::audit::store::append(tx, &event)?;
            Ok(Ok(()))
        })
        .await??;
    Ok(())
}

async fn assign(
    state: &AppState,
    caller: &Caller,
    id: i64,
    role_id: String,
    group: Option<String>,
) -> Result<(), WebError> {
    let (user, _) = load(state, id).await?;
    let caller_for_tx = caller.clone();
    let now = crate::now_millis();
    state
        .db
        .write("assign role", move |tx| {
            let Some(role) = roles::get(tx, &role_id)? else {
                return Ok(Err(WebError::BadRequest("no such role".into())));
            };
            if let Some(group) = &group
                && groups::get(tx, group)?.is_none()
            {
                return Ok(Err(WebError::BadRequest("no such host group".into())));
            }
            if !caller_for_tx
                .grants
                .covers(&role_grants(&role.permissions, group.as_deref()))
            {
                return Ok(Err(WebError::Forbidden(
                    "you may grant only roles whose permissions you hold there",
                )));
            }
            match roles::assign(tx, id, &role.id, group.as_deref(), now) {
                Err(DbError::Conflict { .. }) => {
                    return Ok(Err(WebError::Conflict(
                        "the user holds this role there already",
                    )));
                }
                other => other?,
            };
            let event = caller_for_tx
                .event(now, Action::RoleAssign, Outcome::Success)
                .target(user.username.clone())
                .details(serde_json::json!({ "role": role.name, "host_group": group }));
            crate::audit::store::append(tx, &event)?;
            Ok(Ok(()))
        })
        .await??;
    Ok(())
}

async fn unassign(
    state: &AppState,
    caller: &Caller,
    id: i64,
    assignment: String,
) -> Result<(), WebError> {
    let (user, held) = load(state, id).await?;
    let Some(a) = held.into_iter().find(|a| a.id == assignment) else {
        return Err(WebError::NotFound("no such role assignment"));
    };
    if !caller.grants.covers(&role_grants(
        &a.role.permissions,
        a.host_group.as_ref().map(|(id, _)| id.as_str()),
    )) {
        return Err(WebError::Forbidden(
            "you may withdraw only roles whose permissions you hold there",
        ));
    }
    let event = caller
        .event(crate::now_millis(), Action::RoleUnassign, Outcome::Success)
        .target(user.username.clone())
        .details(serde_json::json!({ "role": a.role.name, "host_group": a.host_group.as_ref().map(|(_, n)| n) }));
    state
        .db
        .write("withdraw role", move |tx| {
            roles::unassign(tx, &assignment)?;
            if !keep_an_admin(tx)? {
                return Ok(Err(LAST_ADMIN));
            }
            crate::audit::store::append(tx, &event)?;
            Ok(Ok(()))
        })
        .await??;
    Ok(())
}

// ---------------------------------------------------------------------------
// Pages

struct UserRow {
    id: i64,
    username: String,
    disabled: bool,
    roles: String,
}

fn describe(assignments: &[Assignment]) -> String {
    let held: Vec<String> = assignments
        .iter()
        .map(|a| match &a.host_group {
            Some((_, group)) => format!("{} ({group})", a.role.name),
            None => a.role.name.clone(),
        })
        .collect();
    if held.is_empty() {
        "none".to_owned()
    } else {
        held.join(", ")
    }
}

#[derive(Template)]
#[template(path = "identity/templates/users.html")]
struct UsersPage {
    layout: Layout,
    users: Vec<UserRow>,
    can_create: bool,
    roles: Vec<Role>,
    groups: Vec<HostGroup>,
    /// After creating a user: their name and password, shown once.
    created: Option<(String, String)>,
}

async fn users_page_with(
    state: &AppState,
    caller: &Caller,
    created: Option<(String, String)>,
) -> Result<Response, WebError> {
    let (users, assignments, all_roles, all_groups) = state
        .db
        .read("users page", |tx| {
            Ok((
                store::list_users(tx)?,
                roles::assignments(tx, None)?,
                roles::list(tx)?,
                groups::list(tx)?,
            ))
        })
        .await?;
    let page = UsersPage {
        layout: Layout::for_caller(caller),
        can_create: caller.may(Permission::UsersCreate, None),
        users: users
            .into_iter()
            .map(|u| {
                let held: Vec<Assignment> = assignments
                    .iter()
                    .filter(|a| a.user_id == u.id)
                    .cloned()
                    .collect();
                UserRow {
                    id: u.id,
                    roles: describe(&held),
                    username: u.username,
                    disabled: u.disabled,
                }
            })
            .collect(),
        roles: all_roles,
        groups: all_groups,
        created,
    };
    Ok(html(StatusCode::OK, page.render()?))
}

async fn users_page(caller: Caller, State(state): State<AppState>) -> Result<Response, WebError> {
    users_page_with(&state, &caller, None).await
}

async fn create_form(
    caller: Caller,
    State(state): State<AppState>,
    form: FormFields,
) -> Result<Response, WebError> {
    let (user, password) = create(
        &state,
        &caller,
        form.get("username").to_owned(),
        form.get("role").to_owned(),
        form.opt("host_group_id").map(str::to_owned),
    )
    .await?;
    // Shown once, on this response: never stored in the clear.
    users_page_with(&state, &caller, Some((user.username, password))).await
}

struct AssignmentView {
    id: String,
    role: String,
    scope: String,
    can_withdraw: bool,
}

#[derive(Template)]
#[template(path = "identity/templates/user.html")]
struct UserPage {
    layout: Layout,
    id: i64,
    username: String,
    disabled: bool,
    created: String,
    assignments: Vec<AssignmentView>,
    can_assign: bool,
    can_disable: bool,
    can_delete: bool,
    can_reset_password: bool,
    can_reset_factors: bool,
    /// The user's sessions, for a caller with `sessions:read`.
    sessions: Option<Vec<super::account_http::SessionRow>>,
    can_end_sessions: bool,
    notice: Option<&'static str>,
    roles: Vec<Role>,
    groups: Vec<HostGroup>,
}

#[derive(Deserialize, Default)]
struct UserPageQuery {
    done: Option<String>,
}

async fn user_page(
    caller: Caller,
    State(state): State<AppState>,
    Path(id): Path<String>,
    Query(q): Query<UserPageQuery>,
) -> Result<Response, WebError> {
    let id = user_id(&id)?;
    let (user, held) = load(&state, id).await?;
    let (all_roles, all_groups) = state
        .db
        .read("user page", |tx| Ok((roles::list(tx)?, groups::list(tx)?)))
        .await?;
    let itself = is_self(&caller, &user);
    let sessions = if caller.may(Permission::SessionsRead, None) {
        let now = crate::now_millis();
        let user_id = user.id;
        let rows = state
            .db
            .read("user's sessions", move |tx| {
                super::store::sessions(tx, Some(user_id), now)
            })
            .await?;
        Some(
            rows.into_iter()
                .map(|(s, _)| super::account_http::session_row(s, None, now))
                .collect(),
        )
    } else {
        None
    };
    let page = UserPage {
        sessions,
        can_end_sessions: caller.may(Permission::SessionsRevoke, None),
        notice: (q.done.as_deref() == Some("session")).then_some("The session has ended."),
        layout: Layout::for_caller(&caller),
        can_assign: caller.may(Permission::RolesAssign, None),
        can_disable: caller.may(Permission::UsersDisable, None) && !itself,
        can_delete: caller.may(Permission::UsersDelete, None) && !itself,
        can_reset_password: caller.may(Permission::UsersResetPassword, None) && !itself,
        can_reset_factors: caller.may(Permission::UsersResetFactors, None) && !itself,
        assignments: held
            .iter()
            .map(|a| AssignmentView {
                id: a.id.clone(),
                role: a.role.name.clone(),
                scope: a.host_group.as_ref().map_or_else(
                    || "all hosts".to_owned(),
                    |(_, n)| format!("host group {n}"),
                ),
                can_withdraw: caller.may(Permission::RolesAssign, None)
                    && caller.grants.covers(&role_grants(
                        &a.role.permissions,
                        a.host_group.as_ref().map(|(i, _)| i.as_str()),
                    )),
            })
            .collect(),
        id: user.id,
        created: crate::web::format::utc(user.created_at),
        username: user.username,
        disabled: user.disabled,
        roles: all_roles,
        groups: all_groups,
    };
    Ok(html(StatusCode::OK, page.render()?))
}

async fn disable_form(
    caller: Caller,
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Response, WebError> {
    let id = user_id(&id)?;
    set_disabled(&state, &caller, id, true).await?;
    Ok(Redirect::to(&format!("/users/{id}")).into_response())
}

async fn enable_form(
    caller: Caller,
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Response, WebError> {
    let id = user_id(&id)?;
    set_disabled(&state, &caller, id, false).await?;
    Ok(Redirect::to(&format!("/users/{id}")).into_response())
}

async fn delete_form(
    caller: Caller,
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Response, WebError> {
    delete(&state, &caller, user_id(&id)?).await?;
    Ok(Redirect::to("/users").into_response())
}

async fn assign_form(
    caller: Caller,
    State(state): State<AppState>,
    Path(id): Path<String>,
    form: FormFields,
) -> Result<Response, WebError> {
    let id = user_id(&id)?;
    assign(
        &state,
        &caller,
        id,
        form.get("role").to_owned(),
        form.opt("host_group_id").map(str::to_owned),
    )
    .await?;
    Ok(Redirect::to(&format!("/users/{id}")).into_response())
}

async fn unassign_form(
    caller: Caller,
    State(state): State<AppState>,
    Path((id, assignment)): Path<(String, String)>,
) -> Result<Response, WebError> {
    let id = user_id(&id)?;
    unassign(&state, &caller, id, assignment).await?;
    Ok(Redirect::to(&format!("/users/{id}")).into_response())
}

// ---------------------------------------------------------------------------
// API

/// A role a user holds.
#[derive(Debug, Serialize, ToSchema)]
pub struct AssignmentJson {
    id: String,
    role_id: String,
    role: String,
    /// The host group it is held for; absent: all hosts.
    host_group_id: Option<String>,
    host_group: Option<String>,
}

/// A user as the API shows it (never a password hash).
#[derive(Debug, Serialize, ToSchema)]
pub struct UserJson {
    id: i64,
    username: String,
    disabled: bool,
    created_at: Option<String>,
    roles: Vec<AssignmentJson>,
}

fn user_json(user: User, held: Vec<Assignment>) -> UserJson {
    UserJson {
        id: user.id,
        created_at: crate::web::format::rfc3339(user.created_at),
        username: user.username,
        disabled: user.disabled,
        roles: held
            .into_iter()
            .map(|a| AssignmentJson {
                id: a.id,
                role_id: a.role.id,
                role: a.role.name,
                host_group_id: a.host_group.as_ref().map(|(i, _)| i.clone()),
                host_group: a.host_group.map(|(_, n)| n),
            })
            .collect(),
    }
}

/// The body of `POST /api/v1/users`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewUserJson {
    username: String,
    /// The role's id (`admin`, `operator`, `auditor`, `viewer` or a custom role's).
    role: String,
    /// Hold the role only for this host group's hosts.
    host_group_id: Option<String>,
}

/// A created user and their first password (shown once).
#[derive(Debug, Serialize, ToSchema)]
pub struct CreatedUserJson {
    user: UserJson,
    password: String,
}

/// The body of `PATCH /api/v1/users/{id}`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UserPatch {
    /// Disable (ending their sessions) or enable the user.
    disabled: bool,
}

/// The body of `POST /api/v1/users/{id}/roles`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AssignJson {
    role: String,
    host_group_id: Option<String>,
}

/// Every user and their roles.
#[utoipa::path(get, path = "/api/v1/users", tag = "access",
    responses((status = 200, description = "users", body = [UserJson])),
    security(("bearer" = []), ("session" = [])))]
async fn list_users(State(state): State<AppState>) -> Result<Json<Vec<UserJson>>, WebError> {
    let (users, assignments) = state
        .db
        .read("list users", |tx| {
            Ok((store::list_users(tx)?, roles::assignments(tx, None)?))
        })
        .await?;
    Ok(Json(
        users
            .into_iter()
            .map(|u| {
                let held = assignments
                    .iter()
                    .filter(|a| a.user_id == u.id)
                    .cloned()
                    .collect();
                user_json(u, held)
            })
            .collect(),
    ))
}

/// Create a user holding a role; the response carries their first password.
#[utoipa::path(post, path = "/api/v1/users", tag = "access", request_body = NewUserJson,
    responses((status = 201, description = "created", body = CreatedUserJson),
              (status = 403, description = "the role has permissions the caller does not hold there"),
              (status = 409, description = "the name is taken")),
    security(("bearer" = []), ("session" = [])))]
async fn create_user(
    caller: Caller,
    State(state): State<AppState>,
    Json(body): Json<NewUserJson>,
) -> Result<(StatusCode, Json<CreatedUserJson>), WebError> {
    let (user, password) = create(
        &state,
        &caller,
        body.username,
        body.role,
        body.host_group_id,
    )
    .await?;
    let (user, held) = load(&state, user.id).await?;
    Ok((
        StatusCode::CREATED,
        Json(CreatedUserJson {
            user: user_json(user, held),
            password,
        }),
    ))
}

/// One user.
#[utoipa::path(get, path = "/api/v1/users/{id}", tag = "access",
    params(("id" = i64, Path, description = "the user's id")),
    responses((status = 200, description = "the user", body = UserJson), (status = 404, description = "no such user")),
    security(("bearer" = []), ("session" = [])))]
async fn get_user(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<UserJson>, WebError> {
    let (user, held) = load(&state, user_id(&id)?).await?;
    Ok(Json(user_json(user, held)))
}

/// Disable or enable a user.
#[utoipa::path(patch, path = "/api/v1/users/{id}", tag = "access", request_body = UserPatch,
    params(("id" = i64, Path, description = "the user's id")),
    responses((status = 200, description = "the user as it is now", body = UserJson),
              (status = 404, description = "no such user"), (status = 409, description = "oneself, or the last admin")),
    security(("bearer" = []), ("session" = [])))]
async fn update_user(
    caller: Caller,
    State(state): State<AppState>,
    Path(id): Path<String>,
    Json(body): Json<UserPatch>,
) -> Result<Json<UserJson>, WebError> {
    let id = user_id(&id)?;
    set_disabled(&state, &caller, id, body.disabled).await?;
    let (user, held) = load(&state, id).await?;
    Ok(Json(user_json(user, held)))
}

/// Delete a user.
#[utoipa::path(delete, path = "/api/v1/users/{id}", tag = "access",
    params(("id" = i64, Path, description = "the user's id")),
    responses((status = 204, description = "deleted"), (status = 404, description = "no such user"),
              (status = 409, description = "oneself, or the last admin")),
    security(("bearer" = []), ("session" = [])))]
async fn delete_user(
    caller: Caller,
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<StatusCode, WebError> {
    delete(&state, &caller, user_id(&id)?).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Grant a role, for all hosts or one host group.
#[utoipa::path(post, path = "/api/v1/users/{id}/roles", tag = "access", request_body = AssignJson,
    params(("id" = i64, Path, description = "the user's id")),
    responses((status = 200, description = "the user as it is now", body = UserJson),
              (status = 403, description = "the role has permissions the caller does not hold there"),
              (status = 409, description = "already held there")),
    security(("bearer" = []), ("session" = [])))]
async fn assign_role(
    caller: Caller,
    State(state): State<AppState>,
    Path(id): Path<String>,
    Json(body): Json<AssignJson>,
) -> Result<Json<UserJson>, WebError> {
    let id = user_id(&id)?;
    assign(&state, &caller, id, body.role, body.host_group_id).await?;
    let (user, held) = load(&state, id).await?;
    Ok(Json(user_json(user, held)))
}

/// Withdraw a role assignment.
#[utoipa::path(delete, path = "/api/v1/users/{id}/roles/{assignment}", tag = "access",
    params(("id" = i64, Path, description = "the user's id"), ("assignment" = String, Path, description = "the assignment's id")),
    responses((status = 204, description = "withdrawn"), (status = 404, description = "no such assignment"),
              (status = 409, description = "the last admin")),
    security(("bearer" = []), ("session" = [])))]
async fn unassign_role(
    caller: Caller,
    State(state): State<AppState>,
    Path((id, assignment)): Path<(String, String)>,
) -> Result<StatusCode, WebError> {
    unassign(&state, &caller, user_id(&id)?, assignment).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// The handlers' OpenAPI paths, for [`crate::web::openapi`].
pub(crate) fn openapi_paths() -> utoipa::openapi::OpenApi {
    #[derive(utoipa::OpenApi)]
    #[openapi(paths(
        list_users,
        create_user,
        get_user,
        update_user,
        delete_user,
        assign_role,
        unassign_role
    ))]
    struct Paths;
    <Paths as utoipa::OpenApi>::openapi()
}
