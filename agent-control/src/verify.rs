//! Whether a signed command may run: plain logic over the command as it
//! arrived, the pin and the time (passed in), no I/O.
//!
//! The checks, in this order, each with its own [`Refusal`]:
//!
//! 1. **envelope**: the command is 1 byte to [`MAX_COMMAND_BYTES`] and the
//!    signature 64 bytes (the child loop already drops frames that fail this,
//!    checked again here so this function stands alone);
//! 2. **signature**: Ed25519 (ring) by the pinned key over
//!    `palisade-command-v1\0` followed by the command bytes exactly as
//!    received; nothing of the command is read before this passes;
//! 3. **decode**: the signed bytes are a well-formed `Command` whose action
//!    this build knows, with valid arguments (a strict systemd unit name).
//!    An action this build does not know (a newer backend) is its own
//!    refusal, [`Refusal::UnknownType`];
//! 4. **agent**: the command names this agent's id, from the pin;
//! 5. **time**: not expired; issued no more than [`MAX_CLOCK_SKEW_MS`] in
//!    the future; expiring after it was issued and at most
//!    [`MAX_LIFETIME_MS`] later (which bounds the seen-set);
//! 6. **replay**: the caller records the id in the seen-set (durably) and
//!    refuses it if it was there ([`Refusal::Replay`]), or if it expired
//!    before the seen-set's floor, below which ids are forgotten
//!    ([`Refusal::Stale`], see [`crate::seen`]).
//!
//! The known-type check is part of decoding (3) rather than last: a command
//! of an unknown type can never run, whatever its id, so refusing it before
//! its id is recorded changes nothing, and the decoder is the one place that
//! turns bytes into a typed action.
//!
//! What a refusal reveals: the command id is echoed in the result only once
//! the signature verified (the bytes then come from the backend). Before
//! that, nothing from the command is repeated: the result of a forged
//! command has an empty id.

use palisade_proto::msg::{
    ControlPin, MAX_COMMAND_BYTES, MAX_COMMAND_ID, TypedCommand, UNKNOWN_COMMAND_TYPE,
    command_signing_message, decode_command, validate_signed_command,
};
use palisade_proto::pb;
use prost::Message;
use ring::signature::{ED25519, UnparsedPublicKey};

/// How far in the future a command's issue time may be (clock skew between
/// the backend and this host).
pub const MAX_CLOCK_SKEW_MS: i64 = 5 * 60 * 1000;

/// The longest a command may stay valid, from issue to expiry. The backend
/// allows at most this much.
pub const MAX_LIFETIME_MS: i64 = 24 * 60 * 60 * 1000;

/// Why a command was refused. [`Refusal::code`] is stable (tests, the
/// backend's table and the operator read it); the message explains.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("malformed envelope: {0}")]
    Envelope(String),
    #[error("control has no trusted pin, so no command can be verified: {0}")]
    NoPin(String),
    #[error("the signature does not verify against the pinned command-signing key")]
    BadSignature,
    #[error("the signed command is malformed: {0}")]
    Malformed(String),
    #[error("the command type is not one this agent knows")]
    UnknownType,
    #[error("the command is for agent {for_agent}, not for this agent ({this_agent})")]
    WrongAgent {
        for_agent: String,
        this_agent: String,
    },
    #[error("the command expired at {expires_at} (unix ms); it is now {now}")]
    Expired { expires_at: i64, now: i64 },
    #[error("the command was issued at {issued_at} (unix ms), in the future (it is now {now})")]
    IssuedInFuture { issued_at: i64, now: i64 },
    #[error(
        "the command's validity ({issued_at} to {expires_at}, unix ms) is empty or longer than 24 hours"
    )]
    BadLifetime { issued_at: i64, expires_at: i64 },
    #[error("the command id was accepted before; a command never runs twice")]
    Replay,
    #[error(
        "the command expired at {expires_at} (unix ms), before {floor}, the floor set by the newest command the backend issued"
    )]
    Stale { expires_at: i64, floor: i64 },
    #[error("the seen-command store failed, so no command is accepted: {0}")]
    SeenStore(String),
}

impl Refusal {
    /// A short, stable name for the reason.
    pub fn code(&self) -> &'static str {
        match self {
            Refusal::Envelope(_) => "envelope",
            Refusal::NoPin(_) => "no_pin",
            Refusal::BadSignature => "bad_signature",
            Refusal::Malformed(_) => "malformed",
            Refusal::UnknownType => "unknown_type",
            Refusal::WrongAgent { .. } => "wrong_agent",
            Refusal::Expired { .. } => "expired",
            Refusal::IssuedInFuture { .. } => "issued_in_future",
            Refusal::BadLifetime { .. } => "bad_lifetime",
            Refusal::Replay => "replay",
            Refusal::Stale { .. } => "stale",
            Refusal::SeenStore(_) => "seen_store",
        }
    }
}

/// A refused command: the reason, and the command id when it may be said
/// (only once the signature verified; empty otherwise).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejected {
    pub command_id: String,
    pub refusal: Refusal,
}

impl Rejected {
    fn unattributed(refusal: Refusal) -> Rejected {
        Rejected {
            command_id: String::new(),
            refusal,
        }
    }

    /// The result reported for this refusal: REJECTED, no output, the reason
    /// as `<code>: <explanation>`, decided at `now`.
    pub fn result(&self, now: i64) -> pb::CommandResult {
        pb::CommandResult {
            command_id: self.command_id.clone(),
            status: pb::CommandStatus::Rejected as i32,
            exit_code: 0,
            output: String::new(),
            started_at_unix_ms: now,
            finished_at_unix_ms: now,
            error: crate::one_line(&format!("{}: {}", self.refusal.code(), self.refusal)),
            changes: Vec::new(),
            streamed_bytes: 0,
            reboot_required: None,
            restarts: Vec::new(),
        }
    }
}

/// Runs checks 1 to 5 on `signed` for the agent and key of `pin` at `now`.
/// The replay check (6) is the caller's, against its seen-set.
pub fn verify(
    signed: &pb::SignedCommand,
    pin: &ControlPin,
    now: i64,
) -> Result<TypedCommand, Rejected> {
    // 1. Envelope.
    validate_signed_command(signed)
        .map_err(|e| Rejected::unattributed(Refusal::Envelope(e.to_string())))?;

    // 2. Signature, over exactly the bytes received.
    let key = UnparsedPublicKey::new(&ED25519, pin.command_signing_key);
    key.verify(&command_signing_message(&signed.command), &signed.signature)
        .map_err(|_| Rejected::unattributed(Refusal::BadSignature))?;

    // From here on the bytes are the backend's: the id may be echoed.
    // 3. Decode, including the known-type check.
    let command = decode_command(&signed.command).map_err(|e| Rejected {
        command_id: signed_command_id(&signed.command),
        refusal: if e == UNKNOWN_COMMAND_TYPE {
            Refusal::UnknownType
        } else {
            Refusal::Malformed(e.to_string())
        },
    })?;
    let refuse = |refusal| Rejected {
        command_id: command.command_id.clone(),
        refusal,
    };

    // 4. This agent.
    if command.agent_id != pin.agent_id {
        return Err(refuse(Refusal::WrongAgent {
            for_agent: command.agent_id.clone(),
            this_agent: pin.agent_id.clone(),
        }));
    }

    // 5. Time.
    let (issued_at, expires_at) = (command.issued_at_unix_ms, command.expires_at_unix_ms);
    if now >= expires_at {
        return Err(refuse(Refusal::Expired { expires_at, now }));
    }
    if issued_at > now.saturating_add(MAX_CLOCK_SKEW_MS) {
        return Err(refuse(Refusal::IssuedInFuture { issued_at, now }));
    }
    let lifetime = expires_at.checked_sub(issued_at);
    if !lifetime.is_some_and(|l| l > 0 && l <= MAX_LIFETIME_MS) {
        return Err(refuse(Refusal::BadLifetime {
            issued_at,
            expires_at,
        }));
    }
    Ok(command)
}

/// The command id of authenticated bytes that did not decode as a command
/// this build accepts (unknown type, bad unit name), so the backend can still
/// tell which of its commands was refused. Empty when even that is unusable.
fn signed_command_id(bytes: &[u8]) -> String {
    if bytes.len() > MAX_COMMAND_BYTES {
        return String::new();
    }
    pb::Command::decode(bytes)
        .ok()
        .map(|c| c.command_id)
        .filter(|id| {
            !id.is_empty() && id.len() <= MAX_COMMAND_ID && id.bytes().all(|b| b.is_ascii_graphic())
        })
        .unwrap_or_default()
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use palisade_proto::frame::encode_body;
    use palisade_proto::msg::CommandAction;
    use ring::rand::SystemRandom;
    use ring::signature::{Ed25519KeyPair, KeyPair};

    pub const T0: i64 = 1_700_000_000_000;
    pub const MINUTE: i64 = 60_000;
    pub const AGENT: &str = "6f1c2a52-4f7e-4d3a-9a55-0c1d2e3f4a5b";

    /// A backend's signing key and the pin that trusts it.
    pub struct Backend {
        pub key: Ed25519KeyPair,
    }

    impl Backend {
        pub fn new() -> Backend {
            let pkcs8 = Ed25519KeyPair::generate_pkcs8(&SystemRandom::new()).expect("keygen");
            Backend {
                key: Ed25519KeyPair::from_pkcs8(pkcs8.as_ref()).expect("key"),
            }
        }

        pub fn pin(&self) -> ControlPin {
            let mut command_signing_key = [0; 32];
            command_signing_key.copy_from_slice(self.key.public_key().as_ref());
            ControlPin {
                agent_id: AGENT.into(),
                command_signing_key,
            }
        }

        pub fn sign_bytes(&self, bytes: Vec<u8>) -> pb::SignedCommand {
            let signature = self.key.sign(&command_signing_message(&bytes));
            pb::SignedCommand {
                command: bytes,
                signature: signature.as_ref().to_vec(),
            }
        }

        pub fn sign(&self, command: TypedCommand) -> pb::SignedCommand {
            self.sign_bytes(encode_body(&pb::Command::from(command)).to_vec())
        }
    }

    pub fn command(id: &str, action: CommandAction) -> TypedCommand {
        TypedCommand {
            agent_id: AGENT.into(),
            command_id: id.into(),
            issued_at_unix_ms: T0,
            expires_at_unix_ms: T0 + 5 * MINUTE,
            action,
        }
    }

    fn refusal(result: Result<TypedCommand, Rejected>) -> Rejected {
        result.expect_err("must be refused")
    }

    #[test]
    fn a_genuine_command_passes() {
        let backend = Backend::new();
        let c = command("c1", CommandAction::Ping);
        assert_eq!(verify(&backend.sign(c.clone()), &backend.pin(), T0), Ok(c));
    }

    #[test]
    fn a_forged_signature_is_refused_without_echoing_anything() {
        let backend = Backend::new();
        let forger = Backend::new();
        let forged = forger.sign(command("c1", CommandAction::Ping));
        let r = refusal(verify(&forged, &backend.pin(), T0));
        assert_eq!(r.refusal, Refusal::BadSignature);
        assert_eq!(r.command_id, "", "unverified data is not echoed");

        // A genuine signature over other bytes, or one flipped bit.
        let mut swapped = backend.sign(command("c1", CommandAction::Ping));
        swapped.command = backend
            .sign(command(
                "c1",
                CommandAction::RestartService {
                    unit: "nginx.service".into(),
                },
            ))
            .command;
        assert_eq!(
            refusal(verify(&swapped, &backend.pin(), T0)).refusal,
            Refusal::BadSignature
        );
        let mut flipped = backend.sign(command("c1", CommandAction::Ping));
        flipped.signature[10] ^= 1;
        assert_eq!(
            refusal(verify(&flipped, &backend.pin(), T0)).refusal,
            Refusal::BadSignature
        );

        // A signature without the context (a raw signature over the bytes).
        let bytes = encode_body(&pb::Command::from(command("c1", CommandAction::Ping))).to_vec();
        let raw = pb::SignedCommand {
            signature: backend.key.sign(&bytes).as_ref().to_vec(),
            command: bytes,
        };
        assert_eq!(
            refusal(verify(&raw, &backend.pin(), T0)).refusal,
            Refusal::BadSignature
        );
    }

    #[test]
    fn another_agents_command_is_refused() {
        let backend = Backend::new();
        let mut c = command("c1", CommandAction::Ping);
        c.agent_id = "0b7e9a10-1111-4222-8333-944455566677".into();
        let r = refusal(verify(&backend.sign(c), &backend.pin(), T0));
        assert_eq!(r.refusal.code(), "wrong_agent");
        assert_eq!(r.command_id, "c1", "signed data may be echoed");
    }

    #[test]
    fn expired_and_future_commands_are_refused() {
        let backend = Backend::new();
        let c = command("c1", CommandAction::Ping);
        let signed = backend.sign(c.clone());
        assert!(verify(&signed, &backend.pin(), c.expires_at_unix_ms - 1).is_ok());
        assert_eq!(
            refusal(verify(&signed, &backend.pin(), c.expires_at_unix_ms))
                .refusal
                .code(),
            "expired"
        );
        // Issued up to the skew in the future is fine; beyond it is not.
        let early = T0 - MAX_CLOCK_SKEW_MS;
        assert!(verify(&signed, &backend.pin(), early).is_ok());
        assert_eq!(
            refusal(verify(&signed, &backend.pin(), early - 1))
                .refusal
                .code(),
            "issued_in_future"
        );
    }

    #[test]
    fn empty_or_overlong_lifetimes_are_refused() {
        let backend = Backend::new();
        for (issued, expires) in [
            (T0, T0),
            (T0, T0 - 1),
            (T0, T0 + MAX_LIFETIME_MS + 1),
            (i64::MIN, T0 + MINUTE),
        ] {
            let mut c = command("c1", CommandAction::Ping);
            c.issued_at_unix_ms = issued;
            c.expires_at_unix_ms = expires;
            let r = refusal(verify(&backend.sign(c), &backend.pin(), T0 - 2));
            assert_eq!(r.refusal.code(), "bad_lifetime", "{issued}..{expires}");
        }
        let mut c = command("c1", CommandAction::Ping);
        c.expires_at_unix_ms = T0 + MAX_LIFETIME_MS;
        assert!(verify(&backend.sign(c), &backend.pin(), T0).is_ok());
    }

    #[test]
    fn unknown_types_and_bad_arguments_are_refused_with_their_id() {
        let backend = Backend::new();
        let mut c = pb::Command::from(command("c1", CommandAction::Ping));
        c.action = None;
        let mut bytes = encode_body(&c).to_vec();
        bytes.extend_from_slice(&[0x9a, 0x06, 0x00]); // field 99: a type from a newer backend
        let r = refusal(verify(&backend.sign_bytes(bytes), &backend.pin(), T0));
        assert_eq!(r.refusal, Refusal::UnknownType);
        assert_eq!(r.command_id, "c1");

        let c = command(
            "c2",
            CommandAction::RestartService {
                unit: "-.service --now".into(),
            },
        );
        let r = refusal(verify(&backend.sign(c), &backend.pin(), T0));
        assert_eq!(r.refusal.code(), "malformed");
        assert_eq!(r.command_id, "c2");

        // Signed garbage: authentic, but nothing to echo.
        let r = refusal(verify(
            &backend.sign_bytes(vec![0xff; 40]),
            &backend.pin(),
            T0,
        ));
        assert_eq!(r.refusal.code(), "malformed");
        assert_eq!(r.command_id, "");
    }

    #[test]
    fn oversize_and_truncated_envelopes_are_refused_first() {
        let backend = Backend::new();
        let big = backend.sign_bytes(vec![0; MAX_COMMAND_BYTES + 1]);
        assert_eq!(
            refusal(verify(&big, &backend.pin(), T0)).refusal.code(),
            "envelope"
        );
        let mut short = backend.sign(command("c1", CommandAction::Ping));
        short.signature.truncate(63);
        assert_eq!(
            refusal(verify(&short, &backend.pin(), T0)).refusal.code(),
            "envelope"
        );
        let empty = pb::SignedCommand {
            command: Vec::new(),
            signature: vec![0; 64],
        };
        assert_eq!(
            refusal(verify(&empty, &backend.pin(), T0)).refusal.code(),
            "envelope"
        );
    }

    #[test]
    fn the_rejected_result_says_why_and_nothing_else() {
        let r = Rejected {
            command_id: "c1".into(),
            refusal: Refusal::Replay,
        };
        let result = r.result(T0);
        assert_eq!(result.status, pb::CommandStatus::Rejected as i32);
        assert_eq!(result.command_id, "c1");
        assert!(result.output.is_empty());
        assert!(result.error.starts_with("replay: "), "{}", result.error);
        assert!(palisade_proto::msg::validate_command_result(&result).is_ok());
    }
}
