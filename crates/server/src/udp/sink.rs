//! UDP sinks: events from a client's side, delivered to a server-side address.
//!
//! A client tunnel of kind [`TunnelKind::UdpToSink`](burrow_proto::msg::TunnelKind) names a sink
//! the operator configured. The server takes one of the session's data connections for it and
//! sends every datagram that arrives on it to the sink's address, from an unbound port with
//! `SO_BROADCAST` set (the sink may be a broadcast address). Nothing flows back. If the data
//! connection fails, the server takes another, for as long as the session and the tunnel live.

use crate::registry::SessionHandle;
use crate::{Shared, config::UdpSink};
use burrow_net::Carrier;
pub(crate) use burrow_net::datagram_io::udp_sender;
use burrow_net::datagram_io::{DatagramStats, read_datagram, send_now};
use burrow_proto::datagram::MAX_DATAGRAM;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;
use tokio::net::UdpSocket;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

/// A data connection that fails sooner than this is replaced only after the same pause, so a
/// client that cannot serve the sink (its local port is taken) is not hammered.
const RETRY_PAUSE: Duration = Duration::from_secs(1);

/// Delivers the events of one client tunnel to `sink` until `closed` (the tunnel or its
/// session ends).
pub(crate) async fn deliver(
    shared: Arc<Shared>,
    session: Arc<SessionHandle>,
    tunnel: u32,
    sink: UdpSink,
    socket: UdpSocket,
    closed: CancellationToken,
) {
    let stats = DatagramStats::default();
    loop {
        let mut carrier = tokio::select! {
            _ = closed.cancelled() => break,
            carrier = session.take_data() => carrier,
        };
        let started = Instant::now();
        if super::open_datagrams(&shared, &mut carrier, tunnel)
            .await
            .is_ok()
        {
            info!(sink = %sink.name, to = %sink.deliver_to, "event connection up");
            let ended = tokio::select! {
                _ = closed.cancelled() => break,
                ended = forward(&socket, carrier, sink.deliver_to, &stats) => ended,
            };
            info!(sink = %sink.name, delivered = stats.sent.load(Ordering::Relaxed), "event connection down: {ended}");
        }
        if started.elapsed() < RETRY_PAUSE {
            tokio::select! {
                _ = closed.cancelled() => break,
                _ = tokio::time::sleep(RETRY_PAUSE) => {}
            }
        }
    }
    debug!(sink = %sink.name, delivered = stats.sent.load(Ordering::Relaxed), "sink closed");
}

/// Sends every datagram from the carrier to `to`; returns why the carrier ended.
async fn forward(
    socket: &UdpSocket,
    mut carrier: Carrier,
    to: SocketAddr,
    stats: &DatagramStats,
) -> String {
    let mut buf = Vec::with_capacity(MAX_DATAGRAM);
    loop {
        let (_, len) = match read_datagram(&mut carrier, &mut buf).await {
            Ok(got) => got,
            Err(e) => return e.to_string(),
        };
        match send_now(socket, &buf[..len], Some(to)) {
            Ok(_) => DatagramStats::bump(&stats.sent),
            // A full buffer or an unreachable sink drops the datagram, as the network would.
            Err(e) => {
                DatagramStats::bump(&stats.dropped_full);
                warn!(%to, "event not delivered: {e}");
            }
        }
    }
}
