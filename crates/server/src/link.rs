//! The server's side of a multiplexed link (the `mux` carrier, the WebSocket carrier that runs
//! it over a WebSocket, and a QUIC connection): one connection whose streams each take the same
//! handshake as a connection of the TCP carrier, and then serve as a control stream or a data
//! connection.
//!
//! A link is not trusted for itself: every stream proves its session on its own. Until one of
//! its streams has authenticated, the link is held to the pre-auth rules: it keeps the place in
//! `max_unauthenticated` it took when it was accepted, and one stream must authenticate within
//! `handshake_timeout` of that moment or the link is closed. It may run only
//! [`UNPROVEN_STREAMS`] handshakes at once, each also taking a place of its own; and an address
//! banned for failed handshakes (on this link or elsewhere) loses its link at the next stream.
//!
//! The server can open streams on a link too ([`Opener`]): a session whose control stream runs
//! on a link, and whose client asked for it (`caps::SERVER_STREAMS`), serves a visitor that
//! finds its pool empty on a stream the server opens, with no handshake and no round trip to
//! wait for (see [`crate::registry::SessionHandle::take_data`]).

use crate::handshake::Links;
use crate::{Shared, Unproven, dispatch, greet};
use burrow_net::Carrier;
use burrow_net::mux::{self, MuxStream};
use burrow_net::quic::QuicLink;
use std::net::SocketAddr;
use std::sync::Arc;
use tokio::sync::{Semaphore, mpsc};
use tokio_util::sync::CancellationToken;
use tracing::{Instrument, debug, warn};

/// Handshakes one link may run at once; streams beyond that are refused (reset).
const UNPROVEN_STREAMS: usize = 8;

/// Opens streams toward the client on the link a session's control stream runs on.
#[derive(Debug, Clone)]
pub(crate) enum Opener {
    /// The server's end of a yamux session, with the carrier's name for logs.
    Mux(mux::Opener, &'static str),
    /// A QUIC connection: its streams know the link, so UDP tunnels' datagrams can ride it.
    Quic(QuicLink),
}

impl Opener {
    /// Opens a stream toward the client. Fails when the link is gone or the server holds its
    /// share of streams on it; waits while a QUIC client has no stream credit left (the caller
    /// bounds the wait).
    pub(crate) async fn open(&self) -> std::io::Result<Carrier> {
        match self {
            Opener::Mux(opener, kind) => Ok(Carrier::stream(opener.open().await?, kind)),
            Opener::Quic(link) => Ok(Carrier::Quic(Box::new(link.open().await?))),
        }
    }
}

/// How a visitor's stream to the client was opened, for logs and metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Opened {
    /// An idle data connection from the session's pool, opened and authenticated by the client.
    Pool,
    /// A data connection from the session's pool that the visitor waited for: the pool was
    /// empty when it arrived, and the client was asked for more. Many of these say the pool is
    /// smaller than the visitors' bursts.
    Waited,
    /// A stream the server opened on the session's link.
    Server,
}

impl Opened {
    /// True for a pooled data connection, whether it was idle or waited for.
    pub(crate) fn pooled(self) -> bool {
        matches!(self, Opened::Pool | Opened::Waited)
    }
}

impl std::fmt::Display for Opened {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Opened::Pool => "pool",
            Opened::Waited => "waited",
            Opened::Server => "server",
        })
    }
}

/// What a stream of a link knows of it while its handshake runs.
#[derive(Debug, Clone)]
pub(crate) struct OnLink {
    /// Cancelled once any stream of the link has authenticated.
    pub authenticated: CancellationToken,
    /// Opens streams on the link, for a session whose control stream this turns out to be.
    pub opener: Opener,
}

/// Where a link's streams come from.
pub(crate) enum Streams {
    /// A yamux session (the mux and WebSocket carriers).
    Mux(mpsc::Receiver<MuxStream>, &'static str),
    /// A QUIC connection, whose DATAGRAM frames carry UDP tunnels too.
    Quic(QuicLink),
}

impl Streams {
    /// The next stream the client opened, or `None` once the link is closed.
    async fn next(&mut self) -> Option<Carrier> {
        match self {
            Streams::Mux(inbound, kind) => Some(Carrier::stream(inbound.recv().await?, kind)),
            Streams::Quic(link) => match link.accept().await? {
                Ok(stream) => Some(Carrier::Quic(Box::new(stream))),
                Err(e) => {
                    debug!("QUIC connection ended: {e}");
                    None
                }
            },
        }
    }

    /// Closes the link at once (dropping a mux receiver does that by itself).
    fn close(&self) {
        if let Streams::Quic(link) = self {
            link.connection().close(0u32.into(), b"closed");
        }
    }

    /// A stream authenticated: the link may now take full-size windows.
    fn proven(&self) {
        if let Streams::Quic(link) = self {
            burrow_net::quic::proven(link.connection());
        }
    }
}

/// Serves a mux link over `io` (secured, past its preface) until its connection ends; its
/// streams are named `kind` in logs. (Boxed: a link's streams are dispatched like connections,
/// and dispatching a connection may start a link, so the future's type would otherwise contain
/// itself.)
pub(crate) fn serve<T>(
    shared: Arc<Shared>,
    io: T,
    kind: &'static str,
    peer: SocketAddr,
    unproven: Unproven,
) -> std::pin::Pin<Box<dyn Future<Output = ()> + Send>>
where
    T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (opener, inbound) = mux::server(io);
    let streams = Streams::Mux(inbound, kind);
    Box::pin(run(
        shared,
        streams,
        Opener::Mux(opener, kind),
        peer,
        unproven,
    ))
}

/// Serves a link's streams until it closes; `opener` opens streams on the same link.
/// `unproven` is the link's place in the handshake phase, held until one of its streams
/// authenticates.
pub(crate) async fn run(
    shared: Arc<Shared>,
    mut streams: Streams,
    opener: Opener,
    peer: SocketAddr,
    unproven: Unproven,
) {
    let authenticated = CancellationToken::new();
    let handshakes = Arc::new(Semaphore::new(UNPROVEN_STREAMS));
    let deadline = unproven.deadline(&shared);
    let mut unproven = Some(unproven);
    debug!(%peer, "multiplexed connection open");
    loop {
        let carrier = tokio::select! {
            () = authenticated.cancelled(), if unproven.is_some() => {
                unproven = None;
                streams.proven();
                continue;
            }
            () = tokio::time::sleep_until(deadline), if unproven.is_some() => {
                if authenticated.is_cancelled() {
                    continue;
                }
                shared.handshake_failed(peer, crate::metrics::AuthFailure::Timeout);
                streams.close();
                return warn!(%peer, "multiplexed connection closed: no stream authenticated within {:?}", shared.config().handshake_timeout);
            }
            carrier = streams.next() => carrier,
        };
        let Some(carrier) = carrier else {
            return debug!(%peer, "multiplexed connection closed");
        };
        if shared.shutdown.is_cancelled() {
            // Streams already open may finish; new ones are refused.
            continue;
        }
        if shared.refuse_banned(peer) {
            streams.close();
            return warn!(%peer, "multiplexed connection closed: the address is banned");
        }
        let (Ok(local), Some(permit)) = (
            handshakes.clone().try_acquire_owned(),
            shared.handshake_permit(),
        ) else {
            warn!(%peer, "stream refused: too many handshakes in progress");
            continue;
        };
        let ours = shared.clone();
        let on_link = OnLink {
            authenticated: authenticated.clone(),
            opener: opener.clone(),
        };
        let task = async move {
            let handshake = greet(&ours, carrier, Links::Refused);
            let place = Unproven {
                _link: Some(local),
                ..Unproven::new(permit)
            };
            dispatch(&ours, handshake, peer, place, Some(&on_link)).await;
        };
        shared
            .tracker
            .spawn(task.instrument(tracing::Span::current()));
    }
}
