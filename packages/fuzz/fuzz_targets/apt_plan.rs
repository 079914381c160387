//! Fuzz target: apt's state from untrusted files (the dpkg status file, a
//! Release or InRelease file, a Packages index, a preferences file) and the
//! dist-upgrade plan computed from it must never panic, and the plan must
//! be consistent. The input is the four files separated by 0xff bytes (never in UTF-8 text).
#![no_main]

use libfuzzer_sys::fuzz_target;
use palisade_packages::deb::apt::{AptState, NamedFile};
use palisade_packages::deb::upgrade::{Options, UpdateState};

fuzz_target!(|bytes: &[u8]| {
    let mut parts = bytes.split(|&b| b == 0xff);
    let mut next = || parts.next().unwrap_or_default().to_vec();
    let (status, release, packages, preferences) = (next(), next(), next(), next());
    let lists = [
        NamedFile {
            name: "deb.example.org_debian_dists_stable_InRelease".into(),
            contents: release,
        },
        NamedFile {
            name: "deb.example.org_debian_dists_stable_main_binary-amd64_Packages".into(),
            contents: packages,
        },
    ];
    let preferences = [NamedFile {
        name: "fuzz.pref".into(),
        contents: preferences,
    }];
    let Ok(state) = AptState::from_files(&status, &lists, &preferences) else {
        return;
    };
    for problem in &state.problems {
        assert!(!problem.to_string().is_empty());
    }
    for phasing in [false, true] {
        let plan = state.plan(&Options {
            native_architecture: "amd64".into(),
            default_release: Some("stable".into()),
            phasing,
        });
        for update in &plan.updates {
            assert!(update.candidate != update.installed);
            if let UpdateState::KeptBack { reason } = &update.state {
                assert!(!reason.is_empty());
            }
        }
        for removal in &plan.removals {
            assert!(
                !plan
                    .updates
                    .iter()
                    .any(|u| u.name == removal.name && u.state == UpdateState::Pending)
            );
        }
    }
});
