//! Starting a child process with its end of a fresh socketpair.

use std::ffi::OsStr;
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};

use crate::ipc::{CHILD_IPC_FD, Channel, IPC_FD_ENV, IpcError};

#[derive(Debug, thiserror::Error)]
pub enum SpawnError {
    #[error("could not create a socketpair: {0}")]
    SocketPair(std::io::Error),
    #[error("could not start {path}: {source}")]
    Exec {
        path: String,
        source: std::io::Error,
    },
    #[error(transparent)]
    Ipc(#[from] IpcError),
}

/// Starts `program` with `args`, a cleared environment (only `PATH`, `RUST_LOG`
/// and [`IPC_FD_ENV`] pass), its stdin closed, and its end of a new socketpair at
/// descriptor [`CHILD_IPC_FD`]. Returns the process and the platform's end.
///
/// Every other descriptor of ours is close-on-exec (Rust opens them so), so the
/// child inherits nothing else.
pub fn spawn_child(program: &Path, args: &[&str]) -> Result<(Child, Channel), SpawnError> {
    spawn_child_with_env(program, args, &[])
}

/// Like [`spawn_child`], and also sets the variables of `env` in the child
/// (e.g. [`crate::control_pin::STATE_DIR_ENV`] for control), which the
/// spawner vouches for.
pub fn spawn_child_with_env(
    program: &Path,
    args: &[&str],
    env: &[(&str, &OsStr)],
) -> Result<(Child, Channel), SpawnError> {
    let (child, ours) = start_child(program, args, env)?;
    Ok((child, Channel::from_std(ours)?))
}

/// What [`spawn_child_with_env`] does, without a tokio runtime: returns the
/// platform's end as a plain (blocking) socket. The launcher uses it, and
/// hands the end to the platform.
pub fn start_child(
    program: &Path,
    args: &[&str],
    env: &[(&str, &OsStr)],
) -> Result<(Child, UnixStream), SpawnError> {
    let (ours, theirs) = UnixStream::pair().map_err(SpawnError::SocketPair)?;
    let theirs_fd = theirs.as_raw_fd();
    let mut cmd = Command::new(program);
    cmd.args(args)
        .env_clear()
        .env(IPC_FD_ENV, CHILD_IPC_FD.to_string())
        .stdin(Stdio::null());
    for key in [
        "PATH",
        "RUST_LOG",
        "PALISADE_LOG_FORMAT",
        crate::package_root::PACKAGE_ROOT_ENV,
    ] {
        if let Ok(v) = std::env::var(key) {
            cmd.env(key, v);
        }
    }
    for (key, value) in env {
        cmd.env(key, value);
    }
    // SAFETY: the closure runs in the forked child before exec and calls only
    // dup2 or fcntl, which are async-signal-safe; it allocates nothing and
    // takes no lock. dup2 clears FD_CLOEXEC on the new descriptor, so exactly
    // this one end of the socketpair survives the exec; when the end already
    // is descriptor 3 (a process with few descriptors open, such as the
    // launcher), dup2 would do nothing, so the flag is cleared directly.
    #[allow(unsafe_code)]
    unsafe {
        cmd.pre_exec(move || {
            let rc = if theirs_fd == CHILD_IPC_FD {
                nix::libc::fcntl(theirs_fd, nix::libc::F_SETFD, 0)
            } else {
                nix::libc::dup2(theirs_fd, CHILD_IPC_FD)
            };
            if rc < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let child = cmd.spawn().map_err(|source| SpawnError::Exec {
        path: program.display().to_string(),
        source,
    })?;
    drop(theirs);
    Ok((child, ours))
}
