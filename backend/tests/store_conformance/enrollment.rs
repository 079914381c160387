//! Enrollment tokens and the enrollment transaction.

use palisade_backend::db::{DbError, Millis};
use palisade_backend::enrollment::{EnrollRefusal, store};

use crate::{Ctx, HOUR, T0, conformance, enrollment_token, new_host};

conformance!(
    enrollment_tokens_round_trip_list_and_revoke,
    enrollment_creates_the_host_and_records_the_use,
    enrollment_refusals_create_nothing,
    the_daily_limit_counts_only_the_last_24_hours,
    concurrent_enrollments_cannot_both_take_the_last_use,
);

async fn enrollment_tokens_round_trip_list_and_revoke(ctx: Ctx) {
    let token = enrollment_token("0123456789abcdef", Some(5));
    let mut open = enrollment_token("1111111111111111", None);
    open.cidrs.clear();
    open.host_group_id = None;
    open.expires_at = None;
    open.created_at = T0 + 1;
    let (t, o) = (token.clone(), open.clone());
    ctx.db
        .write("t", move |tx| {
            store::create_token(tx, &t)?;
            store::create_token(tx, &o)
        })
        .await
        .unwrap();
    let t = token.clone();
    let again = ctx
        .db
        .write("t", move |tx| store::create_token(tx, &t))
        .await;
    assert!(matches!(again, Err(DbError::Conflict { .. })), "{again:?}");

    let found = ctx
        .db
        .read("t", |tx| store::token(tx, "0123456789abcdef"))
        .await
        .unwrap();
    assert_eq!(found.as_ref(), Some(&token));
    assert!(
        ctx.db
            .read("t", |tx| store::token(tx, "2222222222222222"))
            .await
            .unwrap()
            .is_none()
    );

    let list = ctx.db.read("t", store::list_tokens).await.unwrap();
    assert_eq!(list, [token.clone(), open]);

    for at in [T0 + 10, T0 + 20] {
        assert!(
            ctx.db
                .write("t", move |tx| store::revoke_token(
                    tx,
                    "0123456789abcdef",
                    at
                ))
                .await
                .unwrap()
        );
    }
    let revoked = ctx
        .db
        .read("t", |tx| store::token(tx, "0123456789abcdef"))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        revoked.revoked_at,
        Some(T0 + 10),
        "the first revocation time is kept"
    );
    assert!(
        !ctx.db
            .write("t", |tx| store::revoke_token(tx, "2222222222222222", T0))
            .await
            .unwrap()
    );
}

async fn enroll(
    ctx: &Ctx,
    id: &'static str,
    now: Millis,
) -> Result<palisade_backend::hosts::Host, EnrollRefusal> {
    let host = new_host(id, "0123456789abcdef");
    ctx.db
        .write("t", move |tx| store::enroll_host(tx, now, &host))
        .await
        .unwrap()
}

async fn enrollment_creates_the_host_and_records_the_use(ctx: Ctx) {
    let token = enrollment_token("0123456789abcdef", None);
    ctx.db
        .write("t", move |tx| store::create_token(tx, &token))
        .await
        .unwrap();
    let host = enroll(&ctx, "h1", T0).await.unwrap();
    assert_eq!(host.id, "h1");
    assert_eq!(host.hostname, "h1.example");
    assert_eq!(
        host.host_group,
        Some((crate::WEB_GROUP.to_owned(), "web".to_owned()))
    );
    assert_eq!(host.enrolled_from, "10.1.2.3");
    assert_eq!(host.stored_up_to_seq, 0);
    assert!(host.last_seen.is_none() && host.agent_health.is_none() && host.os_id.is_none());
    assert_eq!(
        ctx.count("SELECT COUNT(*) FROM enrollment_uses WHERE host_id = 'h1'")
            .await,
        1
    );

    // Same host id again: a conflict, and no second use is recorded.
    let host = new_host("h1", "0123456789abcdef");
    match ctx
        .db
        .write("t", move |tx| store::enroll_host(tx, T0 + 1, &host))
        .await
    {
        Err(DbError::Conflict { what }) => assert!(what.contains("h1"), "{what}"),
        other => panic!("expected a conflict, got {other:?}"),
    }
    assert_eq!(ctx.count("SELECT COUNT(*) FROM enrollment_uses").await, 1);
}

async fn enrollment_refusals_create_nothing(ctx: Ctx) {
    let host = new_host("h1", "9999999999999999");
    let unknown = ctx
        .db
        .write("t", move |tx| store::enroll_host(tx, T0, &host))
        .await
        .unwrap();
    assert_eq!(unknown.unwrap_err(), EnrollRefusal::UnknownToken);

    let mut expired = enrollment_token("0123456789abcdef", None);
    expired.expires_at = Some(T0);
    ctx.db
        .write("t", move |tx| store::create_token(tx, &expired))
        .await
        .unwrap();
    assert_eq!(
        enroll(&ctx, "h1", T0).await.unwrap_err(),
        EnrollRefusal::ExpiredToken
    );
    ctx.raw("UPDATE enrollment_tokens SET expires_at = NULL, revoked_at = 5");
    assert_eq!(
        enroll(&ctx, "h1", T0).await.unwrap_err(),
        EnrollRefusal::RevokedToken
    );
    assert_eq!(ctx.count("SELECT COUNT(*) FROM hosts").await, 0);
    assert_eq!(ctx.count("SELECT COUNT(*) FROM enrollment_uses").await, 0);
}

async fn the_daily_limit_counts_only_the_last_24_hours(ctx: Ctx) {
    let token = enrollment_token("0123456789abcdef", Some(2));
    ctx.db
        .write("t", move |tx| store::create_token(tx, &token))
        .await
        .unwrap();
    assert!(enroll(&ctx, "h1", T0).await.is_ok());
    assert!(enroll(&ctx, "h2", T0 + HOUR).await.is_ok());
    assert_eq!(
        enroll(&ctx, "h3", T0 + 2 * HOUR).await.unwrap_err(),
        EnrollRefusal::RateLimited
    );
    // The window is (now - 24h, now]: at T0 + 24h the use at T0 has left it.
    assert_eq!(
        enroll(&ctx, "h3", T0 + 24 * HOUR - 1).await.unwrap_err(),
        EnrollRefusal::RateLimited
    );
    assert!(enroll(&ctx, "h3", T0 + 24 * HOUR).await.is_ok());
    assert_eq!(
        enroll(&ctx, "h4", T0 + 24 * HOUR + 1).await.unwrap_err(),
        EnrollRefusal::RateLimited
    );
    assert!(enroll(&ctx, "h4", T0 + 25 * HOUR).await.is_ok());
    assert_eq!(ctx.count("SELECT COUNT(*) FROM hosts").await, 4);
}

/// Many enrollments at once with one use left: exactly one gets it (the
/// token's row is locked inside the transaction on PostgreSQL; SQLite's
/// write lock serializes them).
async fn concurrent_enrollments_cannot_both_take_the_last_use(ctx: Ctx) {
    let token = enrollment_token("0123456789abcdef", Some(1));
    ctx.db
        .write("t", move |tx| store::create_token(tx, &token))
        .await
        .unwrap();
    let mut tasks = Vec::new();
    for n in 0..8 {
        let db = ctx.db.clone();
        tasks.push(tokio::spawn(async move {
            let host = new_host(&format!("race-{n}"), "0123456789abcdef");
            db.write("t", move |tx| store::enroll_host(tx, T0, &host))
                .await
                .unwrap()
        }));
    }
    let mut won = 0;
    for task in tasks {
        match task.await.unwrap() {
            Ok(_) => won += 1,
            Err(refusal) => assert_eq!(refusal, EnrollRefusal::RateLimited),
        }
    }
    assert_eq!(won, 1);
    assert_eq!(ctx.count("SELECT COUNT(*) FROM hosts").await, 1);
}
