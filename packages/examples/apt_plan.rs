//! Prints what `apt-get dist-upgrade` would do on a Debian root, computed
//! as the collector computes it (read-only: the dpkg status file, apt's
//! lists and pins; apt is not run).
//!
//! `cargo run --release -p palisade-packages --example apt_plan -- [ROOT] [ARCH]`
//!
//! ROOT defaults to `/`, ARCH to `amd64`. With `/usr/bin/time -v` it gives
//! the CPU time and peak memory of one inventory (BENCHMARKS.md).

use std::path::Path;

use palisade_packages::deb::apt::{AptState, NamedFile, is_preferences_name};
use palisade_packages::deb::upgrade::{Options, UpdateState};

fn read_dir(dir: &Path, keep: &dyn Fn(&str) -> bool) -> std::io::Result<Vec<NamedFile>> {
    let mut files = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Ok(files);
    };
    for entry in entries {
        let path = entry?.path();
        let Some(name) = path.file_name().and_then(|n| n.to_str()).map(str::to_owned) else {
            continue;
        };
        if path.is_file() && keep(&name) {
            files.push(NamedFile {
                contents: std::fs::read(&path)?,
                name,
            });
        }
    }
    files.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(files)
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let root = args.next().unwrap_or_else(|| "/".to_owned());
    let arch = args.next().unwrap_or_else(|| "amd64".to_owned());
    let root = Path::new(&root);
    let status = std::fs::read(root.join("var/lib/dpkg/status"))?;
    let lists = read_dir(&root.join("var/lib/apt/lists"), &|name| {
        name.contains("Packages") || name.ends_with("Release")
    })?;
    let mut preferences = read_dir(&root.join("etc/apt"), &|name| name == "preferences")?;
    preferences.extend(read_dir(
        &root.join("etc/apt/preferences.d"),
        &is_preferences_name,
    )?);
    let state = AptState::from_files(&status, &lists, &preferences)?;
    for problem in &state.problems {
        eprintln!("warning: {problem}");
    }
    let plan = state.plan(&Options {
        native_architecture: arch,
        default_release: None,
        phasing: root.join("etc/machine-id").exists(),
    });
    for update in &plan.updates {
        let state = match &update.state {
            UpdateState::Pending => "pending".to_owned(),
            UpdateState::Held => "held".to_owned(),
            UpdateState::Deferred { percentage } => format!("phased ({percentage}%)"),
            UpdateState::KeptBack { reason } => format!("kept back: {reason}"),
        };
        let security = if update.security { " security" } else { "" };
        println!(
            "{} {} -> {}{security} [{state}]",
            update.name, update.installed, update.candidate
        );
    }
    for new in &plan.new_installs {
        println!("{} (new) {}", new.name, new.version);
    }
    for removal in &plan.removals {
        println!(
            "{} {} removed: {}",
            removal.name, removal.version, removal.reason
        );
    }
    eprintln!(
        "{} installed, {} package files, {} updates ({} security)",
        state.status.installed().count(),
        state.files.len(),
        plan.updates.len(),
        plan.updates.iter().filter(|u| u.security).count()
    );
    Ok(())
}
