//! Patch run queries, and what a command result does to its run.
//!
//! Every state change is a conditional update (`WHERE state = <expected>`),
//! so two replicas or two clicks cannot both move a run: the loser sees
//! that nothing changed.

use palisade_packages::inventory::Manager;

use super::{Approval, NewRun, PatchRun, RunState, Selection, plan_targets};
use crate::audit::{Action, Actor, NewAuditEvent, Outcome};
use crate::commands::{CommandResult, CommandStatus, PackageChange};
use crate::db::value::{json, to_json};
use crate::db::{DbError, Millis, Param, Result, Row, Tx};
use crate::params;

const RUN_COLUMNS: &str = "r.id, r.host_id, r.state, r.selection, r.approval, r.manager, r.requested_by, \
     r.requested_by_user, r.requested_at, r.approved_by, r.approved_at, r.cancelled_by, r.cancelled_at, \
     r.started_at, r.finished_at, r.dry_run_command_id, r.command_id, r.cancel_command_id, r.plan, r.changes, \
     r.exit_code, r.error, r.timeout_secs, r.policy, r.rollout_id, r.rollout_position, r.exclude, \
     r.auto_approve_after_days, r.reboot, r.reboot_state, r.reboot_command_id, r.reboot_required, r.restarts";

/// The state as read: a run waiting for a command that expired before it
/// was delivered (pending past its expiry, or marked expired) reads
/// `agent_offline` (see the module documentation of [`super`]). `$1` is now.
const EFFECTIVE_STATE: &str = "CASE WHEN r.state IN ('planning', 'running') AND c.status IN ('pending', 'expired') \
     AND c.expires_at <= $1 THEN 'agent_offline' ELSE r.state END";

/// The run's current command, joined as `c`.
const CURRENT_COMMAND_JOIN: &str = "LEFT JOIN commands c ON c.id = CASE WHEN r.state = 'planning' \
     THEN r.dry_run_command_id ELSE r.command_id END";

fn parse<T: std::str::FromStr<Err = crate::UnknownName>>(text: &str) -> Result<T> {
    text.parse()
        .map_err(|e: crate::UnknownName| DbError::Corrupt(e.to_string()))
}

fn opt_actor(row: &Row<'_>, idx: usize) -> Result<Option<Actor>> {
    row.get::<Option<String>>(idx)?
        .map(|a| parse::<Actor>(&a))
        .transpose()
}

fn opt_changes(row: &Row<'_>, idx: usize, what: &str) -> Result<Option<Vec<PackageChange>>> {
    row.get::<Option<String>>(idx)?
        .map(|text| {
            serde_json::from_str(&text)
                .map_err(|e| DbError::Corrupt(format!("patch run {what}: {e}")))
        })
        .transpose()
}

/// A run from `RUN_COLUMNS` followed by the effective state.
fn run_from_row(row: &Row<'_>) -> Result<PatchRun> {
    let manager: String = row.get(5)?;
    let state: String = row.get(33)?;
    Ok(PatchRun {
        id: row.get(0)?,
        host_id: row.get(1)?,
        state: parse(&state)?,
        selection: json::<Selection>(row, 3)?,
        approval: parse::<Approval>(&row.get::<String>(4)?)?,
        manager: Manager::from_name(&manager)
            .ok_or_else(|| DbError::Corrupt(format!("package manager {manager:?}")))?,
        requested_by: parse(&row.get::<String>(6)?)?,
        requested_by_user: row.get(7)?,
        requested_at: row.get(8)?,
        approved_by: opt_actor(row, 9)?,
        approved_at: row.get(10)?,
        cancelled_by: opt_actor(row, 11)?,
        cancelled_at: row.get(12)?,
        started_at: row.get(13)?,
        finished_at: row.get(14)?,
        dry_run_command_id: row.get(15)?,
        command_id: row.get(16)?,
        cancel_command_id: row.get(17)?,
        plan: opt_changes(row, 18, "plan")?,
        changes: opt_changes(row, 19, "changes")?,
        exit_code: row.get(20)?,
        error: row.get(21)?,
        timeout_secs: row.get(22)?,
        policy: json(row, 23)?,
        rollout_id: row.get(24)?,
        rollout_position: row.get(25)?,
        exclude: json(row, 26)?,
        auto_approve_after_days: row.get(27)?,
        reboot: parse(&row.get::<String>(28)?)?,
        reboot_state: row
            .get::<Option<String>>(29)?
            .map(|s| parse(&s))
            .transpose()?,
        reboot_command_id: row.get(30)?,
        reboot_required: row.get(31)?,
        restarts: row
            .get::<Option<String>>(32)?
            .map(|text| {
                serde_json::from_str(&text)
                    .map_err(|e| DbError::Corrupt(format!("patch run restarts: {e}")))
            })
            .transpose()?,
    })
}

/// Stores a new run: in `planning` with its dry run, or `queued` in a
/// rollout.
pub fn insert(tx: &mut Tx<'_>, run: &NewRun) -> Result<()> {
    let state = if run.dry_run_command_id.is_some() {
        RunState::Planning
    } else {
        RunState::Queued
    };
    tx.execute(
        "INSERT INTO patch_runs (id, host_id, state, selection, approval, manager, requested_by, requested_by_user,
                                 requested_at, dry_run_command_id, timeout_secs, policy, rollout_id,
                                 rollout_position, exclude, auto_approve_after_days, reboot)
         VALUES ($1, $2, $12, $3, $4, $5, $6, $7, $8, $9, $10, $11, $13, $14, $15, $16, $17)",
        params![
            &run.id,
            &run.host_id,
            &to_json("patch run selection", &run.selection)?,
            run.approval.as_str(),
            run.manager.as_str(),
            &run.requested_by.to_string(),
            run.requested_by_user,
            run.requested_at,
            &run.dry_run_command_id,
            i64::from(run.timeout_secs),
            &to_json("patch run policy", &run.policy)?,
            state.as_str(),
            &run.rollout_id,
            run.rollout_position,
            &to_json("patch run exclusions", &run.exclude)?,
            run.auto_approve_after_days,
            run.reboot.as_str(),
        ],
    )?;
    Ok(())
}

/// The run `id` as it stands at `now`.
pub fn get(tx: &mut Tx<'_>, id: &str, now: Millis) -> Result<Option<PatchRun>> {
    tx.query_opt(
        &format!(
            "SELECT {RUN_COLUMNS}, {EFFECTIVE_STATE} FROM patch_runs r {CURRENT_COMMAND_JOIN} WHERE r.id = $2"
        ),
        params![now, id],
        run_from_row,
    )
}

/// What a run list is limited to.
#[derive(Debug, Clone, Default)]
pub struct RunFilter {
    pub host_id: Option<String>,
    pub state: Option<RunState>,
    /// Only hosts of these groups (None: every host).
    pub groups: Option<Vec<String>>,
    pub limit: u32,
}

/// Runs matching `filter` at `now`, newest first.
pub fn list(tx: &mut Tx<'_>, filter: &RunFilter, now: Millis) -> Result<Vec<PatchRun>> {
    list_requested_since(tx, filter, None, now)
}

/// Runs matching `filter` requested at or after `since` (every run without
/// it), as they stand at `now`, newest first: the patch history of a time
/// window, e.g. the last 90 days.
pub fn list_requested_since(
    tx: &mut Tx<'_>,
    filter: &RunFilter,
    since: Option<Millis>,
    now: Millis,
) -> Result<Vec<PatchRun>> {
    let mut values: Vec<Param<'_>> = vec![now.into()];
    let mut conditions = Vec::new();
    if let Some(since) = since {
        values.push(since.into());
        conditions.push(format!("r.requested_at >= ${}", values.len()));
    }
    if let Some(host) = &filter.host_id {
        values.push(host.as_str().into());
        conditions.push(format!("r.host_id = ${}", values.len()));
    }
    if let Some(state) = filter.state {
        values.push(state.as_str().into());
        conditions.push(format!("{EFFECTIVE_STATE} = ${}", values.len()));
    }
    if let Some(groups) = &filter.groups {
        conditions.push(crate::hosts::store::group_condition(groups, &mut values));
    }
    let filter_sql = if conditions.is_empty() {
        String::new()
    } else {
        format!("WHERE {}", conditions.join(" AND "))
    };
    values.push(filter.limit.into());
    tx.query(
        &format!(
            "SELECT {RUN_COLUMNS}, {EFFECTIVE_STATE} FROM patch_runs r {CURRENT_COMMAND_JOIN}
             JOIN hosts ON hosts.id = r.host_id
             {filter_sql} ORDER BY r.requested_at DESC, r.id DESC LIMIT ${}",
            values.len()
        ),
        &values,
        run_from_row,
    )
}

/// The host's runs approved without a person whose real command is still
/// to be issued.
pub fn approved_for_host(tx: &mut Tx<'_>, host_id: &str, now: Millis) -> Result<Vec<PatchRun>> {
    tx.query(
        &format!(
            "SELECT {RUN_COLUMNS}, {EFFECTIVE_STATE} FROM patch_runs r {CURRENT_COMMAND_JOIN}
             WHERE r.host_id = $2 AND r.state = 'approved' ORDER BY r.requested_at"
        ),
        params![now, host_id],
        run_from_row,
    )
}

/// Moves the run from `from` to `running` with its real command, recording
/// the approver when a person approved. False when the run was not in
/// `from` (someone else moved it first).
pub fn start(
    tx: &mut Tx<'_>,
    id: &str,
    from: RunState,
    command_id: &str,
    approved: Option<(&Actor, Millis)>,
) -> Result<bool> {
    let (by, at) = match approved {
        Some((actor, at)) => (Some(actor.to_string()), Some(at)),
        None => (None, None),
    };
    let updated = tx.execute(
        "UPDATE patch_runs SET state = 'running', command_id = $3,
                               approved_by = COALESCE($4, approved_by), approved_at = COALESCE($5, approved_at)
         WHERE id = $1 AND state = $2",
        params![id, from.as_str(), command_id, &by, at],
    )?;
    Ok(updated > 0)
}

/// Ends a run that has no upgrade running (planning, awaiting approval,
/// approved, or waiting for an offline agent) as cancelled. False when it
/// is past that.
pub fn cancel_now(tx: &mut Tx<'_>, id: &str, by: &Actor, at: Millis) -> Result<bool> {
    // A run waiting for an offline agent is stored as planning or running;
    // a running one is cancelled here only when its command never went out.
    let updated = tx.execute(
        "UPDATE patch_runs SET state = 'cancelled', cancelled_by = $2, cancelled_at = $3
         WHERE id = $1 AND (state IN ('planning', 'awaiting_approval', 'approved')
               OR (state = 'running' AND EXISTS (
                   SELECT 1 FROM commands c WHERE c.id = patch_runs.command_id
                   AND c.status IN ('pending', 'expired') AND c.expires_at <= $3)))",
        params![id, &by.to_string(), at],
    )?;
    Ok(updated > 0)
}

/// Records that a running run is being cancelled by command
/// `cancel_command_id`. False when it is not running or already being
/// cancelled.
pub fn cancel_requested(
    tx: &mut Tx<'_>,
    id: &str,
    cancel_command_id: &str,
    by: &Actor,
    at: Millis,
) -> Result<bool> {
    let updated = tx.execute(
        "UPDATE patch_runs SET cancel_command_id = $2, cancelled_by = $3, cancelled_at = $4
         WHERE id = $1 AND state = 'running' AND cancel_command_id IS NULL",
        params![id, cancel_command_id, &by.to_string(), at],
    )?;
    Ok(updated > 0)
}

/// What a command's result does to the run waiting for it, if any: a dry
/// run's result becomes the plan; the real run's result ends the run.
/// Called in the transaction that stores the result, once per command (the
/// first result only). A result for a run that moved on (cancelled while
/// planning) changes nothing.
pub fn on_command_result(
    tx: &mut Tx<'_>,
    host_id: &str,
    received_at: Millis,
    result: &CommandResult,
) -> Result<()> {
    let found: Option<(String, String, Approval)> = tx.query_opt(
        "SELECT id, CASE WHEN dry_run_command_id = $1 THEN 'dry_run' ELSE 'run' END, approval
         FROM patch_runs
         WHERE host_id = $2 AND ((dry_run_command_id = $1 AND state = 'planning')
                                 OR (command_id = $1 AND state = 'running'))",
        params![&result.command_id, host_id],
        |row| Ok((row.get(0)?, row.get(1)?, parse(&row.get::<String>(2)?)?)),
    )?;
    let Some((run_id, which, approval)) = found else {
        return Ok(());
    };
    let error = result_error(result);
    let changes = to_json("patch run changes", &result.changes)?;
    let state = if which == "dry_run" {
        let state = match result.status {
            CommandStatus::Succeeded if plan_targets(&result.changes).is_empty() => {
                RunState::NothingToDo
            }
            CommandStatus::Succeeded if approval == Approval::None => RunState::Approved,
            CommandStatus::Succeeded => RunState::AwaitingApproval,
            CommandStatus::Cancelled => RunState::Cancelled,
            _ => RunState::Failed,
        };
        tx.execute(
            "UPDATE patch_runs SET state = $2, plan = $3, exit_code = $4, error = $5 WHERE id = $1",
            params![&run_id, state.as_str(), &changes, result.exit_code, &error],
        )?;
        state
    } else {
        let state = match result.status {
            CommandStatus::Succeeded => RunState::Succeeded,
            CommandStatus::TimedOut => RunState::TimedOut,
            CommandStatus::Cancelled => RunState::Cancelled,
            _ => RunState::Failed,
        };
        // What the host said after the upgrade (stored with the command's
        // result just before this) decides whether it reboots.
        tx.execute(
            "UPDATE patch_runs SET state = $2, changes = $3, exit_code = $4, error = $5, started_at = $6,
                                   finished_at = $7,
                                   reboot_required = (SELECT c.reboot_required FROM commands c WHERE c.id = $8),
                                   restarts = (SELECT c.restarts FROM commands c WHERE c.id = $8)
             WHERE id = $1",
            params![
                &run_id,
                state.as_str(),
                &changes,
                result.exit_code,
                &error,
                result.started_at,
                result.finished_at,
                &result.command_id,
            ],
        )?;
        if state == RunState::Succeeded {
            tx.execute(
                "UPDATE patch_runs SET reboot_state = CASE
                     WHEN reboot = 'always' THEN 'due'
                     WHEN reboot = 'if_required' AND reboot_required THEN 'due'
                     WHEN reboot = 'if_required' THEN 'not_needed'
                     ELSE NULL END
                 WHERE id = $1",
                params![&run_id],
            )?;
        }
        state
    };
    tracing::info!(patch_run_id = %run_id, host_id, state = state.as_str(), "patch run moved on a command result");
    if state.is_final() {
        let outcome = match state {
            RunState::Succeeded | RunState::NothingToDo => Outcome::Success,
            _ => Outcome::Failure,
        };
        let event = NewAuditEvent::new(
            received_at,
            Actor::Agent(host_id.to_owned()),
            Action::PatchRunFinish,
            outcome,
        )
        .target(host_id)
        .details(serde_json::json!({
            "patch_run_id": run_id,
            "command_id": result.command_id,
            "state": state.as_str(),
            "changes": result.changes.len(),
            "exit_code": result.exit_code,
            "error": error,
        }));
        crate::audit::store::append(tx, &event)?;
    }
    Ok(())
}

/// The error a run records for a result: the agent's, or a sentence for
/// a status that came without one.
fn result_error(result: &CommandResult) -> Option<String> {
    if let Some(error) = result.error.clone().filter(|e| !e.is_empty()) {
        return Some(error);
    }
    match result.status {
        CommandStatus::Succeeded => None,
        CommandStatus::TimedOut => Some("stopped: it ran past its timeout".to_owned()),
        CommandStatus::Cancelled => Some("stopped: cancelled".to_owned()),
        CommandStatus::Rejected => Some("the agent refused the command".to_owned()),
        _ => Some(format!(
            "the package manager failed (exit code {})",
            result.exit_code
        )),
    }
}

/// The runs of a rollout as they stand at `now`, in rollout order.
pub fn rollout_runs(tx: &mut Tx<'_>, rollout_id: &str, now: Millis) -> Result<Vec<PatchRun>> {
    tx.query(
        &format!(
            "SELECT {RUN_COLUMNS}, {EFFECTIVE_STATE} FROM patch_runs r {CURRENT_COMMAND_JOIN}
             WHERE r.rollout_id = $2 ORDER BY r.rollout_position, r.id"
        ),
        params![now, rollout_id],
        run_from_row,
    )
}

/// Moves a queued run to `planning` with its dry run. False when it is no
/// longer queued.
pub fn begin_planning(tx: &mut Tx<'_>, id: &str, dry_run_command_id: &str) -> Result<bool> {
    let updated = tx.execute(
        "UPDATE patch_runs SET state = 'planning', dry_run_command_id = $2 WHERE id = $1 AND state = 'queued'",
        params![id, dry_run_command_id],
    )?;
    Ok(updated > 0)
}

/// Ends a queued run without starting it (`skipped` or `nothing_to_do`),
/// with the reason. False when it is no longer queued.
pub fn end_queued(tx: &mut Tx<'_>, id: &str, state: RunState, reason: &str) -> Result<bool> {
    let updated = tx.execute(
        "UPDATE patch_runs SET state = $2, error = $3 WHERE id = $1 AND state = 'queued'",
        params![id, state.as_str(), reason],
    )?;
    Ok(updated > 0)
}

/// Skips every queued run of a rollout, with the reason. Returns how many.
pub fn skip_queued(tx: &mut Tx<'_>, rollout_id: &str, reason: &str) -> Result<u64> {
    let updated = tx.execute(
        "UPDATE patch_runs SET state = 'skipped', error = $2 WHERE rollout_id = $1 AND state = 'queued'",
        params![rollout_id, reason],
    )?;
    Ok(updated)
}

/// Runs whose reboot is due: `(run id, host id)`, oldest first.
pub fn reboots_due(tx: &mut Tx<'_>, limit: u32) -> Result<Vec<(String, String)>> {
    tx.query(
        "SELECT id, host_id FROM patch_runs WHERE reboot_state = 'due' ORDER BY requested_at LIMIT $1",
        params![limit],
        |row| Ok((row.get(0)?, row.get(1)?)),
    )
}

/// Records the reboot command of a run whose reboot was due. False when
/// it was not due any more (another replica issued it).
pub fn reboot_issued(tx: &mut Tx<'_>, id: &str, command_id: &str) -> Result<bool> {
    let updated = tx.execute(
        "UPDATE patch_runs SET reboot_state = 'issued', reboot_command_id = $2
         WHERE id = $1 AND reboot_state = 'due'",
        params![id, command_id],
    )?;
    Ok(updated > 0)
}
