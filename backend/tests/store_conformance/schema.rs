//! Migrations and the schema as a whole.

use palisade_backend::db::{DatabaseUrl, Db, DbError, Dialect, copy, migrate};

use crate::{Ctx, conformance};

conformance!(
    every_migration_is_applied_once_and_reopening_changes_nothing,
    a_schema_newer_than_the_binary_is_refused_before_anything_is_written,
    the_copy_list_names_every_table,
);

async fn every_migration_is_applied_once_and_reopening_changes_nothing(ctx: Ctx) {
    let known = migrate::for_dialect(ctx.dialect()).len() as i64;
    assert_eq!(
        ctx.count("SELECT COUNT(*) FROM schema_migrations").await,
        known
    );
    let url = DatabaseUrl::parse(&ctx.url).unwrap();
    let again = tokio::task::spawn_blocking(move || Db::open(&url).map(|_| ()))
        .await
        .unwrap();
    assert!(again.is_ok(), "{again:?}");
    assert_eq!(
        ctx.count("SELECT COUNT(*) FROM schema_migrations").await,
        known
    );
    if ctx.dialect() == Dialect::Sqlite {
        assert_eq!(ctx.count("PRAGMA foreign_keys").await, 1);
    }
}

async fn a_schema_newer_than_the_binary_is_refused_before_anything_is_written(ctx: Ctx) {
    ctx.raw("INSERT INTO schema_migrations (version, applied_at) VALUES (999, 0)");
    let tables_before = table_names(&ctx).await;
    let url = DatabaseUrl::parse(&ctx.url).unwrap();
    let opened = tokio::task::spawn_blocking(move || Db::open(&url).map(|_| ()))
        .await
        .unwrap();
    match opened {
        Err(e @ DbError::SchemaTooNew { found: 999, .. }) => {
            let message = e.to_string();
            assert!(
                message.contains("newer release") && message.contains("999"),
                "{message}"
            );
        }
        other => panic!("expected SchemaTooNew, got {other:?}"),
    }
    assert_eq!(
        table_names(&ctx).await,
        tables_before,
        "nothing was written"
    );
    assert_eq!(
        ctx.count("SELECT MAX(version) FROM schema_migrations")
            .await,
        999
    );
}

async fn table_names(ctx: &Ctx) -> Vec<String> {
    let sql = match ctx.dialect() {
        Dialect::Sqlite => "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%' ORDER BY name",
        Dialect::Postgres => {
            "SELECT c.relname::text FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
             WHERE n.nspname = current_schema() AND c.relkind IN ('r', 'p') AND NOT c.relispartition ORDER BY 1"
        }
    };
    ctx.db
        .read("tables", move |tx| {
            tx.query(sql, &[], |row| row.get::<String>(0))
        })
        .await
        .unwrap()
}

/// `migrate-data` copies the tables it lists: a new table must be listed.
async fn the_copy_list_names_every_table(ctx: Ctx) {
    let mut tables = table_names(&ctx).await;
    tables.retain(|t| t != "schema_migrations");
    let mut listed: Vec<String> = copy::TABLES
        .iter()
        .map(|(t, _, _)| (*t).to_owned())
        .collect();
    listed.sort();
    assert_eq!(tables, listed);
    // And with every column of each.
    for &(table, columns, _) in copy::TABLES {
        let listed = columns.split(',').count() as i64;
        let sql = match ctx.dialect() {
            Dialect::Sqlite => format!("SELECT COUNT(*) FROM pragma_table_info('{table}')"),
            Dialect::Postgres => format!(
                "SELECT COUNT(*) FROM information_schema.columns WHERE table_schema = current_schema() AND table_name = '{table}'"
            ),
        };
        let actual: i64 = ctx
            .db
            .read("columns", move |tx| {
                tx.query_one(&sql, &[], |row| row.get(0))
            })
            .await
            .unwrap();
        assert_eq!(
            actual, listed,
            "{table}: the copy lists {listed} columns, the table has {actual}"
        );
        let probe = format!("SELECT {columns} FROM {table} LIMIT 0");
        let ok = ctx
            .db
            .read("columns", move |tx| tx.query_each(&probe, &[], |_| Ok(())))
            .await;
        assert!(ok.is_ok(), "{table}: {ok:?}");
    }
}

/// PostgreSQL over TLS (rustls, TLS 1.3): the server's certificate must
/// chain to `sslrootcert` and name the host; another CA is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_over_tls_verifies_the_server() {
    let database =
        tokio::task::spawn_blocking(|| palisade_testkit::pg::database().expect("database"))
            .await
            .unwrap();
    let tls_url = database.tls_url();
    assert!(tls_url.contains("sslmode=verify-full"), "{tls_url}");
    let url = DatabaseUrl::parse(&tls_url).unwrap();
    let db = tokio::task::spawn_blocking(move || Db::open(&url))
        .await
        .unwrap()
        .expect("a verified TLS connection");
    let ssl: bool = db
        .read("t", |tx| {
            tx.query_one(
                "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()",
                &[],
                |r| r.get(0),
            )
        })
        .await
        .unwrap();
    assert!(ssl, "the connection is encrypted");
    let version: String = db
        .read("t", |tx| {
            tx.query_one(
                "SELECT version FROM pg_stat_ssl WHERE pid = pg_backend_pid()",
                &[],
                |r| r.get(0),
            )
        })
        .await
        .unwrap();
    assert_eq!(version, "TLSv1.3");

    // A CA that did not sign the server's certificate.
    let dir = tempfile::tempdir().unwrap();
    let other_ca = dir.path().join("other-ca.pem");
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let key = rcgen::KeyPair::generate().unwrap();
    std::fs::write(&other_ca, params.self_signed(&key).unwrap().pem()).unwrap();
    let wrong = tls_url.replace(
        &tls_url[tls_url.find("sslrootcert=").unwrap()..],
        &format!("sslrootcert={}", other_ca.display()),
    );
    let url = DatabaseUrl::parse(&wrong).unwrap();
    let refused = tokio::task::spawn_blocking(move || Db::open(&url).map(|_| ()))
        .await
        .unwrap();
    assert!(matches!(refused, Err(DbError::Connect(_))), "{refused:?}");
    drop(db);
}
