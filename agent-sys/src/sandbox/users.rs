//! The system users the agent's processes run as.
//!
//! The packages create them (sysusers.d); the agent never does. Started as
//! root without them, it refuses to start and says how to create them.

use nix::unistd::{Gid, Uid, User};

/// The platform's user: the network-facing process, no privilege.
pub const AGENT_USER: &str = "palisade-agent";
/// The collector's user.
pub const COLLECTOR_USER: &str = "palisade-collector";
/// The monitor's user.
pub const MONITOR_USER: &str = "palisade-monitor";

/// Every user the agent needs, in the order a message lists them.
pub const ALL: [&str; 3] = [AGENT_USER, COLLECTOR_USER, MONITOR_USER];

#[derive(Debug, thiserror::Error)]
pub enum UserError {
    #[error("{}", missing_message(.0))]
    Missing(Vec<&'static str>),
    #[error("cannot look up the system user {name}: {source}")]
    Lookup {
        name: &'static str,
        source: nix::Error,
    },
    #[error("the system user {name} is uid 0 or gid 0; it must be an unprivileged system user")]
    Privileged { name: &'static str },
}

/// What to tell an operator when users are missing.
pub fn missing_message(missing: &[&'static str]) -> String {
    let names = missing.join(", ");
    let commands: Vec<String> = missing
        .iter()
        .map(|name| {
            format!(
                "useradd --system --user-group --no-create-home --shell /usr/sbin/nologin {name}"
            )
        })
        .collect();
    format!(
        "the system user(s) {names} do not exist, and running as root the agent needs them to drop \
         its privileges; the palisade-agent package creates them (sysusers.d): reinstall it, or run \
         `systemd-sysusers`, or create them by hand: {}. The agent does not create users itself.",
        commands.join("; ")
    )
}

/// A system user, looked up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SystemUser {
    pub name: &'static str,
    pub uid: Uid,
    pub gid: Gid,
}

/// Looks `name` up; `Ok(None)` when it does not exist.
pub fn find(name: &'static str) -> Result<Option<SystemUser>, UserError> {
    let user = User::from_name(name).map_err(|source| UserError::Lookup { name, source })?;
    match user {
        None => Ok(None),
        Some(u) if u.uid.is_root() || u.gid.as_raw() == 0 => Err(UserError::Privileged { name }),
        Some(u) => Ok(Some(SystemUser {
            name,
            uid: u.uid,
            gid: u.gid,
        })),
    }
}

/// Looks `name` up; missing is an error that says what to do.
pub fn require(name: &'static str) -> Result<SystemUser, UserError> {
    find(name)?.ok_or_else(|| UserError::Missing(vec![name]))
}

/// Checks every user the agent needs exists, naming all missing ones at once.
pub fn require_all() -> Result<(), UserError> {
    let mut missing = Vec::new();
    for name in ALL {
        if find(name)?.is_none() {
            missing.push(name);
        }
    }
    if missing.is_empty() {
        Ok(())
    } else {
        Err(UserError::Missing(missing))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_message_names_every_missing_user_and_the_fixes() {
        let text = missing_message(&[COLLECTOR_USER, MONITOR_USER]);
        assert!(text.contains("palisade-collector, palisade-monitor"));
        assert!(text.contains("systemd-sysusers"));
        assert!(text.contains("useradd --system --user-group --no-create-home --shell /usr/sbin/nologin palisade-monitor"));
        assert!(text.contains("does not create users"));
    }
}
