//! Hostile probes, run inside a process after its real sandbox is applied
//! (`--selftest PROBE` on a child binary, `palisade-agent selftest PROBE`),
//! so the tests can check that the kernel stops each escalation.
//!
//! A probe prints one line, `probe NAME: OUTCOME`, where the outcome is
//! `ok` (the kernel let it through) or the errno name (`EACCES`, `EPERM`...),
//! and exits 0. When the seccomp filter kills the process, nothing is
//! printed and the parent sees SIGSYS in the wait status; a panic ends in
//! SIGABRT.

use std::ffi::CString;
use std::io::Write;
use std::process::ExitCode;

use nix::errno::Errno;
use nix::sys::socket::{AddressFamily, SockFlag, SockType, socket};

/// The probes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Probe {
    /// `execve("/bin/echo", ...)`: run another program.
    Exec,
    /// `socket(AF_INET, SOCK_STREAM)`: a network socket.
    SocketInet,
    /// `socket` then `listen` (which binds an ephemeral port): a listener.
    Listen,
    /// Create a file in `/tmp`, which every user may write, so only the
    /// sandbox can be what stops it.
    WriteOutside,
    /// `PTRACE_SEIZE` of the parent process.
    Ptrace,
    /// `init_module` with an empty image: load a kernel module.
    Module,
    /// Open `/etc/shadow` for reading (root and group shadow only).
    ReadShadow,
    /// `setuid(0)`: get root back.
    SetuidRoot,
    /// Resolve `localhost` through glibc, as the uplink resolves its server.
    Resolve,
    /// Panic: must end in abort (SIGABRT), not in SIGSYS.
    Panic,
}

impl Probe {
    pub const ALL: [Probe; 10] = [
        Probe::Exec,
        Probe::SocketInet,
        Probe::Listen,
        Probe::WriteOutside,
        Probe::Ptrace,
        Probe::Module,
        Probe::ReadShadow,
        Probe::SetuidRoot,
        Probe::Resolve,
        Probe::Panic,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Probe::Exec => "exec",
            Probe::SocketInet => "socket-inet",
            Probe::Listen => "listen",
            Probe::WriteOutside => "write-outside",
            Probe::Ptrace => "ptrace",
            Probe::Module => "module",
            Probe::ReadShadow => "read-shadow",
            Probe::SetuidRoot => "setuid-root",
            Probe::Resolve => "resolve",
            Probe::Panic => "panic",
        }
    }

    pub fn parse(name: &str) -> Option<Probe> {
        Probe::ALL.into_iter().find(|p| p.name() == name)
    }
}

impl std::fmt::Display for Probe {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

fn outcome(result: Result<(), Errno>) -> String {
    match result {
        Ok(()) => "ok".to_owned(),
        Err(e) => format!("{e:?}"),
    }
}

fn exec() -> Result<(), Errno> {
    let program = c"/bin/echo";
    let line = CString::new(format!("probe {}: ok", Probe::Exec)).map_err(|_| Errno::EINVAL)?;
    nix::unistd::execv(program, &[program, line.as_c_str()])?;
    Ok(())
}

fn socket_inet() -> Result<(), Errno> {
    socket(
        AddressFamily::Inet,
        SockType::Stream,
        SockFlag::SOCK_CLOEXEC,
        None,
    )
    .map(drop)
}

fn listen() -> Result<(), Errno> {
    let fd = socket(
        AddressFamily::Inet,
        SockType::Stream,
        SockFlag::SOCK_CLOEXEC,
        None,
    )?;
    nix::sys::socket::listen(&fd, nix::sys::socket::Backlog::new(1)?)
}

fn write_outside() -> Result<(), Errno> {
    let path = format!("/tmp/palisade-selftest-{}", std::process::id());
    let created = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&path);
    match created {
        Ok(_) => {
            let _ = std::fs::remove_file(&path);
            Ok(())
        }
        Err(e) => Err(Errno::from_raw(e.raw_os_error().unwrap_or(0))),
    }
}

fn ptrace() -> Result<(), Errno> {
    // SEIZE does not stop the target: a probe that wrongly succeeds leaves
    // its parent running, and the tracer's exit detaches it.
    nix::sys::ptrace::seize(nix::unistd::getppid(), nix::sys::ptrace::Options::empty())
}

fn module() -> Result<(), Errno> {
    nix::kmod::init_module(&[], c"")
}

fn read_shadow() -> Result<(), Errno> {
    std::fs::File::open("/etc/shadow")
        .map(drop)
        .map_err(|e| Errno::from_raw(e.raw_os_error().unwrap_or(0)))
}

fn setuid_root() -> Result<(), Errno> {
    nix::unistd::setuid(nix::unistd::Uid::from_raw(0))
}

fn resolve() -> Result<(), Errno> {
    use std::net::ToSocketAddrs;
    match ("localhost", 443).to_socket_addrs() {
        Ok(addrs) if addrs.len() > 0 => Ok(()),
        Ok(_) => Err(Errno::ENOENT),
        // A resolver failure has no errno: reported as EHOSTUNREACH.
        Err(e) => Err(Errno::from_raw(
            e.raw_os_error().unwrap_or(nix::libc::EHOSTUNREACH),
        )),
    }
}

/// Runs `probe` and reports it on stdout.
pub fn run(probe: Probe) -> ExitCode {
    let result = match probe {
        Probe::Exec => exec(),
        Probe::SocketInet => socket_inet(),
        Probe::Listen => listen(),
        Probe::WriteOutside => write_outside(),
        Probe::Ptrace => ptrace(),
        Probe::Module => module(),
        Probe::ReadShadow => read_shadow(),
        Probe::SetuidRoot => setuid_root(),
        Probe::Resolve => resolve(),
        Probe::Panic => panic!("selftest: a deliberate panic under the sandbox"),
    };
    let mut out = std::io::stdout().lock();
    let written = writeln!(out, "probe {probe}: {}", outcome(result)).and_then(|()| out.flush());
    match written {
        Ok(()) => ExitCode::SUCCESS,
        Err(_) => ExitCode::FAILURE,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for p in Probe::ALL {
            assert_eq!(Probe::parse(p.name()), Some(p));
        }
        assert_eq!(Probe::parse("rm-rf"), None);
    }

    #[test]
    fn outcomes_are_errno_names() {
        assert_eq!(outcome(Ok(())), "ok");
        assert_eq!(outcome(Err(Errno::EACCES)), "EACCES");
        assert_eq!(outcome(Err(Errno::EPERM)), "EPERM");
    }
}
