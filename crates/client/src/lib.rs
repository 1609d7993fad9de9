//! burrow client library: dials a server, keeps a session up and serves its tunnels.
//!
//! [`run`] connects, authenticates, publishes every configured tunnel and keeps a warm pool of
//! data connections. When the carrier is lost it reconnects with exponential backoff and jitter,
//! asking for the same public ports again (the server holds them as leases meanwhile). Errors
//! that retrying cannot fix — authentication, protocol version, an untrusted certificate, a
//! tunnel refused on the first connection, a proxy refusing its credentials on the first
//! connection — end [`run`] with [`ClientError::Fatal`]. With [`ClientConfig::proxy`] set, every
//! connection to the server goes through that HTTP CONNECT or SOCKS5 proxy (see [`proxy`]).
//!
//! A [`Client`] built with [`Client::new`] also hands out a [`Reloader`], which changes the
//! tunnels while the client runs (see [`reload`]).

pub mod config;
mod connect;
mod host;
pub mod proxy;
mod proxy_protocol;
pub mod reload;
mod server_streams;
mod session;
pub mod status;
mod streams;
mod tunnels;
mod udp;

pub use config::{CarrierKind, ClientConfig, ProxyProtocol, Transport, TunnelConfig};
pub use proxy::Proxy;
pub use reload::{Change, Reloader};
pub use status::Status;

use connect::ConnectError;
use session::{Context, End};
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{Instrument, info, warn};
use tunnels::Tunnels;

/// First pause before reconnecting.
const INITIAL_BACKOFF: Duration = Duration::from_millis(500);
/// A session that lasted this long resets the backoff.
const STABLE_AFTER: Duration = Duration::from_secs(30);
/// How long running streams may take to finish after shutdown.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

/// Something the user should see; the CLI prints these.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// A tunnel is published (again, after a reconnect).
    TunnelReady {
        /// Tunnel name.
        name: String,
        /// Public address: the server's host and the granted port.
        public: String,
        /// The local target.
        local: String,
    },
    /// An HTTP tunnel is published on the server's edge.
    HttpReady {
        /// Tunnel name.
        name: String,
        /// Where visitors reach it.
        urls: Vec<String>,
        /// The local target.
        local: String,
        /// This client's id on the server (`<id>.<name>.<domain>` reaches this client alone).
        client: String,
    },
    /// An events tunnel is ready: datagrams heard on `local` go to the server's sink `name`.
    SinkReady {
        /// Tunnel (and sink) name.
        name: String,
        /// Where the client listens.
        local: String,
        /// The server's host.
        server: String,
    },
}

/// Why the client stopped.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// An error retrying cannot fix: authentication, version, trust, a refused tunnel.
    #[error("{0}")]
    Fatal(String),
    /// The carrier was lost and `exit_on_disconnect` is set.
    #[error("disconnected: {0}")]
    Disconnected(String),
}

/// Runs the client until `shutdown` is cancelled or a fatal error; `on_event` sees every
/// [`Event`], and `config.status` follows the session and every tunnel (see [`status`]).
pub async fn run(
    config: ClientConfig,
    shutdown: CancellationToken,
    on_event: impl Fn(Event) + Send + Sync + 'static,
) -> Result<(), ClientError> {
    Client::new(config, on_event).run(shutdown).await
}

/// A client ready to run, whose tunnels a [`Reloader`] may change while it runs.
pub struct Client {
    ctx: Arc<Context>,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("server", &self.ctx.config.server)
            .finish_non_exhaustive()
    }
}

impl Client {
    /// A client of `config`; `on_event` will see every [`Event`], and `config.status` will
    /// follow the session and every tunnel (see [`status`]).
    pub fn new(mut config: ClientConfig, on_event: impl Fn(Event) + Send + Sync + 'static) -> Self {
        config.status.start(&config.server, &config.tunnels);
        let tunnels = Tunnels::new(std::mem::take(&mut config.tunnels));
        let ctx = Context {
            config: Arc::new(config),
            tunnels: Arc::new(tunnels),
            on_event: Box::new(on_event),
            streams: TaskTracker::new(),
        };
        Self { ctx: Arc::new(ctx) }
    }

    /// A handle that changes this client's tunnels while it runs.
    pub fn reloader(&self) -> Reloader {
        Reloader {
            ctx: self.ctx.clone(),
        }
    }

    /// Runs the client until `shutdown` is cancelled or a fatal error.
    pub async fn run(self, shutdown: CancellationToken) -> Result<(), ClientError> {
        let ctx = &self.ctx;
        let result = reconnect_loop(ctx, &shutdown).await;
        ctx.streams.close();
        if !ctx.streams.is_empty() {
            info!(
                streams = ctx.streams.len(),
                "waiting up to {SHUTDOWN_GRACE:?} for open streams"
            );
            let _ = tokio::time::timeout(SHUTDOWN_GRACE, ctx.streams.wait()).await;
        }
        result
    }
}

async fn reconnect_loop(ctx: &Context, shutdown: &CancellationToken) -> Result<(), ClientError> {
    let config = &ctx.config;
    let mut backoff = INITIAL_BACKOFF;
    let mut first = true;
    loop {
        let attempt = tokio::select! {
            _ = shutdown.cancelled() => return Ok(()),
            attempt = connect::control(config) => attempt,
        };
        match attempt {
            Ok(est) => {
                let started = Instant::now();
                let carrier = est.link.kind();
                config.status.connected(est.session, carrier);
                let span = session_span(config, est.session);
                info!(parent: &span, carrier, zero_rtt = est.zero_rtt, "{}", if first { "session established" } else { "reconnected: session established" });
                let end = session::run(ctx, est, first, shutdown, span.clone())
                    .instrument(span)
                    .await;
                first = false;
                match end {
                    End::Lost(why) if !config.exit_on_disconnect => {
                        warn!("carrier lost: {why}; reconnecting");
                        config.status.failed(&format!("carrier lost: {why}"));
                    }
                    end => return end.into(),
                }
                if started.elapsed() >= STABLE_AFTER {
                    backoff = INITIAL_BACKOFF;
                }
            }
            Err(ConnectError::Fatal(e)) => return Err(ClientError::Fatal(e)),
            Err(ConnectError::ProxyAuth(e) | ConnectError::Unusable(e)) if first => {
                return Err(ClientError::Fatal(e));
            }
            Err(
                ConnectError::Retry(e) | ConnectError::ProxyAuth(e) | ConnectError::Unusable(e),
            ) if config.exit_on_disconnect => {
                return Err(ClientError::Disconnected(e));
            }
            Err(
                ConnectError::Retry(e) | ConnectError::ProxyAuth(e) | ConnectError::Unusable(e),
            ) => {
                warn!("{e}; retrying in {:?}", backoff);
                config.status.failed(&e);
            }
        }
        let pause = jitter(backoff);
        tokio::select! {
            _ = shutdown.cancelled() => return Ok(()),
            _ = tokio::time::sleep(pause) => {}
        }
        backoff = (backoff * 2).min(config.max_backoff);
    }
}

/// The span a session runs in, with the ids the server logs it by: `session` and `client` (the
/// identity name, left out in shared-token mode), and the `server` dialed.
fn session_span(config: &ClientConfig, session: u64) -> tracing::Span {
    let span = tracing::info_span!("session", session = %format_args!("{session:016x}"), client = tracing::field::Empty, server = %config.server);
    if !config.name.is_empty() {
        span.record("client", config.name.as_str());
    }
    span
}

/// A pause between half and all of `backoff`, so clients cut off together do not return together.
fn jitter(backoff: Duration) -> Duration {
    let random = burrow_proto::auth::nonce()[0] as f64 / 255.0;
    backoff.mul_f64(0.5 + random / 2.0)
}
