//! Fuzz target: relationship fields (`Depends: a (>= 1) | b`) and apt's
//! list file names must never panic; a parsed relation prints as text that
//! parses back to the same relation.
#![no_main]

use libfuzzer_sys::fuzz_target;
use palisade_packages::deb::{lists, relation};

fuzz_target!(|bytes: &[u8]| {
    let Ok(text) = std::str::from_utf8(bytes) else {
        return;
    };
    if let Ok(groups) = relation::parse(text) {
        for group in &groups {
            for alternative in group {
                let printed = alternative.to_string();
                let again = relation::parse(&printed).expect("a printed relation parses");
                assert_eq!(again, vec![vec![alternative.clone()]], "{printed}");
            }
        }
    }
    let names: Vec<&str> = text.lines().collect();
    for entry in lists::entries(&names) {
        assert!(names.contains(&entry.packages.as_str()));
    }
});
