//! The database layer: one handle ([`Db`]), one transaction type ([`Tx`]),
//! two dialects (SQLite, embedded and the default; PostgreSQL, for scale).
//!
//! Every domain module writes its queries once, as plain functions over a
//! `&mut Tx`, in the SQL both dialects share: `$1`-style placeholders (turned
//! into SQLite's `?1` here), `INSERT ... ON CONFLICT`, `RETURNING`, integer
//! milliseconds for time, TEXT for JSON, BIGINT/INTEGER, DOUBLE/REAL,
//! BYTEA/BLOB and BOOLEAN/INTEGER 0-1. Where the dialects must differ (bulk
//! metric ingest, time partitions, row locks) the code asks [`Tx::dialect`]
//! or [`Tx::for_update`] and the difference stays in that one function.
//!
//! Transactions run on a blocking thread ([`Db::write`], [`Db::read`]): both
//! drivers are synchronous, so no async executor thread ever waits on disk
//! or on the network for the database. A write is all or nothing: an action
//! and its audit event go through the same `Tx` and commit together.
//!
//! - SQLite: one writer connection (transactions `BEGIN IMMEDIATE`, so a read
//!   followed by a write can never go stale), a few read-only connections for
//!   reads (WAL lets them run beside the writer), `synchronous=FULL`.
//! - PostgreSQL: a pool of connections (r2d2), TLS through rustls, statements
//!   prepared once per connection; writes at READ COMMITTED with explicit row
//!   or advisory locks where an invariant needs them ([`Lock`]), reads in a
//!   REPEATABLE READ, READ ONLY snapshot.

use std::sync::Arc;

pub mod copy;
pub mod migrate;
mod pg;
mod sqlite;
pub mod url;
pub mod value;

pub use url::DatabaseUrl;
pub use value::{Column, FromColumn, Param, Row};

/// Unix time in milliseconds, the one time representation in storage.
pub type Millis = i64;

/// What went wrong in the database layer. Messages name the operation and
/// never carry a value (no secret can leak through them).
#[derive(Debug, thiserror::Error)]
pub enum DbError {
    #[error("{what} already exists")]
    Conflict { what: String },
    #[error("{what} does not exist")]
    NotFound { what: String },
    #[error("database error in {op}: {message}")]
    Database { op: String, message: String },
    #[error("cannot connect to the database: {0}")]
    Connect(String),
    #[error("migration {version} failed: {reason}")]
    Migration { version: u32, reason: String },
    #[error(
        "the database has schema version {found} but this palisade-backend knows only up to \
         {known}; it was written by a newer release: run that release (or newer), nothing was changed"
    )]
    SchemaTooNew { found: u32, known: u32 },
    #[error("stored data is corrupt: {0}")]
    Corrupt(String),
    #[error("invalid database address: {0}")]
    Url(String),
}

impl DbError {
    pub(crate) fn database(op: impl Into<String>, message: impl std::fmt::Display) -> DbError {
        DbError::Database {
            op: op.into(),
            message: message.to_string(),
        }
    }
}

pub type Result<T, E = DbError> = std::result::Result<T, E>;

/// The two SQL dialects.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    Sqlite,
    Postgres,
}

impl Dialect {
    pub fn as_str(self) -> &'static str {
        match self {
            Dialect::Sqlite => "sqlite",
            Dialect::Postgres => "postgres",
        }
    }
}

/// Named locks a transaction can take so that writers from any connection,
/// process or replica are serialized on one invariant. On PostgreSQL an
/// advisory lock held until the transaction ends; on SQLite nothing to do,
/// because every write transaction already holds the database's one write
/// lock from its first statement (`BEGIN IMMEDIATE`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lock {
    /// The audit chain's tail: appends are strictly sequential.
    AuditChain,
    /// Schema migrations: replicas starting together apply each once.
    Migrations,
    /// Creating and dropping time partitions.
    Partitions,
}

impl Lock {
    /// The advisory lock key; stable across releases (other code may hold it).
    fn key(self) -> i64 {
        // "palisade" in ASCII, then a small number per lock.
        const BASE: i64 = 0x7061_6c69_7361_0000;
        BASE + match self {
            Lock::AuditChain => 1,
            Lock::Migrations => 2,
            Lock::Partitions => 3,
        }
    }
}

/// One transaction, of either dialect. Obtained from [`Db::write`] or
/// [`Db::read`]; committed when the closure returns `Ok`, rolled back when it
/// returns `Err` (or panics).
pub struct Tx<'c> {
    inner: TxInner<'c>,
}

enum TxInner<'c> {
    Sqlite(sqlite::SqliteTx<'c>),
    Postgres(pg::PgTx<'c>),
}

impl<'c> Tx<'c> {
    pub fn dialect(&self) -> Dialect {
        match self.inner {
            TxInner::Sqlite(_) => Dialect::Sqlite,
            TxInner::Postgres(_) => Dialect::Postgres,
        }
    }

    /// Runs one statement; returns the number of rows it changed.
    pub fn execute(&mut self, sql: &str, params: &[Param<'_>]) -> Result<u64> {
        match &mut self.inner {
            TxInner::Sqlite(tx) => tx.execute(sql, params),
            TxInner::Postgres(tx) => tx.execute(sql, params),
        }
    }

    /// Runs a query and maps every row.
    pub fn query<T>(
        &mut self,
        sql: &str,
        params: &[Param<'_>],
        mut map: impl FnMut(&Row<'_>) -> Result<T>,
    ) -> Result<Vec<T>> {
        let mut out = Vec::new();
        self.query_each(sql, params, |row| {
            out.push(map(row)?);
            Ok(())
        })?;
        Ok(out)
    }

    /// Runs a query and calls `each` for every row, without collecting them.
    pub fn query_each(
        &mut self,
        sql: &str,
        params: &[Param<'_>],
        each: impl FnMut(&Row<'_>) -> Result<()>,
    ) -> Result<()> {
        match &mut self.inner {
            TxInner::Sqlite(tx) => tx.query_each(sql, params, each),
            TxInner::Postgres(tx) => tx.query_each(sql, params, each),
        }
    }

    /// The first row, if any.
    pub fn query_opt<T>(
        &mut self,
        sql: &str,
        params: &[Param<'_>],
        map: impl FnOnce(&Row<'_>) -> Result<T>,
    ) -> Result<Option<T>> {
        let mut map = Some(map);
        let mut found = None;
        self.query_each(sql, params, |row| {
            if let Some(map) = map.take() {
                found = Some(map(row)?);
            }
            Ok(())
        })?;
        Ok(found)
    }

    /// Exactly one row (an aggregate, a `RETURNING` clause).
    pub fn query_one<T>(
        &mut self,
        sql: &str,
        params: &[Param<'_>],
        map: impl FnOnce(&Row<'_>) -> Result<T>,
    ) -> Result<T> {
        self.query_opt(sql, params, map)?
            .ok_or_else(|| DbError::database(statement_name(sql), "the query returned no row"))
    }

    /// Runs several statements separated by semicolons, without parameters
    /// (migrations, partition maintenance).
    pub fn batch(&mut self, sql: &str) -> Result<()> {
        match &mut self.inner {
            TxInner::Sqlite(tx) => tx.batch(sql),
            TxInner::Postgres(tx) => tx.batch(sql),
        }
    }

    /// Takes `lock` until the end of this transaction (see [`Lock`]).
    pub fn lock(&mut self, lock: Lock) -> Result<()> {
        match &mut self.inner {
            TxInner::Sqlite(_) => Ok(()),
            TxInner::Postgres(tx) => tx
                .execute(
                    "SELECT pg_advisory_xact_lock($1)",
                    &[Param::Int(lock.key())],
                )
                .map(|_| ()),
        }
    }

    /// ` FOR UPDATE` on PostgreSQL, nothing on SQLite (whose write
    /// transactions hold the whole database's write lock): appended to a
    /// `SELECT` whose rows the transaction goes on to change.
    pub fn for_update(&self) -> &'static str {
        match self.inner {
            TxInner::Sqlite(_) => "",
            TxInner::Postgres(_) => " FOR UPDATE",
        }
    }

    /// Runs a PostgreSQL-only statement whose parameters are driver types
    /// (arrays for `UNNEST`), prepared once per connection like the rest.
    /// An error on SQLite.
    pub fn pg_execute(
        &mut self,
        sql: &str,
        params: &[&(dyn postgres::types::ToSql + Sync)],
    ) -> Result<u64> {
        match &mut self.inner {
            TxInner::Postgres(tx) => tx.execute_typed(sql, params),
            TxInner::Sqlite(_) => Err(DbError::database(
                statement_name(sql),
                "a PostgreSQL statement on SQLite",
            )),
        }
    }

    /// The PostgreSQL transaction, for the few dialect-specific statements
    /// (arrays, COPY). `None` on SQLite.
    pub fn postgres(&mut self) -> Option<&mut postgres::Transaction<'c>> {
        match &mut self.inner {
            TxInner::Postgres(tx) => Some(tx.raw()),
            TxInner::Sqlite(_) => None,
        }
    }

    /// The SQLite transaction, for dialect-specific statements. `None` on
    /// PostgreSQL.
    pub fn sqlite(&mut self) -> Option<&rusqlite::Transaction<'c>> {
        match &mut self.inner {
            TxInner::Sqlite(tx) => Some(tx.raw()),
            TxInner::Postgres(_) => None,
        }
    }
}

/// The first words of a statement, to name it in an error.
pub(crate) fn statement_name(sql: &str) -> String {
    let words: Vec<&str> = sql.split_whitespace().take(4).collect();
    words.join(" ")
}

/// The database: cheap to clone, shared by every task.
#[derive(Clone)]
pub struct Db {
    inner: Arc<DbInner>,
}

enum DbInner {
    Sqlite(sqlite::SqlitePool),
    Postgres(pg::PgPool),
}

impl std::fmt::Debug for Db {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Db")
            .field("dialect", &self.dialect())
            .finish_non_exhaustive()
    }
}

/// How many read-only connections a SQLite database gets besides its writer.
const SQLITE_READERS: usize = 4;

impl Db {
    /// Opens the database `url` names and brings its schema up to date. A
    /// database written by a newer release is refused before anything is
    /// written ([`DbError::SchemaTooNew`]).
    ///
    /// Blocking: call it from a blocking context or at start-up.
    pub fn open(url: &DatabaseUrl) -> Result<Db> {
        let db = Self::connect(url)?;
        db.read_blocking("check the schema version", migrate::check_not_newer)?;
        migrate::apply(&db)?;
        Ok(db)
    }

    /// A private SQLite database in memory, migrated: for tests and tools
    /// that need a real database and no file.
    pub fn open_memory() -> Result<Db> {
        let db = Db {
            inner: Arc::new(DbInner::Sqlite(sqlite::SqlitePool::open_memory()?)),
        };
        migrate::apply(&db)?;
        Ok(db)
    }

    /// Opens without migrating: for `migrate-data`, which must refuse a
    /// target that is not empty or a source that is not current.
    pub fn connect(url: &DatabaseUrl) -> Result<Db> {
        let inner = match url {
            DatabaseUrl::Sqlite(path) => {
                DbInner::Sqlite(sqlite::SqlitePool::open(path, SQLITE_READERS)?)
            }
            DatabaseUrl::Postgres(options) => DbInner::Postgres(pg::PgPool::open(options)?),
        };
        Ok(Db {
            inner: Arc::new(inner),
        })
    }

    pub fn dialect(&self) -> Dialect {
        match &*self.inner {
            DbInner::Sqlite(_) => Dialect::Sqlite,
            DbInner::Postgres(_) => Dialect::Postgres,
        }
    }

    /// Runs `f` in a write transaction on a blocking thread; commits if it
    /// returns `Ok`. `op` names the operation in errors and logs.
    pub async fn write<T, F>(&self, op: &'static str, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&mut Tx<'_>) -> Result<T> + Send + 'static,
    {
        let db = self.clone();
        tokio::task::spawn_blocking(move || db.write_blocking(op, f))
            .await
            .map_err(|e| DbError::database(op, format!("database task failed: {e}")))?
    }

    /// Runs `f` in a read-only transaction (one consistent snapshot) on a
    /// blocking thread.
    pub async fn read<T, F>(&self, op: &'static str, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&mut Tx<'_>) -> Result<T> + Send + 'static,
    {
        let db = self.clone();
        tokio::task::spawn_blocking(move || db.read_blocking(op, f))
            .await
            .map_err(|e| DbError::database(op, format!("database task failed: {e}")))?
    }

    /// [`Db::write`] on the calling thread, which may block.
    pub fn write_blocking<T>(
        &self,
        op: &'static str,
        f: impl FnOnce(&mut Tx<'_>) -> Result<T>,
    ) -> Result<T> {
        match &*self.inner {
            DbInner::Sqlite(pool) => pool.write(op, |tx| {
                let mut tx = Tx {
                    inner: TxInner::Sqlite(tx),
                };
                f(&mut tx)
            }),
            DbInner::Postgres(pool) => pool.transaction(op, false, f),
        }
    }

    /// [`Db::read`] on the calling thread, which may block.
    pub fn read_blocking<T>(
        &self,
        op: &'static str,
        f: impl FnOnce(&mut Tx<'_>) -> Result<T>,
    ) -> Result<T> {
        match &*self.inner {
            DbInner::Sqlite(pool) => pool.read(op, |tx| {
                let mut tx = Tx {
                    inner: TxInner::Sqlite(tx),
                };
                f(&mut tx)
            }),
            DbInner::Postgres(pool) => pool.transaction(op, true, f),
        }
    }

    /// Connections in use and the pool's size (PostgreSQL), for metrics.
    pub fn pool_state(&self) -> Option<(u32, u32)> {
        match &*self.inner {
            DbInner::Sqlite(_) => None,
            DbInner::Postgres(pool) => Some(pool.state()),
        }
    }
}

/// Counters (bytes, seconds) are `u64` on the wire and signed 64-bit in
/// SQL. A value above `i64::MAX` is not a measurement; it is clamped rather
/// than refused, because a refused record would be retried forever.
pub fn counter(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

/// Sequence numbers are keys: clamping would merge distinct records, so one
/// above `i64::MAX` is refused.
pub fn seq(seq: u64) -> Result<i64> {
    i64::try_from(seq).map_err(|_| {
        DbError::Corrupt(format!(
            "record sequence {seq} is beyond the storable range"
        ))
    })
}

/// Makes `params![a, b, c]` a `&[Param]`.
#[macro_export]
macro_rules! params {
    () => { &[] as &[$crate::db::Param<'_>] };
    ($($value:expr),+ $(,)?) => { &[$($crate::db::Param::from($value)),+] as &[$crate::db::Param<'_>] };
}
pub use crate::params;
