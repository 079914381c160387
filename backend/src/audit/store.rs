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

/// Recomputes the whole chain in one snapshot, from the retention
/// boundary (whose signature [`super::verify`] checks; this does not);
/// returns the id of the first row that does not chain, or `None` if the
/// chain is intact.
pub fn verify(tx: &mut Tx<'_>) -> Result<Option<i64>> {
    let boundary = super::checkpoint::boundary(tx)?;
    let (start_id, start_hash) = super::checkpoint::chain_start(boundary.as_ref());
    let verifier = walk_chain(tx, start_id, start_hash, |_| {})?;
    match verifier.first_id() {
        Some(first) if first != start_id + 1 => Ok(Some(first)),
        _ => Ok(verifier.first_bad()),
    }
}

/// Feeds every row after `start_id` to a verifier expecting the first of
/// them to chain from `start_hash`, and to `each`; returns the verifier.
pub fn walk_chain(
    tx: &mut Tx<'_>,
    start_id: i64,
    start_hash: String,
    mut each: impl FnMut(&StoredRow),
) -> Result<Verifier> {
    let mut verifier = Verifier::starting_after(start_id, start_hash);
    tx.query_each(
        "SELECT id, at, actor, action, target, source_ip, user_agent, outcome, details, prev_hash, hash
         FROM audit_log WHERE id > $1 ORDER BY id",
        params![start_id],
        |row| {
            match stored_row(row) {
                Ok(stored) => {
                    verifier.feed(&stored);
                    each(&stored);
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
    Ok(verifier)
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

/// Which events a search or an export returns, newest first.
#[derive(Debug, Clone, Default)]
pub struct AuditQuery {
    /// Only these actions (a category is its actions).
    pub actions: Option<Vec<Action>>,
    /// Only this actor (`user:alice`, `api-token:...`, `agent:...`, `cli`).
    pub actor: Option<String>,
    pub outcome: Option<Outcome>,
    /// Only events about this target (a host id, a user name...).
    pub target: Option<String>,
    /// `from <= at < to`.
    pub from: Option<crate::db::Millis>,
    pub to: Option<crate::db::Millis>,
    /// Only events older than this id (the next page).
    pub before_id: Option<i64>,
    /// At most this many (None: all, for an export).
    pub limit: Option<u32>,
}

fn search_sql<'a>(
    q: &'a AuditQuery,
    actions: &'a [&'static str],
) -> (String, Vec<crate::db::Param<'a>>) {
    let mut conditions = Vec::new();
    let mut values: Vec<crate::db::Param<'a>> = Vec::new();
    if q.actions.is_some() {
        if actions.is_empty() {
            conditions.push("1 = 0".to_owned());
        } else {
            let mut placeholders = Vec::new();
            for a in actions {
                values.push((*a).into());
                placeholders.push(format!("${}", values.len()));
            }
            conditions.push(format!("action IN ({})", placeholders.join(", ")));
        }
    }
    if let Some(actor) = &q.actor {
        values.push(actor.as_str().into());
        conditions.push(format!("actor = ${}", values.len()));
    }
    if let Some(outcome) = q.outcome {
        values.push(outcome.as_str().into());
        conditions.push(format!("outcome = ${}", values.len()));
    }
    if let Some(target) = &q.target {
        values.push(target.as_str().into());
        conditions.push(format!("target = ${}", values.len()));
    }
    if let Some(from) = q.from {
        values.push(from.into());
        conditions.push(format!("at >= ${}", values.len()));
    }
    if let Some(to) = q.to {
        values.push(to.into());
        conditions.push(format!("at < ${}", values.len()));
    }
    if let Some(before) = q.before_id {
        values.push(before.into());
        conditions.push(format!("id < ${}", values.len()));
    }
    let filter = if conditions.is_empty() {
        String::new()
    } else {
        format!(" WHERE {}", conditions.join(" AND "))
    };
    let limit = match q.limit {
        Some(limit) => {
            values.push(limit.into());
            format!(" LIMIT ${}", values.len())
        }
        None => String::new(),
    };
    (
        format!("SELECT {EVENT_COLUMNS} FROM audit_log{filter} ORDER BY id DESC{limit}"),
        values,
    )
}

/// The events `q` selects, newest first.
pub fn search(tx: &mut Tx<'_>, q: &AuditQuery) -> Result<Vec<AuditEvent>> {
    let actions: Vec<&'static str> = q.actions.iter().flatten().map(|a| a.as_str()).collect();
    let (sql, values) = search_sql(q, &actions);
    tx.query(&sql, &values, event_from_row)
}

/// Calls `each` for every event `q` selects, newest first, without holding
/// them all (an export of the whole trail).
pub fn each_matching(
    tx: &mut Tx<'_>,
    q: &AuditQuery,
    mut each: impl FnMut(AuditEvent) -> Result<()>,
) -> Result<()> {
    let actions: Vec<&'static str> = q.actions.iter().flatten().map(|a| a.as_str()).collect();
    let (sql, values) = search_sql(q, &actions);
    tx.query_each(&sql, &values, |row| each(event_from_row(row)?))
}
