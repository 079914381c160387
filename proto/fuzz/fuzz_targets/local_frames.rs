//! Frame bodies on the local Unix sockets, in both directions: a compromised
//! child must not be able to crash the platform, nor the platform a child.

#![no_main]

use libfuzzer_sys::fuzz_target;
use palisade_proto::frame::encode_body;
use palisade_proto::msg::{decode_from_child, decode_to_child};
use palisade_proto::pb;

fuzz_target!(|data: &[u8]| {
    if let Ok(message) = decode_from_child(data) {
        let wire = encode_body(&pb::FromChild::from(message.clone()));
        assert_eq!(
            decode_from_child(&wire),
            Ok(message),
            "a decoded child message must round-trip"
        );
    }
    if let Ok(message) = decode_to_child(data) {
        let wire = encode_body(&pb::ToChild::from(message.clone()));
        assert_eq!(
            decode_to_child(&wire),
            Ok(message),
            "a decoded platform message must round-trip"
        );
    }
});
