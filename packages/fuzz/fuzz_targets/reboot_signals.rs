//! Fuzz target: what the reboot check reads from `/proc` (a process's
//! maps, the kernel's release and version lines) and the package database
//! must never make it panic. Input parts are separated by 0xff bytes:
//! maps, osrelease, version, version_signature, dpkg status.
#![no_main]

use libfuzzer_sys::fuzz_target;
use palisade_packages::deb::StatusFile;
use palisade_packages::reboot::{
    REBOOT_REQUIRED_FLAG, RunningKernel, debian_kernel, deleted_mappings, flag_reason,
};

fuzz_target!(|bytes: &[u8]| {
    let mut parts = bytes.split(|&b| b == 0xff);
    let mut next = || String::from_utf8_lossy(parts.next().unwrap_or_default()).into_owned();
    let (maps, osrelease, version, signature, status) = (next(), next(), next(), next(), next());
    for path in deleted_mappings(&maps) {
        assert!(path.starts_with('/'));
        assert!(maps.contains(&path));
    }
    let running = RunningKernel::from_proc(
        &osrelease,
        &version,
        Some(signature.as_str()).filter(|s| !s.is_empty()),
    );
    let status_text = status;
    if let Ok(status) = StatusFile::parse(status_text.as_bytes()) {
        let verdict = debian_kernel(&running, &status.packages);
        assert_eq!(verdict.reason().is_some(), verdict.reboot_required());
        assert!(flag_reason(Some(&status_text)).starts_with(REBOOT_REQUIRED_FLAG));
    }
});
