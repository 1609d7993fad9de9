//! Datagram frames: how UDP flows travel over a TCP-based carrier.
//!
//! A UDP tunnel gets its own data connection (a stream of kind
//! [`crate::msg::StreamKind::Datagrams`]), so datagrams never wait behind TCP streams. On it,
//! each datagram is one frame: a 4-byte big-endian length (of what follows), a 4-byte flow id,
//! then the payload. A datagram arrives whole or not at all: never truncated, never merged, and a
//! zero-length datagram stays one (a frame of length 4).

/// Largest UDP payload over IPv4 (65,535 − 8 UDP header − 20 IP header).
pub const MAX_DATAGRAM: usize = 65_507;
/// Bytes before the payload: length and flow id.
pub const DATAGRAM_HEADER: usize = 8;

/// Why a datagram frame was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DatagramError {
    /// The frame announces more than a flow id and the largest datagram.
    #[error("datagram frame of {0} bytes exceeds the {limit} byte limit", limit = MAX_DATAGRAM + 4)]
    TooLarge(usize),
    /// The frame is too short to hold a flow id.
    #[error("datagram frame of {0} bytes is shorter than its flow id")]
    TooShort(usize),
}

/// Appends one datagram frame to `out`. The caller never passes more than [`MAX_DATAGRAM`]
/// bytes (a UDP socket cannot deliver more); a larger payload is refused.
pub fn encode(flow: u32, payload: &[u8], out: &mut Vec<u8>) -> Result<(), DatagramError> {
    if payload.len() > MAX_DATAGRAM {
        return Err(DatagramError::TooLarge(payload.len() + 4));
    }
    // Fits in u32: at most MAX_DATAGRAM + 4.
    let len = (payload.len() + 4) as u32;
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(&flow.to_be_bytes());
    out.extend_from_slice(payload);
    Ok(())
}

/// Reads the length field and returns how many bytes follow it (flow id and payload).
pub fn body_len(header: [u8; 4]) -> Result<usize, DatagramError> {
    let len = u32::from_be_bytes(header) as usize;
    if len > MAX_DATAGRAM + 4 {
        return Err(DatagramError::TooLarge(len));
    }
    if len < 4 {
        return Err(DatagramError::TooShort(len));
    }
    Ok(len)
}

/// Splits a frame body (what follows the length) into flow id and payload.
pub fn split_body(body: &[u8]) -> Result<(u32, &[u8]), DatagramError> {
    let Some((flow, payload)) = body.split_first_chunk::<4>() else {
        return Err(DatagramError::TooShort(body.len()));
    };
    Ok((u32::from_be_bytes(*flow), payload))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn round_trip(flow: u32, payload: &[u8]) {
        let mut frame = Vec::new();
        encode(flow, payload, &mut frame).unwrap();
        let len = body_len(frame[..4].try_into().unwrap()).unwrap();
        assert_eq!(len, frame.len() - 4);
        assert_eq!(split_body(&frame[4..]).unwrap(), (flow, payload));
    }

    #[test]
    fn sizes_from_empty_to_the_largest_survive() {
        for len in [0, 1, 1400, 9000, MAX_DATAGRAM] {
            round_trip(7, &vec![0xab; len]);
        }
    }

    #[test]
    fn oversized_and_short_frames_are_refused() {
        assert!(encode(1, &vec![0; MAX_DATAGRAM + 1], &mut Vec::new()).is_err());
        assert_eq!(
            body_len(u32::MAX.to_be_bytes()),
            Err(DatagramError::TooLarge(u32::MAX as usize))
        );
        assert_eq!(
            body_len(3u32.to_be_bytes()),
            Err(DatagramError::TooShort(3))
        );
        assert!(split_body(&[1, 2]).is_err());
    }

    proptest! {
        #[test]
        fn any_datagram_round_trips(flow in any::<u32>(), payload in proptest::collection::vec(any::<u8>(), 0..2048)) {
            round_trip(flow, &payload);
        }
    }
}
