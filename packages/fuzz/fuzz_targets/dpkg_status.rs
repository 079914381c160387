//! Fuzz target: the dpkg status parser (and the deb822 paragraphs under it)
//! must never panic, and what it accepts must be consistent.
#![no_main]

use libfuzzer_sys::fuzz_target;
use palisade_packages::deb::StatusFile;

fuzz_target!(|bytes: &[u8]| {
    if let Ok(file) = StatusFile::parse(bytes) {
        for package in &file.packages {
            assert!(!package.name.is_empty());
            assert!(!package.source.is_empty());
            if package.is_installed() {
                assert!(package.version.is_some());
            }
        }
        // Every problem can be shown to a user.
        for problem in &file.problems {
            assert!(!problem.to_string().is_empty());
        }
    }
});
