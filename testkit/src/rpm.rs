//! RPM systems for tests: dummy packages built with `rpmbuild`,
//! repositories made with `createrepo_c`, and rpm and dnf run on private
//! roots without ever opening the host's rpm database: `HOME` is always a
//! private directory whose `.rpmmacros` sets `%_dbpath`. Commands that act
//! on a root (`rpm --root`, `dnf --installroot`) get `%_dbpath
//! /var/lib/rpm`, inside that root; the others (`rpmbuild`, `rpm -qp`,
//! which open a database too) get a private database of their own, since
//! `/var/lib/rpm` would be the host's.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// The output of a command that must have succeeded.
pub fn check(what: &str, out: Output) -> String {
    assert!(out.status.success(), "{what}: {out:?}");
    String::from_utf8(out.stdout).expect("utf-8 output")
}

/// Private `HOME`s for rpm, rpmbuild and dnf, with the macros that keep
/// them off the host's database and build tree.
pub struct Sandbox {
    dir: tempfile::TempDir,
}

impl Default for Sandbox {
    fn default() -> Sandbox {
        Sandbox::new()
    }
}

impl Sandbox {
    pub fn new() -> Sandbox {
        let dir = tempfile::tempdir().expect("tempdir");
        // rpmbuild's scriptlets go to %_tmppath (/var/tmp by default).
        let tmp = dir.path().join("tmp");
        std::fs::create_dir_all(&tmp).expect("mkdir tmp");
        let build_macros = format!(
            "%_dbpath {}\n%_topdir {}\n%_tmppath {}\n",
            dir.path().join("build-rpmdb").display(),
            dir.path().join("build").display(),
            tmp.display()
        );
        for (home, macros) in [
            ("home-build", build_macros.as_str()),
            ("home-rooted", "%_dbpath /var/lib/rpm\n"),
        ] {
            let home = dir.path().join(home);
            std::fs::create_dir_all(&home).expect("mkdir home");
            std::fs::write(home.join(".rpmmacros"), macros).expect("write .rpmmacros");
        }
        Sandbox { dir }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    fn with_home(&self, program: &str, home: &str) -> Command {
        let mut command = Command::new(program);
        command
            .env("HOME", self.path().join(home))
            .env("GNUPGHOME", self.path().join("gnupg"))
            .env("LC_ALL", "C");
        command
    }

    /// A command that does not name a root: its database is private.
    pub fn command(&self, program: &str) -> Command {
        self.with_home(program, "home-build")
    }

    /// A command given `--root` or `--installroot`: its database is
    /// `/var/lib/rpm` inside that root.
    pub fn rooted(&self, program: &str) -> Command {
        self.with_home(program, "home-rooted")
    }

    /// Builds the binary packages of one spec; returns their files.
    pub fn build(&self, name: &str, spec: &str) -> Vec<PathBuf> {
        let file = self.path().join(format!("{name}.spec"));
        std::fs::write(&file, spec).expect("write spec");
        let out = self
            .command("rpmbuild")
            .arg("-bb")
            .arg(&file)
            .output()
            .expect("run rpmbuild");
        let log = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(out.status.success(), "rpmbuild {name}: {out:?}");
        log.lines()
            .filter_map(|l| l.strip_prefix("Wrote: "))
            .map(PathBuf::from)
            .collect()
    }

    /// `rpm --root root --dbpath /var/lib/rpm` and `args`.
    pub fn rpm(&self, root: &Path, args: &[&str]) -> String {
        let out = self
            .rooted("rpm")
            .arg("--root")
            .arg(root)
            .args(["--dbpath", "/var/lib/rpm"])
            .args(args)
            .output()
            .expect("run rpm");
        check(&format!("rpm {args:?}"), out)
    }
}

/// A spec of a noarch package with no files; `extra` adds tags.
pub fn spec(name: &str, version: &str, release: &str, extra: &str) -> String {
    format!(
        "Name: {name}\nVersion: {version}\nRelease: {release}\n{extra}\
         Summary: a test package\nLicense: MIT\nBuildArch: noarch\n\
         %description\na test package\n%files\n"
    )
}

/// A spec of a package with no files built for the build machine's
/// architecture (no `BuildArch`, no debuginfo); `extra` adds tags.
pub fn arch_spec(name: &str, version: &str, release: &str, extra: &str) -> String {
    format!(
        "%global debug_package %{{nil}}\nName: {name}\nVersion: {version}\nRelease: {release}\n{extra}\
         Summary: a test package\nLicense: MIT\n\
         %description\na test package\n%files\n"
    )
}

/// Makes `dir` (holding `.rpm` files) a repository.
pub fn createrepo(sandbox: &Sandbox, dir: &Path) {
    let out = sandbox
        .command("createrepo_c")
        .arg("-q")
        .arg(dir)
        .output()
        .expect("run createrepo_c");
    check("createrepo_c", out);
}

/// Adds the advisories `updateinfo` (the text of an `updateinfo.xml`) to
/// the repository in `dir`, as distributions publish them: a separate file
/// that `repomd.xml` names, added with `modifyrepo_c`.
pub fn add_updateinfo(sandbox: &Sandbox, dir: &Path, updateinfo: &str) {
    let file = sandbox.path().join("updateinfo.xml");
    std::fs::write(&file, updateinfo).expect("write updateinfo.xml");
    let out = sandbox
        .command("modifyrepo_c")
        .arg(&file)
        .arg(dir.join("repodata"))
        .output()
        .expect("run modifyrepo_c");
    check("modifyrepo_c", out);
}

/// Makes the place where rpm looks for the database inside `root`, when
/// run as the agent's control runs it (a cleared environment), a link to
/// the root's `/var/lib/rpm`. On an rpm distribution `%_dbpath` is
/// `/var/lib/rpm` already and nothing is done; Debian's rpm says
/// `~/.rpmdb`, which without this would be a database of its own, empty.
pub fn link_control_dbpath(root: &Path) {
    let out = Command::new("rpm")
        .env_clear()
        .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
        .env("LC_ALL", "C")
        .args(["--eval", "%_dbpath"])
        .output()
        .expect("run rpm --eval");
    let dbpath = check("rpm --eval %_dbpath", out).trim().to_owned();
    let inside = Path::new(dbpath.trim_start_matches('/'));
    if dbpath.is_empty() || inside == Path::new("var/lib/rpm") {
        return;
    }
    let parent = inside.parent().expect("a path in a directory");
    std::fs::create_dir_all(root.join(parent)).expect("mkdir the dbpath's directory");
    let up = "../".repeat(parent.components().count());
    std::os::unix::fs::symlink(format!("{up}var/lib/rpm"), root.join(inside))
        .expect("link the dbpath");
}

/// Whether this machine can build RPMs and run dnf on private roots
/// (root, rpm, rpmbuild, createrepo_c, modifyrepo_c and dnf); without them
/// a test says so and passes, except under `CI=true`, where it fails.
pub fn can_manage_roots() -> bool {
    if !nix::unistd::geteuid().is_root() {
        assert!(!crate::is_ci(), "CI runs as root and must run this test");
        eprintln!("not root: skipping");
        return false;
    }
    for tool in ["rpm", "rpmbuild", "createrepo_c", "modifyrepo_c", "dnf"] {
        if !crate::on_path(tool) {
            assert!(!crate::is_ci(), "{tool} is missing under CI");
            eprintln!("{tool} is missing: skipping");
            return false;
        }
    }
    true
}
