//! Command queries, and applying an agent's result (with an upgrade's
//! changes, reboot status and services to restart).

use super::{
    CommandKind, CommandResult, CommandRow, CommandStatus, MAX_STREAMED_OUTPUT, NewCommand,
    OutputPiece,
};
use crate::audit::{Action, Actor, NewAuditEvent, Outcome};
use crate::db::value::{json, to_json};
use crate::db::{DbError, Millis, Result, Row, Tx};
use crate::params;

const COMMAND_COLUMNS: &str = "id, host_id, type, payload, requested_by, source_ip, user_agent, issued_at, \
     expires_at, command_bytes, signature, status, delivered_at, exit_code, output, error, started_at, \
     finished_at, result_received_at, changes, streamed_bytes, output_bytes, output_truncated, \
     reboot_required, restarts";

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
        changes: match row.get::<Option<String>>(19)? {
            None => Vec::new(),
            Some(text) => serde_json::from_str(&text)
                .map_err(|e| DbError::Corrupt(format!("command changes: {e}")))?,
        },
        streamed_bytes: row.get(20)?,
        output_bytes: row.get(21)?,
        output_truncated: row.get(22)?,
        reboot_required: row.get(23)?,
        restarts: match row.get::<Option<String>>(24)? {
            None => Vec::new(),
            Some(text) => serde_json::from_str(&text)
                .map_err(|e| DbError::Corrupt(format!("command restarts: {e}")))?,
        },
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
    let changes = (!result.changes.is_empty())
        .then(|| to_json("command changes", &result.changes))
        .transpose()?;
    let restarts = (!result.restarts.is_empty())
        .then(|| to_json("command restarts", &result.restarts))
        .transpose()?;
    let updated = if result.command_id.is_empty() {
        0
    } else {
        tx.execute(
            "UPDATE commands SET status = $3, exit_code = $4, output = $5, error = $6, started_at = $7,
                                 finished_at = $8, result_received_at = $9, result_seq = $10,
                                 changes = $11, streamed_bytes = $12, reboot_required = $13,
                                 restarts = $14
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
                &changes,
                i64::try_from(result.streamed_bytes).unwrap_or(i64::MAX),
                result.reboot_required,
                &restarts,
            ],
        )?
    };
    if updated > 0 {
        // A patch run waiting for this command moves on in the same
        // transaction, so the run never disagrees with its command.
        crate::patching::store::on_command_result(tx, host_id, received_at, result)?;
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

/// What storing a piece of streamed output did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutputStored {
    Stored,
    /// A piece at this offset is stored already (a resend): nothing changed.
    Duplicate,
    /// The command's output reached [`MAX_STREAMED_OUTPUT`]: dropped, and
    /// the command marked truncated.
    Truncated,
    /// No command of this host has that id: dropped.
    NotThisHost,
}

/// Stores a piece of a running command's output, once per (command,
/// offset). Only a command of the host that sent it takes output, and at
/// most [`MAX_STREAMED_OUTPUT`] bytes of it. Nothing here is an error: the
/// piece is part of the agent's record stream, and a refusal would be
/// resent forever and stall the records behind it.
pub fn append_output(tx: &mut Tx<'_>, host_id: &str, piece: &OutputPiece) -> Result<OutputStored> {
    let held: Option<i64> = tx.query_opt(
        &format!(
            "SELECT output_bytes FROM commands WHERE id = $1 AND host_id = $2{}",
            tx.for_update()
        ),
        params![&piece.command_id, host_id],
        |row| row.get(0),
    )?;
    let Some(held) = held else {
        tracing::warn!(
            host_id,
            command_id = %piece.command_id,
            "dropped output for a command this host was not sent"
        );
        return Ok(OutputStored::NotThisHost);
    };
    let Ok(offset) = i64::try_from(piece.offset) else {
        tracing::warn!(host_id, command_id = %piece.command_id, offset = piece.offset, "dropped output at an impossible offset");
        return Ok(OutputStored::Truncated);
    };
    let stored = tx
        .query_opt(
            "SELECT 1 FROM command_outputs WHERE command_id = $1 AND byte_offset = $2",
            params![&piece.command_id, offset],
            |_| Ok(()),
        )?
        .is_some();
    if stored {
        return Ok(OutputStored::Duplicate);
    }
    let len = i64::try_from(piece.text.len()).unwrap_or(i64::MAX);
    let cap = i64::try_from(MAX_STREAMED_OUTPUT).unwrap_or(i64::MAX);
    if held.saturating_add(len) > cap {
        tx.execute(
            "UPDATE commands SET output_truncated = $2 WHERE id = $1",
            params![&piece.command_id, true],
        )?;
        return Ok(OutputStored::Truncated);
    }
    tx.execute(
        "INSERT INTO command_outputs (command_id, byte_offset, bytes, text) VALUES ($1, $2, $3, $4)",
        params![&piece.command_id, offset, len, &piece.text],
    )?;
    tx.execute(
        "UPDATE commands SET output_bytes = output_bytes + $2 WHERE id = $1",
        params![&piece.command_id, len],
    )?;
    Ok(OutputStored::Stored)
}

/// A stretch of a command's streamed output.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutputSlice {
    /// The output from the offset asked for, as far as it is contiguous.
    pub text: String,
    /// The offset to ask for next (the asked-for offset plus `text`'s bytes).
    pub next: u64,
    /// Pieces beyond `next` are stored but not reachable yet (a gap: a piece
    /// still in flight) or not returned (the slice reached `max_bytes`).
    pub more: bool,
}

/// The command's streamed output from byte `from` on, in offset order, up
/// to the first gap (a piece still in flight) and at most about
/// `max_bytes`. `from` is 0 or a `next` returned before, so what precedes
/// it is contiguous.
pub fn output_from(
    tx: &mut Tx<'_>,
    command_id: &str,
    from: u64,
    max_bytes: usize,
) -> Result<OutputSlice> {
    let start = i64::try_from(from).unwrap_or(i64::MAX);
    let pieces: Vec<(i64, String)> = tx.query(
        "SELECT byte_offset, text FROM command_outputs
         WHERE command_id = $1 AND byte_offset + bytes > $2 ORDER BY byte_offset",
        params![command_id, start],
        |row| Ok((row.get(0)?, row.get(1)?)),
    )?;
    let mut text = String::new();
    let mut next = start;
    let mut more = false;
    for (offset, piece) in pieces {
        if offset > next || text.len() >= max_bytes {
            more = true;
            break;
        }
        // A piece that starts before `next` overlaps what we have; a cut
        // that is not on a character boundary means the pieces disagree.
        let skip = usize::try_from(next - offset).unwrap_or(usize::MAX);
        let Some(rest) = piece.get(skip..) else {
            more = true;
            break;
        };
        text.push_str(rest);
        next = next.saturating_add(i64::try_from(rest.len()).unwrap_or(i64::MAX));
    }
    Ok(OutputSlice {
        text,
        next: u64::try_from(next).unwrap_or(from),
        more,
    })
}
