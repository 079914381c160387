//! Harness of the sandbox tests: root checks, the system users, the real
//! binaries, running a probe, reading `/proc`, and a real backend with an
//! enrolled agent.
//!
//! The backend's end-to-end harness (`backend/tests/support/mod.rs`) cannot
//! be included from here: it names the backend binary with
//! `env!("CARGO_BIN_EXE_palisade-backend")`, which only the backend's own
//! tests have. The few pieces needed (start a backend, create a token,
//! enroll, run the agent) are redone here, finding every binary next to
//! `palisade-agent`.

#![allow(dead_code)]

use std::io::{BufRead, BufReader, Write};
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use palisade_agent_sys::sandbox::creds::ProcStatus;
use palisade_agent_sys::sandbox::users;

/// Generous: CI machines are small and shared.
pub const DEADLINE: Duration = Duration::from_secs(60);

/// Whether this test may run: as root it does. As an ordinary user it is
/// skipped with a loud line, except under CI (`CI=true`), where skipping
/// would hide that the sandbox went untested: there it fails.
pub fn root_or_skip(test: &str) -> bool {
    if nix::unistd::geteuid().is_root() {
        return true;
    }
    let ci = std::env::var("CI").is_ok_and(|v| v == "true" || v == "1");
    assert!(
        !ci,
        "{test}: the sandbox tests need root (CI=true, so this is a failure, not a skip)"
    );
    // Written to the real stderr, past the test harness's capture, so the
    // skip shows even when the test "passes".
    let _ = writeln!(
        std::io::stderr(),
        "\n!!! SKIPPED {test}: the sandbox tests need root (run them as root, as CI does) !!!\n"
    );
    false
}

/// Creates the system users the packages would create, if missing (once
/// per test process; a file lock keeps parallel test processes from racing
/// on /etc/passwd).
pub fn ensure_users() {
    static DONE: OnceLock<()> = OnceLock::new();
    DONE.get_or_init(|| {
        let lock = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            // In the target directory, not /tmp: root opening a fixed name
            // in a world-writable directory would invite a planted link.
            .open(Path::new(env!("CARGO_TARGET_TMPDIR")).join("palisade-test-users.lock"))
            .expect("open the users lock file");
        let _lock = nix::fcntl::Flock::lock(lock, nix::fcntl::FlockArg::LockExclusive)
            .map_err(|(_, e)| e)
            .expect("lock the users lock file");
        for name in users::ALL {
            if users::find(name).expect("look up a user").is_some() {
                continue;
            }
            let status = Command::new("useradd")
                .args([
                    "--system",
                    "--user-group",
                    "--no-create-home",
                    "--shell",
                    "/usr/sbin/nologin",
                    name,
                ])
                .status()
                .expect("run useradd");
            assert!(status.success(), "useradd {name} failed: {status}");
            eprintln!(
                "created the system user {name} (as the palisade-agent package would): \
                 useradd --system --user-group --no-create-home --shell /usr/sbin/nologin {name}"
            );
        }
    });
}

/// The directory of the binaries (next to `palisade-agent`); every agent
/// binary and the backend are built once if one is missing.
pub fn bin_dir() -> PathBuf {
    static BUILT: OnceLock<()> = OnceLock::new();
    let dir = PathBuf::from(env!("CARGO_BIN_EXE_palisade-agent"))
        .parent()
        .expect("the binary has a directory")
        .to_owned();
    BUILT.get_or_init(|| {
        let names = [
            "palisade-agent",
            "palisade-agent-collector",
            "palisade-agent-monitor",
            "palisade-agent-control",
            "palisade-backend",
        ];
        if names.iter().any(|b| !dir.join(b).exists()) {
            let mut cmd = Command::new(env!("CARGO"));
            cmd.arg("build");
            if dir.ends_with("release") {
                cmd.arg("--release");
            }
            for package in [
                "palisade-agent",
                "palisade-agent-collector",
                "palisade-agent-monitor",
                "palisade-agent-control",
                "palisade-backend",
            ] {
                cmd.args(["-p", package]);
            }
            let status = cmd
                .current_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/.."))
                .status()
                .expect("cargo runs");
            assert!(status.success(), "building the binaries failed");
        }
    });
    dir
}

pub fn bin(name: &str) -> PathBuf {
    bin_dir().join(name)
}

/// How a probe ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Printed `probe NAME: <this>` and exited 0.
    Said(String),
    /// Killed by this signal.
    Signal(i32),
    /// Anything else: exit code and output, for the failure message.
    Other {
        code: Option<i32>,
        stdout: String,
        stderr: String,
    },
}

/// Runs `program args...` with a clean environment and returns how it ended.
pub fn run_probe(program: &Path, args: &[&str], probe: &str) -> Outcome {
    let output = Command::new(program)
        .args(args)
        .env_clear()
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .output()
        .expect("start the probe");
    let stdout = String::from_utf8_lossy(&output.stdout).trim().to_owned();
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    if let Some(signal) = output.status.signal() {
        return Outcome::Signal(signal);
    }
    let prefix = format!("probe {probe}: ");
    match (output.status.code(), stdout.strip_prefix(&prefix)) {
        (Some(0), Some(said)) if !said.contains('\n') => Outcome::Said(said.to_owned()),
        (code, _) => Outcome::Other {
            code,
            stdout,
            stderr,
        },
    }
}

/// The status of every thread of `pid`, with each thread's id.
pub fn thread_statuses(pid: u32) -> Vec<(u32, ProcStatus)> {
    let mut out = Vec::new();
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return out;
    };
    for task in tasks.flatten() {
        let Some(tid) = task.file_name().to_str().and_then(|t| t.parse().ok()) else {
            continue;
        };
        if let Ok(text) = std::fs::read_to_string(task.path().join("status")) {
            out.push((tid, ProcStatus::parse(&text)));
        }
    }
    out
}

/// Memory of `pid` in KiB: resident (`VmRSS`) and proportional (`Pss`,
/// pages shared with others counted in part: the launcher shares most of
/// its pages with the platform it was forked from).
pub fn memory_kib(pid: u32) -> (u64, u64) {
    let field = |file: &str, key: &str| {
        std::fs::read_to_string(format!("/proc/{pid}/{file}"))
            .ok()
            .and_then(|s| {
                s.lines()
                    .find_map(|l| l.strip_prefix(key))
                    .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            })
            .unwrap_or(0)
    };
    (field("status", "VmRSS:"), field("smaps_rollup", "Pss:"))
}

/// Direct children of `pid` with their program's file name (argv[0]; the
/// kernel's `comm` would cut the children's names to 15 bytes), zombies left out.
pub fn children_of(pid: u32) -> Vec<(u32, String)> {
    let mut out = Vec::new();
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return out;
    };
    for e in entries.flatten() {
        let Some(child) = e.file_name().to_str().and_then(|n| n.parse::<u32>().ok()) else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{child}/stat")) else {
            continue;
        };
        let Some(close) = stat.rfind(')') else {
            continue;
        };
        let mut fields = stat[close + 1..].split_whitespace();
        let state = fields.next();
        let ppid: Option<u32> = fields.next().and_then(|p| p.parse().ok());
        if ppid != Some(pid) || state == Some("Z") {
            continue;
        }
        let argv0 = std::fs::read(format!("/proc/{child}/cmdline")).unwrap_or_default();
        let argv0 = argv0.split(|b| *b == 0).next().unwrap_or_default();
        let name = Path::new(std::str::from_utf8(argv0).unwrap_or_default())
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or_default()
            .to_owned();
        out.push((child, name));
    }
    out
}

/// Polls `check` until it returns `Some`, or panics naming `what`.
pub fn eventually<T>(what: &str, mut check: impl FnMut() -> Option<T>) -> T {
    let end = Instant::now() + DEADLINE;
    loop {
        if let Some(v) = check() {
            return v;
        }
        assert!(Instant::now() < end, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A process killed (and reaped) when dropped.
pub struct Running {
    child: Child,
    pub log: PathBuf,
}

impl Running {
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Whether it is still running (not exited).
    pub fn alive(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(self.child.id() as i32),
            nix::sys::signal::Signal::SIGTERM,
        );
        let end = Instant::now() + Duration::from_secs(10);
        while matches!(self.child.try_wait(), Ok(None)) && Instant::now() < end {
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn log_file(path: &Path) -> std::fs::File {
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .expect("log file")
}

/// A backend on a free port; returns it and its `HOST:PORT`.
pub fn start_backend(data_dir: &Path) -> (Running, String) {
    let log = data_dir.with_extension("backend.log");
    let mut child = Command::new(bin("palisade-backend"))
        .args(["serve", "--data-dir"])
        .arg(data_dir)
        .args(["--listen", "127.0.0.1:0"])
        .env("RUST_LOG", "info")
        .stdout(Stdio::piped())
        .stderr(log_file(&log))
        .spawn()
        .expect("the backend starts");
    let stdout = child.stdout.take().expect("stdout");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut lines = BufReader::new(stdout).lines();
        if let Some(Ok(line)) = lines.next() {
            let _ = tx.send(line);
        }
        for _ in lines {}
    });
    let running = Running { child, log };
    let line = rx
        .recv_timeout(DEADLINE)
        .unwrap_or_else(|_| panic!("no address from the backend; log: {}", running.log_text()));
    let addr = line
        .strip_prefix("listening on ")
        .unwrap_or_else(|| panic!("unexpected first line from the backend: {line:?}"))
        .to_owned();
    (running, addr)
}

/// Creates an enrollment token and enrolls an agent with its state in
/// `state_dir` (as root, as the package's post-install would).
pub fn enroll(backend_dir: &Path, server: &str, state_dir: &Path) {
    let token = Command::new(bin("palisade-backend"))
        .arg("--data-dir")
        .arg(backend_dir)
        .args(["token", "create"])
        .output()
        .expect("token create runs");
    assert!(
        token.status.success(),
        "token create: {}",
        String::from_utf8_lossy(&token.stderr)
    );
    let token = String::from_utf8(token.stdout).expect("utf-8");
    let out = Command::new(bin("palisade-agent"))
        .args(["enroll", "--server", server, "--state-dir"])
        .arg(state_dir)
        .env("PALISADE_ENROLL_TOKEN", token.trim())
        .output()
        .expect("enroll runs");
    assert!(
        out.status.success(),
        "enroll: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `palisade-agent run` on `state_dir`, logging next to it.
pub fn start_agent(state_dir: &Path) -> Running {
    let log = state_dir.with_extension("agent.log");
    let child = Command::new(bin("palisade-agent"))
        .args([
            "run",
            "--metrics-interval",
            "1s",
            "--health-interval",
            "1s",
            "--state-dir",
        ])
        .arg(state_dir)
        .env_clear()
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log_file(&log))
        .spawn()
        .expect("the agent starts");
    Running { child, log }
}

/// The inodes of the sockets `pid` holds open.
pub fn socket_inodes(pid: u32) -> Vec<u64> {
    let Ok(fds) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
        return Vec::new();
    };
    fds.flatten()
        .filter_map(|fd| std::fs::read_link(fd.path()).ok())
        .filter_map(|target| {
            target
                .to_str()?
                .strip_prefix("socket:[")?
                .strip_suffix(']')?
                .parse()
                .ok()
        })
        .collect()
}

/// The inodes of the sockets in `/proc/net/<table>` (tcp, tcp6, udp,
/// udp6), with their state (`0A` is a listening TCP socket).
pub fn net_sockets(table: &str) -> Vec<(u64, String)> {
    let text = std::fs::read_to_string(format!("/proc/net/{table}")).unwrap_or_default();
    text.lines()
        .skip(1)
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let state = fields.get(3)?.to_string();
            let inode = fields.get(9)?.parse().ok()?;
            Some((inode, state))
        })
        .collect()
}
