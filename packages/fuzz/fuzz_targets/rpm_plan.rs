//! Fuzz target: dnf's state from untrusted files (a repository's
//! primary.xml and updateinfo.xml, the installed packages, dnf.conf, the
//! versionlock list) and the upgrade plan computed from it must never
//! panic, and the plan must be consistent. The input is the five parts
//! separated by 0xff bytes (never in UTF-8 text); the installed packages
//! are lines of `name [epoch:]version-release arch`.
#![no_main]

use libfuzzer_sys::fuzz_target;
use palisade_packages::rpm::dnf::{DnfState, NamedFile, RepoMetadata};
use palisade_packages::rpm::updateinfo::AdvisoryKind;
use palisade_packages::rpm::upgrade::{UpdateState, compatible_arches};
use palisade_packages::rpm::{Evr, InstalledRpm};

const REPOMD: &[u8] =
    b"<repomd><data type=\"primary\"><location href=\"repodata/primary.xml\"/></data>\
<data type=\"updateinfo\"><location href=\"repodata/updateinfo.xml\"/></data></repomd>";

fn installed(text: &[u8]) -> Vec<InstalledRpm> {
    String::from_utf8_lossy(text)
        .lines()
        .filter_map(|line| {
            let mut words = line.split_whitespace();
            let (name, evr, arch) = (words.next()?, words.next()?, words.next()?);
            let evr = Evr::parse(evr).ok()?;
            Some(InstalledRpm {
                name: name.to_owned(),
                epoch: Some(evr.epoch()),
                version: evr.version().to_owned(),
                release: evr.release().unwrap_or("").to_owned(),
                arch: Some(arch.to_owned()),
                source_rpm: None,
                install_time: None,
            })
        })
        .collect()
}

fuzz_target!(|bytes: &[u8]| {
    let mut parts = bytes.split(|&b| b == 0xff);
    let mut next = || parts.next().unwrap_or_default().to_vec();
    let (primary, updateinfo, packages, conf, locks) = (next(), next(), next(), next(), next());
    let repo_files = [NamedFile {
        name: "fuzz.repo".into(),
        contents: b"[fuzz]\nexcludepkgs=*-excluded\npriority=10\n".to_vec(),
    }];
    let metadata = [RepoMetadata {
        id: "fuzz".into(),
        repomd: REPOMD.to_vec(),
        files: vec![
            NamedFile {
                name: "primary.xml".into(),
                contents: primary,
            },
            NamedFile {
                name: "updateinfo.xml".into(),
                contents: updateinfo,
            },
        ],
    }];
    let Ok(state) = DnfState::from_files(
        installed(&packages),
        &conf,
        &repo_files,
        &metadata,
        Some(&locks),
    ) else {
        return;
    };
    for problem in &state.problems {
        assert!(!problem.to_string().is_empty());
    }
    let plan = state.plan("x86_64");
    assert_eq!(plan, state.plan("x86_64"), "the plan is deterministic");
    let arches = compatible_arches("x86_64");
    for update in &plan.updates {
        assert!(update.candidate > update.installed);
        assert!(arches.contains(&update.candidate_arch.as_str()));
        assert!(
            update.arch == update.candidate_arch
                || update.arch == "noarch"
                || update.candidate_arch == "noarch"
        );
        assert!(!update.repositories.is_empty());
        assert_eq!(
            update.security,
            update
                .advisories
                .iter()
                .any(|a| a.kind == AdvisoryKind::Security)
        );
        if let UpdateState::Excluded { pattern } | UpdateState::Locked { pattern } = &update.state {
            assert!(!pattern.is_empty());
        }
    }
    for pair in plan.updates.windows(2) {
        assert!((&pair[0].name, &pair[0].arch) < (&pair[1].name, &pair[1].arch));
    }
    for obsoletion in &plan.obsoletions {
        assert!(!obsoletion.repositories.is_empty());
        assert_ne!(obsoletion.name, obsoletion.obsoleted_name);
    }
    for applicable in &plan.advisories {
        assert!(!applicable.advisory.id.is_empty());
    }
});
