//! A byte stream on the uplink, cut by the length-prefix codec into frames
//! that are then decoded. The first two input bytes choose where the stream is
//! split into two reads, so partial length prefixes and partial bodies are
//! exercised as well as whole ones.

#![no_main]

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use palisade_proto::frame::{MAX_UPLINK_FRAME, codec};
use palisade_proto::msg::decode_uplink;
use tokio_util::codec::Decoder;

fuzz_target!(|data: &[u8]| {
    let Some((split, stream)) = data.split_first_chunk::<2>() else {
        return;
    };
    let split = usize::from(u16::from_be_bytes(*split)) % (stream.len() + 1);
    let (first_read, second_read) = stream.split_at(split);

    let mut codec = codec(MAX_UPLINK_FRAME);
    let mut buf = BytesMut::new();
    for read in [first_read, second_read] {
        buf.extend_from_slice(read);
        loop {
            match codec.decode(&mut buf) {
                Ok(Some(frame)) => {
                    assert!(
                        frame.len() <= MAX_UPLINK_FRAME,
                        "the codec let an oversized frame through"
                    );
                    let _ = decode_uplink(&frame);
                }
                Ok(None) => break,
                // A reader drops the connection on a framing error.
                Err(_) => return,
            }
        }
    }
    // At the end of the stream, whatever is left is an incomplete frame.
    match codec.decode_eof(&mut buf) {
        Ok(Some(frame)) => {
            let _ = decode_uplink(&frame);
        }
        Ok(None) | Err(_) => {}
    }
});
