//! One client session: its control stream, heartbeats and tunnels.
//!
//! A reader task turns frames into messages on a bounded channel; the session loop owns the
//! write half and selects over shutdown, incoming messages, outgoing messages from visitors, and
//! the heartbeat timer. When the loop ends, the session's tunnels become leases for
//! `lease_grace` (or are released at once when the client said goodbye).

use crate::handshake::send_welcome;
use crate::ports::Endpoint;
use crate::registry::SessionHandle;
use crate::spans::SessionSpan;
use crate::{Shared, pool::DataPool};
use burrow_net::{Carrier, FrameIo, write_frame};
use burrow_proto::auth::Secret;
use burrow_proto::liveness::{Action, Liveness};
use burrow_proto::msg::{
    ClientMsg, HandshakeError, HostInfo, MAX_INFO_LEN, MAX_NAME_LEN, ServerMsg,
};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use tokio::io::{AsyncWriteExt, WriteHalf};
use tokio::sync::mpsc;
use tokio::time::{Instant, sleep_until, timeout};
use tokio_util::sync::CancellationToken;
use tracing::{Instrument, debug, info, warn};

/// Messages queued for the control stream (heartbeat answers, pool requests).
const CONTROL_QUEUE: usize = 64;
/// Heartbeats with this bit set in their sequence number were asked for by an operator (the
/// admin API's ping); the session's own heartbeats count up from 1 and never reach it.
pub(crate) const OPERATOR_PING: u64 = 1 << 63;
/// How often a session past its lifetime looks whether its streams have finished.
const DRAIN_CHECK: std::time::Duration = std::time::Duration::from_millis(250);

/// Why a session ended.
#[derive(Debug)]
enum End {
    Shutdown,
    Goodbye,
    Silent(std::time::Duration),
    Closed(String),
    /// An operator disconnected the client (admin API); `keep` leases its ports and names.
    Kicked {
        keep: bool,
    },
    /// The session reached the maximum lifetime and its streams finished (or the grace ran
    /// out): the client is asked to reconnect, its ports and names leased meanwhile.
    Expired,
    /// A reload removed the client's identity; its ports and names are already released.
    Revoked,
}

struct Session {
    shared: Arc<Shared>,
    handle: Arc<SessionHandle>,
    writer: WriteHalf<Carrier>,
    liveness: Liveness,
    /// Client tunnel id → public port.
    tunnels: HashMap<u32, Endpoint>,
    /// Client tunnel id → the delivery task of a UDP sink tunnel.
    sinks: HashMap<u32, CancellationToken>,
    /// Client tunnel id → the name of an HTTP tunnel.
    http: HashMap<u32, String>,
    /// When the session next looks at its lifetime (`None`: no limit).
    lifetime_check: Option<Instant>,
    /// Set once the lifetime is over: the latest moment to end, streams finished or not.
    drain_until: Option<Instant>,
}

/// A client that has just authenticated its control stream.
pub(crate) struct Login {
    /// Its identity name.
    pub identity: String,
    /// The secret its data connections prove knowledge of.
    pub secret: Secret,
    /// Where its control stream comes from.
    pub peer: SocketAddr,
    /// Opens streams toward it, when its control stream runs on a link and it asked for them.
    pub opener: Option<crate::link::Opener>,
    /// It takes reusable streams on its pooled data connections (`caps::REUSE`).
    pub reuse: bool,
}

/// Runs a session on an authenticated control carrier until it ends.
pub(crate) async fn run(shared: Arc<Shared>, carrier: Carrier, login: Login) {
    let Login {
        identity,
        secret,
        peer,
        opener,
        reuse,
    } = login;
    let id = u64::from_be_bytes(
        burrow_proto::auth::nonce()[..8]
            .try_into()
            .unwrap_or_default(),
    );
    let (control, outgoing) = mpsc::channel(CONTROL_QUEUE);
    let span = tracing::info_span!("session", session = %format_args!("{id:016x}"), client = %identity, %peer);
    let handle = Arc::new(SessionHandle {
        id,
        identity,
        data_key: burrow_proto::auth::DataKey::new(&secret),
        pool: DataPool::new(shared.config().max_idle_data),
        early_seqs: std::sync::Mutex::new(burrow_proto::auth::SeqWindow::new()),
        control,
        closed: shared.shutdown.child_token(),
        peer,
        quic: carrier.quic_link().map(|link| link.connection().clone()),
        opener,
        reuse,
        since: std::time::SystemTime::now(),
        carrier: carrier.kind(),
        rtt_us: Default::default(),
        kicked: Default::default(),
        streams: Default::default(),
        pings: Default::default(),
        host: Default::default(),
        udp_flows: Default::default(),
        span: SessionSpan::new(span.clone()),
    });
    serve(shared, carrier, handle.clone(), outgoing)
        .instrument(span)
        .await;
    handle.span.release();
}

async fn serve(
    shared: Arc<Shared>,
    mut carrier: Carrier,
    handle: Arc<SessionHandle>,
    outgoing: mpsc::Receiver<ServerMsg>,
) {
    let id = handle.id;
    let clients = match shared.registry.add_session(handle.clone()) {
        Ok(clients) => clients,
        Err(why) => {
            warn!("session refused: {why}");
            crate::handshake::refuse(&mut carrier, HandshakeError::Busy).await;
            return;
        }
    };
    let cfg = shared.config();
    if let Err(e) = send_welcome(&mut carrier, id, cfg.heartbeat_interval, cfg.dead_after).await {
        shared.registry.end_session(id, None);
        return warn!("session lost before it started: {e}");
    }
    let server_streams = handle.opener.is_some();
    info!(
        carrier = carrier.kind(),
        clients, server_streams, "session established"
    );
    let (reader, writer) = tokio::io::split(carrier);
    let (incoming_tx, incoming) = mpsc::channel(CONTROL_QUEUE);
    // Not tracked: it only reads, and is aborted as soon as the session ends.
    let reader = tokio::spawn(burrow_net::forward_frames(reader, incoming_tx));
    let liveness = Liveness::new(
        Instant::now().into_std(),
        cfg.heartbeat_interval,
        cfg.dead_after,
    );
    let mut session = Session {
        shared: shared.clone(),
        handle,
        writer,
        liveness,
        tunnels: HashMap::new(),
        sinks: HashMap::new(),
        http: HashMap::new(),
        lifetime_check: (cfg.max_session_lifetime).and_then(|d| Instant::now().checked_add(d)),
        drain_until: None,
    };
    let end = session.run(incoming, outgoing).await;
    session.finish(end, reader);
}

impl Session {
    async fn run(
        &mut self,
        mut incoming: mpsc::Receiver<Result<ClientMsg, FrameIo>>,
        mut outgoing: mpsc::Receiver<ServerMsg>,
    ) -> End {
        loop {
            let next_beat = match self.liveness.poll(Instant::now().into_std()) {
                Action::WaitUntil(t) => Instant::from_std(t),
                Action::SendPing(seq) => {
                    self.handle.pool.prune();
                    match self.send(ServerMsg::Ping { seq }).await {
                        Ok(()) => continue,
                        Err(end) => return end,
                    }
                }
                Action::Dead => return End::Silent(self.shared.config().dead_after),
            };
            let lifetime = self.lifetime_check;
            let step = tokio::select! {
                _ = self.handle.closed.cancelled() => Err(End::Shutdown),
                msg = incoming.recv() => self.on_incoming(msg).await,
                Some(msg) = outgoing.recv() => self.send_queued(msg, &mut outgoing).await,
                _ = sleep_until(next_beat) => Ok(()),
                _ = sleep_until(lifetime.unwrap_or(next_beat)), if lifetime.is_some() => self.on_lifetime(),
            };
            if let Err(end) = step {
                return end;
            }
        }
    }

    /// Sends `msg`, and with a `WantData` the ones queued right behind it as one: each visitor
    /// of a burst that finds the pool empty asks for one connection, and one frame can ask for
    /// them all. Messages keep their order.
    async fn send_queued(
        &mut self,
        msg: ServerMsg,
        outgoing: &mut mpsc::Receiver<ServerMsg>,
    ) -> Result<(), End> {
        let ServerMsg::WantData { mut count } = msg else {
            return self.send(msg).await;
        };
        let mut after = None;
        while let Ok(queued) = outgoing.try_recv() {
            match queued {
                ServerMsg::WantData { count: more } => count = count.saturating_add(more),
                other => {
                    after = Some(other);
                    break;
                }
            }
        }
        self.send(ServerMsg::WantData { count }).await?;
        match after {
            Some(msg) => self.send(msg).await,
            None => Ok(()),
        }
    }

    async fn send(&mut self, msg: ServerMsg) -> Result<(), End> {
        // A carrier that cannot take a small frame within the liveness deadline is dead.
        match timeout(
            self.shared.config().dead_after,
            write_frame(&mut self.writer, &msg),
        )
        .await
        {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(End::Closed(e.to_string())),
            Err(_) => Err(End::Silent(self.shared.config().dead_after)),
        }
    }

    async fn on_incoming(&mut self, msg: Option<Result<ClientMsg, FrameIo>>) -> Result<(), End> {
        let msg = match msg {
            Some(Ok(msg)) => msg,
            Some(Err(FrameIo::Io(e))) if e.kind() == std::io::ErrorKind::UnexpectedEof => {
                return Err(End::Closed("the client closed the connection".into()));
            }
            Some(Err(e)) => return Err(End::Closed(e.to_string())),
            None => return Err(End::Closed("reader stopped".into())),
        };
        let now = Instant::now().into_std();
        self.liveness.on_frame(now);
        match msg {
            ClientMsg::Ping { seq } => self.send(ServerMsg::Pong { seq }).await,
            ClientMsg::Pong { seq } if seq & OPERATOR_PING != 0 => {
                let waiter = self
                    .handle
                    .pings
                    .lock()
                    .ok()
                    .and_then(|mut p| p.remove(&seq));
                if let Some(waiter) = waiter {
                    let _ = waiter.send(());
                }
                Ok(())
            }
            ClientMsg::Pong { seq } => {
                if let Some(rtt) = self.liveness.on_pong(seq, now) {
                    self.shared.metrics.carrier_rtt(rtt);
                    let micros = u64::try_from(rtt.as_micros()).unwrap_or(u64::MAX);
                    self.handle
                        .rtt_us
                        .store(micros, std::sync::atomic::Ordering::Relaxed);
                    debug!(rtt_ms = rtt.as_secs_f64() * 1e3, "heartbeat");
                }
                Ok(())
            }
            ClientMsg::OpenTunnel(req) => {
                let answer = self.open_tunnel(req).await;
                self.send(answer).await
            }
            ClientMsg::CloseTunnel { id } => {
                if let Some(sink) = self.sinks.remove(&id) {
                    sink.cancel();
                }
                if let Some(name) = self.http.remove(&id) {
                    self.shared.registry.http_leave(self.handle.id, id);
                    info!(tunnel = id, %name, "HTTP tunnel closed by the client");
                }
                if let Some(endpoint) = self.tunnels.remove(&id) {
                    self.shared
                        .registry
                        .close_by_client(self.handle.id, endpoint);
                    info!(tunnel = id, protocol = %endpoint.0, port = endpoint.1, "tunnel closed by the client");
                }
                Ok(())
            }
            ClientMsg::Goodbye => Err(End::Goodbye),
            ClientMsg::Host(host) => {
                let host = HostInfo {
                    version: about(&host.version),
                    hostname: about(&host.hostname),
                    os: about(&host.os),
                    arch: about(&host.arch),
                };
                info!(hostname = %host.hostname, os = %host.os, arch = %host.arch, version = %host.version, "client host");
                if let Ok(mut slot) = self.handle.host.lock() {
                    *slot = Some(host);
                }
                Ok(())
            }
            ClientMsg::TunnelHealth { id, healthy } => {
                if let Some(name) = self.http.get(&id) {
                    self.shared
                        .registry
                        .http_set_health(self.handle.id, id, healthy);
                    if healthy {
                        info!(tunnel = id, %name, "HTTP tunnel healthy again; back in its group");
                    } else {
                        warn!(tunnel = id, %name, "HTTP tunnel unhealthy; out of its group until it recovers");
                    }
                }
                Ok(())
            }
        }
    }

    /// The session is past its maximum lifetime: it ends once its streams have finished, or
    /// when the shutdown grace period is over.
    fn on_lifetime(&mut self) -> Result<(), End> {
        let now = Instant::now();
        let grace = self.shared.config().shutdown_grace;
        let drain_until = *self.drain_until.get_or_insert_with(|| {
            info!("session reached its maximum lifetime; the client will be asked to reconnect once its streams finish (at most {grace:?})");
            now + grace
        });
        let streams = self
            .handle
            .streams
            .load(std::sync::atomic::Ordering::Relaxed);
        if streams == 0 || now >= drain_until {
            return Err(End::Expired);
        }
        self.lifetime_check = Some(now + DRAIN_CHECK);
        Ok(())
    }

    /// Cleans up after the loop: the session leaves the registry, its ports become leases.
    fn finish(self, end: End, reader: tokio::task::JoinHandle<()>) {
        let Session {
            shared,
            handle,
            mut writer,
            ..
        } = self;
        handle.closed.cancel();
        handle.pool.close();
        let grace = shared.config().lease_grace;
        let kicked = handle.kicked.load(std::sync::atomic::Ordering::Relaxed);
        let end = match (end, kicked) {
            (End::Shutdown, 1) => End::Kicked { keep: true },
            (End::Shutdown, 2) => End::Kicked { keep: false },
            (End::Shutdown, crate::registry::REVOKED) => End::Revoked,
            (end, _) => end,
        };
        let keep = match end {
            End::Goodbye | End::Shutdown | End::Revoked => false,
            End::Expired => true,
            End::Kicked { keep } => keep,
            _ => true,
        };
        let until = keep.then(|| Instant::now().into_std() + grace);
        let clients = shared.registry.end_session(handle.id, until);
        match &end {
            End::Silent(d) => warn!(
                clients,
                "carrier lost: no heartbeat for {d:?}; ports leased for {grace:?}"
            ),
            End::Closed(why) => info!(clients, "carrier lost: {why}; ports leased for {grace:?}"),
            End::Goodbye => info!(clients, "session closed by the client"),
            End::Shutdown => info!(clients, "session closed: server shutting down"),
            End::Expired => info!(
                clients,
                "session closed at its maximum lifetime; the client was asked to reconnect; ports and names leased for {grace:?}"
            ),
            End::Kicked { keep } => warn!(
                clients,
                "session closed by the operator; {}",
                if *keep {
                    "ports and names leased"
                } else {
                    "ports and names released"
                }
            ),
            End::Revoked => warn!(
                clients,
                "session closed: its identity was removed from the config"
            ),
        }
        let farewell = match end {
            End::Shutdown | End::Kicked { .. } | End::Revoked => Some(ServerMsg::Shutdown),
            End::Expired => Some(ServerMsg::Reconnect),
            _ => None,
        };
        match farewell {
            // Tell the client to come back (later, or now); best effort, bounded. The carrier is
            // closed only once the client has read it and hung up (or a second has passed):
            // closing with its frames unread would reset the connection, and a reset can
            // discard the farewell before the client reads it.
            Some(farewell) => {
                shared.tracker.spawn(async move {
                    let second = std::time::Duration::from_secs(1);
                    let _ = timeout(second, write_frame(&mut writer, &farewell)).await;
                    let _ = timeout(second, writer.shutdown()).await;
                    let abort = reader.abort_handle();
                    let _ = timeout(second, reader).await;
                    abort.abort();
                });
            }
            None => reader.abort(),
        }
        if keep {
            let registry = shared.clone();
            shared.tracker.spawn(async move {
                tokio::select! {
                    _ = registry.shutdown.cancelled() => {}
                    _ = tokio::time::sleep(grace) => {
                        let (ports, names) = registry.registry.expire_leases(Instant::now().into_std());
                        for (protocol, port) in ports {
                            info!(%protocol, port, "lease expired; port released");
                        }
                        for name in names {
                            info!(%name, "lease expired; HTTP name released");
                        }
                    }
                }
            });
        }
    }
}

/// Something a client says about itself or a target, made safe for the admin API and logs.
fn about(text: &str) -> String {
    text.chars()
        .take(MAX_INFO_LEN)
        .map(|c| if c.is_control() { '?' } else { c })
        .collect()
}

/// A client-supplied name made safe for a log line.
pub(crate) fn printable(name: &str) -> String {
    name.chars()
        .take(MAX_NAME_LEN)
        .map(|c| if c.is_ascii_graphic() { c } else { '?' })
        .collect()
}

mod open;
#[cfg(test)]
pub(crate) mod tests;
