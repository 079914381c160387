//! Which services still run files an upgrade replaced: pure functions over
//! what agent control reads from `/proc/<pid>/maps` (through
//! [`crate::reboot::deleted_mappings`]) and `/proc/<pid>/cgroup`.
//!
//! - [`unit_from_cgroup`]: the systemd unit a process belongs to. A system
//!   service is its unit (`nginx.service`), a scope too (`session-3.scope`
//!   for a login session, `docker-<id>.scope` for a container: it cannot be
//!   restarted, but it says where the process runs). A user's own unit is
//!   named with its manager, `user@1000.service/pipewire.service`: neither
//!   half alone is what needs a restart. A process outside any unit (the
//!   root cgroup, a cgroup tree not made by systemd) has none.
//! - [`replaced_files`]: of the deleted files a process maps, the ones a
//!   package can have shipped: not scratch, user or state directories
//!   (`/tmp`, `/home`, `/var/lib`...), where programs delete their own
//!   files by design; on a package root other than `/`, only files under it.
//! - [`group`]: processes into restarts, one per unit (every process of
//!   `nginx.service` together) and one per process outside any unit,
//!   bounded by [`Limits`], saying what was left out.
//!
//! Every file that counts is reported, whichever upgrade replaced it: a
//! library replaced last month still runs in a service never restarted
//! since, and the service needs the restart all the same.

use std::collections::{BTreeMap, BTreeSet};

/// The longest unit name systemd accepts.
const MAX_UNIT_NAME: usize = 255;

/// The unit types that hold processes (services and scopes; sockets,
/// mounts and swaps only while their helper programs run).
const PROCESS_UNIT_SUFFIXES: [&str; 5] = [".service", ".scope", ".socket", ".mount", ".swap"];

/// The systemd unit of a process, from the text of `/proc/<pid>/cgroup`:
/// the `name=systemd` hierarchy of cgroup v1 (`1:name=systemd:/system.slice/x.service`)
/// or else the unified one (`0::/system.slice/x.service`). `None` outside
/// any unit. See the module documentation for user units and scopes.
pub fn unit_from_cgroup(text: &str) -> Option<String> {
    let mut unified = None;
    let mut systemd = None;
    for line in text.lines() {
        let mut fields = line.splitn(3, ':');
        let (Some(id), Some(controllers), Some(path)) =
            (fields.next(), fields.next(), fields.next())
        else {
            continue;
        };
        if controllers == "name=systemd" {
            systemd = Some(path);
        } else if id == "0" && controllers.is_empty() {
            unified = Some(path);
        }
    }
    unit_from_path(systemd.or(unified)?)
}

/// The unit of a cgroup path (`/system.slice/nginx.service`,
/// `/user.slice/user-1000.slice/user@1000.service/app.slice/x.service`).
fn unit_from_path(path: &str) -> Option<String> {
    // A cgroup removed while the process still was in it.
    let path = path.strip_suffix(" (deleted)").unwrap_or(path);
    let mut components = path.split('/').filter(|c| !c.is_empty()).map(unescape);
    let unit = first_unit(&mut components)?;
    if is_user_manager(unit)
        && let Some(inner) = first_unit(&mut components)
    {
        return Some(format!("{unit}/{inner}"));
    }
    Some(unit.to_owned())
}

/// The first component after the slices, when it names a unit that holds
/// processes.
fn first_unit<'a>(components: &mut impl Iterator<Item = &'a str>) -> Option<&'a str> {
    let component = components.find(|c| !c.ends_with(".slice"))?;
    let valid = component.len() <= MAX_UNIT_NAME
        && component
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b":_.@\\-".contains(&b))
        && PROCESS_UNIT_SUFFIXES
            .iter()
            .any(|s| component.len() > s.len() && component.ends_with(s));
    valid.then_some(component)
}

/// systemd prefixes `_` to a cgroup name that could clash with the
/// kernel's own files (`cg_escape`).
fn unescape(component: &str) -> &str {
    component.strip_prefix('_').unwrap_or(component)
}

/// `user@1000.service`: a user's service manager, whose cgroup holds the
/// user's own units.
fn is_user_manager(unit: &str) -> bool {
    unit.strip_prefix("user@")
        .and_then(|rest| rest.strip_suffix(".service"))
        .is_some_and(|uid| !uid.is_empty() && uid.bytes().all(|b| b.is_ascii_digit()))
}

/// Where programs keep files of their own (scratch, users', state, logs,
/// shared memory): a deleted file there was not replaced by a package.
const NOT_PACKAGED: [&str; 11] = [
    "/tmp/",
    "/var/tmp/",
    "/run/",
    "/dev/",
    "/proc/",
    "/sys/",
    "/home/",
    "/root/",
    "/var/lib/",
    "/var/cache/",
    "/var/log/",
];

/// Of the deleted files a process maps (as [`crate::reboot::deleted_mappings`]
/// reads them), the ones a package manager managing the system at `root`
/// can have replaced: under `root` when it is not `/` (the path inside it
/// decides), and outside the directories of [`NOT_PACKAGED`]. Control
/// characters in a name become `\ooo` (octal, as the kernel writes a
/// newline in `maps`), so a name is one printable line.
pub fn replaced_files(deleted: Vec<String>, root: &str) -> Vec<String> {
    let root = root.trim_end_matches('/');
    deleted
        .into_iter()
        .filter(|path| {
            let inside = if root.is_empty() {
                Some(path.as_str())
            } else {
                path.strip_prefix(root).filter(|rest| rest.starts_with('/'))
            };
            inside.is_some_and(|inside| !NOT_PACKAGED.iter().any(|dir| inside.starts_with(dir)))
        })
        .map(|path| escape_controls(&path))
        .collect()
}

fn escape_controls(text: &str) -> String {
    if !text.chars().any(char::is_control) {
        return text.to_owned();
    }
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        if c.is_control() {
            let mut buf = [0; 4];
            for byte in c.encode_utf8(&mut buf).bytes() {
                out.push_str(&format!("\\{byte:03o}"));
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// One process that maps replaced files.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProcessFiles {
    pub pid: u32,
    /// Its unit ([`unit_from_cgroup`]); `None` outside any.
    pub unit: Option<String>,
    /// The replaced files it maps ([`replaced_files`]).
    pub files: Vec<String>,
}

/// A unit (or a process outside any unit) to restart, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Restart {
    /// `None`: one process outside any unit.
    pub unit: Option<String>,
    /// Ascending.
    pub pids: Vec<u32>,
    /// The replaced files its processes map, sorted, each once.
    pub files: Vec<String>,
}

/// How much [`group`] keeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Restarts listed.
    pub restarts: usize,
    /// Pids per restart.
    pub pids: usize,
    /// Files per restart.
    pub files: usize,
    /// Longest file name kept (bytes); a longer one is left out.
    pub file_len: usize,
    /// Bytes of file names over all restarts.
    pub total_file_bytes: usize,
}

/// What [`group`] left out to stay within its [`Limits`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Omitted {
    /// Restarts not listed at all.
    pub restarts: usize,
    /// Pids not listed in the restarts that are.
    pub pids: usize,
    /// Files not listed in the restarts that are.
    pub files: usize,
}

impl Omitted {
    pub fn any(&self) -> bool {
        *self != Omitted::default()
    }
}

/// The restarts [`group`] made.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Restarts {
    pub restarts: Vec<Restart>,
    pub omitted: Omitted,
}

/// Groups processes into restarts: one per unit, in the order of their
/// names, then one per process outside any unit, in pid order. A process
/// without files is no reason for a restart. Within `limits`: the first
/// restarts in that order are kept; a restart none of whose files fits in
/// what is left of the byte budget is left out.
pub fn group(processes: impl IntoIterator<Item = ProcessFiles>, limits: &Limits) -> Restarts {
    type Found = (BTreeSet<u32>, BTreeSet<String>);
    let mut units: BTreeMap<String, Found> = BTreeMap::new();
    let mut alone: BTreeMap<u32, BTreeSet<String>> = BTreeMap::new();
    for process in processes {
        if process.files.is_empty() {
            continue;
        }
        let files = match process.unit {
            Some(unit) => {
                let (pids, files) = units.entry(unit).or_default();
                pids.insert(process.pid);
                files
            }
            None => alone.entry(process.pid).or_default(),
        };
        files.extend(process.files);
    }
    let found = units
        .into_iter()
        .map(|(unit, (pids, files))| (Some(unit), pids, files))
        .chain(
            alone
                .into_iter()
                .map(|(pid, files)| (None, BTreeSet::from([pid]), files)),
        );
    let mut out = Restarts::default();
    let mut budget = limits.total_file_bytes;
    for (unit, pids, files) in found {
        if out.restarts.len() >= limits.restarts {
            out.omitted.restarts += 1;
            continue;
        }
        let mut kept = Vec::new();
        let mut left_out = 0;
        for file in files {
            if kept.len() < limits.files && file.len() <= limits.file_len && file.len() <= budget {
                budget -= file.len();
                kept.push(file);
            } else {
                left_out += 1;
            }
        }
        if kept.is_empty() {
            out.omitted.restarts += 1;
            continue;
        }
        out.omitted.files += left_out;
        out.omitted.pids += pids.len().saturating_sub(limits.pids);
        out.restarts.push(Restart {
            unit,
            pids: pids.into_iter().take(limits.pids).collect(),
            files: kept,
        });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn unit(text: &str) -> Option<String> {
        unit_from_cgroup(text)
    }

    #[test]
    fn system_services_and_scopes_are_their_units() {
        assert_eq!(
            unit("0::/system.slice/nginx.service\n").as_deref(),
            Some("nginx.service")
        );
        assert_eq!(
            unit("0::/system.slice/system-getty.slice/getty@tty1.service").as_deref(),
            Some("getty@tty1.service")
        );
        // A delegated service's own sub-cgroups are still the service.
        assert_eq!(
            unit("0::/system.slice/containerd.service/kubepods/pod1").as_deref(),
            Some("containerd.service")
        );
        assert_eq!(
            unit("0::/user.slice/user-1000.slice/session-3.scope").as_deref(),
            Some("session-3.scope")
        );
        assert_eq!(unit("0::/init.scope").as_deref(), Some("init.scope"));
        assert_eq!(
            unit("0::/system.slice/docker-0123abcd.scope/system.slice/nginx.service").as_deref(),
            Some("docker-0123abcd.scope"),
            "a container's own units are inside the host's scope"
        );
        assert_eq!(
            unit("0::/system.slice/sshd.service (deleted)").as_deref(),
            Some("sshd.service")
        );
        assert_eq!(
            unit("0::/system.slice/_cgroup.procs.service").as_deref(),
            Some("cgroup.procs.service"),
            "systemd's escape is undone"
        );
    }

    #[test]
    fn user_units_are_named_with_their_manager() {
        assert_eq!(
            unit("0::/user.slice/user-1000.slice/user@1000.service/app.slice/pipewire.service")
                .as_deref(),
            Some("user@1000.service/pipewire.service")
        );
        assert_eq!(
            unit("0::/user.slice/user-1000.slice/user@1000.service/init.scope").as_deref(),
            Some("user@1000.service/init.scope")
        );
        assert_eq!(
            unit("0::/user.slice/user-1000.slice/user@1000.service").as_deref(),
            Some("user@1000.service")
        );
        assert_eq!(
            unit("0::/user.slice/user-1000.slice/user@1000.service/app.slice/stray").as_deref(),
            Some("user@1000.service")
        );
    }

    #[test]
    fn cgroup_v1_uses_systemds_hierarchy() {
        let v1 = "\
12:pids:/system.slice/cron.service
11:memory:/system.slice/cron.service
1:name=systemd:/system.slice/cron.service
";
        assert_eq!(unit(v1).as_deref(), Some("cron.service"));
        let hybrid = "1:name=systemd:/system.slice/a.service\n0::/system.slice/b.service\n";
        assert_eq!(unit(hybrid).as_deref(), Some("a.service"));
        // A controller hierarchy alone says nothing about units.
        assert_eq!(unit("4:memory:/system.slice/x.service\n"), None);
    }

    #[test]
    fn outside_any_unit_there_is_none() {
        for text in [
            "0::/\n",
            "0::/system.slice\n",
            "0::/docker/0123abcd\n",
            "0::/lxc.payload.c1/init.scope/x\n",
            "0::/system.slice/no-suffix\n",
            "0::/system.slice/.service\n",
            "0::/system.slice/bad name.service\n",
            "0::/system.slice/x.target\n",
            "",
            "garbage",
            "0:",
        ] {
            assert_eq!(unit(text), None, "{text:?}");
        }
        let long = format!("0::/system.slice/{}.service", "a".repeat(300));
        assert_eq!(unit(&long), None);
    }

    fn paths(list: &[&str]) -> Vec<String> {
        list.iter().map(|p| (*p).to_owned()).collect()
    }

    #[test]
    fn replaced_files_are_where_packages_put_them() {
        let deleted = paths(&[
            "/usr/lib/x86_64-linux-gnu/libssl.so.3",
            "/usr/sbin/nginx",
            "/tmp/jit-1234.so",
            "/var/tmp/x",
            "/home/alice/.cache/thing",
            "/var/lib/postgresql/16/main/pg_wal/x",
            "/opt/app/bin/app",
            "/usr/lib/with\ttab.so",
        ]);
        assert_eq!(
            replaced_files(deleted.clone(), "/"),
            [
                "/usr/lib/x86_64-linux-gnu/libssl.so.3",
                "/usr/sbin/nginx",
                "/opt/app/bin/app",
                "/usr/lib/with\\011tab.so",
            ]
        );
        // Another root: only what is under it, judged by the path inside.
        let deleted = paths(&[
            "/srv/root/usr/lib/palisade/daemon",
            "/srv/root/tmp/x",
            "/srv/rootless/usr/lib/y",
            "/usr/lib/z",
        ]);
        assert_eq!(
            replaced_files(deleted.clone(), "/srv/root/"),
            ["/srv/root/usr/lib/palisade/daemon"]
        );
        assert_eq!(
            replaced_files(deleted, "/srv/root"),
            ["/srv/root/usr/lib/palisade/daemon"]
        );
        // A root under /tmp (tests) is judged inside.
        assert_eq!(
            replaced_files(paths(&["/tmp/r/usr/bin/d"]), "/tmp/r"),
            ["/tmp/r/usr/bin/d"]
        );
    }

    const LIMITS: Limits = Limits {
        restarts: 256,
        pids: 64,
        files: 32,
        file_len: 4096,
        total_file_bytes: 128 * 1024,
    };

    fn process(pid: u32, unit: Option<&str>, files: &[&str]) -> ProcessFiles {
        ProcessFiles {
            pid,
            unit: unit.map(str::to_owned),
            files: paths(files),
        }
    }

    #[test]
    fn processes_of_a_unit_are_one_restart_others_one_each() {
        let restarts = group(
            [
                process(
                    12,
                    Some("nginx.service"),
                    &["/usr/sbin/nginx", "/usr/lib/libssl.so.3"],
                ),
                process(7, Some("nginx.service"), &["/usr/lib/libssl.so.3"]),
                process(30, None, &["/opt/b"]),
                process(20, None, &["/opt/a"]),
                process(5, Some("cron.service"), &[]),
                process(9, Some("apache2.service"), &["/usr/sbin/apache2"]),
            ],
            &LIMITS,
        );
        assert_eq!(restarts.omitted, Omitted::default());
        assert!(!restarts.omitted.any());
        assert_eq!(
            restarts.restarts,
            [
                Restart {
                    unit: Some("apache2.service".into()),
                    pids: vec![9],
                    files: paths(&["/usr/sbin/apache2"]),
                },
                Restart {
                    unit: Some("nginx.service".into()),
                    pids: vec![7, 12],
                    files: paths(&["/usr/lib/libssl.so.3", "/usr/sbin/nginx"]),
                },
                Restart {
                    unit: None,
                    pids: vec![20],
                    files: paths(&["/opt/a"]),
                },
                Restart {
                    unit: None,
                    pids: vec![30],
                    files: paths(&["/opt/b"]),
                },
            ]
        );
    }

    #[test]
    fn limits_keep_the_first_and_count_the_rest() {
        let limits = Limits {
            restarts: 2,
            pids: 2,
            files: 2,
            file_len: 10,
            total_file_bytes: 20,
        };
        let restarts = group(
            [
                process(1, Some("a.service"), &["/a1", "/a2", "/a3"]),
                process(2, Some("a.service"), &["/a1"]),
                process(3, Some("a.service"), &["/a1"]),
                process(4, Some("b.service"), &["/b-far-too-long-a-name"]),
                process(5, Some("c.service"), &["/c1"]),
                process(6, None, &["/d1"]),
            ],
            &limits,
        );
        let listed: Vec<(Option<&str>, &[u32], &[String])> = restarts
            .restarts
            .iter()
            .map(|r| (r.unit.as_deref(), &r.pids[..], &r.files[..]))
            .collect();
        assert_eq!(
            listed,
            [
                (Some("a.service"), &[1, 2][..], &paths(&["/a1", "/a2"])[..]),
                (Some("c.service"), &[5][..], &paths(&["/c1"])[..]),
            ]
        );
        assert_eq!(
            restarts.omitted,
            Omitted {
                // b (its only file too long) and the process outside a unit.
                restarts: 2,
                pids: 1,
                files: 1,
            }
        );
        assert!(restarts.omitted.any());

        // The byte budget runs out: what no longer fits is left out.
        let tight = Limits {
            total_file_bytes: 6,
            ..LIMITS
        };
        let restarts = group(
            [
                process(1, Some("a.service"), &["/aaa", "/bb"]),
                process(2, Some("b.service"), &["/ccc"]),
            ],
            &tight,
        );
        assert_eq!(restarts.restarts.len(), 1);
        assert_eq!(restarts.restarts[0].files, ["/aaa"]);
        assert_eq!(
            restarts.omitted,
            Omitted {
                restarts: 1,
                pids: 0,
                files: 1
            }
        );
    }
}
