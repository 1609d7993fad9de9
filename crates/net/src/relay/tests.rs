//! Both relay paths move every byte intact, both ways at once, and carry half-close.
//!
//! This module is compiled only under #[cfg(test)] (declared so in its parent).

use super::*;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpListener;

/// A connected pair of loopback TCP sockets.
async fn tcp_pair() -> (TcpStream, TcpStream) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (a, b) = tokio::join!(TcpStream::connect(addr), listener.accept());
    (a.unwrap(), b.unwrap().0)
}

/// Deterministic bytes that differ by seed and position.
fn pattern(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

/// Sends `out` and closes the write half, while reading everything that comes back.
async fn exchange<S: AsyncRead + AsyncWrite + Unpin>(s: S, out: Vec<u8>) -> Vec<u8> {
    let (mut r, mut w) = tokio::io::split(s);
    let writer = async move {
        w.write_all(&out).await.unwrap();
        w.shutdown().await.unwrap();
    };
    let reader = async move {
        let mut back = Vec::new();
        r.read_to_end(&mut back).await.unwrap();
        back
    };
    tokio::join!(writer, reader).1
}

/// Relays between `socket` and `carrier`, with a visitor on `visitor` and a peer on `peer`
/// sending `up` and `down` at the same time; checks every byte and the path taken.
async fn check_both_ways<P>(
    mut socket: TcpStream,
    mut carrier: Carrier,
    visitor: TcpStream,
    peer: P,
    path: Path,
) where
    P: AsyncRead + AsyncWrite + Unpin,
{
    let (up, down) = (pattern(1, 9_000_001), pattern(2, 7_000_003));
    let relay = tokio::spawn(async move { relay(&mut socket, &mut carrier).await.unwrap() });
    let (at_peer, at_visitor) =
        tokio::join!(exchange(peer, down.clone()), exchange(visitor, up.clone()));
    assert!(at_peer == up, "visitor → carrier bytes differ");
    assert!(at_visitor == down, "carrier → visitor bytes differ");
    let relayed = relay.await.unwrap();
    assert_eq!(
        relayed,
        Relayed {
            to_carrier: up.len() as u64,
            from_carrier: down.len() as u64,
            path
        }
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plain_carriers_are_spliced_intact_both_ways() {
    let (visitor, socket) = tcp_pair().await;
    let (carrier, peer) = tcp_pair().await;
    let expected = if cfg!(target_os = "linux") {
        Path::Splice
    } else {
        Path::Copy
    };
    check_both_ways(socket, Carrier::Plain(carrier), visitor, peer, expected).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn other_carriers_are_copied_intact_both_ways() {
    let (visitor, socket) = tcp_pair().await;
    let (carrier, peer) = tokio::io::duplex(16 * 1024);
    check_both_ways(socket, Carrier::Memory(carrier), visitor, peer, Path::Copy).await;
}

/// The visitor finishes sending first; the answer still comes back after its end of file.
async fn half_close(
    mut socket: TcpStream,
    mut carrier: Carrier,
    mut visitor: TcpStream,
    mut peer: impl AsyncRead + AsyncWrite + Unpin,
) {
    let relay = tokio::spawn(async move { relay(&mut socket, &mut carrier).await.unwrap() });
    visitor.write_all(b"question").await.unwrap();
    visitor.shutdown().await.unwrap();
    let mut got = Vec::new();
    peer.read_to_end(&mut got).await.unwrap();
    assert_eq!(got, b"question");
    peer.write_all(b"answer after EOF").await.unwrap();
    peer.shutdown().await.unwrap();
    let mut back = Vec::new();
    visitor.read_to_end(&mut back).await.unwrap();
    assert_eq!(back, b"answer after EOF");
    relay.await.unwrap();
}

#[tokio::test]
async fn half_close_travels_over_both_paths() {
    let (visitor, socket) = tcp_pair().await;
    let (carrier, peer) = tcp_pair().await;
    half_close(socket, Carrier::Plain(carrier), visitor, peer).await;
    let (visitor, socket) = tcp_pair().await;
    let (carrier, peer) = tokio::io::duplex(1024);
    half_close(socket, Carrier::Memory(carrier), visitor, peer).await;
}

#[tokio::test]
async fn a_reset_ends_the_relay_with_an_error() {
    let (visitor, mut socket) = tcp_pair().await;
    let (carrier, _peer) = tcp_pair().await;
    let mut carrier = Carrier::Plain(carrier);
    // Linger 0 turns close into a reset.
    socket2::SockRef::from(&visitor)
        .set_linger(Some(std::time::Duration::ZERO))
        .unwrap();
    drop(visitor);
    assert!(relay(&mut socket, &mut carrier).await.is_err());
}
