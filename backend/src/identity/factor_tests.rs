//! Second factors and re-authentication, through the router with a real
//! database: TOTP enrollment and two-step sign-in, a replayed code and a
//! used backup code refused, wrong codes counted against the account,
//! enforced enrollment, re-authentication before a dangerous operation,
//! an administrator's reset of someone's factors.

use axum::body::Body;
use axum::http::{Method, Request, StatusCode, header};

use super::factors::CHALLENGE_COOKIE;
use super::totp;
use crate::audit::{Action, Outcome};
use crate::config::Config;
use crate::db::Millis;
use crate::identity::auth::SESSION_COOKIE;
use crate::state::AppState;
use crate::web::testing::{
    HOST, ORIGIN, Reply, app, audit, create_user, login_form, send, session, state,
    state_with_config, urlencode,
};

pub(super) const PASSWORD: &str = "correct horse battery staple";

/// A request as a browser sends it, with whichever cookies.
pub(super) fn request(
    method: Method,
    uri: &str,
    cookies: &[(&str, &str)],
    form: Option<&str>,
) -> Request<Body> {
    let mut builder = Request::builder()
        .method(method)
        .uri(uri)
        .header(header::HOST, HOST)
        .header(header::ORIGIN, ORIGIN)
        .header(header::USER_AGENT, "test-browser/1.0");
    if !cookies.is_empty() {
        let value: Vec<String> = cookies.iter().map(|(k, v)| format!("{k}={v}")).collect();
        builder = builder.header(header::COOKIE, value.join("; "));
    }
    match form {
        Some(form) => builder
            .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
            .body(Body::from(form.to_owned())),
        None => builder.body(Body::empty()),
    }
    .expect("request")
}

pub(super) async fn get(state: &AppState, uri: &str, cookie: &str) -> Reply {
    send(
        &app(state),
        request(Method::GET, uri, &[(SESSION_COOKIE, cookie)], None),
    )
    .await
}

pub(super) async fn post(state: &AppState, uri: &str, cookie: &str, form: &str) -> Reply {
    send(
        &app(state),
        request(Method::POST, uri, &[(SESSION_COOKIE, cookie)], Some(form)),
    )
    .await
}

/// The value a `Set-Cookie` header of the reply gives `name`, if any.
pub(super) fn set_cookie(reply: &Reply, name: &str) -> Option<String> {
    reply
        .headers
        .get_all(header::SET_COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .filter_map(|v| v.split(';').next()?.split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.to_owned())
        .filter(|v| !v.is_empty())
}

fn code(secret: &[u8], at: Millis, steps_ahead: i64) -> String {
    format!(
        "{:06}",
        totp::code_at_step(secret, totp::step_at(at) + steps_ahead)
    )
}

/// Enrolls `cookie`'s user in TOTP; returns the seed, the backup codes and
/// the session cookie that replaced `cookie`.
async fn enroll(state: &AppState, cookie: &str) -> (Vec<u8>, Vec<String>, String) {
    let begin = post(state, "/account/second-factor/totp", cookie, "").await;
    assert_eq!(begin.status, StatusCode::OK, "{}", begin.body);
    assert!(begin.body.contains("<svg"), "a QR code is shown");
    let text = begin
        .body
        .split("id=\"totp-secret\">")
        .nth(1)
        .and_then(|rest| rest.split('<').next())
        .expect("the key as text");
    let secret = data_encoding::BASE32_NOPAD
        .decode(text.as_bytes())
        .expect("base32");
    // A wrong first code is refused and the same seed offered again.
    let wrong = post(
        state,
        "/account/second-factor/totp/confirm",
        cookie,
        "code=000000",
    )
    .await;
    // (000000 is the right code one time in a million per step.)
    assert_eq!(wrong.status, StatusCode::BAD_REQUEST, "{}", wrong.body);
    assert!(wrong.body.contains(text), "the same key is shown again");
    let now = crate::now_millis();
    let confirm = post(
        state,
        "/account/second-factor/totp/confirm",
        cookie,
        &format!("code={}", code(&secret, now, 0)),
    )
    .await;
    assert_eq!(confirm.status, StatusCode::OK, "{}", confirm.body);
    let codes: Vec<String> = confirm
        .body
        .split("<li><code>")
        .skip(1)
        .filter_map(|rest| rest.split('<').next())
        .map(str::to_owned)
        .collect();
    assert_eq!(codes.len(), totp::BACKUP_CODES, "{}", confirm.body);
    let new_cookie = set_cookie(&confirm, SESSION_COOKIE).expect("a new session id");
    assert_ne!(new_cookie, cookie);
    (secret, codes, new_cookie)
}

/// The password step; returns the challenge cookie.
pub(super) async fn password_step(state: &AppState, username: &str) -> String {
    let reply = send(
        &app(state),
        request(
            Method::POST,
            "/login",
            &[],
            Some(&login_form(username, PASSWORD)),
        ),
    )
    .await;
    assert_eq!(reply.status, StatusCode::SEE_OTHER, "{}", reply.body);
    assert_eq!(reply.header(header::LOCATION), "/login/second-factor");
    assert_eq!(
        set_cookie(&reply, SESSION_COOKIE),
        None,
        "no session before the second factor"
    );
    set_cookie(&reply, CHALLENGE_COOKIE).expect("a challenge cookie")
}

async fn code_step(state: &AppState, challenge: &str, code: &str) -> Reply {
    send(
        &app(state),
        request(
            Method::POST,
            "/login/second-factor",
            &[(CHALLENGE_COOKIE, challenge)],
            Some(&format!("code={}", urlencode(code))),
        ),
    )
    .await
}

#[tokio::test]
async fn totp_enrollment_then_two_step_sign_in_and_replays_refused() {
    let state = state();
    let user = create_user(&state, "alice", PASSWORD, "operator").await;
    let first = session(&state, &user).await;
    let (secret, backup_codes, current) = enroll(&state, &first).await;
    // Enrolling replaced the session: the old id is gone.
    assert_eq!(
        get(&state, "/hosts", &first).await.status,
        StatusCode::SEE_OTHER
    );
    assert_eq!(get(&state, "/hosts", &current).await.status, StatusCode::OK);

    // The password alone opens a challenge, which is not a session.
    let challenge = password_step(&state, "alice").await;
    let as_session = get(&state, "/hosts", &challenge).await;
    assert_eq!(as_session.status, StatusCode::SEE_OTHER);
    assert_eq!(as_session.header(header::LOCATION), "/login");

    // The code used to confirm the enrollment is refused: once only.
    let now = crate::now_millis();
    let replay = code_step(&state, &challenge, &code(&secret, now, 0)).await;
    assert_eq!(replay.status, StatusCode::UNAUTHORIZED, "{}", replay.body);
    assert_eq!(set_cookie(&replay, SESSION_COOKIE), None);

    // The next code passes and gives a session.
    let next = code(&secret, now, 1);
    let passed = code_step(&state, &challenge, &next).await;
    assert_eq!(passed.status, StatusCode::SEE_OTHER, "{}", passed.body);
    let signed_in = set_cookie(&passed, SESSION_COOKIE).expect("session");
    assert_eq!(
        get(&state, "/hosts", &signed_in).await.status,
        StatusCode::OK
    );
    // The challenge is spent.
    let again = code_step(&state, &challenge, &next).await;
    assert_eq!(again.status, StatusCode::SEE_OTHER);
    assert_eq!(again.header(header::LOCATION), "/login");

    // The same code on a new challenge: replay refused.
    let challenge = password_step(&state, "alice").await;
    let replay = code_step(&state, &challenge, &next).await;
    assert_eq!(replay.status, StatusCode::UNAUTHORIZED);

    // A backup code works once, typed loosely.
    let typed = backup_codes[0].to_uppercase().replace('-', " ");
    let with_backup = code_step(&state, &challenge, &typed).await;
    assert_eq!(
        with_backup.status,
        StatusCode::SEE_OTHER,
        "{}",
        with_backup.body
    );
    assert_eq!(
        with_backup.header(header::LOCATION),
        "/account/second-factor?backup_codes_left=9"
    );
    let challenge = password_step(&state, "alice").await;
    let reused = code_step(&state, &challenge, &backup_codes[0]).await;
    assert_eq!(reused.status, StatusCode::UNAUTHORIZED);

    let events = audit(&state, 30).await;
    assert!(
        events
            .iter()
            .any(|e| e.action == Action::FactorEnroll && e.outcome == Outcome::Success)
    );
    assert!(events.iter().any(|e| e.action == Action::AuthLogin
        && e.outcome == Outcome::Success
        && e.details["second_factor"] == "backup_code"));
    assert!(
        events
            .iter()
            .any(|e| e.action == Action::SecondFactor && e.outcome == Outcome::Failure)
    );
    // No secret in the audit trail.
    for e in &events {
        let text = e.details.to_string();
        assert!(
            !text.contains(&next) && !text.contains(&backup_codes[0]),
            "{text}"
        );
    }
}

#[tokio::test]
async fn wrong_codes_end_the_challenge_and_count_towards_the_account_lockout() {
    let mut config = Config::default();
    config.sign_in.max_delay_secs = 0;
    config.mfa.max_code_failures = 3;
    let state = state_with_config(config);
    let user = create_user(&state, "bob", PASSWORD, "viewer").await;
    let cookie = session(&state, &user).await;
    let (secret, _, _) = enroll(&state, &cookie).await;
    let lockout = state.config.sign_in.account_lockout_failures;
    let mut failures = 0;
    let mut locked = false;
    // Knowing the password, guess codes until the account locks.
    for _ in 0..10 {
        let challenge = password_step_or_locked(&state, "bob").await;
        let Some(challenge) = challenge else {
            locked = true;
            break;
        };
        for _ in 0..3 {
            let reply = code_step(&state, &challenge, "999999").await;
            assert_ne!(reply.status, StatusCode::SEE_OTHER);
            failures += 1;
            if reply.status == StatusCode::TOO_MANY_REQUESTS || reply.body.contains("locked") {
                break;
            }
        }
        // After three wrong codes the challenge is over.
        let after = code_step(&state, &challenge, &code(&secret, crate::now_millis(), 1)).await;
        assert!(
            set_cookie(&after, SESSION_COOKIE).is_none(),
            "{}",
            after.body
        );
    }
    assert!(locked, "guessing codes locks the account");
    assert!(
        failures <= lockout + 2,
        "{failures} wrong codes before the lock"
    );
}

async fn password_step_or_locked(state: &AppState, username: &str) -> Option<String> {
    let reply = send(
        &app(state),
        request(
            Method::POST,
            "/login",
            &[],
            Some(&login_form(username, PASSWORD)),
        ),
    )
    .await;
    match reply.status {
        StatusCode::SEE_OTHER => set_cookie(&reply, CHALLENGE_COOKIE),
        StatusCode::TOO_MANY_REQUESTS => None,
        other => panic!("unexpected {other}: {}", reply.body),
    }
}

#[tokio::test]
async fn enforced_enrollment_reaches_only_the_enrollment_pages() {
    let mut config = Config::default();
    config.mfa.required_roles = vec!["operator".into()];
    let state = state_with_config(config);
    let viewer = create_user(&state, "vera", PASSWORD, "viewer").await;
    let operator = create_user(&state, "otto", PASSWORD, "operator").await;
    let vera = session(&state, &viewer).await;
    assert_eq!(get(&state, "/hosts", &vera).await.status, StatusCode::OK);
    let otto = session(&state, &operator).await;
    let page = get(&state, "/hosts", &otto).await;
    assert_eq!(page.status, StatusCode::SEE_OTHER);
    assert_eq!(page.header(header::LOCATION), "/account/second-factor");
    let api = get(&state, "/api/v1/hosts", &otto).await;
    assert_eq!(api.status, StatusCode::FORBIDDEN, "{}", api.body);
    let enrollment = get(&state, "/account/second-factor", &otto).await;
    assert_eq!(enrollment.status, StatusCode::OK);
    assert!(enrollment.body.contains("enrollment-required"));
    // Once enrolled (a new session id), everything is reachable again; the
    // factor cannot be removed while the role requires it.
    let (_, _, otto) = enroll(&state, &otto).await;
    assert_eq!(get(&state, "/hosts", &otto).await.status, StatusCode::OK);
    let remove = post(&state, "/account/second-factor/remove", &otto, "").await;
    assert_eq!(remove.status, StatusCode::FORBIDDEN);
}

/// A session whose user last proved themselves `age_ms` ago.
async fn old_session(state: &AppState, user: &crate::identity::User, age_ms: Millis) -> String {
    let cookie = crate::secrets::random_urlsafe(32).expect("random");
    let now = crate::now_millis();
    let session = crate::identity::NewSession {
        id_hash: crate::secrets::hash_secret(&cookie),
        user_id: user.id,
        created_at: now - age_ms,
        expires_at: now + 3_600_000,
        source_ip: "192.0.2.7".into(),
        user_agent: "test".into(),
    };
    state
        .db
        .write("old session", move |tx| {
            crate::identity::store::create_session(tx, &session)
        })
        .await
        .expect("session");
    cookie
}

#[tokio::test]
async fn a_dangerous_operation_asks_for_the_password_again() {
    let state = state();
    let admin = create_user(&state, "root", PASSWORD, "admin").await;
    let target = create_user(&state, "tom", PASSWORD, "viewer").await;
    let stale = old_session(&state, &admin, 10 * 60_000).await;
    let reset = format!("/users/{}/password-reset", target.id);

    // The API refuses with a clear error; the page sends to /reauth.
    let api = send(
        &app(&state),
        request(
            Method::POST,
            &format!("/api/v1{reset}"),
            &[(SESSION_COOKIE, &stale)],
            None,
        ),
    )
    .await;
    assert_eq!(api.status, StatusCode::FORBIDDEN);
    assert!(api.body.contains("dangerous"), "{}", api.body);
    let form = send(
        &app(&state),
        Request::builder()
            .method(Method::POST)
            .uri(&reset)
            .header(header::HOST, HOST)
            .header(header::ORIGIN, ORIGIN)
            .header(header::REFERER, format!("{ORIGIN}/users/{}", target.id))
            .header(header::COOKIE, format!("{SESSION_COOKIE}={stale}"))
            .body(Body::empty())
            .expect("request"),
    )
    .await;
    assert_eq!(form.status, StatusCode::SEE_OTHER);
    let location = form.header(header::LOCATION).to_owned();
    assert_eq!(location, format!("/reauth?next=%2Fusers%2F{}", target.id));
    let prompt = get(&state, &location, &stale).await;
    assert!(prompt.body.contains("reauth-form"), "{}", prompt.body);
    // Nothing happened.
    assert!(
        !audit(&state, 20)
            .await
            .iter()
            .any(|e| e.action == Action::PasswordReset)
    );

    // A wrong password is refused; the right one gives a new session.
    let next = format!("/users/{}", target.id);
    let wrong = post(
        &state,
        "/reauth",
        &stale,
        &format!("next={}&password=nope", urlencode(&next)),
    )
    .await;
    assert_eq!(wrong.status, StatusCode::UNAUTHORIZED);
    let open_redirect = post(
        &state,
        "/reauth",
        &stale,
        &format!(
            "next={}&password={}",
            urlencode("//evil.example/"),
            urlencode(PASSWORD)
        ),
    )
    .await;
    assert_eq!(open_redirect.status, StatusCode::SEE_OTHER);
    assert_eq!(open_redirect.header(header::LOCATION), "/hosts");
    let fresh = set_cookie(&open_redirect, SESSION_COOKIE).expect("a new session id");
    assert_ne!(fresh, stale);
    assert_eq!(
        get(&state, "/hosts", &stale).await.status,
        StatusCode::SEE_OTHER,
        "the old id is gone"
    );

    let done = post(&state, &reset, &fresh, "").await;
    assert_eq!(done.status, StatusCode::OK, "{}", done.body);
    let events = audit(&state, 20).await;
    let reset_event = events
        .iter()
        .find(|e| e.action == Action::PasswordReset)
        .expect("audited");
    assert!(
        reset_event.details["reauthenticated_at"].is_i64(),
        "{:?}",
        reset_event.details
    );
    assert!(
        events
            .iter()
            .any(|e| e.action == Action::Reauthenticate && e.outcome == Outcome::Failure)
    );
    assert!(
        events
            .iter()
            .any(|e| e.action == Action::Reauthenticate && e.outcome == Outcome::Success)
    );

    // A token with dangerous permissions needs the same proof to be made.
    let stale = old_session(&state, &admin, 10 * 60_000).await;
    let body = serde_json::json!({ "name": "automation", "permissions": ["hosts:reboot"] });
    let make = |cookie: String| {
        Request::builder()
            .method(Method::POST)
            .uri("/api/v1/api-tokens")
            .header(header::HOST, HOST)
            .header(header::ORIGIN, ORIGIN)
            .header(header::COOKIE, format!("{SESSION_COOKIE}={cookie}"))
            .header(header::CONTENT_TYPE, "application/json")
            .body(Body::from(body.to_string()))
            .expect("request")
    };
    let refused = send(&app(&state), make(stale)).await;
    assert_eq!(refused.status, StatusCode::FORBIDDEN, "{}", refused.body);
    let made = send(&app(&state), make(fresh)).await;
    assert!(made.status.is_success(), "{}: {}", made.status, made.body);
}

#[tokio::test]
async fn an_admin_resets_a_users_factors_and_their_sessions_end() {
    let state = state();
    let admin = create_user(&state, "root", PASSWORD, "admin").await;
    let user = create_user(&state, "carol", PASSWORD, "viewer").await;
    let carol = session(&state, &user).await;
    let (_, _, carol) = enroll(&state, &carol).await;
    let root = session(&state, &admin).await;
    let page = get(&state, &format!("/users/{}", user.id), &root).await;
    assert!(page.body.contains("reset-factors"));
    let reset = post(
        &state,
        &format!("/users/{}/factors/reset", user.id),
        &root,
        "",
    )
    .await;
    assert_eq!(reset.status, StatusCode::SEE_OTHER, "{}", reset.body);
    assert_eq!(
        get(&state, "/hosts", &carol).await.status,
        StatusCode::SEE_OTHER
    );
    // The password alone signs in again.
    let reply = send(
        &app(&state),
        request(
            Method::POST,
            "/login",
            &[],
            Some(&login_form("carol", PASSWORD)),
        ),
    )
    .await;
    assert_eq!(reply.header(header::LOCATION), "/hosts");
    let event = audit(&state, 10)
        .await
        .into_iter()
        .find(|e| e.action == Action::FactorReset)
        .expect("audited");
    assert_eq!(event.details["had_factor"], true);
    // A viewer is not offered the reset, and may not do it.
    let viewer = session(&state, &user).await;
    let own_page = get(&state, &format!("/users/{}", admin.id), &viewer).await;
    assert!(!own_page.body.contains("reset-factors"));
    let refused = post(
        &state,
        &format!("/users/{}/factors/reset", admin.id),
        &viewer,
        "",
    )
    .await;
    assert_eq!(refused.status, StatusCode::FORBIDDEN);
}

#[tokio::test]
async fn an_admin_sees_and_ends_someone_elses_session_after_re_authenticating() {
    let state = state();
    let admin = create_user(&state, "root", PASSWORD, "admin").await;
    let user = create_user(&state, "dave", PASSWORD, "viewer").await;
    let dave = session(&state, &user).await;
    let id = hex::encode(crate::secrets::hash_secret(&dave));
    let fresh = session(&state, &admin).await;
    let page = get(&state, &format!("/users/{}", user.id), &fresh).await;
    assert!(page.body.contains("user-sessions"), "{}", page.body);
    assert!(page.body.contains(&format!("/account/sessions/{id}/end")));
    // From a stale session: the prompt first, and the session lives on.
    let stale = old_session(&state, &admin, 10 * 60_000).await;
    let refused = post(&state, &format!("/account/sessions/{id}/end"), &stale, "").await;
    assert_eq!(refused.status, StatusCode::SEE_OTHER);
    assert!(
        refused
            .header(header::LOCATION)
            .starts_with("/reauth?next=")
    );
    assert_eq!(get(&state, "/hosts", &dave).await.status, StatusCode::OK);
    // From a fresh one it ends, and the admin is sent back to the user.
    let ended = post(&state, &format!("/account/sessions/{id}/end"), &fresh, "").await;
    assert_eq!(ended.status, StatusCode::SEE_OTHER);
    assert_eq!(
        ended.header(header::LOCATION),
        format!("/users/{}?done=session", user.id)
    );
    assert_eq!(
        get(&state, "/hosts", &dave).await.status,
        StatusCode::SEE_OTHER
    );
    // A viewer sees nobody's sessions.
    let viewer = session(&state, &user).await;
    let own = get(&state, &format!("/users/{}", user.id), &viewer).await;
    assert!(!own.body.contains("user-sessions"));
}
