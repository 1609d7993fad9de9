//! UDP tunnels on the client: the far end of a tunnel's datagram connection.
//!
//! Each flow id gets its own UDP socket connected to the target, so the target sees every
//! visitor as a distinct source and its replies find their way back to the right flow. Sending to
//! the target never waits (a full socket buffer drops the datagram, as the network would), so a
//! target that stops reading slows no other flow. Replies are framed and offered to the bounded
//! carrier queue. Flows idle longer than the tunnel's timeout are closed; at the flow cap the
//! least recently used flow makes room (the server, which enforces the cap, opened a new one).
//! `SO_BROADCAST` is set on every flow socket, so the target may be a broadcast address.
//!
//! Over the QUIC carrier, datagrams that fit one packet ride QUIC DATAGRAM frames both ways,
//! routed by the stream's id; the stream stays open as the tunnel's anchor and carries the
//! larger ones. The client registers the stream with its link, then says so on the stream
//! ([`QUIC_READY_FLOW`]), after which the server sends QUIC datagrams too; the server registers
//! before it opens the stream, so the client may send them at once.

use burrow_net::Carrier;
use burrow_net::datagram_io::{
    DatagramStats, FrameReader, Outbox, udp_listener, udp_sender, write_datagrams,
};
use burrow_net::quic::DatagramChannel;
use burrow_net::udp_batch::{BatchSocket, RECV_BATCH, RecvSlots, SendBatch};
use burrow_proto::datagram::QUIC_READY_FLOW;
use burrow_proto::msg::UdpOptions;
use std::collections::HashMap;
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::ReadHalf;
use tokio::task::AbortHandle;
use tokio::time::Instant;
use tracing::{debug, info, warn};

/// Datagrams a flow's socket takes per receive call: replies come a few at a time, and each flow
/// holds its slots (64 KiB each) for as long as it lives.
const FLOW_RECV_BATCH: usize = 4;

/// One flow: its socket toward the target and when it last carried anything.
struct Flow {
    socket: Arc<BatchSocket>,
    /// Milliseconds since the relay started, at the last datagram either way.
    last_seen: Arc<AtomicU64>,
    reader: Option<AbortHandle>,
}

impl Drop for Flow {
    fn drop(&mut self) {
        if let Some(reader) = &self.reader {
            reader.abort();
        }
    }
}

/// Everything one datagram connection's relay shares.
struct Relay {
    target: SocketAddr,
    options: UdpOptions,
    flows: Mutex<HashMap<u32, Flow>>,
    outbox: Outbox,
    stats: Arc<DatagramStats>,
    started: Instant,
}

/// Relays a UDP tunnel's datagrams between the carrier (datagram stream `stream`) and the
/// target until the carrier fails.
pub(crate) async fn run(carrier: Carrier, stream: u64, local: &str, options: UdpOptions) {
    let target = match tokio::net::lookup_host(local).await.map(|mut a| a.next()) {
        Ok(Some(target)) => target,
        Ok(None) | Err(_) => {
            return warn!(target = %local, "cannot resolve the UDP target; datagram connection closed");
        }
    };
    let stats = Arc::new(DatagramStats::default());
    let channel = (carrier.quic_link()).and_then(|link| link.datagrams(stream, stats.clone()));
    let outbox = (channel.as_ref()).map_or_else(Outbox::default, |c| Outbox::with_quic(c.sender()));
    if channel.is_some() {
        // On the stream (the QUIC path is still off): from now on this side routes them.
        outbox.offer(QUIC_READY_FLOW, &[], &DatagramStats::default());
        outbox.enable_quic();
    }
    let (reader, writer) = tokio::io::split(carrier);
    let relay = Arc::new(Relay {
        target,
        options,
        flows: Mutex::new(HashMap::new()),
        outbox,
        stats,
        started: Instant::now(),
    });
    info!(%target, quic = channel.is_some(), "datagram connection up");
    let ended = tokio::select! {
        r = write_datagrams(writer, &relay.outbox) => r,
        r = relay.carry_server_datagrams(FrameReader::new(reader)) => r,
        () = relay.carry_quic_datagrams(channel) => Ok(()),
        _ = relay.expire_flows() => Ok(()),
    };
    let flows = std::mem::take(&mut *relay.lock());
    let s = &relay.stats;
    info!(
        flows = flows.len(),
        sent = s.sent.load(Ordering::Relaxed),
        dropped_full = s.dropped_full.load(Ordering::Relaxed),
        dropped_flow = s.dropped_flow.load(Ordering::Relaxed),
        quic_sent = s.quic_sent.load(Ordering::Relaxed),
        quic_received = s.quic_received.load(Ordering::Relaxed),
        "datagram connection down: {}",
        ended
            .err()
            .map_or_else(|| "closed".to_owned(), |e| e.to_string())
    );
}

impl Relay {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<u32, Flow>> {
        self.flows.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn now_ms(&self) -> u64 {
        u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    /// Server → target, on the stream: each datagram goes out on its flow's socket; datagrams
    /// in a row for one flow leave together.
    async fn carry_server_datagrams(
        self: &Arc<Self>,
        mut frames: FrameReader<ReadHalf<Carrier>>,
    ) -> io::Result<()> {
        let mut batch = SendBatch::default();
        let mut batch_flow = None;
        loop {
            frames.fill().await?;
            while let Some((flow, payload)) = frames.next_frame()? {
                self.gather(flow, payload, &mut batch, &mut batch_flow);
            }
            self.send_to_target(&mut batch, batch_flow.take());
        }
    }

    /// Server → target, in QUIC datagrams: as [`Self::carry_server_datagrams`], those waiting
    /// together leave together. Never ends; without a channel it waits forever.
    async fn carry_quic_datagrams(self: &Arc<Self>, channel: Option<DatagramChannel>) {
        let Some(mut channel) = channel else {
            return std::future::pending().await;
        };
        let mut batch = SendBatch::default();
        let mut batch_flow = None;
        while let Some((flow, payload)) = channel.recv().await {
            self.gather(flow, &payload, &mut batch, &mut batch_flow);
            for _ in 1..RECV_BATCH {
                let Some((flow, payload)) = channel.try_recv() else {
                    break;
                };
                self.gather(flow, &payload, &mut batch, &mut batch_flow);
            }
            self.send_to_target(&mut batch, batch_flow.take());
        }
        std::future::pending().await
    }

    /// Adds one datagram to the batch of its flow, sending the batch first when it is another
    /// flow's or full; a datagram whose flow has no socket is dropped.
    fn gather(
        self: &Arc<Self>,
        flow: u32,
        payload: &[u8],
        batch: &mut SendBatch,
        batch_flow: &mut Option<(u32, Arc<BatchSocket>)>,
    ) {
        if let Some((current, socket)) = batch_flow.as_ref()
            && *current == flow
            && batch.push(payload, socket.max_segments())
        {
            return;
        }
        self.send_to_target(batch, batch_flow.take());
        let Some(socket) = self.socket_for(flow) else {
            return DatagramStats::bump(&self.stats.dropped_flow);
        };
        batch.push(payload, socket.max_segments());
        *batch_flow = Some((flow, socket));
    }

    /// Sends the datagrams gathered for one flow. A full buffer drops them; an ICMP error from
    /// an earlier send is not this datagram's fault. Neither ends the flow.
    fn send_to_target(&self, batch: &mut SendBatch, flow: Option<(u32, Arc<BatchSocket>)>) {
        let Some((flow, socket)) = flow else {
            return;
        };
        let report = socket.send_batch(batch, self.target);
        DatagramStats::add(&self.stats.dropped_full, report.full);
        if let Some(e) = report.failed {
            debug!(flow, "send to the target failed: {e}");
        }
    }

    /// The socket of `flow`, opened on first sight; `None` when no socket can be opened.
    fn socket_for(self: &Arc<Self>, flow: u32) -> Option<Arc<BatchSocket>> {
        let now = self.now_ms();
        let mut flows = self.lock();
        if let Some(f) = flows.get(&flow) {
            f.last_seen.store(now, Ordering::Relaxed);
            return Some(f.socket.clone());
        }
        // The server hands out a new flow id only when its table has room, so at the cap the
        // client makes room too: it closes its least recently used flow, which the server has
        // expired already or is about to (both sides expire on their own timers).
        if flows.len() >= self.options.max_flows as usize {
            let oldest = flows
                .iter()
                .min_by_key(|(_, f)| f.last_seen.load(Ordering::Relaxed))
                .map(|(&id, _)| id);
            if let Some(oldest) = oldest {
                flows.remove(&oldest);
                debug!(
                    flow = oldest,
                    "flow table full: closed the least recently used flow"
                );
            }
        }
        let socket = match udp_sender(self.target, true) {
            Ok(s) => Arc::new(s),
            Err(e) => {
                warn!(target = %self.target, "cannot open a UDP socket toward the target: {e}");
                return None;
            }
        };
        let last_seen = Arc::new(AtomicU64::new(now));
        let reader = (!self.options.one_way).then(|| {
            tokio::spawn(
                self.clone()
                    .replies(flow, socket.clone(), last_seen.clone()),
            )
            .abort_handle()
        });
        flows.insert(
            flow,
            Flow {
                socket: socket.clone(),
                last_seen,
                reader,
            },
        );
        Some(socket)
    }

    /// Target → server: replies on one flow's socket, a few per receive call.
    async fn replies(
        self: Arc<Self>,
        flow: u32,
        socket: Arc<BatchSocket>,
        last_seen: Arc<AtomicU64>,
    ) {
        let mut slots = RecvSlots::new(FLOW_RECV_BATCH);
        loop {
            match socket.recv_batch(&mut slots).await {
                Ok(n) => {
                    last_seen.store(self.now_ms(), Ordering::Relaxed);
                    let mut offers = self.outbox.offers();
                    for (_, payload) in slots.datagrams(n) {
                        offers.offer(flow, payload, &self.stats);
                    }
                }
                // The target refused an earlier datagram (ICMP port unreachable): keep listening.
                Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => continue,
                Err(e) => {
                    debug!(flow, "flow socket failed: {e}; flow closed");
                    let mut flows = self.lock();
                    if flows
                        .get(&flow)
                        .is_some_and(|f| Arc::ptr_eq(&f.socket, &socket))
                    {
                        flows.remove(&flow);
                    }
                    return;
                }
            }
        }
    }

    /// Closes flows idle longer than the tunnel's timeout, a few times per timeout.
    async fn expire_flows(&self) {
        let idle = Duration::from_secs(u64::from(self.options.idle_timeout_s.max(1)));
        let idle_ms = u64::try_from(idle.as_millis()).unwrap_or(u64::MAX);
        loop {
            tokio::time::sleep((idle / 4).max(Duration::from_millis(250))).await;
            let now = self.now_ms();
            let expired: Vec<Flow> = {
                let mut flows = self.lock();
                let idle_ids: Vec<u32> = flows
                    .iter()
                    .filter(|(_, f)| {
                        now.saturating_sub(f.last_seen.load(Ordering::Relaxed)) >= idle_ms
                    })
                    .map(|(&id, _)| id)
                    .collect();
                idle_ids.iter().filter_map(|id| flows.remove(id)).collect()
            };
            if !expired.is_empty() {
                debug!(expired = expired.len(), "idle flows expired");
            }
        }
    }
}

/// Forwards every datagram heard on `local` (a LAN broadcast port, typically) to the server's
/// sink over this data connection (datagram stream `stream`; over QUIC, those that fit one
/// packet as QUIC datagrams), until the connection ends. Nothing comes back.
/// `bound` is the tunnel's listener (see `session::sink_listener`); without one (a host name),
/// `local` is resolved and bound for this connection.
pub(crate) async fn run_to_sink(
    carrier: Carrier,
    stream: u64,
    local: &str,
    bound: Option<std::sync::Arc<BatchSocket>>,
) {
    let socket = match bound {
        Some(socket) => socket,
        None => match tokio::net::lookup_host(local).await.map(|mut a| a.next()) {
            Ok(Some(addr)) => match udp_listener(addr) {
                Ok(s) => std::sync::Arc::new(s),
                Err(e) => {
                    return warn!(local = %addr, "cannot listen for events: {e}; event connection closed");
                }
            },
            Ok(None) | Err(_) => {
                return warn!(local = %local, "cannot resolve the events address; closed");
            }
        },
    };
    let stats = Arc::new(DatagramStats::default());
    // Kept for its sender: the server registered the stream before opening it.
    let channel = (carrier.quic_link()).and_then(|link| link.datagrams(stream, stats.clone()));
    let outbox = (channel.as_ref()).map_or_else(Outbox::default, |c| Outbox::with_quic(c.sender()));
    outbox.enable_quic();
    let (mut reader, writer) = tokio::io::split(carrier);
    info!(%local, quic = channel.is_some(), "event connection up");
    let hear = async {
        let mut slots = RecvSlots::new(RECV_BATCH);
        loop {
            let n = socket.recv_batch(&mut slots).await?;
            let mut offers = outbox.offers();
            for (_, payload) in slots.datagrams(n) {
                offers.offer(0, payload, &stats);
            }
        }
    };
    // The server never writes after the stream header: a read returns only at end or error.
    let closed = async {
        tokio::io::AsyncReadExt::read(&mut reader, &mut [0u8; 1])
            .await
            .map(|_| ())
    };
    let ended: io::Result<()> = tokio::select! {
        r = write_datagrams(writer, &outbox) => r,
        r = hear => r,
        r = closed => r,
    };
    info!(
        sent = stats.sent.load(Ordering::Relaxed),
        dropped_full = stats.dropped_full.load(Ordering::Relaxed),
        "event connection down: {}",
        ended
            .err()
            .map_or_else(|| "closed by the server".to_owned(), |e| e.to_string())
    );
}
