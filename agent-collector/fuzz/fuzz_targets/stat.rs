//! Fuzz target: the collector's `stat` parser must never panic on any input.
#![no_main]

use libfuzzer_sys::fuzz_target;
use palisade_agent_collector::procfs::parse_stat;

fuzz_target!(|text: &str| {
    if let Ok(stat) = parse_stat(text) {
        assert!(stat.cpu_count > 0);
    }
});
