//! Who this process runs as.

/// How the current process is confined, in words for logs and the UI.
///
/// The full sandbox (own users, capabilities, seccomp, Landlock) is applied
/// by the privilege-separation work; until a process has applied it, this
/// says plainly that it is not sandboxed.
pub fn sandbox_status() -> String {
    let uid = nix::unistd::getuid();
    format!("not sandboxed (running as uid {uid})")
}

/// True when running as root.
pub fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}
