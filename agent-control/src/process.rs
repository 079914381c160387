//! Running one program for a command: its output as it comes, a deadline,
//! and a way to stop it.
//!
//! The program is found at an absolute path and started with only the
//! environment the caller names, `/` as working directory and stdin from
//! `/dev/null`, in a process group of its own (so a stop reaches what it
//! started: apt's dpkg, dpkg's maintainer scripts). Its stdout and stderr
//! share one pipe, so the output keeps their order; every piece read is
//! handed to the caller's sink at once.
//!
//! **Stopping** (past the deadline, or when the stop signal fires): SIGINT
//! to the group, as an operator's Ctrl-C would (apt and dnf then end
//! cleanly where they can), then SIGKILL to the group after a grace period.
//! After the program exited, output is still read for a moment: a process
//! it left behind may hold the pipe open.

use std::os::fd::OwnedFd;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::Path;
use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use tokio::io::AsyncReadExt;
use tokio::sync::watch;
use tokio::time::Instant;

/// How long output is still read after the program exited.
const OUTPUT_GRACE: Duration = Duration::from_secs(2);

/// How a run ended.
#[derive(Debug)]
pub enum Ended {
    /// It exited on its own.
    Exited(ExitStatus),
    /// It was stopped at its deadline; the status once it was gone.
    TimedOut(Option<ExitStatus>),
    /// It was stopped on request.
    Cancelled(Option<ExitStatus>),
}

/// What the program runs with.
pub struct Program<'a> {
    pub path: &'a Path,
    pub args: &'a [String],
    pub env: &'a [(&'a str, &'a str)],
    /// When it is stopped.
    pub deadline: Instant,
    /// How long it has between SIGINT and SIGKILL.
    pub grace: Duration,
}

/// Where the output goes, piece by piece.
pub trait Sink {
    fn output(&mut self, bytes: &[u8]) -> impl Future<Output = ()>;
}

/// Runs `program` as the module documentation says; `stop` ends it early
/// when it turns true. `Err` is why it could not be started.
pub async fn run(
    program: &Program<'_>,
    mut stop: Option<watch::Receiver<bool>>,
    sink: &mut impl Sink,
) -> Result<Ended, String> {
    let name = program.path.display().to_string();
    let (reader, writer) = std::io::pipe().map_err(|e| format!("cannot create a pipe: {e}"))?;
    let stderr = writer
        .try_clone()
        .map_err(|e| format!("cannot create a pipe: {e}"))?;
    let mut command = std::process::Command::new(program.path);
    command
        .args(program.args)
        .env_clear()
        .envs(program.env.iter().copied())
        .current_dir("/")
        .stdin(Stdio::null())
        .stdout(writer)
        .stderr(stderr)
        .process_group(0);
    let mut command = tokio::process::Command::from(command);
    command.kill_on_drop(true);
    let spawned = command.spawn();
    // Our copies of the pipe's write end go with the command, so reading
    // ends when the program (and whatever it started) closed theirs.
    drop(command);
    let mut child = spawned.map_err(|e| format!("cannot start {name}: {e}"))?;
    let group = child
        .id()
        .and_then(|id| i32::try_from(id).ok())
        .map(Pid::from_raw);
    let mut pipe = match tokio::net::unix::pipe::Receiver::from_owned_fd(OwnedFd::from(reader)) {
        Ok(pipe) => pipe,
        Err(e) => {
            let _ = child.start_kill();
            return Err(format!("cannot read {name}'s output: {e}"));
        }
    };

    let mut buffer = vec![0u8; 16 * 1024];
    let mut pipe_open = true;
    let deadline = tokio::time::sleep_until(program.deadline);
    tokio::pin!(deadline);
    let mut stopping: Option<(bool, Instant)> = None; // (timed out, kill at)
    let status = loop {
        let kill_at = stopping.map(|(_, at)| at);
        tokio::select! {
            read = pipe.read(&mut buffer), if pipe_open => match read {
                Ok(0) | Err(_) => pipe_open = false,
                Ok(n) => sink.output(&buffer[..n]).await,
            },
            status = child.wait() => break status.ok(),
            () = &mut deadline, if stopping.is_none() => {
                interrupt(group);
                stopping = Some((true, Instant::now() + program.grace));
            }
            changed = wait_stop(&mut stop), if stopping.is_none() => {
                if changed {
                    interrupt(group);
                    stopping = Some((false, Instant::now() + program.grace));
                } else {
                    // Whoever could stop us is gone: nobody can any more.
                    stop = None;
                }
            }
            () = sleep_until_opt(kill_at) => {
                if let Some(group) = group {
                    let _ = killpg(group, Signal::SIGKILL);
                }
                let _ = child.start_kill();
                stopping = stopping.map(|(timed_out, _)| (timed_out, Instant::now() + Duration::from_secs(3600)));
            }
        }
    };
    // The program is gone; read what is left, briefly.
    if pipe_open {
        let _ = tokio::time::timeout(OUTPUT_GRACE, async {
            loop {
                match pipe.read(&mut buffer).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => sink.output(&buffer[..n]).await,
                }
            }
        })
        .await;
    }
    Ok(match stopping {
        None => match status {
            Some(status) => Ended::Exited(status),
            None => return Err(format!("cannot wait for {name}")),
        },
        Some((true, _)) => Ended::TimedOut(status),
        Some((false, _)) => Ended::Cancelled(status),
    })
}

/// SIGINT to the program's group (the program leads it).
fn interrupt(group: Option<Pid>) {
    if let Some(group) = group {
        let _ = killpg(group, Signal::SIGINT);
    }
}

/// Resolves with `true` when a stop was requested, `false` when the sender
/// is gone; never without a receiver.
async fn wait_stop(stop: &mut Option<watch::Receiver<bool>>) -> bool {
    let Some(receiver) = stop else {
        return std::future::pending().await;
    };
    receiver.wait_for(|stop| *stop).await.is_ok()
}

async fn sleep_until_opt(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// The exit code to report for `status`: the code, or 128 + the signal as
/// a shell reports it, or -1.
pub fn exit_code(status: &ExitStatus) -> i32 {
    match (status.code(), status.signal()) {
        (Some(code), _) => code,
        (None, Some(signal)) => 128 + signal,
        (None, None) => -1,
    }
}

/// A sink that keeps the first `cap` bytes and drops the rest, noting that
/// it did.
#[derive(Debug, Default)]
pub struct Capped {
    pub bytes: Vec<u8>,
    pub cap: usize,
    pub truncated: bool,
}

impl Capped {
    pub fn new(cap: usize) -> Capped {
        Capped {
            bytes: Vec::new(),
            cap,
            truncated: false,
        }
    }
}

impl Sink for Capped {
    async fn output(&mut self, bytes: &[u8]) {
        let room = self.cap.saturating_sub(self.bytes.len());
        if bytes.len() > room {
            self.truncated = true;
        }
        self.bytes
            .extend_from_slice(&bytes[..bytes.len().min(room)]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sh(script: &str) -> Vec<String> {
        vec!["-c".into(), script.into()]
    }

    async fn run_sh(
        script: &str,
        timeout: Duration,
        stop: Option<watch::Receiver<bool>>,
    ) -> (Ended, String) {
        let args = sh(script);
        let program = Program {
            path: Path::new("/bin/sh"),
            args: &args,
            env: &[("PATH", "/usr/bin:/bin")],
            deadline: Instant::now() + timeout,
            grace: Duration::from_millis(500),
        };
        let mut sink = Capped::new(1 << 20);
        let ended = run(&program, stop, &mut sink).await.expect("starts");
        (ended, String::from_utf8_lossy(&sink.bytes).into_owned())
    }

    #[tokio::test]
    async fn output_and_exit_status_come_back() {
        let (ended, out) = run_sh(
            "echo out; echo err >&2; exit 4",
            Duration::from_secs(30),
            None,
        )
        .await;
        let Ended::Exited(status) = ended else {
            panic!("{ended:?}")
        };
        assert_eq!(exit_code(&status), 4);
        assert_eq!(out, "out\nerr\n");
    }

    #[tokio::test]
    async fn past_the_deadline_the_group_is_interrupted() {
        // The shell traps SIGINT to show it arrived, then exits.
        let (ended, out) = run_sh(
            "trap 'echo interrupted; exit 130' INT; echo started; while :; do sleep 0.05; done",
            Duration::from_millis(300),
            None,
        )
        .await;
        assert!(matches!(ended, Ended::TimedOut(Some(_))), "{ended:?}");
        assert!(out.starts_with("started\n"), "{out:?}");
        assert!(out.contains("interrupted"), "{out:?}");
    }

    #[tokio::test]
    async fn a_program_ignoring_the_interrupt_is_killed_after_the_grace() {
        let (tx, rx) = watch::channel(false);
        let stopper = tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(200)).await;
            let _ = tx.send(true);
            tx
        });
        let started = std::time::Instant::now();
        let (ended, out) = run_sh(
            "trap '' INT; echo started; exec sleep 30",
            Duration::from_secs(60),
            Some(rx),
        )
        .await;
        drop(stopper.await);
        assert!(matches!(ended, Ended::Cancelled(Some(_))), "{ended:?}");
        assert_eq!(out, "started\n");
        assert!(started.elapsed() < Duration::from_secs(20));
    }

    #[tokio::test]
    async fn the_capped_sink_keeps_the_start() {
        let (_, out) = run_sh(
            "head -c 3000 /dev/zero | tr '\\0' x",
            Duration::from_secs(30),
            None,
        )
        .await;
        assert_eq!(out.len(), 3000);
        let mut sink = Capped::new(10);
        sink.output(b"0123456789abc").await;
        assert!(sink.truncated);
        assert_eq!(sink.bytes, b"0123456789");
    }
}
