//! Dialing the server: TCP (directly or through a proxy), TLS (unless plain), then the burrow
//! handshake, under one deadline.

mod quic;

use crate::config::{CarrierKind, ClientConfig, Transport};
use crate::server_streams::Inbound;
use burrow_net::mux::{MuxStream, Opener};
use burrow_net::ws;
use burrow_net::{
    Carrier, FrameIo, read_frame, read_preface_with, tls, tune_carrier, write_frame,
    write_preface_with,
};
use burrow_proto::auth::{self, Secret};
use burrow_proto::decode_payload;
use burrow_proto::frame::{HEADER_LEN, payload_len};
use burrow_proto::msg::NONCE_LEN;
use burrow_proto::msg::{Challenge, HandshakeError, Hello, Welcome};
use burrow_proto::preface::version_advice;
use burrow_proto::{PREFACE_LEN, Preface, PrefaceError, VERSION, caps, encode_frame};
use std::sync::atomic::{AtomicU64, Ordering};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio::time::timeout;

/// The streams the server opens on a mux link.
type MuxInbound = mpsc::Receiver<MuxStream>;

/// Why a connection attempt failed.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ConnectError {
    /// Retrying will not help, on any carrier: authentication, version, trust in the server.
    #[error("{0}")]
    Fatal(String),
    /// This carrier cannot work here (the server does not offer it, the web server in front
    /// refuses the WebSocket, ...); another carrier may. Fatal on the first connection when it
    /// is the last carrier left, as a wrong token is, and retried on later ones.
    #[error("{0}")]
    Unusable(String),
    /// The server could not be reached or the connection broke; try again later.
    #[error("{0}")]
    Retry(String),
    /// The proxy wants credentials, or refused the ones given: fatal on the first connection,
    /// as a wrong token is, and retried on later ones (a proxy's login backend may be down).
    #[error("{0}")]
    ProxyAuth(String),
}

/// An established control stream.
pub(crate) struct Established {
    pub carrier: Carrier,
    pub session: u64,
    pub secret: Secret,
    /// The capability bits of the server's preface (see `caps::EARLY_DATA`).
    pub server_caps: u32,
    /// How the session opens its data connections.
    pub link: Link,
    /// Over QUIC: whether the preface went as 0-RTT data and the server took it; `None` on
    /// other carriers.
    pub zero_rtt: Option<bool>,
    /// The streams the server opens on the link, on the carriers that have one.
    pub inbound: Option<Inbound>,
}

/// How a session opens its data connections: the way its control stream was opened.
#[derive(Debug, Clone)]
pub(crate) enum Link {
    /// A new TCP (or TLS) connection each.
    Dial,
    /// A new stream of the session's multiplexed connection (`mux`, or `ws` inside a
    /// WebSocket).
    Mux(Opener, &'static str),
    /// A new stream of the session's QUIC connection, whose DATAGRAM frames carry UDP tunnels
    /// too.
    Quic(burrow_net::quic::QuicLink),
}

impl Link {
    /// The carrier's name, for logs and status.
    pub(crate) fn kind(&self) -> &'static str {
        match self {
            Link::Dial => "tcp",
            Link::Mux(_, kind) => kind,
            Link::Quic(_) => "quic",
        }
    }
}

/// Opens a control stream and authenticates, over the first of the configured carriers that
/// gets through; the others are tried in order when one cannot connect.
pub(crate) async fn control(config: &ClientConfig) -> Result<Established, ConnectError> {
    let mut carriers = config.carriers.iter().peekable();
    while let Some(kind) = carriers.next() {
        match control_over(config, kind).await {
            // The same answer waits on every carrier: stop here.
            Err(e @ ConnectError::Fatal(_)) => return Err(e),
            Err(e) if carriers.peek().is_some() => {
                tracing::warn!("carrier {kind} failed: {e}; trying the next one");
            }
            done => return done,
        }
    }
    Err(ConnectError::Fatal("no carrier is configured".into()))
}

/// Opens a control stream over one carrier.
async fn control_over(
    config: &ClientConfig,
    kind: &CarrierKind,
) -> Result<Established, ConnectError> {
    timeout(config.connect_timeout, async {
        let Greeted {
            link,
            mut carrier,
            challenge,
            server_caps,
            zero_rtt,
            inbound,
        } = greet_over(config, kind).await?;
        let nonce = auth::nonce();
        let proof = auth::control_proof(&config.token, &config.name, &challenge, &nonce);
        let hello = Hello::Control {
            name: config.name.clone(),
            nonce,
            proof,
        };
        let session = exchange(&mut carrier, &hello).await?;
        let secret = auth::session_secret(&config.token, &challenge, &nonce);
        Ok(Established {
            carrier,
            session,
            secret,
            server_caps,
            link,
            zero_rtt,
            inbound,
        })
    })
    .await
    .unwrap_or_else(|_| {
        Err(ConnectError::Retry(format!(
            "no answer from {} within {:?}",
            config.server, config.connect_timeout
        )))
    })
}

/// A link with its control stream open and the server's challenge read.
struct Greeted {
    link: Link,
    carrier: Carrier,
    challenge: [u8; 32],
    /// The capability bits of the server's preface.
    server_caps: u32,
    /// Over QUIC: whether the preface went as 0-RTT data and the server took it.
    zero_rtt: Option<bool>,
    /// The streams the server opens on the link, when there is one.
    inbound: Option<Inbound>,
}

/// Opens the link of one carrier and greets the server on its control stream. On a link, the
/// control stream's preface asks the server to open streams toward us for visitors that find
/// the pool empty ([`control_preface`]).
async fn greet_over(config: &ClientConfig, kind: &CarrierKind) -> Result<Greeted, ConnectError> {
    let (link, inbound) = match kind {
        CarrierKind::Quic => return quic::control(config).await,
        CarrierKind::Tcp => (Link::Dial, None),
        CarrierKind::Mux => {
            let (opener, inbound) = open_link(config).await?;
            (Link::Mux(opener, "mux"), Some(Inbound::Mux(inbound, "mux")))
        }
        CarrierKind::Ws(url) => {
            let (opener, inbound) = open_ws_link(config, url).await?;
            (Link::Mux(opener, "ws"), Some(Inbound::Mux(inbound, "ws")))
        }
    };
    let preface = match link {
        Link::Dial => Preface::ours(),
        _ => control_preface(),
    };
    let Challenged {
        carrier,
        challenge,
        server_caps,
    } = open(config, &link, preface).await?;
    Ok(Greeted {
        link,
        carrier,
        challenge,
        server_caps,
        zero_rtt: None,
        inbound,
    })
}

/// The preface of a control stream on a link: ours, asking for server-opened streams.
fn control_preface() -> Preface {
    Preface {
        caps: Preface::ours().caps | caps::SERVER_STREAMS,
        ..Preface::ours()
    }
}

/// Opens a data connection for `session`. With `early` (the server announced
/// `caps::EARLY_DATA`), the connection's preface and an early hello numbered from it leave in
/// one write and the connection is ready at once: the server answers nothing (a refusal closes
/// it, which the caller sees as the idle connection closing). Otherwise the challenge is
/// answered and the welcome awaited.
pub(crate) async fn data(
    config: &ClientConfig,
    link: &Link,
    session: u64,
    key: &auth::DataKey,
    early: Option<&AtomicU64>,
) -> Result<Carrier, ConnectError> {
    timeout(config.connect_timeout, async {
        if let Some(next) = early {
            let mut carrier = connection(config, link).await?;
            let seq = next.fetch_add(1, Ordering::Relaxed);
            let first = early_hello(session, seq, key)
                .map_err(|e| ConnectError::Retry(format!("encoding the hello: {e}")))?;
            carrier
                .write_all(&first)
                .await
                .map_err(|e| retry_io("sending the hello", e))?;
            carrier
                .flush()
                .await
                .map_err(|e| retry_io("sending the hello", e))?;
            return Ok(carrier);
        }
        let Challenged {
            mut carrier,
            challenge,
            ..
        } = open(config, link, Preface::ours()).await?;
        let proof = key.proof(session, &challenge);
        exchange(&mut carrier, &Hello::Data { session, proof }).await?;
        Ok(carrier)
    })
    .await
    .unwrap_or_else(|_| Err(ConnectError::Retry("data connection timed out".into())))
}

/// A data connection's preface asking for an early hello, followed by the hello: one write.
fn early_hello(
    session: u64,
    seq: u64,
    key: &auth::DataKey,
) -> Result<Vec<u8>, burrow_proto::FrameError> {
    let preface = Preface {
        caps: Preface::ours().caps | caps::EARLY_HELLO,
        ..Preface::ours()
    };
    let hello = Hello::EarlyData {
        session,
        seq,
        proof: key.early_proof(session, seq),
    };
    let frame = encode_frame(&hello)?;
    let mut first = Vec::with_capacity(PREFACE_LEN + frame.len());
    first.extend_from_slice(&preface.encode());
    first.extend_from_slice(&frame);
    Ok(first)
}

/// A connection greeted by the server: its preface read, and the challenge.
pub(super) struct Challenged {
    pub carrier: Carrier,
    pub challenge: [u8; 32],
    /// The capability bits of the server's preface.
    pub server_caps: u32,
}

/// A new connection (or stream) over `link`, with prefaces exchanged (ours is `preface`) and
/// the challenge read.
async fn open(
    config: &ClientConfig,
    link: &Link,
    preface: Preface,
) -> Result<Challenged, ConnectError> {
    let carrier = connection(config, link).await?;
    greet(config, carrier, preface).await
}

/// A new connection (or stream) over `link`, secured, before any burrow byte.
async fn connection(config: &ClientConfig, link: &Link) -> Result<Carrier, ConnectError> {
    Ok(match link {
        Link::Dial => dial(config).await?,
        Link::Mux(opener, kind) => Carrier::stream(
            opener
                .open()
                .await
                .map_err(|e| ConnectError::Retry(format!("multiplexed connection lost: {e}")))?,
            kind,
        ),
        Link::Quic(link) => {
            Carrier::Quic(Box::new(link.open().await.map_err(|e| {
                ConnectError::Retry(format!("QUIC connection lost: {e}"))
            })?))
        }
    })
}

/// A multiplexed connection: dialed and secured as the TCP carrier's connections are, then
/// turned into a link by its preface.
async fn open_link(config: &ClientConfig) -> Result<(Opener, MuxInbound), ConnectError> {
    let carrier = dial(config).await?;
    link_over(config, carrier).await
}

/// A multiplexed connection inside a WebSocket: TCP to the URL's host (through the proxy, if
/// any), the WebSocket handshake (with TLS for `wss://`), then burrow's own TLS unless plain,
/// so the session is private and the server verified whatever sits between.
async fn open_ws_link(
    config: &ClientConfig,
    url: &url::Url,
) -> Result<(Opener, MuxInbound), ConnectError> {
    let host = url.host_str().unwrap_or_default();
    let port = url.port_or_known_default().unwrap_or(443);
    let address = if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    };
    let tcp = match &config.proxy {
        Some(proxy) => crate::proxy::dial(proxy, &address).await?,
        None => TcpStream::connect(&address)
            .await
            .map_err(|e| ConnectError::Retry(format!("cannot reach {address}: {e}")))?,
    };
    let _ = tune_carrier(&tcp);
    let io = ws::connect(tcp, url, config.ws_tls.clone())
        .await
        .map_err(|e| match e {
            ws::WsError::Trust { .. } | ws::WsError::Url { .. } | ws::WsError::TlsConfig(_) => {
                ConnectError::Unusable(e.to_string())
            }
            // A wrong path or a refusal stays so; a timeout or rate limit passes.
            ws::WsError::Status { status, .. }
                if (400..500).contains(&status) && status != 408 && status != 429 =>
            {
                ConnectError::Unusable(e.to_string())
            }
            other => ConnectError::Retry(format!("WebSocket to {url}: {other}")),
        })?;
    match &config.transport {
        Transport::Plain => link_over(config, io).await,
        Transport::Tls(tls_config) => {
            let tls = tls_handshake(config, tls_config, io).await?;
            link_over(config, tls).await
        }
    }
}

/// Turns a secured connection into a multiplexed link: the link preface, the server's answer,
/// then yamux, accepting the streams the server opens.
async fn link_over<S>(
    config: &ClientConfig,
    mut io: S,
) -> Result<(Opener, MuxInbound), ConnectError>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let link = Preface {
        caps: Preface::ours().caps | caps::LINK,
        ..Preface::ours()
    };
    write_preface_with(&mut io, link)
        .await
        .map_err(|e| retry_io("sending the preface", e))?;
    let theirs = read_server_preface(config, &mut io).await?;
    if theirs.caps & caps::MUX == 0 {
        return Err(ConnectError::Unusable(format!(
            "{} does not accept multiplexed carriers (mux, ws); upgrade the server or choose \
             carrier = \"tcp\"",
            config.server
        )));
    }
    Ok(burrow_net::mux::client_accepting(io))
}

/// TCP (through the proxy, if any), then TLS unless plain.
async fn dial(config: &ClientConfig) -> Result<Carrier, ConnectError> {
    let tcp = match &config.proxy {
        Some(proxy) => crate::proxy::dial(proxy, &config.server).await?,
        None => TcpStream::connect(&config.server)
            .await
            .map_err(|e| ConnectError::Retry(format!("cannot reach {}: {e}", config.server)))?,
    };
    let _ = tune_carrier(&tcp);
    Ok(match &config.transport {
        Transport::Plain => Carrier::Plain(tcp),
        Transport::Tls(tls_config) => {
            Carrier::ClientTls(Box::new(tls_handshake(config, tls_config, tcp).await?))
        }
    })
}

/// Prefaces (ours is `preface`) and the challenge.
async fn greet(
    config: &ClientConfig,
    mut carrier: Carrier,
    preface: Preface,
) -> Result<Challenged, ConnectError> {
    write_preface_with(&mut carrier, preface)
        .await
        .map_err(|e| retry_io("sending the preface", e))?;
    read_challenge(config, carrier).await
}

/// The server's preface and challenge, once ours is sent. The server sends both in one write,
/// and then waits for the hello, so they are read together: usually one read call instead of
/// three, and never a byte past them.
async fn read_challenge(
    config: &ClientConfig,
    mut carrier: Carrier,
) -> Result<Challenged, ConnectError> {
    let mut frame = [0u8; CHALLENGE_FRAME_LEN];
    let (theirs, filled) = read_server_preface_with(config, &mut carrier, &mut frame).await?;
    carrier
        .read_exact(&mut frame[filled..])
        .await
        .map_err(|e| retry_io("reading the challenge", e))?;
    let challenge = decode_challenge(&frame).map_err(|e| retry_io("reading the challenge", e))?;
    Ok(Challenged {
        carrier,
        challenge: challenge.nonce,
        server_caps: theirs.caps,
    })
}

/// A challenge frame's length: the header and the nonce (postcard writes an array's bytes as
/// they are).
const CHALLENGE_FRAME_LEN: usize = HEADER_LEN + NONCE_LEN;

/// Decodes a whole challenge frame.
fn decode_challenge(frame: &[u8; CHALLENGE_FRAME_LEN]) -> Result<Challenge, String> {
    let mut header = [0u8; HEADER_LEN];
    header.copy_from_slice(&frame[..HEADER_LEN]);
    match payload_len(header) {
        Ok(NONCE_LEN) => decode_payload(&frame[HEADER_LEN..]).map_err(|e| e.to_string()),
        Ok(len) => Err(format!("a challenge of {len} bytes, not {NONCE_LEN}")),
        Err(e) => Err(e.to_string()),
    }
}

/// Reads the server's preface and checks its version.
async fn read_server_preface<S: AsyncRead + Unpin>(
    config: &ClientConfig,
    io: &mut S,
) -> Result<Preface, ConnectError> {
    read_server_preface_with(config, io, &mut [])
        .await
        .map(|(preface, _)| preface)
}

/// Reads the server's preface, and with it up to `after.len()` bytes that follow it (see
/// [`read_preface_with`]), and checks its version.
async fn read_server_preface_with<S: AsyncRead + Unpin>(
    config: &ClientConfig,
    io: &mut S,
    after: &mut [u8],
) -> Result<(Preface, usize), ConnectError> {
    let (theirs, filled) = read_preface_with(io, after).await.map_err(|e| match e {
        FrameIo::Preface(PrefaceError::LooksLikeTls) => ConnectError::Fatal(
            "the server speaks TLS; drop --insecure-plain (plain TCP needs it on both sides)"
                .into(),
        ),
        FrameIo::Preface(p) => {
            ConnectError::Fatal(format!("{} is not a burrow server: {p}", config.server))
        }
        FrameIo::Io(e) if closed_at_once(&e) && matches!(config.transport, Transport::Plain) => {
            ConnectError::Retry(closed_at_once_message(&config.server, false))
        }
        other => ConnectError::Retry(format!(
            "the server closed the connection during the handshake ({other}); if it runs with \
             --insecure-plain, the client needs it too"
        )),
    })?;
    if theirs.version != VERSION {
        return Err(ConnectError::Fatal(version_advice(
            VERSION,
            theirs.version,
            false,
        )));
    }
    Ok((theirs, filled))
}

async fn tls_handshake<S: AsyncRead + AsyncWrite + Unpin>(
    config: &ClientConfig,
    tls_config: &std::sync::Arc<crate::config::TlsClientConfig>,
    tcp: S,
) -> Result<tls::tokio_rustls::client::TlsStream<S>, ConnectError> {
    let host = host_of(&config.server);
    let name = tls::server_name(host)
        .map_err(|e| ConnectError::Fatal(format!("server name `{host}`: {e}")))?;
    let connector = tls::tokio_rustls::TlsConnector::from(tls_config.clone());
    connector.connect(name, tcp).await.map_err(|e| {
        if tls::is_trust_error(&e) {
            let why = tls::trust_error_message(&e).unwrap_or_else(|| e.to_string());
            ConnectError::Fatal(format!("the server's certificate is not trusted: {why}"))
        } else if closed_at_once(&e) {
            ConnectError::Retry(closed_at_once_message(&config.server, true))
        } else {
            ConnectError::Retry(format!(
                "TLS handshake with {} failed: {e} (if the server runs with --insecure-plain, the client needs it too)",
                config.server
            ))
        }
    })
}

/// Sends the hello and reads the welcome.
async fn exchange(carrier: &mut Carrier, hello: &Hello) -> Result<u64, ConnectError> {
    write_frame(carrier, hello)
        .await
        .map_err(|e| retry_io("sending the hello", e))?;
    match read_frame::<_, Welcome>(carrier)
        .await
        .map_err(|e| retry_io("reading the welcome", e))?
    {
        Welcome::Ok { session, .. } => Ok(session),
        Welcome::Err(e @ HandshakeError::AuthFailed) => Err(ConnectError::Fatal(e.to_string())),
        Welcome::Err(e) => Err(ConnectError::Retry(e.to_string())),
    }
}

/// Explains a server that closed the connection before answering: it bans addresses that failed
/// too many handshakes and drops connections beyond its cap on handshakes in progress; a plain
/// server also hangs up on a TLS client.
fn closed_at_once_message(server: &str, tls: bool) -> String {
    let (what, plain) = if tls {
        (
            "TLS handshake",
            ", or when it runs with --insecure-plain, which the client then needs too",
        )
    } else {
        ("handshake", "")
    };
    format!(
        "{server} closed the connection before the {what} (is this address banned after failed \
         logins? a server also does this when too many handshakes are in progress{plain})"
    )
}

/// True when the server hung up without a word: end of file, or a reset because it closed
/// with our first bytes unread.
fn closed_at_once(e: &std::io::Error) -> bool {
    use std::io::ErrorKind::{BrokenPipe, ConnectionAborted, ConnectionReset, UnexpectedEof};
    matches!(
        e.kind(),
        UnexpectedEof | ConnectionReset | ConnectionAborted | BrokenPipe
    )
}

fn retry_io(what: &str, e: impl std::fmt::Display) -> ConnectError {
    ConnectError::Retry(format!("connection lost while {what}: {e}"))
}

/// The host part of `host:port` (IPv6 brackets removed).
pub(crate) fn host_of(server: &str) -> &str {
    let host = server.rsplit_once(':').map_or(server, |(h, _)| h);
    host.trim_start_matches('[').trim_end_matches(']')
}

#[cfg(test)]
mod tests {
    /// The challenge is read as a frame of known length; this is that length.
    #[test]
    fn a_challenge_frame_has_the_length_read_for_it() {
        let challenge = burrow_proto::msg::Challenge { nonce: [7; 32] };
        let frame = burrow_proto::encode_frame(&challenge).unwrap();
        assert_eq!(frame.len(), super::CHALLENGE_FRAME_LEN);
        let frame: [u8; super::CHALLENGE_FRAME_LEN] = frame.try_into().unwrap();
        assert_eq!(super::decode_challenge(&frame).unwrap().nonce, [7; 32]);
        let mut longer = frame;
        longer[3] += 1;
        assert!(super::decode_challenge(&longer).is_err());
    }

    /// A data connection given the session's early-hello counter (the server announced them;
    /// see `streams::early_hellos`) sends its preface and hello in one write and waits for
    /// nothing; without it (an older server), it answers the challenge and reads the welcome.
    /// A hand-written server checks the bytes of each.
    #[tokio::test]
    async fn a_data_connection_says_hello_early_only_to_a_server_that_takes_it() {
        use super::*;
        use burrow_net::{read_preface, write_preface};
        use std::sync::atomic::AtomicU64;
        use tokio::net::TcpListener;

        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let server = listener.local_addr().unwrap().to_string();
        let config = ClientConfig::new(
            server,
            "me".into(),
            Secret::new("t"),
            crate::config::Transport::Plain,
        );
        let key = auth::DataKey::new(&Secret::new("session-secret"));

        // Early: both hellos of this session number themselves 5 and 6.
        let next = AtomicU64::new(5);
        for seq in [5, 6] {
            let (dialed, accepted) = tokio::join!(
                data(&config, &Link::Dial, 9, &key, Some(&next)),
                listener.accept()
            );
            let mut carrier = dialed.unwrap();
            let (mut theirs, _) = accepted.unwrap();
            let preface = read_preface(&mut theirs).await.unwrap();
            assert_ne!(preface.caps & caps::EARLY_HELLO, 0);
            let hello: Hello = read_frame(&mut theirs).await.unwrap();
            let proof = key.early_proof(9, seq);
            assert_eq!(
                hello,
                Hello::EarlyData {
                    session: 9,
                    seq,
                    proof
                }
            );
            // The client was ready before the server said a word, and sent nothing more.
            carrier.shutdown().await.unwrap();
            let mut rest = Vec::new();
            theirs.read_to_end(&mut rest).await.unwrap();
            assert!(rest.is_empty(), "{rest:?}");
        }

        // Challenged: the server's preface and challenge, the hello, the welcome.
        let serve = async {
            let (mut theirs, _) = listener.accept().await.unwrap();
            let preface = read_preface(&mut theirs).await.unwrap();
            assert_eq!(preface.caps & caps::EARLY_HELLO, 0);
            write_preface(&mut theirs).await.unwrap();
            let nonce = [3u8; 32];
            write_frame(&mut theirs, &Challenge { nonce })
                .await
                .unwrap();
            let hello: Hello = read_frame(&mut theirs).await.unwrap();
            let proof = key.proof(9, &nonce);
            assert_eq!(hello, Hello::Data { session: 9, proof });
            let welcome = Welcome::Ok {
                session: 9,
                heartbeat_ms: 1000,
                dead_after_ms: 3000,
            };
            write_frame(&mut theirs, &welcome).await.unwrap();
            theirs
        };
        let (dialed, _theirs) = tokio::join!(data(&config, &Link::Dial, 9, &key, None), serve);
        dialed.unwrap();
        assert_eq!(next.load(Ordering::Relaxed), 7, "no number was used");
    }

    #[test]
    fn host_of_handles_names_and_ipv6() {
        assert_eq!(super::host_of("example.net:7777"), "example.net");
        assert_eq!(super::host_of("[::1]:7777"), "::1");
        assert_eq!(super::host_of("10.0.0.1:1"), "10.0.0.1");
    }
}
