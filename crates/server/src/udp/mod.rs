//! UDP tunnels on the server: a public UDP socket, its flow table, and one data connection that
//! carries every flow's datagrams to the client.
//!
//! Datagrams from visitors are framed with their flow id and offered to a bounded queue; when
//! the carrier cannot keep up they are dropped and counted, never queued without bound. Replies
//! from the client go back to the flow's visitor from the public port. The datagram connection
//! is separate from every TCP stream, so UDP never waits behind TCP. When the session changes
//! (a reconnect within the lease) the task takes a data connection of the new session; the flow
//! table survives, so visitors keep their flows.

mod flows;
pub(crate) mod sink;

use crate::Shared;
use crate::registry::Route;
use crate::tunnel::find_carrier;
use burrow_net::datagram_io::{
    DATAGRAM_QUEUE, DatagramStats, offer, read_datagram, send_now, write_datagrams,
};
use burrow_net::{Carrier, write_frame};
use burrow_proto::datagram::{MAX_DATAGRAM, encode};
use burrow_proto::msg::{Protocol, StreamKind, StreamOpen, Target, UdpOptions};
use flows::FlowTable;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::net::UdpSocket;
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{Instrument, debug, info, warn};

/// Starts a datagram stream on a data connection: the header that tells the client to carry
/// tunnel `tunnel`'s datagrams on it.
pub(crate) async fn open_datagrams(
    shared: &Shared,
    carrier: &mut Carrier,
    tunnel: u32,
) -> Result<(), burrow_net::FrameIo> {
    let stream = shared.next_stream.fetch_add(1, Ordering::Relaxed);
    let open = StreamOpen {
        stream,
        kind: StreamKind::Datagrams,
        target: Target::Tunnel(tunnel),
        visitor: None,
    };
    write_frame(carrier, &open).await
}

/// Binds a public UDP port on the configured address.
pub(crate) fn bind(shared: &Shared, port: u16) -> std::io::Result<UdpSocket> {
    let socket = std::net::UdpSocket::bind((shared.config.public_bind, port))?;
    socket.set_nonblocking(true)?;
    UdpSocket::from_std(socket)
}

/// Registers a bound UDP socket and starts serving it.
pub(crate) fn publish(
    shared: &Arc<Shared>,
    socket: UdpSocket,
    port: u16,
    route: Route,
    options: UdpOptions,
) {
    let closed = shared.shutdown.child_token();
    let routes = shared
        .registry
        .publish((Protocol::Udp, port), route, closed.clone());
    let idle = Duration::from_secs(u64::from(options.idle_timeout_s.max(1)));
    let tunnel = UdpTunnel {
        socket,
        // The client's cap is a request; the server's own limit bounds its memory regardless.
        flows: Mutex::new(FlowTable::new(
            options.max_flows.min(shared.config.max_udp_flows) as usize,
            idle,
        )),
        stats: DatagramStats::default(),
        idle,
    };
    let span = tracing::info_span!("udp", port);
    shared.tracker.spawn(
        tunnel
            .serve(shared.clone(), routes, closed)
            .instrument(span),
    );
}

struct UdpTunnel {
    socket: UdpSocket,
    flows: Mutex<FlowTable>,
    stats: DatagramStats,
    idle: Duration,
}

impl UdpTunnel {
    fn flows(&self) -> std::sync::MutexGuard<'_, FlowTable> {
        self.flows.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Serves the tunnel until it is closed: takes a data connection of the current session,
    /// relays over it, and takes another when it fails or the session changes.
    async fn serve(
        self,
        shared: Arc<Shared>,
        mut routes: watch::Receiver<Route>,
        closed: CancellationToken,
    ) {
        loop {
            let found = tokio::select! {
                _ = closed.cancelled() => break,
                found = find_carrier(&mut routes, None) => found,
            };
            let Some((session, tunnel, mut carrier)) = found else {
                break;
            };
            if let Err(e) = open_datagrams(&shared, &mut carrier, tunnel).await {
                debug!("datagram connection failed before use: {e}");
                continue;
            }
            info!(session = %format_args!("{:016x}", session.id), "datagram connection up");
            let session_closed = session.closed.clone();
            let ended = tokio::select! {
                _ = closed.cancelled() => break,
                _ = session_closed.cancelled() => "the session ended".to_owned(),
                r = self.relay(carrier) => r.err().map_or_else(|| "closed".to_owned(), |e| e.to_string()),
            };
            let s = &self.stats;
            info!(
                sent = s.sent.load(Ordering::Relaxed),
                dropped_full = s.dropped_full.load(Ordering::Relaxed),
                dropped_flow = s.dropped_flow.load(Ordering::Relaxed),
                "datagram connection down: {ended}"
            );
        }
        debug!(flows = self.flows().len(), "udp tunnel closed");
    }

    /// Carries datagrams both ways over one data connection until it fails.
    async fn relay(&self, carrier: Carrier) -> std::io::Result<()> {
        let (mut reader, writer) = tokio::io::split(carrier);
        let (tx, rx) = mpsc::channel(DATAGRAM_QUEUE);
        tokio::select! {
            r = write_datagrams(writer, rx) => r,
            r = self.carry_visitor_datagrams(&tx) => r,
            r = self.carry_replies(&mut reader) => r,
            _ = self.expire_flows() => Ok(()),
        }
    }

    /// Visitors → client: every datagram, framed with its flow id.
    async fn carry_visitor_datagrams(&self, tx: &mpsc::Sender<Vec<u8>>) -> std::io::Result<()> {
        let mut buf = vec![0u8; MAX_DATAGRAM + 1];
        let mut cap_warned = false;
        loop {
            let (n, visitor) = match self.socket.recv_from(&mut buf).await {
                Ok(got) => got,
                // ICMP errors from earlier sends surface here on some systems: not fatal.
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::ConnectionRefused | std::io::ErrorKind::ConnectionReset
                    ) =>
                {
                    continue;
                }
                Err(e) => return Err(e),
            };
            let Some(flow) = self.flows().flow_for(visitor, Instant::now().into_std()) else {
                DatagramStats::bump(&self.stats.dropped_flow);
                if !cap_warned {
                    warn!(%visitor, "flow cap reached: datagrams from new visitors are dropped until flows expire");
                    cap_warned = true;
                }
                continue;
            };
            cap_warned = false;
            let mut frame = Vec::with_capacity(n + 8);
            // `n` is at most MAX_DATAGRAM: the buffer is one byte larger only to detect nothing.
            if encode(flow, &buf[..n.min(MAX_DATAGRAM)], &mut frame).is_ok() {
                offer(tx, frame, &self.stats);
            }
        }
    }

    /// Client → visitors: each reply goes to its flow's visitor from the public port.
    async fn carry_replies(
        &self,
        reader: &mut tokio::io::ReadHalf<Carrier>,
    ) -> std::io::Result<()> {
        let mut buf = Vec::with_capacity(MAX_DATAGRAM);
        loop {
            let (flow, len) = read_datagram(reader, &mut buf)
                .await
                .map_err(std::io::Error::other)?;
            let visitor = self.flows().visitor_of(flow, Instant::now().into_std());
            match visitor {
                // A full socket buffer drops the datagram, as the network would.
                Some(visitor) => {
                    if send_now(&self.socket, &buf[..len], Some(visitor)).is_err() {
                        DatagramStats::bump(&self.stats.dropped_full);
                    }
                }
                None => DatagramStats::bump(&self.stats.dropped_flow),
            }
        }
    }

    /// Forgets idle flows, a few times per idle period.
    async fn expire_flows(&self) {
        let every = (self.idle / 4).max(Duration::from_millis(250));
        loop {
            tokio::time::sleep(every).await;
            let expired = self.flows().expire(Instant::now().into_std());
            if expired > 0 {
                debug!(expired, flows = self.flows().len(), "idle flows expired");
            }
        }
    }
}
