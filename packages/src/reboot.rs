//! Whether a host needs a reboot (or a service restart) after updates:
//! pure functions over what the collector reads from `/proc`, `/run` and the
//! package databases.
//!
//! **Kernel.** A reboot is needed when the newest installed kernel of the
//! running kernel's flavour is not the running one. The flavour matters:
//! a host running `6.1.0-18-cloud-amd64` does not need a reboot because
//! `linux-image-6.1.0-20-rt-amd64` is installed, and a `linux-image-amd64`
//! meta package is no kernel at all (false positives other tools report).
//! Debian sometimes rebuilds a kernel under the same release name
//! (`+debNNuM` uploads keep the ABI): the running kernel then has the
//! same name as the installed one, and only its build version, which the
//! kernel prints in `/proc/sys/kernel/version` (`Debian 6.1.76-1`) or
//! Ubuntu in `/proc/version_signature`, tells them apart. RPM kernels are
//! installed side by side (`kernel-core` per version), and a flavour is a
//! different package (`kernel-rt-core`, `kernel-debug-core`,
//! `kernel-64k-core`, `kernel-uek-core`).
//!
//! **Flag file.** Debian and Ubuntu packages ask for a reboot by creating
//! `/run/reboot-required` (and list themselves in
//! `/run/reboot-required.pkgs`). The reasons are worded once here
//! ([`KernelVerdict::reason`], [`flag_reason`]) for whoever reports them.
//!
//! **Deleted libraries.** A process still mapping a library or executable
//! that an upgrade replaced keeps running the old code: its
//! `/proc/<pid>/maps` lists the file as `(deleted)`. The service needs a
//! restart, not the host. Agent control reads the maps after an upgrade
//! (the collector may not read other users' processes); the services to
//! restart are made of them in [`crate::restart`].

use crate::deb::{InstalledPackage, Version as DebVersion};
use crate::rpm::{Evr, InstalledRpm};

/// The running kernel, as `/proc` describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunningKernel {
    /// `/proc/sys/kernel/osrelease` (`uname -r`).
    pub release: String,
    /// The distribution's package version the kernel was built as, when it
    /// says so: Debian in `/proc/sys/kernel/version` (`... Debian 6.1.76-1
    /// (2024-02-01)`), Ubuntu in `/proc/version_signature` (`Ubuntu
    /// 5.15.0-91.101-generic 5.15.131`).
    pub build_version: Option<String>,
}

impl RunningKernel {
    pub fn from_proc(osrelease: &str, version: &str, version_signature: Option<&str>) -> Self {
        let ubuntu = version_signature.and_then(|s| {
            let word = s.split_whitespace().nth(1)?;
            // `5.15.0-91.101-generic`: the flavour follows the last '-'.
            let (version, _) = word.rsplit_once('-')?;
            Some(version.to_owned())
        });
        let debian = || {
            let after = version.split(" Debian ").nth(1)?;
            let word = after.split_whitespace().next()?;
            Some(word.to_owned())
        };
        RunningKernel {
            release: osrelease.trim().to_owned(),
            build_version: ubuntu.or_else(debian),
        }
    }
}

/// What the kernel check found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KernelVerdict {
    /// The running kernel is the newest installed of its flavour.
    Current,
    /// A newer kernel of the same flavour is installed.
    NewerInstalled { release: String, version: String },
    /// The running kernel's package was rebuilt under the same name.
    Rebuilt { running: String, installed: String },
    /// No installed kernel package matches the running kernel's flavour
    /// (a custom or a hypervisor-provided kernel): nothing can be said.
    Unknown { reason: String },
}

impl KernelVerdict {
    pub fn reboot_required(&self) -> bool {
        matches!(
            self,
            KernelVerdict::NewerInstalled { .. } | KernelVerdict::Rebuilt { .. }
        )
    }

    /// Why the kernel asks for a reboot, in words; `None` when it does not
    /// (or when nothing can be said).
    pub fn reason(&self) -> Option<String> {
        match self {
            KernelVerdict::NewerInstalled { release, version } => {
                Some(format!("newer kernel {release} ({version}) installed"))
            }
            KernelVerdict::Rebuilt { running, installed } => Some(format!(
                "the running kernel's package was rebuilt ({running} running, {installed} installed)"
            )),
            KernelVerdict::Current | KernelVerdict::Unknown { .. } => None,
        }
    }
}

/// Where Debian's and Ubuntu's package scripts ask for a reboot (and list
/// themselves in `.pkgs`), under the system's root.
pub const REBOOT_REQUIRED_FLAG: &str = "/run/reboot-required";

/// The reason `/run/reboot-required` gives, with the packages
/// `/run/reboot-required.pkgs` names (`pkgs`: its text, when it exists),
/// sorted and each once.
pub fn flag_reason(pkgs: Option<&str>) -> String {
    let mut names: Vec<&str> = pkgs.unwrap_or_default().split_whitespace().collect();
    names.sort_unstable();
    names.dedup();
    if names.is_empty() {
        format!("{REBOOT_REQUIRED_FLAG} exists")
    } else {
        format!("{REBOOT_REQUIRED_FLAG} exists (for {})", names.join(", "))
    }
}

/// `6.1.0-18-cloud-amd64` → (`6.1.0-18`, `cloud-amd64`): the flavour is
/// what follows the leading dash-separated parts that start with a digit.
fn split_flavour(release: &str) -> (&str, &str) {
    let mut abi_end = 0;
    for (i, part) in release.split('-').enumerate() {
        if !part.starts_with(|c: char| c.is_ascii_digit()) {
            break;
        }
        abi_end += part.len() + usize::from(i > 0);
    }
    let abi = &release[..abi_end];
    let flavour = if abi_end == 0 {
        release
    } else {
        release.get(abi_end + 1..).unwrap_or("")
    };
    (abi, flavour)
}

/// The kernel release a Debian/Ubuntu image package installs, or `None`
/// for anything that is not a kernel image (meta packages, debug symbols,
/// headers).
fn image_release(name: &str) -> Option<&str> {
    let rest = name.strip_prefix("linux-image-")?;
    let rest = rest.strip_prefix("unsigned-").unwrap_or(rest);
    let rest = rest.strip_suffix("-unsigned").unwrap_or(rest);
    if rest.ends_with("-dbg") || rest.ends_with("-dbgsym") {
        return None;
    }
    rest.starts_with(|c: char| c.is_ascii_digit())
        .then_some(rest)
}

/// The kernel check on a Debian or Ubuntu host.
pub fn debian_kernel<'a>(
    running: &RunningKernel,
    installed: impl IntoIterator<Item = &'a InstalledPackage>,
) -> KernelVerdict {
    let (_, flavour) = split_flavour(&running.release);
    let mut newest: Option<(&str, &DebVersion)> = None;
    for package in installed {
        if !package.is_installed() {
            continue;
        }
        let (Some(release), Some(version)) = (image_release(&package.name), &package.version)
        else {
            continue;
        };
        if split_flavour(release).1 != flavour {
            continue;
        }
        if newest.is_none_or(|(_, v)| version > v) {
            newest = Some((release, version));
        }
    }
    let Some((release, version)) = newest else {
        return KernelVerdict::Unknown {
            reason: format!(
                "no installed kernel image of flavour {flavour:?} (running {})",
                running.release
            ),
        };
    };
    if release != running.release {
        return KernelVerdict::NewerInstalled {
            release: release.to_owned(),
            version: version.to_string(),
        };
    }
    match running
        .build_version
        .as_deref()
        .and_then(|v| DebVersion::parse(v).ok())
    {
        Some(built) if &built != version => KernelVerdict::Rebuilt {
            running: built.to_string(),
            installed: version.to_string(),
        },
        _ => KernelVerdict::Current,
    }
}

/// The kernel packages of an RPM host's flavour: `uname -r` ends in
/// `+debug` or `+64k` for those builds; real-time and UEK kernels say so in
/// their release.
fn rpm_flavour(release: &str) -> (&'static [&'static str], &'static str) {
    if release.ends_with("+debug") {
        (&["kernel-debug-core", "kernel-debug"], "+debug")
    } else if release.ends_with("+64k") {
        (&["kernel-64k-core", "kernel-64k"], "+64k")
    } else if release.contains(".rt") || release.ends_with("+rt") {
        (&["kernel-rt-core", "kernel-rt"], "")
    } else if release.contains("uek") {
        (&["kernel-uek-core", "kernel-uek"], "")
    } else {
        (&["kernel-core", "kernel"], "")
    }
}

/// The kernel check on an RPM host.
pub fn rpm_kernel<'a>(
    running: &RunningKernel,
    installed: impl IntoIterator<Item = &'a InstalledRpm>,
) -> KernelVerdict {
    let (names, suffix) = rpm_flavour(&running.release);
    let mut newest: Option<(Evr, String)> = None;
    for package in installed {
        if !names.contains(&package.name.as_str()) {
            continue;
        }
        let Some(arch) = &package.arch else {
            continue;
        };
        let evr = package.evr();
        let release = format!("{}-{}.{arch}{suffix}", package.version, package.release);
        if newest.as_ref().is_none_or(|(e, _)| evr > *e) {
            newest = Some((evr, release));
        }
    }
    match newest {
        None => KernelVerdict::Unknown {
            reason: format!(
                "no installed {} package (running {})",
                names[0], running.release
            ),
        },
        Some((evr, release)) if release != running.release => KernelVerdict::NewerInstalled {
            release,
            version: evr.to_string(),
        },
        Some(_) => KernelVerdict::Current,
    }
}

/// The files a process maps that were deleted since (replaced by an
/// upgrade), from the text of `/proc/<pid>/maps`: executables and
/// libraries only, not anonymous shared memory (`/memfd:`, `/dev/shm`,
/// SysV segments) that is deleted by design. Each path once, in order.
pub fn deleted_mappings(maps: &str) -> Vec<String> {
    let mut paths: Vec<String> = Vec::new();
    for line in maps.lines() {
        // address perms offset dev inode pathname: the path is the rest
        // after five fields (it may contain spaces).
        let mut rest = line;
        for _ in 0..5 {
            rest = rest.trim_start();
            match rest.find(' ') {
                Some(end) => rest = &rest[end..],
                None => {
                    rest = "";
                    break;
                }
            }
        }
        let path = rest.trim();
        let Some(path) = path.strip_suffix(" (deleted)") else {
            continue;
        };
        let transient = ["/memfd:", "/dev/", "/SYSV", "/run/user/", "/[aio]"];
        if !path.starts_with('/') || transient.iter().any(|p| path.starts_with(p)) {
            continue;
        }
        if !paths.iter().any(|p| p == path) {
            paths.push(path.to_owned());
        }
    }
    paths
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::deb::StatusFile;

    fn dpkg(entries: &[(&str, &str)]) -> StatusFile {
        let text: String = entries
            .iter()
            .map(|(name, version)| {
                format!(
                    "Package: {name}\nStatus: install ok installed\nVersion: {version}\nArchitecture: amd64\n\n"
                )
            })
            .collect();
        StatusFile::parse(text.as_bytes()).unwrap()
    }

    fn debian(release: &str, version_line: &str, status: &StatusFile) -> KernelVerdict {
        debian_kernel(
            &RunningKernel::from_proc(release, version_line, None),
            &status.packages,
        )
    }

    const V76: &str = "#1 SMP PREEMPT_DYNAMIC Debian 6.1.76-1 (2024-02-01)";

    #[test]
    fn flavours_split_at_the_first_part_without_a_digit() {
        assert_eq!(
            split_flavour("6.1.0-18-cloud-amd64"),
            ("6.1.0-18", "cloud-amd64")
        );
        assert_eq!(
            split_flavour("6.10.6+bpo-rt-amd64"),
            ("6.10.6+bpo", "rt-amd64")
        );
        assert_eq!(split_flavour("5.15.0-91-generic"), ("5.15.0-91", "generic"));
        assert_eq!(split_flavour("6.18.44"), ("6.18.44", ""));
        assert_eq!(split_flavour("custom"), ("", "custom"));
        assert_eq!(image_release("linux-image-amd64"), None);
        assert_eq!(image_release("linux-image-6.1.0-18-amd64-dbg"), None);
        assert_eq!(
            image_release("linux-image-6.1.0-18-amd64-unsigned"),
            Some("6.1.0-18-amd64")
        );
        assert_eq!(
            image_release("linux-image-unsigned-5.15.0-91-generic"),
            Some("5.15.0-91-generic")
        );
    }

    #[test]
    fn debian_newer_kernel_of_the_running_flavour_only() {
        let status = dpkg(&[
            ("linux-image-6.1.0-18-cloud-amd64", "6.1.76-1"),
            ("linux-image-6.1.0-20-rt-amd64", "6.1.85-1"),
            ("linux-image-cloud-amd64", "6.1.85-1"),
        ]);
        assert_eq!(
            debian("6.1.0-18-cloud-amd64", V76, &status),
            KernelVerdict::Current
        );
        let status = dpkg(&[
            ("linux-image-6.1.0-18-cloud-amd64", "6.1.76-1"),
            ("linux-image-6.1.0-20-cloud-amd64", "6.1.85-1"),
        ]);
        let verdict = debian("6.1.0-18-cloud-amd64", V76, &status);
        assert!(verdict.reboot_required());
        assert_eq!(
            verdict,
            KernelVerdict::NewerInstalled {
                release: "6.1.0-20-cloud-amd64".into(),
                version: "6.1.85-1".into()
            }
        );
        // Booted into the newest; an older one still installed.
        assert_eq!(
            debian(
                "6.1.0-20-cloud-amd64",
                "#1 SMP Debian 6.1.85-1 (2024-04-11)",
                &status
            ),
            KernelVerdict::Current
        );
    }

    #[test]
    fn debian_rebuild_under_the_same_name() {
        let status = dpkg(&[("linux-image-6.1.0-18-amd64", "6.1.76-1+deb12u1")]);
        let verdict = debian("6.1.0-18-amd64", V76, &status);
        assert!(
            matches!(verdict, KernelVerdict::Rebuilt { .. }),
            "{verdict:?}"
        );
        // Without a build version the name is all there is.
        assert_eq!(
            debian("6.1.0-18-amd64", "#1 SMP", &status),
            KernelVerdict::Current
        );
    }

    #[test]
    fn ubuntu_version_signature() {
        let status = dpkg(&[("linux-image-5.15.0-91-generic", "5.15.0-91.101")]);
        let running = RunningKernel::from_proc(
            "5.15.0-91-generic",
            "#101-Ubuntu SMP",
            Some("Ubuntu 5.15.0-91.101-generic 5.15.131\n"),
        );
        assert_eq!(running.build_version.as_deref(), Some("5.15.0-91.101"));
        assert_eq!(
            debian_kernel(&running, &status.packages),
            KernelVerdict::Current
        );
    }

    #[test]
    fn a_kernel_no_package_provides_is_unknown() {
        let status = dpkg(&[("linux-image-6.1.0-18-amd64", "6.1.76-1")]);
        let verdict = debian("6.18.44-fc-v1045", "#1 SMP PREEMPT_DYNAMIC @0", &status);
        assert!(
            matches!(verdict, KernelVerdict::Unknown { .. }),
            "{verdict:?}"
        );
        assert!(!verdict.reboot_required());
    }

    fn rpm(name: &str, version: &str, release: &str) -> InstalledRpm {
        InstalledRpm {
            name: name.into(),
            epoch: None,
            version: version.into(),
            release: release.into(),
            arch: Some("x86_64".into()),
            source_rpm: None,
            install_time: None,
        }
    }

    #[test]
    fn rpm_kernels_side_by_side_and_flavours() {
        let installed = [
            rpm("kernel-core", "5.14.0", "362.8.1.el9_3"),
            rpm("kernel-core", "5.14.0", "362.13.1.el9_3"),
            rpm("kernel-debug-core", "5.14.0", "362.24.1.el9_3"),
            rpm("kernel", "5.14.0", "362.13.1.el9_3"),
        ];
        let running = |release: &str| RunningKernel::from_proc(release, "#1 SMP", None);
        let verdict = rpm_kernel(&running("5.14.0-362.8.1.el9_3.x86_64"), &installed);
        assert_eq!(
            verdict,
            KernelVerdict::NewerInstalled {
                release: "5.14.0-362.13.1.el9_3.x86_64".into(),
                version: "5.14.0-362.13.1.el9_3".into()
            }
        );
        assert_eq!(
            rpm_kernel(&running("5.14.0-362.13.1.el9_3.x86_64"), &installed),
            KernelVerdict::Current
        );
        assert!(
            rpm_kernel(&running("5.14.0-362.13.1.el9_3.x86_64+debug"), &installed)
                .reboot_required()
        );
        assert!(matches!(
            rpm_kernel(
                &running("5.14.0-284.11.1.rt14.296.el9_2.x86_64"),
                &installed
            ),
            KernelVerdict::Unknown { .. }
        ));
    }

    #[test]
    fn reasons_in_words() {
        let newer = KernelVerdict::NewerInstalled {
            release: "6.1.0-20-amd64".into(),
            version: "6.1.85-1".into(),
        };
        assert_eq!(
            newer.reason().as_deref(),
            Some("newer kernel 6.1.0-20-amd64 (6.1.85-1) installed")
        );
        assert_eq!(KernelVerdict::Current.reason(), None);
        assert_eq!(KernelVerdict::Unknown { reason: "x".into() }.reason(), None);
        assert_eq!(flag_reason(None), "/run/reboot-required exists");
        assert_eq!(flag_reason(Some(" \n")), "/run/reboot-required exists");
        assert_eq!(
            flag_reason(Some("linux-image-6.1.0-20-amd64\nlibc6\nlibc6\n")),
            "/run/reboot-required exists (for libc6, linux-image-6.1.0-20-amd64)"
        );
    }

    #[test]
    fn deleted_libraries_not_shared_memory() {
        let maps = "\
55d0c0a00000-55d0c0a02000 r--p 00000000 fd:01 1234 /usr/sbin/sshd (deleted)
7f0e1c000000-7f0e1c021000 r-xp 00000000 fd:01 5678 /usr/lib/x86_64-linux-gnu/libssl.so.3 (deleted)
7f0e1c021000-7f0e1c022000 r--p 00021000 fd:01 5678 /usr/lib/x86_64-linux-gnu/libssl.so.3 (deleted)
7f0e1d000000-7f0e1d100000 rw-s 00000000 00:01 99 /memfd:pulseaudio (deleted)
7f0e1e000000-7f0e1e100000 rw-s 00000000 00:05 98 /dev/shm/x (deleted)
7f0e1f000000-7f0e1f100000 r--p 00000000 fd:01 97 /opt/app/lib with space.so (deleted)
7f0e20000000-7f0e20021000 r-xp 00000000 fd:01 96 /usr/lib/x86_64-linux-gnu/libc.so.6
7ffd00000000-7ffd00021000 rw-p 00000000 00:00 0 [stack]
";
        assert_eq!(
            deleted_mappings(maps),
            [
                "/usr/sbin/sshd",
                "/usr/lib/x86_64-linux-gnu/libssl.so.3",
                "/opt/app/lib with space.so"
            ]
        );
        assert!(deleted_mappings("garbage\n\n1 2 3").is_empty());
    }
}
