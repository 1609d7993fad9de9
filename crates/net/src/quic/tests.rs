#![allow(clippy::unwrap_used, clippy::expect_used)]

use super::*;
use ::aws_lc_rs::digest;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU32, Ordering};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::oneshot;

/// A guard against a hung test, far beyond what any run needs; not a measurement.
const HANG_GUARD: Duration = Duration::from_secs(120);
const MB: u64 = 1 << 20;

/// A directory under the system temp dir, removed when dropped.
struct TempDir(PathBuf);

impl TempDir {
    fn new() -> Self {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let name = format!(
            "burrow-quic-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        let path = std::env::temp_dir().join(name);
        let _ = std::fs::remove_dir_all(&path);
        Self(path)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A server endpoint on 127.0.0.1 with a fresh identity, and a client endpoint.
struct Setup {
    _dir: TempDir,
    identity: tls::ServerIdentity,
    server: quinn::Endpoint,
    client: quinn::Endpoint,
}

impl Setup {
    fn new() -> Self {
        let dir = TempDir::new();
        let identity = tls::ServerIdentity::load_or_generate(&dir.0).unwrap();
        let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
        let server = server_endpoint(socket, identity.config()).unwrap();
        let client = client_endpoint("127.0.0.1:0".parse().unwrap()).unwrap();
        Self {
            _dir: dir,
            identity,
            server,
            client,
        }
    }

    fn server_addr(&self) -> SocketAddr {
        self.server.local_addr().unwrap()
    }

    fn pinned(&self, fingerprint: &str) -> ClientTls {
        let trust = Trust::Fingerprint(fingerprint.to_owned());
        client_tls(&trust, &self.server_addr().to_string()).unwrap()
    }

    /// Connects with the server's own fingerprint pinned; returns (client side, server side).
    async fn connected(&self) -> (quinn::Connection, quinn::Connection) {
        let tls = self.pinned(self.identity.fingerprint());
        let (client, server) = tokio::join!(
            connect(&self.client, self.server_addr(), "127.0.0.1", &tls),
            async { self.server.accept().await.unwrap().await }
        );
        (client.unwrap(), server.unwrap())
    }
}

async fn within<T>(test: impl Future<Output = T>) -> T {
    tokio::time::timeout(HANG_GUARD, test)
        .await
        .expect("the test hung")
}

/// Writes `len` bytes of a pattern picked by `seed`, shuts down, and returns their SHA-256.
async fn send_pattern(mut w: impl AsyncWrite + Unpin, seed: u64, len: u64) -> Vec<u8> {
    let mut hash = digest::Context::new(&digest::SHA256);
    let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut chunk = vec![0u8; 64 * 1024];
    let mut left = len;
    while left > 0 {
        for word in chunk.chunks_mut(8) {
            // xorshift64: cheap, and different for every seed and offset.
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            word.copy_from_slice(&state.to_le_bytes()[..word.len()]);
        }
        let n = usize::try_from(left.min(chunk.len() as u64)).unwrap();
        hash.update(&chunk[..n]);
        w.write_all(&chunk[..n]).await.unwrap();
        left -= n as u64;
    }
    w.shutdown().await.unwrap();
    hash.finish().as_ref().to_vec()
}

/// Reads to end of stream; returns the SHA-256 and length of what arrived.
async fn drain(mut r: impl AsyncRead + Unpin) -> (Vec<u8>, u64) {
    let mut hash = digest::Context::new(&digest::SHA256);
    let total = drain_into(&mut r, &mut hash).await;
    (hash.finish().as_ref().to_vec(), total)
}

/// Reads to end of stream into `hash`; returns the byte count.
async fn drain_into(mut r: impl AsyncRead + Unpin, hash: &mut digest::Context) -> u64 {
    let mut buf = vec![0u8; 64 * 1024];
    let mut total = 0;
    loop {
        let n = r.read(&mut buf).await.unwrap();
        if n == 0 {
            return total;
        }
        hash.update(&buf[..n]);
        total += n as u64;
    }
}

#[tokio::test]
async fn pinned_fingerprint_connects_and_a_wrong_one_is_a_trust_error() {
    within(async {
        let setup = Setup::new();
        let (client, _server) = setup.connected().await;
        let alpn = client
            .handshake_data()
            .unwrap()
            .downcast::<quinn::crypto::rustls::HandshakeData>()
            .unwrap()
            .protocol;
        assert_eq!(alpn.as_deref(), Some(ALPN));

        let wrong = setup.pinned(&format!("sha256:{}", "00".repeat(32)));
        let (client, server) = tokio::join!(
            connect(&setup.client, setup.server_addr(), "127.0.0.1", &wrong),
            async { setup.server.accept().await.unwrap().await }
        );
        assert!(server.is_err(), "the server sees the client give up");
        let err = client.unwrap_err();
        assert!(tls::is_trust_error(&err), "{err}");
        let msg = tls::trust_error_message(&err).unwrap();
        assert!(msg.contains("does not match the pinned"), "{msg}");
        assert!(msg.contains(setup.identity.fingerprint()), "{msg}");
    })
    .await;
}

#[tokio::test]
async fn a_refused_connection_is_not_a_trust_error() {
    within(async {
        let setup = Setup::new();
        let tls = setup.pinned(setup.identity.fingerprint());
        let (client, ()) = tokio::join!(
            connect(&setup.client, setup.server_addr(), "127.0.0.1", &tls),
            async { setup.server.accept().await.unwrap().refuse() }
        );
        let err = client.unwrap_err();
        assert!(!tls::is_trust_error(&err), "{err}");
        assert_eq!(tls::trust_error_message(&err), None);
    })
    .await;
}

#[tokio::test]
async fn a_client_without_burrows_alpn_is_refused() {
    within(async {
        let setup = Setup::new();
        let mut tls = setup.pinned(setup.identity.fingerprint());
        tls.config.alpn_protocols = vec![b"h3".to_vec()];
        let (client, server) = tokio::join!(
            connect(&setup.client, setup.server_addr(), "127.0.0.1", &tls),
            async { setup.server.accept().await.unwrap().await }
        );
        let err = client.unwrap_err();
        assert!(!tls::is_trust_error(&err), "{err}");
        // TLS alert 120: no_application_protocol.
        let no_alpn = quinn::TransportErrorCode::crypto(120);
        assert!(
            matches!(server, Err(quinn::ConnectionError::TransportError(ref e)) if e.code == no_alpn),
            "{server:?}"
        );
    })
    .await;
}

#[tokio::test]
async fn a_dropped_stream_still_delivers_what_was_written() {
    within(async {
        let setup = Setup::new();
        let (client, server) = setup.connected().await;
        let mut stream = open(&client).await.unwrap();
        let data = vec![0x5a; usize::try_from(MB).unwrap()];
        stream.write_all(&data).await.unwrap();
        drop(stream);
        let mut received = Vec::new();
        let mut stream = accept(&server).await.unwrap().unwrap();
        stream.read_to_end(&mut received).await.unwrap();
        assert!(received == data, "got {} bytes", received.len());
    })
    .await;
}

#[tokio::test]
async fn a_stream_carries_20_mb_each_way_with_half_close() {
    within(async {
        let setup = Setup::new();
        let (client, server) = setup.connected().await;
        let len = 20 * MB;
        let server_side = async {
            let stream = accept(&server).await.unwrap().unwrap();
            let (r, w) = tokio::io::split(stream);
            // The client has finished sending when this ends, and still reads what follows.
            let received = drain(r).await;
            let sent = send_pattern(w, 2, len).await;
            (received, sent)
        };
        let client_side = async {
            let stream = open(&client).await.unwrap();
            let (r, w) = tokio::io::split(stream);
            tokio::join!(send_pattern(w, 1, len), drain(r))
        };
        let ((from_client, server_sent), (client_sent, from_server)) =
            tokio::join!(server_side, client_side);
        assert_eq!(from_client, (client_sent, len));
        assert_eq!(from_server, (server_sent, len));
    })
    .await;
}

#[tokio::test]
async fn two_hundred_streams_each_echo_their_own_data() {
    within(async {
        let setup = Setup::new();
        let (client, server) = setup.connected().await;
        let echo = tokio::spawn(async move {
            let mut echoes = tokio::task::JoinSet::new();
            while let Some(stream) = accept(&server).await {
                echoes.spawn(async move {
                    let (mut r, mut w) = tokio::io::split(stream.unwrap());
                    tokio::io::copy(&mut r, &mut w).await.unwrap();
                    w.shutdown().await.unwrap();
                });
            }
            echoes.join_all().await;
        });
        let mut streams = tokio::task::JoinSet::new();
        for seed in 0..200u64 {
            let client = client.clone();
            streams.spawn(async move {
                let (r, w) = tokio::io::split(open(&client).await.unwrap());
                let len = 16 * 1024 + seed * 1000;
                let (sent, received) = tokio::join!(send_pattern(w, seed, len), drain(r));
                assert_eq!(received, (sent, len), "stream {seed}");
            });
        }
        assert_eq!(streams.join_all().await.len(), 200);
        client.close(0u32.into(), b"done");
        echo.await.unwrap();
    })
    .await;
}

#[tokio::test]
async fn a_datagram_goes_there_and_back() {
    within(async {
        let setup = Setup::new();
        let (client, server) = setup.connected().await;
        // One packet's worth: QUIC's minimum 1200-byte packet minus headers at first, then
        // what path MTU discovery finds, which stays under an Ethernet frame even on loopback.
        let max = max_datagram_size(&client).unwrap();
        assert!((1000..1500).contains(&max), "{max}");

        send_datagram(&client, Bytes::from_static(b"ping")).unwrap();
        let got = read_datagram(&server).await.unwrap();
        assert_eq!(&got[..], b"ping");
        send_datagram(&server, Bytes::from_static(b"pong")).unwrap();
        assert_eq!(&read_datagram(&client).await.unwrap()[..], b"pong");

        // Read again: the limit grows as MTU discovery goes on.
        let max = max_datagram_size(&client).unwrap();
        assert!((1000..1500).contains(&max), "{max}");
        let too_big = Bytes::from(vec![0u8; max + 1]);
        assert!(matches!(
            send_datagram(&client, too_big),
            Err(quinn::SendDatagramError::TooLarge)
        ));
    })
    .await;
}

#[tokio::test]
async fn a_link_routes_datagrams_to_their_stream_and_counts_strays() {
    use crate::datagram_io::DatagramStats;
    use burrow_proto::datagram::QuicHeader;
    within(async {
        let setup = Setup::new();
        let (client, server) = setup.connected().await;
        let (client, server) = (QuicLink::new(client), QuicLink::new(server));
        let stats = Arc::new(DatagramStats::default());
        let mut inbox = server.datagrams(7, stats.clone()).unwrap();
        assert!(
            server.datagrams(7, stats.clone()).is_none(),
            "registered twice"
        );
        let out = client.datagrams(7, Arc::default()).unwrap().sender();
        let sent = DatagramStats::default();
        // Off until the peer is known to route the stream.
        assert_eq!(out.offer(1, b"early", &sent), QuicOffer::ToStream);
        out.enable();
        // A stray for a stream nobody registered, and garbage, before the real one.
        let mut stray = Vec::new();
        (QuicHeader { stream: 8, flow: 1 })
            .encode(&mut stray)
            .unwrap();
        send_datagram(client.connection(), stray.into()).unwrap();
        send_datagram(client.connection(), Bytes::from_static(&[0xff])).unwrap();
        assert_eq!(out.offer(3, b"hello", &sent), QuicOffer::Sent);
        assert_eq!(inbox.recv().await, Some((3, Bytes::from_static(b"hello"))));
        assert_eq!(server.dropped_unknown(), 2);
        assert_eq!(stats.quic_received.load(Ordering::Relaxed), 1);
        assert_eq!(sent.quic_sent.load(Ordering::Relaxed), 1);
        // Too large for one packet: the stream must carry it.
        let big = vec![0u8; max_datagram_size(client.connection()).unwrap()];
        assert_eq!(out.offer(3, &big, &sent), QuicOffer::ToStream);
        // Dropping the channel unregisters the stream: later datagrams are strays.
        drop(inbox);
        let mut other = server.datagrams(9, stats.clone()).unwrap();
        let other_out = client.datagrams(9, Arc::default()).unwrap().sender();
        other_out.enable();
        assert_eq!(out.offer(4, b"late", &sent), QuicOffer::Sent);
        assert_eq!(other_out.offer(5, b"other", &sent), QuicOffer::Sent);
        assert_eq!(other.recv().await, Some((5, Bytes::from_static(b"other"))));
        assert_eq!(server.dropped_unknown(), 3);
    })
    .await;
}

#[tokio::test]
async fn a_transfer_survives_the_client_moving_to_a_new_socket() {
    within(async {
        let setup = Setup::new();
        let (client, server) = setup.connected().await;
        let old_addr = server.remote_address();
        let len = 50 * MB;
        let (halfway_tx, halfway_rx) = oneshot::channel();
        let (moved_tx, moved_rx) = oneshot::channel::<()>();
        let receiver = async {
            let mut stream = accept(&server).await.unwrap().unwrap();
            let mut first = vec![0u8; usize::try_from(10 * MB).unwrap()];
            stream.read_exact(&mut first).await.unwrap();
            // Hold the rest back until the client has moved: flow control then keeps most of
            // the transfer for the new path.
            halfway_tx.send(()).unwrap();
            moved_rx.await.unwrap();
            let mut hash = digest::Context::new(&digest::SHA256);
            hash.update(&first);
            let rest = drain_into(&mut stream, &mut hash).await;
            (hash.finish().as_ref().to_vec(), first.len() as u64 + rest)
        };
        let sender = async {
            let stream = open(&client).await.unwrap();
            send_pattern(stream, 7, len).await
        };
        let mover = async {
            halfway_rx.await.unwrap();
            let new_addr = rebind(&setup.client, "127.0.0.1:0".parse().unwrap()).unwrap();
            assert_ne!(new_addr, old_addr);
            moved_tx.send(()).unwrap();
            new_addr
        };
        let (received, sent, new_addr) = tokio::join!(receiver, sender, mover);
        assert_eq!(received, (sent, len));
        assert_eq!(setup.client.local_addr().unwrap(), new_addr);
        assert_eq!(server.remote_address(), new_addr);
    })
    .await;
}

/// The server's side of one burrow-like greeting on a resumable connection: takes the next
/// connection attempt as [`accept_early`] does, reads the client's preface on its first stream,
/// answers it at once (0.5-RTT data when the preface came early), then reads the hello that
/// follows the answer. Returns what it read.
async fn greet_as_server(endpoint: &quinn::Endpoint) -> (Vec<u8>, Vec<u8>) {
    let (connection, handshake) = accept_early(endpoint.accept().await.unwrap())
        .await
        .unwrap();
    let mut stream = accept(&connection).await.unwrap().unwrap();
    let mut preface = vec![0u8; 7];
    stream.read_exact(&mut preface).await.unwrap();
    stream.write_all(b"challenge").await.unwrap();
    handshake.finish().await.unwrap();
    let mut hello = vec![0u8; 5];
    stream.read_exact(&mut hello).await.unwrap();
    stream.write_all(b"welcome").await.unwrap();
    // Closing the connection before the client has read everything would discard it.
    let mut rest = Vec::new();
    stream.read_to_end(&mut rest).await.unwrap();
    assert!(rest.is_empty(), "{rest:?}");
    connection.close(0u32.into(), b"greeted");
    (preface, hello)
}

/// The client's side after the preface went out: reads the answer, sends the hello, reads the
/// welcome, finishes the stream and waits for the server to close the connection. Reading the
/// welcome also takes in the server's session ticket for the next time.
async fn finish_greeting(connection: &quinn::Connection, stream: &mut QuicStream) {
    let mut challenge = [0u8; 9];
    stream.read_exact(&mut challenge).await.unwrap();
    assert_eq!(&challenge, b"challenge");
    stream.write_all(b"hello").await.unwrap();
    let mut welcome = [0u8; 7];
    stream.read_exact(&mut welcome).await.unwrap();
    assert_eq!(&welcome, b"welcome");
    stream.shutdown().await.unwrap();
    connection.closed().await;
}

/// A full greeting over a connection that has no session to resume: afterwards `tls` holds one.
async fn first_connection(setup: &Setup, tls: &ClientTls) {
    let client = async {
        let dialed = dial(&setup.client, setup.server_addr(), "127.0.0.1", tls).await;
        let Dialed::Done(connection) = dialed.unwrap() else {
            panic!("nothing to resume on a first connection");
        };
        let mut stream = open(&connection).await.unwrap();
        stream.write_all(b"preface").await.unwrap();
        finish_greeting(&connection, &mut stream).await;
    };
    let ((), (preface, hello)) = tokio::join!(client, greet_as_server(&setup.server));
    assert_eq!((&preface[..], &hello[..]), (&b"preface"[..], &b"hello"[..]));
}

#[tokio::test]
async fn a_reconnect_resumes_and_its_early_preface_is_accepted() {
    within(async {
        let setup = Setup::new();
        let tls = setup.pinned(setup.identity.fingerprint());
        first_connection(&setup, &tls).await;

        let client = async {
            let dialed = dial(&setup.client, setup.server_addr(), "127.0.0.1", &tls).await;
            let Dialed::Early(connection, handshake) = dialed.unwrap() else {
                panic!("the second connection did not resume the session");
            };
            // Before the handshake is done: this goes in the first flight as 0-RTT data.
            let mut stream = open(&connection).await.unwrap();
            stream.write_all(b"preface").await.unwrap();
            assert!(handshake.finish().await.unwrap(), "0-RTT data refused");
            finish_greeting(&connection, &mut stream).await;
        };
        let ((), (preface, hello)) = tokio::join!(client, greet_as_server(&setup.server));
        assert_eq!((&preface[..], &hello[..]), (&b"preface"[..], &b"hello"[..]));
    })
    .await;
}

#[tokio::test]
async fn refused_early_data_is_sent_again_and_the_greeting_completes() {
    within(async {
        let setup = Setup::new();
        let tls = setup.pinned(setup.identity.fingerprint());
        first_connection(&setup, &tls).await;
        // The same server restarted: same identity and name, but it knows no session.
        let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
        let restarted = server_endpoint(socket, setup.identity.config()).unwrap();
        let addr = restarted.local_addr().unwrap();

        let client = async {
            let dialed = dial(&setup.client, addr, "127.0.0.1", &tls).await;
            let Dialed::Early(connection, handshake) = dialed.unwrap() else {
                panic!("the client did not try to resume");
            };
            let mut early = open(&connection).await.unwrap();
            early.write_all(b"preface").await.unwrap();
            assert!(
                !handshake.finish().await.unwrap(),
                "a forgotten session took 0-RTT"
            );
            // The stream opened early is gone; a new one carries the preface again.
            let gone = early.write_all(b"more").await.unwrap_err();
            assert_eq!(gone.kind(), io::ErrorKind::ConnectionReset, "{gone}");
            let mut stream = open(&connection).await.unwrap();
            stream.write_all(b"preface").await.unwrap();
            finish_greeting(&connection, &mut stream).await;
        };
        // The server sees the preface once, on the first stream it is given.
        let ((), (preface, hello)) = tokio::join!(client, greet_as_server(&restarted));
        assert_eq!((&preface[..], &hello[..]), (&b"preface"[..], &b"hello"[..]));

        // That full handshake left a session for the restarted server: the next one resumes.
        let dialed = dial(&setup.client, addr, "127.0.0.1", &tls).await.unwrap();
        let Dialed::Early(connection, handshake) = dialed else {
            panic!("no session after the full handshake");
        };
        let server = async {
            let (_connection, handshake) = accept_early(restarted.accept().await.unwrap())
                .await
                .unwrap();
            handshake.finish().await
        };
        let (accepted, server) = tokio::join!(handshake.finish(), server);
        server.unwrap();
        assert!(accepted.unwrap(), "0-RTT refused on a resumed session");
        drop(connection);
    })
    .await;
}

/// The server opens a stream on the link (as it does for a visitor that finds no pooled
/// stream): the client accepts it through its own link, the bytes arrive intact both ways with
/// half-close, and the accepted stream knows its link, so a UDP tunnel's datagrams can ride it.
#[tokio::test]
async fn a_stream_the_server_opens_is_accepted_by_the_client_with_its_link() {
    use crate::datagram_io::DatagramStats;
    within(async {
        let setup = Setup::new();
        let (client, server) = setup.connected().await;
        let (client, server) = (QuicLink::new(client), QuicLink::new(server));
        let len = 3 * MB;
        let server_side = async {
            let stream = server.open().await.unwrap();
            let id = stream.id();
            let (r, w) = tokio::io::split(stream);
            let (sent, received) = tokio::join!(send_pattern(w, 7, len), drain(r));
            (id, sent, received)
        };
        let client_side = async {
            let stream = client.accept().await.unwrap().unwrap();
            assert!(stream.link().is_some(), "an accepted stream knows its link");
            let id = stream.id();
            let (r, w) = tokio::io::split(stream);
            // Half-closed by the server first; the client answers after.
            let received = drain(r).await;
            let sent = send_pattern(w, 8, len).await;
            (id, sent, received)
        };
        let ((server_id, server_sent, at_server), (client_id, client_sent, at_client)) =
            tokio::join!(server_side, client_side);
        assert_eq!(server_id, client_id);
        assert!(server_id.initiator() == quinn::Side::Server);
        assert_eq!(at_client, (server_sent, len));
        assert_eq!(at_server, (client_sent, len));
        // Datagrams for that stream, both ways.
        let stream = u64::from(server_id);
        let stats = Arc::new(DatagramStats::default());
        let mut at_client = client.datagrams(stream, stats.clone()).unwrap();
        let mut at_server = server.datagrams(stream, stats.clone()).unwrap();
        let out = at_server.sender();
        out.enable();
        let sent = DatagramStats::default();
        assert_eq!(out.offer(1, b"down", &sent), QuicOffer::Sent);
        assert_eq!(
            at_client.recv().await,
            Some((1, Bytes::from_static(b"down")))
        );
        let back = at_client.sender();
        back.enable();
        assert_eq!(back.offer(2, b"up", &sent), QuicOffer::Sent);
        assert_eq!(at_server.recv().await, Some((2, Bytes::from_static(b"up"))));
    })
    .await;
}
