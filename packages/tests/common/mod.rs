//! What the tests against the real package managers share: building
//! dummy packages and running dpkg on a private root.

#![allow(dead_code)] // each test file uses part of it

pub mod rpm;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use palisade_packages::deb::upgrade::{Plan, UpdateState};

pub use palisade_testkit::on_path;

/// Whether all `tools` are installed; without one a test says so and
/// passes, except under `CI=true`, where it fails.
pub fn have(tools: &[&str]) -> bool {
    for tool in tools {
        if !on_path(tool) {
            assert!(
                !palisade_testkit::is_ci(),
                "{tool} is missing, and CI must run this test"
            );
            eprintln!("{tool} is not installed: skipping");
            return false;
        }
    }
    true
}

#[allow(unused_imports)] // each test file uses part of it
pub use palisade_testkit::apt::{dpkg, make_dpkg_root, run};

/// Builds a package with no files and no maintainer scripts;
/// `extra` holds more control fields (`"Depends: a\n"`).
pub fn build_deb(dir: &Path, name: &str, version: &str, extra: &str) -> PathBuf {
    palisade_testkit::apt::build_deb(
        dir,
        &palisade_testkit::apt::Deb {
            name,
            version,
            extra,
            preinst: None,
        },
    )
}

/// What a simulated dist-upgrade installs (name → version), keeps back
/// and removes.
pub struct Simulation {
    pub installs: BTreeMap<String, String>,
    /// Per install, the archives apt names for the new version
    /// (`Debian-Security:12/oldstable-security`, ...).
    pub archives: BTreeMap<String, String>,
    pub kept_back: BTreeSet<String>,
    pub removals: BTreeSet<String>,
}

impl Simulation {
    /// The plan installs, keeps back (held, phased, unsatisfiable) and
    /// removes exactly what apt said it would.
    pub fn assert_same_as(&self, plan: &Plan) {
        assert_eq!(
            plan_installs(plan),
            self.installs,
            "what dist-upgrade installs"
        );
        let not_installed: BTreeSet<String> = plan
            .updates
            .iter()
            .filter(|u| u.state != UpdateState::Pending)
            .map(|u| u.name.clone())
            .collect();
        assert_eq!(
            not_installed, self.kept_back,
            "what dist-upgrade keeps back"
        );
        let removals: BTreeSet<String> = plan.removals.iter().map(|r| r.name.clone()).collect();
        assert_eq!(removals, self.removals, "what dist-upgrade removes");
    }

    /// Reads `apt-get -s dist-upgrade`'s output (run with `LC_ALL=C`).
    pub fn parse(out: &str) -> Simulation {
        let read = palisade_packages::deb::simulate::parse(out).expect("apt's simulation");
        let mut installs = BTreeMap::new();
        let mut archives = BTreeMap::new();
        let mut removals = BTreeSet::new();
        for change in read.changes {
            match change.after {
                Some(version) => {
                    installs.insert(change.name.clone(), version);
                    archives.insert(change.name, change.archive);
                }
                None => {
                    removals.insert(change.name);
                }
            }
        }
        Simulation {
            installs,
            archives,
            kept_back: read.kept_back,
            removals,
        }
    }
}

/// The plan's installs (updates to install and new packages), as apt
/// prints them.
pub fn plan_installs(plan: &Plan) -> BTreeMap<String, String> {
    plan.pending()
        .map(|u| (u.name.clone(), u.candidate.to_string()))
        .chain(
            plan.new_installs
                .iter()
                .map(|n| (n.name.clone(), n.version.to_string())),
        )
        .collect()
}
