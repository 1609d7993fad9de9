//! Streams the server opens toward the client on its link, for visitors that found the pool
//! empty (`caps::SERVER_STREAMS`, which the control stream's preface asks for on every link).
//!
//! Such a stream takes no handshake: the link is the client's own secured connection, on which
//! it authenticated its session, so whatever the server opens on it comes from that server. The
//! stream starts with its `StreamOpen` frame and is then served exactly as a pooled data
//! connection that received one: connect to the target, relay with half-close.
//!
//! What the server sends is still bounded here. At most [`WAITING`] streams are read at once
//! for their `StreamOpen`, each for at most [`OPEN_DEADLINE`]; the next ones wait in the link
//! until one of those is done, so a burst of a thousand visitors is served in turn rather than
//! refused. The link bounds that wait: the mux driver queues at most the server's share of
//! streams ([`burrow_net::mux::SERVER_OPENED_STREAMS`]) and resets, with a warning, any beyond
//! it; a QUIC server can open only as many streams as the client gives credit for
//! ([`burrow_net::quic::MAX_STREAMS`]). A stream that sends anything but a `StreamOpen` is
//! closed, and only that stream.

use crate::streams::Pool;
use burrow_net::Carrier;
use burrow_net::mux::MuxStream;
use burrow_net::quic::QuicLink;
use burrow_proto::msg::StreamOpen;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};
use tracing::{Instrument, debug, warn};

/// Streams from the server read for their `StreamOpen` at once.
pub(crate) const WAITING: usize = 256;
/// How long a stream from the server may take to deliver its `StreamOpen`. The server writes it
/// as soon as it opens the stream, so this only ends streams of a broken or hostile peer.
pub(crate) const OPEN_DEADLINE: Duration = Duration::from_secs(10);

/// Where the streams the server opens come from: the session's link.
pub(crate) enum Inbound {
    /// A yamux session's inbound streams (the mux and WebSocket carriers), with the carrier's
    /// name for logs.
    Mux(mpsc::Receiver<MuxStream>, &'static str),
    /// A QUIC connection: its streams know the link, so UDP tunnels' datagrams can ride it.
    Quic(QuicLink),
}

/// A stream the server opened, not yet acknowledged.
enum Accepted {
    Mux(MuxStream, &'static str),
    Quic(Carrier),
}

impl Inbound {
    /// The next stream the server opened; `None` once the link is closed.
    async fn next(&mut self) -> Option<Accepted> {
        match self {
            Inbound::Mux(streams, kind) => Some(Accepted::Mux(streams.recv().await?, kind)),
            Inbound::Quic(link) => match link.accept().await? {
                Ok(stream) => Some(Accepted::Quic(Carrier::Quic(Box::new(stream)))),
                Err(e) => {
                    debug!("QUIC connection ended: {e}");
                    None
                }
            },
        }
    }
}

impl Accepted {
    /// The stream as a carrier; a mux stream is acknowledged at once, so the server's count of
    /// streams waiting for an answer does not hold up the next visitor.
    async fn carrier(self) -> std::io::Result<Carrier> {
        match self {
            Accepted::Mux(mut stream, kind) => {
                stream.acknowledge().await?;
                Ok(Carrier::stream(stream, kind))
            }
            Accepted::Quic(carrier) => Ok(carrier),
        }
    }
}

/// Serves the streams the server opens on the session's link until the session ends or the
/// link closes. Streams already running go on (as pooled ones do).
pub(crate) async fn accept(pool: Arc<Pool>, mut inbound: Inbound) {
    let waiting = Arc::new(Semaphore::new(WAITING));
    loop {
        // A place first: until one is free, the next streams wait in the link.
        let permit = tokio::select! {
            () = pool.closed.cancelled() => return,
            permit = waiting.clone().acquire_owned() => permit,
        };
        // The semaphore is never closed.
        let Ok(permit) = permit else { return };
        let accepted = tokio::select! {
            () = pool.closed.cancelled() => return,
            accepted = inbound.next() => accepted,
        };
        let Some(accepted) = accepted else {
            return debug!("the link closed: no more streams from the server");
        };
        let ours = pool.clone();
        pool.streams
            .spawn(serve(ours, accepted, permit).in_current_span());
    }
}

/// Reads one server-opened stream's `StreamOpen` (bounded in time) and serves it.
async fn serve(pool: Arc<Pool>, accepted: Accepted, permit: OwnedSemaphorePermit) {
    let mut carrier = match accepted.carrier().await {
        Ok(carrier) => carrier,
        Err(e) => return debug!("stream from the server lost before its header: {e}"),
    };
    let read = tokio::time::timeout(
        OPEN_DEADLINE,
        burrow_net::read_frame::<_, StreamOpen>(&mut carrier),
    );
    let open = tokio::select! {
        () = pool.closed.cancelled() => return debug!("stream from the server closed: the session ended"),
        open = read => open,
    };
    drop(permit);
    let open = match open {
        Ok(Ok(open)) => open,
        Ok(Err(e)) => return warn!("stream from the server closed: no valid stream header ({e})"),
        Err(_) => {
            return warn!(
                "stream from the server closed: no stream header within {OPEN_DEADLINE:?}"
            );
        }
    };
    let span = pool.stream_span(&open, "server");
    let (config, tunnels) = (pool.config.clone(), pool.tunnels.clone());
    crate::streams::run_stream(config, tunnels, carrier, open)
        .instrument(span)
        .await;
}

#[cfg(test)]
mod tests;
