//! The tools dist and its test need, installed when missing: nothing may
//! depend on something installed by hand.

use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};

use anyhow::{Context, bail};

use crate::util;

/// The packaging tools, pinned: their versions are part of what makes two
/// builds byte-identical. (name of the crate and of the cargo subcommand)
pub const CARGO_TOOLS: [(&str, &str, &str); 2] = [
    ("cargo-deb", "deb", "3.8.0"),
    ("cargo-generate-rpm", "generate-rpm", "0.21.1"),
];

/// Debian packages dist needs: rpmsign (rpm), apt-ftparchive (apt-utils)
/// and gpg (gnupg).
pub const DIST_DEBIAN_PACKAGES: &[&str] = &["rpm", "apt-utils", "gnupg"];

/// Debian packages the packaging test needs on top: lintian, a Debian root
/// to install into (debootstrap), gpgv, systemd-analyze (systemd) and
/// setpriv (util-linux).
pub const TEST_DEBIAN_PACKAGES: &[&str] = &[
    "lintian",
    "debootstrap",
    "debian-archive-keyring",
    "gpgv",
    "systemd",
    "util-linux",
];

/// Installs the pinned cargo tools unless that exact version is there.
pub fn ensure_cargo_tools() -> anyhow::Result<()> {
    for (krate, subcommand, version) in CARGO_TOOLS {
        let installed = util::output(util::cargo().args([subcommand, "--version"])).ok();
        let wanted = format!("{krate} {version}");
        if installed.as_deref().map(str::trim) == Some(wanted.as_str()) {
            println!("{wanted}: installed");
            continue;
        }
        match &installed {
            Some(other) => println!(
                "{krate}: found {}, want {version}: installing",
                other.trim()
            ),
            None => println!("{krate}: not installed: installing {version} (a few minutes, once)"),
        }
        util::run(util::cargo().args(["install", "--locked", "--version", version, krate]))
            .with_context(|| format!("cannot install {krate} {version}"))?;
    }
    Ok(())
}

/// Installs the Debian packages that are missing (as root; otherwise says
/// what to run).
pub fn ensure_debian_packages(packages: &[&str]) -> anyhow::Result<()> {
    let missing: Vec<&str> = packages
        .iter()
        .copied()
        .filter(|p| !debian_package_installed(p))
        .collect();
    if missing.is_empty() {
        println!("Debian packages present: {}", packages.join(" "));
        return Ok(());
    }
    if !nix::unistd::geteuid().is_root() {
        bail!(
            "missing Debian packages: {0}; install them as root: apt-get install {0}",
            missing.join(" ")
        );
    }
    // `apt-get update` once per run: a fresh machine has no package lists,
    // and an old list may name versions the mirror no longer has.
    static UPDATED: AtomicBool = AtomicBool::new(false);
    if !UPDATED.swap(true, Ordering::Relaxed) {
        util::run(apt_get().arg("update")).context("apt-get update failed")?;
    }
    util::run(
        apt_get()
            .args(["install", "-y", "--no-install-recommends"])
            .args(&missing),
    )
    .with_context(|| format!("cannot install {}", missing.join(" ")))
}

fn apt_get() -> Command {
    let mut cmd = Command::new("apt-get");
    cmd.env("DEBIAN_FRONTEND", "noninteractive");
    cmd
}

fn debian_package_installed(package: &str) -> bool {
    util::output(Command::new("dpkg-query").args(["-W", "-f=${Status}", package]))
        .is_ok_and(|status| status.trim() == "install ok installed")
}
