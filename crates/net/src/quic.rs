//! QUIC carrier building blocks: endpoints, connecting with burrow's trust, streams, datagrams
//! and migration, on quinn.
//!
//! One QUIC connection is the link between a client and its server; every burrow connection
//! (the control stream, each visitor's stream) is one bidirectional QUIC stream on it, wrapped
//! as a [`QuicStream`] so the usual preface–challenge–hello–welcome handshake and the relay run
//! over it unchanged. Streams have their own flow control, so a stalled visitor never blocks the
//! others, and a half-close is a QUIC FIN. UDP flows ride DATAGRAM frames when they fit one
//! packet: unreliable and never queued behind stream data; a [`QuicLink`] routes them to their
//! tunnels.
//!
//! Choices, with the reasons:
//!
//! - **TLS is burrow's own.** The server reuses its TCP identity
//!   ([`tls::ServerIdentity::config`]), so users pin the same fingerprint; the client checks the
//!   server exactly as on TCP ([`Trust`]). Both sides add the ALPN protocol [`ALPN`] on a copy of
//!   their configuration, leaving TCP's untouched. A refused certificate comes back from
//!   [`connect`] as the same kind of `io::Error` a TCP TLS handshake gives, so
//!   [`tls::is_trust_error`] and [`tls::trust_error_message`] recognise both carriers alike.
//! - **Resumption and 0-RTT, for the preface only.** A [`ClientTls`] keeps one session store
//!   and one certificate check for all its connections (rustls resumes only with the check that
//!   made the session), so a reconnect resumes the TLS session and may send 0-RTT data
//!   ([`dial`], [`Dialed`], [`Handshake`]). The server keeps its own store of QUIC sessions in
//!   memory ([`SESSION_CACHE`] tickets) rather than issuing stateless tickets: rustls accepts
//!   0-RTT only then, because each ticket is taken out of the store when used, so a recorded
//!   first flight replayed to the server resumes nothing and its early data is refused. A
//!   restarted server has forgotten every session: clients make a full handshake once.
//! - **Windows sized from the bandwidth-delay product.** 100 Mbit/s over a 50 ms round trip
//!   keeps 625 kB in flight. A stream may have [`STREAM_RECEIVE_WINDOW`] (4 MiB, ~670 Mbit/s at
//!   50 ms) unread; the whole connection [`CONNECTION_RECEIVE_WINDOW`] (32 MiB), which also caps
//!   what a peer can make us buffer however many streams it opens.
//! - **Bounded streams and datagrams.** At most [`MAX_STREAMS`] bidirectional streams at once
//!   per direction (a peer opening more waits for credit, it gets no error); no unidirectional
//!   streams. Datagrams not yet read are capped at [`DATAGRAM_BUFFER`]; past that quinn drops
//!   the oldest, as a router would.
//! - **Liveness matches burrow's heartbeats.** A keep-alive every 2 s (the heartbeat interval)
//!   keeps NAT mappings open even before a session runs, and 7 s of silence (burrow's dead
//!   detection) closes the connection. That idle timeout also bounds a connection attempt to a
//!   server that never answers.
//! - **Migration.** The server follows a client whose address changes (a new NAT mapping, a
//!   network switch): the connection id, not the address, names the connection. A client moves
//!   on purpose with [`rebind`].

mod handshake;
mod link;
mod stream;
#[cfg(test)]
mod tests;

pub use handshake::{Dialed, Handshake, ServerHandshake, accept_early, dial};
pub use link::{
    CHANNEL_QUEUE, DATAGRAM_CHANNELS, DatagramChannel, QuicLink, QuicOffer, QuicSender,
};
pub use quinn;
pub use stream::{QuicStream, accept, open};

use crate::tls::{self, Trust};
use anyhow::Context as _;
use burrow_proto::liveness;
use bytes::Bytes;
use quinn::crypto::rustls::{QuicClientConfig, QuicServerConfig};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::{DigitallySignedStruct, SignatureScheme};
use rustls_pki_types::{CertificateDer, ServerName, UnixTime};
use std::io;
use std::net::{SocketAddr, UdpSocket};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// The ALPN protocol both sides announce: a QUIC connection to anything else fails at once.
pub const ALPN: &[u8] = b"burrow";
/// Bidirectional streams a peer may have open at once: the control stream and one per visitor
/// connection.
pub const MAX_STREAMS: u32 = 16_384;
/// Bytes one stream may receive ahead of the reader (flow-control window).
pub const STREAM_RECEIVE_WINDOW: u32 = 4 << 20;
/// Bytes the whole connection may receive ahead of its readers, all streams together.
pub const CONNECTION_RECEIVE_WINDOW: u32 = 32 << 20;
/// The same on a server's connection until one of its streams has authenticated (see
/// [`proven`]): a peer nobody knows yet cannot make the server buffer more than this.
pub const UNPROVEN_RECEIVE_WINDOW: u32 = 1 << 20;
/// Bytes written but not yet acknowledged, all streams together.
const SEND_WINDOW: u64 = 32 << 20;
/// Bytes of received datagrams waiting to be read, and of datagrams waiting to be sent.
pub const DATAGRAM_BUFFER: usize = 1 << 20;
/// Interval of QUIC keep-alives: burrow's heartbeat interval.
const KEEP_ALIVE: Duration = liveness::DEFAULT_INTERVAL;
/// Silence after which a connection is closed: burrow's dead-carrier bound.
const IDLE_TIMEOUT: Duration = liveness::DEFAULT_DEAD_AFTER;
/// QUIC session tickets the server remembers for resumption, two per connection (so about
/// half as many clients); the oldest are forgotten first. Each is a few hundred bytes.
pub const SESSION_CACHE: usize = 8192;
/// Socket buffers asked of the kernel: a burst at full window must not overflow the default
/// ~200 kB receive buffer. The kernel caps this at `net.core.rmem_max` / `wmem_max`.
const SOCKET_BUFFER: usize = 4 << 20;

/// The transport settings both sides use (see the module documentation for the reasons).
pub fn transport_config() -> Arc<quinn::TransportConfig> {
    transport_config_with(CONNECTION_RECEIVE_WINDOW)
}

/// A server connection's window grows to its full size: one of its streams authenticated.
pub fn proven(connection: &quinn::Connection) {
    connection.set_receive_window(CONNECTION_RECEIVE_WINDOW.into());
}

fn transport_config_with(receive_window: u32) -> Arc<quinn::TransportConfig> {
    let mut config = quinn::TransportConfig::default();
    config
        .max_concurrent_bidi_streams(MAX_STREAMS.into())
        .max_concurrent_uni_streams(0u32.into())
        .stream_receive_window(STREAM_RECEIVE_WINDOW.into())
        .receive_window(receive_window.into())
        .send_window(SEND_WINDOW)
        .datagram_receive_buffer_size(Some(DATAGRAM_BUFFER))
        .datagram_send_buffer_size(DATAGRAM_BUFFER)
        .keep_alive_interval(Some(KEEP_ALIVE));
    // Seven seconds fits a QUIC varint of milliseconds, so this conversion cannot fail.
    if let Ok(idle) = quinn::IdleTimeout::try_from(IDLE_TIMEOUT) {
        config.max_idle_timeout(Some(idle));
    }
    Arc::new(config)
}

/// A server endpoint on an already-bound UDP socket, with the server's TLS identity.
///
/// Must be called inside a tokio runtime. Accept connections with `endpoint.accept()` in a loop
/// that never waits on a handshake: a connection attempt makes no progress until its
/// `Incoming` is accepted, and awaiting that `Incoming` (in its own task) runs the handshake,
/// which the idle timeout bounds. `Incoming::refuse` turns one away cheaply.
pub fn server_endpoint(
    socket: UdpSocket,
    tls: Arc<rustls::ServerConfig>,
) -> anyhow::Result<quinn::Endpoint> {
    let mut tls = (*tls).clone();
    tls.alpn_protocols = vec![ALPN.to_vec()];
    // QUIC allows only 0 or u32::MAX here; QUIC's own flow control bounds early data.
    tls.max_early_data_size = u32::MAX;
    // A store of its own, so TCP's many data connections never push QUIC sessions out. Each
    // connection gets rustls's two tickets: a reconnect attempt uses one up even when it never
    // reaches the server, so the next attempt still has one.
    tls.session_storage = rustls::server::ServerSessionMemoryCache::new(SESSION_CACHE);
    let crypto = QuicServerConfig::try_from(tls)
        .context("the server's TLS configuration cannot be used for QUIC")?;
    let mut config = quinn::ServerConfig::with_crypto(Arc::new(crypto));
    config
        .transport_config(transport_config_with(UNPROVEN_RECEIVE_WINDOW))
        .migration(true);
    tune_socket(&socket);
    let runtime = quinn::default_runtime().context("QUIC needs a tokio runtime")?;
    quinn::Endpoint::new(Default::default(), Some(config), socket, runtime)
        .context("cannot start the QUIC endpoint")
}

/// A client endpoint bound to `bind` (usually `0.0.0.0:0` or `[::]:0`), able to connect to
/// servers with [`connect`]. Must be called inside a tokio runtime.
pub fn client_endpoint(bind: SocketAddr) -> io::Result<quinn::Endpoint> {
    let runtime =
        quinn::default_runtime().ok_or_else(|| io::Error::other("QUIC needs a tokio runtime"))?;
    quinn::Endpoint::new(Default::default(), None, bind_udp(bind)?, runtime)
}

/// Moves a client endpoint to a new UDP socket bound to `bind`, and returns its address. Its
/// connections carry on from there: the server sees the new address once packets arrive from
/// it. Useful when the network changed under the client.
pub fn rebind(endpoint: &quinn::Endpoint, bind: SocketAddr) -> io::Result<SocketAddr> {
    let socket = bind_udp(bind)?;
    let local = socket.local_addr()?;
    endpoint.rebind(socket)?;
    Ok(local)
}

/// The client's TLS for QUIC: burrow's trust in the server, with the ALPN set, early data
/// allowed, and one session store. Clones share the store: build it once per server and keep
/// it across reconnects, or nothing resumes.
#[derive(Clone)]
pub struct ClientTls {
    config: rustls::ClientConfig,
    verifier: Arc<dyn ServerCertVerifier>,
    refusal: Refusal,
}

impl std::fmt::Debug for ClientTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientTls")
            .field("verifier", &self.verifier)
            .finish_non_exhaustive()
    }
}

/// Why a client's certificate check refused the server, kept until a failed connection takes
/// it. The check is one for all of a [`ClientTls`]'s connections (resumption needs that), so
/// this is too; they all go to the same server with the same trust, so a refusal taken by
/// another connection failing at the same moment says the same thing.
type Refusal = Arc<Mutex<Option<rustls::Error>>>;

/// A failed connection's error: the certificate check's refusal when there was one, in the
/// same shape as tokio-rustls's handshake errors (which [`tls`] classifies), otherwise quinn's.
fn failure(refusal: &Refusal, failure: quinn::ConnectionError) -> io::Error {
    match refusal.lock().unwrap_or_else(|e| e.into_inner()).take() {
        Some(err) => io::Error::new(io::ErrorKind::InvalidData, err),
        None => failure.into(),
    }
}

/// Builds the client's QUIC TLS for `server` (`host:port` as the user wrote it), trusting it as
/// [`tls::client_config`] does for TCP.
pub fn client_tls(trust: &Trust, server: &str) -> anyhow::Result<ClientTls> {
    let verifier = tls::server_verifier(trust, server)?;
    let refusal = Arc::new(Mutex::new(None));
    let mut config = tls::client_config_with(Arc::new(RecordRefusal {
        inner: Arc::clone(&verifier),
        refusal: Arc::clone(&refusal),
    }))?;
    config.alpn_protocols = vec![ALPN.to_vec()];
    // Only offered with a resumed session; what goes early is the caller's choice (see
    // `handshake`).
    config.enable_early_data = true;
    Ok(ClientTls {
        config,
        verifier,
        refusal,
    })
}

/// Connects to a server and completes the QUIC handshake, bounded by the idle timeout; nothing
/// is sent as 0-RTT data (see [`dial`] for that).
///
/// `server_name` is the host the certificate is checked against (a DNS name or an IP address).
/// When the server's certificate is refused, the error carries the `rustls::Error` as a TCP TLS
/// handshake does: [`tls::is_trust_error`] is true and [`tls::trust_error_message`] explains it,
/// and retrying will not help.
pub async fn connect(
    endpoint: &quinn::Endpoint,
    server: SocketAddr,
    server_name: &str,
    tls: &ClientTls,
) -> io::Result<quinn::Connection> {
    match dial(endpoint, server, server_name, tls).await? {
        Dialed::Done(connection) => Ok(connection),
        Dialed::Early(connection, handshake) => {
            handshake.finish().await?;
            Ok(connection)
        }
    }
}

/// The largest datagram the connection can send now, `None` when the peer takes none.
///
/// A QUIC datagram must fit one packet: about 1200 bytes at first, up to ~1400 once path MTU
/// discovery has grown it on a typical Ethernet path, and it may shrink if the path changes.
/// Larger UDP datagrams must go over a stream instead; they are never truncated.
pub fn max_datagram_size(conn: &quinn::Connection) -> Option<usize> {
    conn.max_datagram_size()
}

/// Sends one datagram without waiting: unreliable, unordered, never behind stream data. When
/// the send buffer is full the oldest queued datagram is dropped. Fails with
/// `SendDatagramError::TooLarge` above [`max_datagram_size`].
pub fn send_datagram(
    conn: &quinn::Connection,
    payload: Bytes,
) -> Result<(), quinn::SendDatagramError> {
    conn.send_datagram(payload)
}

/// Receives the next datagram; fails only when the connection is gone. Cancel-safe.
pub async fn read_datagram(conn: &quinn::Connection) -> Result<Bytes, quinn::ConnectionError> {
    conn.read_datagram().await
}

/// Binds a UDP socket as quinn's own client endpoint does (IPv6 sockets take IPv4 too).
fn bind_udp(addr: SocketAddr) -> io::Result<UdpSocket> {
    let socket = socket2::Socket::new(
        socket2::Domain::for_address(addr),
        socket2::Type::DGRAM,
        Some(socket2::Protocol::UDP),
    )?;
    if addr.is_ipv6() {
        // Best effort: some systems forbid dual-stack sockets; IPv6 still works then.
        let _ = socket.set_only_v6(false);
    }
    socket.bind(&addr.into())?;
    let socket = UdpSocket::from(socket);
    tune_socket(&socket);
    Ok(socket)
}

/// Asks for larger socket buffers; the kernel may give less, which only costs throughput.
fn tune_socket(socket: &UdpSocket) {
    let socket = socket2::SockRef::from(socket);
    let _ = socket.set_recv_buffer_size(SOCKET_BUFFER);
    let _ = socket.set_send_buffer_size(SOCKET_BUFFER);
}

/// Runs burrow's certificate check and remembers why it refused, which quinn would otherwise
/// reduce to a TLS alert number and a string.
#[derive(Debug)]
struct RecordRefusal {
    inner: Arc<dyn ServerCertVerifier>,
    refusal: Refusal,
}

impl RecordRefusal {
    fn record<T>(&self, result: Result<T, rustls::Error>) -> Result<T, rustls::Error> {
        if let Err(e) = &result {
            *self.refusal.lock().unwrap_or_else(|e| e.into_inner()) = Some(e.clone());
        }
        result
    }
}

impl ServerCertVerifier for RecordRefusal {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        self.record(self.inner.verify_server_cert(
            end_entity,
            intermediates,
            server_name,
            ocsp_response,
            now,
        ))
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.record(self.inner.verify_tls12_signature(message, cert, dss))
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.record(self.inner.verify_tls13_signature(message, cert, dss))
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }

    fn requires_raw_public_keys(&self) -> bool {
        self.inner.requires_raw_public_keys()
    }

    fn root_hint_subjects(&self) -> Option<&[rustls::DistinguishedName]> {
        self.inner.root_hint_subjects()
    }
}
