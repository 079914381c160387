//! Enrollment tokens in the UI (`/enrollment-tokens`) and the API
//! (`/api/v1/enrollment-tokens`): list (never a secret), create (the whole
//! token shown once), revoke.

use askama::Template;
use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::{EnrollmentToken, store};
use crate::access::{Caller, Permission};
use crate::audit::{Action, Outcome};
use crate::db::Millis;
use crate::hosts::groups::{self, HostGroup};
use crate::state::AppState;
use crate::web::form::FormFields;
use crate::web::layout::Layout;
use crate::web::{Access, Routes, WebError, format, html};

pub fn routes() -> Routes {
    use Permission::*;
    Routes::new()
        .get(
            "/enrollment-tokens",
            Access::Permission(EnrollmentTokensRead),
            tokens_page,
        )
        .post(
            "/enrollment-tokens",
            Access::Permission(EnrollmentTokensCreate),
            create_form,
        )
        .post(
            "/enrollment-tokens/{id}/revoke",
            Access::Permission(EnrollmentTokensRevoke),
            revoke_form,
        )
        .get(
            "/api/v1/enrollment-tokens",
            Access::Permission(EnrollmentTokensRead),
            list_tokens,
        )
        .post(
            "/api/v1/enrollment-tokens",
            Access::Permission(EnrollmentTokensCreate),
            create_token,
        )
        .post(
            "/api/v1/enrollment-tokens/{id}/revoke",
            Access::Permission(EnrollmentTokensRevoke),
            revoke_token,
        )
}

const DAY_MS: Millis = 86_400_000;

/// What creating a token asks for.
struct Request {
    group: Option<String>,
    cidrs: Vec<ipnet::IpNet>,
    max_per_day: Option<u32>,
    expires_in_days: Option<u32>,
}

async fn create(
    state: &AppState,
    caller: &Caller,
    request: Request,
) -> Result<(EnrollmentToken, String), WebError> {
    if request.expires_in_days.is_some_and(|d| d == 0 || d > 3660) {
        return Err(WebError::BadRequest(
            "a token expires after 1 to 3,660 days".into(),
        ));
    }
    if request.cidrs.len() > 64 {
        return Err(WebError::BadRequest("at most 64 networks".into()));
    }
    let parts = crate::secrets::TokenParts::generate().map_err(WebError::internal)?;
    let now = crate::now_millis();
    let token = EnrollmentToken {
        id: parts.id.clone(),
        secret_hash: crate::secrets::hash_secret(&parts.secret),
        host_group_id: request.group,
        cidrs: request.cidrs,
        max_per_day: request.max_per_day,
        expires_at: request
            .expires_in_days
            .map(|d| now.saturating_add(Millis::from(d) * DAY_MS)),
        created_at: now,
        revoked_at: None,
    };
    let event = caller
        .event(now, Action::EnrollmentTokenCreate, Outcome::Success)
        .target(token.id.clone())
        .details(serde_json::json!({
            "host_group_id": token.host_group_id,
            "cidrs": token.cidrs.iter().map(ToString::to_string).collect::<Vec<_>>(),
            "max_per_day": token.max_per_day,
            "expires_at": token.expires_at,
        }));
    let stored = token.clone();
    state
        .db
        .write("create enrollment token", move |tx| {
            if let Some(group) = &stored.host_group_id
                && groups::get(tx, group)?.is_none()
            {
                return Ok(Err(WebError::BadRequest("no such host group".into())));
            }
            store::create_token(tx, &stored)?;
            crate::audit::store::append(tx, &event)?;
            Ok(Ok(()))
        })
        .await??;
    let full = palisade_proto::token::EnrollmentToken {
        id: parts.id,
        secret: parts.secret,
        ca_pin: state.pki.ca_pin(),
    };
    Ok((token, full.to_string()))
}

async fn revoke(state: &AppState, caller: &Caller, id: String) -> Result<(), WebError> {
    let now = crate::now_millis();
    let event = caller
        .event(now, Action::EnrollmentTokenRevoke, Outcome::Success)
        .target(id.clone());
    let found = state
        .db
        .write("revoke enrollment token", move |tx| {
            let found = store::revoke_token(tx, &id, now)?;
            if found {
                crate::audit::store::append(tx, &event)?;
            }
            Ok(found)
        })
        .await?;
    if found {
        Ok(())
    } else {
        Err(WebError::NotFound("no such enrollment token"))
    }
}

fn state_of(t: &EnrollmentToken, now: Millis) -> &'static str {
    if t.revoked_at.is_some() {
        "revoked"
    } else if t.expires_at.is_some_and(|e| e <= now) {
        "expired"
    } else {
        "active"
    }
}

struct Row {
    id: String,
    state: &'static str,
    group: String,
    networks: String,
    max_per_day: String,
    expires: String,
    can_revoke: bool,
}

#[derive(Template)]
#[template(path = "enrollment/templates/tokens.html")]
struct TokensPage {
    layout: Layout,
    tokens: Vec<Row>,
    can_create: bool,
    groups: Vec<HostGroup>,
    created: Option<String>,
}

async fn page(
    state: &AppState,
    caller: &Caller,
    created: Option<String>,
) -> Result<Response, WebError> {
    let now = crate::now_millis();
    let (tokens, all_groups) = state
        .db
        .read("enrollment tokens page", |tx| {
            Ok((store::list_tokens(tx)?, groups::list(tx)?))
        })
        .await?;
    let group_name = |id: &Option<String>| {
        id.as_ref()
            .and_then(|id| all_groups.iter().find(|g| &g.id == id))
            .map_or_else(|| "none".to_owned(), |g| g.name.clone())
    };
    let page = TokensPage {
        layout: Layout::for_caller(caller),
        tokens: tokens
            .iter()
            .rev()
            .map(|t| Row {
                state: state_of(t, now),
                group: group_name(&t.host_group_id),
                networks: if t.cidrs.is_empty() {
                    "any".to_owned()
                } else {
                    t.cidrs
                        .iter()
                        .map(ToString::to_string)
                        .collect::<Vec<_>>()
                        .join(", ")
                },
                max_per_day: t
                    .max_per_day
                    .map_or_else(|| "no limit".to_owned(), |m| m.to_string()),
                expires: t.expires_at.map_or_else(|| "never".to_owned(), format::utc),
                can_revoke: t.revoked_at.is_none()
                    && caller.may(Permission::EnrollmentTokensRevoke, None),
                id: t.id.clone(),
            })
            .collect(),
        can_create: caller.may(Permission::EnrollmentTokensCreate, None),
        groups: all_groups.clone(),
        created,
    };
    Ok(html(StatusCode::OK, page.render()?))
}

async fn tokens_page(caller: Caller, State(state): State<AppState>) -> Result<Response, WebError> {
    page(&state, &caller, None).await
}

fn parse_cidrs(text: &str) -> Result<Vec<ipnet::IpNet>, WebError> {
    text.split([',', ' ', '\n'])
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| {
            s.parse::<ipnet::IpNet>().map_err(|_| {
                WebError::BadRequest(format!(
                    "{:?} is not a network (10.0.0.0/8, 2001:db8::/32)",
                    s.chars().take(64).collect::<String>()
                ))
            })
        })
        .collect()
}

fn parse_number(form: &FormFields, name: &str) -> Result<Option<u32>, WebError> {
    match form.opt(name) {
        None => Ok(None),
        Some(v) => v
            .parse()
            .map(Some)
            .map_err(|_| WebError::BadRequest(format!("{name} is a whole number"))),
    }
}

async fn create_form(
    caller: Caller,
    State(state): State<AppState>,
    form: FormFields,
) -> Result<Response, WebError> {
    let request = Request {
        group: form.opt("host_group_id").map(str::to_owned),
        cidrs: parse_cidrs(form.get("cidrs"))?,
        max_per_day: parse_number(&form, "max_per_day")?,
        expires_in_days: parse_number(&form, "expires_in_days")?,
    };
    let (_, full) = create(&state, &caller, request).await?;
    page(&state, &caller, Some(full)).await
}

async fn revoke_form(
    caller: Caller,
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Response, WebError> {
    revoke(&state, &caller, id).await?;
    Ok(Redirect::to("/enrollment-tokens").into_response())
}

/// An enrollment token as the API shows it (never its secret).
#[derive(Debug, Serialize, ToSchema)]
pub struct EnrollmentTokenJson {
    id: String,
    /// active, expired or revoked.
    state: &'static str,
    host_group_id: Option<String>,
    cidrs: Vec<String>,
    max_per_day: Option<u32>,
    created_at: Option<String>,
    expires_at: Option<String>,
    revoked_at: Option<String>,
}

fn token_json(t: EnrollmentToken, now: Millis) -> EnrollmentTokenJson {
    EnrollmentTokenJson {
        state: state_of(&t, now),
        created_at: format::rfc3339(t.created_at),
        expires_at: t.expires_at.and_then(format::rfc3339),
        revoked_at: t.revoked_at.and_then(format::rfc3339),
        cidrs: t.cidrs.iter().map(ToString::to_string).collect(),
        id: t.id,
        host_group_id: t.host_group_id,
        max_per_day: t.max_per_day,
    }
}

/// The body of `POST /api/v1/enrollment-tokens`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewEnrollmentTokenJson {
    /// The host group new hosts join.
    host_group_id: Option<String>,
    /// Networks allowed to enroll (`10.0.0.0/8`); empty: any.
    #[serde(default)]
    cidrs: Vec<String>,
    max_per_day: Option<u32>,
    expires_in_days: Option<u32>,
}

/// A created token: `token` is the whole token, shown only now.
#[derive(Debug, Serialize, ToSchema)]
pub struct CreatedEnrollmentTokenJson {
    token: String,
    enrollment_token: EnrollmentTokenJson,
}

/// Every enrollment token.
#[utoipa::path(get, path = "/api/v1/enrollment-tokens", tag = "agents",
    responses((status = 200, description = "enrollment tokens", body = [EnrollmentTokenJson])),
    security(("bearer" = []), ("session" = [])))]
async fn list_tokens(
    State(state): State<AppState>,
) -> Result<Json<Vec<EnrollmentTokenJson>>, WebError> {
    let now = crate::now_millis();
    let tokens = state
        .db
        .read("list enrollment tokens", store::list_tokens)
        .await?;
    Ok(Json(
        tokens.into_iter().map(|t| token_json(t, now)).collect(),
    ))
}

/// Create an enrollment token.
#[utoipa::path(post, path = "/api/v1/enrollment-tokens", tag = "agents", request_body = NewEnrollmentTokenJson,
    responses((status = 201, description = "created", body = CreatedEnrollmentTokenJson)),
    security(("bearer" = []), ("session" = [])))]
async fn create_token(
    caller: Caller,
    State(state): State<AppState>,
    Json(body): Json<NewEnrollmentTokenJson>,
) -> Result<(StatusCode, Json<CreatedEnrollmentTokenJson>), WebError> {
    let request = Request {
        group: body.host_group_id,
        cidrs: parse_cidrs(&body.cidrs.join(","))?,
        max_per_day: body.max_per_day,
        expires_in_days: body.expires_in_days,
    };
    let (token, full) = create(&state, &caller, request).await?;
    Ok((
        StatusCode::CREATED,
        Json(CreatedEnrollmentTokenJson {
            token: full,
            enrollment_token: token_json(token, crate::now_millis()),
        }),
    ))
}

/// Revoke an enrollment token.
#[utoipa::path(post, path = "/api/v1/enrollment-tokens/{id}/revoke", tag = "agents",
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
