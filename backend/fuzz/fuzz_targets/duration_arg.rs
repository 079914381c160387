//! Durations given on the command line (`--expires 7d`). Whatever parses is a
//! positive number of milliseconds.

#![no_main]

use libfuzzer_sys::fuzz_target;
use palisade_backend::cli::parse_duration_ms;

fuzz_target!(|text: &str| {
    if let Ok(ms) = parse_duration_ms(text) {
        assert!(ms > 0, "{text:?} parsed to a non-positive duration {ms}");
    }
});
