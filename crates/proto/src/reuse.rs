//! The framing of a reusable stream ([`crate::msg::StreamKind::TcpReusable`]).
//!
//! A plain stream ends its data connection: half-close is the TCP (or TLS) connection's own
//! end, so the connection cannot carry anything after it. A reusable stream's bytes travel in
//! chunks instead, each way: a 2-byte big-endian length and that many bytes. A chunk of length
//! zero ends its direction, which is the stream's half-close. Once both directions have ended
//! this way, each side has read exactly up to the other's end chunk, and the connection is
//! ready for the next [`crate::msg::StreamOpen`]: the server puts it back in the session's pool
//! and the client waits for that frame on it, as on a new pooled connection. Anything else
//! (a reset, an error, a connection that closes between chunks) ends the stream and closes the
//! connection, as it does a plain stream's.
//!
//! ```text
//! | len: u16 BE | len bytes | len: u16 BE | len bytes | ... | 0x0000 |
//! ```

/// Length of a chunk's header.
pub const HEADER_LEN: usize = 2;

/// The largest chunk a sender makes: header and bytes fill one TLS record (16 KiB of
/// plaintext), so a chunk costs one record and no more. Receivers take any length up to
/// `u16::MAX`.
pub const MAX_CHUNK: usize = 16 * 1024 - HEADER_LEN;

/// The chunk that ends a direction.
pub const END: [u8; HEADER_LEN] = [0, 0];

/// The header of a chunk of `len` bytes; `None` above `u16::MAX` (a sender keeps to
/// [`MAX_CHUNK`]). A `len` of 0 is [`END`].
pub fn header(len: usize) -> Option<[u8; HEADER_LEN]> {
    u16::try_from(len).ok().map(u16::to_be_bytes)
}

/// The length a chunk header announces; 0 ends the direction.
pub fn chunk_len(header: [u8; HEADER_LEN]) -> usize {
    usize::from(u16::from_be_bytes(header))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_round_trip_and_zero_ends() {
        for len in [1, 255, 256, MAX_CHUNK, usize::from(u16::MAX)] {
            let h = header(len).expect("fits in two bytes");
            assert_eq!(chunk_len(h), len);
            assert_ne!(h, END);
        }
        assert_eq!(header(0), Some(END));
        assert_eq!(chunk_len(END), 0);
        assert_eq!(header(usize::from(u16::MAX) + 1), None);
        assert_eq!(header(300), Some([1, 44]), "big-endian");
    }

    #[test]
    fn the_new_stream_kind_leaves_the_older_ones_as_they_were() {
        use crate::msg::StreamKind;
        let encoded = |kind| postcard::to_allocvec(&kind).expect("encodes");
        assert_eq!(encoded(StreamKind::Tcp), [0]);
        assert_eq!(encoded(StreamKind::Datagrams), [1]);
        assert_eq!(encoded(StreamKind::TcpReusable), [2]);
    }

    #[test]
    fn a_sender_chunk_fills_one_tls_record() {
        assert_eq!(HEADER_LEN + MAX_CHUNK, 16_384);
    }
}
