//! Running a verified command.
//!
//! - `ping`: succeeds with the output `pong`; runs nothing.
//! - `restart_service`: `systemctl --no-ask-password restart -- <unit>`, the
//!   unit name already checked by the decoder (systemd's alphabet, a known
//!   suffix, no leading `-`; and `--` ends the options anyway). The program
//!   is found at a fixed absolute path, started with an empty environment,
//!   `/` as working directory and stdin from `/dev/null`; its stdout and
//!   stderr share one pipe (so the output keeps their order), capped at
//!   [`MAX_COMMAND_OUTPUT`]; after [`RESTART_TIMEOUT`] it is stopped
//!   (SIGINT, then SIGKILL after [`STOP_GRACE`]; see [`crate::process`]). Exit
//!   status 0 is SUCCEEDED, anything else FAILED with the exit code.
//! - `refresh_inventory`: refreshes the package manager's indexes
//!   (`apt-get update`, `dnf makecache`), output streamed; the collector
//!   sees the new indexes and reports the pending updates.
//! - `upgrade_packages`: see [`crate::upgrade`].
//! - `cancel`: answered by [`crate::Control`], which tracks the commands.

use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::time::Duration;

use std::path::PathBuf;

use palisade_proto::msg::{CommandAction, FromChild, MAX_COMMAND_OUTPUT};
use palisade_proto::pb::{self, CommandStatus};
use tokio::sync::{mpsc, watch};

use crate::process::{self, Capped, Ended, Program};
use crate::upgrade::{self, Stream, UpgradeOutcome};

/// How long a service restart may take before it is killed.
pub const RESTART_TIMEOUT: Duration = Duration::from_secs(60);

/// How long a stopped program has between SIGINT and SIGKILL.
pub const STOP_GRACE: Duration = Duration::from_secs(5);

/// Where `systemctl` is looked for, in order.
const SYSTEMCTL: [&str; 2] = ["/usr/bin/systemctl", "/bin/systemctl"];

/// What running a command produced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    pub status: CommandStatus,
    pub exit_code: i32,
    /// The output, or its end when it was streamed.
    pub output: String,
    /// Why it failed, for the operator; empty on success.
    pub error: String,
    /// `upgrade_packages`: what changed (or would).
    pub changes: Vec<pb::PackageChange>,
    /// Bytes of output streamed while it ran.
    pub streamed_bytes: u64,
}

impl Outcome {
    pub(crate) fn succeeded(output: impl Into<String>) -> Outcome {
        Outcome {
            status: CommandStatus::Succeeded,
            exit_code: 0,
            output: output.into(),
            error: String::new(),
            changes: Vec::new(),
            streamed_bytes: 0,
        }
    }

    pub(crate) fn failed(exit_code: i32, output: String, error: impl Into<String>) -> Outcome {
        Outcome {
            status: CommandStatus::Failed,
            exit_code,
            output,
            error: error.into(),
            changes: Vec::new(),
            streamed_bytes: 0,
        }
    }

    fn streamed(outcome: UpgradeOutcome, stream: &Stream) -> Outcome {
        Outcome {
            status: outcome.status,
            exit_code: outcome.exit_code,
            output: stream.tail().to_owned(),
            error: outcome.error,
            changes: outcome.changes,
            streamed_bytes: stream.streamed(),
        }
    }
}

/// What a running command may use besides its action.
pub struct Context {
    pub command_id: String,
    /// The system whose packages are managed (`/` on a host).
    pub package_root: PathBuf,
    /// Where streamed output goes (to the platform).
    pub output: mpsc::Sender<FromChild>,
    /// Turns true when a `cancel` names this command.
    pub stop: watch::Receiver<bool>,
}

/// Runs `action`. `cancel` is answered by the caller, which owns the
/// running commands.
pub async fn run(action: &CommandAction, context: Context) -> Outcome {
    match action {
        CommandAction::Ping => Outcome::succeeded("pong"),
        CommandAction::RestartService { unit } => restart_service(unit).await,
        CommandAction::RefreshInventory => {
            let mut stream = Stream::new(context.command_id, context.output);
            let outcome =
                upgrade::refresh_index(&context.package_root, &mut stream, context.stop).await;
            Outcome::streamed(outcome, &stream)
        }
        CommandAction::UpgradePackages(u) => {
            let mut stream = Stream::new(context.command_id, context.output);
            let outcome = upgrade::run(u, &context.package_root, &mut stream, context.stop).await;
            Outcome::streamed(outcome, &stream)
        }
        CommandAction::Cancel { .. } => Outcome::failed(
            -1,
            String::new(),
            "a cancel is answered where commands are tracked, not run",
        ),
        // TODO(helper B): carry out the reboot.
        CommandAction::Reboot { .. } => {
            Outcome::failed(-1, String::new(), "reboot is not carried out by this build")
        }
    }
}

async fn restart_service(unit: &str) -> Outcome {
    let Some(systemctl) = SYSTEMCTL.iter().map(Path::new).find(|p| p.is_file()) else {
        return Outcome::failed(
            -1,
            String::new(),
            format!("systemctl not found (looked at {})", SYSTEMCTL.join(", ")),
        );
    };
    run_program(
        systemctl,
        &["--no-ask-password", "restart", "--", unit],
        RESTART_TIMEOUT,
    )
    .await
}

/// Runs `program` with `args` as described in the module documentation and
/// reports its exit status and combined output (see [`crate::process`]).
pub async fn run_program(program: &Path, args: &[&str], timeout: Duration) -> Outcome {
    let name = program.display().to_string();
    let args: Vec<String> = args.iter().map(|a| (*a).to_owned()).collect();
    let mut sink = Capped::new(MAX_COMMAND_OUTPUT);
    let ended = process::run(
        &Program {
            path: program,
            args: &args,
            env: &[],
            deadline: tokio::time::Instant::now() + timeout,
            grace: STOP_GRACE,
        },
        None,
        &mut sink,
    )
    .await;
    let output = output_text(&sink.bytes, sink.truncated);
    match ended {
        Err(error) => Outcome::failed(-1, output, error),
        Ok(Ended::Exited(status)) => match (status.code(), status.signal()) {
            (Some(0), _) => Outcome::succeeded(output),
            (Some(code), _) => {
                Outcome::failed(code, output, format!("{name} exited with status {code}"))
            }
            (None, Some(signal)) => Outcome::failed(
                128 + signal,
                output,
                format!("{name} was killed by signal {signal}"),
            ),
            (None, None) => Outcome::failed(-1, output, format!("{name} ended without a status")),
        },
        Ok(Ended::TimedOut(_) | Ended::Cancelled(_)) => Outcome::failed(
            -1,
            output,
            format!(
                "{name} did not finish within {} s and was killed",
                timeout.as_secs()
            ),
        ),
    }
}

const TRUNCATED: &str = "\n[output truncated]";

/// The output as text of at most [`MAX_COMMAND_OUTPUT`] bytes: invalid UTF-8
/// replaced, cut at a character boundary with a marker when it was longer.
fn output_text(bytes: &[u8], truncated: bool) -> String {
    let text = String::from_utf8_lossy(bytes);
    if !truncated && text.len() <= MAX_COMMAND_OUTPUT {
        return text.into_owned();
    }
    let mut end = MAX_COMMAND_OUTPUT - TRUNCATED.len();
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}{TRUNCATED}", &text[..end])
}

#[cfg(test)]
mod tests {
    use super::*;

    const SH: &str = "/bin/sh";

    fn context(root: &str) -> (Context, mpsc::Receiver<FromChild>, watch::Sender<bool>) {
        let (output, rx) = mpsc::channel(64);
        let (stop_tx, stop) = watch::channel(false);
        let context = Context {
            command_id: "c1".into(),
            package_root: PathBuf::from(root),
            output,
            stop,
        };
        (context, rx, stop_tx)
    }

    #[tokio::test]
    async fn ping_runs_nothing_and_a_refresh_without_a_package_database_says_so() {
        let (ctx, _rx, _stop) = context("/nonexistent-root");
        assert_eq!(
            run(&CommandAction::Ping, ctx).await,
            Outcome::succeeded("pong")
        );
        let (ctx, _rx, _stop) = context("/nonexistent-root");
        let refresh = run(&CommandAction::RefreshInventory, ctx).await;
        assert_eq!(refresh.status, CommandStatus::Failed);
        assert!(
            refresh.error.contains("no package database"),
            "{}",
            refresh.error
        );
    }

    #[tokio::test]
    async fn exit_status_and_combined_output_are_reported() {
        let ok = run_program(
            Path::new(SH),
            &["-c", "echo out; echo err >&2"],
            RESTART_TIMEOUT,
        )
        .await;
        assert_eq!(ok, Outcome::succeeded("out\nerr\n"));
        let failed =
            run_program(Path::new(SH), &["-c", "echo nope; exit 3"], RESTART_TIMEOUT).await;
        assert_eq!(failed.status, CommandStatus::Failed);
        assert_eq!(failed.exit_code, 3);
        assert_eq!(failed.output, "nope\n");
        assert!(failed.error.contains("status 3"), "{}", failed.error);
    }

    #[tokio::test]
    async fn the_environment_is_empty_and_stdin_is_null() {
        let out = run_program(Path::new(SH), &["-c", "env; cat; pwd"], RESTART_TIMEOUT).await;
        assert_eq!(out.status, CommandStatus::Succeeded);
        // sh itself may set PWD, SHLVL and _; nothing of ours passes.
        for line in out.output.lines().filter(|l| l.contains('=')) {
            let key = line.split('=').next().unwrap_or_default();
            assert!(
                matches!(key, "PWD" | "SHLVL" | "_" | "OLDPWD"),
                "leaked {line:?}"
            );
        }
        assert!(out.output.ends_with("/\n"), "{:?}", out.output);
    }

    #[tokio::test]
    async fn long_output_is_truncated_and_drained() {
        let out = run_program(
            Path::new(SH),
            &["-c", "head -c 300000 /dev/zero | tr '\\0' x; echo; exit 0"],
            RESTART_TIMEOUT,
        )
        .await;
        assert_eq!(out.status, CommandStatus::Succeeded);
        assert!(out.output.len() <= MAX_COMMAND_OUTPUT);
        assert!(out.output.ends_with(TRUNCATED));
    }

    #[tokio::test]
    async fn a_program_past_its_timeout_is_killed() {
        let out = run_program(
            Path::new(SH),
            &["-c", "echo started; exec sleep 30"],
            Duration::from_millis(300),
        )
        .await;
        assert_eq!(out.status, CommandStatus::Failed);
        assert!(out.error.contains("was killed"), "{}", out.error);
        assert_eq!(out.output, "started\n");
    }

    #[tokio::test]
    async fn a_missing_program_is_a_failure_not_a_panic() {
        let out = run_program(Path::new("/nonexistent/program"), &[], RESTART_TIMEOUT).await;
        assert_eq!(out.status, CommandStatus::Failed);
        assert!(out.error.contains("cannot start"), "{}", out.error);
    }

    #[test]
    fn output_is_cut_at_a_character_boundary() {
        let text = "é".repeat(MAX_COMMAND_OUTPUT);
        let out = output_text(text.as_bytes(), true);
        assert!(out.len() <= MAX_COMMAND_OUTPUT);
        assert!(out.ends_with(TRUNCATED));
        assert_eq!(output_text(b"ab\xffc", false), "ab\u{fffd}c");
    }
}
