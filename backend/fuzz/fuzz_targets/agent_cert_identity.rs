//! The agent id read from a client certificate presented on the uplink.

#![no_main]

use libfuzzer_sys::fuzz_target;
use palisade_backend::pki::agent_id_of;

fuzz_target!(|data: &[u8]| {
    let _ = agent_id_of(data);
});
