//! Zero-copy relay between two TCP sockets with `splice(2)` through a pipe, on Linux.
//!
//! Bytes move socket → pipe → socket inside the kernel and never reach user space. A direction
//! borrows a pipe from a small process-wide pool only while it has bytes in flight, and returns
//! it (empty) when its source has nothing more to read for now, so an idle connection holds no
//! pipe and no buffer: its whole cost is the kernel's socket state and one small task.
//!
//! Everything here goes through rustix's safe wrappers; burrow has no `unsafe` code.

use rustix::pipe::{PipeFlags, SpliceFlags, fcntl_setpipe_size, pipe_with, splice};
use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::sync::Mutex;
use tokio::io::Interest;
use tokio::net::TcpStream;

/// Pipe capacity. Larger pipes mean fewer system calls on bulk transfers; 256 KiB is where the
/// gain flattens out on loopback and stays well below the default `pipe-max-size` (1 MiB).
const PIPE_SIZE: usize = 256 * 1024;
/// Empty pipes kept for reuse; beyond this they are closed.
const POOL_CAP: usize = 256;
/// Size of a direction's first read of each burst (see [`one_way`]).
const COPY_FIRST: usize = 16 * 1024;

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
            match copy_burst(src, dst).await {
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

/// Reads one burst into the thread's scratch buffer and writes it to `dst`; returns its length
/// (0 at end of stream). Only bytes `dst` cannot take at once are copied to the heap.
async fn copy_burst(src: &TcpStream, dst: &TcpStream) -> io::Result<usize> {
    let mut rest = Vec::new();
    let n = SCRATCH.with(|scratch| -> io::Result<usize> {
        let mut scratch = scratch.borrow_mut();
        let n = read_once(src, &mut scratch[..])?;
        let mut written = 0;
        while written < n {
            match dst.try_write(&scratch[written..n]) {
                Ok(w) => written += w,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) => return Err(e),
            }
        }
        rest.extend_from_slice(&scratch[written..n]);
        Ok(n)
    })?;
    let mut written = 0;
    while written < rest.len() {
        dst.writable().await?;
        match dst.try_write(&rest[written..]) {
            Ok(w) => written += w,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
            Err(e) => return Err(e),
        }
    }
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
