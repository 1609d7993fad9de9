//! End-to-end: the admin API of a real `burrow server`, read with curl.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::proc::Proc;
use common::targets::{assert_echo, echo_target};
use common::{Client, Server, TestDir, bounded, curl, ports, tcp_args};

/// Every sample of an OpenMetrics text, as read by the Prometheus client library's parser (a
/// real scraper's view: a malformed exposition fails here).
async fn parse_metrics(text: &str) -> Vec<serde_json::Value> {
    use tokio::io::AsyncWriteExt;
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/support/parse_metrics.py"
    );
    let mut child = tokio::process::Command::new("/usr/bin/python3")
        .arg(script)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect(
            "python3 with prometheus_client is required (CI installs python3-prometheus-client)",
        );
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(text.as_bytes()).await.unwrap();
    drop(stdin);
    let out = child.wait_with_output().await.unwrap();
    assert!(
        out.status.success(),
        "the metrics do not parse: {}\n{text}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
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
        let base = server.admin_base().await;
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
        assert_eq!(alice["host"]["os"], std::env::consts::OS, "{body}");
        assert!(alice["host"]["hostname"].is_string(), "{body}");
        let id = alice["id"].as_str().unwrap().to_owned();

        // Bytes of a TCP stream are counted when the server has closed it; the server logs
        // `stream closed` (at debug, on in these tests) after counting them.
        server
            .proc
            .wait_stderr("the server's `stream closed`", |l| {
                l.contains("stream closed")
            })
            .await;
        let (_, text) = curl(&["-H", auth, &format!("{base}/metrics")]).await;
        let metrics = parse_metrics(&text).await;
        let value = |name: &str, labels: &[(&str, &str)]| {
            metrics
                .iter()
                .find(|s| s["name"] == name && labels.iter().all(|(k, v)| s["labels"][*k] == *v))
                .and_then(|s| s["value"].as_f64())
                .unwrap_or_else(|| panic!("no sample {name} {labels:?} in\n{text}"))
        };
        let tunnel = format!("tcp/{}", client.port);
        let ours = [("tunnel", tunnel.as_str()), ("identity", "alice")];
        assert_eq!(value("burrow_sessions", &[]), 1.0);
        assert!(value("burrow_streams_total", &[]) >= 1.0);
        let sent = b"counted".len() as f64;
        let bytes_in = [ours[0], ours[1], ("direction", "in")];
        let bytes_out = [ours[0], ours[1], ("direction", "out")];
        assert_eq!(value("burrow_tunnel_bytes_total", &bytes_in), sent);
        assert_eq!(value("burrow_tunnel_bytes_total", &bytes_out), sent);
        assert_eq!(value("burrow_tunnel_streams_total", &ours), 1.0);
        assert_eq!(value("burrow_tunnel_streams_active", &ours), 0.0);
        // The client's control connection and its pool's data connections.
        let control = [("kind", "control")];
        assert_eq!(value("burrow_handshake_seconds_count", &control), 1.0);
        assert!(value("burrow_handshake_seconds_count", &[("kind", "data")]) >= 1.0);
        assert_eq!(
            value("burrow_stream_open_seconds_count", &[("kind", "tcp")]),
            1.0
        );

        // The same figures per tunnel in the JSON API, and a ping measured now.
        let (_, body) = curl(&["-H", auth, &format!("{base}/tunnels")]).await;
        let tunnels: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(tunnels["ports"][0]["bytes_in"], 7, "{body}");
        let target = format!("127.0.0.1:{echo}");
        assert_eq!(tunnels["ports"][0]["target"], target.as_str(), "{body}");
        assert_eq!(tunnels["ports"][0]["streams_total"], 1, "{body}");
        let ping = format!("{base}/clients/{id}/ping");
        let (status, body) = curl(&["-X", "POST", "-H", auth, &ping]).await;
        assert_eq!(status, 200, "{body}");
        let rtt: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert!(rtt["rtt_ms"].as_f64().is_some_and(|ms| ms >= 0.0), "{body}");

        // A client with the wrong token is counted by reason.
        let args = tcp_args(&dir, &server, echo, "wrong", &[]);
        Proc::spawn("denied", &dir, &args).expect_exit_1().await;
        let (_, text) = curl(&["-H", auth, &format!("{base}/metrics")]).await;
        let failures = parse_metrics(&text).await;
        assert!(
            failures
                .iter()
                .any(|s| s["name"] == "burrow_auth_failures_total"
                    && s["labels"]["reason"] == "bad_credentials"
                    && s["value"] == 1.0),
            "{text}"
        );

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
