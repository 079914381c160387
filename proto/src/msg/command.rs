//! Signed commands (backend to control) and control's pin.

use super::*;
use crate::upgrade::Upgrade;

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
    /// Reboot the host `delay_minutes` after control accepts the command,
    /// warning logged-in users with `message` (checked by
    /// [`validate_reboot`]).
    Reboot {
        delay_minutes: u32,
        message: String,
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
            CommandAction::Reboot { .. } => "reboot",
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
            CommandAction::Reboot {
                delay_minutes,
                message,
            } => pb::command::Action::Reboot(pb::Reboot {
                delay_minutes,
                message,
            }),
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
        pb::command::Action::Reboot(r) => {
            validate_reboot(r.delay_minutes, &r.message)
                .map_err(|reason| invalid(M, "reboot", reason))?;
            CommandAction::Reboot {
                delay_minutes: r.delay_minutes,
                message: r.message,
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

/// Longest delay a reboot may be scheduled with.
pub const MAX_REBOOT_DELAY_MINUTES: u32 = 24 * 60;
/// Longest message a reboot warns logged-in users with.
pub const MAX_REBOOT_MESSAGE: usize = 200;

/// Checks a reboot's parameters: a delay of 0 to
/// [`MAX_REBOOT_DELAY_MINUTES`] and a message of at most
/// [`MAX_REBOOT_MESSAGE`] bytes of printable characters (it reaches every
/// terminal through wall).
pub fn validate_reboot(delay_minutes: u32, message: &str) -> Result<(), String> {
    if delay_minutes > MAX_REBOOT_DELAY_MINUTES {
        return Err(format!(
            "the delay is longer than {MAX_REBOOT_DELAY_MINUTES} minutes"
        ));
    }
    if message.len() > MAX_REBOOT_MESSAGE {
        return Err(format!(
            "the message is longer than {MAX_REBOOT_MESSAGE} bytes"
        ));
    }
    if message.chars().any(char::is_control) {
        return Err("the message contains control characters".into());
    }
    Ok(())
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::frame::encode_body;

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
}
