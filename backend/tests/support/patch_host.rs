//! A host for the patch-run tests: a private apt/dpkg root the test made,
//! managed by a real agent started with `PALISADE_PACKAGE_ROOT`.
//!
//! The root has a local repository with a normal suite and one labelled as
//! a security archive (as Debian's Release files are), and dummy packages:
//! one with a security update whose new version's maintainer script takes
//! six seconds and prints as it goes, one with a normal update, one held
//! and one whose update needs a package no suite has (kept back). Its
//! indexes are not fetched: that is control's job (`refresh_inventory`).
//! [`make_with`] gives the security update another maintainer script (one
//! that fails, for a broken update); [`publish_security`] adds a later
//! version, as a vendor publishes a fix.
//!
//! [`dnf`] is the same for an rpm root managed with `dnf --installroot`.

pub mod dnf;

use std::path::{Path, PathBuf};

use palisade_testkit::apt::{
    Deb, RepoEntry, add_shell, add_to_suite, build_deb, build_repository, dpkg, install_plain,
    make_apt_root, make_dpkg_root, suite_fields,
};

use super::Agent;

pub const REPOSITORY: &[RepoEntry<'_>] = &[
    ("stable", "pal-sec", "1.0", ""),
    ("stable", "pal-plain", "1.1", ""),
    ("stable", "pal-held", "1.1", ""),
    ("stable", "pal-kept", "1.1", "Depends: pal-missing (>= 1)\n"),
];

pub const INSTALLED: &[&str] = &["pal-sec", "pal-plain", "pal-held", "pal-kept"];

/// pal-sec 1.1's maintainer script in [`make`]'s repository: six seconds,
/// printing as it goes.
pub const SLOW_PREINST: &str =
    "for i in 1 2 3 4 5 6; do echo \"pal-sec preinst step $i\"; sleep 1; done";

/// A maintainer script that fails, as a broken update's does: dpkg stops
/// before unpacking and leaves the installed version in place.
pub const FAILING_PREINST: &str =
    "echo 'pal-sec preinst: cannot migrate /etc/pal-sec (broken update)' >&2; exit 1";

/// Makes the repository and the managed root under `dir`, with the old
/// versions installed and pal-held on hold; returns the root.
pub fn make(dir: &Path) -> PathBuf {
    make_with(dir, SLOW_PREINST)
}

/// [`make`], with `security_preinst` as the maintainer script of pal-sec's
/// security update (1.1).
pub fn make_with(dir: &Path, security_preinst: &str) -> PathBuf {
    let (build, repo, root) = (dir.join("build"), dir.join("repo"), dir.join("root"));
    std::fs::create_dir_all(&build).expect("mkdir");
    build_repository(&build, &repo, REPOSITORY, suite_fields);
    publish_security(dir, "1.1", security_preinst);
    make_dpkg_root(&root);
    make_apt_root(&root, &repo, &["stable", "stable-security"]);
    add_shell(&root);
    // The collector reads the running kernel from the root's /proc.
    std::os::unix::fs::symlink("/proc", root.join("proc")).expect("proc link");
    install_plain(&build, &root, INSTALLED, "1.0");
    dpkg(&root, &["--set-selections"], Some("pal-held hold\n"));
    // The agent's users must reach the root (tempdirs are 0700).
    for path in [dir, &root] {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    }
    root
}

/// Publishes pal-sec `version`, with `preinst`, in the security suite of
/// the repository [`make`] made under `dir`, as a vendor publishes a fix;
/// the root sees it after its next index refresh.
pub fn publish_security(dir: &Path, version: &str, preinst: &str) {
    let deb = build_deb(
        &dir.join("build"),
        &Deb {
            name: "pal-sec",
            version,
            extra: "",
            preinst: Some(preinst),
        },
    );
    add_to_suite(
        &dir.join("repo"),
        "stable-security",
        &deb,
        &suite_fields("stable-security"),
    );
}

/// The version of `package` the dpkg database in `root` says is installed
/// (None when it is not installed).
pub fn installed_version(root: &Path, package: &str) -> Option<String> {
    let out = std::process::Command::new("dpkg-query")
        .arg(format!(
            "--admindir={}",
            root.join("var/lib/dpkg").display()
        ))
        .args([
            "--showformat=${db:Status-Status} ${Version}",
            "--show",
            package,
        ])
        .output()
        .expect("run dpkg-query");
    let text = String::from_utf8_lossy(&out.stdout);
    text.strip_prefix("installed ").map(str::to_owned)
}

/// Starts the agent of `state` managing the packages under `root`.
pub fn start_agent(state: &Path, root: &Path) -> Agent {
    let mut cmd = std::process::Command::new(super::agent_bin());
    cmd.args([
        "run",
        "--metrics-interval",
        "5s",
        "--health-interval",
        "1s",
        "--state-dir",
    ])
    .arg(state)
    .env("PALISADE_PACKAGE_ROOT", root);
    Agent::spawn(cmd, state)
}
