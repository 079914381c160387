//! The parsers and the version ordering checked against dpkg itself: the
//! ordering of many version pairs against `dpkg --compare-versions`, and the
//! status file of a real dpkg database (made here: packages built with
//! `dpkg-deb`, installed with `dpkg --root`, one held) against
//! `dpkg-query`.
//!
//! Needs dpkg (every Debian machine has it); without it the tests say so
//! and pass, except under `CI=true`, where they fail.

use std::cmp::Ordering;
use std::process::Command;

use palisade_packages::deb::{StatusFile, Version};

mod common;
use common::{build_deb, dpkg, have, make_dpkg_root};

fn have_dpkg() -> bool {
    have(&["dpkg", "dpkg-deb", "dpkg-query"])
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

#[test]
fn a_real_dpkg_database_reads_as_dpkg_query_lists_it() {
    if !have_dpkg() {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let root = dir.path().join("root");
    make_dpkg_root(&root);
    let debs = [
        build_deb(dir.path(), "pal-plain", "1.0-1", ""),
        build_deb(dir.path(), "pal-epoch", "2:0.5~rc1-3+deb12u1", ""),
        build_deb(
            dir.path(),
            "pal-bin",
            "4.1-2+b1",
            "Source: pal-src (4.1-2)\n",
        ),
        build_deb(dir.path(), "pal-held", "1.0", ""),
        build_deb(dir.path(), "pal-removed", "3.0-1", ""),
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
