//! End-to-end: what happens before a session exists.
//!
//! Trust on first use and a changed server certificate, a wrong token, protocol version
//! mismatches in both directions (with raw sockets playing the other side), and garbage or silence
//! on the control port, after which the server must still serve real clients.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use burrow_proto::{PREFACE_LEN, Preface, VERSION};
use common::data::Pattern;
use common::targets::{assert_echo, echo_target, read_until_closed};
use common::{Client, Proc, Server, TestDir, any_line_has, bounded, ports, tcp_args};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// Replaces the hex of every `sha256:<64 hex>` in `text` with a different value.
fn corrupt_fingerprints(text: &str) -> (String, usize) {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    let mut count = 0;
    while let Some(at) = rest.find("sha256:") {
        let (before, after) = rest.split_at(at + "sha256:".len());
        out.push_str(before);
        let hex: String = after.chars().take_while(char::is_ascii_hexdigit).collect();
        if hex.len() == 64 {
            let wrong = if hex.starts_with('0') { "1" } else { "0" };
            out.push_str(&wrong.repeat(64));
            count += 1;
            rest = &after[64..];
        } else {
            rest = after;
        }
    }
    out.push_str(rest);
    (out, count)
}

#[tokio::test(flavor = "multi_thread")]
async fn first_use_trust_records_the_server_and_detects_a_change() {
    bounded(90, async {
        let dir = TestDir::new("tofu");
        let block = ports(4).arg();
        let server = Server::start(&dir, &["--token", "t", "--ports", &block]).await;
        let fingerprint = server.fingerprint.clone().unwrap();
        let echo = echo_target().await;
        let args: Vec<String> = [
            "tcp",
            &echo.to_string(),
            "--to",
            &server.to(),
            "--known-hosts",
            &dir.known_hosts(),
            "--token",
            "t",
        ]
        .iter()
        .map(|a| a.to_string())
        .collect();

        let mut first = Client::start(&dir, args.clone()).await;
        assert_echo(first.port, b"trusted on first use").await;
        let known = std::fs::read_to_string(dir.known_hosts()).unwrap();
        assert!(known.contains("sha256:"), "known hosts file: {known:?}");
        assert!(
            known.contains(&fingerprint),
            "{fingerprint} not recorded in {known:?}"
        );
        first.proc.kill9().await;

        // The recorded server is trusted again.
        let mut second = Client::start(&dir, args.clone()).await;
        assert_echo(second.port, b"trusted again").await;
        second.proc.kill9().await;

        // A different certificate for the same address is refused.
        let (tampered, count) = corrupt_fingerprints(&known);
        assert!(count > 0, "no fingerprint to change in {known:?}");
        std::fs::write(dir.known_hosts(), tampered).unwrap();
        let mut third = Proc::spawn("client", &dir, &args);
        let stderr = third.expect_exit_1().await;
        assert!(
            any_line_has(&stderr, &["fingerprint", "changed"]),
            "no `fingerprint ... changed` error:\n{}",
            third.dump()
        );
    })
    .await
}

#[tokio::test(flavor = "multi_thread")]
async fn wrong_token_is_fatal_and_the_server_keeps_serving() {
    bounded(60, async {
        let dir = TestDir::new("token");
        let block = ports(4).arg();
        let server = Server::start(&dir, &["--token", "right", "--ports", &block]).await;
        let echo = echo_target().await;
        let mut wrong = Proc::spawn("client", &dir, &tcp_args(&dir, &server, echo, "wrong", &[]));
        let stderr = wrong.expect_exit_1().await;
        assert!(
            any_line_has(&stderr, &["burrow: error:", "authentication failed"]),
            "no `authentication failed` error:\n{}",
            wrong.dump()
        );
        let right = Client::start_tcp(&dir, &server, echo, "right", &[]).await;
        assert_echo(right.port, b"the right token works").await;
    })
    .await
}

#[tokio::test(flavor = "multi_thread")]
async fn newer_client_is_told_to_upgrade_the_server() {
    bounded(60, async {
        let dir = TestDir::new("newer-client");
        let block = ports(2).arg();
        let server = Server::start(
            &dir,
            &["--insecure-plain", "--token", "t", "--ports", &block],
        )
        .await;
        let mut conn = TcpStream::connect(server.addr).await.unwrap();
        conn.write_all(
            &Preface {
                version: 99,
                caps: 0,
            }
            .encode(),
        )
        .await
        .unwrap();
        let mut theirs = [0u8; PREFACE_LEN];
        tokio::time::timeout(Duration::from_secs(10), conn.read_exact(&mut theirs))
            .await
            .expect("the server sent no preface")
            .unwrap();
        let preface = Preface::decode(&theirs).unwrap();
        assert_eq!(preface.version, VERSION, "the server's preface");
        let (_, closed) = read_until_closed(&mut conn, Duration::from_secs(10)).await;
        assert!(
            closed,
            "the server kept a connection of a newer protocol open"
        );
        server
            .proc
            .wait_stderr("`upgrade the server`", |l| l.contains("upgrade the server"))
            .await;
    })
    .await
}

#[tokio::test(flavor = "multi_thread")]
async fn newer_server_is_told_to_upgrade_the_client() {
    bounded(60, async {
        let dir = TestDir::new("newer-server");
        let fake = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let fake_addr = fake.local_addr().unwrap();
        // A server of protocol version 99: it answers with its preface and waits.
        let fake_server = tokio::spawn(async move {
            let (mut conn, _) = fake.accept().await.unwrap();
            conn.write_all(
                &Preface {
                    version: 99,
                    caps: 0,
                }
                .encode(),
            )
            .await
            .unwrap();
            let mut theirs = [0u8; PREFACE_LEN];
            conn.read_exact(&mut theirs).await.unwrap();
            let _ = read_until_closed(&mut conn, Duration::from_secs(15)).await;
            Preface::decode(&theirs).unwrap()
        });
        let args: Vec<String> = [
            "tcp",
            "9",
            "--to",
            &fake_addr.to_string(),
            "--insecure-plain",
            "--token",
            "t",
            "--known-hosts",
            &dir.known_hosts(),
        ]
        .iter()
        .map(|a| a.to_string())
        .collect();
        let mut client = Proc::spawn("client", &dir, &args);
        let stderr = client.expect_exit_1().await;
        assert!(
            any_line_has(&stderr, &["upgrade the client"]),
            "no `upgrade the client` advice:\n{}",
            client.dump()
        );
        let client_preface = fake_server.await.unwrap();
        assert_eq!(client_preface.version, VERSION, "the client's preface");
    })
    .await
}

/// A configuration file that makes stalled handshakes end after one second.
fn short_handshake_config(dir: &TestDir) -> String {
    dir.write("server.toml", "handshake_timeout = \"1s\"\n")
}

/// Opens a connection to `addr`, sends `bytes`, and checks that the server closes it soon.
async fn assert_closed_after(addr: std::net::SocketAddr, what: &str, bytes: Vec<u8>) {
    let mut conn = TcpStream::connect(addr).await.unwrap();
    if !bytes.is_empty() {
        // The server may already have hung up: a failed write is fine too.
        let _ = conn.write_all(&bytes).await;
    }
    let (_, closed) = read_until_closed(&mut conn, Duration::from_secs(5)).await;
    assert!(closed, "the server kept a connection open after {what}");
}

/// The first bytes of a TLS 1.3 ClientHello record.
fn client_hello() -> Vec<u8> {
    let mut hello = vec![
        0x16, 0x03, 0x01, 0x00, 0xc8, 0x01, 0x00, 0x00, 0xc4, 0x03, 0x03,
    ];
    hello.extend(Pattern::bytes(9, 32));
    hello.extend([0x20]);
    hello.extend(Pattern::bytes(10, 32));
    hello.extend([0x00, 0x02, 0x13, 0x01, 0x01, 0x00]);
    hello
}

#[tokio::test(flavor = "multi_thread")]
async fn plain_server_closes_garbage_and_stalls_and_keeps_serving() {
    bounded(60, async {
        let dir = TestDir::new("garbage-plain");
        let config = short_handshake_config(&dir);
        let block = ports(4).arg();
        let args = [
            "--config",
            &config,
            "--insecure-plain",
            "--token",
            "t",
            "--ports",
            &block,
        ];
        let server = Server::start(&dir, &args).await;
        let mut huge_frame = Preface {
            version: VERSION,
            caps: 0,
        }
        .encode()
        .to_vec();
        huge_frame.extend(u32::MAX.to_be_bytes());
        let probes: Vec<(&str, Vec<u8>)> = vec![
            ("random bytes", Pattern::bytes(8, 64)),
            (
                "an HTTP request",
                b"GET / HTTP/1.1\r\nHost: burrow\r\n\r\n".to_vec(),
            ),
            ("a TLS ClientHello", client_hello()),
            ("silence", Vec::new()),
            (
                "a preface and silence",
                Preface {
                    version: VERSION,
                    caps: 0,
                }
                .encode()
                .to_vec(),
            ),
            ("an oversized frame", huge_frame),
        ];
        probes_are_closed_and_the_server_still_serves(&dir, &server, probes, b"still serving")
            .await;
    })
    .await
}

#[tokio::test(flavor = "multi_thread")]
async fn tls_server_closes_plain_prefaces_and_stalls_and_keeps_serving() {
    bounded(60, async {
        let dir = TestDir::new("garbage-tls");
        let config = short_handshake_config(&dir);
        let block = ports(4).arg();
        let server = Server::start(
            &dir,
            &["--config", &config, "--token", "t", "--ports", &block],
        )
        .await;
        let probes: Vec<(&str, Vec<u8>)> = vec![
            (
                "a plain preface",
                Preface {
                    version: VERSION,
                    caps: 0,
                }
                .encode()
                .to_vec(),
            ),
            ("random bytes", Pattern::bytes(11, 64)),
            ("silence", Vec::new()),
            ("a ClientHello and silence", client_hello()),
        ];
        probes_are_closed_and_the_server_still_serves(
            &dir,
            &server,
            probes,
            b"still serving over TLS",
        )
        .await;
    })
    .await
}

/// Sends every probe on its own connection at once, checks that the server closes each, then
/// that a real client still gets a working tunnel.
async fn probes_are_closed_and_the_server_still_serves(
    dir: &TestDir,
    server: &Server,
    probes: Vec<(&'static str, Vec<u8>)>,
    message: &[u8],
) {
    let mut checks = tokio::task::JoinSet::new();
    for (what, bytes) in probes {
        checks.spawn(assert_closed_after(server.addr, what, bytes));
    }
    while let Some(done) = checks.join_next().await {
        done.unwrap();
    }
    let echo = echo_target().await;
    let client = Client::start_tcp(dir, server, echo, "t", &[]).await;
    assert_echo(client.port, message).await;
}
