//! Fuzz target: the updateinfo.xml parser (and the XML walk under it) never
//! panics; what it accepts is consistent.
#![no_main]

use libfuzzer_sys::fuzz_target;
use palisade_packages::rpm::UpdateInfo;

fuzz_target!(|bytes: &[u8]| {
    match UpdateInfo::parse(bytes) {
        Ok(info) => {
            for advisory in &info.advisories {
                assert!(!advisory.id.is_empty());
                for package in &advisory.packages {
                    assert!(!package.name.is_empty() && !package.arch.is_empty());
                    assert!(!package.evr.version().is_empty());
                }
            }
            for problem in &info.problems {
                assert!(!problem.to_string().is_empty());
            }
        }
        Err(error) => assert!(!error.to_string().is_empty()),
    }
});
