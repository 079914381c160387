//! The RPM side checked against rpm's own tools: the version ordering
//! against `rpm.vercmp` and `rpm.ver` (rpm's Lua interface, hundreds of
//! pairs in one `rpm --eval`); headers read from a real `rpmdb.sqlite`
//! (packages built with `rpmbuild`, installed with `rpm --root`, a signing
//! key imported) against `rpm -qa`; `repomd.xml`, `primary.xml` and
//! `updateinfo.xml` of a repository made by `createrepo_c` and
//! `modifyrepo_c` against `rpm -qp`, `dnf repoquery` and
//! `dnf updateinfo list`.
//!
//! Everything happens in temporary directories, and the host's rpm
//! database is never opened: `HOME` is always a private directory whose
//! `.rpmmacros` sets `%_dbpath`. Commands that act on a root (`rpm --root`,
//! `dnf --installroot`) get `%_dbpath /var/lib/rpm`, inside that root; the
//! others (`rpmbuild`, `rpm -qp`, which open a database too) get a private
//! database of their own, since `/var/lib/rpm` would be the host's.
//!
//! Needs rpm, rpmbuild, createrepo_c, modifyrepo_c, dnf and gpg; without
//! one of them the tests that need it say so and pass, except under
//! `CI=true`, where they fail.

use std::cmp::Ordering;
use std::collections::BTreeSet;
use std::io::Read;
use std::path::Path;
use std::process::Command;

mod common;
use common::have;
use common::rpm::{Sandbox, check, read_rpmdb, spec};

use palisade_packages::rpm::primary::RepoMd;
use palisade_packages::rpm::updateinfo::AdvisoryKind;
use palisade_packages::rpm::{Evr, InstalledRpm, Primary, UpdateInfo, vercmp};

/// Versions chosen to exercise every rule of rpmvercmp: `~` and `^`, digit
/// runs with leading zeros and of different lengths, letters against
/// digits, separators that only separate, Fedora and RHEL release tags.
/// None has a `:` or `-`, so `rpm.vercmp` (which parses its arguments as
/// `[epoch:]version[-release]`) compares them with rpmvercmp alone.
const VERSIONS: &[&str] = &[
    "1",
    "1.0",
    "1.0.0",
    "1.00",
    "1.01",
    "1.1",
    "1.9",
    "1.10",
    "1.0~rc1",
    "1.0~rc2",
    "1.0~~",
    "1.0~",
    "1.0^",
    "1.0^git1",
    "1.0^git1~pre",
    "1.0~rc1^git1",
    "1.0a",
    "1.0A",
    "1.a",
    "1_0",
    "1..0",
    "1.0.",
    "1.0+2",
    "a",
    "b1",
    "0001",
    "9999999999999999999999",
    "10000000000000000000000",
    "2.fc40",
    "2.fc39",
    "1.el9",
    "1.el9_3",
    "1.el9_3.1",
    "25.el9_3",
    "3.el8_10",
    "0.rc1.fc40",
    "1.module+el8.9.0+19731+ae8e7bfd",
    "1.git20240101.el9",
    "~1",
    "^1",
    "1.0~rc1~1",
];

/// Whole `[epoch:]version[-release]` strings for `rpm.ver`.
const EVRS: &[&str] = &[
    "1.0-1",
    "1.0",
    "0:1.0-1",
    "1:0.1-1",
    "2:0.1-1",
    "10:0-0",
    "1.0-1.el9",
    "1.0-1.el9_3",
    "1.0-2.el9",
    "1.0~rc1-1",
    "1.0^git1-1",
    "1.0-~1",
    "1.0-1^",
    "1.0-",
    "1.0-~",
    "1:1.0-~",
    "1:1.0",
    "1.01-1",
    "3.0.7-25.el9_3",
    "1:3.0.7-25.el9_3",
    "1:3.0.7-24.el9",
    "2024a-1.fc40",
    "2024b-1.fc40",
    "6.8.9-300.fc40",
    "6.10.3-200.fc40",
];

/// Runs `function` ("vercmp" or "ver") of rpm's Lua on every pair, in one
/// `rpm --eval`; returns rpm's -1, 0 or 1 for each pair.
fn rpm_compares(dir: &Path, function: &str, pairs: &[(&str, &str)]) -> Vec<i32> {
    let input = dir.join(format!("{function}-pairs"));
    let lines: Vec<String> = pairs.iter().map(|(a, b)| format!("{a}\t{b}")).collect();
    std::fs::write(&input, lines.join("\n") + "\n").expect("write pairs");
    // No '%' in the Lua code: rpm expands macros in it first.
    let compare = match function {
        "vercmp" => "rpm.vercmp(a, b)",
        _ => "(rpm.ver(a) < rpm.ver(b)) and -1 or ((rpm.ver(a) == rpm.ver(b)) and 0 or 1)",
    };
    let script = format!(
        "%{{lua: local out = {{}} \
         for line in io.lines(\"{}\") do \
           local a, b = line:match(\"^([^\\t]*)\\t([^\\t]*)$\") \
           out[#out + 1] = tostring({compare}) \
         end \
         print(table.concat(out, \" \"))}}",
        input.display()
    );
    // A private HOME whose macros point rpm at a private database.
    std::fs::write(
        dir.join(".rpmmacros"),
        format!("%_dbpath {}\n", dir.join("rpmdb").display()),
    )
    .expect("write .rpmmacros");
    let out = Command::new("rpm")
        .env("HOME", dir)
        .arg("--eval")
        .arg(script)
        .output()
        .expect("run rpm --eval");
    let text = check("rpm --eval", out);
    let results: Vec<i32> = text
        .split_whitespace()
        .map(|r| r.parse().expect("rpm prints -1, 0 or 1"))
        .collect();
    assert_eq!(results.len(), pairs.len(), "{text}");
    results
}

fn sign(ordering: Ordering) -> i32 {
    match ordering {
        Ordering::Less => -1,
        Ordering::Equal => 0,
        Ordering::Greater => 1,
    }
}

fn all_pairs<'a>(items: &[&'a str]) -> Vec<(&'a str, &'a str)> {
    let mut pairs = Vec::new();
    for (i, a) in items.iter().enumerate() {
        for b in &items[i + 1..] {
            pairs.push((*a, *b));
        }
    }
    pairs
}

#[test]
fn ordering_agrees_with_rpm_vercmp_and_rpm_ver() {
    if !have(&["rpm"]) {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let pairs = all_pairs(VERSIONS);
    assert!(pairs.len() >= 300);
    let theirs = rpm_compares(dir.path(), "vercmp", &pairs);
    let mut disagreements = Vec::new();
    for ((a, b), rpm) in pairs.iter().zip(&theirs) {
        let ours = sign(vercmp(a, b));
        if ours != *rpm {
            disagreements.push(format!("{a:?} vs {b:?}: rpm {rpm}, ours {ours}"));
        }
    }
    assert!(disagreements.is_empty(), "{disagreements:#?}");
    // The pairs are not all equal: the test can tell orderings apart.
    assert!(theirs.contains(&-1) && theirs.contains(&1) && theirs.contains(&0));

    let pairs = all_pairs(EVRS);
    let theirs = rpm_compares(dir.path(), "ver", &pairs);
    for ((a, b), rpm) in pairs.iter().zip(&theirs) {
        let (x, y) = (
            Evr::parse(a).expect("parse a"),
            Evr::parse(b).expect("parse b"),
        );
        assert_eq!(sign(x.cmp(&y)), *rpm, "{a} vs {b}");
    }
}

fn none_as_rpm(value: &Option<String>) -> &str {
    value.as_deref().unwrap_or("(none)")
}

#[test]
fn a_real_rpm_database_reads_as_rpm_lists_it() {
    if !have(&["rpm", "rpmbuild", "gpg"]) {
        return;
    }
    let sandbox = Sandbox::new();
    let mut files = Vec::new();
    files.extend(sandbox.build("plain", &spec("pal-plain", "1.0", "1.fc40", "")));
    files.extend(sandbox.build(
        "epoch",
        &spec("pal-epoch", "1.2~rc1", "1.el9_3", "Epoch: 3\n"),
    ));
    // Two binary packages from one source: pal-tools comes from pal-src.
    let mut with_sub = spec("pal-src", "2.0^git1", "2.el9", "");
    with_sub.push_str(
        "%package -n pal-tools\nSummary: tools\n%description -n pal-tools\ntools\n%files -n pal-tools\n",
    );
    files.extend(sandbox.build("src", &with_sub));
    assert_eq!(files.len(), 4, "{files:?}");

    let root = sandbox.path().join("root");
    std::fs::create_dir_all(&root).expect("mkdir root");
    let mut args = vec!["-i", "--nodeps", "--justdb"];
    let paths: Vec<String> = files.iter().map(|f| f.display().to_string()).collect();
    args.extend(paths.iter().map(String::as_str));
    sandbox.rpm(&root, &args);
    // A signing key, as `rpm --import` stores it: a gpg-pubkey header.
    let gnupg = sandbox.path().join("gnupg");
    std::fs::create_dir_all(&gnupg).expect("mkdir gnupg");
    let mut permissions = std::fs::metadata(&gnupg).expect("stat").permissions();
    std::os::unix::fs::PermissionsExt::set_mode(&mut permissions, 0o700);
    std::fs::set_permissions(&gnupg, permissions).expect("chmod");
    let out = sandbox
        .command("gpg")
        .args(["--batch", "--passphrase", "", "--quick-gen-key"])
        .args([
            "Palisade Test <test@example.invalid>",
            "ed25519",
            "sign",
            "never",
        ])
        .output()
        .expect("run gpg");
    check("gpg --quick-gen-key", out);
    let out = sandbox
        .command("gpg")
        .args(["--armor", "--export", "test@example.invalid"])
        .output()
        .expect("run gpg");
    let key = sandbox.path().join("key.asc");
    std::fs::write(&key, check("gpg --export", out)).expect("write key");
    sandbox.rpm(&root, &["--import", &key.display().to_string()]);

    let installed = read_rpmdb(&root);
    let ours: BTreeSet<String> = installed
        .iter()
        .map(|p| {
            format!(
                "{} {} {} {} {} {}",
                p.name,
                p.epoch.unwrap_or(0),
                p.version,
                p.release,
                none_as_rpm(&p.arch),
                none_as_rpm(&p.source_rpm)
            )
        })
        .collect();
    let listed = sandbox.rpm(
        &root,
        &[
            "-qa",
            "--qf",
            "%{NAME} %{EPOCHNUM} %{VERSION} %{RELEASE} %{ARCH} %{SOURCERPM}\\n",
        ],
    );
    let theirs: BTreeSet<String> = listed.lines().map(str::to_owned).collect();
    assert_eq!(ours, theirs);
    assert_eq!(installed.len(), 5, "{installed:?}");

    let by_name = |name: &str| {
        installed
            .iter()
            .find(|p| p.name == name)
            .unwrap_or_else(|| panic!("{name} is listed"))
    };
    let epoch = by_name("pal-epoch");
    assert_eq!(epoch.epoch, Some(3));
    assert_eq!(epoch.evr().to_string(), "3:1.2~rc1-1.el9_3");
    assert_eq!(by_name("pal-plain").epoch, None);
    assert_eq!(by_name("pal-tools").source_name(), Some("pal-src"));
    let keys: Vec<&InstalledRpm> = installed.iter().filter(|p| p.is_gpg_pubkey()).collect();
    assert_eq!(keys.len(), 1);
    assert_eq!(
        (keys[0].arch.as_ref(), keys[0].source_rpm.as_ref()),
        (None, None)
    );
    // rpm records when each package was installed.
    let times = sandbox.rpm(&root, &["-q", "pal-plain", "--qf", "%{INSTALLTIME}"]);
    assert_eq!(
        by_name("pal-plain").install_time,
        Some(times.trim().parse().expect("a number"))
    );
}

fn gunzip(bytes: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    flate2::read::MultiGzDecoder::new(bytes)
        .read_to_end(&mut out)
        .expect("gunzip");
    out
}

/// The advisories the repository publishes; the ids, types, severities
/// and CVEs are what the assertions expect back.
const UPDATEINFO: &str = r#"<?xml version="1.0" encoding="UTF-8"?>
<updates>
  <update from="security@example.invalid" status="final" type="security" version="2">
    <id>PAL-2024:0001</id>
    <title>Important: pal-plain and pal-epoch security update</title>
    <issued date="2024-01-02 00:00:00"/>
    <severity>Important</severity>
    <references>
      <reference href="https://www.cve.org/CVERecord?id=CVE-2024-0001" id="CVE-2024-0001" type="cve" title="CVE-2024-0001"/>
      <reference href="https://bugzilla.example.invalid/1234" id="1234" type="bugzilla" title="a bug"/>
    </references>
    <pkglist>
      <collection short="pal">
        <name>pal</name>
        <package name="pal-plain" epoch="0" version="2.0" release="1.fc40" arch="noarch" src="pal-plain-2.0-1.fc40.src.rpm">
          <filename>pal-plain-2.0-1.fc40.noarch.rpm</filename>
        </package>
        <package name="pal-epoch" epoch="3" version="1.2" release="1.el9_3" arch="noarch" src="pal-epoch-1.2-1.el9_3.src.rpm">
          <filename>pal-epoch-1.2-1.el9_3.noarch.rpm</filename>
        </package>
      </collection>
    </pkglist>
  </update>
  <update from="bugs@example.invalid" status="final" type="bugfix" version="2">
    <id>PAL-2024:0002</id>
    <title>pal-tools bug fix update</title>
    <issued date="2024-02-03 00:00:00"/>
    <severity>None</severity>
    <references/>
    <pkglist>
      <collection short="pal">
        <name>pal</name>
        <package name="pal-tools" epoch="0" version="2.0^git1" release="3.el9" arch="noarch" src="pal-src-2.0^git1-3.el9.src.rpm">
          <filename>pal-tools-2.0^git1-3.el9.noarch.rpm</filename>
        </package>
      </collection>
    </pkglist>
  </update>
</updates>
"#;

#[test]
fn a_createrepo_repository_reads_as_rpm_and_dnf_see_it() {
    if !have(&["rpm", "rpmbuild", "createrepo_c", "modifyrepo_c", "dnf"]) {
        return;
    }
    let sandbox = Sandbox::new();
    let dir = sandbox.path();
    // Two versions of each package: the older ones get installed, the
    // newer ones fix the advisories.
    let mut files = Vec::new();
    for (version, release) in [("1.0", "1.fc40"), ("2.0", "1.fc40")] {
        files.extend(sandbox.build(
            &format!("plain-{version}"),
            &spec("pal-plain", version, release, ""),
        ));
    }
    for (version, release) in [("1.2~rc1", "1.el9_3"), ("1.2", "1.el9_3")] {
        files.extend(sandbox.build(
            &format!("epoch-{version}"),
            &spec("pal-epoch", version, release, "Epoch: 3\n"),
        ));
    }
    for release in ["2.el9", "3.el9"] {
        let mut with_sub = spec("pal-src", "2.0^git1", release, "");
        with_sub.push_str(
            "%package -n pal-tools\nSummary: tools\n%description -n pal-tools\ntools\n%files -n pal-tools\n",
        );
        files.extend(sandbox.build(&format!("src-{release}"), &with_sub));
    }
    assert_eq!(files.len(), 8, "{files:?}");
    let repo = dir.join("repo");
    std::fs::create_dir_all(&repo).expect("mkdir repo");
    for file in &files {
        let name = file.file_name().expect("file name");
        std::fs::copy(file, repo.join(name)).expect("copy rpm");
    }
    let out = sandbox
        .command("createrepo_c")
        .args(["--general-compress-type=gz", "--no-database"])
        .arg(&repo)
        .output()
        .expect("run createrepo_c");
    check("createrepo_c", out);
    let updateinfo_file = dir.join("updateinfo.xml");
    std::fs::write(&updateinfo_file, UPDATEINFO).expect("write updateinfo");
    let out = sandbox
        .command("modifyrepo_c")
        .arg("--compress-type=gz")
        .arg(&updateinfo_file)
        .arg(repo.join("repodata"))
        .output()
        .expect("run modifyrepo_c");
    check("modifyrepo_c", out);

    // repomd.xml leads to primary and updateinfo.
    let repomd = std::fs::read(repo.join("repodata/repomd.xml")).expect("read repomd");
    let repomd = RepoMd::parse(&repomd).expect("repomd parses");
    let primary_data = repomd.primary().expect("primary listed");
    let updateinfo_data = repomd.updateinfo().expect("updateinfo listed");
    let primary_bytes = gunzip(&std::fs::read(repo.join(&primary_data.href)).expect("read"));
    assert_eq!(primary_data.open_size, Some(primary_bytes.len() as u64));
    let primary = Primary::parse(&primary_bytes).expect("primary parses");
    assert!(primary.problems.is_empty(), "{:?}", primary.problems);
    let ours: BTreeSet<String> = primary
        .packages
        .iter()
        .map(|p| {
            format!(
                "{} {} {} {} {} {}",
                p.name,
                p.evr.epoch(),
                p.evr.version(),
                p.evr.release().unwrap_or(""),
                p.arch,
                p.source_rpm.as_deref().unwrap_or("(none)")
            )
        })
        .collect();
    // What rpm reads from the package files themselves.
    let mut query = sandbox.command("rpm");
    query.args([
        "-qp",
        "--qf",
        "%{NAME} %{EPOCHNUM} %{VERSION} %{RELEASE} %{ARCH} %{SOURCERPM}\\n",
    ]);
    query.args(&files);
    let from_files: BTreeSet<String> = check("rpm -qp", query.output().expect("run rpm -qp"))
        .lines()
        .map(str::to_owned)
        .collect();
    assert_eq!(ours, from_files);
    assert_eq!(ours.len(), 8);
    for package in &primary.packages {
        let location = package.location.as_deref().expect("location");
        assert!(repo.join(location).is_file(), "{location}");
    }

    // The advisories come back as written.
    let updateinfo_bytes = gunzip(&std::fs::read(repo.join(&updateinfo_data.href)).expect("read"));
    let info = UpdateInfo::parse(&updateinfo_bytes).expect("updateinfo parses");
    assert!(info.problems.is_empty(), "{:?}", info.problems);
    let summary: Vec<(String, AdvisoryKind, String, Vec<String>, usize)> = info
        .advisories
        .iter()
        .map(|a| {
            (
                a.id.clone(),
                a.kind,
                a.severity.clone(),
                a.cves().map(str::to_owned).collect(),
                a.packages.len(),
            )
        })
        .collect();
    assert_eq!(
        summary,
        [
            (
                "PAL-2024:0001".to_owned(),
                AdvisoryKind::Security,
                "Important".to_owned(),
                vec!["CVE-2024-0001".to_owned()],
                2
            ),
            (
                "PAL-2024:0002".to_owned(),
                AdvisoryKind::Bugfix,
                "None".to_owned(),
                vec![],
                1
            ),
        ]
    );
    assert_eq!(info.advisories[0].references[1].kind, "bugzilla");
    // Every advisory package is in the repository with the same EVR.
    for package in info.advisories.iter().flat_map(|a| &a.packages) {
        assert!(
            primary
                .packages
                .iter()
                .any(|p| p.name == package.name && p.arch == package.arch && p.evr == package.evr),
            "{package:?}"
        );
    }

    // dnf, in its own root: what the repository offers, then the older
    // versions installed and the advisories that apply to them.
    let root = dir.join("dnf-root");
    let repos = root.join("etc/yum.repos.d");
    std::fs::create_dir_all(&repos).expect("mkdir repos");
    std::fs::write(
        repos.join("pal.repo"),
        format!(
            "[pal]\nname=pal\nbaseurl=file://{}\ngpgcheck=0\n",
            repo.display()
        ),
    )
    .expect("write repo file");
    let dnf = |args: &[&str]| {
        let out = sandbox
            .rooted("dnf")
            .arg(format!("--installroot={}", root.display()))
            .arg(format!("--setopt=reposdir={}", repos.display()))
            .arg(format!(
                "--setopt=cachedir={}",
                root.join("var/cache/dnf").display()
            ))
            .args(["--releasever=1", "--nogpgcheck", "-y", "-q"])
            .args(args)
            .output()
            .expect("run dnf");
        check(&format!("dnf {args:?}"), out)
    };
    let offered: BTreeSet<String> = dnf(&[
        "repoquery",
        "--qf",
        "%{name} %{epoch} %{version} %{release} %{arch} %{sourcerpm}",
    ])
    .lines()
    .filter(|l| !l.trim().is_empty())
    .map(str::to_owned)
    .collect();
    assert_eq!(ours, offered);

    dnf(&[
        "install",
        "pal-plain-1.0-1.fc40",
        "pal-epoch-3:1.2~rc1-1.el9_3",
        "pal-tools-2.0^git1-2.el9",
    ]);
    let installed: Vec<InstalledRpm> = read_rpmdb(&root);
    assert_eq!(installed.len(), 3, "{installed:?}");
    // An advisory applies when an installed package of the same name and
    // arch is older than the advisory's.
    let applicable = |security_only: bool| -> BTreeSet<String> {
        let mut found = BTreeSet::new();
        for advisory in &info.advisories {
            if security_only && advisory.kind != AdvisoryKind::Security {
                continue;
            }
            for package in &advisory.packages {
                let older = installed.iter().any(|i| {
                    i.name == package.name
                        && i.arch.as_deref() == Some(package.arch.as_str())
                        && i.evr() < package.evr
                });
                if older {
                    found.insert(format!(
                        "{} {}-{}.{}",
                        advisory.id, package.name, package.evr, package.arch
                    ));
                }
            }
        }
        found
    };
    let dnf_list = |args: &[&str]| -> BTreeSet<String> {
        dnf(args)
            .lines()
            .filter_map(|line| {
                let words: Vec<&str> = line.split_whitespace().collect();
                match words[..] {
                    [id, _, nevra] => Some(format!("{id} {nevra}")),
                    _ => None,
                }
            })
            .collect()
    };
    let security = applicable(true);
    assert_eq!(security, dnf_list(&["updateinfo", "list", "--security"]));
    assert_eq!(security.len(), 2, "{security:?}");
    let all = applicable(false);
    assert_eq!(all, dnf_list(&["updateinfo", "list"]));
    assert_eq!(all.len(), 3, "{all:?}");
}
