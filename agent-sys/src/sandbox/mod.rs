//! The sandbox every agent process applies to itself before it reads any
//! untrusted input.
//!
//! Started as root (the launcher started it, or systemd started the
//! platform), a process, while it still has one thread:
//!
//! 1. closes every descriptor it did not mean to inherit (children keep 0-3);
//! 2. lowers its resource limits (no core dumps, open files, processes) and
//!    becomes non-dumpable (and, once it has its own user, sets umask 077);
//! 3. opens the paths of its Landlock ruleset ([`landlock`]);
//! 4. changes identity ([`creds`]): the platform, the collector and the
//!    monitor become their own system user ([`users`]) for good — no
//!    supplementary groups, an empty bounding set, no capability but the
//!    monitor's CAP_DAC_READ_SEARCH — and check that `setuid(0)` fails;
//!    control and the launcher stay root without the capabilities no package
//!    manager needs ([`creds::PRIVILEGED_DROPPED`]);
//! 5. sets `PR_SET_NO_NEW_PRIVS` (not control and the launcher: see
//!    [`Profile::no_new_privs`]);
//! 6. enforces its Landlock ruleset, where the kernel has Landlock;
//! 7. installs its seccomp filters ([`policy`]) on every thread;
//! 8. reads `/proc/self/status` back and refuses to go on unless the kernel
//!    reports what was meant;
//! 9. makes a panic end in abort.
//!
//! Only then does it build its async runtime (new threads inherit all of
//! the above) and read its channel or the network. Started as an ordinary
//! user (development), it applies nothing and says so.

use std::path::Path;
use std::process::ExitCode;

use caps::Capability;

pub mod creds;
pub mod landlock;
pub mod platform;
pub mod policy;
mod process;
pub mod seccomp;
pub mod selftest;
pub mod users;

use creds::{CredsError, PRIVILEGED_DROPPED, ProcStatus};
use landlock::LandlockError;
use policy::Policy;
pub use process::ProcessError;
use seccomp::SeccompError;
use users::UserError;

/// The processes of the agent, each with its own sandbox.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Profile {
    /// `palisade-agent run`: the supervisor and the uplink.
    Platform,
    Collector,
    Monitor,
    Control,
    /// The platform's privileged helper that starts the children.
    Launcher,
}

impl Profile {
    pub fn name(self) -> &'static str {
        match self {
            Profile::Platform => "platform",
            Profile::Collector => "collector",
            Profile::Monitor => "monitor",
            Profile::Control => "control",
            Profile::Launcher => "launcher",
        }
    }

    /// The system user it runs as; `None` for the ones that stay root.
    pub fn user(self) -> Option<&'static str> {
        match self {
            Profile::Platform => Some(users::AGENT_USER),
            Profile::Collector => Some(users::COLLECTOR_USER),
            Profile::Monitor => Some(users::MONITOR_USER),
            Profile::Control | Profile::Launcher => None,
        }
    }

    /// The capabilities it keeps after changing user.
    pub fn kept_caps(self) -> &'static [Capability] {
        match self {
            // It must read any file to hash it for integrity monitoring.
            Profile::Monitor => &[Capability::CAP_DAC_READ_SEARCH],
            _ => &[],
        }
    }

    /// Whether it sets `PR_SET_NO_NEW_PRIVS`. Control and the launcher do
    /// not: package managers run maintainer scripts that must change security
    /// context on exec (SELinux domain transitions of rpm scriptlets,
    /// setuid helpers that drop to a service user), which the flag forbids.
    /// They are root already, so the flag would not stop an escalation
    /// anyway; their filter is installed with CAP_SYS_ADMIN instead.
    pub fn no_new_privs(self) -> bool {
        self.user().is_some()
    }

    /// Its seccomp filters, in the order they are installed: the main one
    /// last, since an allowlist does not allow installing another filter.
    pub fn policies(self) -> &'static [Policy] {
        match self {
            Profile::Platform => &[policy::CLONE3_ENOSYS, policy::PLATFORM],
            Profile::Collector => &[policy::CLONE3_ENOSYS, policy::COLLECTOR],
            Profile::Monitor => &[policy::CLONE3_ENOSYS, policy::MONITOR],
            Profile::Control | Profile::Launcher => &[policy::PRIVILEGED],
        }
    }

    /// The filter that defines the process: its allowlist or deny-list.
    pub fn main_policy(self) -> Policy {
        match self {
            Profile::Platform => policy::PLATFORM,
            Profile::Collector => policy::COLLECTOR,
            Profile::Monitor => policy::MONITOR,
            Profile::Control | Profile::Launcher => policy::PRIVILEGED,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SandboxError {
    #[error(transparent)]
    Users(#[from] UserError),
    #[error(transparent)]
    Process(#[from] ProcessError),
    #[error(transparent)]
    Creds(#[from] CredsError),
    #[error(transparent)]
    Landlock(#[from] LandlockError),
    #[error(transparent)]
    Seccomp(#[from] SeccompError),
    #[error("the {profile} sandbox is not what the kernel reports: {problem}")]
    Verify {
        profile: &'static str,
        problem: String,
    },
    #[error("cannot prepare the state directory {path}: {problem}")]
    StateDir { path: String, problem: String },
    #[error(transparent)]
    Launcher(#[from] crate::launcher::LauncherError),
}

/// Applies `profile`'s sandbox (steps 2 to 9 of the module documentation)
/// to this process, which must be root, single-threaded, with its inherited
/// descriptors already closed. `state_dir` is the platform's. Returns what
/// was applied, in words.
pub fn apply(profile: Profile, state_dir: Option<&Path>) -> Result<String, SandboxError> {
    process::require_single_thread()?;
    process::set_limits(profile)?;
    process::set_not_dumpable()?;
    // Compiled up front: nothing can fail half-way through the installation
    // for a reason known before it.
    let programs = profile
        .policies()
        .iter()
        .map(|p| seccomp::compile(p).map(|bpf| (p, bpf)))
        .collect::<Result<Vec<_>, _>>()?;
    let ruleset = landlock::prepare(profile, state_dir)?;

    let mut parts = Vec::new();
    let user = match profile.user() {
        Some(name) => {
            let user = users::require(name)?;
            creds::become_user(user, profile.kept_caps())?;
            // What it creates (the platform's spool) is its own alone.
            // Control keeps the inherited umask: package managers and their
            // scripts create files meant for others to read.
            nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(0o077));
            parts.push(format!("user {name}"));
            parts.push(match profile.kept_caps() {
                [] => "caps none".to_owned(),
                kept => format!(
                    "caps {}",
                    kept.iter()
                        .map(|c| c.to_string())
                        .collect::<Vec<_>>()
                        .join("+")
                ),
            });
            Some(user)
        }
        None => {
            creds::drop_privileged_caps()?;
            parts.push("user root".to_owned());
            parts.push(format!(
                "caps all but {} ({})",
                PRIVILEGED_DROPPED.len(),
                PRIVILEGED_DROPPED
                    .iter()
                    .map(|c| c.to_string().trim_start_matches("CAP_").to_lowercase())
                    .collect::<Vec<_>>()
                    .join(",")
            ));
            None
        }
    };
    if profile.no_new_privs() {
        nix::sys::prctl::set_no_new_privs().map_err(|e| {
            SandboxError::Process(ProcessError::Call {
                action: "set PR_SET_NO_NEW_PRIVS",
                source: e.into(),
            })
        })?;
        parts.push("no_new_privs".to_owned());
    }
    match ruleset {
        Some(ruleset) => parts.push(landlock::enforce(ruleset)?),
        None => parts.push("no landlock (package managers write anywhere)".to_owned()),
    }
    for (policy, program) in &programs {
        seccomp::install(policy, program)?;
    }
    let main = profile.main_policy();
    parts.push(match main.kind {
        policy::Kind::Allowlist => format!("seccomp allowlist ({} syscalls)", main.count()),
        policy::Kind::Denylist { .. } => format!("seccomp deny-list ({} syscalls)", main.count()),
    });

    verify(profile, user.map(|u| u.uid.as_raw()))?;
    process::abort_on_panic();
    let description = parts.join(", ");
    crate::identity::record_sandbox(&description);
    Ok(description)
}

/// Reads the kernel's account of this process and checks it against what
/// `profile` should have.
fn verify(profile: Profile, uid: Option<u32>) -> Result<(), SandboxError> {
    let status = ProcStatus::current()?;
    let problem = |problem: String| SandboxError::Verify {
        profile: profile.name(),
        problem,
    };
    let want_uid = uid.unwrap_or(0);
    if status.uid != [want_uid; 4] {
        return Err(problem(format!("uids {:?}, wanted {want_uid}", status.uid)));
    }
    if status.seccomp != 2 {
        return Err(problem(format!(
            "seccomp mode {}, wanted 2",
            status.seccomp
        )));
    }
    if status.cap_amb != 0 {
        return Err(problem(format!(
            "ambient capabilities {:x}",
            status.cap_amb
        )));
    }
    if profile.no_new_privs() != (status.no_new_privs == 1) {
        return Err(problem(format!("NoNewPrivs {}", status.no_new_privs)));
    }
    if uid.is_some() {
        let kept = creds::mask(profile.kept_caps());
        if status.cap_prm != kept
            || status.cap_eff != kept
            || status.cap_inh != 0
            || status.cap_bnd != 0
            || !status.groups.is_empty()
        {
            return Err(problem(format!(
                "capabilities or groups remain: {status:?}"
            )));
        }
    } else {
        let dropped = creds::mask(PRIVILEGED_DROPPED);
        let held = status.cap_prm | status.cap_eff | status.cap_inh | status.cap_bnd;
        if held & dropped != 0 {
            return Err(problem(format!(
                "dropped capabilities remain: {:x}",
                held & dropped
            )));
        }
    }
    Ok(())
}

/// Fails unless this process has exactly one thread (see
/// [`process::require_single_thread`]).
pub fn require_single_thread() -> Result<(), ProcessError> {
    process::require_single_thread()
}

/// Closes every descriptor but 0, 1, 2 and `keep`; for a fresh process
/// only, before anything in it owns a descriptor.
pub fn close_inherited_but(keep: &[std::os::fd::RawFd]) -> Result<(), ProcessError> {
    process::close_inherited(keep)
}

/// What a process started as an ordinary user reports.
pub fn unsandboxed() -> String {
    crate::identity::sandbox_status()
}

/// Applies the sandbox of a child (`profile`) first thing in its `main`:
/// as root, closes all descriptors but 0-3 and applies [`apply`]; as an
/// ordinary user, changes nothing.
pub fn enter_child(profile: Profile) -> Result<String, SandboxError> {
    if !crate::identity::is_root() {
        return Ok(unsandboxed());
    }
    process::require_single_thread()?;
    process::close_inherited(&[crate::ipc::CHILD_IPC_FD])?;
    apply(profile, None)
}

/// The arguments a child accepts: none (normal), or `--selftest PROBE`.
fn parse_child_args(
    args: impl IntoIterator<Item = std::ffi::OsString>,
) -> Result<Option<selftest::Probe>, String> {
    let args: Vec<String> = args
        .into_iter()
        .map(|a| a.to_string_lossy().into_owned())
        .collect();
    match args.as_slice() {
        [] => Ok(None),
        [flag, name] if flag == "--selftest" => {
            selftest::Probe::parse(name).map(Some).ok_or_else(|| {
                let names: Vec<&str> = selftest::Probe::ALL.iter().map(|p| p.name()).collect();
                format!("unknown probe {name:?} (probes: {})", names.join(", "))
            })
        }
        _ => Err(
            "this program is started by palisade-agent, not by hand (tests: --selftest PROBE)"
                .to_owned(),
        ),
    }
}

/// The `main` of a child: applies its sandbox, then runs `body` (or, with
/// `--selftest PROBE`, the probe under the same sandbox).
pub fn child_main(profile: Profile, body: impl FnOnce() -> ExitCode) -> ExitCode {
    let probe = match parse_child_args(std::env::args_os().skip(1)) {
        Ok(probe) => probe,
        Err(message) => {
            tracing::error!("{message}");
            return ExitCode::from(2);
        }
    };
    match enter_child(profile) {
        Ok(description) if crate::identity::is_sandboxed() => {
            tracing::info!(sandbox = %description, "sandbox applied")
        }
        Ok(description) => tracing::warn!(sandbox = %description, "NOT sandboxed"),
        Err(error) => {
            tracing::error!("cannot apply the {} sandbox: {error}", profile.name());
            return ExitCode::FAILURE;
        }
    }
    match probe {
        Some(probe) => selftest::run(probe),
        None => body(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(list: &[&str]) -> Vec<std::ffi::OsString> {
        list.iter().map(|s| s.into()).collect()
    }

    #[test]
    fn child_arguments() {
        assert_eq!(parse_child_args(args(&[])), Ok(None));
        assert_eq!(
            parse_child_args(args(&["--selftest", "exec"])),
            Ok(Some(selftest::Probe::Exec))
        );
        assert!(parse_child_args(args(&["--selftest", "nope"])).is_err());
        assert!(parse_child_args(args(&["--config", "/etc/x"])).is_err());
        assert!(parse_child_args(args(&["--selftest"])).is_err());
    }

    #[test]
    fn only_the_privileged_profiles_skip_no_new_privs() {
        for p in [Profile::Platform, Profile::Collector, Profile::Monitor] {
            assert!(p.no_new_privs(), "{p:?}");
            assert_eq!(p.main_policy().kind, policy::Kind::Allowlist);
            let last = p.policies().last().expect("filters");
            assert_eq!(last.name, p.main_policy().name, "the allowlist goes last");
        }
        for p in [Profile::Control, Profile::Launcher] {
            assert!(!p.no_new_privs(), "{p:?}");
            assert!(matches!(
                p.main_policy().kind,
                policy::Kind::Denylist { .. }
            ));
        }
    }
}
