//! UDP tunnels on the server: a public UDP socket, its flow table, and one data connection that
//! carries every flow's datagrams to the client.
//!
//! Datagrams from visitors are framed with their flow id and offered to a bounded queue; when
//! the carrier cannot keep up they are dropped and counted, never queued without bound. Replies
//! from the client go back to the flow's visitor from the public port. The datagram connection
//! is separate from every TCP stream, so UDP never waits behind TCP. When the session changes
//! (a reconnect within the lease) the task takes a data connection of the new session; the flow
//! table survives, so visitors keep their flows.
//!
//! Over the QUIC carrier the data connection is a QUIC stream, and it stays the tunnel's anchor:
//! datagrams that fit one packet ride QUIC DATAGRAM frames instead (unreliable, unordered, never
//! behind a stalled stream), both ways, once the client has said on the stream that it routes
//! them ([`QUIC_READY_FLOW`]); larger ones still go on the stream, whole.

mod flows;
pub(crate) mod sink;

use crate::Shared;
use crate::metrics::TunnelStats;
use crate::registry::Route;
use crate::tunnel::find_carrier;
use burrow_net::datagram_io::{DatagramStats, FrameReader, Outbox, write_datagrams};
use burrow_net::quic::DatagramChannel;
use burrow_net::udp_batch::{BatchSocket, RECV_BATCH, RecvSlots, SendBatch};
use burrow_net::{Carrier, write_frame};
use burrow_proto::datagram::QUIC_READY_FLOW;
use burrow_proto::msg::{Protocol, StreamKind, StreamOpen, Target, UdpOptions};
use flows::FlowTable;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::watch;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{Instrument, debug, info, warn};

/// Starts a datagram stream on a data connection: the header that tells the client to carry
/// tunnel `tunnel`'s datagrams on it. On a QUIC link, the stream's datagram channel is
/// registered first (the client may send QUIC datagrams as soon as it reads the header) and
/// returned; what it receives and drops is counted in `stats`.
pub(crate) async fn open_datagrams(
    shared: &Shared,
    carrier: &mut Carrier,
    tunnel: u32,
    stats: &Arc<DatagramStats>,
) -> Result<Option<DatagramChannel>, burrow_net::FrameIo> {
    let stream = shared.next_stream.fetch_add(1, Ordering::Relaxed);
    let channel = (carrier.quic_link()).and_then(|link| link.datagrams(stream, stats.clone()));
    let open = StreamOpen {
        stream,
        kind: StreamKind::Datagrams,
        target: Target::Tunnel(tunnel),
        visitor: None,
    };
    write_frame(carrier, &open).await?;
    Ok(channel)
}

/// Binds a public UDP port on the configured address, with large buffers and batched I/O.
pub(crate) fn bind(shared: &Shared, port: u16) -> std::io::Result<BatchSocket> {
    BatchSocket::new(std::net::UdpSocket::bind((
        shared.config().public_bind,
        port,
    ))?)
}

/// Registers a bound UDP socket and starts serving it.
pub(crate) fn publish(
    shared: &Arc<Shared>,
    socket: BatchSocket,
    port: u16,
    route: Route,
    options: UdpOptions,
) {
    let closed = shared.shutdown.child_token();
    let (routes, stats) = shared
        .registry
        .publish((Protocol::Udp, port), route, closed.clone());
    let idle = Duration::from_secs(u64::from(options.idle_timeout_s.max(1)));
    let tunnel = UdpTunnel {
        socket,
        // The client's cap is a request; the server's own limit bounds its memory regardless.
        flows: Mutex::new(FlowTable::new(
            options.max_flows.min(shared.config().max_udp_flows) as usize,
            idle,
        )),
        stats,
        idle,
    };
    let span = tracing::info_span!(parent: None, "udp", port);
    shared.tracker.spawn(
        tunnel
            .serve(shared.clone(), routes, closed)
            .instrument(span),
    );
}

struct UdpTunnel {
    socket: BatchSocket,
    flows: Mutex<FlowTable>,
    stats: Arc<TunnelStats>,
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
            let Some((session, tunnel, (mut carrier, opened))) = found else {
                break;
            };
            let channel =
                match open_datagrams(&shared, &mut carrier, tunnel, &self.stats.datagrams).await {
                    Ok(channel) => channel,
                    Err(e) => {
                        debug!("datagram connection failed before use: {e}");
                        continue;
                    }
                };
            let quic = channel.is_some();
            info!(session = %format_args!("{:016x}", session.id), quic, %opened, "datagram connection up");
            let session_closed = session.closed.clone();
            let cap = shared.config().max_udp_flows_per_session as usize;
            let budget = SessionFlows::charge(&session, cap, self.flows().len());
            let ended = tokio::select! {
                _ = closed.cancelled() => break,
                _ = session_closed.cancelled() => "the session ended".to_owned(),
                r = self.relay(carrier, channel, &budget) => r.err().map_or_else(|| "closed".to_owned(), |e| e.to_string()),
            };
            drop(budget);
            let s = &self.stats.datagrams;
            info!(
                sent = s.sent.load(Ordering::Relaxed),
                dropped_full = s.dropped_full.load(Ordering::Relaxed),
                dropped_flow = s.dropped_flow.load(Ordering::Relaxed),
                quic_sent = s.quic_sent.load(Ordering::Relaxed),
                quic_received = s.quic_received.load(Ordering::Relaxed),
                "datagram connection down: {ended}"
            );
        }
        debug!(flows = self.flows().len(), "udp tunnel closed");
    }

    /// Carries datagrams both ways over one data connection (and its QUIC datagram channel,
    /// if any) until it fails.
    async fn relay(
        &self,
        carrier: Carrier,
        channel: Option<DatagramChannel>,
        budget: &SessionFlows,
    ) -> std::io::Result<()> {
        let (reader, writer) = tokio::io::split(carrier);
        let outbox =
            (channel.as_ref()).map_or_else(Outbox::default, |c| Outbox::with_quic(c.sender()));
        tokio::select! {
            r = write_datagrams(writer, &outbox) => r,
            r = self.carry_visitor_datagrams(&outbox, budget) => r,
            r = self.carry_replies(FrameReader::new(reader), &outbox) => r,
            () = self.carry_quic_replies(channel) => Ok(()),
            _ = self.expire_flows(budget) => Ok(()),
        }
    }

    /// Visitors → client: every datagram, framed with its flow id, many per receive call.
    async fn carry_visitor_datagrams(
        &self,
        outbox: &Outbox,
        budget: &SessionFlows,
    ) -> std::io::Result<()> {
        let mut slots = RecvSlots::new(RECV_BATCH);
        let mut cap_warned = false;
        loop {
            let n = match self.socket.recv_batch(&mut slots).await {
                Ok(n) => n,
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
            self.frame_batch(slots.datagrams(n), outbox, budget, &mut cap_warned);
        }
    }

    /// Frames one batch of visitors' datagrams into the outbox, under one lock of each table.
    fn frame_batch<'a>(
        &self,
        datagrams: impl Iterator<Item = (SocketAddr, &'a [u8])>,
        outbox: &Outbox,
        budget: &SessionFlows,
        cap_warned: &mut bool,
    ) {
        let now = Instant::now().into_std();
        let mut flows = self.flows();
        let mut offers = outbox.offers();
        let before = flows.len();
        let mut bytes = 0;
        for (visitor, payload) in datagrams {
            let new = !flows.knows(visitor);
            if new && !budget.take() {
                DatagramStats::bump(&self.stats.datagrams.dropped_flow);
                if !*cap_warned {
                    warn!(%visitor, cap = budget.cap, "the session's flow cap is reached: datagrams from new visitors are dropped until flows expire");
                    *cap_warned = true;
                }
                continue;
            }
            let Some(flow) = flows.flow_for(visitor, now) else {
                budget.give_back(1);
                DatagramStats::bump(&self.stats.datagrams.dropped_flow);
                if !*cap_warned {
                    warn!(%visitor, "flow cap reached: datagrams from new visitors are dropped until flows expire");
                    *cap_warned = true;
                }
                continue;
            };
            *cap_warned = false;
            bytes += payload.len();
            offers.offer(flow, payload, &self.stats.datagrams);
        }
        let after = flows.len();
        drop((offers, flows));
        self.stats.add_bytes(bytes as u64, 0);
        if after > before {
            (self.stats.streams_total).fetch_add((after - before) as u64, Ordering::Relaxed);
            self.stats.streams_active.store(after, Ordering::Relaxed);
        }
    }

    /// Client → visitors, on the stream: each reply goes to its flow's visitor from the public
    /// port; replies in a row to one visitor leave together. The client's ready frame turns
    /// the outbox's QUIC path on.
    async fn carry_replies(
        &self,
        mut frames: FrameReader<tokio::io::ReadHalf<Carrier>>,
        outbox: &Outbox,
    ) -> std::io::Result<()> {
        let mut batch = SendBatch::default();
        let mut batch_to = None;
        loop {
            frames.fill().await?;
            while let Some((flow, payload)) = frames.next_frame()? {
                if flow == QUIC_READY_FLOW && payload.is_empty() {
                    debug!(
                        "the client routes QUIC datagrams: small datagrams ride them from now on"
                    );
                    outbox.enable_quic();
                    continue;
                }
                self.gather_reply(flow, payload, &mut batch, &mut batch_to);
            }
            self.send_replies(&mut batch, batch_to);
        }
    }

    /// Client → visitors, in QUIC datagrams: as [`Self::carry_replies`], those waiting together
    /// leave together. Never ends; without a channel it waits forever.
    async fn carry_quic_replies(&self, channel: Option<DatagramChannel>) {
        let Some(mut channel) = channel else {
            return std::future::pending().await;
        };
        let mut batch = SendBatch::default();
        let mut batch_to = None;
        while let Some((flow, payload)) = channel.recv().await {
            self.gather_reply(flow, &payload, &mut batch, &mut batch_to);
            for _ in 1..RECV_BATCH {
                let Some((flow, payload)) = channel.try_recv() else {
                    break;
                };
                self.gather_reply(flow, &payload, &mut batch, &mut batch_to);
            }
            self.send_replies(&mut batch, batch_to);
        }
        std::future::pending().await
    }

    /// Adds one reply to the batch for its flow's visitor, sending the batch first when it is
    /// for another visitor or full; a reply on an unknown or expired flow is dropped.
    fn gather_reply(
        &self,
        flow: u32,
        payload: &[u8],
        batch: &mut SendBatch,
        batch_to: &mut Option<SocketAddr>,
    ) {
        let visitor = self.flows().visitor_of(flow, Instant::now().into_std());
        let Some(visitor) = visitor else {
            return DatagramStats::bump(&self.stats.datagrams.dropped_flow);
        };
        let max = self.socket.max_segments();
        if *batch_to != Some(visitor) || !batch.push(payload, max) {
            self.send_replies(batch, *batch_to);
            batch.push(payload, max);
            *batch_to = Some(visitor);
        }
    }

    /// Sends the gathered replies; a full socket buffer drops them, as the network would.
    fn send_replies(&self, batch: &mut SendBatch, to: Option<SocketAddr>) {
        let (Some(to), false) = (to, batch.is_empty()) else {
            return;
        };
        let (count, bytes) = (batch.len(), batch.bytes());
        let report = self.socket.send_batch(batch, to);
        DatagramStats::add(&self.stats.datagrams.dropped_full, report.full);
        if report.full < count {
            self.stats
                .add_bytes(0, (bytes / count * (count - report.full)) as u64);
        }
    }

    /// Forgets idle flows, a few times per idle period.
    async fn expire_flows(&self, budget: &SessionFlows) {
        let every = (self.idle / 4).max(Duration::from_millis(250));
        loop {
            tokio::time::sleep(every).await;
            let (expired, left) = {
                let mut flows = self.flows();
                (flows.expire(Instant::now().into_std()), flows.len())
            };
            self.stats.streams_active.store(left, Ordering::Relaxed);
            budget.give_back(expired);
            if expired > 0 {
                debug!(expired, flows = left, "idle flows expired");
            }
        }
    }
}

/// A UDP tunnel's share of its session's flow budget, while a datagram connection of that
/// session carries it: the tunnel's flows are counted against `max_udp_flows_per_session` and
/// handed back when the connection ends (the flows stay; a reconnected session is charged for
/// them anew).
struct SessionFlows {
    session: Arc<crate::registry::SessionHandle>,
    /// The session's cap.
    cap: usize,
    /// What this tunnel holds of it now.
    held: std::sync::atomic::AtomicUsize,
}

impl SessionFlows {
    /// Charges the session for the `flows` the tunnel already has (over the cap if need be:
    /// they exist; only new ones are refused).
    fn charge(session: &Arc<crate::registry::SessionHandle>, cap: usize, flows: usize) -> Self {
        session.udp_flows.fetch_add(flows, Ordering::Relaxed);
        Self {
            session: session.clone(),
            cap,
            held: flows.into(),
        }
    }

    /// Takes one flow from the budget; false when the session is at its cap.
    fn take(&self) -> bool {
        let taken = (self.session.udp_flows)
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| {
                (n < self.cap).then_some(n + 1)
            })
            .is_ok();
        if taken {
            self.held.fetch_add(1, Ordering::Relaxed);
        }
        taken
    }

    /// Hands back `n` flows (expired, or never opened).
    fn give_back(&self, n: usize) {
        let n = n.min(self.held.load(Ordering::Relaxed));
        self.held.fetch_sub(n, Ordering::Relaxed);
        self.session.udp_flows.fetch_sub(n, Ordering::Relaxed);
    }
}

impl Drop for SessionFlows {
    fn drop(&mut self) {
        let held = self.held.swap(0, Ordering::Relaxed);
        self.session.udp_flows.fetch_sub(held, Ordering::Relaxed);
    }
}
