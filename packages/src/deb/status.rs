//! Installed packages from the dpkg status file (`/var/lib/dpkg/status`).
//!
//! Each paragraph is one package (name and architecture) with a `Status:
//! want flag state` line. A package counts as installed when its files are
//! unpacked and configured: state `installed`, or `triggers-awaited` /
//! `triggers-pending` (configured, waiting on a trigger; apt counts them as
//! installed too). Removed packages that left their configuration files
//! (`config-files`), half-installed and unpacked ones are not installed;
//! they are reported with their state so a caller can show a broken host.
//! A package is held when its selection (`want`) is `hold`, which is what
//! `apt-mark hold` and `dpkg --set-selections` write.
//!
//! A paragraph that cannot be read (no name, a bad version on an installed
//! package) is skipped and listed in [`StatusFile::problems`]: one bad
//! entry must not hide the rest of the inventory.

use super::control::{self, Paragraph};
use super::relation::Relations;
use super::version::{Version, VersionError};

/// Largest status file accepted (a 5,000-package system has ~10 MB).
pub const MAX_SIZE: usize = 64 << 20;

/// What the administrator asked for the package (the `want` word).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Selection {
    Unknown,
    Install,
    Hold,
    Deinstall,
    Purge,
}

/// Where dpkg is with the package (the state word).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PackageState {
    NotInstalled,
    ConfigFiles,
    HalfInstalled,
    Unpacked,
    HalfConfigured,
    TriggersAwaited,
    TriggersPending,
    Installed,
}

impl PackageState {
    /// Unpacked and configured: the package is in use.
    pub fn is_installed(self) -> bool {
        matches!(
            self,
            PackageState::Installed | PackageState::TriggersAwaited | PackageState::TriggersPending
        )
    }
}

/// One package of the status file.
#[derive(Debug, Clone, PartialEq)]
pub struct InstalledPackage {
    pub name: String,
    /// `amd64`, `all`, ...; empty for a package dpkg knows no architecture of
    /// (only possible in states other than installed).
    pub architecture: String,
    pub version: Option<Version>,
    pub selection: Selection,
    pub state: PackageState,
    /// The source package: the `Source` field, else the package's own name.
    pub source: String,
    /// The source version when `Source` names one (`Source: foo (1.2-1)`),
    /// else the package's version.
    pub source_version: Option<Version>,
    /// Depends, Pre-Depends, Breaks, Conflicts and Provides, as written:
    /// an upgrade must keep them satisfied.
    pub relations: Relations,
    /// `Essential: yes` or `Protected: yes`: apt never removes it on its
    /// own.
    pub essential: bool,
}

impl InstalledPackage {
    pub fn is_installed(&self) -> bool {
        self.state.is_installed()
    }

    pub fn is_held(&self) -> bool {
        self.selection == Selection::Hold
    }
}

/// Why one paragraph of the status file was skipped.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EntryProblem {
    #[error(transparent)]
    Syntax(#[from] control::SyntaxError),
    #[error("line {line}: no Package field")]
    NoName { line: usize },
    #[error("line {line}: package {name}: no Status field")]
    NoStatus { line: usize, name: String },
    #[error("line {line}: package {name}: status {status:?} is not 'want flag state'")]
    BadStatus {
        line: usize,
        name: String,
        status: String,
    },
    #[error("line {line}: package {name} is installed but has no Version")]
    NoVersion { line: usize, name: String },
    #[error("line {line}: package {name}: {field}: {error}")]
    BadVersion {
        line: usize,
        name: String,
        field: &'static str,
        error: VersionError,
    },
    #[error(
        "line {line}: package {name}: Source {source_field:?} is not 'name' or 'name (version)'"
    )]
    BadSource {
        line: usize,
        name: String,
        source_field: String,
    },
}

/// Why the status file as a whole cannot be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StatusError {
    #[error("the dpkg status file is larger than {MAX_SIZE} bytes")]
    TooLarge,
}

/// The parsed status file: every package paragraph that could be read, and
/// what was wrong with the others.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct StatusFile {
    pub packages: Vec<InstalledPackage>,
    pub problems: Vec<EntryProblem>,
}

impl StatusFile {
    /// Parses the contents of a dpkg status file.
    pub fn parse(input: &[u8]) -> Result<StatusFile, StatusError> {
        if input.len() > MAX_SIZE {
            return Err(StatusError::TooLarge);
        }
        let (packages, problems) = control::entries(input, package);
        Ok(StatusFile { packages, problems })
    }

    /// The installed packages (see [`PackageState::is_installed`]).
    pub fn installed(&self) -> impl Iterator<Item = &InstalledPackage> {
        self.packages.iter().filter(|p| p.is_installed())
    }
}

fn package(p: &Paragraph<'_>) -> Result<InstalledPackage, EntryProblem> {
    let line = p.line;
    let name = match p.text("Package")? {
        Some(name) if !name.is_empty() => name.to_owned(),
        _ => return Err(EntryProblem::NoName { line }),
    };
    let Some(status) = p.text("Status")? else {
        return Err(EntryProblem::NoStatus { line, name });
    };
    let Some((selection, state)) = parse_status(status) else {
        return Err(EntryProblem::BadStatus {
            line,
            name,
            status: status.to_owned(),
        });
    };
    let parse_version = |field: &'static str, text: &str| {
        Version::parse(text).map_err(|error| EntryProblem::BadVersion {
            line,
            name: name.clone(),
            field,
            error,
        })
    };
    let version = match p.text("Version")? {
        None | Some("") => None,
        Some(text) => Some(parse_version("Version", text)?),
    };
    let (source, source_version) = match p.text("Source")? {
        None | Some("") => (name.clone(), version.clone()),
        Some(field) => match split_source(field) {
            Some((source, None)) => (source.to_owned(), version.clone()),
            Some((source, Some(text))) => (source.to_owned(), Some(parse_version("Source", text)?)),
            None => {
                return Err(EntryProblem::BadSource {
                    line,
                    name,
                    source_field: field.to_owned(),
                });
            }
        },
    };
    if state.is_installed() && version.is_none() {
        return Err(EntryProblem::NoVersion { line, name });
    }
    let architecture = p.text("Architecture")?.unwrap_or("").to_owned();
    let relations = Relations::of(p)?;
    let yes = |field: &str| -> Result<bool, EntryProblem> {
        Ok(p.text(field)?
            .is_some_and(|v| v.trim().eq_ignore_ascii_case("yes")))
    };
    let essential = yes("Essential")? || yes("Protected")?;
    Ok(InstalledPackage {
        name,
        architecture,
        version,
        selection,
        state,
        source,
        source_version,
        relations,
        essential,
    })
}

/// `name` or `name (version)`: the source package and its version text;
/// `None` when the field is neither.
pub(super) fn split_source(field: &str) -> Option<(&str, Option<&str>)> {
    let (source, version) = match field.split_once('(') {
        None => (field.trim(), None),
        Some((source, rest)) => {
            let version = rest.trim_end().strip_suffix(')')?;
            (source.trim(), Some(version))
        }
    };
    let valid = !source.is_empty() && !source.contains(char::is_whitespace);
    (valid && version != Some("")).then_some((source, version))
}

/// `want flag state`, e.g. `install ok installed`, `hold ok installed`,
/// `deinstall ok config-files`. The flag (`ok`, `reinstreq`) is not kept.
fn parse_status(status: &str) -> Option<(Selection, PackageState)> {
    let mut words = status.split_ascii_whitespace();
    let (want, flag, state) = (words.next()?, words.next()?, words.next()?);
    if words.next().is_some() || !matches!(flag, "ok" | "reinstreq" | "hold" | "hold-reinstreq") {
        return None;
    }
    let selection = match want {
        "unknown" => Selection::Unknown,
        "install" => Selection::Install,
        "hold" => Selection::Hold,
        "deinstall" => Selection::Deinstall,
        "purge" => Selection::Purge,
        _ => return None,
    };
    let state = match state {
        "not-installed" => PackageState::NotInstalled,
        "config-files" => PackageState::ConfigFiles,
        "half-installed" => PackageState::HalfInstalled,
        "unpacked" => PackageState::Unpacked,
        "half-configured" => PackageState::HalfConfigured,
        "triggers-awaited" => PackageState::TriggersAwaited,
        "triggers-pending" => PackageState::TriggersPending,
        "installed" => PackageState::Installed,
        _ => return None,
    };
    Some((selection, state))
}

#[cfg(test)]
mod tests {
    use super::*;

    const STATUS: &str = "\
Package: libssl3
Status: install ok installed
Priority: optional
Section: libs
Installed-Size: 6200
Maintainer: Debian OpenSSL Team <pkg-openssl-devel@alioth-lists.debian.net>
Architecture: amd64
Multi-Arch: same
Source: openssl
Version: 3.0.11-1~deb12u2
Depends: libc6 (>= 2.34)
Description: Secure Sockets Layer toolkit - shared libraries
 This package is part of the OpenSSL project's implementation of the SSL
 and TLS cryptographic protocols.

Package: bash
Essential: yes
Status: hold ok installed
Architecture: amd64
Version: 5.2.15-2+b2
Source: bash (5.2.15-2)
Conffiles:
 /etc/bash.bashrc 89269e1298235f1b12b4c16e4065ad0d
 /etc/skel/.bashrc 7fd1bf2ab3ea5ffd0b4f4b8e3e8e1c6a

Package: old-tool
Status: deinstall ok config-files
Architecture: amd64
Version: 1.0-1
Conffiles:
 /etc/old-tool.conf 0123456789abcdef0123456789abcdef obsolete

Package: pending
Status: install ok triggers-pending
Architecture: all
Version: 2:0.5
Triggers-Pending: ldconfig
";

    #[test]
    fn reads_names_versions_sources_holds_and_states() {
        let file = StatusFile::parse(STATUS.as_bytes()).expect("parse");
        assert!(file.problems.is_empty(), "{:?}", file.problems);
        let names: Vec<&str> = file.installed().map(|p| p.name.as_str()).collect();
        assert_eq!(names, ["libssl3", "bash", "pending"]);
        let ssl = &file.packages[0];
        assert_eq!(ssl.architecture, "amd64");
        assert_eq!(ssl.source, "openssl");
        assert_eq!(
            ssl.version.as_ref().map(ToString::to_string).as_deref(),
            Some("3.0.11-1~deb12u2")
        );
        assert_eq!(ssl.source_version, ssl.version);
        assert!(!ssl.is_held());
        let bash = &file.packages[1];
        assert!(bash.is_held() && bash.is_installed());
        assert_eq!(
            bash.source_version
                .as_ref()
                .map(ToString::to_string)
                .as_deref(),
            Some("5.2.15-2")
        );
        let old = &file.packages[2];
        assert_eq!(
            (old.state, old.selection),
            (PackageState::ConfigFiles, Selection::Deinstall)
        );
        assert!(!old.is_installed());
        assert_eq!(
            file.packages[3].version.as_ref().map(Version::epoch),
            Some(2)
        );
    }

    #[test]
    fn bad_entries_are_skipped_with_a_reason_and_the_rest_is_kept() {
        let input = "\
Package: ok
Status: install ok installed
Version: 1.0

Status: install ok installed
Version: 1.0

Package: nostatus
Version: 1.0

Package: weird
Status: install maybe installed
Version: 1.0

Package: noversion
Status: install ok installed

Package: badversion
Status: install ok installed
Version: 1.0 beta

Package: badsource
Status: install ok installed
Version: 1.0
Source: src (1.0

Package: notinstalled
Status: purge ok not-installed
";
        let file = StatusFile::parse(input.as_bytes()).expect("parse");
        let names: Vec<&str> = file.packages.iter().map(|p| p.name.as_str()).collect();
        assert_eq!(names, ["ok", "notinstalled"]);
        let lines: Vec<String> = file.problems.iter().map(ToString::to_string).collect();
        assert_eq!(
            lines,
            [
                "line 5: no Package field",
                "line 8: package nostatus: no Status field",
                "line 11: package weird: status \"install maybe installed\" is not 'want flag state'",
                "line 15: package noversion is installed but has no Version",
                "line 18: package badversion: Version: the version contains whitespace",
                "line 22: package badsource: Source \"src (1.0\" is not 'name' or 'name (version)'",
            ]
        );
    }

    #[test]
    fn a_huge_file_is_refused_not_read() {
        let big = vec![b'\n'; MAX_SIZE + 1];
        assert_eq!(StatusFile::parse(&big), Err(StatusError::TooLarge));
    }
}
