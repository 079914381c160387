//! SQLite implementation of [`Store`], the embedded default.
//!
//! One file, WAL mode, migrations embedded in the binary. The server and the
//! CLI may have the same file open at once (two processes): WAL lets readers
//! run beside the one writer, `busy_timeout` makes a writer wait for the
//! other instead of failing, and every transaction that reads before it
//! writes starts with `BEGIN IMMEDIATE`, taking the write lock up front so
//! that its read cannot go stale (a deferred transaction that upgrades to a
//! write after another process committed fails with `SQLITE_BUSY` at once,
//! whatever the timeout).
//!
//! rusqlite is synchronous: every call runs on `spawn_blocking`, holding the
//! connection's mutex for the duration of one operation.

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use palisade_proto::msg::{Record, RecordBody};
use palisade_proto::pb;
use ring::digest;
use rusqlite::types::Type;
use rusqlite::{Connection, OptionalExtension, Row, Transaction, TransactionBehavior, params};
use serde::{Deserialize, Serialize};

use super::{
    ApiToken, AuditEvent, CommandRow, CommandStatus, EnrollRefusal, EnrollmentToken, FilesystemRow,
    Host, MetricsRow, Millis, NetworkRow, NewAuditEvent, NewCommand, NewHost, NewSession, NewUser,
    Result, Role, Session, Store, StoreError, TokenCheck, User,
};

/// How long a statement waits for another connection's (or process's) lock
/// before failing with "database is locked".
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// The rolling window of an enrollment token's daily limit.
const DAY_MS: Millis = 24 * 60 * 60 * 1000;

/// `prev_hash` of the first audit row.
const AUDIT_GENESIS_HASH: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// Version of [`CanonicalAuditRow`]'s layout, hashed with every row so the
/// serialization can change later without ambiguity.
const AUDIT_CANONICAL_VERSION: u32 = 1;

struct Migration {
    version: u32,
    sql: &'static str,
}

/// Every migration this build knows, in order. Versions only grow; a file,
/// once released, is never edited (add a new one instead).
const MIGRATIONS: &[Migration] = &[
    Migration {
        version: 1,
        sql: include_str!("../../migrations/sqlite/0001_init.sql"),
    },
    Migration {
        version: 2,
        sql: include_str!("../../migrations/sqlite/0002_commands.sql"),
    },
    Migration {
        version: 3,
        sql: include_str!("../../migrations/sqlite/0003_spool_dropped.sql"),
    },
];

/// The SQLite store.
///
/// It holds a single connection behind a mutex, so the database work of
/// this process is serialized. That is deliberate for the embedded default:
/// SQLite admits one writer at a time anyway, and at its scale (hundreds of
/// hosts, a handful of users) each operation takes microseconds to a few
/// milliseconds. The next scale step keeps this one connection for writes and
/// adds a small pool of read-only connections for the web UI's queries (WAL
/// lets them read beside the writer); beyond that the answer is PostgreSQL.
#[derive(Clone)]
pub struct SqliteStore {
    conn: Arc<Mutex<Connection>>,
}

impl std::fmt::Debug for SqliteStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteStore").finish_non_exhaustive()
    }
}

impl SqliteStore {
    /// Opens (creating if needed) the database file at `path` and brings its
    /// schema up to date. A database written by a newer build (a schema
    /// version this build does not know) is refused with
    /// [`StoreError::Migration`].
    pub fn open(path: &Path) -> Result<SqliteStore> {
        let conn = Connection::open(path).map_err(|e| {
            StoreError::Database(format!("opening database {}: {e}", path.display()))
        })?;
        conn.busy_timeout(BUSY_TIMEOUT)
            .ctx("setting busy_timeout")?;
        let mode: String = conn
            .pragma_update_and_check(None, "journal_mode", "WAL", |row| row.get(0))
            .ctx("setting journal_mode")?;
        if !mode.eq_ignore_ascii_case("wal") {
            return Err(StoreError::Database(format!(
                "database {} refused WAL mode (journal_mode is {mode:?})",
                path.display()
            )));
        }
        // In WAL mode a commit appends to the WAL file before COMMIT returns,
        // so a committed transaction survives the process being killed at
        // any moment with either NORMAL or FULL. FULL also fsyncs the WAL at
        // every commit, so it survives a power loss or kernel crash as well.
        // We need that: the uplink acknowledges records once `store_records`
        // has committed, and the agent then drops them from its spool, so a
        // commit that could still be rolled back by a power cut would lose
        // acknowledged data (invariant 8). The price is one fsync per write
        // transaction; records arrive in batches, one transaction each.
        conn.pragma_update(None, "synchronous", "FULL")
            .ctx("setting synchronous")?;
        Self::from_connection(conn)
    }

    /// A private in-memory database, for tests.
    pub fn open_in_memory() -> Result<SqliteStore> {
        let conn = Connection::open_in_memory().ctx("opening in-memory database")?;
        Self::from_connection(conn)
    }

    fn from_connection(mut conn: Connection) -> Result<SqliteStore> {
        // Per connection, and a no-op inside a transaction: set it here, once.
        conn.pragma_update(None, "foreign_keys", "ON")
            .ctx("setting foreign_keys")?;
        migrate(&mut conn, MIGRATIONS, crate::now_millis())?;
        Ok(SqliteStore {
            conn: Arc::new(Mutex::new(conn)),
        })
    }

    /// Runs `f` with the connection on the blocking thread pool.
    async fn run<T, F>(&self, op: &'static str, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&mut Connection) -> Result<T> + Send + 'static,
    {
        let conn = Arc::clone(&self.conn);
        tokio::task::spawn_blocking(move || {
            // A poisoned mutex means an earlier operation panicked while
            // holding it. That is a bug, reported as an error to every later
            // caller rather than a panic of the server.
            let mut guard = conn.lock().map_err(|_| {
                StoreError::Database(format!(
                    "{op}: the database connection is unusable after an earlier panic"
                ))
            })?;
            f(&mut guard)
        })
        .await
        .map_err(|e| StoreError::Database(format!("{op}: database task failed: {e}")))?
    }
}

/// Applies the migrations of `migrations` that `conn` does not have yet,
/// each in its own `BEGIN IMMEDIATE` transaction (so two processes opening
/// a fresh file at once apply each migration exactly once).
fn migrate(conn: &mut Connection, migrations: &[Migration], now: Millis) -> Result<()> {
    conn.execute_batch(
        "CREATE TABLE IF NOT EXISTS schema_migrations (
             version    INTEGER PRIMARY KEY,
             applied_at INTEGER NOT NULL
         )",
    )
    .ctx("creating schema_migrations")?;
    let newest_known = migrations.last().map_or(0, |m| m.version);
    let newest_applied: Option<i64> = conn
        .query_row("SELECT MAX(version) FROM schema_migrations", [], |row| {
            row.get(0)
        })
        .ctx("reading schema_migrations")?;
    if let Some(applied) = newest_applied.filter(|&v| v > i64::from(newest_known)) {
        return Err(StoreError::Migration {
            version: u32::try_from(applied).unwrap_or(u32::MAX),
            reason: format!(
                "the database has schema version {applied} but this build knows only up to {newest_known}; \
                 run a newer palisade-backend"
            ),
        });
    }
    for migration in migrations {
        let failed = |e: rusqlite::Error| StoreError::Migration {
            version: migration.version,
            reason: e.to_string(),
        };
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(failed)?;
        let applied = tx
            .query_row(
                "SELECT 1 FROM schema_migrations WHERE version = ?1",
                [migration.version],
                |_| Ok(()),
            )
            .optional()
            .map_err(failed)?
            .is_some();
        if applied {
            continue;
        }
        tx.execute_batch(migration.sql).map_err(failed)?;
        tx.execute(
            "INSERT INTO schema_migrations (version, applied_at) VALUES (?1, ?2)",
            params![migration.version, now],
        )
        .map_err(failed)?;
        tx.commit().map_err(failed)?;
        tracing::info!(version = migration.version, "applied database migration");
    }
    Ok(())
}

// ---------------------------------------------------------------------------
// Errors and conversions

/// Turns a rusqlite error into a [`StoreError`] naming the operation. Values
/// that cannot be read back as their Rust type (a negative count, a role
/// that does not exist, malformed JSON) are [`StoreError::Corrupt`].
fn sql_err(op: &str, e: rusqlite::Error) -> StoreError {
    match e {
        rusqlite::Error::IntegralValueOutOfRange(..)
        | rusqlite::Error::FromSqlConversionFailure(..)
        | rusqlite::Error::InvalidColumnType(..) => StoreError::Corrupt(format!("{op}: {e}")),
        e => StoreError::Database(format!("{op}: {e}")),
    }
}

fn is_unique_violation(e: &rusqlite::Error) -> bool {
    matches!(
        e,
        rusqlite::Error::SqliteFailure(f, _)
            if f.extended_code == rusqlite::ffi::SQLITE_CONSTRAINT_PRIMARYKEY
                || f.extended_code == rusqlite::ffi::SQLITE_CONSTRAINT_UNIQUE
    )
}

trait SqlResultExt<T> {
    /// Maps the error with [`sql_err`].
    fn ctx(self, op: &str) -> Result<T>;
    /// Like [`SqlResultExt::ctx`], but a primary key or unique violation is
    /// [`StoreError::Conflict`] about `what`.
    fn ctx_conflict(self, op: &str, what: impl FnOnce() -> String) -> Result<T>;
}

impl<T> SqlResultExt<T> for rusqlite::Result<T> {
    fn ctx(self, op: &str) -> Result<T> {
        self.map_err(|e| sql_err(op, e))
    }

    fn ctx_conflict(self, op: &str, what: impl FnOnce() -> String) -> Result<T> {
        self.map_err(|e| {
            if is_unique_violation(&e) {
                StoreError::Conflict { what: what() }
            } else {
                sql_err(op, e)
            }
        })
    }
}

/// Counters (bytes, seconds) are `u64` on the wire and INTEGER (`i64`) in
/// SQL. A value above `i64::MAX` (9.2 exabytes, 292 billion years) is not a
/// measurement; it is clamped rather than refused, because a refused record
/// would be retried by the agent forever and block every record behind it.
fn counter_to_sql(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

/// Sequence numbers are keys: clamping would merge distinct records, so one
/// above `i64::MAX` is refused (an agent counting from 1 never gets there).
fn seq_to_sql(seq: u64) -> Result<i64> {
    i64::try_from(seq).map_err(|_| {
        StoreError::Database(format!(
            "record sequence {seq} is beyond the storable range"
        ))
    })
}

fn seq_from_sql(seq: i64, what: &str) -> Result<u64> {
    u64::try_from(seq).map_err(|_| StoreError::Corrupt(format!("{what} is negative ({seq})")))
}

/// proto3 sends "unknown" as the empty string; the database says NULL.
fn non_empty(s: &str) -> Option<&str> {
    (!s.is_empty()).then_some(s)
}

/// A column that holds text which must parse (JSON, a role, a CIDR).
fn parse_column<T, E>(
    idx: usize,
    text: &str,
    parse: impl FnOnce(&str) -> Result<T, E>,
) -> rusqlite::Result<T>
where
    E: Into<Box<dyn std::error::Error + Send + Sync + 'static>>,
{
    parse(text).map_err(|e| rusqlite::Error::FromSqlConversionFailure(idx, Type::Text, e.into()))
}

/// A column that holds JSON text.
fn json_column<T: serde::de::DeserializeOwned>(idx: usize, text: &str) -> rusqlite::Result<T> {
    parse_column(idx, text, |t| serde_json::from_str::<T>(t))
}

fn json_err(what: &str, e: serde_json::Error) -> StoreError {
    StoreError::Database(format!("serializing {what} as JSON: {e}"))
}

// ---------------------------------------------------------------------------
// Row mapping

const USER_COLUMNS: &str =
    "users.id, users.username, users.password_hash, users.role, users.created_at, users.disabled";

/// Reads the [`USER_COLUMNS`] starting at column `at`.
fn user_from_row(row: &Row<'_>, at: usize) -> rusqlite::Result<User> {
    let role: String = row.get(at + 3)?;
    Ok(User {
        id: row.get(at)?,
        username: row.get(at + 1)?,
        password_hash: row.get(at + 2)?,
        role: parse_column(at + 3, &role, str::parse::<Role>)?,
        created_at: row.get(at + 4)?,
        disabled: row.get(at + 5)?,
    })
}

const SESSION_COLUMNS: &str = "sessions.id_hash, sessions.user_id, sessions.created_at, sessions.last_seen_at, \
                               sessions.expires_at, sessions.source_ip, sessions.user_agent";

fn session_from_row(row: &Row<'_>) -> rusqlite::Result<Session> {
    Ok(Session {
        id_hash: row.get(0)?,
        user_id: row.get(1)?,
        created_at: row.get(2)?,
        last_seen_at: row.get(3)?,
        expires_at: row.get(4)?,
        source_ip: row.get(5)?,
        user_agent: row.get(6)?,
    })
}

const API_TOKEN_COLUMNS: &str = "id, name, secret_hash, created_at, revoked_at";

fn api_token_from_row(row: &Row<'_>) -> rusqlite::Result<ApiToken> {
    Ok(ApiToken {
        id: row.get(0)?,
        name: row.get(1)?,
        secret_hash: row.get(2)?,
        created_at: row.get(3)?,
        revoked_at: row.get(4)?,
    })
}

const ENROLLMENT_TOKEN_COLUMNS: &str =
    "id, secret_hash, host_group, cidrs, max_per_day, expires_at, created_at, revoked_at";

fn enrollment_token_from_row(row: &Row<'_>) -> rusqlite::Result<EnrollmentToken> {
    let cidrs: String = row.get(3)?;
    let cidrs: Vec<String> = json_column(3, &cidrs)?;
    let cidrs = cidrs
        .iter()
        .map(|c| parse_column(3, c, str::parse::<ipnet::IpNet>))
        .collect::<rusqlite::Result<Vec<_>>>()?;
    Ok(EnrollmentToken {
        id: row.get(0)?,
        secret_hash: row.get(1)?,
        host_group: row.get(2)?,
        cidrs,
        max_per_day: row.get(4)?,
        expires_at: row.get(5)?,
        created_at: row.get(6)?,
        revoked_at: row.get(7)?,
    })
}

const HOST_COLUMNS: &str = "id, hostname, host_group, os_pretty_name, os_id, os_version_id, kernel_release, \
                            architecture, cpu_count, memory_total_bytes, enrolled_at, enrolled_from, cert_sha256, \
                            last_seen, last_transport, stored_up_to_seq, agent_health, revoked_at, \
                            spool_dropped_total";

fn host_from_row(row: &Row<'_>) -> rusqlite::Result<Host> {
    let agent_health: Option<String> = row.get(16)?;
    Ok(Host {
        id: row.get(0)?,
        hostname: row.get(1)?,
        host_group: row.get(2)?,
        os_pretty_name: row.get(3)?,
        os_id: row.get(4)?,
        os_version_id: row.get(5)?,
        kernel_release: row.get(6)?,
        architecture: row.get(7)?,
        cpu_count: row.get(8)?,
        memory_total_bytes: row.get(9)?,
        enrolled_at: row.get(10)?,
        enrolled_from: row.get(11)?,
        cert_sha256: row.get(12)?,
        last_seen: row.get(13)?,
        last_transport: row.get(14)?,
        stored_up_to_seq: row.get(15)?,
        agent_health: agent_health
            .map(|text| json_column(16, &text))
            .transpose()?,
        revoked_at: row.get(17)?,
        spool_dropped_total: row.get(18)?,
    })
}

fn load_host(conn: &Connection, id: &str) -> Result<Option<Host>> {
    conn.query_row(
        &format!("SELECT {HOST_COLUMNS} FROM hosts WHERE id = ?1"),
        [id],
        host_from_row,
    )
    .optional()
    .ctx("loading host")
}

const METRICS_COLUMNS: &str = "seq, collected_at, cpu_percent, memory_total_bytes, memory_available_bytes, \
                               swap_total_bytes, swap_free_bytes, load_1, load_5, load_15, uptime_seconds, \
                               process_count, filesystems, network";

/// JSON layout of one element of `metrics.filesystems`.
#[derive(Serialize, Deserialize)]
struct FilesystemJson {
    mount_point: String,
    device: String,
    fs_type: String,
    total_bytes: u64,
    used_bytes: u64,
    available_bytes: u64,
}

/// JSON layout of one element of `metrics.network`.
#[derive(Serialize, Deserialize)]
struct NetworkJson {
    interface: String,
    rx_bytes: u64,
    tx_bytes: u64,
}

fn metrics_from_row(row: &Row<'_>) -> rusqlite::Result<MetricsRow> {
    let filesystems: String = row.get(12)?;
    let filesystems: Vec<FilesystemJson> = json_column(12, &filesystems)?;
    let network: String = row.get(13)?;
    let network: Vec<NetworkJson> = json_column(13, &network)?;
    Ok(MetricsRow {
        seq: row.get(0)?,
        collected_at: row.get(1)?,
        cpu_percent: row.get(2)?,
        memory_total_bytes: row.get(3)?,
        memory_available_bytes: row.get(4)?,
        swap_total_bytes: row.get(5)?,
        swap_free_bytes: row.get(6)?,
        load_1: row.get(7)?,
        load_5: row.get(8)?,
        load_15: row.get(9)?,
        uptime_seconds: row.get(10)?,
        process_count: row.get(11)?,
        filesystems: filesystems
            .into_iter()
            .map(|f| FilesystemRow {
                mount_point: f.mount_point,
                device: f.device,
                fs_type: f.fs_type,
                total_bytes: f.total_bytes,
                used_bytes: f.used_bytes,
                available_bytes: f.available_bytes,
            })
            .collect(),
        network: network
            .into_iter()
            .map(|n| NetworkRow {
                interface: n.interface,
                rx_bytes: n.rx_bytes,
                tx_bytes: n.tx_bytes,
            })
            .collect(),
    })
}

/// JSON layout of `hosts.agent_health`.
#[derive(Serialize)]
struct AgentHealthJson<'a> {
    children: Vec<ChildHealthJson<'a>>,
}

#[derive(Serialize)]
struct ChildHealthJson<'a> {
    role: &'a str,
    pid: u32,
    healthy: bool,
    restarts: u32,
    sandbox: &'a str,
}

// ---------------------------------------------------------------------------
// Records

/// Applies the body of a record that was just inserted into `host_records`.
fn apply_record_body(
    tx: &Transaction<'_>,
    host_id: &str,
    seq: i64,
    received_at: Millis,
    body: &RecordBody,
) -> Result<()> {
    match body {
        // Facts and health describe "now": only a newer record than the one
        // already applied replaces them, so a late, older record (stored for
        // the first time after a newer one) leaves them alone.
        RecordBody::Facts(facts) => apply_facts(tx, host_id, seq, facts),
        RecordBody::Metrics(m) => insert_metrics(tx, host_id, seq, m),
        RecordBody::CommandResult(result) => {
            apply_command_result(tx, host_id, seq, received_at, result)
        }
        RecordBody::AgentHealth(health) => {
            let json = AgentHealthJson {
                children: health
                    .children
                    .iter()
                    .map(|c| ChildHealthJson {
                        role: &c.role,
                        pid: c.pid,
                        healthy: c.healthy,
                        restarts: c.restarts,
                        sandbox: &c.sandbox,
                    })
                    .collect(),
            };
            let json = serde_json::to_string(&json).map_err(|e| json_err("agent health", e))?;
            tx.execute(
                "UPDATE hosts SET agent_health = ?2, agent_health_seq = ?3 WHERE id = ?1 AND agent_health_seq < ?3",
                params![host_id, json, seq],
            )
            .ctx("storing agent health")?;
            Ok(())
        }
    }
}

fn apply_facts(tx: &Transaction<'_>, host_id: &str, seq: i64, facts: &pb::HostFacts) -> Result<()> {
    // Empty strings and zero counts are proto3's "not reported": stored as
    // NULL. The hostname is required by the decoder, so it is never empty.
    tx.execute(
        "UPDATE hosts SET hostname = ?2, os_pretty_name = ?3, os_id = ?4, os_version_id = ?5, kernel_release = ?6,
                          architecture = ?7, cpu_count = ?8, memory_total_bytes = ?9, facts_seq = ?10
         WHERE id = ?1 AND facts_seq < ?10",
        params![
            host_id,
            facts.hostname,
            non_empty(&facts.os_pretty_name),
            non_empty(&facts.os_id),
            non_empty(&facts.os_version_id),
            non_empty(&facts.kernel_release),
            non_empty(&facts.architecture),
            (facts.cpu_count != 0).then_some(facts.cpu_count),
            (facts.memory_total_bytes != 0).then(|| counter_to_sql(facts.memory_total_bytes)),
            seq,
        ],
    )
    .ctx("storing host facts")?;
    Ok(())
}

fn insert_metrics(tx: &Transaction<'_>, host_id: &str, seq: i64, m: &pb::Metrics) -> Result<()> {
    let filesystems: Vec<FilesystemJson> = m
        .filesystems
        .iter()
        .map(|f| FilesystemJson {
            mount_point: f.mount_point.clone(),
            device: f.device.clone(),
            fs_type: f.fs_type.clone(),
            total_bytes: f.total_bytes,
            used_bytes: f.used_bytes,
            available_bytes: f.available_bytes,
        })
        .collect();
    let network: Vec<NetworkJson> = m
        .network
        .iter()
        .map(|n| NetworkJson {
            interface: n.interface.clone(),
            rx_bytes: n.rx_bytes,
            tx_bytes: n.tx_bytes,
        })
        .collect();
    let filesystems =
        serde_json::to_string(&filesystems).map_err(|e| json_err("filesystems", e))?;
    let network = serde_json::to_string(&network).map_err(|e| json_err("network counters", e))?;
    tx.execute(
        "INSERT INTO metrics (host_id, seq, collected_at, cpu_percent, memory_total_bytes, memory_available_bytes,
                              swap_total_bytes, swap_free_bytes, load_1, load_5, load_15, uptime_seconds,
                              process_count, filesystems, network)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15)",
        params![
            host_id,
            seq,
            m.collected_at_unix_ms,
            m.cpu_percent,
            counter_to_sql(m.memory_total_bytes),
            counter_to_sql(m.memory_available_bytes),
            counter_to_sql(m.swap_total_bytes),
            counter_to_sql(m.swap_free_bytes),
            m.load_1,
            m.load_5,
            m.load_15,
            counter_to_sql(m.uptime_seconds),
            m.process_count,
            filesystems,
            network,
        ],
    )
    .ctx("storing metrics")?;
    Ok(())
}

fn store_records_tx(
    conn: &mut Connection,
    host_id: &str,
    received_at: Millis,
    records: &[Record],
) -> Result<u64> {
    let tx = conn
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .ctx("store records: begin")?;
    let stored: Option<i64> = tx
        .query_row(
            "SELECT stored_up_to_seq FROM hosts WHERE id = ?1",
            [host_id],
            |row| row.get(0),
        )
        .optional()
        .ctx("store records: loading host")?;
    let Some(stored) = stored else {
        return Err(StoreError::Database(format!(
            "store records: no host with id {host_id:?}"
        )));
    };
    let before = seq_from_sql(stored, "hosts.stored_up_to_seq")?;
    let mut up_to = before;
    for record in records {
        let seq = seq_to_sql(record.seq)?;
        let inserted = tx
            .execute(
                "INSERT INTO host_records (host_id, seq, kind, created_at, received_at) VALUES (?1, ?2, ?3, ?4, ?5)
                 ON CONFLICT (host_id, seq) DO NOTHING",
                params![host_id, seq, record.body.kind(), record.created_at_unix_ms, received_at],
            )
            .ctx("store records: inserting into host_records")?;
        if inserted == 1 {
            apply_record_body(&tx, host_id, seq, received_at, &record.body)?;
        }
        up_to = up_to.max(record.seq);
    }
    if up_to != before {
        tx.execute(
            "UPDATE hosts SET stored_up_to_seq = ?2 WHERE id = ?1",
            params![host_id, seq_to_sql(up_to)?],
        )
        .ctx("store records: updating stored_up_to_seq")?;
    }
    tx.commit().ctx("store records: commit")?;
    Ok(up_to)
}

// ---------------------------------------------------------------------------
// Commands

const COMMAND_COLUMNS: &str = "id, host_id, type, payload, requested_by, source_ip, user_agent, issued_at, \
                               expires_at, command_bytes, signature, status, delivered_at, exit_code, output, \
                               error, started_at, finished_at, result_received_at";

fn command_from_row(row: &Row<'_>) -> rusqlite::Result<CommandRow> {
    let payload: String = row.get(3)?;
    let status: String = row.get(11)?;
    Ok(CommandRow {
        id: row.get(0)?,
        host_id: row.get(1)?,
        kind: row.get(2)?,
        payload: json_column(3, &payload)?,
        requested_by: row.get(4)?,
        source_ip: row.get(5)?,
        user_agent: row.get(6)?,
        issued_at: row.get(7)?,
        expires_at: row.get(8)?,
        command_bytes: row.get(9)?,
        signature: row.get(10)?,
        status: parse_column(11, &status, str::parse::<CommandStatus>)?,
        delivered_at: row.get(12)?,
        exit_code: row.get(13)?,
        output: row.get(14)?,
        error: row.get(15)?,
        started_at: row.get(16)?,
        finished_at: row.get(17)?,
        result_received_at: row.get(18)?,
    })
}

fn load_command(conn: &Connection, id: &str) -> Result<Option<CommandRow>> {
    conn.query_row(
        &format!("SELECT {COMMAND_COLUMNS} FROM commands WHERE id = ?1"),
        [id],
        command_from_row,
    )
    .optional()
    .ctx("loading command")
}

fn create_command_tx(
    conn: &mut Connection,
    command: NewCommand,
    audit: NewAuditEvent,
) -> Result<CommandRow> {
    let payload =
        serde_json::to_string(&command.payload).map_err(|e| json_err("command payload", e))?;
    let tx = conn
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .ctx("create command: begin")?;
    tx.execute(
        "INSERT INTO commands (id, host_id, type, payload, requested_by, source_ip, user_agent, issued_at,
                               expires_at, command_bytes, signature, status)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, 'pending')",
        params![
            command.id,
            command.host_id,
            command.kind,
            payload,
            command.requested_by,
            command.source_ip,
            command.user_agent,
            command.issued_at,
            command.expires_at,
            command.command_bytes,
            command.signature,
        ],
    )
    .ctx_conflict("create command", || format!("command {:?}", command.id))?;
    insert_audit(&tx, audit)?;
    let created = load_command(&tx, &command.id)?.ok_or_else(|| {
        StoreError::Database(format!(
            "create command: command {:?} vanished after insert",
            command.id
        ))
    })?;
    tx.commit().ctx("create command: commit")?;
    Ok(created)
}

fn commands_to_deliver_tx(
    conn: &mut Connection,
    host_id: &str,
    now: Millis,
    limit: u32,
) -> Result<Vec<CommandRow>> {
    const OP: &str = "commands to deliver";
    let tx = conn
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .ctx(OP)?;
    tx.execute(
        "UPDATE commands SET status = 'expired' WHERE host_id = ?1 AND status = 'pending' AND expires_at <= ?2",
        params![host_id, now],
    )
    .ctx(OP)?;
    let rows = {
        let mut stmt = tx
            .prepare(&format!(
                "SELECT {COMMAND_COLUMNS} FROM commands
                 WHERE host_id = ?1 AND status IN ('pending', 'delivered') AND expires_at > ?2
                 ORDER BY issued_at, id LIMIT ?3"
            ))
            .ctx(OP)?;
        let rows = stmt
            .query_map(params![host_id, now, limit], command_from_row)
            .ctx(OP)?;
        rows.collect::<rusqlite::Result<Vec<_>>>().ctx(OP)?
    };
    tx.commit().ctx(OP)?;
    Ok(rows)
}

/// The stored name of a result's status; `None` for one a result cannot
/// have (the decoder already refuses those).
fn result_status(status: i32) -> Option<CommandStatus> {
    match pb::CommandStatus::try_from(status).ok()? {
        pb::CommandStatus::Succeeded => Some(CommandStatus::Succeeded),
        pb::CommandStatus::Failed => Some(CommandStatus::Failed),
        pb::CommandStatus::Rejected => Some(CommandStatus::Rejected),
        pb::CommandStatus::Unspecified => None,
    }
}

/// Completes the host's command named by `result`, once: a result for a
/// command that already has one (a redelivered command that control refused
/// as a replay, after the first delivery's result) changes nothing. A result
/// that matches no command *of this host* (another host's command id, an
/// unknown id, or no id: control refused something it could not verify) is
/// appended to the audit log instead, because it means something on the
/// agent handed control a command the backend did not send to it.
fn apply_command_result(
    tx: &Transaction<'_>,
    host_id: &str,
    seq: i64,
    received_at: Millis,
    result: &pb::CommandResult,
) -> Result<()> {
    let Some(status) = result_status(result.status) else {
        // The decoder refuses these; were one stored anyway, failing the
        // batch would make the agent resend it forever, so it is skipped.
        tracing::warn!(
            host_id,
            status = result.status,
            "ignoring a command result without a status"
        );
        return Ok(());
    };
    let updated = if result.command_id.is_empty() {
        0
    } else {
        tx.execute(
            "UPDATE commands SET status = ?3, exit_code = ?4, output = ?5, error = ?6, started_at = ?7,
                                 finished_at = ?8, result_received_at = ?9, result_seq = ?10
             WHERE id = ?1 AND host_id = ?2 AND status IN ('pending', 'delivered', 'expired')",
            params![
                result.command_id,
                host_id,
                status.as_str(),
                result.exit_code,
                result.output,
                non_empty(&result.error),
                result.started_at_unix_ms,
                result.finished_at_unix_ms,
                received_at,
                seq,
            ],
        )
        .ctx("storing a command result")?
    };
    if updated > 0 {
        return Ok(());
    }
    let known = if result.command_id.is_empty() {
        false
    } else {
        tx.query_row(
            "SELECT 1 FROM commands WHERE id = ?1 AND host_id = ?2",
            params![result.command_id, host_id],
            |_| Ok(()),
        )
        .optional()
        .ctx("storing a command result")?
        .is_some()
    };
    if known {
        tracing::info!(
            host_id,
            command_id = %result.command_id,
            status = status.as_str(),
            error = %result.error,
            "ignoring a further result for a command that already has one"
        );
        return Ok(());
    }
    let action = if result.command_id.is_empty() {
        "command.refused_unverified"
    } else {
        "command.unmatched_result"
    };
    tracing::warn!(
        host_id,
        command_id = %result.command_id,
        status = status.as_str(),
        error = %result.error,
        "the agent reported a result for a command this backend did not send it"
    );
    insert_audit(
        tx,
        NewAuditEvent {
            at: received_at,
            actor: format!("agent:{host_id}"),
            action: action.into(),
            target: Some(host_id.to_owned()),
            source_ip: None,
            user_agent: None,
            outcome: if status == CommandStatus::Rejected {
                "denied".into()
            } else {
                "failure".into()
            },
            details: serde_json::json!({
                "command_id": result.command_id,
                "status": status.as_str(),
                "error": result.error,
                "record_seq": seq,
            }),
        },
    )?;
    Ok(())
}

// ---------------------------------------------------------------------------
// Enrollment

fn enroll_host_tx(
    conn: &mut Connection,
    token_id: &str,
    now: Millis,
    check: TokenCheck,
    host: &NewHost,
) -> Result<std::result::Result<Host, EnrollRefusal>> {
    // The write lock is taken before the count is read, so two enrollments
    // (in this process or another) cannot both see "one use left".
    let tx = conn
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .ctx("enroll host: begin")?;
    let token = tx
        .query_row(
            &format!("SELECT {ENROLLMENT_TOKEN_COLUMNS} FROM enrollment_tokens WHERE id = ?1"),
            [token_id],
            enrollment_token_from_row,
        )
        .optional()
        .ctx("enroll host: loading token")?;
    let Some(token) = token else {
        return Ok(Err(EnrollRefusal::UnknownToken));
    };
    let recent_uses: i64 = tx
        .query_row(
            "SELECT COUNT(*) FROM enrollment_uses WHERE token_id = ?1 AND used_at > ?2 AND used_at <= ?3",
            params![token_id, now.saturating_sub(DAY_MS), now],
            |row| row.get(0),
        )
        .ctx("enroll host: counting recent uses")?;
    let recent_uses = u32::try_from(recent_uses).unwrap_or(u32::MAX);
    if let Err(refusal) = check(&token, recent_uses, now) {
        return Ok(Err(refusal));
    }
    tx.execute(
        "INSERT INTO hosts (id, hostname, host_group, enrolled_at, enrolled_from, token_id, cert_sha256)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
        params![host.id, host.hostname, host.host_group, host.enrolled_at, host.enrolled_from, token_id, host.cert_sha256],
    )
    .ctx_conflict("enroll host: inserting host", || format!("host {:?}", host.id))?;
    tx.execute(
        "INSERT INTO enrollment_uses (token_id, host_id, used_at) VALUES (?1, ?2, ?3)",
        params![token_id, host.id, now],
    )
    .ctx("enroll host: recording token use")?;
    let created = load_host(&tx, &host.id)?.ok_or_else(|| {
        StoreError::Database(format!(
            "enroll host: host {:?} vanished after insert",
            host.id
        ))
    })?;
    tx.commit().ctx("enroll host: commit")?;
    Ok(Ok(created))
}

// ---------------------------------------------------------------------------
// Audit log

/// The fields of an audit row in a fixed order, serialized as JSON for the
/// hash. JSON of a struct with string escaping is unambiguous (no field can
/// run into the next), and `details` is hashed as the exact text stored, so
/// verification never depends on re-serializing parsed JSON. The id is part
/// of the hash, so rows cannot be reordered.
#[derive(Serialize)]
struct CanonicalAuditRow<'a> {
    v: u32,
    id: i64,
    at: Millis,
    actor: &'a str,
    action: &'a str,
    target: Option<&'a str>,
    source_ip: Option<&'a str>,
    user_agent: Option<&'a str>,
    outcome: &'a str,
    details: &'a str,
}

/// Hex SHA-256 of `prev_hash` (64 hex characters) followed by the canonical
/// JSON of the row.
fn audit_hash(prev_hash: &str, row: &CanonicalAuditRow<'_>) -> Result<String> {
    let canonical = serde_json::to_vec(row).map_err(|e| json_err("audit row", e))?;
    let mut ctx = digest::Context::new(&digest::SHA256);
    ctx.update(prev_hash.as_bytes());
    ctx.update(&canonical);
    Ok(hex::encode(ctx.finish()))
}

fn append_audit_tx(conn: &mut Connection, event: NewAuditEvent) -> Result<AuditEvent> {
    // IMMEDIATE: the previous hash and the next id must still be the last
    // ones when this row is inserted, even with another process appending.
    let tx = conn
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .ctx("append audit: begin")?;
    let appended = insert_audit(&tx, event)?;
    tx.commit().ctx("append audit: commit")?;
    Ok(appended)
}

/// Appends `event` to the audit log inside `tx`, which must hold the write
/// lock (an IMMEDIATE transaction), so the chain's last row cannot change
/// under it.
fn insert_audit(tx: &Transaction<'_>, event: NewAuditEvent) -> Result<AuditEvent> {
    let details =
        serde_json::to_string(&event.details).map_err(|e| json_err("audit details", e))?;
    let last: Option<(i64, String)> = tx
        .query_row(
            "SELECT id, hash FROM audit_log ORDER BY id DESC LIMIT 1",
            [],
            |row| Ok((row.get(0)?, row.get(1)?)),
        )
        .optional()
        .ctx("append audit: reading the last row")?;
    let (last_id, prev_hash) = last.unwrap_or_else(|| (0, AUDIT_GENESIS_HASH.to_owned()));
    let id = last_id
        .checked_add(1)
        .ok_or_else(|| StoreError::Corrupt("audit_log ids are exhausted".into()))?;
    let hash = audit_hash(
        &prev_hash,
        &CanonicalAuditRow {
            v: AUDIT_CANONICAL_VERSION,
            id,
            at: event.at,
            actor: &event.actor,
            action: &event.action,
            target: event.target.as_deref(),
            source_ip: event.source_ip.as_deref(),
            user_agent: event.user_agent.as_deref(),
            outcome: &event.outcome,
            details: &details,
        },
    )?;
    tx.execute(
        "INSERT INTO audit_log (id, at, actor, action, target, source_ip, user_agent, outcome, details, prev_hash, hash)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)",
        params![
            id,
            event.at,
            event.actor,
            event.action,
            event.target,
            event.source_ip,
            event.user_agent,
            event.outcome,
            details,
            prev_hash,
            hash
        ],
    )
    .ctx("append audit: insert")?;
    Ok(AuditEvent {
        id,
        at: event.at,
        actor: event.actor,
        action: event.action,
        target: event.target,
        source_ip: event.source_ip,
        user_agent: event.user_agent,
        outcome: event.outcome,
        details: event.details,
        hash,
    })
}

/// One audit row as stored, for verification.
struct StoredAuditRow {
    at: Millis,
    actor: String,
    action: String,
    target: Option<String>,
    source_ip: Option<String>,
    user_agent: Option<String>,
    outcome: String,
    details: String,
    prev_hash: String,
    hash: String,
}

fn verify_audit_chain_sync(conn: &Connection) -> Result<Option<i64>> {
    const OP: &str = "verify audit chain";
    // One statement reads one consistent snapshot, even while others append.
    let mut stmt = conn
        .prepare(
            "SELECT id, at, actor, action, target, source_ip, user_agent, outcome, details, prev_hash, hash
             FROM audit_log ORDER BY id",
        )
        .ctx(OP)?;
    let mut rows = stmt.query([]).ctx(OP)?;
    let mut expected_id: i64 = 1;
    let mut expected_prev = AUDIT_GENESIS_HASH.to_owned();
    while let Some(row) = rows.next().ctx(OP)? {
        let id: i64 = row.get(0).ctx(OP)?;
        let read = || -> rusqlite::Result<StoredAuditRow> {
            Ok(StoredAuditRow {
                at: row.get(1)?,
                actor: row.get(2)?,
                action: row.get(3)?,
                target: row.get(4)?,
                source_ip: row.get(5)?,
                user_agent: row.get(6)?,
                outcome: row.get(7)?,
                details: row.get(8)?,
                prev_hash: row.get(9)?,
                hash: row.get(10)?,
            })
        };
        // A row whose columns no longer have their types was tampered with.
        let Ok(stored) = read() else {
            return Ok(Some(id));
        };
        // A gap in the ids means a row was removed; the first row after the
        // gap is the first one that no longer chains.
        if id != expected_id || stored.prev_hash != expected_prev {
            return Ok(Some(id));
        }
        let computed = audit_hash(
            &stored.prev_hash,
            &CanonicalAuditRow {
                v: AUDIT_CANONICAL_VERSION,
                id,
                at: stored.at,
                actor: &stored.actor,
                action: &stored.action,
                target: stored.target.as_deref(),
                source_ip: stored.source_ip.as_deref(),
                user_agent: stored.user_agent.as_deref(),
                outcome: &stored.outcome,
                details: &stored.details,
            },
        )?;
        if computed != stored.hash {
            return Ok(Some(id));
        }
        expected_prev = stored.hash;
        expected_id = id.saturating_add(1);
    }
    Ok(None)
}

fn audit_event_from_row(row: &Row<'_>) -> rusqlite::Result<AuditEvent> {
    let details: String = row.get(8)?;
    Ok(AuditEvent {
        id: row.get(0)?,
        at: row.get(1)?,
        actor: row.get(2)?,
        action: row.get(3)?,
        target: row.get(4)?,
        source_ip: row.get(5)?,
        user_agent: row.get(6)?,
        outcome: row.get(7)?,
        details: json_column(8, &details)?,
        hash: row.get(9)?,
    })
}

// ---------------------------------------------------------------------------
// The trait

#[async_trait]
impl Store for SqliteStore {
    async fn create_user(&self, user: NewUser) -> Result<User> {
        self.run("create user", move |conn| {
            conn.execute(
                "INSERT INTO users (username, password_hash, role, created_at) VALUES (?1, ?2, ?3, ?4)",
                params![user.username, user.password_hash, user.role.as_str(), user.created_at],
            )
            .ctx_conflict("create user", || format!("user {:?}", user.username))?;
            Ok(User {
                id: conn.last_insert_rowid(),
                username: user.username,
                password_hash: user.password_hash,
                role: user.role,
                created_at: user.created_at,
                disabled: false,
            })
        })
        .await
    }

    async fn user_by_name(&self, username: &str) -> Result<Option<User>> {
        let username = username.to_owned();
        self.run("load user", move |conn| {
            conn.query_row(
                &format!("SELECT {USER_COLUMNS} FROM users WHERE username = ?1"),
                [&username],
                |row| user_from_row(row, 0),
            )
            .optional()
            .ctx("load user")
        })
        .await
    }

    async fn create_session(&self, session: NewSession) -> Result<()> {
        self.run("create session", move |conn| {
            conn.execute(
                "INSERT INTO sessions (id_hash, user_id, created_at, last_seen_at, expires_at, source_ip, user_agent)
                 VALUES (?1, ?2, ?3, ?3, ?4, ?5, ?6)",
                params![
                    session.id_hash,
                    session.user_id,
                    session.created_at,
                    session.expires_at,
                    session.source_ip,
                    session.user_agent
                ],
            )
            .ctx_conflict("create session", || "session".to_owned())?;
            Ok(())
        })
        .await
    }

    async fn session(&self, id_hash: &[u8], now: Millis) -> Result<Option<(Session, User)>> {
        let id_hash = id_hash.to_vec();
        self.run("load session", move |conn| {
            conn.query_row(
                &format!(
                    "SELECT {SESSION_COLUMNS}, {USER_COLUMNS}
                     FROM sessions JOIN users ON users.id = sessions.user_id
                     WHERE sessions.id_hash = ?1 AND sessions.expires_at > ?2 AND users.disabled = 0"
                ),
                params![id_hash, now],
                |row| Ok((session_from_row(row)?, user_from_row(row, 7)?)),
            )
            .optional()
            .ctx("load session")
        })
        .await
    }

    async fn touch_session(&self, id_hash: &[u8], now: Millis, expires_at: Millis) -> Result<()> {
        let id_hash = id_hash.to_vec();
        self.run("touch session", move |conn| {
            // An expired session stays expired: touching it (a request that
            // raced with the expiry) must not bring it back.
            conn.execute(
                "UPDATE sessions SET last_seen_at = ?2, expires_at = ?3 WHERE id_hash = ?1 AND expires_at > ?2",
                params![id_hash, now, expires_at],
            )
            .ctx("touch session")?;
            Ok(())
        })
        .await
    }

    async fn delete_session(&self, id_hash: &[u8]) -> Result<()> {
        let id_hash = id_hash.to_vec();
        self.run("delete session", move |conn| {
            conn.execute("DELETE FROM sessions WHERE id_hash = ?1", [id_hash])
                .ctx("delete session")?;
            Ok(())
        })
        .await
    }

    async fn create_api_token(&self, token: ApiToken) -> Result<()> {
        self.run("create api token", move |conn| {
            conn.execute(
                "INSERT INTO api_tokens (id, name, secret_hash, created_at, revoked_at) VALUES (?1, ?2, ?3, ?4, ?5)",
                params![token.id, token.name, token.secret_hash, token.created_at, token.revoked_at],
            )
            .ctx_conflict("create api token", || format!("api token {:?}", token.id))?;
            Ok(())
        })
        .await
    }

    async fn api_token(&self, id: &str) -> Result<Option<ApiToken>> {
        let id = id.to_owned();
        self.run("load api token", move |conn| {
            conn.query_row(
                &format!("SELECT {API_TOKEN_COLUMNS} FROM api_tokens WHERE id = ?1"),
                [&id],
                api_token_from_row,
            )
            .optional()
            .ctx("load api token")
        })
        .await
    }

    async fn create_enrollment_token(&self, token: EnrollmentToken) -> Result<()> {
        let cidrs: Vec<String> = token.cidrs.iter().map(ToString::to_string).collect();
        let cidrs = serde_json::to_string(&cidrs).map_err(|e| json_err("token cidrs", e))?;
        self.run("create enrollment token", move |conn| {
            conn.execute(
                "INSERT INTO enrollment_tokens (id, secret_hash, host_group, cidrs, max_per_day, expires_at, created_at,
                                                revoked_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
                params![
                    token.id,
                    token.secret_hash,
                    token.host_group,
                    cidrs,
                    token.max_per_day,
                    token.expires_at,
                    token.created_at,
                    token.revoked_at
                ],
            )
            .ctx_conflict("create enrollment token", || format!("enrollment token {:?}", token.id))?;
            Ok(())
        })
        .await
    }

    async fn enrollment_token(&self, id: &str) -> Result<Option<EnrollmentToken>> {
        let id = id.to_owned();
        self.run("load enrollment token", move |conn| {
            conn.query_row(
                &format!("SELECT {ENROLLMENT_TOKEN_COLUMNS} FROM enrollment_tokens WHERE id = ?1"),
                [&id],
                enrollment_token_from_row,
            )
            .optional()
            .ctx("load enrollment token")
        })
        .await
    }

    async fn list_enrollment_tokens(&self) -> Result<Vec<EnrollmentToken>> {
        self.run("list enrollment tokens", move |conn| {
            let mut stmt = conn
                .prepare(&format!("SELECT {ENROLLMENT_TOKEN_COLUMNS} FROM enrollment_tokens ORDER BY created_at, id"))
                .ctx("list enrollment tokens")?;
            let tokens = stmt.query_map([], enrollment_token_from_row).ctx("list enrollment tokens")?;
            tokens.collect::<rusqlite::Result<Vec<_>>>().ctx("list enrollment tokens")
        })
        .await
    }

    async fn revoke_enrollment_token(&self, id: &str, now: Millis) -> Result<bool> {
        let id = id.to_owned();
        self.run("revoke enrollment token", move |conn| {
            // The first revocation time is kept; revoking again still reports
            // that the token exists.
            let changed = conn
                .execute(
                    "UPDATE enrollment_tokens SET revoked_at = COALESCE(revoked_at, ?2) WHERE id = ?1",
                    params![id, now],
                )
                .ctx("revoke enrollment token")?;
            Ok(changed > 0)
        })
        .await
    }

    async fn enroll_host(
        &self,
        token_id: &str,
        now: Millis,
        check: TokenCheck,
        host: NewHost,
    ) -> Result<std::result::Result<Host, EnrollRefusal>> {
        if host.token_id != token_id {
            return Err(StoreError::Database(format!(
                "enroll host: the host names token {:?} but enrolls with token {token_id:?}",
                host.token_id
            )));
        }
        let token_id = token_id.to_owned();
        self.run("enroll host", move |conn| {
            enroll_host_tx(conn, &token_id, now, check, &host)
        })
        .await
    }

    async fn host(&self, id: &str) -> Result<Option<Host>> {
        let id = id.to_owned();
        self.run("load host", move |conn| load_host(conn, &id))
            .await
    }

    async fn list_hosts(&self) -> Result<Vec<Host>> {
        self.run("list hosts", move |conn| {
            let mut stmt = conn
                .prepare(&format!(
                    "SELECT {HOST_COLUMNS} FROM hosts ORDER BY hostname, id"
                ))
                .ctx("list hosts")?;
            let hosts = stmt.query_map([], host_from_row).ctx("list hosts")?;
            hosts
                .collect::<rusqlite::Result<Vec<_>>>()
                .ctx("list hosts")
        })
        .await
    }

    async fn host_seen(&self, id: &str, now: Millis, transport: &str) -> Result<()> {
        let id = id.to_owned();
        let transport = transport.to_owned();
        self.run("record host activity", move |conn| {
            let changed = conn
                .execute(
                    "UPDATE hosts SET last_seen = ?2, last_transport = ?3 WHERE id = ?1",
                    params![id, now, transport],
                )
                .ctx("record host activity")?;
            if changed == 0 {
                return Err(StoreError::Database(format!(
                    "record host activity: no host with id {id:?}"
                )));
            }
            Ok(())
        })
        .await
    }

    async fn store_records(
        &self,
        host_id: &str,
        received_at: Millis,
        records: &[Record],
    ) -> Result<u64> {
        let host_id = host_id.to_owned();
        let records = records.to_vec();
        self.run("store records", move |conn| {
            store_records_tx(conn, &host_id, received_at, &records)
        })
        .await
    }

    async fn latest_metrics(&self, host_id: &str) -> Result<Option<MetricsRow>> {
        let host_id = host_id.to_owned();
        self.run("load latest metrics", move |conn| {
            conn.query_row(
                &format!(
                    "SELECT {METRICS_COLUMNS} FROM metrics WHERE host_id = ?1
                     ORDER BY collected_at DESC, seq DESC LIMIT 1"
                ),
                [&host_id],
                metrics_from_row,
            )
            .optional()
            .ctx("load latest metrics")
        })
        .await
    }

    async fn metrics_between(
        &self,
        host_id: &str,
        from: Millis,
        to: Millis,
        limit: u32,
    ) -> Result<Vec<MetricsRow>> {
        let host_id = host_id.to_owned();
        self.run("load metrics", move |conn| {
            let mut stmt = conn
                .prepare(&format!(
                    "SELECT {METRICS_COLUMNS} FROM metrics
                     WHERE host_id = ?1 AND collected_at >= ?2 AND collected_at < ?3
                     ORDER BY collected_at, seq LIMIT ?4"
                ))
                .ctx("load metrics")?;
            let rows = stmt
                .query_map(params![host_id, from, to, limit], metrics_from_row)
                .ctx("load metrics")?;
            rows.collect::<rusqlite::Result<Vec<_>>>()
                .ctx("load metrics")
        })
        .await
    }

    async fn record_seqs(&self, host_id: &str) -> Result<Vec<u64>> {
        let host_id = host_id.to_owned();
        self.run("list record sequences", move |conn| {
            let mut stmt = conn
                .prepare("SELECT seq FROM host_records WHERE host_id = ?1 ORDER BY seq")
                .ctx("list record sequences")?;
            let seqs = stmt
                .query_map([&host_id], |row| row.get(0))
                .ctx("list record sequences")?;
            seqs.collect::<rusqlite::Result<Vec<u64>>>()
                .ctx("list record sequences")
        })
        .await
    }

    async fn append_audit(&self, event: NewAuditEvent) -> Result<AuditEvent> {
        self.run("append audit event", move |conn| {
            append_audit_tx(conn, event)
        })
        .await
    }

    async fn audit_events(&self, limit: u32) -> Result<Vec<AuditEvent>> {
        self.run("list audit events", move |conn| {
            let mut stmt = conn
                .prepare(
                    "SELECT id, at, actor, action, target, source_ip, user_agent, outcome, details, hash
                     FROM audit_log ORDER BY id DESC LIMIT ?1",
                )
                .ctx("list audit events")?;
            let events = stmt.query_map([limit], audit_event_from_row).ctx("list audit events")?;
            events.collect::<rusqlite::Result<Vec<_>>>().ctx("list audit events")
        })
        .await
    }

    async fn verify_audit_chain(&self) -> Result<Option<i64>> {
        self.run("verify audit chain", move |conn| {
            verify_audit_chain_sync(conn)
        })
        .await
    }

    async fn set_spool_dropped(&self, host_id: &str, total: u64) -> Result<()> {
        let id = host_id.to_owned();
        self.run("record spool drops", move |conn| {
            let changed = conn
                .execute(
                    "UPDATE hosts SET spool_dropped_total = ?2 WHERE id = ?1",
                    params![id, counter_to_sql(total)],
                )
                .ctx("record spool drops")?;
            if changed == 0 {
                return Err(StoreError::Database(format!(
                    "record spool drops: no host with id {id:?}"
                )));
            }
            Ok(())
        })
        .await
    }

    async fn create_command(
        &self,
        command: NewCommand,
        audit: NewAuditEvent,
    ) -> Result<CommandRow> {
        self.run("create command", move |conn| {
            create_command_tx(conn, command, audit)
        })
        .await
    }

    async fn command(&self, id: &str) -> Result<Option<CommandRow>> {
        let id = id.to_owned();
        self.run("load command", move |conn| load_command(conn, &id))
            .await
    }

    async fn host_commands(&self, host_id: &str, limit: u32) -> Result<Vec<CommandRow>> {
        let host_id = host_id.to_owned();
        self.run("list host commands", move |conn| {
            let mut stmt = conn
                .prepare(&format!(
                    "SELECT {COMMAND_COLUMNS} FROM commands WHERE host_id = ?1
                     ORDER BY issued_at DESC, id DESC LIMIT ?2"
                ))
                .ctx("list host commands")?;
            let rows = stmt
                .query_map(params![host_id, limit], command_from_row)
                .ctx("list host commands")?;
            rows.collect::<rusqlite::Result<Vec<_>>>()
                .ctx("list host commands")
        })
        .await
    }

    async fn commands_to_deliver(
        &self,
        host_id: &str,
        now: Millis,
        limit: u32,
    ) -> Result<Vec<CommandRow>> {
        let host_id = host_id.to_owned();
        self.run("commands to deliver", move |conn| {
            commands_to_deliver_tx(conn, &host_id, now, limit)
        })
        .await
    }

    async fn command_delivered(&self, id: &str, now: Millis) -> Result<()> {
        let id = id.to_owned();
        self.run("mark command delivered", move |conn| {
            conn.execute(
                "UPDATE commands SET status = CASE WHEN status = 'pending' THEN 'delivered' ELSE status END,
                                     delivered_at = COALESCE(delivered_at, ?2)
                 WHERE id = ?1",
                params![id, now],
            )
            .ctx("mark command delivered")?;
            Ok(())
        })
        .await
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use palisade_proto::pb::{
        AgentHealth, ChildHealth, FilesystemUsage, HostFacts, Metrics, NetworkCounters,
    };

    const T0: Millis = 1_700_000_000_000;
    const HOUR: Millis = 60 * 60 * 1000;

    fn store() -> SqliteStore {
        SqliteStore::open_in_memory().unwrap()
    }

    /// Runs raw SQL on the store's connection (what an attacker with the file could do).
    fn raw(store: &SqliteStore, sql: &str) {
        store.conn.lock().unwrap().execute_batch(sql).unwrap();
    }

    fn new_user(name: &str) -> NewUser {
        NewUser {
            username: name.into(),
            password_hash: "$argon2id$v=19$m=19456,t=2,p=1$c2FsdHNhbHQ$aGFzaA".into(),
            role: Role::Operator,
            created_at: T0,
        }
    }

    fn new_session(id: &[u8], user_id: i64, expires_at: Millis) -> NewSession {
        NewSession {
            id_hash: id.to_vec(),
            user_id,
            created_at: T0,
            expires_at,
            source_ip: "192.0.2.7".into(),
            user_agent: "test-agent/1".into(),
        }
    }

    fn enrollment_token(id: &str, max_per_day: Option<u32>) -> EnrollmentToken {
        EnrollmentToken {
            id: id.into(),
            secret_hash: vec![7; 32],
            host_group: Some("web".into()),
            cidrs: vec![
                "10.0.0.0/8".parse().unwrap(),
                "2001:db8::/32".parse().unwrap(),
            ],
            max_per_day,
            expires_at: Some(T0 + 30 * 24 * HOUR),
            created_at: T0,
            revoked_at: None,
        }
    }

    fn new_host(id: &str, token_id: &str) -> NewHost {
        NewHost {
            id: id.into(),
            hostname: format!("{id}.example"),
            host_group: Some("web".into()),
            enrolled_at: T0,
            enrolled_from: "10.1.2.3".into(),
            token_id: token_id.into(),
            cert_sha256: "ab".repeat(32),
        }
    }

    /// The daily-limit part of the real check, enough to observe the count.
    fn limit_check(
        token: &EnrollmentToken,
        recent_uses: u32,
        _now: Millis,
    ) -> Result<(), EnrollRefusal> {
        match token.max_per_day {
            Some(max) if recent_uses >= max => Err(EnrollRefusal::RateLimited),
            _ => Ok(()),
        }
    }

    fn accept_all(_: &EnrollmentToken, _: u32, _: Millis) -> Result<(), EnrollRefusal> {
        Ok(())
    }

    fn refuse_address(_: &EnrollmentToken, _: u32, _: Millis) -> Result<(), EnrollRefusal> {
        Err(EnrollRefusal::AddressNotAllowed)
    }

    async fn store_with_host(host_id: &str) -> SqliteStore {
        let s = store();
        s.create_enrollment_token(enrollment_token("0123456789abcdef", None))
            .await
            .unwrap();
        s.enroll_host(
            "0123456789abcdef",
            T0,
            accept_all,
            new_host(host_id, "0123456789abcdef"),
        )
        .await
        .unwrap()
        .unwrap();
        s
    }

    fn count(store: &SqliteStore, sql: &str) -> i64 {
        store
            .conn
            .lock()
            .unwrap()
            .query_row(sql, [], |row| row.get(0))
            .unwrap()
    }

    fn facts(hostname: &str, kernel: &str) -> RecordBody {
        RecordBody::Facts(HostFacts {
            hostname: hostname.into(),
            os_pretty_name: "Debian GNU/Linux 12 (bookworm)".into(),
            os_id: "debian".into(),
            os_version_id: "12".into(),
            kernel_release: kernel.into(),
            architecture: "x86_64".into(),
            cpu_count: 8,
            memory_total_bytes: 16 << 30,
            boot_time_unix: 1_699_000_000,
        })
    }

    fn metrics(collected_at: Millis, cpu: f64) -> RecordBody {
        RecordBody::Metrics(Metrics {
            collected_at_unix_ms: collected_at,
            cpu_percent: cpu,
            memory_total_bytes: 16 << 30,
            memory_available_bytes: 8 << 30,
            swap_total_bytes: 1 << 30,
            swap_free_bytes: 1 << 29,
            load_1: 0.5,
            load_5: 0.25,
            load_15: 0.125,
            filesystems: vec![FilesystemUsage {
                mount_point: "/".into(),
                device: "/dev/sda1".into(),
                fs_type: "ext4".into(),
                total_bytes: 100 << 30,
                used_bytes: 40 << 30,
                available_bytes: 55 << 30,
            }],
            network: vec![NetworkCounters {
                interface: "eth0".into(),
                rx_bytes: 12345,
                tx_bytes: 678,
            }],
            uptime_seconds: 86_400,
            process_count: 142,
        })
    }

    fn health(restarts: u32) -> RecordBody {
        RecordBody::AgentHealth(AgentHealth {
            children: vec![ChildHealth {
                role: "collector".into(),
                pid: 4242,
                healthy: true,
                restarts,
                sandbox: "seccomp, landlock".into(),
            }],
        })
    }

    fn rec(seq: u64, body: RecordBody) -> Record {
        Record {
            seq,
            created_at_unix_ms: T0 + i64::try_from(seq).unwrap(),
            body,
        }
    }

    fn audit_event(n: i64) -> NewAuditEvent {
        NewAuditEvent {
            at: T0 + n,
            actor: format!("user:alice{n}"),
            action: "auth.login".into(),
            target: (n % 2 == 0).then(|| format!("host:{n}")),
            source_ip: Some("198.51.100.4".into()),
            user_agent: None,
            outcome: "success".into(),
            details: serde_json::json!({ "n": n, "note": "a \"quoted\" detail" }),
        }
    }

    // --- migrations -------------------------------------------------------

    #[test]
    fn migration_versions_strictly_increase() {
        assert!(MIGRATIONS.windows(2).all(|w| w[0].version < w[1].version));
        assert_eq!(MIGRATIONS.first().map(|m| m.version), Some(1));
    }

    #[tokio::test]
    async fn reopening_a_file_keeps_data_and_applies_migrations_once() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("palisade.db");
        {
            let s = SqliteStore::open(&path).unwrap();
            s.create_user(new_user("alice")).await.unwrap();
            let mode: String = s
                .conn
                .lock()
                .unwrap()
                .query_row("PRAGMA journal_mode", [], |r| r.get(0))
                .unwrap();
            assert_eq!(mode, "wal");
        }
        let s = SqliteStore::open(&path).unwrap();
        assert!(s.user_by_name("alice").await.unwrap().is_some());
        let applied = count(&s, "SELECT COUNT(*) FROM schema_migrations");
        assert_eq!(applied, i64::try_from(MIGRATIONS.len()).unwrap());
        let fk: i64 = count(&s, "PRAGMA foreign_keys");
        assert_eq!(fk, 1);
        drop(s);
        SqliteStore::open(&path).unwrap();
    }

    #[tokio::test]
    async fn a_database_from_a_newer_build_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("palisade.db");
        let s = SqliteStore::open(&path).unwrap();
        raw(
            &s,
            "INSERT INTO schema_migrations (version, applied_at) VALUES (999, 0)",
        );
        drop(s);
        match SqliteStore::open(&path) {
            Err(StoreError::Migration { version, reason }) => {
                assert_eq!(version, 999);
                assert!(reason.contains("newer"), "{reason}");
            }
            other => panic!("expected a migration error, got {other:?}"),
        }
    }

    #[test]
    fn a_failing_migration_leaves_no_trace() {
        let mut conn = Connection::open_in_memory().unwrap();
        let migrations = [
            Migration {
                version: 1,
                sql: "CREATE TABLE a (x INTEGER);",
            },
            Migration {
                version: 2,
                sql: "CREATE TABLE b (x INTEGER); THIS IS NOT SQL;",
            },
        ];
        match migrate(&mut conn, &migrations, T0) {
            Err(StoreError::Migration { version: 2, .. }) => {}
            other => panic!("expected migration 2 to fail, got {other:?}"),
        }
        let tables: Vec<String> = conn
            .prepare("SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name")
            .unwrap()
            .query_map([], |r| r.get(0))
            .unwrap()
            .collect::<rusqlite::Result<_>>()
            .unwrap();
        assert_eq!(tables, ["a", "schema_migrations"]);
        let versions: Vec<i64> = conn
            .prepare("SELECT version FROM schema_migrations")
            .unwrap()
            .query_map([], |r| r.get(0))
            .unwrap()
            .collect::<rusqlite::Result<_>>()
            .unwrap();
        assert_eq!(versions, [1]);
    }

    // --- users and sessions ----------------------------------------------

    #[tokio::test]
    async fn users_are_created_found_and_unique() {
        let s = store();
        let alice = s.create_user(new_user("alice")).await.unwrap();
        assert!(!alice.disabled);
        let found = s.user_by_name("alice").await.unwrap().unwrap();
        assert_eq!(found.id, alice.id);
        assert_eq!(found.role, Role::Operator);
        assert_eq!(found.password_hash, alice.password_hash);
        assert_eq!(found.created_at, T0);
        assert!(s.user_by_name("bob").await.unwrap().is_none());
        match s.create_user(new_user("alice")).await {
            Err(StoreError::Conflict { what }) => assert!(what.contains("alice")),
            other => panic!("expected a conflict, got {other:?}"),
        }
    }

    #[tokio::test]
    async fn a_corrupt_role_is_reported_not_panicked() {
        let s = store();
        s.create_user(new_user("alice")).await.unwrap();
        raw(
            &s,
            "PRAGMA ignore_check_constraints = ON; UPDATE users SET role = 'root'",
        );
        assert!(matches!(
            s.user_by_name("alice").await,
            Err(StoreError::Corrupt(_))
        ));
    }

    #[tokio::test]
    async fn sessions_expire_and_follow_their_user() {
        let s = store();
        let alice = s.create_user(new_user("alice")).await.unwrap();
        s.create_session(new_session(b"sid-1", alice.id, T0 + HOUR))
            .await
            .unwrap();
        assert!(matches!(
            s.create_session(new_session(b"sid-1", alice.id, T0 + HOUR))
                .await,
            Err(StoreError::Conflict { .. })
        ));

        let (session, user) = s.session(b"sid-1", T0 + 1).await.unwrap().unwrap();
        assert_eq!(session.user_id, alice.id);
        assert_eq!(session.last_seen_at, T0);
        assert_eq!(session.source_ip, "192.0.2.7");
        assert_eq!(user.username, "alice");
        assert!(s.session(b"sid-2", T0).await.unwrap().is_none());
        // Expired at exactly expires_at, and after.
        assert!(s.session(b"sid-1", T0 + HOUR - 1).await.unwrap().is_some());
        assert!(s.session(b"sid-1", T0 + HOUR).await.unwrap().is_none());
        assert!(s.session(b"sid-1", T0 + 2 * HOUR).await.unwrap().is_none());

        // Touching moves the expiry and the activity time.
        s.touch_session(b"sid-1", T0 + HOUR / 2, T0 + 3 * HOUR)
            .await
            .unwrap();
        let (session, _) = s.session(b"sid-1", T0 + 2 * HOUR).await.unwrap().unwrap();
        assert_eq!(session.last_seen_at, T0 + HOUR / 2);
        assert_eq!(session.expires_at, T0 + 3 * HOUR);
        // Touching an expired session does not revive it.
        s.touch_session(b"sid-1", T0 + 3 * HOUR, T0 + 9 * HOUR)
            .await
            .unwrap();
        assert!(s.session(b"sid-1", T0 + 4 * HOUR).await.unwrap().is_none());

        // A disabled user's sessions are not returned.
        s.create_session(new_session(b"sid-3", alice.id, T0 + HOUR))
            .await
            .unwrap();
        assert!(s.session(b"sid-3", T0).await.unwrap().is_some());
        raw(&s, "UPDATE users SET disabled = 1 WHERE username = 'alice'");
        assert!(s.session(b"sid-3", T0).await.unwrap().is_none());
        raw(&s, "UPDATE users SET disabled = 0 WHERE username = 'alice'");

        s.delete_session(b"sid-3").await.unwrap();
        assert!(s.session(b"sid-3", T0).await.unwrap().is_none());
        s.delete_session(b"sid-3").await.unwrap();

        // A session for a user that does not exist is refused.
        assert!(
            s.create_session(new_session(b"sid-4", alice.id + 100, T0 + HOUR))
                .await
                .is_err()
        );
    }

    // --- API tokens -------------------------------------------------------

    #[tokio::test]
    async fn api_tokens_round_trip() {
        let s = store();
        let token = ApiToken {
            id: "fedcba9876543210".into(),
            name: "ci".into(),
            secret_hash: vec![1; 32],
            created_at: T0,
            revoked_at: None,
        };
        s.create_api_token(token.clone()).await.unwrap();
        let found = s.api_token("fedcba9876543210").await.unwrap().unwrap();
        assert_eq!(
            (
                found.name.as_str(),
                found.secret_hash.as_slice(),
                found.created_at
            ),
            ("ci", &[1u8; 32][..], T0)
        );
        assert_eq!(found.revoked_at, None);
        assert!(s.api_token("0000000000000000").await.unwrap().is_none());
        assert!(matches!(
            s.create_api_token(token).await,
            Err(StoreError::Conflict { .. })
        ));
    }

    // --- enrollment tokens and enrollment --------------------------------

    #[tokio::test]
    async fn enrollment_tokens_round_trip_list_and_revoke() {
        let s = store();
        let token = enrollment_token("0123456789abcdef", Some(5));
        s.create_enrollment_token(token.clone()).await.unwrap();
        let mut open = enrollment_token("1111111111111111", None);
        open.cidrs.clear();
        open.host_group = None;
        open.expires_at = None;
        open.created_at = T0 + 1;
        s.create_enrollment_token(open).await.unwrap();
        assert!(matches!(
            s.create_enrollment_token(token.clone()).await,
            Err(StoreError::Conflict { .. })
        ));

        let found = s
            .enrollment_token("0123456789abcdef")
            .await
            .unwrap()
            .unwrap();
        assert_eq!(found.cidrs, token.cidrs);
        assert_eq!(found.max_per_day, Some(5));
        assert_eq!(found.host_group.as_deref(), Some("web"));
        assert_eq!(found.expires_at, token.expires_at);
        assert_eq!(found.secret_hash, token.secret_hash);
        assert!(
            s.enrollment_token("2222222222222222")
                .await
                .unwrap()
                .is_none()
        );

        let list = s.list_enrollment_tokens().await.unwrap();
        let ids: Vec<&str> = list.iter().map(|t| t.id.as_str()).collect();
        assert_eq!(ids, ["0123456789abcdef", "1111111111111111"]);
        assert!(list[1].cidrs.is_empty() && list[1].max_per_day.is_none());

        assert!(
            s.revoke_enrollment_token("0123456789abcdef", T0 + 10)
                .await
                .unwrap()
        );
        assert!(
            s.revoke_enrollment_token("0123456789abcdef", T0 + 20)
                .await
                .unwrap()
        );
        let revoked = s
            .enrollment_token("0123456789abcdef")
            .await
            .unwrap()
            .unwrap();
        assert_eq!(
            revoked.revoked_at,
            Some(T0 + 10),
            "the first revocation time is kept"
        );
        assert!(
            !s.revoke_enrollment_token("2222222222222222", T0)
                .await
                .unwrap()
        );
    }

    #[tokio::test]
    async fn enrollment_creates_the_host_and_records_the_use() {
        let s = store();
        s.create_enrollment_token(enrollment_token("0123456789abcdef", None))
            .await
            .unwrap();
        let host = s
            .enroll_host(
                "0123456789abcdef",
                T0,
                accept_all,
                new_host("h1", "0123456789abcdef"),
            )
            .await
            .unwrap();
        let host = host.unwrap();
        assert_eq!(host.id, "h1");
        assert_eq!(host.hostname, "h1.example");
        assert_eq!(host.host_group.as_deref(), Some("web"));
        assert_eq!(host.enrolled_from, "10.1.2.3");
        assert_eq!(host.stored_up_to_seq, 0);
        assert!(host.last_seen.is_none() && host.agent_health.is_none() && host.os_id.is_none());
        assert_eq!(
            count(
                &s,
                "SELECT COUNT(*) FROM enrollment_uses WHERE host_id = 'h1'"
            ),
            1
        );

        // Same host id again: a conflict, and no second use is recorded.
        match s
            .enroll_host(
                "0123456789abcdef",
                T0 + 1,
                accept_all,
                new_host("h1", "0123456789abcdef"),
            )
            .await
        {
            Err(StoreError::Conflict { what }) => assert!(what.contains("h1")),
            other => panic!("expected a conflict, got {other:?}"),
        }
        assert_eq!(count(&s, "SELECT COUNT(*) FROM enrollment_uses"), 1);
    }

    #[tokio::test]
    async fn enrollment_refusals_create_nothing() {
        let s = store();
        let unknown = s
            .enroll_host(
                "9999999999999999",
                T0,
                accept_all,
                new_host("h1", "9999999999999999"),
            )
            .await;
        assert_eq!(unknown.unwrap().unwrap_err(), EnrollRefusal::UnknownToken);

        s.create_enrollment_token(enrollment_token("0123456789abcdef", None))
            .await
            .unwrap();
        let refused = s
            .enroll_host(
                "0123456789abcdef",
                T0,
                refuse_address,
                new_host("h1", "0123456789abcdef"),
            )
            .await;
        assert_eq!(
            refused.unwrap().unwrap_err(),
            EnrollRefusal::AddressNotAllowed
        );
        assert!(s.host("h1").await.unwrap().is_none());
        assert_eq!(count(&s, "SELECT COUNT(*) FROM hosts"), 0);
        assert_eq!(count(&s, "SELECT COUNT(*) FROM enrollment_uses"), 0);

        // A host that names another token than the one it enrolls with is a caller bug.
        assert!(
            s.enroll_host(
                "0123456789abcdef",
                T0,
                accept_all,
                new_host("h1", "9999999999999999")
            )
            .await
            .is_err()
        );
    }

    #[tokio::test]
    async fn the_daily_limit_counts_only_the_last_24_hours() {
        let s = store();
        s.create_enrollment_token(enrollment_token("0123456789abcdef", Some(2)))
            .await
            .unwrap();
        let enroll = |id: &'static str, now: Millis| {
            let s = s.clone();
            async move {
                s.enroll_host(
                    "0123456789abcdef",
                    now,
                    limit_check,
                    new_host(id, "0123456789abcdef"),
                )
                .await
                .unwrap()
            }
        };
        assert!(enroll("h1", T0).await.is_ok());
        assert!(enroll("h2", T0 + HOUR).await.is_ok());
        assert_eq!(
            enroll("h3", T0 + 2 * HOUR).await.unwrap_err(),
            EnrollRefusal::RateLimited
        );
        // The window is (now - 24h, now]: at T0 + 24h the use at T0 has left it.
        assert_eq!(
            enroll("h3", T0 + 24 * HOUR - 1).await.unwrap_err(),
            EnrollRefusal::RateLimited
        );
        assert!(enroll("h3", T0 + 24 * HOUR).await.is_ok());
        // Now h2 (T0 + 1h) and h3 (T0 + 24h) are in the window.
        assert_eq!(
            enroll("h4", T0 + 24 * HOUR + 1).await.unwrap_err(),
            EnrollRefusal::RateLimited
        );
        assert!(enroll("h4", T0 + 25 * HOUR).await.is_ok());
        assert_eq!(count(&s, "SELECT COUNT(*) FROM hosts"), 4);
    }

    // --- hosts and records ----------------------------------------------

    #[tokio::test]
    async fn hosts_are_listed_and_seen() {
        let s = store_with_host("h2").await;
        s.enroll_host(
            "0123456789abcdef",
            T0,
            accept_all,
            new_host("h1", "0123456789abcdef"),
        )
        .await
        .unwrap()
        .unwrap();
        let ids: Vec<String> = s
            .list_hosts()
            .await
            .unwrap()
            .into_iter()
            .map(|h| h.id)
            .collect();
        assert_eq!(ids, ["h1", "h2"]);

        s.host_seen("h1", T0 + 5, "quic").await.unwrap();
        s.host_seen("h1", T0 + 9, "wss").await.unwrap();
        let h1 = s.host("h1").await.unwrap().unwrap();
        assert_eq!(
            (h1.last_seen, h1.last_transport.as_deref()),
            (Some(T0 + 9), Some("wss"))
        );
        assert!(s.host("nope").await.unwrap().is_none());
        assert!(s.host_seen("nope", T0, "quic").await.is_err());
    }

    #[tokio::test]
    async fn records_are_applied_once_and_stored_up_to_is_the_maximum() {
        let s = store_with_host("h1").await;
        let batch = vec![
            rec(1, facts("h1.internal", "6.1.0-18-amd64")),
            rec(2, metrics(T0 + 10_000, 12.5)),
            rec(3, health(0)),
        ];
        assert_eq!(s.store_records("h1", T0 + 100, &batch).await.unwrap(), 3);

        let host = s.host("h1").await.unwrap().unwrap();
        assert_eq!(host.hostname, "h1.internal");
        assert_eq!(
            host.os_pretty_name.as_deref(),
            Some("Debian GNU/Linux 12 (bookworm)")
        );
        assert_eq!(host.os_id.as_deref(), Some("debian"));
        assert_eq!(host.os_version_id.as_deref(), Some("12"));
        assert_eq!(host.kernel_release.as_deref(), Some("6.1.0-18-amd64"));
        assert_eq!(host.architecture.as_deref(), Some("x86_64"));
        assert_eq!(host.cpu_count, Some(8));
        assert_eq!(host.memory_total_bytes, Some(16 << 30));
        assert_eq!(host.stored_up_to_seq, 3);
        assert_eq!(
            host.agent_health,
            Some(serde_json::json!({"children": [
                {"role": "collector", "pid": 4242, "healthy": true, "restarts": 0, "sandbox": "seccomp, landlock"}
            ]}))
        );

        let m = s.latest_metrics("h1").await.unwrap().unwrap();
        assert_eq!(m.seq, 2);
        assert_eq!(m.collected_at, T0 + 10_000);
        assert_eq!(m.cpu_percent, 12.5);
        assert_eq!(
            (m.memory_total_bytes, m.memory_available_bytes),
            (16 << 30, 8 << 30)
        );
        assert_eq!((m.swap_total_bytes, m.swap_free_bytes), (1 << 30, 1 << 29));
        assert_eq!((m.load_1, m.load_5, m.load_15), (0.5, 0.25, 0.125));
        assert_eq!((m.uptime_seconds, m.process_count), (86_400, 142));
        assert_eq!(
            m.filesystems,
            [FilesystemRow {
                mount_point: "/".into(),
                device: "/dev/sda1".into(),
                fs_type: "ext4".into(),
                total_bytes: 100 << 30,
                used_bytes: 40 << 30,
                available_bytes: 55 << 30,
            }]
        );
        assert_eq!(
            m.network,
            [NetworkRow {
                interface: "eth0".into(),
                rx_bytes: 12345,
                tx_bytes: 678
            }]
        );

        // The same batch again (a resend after a lost ack) changes nothing.
        assert_eq!(s.store_records("h1", T0 + 200, &batch).await.unwrap(), 3);
        assert_eq!(s.record_seqs("h1").await.unwrap(), [1, 2, 3]);
        assert_eq!(count(&s, "SELECT COUNT(*) FROM metrics"), 1);
        assert_eq!(
            count(&s, "SELECT MAX(received_at) FROM host_records"),
            T0 + 100
        );

        // A resent record with a different body is still the stored one.
        let changed = vec![rec(2, metrics(T0 + 10_000, 99.0))];
        assert_eq!(s.store_records("h1", T0 + 300, &changed).await.unwrap(), 3);
        assert_eq!(
            s.latest_metrics("h1").await.unwrap().unwrap().cpu_percent,
            12.5
        );

        // A lower, new seq is stored without lowering stored_up_to.
        let newer = vec![
            rec(10, metrics(T0 + 20_000, 50.0)),
            rec(5, metrics(T0 + 15_000, 30.0)),
        ];
        assert_eq!(s.store_records("h1", T0 + 400, &newer).await.unwrap(), 10);
        assert_eq!(
            s.store_records("h1", T0 + 500, &[rec(7, health(1))])
                .await
                .unwrap(),
            10
        );
        assert_eq!(s.host("h1").await.unwrap().unwrap().stored_up_to_seq, 10);
        assert_eq!(s.record_seqs("h1").await.unwrap(), [1, 2, 3, 5, 7, 10]);
        // An empty batch reports the current position.
        assert_eq!(s.store_records("h1", T0 + 600, &[]).await.unwrap(), 10);
    }

    #[tokio::test]
    async fn an_older_facts_or_health_record_does_not_overwrite_a_newer_one() {
        let s = store_with_host("h1").await;
        s.store_records(
            "h1",
            T0,
            &[rec(5, facts("new-name", "6.5")), rec(6, health(3))],
        )
        .await
        .unwrap();
        s.store_records(
            "h1",
            T0,
            &[rec(4, facts("old-name", "5.10")), rec(2, health(1))],
        )
        .await
        .unwrap();
        let host = s.host("h1").await.unwrap().unwrap();
        assert_eq!(host.hostname, "new-name");
        assert_eq!(host.kernel_release.as_deref(), Some("6.5"));
        assert_eq!(host.agent_health.unwrap()["children"][0]["restarts"], 3);
        assert_eq!(s.record_seqs("h1").await.unwrap(), [2, 4, 5, 6]);
    }

    #[tokio::test]
    async fn unreported_facts_are_null() {
        let s = store_with_host("h1").await;
        let sparse = RecordBody::Facts(HostFacts {
            hostname: "h1".into(),
            ..HostFacts::default()
        });
        s.store_records("h1", T0, &[rec(1, sparse)]).await.unwrap();
        let host = s.host("h1").await.unwrap().unwrap();
        assert_eq!(host.hostname, "h1");
        assert!(
            host.os_pretty_name.is_none() && host.os_id.is_none() && host.kernel_release.is_none()
        );
        assert!(host.cpu_count.is_none() && host.memory_total_bytes.is_none());
    }

    #[tokio::test]
    async fn records_of_an_unknown_host_are_refused() {
        let s = store_with_host("h1").await;
        let err = s
            .store_records("stranger", T0, &[rec(1, metrics(T0, 1.0))])
            .await
            .unwrap_err();
        assert!(err.to_string().contains("stranger"), "{err}");
        assert_eq!(count(&s, "SELECT COUNT(*) FROM host_records"), 0);
        assert_eq!(count(&s, "SELECT COUNT(*) FROM metrics"), 0);
        assert!(s.store_records("stranger", T0, &[]).await.is_err());
    }

    #[tokio::test]
    async fn the_agents_spool_drop_count_is_stored_on_the_host() {
        let s = store_with_host("h1").await;
        assert_eq!(s.host("h1").await.unwrap().unwrap().spool_dropped_total, 0);
        s.set_spool_dropped("h1", 42).await.unwrap();
        assert_eq!(s.host("h1").await.unwrap().unwrap().spool_dropped_total, 42);
        s.set_spool_dropped("h1", u64::MAX).await.unwrap();
        assert_eq!(
            s.list_hosts().await.unwrap()[0].spool_dropped_total,
            i64::MAX as u64,
            "clamped to the storable range"
        );
        let err = s.set_spool_dropped("stranger", 1).await.unwrap_err();
        assert!(err.to_string().contains("stranger"), "{err}");
    }

    #[tokio::test]
    async fn out_of_range_values() {
        let s = store_with_host("h1").await;
        // Counters above i64::MAX are clamped.
        let RecordBody::Metrics(mut huge) = metrics(T0, 1.0) else {
            unreachable!()
        };
        huge.uptime_seconds = u64::MAX;
        huge.memory_total_bytes = u64::MAX;
        huge.memory_available_bytes = u64::MAX;
        s.store_records("h1", T0, &[rec(1, RecordBody::Metrics(huge))])
            .await
            .unwrap();
        let m = s.latest_metrics("h1").await.unwrap().unwrap();
        assert_eq!(m.uptime_seconds, u64::try_from(i64::MAX).unwrap());
        assert_eq!(m.memory_total_bytes, u64::try_from(i64::MAX).unwrap());

        // A sequence above i64::MAX refuses the whole batch.
        let batch = vec![
            rec(2, health(0)),
            Record {
                seq: u64::MAX,
                created_at_unix_ms: T0,
                body: health(1),
            },
        ];
        assert!(s.store_records("h1", T0, &batch).await.is_err());
        assert_eq!(s.record_seqs("h1").await.unwrap(), [1]);
        assert_eq!(s.host("h1").await.unwrap().unwrap().stored_up_to_seq, 1);
    }

    #[tokio::test]
    async fn metrics_between_is_half_open_ordered_and_limited() {
        let s = store_with_host("h1").await;
        let batch: Vec<Record> = [(1, 3000), (2, 1000), (3, 2000), (4, 4000), (5, 5000)]
            .into_iter()
            .map(|(seq, at)| {
                rec(
                    seq,
                    metrics(T0 + at, f64::from(u32::try_from(seq).unwrap())),
                )
            })
            .collect();
        s.store_records("h1", T0, &batch).await.unwrap();

        let seqs = |rows: Vec<MetricsRow>| rows.into_iter().map(|m| m.seq).collect::<Vec<_>>();
        assert_eq!(
            seqs(
                s.metrics_between("h1", T0 + 1000, T0 + 4000, 100)
                    .await
                    .unwrap()
            ),
            [2, 3, 1]
        );
        assert_eq!(
            seqs(
                s.metrics_between("h1", T0 + 1000, T0 + 4000, 2)
                    .await
                    .unwrap()
            ),
            [2, 3]
        );
        assert_eq!(
            seqs(s.metrics_between("h1", T0, T0 + 1000, 100).await.unwrap()),
            Vec::<u64>::new()
        );
        assert_eq!(
            seqs(s.metrics_between("h1", T0, T0 + 10_000, 0).await.unwrap()),
            Vec::<u64>::new()
        );
        assert!(
            s.metrics_between("nope", T0, T0 + 10_000, 10)
                .await
                .unwrap()
                .is_empty()
        );
        // Latest by collection time, not by sequence.
        assert_eq!(s.latest_metrics("h1").await.unwrap().unwrap().seq, 5);
        assert!(s.latest_metrics("nope").await.unwrap().is_none());
        assert!(s.record_seqs("nope").await.unwrap().is_empty());
    }

    // --- audit --------------------------------------------------------------

    #[tokio::test]
    async fn audit_events_chain_and_list_newest_first() {
        let s = store();
        assert_eq!(s.verify_audit_chain().await.unwrap(), None);
        let mut appended = Vec::new();
        for n in 1..=5 {
            appended.push(s.append_audit(audit_event(n)).await.unwrap());
        }
        assert_eq!(
            appended.iter().map(|e| e.id).collect::<Vec<_>>(),
            [1, 2, 3, 4, 5]
        );
        assert!(appended.iter().all(|e| e.hash.len() == 64));
        let first_prev: String = s
            .conn
            .lock()
            .unwrap()
            .query_row("SELECT prev_hash FROM audit_log WHERE id = 1", [], |r| {
                r.get(0)
            })
            .unwrap();
        assert_eq!(first_prev, AUDIT_GENESIS_HASH);

        let listed = s.audit_events(3).await.unwrap();
        assert_eq!(listed.iter().map(|e| e.id).collect::<Vec<_>>(), [5, 4, 3]);
        assert_eq!(listed[0].actor, "user:alice5");
        assert_eq!(
            listed[0].details,
            serde_json::json!({ "n": 5, "note": "a \"quoted\" detail" })
        );
        assert_eq!(listed[0].hash, appended[4].hash);
        assert_eq!(listed[1].target.as_deref(), Some("host:4"));
        assert_eq!(listed[0].target, None);
        assert_eq!(s.verify_audit_chain().await.unwrap(), None);
    }

    #[tokio::test]
    async fn audit_rows_cannot_be_updated_or_deleted() {
        let s = store();
        s.append_audit(audit_event(1)).await.unwrap();
        let conn = s.conn.lock().unwrap();
        let update = conn
            .execute("UPDATE audit_log SET actor = 'mallory'", [])
            .unwrap_err();
        assert!(update.to_string().contains("append-only"), "{update}");
        let delete = conn.execute("DELETE FROM audit_log", []).unwrap_err();
        assert!(delete.to_string().contains("append-only"), "{delete}");
    }

    #[tokio::test]
    async fn tampering_is_detected_at_the_tampered_row() {
        let tampers = [
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
            (2, "UPDATE audit_log SET at = 'yesterday' WHERE id = 2"),
        ];
        for (bad_id, tamper) in tampers {
            let s = store();
            for n in 1..=5 {
                s.append_audit(audit_event(n)).await.unwrap();
            }
            raw(
                &s,
                &format!(
                    "DROP TRIGGER audit_log_no_update; DROP TRIGGER audit_log_no_delete;
                     PRAGMA ignore_check_constraints = ON; {tamper}"
                ),
            );
            assert_eq!(
                s.verify_audit_chain().await.unwrap(),
                Some(bad_id),
                "{tamper}"
            );
        }
    }

    #[tokio::test]
    async fn a_row_rehashed_consistently_still_breaks_the_next_link() {
        let s = store();
        for n in 1..=5 {
            s.append_audit(audit_event(n)).await.unwrap();
        }
        let prev_hash: String = s
            .conn
            .lock()
            .unwrap()
            .query_row("SELECT prev_hash FROM audit_log WHERE id = 2", [], |r| {
                r.get(0)
            })
            .unwrap();
        let forged = audit_event(2);
        let details = serde_json::to_string(&forged.details).unwrap();
        let hash = audit_hash(
            &prev_hash,
            &CanonicalAuditRow {
                v: AUDIT_CANONICAL_VERSION,
                id: 2,
                at: forged.at,
                actor: "user:mallory",
                action: &forged.action,
                target: forged.target.as_deref(),
                source_ip: forged.source_ip.as_deref(),
                user_agent: forged.user_agent.as_deref(),
                outcome: &forged.outcome,
                details: &details,
            },
        )
        .unwrap();
        raw(
            &s,
            &format!(
                "DROP TRIGGER audit_log_no_update;
                 UPDATE audit_log SET actor = 'user:mallory', hash = '{hash}' WHERE id = 2"
            ),
        );
        assert_eq!(s.verify_audit_chain().await.unwrap(), Some(3));
    }

    #[tokio::test]
    async fn the_chain_is_rebuilt_from_scratch_in_the_test_oracle() {
        // An independent recomputation of the documented formula, so the
        // format cannot drift silently: SHA-256(prev_hex || canonical JSON).
        let s = store();
        let e = s.append_audit(audit_event(2)).await.unwrap();
        let canonical = format!(
            r#"{{"v":1,"id":1,"at":{},"actor":"user:alice2","action":"auth.login","target":"host:2","source_ip":"198.51.100.4","user_agent":null,"outcome":"success","details":{}}}"#,
            T0 + 2,
            serde_json::to_string(&serde_json::to_string(&audit_event(2).details).unwrap())
                .unwrap()
        );
        let mut ctx = digest::Context::new(&digest::SHA256);
        ctx.update(AUDIT_GENESIS_HASH.as_bytes());
        ctx.update(canonical.as_bytes());
        assert_eq!(e.hash, hex::encode(ctx.finish()));
    }

    #[tokio::test]
    async fn two_stores_on_one_file_append_without_breaking_the_chain() {
        // The server and the CLI are two processes on one file; two
        // connections here exercise the same locking (WAL, busy_timeout,
        // BEGIN IMMEDIATE).
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("palisade.db");
        let a = SqliteStore::open(&path).unwrap();
        let b = SqliteStore::open(&path).unwrap();
        let mut tasks = Vec::new();
        for (i, s) in [a.clone(), b.clone()].into_iter().enumerate() {
            tasks.push(tokio::spawn(async move {
                for n in 0..25 {
                    s.append_audit(audit_event(i64::try_from(i).unwrap() * 100 + n))
                        .await
                        .unwrap();
                }
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
        assert_eq!(a.verify_audit_chain().await.unwrap(), None);
        assert_eq!(b.audit_events(100).await.unwrap().len(), 50);
    }

    // --- commands -----------------------------------------------------------

    fn new_command(id: &str, host_id: &str, issued_at: Millis) -> NewCommand {
        NewCommand {
            id: id.into(),
            host_id: host_id.into(),
            kind: "restart_service".into(),
            payload: serde_json::json!({ "type": "restart_service", "unit": "nginx.service" }),
            requested_by: "user:alice".into(),
            source_ip: Some("192.0.2.7".into()),
            user_agent: Some("curl/8".into()),
            issued_at,
            expires_at: issued_at + 5 * 60_000,
            command_bytes: vec![1, 2, 3],
            signature: vec![9; 64],
        }
    }

    fn command_audit(id: &str) -> NewAuditEvent {
        NewAuditEvent {
            at: T0,
            actor: "user:alice".into(),
            action: "command.create".into(),
            target: Some("h1".into()),
            source_ip: None,
            user_agent: None,
            outcome: "success".into(),
            details: serde_json::json!({ "command_id": id }),
        }
    }

    fn result(id: &str, status: pb::CommandStatus, output: &str) -> RecordBody {
        RecordBody::CommandResult(pb::CommandResult {
            command_id: id.into(),
            status: status as i32,
            exit_code: if status == pb::CommandStatus::Failed {
                5
            } else {
                0
            },
            output: output.into(),
            started_at_unix_ms: T0 + 10,
            finished_at_unix_ms: T0 + 20,
            error: if status == pb::CommandStatus::Rejected {
                "replay: seen before".into()
            } else {
                String::new()
            },
        })
    }

    #[tokio::test]
    async fn a_command_and_its_audit_row_are_stored_together() {
        let s = store_with_host("h1").await;
        let row = s
            .create_command(new_command("c1", "h1", T0), command_audit("c1"))
            .await
            .unwrap();
        assert_eq!(row.status, CommandStatus::Pending);
        assert_eq!(row.command_bytes, vec![1, 2, 3]);
        assert_eq!(row.payload["unit"], "nginx.service");
        assert_eq!(s.command("c1").await.unwrap(), Some(row));
        assert_eq!(
            s.audit_events(10).await.unwrap()[0].action,
            "command.create"
        );

        // A duplicate id is a conflict, and its audit row is not written.
        let err = s
            .create_command(new_command("c1", "h1", T0), command_audit("c1"))
            .await
            .unwrap_err();
        assert!(matches!(err, StoreError::Conflict { .. }), "{err}");
        assert_eq!(s.audit_events(10).await.unwrap().len(), 1);
        // A command for a host that does not exist is refused.
        assert!(
            s.create_command(new_command("c2", "nobody", T0), command_audit("c2"))
                .await
                .is_err()
        );
        assert_eq!(s.verify_audit_chain().await.unwrap(), None);
    }

    #[tokio::test]
    async fn delivery_takes_pending_and_undelivered_and_expires_the_never_sent() {
        let s = store_with_host("h1").await;
        for (id, at) in [("old", T0 - 10 * 60_000), ("a", T0), ("b", T0 + 1)] {
            s.create_command(new_command(id, "h1", at), command_audit(id))
                .await
                .unwrap();
        }
        let due = s.commands_to_deliver("h1", T0 + 2, 10).await.unwrap();
        let ids: Vec<_> = due.iter().map(|c| c.id.as_str()).collect();
        assert_eq!(ids, ["a", "b"], "oldest first, the expired one left out");
        assert_eq!(
            s.command("old").await.unwrap().unwrap().status,
            CommandStatus::Expired
        );

        s.command_delivered("a", T0 + 3).await.unwrap();
        s.command_delivered("a", T0 + 4).await.unwrap();
        let a = s.command("a").await.unwrap().unwrap();
        assert_eq!(a.status, CommandStatus::Delivered);
        assert_eq!(a.delivered_at, Some(T0 + 3), "the first delivery is kept");
        // Delivered without a result: delivered again at the next connection.
        let ids: Vec<_> = s
            .commands_to_deliver("h1", T0 + 5, 10)
            .await
            .unwrap()
            .into_iter()
            .map(|c| c.id)
            .collect();
        assert_eq!(ids, ["a", "b"]);
        // A delivered command past its expiry stays delivered (it may have
        // run; its result may still come) but is not sent again.
        let later = s
            .commands_to_deliver("h1", T0 + 6 * 60_000, 10)
            .await
            .unwrap();
        assert!(later.is_empty());
        assert_eq!(
            s.command("a").await.unwrap().unwrap().status,
            CommandStatus::Delivered
        );
        assert_eq!(
            s.command("b").await.unwrap().unwrap().status,
            CommandStatus::Expired
        );
    }

    #[tokio::test]
    async fn the_first_result_completes_a_command_once() {
        let s = store_with_host("h1").await;
        s.create_command(new_command("c1", "h1", T0), command_audit("c1"))
            .await
            .unwrap();
        s.command_delivered("c1", T0 + 1).await.unwrap();
        s.store_records(
            "h1",
            T0 + 50,
            &[rec(
                1,
                result("c1", pb::CommandStatus::Failed, "no such unit"),
            )],
        )
        .await
        .unwrap();
        let c = s.command("c1").await.unwrap().unwrap();
        assert_eq!(c.status, CommandStatus::Failed);
        assert_eq!(c.exit_code, Some(5));
        assert_eq!(c.output.as_deref(), Some("no such unit"));
        assert_eq!(c.error, None);
        assert_eq!(
            (c.started_at, c.finished_at),
            (Some(T0 + 10), Some(T0 + 20))
        );
        assert_eq!(c.result_received_at, Some(T0 + 50));

        // The same record again, and a later replay refusal of a
        // redelivery: neither changes the stored result.
        s.store_records(
            "h1",
            T0 + 60,
            &[
                rec(1, result("c1", pb::CommandStatus::Succeeded, "")),
                rec(2, result("c1", pb::CommandStatus::Rejected, "")),
            ],
        )
        .await
        .unwrap();
        assert_eq!(s.command("c1").await.unwrap().unwrap(), c);
        assert_eq!(
            s.audit_events(10).await.unwrap().len(),
            1,
            "nothing to audit"
        );
    }

    #[tokio::test]
    async fn results_that_match_no_command_of_the_host_are_audited_not_applied() {
        let s = store_with_host("h1").await;
        s.enroll_host(
            "0123456789abcdef",
            T0,
            accept_all,
            new_host("h2", "0123456789abcdef"),
        )
        .await
        .unwrap()
        .unwrap();
        s.create_command(new_command("for-h2", "h2", T0), command_audit("for-h2"))
            .await
            .unwrap();
        // h1 reports a result for h2's command, one for an unknown id, and a
        // refusal of something control could not verify.
        s.store_records(
            "h1",
            T0 + 50,
            &[
                rec(1, result("for-h2", pb::CommandStatus::Succeeded, "owned")),
                rec(2, result("nope", pb::CommandStatus::Failed, "")),
                rec(3, result("", pb::CommandStatus::Rejected, "")),
            ],
        )
        .await
        .unwrap();
        assert_eq!(
            s.command("for-h2").await.unwrap().unwrap().status,
            CommandStatus::Pending,
            "another host cannot complete h2's command"
        );
        let events = s.audit_events(10).await.unwrap();
        let actions: Vec<_> = events.iter().map(|e| e.action.as_str()).collect();
        assert_eq!(
            actions,
            [
                "command.refused_unverified",
                "command.unmatched_result",
                "command.unmatched_result",
                "command.create"
            ]
        );
        assert_eq!(events[0].actor, "agent:h1");
        assert_eq!(events[0].outcome, "denied");
        assert_eq!(events[2].details["command_id"], "for-h2");
        // Stored idempotently: the same records again audit nothing more.
        s.store_records(
            "h1",
            T0 + 60,
            &[rec(3, result("", pb::CommandStatus::Rejected, ""))],
        )
        .await
        .unwrap();
        assert_eq!(s.audit_events(10).await.unwrap().len(), 4);
        assert_eq!(s.verify_audit_chain().await.unwrap(), None);
    }

    #[tokio::test]
    async fn a_hosts_commands_list_newest_first() {
        let s = store_with_host("h1").await;
        for (id, at) in [("a", T0), ("c", T0 + 2), ("b", T0 + 1)] {
            s.create_command(new_command(id, "h1", at), command_audit(id))
                .await
                .unwrap();
        }
        let ids: Vec<_> = s
            .host_commands("h1", 2)
            .await
            .unwrap()
            .into_iter()
            .map(|c| c.id)
            .collect();
        assert_eq!(ids, ["c", "b"]);
        assert!(s.host_commands("h2", 10).await.unwrap().is_empty());
    }
}
