//! Joining a visitor (or target) socket to a stream's data connection.
//!
//! When the data connection is plain TCP on Linux, bytes move with `splice(2)` and never enter
//! user space; otherwise (TLS, tests' in-memory pipes) a buffered copy runs that holds memory only
//! while bytes are in flight. Both carry half-close: when one side stops sending, the other
//! side's write half is shut down and the opposite direction goes on until it ends too.
//!
//! A reusable stream ([`relay_reusable`]) carries its half-close in chunks instead, so that its
//! data connection outlives it: over plain TCP short bursts go in chunks and bulk goes raw and
//! spliced, over anything else every byte goes in chunks through the buffered path.

mod copy;
mod framed;
#[cfg(target_os = "linux")]
mod splice;

use crate::Carrier;
use std::io;
use tokio::net::TcpStream;

/// How a relay moved its bytes, for logs and tests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Path {
    /// Kernel to kernel with `splice(2)`: no copy through user space.
    Splice,
    /// Through a user-space buffer (TLS must decrypt and encrypt).
    Copy,
    /// In `burrow_proto::reuse` chunks both ways, to their end chunks: the data connection can
    /// carry another stream. (A reusable stream that went raw reports the path its raw bytes
    /// took, and its connection closes.)
    Chunked,
}

impl std::fmt::Display for Path {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Path::Splice => "splice",
            Path::Copy => "copy",
            Path::Chunked => "chunked",
        })
    }
}

/// What a finished relay moved.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Relayed {
    /// Bytes from the socket to the carrier.
    pub to_carrier: u64,
    /// Bytes from the carrier to the socket.
    pub from_carrier: u64,
    /// The path taken.
    pub path: Path,
}

/// Relays between a TCP socket (a visitor on the server, a target on the client) and a stream's
/// data connection until both directions finish. An error in either direction ends both; the
/// caller then drops (closes) both connections.
pub async fn relay(socket: &mut TcpStream, carrier: &mut Carrier) -> io::Result<Relayed> {
    #[cfg(target_os = "linux")]
    if let Carrier::Plain(tcp) = carrier {
        let (to_carrier, from_carrier) = splice::relay(socket, tcp).await?;
        return Ok(Relayed {
            to_carrier,
            from_carrier,
            path: Path::Splice,
        });
    }
    let (to_carrier, from_carrier) = copy::relay(socket, carrier).await?;
    Ok(Relayed {
        to_carrier,
        from_carrier,
        path: Path::Copy,
    })
}

/// Relays a reusable stream (`StreamKind::TcpReusable`) between a TCP socket and its data
/// connection until both directions have ended with their end chunks; the carrier is then
/// ready for the next stream header. On an error the caller closes both, as after [`relay`].
pub async fn relay_reusable(socket: &mut TcpStream, carrier: &mut Carrier) -> io::Result<Relayed> {
    #[cfg(target_os = "linux")]
    if let Carrier::Plain(tcp) = carrier {
        let (to_carrier, from_carrier, chunked) = splice::relay_chunked(socket, tcp).await?;
        return Ok(Relayed {
            to_carrier,
            from_carrier,
            path: if chunked { Path::Chunked } else { Path::Splice },
        });
    }
    let (to_carrier, from_carrier, chunked) = framed::relay(socket, carrier).await?;
    Ok(Relayed {
        to_carrier,
        from_carrier,
        path: if chunked { Path::Chunked } else { Path::Copy },
    })
}

/// A read longer than a chunk header can announce: the reads are cut to fit, so this is a bug,
/// reported as an error rather than sent as a wrong header.
fn too_long() -> io::Error {
    io::Error::other("a chunk longer than its header can say")
}

/// The carrier ended inside a reusable stream: the peer closed its connection instead of
/// ending the stream with an end chunk.
fn cut_short() -> io::Error {
    io::Error::new(
        io::ErrorKind::UnexpectedEof,
        "the data connection closed inside a reusable stream",
    )
}

#[cfg(test)]
mod tests;
