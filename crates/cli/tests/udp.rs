//! End-to-end: UDP tunnels between a real `burrow server` and `burrow udp` / `burrow client`.
//!
//! Real UDP programs on the path (socat as an echo, dnsmasq answering dig), datagrams of every
//! size compared byte for byte, ten thousand flows, the flow cap, a flooding flow beside a
//! quiet one, one-way events to a broadcast address, events from the client's side to a
//! server-side sink, and idle expiry. Readiness is the server's `datagram connection up` line
//! (for events toward a sink, the first event that arrives); lost datagrams are resent a bounded
//! number of times.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::data::Pattern;
use common::targets::{assert_echo, echo_target};
use common::udp::{
    MAX_DATAGRAM, Sink, Visitor, bind_any, dig, dnsmasq, free_udp_port, socat_echo,
    udp_echo_target, udp_target, wait_datagrams_up,
};
use common::{
    Client, Proc, Server, TestDir, any_line_has, bounded, one_liner_args, parse_ready, ports,
    ready_ports,
};
use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;
use tokio::sync::{Semaphore, oneshot};
use tokio::task::JoinSet;

/// Wait per try before a visitor resends.
const PER_TRY: Duration = Duration::from_secs(1);
/// Tries per exchange where nothing competes for the path.
const TRIES: u32 = 3;

/// Starts a TLS server with shared token `t` on a fresh block of `n` ports.
async fn server(dir: &TestDir, n: u16) -> Server {
    let block = ports(n).arg();
    Server::start(dir, &["--token", "t", "--ports", &block]).await
}

/// Starts a server and `burrow udp TARGET EXTRA...`, and waits until datagrams flow.
async fn udp_tunnel(dir: &TestDir, target: u16, extra: &[&str]) -> (Server, Client) {
    let server = server(dir, 4).await;
    let client = Client::start_udp(dir, &server, target, "t", extra).await;
    wait_datagrams_up(&server, client.port).await;
    (server, client)
}

#[tokio::test(flavor = "multi_thread")]
async fn real_udp_programs_through_a_client_file() {
    bounded(60, async {
        let dir = TestDir::new("udp-programs");
        let (_socat, socat) = socat_echo().await;
        let (_dnsmasq, dns) = dnsmasq().await;
        let zero = udp_echo_target().await;
        let tcp_echo = echo_target().await;
        let block = ports(4);
        let server = Server::start(&dir, &["--token", "t", "--ports", &block.arg()]).await;
        let shared = block.low;
        // TCP and UDP ports are separate: the socat tunnel and a TCP tunnel share a number.
        let config = format!(
            r#"server = "{to}"
token = "t"
server_fingerprint = "{fp}"
known_hosts = "{kh}"

[[tunnels]]
name = "socat"
protocol = "udp"
local_port = {socat}
remote_port = {shared}

[[tunnels]]
protocol = "udp"
local_port = {zero}
idle_timeout = "30s"
max_flows = 100

[[tunnels]]
name = "dns"
protocol = "udp"
local_port = {dns}

[[tunnels]]
name = "tcp-echo"
local_port = {tcp_echo}
remote_port = {shared}
"#,
            to = server.to(),
            fp = server.fingerprint.as_deref().unwrap(),
            kh = dir.known_hosts(),
        );
        let config = dir.write("client.toml", &config);
        let args = vec!["client".to_owned(), "--config".to_owned(), config];
        let client = Proc::spawn("client", &dir, &args);
        let public = ready_ports(&client, 4).await;
        assert_eq!(public["socat"], shared);
        assert_eq!(public["tcp-echo"], shared);
        let zero = public[&format!("udp-{zero}")];
        for port in [shared, zero, public["dns"]] {
            wait_datagrams_up(&server, port).await;
        }

        // socat: a real UDP server; every size comes back whole.
        let mut visitor = Visitor::new(shared).await;
        for (seed, len) in [(1, 1), (2, 1400), (3, 9000), (4, MAX_DATAGRAM)] {
            visitor
                .echo(&Pattern::bytes(seed, len), TRIES, PER_TRY)
                .await;
        }
        // Zero-length datagrams stay datagrams (socat does not answer them; this echo does).
        let mut visitor = Visitor::new(zero).await;
        for (seed, len) in [(5, 0), (6, 1), (7, 0), (8, MAX_DATAGRAM)] {
            visitor
                .echo(&Pattern::bytes(seed, len), TRIES, PER_TRY)
                .await;
        }
        // A real DNS client and server.
        assert_eq!(dig(public["dns"], "burrow.test").await, "192.0.2.7");
        // The TCP tunnel on the same port number still carries TCP.
        assert_echo(shared, b"tcp beside udp").await;
    })
    .await
}

#[tokio::test(flavor = "multi_thread")]
async fn ten_thousand_flows_each_get_their_own_reply() {
    const FLOWS: usize = 10_000;
    const BATCH: usize = 1_000;
    bounded(90, async {
        let dir = TestDir::new("udp-flows");
        let echo = udp_echo_target().await;
        let (server, client) = udp_tunnel(&dir, echo, &[]).await;
        let public = client.port;
        // Enough in flight to be concurrent, few enough not to overflow loopback's buffers.
        let in_flight = Arc::new(Semaphore::new(200));
        let mut used = HashSet::new();
        for batch in 0..FLOWS / BATCH {
            // A whole batch of sockets is open at once; earlier flows stay alive in burrow.
            let mut visitors = Vec::with_capacity(BATCH);
            while visitors.len() < BATCH {
                let socket = bind_any().await;
                // Each flow is a source port never used before in this test.
                if used.insert(socket.local_addr().unwrap().port()) {
                    visitors.push(Visitor::on(socket, public).await);
                }
            }
            let mut exchanges = JoinSet::new();
            for (i, mut visitor) in visitors.into_iter().enumerate() {
                let permit = in_flight.clone().acquire_owned().await.unwrap();
                let flow = batch * BATCH + i;
                exchanges.spawn(async move {
                    let payload = format!("flow {flow} from port {}", visitor.port());
                    visitor.echo(payload.as_bytes(), 4, PER_TRY).await;
                    drop(permit);
                    visitor
                });
            }
            // Sockets of the batch stay open until every one of them has its reply.
            let done = exchanges.join_all().await;
            assert_eq!(done.len(), BATCH);
        }
        assert_eq!(used.len(), FLOWS);
        let logs = server.proc.output().stderr;
        assert!(
            !any_line_has(&logs, &["flow cap"]),
            "{}",
            server.proc.dump()
        );
    })
    .await
}

#[tokio::test(flavor = "multi_thread")]
async fn the_flow_cap_drops_new_visitors_and_serves_old_ones() {
    bounded(60, async {
        let dir = TestDir::new("udp-cap");
        let echo = udp_echo_target().await;
        let (server, client) = udp_tunnel(&dir, echo, &["--max-flows", "5"]).await;
        let ready = parse_ready(&client.proc.output().stdout[0]);
        assert_eq!(ready.name, format!("udp-{echo}"));
        assert_eq!(ready.local, format!("127.0.0.1:{echo}"));
        let mut first = Vec::new();
        for i in 0..5u8 {
            let mut v = Visitor::new(client.port).await;
            v.echo(&[b'a', i], TRIES, PER_TRY).await;
            first.push(v);
        }
        let mut sixth = Visitor::new(client.port).await;
        for _ in 0..3 {
            sixth.send(b"one too many").await;
        }
        sixth.expect_silence(Duration::from_millis(1500)).await;
        for (i, v) in first.iter_mut().enumerate() {
            v.echo(&[b'b', i as u8], TRIES, PER_TRY).await;
        }
        server
            .proc
            .wait_stderr("`flow cap`", |l| l.contains("flow cap"))
            .await;
    })
    .await
}

#[tokio::test(flavor = "multi_thread")]
async fn a_flooding_flow_does_not_stop_another() {
    bounded(60, async {
        let dir = TestDir::new("udp-flood");
        // The target answers the quiet flow and never the flooding one, whose datagrams it
        // only counts.
        let flooded = Arc::new(AtomicUsize::new(0));
        let count = flooded.clone();
        let target = udp_target(move |d| match d.first() {
            Some(b'B') => Some(d.to_vec()),
            _ => {
                count.fetch_add(1, Ordering::Relaxed);
                None
            }
        })
        .await;
        let (_server, client) = udp_tunnel(&dir, target, &[]).await;
        let quiet_done = Arc::new(AtomicBool::new(false));
        let (started, flooding) = tokio::sync::oneshot::channel();
        let flood = tokio::spawn(flood(client.port, quiet_done.clone(), started));
        flooding.await.unwrap();
        let mut quiet = Visitor::new(client.port).await;
        for i in 0..100u32 {
            let payload = format!("B request {i}");
            // The flood fills the shared queues, so the quiet flow may lose datagrams (they are
            // dropped, not queued); it must still get every answer with a few resends.
            quiet
                .echo(payload.as_bytes(), 20, Duration::from_millis(250))
                .await;
        }
        assert!(
            !flood.is_finished(),
            "the flood ended before the quiet flow"
        );
        quiet_done.store(true, Ordering::Relaxed);
        let sent = flood.await.unwrap();
        assert!(sent >= FLOOD, "{sent}");
        assert!(
            flooded.load(Ordering::Relaxed) > 0,
            "no flood reached the target"
        );
    })
    .await
}

/// Datagrams the flooding flow sends at least.
const FLOOD: usize = 20_000;

/// Floods public port `public` from one visitor: signals `started` after the first thousand
/// datagrams and goes on until it has sent [`FLOOD`] and `quiet_done` is set, so the quiet
/// flow's every exchange happens inside the flood. Returns how many it sent.
async fn flood(public: u16, quiet_done: Arc<AtomicBool>, started: oneshot::Sender<()>) -> usize {
    let flooder = Visitor::new(public).await;
    let datagram = [b'A'; 1200];
    let mut started = Some(started);
    let mut sent = 0;
    loop {
        flooder.send(&datagram).await;
        sent += 1;
        if let Some(started) = started.take_if(|_| sent == 1000) {
            let _ = started.send(());
        }
        // Sending to loopback never waits, so give the other tasks a turn now and then.
        if sent % 64 == 0 {
            tokio::task::yield_now().await;
            if sent >= FLOOD && quiet_done.load(Ordering::Relaxed) {
                return sent;
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn one_way_events_reach_a_broadcast_target_and_nothing_comes_back() {
    bounded(60, async {
        let dir = TestDir::new("udp-one-way");
        // Bound to every address, so a datagram to loopback's broadcast address reaches it.
        let listener = tokio::net::UdpSocket::bind("0.0.0.0:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        // Sending to a broadcast address needs SO_BROADCAST, which burrow always sets.
        let extra = ["--one-way", "--local-host", "127.255.255.255"];
        let (_server, client) = udp_tunnel(&dir, port, &extra).await;
        let ready = parse_ready(&client.proc.output().stdout[0]);
        assert_eq!(ready.local, format!("127.255.255.255:{port}"));
        let mut visitor = Visitor::new(client.port).await;
        let mut buf = vec![0u8; MAX_DATAGRAM];
        for i in 0..5 {
            let event = format!("event {i}");
            let mut heard = None;
            for _ in 0..TRIES {
                visitor.send(event.as_bytes()).await;
                if let Ok(got) = tokio::time::timeout(PER_TRY, listener.recv_from(&mut buf)).await {
                    heard = Some(got.unwrap());
                    break;
                }
            }
            let (n, from) = heard.unwrap_or_else(|| panic!("{event} never reached the listener"));
            assert_eq!(&buf[..n], event.as_bytes());
            // The listener answers; a one-way tunnel must not carry it back.
            listener.send_to(b"a reply", from).await.unwrap();
        }
        visitor.expect_silence(Duration::from_millis(1500)).await;
    })
    .await
}

#[tokio::test(flavor = "multi_thread")]
async fn idle_flows_expire_and_the_visitor_gets_a_new_one() {
    bounded(60, async {
        let dir = TestDir::new("udp-idle");
        let echo = udp_echo_target().await;
        let (server, client) = udp_tunnel(&dir, echo, &["--idle-timeout", "1s"]).await;
        let mut visitor = Visitor::new(client.port).await;
        visitor.echo(b"before", TRIES, PER_TRY).await;
        server
            .proc
            .wait_stderr("`idle flows expired`", |l| l.contains("idle flows expired"))
            .await;
        // The same address again: a new flow on both sides, and the echo comes back.
        visitor.echo(b"after", TRIES, PER_TRY).await;
    })
    .await
}

/// Starts a server with shared token `t` and the UDP sink `--udp-sink SINK`, and a client
/// `burrow udp LOCAL --to-sink NAME`; returns the server, the client and the client's port.
async fn to_sink(dir: &TestDir, sink: &str, name: &str) -> (Server, Proc, u16) {
    let block = ports(1).arg();
    let args = ["--token", "t", "--ports", &block, "--udp-sink", sink];
    let server = Server::start(dir, &args).await;
    let local = free_udp_port();
    let extra = ["--to-sink", name];
    let args = one_liner_args("udp", dir, &server, local, "t", &extra);
    (server, Proc::spawn("client", dir, &args), local)
}

#[tokio::test(flavor = "multi_thread")]
async fn events_heard_by_the_client_reach_the_servers_sink() {
    bounded(60, async {
        let dir = TestDir::new("udp-to-sink");
        let mut sink = Sink::bind().await;
        let named = format!("events={}", sink.addr());
        let (_server, client, local) = to_sink(&dir, &named, "events").await;
        let want = format!("tunnel events ready: 127.0.0.1:{local} -> sink events on 127.0.0.1");
        client.wait_stdout(&want, |l| l == want).await;
        let device = bind_any().await;
        // The client listens from its ready line on: the first event, sent once right after
        // it (before the server has opened the event connection, most likely), waits in the
        // listener's buffer and arrives. Later ones are resent only if loopback drops them.
        for i in 0..=20 {
            let event = format!("event {i}");
            let (tries, per_try) = if i == 0 {
                (1, Duration::from_secs(20))
            } else {
                (TRIES, PER_TRY)
            };
            let heard = sink.hear(event.as_bytes(), tries, per_try, || async {
                device
                    .send_to(event.as_bytes(), ("127.0.0.1", local))
                    .await
                    .unwrap();
            });
            assert!(
                heard.await,
                "{event} never reached the sink\n{}",
                client.dump()
            );
        }
    })
    .await
}

#[tokio::test(flavor = "multi_thread")]
async fn an_unknown_sink_name_is_a_fatal_error() {
    bounded(30, async {
        let dir = TestDir::new("udp-no-sink");
        let (_server, mut client, _) = to_sink(&dir, "events=127.0.0.1:9", "nosuch").await;
        let stderr = client.expect_exit_1().await;
        let words = ["burrow: error:", "no UDP sink named `nosuch`"];
        assert!(any_line_has(&stderr, &words), "{}", client.dump());
    })
    .await
}
