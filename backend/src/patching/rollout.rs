//! Rollouts: a patch policy run over many hosts, canaries first, a few at a
//! time, stopped when too many fail; the scheduler that starts one per
//! maintenance window; and the reboots runs ask for.
//!
//! A rollout's runs are created `queued`, one per host, in hostname order;
//! the first `canary` of them are the canaries. Every [`TICK`] each replica
//! runs [`tick`]:
//! 1. [`schedule`]: for each enabled policy with a window open now, make
//!    the rollout of that opening (once across replicas: see
//!    [`policy_store`]);
//! 2. [`advance`]: for each running rollout, [`decide`] what happens next
//!    and do it: start queued runs (a dry run each; the run then goes
//!    through approval or straight on, as its policy says), stop, complete;
//! 3. [`issue_reboots`]: a run that succeeded and whose reboot policy asks
//!    for one (always, or if the host said it needs one) gets a typed,
//!    signed `reboot` command.
//!
//! Rules ([`decide`]):
//! - Active runs (planning, awaiting approval, approved, running, and
//!   succeeded ones whose reboot is due or not yet answered) take the
//!   `concurrency` slots; runs awaiting approval hold theirs.
//! - Until every canary has ended (its reboot included), only canaries
//!   start. A failed canary stops the rollout.
//! - A run counts as failed when it failed, timed out, its agent stayed
//!   offline, or its reboot command failed. The rollout stops when more
//!   than `max_failure_percent` of all its hosts failed (0: the first
//!   failure stops it).
//! - Stopping skips the queued runs; runs already going continue and end
//!   on their own (cancel them one by one, or cancel the rollout).
//! - When the window closes, queued runs are skipped; the rollout completes
//!   once the rest ended.

use std::time::Duration;

use palisade_proto::msg::CommandAction;

use super::policy::Policy;
use super::policy_store::{self, Rollout, RolloutState};
use super::{
    NewRun, PatchRun, PlanError, PlanFilter, RebootState, RunState, store, upgrade_request,
};
use crate::audit::Actor;
use crate::commands::{self, CommandRequest, Requester};
use crate::db::{Millis, Result, Tx, params};
use crate::state::AppState;

/// How often each replica looks at schedules, rollouts and reboots.
pub const TICK: Duration = Duration::from_secs(5);
/// Minutes between a reboot command's arrival and the reboot (users are
/// warned meanwhile).
pub const REBOOT_DELAY_MINUTES: u32 = 1;

/// A run as the decision needs it.
#[derive(Debug, Clone, PartialEq)]
pub struct RunView {
    pub id: String,
    pub host_id: String,
    pub state: RunState,
    pub canary: bool,
    /// Succeeded, and its reboot is due or its reboot command has not
    /// answered yet.
    pub reboot_pending: bool,
    /// Its reboot command failed, was refused or expired.
    pub reboot_failed: bool,
}

impl RunView {
    fn failed(&self) -> bool {
        self.reboot_failed
            || matches!(
                self.state,
                RunState::Failed | RunState::TimedOut | RunState::AgentOffline
            )
    }

    fn active(&self) -> bool {
        self.reboot_pending
            || matches!(
                self.state,
                RunState::Planning
                    | RunState::AwaitingApproval
                    | RunState::Approved
                    | RunState::Running
            )
    }

    fn ended(&self) -> bool {
        self.state.is_final() && !self.reboot_pending
    }
}

/// What [`decide`] says to do with a running rollout.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Decision {
    /// Queued runs to start now, in order.
    pub start: Vec<String>,
    /// Skip every queued run, for this reason.
    pub skip_queued: Option<String>,
    /// End the rollout.
    pub finish: Option<(RolloutState, Option<String>)>,
}

/// What happens next to a running rollout whose runs are `runs` (in
/// rollout order), at `now`. Pure: see the module for the rules.
pub fn decide(rollout: &Rollout, runs: &[RunView], now: Millis) -> Decision {
    let total = runs.len();
    let failed: Vec<&RunView> = runs.iter().filter(|r| r.failed()).collect();
    if let Some(canary) = runs.iter().find(|r| r.canary && r.failed()) {
        let what = if canary.reboot_failed {
            "its reboot failed".to_owned()
        } else {
            format!("its run ended {}", canary.state.as_str())
        };
        let reason = format!(
            "canary host {} failed ({what}); the other hosts were not patched",
            canary.host_id
        );
        return stop(reason);
    }
    let threshold = u64::from(rollout.max_failure_percent);
    if !failed.is_empty() && (failed.len() as u64) * 100 > threshold * (total as u64) {
        return stop(format!(
            "{} of {} hosts failed, more than the {}% the policy allows",
            failed.len(),
            total,
            rollout.max_failure_percent
        ));
    }
    let queued: Vec<&RunView> = runs
        .iter()
        .filter(|r| r.state == RunState::Queued)
        .collect();
    let active = runs.iter().filter(|r| r.active()).count();
    let mut decision = Decision::default();
    if rollout.window_end.is_some_and(|end| now >= end) && !queued.is_empty() {
        decision.skip_queued = Some("the maintenance window closed before its turn".to_owned());
        if active == 0 {
            decision.finish = Some((
                RolloutState::Completed,
                Some(format!(
                    "the maintenance window closed; {} hosts were not patched",
                    queued.len()
                )),
            ));
        }
        return decision;
    }
    if queued.is_empty() {
        if runs.iter().all(RunView::ended) {
            decision.finish = Some((RolloutState::Completed, None));
        }
        return decision;
    }
    let canaries_done = runs.iter().filter(|r| r.canary).all(RunView::ended);
    let room = (rollout.concurrency as usize).saturating_sub(active);
    decision.start = queued
        .iter()
        .filter(|r| canaries_done || r.canary)
        .take(room)
        .map(|r| r.id.clone())
        .collect();
    decision
}

fn stop(reason: String) -> Decision {
    Decision {
        start: Vec::new(),
        skip_queued: Some(format!("the rollout stopped: {reason}")),
        finish: Some((RolloutState::Stopped, Some(reason))),
    }
}

/// A command's status and expiry, when it exists.
fn command_state(tx: &mut Tx<'_>, id: &str) -> Result<Option<(String, Millis)>> {
    tx.query_opt(
        "SELECT status, expires_at FROM commands WHERE id = $1",
        params![id],
        |row| Ok((row.get(0)?, row.get(1)?)),
    )
}

/// The decision's view of a rollout's runs.
pub fn views(
    tx: &mut Tx<'_>,
    rollout: &Rollout,
    runs: &[PatchRun],
    now: Millis,
) -> Result<Vec<RunView>> {
    let mut out = Vec::with_capacity(runs.len());
    for run in runs {
        let (mut reboot_pending, mut reboot_failed) = (false, false);
        match run.reboot_state {
            Some(RebootState::Due) => reboot_pending = true,
            Some(RebootState::Issued) => {
                if let Some(id) = &run.reboot_command_id {
                    match command_state(tx, id)? {
                        Some((status, expires)) => match status.as_str() {
                            "succeeded" => {}
                            "pending" if expires <= now => reboot_failed = true,
                            "pending" | "delivered" => reboot_pending = true,
                            _ => reboot_failed = true,
                        },
                        None => reboot_failed = true,
                    }
                }
            }
            Some(RebootState::NotNeeded) | None => {}
        }
        out.push(RunView {
            id: run.id.clone(),
            host_id: run.host_id.clone(),
            state: run.state,
            canary: run.rollout_position.is_some_and(|p| p < rollout.canary),
            reboot_pending,
            reboot_failed,
        });
    }
    Ok(out)
}

/// Makes a rollout of `policy` over its hosts: one queued run per host
/// with an inventory (hosts without one are listed in the rollout's
/// record). `occurrence`/`window_end` for a scheduled one. Returns the
/// rollout id, or None when this window's rollout exists already.
pub fn create(
    tx: &mut Tx<'_>,
    policy: &Policy,
    window: Option<(Millis, Millis)>,
    requested_by: &Actor,
    requested_by_user: Option<i64>,
    now: Millis,
) -> Result<Option<String>> {
    let hosts = policy_store::policy_hosts(tx, &policy.host_ids, &policy.group_ids)?;
    let mut planned = Vec::new();
    let mut without_inventory = Vec::new();
    for (host_id, hostname, _) in hosts {
        let manager: Option<String> = tx.query_opt(
            "SELECT manager FROM host_inventories WHERE host_id = $1",
            params![host_id.as_str()],
            |row| row.get(0),
        )?;
        match manager.and_then(|m| palisade_packages::inventory::Manager::from_name(&m)) {
            Some(manager) => planned.push((host_id, manager)),
            None => without_inventory.push(hostname),
        }
    }
    let mut snapshot = policy.snapshot();
    if let Some(object) = snapshot.as_object_mut() {
        object.insert(
            "hosts_without_inventory".into(),
            serde_json::json!(without_inventory),
        );
    }
    let rollout = Rollout {
        id: uuid::Uuid::new_v4().to_string(),
        policy_id: Some(policy.id.clone()),
        policy_name: policy.name.clone(),
        occurrence: window.map(|w| w.0),
        window_end: window.map(|w| w.1),
        state: RolloutState::Running,
        concurrency: policy.concurrency,
        canary: policy.canary,
        max_failure_percent: policy.max_failure_percent,
        policy: snapshot.clone(),
        requested_by: requested_by.to_string(),
        requested_at: now,
        finished_at: None,
        stop_reason: None,
    };
    if !policy_store::insert_rollout(tx, &rollout)? {
        return Ok(None);
    }
    for (position, (host_id, manager)) in planned.into_iter().enumerate() {
        store::insert(
            tx,
            &NewRun {
                id: uuid::Uuid::new_v4().to_string(),
                host_id,
                selection: policy.selection.clone(),
                approval: policy.run_approval(),
                manager,
                requested_by: requested_by.clone(),
                requested_by_user,
                requested_at: now,
                dry_run_command_id: None,
                timeout_secs: policy.timeout_secs,
                policy: snapshot.clone(),
                rollout_id: Some(rollout.id.clone()),
                rollout_position: Some(u32::try_from(position).unwrap_or(u32::MAX)),
                exclude: policy.exclude.clone(),
                auto_approve_after_days: policy.auto_approve_after_days,
                reboot: policy.reboot,
            },
        )?;
    }
    Ok(Some(rollout.id))
}

/// Starts the rollout of every enabled policy whose window is open at
/// `now` and has none yet. Returns the rollouts made.
pub async fn schedule(state: &AppState, now: Millis) -> Result<Vec<String>> {
    // Read first: most ticks find no window opening without its rollout,
    // and then take no write transaction.
    let due: Vec<(Policy, (Millis, Millis))> = state
        .db
        .read("patch windows open now", move |tx| {
            let mut due = Vec::new();
            for policy in policy_store::list(tx)? {
                let Some(window) = policy.window.as_ref().filter(|_| policy.enabled) else {
                    continue;
                };
                let Ok(schedule) = window.schedule() else {
                    tracing::warn!(policy = %policy.name, "patch policy with an unusable window");
                    continue;
                };
                let Some(open) = schedule.open_at(now) else {
                    continue;
                };
                if !policy_store::has_rollout_for(tx, &policy.id, open.0)? {
                    due.push((policy, open));
                }
            }
            Ok(due)
        })
        .await?;
    if due.is_empty() {
        return Ok(Vec::new());
    }
    state
        .db
        .write("schedule patch rollouts", move |tx| {
            let mut made = Vec::new();
            for (policy, open) in &due {
                if let Some(id) = create(tx, policy, Some(*open), &Actor::System, None, now)? {
                    tracing::info!(policy = %policy.name, rollout_id = %id, "maintenance window opened: rollout started");
                    made.push(id);
                }
            }
            Ok(made)
        })
        .await
}

/// Advances every running rollout one step.
pub async fn advance(state: &AppState, now: Millis) -> Result<()> {
    let rollouts = state
        .db
        .read("running rollouts", policy_store::running_rollouts)
        .await?;
    for rollout in rollouts {
        if let Err(e) = advance_one(state, &rollout, now).await {
            tracing::error!(rollout_id = %rollout.id, error = %e, "cannot advance a rollout");
        }
    }
    Ok(())
}

async fn advance_one(state: &AppState, rollout: &Rollout, now: Millis) -> Result<()> {
    let r = rollout.clone();
    let (runs, views) = state
        .db
        .read("rollout runs", move |tx| {
            let runs = store::rollout_runs(tx, &r.id, now)?;
            let views = views(tx, &r, &runs, now)?;
            Ok((runs, views))
        })
        .await?;
    let decision = decide(rollout, &views, now);
    if decision.skip_queued.is_some() || decision.finish.is_some() {
        let id = rollout.id.clone();
        let d = decision.clone();
        state
            .db
            .write("end rollout", move |tx| {
                if let Some(reason) = &d.skip_queued {
                    store::skip_queued(tx, &id, reason)?;
                }
                if let Some((end, reason)) = &d.finish
                    && policy_store::finish_rollout(tx, &id, *end, reason.as_deref(), now)?
                {
                    tracing::info!(rollout_id = %id, state = end.as_str(), reason = ?reason, "rollout ended");
                }
                Ok(())
            })
            .await?;
    }
    for run_id in &decision.start {
        if let Some(run) = runs.iter().find(|r| &r.id == run_id) {
            plan_queued(state, rollout, run, now).await?;
        }
    }
    Ok(())
}

/// Starts a queued run: plans its dry run from the host's inventory (the
/// run's exclusions and approval delay applied) and issues it, if the
/// rollout still has a free slot once its row is locked.
async fn plan_queued(
    state: &AppState,
    rollout: &Rollout,
    run: &PatchRun,
    now: Millis,
) -> Result<()> {
    let host_id = run.host_id.clone();
    let (host, inventory, seen) = state
        .db
        .read("plan queued run", move |tx| {
            let host = crate::hosts::store::get(tx, &host_id)?;
            let inventory = crate::packages::store::load(tx, &host_id)?;
            let seen = crate::packages::store::first_seen(tx, &host_id)?;
            Ok((host, inventory, seen))
        })
        .await?;
    let unplannable = match (&host, &inventory) {
        (None, _) => Some((RunState::Skipped, "the host was deleted".to_owned())),
        (Some(h), _) if h.revoked_at.is_some() => {
            Some((RunState::Skipped, "the host is revoked".to_owned()))
        }
        (_, None) => Some((
            RunState::Skipped,
            "the host has not reported a package inventory".to_owned(),
        )),
        _ => None,
    };
    let planned = match (&unplannable, &inventory) {
        (None, Some(held)) => {
            let cutoff = run
                .auto_approve_after_days
                .map(|days| (now - Millis::from(days) * 86_400_000, &seen));
            let filter = PlanFilter {
                exclude: &run.exclude,
                offered_by: cutoff,
            };
            match super::dry_run_targets(&run.selection, &held.inventory, filter) {
                Ok(targets) => Ok(targets),
                Err(e @ (PlanError::NothingSelected | PlanError::NoSecurityUpdates)) => {
                    Err((RunState::NothingToDo, e.to_string()))
                }
                Err(PlanError::BadPackage(m)) => Err((RunState::Skipped, m)),
            }
        }
        _ => Err(unplannable.unwrap_or((RunState::Skipped, "cannot plan".to_owned()))),
    };
    let run_id = run.id.clone();
    let (all, targets) = match planned {
        Ok(t) => t,
        Err((end, reason)) => {
            state
                .db
                .write("end queued run", move |tx| {
                    store::end_queued(tx, &run_id, end, &reason).map(|_| ())
                })
                .await?;
            return Ok(());
        }
    };
    let dry_run = upgrade_request(run.manager, all, targets, true, run.timeout_secs);
    let requester = Requester {
        actor: run.requested_by.clone(),
        source_ip: None,
        user_agent: None,
        request_id: format!("patch-rollout:{}", rollout.id),
    };
    let prepared = commands::prepare(&state.pki, &run.host_id, &dry_run, requester, now);
    let rollout_id = rollout.id.clone();
    let concurrency = i64::from(rollout.concurrency);
    let row = state
        .db
        .write("start queued run", move |tx| {
            if !policy_store::lock_running(tx, &rollout_id)? {
                return Ok(None);
            }
            let active: i64 = tx.query_one(
                "SELECT COUNT(*) FROM patch_runs WHERE rollout_id = $1
                   AND (state IN ('planning', 'awaiting_approval', 'approved', 'running')
                        OR (state = 'succeeded' AND (reboot_state = 'due'
                            OR (reboot_state = 'issued' AND EXISTS (
                                SELECT 1 FROM commands c WHERE c.id = patch_runs.reboot_command_id
                                  AND (c.status = 'delivered' OR (c.status = 'pending' AND c.expires_at > $2)))))))",
                params![rollout_id.as_str(), now],
                |row| row.get(0),
            )?;
            if active >= concurrency {
                return Ok(None);
            }
            if !store::begin_planning(tx, &run_id, &prepared.command.id)? {
                return Ok(None);
            }
            commands::store_prepared(tx, &prepared).map(Some)
        })
        .await?;
    if let Some(row) = row {
        tracing::info!(patch_run_id = %run.id, rollout_id = %rollout.id, "rollout run started");
        commands::hand_over(state, row, now).await?;
    }
    Ok(())
}

/// Issues the reboot of every run whose reboot is due.
pub async fn issue_reboots(state: &AppState, now: Millis) -> Result<()> {
    let due = state
        .db
        .read("reboots due", |tx| store::reboots_due(tx, 100))
        .await?;
    for (run_id, host_id) in due {
        let request = CommandRequest {
            action: CommandAction::Reboot {
                delay_minutes: REBOOT_DELAY_MINUTES,
                message: format!("Palisade: rebooting to finish patch run {run_id}"),
            },
            expires_in_secs: super::COMMAND_EXPIRES_IN_SECS,
        };
        let requester = Requester {
            actor: Actor::System,
            source_ip: None,
            user_agent: None,
            request_id: format!("patch-run:{run_id}"),
        };
        let prepared = commands::prepare(&state.pki, &host_id, &request, requester, now);
        let id = run_id.clone();
        let row = state
            .db
            .write("issue patch run reboot", move |tx| {
                if !store::reboot_issued(tx, &id, &prepared.command.id)? {
                    return Ok(None);
                }
                commands::store_prepared(tx, &prepared).map(Some)
            })
            .await?;
        if let Some(row) = row {
            tracing::info!(patch_run_id = %run_id, host_id, command_id = %row.id, "reboot issued after a patch run");
            commands::hand_over(state, row, now).await?;
        }
    }
    Ok(())
}

/// One turn of the scheduler: windows, rollouts, reboots.
pub async fn tick(state: &AppState, now: Millis) {
    if let Err(e) = schedule(state, now).await {
        tracing::warn!(error = %e, "cannot schedule patch rollouts");
    }
    if let Err(e) = advance(state, now).await {
        tracing::warn!(error = %e, "cannot advance patch rollouts");
    }
    if let Err(e) = issue_reboots(state, now).await {
        tracing::warn!(error = %e, "cannot issue patch run reboots");
    }
}

/// Ticks forever, every [`TICK`].
pub async fn run(state: AppState) {
    let mut every = tokio::time::interval(TICK);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        every.tick().await;
        tick(&state, crate::now_millis()).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rollout(concurrency: u32, canary: u32, max_failure_percent: u32) -> Rollout {
        Rollout {
            id: "r".into(),
            policy_id: Some("p".into()),
            policy_name: "p".into(),
            occurrence: None,
            window_end: None,
            state: RolloutState::Running,
            concurrency,
            canary,
            max_failure_percent,
            policy: serde_json::Value::Null,
            requested_by: "system".into(),
            requested_at: 0,
            finished_at: None,
            stop_reason: None,
        }
    }

    fn runs(states: &[RunState], canary: usize) -> Vec<RunView> {
        states
            .iter()
            .enumerate()
            .map(|(i, &state)| RunView {
                id: format!("run{i}"),
                host_id: format!("host{i}"),
                state,
                canary: i < canary,
                reboot_pending: false,
                reboot_failed: false,
            })
            .collect()
    }

    use RunState::*;

    #[test]
    fn canaries_go_first_and_alone() {
        let r = rollout(3, 1, 50);
        let v = runs(&[Queued, Queued, Queued, Queued], 1);
        assert_eq!(decide(&r, &v, 0).start, vec!["run0"]);
        let v = runs(&[Running, Queued, Queued, Queued], 1);
        assert!(
            decide(&r, &v, 0).start.is_empty(),
            "others wait for the canary"
        );
        let v = runs(&[Succeeded, Queued, Queued, Queued], 1);
        assert_eq!(decide(&r, &v, 0).start, vec!["run1", "run2", "run3"]);
        // A canary awaiting approval holds the others back too.
        let v = runs(&[AwaitingApproval, Queued], 1);
        assert!(decide(&r, &v, 0).start.is_empty());
        // A canary whose reboot has not answered yet has not ended.
        let mut v = runs(&[Succeeded, Queued], 1);
        v[0].reboot_pending = true;
        assert!(decide(&r, &v, 0).start.is_empty());
    }

    #[test]
    fn a_failed_canary_stops_everything() {
        let r = rollout(3, 2, 100);
        let v = runs(&[Succeeded, Failed, Queued, Queued], 2);
        let d = decide(&r, &v, 0);
        assert!(d.start.is_empty());
        assert!(
            matches!(d.finish, Some((RolloutState::Stopped, Some(ref m))) if m.contains("host1"))
        );
        assert!(d.skip_queued.is_some());
        let mut v = runs(&[Succeeded, Queued], 1);
        v[0].reboot_failed = true;
        let d = decide(&r, &v, 0);
        assert!(
            matches!(d.finish, Some((RolloutState::Stopped, Some(ref m))) if m.contains("reboot"))
        );
    }

    #[test]
    fn concurrency_limits_active_runs() {
        let r = rollout(2, 0, 100);
        let v = runs(&[Running, Queued, Queued, Queued], 0);
        assert_eq!(decide(&r, &v, 0).start, vec!["run1"]);
        let v = runs(&[Running, AwaitingApproval, Queued], 0);
        assert!(decide(&r, &v, 0).start.is_empty());
        let v = runs(&[Succeeded, NothingToDo, Queued, Queued, Queued], 0);
        assert_eq!(decide(&r, &v, 0).start, vec!["run2", "run3"]);
    }

    #[test]
    fn the_failure_threshold_counts_against_all_hosts() {
        // 10 hosts, 20% allowed: two failures go on, the third stops it.
        let r = rollout(10, 0, 20);
        let mut states = vec![Failed, TimedOut];
        states.extend([Queued; 8]);
        let d = decide(&r, &runs(&states, 0), 0);
        assert!(d.finish.is_none());
        assert_eq!(d.start.len(), 8);
        let mut states = vec![Failed, TimedOut, AgentOffline];
        states.extend([Queued; 7]);
        let d = decide(&r, &runs(&states, 0), 0);
        assert!(
            matches!(d.finish, Some((RolloutState::Stopped, Some(ref m))) if m.contains("3 of 10"))
        );
        // 0%: the first failure stops it.
        let r = rollout(10, 0, 0);
        let d = decide(&r, &runs(&[Failed, Queued], 0), 0);
        assert!(matches!(d.finish, Some((RolloutState::Stopped, _))));
        // Cancelled and nothing-to-do runs are no failures.
        let d = decide(&r, &runs(&[Cancelled, NothingToDo, Skipped], 0), 0);
        assert_eq!(d.finish, Some((RolloutState::Completed, None)));
    }

    #[test]
    fn the_window_closing_skips_what_did_not_start() {
        let mut r = rollout(1, 0, 100);
        r.window_end = Some(1000);
        let v = runs(&[Running, Queued, Queued], 0);
        let d = decide(&r, &v, 1000);
        assert!(d.start.is_empty());
        assert!(d.skip_queued.is_some());
        assert!(d.finish.is_none(), "the running one still ends on its own");
        let v = runs(&[Succeeded, Queued], 0);
        let d = decide(&r, &v, 1000);
        assert!(
            matches!(d.finish, Some((RolloutState::Completed, Some(ref m))) if m.contains("1 hosts"))
        );
        // Before the end, business as usual.
        assert_eq!(decide(&r, &runs(&[Queued], 0), 999).start, vec!["run0"]);
    }

    #[test]
    fn completes_when_everything_ended() {
        let r = rollout(5, 0, 100);
        let d = decide(&r, &runs(&[Succeeded, Running], 0), 0);
        assert_eq!(d, Decision::default());
        let d = decide(&r, &runs(&[Succeeded, Succeeded], 0), 0);
        assert_eq!(d.finish, Some((RolloutState::Completed, None)));
        assert_eq!(
            decide(&r, &[], 0).finish,
            Some((RolloutState::Completed, None))
        );
    }
}
