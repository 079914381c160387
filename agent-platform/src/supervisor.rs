//! Starts the three children, keeps them running, and routes their messages.
//!
//! Each child gets its own socketpair (see `palisade_agent_sys::spawn`). A
//! child that exits, stops answering health checks for too long, or sends
//! something it must not, is killed and restarted after a backoff (1 s
//! doubling to 60 s, back to 1 s after a minute of good health). Telemetry
//! from the collector goes into the spool; the health of all children is
//! reported to the backend as an `AgentHealth` record whenever it changes.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use palisade_agent_sys::ipc::Channel;
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
    libexec.join(format!("palisade-agent-{}", role.as_str()))
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
    spool: Arc<Spool>,
    board: HealthBoard,
    mut commands: mpsc::Receiver<ToChild>,
    mut shutdown: watch::Receiver<bool>,
) {
    let program = child_program(&config.libexec, role);
    let mut delay = Duration::from_secs(1);
    let mut restarts = 0u32;
    loop {
        let started = Instant::now();
        match palisade_agent_sys::spawn::spawn_child(&program, &[]) {
            Ok((child, channel)) => {
                let pid = child.id();
                tracing::info!(role = %role, pid, "child started");
                board.update(role, |s| {
                    s.pid = pid;
                    s.healthy = false;
                    s.restarts = restarts;
                });
                let outcome = run_child(
                    role,
                    child,
                    channel,
                    &config,
                    &spool,
                    &board,
                    &mut commands,
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
    mut child: std::process::Child,
    mut channel: Channel,
    config: &SupervisorConfig,
    spool: &Spool,
    board: &HealthBoard,
    commands: &mut mpsc::Receiver<ToChild>,
    shutdown: &mut watch::Receiver<bool>,
) -> ChildEnd {
    let pid = child.id();
    let (exit_tx, mut exit_rx) = tokio::sync::oneshot::channel();
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
        tracing::error!(role = %role, error = %e, "cannot watch child");
        kill(pid);
        return ChildEnd::Killed("cannot watch it");
    }

    let mut said_hello = false;
    let mut health = tokio::time::interval(config.health_interval);
    health.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut outstanding: Option<(u64, Instant)> = None;
    let mut nonce = 0u64;
    let hello_deadline = tokio::time::sleep(Duration::from_secs(10));
    tokio::pin!(hello_deadline);

    let end = loop {
        tokio::select! {
            status = &mut exit_rx => return ChildEnd::Exited(status.unwrap_or_else(|_| "unknown".into())),
            _ = shutdown.changed() => {
                kill(pid);
                let _ = exit_rx.await;
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
                    FromChild::Facts(_) | FromChild::Metrics(_) | FromChild::CommandResult(_) => {
                        tracing::warn!(role = %role, "telemetry from a child that does not collect it; ignored");
                    }
                }
            }
            Some(cmd) = commands.recv() => {
                if said_hello
                    && let Err(e) = channel.send(&pb::ToChild::from(cmd)).await
                {
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
    // Reap it (the waiter thread sends once the process is gone).
    let _ = exit_rx.await;
    end
}

fn kill(pid: u32) {
    let Ok(pid) = i32::try_from(pid) else { return };
    let _ = nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid),
        nix::sys::signal::Signal::SIGKILL,
    );
}
