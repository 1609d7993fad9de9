//! Length-prefixed frames: a 4-byte big-endian payload length, then a postcard payload.
//!
//! The length is checked against [`MAX_FRAME_LEN`] before any allocation, so a peer cannot make
//! a reader reserve more than that. Reading and writing live in the `net` layer; this module only
//! turns messages into bytes and back.

use serde::{Serialize, de::DeserializeOwned};

/// Largest payload a frame may carry. Control messages are far smaller; the headroom leaves room
/// for a whole 65,507-byte UDP datagram with its header.
pub const MAX_FRAME_LEN: usize = 128 * 1024;

/// Length of the frame header.
pub const HEADER_LEN: usize = 4;

/// Why a frame could not be encoded or decoded.
#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    /// The announced or produced payload exceeds [`MAX_FRAME_LEN`].
    #[error("frame of {0} bytes exceeds the {MAX_FRAME_LEN}-byte limit")]
    TooLarge(usize),
    /// The payload is not a valid message of the expected type.
    #[error("malformed message: {0}")]
    Malformed(#[from] postcard::Error),
}

/// What [`encode_frame`] allocates at first: every handshake and stream message fits.
const ENCODE_CAPACITY: usize = 128;

/// Encodes `msg` as one complete frame (header and payload).
pub fn encode_frame<T: Serialize>(msg: &T) -> Result<Vec<u8>, FrameError> {
    // Room for the usual message up front: postcard extends byte by byte, and growing from the
    // header's four bytes took four reallocations for a 60-byte message.
    let mut out = Vec::with_capacity(ENCODE_CAPACITY);
    out.extend_from_slice(&[0u8; HEADER_LEN]);
    let mut out = postcard::to_extend(msg, out)?;
    let len = out.len() - HEADER_LEN;
    if len > MAX_FRAME_LEN {
        return Err(FrameError::TooLarge(len));
    }
    // `len` fits in u32: it is at most MAX_FRAME_LEN.
    out[..HEADER_LEN].copy_from_slice(&(len as u32).to_be_bytes());
    Ok(out)
}

/// Reads the payload length from a frame header, rejecting oversized frames.
pub fn payload_len(header: [u8; HEADER_LEN]) -> Result<usize, FrameError> {
    let len = u32::from_be_bytes(header) as usize;
    if len > MAX_FRAME_LEN {
        return Err(FrameError::TooLarge(len));
    }
    Ok(len)
}

/// Decodes a payload; trailing bytes are an error, so every byte of a frame is accounted for.
pub fn decode_payload<T: DeserializeOwned>(payload: &[u8]) -> Result<T, FrameError> {
    let (msg, rest) = postcard::take_from_bytes(payload)?;
    if !rest.is_empty() {
        return Err(FrameError::Malformed(
            postcard::Error::DeserializeUnexpectedEnd,
        ));
    }
    Ok(msg)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::msg::{ClientMsg, ServerMsg, TunnelKind, TunnelRequest};
    use proptest::prelude::*;

    fn round_trip<T: Serialize + DeserializeOwned + PartialEq + std::fmt::Debug>(msg: T) {
        let frame = encode_frame(&msg).unwrap();
        let len = payload_len(frame[..4].try_into().unwrap()).unwrap();
        assert_eq!(len, frame.len() - 4);
        assert_eq!(decode_payload::<T>(&frame[4..]).unwrap(), msg);
    }

    #[test]
    fn messages_round_trip() {
        round_trip(ClientMsg::Ping { seq: 9 });
        round_trip(ClientMsg::OpenTunnel(TunnelRequest {
            id: 3,
            name: "web".into(),
            kind: TunnelKind::Tcp,
            remote_port: Some(8080),
            target: "127.0.0.1:8080".into(),
        }));
        round_trip(ServerMsg::TunnelOpened { id: 3, port: 8080 });
    }

    #[test]
    fn rejects_oversized_header() {
        assert!(matches!(
            payload_len(u32::MAX.to_be_bytes()),
            Err(FrameError::TooLarge(_))
        ));
        let ok = (MAX_FRAME_LEN as u32).to_be_bytes();
        assert_eq!(payload_len(ok).unwrap(), MAX_FRAME_LEN);
    }

    #[test]
    fn rejects_oversized_message() {
        let big = ClientMsg::OpenTunnel(TunnelRequest {
            id: 1,
            name: "x".repeat(MAX_FRAME_LEN + 1),
            kind: TunnelKind::Tcp,
            remote_port: None,
            target: "127.0.0.1:8080".into(),
        });
        assert!(matches!(encode_frame(&big), Err(FrameError::TooLarge(_))));
    }

    #[test]
    fn rejects_trailing_bytes_and_garbage() {
        let mut frame = encode_frame(&ClientMsg::Ping { seq: 1 }).unwrap();
        frame.push(0);
        assert!(decode_payload::<ClientMsg>(&frame[4..]).is_err());
        assert!(decode_payload::<ServerMsg>(&[0xff, 0xff, 0xff]).is_err());
        assert!(decode_payload::<ServerMsg>(&[]).is_err());
    }

    proptest! {
        #[test]
        fn decoding_arbitrary_bytes_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            let _ = decode_payload::<ClientMsg>(&bytes);
            let _ = decode_payload::<ServerMsg>(&bytes);
            let _ = decode_payload::<crate::msg::Hello>(&bytes);
            let _ = decode_payload::<crate::msg::StreamOpen>(&bytes);
        }

        #[test]
        fn ping_round_trips(seq in any::<u64>()) {
            round_trip(ClientMsg::Ping { seq });
            round_trip(ServerMsg::Pong { seq });
        }
    }
}
