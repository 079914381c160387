//! Control's pin: the agent id and the backend's command-signing key, kept in
//! `<state_dir>/control/pin`, written by `palisade-agent enroll` and read by
//! the control process when it starts.
//!
//! Why a file of its own: control runs privileged actions, and the platform,
//! which relays every command, is the process exposed to the network. If
//! control took the key or its agent id from the platform, a compromised
//! platform could hand it a key of its own and sign whatever it liked
//! (security invariant 4). So enrollment, which runs as root in production,
//! writes the pin where only root can write, and control trusts nothing else.
//!
//! Layout and checks:
//! - `<state_dir>/control/` is mode 0700, `pin` is mode 0600; the pin is the
//!   protobuf `ControlPin` (`state.proto`), replaced atomically (temporary
//!   file, fsync, rename, fsync of the directory);
//! - a reader refuses the directory or the pin when it is a symbolic link,
//!   is owned by anyone but the reader itself or root, or is writable by
//!   group or others. A platform running as its own user may own the state
//!   directory and so could rename `control/` away and create another one,
//!   but that one would be its own, and is refused.

use std::io::{Read, Write};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use palisade_proto::frame::encode_body;
use palisade_proto::msg::{ControlPin, decode_control_pin};
use palisade_proto::pb;

/// The environment variable through which whoever starts control (the
/// platform's supervisor now, a root launcher after the sandbox work) tells
/// it the agent's state directory.
pub const STATE_DIR_ENV: &str = "PALISADE_AGENT_STATE_DIR";

/// Control's directory inside the state directory.
pub const CONTROL_DIR: &str = "control";

/// The pin's file name inside [`CONTROL_DIR`].
pub const PIN_FILE: &str = "pin";

/// A pin file larger than this is not a pin.
const MAX_PIN_BYTES: u64 = 4096;

#[derive(Debug, thiserror::Error)]
pub enum PinError {
    #[error("there is no control pin at {0} (enroll this agent; in production as root)")]
    Missing(PathBuf),
    #[error("cannot {action} {path}: {source}")]
    Io {
        action: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("refusing to trust {path}: {problem}")]
    Untrusted { path: PathBuf, problem: String },
    #[error("the control pin {path} is corrupt: {reason}")]
    Corrupt { path: PathBuf, reason: String },
}

fn io<'a>(action: &'static str, path: &'a Path) -> impl FnOnce(std::io::Error) -> PinError + 'a {
    move |source| PinError::Io {
        action,
        path: path.to_owned(),
        source,
    }
}

/// `<state_dir>/control`.
pub fn control_dir(state_dir: &Path) -> PathBuf {
    state_dir.join(CONTROL_DIR)
}

/// `<state_dir>/control/pin`.
pub fn pin_path(state_dir: &Path) -> PathBuf {
    control_dir(state_dir).join(PIN_FILE)
}

/// Checks that `metadata` (of `path`, not following links) belongs to a
/// directory or regular file as wanted, owned by this process's effective
/// user or root, and not writable by group or others.
pub fn check_trusted(
    path: &Path,
    metadata: &std::fs::Metadata,
    want_dir: bool,
) -> Result<(), PinError> {
    let untrusted = |problem: String| PinError::Untrusted {
        path: path.to_owned(),
        problem,
    };
    let kind = metadata.file_type();
    if kind.is_symlink() {
        return Err(untrusted("it is a symbolic link".into()));
    }
    if want_dir && !kind.is_dir() {
        return Err(untrusted("it is not a directory".into()));
    }
    if !want_dir && !kind.is_file() {
        return Err(untrusted("it is not a regular file".into()));
    }
    let me = nix::unistd::geteuid().as_raw();
    if metadata.uid() != me && metadata.uid() != 0 {
        return Err(untrusted(format!(
            "it is owned by uid {}, not by uid {me} or root",
            metadata.uid()
        )));
    }
    let mode = metadata.mode() & 0o7777;
    if mode & 0o022 != 0 {
        return Err(untrusted(format!(
            "group or others may write it (mode {mode:o})"
        )));
    }
    Ok(())
}

/// Creates `<state_dir>/control` (mode 0700) if it is missing; otherwise
/// checks it (see [`check_trusted`]: one that others may write is refused,
/// not repaired) and narrows its mode to 0700. Returns its path.
pub fn ensure_control_dir(state_dir: &Path) -> Result<PathBuf, PinError> {
    let dir = control_dir(state_dir);
    match std::fs::DirBuilder::new().mode(0o700).create(&dir) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(io("create", &dir)(e)),
    }
    let metadata = std::fs::symlink_metadata(&dir).map_err(io("inspect", &dir))?;
    check_trusted(&dir, &metadata, true)?;
    if metadata.mode() & 0o777 != 0o700 {
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700))
            .map_err(io("chmod", &dir))?;
    }
    Ok(dir)
}

/// Writes `pin` to `<state_dir>/control/pin` (mode 0600), replacing any
/// previous pin atomically; the directory is created (mode 0700) if needed.
pub fn write(state_dir: &Path, pin: &ControlPin) -> Result<(), PinError> {
    let dir = ensure_control_dir(state_dir)?;
    let path = dir.join(PIN_FILE);
    let temporary = dir.join(format!("{PIN_FILE}.new"));
    // A leftover from an interrupted write is ours to replace (never followed
    // if it is a link: removing a link removes the link).
    match std::fs::remove_file(&temporary) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(io("remove", &temporary)(e)),
    }
    let bytes = encode_body(&pb::ControlPin::from(pin.clone()));
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .custom_flags(nix::libc::O_NOFOLLOW)
        .open(&temporary)
        .map_err(io("create", &temporary))?;
    file.write_all(&bytes).map_err(io("write", &temporary))?;
    file.sync_all().map_err(io("fsync", &temporary))?;
    drop(file);
    std::fs::rename(&temporary, &path).map_err(io("rename into place", &path))?;
    std::fs::File::open(&dir)
        .and_then(|d| d.sync_all())
        .map_err(io("fsync", &dir))?;
    Ok(())
}

/// Reads the pin of `state_dir`, refusing it unless it and its directory pass
/// [`check_trusted`].
pub fn read(state_dir: &Path) -> Result<ControlPin, PinError> {
    let dir = control_dir(state_dir);
    let path = dir.join(PIN_FILE);
    let dir_metadata = match std::fs::symlink_metadata(&dir) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Err(PinError::Missing(path)),
        Err(e) => return Err(io("inspect", &dir)(e)),
    };
    check_trusted(&dir, &dir_metadata, true)?;
    let file = match std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(nix::libc::O_NOFOLLOW)
        .open(&path)
    {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Err(PinError::Missing(path)),
        // O_NOFOLLOW on a symbolic link fails with ELOOP.
        Err(e) if e.raw_os_error() == Some(nix::libc::ELOOP) => {
            return Err(PinError::Untrusted {
                path,
                problem: "it is a symbolic link".into(),
            });
        }
        Err(e) => return Err(io("open", &path)(e)),
    };
    // The checks apply to the file that was opened, not to whatever the path
    // names a moment later.
    let metadata = file.metadata().map_err(io("inspect", &path))?;
    check_trusted(&path, &metadata, false)?;
    let mut bytes = Vec::new();
    file.take(MAX_PIN_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(io("read", &path))?;
    decode_control_pin(&bytes).map_err(|e| PinError::Corrupt {
        path,
        reason: e.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pin() -> ControlPin {
        ControlPin {
            agent_id: "6f1c2a52-4f7e-4d3a-9a55-0c1d2e3f4a5b".into(),
            command_signing_key: [9; 32],
        }
    }

    fn mode(path: &Path) -> u32 {
        std::fs::symlink_metadata(path).expect("stat").mode() & 0o777
    }

    #[test]
    fn written_pin_reads_back_with_private_modes() {
        let dir = tempfile::tempdir().expect("tempdir");
        write(dir.path(), &pin()).expect("write");
        assert_eq!(read(dir.path()).expect("read"), pin());
        assert_eq!(mode(&control_dir(dir.path())), 0o700);
        assert_eq!(mode(&pin_path(dir.path())), 0o600);

        // Replacing keeps one pin file and nothing else behind.
        let mut other = pin();
        other.agent_id = "another".into();
        write(dir.path(), &other).expect("rewrite");
        assert_eq!(read(dir.path()).expect("read"), other);
        let names: Vec<_> = std::fs::read_dir(control_dir(dir.path()))
            .expect("list")
            .map(|e| e.expect("entry").file_name())
            .collect();
        assert_eq!(names, vec![std::ffi::OsString::from(PIN_FILE)]);
    }

    #[test]
    fn a_missing_pin_is_reported_as_missing() {
        let dir = tempfile::tempdir().expect("tempdir");
        assert!(matches!(read(dir.path()), Err(PinError::Missing(_))));
        std::fs::create_dir(control_dir(dir.path())).expect("mkdir");
        std::fs::set_permissions(
            control_dir(dir.path()),
            std::fs::Permissions::from_mode(0o700),
        )
        .expect("chmod");
        assert!(matches!(read(dir.path()), Err(PinError::Missing(_))));
    }

    #[test]
    fn writable_by_others_or_linked_is_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        write(dir.path(), &pin()).expect("write");
        let file = pin_path(dir.path());
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o666)).expect("chmod");
        assert!(matches!(read(dir.path()), Err(PinError::Untrusted { .. })));
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600)).expect("chmod");
        assert!(read(dir.path()).is_ok());

        std::fs::set_permissions(
            control_dir(dir.path()),
            std::fs::Permissions::from_mode(0o777),
        )
        .expect("chmod");
        assert!(matches!(read(dir.path()), Err(PinError::Untrusted { .. })));
        // Nor does enrollment write into a directory others could have
        // tampered with; a merely readable one is tightened to 0700.
        assert!(matches!(
            write(dir.path(), &pin()),
            Err(PinError::Untrusted { .. })
        ));
        std::fs::set_permissions(
            control_dir(dir.path()),
            std::fs::Permissions::from_mode(0o755),
        )
        .expect("chmod");
        write(dir.path(), &pin()).expect("write");
        assert_eq!(mode(&control_dir(dir.path())), 0o700);

        // A pin that is a link to a file elsewhere is not followed.
        let elsewhere = dir.path().join("elsewhere");
        std::fs::copy(&file, &elsewhere).expect("copy");
        std::fs::remove_file(&file).expect("remove");
        std::os::unix::fs::symlink(&elsewhere, &file).expect("symlink");
        assert!(matches!(read(dir.path()), Err(PinError::Untrusted { .. })));

        // Nor is a control directory that is a link.
        let other_state = tempfile::tempdir().expect("tempdir");
        std::os::unix::fs::symlink(control_dir(dir.path()), control_dir(other_state.path()))
            .expect("symlink");
        assert!(matches!(
            read(other_state.path()),
            Err(PinError::Untrusted { .. })
        ));
    }

    #[test]
    fn a_pin_owned_by_another_user_is_refused() {
        if !nix::unistd::geteuid().is_root() {
            // Only root can give a file away; the check itself is the same
            // code path as the mode checks above.
            return;
        }
        let dir = tempfile::tempdir().expect("tempdir");
        write(dir.path(), &pin()).expect("write");
        let file = pin_path(dir.path());
        std::os::unix::fs::chown(&file, Some(12_345), None).expect("chown");
        assert!(matches!(read(dir.path()), Err(PinError::Untrusted { .. })));
        std::os::unix::fs::chown(&file, Some(0), None).expect("chown");
        std::os::unix::fs::chown(control_dir(dir.path()), Some(12_345), None).expect("chown");
        assert!(matches!(read(dir.path()), Err(PinError::Untrusted { .. })));
    }

    #[test]
    fn garbage_is_corrupt_not_a_panic() {
        let dir = tempfile::tempdir().expect("tempdir");
        write(dir.path(), &pin()).expect("write");
        std::fs::write(pin_path(dir.path()), [0xff; 100]).expect("overwrite");
        assert!(matches!(read(dir.path()), Err(PinError::Corrupt { .. })));
        std::fs::write(pin_path(dir.path()), vec![0u8; 10_000]).expect("overwrite");
        assert!(matches!(read(dir.path()), Err(PinError::Corrupt { .. })));
    }
}
