//! Relay of a reusable stream: the carrier's bytes go in `burrow_proto::reuse` chunks, so that
//! when both directions have ended the data connection can carry another stream.
//!
//! Toward the carrier, each read from the socket (up to 64 KiB) leaves as one chunk, header and
//! bytes in one write (rustls cuts it into records and sends them with one system call), and
//! the socket's end leaves as the end chunk. From the
//! carrier, headers and bytes are read exactly, never past the end chunk, so what follows it
//! (the next stream's header) stays in the carrier. A peer's raw marker turns the rest of its
//! direction into a plain copy to the connection's end (this side never sends one: over TLS
//! the chunks cost no system call, and a copy gains nothing). Like the buffered relay, a
//! direction holds a buffer only while its destination pushes back.

use super::copy::{Direction, Pending, SCRATCH, State, both_ways, write_now};
use super::{cut_short, too_long};
use burrow_proto::reuse::{HEADER_LEN, MAX_LEN, Step, Unchunker, header};
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// Relays both ways until both directions have ended; returns the stream bytes moved (socket →
/// carrier, carrier → socket) and whether both ended with end chunks, when the carrier is at a
/// chunk boundary with nothing of the next stream read (else the peer went raw and closed its
/// side). The first error ends both, and the carrier must then be closed: it may be mid-chunk.
pub(crate) async fn relay<S, C>(socket: &mut S, carrier: &mut C) -> io::Result<(u64, u64, bool)>
where
    S: AsyncRead + AsyncWrite + Unpin + ?Sized,
    C: AsyncRead + AsyncWrite + Unpin + ?Sized,
{
    let (mut up, mut down) = (ToChunks::default(), FromChunks::default());
    both_ways(socket, carrier, &mut up, &mut down).await?;
    Ok((up.total, down.total, !down.raw))
}

/// Socket → carrier: each read becomes one chunk; the socket's end becomes the end chunk.
#[derive(Default)]
struct ToChunks {
    pending: Pending,
    /// Stream bytes read from the socket (headers not counted).
    total: u64,
    needs_flush: bool,
    /// `ShuttingDown`: the end chunk is written (or kept in `pending`) and goes out with a
    /// flush; the carrier itself stays open.
    state: State,
}

impl Direction for ToChunks {
    fn poll<R, W>(
        &mut self,
        cx: &mut Context<'_>,
        mut src: Pin<&mut R>,
        mut dst: Pin<&mut W>,
    ) -> Poll<io::Result<()>>
    where
        R: AsyncRead + ?Sized,
        W: AsyncWrite + ?Sized,
    {
        loop {
            if self.state == State::Done {
                return Poll::Ready(Ok(()));
            }
            self.needs_flush |= ready!(self.pending.poll_write(cx, dst.as_mut()))?;
            if self.state == State::ShuttingDown {
                ready!(dst.as_mut().poll_flush(cx))?;
                self.state = State::Done;
                continue;
            }
            let read = SCRATCH.with(|scratch| {
                let mut scratch = scratch.borrow_mut();
                let (head, body) = scratch.split_at_mut(HEADER_LEN);
                let mut buf = ReadBuf::new(&mut body[..MAX_LEN]);
                ready!(src.as_mut().poll_read(cx, &mut buf))?;
                let n = buf.filled().len();
                // 0 is the end chunk.
                head.copy_from_slice(&header(n).ok_or_else(too_long)?);
                let chunk = &scratch[..HEADER_LEN + n];
                let written = write_now(cx, dst.as_mut(), chunk)?;
                self.pending.keep(&chunk[written..]);
                self.needs_flush |= written > 0;
                Poll::Ready(Ok::<_, io::Error>(n))
            });
            match read {
                Poll::Ready(Ok(0)) => self.state = State::ShuttingDown,
                Poll::Ready(Ok(n)) => self.total += n as u64,
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Pending => {
                    // The socket is dry: push out what the carrier buffered.
                    if self.needs_flush {
                        ready!(dst.as_mut().poll_flush(cx))?;
                        self.needs_flush = false;
                    }
                    return Poll::Pending;
                }
            }
        }
    }
}

/// Carrier → socket: reads each header, then exactly its chunk's bytes; the end chunk shuts
/// the socket's write half.
#[derive(Default)]
struct FromChunks {
    pending: Pending,
    /// Stream bytes written to the socket.
    total: u64,
    chunks: Unchunker,
    /// The peer sent the raw marker: the rest is unframed, up to the connection's end.
    raw: bool,
    state: State,
}

impl Direction for FromChunks {
    fn poll<R, W>(
        &mut self,
        cx: &mut Context<'_>,
        mut src: Pin<&mut R>,
        mut dst: Pin<&mut W>,
    ) -> Poll<io::Result<()>>
    where
        R: AsyncRead + ?Sized,
        W: AsyncWrite + ?Sized,
    {
        loop {
            ready!(self.pending.poll_write(cx, dst.as_mut()))?;
            match self.state {
                State::Done => return Poll::Ready(Ok(())),
                State::ShuttingDown => {
                    ready!(dst.as_mut().poll_shutdown(cx))?;
                    self.state = State::Done;
                    continue;
                }
                State::Running => {}
            }
            if ready!(self.read_and_write(cx, src.as_mut(), dst.as_mut()))? {
                self.state = State::ShuttingDown;
            }
        }
    }
}

impl FromChunks {
    /// Reads no further than the current header or chunk (or raw bytes, as they come), and
    /// writes the stream bytes it brought as far as the socket takes them; `Ok(true)` at the
    /// direction's end (its end chunk, or the end of raw bytes).
    fn read_and_write<R, W>(
        &mut self,
        cx: &mut Context<'_>,
        src: Pin<&mut R>,
        mut dst: Pin<&mut W>,
    ) -> Poll<io::Result<bool>>
    where
        R: AsyncRead + ?Sized,
        W: AsyncWrite + ?Sized,
    {
        SCRATCH.with(|scratch| {
            let mut scratch = scratch.borrow_mut();
            let want = if self.raw {
                scratch.len()
            } else {
                self.chunks.exact(scratch.len())
            };
            let mut buf = ReadBuf::new(&mut scratch[..want]);
            ready!(src.poll_read(cx, &mut buf))?;
            let n = buf.filled().len();
            if n == 0 {
                return Poll::Ready(if self.raw { Ok(true) } else { Err(cut_short()) });
            }
            let (out, ended) = if self.raw {
                (n, false)
            } else {
                let (out, step) = (self.chunks.unchunk(&mut scratch[..n]))
                    .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
                self.raw = step == Step::Raw;
                (out, step == Step::End)
            };
            self.total += out as u64;
            let written = write_now(cx, dst.as_mut(), &scratch[..out])?;
            self.pending.keep(&scratch[written..out]);
            Poll::Ready(Ok(ended))
        })
    }
}
