//! The audit log: appending, listing, the chain, tampering.

use palisade_backend::audit::chain::GENESIS_HASH;
use palisade_backend::audit::{Actor, store};
use palisade_backend::db::Dialect;

use crate::{Ctx, audit_event, conformance};

conformance!(
    audit_events_chain_and_list_newest_first,
    audit_rows_cannot_be_updated_or_deleted,
    tampering_is_detected_at_the_tampered_row,
    two_writers_append_without_breaking_the_chain,
);

async fn append(ctx: &Ctx, n: i64) -> palisade_backend::audit::AuditEvent {
    let event = audit_event(n);
    ctx.db
        .write("t", move |tx| store::append(tx, &event))
        .await
        .unwrap()
}

async fn verify(ctx: &Ctx) -> Option<i64> {
    ctx.db.read("t", store::verify).await.unwrap()
}

async fn audit_events_chain_and_list_newest_first(ctx: Ctx) {
    assert_eq!(verify(&ctx).await, None);
    let mut appended = Vec::new();
    for n in 1..=5 {
        appended.push(append(&ctx, n).await);
    }
    assert_eq!(
        appended.iter().map(|e| e.id).collect::<Vec<_>>(),
        [1, 2, 3, 4, 5]
    );
    assert!(appended.iter().all(|e| e.hash.len() == 64));
    let first_prev: String = ctx
        .db
        .read("t", |tx| {
            tx.query_one("SELECT prev_hash FROM audit_log WHERE id = 1", &[], |r| {
                r.get(0)
            })
        })
        .await
        .unwrap();
    assert_eq!(first_prev, GENESIS_HASH);

    let listed = ctx.db.read("t", |tx| store::latest(tx, 3)).await.unwrap();
    assert_eq!(listed.iter().map(|e| e.id).collect::<Vec<_>>(), [5, 4, 3]);
    assert_eq!(listed[0].actor, Actor::User("alice5".into()));
    assert_eq!(
        listed[0].details,
        serde_json::json!({ "n": 5, "note": "a \"quoted\" detail" })
    );
    assert_eq!(listed[0], appended[4]);
    assert_eq!(listed[1].target.as_deref(), Some("host:4"));
    assert_eq!(listed[0].target, None);
    assert_eq!(ctx.db.read("t", store::count).await.unwrap(), 5);
    assert_eq!(verify(&ctx).await, None);
}

async fn audit_rows_cannot_be_updated_or_deleted(ctx: Ctx) {
    append(&ctx, 1).await;
    let update = ctx
        .try_raw("UPDATE audit_log SET actor = 'mallory'")
        .unwrap_err();
    assert!(update.contains("append-only"), "{update}");
    let delete = ctx.try_raw("DELETE FROM audit_log").unwrap_err();
    assert!(delete.contains("append-only"), "{delete}");
    if ctx.dialect() == Dialect::Postgres {
        let truncate = ctx.try_raw("TRUNCATE audit_log").unwrap_err();
        assert!(truncate.contains("append-only"), "{truncate}");
    }
}

async fn tampering_is_detected_at_the_tampered_row(ctx: Ctx) {
    let dialect = ctx.dialect();
    drop(ctx);
    let mut tampers = vec![
        (
            3,
            "UPDATE audit_log SET actor = 'user:mallory' WHERE id = 3",
        ),
        (
            2,
            "UPDATE audit_log SET details = '{\"n\":2, \"note\":\"edited\"}' WHERE id = 2",
        ),
        (4, "UPDATE audit_log SET target = NULL WHERE id = 4"),
        (5, "UPDATE audit_log SET at = at + 1 WHERE id = 5"),
        // Deleting a row breaks the chain at the row after it.
        (4, "DELETE FROM audit_log WHERE id = 3"),
        (
            2,
            "UPDATE audit_log SET outcome = 'failure', hash = '00' || substr(hash, 3) WHERE id = 2",
        ),
        (1, "UPDATE audit_log SET prev_hash = hash WHERE id = 1"),
        // Reordering: two rows swap places.
        (
            2,
            "UPDATE audit_log SET id = -2 WHERE id = 2; UPDATE audit_log SET id = 2 WHERE id = 3; UPDATE audit_log SET id = 3 WHERE id = -2",
        ),
    ];
    if dialect == Dialect::Sqlite {
        // SQLite keeps any value in any column: a row whose column lost its
        // type is reported, not a crash.
        tampers.push((2, "UPDATE audit_log SET at = 'yesterday' WHERE id = 2"));
    }
    for (bad_id, tamper) in tampers {
        let ctx = match dialect {
            Dialect::Sqlite => Ctx::sqlite().await,
            Dialect::Postgres => Ctx::postgres().await,
        };
        for n in 1..=5 {
            append(&ctx, n).await;
        }
        let prelude = match dialect {
            Dialect::Sqlite => {
                "DROP TRIGGER audit_log_no_update; DROP TRIGGER audit_log_no_delete; PRAGMA ignore_check_constraints = ON;"
            }
            Dialect::Postgres => "ALTER TABLE audit_log DISABLE TRIGGER USER;",
        };
        ctx.raw(&format!("{prelude} {tamper}"));
        assert_eq!(verify(&ctx).await, Some(bad_id), "{tamper}");
    }
}

/// Two handles on one database (two processes on a SQLite file, two
/// replicas on PostgreSQL) appending at once keep one unbroken chain.
async fn two_writers_append_without_breaking_the_chain(ctx: Ctx) {
    let url = palisade_backend::db::DatabaseUrl::parse(&ctx.url).unwrap();
    let other = tokio::task::spawn_blocking(move || palisade_backend::db::Db::open(&url))
        .await
        .unwrap()
        .unwrap();
    let mut tasks = Vec::new();
    for (i, db) in [ctx.db.clone(), other].into_iter().enumerate() {
        tasks.push(tokio::spawn(async move {
            for n in 0..25 {
                let event = audit_event(i as i64 * 100 + n);
                db.write("t", move |tx| store::append(tx, &event))
                    .await
                    .unwrap();
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    assert_eq!(verify(&ctx).await, None);
    assert_eq!(ctx.db.read("t", store::count).await.unwrap(), 50);
}
