//! Fuzz target: the primary.xml and repomd.xml parsers never panic; what
//! they accept is consistent.
#![no_main]

use libfuzzer_sys::fuzz_target;
use palisade_packages::rpm::{Primary, RepoMd};

fuzz_target!(|bytes: &[u8]| {
    match Primary::parse(bytes) {
        Ok(primary) => {
            for package in &primary.packages {
                assert!(!package.name.is_empty() && !package.arch.is_empty());
                assert!(!package.evr.version().is_empty());
            }
            for problem in &primary.problems {
                assert!(!problem.to_string().is_empty());
            }
        }
        Err(error) => assert!(!error.to_string().is_empty()),
    }
    match RepoMd::parse(bytes) {
        Ok(repomd) => {
            for data in &repomd.data {
                assert!(!data.href.is_empty());
                let _ = data.compression();
            }
        }
        Err(error) => assert!(!error.to_string().is_empty()),
    }
});
