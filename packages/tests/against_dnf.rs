//! The dnf upgrade plan ([`palisade_packages::rpm::dnf`]) checked against
//! dnf itself, in a private root: dummy packages built with `rpmbuild`, two
//! repositories made with `createrepo_c` (one of them with advisories added
//! by `modifyrepo_c`, and a better priority), the old versions installed
//! with `dnf --installroot`, then the plan compared with
//! `dnf check-update` (updates and obsoleting packages),
//! `dnf check-update --security`, `dnf updateinfo list` (all and
//! `--security`), and finally with what a real `dnf upgrade` installs,
//! after which the plan must be empty.
//!
//! The packages cover an epoch bump, a `noarch` package becoming
//! `x86_64`, an install-only `kernel`, a package excluded by the
//! repository's `excludepkgs`, one obsoleted by another, one whose newest
//! version is hidden by the better-priority repository, security and
//! bugfix advisories. The versionlock plugin is not installed with
//! Debian's dnf, so the lock list is only covered by unit tests.
//!
//! The host's rpm database is never opened (see `common::rpm`). Needs rpm,
//! rpmbuild, createrepo_c, modifyrepo_c and dnf; without one the test says
//! so and passes, except under `CI=true`, where it fails.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Output;

mod common;
use common::have;
use common::rpm::{Sandbox, arch_spec, check, read_rpmdb, spec};
use palisade_packages::inventory::Inventory;

use palisade_packages::rpm::dnf::{DnfState, NamedFile, RepoMetadata};
use palisade_packages::rpm::updateinfo::AdvisoryKind;
use palisade_packages::rpm::upgrade::{Plan, UpdateState};

/// The advisories of the `sec` repository.
const UPDATEINFO: &str = r#"<?xml version="1.0" encoding="UTF-8"?>
<updates>
  <update from="security@example.invalid" status="final" type="security" version="2">
    <id>PAL-SA-2026:1</id>
    <title>Important: pal-fix and pal-plain security update</title>
    <issued date="2026-01-02 00:00:00"/>
    <severity>Important</severity>
    <references>
      <reference href="https://www.cve.org/CVERecord?id=CVE-2026-0001" id="CVE-2026-0001" type="cve" title="CVE-2026-0001"/>
      <reference href="https://www.cve.org/CVERecord?id=CVE-2026-0002" id="CVE-2026-0002" type="cve" title="CVE-2026-0002"/>
    </references>
    <pkglist>
      <collection short="pal">
        <name>pal</name>
        <package name="pal-fix" epoch="0" version="1.1" release="1" arch="noarch">
          <filename>pal-fix-1.1-1.noarch.rpm</filename>
        </package>
        <package name="pal-plain" epoch="0" version="1.1" release="1" arch="noarch">
          <filename>pal-plain-1.1-1.noarch.rpm</filename>
        </package>
      </collection>
    </pkglist>
  </update>
  <update from="security@example.invalid" status="final" type="security" version="2">
    <id>PAL-SA-2025:9</id>
    <title>Low: an old pal-fix fix, already installed</title>
    <issued date="2025-01-02 00:00:00"/>
    <severity>Low</severity>
    <references/>
    <pkglist>
      <collection short="pal">
        <name>pal</name>
        <package name="pal-fix" epoch="0" version="1.0" release="1" arch="noarch">
          <filename>pal-fix-1.0-1.noarch.rpm</filename>
        </package>
      </collection>
    </pkglist>
  </update>
  <update from="bugs@example.invalid" status="final" type="bugfix" version="2">
    <id>PAL-BA-2026:2</id>
    <title>pal-epoch bug fix update</title>
    <issued date="2026-02-03 00:00:00"/>
    <severity>None</severity>
    <references/>
    <pkglist>
      <collection short="pal">
        <name>pal</name>
        <package name="pal-epoch" epoch="1" version="1.0" release="1" arch="noarch">
          <filename>pal-epoch-1.0-1.noarch.rpm</filename>
        </package>
      </collection>
    </pkglist>
  </update>
</updates>
"#;

/// The packages, by stage (the old versions are installed first) and
/// repository.
struct Build {
    repo: &'static str,
    name: &'static str,
    version: &'static str,
    /// Built for the machine's arch rather than `noarch`.
    native: bool,
    extra: &'static str,
    old: bool,
}

const fn package(
    repo: &'static str,
    name: &'static str,
    version: &'static str,
    old: bool,
) -> Build {
    Build {
        repo,
        name,
        version,
        native: false,
        extra: "",
        old,
    }
}

const PACKAGES: &[Build] = &[
    package("base", "pal-plain", "1.0", true),
    package("base", "pal-plain", "1.1", false),
    package("base", "pal-plain", "2.0", false),
    package("base", "pal-same", "1.0", true),
    Build {
        extra: "Epoch: 0\n",
        ..package("base", "pal-epoch", "5.0", true)
    },
    Build {
        extra: "Epoch: 1\n",
        ..package("base", "pal-epoch", "1.0", false)
    },
    package("base", "pal-arch", "1.0", true),
    Build {
        native: true,
        ..package("base", "pal-arch", "2.0", false)
    },
    package("base", "kernel", "1.0", true),
    package("base", "kernel", "1.1", false),
    package("base", "kernel", "2.0", false),
    package("base", "pal-excluded", "1.0", true),
    package("base", "pal-excluded", "2.0", false),
    package("base", "pal-old", "1.0", true),
    Build {
        extra: "Obsoletes: pal-old < 2.0\n",
        ..package("base", "pal-new", "1.0", false)
    },
    package("base", "pal-fix", "1.0", true),
    package("sec", "pal-fix", "1.1", false),
    package("base", "pal-prio", "1.0", true),
    package("base", "pal-prio", "3.0", false),
    package("sec", "pal-prio", "2.0", false),
];

/// A private root with its repositories, and dnf run on it.
struct World {
    sandbox: Sandbox,
    root: PathBuf,
}

impl World {
    fn repo_dir(&self, id: &str) -> PathBuf {
        self.sandbox.path().join("repos").join(id)
    }

    fn repos_d(&self) -> PathBuf {
        self.root.join("etc/yum.repos.d")
    }

    fn dnf_conf(&self) -> PathBuf {
        self.root.join("etc/dnf/dnf.conf")
    }

    /// dnf on the root; `cache` names a cache directory of its own, so
    /// that each stage reads the metadata afresh.
    fn dnf(&self, cache: &str, args: &[&str]) -> Output {
        self.sandbox
            .rooted("dnf")
            .arg(format!("--installroot={}", self.root.display()))
            .arg(format!("--config={}", self.dnf_conf().display()))
            .arg(format!("--setopt=reposdir={}", self.repos_d().display()))
            .arg(format!(
                "--setopt=cachedir={}",
                self.root.join("var/cache/dnf").join(cache).display()
            ))
            .args(["--releasever=1", "--nogpgcheck", "-y", "-q"])
            .args(args)
            .output()
            .expect("run dnf")
    }

    /// (Re)makes the metadata of a repository directory.
    fn createrepo(&self, id: &str, updateinfo: Option<&str>) {
        let dir = self.repo_dir(id);
        let out = self
            .sandbox
            .command("createrepo_c")
            .args(["--general-compress-type=gz", "--no-database"])
            .arg(&dir)
            .output()
            .expect("run createrepo_c");
        check("createrepo_c", out);
        if let Some(text) = updateinfo {
            let file = self.sandbox.path().join("updateinfo.xml");
            std::fs::write(&file, text).expect("write updateinfo");
            let out = self
                .sandbox
                .command("modifyrepo_c")
                .arg("--compress-type=gz")
                .arg(&file)
                .arg(dir.join("repodata"))
                .output()
                .expect("run modifyrepo_c");
            check("modifyrepo_c", out);
        }
    }

    /// The plan from the files dnf reads.
    fn plan(&self) -> Plan {
        let installed = read_rpmdb(&self.root);
        let conf = std::fs::read(self.dnf_conf()).expect("read dnf.conf");
        let repo_files = read_dir(&self.repos_d());
        let metadata: Vec<RepoMetadata> = ["base", "sec"]
            .iter()
            .map(|id| {
                let repodata = self.repo_dir(id).join("repodata");
                RepoMetadata {
                    id: (*id).to_owned(),
                    repomd: std::fs::read(repodata.join("repomd.xml")).expect("read repomd"),
                    files: read_dir(&repodata),
                }
            })
            .collect();
        let state =
            DnfState::from_files(installed, &conf, &repo_files, &metadata, None).expect("state");
        assert!(state.problems.is_empty(), "{:?}", state.problems);
        state.plan(std::env::consts::ARCH)
    }
}

fn read_dir(dir: &Path) -> Vec<NamedFile> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).expect("read dir") {
        let path = entry.expect("entry").path();
        if path.is_file() {
            files.push(NamedFile {
                name: path
                    .file_name()
                    .expect("name")
                    .to_string_lossy()
                    .into_owned(),
                contents: std::fs::read(&path).expect("read"),
            });
        }
    }
    files
}

/// `dnf check-update`'s tables: the updates (`name.arch evr repo`) and
/// the obsoleting packages (`new.arch evr repo` → `old.arch evr`).
struct CheckUpdate {
    updates: BTreeSet<String>,
    obsoletes: BTreeSet<String>,
}

fn check_update(out: &Output) -> CheckUpdate {
    let text = String::from_utf8_lossy(&out.stdout);
    let mut updates = BTreeSet::new();
    let mut obsoletes = BTreeSet::new();
    let mut in_obsoletes = false;
    let mut obsoleting: Option<String> = None;
    for line in text.lines() {
        if line.trim().is_empty() {
            continue;
        }
        if line.starts_with("Obsoleting Packages") {
            in_obsoletes = true;
            continue;
        }
        let words: Vec<&str> = line.split_whitespace().collect();
        let [nevra, evr, repo] = words[..] else {
            panic!("unexpected check-update line {line:?}:\n{text}");
        };
        let row = format!("{nevra} {evr} {repo}");
        if !in_obsoletes {
            updates.insert(row);
        } else if line.starts_with(char::is_whitespace) {
            let new = obsoleting.clone().expect("an obsoleting package first");
            obsoletes.insert(format!("{new} -> {nevra} {evr}"));
        } else {
            obsoleting = Some(row);
        }
    }
    CheckUpdate { updates, obsoletes }
}

/// The plan as `dnf check-update` would print it.
fn plan_rows(plan: &Plan) -> CheckUpdate {
    CheckUpdate {
        updates: plan
            .pending()
            .map(|u| {
                format!(
                    "{}.{} {} {}",
                    u.name,
                    u.candidate_arch,
                    u.candidate,
                    u.repositories.join(",")
                )
            })
            .collect(),
        obsoletes: plan
            .obsoletions
            .iter()
            .map(|o| {
                format!(
                    "{}.{} {} {} -> {}.{} {}",
                    o.name,
                    o.arch,
                    o.evr,
                    o.repositories.join(","),
                    o.obsoleted_name,
                    o.obsoleted_arch,
                    o.obsoleted_evr
                )
            })
            .collect(),
    }
}

/// `dnf updateinfo list` lines as `id nevra`.
fn updateinfo_rows(out: Output) -> BTreeSet<String> {
    check("dnf updateinfo list", out)
        .lines()
        .filter_map(
            |line| match line.split_whitespace().collect::<Vec<_>>()[..] {
                [id, _, nevra] => Some(format!("{id} {nevra}")),
                _ => None,
            },
        )
        .collect()
}

fn plan_advisories(plan: &Plan, security_only: bool) -> BTreeSet<String> {
    plan.advisories
        .iter()
        .filter(|a| !security_only || a.advisory.kind == AdvisoryKind::Security)
        .map(|a| format!("{} {}-{}.{}", a.advisory.id, a.name, a.evr, a.arch))
        .collect()
}

#[test]
fn the_plan_matches_dnf_check_update_and_a_real_upgrade() {
    if !have(&["rpm", "rpmbuild", "createrepo_c", "modifyrepo_c", "dnf"]) {
        return;
    }
    let world = World {
        sandbox: Sandbox::new(),
        root: PathBuf::new(),
    };
    let world = World {
        root: world.sandbox.path().join("root"),
        ..world
    };
    let arch = std::env::consts::ARCH;
    // Build everything; only the old versions are published at first, so
    // that dnf installs exactly them (installing an obsoleted or excluded
    // package by name would be refused or redirected).
    let mut later: Vec<(&str, PathBuf)> = Vec::new();
    for id in ["base", "sec"] {
        std::fs::create_dir_all(world.repo_dir(id)).expect("mkdir repo");
    }
    for (index, build) in PACKAGES.iter().enumerate() {
        let text = if build.native {
            arch_spec(build.name, build.version, "1", build.extra)
        } else {
            spec(build.name, build.version, "1", build.extra)
        };
        for file in world.sandbox.build(&format!("p{index}"), &text) {
            if build.old {
                let name = file.file_name().expect("file name");
                std::fs::copy(&file, world.repo_dir(build.repo).join(name)).expect("copy");
            } else {
                later.push((build.repo, file));
            }
        }
    }
    std::fs::create_dir_all(world.repos_d()).expect("mkdir repos.d");
    std::fs::create_dir_all(world.dnf_conf().parent().expect("etc/dnf")).expect("mkdir");
    std::fs::write(
        world.dnf_conf(),
        "[main]\ngpgcheck=0\ninstallonly_limit=3\n",
    )
    .expect("conf");
    let repo_file = |id: &str, extra: &str| {
        std::fs::write(
            world.repos_d().join(format!("{id}.repo")),
            format!(
                "[{id}]\nname={id}\nbaseurl=file://{}\ngpgcheck=0\n{extra}",
                world.repo_dir(id).display()
            ),
        )
        .expect("write repo file");
    };
    world.createrepo("base", None);
    repo_file("base", "");
    let old: Vec<String> = PACKAGES
        .iter()
        .filter(|b| b.old)
        .map(|b| format!("{}-{}-1", b.name, b.version))
        .collect();
    let mut install = vec!["install"];
    install.extend(old.iter().map(String::as_str));
    check("dnf install", world.dnf("stage1", &install));
    let before = read_rpmdb(&world.root);
    assert_eq!(before.len(), old.len(), "{before:?}");

    // The new versions, the advisories, the excludes and priorities.
    for (repo, file) in &later {
        let name = file.file_name().expect("file name");
        std::fs::copy(file, world.repo_dir(repo).join(name)).expect("copy");
    }
    world.createrepo("base", None);
    world.createrepo("sec", Some(UPDATEINFO));
    repo_file("base", "excludepkgs=pal-exclu*\n");
    repo_file("sec", "priority=10\n");

    let plan = world.plan();
    let summary: BTreeMap<&str, (String, String, bool, &UpdateState)> = plan
        .updates
        .iter()
        .map(|u| {
            (
                u.name.as_str(),
                (
                    u.candidate.to_string(),
                    u.candidate_arch.clone(),
                    u.security,
                    &u.state,
                ),
            )
        })
        .collect();
    // What the packages were built to show, before asking dnf.
    let expect = |name: &str, evr: &str, arch: &str, security: bool| {
        let (candidate, candidate_arch, is_security, state) = &summary[name];
        assert_eq!(
            (
                candidate.as_str(),
                candidate_arch.as_str(),
                *is_security,
                *state
            ),
            (evr, arch, security, &UpdateState::Pending),
            "{name}"
        );
    };
    expect("pal-plain", "2.0-1", "noarch", true);
    expect("pal-epoch", "1:1.0-1", "noarch", false);
    expect("pal-arch", "2.0-1", arch, false);
    expect("kernel", "2.0-1", "noarch", false);
    expect("pal-fix", "1.1-1", "noarch", true);
    expect("pal-prio", "2.0-1", "noarch", false);
    assert!(!summary.contains_key("pal-same"));
    assert_eq!(
        summary["pal-excluded"].3,
        &UpdateState::Excluded {
            pattern: "pal-exclu*".into()
        }
    );
    assert!(
        plan.updates
            .iter()
            .any(|u| u.name == "kernel" && u.installonly)
    );
    let fix = plan
        .updates
        .iter()
        .find(|u| u.name == "pal-fix")
        .expect("pal-fix");
    assert_eq!(fix.advisories.len(), 1);
    assert_eq!(fix.advisories[0].id, "PAL-SA-2026:1");
    assert_eq!(fix.advisories[0].severity, "Important");
    assert_eq!(fix.advisories[0].cves, ["CVE-2026-0001", "CVE-2026-0002"]);

    // dnf check-update: exit code 100 and the same tables.
    let out = world.dnf("stage2", &["check-update"]);
    assert_eq!(out.status.code(), Some(100), "{out:?}");
    let theirs = check_update(&out);
    let ours = plan_rows(&plan);
    assert_eq!(ours.updates, theirs.updates);
    assert_eq!(ours.obsoletes, theirs.obsoletes);
    assert_eq!(ours.obsoletes.len(), 1, "{:?}", ours.obsoletes);

    // Which updates are security updates.
    let out = world.dnf("stage2", &["check-update", "--security"]);
    assert_eq!(out.status.code(), Some(100), "{out:?}");
    let names = |rows: &BTreeSet<String>| -> BTreeSet<String> {
        rows.iter()
            .filter_map(|r| r.split_once('.').map(|(name, _)| name.to_owned()))
            .collect()
    };
    let security: BTreeSet<String> = plan
        .pending()
        .filter(|u| u.security)
        .map(|u| u.name.clone())
        .collect();
    assert_eq!(security, names(&check_update(&out).updates));

    // The advisories that apply, all and security only.
    let all = plan_advisories(&plan, false);
    assert_eq!(
        all,
        updateinfo_rows(world.dnf("stage2", &["updateinfo", "list"]))
    );
    assert_eq!(all.len(), 3, "{all:?}");
    let security = plan_advisories(&plan, true);
    assert_eq!(
        security,
        updateinfo_rows(world.dnf("stage2", &["updateinfo", "list", "--security"]))
    );
    assert_eq!(security.len(), 2, "{security:?}");

    // A real upgrade installs the candidates and the obsoleting package.
    check("dnf upgrade", world.dnf("stage2", &["upgrade"]));
    let after = read_rpmdb(&world.root);
    let listed: BTreeSet<String> = after
        .iter()
        .map(|p| format!("{}-{}.{}", p.name, p.evr(), p.arch.as_deref().unwrap_or("")))
        .collect();
    let mut expected: BTreeSet<String> = before
        .iter()
        .filter(|p| {
            // Replaced by their updates; kernels stay beside the new one.
            p.name == "kernel" || !plan.pending().any(|u| u.name == p.name)
        })
        .filter(|p| !plan.obsoletions.iter().any(|o| o.obsoleted_name == p.name))
        .map(|p| format!("{}-{}.{}", p.name, p.evr(), p.arch.as_deref().unwrap_or("")))
        .collect();
    expected.extend(
        plan.pending()
            .map(|u| format!("{}-{}.{}", u.name, u.candidate, u.candidate_arch)),
    );
    expected.extend(
        plan.obsoletions
            .iter()
            .map(|o| format!("{}-{}.{}", o.name, o.evr, o.arch)),
    );
    assert_eq!(listed, expected);
    assert!(listed.contains("kernel-1.0-1.noarch") && listed.contains("kernel-2.0-1.noarch"));

    let plan_before = &plan;

    // Nothing is left to do, for dnf and for the plan; the excluded
    // package is still held.
    let out = world.dnf("stage2", &["check-update"]);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let plan = world.plan();
    assert_eq!(plan.pending().count(), 0, "{:?}", plan.updates);
    assert!(plan.obsoletions.is_empty(), "{:?}", plan.obsoletions);
    let held: Vec<&str> = plan.updates.iter().map(|u| u.name.as_str()).collect();
    assert_eq!(held, ["pal-excluded"]);

    // What the agent would upload for this upgrade: a delta that turns the
    // old inventory into the new, naming the packages dnf installed.
    let old = Inventory::from_dnf(&before, plan_before);
    let new = Inventory::from_dnf(&after, &plan);
    let delta = old.diff(&new);
    assert_eq!(old.apply(&delta).expect("the delta applies"), new);
    let set: BTreeSet<String> = delta
        .installed_set
        .iter()
        .map(|p| format!("{}-{}.{}", p.name, p.version, p.arch))
        .collect();
    let installed: BTreeSet<String> = listed
        .iter()
        .filter(|l| {
            !before.iter().any(|p| {
                format!("{}-{}.{}", p.name, p.evr(), p.arch.as_deref().unwrap_or("")) == **l
            })
        })
        .filter(|l| !l.starts_with("gpg-pubkey"))
        .cloned()
        .collect();
    assert_eq!(set, installed);
    assert!(!delta.updates_removed.is_empty());
    assert!(
        new.diff(&Inventory::from_dnf(
            &read_rpmdb(&world.root),
            &world.plan()
        ))
        .is_empty()
    );
}
