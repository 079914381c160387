//! Frame bodies the backend sends to an agent. Whatever decodes must survive
//! a round trip through the protobuf types unchanged.

#![no_main]

use libfuzzer_sys::fuzz_target;
use palisade_proto::frame::encode_body;
use palisade_proto::msg::decode_downlink;
use palisade_proto::pb;

fuzz_target!(|data: &[u8]| {
    if let Ok(downlink) = decode_downlink(data) {
        let wire = encode_body(&pb::DownlinkFrame::from(downlink.clone()));
        assert_eq!(
            decode_downlink(&wire),
            Ok(downlink),
            "a decoded downlink frame must round-trip"
        );
    }
});
