//! What the tests of the real control binary share: a signer standing for
//! the backend, and control started exactly as the platform starts it (a
//! socketpair at fd 3, a cleared environment, the state directory in
//! `PALISADE_AGENT_STATE_DIR`, the package root in `PALISADE_PACKAGE_ROOT`).

#![allow(dead_code)] // each test file uses part of it

use std::path::Path;
use std::process::Child;
use std::time::Duration;

use palisade_agent_control::STATE_DIR_ENV;
use palisade_agent_sys::control_pin;
use palisade_agent_sys::ipc::Channel;
use palisade_agent_sys::package_root::PACKAGE_ROOT_ENV;
use palisade_agent_sys::spawn::spawn_child_with_env;
use palisade_proto::frame::encode_body;
use palisade_proto::msg::{
    ControlPin, FromChild, Role, ToChild, TypedCommand, command_signing_message, decode_from_child,
};
use palisade_proto::pb;
use ring::rand::SystemRandom;
use ring::signature::{Ed25519KeyPair, KeyPair};

pub const BINARY: &str = env!("CARGO_BIN_EXE_palisade-agent-control");
pub const DEADLINE: Duration = Duration::from_secs(30);
pub const AGENT: &str = "6f1c2a52-4f7e-4d3a-9a55-0c1d2e3f4a5b";
pub const MINUTE: i64 = 60_000;

pub fn now_ms() -> i64 {
    palisade_agent_control::now_millis()
}

/// A command signer, standing for a backend.
pub struct Signer(Ed25519KeyPair);

impl Signer {
    pub fn new() -> Signer {
        let pkcs8 = Ed25519KeyPair::generate_pkcs8(&SystemRandom::new()).expect("keygen");
        Signer(Ed25519KeyPair::from_pkcs8(pkcs8.as_ref()).expect("key"))
    }

    pub fn pin(&self) -> ControlPin {
        ControlPin {
            agent_id: AGENT.into(),
            command_signing_key: self.0.public_key().as_ref().try_into().expect("32 bytes"),
        }
    }

    pub fn sign(&self, command: TypedCommand) -> pb::SignedCommand {
        let bytes = encode_body(&pb::Command::from(command)).to_vec();
        let signature = self.0.sign(&command_signing_message(&bytes));
        pb::SignedCommand {
            command: bytes,
            signature: signature.as_ref().to_vec(),
        }
    }
}

/// Control as the platform sees it: the process and our end of its socket.
pub struct Control {
    child: Child,
    pub channel: Channel,
    nonce: u64,
    /// The empty apt root control manages unless told another.
    _root: Option<tempfile::TempDir>,
}

impl Control {
    /// Control with the state in `state_dir`, managing an empty apt root
    /// of its own (so nothing it runs reaches this machine's packages).
    pub async fn start(state_dir: Option<&Path>) -> Control {
        let root = tempfile::tempdir().expect("tempdir");
        palisade_testkit::apt::make_dpkg_root(root.path());
        palisade_testkit::apt::make_apt_root(root.path(), Path::new("/nonexistent"), &[]);
        let mut control = Control::start_with_root(state_dir, root.path()).await;
        control._root = Some(root);
        control
    }

    /// Control with the state in `state_dir` managing the packages under
    /// `package_root`.
    pub async fn start_with_root(state_dir: Option<&Path>, package_root: &Path) -> Control {
        let mut env: Vec<(&str, &std::ffi::OsStr)> = state_dir
            .map(|dir| (STATE_DIR_ENV, dir.as_os_str()))
            .into_iter()
            .collect();
        env.push((PACKAGE_ROOT_ENV, package_root.as_os_str()));
        let (child, channel) = spawn_child_with_env(Path::new(BINARY), &[], &env).expect("spawn");
        let mut control = Control {
            child,
            channel,
            nonce: 0,
            _root: None,
        };
        match control.recv().await {
            FromChild::Hello {
                role: Role::Control,
                ..
            } => {}
            other => panic!("expected hello from control, got {other:?}"),
        }
        control
    }

    pub async fn recv(&mut self) -> FromChild {
        let frame = tokio::time::timeout(DEADLINE, self.channel.recv())
            .await
            .expect("a frame before the deadline")
            .expect("recv")
            .expect("control still connected");
        decode_from_child(&frame).expect("control sends only valid frames")
    }

    pub async fn send(&mut self, message: ToChild) {
        self.channel
            .send(&pb::ToChild::from(message))
            .await
            .expect("send to control");
    }

    /// Sends a health check; returns what control said before answering it
    /// (so everything sent earlier has been handled) and the answer.
    pub async fn health(&mut self) -> (Vec<FromChild>, bool, String) {
        self.nonce += 1;
        let nonce = self.nonce;
        self.send(ToChild::HealthCheck { nonce }).await;
        let mut before = Vec::new();
        loop {
            match self.recv().await {
                FromChild::Health {
                    nonce: n,
                    ok,
                    detail,
                } if n == nonce => return (before, ok, detail),
                other => before.push(other),
            }
        }
    }

    /// Sends a command and waits for its result.
    pub async fn execute(&mut self, command: pb::SignedCommand) -> pb::CommandResult {
        self.send(ToChild::Execute(command)).await;
        loop {
            if let FromChild::CommandResult(result) = self.recv().await {
                return result;
            }
        }
    }

    /// Sends a command; returns the output pieces that came before its
    /// result, and the result.
    pub async fn run_streamed(
        &mut self,
        signed: pb::SignedCommand,
    ) -> (Vec<pb::CommandOutput>, pb::CommandResult) {
        self.send(ToChild::Execute(signed)).await;
        let mut pieces = Vec::new();
        loop {
            match self.recv().await {
                FromChild::CommandOutput(piece) => pieces.push(piece),
                FromChild::CommandResult(result) => return (pieces, result),
                _ => {}
            }
        }
    }

    pub fn kill(mut self) {
        self.child.kill().expect("kill control");
        self.child.wait().expect("reap control");
    }

    pub async fn stop(mut self) {
        drop(self.channel);
        let wait = tokio::task::spawn_blocking(move || self.child.wait());
        let status = tokio::time::timeout(DEADLINE, wait)
            .await
            .expect("exits in time")
            .expect("join")
            .expect("wait");
        assert_eq!(status.code(), Some(0), "a closed channel is a clean exit");
    }
}

/// A state directory with a pin for `signer`.
pub fn enrolled(signer: &Signer) -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("tempdir");
    control_pin::write(dir.path(), &signer.pin()).expect("write the pin");
    dir
}

/// The pieces are contiguous from 0 and all of command `id`; returns the
/// whole output.
pub fn whole(pieces: &[pb::CommandOutput], id: &str) -> String {
    let mut text = String::new();
    for piece in pieces {
        assert_eq!(piece.command_id, id);
        assert_eq!(piece.offset, text.len() as u64, "pieces are contiguous");
        text.push_str(&piece.text);
    }
    text
}
