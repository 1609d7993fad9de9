//! One carrier type for every transport, chosen once as a value.
//!
//! An enum rather than a generic parameter or a trait object: the session code stays free of type
//! parameters, and the relay can see when both ends are plain TCP (the zero-copy case).

use crate::quic::{QuicLink, QuicStream};
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

/// A connection between client and server (control stream or data connection).
#[derive(Debug)]
pub enum Carrier {
    /// Plain TCP: only when both sides opted in with `insecure_plain`.
    Plain(TcpStream),
    /// TLS 1.3, as seen by the client.
    ClientTls(Box<tokio_rustls::client::TlsStream<TcpStream>>),
    /// TLS 1.3, as seen by the server.
    ServerTls(Box<tokio_rustls::server::TlsStream<TcpStream>>),
    /// An in-memory pipe: protocol tests drive sessions through it, with paused time.
    Memory(tokio::io::DuplexStream),
    /// One stream of a multiplexed carrier (mux, WebSocket), or any other byte stream, with the
    /// carrier's name for logs.
    Stream(Box<dyn Duplex>, &'static str),
    /// One stream of a QUIC connection: a byte stream like the others, whose link also carries
    /// DATAGRAM frames for UDP tunnels (see [`Carrier::quic_link`]).
    Quic(Box<QuicStream>),
}

/// A byte stream a [`Carrier::Stream`] can hold.
pub trait Duplex: AsyncRead + AsyncWrite + Send + Sync + Unpin + std::fmt::Debug + 'static {}

impl<T: AsyncRead + AsyncWrite + Send + Sync + Unpin + std::fmt::Debug + 'static> Duplex for T {}

impl Carrier {
    /// A carrier over any byte stream, named `kind` in logs.
    pub fn stream(io: impl Duplex, kind: &'static str) -> Self {
        Carrier::Stream(Box::new(io), kind)
    }
}

impl Carrier {
    /// The underlying TCP socket (none for an in-memory pipe).
    pub fn tcp(&self) -> Option<&TcpStream> {
        match self {
            Carrier::Plain(s) => Some(s),
            Carrier::ClientTls(s) => Some(s.get_ref().0),
            Carrier::ServerTls(s) => Some(s.get_ref().0),
            Carrier::Memory(_) | Carrier::Stream(..) | Carrier::Quic(_) => None,
        }
    }

    /// The QUIC link under this carrier, when it is a stream of one opened through a
    /// [`QuicLink`]: a UDP tunnel then sends small datagrams as DATAGRAM frames on it.
    pub fn quic_link(&self) -> Option<&QuicLink> {
        match self {
            Carrier::Quic(stream) => stream.link(),
            _ => None,
        }
    }

    /// True when nothing arrived on an idle connection and the peer has not closed it: an idle
    /// data connection receives nothing until it is used, so readable bytes or end-of-stream
    /// both mean it is no longer usable. Does not consume anything.
    pub fn is_idle_and_open(&mut self) -> bool {
        if matches!(self, Carrier::Stream(..) | Carrier::Quic(_)) {
            // A stream of a multiplexed carrier has no socket to peek at: try a read without
            // waiting. Anything that arrived (bytes, end, error) makes it unusable anyway.
            let mut byte = [0u8; 1];
            let mut buf = ReadBuf::new(&mut byte);
            let mut cx = Context::from_waker(std::task::Waker::noop());
            return Pin::new(self).poll_read(&mut cx, &mut buf).is_pending();
        }
        let Some(tcp) = self.tcp() else {
            return true;
        };
        let mut probe = [std::mem::MaybeUninit::<u8>::uninit(); 1];
        match socket2::SockRef::from(tcp).peek(&mut probe) {
            Err(e) => e.kind() == io::ErrorKind::WouldBlock,
            Ok(_) => false,
        }
    }

    /// True when a reusable stream (`StreamKind::TcpReusable`) pays on this carrier: a
    /// connection of its own (plain TCP, TLS, or a test's in-memory pipe), which a new visitor
    /// would otherwise pay a new connection and handshake for. Streams of a link cost no
    /// handshake to open in the first place.
    pub fn takes_reusable_streams(&self) -> bool {
        matches!(
            self,
            Carrier::Plain(_) | Carrier::ClientTls(_) | Carrier::ServerTls(_) | Carrier::Memory(_)
        )
    }

    /// A short name for logs: `tcp`, `tls`, `mux`, ...
    pub fn kind(&self) -> &'static str {
        match self {
            Carrier::Plain(_) => "tcp",
            Carrier::ClientTls(_) | Carrier::ServerTls(_) => "tls",
            Carrier::Memory(_) => "memory",
            Carrier::Stream(_, kind) => kind,
            Carrier::Quic(_) => "quic",
        }
    }
}

/// Accept-queue length for burrow's listeners. tokio's `TcpListener::bind` uses 128, which a
/// burst of visitors (or of pooled data connections) overflows; the kernel then resets
/// connections it cannot queue. The kernel caps this at `net.core.somaxconn`.
pub const LISTEN_BACKLOG: u32 = 4096;

/// Binds a TCP listener with `SO_REUSEADDR` (a restarted server can rebind at once while old
/// connections linger in TIME_WAIT) and a deep accept queue.
pub fn listen(addr: std::net::SocketAddr) -> io::Result<tokio::net::TcpListener> {
    let socket = match addr {
        std::net::SocketAddr::V4(_) => tokio::net::TcpSocket::new_v4()?,
        std::net::SocketAddr::V6(_) => tokio::net::TcpSocket::new_v6()?,
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(LISTEN_BACKLOG)
}

/// Gives a listener the options [`tune_carrier`] (`carriers`) or [`tune_endpoint`] would give
/// each socket it accepts, and returns true when those sockets need nothing more: Linux copies
/// a listener's `TCP_NODELAY` and keepalive settings into every socket it accepts, which saves
/// a new data connection five system calls and a visitor one. Elsewhere, or if an option is
/// refused, it returns false and the caller tunes each accepted socket as before.
pub fn tune_listener(listener: &tokio::net::TcpListener, carriers: bool) -> bool {
    if !cfg!(target_os = "linux") {
        return false;
    }
    let socket = socket2::SockRef::from(listener);
    let tuned = if carriers {
        socket
            .set_tcp_nodelay(true)
            .and_then(|()| socket.set_tcp_keepalive(&carrier_keepalive()))
    } else {
        socket.set_tcp_nodelay(true)
    };
    tuned.is_ok()
}

/// Applies burrow's socket options to a carrier (control stream or data connection).
///
/// `TCP_NODELAY`: frames and interactive traffic must not wait for Nagle. Keepalive (15 s idle,
/// 5 s interval, 3 probes): pooled data connections sit idle and must not be silently dropped by
/// a NAT without the kernel noticing; heartbeats cover the control stream.
pub fn tune_carrier(stream: &TcpStream) -> io::Result<()> {
    stream.set_nodelay(true)?;
    socket2::SockRef::from(stream).set_tcp_keepalive(&carrier_keepalive())
}

/// Keepalive on carriers: 15 s idle, 5 s interval, 3 probes.
fn carrier_keepalive() -> socket2::TcpKeepalive {
    socket2::TcpKeepalive::new()
        .with_time(Duration::from_secs(15))
        .with_interval(Duration::from_secs(5))
        .with_retries(3)
}

/// Applies burrow's socket options to a visitor or target socket: `TCP_NODELAY` only. Their
/// liveness is their own peers' business, and four keepalive system calls per connection are a
/// measurable share of a short connection's cost.
pub fn tune_endpoint(stream: &TcpStream) -> io::Result<()> {
    stream.set_nodelay(true)
}

macro_rules! delegate {
    ($self:ident, $s:ident => $e:expr) => {
        match $self.get_mut() {
            Carrier::Plain($s) => {
                let $s = Pin::new($s);
                $e
            }
            Carrier::ClientTls($s) => {
                let $s = Pin::new(&mut **$s);
                $e
            }
            Carrier::ServerTls($s) => {
                let $s = Pin::new(&mut **$s);
                $e
            }
            Carrier::Memory($s) => {
                let $s = Pin::new($s);
                $e
            }
            Carrier::Stream($s, _) => {
                let $s = Pin::new(&mut **$s);
                $e
            }
            Carrier::Quic($s) => {
                let $s = Pin::new(&mut **$s);
                $e
            }
        }
    };
}

impl AsyncRead for Carrier {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        delegate!(self, s => s.poll_read(cx, buf))
    }
}

impl AsyncWrite for Carrier {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        delegate!(self, s => s.poll_write(cx, buf))
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        delegate!(self, s => s.poll_flush(cx))
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        delegate!(self, s => s.poll_shutdown(cx))
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        delegate!(self, s => s.poll_write_vectored(cx, bufs))
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            Carrier::Plain(s) => s.is_write_vectored(),
            Carrier::ClientTls(s) => s.is_write_vectored(),
            Carrier::ServerTls(s) => s.is_write_vectored(),
            Carrier::Memory(s) => s.is_write_vectored(),
            Carrier::Stream(s, _) => s.is_write_vectored(),
            Carrier::Quic(s) => s.is_write_vectored(),
        }
    }
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use super::*;

    /// The kernel behaviour [`tune_listener`] relies on: accepted sockets start with the
    /// listener's options.
    #[tokio::test]
    async fn accepted_sockets_inherit_a_tuned_listeners_options() {
        for carriers in [true, false] {
            let listener = listen("127.0.0.1:0".parse().unwrap()).unwrap();
            assert!(tune_listener(&listener, carriers));
            let addr = listener.local_addr().unwrap();
            let (_client, accepted) = tokio::join!(TcpStream::connect(addr), listener.accept());
            let (accepted, _) = accepted.unwrap();
            let socket = socket2::SockRef::from(&accepted);
            assert!(accepted.nodelay().unwrap());
            assert_eq!(socket.keepalive().unwrap(), carriers);
            if carriers {
                assert_eq!(
                    socket.tcp_keepalive_time().unwrap(),
                    Duration::from_secs(15)
                );
                assert_eq!(
                    socket.tcp_keepalive_interval().unwrap(),
                    Duration::from_secs(5)
                );
                assert_eq!(socket.tcp_keepalive_retries().unwrap(), 3);
            }
        }
    }
}
