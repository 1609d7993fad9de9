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

/// One reusable stream from end to end: the server side relays a visitor over `near`, the
/// client side relays `far` to a target; the visitor sends `up` and the target `down`, each
/// then closing its write half. Checks every byte and both relays' counts; returns the paths
/// the two relays report.
async fn reusable_stream(
    near: &mut Carrier,
    far: &mut Carrier,
    up: &[u8],
    down: &[u8],
) -> (Path, Path) {
    let (visitor, mut socket) = tcp_pair().await;
    let (mut target_side, target) = tcp_pair().await;
    let ends = async {
        tokio::join!(
            exchange(visitor, up.to_vec()),
            exchange(target, down.to_vec())
        )
    };
    let (server, client, (at_visitor, at_target)) = tokio::join!(
        relay_reusable(&mut socket, near),
        relay_reusable(&mut target_side, far),
        ends
    );
    assert!(at_target == up, "visitor → target bytes differ");
    assert!(at_visitor == down, "target → visitor bytes differ");
    let (up, down) = (up.len() as u64, down.len() as u64);
    let server = server.expect("server side ends cleanly");
    let client = client.expect("client side ends cleanly");
    assert_eq!((server.to_carrier, server.from_carrier), (up, down));
    assert_eq!((client.to_carrier, client.from_carrier), (down, up));
    (server.path, client.path)
}

/// Short streams, as requests and answers are: each fits a chunk per read.
fn short_streams() -> Vec<(Vec<u8>, Vec<u8>)> {
    vec![
        (pattern(1, 10_001), pattern(2, 5)),
        (Vec::new(), pattern(3, 1_000)),
        (pattern(4, 7_000), Vec::new()),
        (Vec::new(), Vec::new()),
        (b"GET / HTTP/1.1\r\n\r\n".to_vec(), pattern(5, 1_024)),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reusable_streams_follow_each_other_on_one_connection() {
    let chunked = (Path::Chunked, Path::Chunked);
    // Plain TCP: short streams stay in chunks (bulk goes raw, see below).
    let (near, far) = tcp_pair().await;
    let (mut near, mut far) = (Carrier::Plain(near), Carrier::Plain(far));
    for (up, down) in &short_streams() {
        assert_eq!(
            reusable_stream(&mut near, &mut far, up, down).await,
            chunked
        );
    }
    // The buffered relay (TLS's) keeps even bulk in chunks; a small in-memory pipe pushes
    // back on every write.
    let (near, far) = tokio::io::duplex(1_000);
    let (mut near, mut far) = (Carrier::Memory(near), Carrier::Memory(far));
    let mut streams = short_streams();
    streams.push((pattern(6, 300_001), pattern(7, 1_000_000)));
    streams.push((Vec::new(), Vec::new()));
    for (up, down) in &streams {
        assert_eq!(
            reusable_stream(&mut near, &mut far, up, down).await,
            chunked
        );
    }
}

#[cfg(target_os = "linux")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bulk_on_plain_tcp_goes_raw_and_is_spliced() {
    let spliced = (Path::Splice, Path::Splice);
    for (up, down) in [
        (pattern(1, 9_000_001), pattern(2, 7_000_003)),
        (b"a short request".to_vec(), pattern(3, 5_000_000)),
        (pattern(4, 3_000_000), Vec::new()),
    ] {
        let (near, far) = tcp_pair().await;
        let (mut near, mut far) = (Carrier::Plain(near), Carrier::Plain(far));
        assert_eq!(
            reusable_stream(&mut near, &mut far, &up, &down).await,
            spliced
        );
    }
}

/// The peer answers our end chunk with its chunk, its end chunk and the next stream's first
/// bytes, in one write: the relay stops at the end chunk.
async fn next_header_unread(mut near: Carrier, mut peer: impl AsyncRead + AsyncWrite + Unpin) {
    let (visitor, mut socket) = tcp_pair().await;
    let peer_side = async {
        let mut end = [0u8; 2];
        peer.read_exact(&mut end).await.unwrap();
        assert_eq!(end, burrow_proto::reuse::END, "the visitor's end chunk");
        peer.write_all(&[0, 2, b'h', b'i', 0, 0, b'N', b'E', b'X', b'T'])
            .await
            .unwrap();
    };
    let (relayed, back, ()) = tokio::join!(
        relay_reusable(&mut socket, &mut near),
        exchange(visitor, Vec::new()),
        peer_side
    );
    assert_eq!(back, b"hi");
    let relayed = relayed.unwrap();
    assert_eq!((relayed.to_carrier, relayed.from_carrier), (0, 2));
    assert_eq!(relayed.path, Path::Chunked);
    let mut next = [0u8; 4];
    near.read_exact(&mut next).await.unwrap();
    assert_eq!(&next, b"NEXT");
}

#[tokio::test]
async fn a_reusable_stream_leaves_the_next_header_unread() {
    let (near, peer) = tcp_pair().await;
    next_header_unread(Carrier::Plain(near), peer).await;
    let (near, peer) = tokio::io::duplex(1_000);
    next_header_unread(Carrier::Memory(near), peer).await;
}

#[cfg(target_os = "linux")]
#[tokio::test]
async fn bytes_after_an_end_chunk_before_ours_are_refused() {
    let (_visitor, mut socket) = tcp_pair().await;
    let (near, mut peer) = tcp_pair().await;
    let mut near = Carrier::Plain(near);
    peer.write_all(&[0, 0, b'N']).await.unwrap();
    // Bounded: were the three bytes read apart, the relay would wait for the visitor.
    let relayed = tokio::time::timeout(
        std::time::Duration::from_secs(10),
        relay_reusable(&mut socket, &mut near),
    );
    let err = (relayed.await)
        .expect("the relay answers at once")
        .expect_err("the peer cannot have read our end chunk");
    assert_eq!(err.kind(), std::io::ErrorKind::InvalidData);
}

#[tokio::test]
async fn a_raw_marker_turns_the_rest_into_plain_bytes() {
    let (visitor, mut socket) = tcp_pair().await;
    let (near, mut peer) = tokio::io::duplex(1_000);
    let mut near = Carrier::Memory(near);
    let peer_side = async {
        peer.write_all(&[0, 3, b'a', b'b', b'c', 0xff, 0xff])
            .await
            .unwrap();
        peer.write_all(b"raw bytes").await.unwrap();
        peer.shutdown().await.unwrap();
        // The visitor's chunk and end chunk (the relay leaves closing the carrier to its
        // caller, who closes it: it is not reusable).
        let mut got = [0u8; 6];
        peer.read_exact(&mut got).await.unwrap();
        got
    };
    let (relayed, back, at_peer) = tokio::join!(
        relay_reusable(&mut socket, &mut near),
        exchange(visitor, b"up".to_vec()),
        peer_side
    );
    assert_eq!(back, b"abcraw bytes");
    assert_eq!(at_peer, [0, 2, b'u', b'p', 0, 0]);
    let relayed = relayed.unwrap();
    assert_eq!((relayed.to_carrier, relayed.from_carrier), (2, 12));
    assert_eq!(relayed.path, Path::Copy, "not reusable");
}

#[tokio::test]
async fn a_reusable_stream_cut_short_is_an_error() {
    // A chunk that announces 100 bytes and brings 10; a connection that closes between
    // chunks; one that closes inside a header. Over plain TCP and the buffered path.
    for sent in [
        &[0u8, 100, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10][..],
        &[0, 1, 7],
        &[0],
    ] {
        for plain in [true, false] {
            let (_visitor, mut socket) = tcp_pair().await;
            // The peer's end closes at the end of each branch.
            let mut near = if plain {
                let (near, mut peer) = tcp_pair().await;
                peer.write_all(sent).await.unwrap();
                Carrier::Plain(near)
            } else {
                let (near, mut peer) = tokio::io::duplex(1_000);
                peer.write_all(sent).await.unwrap();
                Carrier::Memory(near)
            };
            let err = relay_reusable(&mut socket, &mut near)
                .await
                .expect_err("no end chunk came");
            assert_eq!(
                err.kind(),
                std::io::ErrorKind::UnexpectedEof,
                "after {sent:?}, plain: {plain}"
            );
        }
    }
}
