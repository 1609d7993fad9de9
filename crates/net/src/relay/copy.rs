//! Buffered relay for carriers the kernel cannot splice (TLS, in-memory pipes).
//!
//! Reads go into one 64 KiB scratch buffer per worker thread; whatever the destination takes at
//! once is written straight from there. Only bytes the destination cannot take yet are copied
//! into a buffer owned by the direction, and that buffer is freed as soon as the source runs dry.
//! So an idle connection holds no relay buffer at all, where a plain `copy_bidirectional` keeps
//! two buffers allocated for the connection's whole life.

use std::cell::RefCell;
use std::future::poll_fn;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// Size of a read: one read may carry several TLS records' worth of plaintext.
const SCRATCH_LEN: usize = 64 * 1024;

thread_local! {
    /// Where reads land; written on before the next await (the framed relay shares it).
    pub(super) static SCRATCH: RefCell<Box<[u8]>> = RefCell::new(vec![0; SCRATCH_LEN].into_boxed_slice());
}

/// One direction's progress.
#[derive(Default)]
struct OneWay {
    /// Bytes read but not yet written (empty, and unallocated, unless the writer pushed back).
    pending: Vec<u8>,
    written: usize,
    total: u64,
    needs_flush: bool,
    state: State,
}

#[derive(Default, PartialEq, Eq)]
enum State {
    #[default]
    Running,
    ShuttingDown,
    Done,
}

/// Relays both ways until both directions finish, carrying half-close; returns bytes moved
/// (a → b, b → a). The first error ends both.
pub(crate) async fn relay<A, B>(a: &mut A, b: &mut B) -> io::Result<(u64, u64)>
where
    A: AsyncRead + AsyncWrite + Unpin + ?Sized,
    B: AsyncRead + AsyncWrite + Unpin + ?Sized,
{
    let (mut ab, mut ba) = (OneWay::default(), OneWay::default());
    poll_fn(|cx| {
        let ab_done = ab
            .poll(cx, Pin::new(&mut *a), Pin::new(&mut *b))?
            .is_ready();
        let ba_done = ba
            .poll(cx, Pin::new(&mut *b), Pin::new(&mut *a))?
            .is_ready();
        if ab_done && ba_done {
            Poll::Ready(Ok((ab.total, ba.total)))
        } else {
            Poll::Pending
        }
    })
    .await
}

impl OneWay {
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
            match self.state {
                State::Done => return Poll::Ready(Ok(())),
                State::ShuttingDown => {
                    ready!(dst.as_mut().poll_shutdown(cx))?;
                    self.state = State::Done;
                    continue;
                }
                State::Running => {}
            }
            ready!(self.write_pending(cx, dst.as_mut()))?;
            match self.read_and_write(cx, src.as_mut(), dst.as_mut()) {
                Poll::Ready(Ok(true)) => {}
                Poll::Ready(Ok(false)) => self.state = State::ShuttingDown,
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Pending => {
                    // The source is dry: push out what the writer buffered, drop our buffer.
                    if self.needs_flush {
                        ready!(dst.as_mut().poll_flush(cx))?;
                        self.needs_flush = false;
                    }
                    self.pending = Vec::new();
                    return Poll::Pending;
                }
            }
        }
    }

    /// Writes bytes left over from an earlier read.
    fn write_pending<W: AsyncWrite + ?Sized>(
        &mut self,
        cx: &mut Context<'_>,
        mut dst: Pin<&mut W>,
    ) -> Poll<io::Result<()>> {
        while self.written < self.pending.len() {
            let n = ready!(dst.as_mut().poll_write(cx, &self.pending[self.written..]))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.written += n;
            self.total += n as u64;
            self.needs_flush = true;
        }
        self.pending.clear();
        self.written = 0;
        Poll::Ready(Ok(()))
    }

    /// Reads once into the scratch buffer and writes as much as the destination takes; keeps the
    /// rest. `Ok(false)` means the source ended.
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
            let mut buf = ReadBuf::new(&mut scratch[..]);
            ready!(src.poll_read(cx, &mut buf))?;
            let data = buf.filled();
            if data.is_empty() {
                return Poll::Ready(Ok(false));
            }
            let mut offset = 0;
            while offset < data.len() {
                match dst.as_mut().poll_write(cx, &data[offset..]) {
                    Poll::Ready(Ok(0)) => return Poll::Ready(Err(io::ErrorKind::WriteZero.into())),
                    Poll::Ready(Ok(n)) => offset += n,
                    Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                    Poll::Pending => break,
                }
            }
            self.total += offset as u64;
            self.needs_flush |= offset > 0;
            self.pending.extend_from_slice(&data[offset..]);
            Poll::Ready(Ok(true))
        })
    }
}
