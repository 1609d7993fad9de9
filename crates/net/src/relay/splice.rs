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
async fn one_way(src: &TcpStream, dst: &TcpStream) -> io::Result<u64> {
    let mut total = 0u64;
    let mut pipe: Option<Pipe> = None;
    loop {
        src.readable().await?;
        let p = match pipe.take() {
            Some(p) => p,
            None => Pipe::take()?,
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
            // Nothing to read after all: an idle direction holds no pipe.
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => p.give_back(),
            // The pipe is dropped (closed) rather than pooled: it may hold bytes.
            Err(e) => return Err(e),
        }
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
