//! Public listeners and the visitors they accept.
//!
//! A tunnel's listener lives as long as its port is in use or leased. Each visitor gets its own
//! task: it finds the session currently serving the tunnel (waiting while a lease is open), takes
//! an idle data connection from the session's pool, sends the stream header, and relays.

use crate::Shared;
use crate::metrics::{OpenStream, TunnelStats, VisitorKind};
use crate::registry::{Opened, Route, SessionHandle};
use crate::spans;
use burrow_net::{relay, relay_reusable, tune_endpoint, write_frame};
use burrow_proto::msg::{Protocol, Refusal, StreamKind, StreamOpen, Target};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{Instrument, debug, info, warn};

/// Binds a public port on the configured address.
pub(crate) fn bind(shared: &Shared, port: u16) -> std::io::Result<TcpListener> {
    burrow_net::listen((shared.config().public_bind, port).into())
}

/// Explains a bind failure to the client.
pub(crate) fn bind_refusal(port: u16, err: &std::io::Error) -> Refusal {
    match err.kind() {
        std::io::ErrorKind::AddrInUse => Refusal::PortInUse(port),
        _ => Refusal::Invalid(format!("the server cannot listen on port {port}: {err}")),
    }
}

/// Registers a bound listener and starts accepting visitors on it.
pub(crate) fn publish(shared: &Arc<Shared>, listener: TcpListener, port: u16, route: Route) {
    let closed = shared.shutdown.child_token();
    let (routes, stats) = shared
        .registry
        .publish((Protocol::Tcp, port), route, closed.clone());
    let span = tracing::info_span!(parent: None, "tunnel", port);
    shared
        .tracker
        .spawn(accept_loop(shared.clone(), listener, routes, stats, closed).instrument(span));
}

async fn accept_loop(
    shared: Arc<Shared>,
    listener: TcpListener,
    routes: watch::Receiver<Route>,
    stats: Arc<TunnelStats>,
    closed: CancellationToken,
) {
    let tuned = burrow_net::tune_listener(&listener, false);
    loop {
        let accepted = tokio::select! {
            _ = closed.cancelled() => {
                // Closed before it is logged, so whoever reads the line finds the port closed.
                drop(listener);
                return debug!("listener closed");
            }
            accepted = listener.accept() => accepted,
        };
        match accepted {
            Ok((stream, peer)) => {
                let stream_id = shared.next_stream.fetch_add(1, Ordering::Relaxed);
                let span = spans::stream(stream_id, peer);
                let visitor = Visitor {
                    peer,
                    stream: stream_id,
                    stats: stats.clone(),
                    tuned,
                };
                shared
                    .tracker
                    .spawn(visit(shared.clone(), stream, visitor, routes.clone()).instrument(span));
            }
            // Out of descriptors and the like: pause instead of spinning.
            Err(e) => {
                warn!("accept failed: {e}");
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            }
        }
    }
}

/// A visitor of a TCP tunnel, as its task knows it.
struct Visitor {
    peer: SocketAddr,
    stream: u64,
    stats: Arc<TunnelStats>,
    /// Whether the socket has its options from the listener already.
    tuned: bool,
}

/// Serves one visitor from accept to close.
async fn visit(
    shared: Arc<Shared>,
    mut socket: TcpStream,
    visitor: Visitor,
    mut routes: watch::Receiver<Route>,
) {
    if !visitor.tuned {
        let _ = tune_endpoint(&socket);
    }
    let arrived = std::time::Instant::now();
    let deadline = Instant::now() + shared.config().pool_wait;
    let Some((session, tunnel, (mut carrier, opened))) =
        find_carrier(&mut routes, Some(deadline)).await
    else {
        visitor.stats.error();
        return warn!(
            "visitor closed: no data connection within {:?}",
            shared.config().pool_wait
        );
    };
    spans::adopt(&tracing::Span::current(), &session, tunnel);
    // A reusable stream's connection goes back to the pool after it.
    let reusable = session.reusable_stream(opened, &carrier);
    let open = StreamOpen {
        stream: visitor.stream,
        kind: if reusable {
            StreamKind::TcpReusable
        } else {
            StreamKind::Tcp
        },
        target: Target::Tunnel(tunnel),
        visitor: Some(visitor.peer),
    };
    if let Err(e) = write_frame(&mut carrier, &open).await {
        visitor.stats.error();
        return warn!(session = %format_args!("{:016x}", session.id), "visitor closed: data connection failed: {e}");
    }
    shared
        .metrics
        .stream_opened(VisitorKind::Tcp, opened, arrived.elapsed());
    let open = OpenStream::new(&shared.active_streams, &session.streams, &visitor.stats);
    debug!(%opened, "stream open");
    let result = if reusable {
        relay_reusable(&mut socket, &mut carrier).await
    } else {
        relay(&mut socket, &mut carrier).await
    };
    drop(open);
    match result {
        Ok(r) => {
            visitor.stats.add_bytes(r.to_carrier, r.from_carrier);
            debug!(up = r.to_carrier, down = r.from_carrier, path = %r.path, %opened, "stream closed");
            // Only a reusable stream that kept to its chunks both ways can leave its
            // connection at a chunk boundary. The visitor is done with: close its socket
            // before waiting for the client's release.
            if r.path == burrow_net::relay::Path::Chunked {
                drop(socket);
                crate::pool::reuse(&session.pool, carrier).await;
            }
        }
        Err(e) => debug!("stream ended: {e}"),
    }
}

/// Waits (until `deadline`, or for as long as it takes) for a session to serve the tunnel and
/// for a stream toward its client (see [`SessionHandle::take_data`]); follows the route when the session changes meanwhile
/// (a client reconnecting within its lease).
pub(crate) async fn find_carrier(
    routes: &mut watch::Receiver<Route>,
    deadline: Option<Instant>,
) -> Option<(Arc<SessionHandle>, u32, (burrow_net::Carrier, Opened))> {
    let expired = async {
        match deadline {
            Some(d) => tokio::time::sleep_until(d).await,
            None => std::future::pending().await,
        }
    };
    tokio::pin!(expired);
    loop {
        let route = routes.borrow_and_update().clone();
        let Some((session, tunnel)) = route.filter(|(s, _)| !s.closed.is_cancelled()) else {
            tokio::select! {
                changed = routes.changed() => changed.ok()?,
                _ = &mut expired => return None,
            }
            continue;
        };
        tokio::select! {
            carrier = session.take_data() => return Some((session.clone(), tunnel, carrier)),
            _ = session.closed.cancelled() => info!("session ended while a visitor waited"),
            _ = &mut expired => return None,
        }
    }
}
