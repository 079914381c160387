//! Process-wide settings of the sandbox that are not about identity:
//! inherited descriptors, resource limits, core dumps, and what a panic does.

use std::os::fd::RawFd;

use nix::libc;
use nix::sys::resource::{Resource, setrlimit};

use super::Profile;

#[derive(Debug, thiserror::Error)]
pub enum ProcessError {
    #[error("the sandbox must be applied while the process has one thread; it has {0}")]
    Threads(u32),
    #[error("cannot {action}: {source}")]
    Call {
        action: &'static str,
        source: std::io::Error,
    },
}

/// Capabilities, Landlock and `PR_SET_NO_NEW_PRIVS` apply to the calling
/// thread only (and to the threads it starts afterwards): applied with a
/// second thread alive, that thread would keep its privileges.
pub fn require_single_thread() -> Result<(), ProcessError> {
    let status =
        std::fs::read_to_string("/proc/self/status").map_err(|source| ProcessError::Call {
            action: "read /proc/self/status",
            source,
        })?;
    let threads = status
        .lines()
        .find_map(|l| l.strip_prefix("Threads:"))
        .and_then(|v| v.trim().parse::<u32>().ok())
        .unwrap_or(0);
    if threads == 1 {
        Ok(())
    } else {
        Err(ProcessError::Threads(threads))
    }
}

fn close_range(first: RawFd, last: RawFd) -> Result<(), ProcessError> {
    if first > last || first < 0 {
        return Ok(());
    }
    // SAFETY: close_range takes two descriptor numbers and flags, no
    // pointers. Closing descriptors behind the back of an owner would be a
    // bug: callers run this first thing in a fresh process (or in the forked
    // launcher), when nothing in this process owns a descriptor in the range
    // beyond the ones kept.
    #[allow(unsafe_code)]
    let rc = unsafe {
        libc::syscall(
            libc::SYS_close_range,
            first as libc::c_uint,
            last as libc::c_uint,
            0 as libc::c_uint,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(ProcessError::Call {
            action: "close inherited descriptors",
            source: std::io::Error::last_os_error(),
        })
    }
}

/// Closes every descriptor but 0, 1, 2 and `keep`.
pub fn close_inherited(keep: &[RawFd]) -> Result<(), ProcessError> {
    let mut keep: Vec<RawFd> = keep.iter().copied().filter(|fd| *fd > 2).collect();
    keep.sort_unstable();
    keep.dedup();
    let mut next = 3;
    for fd in keep {
        close_range(next, fd - 1)?;
        next = fd + 1;
    }
    close_range(next, RawFd::MAX)
}

/// The resource limits of each process. Core dumps are off everywhere: the
/// platform holds the identity key, control the pinned signing key.
fn limits(profile: Profile) -> (u64, Option<u64>) {
    // (open files, processes and threads of the user)
    match profile {
        // Its uplink, spool, identity, three channels and the launcher's.
        Profile::Platform => (1024, Some(256)),
        // Reads one file at a time; a blocking thread per stuck statvfs.
        Profile::Collector => (256, Some(128)),
        // Inotify watches use one descriptor; hashing opens one file at a time.
        Profile::Monitor => (1024, Some(64)),
        // Package managers open many files and run many processes (root is
        // not bound by a process limit anyway).
        Profile::Control | Profile::Launcher => (8192, None),
    }
}

/// Applies the limits of `profile`; they are lowered, never raised.
pub fn set_limits(profile: Profile) -> Result<(), ProcessError> {
    let limit = |resource: Resource, value: u64, action: &'static str| {
        setrlimit(resource, value, value).map_err(|e| ProcessError::Call {
            action,
            source: e.into(),
        })
    };
    limit(Resource::RLIMIT_CORE, 0, "disable core dumps")?;
    let (files, processes) = limits(profile);
    let (_, hard) =
        nix::sys::resource::getrlimit(Resource::RLIMIT_NOFILE).map_err(|e| ProcessError::Call {
            action: "read the open-file limit",
            source: e.into(),
        })?;
    limit(Resource::RLIMIT_NOFILE, files.min(hard), "limit open files")?;
    if let Some(processes) = processes {
        limit(Resource::RLIMIT_NPROC, processes, "limit processes")?;
    }
    Ok(())
}

/// Makes the process non-dumpable: no core file, and `/proc/<pid>/mem`,
/// `environ` and ptrace are closed to processes of the same user.
pub fn set_not_dumpable() -> Result<(), ProcessError> {
    nix::sys::prctl::set_dumpable(false).map_err(|e| ProcessError::Call {
        action: "make the process non-dumpable",
        source: e.into(),
    })
}

/// After the default report, a panic aborts the process: its parent (the
/// platform, or systemd for the platform) restarts it cleanly instead of it
/// going on with a task silently gone. The abort path is allowed by every
/// filter (tgkill, rt_sigprocmask), so a panic ends in SIGABRT, never SIGSYS.
pub fn abort_on_panic() {
    let report = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        report(info);
        std::process::abort();
    }));
}
