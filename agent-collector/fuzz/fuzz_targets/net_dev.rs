//! Fuzz target: the collector's `net_dev` parser must never panic on any input.
#![no_main]

use libfuzzer_sys::fuzz_target;
use palisade_agent_collector::procfs::parse_net_dev;

fuzz_target!(|text: &str| {
    if let Ok(interfaces) = parse_net_dev(text) {
        assert!(
            interfaces
                .iter()
                .all(|i| !i.interface.is_empty() && i.interface != "lo")
        );
    }
});
