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
//! - **Re-authentication** (`/reauth`): the password, and the code when the
//!   user has a second factor, given again; the session is replaced by a
//!   fresh one whose `authenticated_at` is now. Routes whose permission is
//!   dangerous need it within `[mfa] reauth_window_secs` (see
//!   `access::caller`).
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
use super::{NewSession, User, store, throttle, totp};
use crate::access::{Caller, Permission, Via};
use crate::audit::{Action, Actor, NewAuditEvent, Outcome};
use crate::db::{Millis, Result, Row, Tx};
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
        .get("/reauth", Access::SignedIn, reauth_form)
        .post("/reauth", Access::SignedIn, reauth_submit)
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
// Storage.

/// A user's authenticator app.
#[derive(Debug, Clone)]
pub struct TotpFactor {
    pub sealed_secret: Vec<u8>,
    pub created_at: Millis,
    pub confirmed_at: Option<Millis>,
    pub last_step: Option<i64>,
}

pub fn totp_factor(tx: &mut Tx<'_>, user_id: i64) -> Result<Option<TotpFactor>> {
    tx.query_opt(
        "SELECT sealed_secret, created_at, confirmed_at, last_step FROM totp_factors WHERE user_id = $1",
        params![user_id],
        |row: &Row<'_>| {
            Ok(TotpFactor {
                sealed_secret: row.get(0)?,
                created_at: row.get(1)?,
                confirmed_at: row.get(2)?,
                last_step: row.get(3)?,
            })
        },
    )
}

/// Whether the user has a confirmed second factor.
pub fn has_second_factor(tx: &mut Tx<'_>, user_id: i64) -> Result<bool> {
    Ok(totp_factor(tx, user_id)?.is_some_and(|f| f.confirmed_at.is_some()))
}

/// Starts (or restarts) an enrollment: an unconfirmed seed. Refused (false)
/// when a confirmed one exists: it is removed first, knowingly.
fn begin_totp(tx: &mut Tx<'_>, user_id: i64, sealed: &[u8], now: Millis) -> Result<bool> {
    if totp_factor(tx, user_id)?.is_some_and(|f| f.confirmed_at.is_some()) {
        return Ok(false);
    }
    tx.execute(
        "DELETE FROM totp_factors WHERE user_id = $1",
        params![user_id],
    )?;
    tx.execute(
        "INSERT INTO totp_factors (user_id, sealed_secret, created_at) VALUES ($1, $2, $3)",
        params![user_id, sealed, now],
    )?;
    Ok(true)
}

/// Records that the code of `step` was used; false when that step (or a
/// later one) was used already, so a code passes once even under a race.
fn use_step(tx: &mut Tx<'_>, user_id: i64, step: i64, confirm_at: Option<Millis>) -> Result<bool> {
    Ok(tx.execute(
        "UPDATE totp_factors SET last_step = $2, confirmed_at = COALESCE(confirmed_at, $3)
         WHERE user_id = $1 AND (last_step IS NULL OR last_step < $2)",
        params![user_id, step, confirm_at],
    )? == 1)
}

fn replace_backup_codes(
    tx: &mut Tx<'_>,
    user_id: i64,
    codes: &[String],
    now: Millis,
) -> Result<()> {
    tx.execute(
        "DELETE FROM backup_codes WHERE user_id = $1",
        params![user_id],
    )?;
    for code in codes {
        tx.execute(
            "INSERT INTO backup_codes (user_id, code_hash, created_at) VALUES ($1, $2, $3)",
            params![user_id, &secrets::hash_secret(code), now],
        )?;
    }
    Ok(())
}

/// Uses a backup code; false when it is not one of the user's unused ones.
fn use_backup_code(tx: &mut Tx<'_>, user_id: i64, code: &str, now: Millis) -> Result<bool> {
    Ok(tx.execute(
        "UPDATE backup_codes SET used_at = $3 WHERE user_id = $1 AND code_hash = $2 AND used_at IS NULL",
        params![user_id, &secrets::hash_secret(code), now],
    )? == 1)
}

fn unused_backup_codes(tx: &mut Tx<'_>, user_id: i64) -> Result<i64> {
    tx.query_one(
        "SELECT COUNT(*) FROM backup_codes WHERE user_id = $1 AND used_at IS NULL",
        params![user_id],
        |row: &Row<'_>| row.get(0),
    )
}

/// Removes every second factor of the user. Returns whether there was one.
pub fn remove_factors(tx: &mut Tx<'_>, user_id: i64) -> Result<bool> {
    let removed = tx.execute(
        "DELETE FROM totp_factors WHERE user_id = $1",
        params![user_id],
    )?;
    tx.execute(
        "DELETE FROM backup_codes WHERE user_id = $1",
        params![user_id],
    )?;
    Ok(removed > 0)
}

struct Challenge {
    user_id: i64,
    failures: i64,
}

fn challenge(tx: &mut Tx<'_>, id_hash: &[u8], now: Millis) -> Result<Option<Challenge>> {
    tx.query_opt(
        "SELECT user_id, failures FROM sign_in_challenges WHERE id_hash = $1 AND expires_at > $2",
        params![id_hash, now],
        |row: &Row<'_>| {
            Ok(Challenge {
                user_id: row.get(0)?,
                failures: row.get(1)?,
            })
        },
    )
}

/// Forgets pending sign-ins that expired (called by the throttle's sweep).
pub fn forget_expired_challenges(tx: &mut Tx<'_>, now: Millis) -> Result<u64> {
    tx.execute(
        "DELETE FROM sign_in_challenges WHERE expires_at <= $1",
        params![now],
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
}

async fn challenge_form(headers: HeaderMap) -> std::result::Result<Response, WebError> {
    if challenge_cookie(&headers).is_none() {
        return Ok(Redirect::to("/login").into_response());
    }
    let page = ChallengePage {
        layout: Layout::anonymous(),
        error: None,
    };
    Ok(html(StatusCode::OK, page.render()?))
}

/// Which kind of code was accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Proof {
    Totp,
    BackupCode,
}

impl Proof {
    pub fn as_str(self) -> &'static str {
        match self {
            Proof::Totp => "totp",
            Proof::BackupCode => "backup_code",
        }
    }
}

/// Checks `code` (a TOTP code or a backup code) for `user_id` and uses it.
/// `None` when it is not valid (or was used already).
fn check_code(
    tx: &mut Tx<'_>,
    state: &AppState,
    user_id: i64,
    code: &str,
    now: Millis,
) -> Result<Option<Proof>> {
    let Some(factor) = totp_factor(tx, user_id)?.filter(|f| f.confirmed_at.is_some()) else {
        return Ok(None);
    };
    if let Some(secret) = state
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
    let Some(cookie) = challenge_cookie(&headers) else {
        return Ok(Redirect::to("/login").into_response());
    };
    let form = FormFields::parse(&body);
    let code = form.get("code").chars().take(64).collect::<String>();
    let id_hash = secrets::hash_secret(cookie);
    let now = crate::now_millis();
    let max_failures = i64::from(state.config.mfa.max_code_failures);
    let policy = state.config.sign_in.clone();
    // Made before the transaction: used only if the code is right.
    // Its user is known once the challenge is read.
    let (new_cookie, new_session_row) = new_session(&state, 0, &client, now)?;
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
                match check_code(tx, &state2, user.id, &code, now)? {
                    Some(proof) => {
                        tx.execute(
                            "DELETE FROM sign_in_challenges WHERE id_hash = $1",
                            params![&id_hash],
                        )?;
                        throttle::record_success(tx, &keys)?;
                        let cookie = new_cookie.clone();
                        let session = NewSession {
                            user_id: user.id,
                            ..new_session_row.clone()
                        };
                        store::create_session(tx, &session)?;
                        crate::audit::store::append(
                            tx,
                            &NewAuditEvent::new(
                                now,
                                Actor::User(user.username.clone()),
                                Action::AuthLogin,
                                Outcome::Success,
                            )
                            .from_client(client.ip.clone(), client.user_agent.clone())
                            .details(serde_json::json!({ "second_factor": proof.as_str() })),
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
            challenge_page(StatusCode::TOO_MANY_REQUESTS, &message, true)
        }
        ChallengeOutcome::Wrong { ended, locked } => {
            let message = match locked {
                Some(refusal) => format!("{CODE_FAILED} {}", refusal.message(now)),
                None if ended => "Too many wrong codes: sign in again.".to_owned(),
                None => CODE_FAILED.to_owned(),
            };
            challenge_page(
                StatusCode::UNAUTHORIZED,
                &message,
                ended || locked.is_some(),
            )
        }
        ChallengeOutcome::Passed {
            cookie,
            user,
            backup_codes_left,
        } => {
            tracing::info!(user = %user.username, "login with a second factor");
            let next = if super::account_http::password_change_due(&state, &user, now) {
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

fn challenge_page(
    status: StatusCode,
    message: &str,
    ended: bool,
) -> std::result::Result<Response, WebError> {
    let page = ChallengePage {
        layout: Layout::anonymous(),
        error: Some(message),
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
}

#[derive(Deserialize, Default)]
struct FactorsQuery {
    backup_codes_left: Option<i64>,
    done: Option<String>,
}

/// The signed-in user of a browser session, when they last proved who they
/// are, and the session's id hash (replaced at a privilege change).
fn signed_in_user(caller: &Caller) -> std::result::Result<(User, Millis, Vec<u8>), WebError> {
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
        _ => None,
    };
    render_factors(
        &state,
        &caller,
        &user,
        Shown {
            notice,
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
    let page = FactorsPage {
        layout: Layout::for_caller(caller),
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
            store::delete_session(tx, &old)?;
            store::create_session(tx, &session)?;
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
/// refused when the policy requires a second factor.
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
            if enrollment_required(tx, &state2, &user2)? {
                return Ok(false);
            }
            let had = remove_factors(tx, user2.id)?;
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
                error: Some("Your role requires a second factor: it cannot be removed."),
                ..Shown::default()
            },
            StatusCode::FORBIDDEN,
        )
        .await;
    }
    Ok(Redirect::to("/account/second-factor?done=removed").into_response())
}

// ---------------------------------------------------------------------
// Re-authentication.

/// Where the browser goes to prove itself again before `next`.
pub fn reauth_redirect(next: &str) -> Response {
    let next: String = form_urlencoded::byte_serialize(local_path(next).as_bytes()).collect();
    Redirect::to(&format!("/reauth?next={next}")).into_response()
}

/// `next` if it is a path on this site, else the hosts page (no open
/// redirect).
fn local_path(next: &str) -> &str {
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
    let (user, ..) = signed_in_user(&caller)?;
    let user_id = user.id;
    let needs_code = state
        .db
        .read("has factor", move |tx| has_second_factor(tx, user_id))
        .await?;
    let page = ReauthPage {
        layout: Layout::for_caller(&caller),
        next: local_path(q.next.as_deref().unwrap_or("/hosts")),
        needs_code,
        error: None,
    };
    Ok(html(StatusCode::OK, page.render()?))
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
    let render = |status: StatusCode, error: &str| -> std::result::Result<Response, WebError> {
        let page = ReauthPage {
            layout: Layout::for_caller(&caller),
            next: &next,
            needs_code,
            error: Some(error),
        };
        Ok(html(status, page.render()?))
    };
    if let Some(refusal) = held {
        return render(StatusCode::TOO_MANY_REQUESTS, &refusal.message(now));
    }
    let permit = state
        .hashing
        .clone()
        .acquire_owned()
        .await
        .map_err(WebError::internal)?;
    let stored = user.password_hash.clone();
    let password_ok = tokio::task::spawn_blocking(move || {
        let _permit = permit;
        secrets::verify_password(&password, &stored)
    })
    .await
    .map_err(WebError::internal)?;
    let (cookie, session) = new_session(&state, user_id, &caller.client, now)?;
    let (state2, keys2) = (state.clone(), keys.clone());
    let ok_event = caller.event(now, Action::Reauthenticate, Outcome::Success);
    let bad_event = caller.event(now, Action::Reauthenticate, Outcome::Failure);
    let passed = state
        .db
        .write("reauthenticate", move |tx| {
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
            store::delete_session(tx, &old)?;
            store::create_session(tx, &session)?;
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
        return render(StatusCode::UNAUTHORIZED, message);
    }
    let mut response = Redirect::to(&next).into_response();
    response
        .headers_mut()
        .insert(header::SET_COOKIE, session_cookie_header(&cookie)?);
    Ok(response)
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
