//! Typed envelopes and their decoders. Everything that arrives from a network
//! or from another process goes through one of the `decode_*` functions, which
//! never panic and return a [`DecodeError`] naming what was wrong.

use prost::Message;

use crate::pb;

mod child;
mod command;
mod enroll;
mod link;
mod payload;

pub use child::*;
pub use command::*;
pub use enroll::*;
pub use link::*;
pub use payload::*;

/// Longest string we accept in any field (hostnames, paths, versions).
pub const MAX_STRING: usize = 4096;
/// Most elements we accept in any repeated field (filesystems, interfaces, children).
pub const MAX_ITEMS: usize = 4096;

/// Most installed packages or updates in one package report (a large
/// server has ~5,000 packages).
pub const MAX_PACKAGES: usize = 65_536;

/// Why bytes from a peer could not be turned into a message.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum DecodeError {
    #[error("malformed protobuf in {message}: {reason}")]
    Protobuf {
        message: &'static str,
        reason: String,
    },
    #[error("{message} has no {field}")]
    Missing {
        message: &'static str,
        field: &'static str,
    },
    #[error("invalid {field} in {message}: {reason}")]
    Invalid {
        message: &'static str,
        field: &'static str,
        reason: String,
    },
}

fn protobuf<M: Message + Default>(name: &'static str, bytes: &[u8]) -> Result<M, DecodeError> {
    M::decode(bytes).map_err(|e| DecodeError::Protobuf {
        message: name,
        reason: e.to_string(),
    })
}

fn invalid(message: &'static str, field: &'static str, reason: impl Into<String>) -> DecodeError {
    DecodeError::Invalid {
        message,
        field,
        reason: reason.into(),
    }
}

fn check_str(message: &'static str, field: &'static str, value: &str) -> Result<(), DecodeError> {
    if value.len() > MAX_STRING {
        return Err(invalid(
            message,
            field,
            format!("longer than {MAX_STRING} bytes"),
        ));
    }
    if value.chars().any(|c| c.is_control()) {
        return Err(invalid(message, field, "contains control characters"));
    }
    Ok(())
}

fn check_items(message: &'static str, field: &'static str, len: usize) -> Result<(), DecodeError> {
    if len > MAX_ITEMS {
        return Err(invalid(
            message,
            field,
            format!("more than {MAX_ITEMS} items"),
        ));
    }
    Ok(())
}

fn check_f64(
    message: &'static str,
    field: &'static str,
    value: f64,
    max: f64,
) -> Result<(), DecodeError> {
    if !value.is_finite() || value < 0.0 || value > max {
        return Err(invalid(
            message,
            field,
            format!("{value} is outside 0..={max}"),
        ));
    }
    Ok(())
}

/// Checks the values of a [`pb::HostFacts`] that came from outside.
#[cfg(test)]
mod tests {
    use super::*;
    use crate::frame::encode_body;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn decoders_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            let _ = decode_command(&bytes);
            let _ = decode_control_pin(&bytes);
            let _ = decode_uplink(&bytes);
            let _ = decode_downlink(&bytes);
            let _ = decode_from_child(&bytes);
            let _ = decode_to_child(&bytes);
            let _ = decode_enroll_request(&bytes);
            let _ = decode_enroll_response(&bytes);
        }

        #[test]
        fn ack_round_trips(seq in any::<u64>()) {
            let frame: pb::DownlinkFrame = Downlink::Ack { up_to_seq: seq }.into();
            prop_assert_eq!(decode_downlink(&encode_body(&frame)), Ok(Downlink::Ack { up_to_seq: seq }));
        }
    }
}
