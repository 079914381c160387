//! Command queries, and applying an agent's result.

use super::{CommandKind, CommandResult, CommandRow, CommandStatus, NewCommand};
use crate::audit::{Action, Actor, NewAuditEvent, Outcome};
use crate::db::value::{json, to_json};
use crate::db::{DbError, Millis, Result, Row, Tx};
use crate::params;

const COMMAND_COLUMNS: &str = "id, host_id, type, payload, requested_by, source_ip, user_agent, issued_at, \
     expires_at, command_bytes, signature, status, delivered_at, exit_code, output, error, started_at, \
     finished_at, result_received_at";

fn parse<T: std::str::FromStr<Err = crate::UnknownName>>(row: &Row<'_>, idx: usize) -> Result<T> {
    let text: String = row.get(idx)?;
    text.parse()
        .map_err(|e: crate::UnknownName| DbError::Corrupt(e.to_string()))
}

fn command_from_row(row: &Row<'_>) -> Result<CommandRow> {
    Ok(CommandRow {
        id: row.get(0)?,
        host_id: row.get(1)?,
        kind: parse::<CommandKind>(row, 2)?,
        payload: json(row, 3)?,
        requested_by: parse::<Actor>(row, 4)?,
        source_ip: row.get(5)?,
        user_agent: row.get(6)?,
        issued_at: row.get(7)?,
        expires_at: row.get(8)?,
        command_bytes: row.get(9)?,
        signature: row.get(10)?,
        status: parse::<CommandStatus>(row, 11)?,
        delivered_at: row.get(12)?,
        exit_code: row.get(13)?,
        output: row.get(14)?,
        error: row.get(15)?,
        started_at: row.get(16)?,
        finished_at: row.get(17)?,
        result_received_at: row.get(18)?,
    })
}

/// Stores a new command (pending); returns the stored row.
pub fn create(tx: &mut Tx<'_>, command: &NewCommand) -> Result<CommandRow> {
    let payload = to_json("command payload", &command.payload)?;
    let requested_by = command.requested_by.to_string();
    tx.execute(
        "INSERT INTO commands (id, host_id, type, payload, requested_by, source_ip, user_agent, issued_at,
                               expires_at, command_bytes, signature, status)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, 'pending')",
        params![
            &command.id,
            &command.host_id,
            command.kind.as_str(),
            &payload,
            &requested_by,
            &command.source_ip,
            &command.user_agent,
            command.issued_at,
            command.expires_at,
            &command.command_bytes,
            &command.signature,
        ],
    )
    .map_err(|e| match e {
        DbError::Conflict { .. } => DbError::Conflict {
            what: format!("command {:?}", command.id),
        },
        e => e,
    })?;
    get(tx, &command.id)?.ok_or_else(|| DbError::NotFound {
        what: format!("command {:?} after insert", command.id),
    })
}

pub fn get(tx: &mut Tx<'_>, id: &str) -> Result<Option<CommandRow>> {
    tx.query_opt(
        &format!("SELECT {COMMAND_COLUMNS} FROM commands WHERE id = $1"),
        params![id],
        command_from_row,
    )
}

/// A host's commands, newest first, at most `limit`.
pub fn for_host(tx: &mut Tx<'_>, host_id: &str, limit: u32) -> Result<Vec<CommandRow>> {
    tx.query(
        &format!("SELECT {COMMAND_COLUMNS} FROM commands WHERE host_id = $1 ORDER BY issued_at DESC, id DESC LIMIT $2"),
        params![host_id, limit],
        command_from_row,
    )
}

/// First marks the host's commands that were never delivered and have
/// expired at `now` as expired; then returns the ones to (re)deliver:
/// pending or delivered without a result (a delivery may have been lost
/// with its connection; control never runs an id twice), unexpired at
/// `now`, oldest first, at most `limit`.
pub fn to_deliver(
    tx: &mut Tx<'_>,
    host_id: &str,
    now: Millis,
    limit: u32,
) -> Result<Vec<CommandRow>> {
    tx.execute(
        "UPDATE commands SET status = 'expired' WHERE host_id = $1 AND status = 'pending' AND expires_at <= $2",
        params![host_id, now],
    )?;
    tx.query(
        &format!(
            "SELECT {COMMAND_COLUMNS} FROM commands
             WHERE host_id = $1 AND status IN ('pending', 'delivered') AND expires_at > $2
             ORDER BY issued_at, id LIMIT $3"
        ),
        params![host_id, now, limit],
        command_from_row,
    )
}

/// Records that the command was handed to its agent's connection: a
/// pending command becomes delivered; the first delivery time is kept.
pub fn delivered(tx: &mut Tx<'_>, id: &str, now: Millis) -> Result<()> {
    tx.execute(
        "UPDATE commands SET status = CASE WHEN status = 'pending' THEN 'delivered' ELSE status END,
                             delivered_at = COALESCE(delivered_at, $2)
         WHERE id = $1",
        params![id, now],
    )?;
    Ok(())
}

/// Completes the host's command named by `result`, once: a result for a
/// command that already has one (a redelivered command that control refused
/// as a replay, after the first delivery's result) changes nothing. A result
/// that matches no command *of this host* (another host's command id, an
/// unknown id, or no id: control refused something it could not verify) is
/// appended to the audit log instead, because it means something on the
/// agent handed control a command the backend did not send to it.
pub fn apply_result(
    tx: &mut Tx<'_>,
    host_id: &str,
    seq: u64,
    received_at: Millis,
    result: &CommandResult,
) -> Result<()> {
    let updated = if result.command_id.is_empty() {
        0
    } else {
        tx.execute(
            "UPDATE commands SET status = $3, exit_code = $4, output = $5, error = $6, started_at = $7,
                                 finished_at = $8, result_received_at = $9, result_seq = $10
             WHERE id = $1 AND host_id = $2 AND status IN ('pending', 'delivered', 'expired')",
            params![
                &result.command_id,
                host_id,
                result.status.as_str(),
                result.exit_code,
                &result.output,
                &result.error,
                result.started_at,
                result.finished_at,
                received_at,
                crate::db::seq(seq)?,
            ],
        )?
    };
    if updated > 0 {
        return Ok(());
    }
    let known = !result.command_id.is_empty()
        && tx
            .query_opt(
                "SELECT 1 FROM commands WHERE id = $1 AND host_id = $2",
                params![&result.command_id, host_id],
                |_| Ok(()),
            )?
            .is_some();
    if known {
        tracing::info!(
            host_id,
            command_id = %result.command_id,
            status = result.status.as_str(),
            error = ?result.error,
            "ignoring a further result for a command that already has one"
        );
        return Ok(());
    }
    let action = if result.command_id.is_empty() {
        Action::CommandRefusedUnverified
    } else {
        Action::CommandUnmatchedResult
    };
    tracing::warn!(
        host_id,
        command_id = %result.command_id,
        status = result.status.as_str(),
        error = ?result.error,
        "the agent reported a result for a command this backend did not send it"
    );
    let outcome = if result.status == CommandStatus::Rejected {
        Outcome::Denied
    } else {
        Outcome::Failure
    };
    let event = NewAuditEvent::new(
        received_at,
        Actor::Agent(host_id.to_owned()),
        action,
        outcome,
    )
    .target(host_id)
    .details(serde_json::json!({
        "command_id": result.command_id,
        "status": result.status.as_str(),
        "error": result.error.clone().unwrap_or_default(),
        "record_seq": seq,
    }));
    crate::audit::store::append(tx, &event)?;
    Ok(())
}
