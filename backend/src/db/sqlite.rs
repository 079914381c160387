//! The SQLite dialect: one file, WAL mode, one writer connection and a few
//! read-only ones.
//!
//! The server and the CLI may have the same file open at once (two
//! processes): WAL lets readers run beside the one writer, `busy_timeout`
//! makes a writer wait for the other instead of failing, and every write
//! transaction starts with `BEGIN IMMEDIATE`, taking the write lock up front
//! so that what it read cannot go stale (a deferred transaction that upgrades
//! to a write after another process committed fails with `SQLITE_BUSY` at
//! once, whatever the timeout).
//!
//! Statements are written with `$1` placeholders (PostgreSQL's); they become
//! `?1` here, and are prepared once per connection (rusqlite's cache).

use std::borrow::Cow;
use std::path::Path;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use rusqlite::{Connection, OpenFlags, TransactionBehavior};

use super::value::{Param, Row};
use super::{DbError, Result, statement_name};

/// How long a statement waits for another connection's (or process's) lock
/// before failing with "database is locked".
const BUSY_TIMEOUT: Duration = Duration::from_secs(10);
/// Prepared statements kept per connection.
const STATEMENT_CACHE: usize = 256;

pub(super) struct SqlitePool {
    writer: Mutex<Connection>,
    readers: Vec<Mutex<Connection>>,
    next_reader: AtomicUsize,
}

fn open_err(path: &Path, e: rusqlite::Error) -> DbError {
    DbError::Connect(format!("opening SQLite database {}: {e}", path.display()))
}

impl SqlitePool {
    pub(super) fn open(path: &Path, readers: usize) -> Result<SqlitePool> {
        let writer = Connection::open(path).map_err(|e| open_err(path, e))?;
        configure(&writer, path)?;
        let mode: String = writer
            .pragma_update_and_check(None, "journal_mode", "WAL", |row| row.get(0))
            .map_err(|e| open_err(path, e))?;
        if !mode.eq_ignore_ascii_case("wal") {
            return Err(DbError::Connect(format!(
                "SQLite database {} refused WAL mode (journal_mode is {mode:?})",
                path.display()
            )));
        }
        // In WAL mode a commit appends to the WAL before COMMIT returns, so a
        // committed transaction survives the process being killed with
        // either NORMAL or FULL. FULL also fsyncs the WAL at every commit, so
        // it survives a power loss as well. The uplink acknowledges records
        // once they are committed and the agent then drops them from its
        // spool: a commit a power cut could undo would lose acknowledged data
        // (invariant 8). The price is one fsync per write transaction;
        // records arrive in batches, one transaction each.
        writer
            .pragma_update(None, "synchronous", "FULL")
            .map_err(|e| open_err(path, e))?;
        let mut pool = Vec::with_capacity(readers);
        for _ in 0..readers {
            let reader = Connection::open_with_flags(
                path,
                OpenFlags::SQLITE_OPEN_READ_ONLY
                    | OpenFlags::SQLITE_OPEN_NO_MUTEX
                    | OpenFlags::SQLITE_OPEN_URI,
            )
            .map_err(|e| open_err(path, e))?;
            configure(&reader, path)?;
            pool.push(Mutex::new(reader));
        }
        Ok(SqlitePool {
            writer: Mutex::new(writer),
            readers: pool,
            next_reader: AtomicUsize::new(0),
        })
    }

    /// One connection to a private in-memory database (no WAL, no readers:
    /// reads go through the writer).
    pub(super) fn open_memory() -> Result<SqlitePool> {
        let path = Path::new(":memory:");
        let writer = Connection::open_in_memory().map_err(|e| open_err(path, e))?;
        configure(&writer, path)?;
        Ok(SqlitePool {
            writer: Mutex::new(writer),
            readers: Vec::new(),
            next_reader: AtomicUsize::new(0),
        })
    }

    pub(super) fn write<T>(
        &self,
        op: &str,
        f: impl FnOnce(SqliteTx<'_>) -> Result<T>,
    ) -> Result<T> {
        let mut conn = lock(&self.writer, op)?;
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(|e| DbError::database(op, format!("begin: {e}")))?;
        run(op, tx, f)
    }

    pub(super) fn read<T>(&self, op: &str, f: impl FnOnce(SqliteTx<'_>) -> Result<T>) -> Result<T> {
        if self.readers.is_empty() {
            return self.write(op, f);
        }
        // Any free reader; if all are busy, wait for the next in turn.
        let guard = self.readers.iter().find_map(|r| r.try_lock().ok());
        let mut conn = match guard {
            Some(conn) => conn,
            None => {
                let i = self.next_reader.fetch_add(1, Ordering::Relaxed) % self.readers.len();
                lock(&self.readers[i], op)?
            }
        };
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Deferred)
            .map_err(|e| DbError::database(op, format!("begin: {e}")))?;
        run(op, tx, f)
    }
}

fn configure(conn: &Connection, path: &Path) -> Result<()> {
    conn.busy_timeout(BUSY_TIMEOUT)
        .map_err(|e| open_err(path, e))?;
    // Per connection, and a no-op inside a transaction: set it here, once.
    conn.pragma_update(None, "foreign_keys", "ON")
        .map_err(|e| open_err(path, e))?;
    conn.set_prepared_statement_cache_capacity(STATEMENT_CACHE);
    Ok(())
}

/// A poisoned mutex means an earlier operation panicked while holding the
/// connection: a bug, reported as an error to every later caller rather
/// than a panic of the server.
fn lock<'a>(m: &'a Mutex<Connection>, op: &str) -> Result<std::sync::MutexGuard<'a, Connection>> {
    m.lock().map_err(|_| {
        DbError::database(
            op,
            "the database connection is unusable after an earlier panic",
        )
    })
}

fn run<T>(
    op: &str,
    tx: rusqlite::Transaction<'_>,
    f: impl FnOnce(SqliteTx<'_>) -> Result<T>,
) -> Result<T> {
    // An error (or a panic) drops `tx`, which rolls it back.
    let value = f(SqliteTx { tx: &tx })?;
    tx.commit()
        .map_err(|e| DbError::database(op, format!("commit: {e}")))?;
    Ok(value)
}

/// A SQLite transaction as [`super::Tx`] sees it.
pub(super) struct SqliteTx<'c> {
    tx: &'c rusqlite::Transaction<'c>,
}

impl<'c> SqliteTx<'c> {
    pub(super) fn raw(&self) -> &'c rusqlite::Transaction<'c> {
        self.tx
    }

    pub(super) fn execute(&mut self, sql: &str, params: &[Param<'_>]) -> Result<u64> {
        let sql = placeholders(sql);
        let mut stmt = self
            .raw()
            .prepare_cached(&sql)
            .map_err(|e| sql_error(&sql, e))?;
        let changed = stmt
            .execute(rusqlite::params_from_iter(params.iter()))
            .map_err(|e| sql_error(&sql, e))?;
        Ok(changed as u64)
    }

    pub(super) fn query_each(
        &mut self,
        sql: &str,
        params: &[Param<'_>],
        mut each: impl FnMut(&Row<'_>) -> Result<()>,
    ) -> Result<()> {
        let sql = placeholders(sql);
        let mut stmt = self
            .raw()
            .prepare_cached(&sql)
            .map_err(|e| sql_error(&sql, e))?;
        let mut rows = stmt
            .query(rusqlite::params_from_iter(params.iter()))
            .map_err(|e| sql_error(&sql, e))?;
        while let Some(row) = rows.next().map_err(|e| sql_error(&sql, e))? {
            each(&Row::sqlite(row))?;
        }
        Ok(())
    }

    pub(super) fn batch(&mut self, sql: &str) -> Result<()> {
        self.raw().execute_batch(sql).map_err(|e| sql_error(sql, e))
    }
}

/// Turns a rusqlite error into a [`DbError`] naming the statement; a unique
/// violation is a [`DbError::Conflict`].
fn sql_error(sql: &str, e: rusqlite::Error) -> DbError {
    let name = statement_name(sql);
    if let rusqlite::Error::SqliteFailure(f, _) = &e
        && (f.extended_code == rusqlite::ffi::SQLITE_CONSTRAINT_PRIMARYKEY
            || f.extended_code == rusqlite::ffi::SQLITE_CONSTRAINT_UNIQUE)
    {
        return DbError::Conflict {
            what: format!("a row ({name})"),
        };
    }
    DbError::database(name, e)
}

/// `$1` → `?1`, outside string literals and quoted identifiers.
pub(super) fn placeholders(sql: &str) -> Cow<'_, str> {
    if !sql.contains('$') {
        return Cow::Borrowed(sql);
    }
    let mut out = String::with_capacity(sql.len());
    let mut quote: Option<char> = None;
    let mut chars = sql.chars().peekable();
    while let Some(c) = chars.next() {
        match quote {
            Some(q) => {
                if c == q {
                    quote = None;
                }
                out.push(c);
            }
            None => match c {
                '\'' | '"' => {
                    quote = Some(c);
                    out.push(c);
                }
                '$' if chars.peek().is_some_and(char::is_ascii_digit) => out.push('?'),
                _ => out.push(c),
            },
        }
    }
    Cow::Owned(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placeholders_are_rewritten_outside_quotes() {
        assert_eq!(
            placeholders("SELECT a FROM t WHERE b = $1 AND c = '$2' AND d = $10"),
            "SELECT a FROM t WHERE b = ?1 AND c = '$2' AND d = ?10"
        );
        assert_eq!(placeholders("SELECT 1"), "SELECT 1");
        assert_eq!(placeholders("SELECT \"$1\", $2"), "SELECT \"$1\", ?2");
    }
}
