//! End-to-end: UDP tunnels over the QUIC carrier. Datagrams that fit one packet ride QUIC
//! DATAGRAM frames, larger ones the tunnel's stream; every size comes back whole, every flow
//! gets its own replies, and the server's metrics show the QUIC path was taken. Events toward a
//! server-side sink take the same paths.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::carriers::Carrier;
use common::data::Pattern;
use common::udp::{MAX_DATAGRAM, Sink, Visitor, bind_any, free_udp_port, udp_echo_target};
use common::{Proc, Server, TestDir, bounded, curl, one_liner_args, ports};
use std::time::Duration;
use tokio::task::JoinSet;

/// Wait per try before a visitor resends.
const PER_TRY: Duration = Duration::from_secs(1);
/// Tries per exchange.
const TRIES: u32 = 4;
/// Flows from distinct source ports at once.
const FLOWS: usize = 200;

/// Waits until the server sends the UDP tunnel on `public`'s datagrams as QUIC datagrams: the
/// client has registered the tunnel's stream with its QUIC link and said so on the stream.
async fn wait_quic_datagrams(server: &Server, public: u16) {
    let port = format!("port={public}");
    server
        .proc
        .wait_stderr("`the client routes QUIC datagrams`", |l| {
            l.contains("the client routes QUIC datagrams") && l.contains(&port)
        })
        .await;
}

/// The value of `name{tunnel=TUNNEL,...,direction=DIRECTION}` in an OpenMetrics text.
fn counter(text: &str, name: &str, tunnel: &str, direction: &str) -> u64 {
    let (tunnel, direction) = (
        format!("tunnel=\"{tunnel}\""),
        format!("direction=\"{direction}\""),
    );
    text.lines()
        .filter(|l| l.starts_with(&format!("{name}{{")))
        .find(|l| l.contains(&tunnel) && l.contains(&direction))
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
        .unwrap_or_else(|| panic!("no {name} for {tunnel} {direction} in\n{text}"))
}

#[tokio::test(flavor = "multi_thread")]
async fn small_datagrams_ride_quic_datagrams_and_large_ones_the_stream() {
    datagrams_over_quic("udp-quic", &[], None).await;
}

/// The same when the client keeps no pool: the tunnel's stream is one the server opened on the
/// QUIC connection, which knows its link, so the datagrams still ride QUIC datagrams.
#[tokio::test(flavor = "multi_thread")]
async fn datagrams_ride_quic_on_a_stream_the_server_opened() {
    datagrams_over_quic(
        "udp-quic-server",
        &["--pool-size", "0"],
        Some("opened=server"),
    )
    .await;
}

/// A UDP tunnel over QUIC whose client runs with `client_args`; its datagram stream must be
/// logged as `opened`, when given. (With a pool, the tunnel may be published before the pool
/// has filled, and then its stream is one the server opened: either is right.)
async fn datagrams_over_quic(label: &str, client_args: &[&str], opened: Option<&str>) {
    bounded(90, async {
        let dir = TestDir::new(label);
        let block = ports(2).arg();
        let args = ["--token", "t", "--ports", &block];
        let deployment = Carrier::Quic
            .deploy(
                &dir,
                &[&args[..], &["--admin-listen", "127.0.0.1:0"]].concat(),
            )
            .await;
        let server = &deployment.server;
        let base = server.admin_base().await;
        let echo = udp_echo_target().await;
        let client = deployment.client_udp(&dir, echo, client_args).await;
        let public = client.port;
        wait_quic_datagrams(server, public).await;
        let up = server
            .proc
            .wait_stderr("`datagram connection up`", |l| {
                l.contains("datagram connection up")
            })
            .await;
        if let Some(opened) = opened {
            assert!(up.contains(opened), "expected {opened}: {up}");
        }

        // One packet holds about 1,200 to 1,450 bytes: 1 byte rides a QUIC datagram, 1,200
        // either way, 9,000 and 65,507 the stream. Each comes back whole.
        let mut visitor = Visitor::new(public).await;
        for (seed, len) in [(1, 1), (2, 1200), (3, 9000), (4, MAX_DATAGRAM), (5, 1)] {
            visitor
                .echo(&Pattern::bytes(seed, len), TRIES, PER_TRY)
                .await;
        }

        // Many flows at once: all sockets are open together, so each has its own source port.
        let mut visitors = Vec::with_capacity(FLOWS);
        for _ in 0..FLOWS {
            visitors.push(Visitor::on(bind_any().await, public).await);
        }
        let mut exchanges = JoinSet::new();
        for (i, mut visitor) in visitors.into_iter().enumerate() {
            exchanges.spawn(async move {
                let payload = format!("flow {i} from port {}", visitor.port());
                visitor.echo(payload.as_bytes(), TRIES, PER_TRY).await;
                visitor
            });
        }
        // Sockets stay open until every flow has its reply.
        assert_eq!(exchanges.join_all().await.len(), FLOWS);

        // Every flow's request and reply fit one packet, so at least one of each per flow rode
        // a QUIC datagram (the stream would leave these counters at zero).
        let (status, text) = curl(&[&format!("{base}/metrics")]).await;
        assert_eq!(status, 200, "{text}");
        let tunnel = format!("udp/{public}");
        let name = "burrow_tunnel_quic_datagrams_total";
        let toward_client = counter(&text, name, &tunnel, "in");
        let toward_visitors = counter(&text, name, &tunnel, "out");
        let least = FLOWS as u64 + 2;
        assert!(toward_client >= least, "{toward_client} in\n{text}");
        assert!(toward_visitors >= least, "{toward_visitors} out\n{text}");
    })
    .await
}

#[tokio::test(flavor = "multi_thread")]
async fn events_of_any_size_reach_a_sink_over_quic() {
    bounded(60, async {
        let dir = TestDir::new("udp-quic-sink");
        let mut sink = Sink::bind().await;
        let named = format!("events={}", sink.addr());
        let block = ports(1).arg();
        let args = ["--token", "t", "--ports", &block, "--udp-sink", &named];
        let deployment = Carrier::Quic.deploy(&dir, &args).await;
        let server = &deployment.server;
        let local = free_udp_port();
        let extra = ["--carrier", "quic", "--to-sink", "events"];
        let args = one_liner_args("udp", &dir, server, local, "t", &extra);
        let client = Proc::spawn("client", &dir, &args);
        // The server registers the stream with its QUIC link before it opens it.
        (server.proc)
            .wait_stderr("`event connection up` with QUIC", |l| {
                l.contains("event connection up") && l.contains("quic=true")
            })
            .await;
        let device = bind_any().await;
        for (seed, len) in [(1, 1), (2, 1000), (3, 9000), (4, MAX_DATAGRAM)] {
            let event = Pattern::bytes(seed, len);
            let heard = sink.hear(&event, TRIES, PER_TRY, || async {
                device.send_to(&event, ("127.0.0.1", local)).await.unwrap();
            });
            assert!(
                heard.await,
                "a {len}-byte event never reached the sink\n{}",
                client.dump()
            );
        }
    })
    .await
}
