//! Patch runs: upgrading a host's packages with a dry run, an approval,
//! live output and a permanent record of what changed.
//!
//! - this file: the model ([`PatchRun`], [`RunState`], [`Selection`],
//!   [`Approval`]), request parsing and the flow (create, approve, cancel,
//!   start what was approved);
//! - [`store`]: the queries, including what a command result does to its run;
//! - [`api`]: `/api/v1/patch-runs` (JSON) and the `/patch-runs` pages;
//! - [`refresh`]: asking connected hosts to refresh stale package indexes.
//!
//! The flow: creating a run issues a dry-run `upgrade_packages` command
//! (`planning`). Its result, applied in the transaction that stores it,
//! becomes the run's plan (`awaiting_approval`, or `nothing_to_do` when
//! empty). Approving issues the real command with exactly the plan's
//! packages pinned to the plan's versions (`running`): what was approved is
//! what runs. The real result ends the run (`succeeded`, `failed`,
//! `timed_out`, `cancelled`) with the before/after of every package.
//!
//! With approval `none` the dry run's result moves the run to `approved`
//! instead; the real command is signed and issued right after that
//! transaction commits ([`start_approved`], called by the uplink after each
//! batch of records and when the agent connects), because signing needs
//! the backend's key, which the record-storing transaction does not hold.
//!
//! `agent_offline` is never stored: a run whose current command (dry run or
//! real) expired before it was delivered *reads* as `agent_offline`
//! ([`store`] computes it in the query, so lists filter by it too). Reading
//! it is exact at any moment, needs no timer on any replica, and a result
//! that still arrives late for that command is applied as usual.

use palisade_packages::inventory::{Inventory, Manager, Status};
use palisade_proto::msg::CommandAction;
use palisade_proto::upgrade::{MAX_TARGETS, MAX_UPGRADE_TIMEOUT, Target, Upgrade, check_name};
use serde::{Deserialize, Serialize};

use crate::access::{Caller, Permission};
use crate::audit::{Action, Actor, Outcome};
use crate::commands::{self, CommandRequest, PackageChange, Requester};
use crate::db::{DbError, Millis};
use crate::state::AppState;
use crate::web::WebError;

pub mod api;
pub mod policy;
pub mod policy_api;
pub mod policy_store;
pub mod refresh;
pub mod rollout;
pub mod store;

pub use policy::{NamePattern, RebootPolicy};

/// Where a run stands. Stored as the lowercase name (except
/// `agent_offline`, which is only ever read).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunState {
    /// In a rollout, waiting for its turn (canaries, concurrency).
    Queued,
    /// The dry run was issued; no plan yet.
    Planning,
    /// The plan is in; someone must approve it.
    AwaitingApproval,
    /// Approved without a person (approval `none`); the real command is
    /// being issued.
    Approved,
    /// The real upgrade was issued.
    Running,
    Succeeded,
    Failed,
    Cancelled,
    TimedOut,
    /// The dry run found nothing to upgrade.
    NothingToDo,
    /// The current command expired before it reached the agent.
    AgentOffline,
    /// Never started: its rollout stopped, its window closed, or the host
    /// could not be planned (revoked, no inventory).
    Skipped,
}

impl RunState {
    pub const ALL: [RunState; 12] = [
        RunState::Queued,
        RunState::Planning,
        RunState::AwaitingApproval,
        RunState::Approved,
        RunState::Running,
        RunState::Succeeded,
        RunState::Failed,
        RunState::Cancelled,
        RunState::TimedOut,
        RunState::NothingToDo,
        RunState::AgentOffline,
        RunState::Skipped,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            RunState::Queued => "queued",
            RunState::Planning => "planning",
            RunState::AwaitingApproval => "awaiting_approval",
            RunState::Approved => "approved",
            RunState::Running => "running",
            RunState::Succeeded => "succeeded",
            RunState::Failed => "failed",
            RunState::Cancelled => "cancelled",
            RunState::TimedOut => "timed_out",
            RunState::NothingToDo => "nothing_to_do",
            RunState::AgentOffline => "agent_offline",
            RunState::Skipped => "skipped",
        }
    }

    /// Nothing more happens to the run by itself (`agent_offline` included:
    /// only a late result would move it).
    pub fn is_final(self) -> bool {
        !matches!(
            self,
            RunState::Queued
                | RunState::Planning
                | RunState::AwaitingApproval
                | RunState::Approved
                | RunState::Running
        )
    }
}

impl std::str::FromStr for RunState {
    type Err = crate::UnknownName;
    fn from_str(s: &str) -> Result<RunState, crate::UnknownName> {
        RunState::ALL
            .into_iter()
            .find(|state| state.as_str() == s)
            .ok_or_else(|| crate::UnknownName::new("patch run state", s))
    }
}

/// Which packages a run upgrades.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Selection {
    /// Every upgrade the package manager offers.
    All,
    /// The host's pending security updates, at their candidate versions.
    Security,
    /// These installed packages, to their candidate versions.
    Packages { packages: Vec<String> },
}

/// Who must approve a run's plan before it runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Approval {
    /// Someone other than the requester (four eyes).
    OtherUser,
    /// Anyone allowed to approve, the requester included.
    Any,
    /// Nobody: the plan runs as soon as it is in.
    None,
}

impl Approval {
    pub fn as_str(self) -> &'static str {
        match self {
            Approval::OtherUser => "other_user",
            Approval::Any => "any",
            Approval::None => "none",
        }
    }
}

impl std::str::FromStr for Approval {
    type Err = crate::UnknownName;
    fn from_str(s: &str) -> Result<Approval, crate::UnknownName> {
        match s {
            "other_user" => Ok(Approval::OtherUser),
            "any" => Ok(Approval::Any),
            "none" => Ok(Approval::None),
            other => Err(crate::UnknownName::new("patch run approval", other)),
        }
    }
}

/// A stored run, with its state as read (see the module on `agent_offline`).
#[derive(Debug, Clone, PartialEq)]
pub struct PatchRun {
    pub id: String,
    pub host_id: String,
    pub state: RunState,
    pub selection: Selection,
    pub approval: Approval,
    pub manager: Manager,
    pub requested_by: Actor,
    /// The user behind `requested_by`, if any.
    pub requested_by_user: Option<i64>,
    pub requested_at: Millis,
    pub approved_by: Option<Actor>,
    pub approved_at: Option<Millis>,
    pub cancelled_by: Option<Actor>,
    pub cancelled_at: Option<Millis>,
    /// The agent's clock, from the real run's result.
    pub started_at: Option<Millis>,
    pub finished_at: Option<Millis>,
    pub dry_run_command_id: Option<String>,
    pub command_id: Option<String>,
    pub cancel_command_id: Option<String>,
    /// What the dry run said would change; `None` before it reported.
    pub plan: Option<Vec<PackageChange>>,
    /// What the real run changed; `None` before it reported.
    pub changes: Option<Vec<PackageChange>>,
    pub exit_code: Option<i32>,
    pub error: Option<String>,
    pub timeout_secs: u32,
    /// The request or the policy as it was.
    pub policy: serde_json::Value,
    /// The rollout the run is part of, and its place in it.
    pub rollout_id: Option<String>,
    pub rollout_position: Option<u32>,
    /// Left out when planning (name patterns).
    pub exclude: Vec<NamePattern>,
    /// Only updates offered at least this many days are planned, and the
    /// plan needs no approval.
    pub auto_approve_after_days: Option<u32>,
    pub reboot: RebootPolicy,
    pub reboot_state: Option<RebootState>,
    pub reboot_command_id: Option<String>,
    /// What the host said after the upgrade.
    pub reboot_required: Option<bool>,
    /// Services still running files the upgrade replaced (JSON list of
    /// `{unit, pids, files}`).
    pub restarts: Option<serde_json::Value>,
}

/// Where a run's reboot stands (see `patch_runs.reboot_state`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RebootState {
    /// The run succeeded and its policy asks for a reboot: to be issued.
    Due,
    /// The reboot command was issued.
    Issued,
    /// The policy reboots only when required, and the host did not need it.
    NotNeeded,
}

impl RebootState {
    pub fn as_str(self) -> &'static str {
        match self {
            RebootState::Due => "due",
            RebootState::Issued => "issued",
            RebootState::NotNeeded => "not_needed",
        }
    }
}

impl std::str::FromStr for RebootState {
    type Err = crate::UnknownName;
    fn from_str(s: &str) -> Result<RebootState, crate::UnknownName> {
        match s {
            "due" => Ok(RebootState::Due),
            "issued" => Ok(RebootState::Issued),
            "not_needed" => Ok(RebootState::NotNeeded),
            other => Err(crate::UnknownName::new("reboot state", other)),
        }
    }
}

impl PatchRun {
    /// The command the run waits for: the dry run while planning, the
    /// upgrade while running.
    pub fn current_command(&self) -> Option<&str> {
        match self.state {
            RunState::Queued | RunState::Skipped => None,
            RunState::Planning => self.dry_run_command_id.as_deref(),
            _ => self
                .command_id
                .as_deref()
                .or(self.dry_run_command_id.as_deref()),
        }
    }
}

/// A run to store, as [`create`] makes it.
#[derive(Debug, Clone)]
pub struct NewRun {
    pub id: String,
    pub host_id: String,
    pub selection: Selection,
    pub approval: Approval,
    pub manager: Manager,
    pub requested_by: Actor,
    pub requested_by_user: Option<i64>,
    pub requested_at: Millis,
    /// None: queued in a rollout, planned when its turn comes.
    pub dry_run_command_id: Option<String>,
    pub timeout_secs: u32,
    pub policy: serde_json::Value,
    pub rollout_id: Option<String>,
    pub rollout_position: Option<u32>,
    pub exclude: Vec<NamePattern>,
    pub auto_approve_after_days: Option<u32>,
    pub reboot: RebootPolicy,
}

/// Seconds a run may take when the request names none.
pub const DEFAULT_TIMEOUT_SECS: u32 = 3600;
/// How long a patch run's command waits for its agent before it expires
/// (and the run reads `agent_offline`).
pub const COMMAND_EXPIRES_IN_SECS: u64 = 15 * 60;
/// Largest request body accepted.
const MAX_REQUEST_BYTES: usize = 256 * 1024;

/// A validated `POST /api/v1/patch-runs`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CreateRequest {
    pub host_id: String,
    pub selection: Selection,
    pub approval: Approval,
    pub timeout_secs: u32,
    pub reboot: RebootPolicy,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateBody {
    host_id: String,
    selection: Selection,
    approval: Option<String>,
    timeout_secs: Option<u64>,
    reboot: Option<RebootPolicy>,
}

/// Parses the JSON body of `POST /api/v1/patch-runs`; the error is a
/// sentence for the client.
pub fn parse_create(body: &[u8]) -> Result<CreateRequest, commands::RequestError> {
    let refuse = |m: String| commands::RequestError(m);
    if body.len() > MAX_REQUEST_BYTES {
        return Err(refuse(format!(
            "the body is larger than {MAX_REQUEST_BYTES} bytes"
        )));
    }
    let body: CreateBody = serde_json::from_slice(body).map_err(|e| {
        refuse(format!(
            "the body must be {{\"host_id\", \"selection\": {{\"kind\": \"all\" | \"security\" | \"packages\", \"packages\": [...]}}, \"approval\", \"timeout_secs\"}}: {e}"
        ))
    })?;
    let approval = match body.approval.as_deref() {
        None => Approval::OtherUser,
        Some(a) => a.parse().map_err(|_| {
            refuse("\"approval\" must be \"other_user\", \"any\" or \"none\"".to_owned())
        })?,
    };
    let max = MAX_UPGRADE_TIMEOUT.as_secs();
    let timeout_secs = match body.timeout_secs {
        None => DEFAULT_TIMEOUT_SECS,
        Some(t) if (1..=max).contains(&t) => u32::try_from(t).unwrap_or(DEFAULT_TIMEOUT_SECS),
        Some(_) => {
            return Err(refuse(format!(
                "\"timeout_secs\" must be a whole number from 1 to {max}"
            )));
        }
    };
    if let Selection::Packages { packages } = &body.selection {
        if packages.is_empty() {
            return Err(refuse("\"packages\" names no package".to_owned()));
        }
        if packages.len() > MAX_TARGETS {
            return Err(refuse(format!(
                "\"packages\" names more than {MAX_TARGETS}"
            )));
        }
    }
    Ok(CreateRequest {
        host_id: body.host_id,
        selection: body.selection,
        approval,
        timeout_secs,
        reboot: body.reboot.unwrap_or(RebootPolicy::Never),
    })
}

/// Why a selection cannot be planned on a host (409 or 400).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PlanError {
    #[error("no pending security updates")]
    NoSecurityUpdates,
    #[error("no pending update is left once exclusions, holds and the approval delay are applied")]
    NothingSelected,
    #[error("{0}")]
    BadPackage(String),
}

/// What planning leaves out besides held packages.
#[derive(Debug, Clone, Copy, Default)]
pub struct PlanFilter<'a> {
    /// Package name patterns never upgraded.
    pub exclude: &'a [NamePattern],
    /// Approval by age: only updates the backend first saw in the host's
    /// inventory at or before this instant, with when each was first seen
    /// (`(name, arch, candidate)`).
    pub offered_by: Option<(Millis, &'a FirstSeen)>,
}

/// When the backend first saw each of a host's updates:
/// `(name, arch, candidate)` to the time.
pub type FirstSeen = std::collections::HashMap<(String, String, String), Millis>;

impl PlanFilter<'_> {
    fn is_empty(&self) -> bool {
        self.exclude.is_empty() && self.offered_by.is_none()
    }

    /// Whether a pending update may be planned.
    fn admits(&self, u: &palisade_packages::inventory::Update) -> bool {
        if policy::excluded(self.exclude, &u.name) {
            return false;
        }
        match self.offered_by {
            None => true,
            Some((cutoff, seen)) => seen
                .get(&(u.name.clone(), u.arch.clone(), u.candidate.clone()))
                .is_some_and(|&first| first <= cutoff),
        }
    }
}

/// What the dry run asks for: everything (`all`), or the targets. Held
/// packages and updates that are not pending (held, deferred, kept back)
/// are never targets; `filter` leaves out more.
pub fn dry_run_targets(
    selection: &Selection,
    inventory: &Inventory,
    filter: PlanFilter<'_>,
) -> Result<(bool, Vec<Target>), PlanError> {
    let held = |name: &str| {
        inventory
            .installed
            .values()
            .any(|p| p.name == name && p.held)
    };
    let pending = |security_only: bool| -> Vec<Target> {
        let mut targets: Vec<Target> = inventory
            .updates
            .values()
            .filter(|u| u.status == Status::Pending && (!security_only || u.security))
            .filter(|u| !held(&u.name) && filter.admits(u))
            .map(|u| Target {
                name: u.name.clone(),
                arch: u.arch.clone(),
                version: u.candidate.clone(),
            })
            .collect();
        targets.sort();
        targets
    };
    match selection {
        Selection::All if filter.is_empty() => Ok((true, Vec::new())),
        Selection::All => {
            let targets = pending(false);
            if targets.is_empty() {
                return Err(PlanError::NothingSelected);
            }
            Ok((false, targets))
        }
        Selection::Security => {
            let any_security = inventory
                .updates
                .values()
                .any(|u| u.security && u.status == Status::Pending);
            let targets = pending(true);
            if targets.is_empty() {
                return Err(if any_security {
                    PlanError::NothingSelected
                } else {
                    PlanError::NoSecurityUpdates
                });
            }
            Ok((false, targets))
        }
        Selection::Packages { packages } => {
            let mut targets = Vec::with_capacity(packages.len());
            for name in packages {
                check_name(inventory.manager, name)
                    .map_err(|e| PlanError::BadPackage(format!("package {name:?}: {e}")))?;
                if !inventory.installed.values().any(|p| &p.name == name) {
                    return Err(PlanError::BadPackage(format!(
                        "package {name:?} is not installed on this host"
                    )));
                }
                if policy::excluded(filter.exclude, name) {
                    continue;
                }
                if filter.offered_by.is_some() {
                    // Approval by age: only the named packages' pending
                    // updates old enough, at their candidates.
                    targets.extend(
                        inventory
                            .updates
                            .values()
                            .filter(|u| &u.name == name && u.status == Status::Pending)
                            .filter(|u| !held(&u.name) && filter.admits(u))
                            .map(|u| Target {
                                name: u.name.clone(),
                                arch: u.arch.clone(),
                                version: u.candidate.clone(),
                            }),
                    );
                    continue;
                }
                targets.push(Target {
                    name: name.clone(),
                    arch: String::new(),
                    version: String::new(),
                });
            }
            targets.sort();
            targets.dedup();
            if targets.is_empty() {
                return Err(PlanError::NothingSelected);
            }
            Ok((false, targets))
        }
    }
}

/// The real upgrade's targets: exactly the plan's installed or upgraded
/// packages, pinned to the plan's versions (removals are the package
/// manager's consequences of those, not targets).
pub fn plan_targets(plan: &[PackageChange]) -> Vec<Target> {
    let mut targets: Vec<Target> = plan
        .iter()
        .filter(|c| !c.is_removal())
        .map(|c| Target {
            name: c.name.clone(),
            arch: c.arch.clone(),
            version: c.after.clone(),
        })
        .collect();
    targets.sort();
    targets.dedup();
    targets
}

fn upgrade_request(
    manager: Manager,
    all: bool,
    packages: Vec<Target>,
    dry_run: bool,
    timeout_secs: u32,
) -> CommandRequest {
    CommandRequest {
        action: CommandAction::UpgradePackages(Upgrade {
            manager,
            all,
            packages,
            dry_run,
            refresh_index: dry_run,
            timeout: std::time::Duration::from_secs(u64::from(timeout_secs)),
        }),
        expires_in_secs: COMMAND_EXPIRES_IN_SECS,
    }
}

/// Who is asking, for commands and audit events.
fn requester(caller: &Caller, request_id: &str) -> Requester {
    Requester {
        actor: caller.actor.clone(),
        source_ip: caller.client.ip.clone(),
        user_agent: caller.client.user_agent.clone(),
        request_id: request_id.to_owned(),
    }
}

/// Appends a refusal to the audit log.
async fn audit_denied(
    state: &AppState,
    caller: &Caller,
    action: Action,
    run: Option<&str>,
    host_id: &str,
    reason: &str,
    request_id: &str,
) -> Result<(), WebError> {
    let event = caller
        .event(crate::now_millis(), action, Outcome::Denied)
        .target(host_id)
        .details(serde_json::json!({
            "patch_run_id": run,
            "reason": reason,
            "request_id": request_id,
        }));
    state
        .db
        .write("audit refused patch run action", move |tx| {
            crate::audit::store::append(tx, &event).map(|_| ())
        })
        .await?;
    Ok(())
}

/// Creates a run: checks the caller may, plans the dry run from the host's
/// inventory, stores the run, its dry-run command and the audit event in
/// one transaction, and hands the command to the agent if it is online.
pub async fn create(
    state: &AppState,
    caller: &Caller,
    request: CreateRequest,
    request_id: &str,
    now: Millis,
) -> Result<PatchRun, WebError> {
    let host = crate::hosts::api::visible_host(
        state,
        caller,
        request.host_id.clone(),
        Permission::HostsRead,
    )
    .await?;
    let group = host.group_id();
    let mut missing = Vec::new();
    if !caller.may(Permission::PatchRunsCreate, group) {
        missing.push(Permission::PatchRunsCreate);
    }
    if request.approval == Approval::None && !caller.may(Permission::PatchRunsExecute, group) {
        missing.push(Permission::PatchRunsExecute);
    }
    if !missing.is_empty() {
        let names: Vec<&str> = missing.iter().map(|p| p.name()).collect();
        audit_denied(
            state,
            caller,
            Action::PatchRunCreate,
            None,
            &host.id,
            &format!("permission {}", names.join(" and ")),
            request_id,
        )
        .await?;
        return Err(WebError::Forbidden(
            "you may not start this patch run on this host (an approval of \"none\" also needs patch_runs:execute)",
        ));
    }
    if host.revoked_at.is_some() {
        return Err(WebError::Conflict(
            "the host is revoked: its agent can no longer connect",
        ));
    }
    let host_id = host.id.clone();
    let inventory = state
        .db
        .read("load inventory", move |tx| {
            crate::packages::store::load(tx, &host_id)
        })
        .await?
        .ok_or(WebError::Conflict(
            "the host has not reported a package inventory yet: nothing to plan from",
        ))?
        .inventory;
    let (all, targets) = dry_run_targets(&request.selection, &inventory, PlanFilter::default())
        .map_err(|e| match e {
            PlanError::NoSecurityUpdates => WebError::Conflict("no pending security updates"),
            PlanError::NothingSelected => {
                WebError::Conflict("no pending update is left once holds are applied")
            }
            PlanError::BadPackage(m) => WebError::BadRequest(m),
        })?;
    let dry_run = upgrade_request(inventory.manager, all, targets, true, request.timeout_secs);
    let prepared = commands::prepare(
        &state.pki,
        &host.id,
        &dry_run,
        requester(caller, request_id),
        now,
    );
    let policy = serde_json::json!({
        "selection": request.selection,
        "approval": request.approval.as_str(),
        "timeout_secs": request.timeout_secs,
        "manager": inventory.manager.as_str(),
        "reboot": request.reboot.as_str(),
    });
    let run = NewRun {
        id: uuid::Uuid::new_v4().to_string(),
        host_id: host.id.clone(),
        selection: request.selection,
        approval: request.approval,
        manager: inventory.manager,
        requested_by: caller.actor.clone(),
        requested_by_user: caller.user.as_ref().map(|u| u.id),
        requested_at: now,
        dry_run_command_id: Some(prepared.command.id.clone()),
        timeout_secs: request.timeout_secs,
        policy: policy.clone(),
        rollout_id: None,
        rollout_position: None,
        exclude: Vec::new(),
        auto_approve_after_days: None,
        reboot: request.reboot,
    };
    let event = caller
        .event(now, Action::PatchRunCreate, Outcome::Success)
        .target(host.id.clone())
        .details(serde_json::json!({
            "patch_run_id": run.id,
            "dry_run_command_id": run.dry_run_command_id,
            "request": policy,
            "request_id": request_id,
        }));
    let (row, stored) = state
        .db
        .write("create patch run", move |tx| {
            let row = commands::store_prepared(tx, &prepared)?;
            store::insert(tx, &run)?;
            crate::audit::store::append(tx, &event)?;
            Ok((row, run.id))
        })
        .await?;
    tracing::info!(patch_run_id = %stored, host_id = %host.id, "patch run created");
    commands::hand_over(state, row, now).await?;
    load(state, &stored).await
}

/// The run `id` as it stands (404 when it does not exist).
pub async fn load(state: &AppState, id: &str) -> Result<PatchRun, WebError> {
    let id = id.to_owned();
    let now = crate::now_millis();
    state
        .db
        .read("load patch run", move |tx| store::get(tx, &id, now))
        .await?
        .ok_or(WebError::NotFound("no such patch run"))
}

/// The run `id` and its host's group, if the caller holds `p` for that
/// host; otherwise "no such patch run".
pub async fn visible_run(
    state: &AppState,
    caller: &Caller,
    id: &str,
    p: Permission,
) -> Result<(PatchRun, Option<String>), WebError> {
    const UNKNOWN: WebError = WebError::NotFound("no such patch run");
    if id.len() > 64 {
        return Err(UNKNOWN);
    }
    let run = load(state, id).await?;
    let host_id = run.host_id.clone();
    let host = state
        .db
        .read("load host", move |tx| {
            crate::hosts::store::get(tx, &host_id)
        })
        .await?
        .ok_or(UNKNOWN)?;
    let group = host.group_id().map(str::to_owned);
    caller.require_for_host(p, group.as_deref(), "no such patch run")?;
    Ok((run, group))
}

/// Approves a run awaiting approval and issues its real upgrade: exactly
/// the plan's packages at the plan's versions.
pub async fn approve(
    state: &AppState,
    caller: &Caller,
    id: &str,
    request_id: &str,
    now: Millis,
) -> Result<PatchRun, WebError> {
    let (run, group) = visible_run(state, caller, id, Permission::PatchRunsRead).await?;
    let group = group.as_deref();
    if !(caller.may(Permission::PatchRunsApprove, group)
        && caller.may(Permission::PatchRunsExecute, group))
    {
        audit_denied(
            state,
            caller,
            Action::PatchRunApprove,
            Some(&run.id),
            &run.host_id,
            "permission patch_runs:approve and patch_runs:execute",
            request_id,
        )
        .await?;
        return Err(WebError::Forbidden(
            "approving a patch run needs patch_runs:approve and patch_runs:execute on its host",
        ));
    }
    if !may_approve_as(caller, &run) {
        audit_denied(
            state,
            caller,
            Action::PatchRunApprove,
            Some(&run.id),
            &run.host_id,
            "the requester may not approve their own run",
            request_id,
        )
        .await?;
        return Err(WebError::Forbidden(
            "this patch run needs the approval of another user than the one who requested it",
        ));
    }
    if run.state != RunState::AwaitingApproval {
        return Err(WebError::Conflict(
            "only a patch run awaiting approval can be approved",
        ));
    }
    let plan = run.plan.clone().unwrap_or_default();
    let real = upgrade_request(
        run.manager,
        false,
        plan_targets(&plan),
        false,
        run.timeout_secs,
    );
    let prepared = commands::prepare(
        &state.pki,
        &run.host_id,
        &real,
        requester(caller, request_id),
        now,
    );
    let event = caller
        .event(now, Action::PatchRunApprove, Outcome::Success)
        .target(run.host_id.clone())
        .details(serde_json::json!({
            "patch_run_id": run.id,
            "command_id": prepared.command.id,
            "packages": plan.len(),
            "request_id": request_id,
        }));
    let approver = caller.actor.clone();
    let run_id = run.id.clone();
    let row = state
        .db
        .write("approve patch run", move |tx| {
            let started = store::start(
                tx,
                &run_id,
                RunState::AwaitingApproval,
                &prepared.command.id,
                Some((&approver, now)),
            )?;
            if !started {
                return Ok(None);
            }
            let row = commands::store_prepared(tx, &prepared)?;
            crate::audit::store::append(tx, &event)?;
            Ok(Some(row))
        })
        .await?
        .ok_or(WebError::Conflict(
            "only a patch run awaiting approval can be approved",
        ))?;
    tracing::info!(patch_run_id = %run.id, command_id = %row.id, "patch run approved");
    commands::hand_over(state, row, now).await?;
    load(state, &run.id).await
}

/// Whether the caller may approve the run as far as who they are goes:
/// not its requester when the run needs another user.
pub fn may_approve_as(caller: &Caller, run: &PatchRun) -> bool {
    !(run.approval == Approval::OtherUser && same_person(caller, run))
}

/// Whether the caller is the person who requested the run: the same actor,
/// or the same user behind a session and an API token.
fn same_person(caller: &Caller, run: &PatchRun) -> bool {
    caller.actor == run.requested_by
        || matches!((caller.user.as_ref(), run.requested_by_user), (Some(u), Some(r)) if u.id == r)
}

/// Cancels a run: one not running yet ends at once; a running one gets a
/// `cancel` command and ends when its upgrade reports `cancelled` (or
/// whatever it did if it finished first).
pub async fn cancel(
    state: &AppState,
    caller: &Caller,
    id: &str,
    request_id: &str,
    now: Millis,
) -> Result<PatchRun, WebError> {
    let (run, group) = visible_run(state, caller, id, Permission::PatchRunsRead).await?;
    if !caller.may(Permission::PatchRunsCancel, group.as_deref()) {
        audit_denied(
            state,
            caller,
            Action::PatchRunCancel,
            Some(&run.id),
            &run.host_id,
            "permission patch_runs:cancel",
            request_id,
        )
        .await?;
        return Err(WebError::Forbidden(
            "cancelling a patch run needs patch_runs:cancel on its host",
        ));
    }
    const NOT_CANCELLABLE: WebError = WebError::Conflict("this patch run has ended");
    let actor = caller.actor.clone();
    let event = caller
        .event(now, Action::PatchRunCancel, Outcome::Success)
        .target(run.host_id.clone())
        .details(serde_json::json!({ "patch_run_id": run.id, "request_id": request_id }));
    match run.state {
        RunState::Queued
        | RunState::Planning
        | RunState::AwaitingApproval
        | RunState::Approved
        | RunState::AgentOffline => {
            let run_id = run.id.clone();
            let done = state
                .db
                .write("cancel patch run", move |tx| {
                    let done = store::cancel_now(tx, &run_id, &actor, now)?;
                    if done {
                        crate::audit::store::append(tx, &event)?;
                    }
                    Ok(done)
                })
                .await?;
            if !done {
                return Err(NOT_CANCELLABLE);
            }
        }
        RunState::Running => {
            if run.cancel_command_id.is_some() {
                return Err(WebError::Conflict(
                    "this patch run is being cancelled already",
                ));
            }
            let Some(target) = run.command_id.clone() else {
                return Err(NOT_CANCELLABLE);
            };
            let request = CommandRequest {
                action: CommandAction::Cancel { command_id: target },
                expires_in_secs: COMMAND_EXPIRES_IN_SECS,
            };
            let prepared = commands::prepare(
                &state.pki,
                &run.host_id,
                &request,
                requester(caller, request_id),
                now,
            );
            let run_id = run.id.clone();
            let row = state
                .db
                .write("cancel running patch run", move |tx| {
                    if !store::cancel_requested(tx, &run_id, &prepared.command.id, &actor, now)? {
                        return Ok(None);
                    }
                    let row = commands::store_prepared(tx, &prepared)?;
                    crate::audit::store::append(tx, &event)?;
                    Ok(Some(row))
                })
                .await?
                .ok_or(NOT_CANCELLABLE)?;
            commands::hand_over(state, row, now).await?;
        }
        RunState::Succeeded
        | RunState::Failed
        | RunState::Cancelled
        | RunState::TimedOut
        | RunState::NothingToDo
        | RunState::Skipped => return Err(NOT_CANCELLABLE),
    }
    load(state, &run.id).await
}

/// Issues the real upgrade of every run of `host_id` that was approved
/// without a person (approval `none`) once its plan came in. Safe to call
/// any time, from any replica: a run moves to `running` in the transaction
/// that stores its command, only from `approved`. Errors are logged; the
/// next call (next batch of records, next connection) tries again.
pub async fn start_approved(state: &AppState, host_id: &str, now: Millis) {
    let host = host_id.to_owned();
    let runs = match state
        .db
        .read("approved patch runs", move |tx| {
            store::approved_for_host(tx, &host, now)
        })
        .await
    {
        Ok(runs) => runs,
        Err(e) => {
            tracing::error!(host_id, error = %e, "cannot load approved patch runs");
            return;
        }
    };
    for run in runs {
        if let Err(e) = start_one(state, &run, now).await {
            tracing::error!(patch_run_id = %run.id, error = %e, "cannot start an approved patch run");
        }
    }
}

async fn start_one(state: &AppState, run: &PatchRun, now: Millis) -> Result<(), DbError> {
    let plan = run.plan.clone().unwrap_or_default();
    let real = upgrade_request(
        run.manager,
        false,
        plan_targets(&plan),
        false,
        run.timeout_secs,
    );
    let requester = Requester {
        actor: run.requested_by.clone(),
        source_ip: None,
        user_agent: None,
        request_id: format!("patch-run:{}", run.id),
    };
    let prepared = commands::prepare(&state.pki, &run.host_id, &real, requester, now);
    let run_id = run.id.clone();
    let row = state
        .db
        .write("start approved patch run", move |tx| {
            if !store::start(tx, &run_id, RunState::Approved, &prepared.command.id, None)? {
                return Ok(None);
            }
            commands::store_prepared(tx, &prepared).map(Some)
        })
        .await?;
    if let Some(row) = row {
        tracing::info!(patch_run_id = %run.id, command_id = %row.id, "patch run started without approval, as requested");
        commands::hand_over(state, row, now).await?;
    }
    Ok(())
}

#[cfg(test)]
mod rollout_tests;
#[cfg(test)]
mod tests;
