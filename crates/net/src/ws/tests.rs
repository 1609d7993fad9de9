#![allow(clippy::unwrap_used, clippy::expect_used)]

use super::*;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use tokio::io::{AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_tungstenite::tungstenite::Message;
use url::Url;

const PATH: &str = "/burrow";

/// Sizes of successive writes: tiny ones (coalesced), and ones larger than a message.
const WRITE_SIZES: [usize; 7] = [1, 7, 100, 1500, 16_384, 70_000, 300_000];

/// `len` bytes that differ with `seed` and never repeat with a short period.
fn pattern(seed: u64, len: usize) -> Vec<u8> {
    let mut state = seed | 1;
    (0..len)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state.to_le_bytes()[0]
        })
        .collect()
}

fn sha256(data: &[u8]) -> Vec<u8> {
    aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, data)
        .as_ref()
        .to_vec()
}

/// Writes `data` in writes of varied sizes, flushing every few writes and at the end.
async fn write_varied<W: AsyncWrite + Unpin>(out: &mut W, data: &[u8]) {
    let mut rest = data;
    for (i, size) in WRITE_SIZES.iter().cycle().enumerate() {
        if rest.is_empty() {
            break;
        }
        let n = (*size).min(rest.len());
        out.write_all(&rest[..n]).await.unwrap();
        rest = &rest[n..];
        if i % 5 == 0 {
            out.flush().await.unwrap();
        }
    }
    out.flush().await.unwrap();
}

/// Sends `sent` while reading as many bytes back; returns the hash of what was read.
async fn exchange(io: &mut WsIo, sent: &[u8]) -> Vec<u8> {
    let (mut reader, mut writer) = tokio::io::split(io);
    let mut received = vec![0u8; sent.len()];
    tokio::join!(write_varied(&mut writer, sent), async {
        reader.read_exact(&mut received).await.unwrap()
    });
    sha256(&received)
}

/// A server accepting one WebSocket for `server_path`, and the client's attempt at `url_path`.
async fn open(server_path: &str, url_path: &str) -> (Result<WsIo, WsError>, Result<WsIo, WsError>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server_path = server_path.to_owned();
    let server = tokio::spawn(async move {
        let (tcp, _) = listener.accept().await.unwrap();
        accept(tcp, &server_path).await
    });
    let url = Url::parse(&format!("ws://{addr}{url_path}")).unwrap();
    let tcp = TcpStream::connect(addr).await.unwrap();
    let client = connect(tcp, &url, None).await;
    (server.await.unwrap(), client)
}

#[tokio::test]
async fn twenty_megabytes_each_way_then_close_reads_as_end() {
    const LEN: usize = 20 << 20;
    let (server, client) = open(PATH, PATH).await;
    let (mut server, mut client) = (server.unwrap(), client.unwrap());
    let (up, down) = (pattern(1, LEN), pattern(2, LEN));
    let (at_server, at_client) =
        tokio::join!(exchange(&mut server, &down), exchange(&mut client, &up));
    assert_eq!(at_server, sha256(&up));
    assert_eq!(at_client, sha256(&down));

    client.shutdown().await.unwrap();
    assert_eq!(
        server.read(&mut [0u8; 16]).await.unwrap(),
        0,
        "close frame is the end"
    );
    server.shutdown().await.unwrap();
    assert_eq!(
        client.read(&mut [0u8; 16]).await.unwrap(),
        0,
        "close reply is the end"
    );
    let err = client.write_all(b"late").await.unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::BrokenPipe, "{err}");
}

#[tokio::test]
async fn end_of_tcp_without_close_frame_reads_as_end() {
    let (server, client) = open(PATH, PATH).await;
    let (mut server, mut client) = (server.unwrap(), client.unwrap());
    server.write_all(b"last words").await.unwrap();
    server.flush().await.unwrap();
    drop(server);
    let mut got = Vec::new();
    client.read_to_end(&mut got).await.unwrap();
    assert_eq!(got, b"last words");
}

#[tokio::test]
async fn wrong_path_gets_404_and_both_sides_say_so() {
    let (server, client) = open(PATH, "/other?x=1").await;
    match server.unwrap_err() {
        WsError::WrongPath {
            requested,
            expected,
        } => assert_eq!(
            (requested.as_str(), expected.as_str()),
            ("/other?x=1", PATH)
        ),
        e => panic!("unexpected server error: {e}"),
    }
    let err = client.unwrap_err();
    assert!(
        matches!(err, WsError::Status { status: 404, .. }),
        "{err:?}"
    );
    let msg = err.to_string();
    assert!(
        msg.contains("404 Not Found at /other?x=1: is the path right?"),
        "{msg}"
    );
}

#[tokio::test]
async fn the_query_is_not_part_of_the_path() {
    let (server, client) = open(PATH, "/burrow?token=abc").await;
    let (mut server, mut client) = (server.unwrap(), client.unwrap());
    client.write_all(b"hi").await.unwrap();
    client.flush().await.unwrap();
    let mut got = [0u8; 2];
    server.read_exact(&mut got).await.unwrap();
    assert_eq!(&got, b"hi");
}

/// A WebSocket client that can send what [`WsIo`] never does.
async fn raw_client() -> (WsIo, tokio_tungstenite::WebSocketStream<TcpStream>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = tokio::spawn(async move {
        let (tcp, _) = listener.accept().await.unwrap();
        accept(tcp, PATH).await
    });
    let tcp = TcpStream::connect(addr).await.unwrap();
    let (raw, _) = tokio_tungstenite::client_async(format!("ws://{addr}{PATH}"), tcp)
        .await
        .unwrap();
    (server.await.unwrap().unwrap(), raw)
}

type RawClient = tokio_tungstenite::WebSocketStream<TcpStream>;

async fn raw_send(raw: &mut RawClient, message: Message) {
    use futures_sink::Sink;
    use std::pin::Pin;
    std::future::poll_fn(|cx| Pin::new(&mut *raw).poll_ready(cx))
        .await
        .unwrap();
    Pin::new(&mut *raw).start_send(message).unwrap();
    std::future::poll_fn(|cx| Pin::new(&mut *raw).poll_flush(cx))
        .await
        .unwrap();
}

async fn raw_receive(raw: &mut RawClient) -> Option<Message> {
    use futures_core::Stream;
    use std::pin::Pin;
    std::future::poll_fn(|cx| Pin::new(&mut *raw).poll_next(cx))
        .await
        .map(Result::unwrap)
}

#[tokio::test]
async fn a_text_message_is_refused() {
    let (mut server, mut raw) = raw_client().await;
    raw_send(&mut raw, Message::Binary(b"ok".to_vec().into())).await;
    raw_send(&mut raw, Message::Text("hello".into())).await;
    let mut got = [0u8; 2];
    server.read_exact(&mut got).await.unwrap();
    assert_eq!(&got, b"ok");
    let err = server.read(&mut got).await.unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::InvalidData);
    assert!(err.to_string().contains("text message"), "{err}");
}

#[tokio::test]
async fn pings_are_answered_while_reading() {
    let (mut server, mut raw) = raw_client().await;
    raw_send(&mut raw, Message::Ping(b"are you there".to_vec().into())).await;
    raw_send(&mut raw, Message::Binary(Vec::new().into())).await;
    raw_send(&mut raw, Message::Binary(b"data".to_vec().into())).await;
    let mut got = [0u8; 4];
    server.read_exact(&mut got).await.unwrap();
    assert_eq!(&got, b"data", "ping and empty message are not data");
    match raw_receive(&mut raw).await {
        Some(Message::Pong(payload)) => assert_eq!(&payload[..], b"are you there"),
        other => panic!("expected a pong, got {other:?}"),
    }
}

#[tokio::test]
async fn an_oversized_message_is_refused() {
    let (mut server, mut raw) = raw_client().await;
    raw_send(&mut raw, Message::Binary(vec![0u8; MAX_MESSAGE + 1].into())).await;
    let err = server.read(&mut [0u8; 16]).await.unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::InvalidData);
    assert!(err.to_string().contains("too large"), "{err}");
}

/// A directory under the system temp dir, removed when dropped.
struct TempDir(PathBuf);

impl TempDir {
    fn new() -> Self {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let name = format!(
            "burrow-ws-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        let path = std::env::temp_dir().join(name);
        std::fs::create_dir_all(&path).unwrap();
        Self(path)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A `wss://` server on `localhost` with a self-signed certificate, written to `ca.pem` in
/// `dir`; returns its URL and the server's result for one connection.
async fn wss_server(dir: &TempDir) -> (Url, tokio::task::JoinHandle<Result<WsIo, WsError>>) {
    let cert = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
    std::fs::write(dir.0.join("ca.pem"), cert.cert.pem()).unwrap();
    let key = rustls_pki_types::PrivateKeyDer::Pkcs8(cert.signing_key.serialize_der().into());
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(vec![cert.cert.der().clone()], key)
        .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let server = tokio::spawn(async move {
        let (tcp, _) = listener.accept().await.unwrap();
        let tls = acceptor.accept(tcp).await?;
        accept(tls, PATH).await
    });
    let url = Url::parse(&format!("wss://localhost:{port}{PATH}")).unwrap();
    (url, server)
}

#[tokio::test]
async fn wss_round_trip_with_the_certificate_as_extra_ca() {
    const LEN: usize = 2 << 20;
    let dir = TempDir::new();
    let (url, server) = wss_server(&dir).await;
    let tls = webpki_client_config(Some(&dir.0.join("ca.pem"))).unwrap();
    let tcp = TcpStream::connect(("127.0.0.1", url.port().unwrap()))
        .await
        .unwrap();
    let mut client = connect(tcp, &url, Some(tls)).await.unwrap();
    let mut server = server.await.unwrap().unwrap();
    let (up, down) = (pattern(3, LEN), pattern(4, LEN));
    let (at_server, at_client) =
        tokio::join!(exchange(&mut server, &down), exchange(&mut client, &up));
    assert_eq!(at_server, sha256(&up));
    assert_eq!(at_client, sha256(&down));
    client.shutdown().await.unwrap();
    assert_eq!(server.read(&mut [0u8; 16]).await.unwrap(), 0);
}

#[tokio::test]
async fn wss_without_the_ca_is_a_trust_error() {
    let dir = TempDir::new();
    let (url, server) = wss_server(&dir).await;
    let tcp = TcpStream::connect(("127.0.0.1", url.port().unwrap()))
        .await
        .unwrap();
    let err = connect(tcp, &url, None).await.unwrap_err();
    assert!(
        matches!(&err, WsError::Trust { host, .. } if host == "localhost"),
        "{err:?}"
    );
    assert!(
        err.to_string().contains("not signed by a trusted CA"),
        "{err}"
    );
    assert!(
        server.await.unwrap().is_err(),
        "the server saw the handshake fail"
    );
}
