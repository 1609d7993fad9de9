//! End-to-end: choosing among carriers. (The core tunnel tests run over every carrier in
//! tunnel.rs.)
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::carriers::Carrier;
use common::targets::{assert_echo, echo_target};
use common::{Client, Server, TestDir, bounded, curl, ports};
use std::time::Duration;

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
        // Waited for rather than read: stderr is read apart from stdout, whose ready line came
        // after these.
        client
            .proc
            .wait_stderr("the client saying QUIC failed", |l| {
                l.contains("carrier quic failed") && l.contains("trying the next one")
            })
            .await;
        client
            .proc
            .wait_stderr("the session over the next carrier in the list, mux", |l| {
                l.contains("session established") && l.contains("carrier=\"mux\"")
            })
            .await;
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

#[tokio::test(flavor = "multi_thread")]
async fn a_quic_client_reconnects_with_its_preface_in_0rtt() {
    bounded(90, async {
        let dir = TestDir::new("quic-0rtt");
        let token_file = dir.write("admin.token", "adm1n\n");
        let block = ports(4).arg();
        let admin = [
            "--token",
            "t",
            "--ports",
            &block,
            "--admin-listen",
            "127.0.0.1:0",
            "--admin-token-file",
            &token_file,
        ];
        let mut deployment = Carrier::Quic.deploy(&dir, &admin).await;
        let echo = echo_target().await;
        let client = deployment
            .client_tcp(&dir, echo, &["--name", "alice"])
            .await;
        assert_echo(client.port, b"first session").await;
        let established = |l: &str| l.contains("session established");
        let first = client
            .proc
            .wait_stderr("the first session", established)
            .await;
        assert!(
            first.contains("carrier=\"quic\"") && first.contains("zero_rtt=false"),
            "a first connection has no session to resume: {first}"
        );

        // The operator drops the session; the server keeps running, and remembers the TLS
        // session the client will resume.
        let base = deployment.server.admin_base().await;
        let auth = "Authorization: Bearer adm1n";
        let (status, body) = curl(&["-H", auth, &format!("{base}/clients")]).await;
        assert_eq!(status, 200, "{body}");
        let clients: serde_json::Value = serde_json::from_str(&body).unwrap();
        let id = clients[0]["id"].as_str().unwrap().to_owned();
        let url = format!("{base}/clients/{id}");
        let (status, body) = curl(&["-X", "DELETE", "-H", auth, &url]).await;
        assert_eq!(status, 200, "{body}");

        let again = client
            .proc
            .wait_stderr("the client reconnecting", |l| {
                l.contains("reconnected: session established")
            })
            .await;
        assert!(
            again.contains("carrier=\"quic\"") && again.contains("zero_rtt=true"),
            "the reconnect resumed and the server took its preface as 0-RTT data: {again}\n{}",
            client.proc.dump()
        );
        let port = client.wait_ready_nth(2, Duration::from_secs(45)).await;
        assert_eq!(port, client.port, "the client got its port back");
        assert_echo(port, b"after a 0-RTT reconnect").await;

        // A restarted server knows no session: no 0-RTT (it refuses the early preface, or the
        // client has no ticket left after failed attempts), and the client gets through anyway.
        deployment.restart(&dir).await;
        let restarted = client
            .proc
            .wait_for_within(
                Duration::from_secs(45),
                "a reconnect to the restarted server",
                |o| {
                    o.stderr
                        .iter()
                        .filter(|l| l.contains("reconnected: session established"))
                        .nth(1)
                        .cloned()
                },
            )
            .await;
        assert!(restarted.contains("zero_rtt=false"), "{restarted}");
        let port = client.wait_ready_nth(3, Duration::from_secs(45)).await;
        assert_echo(port, b"after the restart").await;
    })
    .await
}
