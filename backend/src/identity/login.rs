//! Sign-in and sign-out: `GET/POST /login`, `POST /logout`.

use std::sync::OnceLock;

use askama::Template;
use axum::extract::{Form, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use serde::Deserialize;

use super::auth::{
    ClientInfo, clear_session_cookie_header, resume_session, session_cookie, session_cookie_header,
    truncate,
};
use super::{store, throttle};
use crate::audit::{Action, Actor, NewAuditEvent, Outcome};
use crate::secrets;
use crate::state::AppState;
use crate::web::layout::Layout;
use crate::web::{Access, RequestId, Routes, WebError, html};

/// Longest username we look up or write into the audit log.
const MAX_USERNAME: usize = 256;
/// The one message a failed login gets, whatever the reason.
pub const LOGIN_FAILED: &str = "invalid username or password";
/// When every password verification slot stayed busy.
pub const SIGN_IN_BUSY: &str = "The server is busy signing people in; try again in a few seconds.";

pub fn routes() -> Routes {
    Routes::new()
        .get("/login", Access::Public, login_form)
        .post("/login", Access::Public, login_submit)
        // Public: signing out with an expired session still clears the cookie.
        .post("/logout", Access::Public, logout)
}

#[derive(Template)]
#[template(path = "identity/templates/login.html")]
pub(super) struct LoginPage<'a> {
    pub layout: Layout,
    pub username: &'a str,
    pub error: Option<&'a str>,
    pub request_id: Option<String>,
    /// A passwordless passkey sign-in's options, when the policy allows one.
    pub passkey_options: Option<String>,
}

async fn login_form(
    State(state): State<AppState>,
    headers: HeaderMap,
) -> Result<Response, WebError> {
    if let Some(cookie) = session_cookie(&headers)
        && resume_session(&state, cookie, crate::now_millis())
            .await?
            .is_some()
    {
        return Ok(Redirect::to("/hosts").into_response());
    }
    let page = LoginPage {
        layout: Layout::anonymous(),
        username: "",
        error: None,
        request_id: None,
        passkey_options: super::passkeys::sign_in_options(&state)?,
    };
    Ok(html(StatusCode::OK, page.render()?))
}

#[derive(Deserialize)]
struct LoginForm {
    #[serde(default)]
    username: String,
    #[serde(default)]
    password: String,
}

/// Why a login failed, for the audit log only: the user sees one message.
#[derive(Clone, Copy)]
enum LoginFailure {
    UnknownUser,
    WrongPassword,
    Disabled,
}

impl LoginFailure {
    fn as_str(self) -> &'static str {
        match self {
            LoginFailure::UnknownUser => "unknown_user",
            LoginFailure::WrongPassword => "wrong_password",
            LoginFailure::Disabled => "disabled",
        }
    }
}

async fn login_submit(
    State(state): State<AppState>,
    axum::Extension(request_id): axum::Extension<RequestId>,
    client: ClientInfo,
    headers: HeaderMap,
    Form(form): Form<LoginForm>,
) -> Result<Response, WebError> {
    let now = crate::now_millis();
    let username = truncate(&form.username, MAX_USERNAME);
    let policy = state.config.sign_in.clone();
    let keys = throttle::Keys::new(&state.audit_key, &username, client.ip.as_deref());

    // Held back (too many recent failures for this name or this address):
    // refused before any password is verified, whether or not the account
    // exists.
    let held = {
        let (policy, keys) = (policy.clone(), keys.clone());
        state
            .db
            .read("sign-in throttle", move |tx| {
                throttle::check(tx, &policy, &keys, now)
            })
            .await?
    };
    if let Some(refusal) = held {
        let event = NewAuditEvent::new(now, Actor::Anonymous, Action::AuthLogin, Outcome::Denied)
            .from_client(client.ip.clone(), client.user_agent.clone())
            .details(serde_json::json!({
                "reason": refusal.as_str(),
                "username_digest": state.audit_key.name_digest(&form.username),
            }));
        crate::audit::limits::append_unauthenticated(&state, client.ip.as_deref(), event).await?;
        let message = refusal.message(now);
        let page = LoginPage {
            layout: Layout::anonymous(),
            username: &username,
            error: Some(&message),
            request_id: Some(request_id.to_string()),
            passkey_options: super::passkeys::sign_in_options(&state)?,
        };
        let mut response = html(StatusCode::TOO_MANY_REQUESTS, page.render()?);
        let secs = ((refusal.until() - now).max(0) + 999) / 1000;
        if let Ok(value) = header::HeaderValue::from_str(&secs.max(1).to_string()) {
            response.headers_mut().insert(header::RETRY_AFTER, value);
        }
        return Ok(response);
    }

    let user = if username.is_empty() || username != form.username {
        None
    } else {
        let name = username.clone();
        state
            .db
            .read("load user", move |tx| store::user_by_name(tx, &name))
            .await?
    };

    // At most `max_concurrent_hashes` verifications at once; a flood waits
    // a little, then is told the server is busy.
    let permit = match tokio::time::timeout(
        std::time::Duration::from_millis(policy.hash_queue_wait_ms),
        state.hashing.clone().acquire_owned(),
    )
    .await
    {
        Ok(Ok(permit)) => permit,
        _ => {
            let page = LoginPage {
                layout: Layout::anonymous(),
                username: &username,
                error: Some(SIGN_IN_BUSY),
                request_id: Some(request_id.to_string()),
                passkey_options: super::passkeys::sign_in_options(&state)?,
            };
            let mut response = html(StatusCode::SERVICE_UNAVAILABLE, page.render()?);
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, header::HeaderValue::from_static("5"));
            return Ok(response);
        }
    };
    // Always one argon2 verification, against a dummy hash when there is no
    // such user, so the response time does not tell whether a name exists.
    let stored_hash = user.as_ref().map(|user| user.password_hash.clone());
    let password = form.password;
    let password_ok = tokio::task::spawn_blocking(move || {
        let _permit = permit;
        let phc = match &stored_hash {
            Some(phc) => phc.as_str(),
            None => dummy_password_hash()?,
        };
        Ok::<_, WebError>(secrets::verify_password(&password, phc))
    })
    .await
    .map_err(WebError::internal)??;
    let outcome = match &user {
        None => Err(LoginFailure::UnknownUser),
        Some(user) if user.disabled => Err(LoginFailure::Disabled),
        Some(_) if !password_ok => Err(LoginFailure::WrongPassword),
        Some(user) => Ok(user.clone()),
    };

    let audit = |outcome: Outcome| {
        NewAuditEvent::new(
            now,
            Actor::User(username.clone()),
            Action::AuthLogin,
            outcome,
        )
        .from_client(client.ip.clone(), client.user_agent.clone())
    };

    let user = match outcome {
        Ok(user) => user,
        Err(reason) => {
            tracing::info!(reason = reason.as_str(), "login failed");
            let event = match reason {
                // A name that matches no account may be a password typed
                // in the wrong field: only its keyed digest is kept.
                LoginFailure::UnknownUser => {
                    NewAuditEvent::new(now, Actor::Anonymous, Action::AuthLogin, Outcome::Failure)
                        .from_client(client.ip.clone(), client.user_agent.clone())
                        .details(serde_json::json!({
                            "reason": reason.as_str(),
                            "username_digest": state.audit_key.name_digest(&form.username),
                        }))
                }
                _ => audit(Outcome::Failure)
                    .details(serde_json::json!({ "reason": reason.as_str() })),
            };
            let next = {
                let (policy, keys) = (policy.clone(), keys.clone());
                state
                    .db
                    .write("sign-in failure", move |tx| {
                        throttle::record_failure(tx, &policy, &keys, now)
                    })
                    .await?
            };
            let mut event = event;
            if let Some(throttle::Refusal::Locked { until }) = next {
                event.details["locked_until"] = serde_json::json!(until);
            }
            // Unauthenticated: bounded per address and in all.
            crate::audit::limits::append_unauthenticated(&state, client.ip.as_deref(), event)
                .await?;
            // The one message, plus the lock this failure set, if any (the
            // same for a name that matches no account).
            let message = match next {
                Some(refusal @ throttle::Refusal::Locked { .. }) => {
                    format!("{LOGIN_FAILED}. {}", refusal.message(now))
                }
                _ => LOGIN_FAILED.to_owned(),
            };
            let page = LoginPage {
                layout: Layout::anonymous(),
                username: &username,
                error: Some(&message),
                request_id: Some(request_id.to_string()),
                passkey_options: super::passkeys::sign_in_options(&state)?,
            };
            return Ok(html(StatusCode::UNAUTHORIZED, page.render()?));
        }
    };

    // A second factor makes sign-in two steps: the password only opens a
    // challenge (the account's throttle is cleared when the code passes).
    let user_id = user.id;
    if state
        .db
        .read("has second factor", move |tx| {
            super::factor_store::has_second_factor(tx, user_id)
        })
        .await?
    {
        return super::factors::open_challenge(&state, &user, now).await;
    }

    // A fresh id at every login; the session the browser may still hold ends.
    let old = session_cookie(&headers).map(secrets::hash_secret);
    let (cookie, session) = super::auth::new_session(&state, user.id, &client, now)?;
    let event = audit(Outcome::Success);
    state
        .db
        .write("sign in", move |tx| {
            if let Some(old) = old {
                store::delete_session(tx, &old)?;
            }
            throttle::record_success(tx, &keys)?;
            store::create_session(tx, &session)?;
            crate::audit::store::append(tx, &event)?;
            Ok(())
        })
        .await?;
    tracing::info!(user = %user.username, "login");
    signed_in(&state, &user, &cookie, now)
}

/// Inside the transaction of a sign-in that passed (a second factor, a
/// passkey): `user`'s new session and its audit event, whose details say
/// how.
pub(super) fn record_sign_in(
    tx: &mut crate::db::Tx<'_>,
    session: &super::NewSession,
    user: &super::User,
    client: &ClientInfo,
    now: crate::db::Millis,
    how: serde_json::Value,
) -> crate::db::Result<()> {
    store::create_session(
        tx,
        &super::NewSession {
            user_id: user.id,
            ..session.clone()
        },
    )?;
    crate::audit::store::append(
        tx,
        &crate::audit::NewAuditEvent::new(
            now,
            crate::audit::Actor::User(user.username.clone()),
            crate::audit::Action::AuthLogin,
            Outcome::Success,
        )
        .from_client(client.ip.clone(), client.user_agent.clone())
        .details(how),
    )?;
    Ok(())
}

/// Where a browser that just signed in goes, with its session cookie: the
/// password page first when the password must be replaced.
pub(super) fn signed_in(
    state: &AppState,
    user: &super::User,
    cookie: &str,
    now: crate::db::Millis,
) -> Result<Response, WebError> {
    let next = if super::account_http::password_change_due(state, user, now) {
        "/account"
    } else {
        "/hosts"
    };
    let mut response = Redirect::to(next).into_response();
    response
        .headers_mut()
        .insert(header::SET_COOKIE, session_cookie_header(cookie)?);
    Ok(response)
}

/// Computes what the first login would otherwise compute on its own time, so
/// that the first unknown-user login is not slower than the others.
pub fn prepare() {
    if let Err(e) = dummy_password_hash() {
        tracing::error!(error = %e, "cannot prepare the login");
    }
}

/// An argon2id hash of a random password, made like every stored password
/// hash (same parameters, so the same cost), computed once.
fn dummy_password_hash() -> Result<&'static str, WebError> {
    static DUMMY: OnceLock<String> = OnceLock::new();
    if let Some(hash) = DUMMY.get() {
        return Ok(hash);
    }
    let password = secrets::random_urlsafe(16).map_err(WebError::internal)?;
    let hash = secrets::hash_password(&password).map_err(WebError::internal)?;
    Ok(DUMMY.get_or_init(|| hash))
}

async fn logout(
    State(state): State<AppState>,
    client: ClientInfo,
    headers: HeaderMap,
) -> Result<Response, WebError> {
    if let Some(cookie) = session_cookie(&headers) {
        let id_hash = secrets::hash_secret(cookie);
        let now = crate::now_millis();
        let ended = state
            .db
            .write("sign out", move |tx| {
                let Some((_, user)) = store::session(tx, &id_hash, now)? else {
                    return Ok(None);
                };
                store::delete_session(tx, &id_hash)?;
                let event = NewAuditEvent::new(
                    now,
                    Actor::User(user.username.clone()),
                    Action::AuthLogout,
                    Outcome::Success,
                )
                .from_client(client.ip, client.user_agent);
                crate::audit::store::append(tx, &event)?;
                Ok(Some(user.username))
            })
            .await?;
        if let Some(user) = ended {
            tracing::info!(%user, "logout");
        }
    }
    let mut response = Redirect::to("/login").into_response();
    response
        .headers_mut()
        .insert(header::SET_COOKIE, clear_session_cookie_header());
    Ok(response)
}
