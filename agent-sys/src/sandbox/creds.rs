//! Who a process runs as and which capabilities it keeps: switching to a
//! system user for good, and checking afterwards, from the kernel's own
//! account (`/proc/self/status`), that the switch is what was intended.

use caps::{CapSet, Capability, CapsHashSet};
use nix::errno::Errno;
use nix::libc;
use nix::unistd::{Gid, Uid};

use super::users::SystemUser;

/// What control and the launcher (and so every package manager they start)
/// give up: from the bounding set, so no program they run regains them,
/// and from their own sets.
pub const PRIVILEGED_DROPPED: &[Capability] = &[
    // Kernel modules: also denied by seccomp.
    Capability::CAP_SYS_MODULE,
    // reboot(2): a reboot goes through systemd, which holds its own.
    Capability::CAP_SYS_BOOT,
    // Tracing other processes (and reading their memory).
    Capability::CAP_SYS_PTRACE,
    // Process accounting.
    Capability::CAP_SYS_PACCT,
    // Setting the clock.
    Capability::CAP_SYS_TIME,
    // Reading and clearing the kernel log.
    Capability::CAP_SYSLOG,
    // eBPF and performance monitoring (kernel-level tracing).
    Capability::CAP_BPF,
    Capability::CAP_PERFMON,
    // Waking the system and blocking suspend.
    Capability::CAP_WAKE_ALARM,
    Capability::CAP_BLOCK_SUSPEND,
    // Checkpoint/restore: choosing pids, reading other processes' mappings.
    Capability::CAP_CHECKPOINT_RESTORE,
];

#[derive(Debug, thiserror::Error)]
pub enum CredsError {
    #[error("cannot {action}: {source}")]
    Call {
        action: &'static str,
        source: std::io::Error,
    },
    #[error("cannot change capabilities ({action}): {reason}")]
    Caps {
        action: &'static str,
        reason: String,
    },
    #[error("the privilege drop did not hold: {0}")]
    Verify(String),
}

fn call(action: &'static str) -> impl FnOnce(Errno) -> CredsError {
    move |e| CredsError::Call {
        action,
        source: e.into(),
    }
}

fn caps_err(action: &'static str) -> impl FnOnce(caps::errors::CapsError) -> CredsError {
    move |e| CredsError::Caps {
        action,
        reason: e.to_string(),
    }
}

/// The highest capability number this kernel knows.
fn last_cap() -> u32 {
    std::fs::read_to_string("/proc/sys/kernel/cap_last_cap")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(63)
}

/// Empties the bounding set: every capability number the kernel knows,
/// including any newer than the `caps` crate. Needs CAP_SETPCAP.
fn clear_bounding() -> Result<(), CredsError> {
    for cap in 0..=last_cap() {
        // SAFETY: PR_CAPBSET_DROP takes a capability number and no pointer;
        // it only changes this thread's bounding set.
        #[allow(unsafe_code)]
        let rc = unsafe { libc::prctl(libc::PR_CAPBSET_DROP, cap as libc::c_ulong, 0, 0, 0) };
        if rc != 0 {
            let error = std::io::Error::last_os_error();
            // Numbers past the kernel's last one are EINVAL: nothing to drop.
            if error.raw_os_error() != Some(libc::EINVAL) {
                return Err(CredsError::Call {
                    action: "empty the capability bounding set",
                    source: error,
                });
            }
        }
    }
    Ok(())
}

/// Switches this (single-threaded) process to `user` for good: no
/// supplementary groups, real/effective/saved ids all the user's, an empty
/// bounding set, and of all capabilities only `keep` (permitted and
/// effective; none inheritable or ambient). Then checks it cannot get back.
pub fn become_user(user: SystemUser, keep: &[Capability]) -> Result<(), CredsError> {
    caps::clear(None, CapSet::Ambient).map_err(caps_err("clear the ambient set"))?;
    caps::clear(None, CapSet::Inheritable).map_err(caps_err("clear the inheritable set"))?;
    clear_bounding()?;
    if !keep.is_empty() {
        // Keep the permitted set across the uid change; narrowed right after.
        nix::sys::prctl::set_keepcaps(true).map_err(call("set PR_SET_KEEPCAPS"))?;
    }
    nix::unistd::setgroups(&[]).map_err(call("drop the supplementary groups"))?;
    nix::unistd::setresgid(user.gid, user.gid, user.gid).map_err(call("switch group"))?;
    nix::unistd::setresuid(user.uid, user.uid, user.uid).map_err(call("switch user"))?;
    if !keep.is_empty() {
        let kept: CapsHashSet = keep.iter().copied().collect();
        caps::set(None, CapSet::Permitted, &kept).map_err(caps_err("narrow the permitted set"))?;
        caps::set(None, CapSet::Effective, &kept)
            .map_err(caps_err("raise the kept capabilities"))?;
        nix::sys::prctl::set_keepcaps(false).map_err(call("clear PR_SET_KEEPCAPS"))?;
    }
    verify_user(user)
}

/// The ids are the user's everywhere, and root is out of reach.
fn verify_user(user: SystemUser) -> Result<(), CredsError> {
    let uids = nix::unistd::getresuid().map_err(call("read the user ids"))?;
    let gids = nix::unistd::getresgid().map_err(call("read the group ids"))?;
    if [uids.real, uids.effective, uids.saved] != [user.uid; 3]
        || [gids.real, gids.effective, gids.saved] != [user.gid; 3]
    {
        return Err(CredsError::Verify(format!(
            "ids are uid {:?} gid {:?}, wanted {} / {} everywhere",
            uids, gids, user.uid, user.gid
        )));
    }
    let groups = nix::unistd::getgroups().map_err(call("read the groups"))?;
    if !groups.is_empty() {
        return Err(CredsError::Verify(format!(
            "supplementary groups remain: {groups:?}"
        )));
    }
    // The way back must be closed: each of these needs a capability the
    // process no longer has.
    let attempts: [(&str, Result<(), Errno>); 3] = [
        ("setuid(0)", nix::unistd::setuid(Uid::from_raw(0))),
        ("setgid(0)", nix::unistd::setgid(Gid::from_raw(0))),
        (
            "setgroups([0])",
            nix::unistd::setgroups(&[Gid::from_raw(0)]),
        ),
    ];
    for (what, outcome) in attempts {
        match outcome {
            Err(Errno::EPERM) => {}
            Ok(()) => return Err(CredsError::Verify(format!("{what} succeeded"))),
            Err(e) => {
                return Err(CredsError::Verify(format!(
                    "{what} failed with {e}, not EPERM"
                )));
            }
        }
    }
    Ok(())
}

/// For control and the launcher, which stay root: gives up
/// [`PRIVILEGED_DROPPED`] in every set, bounding included, and clears the
/// ambient set.
pub fn drop_privileged_caps() -> Result<(), CredsError> {
    caps::clear(None, CapSet::Ambient).map_err(caps_err("clear the ambient set"))?;
    for cap in PRIVILEGED_DROPPED {
        if caps::has_cap(None, CapSet::Bounding, *cap).unwrap_or(false) {
            caps::drop(None, CapSet::Bounding, *cap)
                .map_err(caps_err("drop from the bounding set"))?;
        }
        for set in [CapSet::Effective, CapSet::Permitted, CapSet::Inheritable] {
            caps::drop(None, set, *cap).map_err(caps_err("drop a capability"))?;
        }
    }
    Ok(())
}

/// The bit mask of `caps`, as `/proc/<pid>/status` prints capability sets.
pub fn mask(caps: &[Capability]) -> u64 {
    caps.iter().fold(0, |m, c| m | c.bitmask())
}

/// The security-relevant lines of `/proc/<pid>/status` (or of one thread's).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ProcStatus {
    pub uid: [u32; 4],
    pub gid: [u32; 4],
    pub groups: Vec<u32>,
    pub cap_inh: u64,
    pub cap_prm: u64,
    pub cap_eff: u64,
    pub cap_bnd: u64,
    pub cap_amb: u64,
    pub no_new_privs: u8,
    pub seccomp: u8,
    pub threads: u32,
}

impl ProcStatus {
    /// Parses the text of a status file; missing lines stay zero.
    pub fn parse(text: &str) -> ProcStatus {
        let mut s = ProcStatus::default();
        for line in text.lines() {
            let Some((key, value)) = line.split_once(':') else {
                continue;
            };
            let value = value.trim();
            let ids = |v: &str| {
                let mut out = [0u32; 4];
                for (slot, n) in out.iter_mut().zip(v.split_whitespace()) {
                    *slot = n.parse().unwrap_or(u32::MAX);
                }
                out
            };
            let hex = |v: &str| u64::from_str_radix(v, 16).unwrap_or(u64::MAX);
            match key {
                "Uid" => s.uid = ids(value),
                "Gid" => s.gid = ids(value),
                "Groups" => {
                    s.groups = value
                        .split_whitespace()
                        .filter_map(|g| g.parse().ok())
                        .collect()
                }
                "CapInh" => s.cap_inh = hex(value),
                "CapPrm" => s.cap_prm = hex(value),
                "CapEff" => s.cap_eff = hex(value),
                "CapBnd" => s.cap_bnd = hex(value),
                "CapAmb" => s.cap_amb = hex(value),
                "NoNewPrivs" => s.no_new_privs = value.parse().unwrap_or(u8::MAX),
                "Seccomp" => s.seccomp = value.parse().unwrap_or(u8::MAX),
                "Threads" => s.threads = value.parse().unwrap_or(0),
                _ => {}
            }
        }
        s
    }

    /// This process's status, as the kernel reports it.
    pub fn current() -> Result<ProcStatus, CredsError> {
        std::fs::read_to_string("/proc/self/status")
            .map(|text| ProcStatus::parse(&text))
            .map_err(|source| CredsError::Call {
                action: "read /proc/self/status",
                source,
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_lines_that_matter() {
        let text = "Name:\tx\nUid:\t998\t998\t998\t998\nGid:\t997\t997\t997\t997\nGroups:\t\n\
                    Threads:\t3\nCapInh:\t0000000000000000\nCapPrm:\t0000000000000004\n\
                    CapEff:\t0000000000000004\nCapBnd:\t0000000000000000\nCapAmb:\t0000000000000000\n\
                    NoNewPrivs:\t1\nSeccomp:\t2\nSeccomp_filters:\t2\n";
        let s = ProcStatus::parse(text);
        assert_eq!(s.uid, [998; 4]);
        assert_eq!(s.gid, [997; 4]);
        assert!(s.groups.is_empty());
        assert_eq!(s.cap_prm, mask(&[Capability::CAP_DAC_READ_SEARCH]));
        assert_eq!(s.cap_eff, 4);
        assert_eq!((s.cap_inh, s.cap_bnd, s.cap_amb), (0, 0, 0));
        assert_eq!((s.no_new_privs, s.seccomp, s.threads), (1, 2, 3));
    }

    #[test]
    fn a_garbled_value_never_reads_as_a_safe_one() {
        let s = ProcStatus::parse("CapEff:\tzz\nNoNewPrivs:\tx\nUid:\ta b c d\n");
        assert_eq!(s.cap_eff, u64::MAX);
        assert_eq!(s.no_new_privs, u8::MAX);
        assert_eq!(s.uid, [u32::MAX; 4]);
    }
}
