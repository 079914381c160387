//! Fuzz target: RPM EVR parsing and rpmvercmp never panic; the ordering is
//! antisymmetric and reflexive, and a printed EVR parses back equal.
#![no_main]

use std::cmp::Ordering;

use libfuzzer_sys::fuzz_target;
use palisade_packages::rpm::{Evr, vercmp};

fuzz_target!(|text: &str| {
    let (a, b) = text.split_once('\n').unwrap_or((text, ""));
    // rpmvercmp is defined on any strings.
    assert_eq!(vercmp(a, b), vercmp(b, a).reverse());
    assert_eq!(vercmp(a, a), Ordering::Equal);
    let (Ok(x), Ok(y)) = (Evr::parse(a), Evr::parse(b)) else {
        return;
    };
    assert_eq!(x.cmp(&y), y.cmp(&x).reverse());
    assert_eq!(x.cmp(&x), Ordering::Equal);
    let again = Evr::parse(&x.to_string()).expect("a printed EVR parses");
    assert_eq!(again, x);
    assert_eq!(again.to_string(), x.to_string());
});
