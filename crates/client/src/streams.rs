//! Data connections on the client side: the warm pool and the streams that run over it.
//!
//! `pool_size` slot tasks each keep one authenticated data connection open and idle. When the
//! server hands a slot's connection to a visitor (by sending a stream header on it), the slot
//! spawns the stream's relay and immediately dials a replacement, so the pool refills as it is
//! used. When visitors arrive faster than that, the server asks for more and the pool grows by
//! extra slots; an extra slot whose connection sits unused for [`EXTRA_IDLE`] retires, so the
//! pool shrinks back to `pool_size` when the burst is over.
//! Streams outlive the session that opened them: a reconnect does not cut a running transfer,
//! nor does a reload that removes or retargets the tunnel; a datagram connection, which carries
//! every flow of its tunnel, closes then instead (the server opens another for a retargeted
//! tunnel, toward its new target).

use crate::config::ClientConfig;
use crate::connect;
use crate::proxy_protocol::{ProxyProtocol, write_header};
use crate::tunnels::Tunnels;
use burrow_net::{Carrier, read_frame, relay, tune_endpoint};
use burrow_proto::auth::DataKey;
use burrow_proto::msg::{StreamKind, StreamOpen, Target, TunnelKind};
use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::Duration;
use tokio::net::TcpStream;
use tokio::time::timeout;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{Instrument, debug, warn};

/// Pause before redialing a data connection that failed, so a struggling server is not hammered.
const REDIAL_PAUSE: Duration = Duration::from_secs(1);
/// How long an extra slot's connection may sit unused before the slot retires.
pub(crate) const EXTRA_IDLE: Duration = Duration::from_secs(30);

/// What became of one data connection.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Outcome {
    /// It carried a stream (or the session ended).
    Served,
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
}

/// The counter of a session's early hellos, numbered from 1, when the server announced that it
/// takes them (`caps::EARLY_DATA` in the preface of the session's control stream); `None` for an
/// older server, whose challenge every data connection then answers.
pub(crate) fn early_hellos(server_caps: u32) -> Option<AtomicU64> {
    (server_caps & burrow_proto::caps::EARLY_DATA != 0).then(|| AtomicU64::new(1))
}

impl Pool {
    /// Keeps one idle data connection open until the session ends; with an `idle_limit`, also
    /// until a connection goes unused that long (an extra slot).
    pub(crate) async fn slot(self: Arc<Self>, idle_limit: Option<Duration>) {
        while !self.closed.is_cancelled() {
            match self.serve_one(idle_limit).await {
                Outcome::Served => {}
                Outcome::Idle => return,
                Outcome::Failed => tokio::select! {
                    _ = self.closed.cancelled() => return,
                    _ = tokio::time::sleep(REDIAL_PAUSE) => {}
                },
            }
        }
    }

    /// Dials one data connection and waits for the server to use it.
    async fn serve_one(&self, idle_limit: Option<Duration>) -> Outcome {
        let carrier = tokio::select! {
            _ = self.closed.cancelled() => return Outcome::Served,
            carrier = connect::data(&self.config, &self.link, self.session, &self.key, self.early.as_ref()) => carrier,
        };
        let mut carrier = match carrier {
            Ok(c) => c,
            Err(e) => {
                debug!("data connection failed: {e}");
                return Outcome::Failed;
            }
        };
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
        match open {
            Ok(open) => {
                let span = self.stream_span(&open, "pool");
                let (config, tunnels) = (self.config.clone(), self.tunnels.clone());
                self.streams
                    .spawn(run_stream(config, tunnels, carrier, open).instrument(span));
                Outcome::Served
            }
            Err(e) => {
                debug!("idle data connection closed: {e}");
                Outcome::Failed
            }
        }
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

/// Connects a stream to its target and relays until both directions finish.
pub(crate) async fn run_stream(
    config: Arc<ClientConfig>,
    tunnels: Arc<Tunnels>,
    carrier: Carrier,
    open: StreamOpen,
) {
    let entry = match &open.target {
        Target::Tunnel(id) => match tunnels.get(*id) {
            Some(entry) => entry,
            None => return debug!("stream for tunnel {id}, withdrawn since; closed"),
        },
        Target::Address { host, port } => {
            return warn!("stream to {host}:{port} refused: this client allows no reverse dial");
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
        }
        _ => {
            let relayed = run_tcp(
                &config,
                carrier,
                &open,
                &tunnel.local,
                tunnel.proxy_protocol,
            );
            if let (Some((to_target, to_visitor)), Some(counted)) = (relayed.await, &counted) {
                counted.bytes(to_target, to_visitor);
            }
        }
    }
}

/// Connects a TCP stream to its target and relays until both directions finish; with `proxy`,
/// a PROXY protocol header naming the visitor goes to the target first. Returns the bytes
/// relayed toward the target and toward the visitor, when the relay ended cleanly.
async fn run_tcp(
    config: &ClientConfig,
    mut carrier: Carrier,
    open: &StreamOpen,
    local: &str,
    proxy: Option<ProxyProtocol>,
) -> Option<(u64, u64)> {
    if open.kind != StreamKind::Tcp {
        warn!(target = %local, "a datagram stream for a TCP tunnel; closed");
        return None;
    }
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
    match relay(&mut target, &mut carrier).await {
        Ok(r) => {
            let (to_visitor, to_target) = (r.to_carrier, r.from_carrier);
            debug!(visitor = ?open.visitor, to_visitor, to_target, path = %r.path, "stream closed");
            Some((to_target, to_visitor))
        }
        Err(e) => {
            debug!(visitor = ?open.visitor, "stream ended: {e}");
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::early_hellos;
    use burrow_proto::caps;
    use std::sync::atomic::Ordering;

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
