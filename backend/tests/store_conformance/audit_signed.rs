//! Signed checkpoints and retention: every kind of tampering someone who
//! holds the database (but not the checkpoint key) can do is reported by
//! `audit::verify`, and pruning leaves a trail that still verifies.

use palisade_backend::audit::checkpoint::{self, AuditKey, Checkpoint, Kind};
use palisade_backend::audit::verify::{Problem, Report, verify};
use palisade_backend::audit::{chain, store};
use palisade_backend::db::Dialect;

use crate::{Ctx, T0, audit_event, conformance};

conformance!(
    every_kind_of_tampering_is_reported,
    pruning_leaves_a_signed_boundary_the_trail_verifies_from,
);

async fn append(ctx: &Ctx, n: i64) {
    let event = audit_event(n);
    ctx.db
        .write("t", move |tx| store::append(tx, &event).map(|_| ()))
        .await
        .unwrap();
}

async fn sign(ctx: &Ctx, key: &std::sync::Arc<AuditKey>) -> Option<Checkpoint> {
    let key = key.clone();
    ctx.db
        .write("t", move |tx| checkpoint::sign_head(tx, &key, T0 + 1_000))
        .await
        .unwrap()
}

async fn report(ctx: &Ctx, key: &AuditKey, copies: &[(String, Vec<Checkpoint>)]) -> Report {
    let (public, copies) = (key.public(), copies.to_vec());
    ctx.db
        .read("t", move |tx| verify(tx, &public, &copies))
        .await
        .unwrap()
}

/// SQL that lets the statements after it change the trail as an intruder
/// with the database would (triggers off).
fn unguarded(dialect: Dialect, sql: &str) -> String {
    match dialect {
        Dialect::Sqlite => format!(
            "DROP TRIGGER IF EXISTS audit_log_no_update; DROP TRIGGER IF EXISTS audit_log_no_delete; {sql}"
        ),
        Dialect::Postgres => format!("ALTER TABLE audit_log DISABLE TRIGGER USER; {sql}"),
    }
}

/// Recomputes every hash of the chain as stored, the way someone who
/// edited rows and wants the chain to verify again would.
async fn rehash_everything(ctx: &Ctx) {
    let rows = ctx
        .db
        .read("t", |tx| {
            let mut rows = Vec::new();
            store::each_stored(tx, |r| {
                rows.push(r);
                Ok(())
            })?;
            Ok(rows)
        })
        .await
        .unwrap();
    let mut prev = chain::GENESIS_HASH.to_owned();
    let mut sql = String::new();
    for mut row in rows {
        row.prev_hash = prev.clone();
        row.hash = chain::hash(&row.prev_hash, &row.canonical());
        sql.push_str(&format!(
            "UPDATE audit_log SET prev_hash = '{}', hash = '{}' WHERE id = {};",
            row.prev_hash, row.hash, row.id
        ));
        prev = row.hash;
    }
    ctx.raw(&unguarded(ctx.dialect(), &sql));
}

async fn every_kind_of_tampering_is_reported(ctx: Ctx) {
    let dialect = ctx.dialect();
    drop(ctx);
    // Each case: a fresh trail of 8 rows, signed at row 6, then `tamper`.
    struct Case {
        name: &'static str,
        tamper: &'static str,
        rehash: bool,
        /// What the chain alone says (store::verify).
        chain_alone: Option<i64>,
        expected: Vec<Problem>,
    }
    let cases = vec![
        Case {
            name: "untouched",
            tamper: "",
            rehash: false,
            chain_alone: None,
            expected: vec![],
        },
        Case {
            name: "an edited row",
            tamper: "UPDATE audit_log SET actor = 'user:mallory' WHERE id = 3;",
            rehash: false,
            chain_alone: Some(3),
            expected: vec![Problem::ChainBroken { id: 3 }],
        },
        Case {
            name: "a deleted row",
            tamper: "DELETE FROM audit_log WHERE id = 4;",
            rehash: false,
            chain_alone: Some(5),
            expected: vec![Problem::ChainBroken { id: 5 }],
        },
        Case {
            name: "two rows swapped",
            tamper: "UPDATE audit_log SET id = -2 WHERE id = 2; UPDATE audit_log SET id = 2 WHERE id = 3; UPDATE audit_log SET id = 3 WHERE id = -2;",
            rehash: false,
            chain_alone: Some(2),
            expected: vec![Problem::ChainBroken { id: 2 }],
        },
        Case {
            name: "the whole chain rewritten after an edit",
            tamper: "UPDATE audit_log SET outcome = 'failure' WHERE id = 2;",
            rehash: true,
            chain_alone: None,
            expected: vec![Problem::Rewritten {
                id: 6,
                checkpoint: 1,
            }],
        },
        Case {
            name: "rows cut off the end past the checkpoint",
            tamper: "DELETE FROM audit_log WHERE id >= 5;",
            rehash: false,
            chain_alone: None,
            expected: vec![Problem::Truncated {
                checkpoint: 1,
                audit_id: 6,
                last_id: Some(4),
            }],
        },
        Case {
            name: "the oldest rows deleted",
            tamper: "DELETE FROM audit_log WHERE id <= 2;",
            rehash: false,
            chain_alone: Some(3),
            expected: vec![Problem::StartMissing {
                first_id: 3,
                expected_id: 1,
            }],
        },
        Case {
            name: "a checkpoint edited to match an edit",
            tamper: "UPDATE audit_checkpoints SET audit_id = 5;",
            rehash: false,
            chain_alone: None,
            expected: vec![Problem::BadSignature {
                checkpoint: 1,
                source: "database".into(),
            }],
        },
        Case {
            name: "a fake prune boundary to hide deleted rows",
            tamper: "DELETE FROM audit_log WHERE id <= 3; INSERT INTO audit_checkpoints (id, kind, audit_id, audit_hash, at, key_id, signature) SELECT 2, 'prune', 3, prev_hash, 0, 'x', '00' FROM audit_log WHERE id = 4;",
            rehash: false,
            chain_alone: None,
            expected: vec![
                Problem::BadSignature {
                    checkpoint: 2,
                    source: "database".into(),
                },
                Problem::StartMissing {
                    first_id: 4,
                    expected_id: 1,
                },
            ],
        },
    ];
    for case in cases {
        let ctx = match dialect {
            Dialect::Sqlite => Ctx::sqlite().await,
            Dialect::Postgres => Ctx::postgres().await,
        };
        let key = std::sync::Arc::new(AuditKey::ephemeral().unwrap());
        for n in 1..=6 {
            append(&ctx, n).await;
        }
        let signed = sign(&ctx, &key).await.expect("a checkpoint");
        assert_eq!(
            (signed.id, signed.audit_id, signed.kind),
            (1, 6, Kind::Head)
        );
        assert!(sign(&ctx, &key).await.is_none(), "nothing new to sign");
        for n in 7..=8 {
            append(&ctx, n).await;
        }
        if !case.tamper.is_empty() {
            ctx.raw(&unguarded(dialect, case.tamper));
        }
        if case.rehash {
            rehash_everything(&ctx).await;
        }
        assert_eq!(
            ctx.db.read("t", store::verify).await.unwrap(),
            case.chain_alone,
            "{}: the chain alone",
            case.name
        );
        let r = report(&ctx, &key, &[]).await;
        assert_eq!(r.problems, case.expected, "{}: {r}", case.name);
        assert_eq!(r.intact(), case.expected.is_empty(), "{}", case.name);
        if case.name == "untouched" {
            assert_eq!((r.rows, r.signed_up_to, r.unsigned_tail), (8, Some(6), 2));
            assert!(r.to_string().contains("the audit trail verifies"), "{r}");
        } else {
            assert!(r.to_string().contains("TAMPERED"), "{r}");
        }
    }

    // A rewrite that also deletes every checkpoint from the database is
    // still caught by a copy kept elsewhere; a checkpoint forged with
    // another key is refused.
    let ctx = match dialect {
        Dialect::Sqlite => Ctx::sqlite().await,
        Dialect::Postgres => Ctx::postgres().await,
    };
    let key = std::sync::Arc::new(AuditKey::ephemeral().unwrap());
    for n in 1..=6 {
        append(&ctx, n).await;
    }
    let signed = sign(&ctx, &key).await.unwrap();
    let copy = vec![("exported.jsonl".to_owned(), vec![signed])];
    ctx.raw(&unguarded(
        dialect,
        "UPDATE audit_log SET actor = 'user:mallory' WHERE id = 1; DELETE FROM audit_checkpoints;",
    ));
    rehash_everything(&ctx).await;
    assert!(
        report(&ctx, &key, &[]).await.intact(),
        "without a copy, nothing is left to compare"
    );
    let r = report(&ctx, &key, &copy).await;
    assert_eq!(
        r.problems,
        vec![
            Problem::MissingCheckpoint {
                checkpoint: 1,
                source: "exported.jsonl".into()
            },
            Problem::Rewritten {
                id: 6,
                checkpoint: 1
            },
        ],
        "{r}"
    );
    let intruder = std::sync::Arc::new(AuditKey::ephemeral().unwrap());
    sign(&ctx, &intruder).await.unwrap();
    let r = report(&ctx, &key, &[]).await;
    assert_eq!(
        r.problems,
        vec![Problem::BadSignature {
            checkpoint: 1,
            source: "database".into()
        }],
        "{r}"
    );
}

async fn pruning_leaves_a_signed_boundary_the_trail_verifies_from(ctx: Ctx) {
    let key = std::sync::Arc::new(AuditKey::ephemeral().unwrap());
    // Rows 1..=20 at T0 + n.
    for n in 1..=20 {
        append(&ctx, n).await;
    }
    sign(&ctx, &key).await.unwrap();
    let prune = |cutoff: i64| {
        let (db, key) = (ctx.db.clone(), key.clone());
        async move {
            tokio::task::spawn_blocking(move || checkpoint::prune(&db, &key, cutoff, T0 + 5_000))
                .await
                .unwrap()
                .unwrap()
        }
    };
    // Older than T0 + 8: rows 1..=7.
    let pruned = prune(T0 + 8).await.expect("pruned");
    assert_eq!((pruned.rows, pruned.boundary.audit_id), (7, 7));
    assert_eq!(pruned.boundary.kind, Kind::Prune);
    assert!(prune(T0 + 8).await.is_none(), "nothing more to prune");
    assert_eq!(ctx.count("SELECT MIN(id) FROM audit_log").await, 8);
    assert_eq!(ctx.db.read("t", store::verify).await.unwrap(), None);
    let r = report(&ctx, &key, &[]).await;
    assert!(r.intact(), "{r}");
    assert_eq!((r.boundary, r.first_id, r.rows), (Some(7), Some(8), 13));

    // Rows after the boundary are still append-only.
    let refused = ctx
        .try_raw("DELETE FROM audit_log WHERE id = 8")
        .unwrap_err();
    assert!(refused.contains("append-only"), "{refused}");

    // An interrupted pruning (boundary signed, rows not yet deleted)
    // verifies too, and the next pruning finishes it.
    let (db, k) = (ctx.db.clone(), key.clone());
    db.write("t", move |tx| {
        let boundary_hash: String =
            tx.query_one("SELECT hash FROM audit_log WHERE id = 12", &[], |r| {
                r.get(0)
            })?;
        let c = k.sign(3, Kind::Prune, 12, &boundary_hash, T0 + 6_000);
        checkpoint::insert(tx, &c)
    })
    .await
    .unwrap();
    let r = report(&ctx, &key, &[]).await;
    assert!(r.intact(), "{r}");
    assert_eq!((r.boundary, r.first_id), (Some(12), Some(13)));
    assert!(prune(T0 + 8).await.is_none());
    // The rows behind the new boundary go with the next pruning that moves it.
    let pruned = prune(T0 + 15).await.expect("pruned");
    assert_eq!(pruned.boundary.audit_id, 14);
    assert_eq!(ctx.count("SELECT MIN(id) FROM audit_log").await, 15);
    let r = report(&ctx, &key, &[]).await;
    assert!(r.intact(), "{r}");
    // The head is never pruned, however old.
    let pruned = prune(T0 + 1_000_000).await.expect("pruned");
    assert_eq!(pruned.boundary.audit_id, 19);
    assert_eq!(ctx.count("SELECT COUNT(*) FROM audit_log").await, 1);
    assert!(report(&ctx, &key, &[]).await.intact());
    // Deleting what is left (without a new boundary) is tampering.
    ctx.raw(&unguarded(
        ctx.dialect(),
        "DELETE FROM audit_log WHERE id = 20;",
    ));
    let r = report(&ctx, &key, &[]).await;
    assert_eq!(
        r.problems,
        vec![Problem::Truncated {
            checkpoint: 1,
            audit_id: 20,
            last_id: None
        }],
        "{r}"
    );
}
