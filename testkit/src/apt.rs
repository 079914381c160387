//! Hermetic apt systems for the tests that run the real package managers:
//! dummy packages, a local repository of several suites with their Release
//! files, and a private dpkg/apt root that apt and dpkg are pointed at. The
//! machine's own packages and apt settings are never read or touched.
//!
//! Needs dpkg-deb and apt-ftparchive (apt-utils); the callers check for
//! them (and fail under CI when missing).

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

/// Runs a command and returns its output; panics when it cannot start or
/// fails.
pub fn run(cmd: &mut Command) -> Output {
    let out = cmd.output().unwrap_or_else(|e| panic!("run {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// A dummy package: no files, no maintainer scripts but a `preinst` when
/// one is given.
pub struct Deb<'a> {
    pub name: &'a str,
    pub version: &'a str,
    /// More control fields (`"Depends: a\n"`).
    pub extra: &'a str,
    /// A shell script run before unpacking (needs [`add_shell`] in the root
    /// it is installed into, since dpkg runs it chrooted there).
    pub preinst: Option<&'a str>,
}

/// Builds `deb` in `dir`; returns the path of the `.deb`.
pub fn build_deb(dir: &Path, deb: &Deb<'_>) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let Deb {
        name,
        version,
        extra,
        preinst,
    } = deb;
    let tree = dir.join(format!("{name}_{version}"));
    std::fs::create_dir_all(tree.join("DEBIAN")).expect("mkdir");
    let control = format!(
        "Package: {name}\nVersion: {version}\nArchitecture: all\n\
         Maintainer: Palisade tests <tests@example.invalid>\n{extra}Description: a test package\n"
    );
    std::fs::write(tree.join("DEBIAN/control"), control).expect("control");
    if let Some(script) = preinst {
        let path = tree.join("DEBIAN/preinst");
        std::fs::write(&path, format!("#!/bin/sh\n{script}\n")).expect("preinst");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    }
    let path = dir.join(format!("{name}_{version}_all.deb"));
    run(Command::new("dpkg-deb")
        .args(["--build", "-Zgzip"])
        .arg(&tree)
        .arg(&path));
    std::fs::remove_dir_all(&tree).expect("remove the build tree");
    path
}

/// One package of a repository: (suite, name, version, extra control
/// fields).
pub type RepoEntry<'a> = (&'a str, &'a str, &'a str, &'a str);

/// Builds a repository at `repo` with one `main` component per suite,
/// its Packages index and a Release file with `fields(suite)`
/// (`"Origin=..."`, `"Label=..."`). Packages are built in `work`.
pub fn build_repository(
    work: &Path,
    repo: &Path,
    entries: &[RepoEntry<'_>],
    fields: impl Fn(&str) -> Vec<String>,
) {
    let suites: BTreeSet<&str> = entries.iter().map(|r| r.0).collect();
    for suite in suites {
        let pool = repo.join("pool").join(suite);
        std::fs::create_dir_all(&pool).expect("mkdir pool");
        for (_, name, version, extra) in entries.iter().filter(|r| r.0 == suite) {
            let deb = build_deb(
                work,
                &Deb {
                    name,
                    version,
                    extra,
                    preinst: None,
                },
            );
            std::fs::rename(&deb, pool.join(deb.file_name().expect("name"))).expect("move deb");
        }
        index_suite(repo, suite, &fields(suite));
    }
}

/// Adds a built `.deb` to `suite` of `repo` and rewrites its indexes.
pub fn add_to_suite(repo: &Path, suite: &str, deb: &Path, fields: &[String]) {
    let pool = repo.join("pool").join(suite);
    std::fs::create_dir_all(&pool).expect("mkdir pool");
    std::fs::copy(deb, pool.join(deb.file_name().expect("name"))).expect("copy deb");
    index_suite(repo, suite, fields);
}

fn index_suite(repo: &Path, suite: &str, fields: &[String]) {
    let index_dir = repo.join(format!("dists/{suite}/main/binary-amd64"));
    std::fs::create_dir_all(&index_dir).expect("mkdir dists");
    let packages = run(Command::new("apt-ftparchive")
        .current_dir(repo)
        .args(["packages", &format!("pool/{suite}")]));
    std::fs::write(index_dir.join("Packages"), &packages.stdout).expect("Packages");
    let mut release = Command::new("apt-ftparchive");
    release.current_dir(repo);
    for field in fields {
        release.args(["-o", &format!("APT::FTPArchive::Release::{field}")]);
    }
    let release = run(release.args(["release", &format!("dists/{suite}")]));
    std::fs::write(repo.join(format!("dists/{suite}/Release")), &release.stdout).expect("Release");
}

/// Makes the directories a private dpkg root needs, with an empty status
/// file.
pub fn make_dpkg_root(root: &Path) {
    for sub in ["var/lib/dpkg/updates", "var/lib/dpkg/info", "var/log"] {
        std::fs::create_dir_all(root.join(sub)).expect("mkdir");
    }
    std::fs::write(root.join("var/lib/dpkg/status"), "").expect("status");
}

/// Makes the directories apt needs in `root` and points its sources at
/// `suites` of the local repository `repo` (trusted: the test made it).
pub fn make_apt_root(root: &Path, repo: &Path, suites: &[&str]) {
    for sub in [
        "etc/apt/apt.conf.d",
        "etc/apt/preferences.d",
        "etc/apt/sources.list.d",
        "var/lib/apt/lists/partial",
        "var/cache/apt/archives/partial",
        "var/log/apt",
    ] {
        std::fs::create_dir_all(root.join(sub)).expect("mkdir");
    }
    let sources: String = suites
        .iter()
        .map(|suite| format!("deb [trusted=yes] file:{} {suite} main\n", repo.display()))
        .collect();
    std::fs::write(root.join("etc/apt/sources.list"), sources).expect("sources.list");
}

/// Runs dpkg on the private root at `root`; panics when it fails.
pub fn dpkg(root: &Path, args: &[&str], stdin: Option<&str>) {
    use std::io::Write;
    let mut cmd = Command::new("dpkg");
    cmd.arg(format!("--root={}", root.display()))
        .arg(format!(
            "--admindir={}",
            root.join("var/lib/dpkg").display()
        ))
        .args(["--force-not-root", "--force-script-chrootless"])
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().expect("run dpkg");
    if let Some(input) = stdin {
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(input.as_bytes())
            .expect("write stdin");
    } else {
        drop(child.stdin.take());
    }
    let out = child.wait_with_output().expect("wait dpkg");
    assert!(out.status.success(), "dpkg {args:?}: {out:?}");
}

/// Builds plain packages (no scripts) named `names` at `version` in `work`
/// and installs them into the private root at `root` with dpkg.
pub fn install_plain(work: &Path, root: &Path, names: &[&str], version: &str) {
    let debs: Vec<String> = names
        .iter()
        .map(|name| {
            let deb = Deb {
                name,
                version,
                extra: "",
                preinst: None,
            };
            build_deb(work, &deb).display().to_string()
        })
        .collect();
    let mut args = vec!["--install"];
    args.extend(debs.iter().map(String::as_str));
    dpkg(root, &args, None);
}

/// Puts `/bin/sh` and `sleep` with the libraries they load into `root`, so
/// maintainer scripts can run there (dpkg chroots into the root it manages
/// to run them).
pub fn add_shell(root: &Path) {
    for (from, to) in [("/bin/dash", "bin/sh"), ("/bin/sleep", "bin/sleep")] {
        copy_with_libraries(Path::new(from), &root.join(to), root);
    }
}

fn copy_with_libraries(program: &Path, to: &Path, root: &Path) {
    std::fs::create_dir_all(to.parent().expect("parent")).expect("mkdir");
    std::fs::copy(program, to).unwrap_or_else(|e| panic!("copy {}: {e}", program.display()));
    let ldd = run(Command::new("ldd").arg(program));
    for line in String::from_utf8_lossy(&ldd.stdout).lines() {
        // "libc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x...)" or
        // "/lib64/ld-linux-x86-64.so.2 (0x...)".
        let path = match line.split_once("=>") {
            Some((_, rest)) => rest.split_whitespace().next(),
            None => line.split_whitespace().next(),
        };
        let Some(path) = path.filter(|p| p.starts_with('/')) else {
            continue;
        };
        let target = root.join(path.trim_start_matches('/'));
        std::fs::create_dir_all(target.parent().expect("parent")).expect("mkdir");
        // Resolve symlinks: the root gets the file itself under the name
        // the program asks for.
        std::fs::copy(path, &target).unwrap_or_else(|e| panic!("copy {path}: {e}"));
    }
}

/// The Release fields of the tests' repositories: origin `Palisade`, and
/// the suite `stable-security` labelled `Palisade-Security`, as Debian
/// labels its security archive.
pub fn suite_fields(suite: &str) -> Vec<String> {
    let label = if suite == "stable-security" {
        "Palisade-Security"
    } else {
        "Palisade"
    };
    vec![
        "Origin=Palisade".to_owned(),
        format!("Label={label}"),
        format!("Suite={suite}"),
        format!("Codename={suite}"),
        "Architectures=amd64 all".to_owned(),
        "Components=main".to_owned(),
    ]
}

/// Whether this machine can run apt and dpkg on a root a test made, as
/// control does: root (dpkg chroots into the root for maintainer scripts),
/// apt-get, dpkg-deb, apt-ftparchive and ldd ([`add_shell`]). Without them
/// a test says so and passes, except under `CI=true`, where it fails.
pub fn can_manage_roots() -> bool {
    if !nix::unistd::geteuid().is_root() {
        assert!(!crate::is_ci(), "CI runs as root and must run this test");
        eprintln!("not root: skipping");
        return false;
    }
    for tool in ["apt-get", "dpkg-deb", "apt-ftparchive", "ldd"] {
        let found = Command::new("sh")
            .args(["-c", &format!("command -v {tool}")])
            .output()
            .is_ok_and(|o| o.status.success());
        if !found {
            assert!(!crate::is_ci(), "{tool} is missing under CI");
            eprintln!("{tool} is missing: skipping");
            return false;
        }
    }
    true
}
