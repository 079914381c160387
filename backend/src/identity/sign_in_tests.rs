//! Sign-in under attack, through the router with a real database: brute
//! force held back per account and per address, the same answers for names
//! that match no account, a bounded number of password verifications.

use axum::http::{StatusCode, header};

use crate::audit::Outcome;
use crate::config::Config;
use crate::state::AppState;
use crate::web::testing::{
    ORIGIN, Reply, app, audit, create_user, login_form, post_form, send, state_with_config,
};

const PASSWORD: &str = "correct horse battery staple";

async fn attempt(state: &AppState, username: &str, password: &str) -> Reply {
    send(
        &app(state),
        post_form(
            "/login",
            Some(ORIGIN),
            None,
            &login_form(username, password),
        ),
    )
    .await
}

/// No delays before the lock, so the counts show without waiting.
fn no_delays() -> Config {
    let mut config = Config::default();
    config.sign_in.max_delay_secs = 0;
    config
}

#[tokio::test]
async fn thirty_wrong_passwords_lock_the_account_and_the_right_one_is_refused_then() {
    let mut config = no_delays();
    // The address limit must not be what stops this attack.
    config.sign_in.address_free_failures = 1000;
    config.sign_in.address_lockout_failures = 1001;
    let state = state_with_config(config);
    create_user(&state, "alice", PASSWORD, "admin").await;
    let lockout = state.config.sign_in.account_lockout_failures;
    let mut statuses = Vec::new();
    for n in 0..30 {
        let reply = attempt(&state, "alice", &format!("guess-{n}")).await;
        assert!(reply.headers.get(header::SET_COOKIE).is_none());
        statuses.push(reply.status);
        if n + 1 == lockout {
            assert!(
                reply.body.contains("locked for about 15 minutes"),
                "the failure that locks says so: {}",
                reply.body
            );
        }
    }
    let unauthorized = statuses
        .iter()
        .filter(|s| **s == StatusCode::UNAUTHORIZED)
        .count();
    assert_eq!(unauthorized as u32, lockout, "{statuses:?}");
    assert!(
        statuses[lockout as usize..]
            .iter()
            .all(|s| *s == StatusCode::TOO_MANY_REQUESTS),
        "{statuses:?}"
    );
    // The 31st attempt has the right password and is refused all the same.
    let right = attempt(&state, "alice", PASSWORD).await;
    assert_eq!(right.status, StatusCode::TOO_MANY_REQUESTS);
    assert!(right.headers.get(header::SET_COOKIE).is_none());
    let retry: u64 = right
        .header(header::RETRY_AFTER)
        .parse()
        .expect("Retry-After");
    assert!((800..=900).contains(&retry), "{retry}");
    assert!(right.body.contains("sign-in is locked"), "{}", right.body);

    // Held-back attempts are audited as denied, with no name in clear.
    let events = audit(&state, 100).await;
    let denied = events
        .iter()
        .filter(|e| e.outcome == Outcome::Denied && e.details["reason"] == "locked")
        .count();
    assert!(denied >= 1, "{events:?}");
    assert!(
        events
            .iter()
            .any(|e| e.details.get("locked_until").is_some())
    );

    // An administrator lifts the lock; the right password works again.
    let lifted = state
        .db
        .write("unlock", {
            let key = state.audit_key.clone();
            move |tx| super::throttle::unlock_account(tx, &key, "alice")
        })
        .await
        .expect("unlock");
    assert!(lifted);
    let reply = attempt(&state, "alice", PASSWORD).await;
    assert_eq!(reply.status, StatusCode::SEE_OTHER, "{}", reply.body);
}

#[tokio::test]
async fn a_name_that_matches_no_account_is_answered_exactly_like_one_that_does() {
    let state = state_with_config(Config::default());
    create_user(&state, "alice", PASSWORD, "admin").await;
    let mut known = Vec::new();
    let mut unknown = Vec::new();
    // Free failures, then one that sets a delay, then one that arrives
    // before the delay is over.
    let free = state.config.sign_in.account_free_failures;
    for n in 0..free + 2 {
        known.push(attempt(&state, "alice", &format!("guess-{n}")).await);
        unknown.push(attempt(&state, "mallory", &format!("guess-{n}")).await);
    }
    let statuses = |r: &[Reply]| r.iter().map(|r| r.status).collect::<Vec<_>>();
    assert_eq!(statuses(&known), statuses(&unknown));
    let mut expected = vec![StatusCode::UNAUTHORIZED; free as usize + 1];
    expected.push(StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(statuses(&known), expected);
    let normalize = |r: &Reply, name: &str| r.normalized(name);
    for (k, u) in known.iter().zip(&unknown) {
        assert_eq!(normalize(k, "alice"), normalize(u, "mallory"));
    }
    let held = known.last().expect("the held-back attempt");
    assert_eq!(held.header(header::RETRY_AFTER), "1");
    assert!(
        held.body.contains("Try again in 1 second."),
        "{}",
        held.body
    );
}

#[tokio::test]
async fn one_address_trying_many_names_is_held_back_even_with_a_right_password() {
    let mut config = no_delays();
    config.sign_in.address_free_failures = 3;
    config.sign_in.address_lockout_failures = 6;
    let state = state_with_config(config);
    create_user(&state, "alice", PASSWORD, "admin").await;
    for n in 0..6 {
        let reply = attempt(&state, &format!("user{n}"), "123456").await;
        assert_eq!(reply.status, StatusCode::UNAUTHORIZED, "attempt {n}");
    }
    // The address is locked: a right password from it is not even checked.
    let reply = attempt(&state, "alice", PASSWORD).await;
    assert_eq!(
        reply.status,
        StatusCode::TOO_MANY_REQUESTS,
        "{}",
        reply.body
    );
    assert!(reply.headers.get(header::SET_COOKIE).is_none());
}

#[tokio::test]
async fn a_success_resets_the_account_count_but_not_the_address_count() {
    let mut config = no_delays();
    config.sign_in.address_free_failures = 100;
    config.sign_in.address_lockout_failures = 101;
    let state = state_with_config(config);
    create_user(&state, "alice", PASSWORD, "admin").await;
    let lockout = state.config.sign_in.account_lockout_failures;
    for round in 0..3 {
        for n in 0..lockout - 1 {
            let reply = attempt(&state, "alice", &format!("guess-{round}-{n}")).await;
            assert_eq!(reply.status, StatusCode::UNAUTHORIZED);
        }
        let reply = attempt(&state, "alice", PASSWORD).await;
        assert_eq!(reply.status, StatusCode::SEE_OTHER, "round {round}");
    }
    let rows: i64 = state
        .db
        .read("count", |tx| {
            tx.query_one(
                "SELECT failures FROM sign_in_throttle WHERE key LIKE 'address:%'",
                &[],
                |r| r.get(0),
            )
        })
        .await
        .expect("address row");
    assert_eq!(rows, 3 * (lockout as i64 - 1));
}

#[tokio::test]
async fn password_verification_is_bounded_and_a_flood_is_told_the_server_is_busy() {
    let mut config = Config::default();
    config.sign_in.max_concurrent_hashes = 1;
    config.sign_in.hash_queue_wait_ms = 0;
    let state = state_with_config(config);
    create_user(&state, "alice", PASSWORD, "admin").await;
    // Another verification holds the only slot.
    let held = state
        .hashing
        .clone()
        .acquire_owned()
        .await
        .expect("the slot");
    let reply = attempt(&state, "alice", PASSWORD).await;
    assert_eq!(reply.status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(reply.body.contains("busy"), "{}", reply.body);
    assert!(reply.headers.get(header::SET_COOKIE).is_none());
    drop(held);
    let reply = attempt(&state, "alice", PASSWORD).await;
    assert_eq!(reply.status, StatusCode::SEE_OTHER);
}

fn json_request(
    method: &str,
    uri: &str,
    token: &str,
    body: serde_json::Value,
) -> axum::http::Request<axum::body::Body> {
    axum::http::Request::builder()
        .method(method)
        .uri(uri)
        .header(header::HOST, crate::web::testing::HOST)
        .header(header::AUTHORIZATION, format!("Bearer {token}"))
        .header(header::CONTENT_TYPE, "application/json")
        .body(axum::body::Body::from(body.to_string()))
        .expect("request")
}

fn cookie_get(uri: &str, cookie: &str) -> axum::http::Request<axum::body::Body> {
    axum::http::Request::get(uri)
        .header(header::HOST, crate::web::testing::HOST)
        .header(
            header::COOKIE,
            format!("{}={cookie}", crate::identity::auth::SESSION_COOKIE),
        )
        .body(axum::body::Body::empty())
        .expect("request")
}

fn session_cookie(reply: &Reply) -> String {
    let set = reply.header(header::SET_COOKIE);
    set.split(';')
        .next()
        .and_then(|kv| kv.split_once('='))
        .map(|(_, v)| v.to_owned())
        .filter(|v| !v.is_empty())
        .unwrap_or_else(|| panic!("no session cookie in {set:?}"))
}

async fn sign_in(state: &AppState, username: &str, password: &str) -> String {
    let reply = attempt(state, username, password).await;
    assert_eq!(reply.status, StatusCode::SEE_OTHER, "{}", reply.body);
    session_cookie(&reply)
}

async fn change_password(state: &AppState, cookie: &str, current: &str, new: &str) -> Reply {
    let form = format!(
        "current_password={}&new_password={}&confirm_password={}",
        crate::web::testing::urlencode(current),
        crate::web::testing::urlencode(new),
        crate::web::testing::urlencode(new)
    );
    send(
        &app(state),
        post_form("/account/password", Some(ORIGIN), Some(cookie), &form),
    )
    .await
}

#[tokio::test]
async fn a_new_user_chooses_their_own_password_before_anything_else() {
    let state = state_with_config(Config::default());
    let (admin_token, _) = crate::web::testing::api_token(&state, "admin", None).await;
    let created = send(
        &app(&state),
        json_request(
            "POST",
            "/api/v1/users",
            &admin_token,
            serde_json::json!({ "username": "bob", "role": "operator" }),
        ),
    )
    .await;
    assert_eq!(created.status, StatusCode::CREATED, "{}", created.body);
    let first = created.json()["password"]
        .as_str()
        .expect("password")
        .to_owned();

    let cookie = sign_in(&state, "bob", &first).await;
    let hosts = send(&app(&state), cookie_get("/hosts", &cookie)).await;
    assert_eq!(
        (hosts.status, hosts.header(header::LOCATION)),
        (StatusCode::SEE_OTHER, "/account")
    );
    let api = send(&app(&state), cookie_get("/api/v1/hosts", &cookie)).await;
    assert_eq!(api.status, StatusCode::FORBIDDEN, "{}", api.body);
    let account = send(&app(&state), cookie_get("/account", &cookie)).await;
    assert_eq!(account.status, StatusCode::OK);
    assert!(
        account.body.contains("id=\"password-due\""),
        "{}",
        account.body
    );

    // Weak choices are refused with every reason at once.
    let weak = change_password(&state, &cookie, &first, "Password123!").await;
    assert_eq!(weak.status, StatusCode::BAD_REQUEST);
    assert!(weak.body.contains("commonly used"), "{}", weak.body);
    let wrong = change_password(&state, &cookie, "not the password", "ribbon tuesday kettle").await;
    assert_eq!(wrong.status, StatusCode::BAD_REQUEST);
    assert!(wrong.body.contains("current password is not right"));

    let changed = change_password(&state, &cookie, &first, "ribbon tuesday kettle").await;
    assert_eq!(
        (changed.status, changed.header(header::LOCATION)),
        (StatusCode::SEE_OTHER, "/account?done=password"),
        "{}",
        changed.body
    );
    // A new session id: the one the password was changed with is gone.
    let fresh = session_cookie(&changed);
    assert_ne!(fresh, cookie);
    let old = send(&app(&state), cookie_get("/hosts", &cookie)).await;
    assert_eq!(old.header(header::LOCATION), "/login");
    let hosts = send(&app(&state), cookie_get("/hosts", &fresh)).await;
    assert_eq!(hosts.status, StatusCode::OK);
    // The first password no longer works; the chosen one does.
    assert_eq!(
        attempt(&state, "bob", &first).await.status,
        StatusCode::UNAUTHORIZED
    );
    sign_in(&state, "bob", "ribbon tuesday kettle").await;
    let events = audit(&state, 50).await;
    assert!(
        events
            .iter()
            .any(|e| e.action == crate::audit::Action::PasswordChange
                && e.outcome == Outcome::Success)
    );
}

#[tokio::test]
async fn users_list_and_end_their_sessions_and_an_ended_session_is_refused_at_once() {
    let state = state_with_config(Config::default());
    create_user(&state, "alice", PASSWORD, "viewer").await;
    create_user(&state, "carol", PASSWORD, "viewer").await;
    let laptop = sign_in(&state, "alice", PASSWORD).await;
    let phone = sign_in(&state, "alice", PASSWORD).await;
    let carols = sign_in(&state, "carol", PASSWORD).await;
    let list = send(&app(&state), cookie_get("/api/v1/sessions", &laptop)).await;
    assert_eq!(list.status, StatusCode::OK, "{}", list.body);
    let sessions = list.json();
    let sessions = sessions.as_array().expect("a list");
    assert_eq!(sessions.len(), 2, "only her own: {sessions:?}");
    assert_eq!(sessions.iter().filter(|s| s["current"] == true).count(), 1);
    let other = sessions
        .iter()
        .find(|s| s["current"] == false)
        .expect("the phone's session")["id"]
        .as_str()
        .expect("id")
        .to_owned();
    // Another user's session is not hers to see or end.
    let theirs = send(
        &app(&state),
        cookie_get("/api/v1/sessions?all=true", &laptop),
    )
    .await;
    assert_eq!(theirs.status, StatusCode::FORBIDDEN);
    let page = send(&app(&state), cookie_get("/account", &laptop)).await;
    assert!(page.body.contains(&other), "the account page lists it");

    let end = send(
        &app(&state),
        post_form(
            &format!("/account/sessions/{other}/end"),
            Some(ORIGIN),
            Some(&laptop),
            "",
        ),
    )
    .await;
    assert_eq!(end.header(header::LOCATION), "/account?done=session");
    let refused = send(&app(&state), cookie_get("/hosts", &phone)).await;
    assert_eq!(refused.header(header::LOCATION), "/login", "ended at once");
    assert_eq!(
        send(&app(&state), cookie_get("/hosts", &laptop))
            .await
            .status,
        StatusCode::OK
    );
    // Carol cannot end Alice's session: it does not exist for her.
    let alice_list = send(&app(&state), cookie_get("/api/v1/sessions", &laptop))
        .await
        .json();
    let laptop_id = alice_list[0]["id"].as_str().expect("id").to_owned();
    let by_carol = send(
        &app(&state),
        post_form(
            &format!("/account/sessions/{laptop_id}/end"),
            Some(ORIGIN),
            Some(&carols),
            "",
        ),
    )
    .await;
    assert_eq!(by_carol.status, StatusCode::NOT_FOUND);
    assert_eq!(
        send(&app(&state), cookie_get("/hosts", &laptop))
            .await
            .status,
        StatusCode::OK
    );
    // An administrator can.
    let (admin_token, _) = crate::web::testing::api_token(&state, "admin", None).await;
    let by_admin = send(
        &app(&state),
        json_request(
            "DELETE",
            &format!("/api/v1/sessions/{laptop_id}"),
            &admin_token,
            serde_json::json!({}),
        ),
    )
    .await;
    assert_eq!(by_admin.status, StatusCode::NO_CONTENT, "{}", by_admin.body);
    assert_eq!(
        send(&app(&state), cookie_get("/hosts", &laptop))
            .await
            .header(header::LOCATION),
        "/login"
    );
}

#[tokio::test]
async fn an_admin_reset_ends_the_sessions_and_the_user_must_choose_a_new_password() {
    let state = state_with_config(Config::default());
    let alice = create_user(&state, "alice", PASSWORD, "viewer").await;
    let cookie = sign_in(&state, "alice", PASSWORD).await;
    let (admin_token, _) = crate::web::testing::api_token(&state, "admin", None).await;
    let reset = send(
        &app(&state),
        json_request(
            "POST",
            &format!("/api/v1/users/{}/password-reset", alice.id),
            &admin_token,
            serde_json::json!({}),
        ),
    )
    .await;
    assert_eq!(reset.status, StatusCode::OK, "{}", reset.body);
    let one_time = reset.json()["password"]
        .as_str()
        .expect("password")
        .to_owned();
    assert_eq!(
        send(&app(&state), cookie_get("/hosts", &cookie))
            .await
            .header(header::LOCATION),
        "/login",
        "her session ended"
    );
    assert_eq!(
        attempt(&state, "alice", PASSWORD).await.status,
        StatusCode::UNAUTHORIZED
    );
    let cookie = sign_in(&state, "alice", &one_time).await;
    assert_eq!(
        send(&app(&state), cookie_get("/hosts", &cookie))
            .await
            .header(header::LOCATION),
        "/account"
    );
    // A viewer may not reset anyone.
    let viewer = send(
        &app(&state),
        post_form(
            &format!("/users/{}/password-reset", alice.id),
            Some(ORIGIN),
            Some(&cookie),
            "",
        ),
    )
    .await;
    assert_ne!(viewer.status, StatusCode::OK);
}
