//! The PostgreSQL dialect: a pool of synchronous connections (r2d2 over the
//! `postgres` crate), TLS through rustls, each statement prepared once per
//! connection.
//!
//! Transactions run at READ COMMITTED for writes (the default; invariants
//! that need more take a row lock with [`super::Tx::for_update`] or an
//! advisory [`super::Lock`]) and REPEATABLE READ, READ ONLY for reads, so a
//! page is drawn from one snapshot.

use std::collections::HashMap;
use std::time::Duration;

use postgres::error::SqlState;
use postgres::fallible_iterator::FallibleIterator;
use postgres::types::ToSql;
use postgres::{IsolationLevel, NoTls, Statement};

use super::url::{PgOptions, PgTls};
use super::value::{Param, Row};
use super::{DbError, Result, Tx, TxInner, statement_name};

/// Prepared statements kept per connection.
const STATEMENT_CACHE: usize = 512;
/// How long a request waits for a free connection.
const CHECKOUT_TIMEOUT: Duration = Duration::from_secs(15);

pub(super) struct PgPool {
    /// Always `Some` but while being dropped.
    pool: Option<r2d2::Pool<Manager>>,
}

impl Drop for PgPool {
    /// Each connection runs a small async runtime of its own, which must not
    /// be dropped on a thread running an async executor: the pool goes to a
    /// thread of its own to be closed.
    fn drop(&mut self) {
        if let Some(pool) = self.pool.take() {
            let _ = std::thread::Builder::new()
                .name("palisade-db-close".into())
                .spawn(move || drop(pool));
        }
    }
}

pub(super) struct PgConn {
    client: postgres::Client,
    statements: HashMap<String, Statement>,
}

struct Manager {
    config: postgres::Config,
    tls: PgTls,
}

impl r2d2::ManageConnection for Manager {
    type Connection = PgConn;
    type Error = postgres::Error;

    fn connect(&self) -> Result<PgConn, postgres::Error> {
        let client = match &self.tls {
            PgTls::Disable => self.config.connect(NoTls)?,
            PgTls::Rustls(connector) => self.config.connect(connector.clone())?,
        };
        Ok(PgConn {
            client,
            statements: HashMap::new(),
        })
    }

    fn is_valid(&self, conn: &mut PgConn) -> Result<(), postgres::Error> {
        conn.client.simple_query("").map(|_| ())
    }

    fn has_broken(&self, conn: &mut PgConn) -> bool {
        conn.client.is_closed()
    }
}

impl PgPool {
    pub(super) fn open(options: &PgOptions) -> Result<PgPool> {
        let manager = Manager {
            config: options.config.clone(),
            tls: options.tls.clone(),
        };
        // One connection first, so a wrong address, password or certificate
        // is reported at once with the server's reason (the pool would retry
        // until its timeout and then say only that it timed out).
        let first = r2d2::ManageConnection::connect(&manager).map_err(|e| {
            DbError::Connect(format!("{}: {}", options.redacted, connect_reason(&e)))
        })?;
        drop(first);
        let pool = r2d2::Pool::builder()
            .max_size(options.pool_size)
            .min_idle(Some(1))
            .connection_timeout(CHECKOUT_TIMEOUT)
            // r2d2's own logging would print the error with the address;
            // errors reach the caller instead.
            .error_handler(Box::new(r2d2::NopErrorHandler))
            .build(manager)
            .map_err(|e| DbError::Connect(format!("{} ({e})", options.redacted)))?;
        Ok(PgPool { pool: Some(pool) })
    }

    fn pool(&self, op: &str) -> Result<&r2d2::Pool<Manager>> {
        self.pool
            .as_ref()
            .ok_or_else(|| DbError::database(op, "the database is closing"))
    }

    pub(super) fn state(&self) -> (u32, u32) {
        match &self.pool {
            Some(pool) => {
                let state = pool.state();
                (state.connections - state.idle_connections, pool.max_size())
            }
            None => (0, 0),
        }
    }

    pub(super) fn transaction<T>(
        &self,
        op: &str,
        read_only: bool,
        f: impl FnOnce(&mut Tx<'_>) -> Result<T>,
    ) -> Result<T> {
        let mut conn = self
            .pool(op)?
            .get()
            .map_err(|e| DbError::Connect(format!("no database connection for {op}: {e}")))?;
        let PgConn { client, statements } = &mut *conn;
        let mut builder = client.build_transaction();
        if read_only {
            builder = builder
                .isolation_level(IsolationLevel::RepeatableRead)
                .read_only(true);
        }
        let tx = builder
            .start()
            .map_err(|e| DbError::database(op, format!("begin: {e}")))?;
        let mut tx = Tx {
            inner: TxInner::Postgres(PgTx { tx, statements }),
        };
        // An error (or a panic) drops the transaction, which rolls it back.
        let value = f(&mut tx)?;
        match tx.inner {
            TxInner::Postgres(PgTx { tx, .. }) => tx
                .commit()
                .map_err(|e| DbError::database(op, format!("commit: {e}")))?,
            TxInner::Sqlite(_) => {
                return Err(DbError::database(op, "not a PostgreSQL transaction"));
            }
        }
        Ok(value)
    }
}

/// A PostgreSQL transaction as [`super::Tx`] sees it.
pub(super) struct PgTx<'c> {
    tx: postgres::Transaction<'c>,
    statements: &'c mut HashMap<String, Statement>,
}

impl<'c> PgTx<'c> {
    pub(super) fn raw(&mut self) -> &mut postgres::Transaction<'c> {
        &mut self.tx
    }

    fn statement(&mut self, sql: &str) -> Result<Statement> {
        if let Some(statement) = self.statements.get(sql) {
            return Ok(statement.clone());
        }
        let statement = self.tx.prepare(sql).map_err(|e| pg_error(sql, &e))?;
        if self.statements.len() >= STATEMENT_CACHE {
            self.statements.clear();
        }
        self.statements.insert(sql.to_owned(), statement.clone());
        Ok(statement)
    }

    pub(super) fn execute(&mut self, sql: &str, params: &[Param<'_>]) -> Result<u64> {
        let statement = self.statement(sql)?;
        let params: Vec<&(dyn ToSql + Sync)> =
            params.iter().map(|p| p as &(dyn ToSql + Sync)).collect();
        self.tx
            .execute(&statement, &params)
            .map_err(|e| pg_error(sql, &e))
    }

    pub(super) fn execute_typed(
        &mut self,
        sql: &str,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<u64> {
        let statement = self.statement(sql)?;
        self.tx
            .execute(&statement, params)
            .map_err(|e| pg_error(sql, &e))
    }

    pub(super) fn query_each(
        &mut self,
        sql: &str,
        params: &[Param<'_>],
        mut each: impl FnMut(&Row<'_>) -> Result<()>,
    ) -> Result<()> {
        let statement = self.statement(sql)?;
        let params = params.iter().map(|p| p as &dyn ToSql);
        let mut rows = self
            .tx
            .query_raw(&statement, params)
            .map_err(|e| pg_error(sql, &e))?;
        while let Some(row) = rows.next().map_err(|e| pg_error(sql, &e))? {
            each(&Row::postgres(&row))?;
        }
        Ok(())
    }

    pub(super) fn batch(&mut self, sql: &str) -> Result<()> {
        self.tx.batch_execute(sql).map_err(|e| pg_error(sql, &e))
    }
}

/// Why a connection failed: the server's message, or the driver's chain of
/// causes (a TLS verification failure is in the source).
fn connect_reason(e: &postgres::Error) -> String {
    if let Some(db) = e.as_db_error() {
        return format!("{}: {}", db.severity(), db.message());
    }
    let mut reason = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(cause) = source {
        reason.push_str(": ");
        reason.push_str(&cause.to_string());
        source = cause.source();
    }
    reason
}

/// Turns a driver error into a [`DbError`] naming the statement; a unique
/// violation is a [`DbError::Conflict`].
pub(super) fn pg_error(sql: &str, e: &postgres::Error) -> DbError {
    let name = statement_name(sql);
    if e.code() == Some(&SqlState::UNIQUE_VIOLATION) {
        return DbError::Conflict {
            what: format!("a row ({name})"),
        };
    }
    match e.as_db_error() {
        Some(db) => DbError::database(name, format!("{}: {}", db.severity(), db.message())),
        None => DbError::database(name, e),
    }
}
