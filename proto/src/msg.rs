//! Typed envelopes and their decoders. Everything that arrives from a network
//! or from another process goes through one of the `decode_*` functions, which
//! never panic and return a [`DecodeError`] naming what was wrong.

use crate::upgrade::{Upgrade, validate_command_output};
use prost::Message;

use crate::pb;

/// Longest string we accept in any field (hostnames, paths, versions).
pub const MAX_STRING: usize = 4096;
/// Most elements we accept in any repeated field (filesystems, interfaces, children).
pub const MAX_ITEMS: usize = 4096;

/// Most installed packages or updates in one package report (a large
/// server has ~5,000 packages).
pub const MAX_PACKAGES: usize = 65_536;

/// Why bytes from a peer could not be turned into a message.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum DecodeError {
    #[error("malformed protobuf in {message}: {reason}")]
    Protobuf {
        message: &'static str,
        reason: String,
    },
    #[error("{message} has no {field}")]
    Missing {
        message: &'static str,
        field: &'static str,
    },
    #[error("invalid {field} in {message}: {reason}")]
    Invalid {
        message: &'static str,
        field: &'static str,
        reason: String,
    },
}

fn protobuf<M: Message + Default>(name: &'static str, bytes: &[u8]) -> Result<M, DecodeError> {
    M::decode(bytes).map_err(|e| DecodeError::Protobuf {
        message: name,
        reason: e.to_string(),
    })
}

fn invalid(message: &'static str, field: &'static str, reason: impl Into<String>) -> DecodeError {
    DecodeError::Invalid {
        message,
        field,
        reason: reason.into(),
    }
}

fn check_str(message: &'static str, field: &'static str, value: &str) -> Result<(), DecodeError> {
    if value.len() > MAX_STRING {
        return Err(invalid(
            message,
            field,
            format!("longer than {MAX_STRING} bytes"),
        ));
    }
    if value.chars().any(|c| c.is_control()) {
        return Err(invalid(message, field, "contains control characters"));
    }
    Ok(())
}

fn check_items(message: &'static str, field: &'static str, len: usize) -> Result<(), DecodeError> {
    if len > MAX_ITEMS {
        return Err(invalid(
            message,
            field,
            format!("more than {MAX_ITEMS} items"),
        ));
    }
    Ok(())
}

fn check_f64(
    message: &'static str,
    field: &'static str,
    value: f64,
    max: f64,
) -> Result<(), DecodeError> {
    if !value.is_finite() || value < 0.0 || value > max {
        return Err(invalid(
            message,
            field,
            format!("{value} is outside 0..={max}"),
        ));
    }
    Ok(())
}

/// Checks the values of a [`pb::HostFacts`] that came from outside.
pub fn validate_facts(facts: &pb::HostFacts) -> Result<(), DecodeError> {
    const M: &str = "HostFacts";
    check_str(M, "hostname", &facts.hostname)?;
    if facts.hostname.is_empty() {
        return Err(DecodeError::Missing {
            message: M,
            field: "hostname",
        });
    }
    check_str(M, "os_pretty_name", &facts.os_pretty_name)?;
    check_str(M, "os_id", &facts.os_id)?;
    check_str(M, "os_version_id", &facts.os_version_id)?;
    check_str(M, "kernel_release", &facts.kernel_release)?;
    check_str(M, "architecture", &facts.architecture)?;
    Ok(())
}

/// Checks the values of a [`pb::Metrics`] that came from outside.
pub fn validate_metrics(m: &pb::Metrics) -> Result<(), DecodeError> {
    const M: &str = "Metrics";
    check_f64(M, "cpu_percent", m.cpu_percent, 100.0)?;
    // A load average above a million is not a measurement, it is an attack.
    check_f64(M, "load_1", m.load_1, 1e6)?;
    check_f64(M, "load_5", m.load_5, 1e6)?;
    check_f64(M, "load_15", m.load_15, 1e6)?;
    if m.memory_available_bytes > m.memory_total_bytes {
        return Err(invalid(
            M,
            "memory_available_bytes",
            "greater than memory_total_bytes",
        ));
    }
    if m.swap_free_bytes > m.swap_total_bytes {
        return Err(invalid(
            M,
            "swap_free_bytes",
            "greater than swap_total_bytes",
        ));
    }
    check_items(M, "filesystems", m.filesystems.len())?;
    for fs in &m.filesystems {
        check_str(M, "filesystems.mount_point", &fs.mount_point)?;
        check_str(M, "filesystems.device", &fs.device)?;
        check_str(M, "filesystems.fs_type", &fs.fs_type)?;
        if fs.used_bytes > fs.total_bytes {
            return Err(invalid(
                M,
                "filesystems.used_bytes",
                "greater than total_bytes",
            ));
        }
    }
    check_items(M, "network", m.network.len())?;
    for n in &m.network {
        check_str(M, "network.interface", &n.interface)?;
    }
    Ok(())
}

/// Largest command output carried in a result (bytes).
pub const MAX_COMMAND_OUTPUT: usize = 64 * 1024;
/// Largest encoded command accepted.
pub const MAX_COMMAND_BYTES: usize = 512 * 1024;

/// Checks a command result that came from outside (control, or an agent).
pub fn validate_command_result(r: &pb::CommandResult) -> Result<(), DecodeError> {
    const M: &str = "CommandResult";
    check_str(M, "command_id", &r.command_id)?;
    if pb::CommandStatus::try_from(r.status).is_err()
        || r.status == pb::CommandStatus::Unspecified as i32
    {
        return Err(invalid(M, "status", format!("unknown status {}", r.status)));
    }
    // Output is free text (newlines and tabs are expected), only its size is capped.
    if r.output.len() > MAX_COMMAND_OUTPUT + 1024 {
        return Err(invalid(
            M,
            "output",
            format!("longer than {MAX_COMMAND_OUTPUT} bytes"),
        ));
    }
    crate::upgrade::validate_changes(&r.changes)?;
    if r.error.len() > MAX_STRING {
        return Err(invalid(
            M,
            "error",
            format!("longer than {MAX_STRING} bytes"),
        ));
    }
    Ok(())
}

/// Checks the envelope of a signed command (its content is control's to verify).
pub fn validate_signed_command(c: &pb::SignedCommand) -> Result<(), DecodeError> {
    const M: &str = "SignedCommand";
    if c.command.is_empty() {
        return Err(DecodeError::Missing {
            message: M,
            field: "command",
        });
    }
    if c.command.len() > MAX_COMMAND_BYTES {
        return Err(invalid(
            M,
            "command",
            format!("larger than {MAX_COMMAND_BYTES} bytes"),
        ));
    }
    if c.signature.len() != 64 {
        return Err(invalid(M, "signature", "an Ed25519 signature has 64 bytes"));
    }
    Ok(())
}

// ---------------------------------------------------------------------------
// Signed commands (backend -> control)

/// What the backend's Ed25519 signature covers: this context, then the
/// encoded `Command` exactly as carried in `SignedCommand.command`. The
/// context, NUL-terminated, keeps a command signature from ever being valid
/// for another use of the same key.
pub const COMMAND_SIGNING_CONTEXT: &[u8] = b"palisade-command-v1\0";

/// Longest command id or agent id accepted in a command (the backend sends
/// UUIDs: 36 bytes).
pub const MAX_COMMAND_ID: usize = 128;

/// Longest systemd unit name accepted (systemd's own limit is 255).
pub const MAX_UNIT_NAME: usize = 256;

/// The unit types a `restart_service` command may name.
pub const RESTARTABLE_UNIT_SUFFIXES: &[&str] =
    &[".service", ".socket", ".timer", ".target", ".path"];

/// The bytes the command-signing key signs for an encoded `Command`:
/// [`COMMAND_SIGNING_CONTEXT`] followed by `command`.
pub fn command_signing_message(command: &[u8]) -> Vec<u8> {
    let mut message = Vec::with_capacity(COMMAND_SIGNING_CONTEXT.len() + command.len());
    message.extend_from_slice(COMMAND_SIGNING_CONTEXT);
    message.extend_from_slice(command);
    message
}

/// A decoded command: every field present and well-formed, and an action
/// this build knows. Whether it is *acceptable* (signature, this agent, not
/// expired, never seen) is control's decision, not the decoder's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TypedCommand {
    pub agent_id: String,
    pub command_id: String,
    pub issued_at_unix_ms: i64,
    pub expires_at_unix_ms: i64,
    pub action: CommandAction,
}

/// What a command asks control to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CommandAction {
    Ping,
    /// Restart one systemd unit; the name passed [`validate_unit_name`].
    RestartService {
        unit: String,
    },
    RefreshInventory,
    /// Upgrade packages (or simulate it); checked by [`Upgrade::from_wire`].
    UpgradePackages(Upgrade),
    /// Stop the running command with this id.
    Cancel {
        command_id: String,
    },
}

impl CommandAction {
    /// The stable name of the action (API, logs, the backend's table).
    pub fn kind(&self) -> &'static str {
        match self {
            CommandAction::Ping => "ping",
            CommandAction::RestartService { .. } => "restart_service",
            CommandAction::RefreshInventory => "refresh_inventory",
            CommandAction::UpgradePackages(_) => "upgrade_packages",
            CommandAction::Cancel { .. } => "cancel",
        }
    }
}

impl From<TypedCommand> for pb::Command {
    fn from(c: TypedCommand) -> Self {
        let action = match c.action {
            CommandAction::Ping => pb::command::Action::Ping(pb::Ping {}),
            CommandAction::RestartService { unit } => {
                pb::command::Action::RestartService(pb::RestartService { unit })
            }
            CommandAction::RefreshInventory => {
                pb::command::Action::RefreshInventory(pb::RefreshInventory {})
            }
            CommandAction::UpgradePackages(u) => pb::command::Action::UpgradePackages(u.to_wire()),
            CommandAction::Cancel { command_id } => {
                pb::command::Action::Cancel(pb::CancelCommand { command_id })
            }
        };
        pb::Command {
            agent_id: c.agent_id,
            command_id: c.command_id,
            issued_at_unix_ms: c.issued_at_unix_ms,
            expires_at_unix_ms: c.expires_at_unix_ms,
            action: Some(action),
        }
    }
}

/// The error [`decode_command`] returns for a command whose action this
/// build does not know (an action added by a newer backend decodes as none).
pub const UNKNOWN_COMMAND_TYPE: DecodeError = DecodeError::Missing {
    message: "Command",
    field: "action",
};

fn check_id(field: &'static str, value: &str) -> Result<(), DecodeError> {
    const M: &str = "Command";
    if value.is_empty() {
        return Err(DecodeError::Missing { message: M, field });
    }
    if value.len() > MAX_COMMAND_ID {
        return Err(invalid(
            M,
            field,
            format!("longer than {MAX_COMMAND_ID} bytes"),
        ));
    }
    // Ids end up in logs, file keys and SQL rows: printable ASCII only.
    if !value.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(invalid(M, field, "not printable ASCII"));
    }
    Ok(())
}

/// Decodes the bytes of a `Command` (the *signed* bytes: verify the
/// signature over them first). An unknown action is [`UNKNOWN_COMMAND_TYPE`];
/// a `restart_service` unit must pass [`validate_unit_name`].
pub fn decode_command(bytes: &[u8]) -> Result<TypedCommand, DecodeError> {
    const M: &str = "Command";
    if bytes.len() > MAX_COMMAND_BYTES {
        return Err(invalid(
            M,
            "command",
            format!("larger than {MAX_COMMAND_BYTES} bytes"),
        ));
    }
    let c = protobuf::<pb::Command>(M, bytes)?;
    check_id("agent_id", &c.agent_id)?;
    check_id("command_id", &c.command_id)?;
    let action = match c.action.ok_or(UNKNOWN_COMMAND_TYPE)? {
        pb::command::Action::Ping(_) => CommandAction::Ping,
        pb::command::Action::RestartService(r) => {
            validate_unit_name(&r.unit)
                .map_err(|reason| invalid(M, "restart_service.unit", reason))?;
            CommandAction::RestartService { unit: r.unit }
        }
        pb::command::Action::RefreshInventory(_) => CommandAction::RefreshInventory,
        pb::command::Action::UpgradePackages(u) => {
            CommandAction::UpgradePackages(Upgrade::from_wire(&u)?)
        }
        pb::command::Action::Cancel(c) => {
            check_id("cancel.command_id", &c.command_id)?;
            CommandAction::Cancel {
                command_id: c.command_id,
            }
        }
    };
    Ok(TypedCommand {
        agent_id: c.agent_id,
        command_id: c.command_id,
        issued_at_unix_ms: c.issued_at_unix_ms,
        expires_at_unix_ms: c.expires_at_unix_ms,
        action,
    })
}

/// Checks a systemd unit name strictly enough that it can only ever name
/// one unit: 1 to [`MAX_UNIT_NAME`] bytes of `A-Z a-z 0-9 : _ . @ - \`
/// (systemd's unit-name alphabet, so no glob characters: `systemctl` would
/// expand `*`, `?` and `[`), not starting with `-` or `.`, ending in one of
/// [`RESTARTABLE_UNIT_SUFFIXES`] with a non-empty name before it.
pub fn validate_unit_name(unit: &str) -> Result<(), String> {
    if unit.is_empty() {
        return Err("the unit name is empty".into());
    }
    if unit.len() > MAX_UNIT_NAME {
        return Err(format!(
            "the unit name is longer than {MAX_UNIT_NAME} bytes"
        ));
    }
    if let Some(bad) = unit
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, ':' | '_' | '.' | '@' | '-' | '\\')))
    {
        return Err(format!(
            "the unit name contains {bad:?}; allowed are letters, digits and : _ . @ - \\"
        ));
    }
    if unit.starts_with('-') || unit.starts_with('.') {
        return Err("the unit name must not start with '-' or '.'".into());
    }
    let Some(stem) = RESTARTABLE_UNIT_SUFFIXES
        .iter()
        .find_map(|suffix| unit.strip_suffix(suffix))
    else {
        return Err(format!(
            "the unit name must end in one of {}",
            RESTARTABLE_UNIT_SUFFIXES.join(", ")
        ));
    };
    if stem.is_empty() || stem.starts_with('@') {
        return Err("the unit name has nothing before its suffix".into());
    }
    Ok(())
}

// ---------------------------------------------------------------------------
// Control's pin (agent-local state)

/// What control trusts: the agent id and the backend's command-signing key,
/// written at enrollment where only root can write (`ControlPin` in
/// `state.proto`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ControlPin {
    pub agent_id: String,
    pub command_signing_key: [u8; 32],
}

impl From<ControlPin> for pb::ControlPin {
    fn from(p: ControlPin) -> Self {
        pb::ControlPin {
            agent_id: p.agent_id,
            command_signing_key: p.command_signing_key.to_vec(),
        }
    }
}

/// Decodes the control pin file.
pub fn decode_control_pin(bytes: &[u8]) -> Result<ControlPin, DecodeError> {
    const M: &str = "ControlPin";
    if bytes.len() > 4096 {
        return Err(invalid(M, "pin", "larger than 4096 bytes"));
    }
    let p = protobuf::<pb::ControlPin>(M, bytes)?;
    if p.agent_id.is_empty() {
        return Err(DecodeError::Missing {
            message: M,
            field: "agent_id",
        });
    }
    if p.agent_id.len() > MAX_COMMAND_ID || !p.agent_id.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(invalid(
            M,
            "agent_id",
            format!("not 1 to {MAX_COMMAND_ID} bytes of printable ASCII"),
        ));
    }
    let command_signing_key: [u8; 32] =
        p.command_signing_key.as_slice().try_into().map_err(|_| {
            invalid(
                M,
                "command_signing_key",
                "an Ed25519 public key has 32 bytes",
            )
        })?;
    Ok(ControlPin {
        agent_id: p.agent_id,
        command_signing_key,
    })
}

fn validate_agent_health(h: &pb::AgentHealth) -> Result<(), DecodeError> {
    const M: &str = "AgentHealth";
    check_items(M, "children", h.children.len())?;
    for c in &h.children {
        Role::parse(&c.role)
            .map_err(|_| invalid(M, "children.role", format!("unknown role {:?}", c.role)))?;
        check_str(M, "children.sandbox", &c.sandbox)?;
    }
    Ok(())
}

fn validate_package_report(r: &pb::PackageReport) -> Result<(), DecodeError> {
    const M: &str = "PackageReport";
    check_items(M, "reboot_reasons", r.reboot_reasons.len())?;
    for reason in &r.reboot_reasons {
        check_str(M, "reboot_reasons", reason)?;
    }
    let packages = |installed: &[pb::InstalledPackage]| -> Result<(), DecodeError> {
        if installed.len() > MAX_PACKAGES {
            return Err(invalid(
                M,
                "installed",
                format!("more than {MAX_PACKAGES} packages"),
            ));
        }
        for p in installed {
            check_key(&p.name, &p.arch, &p.version, true)?;
            check_str(M, "installed.source", &p.source)?;
        }
        Ok(())
    };
    let updates = |updates: &[pb::PackageUpdate]| -> Result<(), DecodeError> {
        if updates.len() > MAX_PACKAGES {
            return Err(invalid(
                M,
                "updates",
                format!("more than {MAX_PACKAGES} updates"),
            ));
        }
        for u in updates {
            check_key(&u.name, &u.arch, &u.installed, true)?;
            check_str(M, "updates.candidate", &u.candidate)?;
            if u.candidate.is_empty() {
                return Err(invalid(M, "updates.candidate", "empty"));
            }
            if matches!(
                pb::UpdateStatus::try_from(u.status),
                Err(_) | Ok(pb::UpdateStatus::Unspecified)
            ) {
                return Err(invalid(
                    M,
                    "updates.status",
                    format!("unknown status {}", u.status),
                ));
            }
            for (field, value) in [
                ("updates.detail", &u.detail),
                ("updates.severity", &u.severity),
            ] {
                check_str(M, field, value)?;
            }
            for (field, list) in [
                ("updates.origins", &u.origins),
                ("updates.advisories", &u.advisories),
                ("updates.cves", &u.cves),
            ] {
                check_items(M, field, list.len())?;
                for item in list {
                    check_str(M, field, item)?;
                }
            }
        }
        Ok(())
    };
    let keys = |field: &'static str, keys: &[pb::PackageKey], with_version: bool| {
        if keys.len() > MAX_PACKAGES {
            return Err(invalid(M, field, format!("more than {MAX_PACKAGES} keys")));
        }
        keys.iter()
            .try_for_each(|k| check_key(&k.name, &k.arch, &k.version, with_version))
    };
    match r.change.as_ref().ok_or(DecodeError::Missing {
        message: M,
        field: "change",
    })? {
        pb::package_report::Change::Whole(whole) => {
            if matches!(
                pb::PackageManager::try_from(whole.manager),
                Err(_) | Ok(pb::PackageManager::Unspecified)
            ) {
                return Err(invalid(
                    M,
                    "whole.manager",
                    format!("unknown package manager {}", whole.manager),
                ));
            }
            packages(&whole.installed)?;
            updates(&whole.updates)?;
        }
        pb::package_report::Change::Delta(delta) => {
            for (field, digest) in [
                ("delta.base_sha256", &delta.base_sha256),
                ("delta.result_sha256", &delta.result_sha256),
            ] {
                if digest.len() != 32 {
                    return Err(invalid(M, field, "not a SHA-256 digest (32 bytes)"));
                }
            }
            packages(&delta.installed_set)?;
            keys("delta.installed_removed", &delta.installed_removed, true)?;
            updates(&delta.updates_set)?;
            keys("delta.updates_removed", &delta.updates_removed, false)?;
        }
    }
    Ok(())
}

/// A package's name, architecture and version: not empty (the version may
/// be absent where the key has none), no control characters, bounded.
fn check_key(name: &str, arch: &str, version: &str, with_version: bool) -> Result<(), DecodeError> {
    const M: &str = "PackageReport";
    for (field, value) in [
        ("package name", name),
        ("package arch", arch),
        ("package version", version),
    ] {
        check_str(M, field, value)?;
    }
    if name.is_empty() || arch.is_empty() {
        return Err(invalid(
            M,
            "package name",
            "a package without a name or architecture",
        ));
    }
    if with_version == version.is_empty() {
        return Err(invalid(
            M,
            "package version",
            if with_version {
                "a package without a version"
            } else {
                "an update key with a version"
            },
        ));
    }
    Ok(())
}

// ---------------------------------------------------------------------------
// Uplink: agent -> backend

/// A frame from the agent to the backend.
#[derive(Debug, Clone, PartialEq)]
pub enum Uplink {
    Hello(Hello),
    Record(Record),
    /// Liveness probe; answered with an [`Downlink::Ack`].
    Ping,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Hello {
    pub protocol_version: u32,
    pub agent_version: String,
    /// Records the agent's spool dropped because it was full, since it was created.
    pub spool_dropped_total: u64,
}

/// One durable record. `seq` is at least 1.
#[derive(Debug, Clone, PartialEq)]
pub struct Record {
    pub seq: u64,
    pub created_at_unix_ms: i64,
    pub body: RecordBody,
}

#[derive(Debug, Clone, PartialEq)]
pub enum RecordBody {
    Facts(pb::HostFacts),
    Metrics(pb::Metrics),
    AgentHealth(pb::AgentHealth),
    CommandResult(pb::CommandResult),
    Packages(pb::PackageReport),
    CommandOutput(pb::CommandOutput),
}

impl RecordBody {
    /// A short name for logs and the backend's record ledger.
    pub fn kind(&self) -> &'static str {
        match self {
            RecordBody::Facts(_) => "facts",
            RecordBody::Metrics(_) => "metrics",
            RecordBody::AgentHealth(_) => "agent_health",
            RecordBody::CommandResult(_) => "command_result",
            RecordBody::Packages(_) => "packages",
            RecordBody::CommandOutput(_) => "command_output",
        }
    }
}

impl TryFrom<pb::Record> for Record {
    type Error = DecodeError;

    fn try_from(r: pb::Record) -> Result<Self, DecodeError> {
        const M: &str = "Record";
        if r.seq == 0 {
            return Err(invalid(M, "seq", "sequence numbers start at 1"));
        }
        let body = match r.body.ok_or(DecodeError::Missing {
            message: M,
            field: "body",
        })? {
            pb::record::Body::Facts(f) => {
                validate_facts(&f)?;
                RecordBody::Facts(f)
            }
            pb::record::Body::Metrics(m) => {
                validate_metrics(&m)?;
                RecordBody::Metrics(m)
            }
            pb::record::Body::AgentHealth(h) => {
                validate_agent_health(&h)?;
                RecordBody::AgentHealth(h)
            }
            pb::record::Body::CommandResult(c) => {
                validate_command_result(&c)?;
                RecordBody::CommandResult(c)
            }
            pb::record::Body::Packages(p) => {
                validate_package_report(&p)?;
                RecordBody::Packages(p)
            }
            pb::record::Body::CommandOutput(o) => {
                validate_command_output(&o)?;
                RecordBody::CommandOutput(o)
            }
        };
        Ok(Record {
            seq: r.seq,
            created_at_unix_ms: r.created_at_unix_ms,
            body,
        })
    }
}

impl From<Record> for pb::Record {
    fn from(r: Record) -> Self {
        let body = match r.body {
            RecordBody::Facts(f) => pb::record::Body::Facts(f),
            RecordBody::Metrics(m) => pb::record::Body::Metrics(m),
            RecordBody::AgentHealth(h) => pb::record::Body::AgentHealth(h),
            RecordBody::CommandResult(c) => pb::record::Body::CommandResult(c),
            RecordBody::Packages(p) => pb::record::Body::Packages(p),
            RecordBody::CommandOutput(o) => pb::record::Body::CommandOutput(o),
        };
        pb::Record {
            seq: r.seq,
            created_at_unix_ms: r.created_at_unix_ms,
            body: Some(body),
        }
    }
}

impl TryFrom<pb::UplinkFrame> for Uplink {
    type Error = DecodeError;

    fn try_from(f: pb::UplinkFrame) -> Result<Self, DecodeError> {
        match f.msg.ok_or(DecodeError::Missing {
            message: "UplinkFrame",
            field: "msg",
        })? {
            pb::uplink_frame::Msg::Hello(h) => {
                check_str("Hello", "agent_version", &h.agent_version)?;
                Ok(Uplink::Hello(Hello {
                    protocol_version: h.protocol_version,
                    agent_version: h.agent_version,
                    spool_dropped_total: h.spool_dropped_total,
                }))
            }
            pb::uplink_frame::Msg::Record(r) => Ok(Uplink::Record(r.try_into()?)),
            pb::uplink_frame::Msg::Heartbeat(_) => Ok(Uplink::Ping),
        }
    }
}

impl From<Uplink> for pb::UplinkFrame {
    fn from(u: Uplink) -> Self {
        let msg = match u {
            Uplink::Hello(h) => pb::uplink_frame::Msg::Hello(pb::Hello {
                protocol_version: h.protocol_version,
                agent_version: h.agent_version,
                spool_dropped_total: h.spool_dropped_total,
            }),
            Uplink::Record(r) => pb::uplink_frame::Msg::Record(r.into()),
            Uplink::Ping => pb::uplink_frame::Msg::Heartbeat(pb::Heartbeat {}),
        };
        pb::UplinkFrame { msg: Some(msg) }
    }
}

/// Decodes one frame body sent by an agent.
pub fn decode_uplink(bytes: &[u8]) -> Result<Uplink, DecodeError> {
    protobuf::<pb::UplinkFrame>("UplinkFrame", bytes)?.try_into()
}

/// Decodes one spooled record (the agent's own spool holds `pb::Record` bodies).
pub fn decode_record(bytes: &[u8]) -> Result<Record, DecodeError> {
    protobuf::<pb::Record>("Record", bytes)?.try_into()
}

// ---------------------------------------------------------------------------
// Downlink: backend -> agent

/// A frame from the backend to the agent.
#[derive(Debug, Clone, PartialEq)]
pub enum Downlink {
    HelloAck {
        protocol_version: u32,
        stored_up_to_seq: u64,
        server_time_unix_ms: i64,
    },
    Ack {
        up_to_seq: u64,
    },
    Refused(String),
    /// A signed command for control, passed on untouched.
    Command(pb::SignedCommand),
    /// The SHA-256 of the package inventory the backend holds for this
    /// agent; `None` when it holds none to build a change on.
    PackagesHeld(Option<[u8; 32]>),
}

/// A `PackagesHeld` digest: empty for none, else exactly 32 bytes.
fn packages_held(
    message: &'static str,
    h: &pb::PackagesHeld,
) -> Result<Option<[u8; 32]>, DecodeError> {
    if h.sha256.is_empty() {
        return Ok(None);
    }
    h.sha256
        .as_slice()
        .try_into()
        .map(Some)
        .map_err(|_| invalid(message, "packages_held.sha256", "not 32 bytes"))
}

fn packages_held_to_wire(digest: Option<[u8; 32]>) -> pb::PackagesHeld {
    pb::PackagesHeld {
        sha256: digest.map(|d| d.to_vec()).unwrap_or_default(),
    }
}

impl TryFrom<pb::DownlinkFrame> for Downlink {
    type Error = DecodeError;

    fn try_from(f: pb::DownlinkFrame) -> Result<Self, DecodeError> {
        Ok(
            match f.msg.ok_or(DecodeError::Missing {
                message: "DownlinkFrame",
                field: "msg",
            })? {
                pb::downlink_frame::Msg::HelloAck(a) => Downlink::HelloAck {
                    protocol_version: a.protocol_version,
                    stored_up_to_seq: a.stored_up_to_seq,
                    server_time_unix_ms: a.server_time_unix_ms,
                },
                pb::downlink_frame::Msg::Ack(a) => Downlink::Ack {
                    up_to_seq: a.up_to_seq,
                },
                pb::downlink_frame::Msg::Refused(reason) => {
                    check_str("DownlinkFrame", "refused", &reason)?;
                    Downlink::Refused(reason)
                }
                pb::downlink_frame::Msg::Command(c) => {
                    validate_signed_command(&c)?;
                    Downlink::Command(c)
                }
                pb::downlink_frame::Msg::PackagesHeld(h) => {
                    Downlink::PackagesHeld(packages_held("DownlinkFrame", &h)?)
                }
            },
        )
    }
}

impl From<Downlink> for pb::DownlinkFrame {
    fn from(d: Downlink) -> Self {
        let msg = match d {
            Downlink::HelloAck {
                protocol_version,
                stored_up_to_seq,
                server_time_unix_ms,
            } => pb::downlink_frame::Msg::HelloAck(pb::HelloAck {
                protocol_version,
                stored_up_to_seq,
                server_time_unix_ms,
            }),
            Downlink::Ack { up_to_seq } => pb::downlink_frame::Msg::Ack(pb::Ack { up_to_seq }),
            Downlink::Refused(reason) => pb::downlink_frame::Msg::Refused(reason),
            Downlink::Command(c) => pb::downlink_frame::Msg::Command(c),
            Downlink::PackagesHeld(d) => {
                pb::downlink_frame::Msg::PackagesHeld(packages_held_to_wire(d))
            }
        };
        pb::DownlinkFrame { msg: Some(msg) }
    }
}

/// Decodes one frame body sent by the backend.
pub fn decode_downlink(bytes: &[u8]) -> Result<Downlink, DecodeError> {
    protobuf::<pb::DownlinkFrame>("DownlinkFrame", bytes)?.try_into()
}

// ---------------------------------------------------------------------------
// Local IPC

/// The three child roles the platform supervises.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Role {
    Collector,
    Monitor,
    Control,
}

impl Role {
    pub const ALL: [Role; 3] = [Role::Collector, Role::Monitor, Role::Control];

    pub fn as_str(self) -> &'static str {
        match self {
            Role::Collector => "collector",
            Role::Monitor => "monitor",
            Role::Control => "control",
        }
    }

    pub fn parse(s: &str) -> Result<Role, DecodeError> {
        match s {
            "collector" => Ok(Role::Collector),
            "monitor" => Ok(Role::Monitor),
            "control" => Ok(Role::Control),
            other => Err(invalid(
                "ChildHello",
                "role",
                format!("unknown role {other:?}"),
            )),
        }
    }
}

impl std::fmt::Display for Role {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A message from the platform to a child.
#[derive(Debug, Clone, PartialEq)]
pub enum ToChild {
    Config {
        metrics_interval_ms: u64,
    },
    HealthCheck {
        nonce: u64,
    },
    CollectFacts,
    /// For control: a command exactly as the backend signed it.
    Execute(pb::SignedCommand),
    /// For the collector: the package inventory the backend holds (see
    /// [`Downlink::PackagesHeld`]).
    PackagesHeld(Option<[u8; 32]>),
}

impl From<ToChild> for pb::ToChild {
    fn from(m: ToChild) -> Self {
        let msg = match m {
            ToChild::Config {
                metrics_interval_ms,
            } => pb::to_child::Msg::Config(pb::ChildConfig {
                metrics_interval_ms,
            }),
            ToChild::HealthCheck { nonce } => {
                pb::to_child::Msg::HealthCheck(pb::HealthCheck { nonce })
            }
            ToChild::CollectFacts => pb::to_child::Msg::CollectFacts(pb::CollectFacts {}),
            ToChild::Execute(c) => pb::to_child::Msg::Execute(c),
            ToChild::PackagesHeld(d) => pb::to_child::Msg::PackagesHeld(packages_held_to_wire(d)),
        };
        pb::ToChild { msg: Some(msg) }
    }
}

/// Decodes one frame body sent by the platform to a child.
pub fn decode_to_child(bytes: &[u8]) -> Result<ToChild, DecodeError> {
    let m = protobuf::<pb::ToChild>("ToChild", bytes)?;
    Ok(
        match m.msg.ok_or(DecodeError::Missing {
            message: "ToChild",
            field: "msg",
        })? {
            pb::to_child::Msg::Config(c) => {
                if c.metrics_interval_ms == 0 {
                    return Err(invalid(
                        "ChildConfig",
                        "metrics_interval_ms",
                        "must be positive",
                    ));
                }
                ToChild::Config {
                    metrics_interval_ms: c.metrics_interval_ms,
                }
            }
            pb::to_child::Msg::HealthCheck(h) => ToChild::HealthCheck { nonce: h.nonce },
            pb::to_child::Msg::CollectFacts(_) => ToChild::CollectFacts,
            pb::to_child::Msg::Execute(c) => {
                validate_signed_command(&c)?;
                ToChild::Execute(c)
            }
            pb::to_child::Msg::PackagesHeld(h) => {
                ToChild::PackagesHeld(packages_held("ToChild", &h)?)
            }
        },
    )
}

/// A message from a child to the platform.
#[derive(Debug, Clone, PartialEq)]
pub enum FromChild {
    Hello {
        role: Role,
        pid: u32,
        version: String,
        sandbox: String,
    },
    Health {
        nonce: u64,
        ok: bool,
        detail: String,
    },
    Facts(pb::HostFacts),
    Metrics(pb::Metrics),
    CommandResult(pb::CommandResult),
    Packages(pb::PackageReport),
    CommandOutput(pb::CommandOutput),
}

impl From<FromChild> for pb::FromChild {
    fn from(m: FromChild) -> Self {
        let msg = match m {
            FromChild::Hello {
                role,
                pid,
                version,
                sandbox,
            } => pb::from_child::Msg::Hello(pb::ChildHello {
                role: role.as_str().to_owned(),
                pid,
                version,
                sandbox,
            }),
            FromChild::Health { nonce, ok, detail } => {
                pb::from_child::Msg::Health(pb::HealthReport { nonce, ok, detail })
            }
            FromChild::Facts(f) => pb::from_child::Msg::Facts(f),
            FromChild::Metrics(m) => pb::from_child::Msg::Metrics(m),
            FromChild::CommandResult(r) => pb::from_child::Msg::CommandResult(r),
            FromChild::Packages(p) => pb::from_child::Msg::Packages(p),
            FromChild::CommandOutput(o) => pb::from_child::Msg::CommandOutput(o),
        };
        pb::FromChild { msg: Some(msg) }
    }
}

/// Decodes one frame body sent by a child to the platform.
pub fn decode_from_child(bytes: &[u8]) -> Result<FromChild, DecodeError> {
    let m = protobuf::<pb::FromChild>("FromChild", bytes)?;
    Ok(
        match m.msg.ok_or(DecodeError::Missing {
            message: "FromChild",
            field: "msg",
        })? {
            pb::from_child::Msg::Hello(h) => {
                check_str("ChildHello", "version", &h.version)?;
                check_str("ChildHello", "sandbox", &h.sandbox)?;
                FromChild::Hello {
                    role: Role::parse(&h.role)?,
                    pid: h.pid,
                    version: h.version,
                    sandbox: h.sandbox,
                }
            }
            pb::from_child::Msg::Health(h) => {
                check_str("HealthReport", "detail", &h.detail)?;
                FromChild::Health {
                    nonce: h.nonce,
                    ok: h.ok,
                    detail: h.detail,
                }
            }
            pb::from_child::Msg::Facts(f) => {
                validate_facts(&f)?;
                FromChild::Facts(f)
            }
            pb::from_child::Msg::Metrics(m) => {
                validate_metrics(&m)?;
                FromChild::Metrics(m)
            }
            pb::from_child::Msg::CommandResult(r) => {
                validate_command_result(&r)?;
                FromChild::CommandResult(r)
            }
            pb::from_child::Msg::Packages(p) => {
                validate_package_report(&p)?;
                FromChild::Packages(p)
            }
            pb::from_child::Msg::CommandOutput(o) => {
                validate_command_output(&o)?;
                FromChild::CommandOutput(o)
            }
        },
    )
}

// ---------------------------------------------------------------------------
// Enrollment

/// Decodes an enrollment request body (received by the backend from anyone).
pub fn decode_enroll_request(bytes: &[u8]) -> Result<pb::EnrollRequest, DecodeError> {
    const M: &str = "EnrollRequest";
    let r = protobuf::<pb::EnrollRequest>(M, bytes)?;
    if r.token.is_empty() {
        return Err(DecodeError::Missing {
            message: M,
            field: "token",
        });
    }
    check_str(M, "token", &r.token)?;
    check_str(M, "hostname", &r.hostname)?;
    if r.hostname.is_empty() {
        return Err(DecodeError::Missing {
            message: M,
            field: "hostname",
        });
    }
    if r.csr_der.is_empty() {
        return Err(DecodeError::Missing {
            message: M,
            field: "csr_der",
        });
    }
    if r.csr_der.len() > 16 * 1024 {
        return Err(invalid(M, "csr_der", "larger than 16 KiB"));
    }
    Ok(r)
}

/// Decodes the backend's enrollment answer (received by the agent).
pub fn decode_enroll_response(bytes: &[u8]) -> Result<pb::EnrollResponse, DecodeError> {
    const M: &str = "EnrollResponse";
    let r = protobuf::<pb::EnrollResponse>(M, bytes)?;
    check_str(M, "agent_id", &r.agent_id)?;
    if r.agent_id.is_empty() {
        return Err(DecodeError::Missing {
            message: M,
            field: "agent_id",
        });
    }
    if r.certificate_der.is_empty() {
        return Err(DecodeError::Missing {
            message: M,
            field: "certificate_der",
        });
    }
    if r.agent_ca_der.is_empty() {
        return Err(DecodeError::Missing {
            message: M,
            field: "agent_ca_der",
        });
    }
    if r.command_signing_key.len() != 32 {
        return Err(invalid(
            M,
            "command_signing_key",
            "an Ed25519 public key has 32 bytes",
        ));
    }
    Ok(r)
}

/// Decodes the backend's enrollment refusal (received by the agent).
pub fn decode_enroll_error(bytes: &[u8]) -> Result<pb::EnrollError, DecodeError> {
    let e = protobuf::<pb::EnrollError>("EnrollError", bytes)?;
    check_str("EnrollError", "message", &e.message)?;
    Ok(e)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::frame::encode_body;
    use proptest::prelude::*;

    fn metrics() -> pb::Metrics {
        pb::Metrics {
            collected_at_unix_ms: 1,
            cpu_percent: 12.5,
            memory_total_bytes: 100,
            memory_available_bytes: 40,
            swap_total_bytes: 10,
            swap_free_bytes: 10,
            load_1: 0.5,
            load_5: 0.4,
            load_15: 0.3,
            filesystems: vec![pb::FilesystemUsage {
                mount_point: "/".into(),
                device: "/dev/vda1".into(),
                fs_type: "ext4".into(),
                total_bytes: 10,
                used_bytes: 5,
                available_bytes: 5,
            }],
            network: vec![],
            uptime_seconds: 3,
            process_count: 4,
        }
    }

    #[test]
    fn record_round_trip() {
        let rec = Record {
            seq: 9,
            created_at_unix_ms: 5,
            body: RecordBody::Metrics(metrics()),
        };
        let frame: pb::UplinkFrame = Uplink::Record(rec.clone()).into();
        assert_eq!(decode_uplink(&encode_body(&frame)), Ok(Uplink::Record(rec)));
    }

    #[test]
    fn hello_round_trip_carries_the_spool_drop_count() {
        let hello = Hello {
            protocol_version: 1,
            agent_version: "0.1.0".to_owned(),
            spool_dropped_total: 12_345,
        };
        let frame: pb::UplinkFrame = Uplink::Hello(hello.clone()).into();
        assert_eq!(
            decode_uplink(&encode_body(&frame)),
            Ok(Uplink::Hello(hello))
        );
    }

    #[test]
    fn missing_oneof_is_a_typed_error() {
        let frame = pb::UplinkFrame { msg: None };
        assert_eq!(
            decode_uplink(&encode_body(&frame)),
            Err(DecodeError::Missing {
                message: "UplinkFrame",
                field: "msg"
            })
        );
        let rec = pb::UplinkFrame {
            msg: Some(pb::uplink_frame::Msg::Record(pb::Record {
                seq: 1,
                created_at_unix_ms: 0,
                body: None,
            })),
        };
        assert_eq!(
            decode_uplink(&encode_body(&rec)),
            Err(DecodeError::Missing {
                message: "Record",
                field: "body"
            })
        );
    }

    fn package_report(change: pb::package_report::Change) -> pb::Record {
        pb::Record {
            seq: 7,
            created_at_unix_ms: 1,
            body: Some(pb::record::Body::Packages(pb::PackageReport {
                collected_at_unix_ms: 1,
                lists_updated_at_unix_ms: 0,
                reboot_required: false,
                reboot_reasons: Vec::new(),
                change: Some(change),
            })),
        }
    }

    fn openssl() -> pb::InstalledPackage {
        pb::InstalledPackage {
            name: "openssl".into(),
            arch: "amd64".into(),
            version: "3.0.11-1~deb12u2".into(),
            source: "openssl".into(),
            held: false,
        }
    }

    #[test]
    fn package_reports_are_checked_before_anything_uses_them() {
        use pb::package_report::Change;
        let whole = |manager: i32, installed: Vec<pb::InstalledPackage>, status: i32| {
            Change::Whole(pb::PackageInventory {
                manager,
                installed,
                updates: vec![pb::PackageUpdate {
                    name: "bash".into(),
                    arch: "amd64".into(),
                    installed: "5.2.15-2".into(),
                    candidate: "5.2.15-2+b7".into(),
                    status,
                    ..Default::default()
                }],
            })
        };
        let decode = |change| decode_record(&encode_body(&package_report(change)));
        let ok = decode(whole(1, vec![openssl()], 1)).expect("a whole inventory");
        assert_eq!(ok.body.kind(), "packages");
        let refused = |change, field: &str| match decode(change) {
            Err(DecodeError::Invalid { field: f, .. }) => assert_eq!(f, field),
            other => panic!("expected {field} to be refused, got {other:?}"),
        };
        refused(whole(0, vec![openssl()], 1), "whole.manager");
        refused(whole(9, vec![openssl()], 1), "whole.manager");
        refused(whole(1, vec![openssl()], 0), "updates.status");
        let mut nameless = openssl();
        nameless.name.clear();
        refused(whole(1, vec![nameless], 1), "package name");
        let mut versionless = openssl();
        versionless.version.clear();
        refused(whole(1, vec![versionless], 1), "package version");
        let mut control = openssl();
        control.source = "a\u{7}b".into();
        refused(whole(1, vec![control], 1), "installed.source");
        refused(whole(1, vec![openssl(); MAX_PACKAGES + 1], 1), "installed");

        let delta = |base: Vec<u8>, removed_update_version: &str| {
            Change::Delta(pb::PackageDelta {
                base_sha256: base,
                result_sha256: vec![2; 32],
                installed_set: vec![openssl()],
                installed_removed: Vec::new(),
                updates_set: Vec::new(),
                updates_removed: vec![pb::PackageKey {
                    name: "openssl".into(),
                    arch: "amd64".into(),
                    version: removed_update_version.into(),
                }],
            })
        };
        assert!(decode(delta(vec![1; 32], "")).is_ok());
        refused(delta(vec![1; 31], ""), "delta.base_sha256");
        refused(delta(vec![1; 32], "3.0"), "package version");
        assert!(matches!(
            decode_record(&encode_body(&pb::Record {
                body: Some(pb::record::Body::Packages(pb::PackageReport::default())),
                ..package_report(whole(1, Vec::new(), 1))
            })),
            Err(DecodeError::Missing {
                field: "change",
                ..
            })
        ));
    }

    #[test]
    fn seq_zero_and_bad_values_are_refused() {
        let rec = pb::Record {
            seq: 0,
            created_at_unix_ms: 0,
            body: Some(pb::record::Body::Metrics(metrics())),
        };
        assert!(matches!(
            decode_record(&encode_body(&rec)),
            Err(DecodeError::Invalid { field: "seq", .. })
        ));
        let mut m = metrics();
        m.cpu_percent = f64::NAN;
        assert!(matches!(
            validate_metrics(&m),
            Err(DecodeError::Invalid {
                field: "cpu_percent",
                ..
            })
        ));
        let mut m = metrics();
        m.memory_available_bytes = 1000;
        assert!(validate_metrics(&m).is_err());
    }

    #[test]
    fn garbage_is_an_error() {
        assert!(matches!(
            decode_uplink(&[0xff, 0xff, 0xff]),
            Err(DecodeError::Protobuf { .. })
        ));
        assert!(decode_from_child(&[0x0a, 0x05, 0x01]).is_err());
        assert!(decode_enroll_request(&[]).is_err());
    }

    #[test]
    fn child_messages_round_trip() {
        let hello = FromChild::Hello {
            role: Role::Monitor,
            pid: 7,
            version: "0.1.0".into(),
            sandbox: "none".into(),
        };
        let pbm: pb::FromChild = hello.clone().into();
        assert_eq!(decode_from_child(&encode_body(&pbm)), Ok(hello));
        let check = ToChild::HealthCheck { nonce: 99 };
        let pbm: pb::ToChild = check.clone().into();
        assert_eq!(decode_to_child(&encode_body(&pbm)), Ok(check));
    }

    fn command(action: CommandAction) -> TypedCommand {
        TypedCommand {
            agent_id: "6f1c2a52-4f7e-4d3a-9a55-0c1d2e3f4a5b".into(),
            command_id: "0b7e9a10-1111-4222-8333-944455566677".into(),
            issued_at_unix_ms: 1_700_000_000_000,
            expires_at_unix_ms: 1_700_000_300_000,
            action,
        }
    }

    #[test]
    fn commands_round_trip() {
        for action in [
            CommandAction::Ping,
            CommandAction::RestartService {
                unit: "nginx.service".into(),
            },
            CommandAction::RefreshInventory,
        ] {
            let c = command(action);
            let bytes = encode_body(&pb::Command::from(c.clone()));
            assert_eq!(decode_command(&bytes), Ok(c));
        }
    }

    #[test]
    fn a_command_without_a_known_action_is_an_unknown_type() {
        let mut c = pb::Command::from(command(CommandAction::Ping));
        c.action = None;
        assert_eq!(decode_command(&encode_body(&c)), Err(UNKNOWN_COMMAND_TYPE));
        // An action from a newer backend (field 13, an empty message): prost
        // skips the unknown field, so it decodes as no action at all.
        let mut bytes = encode_body(&pb::Command { action: None, ..c }).to_vec();
        bytes.extend_from_slice(&[0x9a, 0x06, 0x00]); // field 99
        assert_eq!(decode_command(&bytes), Err(UNKNOWN_COMMAND_TYPE));
    }

    #[test]
    fn command_ids_are_required_and_printable() {
        for (agent_id, command_id, field) in [
            ("", "c1", "agent_id"),
            ("a1", "", "command_id"),
            ("a1", "c 1", "command_id"),
            ("a1", "c\u{1b}1", "command_id"),
        ] {
            let mut c = command(CommandAction::Ping);
            c.agent_id = agent_id.into();
            c.command_id = command_id.into();
            let err = decode_command(&encode_body(&pb::Command::from(c))).unwrap_err();
            assert!(
                matches!(err, DecodeError::Missing { field: f, .. } | DecodeError::Invalid { field: f, .. } if f == field),
                "{agent_id:?}/{command_id:?}: {err}"
            );
        }
        let mut c = command(CommandAction::Ping);
        c.command_id = "c".repeat(MAX_COMMAND_ID + 1);
        assert!(decode_command(&encode_body(&pb::Command::from(c))).is_err());
        assert!(decode_command(&vec![0u8; MAX_COMMAND_BYTES + 1]).is_err());
    }

    #[test]
    fn unit_names_are_checked_strictly() {
        for good in [
            "nginx.service",
            "getty@tty1.service",
            "systemd-fsck@dev-disk-by\\x2duuid-1.service",
            "apt-daily.timer",
            "multi-user.target",
            "docker.socket",
            "a:b_c.path",
        ] {
            assert_eq!(validate_unit_name(good), Ok(()), "{good}");
        }
        let long = format!("{}.service", "a".repeat(MAX_UNIT_NAME));
        for bad in [
            "",
            ".service",
            "@.service",
            "-nginx.service",
            ".nginx.service",
            "--force.service",
            "nginx",
            "nginx.mount",
            "nginx.service ",
            "nginx*.service",
            "ngin?.service",
            "ngin[x].service",
            "a/b.service",
            "a b.service",
            "a;b.service",
            "a$(b).service",
            "a\nb.service",
            "nginx.servicé",
            long.as_str(),
        ] {
            assert!(validate_unit_name(bad).is_err(), "{bad:?} must be refused");
        }
        let mut c = pb::Command::from(command(CommandAction::Ping));
        c.action = Some(pb::command::Action::RestartService(pb::RestartService {
            unit: "*.service".into(),
        }));
        assert!(matches!(
            decode_command(&encode_body(&c)),
            Err(DecodeError::Invalid {
                field: "restart_service.unit",
                ..
            })
        ));
    }

    #[test]
    fn the_signing_message_is_context_then_bytes() {
        assert_eq!(
            command_signing_message(b"abc"),
            b"palisade-command-v1\0abc".to_vec()
        );
    }

    #[test]
    fn control_pins_round_trip_and_need_a_32_byte_key() {
        let pin = ControlPin {
            agent_id: "6f1c2a52".into(),
            command_signing_key: [7; 32],
        };
        let bytes = encode_body(&pb::ControlPin::from(pin.clone()));
        assert_eq!(decode_control_pin(&bytes), Ok(pin));
        let short = pb::ControlPin {
            agent_id: "a".into(),
            command_signing_key: vec![1; 31],
        };
        assert!(decode_control_pin(&encode_body(&short)).is_err());
        let anonymous = pb::ControlPin {
            agent_id: String::new(),
            command_signing_key: vec![1; 32],
        };
        assert!(decode_control_pin(&encode_body(&anonymous)).is_err());
    }

    proptest! {
        #[test]
        fn decoders_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            let _ = decode_command(&bytes);
            let _ = decode_control_pin(&bytes);
            let _ = decode_uplink(&bytes);
            let _ = decode_downlink(&bytes);
            let _ = decode_from_child(&bytes);
            let _ = decode_to_child(&bytes);
            let _ = decode_enroll_request(&bytes);
            let _ = decode_enroll_response(&bytes);
        }

        #[test]
        fn ack_round_trips(seq in any::<u64>()) {
            let frame: pb::DownlinkFrame = Downlink::Ack { up_to_seq: seq }.into();
            prop_assert_eq!(decode_downlink(&encode_body(&frame)), Ok(Downlink::Ack { up_to_seq: seq }));
        }
    }
}
