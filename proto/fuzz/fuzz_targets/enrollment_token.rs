//! The enrollment token an operator pastes, and the CA pin computed from a
//! certificate. A token that parses must print back to the same token.

#![no_main]

use libfuzzer_sys::fuzz_target;
use palisade_proto::token::{EnrollmentToken, spki_pin};

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data)
        && let Ok(token) = text.parse::<EnrollmentToken>()
    {
        let printed = token.to_string();
        assert_eq!(
            printed.parse::<EnrollmentToken>().as_ref(),
            Ok(&token),
            "a parsed token must round-trip"
        );
    }
    let _ = spki_pin(data);
});
