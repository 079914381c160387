//! What Palisade's tests and `cargo xtask` start for themselves, so that no
//! test depends on a service someone started by hand.
//!
//! - [`apt`]: hermetic apt systems: dummy packages, a local repository of
//!   several suites, a private dpkg/apt root.
//! - [`pg`]: a throwaway PostgreSQL cluster (initdb into a directory, a free
//!   port, TLS on with a certificate made here), and one fresh database per
//!   test on it.
//! - [`webdriver`]: a chromedriver on a free loopback port for the browser
//!   tests, stopped with every browser it started.

#![forbid(unsafe_code)]

pub mod apt;
pub mod pg;
pub mod webdriver;

/// Whether this run is CI (`CI=true`): tests that need something of the
/// machine must then run, never skip.
pub fn is_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true" || v == "1")
}
