//! End-to-end: the warm pool of a real `burrow server` and `burrow tcp` under bursts, on the
//! pooled carriers (plain TCP and TLS).
//!
//! A burst of 64 visitors held at once grows the pool, so that the next such burst finds an
//! idle data connection for every visitor (none waits for the client to dial one), and the pool
//! shrinks back to `pool_size` once the burst is over. And 5,000 visitors held at once each get
//! their own bytes back, first one by one and then all together, half-close included.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[macro_use]
mod common;

use common::carriers::Carrier;
use common::data::Pattern;
use common::targets::{echo_target, visit};
use common::{Server, TestDir, bounded, curl, ports, sample};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::Barrier;
use tokio::task::JoinSet;

/// Visitors of one burst, all connected at once.
const BURST: usize = 64;
/// The client's default `pool_size`.
const POOL_SIZE: usize = 8;
/// Visitors held at once in the large test, and how many of them connect at a time.
const HELD: usize = 5_000;
const CONNECTING: usize = 100;

#[tokio::test(flavor = "multi_thread")]
async fn a_burst_grows_the_pool_for_the_next_and_it_shrinks_back_tcp() {
    a_burst_grows_the_pool_for_the_next_and_it_shrinks_back(Carrier::Tcp).await
}

#[tokio::test(flavor = "multi_thread")]
async fn a_burst_grows_the_pool_for_the_next_and_it_shrinks_back_tls() {
    a_burst_grows_the_pool_for_the_next_and_it_shrinks_back(Carrier::Tls).await
}

/// Both carriers one after the other: 5,000 held visitors take about 10,000 descriptors in this
/// process (the visitors and the echo target's ends), two such tests at once twice that.
#[tokio::test(flavor = "multi_thread")]
async fn five_thousand_held_visitors_tcp_then_tls() {
    needs_open_files(2 * HELD + 1_000);
    five_thousand_held_visitors(Carrier::Tcp).await;
    five_thousand_held_visitors(Carrier::Tls).await;
}

async fn a_burst_grows_the_pool_for_the_next_and_it_shrinks_back(carrier: Carrier) {
    bounded(150, async {
        let dir = TestDir::new(&format!("pool-burst-{}", carrier.label()));
        let token_file = dir.write("admin.token", "adm1n\n");
        let block = ports(4).arg();
        let deployment = carrier
            .deploy(
                &dir,
                &[
                    "--token",
                    "t",
                    "--ports",
                    &block,
                    "--admin-listen",
                    "127.0.0.1:0",
                    "--admin-token-file",
                    &token_file,
                ],
            )
            .await;
        let server = &deployment.server;
        let metrics = Metrics::of(server).await;
        let echo = echo_target().await;
        let client = deployment.client_tcp(&dir, echo, &[]).await;
        let port = client.port;
        metrics
            .wait_pooled("the client's pool to fill", |n| n == POOL_SIZE)
            .await;

        burst(port, 0).await;
        let first = server.closed_streams(BURST).await;
        let waited = first.iter().filter(|l| l.contains("opened=waited")).count();
        eprintln!("first burst: {waited} of {BURST} visitors waited for a data connection");
        // The pool grows past what the burst needed at once, without another visitor.
        metrics
            .wait_pooled("the pool to grow to the burst", |n| n >= BURST)
            .await;

        burst(port, 1).await;
        let both = server.closed_streams(2 * BURST).await;
        let second = &both[first.len()..];
        for line in second {
            assert!(
                line.contains("opened=pool"),
                "every visitor of the second burst found an idle connection: {line}\n{}",
                server.proc.dump()
            );
        }

        // Extra connections retire after 30 s unused; the server drops them on its next
        // heartbeat tick.
        metrics
            .wait_pooled("the pool to shrink back to pool_size", |n| n == POOL_SIZE)
            .await;
    })
    .await
}

/// `BURST` visitors connect at once; each gets its bytes back, and all stay open until every
/// one has, so the tunnel holds `BURST` streams at the same time. Then all close.
async fn burst(port: u16, round: u64) {
    let all_through = Arc::new(Barrier::new(BURST));
    let mut visitors = JoinSet::new();
    for i in 0..BURST as u64 {
        let all_through = all_through.clone();
        visitors.spawn(async move {
            let seed = round * 1_000 + i;
            let conn = hold(port, seed).await;
            all_through.wait().await;
            close(conn, seed).await;
        });
    }
    while let Some(done) = visitors.join_next().await {
        done.unwrap();
    }
}

async fn five_thousand_held_visitors(carrier: Carrier) {
    bounded(300, async {
        let dir = TestDir::new(&format!("held-{}", carrier.label()));
        let block = ports(4).arg();
        let deployment = carrier
            .deploy(&dir, &["--token", "t", "--ports", &block])
            .await;
        let echo = echo_target().await;
        let client = deployment.client_tcp(&dir, echo, &[]).await;
        let port = client.port;

        let mut held = Vec::with_capacity(HELD);
        let mut connecting = JoinSet::new();
        for seed in 0..HELD as u64 {
            if connecting.len() >= CONNECTING {
                held.push(connecting.join_next().await.unwrap().unwrap());
            }
            connecting.spawn(async move { (seed, hold(port, seed).await) });
        }
        while let Some(done) = connecting.join_next().await {
            held.push(done.unwrap());
        }

        // Every one of them is still open and still carries its own bytes.
        let mut closing = JoinSet::new();
        for (seed, conn) in held {
            if closing.len() >= CONNECTING {
                closing.join_next().await.unwrap().unwrap();
            }
            closing.spawn(close(conn, seed));
        }
        while let Some(done) = closing.join_next().await {
            done.unwrap();
        }
        // And the server saw every one of them end.
        deployment.server.closed_streams(HELD).await;
    })
    .await
}

/// Connects a visitor and checks that its first bytes come back; keeps it open.
async fn hold(port: u16, seed: u64) -> TcpStream {
    let mut conn = visit(port).await;
    let data = Pattern::bytes(seed, 100 + (seed as usize % 13) * 150);
    conn.write_all(&data).await.unwrap();
    let mut back = vec![0; data.len()];
    conn.read_exact(&mut back)
        .await
        .unwrap_or_else(|e| panic!("visitor {seed}: no echo: {e}"));
    assert!(back == data, "visitor {seed}: bytes differ");
    conn
}

/// Sends a visitor's last bytes, closes its write half, and checks that exactly those come
/// back before the end of file (the target closes its side after the visitor's).
async fn close(mut conn: TcpStream, seed: u64) {
    let data = Pattern::bytes(seed + 1_000_000, 64 + seed as usize % 64);
    conn.write_all(&data).await.unwrap();
    conn.shutdown().await.unwrap();
    let mut back = Vec::new();
    conn.read_to_end(&mut back)
        .await
        .unwrap_or_else(|e| panic!("visitor {seed}: no end of file: {e}"));
    assert!(back == data, "visitor {seed}: last bytes differ");
}

/// The server's metrics endpoint.
struct Metrics {
    url: String,
}

impl Metrics {
    async fn of(server: &Server) -> Metrics {
        let url = format!("{}/metrics", server.admin_base().await);
        Metrics { url }
    }

    /// Polls `burrow_pooled_connections` until `ok` accepts it.
    async fn wait_pooled(&self, what: &str, ok: impl Fn(usize) -> bool) {
        let mut seen = Vec::new();
        loop {
            let (status, text) = curl(&["-H", "Authorization: Bearer adm1n", &self.url]).await;
            assert_eq!(status, 200, "{text}");
            let pooled = sample(&text, "burrow_pooled_connections")
                .unwrap_or_else(|| panic!("no burrow_pooled_connections in\n{text}"));
            let pooled = pooled as usize;
            if ok(pooled) {
                return;
            }
            if seen.last() != Some(&pooled) {
                seen.push(pooled);
                eprintln!("waiting for {what}: {seen:?}");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

/// Fails unless this process may open `needed` files: raise the limit (`ulimit -n`) to run it.
fn needs_open_files(needed: usize) {
    let limits = std::fs::read_to_string("/proc/self/limits").unwrap();
    let soft: usize = limits
        .lines()
        .find_map(|l| l.strip_prefix("Max open files"))
        .and_then(|l| l.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(usize::MAX);
    assert!(
        soft >= needed,
        "this test holds {HELD} visitors and needs {needed} open files; the limit is {soft} \
         (raise it with `ulimit -n {needed}`)"
    );
}
