//! One's own account (`/account`): choosing a new password (at the first
//! sign-in, after a reset, when it expired, or at will) and one's sessions,
//! each of which can be ended. `GET/DELETE /api/v1/sessions` does the same
//! for the API, and for anyone's sessions with `sessions:read` /
//! `sessions:revoke`. An administrator's forced reset is
//! `POST /users/{id}/password-reset` (and its API twin).
//!
//! Invariants: a new password ends every session of the user, the one that
//! changed it included, which is replaced by a fresh one (a new session id
//! at every privilege change); the current password is checked through the
//! same throttle as sign-in; a password someone else set must be replaced
//! before the user reaches anything else (see `access::caller`).

use askama::Template;
use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::auth::session_cookie_header;
use super::{Session, User, password, store, throttle};
use crate::access::{Caller, Permission, Via};
use crate::audit::{Action, Outcome};
use crate::db::Millis;
use crate::state::AppState;
use crate::web::form::FormFields;
use crate::web::format;
use crate::web::layout::Layout;
use crate::web::{Access, Routes, WebError, html};

pub fn routes() -> Routes {
    Routes::new()
        .get("/account", Access::SignedIn, account_page)
        .post("/account/password", Access::SignedIn, password_form)
        .post(
            "/account/sessions/{id}/end",
            Access::SignedIn,
            end_session_form,
        )
        .get("/api/v1/sessions", Access::SignedIn, list_sessions)
        .delete("/api/v1/sessions/{id}", Access::SignedIn, end_session_api)
        .post(
            "/users/{id}/password-reset",
            Access::Permission(Permission::UsersResetPassword),
            reset_form,
        )
        .post(
            "/api/v1/users/{id}/password-reset",
            Access::Permission(Permission::UsersResetPassword),
            reset_api,
        )
}

/// Whether `user` must choose a new password before anything else.
pub fn password_change_due(state: &AppState, user: &User, now: Millis) -> bool {
    user.must_change_password
        || password::expired(
            &state.config.passwords,
            user.password_changed_at.unwrap_or(user.created_at),
            now,
        )
}

/// A session's public id: the hex of its id's hash (the cookie cannot be
/// made from it).
fn public_id(session: &Session) -> String {
    hex::encode(&session.id_hash)
}

pub(super) struct SessionRow {
    pub(super) id: String,
    pub(super) current: bool,
    pub(super) source_ip: String,
    pub(super) user_agent: String,
    pub(super) created: String,
    pub(super) last_seen: String,
}

#[derive(Template)]
#[template(path = "identity/templates/account.html")]
struct AccountPage {
    layout: Layout,
    username: String,
    due: bool,
    notice: Option<&'static str>,
    problems: Vec<String>,
    min_length: usize,
    sessions: Vec<SessionRow>,
}

fn current_session(caller: &Caller) -> Option<&[u8]> {
    match &caller.via {
        Via::Session { id_hash, .. } => Some(id_hash),
        Via::Token { .. } => None,
    }
}

#[derive(Deserialize, Default)]
struct AccountQuery {
    #[serde(default)]
    done: Option<String>,
}

async fn account_page(
    State(state): State<AppState>,
    caller: Caller,
    Query(q): Query<AccountQuery>,
) -> Result<Response, WebError> {
    let notice = match q.done.as_deref() {
        Some("password") => Some("Your password was changed; your other sessions have ended."),
        Some("session") => Some("The session has ended."),
        _ => None,
    };
    render_account(&state, &caller, notice, Vec::new(), StatusCode::OK).await
}

async fn render_account(
    state: &AppState,
    caller: &Caller,
    notice: Option<&'static str>,
    problems: Vec<String>,
    status: StatusCode,
) -> Result<Response, WebError> {
    let user = caller
        .user
        .clone()
        .ok_or(WebError::Forbidden("this page is for signed-in users"))?;
    let now = crate::now_millis();
    let user_id = user.id;
    let sessions = state
        .db
        .read("own sessions", move |tx| {
            store::sessions(tx, Some(user_id), now)
        })
        .await?;
    let current = current_session(caller);
    let page = AccountPage {
        layout: Layout::for_caller(caller),
        username: user.username.clone(),
        due: password_change_due(state, &user, now),
        notice,
        problems,
        min_length: state.config.passwords.min_length,
        sessions: sessions
            .into_iter()
            .map(|(s, _)| session_row(s, current, now))
            .collect(),
    };
    Ok(html(status, page.render()?))
}

pub(super) fn session_row(s: Session, current: Option<&[u8]>, now: Millis) -> SessionRow {
    SessionRow {
        id: public_id(&s),
        current: current == Some(s.id_hash.as_slice()),
        source_ip: s.source_ip,
        user_agent: s.user_agent.chars().take(120).collect(),
        created: format::utc(s.created_at),
        last_seen: format::age(s.last_seen_at, now),
    }
}

async fn password_form(
    State(state): State<AppState>,
    caller: Caller,
    body: axum::body::Bytes,
) -> Result<Response, WebError> {
    let form = FormFields::parse(&body);
    let (current, new, confirm) = (
        form.get("current_password").to_owned(),
        form.get("new_password").to_owned(),
        form.get("confirm_password").to_owned(),
    );
    match change_password(&state, &caller, current, new, confirm).await? {
        Ok(cookie) => {
            let mut response = Redirect::to("/account?done=password").into_response();
            response
                .headers_mut()
                .insert(header::SET_COOKIE, session_cookie_header(&cookie)?);
            Ok(response)
        }
        Err(problems) => {
            render_account(&state, &caller, None, problems, StatusCode::BAD_REQUEST).await
        }
    }
}

/// Checks and sets a new password chosen by the signed-in caller. Returns
/// the new session's cookie, or what is wrong.
async fn change_password(
    state: &AppState,
    caller: &Caller,
    current: String,
    new: String,
    confirm: String,
) -> Result<Result<String, Vec<String>>, WebError> {
    let (Some(user), Some(_)) = (caller.user.clone(), current_session(caller)) else {
        return Err(WebError::Forbidden(
            "only a signed-in user changes their password, in the browser",
        ));
    };
    let now = crate::now_millis();
    let policy = state.config.sign_in.clone();
    let keys = throttle::Keys::new(
        &state.audit_key,
        &user.username,
        caller.client.ip.as_deref(),
    );
    {
        let (policy, keys) = (policy.clone(), keys.clone());
        if let Some(refusal) = state
            .db
            .read("password throttle", move |tx| {
                throttle::check(tx, &policy, &keys, now)
            })
            .await?
        {
            return Ok(Err(vec![refusal.message(now)]));
        }
    }
    let mut problems = Vec::new();
    if new != confirm {
        problems.push("The new password and its confirmation differ.".to_owned());
    }
    problems.extend(
        password::problems(&new, &user.username, &state.config.passwords)
            .into_iter()
            .map(|p| format!("The new password {p}.")),
    );
    let user_id = user.id;
    let history = if state.config.passwords.history > 0 {
        state
            .db
            .read("password history", move |tx| {
                store::password_history(tx, user_id)
            })
            .await?
    } else {
        Vec::new()
    };
    let permit = state
        .hashing
        .clone()
        .acquire_owned()
        .await
        .map_err(WebError::internal)?;
    let stored = user.password_hash.clone();
    let keep = state.config.passwords.history as usize;
    let (current_ok, reused, hash) = tokio::task::spawn_blocking(move || {
        let _permit = permit;
        let current_ok = crate::secrets::verify_password(&current, &stored);
        if !current_ok {
            return Ok::<_, WebError>((false, false, None));
        }
        let reused = crate::secrets::verify_password(&new, &stored)
            || history
                .iter()
                .take(keep)
                .any(|h| crate::secrets::verify_password(&new, h));
        let hash = crate::secrets::hash_password(&new).map_err(WebError::internal)?;
        Ok((true, reused, Some(hash)))
    })
    .await
    .map_err(WebError::internal)??;
    if !current_ok {
        let (policy, keys) = (policy.clone(), keys.clone());
        let event = caller
            .event(now, Action::PasswordChange, Outcome::Failure)
            .target(user.username.clone())
            .details(serde_json::json!({ "reason": "wrong_current_password" }));
        state
            .db
            .write("password change failure", move |tx| {
                throttle::record_failure(tx, &policy, &keys, now)?;
                crate::audit::store::append(tx, &event)?;
                Ok(())
            })
            .await?;
        return Ok(Err(vec!["The current password is not right.".to_owned()]));
    }
    if reused {
        problems.push("The new password must differ from your current and earlier ones.".into());
    }
    let Some(hash) = hash.filter(|_| problems.is_empty()) else {
        return Ok(Err(problems));
    };
    let (cookie, session) = super::auth::new_session(state, user_id, &caller.client, now)?;
    let event = caller
        .event(now, Action::PasswordChange, Outcome::Success)
        .target(user.username.clone());
    let keep_history = state.config.passwords.history;
    state
        .db
        .write("change password", move |tx| {
            store::set_password(tx, user_id, &hash, true, keep_history, now)?;
            let ended = store::end_sessions(tx, user_id, None)?;
            store::create_session(tx, &session)?;
            throttle::record_success(tx, &keys)?;
            crate::audit::store::append(
                tx,
                &event
                    .clone()
                    .details(serde_json::json!({ "sessions_ended": ended })),
            )?;
            Ok(())
        })
        .await?;
    Ok(Ok(cookie))
}

/// Ends session `id` if it is the caller's own or they may end anyone's.
/// Returns whether it was the caller's current session.
/// Which session [`end_session`] ended.
struct Ended {
    /// The session of the request itself.
    current: bool,
    /// One of the caller's own sessions.
    own: bool,
    owner_id: i64,
}

async fn end_session(state: &AppState, caller: &Caller, id: &str) -> Result<Ended, WebError> {
    const UNKNOWN: WebError = WebError::NotFound("no such session");
    let id_hash = hex::decode(id).map_err(|_| UNKNOWN)?;
    let now = crate::now_millis();
    let lookup = id_hash.clone();
    let found = state
        .db
        .read("load session", move |tx| store::session(tx, &lookup, now))
        .await?;
    let Some((_, owner)) = found else {
        return Err(UNKNOWN);
    };
    let own = caller.user.as_ref().map(|u| u.id) == Some(owner.id);
    if !own && !caller.may(Permission::SessionsRevoke, None) {
        return Err(UNKNOWN);
    }
    // Ending someone else's session is dangerous (`sessions:revoke`): a
    // browser session needs a recent proof, as the route layer asks of
    // routes that declare a dangerous permission.
    let mut proof_at = None;
    if !own
        && let Via::Session {
            authenticated_at, ..
        } = caller.via
    {
        if !super::factors::recently_authenticated(state, authenticated_at, now) {
            return Err(WebError::Forbidden(crate::access::caller::REAUTH_NEEDED));
        }
        proof_at = Some(authenticated_at);
    }
    let current = current_session(caller) == Some(id_hash.as_slice());
    let event = caller
        .event(now, Action::SessionRevoke, Outcome::Success)
        .details(serde_json::json!({ "reauthenticated_at": proof_at }))
        .target(owner.username.clone())
        .details(serde_json::json!({ "own": own, "current": current }));
    state
        .db
        .write("end session", move |tx| {
            store::delete_session(tx, &id_hash)?;
            crate::audit::store::append(tx, &event)?;
            Ok(())
        })
        .await?;
    Ok(Ended {
        current,
        own,
        owner_id: owner.id,
    })
}

async fn end_session_form(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Response, WebError> {
    let ended = match end_session(&state, &caller, &id).await {
        Err(WebError::Forbidden(crate::access::caller::REAUTH_NEEDED)) => {
            return Ok(super::reauth::reauth_redirect("/users"));
        }
        other => other?,
    };
    if ended.current {
        return Ok(Redirect::to("/login").into_response());
    }
    if !ended.own {
        // An administrator ending someone's session: back to that user.
        return Ok(
            Redirect::to(&format!("/users/{}?done=session", ended.owner_id)).into_response(),
        );
    }
    Ok(Redirect::to("/account?done=session").into_response())
}

/// A session as the API shows it.
#[derive(Debug, Serialize, ToSchema)]
pub struct SessionJson {
    /// Public id (the hex of the hash of the session's secret).
    id: String,
    user: String,
    /// The session this request came with.
    current: bool,
    source_ip: String,
    user_agent: String,
    created_at: Option<String>,
    last_seen_at: Option<String>,
    expires_at: Option<String>,
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
pub struct SessionsQuery {
    /// Someone else's sessions, by user id (needs `sessions:read`).
    user: Option<i64>,
    /// Everyone's sessions (needs `sessions:read`).
    #[serde(default)]
    all: bool,
}

/// The caller's own sessions, or another user's / everyone's.
#[utoipa::path(get, path = "/api/v1/sessions", tag = "identity", params(SessionsQuery),
    responses((status = 200, description = "sessions, most recently used first", body = [SessionJson])),
    security(("bearer" = [])))]
pub async fn list_sessions(
    State(state): State<AppState>,
    caller: Caller,
    Query(q): Query<SessionsQuery>,
) -> Result<Json<Vec<SessionJson>>, WebError> {
    let own = caller.user.as_ref().map(|u| u.id);
    let whose = if q.all {
        caller.require_global(Permission::SessionsRead)?;
        None
    } else {
        match q.user {
            Some(id) if Some(id) != own => {
                caller.require_global(Permission::SessionsRead)?;
                Some(id)
            }
            _ => Some(own.ok_or(WebError::BadRequest(
                "this token belongs to no user: ask for ?user=ID or ?all=true".into(),
            ))?),
        }
    };
    let now = crate::now_millis();
    let rows = state
        .db
        .read("list sessions", move |tx| store::sessions(tx, whose, now))
        .await?;
    let current = current_session(&caller);
    Ok(Json(
        rows.into_iter()
            .map(|(s, u)| SessionJson {
                id: public_id(&s),
                user: u.username,
                current: current == Some(s.id_hash.as_slice()),
                source_ip: s.source_ip,
                user_agent: s.user_agent,
                created_at: format::rfc3339(s.created_at),
                last_seen_at: format::rfc3339(s.last_seen_at),
                expires_at: format::rfc3339(s.expires_at),
            })
            .collect(),
    ))
}

/// Ends a session: one's own, or anyone's with `sessions:revoke`.
#[utoipa::path(delete, path = "/api/v1/sessions/{id}", tag = "identity",
    params(("id" = String, Path, description = "the session's public id")),
    responses((status = 204, description = "ended"), (status = 404, description = "no such session")),
    security(("bearer" = [])))]
pub async fn end_session_api(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<StatusCode, WebError> {
    end_session(&state, &caller, &id).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Sets a generated one-time password on user `id`, who must replace it at
/// the next sign-in; their sessions end. Returns (name, password).
async fn reset_password(
    state: &AppState,
    caller: &Caller,
    id: i64,
) -> Result<(String, String), WebError> {
    let password = crate::secrets::generate_password().map_err(WebError::internal)?;
    let for_hash = password.clone();
    let hash = tokio::task::spawn_blocking(move || crate::secrets::hash_password(&for_hash))
        .await
        .map_err(WebError::internal)?
        .map_err(WebError::internal)?;
    let now = crate::now_millis();
    let event = caller.event(now, Action::PasswordReset, Outcome::Success);
    let keep = state.config.passwords.history;
    let name = state
        .db
        .write("reset password", move |tx| {
            let Some(user) = store::user_by_id(tx, id)? else {
                return Ok(None);
            };
            store::set_password(tx, id, &hash, false, keep, now)?;
            // A passkey signs in without the password: one someone else
            // added must not survive the reset that locks them out. Removed
            // before the sessions end, so that on PostgreSQL a passkey
            // sign-in holding the passkey's row commits first and its
            // session is then ended too.
            let passkeys = super::factor_store::remove_passkeys(tx, id)?;
            let ended = store::end_sessions(tx, id, None)?;
            crate::audit::store::append(
                tx,
                &event
                    .clone()
                    .target(user.username.clone())
                    .details(serde_json::json!({
                        "sessions_ended": ended,
                        "passkeys_removed": passkeys,
                    })),
            )?;
            Ok(Some(user.username))
        })
        .await?
        .ok_or(WebError::NotFound("no such user"))?;
    Ok((name, password))
}

#[derive(Template)]
#[template(path = "identity/templates/password_reset.html")]
struct ResetPage {
    layout: Layout,
    user_id: i64,
    username: String,
    password: String,
}

async fn reset_form(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<i64>,
) -> Result<Response, WebError> {
    let (username, password) = reset_password(&state, &caller, id).await?;
    let page = ResetPage {
        layout: Layout::for_caller(&caller),
        user_id: id,
        username,
        password,
    };
    Ok(html(StatusCode::OK, page.render()?))
}

/// The one-time password a reset made.
#[derive(Debug, Serialize, ToSchema)]
pub struct PasswordResetJson {
    username: String,
    /// Shown only now; the user must replace it at the next sign-in.
    password: String,
}

/// Forces a user to choose a new password: sets a one-time one, ends
/// their sessions.
#[utoipa::path(post, path = "/api/v1/users/{id}/password-reset", tag = "identity",
    params(("id" = i64, Path, description = "the user's id")),
    responses((status = 200, description = "the one-time password", body = PasswordResetJson),
        (status = 404, description = "no such user")),
    security(("bearer" = [])))]
pub async fn reset_api(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<i64>,
) -> Result<Json<PasswordResetJson>, WebError> {
    let (username, password) = reset_password(&state, &caller, id).await?;
    Ok(Json(PasswordResetJson { username, password }))
}

/// The handlers' OpenAPI paths, for [`crate::web::openapi`].
pub(crate) fn openapi_paths() -> utoipa::openapi::OpenApi {
    #[derive(utoipa::OpenApi)]
    #[openapi(paths(list_sessions, end_session_api, reset_api))]
    struct Paths;
    <Paths as utoipa::OpenApi>::openapi()
}
