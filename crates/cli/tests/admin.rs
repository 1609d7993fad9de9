//! End-to-end: the admin API of a real `burrow server`, read with curl.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::targets::{assert_echo, echo_target};
use common::{Client, Server, TestDir, bounded, ports};

/// `curl -sS` with `args`; returns (status, body).
async fn curl(args: &[&str]) -> (u16, String) {
    let out = tokio::process::Command::new("curl")
        .args(["-sS", "--max-time", "20", "-w", "\n%{http_code}"])
        .args(args)
        .kill_on_drop(true)
        .output()
        .await
        .unwrap_or_else(|e| panic!("curl is required for this test (CI installs it): {e}"));
    assert!(
        out.status.success(),
        "curl failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, status) = text.rsplit_once('\n').unwrap();
    (status.parse().unwrap(), body.to_owned())
}

#[tokio::test(flavor = "multi_thread")]
async fn the_admin_api_reports_and_disconnects_clients() {
    bounded(60, async {
        let dir = TestDir::new("admin");
        let token_file = dir.write("admin.token", "adm1n\n");
        let block = ports(2).arg();
        let server = Server::start(
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
        let line = server
            .proc
            .wait_stdout("`admin listening on`", |l| {
                l.starts_with("admin listening on ")
            })
            .await;
        let base = format!(
            "http://{}",
            line.trim_start_matches("admin listening on ").trim()
        );
        let echo = echo_target().await;
        let client = Client::start_tcp(&dir, &server, echo, "t", &["--name", "alice"]).await;
        assert_echo(client.port, b"counted").await;
        let auth = "Authorization: Bearer adm1n";

        assert_eq!(curl(&[&format!("{base}/health")]).await.0, 200);
        assert_eq!(curl(&[&format!("{base}/clients")]).await.0, 401);
        let (status, body) = curl(&["-H", auth, &format!("{base}/clients")]).await;
        assert_eq!(status, 200, "{body}");
        let clients: serde_json::Value = serde_json::from_str(&body).unwrap();
        let alice = &clients[0];
        assert_eq!(alice["identity"], "alice");
        assert_eq!(alice["ports"][0]["port"], client.port);
        let id = alice["id"].as_str().unwrap().to_owned();

        let (_, metrics) = curl(&["-H", auth, &format!("{base}/metrics")]).await;
        assert!(
            metrics.lines().any(|l| l == "burrow_sessions 1"),
            "{metrics}"
        );
        let streams = metrics
            .lines()
            .find_map(|l| l.strip_prefix("burrow_streams_total "))
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap();
        assert!(streams >= 1.0, "{metrics}");

        let url = format!("{base}/clients/{id}?leases=release");
        let (status, body) = curl(&["-X", "DELETE", "-H", auth, &url]).await;
        assert_eq!(status, 200, "{body}");
        server
            .proc
            .wait_stderr("the operator's disconnect", |l| {
                l.contains("session closed by the operator")
            })
            .await;
        // The client is told, and comes back on its own as a new session.
        client
            .proc
            .wait_stderr("the client reconnecting", |l| l.contains("reconnected"))
            .await;
    })
    .await
}
