//! End-to-end: processes coming and going.
//!
//! Graceful shutdown of the server (SIGTERM) and the client (SIGINT) while a stream is
//! mid-transfer, `--exit-on-disconnect`, and a session reconnecting at the server's maximum
//! lifetime. (A client reconnecting to a restarted server is tested over every carrier in
//! tunnel.rs.)
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[macro_use]
mod common;

use common::carriers::Carrier;

use common::data::{Hash64, Pattern};
use common::targets::{assert_echo, echo_target, target, visit};
use common::{Client, Server, TestDir, any_line_has, bounded, ports};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::Notify;

#[tokio::test(flavor = "multi_thread")]
async fn a_session_past_its_lifetime_reconnects_and_keeps_its_port() {
    bounded(60, async {
        let dir = TestDir::new("lifetime");
        let block = ports(4).arg();
        let args = [
            "--token",
            "t",
            "--ports",
            &block,
            "--max-session-lifetime",
            "2s",
        ];
        let server = Server::start(&dir, &args).await;
        let echo = echo_target().await;
        let client = Client::start_tcp(&dir, &server, echo, "t", &[]).await;
        assert_echo(client.port, b"first session").await;
        server
            .proc
            .wait_stderr("the lifetime's end", |l| {
                l.contains("session closed at its maximum lifetime")
            })
            .await;
        let port = client.wait_ready_nth(2, Duration::from_secs(30)).await;
        assert_eq!(port, client.port, "the port was not kept for the client");
        // Logged on stderr before the second ready line; the two pipes are read apart.
        client
            .proc
            .wait_stderr("the client saying why it reconnected", |l| {
                l.contains("maximum lifetime")
            })
            .await;
        assert_echo(port, b"second session").await;
    })
    .await
}

/// One chunk of the slow transfer below.
const CHUNK: usize = 64 * 1024;
/// Chunks sent after shutdown was asked for.
const LATE_CHUNKS: usize = 20;

/// A target that sends one chunk at once, then, once `go` is notified, the rest slowly (about a
/// second in all) and closes.
async fn slow_sender(go: Arc<Notify>) -> u16 {
    target(move |mut conn| {
        let go = go.clone();
        async move {
            let mut pattern = Pattern::new(12);
            let mut buf = vec![0u8; CHUNK];
            pattern.fill(&mut buf);
            conn.write_all(&buf).await.unwrap();
            go.notified().await;
            for _ in 0..LATE_CHUNKS {
                tokio::time::sleep(Duration::from_millis(50)).await;
                pattern.fill(&mut buf);
                conn.write_all(&buf).await.unwrap();
            }
            conn.shutdown().await.unwrap();
        }
    })
    .await
}

/// Opens a stream through `port` and reads the first chunk, so the stream is mid-transfer; then
/// runs `stop`, releases the rest, and checks that every byte arrives.
async fn stream_survives(port: u16, go: Arc<Notify>, stop: impl FnOnce()) {
    let mut conn = visit(port).await;
    let mut first = vec![0u8; CHUNK];
    conn.read_exact(&mut first).await.unwrap();
    stop();
    go.notify_one();
    let mut rest = Vec::new();
    tokio::time::timeout(Duration::from_secs(30), conn.read_to_end(&mut rest))
        .await
        .expect("the stream did not finish")
        .expect("the stream broke during shutdown");
    let mut got = Hash64::new();
    got.update(&first);
    got.update(&rest);
    assert_eq!(
        got.len(),
        (CHUNK * (LATE_CHUNKS + 1)) as u64,
        "bytes lost during shutdown"
    );
    let expected = Pattern::bytes(12, CHUNK * (LATE_CHUNKS + 1));
    assert_eq!(
        got.finish(),
        Hash64::of(&expected),
        "bytes changed during shutdown"
    );
}

over_carriers!(server_sigterm_lets_an_open_stream_finish);

/// SIGTERM while a stream is mid-transfer: the stream finishes, then the server exits at once
/// (not at the end of its grace period: nothing else holds it, a link's idle streams included).
async fn server_sigterm_lets_an_open_stream_finish(carrier: Carrier) {
    bounded(120, async {
        let dir = TestDir::new(&format!("sigterm-{}", carrier.label()));
        let config = dir.write("server.toml", "shutdown_grace = \"60s\"\n");
        let block = ports(4).arg();
        let mut deployment = carrier
            .deploy(
                &dir,
                &["--config", &config, "--token", "t", "--ports", &block],
            )
            .await;
        let go = Arc::new(Notify::new());
        let sender = slow_sender(go.clone()).await;
        let client = deployment.client_tcp(&dir, sender, &[]).await;
        let server = &mut deployment.server;
        stream_survives(client.port, go, || server.proc.signal("TERM")).await;
        let status = server.proc.wait_exit(Duration::from_secs(50)).await;
        assert_eq!(
            status.code(),
            Some(0),
            "server exit status {status}\n{}",
            server.proc.dump()
        );
        let stderr = server.proc.output().stderr;
        assert!(
            !any_line_has(&stderr, &["grace period over"]),
            "the server waited out its grace period\n{}",
            server.proc.dump()
        );
    })
    .await
}

#[tokio::test(flavor = "multi_thread")]
async fn client_sigint_lets_an_open_stream_finish() {
    bounded(90, async {
        let dir = TestDir::new("sigint");
        let block = ports(4).arg();
        let server = Server::start(&dir, &["--token", "t", "--ports", &block]).await;
        let go = Arc::new(Notify::new());
        let sender = slow_sender(go.clone()).await;
        let mut client = Client::start_tcp(&dir, &server, sender, "t", &[]).await;
        stream_survives(client.port, go, || client.proc.signal("INT")).await;
        let status = client.proc.wait_exit(Duration::from_secs(10)).await;
        assert_eq!(
            status.code(),
            Some(0),
            "client exit status {status}\n{}",
            client.proc.dump()
        );
    })
    .await
}

#[tokio::test(flavor = "multi_thread")]
async fn exit_on_disconnect_exits_1_when_the_server_dies() {
    bounded(60, async {
        let dir = TestDir::new("exit-on-disconnect");
        let block = ports(4).arg();
        let mut server = Server::start(&dir, &["--token", "t", "--ports", &block]).await;
        let echo = echo_target().await;
        let mut client =
            Client::start_tcp(&dir, &server, echo, "t", &["--exit-on-disconnect"]).await;
        assert_echo(client.port, b"connected").await;
        server.proc.kill9().await;
        let stderr = client.proc.expect_exit_1().await;
        assert!(
            any_line_has(&stderr, &["burrow: error:", "disconnected"]),
            "no `disconnected` error:\n{}",
            client.proc.dump()
        );
    })
    .await
}
