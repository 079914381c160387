//! The platform's start as root, in `main` before its async runtime exists:
//! fork the launcher, hand the state directory to the platform's user, then
//! drop every privilege and apply the platform's sandbox.

use std::os::fd::AsFd;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use nix::unistd::Uid;

use super::users::{self, SystemUser};
use super::{Profile, SandboxError, apply, process};
use crate::launcher::{self, LauncherClient};

/// Where the platform's state is and where the child programs are.
#[derive(Debug, Clone, Copy)]
pub struct Start<'a> {
    pub state_dir: &'a Path,
    pub libexec: &'a Path,
}

/// How the platform started.
pub enum Started {
    /// As root: the launcher is forked, the platform runs as its own user in
    /// its sandbox, with its working directory in the state directory.
    Sandboxed {
        launcher: LauncherClient,
        /// What the sandbox applied, in words.
        description: String,
        /// The state directory, absolute (for messages and the launcher).
        state_dir: PathBuf,
        /// How the platform reaches its state directory from now on: `.`,
        /// which works even when a directory above it is closed to its user.
        work_dir: PathBuf,
    },
    /// As an ordinary user (development): nothing applied.
    Unsandboxed { description: String },
}

/// Starts the platform: as root, everything of the module documentation;
/// as an ordinary user, nothing.
pub fn start(options: Start<'_>) -> Result<Started, SandboxError> {
    if !crate::identity::is_root() {
        return Ok(Started::Unsandboxed {
            description: crate::identity::sandbox_status(),
        });
    }
    process::require_single_thread()?;
    process::close_inherited(&[])?;
    users::require_all()?;
    let agent = users::require(users::AGENT_USER)?;
    let programs = launcher::check_programs(options.libexec)?;
    let state_dir = prepare_state_dir(options.state_dir, agent)?;
    let launcher = launcher::fork_launcher(programs, &state_dir)?;
    std::env::set_current_dir(&state_dir).map_err(|e| SandboxError::StateDir {
        path: state_dir.display().to_string(),
        problem: format!("cannot enter it: {e}"),
    })?;
    let description = apply(Profile::Platform, Some(&state_dir))?;
    Ok(Started::Sandboxed {
        launcher,
        description,
        state_dir,
        work_dir: PathBuf::from("."),
    })
}

/// Makes the state directory the platform's to use, and nothing more:
///
/// - the directory is `root:palisade-agent`, mode 1770: the platform creates
///   and replaces its own files there, but the sticky bit keeps it from
///   renaming or removing what root owns (control's `control/`, whose pin
///   it must not be able to swap);
/// - every regular file directly in it (identity, spool) is handed to
///   `palisade-agent`, mode 0600, after checks that make the chown safe
///   even if a compromised platform planted links there earlier: a
///   symbolic link is never followed, a file with other hard links or
///   another owner is refused;
/// - subdirectories (`control/`) are root's and left alone.
///
/// Returns the directory's absolute path.
pub fn prepare_state_dir(dir: &Path, agent: SystemUser) -> Result<PathBuf, SandboxError> {
    let fail = |path: &Path, problem: String| SandboxError::StateDir {
        path: path.display().to_string(),
        problem,
    };
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|e| fail(dir, format!("cannot create it: {e}")))?;
    let dir = dir
        .canonicalize()
        .map_err(|e| fail(dir, format!("cannot resolve it: {e}")))?;
    let meta = std::fs::symlink_metadata(&dir).map_err(|e| fail(&dir, e.to_string()))?;
    if !meta.is_dir() {
        return Err(fail(&dir, "it is not a directory".into()));
    }
    if meta.uid() != 0 {
        return Err(fail(
            &dir,
            format!(
                "it is owned by uid {}; it must be owned by root (it also holds control's root-only pin)",
                meta.uid()
            ),
        ));
    }
    nix::unistd::chown(&dir, Some(Uid::from_raw(0)), Some(agent.gid))
        .map_err(|e| fail(&dir, format!("cannot give it to group {}: {e}", agent.name)))?;
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o1770))
        .map_err(|e| fail(&dir, format!("cannot set its mode: {e}")))?;

    let entries =
        std::fs::read_dir(&dir).map_err(|e| fail(&dir, format!("cannot list it: {e}")))?;
    for entry in entries {
        let entry = entry.map_err(|e| fail(&dir, format!("cannot list it: {e}")))?;
        let path = entry.path();
        let kind = entry.file_type().map_err(|e| fail(&path, e.to_string()))?;
        if kind.is_file() {
            hand_over(&path, agent)?;
        } else if !kind.is_dir() {
            tracing::warn!(path = %path.display(), "left alone in the state directory: not a regular file");
        }
    }
    Ok(dir)
}

/// Gives the regular file `path` to `agent`, mode 0600, through a
/// descriptor opened without following links.
fn hand_over(path: &Path, agent: SystemUser) -> Result<(), SandboxError> {
    let fail = |problem: String| SandboxError::StateDir {
        path: path.display().to_string(),
        problem,
    };
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(nix::libc::O_NOFOLLOW | nix::libc::O_NONBLOCK | nix::libc::O_NOCTTY)
        .open(path)
        .map_err(|e| fail(format!("cannot open it without following links: {e}")))?;
    let meta = file.metadata().map_err(|e| fail(e.to_string()))?;
    if !meta.is_file() {
        return Err(fail("it is not a regular file".into()));
    }
    if meta.nlink() != 1 {
        return Err(fail(format!(
            "it has {} hard links; refusing to hand it to {}",
            meta.nlink(),
            agent.name
        )));
    }
    if meta.uid() != 0 && meta.uid() != agent.uid.as_raw() {
        return Err(fail(format!(
            "it is owned by uid {}, neither root nor {}",
            meta.uid(),
            agent.name
        )));
    }
    nix::unistd::fchown(file.as_fd(), Some(agent.uid), Some(agent.gid))
        .map_err(|e| fail(format!("cannot give it to {}: {e}", agent.name)))?;
    nix::sys::stat::fchmod(
        file.as_fd(),
        nix::sys::stat::Mode::from_bits_truncate(0o600),
    )
    .map_err(|e| fail(format!("cannot set its mode: {e}")))?;
    Ok(())
}
