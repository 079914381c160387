//! Users, sessions, API tokens.

use palisade_backend::db::DbError;
use palisade_backend::identity::{ApiToken, NewSession, NewUser, Role, store};

use crate::{Ctx, HOUR, T0, conformance};

conformance!(
    users_are_created_found_and_unique,
    a_corrupt_role_is_reported_not_panicked,
    sessions_expire_and_follow_their_user,
    api_tokens_round_trip,
);

fn new_user(name: &str) -> NewUser {
    NewUser {
        username: name.into(),
        password_hash: "$argon2id$v=19$m=19456,t=2,p=1$c2FsdHNhbHQ$aGFzaA".into(),
        role: Role::Operator,
        created_at: T0,
    }
}

fn new_session(id: &[u8], user_id: i64, expires_at: i64) -> NewSession {
    NewSession {
        id_hash: id.to_vec(),
        user_id,
        created_at: T0,
        expires_at,
        source_ip: "192.0.2.7".into(),
        user_agent: "test-agent/1".into(),
    }
}

async fn users_are_created_found_and_unique(ctx: Ctx) {
    let alice = ctx
        .db
        .write("t", |tx| store::create_user(tx, &new_user("alice")))
        .await
        .unwrap();
    assert!(!alice.disabled);
    let found = ctx
        .db
        .read("t", |tx| store::user_by_name(tx, "alice"))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(found, alice);
    assert_eq!(found.role, Role::Operator);
    assert!(
        ctx.db
            .read("t", |tx| store::user_by_name(tx, "bob"))
            .await
            .unwrap()
            .is_none()
    );
    match ctx
        .db
        .write("t", |tx| store::create_user(tx, &new_user("alice")))
        .await
    {
        Err(DbError::Conflict { what }) => assert!(what.contains("alice"), "{what}"),
        other => panic!("expected a conflict, got {other:?}"),
    }
    let bob = ctx
        .db
        .write("t", |tx| store::create_user(tx, &new_user("bob")))
        .await
        .unwrap();
    assert!(bob.id > alice.id);
    let names: Vec<String> = ctx
        .db
        .read("t", store::list_users)
        .await
        .unwrap()
        .into_iter()
        .map(|u| u.username)
        .collect();
    assert_eq!(names, ["alice", "bob"]);
}

async fn a_corrupt_role_is_reported_not_panicked(ctx: Ctx) {
    ctx.db
        .write("t", |tx| store::create_user(tx, &new_user("alice")))
        .await
        .unwrap();
    match ctx.dialect() {
        palisade_backend::db::Dialect::Sqlite => {
            ctx.raw("PRAGMA ignore_check_constraints = ON; UPDATE users SET role = 'root'");
        }
        palisade_backend::db::Dialect::Postgres => {
            ctx.raw("ALTER TABLE users DROP CONSTRAINT users_role_check; UPDATE users SET role = 'root'");
        }
    }
    let loaded = ctx
        .db
        .read("t", |tx| store::user_by_name(tx, "alice"))
        .await;
    assert!(matches!(loaded, Err(DbError::Corrupt(_))), "{loaded:?}");
}

async fn sessions_expire_and_follow_their_user(ctx: Ctx) {
    let alice = ctx
        .db
        .write("t", |tx| store::create_user(tx, &new_user("alice")))
        .await
        .unwrap();
    let id = alice.id;
    ctx.db
        .write("t", move |tx| {
            store::create_session(tx, &new_session(b"sid-1", id, T0 + HOUR))
        })
        .await
        .unwrap();
    let again = ctx
        .db
        .write("t", move |tx| {
            store::create_session(tx, &new_session(b"sid-1", id, T0 + HOUR))
        })
        .await;
    assert!(matches!(again, Err(DbError::Conflict { .. })), "{again:?}");

    let session = |sid: &'static [u8], now: i64| {
        let db = ctx.db.clone();
        async move {
            db.read("t", move |tx| store::session(tx, sid, now))
                .await
                .unwrap()
        }
    };
    let (s, user) = session(b"sid-1", T0 + 1).await.unwrap();
    assert_eq!(s.user_id, alice.id);
    assert_eq!(s.last_seen_at, T0);
    assert_eq!(s.source_ip, "192.0.2.7");
    assert_eq!(user.username, "alice");
    assert!(session(b"sid-2", T0).await.is_none());
    // Expired at exactly expires_at, and after.
    assert!(session(b"sid-1", T0 + HOUR - 1).await.is_some());
    assert!(session(b"sid-1", T0 + HOUR).await.is_none());

    // Touching moves the expiry and the activity time.
    ctx.db
        .write("t", |tx| {
            store::touch_session(tx, b"sid-1", T0 + HOUR / 2, T0 + 3 * HOUR)
        })
        .await
        .unwrap();
    let (s, _) = session(b"sid-1", T0 + 2 * HOUR).await.unwrap();
    assert_eq!(
        (s.last_seen_at, s.expires_at),
        (T0 + HOUR / 2, T0 + 3 * HOUR)
    );
    // Touching an expired session does not revive it.
    ctx.db
        .write("t", |tx| {
            store::touch_session(tx, b"sid-1", T0 + 3 * HOUR, T0 + 9 * HOUR)
        })
        .await
        .unwrap();
    assert!(session(b"sid-1", T0 + 4 * HOUR).await.is_none());

    // A disabled user's sessions are not returned.
    ctx.db
        .write("t", move |tx| {
            store::create_session(tx, &new_session(b"sid-3", id, T0 + HOUR))
        })
        .await
        .unwrap();
    assert!(session(b"sid-3", T0).await.is_some());
    ctx.raw("UPDATE users SET disabled = TRUE WHERE username = 'alice'");
    assert!(session(b"sid-3", T0).await.is_none());
    ctx.raw("UPDATE users SET disabled = FALSE WHERE username = 'alice'");
    assert!(session(b"sid-3", T0).await.is_some());

    ctx.db
        .write("t", |tx| store::delete_session(tx, b"sid-3"))
        .await
        .unwrap();
    assert!(session(b"sid-3", T0).await.is_none());
    ctx.db
        .write("t", |tx| store::delete_session(tx, b"sid-3"))
        .await
        .unwrap();

    // A session for a user that does not exist is refused.
    let orphan = ctx
        .db
        .write("t", move |tx| {
            store::create_session(tx, &new_session(b"sid-4", id + 100, T0 + HOUR))
        })
        .await;
    assert!(orphan.is_err());
}

async fn api_tokens_round_trip(ctx: Ctx) {
    let token = ApiToken {
        id: "fedcba9876543210".into(),
        name: "ci".into(),
        secret_hash: vec![1; 32],
        created_at: T0,
        revoked_at: None,
    };
    let t = token.clone();
    ctx.db
        .write("t", move |tx| store::create_api_token(tx, &t))
        .await
        .unwrap();
    let found = ctx
        .db
        .read("t", |tx| store::api_token(tx, "fedcba9876543210"))
        .await
        .unwrap();
    assert_eq!(found.as_ref(), Some(&token));
    assert!(
        ctx.db
            .read("t", |tx| store::api_token(tx, "0000000000000000"))
            .await
            .unwrap()
            .is_none()
    );
    let again = ctx
        .db
        .write("t", move |tx| store::create_api_token(tx, &token))
        .await;
    assert!(matches!(again, Err(DbError::Conflict { .. })), "{again:?}");
}
