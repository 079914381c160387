//! Fuzz target: Debian version parsing never panics, and the ordering is a
//! total order on what it accepts (antisymmetric, consistent with its text
//! form).
#![no_main]

use libfuzzer_sys::fuzz_target;
use palisade_packages::deb::Version;

fuzz_target!(|text: &str| {
    let (a, b) = text.split_once('\n').unwrap_or((text, ""));
    let (Ok(x), Ok(y)) = (Version::parse(a), Version::parse(b)) else {
        return;
    };
    assert_eq!(x.cmp(&y), y.cmp(&x).reverse());
    assert_eq!(x.cmp(&x), std::cmp::Ordering::Equal);
    // Printing and parsing again gives an equal version.
    let again = Version::parse(&x.to_string()).expect("a printed version parses");
    assert_eq!(again, x);
});
