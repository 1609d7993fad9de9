//! Datagram frames: how UDP flows travel over a TCP-based carrier.
//!
//! A UDP tunnel gets its own data connection (a stream of kind
//! [`crate::msg::StreamKind::Datagrams`]), so datagrams never wait behind TCP streams. On it,
//! each datagram is one frame: a 4-byte big-endian length (of what follows), a 4-byte flow id,
//! then the payload. A datagram arrives whole or not at all: never truncated, never merged, and a
//! zero-length datagram stays one (a frame of length 4).
//!
//! Over the QUIC carrier, a datagram that fits one packet may instead ride a QUIC DATAGRAM
//! frame (unreliable, unordered, never behind stream data). Such a frame starts with a
//! [`QuicHeader`]: the datagram stream's id (the `stream` of its
//! [`StreamOpen`](crate::msg::StreamOpen)) and the flow id, each a QUIC variable-length integer
//! (RFC 9000 §16), so the receiver can route it to its tunnel; the payload is the rest of the
//! frame. The datagram stream stays open as the tunnel's anchor and still carries what is too
//! large for a packet.

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
    /// A QUIC datagram ends inside its header.
    #[error("QUIC datagram of {0} bytes ends inside its header")]
    Truncated(usize),
    /// A QUIC datagram's flow id does not fit 32 bits.
    #[error("QUIC datagram names flow {0}, beyond 32 bits")]
    BadFlow(u64),
    /// A stream id too large for a QUIC variable-length integer (2^62 and above).
    #[error("stream id {0} does not fit a QUIC variable-length integer")]
    BadStream(u64),
}

/// The flow id of the frame a client writes on a UDP tunnel's datagram stream, once, with no
/// payload, to say it routes QUIC datagrams of that stream: from then on the server may send
/// the tunnel's datagrams as QUIC datagrams (before, they would be dropped as unknown). The
/// server never gives a flow this id.
pub const QUIC_READY_FLOW: u32 = 0;

/// The header of a UDP datagram carried in a QUIC DATAGRAM frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QuicHeader {
    /// The datagram stream (tunnel) it belongs to: the `stream` of its `StreamOpen`.
    pub stream: u64,
    /// The flow within that tunnel.
    pub flow: u32,
}

/// Largest value of a QUIC variable-length integer.
const VARINT_MAX: u64 = (1 << 62) - 1;

impl QuicHeader {
    /// Largest encoded header: an 8-byte and a 4-or-8-byte integer.
    pub const MAX_LEN: usize = 16;

    /// The header's encoded length.
    pub fn encoded_len(&self) -> usize {
        varint_len(self.stream) + varint_len(u64::from(self.flow))
    }

    /// Appends the header to `out`; refuses a stream id of 2^62 or more.
    pub fn encode(&self, out: &mut Vec<u8>) -> Result<(), DatagramError> {
        if self.stream > VARINT_MAX {
            return Err(DatagramError::BadStream(self.stream));
        }
        put_varint(self.stream, out);
        put_varint(u64::from(self.flow), out);
        Ok(())
    }

    /// Reads the header at the start of a QUIC datagram; returns it and its length (the
    /// payload follows). Truncated or out-of-range input is refused.
    pub fn decode(datagram: &[u8]) -> Result<(Self, usize), DatagramError> {
        let truncated = || DatagramError::Truncated(datagram.len());
        let (stream, a) = get_varint(datagram).ok_or_else(truncated)?;
        let (flow, b) = get_varint(&datagram[a..]).ok_or_else(truncated)?;
        let flow = u32::try_from(flow).map_err(|_| DatagramError::BadFlow(flow))?;
        Ok((Self { stream, flow }, a + b))
    }
}

fn varint_len(v: u64) -> usize {
    match v {
        0..0x40 => 1,
        0x40..0x4000 => 2,
        0x4000..0x4000_0000 => 4,
        _ => 8,
    }
}

/// Writes `v` (at most [`VARINT_MAX`]) as a QUIC variable-length integer: the top two bits of
/// the first byte give the length (1, 2, 4 or 8 bytes), big-endian.
fn put_varint(v: u64, out: &mut Vec<u8>) {
    match varint_len(v) {
        1 => out.push(v as u8),
        2 => out.extend_from_slice(&(0x4000 | v as u16).to_be_bytes()),
        4 => out.extend_from_slice(&(0x8000_0000 | v as u32).to_be_bytes()),
        _ => out.extend_from_slice(&(0xc000_0000_0000_0000 | v).to_be_bytes()),
    }
}

/// Reads a QUIC variable-length integer; `None` when `buf` ends inside it.
fn get_varint(buf: &[u8]) -> Option<(u64, usize)> {
    let first = *buf.first()?;
    let len = 1usize << (first >> 6);
    let bytes = buf.get(..len)?;
    let mut v = u64::from(first & 0x3f);
    for &b in &bytes[1..] {
        v = (v << 8) | u64::from(b);
    }
    Some((v, len))
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

    fn quic_round_trip(stream: u64, flow: u32, payload: &[u8]) {
        let header = QuicHeader { stream, flow };
        let mut datagram = Vec::new();
        header.encode(&mut datagram).unwrap();
        assert_eq!(datagram.len(), header.encoded_len());
        assert!(header.encoded_len() <= QuicHeader::MAX_LEN);
        datagram.extend_from_slice(payload);
        let (got, len) = QuicHeader::decode(&datagram).unwrap();
        assert_eq!((got, &datagram[len..]), (header, payload));
    }

    #[test]
    fn quic_headers_round_trip_at_every_varint_length() {
        let values = [0, 1, 0x3f, 0x40, 0x3fff, 0x4000, 0x3fff_ffff, 0x4000_0000];
        for stream in values.into_iter().chain([u32::MAX as u64, VARINT_MAX]) {
            for flow in values.into_iter().chain([u32::MAX as u64]) {
                quic_round_trip(stream, flow as u32, b"payload");
                quic_round_trip(stream, flow as u32, b"");
            }
        }
        // The usual case costs two bytes: a young server's stream id and a low flow id.
        assert_eq!(QuicHeader { stream: 7, flow: 3 }.encoded_len(), 2);
    }

    #[test]
    fn quic_headers_truncated_or_out_of_range_are_refused() {
        assert!(
            (QuicHeader {
                stream: VARINT_MAX + 1,
                flow: 1
            })
            .encode(&mut Vec::new())
            .is_err()
        );
        let mut datagram = Vec::new();
        (QuicHeader {
            stream: 1 << 40,
            flow: 1 << 20,
        })
        .encode(&mut datagram)
        .unwrap();
        // Every cut inside the header is refused, the empty datagram included.
        for cut in 0..datagram.len() {
            assert_eq!(
                QuicHeader::decode(&datagram[..cut]),
                Err(DatagramError::Truncated(cut))
            );
        }
        // A flow id beyond 32 bits (an 8-byte varint of 2^32).
        let mut wide = vec![0x05];
        put_varint(1 << 32, &mut wide);
        assert_eq!(
            QuicHeader::decode(&wide),
            Err(DatagramError::BadFlow(1 << 32))
        );
    }

    proptest! {
        #[test]
        fn any_quic_datagram_round_trips(stream in 0..=VARINT_MAX, flow in any::<u32>(), payload in proptest::collection::vec(any::<u8>(), 0..64)) {
            quic_round_trip(stream, flow, &payload);
        }

        #[test]
        fn garbage_never_panics_the_quic_decoder(garbage in proptest::collection::vec(any::<u8>(), 0..20)) {
            // Whatever decodes names a header that encodes (minimally, so perhaps shorter) and
            // decodes back to itself.
            if let Ok((header, len)) = QuicHeader::decode(&garbage) {
                prop_assert!(header.encoded_len() <= len && len <= garbage.len());
                let mut again = Vec::new();
                header.encode(&mut again).unwrap();
                prop_assert_eq!(QuicHeader::decode(&again), Ok((header, header.encoded_len())));
            }
        }

        #[test]
        fn any_datagram_round_trips(flow in any::<u32>(), payload in proptest::collection::vec(any::<u8>(), 0..2048)) {
            round_trip(flow, &payload);
        }
    }
}
