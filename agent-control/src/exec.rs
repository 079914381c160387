//! Running a verified command.
//!
//! - `ping`: succeeds with the output `pong`; runs nothing.
//! - `restart_service`: `systemctl --no-ask-password restart -- <unit>`, the
//!   unit name already checked by the decoder (systemd's alphabet, a known
//!   suffix, no leading `-`; and `--` ends the options anyway). The program
//!   is found at a fixed absolute path, started with an empty environment,
//!   `/` as working directory and stdin from `/dev/null`; its stdout and
//!   stderr share one pipe (so the output keeps their order), capped at
//!   [`MAX_COMMAND_OUTPUT`]; after [`RESTART_TIMEOUT`] it is killed. Exit
//!   status 0 is SUCCEEDED, anything else FAILED with the exit code.
//! - `refresh_inventory`: acknowledged only. Package inventory is collected
//!   by a later release and host facts are already refreshed at every
//!   connection, so there is nothing to refresh yet; the output says so
//!   rather than pretending.

use std::os::fd::OwnedFd;
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use palisade_proto::msg::{CommandAction, MAX_COMMAND_OUTPUT};
use palisade_proto::pb::CommandStatus;
use tokio::io::AsyncReadExt;

/// How long a service restart may take before it is killed.
pub const RESTART_TIMEOUT: Duration = Duration::from_secs(60);

/// How long output is still read after the program exited (a process it
/// left behind may hold the pipe open).
const OUTPUT_GRACE: Duration = Duration::from_secs(2);

/// Where `systemctl` is looked for, in order.
const SYSTEMCTL: [&str; 2] = ["/usr/bin/systemctl", "/bin/systemctl"];

/// What running a command produced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    pub status: CommandStatus,
    pub exit_code: i32,
    pub output: String,
    /// Why it failed, for the operator; empty on success.
    pub error: String,
}

impl Outcome {
    fn succeeded(output: impl Into<String>) -> Outcome {
        Outcome {
            status: CommandStatus::Succeeded,
            exit_code: 0,
            output: output.into(),
            error: String::new(),
        }
    }

    fn failed(exit_code: i32, output: String, error: impl Into<String>) -> Outcome {
        Outcome {
            status: CommandStatus::Failed,
            exit_code,
            output,
            error: error.into(),
        }
    }
}

/// The text `refresh_inventory` answers with.
pub const REFRESH_INVENTORY_OUTPUT: &str = "acknowledged; nothing was collected: package inventory \
     arrives with a later release, and host facts are already refreshed at every connection";

/// Runs `action`.
pub async fn run(action: &CommandAction) -> Outcome {
    match action {
        CommandAction::Ping => Outcome::succeeded("pong"),
        CommandAction::RestartService { unit } => restart_service(unit).await,
        CommandAction::RefreshInventory => Outcome::succeeded(REFRESH_INVENTORY_OUTPUT),
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
/// reports its exit status and combined output.
pub async fn run_program(program: &Path, args: &[&str], timeout: Duration) -> Outcome {
    let name = program.display().to_string();
    let (reader, writer) = match std::io::pipe() {
        Ok(pair) => pair,
        Err(e) => return Outcome::failed(-1, String::new(), format!("cannot create a pipe: {e}")),
    };
    let stderr = match writer.try_clone() {
        Ok(w) => w,
        Err(e) => return Outcome::failed(-1, String::new(), format!("cannot create a pipe: {e}")),
    };
    let mut command = std::process::Command::new(program);
    command
        .args(args)
        .env_clear()
        .current_dir("/")
        .stdin(Stdio::null())
        .stdout(writer)
        .stderr(stderr);
    let mut command = tokio::process::Command::from(command);
    command.kill_on_drop(true);
    let spawned = command.spawn();
    // Our copies of the pipe's write end go with the command, so the read
    // below ends when the program (and whatever it started) closed theirs.
    drop(command);
    let mut child = match spawned {
        Ok(child) => child,
        Err(e) => return Outcome::failed(-1, String::new(), format!("cannot start {name}: {e}")),
    };
    let mut pipe = match tokio::net::unix::pipe::Receiver::from_owned_fd(OwnedFd::from(reader)) {
        Ok(pipe) => pipe,
        Err(e) => {
            let _ = child.start_kill();
            return Outcome::failed(
                -1,
                String::new(),
                format!("cannot read {name}'s output: {e}"),
            );
        }
    };

    let mut output = Vec::new();
    let mut truncated = false;
    let mut read_to_end = false;
    let exited = {
        let reading = read_capped(&mut pipe, &mut output, &mut truncated);
        tokio::pin!(reading);
        let finished = tokio::time::timeout(timeout, async {
            tokio::select! {
                status = child.wait() => status,
                () = &mut reading => {
                    read_to_end = true;
                    child.wait().await
                }
            }
        })
        .await;
        if finished.is_ok() && !read_to_end {
            let _ = tokio::time::timeout(OUTPUT_GRACE, &mut reading).await;
        }
        finished
    };
    let output = output_text(&output, truncated);
    match exited {
        Ok(Ok(status)) => match (status.code(), status.signal()) {
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
        Ok(Err(e)) => Outcome::failed(-1, output, format!("cannot wait for {name}: {e}")),
        Err(_) => {
            let _ = child.start_kill();
            let _ = tokio::time::timeout(OUTPUT_GRACE, child.wait()).await;
            Outcome::failed(
                -1,
                output,
                format!(
                    "{name} did not finish within {} s and was killed",
                    timeout.as_secs()
                ),
            )
        }
    }
}

/// Reads `pipe` to its end, keeping the first [`MAX_COMMAND_OUTPUT`] bytes
/// and draining the rest (so the program never blocks on a full pipe).
async fn read_capped(
    pipe: &mut tokio::net::unix::pipe::Receiver,
    output: &mut Vec<u8>,
    truncated: &mut bool,
) {
    let mut buffer = [0u8; 8192];
    loop {
        match pipe.read(&mut buffer).await {
            Ok(0) | Err(_) => return,
            Ok(n) => {
                let room = MAX_COMMAND_OUTPUT.saturating_sub(output.len());
                if n > room {
                    *truncated = true;
                }
                output.extend_from_slice(&buffer[..n.min(room)]);
            }
        }
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

    #[tokio::test]
    async fn ping_and_refresh_run_nothing_and_say_what_they_did() {
        assert_eq!(run(&CommandAction::Ping).await, Outcome::succeeded("pong"));
        let refresh = run(&CommandAction::RefreshInventory).await;
        assert_eq!(refresh.status, CommandStatus::Succeeded);
        assert!(refresh.output.contains("nothing was collected"));
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
