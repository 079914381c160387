//! The parsers and the version ordering checked against dpkg itself: the
//! ordering of many version pairs against `dpkg --compare-versions`, and the
//! status file of a real dpkg database (made here: packages built with
//! `dpkg-deb`, installed with `dpkg --root`, one held) against
//! `dpkg-query`.
//!
//! Needs dpkg (every Debian machine has it); without it the tests say so
//! and pass, except under `CI=true`, where they fail.

use std::cmp::Ordering;
use std::path::Path;
use std::process::Command;

use palisade_packages::deb::{StatusFile, Version};

fn have_dpkg() -> bool {
    let found = Command::new("dpkg").arg("--version").output().is_ok();
    if !found {
        assert!(
            !palisade_testkit::is_ci(),
            "dpkg is missing, and CI must run this test"
        );
        eprintln!("dpkg is not installed: skipping");
    }
    found
}

fn dpkg_says(a: &str, op: &str, b: &str) -> bool {
    let status = Command::new("dpkg")
        .args(["--compare-versions", a, op, b])
        .status()
        .expect("run dpkg --compare-versions");
    status.success()
}

/// Versions chosen to exercise every rule: epochs, `~` before the end,
/// letters before other characters, digit runs of different lengths and
/// leading zeros, revisions with and without `~`, Debian and Ubuntu
/// security suffixes.
const VERSIONS: &[&str] = &[
    "0",
    "1",
    "1.0",
    "1.0-0",
    "1.0-1",
    "1.0-1~bpo12+1",
    "1.0-1+deb12u1",
    "1.0-1ubuntu0.22.04.1",
    "1.0-10",
    "1.0-9",
    "1.0~rc1",
    "1.0~rc1-1",
    "1.0~~",
    "1.0a",
    "1.0A",
    "1.0+dfsg",
    "1.0+dfsg-1",
    "1.0.1",
    "1.00",
    "1.01",
    "1.1",
    "1.10",
    "1.9",
    "1:0.9",
    "2:0",
    "10:1",
    "3.0.11-1~deb12u2",
    "3.0.11-1",
    "3.0.13-1~deb12u1",
    "6.1.0-18-amd64",
    "6.1.0-9-amd64",
    "2.36-9+deb12u4",
    "2.36-9+deb12u10",
    "1.2.3+really1.2.2",
    "99999999999999999999",
    "099999999999999999999",
    "a1",
    "1.0-a",
    "1.0-A",
    "1.0-+",
];

#[test]
fn ordering_agrees_with_dpkg_compare_versions() {
    if !have_dpkg() {
        return;
    }
    for (i, a) in VERSIONS.iter().enumerate() {
        for b in &VERSIONS[i + 1..] {
            let ours = Version::parse(a)
                .expect("parse a")
                .cmp(&Version::parse(b).expect("parse b"));
            let op = match ours {
                Ordering::Less => "lt",
                Ordering::Equal => "eq",
                Ordering::Greater => "gt",
            };
            assert!(dpkg_says(a, op, b), "we say {a} {op} {b}; dpkg does not");
        }
    }
}

/// Builds a package with no files and no maintainer scripts.
fn build_deb(dir: &Path, name: &str, version: &str, source: Option<&str>) -> std::path::PathBuf {
    let tree = dir.join(format!("{name}_{version}"));
    std::fs::create_dir_all(tree.join("DEBIAN")).expect("mkdir");
    let mut control = format!(
        "Package: {name}\nVersion: {version}\nArchitecture: all\nMaintainer: Palisade tests <tests@example.invalid>\nDescription: a test package\n"
    );
    if let Some(source) = source {
        control.push_str(&format!("Source: {source}\n"));
    }
    std::fs::write(tree.join("DEBIAN/control"), control).expect("control");
    let deb = dir.join(format!("{name}_{version}_all.deb"));
    let out = Command::new("dpkg-deb")
        .args(["--build", "-Zgzip"])
        .arg(&tree)
        .arg(&deb)
        .output()
        .expect("run dpkg-deb");
    assert!(out.status.success(), "dpkg-deb: {out:?}");
    deb
}

fn dpkg(root: &Path, args: &[&str], stdin: Option<&str>) {
    use std::io::Write;
    let mut cmd = Command::new("dpkg");
    cmd.arg(format!("--root={}", root.display()))
        .arg(format!(
            "--admindir={}",
            root.join("var/lib/dpkg").display()
        ))
        .args(["--force-not-root", "--force-script-chrootless"])
        .args(args)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
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

#[test]
fn a_real_dpkg_database_reads_as_dpkg_query_lists_it() {
    if !have_dpkg() {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let root = dir.path().join("root");
    for sub in ["var/lib/dpkg/updates", "var/lib/dpkg/info", "var/log"] {
        std::fs::create_dir_all(root.join(sub)).expect("mkdir");
    }
    std::fs::write(root.join("var/lib/dpkg/status"), "").expect("status");
    let debs = [
        build_deb(dir.path(), "pal-plain", "1.0-1", None),
        build_deb(dir.path(), "pal-epoch", "2:0.5~rc1-3+deb12u1", None),
        build_deb(dir.path(), "pal-bin", "4.1-2+b1", Some("pal-src (4.1-2)")),
        build_deb(dir.path(), "pal-held", "1.0", None),
        build_deb(dir.path(), "pal-removed", "3.0-1", None),
    ];
    let mut args = vec!["--install"];
    let paths: Vec<String> = debs.iter().map(|d| d.display().to_string()).collect();
    args.extend(paths.iter().map(String::as_str));
    dpkg(&root, &args, None);
    dpkg(&root, &["--remove", "pal-removed"], None);
    dpkg(&root, &["--set-selections"], Some("pal-held hold\n"));

    let status = std::fs::read(root.join("var/lib/dpkg/status")).expect("read status");
    let file = StatusFile::parse(&status).expect("parse");
    assert!(file.problems.is_empty(), "{:?}", file.problems);
    let ours: Vec<String> = file
        .installed()
        .map(|p| {
            format!(
                "{} {} {} {} {}",
                p.name,
                p.version
                    .as_ref()
                    .map(ToString::to_string)
                    .unwrap_or_default(),
                p.architecture,
                p.source,
                if p.is_held() { "hold" } else { "install" },
            )
        })
        .collect();

    let out = Command::new("dpkg-query")
        .arg(format!("--admindir={}", root.join("var/lib/dpkg").display()))
        .args([
            "--show",
            "--showformat=${db:Status-Abbrev} ${Package} ${Version} ${Architecture} ${source:Package} ${db:Status-Want}\n",
        ])
        .output()
        .expect("run dpkg-query");
    assert!(out.status.success(), "dpkg-query: {out:?}");
    let listed = String::from_utf8(out.stdout).expect("utf-8");
    // `ii`/`hi`: installed; the removed package is `rc`/`un` and not ours.
    let theirs: Vec<String> = listed
        .lines()
        .filter(|l| l.starts_with("ii ") || l.starts_with("hi "))
        .map(|l| l[4..].to_owned())
        .collect();
    let (mut ours_sorted, mut theirs_sorted) = (ours.clone(), theirs);
    ours_sorted.sort();
    theirs_sorted.sort();
    assert_eq!(ours_sorted, theirs_sorted);
    assert_eq!(ours.len(), 4, "{ours:?}");
    assert!(ours.contains(&"pal-held 1.0 all pal-held hold".to_owned()));
    assert!(ours.contains(&"pal-bin 4.1-2+b1 all pal-src install".to_owned()));
    assert!(!file.installed().any(|p| p.name == "pal-removed"));
}
