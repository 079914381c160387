//! Fuzz target: the collector's `meminfo` parser must never panic on any input.
#![no_main]

use libfuzzer_sys::fuzz_target;
use palisade_agent_collector::procfs::parse_meminfo;

fuzz_target!(|text: &str| {
    let _ = parse_meminfo(text);
});
