//! Starts the three children, keeps them running, and routes their messages.
//!
//! Children are started by a [`Spawner`]: as root, by the privileged
//! launcher (`palisade_agent_sys::launcher`), since the platform itself has
//! no privilege left to start a sandboxed child, nor to signal one; as an
//! ordinary user (development), by the platform directly, unsandboxed.
//!
//! Each child gets its own socketpair (see `palisade_agent_sys::spawn`). A
//! child that exits, stops answering health checks for too long, or sends
//! something it must not, is killed and restarted after a backoff (1 s
//! doubling to 60 s, back to 1 s after a minute of good health). Telemetry
//! from the collector goes into the spool; the health of all children is
//! reported to the backend as an `AgentHealth` record whenever it changes.

use std::collections::BTreeMap;
use std::future::Future;
use std::os::unix::process::ExitStatusExt;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use palisade_agent_sys::control_pin::STATE_DIR_ENV;
use palisade_agent_sys::ipc::Channel;
use palisade_agent_sys::launcher::Launcher;
use palisade_proto::msg::{FromChild, RecordBody, Role, ToChild, decode_from_child};
use palisade_proto::pb;
use tokio::sync::{mpsc, watch};

use crate::spool::Spool;

/// Tunables of the supervisor.
#[derive(Debug, Clone)]
pub struct SupervisorConfig {
    /// Where the child binaries are.
    pub libexec: PathBuf,
    pub metrics_interval: Duration,
    pub health_interval: Duration,
}

/// Path of the binary of `role` in `libexec`.
pub fn child_program(libexec: &std::path::Path, role: Role) -> PathBuf {
    palisade_agent_sys::launcher::program_path(libexec, role)
}

/// How the supervisor starts a child.
#[derive(Clone)]
pub enum Spawner {
    /// Development (the platform runs as an ordinary user): the platform
    /// starts the children itself, as its own user, NOT sandboxed.
    Direct {
        libexec: PathBuf,
        /// Passed to the children (control reads its pin there).
        state_dir: PathBuf,
    },
    /// Production (started as root): the privileged launcher starts each
    /// child in its sandbox; the platform holds no privilege.
    Launcher(Arc<Launcher>),
}

/// A started child, as the supervisor sees it.
pub struct Running {
    pub pid: u32,
    channel: Channel,
    /// Resolves to the exit status, in words, once the child is gone.
    exited: Pin<Box<dyn Future<Output = String> + Send>>,
    stopper: Stopper,
}

enum Stopper {
    /// Our own child: we signal it.
    Signal,
    /// The launcher's child (another user): the launcher signals it.
    Launcher(Arc<Launcher>, Role),
}

impl Stopper {
    /// SIGKILLs the child `pid`; its exit is still reported through
    /// `Running::exited`.
    fn kill(&self, pid: u32) {
        match self {
            Stopper::Signal => kill(pid),
            Stopper::Launcher(launcher, role) => {
                if let Err(e) = launcher.kill(*role, pid) {
                    tracing::error!(role = %role, pid, error = %e, "cannot ask the launcher to kill a child");
                }
            }
        }
    }
}

impl Spawner {
    /// Starts `role`.
    pub async fn spawn(&self, role: Role) -> Result<Running, String> {
        match self {
            Spawner::Direct { libexec, state_dir } => {
                let program = child_program(libexec, role);
                let env = [(STATE_DIR_ENV, state_dir.as_os_str())];
                let (mut child, channel) =
                    palisade_agent_sys::spawn::spawn_child_with_env(&program, &[], &env)
                        .map_err(|e| e.to_string())?;
                let pid = child.id();
                let (exit_tx, exit_rx) = tokio::sync::oneshot::channel();
                let waiter = std::thread::Builder::new()
                    .name(format!("wait-{role}"))
                    .spawn(move || {
                        let status = child.wait();
                        let _ = exit_tx.send(
                            status
                                .map(|s| s.to_string())
                                .unwrap_or_else(|e| e.to_string()),
                        );
                    });
                if let Err(e) = waiter {
                    kill(pid);
                    return Err(format!("cannot watch the child: {e}"));
                }
                Ok(Running {
                    pid,
                    channel,
                    exited: Box::pin(
                        async move { exit_rx.await.unwrap_or_else(|_| "unknown".into()) },
                    ),
                    stopper: Stopper::Signal,
                })
            }
            Spawner::Launcher(launcher) => {
                let spawned = launcher.spawn(role).await.map_err(|e| e.to_string())?;
                let channel = match Channel::from_std(spawned.stream) {
                    Ok(channel) => channel,
                    Err(e) => {
                        // A child nobody talks to must not linger.
                        let _ = launcher.kill(role, spawned.pid);
                        return Err(e.to_string());
                    }
                };
                let exited = spawned.exited;
                Ok(Running {
                    pid: spawned.pid,
                    channel,
                    exited: Box::pin(async move {
                        match exited.await {
                            Ok(raw) => std::process::ExitStatus::from_raw(raw).to_string(),
                            Err(_) => "unknown (the launcher is gone)".into(),
                        }
                    }),
                    stopper: Stopper::Launcher(launcher.clone(), role),
                })
            }
        }
    }

    /// Resolves if the children can no longer be started (the launcher
    /// exited): the agent must then stop, for its service manager to
    /// restart it whole.
    pub async fn lost(&self) {
        match self {
            Spawner::Direct { .. } => std::future::pending().await,
            Spawner::Launcher(launcher) => launcher.gone().await,
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq)]
struct ChildState {
    pid: u32,
    healthy: bool,
    restarts: u32,
    sandbox: String,
}

/// The shared view of the children's health.
#[derive(Clone, Default)]
pub struct HealthBoard {
    inner: Arc<Mutex<BTreeMap<Role, ChildState>>>,
    changed: Arc<tokio::sync::Notify>,
}

impl HealthBoard {
    fn update(&self, role: Role, f: impl FnOnce(&mut ChildState)) {
        let changed = {
            let mut map = self.inner.lock().unwrap_or_else(|p| p.into_inner());
            let entry = map.entry(role).or_default();
            let before = entry.clone();
            f(entry);
            *entry != before
        };
        if changed {
            self.changed.notify_one();
        }
    }

    /// The current report, as sent to the backend.
    pub fn report(&self) -> pb::AgentHealth {
        let map = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        pb::AgentHealth {
            children: map
                .iter()
                .map(|(role, s)| pb::ChildHealth {
                    role: role.as_str().to_owned(),
                    pid: s.pid,
                    healthy: s.healthy,
                    restarts: s.restarts,
                    sandbox: s.sandbox.clone(),
                })
                .collect(),
        }
    }
}

/// Sends an `AgentHealth` record whenever the board changes (at most once a
/// second), and every `every` regardless.
pub async fn report_health(board: HealthBoard, spool: Arc<Spool>, every: Duration) {
    loop {
        let _ = tokio::time::timeout(every, board.changed.notified()).await;
        // Let a burst of changes (all children starting) settle into one report.
        tokio::time::sleep(Duration::from_secs(1)).await;
        if let Err(e) = spool.append(RecordBody::AgentHealth(board.report()), crate::now_millis()) {
            tracing::error!(error = %e, "cannot spool the agent health report");
        }
    }
}

/// Supervises one child forever. `commands` carries messages for the child
/// (e.g. collect facts); `shutdown` stops it.
pub async fn supervise(
    role: Role,
    config: SupervisorConfig,
    spawner: Spawner,
    spool: Arc<Spool>,
    board: HealthBoard,
    mut commands: mpsc::Receiver<ToChild>,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut delay = Duration::from_secs(1);
    let mut restarts = 0u32;
    // The backend's last word on the package inventory it holds, given
    // again to a restarted collector (which forgot what it sent).
    let mut packages_held = None;
    loop {
        let started = Instant::now();
        match spawner.spawn(role).await {
            Ok(running) => {
                let pid = running.pid;
                tracing::info!(role = %role, pid, "child started");
                board.update(role, |s| {
                    s.pid = pid;
                    s.healthy = false;
                    s.restarts = restarts;
                });
                let outcome = run_child(
                    role,
                    running,
                    &config,
                    &spool,
                    &board,
                    &mut commands,
                    &mut packages_held,
                    &mut shutdown,
                )
                .await;
                board.update(role, |s| s.healthy = false);
                match outcome {
                    ChildEnd::Shutdown => return,
                    ChildEnd::Exited(status) => {
                        tracing::warn!(role = %role, pid, %status, "child exited")
                    }
                    ChildEnd::Killed(reason) => {
                        tracing::warn!(role = %role, pid, reason, "child killed")
                    }
                }
            }
            Err(e) => tracing::error!(role = %role, error = %e, "cannot start child"),
        }
        if started.elapsed() > Duration::from_secs(60) {
            delay = Duration::from_secs(1);
        }
        restarts = restarts.saturating_add(1);
        tracing::info!(role = %role, ?delay, restarts, "restarting child after backoff");
        tokio::select! {
            () = tokio::time::sleep(delay) => {},
            _ = shutdown.changed() => return,
        }
        delay = (delay * 2).min(Duration::from_secs(60));
    }
}

enum ChildEnd {
    Shutdown,
    Exited(String),
    Killed(&'static str),
}

#[allow(clippy::too_many_arguments)]
async fn run_child(
    role: Role,
    running: Running,
    config: &SupervisorConfig,
    spool: &Spool,
    board: &HealthBoard,
    commands: &mut mpsc::Receiver<ToChild>,
    packages_held: &mut Option<Option<[u8; 32]>>,
    shutdown: &mut watch::Receiver<bool>,
) -> ChildEnd {
    let Running {
        pid,
        mut channel,
        exited: mut exit_rx,
        stopper,
    } = running;
    // Every kill below goes through the stopper (the launcher, as root).
    let kill = |pid: u32| stopper.kill(pid);

    let mut said_hello = false;
    let mut health = tokio::time::interval(config.health_interval);
    health.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut outstanding: Option<(u64, Instant)> = None;
    let mut nonce = 0u64;
    let hello_deadline = tokio::time::sleep(Duration::from_secs(10));
    tokio::pin!(hello_deadline);

    let end = loop {
        tokio::select! {
            status = &mut exit_rx => return ChildEnd::Exited(status),
            _ = shutdown.changed() => {
                kill(pid);
                exit_rx.await;
                return ChildEnd::Shutdown;
            }
            () = &mut hello_deadline, if !said_hello => {
                kill(pid);
                break ChildEnd::Killed("no hello within 10 s");
            }
            frame = channel.recv() => {
                let bytes = match frame {
                    Ok(Some(b)) => b,
                    Ok(None) => { kill(pid); break ChildEnd::Killed("closed its channel"); }
                    Err(e) => {
                        tracing::warn!(role = %role, error = %e, "bad channel");
                        kill(pid);
                        break ChildEnd::Killed("broke the channel protocol");
                    }
                };
                let msg = match decode_from_child(&bytes) {
                    Ok(m) => m,
                    Err(e) => {
                        // A child that sends garbage is not trusted to go on.
                        tracing::warn!(role = %role, error = %e, "undecodable message from child");
                        kill(pid);
                        break ChildEnd::Killed("sent an undecodable message");
                    }
                };
                match msg {
                    FromChild::Hello { role: claimed, sandbox, .. } => {
                        if claimed != role || said_hello {
                            kill(pid);
                            break ChildEnd::Killed("bad hello");
                        }
                        said_hello = true;
                        if sandbox.starts_with("not sandboxed") {
                            tracing::warn!(role = %role, sandbox, "child is not sandboxed");
                        }
                        board.update(role, |s| { s.sandbox = sandbox; s.healthy = true; });
                        let cfg = ToChild::Config { metrics_interval_ms: config.metrics_interval.as_millis() as u64 };
                        if let Err(e) = channel.send(&pb::ToChild::from(cfg)).await {
                            tracing::warn!(role = %role, error = %e, "cannot configure child");
                        }
                        if role == Role::Collector {
                            let _ = channel.send(&pb::ToChild::from(ToChild::CollectFacts)).await;
                            if let Some(held) = *packages_held {
                                let _ = channel.send(&pb::ToChild::from(ToChild::PackagesHeld(held))).await;
                            }
                        }
                    }
                    FromChild::Health { nonce: n, ok, detail } => {
                        if outstanding.is_some_and(|(want, _)| want == n) {
                            outstanding = None;
                            if !ok {
                                tracing::warn!(role = %role, detail, "child reports itself unhealthy");
                            }
                            board.update(role, |s| s.healthy = ok);
                        }
                    }
                    FromChild::Facts(facts) if role == Role::Collector => {
                        if let Err(e) = spool.append(RecordBody::Facts(facts), crate::now_millis()) {
                            tracing::error!(error = %e, "cannot spool host facts");
                        }
                    }
                    FromChild::Metrics(metrics) if role == Role::Collector => {
                        if let Err(e) = spool.append(RecordBody::Metrics(metrics), crate::now_millis()) {
                            tracing::error!(error = %e, "cannot spool metrics");
                        }
                    }
                    FromChild::CommandResult(result) if role == Role::Control => {
                        if let Err(e) = spool.append(RecordBody::CommandResult(result), crate::now_millis()) {
                            tracing::error!(error = %e, "cannot spool a command result");
                        }
                    }
                    FromChild::Packages(report) if role == Role::Collector => {
                        if let Err(e) = spool.append(RecordBody::Packages(report), crate::now_millis()) {
                            tracing::error!(error = %e, "cannot spool a package report");
                        }
                    }
                    FromChild::CommandOutput(output) if role == Role::Control => {
                        if let Err(e) = spool.append(RecordBody::CommandOutput(output), crate::now_millis()) {
                            tracing::error!(error = %e, "cannot spool a command's output");
                        }
                    }
                    FromChild::Facts(_)
                    | FromChild::Metrics(_)
                    | FromChild::CommandResult(_)
                    | FromChild::Packages(_)
                    | FromChild::CommandOutput(_) => {
                        tracing::warn!(role = %role, "telemetry from a child that does not collect it; ignored");
                    }
                }
            }
            // Held in the queue until the child said hello: a command
            // relayed while control is (re)starting must not be lost.
            Some(cmd) = commands.recv(), if said_hello => {
                if let ToChild::PackagesHeld(held) = &cmd {
                    *packages_held = Some(*held);
                }
                if let Err(e) = channel.send(&pb::ToChild::from(cmd)).await {
                    tracing::warn!(role = %role, error = %e, "cannot send to child");
                }
            }
            _ = health.tick(), if said_hello => {
                if let Some((_, since)) = outstanding {
                    board.update(role, |s| s.healthy = false);
                    if since.elapsed() > config.health_interval * 3 {
                        kill(pid);
                        break ChildEnd::Killed("stopped answering health checks");
                    }
                } else {
                    nonce = nonce.wrapping_add(1);
                    outstanding = Some((nonce, Instant::now()));
                    let _ = channel.send(&pb::ToChild::from(ToChild::HealthCheck { nonce })).await;
                }
            }
        }
    };
    // Wait until it is gone (reaped by its parent, which reports it).
    exit_rx.await;
    end
}

fn kill(pid: u32) {
    let Ok(pid) = i32::try_from(pid) else { return };
    let _ = nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid),
        nix::sys::signal::Signal::SIGKILL,
    );
}
