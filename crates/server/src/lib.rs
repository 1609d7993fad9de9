//! burrow server library: accepts sessions from clients and publishes their tunnels.
//!
//! [`run`] takes an already-bound control listener and a cancellation token, so the binary,
//! tests and embedders all start a server the same way. Every accepted connection is handed to
//! its own task at once; the TLS handshake, preface, challenge and hello happen there under one
//! deadline, and the number of connections in that phase is capped.

mod admin;
mod bans;
pub mod config;
mod handshake;
mod http;
mod link;
mod metrics;
mod pool;
pub mod ports;
mod quic;
mod registry;
pub mod reload;
mod session;
mod spans;
mod tunnel;
mod udp;
mod ws;

pub use config::{Auth, BanPolicy, HttpEdge, Identity, PortSet, ServerConfig, Transport};
pub use reload::{Change, Reloader};

use burrow_net::{Carrier, tune_carrier};
use handshake::Verdict;
use registry::Registry;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::timeout;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{Instrument, debug, info, warn};

/// What every task of a server shares.
#[derive(Debug)]
struct Shared {
    /// The running configuration; a reload swaps it (see [`reload`]). Read it with
    /// [`Shared::config`] when a value is needed, not once per task.
    config: tokio::sync::watch::Sender<Arc<ServerConfig>>,
    registry: Registry,
    shutdown: CancellationToken,
    tracker: TaskTracker,
    next_stream: AtomicU64,
    /// Visitor streams open now, over every session.
    active_streams: Arc<AtomicUsize>,
    /// Event counters and latencies for `/metrics`.
    metrics: metrics::Metrics,
    /// The HTTP edge's listeners, as tunnels see them.
    edge: http::EdgePorts,
    /// Failed handshakes and bans by source address; locked briefly, never across an await.
    bans: std::sync::Mutex<bans::BanTable>,
    /// Handshakes in progress, over every carrier and multiplexed link (`max_unauthenticated`).
    unauthenticated: Arc<Semaphore>,
}

impl Shared {
    fn new(config: ServerConfig, shutdown: CancellationToken, edge: http::EdgePorts) -> Self {
        Self {
            edge,
            bans: std::sync::Mutex::new(bans::BanTable::new(
                config.bans.clone(),
                bans::DEFAULT_CAP,
            )),
            registry: Registry::new(&config),
            unauthenticated: Arc::new(Semaphore::new(config.max_unauthenticated)),
            config: tokio::sync::watch::Sender::new(Arc::new(config)),
            shutdown,
            tracker: TaskTracker::new(),
            next_stream: AtomicU64::new(1),
            active_streams: Arc::default(),
            metrics: metrics::Metrics::new(),
        }
    }

    /// A place in the handshake phase, or `None` when `max_unauthenticated` handshakes are
    /// already in progress (the caller closes the connection or stream at once).
    fn handshake_permit(&self) -> Option<OwnedSemaphorePermit> {
        self.unauthenticated.clone().try_acquire_owned().ok()
    }

    /// The configuration in force now.
    fn config(&self) -> Arc<ServerConfig> {
        self.config.borrow().clone()
    }

    /// The ban table, for one short critical section.
    fn bans(&self) -> std::sync::MutexGuard<'_, bans::BanTable> {
        self.bans.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// True when `peer`'s address is banned: its connection is closed at once, before TLS,
    /// counted, and logged only at debug level (the ban itself was logged when it began).
    fn refuse_banned(&self, peer: SocketAddr) -> bool {
        let banned = self.bans().is_banned(peer.ip(), std::time::Instant::now());
        if banned {
            self.metrics.banned_connection();
            debug!(%peer, "connection closed: the address is banned");
        }
        banned
    }

    /// Records a failed handshake of `peer`: by reason in the metrics, and toward a ban when
    /// the reason says the peer is not an honest client.
    fn handshake_failed(&self, peer: SocketAddr, why: metrics::AuthFailure) {
        self.metrics.auth_failure(why);
        if !why.counts_toward_ban() {
            return;
        }
        let failed = self.bans().failed(peer.ip(), std::time::Instant::now());
        if let bans::Failed::Banned(ban) = failed {
            self.metrics.ban_started();
            let source = bans::Source::of(peer.ip());
            let duration = ban.until.saturating_duration_since(ban.since);
            warn!(%source, "address banned for {duration:?} after {} failed handshakes", ban.failures);
        }
    }
}

/// The sockets a server serves, already bound: the control port and, optionally, the HTTP
/// edge's listeners.
#[derive(Debug)]
pub struct Listeners {
    /// Where clients connect.
    pub control: TcpListener,
    /// The HTTP edge's plain listener (e.g. `:80`).
    pub http: Option<TcpListener>,
    /// The HTTP edge's TLS listener (e.g. `:443`): SNI passthrough, or termination.
    pub https: Option<TcpListener>,
    /// The admin API's listener (JSON and Prometheus metrics).
    pub admin: Option<TcpListener>,
    /// The QUIC carrier's UDP socket.
    pub quic: Option<std::net::UdpSocket>,
    /// The WebSocket carrier's listener (plain HTTP; TLS is terminated in front, or not at all,
    /// and burrow's own TLS runs inside).
    pub ws: Option<TcpListener>,
}

impl From<TcpListener> for Listeners {
    fn from(control: TcpListener) -> Self {
        Self {
            control,
            http: None,
            https: None,
            admin: None,
            quic: None,
            ws: None,
        }
    }
}

/// Runs a server on already-bound listeners until `shutdown` is cancelled, then lets open
/// streams finish within the configured grace period. [`Server`] does the same and also
/// hands out a [`Reloader`].
pub async fn run(
    config: ServerConfig,
    listeners: impl Into<Listeners>,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    Server::new(config, listeners, shutdown).run().await
}

/// A server ready to run on its listeners, whose configuration can be reloaded while it runs.
#[derive(Debug)]
pub struct Server {
    shared: Arc<Shared>,
    listeners: Listeners,
}

impl Server {
    /// Prepares a server; nothing is accepted before [`Server::run`].
    pub fn new(
        config: ServerConfig,
        listeners: impl Into<Listeners>,
        shutdown: CancellationToken,
    ) -> Self {
        let listeners = listeners.into();
        let port_of = |l: &Option<TcpListener>| {
            l.as_ref()
                .and_then(|l| l.local_addr().ok())
                .map(|a| a.port())
        };
        let edge = http::EdgePorts {
            http: port_of(&listeners.http),
            https: port_of(&listeners.https),
        };
        let shared = Arc::new(Shared::new(config, shutdown, edge));
        Self { shared, listeners }
    }

    /// A handle that applies new configurations to this server while it runs.
    pub fn reloader(&self) -> Reloader {
        Reloader {
            shared: self.shared.clone(),
        }
    }

    /// Serves until the shutdown token is cancelled, then lets open streams finish within the
    /// configured grace period.
    pub async fn run(self) -> anyhow::Result<()> {
        let Server { shared, listeners } = self;
        let Listeners {
            control,
            http,
            https,
            admin,
            quic,
            ws,
        } = listeners;
        if let Some(socket) = quic {
            quic::spawn(&shared, socket)?;
        }
        if let Some(listener) = ws {
            ws::spawn(&shared, listener);
        }
        http::spawn(&shared, http, https);
        if let Some(admin) = admin {
            admin::spawn(&shared, admin);
        }
        serve_control(&shared, control).await;
        drain(&shared).await;
        Ok(())
    }
}

/// Accepts control connections until shutdown, each handed to its own task at once.
async fn serve_control(shared: &Arc<Shared>, control: TcpListener) {
    let shutdown = shared.shutdown.clone();
    let config = shared.config();
    let tuned = burrow_net::tune_listener(&control, true);
    info!(ports = %config.ports, free = shared.registry.free_ports(burrow_proto::msg::Protocol::Tcp), "server ready");
    loop {
        let accepted = tokio::select! {
            _ = shutdown.cancelled() => break,
            accepted = control.accept() => accepted,
        };
        match accepted {
            Ok((tcp, peer)) => {
                if shared.refuse_banned(peer) {
                    continue;
                }
                let Some(permit) = shared.handshake_permit() else {
                    warn!(%peer, "connection dropped: {} handshakes already in progress", config.max_unauthenticated);
                    continue;
                };
                let span = tracing::debug_span!("conn", %peer);
                shared.tracker.spawn(
                    serve_connection(shared.clone(), tcp, peer, permit, tuned).instrument(span),
                );
            }
            Err(e) => {
                warn!("control accept failed: {e}");
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            }
        }
    }
}

/// Accepts the next connection, or `None` once `stop` is cancelled. A failed accept (out of
/// descriptors and the like) is logged and followed by a short pause instead of a spin.
async fn accept(
    listener: &TcpListener,
    stop: &CancellationToken,
) -> Option<(TcpStream, SocketAddr)> {
    loop {
        let accepted = tokio::select! {
            _ = stop.cancelled() => return None,
            accepted = listener.accept() => accepted,
        };
        match accepted {
            Ok(accepted) => return Some(accepted),
            Err(e) => {
                warn!("accept failed: {e}");
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            }
        }
    }
}

/// Waits for open streams to finish, at most the shutdown grace period.
async fn drain(shared: &Shared) {
    use std::sync::atomic::Ordering;
    let grace = shared.config().shutdown_grace;
    let streams = shared.active_streams.load(Ordering::Relaxed);
    info!(
        streams,
        "shutting down: waiting up to {grace:?} for open streams"
    );
    shared.tracker.close();
    if timeout(grace, shared.tracker.wait()).await.is_err() {
        let streams = shared.active_streams.load(Ordering::Relaxed);
        warn!(streams, "grace period over; closing the remaining streams");
    }
}

/// Takes one control-port connection through TLS and the handshake, and hands it on; `tuned`
/// when the socket has its options from the listener already.
async fn serve_connection(
    shared: Arc<Shared>,
    tcp: TcpStream,
    peer: SocketAddr,
    permit: OwnedSemaphorePermit,
    tuned: bool,
) {
    if !tuned {
        let _ = tune_carrier(&tcp);
    }
    let handshake = handshake(&shared, tcp);
    dispatch(&shared, handshake, peer, Unproven::new(permit), None).await;
}

/// A connection's (or a link's, or a link stream's) places in the handshake phase, and when
/// that phase began: its deadline is `handshake_timeout` later.
pub(crate) struct Unproven {
    /// One of the `max_unauthenticated` places (given back when this is dropped).
    _permit: OwnedSemaphorePermit,
    /// One of its link's places, for a stream of a link.
    _link: Option<OwnedSemaphorePermit>,
    /// When the handshake phase began.
    since: tokio::time::Instant,
}

impl Unproven {
    /// Starts the handshake phase now with `permit`.
    pub(crate) fn new(permit: OwnedSemaphorePermit) -> Self {
        Self {
            _permit: permit,
            _link: None,
            since: tokio::time::Instant::now(),
        }
    }

    /// When the handshake phase must be over.
    pub(crate) fn deadline(&self, shared: &Shared) -> tokio::time::Instant {
        self.since + shared.config().handshake_timeout
    }
}

/// Runs a connection's handshake (or a multiplexed stream's) under the pre-auth deadline and
/// hands the connection to what it asked to be: a session's control stream, one of its data
/// connections, or a multiplexed link. For a stream of a link, `on_link` says which: its
/// `authenticated` is cancelled once the handshake proved who the peer is, and a session whose
/// client asked for server-opened streams gets its opener.
pub(crate) async fn dispatch(
    shared: &Arc<Shared>,
    handshake: impl Future<Output = anyhow::Result<(Carrier, Verdict)>>,
    peer: SocketAddr,
    unproven: Unproven,
    on_link: Option<&link::OnLink>,
) {
    let deadline = shared.config().handshake_timeout;
    let started = std::time::Instant::now();
    let outcome = tokio::select! {
        _ = shared.shutdown.cancelled() => return,
        outcome = tokio::time::timeout_at(unproven.deadline(shared), handshake) => outcome,
    };
    let (carrier, verdict) = match outcome {
        Ok(Ok(done)) => done,
        Ok(Err(why)) if why.is::<PeerLeft>() => return debug!(%peer, "{why}"),
        Ok(Err(why)) => {
            shared.handshake_failed(peer, failure_reason(&why));
            return warn!(%peer, "connection refused: {why}");
        }
        Err(_) => {
            shared.handshake_failed(peer, metrics::AuthFailure::Timeout);
            return warn!(%peer, "connection closed: handshake not finished within {deadline:?}");
        }
    };
    if let Verdict::Link = verdict {
        // Still unproven: the link keeps its place until a stream authenticates.
        // Boxed, as the session below: a task's future is as large as its largest state, and
        // every data connection's task would otherwise be allocated, and moved, at that size.
        return Box::pin(link::serve(shared.clone(), carrier, "mux", peer, unproven)).await;
    }
    drop(unproven);
    if let Some(on_link) = on_link {
        on_link.authenticated.cancel();
    }
    let data = matches!(verdict, Verdict::Data { .. });
    shared.metrics.handshake(data, started.elapsed());
    match verdict {
        Verdict::Control {
            identity,
            secret,
            caps,
        } => {
            shared
                .bans()
                .succeeded(peer.ip(), std::time::Instant::now());
            let opener = on_link
                .filter(|_| caps & burrow_proto::caps::SERVER_STREAMS != 0)
                .map(|l| l.opener.clone());
            let login = session::Login {
                identity,
                secret,
                peer,
                opener,
                reuse: caps & burrow_proto::caps::REUSE != 0,
            };
            Box::pin(session::run(shared.clone(), carrier, login)).await
        }
        Verdict::Data { session, early } => pool::add(shared, carrier, session, early).await,
        Verdict::Link => {}
    }
}

/// TLS (unless plain), then the burrow handshake.
async fn handshake(shared: &Shared, tcp: TcpStream) -> anyhow::Result<(Carrier, Verdict)> {
    let carrier = match &shared.config().transport {
        Transport::Plain => Carrier::Plain(tcp),
        Transport::Tls(tls) => {
            let acceptor = burrow_net::tls::tokio_rustls::TlsAcceptor::from(tls.clone());
            // Boxed: rustls' handshake state is 1.2 KiB, which every connection's task carried
            // (and moved, twice over) even on a plain carrier.
            let stream = Box::pin(acceptor.accept(tcp)).await.map_err(tls_failure)?;
            Carrier::ServerTls(Box::new(stream))
        }
    };
    greet(shared, carrier, handshake::Links::Allowed).await
}

/// The burrow handshake on a secured carrier.
async fn greet(
    shared: &Shared,
    mut carrier: Carrier,
    links: handshake::Links,
) -> anyhow::Result<(Carrier, Verdict)> {
    let verdict = match handshake::accept(&mut carrier, &shared.registry, links).await {
        Err(handshake::Failure::Io(e)) if hung_up(&e) => return Err(PeerLeft.into()),
        other => other?,
    };
    Ok((carrier, verdict))
}

/// Why a handshake failed, as the metric counts it.
fn failure_reason(why: &anyhow::Error) -> metrics::AuthFailure {
    use handshake::Failure;
    use metrics::AuthFailure;
    match why.downcast_ref::<Failure>() {
        Some(Failure::Auth(_)) => AuthFailure::BadCredentials,
        Some(Failure::UnknownSession(_)) => AuthFailure::UnknownSession,
        Some(Failure::Version(_)) => AuthFailure::Version,
        Some(Failure::Foreign(_)) => AuthFailure::NotBurrow,
        Some(Failure::Malformed(_) | Failure::Io(_)) => AuthFailure::Malformed,
        // Everything else failed before the burrow handshake began: in TLS.
        None => AuthFailure::Tls,
    }
}

/// A peer that hung up before finishing the handshake: routine (a client stopping while it
/// dials its pool), so it is logged quietly.
#[derive(Debug, thiserror::Error)]
#[error("the peer closed the connection during the handshake")]
struct PeerLeft;

fn hung_up(e: &std::io::Error) -> bool {
    use std::io::ErrorKind::{ConnectionReset, UnexpectedEof};
    matches!(e.kind(), UnexpectedEof | ConnectionReset)
}

/// Explains a failed TLS handshake, naming the likely misconfiguration when the peer did not
/// speak TLS at all.
fn tls_failure(e: std::io::Error) -> anyhow::Error {
    use burrow_net::tls::rustls::Error as TlsError;
    if hung_up(&e) {
        return PeerLeft.into();
    }
    let not_tls = matches!(
        e.get_ref().and_then(|i| i.downcast_ref::<TlsError>()),
        Some(TlsError::InvalidMessage(_))
    );
    if not_tls {
        anyhow::anyhow!(
            "the peer does not speak TLS (a plain-TCP client? --insecure-plain must be on both sides or neither)"
        )
    } else {
        anyhow::anyhow!("TLS handshake failed: {e}")
    }
}
