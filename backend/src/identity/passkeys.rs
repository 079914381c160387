//! Passkeys (WebAuthn credentials): a second factor beside the
//! authenticator app, and, where `[passkeys] passwordless` allows it, a
//! sign-in of their own.
//!
//! The ceremonies are server-rendered forms: a page carries the options
//! (`data-options`), the page script (`web/static/app.js`) asks the browser
//! for the credential, puts the answer in hidden fields and posts the form.
//! Without JavaScript the passkey forms stay hidden and everything else
//! works. The checks themselves are in [`super::webauthn`].
//!
//! - **Register** (`/account/passkeys`): from the second-factor page, with a
//!   recent sign-in (a stolen session must not add a way back in). The first
//!   factor of an account also brings its 10 backup codes. The session id is
//!   replaced (a privilege change).
//! - **Second step of a sign-in** (`/login/second-factor/passkey`): answers
//!   the pending challenge like a code does, through the same
//!   [`super::factors::answer_challenge`] (throttle, audit, session).
//! - **Passwordless** (`/login/passkey`): a discoverable passkey that
//!   verified its user (PIN, biometrics) signs in alone.
//! - **Re-authentication** (`/reauth/passkey`): a user-verified passkey
//!   proves the user again.
//!
//! Invariants: a ceremony's challenge is sealed with the backend's key and
//! bound to its purpose and user (nothing is written when one is handed out,
//! so anonymous page views cost no database write); an answered challenge
//! is recorded until it expires, so it is answered once; the signature
//! counter moves forward with a compare-and-set, and one that goes back is
//! refused (a cloned authenticator); wrong answers count in the same
//! throttle as wrong passwords.

use askama::Template;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::json;

use super::auth::{ClientInfo, new_session, session_cookie, session_cookie_header};
use super::factor_store::{self, Passkey};
use super::factors::{self, Proof};
use super::{User, reauth, store, throttle, totp, webauthn};
use crate::access::Caller;
use crate::audit::{Action, Actor, NewAuditEvent, Outcome};
use crate::db::{Millis, Result, Tx};
use crate::secrets;
use crate::state::AppState;
use crate::web::form::FormFields;
use crate::web::layout::Layout;
use crate::web::{Access, Routes, WebError, html};

/// How long a ceremony's challenge may be answered.
const CEREMONY_MILLIS: Millis = 5 * 60 * 1000;
/// Random bytes in a challenge (besides its expiry).
const CHALLENGE_RANDOM_BYTES: usize = 16;
/// Longest name a user may give a passkey.
const MAX_NAME: usize = 64;
/// Longest base64url field of an answer we decode (an attestation object
/// is bounded at 64 KiB by the verifier).
const MAX_FIELD: usize = 96 * 1024;

pub fn routes() -> Routes {
    Routes::new()
        .post("/account/passkeys", Access::SignedIn, register)
        .post("/account/passkeys/{id}/remove", Access::SignedIn, remove)
        .post(
            "/login/second-factor/passkey",
            Access::Public,
            second_factor,
        )
        .post("/login/passkey", Access::Public, passwordless)
        .post("/reauth/passkey", Access::SignedIn, reauth)
}

// ---------------------------------------------------------------------
// Ceremonies.

/// What a challenge was handed out for; part of what it is sealed to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Purpose {
    Register,
    SecondFactor,
    SignIn,
    Reauth,
}

impl Purpose {
    fn as_str(self) -> &'static str {
        match self {
            Purpose::Register => "register",
            Purpose::SecondFactor => "second_factor",
            Purpose::SignIn => "sign_in",
            Purpose::Reauth => "reauth",
        }
    }
}

/// What a challenge is sealed to: its purpose and user (0: not known yet).
fn seal_context(purpose: Purpose, user_id: i64) -> Vec<u8> {
    format!("passkey:{}:user:{user_id}", purpose.as_str()).into_bytes()
}

/// A fresh challenge: its expiry and random bytes, sealed to `purpose` and
/// `user_id`. Nothing is stored.
fn new_challenge(
    state: &AppState,
    purpose: Purpose,
    user_id: i64,
    now: Millis,
) -> std::result::Result<Vec<u8>, WebError> {
    let mut plain = now.saturating_add(CEREMONY_MILLIS).to_be_bytes().to_vec();
    let mut random = [0u8; CHALLENGE_RANDOM_BYTES];
    ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut random)
        .map_err(|_| WebError::internal("no randomness"))?;
    plain.extend_from_slice(&random);
    state
        .audit_key
        .seal(&plain, &seal_context(purpose, user_id))
        .map_err(|_| WebError::internal("cannot seal a passkey challenge"))
}

/// When `challenge` expires, if it is one of ours for `purpose` and
/// `user_id` and has not expired.
fn challenge_expiry(
    state: &AppState,
    challenge: &[u8],
    purpose: Purpose,
    user_id: i64,
    now: Millis,
) -> Option<Millis> {
    let plain = state
        .audit_key
        .open(challenge, &seal_context(purpose, user_id))?;
    let expires_at = Millis::from_be_bytes(plain.get(..8)?.try_into().ok()?);
    (expires_at > now).then_some(expires_at)
}

/// The opaque handle authenticators keep for a user: a keyed digest of
/// the user's id (no name, nothing to enumerate).
fn user_handle(state: &AppState, user_id: i64) -> Vec<u8> {
    hex::decode(
        state
            .audit_key
            .name_digest(&format!("passkey user {user_id}")),
    )
    .unwrap_or_default()
}

fn b64(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

/// `PublicKeyCredentialCreationOptions` for registering a passkey of
/// `user`, as the page script reads them.
pub(super) fn creation_options(
    state: &AppState,
    user: &User,
    existing: &[Passkey],
    now: Millis,
) -> std::result::Result<String, WebError> {
    let rp = state.config.relying_party();
    let challenge = new_challenge(state, Purpose::Register, user.id, now)?;
    let options = json!({
        "challenge": b64(&challenge),
        "rp": { "id": rp.id, "name": state.config.mfa.issuer },
        "user": {
            "id": b64(&user_handle(state, user.id)),
            "name": user.username,
            "displayName": user.username,
        },
        "pubKeyCredParams": webauthn::ALGORITHMS
            .iter()
            .map(|alg| json!({ "type": "public-key", "alg": alg }))
            .collect::<Vec<_>>(),
        "excludeCredentials": descriptors(existing),
        "authenticatorSelection": { "residentKey": "preferred", "userVerification": "preferred" },
        "attestation": "none",
        "timeout": CEREMONY_MILLIS,
    });
    Ok(options.to_string())
}

/// `PublicKeyCredentialRequestOptions` for `purpose`: the user's passkeys
/// when the user is known, any discoverable one otherwise.
pub(super) fn request_options(
    state: &AppState,
    purpose: Purpose,
    user_id: i64,
    allowed: &[Passkey],
    now: Millis,
) -> std::result::Result<String, WebError> {
    let challenge = new_challenge(state, purpose, user_id, now)?;
    let options = json!({
        "challenge": b64(&challenge),
        "rpId": state.config.relying_party().id,
        "allowCredentials": descriptors(allowed),
        "userVerification": if requires_user_verification(purpose) { "required" } else { "preferred" },
        "timeout": CEREMONY_MILLIS,
    });
    Ok(options.to_string())
}

/// A passkey that replaces the password (or proves the user again) must
/// have verified its user; as a second factor after the password, presence
/// is enough.
fn requires_user_verification(purpose: Purpose) -> bool {
    matches!(purpose, Purpose::SignIn | Purpose::Reauth)
}

fn descriptors(passkeys: &[Passkey]) -> Vec<serde_json::Value> {
    passkeys
        .iter()
        .map(|p| json!({ "type": "public-key", "id": b64(&p.credential_id) }))
        .collect()
}

/// The options of a passwordless sign-in for the sign-in page, or `None`
/// when the policy does not allow one.
pub fn sign_in_options(state: &AppState) -> std::result::Result<Option<String>, WebError> {
    if !state.config.passkeys.passwordless {
        return Ok(None);
    }
    request_options(state, Purpose::SignIn, 0, &[], crate::now_millis()).map(Some)
}

/// A base64url field of a posted answer; `None` when missing or malformed.
fn field(form: &FormFields, name: &str) -> Option<Vec<u8>> {
    let text = form.get(name);
    if text.is_empty() || text.len() > MAX_FIELD {
        return None;
    }
    URL_SAFE_NO_PAD.decode(text).ok()
}

/// A posted `navigator.credentials.get()` answer.
#[derive(Debug, Clone)]
pub(super) struct AssertionAnswer {
    credential_id: Vec<u8>,
    client_data: Vec<u8>,
    authenticator_data: Vec<u8>,
    signature: Vec<u8>,
    user_handle: Option<Vec<u8>>,
}

impl AssertionAnswer {
    fn parse(form: &FormFields) -> Option<AssertionAnswer> {
        Some(AssertionAnswer {
            credential_id: field(form, "credential_id")?,
            client_data: field(form, "client_data")?,
            authenticator_data: field(form, "authenticator_data")?,
            signature: field(form, "signature")?,
            user_handle: field(form, "user_handle"),
        })
    }
}

/// Checks an assertion for `purpose` and uses it: the challenge is ours,
/// unexpired, for this purpose and user, and not answered before; the
/// credential is registered (to `expected_user`, when given); the
/// signature verifies; the counter moves forward. Returns the passkey, or
/// `None` (logged, never said to the browser beyond "not valid").
fn use_assertion(
    tx: &mut Tx<'_>,
    state: &AppState,
    purpose: Purpose,
    expected_user: Option<i64>,
    answer: &AssertionAnswer,
    now: Millis,
) -> Result<Option<Passkey>> {
    let refuse = |why: &dyn std::fmt::Display| {
        tracing::info!(purpose = purpose.as_str(), reason = %why, "passkey refused");
        Ok(None)
    };
    let Ok(challenge) = webauthn::client_data_challenge(&answer.client_data) else {
        return refuse(&"malformed client data");
    };
    let Some(expires_at) =
        challenge_expiry(state, &challenge, purpose, expected_user.unwrap_or(0), now)
    else {
        return refuse(&"not a live challenge of this ceremony");
    };
    let Some(passkey) = factor_store::passkey_by_credential(tx, &answer.credential_id)? else {
        return refuse(&"unknown credential");
    };
    if expected_user.is_some_and(|id| id != passkey.user_id) {
        return refuse(&"another user's credential");
    }
    if let Some(handle) = &answer.user_handle
        && *handle != user_handle(state, passkey.user_id)
    {
        return refuse(&"the user handle is not the credential's user");
    }
    // Spent once presented with a registered credential, whatever the
    // outcome: a replay is told apart from a cloned authenticator.
    if !factor_store::use_passkey_challenge(tx, &challenge, expires_at)? {
        return refuse(&"challenge answered before");
    }
    let stored_count = u32::try_from(passkey.sign_count).unwrap_or(u32::MAX);
    let verified = webauthn::verify_assertion(
        &state.config.relying_party(),
        &challenge,
        &passkey.public_key,
        stored_count,
        &answer.client_data,
        &answer.authenticator_data,
        &answer.signature,
        requires_user_verification(purpose),
    );
    let assertion = match verified {
        Ok(assertion) => assertion,
        Err(e @ webauthn::Error::CounterWentBack) => {
            // A signature that verifies with a counter that went back: a
            // copy of the authenticator may exist. Said where operators
            // look, besides being refused.
            if let Some(owner) = store::user_by_id(tx, passkey.user_id)? {
                crate::audit::store::append(
                    tx,
                    &NewAuditEvent::new(
                        now,
                        Actor::Anonymous,
                        Action::PasskeyCloneSuspected,
                        Outcome::Denied,
                    )
                    .target(owner.username)
                    .details(json!({
                        "passkey": passkey.id,
                        "name": passkey.name,
                        "stored_sign_count": passkey.sign_count,
                    })),
                )?;
            }
            return refuse(&e);
        }
        Err(e) => return refuse(&e),
    };
    if !factor_store::record_passkey_use(
        tx,
        &passkey.id,
        passkey.sign_count,
        i64::from(assertion.sign_count),
        now,
    )? {
        return refuse(&"used concurrently");
    }
    Ok(Some(passkey))
}

// ---------------------------------------------------------------------
// One's own passkeys.

/// Registers a passkey from the second-factor page's form.
async fn register(
    State(state): State<AppState>,
    caller: Caller,
    body: axum::body::Bytes,
) -> std::result::Result<Response, WebError> {
    let (user, authenticated_at, old) = factors::signed_in_user(&caller)?;
    let now = crate::now_millis();
    // A password someone else set proves only that one has it: no lasting
    // way in is added with it.
    if super::account_http::password_change_due(&state, &user, now) {
        return Ok(Problem::PasswordFirst.redirect());
    }
    if !factors::recently_authenticated(&state, authenticated_at, now) {
        return Ok(reauth::reauth_redirect("/account/second-factor"));
    }
    let form = FormFields::parse(&body);
    let name = {
        let typed = super::auth::truncate(form.get("name").trim(), MAX_NAME);
        if typed.is_empty() {
            "Passkey".to_owned()
        } else {
            typed
        }
    };
    let refused = |problem: Problem| problem.redirect();
    let (Some(credential_id), Some(client_data), Some(attestation)) = (
        field(&form, "credential_id"),
        field(&form, "client_data"),
        field(&form, "attestation_object"),
    ) else {
        return Ok(refused(Problem::Missing));
    };
    let Ok(challenge) = webauthn::client_data_challenge(&client_data) else {
        return Ok(refused(Problem::Missing));
    };
    let Some(expires_at) = challenge_expiry(&state, &challenge, Purpose::Register, user.id, now)
    else {
        return Ok(refused(Problem::Expired));
    };
    let credential = match webauthn::verify_registration(
        &state.config.relying_party(),
        &challenge,
        &client_data,
        &attestation,
        false,
    ) {
        Ok(credential) => credential,
        Err(e) => {
            tracing::info!(user = %user.username, reason = %e, "passkey registration refused");
            return Ok(refused(Problem::Unverified));
        }
    };
    // The id the browser gave is the one the authenticator attested.
    if credential.id != credential_id {
        return Ok(refused(Problem::Unverified));
    }
    let passkey = Passkey {
        id: uuid::Uuid::new_v4().to_string(),
        user_id: user.id,
        credential_id: credential.id.clone(),
        public_key: credential.public_key.clone(),
        algorithm: credential.algorithm,
        sign_count: i64::from(credential.sign_count),
        name: name.clone(),
        created_at: now,
        last_used_at: None,
    };
    let codes = totp::generate_backup_codes().map_err(|_| WebError::internal("no randomness"))?;
    let (cookie, session) = new_session(&state, user.id, &caller.client, now)?;
    let event = caller
        .event(now, Action::FactorEnroll, Outcome::Success)
        .target(user.username.clone())
        .details(json!({
            "factor": "passkey",
            "name": name,
            "algorithm": credential.algorithm,
            "user_verified": credential.user_verified,
        }));
    let state2 = state.clone();
    let outcome = state
        .db
        .write("register passkey", move |tx| {
            // The user as it is now, and the session still alive: a reset
            // or a sign-out that came first wins.
            factor_store::lock_user(tx, passkey.user_id)?;
            let still = store::user_by_id(tx, passkey.user_id)?.filter(|u| {
                !u.disabled && !super::account_http::password_change_due(&state2, u, now)
            });
            let Some(proof_at) = store::session_proof(tx, &old)?.filter(|_| still.is_some()) else {
                return Ok(Registered::SessionEnded);
            };
            if !factor_store::use_passkey_challenge(tx, &challenge, expires_at)? {
                return Ok(Registered::Replayed);
            }
            let first = !factor_store::has_second_factor(tx, passkey.user_id)?;
            if !factor_store::add_passkey(tx, &passkey)? {
                return Ok(Registered::Duplicate);
            }
            // The first factor of the account brings the backup codes.
            let codes = if first {
                factor_store::replace_backup_codes(tx, passkey.user_id, &codes, now)?;
                codes
            } else {
                Vec::new()
            };
            // A new id, the same proof: adding a factor is no
            // re-authentication.
            store::replace_session(tx, &old, &session, proof_at)?;
            crate::audit::store::append(tx, &event)?;
            Ok(Registered::Added { codes })
        })
        .await?;
    let codes = match outcome {
        Registered::SessionEnded => return Ok(Redirect::to("/login").into_response()),
        Registered::Replayed => return Ok(refused(Problem::Expired)),
        Registered::Duplicate => return Ok(refused(Problem::Duplicate)),
        Registered::Added { codes } => codes,
    };
    let notice = if codes.is_empty() {
        "Your passkey was added.".to_owned()
    } else {
        "Your passkey was added. Keep these backup codes somewhere safe: each works once, \
         and they are shown only now."
            .to_owned()
    };
    let mut response = factors::render_passkey_added(&state, &caller, &user, codes, notice).await?;
    response
        .headers_mut()
        .insert(header::SET_COOKIE, session_cookie_header(&cookie)?);
    Ok(response)
}

/// Why a passkey was not added or removed: named in the redirect to the
/// second-factor page, which words it (no text travels in the address).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Problem {
    Missing,
    Expired,
    Unverified,
    Duplicate,
    Unknown,
    Last,
    PasswordFirst,
}

impl Problem {
    const ALL: [Problem; 7] = [
        Problem::Missing,
        Problem::Expired,
        Problem::Unverified,
        Problem::Duplicate,
        Problem::Unknown,
        Problem::Last,
        Problem::PasswordFirst,
    ];

    fn code(self) -> &'static str {
        match self {
            Problem::Missing => "missing",
            Problem::Expired => "expired",
            Problem::Unverified => "unverified",
            Problem::Duplicate => "duplicate",
            Problem::Unknown => "unknown",
            Problem::Last => "last",
            Problem::PasswordFirst => "password_first",
        }
    }

    /// The problem a redirect named, if it is one.
    pub(super) fn from_code(code: &str) -> Option<Problem> {
        Problem::ALL.into_iter().find(|p| p.code() == code)
    }

    pub(super) fn message(self) -> &'static str {
        match self {
            Problem::Missing => "Your browser sent no passkey.",
            Problem::Expired => "That passkey request expired or was used already: try again.",
            Problem::Unverified => "That passkey could not be verified.",
            Problem::Duplicate => "That passkey is registered already.",
            Problem::Unknown => "You have no such passkey.",
            Problem::Last => "Your role requires a second factor: this passkey is your last one.",
            Problem::PasswordFirst => "Choose your own password first, then add a passkey.",
        }
    }

    fn redirect(self) -> Response {
        Redirect::to(&format!(
            "/account/second-factor?passkey_error={}",
            self.code()
        ))
        .into_response()
    }
}

enum Registered {
    SessionEnded,
    Replayed,
    Duplicate,
    Added { codes: Vec<String> },
}

/// Removes one of one's passkeys; needs a recent sign-in, and is refused
/// when the policy requires a second factor and it is the last one.
async fn remove(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> std::result::Result<Response, WebError> {
    let (user, authenticated_at, _) = factors::signed_in_user(&caller)?;
    let now = crate::now_millis();
    if !factors::recently_authenticated(&state, authenticated_at, now) {
        return Ok(reauth::reauth_redirect("/account/second-factor"));
    }
    let (state2, user2) = (state.clone(), user.clone());
    let event = caller
        .event(now, Action::FactorRemove, Outcome::Success)
        .target(user.username.clone());
    let removed = state
        .db
        .write("remove passkey", move |tx| {
            factor_store::lock_user(tx, user2.id)?;
            let mine = factor_store::passkeys_of(tx, user2.id)?;
            let Some(passkey) = mine.iter().find(|p| p.id == id) else {
                return Ok(Err(Problem::Unknown));
            };
            let others = mine.len() > 1
                || factor_store::totp_factor(tx, user2.id)?
                    .is_some_and(|f| f.confirmed_at.is_some());
            if !others && factors::enrollment_required(tx, &state2, &user2)? {
                return Ok(Err(Problem::Last));
            }
            factor_store::remove_passkey(tx, user2.id, &passkey.id)?;
            crate::audit::store::append(
                tx,
                &event
                    .clone()
                    .details(json!({ "factor": "passkey", "name": passkey.name })),
            )?;
            Ok(Ok(()))
        })
        .await?;
    Ok(match removed {
        Ok(()) => Redirect::to("/account/second-factor?done=passkey_removed").into_response(),
        Err(problem) => problem.redirect(),
    })
}

// ---------------------------------------------------------------------
// Signing in.

/// The second step of a sign-in, answered with a passkey.
async fn second_factor(
    State(state): State<AppState>,
    client: ClientInfo,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> std::result::Result<Response, WebError> {
    let answer = AssertionAnswer::parse(&FormFields::parse(&body));
    let state2 = state.clone();
    factors::answer_challenge(&state, &client, &headers, move |tx, user, now| {
        let Some(answer) = answer else {
            return Ok(None);
        };
        Ok(use_assertion(
            tx,
            &state2,
            Purpose::SecondFactor,
            Some(user.id),
            &answer,
            now,
        )?
        .map(|_| Proof::Passkey))
    })
    .await
}

/// What a passkey that does not sign in is answered.
pub const PASSKEY_FAILED: &str = "That passkey did not sign you in.";

/// A passwordless sign-in: a discoverable passkey that verified its user.
async fn passwordless(
    State(state): State<AppState>,
    client: ClientInfo,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> std::result::Result<Response, WebError> {
    if !state.config.passkeys.passwordless {
        return Err(WebError::NotFound("no such page"));
    }
    let now = crate::now_millis();
    let answer = AssertionAnswer::parse(&FormFields::parse(&body));
    let policy = state.config.sign_in.clone();
    let old = session_cookie(&headers).map(secrets::hash_secret);
    let (cookie, session) = new_session(&state, 0, &client, now)?;
    let state2 = state.clone();
    let client2 = client.clone();
    let outcome = state
        .db
        .write("passwordless sign-in", move |tx| {
            // The credential's user, when it names one, is throttled as
            // the account; else only the address counts.
            let owner = match &answer {
                Some(a) => factor_store::passkey_by_credential(tx, &a.credential_id)?
                    .map(|p| p.user_id)
                    .map(|id| store::user_by_id(tx, id))
                    .transpose()?
                    .flatten(),
                None => None,
            };
            let keys = throttle::Keys {
                account: match &owner {
                    Some(user) => {
                        throttle::Keys::new(&state2.audit_key, &user.username, None).account
                    }
                    // Each unknown credential counts on its own, so no
                    // shared key can be locked to tell known ones apart.
                    None => format!(
                        "passkey:{}",
                        hex::encode(
                            &ring::digest::digest(
                                &ring::digest::SHA256,
                                answer.as_ref().map_or(&[][..], |a| &a.credential_id),
                            )
                            .as_ref()[..16]
                        )
                    ),
                },
                address: throttle::Keys::new(&state2.audit_key, "", client2.ip.as_deref()).address,
            };
            if let Some(refusal) = throttle::check(tx, &policy, &keys, now)? {
                return Ok(SignIn::Held(refusal));
            }
            let used = match &answer {
                Some(answer) => use_assertion(tx, &state2, Purpose::SignIn, None, answer, now)?,
                None => None,
            };
            let user = used
                .and(owner)
                .filter(|user| !user.disabled && !user.must_change_password);
            let Some(user) = user else {
                let next = throttle::record_failure(tx, &policy, &keys, now)?;
                return Ok(SignIn::Failed(next));
            };
            throttle::record_success(tx, &keys)?;
            if let Some(old) = &old {
                store::delete_session(tx, old)?;
            }
            super::login::record_sign_in(
                tx,
                &session,
                &user,
                &client2,
                now,
                json!({ "passwordless": "passkey" }),
            )?;
            Ok(SignIn::Passed(user))
        })
        .await?;
    let message = match outcome {
        SignIn::Passed(user) => {
            tracing::info!(user = %user.username, "login with a passkey");
            return super::login::signed_in(&state, &user, &cookie, now);
        }
        SignIn::Held(refusal) => refusal.message(now),
        SignIn::Failed(Some(refusal @ throttle::Refusal::Locked { .. })) => {
            format!("{PASSKEY_FAILED} {}", refusal.message(now))
        }
        SignIn::Failed(_) => PASSKEY_FAILED.to_owned(),
    };
    let event = NewAuditEvent::new(now, Actor::Anonymous, Action::AuthLogin, Outcome::Failure)
        .from_client(client.ip.clone(), client.user_agent.clone())
        .details(json!({ "passwordless": "passkey" }));
    crate::audit::limits::append_unauthenticated(&state, client.ip.as_deref(), event).await?;
    let page = super::login::LoginPage {
        layout: Layout::anonymous(),
        username: "",
        error: Some(&message),
        request_id: None,
        passkey_options: sign_in_options(&state)?,
    };
    Ok(html(StatusCode::UNAUTHORIZED, page.render()?))
}

enum SignIn {
    Passed(User),
    Held(throttle::Refusal),
    Failed(Option<throttle::Refusal>),
}

/// Re-authentication with a passkey that verified its user.
async fn reauth(
    State(state): State<AppState>,
    caller: Caller,
    body: axum::body::Bytes,
) -> std::result::Result<Response, WebError> {
    let (user, _, old) = factors::signed_in_user(&caller)?;
    let form = FormFields::parse(&body);
    let next = reauth::local_path(form.get("next")).to_owned();
    let answer = AssertionAnswer::parse(&form);
    let now = crate::now_millis();
    let policy = state.config.sign_in.clone();
    let keys = throttle::Keys::new(
        &state.audit_key,
        &user.username,
        caller.client.ip.as_deref(),
    );
    // Where passkeys do not replace the password, the password comes too
    // (checked only when the throttle lets the attempt through).
    let password_ok = if state.config.passkeys.passwordless {
        true
    } else {
        let held = {
            let (policy, keys) = (policy.clone(), keys.clone());
            state
                .db
                .read("reauth throttle", move |tx| {
                    throttle::check(tx, &policy, &keys, now)
                })
                .await?
        };
        held.is_none()
            && reauth::password_matches(&state, form.get("password").to_owned(), &user).await?
    };
    let (cookie, session) = new_session(&state, user.id, &caller.client, now)?;
    let state2 = state.clone();
    let user_id = user.id;
    let ok_event = caller
        .event(now, Action::Reauthenticate, Outcome::Success)
        .details(json!({ "proof": "passkey" }));
    let bad_event = caller
        .event(now, Action::Reauthenticate, Outcome::Failure)
        .details(json!({ "proof": "passkey", "reason": "passkey_refused" }));
    let passed = state
        .db
        .write("reauthenticate with a passkey", move |tx| {
            if store::session_proof(tx, &old)?.is_none() {
                return Ok(Err(None));
            }
            if let Some(refusal) = throttle::check(tx, &policy, &keys, now)? {
                return Ok(Err(Some(refusal)));
            }
            let used = match &answer {
                Some(answer) if password_ok => {
                    use_assertion(tx, &state2, Purpose::Reauth, Some(user_id), answer, now)?
                }
                _ => None,
            };
            if used.is_none() {
                throttle::record_failure(tx, &policy, &keys, now)?;
                crate::audit::store::append(tx, &bad_event)?;
                return Ok(Err(None));
            }
            throttle::record_success(tx, &keys)?;
            store::replace_session(tx, &old, &session, now)?;
            crate::audit::store::append(tx, &ok_event)?;
            Ok(Ok(()))
        })
        .await?;
    match passed {
        Ok(()) => {
            let mut response = Redirect::to(&next).into_response();
            response
                .headers_mut()
                .insert(header::SET_COOKIE, session_cookie_header(&cookie)?);
            Ok(response)
        }
        Err(held) => {
            let message = match held {
                Some(refusal) => refusal.message(now),
                None => "That passkey did not confirm it is you: it must check your PIN or \
                         fingerprint. Or give your password."
                    .to_owned(),
            };
            reauth::render_reauth(
                &state,
                &caller,
                &next,
                Some(&message),
                StatusCode::UNAUTHORIZED,
            )
            .await
        }
    }
}
