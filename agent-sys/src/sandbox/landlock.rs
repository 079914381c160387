//! The Landlock rulesets: what each process may open, write, execute, and
//! which TCP ports it may bind or connect to.
//!
//! A ruleset is prepared (paths opened) while the process can still reach
//! every path, before it changes user, and enforced after: the platform's
//! state directory may sit below a directory only root can traverse.
//!
//! The rights requested are those of Landlock ABI 6 (the newest this code is
//! tested with); a kernel with less enforces what it knows (best effort) and
//! the status says so.

use std::path::{Path, PathBuf};

use landlock::{
    ABI, Access, AccessFs, AccessNet, BitFlags, CompatLevel, Compatible, LandlockStatus,
    PathBeneath, PathFd, RestrictionStatus, Ruleset, RulesetAttr, RulesetCreated,
    RulesetCreatedAttr, RulesetStatus, Scope, path_beneath_rules,
};

use super::Profile;

/// The ABI whose rights are requested.
const TARGET: ABI = ABI::V6;

#[derive(Debug, thiserror::Error)]
pub enum LandlockError {
    #[error("cannot build the Landlock ruleset: {0}")]
    Ruleset(#[from] landlock::RulesetError),
    #[error("cannot open {path} for a Landlock rule: {source}")]
    Path {
        path: PathBuf,
        source: landlock::PathFdError,
    },
}

/// A ruleset ready to enforce, or `None` for the roles without one.
pub struct Prepared {
    ruleset: RulesetCreated,
}

fn read() -> BitFlags<AccessFs> {
    AccessFs::ReadFile | AccessFs::ReadDir
}

/// What the platform may do beneath its state directory: everything on
/// files and directories but execute them or create devices, sockets,
/// fifos and links.
fn state_rights() -> BitFlags<AccessFs> {
    AccessFs::ReadFile
        | AccessFs::ReadDir
        | AccessFs::WriteFile
        | AccessFs::Truncate
        | AccessFs::MakeReg
        | AccessFs::MakeDir
        | AccessFs::RemoveFile
        | AccessFs::RemoveDir
        | AccessFs::Refer
}

fn base(net: BitFlags<AccessNet>) -> Result<RulesetCreated, LandlockError> {
    Ok(Ruleset::default()
        .set_compatibility(CompatLevel::BestEffort)
        .handle_access(AccessFs::from_all(TARGET))?
        .handle_access(net)?
        .scope(Scope::from_all(TARGET))?
        .create()?)
}

/// Read-only rules on `paths`; a path missing on this host is skipped.
/// What the collector reads of the package managers' state, where it
/// exists: dpkg's database and apt's lists and pins; rpm's database, dnf's
/// configuration and cached metadata; the reboot flag under `/run`.
const COLLECTOR_PACKAGE_PATHS: &[&str] = &[
    "/var/lib/dpkg",
    "/var/lib/apt/lists",
    "/etc/apt",
    "/etc/machine-id",
    "/usr/lib/sysimage/rpm",
    "/var/lib/rpm",
    "/etc/dnf",
    "/etc/yum.repos.d",
    "/var/cache/dnf",
    "/var/cache/libdnf5",
    "/run",
];

fn read_rules(ruleset: RulesetCreated, paths: &[&str]) -> Result<RulesetCreated, LandlockError> {
    Ok(ruleset.add_rules(path_beneath_rules(paths, read()))?)
}

/// Opens the paths of `profile`'s ruleset. `state_dir` is the platform's.
pub fn prepare(
    profile: Profile,
    state_dir: Option<&Path>,
) -> Result<Option<Prepared>, LandlockError> {
    let ruleset = match profile {
        Profile::Control | Profile::Launcher => return Ok(None),
        // Reads what its metrics, facts and package inventory come from;
        // writes nothing, executes nothing, no TCP at all. `/run` is there
        // for `/run/reboot-required`, which does not exist until a package
        // wants a reboot (Landlock grants only paths that exist).
        Profile::Collector => {
            let root = crate::package_root::from_env();
            let packages: Vec<PathBuf> = COLLECTOR_PACKAGE_PATHS
                .iter()
                .map(|p| crate::package_root::under(&root, p))
                .filter(|p| p.exists())
                .collect();
            let ruleset = read_rules(
                base(AccessNet::from_all(TARGET))?,
                &["/proc", "/sys", "/etc/os-release", "/usr/lib/os-release"],
            )?;
            ruleset.add_rules(path_beneath_rules(&packages, read()))?
        }
        // Reads anything (it hashes files for integrity monitoring); writes
        // nothing (it has no state directory yet), executes nothing, no TCP.
        Profile::Monitor => read_rules(base(AccessNet::from_all(TARGET))?, &["/"])?,
        // Reads the system configuration and libraries glibc's resolver
        // loads, writes only beneath its state directory, executes nothing,
        // binds no TCP port (it only connects).
        Profile::Platform => {
            let ruleset = read_rules(
                base(BitFlags::from(AccessNet::BindTcp))?,
                &[
                    "/etc",
                    "/usr",
                    "/lib",
                    "/lib64",
                    "/run/systemd/resolve",
                    "/proc/self",
                    "/dev/urandom",
                ],
            )?;
            let ruleset = ruleset.add_rules(path_beneath_rules(
                ["/dev/null"],
                AccessFs::ReadFile | AccessFs::WriteFile,
            ))?;
            match state_dir {
                Some(dir) => {
                    let fd = PathFd::new(dir).map_err(|source| LandlockError::Path {
                        path: dir.to_owned(),
                        source,
                    })?;
                    ruleset.add_rule(PathBeneath::new(fd, state_rights()))?
                }
                None => ruleset,
            }
        }
    };
    Ok(Some(Prepared { ruleset }))
}

/// Enforces a prepared ruleset on this thread (and the threads it starts
/// afterwards: call it while the process has one thread). Also sets
/// `PR_SET_NO_NEW_PRIVS`. Returns the status in words.
pub fn enforce(prepared: Prepared) -> Result<String, LandlockError> {
    let status = prepared.ruleset.restrict_self()?;
    Ok(describe(&status))
}

fn describe(status: &RestrictionStatus) -> String {
    let abi = match &status.landlock {
        LandlockStatus::Available {
            effective_abi,
            kernel_abi,
        } => match kernel_abi {
            Some(v) => format!("ABI {v}"),
            None => format!("ABI {}", *effective_abi as i32),
        },
        LandlockStatus::NotEnabled => return "landlock not enabled in this kernel".to_owned(),
        LandlockStatus::NotImplemented => return "landlock not in this kernel".to_owned(),
        // The enum is non-exhaustive.
        #[allow(unreachable_patterns)]
        _ => "ABI ?".to_owned(),
    };
    match status.ruleset {
        RulesetStatus::FullyEnforced => format!("landlock {abi}"),
        RulesetStatus::PartiallyEnforced => format!("landlock {abi} (partial: older kernel)"),
        RulesetStatus::NotEnforced => format!("landlock not enforced ({abi})"),
    }
}
