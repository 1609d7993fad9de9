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
//! The client then sends one more end chunk, the *release*, once its side of the stream is
//! over (its target has taken every byte and been shut down), and the server puts the
//! connection back in the pool only when it has read it: a client still busy with a stream's
//! last bytes never finds the next stream's header waiting, and a client that gives up on the
//! connection (its target refused those bytes) closes it before any visitor can take it.
//!
//! A sender may instead give up reuse for its direction with the raw marker: everything after
//! it, up to the connection's end (TCP's FIN), is the stream's bytes, unframed. A plain TCP
//! carrier does so at the first read that fills a chunk, so bulk transfers keep its zero-copy
//! relay; the connection then closes after the stream, as a plain stream's does.
//!
//! ```text
//! | len: u16 BE | len bytes | len: u16 BE | len bytes | ... | 0x0000 |      each direction
//! | len: u16 BE | len bytes | ... | 0xFFFF | raw bytes ... (FIN)      or, giving up reuse
//! | 0x0000 |                                                           client → server: release
//! ```

/// Length of a chunk's header.
pub const HEADER_LEN: usize = 2;

/// The largest length a header can announce (the one above it is [`RAW`]). A sender picks its
/// chunks' sizes (one read's worth, typically); a receiver takes any length up to this.
pub const MAX_LEN: usize = u16::MAX as usize - 1;

/// The chunk that ends a direction.
pub const END: [u8; HEADER_LEN] = [0, 0];

/// The client's release of a connection whose stream has ended on its side (see above): an
/// end chunk after the end chunks.
pub const RELEASE: [u8; HEADER_LEN] = END;

/// The marker after which a direction's bytes are raw, up to the connection's end.
pub const RAW: [u8; HEADER_LEN] = [0xff, 0xff];

/// What a header announces.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Header {
    /// A chunk of this many bytes (at least 1).
    Chunk(usize),
    /// The end of the direction.
    End,
    /// Raw bytes up to the connection's end.
    Raw,
}

impl Header {
    /// Reads a header.
    pub fn parse(bytes: [u8; HEADER_LEN]) -> Header {
        match bytes {
            END => Header::End,
            RAW => Header::Raw,
            _ => Header::Chunk(usize::from(u16::from_be_bytes(bytes))),
        }
    }
}

/// The header of a chunk of `len` bytes; `None` above [`MAX_LEN`]. A `len` of 0 is [`END`].
pub fn header(len: usize) -> Option<[u8; HEADER_LEN]> {
    if len > MAX_LEN {
        return None;
    }
    u16::try_from(len).ok().map(u16::to_be_bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_round_trip_and_the_two_markers_stand_apart() {
        for len in [1, 255, 256, 16_382, MAX_LEN] {
            let h = header(len).expect("fits in two bytes");
            assert_eq!(Header::parse(h), Header::Chunk(len));
        }
        assert_eq!(header(0), Some(END));
        assert_eq!(Header::parse(END), Header::End);
        assert_eq!(Header::parse(RAW), Header::Raw);
        assert_eq!(header(MAX_LEN + 1), None, "that would be the raw marker");
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
}
