//! End-to-end: the pre-auth rules of a multiplexed link, with a raw link (burrow's link preface
//! and yamux, as the `mux` carrier speaks them) playing a client that never logs in.
//!
//! A link is held to the same rules as a connection until one of its streams authenticates: it
//! is closed when none has within `handshake_timeout`, it runs only a few stream handshakes at
//! once, and an address banned meanwhile loses it. After each case a real client still gets in.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use burrow_net::mux::{MuxStream, Opener};
use burrow_proto::{PREFACE_LEN, Preface, VERSION, caps};
use common::targets::{assert_echo, echo_target, read_until_closed};
use common::{Client, Server, TestDir, bounded, curl, fail_logins, ports, sample};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Handshakes one link may run at once (the server's `UNPROVEN_STREAMS`).
const LINK_HANDSHAKES: usize = 8;

/// A plain server with `handshake_timeout` set, a token `t`, and an admin listener.
async fn server(dir: &TestDir, handshake_timeout: &str, extra: &[&str]) -> Server {
    let config = dir.write(
        "server.toml",
        &format!("handshake_timeout = \"{handshake_timeout}\"\n"),
    );
    let block = ports(2).arg();
    let mut args = vec![
        "--config",
        &config,
        "--insecure-plain",
        "--token",
        "t",
        "--ports",
        &block,
        "--admin-listen",
        "127.0.0.1:0",
    ];
    args.extend_from_slice(extra);
    Server::start(dir, &args).await
}

/// Opens a link to `server`: the link preface, the server's answer (which must offer links),
/// then yamux.
async fn open_link(server: &Server) -> Opener {
    let mut tcp = TcpStream::connect(server.addr).await.unwrap();
    let link = Preface {
        version: VERSION,
        caps: caps::LINK,
    };
    tcp.write_all(&link.encode()).await.unwrap();
    let mut theirs = [0u8; PREFACE_LEN];
    tcp.read_exact(&mut theirs).await.unwrap();
    let theirs = Preface::decode(&theirs).unwrap();
    assert_ne!(theirs.caps & caps::MUX, 0, "the server did not offer links");
    burrow_net::mux::client(tcp)
}

/// Opens a stream on `link` and starts a handshake on it: the client's preface, then the
/// server's preface (and the challenge behind it), which shows the server is running it.
async fn start_handshake(link: &Opener) -> MuxStream {
    let mut stream = link.open().await.unwrap();
    let ours = Preface {
        version: VERSION,
        caps: 0,
    };
    stream.write_all(&ours.encode()).await.unwrap();
    let mut theirs = [0u8; PREFACE_LEN];
    stream.read_exact(&mut theirs).await.unwrap();
    Preface::decode(&theirs).unwrap();
    stream
}

/// Waits (at most `secs`) for the server to close `link`.
async fn assert_link_closed(link: &Opener, secs: u64, what: &str) {
    let closed = tokio::time::timeout(Duration::from_secs(secs), link.closed()).await;
    assert!(closed.is_ok(), "the link stayed open: {what}");
}

/// A real client over the mux carrier gets a working tunnel from `server`.
async fn still_serves(dir: &TestDir, server: &Server, message: &[u8]) {
    let echo = echo_target().await;
    let client = Client::start_tcp(dir, server, echo, "t", &["--carrier", "mux"]).await;
    assert_echo(client.port, message).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_link_that_never_authenticates_is_closed_at_the_deadline() {
    bounded(60, async {
        let dir = TestDir::new("link-deadline");
        let server = server(&dir, "1s", &[]).await;
        let base = server.admin_base().await;

        // One link with nothing on it, one with a handshake started and left to stall.
        let idle = open_link(&server).await;
        let busy = open_link(&server).await;
        let mut stalled = start_handshake(&busy).await;
        assert_link_closed(&idle, 10, "no stream at all").await;
        assert_link_closed(&busy, 10, "a stream stalled in its handshake").await;
        let (_, closed) = read_until_closed(&mut stalled, Duration::from_secs(5)).await;
        assert!(closed, "the stalled stream outlived its link");
        server
            .proc
            .wait_stderr("the link's deadline", |l| {
                l.contains("multiplexed connection closed: no stream authenticated within")
            })
            .await;
        let (_, text) = curl(&[&format!("{base}/metrics")]).await;
        let timeouts = "burrow_auth_failures_total{reason=\"timeout\"}";
        assert!(
            sample(&text, timeouts).is_some_and(|n| n >= 2.0),
            "two links timed out:\n{text}"
        );

        still_serves(&dir, &server, b"after the deadline").await;
    })
    .await
}

#[tokio::test(flavor = "multi_thread")]
async fn a_link_runs_only_a_few_handshakes_at_once() {
    bounded(60, async {
        let dir = TestDir::new("link-handshakes");
        // Long enough that nothing here ends by the deadline.
        let server = server(&dir, "120s", &[]).await;

        let link = open_link(&server).await;
        let mut running = Vec::new();
        for _ in 0..LINK_HANDSHAKES {
            running.push(start_handshake(&link).await);
        }
        // One more is refused: reset without the server's preface, while the others run.
        let mut refused = link.open().await.unwrap();
        let ours = Preface {
            version: VERSION,
            caps: 0,
        };
        let _ = refused.write_all(&ours.encode()).await;
        let (got, closed) = read_until_closed(&mut refused, Duration::from_secs(10)).await;
        assert!(closed, "the stream over the limit was kept");
        assert!(got.is_empty(), "the stream over the limit was answered");
        server
            .proc
            .wait_stderr("the refusal", |l| {
                l.contains("stream refused: too many handshakes in progress")
            })
            .await;
        assert!(!link.is_closed(), "the refusal closed the whole link");

        // A handshake that ends (here: the client walks away) frees its place for the next.
        drop(running.pop());
        let again = tokio::time::timeout(Duration::from_secs(10), async {
            loop {
                let mut stream = link.open().await.unwrap();
                stream.write_all(&ours.encode()).await.unwrap();
                let mut theirs = [0u8; PREFACE_LEN];
                if stream.read_exact(&mut theirs).await.is_ok() {
                    return stream;
                }
            }
        })
        .await;
        assert!(again.is_ok(), "a freed place was not given to a new stream");

        still_serves(&dir, &server, b"after the refusal").await;
    })
    .await
}

#[tokio::test(flavor = "multi_thread")]
async fn a_ban_closes_a_link_opened_before_it() {
    bounded(90, async {
        let dir = TestDir::new("link-ban");
        let server = server(&dir, "120s", &["--ban-after", "3"]).await;
        let base = server.admin_base().await;
        let link = open_link(&server).await;

        // The address earns a ban on the control port meanwhile.
        let echo = echo_target().await;
        fail_logins(&dir, &server, echo, 3).await;
        server
            .proc
            .wait_stderr("the ban", |l| l.contains("address banned"))
            .await;

        // The link's next stream finds the ban: the whole link goes.
        let mut stream = link.open().await.unwrap();
        let ours = Preface {
            version: VERSION,
            caps: 0,
        };
        let _ = stream.write_all(&ours.encode()).await;
        assert_link_closed(&link, 10, "a stream from a banned address").await;
        server
            .proc
            .wait_stderr("the link's end", |l| {
                l.contains("multiplexed connection closed: the address is banned")
            })
            .await;

        // Lifted by the operator: a real client over mux gets in.
        let (status, body) = curl(&["-X", "DELETE", &format!("{base}/bans/127.0.0.1")]).await;
        assert_eq!(status, 200, "{body}");
        still_serves(&dir, &server, b"after the ban").await;
    })
    .await
}

/// A WebSocket upgrade request for `/burrow`, with `extra` header lines.
fn upgrade_request(extra: &str) -> String {
    format!(
        "GET /burrow HTTP/1.1\r\nHost: burrow\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n{extra}\r\n"
    )
}

/// Sends an upgrade request with `extra` headers to `addr` and returns the answer's status
/// line; the connection is returned open (a 101 leaves the WebSocket waiting for burrow).
async fn ask_upgrade(addr: &str, extra: &str) -> (String, TcpStream) {
    let mut tcp = TcpStream::connect(addr).await.unwrap();
    tcp.write_all(upgrade_request(extra).as_bytes())
        .await
        .unwrap();
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n") {
        let n = tcp.read(&mut byte).await.unwrap();
        assert_eq!(n, 1, "the server closed before answering");
        head.push(byte[0]);
    }
    (String::from_utf8_lossy(&head).trim().to_owned(), tcp)
}

#[tokio::test(flavor = "multi_thread")]
async fn behind_a_trusted_proxy_bans_fall_on_the_client_it_names() {
    bounded(60, async {
        let dir = TestDir::new("ws-forwarded");
        let ws = format!("127.0.0.1:{}", ports(1).low);
        let extra = [
            "--ws-listen",
            &ws,
            "--ws-trusted-proxy",
            "127.0.0.1",
            "--ban-after",
            "1",
        ];
        let server = server(&dir, "1s", &extra).await;
        let base = server.admin_base().await;

        // A client through the proxy upgrades, then stalls: the failure is the named client's.
        let forwarded = "X-Forwarded-For: 192.0.2.1, 203.0.113.7\r\n";
        let (status, _stalled) = ask_upgrade(&ws, forwarded).await;
        assert!(status.starts_with("HTTP/1.1 101 "), "{status}");
        server
            .proc
            .wait_stderr("the named client's ban", |l| {
                l.contains("address banned") && l.contains("203.0.113.7")
            })
            .await;
        server
            .proc
            .wait_stderr("the failure, under the named client", |l| {
                l.contains("handshake not finished") && l.contains("client=203.0.113.7:0")
            })
            .await;

        // The banned client is refused with 403 before the upgrade, wherever it comes from.
        let (status, _) = ask_upgrade(&ws, "X-Forwarded-For: 203.0.113.7\r\n").await;
        assert!(status.starts_with("HTTP/1.1 403 "), "{status}");

        // Only that address is banned: not the proxy, not the forged entry.
        let (_, body) = curl(&[&format!("{base}/bans")]).await;
        let bans: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(bans.as_array().map(Vec::len), Some(1), "{body}");
        assert_eq!(bans[0]["address"], "203.0.113.7", "{body}");

        // Another client through the proxy, and a real client over ws, still get in.
        let (status, _) = ask_upgrade(&ws, "X-Forwarded-For: 198.51.100.2\r\n").await;
        assert!(status.starts_with("HTTP/1.1 101 "), "{status}");
        let echo = echo_target().await;
        let url = format!("ws://{ws}/burrow");
        let client = Client::start_tcp(&dir, &server, echo, "t", &["--carrier", &url]).await;
        assert_echo(client.port, b"through the proxy").await;
    })
    .await
}

#[tokio::test(flavor = "multi_thread")]
async fn an_untrusted_peer_cannot_name_another_client() {
    bounded(60, async {
        let dir = TestDir::new("ws-untrusted");
        let ws = format!("127.0.0.1:{}", ports(1).low);
        let extra = ["--ws-listen", &ws, "--ban-after", "1"];
        let server = server(&dir, "1s", &extra).await;
        let base = server.admin_base().await;

        // No proxy is trusted: the header is ignored and the failure is the TCP peer's.
        let (status, _stalled) = ask_upgrade(&ws, "X-Forwarded-For: 203.0.113.7\r\n").await;
        assert!(status.starts_with("HTTP/1.1 101 "), "{status}");
        server
            .proc
            .wait_stderr("the peer's ban", |l| {
                l.contains("address banned") && l.contains("127.0.0.1")
            })
            .await;
        let (_, body) = curl(&[&format!("{base}/bans")]).await;
        let bans: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(bans.as_array().map(Vec::len), Some(1), "{body}");
        assert_eq!(bans[0]["address"], "127.0.0.1", "{body}");
    })
    .await
}
