//! Fuzz target: the collector's `loadavg` parser must never panic on any input.
#![no_main]

use libfuzzer_sys::fuzz_target;
use palisade_agent_collector::procfs::parse_loadavg;

fuzz_target!(|text: &str| {
    if let Ok(load) = parse_loadavg(text) {
        // What the platform's validation will demand of these values.
        for value in [load.one, load.five, load.fifteen] {
            assert!(value.is_finite() && value >= 0.0);
        }
    }
});
