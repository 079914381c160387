//! The pending-update computation checked against apt on this machine's own
//! Debian system: the real dpkg database, the real (compressed, under
//! `Acquire::GzipIndexes`) Debian indexes with their security suite, and the
//! machine's pins.
//!
//! Read-only: the files are read, and apt only simulates
//! (`apt-get -s dist-upgrade` changes nothing and takes no lock). On a
//! machine whose package lists are empty (never updated) the comparison
//! still runs, on what little apt knows.

mod common;

use std::path::Path;
use std::process::Command;

use common::{Simulation, have, run};
use palisade_packages::deb::apt::{AptState, NamedFile, is_preferences_name};
use palisade_packages::deb::upgrade::Options;

fn text(cmd: &mut Command) -> String {
    String::from_utf8(run(cmd.env("LC_ALL", "C")).stdout).expect("UTF-8 output")
}

/// The files of `dir` whose names `keep` accepts, sorted by name.
fn read_dir(dir: &Path, keep: &dyn Fn(&str) -> bool) -> Vec<NamedFile> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut files: Vec<NamedFile> = entries
        .map(|e| e.expect("directory entry").path())
        .filter(|p| p.is_file())
        .filter_map(|p| {
            let name = p.file_name()?.to_str()?.to_owned();
            keep(&name).then(|| NamedFile {
                contents: std::fs::read(&p).expect("read"),
                name,
            })
        })
        .collect();
    files.sort_by(|a, b| a.name.cmp(&b.name));
    files
}

/// The host's setting `name` (empty when unset).
fn apt_setting(name: &str) -> String {
    let out = text(Command::new("apt-config").args(["shell", "VALUE", name]));
    // `VALUE='...'` or nothing.
    out.trim()
        .strip_prefix("VALUE='")
        .and_then(|v| v.strip_suffix('\''))
        .unwrap_or("")
        .to_owned()
}

#[test]
fn the_plan_for_this_machine_is_what_apt_would_do() {
    if !have(&["dpkg", "apt-get", "apt-config"]) {
        return;
    }
    let status = std::fs::read("/var/lib/dpkg/status").expect("the dpkg status file");
    let lists = read_dir(Path::new("/var/lib/apt/lists"), &|name| {
        name.contains("Packages") || name.ends_with("Release")
    });
    let mut preferences = read_dir(Path::new("/etc/apt"), &|name| name == "preferences");
    preferences.extend(read_dir(
        Path::new("/etc/apt/preferences.d"),
        &is_preferences_name,
    ));
    let state = AptState::from_files(&status, &lists, &preferences).expect("apt state");
    assert!(state.problems.is_empty(), "{:?}", state.problems);

    let native_architecture = text(Command::new("dpkg").arg("--print-architecture"))
        .trim()
        .to_owned();
    let default_release = Some(apt_setting("APT::Default-Release")).filter(|s| !s.is_empty());
    let always_phased = [
        "APT::Get::Always-Include-Phased-Updates",
        "Update-Manager::Always-Include-Phased-Updates",
    ]
    .iter()
    .any(|name| matches!(apt_setting(name).as_str(), "true" | "1" | "yes"));
    let options = Options {
        native_architecture,
        default_release,
        phasing: Path::new("/etc/machine-id").exists() && !always_phased,
    };
    let plan = state.plan(&options);
    let apt_says = Simulation::parse(&text(Command::new("apt-get").args(["-s", "dist-upgrade"])));

    eprintln!(
        "{} installed, {} package files, {} updates ({} security), {} new, {} removed",
        state.status.installed().count(),
        state.files.len(),
        plan.updates.len(),
        plan.updates.iter().filter(|u| u.security).count(),
        plan.new_installs.len(),
        plan.removals.len()
    );
    apt_says.assert_same_as(&plan);

    // Where apt takes the new version from a security archive, the update
    // is a security update (the converse need not hold: a security fix
    // masked by a newer normal version still counts).
    for update in plan.pending() {
        let archive = &apt_says.archives[&update.name];
        if archive
            .split(", ")
            .any(|a| a.contains("-Security:") || a.ends_with("-security"))
        {
            assert!(update.security, "{} from {archive}", update.name);
        }
    }
}
