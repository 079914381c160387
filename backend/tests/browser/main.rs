//! The web UI in a real browser: Debian's chromium, driven through
//! chromedriver (WebDriver), against a real `palisade-backend` on SQLite
//! with HTTPS. Hosts are real enrollments (`palisade-agent enroll`), users
//! come from the command line, everything else is done through the pages
//! as a person would.
//!
//! - `access`: what each role is offered, a group-scoped operator's view,
//!   the audit page's filters and its CSV and JSON exports (issue 9);
//! - `sign_in`: the first sign-in's password choice, the lockout message,
//!   the session list and ending another session (issue 10);
//! - `factors`: enrolling an authenticator app, signing in with its codes
//!   and backup codes, enrollment required by role, re-authentication
//!   before a dangerous operation (issue 10).
//!
//! - `passkeys`: a passkey registered in chromium's virtual authenticator,
//!   then used for the second step, for a sign-in without the password and
//!   to confirm a dangerous operation; a failed user verification
//!   (issue 10).
//!
//! - `patching`: a patch run started from the host page, approved by a
//!   second user, its output growing on its page (issue 11).
//!
//! See `harness` for where the browser comes from and when a test skips.

#[path = "../support/mod.rs"]
mod support;

mod access;
mod factors;
mod harness;
mod passkeys;
mod patching;
mod sign_in;

use harness::{Address, Browser, Driver};
use support::{Backend, enroll};

/// A backend and a WebDriver server for one test.
pub struct Site {
    pub backend: Backend,
    pub driver: Driver,
    pub dir: tempfile::TempDir,
}

impl Site {
    /// A backend configured with `config_toml`, and a browser driver; `None`
    /// when the test skips (no browser outside CI).
    pub fn start(test: &str, config_toml: &str) -> Option<Site> {
        let driver = Driver::get(test)?;
        let dir = tempfile::tempdir().expect("tempdir");
        let backend = Backend::start_configured(&dir.path().join("backend"), config_toml);
        Some(Site {
            backend,
            driver,
            dir,
        })
    }

    /// Creates a user who keeps the generated password; returns it.
    pub fn user(&self, name: &str, role: &str, group: Option<&str>) -> String {
        let mut args = vec![
            "user",
            "create",
            name,
            "--role",
            role,
            "--password-is-final",
        ];
        if let Some(group) = group {
            args.extend(["--group", group]);
        }
        self.backend.cli_ok(&args)
    }

    /// Enrolls a host (a real `palisade-agent enroll`) into host group
    /// `group`; returns its id.
    pub fn enroll_host(&self, group: &str) -> String {
        let token = self.backend.token(&["--group", group, "--expires", "1h"]);
        let state = self.dir.path().join(format!("agent-{group}"));
        let out = enroll(&self.backend.server(), &token, &state);
        assert!(
            out.status.success(),
            "enroll into {group} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout)
            .expect("utf-8")
            .trim()
            .to_owned()
    }

    /// A fresh browser on this backend, at `https://127.0.0.1:PORT`.
    pub async fn browser(&self, user_agent: &str) -> Browser {
        self.browser_at(user_agent, Address::Ip).await
    }

    /// A fresh browser on this backend at `address`: [`Address::Localhost`]
    /// for passkeys.
    pub async fn browser_at(&self, user_agent: &str, address: Address) -> Browser {
        Browser::open(&self.driver, &self.backend, user_agent, address).await
    }
}
