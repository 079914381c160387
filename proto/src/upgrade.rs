//! Package upgrades on the wire: the typed `UpgradePackages` command, the
//! changes a result reports and the output a running command streams.
//!
//! Everything control hands to a package manager comes from here, so the
//! checks are strict: a package name, architecture or version is one
//! argument of the manager's syntax that can never be read as an option
//! (no leading `-`), a glob (dnf expands `*`, `?`, `[`) or a second
//! argument (no whitespace), and the lists are bounded.

use std::time::Duration;

use palisade_packages::inventory::Manager;

use crate::msg::{DecodeError, MAX_STRING};
use crate::pb;

/// Most packages one upgrade may name.
pub const MAX_TARGETS: usize = 4096;
/// Longest a run may be allowed to take.
pub const MAX_UPGRADE_TIMEOUT: Duration = Duration::from_secs(6 * 60 * 60);
/// Largest piece of streamed output in one `CommandOutput`.
pub const MAX_OUTPUT_PIECE: usize = 64 * 1024;
/// Most changes one result may report.
pub const MAX_CHANGES: usize = 16 * 1024;
/// Longest package name, architecture or version accepted.
const MAX_FIELD: usize = 256;

/// A decoded `UpgradePackages`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Upgrade {
    pub manager: Manager,
    /// Everything the manager offers; otherwise exactly `packages`.
    pub all: bool,
    pub packages: Vec<Target>,
    pub dry_run: bool,
    pub refresh_index: bool,
    pub timeout: Duration,
}

/// One package of an upgrade.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Target {
    pub name: String,
    /// Empty: the package's only installed architecture.
    pub arch: String,
    /// Empty: the candidate.
    pub version: String,
}

fn invalid(field: &'static str, reason: impl Into<String>) -> DecodeError {
    DecodeError::Invalid {
        message: "UpgradePackages",
        field,
        reason: reason.into(),
    }
}

/// Checks one package name, architecture or version: 1 to 256 bytes of
/// the manager's alphabet, not starting with `-`.
fn check_field(field: &'static str, value: &str, extra: &[u8]) -> Result<(), DecodeError> {
    if value.is_empty() {
        return Err(invalid(field, "empty"));
    }
    if value.len() > MAX_FIELD {
        return Err(invalid(field, format!("longer than {MAX_FIELD} bytes")));
    }
    if value.starts_with('-') || value.starts_with('.') {
        return Err(invalid(field, "must not start with '-' or '.'"));
    }
    if let Some(bad) = value
        .bytes()
        .find(|b| !(b.is_ascii_alphanumeric() || extra.contains(b)))
    {
        return Err(invalid(field, format!("contains {:?}", char::from(bad))));
    }
    Ok(())
}

/// Checks a package name of `manager`: Debian's `[a-z0-9][a-z0-9+.-]*`
/// (upper case tolerated), RPM's letters, digits and `_ + . -`.
pub fn check_name(manager: Manager, name: &str) -> Result<(), DecodeError> {
    match manager {
        Manager::Dpkg => check_field("packages.name", name, b"+.-"),
        Manager::Rpm => check_field("packages.name", name, b"_+.-"),
    }
}

/// Checks a version of `manager`'s syntax (`[epoch:]version[-release]`,
/// with `~` and `+`; RPM also `^` and `_`).
pub fn check_version(manager: Manager, version: &str) -> Result<(), DecodeError> {
    match manager {
        Manager::Dpkg => check_field("packages.version", version, b".+~:-"),
        Manager::Rpm => check_field("packages.version", version, b".+~^_:-"),
    }
}

fn check_arch(arch: &str) -> Result<(), DecodeError> {
    check_field("packages.arch", arch, b"_-")
}

impl Upgrade {
    /// Decodes and checks the wire message.
    pub fn from_wire(u: &pb::UpgradePackages) -> Result<Upgrade, DecodeError> {
        let manager = match pb::PackageManager::try_from(u.manager) {
            Ok(pb::PackageManager::Dpkg) => Manager::Dpkg,
            Ok(pb::PackageManager::Rpm) => Manager::Rpm,
            _ => return Err(invalid("manager", format!("unknown manager {}", u.manager))),
        };
        if u.all && !u.packages.is_empty() {
            return Err(invalid(
                "packages",
                "either all or named packages, not both",
            ));
        }
        if !u.all && u.packages.is_empty() {
            return Err(invalid("packages", "names no package (and all is not set)"));
        }
        if u.packages.len() > MAX_TARGETS {
            return Err(invalid("packages", format!("more than {MAX_TARGETS}")));
        }
        let mut packages = Vec::with_capacity(u.packages.len());
        for t in &u.packages {
            check_name(manager, &t.name)?;
            if !t.arch.is_empty() {
                check_arch(&t.arch)?;
            }
            if !t.version.is_empty() {
                check_version(manager, &t.version)?;
            }
            packages.push(Target {
                name: t.name.clone(),
                arch: t.arch.clone(),
                version: t.version.clone(),
            });
        }
        let timeout = Duration::from_secs(u64::from(u.timeout_secs));
        if timeout.is_zero() || timeout > MAX_UPGRADE_TIMEOUT {
            return Err(invalid(
                "timeout_secs",
                format!("must be 1 to {} seconds", MAX_UPGRADE_TIMEOUT.as_secs()),
            ));
        }
        Ok(Upgrade {
            manager,
            all: u.all,
            packages,
            dry_run: u.dry_run,
            refresh_index: u.refresh_index,
            timeout,
        })
    }

    pub fn to_wire(&self) -> pb::UpgradePackages {
        pb::UpgradePackages {
            manager: crate::packages::manager_to_wire(self.manager) as i32,
            all: self.all,
            packages: self
                .packages
                .iter()
                .map(|t| pb::PackageTarget {
                    name: t.name.clone(),
                    arch: t.arch.clone(),
                    version: t.version.clone(),
                })
                .collect(),
            dry_run: self.dry_run,
            refresh_index: self.refresh_index,
            timeout_secs: u32::try_from(self.timeout.as_secs()).unwrap_or(u32::MAX),
        }
    }
}

/// Checks the changes of a result that came from outside.
pub fn validate_changes(changes: &[pb::PackageChange]) -> Result<(), DecodeError> {
    const M: &str = "CommandResult";
    if changes.len() > MAX_CHANGES {
        return Err(DecodeError::Invalid {
            message: M,
            field: "changes",
            reason: format!("more than {MAX_CHANGES}"),
        });
    }
    for c in changes {
        for (field, value) in [
            ("changes.name", &c.name),
            ("changes.arch", &c.arch),
            ("changes.before", &c.before),
            ("changes.after", &c.after),
        ] {
            if value.len() > MAX_FIELD {
                return Err(DecodeError::Invalid {
                    message: M,
                    field,
                    reason: format!("longer than {MAX_FIELD} bytes"),
                });
            }
        }
        if c.name.is_empty() || (c.before.is_empty() && c.after.is_empty()) {
            return Err(DecodeError::Invalid {
                message: M,
                field: "changes",
                reason: "a change needs a name and a version before or after".into(),
            });
        }
    }
    Ok(())
}

/// Checks a piece of streamed output that came from outside.
pub fn validate_command_output(o: &pb::CommandOutput) -> Result<(), DecodeError> {
    const M: &str = "CommandOutput";
    if o.command_id.is_empty() {
        return Err(DecodeError::Missing {
            message: M,
            field: "command_id",
        });
    }
    if o.command_id.len() > MAX_STRING {
        return Err(DecodeError::Invalid {
            message: M,
            field: "command_id",
            reason: format!("longer than {MAX_STRING} bytes"),
        });
    }
    if o.text.len() > MAX_OUTPUT_PIECE {
        return Err(DecodeError::Invalid {
            message: M,
            field: "text",
            reason: format!("longer than {MAX_OUTPUT_PIECE} bytes"),
        });
    }
    if o.offset.checked_add(o.text.len() as u64).is_none() {
        return Err(DecodeError::Invalid {
            message: M,
            field: "offset",
            reason: "overflows".into(),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn wire(packages: &[(&str, &str, &str)]) -> pb::UpgradePackages {
        pb::UpgradePackages {
            manager: pb::PackageManager::Dpkg as i32,
            all: false,
            packages: packages
                .iter()
                .map(|(n, a, v)| pb::PackageTarget {
                    name: (*n).into(),
                    arch: (*a).into(),
                    version: (*v).into(),
                })
                .collect(),
            dry_run: true,
            refresh_index: true,
            timeout_secs: 600,
        }
    }

    #[test]
    fn a_well_formed_upgrade_round_trips() {
        let w = wire(&[("libssl3", "amd64", "3.0.15-1~deb12u1"), ("g++-12", "", "")]);
        let u = Upgrade::from_wire(&w).expect("valid");
        assert_eq!(u.packages.len(), 2);
        assert_eq!(u.timeout, Duration::from_secs(600));
        assert_eq!(u.to_wire(), w);
    }

    #[test]
    fn names_that_could_be_options_globs_or_two_arguments_are_refused() {
        for bad in [
            "-o", "--purge", "a b", "a*", "a?", "a[1]", "a\n", "", "a/b", "a=1",
        ] {
            assert!(
                Upgrade::from_wire(&wire(&[(bad, "", "")])).is_err(),
                "{bad:?} accepted"
            );
        }
        for bad in ["1.0 2", "-1", "1;x", "1$x"] {
            assert!(
                Upgrade::from_wire(&wire(&[("a", "", bad)])).is_err(),
                "version {bad:?} accepted"
            );
        }
        assert!(Upgrade::from_wire(&wire(&[("a", "amd 64", "")])).is_err());
    }

    #[test]
    fn all_and_named_packages_exclude_each_other_and_one_is_needed() {
        let mut w = wire(&[("a", "", "")]);
        w.all = true;
        assert!(Upgrade::from_wire(&w).is_err());
        let mut w = wire(&[]);
        assert!(Upgrade::from_wire(&w).is_err());
        w.all = true;
        assert!(Upgrade::from_wire(&w).is_ok());
    }

    #[test]
    fn timeout_and_manager_are_bounded() {
        let mut w = wire(&[("a", "", "")]);
        w.timeout_secs = 0;
        assert!(Upgrade::from_wire(&w).is_err());
        w.timeout_secs = u32::MAX;
        assert!(Upgrade::from_wire(&w).is_err());
        let mut w = wire(&[("a", "", "")]);
        w.manager = 0;
        assert!(Upgrade::from_wire(&w).is_err());
    }

    #[test]
    fn output_pieces_and_changes_are_bounded() {
        let piece = pb::CommandOutput {
            command_id: "c".into(),
            offset: u64::MAX,
            text: "x".into(),
        };
        assert!(validate_command_output(&piece).is_err());
        let piece = pb::CommandOutput {
            command_id: "c".into(),
            offset: 0,
            text: "x".repeat(MAX_OUTPUT_PIECE + 1),
        };
        assert!(validate_command_output(&piece).is_err());
        let change = pb::PackageChange {
            name: "a".into(),
            ..Default::default()
        };
        assert!(validate_changes(&[change]).is_err());
    }
}
