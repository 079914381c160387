//! Second factors and re-authentication.
//!
//! - **TOTP with backup codes** (`/account/second-factor`): the user starts
//!   an enrollment (a fresh seed, shown as a QR code rendered here and as
//!   text), confirms it with a first code, and is shown 10 backup codes
//!   once. A confirmed TOTP makes sign-in two steps: the password opens a
//!   short-lived *challenge* (its own cookie, not a session, reaching only
//!   `/login/second-factor`), a code or a backup code turns it into a
//!   session.
//! - **Enforced enrollment** (`[mfa] required`, `required_roles`): a session
//!   whose user must enroll and has not reaches only `/account` pages and
//!   signing out (see `access::caller`).
//! - **Re-authentication**: see `reauth`.
//! - **Reset by an administrator** (`users:reset_factors`): removes the
//!   user's TOTP and backup codes and ends their sessions.
//!
//! Invariants: a TOTP code is accepted once (the matched step is written
//! with a compare-and-set, so two requests racing with one code cannot both
//! pass); a backup code is used once (same); every wrong code counts against
//! the account's sign-in throttle, so guessing codes is bounded by the same
//! lockout as guessing passwords; the account throttle is cleared only when
//! the whole sign-in succeeds; the seed is sealed with a key kept outside
//! the database and bound to the user's id.

use askama::Template;
use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::auth::{ClientInfo, new_session, session_cookie_header};
use super::factor_store::{
    TotpFactor, begin_totp, challenge, has_second_factor, remove_factors, replace_backup_codes,
    totp_factor, unused_backup_codes, use_backup_code, use_step,
};
use super::reauth::reauth_redirect;
use super::{User, factor_store, store, throttle, totp};
use crate::access::{Caller, Permission, Via};
use crate::audit::{Action, Actor, NewAuditEvent, Outcome};
use crate::db::{Millis, Result, Tx};
use crate::params;
use crate::secrets;
use crate::state::AppState;
use crate::web::form::FormFields;
use crate::web::layout::Layout;
use crate::web::{Access, Routes, WebError, html};

/// The cookie of a pending two-step sign-in. `__Host-`: only this origin,
/// over HTTPS.
pub const CHALLENGE_COOKIE: &str = "__Host-palisade_sign_in";
/// Random bytes of a challenge's id.
const CHALLENGE_ID_BYTES: usize = 32;
/// What a wrong code is answered, whatever was wrong.
pub const CODE_FAILED: &str =
    "That code is not valid. Try the next one your app shows, or a backup code.";

pub fn routes() -> Routes {
    Routes::new()
        .get("/login/second-factor", Access::Public, challenge_form)
        .post("/login/second-factor", Access::Public, challenge_submit)
        .get("/account/second-factor", Access::SignedIn, factors_page)
        .post("/account/second-factor/totp", Access::SignedIn, totp_begin)
        .post(
            "/account/second-factor/totp/confirm",
            Access::SignedIn,
            totp_confirm,
        )
        .post(
            "/account/second-factor/backup-codes",
            Access::SignedIn,
            backup_codes_regenerate,
        )
        .post(
            "/account/second-factor/remove",
            Access::SignedIn,
            factor_remove,
        )
        .post(
            "/users/{id}/factors/reset",
            Access::Permission(Permission::UsersResetFactors),
            reset_form,
        )
        .post(
            "/api/v1/users/{id}/factors/reset",
            Access::Permission(Permission::UsersResetFactors),
            reset_api,
        )
}

// ---------------------------------------------------------------------
// Policy.

/// Whether `user` must have a second factor (`[mfa] required`, or a role
/// named in `required_roles`).
pub fn enrollment_required(tx: &mut Tx<'_>, state: &AppState, user: &User) -> Result<bool> {
    let mfa = &state.config.mfa;
    if mfa.required {
        return Ok(true);
    }
    if mfa.required_roles.is_empty() {
        return Ok(false);
    }
    // By name or id, wherever the role is held.
    let held = crate::access::roles::assignments(tx, Some(user.id))?;
    Ok(held.iter().any(|a| {
        mfa.required_roles
            .iter()
            .any(|r| *r == a.role.name || *r == a.role.id)
    }))
}

/// Whether the session's last proof of identity is recent enough for a
/// dangerous operation.
pub fn recently_authenticated(state: &AppState, authenticated_at: Millis, now: Millis) -> bool {
    let window = i64::try_from(state.config.mfa.reauth_window_secs)
        .unwrap_or(i64::MAX / 1000)
        .saturating_mul(1000);
    now.saturating_sub(authenticated_at) <= window
}

// ---------------------------------------------------------------------
// Two-step sign-in.

/// Called by the password step when the user has a second factor: opens a
/// challenge and answers with its cookie and a redirect to the code form.
pub async fn open_challenge(
    state: &AppState,
    user: &User,
    now: Millis,
) -> std::result::Result<Response, WebError> {
    let cookie = secrets::random_urlsafe(CHALLENGE_ID_BYTES).map_err(WebError::internal)?;
    let id_hash = secrets::hash_secret(&cookie);
    let user_id = user.id;
    let expires_at =
        now.saturating_add(i64::try_from(state.config.mfa.challenge_secs).unwrap_or(300) * 1000);
    state
        .db
        .write("open sign-in challenge", move |tx| {
            tx.execute(
                "INSERT INTO sign_in_challenges (id_hash, user_id, created_at, expires_at) VALUES ($1, $2, $3, $4)",
                params![&id_hash, user_id, now, expires_at],
            )?;
            Ok(())
        })
        .await?;
    let mut response = Redirect::to("/login/second-factor").into_response();
    response
        .headers_mut()
        .insert(header::SET_COOKIE, challenge_cookie_header(&cookie)?);
    Ok(response)
}

fn challenge_cookie_header(value: &str) -> std::result::Result<HeaderValue, WebError> {
    HeaderValue::from_str(&format!(
        "{CHALLENGE_COOKIE}={value}; Path=/; Secure; HttpOnly; SameSite=Strict"
    ))
    .map_err(WebError::internal)
}

fn clear_challenge_cookie() -> HeaderValue {
    HeaderValue::from_static(
        "__Host-palisade_sign_in=; Path=/; Max-Age=0; Secure; HttpOnly; SameSite=Strict",
    )
}

fn challenge_cookie(headers: &HeaderMap) -> Option<&str> {
    super::auth::cookie(headers, CHALLENGE_COOKIE)
}

#[derive(Template)]
#[template(path = "identity/templates/second_factor.html")]
struct ChallengePage<'a> {
    layout: Layout,
    error: Option<&'a str>,
    /// The passkey form's options, when the pending user has passkeys.
    passkey_options: Option<String>,
}

async fn challenge_form(
    State(state): State<AppState>,
    headers: HeaderMap,
) -> std::result::Result<Response, WebError> {
    if challenge_cookie(&headers).is_none() {
        return Ok(Redirect::to("/login").into_response());
    }
    let page = ChallengePage {
        layout: Layout::anonymous(),
        error: None,
        passkey_options: second_step_passkey_options(&state, &headers).await?,
    };
    Ok(html(StatusCode::OK, page.render()?))
}

/// The passkey options of the browser's pending sign-in, when its user has
/// passkeys.
async fn second_step_passkey_options(
    state: &AppState,
    headers: &HeaderMap,
) -> std::result::Result<Option<String>, WebError> {
    let Some(cookie) = challenge_cookie(headers) else {
        return Ok(None);
    };
    let id_hash = secrets::hash_secret(cookie);
    let now = crate::now_millis();
    let pending = state
        .db
        .read("pending sign-in passkeys", move |tx| {
            let Some(pending) = challenge(tx, &id_hash, now)? else {
                return Ok(None);
            };
            Ok(Some((
                pending.user_id,
                factor_store::passkeys_of(tx, pending.user_id)?,
            )))
        })
        .await?;
    match pending {
        Some((user_id, passkeys)) if !passkeys.is_empty() => {
            Ok(Some(super::passkeys::request_options(
                state,
                super::passkeys::Purpose::SecondFactor,
                user_id,
                &passkeys,
                now,
            )?))
        }
        _ => Ok(None),
    }
}

/// Which second factor was accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Proof {
    Totp,
    BackupCode,
    Passkey,
}

impl Proof {
    pub fn as_str(self) -> &'static str {
        match self {
            Proof::Totp => "totp",
            Proof::BackupCode => "backup_code",
            Proof::Passkey => "passkey",
        }
    }
}

/// Checks `code` (a TOTP code or a backup code) for `user_id` and uses it.
/// `None` when it is not valid (or was used already).
pub(super) fn check_code(
    tx: &mut Tx<'_>,
    state: &AppState,
    user_id: i64,
    code: &str,
    now: Millis,
) -> Result<Option<Proof>> {
    if let Some(factor) = totp_factor(tx, user_id)?.filter(|f| f.confirmed_at.is_some())
        && let Some(secret) = state
            .audit_key
            .open(&factor.sealed_secret, &seal_context(user_id))
        && let Some(step) = totp::verify(&secret, code, now, factor.last_step)
    {
        return Ok(use_step(tx, user_id, step, None)?.then_some(Proof::Totp));
    }
    if let Some(backup) = totp::normalize_backup_code(code)
        && use_backup_code(tx, user_id, &backup, now)?
    {
        return Ok(Some(Proof::BackupCode));
    }
    Ok(None)
}

fn seal_context(user_id: i64) -> Vec<u8> {
    format!("totp:user:{user_id}").into_bytes()
}

async fn challenge_submit(
    State(state): State<AppState>,
    client: ClientInfo,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> std::result::Result<Response, WebError> {
    let form = FormFields::parse(&body);
    let code = form.get("code").chars().take(64).collect::<String>();
    let state2 = state.clone();
    answer_challenge(&state, &client, &headers, move |tx, user, now| {
        check_code(tx, &state2, user.id, &code, now)
    })
    .await
}

/// Answers the pending two-step sign-in of the browser's challenge cookie
/// with `check` (a code, a passkey): inside one transaction, the challenge
/// and its user are read, the throttle is asked, `check` decides, and
/// either a session is made or the failure is counted and audited.
pub(super) async fn answer_challenge<F>(
    state: &AppState,
    client: &ClientInfo,
    headers: &HeaderMap,
    check: F,
) -> std::result::Result<Response, WebError>
where
    F: FnOnce(&mut Tx<'_>, &User, Millis) -> Result<Option<Proof>> + Send + 'static,
{
    let Some(cookie) = challenge_cookie(headers) else {
        return Ok(Redirect::to("/login").into_response());
    };
    let id_hash = secrets::hash_secret(cookie);
    let now = crate::now_millis();
    let max_failures = i64::from(state.config.mfa.max_code_failures);
    let policy = state.config.sign_in.clone();
    // Made before the transaction: used only if the code is right.
    // Its user is known once the challenge is read.
    let (new_cookie, new_session_row) = new_session(state, 0, client, now)?;
    let outcome = {
        let state2 = state.clone();
        let client = client.clone();
        state
            .db
            .write("second factor", move |tx| {
                let Some(pending) = challenge(tx, &id_hash, now)? else {
                    return Ok(ChallengeOutcome::Gone);
                };
                let Some(user) = store::user_by_id(tx, pending.user_id)?.filter(|u| !u.disabled)
                else {
                    tx.execute(
                        "DELETE FROM sign_in_challenges WHERE id_hash = $1",
                        params![&id_hash],
                    )?;
                    return Ok(ChallengeOutcome::Gone);
                };
                let keys =
                    throttle::Keys::new(&state2.audit_key, &user.username, client.ip.as_deref());
                if let Some(refusal) = throttle::check(tx, &policy, &keys, now)? {
                    tx.execute(
                        "DELETE FROM sign_in_challenges WHERE id_hash = $1",
                        params![&id_hash],
                    )?;
                    return Ok(ChallengeOutcome::Held(refusal));
                }
                let event = |outcome| {
                    NewAuditEvent::new(
                        now,
                        Actor::User(user.username.clone()),
                        Action::SecondFactor,
                        outcome,
                    )
                    .from_client(client.ip.clone(), client.user_agent.clone())
                };
                match check(tx, &user, now)? {
                    Some(proof) => {
                        tx.execute(
                            "DELETE FROM sign_in_challenges WHERE id_hash = $1",
                            params![&id_hash],
                        )?;
                        throttle::record_success(tx, &keys)?;
                        let cookie = new_cookie.clone();
                        super::login::record_sign_in(
                            tx,
                            &new_session_row,
                            &user,
                            &client,
                            now,
                            serde_json::json!({ "second_factor": proof.as_str() }),
                        )?;
                        let left = if proof == Proof::BackupCode {
                            Some(unused_backup_codes(tx, user.id)?)
                        } else {
                            None
                        };
                        Ok(ChallengeOutcome::Passed {
                            cookie,
                            user,
                            backup_codes_left: left,
                        })
                    }
                    None => {
                        let failures = pending.failures + 1;
                        let next = throttle::record_failure(tx, &policy, &keys, now)?;
                        let ended = failures >= max_failures
                            || matches!(next, Some(throttle::Refusal::Locked { .. }));
                        if ended {
                            tx.execute(
                                "DELETE FROM sign_in_challenges WHERE id_hash = $1",
                                params![&id_hash],
                            )?;
                        } else {
                            tx.execute(
                                "UPDATE sign_in_challenges SET failures = $2 WHERE id_hash = $1",
                                params![&id_hash, failures],
                            )?;
                        }
                        let mut details =
                            serde_json::json!({ "failures": failures, "challenge_ended": ended });
                        if let Some(throttle::Refusal::Locked { until }) = next {
                            details["locked_until"] = serde_json::json!(until);
                        }
                        crate::audit::store::append(tx, &event(Outcome::Failure).details(details))?;
                        Ok(ChallengeOutcome::Wrong {
                            ended,
                            locked: next.filter(|r| matches!(r, throttle::Refusal::Locked { .. })),
                        })
                    }
                }
            })
            .await?
    };
    match outcome {
        ChallengeOutcome::Gone => {
            let mut response = Redirect::to("/login").into_response();
            response
                .headers_mut()
                .insert(header::SET_COOKIE, clear_challenge_cookie());
            Ok(response)
        }
        ChallengeOutcome::Held(refusal) => {
            let message = refusal.message(now);
            challenge_page(
                state,
                headers,
                StatusCode::TOO_MANY_REQUESTS,
                &message,
                true,
            )
            .await
        }
        ChallengeOutcome::Wrong { ended, locked } => {
            let message = match locked {
                Some(refusal) => format!("{CODE_FAILED} {}", refusal.message(now)),
                None if ended => "Too many wrong codes: sign in again.".to_owned(),
                None => CODE_FAILED.to_owned(),
            };
            challenge_page(
                state,
                headers,
                StatusCode::UNAUTHORIZED,
                &message,
                ended || locked.is_some(),
            )
            .await
        }
        ChallengeOutcome::Passed {
            cookie,
            user,
            backup_codes_left,
        } => {
            tracing::info!(user = %user.username, "login with a second factor");
            let next = if super::account_http::password_change_due(state, &user, now) {
                "/account".to_owned()
            } else if let Some(left) = backup_codes_left {
                format!("/account/second-factor?backup_codes_left={left}")
            } else {
                "/hosts".to_owned()
            };
            let mut response = Redirect::to(&next).into_response();
            let headers = response.headers_mut();
            headers.append(header::SET_COOKIE, session_cookie_header(&cookie)?);
            headers.append(header::SET_COOKIE, clear_challenge_cookie());
            Ok(response)
        }
    }
}

enum ChallengeOutcome {
    Gone,
    Held(throttle::Refusal),
    Wrong {
        ended: bool,
        locked: Option<throttle::Refusal>,
    },
    Passed {
        cookie: String,
        user: User,
        backup_codes_left: Option<i64>,
    },
}

async fn challenge_page(
    state: &AppState,
    headers: &HeaderMap,
    status: StatusCode,
    message: &str,
    ended: bool,
) -> std::result::Result<Response, WebError> {
    let passkey_options = if ended {
        None
    } else {
        second_step_passkey_options(state, headers).await?
    };
    let page = ChallengePage {
        layout: Layout::anonymous(),
        error: Some(message),
        passkey_options,
    };
    let mut response = html(status, page.render()?);
    if ended {
        response
            .headers_mut()
            .insert(header::SET_COOKIE, clear_challenge_cookie());
    }
    Ok(response)
}

// ---------------------------------------------------------------------
// One's own factors.

#[derive(Template)]
#[template(path = "identity/templates/factors.html")]
struct FactorsPage {
    layout: Layout,
    enrolled: bool,
    required: bool,
    /// While enrolling: the QR code (SVG markup made here) and the seed.
    qr_svg: Option<String>,
    secret_text: String,
    /// Shown once, right after they were made.
    new_backup_codes: Vec<String>,
    backup_codes_left: i64,
    notice: Option<String>,
    error: Option<&'static str>,
    passkeys: Vec<PasskeyRow>,
    /// Whether a passkey may sign in without the password.
    passwordless: bool,
    /// The registration form's options: only with a recent sign-in (else
    /// the page links to `/reauth`).
    passkey_options: Option<String>,
}

/// A passkey as the factors page lists it.
struct PasskeyRow {
    id: String,
    name: String,
    created: String,
    last_used: String,
}

#[derive(Deserialize, Default)]
struct FactorsQuery {
    backup_codes_left: Option<i64>,
    done: Option<String>,
    passkey_error: Option<String>,
}

/// The signed-in user of a browser session, when they last proved who they
/// are, and the session's id hash (replaced at a privilege change).
pub(super) fn signed_in_user(
    caller: &Caller,
) -> std::result::Result<(User, Millis, Vec<u8>), WebError> {
    match (&caller.via, &caller.user) {
        (
            Via::Session {
                authenticated_at,
                id_hash,
                ..
            },
            Some(user),
        ) => Ok((user.clone(), *authenticated_at, id_hash.clone())),
        _ => Err(WebError::Forbidden(
            "second factors are managed in the browser",
        )),
    }
}

struct FactorState {
    enrolled: bool,
    pending: Option<TotpFactor>,
    required: bool,
    backup_codes_left: i64,
    passkeys: Vec<factor_store::Passkey>,
}

async fn factor_state(state: &AppState, user: &User) -> std::result::Result<FactorState, WebError> {
    let (state2, user) = (state.clone(), user.clone());
    Ok(state
        .db
        .read("own factors", move |tx| {
            let factor = totp_factor(tx, user.id)?;
            Ok(FactorState {
                enrolled: factor.as_ref().is_some_and(|f| f.confirmed_at.is_some()),
                pending: factor.filter(|f| f.confirmed_at.is_none()),
                required: enrollment_required(tx, &state2, &user)?,
                backup_codes_left: unused_backup_codes(tx, user.id)?,
                passkeys: factor_store::passkeys_of(tx, user.id)?,
            })
        })
        .await?)
}

async fn factors_page(
    State(state): State<AppState>,
    caller: Caller,
    Query(q): Query<FactorsQuery>,
) -> std::result::Result<Response, WebError> {
    let (user, ..) = signed_in_user(&caller)?;
    let notice = match (q.backup_codes_left, q.done.as_deref()) {
        (Some(left), _) => Some(format!(
            "You signed in with a backup code; {left} unused code{} left.",
            if left == 1 { "" } else { "s" }
        )),
        (_, Some("removed")) => Some("Your authenticator app was removed.".to_owned()),
        (_, Some("passkey_removed")) => Some("Your passkey was removed.".to_owned()),
        _ => None,
    };
    let error = q
        .passkey_error
        .as_deref()
        .and_then(super::passkeys::Problem::from_code)
        .map(super::passkeys::Problem::message);
    render_factors(
        &state,
        &caller,
        &user,
        Shown {
            notice,
            error,
            ..Shown::default()
        },
        StatusCode::OK,
    )
    .await
}

/// The factors page right after a passkey was added: the notice, and the
/// backup codes when the passkey was the account's first factor.
pub(super) async fn render_passkey_added(
    state: &AppState,
    caller: &Caller,
    user: &User,
    backup_codes: Vec<String>,
    notice: String,
) -> std::result::Result<Response, WebError> {
    render_factors(
        state,
        caller,
        user,
        Shown {
            backup_codes,
            notice: Some(notice),
            ..Shown::default()
        },
        StatusCode::OK,
    )
    .await
}

/// What a factors page shows besides the user's state.
#[derive(Default)]
struct Shown<'a> {
    /// While enrolling: the seed, shown as a QR code and as text.
    secret: Option<&'a [u8]>,
    /// Backup codes just made (shown once).
    backup_codes: Vec<String>,
    notice: Option<String>,
    error: Option<&'static str>,
}

async fn render_factors(
    state: &AppState,
    caller: &Caller,
    user: &User,
    shown: Shown<'_>,
    status: StatusCode,
) -> std::result::Result<Response, WebError> {
    let now_state = factor_state(state, user).await?;
    let Shown {
        secret,
        backup_codes: new_backup_codes,
        notice,
        error,
    } = shown;
    let (qr_svg, secret_text) = match secret {
        Some(secret) => {
            let uri = totp::otpauth_uri(&state.config.mfa.issuer, &user.username, secret);
            (
                Some(totp::qr_svg(&uri).map_err(WebError::internal)?),
                totp::secret_base32(secret),
            )
        }
        None => (None, String::new()),
    };
    let now = crate::now_millis();
    let recent = signed_in_user(caller)
        .is_ok_and(|(_, authenticated_at, _)| recently_authenticated(state, authenticated_at, now));
    let passkey_options = if recent {
        Some(super::passkeys::creation_options(
            state,
            user,
            &now_state.passkeys,
            now,
        )?)
    } else {
        None
    };
    let passkeys = now_state
        .passkeys
        .iter()
        .map(|p| PasskeyRow {
            id: p.id.clone(),
            name: p.name.clone(),
            created: crate::web::format::utc(p.created_at),
            last_used: p
                .last_used_at
                .map_or_else(|| "never".to_owned(), crate::web::format::utc),
        })
        .collect();
    let page = FactorsPage {
        layout: Layout::for_caller(caller),
        passkeys,
        passwordless: state.config.passkeys.passwordless,
        passkey_options,
        enrolled: now_state.enrolled,
        required: now_state.required,
        qr_svg,
        secret_text,
        new_backup_codes,
        backup_codes_left: now_state.backup_codes_left,
        notice,
        error,
    };
    Ok(html(status, page.render()?))
}

/// Starts an enrollment: a fresh seed, shown once as a QR code and text.
async fn totp_begin(
    State(state): State<AppState>,
    caller: Caller,
) -> std::result::Result<Response, WebError> {
    let (user, ..) = signed_in_user(&caller)?;
    let secret = totp::generate_secret().map_err(|_| WebError::internal("no randomness"))?;
    let sealed = state
        .audit_key
        .seal(&secret, &seal_context(user.id))
        .map_err(|_| WebError::internal("cannot seal the seed"))?;
    let now = crate::now_millis();
    let user_id = user.id;
    let started = state
        .db
        .write("begin totp", move |tx| {
            begin_totp(tx, user_id, &sealed, now)
        })
        .await?;
    if !started {
        return render_factors(
            &state,
            &caller,
            &user,
            Shown {
                error: Some(
                    "You already have an authenticator app: remove it first to set up another.",
                ),
                ..Shown::default()
            },
            StatusCode::CONFLICT,
        )
        .await;
    }
    render_factors(
        &state,
        &caller,
        &user,
        Shown {
            secret: Some(&secret),
            ..Shown::default()
        },
        StatusCode::OK,
    )
    .await
}

/// Confirms an enrollment with a first code; makes and shows the backup
/// codes; replaces the session (a privilege change gets a new id).
async fn totp_confirm(
    State(state): State<AppState>,
    caller: Caller,
    body: axum::body::Bytes,
) -> std::result::Result<Response, WebError> {
    let (user, _, old) = signed_in_user(&caller)?;
    let form = FormFields::parse(&body);
    let code = form.get("code").chars().take(64).collect::<String>();
    let now = crate::now_millis();
    let codes = totp::generate_backup_codes().map_err(|_| WebError::internal("no randomness"))?;
    let (cookie, session) = new_session(&state, user.id, &caller.client, now)?;
    let (state2, user_id, codes2) = (state.clone(), user.id, codes.clone());
    let ok_event = caller
        .event(now, Action::FactorEnroll, Outcome::Success)
        .target(user.username.clone())
        .details(serde_json::json!({ "factor": "totp" }));
    let bad_event = caller
        .event(now, Action::FactorEnroll, Outcome::Failure)
        .target(user.username.clone())
        .details(serde_json::json!({ "factor": "totp", "reason": "wrong_code" }));
    let confirmed = state
        .db
        .write("confirm totp", move |tx| {
            let Some(proof_at) = store::session_proof(tx, &old)? else {
                return Ok(false);
            };
            let Some(pending) = totp_factor(tx, user_id)?.filter(|f| f.confirmed_at.is_none())
            else {
                return Ok(false);
            };
            let step = state2
                .audit_key
                .open(&pending.sealed_secret, &seal_context(user_id))
                .and_then(|secret| totp::verify(&secret, &code, now, pending.last_step));
            let Some(step) = step else {
                crate::audit::store::append(tx, &bad_event)?;
                return Ok(false);
            };
            if !use_step(tx, user_id, step, Some(now))? {
                return Ok(false);
            }
            replace_backup_codes(tx, user_id, &codes2, now)?;
            // A new id, the same proof: enrolling is no re-authentication.
            store::replace_session(tx, &old, &session, proof_at)?;
            crate::audit::store::append(tx, &ok_event)?;
            Ok(true)
        })
        .await?;
    if !confirmed {
        // The same seed again, so the user can retry with the next code.
        let secret = factor_state(&state, &user).await?.pending.and_then(|f| {
            state
                .audit_key
                .open(&f.sealed_secret, &seal_context(user.id))
        });
        return render_factors(
            &state,
            &caller,
            &user,
            Shown {
                secret: secret.as_deref(),
                error: Some("That code is not valid: type the one your app shows now."),
                ..Shown::default()
            },
            StatusCode::BAD_REQUEST,
        )
        .await;
    }
    let mut response = render_factors(&state, &caller, &user, Shown { backup_codes: codes, notice: Some("Your authenticator app is set up. Keep these backup codes somewhere safe: each works once, and they are shown only now.".to_owned()), ..Shown::default() }, StatusCode::OK).await?;
    response
        .headers_mut()
        .insert(header::SET_COOKIE, session_cookie_header(&cookie)?);
    Ok(response)
}

/// New backup codes replace the old ones; needs a recent sign-in.
async fn backup_codes_regenerate(
    State(state): State<AppState>,
    caller: Caller,
) -> std::result::Result<Response, WebError> {
    let (user, authenticated_at, _) = signed_in_user(&caller)?;
    let now = crate::now_millis();
    if !recently_authenticated(&state, authenticated_at, now) {
        return Ok(reauth_redirect("/account/second-factor"));
    }
    let codes = totp::generate_backup_codes().map_err(|_| WebError::internal("no randomness"))?;
    let (user_id, codes2) = (user.id, codes.clone());
    let event = caller
        .event(now, Action::BackupCodesRegenerate, Outcome::Success)
        .target(user.username.clone());
    let done = state
        .db
        .write("new backup codes", move |tx| {
            if !has_second_factor(tx, user_id)? {
                return Ok(false);
            }
            replace_backup_codes(tx, user_id, &codes2, now)?;
            crate::audit::store::append(tx, &event)?;
            Ok(true)
        })
        .await?;
    if !done {
        return render_factors(
            &state,
            &caller,
            &user,
            Shown {
                error: Some("Set up an authenticator app first."),
                ..Shown::default()
            },
            StatusCode::CONFLICT,
        )
        .await;
    }
    render_factors(
        &state,
        &caller,
        &user,
        Shown {
            backup_codes: codes,
            notice: Some(
                "New backup codes; the old ones no longer work. They are shown only now."
                    .to_owned(),
            ),
            ..Shown::default()
        },
        StatusCode::OK,
    )
    .await
}

/// Removes one's own authenticator app; needs a recent sign-in, and is
/// refused when the policy requires a second factor and no passkey is left.
async fn factor_remove(
    State(state): State<AppState>,
    caller: Caller,
) -> std::result::Result<Response, WebError> {
    let (user, authenticated_at, _) = signed_in_user(&caller)?;
    let now = crate::now_millis();
    if !recently_authenticated(&state, authenticated_at, now) {
        return Ok(reauth_redirect("/account/second-factor"));
    }
    let (state2, user2) = (state.clone(), user.clone());
    let event = caller
        .event(now, Action::FactorRemove, Outcome::Success)
        .target(user.username.clone());
    let removed = state
        .db
        .write("remove factor", move |tx| {
            factor_store::lock_user(tx, user2.id)?;
            if enrollment_required(tx, &state2, &user2)?
                && factor_store::count_passkeys(tx, user2.id)? == 0
            {
                return Ok(false);
            }
            let had = factor_store::remove_totp(tx, user2.id)?;
            if had {
                crate::audit::store::append(tx, &event)?;
            }
            Ok(true)
        })
        .await?;
    if !removed {
        return render_factors(
            &state,
            &caller,
            &user,
            Shown {
                error: Some(
                    "Your role requires a second factor: add a passkey before you remove the app.",
                ),
                ..Shown::default()
            },
            StatusCode::FORBIDDEN,
        )
        .await;
    }
    Ok(Redirect::to("/account/second-factor?done=removed").into_response())
}

// ---------------------------------------------------------------------
// Reset by an administrator.

/// Removes user `id`'s second factors and ends their sessions. Returns the
/// user's name and whether they had a factor.
async fn reset_factors(
    state: &AppState,
    caller: &Caller,
    id: i64,
) -> std::result::Result<(String, bool), WebError> {
    let now = crate::now_millis();
    let event = caller.event(now, Action::FactorReset, Outcome::Success);
    state
        .db
        .write("reset factors", move |tx| {
            let Some(user) = store::user_by_id(tx, id)? else {
                return Ok(None);
            };
            let had = remove_factors(tx, id)?;
            let ended = store::end_sessions(tx, id, None)?;
            crate::audit::store::append(
                tx,
                &event
                    .clone()
                    .target(user.username.clone())
                    .details(serde_json::json!({ "had_factor": had, "sessions_ended": ended })),
            )?;
            Ok(Some((user.username, had)))
        })
        .await?
        .ok_or(WebError::NotFound("no such user"))
}

async fn reset_form(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<i64>,
) -> std::result::Result<Response, WebError> {
    reset_factors(&state, &caller, id).await?;
    Ok(Redirect::to(&format!("/users/{id}?done=factors")).into_response())
}

/// What a factor reset did.
#[derive(Debug, Serialize, ToSchema)]
pub struct FactorResetJson {
    username: String,
    /// Whether the user had a second factor to remove.
    had_factor: bool,
}

/// Removes a user's second factors (TOTP and backup codes) and ends their
/// sessions. Dangerous: a session needs a recent re-authentication.
#[utoipa::path(post, path = "/api/v1/users/{id}/factors/reset", tag = "identity",
    params(("id" = i64, Path, description = "the user's id")),
    responses((status = 200, description = "removed", body = FactorResetJson),
        (status = 404, description = "no such user")),
    security(("bearer" = [])))]
pub async fn reset_api(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<i64>,
) -> std::result::Result<Json<FactorResetJson>, WebError> {
    let (username, had_factor) = reset_factors(&state, &caller, id).await?;
    Ok(Json(FactorResetJson {
        username,
        had_factor,
    }))
}

/// The handlers' OpenAPI paths, for [`crate::web::openapi`].
pub(crate) fn openapi_paths() -> utoipa::openapi::OpenApi {
    #[derive(utoipa::OpenApi)]
    #[openapi(paths(reset_api))]
    struct Paths;
    <Paths as utoipa::OpenApi>::openapi()
}
