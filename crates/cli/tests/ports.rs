//! End-to-end: which public port a tunnel gets.
//!
//! An identity's allowance, a port another process holds, and a lease that keeps a client's port
//! through a crash while refusing it to other identities.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::targets::{assert_echo, echo_target};
use common::{Client, Proc, Server, TestDir, any_line_has, bounded, ports, tcp_args};

/// A server configuration listing `identities` as `(name, token, ports)`.
fn identities_config(dir: &TestDir, extra: &str, identities: &[(&str, &str, &str)]) -> String {
    let mut toml = format!("{extra}\n");
    for (name, token, ports) in identities {
        toml.push_str(&format!(
            "[[clients]]\nname = \"{name}\"\ntoken = \"{token}\"\nports = \"{ports}\"\n\n"
        ));
    }
    dir.write("server.toml", &toml)
}

#[tokio::test(flavor = "multi_thread")]
async fn port_outside_the_allowance_is_refused() {
    bounded(60, async {
        let dir = TestDir::new("denied");
        let block = ports(3);
        let allowed = block.low.to_string();
        let denied = (block.low + 1).to_string();
        let config = identities_config(&dir, "", &[("alice", "alice-token", &allowed)]);
        let server = Server::start(&dir, &["--config", &config, "--ports", &block.arg()]).await;
        let echo = echo_target().await;

        let ask = ["--name", "alice", "--remote-port", denied.as_str()];
        let mut refused = Proc::spawn(
            "client",
            &dir,
            &tcp_args(&dir, &server, echo, "alice-token", &ask),
        );
        let stderr = refused.expect_exit_1().await;
        assert!(
            any_line_has(&stderr, &["burrow: error:", "not allowed"]),
            "no `not allowed` error:\n{}",
            refused.dump()
        );

        let ask = ["--name", "alice", "--remote-port", allowed.as_str()];
        let granted = Client::start_tcp(&dir, &server, echo, "alice-token", &ask).await;
        assert_eq!(granted.port, block.low);
        assert_echo(granted.port, b"allowed port").await;
    })
    .await
}

#[tokio::test(flavor = "multi_thread")]
async fn port_held_by_another_process_is_refused() {
    bounded(60, async {
        let dir = TestDir::new("in-use");
        let block = ports(3);
        let busy_port = block.low + 1;
        let _holder = std::net::TcpListener::bind(("127.0.0.1", busy_port)).unwrap();
        let server = Server::start(&dir, &["--token", "t", "--ports", &block.arg()]).await;
        let echo = echo_target().await;
        let busy = busy_port.to_string();
        let args = tcp_args(&dir, &server, echo, "t", &["--remote-port", &busy]);
        let mut refused = Proc::spawn("client", &dir, &args);
        let stderr = refused.expect_exit_1().await;
        assert!(
            any_line_has(&stderr, &["burrow: error:", "in use", &busy]),
            "no `in use` error naming port {busy}:\n{}",
            refused.dump()
        );
    })
    .await
}

#[tokio::test(flavor = "multi_thread")]
async fn reconnect_within_the_lease_grace_keeps_the_port() {
    bounded(90, async {
        let dir = TestDir::new("lease");
        let block = ports(4);
        let range = block.arg();
        let config = identities_config(
            &dir,
            "lease_grace = \"30s\"",
            &[
                ("alice", "alice-token", &range),
                ("bob", "bob-token", &range),
            ],
        );
        let server = Server::start(&dir, &["--config", &config, "--ports", &range]).await;
        let echo = echo_target().await;
        let alice_args = tcp_args(&dir, &server, echo, "alice-token", &["--name", "alice"]);

        let mut alice = Client::start(&dir, alice_args.clone()).await;
        let leased = alice.port;
        assert_echo(leased, b"before the crash").await;
        alice.proc.kill9().await;

        // While alice is gone, her port stays hers.
        let port = leased.to_string();
        let bob_args = tcp_args(
            &dir,
            &server,
            echo,
            "bob-token",
            &["--name", "bob", "--remote-port", &port],
        );
        let mut bob = Proc::spawn("bob", &dir, &bob_args);
        let stderr = bob.expect_exit_1().await;
        assert!(
            any_line_has(&stderr, &["burrow: error:", "leased"]),
            "bob was not refused alice's leased port {port}:\n{}",
            bob.dump()
        );

        let alice_again = Client::start(&dir, alice_args).await;
        assert_eq!(
            alice_again.port, leased,
            "alice lost her port across a reconnect"
        );
        assert_echo(alice_again.port, b"after the crash").await;
    })
    .await
}
