//! `palisade-backend migrate-data --from URL --to URL`: copies a whole
//! database into an empty one of either dialect, then proves the copy.
//!
//! The source is read in one snapshot (one read transaction); rows go into
//! the target in batches. Afterwards: every table has as many rows as in the
//! source, identity sequences continue after the copied ids (PostgreSQL),
//! and the audit chain verifies on the target. The copy is itself audited
//! in the target (`database.migrate_data`). A target that is not empty is
//! refused before anything is written; a copy that fails midway leaves a
//! partial target, which the error says (drop it and run again).

use std::fmt;

use super::migrate;
use super::value::{Column, Param};
use super::{DatabaseUrl, Db, DbError, Dialect, Result, Tx};
use crate::audit::{Action, Actor, NewAuditEvent, Outcome};
use crate::params;

/// Every table of the schema, in an order that satisfies foreign keys, with
/// its columns and the key it is read in. A tidy test checks this list
/// against the schema, so a new table cannot be forgotten.
pub const TABLES: &[(&str, &str, &str)] = &[
    (
        "users",
        "id, username, password_hash, created_at, disabled, external_provider, external_subject, \
         must_change_password, password_changed_at",
        "id",
    ),
    (
        "password_history",
        "user_id, password_hash, changed_at",
        "user_id, changed_at",
    ),
    ("host_groups", "id, name, description, created_at", "id"),
    (
        "roles",
        "id, name, description, builtin, permissions, created_at",
        "id",
    ),
    (
        "role_assignments",
        "id, user_id, role_id, host_group_id, created_at",
        "id",
    ),
    (
        "sessions",
        "id_hash, user_id, created_at, last_seen_at, expires_at, source_ip, user_agent, authenticated_at",
        "id_hash",
    ),
    (
        "totp_factors",
        "user_id, sealed_secret, created_at, confirmed_at, last_step",
        "user_id",
    ),
    (
        "backup_codes",
        "user_id, code_hash, created_at, used_at",
        "user_id, code_hash",
    ),
    (
        "passkeys",
        "id, user_id, credential_id, public_key, algorithm, sign_count, name, created_at, last_used_at",
        "id",
    ),
    (
        "passkey_challenges_used",
        "challenge_hash, expires_at",
        "challenge_hash",
    ),
    (
        "sign_in_challenges",
        "id_hash, user_id, created_at, expires_at, failures",
        "id_hash",
    ),
    (
        "sign_in_throttle",
        "key, failures, last_failure_at, next_attempt_at, locked_until",
        "key",
    ),
    (
        "api_tokens",
        "id, name, secret_hash, created_at, revoked_at, user_id, role_id, permissions, host_group_id, \
         expires_at, last_used_at, last_used_ip",
        "id",
    ),
    (
        "enrollment_tokens",
        "id, secret_hash, host_group_id, cidrs, max_per_day, expires_at, created_at, revoked_at",
        "id",
    ),
    (
        "hosts",
        "id, hostname, host_group_id, os_pretty_name, os_id, os_version_id, kernel_release, architecture, cpu_count, \
         memory_total_bytes, enrolled_at, enrolled_from, token_id, cert_sha256, last_seen, last_transport, \
         stored_up_to_seq, facts_seq, agent_health, agent_health_seq, revoked_at, spool_dropped_total",
        "id",
    ),
    (
        "enrollment_uses",
        "token_id, host_id, used_at",
        "token_id, host_id",
    ),
    (
        "host_records",
        "host_id, seq, kind, created_at, received_at",
        "host_id, seq",
    ),
    (
        "host_inventories",
        "host_id, manager, digest, seq, collected_at, lists_updated_at, reboot_required, reboot_reasons, needs_full",
        "host_id",
    ),
    (
        "host_packages",
        "host_id, name, arch, version, source, held",
        "host_id, name, arch, version",
    ),
    (
        "host_updates",
        "host_id, name, arch, installed, candidate, security, status, detail, origins, advisories, severity, cves",
        "host_id, name, arch",
    ),
    (
        "metric_chunks",
        "host_id, first_at, first_seq, last_at, last_seq, samples, data",
        "host_id, first_at, first_seq",
    ),
    (
        "host_latest_metrics",
        "host_id, collected_at, seq, cpu_percent, memory_total_bytes, memory_available_bytes, swap_total_bytes, \
         swap_free_bytes, load_1, load_5, load_15, uptime_seconds, process_count, filesystems, network",
        "host_id",
    ),
    (
        "metric_rollups",
        "host_id, resolution, bucket, samples, cpu_avg, cpu_max, memory_used_avg, memory_used_max, memory_total, \
         swap_used_avg, load_1_avg, load_1_max, process_count_avg",
        "host_id, resolution, bucket",
    ),
    (
        "metric_rollups_dirty",
        "host_id, resolution, bucket",
        "host_id, resolution, bucket",
    ),
    (
        "metric_minutes_dirty",
        "host_id, hour, since",
        "host_id, hour",
    ),
    (
        "commands",
        "id, host_id, type, payload, requested_by, source_ip, user_agent, issued_at, expires_at, command_bytes, \
         signature, status, delivered_at, exit_code, output, error, started_at, finished_at, result_received_at, \
         result_seq, changes, streamed_bytes, output_bytes, output_truncated, reboot_required, restarts",
        "id",
    ),
    (
        "command_outputs",
        "command_id, byte_offset, bytes, text",
        "command_id, byte_offset",
    ),
    (
        "patch_policies",
        "id, name, description, enabled, host_ids, group_ids, selection, exclude, approval, auto_approve_after_days, \
         reboot, maintenance_window, concurrency, canary, max_failure_percent, timeout_secs, created_by, created_at, \
         updated_by, updated_at",
        "id",
    ),
    (
        "patch_rollouts",
        "id, policy_id, policy_name, occurrence, window_end, state, concurrency, canary, max_failure_percent, policy, \
         requested_by, requested_at, finished_at, stop_reason",
        "id",
    ),
    (
        "patch_runs",
        "id, host_id, state, selection, approval, manager, requested_by, requested_by_user, requested_at, approved_by, approved_at, \
         cancelled_by, cancelled_at, started_at, finished_at, dry_run_command_id, command_id, cancel_command_id, \
         plan, changes, exit_code, error, timeout_secs, policy, rollout_id, rollout_position, exclude, \
         auto_approve_after_days, reboot, reboot_state, reboot_command_id, reboot_required, restarts",
        "id",
    ),
    (
        "update_first_seen",
        "host_id, name, arch, candidate, first_seen",
        "host_id, name, arch, candidate",
    ),
    (
        "audit_log",
        "id, at, actor, action, target, source_ip, user_agent, outcome, details, prev_hash, hash",
        "id",
    ),
    (
        "audit_checkpoints",
        "id, kind, audit_id, audit_hash, at, key_id, signature",
        "id",
    ),
];

/// Rows the migrations write themselves (the built-in roles), which the
/// copy leaves out: `(table, condition the copied rows meet)`.
const SEEDED: &[(&str, &str)] = &[("roles", "NOT builtin")];

/// Rows written per target transaction.
const BATCH: usize = 2000;

/// What a copy did.
#[derive(Debug, Default)]
pub struct CopyReport {
    pub from: String,
    pub to: String,
    pub tables: Vec<(&'static str, u64)>,
    pub audit_rows_verified: u64,
}

impl fmt::Display for CopyReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "copied {} into {}:", self.from, self.to)?;
        for (table, rows) in &self.tables {
            writeln!(f, "  {table:<22} {rows:>10} rows")?;
        }
        write!(
            f,
            "row counts match the source; the audit chain verifies ({} rows)",
            self.audit_rows_verified
        )
    }
}

/// A row held in memory between the two databases.
#[derive(Debug, Clone)]
enum Owned {
    Null,
    Int(i64),
    Real(f64),
    Text(String),
    Blob(Vec<u8>),
    Bool(bool),
}

impl Owned {
    fn of(c: Column<'_>) -> Owned {
        match c {
            Column::Null => Owned::Null,
            Column::Int(v) => Owned::Int(v),
            Column::Real(v) => Owned::Real(v),
            Column::Text(v) => Owned::Text(v.to_owned()),
            Column::Blob(v) => Owned::Blob(v.to_vec()),
            Column::Bool(v) => Owned::Bool(v),
        }
    }

    fn param(&self) -> Param<'_> {
        match self {
            Owned::Null => Param::Null,
            Owned::Int(v) => Param::Int(*v),
            Owned::Real(v) => Param::Real(*v),
            Owned::Text(v) => Param::Text(v),
            Owned::Blob(v) => Param::Blob(v),
            Owned::Bool(v) => Param::Bool(*v),
        }
    }
}

fn count(tx: &mut Tx<'_>, table: &str) -> Result<u64> {
    tx.query_one(&format!("SELECT COUNT(*) FROM {table}"), params![], |row| {
        row.get(0)
    })
}

/// Copies the database at `from` into the empty database at `to`.
pub fn migrate_data(from: &str, to: &str) -> Result<CopyReport> {
    let from_url = DatabaseUrl::parse(from)?;
    let to_url = DatabaseUrl::parse(to)?;
    let source = Db::open(&from_url)?;
    let target = Db::connect(&to_url)?;
    let empty = target.read_blocking("migrate-data: check target", |tx| {
        if migrate::current_version(tx)? > 0 {
            return Ok(false);
        }
        let tables = match tx.dialect() {
            Dialect::Sqlite => "SELECT COUNT(*) FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'",
            Dialect::Postgres => "SELECT COUNT(*) FROM information_schema.tables WHERE table_schema = current_schema()",
        };
        Ok(tx.query_one(tables, params![], |row| row.get::<i64>(0))? == 0)
    })?;
    if !empty {
        return Err(DbError::database(
            "migrate-data",
            format!(
                "the target {} is not empty; copy only into a new, empty database",
                to_url.redacted()
            ),
        ));
    }
    migrate::apply(&target)?;
    let mut report = CopyReport {
        from: from_url.redacted(),
        to: to_url.redacted(),
        ..CopyReport::default()
    };
    let partial = |e: DbError| {
        DbError::database(
            "migrate-data",
            format!(
                "{e}; the target {} now holds a partial copy: drop it and run again",
                to_url.redacted()
            ),
        )
    };
    // One snapshot of the source for the whole copy.
    source
        .read_blocking("migrate-data: read source", |src| {
            if target.dialect() == Dialect::Postgres {
                let range: (Option<i64>, Option<i64>) = src.query_one(
                    "SELECT MIN(first_at), MAX(first_at) FROM metric_chunks",
                    params![],
                    |row| Ok((row.get(0)?, row.get(1)?)),
                )?;
                if let (Some(first), Some(last)) = range {
                    target.write_blocking("migrate-data: partitions", |tx| {
                        crate::metrics::maintenance::ensure_partitions_between(tx, first, last)
                    })?;
                }
            }
            for &(table, columns, order) in TABLES {
                let copied = copy_table(src, &target, table, columns, order)?;
                report.tables.push((table, copied));
            }
            Ok(())
        })
        .map_err(partial)?;
    target
        .write_blocking("migrate-data: sequences", reset_sequences)
        .map_err(partial)?;
    // Prove it: the same number of rows everywhere, and an intact chain.
    for &(table, _, _) in TABLES {
        let (in_source, in_target) = (
            source.read_blocking("migrate-data: count", |tx| count(tx, table))?,
            target.read_blocking("migrate-data: count", |tx| count(tx, table))?,
        );
        if in_source != in_target {
            return Err(partial(DbError::database(
                "migrate-data",
                format!("{table}: {in_source} rows in the source but {in_target} in the target"),
            )));
        }
    }
    let event = NewAuditEvent::new(
        crate::now_millis(),
        Actor::Cli,
        Action::DataMigrated,
        Outcome::Success,
    )
    .details(serde_json::json!({
        "from": report.from,
        "to": report.to,
        "rows": report.tables.iter().map(|(_, n)| n).sum::<u64>(),
    }));
    target.write_blocking("migrate-data: audit", |tx| {
        crate::audit::store::append(tx, &event).map(|_| ())
    })?;
    let (bad, rows) = target.read_blocking("migrate-data: verify", |tx| {
        Ok((
            crate::audit::store::verify(tx)?,
            crate::audit::store::count(tx)?,
        ))
    })?;
    if let Some(id) = bad {
        return Err(DbError::Corrupt(format!(
            "the audit chain of the copy breaks at row {id}; the source's chain was already broken there, or the copy is wrong"
        )));
    }
    report.audit_rows_verified = rows;
    Ok(report)
}

fn copy_table(
    src: &mut Tx<'_>,
    target: &Db,
    table: &str,
    columns: &str,
    order: &str,
) -> Result<u64> {
    let width = columns.split(',').count();
    let placeholders: Vec<String> = (1..=width).map(|i| format!("${i}")).collect();
    let insert = format!(
        "INSERT INTO {table} ({columns}) VALUES ({})",
        placeholders.join(", ")
    );
    let mut batch: Vec<Vec<Owned>> = Vec::with_capacity(BATCH);
    let mut copied = 0u64;
    let flush = |batch: &mut Vec<Vec<Owned>>| -> Result<u64> {
        let rows = std::mem::take(batch);
        let n = rows.len() as u64;
        target.write_blocking("migrate-data: write", |tx| {
            for row in &rows {
                let params: Vec<Param<'_>> = row.iter().map(Owned::param).collect();
                tx.execute(&insert, &params)?;
            }
            Ok(())
        })?;
        Ok(n)
    };
    let filter = SEEDED
        .iter()
        .find(|(t, _)| *t == table)
        .map(|(_, condition)| format!("WHERE {condition}"))
        .unwrap_or_default();
    src.query_each(
        &format!("SELECT {columns} FROM {table} {filter} ORDER BY {order}"),
        params![],
        |row| {
            let mut values = Vec::with_capacity(width);
            for i in 0..width {
                values.push(Owned::of(row.column(i)?));
            }
            batch.push(values);
            if batch.len() >= BATCH {
                copied += flush(&mut batch)?;
            }
            Ok(())
        },
    )?;
    if !batch.is_empty() {
        copied += flush(&mut batch)?;
    }
    Ok(copied)
}

/// PostgreSQL's identity columns continue after the copied ids.
fn reset_sequences(tx: &mut Tx<'_>) -> Result<()> {
    if tx.dialect() == Dialect::Postgres {
        tx.batch(
            "SELECT setval(pg_get_serial_sequence('users', 'id'), COALESCE((SELECT MAX(id) FROM users), 0) + 1, false)",
        )?;
    }
    Ok(())
}
