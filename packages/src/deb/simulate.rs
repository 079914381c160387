//! What `apt-get -s` says it would do, read from its output (run with
//! `LC_ALL=C`, so the words are apt's untranslated ones).
//!
//! apt prints one line per action, whatever the command (`dist-upgrade`,
//! `install --only-upgrade ...`):
//!
//! ```text
//! Inst hello [1.0] (1.1 Debian:12/stable [amd64])     upgrade 1.0 -> 1.1
//! Inst newdep (2.0 Debian:12/stable [all])            new install
//! Remv oldthing [3.1]                                 removal
//! Conf hello (1.1 Debian:12/stable [amd64])           configure (ignored)
//! ```
//!
//! and lists packages it keeps back after "The following packages have
//! been kept back:", indented by two spaces. A foreign-architecture package
//! is named `name:arch`. The output comes from a program control ran as
//! root on the host, so it is read as untrusted bytes: a line this parser
//! does not know is skipped, a known line that is malformed is an error,
//! and the result is bounded by the input.

use std::collections::BTreeSet;

/// One package apt would change.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct SimulatedChange {
    pub name: String,
    /// The architecture apt printed (`[amd64]`, or `:arch` on the name);
    /// empty when it printed none (removals).
    pub arch: String,
    /// Installed version; `None` for a new install.
    pub before: Option<String>,
    /// Version after; `None` for a removal.
    pub after: Option<String>,
    /// Where the new version comes from, as apt printed it
    /// (`Debian:12/stable, Debian-Security:12/stable-security`); empty for
    /// a removal.
    pub archive: String,
}

/// Everything a simulation said.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Simulation {
    /// In apt's order.
    pub changes: Vec<SimulatedChange>,
    pub kept_back: BTreeSet<String>,
}

/// A known line that does not have the shape apt gives it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("line {line} of apt's simulation is not understood: {reason}")]
pub struct SimulationError {
    pub line: usize,
    pub reason: &'static str,
}

/// Reads the output of `apt-get -s`.
pub fn parse(output: &str) -> Result<Simulation, SimulationError> {
    let mut simulation = Simulation::default();
    let mut in_kept_back = false;
    for (index, line) in output.lines().enumerate() {
        let error = |reason| SimulationError {
            line: index + 1,
            reason,
        };
        if in_kept_back {
            if let Some(names) = line.strip_prefix("  ") {
                simulation
                    .kept_back
                    .extend(names.split_whitespace().map(str::to_owned));
                continue;
            }
            in_kept_back = false;
        }
        if line.starts_with("The following packages have been kept back") {
            in_kept_back = true;
        } else if let Some(rest) = line.strip_prefix("Inst ") {
            simulation
                .changes
                .push(install(rest).ok_or_else(|| error("an Inst line"))?);
        } else if let Some(rest) = line.strip_prefix("Remv ") {
            simulation
                .changes
                .push(removal(rest).ok_or_else(|| error("a Remv line"))?);
        }
    }
    Ok(simulation)
}

/// `name[:arch] [old] (new archive... [arch]) [extra]`.
fn install(rest: &str) -> Option<SimulatedChange> {
    let (name, rest) = word(rest)?;
    let (name, name_arch) = split_arch(name)?;
    let (before, rest) = bracketed_version(rest);
    let inner = rest.trim_start().strip_prefix('(')?;
    let inner = &inner[..inner.find(')')?];
    let (after, archive) = word(inner)?;
    check_version(after)?;
    // The architecture is the last `[...]` inside the parentheses.
    let (archive, arch) = match archive.rfind('[') {
        Some(start) => {
            let arch = archive[start + 1..]
                .split_once(']')
                .map(|(arch, _)| arch)
                .filter(|a| !a.is_empty() && !a.contains(char::is_whitespace))
                .unwrap_or(name_arch);
            (&archive[..start], arch)
        }
        None => (archive, name_arch),
    };
    Some(SimulatedChange {
        name: name.to_owned(),
        arch: arch.to_owned(),
        before,
        after: Some(after.to_owned()),
        archive: archive.trim().to_owned(),
    })
}

/// `name[:arch] [old] [extra]`.
fn removal(rest: &str) -> Option<SimulatedChange> {
    let (name, rest) = word(rest)?;
    let (name, arch) = split_arch(name)?;
    let (before, _) = bracketed_version(rest);
    Some(SimulatedChange {
        name: name.to_owned(),
        arch: arch.to_owned(),
        before: Some(before?),
        after: None,
        archive: String::new(),
    })
}

fn word(text: &str) -> Option<(&str, &str)> {
    let text = text.trim_start();
    let end = text.find(char::is_whitespace).unwrap_or(text.len());
    (end > 0).then(|| (&text[..end], &text[end..]))
}

fn split_arch(name: &str) -> Option<(&str, &str)> {
    let (name, arch) = name.split_once(':').unwrap_or((name, ""));
    (!name.is_empty() && !name.starts_with(['[', '('])).then_some((name, arch))
}

/// A leading `[version]`, if there is one.
fn bracketed_version(rest: &str) -> (Option<String>, &str) {
    let trimmed = rest.trim_start();
    if let Some(inner) = trimmed.strip_prefix('[')
        && let Some((version, after)) = inner.split_once(']')
        && check_version(version).is_some()
    {
        return (Some(version.to_owned()), after);
    }
    (None, rest)
}

fn check_version(version: &str) -> Option<()> {
    (!version.is_empty() && !version.contains(char::is_whitespace)).then_some(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const OUTPUT: &str = "\
NOTE: This is only a simulation!
Reading package lists...
Calculating upgrade...
The following packages have been kept back:
  pal-kept pal-other
The following packages will be upgraded:
  hello libfoo
2 upgraded, 1 newly installed, 1 to remove and 2 not upgraded.
Remv pal-old [0.9]
Inst hello [1.0] (1.1 Test:stable [all])
Inst newdep (2.0 Test-Security:stable-security [amd64])
Inst libfoo:i386 [1:2.0-1] (1:2.1-1 Debian:12/stable, Debian-Security:12/stable-security [i386]) []
Conf hello (1.1 Test:stable [all])
";

    #[test]
    fn upgrades_new_installs_removals_and_kept_back_packages_are_read() {
        let s = parse(OUTPUT).expect("parses");
        let change =
            |name: &str, arch: &str, before: Option<&str>, after: Option<&str>| SimulatedChange {
                name: name.into(),
                arch: arch.into(),
                before: before.map(Into::into),
                after: after.map(Into::into),
                archive: String::new(),
            };
        let archives: Vec<&str> = s.changes.iter().map(|c| c.archive.as_str()).collect();
        assert_eq!(
            archives,
            [
                "",
                "Test:stable",
                "Test-Security:stable-security",
                "Debian:12/stable, Debian-Security:12/stable-security"
            ]
        );
        let s = Simulation {
            changes: s
                .changes
                .into_iter()
                .map(|c| SimulatedChange {
                    archive: String::new(),
                    ..c
                })
                .collect(),
            ..s
        };
        assert_eq!(
            s.changes,
            vec![
                change("pal-old", "", Some("0.9"), None),
                change("hello", "all", Some("1.0"), Some("1.1")),
                change("newdep", "amd64", None, Some("2.0")),
                change("libfoo", "i386", Some("1:2.0-1"), Some("1:2.1-1")),
            ]
        );
        assert_eq!(
            s.kept_back,
            ["pal-kept", "pal-other"].map(String::from).into()
        );
    }

    #[test]
    fn malformed_known_lines_are_errors_and_unknown_lines_are_skipped() {
        assert!(parse("Inst \n").is_err());
        assert!(parse("Inst hello [1.0]\n").is_err());
        assert!(parse("Inst hello [1.0] ( )\n").is_err());
        assert!(parse("Remv hello\n").is_err());
        assert_eq!(
            parse("E: something\nW: else\n").expect("ok"),
            Simulation::default()
        );
    }
}
