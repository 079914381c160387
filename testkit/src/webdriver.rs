//! A chromedriver (Debian's `chromium-driver`) for the browser tests.
//!
//! [`Chromedriver::start`] runs `chromedriver` on a free loopback port, in a
//! process group of its own, and waits until its `/status` says it is ready.
//! [`Chromedriver::stop`] (or drop) ends the whole group: the driver and
//! every chromium it started, even one a failed test left open.
//!
//! `cargo xtask test` starts one for the whole run and exports its URL as
//! [`ENV_URL`]; a browser test run alone starts its own when `chromedriver`
//! is on the `PATH` ([`find`]).

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;

/// The WebDriver URL of the run's chromedriver (set by `cargo xtask test`).
pub const ENV_URL: &str = "PALISADE_TEST_WEBDRIVER_URL";

/// How long chromedriver may take to answer `/status` with `ready`.
const READY_DEADLINE: Duration = Duration::from_secs(30);
/// How long the group has to exit after SIGTERM before it gets SIGKILL.
const STOP_GRACE: Duration = Duration::from_secs(5);

/// Why a chromedriver could not be had.
#[derive(Debug)]
pub struct WebDriverError(pub String);

impl std::fmt::Display for WebDriverError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for WebDriverError {}

fn err(message: impl Into<String>) -> WebDriverError {
    WebDriverError(message.into())
}

/// `chromedriver` on the `PATH`, if there is one.
pub fn find() -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join("chromedriver"))
        .find(|candidate| candidate.is_file())
}

/// A running chromedriver. Stopped, with its browsers, when dropped.
#[derive(Debug)]
pub struct Chromedriver {
    child: Option<Child>,
    port: u16,
}

impl Chromedriver {
    /// Starts `program` on a free loopback port; its log goes to `log` (or
    /// nowhere). Returns once it answers that it is ready.
    pub fn start(program: &Path, log: Option<&Path>) -> Result<Chromedriver, WebDriverError> {
        // Another process may take the free port between our probe and
        // chromedriver's bind: then it exits at once, and we try another.
        let mut last_error = None;
        for _ in 0..3 {
            match Self::try_start(program, log) {
                Ok(driver) => return Ok(driver),
                Err(e) => last_error = Some(e),
            }
        }
        Err(last_error.unwrap_or_else(|| err("chromedriver did not start")))
    }

    fn try_start(program: &Path, log: Option<&Path>) -> Result<Chromedriver, WebDriverError> {
        let port = free_port()?;
        let mut cmd = Command::new(program);
        // Without `--allowed-ips` chromedriver listens on loopback only.
        cmd.arg(format!("--port={port}"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            // A group of its own, so stopping it ends the browsers it started.
            .process_group(0);
        if let Some(log) = log {
            cmd.arg(format!("--log-path={}", log.display()));
        }
        let child = cmd
            .spawn()
            .map_err(|e| err(format!("cannot start {}: {e}", program.display())))?;
        let mut driver = Chromedriver {
            child: Some(child),
            port,
        };
        driver.wait_ready()?;
        Ok(driver)
    }

    fn wait_ready(&mut self) -> Result<(), WebDriverError> {
        let end = Instant::now() + READY_DEADLINE;
        loop {
            if let Some(child) = self.child.as_mut()
                && let Ok(Some(status)) = child.try_wait()
            {
                self.child = None;
                return Err(err(format!(
                    "chromedriver exited before it was ready ({status})"
                )));
            }
            if status_ready(self.addr()) {
                return Ok(());
            }
            if Instant::now() > end {
                self.stop();
                return Err(err(format!(
                    "chromedriver was not ready on {} within {} s",
                    self.url(),
                    READY_DEADLINE.as_secs()
                )));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    /// The WebDriver URL, `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr())
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// The driver's process id (and process group), while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Whether the driver process is still running.
    pub fn is_running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }

    /// What `cargo xtask test` exports so the tests use this driver.
    pub fn env(&self) -> [(&'static str, String); 1] {
        [(ENV_URL, self.url())]
    }

    /// Ends the driver and every browser it started: SIGTERM to its process
    /// group, SIGKILL to what is left after a few seconds.
    pub fn stop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        let Ok(raw) = i32::try_from(child.id()) else {
            let _ = child.kill();
            let _ = child.wait();
            return;
        };
        let group = Pid::from_raw(raw);
        let _ = killpg(group, Signal::SIGTERM);
        let end = Instant::now() + STOP_GRACE;
        while matches!(child.try_wait(), Ok(None)) && Instant::now() < end {
            std::thread::sleep(Duration::from_millis(20));
        }
        // Browsers outlive their driver's SIGTERM at times: the group goes.
        let _ = killpg(group, Signal::SIGKILL);
        let _ = child.wait();
    }
}

impl Drop for Chromedriver {
    fn drop(&mut self) {
        self.stop();
    }
}

fn free_port() -> Result<u16, WebDriverError> {
    let listener =
        TcpListener::bind("127.0.0.1:0").map_err(|e| err(format!("no free port: {e}")))?;
    listener
        .local_addr()
        .map(|a| a.port())
        .map_err(|e| err(format!("no free port: {e}")))
}

/// Whether the WebDriver server at `addr` answers `/status` with ready.
pub fn status_ready(addr: SocketAddr) -> bool {
    http_request(addr, "GET", "/status", "").is_some_and(|(code, body)| {
        let compact: String = body.chars().filter(|c| !c.is_whitespace()).collect();
        code == 200 && compact.contains("\"ready\":true")
    })
}

/// Ends a WebDriver session synchronously (for a test's `Drop`, where no
/// async call can be made): the browser window closes even when the test
/// failed. Whether it still existed does not matter.
pub fn delete_session(webdriver_url: &str, session_id: &str) {
    let Some(addr) = webdriver_url
        .strip_prefix("http://")
        .map(|rest| rest.trim_end_matches('/'))
        .and_then(|hostport| hostport.parse::<SocketAddr>().ok())
    else {
        return;
    };
    let _ = http_request(addr, "DELETE", &format!("/session/{session_id}"), "");
}

/// One HTTP/1.1 request on loopback; returns the status code and body.
fn http_request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    json_body: &str,
) -> Option<(u16, String)> {
    let timeout = Duration::from_secs(10);
    let mut stream = TcpStream::connect_timeout(&addr, timeout).ok()?;
    stream.set_read_timeout(Some(timeout)).ok()?;
    stream.set_write_timeout(Some(timeout)).ok()?;
    let request = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{json_body}",
        json_body.len()
    );
    stream.write_all(request.as_bytes()).ok()?;
    // chromedriver keeps the connection open despite `Connection: close`:
    // read the head, then exactly `Content-Length` bytes.
    let mut response = Vec::new();
    let mut buf = [0u8; 4096];
    let head_end = loop {
        if let Some(at) = response.windows(4).position(|w| w == b"\r\n\r\n") {
            break at + 4;
        }
        let n = stream.read(&mut buf).ok()?;
        if n == 0 {
            return None;
        }
        response.extend_from_slice(&buf[..n]);
    };
    let head = String::from_utf8_lossy(&response[..head_end]).into_owned();
    let code = head.split_whitespace().nth(1)?.parse().ok()?;
    let length: usize = head
        .lines()
        .find_map(|line| {
            let (name, value) = line.split_once(':')?;
            name.trim()
                .eq_ignore_ascii_case("content-length")
                .then(|| value.trim().parse().ok())?
        })
        .unwrap_or(0);
    while response.len() < head_end + length {
        let n = stream.read(&mut buf).ok()?;
        if n == 0 {
            break;
        }
        response.extend_from_slice(&buf[..n]);
    }
    let end = response.len().min(head_end + length);
    Some((
        code,
        String::from_utf8_lossy(&response[head_end..end]).into_owned(),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The process ids of the group `pgid`, from /proc.
    fn group_members(pgid: u32) -> Vec<u32> {
        let Ok(entries) = std::fs::read_dir("/proc") else {
            return Vec::new();
        };
        entries
            .flatten()
            .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
            .filter(|pid| {
                std::fs::read_to_string(format!("/proc/{pid}/stat"))
                    .ok()
                    .and_then(|stat| {
                        let close = stat.rfind(')')?;
                        // After the command: state, ppid, pgrp. A zombie
                        // (state Z) is dead, waiting for init to reap it.
                        let mut fields = stat[close + 1..].split_whitespace();
                        let state = fields.next()?;
                        let pgrp: u32 = fields.nth(1)?.parse().ok()?;
                        (state != "Z").then_some(pgrp)
                    })
                    == Some(pgid)
            })
            .collect()
    }

    #[test]
    fn a_missing_program_is_a_clear_error() {
        let e = Chromedriver::start(Path::new("/nonexistent/chromedriver"), None)
            .expect_err("no such program");
        assert!(e.0.contains("/nonexistent/chromedriver"), "{e}");
    }

    #[test]
    fn a_program_that_exits_at_once_is_refused() {
        // `false` exits with 1 whatever its arguments: never ready.
        let e = Chromedriver::start(Path::new("/bin/false"), None).expect_err("not a driver");
        assert!(e.0.contains("exited before it was ready"), "{e}");
    }

    #[test]
    fn starts_ready_and_stops_with_its_whole_group() {
        let Some(program) = find() else {
            assert!(
                !crate::is_ci(),
                "CI=true and chromedriver is not on the PATH (cargo xtask test installs chromium-driver as root)"
            );
            eprintln!("skipped: chromedriver is not on the PATH (apt-get install chromium-driver)");
            return;
        };
        let dir = tempfile::tempdir().expect("tempdir");
        let log = dir.path().join("chromedriver.log");
        let mut driver = Chromedriver::start(&program, Some(&log)).expect("chromedriver starts");
        assert!(driver.url().starts_with("http://127.0.0.1:"));
        assert_eq!(driver.env()[0], (ENV_URL, driver.url()));
        let pid = driver.pid().expect("running");
        assert!(driver.is_running());
        assert!(group_members(pid).contains(&pid), "a group of its own");

        // A browser, as a test would have left it open.
        let no_sandbox = if nix::unistd::geteuid().is_root() {
            r#","--no-sandbox""#
        } else {
            ""
        };
        let profile = dir.path().join("profile");
        let capabilities = format!(
            r#"{{"capabilities":{{"alwaysMatch":{{"goog:chromeOptions":{{"args":["--headless=new","--user-data-dir={}"{no_sandbox}]}}}}}}}}"#,
            profile.display()
        );
        let addr: SocketAddr = driver.url()[7..].parse().expect("url is an address");
        let (code, body) =
            http_request(addr, "POST", "/session", &capabilities).expect("new session answered");
        assert_eq!(code, 200, "new session: {body}");
        let browsers = group_members(pid).len();
        assert!(
            browsers > 1,
            "chromium runs in the driver's group ({browsers} processes)"
        );

        driver.stop();
        assert!(!driver.is_running());
        assert!(driver.pid().is_none());
        // SIGKILL is delivered at once but a process takes a moment to go.
        let end = Instant::now() + Duration::from_secs(10);
        while !group_members(pid).is_empty() && Instant::now() < end {
            std::thread::sleep(Duration::from_millis(20));
        }
        assert_eq!(
            group_members(pid),
            Vec::<u32>::new(),
            "something of the group outlived stop()"
        );
        assert!(
            TcpStream::connect(SocketAddr::from(([127, 0, 0, 1], driver.port()))).is_err(),
            "the port is closed"
        );
        // Stopping twice is harmless.
        driver.stop();
    }
}
