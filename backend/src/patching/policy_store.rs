//! Patch policy and rollout queries.
//!
//! A scheduled rollout is made once per policy and window opening:
//! `(policy_id, occurrence)` is unique and the insert does nothing on a
//! conflict, so replicas racing for the same window make one rollout, and
//! only the one whose insert went through creates its runs (in the same
//! transaction).

use super::policy::{Policy, PolicyInput, RebootPolicy, Window};
use super::{Approval, Selection};
use crate::db::value::{json, to_json};
use crate::db::{DbError, Millis, Result, Row, Tx, params};

const POLICY_COLUMNS: &str = "id, name, description, enabled, host_ids, group_ids, selection, exclude, approval, \
     auto_approve_after_days, reboot, maintenance_window, concurrency, canary, max_failure_percent, timeout_secs, \
     created_by, created_at, updated_by, updated_at";

fn parse<T: std::str::FromStr<Err = crate::UnknownName>>(text: &str) -> Result<T> {
    text.parse()
        .map_err(|e: crate::UnknownName| DbError::Corrupt(e.to_string()))
}

fn policy_from_row(row: &Row<'_>) -> Result<Policy> {
    let window: Option<String> = row.get(11)?;
    Ok(Policy {
        id: row.get(0)?,
        name: row.get(1)?,
        description: row.get(2)?,
        enabled: row.get(3)?,
        host_ids: json(row, 4)?,
        group_ids: json(row, 5)?,
        selection: json::<Selection>(row, 6)?,
        exclude: json(row, 7)?,
        approval: parse::<Approval>(&row.get::<String>(8)?)?,
        auto_approve_after_days: row.get(9)?,
        reboot: parse::<RebootPolicy>(&row.get::<String>(10)?)?,
        window: window
            .map(|text| {
                serde_json::from_str::<Window>(&text)
                    .map_err(|e| DbError::Corrupt(format!("patch policy window: {e}")))
            })
            .transpose()?,
        concurrency: row.get(12)?,
        canary: row.get(13)?,
        max_failure_percent: row.get(14)?,
        timeout_secs: row.get(15)?,
        created_by: row.get(16)?,
        created_at: row.get(17)?,
        updated_by: row.get(18)?,
        updated_at: row.get(19)?,
    })
}

/// Stores a new policy. False when the name is taken.
pub fn insert(tx: &mut Tx<'_>, id: &str, p: &PolicyInput, by: &str, at: Millis) -> Result<bool> {
    let window = p
        .window
        .as_ref()
        .map(|w| to_json("patch policy window", w))
        .transpose()?;
    let inserted = tx.execute(
        &format!(
            "INSERT INTO patch_policies ({POLICY_COLUMNS})
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $17, $18)
             ON CONFLICT (name) DO NOTHING"
        ),
        params![
            id,
            &p.name,
            &p.description,
            p.enabled,
            &to_json("patch policy hosts", &p.host_ids)?,
            &to_json("patch policy groups", &p.group_ids)?,
            &to_json("patch policy selection", &p.selection)?,
            &to_json("patch policy exclusions", &p.exclude)?,
            p.approval.as_str(),
            p.auto_approve_after_days,
            p.reboot.as_str(),
            &window,
            p.concurrency,
            p.canary,
            p.max_failure_percent,
            p.timeout_secs,
            by,
            at,
        ],
    )?;
    Ok(inserted > 0)
}

/// Replaces a policy's settings. False when it does not exist.
pub fn update(tx: &mut Tx<'_>, id: &str, p: &PolicyInput, by: &str, at: Millis) -> Result<bool> {
    let window = p
        .window
        .as_ref()
        .map(|w| to_json("patch policy window", w))
        .transpose()?;
    let updated = tx.execute(
        "UPDATE patch_policies SET name = $2, description = $3, enabled = $4, host_ids = $5, group_ids = $6,
             selection = $7, exclude = $8, approval = $9, auto_approve_after_days = $10, reboot = $11,
             maintenance_window = $12, concurrency = $13, canary = $14, max_failure_percent = $15,
             timeout_secs = $16, updated_by = $17, updated_at = $18
         WHERE id = $1",
        params![
            id,
            &p.name,
            &p.description,
            p.enabled,
            &to_json("patch policy hosts", &p.host_ids)?,
            &to_json("patch policy groups", &p.group_ids)?,
            &to_json("patch policy selection", &p.selection)?,
            &to_json("patch policy exclusions", &p.exclude)?,
            p.approval.as_str(),
            p.auto_approve_after_days,
            p.reboot.as_str(),
            &window,
            p.concurrency,
            p.canary,
            p.max_failure_percent,
            p.timeout_secs,
            by,
            at,
        ],
    )?;
    Ok(updated > 0)
}

/// Whether another policy than `id` has this name.
pub fn name_taken(tx: &mut Tx<'_>, name: &str, id: &str) -> Result<bool> {
    Ok(tx
        .query_opt(
            "SELECT 1 FROM patch_policies WHERE name = $1 AND id <> $2",
            params![name, id],
            |_| Ok(()),
        )?
        .is_some())
}

pub fn delete(tx: &mut Tx<'_>, id: &str) -> Result<bool> {
    Ok(tx.execute("DELETE FROM patch_policies WHERE id = $1", params![id])? > 0)
}

pub fn get(tx: &mut Tx<'_>, id: &str) -> Result<Option<Policy>> {
    tx.query_opt(
        &format!("SELECT {POLICY_COLUMNS} FROM patch_policies WHERE id = $1"),
        params![id],
        policy_from_row,
    )
}

/// Every policy, by name.
pub fn list(tx: &mut Tx<'_>) -> Result<Vec<Policy>> {
    tx.query(
        &format!("SELECT {POLICY_COLUMNS} FROM patch_policies ORDER BY name"),
        params![],
        policy_from_row,
    )
}

/// Where a rollout stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RolloutState {
    Running,
    /// Every run ended and the failures stayed under the threshold.
    Completed,
    /// Stopped: a canary failed or the failures crossed the threshold.
    Stopped,
    Cancelled,
}

impl RolloutState {
    pub fn as_str(self) -> &'static str {
        match self {
            RolloutState::Running => "running",
            RolloutState::Completed => "completed",
            RolloutState::Stopped => "stopped",
            RolloutState::Cancelled => "cancelled",
        }
    }
}

impl std::str::FromStr for RolloutState {
    type Err = crate::UnknownName;
    fn from_str(s: &str) -> Result<RolloutState, crate::UnknownName> {
        match s {
            "running" => Ok(RolloutState::Running),
            "completed" => Ok(RolloutState::Completed),
            "stopped" => Ok(RolloutState::Stopped),
            "cancelled" => Ok(RolloutState::Cancelled),
            other => Err(crate::UnknownName::new("rollout state", other)),
        }
    }
}

/// A run of a policy over its hosts.
#[derive(Debug, Clone, PartialEq)]
pub struct Rollout {
    pub id: String,
    pub policy_id: Option<String>,
    pub policy_name: String,
    /// The window opening it was made for (None: started by hand).
    pub occurrence: Option<Millis>,
    /// Runs not started by then are skipped.
    pub window_end: Option<Millis>,
    pub state: RolloutState,
    pub concurrency: u32,
    pub canary: u32,
    pub max_failure_percent: u32,
    pub policy: serde_json::Value,
    pub requested_by: String,
    pub requested_at: Millis,
    pub finished_at: Option<Millis>,
    pub stop_reason: Option<String>,
}

const ROLLOUT_COLUMNS: &str = "id, policy_id, policy_name, occurrence, window_end, state, concurrency, canary, \
     max_failure_percent, policy, requested_by, requested_at, finished_at, stop_reason";

fn rollout_from_row(row: &Row<'_>) -> Result<Rollout> {
    Ok(Rollout {
        id: row.get(0)?,
        policy_id: row.get(1)?,
        policy_name: row.get(2)?,
        occurrence: row.get(3)?,
        window_end: row.get(4)?,
        state: parse(&row.get::<String>(5)?)?,
        concurrency: row.get(6)?,
        canary: row.get(7)?,
        max_failure_percent: row.get(8)?,
        policy: json(row, 9)?,
        requested_by: row.get(10)?,
        requested_at: row.get(11)?,
        finished_at: row.get(12)?,
        stop_reason: row.get(13)?,
    })
}

/// Stores a new running rollout. False when the policy already has one
/// for this window opening.
pub fn insert_rollout(tx: &mut Tx<'_>, r: &Rollout) -> Result<bool> {
    let inserted = tx.execute(
        &format!(
            "INSERT INTO patch_rollouts ({ROLLOUT_COLUMNS})
             VALUES ($1, $2, $3, $4, $5, 'running', $6, $7, $8, $9, $10, $11, NULL, NULL)
             ON CONFLICT (policy_id, occurrence) DO NOTHING"
        ),
        params![
            &r.id,
            &r.policy_id,
            &r.policy_name,
            r.occurrence,
            r.window_end,
            r.concurrency,
            r.canary,
            r.max_failure_percent,
            &to_json("rollout policy", &r.policy)?,
            &r.requested_by,
            r.requested_at,
        ],
    )?;
    Ok(inserted > 0)
}

/// Whether the policy has a rollout for the window opening `occurrence`.
pub fn has_rollout_for(tx: &mut Tx<'_>, policy_id: &str, occurrence: Millis) -> Result<bool> {
    Ok(tx
        .query_opt(
            "SELECT 1 FROM patch_rollouts WHERE policy_id = $1 AND occurrence = $2",
            params![policy_id, occurrence],
            |_| Ok(()),
        )?
        .is_some())
}

pub fn get_rollout(tx: &mut Tx<'_>, id: &str) -> Result<Option<Rollout>> {
    tx.query_opt(
        &format!("SELECT {ROLLOUT_COLUMNS} FROM patch_rollouts WHERE id = $1"),
        params![id],
        rollout_from_row,
    )
}

/// Rollouts still running, oldest first.
pub fn running_rollouts(tx: &mut Tx<'_>) -> Result<Vec<Rollout>> {
    tx.query(
        &format!(
            "SELECT {ROLLOUT_COLUMNS} FROM patch_rollouts WHERE state = 'running' ORDER BY requested_at, id"
        ),
        params![],
        rollout_from_row,
    )
}

/// The newest rollouts (of one policy, or all), newest first.
pub fn list_rollouts(tx: &mut Tx<'_>, policy_id: Option<&str>, limit: u32) -> Result<Vec<Rollout>> {
    match policy_id {
        Some(policy) => tx.query(
            &format!(
                "SELECT {ROLLOUT_COLUMNS} FROM patch_rollouts WHERE policy_id = $1
                 ORDER BY requested_at DESC, id DESC LIMIT $2"
            ),
            params![policy, limit],
            rollout_from_row,
        ),
        None => tx.query(
            &format!(
                "SELECT {ROLLOUT_COLUMNS} FROM patch_rollouts ORDER BY requested_at DESC, id DESC LIMIT $1"
            ),
            params![limit],
            rollout_from_row,
        ),
    }
}

/// Takes the rollout's row lock (PostgreSQL; SQLite has one writer
/// anyway) so that two replicas advancing it count its active runs one
/// after the other. False when it is not running any more.
pub fn lock_running(tx: &mut Tx<'_>, id: &str) -> Result<bool> {
    let touched = tx.execute(
        "UPDATE patch_rollouts SET state = state WHERE id = $1 AND state = 'running'",
        params![id],
    )?;
    Ok(touched > 0)
}

/// Ends a running rollout. False when it was not running.
pub fn finish_rollout(
    tx: &mut Tx<'_>,
    id: &str,
    state: RolloutState,
    reason: Option<&str>,
    at: Millis,
) -> Result<bool> {
    let updated = tx.execute(
        "UPDATE patch_rollouts SET state = $2, stop_reason = $3, finished_at = $4
         WHERE id = $1 AND state = 'running'",
        params![id, state.as_str(), reason, at],
    )?;
    Ok(updated > 0)
}

/// The hosts a policy targets: its hosts and the hosts of its groups, not
/// revoked, as `(id, hostname, group)`, by hostname.
pub fn policy_hosts(
    tx: &mut Tx<'_>,
    host_ids: &[String],
    group_ids: &[String],
) -> Result<Vec<(String, String, Option<String>)>> {
    let mut out: Vec<(String, String, Option<String>)> = Vec::new();
    for id in host_ids {
        if let Some(h) = tx.query_opt(
            "SELECT id, hostname, host_group_id FROM hosts WHERE id = $1 AND revoked_at IS NULL",
            params![id.as_str()],
            |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?)),
        )? {
            out.push(h);
        }
    }
    for group in group_ids {
        out.extend(tx.query(
            "SELECT id, hostname, host_group_id FROM hosts WHERE host_group_id = $1 AND revoked_at IS NULL",
            params![group.as_str()],
            |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?)),
        )?);
    }
    out.sort_by(|a, b| (&a.1, &a.0).cmp(&(&b.1, &b.0)));
    out.dedup_by(|a, b| a.0 == b.0);
    Ok(out)
}
