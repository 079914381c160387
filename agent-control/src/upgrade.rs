//! `upgrade_packages`: upgrading (or simulating it) with the host's own
//! package manager, its output streamed while it runs.
//!
//! **apt** (a dpkg host): `apt-get update` first when asked, then
//! `apt-get dist-upgrade` for everything or `apt-get install --only-upgrade
//! name[:arch]=version ...` for named packages, with `-s` for a dry run.
//! Always non-interactive (`DEBIAN_FRONTEND=noninteractive`, `-y`) and
//! keeping configuration files the admin changed (`--force-confdef
//! --force-confold`); needrestart only lists what it would restart
//! (restarts and reboots are Palisade's decision, not a side effect). The
//! environment is exactly the one below, the locale `C` so the output is
//! apt's own words.
//!
//! **What changed** is read from the package database before and after
//! the run, never from the output: a package a maintainer script or a
//! partial failure left at another version shows as it is. A dry run
//! changes nothing, so its changes are what apt's simulation says it would
//! do ([`palisade_packages::deb::simulate`]).
//!
//! **What is left to do** after a real run, whatever its status (a failed
//! or stopped run may have changed packages too): whether the host needs a
//! reboot and which services still run files it replaced, read by
//! [`crate::after_upgrade`] and said in the output as well.
//!
//! **Another root**: when the agent manages a root other than `/`
//! ([`palisade_agent_sys::package_root`]), apt is pointed at it with its own
//! options (`Dir`, the status file, dpkg's `--root`/`--admindir`/`--log`),
//! the way a private apt/dpkg root is driven.
//!
//! **dnf** (an rpm host): `dnf makecache` first when asked, then `dnf -y
//! upgrade` for everything or `dnf -y upgrade name-[epoch:]version-release.arch
//! ...` for named packages. A configuration file the admin changed is kept
//! (rpm writes the packaged one as `.rpmnew`, its default). The installed
//! versions are read with `rpm -qa` and a query format of our own
//! ([`palisade_packages::rpm::query`]), spelled as the inventory spells them.
//! dnf has no simulation whose output is stable enough to read (`--assumeno`
//! prints a table meant for people), so a **dry run** reports the upgrades
//! dnf offers for the selection (`dnf repoquery --upgrades
//! --latest-limit=1`) against the installed versions: a dependency dnf
//! would also pull in is not in the dry run's plan. A real run's changes,
//! read from the rpm database, have every package.
//!
//! **Another root** for dnf: `--root` for rpm, `--installroot` for dnf,
//! plus the root's own `etc/dnf/dnf.conf` and `etc/yum.repos.d` when it
//! has them (dnf would otherwise fall back to the host's). Every option is
//! derived from the root, never from the command. Where the database lies
//! inside the root is rpm's own `%_dbpath`, as on the host.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use palisade_agent_sys::package_root;
use palisade_packages::deb::{StatusFile, simulate};
use palisade_packages::inventory::Manager;
use palisade_packages::rpm::query;
use palisade_proto::msg::{FromChild, MAX_COMMAND_OUTPUT};
use palisade_proto::pb;
use palisade_proto::upgrade::{MAX_OUTPUT_PIECE, Upgrade};
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;

use crate::after_upgrade;
use crate::process::{self, Ended, Program, Sink};

/// How long a stopped package manager has between SIGINT and SIGKILL:
/// enough for dpkg to finish the package it is unpacking. (apt ignores
/// SIGINT while dpkg runs and dpkg while a maintainer script runs, and a
/// script inherits that: a hanging script ends only with the SIGKILL.)
pub const UPGRADE_STOP_GRACE: Duration = Duration::from_secs(20);

/// Most output streamed for one command; past it, the rest is dropped and
/// the output says so.
pub const MAX_STREAMED: u64 = 16 * 1024 * 1024;

/// Most output of one step kept to read a simulation from.
const MAX_SIMULATION_OUTPUT: usize = 8 * 1024 * 1024;

const APT_GET: &str = "/usr/bin/apt-get";
const DPKG_STATUS: &str = "/var/lib/dpkg/status";
const ENV: &[(&str, &str)] = &[
    ("PATH", "/usr/sbin:/usr/bin:/sbin:/bin"),
    ("LC_ALL", "C"),
    ("DEBIAN_FRONTEND", "noninteractive"),
    ("APT_LISTCHANGES_FRONTEND", "none"),
    ("NEEDRESTART_MODE", "l"),
];

/// What an upgrade produced.
#[derive(Debug)]
pub struct UpgradeOutcome {
    pub status: pb::CommandStatus,
    pub exit_code: i32,
    pub error: String,
    pub changes: Vec<pb::PackageChange>,
    /// A real run: whether the host needs a reboot after it (`None`: cannot
    /// tell, or a dry run).
    pub reboot_required: Option<bool>,
    /// A real run: services still running files it replaced.
    pub restarts: Vec<pb::ServiceRestart>,
}

impl UpgradeOutcome {
    fn succeeded() -> UpgradeOutcome {
        UpgradeOutcome {
            status: pb::CommandStatus::Succeeded,
            exit_code: 0,
            error: String::new(),
            changes: Vec::new(),
            reboot_required: None,
            restarts: Vec::new(),
        }
    }

    fn failed(error: impl Into<String>) -> UpgradeOutcome {
        UpgradeOutcome {
            status: pb::CommandStatus::Failed,
            exit_code: -1,
            error: error.into(),
            ..UpgradeOutcome::succeeded()
        }
    }
}

/// The output of one command, sent to the platform piece by piece as
/// `CommandOutput` while it runs, and its end kept for the result.
pub struct Stream {
    command_id: String,
    sender: mpsc::Sender<FromChild>,
    /// Bytes sent so far (the next piece's offset).
    sent: u64,
    /// An incomplete UTF-8 sequence at the end of the last read.
    partial: Vec<u8>,
    /// The last [`MAX_COMMAND_OUTPUT`] bytes, for the result.
    tail: String,
    truncated: bool,
}

impl Stream {
    pub fn new(command_id: String, sender: mpsc::Sender<FromChild>) -> Stream {
        Stream {
            command_id,
            sender,
            sent: 0,
            partial: Vec::new(),
            tail: String::new(),
            truncated: false,
        }
    }

    /// Bytes streamed so far.
    pub fn streamed(&self) -> u64 {
        self.sent
    }

    /// The end of the output, at most [`MAX_COMMAND_OUTPUT`] bytes.
    pub fn tail(&self) -> &str {
        &self.tail
    }

    /// Sends a line of control's own (what it runs, what it read).
    pub async fn note(&mut self, line: &str) {
        self.text(format!("{line}\n")).await;
    }

    async fn text(&mut self, mut text: String) {
        if self.truncated || text.is_empty() {
            return;
        }
        let room = MAX_STREAMED.saturating_sub(self.sent);
        if text.len() as u64 > room {
            let mut end = usize::try_from(room).unwrap_or(0);
            while !text.is_char_boundary(end) {
                end -= 1;
            }
            text.truncate(end);
            text.push_str("\n[output truncated: more than 16 MiB]\n");
            self.truncated = true;
        }
        self.keep_tail(&text);
        // Pieces stay under the wire's limit, cut at character boundaries.
        let mut rest = text.as_str();
        while !rest.is_empty() {
            let mut end = rest.len().min(MAX_OUTPUT_PIECE);
            while !rest.is_char_boundary(end) {
                end -= 1;
            }
            let (piece, after) = rest.split_at(end);
            let message = FromChild::CommandOutput(pb::CommandOutput {
                command_id: self.command_id.clone(),
                offset: self.sent,
                text: piece.to_owned(),
            });
            self.sent += piece.len() as u64;
            // The platform gone means control ends soon anyway; the output
            // is then lost with the connection, the result says how much.
            let _ = self.sender.send(message).await;
            rest = after;
        }
    }

    fn keep_tail(&mut self, text: &str) {
        self.tail.push_str(text);
        if self.tail.len() > MAX_COMMAND_OUTPUT {
            let mut cut = self.tail.len() - MAX_COMMAND_OUTPUT;
            while !self.tail.is_char_boundary(cut) {
                cut += 1;
            }
            self.tail.drain(..cut);
        }
    }

    /// Sends what is left of an incomplete character.
    pub async fn finish(&mut self) {
        if !self.partial.is_empty() {
            let rest = String::from_utf8_lossy(&std::mem::take(&mut self.partial)).into_owned();
            self.text(rest).await;
        }
    }
}

impl Sink for Stream {
    async fn output(&mut self, bytes: &[u8]) {
        let mut data = std::mem::take(&mut self.partial);
        data.extend_from_slice(bytes);
        // Keep an incomplete character at the end for the next read.
        let keep = match std::str::from_utf8(&data) {
            Ok(_) => 0,
            Err(e) if e.error_len().is_none() => data.len() - e.valid_up_to(),
            Err(_) => 0,
        };
        self.partial = data.split_off(data.len() - keep);
        let text = String::from_utf8_lossy(&data).into_owned();
        self.text(text).await;
    }
}

/// A sink that streams and also keeps a copy (to read a simulation from).
struct Tee<'a> {
    stream: &'a mut Stream,
    copy: process::Capped,
}

impl Sink for Tee<'_> {
    async fn output(&mut self, bytes: &[u8]) {
        self.copy.output(bytes).await;
        self.stream.output(bytes).await;
    }
}

/// Runs `upgrade` on the system at `root`. `stop` turning true cancels it.
pub async fn run(
    upgrade: &Upgrade,
    root: &Path,
    stream: &mut Stream,
    stop: watch::Receiver<bool>,
) -> UpgradeOutcome {
    let deadline = Instant::now() + upgrade.timeout;
    match upgrade.manager {
        Manager::Dpkg => apt(upgrade, root, stream, stop, deadline).await,
        Manager::Rpm => dnf(upgrade, root, stream, stop, deadline).await,
    }
}

/// How long an index refresh may take.
pub const REFRESH_TIMEOUT: Duration = Duration::from_secs(15 * 60);

const DNF: &str = "/usr/bin/dnf";
const RPM: &str = "/usr/bin/rpm";
/// Where rpm keeps its database (new and old location).
const RPMDB: [&str; 2] = ["/usr/lib/sysimage/rpm", "/var/lib/rpm"];

/// Refreshes the package manager's indexes on the system at `root`:
/// `apt-get update`, or `dnf makecache` (with `--installroot` for another
/// root).
pub async fn refresh_index(
    root: &Path,
    stream: &mut Stream,
    stop: watch::Receiver<bool>,
) -> UpgradeOutcome {
    let deadline = Instant::now() + REFRESH_TIMEOUT;
    let (program, what, args) = if package_root::under(root, DPKG_STATUS).is_file() {
        let mut args = apt_root_options(root);
        args.extend(["-q".into(), "update".into()]);
        (PathBuf::from(APT_GET), "apt-get update", args)
    } else if has_rpmdb(root) {
        let mut args = dnf_root_options(root);
        args.extend(["-q".into(), "-y".into(), "makecache".into()]);
        (PathBuf::from(DNF), "dnf makecache", args)
    } else {
        return UpgradeOutcome::failed(format!(
            "{} has no package database (neither dpkg's nor rpm's)",
            root.display()
        ));
    };
    let ended = step(&program, &args, deadline, &stop, stream, None).await;
    unless_succeeded(ended, what).unwrap_or_else(UpgradeOutcome::succeeded)
}

/// Installed versions by (name, architecture).
type Versions = BTreeMap<(String, String), String>;

fn dpkg_versions(root: &Path) -> Result<Versions, String> {
    let path = package_root::under(root, DPKG_STATUS);
    let bytes = std::fs::read(&path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let status =
        StatusFile::parse(&bytes).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    Ok(status
        .installed()
        .filter_map(|p| {
            let version = p.version.as_ref()?.to_string();
            Some(((p.name.clone(), p.architecture.clone()), version))
        })
        .collect())
}

/// The options that point apt at `root` (none for `/`).
fn apt_root_options(root: &Path) -> Vec<String> {
    if package_root::is_system(root) {
        return Vec::new();
    }
    let r = root.display();
    [
        format!("Dir={r}/"),
        format!("Dir::State::status={r}{DPKG_STATUS}"),
        format!("DPkg::Options::=--root={r}"),
        format!("DPkg::Options::=--admindir={r}/var/lib/dpkg"),
        format!("DPkg::Options::=--log={r}/var/log/dpkg.log"),
    ]
    .into_iter()
    .flat_map(|o| ["-o".to_owned(), o])
    .collect()
}

/// The arguments of the upgrade step (after the root options).
fn apt_upgrade_args(upgrade: &Upgrade) -> Vec<String> {
    let mut args: Vec<String> = [
        "-q",
        "-y",
        "-o",
        "Dpkg::Options::=--force-confdef",
        "-o",
        "Dpkg::Options::=--force-confold",
    ]
    .map(String::from)
    .into();
    if upgrade.dry_run {
        args.push("-s".into());
    }
    if upgrade.all {
        args.push("dist-upgrade".into());
    } else {
        args.extend(["install".into(), "--only-upgrade".into()]);
        for t in &upgrade.packages {
            let mut spec = t.name.clone();
            if !t.arch.is_empty() && t.arch != "all" {
                spec.push(':');
                spec.push_str(&t.arch);
            }
            if !t.version.is_empty() {
                spec.push('=');
                spec.push_str(&t.version);
            }
            args.push(spec);
        }
    }
    args
}

async fn apt(
    upgrade: &Upgrade,
    root: &Path,
    stream: &mut Stream,
    stop: watch::Receiver<bool>,
    deadline: Instant,
) -> UpgradeOutcome {
    let apt_get = PathBuf::from(APT_GET);
    if !package_root::under(root, DPKG_STATUS).is_file() {
        return UpgradeOutcome::failed(format!(
            "the backend asked for an apt upgrade, but {} has no dpkg database",
            root.display()
        ));
    }
    let before = match dpkg_versions(root) {
        Ok(v) => v,
        Err(e) => return UpgradeOutcome::failed(e),
    };
    stream
        .note(&format!("# {} packages installed", before.len()))
        .await;
    if upgrade.refresh_index {
        let mut args = apt_root_options(root);
        args.extend(["-q".into(), "update".into()]);
        let ended = step(&apt_get, &args, deadline, &stop, stream, None).await;
        if let Some(outcome) = unless_succeeded(ended, "apt-get update") {
            return outcome;
        }
    }
    let mut args = apt_root_options(root);
    args.extend(apt_upgrade_args(upgrade));
    let mut copy = process::Capped::new(MAX_SIMULATION_OUTPUT);
    let ended = step(&apt_get, &args, deadline, &stop, stream, Some(&mut copy)).await;
    let mut outcome = unless_succeeded(ended, "apt-get").unwrap_or_else(UpgradeOutcome::succeeded);
    if upgrade.dry_run {
        if outcome.status == pb::CommandStatus::Succeeded {
            match simulate::parse(&String::from_utf8_lossy(&copy.bytes)) {
                Ok(simulation) => outcome.changes = simulated_changes(simulation, &before),
                Err(e) => {
                    outcome.status = pb::CommandStatus::Failed;
                    outcome.error = e.to_string();
                }
            }
        }
    } else {
        let after = dpkg_versions(root);
        record_changes(&mut outcome, &before, &after, stream).await;
        let reboot = after_upgrade::dpkg_reboot(root, Path::new(after_upgrade::PROC));
        record_aftermath(&mut outcome, reboot, root, stream).await;
    }
    outcome
}

/// Whether `root` has an rpm database.
fn has_rpmdb(root: &Path) -> bool {
    RPMDB
        .iter()
        .any(|db| package_root::under(root, db).is_dir())
}

/// The options that point dnf at `root` (none for `/`): the installroot,
/// and the root's own configuration and repositories when it has them.
fn dnf_root_options(root: &Path) -> Vec<String> {
    if package_root::is_system(root) {
        return Vec::new();
    }
    let mut options = vec![format!("--installroot={}", root.display())];
    let conf = package_root::under(root, "/etc/dnf/dnf.conf");
    if conf.is_file() {
        options.push(format!("--config={}", conf.display()));
    }
    let repos = package_root::under(root, "/etc/yum.repos.d");
    if repos.is_dir() {
        options.push(format!("--setopt=reposdir={}", repos.display()));
    }
    options
}

/// How dnf names a target: `name[-[epoch:]version-release][.arch]`.
fn dnf_spec(target: &palisade_proto::upgrade::Target) -> String {
    let mut spec = target.name.clone();
    if !target.version.is_empty() {
        spec.push('-');
        spec.push_str(&target.version);
    }
    if !target.arch.is_empty() {
        spec.push('.');
        spec.push_str(&target.arch);
    }
    spec
}

/// The arguments of the upgrade step (after the root options).
fn dnf_upgrade_args(upgrade: &Upgrade) -> Vec<String> {
    let mut args = if upgrade.dry_run {
        [
            "-q",
            "repoquery",
            "--upgrades",
            "--latest-limit=1",
            "--queryformat",
            query::DNF_QUERY_FORMAT,
        ]
        .map(String::from)
        .to_vec()
    } else {
        vec!["-y".to_owned(), "upgrade".to_owned()]
    };
    if !upgrade.all {
        args.extend(upgrade.packages.iter().map(dnf_spec));
    }
    args
}

/// Reads the installed versions with `rpm -qa` (not streamed: a few
/// thousand lines of no interest to the operator).
async fn rpm_versions(
    root: &Path,
    deadline: Instant,
    stop: &watch::Receiver<bool>,
) -> Result<Versions, String> {
    let mut args = Vec::new();
    if !package_root::is_system(root) {
        args.push(format!("--root={}", root.display()));
    }
    args.extend([
        "-qa".to_owned(),
        "--queryformat".to_owned(),
        query::RPM_QUERY_FORMAT.to_owned(),
    ]);
    let program = Program {
        path: Path::new(RPM),
        args: &args,
        env: ENV,
        deadline,
        grace: UPGRADE_STOP_GRACE,
    };
    let mut out = process::Capped::new(MAX_SIMULATION_OUTPUT);
    let ended = process::run(&program, Some(stop.clone()), &mut out).await;
    let text = String::from_utf8_lossy(&out.bytes);
    if let Some(failed) = unless_succeeded(ended, "rpm -qa") {
        let last = text.lines().last().unwrap_or_default();
        return Err(format!("{}: {last}", failed.error));
    }
    if out.truncated {
        return Err(format!(
            "rpm -qa printed more than {MAX_SIMULATION_OUTPUT} bytes"
        ));
    }
    let read = query::parse(&text).map_err(|e| format!("cannot read rpm -qa's output: {e}"))?;
    Ok(rows_to_versions(read.rows))
}

/// Rows by (name, architecture), without the `gpg-pubkey` entries (the
/// inventory has none either).
fn rows_to_versions(rows: Vec<query::Row>) -> Versions {
    rows.into_iter()
        .filter(|r| !r.is_gpg_pubkey())
        .map(|r| ((r.name, r.arch), r.evr))
        .collect()
}

async fn dnf(
    upgrade: &Upgrade,
    root: &Path,
    stream: &mut Stream,
    stop: watch::Receiver<bool>,
    deadline: Instant,
) -> UpgradeOutcome {
    let dnf = PathBuf::from(DNF);
    if !has_rpmdb(root) {
        return UpgradeOutcome::failed(format!(
            "the backend asked for a dnf upgrade, but {} has no rpm database",
            root.display()
        ));
    }
    let before = match rpm_versions(root, deadline, &stop).await {
        Ok(v) => v,
        Err(e) => return UpgradeOutcome::failed(e),
    };
    stream
        .note(&format!("# {} packages installed", before.len()))
        .await;
    if upgrade.refresh_index {
        let mut args = dnf_root_options(root);
        args.extend(["-q".into(), "-y".into(), "makecache".into()]);
        let ended = step(&dnf, &args, deadline, &stop, stream, None).await;
        if let Some(outcome) = unless_succeeded(ended, "dnf makecache") {
            return outcome;
        }
    }
    let mut args = dnf_root_options(root);
    args.extend(dnf_upgrade_args(upgrade));
    let mut copy = process::Capped::new(MAX_SIMULATION_OUTPUT);
    let what = if upgrade.dry_run {
        "dnf repoquery"
    } else {
        "dnf upgrade"
    };
    let ended = step(&dnf, &args, deadline, &stop, stream, Some(&mut copy)).await;
    let mut outcome = unless_succeeded(ended, what).unwrap_or_else(UpgradeOutcome::succeeded);
    if upgrade.dry_run {
        if outcome.status == pb::CommandStatus::Succeeded {
            let read = if copy.truncated {
                Err(format!(
                    "dnf repoquery printed more than {MAX_SIMULATION_OUTPUT} bytes"
                ))
            } else {
                query::parse(&String::from_utf8_lossy(&copy.bytes))
                    .map_err(|e| format!("cannot read dnf repoquery's output: {e}"))
            };
            match read {
                Ok(read) => outcome.changes = offered_changes(read.rows, &before),
                Err(e) => {
                    outcome.status = pb::CommandStatus::Failed;
                    outcome.error = e;
                }
            }
        }
    } else {
        let after = rpm_versions(root, Instant::now() + REREAD_TIMEOUT, &stop).await;
        record_changes(&mut outcome, &before, &after, stream).await;
        let reboot = after_upgrade::rpm_reboot(after.as_ref(), Path::new(after_upgrade::PROC));
        record_aftermath(&mut outcome, reboot, root, stream).await;
    }
    outcome
}

/// How long reading the database after a run may take: it must be read
/// even when the run itself used up the command's time.
const REREAD_TIMEOUT: Duration = Duration::from_secs(60);

/// The upgrades dnf offers, as changes from what is installed: the same
/// name and architecture, or else the one installed architecture of the
/// name (a package that became `noarch` or stopped being it).
fn offered_changes(offered: Vec<query::Row>, installed: &Versions) -> Vec<pb::PackageChange> {
    let mut out: Vec<pb::PackageChange> = offered
        .into_iter()
        .filter(|r| !r.is_gpg_pubkey())
        .map(|r| {
            let before = installed
                .get(&(r.name.clone(), r.arch.clone()))
                .cloned()
                .or_else(|| {
                    let mut versions = installed
                        .iter()
                        .filter(|((name, _), _)| *name == r.name)
                        .map(|(_, version)| version.clone());
                    match (versions.next(), versions.next()) {
                        (Some(version), None) => Some(version),
                        _ => None,
                    }
                })
                .unwrap_or_default();
            pb::PackageChange {
                name: r.name,
                arch: r.arch,
                before,
                after: r.evr,
            }
        })
        .collect();
    out.sort_by(|a, b| (&a.name, &a.arch).cmp(&(&b.name, &b.arch)));
    out
}

/// Runs one program as a step of the command: announced in the output,
/// under the command's deadline and stop signal.
async fn step(
    program: &Path,
    args: &[String],
    deadline: Instant,
    stop: &watch::Receiver<bool>,
    stream: &mut Stream,
    copy: Option<&mut process::Capped>,
) -> Result<Ended, String> {
    stream
        .note(&format!("$ {} {}", program.display(), args.join(" ")))
        .await;
    let program = Program {
        path: program,
        args,
        env: ENV,
        deadline,
        grace: UPGRADE_STOP_GRACE,
    };
    let ended = match copy {
        Some(copy) => {
            let mut tee = Tee {
                stream: &mut *stream,
                copy: std::mem::take(copy),
            };
            let ended = process::run(&program, Some(stop.clone()), &mut tee).await;
            *copy = tee.copy;
            ended
        }
        None => process::run(&program, Some(stop.clone()), &mut *stream).await,
    };
    stream.finish().await;
    ended
}

/// `None` when the step exited with 0; otherwise the outcome that ends the
/// command.
fn unless_succeeded(ended: Result<Ended, String>, what: &str) -> Option<UpgradeOutcome> {
    let (status, exit_code, error) = match ended {
        Err(error) => (pb::CommandStatus::Failed, -1, error),
        Ok(Ended::Exited(status)) => {
            let code = process::exit_code(&status);
            if code == 0 {
                return None;
            }
            (
                pb::CommandStatus::Failed,
                code,
                format!("{what} exited with status {code}"),
            )
        }
        Ok(Ended::TimedOut(status)) => (
            pb::CommandStatus::TimedOut,
            status.as_ref().map_or(-1, process::exit_code),
            format!("{what} was stopped: the command ran past its timeout"),
        ),
        Ok(Ended::Cancelled(status)) => (
            pb::CommandStatus::Cancelled,
            status.as_ref().map_or(-1, process::exit_code),
            format!("{what} was stopped on request"),
        ),
    };
    Some(UpgradeOutcome {
        status,
        exit_code,
        error,
        ..UpgradeOutcome::succeeded()
    })
}

/// Puts what differs between the readings before and after a real run into
/// `outcome` and says how many in the output; a failed second reading is
/// said too, and is the outcome's error unless it already has one.
async fn record_changes(
    outcome: &mut UpgradeOutcome,
    before: &Versions,
    after: &Result<Versions, String>,
    stream: &mut Stream,
) {
    match after {
        Ok(after) => outcome.changes = changes(before, after),
        Err(e) => {
            stream
                .note(&format!("# cannot tell what changed: {e}"))
                .await;
            if outcome.error.is_empty() {
                outcome.error = format!("cannot tell what changed: {e}");
            }
        }
    }
    stream
        .note(&format!("# {} packages changed", outcome.changes.len()))
        .await;
}

/// Puts what a real run left to do into `outcome` (whether the host needs
/// a reboot, which services still run replaced files; see
/// [`crate::after_upgrade`]) and says it in the output. Whatever happens
/// here, the command's status stays what the run made it.
async fn record_aftermath(
    outcome: &mut UpgradeOutcome,
    reboot: after_upgrade::RebootStatus,
    root: &Path,
    stream: &mut Stream,
) {
    for problem in &reboot.problems {
        stream.note(&format!("# reboot check: {problem}")).await;
    }
    match reboot.required {
        Some(true) => {
            stream
                .note(&format!("# reboot required: {}", reboot.reasons.join("; ")))
                .await;
        }
        Some(false) => stream.note("# no reboot required").await,
        None => {
            stream
                .note("# cannot tell whether a reboot is required")
                .await;
        }
    }
    outcome.reboot_required = reboot.required;
    let scan = after_upgrade::scan(PathBuf::from(after_upgrade::PROC), root.to_owned()).await;
    for note in scan.notes() {
        stream.note(&note).await;
    }
    outcome.restarts = scan.to_wire();
}

/// What differs between two readings of the database.
fn changes(before: &Versions, after: &Versions) -> Vec<pb::PackageChange> {
    let mut out = Vec::new();
    for (key, old) in before {
        match after.get(key) {
            Some(new) if new == old => {}
            new => out.push(change(key, Some(old), new)),
        }
    }
    for (key, new) in after {
        if !before.contains_key(key) {
            out.push(change(key, None, Some(new)));
        }
    }
    out.sort_by(|a, b| (&a.name, &a.arch).cmp(&(&b.name, &b.arch)));
    out
}

fn change(
    key: &(String, String),
    before: Option<&String>,
    after: Option<&String>,
) -> pb::PackageChange {
    pb::PackageChange {
        name: key.0.clone(),
        arch: key.1.clone(),
        before: before.cloned().unwrap_or_default(),
        after: after.cloned().unwrap_or_default(),
    }
}

/// A simulation's changes; a removal's architecture (apt prints none) and
/// version come from the database when it names one package.
fn simulated_changes(
    simulation: simulate::Simulation,
    installed: &Versions,
) -> Vec<pb::PackageChange> {
    simulation
        .changes
        .into_iter()
        .map(|c| {
            let arch = if c.arch.is_empty() {
                let mut archs = installed
                    .keys()
                    .filter(|(name, _)| *name == c.name)
                    .map(|(_, arch)| arch.clone());
                match (archs.next(), archs.next()) {
                    (Some(arch), None) => arch,
                    _ => String::new(),
                }
            } else {
                c.arch
            };
            pb::PackageChange {
                name: c.name,
                arch,
                before: c.before.unwrap_or_default(),
                after: c.after.unwrap_or_default(),
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use palisade_proto::upgrade::Target;

    fn upgrade(all: bool, packages: &[(&str, &str, &str)], dry_run: bool) -> Upgrade {
        Upgrade {
            manager: Manager::Dpkg,
            all,
            packages: packages
                .iter()
                .map(|(n, a, v)| Target {
                    name: (*n).into(),
                    arch: (*a).into(),
                    version: (*v).into(),
                })
                .collect(),
            dry_run,
            refresh_index: false,
            timeout: Duration::from_secs(60),
        }
    }

    #[test]
    fn apt_is_asked_for_exactly_the_named_versions_without_questions() {
        let args = apt_upgrade_args(&upgrade(
            false,
            &[
                ("hello", "all", "1.1"),
                ("libc6", "i386", "2.36-9"),
                ("curl", "", ""),
            ],
            false,
        ));
        assert_eq!(
            args,
            [
                "-q",
                "-y",
                "-o",
                "Dpkg::Options::=--force-confdef",
                "-o",
                "Dpkg::Options::=--force-confold",
                "install",
                "--only-upgrade",
                "hello=1.1",
                "libc6:i386=2.36-9",
                "curl"
            ]
        );
        let args = apt_upgrade_args(&upgrade(true, &[], true));
        assert_eq!(args[6..], ["-s", "dist-upgrade"]);
    }

    #[test]
    fn another_root_gets_apt_and_dpkg_pointed_at_it() {
        assert!(apt_root_options(Path::new("/")).is_empty());
        let options = apt_root_options(Path::new("/srv/root"));
        assert!(options.contains(&"Dir=/srv/root/".to_owned()));
        assert!(options.contains(&"DPkg::Options::=--root=/srv/root".to_owned()));
        assert!(options.contains(&"Dir::State::status=/srv/root/var/lib/dpkg/status".to_owned()));
    }

    #[test]
    fn changes_are_what_differs_between_the_readings() {
        let key = |n: &str| (n.to_owned(), "amd64".to_owned());
        let before: Versions = [
            (key("a"), "1".into()),
            (key("b"), "1".into()),
            (key("c"), "1".into()),
        ]
        .into();
        let after: Versions = [
            (key("a"), "2".into()),
            (key("c"), "1".into()),
            (key("d"), "1".into()),
        ]
        .into();
        let got: Vec<(String, String, String)> = changes(&before, &after)
            .into_iter()
            .map(|c| (c.name, c.before, c.after))
            .collect();
        assert_eq!(
            got,
            [
                ("a".into(), "1".into(), "2".into()),
                ("b".into(), "1".into(), String::new()),
                ("d".into(), String::new(), "1".into()),
            ]
        );
    }

    #[tokio::test]
    async fn the_stream_sends_offsets_keeps_characters_whole_and_a_tail() {
        let (tx, mut rx) = mpsc::channel(16);
        let mut stream = Stream::new("c1".into(), tx);
        let e_acute = "é".as_bytes();
        stream.output(&[b'a', e_acute[0]]).await;
        stream.output(&[e_acute[1], b'b']).await;
        stream.finish().await;
        drop(stream);
        let mut pieces = Vec::new();
        while let Some(FromChild::CommandOutput(o)) = rx.recv().await {
            pieces.push((o.offset, o.text));
        }
        assert_eq!(pieces, [(0, "a".to_owned()), (1, "éb".to_owned())]);
    }

    #[tokio::test]
    async fn an_rpm_host_without_an_rpm_database_gets_a_clear_failure() {
        let (tx, _rx) = mpsc::channel(16);
        let mut stream = Stream::new("c1".into(), tx);
        let mut u = upgrade(true, &[], true);
        u.manager = Manager::Rpm;
        let (_stop_tx, stop) = watch::channel(false);
        let outcome = run(&u, Path::new("/nonexistent"), &mut stream, stop).await;
        assert_eq!(outcome.status, pb::CommandStatus::Failed);
        assert!(
            outcome.error.contains("no rpm database"),
            "{}",
            outcome.error
        );
    }

    #[test]
    fn dnf_is_asked_for_exactly_the_named_versions() {
        let mut u = upgrade(
            false,
            &[
                ("pal-a", "noarch", "1.1-1"),
                ("bash", "x86_64", "1:5.2-3.fc40"),
                ("curl", "", ""),
            ],
            false,
        );
        u.manager = Manager::Rpm;
        assert_eq!(
            dnf_upgrade_args(&u),
            [
                "-y",
                "upgrade",
                "pal-a-1.1-1.noarch",
                "bash-1:5.2-3.fc40.x86_64",
                "curl"
            ]
        );
        u.dry_run = true;
        u.all = true;
        let args = dnf_upgrade_args(&u);
        assert_eq!(
            args[..4],
            ["-q", "repoquery", "--upgrades", "--latest-limit=1"]
        );
        assert_eq!(args.len(), 6, "all: no package names");
    }

    #[test]
    fn dnf_is_pointed_only_at_what_the_root_has() {
        assert!(dnf_root_options(Path::new("/")).is_empty());
        let dir = tempfile::tempdir().expect("tempdir");
        let root = dir.path().to_owned();
        assert_eq!(
            dnf_root_options(&root),
            [format!("--installroot={}", root.display())]
        );
        std::fs::create_dir_all(root.join("etc/dnf")).expect("mkdir");
        std::fs::create_dir_all(root.join("etc/yum.repos.d")).expect("mkdir");
        std::fs::write(root.join("etc/dnf/dnf.conf"), "[main]\n").expect("write");
        let options = dnf_root_options(&root);
        assert_eq!(options.len(), 3);
        assert!(options[1].starts_with("--config=") && options[1].ends_with("etc/dnf/dnf.conf"));
        assert!(options[2].starts_with("--setopt=reposdir="));
    }

    #[test]
    fn offered_upgrades_are_matched_with_what_is_installed() {
        let row = |n: &str, a: &str, v: &str| query::Row {
            name: n.into(),
            arch: a.into(),
            evr: v.into(),
        };
        let installed: Versions = [
            (
                ("pal-a".to_owned(), "noarch".to_owned()),
                "1.0-1".to_owned(),
            ),
            (
                ("pal-b".to_owned(), "noarch".to_owned()),
                "1.0-1".to_owned(),
            ),
        ]
        .into();
        let got: Vec<(String, String, String, String)> = offered_changes(
            vec![
                row("pal-b", "x86_64", "1.1-1"),
                row("pal-a", "noarch", "2:1.1-1"),
            ],
            &installed,
        )
        .into_iter()
        .map(|c| (c.name, c.arch, c.before, c.after))
        .collect();
        assert_eq!(
            got,
            [
                (
                    "pal-a".into(),
                    "noarch".into(),
                    "1.0-1".into(),
                    "2:1.1-1".into()
                ),
                (
                    "pal-b".into(),
                    "x86_64".into(),
                    "1.0-1".into(),
                    "1.1-1".into()
                ),
            ]
        );
    }
}
