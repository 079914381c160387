//! The packaging test, one sequence that builds once and checks everything
//! an operator relies on. `cargo xtask test` runs it as its `packages` step.
//!
//! 1. `dist` with a throwaway key the test creates (an armored secret key
//!    file with a passphrase, as an operator would hand one over): lintian
//!    reports no error, `rpm -Kv` shows a good signature line for each RPM,
//!    gpgv accepts `InRelease`, `Release.gpg` and `SHA256SUMS.asc`, and
//!    `sha256sum -c` accepts `SHA256SUMS`.
//! 2. A fresh Debian root (debootstrap, cached): apt refuses the repository
//!    with a tampered `InRelease`, then installs both packages from the
//!    genuine one with `signed-by`. Users, directories, modes, conffile and
//!    units are checked; `systemd-analyze verify` prints nothing and
//!    `systemd-analyze security --offline=yes` stays within each unit's
//!    exposure budget; the binaries run: `--version`, the backend started as
//!    its unit starts it answers `/healthz`, an agent enrolls with a token and
//!    runs with its children from `/usr/libexec/palisade`.
//! 3. `dist --unsigned` gives unsigned artifacts and says so.
//! 4. Reproducibility: a copy of the sources at another path, built from
//!    clean in another target directory and signed with the same key taken
//!    from a keyring by id, gives byte-identical binaries and artifacts.
//!
//! Needs root (debootstrap, chroot, mount). Under CI it fails without root;
//! elsewhere it says loudly that it skipped.

use std::io::{BufRead, BufReader};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

use super::chroot::{self, DebianRoot};
use super::files::{self, PrivateDir};
use super::gpg::{self, Signing, ThrowawayKey};
use super::{Artifacts, Build, PACKAGES, tools};
use crate::util::{self, heading, is_ci};

/// The system users the packages create, and whose group is their own.
const SYSTEM_USERS: [&str; 4] = [
    "palisade-agent",
    "palisade-collector",
    "palisade-monitor",
    "palisade-backend",
];

/// The agent's children, which the platform starts from the libexec dir.
const AGENT_CHILDREN: [&str; 3] = [
    "palisade-agent-collector",
    "palisade-agent-monitor",
    "palisade-agent-control",
];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    File,
    Dir,
    Symlink,
}

/// What must be on disk after installing both packages:
/// (path, kind, owner, group, mode).
const INSTALLED: &[(&str, Kind, &str, &str, u32)] = &[
    ("/usr/bin/palisade-agent", Kind::File, "root", "root", 0o755),
    ("/usr/libexec/palisade", Kind::Dir, "root", "root", 0o755),
    (
        "/usr/libexec/palisade/palisade-agent-collector",
        Kind::File,
        "root",
        "root",
        0o755,
    ),
    (
        "/usr/libexec/palisade/palisade-agent-monitor",
        Kind::File,
        "root",
        "root",
        0o755,
    ),
    (
        "/usr/libexec/palisade/palisade-agent-control",
        Kind::File,
        "root",
        "root",
        0o755,
    ),
    (
        "/usr/bin/palisade-backend",
        Kind::File,
        "root",
        "root",
        0o755,
    ),
    (
        "/etc/palisade/backend.toml",
        Kind::File,
        "root",
        "palisade-backend",
        0o640,
    ),
    (
        "/var/lib/palisade-backend",
        Kind::Dir,
        "palisade-backend",
        "palisade-backend",
        0o700,
    ),
    (
        "/var/lib/palisade-agent",
        Kind::Dir,
        "root",
        "palisade-agent",
        0o1770,
    ),
    (
        "/usr/lib/systemd/system/palisade-agent.service",
        Kind::File,
        "root",
        "root",
        0o644,
    ),
    (
        "/usr/lib/systemd/system/palisade-backend.service",
        Kind::File,
        "root",
        "root",
        0o644,
    ),
    (
        "/usr/lib/sysusers.d/palisade-agent.conf",
        Kind::File,
        "root",
        "root",
        0o644,
    ),
    (
        "/usr/lib/sysusers.d/palisade-backend.conf",
        Kind::File,
        "root",
        "root",
        0o644,
    ),
    (
        "/usr/lib/tmpfiles.d/palisade-agent.conf",
        Kind::File,
        "root",
        "root",
        0o644,
    ),
    (
        "/usr/lib/tmpfiles.d/palisade-backend.conf",
        Kind::File,
        "root",
        "root",
        0o644,
    ),
    (
        "/etc/systemd/system/multi-user.target.wants/palisade-agent.service",
        Kind::Symlink,
        "root",
        "root",
        0o777,
    ),
    (
        "/etc/systemd/system/multi-user.target.wants/palisade-backend.service",
        Kind::Symlink,
        "root",
        "root",
        0o777,
    ),
];

/// How long a started process may take to show what is expected of it.
const STARTUP_DEADLINE: Duration = Duration::from_secs(60);

/// Durations of the phases, for the closing summary.
struct Timings(Vec<(&'static str, Duration)>);

impl Timings {
    fn time<T>(
        &mut self,
        phase: &'static str,
        f: impl FnOnce() -> anyhow::Result<T>,
    ) -> anyhow::Result<T> {
        let started = Instant::now();
        let result = f().with_context(|| format!("packaging test: {phase}"));
        self.0.push((phase, started.elapsed()));
        result
    }
}

pub fn run() -> anyhow::Result<()> {
    if !nix::unistd::geteuid().is_root() {
        if is_ci() {
            bail!(
                "CI=true but not root: the packaging test needs root (debootstrap, chroot, \
                 mount) and must not be skipped in CI"
            );
        }
        println!();
        println!("!!! ------------------------------------------------------------------ !!!");
        println!("!!! SKIPPED: the packaging test needs root (debootstrap, chroot,       !!!");
        println!("!!! mount). Run `sudo -E cargo xtask test --only packages` to run it.  !!!");
        println!("!!! ------------------------------------------------------------------ !!!");
        println!();
        return Ok(());
    }
    let started = Instant::now();
    let mut t = Timings(Vec::new());
    let root = util::workspace_root();
    let target = util::target_dir();
    let work = target.join("dist-test");
    unmount_below(&work);
    if work.exists() {
        std::fs::remove_dir_all(&work)
            .with_context(|| format!("cannot remove {}", work.display()))?;
    }
    std::fs::create_dir_all(&work).with_context(|| format!("cannot create {}", work.display()))?;

    t.time("tools", || {
        let mut packages = tools::DIST_DEBIAN_PACKAGES.to_vec();
        packages.extend_from_slice(tools::TEST_DEBIAN_PACKAGES);
        tools::ensure_debian_packages(&packages)?;
        tools::ensure_cargo_tools()
    })?;
    let source_date_epoch = super::source_date_epoch(&root)?;
    let key = t.time("throwaway key", || ThrowawayKey::create(&work.join("key")))?;
    println!("throwaway signing key {}", key.fingerprint);

    let signed = t.time("signed build", || {
        super::build(&Build {
            root: root.clone(),
            target_dir: target.join("dist-build"),
            out_dir: work.join("signed"),
            signing: Signing::KeyFile {
                path: key.secret_key_file.clone(),
                passphrase_file: Some(key.passphrase_file.clone()),
            },
            source_date_epoch,
        })
    })?;

    let mut report = Vec::new();
    t.time("lintian", || lintian(&signed, &mut report))?;
    t.time("rpm signatures", || {
        rpm_signatures(&signed, &key, &work, &mut report)
    })?;
    t.time("gpgv", || gpgv_signatures(&signed))?;
    t.time("SHA256SUMS", || sha256sums(&signed))?;

    let cached = t.time("Debian root (debootstrap)", chroot::cached_root)?;
    {
        let mut debian = DebianRoot::fresh(&cached, &work.join("debian-root"))?;
        t.time("tampered InRelease", || {
            tampered_repository_is_refused(&debian, &signed)
        })?;
        t.time("apt install", || apt_install(&debian, &signed))?;
        t.time("installed files", || installed_files(&debian))?;
        t.time("systemd units", || systemd_units(&debian, &mut report))?;
        t.time("binaries run", || binaries_run(&mut debian, &work))?;
    }

    let unsigned = t.time("unsigned build", || {
        super::build(&Build {
            root: root.clone(),
            target_dir: target.join("dist-build"),
            out_dir: work.join("unsigned"),
            signing: Signing::Unsigned,
            source_date_epoch,
        })
    })?;
    t.time("unsigned artifacts", || unsigned_artifacts(&unsigned))?;

    let second_checkout = work.join("second-checkout");
    let copied = files::copy_source_tree(&root, &second_checkout)?;
    println!(
        "copied {copied} source files to {}",
        second_checkout.display()
    );
    let keyring = key.import_into_keyring()?;
    let second = t.time("second build from clean", || {
        super::build(&Build {
            root: second_checkout.clone(),
            target_dir: second_checkout.join("target/dist-build"),
            out_dir: work.join("second"),
            signing: Signing::KeyId {
                id: key.fingerprint.clone(),
                gnupg_home: Some(keyring.path().to_owned()),
                passphrase_file: Some(key.passphrase_file.clone()),
            },
            source_date_epoch,
        })
    })?;
    t.time("reproducibility", || {
        identical(&signed, &second, &mut report)
    })?;
    // The throwaway key is worthless, but secret keys are not left lying
    // around; nor is the second checkout's gigabyte of build output.
    drop(keyring);
    for done in [work.join("key"), second_checkout] {
        std::fs::remove_dir_all(&done)
            .with_context(|| format!("cannot remove {}", done.display()))?;
    }

    heading("packaging test: passed");
    for line in &report {
        println!("{line}");
    }
    println!();
    for (phase, took) in &t.0 {
        println!("{:>8.1} s  {phase}", took.as_secs_f64());
    }
    println!(
        "packaging test passed in {:.0} s",
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

/// A command's exit status, stdout and stderr, whatever the status.
fn capture(cmd: &mut Command) -> anyhow::Result<(ExitStatus, String, String)> {
    let line = util::display(cmd);
    println!("$ {line}");
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("cannot run `{line}`"))?;
    Ok((
        out.status,
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    ))
}

/// Unmounts whatever a previous, interrupted run left mounted below `dir`
/// (the Debian root's /proc), so that removing `dir` cannot reach into it.
fn unmount_below(dir: &Path) {
    let Ok(dir) = std::path::absolute(dir) else {
        return;
    };
    let Ok(mounts) = std::fs::read_to_string("/proc/self/mountinfo") else {
        return;
    };
    for line in mounts.lines() {
        if let Some(point) = line.split(' ').nth(4)
            && Path::new(point).starts_with(&dir)
        {
            let _ = util::output(Command::new("umount").arg("-l").arg(point));
        }
    }
}

fn lintian(a: &Artifacts, report: &mut Vec<String>) -> anyhow::Result<()> {
    heading("lintian");
    let (status, stdout, stderr) = capture(
        Command::new("lintian")
            .args(["--display-info", "--fail-on", "error"])
            .args(&a.debs),
    )?;
    print!("{stdout}");
    let tags: Vec<&str> = stdout
        .lines()
        .filter(|l| l.len() > 2 && l.as_bytes()[1] == b':')
        .collect();
    let errors: Vec<&&str> = tags.iter().filter(|l| l.starts_with("E:")).collect();
    if !status.success() || !errors.is_empty() {
        bail!(
            "lintian reports errors ({status}):\n{}\n{}",
            stdout.trim_end(),
            stderr.trim_end()
        );
    }
    report.push(format!(
        "lintian: no error; {} other tag(s){}",
        tags.len(),
        if tags.is_empty() {
            String::new()
        } else {
            format!(": {}", tags.join("; "))
        }
    ));
    Ok(())
}

fn rpm_signatures(
    a: &Artifacts,
    key: &ThrowawayKey,
    work: &Path,
    report: &mut Vec<String>,
) -> anyhow::Result<()> {
    heading("rpm -Kv");
    let dbpath = work.join("rpmdb");
    std::fs::create_dir_all(&dbpath)
        .with_context(|| format!("cannot create {}", dbpath.display()))?;
    util::run(
        Command::new("rpmkeys")
            .arg("--dbpath")
            .arg(&dbpath)
            .arg("--import")
            .arg(a.out_dir.join(gpg::RPM_KEY_FILE)),
    )?;
    let short_id = key.fingerprint[key.fingerprint.len() - 8..].to_lowercase();
    for rpm in &a.rpms {
        // rpm -K exits 0 for an unsigned package too: read the lines.
        let (_, stdout, stderr) = capture(
            Command::new("rpm")
                .arg("--dbpath")
                .arg(&dbpath)
                .arg("-Kv")
                .arg(rpm),
        )?;
        print!("{stdout}");
        let signature = stdout
            .lines()
            .map(str::trim)
            .find(|l| l.contains("Signature, key ID"))
            .with_context(|| {
                format!(
                    "rpm -Kv shows no signature for {}:\n{stdout}{stderr}",
                    rpm.display()
                )
            })?;
        let good = signature.starts_with("Header V4 RSA/SHA")
            && signature.ends_with(&format!("key ID {short_id}: OK"));
        if !good || stdout.contains("NOT OK") || stdout.contains("NOKEY") {
            bail!("{} is not signed by {short_id}:\n{stdout}", rpm.display());
        }
        report.push(format!(
            "rpm -Kv {}: {signature}",
            super::file_name(rpm).to_string_lossy()
        ));
    }
    Ok(())
}

/// gpgv with only the exported public key as keyring.
fn gpgv(keyring: &Path, signature: &Path, data: Option<&Path>) -> anyhow::Result<(bool, String)> {
    let home = PrivateDir::new("palisade-gpgv")?;
    let mut cmd = Command::new("gpgv");
    cmd.arg("--homedir")
        .arg(home.path())
        .arg("--keyring")
        .arg(keyring)
        .arg(signature);
    if let Some(data) = data {
        cmd.arg(data);
    }
    let (status, _, stderr) = capture(&mut cmd)?;
    Ok((
        status.success() && stderr.contains("Good signature"),
        stderr,
    ))
}

fn gpgv_signatures(a: &Artifacts) -> anyhow::Result<()> {
    heading("gpgv");
    let keyring = a.out_dir.join(gpg::APT_KEYRING_FILE);
    let suite = a.apt_repo.join("dists").join(super::apt::SUITE);
    let sums = a.out_dir.join("SHA256SUMS");
    let checks = [
        (suite.join("InRelease"), None),
        (suite.join("Release.gpg"), Some(suite.join("Release"))),
        (a.out_dir.join("SHA256SUMS.asc"), Some(sums.clone())),
    ];
    for (signature, data) in &checks {
        let (good, stderr) = gpgv(&keyring, signature, data.as_deref())?;
        print!("{stderr}");
        if !good {
            bail!("gpgv does not accept {}:\n{stderr}", signature.display());
        }
    }
    // The same check refuses a changed file: it can fail.
    let tampered = a.out_dir.join("SHA256SUMS.tampered");
    let mut text = std::fs::read_to_string(&sums).context("cannot read SHA256SUMS")?;
    text.push_str("0000000000000000000000000000000000000000000000000000000000000000  evil.deb\n");
    std::fs::write(&tampered, text).context("cannot write the tampered SHA256SUMS")?;
    let (good, _) = gpgv(&keyring, &a.out_dir.join("SHA256SUMS.asc"), Some(&tampered))?;
    std::fs::remove_file(&tampered).context("cannot remove the tampered SHA256SUMS")?;
    if good {
        bail!("gpgv accepted a SHA256SUMS with a line added: the signature check proves nothing");
    }
    println!("gpgv refuses a SHA256SUMS with a line added, as it must");
    Ok(())
}

fn sha256sums(a: &Artifacts) -> anyhow::Result<()> {
    heading("sha256sum -c");
    let text =
        std::fs::read_to_string(a.out_dir.join("SHA256SUMS")).context("cannot read SHA256SUMS")?;
    let listed: Vec<String> = text
        .lines()
        .filter_map(|l| l.split_once("  ").map(|(_, f)| f.to_owned()))
        .collect();
    let expected: Vec<String> = files::list(&a.out_dir)?
        .into_iter()
        .map(|p| p.to_string_lossy().into_owned())
        .filter(|p| p != "SHA256SUMS" && p != "SHA256SUMS.asc")
        .collect();
    if listed != expected {
        bail!("SHA256SUMS lists {listed:?}, but the artifacts are {expected:?}");
    }
    util::run(Command::new("sha256sum").current_dir(&a.out_dir).args([
        "--check",
        "--strict",
        "--quiet",
        "SHA256SUMS",
    ]))?;
    println!(
        "SHA256SUMS covers all {} artifacts and matches them",
        listed.len()
    );
    Ok(())
}

/// The sources entry an operator writes (docs/install.md), for a
/// repository at `dir` inside the root.
fn sources_entry(dir: &str) -> String {
    format!(
        "Types: deb\nURIs: file:{dir}\nSuites: {}\nComponents: {}\nSigned-By: /usr/share/keyrings/{}\n",
        super::apt::SUITE,
        super::apt::COMPONENT,
        gpg::APT_KEYRING_FILE
    )
}

/// Puts the repository, its key and a sources entry into the root; apt sees
/// no other repository (nothing is fetched from the network).
fn add_repository(
    debian: &DebianRoot,
    repo: &Path,
    keyring: &Path,
    dir: &str,
) -> anyhow::Result<()> {
    let dest = debian.host_path(dir);
    if dest.exists() {
        std::fs::remove_dir_all(&dest)
            .with_context(|| format!("cannot remove {}", dest.display()))?;
    }
    if let Some(parent) = dest.parent() {
        std::fs::create_dir_all(parent)
            .with_context(|| format!("cannot create {}", parent.display()))?;
    }
    util::output(Command::new("cp").arg("-a").arg(repo).arg(&dest))?;
    // The repository must be readable by apt's unprivileged `_apt` user.
    util::output(Command::new("chmod").args(["-R", "a+rX"]).arg(&dest))?;
    let keyrings = debian.host_path("/usr/share/keyrings");
    std::fs::create_dir_all(&keyrings)
        .with_context(|| format!("cannot create {}", keyrings.display()))?;
    std::fs::copy(keyring, keyrings.join(gpg::APT_KEYRING_FILE))
        .context("cannot install the keyring")?;
    let _ = std::fs::remove_file(debian.host_path("/etc/apt/sources.list"));
    let sources = debian.host_path("/etc/apt/sources.list.d/palisade.sources");
    std::fs::write(&sources, sources_entry(dir))
        .with_context(|| format!("cannot write {}", sources.display()))?;
    // Forget what a previous `apt-get update` knew.
    let lists = debian.host_path("/var/lib/apt/lists");
    for entry in std::fs::read_dir(&lists).into_iter().flatten().flatten() {
        if entry.path().is_file() {
            let _ = std::fs::remove_file(entry.path());
        }
    }
    Ok(())
}

fn tampered_repository_is_refused(debian: &DebianRoot, a: &Artifacts) -> anyhow::Result<()> {
    heading("apt refuses a tampered InRelease");
    let dir = "/srv/palisade-apt-tampered";
    add_repository(
        debian,
        &a.apt_repo,
        &a.out_dir.join(gpg::APT_KEYRING_FILE),
        dir,
    )?;
    // What an attacker between operator and mirror would do: point the
    // signed index at other package lists.
    let in_release = debian.host_path(&format!("{dir}/dists/{}/InRelease", super::apt::SUITE));
    let text = std::fs::read_to_string(&in_release).context("cannot read InRelease")?;
    let tampered =
        tamper_first_sha256(&text).context("InRelease has no SHA256 entry to tamper with")?;
    std::fs::write(&in_release, tampered).context("cannot write the tampered InRelease")?;

    let (status, stdout, stderr) = capture(debian.command("apt-get").arg("update"))?;
    print!("{stdout}{stderr}");
    if status.success() || !stderr.contains("BADSIG") {
        bail!("apt-get update did not refuse the tampered InRelease ({status})");
    }
    let policy = util::output(
        debian
            .command("apt-cache")
            .args(["policy", "palisade-backend"]),
    )?;
    if policy.contains("Candidate: 0") || policy.contains("Candidate: 1") {
        bail!("apt offers palisade-backend from the tampered repository:\n{policy}");
    }
    println!("apt refused the repository (BADSIG) and offers nothing from it");
    Ok(())
}

/// Changes the first hash in the SHA256 section of a Release text.
fn tamper_first_sha256(text: &str) -> Option<String> {
    let start = text.find("\nSHA256:\n")? + "\nSHA256:\n".len();
    let hash_at = start + text[start..].find(|c: char| c.is_ascii_hexdigit())?;
    let old = text[hash_at..].chars().next()?;
    let new = if old == '0' { '1' } else { '0' };
    let mut out = text.to_owned();
    out.replace_range(hash_at..hash_at + 1, &new.to_string());
    Some(out)
}

fn apt_install(debian: &DebianRoot, a: &Artifacts) -> anyhow::Result<()> {
    heading("apt install from the signed repository");
    add_repository(
        debian,
        &a.apt_repo,
        &a.out_dir.join(gpg::APT_KEYRING_FILE),
        "/srv/palisade-apt",
    )?;
    util::run(debian.command("apt-get").arg("update"))?;
    util::run(debian.command("apt-get").args([
        // No pseudo-terminal in the root: do not try to log through one.
        "-o",
        "Dpkg::Use-Pty=0",
        "install",
        "-y",
        "--no-install-recommends",
        "palisade-agent",
        "palisade-backend",
    ]))?;
    let installed = util::output(debian.command("dpkg-query").args([
        "-W",
        "-f=${Package} ${Version} ${Status}\n",
        "palisade-agent",
        "palisade-backend",
    ]))?;
    print!("{installed}");
    if installed
        .lines()
        .filter(|l| l.ends_with("install ok installed"))
        .count()
        != 2
    {
        bail!("both packages should be installed:\n{installed}");
    }
    Ok(())
}

fn installed_files(debian: &DebianRoot) -> anyhow::Result<()> {
    heading("users, directories, permissions, units, binaries");
    let accounts = debian.accounts()?;
    for name in SYSTEM_USERS {
        let user = accounts
            .users
            .get(name)
            .with_context(|| format!("the packages did not create the user {name}"))?;
        let gid = accounts.gid(name)?;
        if !(1..1000).contains(&user.uid) || user.gid != gid || !user.shell.ends_with("nologin") {
            bail!(
                "{name} is not a system user with its own group and no shell: {user:?}, group {gid}"
            );
        }
        println!(
            "user {name}: uid {} gid {} shell {}",
            user.uid, user.gid, user.shell
        );
    }
    let mut problems = Vec::new();
    for &(path, kind, owner, group, mode) in INSTALLED {
        let host = debian.host_path(path);
        let meta = match std::fs::symlink_metadata(&host) {
            Ok(meta) => meta,
            Err(e) => {
                problems.push(format!("{path}: {e}"));
                continue;
            }
        };
        let actual_kind = if meta.file_type().is_symlink() {
            Kind::Symlink
        } else if meta.is_dir() {
            Kind::Dir
        } else {
            Kind::File
        };
        let (uid, gid) = (accounts.uid(owner)?, accounts.gid(group)?);
        let actual_mode = meta.mode() & 0o7777;
        if actual_kind != kind || meta.uid() != uid || meta.gid() != gid || actual_mode != mode {
            problems.push(format!(
                "{path}: {actual_kind:?} {}:{} {actual_mode:o}, want {kind:?} {owner}:{group} {mode:o}",
                meta.uid(),
                meta.gid()
            ));
        } else {
            println!("ok {path} {owner}:{group} {mode:o}");
        }
    }
    if !problems.is_empty() {
        bail!(
            "installed files are not as they should be:\n  {}",
            problems.join("\n  ")
        );
    }
    let conffiles = util::output(debian.command("dpkg-query").args([
        "-W",
        "-f=${Conffiles}",
        "palisade-backend",
    ]))?;
    if !conffiles.contains("/etc/palisade/backend.toml ") {
        bail!("/etc/palisade/backend.toml is not a conffile of palisade-backend: {conffiles:?}");
    }
    println!("conffile: /etc/palisade/backend.toml");
    // Readable by the service, by no one else.
    util::output(
        debian
            .command_as("palisade-backend", "palisade-backend", "cat")
            .arg("/etc/palisade/backend.toml"),
    )
    .context("the palisade-backend user cannot read its configuration")?;
    if util::succeeds(
        debian
            .command_as("nobody", "nogroup", "cat")
            .arg("/etc/palisade/backend.toml"),
    ) {
        bail!("an unrelated user (nobody) can read /etc/palisade/backend.toml");
    }
    println!("backend.toml: readable by palisade-backend, not by nobody");
    Ok(())
}

fn systemd_units(debian: &DebianRoot, report: &mut Vec<String>) -> anyhow::Result<()> {
    heading("systemd-analyze verify and security");
    for package in PACKAGES {
        let (status, stdout, stderr) = capture(
            Command::new("systemd-analyze")
                .arg("verify")
                .arg(format!("--root={}", debian.path().display()))
                .arg(package.unit),
        )?;
        let said = format!("{stdout}{stderr}");
        if !status.success() || !said.trim().is_empty() {
            bail!(
                "systemd-analyze verify {} is not clean ({status}):\n{said}",
                package.unit
            );
        }
        println!("verify {}: clean", package.unit);

        let (status, stdout, stderr) = capture(
            Command::new("systemd-analyze")
                .args(["security", "--offline=yes", "--no-pager"])
                .arg(format!("--root={}", debian.path().display()))
                .arg(package.unit),
        )?;
        let said = format!("{stdout}{stderr}");
        let exposure = overall_exposure(&said).with_context(|| {
            format!(
                "systemd-analyze security {} printed no overall exposure ({status}):\n{said}",
                package.unit
            )
        })?;
        for line in said.lines().filter(|l| l.starts_with('✗')) {
            println!("  {line}");
        }
        if exposure > package.max_exposure {
            bail!(
                "{} has exposure {exposure:.1}, above its budget of {:.1}:\n{said}",
                package.unit,
                package.max_exposure
            );
        }
        report.push(format!(
            "systemd-analyze security {}: exposure {exposure:.1} (budget {:.1})",
            package.unit, package.max_exposure
        ));
    }
    Ok(())
}

/// The number in `→ Overall exposure level for x.service: 1.2 OK`.
fn overall_exposure(output: &str) -> Option<f64> {
    let line = output
        .lines()
        .find(|l| l.contains("Overall exposure level for"))?;
    let after = line.rsplit_once(": ")?.1;
    after.split_whitespace().next()?.parse().ok()
}

/// How a unit starts its process: the `ExecStart=` words, `User=`,
/// `Group=`, `Environment=` pairs, and the two restrictions a process can be
/// given without systemd (`NoNewPrivileges=`, `CapabilityBoundingSet=`), as
/// our units spell them: no quoting, one assignment per line.
#[derive(Debug, Default, PartialEq)]
struct UnitStart {
    exec: Vec<String>,
    user: Option<String>,
    group: Option<String>,
    environment: Vec<(String, String)>,
    no_new_privileges: bool,
    /// `Some(caps)` when the unit sets a bounding set (empty: none at all).
    bounding_set: Option<Vec<String>>,
}

fn parse_unit(text: &str) -> UnitStart {
    let mut unit = UnitStart::default();
    for line in text.lines().map(str::trim) {
        if let Some(v) = line.strip_prefix("ExecStart=") {
            unit.exec = v.split_whitespace().map(str::to_owned).collect();
        } else if let Some(v) = line.strip_prefix("User=") {
            unit.user = Some(v.to_owned());
        } else if let Some(v) = line.strip_prefix("Group=") {
            unit.group = Some(v.to_owned());
        } else if let Some(v) = line.strip_prefix("Environment=")
            && let Some((k, val)) = v.split_once('=')
        {
            unit.environment.push((k.to_owned(), val.to_owned()));
        } else if let Some(v) = line.strip_prefix("NoNewPrivileges=") {
            unit.no_new_privileges = matches!(v, "yes" | "true" | "on" | "1");
        } else if let Some(v) = line.strip_prefix("CapabilityBoundingSet=") {
            unit.bounding_set = Some(v.split_whitespace().map(str::to_owned).collect());
        }
    }
    unit
}

fn installed_unit(debian: &DebianRoot, unit: &str) -> anyhow::Result<UnitStart> {
    let path = debian.host_path(&format!("/usr/lib/systemd/system/{unit}"));
    let text = std::fs::read_to_string(&path)
        .with_context(|| format!("cannot read {}", path.display()))?;
    let start = parse_unit(&text);
    if start.exec.is_empty() {
        bail!("{unit} has no ExecStart=");
    }
    Ok(start)
}

/// A command that starts `unit` the way systemd would, as far as setpriv
/// can: its user and group, no new privileges, its capability bounding set,
/// its environment and command line; plus `extra` arguments. (The rest of
/// the sandbox needs systemd itself; `systemd-analyze` checks it.)
fn unit_command(debian: &DebianRoot, unit: &UnitStart, extra: &[&str]) -> anyhow::Result<Command> {
    let mut cmd = debian.command("setpriv");
    if let Some(user) = &unit.user {
        let group = unit.group.as_deref().unwrap_or(user);
        cmd.arg(format!("--reuid={user}"))
            .arg(format!("--regid={group}"))
            .arg("--init-groups");
    }
    if unit.no_new_privileges {
        cmd.arg("--no-new-privs");
    }
    if let Some(caps) = &unit.bounding_set {
        cmd.arg(format!("--bounding-set={}", setpriv_caps(caps)?));
    }
    cmd.arg("--").args(&unit.exec).args(extra);
    for (k, v) in &unit.environment {
        cmd.env(k, v);
    }
    Ok(cmd)
}

/// A unit's `CapabilityBoundingSet=` list as setpriv spells a bounding set:
/// `-all` and then each capability kept.
fn setpriv_caps(caps: &[String]) -> anyhow::Result<String> {
    let mut spec = "-all".to_owned();
    for cap in caps {
        let Some(name) = cap.strip_prefix("CAP_") else {
            bail!(
                "CapabilityBoundingSet={cap}: only a plain list of CAP_ names is understood here"
            );
        };
        spec.push_str(",+");
        spec.push_str(&name.to_lowercase());
    }
    Ok(spec)
}

fn binaries_run(debian: &mut DebianRoot, work: &Path) -> anyhow::Result<()> {
    heading("the installed binaries run");
    for program in ["palisade-agent", "palisade-backend"] {
        let version = util::output(debian.command(program).arg("--version"))?;
        if !version.starts_with(&format!("{program} ")) {
            bail!("`{program} --version` printed {version:?}");
        }
        print!("{version}");
    }

    // The backend, as its unit starts it, on a free loopback port instead of
    // 0.0.0.0:8443 (the root shares this machine's network).
    let backend_unit = installed_unit(debian, "palisade-backend.service")?;
    let backend_log = work.join("backend.log");
    let log = std::fs::File::create(&backend_log).context("cannot create backend.log")?;
    let mut cmd = unit_command(debian, &backend_unit, &["--listen", "127.0.0.1:0"])?;
    cmd.stdout(Stdio::piped()).stderr(log);
    let backend = debian.spawn(&mut cmd)?;
    let stdout = backend
        .stdout
        .take()
        .context("no stdout from the backend")?;
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let addr = wait_for_line(&rx, "listening on ", STARTUP_DEADLINE).with_context(|| {
        format!(
            "the backend did not start; its log:\n{}",
            util::tail(&backend_log, 30)
        )
    })?;
    println!("backend listening on {addr}");
    let health = util::output(
        debian
            .command("curl")
            .args(["-fsSk", &format!("https://{addr}/healthz")]),
    )?;
    if !health.contains("\"status\":\"ok\"") {
        bail!("/healthz answered {health:?}");
    }
    println!("/healthz: {}", health.trim());

    // The enrollment docs/install.md describes.
    let token = util::output_line(&mut unit_command(
        debian,
        &UnitStart {
            exec: vec!["/usr/bin/palisade-backend".into()],
            ..backend_unit
        },
        &[
            "--config",
            "/etc/palisade/backend.toml",
            "token",
            "create",
            "--expires",
            "1h",
        ],
    )?)
    .context("cannot create an enrollment token as the palisade-backend user")?;
    let agent_id = util::output_line(
        debian
            .command("palisade-agent")
            .args(["enroll", "--server", &addr])
            .env("PALISADE_ENROLL_TOKEN", token),
    )
    .context("the agent cannot enroll")?;
    println!("agent enrolled as {agent_id}");
    if !debian
        .host_path("/var/lib/palisade-agent/identity.redb")
        .is_file()
    {
        bail!("enrollment wrote no /var/lib/palisade-agent/identity.redb (the unit's condition)");
    }

    // The agent, as its unit starts it: its children must come from the
    // packaged libexec directory and stay up.
    let agent_unit = installed_unit(debian, "palisade-agent.service")?;
    let agent_log = work.join("agent.log");
    let log = std::fs::File::create(&agent_log).context("cannot create agent.log")?;
    let mut cmd = unit_command(debian, &agent_unit, &[])?;
    cmd.stdout(Stdio::null()).stderr(log);
    let platform_pid = debian.spawn(&mut cmd)?.id();
    let wanted: Vec<PathBuf> = AGENT_CHILDREN
        .iter()
        .map(|c| debian.host_path(&format!("/usr/libexec/palisade/{c}")))
        .collect();
    let deadline = Instant::now() + STARTUP_DEADLINE;
    loop {
        let running: Vec<PathBuf> = debian.processes().into_iter().map(|(_, exe)| exe).collect();
        if wanted.iter().all(|w| running.contains(w)) {
            break;
        }
        if Instant::now() > deadline {
            bail!(
                "the agent's children did not all start from /usr/libexec/palisade (running: {running:?}); its log:\n{}",
                util::tail(&agent_log, 30)
            );
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    // Still up a moment later: not crashing in a restart loop.
    std::thread::sleep(Duration::from_secs(3));
    let running: Vec<(i32, PathBuf)> = debian.processes();
    let platform_alive = running
        .iter()
        .any(|(pid, _)| u32::try_from(*pid).is_ok_and(|p| p == platform_pid))
        || running
            .iter()
            .any(|(_, exe)| *exe == debian.host_path("/usr/bin/palisade-agent"));
    if !platform_alive
        || !wanted
            .iter()
            .all(|w| running.iter().any(|(_, exe)| exe == w))
    {
        bail!(
            "the agent did not stay up with its children; its log:\n{}",
            util::tail(&agent_log, 30)
        );
    }
    println!("agent running with its three children from /usr/libexec/palisade");
    Ok(())
}

/// Waits for a line starting with `prefix`; returns the rest of it.
fn wait_for_line(
    rx: &mpsc::Receiver<String>,
    prefix: &str,
    within: Duration,
) -> anyhow::Result<String> {
    let deadline = Instant::now() + within;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(line) => {
                if let Some(rest) = line.strip_prefix(prefix) {
                    return Ok(rest.trim().to_owned());
                }
            }
            Err(mpsc::RecvTimeoutError::Timeout) => bail!("no {prefix:?} line within {within:?}"),
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                bail!("the process exited before printing {prefix:?}")
            }
        }
    }
}

fn unsigned_artifacts(u: &Artifacts) -> anyhow::Result<()> {
    heading("unsigned artifacts are unsigned, and say so");
    if !u.out_dir.join("UNSIGNED").is_file() {
        bail!("an unsigned build has no UNSIGNED notice");
    }
    let suite = u.apt_repo.join("dists").join(super::apt::SUITE);
    for signed in [
        suite.join("InRelease"),
        suite.join("Release.gpg"),
        u.out_dir.join("SHA256SUMS.asc"),
        u.out_dir.join(gpg::APT_KEYRING_FILE),
    ] {
        if signed.exists() {
            bail!("an unsigned build produced {}", signed.display());
        }
    }
    for rpm in &u.rpms {
        let (_, stdout, _) = capture(Command::new("rpm").arg("-Kv").arg(rpm))?;
        if stdout.contains("Signature") {
            bail!("an unsigned build produced a signed RPM:\n{stdout}");
        }
    }
    println!("no signatures, an UNSIGNED notice");
    Ok(())
}

fn identical(a: &Artifacts, b: &Artifacts, report: &mut Vec<String>) -> anyhow::Result<()> {
    heading("reproducibility: two builds, byte for byte");
    let mut differ = Vec::new();
    for (x, y) in a.binaries.iter().zip(&b.binaries) {
        if !same_bytes(x, y)? {
            differ.push(format!("binary {}", super::file_name(x).to_string_lossy()));
        }
    }
    let (la, lb) = (files::list(&a.out_dir)?, files::list(&b.out_dir)?);
    if la != lb {
        bail!("the two builds produced different files: {la:?} and {lb:?}");
    }
    for rel in &la {
        if !same_bytes(&a.out_dir.join(rel), &b.out_dir.join(rel))? {
            differ.push(rel.display().to_string());
        }
    }
    if !differ.is_empty() {
        bail!(
            "the builds differ in: {} (compare them with diffoscope: {} and {})",
            differ.join(", "),
            a.out_dir.display(),
            b.out_dir.display()
        );
    }
    report.push(format!(
        "reproducible: {} binaries and all {} artifacts byte-identical across two builds \
         (different checkout path, clean target directory, key from a file vs from a keyring)",
        a.binaries.len(),
        la.len()
    ));
    println!("{}", report.last().map(String::as_str).unwrap_or_default());
    Ok(())
}

fn same_bytes(a: &Path, b: &Path) -> anyhow::Result<bool> {
    let read = |p: &Path| std::fs::read(p).with_context(|| format!("cannot read {}", p.display()));
    Ok(read(a)? == read(b)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exposure_is_read_from_the_summary_line() {
        let out = "✗ PrivateNetwork= ... 0.5\n\n→ Overall exposure level for palisade-backend.service: 1.1 OK 🙂\n";
        assert_eq!(overall_exposure(out), Some(1.1));
        assert_eq!(overall_exposure("nothing"), None);
    }

    #[test]
    fn tampering_changes_one_hash_and_nothing_else() {
        let text = "Date: x\nSHA256:\n ab12 100 main/binary-amd64/Packages\n";
        let tampered = tamper_first_sha256(text).expect("has a hash");
        assert_eq!(
            tampered,
            "Date: x\nSHA256:\n 0b12 100 main/binary-amd64/Packages\n"
        );
        assert_eq!(tamper_first_sha256("no hashes"), None);
    }

    #[test]
    fn units_are_started_as_written() {
        let unit = parse_unit(
            "[Service]\nUser=palisade-backend\nGroup=palisade-backend\nExecStart=/usr/bin/palisade-backend serve --config /etc/palisade/backend.toml\nEnvironment=A=b\n",
        );
        assert_eq!(
            unit,
            UnitStart {
                exec: [
                    "/usr/bin/palisade-backend",
                    "serve",
                    "--config",
                    "/etc/palisade/backend.toml"
                ]
                .map(String::from)
                .to_vec(),
                user: Some("palisade-backend".into()),
                group: Some("palisade-backend".into()),
                environment: vec![("A".into(), "b".into())],
                no_new_privileges: false,
                bounding_set: None,
            }
        );
        let locked = parse_unit("NoNewPrivileges=yes\nCapabilityBoundingSet=\n");
        assert!(locked.no_new_privileges);
        assert_eq!(locked.bounding_set, Some(vec![]));
        assert_eq!(setpriv_caps(&[]).expect("valid"), "-all");
        assert_eq!(
            setpriv_caps(&["CAP_NET_BIND_SERVICE".into()]).expect("valid"),
            "-all,+net_bind_service"
        );
        assert!(setpriv_caps(&["~CAP_SYS_ADMIN".into()]).is_err());
    }

    /// The real units: every setting the test relies on is there.
    #[test]
    fn packaged_units_say_how_to_start() {
        let root = util::workspace_root();
        for package in PACKAGES {
            let path = root.join(package.packaging_dir).join(package.unit);
            let text = std::fs::read_to_string(&path).expect("unit file");
            let unit = parse_unit(&text);
            assert!(!unit.exec.is_empty(), "{}: ExecStart", path.display());
        }
        let agent = parse_unit(
            &std::fs::read_to_string(root.join("packaging/agent/palisade-agent.service"))
                .expect("agent unit"),
        );
        assert!(agent.environment.contains(&(
            "PALISADE_AGENT_LIBEXEC".to_owned(),
            "/usr/libexec/palisade".to_owned()
        )));
    }

    #[test]
    fn sources_entry_uses_signed_by() {
        let entry = sources_entry("/srv/repo");
        assert!(entry.contains("URIs: file:/srv/repo\n"));
        assert!(entry.contains("Signed-By: /usr/share/keyrings/palisade-archive-keyring.gpg\n"));
    }
}
