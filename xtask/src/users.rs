//! The system users the agent's packages create (sysusers.d), created here
//! when xtask runs as root, so the demo and the tests run the agent
//! sandboxed, as it runs after a package install. The agent itself never
//! creates users: started as root without them, it refuses to start.

use std::process::Command;

use anyhow::{Context, bail};

/// The users of the agent's processes (platform, collector, monitor), as
/// `packaging/` names them.
pub const SYSTEM_USERS: [&str; 3] = ["palisade-agent", "palisade-collector", "palisade-monitor"];

/// Whether xtask runs as root.
pub fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

/// As root, creates the missing system users the way the packages would,
/// saying so; as an ordinary user, does nothing.
pub fn ensure_system_users(why: &str) -> anyhow::Result<()> {
    if !is_root() {
        return Ok(());
    }
    for name in SYSTEM_USERS {
        let exists = nix::unistd::User::from_name(name)
            .with_context(|| format!("cannot look up the user {name}"))?
            .is_some();
        if exists {
            continue;
        }
        let args = [
            "--system",
            "--user-group",
            "--no-create-home",
            "--shell",
            "/usr/sbin/nologin",
            name,
        ];
        println!(
            "creating the system user {name}, as the palisade-agent package would ({why}): useradd {}",
            args.join(" ")
        );
        let status = Command::new("useradd")
            .args(args)
            .status()
            .context("cannot run useradd")?;
        if !status.success() {
            bail!("useradd {name} failed ({status})");
        }
    }
    Ok(())
}
