//! The privileged launcher: how a platform with no privilege at all still
//! restarts its children, each in its own sandbox.
//!
//! `palisade-agent run`, started as root, forks the launcher before it has
//! a second thread and before it drops its privileges ([`fork_launcher`]).
//! The launcher stays root, single-threaded and synchronous. Over one
//! `SOCK_SEQPACKET` socketpair it understands two fixed-size requests:
//!
//! - `spawn ROLE` (collector, monitor or control; no path, no argument, no
//!   environment comes from the platform): it starts that role's program
//!   from the libexec directory fixed when it was forked, with a fixed clean
//!   environment and its end of a new socketpair at descriptor 3, and
//!   answers with the pid and, by `SCM_RIGHTS`, the platform's end;
//! - `kill ROLE PID`: it SIGKILLs its current child of that role, if that is
//!   the pid (the platform, another user, cannot signal it itself).
//!
//! It reaps its children and reports each exit (role, pid, wait status). It
//! runs at most one child per role, refuses anything else, and stops — after
//! its children — when the platform closes the socket (the platform exited
//! or died), or when a request does not parse (a platform that breaks the
//! protocol is not trusted to go on; systemd restarts the agent).
//!
//! The children apply their own sandbox first thing (`crate::sandbox`); the
//! launcher itself keeps root but carries control's deny-list and gives up
//! the same capabilities, so everything it starts has at least that.

use std::collections::{HashMap, VecDeque};
use std::ffi::OsStr;
use std::io::{IoSlice, IoSliceMut};
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::sys::signal::{SigSet, Signal, kill};
use nix::sys::signalfd::{SfdFlags, SignalFd};
use nix::sys::socket::{
    AddressFamily, ControlMessage, ControlMessageOwned, MsgFlags, SockFlag, SockType, recvmsg,
    sendmsg, socketpair,
};
use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use nix::unistd::{ForkResult, Pid};
use palisade_proto::msg::Role;
use tokio::sync::{oneshot, watch};

use crate::control_pin::STATE_DIR_ENV;
use crate::sandbox::{self, Profile};

/// How long the launcher waits for its children to exit on their own after
/// the platform went away, before it kills them.
const STOP_GRACE: Duration = Duration::from_secs(5);

#[derive(Debug, thiserror::Error)]
pub enum LauncherError {
    #[error("the launcher's program {path} is not safe to run as root: {problem}")]
    UnsafeProgram { path: PathBuf, problem: String },
    #[error("cannot {action}: {source}")]
    Io {
        action: &'static str,
        source: std::io::Error,
    },
    #[error("the launcher refused to start the {role}: {source}")]
    Refused { role: Role, source: std::io::Error },
    #[error("the launcher is gone (it exited); the agent must restart")]
    Gone,
    #[error("the launcher broke the protocol: {0}")]
    Protocol(String),
}

fn io(action: &'static str) -> impl FnOnce(Errno) -> LauncherError {
    move |e| LauncherError::Io {
        action,
        source: e.into(),
    }
}

// ---------------------------------------------------------------------------
// The wire protocol: fixed-size little-endian messages, one per datagram.

/// A request from the platform.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Request {
    Spawn(Role),
    Kill { role: Role, pid: u32 },
}

/// Every request is exactly this long: op, role, two zero bytes, pid.
pub const REQUEST_LEN: usize = 8;
/// Every reply is exactly this long: kind, role, two zero bytes, pid, value.
pub const REPLY_LEN: usize = 12;

fn role_byte(role: Role) -> u8 {
    match role {
        Role::Collector => 1,
        Role::Monitor => 2,
        Role::Control => 3,
    }
}

fn role_from(byte: u8) -> Option<Role> {
    match byte {
        1 => Some(Role::Collector),
        2 => Some(Role::Monitor),
        3 => Some(Role::Control),
        _ => None,
    }
}

fn role_index(role: Role) -> usize {
    usize::from(role_byte(role) - 1)
}

impl Request {
    pub fn encode(self) -> [u8; REQUEST_LEN] {
        let (op, role, pid) = match self {
            Request::Spawn(role) => (1u8, role, 0u32),
            Request::Kill { role, pid } => (2u8, role, pid),
        };
        let mut out = [0u8; REQUEST_LEN];
        out[0] = op;
        out[1] = role_byte(role);
        out[4..8].copy_from_slice(&pid.to_le_bytes());
        out
    }

    /// Parses a request; anything but an exact, known message is `None`.
    pub fn decode(bytes: &[u8]) -> Option<Request> {
        let bytes: &[u8; REQUEST_LEN] = bytes.try_into().ok()?;
        if bytes[2..4] != [0, 0] {
            return None;
        }
        let role = role_from(bytes[1])?;
        let pid = u32::from_le_bytes([bytes[4], bytes[5], bytes[6], bytes[7]]);
        match (bytes[0], pid) {
            (1, 0) => Some(Request::Spawn(role)),
            (2, pid) if pid > 0 && pid <= i32::MAX as u32 => Some(Request::Kill { role, pid }),
            _ => None,
        }
    }
}

/// A message from the launcher.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reply {
    /// Started; the platform's end of the child's socketpair comes with it.
    Spawned { role: Role, pid: u32 },
    /// Not started, with the errno.
    Failed { role: Role, errno: i32 },
    /// A child exited, with its raw wait status.
    Exited { role: Role, pid: u32, status: i32 },
}

impl Reply {
    pub fn encode(self) -> [u8; REPLY_LEN] {
        let (kind, role, pid, value) = match self {
            Reply::Spawned { role, pid } => (1u8, role, pid, 0i32),
            Reply::Failed { role, errno } => (2u8, role, 0, errno),
            Reply::Exited { role, pid, status } => (3u8, role, pid, status),
        };
        let mut out = [0u8; REPLY_LEN];
        out[0] = kind;
        out[1] = role_byte(role);
        out[4..8].copy_from_slice(&pid.to_le_bytes());
        out[8..12].copy_from_slice(&value.to_le_bytes());
        out
    }

    pub fn decode(bytes: &[u8]) -> Option<Reply> {
        let bytes: &[u8; REPLY_LEN] = bytes.try_into().ok()?;
        if bytes[2..4] != [0, 0] {
            return None;
        }
        let role = role_from(bytes[1])?;
        let pid = u32::from_le_bytes([bytes[4], bytes[5], bytes[6], bytes[7]]);
        let value = i32::from_le_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]);
        match bytes[0] {
            1 if pid > 0 && value == 0 => Some(Reply::Spawned { role, pid }),
            2 if pid == 0 => Some(Reply::Failed { role, errno: value }),
            3 if pid > 0 => Some(Reply::Exited {
                role,
                pid,
                status: value,
            }),
            _ => None,
        }
    }
}

// ---------------------------------------------------------------------------
// Start-up, in the platform, before it drops its privileges.

/// The three programs the launcher may run, fixed when it is forked.
#[derive(Debug, Clone)]
pub struct Programs {
    paths: [PathBuf; 3],
}

impl Programs {
    fn path(&self, role: Role) -> &Path {
        &self.paths[role_index(role)]
    }
}

/// The program of `role` in `libexec`.
pub fn program_path(libexec: &Path, role: Role) -> PathBuf {
    libexec.join(format!("palisade-agent-{}", role.as_str()))
}

/// Checks the programs of the three roles may be run as root: regular
/// files, and they and every directory above them owned by root and
/// writable by no one else (otherwise whoever could replace one would run
/// code as root, like sshd's StrictModes).
pub fn check_programs(libexec: &Path) -> Result<Programs, LauncherError> {
    let unsafe_program = |path: &Path, problem: String| LauncherError::UnsafeProgram {
        path: path.to_owned(),
        problem,
    };
    let libexec = libexec
        .canonicalize()
        .map_err(|e| unsafe_program(libexec, format!("cannot resolve it: {e}")))?;
    let paths = [Role::Collector, Role::Monitor, Role::Control].map(|r| program_path(&libexec, r));
    for path in &paths {
        let meta = std::fs::symlink_metadata(path)
            .map_err(|e| unsafe_program(path, format!("cannot inspect it: {e}")))?;
        if !meta.file_type().is_file() {
            return Err(unsafe_program(path, "it is not a regular file".into()));
        }
        let mut at: Option<&Path> = Some(path);
        while let Some(p) = at {
            let meta = std::fs::metadata(p).map_err(|e| {
                unsafe_program(path, format!("cannot inspect {}: {e}", p.display()))
            })?;
            let mode = meta.permissions().mode();
            if meta.uid() != 0 {
                return Err(unsafe_program(
                    path,
                    format!("{} is owned by uid {}, not root", p.display(), meta.uid()),
                ));
            }
            // A sticky directory (such as /tmp) protects the entries of others.
            let sticky = meta.is_dir() && mode & 0o1000 != 0;
            if mode & 0o022 != 0 && !sticky {
                return Err(unsafe_program(
                    path,
                    format!(
                        "{} is writable by group or others (mode {:o})",
                        p.display(),
                        mode & 0o7777
                    ),
                ));
            }
            at = p.parent();
        }
    }
    Ok(Programs { paths })
}

/// The platform's end of the launcher, before the async runtime exists.
pub struct LauncherClient {
    socket: OwnedFd,
    pid: Pid,
}

impl LauncherClient {
    pub fn pid(&self) -> u32 {
        self.pid.as_raw().unsigned_abs()
    }

    pub fn raw_fd(&self) -> RawFd {
        self.socket.as_raw_fd()
    }

    /// Starts the thread that reads the launcher's messages; call it after
    /// the sandbox is applied (the thread inherits it).
    pub fn start(self) -> Result<Arc<Launcher>, LauncherError> {
        let (gone, _) = watch::channel(false);
        let launcher = Arc::new(Launcher {
            socket: self.socket,
            pid: self.pid,
            send_lock: Mutex::new(()),
            pending: Mutex::new(VecDeque::new()),
            exits: Mutex::new(HashMap::new()),
            gone,
        });
        let reader = launcher.clone();
        std::thread::Builder::new()
            .name("launcher".into())
            .spawn(move || reader.read_loop())
            .map_err(|source| LauncherError::Io {
                action: "start the launcher's reader thread",
                source,
            })?;
        Ok(launcher)
    }
}

/// Forks the launcher. Must be called as root while the process has a
/// single thread (checked): the child runs the launcher and never returns;
/// the parent gets its end of the channel.
pub fn fork_launcher(
    programs: Programs,
    state_dir: &Path,
) -> Result<LauncherClient, LauncherError> {
    sandbox::require_single_thread().map_err(|e| LauncherError::Io {
        action: "fork the launcher",
        source: std::io::Error::other(e.to_string()),
    })?;
    let (platform_end, launcher_end) = socketpair(
        AddressFamily::Unix,
        SockType::SeqPacket,
        None,
        SockFlag::SOCK_CLOEXEC,
    )
    .map_err(io("create the launcher's socketpair"))?;
    // SAFETY: the process has one thread (checked just above), so no lock
    // can be held by a thread that does not exist in the child; the child
    // runs only `launcher_main`, which ends the process and never returns
    // into the caller's code.
    #[allow(unsafe_code)]
    let forked = unsafe { nix::unistd::fork() }.map_err(io("fork the launcher"))?;
    match forked {
        ForkResult::Child => {
            drop(platform_end);
            let code = launcher_main(launcher_end, programs, state_dir.to_owned());
            std::process::exit(code)
        }
        ForkResult::Parent { child } => {
            drop(launcher_end);
            Ok(LauncherClient {
                socket: platform_end,
                pid: child,
            })
        }
    }
}

// ---------------------------------------------------------------------------
// The launcher process.

fn launcher_main(socket: OwnedFd, programs: Programs, state_dir: PathBuf) -> i32 {
    let _ = nix::sys::prctl::set_name(c"palisade-launch");
    match launcher_setup(&socket) {
        Ok(description) => tracing::info!(sandbox = %description, "launcher started"),
        Err(error) => {
            tracing::error!("launcher: cannot apply its sandbox: {error}");
            return 1;
        }
    }
    match serve(&socket, &programs, &state_dir) {
        Ok(()) => 0,
        Err(error) => {
            tracing::error!("launcher: {error}");
            1
        }
    }
}

fn launcher_setup(socket: &OwnedFd) -> Result<String, sandbox::SandboxError> {
    sandbox::close_inherited_but(&[socket.as_raw_fd()])?;
    sandbox::apply(Profile::Launcher, None)
}

/// The children: one slot per role.
struct Children {
    pids: [Option<Pid>; 3],
}

impl Children {
    fn role_of(&self, pid: Pid) -> Option<Role> {
        [Role::Collector, Role::Monitor, Role::Control]
            .into_iter()
            .find(|r| self.pids[role_index(*r)] == Some(pid))
    }

    fn is_empty(&self) -> bool {
        self.pids.iter().all(Option::is_none)
    }
}

fn send_reply(socket: &OwnedFd, reply: Reply, fd: Option<RawFd>) -> Result<(), Errno> {
    let bytes = reply.encode();
    let iov = [IoSlice::new(&bytes)];
    let fds;
    let cmsgs: &[ControlMessage<'_>] = match fd {
        Some(fd) => {
            fds = [fd];
            &[ControlMessage::ScmRights(&fds)]
        }
        None => &[],
    };
    sendmsg::<()>(socket.as_raw_fd(), &iov, cmsgs, MsgFlags::empty(), None).map(drop)
}

/// The status word `waitpid` reported, rebuilt from nix's decoded form.
fn raw_status(status: WaitStatus) -> Option<(Pid, i32)> {
    match status {
        WaitStatus::Exited(pid, code) => Some((pid, (code & 0xff) << 8)),
        WaitStatus::Signaled(pid, signal, core) => {
            Some((pid, signal as i32 | if core { 0x80 } else { 0 }))
        }
        _ => None,
    }
}

/// Reaps every child that has exited and reports it.
fn reap(socket: &OwnedFd, children: &mut Children) -> Result<(), Errno> {
    loop {
        match waitpid(None, Some(WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::StillAlive) | Err(Errno::ECHILD) => return Ok(()),
            Ok(status) => {
                let Some((pid, raw)) = raw_status(status) else {
                    continue;
                };
                if let Some(role) = children.role_of(pid) {
                    children.pids[role_index(role)] = None;
                    tracing::info!(%role, pid = pid.as_raw(), status = raw, "launcher: child exited");
                    match send_reply(
                        socket,
                        Reply::Exited {
                            role,
                            pid: pid.as_raw().unsigned_abs(),
                            status: raw,
                        },
                        None,
                    ) {
                        // The platform may be gone already: its exit is
                        // noticed on the next read.
                        Ok(()) | Err(Errno::EPIPE) | Err(Errno::ECONNRESET) => {}
                        Err(e) => return Err(e),
                    }
                }
            }
            Err(Errno::EINTR) => {}
            Err(e) => return Err(e),
        }
    }
}

fn spawn_role(
    socket: &OwnedFd,
    children: &mut Children,
    programs: &Programs,
    state_dir: &Path,
    role: Role,
) -> Result<(), Errno> {
    if children.pids[role_index(role)].is_some() {
        tracing::warn!(%role, "launcher: refusing a second child of one role");
        return send_reply(
            socket,
            Reply::Failed {
                role,
                errno: Errno::EBUSY as i32,
            },
            None,
        );
    }
    let env: [(&str, &OsStr); 1] = [(STATE_DIR_ENV, state_dir.as_os_str())];
    match crate::spawn::start_child(programs.path(role), &[], &env) {
        Ok((child, ours)) => {
            let pid = Pid::from_raw(i32::try_from(child.id()).unwrap_or(i32::MAX));
            // The child is reaped with waitpid(-1); the handle is not needed.
            drop(child);
            children.pids[role_index(role)] = Some(pid);
            tracing::info!(%role, pid = pid.as_raw(), "launcher: child started");
            let sent = send_reply(
                socket,
                Reply::Spawned {
                    role,
                    pid: pid.as_raw().unsigned_abs(),
                },
                Some(ours.as_raw_fd()),
            );
            // Our copy of the platform's end closes here: only the platform
            // holds it now.
            drop(ours);
            sent
        }
        Err(error) => {
            tracing::error!(%role, %error, "launcher: cannot start the child");
            let errno = match &error {
                crate::spawn::SpawnError::Exec { source, .. }
                | crate::spawn::SpawnError::SocketPair(source) => {
                    source.raw_os_error().unwrap_or(Errno::EIO as i32)
                }
                crate::spawn::SpawnError::Ipc(_) => Errno::EIO as i32,
            };
            send_reply(socket, Reply::Failed { role, errno }, None)
        }
    }
}

/// The launcher's loop: requests on `socket`, child exits on a signalfd.
fn serve(socket: &OwnedFd, programs: &Programs, state_dir: &Path) -> Result<(), LauncherError> {
    let mut mask = SigSet::empty();
    for signal in [
        Signal::SIGCHLD,
        Signal::SIGTERM,
        Signal::SIGINT,
        Signal::SIGHUP,
    ] {
        mask.add(signal);
    }
    // Termination signals are read (and ignored) rather than acted on: the
    // launcher stops when the platform does, after its children.
    mask.thread_block().map_err(io("block signals"))?;
    let signals = SignalFd::with_flags(&mask, SfdFlags::SFD_CLOEXEC | SfdFlags::SFD_NONBLOCK)
        .map_err(io("create a signalfd"))?;
    let mut children = Children { pids: [None; 3] };

    loop {
        let mut fds = [
            PollFd::new(socket.as_fd(), PollFlags::POLLIN),
            PollFd::new(signals.as_fd(), PollFlags::POLLIN),
        ];
        match poll(&mut fds, PollTimeout::NONE) {
            Ok(_) | Err(Errno::EINTR) => {}
            Err(e) => return Err(io("wait for requests")(e)),
        }
        let request_ready = fds[0].any().unwrap_or(true);
        let signal_ready = fds[1].any().unwrap_or(true);
        if signal_ready {
            while let Ok(Some(_)) = signals.read_signal() {}
            reap(socket, &mut children).map_err(io("report a child's exit"))?;
        }
        if !request_ready {
            continue;
        }
        let mut buf = [0u8; REQUEST_LEN + 1];
        let received = {
            let mut iov = [IoSliceMut::new(&mut buf)];
            recvmsg::<()>(
                socket.as_raw_fd(),
                &mut iov,
                None,
                MsgFlags::MSG_CMSG_CLOEXEC,
            )
            .map(|m| (m.bytes, m.flags))
        };
        let (len, flags) = match received {
            Ok(r) => r,
            Err(Errno::EINTR) | Err(Errno::EAGAIN) => continue,
            Err(Errno::ECONNRESET) => break,
            Err(e) => return Err(io("read a request")(e)),
        };
        if len == 0 {
            break;
        }
        let request = match Request::decode(&buf[..len]) {
            Some(r) if !flags.contains(MsgFlags::MSG_TRUNC) => r,
            _ => {
                tracing::error!(len, "launcher: a request that does not parse; stopping");
                stop_children(&signals, socket, &mut children);
                return Err(LauncherError::Protocol(format!(
                    "a request of {len} bytes that does not parse"
                )));
            }
        };
        match request {
            Request::Spawn(role) => {
                spawn_role(socket, &mut children, programs, state_dir, role)
                    .map_err(io("answer a spawn request"))?;
            }
            Request::Kill { role, pid } => {
                let pid = Pid::from_raw(i32::try_from(pid).unwrap_or(0));
                if children.pids[role_index(role)] == Some(pid) {
                    // The child is not reaped yet (its exit is reported
                    // first), so the pid cannot have been reused.
                    let _ = kill(pid, Signal::SIGKILL);
                }
            }
        }
    }
    tracing::info!("launcher: the platform is gone; stopping the children");
    stop_children(&signals, socket, &mut children);
    Ok(())
}

/// Gives the children [`STOP_GRACE`] to exit (their channel is closed), then
/// kills and reaps those left.
fn stop_children(signals: &SignalFd, socket: &OwnedFd, children: &mut Children) {
    let deadline = Instant::now() + STOP_GRACE;
    while !children.is_empty() {
        let _ = reap(socket, children);
        let left = deadline.saturating_duration_since(Instant::now());
        if children.is_empty() || left.is_zero() {
            break;
        }
        let mut fds = [PollFd::new(signals.as_fd(), PollFlags::POLLIN)];
        let timeout =
            PollTimeout::try_from(left.as_millis().min(1000) as u32).unwrap_or(PollTimeout::ZERO);
        let _ = poll(&mut fds, timeout);
        while let Ok(Some(_)) = signals.read_signal() {}
    }
    for pid in children.pids.iter_mut() {
        if let Some(p) = pid.take() {
            let _ = kill(p, Signal::SIGKILL);
            let _ = waitpid(p, None);
        }
    }
}

// ---------------------------------------------------------------------------
// The platform's side, once running.

/// A child the launcher started for the platform.
pub struct Spawned {
    pub pid: u32,
    /// The platform's end of the child's channel.
    pub stream: UnixStream,
    /// The child's raw wait status, when it has exited (an error if the
    /// launcher went away first).
    pub exited: oneshot::Receiver<i32>,
}

type SpawnReply = Result<Spawned, LauncherError>;

/// The platform's handle on the launcher.
pub struct Launcher {
    socket: OwnedFd,
    pid: Pid,
    /// Keeps a request and its place in `pending` together.
    send_lock: Mutex<()>,
    /// Spawn requests in the order they were sent (replies come in order).
    pending: Mutex<VecDeque<oneshot::Sender<SpawnReply>>>,
    /// Who waits for the exit of which child.
    exits: Mutex<HashMap<u32, oneshot::Sender<i32>>>,
    gone: watch::Sender<bool>,
}

impl Launcher {
    fn send(&self, request: Request) -> Result<(), LauncherError> {
        let bytes = request.encode();
        let iov = [IoSlice::new(&bytes)];
        sendmsg::<()>(self.socket.as_raw_fd(), &iov, &[], MsgFlags::empty(), None)
            .map(drop)
            .map_err(|e| match e {
                Errno::EPIPE | Errno::ECONNRESET => LauncherError::Gone,
                e => io("send a request to the launcher")(e),
            })
    }

    /// Asks the launcher to start `role`.
    pub async fn spawn(&self, role: Role) -> Result<Spawned, LauncherError> {
        if *self.gone.borrow() {
            return Err(LauncherError::Gone);
        }
        let (tx, rx) = oneshot::channel();
        {
            let _order = self
                .send_lock
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            self.pending
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .push_back(tx);
            if let Err(e) = self.send(Request::Spawn(role)) {
                self.pending
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .pop_back();
                return Err(e);
            }
        }
        rx.await.map_err(|_| LauncherError::Gone)?
    }

    /// Asks the launcher to SIGKILL the child `pid` of `role`.
    pub fn kill(&self, role: Role, pid: u32) -> Result<(), LauncherError> {
        let _order = self
            .send_lock
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        self.send(Request::Kill { role, pid })
    }

    /// Resolves when the launcher has gone away.
    pub async fn gone(&self) {
        let mut rx = self.gone.subscribe();
        let _ = rx.wait_for(|gone| *gone).await;
    }

    /// The launcher's pid.
    pub fn pid(&self) -> u32 {
        self.pid.as_raw().unsigned_abs()
    }

    fn read_loop(&self) {
        let outcome = self.read_messages();
        match &outcome {
            Ok(()) => tracing::error!("the launcher closed its channel"),
            Err(error) => tracing::error!(%error, "lost the launcher"),
        }
        self.gone.send_replace(true);
        for tx in self
            .pending
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .drain(..)
        {
            let _ = tx.send(Err(LauncherError::Gone));
        }
        self.exits
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clear();
        match waitpid(self.pid, None) {
            Ok(status) => tracing::error!(?status, "the launcher exited"),
            Err(e) => tracing::error!(error = %e, "cannot reap the launcher"),
        }
    }

    fn read_messages(&self) -> Result<(), LauncherError> {
        loop {
            let mut buf = [0u8; REPLY_LEN + 1];
            let mut space = nix::cmsg_space!([RawFd; 1]);
            let (len, flags, fd) = {
                let mut iov = [IoSliceMut::new(&mut buf)];
                let msg = match recvmsg::<()>(
                    self.socket.as_raw_fd(),
                    &mut iov,
                    Some(&mut space),
                    MsgFlags::MSG_CMSG_CLOEXEC,
                ) {
                    Ok(msg) => msg,
                    Err(Errno::EINTR) => continue,
                    Err(Errno::ECONNRESET) => return Ok(()),
                    Err(e) => return Err(io("read from the launcher")(e)),
                };
                let mut fd = None;
                for cmsg in msg
                    .cmsgs()
                    .map_err(io("read a descriptor from the launcher"))?
                {
                    if let ControlMessageOwned::ScmRights(fds) = cmsg {
                        for raw in fds {
                            // SAFETY: the kernel just installed `raw` in this
                            // process for this message (SCM_RIGHTS); nothing
                            // else owns it, so taking ownership once is sound.
                            #[allow(unsafe_code)]
                            let owned = unsafe { OwnedFd::from_raw_fd(raw) };
                            // More than one descriptor is a protocol error;
                            // extra ones are closed as they drop.
                            if fd.is_none() {
                                fd = Some(owned);
                            }
                        }
                    }
                }
                (msg.bytes, msg.flags, fd)
            };
            if len == 0 {
                return Ok(());
            }
            if flags.intersects(MsgFlags::MSG_TRUNC | MsgFlags::MSG_CTRUNC) {
                return Err(LauncherError::Protocol("a truncated message".into()));
            }
            let reply = Reply::decode(&buf[..len])
                .ok_or_else(|| LauncherError::Protocol(format!("{len} bytes that do not parse")))?;
            self.handle(reply, fd)?;
        }
    }

    fn handle(&self, reply: Reply, fd: Option<OwnedFd>) -> Result<(), LauncherError> {
        let waiter = match reply {
            Reply::Spawned { .. } | Reply::Failed { .. } => self
                .pending
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .pop_front(),
            Reply::Exited { .. } => None,
        };
        match reply {
            Reply::Spawned { role, pid } => {
                let Some(fd) = fd else {
                    return Err(LauncherError::Protocol(
                        "a spawned child without its channel".into(),
                    ));
                };
                let (exit_tx, exit_rx) = oneshot::channel();
                self.exits
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .insert(pid, exit_tx);
                let spawned = Spawned {
                    pid,
                    stream: UnixStream::from(fd),
                    exited: exit_rx,
                };
                let delivered = match waiter {
                    Some(tx) => tx.send(Ok(spawned)).is_ok(),
                    None => false,
                };
                if !delivered {
                    // Nobody waits for it any more: do not leave it running.
                    self.exits
                        .lock()
                        .unwrap_or_else(PoisonError::into_inner)
                        .remove(&pid);
                    self.kill(role, pid)?;
                }
            }
            Reply::Failed { role, errno } => {
                if let Some(tx) = waiter {
                    let _ = tx.send(Err(LauncherError::Refused {
                        role,
                        source: std::io::Error::from_raw_os_error(errno),
                    }));
                }
            }
            Reply::Exited { pid, status, .. } => {
                if let Some(tx) = self
                    .exits
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .remove(&pid)
                {
                    let _ = tx.send(status);
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_round_trip() {
        for role in Role::ALL {
            for request in [Request::Spawn(role), Request::Kill { role, pid: 4242 }] {
                assert_eq!(Request::decode(&request.encode()), Some(request));
            }
        }
    }

    #[test]
    fn replies_round_trip() {
        for role in Role::ALL {
            for reply in [
                Reply::Spawned { role, pid: 7 },
                Reply::Failed { role, errno: 2 },
                Reply::Exited {
                    role,
                    pid: 7,
                    status: 9,
                },
            ] {
                assert_eq!(Reply::decode(&reply.encode()), Some(reply));
            }
        }
    }

    /// Every request the launcher could be sent: only the exact encodings of
    /// known requests parse (all op and role bytes, every length to 16,
    /// padding and pid edge cases).
    #[test]
    fn only_exact_known_requests_parse() {
        for op in 0..=255u8 {
            for role in 0..=255u8 {
                let mut bytes = [op, role, 0, 0, 0, 0, 0, 0];
                let spawn = Request::decode(&bytes);
                assert_eq!(
                    spawn.is_some(),
                    op == 1 && (1..=3).contains(&role),
                    "op {op} role {role}"
                );
                bytes[4] = 9;
                let kill = Request::decode(&bytes);
                assert_eq!(
                    kill.is_some(),
                    op == 2 && (1..=3).contains(&role),
                    "op {op} role {role} with a pid"
                );
            }
        }
        let good = Request::Kill {
            role: Role::Control,
            pid: 5,
        }
        .encode();
        for len in 0..=16 {
            let mut bytes = vec![0u8; len];
            let n = len.min(REQUEST_LEN);
            bytes[..n].copy_from_slice(&good[..n]);
            assert_eq!(
                Request::decode(&bytes).is_some(),
                len == REQUEST_LEN,
                "len {len}"
            );
        }
        let mut padded = good;
        padded[2] = 1;
        assert_eq!(Request::decode(&padded), None, "non-zero padding");
        let mut negative = good;
        negative[4..8].copy_from_slice(&u32::MAX.to_le_bytes());
        assert_eq!(Request::decode(&negative), None, "a pid beyond i32");
        let mut zero_kill = good;
        zero_kill[4..8].copy_from_slice(&0u32.to_le_bytes());
        assert_eq!(
            Request::decode(&zero_kill),
            None,
            "kill of pid 0 (the whole group)"
        );
    }

    #[test]
    fn raw_statuses_match_what_the_kernel_reports() {
        use std::os::unix::process::ExitStatusExt;
        let pid = Pid::from_raw(10);
        let (_, raw) = raw_status(WaitStatus::Exited(pid, 3)).expect("exit");
        assert_eq!(std::process::ExitStatus::from_raw(raw).code(), Some(3));
        let (_, raw) = raw_status(WaitStatus::Signaled(pid, Signal::SIGSYS, false)).expect("sig");
        assert_eq!(
            std::process::ExitStatus::from_raw(raw).signal(),
            Some(Signal::SIGSYS as i32)
        );
    }
}
