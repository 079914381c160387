//! Length-prefixed frames: a big-endian `u32` length, then that many bytes of
//! one protobuf message. Every reader sets a cap so a peer cannot make us
//! allocate more than that.

use bytes::{Bytes, BytesMut};
use prost::Message;
use tokio_util::codec::LengthDelimitedCodec;

/// Cap for frames on the local Unix sockets.
pub const MAX_LOCAL_FRAME: usize = 1024 * 1024;
/// Cap for frames on the uplink (QUIC or WSS).
pub const MAX_UPLINK_FRAME: usize = 4 * 1024 * 1024;

/// A codec for length-prefixed frames no longer than `max_len` bytes.
pub fn codec(max_len: usize) -> LengthDelimitedCodec {
    LengthDelimitedCodec::builder()
        .length_field_type::<u32>()
        .max_frame_length(max_len)
        .new_codec()
}

/// Encodes one message as a protobuf body (without the length prefix, which
/// the codec adds).
pub fn encode_body<M: Message>(message: &M) -> Bytes {
    let mut buf = BytesMut::with_capacity(message.encoded_len());
    // Encoding into a growable buffer cannot run out of space.
    message.encode_raw(&mut buf);
    buf.freeze()
}

/// Encodes one message as a complete frame: length prefix and body.
pub fn encode_frame<M: Message>(message: &M) -> Bytes {
    let len = message.encoded_len();
    let mut buf = BytesMut::with_capacity(4 + len);
    // `len` of a frame we produce is far below u32::MAX (our messages are capped).
    buf.extend_from_slice(&(len as u32).to_be_bytes());
    message.encode_raw(&mut buf);
    buf.freeze()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pb;
    use futures_free::decode_all;

    mod futures_free {
        use bytes::BytesMut;
        use tokio_util::codec::Decoder;

        /// Runs the codec over `input` as if it arrived in one read.
        pub fn decode_all(max: usize, input: &[u8]) -> Result<Vec<BytesMut>, std::io::Error> {
            let mut codec = super::codec(max);
            let mut buf = BytesMut::from(input);
            let mut out = Vec::new();
            while let Some(frame) = codec.decode(&mut buf)? {
                out.push(frame);
            }
            Ok(out)
        }
    }

    #[test]
    fn frame_round_trip() {
        let ack = pb::Ack { up_to_seq: 42 };
        let mut wire = encode_frame(&ack).to_vec();
        wire.extend_from_slice(&encode_frame(&pb::Ack { up_to_seq: 43 }));
        let frames = decode_all(MAX_UPLINK_FRAME, &wire).expect("valid frames decode");
        assert_eq!(frames.len(), 2);
        let first = pb::Ack::decode(&frames[0][..]).expect("ack decodes");
        assert_eq!(first.up_to_seq, 42);
    }

    #[test]
    fn oversized_frame_is_refused_before_allocation() {
        let mut wire = (MAX_LOCAL_FRAME as u32 + 1).to_be_bytes().to_vec();
        wire.extend_from_slice(&[0u8; 16]);
        let err = decode_all(MAX_LOCAL_FRAME, &wire).expect_err("oversized frame must fail");
        assert_eq!(err.kind(), std::io::ErrorKind::InvalidData);
    }

    #[test]
    fn encode_body_matches_frame_payload() {
        let ack = pb::Ack { up_to_seq: 7 };
        let frame = encode_frame(&ack);
        assert_eq!(&frame[4..], &encode_body(&ack)[..]);
        assert_eq!(
            u32::from_be_bytes([frame[0], frame[1], frame[2], frame[3]]) as usize,
            frame.len() - 4
        );
    }
}
