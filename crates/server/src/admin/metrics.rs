//! `GET /metrics`: the recorded events (see [`crate::metrics`]) and the families read from the
//! registry at scrape time, as OpenMetrics text.

use crate::Shared;
use crate::metrics::TunnelStats;
use crate::ports::Hold;
use burrow_proto::msg::Protocol;
use bytes::Bytes;
use http::{HeaderValue, Response, header};
use http_body_util::Full;
use prometheus_client::metrics::{counter::Counter, family::Family, gauge::Gauge};
use prometheus_client::registry::Registry;
use std::sync::atomic::Ordering;

/// `GET /metrics`: Prometheus (OpenMetrics) text. No label carries a visitor or client
/// address; tunnels are labelled by their public port or HTTP name and identity.
pub(super) fn metrics(shared: &Shared) -> Response<Full<Bytes>> {
    let live = live_metrics(shared);
    let mut response = Response::new(Full::new(Bytes::from(shared.metrics.render(&live))));
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/openmetrics-text; version=1.0.0; charset=utf-8"),
    );
    response
}

/// Labels of one series, built at scrape time.
type Labels = Vec<(&'static str, String)>;

/// The families read from the registry at scrape time: sessions, ports, names, streams and
/// every tunnel's traffic.
fn live_metrics(shared: &Shared) -> Registry {
    let sessions = shared.registry.sessions();
    let (ports, names) = shared.registry.tunnels();
    let mut registry = Registry::default();
    let gauge = |registry: &mut Registry, name: &str, help: &str, samples: &[(Labels, i64)]| {
        if let [(labels, value)] = samples
            && labels.is_empty()
        {
            let gauge = Gauge::<i64>::default();
            gauge.set(*value);
            return registry.register(name, help, gauge);
        }
        let family = Family::<Labels, Gauge>::default();
        for (labels, value) in samples {
            family.get_or_create(labels).set(*value);
        }
        registry.register(name, help, family);
    };
    let count = |n: usize| i64::try_from(n).unwrap_or(i64::MAX);
    let in_use = ports
        .iter()
        .filter(|p| matches!(p.hold, Hold::InUse { .. }))
        .count();
    let members: Vec<_> = names.iter().flat_map(|n| &n.members).collect();
    let unhealthy = members.iter().filter(|m| !m.healthy).count();
    let free = |p: Protocol| count(shared.registry.free_ports(p));
    gauge(
        &mut registry,
        "burrow_sessions",
        "Client sessions connected",
        &[(vec![], count(sessions.len()))],
    );
    let pooled = sessions.iter().map(|s| s.pool.len()).sum();
    gauge(
        &mut registry,
        "burrow_pooled_connections",
        "Idle data connections waiting for visitors in the sessions' pools",
        &[(vec![], count(pooled))],
    );
    gauge(
        &mut registry,
        "burrow_public_ports",
        "Public ports by state",
        &[
            (vec![("state", "in_use".into())], count(in_use)),
            (
                vec![("state", "leased".into())],
                count(ports.len() - in_use),
            ),
        ],
    );
    gauge(
        &mut registry,
        "burrow_free_ports",
        "Free ports of the public range, per protocol",
        &[
            (vec![("protocol", "tcp".into())], free(Protocol::Tcp)),
            (vec![("protocol", "udp".into())], free(Protocol::Udp)),
        ],
    );
    gauge(
        &mut registry,
        "burrow_http_names",
        "Names on the HTTP edge (in use or leased)",
        &[(vec![], count(names.len()))],
    );
    gauge(
        &mut registry,
        "burrow_http_members",
        "HTTP tunnels serving names, by health",
        &[
            (
                vec![("healthy", "true".into())],
                count(members.len() - unhealthy),
            ),
            (vec![("healthy", "false".into())], count(unhealthy)),
        ],
    );
    let active = shared.active_streams.load(Ordering::Relaxed);
    gauge(
        &mut registry,
        "burrow_streams_active",
        "Visitor streams open now",
        &[(vec![], count(active))],
    );
    gauge(
        &mut registry,
        "burrow_banned_addresses",
        "Addresses (IPv6: /64 networks) banned from the control port now",
        &[(vec![], count(super::bans::count(shared)))],
    );
    let total = Counter::<u64>::default();
    total.inc_by(shared.next_stream.load(Ordering::Relaxed).saturating_sub(1));
    registry.register(
        "burrow_streams",
        "Visitor streams opened since start",
        total,
    );
    let tunnels = ports
        .iter()
        .filter_map(|p| {
            let labels = vec![
                ("tunnel", format!("{}/{}", p.endpoint.0, p.endpoint.1)),
                ("identity", p.identity.clone()),
            ];
            Some((labels, p.endpoint.0 == Protocol::Udp, p.stats.clone()?))
        })
        .chain(names.iter().map(|n| {
            (
                vec![
                    ("tunnel", format!("http/{}", n.name)),
                    ("identity", n.owner.clone()),
                ],
                false,
                n.stats.clone(),
            )
        }));
    tunnel_metrics(&mut registry, tunnels);
    registry
}

/// Per-tunnel families: bytes by direction, streams, errors and (UDP tunnels) dropped
/// datagrams and datagrams carried in QUIC DATAGRAM frames.
fn tunnel_metrics(
    registry: &mut Registry,
    tunnels: impl Iterator<Item = (Labels, bool, std::sync::Arc<TunnelStats>)>,
) {
    let bytes = Family::<Labels, Counter>::default();
    let streams = Family::<Labels, Counter>::default();
    let active = Family::<Labels, Gauge>::default();
    let errors = Family::<Labels, Counter>::default();
    let dropped = Family::<Labels, Counter>::default();
    let quic = Family::<Labels, Counter>::default();
    let get = |c: &std::sync::atomic::AtomicU64| c.load(Ordering::Relaxed);
    for (labels, datagrams, stats) in tunnels {
        let with = |key: &'static str, value: &str| {
            let mut l = labels.clone();
            l.push((key, value.to_owned()));
            l
        };
        bytes
            .get_or_create(&with("direction", "in"))
            .inc_by(get(&stats.bytes_in));
        bytes
            .get_or_create(&with("direction", "out"))
            .inc_by(get(&stats.bytes_out));
        streams
            .get_or_create(&labels)
            .inc_by(get(&stats.streams_total));
        let open = stats.streams_active.load(Ordering::Relaxed);
        active
            .get_or_create(&labels)
            .set(i64::try_from(open).unwrap_or(i64::MAX));
        errors.get_or_create(&labels).inc_by(get(&stats.errors));
        if !datagrams {
            continue;
        }
        let d = &stats.datagrams;
        dropped
            .get_or_create(&with("reason", "queue_full"))
            .inc_by(get(&d.dropped_full));
        dropped
            .get_or_create(&with("reason", "no_flow"))
            .inc_by(get(&d.dropped_flow));
        quic.get_or_create(&with("direction", "in"))
            .inc_by(get(&d.quic_sent));
        quic.get_or_create(&with("direction", "out"))
            .inc_by(get(&d.quic_received));
    }
    registry.register(
        "burrow_tunnel_bytes",
        "Bytes through a tunnel: in (toward the client's target) and out (toward visitors)",
        bytes,
    );
    registry.register(
        "burrow_tunnel_streams",
        "Streams a tunnel opened (UDP: flows)",
        streams,
    );
    registry.register(
        "burrow_tunnel_streams_active",
        "Streams of a tunnel open now (UDP: flows)",
        active,
    );
    registry.register(
        "burrow_tunnel_errors",
        "Visitors a tunnel could not serve",
        errors,
    );
    registry.register(
        "burrow_tunnel_quic_datagrams",
        "Datagrams of a UDP tunnel carried in QUIC DATAGRAM frames rather than on its stream: in (toward the client's target) and out (toward visitors)",
        quic,
    );
    registry.register("burrow_datagrams_dropped", "Datagrams a UDP tunnel dropped: carrier queue full, or no flow (unknown, expired, over the cap)", dropped);
}
