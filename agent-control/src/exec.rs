//! Running a verified command.
//!
//! - `ping`: succeeds with the output `pong`; runs nothing.
//! - `restart_service`: the unit name was checked by the decoder
//!   ([`validate_unit_name`]: systemd's alphabet, a `.service` or `.socket`,
//!   no leading `-`, no unit that changes the system's state). Control then
//!   asks systemd (`systemctl show`) what the name stands for and refuses
//!   (REJECTED, nothing restarted) when the unit it resolves to, or a unit
//!   it starts (`Wants`, `Requires`, `Requisite`, `BindsTo`, `Upholds`,
//!   `Triggers`, `OnSuccess`, `OnFailure`), [`changes_system_state`], or
//!   when systemd itself would act on the system as it stops, fails, is
//!   restarted too often or times out (`SuccessAction`, `FailureAction`,
//!   `StartLimitAction`, `JobTimeoutAction` other than `none`): that is
//!   how systemd's own `systemd-reboot.service` works, so an alias of it or
//!   a site's unit built the same way is caught too. One level deep: a
//!   unit wanted by a wanted unit is not looked at (every service reaches
//!   `sysinit.target`, and through it half the system). Otherwise
//!   `systemctl --no-ask-password restart -- <unit>`. Both runs of
//!   `systemctl` use the program at a fixed absolute path, an empty
//!   environment, `/` as working directory and stdin from `/dev/null`;
//!   stdout and stderr share one pipe (so the output keeps their order),
//!   capped at [`MAX_COMMAND_OUTPUT`]; after [`RESTART_TIMEOUT`] the
//!   restart is stopped (SIGINT, then SIGKILL after [`STOP_GRACE`]; see
//!   [`crate::process`]). Exit status 0 is SUCCEEDED, anything else FAILED
//!   with the exit code.
//! - `reboot`: `shutdown -r -- +<delay_minutes> [<message>]`, the argument
//!   list built from the command's two checked fields only (the message
//!   is one argument after `--`, so it can never be read as an option).
//!   systemd's `shutdown` asks logind to schedule the reboot and returns at
//!   once; logind warns logged-in users (the message, or its own words when
//!   the message is empty) until the time comes, PID 1 carries it out
//!   (control's seccomp filter refuses `reboot(2)` and it has no
//!   `CAP_SYS_BOOT`), and `shutdown -c` on the host cancels it. With a
//!   delay of 0 the host goes down at once, maybe before this result
//!   reaches the platform's spool. The program is found and run like
//!   `systemctl`, stopped after [`REBOOT_TIMEOUT`].
//! - `refresh_inventory`: refreshes the package manager's indexes
//!   (`apt-get update`, `dnf makecache`), output streamed; the collector
//!   sees the new indexes and reports the pending updates.
//! - `upgrade_packages`: see [`crate::upgrade`].
//! - `cancel`: answered by [`crate::Control`], which tracks the commands.
//!
//! No test here runs a real `shutdown` or a real `systemctl restart`: the
//! argument lists and the refusal are pure functions, and the process-level
//! tests run a fake program through [`schedule_reboot`] and
//! [`restart_with`], which production reaches only with the programs found
//! at the fixed paths.

use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::time::Duration;

use std::path::PathBuf;

use palisade_proto::msg::{
    CommandAction, FromChild, MAX_COMMAND_OUTPUT, changes_system_state, validate_reboot,
    validate_unit_name,
};
use palisade_proto::pb::{self, CommandStatus};
use tokio::sync::{mpsc, watch};

use crate::process::{self, Capped, Ended, Program};
use crate::upgrade::{self, Stream, UpgradeOutcome};

/// How long a service restart may take before it is killed.
pub const RESTART_TIMEOUT: Duration = Duration::from_secs(60);

/// How long a stopped program has between SIGINT and SIGKILL.
pub const STOP_GRACE: Duration = Duration::from_secs(5);

/// How long asking systemd about a unit may take.
pub const UNIT_QUERY_TIMEOUT: Duration = Duration::from_secs(30);

/// How long scheduling a reboot may take (systemd's `shutdown` returns as
/// soon as logind has it).
pub const REBOOT_TIMEOUT: Duration = Duration::from_secs(60);

/// Where `systemctl` is looked for, in order.
const SYSTEMCTL: [&str; 2] = ["/usr/bin/systemctl", "/bin/systemctl"];

/// Where `shutdown` is looked for, in order.
const SHUTDOWN: [&str; 2] = ["/usr/sbin/shutdown", "/sbin/shutdown"];

/// What systemd is asked about a unit before it is restarted: its name
/// (an alias resolves to the unit's own), the units it starts, and the
/// actions systemd takes on its own when it ends.
const UNIT_PROPERTIES: [&str; 13] = [
    "Id",
    "Wants",
    "Requires",
    "Requisite",
    "BindsTo",
    "Upholds",
    "Triggers",
    "OnSuccess",
    "OnFailure",
    "SuccessAction",
    "FailureAction",
    "StartLimitAction",
    "JobTimeoutAction",
];

/// The properties of [`UNIT_PROPERTIES`] that name units the unit starts.
const STARTED_UNITS: [&str; 8] = [
    "Wants",
    "Requires",
    "Requisite",
    "BindsTo",
    "Upholds",
    "Triggers",
    "OnSuccess",
    "OnFailure",
];

/// The properties of [`UNIT_PROPERTIES`] that are actions systemd takes
/// on the whole system (`none`, or reboot, poweroff, exit... and their
/// `-force` and `-immediate` forms).
const SYSTEM_ACTIONS: [&str; 4] = [
    "SuccessAction",
    "FailureAction",
    "StartLimitAction",
    "JobTimeoutAction",
];

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
    /// `upgrade_packages` (real runs): whether the host needs a reboot.
    pub reboot_required: Option<bool>,
    /// `upgrade_packages` (real runs): services still running replaced files.
    pub restarts: Vec<pb::ServiceRestart>,
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
            reboot_required: None,
            restarts: Vec::new(),
        }
    }

    /// Refused after admission (`code: why`), nothing changed.
    fn rejected(code: &str, why: &str) -> Outcome {
        Outcome {
            status: CommandStatus::Rejected,
            exit_code: 0,
            output: String::new(),
            error: format!("{code}: {why}"),
            changes: Vec::new(),
            streamed_bytes: 0,
            reboot_required: None,
            restarts: Vec::new(),
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
            reboot_required: None,
            restarts: Vec::new(),
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
            reboot_required: outcome.reboot_required,
            restarts: outcome.restarts,
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
        CommandAction::Reboot {
            delay_minutes,
            message,
        } => reboot(*delay_minutes, message).await,
    }
}

/// The first of `paths` that is a file.
fn find_program(paths: &'static [&'static str]) -> Result<&'static Path, Outcome> {
    paths
        .iter()
        .map(Path::new)
        .find(|p| p.is_file())
        .ok_or_else(|| {
            let name = paths[0].rsplit('/').next().unwrap_or(paths[0]);
            Outcome::failed(
                -1,
                String::new(),
                format!("{name} not found (looked at {})", paths.join(", ")),
            )
        })
}

async fn restart_service(unit: &str) -> Outcome {
    match find_program(&SYSTEMCTL) {
        Ok(systemctl) => restart_with(systemctl, unit).await,
        Err(missing) => missing,
    }
}

/// Asks systemd about `unit`, then restarts it unless that answer refuses
/// it (see the module documentation). `systemctl` is the program found at
/// [`SYSTEMCTL`]; tests pass a fake one.
async fn restart_with(systemctl: &Path, unit: &str) -> Outcome {
    let mut show = vec!["show".to_owned()];
    show.extend(UNIT_PROPERTIES.iter().map(|p| format!("--property={p}")));
    show.extend(["--".to_owned(), unit.to_owned()]);
    let show: Vec<&str> = show.iter().map(String::as_str).collect();
    let shown = run_program(systemctl, &show, UNIT_QUERY_TIMEOUT).await;
    if shown.status != CommandStatus::Succeeded {
        // Without systemd's answer the unit is not restarted.
        return Outcome {
            error: format!(
                "cannot ask systemd about {unit}, so it was not restarted: {}",
                shown.error
            ),
            ..shown
        };
    }
    if let Some(why) = restart_refusal(unit, &shown.output) {
        tracing::warn!(unit, reason = %why, "refused to restart a unit");
        return Outcome::rejected("state_changing_unit", &why);
    }
    run_program(
        systemctl,
        &["--no-ask-password", "restart", "--", unit],
        RESTART_TIMEOUT,
    )
    .await
}

/// Why `unit` must not be restarted, judged from what `systemctl show`
/// said about it (`Key=value` lines of [`UNIT_PROPERTIES`]); `None` when
/// it may be. A property an older systemd does not have is absent, and
/// absent is harmless; the unit's own name must be there.
fn restart_refusal(unit: &str, shown: &str) -> Option<String> {
    let property = |key: &str| {
        shown
            .lines()
            .filter_map(|line| line.split_once('='))
            .filter(|(k, _)| *k == key)
            .map(|(_, v)| v.trim())
            .next_back()
    };
    let Some(id) = property("Id").filter(|id| !id.is_empty()) else {
        return Some(format!("systemd did not say which unit {unit} is"));
    };
    if let Err(why) = validate_unit_name(id) {
        return Some(format!("{unit} is {id}: {why}"));
    }
    for key in STARTED_UNITS {
        let started = property(key).unwrap_or_default();
        if let Some(other) = started
            .split_ascii_whitespace()
            .find(|u| changes_system_state(u))
        {
            return Some(format!(
                "{unit} starts {other} ({key}=), which changes the system's state"
            ));
        }
    }
    for key in SYSTEM_ACTIONS {
        let action = property(key).unwrap_or_default();
        if !(action.is_empty() || action == "none") {
            return Some(format!(
                "systemd acts on the whole system when {unit} ends ({key}={action})"
            ));
        }
    }
    None
}

async fn reboot(delay_minutes: u32, message: &str) -> Outcome {
    // The decoder checked both fields already; what follows cannot be
    // undone, so the check is repeated where they are used.
    if let Err(why) = validate_reboot(delay_minutes, message) {
        return Outcome::rejected("bad_reboot", &why);
    }
    match find_program(&SHUTDOWN) {
        Ok(shutdown) => schedule_reboot(shutdown, delay_minutes, message).await,
        Err(missing) => missing,
    }
}

/// The arguments of `shutdown` for a reboot in `delay_minutes` that warns
/// logged-in users with `message`: `-r -- +N`, then the message as one
/// argument unless it is empty (systemd's `shutdown [OPTIONS] [TIME]
/// [WALL...]`; `+N` is minutes from now, `+0` is `now`).
fn reboot_arguments(delay_minutes: u32, message: &str) -> Vec<String> {
    let mut args = vec![
        "-r".to_owned(),
        "--".to_owned(),
        format!("+{delay_minutes}"),
    ];
    if !message.is_empty() {
        args.push(message.to_owned());
    }
    args
}

/// Runs `shutdown` (the program found at [`SHUTDOWN`]; tests pass a fake
/// one) with [`reboot_arguments`].
async fn schedule_reboot(shutdown: &Path, delay_minutes: u32, message: &str) -> Outcome {
    let args = reboot_arguments(delay_minutes, message);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    tracing::warn!(delay_minutes, "scheduling a reboot of this host");
    run_program(shutdown, &args, REBOOT_TIMEOUT).await
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
    fn reboot_arguments_come_from_the_typed_fields_only() {
        let args = |delay, message: &str| reboot_arguments(delay, message);
        assert_eq!(
            args(5, "kernel update"),
            ["-r", "--", "+5", "kernel update"]
        );
        assert_eq!(args(0, ""), ["-r", "--", "+0"]);
        assert_eq!(args(1440, ""), ["-r", "--", "+1440"]);
        // Whatever the message says, it stays one argument after `--`:
        // never an option, never a second word of the time.
        let hostile = "-c --no-wall now; $(halt) `id` 'q' \"x\" *";
        assert_eq!(args(1, hostile), ["-r", "--", "+1", hostile]);
    }

    /// A fake program in a fresh directory, `sh` with only builtins (it
    /// runs with an empty environment, so without a `PATH`).
    fn fake_program(name: &str, script: &str) -> (tempfile::TempDir, PathBuf) {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join(name);
        std::fs::write(&path, format!("#!/bin/sh\n{script}")).expect("write");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).expect("chmod");
        (dir, path)
    }

    #[tokio::test]
    async fn a_reboot_runs_shutdown_with_one_argument_per_field() {
        // A fake `shutdown` through the test-only seam: production runs
        // only the program found at SHUTDOWN.
        let (_dir, shutdown) = fake_program(
            "shutdown",
            "for a in \"$@\"; do printf '[%s]\\n' \"$a\"; done\n",
        );
        let message = "kernel 6.12; back soon -- $(id) 'q'";
        let out = schedule_reboot(&shutdown, 10, message).await;
        assert_eq!(
            out,
            Outcome::succeeded(format!("[-r]\n[--]\n[+10]\n[{message}]\n"))
        );
        let out = schedule_reboot(&shutdown, 0, "").await;
        assert_eq!(out, Outcome::succeeded("[-r]\n[--]\n[+0]\n"));

        let (_dir, refusing) = fake_program(
            "shutdown",
            "echo 'Failed to schedule shutdown: Access denied' >&2; exit 1\n",
        );
        let out = schedule_reboot(&refusing, 1, "").await;
        assert_eq!(out.status, CommandStatus::Failed);
        assert_eq!(out.exit_code, 1);
        assert!(out.output.contains("Access denied"), "{out:?}");
    }

    /// `systemctl show` of an ordinary service, with `extra` lines after it
    /// (a later line wins, as a property systemd printed last would).
    fn shown(id: &str, extra: &str) -> String {
        format!(
            "Id={id}\nWants=network-online.target\nRequires=system.slice sysinit.target\n\
             Requisite=\nBindsTo=\nUpholds=\nTriggers=\nOnSuccess=\nOnFailure=\n\
             SuccessAction=none\nFailureAction=none\nStartLimitAction=none\n\
             JobTimeoutAction=none\n{extra}"
        )
    }

    #[test]
    fn what_systemd_says_about_a_unit_decides_whether_it_is_restarted() {
        for (unit, output) in [
            ("nginx.service", shown("nginx.service", "")),
            ("getty@tty1.service", shown("getty@tty1.service", "")),
            // An alias of an ordinary service.
            ("sshd.service", shown("ssh.service", "")),
            // A unit systemd does not know: systemctl's restart says so.
            ("gone.service", shown("gone.service", "Wants=\nRequires=\n")),
            // An older systemd without Upholds, OnSuccess or SuccessAction.
            (
                "nginx.service",
                "Id=nginx.service\nWants=\nFailureAction=none\n".to_owned(),
            ),
            (
                "docker.socket",
                shown("docker.socket", "Triggers=docker.service\n"),
            ),
        ] {
            assert_eq!(restart_refusal(unit, &output), None, "{unit}: {output}");
        }
        for (unit, output, expected) in [
            (
                "nice-name.service",
                shown("systemd-reboot.service", ""),
                "is systemd-reboot.service",
            ),
            (
                "reboot-now.service",
                shown("reboot-now.service", "Wants=network.target reboot.target\n"),
                "starts reboot.target (Wants=)",
            ),
            (
                "a.service",
                shown("a.service", "Requires=poweroff.target\n"),
                "poweroff.target",
            ),
            (
                "a.service",
                shown("a.service", "BindsTo=emergency.service\n"),
                "emergency.service",
            ),
            (
                "a.service",
                shown("a.service", "Upholds=systemd-suspend.service\n"),
                "systemd-suspend.service",
            ),
            (
                "a.socket",
                shown("a.socket", "Triggers=systemd-poweroff.service\n"),
                "(Triggers=)",
            ),
            (
                "a.service",
                shown("a.service", "OnFailure=rescue.target\n"),
                "(OnFailure=)",
            ),
            (
                "a.service",
                shown("a.service", "OnSuccess=kexec.target\n"),
                "(OnSuccess=)",
            ),
            (
                "a.service",
                shown("a.service", "SuccessAction=reboot-force\n"),
                "SuccessAction=reboot-force",
            ),
            (
                "a.service",
                shown("a.service", "FailureAction=poweroff\n"),
                "FailureAction=poweroff",
            ),
            (
                "a.service",
                shown("a.service", "StartLimitAction=reboot\n"),
                "StartLimitAction=reboot",
            ),
            (
                "a.service",
                shown("a.service", "JobTimeoutAction=exit\n"),
                "JobTimeoutAction=exit",
            ),
            ("a.service", String::new(), "did not say"),
            ("a.service", "Id=\n".to_owned(), "did not say"),
            ("a.service", shown("reboot.target", ""), "is reboot.target"),
        ] {
            let why = restart_refusal(unit, &output).expect(unit);
            assert!(why.contains(expected), "{unit}: {why}");
        }
    }

    /// A fake `systemctl` that answers `show` with `properties` (and exits
    /// with `show_status`) and records a restart in the file `restarted`.
    fn fake_systemctl(properties: &str, show_status: u8) -> (tempfile::TempDir, PathBuf) {
        let (dir, path) = fake_program(
            "systemctl",
            &format!(
                "dir=${{0%/*}}\n\
                 if [ \"$1\" = show ]; then\n\
                 printf '%s\\n' \"$*\" > \"$dir/shown\"\n\
                 printf '%s' '{properties}'\n\
                 exit {show_status}\n\
                 fi\n\
                 printf '%s\\n' \"$*\" > \"$dir/restarted\"\n\
                 echo restarted\n"
            ),
        );
        (dir, path)
    }

    #[tokio::test]
    async fn a_unit_is_restarted_only_after_systemd_said_it_may_be() {
        let (dir, systemctl) = fake_systemctl(&shown("nginx.service", ""), 0);
        let out = restart_with(&systemctl, "nginx.service").await;
        assert_eq!(out, Outcome::succeeded("restarted\n"));
        let asked = std::fs::read_to_string(dir.path().join("shown")).expect("asked");
        assert!(
            asked.starts_with("show --property=Id --property=Wants ")
                && asked.ends_with(" -- nginx.service\n"),
            "{asked}"
        );
        let restarted = std::fs::read_to_string(dir.path().join("restarted")).expect("restarted");
        assert_eq!(restarted, "--no-ask-password restart -- nginx.service\n");

        // systemd would reboot when it ends: refused, nothing restarted.
        let (dir, systemctl) =
            fake_systemctl(&shown("nightly.service", "SuccessAction=reboot\n"), 0);
        let out = restart_with(&systemctl, "nightly.service").await;
        assert_eq!(out.status, CommandStatus::Rejected, "{out:?}");
        assert!(
            out.error.starts_with("state_changing_unit: ") && out.error.contains("SuccessAction"),
            "{}",
            out.error
        );
        assert!(!dir.path().join("restarted").exists());

        // No answer from systemd (not PID 1, say): not restarted either.
        let (dir, systemctl) = fake_systemctl("System has not been booted with systemd", 1);
        let out = restart_with(&systemctl, "nginx.service").await;
        assert_eq!(out.status, CommandStatus::Failed, "{out:?}");
        assert_eq!(out.exit_code, 1);
        assert!(out.error.contains("cannot ask systemd"), "{}", out.error);
        assert!(out.output.contains("not been booted"), "{out:?}");
        assert!(!dir.path().join("restarted").exists());
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
