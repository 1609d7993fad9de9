//! The WebSocket carrier's listener: an HTTP upgrade at the configured path, then burrow's TLS
//! (unless plain) and a multiplexed link inside the WebSocket (see [`crate::link`]).
//!
//! The listener speaks plain HTTP: it sits behind a reverse proxy, an ingress or a CDN that
//! terminates the outer TLS (or is reached with `ws://` directly). Either way the session is
//! private and the server verified, because burrow's own TLS runs inside the WebSocket.

use crate::handshake::{self, Links, Verdict};
use crate::{Shared, Transport, Unproven, accept, hung_up, link, metrics, tls_failure};
use burrow_net::tune_carrier;
use std::net::SocketAddr;
use std::sync::Arc;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tracing::{Instrument, debug, warn};

/// Accepts WebSocket connections until shutdown, each handed to its own task at once.
pub(crate) fn spawn(shared: &Arc<Shared>, listener: tokio::net::TcpListener) {
    let shared = shared.clone();
    tokio::spawn(async move {
        while let Some((tcp, peer)) = accept(&listener, &shared.shutdown).await {
            if shared.refuse_banned(peer) {
                continue;
            }
            let Some(permit) = shared.handshake_permit() else {
                warn!(%peer, "WebSocket connection dropped: too many handshakes in progress");
                continue;
            };
            let span = tracing::debug_span!("conn", %peer, carrier = "ws");
            let (ours, tracker) = (shared.clone(), shared.tracker.clone());
            let task = async move {
                let shared = ours;
                let deadline = shared.config().handshake_timeout;
                let unproven = crate::Unproven::new(permit);
                let until = unproven.deadline(&shared);
                let opened =
                    tokio::time::timeout_at(until, open(&shared, tcp, peer, unproven)).await;
                match opened {
                    Ok(Ok(Some(link))) => link.await,
                    Ok(Ok(None)) => {
                        debug!(%peer, "the peer closed the connection during the handshake")
                    }
                    Ok(Err(why)) => {
                        shared.handshake_failed(peer, failure(&why));
                        warn!(%peer, "WebSocket connection refused: {why:#}");
                    }
                    Err(_) => {
                        shared.handshake_failed(peer, metrics::AuthFailure::Timeout);
                        warn!(%peer, "WebSocket connection closed: handshake not finished within {deadline:?}");
                    }
                }
            };
            tracker.spawn(task.instrument(span));
        }
    });
}

/// What a finished WebSocket handshake hands on: the link, ready to serve.
type Link = std::pin::Pin<Box<dyn Future<Output = ()> + Send>>;

/// The upgrade, TLS unless plain, and the link's preface; `None` when the peer hung up.
async fn open(
    shared: &Arc<Shared>,
    tcp: TcpStream,
    peer: SocketAddr,
    unproven: Unproven,
) -> anyhow::Result<Option<Link>> {
    let _ = tune_carrier(&tcp);
    let path = shared.config().ws_path.clone();
    let io = burrow_net::ws::accept(tcp, &path).await?;
    match &shared.config().transport {
        Transport::Plain => prefaced(shared, io, peer, unproven).await,
        Transport::Tls(tls) => {
            let acceptor = burrow_net::tls::tokio_rustls::TlsAcceptor::from(tls.clone());
            let io = acceptor.accept(io).await.map_err(tls_failure)?;
            prefaced(shared, io, peer, unproven).await
        }
    }
}

/// Reads the link preface on a secured WebSocket: only a multiplexed link may ride one.
async fn prefaced<S>(
    shared: &Arc<Shared>,
    mut io: S,
    peer: SocketAddr,
    unproven: Unproven,
) -> anyhow::Result<Option<Link>>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    match handshake::accept(&mut io, &shared.registry, Links::Required).await {
        Ok(Verdict::Link) => Ok(Some(link::serve(shared.clone(), io, "ws", peer, unproven))),
        Ok(_) => anyhow::bail!("a WebSocket carries only multiplexed links"),
        Err(handshake::Failure::Io(e)) if hung_up(&e) => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// Why a WebSocket handshake failed, as the metric counts it.
fn failure(why: &anyhow::Error) -> metrics::AuthFailure {
    if why.downcast_ref::<burrow_net::ws::WsError>().is_some() {
        metrics::AuthFailure::NotBurrow
    } else {
        crate::failure_reason(why)
    }
}
