//! UDP sinks: events from a client's side, delivered to a server-side address.
//!
//! A client tunnel of kind [`TunnelKind::UdpToSink`](burrow_proto::msg::TunnelKind) names a sink
//! the operator configured. The server takes one of the session's data connections for it and
//! sends every datagram that arrives on it to the sink's address, from an unbound port with
//! `SO_BROADCAST` set (the sink may be a broadcast address). Nothing flows back. If the data
//! connection fails, the server takes another, for as long as the session and the tunnel live.
//! When a reload removes the sink, deliveries stop; when it moves the sink, they follow.
//! Over the QUIC carrier, events that fit one packet arrive as QUIC datagrams on the stream's
//! datagram channel; the stream still carries larger ones and bounds the delivery's life.

use crate::registry::SessionHandle;
use crate::{Shared, config::UdpSink};
use burrow_net::Carrier;
pub(crate) use burrow_net::datagram_io::udp_sender;
use burrow_net::datagram_io::{DatagramStats, FrameReader};
use burrow_net::quic::DatagramChannel;
use burrow_net::udp_batch::{BatchSocket, RECV_BATCH, SendBatch};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

/// A data connection that fails sooner than this is replaced only after the same pause, so a
/// client that cannot serve the sink (its local port is taken) is not hammered.
const RETRY_PAUSE: Duration = Duration::from_secs(1);

/// Delivers the events of one client tunnel to `sink` until `closed` (the tunnel or its
/// session ends) or a reload removes the sink.
pub(crate) async fn deliver(
    shared: Arc<Shared>,
    session: Arc<SessionHandle>,
    tunnel: u32,
    mut sink: UdpSink,
    mut socket: BatchSocket,
    closed: CancellationToken,
) {
    let stats = Arc::new(DatagramStats::default());
    let mut configs = shared.config.subscribe();
    loop {
        let (mut carrier, opened) = tokio::select! {
            _ = closed.cancelled() => break,
            taken = session.take_data() => taken,
        };
        let started = Instant::now();
        if let Ok(channel) = super::open_datagrams(&shared, &mut carrier, tunnel, &stats).await {
            let quic = channel.is_some();
            info!(sink = %sink.name, to = %sink.deliver_to, quic, %opened, "event connection up");
            let ended = tokio::select! {
                _ = closed.cancelled() => break,
                ended = forward(&socket, carrier, channel, sink.deliver_to, &stats) => ended,
                moved = reconfigured(&mut configs, &sink) => {
                    let Some((moved, to)) = moved else {
                        break info!(sink = %sink.name, "sink removed by a reload; its events are no longer delivered");
                    };
                    (sink, socket) = (moved, to);
                    continue;
                }
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

/// Waits until a reload changes `sink`; returns its new address and a socket toward it, or
/// `None` when the sink is gone (or no socket toward its new address can be opened).
async fn reconfigured(
    configs: &mut tokio::sync::watch::Receiver<Arc<crate::ServerConfig>>,
    sink: &UdpSink,
) -> Option<(UdpSink, BatchSocket)> {
    loop {
        if configs.changed().await.is_err() {
            return std::future::pending().await;
        }
        let now = configs
            .borrow_and_update()
            .udp_sinks
            .iter()
            .find(|s| s.name == sink.name)
            .cloned();
        match now {
            Some(now) if now == *sink => continue,
            Some(now) => {
                info!(sink = %now.name, to = %now.deliver_to, "sink moved by a reload");
                return match udp_sender(now.deliver_to, false) {
                    Ok(socket) => Some((now, socket)),
                    Err(e) => {
                        warn!(sink = %now.name, "cannot open a socket toward the moved sink: {e}");
                        None
                    }
                };
            }
            None => return None,
        }
    }
}

/// Sends every datagram from the carrier (and its QUIC datagram channel, if any) to `to`, those
/// that arrive together in one call when they can; returns why the carrier ended.
async fn forward(
    socket: &BatchSocket,
    carrier: Carrier,
    channel: Option<DatagramChannel>,
    to: SocketAddr,
    stats: &DatagramStats,
) -> String {
    // Both carry the same direction; the stream's end is the delivery's end.
    tokio::select! {
        ended = forward_frames(socket, carrier, to, stats) => ended,
        () = forward_quic(socket, channel, to, stats) => "closed".to_owned(),
    }
}

/// Sends every event that arrives as a QUIC datagram to `to`. Never ends; without a channel it
/// waits forever.
async fn forward_quic(
    socket: &BatchSocket,
    channel: Option<DatagramChannel>,
    to: SocketAddr,
    stats: &DatagramStats,
) {
    let Some(mut channel) = channel else {
        return std::future::pending().await;
    };
    let mut batch = SendBatch::default();
    let max = socket.max_segments();
    while let Some((_, event)) = channel.recv().await {
        batch.push(&event, max);
        for _ in 1..RECV_BATCH {
            let Some((_, event)) = channel.try_recv() else {
                break;
            };
            if !batch.push(&event, max) {
                deliver_batch(socket, &mut batch, to, stats);
                batch.push(&event, max);
            }
        }
        deliver_batch(socket, &mut batch, to, stats);
    }
    std::future::pending().await
}

/// Sends every datagram framed on the stream to `to`; returns why the stream ended.
async fn forward_frames(
    socket: &BatchSocket,
    carrier: Carrier,
    to: SocketAddr,
    stats: &DatagramStats,
) -> String {
    let mut frames = FrameReader::new(carrier);
    let mut batch = SendBatch::default();
    let max = socket.max_segments();
    loop {
        if let Err(e) = frames.fill().await {
            return e.to_string();
        }
        loop {
            let frame = match frames.next_frame() {
                Ok(Some((_, payload))) => payload,
                Ok(None) => break,
                Err(e) => return e.to_string(),
            };
            if !batch.push(frame, max) {
                deliver_batch(socket, &mut batch, to, stats);
                batch.push(frame, max);
            }
        }
        deliver_batch(socket, &mut batch, to, stats);
    }
}

/// Sends the gathered events; a full buffer or an unreachable sink drops them, as the network
/// would.
fn deliver_batch(
    socket: &BatchSocket,
    batch: &mut SendBatch,
    to: SocketAddr,
    stats: &DatagramStats,
) {
    let count = batch.len();
    let report = socket.send_batch(batch, to);
    DatagramStats::add(&stats.sent, count - report.full);
    DatagramStats::add(&stats.dropped_full, report.full);
    if report.full > 0 {
        warn!(%to, dropped = report.full, "events not delivered: the socket's send buffer is full");
    }
    if let Some(e) = report.failed {
        warn!(%to, "event not delivered: {e}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Auth, ServerConfig, Transport};
    use burrow_proto::auth::Secret;

    fn config(sinks: &[(&str, &str)]) -> Arc<ServerConfig> {
        let mut c = ServerConfig::new(Auth::SharedToken(Secret::new("t")), Transport::Plain);
        c.udp_sinks = (sinks.iter())
            .map(|(name, to)| UdpSink {
                name: (*name).into(),
                deliver_to: to.parse().unwrap(),
            })
            .collect();
        Arc::new(c)
    }

    #[tokio::test]
    async fn a_delivery_follows_its_sink_through_reloads() {
        let (tx, mut rx) = tokio::sync::watch::channel(config(&[("e", "127.0.0.1:9")]));
        let sink = config(&[("e", "127.0.0.1:9")]).udp_sinks[0].clone();
        // A reload that leaves the sink alone is not a change for it.
        tx.send_replace(config(&[("e", "127.0.0.1:9"), ("other", "127.0.0.1:8")]));
        // Polled once: it sees the change, finds its sink as it was, and waits again.
        tokio::select! {
            biased;
            _ = reconfigured(&mut rx, &sink) => panic!("an unrelated reload moved the sink"),
            () = std::future::ready(()) => {}
        }
        // Moved: the new address.
        tx.send_replace(config(&[("e", "127.0.0.1:10")]));
        let (moved, _socket) = reconfigured(&mut rx, &sink).await.unwrap();
        assert_eq!(moved.deliver_to, "127.0.0.1:10".parse().unwrap());
        // Removed: the delivery ends.
        tx.send_replace(config(&[]));
        assert!(reconfigured(&mut rx, &moved).await.is_none());
    }
}
