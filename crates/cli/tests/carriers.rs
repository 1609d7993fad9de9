//! End-to-end: choosing among carriers. (The core tunnel tests run over every carrier in
//! tunnel.rs.)
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::targets::{assert_echo, echo_target};
use common::{Client, Server, TestDir, bounded, ports};

#[tokio::test(flavor = "multi_thread")]
async fn a_client_falls_back_to_the_next_carrier_and_says_so() {
    bounded(60, async {
        let dir = TestDir::new("fallback");
        let block = ports(4).arg();
        // No --quic-listen: nothing answers QUIC at the control port's number.
        let server = Server::start(&dir, &["--token", "t", "--ports", &block]).await;
        let echo = echo_target().await;
        let client =
            Client::start_tcp(&dir, &server, echo, "t", &["--carrier", "quic,mux,tcp"]).await;
        assert_echo(client.port, b"over the second carrier").await;
        let log = client.proc.output().stderr;
        assert!(
            log.iter()
                .any(|l| l.contains("carrier quic failed") && l.contains("trying the next one")),
            "the client says QUIC failed\n{}",
            client.proc.dump()
        );
        assert!(
            log.iter()
                .any(|l| l.contains("session established") && l.contains("carrier=\"mux\"")),
            "the session runs over the next carrier in the list, mux\n{}",
            client.proc.dump()
        );
    })
    .await
}

#[tokio::test(flavor = "multi_thread")]
async fn a_wrong_token_ends_the_list_at_the_first_carrier() {
    bounded(60, async {
        let dir = TestDir::new("fallback-fatal");
        let block = ports(4).arg();
        let server = Server::start(&dir, &["--token", "t", "--ports", &block]).await;
        let echo = echo_target().await;
        let args = common::tcp_args(&dir, &server, echo, "wrong", &["--carrier", "mux,tcp"]);
        let mut client = common::Proc::spawn("client", &dir, &args);
        let stderr = client.expect_exit_1().await.join("\n");
        assert!(stderr.contains("authentication failed"), "{stderr}");
        assert!(
            !stderr.contains("trying the next one"),
            "the same token would fail on every carrier: {stderr}"
        );
    })
    .await
}

#[tokio::test(flavor = "multi_thread")]
async fn a_bad_carrier_list_is_refused_with_its_flag() {
    let dir = TestDir::new("bad-carrier");
    for (list, says) in [
        ("udp", "unknown carrier `udp`"),
        ("tcp,tcp", "carrier tcp is listed twice"),
    ] {
        let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_burrow"))
            .args([
                "tcp",
                "80",
                "--to",
                "127.0.0.1:1",
                "--token",
                "t",
                "--carrier",
                list,
            ])
            .current_dir(dir.path())
            .output()
            .await
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{stderr}");
        assert!(stderr.contains(says), "{list}: {stderr}");
    }
}
