//! Who this process runs as, and how it is confined.

use std::sync::OnceLock;

/// What [`crate::sandbox::apply`] applied to this process, once it has.
static SANDBOX: OnceLock<String> = OnceLock::new();

/// Records what the sandbox applied (called by the sandbox, once).
pub(crate) fn record_sandbox(description: &str) {
    let _ = SANDBOX.set(description.to_owned());
}

/// True once this process has applied its sandbox.
pub fn is_sandboxed() -> bool {
    SANDBOX.get().is_some()
}

/// How the current process is confined, in words for logs and the UI (the
/// `sandbox` of a child's hello): what the sandbox applied, e.g.
/// "user palisade-collector, caps none, no_new_privs, landlock ABI 7,
/// seccomp allowlist (68 syscalls)", or, in a process that did not apply it
/// (started as an ordinary user, for development), "not sandboxed (running
/// as uid N)".
pub fn sandbox_status() -> String {
    match SANDBOX.get() {
        Some(description) => description.clone(),
        None => {
            let uid = nix::unistd::getuid();
            format!("not sandboxed (running as uid {uid})")
        }
    }
}

/// True when running as root.
pub fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}
