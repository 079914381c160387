//! Fuzz target: what control reads of a process (`/proc/<pid>/cgroup` and
//! `/proc/<pid>/maps`) and the package root must never make the restart
//! logic panic; a unit is a printable name found in the cgroup text, and
//! the restarts stay within their limits and name only files read.
//! Input parts are separated by 0xff bytes: cgroup, maps, root.
#![no_main]

use libfuzzer_sys::fuzz_target;
use palisade_packages::reboot::deleted_mappings;
use palisade_packages::restart::{Limits, ProcessFiles, group, replaced_files, unit_from_cgroup};

const LIMITS: Limits = Limits {
    restarts: 3,
    pids: 2,
    files: 2,
    file_len: 64,
    total_file_bytes: 256,
};

fuzz_target!(|bytes: &[u8]| {
    let mut parts = bytes.split(|&b| b == 0xff);
    let mut next = || String::from_utf8_lossy(parts.next().unwrap_or_default()).into_owned();
    let (cgroup, maps, root) = (next(), next(), next());
    let unit = unit_from_cgroup(&cgroup);
    if let Some(unit) = &unit {
        for part in unit.split('/') {
            assert!(!part.is_empty() && cgroup.contains(part), "{unit:?}");
            assert!(!part.chars().any(char::is_control), "{unit:?}");
        }
    }
    let files = replaced_files(deleted_mappings(&maps), &root);
    for file in &files {
        assert!(file.starts_with('/') && !file.chars().any(char::is_control));
    }
    // Four processes of that input, two in its unit and two outside any.
    let processes = (1..=4u32).map(|pid| ProcessFiles {
        pid,
        unit: if pid % 2 == 0 { unit.clone() } else { None },
        files: files.clone(),
    });
    let restarts = group(processes, &LIMITS);
    assert!(restarts.restarts.len() <= LIMITS.restarts);
    let mut total = 0;
    for restart in &restarts.restarts {
        assert!(!restart.pids.is_empty() && restart.pids.len() <= LIMITS.pids);
        assert!(!restart.files.is_empty() && restart.files.len() <= LIMITS.files);
        for file in &restart.files {
            assert!(files.contains(file) && file.len() <= LIMITS.file_len);
            total += file.len();
        }
    }
    assert!(total <= LIMITS.total_file_bytes);
});
