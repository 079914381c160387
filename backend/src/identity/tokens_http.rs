//! API tokens in the UI (`/api-tokens`) and the API (`/api/v1/api-tokens`):
//! a user makes tokens for automation, each carrying some of the user's own
//! permissions (never more, checked when it is made and capped again at
//! every use), optionally for one host group and until an expiry; lists
//! them with when they were last used; revokes them.

use std::collections::BTreeSet;

use askama::Template;
use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::{ApiToken, store};
use crate::access::http::role_grants;
use crate::access::{Caller, Permission};
use crate::audit::{Action, Outcome};
use crate::db::Millis;
use crate::hosts::groups::{self, HostGroup};
use crate::state::AppState;
use crate::web::form::FormFields;
use crate::web::layout::Layout;
use crate::web::{Access, Routes, WebError, format, html};

pub fn routes() -> Routes {
    Routes::new()
        .get("/api-tokens", Access::SignedIn, tokens_page)
        .post(
            "/api-tokens",
            Access::Permission(Permission::ApiTokensCreate),
            create_form,
        )
        .post("/api-tokens/{id}/revoke", Access::SignedIn, revoke_form)
        .get("/api/v1/api-tokens", Access::SignedIn, list_tokens)
        .post(
            "/api/v1/api-tokens",
            Access::Permission(Permission::ApiTokensCreate),
            create_token,
        )
        .delete("/api/v1/api-tokens/{id}", Access::SignedIn, revoke_token)
}

const DAY_MS: Millis = 86_400_000;
/// The longest a token may live (a year).
const MAX_DAYS: u32 = 366;

async fn create(
    state: &AppState,
    caller: &Caller,
    name: String,
    permissions: BTreeSet<Permission>,
    group: Option<String>,
    expires_in_days: Option<u32>,
) -> Result<(ApiToken, String), WebError> {
    if !(1..=64).contains(&name.chars().count()) || name.chars().any(char::is_control) {
        return Err(WebError::BadRequest(
            "a token name is 1 to 64 printable characters".into(),
        ));
    }
    if permissions.is_empty() {
        return Err(WebError::BadRequest(
            "a token needs at least one permission".into(),
        ));
    }
    if expires_in_days.is_some_and(|d| d == 0 || d > MAX_DAYS) {
        return Err(WebError::BadRequest(format!(
            "a token expires after 1 to {MAX_DAYS} days"
        )));
    }
    if !may_carry_dangerous(state, caller, &permissions) {
        return Err(WebError::Forbidden(crate::access::caller::REAUTH_NEEDED));
    }
    if !caller
        .grants
        .covers(&role_grants(&permissions, group.as_deref()))
    {
        return Err(WebError::Forbidden(
            "a token may carry only permissions you hold there",
        ));
    }
    let parts = crate::secrets::TokenParts::generate().map_err(WebError::internal)?;
    let now = crate::now_millis();
    let token = ApiToken {
        id: parts.id.clone(),
        name,
        secret_hash: crate::secrets::hash_secret(&parts.secret),
        created_at: now,
        revoked_at: None,
        user_id: caller.user.as_ref().map(|u| u.id),
        role_id: None,
        permissions: permissions.iter().map(|p| p.name().to_owned()).collect(),
        host_group_id: group,
        expires_at: expires_in_days.map(|d| now.saturating_add(Millis::from(d) * DAY_MS)),
        last_used_at: None,
        last_used_ip: None,
    };
    let event = caller
        .event(now, Action::ApiTokenCreate, Outcome::Success)
        .target(token.id.clone())
        .details(serde_json::json!({
            "name": token.name,
            "permissions": token.permissions,
            "host_group_id": token.host_group_id,
            "expires_at": token.expires_at,
        }));
    let stored = token.clone();
    state
        .db
        .write("create api token", move |tx| {
            if let Some(group) = &stored.host_group_id
                && groups::get(tx, group)?.is_none()
            {
                return Ok(Err(WebError::BadRequest("no such host group".into())));
            }
            store::create_api_token(tx, &stored)?;
            crate::audit::store::append(tx, &event)?;
            Ok(Ok(()))
        })
        .await??;
    Ok((token, parts.to_string()))
}

/// Revokes token `id` if it is the caller's own or they may revoke anyone's.
async fn revoke(state: &AppState, caller: &Caller, id: String) -> Result<(), WebError> {
    const UNKNOWN: WebError = WebError::NotFound("no such API token");
    let lookup = id.clone();
    let token = state
        .db
        .read("load api token", move |tx| store::api_token(tx, &lookup))
        .await?
        .ok_or(UNKNOWN)?;
    let own = token.user_id.is_some() && token.user_id == caller.user.as_ref().map(|u| u.id);
    if !own && !caller.may(Permission::ApiTokensRevoke, None) {
        // Someone else's token does not exist for this caller.
        return Err(UNKNOWN);
    }
    let now = crate::now_millis();
    let event = caller
        .event(now, Action::ApiTokenRevoke, Outcome::Success)
        .target(id.clone())
        .details(serde_json::json!({ "name": token.name }));
    state
        .db
        .write("revoke api token", move |tx| {
            store::revoke_api_token(tx, &id, now)?;
            crate::audit::store::append(tx, &event)?;
            Ok(())
        })
        .await?;
    Ok(())
}

/// The caller's own tokens, or every token when they may read all.
async fn visible(state: &AppState, caller: &Caller, all: bool) -> Result<Vec<ApiToken>, WebError> {
    let owner = if all && caller.may(Permission::ApiTokensRead, None) {
        None
    } else {
        match &caller.user {
            Some(user) => Some(user.id),
            // A token made on the command line owns no tokens.
            None => return Ok(Vec::new()),
        }
    };
    Ok(state
        .db
        .read("list api tokens", move |tx| store::api_tokens(tx, owner))
        .await?)
}

fn state_of(t: &ApiToken, now: Millis) -> &'static str {
    if t.revoked_at.is_some() {
        "revoked"
    } else if t.expires_at.is_some_and(|e| e <= now) {
        "expired"
    } else {
        "active"
    }
}

// ---------------------------------------------------------------------------
// Pages

struct TokenRow {
    id: String,
    name: String,
    state: &'static str,
    permissions: String,
    expires: String,
    last_used: String,
    can_revoke: bool,
}

struct Choice {
    name: &'static str,
    description: &'static str,
    dangerous: bool,
}

#[derive(Template)]
#[template(path = "identity/templates/api_tokens.html")]
struct TokensPage {
    layout: Layout,
    tokens: Vec<TokenRow>,
    all: bool,
    can_read_all: bool,
    can_create: bool,
    choices: Vec<Choice>,
    groups: Vec<HostGroup>,
    /// After creating a token: its name and the token, shown once.
    created: Option<(String, String)>,
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
pub struct ListQuery {
    /// Every user's tokens (needs `api_tokens:read`), not only one's own.
    #[serde(default)]
    all: bool,
}

async fn page(
    state: &AppState,
    caller: &Caller,
    all: bool,
    created: Option<(String, String)>,
) -> Result<Response, WebError> {
    let now = crate::now_millis();
    let tokens = visible(state, caller, all).await?;
    let all_groups = state.db.read("list host groups", groups::list).await?;
    let own_id = caller.user.as_ref().map(|u| u.id);
    let page = TokensPage {
        layout: Layout::for_caller(caller),
        tokens: tokens
            .into_iter()
            .map(|t| TokenRow {
                state: state_of(&t, now),
                can_revoke: t.revoked_at.is_none()
                    && ((t.user_id.is_some() && t.user_id == own_id)
                        || caller.may(Permission::ApiTokensRevoke, None)),
                permissions: match &t.role_id {
                    Some(role) => format!("role {role}"),
                    None => t.permissions.join(", "),
                },
                expires: t.expires_at.map_or_else(|| "never".to_owned(), format::utc),
                last_used: match (t.last_used_at, &t.last_used_ip) {
                    (Some(at), Some(ip)) => format!("{} from {ip}", format::utc(at)),
                    (Some(at), None) => format::utc(at),
                    _ => "never".to_owned(),
                },
                id: t.id,
                name: t.name,
            })
            .collect(),
        all,
        can_read_all: caller.may(Permission::ApiTokensRead, None),
        can_create: caller.may(Permission::ApiTokensCreate, None),
        choices: caller
            .grants
            .permissions()
            .into_iter()
            .map(|p| Choice {
                name: p.name(),
                description: p.description(),
                dangerous: p.is_dangerous(),
            })
            .collect(),
        groups: all_groups
            .into_iter()
            .filter(|g| {
                caller.may(Permission::HostGroupsRead, Some(&g.id))
                    || caller.may(Permission::HostsRead, Some(&g.id))
            })
            .collect(),
        created,
    };
    Ok(html(StatusCode::OK, page.render()?))
}

async fn tokens_page(
    caller: Caller,
    State(state): State<AppState>,
    Query(query): Query<ListQuery>,
) -> Result<Response, WebError> {
    page(&state, &caller, query.all, None).await
}

/// A token carries dangerous permissions only if its creator re-authenticated
/// recently (a browser session), or is itself a token (which could carry
/// them only if its own creator did).
fn may_carry_dangerous(
    state: &AppState,
    caller: &Caller,
    permissions: &BTreeSet<Permission>,
) -> bool {
    match caller.via {
        crate::access::Via::Session {
            authenticated_at, ..
        } => {
            !permissions.iter().any(|p| p.is_dangerous())
                || super::factors::recently_authenticated(
                    state,
                    authenticated_at,
                    crate::now_millis(),
                )
        }
        crate::access::Via::Token { .. } => true,
    }
}

async fn create_form(
    caller: Caller,
    State(state): State<AppState>,
    form: FormFields,
) -> Result<Response, WebError> {
    let permissions = form
        .all("permissions")
        .into_iter()
        .map(|n| {
            n.parse::<Permission>()
                .map_err(|e| WebError::BadRequest(e.to_string()))
        })
        .collect::<Result<BTreeSet<_>, _>>()?;
    if !may_carry_dangerous(&state, &caller, &permissions) {
        return Ok(super::reauth::reauth_redirect("/tokens"));
    }
    let days = match form.opt("expires_in_days") {
        None => None,
        Some(d) => Some(
            d.parse::<u32>()
                .map_err(|_| WebError::BadRequest("the expiry is a number of days".into()))?,
        ),
    };
    let (token, secret) = create(
        &state,
        &caller,
        form.get("name").to_owned(),
        permissions,
        form.opt("host_group_id").map(str::to_owned),
        days,
    )
    .await?;
    page(&state, &caller, false, Some((token.name, secret))).await
}

async fn revoke_form(
    caller: Caller,
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Response, WebError> {
    revoke(&state, &caller, id).await?;
    Ok(Redirect::to("/api-tokens").into_response())
}

// ---------------------------------------------------------------------------
// API

/// An API token as the API shows it (never its secret).
#[derive(Debug, Serialize, ToSchema)]
pub struct ApiTokenJson {
    id: String,
    name: String,
    /// active, expired or revoked.
    state: &'static str,
    /// The user who made it; absent for one made on the backend's command line.
    user_id: Option<i64>,
    role: Option<String>,
    permissions: Vec<String>,
    host_group_id: Option<String>,
    created_at: Option<String>,
    expires_at: Option<String>,
    revoked_at: Option<String>,
    last_used_at: Option<String>,
    last_used_ip: Option<String>,
}

fn token_json(t: ApiToken, now: Millis) -> ApiTokenJson {
    ApiTokenJson {
        state: state_of(&t, now),
        created_at: format::rfc3339(t.created_at),
        expires_at: t.expires_at.and_then(format::rfc3339),
        revoked_at: t.revoked_at.and_then(format::rfc3339),
        last_used_at: t.last_used_at.and_then(format::rfc3339),
        id: t.id,
        name: t.name,
        user_id: t.user_id,
        role: t.role_id,
        permissions: t.permissions,
        host_group_id: t.host_group_id,
        last_used_ip: t.last_used_ip,
    }
}

/// The body of `POST /api/v1/api-tokens`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewTokenJson {
    name: String,
    /// Permission names; each must be held by the caller (for the group, if one is given).
    permissions: Vec<String>,
    /// Only this host group's hosts.
    host_group_id: Option<String>,
    /// 1 to 366; absent: never.
    expires_in_days: Option<u32>,
}

/// A created token, with its secret (shown once).
#[derive(Debug, Serialize, ToSchema)]
pub struct CreatedTokenJson {
    token: String,
    api_token: ApiTokenJson,
}

/// The caller's API tokens (`all=true`: everyone's, with `api_tokens:read`).
#[utoipa::path(get, path = "/api/v1/api-tokens", tag = "access", params(ListQuery),
    responses((status = 200, description = "API tokens", body = [ApiTokenJson])),
    security(("bearer" = []), ("session" = [])))]
async fn list_tokens(
    caller: Caller,
    State(state): State<AppState>,
    Query(query): Query<ListQuery>,
) -> Result<Json<Vec<ApiTokenJson>>, WebError> {
    let now = crate::now_millis();
    Ok(Json(
        visible(&state, &caller, query.all)
            .await?
            .into_iter()
            .map(|t| token_json(t, now))
            .collect(),
    ))
}

/// Create an API token carrying some of the caller's permissions.
#[utoipa::path(post, path = "/api/v1/api-tokens", tag = "access", request_body = NewTokenJson,
    responses((status = 201, description = "created; `token` is shown only now", body = CreatedTokenJson),
              (status = 403, description = "a permission the caller does not hold there")),
    security(("bearer" = []), ("session" = [])))]
async fn create_token(
    caller: Caller,
    State(state): State<AppState>,
    Json(body): Json<NewTokenJson>,
) -> Result<(StatusCode, Json<CreatedTokenJson>), WebError> {
    let permissions = body
        .permissions
        .iter()
        .map(|n| {
            n.parse::<Permission>()
                .map_err(|e| WebError::BadRequest(e.to_string()))
        })
        .collect::<Result<BTreeSet<_>, _>>()?;
    let (token, secret) = create(
        &state,
        &caller,
        body.name,
        permissions,
        body.host_group_id,
        body.expires_in_days,
    )
    .await?;
    Ok((
        StatusCode::CREATED,
        Json(CreatedTokenJson {
            token: secret,
            api_token: token_json(token, crate::now_millis()),
        }),
    ))
}

/// Revoke an API token: one's own, or anyone's with `api_tokens:revoke`.
#[utoipa::path(delete, path = "/api/v1/api-tokens/{id}", tag = "access",
    params(("id" = String, Path, description = "the token's id")),
    responses((status = 204, description = "revoked"), (status = 404, description = "no such token")),
    security(("bearer" = []), ("session" = [])))]
async fn revoke_token(
    caller: Caller,
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<StatusCode, WebError> {
    revoke(&state, &caller, id).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// The handlers' OpenAPI paths, for [`crate::web::openapi`].
pub(crate) fn openapi_paths() -> utoipa::openapi::OpenApi {
    #[derive(utoipa::OpenApi)]
    #[openapi(paths(list_tokens, create_token, revoke_token))]
    struct Paths;
    <Paths as utoipa::OpenApi>::openapi()
}
