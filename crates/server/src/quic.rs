//! The QUIC carrier's listener: each QUIC connection is a link whose streams take burrow's
//! usual handshake (see [`crate::link`]).

use crate::link::{self, Streams};
use crate::{Shared, Transport};
use burrow_net::quic::{QuicLink, quinn};
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

/// Finishes one QUIC handshake (under the pre-auth deadline) and serves the connection's
/// streams.
async fn accept(
    shared: Arc<Shared>,
    incoming: quinn::Incoming,
    permit: tokio::sync::OwnedSemaphorePermit,
) {
    let peer = incoming.remote_address();
    let deadline = shared.config().handshake_timeout;
    let unproven = crate::Unproven::new(permit);
    let connection = match tokio::time::timeout_at(unproven.deadline(&shared), incoming).await {
        Ok(Ok(connection)) => connection,
        Ok(Err(e)) => {
            shared.handshake_failed(peer, crate::metrics::AuthFailure::Tls);
            return warn!(%peer, "QUIC handshake failed: {e}");
        }
        Err(_) => {
            shared.handshake_failed(peer, crate::metrics::AuthFailure::Timeout);
            return warn!(%peer, "QUIC handshake not finished within {deadline:?}");
        }
    };
    debug!(%peer, "QUIC connection open");
    let streams = Streams::Quic(QuicLink::new(connection));
    link::run(shared, streams, peer, unproven).await;
}
