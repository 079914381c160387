//! The control process of the Palisade agent (`palisade-agent-control`).
//!
//! It runs the commands the backend signs: `ping`, `restart_service` (one
//! systemd service or socket that does not change the system's state),
//! `reboot` (scheduled through systemd's `shutdown`), `refresh_inventory`
//! (the package indexes), `upgrade_packages` ([`upgrade`]: apt or dnf, a
//! dry run or the real upgrade, output streamed while it runs; after a real
//! one, whether the host needs a reboot and which services still run
//! replaced files, [`after_upgrade`]) and `cancel` (stops a running
//! command); see [`exec`]. The package manager acts on the system at the
//! package root the agent was started with (`/` on a host; see
//! [`palisade_agent_sys::package_root`]).
//!
//! What it deliberately does not do:
//! - **nothing unsigned**: a command runs only if it carries the backend's
//!   Ed25519 signature by the key pinned at enrollment, names this agent,
//!   has not expired and has an id never accepted before ([`verify`] has
//!   the checks and their order, [`seen`] the durable memory of ids).
//!   Anything else is refused, logged, and answered with a REJECTED result
//!   that the platform spools to the backend like any other;
//! - **no trust in the platform**: the platform relays commands and is the
//!   process exposed to the network, so control takes neither the key nor
//!   its agent id from it. Both come from `<state_dir>/control/pin`, written
//!   by `palisade-agent enroll` (as root) where only root can write; see
//!   [`palisade_agent_sys::control_pin`]. Without a trusted pin, control
//!   still answers health checks (reporting itself not ok, saying why) and
//!   refuses every command;
//! - **no other way in**: it listens on nothing and opens no socket other
//!   than the channel it inherited, so only the platform can reach it.
//!
//! The one thing control takes from whoever starts it is where the state
//! directory is ([`STATE_DIR_ENV`]). That is sound because the spawner
//! cannot be less trusted than control itself: it chooses the binary,
//! its user and its environment. Today the spawner is the platform's
//! supervisor, which runs as root like control (no privilege separation
//! yet). After the sandbox work, control is started by a root launcher while
//! the platform runs as its own user: a compromised platform then can
//! neither choose control's environment nor write `<state_dir>/control/`.

#![forbid(unsafe_code)]

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use palisade_agent_sys::child::{self, ChildError, ChildHandler, Health};
use palisade_agent_sys::{control_pin, package_root};
use palisade_proto::msg::{CommandAction, ControlPin, FromChild, MAX_STRING, Role, TypedCommand};
use palisade_proto::pb;
use tokio::sync::{mpsc, watch};

pub mod after_upgrade;
pub mod exec;
pub mod process;
pub mod seen;
pub mod upgrade;
pub mod verify;

pub use control_pin::STATE_DIR_ENV;

use crate::seen::{Seen, SeenStore};
use crate::verify::{Refusal, Rejected};

#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    #[error("{0}")]
    Child(ChildError),
}

/// Runs the control process until the platform closes the channel. The state
/// directory comes from [`STATE_DIR_ENV`], set by whoever started us.
pub async fn run() -> Result<(), ControlError> {
    let state_dir = std::env::var_os(STATE_DIR_ENV).map(PathBuf::from);
    child::serve(Role::Control, Control::new(state_dir))
        .await
        .map_err(ControlError::Child)
}

/// Current Unix time in milliseconds (the edge; the checks take it as input).
pub fn now_millis() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// What control needs before it accepts any command.
struct Trust {
    pin: ControlPin,
    seen: SeenStore,
}

/// The commands admitted and not finished, by id, with the switch that
/// stops each (a `cancel` turns it on).
type Stops = Arc<Mutex<HashMap<String, watch::Sender<bool>>>>;

/// The control process's answers to the platform.
pub struct Control {
    state_dir: Option<PathBuf>,
    trust: Result<Trust, String>,
    /// The system whose packages are managed (`/` on a host).
    package_root: PathBuf,
    stops: Stops,
    /// Output of running commands, on its way to the platform.
    output_tx: mpsc::Sender<FromChild>,
    output_rx: mpsc::Receiver<FromChild>,
}

impl Control {
    /// Control for the agent whose state is in `state_dir` (`None`: not
    /// told, so every command is refused). Loads the pin and opens the
    /// seen-set now; if that fails it is tried again at the next command.
    pub fn new(state_dir: Option<PathBuf>) -> Control {
        let trust = load_trust(state_dir.as_deref());
        match &trust {
            Ok(t) => {
                tracing::info!(agent_id = %t.pin.agent_id, "commands are verified against the pinned key")
            }
            Err(problem) => tracing::warn!(%problem, "every command will be refused"),
        }
        Control::with_root(state_dir, trust, package_root::from_env())
    }

    fn with_root(
        state_dir: Option<PathBuf>,
        trust: Result<Trust, String>,
        package_root: PathBuf,
    ) -> Control {
        if !package_root::is_system(&package_root) {
            tracing::info!(root = %package_root.display(), "managing the packages of another root");
        }
        let (output_tx, output_rx) = mpsc::channel(OUTPUT_QUEUE);
        Control {
            state_dir,
            trust,
            package_root,
            stops: Arc::default(),
            output_tx,
            output_rx,
        }
    }

    /// Control for `state_dir` managing the packages under `package_root`
    /// (tests; the process takes it from its environment).
    pub fn for_root(state_dir: Option<PathBuf>, package_root: PathBuf) -> Control {
        let trust = load_trust(state_dir.as_deref());
        Control::with_root(state_dir, trust, package_root)
    }

    /// Stops the admitted command `id`: `true` when there was one.
    fn cancel(&self, id: &str) -> bool {
        let stops = self
            .stops
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        match stops.get(id) {
            Some(stop) => {
                stop.send_replace(true);
                true
            }
            None => false,
        }
    }

    /// Decides whether `signed` may run at `now`: the checks of [`verify`],
    /// then the replay check, which records the id durably. `Ok` means the
    /// command's id is on disk and it must run now; `Err` is the refusal
    /// (already logged).
    pub fn admit(
        &mut self,
        signed: &pb::SignedCommand,
        now: i64,
    ) -> Result<palisade_proto::msg::TypedCommand, Rejected> {
        if self.trust.is_err() {
            self.trust = load_trust(self.state_dir.as_deref());
        }
        let outcome = match &self.trust {
            Err(problem) => Err(Rejected {
                command_id: String::new(),
                refusal: Refusal::NoPin(problem.clone()),
            }),
            Ok(trust) => verify::verify(signed, &trust.pin, now).and_then(|command| {
                match trust.seen.record(
                    &command.command_id,
                    command.issued_at_unix_ms,
                    command.expires_at_unix_ms,
                ) {
                    Ok(Seen::New) => Ok(command),
                    Ok(Seen::Replay) => Err(Rejected {
                        command_id: command.command_id,
                        refusal: Refusal::Replay,
                    }),
                    Ok(Seen::Stale { floor }) => Err(Rejected {
                        command_id: command.command_id,
                        refusal: Refusal::Stale {
                            expires_at: command.expires_at_unix_ms,
                            floor,
                        },
                    }),
                    Err(e) => Err(Rejected {
                        command_id: command.command_id,
                        refusal: Refusal::SeenStore(e.to_string()),
                    }),
                }
            }),
        };
        match &outcome {
            Ok(command) => tracing::info!(
                command_id = %command.command_id,
                action = command.action.kind(),
                "command accepted"
            ),
            Err(rejected) => tracing::warn!(
                command_id = %rejected.command_id,
                reason = rejected.refusal.code(),
                detail = %rejected.refusal,
                "command refused"
            ),
        }
        outcome
    }
}

fn load_trust(state_dir: Option<&Path>) -> Result<Trust, String> {
    let state_dir = state_dir
        .ok_or_else(|| format!("control was started without {STATE_DIR_ENV}, so it has no pin"))?;
    let pin = control_pin::read(state_dir).map_err(|e| e.to_string())?;
    let path = control_pin::control_dir(state_dir).join(seen::SEEN_FILE);
    let seen = SeenStore::open(&path).map_err(|e| e.to_string())?;
    Ok(Trust { pin, seen })
}

impl ChildHandler for Control {
    fn execute(
        &mut self,
        command: pb::SignedCommand,
    ) -> impl Future<Output = Option<pb::CommandResult>> + use<> {
        let admitted_at = now_millis();
        let admitted = self.admit(&command, admitted_at);
        // A cancel acts now, at arrival, not when its turn comes: the
        // command it names may be the one running.
        let cancelled = match &admitted {
            Ok(TypedCommand {
                action: CommandAction::Cancel { command_id },
                ..
            }) => Some((command_id.clone(), self.cancel(command_id))),
            _ => None,
        };
        let registered = admitted.as_ref().ok().map(|command| {
            let (stop_tx, stop) = watch::channel(false);
            self.stops
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .insert(command.command_id.clone(), stop_tx);
            (
                stop,
                Finished {
                    stops: Arc::clone(&self.stops),
                    id: command.command_id.clone(),
                },
            )
        });
        let package_root = self.package_root.clone();
        let output = self.output_tx.clone();
        async move {
            let command = match admitted {
                Ok(command) => command,
                Err(rejected) => return Some(rejected.result(admitted_at)),
            };
            let (stop, _finished) = registered?;
            let started = now_millis();
            let outcome = match cancelled {
                Some((target, true)) => {
                    exec::Outcome::succeeded(format!("stop requested for {target}"))
                }
                Some((target, false)) => exec::Outcome::failed(
                    -1,
                    String::new(),
                    format!("no command {target} is running or waiting here"),
                ),
                None => {
                    let context = exec::Context {
                        command_id: command.command_id.clone(),
                        package_root,
                        output,
                        stop,
                    };
                    exec::run(&command.action, context).await
                }
            };
            let finished = now_millis();
            tracing::info!(
                command_id = %command.command_id,
                action = command.action.kind(),
                status = outcome.status.as_str_name(),
                exit_code = outcome.exit_code,
                elapsed_ms = finished.saturating_sub(started),
                "command finished"
            );
            Some(pb::CommandResult {
                command_id: command.command_id,
                status: outcome.status as i32,
                exit_code: outcome.exit_code,
                output: outcome.output,
                started_at_unix_ms: started,
                finished_at_unix_ms: finished,
                error: one_line(&outcome.error),
                changes: outcome.changes,
                streamed_bytes: outcome.streamed_bytes,
                reboot_required: outcome.reboot_required,
                restarts: outcome.restarts,
            })
        }
    }

    fn ready(&mut self) -> Vec<FromChild> {
        std::iter::from_fn(|| self.output_rx.try_recv().ok()).collect()
    }

    async fn watch(&mut self) -> Vec<FromChild> {
        // Receiving from the queue is cancel-safe: a piece not taken now
        // stays queued for the next call.
        match self.output_rx.recv().await {
            Some(message) => vec![message],
            // Never: control holds a sender itself.
            None => std::future::pending().await,
        }
    }

    fn health(&self) -> Health {
        match &self.trust {
            Ok(trust) => Health {
                ok: true,
                detail: format!(
                    "ready: running commands signed by the pinned key for agent {}",
                    trust.pin.agent_id
                ),
            },
            Err(problem) => Health {
                ok: false,
                detail: format!("refusing all commands: {problem}"),
            },
        }
    }
}

/// Pieces of output waiting for the platform; a command producing faster
/// than they are sent waits (its pipe fills, the program blocks).
const OUTPUT_QUEUE: usize = 64;

/// Forgets a command's stop switch when its run ends (or never starts).
struct Finished {
    stops: Stops,
    id: String,
}

impl Drop for Finished {
    fn drop(&mut self) {
        self.stops
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .remove(&self.id);
    }
}

/// `text` as one line of at most [`MAX_STRING`] bytes (control characters
/// become spaces), as result errors and health details must be.
pub(crate) fn one_line(text: &str) -> String {
    let mut out = String::with_capacity(text.len().min(MAX_STRING));
    for c in text.chars().map(|c| if c.is_control() { ' ' } else { c }) {
        if out.len() + c.len_utf8() > MAX_STRING {
            break;
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::verify::tests::{AGENT, Backend, MINUTE, T0, command};
    use palisade_agent_sys::ipc::Channel;
    use palisade_proto::msg::{CommandAction, FromChild, ToChild, decode_from_child};

    async fn recv(channel: &mut Channel) -> FromChild {
        let frame = channel.recv().await.expect("recv").expect("a frame");
        decode_from_child(&frame).expect("valid")
    }

    /// A state directory holding a pin for `backend`.
    fn enrolled(backend: &Backend) -> tempfile::TempDir {
        let dir = tempfile::tempdir().expect("tempdir");
        control_pin::write(dir.path(), &backend.pin()).expect("pin");
        dir
    }

    fn restart(id: &str) -> palisade_proto::msg::TypedCommand {
        command(
            id,
            CommandAction::RestartService {
                unit: "palisade-test-nonexistent.service".into(),
            },
        )
    }

    fn code(result: Result<palisade_proto::msg::TypedCommand, Rejected>) -> &'static str {
        result.expect_err("must be refused").refusal.code()
    }

    #[test]
    fn each_refusal_has_its_reason() {
        let backend = Backend::new();
        let dir = enrolled(&backend);
        let mut control = Control::new(Some(dir.path().to_owned()));

        let forged = Backend::new().sign(restart("c-forged"));
        assert_eq!(code(control.admit(&forged, T0)), "bad_signature");

        let mut other = restart("c-other");
        other.agent_id = "0b7e9a10-1111-4222-8333-944455566677".into();
        assert_eq!(code(control.admit(&backend.sign(other), T0)), "wrong_agent");

        let expired = backend.sign(restart("c-expired"));
        assert_eq!(code(control.admit(&expired, T0 + 5 * MINUTE)), "expired");

        let mut future = restart("c-future");
        future.issued_at_unix_ms = T0 + 10 * MINUTE;
        future.expires_at_unix_ms = T0 + 20 * MINUTE;
        assert_eq!(
            code(control.admit(&backend.sign(future), T0)),
            "issued_in_future"
        );

        let mut unknown = pb::Command::from(restart("c-unknown"));
        unknown.action = None;
        let mut bytes = palisade_proto::frame::encode_body(&unknown).to_vec();
        bytes.extend_from_slice(&[0x9a, 0x06, 0x00]); // field 99
        assert_eq!(
            code(control.admit(&backend.sign_bytes(bytes), T0)),
            "unknown_type"
        );

        let oversize = backend.sign_bytes(vec![0; palisade_proto::msg::MAX_COMMAND_BYTES + 1]);
        assert_eq!(code(control.admit(&oversize, T0)), "envelope");

        // None of them used up its id: the genuine command with the forged
        // one's id is accepted.
        assert!(
            control
                .admit(&backend.sign(restart("c-forged")), T0)
                .is_ok()
        );
    }

    #[test]
    fn a_replay_is_refused_also_after_a_restart() {
        let backend = Backend::new();
        let dir = enrolled(&backend);
        let signed = backend.sign(restart("c1"));
        let mut control = Control::new(Some(dir.path().to_owned()));
        assert!(control.admit(&signed, T0).is_ok());
        assert_eq!(code(control.admit(&signed, T0 + 1)), "replay");
        drop(control);

        // A new process over the same state directory.
        let mut control = Control::new(Some(dir.path().to_owned()));
        let r = control.admit(&signed, T0 + MINUTE).expect_err("replay");
        assert_eq!(r.refusal, Refusal::Replay);
        assert_eq!(r.command_id, "c1");
        assert!(
            control
                .admit(&backend.sign(restart("c2")), T0 + MINUTE)
                .is_ok()
        );
    }

    #[test]
    fn a_clock_set_back_cannot_replay_a_forgotten_id() {
        let backend = Backend::new();
        let dir = enrolled(&backend);
        let mut control = Control::new(Some(dir.path().to_owned()));
        let first = backend.sign(restart("c1"));
        assert!(control.admit(&first, T0).is_ok());
        // Two hours later the backend issues another command; c1's id is
        // now below the floor and forgotten.
        let mut later = restart("c2");
        later.issued_at_unix_ms = T0 + 120 * MINUTE;
        later.expires_at_unix_ms = T0 + 125 * MINUTE;
        assert!(
            control
                .admit(&backend.sign(later), T0 + 120 * MINUTE)
                .is_ok()
        );
        // The host's clock is set back into c1's validity: still refused.
        assert_eq!(code(control.admit(&first, T0 + MINUTE)), "stale");
    }

    #[test]
    fn without_a_pin_everything_is_refused_and_health_says_why() {
        let backend = Backend::new();
        let empty = tempfile::tempdir().expect("tempdir");
        for mut control in [
            Control::new(None),
            Control::new(Some(empty.path().to_owned())),
        ] {
            let health = control.health();
            assert!(!health.ok);
            assert!(
                health.detail.starts_with("refusing all commands"),
                "{}",
                health.detail
            );
            let r = control
                .admit(&backend.sign(command("c1", CommandAction::Ping)), T0)
                .expect_err("no pin");
            assert_eq!(r.refusal.code(), "no_pin");
            assert_eq!(r.command_id, "");
        }

        // Enrolling later is picked up at the next command.
        let mut control = Control::new(Some(empty.path().to_owned()));
        control_pin::write(empty.path(), &backend.pin()).expect("pin");
        assert!(
            control
                .admit(&backend.sign(command("c1", CommandAction::Ping)), T0)
                .is_ok()
        );
        assert!(control.health().ok);
        assert!(control.health().detail.contains(AGENT));
    }

    #[tokio::test]
    async fn a_ping_is_answered_over_the_channel() {
        let backend = Backend::new();
        let dir = enrolled(&backend);
        let mut ping = command("p1", CommandAction::Ping);
        ping.issued_at_unix_ms = now_millis();
        ping.expires_at_unix_ms = ping.issued_at_unix_ms + 5 * MINUTE;
        let signed = backend.sign(ping);

        let (ours, theirs) = tokio::net::UnixStream::pair().expect("socketpair");
        let platform = async {
            let mut channel = Channel::new(ours);
            assert!(matches!(
                recv(&mut channel).await,
                FromChild::Hello {
                    role: Role::Control,
                    ..
                }
            ));
            channel
                .send(&pb::ToChild::from(ToChild::Execute(signed.clone())))
                .await
                .expect("send");
            match recv(&mut channel).await {
                FromChild::CommandResult(r) => {
                    assert_eq!(r.command_id, "p1");
                    assert_eq!(r.status, pb::CommandStatus::Succeeded as i32);
                    assert_eq!(r.output, "pong");
                    assert!(r.finished_at_unix_ms >= r.started_at_unix_ms);
                }
                other => panic!("expected a result, got {other:?}"),
            }
            channel
                .send(&pb::ToChild::from(ToChild::HealthCheck { nonce: 5 }))
                .await
                .expect("send");
            assert!(matches!(
                recv(&mut channel).await,
                FromChild::Health {
                    nonce: 5,
                    ok: true,
                    ..
                }
            ));
        };
        let control = Control::new(Some(dir.path().to_owned()));
        let (served, ()) = tokio::join!(
            child::serve_on(Channel::new(theirs), Role::Control, control),
            platform
        );
        assert!(
            served.is_ok(),
            "the platform side dropped its end: a clean exit"
        );
    }

    #[test]
    fn one_line_replaces_controls_and_caps_length() {
        assert_eq!(one_line("a\nb"), "a b");
        assert!(one_line(&"x".repeat(MAX_STRING + 10)).len() == MAX_STRING);
    }

    /// Whatever a compromised platform sends, nothing is admitted without
    /// the pinned key's signature, nothing unverified is echoed, and nothing
    /// panics.
    #[test]
    fn random_commands_are_never_admitted() {
        use proptest::prelude::*;
        let backend = Backend::new();
        let dir = enrolled(&backend);
        let control = std::cell::RefCell::new(Control::new(Some(dir.path().to_owned())));
        let mut runner = proptest::test_runner::TestRunner::default();
        let strategy = (
            proptest::collection::vec(any::<u8>(), 0..600),
            proptest::collection::vec(any::<u8>(), 0..80),
        );
        runner
            .run(&strategy, |(command, signature)| {
                let signed = pb::SignedCommand { command, signature };
                let refused = control.borrow_mut().admit(&signed, T0);
                prop_assert!(refused.is_err_and(|r| r.command_id.is_empty()));
                Ok(())
            })
            .expect("no random command is admitted");
    }
}
