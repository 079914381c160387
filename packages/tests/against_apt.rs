//! The pending-update computation checked against apt itself.
//!
//! The test builds a local repository with four suites (a normal one, one
//! labelled as a security archive as Debian's Release files are, a
//! `NotAutomatic`/`ButAutomaticUpgrades` backports suite and a
//! `NotAutomatic` experimental one), installs the
//! old versions into a private dpkg root, holds one package, pins others
//! (a release pin, a version pin above 1000 that downgrades, a negative
//! pin, a version pin that freezes), and makes upgrades that need a new
//! package, a virtual package, a missing package (kept back) and one that
//! would break an installed package's dependency, and a phased one. Then:
//!
//! - the plan computed from the files apt reads equals what
//!   `apt-get -s dist-upgrade` would install, keep back (held, phased,
//!   unsatisfiable) and remove;
//! - every candidate equals `apt-cache policy`'s;
//! - the security classification follows the Release files (including a
//!   security version masked by a newer normal one);
//! - after a real `apt-get dist-upgrade` the installed versions are the
//!   plan's, and a new plan has nothing pending.
//!
//! apt runs with its configuration confined to the private root
//! (`APT_CONFIG`), so neither the machine's packages nor its apt settings
//! are touched or read.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::Command;

use common::{Simulation, build_deb, dpkg, have, make_dpkg_root, plan_installs, run};
use palisade_packages::deb::apt::{AptState, NamedFile, is_preferences_name};
use palisade_packages::deb::upgrade::{Options, UpdateState};
use palisade_packages::inventory::Inventory;
use palisade_testkit::apt::{build_repository, make_apt_root};

/// (suite, package, version, extra control fields)
const REPOSITORY: &[(&str, &str, &str, &str)] = &[
    ("stable", "pal-current", "1.0", ""),
    ("stable", "pal-sec", "1.0", ""),
    ("stable", "pal-plain", "1.1", ""),
    ("stable", "pal-masked", "1.2", ""),
    ("stable", "pal-held", "1.1", ""),
    ("stable", "pal-pinned", "1.2", ""),
    ("stable", "pal-frozen", "1.1", ""),
    ("stable", "pal-blocked", "1.1", ""),
    ("stable", "pal-down", "1.0", ""),
    ("stable", "pal-kept", "1.1", "Depends: pal-missing (>= 1)\n"),
    ("stable", "pal-newdep", "1.1", "Depends: pal-lib (>= 1.0)\n"),
    ("stable", "pal-lib", "1.0", ""),
    ("stable", "pal-virtual", "1.1", "Depends: pal-virt-api\n"),
    ("stable", "pal-core", "2.0", ""),
    (
        "stable",
        "pal-phased",
        "1.1",
        "Phased-Update-Percentage: 0\n",
    ),
    ("stable-security", "pal-sec", "1.1", ""),
    ("stable-security", "pal-masked", "1.1", ""),
    ("stable-security", "pal-pinned", "1.1", ""),
    ("stable-backports", "pal-bpo", "2.0", ""),
    ("stable-backports", "pal-plain", "9.0", ""),
    ("experimental", "pal-exp", "2.0", ""),
    ("experimental", "pal-sec", "5.0", ""),
];

/// (package, installed version, extra control fields)
const INSTALLED: &[(&str, &str, &str)] = &[
    ("pal-current", "1.0", ""),
    ("pal-sec", "1.0", ""),
    ("pal-plain", "1.0", ""),
    ("pal-masked", "1.0", ""),
    ("pal-held", "1.0", ""),
    ("pal-pinned", "1.0", ""),
    ("pal-frozen", "1.0", ""),
    ("pal-blocked", "1.0", ""),
    ("pal-down", "1.5", ""),
    ("pal-kept", "1.0", ""),
    ("pal-newdep", "1.0", ""),
    ("pal-virtual", "1.0", ""),
    ("pal-provider", "1.0", "Provides: pal-virt-api\n"),
    ("pal-bpo", "1.0", ""),
    ("pal-core", "1.0", ""),
    ("pal-phased", "1.0", ""),
    ("pal-exp", "1.0", ""),
    ("pal-app", "1.0", "Depends: pal-core (<< 2)\n"),
];

const PREFERENCES: &str = "\
Explanation: take this one from the security suite even though stable is newer
Package: pal-pinned
Pin: release l=Palisade-Security
Pin-Priority: 990

Package: pal-frozen
Pin: version 1.0
Pin-Priority: 1001

Package: pal-down
Pin: version 1.0
Pin-Priority: 1001

Package: pal-blocked
Pin: release a=stable
Pin-Priority: -1
";

fn suite_fields(suite: &str) -> Vec<String> {
    let (label, extra): (&str, &[&str]) = match suite {
        "stable-security" => ("Palisade-Security", &[]),
        "stable-backports" => (
            "Palisade Backports",
            &["NotAutomatic=yes", "ButAutomaticUpgrades=yes"],
        ),
        "experimental" => ("Palisade Experimental", &["NotAutomatic=yes"]),
        _ => ("Palisade", &[]),
    };
    let mut fields = vec![
        "Origin=Palisade".to_owned(),
        format!("Label={label}"),
        format!("Suite={suite}"),
        format!("Codename={suite}"),
        "Architectures=amd64 all".to_owned(),
        "Components=main".to_owned(),
    ];
    fields.extend(extra.iter().map(|s| (*s).to_owned()));
    fields
}

/// Writes an apt configuration that confines apt to `root`.
fn apt_config(root: &Path, repo: &Path, arch: &str) -> std::path::PathBuf {
    make_apt_root(
        root,
        repo,
        &[
            "stable",
            "stable-security",
            "stable-backports",
            "experimental",
        ],
    );
    std::fs::write(
        root.join("etc/apt/preferences.d/palisade-test"),
        PREFERENCES,
    )
    .expect("preferences");
    let r = root.display();
    let config = format!(
        "Dir \"{r}/\";\n\
         Dir::State::status \"{r}/var/lib/dpkg/status\";\n\
         APT::Architecture \"{arch}\";\n\
         APT::Architectures {{ \"{arch}\"; }};\n\
         APT::Sandbox::User \"root\";\n\
         Acquire::Languages \"none\";\n\
         Debug::NoLocking \"true\";\n\
         DPkg::Options {{ \"--root={r}\"; \"--admindir={r}/var/lib/dpkg\"; \
         \"--force-not-root\"; \"--force-script-chrootless\"; }};\n"
    );
    // Phasing needs a machine id (apt skips it without one).
    std::fs::write(
        root.join("etc/machine-id"),
        "0123456789abcdef0123456789abcdef\n",
    )
    .expect("machine-id");
    let path = root.join("apt.conf");
    std::fs::write(&path, config).expect("apt.conf");
    path
}

fn apt(config: &Path, program: &str, args: &[&str]) -> String {
    let out = run(Command::new(program)
        .env("APT_CONFIG", config)
        .env("LC_ALL", "C")
        .env("DEBIAN_FRONTEND", "noninteractive")
        .args(args));
    String::from_utf8(out.stdout).expect("apt prints UTF-8")
}

fn simulate(config: &Path) -> Simulation {
    Simulation::parse(&apt(config, "apt-get", &["-s", "dist-upgrade"]))
}

/// `apt-cache policy`'s candidate per package.
fn policy_candidates(config: &Path, names: &[&str]) -> BTreeMap<String, String> {
    let mut args = vec!["policy"];
    args.extend_from_slice(names);
    let out = apt(config, "apt-cache", &args);
    let mut candidates = BTreeMap::new();
    let mut current = None;
    for line in out.lines() {
        if !line.starts_with(' ') && line.ends_with(':') {
            current = Some(line.trim_end_matches(':').to_owned());
        } else if let (Some(name), Some(candidate)) =
            (&current, line.trim().strip_prefix("Candidate: "))
        {
            candidates.insert(name.clone(), candidate.to_owned());
        }
    }
    candidates
}

/// Reads what apt reads, as the collector does.
fn read_state(root: &Path) -> AptState {
    let status = std::fs::read(root.join("var/lib/dpkg/status")).expect("status");
    let read_dir = |dir: &Path, keep: &dyn Fn(&str) -> bool| -> Vec<NamedFile> {
        let mut files: Vec<NamedFile> = std::fs::read_dir(dir)
            .expect("read_dir")
            .map(|e| e.expect("entry").path())
            .filter(|p| p.is_file())
            .filter_map(|p| {
                let name = p.file_name()?.to_str()?.to_owned();
                keep(&name).then(|| NamedFile {
                    contents: std::fs::read(&p).expect("read"),
                    name,
                })
            })
            .collect();
        files.sort_by(|a, b| a.name.cmp(&b.name));
        files
    };
    let lists = read_dir(&root.join("var/lib/apt/lists"), &|_| true);
    let preferences = read_dir(&root.join("etc/apt/preferences.d"), &is_preferences_name);
    let state = AptState::from_files(&status, &lists, &preferences).expect("apt state");
    assert!(state.problems.is_empty(), "{:?}", state.problems);
    assert!(
        state.status.problems.is_empty(),
        "{:?}",
        state.status.problems
    );
    state
}

fn native_architecture() -> String {
    let out = run(Command::new("dpkg").arg("--print-architecture"));
    String::from_utf8(out.stdout)
        .expect("utf-8")
        .trim()
        .to_owned()
}

#[test]
fn the_plan_is_what_apt_would_do() {
    if !have(&["dpkg", "dpkg-deb", "apt-get", "apt-cache", "apt-ftparchive"]) {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let root = dir.path().join("root");
    let repo = dir.path().join("repo");
    let build = dir.path().join("build");
    std::fs::create_dir_all(&build).expect("mkdir");
    make_dpkg_root(&root);
    build_repository(&build, &repo, REPOSITORY, suite_fields);
    let debs: Vec<String> = INSTALLED
        .iter()
        .map(|(name, version, extra)| {
            build_deb(&build, name, version, extra)
                .display()
                .to_string()
        })
        .collect();
    let mut args = vec!["--install"];
    args.extend(debs.iter().map(String::as_str));
    dpkg(&root, &args, None);
    dpkg(&root, &["--set-selections"], Some("pal-held hold\n"));

    let arch = native_architecture();
    let config = apt_config(&root, &repo, &arch);
    apt(&config, "apt-get", &["update"]);

    let state = read_state(&root);
    let options = Options {
        native_architecture: arch.clone(),
        default_release: None,
        phasing: true,
    };
    let plan = state.plan(&options);
    let apt_says = simulate(&config);

    // The scenario exercises every case (else the comparison below could
    // pass on a plan that never holds or keeps anything back).
    let state_of = |name: &str| {
        plan.updates
            .iter()
            .find(|u| u.name == name)
            .map(|u| u.state.clone())
    };
    assert_eq!(state_of("pal-held"), Some(UpdateState::Held));
    assert!(matches!(
        state_of("pal-kept"),
        Some(UpdateState::KeptBack { .. })
    ));
    assert!(plan.new_installs.iter().any(|n| n.name == "pal-lib"));
    assert!(plan.removals.iter().any(|r| r.name == "pal-app"));
    assert_eq!(
        state_of("pal-phased"),
        Some(UpdateState::Deferred { percentage: 0 })
    );

    apt_says.assert_same_as(&plan);

    // Candidates as apt-cache policy shows them, for every package.
    let names: Vec<&str> = INSTALLED.iter().map(|i| i.0).collect();
    let apt_candidates = policy_candidates(&config, &names);
    for (name, installed, _) in INSTALLED {
        let ours = plan
            .updates
            .iter()
            .find(|u| u.name == *name)
            .map_or_else(|| (*installed).to_owned(), |u| u.candidate.to_string());
        assert_eq!(
            Some(&ours),
            apt_candidates.get(*name),
            "candidate of {name}"
        );
    }

    // Security: by the Release file of every version after the installed
    // one up to the candidate.
    let security: BTreeSet<&str> = plan
        .updates
        .iter()
        .filter(|u| u.security)
        .map(|u| u.name.as_str())
        .collect();
    assert_eq!(
        security,
        BTreeSet::from(["pal-masked", "pal-pinned", "pal-sec"]),
        "security updates"
    );
    let masked = plan
        .updates
        .iter()
        .find(|u| u.name == "pal-masked")
        .expect("pal-masked");
    assert!(
        masked.origins.iter().all(|o| !o.security),
        "the candidate itself comes from the normal suite: {:?}",
        masked.origins
    );

    // A real upgrade installs the plan; then nothing is pending.
    apt(
        &config,
        "apt-get",
        &["-y", "--allow-downgrades", "dist-upgrade"],
    );
    let after = read_state(&root);
    let installed_after: BTreeMap<String, String> = after
        .status
        .installed()
        .map(|p| {
            let version = p.version.as_ref().expect("installed version");
            (p.name.clone(), version.to_string())
        })
        .collect();
    for (name, version) in plan_installs(&plan) {
        assert_eq!(
            installed_after.get(&name),
            Some(&version),
            "{name} after the upgrade"
        );
    }
    let plan_after = after.plan(&options);
    assert_eq!(plan_after.pending().count(), 0, "{:?}", plan_after.updates);
    assert!(plan_after.removals.is_empty() && plan_after.new_installs.is_empty());
    assert!(simulate(&config).installs.is_empty());

    // What the agent would upload for this upgrade: a delta naming exactly
    // the packages apt changed, which turns the old inventory into the new.
    let before = Inventory::from_apt(&state.status, &plan);
    let now = Inventory::from_apt(&after.status, &plan_after);
    let delta = before.diff(&now);
    assert_eq!(before.apply(&delta).expect("the delta applies"), now);
    let installs: BTreeSet<String> = plan_installs(&plan).into_keys().collect();
    let set: BTreeSet<String> = delta.installed_set.iter().map(|p| p.name.clone()).collect();
    assert_eq!(set, installs, "packages added or upgraded");
    let removed: BTreeSet<String> = delta
        .installed_removed
        .iter()
        .map(|k| k.0.clone())
        .collect();
    let upgraded_or_removed: BTreeSet<String> = plan
        .pending()
        .map(|u| u.name.clone())
        .chain(plan.removals.iter().map(|r| r.name.clone()))
        .collect();
    assert_eq!(
        removed, upgraded_or_removed,
        "old versions and removed packages"
    );
    assert!(
        now.diff(&Inventory::from_apt(&read_state(&root).status, &plan_after))
            .is_empty()
    );
}
