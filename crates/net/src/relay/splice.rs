//! Zero-copy relay between two TCP sockets with `splice(2)` through a pipe, on Linux.
//!
//! Bytes move socket → pipe → socket inside the kernel and never reach user space. A direction
//! borrows a pipe from a small process-wide pool only while it has bytes in flight, and returns
//! it (empty) when its source has nothing more to read for now, so an idle connection holds no
//! pipe and no buffer: its whole cost is the kernel's socket state and one small task.
//!
//! Everything here goes through rustix's safe wrappers; burrow has no `unsafe` code.

use super::{cut_short, too_long};
use burrow_proto::reuse::{END, HEADER_LEN, RAW, Step, Unchunker, header};
use rustix::pipe::{PipeFlags, SpliceFlags, fcntl_setpipe_size, pipe_with, splice};
use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use tokio::io::Interest;
use tokio::net::TcpStream;

/// Pipe capacity. Larger pipes mean fewer system calls on bulk transfers; 256 KiB is where the
/// gain flattens out on loopback and stays well below the default `pipe-max-size` (1 MiB).
const PIPE_SIZE: usize = 256 * 1024;
/// Empty pipes kept for reuse; beyond this they are closed.
const POOL_CAP: usize = 256;
/// Size of a direction's first read of each burst (see [`one_way`]).
const COPY_FIRST: usize = 16 * 1024;
/// The bytes of a reusable stream's chunk that fill the same buffer, after its header: a read
/// that fills it marks bulk, which then goes raw.
const CHUNK: usize = COPY_FIRST - HEADER_LEN;

thread_local! {
    /// Where a burst's first read lands; it is written on before the next await.
    static SCRATCH: std::cell::RefCell<Box<[u8]>> = std::cell::RefCell::new(vec![0; COPY_FIRST].into_boxed_slice());
}

/// A pipe's two ends.
struct Pipe {
    read: OwnedFd,
    write: OwnedFd,
}

/// Empty pipes ready for reuse: creating one costs three system calls.
static POOL: Mutex<Vec<Pipe>> = Mutex::new(Vec::new());

impl Pipe {
    /// Takes a pipe from the pool or makes a new one.
    fn take() -> io::Result<Pipe> {
        if let Some(pipe) = POOL.lock().unwrap_or_else(|p| p.into_inner()).pop() {
            return Ok(pipe);
        }
        let (read, write) = pipe_with(PipeFlags::CLOEXEC | PipeFlags::NONBLOCK)?;
        // A smaller pipe still works, just with more system calls: ignore a refusal.
        let _ = fcntl_setpipe_size(&write, PIPE_SIZE);
        Ok(Pipe { read, write })
    }

    /// Returns an empty pipe to the pool.
    fn give_back(self) {
        let mut pool = POOL.lock().unwrap_or_else(|p| p.into_inner());
        if pool.len() < POOL_CAP {
            pool.push(self);
        }
    }
}

/// Relays both ways until both directions finish, carrying half-close; returns bytes moved
/// (a → b, b → a). An error in either direction ends both (the caller closes the sockets).
pub(crate) async fn relay(a: &TcpStream, b: &TcpStream) -> io::Result<(u64, u64)> {
    tokio::try_join!(one_way(a, b), one_way(b, a))
}

/// Moves bytes from `src` to `dst` until `src` ends, then shuts down `dst`'s write half.
///
/// Each burst is first read into a small per-thread buffer and written on at once: for requests,
/// responses and interactive traffic, one read and one write cost less than two splices and a
/// pipe taken from and returned to the pool. A read that fills the buffer marks bulk data, and the
/// direction switches to splice until the source runs dry.
async fn one_way(src: &TcpStream, dst: &TcpStream) -> io::Result<u64> {
    let mut total = 0u64;
    let mut pipe: Option<Pipe> = None;
    loop {
        src.readable().await?;
        let Some(p) = pipe.take() else {
            match copy_burst(src, dst, false).await {
                Ok(0) => {
                    shutdown_write(dst);
                    return Ok(total);
                }
                Ok(n) => {
                    total += n as u64;
                    if n == COPY_FIRST {
                        pipe = Some(Pipe::take()?);
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => return Err(e),
            }
            continue;
        };
        let flags = SpliceFlags::NONBLOCK | SpliceFlags::MOVE;
        let filled = src.try_io(Interest::READABLE, || {
            splice(src.as_fd(), None, &p.write, None, PIPE_SIZE, flags).map_err(io::Error::from)
        });
        match filled {
            Ok(0) => {
                p.give_back();
                shutdown_write(dst);
                return Ok(total);
            }
            Ok(n) => {
                drain(&p, dst, n).await?;
                total += n as u64;
                // Keep the pipe while data flows; the next empty read returns it.
                pipe = Some(p);
            }
            // The source ran dry: an idle direction holds no pipe, and the next burst starts
            // with a copy again.
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => p.give_back(),
            // The pipe is dropped (closed) rather than pooled: it may hold bytes.
            Err(e) => return Err(e),
        }
    }
}

/// Reads one burst into the thread's scratch buffer and writes it to `dst`, as one chunk with
/// its header when `chunked` (a reusable stream's); returns its length (0 at end of stream,
/// when nothing is written). Only bytes `dst` cannot take at once are copied to the heap.
async fn copy_burst(src: &TcpStream, dst: &TcpStream, chunked: bool) -> io::Result<usize> {
    let mut rest = Vec::new();
    let n = SCRATCH.with(|scratch| -> io::Result<usize> {
        let mut scratch = scratch.borrow_mut();
        let start = if chunked { HEADER_LEN } else { 0 };
        let n = read_once(src, &mut scratch[start..])?;
        if chunked && n > 0 {
            scratch[..HEADER_LEN].copy_from_slice(&header(n).ok_or_else(too_long)?);
        }
        let burst = if n > 0 {
            &scratch[..start + n]
        } else {
            &[][..]
        };
        let written = write_now(dst, burst)?;
        rest.extend_from_slice(&burst[written..]);
        Ok(n)
    })?;
    write_all(dst, &rest).await?;
    Ok(n)
}

/// One read from `src`, without waiting. A read that fills less than `buf` drained the socket,
/// so tokio is told it would block now: it then waits for the next readiness event instead of
/// spending a read on learning so (tokio's own `poll_read` does the same). Readiness that
/// arrived meanwhile is not lost, because tokio clears only the event this read saw.
fn read_once(src: &TcpStream, buf: &mut [u8]) -> io::Result<usize> {
    let mut drained = None;
    let read = src.try_io(Interest::READABLE, || {
        let n = rustix::io::read(src, &mut *buf).map_err(io::Error::from)?;
        if n > 0 && n < buf.len() {
            drained = Some(n);
            return Err(io::ErrorKind::WouldBlock.into());
        }
        Ok(n)
    });
    match drained {
        Some(n) => Ok(n),
        None => read,
    }
}

/// Writes `len` bytes from the pipe to `dst`, waiting for `dst` to take them.
async fn drain(pipe: &Pipe, dst: &TcpStream, mut len: usize) -> io::Result<()> {
    while len > 0 {
        dst.writable().await?;
        let flags = SpliceFlags::NONBLOCK | SpliceFlags::MOVE;
        let moved = dst.try_io(Interest::WRITABLE, || {
            splice(&pipe.read, None, dst.as_fd(), None, len, flags).map_err(io::Error::from)
        });
        match moved {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => len -= n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Sends FIN on `dst`: the peer sees end of stream, the other direction goes on.
fn shutdown_write(dst: &TcpStream) {
    let _ = socket2::SockRef::from(dst).shutdown(std::net::Shutdown::Write);
}

/// Relays a reusable stream over a plain TCP carrier; returns bytes moved (socket → carrier,
/// carrier → socket) and whether both directions ended with end chunks (the carrier can then
/// carry another stream). Short bursts go in chunks, read and written once through the
/// per-thread buffer as in [`one_way`]; a read that fills a chunk marks bulk, and the direction
/// sends the raw marker and splices the rest, ending with a FIN: that stream's connection then
/// closes after it, as a plain stream's does.
pub(crate) async fn relay_chunked(
    socket: &TcpStream,
    carrier: &TcpStream,
) -> io::Result<(u64, u64, bool)> {
    // Set once this side has sent its end chunk: from then on the peer may follow its own end
    // chunk with the next stream's header, so reads from the carrier stop short of it.
    let ended = AtomicBool::new(false);
    let ((up, up_chunked), (down, down_chunked)) = tokio::try_join!(
        chunk_out(socket, carrier, &ended),
        chunk_in(carrier, socket, &ended)
    )?;
    Ok((up, down, up_chunked && down_chunked))
}

/// Socket → carrier, in chunks; `true` with the bytes moved when it ended with the end chunk.
async fn chunk_out(
    src: &TcpStream,
    dst: &TcpStream,
    ended: &AtomicBool,
) -> io::Result<(u64, bool)> {
    let mut total = 0u64;
    loop {
        src.readable().await?;
        let read = copy_burst(src, dst, true).await;
        match read {
            Ok(0) => {
                write_all(dst, &END).await?;
                ended.store(true, Ordering::Relaxed);
                return Ok((total, true));
            }
            Ok(n) if n < CHUNK => total += n as u64,
            Ok(n) => {
                // Bulk: the rest goes raw, spliced, and ends with a FIN.
                write_all(dst, &RAW).await?;
                let raw = one_way(src, dst).await?;
                return Ok((total + n as u64 + raw, false));
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            Err(e) => return Err(e),
        }
    }
}

/// Carrier → socket, from chunks; `true` with the bytes moved when it ended with the end chunk.
///
/// Until this side has sent its own end chunk, a read takes whatever has arrived, several
/// chunks at once if need be: the peer sends nothing past its end chunk before it has read
/// ours. After it, reads take exactly a header, or exactly the rest of a chunk.
async fn chunk_in(src: &TcpStream, dst: &TcpStream, ended: &AtomicBool) -> io::Result<(u64, bool)> {
    let (mut unchunker, mut total) = (Unchunker::default(), 0u64);
    loop {
        src.readable().await?;
        let exact = ended.load(Ordering::Relaxed);
        match unchunk_burst(&mut unchunker, src, dst, exact).await {
            Ok((n, step)) => {
                total += n as u64;
                match step {
                    Step::More => {}
                    Step::End => {
                        shutdown_write(dst);
                        return Ok((total, true));
                    }
                    Step::Raw => return Ok((total + one_way(src, dst).await?, false)),
                }
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            Err(e) => return Err(e),
        }
    }
}

/// Stream bytes read from the carrier's chunks and written to the socket, and which reads come
/// next (`exact`: no further than the current header or chunk) and what they brought.
async fn unchunk_burst(
    unchunker: &mut Unchunker,
    src: &TcpStream,
    dst: &TcpStream,
    exact: bool,
) -> io::Result<(usize, Step)> {
    let mut rest = Vec::new();
    let burst = SCRATCH.with(|scratch| -> io::Result<(usize, Step)> {
        let mut scratch = scratch.borrow_mut();
        let limit = if exact {
            unchunker.exact(scratch.len())
        } else {
            scratch.len()
        };
        let n = read_once(src, &mut scratch[..limit])?;
        if n == 0 {
            return Err(cut_short());
        }
        let (out, step) = unchunker
            .unchunk(&mut scratch[..n])
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
        let written = write_now(dst, &scratch[..out])?;
        rest.extend_from_slice(&scratch[written..out]);
        Ok((out, step))
    })?;
    write_all(dst, &rest).await?;
    Ok(burst)
}

/// Writes as much of `data` as `dst` takes now, without waiting; returns how much.
fn write_now(dst: &TcpStream, data: &[u8]) -> io::Result<usize> {
    let mut written = 0;
    while written < data.len() {
        match dst.try_write(&data[written..]) {
            Ok(w) => written += w,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
            Err(e) => return Err(e),
        }
    }
    Ok(written)
}

/// Writes all of `data`, waiting for `dst` to take it.
async fn write_all(dst: &TcpStream, data: &[u8]) -> io::Result<()> {
    let mut written = 0;
    while written < data.len() {
        dst.writable().await?;
        match dst.try_write(&data[written..]) {
            Ok(w) => written += w,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
            Err(e) => return Err(e),
        }
    }
    Ok(())
}
