//! Users, sessions, API tokens.

use palisade_backend::db::DbError;
use palisade_backend::identity::{ApiToken, NewSession, NewUser, store};

use crate::{Ctx, HOUR, T0, conformance};

conformance!(
    users_are_created_found_and_unique,
    users_are_disabled_and_deleted_with_what_they_hold,
    sessions_expire_and_follow_their_user,
    api_tokens_round_trip,
);

fn new_user(name: &str) -> NewUser {
    NewUser {
        username: name.into(),
        password_hash: "$argon2id$v=19$m=19456,t=2,p=1$c2FsdHNhbHQ$aGFzaA".into(),
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
    assert_eq!(
        ctx.db
            .read("t", move |tx| store::user_by_id(tx, alice.id))
            .await
            .unwrap()
            .as_ref(),
        Some(&alice)
    );
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
    let alice = ctx
        .db
        .write("t", |tx| store::create_user(tx, &new_user("alice")))
        .await
        .unwrap();
    let token = ApiToken {
        id: "fedcba9876543210".into(),
        name: "ci".into(),
        secret_hash: vec![1; 32],
        created_at: T0,
        revoked_at: None,
        user_id: Some(alice.id),
        role_id: Some("viewer".into()),
        permissions: vec!["hosts:read".into(), "metrics:read".into()],
        host_group_id: Some(crate::WEB_GROUP.into()),
        expires_at: Some(T0 + HOUR),
        last_used_at: None,
        last_used_ip: None,
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

async fn users_are_disabled_and_deleted_with_what_they_hold(ctx: Ctx) {
    use palisade_backend::access::roles;
    let admins = |ctx: &Ctx| {
        let db = ctx.db.clone();
        async move { db.read("t", store::enabled_global_admins).await.unwrap() }
    };
    let alice = ctx
        .db
        .write("t", |tx| store::create_user(tx, &new_user("alice")))
        .await
        .unwrap();
    let bob = ctx
        .db
        .write("t", |tx| store::create_user(tx, &new_user("bob")))
        .await
        .unwrap();
    let (a, b) = (alice.id, bob.id);
    assert_eq!(admins(&ctx).await, 0);
    ctx.db
        .write("t", move |tx| roles::assign(tx, a, "admin", None, T0))
        .await
        .unwrap();
    // An admin scoped to a group is not a global admin.
    ctx.db
        .write("t", move |tx| {
            roles::assign(tx, b, "admin", Some(crate::WEB_GROUP), T0)
        })
        .await
        .unwrap();
    assert_eq!(admins(&ctx).await, 1);

    ctx.db
        .write("t", move |tx| {
            store::create_session(tx, &new_session(b"sid-a", a, T0 + HOUR))
        })
        .await
        .unwrap();
    // Disabling ends the user's sessions and removes them from the admin count.
    assert!(
        ctx.db
            .write("t", move |tx| store::set_disabled(tx, a, true))
            .await
            .unwrap()
    );
    assert_eq!(admins(&ctx).await, 0);
    assert_eq!(ctx.count("SELECT COUNT(*) FROM sessions").await, 0);
    let found = ctx
        .db
        .read("t", move |tx| store::user_by_id(tx, a))
        .await
        .unwrap()
        .unwrap();
    assert!(found.disabled);
    // Re-enabling restores the role but not the session.
    ctx.db
        .write("t", move |tx| store::set_disabled(tx, a, false))
        .await
        .unwrap();
    assert_eq!(admins(&ctx).await, 1);

    // Deleting removes the user and their assignments; a second delete finds nothing.
    assert!(
        ctx.db
            .write("t", move |tx| store::delete_user(tx, b))
            .await
            .unwrap()
    );
    assert!(
        !ctx.db
            .write("t", move |tx| store::delete_user(tx, b))
            .await
            .unwrap()
    );
    let left = ctx
        .db
        .read("t", |tx| roles::assignments(tx, None))
        .await
        .unwrap();
    assert_eq!(left.len(), 1, "{left:?}");
    assert_eq!(left[0].user_id, a);
    assert!(
        !ctx.db
            .write("t", move |tx| store::set_disabled(tx, b, true))
            .await
            .unwrap()
    );
}
