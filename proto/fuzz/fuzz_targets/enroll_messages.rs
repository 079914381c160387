//! Enrollment bodies: the request anyone on the network can send to the
//! backend, and the answers an agent reads before it trusts the backend.

#![no_main]

use libfuzzer_sys::fuzz_target;
use palisade_proto::frame::encode_body;
use palisade_proto::msg::{decode_enroll_error, decode_enroll_request, decode_enroll_response};

fuzz_target!(|data: &[u8]| {
    if let Ok(request) = decode_enroll_request(data) {
        assert_eq!(decode_enroll_request(&encode_body(&request)), Ok(request));
    }
    if let Ok(response) = decode_enroll_response(data) {
        assert_eq!(
            decode_enroll_response(&encode_body(&response)),
            Ok(response)
        );
    }
    if let Ok(error) = decode_enroll_error(data) {
        assert_eq!(decode_enroll_error(&encode_body(&error)), Ok(error));
    }
});
