//! What the tests against the real package managers share: building
//! dummy packages and running dpkg on a private root.

#![allow(dead_code)] // each test file uses part of it

pub mod rpm;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use palisade_packages::deb::upgrade::{Plan, UpdateState};
use std::process::{Command, Output, Stdio};

/// Whether `program` is an executable file on the `PATH`. Looked up rather
/// than run: `dnf --version` would open the host's rpm database.
pub fn on_path(program: &str) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::env::var_os("PATH").is_some_and(|path| {
        std::env::split_paths(&path).any(|dir| {
            std::fs::metadata(dir.join(program))
                .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        })
    })
}

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

/// Builds a package with no files and no maintainer scripts;
/// `extra` holds more control fields (`"Depends: a\n"`).
pub fn build_deb(dir: &Path, name: &str, version: &str, extra: &str) -> PathBuf {
    let tree = dir.join(format!("{name}_{version}"));
    std::fs::create_dir_all(tree.join("DEBIAN")).expect("mkdir");
    let control = format!(
        "Package: {name}\nVersion: {version}\nArchitecture: all\n\
         Maintainer: Palisade tests <tests@example.invalid>\n{extra}Description: a test package\n"
    );
    std::fs::write(tree.join("DEBIAN/control"), control).expect("control");
    let deb = dir.join(format!("{name}_{version}_all.deb"));
    let out = Command::new("dpkg-deb")
        .args(["--build", "-Zgzip"])
        .arg(&tree)
        .arg(&deb)
        .output()
        .expect("run dpkg-deb");
    assert!(out.status.success(), "dpkg-deb: {out:?}");
    std::fs::remove_dir_all(&tree).expect("remove the build tree");
    deb
}

/// Makes the directories a private dpkg root needs.
pub fn make_dpkg_root(root: &Path) {
    for sub in ["var/lib/dpkg/updates", "var/lib/dpkg/info", "var/log"] {
        std::fs::create_dir_all(root.join(sub)).expect("mkdir");
    }
    std::fs::write(root.join("var/lib/dpkg/status"), "").expect("status");
}

/// Runs dpkg on the private root at `root`; panics when it fails.
pub fn dpkg(root: &Path, args: &[&str], stdin: Option<&str>) {
    use std::io::Write;
    let mut cmd = Command::new("dpkg");
    cmd.arg(format!("--root={}", root.display()))
        .arg(format!(
            "--admindir={}",
            root.join("var/lib/dpkg").display()
        ))
        .args(["--force-not-root", "--force-script-chrootless"])
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().expect("run dpkg");
    if let Some(input) = stdin {
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(input.as_bytes())
            .expect("write stdin");
    } else {
        drop(child.stdin.take());
    }
    let out = child.wait_with_output().expect("wait dpkg");
    assert!(out.status.success(), "dpkg {args:?}: {out:?}");
}

/// Runs a command and returns its output; panics when it cannot start or
/// fails.
pub fn run(cmd: &mut Command) -> Output {
    let out = cmd.output().unwrap_or_else(|e| panic!("run {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
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
        let mut installs = BTreeMap::new();
        let mut archives = BTreeMap::new();
        let mut removals = BTreeSet::new();
        let mut kept_back = BTreeSet::new();
        let mut in_kept_back = false;
        for line in out.lines() {
            if in_kept_back {
                if let Some(names) = line.strip_prefix("  ") {
                    kept_back.extend(names.split_whitespace().map(str::to_owned));
                    continue;
                }
                in_kept_back = false;
            }
            if line.starts_with("The following packages have been kept back") {
                in_kept_back = true;
            } else if let Some(rest) = line.strip_prefix("Inst ") {
                let name = rest.split_whitespace().next().expect("Inst name");
                let version = rest
                    .split_once('(')
                    .and_then(|(_, v)| v.split_whitespace().next())
                    .expect("Inst version");
                installs.insert(name.to_owned(), version.to_owned());
                let archive = rest.split_once('(').map_or("", |(_, v)| v);
                archives.insert(name.to_owned(), archive.to_owned());
            } else if let Some(rest) = line.strip_prefix("Remv ") {
                removals.insert(
                    rest.split_whitespace()
                        .next()
                        .expect("Remv name")
                        .to_owned(),
                );
            }
        }
        Simulation {
            installs,
            archives,
            kept_back,
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
