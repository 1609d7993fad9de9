//! One session on the client side: publish the tunnels, answer heartbeats, keep the pool warm.
//!
//! The session keeps its own record of the tunnels it asked the server for ([`Published`]); a
//! reload changes the shared table and wakes the session, which withdraws and publishes
//! tunnels until its record matches the table again (`publish`). HTTP tunnels' health
//! checkers run per tunnel and per session (`health`).

mod health;
mod publish;

use crate::config::{ClientConfig, TunnelConfig};
use crate::connect::{Established, host_of};
use crate::streams::Pool;
use crate::tunnels::Tunnels;
use crate::{ClientError, Event};
use burrow_net::{Carrier, FrameIo, write_frame};
use burrow_proto::liveness::{Action, Liveness};
use burrow_proto::msg::{ClientMsg, ServerMsg, TunnelKind};
use health::Report;
use std::collections::HashMap;
use std::sync::Arc;
use tokio::io::WriteHalf;
use tokio::sync::{Semaphore, mpsc};
use tokio::time::{Instant, sleep_until, timeout};
use tokio_util::sync::{CancellationToken, DropGuard};
use tokio_util::task::TaskTracker;
use tracing::{Instrument, debug, info};

/// Extra slots the pool may grow by on the server's request, beyond `pool_size` (the server
/// keeps at most 256 idle data connections per session).
const MAX_EXTRA_SLOTS: usize = 192;
const INCOMING_QUEUE: usize = 64;
/// Health-check changes waiting for the control stream (one task per tunnel sends at most one
/// change per check, and waits when this is full).
const HEALTH_QUEUE: usize = 16;

/// How a session ended.
#[derive(Debug)]
pub(crate) enum End {
    /// Shutdown was asked for; the server was told goodbye.
    Shutdown,
    /// The carrier was lost or the server went away; reconnect.
    Lost(String),
    /// Reconnecting will not help.
    Fatal(String),
}

/// What outlives a session: the settings, the tunnels with the ports granted so far, the
/// event sink.
pub(crate) struct Context {
    /// The settings; its `tunnels` is empty: they live in `tunnels`, which reloads change.
    pub config: Arc<ClientConfig>,
    pub tunnels: Arc<Tunnels>,
    pub on_event: Box<dyn Fn(Event) + Send + Sync>,
    pub streams: TaskTracker,
}

/// A tunnel this session asked the server for.
struct Published {
    /// The configuration it was asked with (a retarget replaces it).
    config: Arc<TunnelConfig>,
    /// The request used a remembered (not configured) port or name.
    remembered: bool,
    /// A refusal ends the client: configured at start and asked for on the first session.
    fatal: bool,
    /// Its health checker's serial, and the guard that stops the checker when dropped.
    health: Option<(u64, DropGuard)>,
    /// Its checker last reported the target unhealthy.
    unhealthy: bool,
}

struct Session<'a> {
    ctx: &'a Context,
    writer: WriteHalf<Carrier>,
    liveness: Liveness,
    pool: Arc<Pool>,
    extra: Arc<Semaphore>,
    /// True on the client's first session: refusals of the tunnels configured at start are
    /// fatal then.
    first: bool,
    /// The tunnels asked for, by id.
    published: HashMap<u32, Published>,
    /// Where health checkers report, and the serial of the last one started.
    health: (mpsc::Sender<Report>, u64),
    /// This session's id (the client id the server knows it by).
    session: u64,
}

/// Runs a session until it ends.
pub(crate) async fn run(
    ctx: &Context,
    est: Established,
    first: bool,
    shutdown: &CancellationToken,
    span: tracing::Span,
) -> End {
    let Established {
        carrier,
        session,
        secret,
        server_caps,
        link,
        inbound,
        ..
    } = est;
    let (reader, writer) = tokio::io::split(carrier);
    let (tx, mut incoming) = mpsc::channel(INCOMING_QUEUE);
    let reader_task = tokio::spawn(burrow_net::forward_frames(reader, tx));
    let pool = Arc::new(Pool {
        config: ctx.config.clone(),
        tunnels: ctx.tunnels.clone(),
        session,
        key: burrow_proto::auth::DataKey::new(&secret),
        early: crate::streams::early_hellos(server_caps),
        link,
        closed: shutdown.child_token(),
        streams: ctx.streams.clone(),
        span,
        reuse_wait: crate::streams::REUSE_WAIT,
        hurry: tokio::sync::Notify::new(),
    });
    for _ in 0..ctx.config.pool_size {
        tokio::spawn(pool.clone().slot(None));
    }
    if let Some(inbound) = inbound {
        // Ends with the session (or its link); the streams it started go on.
        let accept = crate::server_streams::accept(pool.clone(), inbound);
        tokio::spawn(accept.in_current_span());
    }
    let now = Instant::now().into_std();
    let liveness = Liveness::new(now, ctx.config.heartbeat_interval, ctx.config.dead_after);
    let extra = Arc::new(Semaphore::new(MAX_EXTRA_SLOTS));
    let (health_tx, mut health) = mpsc::channel(HEALTH_QUEUE);
    let mut s = Session {
        ctx,
        writer,
        liveness,
        pool,
        extra,
        first,
        published: HashMap::new(),
        health: (health_tx, 0),
        session,
    };
    let end = match s.publish_all().await {
        Ok(()) => s.run(&mut incoming, &mut health, shutdown).await,
        Err(end) => end,
    };
    s.pool.closed.cancel();
    reader_task.abort();
    end
}

impl Session<'_> {
    async fn run(
        &mut self,
        incoming: &mut mpsc::Receiver<Result<ServerMsg, FrameIo>>,
        health: &mut mpsc::Receiver<Report>,
        shutdown: &CancellationToken,
    ) -> End {
        let ctx = self.ctx;
        loop {
            let next_beat = match self.liveness.poll(Instant::now().into_std()) {
                Action::WaitUntil(t) => Instant::from_std(t),
                Action::SendPing(seq) => match self.send(ClientMsg::Ping { seq }).await {
                    Ok(()) => continue,
                    Err(end) => return end,
                },
                Action::Dead => {
                    return End::Lost(format!(
                        "no heartbeat from the server for {:?}",
                        self.ctx.config.dead_after
                    ));
                }
            };
            let step = tokio::select! {
                _ = shutdown.cancelled() => Err(self.goodbye().await),
                msg = incoming.recv() => self.on_message(msg).await,
                Some(report) = health.recv() => self.on_health(report).await,
                () = ctx.tunnels.changed.notified() => self.reconcile().await,
                _ = sleep_until(next_beat) => Ok(()),
            };
            if let Err(end) = step {
                return end;
            }
        }
    }

    async fn goodbye(&mut self) -> End {
        let _ = self.send(ClientMsg::Goodbye).await;
        End::Shutdown
    }

    async fn send(&mut self, msg: ClientMsg) -> Result<(), End> {
        let deadline = self.ctx.config.dead_after;
        match timeout(deadline, write_frame(&mut self.writer, &msg)).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(End::Lost(format!("control stream failed: {e}"))),
            Err(_) => Err(End::Lost(format!(
                "control stream stalled for {deadline:?}"
            ))),
        }
    }

    async fn on_message(&mut self, msg: Option<Result<ServerMsg, FrameIo>>) -> Result<(), End> {
        let msg = match msg {
            Some(Ok(msg)) => msg,
            Some(Err(FrameIo::Io(e))) if e.kind() == std::io::ErrorKind::UnexpectedEof => {
                return Err(End::Lost("the server closed the connection".into()));
            }
            Some(Err(e)) => return Err(End::Lost(format!("control stream closed: {e}"))),
            None => return Err(End::Lost("control stream closed".into())),
        };
        let now = Instant::now().into_std();
        self.liveness.on_frame(now);
        match msg {
            ServerMsg::Ping { seq } => self.send(ClientMsg::Pong { seq }).await,
            ServerMsg::Pong { seq } => {
                if let Some(rtt) = self.liveness.on_pong(seq, now) {
                    debug!(rtt_ms = rtt.as_secs_f64() * 1e3, "heartbeat");
                    self.ctx.config.status.rtt(rtt);
                }
                Ok(())
            }
            ServerMsg::TunnelOpened { id, port } => {
                self.on_opened(id, port);
                Ok(())
            }
            ServerMsg::TunnelRefused { id, reason } => self.on_refused(id, reason).await,
            ServerMsg::WantData { count } => {
                self.dial_extra(count);
                Ok(())
            }
            ServerMsg::HttpOpened { id, name, urls } => {
                self.on_http_opened(id, name, urls);
                Ok(())
            }
            ServerMsg::Shutdown => Err(End::Lost("the server is shutting down".into())),
            ServerMsg::Reconnect => Err(End::Lost(
                "the server asked for a reconnect: the session reached its maximum lifetime".into(),
            )),
        }
    }

    fn on_http_opened(&mut self, id: u32, name: String, urls: Vec<String>) {
        let Some(entry) = self.ctx.tunnels.get(id) else {
            return debug!(tunnel = id, "server granted a tunnel withdrawn since");
        };
        self.ctx.tunnels.named(id, name);
        let tunnel = &entry.config;
        let host = host_of(&self.ctx.config.server);
        // An IPv6 address goes in brackets in a URL.
        let host = if host.contains(':') && !host.starts_with('[') {
            format!("[{host}]")
        } else {
            host.to_owned()
        };
        let urls: Vec<String> = urls.iter().map(|u| fill_host(u, &host)).collect();
        info!(tunnel = %tunnel.name, urls = %urls.join(" "), local = %tunnel.local, "tunnel ready");
        (self.ctx.config.status).ready(&tunnel.name, None, urls.clone());
        (self.ctx.on_event)(Event::HttpReady {
            name: tunnel.name.clone(),
            urls,
            local: tunnel.local.clone(),
            client: format!("{:016x}", self.session),
        });
    }

    fn on_opened(&mut self, id: u32, port: u16) {
        let Some(entry) = self.ctx.tunnels.get(id) else {
            return debug!(tunnel = id, "server granted a tunnel withdrawn since");
        };
        let tunnel = &entry.config;
        if tunnel.kind == TunnelKind::UdpToSink {
            let server = host_of(&self.ctx.config.server).to_owned();
            info!(tunnel = %tunnel.name, local = %tunnel.local, "events tunnel ready");
            let _ = sink_listener(&entry);
            let sink = format!("sink {} on {server}", tunnel.name);
            (self.ctx.config.status).ready(&tunnel.name, Some(sink), Vec::new());
            let (name, local) = (tunnel.name.clone(), tunnel.local.clone());
            return (self.ctx.on_event)(Event::SinkReady {
                name,
                local,
                server,
            });
        }
        self.ctx.tunnels.granted(id, port);
        let public = format!("{}:{port}", host_of(&self.ctx.config.server));
        info!(tunnel = %tunnel.name, %public, local = %tunnel.local, "tunnel ready");
        (self.ctx.config.status).ready(&tunnel.name, Some(public.clone()), Vec::new());
        (self.ctx.on_event)(Event::TunnelReady {
            name: tunnel.name.clone(),
            public,
            local: tunnel.local.clone(),
        });
    }

    /// Grows the pool by `count` slots, which retire once they go unused for a while.
    fn dial_extra(&self, count: u16) {
        for _ in 0..count {
            let Ok(permit) = self.extra.clone().try_acquire_owned() else {
                debug!("the pool is already at its largest: its waiting slots dial now");
                return self.pool.hurry();
            };
            let pool = self.pool.clone();
            tokio::spawn(async move {
                pool.slot(Some(crate::streams::EXTRA_IDLE)).await;
                drop(permit);
            });
        }
    }
}

/// Puts the server's host into an edge URL the server left it out of (path routing, where the
/// server does not know the name it is reached by): `http://:8080/app/` → `http://host:8080/app/`.
fn fill_host(url: &str, host: &str) -> String {
    match url.split_once("://") {
        Some((scheme, rest)) if rest.starts_with(':') || rest.starts_with('/') => {
            format!("{scheme}://{host}{rest}")
        }
        _ => url.to_owned(),
    }
}

impl From<End> for Result<(), ClientError> {
    fn from(end: End) -> Self {
        match end {
            End::Shutdown => Ok(()),
            End::Lost(e) => Err(ClientError::Disconnected(e)),
            End::Fatal(e) => Err(ClientError::Fatal(e)),
        }
    }
}

/// A to-sink tunnel's listener, bound on first use and kept in its entry: the session binds it
/// when the server accepts the tunnel (so events heard until the event connection opens are
/// kept), and the event connection takes the same socket, whichever comes first. `None` when the
/// address is a name (the event connection resolves and binds it) or cannot be bound.
pub(crate) fn sink_listener(
    entry: &crate::tunnels::Entry,
) -> Option<std::sync::Arc<burrow_net::udp_batch::BatchSocket>> {
    if let Some(socket) = entry.sink.get() {
        return Some(socket.clone());
    }
    let addr = entry.config.local.parse::<std::net::SocketAddr>().ok()?;
    match burrow_net::datagram_io::udp_listener(addr) {
        // Two callers at once both bind; the slot keeps one, and the other socket closes.
        Ok(socket) => {
            let _ = entry.sink.set(std::sync::Arc::new(socket));
        }
        Err(e) => {
            tracing::warn!(local = %addr, "cannot listen for events yet: {e}");
            return None;
        }
    }
    entry.sink.get().cloned()
}

#[cfg(test)]
mod tests {
    use super::fill_host;

    #[test]
    fn edge_urls_get_the_server_host() {
        assert_eq!(
            fill_host("http://:8080/app/", "srv"),
            "http://srv:8080/app/"
        );
        assert_eq!(fill_host("http:///app/", "srv"), "http://srv/app/");
        assert_eq!(
            fill_host("https://app.example.com", "srv"),
            "https://app.example.com"
        );
    }
}
