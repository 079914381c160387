//! Fuzz target: reading an rpm database header blob never panics and never
//! reads past the blob; what it accepts is a whole package.
#![no_main]

use libfuzzer_sys::fuzz_target;
use palisade_packages::rpm::InstalledRpm;

fuzz_target!(|blob: &[u8]| {
    match InstalledRpm::from_header_blob(blob) {
        Ok(rpm) => {
            assert!(!rpm.name.is_empty());
            assert!(!rpm.version.is_empty());
            assert!(!rpm.release.is_empty());
            let _ = rpm.source_name();
            let _ = rpm.evr().to_string();
        }
        // Every error can be shown to a user.
        Err(error) => assert!(!error.to_string().is_empty()),
    }
});
