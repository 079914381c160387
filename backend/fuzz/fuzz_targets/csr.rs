//! Certificate signing requests, which the backend receives from anyone who
//! holds an enrollment token. Signing may fail; it must never panic.

#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use palisade_backend::pki::Pki;

fn pki() -> &'static Pki {
    static PKI: OnceLock<Pki> = OnceLock::new();
    PKI.get_or_init(|| {
        let dir = std::env::temp_dir().join("palisade-fuzz-pki");
        // The harness cannot run without its CA; this is not about the input.
        Pki::load_or_create(&dir, &[], None)
            .unwrap_or_else(|e| panic!("cannot create the fuzzing PKI in {}: {e}", dir.display()))
    })
}

fuzz_target!(|data: &[u8]| {
    let _ = pki().issue_agent_cert("agent", data);
});
