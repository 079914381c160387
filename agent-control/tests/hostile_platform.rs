//! The real `palisade-agent-control` binary, started exactly as the platform
//! starts it (a socketpair at fd 3, a cleared environment, the state
//! directory in `PALISADE_AGENT_STATE_DIR`), with a pin for a test key pair,
//! and commands injected straight into its socket as a compromised platform
//! would: forged, for another agent, expired, replayed (also after control
//! was killed and restarted), garbage. Every hostile command must come back
//! REJECTED with nothing run; genuine commands must run.
//!
//! How "nothing ran" is shown: every hostile command is a `restart_service`.
//! A genuine one runs `systemctl` and comes back FAILED or SUCCEEDED with
//! systemctl's exit code and output (FAILED here, where systemd is not PID 1);
//! a refused one comes back REJECTED with no output and exit code 0. And a
//! refused command does not use up its id: the genuine command with the id
//! of a forged one still runs afterwards.

mod common;

use common::{AGENT, Control, MINUTE, Signer, enrolled, now_ms};
use palisade_agent_sys::control_pin;
use palisade_proto::msg::{CommandAction, TypedCommand};
use palisade_proto::pb::{self, CommandStatus};

const OTHER_AGENT: &str = "0b7e9a10-1111-4222-8333-944455566677";
const UNIT: &str = "palisade-test-nonexistent.service";

fn restart(id: &str) -> TypedCommand {
    let now = now_ms();
    TypedCommand {
        agent_id: AGENT.into(),
        command_id: id.into(),
        issued_at_unix_ms: now,
        expires_at_unix_ms: now + 5 * MINUTE,
        action: CommandAction::RestartService { unit: UNIT.into() },
    }
}

/// A frame body of arbitrary bytes (what no well-behaved platform sends).
#[derive(Debug, Default)]
struct Garbage(Vec<u8>);

impl prost::Message for Garbage {
    fn encode_raw(&self, buf: &mut impl prost::bytes::BufMut) {
        buf.put_slice(&self.0);
    }
    fn merge_field(
        &mut self,
        tag: u32,
        wire_type: prost::encoding::WireType,
        buf: &mut impl prost::bytes::Buf,
        ctx: prost::encoding::DecodeContext,
    ) -> Result<(), prost::DecodeError> {
        prost::encoding::skip_field(wire_type, tag, buf, ctx)
    }
    fn encoded_len(&self) -> usize {
        self.0.len()
    }
    fn clear(&mut self) {
        self.0.clear();
    }
}

/// The command ran: systemctl's verdict, not a refusal.
#[track_caller]
fn assert_ran(result: &pb::CommandResult, id: &str) {
    assert_eq!(result.command_id, id);
    let status = CommandStatus::try_from(result.status).expect("known status");
    assert!(
        matches!(status, CommandStatus::Succeeded | CommandStatus::Failed),
        "the command must have run: {result:?}"
    );
    assert!(
        !result.output.is_empty() || result.exit_code != 0 || status == CommandStatus::Succeeded,
        "a run leaves systemctl's output or exit code: {result:?}"
    );
    assert!(result.started_at_unix_ms <= result.finished_at_unix_ms);
}

/// The command was refused for `reason`, and nothing ran.
#[track_caller]
fn assert_refused(result: &pb::CommandResult, id: &str, reason: &str) {
    assert_eq!(
        result.status,
        CommandStatus::Rejected as i32,
        "must be refused: {result:?}"
    );
    assert_eq!(result.command_id, id, "{result:?}");
    assert!(
        result.error.starts_with(&format!("{reason}: ")),
        "expected reason {reason}, got {:?}",
        result.error
    );
    assert_eq!(result.output, "", "nothing ran, so there is no output");
    assert_eq!(result.exit_code, 0, "nothing ran, so there is no exit code");
}

#[tokio::test]
async fn genuine_commands_run() {
    let signer = Signer::new();
    let dir = enrolled(&signer);
    let mut control = Control::start(Some(dir.path())).await;
    let (_, ok, detail) = control.health().await;
    assert!(ok, "a pinned control is healthy: {detail}");
    assert!(detail.contains(AGENT), "{detail}");

    let mut ping = restart("ping-1");
    ping.action = CommandAction::Ping;
    let result = control.execute(signer.sign(ping)).await;
    assert_eq!(result.command_id, "ping-1");
    assert_eq!(result.status, CommandStatus::Succeeded as i32);
    assert_eq!(result.output, "pong");

    let result = control.execute(signer.sign(restart("restart-1"))).await;
    assert_ran(&result, "restart-1");

    let mut refresh = restart("refresh-1");
    refresh.action = CommandAction::RefreshInventory;
    let result = control.execute(signer.sign(refresh)).await;
    // apt-get update on control's empty apt root: nothing to fetch.
    assert_eq!(result.status, CommandStatus::Succeeded as i32, "{result:?}");
    assert!(result.output.contains("apt-get"), "{result:?}");
    assert_eq!(
        result.streamed_bytes,
        result.output.len() as u64,
        "{result:?}"
    );
    control.stop().await;
}

#[tokio::test]
async fn a_compromised_platform_cannot_make_control_run_anything() {
    let signer = Signer::new();
    let dir = enrolled(&signer);
    let mut control = Control::start(Some(dir.path())).await;

    // Forged: signed by a key of the platform's own.
    let forger = Signer::new();
    let result = control.execute(forger.sign(restart("forged-1"))).await;
    assert_refused(&result, "", "bad_signature");

    // A genuine signature moved onto other bytes.
    let mut swapped = signer.sign(restart("swapped-1"));
    swapped.command = signer.sign(restart("swapped-2")).command;
    swapped.signature[0] ^= 0x80;
    let result = control.execute(swapped).await;
    assert_refused(&result, "", "bad_signature");

    // Another agent's command, genuinely signed (stolen from another host).
    let mut other = restart("other-1");
    other.agent_id = OTHER_AGENT.into();
    let result = control.execute(signer.sign(other)).await;
    assert_refused(&result, "other-1", "wrong_agent");

    // Expired, genuinely signed.
    let mut expired = restart("expired-1");
    expired.issued_at_unix_ms = now_ms() - 10 * MINUTE;
    expired.expires_at_unix_ms = now_ms() - 5 * MINUTE;
    let result = control.execute(signer.sign(expired)).await;
    assert_refused(&result, "expired-1", "expired");

    // Issued far in the future (a command held back for later use).
    let mut early = restart("early-1");
    early.issued_at_unix_ms = now_ms() + 60 * MINUTE;
    early.expires_at_unix_ms = now_ms() + 65 * MINUTE;
    let result = control.execute(signer.sign(early)).await;
    assert_refused(&result, "early-1", "issued_in_future");

    // Garbage: bytes that are not even a frame body, and a ToChild whose
    // message does not decode. Control drops them, answers nothing, lives on.
    for body in [
        vec![0xff; 7],
        vec![0x22, 0x05, 0x01, 0x02],
        vec![0x22, 0x00],
        (0..=255).collect(),
    ] {
        control
            .channel
            .send(&Garbage(body))
            .await
            .expect("send garbage");
    }
    let (said, ok, detail) = control.health().await;
    assert!(
        said.is_empty(),
        "garbage is answered with nothing: {said:?}"
    );
    assert!(ok, "and control is still healthy: {detail}");

    // Random bytes in a well-formed envelope: not a signature of the key.
    let random = pb::SignedCommand {
        command: (0..200u32).map(|i| (i * 7919 % 251) as u8).collect(),
        signature: vec![0x5a; 64],
    };
    let result = control.execute(random).await;
    assert_refused(&result, "", "bad_signature");

    // The refusals used up no id: the genuine command with the forged one's
    // id runs now, which also shows what running looks like.
    let result = control.execute(signer.sign(restart("forged-1"))).await;
    assert_ran(&result, "forged-1");
    control.stop().await;
}

#[tokio::test]
async fn a_replay_is_refused_also_after_control_is_killed_and_restarted() {
    let signer = Signer::new();
    let dir = enrolled(&signer);
    let genuine = signer.sign(restart("once-1"));

    let mut control = Control::start(Some(dir.path())).await;
    let result = control.execute(genuine.clone()).await;
    assert_ran(&result, "once-1");
    let result = control.execute(genuine.clone()).await;
    assert_refused(&result, "once-1", "replay");

    // SIGKILL: no chance to flush anything; the id was on disk before the
    // command ran.
    control.kill();
    let mut control = Control::start(Some(dir.path())).await;
    let result = control.execute(genuine).await;
    assert_refused(&result, "once-1", "replay");
    let result = control.execute(signer.sign(restart("once-2"))).await;
    assert_ran(&result, "once-2");
    control.stop().await;
}

#[tokio::test]
async fn without_a_pin_control_is_unhealthy_and_refuses_everything() {
    let signer = Signer::new();
    let empty = tempfile::tempdir().expect("tempdir");
    for state_dir in [None, Some(empty.path())] {
        let mut control = Control::start(state_dir).await;
        let (_, ok, detail) = control.health().await;
        assert!(!ok, "no pin, not ok");
        assert!(detail.starts_with("refusing all commands"), "{detail}");
        let result = control.execute(signer.sign(restart("nopin-1"))).await;
        assert_refused(&result, "", "no_pin");
        control.stop().await;
    }

    // A pin the platform could have written (others may write it) is no pin.
    let dir = enrolled(&signer);
    let pin = control_pin::pin_path(dir.path());
    std::fs::set_permissions(&pin, std::os::unix::fs::PermissionsExt::from_mode(0o666))
        .expect("chmod");
    let mut control = Control::start(Some(dir.path())).await;
    let (_, ok, detail) = control.health().await;
    assert!(!ok && detail.contains("refusing to trust"), "{detail}");
    let result = control.execute(signer.sign(restart("nopin-2"))).await;
    assert_refused(&result, "", "no_pin");
    control.stop().await;
}
