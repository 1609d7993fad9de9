//! Server-opened streams over an in-memory mux link: served like pooled connections, and bad
//! input closes only the stream it came on.

use super::*;
use crate::config::{ClientConfig, Transport, TunnelConfig};
use crate::tunnels::Tunnels;
use burrow_net::mux;
use burrow_net::write_frame;
use burrow_proto::auth::Secret;
use burrow_proto::msg::{StreamKind, Target};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// An echo target on loopback that echoes until the peer half-closes, then closes.
async fn echo_target() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            tokio::spawn(async move {
                let (mut r, mut w) = socket.split();
                let _ = tokio::io::copy(&mut r, &mut w).await;
                let _ = w.shutdown().await;
            });
        }
    });
    port
}

/// A client accepting the server's streams of an in-memory link for one TCP tunnel (id 0) to
/// `port`; returns the server's opener and the session's token.
fn client_with_tunnel(port: u16) -> (mux::Opener, CancellationToken, mux::Opener) {
    let (a, b) = tokio::io::duplex(256 * 1024);
    let (client_opener, inbound) = mux::client_accepting(a);
    let (server, from_client) = mux::server(b);
    // The server's end lives while its receiver does.
    tokio::spawn(async move {
        let _keep = from_client;
        std::future::pending::<()>().await
    });
    let mut config = ClientConfig::new(
        "127.0.0.1:1".into(),
        "alice".into(),
        Secret::new("t"),
        Transport::Plain,
    );
    config.pool_size = 0;
    let tunnel = TunnelConfig::tcp("echo", &format!("127.0.0.1:{port}"));
    let closed = CancellationToken::new();
    let pool = Arc::new(Pool {
        config: Arc::new(config),
        tunnels: Arc::new(Tunnels::new(vec![tunnel])),
        session: 1,
        key: burrow_proto::auth::DataKey::new(&Secret::new("s")),
        early: None,
        link: crate::connect::Link::Mux(client_opener.clone(), "mux"),
        closed: closed.clone(),
        streams: TaskTracker::new(),
        span: tracing::Span::none(),
        reuse_wait: crate::streams::REUSE_WAIT,
        hurry: tokio::sync::Notify::new(),
    });
    tokio::spawn(accept(pool, Inbound::Mux(inbound, "mux")));
    (server, closed, client_opener)
}

fn open_for_tunnel(stream: u64) -> StreamOpen {
    StreamOpen {
        stream,
        kind: StreamKind::Tcp,
        target: Target::Tunnel(0),
        visitor: Some(([192, 0, 2, 1], 4000).into()),
    }
}

/// Sends `data` on a server-opened stream, half-closes, and returns what comes back.
async fn round_trip(server: &mux::Opener, stream: u64, data: &[u8]) -> Vec<u8> {
    let mut ours = server.open().await.unwrap();
    write_frame(&mut ours, &open_for_tunnel(stream))
        .await
        .unwrap();
    ours.write_all(data).await.unwrap();
    ours.shutdown().await.unwrap();
    let mut back = Vec::new();
    ours.read_to_end(&mut back).await.unwrap();
    back
}

#[tokio::test]
async fn a_server_opened_stream_reaches_the_target_with_half_close() {
    let port = echo_target().await;
    let (server, _closed, _keep) = client_with_tunnel(port);
    let data: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
    assert_eq!(round_trip(&server, 1, &data).await, data);
}

#[tokio::test]
async fn garbage_instead_of_a_stream_header_closes_that_stream_only() {
    let port = echo_target().await;
    let (server, _closed, _keep) = client_with_tunnel(port);
    let mut bad = server.open().await.unwrap();
    // A frame length far beyond the maximum.
    bad.write_all(&[0xff, 0xff, 0xff, 0xff, 1, 2, 3])
        .await
        .unwrap();
    bad.flush().await.unwrap();
    let mut buf = [0u8; 16];
    let read = bad.read(&mut buf).await;
    assert!(matches!(read, Ok(0) | Err(_)), "{read:?}");
    // The link and the next stream are unharmed.
    assert_eq!(round_trip(&server, 2, b"still here").await, b"still here");
}

#[tokio::test(start_paused = true)]
async fn a_stream_without_a_header_is_closed_at_the_deadline() {
    let (server, _closed, _keep) = client_with_tunnel(1);
    let mut silent = server.open().await.unwrap();
    // yamux sends the stream's opening frame with its first data; an empty write sends it.
    assert_eq!(silent.write(&[]).await.unwrap(), 0);
    silent.flush().await.unwrap();
    let started = tokio::time::Instant::now();
    let mut buf = [0u8; 1];
    let read = silent.read(&mut buf).await;
    assert!(matches!(read, Ok(0) | Err(_)), "{read:?}");
    assert!(started.elapsed() >= OPEN_DEADLINE);
}

#[tokio::test]
async fn streams_are_refused_once_the_session_ended() {
    let port = echo_target().await;
    let (server, closed, _keep) = client_with_tunnel(port);
    assert_eq!(round_trip(&server, 1, b"before").await, b"before");
    closed.cancel();
    let mut late = server.open().await.unwrap();
    let sent = write_frame(&mut late, &open_for_tunnel(2)).await;
    let mut back = Vec::new();
    let read = late.read_to_end(&mut back).await;
    assert!(
        sent.is_err() || read.is_err() || back.is_empty(),
        "{back:?}"
    );
}

/// More streams at once than the client reads headers for: the rest wait their turn in the
/// link, and every one is served.
#[tokio::test]
async fn a_burst_beyond_the_header_readers_is_served_in_turn() {
    let port = echo_target().await;
    let (server, _closed, _keep) = client_with_tunnel(port);
    let mut visitors = tokio::task::JoinSet::new();
    for i in 0..(3 * WAITING as u64) {
        let server = server.clone();
        visitors.spawn(async move {
            let data = format!("visitor {i}").into_bytes();
            assert_eq!(round_trip(&server, i, &data).await, data, "visitor {i}");
        });
    }
    assert_eq!(visitors.join_all().await.len(), 3 * WAITING);
}
