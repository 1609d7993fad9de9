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
    pending: Pending,
    total: u64,
    needs_flush: bool,
    state: State,
}

/// Where a direction stands (also the framed relay's).
#[derive(Default, PartialEq, Eq)]
pub(super) enum State {
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
    both_ways(a, b, &mut ab, &mut ba).await?;
    Ok((ab.total, ba.total))
}

/// One direction of a buffered relay, polled from source to destination until it is done.
pub(super) trait Direction {
    fn poll<R, W>(
        &mut self,
        cx: &mut Context<'_>,
        src: Pin<&mut R>,
        dst: Pin<&mut W>,
    ) -> Poll<io::Result<()>>
    where
        R: AsyncRead + ?Sized,
        W: AsyncWrite + ?Sized;
}

/// Runs `ab` (a → b) and `ba` (b → a) in one task until both are done; the first error ends
/// both.
pub(super) async fn both_ways<A, B>(
    a: &mut A,
    b: &mut B,
    ab: &mut impl Direction,
    ba: &mut impl Direction,
) -> io::Result<()>
where
    A: AsyncRead + AsyncWrite + Unpin + ?Sized,
    B: AsyncRead + AsyncWrite + Unpin + ?Sized,
{
    poll_fn(|cx| {
        let ab_done = ab
            .poll(cx, Pin::new(&mut *a), Pin::new(&mut *b))?
            .is_ready();
        let ba_done = ba
            .poll(cx, Pin::new(&mut *b), Pin::new(&mut *a))?
            .is_ready();
        if ab_done && ba_done {
            Poll::Ready(Ok(()))
        } else {
            Poll::Pending
        }
    })
    .await
}

impl Direction for OneWay {
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
            self.needs_flush |= ready!(self.pending.poll_write(cx, dst.as_mut()))?;
            match self.read_and_write(cx, src.as_mut(), dst.as_mut()) {
                Poll::Ready(Ok(true)) => {}
                Poll::Ready(Ok(false)) => self.state = State::ShuttingDown,
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Pending => {
                    // The source is dry: push out what the writer buffered.
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

impl OneWay {
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
            self.total += data.len() as u64;
            let written = write_now(cx, dst.as_mut(), data)?;
            self.needs_flush |= written > 0;
            self.pending.keep(&data[written..]);
            Poll::Ready(Ok(true))
        })
    }
}

/// Bytes a writer did not take at once, kept until it does (also the framed relay's).
#[derive(Default)]
pub(super) struct Pending {
    bytes: Vec<u8>,
    written: usize,
}

impl Pending {
    /// Writes what is kept; ready when nothing is left, with whether anything was written.
    /// The buffer is freed once written out: an idle direction holds none.
    pub(super) fn poll_write<W: AsyncWrite + ?Sized>(
        &mut self,
        cx: &mut Context<'_>,
        mut dst: Pin<&mut W>,
    ) -> Poll<io::Result<bool>> {
        let wrote = self.written < self.bytes.len();
        while self.written < self.bytes.len() {
            let n = ready!(dst.as_mut().poll_write(cx, &self.bytes[self.written..]))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.written += n;
        }
        self.bytes = Vec::new();
        self.written = 0;
        Poll::Ready(Ok(wrote))
    }

    /// Keeps `rest` (bytes the writer did not take).
    pub(super) fn keep(&mut self, rest: &[u8]) {
        self.bytes.extend_from_slice(rest);
    }
}

/// Writes as much of `data` as `dst` takes now; returns how much.
pub(super) fn write_now<W: AsyncWrite + ?Sized>(
    cx: &mut Context<'_>,
    mut dst: Pin<&mut W>,
    data: &[u8],
) -> io::Result<usize> {
    let mut offset = 0;
    while offset < data.len() {
        match dst.as_mut().poll_write(cx, &data[offset..]) {
            Poll::Ready(Ok(0)) => return Err(io::ErrorKind::WriteZero.into()),
            Poll::Ready(Ok(n)) => offset += n,
            Poll::Ready(Err(e)) => return Err(e),
            Poll::Pending => break,
        }
    }
    Ok(offset)
}
