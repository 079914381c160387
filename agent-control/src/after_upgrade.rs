//! What a real upgrade leaves to do, read by control once the package
//! manager is done: whether the host needs a reboot, and which services
//! still run files the upgrade replaced.
//!
//! **Reboot**: the collector's rules ([`palisade_packages::reboot`]): the
//! newest installed kernel of the running kernel's flavour is not the
//! running one, or (dpkg hosts) a package script created
//! `/run/reboot-required`. The package database and the flag are read
//! under the package root, the running kernel from the real `/proc`.
//!
//! **Restarts**: every process's `/proc/<pid>/maps` and `/proc/<pid>/cgroup`,
//! made into services to restart by [`palisade_packages::restart`] and
//! bounded as the wire allows ([`MAX_RESTARTS`] and the limits next to it;
//! what is left out is said in the output). Processes come and go while
//! they are read: one that is gone is skipped, and nothing about `/proc`
//! fails the command. Control's own process counts like any other: after
//! the agent's own package was upgraded, the agent's unit does need a
//! restart (the package manager has ended by then, so control has no
//! child left to count).
//!
//! Control runs as root without `CAP_SYS_PTRACE`, and the kernel's ptrace
//! access check lets a process read another's maps only with that
//! capability or as the same user, the other process dumpable (a test
//! machine's kernel also accepted `CAP_SYS_ADMIN`, which control keeps;
//! nothing here counts on that). So a maps file root may not read
//! is read again with this thread's filesystem ids set to the owner's
//! (`setfsuid`/`setfsgid`, per thread; the thread is one of its own and
//! ends after the scan). That reaches the services systemd starts as their
//! own users; a process that changed its own user (an nginx worker) stays
//! unreadable, and its unit is usually found through a sibling that did not
//! (the nginx master). The ones not read are counted in the output.

use std::collections::BTreeMap;
use std::io::{self, Read};
use std::path::{Path, PathBuf};

use nix::unistd::{Gid, Uid, setfsgid, setfsuid};
use palisade_agent_sys::package_root;
use palisade_packages::deb::StatusFile;
use palisade_packages::reboot::{
    self, KernelVerdict, REBOOT_REQUIRED_FLAG, RunningKernel, deleted_mappings,
};
use palisade_packages::restart::{
    self, Limits, ProcessFiles, Restarts, replaced_files, unit_from_cgroup,
};
use palisade_packages::rpm::{Evr, InstalledRpm};
use palisade_proto::msg::{
    MAX_RESTART_FILE_BYTES, MAX_RESTART_FILES, MAX_RESTART_PIDS, MAX_RESTARTS, MAX_STRING,
};
use palisade_proto::pb;

/// The real `/proc`.
pub const PROC: &str = "/proc";

/// The restarts a result may carry (the wire's limits).
pub const LIMITS: Limits = Limits {
    restarts: MAX_RESTARTS,
    pids: MAX_RESTART_PIDS,
    files: MAX_RESTART_FILES,
    file_len: MAX_STRING,
    total_file_bytes: MAX_RESTART_FILE_BYTES,
};

/// Most of one process's maps read (a process with a hundred thousand
/// mappings has about 10 MiB of them).
const MAX_MAPS: u64 = 16 * 1024 * 1024;

const DPKG_STATUS: &str = "/var/lib/dpkg/status";

/// Whether the host needs a reboot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RebootStatus {
    /// `None` when it cannot be told (nothing could be read).
    pub required: Option<bool>,
    /// Why it is required, in words.
    pub reasons: Vec<String>,
    /// What could not be read.
    pub problems: Vec<String>,
}

/// Installed versions by (name, architecture), as the upgrade read them.
pub type Versions = BTreeMap<(String, String), String>;

/// The reboot status of a dpkg system at `root` (its status file and
/// `/run/reboot-required` under it), the running kernel read from `proc`.
pub fn dpkg_reboot(root: &Path, proc: &Path) -> RebootStatus {
    let mut problems = Vec::new();
    let mut reasons = Vec::new();
    let status_path = package_root::under(root, DPKG_STATUS);
    let verdict = std::fs::read(&status_path)
        .map_err(|e| e.to_string())
        .and_then(|bytes| StatusFile::parse(&bytes).map_err(|e| e.to_string()))
        .map_err(|e| format!("cannot read {}: {e}", status_path.display()))
        .and_then(|status| {
            let running = running_kernel(proc)?;
            Ok(reboot::debian_kernel(&running, status.installed()))
        });
    let kernel_known = kernel_reason(verdict, &mut reasons, &mut problems);
    let flag = package_root::under(root, REBOOT_REQUIRED_FLAG);
    let flag_known = match std::fs::symlink_metadata(&flag) {
        Ok(_) => {
            let pkgs = std::fs::read(package_root::under(
                root,
                &format!("{REBOOT_REQUIRED_FLAG}.pkgs"),
            ))
            .ok()
            .map(|bytes| String::from_utf8_lossy(&bytes).into_owned());
            reasons.push(reboot::flag_reason(pkgs.as_deref()));
            true
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => true,
        Err(e) => {
            problems.push(format!("cannot read {}: {e}", flag.display()));
            false
        }
    };
    RebootStatus {
        // The flag's absence alone says nothing about the kernel.
        required: if !reasons.is_empty() {
            Some(true)
        } else {
            (kernel_known && flag_known).then_some(false)
        },
        reasons,
        problems,
    }
}

/// The reboot status of an rpm system whose packages are `installed` (as
/// `rpm -qa` listed them after the run), the running kernel read from
/// `proc`. (RPM systems have no flag file.)
pub fn rpm_reboot(installed: Result<&Versions, &String>, proc: &Path) -> RebootStatus {
    let mut problems = Vec::new();
    let mut reasons = Vec::new();
    let verdict = installed
        .map_err(|e| format!("the installed packages: {e}"))
        .and_then(|versions| {
            let running = running_kernel(proc)?;
            let kernels: Vec<InstalledRpm> = versions
                .iter()
                .filter(|((name, _), _)| name.starts_with("kernel"))
                .filter_map(|((name, arch), evr)| installed_rpm(name, arch, evr))
                .collect();
            Ok(reboot::rpm_kernel(&running, &kernels))
        });
    let known = kernel_reason(verdict, &mut reasons, &mut problems);
    RebootStatus {
        required: known.then_some(!reasons.is_empty()),
        reasons,
        problems,
    }
}

fn installed_rpm(name: &str, arch: &str, evr: &str) -> Option<InstalledRpm> {
    let evr = Evr::parse(evr).ok()?;
    Some(InstalledRpm {
        name: name.to_owned(),
        epoch: (evr.epoch() != 0).then_some(evr.epoch()),
        version: evr.version().to_owned(),
        release: evr.release().unwrap_or_default().to_owned(),
        arch: Some(arch.to_owned()),
        source_rpm: None,
        install_time: None,
    })
}

/// Adds the kernel's reason or the problem; whether the check was made.
fn kernel_reason(
    verdict: Result<KernelVerdict, String>,
    reasons: &mut Vec<String>,
    problems: &mut Vec<String>,
) -> bool {
    match verdict {
        Ok(verdict) => {
            if let KernelVerdict::Unknown { reason } = &verdict {
                tracing::debug!(reason, "cannot tell whether the kernel is current");
            }
            reasons.extend(verdict.reason());
            true
        }
        Err(problem) => {
            problems.push(problem);
            false
        }
    }
}

fn running_kernel(proc: &Path) -> Result<RunningKernel, String> {
    let text = |name: &str| {
        let path = proc.join(name);
        std::fs::read(&path)
            .map(|bytes| String::from_utf8_lossy(&bytes).into_owned())
            .map_err(|e| format!("cannot read {}: {e}", path.display()))
    };
    let signature = text("version_signature").ok();
    Ok(RunningKernel::from_proc(
        &text("sys/kernel/osrelease")?,
        &text("sys/kernel/version")?,
        signature.as_deref(),
    ))
}

/// What reading the processes found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Scan {
    pub restarts: Restarts,
    /// Processes whose maps were read.
    pub read: usize,
    /// Processes whose maps could not be read (not counting the ones that
    /// ended meanwhile).
    pub unreadable: usize,
}

impl Scan {
    /// The restarts as the wire carries them.
    pub fn to_wire(&self) -> Vec<pb::ServiceRestart> {
        self.restarts
            .restarts
            .iter()
            .map(|r| pb::ServiceRestart {
                unit: r.unit.clone().unwrap_or_default(),
                pids: r.pids.clone(),
                files: r.files.clone(),
            })
            .collect()
    }

    /// What the output says about it, one line each.
    pub fn notes(&self) -> Vec<String> {
        let mut notes = vec![format!(
            "# {} services to restart (maps of {} processes read, {} unreadable)",
            self.restarts.restarts.len() + self.restarts.omitted.restarts,
            self.read,
            self.unreadable
        )];
        for r in &self.restarts.restarts {
            let pids: Vec<String> = r.pids.iter().map(u32::to_string).collect();
            notes.push(format!(
                "# restart {} (pid {}): {}",
                r.unit.as_deref().unwrap_or("a process outside any unit"),
                pids.join(", "),
                r.files.join(", ")
            ));
        }
        let omitted = self.restarts.omitted;
        if omitted.any() {
            notes.push(format!(
                "# not listed (too many): {} services, {} pids and {} files of the listed ones",
                omitted.restarts, omitted.pids, omitted.files
            ));
        }
        notes
    }
}

/// Reads every process under `proc` on a thread of its own (see the module
/// documentation for why) and makes the services to restart for the
/// system at `root`.
pub async fn scan(proc: PathBuf, root: PathBuf) -> Scan {
    let (tx, rx) = tokio::sync::oneshot::channel();
    let spawned = std::thread::Builder::new()
        .name("proc-scan".into())
        .spawn(move || {
            let _ = tx.send(scan_blocking(&proc, &root));
        });
    if let Err(e) = spawned {
        tracing::warn!(error = %e, "cannot start the thread that reads /proc");
        return Scan::default();
    }
    rx.await.unwrap_or_default()
}

/// [`scan`], on the calling thread (whose filesystem ids it changes while
/// it reads another user's process).
pub fn scan_blocking(proc: &Path, root: &Path) -> Scan {
    let root = std::fs::canonicalize(root).unwrap_or_else(|_| root.to_owned());
    let root = root.to_string_lossy();
    let mut scan = Scan::default();
    let entries = match std::fs::read_dir(proc) {
        Ok(entries) => entries,
        Err(e) => {
            tracing::warn!(error = %e, proc = %proc.display(), "cannot list processes");
            return scan;
        }
    };
    let mut processes = Vec::new();
    for entry in entries.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|name| name.parse::<u32>().ok())
        else {
            continue;
        };
        let dir = entry.path();
        let maps = match read_maps(&dir) {
            Maps::Text(maps) => maps,
            Maps::Gone => continue,
            Maps::Unreadable(e) => {
                tracing::debug!(pid, error = %e, "cannot read a process's maps");
                scan.unreadable += 1;
                continue;
            }
        };
        scan.read += 1;
        let files = replaced_files(deleted_mappings(&maps), &root);
        if files.is_empty() {
            continue;
        }
        let unit = match std::fs::read_to_string(dir.join("cgroup")) {
            Ok(text) => unit_from_cgroup(&text),
            Err(e) if gone(&e) => continue,
            Err(_) => None,
        };
        processes.push(ProcessFiles { pid, unit, files });
    }
    scan.restarts = restart::group(processes, &LIMITS);
    scan
}

enum Maps {
    Text(String),
    /// The process ended.
    Gone,
    Unreadable(io::Error),
}

/// Whether an error means the process ended while it was being read.
fn gone(e: &io::Error) -> bool {
    e.kind() == io::ErrorKind::NotFound || e.raw_os_error() == Some(nix::libc::ESRCH)
}

fn read_maps(dir: &Path) -> Maps {
    let path = dir.join("maps");
    match read_capped(&path) {
        Ok(text) => Maps::Text(text),
        Err(e) if gone(&e) => Maps::Gone,
        Err(e) if e.kind() == io::ErrorKind::PermissionDenied => {
            let Some((uid, gid)) = sole_owner(dir) else {
                return Maps::Unreadable(e);
            };
            match as_owner(uid, gid, || read_capped(&path)) {
                Ok(text) => Maps::Text(text),
                Err(e) if gone(&e) => Maps::Gone,
                Err(e) => Maps::Unreadable(e),
            }
        }
        Err(e) => Maps::Unreadable(e),
    }
}

fn read_capped(path: &Path) -> io::Result<String> {
    let mut bytes = Vec::new();
    std::fs::File::open(path)?
        .take(MAX_MAPS)
        .read_to_end(&mut bytes)?;
    Ok(String::from_utf8_lossy(&bytes).into_owned())
}

/// The user and group a process is wholly (real, effective and saved ids
/// the same), from its `status`; `None` for root's processes (root's own
/// ids change nothing) and ones between users.
fn sole_owner(dir: &Path) -> Option<(Uid, Gid)> {
    let status = std::fs::read_to_string(dir.join("status")).ok()?;
    let ids = |key: &str| -> Option<u32> {
        let line = status.lines().find_map(|l| l.strip_prefix(key))?;
        let ids: Vec<u32> = line
            .split_whitespace()
            .take(3)
            .map(str::parse)
            .collect::<Result<_, _>>()
            .ok()?;
        (ids.len() == 3 && ids.iter().all(|id| *id == ids[0])).then(|| ids[0])
    };
    let (uid, gid) = (ids("Uid:")?, ids("Gid:")?);
    (uid != 0).then(|| (Uid::from_raw(uid), Gid::from_raw(gid)))
}

/// Runs `read` with this thread's filesystem ids set to `uid` and `gid`,
/// then sets them back.
fn as_owner<T>(uid: Uid, gid: Gid, read: impl FnOnce() -> T) -> T {
    let old_gid = setfsgid(gid);
    let old_uid = setfsuid(uid);
    let out = read();
    setfsuid(old_uid);
    setfsgid(old_gid);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::{Command, Stdio};

    fn write(path: &Path, text: &str) {
        std::fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
        std::fs::write(path, text).expect("write");
    }

    /// A `/proc` with just the kernel's release and version.
    fn fake_proc(release: &str, version: &str) -> tempfile::TempDir {
        let dir = tempfile::tempdir().expect("tempdir");
        write(&dir.path().join("sys/kernel/osrelease"), release);
        write(&dir.path().join("sys/kernel/version"), version);
        dir
    }

    fn dpkg_root(kernels: &[(&str, &str)]) -> tempfile::TempDir {
        let dir = tempfile::tempdir().expect("tempdir");
        let status: String = kernels
            .iter()
            .map(|(name, version)| {
                format!(
                    "Package: {name}\nStatus: install ok installed\nVersion: {version}\nArchitecture: amd64\n\n"
                )
            })
            .collect();
        write(&dir.path().join("var/lib/dpkg/status"), &status);
        dir
    }

    const V76: &str = "#1 SMP PREEMPT_DYNAMIC Debian 6.1.76-1 (2024-02-01)";

    #[test]
    fn a_newer_kernel_or_the_flag_asks_for_a_reboot() {
        let proc = fake_proc("6.1.0-18-amd64\n", V76);
        let root = dpkg_root(&[("linux-image-6.1.0-18-amd64", "6.1.76-1")]);
        let status = dpkg_reboot(root.path(), proc.path());
        assert_eq!(status.required, Some(false), "{status:?}");

        write(
            &root.path().join("run/reboot-required.pkgs"),
            "libc6\nlibc6\n",
        );
        write(&root.path().join("run/reboot-required"), "");
        let status = dpkg_reboot(root.path(), proc.path());
        assert_eq!(status.required, Some(true));
        assert_eq!(status.reasons, ["/run/reboot-required exists (for libc6)"]);

        let root = dpkg_root(&[
            ("linux-image-6.1.0-18-amd64", "6.1.76-1"),
            ("linux-image-6.1.0-20-amd64", "6.1.85-1"),
        ]);
        let status = dpkg_reboot(root.path(), proc.path());
        assert_eq!(status.required, Some(true));
        assert_eq!(
            status.reasons,
            ["newer kernel 6.1.0-20-amd64 (6.1.85-1) installed"]
        );
    }

    #[test]
    fn what_cannot_be_read_is_said_and_the_flag_alone_tells_nothing() {
        let nothing = tempfile::tempdir().expect("tempdir");
        let root = dpkg_root(&[]);
        let status = dpkg_reboot(root.path(), nothing.path());
        assert_eq!(status.required, None);
        // The flag alone does ask for one.
        write(&root.path().join("run/reboot-required"), "");
        let status = dpkg_reboot(root.path(), nothing.path());
        assert_eq!(status.required, Some(true));
        assert!(
            status.problems[0].contains("osrelease"),
            "{:?}",
            status.problems
        );

        let proc = fake_proc("5.14.0-362.8.1.el9_3.x86_64", "#1 SMP");
        let key = |n: &str| (n.to_owned(), "x86_64".to_owned());
        let installed: Versions = [
            (key("kernel-core"), "5.14.0-362.13.1.el9_3".to_owned()),
            (key("bash"), "5.1.8-6.el9".to_owned()),
        ]
        .into();
        let status = rpm_reboot(Ok(&installed), proc.path());
        assert_eq!(status.required, Some(true));
        assert_eq!(
            status.reasons,
            ["newer kernel 5.14.0-362.13.1.el9_3.x86_64 (5.14.0-362.13.1.el9_3) installed"]
        );
        let failed = "rpm -qa exited with status 1".to_owned();
        let status = rpm_reboot(Err(&failed), proc.path());
        assert_eq!(status.required, None);
        assert!(status.problems[0].contains("rpm -qa"));
    }

    /// The thread's filesystem user as `/proc/thread-self/status` says it.
    fn fsuid() -> String {
        let status = std::fs::read_to_string("/proc/thread-self/status").expect("status");
        let uids = status
            .lines()
            .find_map(|l| l.strip_prefix("Uid:"))
            .expect("Uid line");
        uids.split_whitespace().nth(3).expect("fsuid").to_owned()
    }

    /// Another user's process is read as that user, on this thread only,
    /// and the thread is root again afterwards. (Whether root may read the
    /// maps without this depends on the kernel and capabilities: what is
    /// tested is that the switch happens and is undone.)
    #[test]
    fn another_users_process_is_read_as_that_user() {
        if !nix::unistd::geteuid().is_root() {
            assert!(!palisade_testkit::is_ci(), "CI runs as root");
            eprintln!("not root: skipping");
            return;
        }
        use std::os::unix::process::CommandExt;
        let mut child = Command::new("sleep")
            .arg("30")
            .uid(65534)
            .gid(65534)
            .stdout(Stdio::null())
            .spawn()
            .expect("start sleep as nobody");
        let dir = Path::new(PROC).join(child.id().to_string());
        // Until the exec, the child may still be root's.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        let owner = loop {
            if let Some(owner) = sole_owner(&dir) {
                break owner;
            }
            assert!(std::time::Instant::now() < deadline, "never nobody's");
            std::thread::sleep(std::time::Duration::from_millis(10));
        };
        assert_eq!(owner, (Uid::from_raw(65534), Gid::from_raw(65534)));
        assert_eq!(
            sole_owner(&Path::new(PROC).join("self")),
            None,
            "root's own"
        );

        let (during, maps) = std::thread::spawn(move || {
            let read = as_owner(owner.0, owner.1, || {
                (fsuid(), read_capped(&dir.join("maps")))
            });
            assert_eq!(fsuid(), "0", "root again after the read");
            read
        })
        .join()
        .expect("thread");
        child.kill().expect("kill");
        child.wait().expect("wait");
        assert_eq!(during, "65534");
        assert!(maps.expect("maps read as nobody").contains("sleep"));
    }

    /// A process of ours running a program from a root whose file is then
    /// replaced (deleted under it): the scan lists it with its file, and
    /// nothing outside the root.
    #[test]
    fn a_process_running_a_replaced_file_of_the_root_is_found() {
        let sleep = ["/usr/bin/sleep", "/bin/sleep"]
            .into_iter()
            .find(|p| Path::new(p).exists())
            .expect("sleep (coreutils) is on every Linux system");
        let root = tempfile::tempdir().expect("tempdir");
        let program = root.path().join("usr/lib/palisade-test/daemon");
        std::fs::create_dir_all(program.parent().expect("parent")).expect("mkdir");
        std::fs::copy(sleep, &program).expect("copy");
        let mut child = Command::new(&program)
            .arg("30")
            .stdout(Stdio::null())
            .spawn()
            .expect("start");
        let maps = format!("/proc/{}/maps", child.id());
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while !std::fs::read_to_string(&maps).is_ok_and(|m| m.contains("palisade-test/daemon")) {
            assert!(
                std::time::Instant::now() < deadline,
                "the program never ran"
            );
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        std::fs::remove_file(&program).expect("replace");
        let scan = scan_blocking(Path::new(PROC), root.path());
        child.kill().expect("kill");
        child.wait().expect("wait");

        let canonical = std::fs::canonicalize(root.path()).expect("canonical");
        let file = canonical
            .join("usr/lib/palisade-test/daemon")
            .display()
            .to_string();
        assert!(scan.read > 0);
        assert_eq!(scan.restarts.restarts.len(), 1, "{scan:?}");
        let found = &scan.restarts.restarts[0];
        assert_eq!(found.pids, [child.id()]);
        assert_eq!(found.files, std::slice::from_ref(&file));
        let wire = scan.to_wire();
        assert_eq!(wire[0].files, [file]);
        assert!(
            scan.notes()[1].contains("palisade-test/daemon"),
            "{:?}",
            scan.notes()
        );
        assert!(
            palisade_proto::msg::validate_command_result(&pb::CommandResult {
                command_id: "c1".into(),
                status: pb::CommandStatus::Succeeded as i32,
                restarts: wire,
                ..Default::default()
            })
            .is_ok()
        );
    }
}
