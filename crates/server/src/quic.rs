//! The QUIC carrier's listener: each QUIC connection is a link whose streams take burrow's
//! usual handshake (see [`crate::link`]).

use crate::link::{self, Streams};
use crate::{Shared, Transport};
use burrow_net::quic::{self, QuicLink, quinn};
use std::sync::Arc;
use tracing::{Instrument, debug, info, warn};

/// Accepts QUIC connections until shutdown, each handed to its own task at once.
pub(crate) fn spawn(shared: &Arc<Shared>, socket: std::net::UdpSocket) -> anyhow::Result<()> {
    let Transport::Tls(tls) = &shared.config().transport else {
        anyhow::bail!("the QUIC carrier is always encrypted: it cannot run with insecure_plain");
    };
    let endpoint = burrow_net::quic::server_endpoint(socket, tls.clone())?;
    let shared = shared.clone();
    tokio::spawn(async move {
        loop {
            let incoming = tokio::select! {
                _ = shared.shutdown.cancelled() => break,
                incoming = endpoint.accept() => incoming,
            };
            let Some(incoming) = incoming else { break };
            let peer = incoming.remote_address();
            // A UDP source address proves nothing until the peer has answered a retry token
            // sent to it: without this, forged Initials could hold handshake places, and get an
            // innocent address banned. The check costs one round trip per connection.
            if !incoming.remote_address_validated() && incoming.may_retry() {
                if let Err(e) = incoming.retry() {
                    debug!(%peer, "QUIC retry not sent: {e}");
                }
                continue;
            }
            if shared.refuse_banned(peer) {
                incoming.ignore();
                continue;
            }
            let Some(permit) = shared.handshake_permit() else {
                warn!(%peer, "QUIC connection refused: too many handshakes in progress");
                incoming.refuse();
                continue;
            };
            let span = tracing::debug_span!("conn", %peer, carrier = "quic");
            let task = accept(shared.clone(), incoming, permit);
            shared.tracker.spawn(task.instrument(span));
        }
        // Streams still open may finish; new connections are refused from here on.
        endpoint.set_server_config(None);
        info!("QUIC listener closed");
    });
    Ok(())
}

/// Serves one QUIC connection from the moment it is accepted, so a resumed client's preface,
/// sent as 0-RTT data, is answered with the server's preface and challenge in the first flight;
/// meanwhile the QUIC handshake finishes in [`confirm`]. The pre-auth deadline runs over both:
/// [`link::run`] closes the connection when no stream authenticated within it.
async fn accept(
    shared: Arc<Shared>,
    incoming: quinn::Incoming,
    permit: tokio::sync::OwnedSemaphorePermit,
) {
    let peer = incoming.remote_address();
    let unproven = crate::Unproven::new(permit);
    let deadline = unproven.deadline(&shared);
    let (connection, handshake) = match quic::accept_early(incoming).await {
        Ok(accepted) => accepted,
        Err(e) => {
            shared.handshake_failed(peer, crate::metrics::AuthFailure::Tls);
            return warn!(%peer, "QUIC handshake failed: {e}");
        }
    };
    debug!(%peer, "QUIC connection open");
    let link = QuicLink::new(connection);
    let opener = link::Opener::Quic(link.clone());
    let confirm = confirm(&shared, handshake, deadline, peer);
    tokio::join!(
        confirm,
        link::run(shared.clone(), Streams::Quic(link), opener, peer, unproven)
    );
}

/// Waits for the QUIC handshake to finish and reports a failure. One that is too slow is not
/// this task's to end: the link's pre-auth deadline, the same instant, closes the connection
/// and counts it.
async fn confirm(
    shared: &Shared,
    handshake: quic::ServerHandshake,
    deadline: tokio::time::Instant,
    peer: std::net::SocketAddr,
) {
    if let Ok(Err(e)) = tokio::time::timeout_at(deadline, handshake.finish()).await {
        if !matches!(e, quinn::ConnectionError::LocallyClosed) {
            shared.handshake_failed(peer, crate::metrics::AuthFailure::Tls);
            warn!(%peer, "QUIC handshake failed: {e}");
        }
    }
}
