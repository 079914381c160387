//! Reading the host: the kernel's files through [`crate::procfs`], `statvfs`
//! per disk, `uname`. Produces the [`pb::HostFacts`] and [`pb::Metrics`] the
//! collector sends, each checked with the same validation the platform applies.
//!
//! # What counts as a disk
//!
//! A mount is reported when an operator would call it a disk:
//! - a network filesystem ([`NETWORK_FS`]: NFS, SMB/CIFS, Ceph, GlusterFS, Lustre), or
//! - ZFS (its datasets are not named after a block device), or
//! - a filesystem on a block device (device under `/dev/`) that is not a
//!   read-only image ([`EXCLUDED_FS`]: squashfs snaps, ISO images) and not a
//!   pseudo filesystem with a device-like name.
//!
//! So proc, sysfs, cgroup, devpts, devtmpfs, tmpfs (memory, not disk),
//! overlay (container layers, which duplicate the disk beneath) and autofs
//! placeholders are left out. Of mounts stacked on one path only the top one
//! counts (it is what `statvfs` sees); mounts of one device (bind mounts,
//! btrfs subvolumes: same space) count once, under the shortest mount point.
//!
//! # When a file cannot be read
//!
//! A sample is all or nothing for its single values: `/proc/stat`,
//! `/proc/meminfo`, `/proc/loadavg`, `/proc/uptime` and the `/proc` listing
//! have no "unknown" on the wire, and a zero would be a lie, so a failure
//! there fails the whole sample with an error naming the file. The lists
//! degrade instead: an unreadable mount table or `/proc/net/dev` gives an
//! empty list, a filesystem whose `statvfs` fails or hangs is left out, and
//! each omission is named in [`Sample::problems`]. Facts work the same way:
//! os-release is optional (empty OS fields, a problem noted), the rest is required.
//!
//! A `statvfs` on a network filesystem whose server went away can block for
//! ever; it runs on a blocking thread with a deadline, and that mount is
//! skipped (not probed again) until the stuck call returns, so a dead server
//! costs one thread and one deadline, not the collector.

use std::collections::HashMap;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use palisade_proto::msg::{self, DecodeError};
use palisade_proto::pb;
use tokio::task::JoinHandle;

use crate::procfs::{self, CpuTimes, Mount, ParseError};

/// How long one `statvfs` may take before its mount is skipped.
pub const FILESYSTEM_PROBE_TIMEOUT: Duration = Duration::from_secs(5);

/// Network filesystems, reported whatever their device field says.
pub const NETWORK_FS: &[&str] = &[
    "nfs",
    "nfs4",
    "cifs",
    "smb3",
    "smbfs",
    "ceph",
    "fuse.cephfs",
    "glusterfs",
    "fuse.glusterfs",
    "lustre",
];

/// Never reported, even with a `/dev/` device: pseudo filesystems (whose
/// device field is free text) and read-only images that are always full.
pub const EXCLUDED_FS: &[&str] = &[
    "proc",
    "sysfs",
    "cgroup",
    "cgroup2",
    "devpts",
    "devtmpfs",
    "tmpfs",
    "ramfs",
    "overlay",
    "autofs",
    "mqueue",
    "hugetlbfs",
    "debugfs",
    "tracefs",
    "securityfs",
    "pstore",
    "bpf",
    "configfs",
    "fusectl",
    "binfmt_misc",
    "efivarfs",
    "rpc_pipefs",
    "nsfs",
    "selinuxfs",
    "squashfs",
    "iso9660",
    "erofs",
];

#[derive(Debug, thiserror::Error)]
pub enum SampleError {
    #[error("could not read {}: {error}", path.display())]
    Read { path: PathBuf, error: io::Error },
    #[error("{0}")]
    Parse(ParseError),
    #[error("no hostname: {0}")]
    NoHostname(String),
    #[error("the system clock is before 1970")]
    Clock,
    #[error("the collected values do not pass validation: {0}")]
    Invalid(DecodeError),
}

impl From<ParseError> for SampleError {
    fn from(e: ParseError) -> Self {
        SampleError::Parse(e)
    }
}

/// Where the kernel's files are: `/` on a host, a fixture directory in tests.
#[derive(Debug, Clone)]
pub struct Sources {
    root: PathBuf,
}

impl Sources {
    /// The running system.
    pub fn system() -> Sources {
        Sources {
            root: PathBuf::from("/"),
        }
    }

    /// Files under `root` instead of `/` (the mount points found there are
    /// still probed as they are written).
    pub fn under(root: impl Into<PathBuf>) -> Sources {
        Sources { root: root.into() }
    }

    pub(crate) fn path(&self, absolute: &str) -> PathBuf {
        self.root.join(absolute.trim_start_matches('/'))
    }

    fn read(&self, absolute: &str) -> Result<String, SampleError> {
        let path = self.path(absolute);
        // Lossy: a non-UTF-8 byte (possible in a mount point) must not cost
        // the whole file; such a mount then fails its statvfs and is named.
        match std::fs::read(&path) {
            Ok(bytes) => Ok(String::from_utf8_lossy(&bytes).into_owned()),
            Err(error) => Err(SampleError::Read { path, error }),
        }
    }
}

/// One metrics sample and what it had to leave out.
#[derive(Debug, Clone)]
pub struct Sample {
    pub metrics: pb::Metrics,
    pub problems: Vec<String>,
}

/// The host's facts and what had to be left out.
#[derive(Debug, Clone)]
pub struct Facts {
    pub facts: pb::HostFacts,
    pub problems: Vec<String>,
}

/// Space on one filesystem, in bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Usage {
    pub total: u64,
    pub free: u64,
    pub available: u64,
}

/// How one filesystem's usage is measured (`statvfs`; tests substitute).
pub type Probe = Arc<dyn Fn(&Path) -> io::Result<Usage> + Send + Sync>;

/// Reads the host, keeping what the next sample needs from this one.
pub struct Sampler {
    sources: Sources,
    previous_cpu: CpuTimes,
    filesystems: FilesystemProbe,
}

impl Sampler {
    /// A sampler on `sources`, with a CPU baseline taken now so that the
    /// first sample's CPU figure covers a real interval.
    pub fn new(sources: Sources) -> Result<Sampler, SampleError> {
        Sampler::with_probe(sources, Arc::new(statvfs_usage))
    }

    pub(crate) fn with_probe(sources: Sources, probe: Probe) -> Result<Sampler, SampleError> {
        let previous_cpu = procfs::parse_stat(&sources.read(procfs::STAT)?)?.cpu;
        Ok(Sampler {
            sources,
            previous_cpu,
            filesystems: FilesystemProbe::new(probe, FILESYSTEM_PROBE_TIMEOUT),
        })
    }

    /// The host's facts.
    pub fn facts(&self) -> Result<Facts, SampleError> {
        let mut problems = Vec::new();
        let uname = nix::sys::utsname::uname().ok();
        let from_uname = |field: fn(&nix::sys::utsname::UtsName) -> &std::ffi::OsStr| {
            uname
                .as_ref()
                .map(|u| field(u).to_string_lossy().into_owned())
                .unwrap_or_default()
        };
        let hostname = match self.sources.read("/proc/sys/kernel/hostname") {
            Ok(text) if !text.trim().is_empty() => text.trim().to_owned(),
            _ => from_uname(nix::sys::utsname::UtsName::nodename),
        };
        if hostname.is_empty() {
            return Err(SampleError::NoHostname(
                "/proc/sys/kernel/hostname and uname(2) give none".to_owned(),
            ));
        }
        let kernel_release = match self.sources.read("/proc/sys/kernel/osrelease") {
            Ok(text) if !text.trim().is_empty() => text.trim().to_owned(),
            _ => from_uname(nix::sys::utsname::UtsName::release),
        };
        let stat = procfs::parse_stat(&self.sources.read(procfs::STAT)?)?;
        let memory = procfs::parse_meminfo(&self.sources.read(procfs::MEMINFO)?)?;
        let os = self.os_release().unwrap_or_else(|e| {
            problems.push(format!("no OS name: {e}"));
            procfs::OsRelease::default()
        });
        let facts = pb::HostFacts {
            hostname: printable(&hostname),
            os_pretty_name: printable(&os.pretty_name.unwrap_or_default()),
            os_id: printable(&os.id.unwrap_or_default()),
            os_version_id: printable(&os.version_id.unwrap_or_default()),
            kernel_release: printable(&kernel_release),
            architecture: printable(&from_uname(nix::sys::utsname::UtsName::machine)),
            cpu_count: stat.cpu_count,
            memory_total_bytes: memory.total_bytes,
            boot_time_unix: stat.boot_time_unix,
        };
        msg::validate_facts(&facts).map_err(SampleError::Invalid)?;
        Ok(Facts { facts, problems })
    }

    /// `/etc/os-release`, or `/usr/lib/os-release` when the first does not
    /// exist (as os-release(5) asks).
    fn os_release(&self) -> Result<procfs::OsRelease, SampleError> {
        let text = match self.sources.read(procfs::OS_RELEASE) {
            Err(SampleError::Read { error, .. }) if error.kind() == io::ErrorKind::NotFound => {
                self.sources.read("/usr/lib/os-release")?
            }
            other => other?,
        };
        Ok(procfs::parse_os_release(&text)?)
    }

    /// One sample of the host's metrics, taken at `now`.
    pub async fn sample(&mut self, now: SystemTime) -> Result<Sample, SampleError> {
        let collected_at_unix_ms = now
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_err(|_| SampleError::Clock)
            .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))?;
        let stat = procfs::parse_stat(&self.sources.read(procfs::STAT)?)?;
        let cpu_percent = cpu_percent(self.previous_cpu, stat.cpu);
        self.previous_cpu = stat.cpu;
        let memory = procfs::parse_meminfo(&self.sources.read(procfs::MEMINFO)?)?;
        let load = procfs::parse_loadavg(&self.sources.read(procfs::LOADAVG)?)?;
        let uptime_seconds = procfs::parse_uptime(&self.sources.read(procfs::UPTIME)?)?;
        let process_count = self.process_count()?;

        let mut problems = Vec::new();
        let filesystems = self.filesystems(&mut problems).await;
        let network = self.network(&mut problems);

        let metrics = pb::Metrics {
            collected_at_unix_ms,
            cpu_percent,
            // The kernel keeps these in order; clamping guards against a
            // racy or buggy read breaking the invariant the platform checks.
            memory_total_bytes: memory.total_bytes,
            memory_available_bytes: memory.available_bytes.min(memory.total_bytes),
            swap_total_bytes: memory.swap_total_bytes,
            swap_free_bytes: memory.swap_free_bytes.min(memory.swap_total_bytes),
            load_1: load.one,
            load_5: load.five,
            load_15: load.fifteen,
            filesystems,
            network,
            uptime_seconds,
            process_count,
        };
        msg::validate_metrics(&metrics).map_err(SampleError::Invalid)?;
        Ok(Sample { metrics, problems })
    }

    /// Processes: the numeric directories of `/proc` (threads are not listed
    /// there). With `hidepid=` on `/proc`, only our own are visible.
    fn process_count(&self) -> Result<u32, SampleError> {
        let path = self.sources.path("/proc");
        let entries =
            std::fs::read_dir(&path).map_err(|error| SampleError::Read { path, error })?;
        let count = entries
            .filter_map(Result::ok)
            .filter(|e| {
                e.file_name()
                    .to_str()
                    .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
            })
            .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
            .count();
        Ok(u32::try_from(count).unwrap_or(u32::MAX))
    }

    async fn filesystems(&mut self, problems: &mut Vec<String>) -> Vec<pb::FilesystemUsage> {
        let mounts = match self
            .sources
            .read(procfs::MOUNTS)
            .and_then(|t| procfs::parse_mounts(&t).map_err(SampleError::from))
        {
            Ok(mounts) => mounts,
            Err(e) => {
                problems.push(format!("no filesystems: {e}"));
                return Vec::new();
            }
        };
        self.filesystems.forget_finished();
        let mut out = Vec::new();
        for mount in disks(&mounts) {
            let usage = match self.filesystems.usage(&mount.mount_point).await {
                Ok(usage) => usage,
                Err(e) => {
                    problems.push(format!(
                        "filesystem {} left out: {e}",
                        printable(&mount.mount_point)
                    ));
                    continue;
                }
            };
            if usage.total == 0 {
                // Nothing to report for a filesystem without size (some
                // network filesystems say 0 when they cannot tell).
                continue;
            }
            out.push(pb::FilesystemUsage {
                mount_point: printable(&mount.mount_point),
                device: printable(&mount.device),
                fs_type: printable(&mount.fs_type),
                total_bytes: usage.total,
                used_bytes: usage.total.saturating_sub(usage.free),
                available_bytes: usage.available,
            });
        }
        limit_items(out, "filesystems", problems)
    }

    fn network(&self, problems: &mut Vec<String>) -> Vec<pb::NetworkCounters> {
        match self
            .sources
            .read(procfs::NET_DEV)
            .and_then(|t| procfs::parse_net_dev(&t).map_err(SampleError::from))
        {
            Ok(interfaces) => {
                let counters = interfaces
                    .into_iter()
                    .map(|i| pb::NetworkCounters {
                        interface: printable(&i.interface),
                        rx_bytes: i.rx_bytes,
                        tx_bytes: i.tx_bytes,
                    })
                    .collect();
                limit_items(counters, "network interfaces", problems)
            }
            Err(e) => {
                problems.push(format!("no network counters: {e}"));
                Vec::new()
            }
        }
    }
}

/// Busy share of all CPUs between two readings of `/proc/stat`, 0..=100.
/// No time elapsed reads as 0; counters that went backwards (iowait can, on
/// some kernels) cannot push the result out of range.
pub fn cpu_percent(previous: CpuTimes, current: CpuTimes) -> f64 {
    let busy = current.busy.saturating_sub(previous.busy);
    let total = current.total().saturating_sub(previous.total());
    if total == 0 {
        return 0.0;
    }
    (busy as f64 * 100.0 / total as f64).clamp(0.0, 100.0)
}

/// Whether `mount` is a disk by the rule in the module docs (before stacking
/// and duplicates are considered).
pub fn is_disk(mount: &Mount) -> bool {
    let fs_type = mount.fs_type.as_str();
    if NETWORK_FS.contains(&fs_type) || fs_type == "zfs" {
        return true;
    }
    mount.device.starts_with("/dev/") && !EXCLUDED_FS.contains(&fs_type)
}

/// The disks of a mount table, in table order: only the top mount of each
/// path, one mount per device (the shortest mount point).
pub fn disks(mounts: &[Mount]) -> Vec<&Mount> {
    let mut top: HashMap<&str, usize> = HashMap::new();
    for (i, m) in mounts.iter().enumerate() {
        top.insert(m.mount_point.as_str(), i);
    }
    let mut out: Vec<&Mount> = Vec::new();
    let mut by_device: HashMap<&str, usize> = HashMap::new();
    for (i, m) in mounts.iter().enumerate() {
        if top.get(m.mount_point.as_str()) != Some(&i) || !is_disk(m) {
            continue;
        }
        match by_device.get(m.device.as_str()) {
            Some(&slot) => {
                if m.mount_point.len() < out[slot].mount_point.len() {
                    out[slot] = m;
                }
            }
            None => {
                by_device.insert(m.device.as_str(), out.len());
                out.push(m);
            }
        }
    }
    out
}

/// `text` with control characters written as octal escapes (`\011`), the
/// way the kernel writes them in the mount table, so every name passes the
/// platform's check and stays recognisable.
pub fn printable(text: &str) -> String {
    if !text.chars().any(char::is_control) {
        return text.to_owned();
    }
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        if c.is_control() {
            out.push_str(&format!("\\{:03o}", u32::from(c)));
        } else {
            out.push(c);
        }
    }
    out
}

/// Keeps `items` within what the platform accepts: names no longer than
/// [`msg::MAX_STRING`], at most [`msg::MAX_ITEMS`] entries.
fn limit_items<T: Named>(mut items: Vec<T>, what: &str, problems: &mut Vec<String>) -> Vec<T> {
    let before = items.len();
    items.retain(|item| item.names().iter().all(|n| n.len() <= msg::MAX_STRING));
    if items.len() < before {
        problems.push(format!(
            "{} {what} left out: name longer than {} bytes",
            before - items.len(),
            msg::MAX_STRING
        ));
    }
    if items.len() > msg::MAX_ITEMS {
        problems.push(format!(
            "{} {what} left out: more than {}",
            items.len() - msg::MAX_ITEMS,
            msg::MAX_ITEMS
        ));
        items.truncate(msg::MAX_ITEMS);
    }
    items
}

trait Named {
    fn names(&self) -> [&str; 3];
}

impl Named for pb::FilesystemUsage {
    fn names(&self) -> [&str; 3] {
        [&self.mount_point, &self.device, &self.fs_type]
    }
}

impl Named for pb::NetworkCounters {
    fn names(&self) -> [&str; 3] {
        [&self.interface, "", ""]
    }
}

/// `statvfs(2)`, in bytes.
fn statvfs_usage(path: &Path) -> io::Result<Usage> {
    let s = nix::sys::statvfs::statvfs(path).map_err(io::Error::from)?;
    // f_blocks, f_bfree and f_bavail count fragments (f_frsize); a
    // filesystem that leaves f_frsize at 0 means its block size.
    let unit = match s.fragment_size() as u64 {
        0 => s.block_size() as u64,
        n => n,
    };
    let bytes = |blocks: u64| {
        blocks
            .checked_mul(unit)
            .ok_or_else(|| io::Error::other("size in bytes overflows"))
    };
    Ok(Usage {
        total: bytes(s.blocks() as u64)?,
        free: bytes(s.blocks_free() as u64)?,
        available: bytes(s.blocks_available() as u64)?,
    })
}

/// Why a filesystem could not be measured.
#[derive(Debug, thiserror::Error)]
pub enum ProbeError {
    #[error("{0}")]
    Io(io::Error),
    #[error("no answer within {0:?}")]
    TimedOut(Duration),
    #[error("still waiting for an answer to an earlier probe")]
    StillPending,
    #[error("the probe failed: {0}")]
    Failed(String),
}

/// Runs the [`Probe`] on blocking threads with a deadline, and remembers the
/// probes that missed it so a stuck mount is not probed again (and does not
/// take another thread) until the stuck call returns.
struct FilesystemProbe {
    probe: Probe,
    timeout: Duration,
    stuck: HashMap<String, JoinHandle<io::Result<Usage>>>,
}

impl FilesystemProbe {
    fn new(probe: Probe, timeout: Duration) -> FilesystemProbe {
        FilesystemProbe {
            probe,
            timeout,
            stuck: HashMap::new(),
        }
    }

    /// Drops the record of stuck probes that have returned since.
    fn forget_finished(&mut self) {
        self.stuck.retain(|_, task| !task.is_finished());
    }

    async fn usage(&mut self, mount_point: &str) -> Result<Usage, ProbeError> {
        if self
            .stuck
            .get(mount_point)
            .is_some_and(|task| !task.is_finished())
        {
            return Err(ProbeError::StillPending);
        }
        self.stuck.remove(mount_point);
        let probe = Arc::clone(&self.probe);
        let path = PathBuf::from(mount_point);
        let mut task = tokio::task::spawn_blocking(move || probe(&path));
        match tokio::time::timeout(self.timeout, &mut task).await {
            Ok(Ok(result)) => result.map_err(ProbeError::Io),
            Ok(Err(join)) => Err(ProbeError::Failed(join.to_string())),
            Err(_elapsed) => {
                self.stuck.insert(mount_point.to_owned(), task);
                Err(ProbeError::TimedOut(self.timeout))
            }
        }
    }

    /// Waits for every stuck probe to return (tests only: a real stuck
    /// probe may never return).
    #[cfg(test)]
    async fn join_stuck(&mut self) {
        for (_, task) in self.stuck.iter_mut() {
            let _ = task.await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    fn mount(device: &str, mount_point: &str, fs_type: &str) -> Mount {
        Mount {
            device: device.into(),
            mount_point: mount_point.into(),
            fs_type: fs_type.into(),
        }
    }

    #[test]
    fn cpu_percent_over_an_interval() {
        let a = CpuTimes {
            busy: 1_000,
            idle: 9_000,
        };
        assert_eq!(
            cpu_percent(
                a,
                CpuTimes {
                    busy: 1_250,
                    idle: 9_750
                }
            ),
            25.0
        );
        assert_eq!(cpu_percent(a, a), 0.0, "no time elapsed");
        assert_eq!(
            cpu_percent(
                a,
                CpuTimes {
                    busy: 1_100,
                    idle: 8_950
                }
            ),
            100.0,
            "idle went backwards"
        );
        assert_eq!(
            cpu_percent(
                a,
                CpuTimes {
                    busy: 900,
                    idle: 9_100
                }
            ),
            0.0,
            "busy went backwards"
        );
    }

    #[test]
    fn which_mounts_are_disks() {
        let table = procfs::parse_mounts(
            "\
proc /proc proc rw 0 0
sysfs /sys sysfs rw 0 0
udev /dev devtmpfs rw 0 0
tmpfs /run tmpfs rw 0 0
cgroup2 /sys/fs/cgroup cgroup2 rw 0 0
/dev/nvme0n1p2 / ext4 rw 0 0
/dev/nvme0n1p1 /boot/efi vfat rw 0 0
/dev/loop3 /snap/core22/1380 squashfs ro 0 0
/dev/shm /dev/shm tmpfs rw 0 0
overlay /var/lib/docker/overlay2/abc/merged overlay rw 0 0
/dev/sdb1 /data xfs rw 0 0
/dev/sdb1 /srv/data xfs rw 0 0
/dev/nvme0n1p2 /var/lib/kubelet/bind ext4 rw 0 0
/dev/mapper/vg-home /home btrfs rw 0 0
/dev/mapper/vg-home /home/alice btrfs rw 0 0
nas:/export /mnt/nas nfs4 rw 0 0
//fs/share /mnt/share cifs rw 0 0
tank/home /tank/home zfs rw 0 0
systemd-1 /mnt/auto autofs rw 0 0
/dev/sdc1 /mnt/stacked ext4 rw 0 0
tmpfs /mnt/stacked tmpfs rw 0 0
/dev/sdd1 /mnt/twice ext4 rw 0 0
/dev/sde1 /mnt/twice ext4 rw 0 0
",
        )
        .expect("parses");
        let got: Vec<(&str, &str)> = disks(&table)
            .iter()
            .map(|m| (m.device.as_str(), m.mount_point.as_str()))
            .collect();
        assert_eq!(
            got,
            vec![
                ("/dev/nvme0n1p2", "/"),
                ("/dev/nvme0n1p1", "/boot/efi"),
                ("/dev/sdb1", "/data"),
                ("/dev/mapper/vg-home", "/home"),
                ("nas:/export", "/mnt/nas"),
                ("//fs/share", "/mnt/share"),
                ("tank/home", "/tank/home"),
                ("/dev/sde1", "/mnt/twice"),
            ]
        );
    }

    #[test]
    fn the_shortest_mount_point_of_a_device_wins_wherever_it_is() {
        let table = [
            mount("/dev/sda1", "/srv/www", "ext4"),
            mount("/dev/sda1", "/srv", "ext4"),
        ];
        assert_eq!(disks(&table), vec![&table[1]]);
    }

    #[test]
    fn printable_escapes_control_characters() {
        assert_eq!(printable("/srv/a\tb\nc"), "/srv/a\\011b\\012c");
        assert_eq!(printable("/mnt/My Backups"), "/mnt/My Backups");
        assert_eq!(printable("\u{7f}\u{85}"), "\\177\\205");
    }

    #[test]
    fn overlong_names_and_too_many_items_are_left_out_and_named() {
        let item = |name: &str| pb::NetworkCounters {
            interface: name.into(),
            rx_bytes: 1,
            tx_bytes: 2,
        };
        let mut problems = Vec::new();
        let mut items = vec![item(&"x".repeat(msg::MAX_STRING + 1))];
        items.extend((0..msg::MAX_ITEMS + 3).map(|i| item(&format!("if{i}"))));
        let kept = limit_items(items, "network interfaces", &mut problems);
        assert_eq!(kept.len(), msg::MAX_ITEMS);
        assert_eq!(kept[0].interface, "if0");
        assert_eq!(problems.len(), 2, "{problems:?}");
    }

    /// A fake host under a temporary directory.
    struct Fixture {
        dir: tempfile::TempDir,
    }

    impl Fixture {
        fn new() -> Fixture {
            let f = Fixture {
                dir: tempfile::tempdir().expect("tempdir"),
            };
            f.write("proc/stat", &stat_fixture(100, 800));
            f.write(
                "proc/meminfo",
                "MemTotal: 1000 kB\nMemAvailable: 400 kB\nSwapTotal: 100 kB\nSwapFree: 100 kB\n",
            );
            f.write("proc/loadavg", "0.50 0.25 0.10 1/100 999\n");
            f.write("proc/uptime", "3600.25 7000.00\n");
            f.write(
                "proc/net/dev",
                "Inter-|\n face |\n\
                 lo: 1 0 0 0 0 0 0 0 1 0 0 0 0 0 0 0\n\
                 eth0: 10 0 0 0 0 0 0 0 20 0 0 0 0 0 0 0\n",
            );
            f.write(
                "proc/self/mounts",
                "proc /proc proc rw 0 0\n/dev/vda1 / ext4 rw 0 0\n\
                 /dev/vdb1 /broken ext4 rw 0 0\n/dev/vdc1 /empty xfs rw 0 0\n",
            );
            f.write("proc/sys/kernel/hostname", "web-01\n");
            f.write("proc/sys/kernel/osrelease", "6.1.0-18-amd64\n");
            f.write(
                "usr/lib/os-release",
                "PRETTY_NAME=\"Debian GNU/Linux 12 (bookworm)\"\nID=debian\nVERSION_ID=\"12\"\n",
            );
            for pid in ["1", "42", "4242"] {
                std::fs::create_dir_all(f.dir.path().join("proc").join(pid)).expect("mkdir");
            }
            f.write("proc/123", "a file, not a process");
            f
        }

        fn write(&self, path: &str, text: &str) {
            let path = self.dir.path().join(path);
            std::fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
            std::fs::write(path, text).expect("write fixture");
        }

        fn remove(&self, path: &str) {
            std::fs::remove_file(self.dir.path().join(path)).expect("remove fixture file");
        }

        fn sampler(&self) -> Sampler {
            let probe: Probe = Arc::new(|path: &Path| match path.to_str() {
                Some("/") => Ok(Usage {
                    total: 100,
                    free: 30,
                    available: 25,
                }),
                Some("/empty") => Ok(Usage {
                    total: 0,
                    free: 0,
                    available: 0,
                }),
                _ => Err(io::Error::from(io::ErrorKind::PermissionDenied)),
            });
            Sampler::with_probe(Sources::under(self.dir.path()), probe).expect("baseline")
        }
    }

    /// `/proc/stat` of one CPU with `user` and `system` ticks each and
    /// `idle` idle ticks.
    fn stat_fixture(user_and_system: u64, idle: u64) -> String {
        let line = format!("{user_and_system} 0 {user_and_system} {idle} 0 0 0 0 0 0");
        format!("cpu  {line}\ncpu0 {line}\nbtime 1718000000\n")
    }

    fn at(ms: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_millis(ms)
    }

    #[tokio::test]
    async fn a_sample_from_fixture_files() {
        let f = Fixture::new();
        let mut sampler = f.sampler();
        f.write("proc/stat", &stat_fixture(150, 900));
        let sample = sampler.sample(at(1_718_000_123_456)).await.expect("sample");
        let m = &sample.metrics;
        assert_eq!(m.collected_at_unix_ms, 1_718_000_123_456);
        assert_eq!(
            m.cpu_percent, 50.0,
            "100 busy of 200 ticks since the baseline"
        );
        assert_eq!(
            (m.memory_total_bytes, m.memory_available_bytes),
            (1_024_000, 409_600)
        );
        assert_eq!((m.swap_total_bytes, m.swap_free_bytes), (102_400, 102_400));
        assert_eq!((m.load_1, m.load_5, m.load_15), (0.5, 0.25, 0.1));
        assert_eq!(m.uptime_seconds, 3600);
        assert_eq!(m.process_count, 3);
        assert_eq!(
            m.filesystems,
            vec![pb::FilesystemUsage {
                mount_point: "/".into(),
                device: "/dev/vda1".into(),
                fs_type: "ext4".into(),
                total_bytes: 100,
                used_bytes: 70,
                available_bytes: 25,
            }]
        );
        assert_eq!(
            m.network,
            vec![pb::NetworkCounters {
                interface: "eth0".into(),
                rx_bytes: 10,
                tx_bytes: 20
            }]
        );
        assert_eq!(sample.problems.len(), 1, "{:?}", sample.problems);
        assert!(
            sample.problems[0].starts_with("filesystem /broken left out"),
            "{:?}",
            sample.problems
        );

        // The next sample measures from this one, not from the baseline.
        f.write("proc/stat", &stat_fixture(150, 1000));
        assert_eq!(
            sampler
                .sample(at(1))
                .await
                .expect("sample")
                .metrics
                .cpu_percent,
            0.0
        );
    }

    #[tokio::test]
    async fn missing_lists_degrade_missing_values_fail() {
        let f = Fixture::new();
        let mut sampler = f.sampler();
        f.remove("proc/net/dev");
        f.remove("proc/self/mounts");
        let sample = sampler.sample(at(1)).await.expect("a partial sample");
        assert!(sample.metrics.filesystems.is_empty() && sample.metrics.network.is_empty());
        assert_eq!(sample.problems.len(), 2, "{:?}", sample.problems);
        assert!(sample.problems[0].starts_with("no filesystems: could not read "));
        assert!(
            sample.problems[0]
                .ends_with("proc/self/mounts: No such file or directory (os error 2)")
        );

        f.write("proc/loadavg", "high\n");
        let error = sampler
            .sample(at(1))
            .await
            .expect_err("no load, no sample")
            .to_string();
        assert_eq!(
            error,
            "/proc/loadavg line 1: 1-minute load \"high\" is not a non-negative decimal"
        );
        f.remove("proc/meminfo");
        let error = sampler
            .sample(at(1))
            .await
            .expect_err("no memory, no sample")
            .to_string();
        assert!(
            error.starts_with("could not read ") && error.contains("proc/meminfo"),
            "{error}"
        );
        assert!(matches!(
            sampler
                .sample(SystemTime::UNIX_EPOCH - Duration::from_secs(1))
                .await,
            Err(SampleError::Clock)
        ));
    }

    #[test]
    fn facts_from_fixture_files() {
        let f = Fixture::new();
        let facts = f.sampler().facts().expect("facts");
        assert!(facts.problems.is_empty(), "{:?}", facts.problems);
        let h = facts.facts;
        assert_eq!(h.hostname, "web-01");
        assert_eq!(h.kernel_release, "6.1.0-18-amd64");
        assert_eq!(
            (
                h.os_pretty_name.as_str(),
                h.os_id.as_str(),
                h.os_version_id.as_str()
            ),
            ("Debian GNU/Linux 12 (bookworm)", "debian", "12"),
            "read from /usr/lib/os-release when /etc/os-release is absent"
        );
        assert_eq!(
            (h.cpu_count, h.memory_total_bytes, h.boot_time_unix),
            (1, 1_024_000, 1_718_000_000)
        );
        assert!(!h.architecture.is_empty());

        // /etc/os-release wins when present; a broken one costs only the OS fields.
        f.write("etc/os-release", "ID=alpine\n");
        assert_eq!(f.sampler().facts().expect("facts").facts.os_id, "alpine");
        f.write("etc/os-release", "ID=\"alpine\n");
        let facts = f.sampler().facts().expect("facts without OS");
        assert_eq!(facts.facts.os_id, "");
        assert_eq!(
            facts.problems,
            vec!["no OS name: /etc/os-release line 1: unterminated double quote"]
        );
    }

    #[tokio::test]
    async fn a_hung_filesystem_is_skipped_until_it_answers() {
        let (release, gate) = std::sync::mpsc::channel::<()>();
        let gate = Mutex::new(gate);
        let probe: Probe = Arc::new(move |path: &Path| {
            if path == Path::new("/hung") {
                // Blocks like a statvfs on an NFS mount whose server is gone.
                let _ = gate.lock().map(|g| g.recv());
            }
            Ok(Usage {
                total: 1,
                free: 1,
                available: 1,
            })
        });
        let mut probes = FilesystemProbe::new(probe, Duration::from_millis(50));
        assert!(matches!(
            probes.usage("/hung").await,
            Err(ProbeError::TimedOut(_))
        ));
        assert!(
            matches!(probes.usage("/hung").await, Err(ProbeError::StillPending)),
            "not probed twice"
        );
        probes.timeout = Duration::from_secs(3600);
        assert!(
            probes.usage("/fine").await.is_ok(),
            "other mounts are unaffected"
        );

        release.send(()).expect("release the hung probe");
        probes.join_stuck().await;
        probes.forget_finished();
        assert!(probes.stuck.is_empty());
        release.send(()).expect("let the next probe through");
        assert!(
            probes.usage("/hung").await.is_ok(),
            "probed again once the stuck call returned"
        );
    }

    /// Samples this machine twice, the way the collector runs.
    #[tokio::test]
    async fn the_real_machine_is_plausible() {
        let mut sampler = Sampler::new(Sources::system()).expect("baseline from /proc/stat");
        let facts = sampler.facts().expect("facts");
        msg::validate_facts(&facts.facts).expect("valid facts");
        assert!(facts.facts.cpu_count >= 1 && facts.facts.memory_total_bytes > 0);
        let now = SystemTime::now();
        let boot = facts.facts.boot_time_unix;
        assert!(
            boot > 946_684_800
                && boot
                    <= now
                        .duration_since(SystemTime::UNIX_EPOCH)
                        .map_or(0, |d| d.as_secs() as i64)
        );

        for _ in 0..2 {
            let sample = sampler.sample(SystemTime::now()).await.expect("sample");
            let m = &sample.metrics;
            msg::validate_metrics(m).expect("valid metrics");
            assert!(
                m.memory_total_bytes > 0 && m.memory_total_bytes == facts.facts.memory_total_bytes
            );
            assert!((0.0..=100.0).contains(&m.cpu_percent));
            assert!(
                m.process_count > 1,
                "at least this test and init: {}",
                m.process_count
            );
            assert!(m.uptime_seconds > 0);

            let mounts = procfs::parse_mounts(
                &std::fs::read_to_string("/proc/self/mounts").expect("mounts"),
            )
            .expect("the real mount table parses");
            let root = mounts
                .iter()
                .rev()
                .find(|m| m.mount_point == "/")
                .expect("/ is mounted");
            if is_disk(root) {
                assert!(
                    m.filesystems
                        .iter()
                        .any(|fs| fs.mount_point == "/" && fs.total_bytes > 0),
                    "/ ({root:?}) is a disk but missing from {:?}; problems: {:?}",
                    m.filesystems,
                    sample.problems
                );
            } else {
                // A container root (overlay) is not a disk of the host.
                eprintln!(
                    "/ is {} on {}: not a disk by the rule, so not reported",
                    root.fs_type, root.device
                );
                assert!(m.filesystems.iter().all(|fs| fs.mount_point != "/"));
            }
        }
    }
}
