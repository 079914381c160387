//! The seccomp policies, as data: one table per process, one line per
//! system call, each with the reason it is there.
//!
//! - The platform, the collector and the monitor run under **allowlists**:
//!   a call not listed kills the whole process (`SECCOMP_RET_KILL_PROCESS`,
//!   seen by the parent as SIGSYS). Their lists are the union of
//!   [`RUNTIME`] (what Rust's standard library, glibc and a tokio runtime
//!   need once the process is running) and the role's own lines.
//! - Control and the launcher run under a **deny-list** ([`PRIVILEGED_DENY`]):
//!   they start package managers and service tools, whose needs are open
//!   ended, so everything is allowed except what no package manager needs;
//!   a denied call fails with EPERM so the tool gets a clean error.
//! - Every allowlisted process also carries [`CLONE3_ENOSYS`]: `clone3`
//!   answers ENOSYS, so glibc falls back to `clone`, whose flags a filter
//!   can read; the allowlists accept `clone` only for new threads
//!   (`CLONE_THREAD`), so a sandboxed process cannot fork.
//!
//! The lists were taken from `strace -f` of the real processes (start-up
//! excluded: the filter is installed after it) and are checked by the
//! selftests, which run the real binaries under their real filters.

use nix::libc;

/// How an argument is compared (32-bit comparisons: every argument checked
/// here is an `int` or `unsigned int` in the kernel).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cmp {
    /// The argument equals the value.
    Eq(u64),
    /// The argument's bits under `mask` equal `value`.
    MaskedEq { mask: u64, value: u64 },
}

/// One condition on one argument (0-based) of a call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Arg {
    pub index: u8,
    pub cmp: Cmp,
}

/// When a listed call matches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum When {
    /// Whatever its arguments.
    Always,
    /// When all the conditions of at least one alternative hold.
    AnyOf(&'static [&'static [Arg]]),
}

/// One line of a policy.
#[derive(Debug, Clone, Copy)]
pub struct Syscall {
    /// The call's name, as in `man 2`.
    pub name: &'static str,
    /// Its number on this architecture; `None` where the call does not
    /// exist here (the legacy calls of x86_64, such as `open`).
    pub nr: Option<i64>,
    pub when: When,
    /// Why the process needs it (allowlists) or must not have it (deny-lists).
    pub why: &'static str,
}

/// What a filter does with the calls it lists.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Listed calls run; anything else kills the process.
    Allowlist,
    /// Listed calls fail with the given errno; anything else runs.
    Denylist { errno: i32 },
}

/// A named filter: its kind and its lines.
#[derive(Debug, Clone, Copy)]
pub struct Policy {
    pub name: &'static str,
    pub kind: Kind,
    pub parts: &'static [&'static [Syscall]],
}

impl Policy {
    /// Every line, in order.
    pub fn syscalls(&self) -> impl Iterator<Item = &'static Syscall> + '_ {
        self.parts.iter().flat_map(|part| part.iter())
    }

    /// The number of distinct calls this filter lists on this architecture.
    pub fn count(&self) -> usize {
        let mut numbers: Vec<i64> = self.syscalls().filter_map(|s| s.nr).collect();
        numbers.sort_unstable();
        numbers.dedup();
        numbers.len()
    }
}

/// A call that exists on every supported architecture.
macro_rules! sys {
    ($name:ident) => {
        (stringify!($name), Some(libc::$name))
    };
}

/// A call that only x86_64 has (the others use the `*at` form).
#[cfg(target_arch = "x86_64")]
macro_rules! legacy {
    ($name:ident) => {
        (stringify!($name), Some(libc::$name))
    };
}
#[cfg(not(target_arch = "x86_64"))]
macro_rules! legacy {
    ($name:ident) => {
        (stringify!($name), None)
    };
}

const fn line(call: (&'static str, Option<i64>), when: When, why: &'static str) -> Syscall {
    // The constant is `SYS_name`: the name proper follows the prefix.
    let (name, nr) = call;
    let name = match name.split_at_checked(4) {
        Some((_, rest)) => rest,
        None => name,
    };
    Syscall {
        name,
        nr,
        when,
        why,
    }
}

const fn any(call: (&'static str, Option<i64>), why: &'static str) -> Syscall {
    line(call, When::Always, why)
}

const fn arg_eq(index: u8, value: i64) -> Arg {
    Arg {
        index,
        cmp: Cmp::Eq(value as u64),
    }
}

const fn arg_has(index: u8, bits: i64) -> Arg {
    Arg {
        index,
        cmp: Cmp::MaskedEq {
            mask: bits as u64,
            value: bits as u64,
        },
    }
}

/// What any of the allowlisted processes does once running: memory, threads,
/// the tokio reactor and timers, signals for a panic's abort, logging to
/// stderr, and its local channel (inherited, already connected).
pub const RUNTIME: &[Syscall] = &[
    any(sys!(SYS_read), "reading files and the local channel"),
    any(
        sys!(SYS_write),
        "log lines to stderr; frames to the local channel",
    ),
    any(sys!(SYS_writev), "vectored writes (stderr, channel frames)"),
    any(sys!(SYS_readv), "vectored reads"),
    any(sys!(SYS_close), "closing descriptors"),
    any(sys!(SYS_openat), "opening files (Landlock decides which)"),
    any(
        sys!(SYS_newfstatat),
        "fstat/stat (glibc implements fstat with it)",
    ),
    any(
        legacy!(SYS_fstat),
        "fstat on glibc versions that still use it",
    ),
    any(sys!(SYS_statx), "file metadata (Rust's std::fs::metadata)"),
    any(sys!(SYS_lseek), "seeking in files being read"),
    any(sys!(SYS_mmap), "memory allocation, thread stacks"),
    any(sys!(SYS_munmap), "freeing memory"),
    any(sys!(SYS_mremap), "growing large allocations"),
    any(
        sys!(SYS_mprotect),
        "thread stack guard pages; glibc malloc arenas",
    ),
    any(sys!(SYS_madvise), "returning freed memory (MADV_DONTNEED)"),
    any(sys!(SYS_brk), "the main heap"),
    any(sys!(SYS_futex), "locks and condition variables"),
    any(sys!(SYS_sched_yield), "spin loops in locks and tokio"),
    any(
        sys!(SYS_sched_getaffinity),
        "thread pool sizing (available_parallelism)",
    ),
    line(
        sys!(SYS_clone),
        When::AnyOf(&[&[arg_has(0, libc::CLONE_THREAD as i64)]]),
        "new threads only (CLONE_THREAD): no fork, no new process",
    ),
    any(
        sys!(SYS_clone3),
        "listed so the companion filter can answer ENOSYS (its flags are out of a filter's reach); glibc then uses clone",
    ),
    any(sys!(SYS_set_robust_list), "glibc thread start-up"),
    any(
        sys!(SYS_rseq),
        "glibc thread start-up (restartable sequences)",
    ),
    any(sys!(SYS_exit), "a thread ends"),
    any(sys!(SYS_exit_group), "the process ends"),
    any(
        sys!(SYS_restart_syscall),
        "the kernel resumes an interrupted sleep",
    ),
    any(sys!(SYS_gettid), "thread ids (logging, abort)"),
    any(sys!(SYS_getpid), "own pid (hello message, abort)"),
    any(sys!(SYS_getuid), "own uid (sandbox status)"),
    any(sys!(SYS_geteuid), "own effective uid"),
    any(sys!(SYS_getgid), "own gid"),
    any(sys!(SYS_getegid), "own effective gid"),
    any(
        sys!(SYS_rt_sigaction),
        "signal handlers (tokio, panic abort)",
    ),
    any(
        sys!(SYS_rt_sigprocmask),
        "signal masks of new threads and abort",
    ),
    any(sys!(SYS_rt_sigreturn), "returning from a signal handler"),
    any(
        sys!(SYS_sigaltstack),
        "stack-overflow handler stacks of new threads",
    ),
    any(
        sys!(SYS_tgkill),
        "abort() raises SIGABRT on itself: a panic must end in abort, not SIGSYS",
    ),
    line(
        sys!(SYS_prctl),
        When::AnyOf(&[&[arg_eq(0, libc::PR_SET_NAME as i64)]]),
        "naming threads (PR_SET_NAME) and nothing else",
    ),
    any(sys!(SYS_epoll_create1), "the tokio reactor"),
    any(
        sys!(SYS_epoll_ctl),
        "registering descriptors with the reactor",
    ),
    any(legacy!(SYS_epoll_wait), "waiting for events (x86_64)"),
    any(sys!(SYS_epoll_pwait), "waiting for events"),
    any(sys!(SYS_eventfd2), "waking the reactor from other threads"),
    line(
        sys!(SYS_ioctl),
        When::AnyOf(&[
            &[arg_eq(1, libc::FIONBIO as i64)],
            &[arg_eq(1, libc::FIOCLEX as i64)],
        ]),
        "FIONBIO (non-blocking sockets) and FIOCLEX only",
    ),
    line(
        sys!(SYS_fcntl),
        When::AnyOf(&[
            &[arg_eq(1, libc::F_GETFD as i64)],
            &[arg_eq(1, libc::F_SETFD as i64)],
            &[arg_eq(1, libc::F_GETFL as i64)],
            &[arg_eq(1, libc::F_SETFL as i64)],
            &[arg_eq(1, libc::F_DUPFD_CLOEXEC as i64)],
        ]),
        "descriptor flags (close-on-exec, non-blocking) and duplication",
    ),
    any(sys!(SYS_recvfrom), "reading the local channel"),
    any(sys!(SYS_sendto), "writing the local channel"),
    any(sys!(SYS_recvmsg), "reading sockets"),
    any(sys!(SYS_sendmsg), "writing sockets"),
    any(
        sys!(SYS_getsockopt),
        "socket type check of the inherited channel; SO_ERROR",
    ),
    line(
        sys!(SYS_socketpair),
        When::AnyOf(&[&[arg_eq(0, libc::AF_UNIX as i64)]]),
        "tokio's signal driver makes an AF_UNIX pair when the runtime starts",
    ),
    any(sys!(SYS_getrandom), "hash map seeds; key material (ring)"),
    any(sys!(SYS_clock_gettime), "time (when the vDSO is not used)"),
    any(sys!(SYS_clock_nanosleep), "sleeping threads"),
    any(sys!(SYS_nanosleep), "sleeping threads (older glibc)"),
    any(legacy!(SYS_poll), "waiting on one descriptor (std, glibc)"),
    any(sys!(SYS_ppoll), "waiting on one descriptor"),
];

/// The collector's own needs on top of [`RUNTIME`]: it reads `/proc`,
/// `/sys`, `/etc/os-release` and the package databases (Landlock limits
/// which files), watches the package databases with inotify, and measures
/// filesystems.
pub const COLLECTOR_OWN: &[Syscall] = &[
    any(
        sys!(SYS_getdents64),
        "listing /proc (process count, mounts)",
    ),
    any(sys!(SYS_statfs), "filesystem usage (statvfs) per mount"),
    any(sys!(SYS_fstatfs), "filesystem usage of an open descriptor"),
    any(
        sys!(SYS_uname),
        "kernel release and architecture for host facts",
    ),
    any(sys!(SYS_sysinfo), "uptime and memory totals"),
    any(
        sys!(SYS_inotify_init1),
        "watching the package databases for changes",
    ),
    any(
        sys!(SYS_inotify_add_watch),
        "watching the package databases for changes",
    ),
    any(sys!(SYS_pread64), "SQLite reading rpmdb.sqlite"),
    line(
        sys!(SYS_fcntl),
        When::AnyOf(&[
            &[arg_eq(1, libc::F_GETLK as i64)],
            &[arg_eq(1, libc::F_SETLK as i64)],
        ]),
        "SQLite's shared locks on rpmdb.sqlite and its WAL index (on top of the runtime's descriptor flags)",
    ),
    any(
        sys!(SYS_faccessat),
        "SQLite checking for rpmdb.sqlite's journal and WAL",
    ),
    any(
        sys!(SYS_faccessat2),
        "SQLite checking for rpmdb.sqlite's journal and WAL",
    ),
    any(
        legacy!(SYS_access),
        "SQLite checking for rpmdb.sqlite's journal and WAL (older glibc)",
    ),
    any(
        sys!(SYS_readlinkat),
        "SQLite resolving a linked database path (/var/lib/rpm)",
    ),
    any(
        legacy!(SYS_readlink),
        "SQLite resolving a linked database path (older glibc)",
    ),
];

/// The monitor's own needs on top of [`RUNTIME`]: reading any file
/// (CAP_DAC_READ_SEARCH) to hash it, listing directories.
pub const MONITOR_OWN: &[Syscall] = &[
    any(sys!(SYS_getdents64), "listing watched directories"),
    any(sys!(SYS_pread64), "hashing files in chunks"),
    any(sys!(SYS_fstatfs), "telling filesystems apart while walking"),
];

/// The platform's own needs on top of [`RUNTIME`]: the uplink (QUIC over
/// UDP, WSS over TCP, an HTTP proxy, DNS through glibc), its spool and
/// identity in its state directory (Landlock limits writes to it), and
/// reaping the launcher. No `listen`, no `accept`, no `execve`.
pub const PLATFORM_OWN: &[Syscall] = &[
    line(
        sys!(SYS_socket),
        When::AnyOf(&[
            &[arg_eq(0, libc::AF_INET as i64)],
            &[arg_eq(0, libc::AF_INET6 as i64)],
            &[arg_eq(0, libc::AF_UNIX as i64)],
            &[
                arg_eq(0, libc::AF_NETLINK as i64),
                arg_eq(2, libc::NETLINK_ROUTE as i64),
            ],
        ]),
        "UDP (QUIC, DNS) and TCP (WSS, proxy) over IPv4/IPv6; AF_UNIX for nscd/resolved; NETLINK_ROUTE for glibc's getaddrinfo address sorting",
    ),
    any(
        sys!(SYS_connect),
        "outbound connections (backend, proxy, DNS)",
    ),
    line(
        sys!(SYS_ioctl),
        When::AnyOf(&[&[arg_eq(1, libc::FIONREAD as i64)]]),
        "FIONREAD: glibc's DNS resolver sizes a UDP answer before reading it",
    ),
    any(
        sys!(SYS_bind),
        "QUIC binds its UDP socket to an ephemeral port (Landlock refuses TCP binds)",
    ),
    any(sys!(SYS_getsockname), "local address of the QUIC socket"),
    any(sys!(SYS_getpeername), "peer address of a TCP connection"),
    any(
        sys!(SYS_setsockopt),
        "socket options (GRO/GSO, ECN, keep-alive, no-delay)",
    ),
    any(sys!(SYS_shutdown), "closing the write side of a TCP stream"),
    any(sys!(SYS_sendmmsg), "batched UDP sends (QUIC, DNS)"),
    any(sys!(SYS_recvmmsg), "batched UDP receives (QUIC)"),
    any(sys!(SYS_pread64), "redb reads pages"),
    any(sys!(SYS_pwrite64), "redb writes pages"),
    any(sys!(SYS_ftruncate), "redb grows and shrinks its file"),
    any(sys!(SYS_fallocate), "redb may preallocate"),
    any(
        sys!(SYS_fsync),
        "the spool is durable before a record is sent",
    ),
    any(sys!(SYS_fdatasync), "durable writes"),
    any(
        sys!(SYS_flock),
        "redb locks its file against a second opener",
    ),
    line(
        sys!(SYS_fcntl),
        When::AnyOf(&[
            &[arg_eq(1, libc::F_OFD_GETLK as i64)],
            &[arg_eq(1, libc::F_OFD_SETLK as i64)],
            &[arg_eq(1, libc::F_OFD_SETLKW as i64)],
            &[arg_eq(1, libc::F_GETLK as i64)],
            &[arg_eq(1, libc::F_SETLK as i64)],
            &[arg_eq(1, libc::F_SETLKW as i64)],
        ]),
        "record locks: redb takes open-file-description locks on its files (on top of the runtime's descriptor flags)",
    ),
    any(legacy!(SYS_mkdir), "create_dir_all on the state directory"),
    any(sys!(SYS_mkdirat), "create_dir_all on the state directory"),
    any(legacy!(SYS_chmod), "keeping identity files at 0600"),
    any(sys!(SYS_fchmod), "keeping identity files at 0600"),
    any(sys!(SYS_fchmodat), "keeping identity files at 0600"),
    any(legacy!(SYS_unlink), "removing files in the state directory"),
    any(sys!(SYS_unlinkat), "removing files in the state directory"),
    any(
        legacy!(SYS_rename),
        "atomic replacement in the state directory",
    ),
    any(
        sys!(SYS_renameat),
        "atomic replacement in the state directory",
    ),
    any(
        sys!(SYS_renameat2),
        "atomic replacement in the state directory",
    ),
    any(sys!(SYS_getdents64), "listing the state directory"),
    any(legacy!(SYS_access), "glibc's resolver checks files"),
    any(sys!(SYS_faccessat), "glibc's resolver checks files"),
    any(sys!(SYS_faccessat2), "glibc's resolver checks files"),
    any(sys!(SYS_uname), "host name and kernel for the uplink hello"),
    any(
        sys!(SYS_wait4),
        "reaping the launcher, its own child, when it exits",
    ),
];

/// What no package manager or service tool needs, refused to control and
/// to the launcher (and so to everything they start) with EPERM.
pub const PRIVILEGED_DENY: &[Syscall] = &[
    any(sys!(SYS_init_module), "loading kernel modules"),
    any(sys!(SYS_finit_module), "loading kernel modules"),
    any(sys!(SYS_delete_module), "unloading kernel modules"),
    any(sys!(SYS_kexec_load), "replacing the running kernel"),
    any(sys!(SYS_kexec_file_load), "replacing the running kernel"),
    any(
        sys!(SYS_bpf),
        "eBPF programs and maps (kernel code, tracing)",
    ),
    any(sys!(SYS_perf_event_open), "kernel and process profiling"),
    any(sys!(SYS_ptrace), "tracing or controlling other processes"),
    any(
        sys!(SYS_process_vm_readv),
        "reading another process's memory",
    ),
    any(
        sys!(SYS_process_vm_writev),
        "writing another process's memory",
    ),
    any(
        sys!(SYS_pidfd_getfd),
        "stealing another process's descriptors",
    ),
    any(sys!(SYS_kcmp), "probing other processes' kernel objects"),
    any(sys!(SYS_mount), "changing the mount table"),
    any(sys!(SYS_umount2), "changing the mount table"),
    any(sys!(SYS_pivot_root), "changing the root filesystem"),
    any(
        sys!(SYS_move_mount),
        "changing the mount table (new mount API)",
    ),
    any(
        sys!(SYS_open_tree),
        "changing the mount table (new mount API)",
    ),
    any(sys!(SYS_fsopen), "changing the mount table (new mount API)"),
    any(
        sys!(SYS_fsconfig),
        "changing the mount table (new mount API)",
    ),
    any(
        sys!(SYS_fsmount),
        "changing the mount table (new mount API)",
    ),
    any(sys!(SYS_fspick), "changing the mount table (new mount API)"),
    any(
        sys!(SYS_mount_setattr),
        "changing mount flags (new mount API)",
    ),
    any(
        sys!(SYS_reboot),
        "reboot/halt: a signed reboot command asks systemd (`shutdown -r`), whose PID 1 makes the call outside this filter",
    ),
    any(sys!(SYS_swapon), "changing swap"),
    any(sys!(SYS_swapoff), "changing swap"),
    any(sys!(SYS_acct), "process accounting"),
    any(sys!(SYS_settimeofday), "setting the clock"),
    any(sys!(SYS_clock_settime), "setting the clock"),
    any(
        sys!(SYS_open_by_handle_at),
        "opening files by handle, around path permissions",
    ),
    any(legacy!(SYS_iopl), "raw I/O port access"),
    any(legacy!(SYS_ioperm), "raw I/O port access"),
];

/// Answers `clone3` with ENOSYS in every allowlisted process (see the module
/// documentation).
pub const CLONE3_ENOSYS: Policy = Policy {
    name: "clone3 fallback",
    kind: Kind::Denylist {
        errno: libc::ENOSYS,
    },
    parts: &[&[any(
        sys!(SYS_clone3),
        "glibc falls back to clone(2), whose flags the allowlist checks",
    )]],
};

pub const COLLECTOR: Policy = Policy {
    name: "collector allowlist",
    kind: Kind::Allowlist,
    parts: &[RUNTIME, COLLECTOR_OWN],
};

pub const MONITOR: Policy = Policy {
    name: "monitor allowlist",
    kind: Kind::Allowlist,
    parts: &[RUNTIME, MONITOR_OWN],
};

pub const PLATFORM: Policy = Policy {
    name: "platform allowlist",
    kind: Kind::Allowlist,
    parts: &[RUNTIME, PLATFORM_OWN],
};

pub const PRIVILEGED: Policy = Policy {
    name: "privileged deny-list",
    kind: Kind::Denylist { errno: libc::EPERM },
    parts: &[PRIVILEGED_DENY],
};

#[cfg(test)]
mod tests {
    use super::*;

    const ALL: [Policy; 5] = [COLLECTOR, MONITOR, PLATFORM, PRIVILEGED, CLONE3_ENOSYS];

    #[test]
    fn every_line_has_a_reason_and_a_proper_name() {
        for policy in ALL {
            for s in policy.syscalls() {
                assert!(
                    !s.why.trim().is_empty(),
                    "{}: {} has no reason",
                    policy.name,
                    s.name
                );
                assert!(
                    !s.name.starts_with("SYS_") && !s.name.is_empty(),
                    "{}: bad name {:?}",
                    policy.name,
                    s.name
                );
            }
        }
    }

    #[test]
    fn no_allowlist_lets_a_process_run_programs_listen_or_trace() {
        let forbidden = [
            "execve",
            "execveat",
            "fork",
            "vfork",
            "listen",
            "accept",
            "accept4",
            "ptrace",
            "init_module",
            "finit_module",
            "kexec_load",
            "bpf",
            "mount",
            "setuid",
            "setresuid",
            "setgid",
            "setresgid",
            "setgroups",
            "capset",
            "unshare",
            "setns",
            "chroot",
            "process_vm_writev",
            "seccomp",
        ];
        for policy in [COLLECTOR, MONITOR, PLATFORM] {
            for s in policy.syscalls() {
                assert!(
                    !forbidden.contains(&s.name),
                    "{} allows {}",
                    policy.name,
                    s.name
                );
            }
        }
    }

    #[test]
    fn only_the_platform_opens_sockets() {
        for policy in [COLLECTOR, MONITOR] {
            for s in policy.syscalls() {
                assert!(
                    !["socket", "connect", "bind", "sendmmsg"].contains(&s.name),
                    "{} allows {}",
                    policy.name,
                    s.name
                );
            }
        }
        assert!(PLATFORM.syscalls().any(|s| s.name == "socket"));
    }

    #[test]
    fn the_deny_list_covers_what_the_issue_names() {
        let names: Vec<&str> = PRIVILEGED.syscalls().map(|s| s.name).collect();
        for wanted in [
            "init_module",
            "finit_module",
            "delete_module",
            "kexec_load",
            "kexec_file_load",
            "bpf",
            "ptrace",
            "process_vm_readv",
            "mount",
            "reboot",
        ] {
            assert!(names.contains(&wanted), "deny-list misses {wanted}");
        }
    }

    #[cfg(target_arch = "x86_64")]
    #[test]
    fn names_match_numbers_on_x86_64() {
        let clone = RUNTIME.iter().find(|s| s.name == "clone").expect("clone");
        assert_eq!(clone.nr, Some(56));
        let open = PLATFORM_OWN
            .iter()
            .find(|s| s.name == "mkdir")
            .expect("mkdir");
        assert_eq!(open.nr, Some(83));
        for policy in ALL {
            assert!(policy.syscalls().all(|s| s.nr.is_some()), "{}", policy.name);
        }
    }
}
