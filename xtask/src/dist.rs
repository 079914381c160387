//! `cargo xtask dist`: the release artifacts operators install.
//!
//! Under `target/dist/`: `palisade-agent` and `palisade-backend` as `.deb`
//! (cargo-deb) and `.rpm` (cargo-generate-rpm, signed with rpmsign), a signed
//! APT repository in `apt/`, the public key in the two forms APT and RPM take
//! it, and `SHA256SUMS` of every file with a detached signature.
//!
//! The packaging metadata lives beside each binary crate
//! (`[package.metadata.deb]` and `[package.metadata.generate-rpm]` in
//! `agent-platform/Cargo.toml` and `backend/Cargo.toml`); units, sysusers.d,
//! tmpfiles.d, the default configuration and maintainer scripts live in
//! `packaging/`. This module only drives the tools.
//!
//! Reproducible: with the same commit, toolchain and tool versions, two builds
//! give byte-identical files. Timestamps come from `SOURCE_DATE_EPOCH` (the
//! last commit's time unless set), build paths are remapped out of the
//! binaries, and signatures are dated too (see [`gpg`]). `cargo xtask test`
//! proves it by building twice ([`check`]).

mod apt;
pub mod check;
mod chroot;
mod files;
mod gpg;
pub mod tools;

use std::ffi::{OsStr, OsString};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use anyhow::{Context, bail};

use crate::util::{self, heading};

pub use gpg::Signing;

pub const USAGE: &str = "\
cargo xtask dist [--unsigned]

Builds release binaries and, under target/dist/: palisade-agent and
palisade-backend as .deb and .rpm, a signed APT repository (apt/), the
public key (palisade-archive-keyring.gpg for APT, RPM-GPG-KEY-palisade for
rpm), and SHA256SUMS with a detached signature (SHA256SUMS.asc).

The signing key comes from the environment; no key is ever kept in the tree:
  PALISADE_SIGNING_KEY            an armored secret key file, or the id,
                                  fingerprint or user id of a key in your
                                  GnuPG keyring (GNUPGHOME or ~/.gnupg)
  PALISADE_SIGNING_PASSPHRASE_FILE  a file holding the key's passphrase
                                  (otherwise gpg-agent asks, or the key has none)
Without a key, dist refuses to build. With --unsigned it builds explicitly
unsigned artifacts (no InRelease, unsigned RPMs, an UNSIGNED notice).

SOURCE_DATE_EPOCH, if set, dates everything; otherwise the last commit does.
Installs cargo-deb, cargo-generate-rpm and the Debian packages it needs
(rpm, apt-utils, gnupg) when they are missing.";

/// The environment variable naming the signing key.
pub const SIGNING_KEY_ENV: &str = "PALISADE_SIGNING_KEY";
/// The environment variable naming a file with the key's passphrase.
pub const PASSPHRASE_FILE_ENV: &str = "PALISADE_SIGNING_PASSPHRASE_FILE";

/// The crates whose binaries the packages contain.
const BINARY_CRATES: [&str; 5] = [
    "palisade-agent",
    "palisade-agent-collector",
    "palisade-agent-monitor",
    "palisade-agent-control",
    "palisade-backend",
];

/// One package: which crate carries its metadata, and its unit.
#[derive(Debug, Clone, Copy)]
pub struct Package {
    /// The package name, in both formats.
    pub name: &'static str,
    /// The crate's directory (cargo-generate-rpm's `-p` takes it).
    pub crate_dir: &'static str,
    /// The cargo package name (cargo-deb's `-p` takes it).
    pub cargo_package: &'static str,
    /// Its systemd unit.
    pub unit: &'static str,
    /// The highest `systemd-analyze security` exposure its unit may have.
    pub max_exposure: f64,
    /// Where, under `packaging/`, its unit, sysusers.d and tmpfiles.d files are.
    pub packaging_dir: &'static str,
}

pub const PACKAGES: [Package; 2] = [
    Package {
        name: "palisade-agent",
        crate_dir: "agent-platform",
        cargo_package: "palisade-agent",
        unit: "palisade-agent.service",
        // Not 2.5: systemd starts the agent as root and the agent confines
        // each process itself, which needs NoNewPrivileges= unset and the
        // capabilities to change users; and control runs package managers,
        // which write anywhere (see the unit's comment: 3.3 before patch
        // runs). Lower it when the unit gets stricter; never raise it
        // without a reason there.
        max_exposure: 5.0,
        packaging_dir: "packaging/agent",
    },
    Package {
        name: "palisade-backend",
        crate_dir: "backend",
        cargo_package: "palisade-backend",
        unit: "palisade-backend.service",
        max_exposure: 1.5,
        packaging_dir: "packaging/backend",
    },
];

/// The Debian revision cargo-deb and cargo-generate-rpm (`release`) use.
const PACKAGE_REVISION: &str = "1";

#[derive(Debug, PartialEq, Eq)]
pub struct Options {
    unsigned: bool,
}

impl Options {
    pub fn parse(args: &[String]) -> anyhow::Result<Options> {
        let mut unsigned = false;
        for arg in args {
            match arg.as_str() {
                "--unsigned" => unsigned = true,
                other => bail!("unknown argument {other:?}\n\n{USAGE}"),
            }
        }
        Ok(Options { unsigned })
    }
}

/// What one build takes.
#[derive(Debug, Clone)]
pub struct Build {
    /// The workspace to build.
    pub root: PathBuf,
    /// Cargo's target directory for the release build. Not `target/release`:
    /// the remapping flags would make every ordinary release build rebuild.
    pub target_dir: PathBuf,
    /// Where the artifacts go; emptied first.
    pub out_dir: PathBuf,
    pub signing: Signing,
    /// The time everything is dated with.
    pub source_date_epoch: u64,
}

/// What a build produced, relative to its `out_dir` where it says so.
#[derive(Debug, Clone)]
pub struct Artifacts {
    pub out_dir: PathBuf,
    pub debs: Vec<PathBuf>,
    pub rpms: Vec<PathBuf>,
    /// The APT repository's root (`out_dir/apt`).
    pub apt_repo: PathBuf,
    /// The signing key's fingerprint; `None` for an unsigned build.
    pub fingerprint: Option<String>,
    /// The release binaries that went into the packages.
    pub binaries: Vec<PathBuf>,
}

pub fn run(options: &Options) -> anyhow::Result<()> {
    let started = Instant::now();
    let signing = Signing::choose(
        std::env::var_os(SIGNING_KEY_ENV),
        std::env::var_os(PASSPHRASE_FILE_ENV),
        std::env::var_os("GNUPGHOME"),
        options.unsigned,
    )?;
    let root = util::workspace_root();
    let target = util::target_dir();
    let build = Build {
        source_date_epoch: source_date_epoch(&root)?,
        root,
        target_dir: target.join("dist-build"),
        out_dir: target.join("dist"),
        signing,
    };
    let artifacts = self::build(&build)?;
    heading("dist: done");
    for path in files::list(&artifacts.out_dir)? {
        let size = std::fs::metadata(artifacts.out_dir.join(&path))
            .map(|m| m.len())
            .unwrap_or(0);
        println!("{size:>10}  {}", path.display());
    }
    match &artifacts.fingerprint {
        Some(fpr) => println!("\nsigned with {fpr}"),
        None => println!("\n!!! UNSIGNED artifacts (--unsigned): do not publish them !!!"),
    }
    println!(
        "in {} ({:.0} s)",
        artifacts.out_dir.display(),
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

/// `SOURCE_DATE_EPOCH` if set, else the time of the last commit.
pub fn source_date_epoch(root: &Path) -> anyhow::Result<u64> {
    if let Some(value) = std::env::var_os("SOURCE_DATE_EPOCH") {
        let value = value.to_string_lossy();
        return value
            .trim()
            .parse()
            .with_context(|| format!("SOURCE_DATE_EPOCH={value:?} is not a number of seconds"));
    }
    let line = util::output_line(
        Command::new("git")
            .args(["log", "-1", "--format=%ct"])
            .current_dir(root),
    )
    .context("cannot date the build from the last commit: set SOURCE_DATE_EPOCH")?;
    line.parse()
        .with_context(|| format!("`git log -1 --format=%ct` printed {line:?}, not a time"))
}

/// Builds the binaries and every artifact, signed as `build.signing` says.
pub fn build(build: &Build) -> anyhow::Result<Artifacts> {
    heading("dist: tools");
    tools::ensure_debian_packages(tools::DIST_DEBIAN_PACKAGES)?;
    tools::ensure_cargo_tools()?;

    heading("dist: checks of packaging/");
    let version = check_packaging_sources(&build.root)?;

    // Open the key before the long build: a wrong key or passphrase should
    // fail in seconds, not after ten minutes of compiling.
    let signer = gpg::Signer::open(&build.signing, build.source_date_epoch)?;
    if let Some(signer) = &signer {
        println!(
            "signing with {} (signatures dated {})",
            signer.fingerprint(),
            signer.timestamp()
        );
    }

    heading("dist: release build");
    let binaries = release_build(build)?;

    heading("dist: packages");
    let out = &build.out_dir;
    if out.exists() {
        std::fs::remove_dir_all(out).with_context(|| format!("cannot empty {}", out.display()))?;
    }
    std::fs::create_dir_all(out).with_context(|| format!("cannot create {}", out.display()))?;
    let rpm_staging = stage_rpm_inputs(build)?;
    let mut debs = Vec::new();
    let mut rpms = Vec::new();
    for package in PACKAGES {
        debs.push(make_deb(build, package, &version)?);
        rpms.push(make_rpm(build, package, &version, &rpm_staging)?);
    }
    if let Some(signer) = &signer {
        heading("dist: signing the RPMs");
        for rpm in &rpms {
            signer.sign_rpm(rpm)?;
        }
    }

    heading("dist: APT repository");
    let apt_repo = out.join("apt");
    apt::write_repository(&apt_repo, &debs, build.source_date_epoch, signer.as_ref())?;

    match &signer {
        Some(signer) => {
            signer.export_public_key(&out.join(gpg::APT_KEYRING_FILE), false)?;
            signer.export_public_key(&out.join(gpg::RPM_KEY_FILE), true)?;
        }
        None => {
            std::fs::write(out.join("UNSIGNED"), UNSIGNED_NOTICE)
                .with_context(|| format!("cannot write {}", out.join("UNSIGNED").display()))?;
        }
    }

    heading("dist: SHA256SUMS");
    let sums = out.join("SHA256SUMS");
    files::write_sha256sums(out, &sums)?;
    if let Some(signer) = &signer {
        signer.detach_sign(&sums, &out.join("SHA256SUMS.asc"))?;
    }

    Ok(Artifacts {
        out_dir: out.clone(),
        debs,
        rpms,
        apt_repo,
        fingerprint: signer.as_ref().map(|s| s.fingerprint().to_owned()),
        binaries,
    })
}

const UNSIGNED_NOTICE: &str = "\
These artifacts were built with `cargo xtask dist --unsigned`: the RPMs, the
APT repository and SHA256SUMS carry no signature. They are for testing; do not
publish them.
";

/// The flags that keep build paths out of the binaries: the workspace, the
/// target directory (generated code lives there) and cargo's home (the
/// sources of dependencies). Later flags win where prefixes nest.
fn remap_flags(root: &Path, target_dir: &Path, cargo_home: &Path) -> Vec<OsString> {
    let remap = |from: &Path, to: &str| {
        let mut flag = OsString::from("--remap-path-prefix=");
        flag.push(from.as_os_str());
        flag.push("=");
        flag.push(to);
        flag
    };
    vec![
        remap(cargo_home, "/cargo"),
        remap(root, "/palisade"),
        remap(target_dir, "/palisade/target"),
    ]
}

/// `CARGO_ENCODED_RUSTFLAGS` for these flags: separated by 0x1f, so paths
/// with spaces survive, and it takes precedence over `RUSTFLAGS`.
fn encoded_rustflags(flags: &[OsString]) -> OsString {
    let mut encoded = OsString::new();
    for (i, flag) in flags.iter().enumerate() {
        if i > 0 {
            encoded.push("\u{1f}");
        }
        encoded.push(flag);
    }
    encoded
}

fn cargo_home() -> anyhow::Result<PathBuf> {
    if let Some(home) = std::env::var_os("CARGO_HOME").filter(|h| !h.is_empty()) {
        return Ok(PathBuf::from(home));
    }
    let home = std::env::var_os("HOME").context("neither CARGO_HOME nor HOME is set")?;
    Ok(PathBuf::from(home).join(".cargo"))
}

/// A cargo command for the release build and the packaging tools: the same
/// target directory, dates and flags for all of them.
fn dist_cargo(build: &Build) -> anyhow::Result<Command> {
    let target_dir = absolute(&build.target_dir)?;
    let flags = remap_flags(&build.root, &target_dir, &cargo_home()?);
    let mut cmd = util::cargo();
    cmd.current_dir(&build.root)
        .env("CARGO_TARGET_DIR", &target_dir)
        .env("SOURCE_DATE_EPOCH", build.source_date_epoch.to_string())
        .env("CARGO_ENCODED_RUSTFLAGS", encoded_rustflags(&flags))
        .env_remove("RUSTFLAGS")
        .env("TZ", "UTC")
        .env("LC_ALL", "C.UTF-8");
    Ok(cmd)
}

fn absolute(path: &Path) -> anyhow::Result<PathBuf> {
    std::path::absolute(path).with_context(|| format!("cannot make {} absolute", path.display()))
}

/// `cargo build --release` of the packaged binaries; returns their paths.
fn release_build(build: &Build) -> anyhow::Result<Vec<PathBuf>> {
    let mut cmd = dist_cargo(build)?;
    cmd.args(["build", "--release", "--locked", "--bins"]);
    for krate in BINARY_CRATES {
        cmd.args(["-p", krate]);
    }
    util::run(&mut cmd)?;
    let release = absolute(&build.target_dir)?.join("release");
    BINARY_CRATES
        .iter()
        .map(|name| {
            let path = release.join(name);
            if path.is_file() {
                Ok(path)
            } else {
                bail!("the release build did not produce {}", path.display())
            }
        })
        .collect()
}

fn make_deb(build: &Build, package: Package, version: &str) -> anyhow::Result<PathBuf> {
    let mut cmd = dist_cargo(build)?;
    cmd.args([
        "deb",
        "--no-build",
        "--locked",
        "-p",
        package.cargo_package,
        "-o",
    ])
    .arg(&build.out_dir);
    util::run(&mut cmd)?;
    expect_file(
        &build.out_dir,
        &format!("{}_{version}-{PACKAGE_REVISION}_amd64.deb", package.name),
    )
}

/// What cargo-generate-rpm reads besides the binaries, copied and dated
/// `SOURCE_DATE_EPOCH`: it only clamps file times to that date, so a file
/// older in one checkout than in another would change the package. It reads
/// the workspace manifest from its working directory and the asset paths
/// (`packaging/...`) relative to it.
fn stage_rpm_inputs(build: &Build) -> anyhow::Result<PathBuf> {
    let staging = absolute(&build.target_dir)?.join("rpm-inputs");
    if staging.exists() {
        std::fs::remove_dir_all(&staging)
            .with_context(|| format!("cannot empty {}", staging.display()))?;
    }
    let date = std::time::UNIX_EPOCH + std::time::Duration::from_secs(build.source_date_epoch);
    files::copy_tree_dated(
        &build.root.join("packaging"),
        &staging.join("packaging"),
        date,
    )?;
    files::copy_dated(
        &build.root.join("Cargo.toml"),
        &staging.join("Cargo.toml"),
        date,
    )?;
    Ok(staging)
}

fn make_rpm(
    build: &Build,
    package: Package,
    version: &str,
    staging: &Path,
) -> anyhow::Result<PathBuf> {
    let mut cmd = dist_cargo(build)?;
    // A directory given with -o must end in a slash to be taken as one.
    let mut out = absolute(&build.out_dir)?.into_os_string();
    out.push("/");
    cmd.current_dir(staging)
        .args(["generate-rpm", "-p"])
        .arg(absolute(&build.root.join(package.crate_dir))?)
        .arg("-o")
        .arg(out);
    util::run(&mut cmd)?;
    expect_file(
        &build.out_dir,
        &format!("{}-{version}-{PACKAGE_REVISION}.x86_64.rpm", package.name),
    )
}

fn expect_file(dir: &Path, name: &str) -> anyhow::Result<PathBuf> {
    let path = dir.join(name);
    if !path.is_file() {
        bail!(
            "expected {} after packaging, found: {:?}",
            path.display(),
            files::list(dir).unwrap_or_default()
        );
    }
    Ok(path)
}

/// Checks what the packaging tools cannot: the changelog names the version
/// being packaged, and the RPM pre-install scripts create the same users as
/// the sysusers.d files. Returns the version.
pub fn check_packaging_sources(root: &Path) -> anyhow::Result<String> {
    let version = workspace_version(root)?;
    let changelog_path = root.join("packaging/debian/changelog");
    let changelog = std::fs::read_to_string(&changelog_path)
        .with_context(|| format!("cannot read {}", changelog_path.display()))?;
    let latest = changelog_version(&changelog)
        .with_context(|| format!("{} does not start with an entry", changelog_path.display()))?;
    let wanted = format!("{version}-{PACKAGE_REVISION}");
    if latest != wanted {
        bail!(
            "{} starts with version {latest}, but the workspace is {version}: add an entry \
             for {wanted} (the packages' changelog is what operators read before upgrading)",
            changelog_path.display()
        );
    }
    for package in PACKAGES {
        let dir = root.join(package.packaging_dir);
        let sysusers_path = dir.join(format!("{}.sysusers", package.name));
        let pre_path = dir.join("rpm/pre_install.sh");
        let sysusers = std::fs::read_to_string(&sysusers_path)
            .with_context(|| format!("cannot read {}", sysusers_path.display()))?;
        let pre = std::fs::read_to_string(&pre_path)
            .with_context(|| format!("cannot read {}", pre_path.display()))?;
        if heredoc(&pre, "SYSUSERS") != Some(directives(&sysusers)) {
            bail!(
                "{} must create exactly the users of {} (between <<'SYSUSERS' and SYSUSERS)",
                pre_path.display(),
                sysusers_path.display()
            );
        }
    }
    println!("packaging sources agree with version {version}");
    Ok(version)
}

/// The version of the packaged crates (the workspace version).
fn workspace_version(root: &Path) -> anyhow::Result<String> {
    let metadata = util::output(util::cargo().current_dir(root).args([
        "metadata",
        "--no-deps",
        "--format-version=1",
        "--offline",
    ]))?;
    let metadata: serde_json::Value = serde_json::from_str(&metadata)
        .context("cargo metadata printed something that is not JSON")?;
    let packages = metadata["packages"]
        .as_array()
        .context("cargo metadata lists no packages")?;
    let mut versions = PACKAGES.iter().map(|p| {
        packages
            .iter()
            .find(|m| m["name"] == p.cargo_package)
            .and_then(|m| m["version"].as_str())
            .with_context(|| format!("cargo metadata has no version for {}", p.cargo_package))
    });
    let first = versions.next().context("no packages")??;
    for other in versions {
        if other? != first {
            bail!("the packaged crates have different versions; they are released together");
        }
    }
    Ok(first.to_owned())
}

/// The version of the first entry of a Debian changelog:
/// `palisade (0.1.0-1) stable; urgency=medium` gives `0.1.0-1`.
fn changelog_version(changelog: &str) -> Option<String> {
    let first = changelog.lines().find(|l| !l.trim().is_empty())?;
    let open = first.find('(')?;
    let close = first[open..].find(')')? + open;
    Some(first[open + 1..close].to_owned())
}

/// The lines of a shell here-document `<<'TAG' ... TAG`.
fn heredoc(script: &str, tag: &str) -> Option<Vec<String>> {
    let start = format!("<<'{tag}'");
    let mut lines = script.lines();
    lines.by_ref().find(|l| l.trim_end().ends_with(&start))?;
    let mut body = Vec::new();
    for line in lines {
        if line.trim() == tag {
            return Some(body);
        }
        body.push(line.to_owned());
    }
    None
}

/// The lines of a sysusers.d file that are not comments or blank.
fn directives(sysusers: &str) -> Vec<String> {
    sysusers
        .lines()
        .filter(|l| !l.trim().is_empty() && !l.trim_start().starts_with('#'))
        .map(str::to_owned)
        .collect()
}

/// The file name of `path`, for messages.
fn file_name(path: &Path) -> &OsStr {
    path.file_name().unwrap_or(path.as_os_str())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn options() {
        assert_eq!(
            Options::parse(&[]).expect("valid"),
            Options { unsigned: false }
        );
        assert_eq!(
            Options::parse(&["--unsigned".to_owned()]).expect("valid"),
            Options { unsigned: true }
        );
        assert!(Options::parse(&["--sign".to_owned()]).is_err());
    }

    #[test]
    fn changelog_version_is_read_from_the_first_entry() {
        let text = "palisade (0.2.0-1) stable; urgency=medium\n\n  * x\n\npalisade (0.1.0-1) stable; urgency=low\n";
        assert_eq!(changelog_version(text).as_deref(), Some("0.2.0-1"));
        assert_eq!(changelog_version("no entry"), None);
    }

    #[test]
    fn heredoc_body_is_found() {
        let script = "# x\nsystemd-sysusers - <<'SYSUSERS'\nu a - \"A\"\nu b -\nSYSUSERS\nexit 0\n";
        assert_eq!(
            heredoc(script, "SYSUSERS"),
            Some(vec!["u a - \"A\"".to_owned(), "u b -".to_owned()])
        );
        assert_eq!(heredoc("cat <<'SYSUSERS'\nu a\n", "SYSUSERS"), None);
    }

    /// The real files: the changelog matches the version, and the RPM
    /// scripts create the users of the sysusers.d files.
    #[test]
    fn packaging_sources_agree() {
        check_packaging_sources(&util::workspace_root()).expect("packaging/ is consistent");
    }

    #[test]
    fn remapping_covers_every_build_path_and_nested_prefixes_come_last() {
        let flags = remap_flags(
            Path::new("/src/palisade"),
            Path::new("/src/palisade/target/dist-build"),
            Path::new("/home/u/.cargo"),
        );
        let flags: Vec<String> = flags
            .iter()
            .map(|f| f.to_string_lossy().into_owned())
            .collect();
        assert_eq!(
            flags,
            [
                "--remap-path-prefix=/home/u/.cargo=/cargo",
                "--remap-path-prefix=/src/palisade=/palisade",
                "--remap-path-prefix=/src/palisade/target/dist-build=/palisade/target",
            ]
        );
        let encoded = encoded_rustflags(&[OsString::from("a b"), OsString::from("c")]);
        assert_eq!(encoded, OsString::from("a b\u{1f}c"));
    }
}
