//! The Palisade wire contract.
//!
//! - [`pb`]: the generated `palisade.v1` protobuf types. They stop at the
//!   edges of the program: decoders in this crate turn them into the typed
//!   enums of [`msg`], where a missing `oneof` or an invalid value is a
//!   [`DecodeError`].
//! - [`packages`]: package inventories between the wire and the model of
//!   `palisade_packages::inventory`, both directions in one place.
//! - [`upgrade`]: the typed package-upgrade command, the changes a result
//!   reports and the output a running command streams.
//! - [`frame`]: the length-prefixed framing used on every stream (QUIC, WSS
//!   and the local Unix sockets), with a hard cap on the frame size.
//!
//! Payload messages that are plain data (`HostFacts`, `Metrics`, ...) are used
//! as they are once [`msg`] has validated them; only envelopes get their own
//! Rust types. One concept, one place.

#![forbid(unsafe_code)]

pub mod frame;
pub mod msg;
pub mod packages;
pub mod token;
pub mod upgrade;

/// Generated protobuf types of package `palisade.v1`.
#[allow(clippy::all, missing_docs, rust_2018_idioms)]
pub mod pb {
    include!(concat!(env!("OUT_DIR"), "/palisade.v1.rs"));
}

pub use msg::DecodeError;

/// Version of the uplink protocol spoken by this build (see `Hello.protocol_version`).
pub const PROTOCOL_VERSION: u32 = 1;

/// ALPN of the agent uplink on QUIC (and the WebSocket subprotocol on WSS).
pub const UPLINK_ALPN: &[u8] = b"palisade/1";
