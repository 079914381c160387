//! Audit log queries. [`append`] runs inside the caller's transaction, so an
//! action and its audit event are stored together or not at all.

use super::chain::{self, StoredRow, Verifier};
use super::{Action, Actor, AuditEvent, NewAuditEvent, Outcome};
use crate::db::value::{json, to_json};
use crate::db::{DbError, Lock, Result, Row, Tx};
use crate::params;

/// Appends `event` after the chain's current tail.
pub fn append(tx: &mut Tx<'_>, event: &NewAuditEvent) -> Result<AuditEvent> {
    // Appends are strictly sequential: the tail read here must still be the
    // tail when this row goes in (SQLite's write lock, PostgreSQL's advisory
    // lock).
    tx.lock(Lock::AuditChain)?;
    let details = to_json("audit details", &event.details)?;
    let last: Option<(i64, String)> = tx.query_opt(
        "SELECT id, hash FROM audit_log ORDER BY id DESC LIMIT 1",
        params![],
        |row| Ok((row.get(0)?, row.get(1)?)),
    )?;
    let (last_id, prev_hash) = last.unwrap_or_else(|| (0, chain::GENESIS_HASH.to_owned()));
    let id = last_id
        .checked_add(1)
        .ok_or_else(|| DbError::Corrupt("audit_log ids are exhausted".into()))?;
    let actor = event.actor.to_string();
    let stored = StoredRow {
        id,
        at: event.at,
        actor,
        action: event.action.as_str().to_owned(),
        target: event.target.clone(),
        source_ip: event.source_ip.clone(),
        user_agent: event.user_agent.clone(),
        outcome: event.outcome.as_str().to_owned(),
        details,
        prev_hash,
        hash: String::new(),
    };
    let hash = chain::hash(&stored.prev_hash, &stored.canonical());
    tx.execute(
        "INSERT INTO audit_log (id, at, actor, action, target, source_ip, user_agent, outcome, details, prev_hash, hash)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
        params![
            id,
            stored.at,
            &stored.actor,
            &stored.action,
            &stored.target,
            &stored.source_ip,
            &stored.user_agent,
            &stored.outcome,
            &stored.details,
            &stored.prev_hash,
            &hash,
        ],
    )?;
    Ok(AuditEvent {
        id,
        at: event.at,
        actor: event.actor.clone(),
        action: event.action,
        target: event.target.clone(),
        source_ip: event.source_ip.clone(),
        user_agent: event.user_agent.clone(),
        outcome: event.outcome,
        details: event.details.clone(),
        hash,
    })
}

const EVENT_COLUMNS: &str =
    "id, at, actor, action, target, source_ip, user_agent, outcome, details, hash";

fn parse<T: std::str::FromStr<Err = crate::UnknownName>>(row: &Row<'_>, idx: usize) -> Result<T> {
    let text: String = row.get(idx)?;
    text.parse()
        .map_err(|e: crate::UnknownName| DbError::Corrupt(e.to_string()))
}

fn event_from_row(row: &Row<'_>) -> Result<AuditEvent> {
    Ok(AuditEvent {
        id: row.get(0)?,
        at: row.get(1)?,
        actor: parse::<Actor>(row, 2)?,
        action: parse::<Action>(row, 3)?,
        target: row.get(4)?,
        source_ip: row.get(5)?,
        user_agent: row.get(6)?,
        outcome: parse::<Outcome>(row, 7)?,
        details: json(row, 8)?,
        hash: row.get(9)?,
    })
}

/// The newest `limit` events, newest first.
pub fn latest(tx: &mut Tx<'_>, limit: u32) -> Result<Vec<AuditEvent>> {
    tx.query(
        &format!("SELECT {EVENT_COLUMNS} FROM audit_log ORDER BY id DESC LIMIT $1"),
        params![limit],
        event_from_row,
    )
}

/// Number of events stored.
pub fn count(tx: &mut Tx<'_>) -> Result<u64> {
    tx.query_one("SELECT COUNT(*) FROM audit_log", params![], |row| {
        row.get(0)
    })
}

fn stored_row(row: &Row<'_>) -> Result<StoredRow> {
    Ok(StoredRow {
        id: row.get(0)?,
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
}

/// Recomputes the whole chain in one snapshot; returns the id of the first
/// row that does not chain, or `None` if the chain is intact.
pub fn verify(tx: &mut Tx<'_>) -> Result<Option<i64>> {
    let mut verifier = Verifier::new();
    tx.query_each(
        "SELECT id, at, actor, action, target, source_ip, user_agent, outcome, details, prev_hash, hash
         FROM audit_log ORDER BY id",
        params![],
        |row| {
            if verifier.first_bad().is_some() {
                return Ok(());
            }
            match stored_row(row) {
                Ok(stored) => {
                    verifier.feed(&stored);
                }
                // A row whose columns no longer have their types was
                // tampered with.
                Err(_) => {
                    let id = row.get::<i64>(0).unwrap_or(i64::MAX);
                    verifier.unreadable(id);
                }
            }
            Ok(())
        },
    )?;
    Ok(verifier.first_bad())
}

/// Every row as stored, in id order (for copying a database).
pub fn each_stored(tx: &mut Tx<'_>, mut each: impl FnMut(StoredRow) -> Result<()>) -> Result<()> {
    tx.query_each(
        "SELECT id, at, actor, action, target, source_ip, user_agent, outcome, details, prev_hash, hash
         FROM audit_log ORDER BY id",
        params![],
        |row| each(stored_row(row)?),
    )
}

/// Inserts a row exactly as stored elsewhere (copying a database; the chain
/// is verified afterwards, not trusted).
pub fn insert_stored(tx: &mut Tx<'_>, row: &StoredRow) -> Result<()> {
    tx.execute(
        "INSERT INTO audit_log (id, at, actor, action, target, source_ip, user_agent, outcome, details, prev_hash, hash)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
        params![
            row.id,
            row.at,
            &row.actor,
            &row.action,
            &row.target,
            &row.source_ip,
            &row.user_agent,
            &row.outcome,
            &row.details,
            &row.prev_hash,
            &row.hash,
        ],
    )?;
    Ok(())
}
