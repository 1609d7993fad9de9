//! End-to-end: an address that keeps failing its handshake is banned from the control port,
//! even with the right token, until the ban is lifted through the admin API.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::proc::Proc;
use common::targets::{assert_echo, echo_target};
use common::{
    Client, Server, TestDir, any_line_has, bounded, curl, fail_logins, ports, sample, tcp_args,
};

#[tokio::test(flavor = "multi_thread")]
async fn failed_logins_ban_the_address_until_the_operator_lifts_it() {
    bounded(90, async {
        let dir = TestDir::new("bans");
        let block = ports(2).arg();
        let server = Server::start(
            &dir,
            &[
                "--token",
                "right",
                "--ports",
                &block,
                "--ban-after",
                "3",
                "--admin-listen",
                "127.0.0.1:0",
            ],
        )
        .await;
        let base = server.admin_base().await;
        let echo = echo_target().await;

        // Three wrong tokens: each client is refused, and the third failure starts a ban.
        fail_logins(&dir, &server, echo, 3).await;
        server
            .proc
            .wait_stderr("the ban", |l| l.contains("address banned"))
            .await;

        // Now even the right token is refused, before TLS, with an error that says why.
        let args = tcp_args(&dir, &server, echo, "right", &["--exit-on-disconnect"]);
        let mut banned = Proc::spawn("banned", &dir, &args);
        let stderr = banned.expect_exit_1().await;
        assert!(
            any_line_has(
                &stderr,
                &[
                    "closed the connection before the TLS handshake",
                    "is this address banned after failed logins?"
                ]
            ),
            "no clear error for a banned address:\n{}",
            banned.dump()
        );

        let (status, body) = curl(&[&format!("{base}/bans")]).await;
        assert_eq!(status, 200, "{body}");
        let bans: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(bans.as_array().map(Vec::len), Some(1), "{body}");
        assert_eq!(bans[0]["address"], "127.0.0.1", "{body}");
        assert_eq!(bans[0]["failures"], 3, "{body}");
        let (_, text) = curl(&[&format!("{base}/metrics")]).await;
        assert_eq!(sample(&text, "burrow_bans_total"), Some(1.0), "{text}");
        assert_eq!(
            sample(&text, "burrow_banned_addresses"),
            Some(1.0),
            "{text}"
        );
        assert!(
            sample(&text, "burrow_banned_connections_total").is_some_and(|n| n >= 1.0),
            "{text}"
        );
        let failures = "burrow_auth_failures_total{reason=\"bad_credentials\"}";
        assert_eq!(sample(&text, failures), Some(3.0), "{text}");
        // The ban is logged once, not once per refused connection.
        server
            .proc
            .wait_stderr("the ban's line", |l| l.contains("banned"))
            .await;
        let logged = server.proc.output().stderr;
        let ban_lines = logged.iter().filter(|l| l.contains("banned")).count();
        assert_eq!(ban_lines, 1, "{}", server.proc.dump());

        // Lifted by the operator: the right client gets in.
        let url = format!("{base}/bans/127.0.0.1");
        let (status, body) = curl(&["-X", "DELETE", &url]).await;
        assert_eq!(status, 200, "{body}");
        let (status, _) = curl(&["-X", "DELETE", &url]).await;
        assert_eq!(status, 404, "lifted twice");
        let right = Client::start_tcp(&dir, &server, echo, "right", &[]).await;
        assert_echo(right.port, b"welcome back").await;
        let (_, body) = curl(&[&format!("{base}/bans")]).await;
        assert_eq!(body, "[]");
    })
    .await
}
