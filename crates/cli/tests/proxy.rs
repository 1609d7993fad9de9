//! End-to-end: clients that reach the server through real proxies from Debian's packages,
//! `tinyproxy` (HTTP CONNECT) and `dante-server` (`danted`, SOCKS5), on the `tcp` carrier and on
//! the multiplexed ones (`mux`, and a WebSocket to the server's `--ws-listen`).
//!
//! Each proxy listens on 127.0.0.1 and connects out from 127.0.0.2, so the server's admin API
//! shows whether a client's control and data connections came through it. A proxy cannot
//! listen on port 0, so each one gets a port picked by binding port 0 and releasing it, and a
//! fresh one when another program took it meanwhile.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::targets::{assert_echo, echo_target, visit};
use common::{Client, Proc, Server, TestDir, bounded, curl, free_port, ports, program, tcp_args};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// The address the proxies connect out from, told apart from a direct client's 127.0.0.1.
const PROXY_OUT: &str = "127.0.0.2";
/// Attempts at a free port for a proxy before the test gives up.
const PORT_ATTEMPTS: usize = 20;

/// A running proxy and the port it listens on.
struct RunningProxy {
    /// The proxy process (killed when dropped).
    proc: Proc,
    /// Its port on 127.0.0.1.
    port: u16,
}

/// Starts a proxy with the config `config(port)` written to `file`, on free ports until one
/// prints `ready` (a line of its log); a line containing `taken` means the port was taken.
async fn start_proxy(
    dir: &TestDir,
    name: &str,
    file: &str,
    config: impl Fn(u16) -> String,
    command: impl Fn(&str) -> tokio::process::Command,
    (ready, taken): (&str, &str),
) -> RunningProxy {
    for _ in 0..PORT_ATTEMPTS {
        let port = free_port();
        let path = dir.write(file, &config(port));
        let proc = Proc::spawn_command(name, command(&path));
        let started = proc
            .wait_for(&format!("`{ready}` or `{taken}`"), |o| {
                let lines = o.stdout.iter().chain(&o.stderr);
                lines.fold(None, |seen, l| {
                    seen.or_else(|| (l.contains(ready)).then_some(true))
                        .or_else(|| (l.contains(taken)).then_some(false))
                })
            })
            .await;
        if started {
            return RunningProxy { proc, port };
        }
    }
    panic!("{name} found no free port in {PORT_ATTEMPTS} attempts");
}

/// `tinyproxy` in the foreground, allowing CONNECT to `server_port` only, with Basic
/// authentication when `credentials` are given.
async fn tinyproxy(
    dir: &TestDir,
    server_port: u16,
    credentials: Option<(&str, &str)>,
) -> Option<RunningProxy> {
    tinyproxy_to(dir, &[server_port], credentials).await
}

/// `tinyproxy` allowing CONNECT to each of `ports`.
async fn tinyproxy_to(
    dir: &TestDir,
    ports: &[u16],
    credentials: Option<(&str, &str)>,
) -> Option<RunningProxy> {
    let program = program("tinyproxy", "tinyproxy")?;
    let auth = credentials.map_or(String::new(), |(u, p)| format!("BasicAuth {u} {p}\n"));
    let allowed: String = ports.iter().map(|p| format!("ConnectPort {p}\n")).collect();
    let config = |port: u16| {
        format!(
            "Port {port}\nListen 127.0.0.1\nBind {PROXY_OUT}\nTimeout 60\nLogLevel Info\n\
             MaxClients 64\n{allowed}{auth}"
        )
    };
    let command = |path: &str| {
        let mut cmd = tokio::process::Command::new(&program);
        cmd.args(["-d", "-c", path]);
        cmd
    };
    let signals = (
        "Accepting connections",
        "Could not create listening sockets",
    );
    Some(start_proxy(dir, "tinyproxy", "tinyproxy.conf", config, command, signals).await)
}

/// `danted` with `method` (`none`, or `username`: system users and their passwords), logging
/// to stderr, its pid file in the test's directory.
async fn danted(dir: &TestDir, method: &str) -> Option<RunningProxy> {
    let program = program("danted", "dante-server")?;
    // As root it must be told whom to run as; as anyone else it runs as that user.
    let users = if rustix::process::geteuid().is_root() {
        "user.privileged: root\nuser.unprivileged: nobody\n"
    } else {
        ""
    };
    let config = |port: u16| {
        format!(
            "logoutput: stderr\ninternal: 127.0.0.1 port = {port}\nexternal: {PROXY_OUT}\n\
             socksmethod: {method}\nclientmethod: none\n{users}\
             client pass {{ from: 127.0.0.0/8 to: 0.0.0.0/0 }}\n\
             socks pass {{ from: 127.0.0.0/8 to: 0.0.0.0/0 command: connect }}\n"
        )
    };
    let pid_file = dir.join("danted.pid");
    let command = |path: &str| {
        let mut cmd = tokio::process::Command::new(&program);
        cmd.args(["-f", path, "-p", &pid_file]);
        cmd
    };
    let signals = ("running", "Address already in use");
    Some(start_proxy(dir, "danted", "danted.conf", config, command, signals).await)
}

/// A server with an admin API, TLS unless `plain`; returns it and the admin API's base URL.
async fn server_with_admin(dir: &TestDir, plain: bool) -> (Server, String) {
    let block = ports(2).arg();
    let mut args = vec![
        "--token",
        "t",
        "--ports",
        &block,
        "--admin-listen",
        "127.0.0.1:0",
    ];
    if plain {
        args.push("--insecure-plain");
    }
    let server = Server::start(dir, &args).await;
    let base = server.admin_base().await;
    (server, base)
}

/// The addresses of the clients connected to the server, from its admin API.
async fn client_addresses(admin: &str) -> Vec<String> {
    let (status, body) = curl(&[&format!("{admin}/clients")]).await;
    assert_eq!(status, 200, "{body}");
    let clients: serde_json::Value = serde_json::from_str(&body).unwrap();
    let clients = clients.as_array().unwrap();
    clients
        .iter()
        .map(|c| c["address"].as_str().unwrap().to_owned())
        .collect()
}

/// Sends `data` through the echo tunnel on `port` and reads it back, without closing first:
/// tinyproxy ends both directions of a tunnel as soon as either side closes its own.
async fn round_trip(port: u16, data: &[u8]) {
    let mut conn = visit(port).await;
    conn.write_all(data).await.unwrap();
    let mut back = vec![0u8; data.len()];
    conn.read_exact(&mut back).await.unwrap();
    assert_eq!(
        back, data,
        "echo through port {port} returned different bytes"
    );
}

/// Publishes an echo service through `proxy_url`, echoes through the tunnel (control and data
/// connections both cross the proxy; with `half_close`, the visitor closes its side first),
/// and checks the server saw the proxy's address.
async fn tunnel_through(
    dir: &TestDir,
    server: &Server,
    admin: &str,
    proxy_url: &str,
    half_close: bool,
) -> Client {
    let echo = echo_target().await;
    let client = Client::start_tcp(dir, server, echo, "t", &["--proxy", proxy_url]).await;
    for data in [
        &b"through the proxy"[..],
        b"and again, on another data connection",
    ] {
        if half_close {
            assert_echo(client.port, data).await;
        } else {
            round_trip(client.port, data).await;
        }
    }
    let addresses = client_addresses(admin).await;
    assert_eq!(addresses.len(), 1, "{addresses:?}");
    assert!(
        addresses[0].starts_with(&format!("{PROXY_OUT}:")),
        "{addresses:?}"
    );
    client
}

/// Runs a client through `proxy_url` that must fail at once; returns its stderr.
async fn refused_client(dir: &TestDir, server: &Server, proxy_url: &str) -> String {
    let echo = echo_target().await;
    let extra = ["--proxy", proxy_url, "--exit-on-disconnect"];
    let mut client = Proc::spawn("client", dir, &tcp_args(dir, server, echo, "t", &extra));
    client.expect_exit_1().await.join("\n")
}

#[tokio::test(flavor = "multi_thread")]
async fn a_client_reaches_its_server_through_tinyproxy_with_credentials() {
    bounded(90, async {
        let dir = TestDir::new("proxy-http");
        // Plain, so the server's first bytes may follow the proxy's answer in one packet.
        let (server, admin) = server_with_admin(&dir, true).await;
        let Some(proxy) = tinyproxy(&dir, server.addr.port(), Some(("alice", "s3cret"))).await
        else {
            return;
        };
        let url = format!("http://alice:s3cret@127.0.0.1:{}", proxy.port);
        let client = tunnel_through(&dir, &server, &admin, &url, false).await;
        drop(client);
        let request = format!("CONNECT 127.0.0.1:{} HTTP/1.1", server.addr.port());
        let logged = proxy.proc.output().stdout;
        assert!(
            logged.iter().any(|l| l.contains(&request)),
            "{}",
            proxy.proc.dump()
        );

        let wrong = format!("http://alice:wr0ng@127.0.0.1:{}", proxy.port);
        let stderr = refused_client(&dir, &server, &wrong).await;
        assert!(
            stderr.contains("the proxy refused these credentials (401 Unauthorized)"),
            "{stderr}"
        );
        assert!(
            !stderr.contains("wr0ng"),
            "the password was printed: {stderr}"
        );
        let none = format!("http://127.0.0.1:{}", proxy.port);
        let stderr = refused_client(&dir, &server, &none).await;
        assert!(stderr.contains("the proxy wants credentials"), "{stderr}");
        drop(proxy);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_client_reaches_its_server_through_dante_resolving_the_name_there() {
    bounded(90, async {
        let dir = TestDir::new("proxy-socks");
        let (server, admin) = server_with_admin(&dir, false).await;
        let Some(proxy) = danted(&dir, "none").await else {
            return;
        };
        // socks5h: the proxy resolves `localhost`; the pinned fingerprint still holds.
        let echo = echo_target().await;
        let mut args = tcp_args(&dir, &server, echo, "t", &[]);
        let to = args.iter().position(|a| a == "--to").unwrap() + 1;
        args[to] = format!("localhost:{}", server.addr.port());
        args.extend([
            "--proxy".into(),
            format!("socks5h://127.0.0.1:{}", proxy.port),
        ]);
        let client = Client::start(&dir, args).await;
        assert_echo(client.port, b"through socks").await;
        let addresses = client_addresses(&admin).await;
        assert!(
            addresses[0].starts_with(&format!("{PROXY_OUT}:")),
            "{addresses:?}"
        );
        drop(proxy);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn the_multiplexed_carriers_go_through_both_proxies() {
    bounded(90, async {
        let dir = TestDir::new("proxy-carriers");
        let block = ports(4).arg();
        let ws = format!("127.0.0.1:{}", ports(1).low);
        let args = [
            "--token",
            "t",
            "--ports",
            &block,
            "--admin-listen",
            "127.0.0.1:0",
            "--ws-listen",
            &ws,
        ];
        let server = Server::start(&dir, &args).await;
        let admin = server.admin_base().await;
        let ws_port: u16 = ws.rsplit_once(':').unwrap().1.parse().unwrap();
        let Some(http) = tinyproxy_to(&dir, &[server.addr.port(), ws_port], None).await else {
            return;
        };
        let Some(socks) = danted(&dir, "none").await else {
            return;
        };
        let url = format!("ws://{ws}/burrow");
        let cases = [
            ("mux", format!("http://127.0.0.1:{}", http.port), "mux"),
            (
                url.as_str(),
                format!("http://127.0.0.1:{}", http.port),
                "ws",
            ),
            ("mux", format!("socks5://127.0.0.1:{}", socks.port), "mux"),
            (
                url.as_str(),
                format!("socks5://127.0.0.1:{}", socks.port),
                "ws",
            ),
        ];
        for (carrier, proxy, kind) in cases {
            let echo = echo_target().await;
            let extra = ["--carrier", carrier, "--proxy", &proxy];
            let client = Client::start_tcp(&dir, &server, echo, "t", &extra).await;
            for data in [&b"one stream"[..], b"and another, on the same link"] {
                round_trip(client.port, data).await;
            }
            // Every client of this test goes through a proxy, so every address the server
            // lists (earlier clients' sessions may linger) must be the proxies'.
            let addresses = client_addresses(&admin).await;
            assert!(
                !addresses.is_empty(),
                "{carrier} via {proxy}: no client listed"
            );
            assert!(
                addresses
                    .iter()
                    .all(|a| a.starts_with(&format!("{PROXY_OUT}:"))),
                "{carrier} via {proxy}: the server saw {addresses:?}"
            );
            let established = format!("carrier=\"{kind}\"");
            client
                .proc
                .wait_stderr(
                    &format!("{carrier} via {proxy}: the session's carrier"),
                    |l| l.contains("session established") && l.contains(&established),
                )
                .await;
        }
    })
    .await;
}

/// The system user the SOCKS password test logs in as, created when missing.
const SOCKS_USER: &str = "burrow-socks-e2e";

/// Makes sure the system user [`SOCKS_USER`] exists with `password` (danted's `username`
/// method checks system passwords); `false` when not root, which this needs.
fn socks_user(password: &str) -> bool {
    if !rustix::process::geteuid().is_root() {
        let why = "the SOCKS password test creates a system user and needs root";
        assert!(std::env::var_os("CI").is_none(), "{why}");
        eprintln!("skipping: {why}");
        return false;
    }
    let exists = std::process::Command::new("id")
        .arg(SOCKS_USER)
        .output()
        .unwrap();
    if !exists.status.success() {
        let made = std::process::Command::new("useradd")
            .args([
                "--system",
                "--no-create-home",
                "--shell",
                "/usr/sbin/nologin",
                SOCKS_USER,
            ])
            .status()
            .unwrap();
        assert!(made.success(), "useradd {SOCKS_USER} failed");
    }
    let mut chpasswd = std::process::Command::new("chpasswd")
        .stdin(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    let line = format!("{SOCKS_USER}:{password}\n");
    chpasswd
        .stdin
        .take()
        .unwrap()
        .write_all(line.as_bytes())
        .unwrap();
    assert!(chpasswd.wait().unwrap().success(), "chpasswd failed");
    true
}

#[tokio::test(flavor = "multi_thread")]
async fn a_client_logs_in_to_dante_and_a_wrong_password_ends_it() {
    bounded(90, async {
        let dir = TestDir::new("proxy-socks-auth");
        let (server, admin) = server_with_admin(&dir, false).await;
        let Some(proxy) = danted(&dir, "username").await else {
            return;
        };
        if !socks_user("S0cks-pass") {
            return;
        }
        let url = format!("socks5://{SOCKS_USER}:S0cks-pass@127.0.0.1:{}", proxy.port);
        let client = tunnel_through(&dir, &server, &admin, &url, true).await;
        drop(client);

        let wrong = format!("socks5://{SOCKS_USER}:n0pe@127.0.0.1:{}", proxy.port);
        let stderr = refused_client(&dir, &server, &wrong).await;
        assert!(
            stderr.contains("the proxy refused these credentials"),
            "{stderr}"
        );
        assert!(
            !stderr.contains("n0pe"),
            "the password was printed: {stderr}"
        );
        drop(proxy);
    })
    .await;
}
