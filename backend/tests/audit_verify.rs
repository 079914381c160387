//! `palisade-backend audit verify` on a real backend's data: intact after a
//! run, and after someone who holds the database file (not the checkpoint
//! key) edits a row, recomputes the whole chain and deletes the
//! checkpoints, it exits 1 and says what happened, from the backend's own
//! copy of the checkpoints or from an exported one checked with the public
//! key alone.

mod support;

use palisade_backend::audit::chain;
use support::*;

fn verify(backend: &Backend, extra: &[&str]) -> (bool, String) {
    let mut args = vec!["audit", "verify"];
    args.extend_from_slice(extra);
    let out = backend.cli(&args);
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    match out.status.code() {
        Some(0) => (true, text),
        Some(1) => (false, text),
        other => panic!("audit verify exited {other:?}: {text}"),
    }
}

/// What an intruder with the SQLite file does: edit a row, recompute every
/// hash after it, delete the checkpoints.
fn rewrite_history(db_path: &std::path::Path) {
    let conn = rusqlite::Connection::open(db_path).expect("open");
    conn.execute_batch(
        "DROP TRIGGER audit_log_no_update; DROP TRIGGER audit_log_no_delete;
         UPDATE audit_log SET actor = 'user:nobody' WHERE action = 'user.create';
         DELETE FROM audit_checkpoints;",
    )
    .expect("tamper");
    let mut rows = Vec::new();
    {
        let mut stmt = conn
            .prepare("SELECT id, at, actor, action, target, source_ip, user_agent, outcome, details FROM audit_log ORDER BY id")
            .expect("prepare");
        let mut q = stmt.query([]).expect("query");
        while let Some(r) = q.next().expect("row") {
            rows.push(chain::StoredRow {
                id: r.get(0).expect("id"),
                at: r.get(1).expect("at"),
                actor: r.get(2).expect("actor"),
                action: r.get(3).expect("action"),
                target: r.get(4).expect("target"),
                source_ip: r.get(5).expect("source_ip"),
                user_agent: r.get(6).expect("user_agent"),
                outcome: r.get(7).expect("outcome"),
                details: r.get(8).expect("details"),
                prev_hash: String::new(),
                hash: String::new(),
            });
        }
    }
    let mut prev = chain::GENESIS_HASH.to_owned();
    for mut row in rows {
        row.prev_hash = prev.clone();
        row.hash = chain::hash(&row.prev_hash, &row.canonical());
        conn.execute(
            "UPDATE audit_log SET prev_hash = ?1, hash = ?2 WHERE id = ?3",
            rusqlite::params![row.prev_hash, row.hash, row.id],
        )
        .expect("rehash");
        prev = row.hash;
    }
}

#[test]
fn a_rewritten_trail_is_caught_by_the_signed_checkpoints() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("backend");
    let mut backend = Backend::start(&data);
    backend.cli_ok(&["user", "create", "alice", "--role", "operator"]);
    backend.cli_ok(&["api-token", "create", "ci", "--role", "viewer"]);
    // A graceful stop signs the head.
    backend.stop(false);

    let (ok, report) = verify(&backend, &[]);
    assert!(ok, "{report}");
    assert!(report.contains("the audit trail verifies"), "{report}");
    assert!(report.contains("signed up to row"), "{report}");
    let key = data.join("audit/checkpoint.key");
    assert!(key.exists(), "the key is outside the database");

    // The checkpoints and the public key, exported for keeping elsewhere.
    let exported = dir.path().join("checkpoints.jsonl");
    std::fs::write(&exported, backend.cli_ok(&["audit", "checkpoints"]) + "\n").expect("export");
    let public_key = backend.cli_ok(&["audit", "public-key"]);
    assert_eq!(public_key.len(), 64, "{public_key}");

    rewrite_history(&data.join("palisade.db"));

    // The backend's own copy of the checkpoints catches it.
    let (ok, report) = verify(&backend, &[]);
    assert!(!ok, "{report}");
    assert!(report.contains("TAMPERED"), "{report}");
    assert!(report.contains("the chain was rewritten"), "{report}");
    assert!(report.contains("missing from the database"), "{report}");

    // Away from the backend: no key file, no local copy, only the public
    // key and the exported checkpoints.
    std::fs::rename(&key, dir.path().join("moved.key")).expect("move key");
    std::fs::remove_file(data.join("audit/checkpoints.jsonl")).expect("remove copy");
    let (ok, report) = verify(
        &backend,
        &[
            "--public-key",
            &public_key,
            "--checkpoints",
            exported.to_str().expect("utf-8"),
        ],
    );
    assert!(!ok, "{report}");
    assert!(report.contains("the chain was rewritten"), "{report}");

    // Without the key or a public key, verify says what it needs.
    let out = backend.cli(&["audit", "verify"]);
    assert_eq!(out.status.code(), Some(2), "2: could not verify");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("no audit checkpoint key"), "{err}");
    assert!(
        !data.join("audit/checkpoint.key").exists(),
        "verify never makes a key"
    );
}
