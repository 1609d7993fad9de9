//! Relay micro-benchmarks: bulk transfer one direction at a time (with half-close), and a 1 KiB
//! ping-pong, through [`burrow_net::relay`] between loopback sockets.
//!
//! Each case runs over three ways of moving bytes:
//! - `Splice`: `Carrier::Plain`, so `relay` takes the `splice(2)` path (on Linux);
//! - `CopyMemory`: `Carrier::Memory` over `tokio::io::duplex`, so `relay` takes the buffered copy
//!   path. The public API offers no TLS-free carrier other than this one, so the carrier side
//!   costs a `memcpy` instead of a socket system call; this flatters the copy path;
//! - `TokioCopyTcp`: a reference, not burrow code: `tokio::io::copy_bidirectional` with 64 KiB
//!   buffers (the copy path's read size) between the same two TCP sockets as `Splice`, i.e. what
//!   a user-space copy costs when both ends are sockets.
//!
//! Run with `cargo bench -p burrow-net`. Socket set-up happens outside the timed region; each
//! timed iteration is one whole relay, from the first byte to both directions closed.

// A bench target is neither library code nor a test (clippy.toml only lets tests unwrap), and its
// functions are not API: a failed set-up or a short transfer here should panic, and needs no docs.
#![allow(clippy::unwrap_used, missing_docs)]

use burrow_net::relay::Path;
use burrow_net::{Carrier, relay};
use divan::Bencher;
use divan::counter::{BytesCount, ItemsCount};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::runtime::Runtime;

fn main() {
    divan::main();
}

/// Bytes moved by one bulk iteration.
const BULK: usize = 64 << 20;
/// Size of the bulk writer's writes and the reader's buffer (the splice path's pipe size).
const CHUNK: usize = 256 * 1024;
/// Capacity of the in-memory carrier: large, so the pipe itself is not the bottleneck.
const DUPLEX_BUF: usize = 256 * 1024;
/// Request and response size of the ping-pong case.
const MSG: usize = 1024;
/// Round trips per ping-pong iteration.
const ROUND_TRIPS: usize = 1000;
/// Buffer size of the `TokioCopyTcp` reference: the copy path's scratch buffer.
const REFERENCE_BUF: usize = 64 * 1024;

/// How bytes cross the relay.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Way {
    /// `relay` over `Carrier::Plain`: the splice path.
    Splice,
    /// `relay` over `Carrier::Memory`: the buffered copy path.
    CopyMemory,
    /// Reference: `tokio::io::copy_bidirectional` between two TCP sockets.
    TokioCopyTcp,
}

const WAYS: [Way; 3] = [Way::Splice, Way::CopyMemory, Way::TokioCopyTcp];

/// A current-thread runtime: the relay task and both ends share one thread, so an iteration's
/// wall time is the CPU time of the whole path (relay plus both ends), with no cross-thread
/// wake-ups. On a shared 2-core machine that is steadier than a 2-worker runtime, whose numbers
/// would swing with the other load and with where tasks land, and CPU per message is what the
/// ping-pong case is meant to compare. The price: bulk figures show no parallelism between ends.
fn runtime() -> Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// The four ends of one relayed stream: `visitor` ↔ `socket` ⇄ relay ⇄ `carrier` ↔ `peer`.
struct Ends {
    visitor: TcpStream,
    socket: TcpStream,
    carrier: Carrier,
    peer: Carrier,
}

/// A connected pair of loopback TCP sockets with `TCP_NODELAY`, as burrow sets on its own.
async fn tcp_pair() -> (TcpStream, TcpStream) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (a, b) = tokio::join!(TcpStream::connect(addr), listener.accept());
    let (a, b) = (a.unwrap(), b.unwrap().0);
    a.set_nodelay(true).unwrap();
    b.set_nodelay(true).unwrap();
    (a, b)
}

async fn ends(way: Way) -> Ends {
    let (visitor, socket) = tcp_pair().await;
    let (carrier, peer) = match way {
        Way::Splice | Way::TokioCopyTcp => {
            let (c, p) = tcp_pair().await;
            (Carrier::Plain(c), Carrier::Plain(p))
        }
        Way::CopyMemory => {
            let (c, p) = tokio::io::duplex(DUPLEX_BUF);
            (Carrier::Memory(c), Carrier::Memory(p))
        }
    };
    Ends {
        visitor,
        socket,
        carrier,
        peer,
    }
}

/// Relays until both directions end; returns bytes (to carrier, from carrier) and the sockets,
/// so that closing them happens outside the timed region.
async fn run_relay(
    way: Way,
    mut socket: TcpStream,
    mut carrier: Carrier,
) -> ((u64, u64), TcpStream, Carrier) {
    let moved = match (way, &mut carrier) {
        (Way::TokioCopyTcp, Carrier::Plain(tcp)) => {
            tokio::io::copy_bidirectional_with_sizes(&mut socket, tcp, REFERENCE_BUF, REFERENCE_BUF)
                .await
                .unwrap()
        }
        _ => {
            let relayed = relay(&mut socket, &mut carrier).await.unwrap();
            let expected = match way {
                Way::Splice if cfg!(target_os = "linux") => Path::Splice,
                _ => Path::Copy,
            };
            assert_eq!(relayed.path, expected, "{way:?} took the wrong path");
            (relayed.to_carrier, relayed.from_carrier)
        }
    };
    (moved, socket, carrier)
}

/// Writes [`BULK`] bytes and closes the write half.
async fn send_bulk<W: AsyncWrite + Unpin>(w: &mut W) {
    let chunk = vec![0x5a_u8; CHUNK];
    for _ in 0..BULK / CHUNK {
        w.write_all(&chunk).await.unwrap();
    }
    w.shutdown().await.unwrap();
}

/// Reads to end of stream, then closes the write half (the answer to the half-close).
async fn receive_bulk<S: AsyncRead + AsyncWrite + Unpin>(s: &mut S) {
    let mut buf = vec![0_u8; CHUNK];
    let mut total = 0;
    loop {
        let n = s.read(&mut buf).await.unwrap();
        if n == 0 {
            break;
        }
        total += n;
    }
    assert_eq!(total, BULK, "short bulk transfer");
    s.shutdown().await.unwrap();
}

/// Which end sends in a bulk iteration.
#[derive(Clone, Copy)]
enum Direction {
    /// Visitor to peer: the relay's `to_carrier` direction.
    ToCarrier,
    /// Peer to visitor: the relay's `from_carrier` direction.
    FromCarrier,
}

/// One bulk iteration: one side sends [`BULK`] bytes and half-closes, the other reads them all
/// and then closes its own half; the relay ends when both directions have.
async fn bulk(way: Way, direction: Direction, ends: Ends) -> Ends {
    let Ends {
        mut visitor,
        socket,
        carrier,
        mut peer,
    } = ends;
    let relay = tokio::spawn(run_relay(way, socket, carrier));
    match direction {
        Direction::ToCarrier => tokio::join!(send_bulk(&mut visitor), receive_bulk(&mut peer)),
        Direction::FromCarrier => tokio::join!(send_bulk(&mut peer), receive_bulk(&mut visitor)),
    };
    let (moved, socket, carrier) = relay.await.unwrap();
    let expected = match direction {
        Direction::ToCarrier => (BULK as u64, 0),
        Direction::FromCarrier => (0, BULK as u64),
    };
    assert_eq!(moved, expected);
    Ends {
        visitor,
        socket,
        carrier,
        peer,
    }
}

/// One ping-pong iteration: the visitor sends [`MSG`] bytes and waits for [`MSG`] back from the
/// peer, [`ROUND_TRIPS`] times, then both close.
async fn ping_pong(way: Way, ends: Ends) -> Ends {
    let Ends {
        mut visitor,
        socket,
        carrier,
        mut peer,
    } = ends;
    let relay = tokio::spawn(run_relay(way, socket, carrier));
    let asker = async {
        let (request, mut response) = ([1_u8; MSG], [0_u8; MSG]);
        for _ in 0..ROUND_TRIPS {
            visitor.write_all(&request).await.unwrap();
            visitor.read_exact(&mut response).await.unwrap();
        }
        visitor.shutdown().await.unwrap();
    };
    let answerer = async {
        let mut buf = [0_u8; MSG];
        for _ in 0..ROUND_TRIPS {
            peer.read_exact(&mut buf).await.unwrap();
            peer.write_all(&buf).await.unwrap();
        }
        assert_eq!(
            peer.read(&mut buf).await.unwrap(),
            0,
            "expected end of stream"
        );
        peer.shutdown().await.unwrap();
    };
    tokio::join!(asker, answerer);
    let (moved, socket, carrier) = relay.await.unwrap();
    let each_way = (MSG * ROUND_TRIPS) as u64;
    assert_eq!(moved, (each_way, each_way));
    Ends {
        visitor,
        socket,
        carrier,
        peer,
    }
}

// Each iteration moves 64 MiB or makes 1000 round trips (tens of milliseconds), so 20 samples
// keep a whole run short on a shared machine while still giving a median.

/// Visitor → carrier: 64 MiB, then half-close.
#[divan::bench(args = WAYS, sample_count = 20)]
fn bulk_to_carrier(bencher: Bencher, way: Way) {
    bench_bulk(bencher, way, Direction::ToCarrier);
}

/// Carrier → visitor: 64 MiB, then half-close.
#[divan::bench(args = WAYS, sample_count = 20)]
fn bulk_from_carrier(bencher: Bencher, way: Way) {
    bench_bulk(bencher, way, Direction::FromCarrier);
}

fn bench_bulk(bencher: Bencher, way: Way, direction: Direction) {
    let rt = runtime();
    bencher
        .counter(BytesCount::new(BULK))
        .with_inputs(|| rt.block_on(ends(way)))
        .bench_local_values(|ends| rt.block_on(bulk(way, direction, ends)));
}

/// 1000 round trips of a 1 KiB request and a 1 KiB response; items are round trips.
#[divan::bench(args = WAYS, sample_count = 20)]
fn ping_pong_1k(bencher: Bencher, way: Way) {
    let rt = runtime();
    bencher
        .counter(ItemsCount::new(ROUND_TRIPS))
        .with_inputs(|| rt.block_on(ends(way)))
        .bench_local_values(|ends| rt.block_on(ping_pong(way, ends)));
}
