//! `palisade-backend migrate-data`: a populated SQLite database copied to
//! PostgreSQL with the backend stopped and the agent running; the audit
//! chain verifies on the copy, the agent reconnects to the backend now on
//! PostgreSQL and its records resume without a gap; then the copy goes
//! back to a new SQLite file. A target that is not empty is refused.

mod support;

use std::time::Duration;

use palisade_backend::db::{DatabaseUrl, Db, copy};
use support::*;

fn migrate_data(from: &str, to: &str) -> std::process::Output {
    std::process::Command::new(backend_bin())
        .args(["migrate-data", "--from", from, "--to", to])
        .output()
        .expect("migrate-data runs")
}

async fn open(url: &str) -> Db {
    let url = DatabaseUrl::parse(url).expect("url");
    tokio::task::spawn_blocking(move || Db::open(&url))
        .await
        .expect("task")
        .expect("open")
}

/// Rows per table, in the order `migrate-data` copies them.
async fn counts(db: &Db) -> Vec<(&'static str, u64)> {
    db.read("counts", |tx| {
        copy::TABLES
            .iter()
            .map(|(table, _, _)| {
                let n: u64 =
                    tx.query_one(&format!("SELECT COUNT(*) FROM {table}"), &[], |row| {
                        row.get(0)
                    })?;
                Ok((*table, n))
            })
            .collect()
    })
    .await
    .expect("counts")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_to_postgres_and_back_keeps_every_row_and_the_agent_resumes_without_a_gap() {
    let dir = tempfile::tempdir().expect("tempdir");
    let backend_dir = dir.path().join("backend");
    let mut backend = Backend::start(&backend_dir);
    let addr = backend.addr;
    let api = backend.api_token();
    backend.cli_ok(&["user", "create", "admin", "--role", "admin"]);
    // Access control's tables get rows too: a group (made by the token),
    // a user scoped to it, and a custom role.
    let token = backend.token(&["--expires", "1h", "--group", "web"]);
    backend.cli_ok(&[
        "user", "create", "wendy", "--role", "operator", "--group", "web",
    ]);
    let state = dir.path().join("agent");
    assert!(enroll(&backend.server(), &token, &state).status.success());
    let mut agent = Agent::start(&state);
    let client = Https::new(&backend);
    let seq_now = |client: &Https| {
        let (client, api) = (client.clone(), api.clone());
        async move {
            hosts(&client, &api)
                .await
                .first()
                .and_then(|h| h["metrics"]["seq"].as_u64())
        }
    };
    eventually("metrics stored on SQLite", || async {
        seq_now(&client).await.filter(|s| *s >= 5)
    })
    .await;
    // A command with its result, so every table has rows.
    let host_id = hosts(&client, &api).await[0]["id"]
        .as_str()
        .expect("id")
        .to_owned();
    let created = client
        .request(
            "POST",
            &format!("/api/v1/hosts/{host_id}/commands"),
            &[
                ("authorization", &format!("Bearer {api}")),
                ("content-type", "application/json"),
            ],
            br#"{"type":"ping"}"#.to_vec(),
        )
        .await;
    assert_eq!(created.status, 202, "{}", created.text());
    let role = client
        .request(
            "POST",
            "/api/v1/roles",
            &[
                ("authorization", &format!("Bearer {api}")),
                ("content-type", "application/json"),
            ],
            br#"{"name":"patcher","permissions":["hosts:read"]}"#.to_vec(),
        )
        .await;
    assert_eq!(role.status, 201, "{}", role.text());
    let command_id = created.json()["id"]
        .as_str()
        .expect("command id")
        .to_owned();
    eventually("the ping's result", || async {
        let c = client
            .get(&format!("/api/v1/commands/{command_id}"), Some(&api))
            .await
            .json();
        (c["status"] == "succeeded").then_some(())
    })
    .await;

    // The backend stops; the agent goes on spooling.
    let before = seq_now(&client).await.unwrap_or(0);
    backend.stop(false);
    let sqlite_url = format!("sqlite://{}", backend_dir.join("palisade.db").display());
    let pg = TestDb::postgres();
    let pg_url = pg.url().expect("postgres url");
    let out = migrate_data(&sqlite_url, &pg_url);
    let report = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "migrate-data failed: {report}");
    assert!(report.contains("the audit chain verifies"), "{report}");

    // Every row is there: counted independently of the tool.
    let source = open(&sqlite_url).await;
    let target = open(&pg_url).await;
    let (in_source, in_target) = (counts(&source).await, counts(&target).await);
    for ((table, a), (_, b)) in in_source.iter().zip(&in_target) {
        // The copy adds its own audit event.
        let expected = if *table == "audit_log" { a + 1 } else { *a };
        assert_eq!(*b, expected, "{table}");
        if matches!(
            *table,
            "hosts"
                | "metric_chunks"
                | "commands"
                | "audit_log"
                | "users"
                | "host_groups"
                | "role_assignments"
        ) {
            assert!(
                *a > 0,
                "{table} is empty in the source: the test proves nothing"
            );
        }
    }
    assert_eq!(
        target
            .read("verify", palisade_backend::audit::store::verify)
            .await
            .expect("verify"),
        None
    );

    // A target that is not empty is refused, and left as it was.
    let again = migrate_data(&sqlite_url, &pg_url);
    assert!(!again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains("not empty"));
    assert_eq!(counts(&target).await, in_target);

    // The backend on PostgreSQL (same data directory, so the same PKI, same
    // address): the agent comes back by itself and resumes without a gap.
    let backend = Backend::start_db(&backend_dir, &addr.to_string(), &[], &pg);
    let client = Https::new(&backend);
    eventually("records resume on PostgreSQL", || async {
        // Enough records in all for the no-loss check to mean something.
        seq_now(&client).await.filter(|s| *s > (before + 3).max(12))
    })
    .await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    audit_no_loss(&mut agent, &backend).await;
    drop(backend);

    // And back: PostgreSQL to a new SQLite file.
    let back = format!("sqlite://{}", dir.path().join("back.db").display());
    let out = migrate_data(&pg_url, &back);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let back_db = open(&back).await;
    let (pg_counts, back_counts) = (counts(&target).await, counts(&back_db).await);
    for ((table, a), (_, b)) in pg_counts.iter().zip(&back_counts) {
        let expected = if *table == "audit_log" { a + 1 } else { *a };
        assert_eq!(*b, expected, "{table}");
    }
    assert_eq!(
        back_db
            .read("verify", palisade_backend::audit::store::verify)
            .await
            .expect("verify"),
        None
    );
}
