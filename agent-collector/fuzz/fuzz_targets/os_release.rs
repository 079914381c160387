//! Fuzz target: the collector's `os_release` parser must never panic on any input.
#![no_main]

use libfuzzer_sys::fuzz_target;
use palisade_agent_collector::procfs::parse_os_release;

fuzz_target!(|text: &str| {
    let _ = parse_os_release(text);
});
