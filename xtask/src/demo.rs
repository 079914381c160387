//! `cargo xtask demo`: a backend and one enrolled agent on this machine, with
//! the web UI address and a login printed. Every run starts from scratch in
//! `target/demo/`.

use std::fs::File;
use std::io::{BufRead, BufReader, Write};
use std::net::SocketAddr;
use std::os::unix::fs::OpenOptionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdout, Command, ExitStatus, Stdio};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use nix::sys::signal::{Signal, kill, killpg};
use nix::unistd::Pid;

use crate::users;
use crate::util::{self, cargo, heading, target_dir, workspace_root};

/// How long the backend may take to print its `listening on` line.
const READY_TIMEOUT: Duration = Duration::from_secs(60);
/// How long `--check` waits for the agent to connect.
const CHECK_TIMEOUT: Duration = Duration::from_secs(60);
/// How long a process, and what it started, may take to stop after SIGTERM
/// before they are killed.
const STOP_GRACE: Duration = Duration::from_secs(5);
const POLL: Duration = Duration::from_millis(200);

/// What `--check` waits for in the logs: both ends of the uplink are up.
const AGENT_CONNECTED: &str = "uplink connected";
const BACKEND_CONNECTED: &str = "agent connected";

pub const USAGE: &str = "\
cargo xtask demo [--check] [--postgres]

Builds everything, starts a backend and one enrolled agent on this machine,
prints the web UI address and a login, and runs until Ctrl-C.
Every run starts fresh: target/demo/ is removed first.
  --check     stop as soon as the agent is connected; exit 0 if it did
              within 60 s, 1 if not (for CI)
  --postgres  run the backend on a throwaway PostgreSQL cluster of the
              demo's own (initdb into target/demo/postgres, a free port,
              stopped with the demo) instead of the embedded SQLite
Environment:
  PALISADE_DEMO_PORT   fixed port for the backend (default: any free port)";

#[derive(Debug, PartialEq, Eq)]
pub struct Options {
    check: bool,
    postgres: bool,
}

impl Options {
    pub fn parse(args: &[String]) -> anyhow::Result<Options> {
        let mut options = Options {
            check: false,
            postgres: false,
        };
        for arg in args {
            match arg.as_str() {
                "--check" => options.check = true,
                "--postgres" => options.postgres = true,
                other => bail!("unknown argument {other:?}\n\n{USAGE}"),
            }
        }
        Ok(options)
    }
}

pub fn run(options: &Options) -> anyhow::Result<()> {
    heading("build the binaries");
    util::run(cargo().args(["build", "--workspace", "--bins"]))?;
    let bin_dir = target_dir().join("debug");
    let backend_bin = bin_dir.join("palisade-backend");
    let agent_bin = bin_dir.join("palisade-agent");
    for bin in [&backend_bin, &agent_bin] {
        if !bin.is_file() {
            bail!("{} is missing after the build", bin.display());
        }
    }
    if users::is_root() {
        heading("system users");
        users::ensure_system_users("the demo runs the agent sandboxed")?;
        println!(
            "running as root: the agent runs fully sandboxed (the platform as palisade-agent, \
             each child in its own sandbox, started by the privileged launcher)"
        );
    } else {
        println!(
            "!!! running as an ordinary user: the agent is NOT sandboxed (development mode); \
             run the demo as root to see it with privilege separation !!!"
        );
    }

    let demo_dir = target_dir().join("demo");
    if demo_dir.exists() {
        std::fs::remove_dir_all(&demo_dir)
            .with_context(|| format!("cannot remove {}", demo_dir.display()))?;
        println!(
            "removed the previous demo in {}: every run starts fresh",
            shown(&demo_dir)
        );
    }
    let backend_dir = demo_dir.join("backend");
    let agent_dir = demo_dir.join("agent");
    std::fs::create_dir_all(&demo_dir)
        .with_context(|| format!("cannot create {}", demo_dir.display()))?;

    // The database: SQLite in the backend's data directory, or a cluster of
    // the demo's own, stopped (by drop) on every way out of here.
    let (database, _cluster) = if options.postgres {
        heading("start a throwaway PostgreSQL cluster");
        if users::is_root() {
            crate::dist::tools::ensure_debian_packages(&["postgresql"])?;
        }
        let cluster = palisade_testkit::pg::Cluster::start(&demo_dir.join("postgres"))
            .map_err(|e| anyhow::anyhow!("cannot start PostgreSQL for the demo: {e}"))?;
        println!(
            "PostgreSQL on 127.0.0.1:{} (data in {})",
            cluster.port(),
            shown(&cluster.dir().join("data"))
        );
        (Some(cluster.url("postgres")), Some(cluster))
    } else {
        (None, None)
    };
    // From here on SIGINT and SIGTERM go to a thread that reports them, so we
    // can stop what we started before exiting.
    let signals = SignalWatch::start()?;
    // Stops every process it holds when dropped, on every way out of here.
    let mut processes = Processes::new(STOP_GRACE);

    heading("start the backend");
    let backend_log = demo_dir.join("backend.log");
    let listen = format!("127.0.0.1:{}", demo_port()?);
    let mut cmd = Command::new(&backend_bin);
    if let Some(url) = &database {
        cmd.arg("--database").arg(url);
    }
    cmd.arg("serve")
        .arg("--data-dir")
        .arg(&backend_dir)
        .args(["--listen", &listen])
        .stdout(Stdio::piped())
        .stderr(log_file(&backend_log)?);
    let backend = processes.spawn("backend", cmd, &backend_log)?;
    let stdout = backend
        .child
        .stdout
        .take()
        .context("the backend's stdout was not captured")?;
    let addr = wait_until_listening(stdout, &mut processes, &signals)?;
    let server = format!("127.0.0.1:{}", addr.port());
    println!("backend listening on {addr} (log: {})", shown(&backend_log));

    heading("create the admin, an API token and an enrollment token");
    let backend_cli = |args: &[&str]| {
        let mut cmd = Command::new(&backend_bin);
        if let Some(url) = &database {
            cmd.arg("--database").arg(url);
        }
        cmd.arg("--data-dir").arg(&backend_dir).args(args);
        clean_env(&mut cmd);
        cmd
    };
    let password = util::output_line(&mut backend_cli(&[
        "user", "create", "admin", "--role", "admin",
    ]))?;
    let api_token = util::output_line(&mut backend_cli(&[
        "api-token",
        "create",
        "demo",
        "--role",
        "admin",
    ]))?;
    let enrollment_token = util::output_line(&mut backend_cli(&[
        "token",
        "create",
        "--max-per-day",
        "10",
        "--expires",
        "1d",
    ]))?;
    signals.bail_if_signalled()?;

    heading("enroll the agent");
    // The token goes in the environment rather than on the command line,
    // where every user of this machine could read it in `ps`.
    let mut enroll = Command::new(&agent_bin);
    enroll
        .args(["enroll", "--server", &server])
        .arg("--state-dir")
        .arg(&agent_dir);
    clean_env(&mut enroll);
    enroll.env("PALISADE_ENROLL_TOKEN", &enrollment_token);
    let agent_id = util::output_line(&mut enroll)?;
    println!("enrolled as agent {agent_id}");
    signals.bail_if_signalled()?;

    heading("start the agent");
    let agent_log = demo_dir.join("agent.log");
    let mut cmd = Command::new(&agent_bin);
    cmd.arg("run")
        .arg("--state-dir")
        .arg(&agent_dir)
        .args(["--metrics-interval", "5s"])
        .stdout(log_file(&agent_log)?)
        .stderr(log_file(&agent_log)?);
    processes.spawn("agent", cmd, &agent_log)?;

    let ca_cert = backend_dir.join("pki").join("ca.pem");
    let ui_url = format!("https://{server}/");
    let api_url = format!("https://{server}/api/v1/");
    let details = serde_json::json!({
        "ui_url": ui_url,
        "api_url": api_url,
        "admin_user": "admin",
        "admin_password": password,
        "api_token": api_token,
        "ca_cert": ca_cert,
        "database": database.as_deref().unwrap_or("sqlite (target/demo/backend/palisade.db)"),
        "backend_pid": processes.pid_of("backend"),
        "agent_pid": processes.pid_of("agent"),
    });
    let details_path = demo_dir.join("demo.json");
    write_private(&details_path, &serde_json::to_vec_pretty(&details)?)?;

    println!();
    println!("Palisade demo is running (target/demo/ was recreated for this run).");
    println!();
    println!("  web UI     {ui_url}");
    println!("  login      admin / {password}");
    println!("  API        {api_url}");
    println!("  API token  {api_token}");
    println!(
        "  database   {}",
        database
            .as_deref()
            .unwrap_or("SQLite, embedded (target/demo/backend/palisade.db)")
    );
    println!();
    println!("  TLS comes from the demo's own CA, so the browser warns about the certificate.");
    println!("  The CA is {}; for example:", shown(&ca_cert));
    println!("    export TOKEN={api_token}");
    println!(
        "    curl --cacert {} -H \"Authorization: Bearer $TOKEN\" {api_url}hosts",
        shown(&ca_cert)
    );
    println!();
    println!(
        "  logs       {}, {}",
        shown(&backend_log),
        shown(&agent_log)
    );
    println!(
        "  details    {} (includes the secrets above)",
        shown(&details_path)
    );
    println!();

    if options.check {
        check(&mut processes, &signals, &backend_log, &agent_log)
    } else {
        println!("Press Ctrl-C to stop.");
        wait_for_signal(&mut processes, &signals)
    }
}

/// Runs until SIGINT or SIGTERM; fails if a process dies on its own.
fn wait_for_signal(processes: &mut Processes, signals: &SignalWatch) -> anyhow::Result<()> {
    loop {
        if let Some(signal) = signals.wait(POLL) {
            println!("\n{signal}: stopping the demo");
            processes.stop_all();
            return Ok(());
        }
        processes.bail_if_one_exited()?;
    }
}

/// Waits until both ends report the uplink connected, then stops everything.
fn check(
    processes: &mut Processes,
    signals: &SignalWatch,
    backend_log: &Path,
    agent_log: &Path,
) -> anyhow::Result<()> {
    println!(
        "checking: waiting up to {} s for the agent to connect",
        CHECK_TIMEOUT.as_secs()
    );
    let deadline = Instant::now() + CHECK_TIMEOUT;
    loop {
        if let Some(signal) = signals.wait(POLL) {
            bail!("{signal} before the agent connected");
        }
        processes.bail_if_one_exited()?;
        let agent_up = log_contains(agent_log, AGENT_CONNECTED);
        let backend_up = log_contains(backend_log, BACKEND_CONNECTED);
        if agent_up && backend_up {
            println!(
                "check passed: agent log says {AGENT_CONNECTED:?}, backend log says {BACKEND_CONNECTED:?}"
            );
            processes.stop_all();
            return Ok(());
        }
        if Instant::now() >= deadline {
            let mut missing = Vec::new();
            if !agent_up {
                missing.push(format!("{AGENT_CONNECTED:?} in {}", shown(agent_log)));
            }
            if !backend_up {
                missing.push(format!("{BACKEND_CONNECTED:?} in {}", shown(backend_log)));
            }
            bail!(
                "check failed: after {} s there is no {}\n--- {} ---\n{}\n--- {} ---\n{}",
                CHECK_TIMEOUT.as_secs(),
                missing.join(" and no "),
                shown(agent_log),
                util::tail(agent_log, 30),
                shown(backend_log),
                util::tail(backend_log, 30),
            );
        }
    }
}

/// Reads the backend's stdout until its `listening on ADDR` line. The rest of
/// its stdout (there should be none) is echoed so nothing is hidden.
fn wait_until_listening(
    stdout: ChildStdout,
    processes: &mut Processes,
    signals: &SignalWatch,
) -> anyhow::Result<SocketAddr> {
    let (tx, rx) = mpsc::channel::<String>();
    std::thread::Builder::new()
        .name("backend-stdout".into())
        .spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if let Err(unsent) = tx.send(line) {
                    println!("backend (stdout): {}", unsent.0);
                }
            }
        })
        .context("cannot start a thread to read the backend's stdout")?;

    let deadline = Instant::now() + READY_TIMEOUT;
    loop {
        signals.bail_if_signalled()?;
        processes.bail_if_one_exited()?;
        match rx.recv_timeout(POLL) {
            Ok(line) => {
                if let Some(addr) = line.trim().strip_prefix("listening on ") {
                    return addr.parse().with_context(|| {
                        format!("the backend printed an address that does not parse: {line:?}")
                    });
                }
                println!("backend (stdout): {line}");
            }
            // The backend closed its stdout: the next round sees it exit.
            Err(RecvTimeoutError::Disconnected) => std::thread::sleep(POLL),
            Err(RecvTimeoutError::Timeout) => {}
        }
        if Instant::now() >= deadline {
            bail!(
                "the backend did not print `listening on ...` within {} s",
                READY_TIMEOUT.as_secs()
            );
        }
    }
}

/// The port from `PALISADE_DEMO_PORT`, or 0 (any free port).
fn demo_port() -> anyhow::Result<u16> {
    match std::env::var("PALISADE_DEMO_PORT") {
        Ok(port) => port
            .trim()
            .parse()
            .with_context(|| format!("PALISADE_DEMO_PORT={port:?} is not a port number")),
        Err(std::env::VarError::NotPresent) => Ok(0),
        Err(e) => Err(e).context("cannot read PALISADE_DEMO_PORT"),
    }
}

/// The demo is self-contained: settings from the caller's environment that
/// would point the binaries elsewhere are removed, and logs are plain text.
fn clean_env(cmd: &mut Command) {
    for var in [
        "PALISADE_BACKEND_CONFIG",
        "PALISADE_AGENT_STATE_DIR",
        "PALISADE_AGENT_LIBEXEC",
        "PALISADE_ENROLL_TOKEN",
    ] {
        cmd.env_remove(var);
    }
    cmd.env("NO_COLOR", "1");
}

fn log_file(path: &Path) -> anyhow::Result<File> {
    File::options()
        .create(true)
        .append(true)
        .open(path)
        .with_context(|| format!("cannot open the log file {}", path.display()))
}

/// Writes a file only its owner can read: it holds the demo's secrets.
fn write_private(path: &Path, contents: &[u8]) -> anyhow::Result<()> {
    let mut file = File::options()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("cannot create {}", path.display()))?;
    file.write_all(contents)
        .with_context(|| format!("cannot write {}", path.display()))
}

fn log_contains(path: &Path, needle: &str) -> bool {
    std::fs::read(path).is_ok_and(|bytes| String::from_utf8_lossy(&bytes).contains(needle))
}

/// A path relative to the workspace root when it is inside it, for messages.
fn shown(path: &Path) -> String {
    let root = workspace_root();
    path.strip_prefix(&root)
        .unwrap_or(path)
        .display()
        .to_string()
}

/// SIGINT and SIGTERM, reported on a channel instead of ending xtask, so it
/// can stop what it started first. The children do not inherit the handler
/// (exec resets it) nor any blocked signals.
struct SignalWatch {
    received: Receiver<Signal>,
}

impl SignalWatch {
    fn start() -> anyhow::Result<SignalWatch> {
        let mut signals =
            signal_hook::iterator::Signals::new([Signal::SIGINT as i32, Signal::SIGTERM as i32])
                .context("cannot install handlers for SIGINT and SIGTERM")?;
        let (tx, received) = mpsc::channel();
        std::thread::Builder::new()
            .name("signals".into())
            .spawn(move || {
                for number in signals.forever() {
                    let Ok(signal) = Signal::try_from(number) else {
                        continue;
                    };
                    if tx.send(signal).is_err() {
                        break;
                    }
                }
            })
            .context("cannot start the signal thread")?;
        Ok(SignalWatch { received })
    }

    /// Waits up to `timeout` for a signal.
    fn wait(&self, timeout: Duration) -> Option<Signal> {
        self.received.recv_timeout(timeout).ok()
    }

    fn bail_if_signalled(&self) -> anyhow::Result<()> {
        match self.received.try_recv() {
            Ok(signal) => bail!("{signal} received: stopping"),
            Err(_) => Ok(()),
        }
    }
}

struct Supervised {
    name: &'static str,
    child: Child,
    log: PathBuf,
}

/// The long-running processes of the demo. Each runs in its own process
/// group, so a Ctrl-C in the terminal reaches only xtask, which then stops
/// them in order; everything left in a group at the end is killed.
struct Processes {
    running: Vec<Supervised>,
    /// How long each process (and what it started) may take to stop.
    grace: Duration,
}

impl Processes {
    fn new(grace: Duration) -> Processes {
        Processes {
            running: Vec::new(),
            grace,
        }
    }

    fn spawn(
        &mut self,
        name: &'static str,
        mut cmd: Command,
        log: &Path,
    ) -> anyhow::Result<&mut Supervised> {
        clean_env(&mut cmd);
        cmd.stdin(Stdio::null()).process_group(0);
        let line = util::display(&cmd);
        println!("$ {line}");
        let child = cmd
            .spawn()
            .with_context(|| format!("cannot start the {name}: `{line}`"))?;
        self.running.push(Supervised {
            name,
            child,
            log: log.to_owned(),
        });
        let last = self.running.len() - 1;
        Ok(&mut self.running[last])
    }

    fn pid_of(&self, name: &str) -> Option<u32> {
        self.running
            .iter()
            .find(|p| p.name == name)
            .map(|p| p.child.id())
    }

    /// Fails, naming the process and showing its log, if one has exited.
    /// Dropping `self` afterwards stops the others.
    fn bail_if_one_exited(&mut self) -> anyhow::Result<()> {
        for process in &mut self.running {
            let status: Option<ExitStatus> = process
                .child
                .try_wait()
                .with_context(|| format!("cannot check on the {}", process.name))?;
            if let Some(status) = status {
                bail!(
                    "the {} exited on its own ({status})\n--- last lines of {} ---\n{}",
                    process.name,
                    shown(&process.log),
                    util::tail(&process.log, 30)
                );
            }
        }
        Ok(())
    }

    /// Stops every process, the last started first: SIGTERM, then SIGKILL
    /// after the grace period.
    fn stop_all(&mut self) {
        while let Some(mut process) = self.running.pop() {
            stop(&mut process, self.grace);
        }
    }
}

impl Drop for Processes {
    fn drop(&mut self) {
        self.stop_all();
    }
}

/// Sends SIGTERM to the process and gives it and everything it started
/// (its process group: the agent's launcher and children) `grace` to exit;
/// then kills whatever is left.
fn stop(process: &mut Supervised, grace: Duration) {
    let name = process.name;
    let Ok(raw_pid) = i32::try_from(process.child.id()) else {
        // Cannot happen on Linux (pids fit in i32); never signal a wrong pid.
        let _ = process.child.kill();
        let _ = process.child.wait();
        return;
    };
    let pid = Pid::from_raw(raw_pid);
    let was_running = matches!(process.child.try_wait(), Ok(None));
    if was_running {
        let _ = kill(pid, Signal::SIGTERM);
    }
    let deadline = Instant::now() + grace;
    let mut leader_exited = false;
    loop {
        if !leader_exited {
            match process.child.try_wait() {
                Ok(Some(status)) => {
                    leader_exited = true;
                    if was_running {
                        println!("stopped the {name} ({status})");
                    }
                }
                Ok(None) => {}
                Err(_) => leader_exited = true,
            }
        }
        if leader_exited && live_group_members(raw_pid) == 0 {
            return;
        }
        if Instant::now() >= deadline {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let left = live_group_members(raw_pid);
    if leader_exited {
        println!(
            "the {name} left {left} process(es) running {} s after it exited: killing them",
            grace.as_secs_f64()
        );
    } else {
        println!(
            "the {name} did not stop within {} s of SIGTERM: killing it and its process group",
            grace.as_secs_f64()
        );
    }
    let _ = killpg(pid, Signal::SIGKILL);
    let _ = process.child.wait();
}

/// How many processes of process group `pgid` are alive (zombies are dead:
/// they only wait for whoever inherited them to collect their status).
fn live_group_members(pgid: i32) -> usize {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return 0;
    };
    entries
        .flatten()
        .filter(|entry| {
            entry
                .file_name()
                .to_str()
                .is_some_and(|n| n.bytes().all(|b| b.is_ascii_digit()))
        })
        .filter_map(|entry| std::fs::read_to_string(entry.path().join("stat")).ok())
        .filter(|stat| {
            // `pid (comm) state ppid pgrp ...`; comm may contain anything but
            // ends at the last `)`.
            let mut fields = stat
                .rsplit_once(')')
                .map(|(_, rest)| rest)
                .unwrap_or("")
                .split_whitespace();
            let state = fields.next();
            let pgrp = fields.nth(1).and_then(|p| p.parse::<i32>().ok());
            pgrp == Some(pgid) && !matches!(state, Some("Z" | "X"))
        })
        .count()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn options() {
        assert_eq!(
            Options::parse(&[]).expect("valid"),
            Options {
                check: false,
                postgres: false
            }
        );
        assert_eq!(
            Options::parse(&["--check".to_owned(), "--postgres".to_owned()]).expect("valid"),
            Options {
                check: true,
                postgres: true
            }
        );
        assert!(Options::parse(&["--fresh".to_owned()]).is_err());
    }

    #[test]
    fn signals_are_reported_instead_of_ending_the_process() {
        let signals = SignalWatch::start().expect("install handlers");
        kill(nix::unistd::getpid(), Signal::SIGTERM).expect("signal myself");
        assert_eq!(signals.wait(Duration::from_secs(10)), Some(Signal::SIGTERM));
    }

    /// A process that leaves a child behind when it stops: the child is
    /// killed with the rest of the process group once the grace is over.
    #[test]
    fn stopping_kills_what_the_process_left_behind() {
        let mut processes = Processes::new(Duration::from_millis(500));
        let mut cmd = Command::new("sh");
        cmd.args(["-c", "sleep 60 & echo $!; wait"])
            .stdout(Stdio::piped());
        let shell = processes
            .spawn("shell", cmd, Path::new("/dev/null"))
            .expect("start sh");
        let stdout = shell.child.stdout.take().expect("piped stdout");
        let mut line = String::new();
        BufReader::new(stdout)
            .read_line(&mut line)
            .expect("read the pid of sleep");
        let sleeper: i32 = line.trim().parse().expect("sh printed a pid");
        assert!(is_alive(sleeper));

        processes.stop_all();
        let deadline = Instant::now() + Duration::from_secs(10);
        while is_alive(sleeper) {
            assert!(
                Instant::now() < deadline,
                "the leftover sleep {sleeper} is still running"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// A process that ignores SIGTERM is killed when the grace is over.
    #[test]
    fn stopping_kills_a_process_that_ignores_sigterm() {
        let mut processes = Processes::new(Duration::from_millis(500));
        let mut cmd = Command::new("sh");
        cmd.args(["-c", "trap '' TERM; echo ready; while :; do sleep 1; done"])
            .stdout(Stdio::piped());
        let shell = processes
            .spawn("shell", cmd, Path::new("/dev/null"))
            .expect("start sh");
        let pid = i32::try_from(shell.child.id()).expect("pid fits");
        let stdout = shell.child.stdout.take().expect("piped stdout");
        let mut line = String::new();
        // Only signal once the trap is set.
        BufReader::new(stdout)
            .read_line(&mut line)
            .expect("read ready");

        let started = Instant::now();
        processes.stop_all();
        assert!(
            started.elapsed() >= Duration::from_millis(500),
            "SIGTERM was ignored, so the grace must pass"
        );
        assert!(!is_alive(pid));
        assert_eq!(live_group_members(pid), 0);
    }

    #[test]
    fn a_clean_exit_is_not_waited_for() {
        let mut processes = Processes::new(Duration::from_secs(30));
        let mut cmd = Command::new("sleep");
        cmd.arg("60");
        processes
            .spawn("sleep", cmd, Path::new("/dev/null"))
            .expect("start sleep");
        let started = Instant::now();
        processes.stop_all();
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "sleep stops on SIGTERM at once"
        );
    }

    /// Alive and not a zombie waiting for whoever inherited it to reap it.
    fn is_alive(pid: i32) -> bool {
        std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
            stat.rsplit(')')
                .next()
                .is_some_and(|rest| !rest.trim_start().starts_with('Z'))
        })
    }
}
