//! End-to-end: `burrow tcp --proxy-protocol v1|v2` between a real `burrow server` and a target
//! that expects a PROXY protocol header.
//!
//! The target is written here from the specification, not with the crate the client encodes
//! with: it reads the header, reports the addresses it names to the test, then echoes whatever
//! follows. The test checks that the source is the visitor's own socket (127.0.0.1 and the port
//! it connected from), that the destination is the target's address, and that the payload after
//! the header arrives intact and comes back intact.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::data::Pattern;
use common::targets::{target, visit};
use common::{Client, Server, TestDir, bounded, ports};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio::net::tcp::OwnedReadHalf;
use tokio::sync::mpsc;

/// The v2 signature, from the specification.
const SIGNATURE: &[u8; 12] = b"\r\n\r\n\0\r\nQUIT\n";
/// The longest v1 line the specification allows, CRLF included.
const V1_MAX: usize = 107;

/// What the target read before the payload: the v1 line as text, or the v2 header's addresses.
#[derive(Debug, PartialEq, Eq)]
enum Heard {
    V1(String),
    V2 {
        source: SocketAddr,
        destination: SocketAddr,
    },
}

/// Reads a v1 line: `PROXY ...\r\n`, at most [`V1_MAX`] bytes.
async fn read_v1(r: &mut BufReader<OwnedReadHalf>) -> Result<Heard, String> {
    let mut line = Vec::new();
    let mut limited = r.take(V1_MAX as u64);
    limited
        .read_until(b'\n', &mut line)
        .await
        .map_err(|e| e.to_string())?;
    if !line.ends_with(b"\r\n") {
        return Err(format!("no CRLF within {V1_MAX} bytes: {line:?}"));
    }
    String::from_utf8(line)
        .map(Heard::V1)
        .map_err(|e| e.to_string())
}

/// Reads a v2 header of the PROXY command over TCP/IPv4 and returns its addresses.
async fn read_v2(r: &mut BufReader<OwnedReadHalf>) -> Result<Heard, String> {
    let mut fixed = [0u8; 16];
    r.read_exact(&mut fixed).await.map_err(|e| e.to_string())?;
    if &fixed[..12] != SIGNATURE {
        return Err(format!("no v2 signature: {fixed:?}"));
    }
    // Version 2, command PROXY; address family INET, protocol STREAM.
    if fixed[12] != 0x21 || fixed[13] != 0x11 {
        return Err(format!(
            "version/command {:#04x}, family {:#04x}",
            fixed[12], fixed[13]
        ));
    }
    let len = u16::from_be_bytes([fixed[14], fixed[15]]) as usize;
    if len != 12 {
        return Err(format!("address block of {len} bytes, not 12"));
    }
    let mut block = [0u8; 12];
    r.read_exact(&mut block).await.map_err(|e| e.to_string())?;
    let ip = |at: usize| {
        IpAddr::V4(Ipv4Addr::new(
            block[at],
            block[at + 1],
            block[at + 2],
            block[at + 3],
        ))
    };
    let port = |at: usize| u16::from_be_bytes([block[at], block[at + 1]]);
    Ok(Heard::V2 {
        source: SocketAddr::new(ip(0), port(8)),
        destination: SocketAddr::new(ip(4), port(10)),
    })
}

/// Serves one connection: reads the header, reports it, then echoes the rest until the
/// visitor's end of file. A bad header is reported and the connection closed.
async fn serve(conn: TcpStream, version: &'static str, heard: mpsc::Sender<Result<Heard, String>>) {
    let (r, mut w) = conn.into_split();
    let mut r = BufReader::new(r);
    let header = match version {
        "v1" => read_v1(&mut r).await,
        _ => read_v2(&mut r).await,
    };
    let ok = header.is_ok();
    heard.send(header).await.unwrap();
    // The BufReader hands on whatever it read past the header first.
    if ok && tokio::io::copy(&mut r, &mut w).await.is_ok() {
        let _ = w.shutdown().await;
    }
}

/// Starts a server and a `burrow tcp --proxy-protocol VERSION` client publishing a target that
/// expects that header; returns them with the target's port and what the target hears.
async fn tunnel(
    dir: &TestDir,
    version: &'static str,
    plain: bool,
) -> (Server, Client, u16, mpsc::Receiver<Result<Heard, String>>) {
    let (tx, rx) = mpsc::channel(4);
    let port = target(move |conn| serve(conn, version, tx.clone())).await;
    let block = ports(4).arg();
    let mut args = vec!["--token", "t", "--ports", &block];
    if plain {
        args.push("--insecure-plain");
    }
    let server = Server::start(dir, &args).await;
    let client = Client::start_tcp(dir, &server, port, "t", &["--proxy-protocol", version]).await;
    (server, client, port, rx)
}

/// Connects to the public port, sends `payload`, closes the write half and returns the
/// visitor's own address and everything echoed back.
async fn visit_and_echo(public: u16, payload: &[u8]) -> (SocketAddr, Vec<u8>) {
    let mut conn = visit(public).await;
    let me = conn.local_addr().unwrap();
    let (mut r, mut w) = conn.split();
    let send = async {
        w.write_all(payload).await.unwrap();
        w.shutdown().await.unwrap();
    };
    let mut back = Vec::new();
    let (_, read) = tokio::join!(send, r.read_to_end(&mut back));
    read.unwrap();
    (me, back)
}

/// Checks that the echoed bytes are the payload, untouched by the header.
fn assert_intact(back: &[u8], payload: &[u8]) {
    assert_eq!(
        back.len(),
        payload.len(),
        "echo returned a different length"
    );
    assert!(back == payload, "echo returned different bytes");
}

#[tokio::test(flavor = "multi_thread")]
async fn v1_header_names_the_visitor() {
    bounded(60, async {
        let dir = TestDir::new("proxy-v1");
        let (_server, client, target_port, mut heard) = tunnel(&dir, "v1", false).await;
        // Two visitors: each stream gets a header of its own, naming its own visitor.
        for seed in 1..=2 {
            let payload = Pattern::bytes(seed, 200_000);
            let (me, back) = visit_and_echo(client.port, &payload).await;
            let want = format!(
                "PROXY TCP4 127.0.0.1 127.0.0.1 {} {target_port}\r\n",
                me.port()
            );
            assert_eq!(heard.recv().await.unwrap(), Ok(Heard::V1(want)));
            assert_intact(&back, &payload);
        }
    })
    .await
}

#[tokio::test(flavor = "multi_thread")]
async fn v2_header_names_the_visitor() {
    bounded(60, async {
        let dir = TestDir::new("proxy-v2");
        // Plain carrier: the relay after the header is spliced.
        let (_server, client, target_port, mut heard) = tunnel(&dir, "v2", true).await;
        for seed in 3..=4 {
            let payload = Pattern::bytes(seed, 200_000);
            let (me, back) = visit_and_echo(client.port, &payload).await;
            let want = Heard::V2 {
                source: SocketAddr::from(([127, 0, 0, 1], me.port())),
                destination: SocketAddr::from(([127, 0, 0, 1], target_port)),
            };
            assert_eq!(heard.recv().await.unwrap(), Ok(want));
            assert_intact(&back, &payload);
        }
    })
    .await
}
