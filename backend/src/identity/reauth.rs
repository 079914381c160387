//! Re-authentication (`/reauth`): the password, and the code when the user
//! has a second factor, given again (or a passkey, see `passkeys`); the
//! session is replaced by a fresh one whose `authenticated_at` is now.
//! Routes whose permission is dangerous need it within
//! `[mfa] reauth_window_secs` (see `access::caller`).
//!
//! Invariants: wrong answers count in the account's sign-in throttle; the
//! page a browser is sent back to is a path on this site (no open
//! redirect).

use askama::Template;
use axum::extract::{Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use serde::Deserialize;

use super::auth::{new_session, session_cookie_header};
use super::factor_store::{self, has_second_factor};
use super::factors::{check_code, signed_in_user};
use super::{store, throttle};
use crate::access::Caller;
use crate::audit::{Action, Outcome};
use crate::secrets;
use crate::state::AppState;
use crate::web::form::FormFields;
use crate::web::layout::Layout;
use crate::web::{Access, Routes, WebError, html};

pub fn routes() -> Routes {
    Routes::new()
        .get("/reauth", Access::SignedIn, reauth_form)
        .post("/reauth", Access::SignedIn, reauth_submit)
}

/// Where the browser goes to prove itself again before `next`.
pub fn reauth_redirect(next: &str) -> Response {
    let next: String = form_urlencoded::byte_serialize(local_path(next).as_bytes()).collect();
    Redirect::to(&format!("/reauth?next={next}")).into_response()
}

/// `next` if it is a path on this site, else the hosts page (no open
/// redirect).
pub(super) fn local_path(next: &str) -> &str {
    if next.starts_with('/')
        && !next.starts_with("//")
        && !next.contains('\\')
        && !next.chars().any(char::is_control)
    {
        next
    } else {
        "/hosts"
    }
}

#[derive(Template)]
#[template(path = "identity/templates/reauth.html")]
struct ReauthPage<'a> {
    layout: Layout,
    next: &'a str,
    needs_code: bool,
    error: Option<&'a str>,
    /// The passkey form's options, when the user has passkeys.
    passkey_options: Option<String>,
    /// Passkeys do not replace the password (`[passkeys] passwordless`
    /// off): the passkey form asks for it too.
    passkey_needs_password: bool,
}

#[derive(Deserialize, Default)]
struct ReauthQuery {
    next: Option<String>,
}

async fn reauth_form(
    State(state): State<AppState>,
    caller: Caller,
    Query(q): Query<ReauthQuery>,
) -> std::result::Result<Response, WebError> {
    let next = local_path(q.next.as_deref().unwrap_or("/hosts"));
    render_reauth(&state, &caller, next, None, StatusCode::OK).await
}

/// The re-authentication page: the password (and a code when the user has
/// a second factor), and a passkey when they have one.
/// Whether `password` is `user`'s, verified within the bound on concurrent
/// password hashing (`[sign_in] max_concurrent_hashes`).
pub(super) async fn password_matches(
    state: &AppState,
    password: String,
    user: &super::User,
) -> std::result::Result<bool, WebError> {
    // As at sign-in: a flood waits a little, then is told to come back.
    let wait = std::time::Duration::from_millis(state.config.sign_in.hash_queue_wait_ms);
    let permit = match tokio::time::timeout(wait, state.hashing.clone().acquire_owned()).await {
        Ok(Ok(permit)) => permit,
        _ => return Err(WebError::Busy(super::login::SIGN_IN_BUSY)),
    };
    let stored = user.password_hash.clone();
    tokio::task::spawn_blocking(move || {
        let _permit = permit;
        secrets::verify_password(&password, &stored)
    })
    .await
    .map_err(WebError::internal)
}

pub(super) async fn render_reauth(
    state: &AppState,
    caller: &Caller,
    next: &str,
    error: Option<&str>,
    status: StatusCode,
) -> std::result::Result<Response, WebError> {
    let (user, ..) = signed_in_user(caller)?;
    let user_id = user.id;
    let (needs_code, passkeys) = state
        .db
        .read("reauth factors", move |tx| {
            Ok((
                has_second_factor(tx, user_id)?,
                factor_store::passkeys_of(tx, user_id)?,
            ))
        })
        .await?;
    let passkey_options = if passkeys.is_empty() {
        None
    } else {
        Some(super::passkeys::request_options(
            state,
            super::passkeys::Purpose::Reauth,
            user_id,
            &passkeys,
            crate::now_millis(),
        )?)
    };
    let page = ReauthPage {
        layout: Layout::for_caller(caller),
        next,
        needs_code,
        error,
        passkey_options,
        passkey_needs_password: !state.config.passkeys.passwordless,
    };
    Ok(html(status, page.render()?))
}

async fn reauth_submit(
    State(state): State<AppState>,
    caller: Caller,
    body: axum::body::Bytes,
) -> std::result::Result<Response, WebError> {
    let (user, _, old) = signed_in_user(&caller)?;
    let form = FormFields::parse(&body);
    let next = local_path(form.get("next")).to_owned();
    let password = form.get("password").to_owned();
    let code = form.get("code").chars().take(64).collect::<String>();
    let now = crate::now_millis();
    let policy = state.config.sign_in.clone();
    let keys = throttle::Keys::new(
        &state.audit_key,
        &user.username,
        caller.client.ip.as_deref(),
    );
    let user_id = user.id;
    let (needs_code, held) = {
        let (policy, keys) = (policy.clone(), keys.clone());
        state
            .db
            .read("reauth check", move |tx| {
                Ok((
                    has_second_factor(tx, user_id)?,
                    throttle::check(tx, &policy, &keys, now)?,
                ))
            })
            .await?
    };
    if let Some(refusal) = held {
        let message = refusal.message(now);
        return render_reauth(
            &state,
            &caller,
            &next,
            Some(&message),
            StatusCode::TOO_MANY_REQUESTS,
        )
        .await;
    }
    let password_ok = password_matches(&state, password, &user).await?;
    let (cookie, session) = new_session(&state, user_id, &caller.client, now)?;
    let (state2, keys2) = (state.clone(), keys.clone());
    let ok_event = caller.event(now, Action::Reauthenticate, Outcome::Success);
    let bad_event = caller.event(now, Action::Reauthenticate, Outcome::Failure);
    let passed = state
        .db
        .write("reauthenticate", move |tx| {
            // Ended meanwhile (signed out elsewhere, a reset): nothing to
            // renew.
            if store::session_proof(tx, &old)?.is_none() {
                return Ok(false);
            }
            let proof = if !password_ok {
                None
            } else if needs_code {
                check_code(tx, &state2, user_id, &code, now)?.map(|p| p.as_str())
            } else {
                Some("password")
            };
            let Some(proof) = proof else {
                throttle::record_failure(tx, &policy, &keys2, now)?;
                crate::audit::store::append(
                    tx,
                    &bad_event.clone().details(serde_json::json!({
                        "reason": if password_ok { "wrong_code" } else { "wrong_password" }
                    })),
                )?;
                return Ok(false);
            };
            throttle::record_success(tx, &keys2)?;
            store::replace_session(tx, &old, &session, now)?;
            crate::audit::store::append(
                tx,
                &ok_event
                    .clone()
                    .details(serde_json::json!({ "proof": proof })),
            )?;
            Ok(true)
        })
        .await?;
    if !passed {
        let message = if needs_code {
            "The password or the code is not right."
        } else {
            "The password is not right."
        };
        return render_reauth(
            &state,
            &caller,
            &next,
            Some(message),
            StatusCode::UNAUTHORIZED,
        )
        .await;
    }
    let mut response = Redirect::to(&next).into_response();
    response
        .headers_mut()
        .insert(header::SET_COOKIE, session_cookie_header(&cookie)?);
    Ok(response)
}
