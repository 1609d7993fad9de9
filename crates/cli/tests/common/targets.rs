//! In-process targets (the services a client publishes) and visitor helpers.
//!
//! Targets listen on `127.0.0.1:0` inside the test process and live as long as the test's
//! runtime.

use std::future::Future;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpSocket, TcpStream};

/// Starts a target that runs `handler` for every connection and returns its port.
pub(crate) async fn target<F, Fut>(handler: F) -> u16
where
    F: Fn(TcpStream) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    let listener = listen_any().await;
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((conn, _)) = listener.accept().await {
            tokio::spawn(handler(conn));
        }
    });
    port
}

/// Listens on `127.0.0.1:0` with a backlog deep enough for a thousand visitors arriving at once
/// (`TcpListener::bind` asks for 128).
pub(crate) async fn listen_any() -> TcpListener {
    let socket = TcpSocket::new_v4().unwrap();
    socket.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    socket.listen(4096).unwrap()
}

/// Starts an echo target: it copies every connection's bytes back, and closes its write half
/// once the visitor closed theirs.
pub(crate) async fn echo_target() -> u16 {
    target(|conn| async move {
        let (mut r, mut w) = conn.into_split();
        if tokio::io::copy(&mut r, &mut w).await.is_ok() {
            let _ = w.shutdown().await;
        }
    })
    .await
}

/// Connects to a public port on the loopback address.
pub(crate) async fn visit(port: u16) -> TcpStream {
    TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap_or_else(|e| panic!("cannot connect to public port {port}: {e}"))
}

/// Sends `data` through the public port of an echo tunnel, closes the write half, and returns
/// everything read back until end of file.
pub(crate) async fn echo_once(port: u16, data: &[u8]) -> Vec<u8> {
    let conn = visit(port).await;
    let me = conn.local_addr().unwrap();
    let (mut r, mut w) = conn.into_split();
    let reader = tokio::spawn(async move {
        let mut back = Vec::new();
        r.read_to_end(&mut back).await.map(|_| back)
    });
    let fail = |what: &str, e: std::io::Error| -> ! {
        panic!("visitor {me} to public port {port}: {what}: {e}")
    };
    w.write_all(data).await.unwrap_or_else(|e| fail("write", e));
    w.shutdown().await.unwrap_or_else(|e| fail("shutdown", e));
    reader.await.unwrap().unwrap_or_else(|e| fail("read", e))
}

/// Checks that an echo tunnel on `port` returns `data` intact.
pub(crate) async fn assert_echo(port: u16, data: &[u8]) {
    let back = echo_once(port, data).await;
    assert_eq!(
        back.len(),
        data.len(),
        "echo through port {port} returned a different length"
    );
    assert!(
        back == data,
        "echo through port {port} returned different bytes"
    );
}

/// Reads until the peer closes or `within` passes; returns what was read and whether the
/// connection ended (end of file or an error such as a reset) in time.
pub(crate) async fn read_until_closed<R: AsyncRead + Unpin>(
    conn: &mut R,
    within: Duration,
) -> (Vec<u8>, bool) {
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    let deadline = tokio::time::Instant::now() + within;
    loop {
        match tokio::time::timeout_at(deadline, conn.read(&mut buf)).await {
            Err(_) => return (got, false),
            Ok(Ok(0)) | Ok(Err(_)) => return (got, true),
            Ok(Ok(n)) => got.extend_from_slice(&buf[..n]),
        }
    }
}
