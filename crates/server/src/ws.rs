//! The WebSocket carrier's listener: an HTTP upgrade at the configured path, then burrow's TLS
//! (unless plain) and a multiplexed link inside the WebSocket (see [`crate::link`]).
//!
//! The listener speaks plain HTTP: it sits behind a reverse proxy, an ingress or a CDN that
//! terminates the outer TLS (or is reached with `ws://` directly). Either way the session is
//! private and the server verified, because burrow's own TLS runs inside the WebSocket.

use crate::handshake::{self, Links, Verdict};
use crate::{Shared, Transport, Unproven, accept, hung_up, link, metrics, tls_failure};
use burrow_net::tune_carrier;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tracing::{Instrument, debug, warn};

/// Accepts WebSocket connections until shutdown, each handed to its own task at once.
pub(crate) fn spawn(shared: &Arc<Shared>, listener: tokio::net::TcpListener) {
    let shared = shared.clone();
    tokio::spawn(async move {
        while let Some((tcp, peer)) = accept(&listener, &shared.shutdown).await {
            // Behind a trusted proxy, bans apply to the client it names, once the request is in.
            let via_proxy = trusts(&shared, peer.ip());
            if !via_proxy && shared.refuse_banned(peer) {
                continue;
            }
            let Some(permit) = shared.handshake_permit() else {
                warn!(%peer, "WebSocket connection dropped: too many handshakes in progress");
                continue;
            };
            let span = tracing::debug_span!("conn", %peer, carrier = "ws");
            let (ours, tracker) = (shared.clone(), shared.tracker.clone());
            let task = async move {
                let shared = ours;
                let deadline = shared.config().handshake_timeout;
                let unproven = crate::Unproven::new(permit);
                let until = unproven.deadline(&shared);
                // Who the connection is: its TCP peer, or the client a trusted proxy names.
                let mut client = None;
                let opening = open(&shared, tcp, peer, &mut client, unproven);
                let opened = tokio::time::timeout_at(until, opening).await;
                let who = client.unwrap_or(peer);
                let failed = |why| {
                    // A trusted proxy's failures (its own, or a hop's it names) are counted, never
                    // held against it.
                    if trusts(&shared, who.ip()) {
                        shared.metrics.auth_failure(why)
                    } else {
                        shared.handshake_failed(who, why)
                    }
                };
                match opened {
                    Ok(Ok(Some(link))) => link.await,
                    Ok(Ok(None)) => {
                        debug!(client = %who, "the peer closed the connection during the handshake")
                    }
                    Ok(Err(why)) if is_banned(&why) => {
                        debug!(client = %who, "WebSocket refused: the address is banned")
                    }
                    Ok(Err(why)) => {
                        failed(failure(&why));
                        warn!(client = %who, "WebSocket connection refused: {why:#}");
                    }
                    Err(_) => {
                        failed(metrics::AuthFailure::Timeout);
                        warn!(client = %who, "WebSocket connection closed: handshake not finished within {deadline:?}");
                    }
                }
            };
            tracker.spawn(task.instrument(span));
        }
    });
}

/// What a finished WebSocket handshake hands on: the link, ready to serve.
type Link = std::pin::Pin<Box<dyn Future<Output = ()> + Send>>;

/// True when `ip` is one of the proxies whose `X-Forwarded-For` is believed (an IPv4 peer of a
/// dual-stack listener, `::ffff:a.b.c.d`, as its IPv4 address).
fn trusts(shared: &Shared, ip: IpAddr) -> bool {
    let ip = ip.to_canonical();
    (shared.config().ws_trusted_proxies.iter()).any(|net| net.contains(&ip))
}

/// The client a connection from `peer` stands for. From a trusted proxy, that is the
/// rightmost `X-Forwarded-For` entry that is not itself a trusted proxy (each proxy appends
/// the address it was reached from, so entries to the left of the first untrusted one are
/// whatever the client chose to send). `None` when the chain has no usable entry: the
/// connection then stays the proxy's. The port of such a client is unknown and shown as 0.
fn client_of(
    peer: SocketAddr,
    forwarded_for: &[Option<IpAddr>],
    trusted: impl Fn(IpAddr) -> bool,
) -> Option<SocketAddr> {
    if !trusted(peer.ip()) {
        return Some(peer);
    }
    let mut nearest = None;
    for entry in forwarded_for.iter().rev() {
        let Some(ip) = *entry else { break };
        nearest = Some(SocketAddr::new(ip, 0));
        if !trusted(ip) {
            break;
        }
    }
    nearest
}

/// True when the upgrade was refused by [`open`]'s admission check, which refuses only a
/// banned client.
fn is_banned(why: &anyhow::Error) -> bool {
    matches!(
        why.downcast_ref(),
        Some(burrow_net::ws::WsError::Forbidden(_))
    )
}

/// The upgrade, TLS unless plain, and the link's preface; `None` when the peer hung up.
/// `client` is set as soon as the request says who the connection is.
async fn open(
    shared: &Arc<Shared>,
    tcp: TcpStream,
    peer: SocketAddr,
    client: &mut Option<SocketAddr>,
    unproven: Unproven,
) -> anyhow::Result<Option<Link>> {
    let _ = tune_carrier(&tcp);
    let path = shared.config().ws_path.clone();
    let admit = |forwarded_for: &[Option<IpAddr>]| {
        let who = client_of(peer, forwarded_for, |ip| trusts(shared, ip));
        *client = who;
        match who {
            Some(who) if who != peer && shared.refuse_banned(who) => {
                Err("the address is banned after failed logins".to_owned())
            }
            _ => Ok(()),
        }
    };
    let io = burrow_net::ws::upgrade(tcp, &path, admit).await?.io;
    if let Some(who) = client.filter(|who| *who != peer) {
        debug!(client = %who, "WebSocket through a trusted proxy");
    }
    let peer = client.unwrap_or(peer);
    match &shared.config().transport {
        Transport::Plain => prefaced(shared, io, peer, unproven).await,
        Transport::Tls(tls) => {
            let acceptor = burrow_net::tls::tokio_rustls::TlsAcceptor::from(tls.clone());
            let io = acceptor.accept(io).await.map_err(tls_failure)?;
            prefaced(shared, io, peer, unproven).await
        }
    }
}

/// Reads the link preface on a secured WebSocket: only a multiplexed link may ride one.
async fn prefaced<S>(
    shared: &Arc<Shared>,
    mut io: S,
    peer: SocketAddr,
    unproven: Unproven,
) -> anyhow::Result<Option<Link>>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    match handshake::accept(&mut io, &shared.registry, Links::Required).await {
        Ok(Verdict::Link) => Ok(Some(link::serve(shared.clone(), io, "ws", peer, unproven))),
        Ok(_) => anyhow::bail!("a WebSocket carries only multiplexed links"),
        Err(handshake::Failure::Io(e)) if hung_up(&e) => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// Why a WebSocket handshake failed, as the metric counts it.
fn failure(why: &anyhow::Error) -> metrics::AuthFailure {
    if why.downcast_ref::<burrow_net::ws::WsError>().is_some() {
        metrics::AuthFailure::NotBurrow
    } else {
        crate::failure_reason(why)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn ip(s: &str) -> Option<IpAddr> {
        Some(s.parse().unwrap())
    }

    #[test]
    fn a_trusted_proxy_names_the_client_and_nobody_else_does() {
        let proxy: SocketAddr = "10.0.0.1:50000".parse().unwrap();
        let cdn = ip("10.9.0.1");
        // Trusted: 10.0.0.0/8 (the proxy and a CDN edge in front of it).
        let trusted = |ip: IpAddr| matches!(ip, IpAddr::V4(v4) if v4.octets()[0] == 10);
        let at = |s: &str| Some(SocketAddr::new(ip(s).unwrap(), 0));

        // Not from a trusted proxy: the header is ignored.
        let stranger: SocketAddr = "198.51.100.9:4000".parse().unwrap();
        assert_eq!(
            client_of(stranger, &[ip("203.0.113.7")], trusted),
            Some(stranger)
        );
        // Through the proxy: the entry it added.
        assert_eq!(
            client_of(proxy, &[ip("203.0.113.7")], trusted),
            at("203.0.113.7")
        );
        // A client that forges entries gets only its own address believed.
        assert_eq!(
            client_of(proxy, &[ip("192.0.2.1"), ip("203.0.113.7")], trusted),
            at("203.0.113.7")
        );
        // Through a CDN edge and the proxy: trusted hops are skipped.
        assert_eq!(
            client_of(proxy, &[ip("203.0.113.7"), cdn], trusted),
            at("203.0.113.7")
        );
        // Garbage before an untrusted entry does not matter; garbage reached through trusted
        // hops stops at the nearest hop.
        assert_eq!(
            client_of(proxy, &[None, ip("203.0.113.7")], trusted),
            at("203.0.113.7")
        );
        assert_eq!(client_of(proxy, &[None, cdn], trusted), at("10.9.0.1"));
        // No header, or only garbage: the connection stays the proxy's.
        assert_eq!(client_of(proxy, &[], trusted), None);
        assert_eq!(client_of(proxy, &[None], trusted), None);
    }
}
