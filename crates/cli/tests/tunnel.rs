//! End-to-end: bytes through a tunnel between a real `burrow server` and `burrow tcp`.
//!
//! Echo over TLS and plain TCP, a thousand visitors at once, half-close in both directions,
//! 100 MB each way with a hash check, and a real HTTP client against a real HTTP server.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::data::{Hash64, Pattern};
use common::targets::{assert_echo, echo_once, echo_target, target, visit};
use common::{Client, Proc, Server, TestDir, bounded, parse_ready, ports};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;
use tokio::task::JoinSet;

/// Starts a server with shared token `t` on a fresh block of ports (TLS unless `plain`) and a
/// client publishing `target`.
async fn tunnel_to(dir: &TestDir, target: u16, plain: bool) -> (Server, Client) {
    let block = ports(4).arg();
    let mut args = vec!["--token", "t", "--ports", &block];
    if plain {
        args.push("--insecure-plain");
    }
    let server = Server::start(dir, &args).await;
    let client = Client::start_tcp(dir, &server, target, "t", &[]).await;
    (server, client)
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

#[tokio::test(flavor = "multi_thread")]
async fn echo_over_tls_with_pinned_fingerprint() {
    bounded(60, async {
        let dir = TestDir::new("echo-tls");
        let echo = echo_target().await;
        let (server, client) = tunnel_to(&dir, echo, false).await;
        let line = client.proc.output().stdout[0].clone();
        let ready = parse_ready(&line);
        assert_eq!(ready.name, format!("tcp-{echo}"), "{line}");
        assert!(ready.local.ends_with(&format!(":{echo}")), "{line}");
        assert_echo(client.port, b"hello through TLS").await;
        assert_echo(client.port, &Pattern::bytes(1, 300_000)).await;
        // TLS must be decrypted and encrypted: the buffered path.
        wait_relay_path(&server, "path=copy").await;
    })
    .await
}

#[tokio::test(flavor = "multi_thread")]
async fn echo_over_insecure_plain() {
    bounded(60, async {
        let dir = TestDir::new("echo-plain");
        let echo = echo_target().await;
        let (server, client) = tunnel_to(&dir, echo, true).await;
        assert!(
            server.fingerprint.is_none(),
            "a plain server printed a fingerprint"
        );
        assert_echo(client.port, b"hello in the clear").await;
        // A plain carrier is spliced: the bytes never enter user space.
        wait_relay_path(&server, "path=splice").await;
        assert_echo(client.port, &Pattern::bytes(2, 300_000)).await;
    })
    .await
}

#[tokio::test(flavor = "multi_thread")]
async fn thousand_concurrent_visitors() {
    bounded(120, async {
        let dir = TestDir::new("many");
        let echo = echo_target().await;
        let (_server, client) = tunnel_to(&dir, echo, false).await;
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

#[tokio::test(flavor = "multi_thread")]
async fn half_close_visitor_first() {
    bounded(60, async {
        let dir = TestDir::new("half-visitor");
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
        let (_server, client) = tunnel_to(&dir, answer, false).await;
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

#[tokio::test(flavor = "multi_thread")]
async fn half_close_target_first() {
    bounded(60, async {
        let dir = TestDir::new("half-target");
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
        let (_server, client) = tunnel_to(&dir, speaker, false).await;
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
async fn bulk_upload(plain: bool) {
    bounded(170, async {
        let dir = TestDir::new(if plain { "upload-plain" } else { "upload" });
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
        let (_server, client) = tunnel_to(&dir, hasher, plain).await;
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
async fn bulk_download(plain: bool) {
    bounded(170, async {
        let dir = TestDir::new(if plain { "download-plain" } else { "download" });
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
        let (_server, client) = tunnel_to(&dir, generator, plain).await;
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

#[tokio::test(flavor = "multi_thread")]
async fn curl_fetches_a_file_from_python_http_server() {
    bounded(90, async {
        let dir = TestDir::new("http");
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

        let (_server, client) = tunnel_to(&dir, port, false).await;
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

#[tokio::test(flavor = "multi_thread")]
async fn bulk_upload_100mb_over_tls() {
    bulk_upload(false).await
}

#[tokio::test(flavor = "multi_thread")]
async fn bulk_download_100mb_over_tls() {
    bulk_download(false).await
}

#[tokio::test(flavor = "multi_thread")]
async fn bulk_upload_100mb_over_plain_splice() {
    bulk_upload(true).await
}

#[tokio::test(flavor = "multi_thread")]
async fn bulk_download_100mb_over_plain_splice() {
    bulk_download(true).await
}
