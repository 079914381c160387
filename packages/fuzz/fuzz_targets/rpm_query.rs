//! Fuzz target: reading `rpm -qa` / `dnf repoquery` rows never panics, and
//! every row read back is printed as a valid EVR that reads back the same.
#![no_main]

use libfuzzer_sys::fuzz_target;
use palisade_packages::rpm::Evr;
use palisade_packages::rpm::query::{ROW_END, ROW_START, parse};

fuzz_target!(|text: &str| {
    let Ok(query) = parse(text) else {
        return;
    };
    let mut again = String::new();
    for row in &query.rows {
        let evr = Evr::parse(&row.evr).expect("a row's version is a valid EVR");
        assert_eq!(evr.to_string(), row.evr);
        again.push_str(&format!(
            "{ROW_START}\t{}\t{}\t{}\t{ROW_END}\n",
            row.name, row.arch, row.evr
        ));
    }
    let reread = parse(&again).expect("printed rows parse");
    assert_eq!(reread.rows, query.rows);
});
