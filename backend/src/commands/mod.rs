//! Signed commands to agents: what an operator may ask for, how a command is
//! signed and stored, and how it reaches the agent.
//!
//! - this file: the model, request parsing, signing, issuing and delivery;
//! - [`store`]: the queries, including applying an agent's result;
//! - [`api`]: `POST/GET /api/v1/hosts/{id}/commands`, `GET /api/v1/commands/{id}`.
//!
//! A command is a `palisade.v1.Command` (agent id, a fresh UUID as command
//! id, issued-at, expiry, the typed action) encoded once, signed once with
//! the command-signing key over `"palisade-command-v1" || 0x00 || bytes`,
//! and stored with its signature. Every delivery sends exactly those stored
//! bytes, so a redelivery is byte-identical and control can recognise it.
//!
//! Delivery is at-least-once, execution at-most-once: a command is handed
//! to the agent's live connection when it is created and again at every
//! connection of the agent while it is pending or delivered without a result
//! and unexpired (a delivery can be lost with its connection). Control
//! records each id durably before running it and refuses a second delivery
//! as a replay; the store keeps only the first result of a command, so that
//! refusal of a redelivery never overwrites it. If control's result of the
//! first delivery itself was lost (control killed mid-run), the replay
//! refusal becomes the stored result: honest, the command ran at most once
//! and its outcome is unknown.

use palisade_proto::frame::encode_body;
use palisade_proto::msg::{
    CommandAction, MAX_REBOOT_DELAY_MINUTES, TypedCommand, command_signing_message,
    validate_reboot, validate_unit_name,
};
use palisade_proto::pb;

use crate::audit::{Action, Actor, NewAuditEvent, Outcome};
use crate::db::{DbError, Millis};
use crate::state::AppState;

pub mod api;
pub mod store;

/// What a command does, as stored (`commands.type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CommandKind {
    Ping,
    RestartService,
    RefreshInventory,
    /// A patch run's dry run or real run; only [`crate::patching`] issues it.
    UpgradePackages,
    /// Stops a running command of the same host; only [`crate::patching`]
    /// issues it.
    Cancel,
    /// Reboots the host: a dangerous operation of its own.
    Reboot,
}

impl CommandKind {
    pub fn as_str(self) -> &'static str {
        match self {
            CommandKind::Ping => "ping",
            CommandKind::RestartService => "restart_service",
            CommandKind::RefreshInventory => "refresh_inventory",
            CommandKind::UpgradePackages => "upgrade_packages",
            CommandKind::Cancel => "cancel",
            CommandKind::Reboot => "reboot",
        }
    }

    pub fn of(action: &CommandAction) -> CommandKind {
        match action {
            CommandAction::Ping => CommandKind::Ping,
            CommandAction::RestartService { .. } => CommandKind::RestartService,
            CommandAction::RefreshInventory => CommandKind::RefreshInventory,
            CommandAction::UpgradePackages(_) => CommandKind::UpgradePackages,
            CommandAction::Cancel { .. } => CommandKind::Cancel,
            CommandAction::Reboot { .. } => CommandKind::Reboot,
        }
    }
}

impl std::str::FromStr for CommandKind {
    type Err = crate::UnknownName;
    fn from_str(s: &str) -> Result<CommandKind, crate::UnknownName> {
        match s {
            "ping" => Ok(CommandKind::Ping),
            "restart_service" => Ok(CommandKind::RestartService),
            "refresh_inventory" => Ok(CommandKind::RefreshInventory),
            "upgrade_packages" => Ok(CommandKind::UpgradePackages),
            "cancel" => Ok(CommandKind::Cancel),
            "reboot" => Ok(CommandKind::Reboot),
            other => Err(crate::UnknownName::new("command type", other)),
        }
    }
}

/// Where a command stands. Stored as the lowercase name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CommandStatus {
    /// Signed and stored, not handed to a connection yet.
    Pending,
    /// Queued on the agent's connection; no result yet.
    Delivered,
    Succeeded,
    Failed,
    /// Control refused it; nothing ran (the error says why).
    Rejected,
    /// Expired before it was ever delivered, so it never ran.
    Expired,
    /// Control stopped it because it ran past its timeout.
    TimedOut,
    /// Control stopped it because a cancel command named it.
    Cancelled,
}

impl CommandStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            CommandStatus::Pending => "pending",
            CommandStatus::Delivered => "delivered",
            CommandStatus::Succeeded => "succeeded",
            CommandStatus::Failed => "failed",
            CommandStatus::Rejected => "rejected",
            CommandStatus::Expired => "expired",
            CommandStatus::TimedOut => "timed_out",
            CommandStatus::Cancelled => "cancelled",
        }
    }

    /// True once the agent's result is in.
    pub fn is_final(self) -> bool {
        matches!(
            self,
            CommandStatus::Succeeded
                | CommandStatus::Failed
                | CommandStatus::Rejected
                | CommandStatus::TimedOut
                | CommandStatus::Cancelled
        )
    }
}

impl std::str::FromStr for CommandStatus {
    type Err = crate::UnknownName;
    fn from_str(s: &str) -> Result<Self, crate::UnknownName> {
        match s {
            "pending" => Ok(CommandStatus::Pending),
            "delivered" => Ok(CommandStatus::Delivered),
            "succeeded" => Ok(CommandStatus::Succeeded),
            "failed" => Ok(CommandStatus::Failed),
            "rejected" => Ok(CommandStatus::Rejected),
            "expired" => Ok(CommandStatus::Expired),
            "timed_out" => Ok(CommandStatus::TimedOut),
            "cancelled" => Ok(CommandStatus::Cancelled),
            other => Err(crate::UnknownName::new("command status", other)),
        }
    }
}

/// A signed command to store, before anything was sent.
#[derive(Debug, Clone)]
pub struct NewCommand {
    /// A UUID, also the id inside the signed command.
    pub id: String,
    pub host_id: String,
    pub kind: CommandKind,
    /// The request as JSON, e.g. `{"type":"restart_service","unit":"nginx.service"}`.
    pub payload: serde_json::Value,
    pub requested_by: Actor,
    pub source_ip: Option<String>,
    pub user_agent: Option<String>,
    pub issued_at: Millis,
    pub expires_at: Millis,
    /// The encoded `Command`, exactly as signed.
    pub command_bytes: Vec<u8>,
    /// The Ed25519 signature over the context and `command_bytes`.
    pub signature: Vec<u8>,
}

/// A stored command and, once it arrived, its result.
#[derive(Debug, Clone, PartialEq)]
pub struct CommandRow {
    pub id: String,
    pub host_id: String,
    pub kind: CommandKind,
    pub payload: serde_json::Value,
    pub requested_by: Actor,
    pub source_ip: Option<String>,
    pub user_agent: Option<String>,
    pub issued_at: Millis,
    pub expires_at: Millis,
    pub command_bytes: Vec<u8>,
    pub signature: Vec<u8>,
    pub status: CommandStatus,
    pub delivered_at: Option<Millis>,
    pub exit_code: Option<i32>,
    pub output: Option<String>,
    pub error: Option<String>,
    /// The agent's clock.
    pub started_at: Option<Millis>,
    /// The agent's clock.
    pub finished_at: Option<Millis>,
    /// The backend's clock when the result was stored.
    pub result_received_at: Option<Millis>,
    /// What an `upgrade_packages` result reported changed (empty otherwise).
    pub changes: Vec<PackageChange>,
    /// Bytes of output the agent said it streamed while the command ran.
    pub streamed_bytes: u64,
    /// Bytes of streamed output stored (see [`store::append_output`]).
    pub output_bytes: u64,
    /// Streamed output beyond [`MAX_STREAMED_OUTPUT`] was dropped.
    pub output_truncated: bool,
    /// A real `upgrade_packages`: whether the host needs a reboot after it
    /// (`None`: not said).
    pub reboot_required: Option<bool>,
    /// A real `upgrade_packages`: services still running files it replaced.
    pub restarts: Vec<Restart>,
}

/// One package an upgrade changed (or, in a dry run, would change). An
/// empty `before` means newly installed, an empty `after` removed.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct PackageChange {
    pub name: String,
    pub arch: String,
    pub before: String,
    pub after: String,
}

impl PackageChange {
    pub fn from_wire(c: &pb::PackageChange) -> PackageChange {
        PackageChange {
            name: c.name.clone(),
            arch: c.arch.clone(),
            before: c.before.clone(),
            after: c.after.clone(),
        }
    }

    /// True when the package is removed by the change.
    pub fn is_removal(&self) -> bool {
        self.after.is_empty()
    }
}

/// A service still running files an upgrade replaced (it runs the old code
/// until restarted), or a process outside any service. Read by agent
/// control from `/proc` after a real upgrade.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct Restart {
    /// The process's systemd unit: a service (`nginx.service`), a scope
    /// (`session-3.scope`) or a user's unit named with its manager
    /// (`user@1000.service/pipewire.service`); `None` outside any unit.
    pub unit: Option<String>,
    pub pids: Vec<u32>,
    /// The replaced files its processes map.
    pub files: Vec<String>,
}

impl Restart {
    pub fn from_wire(r: &pb::ServiceRestart) -> Restart {
        Restart {
            unit: (!r.unit.is_empty()).then(|| r.unit.clone()),
            pids: r.pids.clone(),
            files: r.files.clone(),
        }
    }

    /// The system service a `restart_service` command could restart, when
    /// the unit is one (not a scope, not a user's unit).
    pub fn service(&self) -> Option<&str> {
        self.unit
            .as_deref()
            .filter(|u| u.ends_with(".service") && !u.contains('/'))
    }
}

/// Most streamed output kept per command: beyond it, pieces are dropped and
/// the command's output is marked truncated (a runaway package script must
/// not fill the database).
pub const MAX_STREAMED_OUTPUT: u64 = 16 * 1024 * 1024;

/// An agent's result of a command (a command-result record).
#[derive(Debug, Clone, PartialEq)]
pub struct CommandResult {
    /// Empty when control refused something it could not even verify.
    pub command_id: String,
    pub status: CommandStatus,
    pub exit_code: i32,
    pub output: String,
    pub error: Option<String>,
    pub started_at: Millis,
    pub finished_at: Millis,
    /// `upgrade_packages`: what changed, or would change in a dry run.
    pub changes: Vec<PackageChange>,
    /// Bytes of output streamed as `CommandOutput` while it ran.
    pub streamed_bytes: u64,
    /// A real `upgrade_packages`: whether the host needs a reboot after it.
    pub reboot_required: Option<bool>,
    /// A real `upgrade_packages`: services still running files it replaced.
    pub restarts: Vec<Restart>,
}

impl CommandResult {
    /// The result a record carries; `None` for a status a result cannot
    /// have (the decoder already refuses those).
    pub fn from_wire(r: &pb::CommandResult) -> Option<CommandResult> {
        let status = match pb::CommandStatus::try_from(r.status).ok()? {
            pb::CommandStatus::Succeeded => CommandStatus::Succeeded,
            pb::CommandStatus::Failed => CommandStatus::Failed,
            pb::CommandStatus::Rejected => CommandStatus::Rejected,
            pb::CommandStatus::TimedOut => CommandStatus::TimedOut,
            pb::CommandStatus::Cancelled => CommandStatus::Cancelled,
            pb::CommandStatus::Unspecified => return None,
        };
        Some(CommandResult {
            command_id: r.command_id.clone(),
            status,
            exit_code: r.exit_code,
            output: r.output.clone(),
            error: (!r.error.is_empty()).then(|| r.error.clone()),
            started_at: r.started_at_unix_ms,
            finished_at: r.finished_at_unix_ms,
            changes: r.changes.iter().map(PackageChange::from_wire).collect(),
            streamed_bytes: r.streamed_bytes,
            reboot_required: r.reboot_required,
            restarts: r.restarts.iter().map(Restart::from_wire).collect(),
        })
    }
}

/// A piece of a running command's output (a command-output record).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutputPiece {
    pub command_id: String,
    /// The byte position of `text` in the whole output.
    pub offset: u64,
    pub text: String,
}

impl OutputPiece {
    pub fn from_wire(o: &pb::CommandOutput) -> OutputPiece {
        OutputPiece {
            command_id: o.command_id.clone(),
            offset: o.offset,
            text: o.text.clone(),
        }
    }
}

/// A request the API refuses, with the sentence the client sees.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct RequestError(pub String);

/// Expiry of a command when the request names none.
pub const DEFAULT_EXPIRES_IN_SECS: u64 = 300;
/// The longest expiry a request may ask for (control refuses longer ones).
pub const MAX_EXPIRES_IN_SECS: u64 = 24 * 60 * 60;
/// Largest request body accepted.
pub const MAX_REQUEST_BYTES: usize = 4096;
/// A reboot's delay when the request names none: a minute, so that the
/// agent's result reaches the backend before the host goes down and
/// logged-in users get a warning.
pub const DEFAULT_REBOOT_DELAY_MINUTES: u32 = 1;
/// A reboot's warning to logged-in users when the request names none.
pub const DEFAULT_REBOOT_MESSAGE: &str = "Reboot requested through Palisade";
/// Commands handed to a connection at once when an agent connects (the
/// connection's queue holds 64).
const DELIVERY_BATCH: u32 = 32;

/// A validated request for a command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommandRequest {
    pub action: CommandAction,
    pub expires_in_secs: u64,
}

impl CommandRequest {
    /// The request as stored in `commands.payload` (without the expiry,
    /// which has its own column).
    pub fn payload(&self) -> serde_json::Value {
        match &self.action {
            CommandAction::RestartService { unit } => {
                serde_json::json!({ "type": self.action.kind(), "unit": unit })
            }
            CommandAction::Ping | CommandAction::RefreshInventory => {
                serde_json::json!({ "type": self.action.kind() })
            }
            CommandAction::UpgradePackages(u) => serde_json::json!({
                "type": self.action.kind(),
                "manager": u.manager.as_str(),
                "all": u.all,
                "packages": u.packages.iter().map(|t| serde_json::json!({
                    "name": t.name, "arch": t.arch, "version": t.version,
                })).collect::<Vec<_>>(),
                "dry_run": u.dry_run,
                "refresh_index": u.refresh_index,
                "timeout_secs": u.timeout.as_secs(),
            }),
            CommandAction::Cancel { command_id } => {
                serde_json::json!({ "type": self.action.kind(), "command_id": command_id })
            }
            CommandAction::Reboot {
                delay_minutes,
                message,
            } => serde_json::json!({
                "type": self.action.kind(),
                "delay_minutes": delay_minutes,
                "message": message,
            }),
        }
    }
}

/// `text` cut to `max` characters, for echoing user input in an error.
fn shorten(text: &str, max: usize) -> String {
    match text.char_indices().nth(max) {
        Some((end, _)) => format!("{}...", &text[..end]),
        None => text.to_owned(),
    }
}

/// Parses the JSON body of `POST /api/v1/hosts/{id}/commands`:
/// `{"type":"ping"}`, `{"type":"restart_service","unit":"nginx.service"}`
/// (a unit [`validate_unit_name`] accepts: no target, no unit that changes
/// the system's state), `{"type":"refresh_inventory"}`,
/// `{"type":"reboot","delay_minutes":5,"message":"..."}` (0 to
/// [`MAX_REBOOT_DELAY_MINUTES`] minutes, default
/// [`DEFAULT_REBOOT_DELAY_MINUTES`]; a message as [`validate_reboot`]
/// accepts, default [`DEFAULT_REBOOT_MESSAGE`], empty for systemd's own
/// warning), each with an optional `"expires_in_secs"` (1 to
/// [`MAX_EXPIRES_IN_SECS`], default [`DEFAULT_EXPIRES_IN_SECS`]).
/// Unknown fields are refused. The error is a sentence for the client.
pub fn parse_request(body: &[u8]) -> Result<CommandRequest, RequestError> {
    let refuse = |message: String| RequestError(message);
    if body.len() > MAX_REQUEST_BYTES {
        return Err(refuse(format!(
            "the body is larger than {MAX_REQUEST_BYTES} bytes"
        )));
    }
    let value: serde_json::Value =
        serde_json::from_slice(body).map_err(|e| refuse(format!("the body is not JSON: {e}")))?;
    let object = value
        .as_object()
        .ok_or_else(|| refuse("the body must be a JSON object".to_owned()))?;
    const TYPES: &str = "ping, restart_service, refresh_inventory or reboot";
    let kind = match object.get("type") {
        Some(serde_json::Value::String(kind)) => kind.as_str(),
        _ => return Err(refuse(format!("\"type\" is required: {TYPES}"))),
    };
    let allowed: &[&str] = match kind {
        "ping" | "refresh_inventory" => &["type", "expires_in_secs"],
        "restart_service" => &["type", "unit", "expires_in_secs"],
        "reboot" => &["type", "delay_minutes", "message", "expires_in_secs"],
        // These carry a whole approval flow (dry run, plan, approval,
        // cancellation): a bare command would bypass it.
        "upgrade_packages" | "cancel" => {
            return Err(refuse(format!(
                "{kind} commands are created by patch runs: POST /api/v1/patch-runs"
            )));
        }
        other => {
            return Err(refuse(format!(
                "unknown command type {:?} (expected {TYPES})",
                shorten(other, 64)
            )));
        }
    };
    if let Some(unknown) = object.keys().find(|k| !allowed.contains(&k.as_str())) {
        return Err(refuse(format!(
            "unknown field {:?} for a {kind} command",
            shorten(unknown, 64)
        )));
    }
    let expires_in_secs = match object.get("expires_in_secs") {
        None | Some(serde_json::Value::Null) => DEFAULT_EXPIRES_IN_SECS,
        Some(v) => v
            .as_u64()
            .filter(|n| (1..=MAX_EXPIRES_IN_SECS).contains(n))
            .ok_or_else(|| {
                refuse(format!(
                    "\"expires_in_secs\" must be a whole number from 1 to {MAX_EXPIRES_IN_SECS}"
                ))
            })?,
    };
    let action = match kind {
        "ping" => CommandAction::Ping,
        "refresh_inventory" => CommandAction::RefreshInventory,
        "reboot" => reboot_action(object)?,
        _ => {
            let unit = match object.get("unit") {
                Some(serde_json::Value::String(unit)) => unit,
                _ => {
                    return Err(refuse(
                        "\"unit\" is required for restart_service".to_owned(),
                    ));
                }
            };
            validate_unit_name(unit).map_err(|e| refuse(format!("invalid unit: {e}")))?;
            CommandAction::RestartService { unit: unit.clone() }
        }
    };
    Ok(CommandRequest {
        action,
        expires_in_secs,
    })
}

/// The reboot a request's object asks for (its type already checked).
fn reboot_action(
    object: &serde_json::Map<String, serde_json::Value>,
) -> Result<CommandAction, RequestError> {
    let delay_minutes = match object.get("delay_minutes") {
        None | Some(serde_json::Value::Null) => DEFAULT_REBOOT_DELAY_MINUTES,
        Some(v) => v
            .as_u64()
            .and_then(|n| u32::try_from(n).ok())
            .filter(|n| *n <= MAX_REBOOT_DELAY_MINUTES)
            .ok_or_else(|| {
                RequestError(format!(
                    "\"delay_minutes\" must be a whole number from 0 to {MAX_REBOOT_DELAY_MINUTES}"
                ))
            })?,
    };
    let message = match object.get("message") {
        None | Some(serde_json::Value::Null) => DEFAULT_REBOOT_MESSAGE.to_owned(),
        Some(serde_json::Value::String(message)) => message.clone(),
        Some(_) => return Err(RequestError("\"message\" must be a string".to_owned())),
    };
    reboot_action_of(delay_minutes, message)
}

/// A reboot in `delay_minutes` warning logged-in users with `message`, if
/// [`validate_reboot`] accepts them (the host page's form, the API).
pub fn reboot_action_of(
    delay_minutes: u32,
    message: String,
) -> Result<CommandAction, RequestError> {
    validate_reboot(delay_minutes, &message)
        .map_err(|e| RequestError(format!("invalid reboot: {e}")))?;
    Ok(CommandAction::Reboot {
        delay_minutes,
        message,
    })
}

/// Who asked, for the command row and the audit log.
#[derive(Debug, Clone)]
pub struct Requester {
    pub actor: Actor,
    pub source_ip: Option<String>,
    pub user_agent: Option<String>,
    /// The HTTP request's id, recorded in the audit details.
    pub request_id: String,
}

/// A signed command ready to be stored, with the audit event of its
/// creation (`command.create`); see [`prepare`].
#[derive(Debug, Clone)]
pub struct Prepared {
    pub command: NewCommand,
    pub event: NewAuditEvent,
}

/// Builds and signs the command `request` for `host_id`. Pure apart from
/// the fresh id: storing it ([`store_prepared`]) can then share a
/// transaction with what caused it (a patch run's state change).
pub fn prepare(
    pki: &crate::pki::Pki,
    host_id: &str,
    request: &CommandRequest,
    requester: Requester,
    now: Millis,
) -> Prepared {
    let id = uuid::Uuid::new_v4().to_string();
    let expires_in_ms = i64::try_from(request.expires_in_secs)
        .unwrap_or(i64::MAX)
        .saturating_mul(1000);
    let expires_at = now.saturating_add(expires_in_ms);
    let command = TypedCommand {
        agent_id: host_id.to_owned(),
        command_id: id.clone(),
        issued_at_unix_ms: now,
        expires_at_unix_ms: expires_at,
        action: request.action.clone(),
    };
    let command_bytes = encode_body(&pb::Command::from(command)).to_vec();
    let signature = pki
        .sign_command(&command_signing_message(&command_bytes))
        .to_vec();
    let payload = request.payload();
    let event = NewAuditEvent::new(
        now,
        requester.actor.clone(),
        Action::CommandCreate,
        Outcome::Success,
    )
    .target(host_id)
    .from_client(requester.source_ip.clone(), requester.user_agent.clone())
    .details(serde_json::json!({
        "command_id": id,
        "command": payload,
        "expires_at": expires_at,
        "request_id": requester.request_id,
    }));
    let command = NewCommand {
        id,
        host_id: host_id.to_owned(),
        kind: CommandKind::of(&request.action),
        payload,
        requested_by: requester.actor,
        source_ip: requester.source_ip,
        user_agent: requester.user_agent,
        issued_at: now,
        expires_at,
        command_bytes,
        signature,
    };
    Prepared { command, event }
}

/// Stores a prepared command (pending) and its audit event.
pub fn store_prepared(
    tx: &mut crate::db::Tx<'_>,
    prepared: &Prepared,
) -> Result<CommandRow, DbError> {
    let row = store::create(tx, &prepared.command)?;
    crate::audit::store::append(tx, &prepared.event)?;
    Ok(row)
}

/// Builds and signs the command `request` for `host_id`, stores it with its
/// audit event (`command.create`) in one transaction, and hands it to the
/// agent's connection if it is online. Returns the row as it stands
/// afterwards.
pub async fn issue(
    state: &AppState,
    host_id: &str,
    request: &CommandRequest,
    requester: Requester,
    now: Millis,
) -> Result<CommandRow, DbError> {
    let prepared = prepare(&state.pki, host_id, request, requester, now);
    let row = state
        .db
        .write("create command", move |tx| store_prepared(tx, &prepared))
        .await?;
    tracing::info!(command_id = %row.id, host_id, action = request.action.kind(), "command created");
    hand_over(state, row, now).await
}

/// Hands a command just stored to its agent's connection when the agent is
/// online; returns the row as it stands afterwards (delivered, or still
/// pending: it then goes out at the agent's next connection).
pub async fn hand_over(
    state: &AppState,
    row: CommandRow,
    now: Millis,
) -> Result<CommandRow, DbError> {
    if deliver(state, &row, now).await? {
        let lookup = row.id.clone();
        let current = state
            .db
            .read("load command", move |tx| store::get(tx, &lookup))
            .await?;
        return Ok(current.unwrap_or(row));
    }
    Ok(row)
}

/// Hands the stored command to its agent's live connection, if there is one
/// with room in its queue, and records the delivery. False when it stays
/// pending (it goes out at the agent's next connection).
async fn deliver(state: &AppState, row: &CommandRow, now: Millis) -> Result<bool, DbError> {
    let signed = pb::SignedCommand {
        command: row.command_bytes.clone(),
        signature: row.signature.clone(),
    };
    if !state.registry.send_command(&row.host_id, signed) {
        return Ok(false);
    }
    let id = row.id.clone();
    state
        .db
        .write("record command delivery", move |tx| {
            store::delivered(tx, &id, now)
        })
        .await?;
    tracing::info!(command_id = %row.id, host_id = %row.host_id, "command delivered to the agent's connection");
    Ok(true)
}

/// Delivers `agent_id`'s commands that are still due (see the module
/// documentation) to the connection it just opened. Call it once the
/// connection is in the registry. It never fails the connection: errors are
/// logged, and what was not delivered goes out at the next connection.
pub async fn deliver_pending(state: &AppState, agent_id: &str, now: Millis) {
    // Runs approved without a person whose upgrade was not issued yet (the
    // backend stopped right after their plan came in) get it now.
    crate::patching::start_approved(state, agent_id, now).await;
    let host = agent_id.to_owned();
    let due = match state
        .db
        .write("commands to deliver", move |tx| {
            store::to_deliver(tx, &host, now, DELIVERY_BATCH)
        })
        .await
    {
        Ok(due) => due,
        Err(e) => {
            tracing::error!(agent_id, error = %e, "cannot load the agent's pending commands");
            return;
        }
    };
    for row in due {
        match deliver(state, &row, now).await {
            Ok(true) => {}
            // Gone again, or its queue is full: the rest waits for the next connection.
            Ok(false) => break,
            Err(e) => {
                tracing::error!(agent_id, command_id = %row.id, error = %e, "cannot record a command delivery");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(body: &str) -> Result<CommandRequest, String> {
        parse_request(body.as_bytes()).map_err(|e| e.0)
    }

    #[test]
    fn the_commands_parse() {
        assert_eq!(
            parse(r#"{"type":"ping"}"#),
            Ok(CommandRequest {
                action: CommandAction::Ping,
                expires_in_secs: DEFAULT_EXPIRES_IN_SECS
            })
        );
        assert_eq!(
            parse(r#"{"type":"restart_service","unit":"nginx.service","expires_in_secs":60}"#),
            Ok(CommandRequest {
                action: CommandAction::RestartService {
                    unit: "nginx.service".into()
                },
                expires_in_secs: 60
            })
        );
        assert_eq!(
            parse(r#"{"type":"refresh_inventory","expires_in_secs":86400}"#).map(|r| r.action),
            Ok(CommandAction::RefreshInventory)
        );
        assert_eq!(
            parse(
                r#"{"type":"reboot","delay_minutes":5,"message":"kernel 6.12","expires_in_secs":60}"#
            ),
            Ok(CommandRequest {
                action: CommandAction::Reboot {
                    delay_minutes: 5,
                    message: "kernel 6.12".into()
                },
                expires_in_secs: 60
            })
        );
        assert_eq!(
            parse(r#"{"type":"reboot"}"#).map(|r| r.action),
            Ok(CommandAction::Reboot {
                delay_minutes: DEFAULT_REBOOT_DELAY_MINUTES,
                message: DEFAULT_REBOOT_MESSAGE.into()
            })
        );
        assert_eq!(
            parse(r#"{"type":"reboot","delay_minutes":0,"message":""}"#).map(|r| r.action),
            Ok(CommandAction::Reboot {
                delay_minutes: 0,
                message: String::new()
            })
        );
    }

    #[test]
    fn bad_requests_say_what_is_wrong() {
        for (body, expected) in [
            ("", "not JSON"),
            ("[]", "JSON object"),
            (r#"{"unit":"a.service"}"#, "\"type\" is required"),
            (
                r#"{"type":"poweroff"}"#,
                "unknown command type \"poweroff\"",
            ),
            (
                r#"{"type":"ping","unit":"a.service"}"#,
                "unknown field \"unit\"",
            ),
            (r#"{"type":"restart_service"}"#, "\"unit\" is required"),
            (
                r#"{"type":"restart_service","unit":"*.service"}"#,
                "invalid unit",
            ),
            (
                r#"{"type":"restart_service","unit":"-x.service"}"#,
                "invalid unit",
            ),
            (
                r#"{"type":"restart_service","unit":"nginx"}"#,
                "invalid unit",
            ),
            // A reboot or a power-off is not a service restart.
            (
                r#"{"type":"restart_service","unit":"reboot.target"}"#,
                "invalid unit",
            ),
            (
                r#"{"type":"restart_service","unit":"poweroff.target"}"#,
                "invalid unit",
            ),
            (
                r#"{"type":"restart_service","unit":"systemd-reboot.service"}"#,
                "changes the system's state",
            ),
            (
                r#"{"type":"restart_service","unit":"rescue.service"}"#,
                "changes the system's state",
            ),
            (
                r#"{"type":"restart_service","unit":"apt-daily.timer"}"#,
                "invalid unit",
            ),
            (
                r#"{"type":"reboot","unit":"a.service"}"#,
                "unknown field \"unit\"",
            ),
            (r#"{"type":"reboot","delay_minutes":-1}"#, "delay_minutes"),
            (r#"{"type":"reboot","delay_minutes":1441}"#, "delay_minutes"),
            (
                r#"{"type":"reboot","delay_minutes":4294967296}"#,
                "delay_minutes",
            ),
            (r#"{"type":"reboot","delay_minutes":1.5}"#, "delay_minutes"),
            (r#"{"type":"reboot","delay_minutes":"5"}"#, "delay_minutes"),
            (
                r#"{"type":"reboot","message":5}"#,
                "\"message\" must be a string",
            ),
            (
                r#"{"type":"reboot","message":"a\nb"}"#,
                "control characters",
            ),
            (
                r#"{"type":"reboot","message":"\u001b[2J"}"#,
                "control characters",
            ),
            (r#"{"type":"ping","expires_in_secs":0}"#, "expires_in_secs"),
            (
                r#"{"type":"ping","expires_in_secs":86401}"#,
                "expires_in_secs",
            ),
            (r#"{"type":"ping","expires_in_secs":-5}"#, "expires_in_secs"),
            (
                r#"{"type":"ping","expires_in_secs":"60"}"#,
                "expires_in_secs",
            ),
        ] {
            let err = parse(body).expect_err(body);
            assert!(err.contains(expected), "{body}: {err}");
        }
        let long = format!(r#"{{"type":"reboot","message":"{}"}}"#, "x".repeat(201));
        let err = parse(&long).expect_err("a long message");
        assert!(err.contains("longer than 200 bytes"), "{err}");
        let huge = format!(
            r#"{{"type":"ping","x":"{}"}}"#,
            "a".repeat(MAX_REQUEST_BYTES)
        );
        assert!(parse(&huge).is_err());
    }

    #[test]
    fn the_payload_names_type_and_unit() {
        let r = parse(r#"{"type":"restart_service","unit":"nginx.service"}"#).expect("valid");
        assert_eq!(
            r.payload(),
            serde_json::json!({ "type": "restart_service", "unit": "nginx.service" })
        );
        let r = parse(r#"{"type":"reboot","delay_minutes":5,"message":"soon"}"#).expect("valid");
        assert_eq!(
            r.payload(),
            serde_json::json!({ "type": "reboot", "delay_minutes": 5, "message": "soon" })
        );
    }
}
