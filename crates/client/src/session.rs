//! One session on the client side: publish the tunnels, answer heartbeats, keep the pool warm.

use crate::config::ClientConfig;
use crate::connect::{Established, host_of};
use crate::streams::Pool;
use crate::{ClientError, Event};
use burrow_net::{Carrier, FrameIo, write_frame};
use burrow_proto::liveness::{Action, Liveness};
use burrow_proto::msg::{ClientMsg, Refusal, ServerMsg, TunnelKind, TunnelRequest};
use std::sync::{Arc, Mutex};
use tokio::io::WriteHalf;
use tokio::sync::{Semaphore, mpsc};
use tokio::time::{Instant, sleep_until, timeout};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, info, warn};

/// Extra slots the pool may grow by on the server's request, beyond `pool_size` (the server
/// keeps at most 256 idle data connections per session).
const MAX_EXTRA_SLOTS: usize = 192;
const INCOMING_QUEUE: usize = 64;
/// Health-check changes waiting for the control stream (one task per tunnel sends at most one
/// change per check, and waits when this is full).
const HEALTH_QUEUE: usize = 16;
/// Longest a health check waits for the target to accept a connection.
const HEALTH_CONNECT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

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

/// What outlives a session: the configuration, the ports granted so far, the event sink.
pub(crate) struct Context {
    pub config: Arc<ClientConfig>,
    /// Public port granted to each tunnel (by index), asked for again after a reconnect.
    pub granted: Mutex<Vec<Option<u16>>>,
    /// Name granted to each HTTP tunnel that let the server choose, asked for again likewise.
    pub names: Mutex<Vec<Option<String>>>,
    pub on_event: Box<dyn Fn(Event) + Send + Sync>,
    pub streams: TaskTracker,
}

struct Session<'a> {
    ctx: &'a Context,
    writer: WriteHalf<Carrier>,
    liveness: Liveness,
    pool: Arc<Pool>,
    extra: Arc<Semaphore>,
    /// True until the first session has published every tunnel: refusals are fatal then.
    first: bool,
    /// Whether each tunnel's current request used a remembered (not configured) port or name.
    remembered: Vec<bool>,
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
    } = est;
    let (reader, writer) = tokio::io::split(carrier);
    let (tx, mut incoming) = mpsc::channel(INCOMING_QUEUE);
    let reader_task = tokio::spawn(burrow_net::forward_frames(reader, tx));
    let pool = Arc::new(Pool {
        config: ctx.config.clone(),
        session,
        secret,
        closed: shutdown.child_token(),
        streams: ctx.streams.clone(),
        span,
    });
    for _ in 0..ctx.config.pool_size {
        tokio::spawn(pool.clone().slot(None));
    }
    let now = Instant::now().into_std();
    let liveness = Liveness::new(now, ctx.config.heartbeat_interval, ctx.config.dead_after);
    let extra = Arc::new(Semaphore::new(MAX_EXTRA_SLOTS));
    let mut s = Session {
        ctx,
        writer,
        liveness,
        pool,
        extra,
        first,
        remembered: Vec::new(),
        session,
    };
    let (health_tx, mut health) = mpsc::channel(HEALTH_QUEUE);
    for (i, tunnel) in ctx.config.tunnels.iter().enumerate() {
        if let (TunnelKind::Http(_), Some(every)) = (&tunnel.kind, tunnel.health_check) {
            let closed = s.pool.closed.clone();
            let local = tunnel.local.clone();
            tokio::spawn(check_health(
                i as u32,
                local,
                every,
                health_tx.clone(),
                closed,
            ));
        }
    }
    drop(health_tx);
    let end = match s.publish_all().await {
        Ok(()) => s.run(&mut incoming, &mut health, shutdown).await,
        Err(end) => end,
    };
    s.pool.closed.cancel();
    reader_task.abort();
    end
}

impl Session<'_> {
    async fn publish_all(&mut self) -> Result<(), End> {
        self.send(ClientMsg::Host(crate::host::info())).await?;
        let granted = self
            .ctx
            .granted
            .lock()
            .map(|g| g.clone())
            .unwrap_or_default();
        let names = self.ctx.names.lock().map(|g| g.clone()).unwrap_or_default();
        for (i, tunnel) in self.ctx.config.tunnels.iter().enumerate() {
            let remembered = granted.get(i).copied().flatten();
            let name = names.get(i).cloned().flatten();
            let (port, kind) = match &tunnel.kind {
                TunnelKind::Http(options) if options.subdomain.is_none() && name.is_some() => {
                    self.remembered.push(true);
                    let mut options = options.clone();
                    options.subdomain = name;
                    (None, TunnelKind::Http(options))
                }
                _ => {
                    self.remembered
                        .push(tunnel.remote_port.is_none() && remembered.is_some());
                    (tunnel.remote_port.or(remembered), tunnel.kind.clone())
                }
            };
            self.request(i, port, kind).await?;
        }
        Ok(())
    }

    async fn request(
        &mut self,
        index: usize,
        remote_port: Option<u16>,
        kind: TunnelKind,
    ) -> Result<(), End> {
        let tunnel = &self.ctx.config.tunnels[index];
        let req = TunnelRequest {
            id: index as u32,
            name: tunnel.name.clone(),
            kind,
            remote_port,
            target: tunnel.local.clone(),
        };
        self.send(ClientMsg::OpenTunnel(req)).await
    }

    async fn run(
        &mut self,
        incoming: &mut mpsc::Receiver<Result<ServerMsg, FrameIo>>,
        health: &mut mpsc::Receiver<(u32, bool)>,
        shutdown: &CancellationToken,
    ) -> End {
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
                Some((id, healthy)) = health.recv() => self.on_health(id, healthy).await,
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

    async fn on_health(&mut self, id: u32, healthy: bool) -> Result<(), End> {
        if let Some(tunnel) = self.ctx.config.tunnels.get(id as usize) {
            if healthy {
                info!(tunnel = %tunnel.name, local = %tunnel.local, "target healthy again");
            } else {
                warn!(tunnel = %tunnel.name, local = %tunnel.local, "target failed its health check; visitors go to the other clients of this name");
            }
        }
        self.send(ClientMsg::TunnelHealth { id, healthy }).await
    }

    fn on_http_opened(&mut self, id: u32, name: String, urls: Vec<String>) {
        let Some(tunnel) = self.ctx.config.tunnels.get(id as usize) else {
            return warn!(tunnel = id, "server granted an unknown tunnel");
        };
        if let Ok(mut names) = self.ctx.names.lock()
            && let Some(slot) = names.get_mut(id as usize)
        {
            *slot = Some(name);
        }
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
        let Some(tunnel) = self.ctx.config.tunnels.get(id as usize) else {
            return warn!(tunnel = id, "server granted an unknown tunnel");
        };
        if tunnel.kind == TunnelKind::UdpToSink {
            let server = host_of(&self.ctx.config.server).to_owned();
            info!(tunnel = %tunnel.name, local = %tunnel.local, "events tunnel ready");
            let sink = format!("sink {} on {server}", tunnel.name);
            (self.ctx.config.status).ready(&tunnel.name, Some(sink), Vec::new());
            let (name, local) = (tunnel.name.clone(), tunnel.local.clone());
            return (self.ctx.on_event)(Event::SinkReady {
                name,
                local,
                server,
            });
        }
        if let Ok(mut granted) = self.ctx.granted.lock()
            && let Some(slot) = granted.get_mut(id as usize)
        {
            *slot = Some(port);
        }
        let public = format!("{}:{port}", host_of(&self.ctx.config.server));
        info!(tunnel = %tunnel.name, %public, local = %tunnel.local, "tunnel ready");
        (self.ctx.config.status).ready(&tunnel.name, Some(public.clone()), Vec::new());
        (self.ctx.on_event)(Event::TunnelReady {
            name: tunnel.name.clone(),
            public,
            local: tunnel.local.clone(),
        });
    }

    async fn on_refused(&mut self, id: u32, reason: Refusal) -> Result<(), End> {
        let index = id as usize;
        let Some(tunnel) = self.ctx.config.tunnels.get(index) else {
            return Ok(());
        };
        // A remembered port or name may have been taken after its lease ended: take any instead.
        if self.remembered.get(index).copied().unwrap_or(false) {
            self.remembered[index] = false;
            info!(tunnel = %tunnel.name, "previous port or name unavailable ({reason}); asking for any");
            return self.request(index, None, tunnel.kind.clone()).await;
        }
        let msg = format!("tunnel {} refused: {reason}", tunnel.name);
        (self.ctx.config.status).refused(&tunnel.name, reason.to_string());
        if self.first {
            return Err(End::Fatal(msg));
        }
        warn!("{msg}");
        Ok(())
    }

    /// Grows the pool by `count` slots, which retire once they go unused for a while.
    fn dial_extra(&self, count: u16) {
        for _ in 0..count {
            let Ok(permit) = self.extra.clone().try_acquire_owned() else {
                return debug!("the pool is already at its largest");
            };
            let pool = self.pool.clone();
            tokio::spawn(async move {
                pool.slot(Some(crate::streams::EXTRA_IDLE)).await;
                drop(permit);
            });
        }
    }
}

/// Checks every `every` that `local` accepts a TCP connection and reports each change of the
/// answer (starting from healthy) until the session ends.
async fn check_health(
    id: u32,
    local: String,
    every: std::time::Duration,
    changes: mpsc::Sender<(u32, bool)>,
    closed: CancellationToken,
) {
    let mut healthy = true;
    let mut ticks = tokio::time::interval(every);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = closed.cancelled() => return,
            _ = ticks.tick() => {}
        }
        let wait = every.min(HEALTH_CONNECT_TIMEOUT);
        let answers = matches!(
            timeout(wait, tokio::net::TcpStream::connect(&local)).await,
            Ok(Ok(_))
        );
        if answers != healthy {
            healthy = answers;
            if changes.send((id, healthy)).await.is_err() {
                return;
            }
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
