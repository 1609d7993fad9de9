//! End-to-end: at the flow cap, a new visitor that arrives right after the server expired its
//! full table is served. Client and server expire flows on their own timers, so the client's
//! table may still be full when the server opens the new flow; the client must make room. And
//! the server's cap on one session's flows, over all its UDP tunnels.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::proc::Proc;
use common::udp::{Visitor, udp_echo_target, wait_datagrams_up};
use common::{Client, Server, TestDir, bounded, ports, ready_ports};
use std::time::Duration;

#[tokio::test(flavor = "multi_thread")]
async fn a_new_visitor_after_the_server_expired_a_full_table_is_served() {
    bounded(120, async {
        let dir = TestDir::new("udp-cap-after-expiry");
        let echo = udp_echo_target().await;
        let block = ports(4).arg();
        let server = Server::start(&dir, &["--token", "t", "--ports", &block]).await;
        let extra = ["--max-flows", "5", "--idle-timeout", "1s"];
        let client = Client::start_udp(&dir, &server, echo, "t", &extra).await;
        wait_datagrams_up(&server, client.port).await;
        let mut lost = 0;
        for round in 0..10u8 {
            let mut full = Vec::new();
            for i in 0..5u8 {
                let mut v = Visitor::new(client.port).await;
                v.echo(&[round, i], 3, Duration::from_secs(1)).await;
                full.push(v);
            }
            // The server forgets the five flows (in one sweep or several): it has room again.
            let before = 6 * usize::from(round);
            wait_expired(&server, before + 5).await;
            // A new visitor, at once: one datagram, and a generous wait for its echo.
            let v = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
            v.connect(("127.0.0.1", client.port)).await.unwrap();
            v.send(b"new").await.unwrap();
            let mut buf = [0u8; 16];
            if tokio::time::timeout(Duration::from_millis(500), v.recv(&mut buf))
                .await
                .is_err()
            {
                lost += 1;
            }
            // Let that flow expire too before the next round.
            wait_expired(&server, before + 6).await;
        }
        assert_eq!(
            lost,
            0,
            "{lost} of 10 new visitors got no echo although the server had room\n{}",
            client.proc.dump()
        );
    })
    .await
}

/// Waits until the server has expired at least `total` flows in all, summing its
/// `idle flows expired expired=N` lines.
async fn wait_expired(server: &Server, total: usize) {
    server
        .proc
        .wait_for("flows to expire", |o| {
            let sum: usize = o
                .stderr
                .iter()
                .filter(|l| l.contains("idle flows expired"))
                .filter_map(|l| {
                    l.split("expired=")
                        .nth(1)?
                        .split_whitespace()
                        .next()?
                        .parse::<usize>()
                        .ok()
                })
                .sum();
            (sum >= total).then_some(())
        })
        .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_sessions_flows_are_capped_over_all_its_udp_tunnels() {
    bounded(90, async {
        let dir = TestDir::new("udp-session-cap");
        let echo = udp_echo_target().await;
        let server_toml = dir.write(
            "server.toml",
            "token = \"t\"\nmax_udp_flows_per_session = 3\n",
        );
        let block = ports(4).arg();
        let server = Server::start(&dir, &["--config", &server_toml, "--ports", &block]).await;
        let config = format!(
            "server = \"{to}\"\ntoken = \"t\"\nserver_fingerprint = \"{fp}\"\n\
             known_hosts = \"{kh}\"\n\n\
             [[tunnels]]\nname = \"a\"\nprotocol = \"udp\"\nlocal_port = {echo}\nidle_timeout = \"1s\"\n\n\
             [[tunnels]]\nname = \"b\"\nprotocol = \"udp\"\nlocal_port = {echo}\nidle_timeout = \"1s\"\n",
            to = server.to(),
            fp = server.fingerprint.as_deref().unwrap(),
            kh = dir.known_hosts(),
        );
        let config = dir.write("client.toml", &config);
        let args = vec!["client".to_owned(), "--config".to_owned(), config];
        let client = Proc::spawn("client", &dir, &args);
        let public = ready_ports(&client, 2).await;
        let (a, b) = (public["a"], public["b"]);
        wait_datagrams_up(&server, a).await;
        wait_datagrams_up(&server, b).await;
        let second = Duration::from_secs(1);
        // Three flows over the two tunnels: the session's whole allowance.
        for (port, tag) in [(a, 1u8), (a, 2), (b, 3)] {
            Visitor::new(port).await.echo(&[tag], 3, second).await;
        }
        // A fourth visitor is dropped, on either tunnel, and the server says why.
        let late = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
        late.connect(("127.0.0.1", b)).await.unwrap();
        late.send(b"over the cap").await.unwrap();
        server
            .proc
            .wait_stderr("the session's cap", |l| {
                l.contains("the session's flow cap is reached") && l.contains("cap=3")
            })
            .await;
        // Once the three flows expire, the allowance is back and the same visitor is served.
        wait_expired(&server, 3).await;
        let mut again = Visitor::on(late, b).await;
        again.echo(b"after expiry", 5, second).await;
    })
    .await
}
