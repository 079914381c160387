//! Passkeys through the router with a real database, answered by a
//! software authenticator (real ES256 keys and signatures, the byte
//! formats a browser posts): registration from the second-factor page, the
//! second step of a sign-in, a passwordless sign-in, re-authentication;
//! replays, a counter that goes back, another user's credential, a
//! passkey that did not verify its user, each refused; removal under an
//! enrollment policy. What a real browser does is in the browser tests.

use axum::http::{Method, StatusCode, header};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ciborium::Value;
use ring::rand::SystemRandom;
use ring::signature::{ECDSA_P256_SHA256_ASN1_SIGNING, EcdsaKeyPair, KeyPair};

use super::factor_tests::{PASSWORD, get, password_step, post, request, set_cookie};
use super::factors::CHALLENGE_COOKIE;
use crate::audit::{Action, Outcome};
use crate::config::Config;
use crate::identity::auth::SESSION_COOKIE;
use crate::state::AppState;
use crate::web::testing::{
    ORIGIN, Reply, app, audit, create_user, send, session, state_with_config,
};

const RP_ID: &str = "palisade.test";
const UP: u8 = 0x01;
const UV: u8 = 0x04;
const AT: u8 = 0x40;

fn passkey_state(configure: impl FnOnce(&mut Config)) -> AppState {
    let mut config = Config::default();
    config.passkeys.rp_id = Some(RP_ID.to_owned());
    config.passkeys.origins = vec![ORIGIN.to_owned()];
    configure(&mut config);
    state_with_config(config)
}

/// A passkey held in memory: an ES256 key, its credential id and counter.
struct SoftPasskey {
    pair: EcdsaKeyPair,
    credential_id: Vec<u8>,
    count: u32,
    /// The user handle it was registered with.
    user_handle: Vec<u8>,
}

fn b64(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

fn unb64(text: &str) -> Vec<u8> {
    URL_SAFE_NO_PAD.decode(text).expect("base64url")
}

fn cbor(value: &Value) -> Vec<u8> {
    let mut out = Vec::new();
    ciborium::into_writer(value, &mut out).expect("cbor");
    out
}

fn sha256(bytes: &[u8]) -> Vec<u8> {
    ring::digest::digest(&ring::digest::SHA256, bytes)
        .as_ref()
        .to_vec()
}

fn client_data(kind: &str, challenge: &str) -> Vec<u8> {
    serde_json::json!({ "type": kind, "challenge": challenge, "origin": ORIGIN, "crossOrigin": false })
        .to_string()
        .into_bytes()
}

/// The `data-options` of the form `id` on a page, unescaped.
fn options(page: &Reply, id: &str) -> serde_json::Value {
    let form = page
        .body
        .split(&format!("id=\"{id}\""))
        .nth(1)
        .unwrap_or_else(|| panic!("no form {id} in {}", page.body));
    let raw = form
        .split("data-options=\"")
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .expect("data-options");
    let text = raw
        .replace("&quot;", "\"")
        .replace("&#34;", "\"")
        .replace("&#x27;", "'")
        .replace("&#39;", "'")
        .replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&amp;", "&")
        .replace("&#38;", "&");
    serde_json::from_str(&text).expect("options are JSON")
}

impl SoftPasskey {
    /// Answers creation `options` as `navigator.credentials.create()` does;
    /// returns the passkey and the form to post.
    fn create(options: &serde_json::Value, flags: u8) -> (SoftPasskey, String) {
        let rng = SystemRandom::new();
        let pkcs8 =
            EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_ASN1_SIGNING, &rng).expect("key");
        let pair = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_ASN1_SIGNING, pkcs8.as_ref(), &rng)
            .expect("key");
        let mut credential_id = vec![0u8; 32];
        ring::rand::SecureRandom::fill(&rng, &mut credential_id).expect("random");
        assert_eq!(options["rp"]["id"], RP_ID);
        assert_eq!(options["attestation"], "none");
        let point = pair.public_key().as_ref();
        let cose = cbor(&Value::Map(vec![
            (Value::from(1), Value::from(2)),
            (Value::from(3), Value::from(-7)),
            (Value::from(-1), Value::from(1)),
            (Value::from(-2), Value::Bytes(point[1..33].to_vec())),
            (Value::from(-3), Value::Bytes(point[33..65].to_vec())),
        ]));
        let mut auth_data = sha256(RP_ID.as_bytes());
        auth_data.push(flags | AT);
        auth_data.extend_from_slice(&0u32.to_be_bytes());
        auth_data.extend_from_slice(&[0u8; 16]);
        auth_data.extend_from_slice(
            &u16::try_from(credential_id.len())
                .expect("short")
                .to_be_bytes(),
        );
        auth_data.extend_from_slice(&credential_id);
        auth_data.extend_from_slice(&cose);
        let attestation = cbor(&Value::Map(vec![
            (Value::from("fmt"), Value::from("none")),
            (Value::from("attStmt"), Value::Map(Vec::new())),
            (Value::from("authData"), Value::Bytes(auth_data)),
        ]));
        let challenge = options["challenge"].as_str().expect("challenge");
        let form = format!(
            "name=Test+key&credential_id={}&client_data={}&attestation_object={}",
            b64(&credential_id),
            b64(&client_data("webauthn.create", challenge)),
            b64(&attestation),
        );
        let user_handle = unb64(options["user"]["id"].as_str().expect("user id"));
        let passkey = SoftPasskey {
            pair,
            credential_id,
            count: 0,
            user_handle,
        };
        (passkey, form)
    }

    /// Answers request `options` as `navigator.credentials.get()` does,
    /// with its counter moved by `step` (0: the counter stays).
    fn get(&mut self, options: &serde_json::Value, flags: u8, step: u32) -> String {
        let allowed = options["allowCredentials"].as_array().expect("a list");
        assert!(
            allowed.is_empty() || allowed.iter().any(|c| c["id"] == b64(&self.credential_id)),
            "the credential is offered: {options}"
        );
        self.count += step;
        let mut auth_data = sha256(RP_ID.as_bytes());
        auth_data.push(flags);
        auth_data.extend_from_slice(&self.count.to_be_bytes());
        let client_data = client_data(
            "webauthn.get",
            options["challenge"].as_str().expect("challenge"),
        );
        let mut signed = auth_data.clone();
        signed.extend_from_slice(&sha256(&client_data));
        let signature = self
            .pair
            .sign(&SystemRandom::new(), &signed)
            .expect("signature");
        format!(
            "credential_id={}&client_data={}&authenticator_data={}&signature={}&user_handle={}",
            b64(&self.credential_id),
            b64(&client_data),
            b64(&auth_data),
            b64(signature.as_ref()),
            b64(&self.user_handle),
        )
    }
}

/// Registers a passkey for the session `cookie`; returns it, the backup
/// codes shown and the session cookie that replaced `cookie`.
async fn register(state: &AppState, cookie: &str) -> (SoftPasskey, Vec<String>, String) {
    let page = get(state, "/account/second-factor", cookie).await;
    assert_eq!(page.status, StatusCode::OK, "{}", page.body);
    let (passkey, form) = SoftPasskey::create(&options(&page, "passkey-register"), UP | UV);
    let reply = post(state, "/account/passkeys", cookie, &form).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
    assert!(reply.body.contains("Test key"), "listed: {}", reply.body);
    let codes = reply
        .body
        .split("<li><code>")
        .skip(1)
        .filter_map(|rest| rest.split('<').next())
        .map(str::to_owned)
        .collect();
    let new_cookie = set_cookie(&reply, SESSION_COOKIE).expect("a new session id");
    assert_ne!(
        new_cookie, cookie,
        "a privilege change replaces the session id"
    );
    (passkey, codes, new_cookie)
}

async fn post_with(state: &AppState, uri: &str, cookies: &[(&str, &str)], form: &str) -> Reply {
    send(&app(state), request(Method::POST, uri, cookies, Some(form))).await
}

/// The sign-in's second step page for `challenge`.
async fn second_step_page(state: &AppState, challenge: &str) -> Reply {
    let page = send(
        &app(state),
        request(
            Method::GET,
            "/login/second-factor",
            &[(CHALLENGE_COOKIE, challenge)],
            None,
        ),
    )
    .await;
    assert_eq!(page.status, StatusCode::OK, "{}", page.body);
    page
}

#[tokio::test]
async fn a_passkey_is_registered_and_answers_the_second_step_once() {
    let state = passkey_state(|_| {});
    let user = create_user(&state, "alice", PASSWORD, "operator").await;
    let first = session(&state, &user).await;
    let (mut passkey, codes, _) = register(&state, &first).await;
    assert_eq!(
        codes.len(),
        super::totp::BACKUP_CODES,
        "the first factor brings backup codes"
    );
    let enrolled = audit(&state, 10).await;
    assert!(
        enrolled.iter().any(|e| e.action == Action::FactorEnroll
            && e.outcome == Outcome::Success
            && e.details["factor"] == "passkey"),
        "{enrolled:?}"
    );

    // The password alone no longer signs in.
    let challenge = password_step(&state, "alice").await;
    let page = second_step_page(&state, &challenge).await;
    let request_options = options(&page, "passkey-second-factor");
    let answer = passkey.get(&request_options, UP, 1);
    let reply = post_with(
        &state,
        "/login/second-factor/passkey",
        &[(CHALLENGE_COOKIE, &challenge)],
        &answer,
    )
    .await;
    assert_eq!(reply.status, StatusCode::SEE_OTHER, "{}", reply.body);
    assert_eq!(reply.header(header::LOCATION), "/hosts");
    let cookie = set_cookie(&reply, SESSION_COOKIE).expect("a session");
    assert_eq!(get(&state, "/hosts", &cookie).await.status, StatusCode::OK);
    let login = audit(&state, 5).await;
    assert!(
        login.iter().any(|e| e.action == Action::AuthLogin
            && e.outcome == Outcome::Success
            && e.details["second_factor"] == "passkey"),
        "{login:?}"
    );

    // The same answer again, with a new pending sign-in: refused (its
    // challenge was answered, and its counter is not new).
    let again = password_step(&state, "alice").await;
    let replay = post_with(
        &state,
        "/login/second-factor/passkey",
        &[(CHALLENGE_COOKIE, &again)],
        &answer,
    )
    .await;
    assert_eq!(replay.status, StatusCode::UNAUTHORIZED, "{}", replay.body);
    assert_eq!(set_cookie(&replay, SESSION_COOKIE), None);

    // A fresh challenge with a counter that went back: a cloned
    // authenticator, refused.
    let page = second_step_page(&state, &again).await;
    passkey.count = 0;
    let cloned = passkey.get(&options(&page, "passkey-second-factor"), UP, 0);
    let reply = post_with(
        &state,
        "/login/second-factor/passkey",
        &[(CHALLENGE_COOKIE, &again)],
        &cloned,
    )
    .await;
    assert_eq!(reply.status, StatusCode::UNAUTHORIZED, "{}", reply.body);
    let suspected = audit(&state, 10)
        .await
        .into_iter()
        .filter(|e| {
            e.action == Action::PasskeyCloneSuspected && e.target.as_deref() == Some("alice")
        })
        .count();
    assert_eq!(suspected, 1, "the counter that went back is reported");
    // Each refusal counted as a wrong second factor.
    let failures = audit(&state, 10)
        .await
        .into_iter()
        .filter(|e| e.action == Action::SecondFactor && e.outcome == Outcome::Failure)
        .count();
    assert_eq!(failures, 2);
}

#[tokio::test]
async fn another_users_passkey_does_not_answer_for_this_user() {
    let state = passkey_state(|_| {});
    let alice = create_user(&state, "alice", PASSWORD, "operator").await;
    let mallory = create_user(&state, "mallory", PASSWORD, "operator").await;
    let cookie = session(&state, &alice).await;
    register(&state, &cookie).await;
    let cookie = session(&state, &mallory).await;
    let (mut mallorys, _, _) = register(&state, &cookie).await;
    // Mallory knows alice's password and answers her challenge with a
    // passkey of her own, signing alice's fresh challenge.
    let challenge = password_step(&state, "alice").await;
    let page = second_step_page(&state, &challenge).await;
    let mut offered = options(&page, "passkey-second-factor");
    offered["allowCredentials"] = serde_json::json!([]);
    let answer = mallorys.get(&offered, UP | UV, 1);
    let reply = post_with(
        &state,
        "/login/second-factor/passkey",
        &[(CHALLENGE_COOKIE, &challenge)],
        &answer,
    )
    .await;
    assert_eq!(reply.status, StatusCode::UNAUTHORIZED, "{}", reply.body);
    assert_eq!(set_cookie(&reply, SESSION_COOKIE), None);
}

#[tokio::test]
async fn a_user_verifying_passkey_signs_in_without_the_password_where_allowed() {
    let state = passkey_state(|_| {});
    let user = create_user(&state, "alice", PASSWORD, "operator").await;
    let cookie = session(&state, &user).await;
    let (mut passkey, _, _) = register(&state, &cookie).await;

    let page = send(&app(&state), request(Method::GET, "/login", &[], None)).await;
    let offered = options(&page, "passkey-sign-in");
    assert_eq!(offered["userVerification"], "required");
    assert_eq!(offered["allowCredentials"], serde_json::json!([]));
    // Presence alone is not enough without the password.
    let present = passkey.get(&offered, UP, 1);
    let reply = post_with(&state, "/login/passkey", &[], &present).await;
    assert_eq!(reply.status, StatusCode::UNAUTHORIZED, "{}", reply.body);
    assert!(
        reply.body.contains(super::passkeys::PASSKEY_FAILED),
        "{}",
        reply.body
    );
    assert_eq!(set_cookie(&reply, SESSION_COOKIE), None);

    let page = send(&app(&state), request(Method::GET, "/login", &[], None)).await;
    let verified = passkey.get(&options(&page, "passkey-sign-in"), UP | UV, 1);
    let reply = post_with(&state, "/login/passkey", &[], &verified).await;
    assert_eq!(reply.status, StatusCode::SEE_OTHER, "{}", reply.body);
    let cookie = set_cookie(&reply, SESSION_COOKIE).expect("a session");
    assert_eq!(get(&state, "/hosts", &cookie).await.status, StatusCode::OK);
    // Replayed: refused.
    let reply = post_with(&state, "/login/passkey", &[], &verified).await;
    assert_eq!(reply.status, StatusCode::UNAUTHORIZED, "{}", reply.body);

    // With the policy off, the sign-in page offers none and the route
    // answers nothing.
    let strict = passkey_state(|c| c.passkeys.passwordless = false);
    let page = send(&app(&strict), request(Method::GET, "/login", &[], None)).await;
    assert!(!page.body.contains("passkey-sign-in"), "{}", page.body);
    let reply = post_with(&strict, "/login/passkey", &[], &verified).await;
    assert_eq!(reply.status, StatusCode::NOT_FOUND, "{}", reply.body);
}

#[tokio::test]
async fn a_passkey_re_authenticates_and_the_last_one_stays_when_required() {
    let state = passkey_state(|c| c.mfa.required = true);
    let user = create_user(&state, "alice", PASSWORD, "operator").await;
    let cookie = session(&state, &user).await;
    let (mut passkey, _, cookie) = register(&state, &cookie).await;

    let page = get(&state, "/reauth?next=/account/second-factor", &cookie).await;
    let offered = options(&page, "passkey-reauth");
    let answer = passkey.get(&offered, UP | UV, 1);
    let reply = post(
        &state,
        "/reauth/passkey",
        &cookie,
        &format!("next=%2Faccount%2Fsecond-factor&{answer}"),
    )
    .await;
    assert_eq!(reply.status, StatusCode::SEE_OTHER, "{}", reply.body);
    assert_eq!(reply.header(header::LOCATION), "/account/second-factor");
    let cookie = set_cookie(&reply, SESSION_COOKIE).expect("a fresh session");
    let proof = audit(&state, 5).await;
    assert!(
        proof.iter().any(|e| e.action == Action::Reauthenticate
            && e.outcome == Outcome::Success
            && e.details["proof"] == "passkey"),
        "{proof:?}"
    );

    // Every user must have a second factor: the only passkey stays.
    let page = get(&state, "/account/second-factor", &cookie).await;
    let id = page
        .body
        .split("/account/passkeys/")
        .nth(1)
        .and_then(|rest| rest.split('/').next())
        .expect("a remove form")
        .to_owned();
    let reply = post(
        &state,
        &format!("/account/passkeys/{id}/remove"),
        &cookie,
        "",
    )
    .await;
    assert_eq!(reply.status, StatusCode::SEE_OTHER);
    assert_eq!(
        reply.header(header::LOCATION),
        "/account/second-factor?passkey_error=last"
    );
    let page = get(&state, "/account/second-factor", &cookie).await;
    assert!(page.body.contains("Test key"), "still there");

    // With the policy off it goes, and the backup codes with it.
    let relaxed = {
        let mut config = (*state.config).clone();
        config.mfa.required = false;
        AppState {
            config: std::sync::Arc::new(config),
            ..state.clone()
        }
    };
    let reply = post(
        &relaxed,
        &format!("/account/passkeys/{id}/remove"),
        &cookie,
        "",
    )
    .await;
    assert_eq!(
        reply.header(header::LOCATION),
        "/account/second-factor?done=passkey_removed"
    );
    let page = get(&relaxed, "/account/second-factor", &cookie).await;
    assert!(!page.body.contains("Test key"), "{}", page.body);
    let user_id = user.id;
    let left = relaxed
        .db
        .read("codes left", move |tx| {
            super::factor_store::unused_backup_codes(tx, user_id)
        })
        .await
        .expect("read");
    assert_eq!(left, 0, "no backup codes without a factor");
}

/// How many passkeys `user_id` has.
async fn passkeys_of(state: &AppState, user_id: i64) -> usize {
    state
        .db
        .read("passkeys", move |tx| {
            super::factor_store::passkeys_of(tx, user_id)
        })
        .await
        .expect("read")
        .len()
}

#[tokio::test]
async fn a_password_someone_else_set_adds_no_passkey_and_a_reset_removes_them() {
    let state = passkey_state(|_| {});
    let user = create_user(&state, "alice", PASSWORD, "operator").await;
    let admin = create_user(&state, "root", PASSWORD, "admin").await;
    let cookie = session(&state, &user).await;
    let (mut passkey, _, _) = register(&state, &cookie).await;
    assert_eq!(passkeys_of(&state, user.id).await, 1);

    // An administrator resets alice's password (someone took her account
    // and added this passkey): the passkey goes with the sessions.
    let admin_cookie = session(&state, &admin).await;
    let reply = post(
        &state,
        &format!("/users/{}/password-reset", user.id),
        &admin_cookie,
        "",
    )
    .await;
    assert!(
        reply.status.is_success() || reply.status.is_redirection(),
        "{}",
        reply.body
    );
    assert_eq!(passkeys_of(&state, user.id).await, 0);
    let page = send(&app(&state), request(Method::GET, "/login", &[], None)).await;
    let answer = passkey.get(&options(&page, "passkey-sign-in"), UP | UV, 1);
    let reply = post_with(&state, "/login/passkey", &[], &answer).await;
    assert_eq!(reply.status, StatusCode::UNAUTHORIZED, "{}", reply.body);

    // Signed in with the one-time password, alice may not add a passkey
    // before she has chosen her own password.
    let cookie = session(&state, &user).await;
    let page = get(&state, "/account/second-factor", &cookie).await;
    let (_, form) = SoftPasskey::create(&options(&page, "passkey-register"), UP | UV);
    let reply = post(&state, "/account/passkeys", &cookie, &form).await;
    assert_eq!(
        reply.header(header::LOCATION),
        "/account/second-factor?passkey_error=password_first"
    );
    assert_eq!(passkeys_of(&state, user.id).await, 0);
}

#[tokio::test]
async fn where_passkeys_do_not_replace_the_password_re_authentication_asks_for_it() {
    let state = passkey_state(|c| {
        c.passkeys.passwordless = false;
        c.mfa.required = true;
    });
    let user = create_user(&state, "alice", PASSWORD, "operator").await;
    // A user who must enroll and has not reaches the re-authentication
    // page (adding a passkey may need it).
    let cookie = session(&state, &user).await;
    let page = get(&state, "/reauth?next=/account/second-factor", &cookie).await;
    assert_eq!(page.status, StatusCode::OK, "{}", page.body);
    let (mut passkey, _, cookie) = register(&state, &cookie).await;

    let page = get(&state, "/reauth?next=/account", &cookie).await;
    assert!(
        page.body.contains("id=\"passkey-password\""),
        "{}",
        page.body
    );
    let answer = passkey.get(&options(&page, "passkey-reauth"), UP | UV, 1);
    let alone = post(
        &state,
        "/reauth/passkey",
        &cookie,
        &format!("next=%2Faccount&{answer}"),
    )
    .await;
    assert_eq!(alone.status, StatusCode::UNAUTHORIZED, "{}", alone.body);

    let page = get(&state, "/reauth?next=/account", &cookie).await;
    let answer = passkey.get(&options(&page, "passkey-reauth"), UP | UV, 1);
    let both = post(
        &state,
        "/reauth/passkey",
        &cookie,
        &format!(
            "next=%2Faccount&password={}&{answer}",
            PASSWORD.replace(' ', "+")
        ),
    )
    .await;
    assert_eq!(both.status, StatusCode::SEE_OTHER, "{}", both.body);
    assert_eq!(both.header(header::LOCATION), "/account");
}

#[tokio::test]
async fn adding_a_passkey_renews_the_session_id_but_not_the_proof_of_identity() {
    let state = passkey_state(|_| {});
    let user = create_user(&state, "alice", PASSWORD, "operator").await;
    let cookie = session(&state, &user).await;
    // The password was given two minutes ago: recent enough to add a
    // passkey, and it stays two minutes old after.
    let proved_at = crate::now_millis() - 120_000;
    let id_hash = crate::secrets::hash_secret(&cookie);
    state
        .db
        .write("older proof", move |tx| {
            tx.execute(
                "UPDATE sessions SET authenticated_at = $2 WHERE id_hash = $1",
                crate::params![&id_hash, proved_at],
            )
        })
        .await
        .expect("update");
    let (_, _, renewed) = register(&state, &cookie).await;
    let id_hash = crate::secrets::hash_secret(&renewed);
    let (session, _) = state
        .db
        .read("renewed session", move |tx| {
            super::store::session(tx, &id_hash, crate::now_millis())
        })
        .await
        .expect("read")
        .expect("the new session");
    assert_eq!(session.authenticated_at, proved_at);
}

#[tokio::test]
async fn an_administrators_factor_reset_removes_passkeys() {
    let state = passkey_state(|_| {});
    let user = create_user(&state, "alice", PASSWORD, "operator").await;
    let admin = create_user(&state, "root", PASSWORD, "admin").await;
    let cookie = session(&state, &user).await;
    register(&state, &cookie).await;
    assert_eq!(passkeys_of(&state, user.id).await, 1);
    let admin_cookie = session(&state, &admin).await;
    let reply = post(
        &state,
        &format!("/users/{}/factors/reset", user.id),
        &admin_cookie,
        "",
    )
    .await;
    assert_eq!(reply.status, StatusCode::SEE_OTHER, "{}", reply.body);
    assert_eq!(passkeys_of(&state, user.id).await, 0);
}
