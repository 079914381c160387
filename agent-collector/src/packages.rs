//! The host's package inventory, read from the package databases and the
//! package manager's own index files (the collector may not run the package
//! manager: no exec, no network, read-only), and what is sent of it.
//!
//! - [`read`]: one reading: installed packages, the updates the next
//!   upgrade would install (with their security classification), whether a
//!   reboot is needed and why, when the indexes were last refreshed. Debian
//!   and Ubuntu from `/var/lib/dpkg/status`, `/var/lib/apt/lists` and apt's
//!   pins; RHEL and Fedora from `rpmdb.sqlite`, dnf's configuration and the
//!   repository metadata dnf cached. The parsing and the upgrade plans are
//!   `palisade_packages` (fuzzed, checked against apt and dnf themselves).
//! - [`Uploads`]: what to send after a reading or when the backend says
//!   which inventory it holds: nothing when it holds this one, a change
//!   from the one it holds when that is known here, else the whole
//!   inventory; cut into steps that fit a frame.
//! - [`Watcher`]: inotify on the files a reading comes from, so a package
//!   operation (whoever ran it) is read and sent within seconds, and
//!   nothing is read or sent while nothing changes.
//!
//! Not read: which running services still map deleted libraries. That
//! needs `/proc/PID/maps` of other users' processes, which the collector's
//! sandbox (own user, no capabilities) rightly cannot read.

use std::collections::BTreeMap;
use std::io;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use nix::sys::inotify::{AddWatchFlags, InitFlags, Inotify, WatchDescriptor};
use palisade_packages::NamedFile;
use palisade_packages::deb::apt::{AptError, AptState, is_preferences_name};
use palisade_packages::deb::upgrade::Options as AptOptions;
use palisade_packages::inventory::{Delta, Digest, Inventory};
use palisade_packages::reboot::{self, KernelVerdict, RunningKernel};
use palisade_packages::rpm::dnf::{DnfError, DnfState, RepoMetadata};
use palisade_packages::rpm::{HeaderError, InstalledRpm, RepoMd};
use palisade_proto::packages::{Change, change_to_wire};
use palisade_proto::pb;
use prost::Message;
use tokio::time::Instant;

use crate::sample::Sources;

/// Where dpkg keeps its database.
const DPKG_STATUS: &str = "/var/lib/dpkg/status";
const APT_LISTS: &str = "/var/lib/apt/lists";
const APT_PREFERENCES: &str = "/etc/apt/preferences";
const APT_PREFERENCES_D: &str = "/etc/apt/preferences.d";
/// The rpm database: `/usr/lib/sysimage/rpm` on current Fedora (with
/// `/var/lib/rpm` a link to it), `/var/lib/rpm` on RHEL 9.
const RPM_DATABASES: [&str; 2] = [
    "/usr/lib/sysimage/rpm/rpmdb.sqlite",
    "/var/lib/rpm/rpmdb.sqlite",
];
/// The Berkeley DB database of RHEL 8 and older: not read (named as a
/// problem instead).
const RPM_BDB: &str = "/var/lib/rpm/Packages";
const DNF_CONF: &str = "/etc/dnf/dnf.conf";
const YUM_REPOS_D: &str = "/etc/yum.repos.d";
const VERSIONLOCK: &str = "/etc/dnf/plugins/versionlock.list";
/// Where dnf 4 and dnf 5 cache each repository's metadata
/// (`<id>-<16 hex digits>/repodata/`).
const DNF_CACHES: [&str; 2] = ["/var/cache/dnf", "/var/cache/libdnf5"];
/// Written by Debian's and Ubuntu's package scripts when an upgrade wants
/// a reboot (with the packages in `.pkgs`).
const REBOOT_REQUIRED: &str = "/run/reboot-required";

/// Largest file read whole (apt's biggest indexes are ~70 MB uncompressed,
/// kept compressed on most systems); anything larger is a problem, not a
/// reason to exhaust memory.
const MAX_FILE: u64 = 256 * 1024 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum PackagesError {
    #[error("could not read {}: {error}", path.display())]
    Read { path: PathBuf, error: io::Error },
    #[error("{} is larger than {MAX_FILE} bytes", path.display())]
    TooLarge { path: PathBuf },
    #[error("apt's state: {0}")]
    Apt(#[from] AptError),
    #[error("dnf's configuration: {0}")]
    Dnf(#[from] DnfError),
    #[error("the rpm database {}: {error}", path.display())]
    RpmDb {
        path: PathBuf,
        error: rusqlite::Error,
    },
}

/// One reading of the host's packages.
#[derive(Debug, Clone, PartialEq)]
pub struct Reading {
    pub inventory: Inventory,
    pub reboot_required: bool,
    /// Why, in words.
    pub reboot_reasons: Vec<String>,
    /// When the package manager's indexes were last refreshed: the oldest
    /// of apt's Release files or of dnf's cached `repomd.xml` (one source
    /// that stopped refreshing makes the whole view stale).
    pub lists_updated_at_ms: Option<i64>,
    /// What could not be used (a bad entry, an unreadable index); the rest
    /// still is.
    pub problems: Vec<String>,
}

/// Reads the host's packages; `None` when it has neither a dpkg nor an rpm
/// database.
pub fn read(sources: &Sources) -> Result<Option<Reading>, PackagesError> {
    if sources.path(DPKG_STATUS).is_file() {
        return read_dpkg(sources).map(Some);
    }
    if let Some(db) = RPM_DATABASES
        .iter()
        .map(|p| sources.path(p))
        .find(|p| p.is_file())
    {
        return read_rpm(sources, &db).map(Some);
    }
    if sources.path(RPM_BDB).is_file() {
        tracing::warn!(
            "this host's rpm database is Berkeley DB (RHEL 8 and older), which the collector does not read"
        );
    }
    Ok(None)
}

fn read_dpkg(sources: &Sources) -> Result<Reading, PackagesError> {
    let mut problems = Vec::new();
    let status = read_file(&sources.path(DPKG_STATUS))?;
    // `lock` is apt's lock (root's, 0640), not a list.
    let lists = read_dir(
        &sources.path(APT_LISTS),
        &|name| name != "lock",
        &mut problems,
    )?;
    let lists_updated_at_ms = lists_age(&sources.path(APT_LISTS), &lists, &|name| {
        name.ends_with("_Release") || name.ends_with("_InRelease")
    });
    let mut preferences = Vec::new();
    if let Some(contents) = read_optional(&sources.path(APT_PREFERENCES))? {
        preferences.push(NamedFile {
            name: "preferences".to_owned(),
            contents,
        });
    }
    preferences.extend(read_dir(
        &sources.path(APT_PREFERENCES_D),
        &is_preferences_name,
        &mut problems,
    )?);
    let state = AptState::from_files(&status, &lists, &preferences)?;
    // dpkg's own package has the native architecture (what
    // `dpkg --print-architecture` prints); the collector may not run it.
    let native_architecture = state
        .status
        .installed()
        .find(|p| p.name == "dpkg")
        .map(|p| p.architecture.clone())
        .unwrap_or_else(|| debian_architecture().to_owned());
    let options = AptOptions {
        native_architecture,
        default_release: None,
        phasing: sources.path("/etc/machine-id").is_file(),
    };
    let plan = state.plan(&options);
    let inventory = Inventory::from_apt(&state.status, &plan);
    problems.extend(state.problems.iter().map(ToString::to_string));
    problems.extend(state.status.problems.iter().map(ToString::to_string));

    let mut reasons = Vec::new();
    match running_kernel(sources) {
        Ok(running) => {
            kernel_reason(
                reboot::debian_kernel(&running, state.status.installed()),
                &mut reasons,
            );
        }
        Err(error) => problems.push(format!("running kernel: {error}")),
    }
    if sources.path(REBOOT_REQUIRED).exists() {
        let packages = read_optional(&sources.path(&format!("{REBOOT_REQUIRED}.pkgs")))?
            .map(|bytes| {
                let text = String::from_utf8_lossy(&bytes);
                let mut names: Vec<&str> = text.split_whitespace().collect();
                names.sort_unstable();
                names.dedup();
                names.join(", ")
            })
            .unwrap_or_default();
        reasons.push(if packages.is_empty() {
            "/run/reboot-required exists".to_owned()
        } else {
            format!("/run/reboot-required exists (for {packages})")
        });
    }
    Ok(Reading {
        inventory,
        reboot_required: !reasons.is_empty(),
        reboot_reasons: reasons,
        lists_updated_at_ms,
        problems,
    })
}

fn read_rpm(sources: &Sources, db: &Path) -> Result<Reading, PackagesError> {
    let mut problems = Vec::new();
    let installed = read_rpmdb(db, &mut problems)?;
    let conf = read_optional(&sources.path(DNF_CONF))?.unwrap_or_default();
    let repo_files = read_dir(
        &sources.path(YUM_REPOS_D),
        &|name| name.ends_with(".repo"),
        &mut problems,
    )?;
    let (metadata, oldest) = dnf_metadata(sources, &mut problems)?;
    let versionlock = read_optional(&sources.path(VERSIONLOCK))?;
    let state = DnfState::from_files(
        installed,
        &conf,
        &repo_files,
        &metadata,
        versionlock.as_deref(),
    )?;
    problems.extend(state.problems.iter().map(ToString::to_string));
    let plan = state.plan(std::env::consts::ARCH);
    let inventory = Inventory::from_dnf(&state.installed, &plan);
    let mut reasons = Vec::new();
    match running_kernel(sources) {
        Ok(running) => kernel_reason(reboot::rpm_kernel(&running, &state.installed), &mut reasons),
        Err(error) => problems.push(format!("running kernel: {error}")),
    }
    Ok(Reading {
        inventory,
        reboot_required: !reasons.is_empty(),
        reboot_reasons: reasons,
        lists_updated_at_ms: oldest,
        problems,
    })
}

/// Every package header of `rpmdb.sqlite`, opened read-only (rpm keeps it
/// in WAL mode; SQLite reads such a database without writing as long as
/// its `-shm` file exists, which rpm leaves in place). A header that does
/// not parse is a problem, not a reason to drop the rest.
fn read_rpmdb(path: &Path, problems: &mut Vec<String>) -> Result<Vec<InstalledRpm>, PackagesError> {
    let error = |error| PackagesError::RpmDb {
        path: path.to_owned(),
        error,
    };
    let db = rusqlite::Connection::open_with_flags(
        path,
        rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(error)?;
    let mut statement = db
        .prepare("SELECT hnum, blob FROM Packages ORDER BY hnum")
        .map_err(error)?;
    let mut rows = statement.query([]).map_err(error)?;
    let mut installed = Vec::new();
    while let Some(row) = rows.next().map_err(error)? {
        let hnum: i64 = row.get(0).map_err(error)?;
        let blob: Vec<u8> = row.get(1).map_err(error)?;
        match InstalledRpm::from_header_blob(&blob) {
            Ok(package) => installed.push(package),
            Err(e) => problems.push(header_problem(hnum, &e)),
        }
    }
    Ok(installed)
}

fn header_problem(hnum: i64, error: &HeaderError) -> String {
    format!("rpm database entry {hnum}: {error}")
}

/// The metadata dnf cached for each repository (the newest cache of an id
/// when there are several), reading only the files `repomd.xml` names for
/// the primary list and the advisories (not the much larger file lists);
/// and when the oldest of them was fetched.
fn dnf_metadata(
    sources: &Sources,
    problems: &mut Vec<String>,
) -> Result<(Vec<RepoMetadata>, Option<i64>), PackagesError> {
    let mut newest: BTreeMap<String, (SystemTime, PathBuf)> = BTreeMap::new();
    for cache in DNF_CACHES {
        let dir = sources.path(cache);
        let entries = match std::fs::read_dir(&dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(error) => return Err(PackagesError::Read { path: dir, error }),
        };
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            let Some(id) = cache_repo_id(&name) else {
                continue;
            };
            let repodata = entry.path().join("repodata");
            let Ok(modified) =
                std::fs::metadata(repodata.join("repomd.xml")).and_then(|m| m.modified())
            else {
                continue;
            };
            if newest.get(id).is_none_or(|(t, _)| modified > *t) {
                newest.insert(id.to_owned(), (modified, repodata));
            }
        }
    }
    let mut metadata = Vec::new();
    let mut oldest: Option<SystemTime> = None;
    for (id, (modified, repodata)) in newest {
        let repomd = read_file(&repodata.join("repomd.xml"))?;
        let parsed = match RepoMd::parse(&repomd) {
            Ok(parsed) => parsed,
            Err(e) => {
                problems.push(format!("repository {id}: repomd.xml: {e}"));
                continue;
            }
        };
        let mut files = Vec::new();
        for data in [parsed.primary(), parsed.updateinfo()]
            .into_iter()
            .flatten()
        {
            let name = data.href.rsplit('/').next().unwrap_or(&data.href);
            if name.is_empty() || name.contains("..") {
                continue;
            }
            if let Some(contents) = read_optional(&repodata.join(name))? {
                files.push(NamedFile {
                    name: name.to_owned(),
                    contents,
                });
            }
        }
        oldest = Some(oldest.map_or(modified, |o| o.min(modified)));
        metadata.push(RepoMetadata { id, repomd, files });
    }
    Ok((metadata, oldest.and_then(unix_ms)))
}

/// `fedora-1a2b3c4d5e6f7a8b` → `fedora`.
fn cache_repo_id(name: &str) -> Option<&str> {
    let (id, hash) = name.rsplit_once('-')?;
    (!id.is_empty() && hash.len() == 16 && hash.bytes().all(|b| b.is_ascii_hexdigit()))
        .then_some(id)
}

fn running_kernel(sources: &Sources) -> Result<RunningKernel, PackagesError> {
    let text = |absolute: &str| -> Result<String, PackagesError> {
        Ok(String::from_utf8_lossy(&read_file(&sources.path(absolute))?).into_owned())
    };
    let signature = read_optional(&sources.path("/proc/version_signature"))?
        .map(|b| String::from_utf8_lossy(&b).into_owned());
    Ok(RunningKernel::from_proc(
        &text("/proc/sys/kernel/osrelease")?,
        &text("/proc/sys/kernel/version")?,
        signature.as_deref(),
    ))
}

fn kernel_reason(verdict: KernelVerdict, reasons: &mut Vec<String>) {
    match verdict {
        KernelVerdict::NewerInstalled { release, version } => {
            reasons.push(format!("newer kernel {release} ({version}) installed"));
        }
        KernelVerdict::Rebuilt { running, installed } => reasons.push(format!(
            "the running kernel's package was rebuilt ({running} running, {installed} installed)"
        )),
        KernelVerdict::Current => {}
        KernelVerdict::Unknown { reason } => {
            tracing::debug!(reason, "cannot tell whether the kernel is current");
        }
    }
}

/// The Debian name of this build's architecture, for a status file without
/// a dpkg entry (a minimal root).
fn debian_architecture() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "x86" => "i386",
        "powerpc64" => "ppc64el",
        "arm" => "armhf",
        other => other,
    }
}

/// The oldest modification time of the list files `is_release` picks.
fn lists_age(dir: &Path, lists: &[NamedFile], is_release: &dyn Fn(&str) -> bool) -> Option<i64> {
    lists
        .iter()
        .filter(|f| is_release(&f.name))
        .filter_map(|f| std::fs::metadata(dir.join(&f.name)).ok()?.modified().ok())
        .min()
        .and_then(unix_ms)
}

fn unix_ms(t: SystemTime) -> Option<i64> {
    i64::try_from(t.duration_since(UNIX_EPOCH).ok()?.as_millis()).ok()
}

fn read_file(path: &Path) -> Result<Vec<u8>, PackagesError> {
    read_optional(path)?.ok_or_else(|| PackagesError::Read {
        path: path.to_owned(),
        error: io::ErrorKind::NotFound.into(),
    })
}

/// The file's contents, `None` when it does not exist.
fn read_optional(path: &Path) -> Result<Option<Vec<u8>>, PackagesError> {
    use std::io::Read;
    let file = match std::fs::File::open(path) {
        Ok(file) => file,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(error) => {
            return Err(PackagesError::Read {
                path: path.to_owned(),
                error,
            });
        }
    };
    let mut contents = Vec::new();
    file.take(MAX_FILE + 1)
        .read_to_end(&mut contents)
        .map_err(|error| PackagesError::Read {
            path: path.to_owned(),
            error,
        })?;
    if contents.len() as u64 > MAX_FILE {
        return Err(PackagesError::TooLarge {
            path: path.to_owned(),
        });
    }
    Ok(Some(contents))
}

/// The regular files of `dir` whose names `keep` accepts, sorted by name;
/// none when the directory does not exist.
/// A file that cannot be read (permissions) is a problem, not a failure.
fn read_dir(
    dir: &Path,
    keep: &dyn Fn(&str) -> bool,
    problems: &mut Vec<String>,
) -> Result<Vec<NamedFile>, PackagesError> {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(error) => {
            return Err(PackagesError::Read {
                path: dir.to_owned(),
                error,
            });
        }
    };
    let mut files = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|error| PackagesError::Read {
            path: dir.to_owned(),
            error,
        })?;
        let Ok(name) = entry.file_name().into_string() else {
            continue;
        };
        if !keep(&name) || !entry.file_type().is_ok_and(|t| t.is_file()) {
            continue;
        }
        // A file that vanished between the listing and the read (apt
        // replacing its lists) is skipped; the watcher sees the change.
        match read_optional(&entry.path()) {
            Ok(Some(contents)) => files.push(NamedFile { name, contents }),
            Ok(None) => {}
            Err(PackagesError::Read { path, error })
                if error.kind() == io::ErrorKind::PermissionDenied =>
            {
                problems.push(format!("cannot read {}: {error}", path.display()));
            }
            Err(e) => return Err(e),
        }
    }
    files.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(files)
}

// ---------------------------------------------------------------------------
// What is sent

/// Most bytes of the packages in one report; a larger change is sent in
/// steps (each a change of the previous one), so every report fits a local
/// frame and a spool record with room to spare.
pub const MAX_REPORT_PACKAGE_BYTES: usize = 256 * 1024;

/// What the collector has told the backend about its packages, and decides
/// what to tell it next.
#[derive(Debug, Default)]
pub struct Uploads {
    /// The latest reading.
    current: Option<Reading>,
    /// The reboot status and index age last sent: a change of either alone
    /// is sent as an empty change.
    sent_extras: Option<(bool, Vec<String>, Option<i64>)>,
    /// The last few inventories sent, newest last: the base of a change
    /// when the backend names one of them. The newest is what the backend
    /// will hold once everything sent is stored; empty until the backend
    /// said what it holds (nothing is sent before: the agent may be
    /// offline, and the backend may hold this very one).
    history: std::collections::VecDeque<Inventory>,
    /// What the backend said it holds before anything was read here,
    /// answered by the first reading.
    held_before_reading: Option<Option<Digest>>,
}

/// How many sent inventories are kept as possible bases.
const HISTORY: usize = 3;

impl Uploads {
    fn remember(&mut self, inventory: Inventory) {
        if self.history.back() != Some(&inventory) {
            self.history.push_back(inventory);
            if self.history.len() > HISTORY {
                self.history.pop_front();
            }
        }
    }

    /// The backend holds the inventory with digest `held` (`None`: nothing
    /// to build on). Returns the reports to send.
    pub fn held(&mut self, held: Option<Digest>, now_ms: i64) -> Vec<pb::PackageReport> {
        let Some(reading) = self.current.clone() else {
            // Nothing read yet: the first reading answers.
            self.held_before_reading = Some(held);
            return Vec::new();
        };
        let reports = match held {
            // It holds this one: nothing, unless this collector does not
            // know which reboot status it has (it restarted since).
            Some(h) if h == reading.inventory.digest() => {
                if self.sent_extras.as_ref() == Some(&extras(&reading)) {
                    Vec::new()
                } else {
                    steps(Some(&reading.inventory), &reading, now_ms)
                }
            }
            // One this collector sent before (the last change may still be
            // on its way: the backend takes a change whose result it
            // already holds as done).
            Some(h) => match self.history.iter().find(|i| i.digest() == h) {
                Some(base) => steps(Some(base), &reading, now_ms),
                None => steps(None, &reading, now_ms),
            },
            None => steps(None, &reading, now_ms),
        };
        self.sent_extras = Some(extras(&reading));
        self.remember(reading.inventory);
        reports
    }

    /// A new reading. Returns the reports to send: nothing when it equals
    /// what was sent, or before the backend said what it holds.
    pub fn read(&mut self, reading: Reading, now_ms: i64) -> Vec<pb::PackageReport> {
        if self.current.is_none()
            && let Some(held) = self.held_before_reading.take()
        {
            self.current = Some(reading);
            return self.held(held, now_ms);
        }
        let reports = match self.history.back() {
            None => Vec::new(),
            Some(sent)
                if sent.digest() == reading.inventory.digest()
                    && self.sent_extras.as_ref() == Some(&extras(&reading)) =>
            {
                Vec::new()
            }
            Some(sent) => steps(Some(sent), &reading, now_ms),
        };
        if !self.history.is_empty() {
            self.remember(reading.inventory.clone());
            self.sent_extras = Some(extras(&reading));
        }
        self.current = Some(reading);
        reports
    }
}

fn extras(reading: &Reading) -> (bool, Vec<String>, Option<i64>) {
    (
        reading.reboot_required,
        reading.reboot_reasons.clone(),
        reading.lists_updated_at_ms,
    )
}

/// The reports that take the backend from `base` (`None`: nothing) to
/// `reading`: one when it fits [`MAX_REPORT_PACKAGE_BYTES`], else a whole
/// inventory of the first packages and changes adding the rest.
pub fn steps(base: Option<&Inventory>, reading: &Reading, now_ms: i64) -> Vec<pb::PackageReport> {
    let target = &reading.inventory;
    let report = |change: &Change| pb::PackageReport {
        collected_at_unix_ms: now_ms,
        lists_updated_at_unix_ms: reading.lists_updated_at_ms.unwrap_or(0),
        reboot_required: reading.reboot_required,
        reboot_reasons: reading.reboot_reasons.clone(),
        change: Some(change_to_wire(change)),
    };
    let mut reports = Vec::new();
    let mut at = match base {
        Some(base) if base.manager == target.manager => base.clone(),
        _ => {
            // The whole: its first part, then changes.
            let mut first = Inventory::empty(target.manager);
            let mut size = 0;
            let mut full = false;
            for (key, package) in &target.installed {
                size += palisade_proto::packages::installed_to_wire(package).encoded_len();
                if size > MAX_REPORT_PACKAGE_BYTES {
                    full = true;
                    break;
                }
                first.installed.insert(key.clone(), package.clone());
            }
            // The updates too, while they fit: a usual host's whole
            // inventory is one report.
            for (key, update) in target.updates.iter().take_while(|_| !full) {
                size += palisade_proto::packages::update_to_wire(update).encoded_len();
                if size > MAX_REPORT_PACKAGE_BYTES {
                    break;
                }
                first.updates.insert(key.clone(), update.clone());
            }
            reports.push(report(&Change::Whole(first.clone())));
            first
        }
    };
    loop {
        let delta = at.diff(target);
        if delta.is_empty() && !reports.is_empty() {
            return reports;
        }
        let step = bounded(&at, delta);
        reports.push(report(&Change::Delta(step.clone())));
        at = at.apply(&step).unwrap_or_else(|_| target.clone());
        if step.result == target.digest() {
            return reports;
        }
    }
}

/// The first part of `delta` that fits [`MAX_REPORT_PACKAGE_BYTES`], as a
/// change of `from` with its own result digest.
fn bounded(from: &Inventory, delta: Delta) -> Delta {
    let size: usize = delta
        .installed_set
        .iter()
        .map(|p| palisade_proto::packages::installed_to_wire(p).encoded_len())
        .chain(
            delta
                .updates_set
                .iter()
                .map(|u| palisade_proto::packages::update_to_wire(u).encoded_len()),
        )
        .sum::<usize>()
        + (delta.installed_removed.len() + delta.updates_removed.len()) * 64;
    if size <= MAX_REPORT_PACKAGE_BYTES {
        return delta;
    }
    let mut next = from.clone();
    let mut budget = MAX_REPORT_PACKAGE_BYTES;
    let mut take = |cost: usize| {
        if cost > budget {
            return false;
        }
        budget -= cost;
        true
    };
    for key in &delta.installed_removed {
        if !take(64) {
            break;
        }
        next.installed.remove(key);
    }
    for key in &delta.updates_removed {
        if !take(64) {
            break;
        }
        next.updates.remove(key);
    }
    for p in &delta.installed_set {
        if !take(palisade_proto::packages::installed_to_wire(p).encoded_len()) {
            break;
        }
        next.insert_installed(p.clone());
    }
    for u in &delta.updates_set {
        if !take(palisade_proto::packages::update_to_wire(u).encoded_len()) {
            break;
        }
        next.insert_update(u.clone());
    }
    from.diff(&next)
}

// ---------------------------------------------------------------------------
// Watching

/// How long the watched files must stay quiet before they are read: dpkg
/// rewrites its status file many times during one operation.
pub const QUIET: Duration = Duration::from_secs(2);
/// Read at the latest this long after the first change, however busy.
pub const MAX_DELAY: Duration = Duration::from_secs(30);

/// The directories a reading depends on and the names in them that
/// matter (`None`: any).
const WATCHED: &[(&str, Option<&[&str]>)] = &[
    ("/var/lib/dpkg", Some(&["status"])),
    ("/var/lib/apt/lists", None),
    ("/etc/apt", Some(&["preferences"])),
    ("/etc/apt/preferences.d", None),
    ("/usr/lib/sysimage/rpm", None),
    ("/var/lib/rpm", None),
    ("/etc/dnf", Some(&["dnf.conf"])),
    ("/etc/dnf/plugins", Some(&["versionlock.list"])),
    ("/etc/yum.repos.d", None),
    ("/var/cache/dnf", None),
    ("/var/cache/libdnf5", None),
    ("/run", Some(&["reboot-required", "reboot-required.pkgs"])),
];

/// inotify on [`WATCHED`]: [`Watcher::changed`] resolves once the files
/// changed and then stayed quiet for [`QUIET`].
pub struct Watcher {
    /// A relevant event happened (sent by the thread that reads inotify:
    /// blocking reads on a thread of their own keep this crate free of
    /// `unsafe`, which registering the descriptor with tokio would need).
    events: tokio::sync::mpsc::Receiver<()>,
    watched: usize,
    /// When the pending change must be read (kept here, not in the future,
    /// so a cancelled wait loses nothing).
    due: Option<(Instant, Instant)>,
}

impl Watcher {
    /// Watches the directories of [`WATCHED`] that exist under `sources`.
    pub fn new(sources: &Sources) -> io::Result<Watcher> {
        let inotify = Inotify::init(InitFlags::IN_CLOEXEC)?;
        let mask = AddWatchFlags::IN_CLOSE_WRITE
            | AddWatchFlags::IN_MOVED_TO
            | AddWatchFlags::IN_MOVED_FROM
            | AddWatchFlags::IN_CREATE
            | AddWatchFlags::IN_DELETE;
        let mut watches = Vec::new();
        for (dir, names) in WATCHED {
            let path = sources.path(dir);
            if !path.is_dir() {
                continue;
            }
            match inotify.add_watch(&path, mask) {
                Ok(wd) => watches.push((wd, *names)),
                Err(e) => {
                    tracing::warn!(path = %path.display(), error = %e, "cannot watch for package changes")
                }
            }
        }
        let watched = watches.len();
        let (tx, events) = tokio::sync::mpsc::channel(1);
        std::thread::Builder::new()
            .name("inotify".to_owned())
            .spawn(move || read_events(&inotify, &watches, &tx))?;
        Ok(Watcher {
            events,
            watched,
            due: None,
        })
    }

    /// How many directories are watched.
    pub fn watched(&self) -> usize {
        self.watched
    }

    /// Waits for a change that then stayed quiet. Cancel-safe.
    pub async fn changed(&mut self) -> io::Result<()> {
        loop {
            let deadline = self.due.map(|(quiet, latest)| quiet.min(latest));
            tokio::select! {
                event = self.events.recv() => {
                    if event.is_none() {
                        return Err(io::Error::other("the inotify reader stopped"));
                    }
                    let now = Instant::now();
                    let latest = self.due.map_or(now + MAX_DELAY, |(_, l)| l);
                    self.due = Some((now + QUIET, latest));
                }
                () = sleep_until(deadline) => {
                    self.due = None;
                    return Ok(());
                }
            }
        }
    }
}

/// The inotify thread: reads events until the watcher is gone, telling it
/// about the relevant ones (one pending notice is enough).
fn read_events(
    inotify: &Inotify,
    watches: &[(WatchDescriptor, Option<&'static [&'static str]>)],
    tx: &tokio::sync::mpsc::Sender<()>,
) {
    loop {
        let events = match inotify.read_events() {
            Ok(events) => events,
            Err(nix::errno::Errno::EINTR) => continue,
            Err(e) => {
                tracing::error!(error = %e, "cannot read inotify events; package changes are no longer seen");
                return;
            }
        };
        let relevant = events.iter().any(|e| {
            watches.iter().any(|(wd, names)| {
                *wd == e.wd
                    && names.is_none_or(|names| {
                        e.name
                            .as_ref()
                            .is_some_and(|n| names.iter().any(|want| n == want))
                    })
            })
        });
        if relevant {
            match tx.try_send(()) {
                Ok(()) | Err(tokio::sync::mpsc::error::TrySendError::Full(())) => {}
                Err(tokio::sync::mpsc::error::TrySendError::Closed(())) => return,
            }
        }
    }
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use palisade_packages::inventory::{Installed, Manager, Status, Update};

    fn inventory(n: usize, version: &str) -> Inventory {
        let mut i = Inventory::empty(Manager::Dpkg);
        for k in 0..n {
            i.insert_installed(Installed {
                name: format!("package-with-a-longish-name-{k:05}"),
                arch: "amd64".into(),
                version: version.into(),
                source: format!("source-{k:05}"),
                held: false,
            });
        }
        i
    }

    fn reading(inventory: Inventory) -> Reading {
        Reading {
            inventory,
            reboot_required: false,
            reboot_reasons: Vec::new(),
            lists_updated_at_ms: Some(1),
            problems: Vec::new(),
        }
    }

    /// Applies reports as the backend does.
    fn apply(mut held: Option<Inventory>, reports: &[pb::PackageReport]) -> Option<Inventory> {
        for r in reports {
            match palisade_proto::packages::change_from_wire(r.change.as_ref()).expect("decodes") {
                Change::Whole(i) => held = Some(i),
                Change::Delta(d) => {
                    let h = held.as_ref().expect("a change needs a base");
                    held = Some(if h.digest() == d.result {
                        h.clone()
                    } else {
                        h.apply(&d).expect("applies")
                    });
                }
            }
        }
        held
    }

    #[test]
    fn nothing_is_sent_before_the_backend_says_what_it_holds_nor_when_nothing_changed() {
        let mut up = Uploads::default();
        let a = inventory(3, "1.0");
        // The backend's word before the first reading: the reading answers.
        let mut early = Uploads::default();
        assert!(early.held(Some(a.digest()), 1).is_empty());
        let answer = early.read(reading(a.clone()), 1);
        assert_eq!(apply(Some(a.clone()), &answer), Some(a.clone()));
        assert!(
            up.read(reading(a.clone()), 1).is_empty(),
            "offline: nothing yet"
        );
        let first = up.held(None, 2);
        assert_eq!(first.len(), 1);
        assert!(matches!(
            first[0].change,
            Some(pb::package_report::Change::Whole(_))
        ));
        assert!(up.read(reading(a.clone()), 3).is_empty(), "unchanged");
        assert!(up.held(Some(a.digest()), 4).is_empty(), "it holds this one");
    }

    #[test]
    fn a_change_is_sent_as_a_change_and_a_backend_that_lost_it_gets_the_whole() {
        let mut up = Uploads::default();
        let a = inventory(3, "1.0");
        up.read(reading(a.clone()), 1);
        // It holds this one, but this collector does not know which reboot
        // status it has: one empty change.
        let first = up.held(Some(a.digest()), 2);
        assert_eq!(first.len(), 1);
        assert_eq!(apply(Some(a.clone()), &first), Some(a.clone()));
        assert!(up.held(Some(a.digest()), 2).is_empty());
        let mut b = a.clone();
        let mut u = Update {
            name: "package-with-a-longish-name-00001".into(),
            arch: "amd64".into(),
            installed: "1.0".into(),
            candidate: "1.1".into(),
            security: true,
            status: Status::Pending,
            detail: String::new(),
            origins: vec!["Debian/bookworm-security".into()],
            advisories: Vec::new(),
            severity: String::new(),
            cves: Vec::new(),
        };
        b.insert_update(u.clone());
        let reports = up.read(reading(b.clone()), 3);
        assert_eq!(reports.len(), 1);
        assert!(matches!(
            reports[0].change,
            Some(pb::package_report::Change::Delta(_))
        ));
        assert_eq!(apply(Some(a.clone()), &reports), Some(b.clone()));

        // The backend refused something and holds nothing to build on.
        let whole = up.held(None, 4);
        assert_eq!(apply(None, &whole), Some(b.clone()));
        // It holds an inventory this collector never sent (restored from a
        // backup): the whole again.
        u.candidate = "9".into();
        let mut other = b.clone();
        other.insert_update(u);
        let whole = up.held(Some(other.digest()), 5);
        assert!(matches!(
            whole[0].change,
            Some(pb::package_report::Change::Whole(_))
        ));
        assert_eq!(apply(None, &whole), Some(b));
    }

    #[test]
    fn a_reboot_status_change_alone_is_sent_as_an_empty_change() {
        let mut up = Uploads::default();
        let a = inventory(2, "1.0");
        up.read(reading(a.clone()), 1);
        up.held(Some(a.digest()), 2);
        let mut r = reading(a.clone());
        r.reboot_required = true;
        r.reboot_reasons = vec!["/run/reboot-required exists".into()];
        let reports = up.read(r, 3);
        assert_eq!(reports.len(), 1);
        assert!(reports[0].reboot_required);
        let Some(pb::package_report::Change::Delta(d)) = &reports[0].change else {
            panic!("a change: {reports:?}")
        };
        assert!(d.installed_set.is_empty() && d.base_sha256 == d.result_sha256);
    }

    #[test]
    fn a_large_inventory_goes_in_steps_that_each_fit_and_add_up() {
        let big = inventory(12_000, "1.0-1+deb12u1");
        let reports = steps(None, &reading(big.clone()), 1);
        assert!(reports.len() > 2, "{} reports", reports.len());
        for r in &reports {
            assert!(
                r.encoded_len() < 2 * MAX_REPORT_PACKAGE_BYTES,
                "{} bytes",
                r.encoded_len()
            );
        }
        assert_eq!(apply(None, &reports), Some(big.clone()));
        // A change of every package version, in steps too.
        let upgraded = inventory(12_000, "1.0-1+deb12u2");
        let reports = steps(Some(&big), &reading(upgraded.clone()), 2);
        assert!(reports.len() > 2);
        assert_eq!(apply(Some(big), &reports), Some(upgraded));
    }

    #[test]
    fn cache_directories_name_their_repository() {
        assert_eq!(cache_repo_id("fedora-1a2b3c4d5e6f7a8b"), Some("fedora"));
        assert_eq!(
            cache_repo_id("updates-testing-0123456789abcdef"),
            Some("updates-testing")
        );
        assert_eq!(cache_repo_id("fedora.solv"), None);
        assert_eq!(cache_repo_id("-0123456789abcdef"), None);
        assert_eq!(cache_repo_id("x-0123"), None);
    }
}
