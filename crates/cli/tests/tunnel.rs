//! End-to-end: bytes through a tunnel between a real `burrow server` and `burrow tcp`, over
//! every carrier (plain TCP, TLS, mux over TLS and over plain TCP, QUIC, WebSocket directly and
//! WebSocket over TLS through nginx).
//!
//! Echo, a thousand visitors at once, half-close in both directions, 100 MB each way with a
//! hash check, a real HTTP client against a real HTTP server, a client that reconnects to a
//! restarted server, and visitors of a client that keeps no pool (served on streams the server
//! opens, on the carriers with a link).
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[macro_use]
mod common;

use common::carriers::{Carrier, Deployment};
use common::data::{Hash64, Pattern};
use common::targets::{assert_echo, echo_once, echo_target, target, visit};
use common::{Client, Proc, Server, TestDir, bounded, parse_ready, ports};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;
use tokio::task::JoinSet;

over_carriers!(
    echo,
    thousand_concurrent_visitors,
    half_close_visitor_first,
    half_close_target_first,
    bulk_upload_100mb,
    bulk_download_100mb,
    curl_fetches_a_file_from_python_http_server,
    client_reconnects_to_a_restarted_server,
    visitors_of_an_empty_pool,
);

/// Starts a server with shared token `t` on a fresh block of ports, accepting `carrier`, and a
/// client publishing `target` over it.
async fn tunnel_to(dir: &TestDir, target: u16, carrier: Carrier) -> (Deployment, Client) {
    let block = ports(4).arg();
    let deployment = carrier
        .deploy(dir, &["--token", "t", "--ports", &block])
        .await;
    let client = deployment.client_tcp(dir, target, &[]).await;
    (deployment, client)
}

/// Waits for the server's log line of a finished stream that names `path`.
async fn wait_relay_path(server: &Server, path: &str) {
    server
        .proc
        .wait_for(path, |o| {
            o.stderr
                .iter()
                .find(|l| l.contains("stream closed") && l.contains(path))
                .cloned()
        })
        .await;
}

async fn echo(carrier: Carrier) {
    bounded(60, async {
        let dir = TestDir::new(&format!("echo-{}", carrier.label()));
        let echo = echo_target().await;
        let (deployment, client) = tunnel_to(&dir, echo, carrier).await;
        let server = &deployment.server;
        assert_eq!(
            server.fingerprint.is_none(),
            carrier.plain(),
            "a fingerprint is printed exactly when TLS is on"
        );
        let line = client.proc.output().stdout[0].clone();
        let ready = parse_ready(&line);
        assert_eq!(ready.name, format!("tcp-{echo}"), "{line}");
        assert!(ready.local.ends_with(&format!(":{echo}")), "{line}");
        assert_echo(client.port, b"hello through the tunnel").await;
        assert_echo(client.port, &Pattern::bytes(1, 300_000)).await;
        // A pooled connection carries a reusable stream: a short one in chunks (and then the
        // connection goes back to the pool), bulk over plain TCP spliced (the bytes never
        // enter user space); a stream of a multiplexed carrier is framed by its link.
        let paths: &[&str] = match carrier {
            Carrier::Tcp => &["path=chunked", "path=splice"],
            Carrier::Tls => &["path=chunked"],
            _ => &["path=copy"],
        };
        for path in paths {
            wait_relay_path(server, path).await;
        }
        if matches!(carrier, Carrier::Tcp | Carrier::Tls) {
            // The short visitor's stream ended cleanly: its connection went back to the pool.
            server
                .proc
                .wait_for("a data connection back in the pool", |o| {
                    o.stderr
                        .iter()
                        .find(|l| l.contains("data connection ready") && l.contains("hello=reused"))
                        .cloned()
                })
                .await;
        }
        // Every pooled data connection (or pooled stream of a link) came with an early hello,
        // or came back from a stream: none waited for a challenge.
        let ready: Vec<String> = (server.proc.output().stderr.iter())
            .filter(|l| l.contains("data connection ready"))
            .cloned()
            .collect();
        assert!(
            !ready.is_empty(),
            "no data connection\n{}",
            server.proc.dump()
        );
        for line in &ready {
            assert!(
                line.contains("hello=early") || line.contains("hello=reused"),
                "expected hello=early or hello=reused: {line}"
            );
        }
        let established = format!("carrier=\"{}\"", server_carrier(carrier));
        assert!(
            server
                .proc
                .output()
                .stderr
                .iter()
                .any(|l| l.contains("session established") && l.contains(&established)),
            "the server logs the session's carrier as {established}\n{}",
            server.proc.dump()
        );
    })
    .await
}

/// Visitors that find no pooled connection (the client keeps none): on the carriers with a
/// link the server opens a stream toward the client for each, and says so on the stream's log
/// line (`opened=server`); over TCP the client is asked for a connection (`opened=waited`, or
/// `opened=pool` for one that an earlier visitor's stream gave back). The bytes arrive intact
/// either way, half-close included: the target answers only after the visitor's end of file.
async fn visitors_of_an_empty_pool(carrier: Carrier) {
    const VISITORS: u64 = 8;
    bounded(60, async {
        let dir = TestDir::new(&format!("empty-pool-{}", carrier.label()));
        let block = ports(4).arg();
        let deployment = carrier
            .deploy(&dir, &["--token", "t", "--ports", &block])
            .await;
        // Reads to the visitor's end of file, then sends it all back, then closes.
        let answer = target(|mut conn| async move {
            let mut got = Vec::new();
            conn.read_to_end(&mut got).await.unwrap();
            conn.write_all(&got).await.unwrap();
            conn.shutdown().await.unwrap();
        })
        .await;
        let client = deployment
            .client_tcp(&dir, answer, &["--pool-size", "0"])
            .await;
        let port = client.port;
        let mut visitors = JoinSet::new();
        for i in 0..VISITORS {
            visitors.spawn(async move {
                let data = Pattern::bytes(50 + i, 100_000 + i as usize * 1000);
                let mut conn = visit(port).await;
                conn.write_all(&data).await.unwrap();
                conn.shutdown().await.unwrap();
                let mut back = Vec::new();
                conn.read_to_end(&mut back).await.unwrap();
                assert_eq!(back.len(), data.len(), "visitor {i}: length");
                assert!(back == data, "visitor {i}: bytes differ");
            });
        }
        while let Some(done) = visitors.join_next().await {
            done.unwrap();
        }
        // Over TCP the first visitor waits for a connection; a later one may find one that an
        // earlier visitor's reusable stream gave back (`opened=pool`).
        let opened: &[&str] = match carrier {
            Carrier::Tcp | Carrier::Tls => &["opened=waited", "opened=pool"],
            _ => &["opened=server"],
        };
        let server = &deployment.server;
        let closed = server.closed_streams(VISITORS as usize).await;
        for line in &closed {
            assert!(
                opened.iter().any(|o| line.contains(o)),
                "expected one of {opened:?}: {line}"
            );
        }
        assert!(
            closed.iter().any(|l| l.contains(opened[0])),
            "expected {}: {closed:#?}",
            opened[0]
        );
    })
    .await
}

/// The carrier's name in the server's log.
fn server_carrier(carrier: Carrier) -> &'static str {
    match carrier {
        Carrier::Tcp => "tcp",
        Carrier::Tls => "tls",
        Carrier::Mux | Carrier::MuxPlain => "mux",
        Carrier::Quic => "quic",
        Carrier::Ws | Carrier::Wss => "ws",
    }
}

async fn thousand_concurrent_visitors(carrier: Carrier) {
    bounded(120, async {
        let dir = TestDir::new(&format!("many-{}", carrier.label()));
        let echo = echo_target().await;
        let (_server, client) = tunnel_to(&dir, echo, carrier).await;
        let port = client.port;
        let mut visitors = JoinSet::new();
        for i in 0..1000u64 {
            visitors.spawn(async move {
                let data = Pattern::bytes(1000 + i, 1000 + (i as usize % 7) * 700);
                let back = echo_once(port, &data).await;
                assert_eq!(back.len(), data.len(), "visitor {i}: length");
                assert!(back == data, "visitor {i}: bytes differ");
            });
        }
        while let Some(done) = visitors.join_next().await {
            done.unwrap();
        }
    })
    .await
}

async fn half_close_visitor_first(carrier: Carrier) {
    bounded(60, async {
        let dir = TestDir::new(&format!("half-visitor-{}", carrier.label()));
        let (tx, mut rx) = mpsc::channel::<Vec<u8>>(4);
        // The target answers only after the visitor's end of file.
        let answer = target(move |mut conn| {
            let tx = tx.clone();
            async move {
                let mut got = Vec::new();
                conn.read_to_end(&mut got).await.unwrap();
                conn.write_all(format!("got {} bytes", got.len()).as_bytes())
                    .await
                    .unwrap();
                conn.shutdown().await.unwrap();
                tx.send(got).await.unwrap();
            }
        })
        .await;
        let (_server, client) = tunnel_to(&dir, answer, carrier).await;
        let mut conn = visit(client.port).await;
        conn.write_all(b"question").await.unwrap();
        conn.shutdown().await.unwrap();
        let mut reply = Vec::new();
        conn.read_to_end(&mut reply).await.unwrap();
        assert_eq!(reply, b"got 8 bytes");
        assert_eq!(rx.recv().await.unwrap(), b"question");
    })
    .await
}

async fn half_close_target_first(carrier: Carrier) {
    bounded(60, async {
        let dir = TestDir::new(&format!("half-target-{}", carrier.label()));
        let (tx, mut rx) = mpsc::channel::<Vec<u8>>(4);
        // The target speaks first, closes its write half, and still listens.
        let speaker = target(move |mut conn| {
            let tx = tx.clone();
            async move {
                conn.write_all(b"target done talking").await.unwrap();
                conn.shutdown().await.unwrap();
                let mut got = Vec::new();
                conn.read_to_end(&mut got).await.unwrap();
                tx.send(got).await.unwrap();
            }
        })
        .await;
        let (_server, client) = tunnel_to(&dir, speaker, carrier).await;
        let mut conn = visit(client.port).await;
        let mut heard = Vec::new();
        conn.read_to_end(&mut heard).await.unwrap();
        assert_eq!(heard, b"target done talking");
        let late = Pattern::bytes(4, 200_000);
        conn.write_all(&late).await.unwrap();
        conn.shutdown().await.unwrap();
        let got = rx.recv().await.unwrap();
        assert_eq!(
            got.len(),
            late.len(),
            "the target lost bytes sent after its half-close"
        );
        assert!(
            got == late,
            "bytes sent after the target's half-close were changed"
        );
    })
    .await
}

/// 100 MiB, a whole number of the chunks below.
const BULK: u64 = 100 * 1024 * 1024;
const CHUNK: usize = 256 * 1024;

/// The hash of `len` bytes of the pattern for `seed`.
fn pattern_hash(seed: u64, len: u64) -> u64 {
    let mut pattern = Pattern::new(seed);
    let mut hash = Hash64::new();
    let mut buf = vec![0u8; CHUNK];
    for _ in 0..len / CHUNK as u64 {
        pattern.fill(&mut buf);
        hash.update(&buf);
    }
    hash.finish()
}

/// 100 MB from visitor to target, hashed on both ends.
async fn bulk_upload_100mb(carrier: Carrier) {
    bounded(170, async {
        let dir = TestDir::new(&format!("upload-{}", carrier.label()));
        // The target hashes everything up to end of file and answers with hash and length.
        let hasher = target(|mut conn| async move {
            let mut hash = Hash64::new();
            let mut buf = vec![0u8; CHUNK];
            loop {
                let n = conn.read(&mut buf).await.unwrap();
                if n == 0 {
                    break;
                }
                hash.update(&buf[..n]);
            }
            let mut answer = hash.finish().to_le_bytes().to_vec();
            answer.extend_from_slice(&hash.len().to_le_bytes());
            conn.write_all(&answer).await.unwrap();
            conn.shutdown().await.unwrap();
        })
        .await;
        let (_server, client) = tunnel_to(&dir, hasher, carrier).await;
        let conn = visit(client.port).await;
        let (mut r, mut w) = conn.into_split();
        let sender = tokio::spawn(async move {
            let mut pattern = Pattern::new(5);
            let mut hash = Hash64::new();
            let mut buf = vec![0u8; CHUNK];
            for _ in 0..BULK / CHUNK as u64 {
                pattern.fill(&mut buf);
                hash.update(&buf);
                w.write_all(&buf).await.unwrap();
            }
            w.shutdown().await.unwrap();
            hash.finish()
        });
        let mut answer = Vec::new();
        r.read_to_end(&mut answer).await.unwrap();
        let sent = sender.await.unwrap();
        assert_eq!(answer.len(), 16, "the target's answer: {answer:?}");
        let len = u64::from_le_bytes(answer[8..].try_into().unwrap());
        assert_eq!(len, BULK, "the target received a different number of bytes");
        assert_eq!(
            u64::from_le_bytes(answer[..8].try_into().unwrap()),
            sent,
            "hash differs"
        );
    })
    .await
}

/// 100 MB from target to visitor, hashed on both ends.
async fn bulk_download_100mb(carrier: Carrier) {
    bounded(170, async {
        let dir = TestDir::new(&format!("download-{}", carrier.label()));
        // The target reads a seed and a length, then sends that much of the seed's pattern.
        let generator = target(|mut conn| async move {
            let seed = conn.read_u64().await.unwrap();
            let len = conn.read_u64().await.unwrap();
            let mut pattern = Pattern::new(seed);
            let mut buf = vec![0u8; CHUNK];
            for _ in 0..len / CHUNK as u64 {
                pattern.fill(&mut buf);
                conn.write_all(&buf).await.unwrap();
            }
            conn.shutdown().await.unwrap();
        })
        .await;
        let (_server, client) = tunnel_to(&dir, generator, carrier).await;
        let expected = tokio::task::spawn_blocking(|| pattern_hash(6, BULK));
        let mut conn = visit(client.port).await;
        conn.write_u64(6).await.unwrap();
        conn.write_u64(BULK).await.unwrap();
        conn.shutdown().await.unwrap();
        let mut hash = Hash64::new();
        let mut buf = vec![0u8; CHUNK];
        loop {
            let n = conn.read(&mut buf).await.unwrap();
            if n == 0 {
                break;
            }
            hash.update(&buf[..n]);
        }
        assert_eq!(
            hash.len(),
            BULK,
            "the visitor received a different number of bytes"
        );
        assert_eq!(hash.finish(), expected.await.unwrap(), "hash differs");
    })
    .await
}

async fn curl_fetches_a_file_from_python_http_server(carrier: Carrier) {
    bounded(90, async {
        let dir = TestDir::new(&format!("http-{}", carrier.label()));
        let www = dir.join("www");
        std::fs::create_dir_all(&www).unwrap();
        let file = Pattern::bytes(13, 5 * 1024 * 1024);
        std::fs::write(dir.path().join("www/file"), &file).unwrap();

        let mut python = tokio::process::Command::new("python3");
        python.args([
            "-u",
            "-m",
            "http.server",
            "--bind",
            "127.0.0.1",
            "0",
            "--directory",
            &www,
        ]);
        let http = Proc::spawn_command("python3 http.server (CI must install python3)", python);
        let line = http
            .wait_stdout("`Serving HTTP on`", |l| l.starts_with("Serving HTTP"))
            .await;
        let port: u16 = line
            .split_whitespace()
            .skip_while(|w| *w != "port")
            .nth(1)
            .and_then(|p| p.parse().ok())
            .unwrap_or_else(|| panic!("no port in {line:?}"));

        let (_server, client) = tunnel_to(&dir, port, carrier).await;
        let out = dir.join("out");
        let url = format!("http://127.0.0.1:{}/file", client.port);
        let curl = tokio::process::Command::new("curl")
            .args(["-sS", "--max-time", "30", &url, "-o", &out])
            .kill_on_drop(true)
            .output()
            .await
            .unwrap_or_else(|e| panic!("curl is required for this test (CI installs it): {e}"));
        assert!(
            curl.status.success(),
            "curl failed: {}\n{}",
            curl.status,
            String::from_utf8_lossy(&curl.stderr)
        );
        let got = std::fs::read(&out).unwrap();
        assert_eq!(got.len(), file.len(), "curl downloaded a different length");
        assert_eq!(
            Hash64::of(&got),
            Hash64::of(&file),
            "curl downloaded different bytes"
        );
    })
    .await
}

async fn client_reconnects_to_a_restarted_server(carrier: Carrier) {
    bounded(90, async {
        let dir = TestDir::new(&format!("restart-{}", carrier.label()));
        let block = ports(4).arg();
        let mut deployment = carrier
            .deploy(&dir, &["--token", "t", "--ports", &block])
            .await;
        let echo = echo_target().await;
        let client = deployment.client_tcp(&dir, echo, &[]).await;
        assert_echo(client.port, b"before the crash").await;
        let fingerprint = deployment.server.fingerprint.clone();
        deployment.restart(&dir).await;
        assert_eq!(
            deployment.server.fingerprint, fingerprint,
            "the state dir kept no identity"
        );
        let port = client.wait_ready_nth(2, Duration::from_secs(45)).await;
        assert_eq!(port, client.port, "the client got its port back");
        assert_echo(port, b"after the restart").await;
    })
    .await
}

/// Lines of the server's log that contain every one of `needles`.
fn server_lines(server: &Server, needles: &[&str]) -> usize {
    (server.proc.output().stderr.iter())
        .filter(|l| needles.iter().all(|n| l.contains(n)))
        .count()
}

/// An echo target published over `carrier` by a client that keeps one pooled connection.
async fn echo_with_one_pooled(dir: &TestDir, carrier: Carrier) -> (Deployment, Client) {
    let echo = echo_target().await;
    let block = ports(4).arg();
    let deployment = carrier
        .deploy(dir, &["--token", "t", "--ports", &block])
        .await;
    let client = deployment
        .client_tcp(dir, echo, &["--pool-size", "1"])
        .await;
    (deployment, client)
}

#[tokio::test]
async fn short_visitors_reuse_their_data_connections() {
    short_visitors_reuse(Carrier::Tcp).await;
    short_visitors_reuse(Carrier::Tls).await;
}

/// On the pooled carriers, short visitors' streams are reusable: each data connection goes
/// back to the pool when its stream has ended both ways, and carries later visitors, so eight
/// visitors in a row cost fewer than eight new data connections. A visitor that resets its
/// connection ends its stream with an error: that data connection closes, and the next visitor
/// is served all the same.
async fn short_visitors_reuse(carrier: Carrier) {
    const VISITORS: usize = 8;
    bounded(90, async {
        let dir = TestDir::new(&format!("reuse-{}", carrier.label()));
        let (deployment, client) = echo_with_one_pooled(&dir, carrier).await;
        let server = &deployment.server;
        for i in 0..VISITORS {
            // Short: a plain carrier sends bulk raw (spliced), and then closes the connection.
            assert_echo(client.port, &Pattern::bytes(i as u64, 100 + 1_000 * i)).await;
            server
                .proc
                .wait_for("the visitor's data connection back in the pool", |_| {
                    (server_lines(server, &["hello=reused"]) > i).then_some(())
                })
                .await;
        }
        assert_eq!(
            server_lines(server, &["stream closed", "path=chunked"]),
            VISITORS,
            "{}",
            server.proc.dump()
        );
        let dialed = server_lines(server, &["data connection ready", "hello=early"]);
        assert!(
            dialed < VISITORS,
            "{dialed} new data connections for {VISITORS} visitors in a row\n{}",
            server.proc.dump()
        );

        // A visitor that resets mid-stream: its stream fails, its connection is not reused.
        let mut reset = visit(client.port).await;
        reset.write_all(b"half a request").await.unwrap();
        let mut back = [0u8; 14];
        reset.read_exact(&mut back).await.unwrap();
        reset.set_zero_linger().unwrap();
        drop(reset);
        server
            .proc
            .wait_for("the reset visitor's stream ended", |o| {
                o.stderr
                    .iter()
                    .find(|l| l.contains("stream ended"))
                    .cloned()
            })
            .await;
        assert_eq!(server_lines(server, &["hello=reused"]), VISITORS);
        assert_echo(client.port, b"served after a reset").await;
    })
    .await
}

/// A reusable stream that outlives the client's wait for its connection: the client dials a
/// replacement meanwhile, and the connection, given back when the stream ends, lingers on its
/// own and serves a later visitor. The server's pool hands out connections oldest first, so
/// with the replacement taken by one visitor, the next one is served on the lingering
/// connection: it would hang if nothing on the client read it.
#[tokio::test]
async fn a_connection_given_back_late_serves_a_later_visitor() {
    given_back_late(Carrier::Tcp).await;
    given_back_late(Carrier::Tls).await;
}

async fn given_back_late(carrier: Carrier) {
    bounded(90, async {
        let dir = TestDir::new(&format!("reuse-late-{}", carrier.label()));
        let (deployment, client) = echo_with_one_pooled(&dir, carrier).await;
        let server = &deployment.server;
        server
            .proc
            .wait_for("the client's pooled connection", |_| {
                (server_lines(server, &["data connection ready"]) >= 1).then_some(())
            })
            .await;
        let mut long = visit(client.port).await;
        long.write_all(b"a").await.unwrap();
        let mut one = [0u8; 1];
        long.read_exact(&mut one).await.unwrap();
        server
            .proc
            .wait_for(
                "the client's replacement for the long stream's connection",
                |_| {
                    (server_lines(server, &["data connection ready", "hello=early"]) >= 2)
                        .then_some(())
                },
            )
            .await;
        long.shutdown().await.unwrap();
        let mut rest = Vec::new();
        long.read_to_end(&mut rest).await.unwrap();
        assert!(rest.is_empty(), "{rest:?}");
        server
            .proc
            .wait_for("the long stream's connection back in the pool", |_| {
                (server_lines(server, &["hello=reused"]) >= 1).then_some(())
            })
            .await;
        // The replacement first, held open; then the lingering connection.
        let mut held = visit(client.port).await;
        held.write_all(b"e").await.unwrap();
        held.read_exact(&mut one).await.unwrap();
        assert_echo(client.port, b"served on the lingering connection").await;
        held.shutdown().await.unwrap();
        held.read_to_end(&mut rest).await.unwrap();
        assert!(rest.is_empty(), "{rest:?}");
        assert_eq!(
            server_lines(server, &["the pool is empty"]),
            0,
            "every visitor found an idle connection\n{}",
            server.proc.dump()
        );
    })
    .await
}
