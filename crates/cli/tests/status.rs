//! End-to-end: a running client's status, read with `burrow status` and with curl over the
//! client's Unix socket.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::targets::{assert_echo, echo_target};
use common::{Client, Proc, Server, TestDir, WAIT, any_line_has, bounded, ports};
use serde_json::Value;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

/// `curl -sS --unix-socket SOCKET` with `args`; returns (status, body).
async fn curl(socket: &str, args: &[&str]) -> (u16, String) {
    let mut all = vec!["--unix-socket", socket];
    all.extend_from_slice(args);
    common::curl(&all).await
}

/// Runs `burrow status ARGS` to its end; returns its exit code, stdout and stderr.
async fn status(dir: &TestDir, args: &[&str]) -> (i32, String, Vec<String>) {
    let mut full = vec!["status".to_owned()];
    full.extend(args.iter().map(|a| a.to_string()));
    let mut proc = Proc::spawn("status", dir, &full);
    let code = proc.wait_exit(WAIT).await.code().unwrap();
    let out = proc.output();
    (code, out.stdout.join("\n"), out.stderr)
}

#[tokio::test(flavor = "multi_thread")]
async fn status_reports_a_running_client_until_it_stops() {
    bounded(90, async {
        let dir = TestDir::new("status");
        let block = ports(2).arg();
        let server = Server::start(&dir, &["--token", "t", "--ports", &block]).await;
        let echo = echo_target().await;
        let socket = dir.join("client.sock");
        let mut client =
            Client::start_tcp(&dir, &server, echo, "t", &["--status-socket", &socket]).await;
        assert_echo(client.port, b"first visitor").await;
        assert_echo(client.port, b"second visitor").await;
        let mode = std::fs::metadata(&socket).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600, "the status socket is open to others");

        let (code, json, stderr) = status(&dir, &["--socket", &socket, "--json"]).await;
        assert_eq!(code, 0, "{stderr:?}");
        let s: Value = serde_json::from_str(&json).unwrap();
        assert_eq!(s["state"], "connected");
        assert_eq!(s["server"], server.to());
        let session = s["session"].as_str().unwrap();
        assert!(session.len() == 16 && session.bytes().all(|b| b.is_ascii_hexdigit()));
        let tunnel = &s["tunnels"][0];
        assert_eq!(tunnel["name"], format!("tcp-{echo}"));
        assert_eq!(tunnel["kind"], "tcp");
        assert_eq!(tunnel["state"], "ready");
        assert_eq!(tunnel["public"], format!("127.0.0.1:{}", client.port));
        assert_eq!(tunnel["local"], format!("127.0.0.1:{echo}"));
        assert_eq!(tunnel["streams_total"], 2);

        // Bytes are added as each stream ends on the client's side, just after the visitor saw
        // the echo: wait for both to end.
        let tunnels = loop {
            let (code, body) = curl(&socket, &["http://burrow/tunnels"]).await;
            assert_eq!(code, 200, "{body}");
            let tunnels: Value = serde_json::from_str(&body).unwrap();
            if tunnels[0]["streams_active"] == 0 {
                break tunnels;
            }
        };
        let sent = ("first visitor".len() + "second visitor".len()) as u64;
        assert_eq!(tunnels[0]["bytes_in"], sent);
        assert_eq!(tunnels[0]["bytes_out"], sent);

        let (code, text, stderr) = status(&dir, &["--socket", &socket]).await;
        assert_eq!(code, 0, "{stderr:?}");
        assert!(
            text.starts_with(&format!("connected to {}", server.to())),
            "{text}"
        );
        let line = format!(
            "tcp-{echo} (tcp) ready: 127.0.0.1:{} -> 127.0.0.1:{echo}, streams 0 open / 2 total",
            client.port
        );
        assert!(text.contains(&line), "{text}");

        assert_eq!(curl(&socket, &["http://burrow/nope"]).await.0, 404);
        assert_eq!(
            curl(&socket, &["-X", "POST", "http://burrow/status"])
                .await
                .0,
            405
        );

        client.proc.signal("TERM");
        assert_eq!(client.proc.wait_exit(WAIT).await.code(), Some(0));
        assert!(
            !Path::new(&socket).exists(),
            "the socket outlived the client"
        );
        let (code, _, stderr) = status(&dir, &["--socket", &socket]).await;
        assert_eq!(code, 1);
        let expected = format!("burrow: error: no running client at {socket} (");
        assert!(
            stderr.iter().any(|l| l.starts_with(&expected)),
            "{stderr:?}"
        );
    })
    .await
}

#[tokio::test(flavor = "multi_thread")]
async fn default_sockets_are_found_shared_and_replaced() {
    bounded(90, async {
        let dir = TestDir::new("status-default");
        let block = ports(3).arg();
        let server = Server::start(&dir, &["--token", "t", "--ports", &block]).await;
        let echo = echo_target().await;
        let default = dir
            .path()
            .join(format!("xdg-runtime/burrow/tcp-{echo}.sock"));

        let (code, _, stderr) = status(&dir, &[]).await;
        assert_eq!(code, 1);
        assert!(
            any_line_has(&stderr, &["burrow: error: no running client at"]),
            "{stderr:?}"
        );

        let mut first = Client::start_tcp(&dir, &server, echo, "t", &[]).await;
        assert!(default.exists(), "no socket at {}", default.display());
        // The same tunnel name again: the default socket is taken, so this one runs without.
        let second = Client::start_tcp(&dir, &server, echo, "t", &[]).await;
        let warned = |l: &str| l.contains("running without a status socket");
        second
            .proc
            .wait_stderr("the socket-taken warning", warned)
            .await;

        let (code, text, stderr) = status(&dir, &[]).await;
        assert_eq!(code, 0, "{stderr:?}");
        let ready = format!("tcp-{echo} (tcp) ready: 127.0.0.1:{} ->", first.port);
        assert!(text.contains(&ready), "{text}");

        // A client killed outright leaves its socket file; the next one replaces it.
        first.proc.kill9().await;
        assert!(default.exists());
        let (code, _, _) = status(&dir, &[]).await;
        assert_eq!(code, 1, "a stale socket answered");
        let third = Client::start_tcp(&dir, &server, echo, "t", &[]).await;
        third
            .proc
            .wait_stderr("the stale-socket notice", |l| {
                l.contains("replacing a stale status socket")
            })
            .await;
        let (code, json, stderr) = status(&dir, &["--json"]).await;
        assert_eq!(code, 0, "{stderr:?}");
        let s: Value = serde_json::from_str(&json).unwrap();
        assert_eq!(
            s["tunnels"][0]["public"],
            format!("127.0.0.1:{}", third.port)
        );
    })
    .await
}
