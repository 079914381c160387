//! A real process whose executable was replaced while it runs: its
//! `/proc/<pid>/maps` names the old file as deleted, and
//! [`deleted_mappings`] reports it (what tells an operator that a service
//! still runs code an upgrade replaced).

use std::process::{Command, Stdio};

use palisade_packages::reboot::deleted_mappings;

#[test]
fn a_running_program_whose_file_was_deleted() {
    let sleep = ["/usr/bin/sleep", "/bin/sleep"]
        .into_iter()
        .find(|p| std::path::Path::new(p).exists())
        .expect("sleep (coreutils) is on every Linux system");
    let dir = tempfile::tempdir().expect("tempdir");
    let copy = dir.path().join("old-daemon");
    std::fs::copy(sleep, &copy).expect("copy sleep");
    let mut child = Command::new(&copy)
        .arg("30")
        .stdout(Stdio::null())
        .spawn()
        .expect("start the copy");
    let maps_path = format!("/proc/{}/maps", child.id());
    // The loader maps the executable before the process is visible with a
    // full map; wait for it.
    let mut before = String::new();
    for _ in 0..100 {
        before = std::fs::read_to_string(&maps_path).expect("read maps");
        if before.contains("old-daemon") {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    assert!(deleted_mappings(&before).is_empty(), "{before}");
    std::fs::remove_file(&copy).expect("delete the file");
    let after = std::fs::read_to_string(&maps_path).expect("read maps");
    let deleted = deleted_mappings(&after);
    child.kill().expect("kill");
    child.wait().expect("wait");
    assert_eq!(deleted, [copy.display().to_string()], "{after}");
}
