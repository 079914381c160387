//! Frame bodies an agent sends to the backend. Whatever decodes must survive
//! a round trip through the protobuf types unchanged.

#![no_main]

use libfuzzer_sys::fuzz_target;
use palisade_proto::frame::encode_body;
use palisade_proto::msg::decode_uplink;
use palisade_proto::pb;

fuzz_target!(|data: &[u8]| {
    if let Ok(uplink) = decode_uplink(data) {
        let wire = encode_body(&pb::UplinkFrame::from(uplink.clone()));
        assert_eq!(
            decode_uplink(&wire),
            Ok(uplink),
            "a decoded uplink frame must round-trip"
        );
    }
});
