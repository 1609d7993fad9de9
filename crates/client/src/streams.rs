//! Data connections on the client side: the warm pool and the streams that run over it.
//!
//! `pool_size` slot tasks each keep one authenticated data connection open and idle. When the
//! server hands a slot's connection to a visitor (by sending a stream header on it), the slot
//! spawns the stream's relay and immediately dials a replacement, so the pool refills as it is
//! used. When visitors arrive faster than that, the server asks for more and the pool grows by
//! extra slots; an extra slot whose connection sits unused for [`EXTRA_IDLE`] retires, so the
//! pool shrinks back to `pool_size` when the burst is over.
//!
//! A reusable stream (`StreamKind::TcpReusable`, which a server that announced `caps::REUSE`
//! sends on pooled TCP and TLS connections) gives its connection back when both ways have ended
//! in chunks, and the server puts it back in its pool. The slot that handed the connection over waits up to
//! [`REUSE_WAIT`] for it and, if it comes, waits on it for the next stream instead of dialing
//! a replacement: short streams then cost a stream header, not a TCP and TLS handshake. A
//! connection that comes back later lingers on its own, as an extra slot's would, for the
//! server's next visitor or until [`EXTRA_IDLE`] passes. The server running out of connections
//! while the pool is at its largest (a burst of long-lived visitors) cuts that wait short:
//! every waiting slot dials at once ([`Pool::hurry`]).
//! Streams outlive the session that opened them: a reconnect does not cut a running transfer,
//! nor does a reload that removes or retargets the tunnel; a datagram connection, which carries
//! every flow of its tunnel, closes then instead (the server opens another for a retargeted
//! tunnel, toward its new target).

use crate::config::ClientConfig;
use crate::connect;
use crate::proxy_protocol::{ProxyProtocol, write_header};
use crate::tunnels::Tunnels;
use burrow_net::relay::Path;
use burrow_net::{Carrier, read_frame, relay, relay_reusable, tune_endpoint};
use burrow_proto::auth::DataKey;
use burrow_proto::msg::{StreamKind, StreamOpen, Target, TunnelKind};
use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::Duration;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::sync::Notify;
use tokio::time::timeout;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{Instrument, debug, warn};

/// Pause before redialing a data connection that failed, so a struggling server is not hammered.
const REDIAL_PAUSE: Duration = Duration::from_secs(1);
/// How long an extra slot's connection may sit unused before the slot retires.
pub(crate) const EXTRA_IDLE: Duration = Duration::from_secs(30);
/// How long a slot waits for a reusable stream to give its connection back before it dials a
/// replacement: long enough for a request and its answer, short enough that long-lived streams
/// (a shell, a download) leave the pool short only briefly.
pub(crate) const REUSE_WAIT: Duration = Duration::from_millis(200);
/// How long the release of a reusable stream's connection may take to leave (two bytes, so
/// only a server that stopped reading holds it up).
const RELEASE_WRITE: Duration = Duration::from_secs(10);

/// What became of one data connection.
#[derive(Debug)]
pub(crate) enum Outcome {
    /// It carried a stream (or the session ended).
    Served,
    /// It carried a reusable stream, which gave it back: it waits for the next one.
    Reused(Carrier),
    /// It could not be dialed, or the server closed it.
    Failed,
    /// Nobody used it within the idle limit; it was closed.
    Idle,
}

/// What data connections of one session need.
pub(crate) struct Pool {
    pub config: Arc<ClientConfig>,
    /// The running tunnels, where a stream looks up its target.
    pub tunnels: Arc<Tunnels>,
    pub session: u64,
    /// The session secret, keyed once for every data connection's proof.
    pub key: DataKey,
    /// The next early-hello sequence number, when the server takes early hellos
    /// (`caps::EARLY_DATA`): each data connection then needs no round trip of its own.
    pub early: Option<AtomicU64>,
    /// How data connections are opened (new connections, or streams of one).
    pub link: connect::Link,
    /// Cancelled when the session ends: idle connections close, streams go on.
    pub closed: CancellationToken,
    /// Streams, tracked so shutdown can wait for them.
    pub streams: TaskTracker,
    /// The session's span, which stream spans link to.
    pub span: tracing::Span,
    /// How long a slot waits for a reusable stream to give its connection back ([`REUSE_WAIT`]).
    pub reuse_wait: Duration,
    /// Wakes the slots waiting for a reusable stream's connection to come back: the server
    /// wants connections now.
    pub hurry: Notify,
}

/// The counter of a session's early hellos, numbered from 1, when the server announced that it
/// takes them (`caps::EARLY_DATA` in the preface of the session's control stream); `None` for an
/// older server, whose challenge every data connection then answers.
pub(crate) fn early_hellos(server_caps: u32) -> Option<AtomicU64> {
    (server_caps & burrow_proto::caps::EARLY_DATA != 0).then(|| AtomicU64::new(1))
}

impl Pool {
    /// The server is short of connections and the pool cannot grow: the slots waiting for a
    /// stream to give its connection back stop waiting and dial a replacement now (a
    /// connection that still comes back lingers on its own).
    pub(crate) fn hurry(&self) {
        self.hurry.notify_waiters();
    }

    /// Keeps one idle data connection open until the session ends; with an `idle_limit`, also
    /// until a connection goes unused that long (an extra slot).
    pub(crate) async fn slot(self: Arc<Self>, idle_limit: Option<Duration>) {
        let mut kept = None;
        while !self.closed.is_cancelled() {
            let reused = kept.is_some();
            let outcome = match kept.take() {
                Some(carrier) => self.serve(carrier, idle_limit).await,
                None => self.serve_new(idle_limit).await,
            };
            match outcome {
                Outcome::Served => {}
                Outcome::Reused(carrier) => kept = Some(carrier),
                Outcome::Idle => return,
                // A connection the server closed after its stream (a full pool, say) is no
                // sign of trouble: dial a new one at once.
                Outcome::Failed if reused => {}
                Outcome::Failed => tokio::select! {
                    _ = self.closed.cancelled() => return,
                    _ = tokio::time::sleep(REDIAL_PAUSE) => {}
                },
            }
        }
    }

    /// Dials one data connection and waits for the server to use it.
    async fn serve_new(self: &Arc<Self>, idle_limit: Option<Duration>) -> Outcome {
        let carrier = tokio::select! {
            _ = self.closed.cancelled() => return Outcome::Served,
            carrier = connect::data(&self.config, &self.link, self.session, &self.key, self.early.as_ref()) => carrier,
        };
        match carrier {
            Ok(carrier) => self.serve(carrier, idle_limit).await,
            Err(e) => {
                debug!("data connection failed: {e}");
                Outcome::Failed
            }
        }
    }

    /// Waits on an idle data connection for the server to use it, and starts the stream it
    /// sends. A reusable stream's connection comes back to the slot if the stream ends within
    /// the pool's `reuse_wait` (unless [`Pool::hurry`] cuts the wait short), and lingers on its
    /// own (see [`Pool::linger`]) if it ends later.
    async fn serve(
        self: &Arc<Self>,
        mut carrier: Carrier,
        idle_limit: Option<Duration>,
    ) -> Outcome {
        let idle = async {
            match idle_limit {
                Some(limit) => tokio::time::sleep(limit).await,
                None => std::future::pending().await,
            }
        };
        // Idle until the server sends a stream header; the session ending closes it.
        let open = tokio::select! {
            _ = self.closed.cancelled() => return Outcome::Served,
            _ = idle => return Outcome::Idle,
            open = read_frame::<_, StreamOpen>(&mut carrier) => open,
        };
        let open = match open {
            Ok(open) => open,
            Err(e) => {
                debug!("idle data connection closed: {e}");
                return Outcome::Failed;
            }
        };
        let span = self.stream_span(&open, "pool");
        let (config, tunnels) = (self.config.clone(), self.tunnels.clone());
        if open.kind != StreamKind::TcpReusable {
            self.streams
                .spawn(run_stream(config, tunnels, carrier, open).instrument(span));
            return Outcome::Served;
        }
        let (back, mut back_here) = tokio::sync::oneshot::channel();
        let pool = self.clone();
        let stream = async move {
            let Some(carrier) = run_stream(config, tunnels, carrier, open).await else {
                return;
            };
            // The slot stopped waiting (or the session ended): the connection lingers on its
            // own, in a task of its own (outside this stream's span).
            if let Err(carrier) = back.send(carrier) {
                let streams = pool.streams.clone();
                streams.spawn(pool.linger(carrier));
            }
        };
        self.streams.spawn(stream.instrument(span));
        tokio::select! {
            _ = self.closed.cancelled() => {}
            _ = self.hurry.notified() => {}
            back = tokio::time::timeout(self.reuse_wait, &mut back_here) => match back {
                Ok(Ok(carrier)) => return Outcome::Reused(carrier),
                // The stream ended without giving its connection back.
                Ok(Err(_)) => return Outcome::Served,
                Err(_) => {}
            },
        }
        // Stopped waiting, the stream still running. Closing the channel settles the race
        // with a stream that ends right now: a connection sent before the close is taken here
        // (dropping it would close a connection the server has pooled again), and a send
        // after it fails, so the stream lingers with its connection.
        back_here.close();
        match back_here.try_recv() {
            Ok(carrier) => Outcome::Reused(carrier),
            Err(_) => Outcome::Served,
        }
    }

    /// Keeps a connection a reusable stream gave back after its slot stopped waiting for it:
    /// the server has it in its pool, so it waits for the next stream like an extra slot's
    /// (until [`EXTRA_IDLE`] passes or the session ends), and goes on serving while its
    /// streams give it back. Never dials.
    fn linger(
        self: Arc<Self>,
        carrier: Carrier,
    ) -> std::pin::Pin<Box<dyn Future<Output = ()> + Send>> {
        Box::pin(async move {
            let mut carrier = carrier;
            while !self.closed.is_cancelled() {
                match self.serve(carrier, Some(EXTRA_IDLE)).await {
                    Outcome::Reused(back) => carrier = back,
                    Outcome::Served | Outcome::Idle | Outcome::Failed => return,
                }
            }
        })
    }
}

impl Pool {
    /// The span of a stream (at `debug`, so free unless logs or traces want it), with the ids
    /// the server traces it by, linked to the session's span: streams outlive sessions, so
    /// they do not nest in them. `opened` says how the stream came: `pool` (a pooled data
    /// connection) or `server` (a stream the server opened on the link).
    pub(crate) fn stream_span(&self, open: &StreamOpen, opened: &'static str) -> tracing::Span {
        let span = tracing::debug_span!(
            "stream",
            stream = open.stream,
            opened,
            session = %format_args!("{:016x}", self.session),
            tunnel = tracing::field::Empty,
            visitor = tracing::field::Empty,
        );
        if span.is_disabled() {
            return span;
        }
        if let Target::Tunnel(id) = open.target {
            span.record("tunnel", id);
        }
        if let Some(visitor) = open.visitor {
            span.record("visitor", tracing::field::display(visitor));
        }
        span.follows_from(&self.span);
        span
    }
}

/// Connects a stream to its target and relays until both directions finish. Returns the data
/// connection when the stream was reusable and ended cleanly: it is ready for the next one.
pub(crate) async fn run_stream(
    config: Arc<ClientConfig>,
    tunnels: Arc<Tunnels>,
    mut carrier: Carrier,
    open: StreamOpen,
) -> Option<Carrier> {
    let entry = match &open.target {
        Target::Tunnel(id) => match tunnels.get(*id) {
            Some(entry) => entry,
            None => {
                debug!("stream for tunnel {id}, withdrawn since; closed");
                return None;
            }
        },
        Target::Address { host, port } => {
            warn!("stream to {host}:{port} refused: this client allows no reverse dial");
            return None;
        }
    };
    let tunnel = &entry.config;
    let counted = config.status.stream(&tunnel.name);
    let closed = &entry.closed;
    match (open.kind, &tunnel.kind) {
        (StreamKind::Datagrams, TunnelKind::Udp(options)) => {
            // Boxed (as the sink's): the task of every TCP stream would otherwise be allocated,
            // and moved, at the size of the UDP relay's state.
            let relay = Box::pin(crate::udp::run(
                carrier,
                open.stream,
                &tunnel.local,
                *options,
            ));
            if closed.run_until_cancelled(relay).await.is_none() {
                debug!("datagram connection closed: its tunnel was withdrawn or retargeted");
            }
            None
        }
        (StreamKind::Datagrams, TunnelKind::UdpToSink) => {
            let bound = crate::session::sink_listener(&entry);
            let relay = Box::pin(crate::udp::run_to_sink(
                carrier,
                open.stream,
                &tunnel.local,
                bound,
            ));
            if closed.run_until_cancelled(relay).await.is_none() {
                debug!("event connection closed: its tunnel was withdrawn or retargeted");
            }
            None
        }
        _ => {
            let relayed = run_tcp(
                &config,
                &mut carrier,
                &open,
                &tunnel.local,
                tunnel.proxy_protocol,
            );
            let (to_target, to_visitor, path) = relayed.await?;
            if let Some(counted) = &counted {
                counted.bytes(to_target, to_visitor);
            }
            if path != Path::Chunked {
                return None;
            }
            match timeout(RELEASE_WRITE, release(&mut carrier)).await {
                Ok(Ok(())) => Some(carrier),
                Ok(Err(e)) => {
                    debug!("data connection closed after its stream: {e}");
                    None
                }
                Err(_) => {
                    debug!("data connection closed after its stream: the release did not leave");
                    None
                }
            }
        }
    }
}

/// Tells the server that this side of a reusable stream is over: the server puts the
/// connection back in its pool when it reads this (see `burrow_proto::reuse`).
async fn release(carrier: &mut Carrier) -> std::io::Result<()> {
    carrier.write_all(&burrow_proto::reuse::RELEASE).await?;
    carrier.flush().await
}

/// Connects a TCP stream to its target and relays until both directions finish; with `proxy`,
/// a PROXY protocol header naming the visitor goes to the target first. Returns the bytes
/// relayed toward the target and toward the visitor, and the path they took, when the relay
/// ended cleanly.
async fn run_tcp(
    config: &ClientConfig,
    carrier: &mut Carrier,
    open: &StreamOpen,
    local: &str,
    proxy: Option<ProxyProtocol>,
) -> Option<(u64, u64, Path)> {
    let reusable = match open.kind {
        StreamKind::Tcp => false,
        StreamKind::TcpReusable => true,
        StreamKind::Datagrams => {
            warn!(target = %local, "a datagram stream for a TCP tunnel; closed");
            return None;
        }
    };
    let target = match timeout(config.target_timeout, TcpStream::connect(local)).await {
        Ok(Ok(t)) => t,
        Ok(Err(e)) => {
            warn!(target = %local, "cannot reach the target: {e}; stream closed");
            return None;
        }
        Err(_) => {
            warn!(target = %local, "target did not answer within {:?}; stream closed", config.target_timeout);
            return None;
        }
    };
    let _ = tune_endpoint(&target);
    let mut target = target;
    if let Some(version) = proxy {
        let written = write_header(&mut target, version, open.visitor, config.target_timeout);
        if let Err(e) = written.await {
            warn!(target = %local, "cannot send the PROXY header: {e}; stream closed");
            return None;
        }
    }
    let relayed = if reusable {
        relay_reusable(&mut target, carrier).await
    } else {
        relay(&mut target, carrier).await
    };
    match relayed {
        Ok(r) => {
            let (to_visitor, to_target) = (r.to_carrier, r.from_carrier);
            debug!(visitor = ?open.visitor, to_visitor, to_target, path = %r.path, "stream closed");
            Some((to_target, to_visitor, r.path))
        }
        Err(e) => {
            debug!(visitor = ?open.visitor, "stream ended: {e}");
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{ClientConfig, Transport, TunnelConfig};
    use burrow_net::write_frame;
    use burrow_proto::auth::Secret;
    use burrow_proto::caps;
    use burrow_proto::msg::Hello;
    use burrow_proto::preface::PREFACE_LEN;
    use burrow_proto::reuse;
    use std::sync::atomic::Ordering;
    use tokio::io::AsyncReadExt;
    use tokio::net::TcpListener;

    /// A pool of one slot that dials `server` over plain TCP with early hellos, for one TCP
    /// tunnel (id 0) to `target`, whose slots wait an hour for a reusable stream's connection.
    fn pool_toward(server: u16, target: u16) -> Arc<Pool> {
        let config = ClientConfig::new(
            format!("127.0.0.1:{server}"),
            "alice".into(),
            Secret::new("t"),
            Transport::Plain,
        );
        let tunnel = TunnelConfig::tcp("echo", &format!("127.0.0.1:{target}"));
        Arc::new(Pool {
            config: Arc::new(config),
            tunnels: Arc::new(Tunnels::new(vec![tunnel])),
            session: 1,
            key: DataKey::new(&Secret::new("s")),
            early: early_hellos(caps::ALL),
            link: connect::Link::Dial,
            closed: CancellationToken::new(),
            streams: TaskTracker::new(),
            span: tracing::Span::none(),
            reuse_wait: Duration::from_secs(3600),
            hurry: Notify::new(),
        })
    }

    /// Accepts the pool's next data connection and reads its early hello.
    async fn accept_data(server: &TcpListener) -> TcpStream {
        let (mut conn, _) = server.accept().await.unwrap();
        let mut preface = [0u8; PREFACE_LEN];
        conn.read_exact(&mut preface).await.unwrap();
        let hello: Hello = read_frame(&mut conn).await.unwrap();
        assert!(matches!(hello, Hello::EarlyData { .. }), "{hello:?}");
        conn
    }

    /// A burst of long-lived visitors on a pool at its largest: the server asks for more and
    /// the pool cannot grow, so the slot waiting for its stream's connection to come back
    /// (here for an hour) dials a replacement at once, while that stream still runs.
    #[tokio::test]
    async fn hurry_makes_a_waiting_slot_dial_now() {
        let target = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let server = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let pool = pool_toward(
            server.local_addr().unwrap().port(),
            target.local_addr().unwrap().port(),
        );
        tokio::spawn(pool.clone().slot(None));

        let mut data = accept_data(&server).await;
        let open = StreamOpen {
            stream: 1,
            kind: StreamKind::TcpReusable,
            target: Target::Tunnel(0),
            visitor: None,
        };
        write_frame(&mut data, &open).await.unwrap();
        data.write_all(&reuse::header(2).unwrap()).await.unwrap();
        data.write_all(b"hi").await.unwrap();
        // The stream reached its target: the slot handed its connection over and waits.
        let (mut visitor_side, _) = target.accept().await.unwrap();
        let mut got = [0u8; 2];
        visitor_side.read_exact(&mut got).await.unwrap();
        assert_eq!(&got, b"hi");

        pool.hurry();
        let replacement = tokio::time::timeout(Duration::from_secs(30), accept_data(&server))
            .await
            .expect("the waiting slot dialed a replacement");
        // The first stream still runs, on its own connection.
        visitor_side.write_all(b"yo").await.unwrap();
        let mut back = [0u8; 4];
        data.read_exact(&mut back).await.unwrap();
        assert_eq!(&back[..2], &reuse::header(2).unwrap());
        assert_eq!(&back[2..], b"yo");
        drop(replacement);
    }

    #[test]
    fn early_hellos_only_to_a_server_that_announced_them() {
        let counter = early_hellos(caps::ALL).expect("this build's server takes them");
        assert_eq!(counter.load(Ordering::Relaxed), 1, "numbered from 1");
        assert!(early_hellos(caps::ALL & !caps::EARLY_DATA).is_none());
        assert!(
            early_hellos(caps::TCP | caps::MUX).is_none(),
            "a server before them"
        );
    }
}
