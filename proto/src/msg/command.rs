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

/// The unit types a `restart_service` command may name: a service, and the
/// socket that starts one. Not a target: targets are how systemd changes the
/// system's state (`poweroff.target`, `reboot.target`, `rescue.target`...,
/// and their aliases such as `ctrl-alt-del.target`), and restarting any
/// target starts everything it wants. Not a timer or a path unit: each
/// exists to start another unit of any type, a target included, so
/// restarting one starts that unit indirectly. (A socket starts only a
/// service, and only when a connection arrives.)
pub const RESTARTABLE_UNIT_SUFFIXES: &[&str] = &[".service", ".socket"];

/// Units that change the system's state when started: a reboot or a
/// power-off is a command of its own ([`CommandAction::Reboot`], with a
/// permission of its own), and the others have no place in a remote
/// service action. From systemd's special units (systemd.special(7)) and
/// what the distributions ship besides. `restart_service` refuses every
/// target anyway (see [`RESTARTABLE_UNIT_SUFFIXES`]); the targets are here
/// for control, which also refuses a service that starts one of these.
pub const STATE_CHANGING_UNITS: &[&str] = &[
    // Power: the targets (with their SysV runlevel and keyboard aliases)
    // and the services they run. PID 1 carries them out, outside control's
    // sandbox.
    "poweroff.target",
    "reboot.target",
    "halt.target",
    "kexec.target",
    "soft-reboot.target",
    "ctrl-alt-del.target",
    "exit.target",
    "runlevel0.target",
    "runlevel6.target",
    "shutdown.target",
    "umount.target",
    "final.target",
    "systemd-poweroff.service",
    "systemd-reboot.service",
    "systemd-halt.service",
    "systemd-kexec.service",
    "systemd-soft-reboot.service",
    "systemd-exit.service",
    // Offline updates and resets, which end in a reboot.
    "system-update.target",
    "system-update-pre.target",
    "factory-reset.target",
    "systemd-sysupdate-reboot.service",
    // Sleep: the host leaves the network until someone wakes it.
    "sleep.target",
    "suspend.target",
    "hibernate.target",
    "hybrid-sleep.target",
    "suspend-then-hibernate.target",
    "systemd-suspend.service",
    "systemd-hibernate.service",
    "systemd-hybrid-sleep.service",
    "systemd-suspend-then-hibernate.service",
    // Single-user modes: everything else stops, a root shell waits on the
    // console.
    "rescue.target",
    "emergency.target",
    "runlevel1.target",
    "rescue.service",
    "emergency.service",
    // A root shell on tty9 without a password.
    "debug-shell.service",
    // Debian's kexec-tools: stopping `kexec` boots the loaded kernel.
    "kexec.service",
    "kexec-load.service",
    // SysV names of the power actions, where a distribution still has them.
    "halt.service",
    "poweroff.service",
    "reboot.service",
];

/// Prefixes of state-changing units that come in families: `initrd-*`
/// leave the initrd (switching root, isolating targets; no-ops on a booted
/// system at best, and `initrd.target` too); `systemd-pcr*` extend the
/// TPM's PCRs with the boot phase (measured again, they lock secrets
/// sealed to the booted state away until the next boot) or rewrite the
/// pcrlock policy.
pub const STATE_CHANGING_UNIT_PREFIXES: &[&str] = &["initrd-", "initrd.", "systemd-pcr"];

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

/// Whether starting (or restarting) the unit named `unit` changes the
/// system's state, by its name alone: one of [`STATE_CHANGING_UNITS`]
/// (also as a template instance, `name@x.service`) or a name starting with
/// one of [`STATE_CHANGING_UNIT_PREFIXES`]. Control asks the same of the
/// name systemd resolves an alias to and of the units a unit starts.
pub fn changes_system_state(unit: &str) -> bool {
    let template = match (unit.split_once('@'), unit.rsplit_once('.')) {
        (Some((prefix, _)), Some((_, suffix))) => Some(format!("{prefix}.{suffix}")),
        _ => None,
    };
    STATE_CHANGING_UNITS
        .iter()
        .any(|u| *u == unit || template.as_deref() == Some(*u))
        || STATE_CHANGING_UNIT_PREFIXES
            .iter()
            .any(|p| unit.starts_with(p))
}

/// Checks a unit name for `restart_service`: strictly enough that it can
/// only ever name one unit, and not a unit whose start changes the system's
/// state. 1 to [`MAX_UNIT_NAME`] bytes of `A-Z a-z 0-9 : _ . @ - \`
/// (systemd's unit-name alphabet, so no glob characters: `systemctl` would
/// expand `*`, `?` and `[`), not starting with `-` or `.`, ending in one of
/// [`RESTARTABLE_UNIT_SUFFIXES`] with a non-empty name before it, and not
/// [`changes_system_state`].
///
/// Names are what can be checked here. Before each restart control also
/// asks systemd what the name resolves to and what the unit starts or does
/// when it stops or fails (`palisade_agent_control::exec`). What a unit's
/// own program does is beyond both (a site's `nightly-reboot.service` that
/// runs `/sbin/reboot` passes): `services:restart` trusts its holder with
/// the services a host has.
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
    if changes_system_state(unit) {
        return Err(format!(
            "{unit} changes the system's state when started: it cannot be restarted as a service (a reboot is a command of its own)"
        ));
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
            "docker.socket",
            "a:b_c.service",
            // Restarting these is ordinary service work.
            "systemd-journald.service",
            "systemd-logind.service",
            "serial-getty@ttyS0.service",
            "user@1000.service",
            "dbus.socket",
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
            "apt-daily.timer",
            "a:b_c.path",
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
    fn no_unit_that_changes_the_system_state_can_be_restarted() {
        // No target at all, whatever it is.
        for unit in ["multi-user.target", "graphical.target", "default.target"] {
            let err = validate_unit_name(unit).expect_err(unit);
            assert!(err.contains("must end in"), "{unit}: {err}");
        }
        let refused = [
            "poweroff.target",
            "reboot.target",
            "halt.target",
            "kexec.target",
            "soft-reboot.target",
            "ctrl-alt-del.target",
            "exit.target",
            "shutdown.target",
            "final.target",
            "rescue.target",
            "emergency.target",
            "suspend.target",
            "hibernate.target",
            "hybrid-sleep.target",
            "suspend-then-hibernate.target",
            "sleep.target",
            "runlevel0.target",
            "runlevel1.target",
            "runlevel6.target",
            "umount.target",
            "system-update.target",
            "system-update-pre.target",
            "factory-reset.target",
            "initrd.target",
            "initrd-switch-root.target",
            // What they start.
            "systemd-poweroff.service",
            "systemd-reboot.service",
            "systemd-halt.service",
            "systemd-kexec.service",
            "systemd-soft-reboot.service",
            "systemd-exit.service",
            "systemd-sysupdate-reboot.service",
            "systemd-suspend.service",
            "systemd-hibernate.service",
            "systemd-hybrid-sleep.service",
            "systemd-suspend-then-hibernate.service",
            "emergency.service",
            "rescue.service",
            "debug-shell.service",
            "kexec.service",
            "kexec-load.service",
            "halt.service",
            "poweroff.service",
            "reboot.service",
            // Families and template instances.
            "systemd-pcrphase.service",
            "systemd-pcrphase-sysinit.service",
            "systemd-pcrfs@-.service",
            "systemd-pcrextend.socket",
            "initrd-switch-root.service",
            "initrd-cleanup.service",
            "rescue@x.service",
        ];
        for unit in refused {
            assert!(changes_system_state(unit), "{unit}");
            let err = validate_unit_name(unit).expect_err(unit);
            assert!(
                err.contains("changes the system's state") || err.contains("must end in"),
                "{unit}: {err}"
            );
            // The decoder refuses them too: a signed command naming one
            // never reaches systemctl.
            let mut c = pb::Command::from(command(CommandAction::Ping));
            c.action = Some(pb::command::Action::RestartService(pb::RestartService {
                unit: unit.into(),
            }));
            assert!(
                matches!(
                    decode_command(&encode_body(&c)),
                    Err(DecodeError::Invalid {
                        field: "restart_service.unit",
                        ..
                    })
                ),
                "{unit} must not decode"
            );
        }
        for unit in STATE_CHANGING_UNITS {
            assert!(refused.contains(unit), "{unit} has no test");
        }
        // Names that merely resemble one are services like any other.
        for unit in [
            "rescue-helper.service",
            "my-reboot-notifier.service",
            "systemd-rebooter.service",
            "network-online.target",
        ] {
            assert!(!changes_system_state(unit), "{unit}");
            if !unit.ends_with(".target") {
                assert_eq!(validate_unit_name(unit), Ok(()), "{unit}");
            }
        }
    }

    #[test]
    fn reboots_round_trip_and_bad_ones_do_not_decode() {
        let reboot = command(CommandAction::Reboot {
            delay_minutes: 5,
            message: "kernel update; back in 2 minutes".into(),
        });
        let bytes = encode_body(&pb::Command::from(reboot.clone()));
        assert_eq!(decode_command(&bytes), Ok(reboot));
        for (delay_minutes, message) in [
            (MAX_REBOOT_DELAY_MINUTES + 1, String::new()),
            (1, "x".repeat(MAX_REBOOT_MESSAGE + 1)),
            (1, "line\nbreak".to_owned()),
            (1, "\u{1b}[2Jbell".to_owned()),
        ] {
            let c = command(CommandAction::Reboot {
                delay_minutes,
                message,
            });
            assert!(
                matches!(
                    decode_command(&encode_body(&pb::Command::from(c.clone()))),
                    Err(DecodeError::Invalid {
                        field: "reboot",
                        ..
                    })
                ),
                "{c:?}"
            );
        }
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
