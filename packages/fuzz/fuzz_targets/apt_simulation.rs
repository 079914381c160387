//! Fuzz target: the output of `apt-get -s` (read from a program control
//! ran) must never panic the parser, and what it reads is bounded by it.
#![no_main]

use libfuzzer_sys::fuzz_target;
use palisade_packages::deb::simulate;

fuzz_target!(|bytes: &[u8]| {
    let text = String::from_utf8_lossy(bytes);
    if let Ok(simulation) = simulate::parse(&text) {
        assert!(simulation.changes.len() <= text.lines().count());
        for change in &simulation.changes {
            assert!(!change.name.is_empty());
            assert!(change.before.is_some() || change.after.is_some());
        }
    }
});
