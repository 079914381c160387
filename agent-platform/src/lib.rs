//! The Palisade agent's platform process and the `palisade-agent` command.
//!
//! - [`cli`]: `enroll` and `run`.
//! - [`identity`]: the encrypted identity store.
//! - [`enroll`]: the enrollment client.
//! - [`tls`]: TLS client configurations (pinned CA for enrollment, mutual TLS for the uplink).
//! - [`spool`]: the durable record spool.
//! - [`uplink`]: the one connection to the backend.
//! - [`supervisor`]: the children and their health.
//!
//! Invariants: the platform listens on no network port; it is the only
//! process that talks to the network; a record is in the spool before it is
//! sent and leaves it only when the backend acknowledged storing it.

#![forbid(unsafe_code)]

pub mod cli;
pub mod enroll;
pub mod identity;
pub mod spool;
pub mod supervisor;
pub mod tls;
pub mod transport;
pub mod uplink;

/// Current Unix time in milliseconds (edges only; logic takes time as input).
pub fn now_millis() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}
