//! Versioned schema migrations, one list per dialect with the same versions.
//!
//! Files live under `backend/migrations/<dialect>/NNNN_name.sql` and are
//! embedded in the binary. A file, once released, is never edited: a change
//! is a new file in both dialects (a tidy test checks that every version
//! exists for every dialect). Each migration is applied in its own
//! transaction and recorded in `schema_migrations`; replicas starting
//! together serialize on [`Lock::Migrations`].
//!
//! A database whose newest version is beyond what this build knows was
//! written by a newer release: it is refused before anything is written.

use super::{Db, DbError, Dialect, Lock, Result, Tx};

/// One migration of one dialect.
#[derive(Debug, Clone, Copy)]
pub struct Migration {
    pub version: u32,
    /// The file name without `.sql`, e.g. `0001_init`.
    pub name: &'static str,
    pub sql: &'static str,
    /// Work SQL cannot express (re-encoding rows), run after `sql` in the
    /// same transaction.
    pub then: Option<fn(&mut Tx<'_>) -> Result<()>>,
}

macro_rules! migrations {
    ($dialect:literal: $($version:literal $name:literal $(then $then:path)?),* $(,)?) => {
        &[$(Migration {
            version: $version,
            name: $name,
            sql: include_str!(concat!("../../migrations/", $dialect, "/", $name, ".sql")),
            then: migrations!(@then $($then)?),
        }),*]
    };
    (@then) => { None };
    (@then $then:path) => { Some($then) };
}

/// Every SQLite migration this build knows, in order.
pub const SQLITE: &[Migration] = migrations!("sqlite":
    1 "0001_init",
    2 "0002_commands",
    3 "0003_spool_dropped",
    4 "0004_metrics_at_scale",
    5 "0005_access_control",
    6 "0006_audit_checkpoints",
    7 "0007_sign_in",
    8 "0008_second_factors",
    9 "0009_passkeys",
    10 "0010_metric_chunks" then crate::metrics::store::move_legacy_samples,
    11 "0011_drop_metric_samples",
    12 "0012_package_inventory",
    13 "0013_patch_runs",
    14 "0014_patch_policies",
);

/// Every PostgreSQL migration this build knows, in order.
pub const POSTGRES: &[Migration] = migrations!("postgres":
    1 "0001_init",
    2 "0002_commands",
    3 "0003_spool_dropped",
    4 "0004_metrics_at_scale",
    5 "0005_access_control",
    6 "0006_audit_checkpoints",
    7 "0007_sign_in",
    8 "0008_second_factors",
    9 "0009_passkeys",
    10 "0010_metric_chunks" then crate::metrics::store::move_legacy_samples,
    11 "0011_drop_metric_samples",
    12 "0012_package_inventory",
    13 "0013_patch_runs",
    14 "0014_patch_policies",
);

pub fn for_dialect(dialect: Dialect) -> &'static [Migration] {
    match dialect {
        Dialect::Sqlite => SQLITE,
        Dialect::Postgres => POSTGRES,
    }
}

/// The newest schema version this build knows for `dialect`.
pub fn newest_known(dialect: Dialect) -> u32 {
    for_dialect(dialect).last().map_or(0, |m| m.version)
}

/// The newest version applied to the database, 0 for an empty database.
/// Reads only.
pub fn current_version(tx: &mut Tx<'_>) -> Result<u32> {
    let exists_sql = match tx.dialect() {
        Dialect::Sqlite => {
            "SELECT COUNT(*) FROM sqlite_master WHERE type = 'table' AND name = 'schema_migrations'"
        }
        Dialect::Postgres => {
            "SELECT COUNT(*) FROM information_schema.tables WHERE table_schema = current_schema() AND table_name = 'schema_migrations'"
        }
    };
    let exists: i64 = tx.query_one(exists_sql, &[], |row| row.get(0))?;
    if exists == 0 {
        return Ok(0);
    }
    let newest: Option<i64> =
        tx.query_one("SELECT MAX(version) FROM schema_migrations", &[], |row| {
            row.get(0)
        })?;
    let newest = newest.unwrap_or(0);
    u32::try_from(newest)
        .map_err(|_| DbError::Corrupt(format!("schema_migrations holds version {newest}")))
}

/// Refuses a database written by a newer release. Reads only.
pub fn check_not_newer(tx: &mut Tx<'_>) -> Result<()> {
    let found = current_version(tx)?;
    let known = newest_known(tx.dialect());
    if found > known {
        return Err(DbError::SchemaTooNew { found, known });
    }
    Ok(())
}

/// Applies every migration the database does not have yet.
pub fn apply(db: &Db) -> Result<()> {
    let dialect = db.dialect();
    db.write_blocking("migrate: schema_migrations", |tx| {
        tx.lock(Lock::Migrations)?;
        tx.batch(
            "CREATE TABLE IF NOT EXISTS schema_migrations (
                 version    BIGINT PRIMARY KEY,
                 applied_at BIGINT NOT NULL
             )",
        )
    })?;
    for migration in for_dialect(dialect) {
        let applied = db
            .write_blocking("migrate", |tx| {
                tx.lock(Lock::Migrations)?;
                // Another replica may have applied it while this one waited.
                check_not_newer(tx)?;
                let done: Option<i64> = tx.query_opt(
                    "SELECT version FROM schema_migrations WHERE version = $1",
                    crate::params![migration.version],
                    |row| row.get(0),
                )?;
                if done.is_some() {
                    return Ok(false);
                }
                tx.batch(migration.sql)?;
                if let Some(then) = migration.then {
                    then(tx)?;
                }
                tx.execute(
                    "INSERT INTO schema_migrations (version, applied_at) VALUES ($1, $2)",
                    crate::params![migration.version, crate::now_millis()],
                )?;
                Ok(true)
            })
            .map_err(|e| match e {
                e @ DbError::SchemaTooNew { .. } => e,
                e => DbError::Migration {
                    version: migration.version,
                    reason: e.to_string(),
                },
            })?;
        if applied {
            tracing::info!(
                version = migration.version,
                name = migration.name,
                dialect = dialect.as_str(),
                "applied database migration"
            );
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The `NNNN_name` files of `migrations/<dialect>/`.
    fn files(dialect: &str) -> Vec<String> {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("migrations")
            .join(dialect);
        let mut names: Vec<String> = std::fs::read_dir(&dir)
            .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
            .flatten()
            .filter_map(|e| {
                e.file_name()
                    .to_str()?
                    .strip_suffix(".sql")
                    .map(str::to_owned)
            })
            .collect();
        names.sort();
        names
    }

    #[test]
    fn every_migration_exists_for_every_dialect() {
        let sqlite: Vec<(u32, &str)> = SQLITE.iter().map(|m| (m.version, m.name)).collect();
        let postgres: Vec<(u32, &str)> = POSTGRES.iter().map(|m| (m.version, m.name)).collect();
        assert_eq!(sqlite, postgres, "the dialects have different migrations");
        for (dialect, list) in [("sqlite", SQLITE), ("postgres", POSTGRES)] {
            let listed: Vec<String> = list.iter().map(|m| m.name.to_owned()).collect();
            assert_eq!(
                files(dialect),
                listed,
                "migrations/{dialect}/ and the list in migrate.rs differ"
            );
        }
    }

    #[test]
    fn versions_start_at_one_and_follow_the_file_names() {
        for list in [SQLITE, POSTGRES] {
            for (i, m) in list.iter().enumerate() {
                assert_eq!(m.version as usize, i + 1, "{}", m.name);
                assert!(
                    m.name.starts_with(&format!("{:04}_", m.version)),
                    "{}",
                    m.name
                );
                assert!(!m.sql.trim().is_empty(), "{} is empty", m.name);
            }
        }
    }
}
