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

/// Appends `bytes` to `out` as chunks of at most [`MAX_LEN`] bytes each, without an end chunk
/// (nothing for no bytes: an empty chunk would be one). For bytes a sender already holds when
/// the stream starts, sent with its header.
pub fn chunk_into(out: &mut Vec<u8>, bytes: &[u8]) {
    for piece in bytes.chunks(MAX_LEN) {
        // `chunks` yields at most MAX_LEN bytes: every piece has a header.
        if let Some(head) = header(piece.len()) {
            out.extend_from_slice(&head);
            out.extend_from_slice(piece);
        }
    }
}

/// Takes a direction's chunks apart as its bytes arrive, in whatever pieces they come: a
/// header may be split across reads, a chunk may span many.
#[derive(Debug, Default)]
pub struct Unchunker {
    /// The header being read, and how much of it has arrived.
    head: [u8; HEADER_LEN],
    head_read: usize,
    /// Bytes of the current chunk not read yet (0: a header comes next).
    left: usize,
}

/// Where a direction's chunks stand after a piece of it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// More chunks to come.
    More,
    /// The end chunk came, as the piece's last bytes.
    End,
    /// The raw marker came: the rest of the piece, and of the direction, is unframed.
    Raw,
}

/// Bytes followed an end chunk in one piece: a peer that sends past its end chunk before it
/// has read ours (see the module's rules).
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("bytes after a reusable stream's end chunk")]
pub struct AfterEnd;

impl Unchunker {
    /// The most a reader may take next without reading past the current header or chunk
    /// (never more than `cap`), for a reader that must leave what follows the end chunk unread.
    pub fn exact(&self, cap: usize) -> usize {
        if self.left == 0 {
            HEADER_LEN - self.head_read
        } else {
            self.left.min(cap)
        }
    }

    /// Takes the headers out of `piece` in place: the stream bytes it holds end up at its
    /// front. Returns their length and where the chunks stand after it; after [`Step::Raw`]
    /// the bytes past the marker are among them.
    pub fn unchunk(&mut self, piece: &mut [u8]) -> Result<(usize, Step), AfterEnd> {
        let (mut at, mut out) = (0, 0);
        while at < piece.len() {
            if self.left > 0 {
                let take = self.left.min(piece.len() - at);
                piece.copy_within(at..at + take, out);
                (at, out, self.left) = (at + take, out + take, self.left - take);
                continue;
            }
            self.head[self.head_read] = piece[at];
            (at, self.head_read) = (at + 1, self.head_read + 1);
            if self.head_read < HEADER_LEN {
                continue;
            }
            self.head_read = 0;
            match Header::parse(self.head) {
                Header::Chunk(len) => self.left = len,
                Header::End if at == piece.len() => return Ok((out, Step::End)),
                Header::End => return Err(AfterEnd),
                Header::Raw => {
                    let raw = piece.len() - at;
                    piece.copy_within(at.., out);
                    return Ok((out + raw, Step::Raw));
                }
            }
        }
        Ok((out, Step::More))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunks_split_anywhere_across_reads_come_out_whole() {
        // Two chunks, then the end chunk.
        let wire = [&[0u8, 3][..], b"abc", &[1, 0], &[7; 256], &[0, 0]].concat();
        let stream = [&b"abc"[..], &[7; 256]].concat();
        for first in 0..wire.len() {
            for second in first..wire.len() {
                let mut unchunker = Unchunker::default();
                let mut out = Vec::new();
                let mut ended = false;
                for piece in [&wire[..first], &wire[first..second], &wire[second..]] {
                    let mut buf = piece.to_vec();
                    assert!(!ended, "bytes after the end");
                    let (n, step) = unchunker.unchunk(&mut buf).unwrap();
                    out.extend_from_slice(&buf[..n]);
                    ended = step == Step::End;
                }
                assert!(ended, "split at {first} and {second}");
                assert!(out == stream, "split at {first} and {second}");
            }
        }
    }

    #[test]
    fn exact_reads_stop_at_each_header_and_chunk() {
        let mut unchunker = Unchunker::default();
        assert_eq!(unchunker.exact(100), 2, "a header first");
        let mut piece = [0u8];
        assert_eq!(unchunker.unchunk(&mut piece), Ok((0, Step::More)));
        assert_eq!(unchunker.exact(100), 1, "the header's second byte");
        let mut piece = [200u8];
        assert_eq!(unchunker.unchunk(&mut piece), Ok((0, Step::More)));
        assert_eq!(unchunker.exact(100), 100, "capped");
        assert_eq!(unchunker.exact(1_000), 200, "the chunk, no further");
        let mut piece = [1u8; 200];
        assert_eq!(unchunker.unchunk(&mut piece), Ok((200, Step::More)));
        assert_eq!(unchunker.exact(1_000), 2, "the next header");
    }

    #[test]
    fn the_raw_marker_and_bytes_after_an_end_chunk() {
        let mut piece = [0u8, 1, b'a', 0xff, 0xff, b'r', b'a', b'w'];
        let (n, step) = Unchunker::default().unchunk(&mut piece).unwrap();
        assert_eq!((&piece[..n], step), (&b"araw"[..], Step::Raw));
        let mut piece = [0u8, 0, b'N'];
        assert_eq!(Unchunker::default().unchunk(&mut piece), Err(AfterEnd));
    }

    #[test]
    fn bytes_chunked_ahead_come_out_whole() {
        for len in [0, 1, 300, MAX_LEN, MAX_LEN + 1, 2 * MAX_LEN + 7] {
            let bytes: Vec<u8> = (0..len).map(|i| (i % 251) as u8).collect();
            let mut wire = Vec::new();
            chunk_into(&mut wire, &bytes);
            assert_eq!(
                wire.len(),
                len + HEADER_LEN * len.div_ceil(MAX_LEN),
                "{len}"
            );
            wire.extend_from_slice(&END);
            let (n, step) = Unchunker::default().unchunk(&mut wire).unwrap();
            assert_eq!(step, Step::End, "{len}");
            assert!(wire[..n] == bytes[..], "{len}");
        }
    }

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
