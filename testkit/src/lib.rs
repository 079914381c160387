//! What Palisade's tests and `cargo xtask` start for themselves, so that no
//! test depends on a service someone started by hand.
//!
//! - [`apt`]: hermetic apt systems: dummy packages, a local repository of
//!   several suites, a private dpkg/apt root.
//! - [`rpm`]: the same for rpm and dnf: dummy RPMs, `createrepo_c`
//!   repositories, rpm and dnf on private roots.
//! - [`pg`]: a throwaway PostgreSQL cluster (initdb into a directory, a free
//!   port, TLS on with a certificate made here), and one fresh database per
//!   test on it.
//! - [`webdriver`]: a chromedriver on a free loopback port for the browser
//!   tests, stopped with every browser it started.

#![forbid(unsafe_code)]

pub mod apt;
pub mod pg;
pub mod rpm;
pub mod webdriver;

/// Whether this run is CI (`CI=true`): tests that need something of the
/// machine must then run, never skip.
pub fn is_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true" || v == "1")
}

/// Whether `program` is an executable file on the `PATH`. Looked up rather
/// than run: `dnf --version` would open the host's rpm database.
pub fn on_path(program: &str) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::env::var_os("PATH").is_some_and(|path| {
        std::env::split_paths(&path).any(|dir| {
            std::fs::metadata(dir.join(program))
                .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        })
    })
}
