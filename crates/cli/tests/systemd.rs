//! End-to-end: burrow under systemd's protocols, with the real `burrow` binary.
//!
//! Socket activation runs the server under `systemd-socket-activate`, which holds the listening
//! sockets and starts burrow only when the first connection arrives, exactly as a `.socket`
//! unit does: the client's very first attempt must succeed. The `sd_notify` messages are read
//! from a Unix datagram socket the test binds and names in `NOTIFY_SOCKET`, as systemd would.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::targets::{assert_echo, echo_target};
use common::{Client, Proc, Server, TestDir, WAIT, bounded, free_port, ports};
use std::path::PathBuf;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UnixDatagram};

/// `systemd-socket-activate`, or `None` (the test is skipped) when it is missing outside CI.
/// Under CI (`CI` set) a missing tool fails the test.
fn socket_activate() -> Option<PathBuf> {
    common::program("systemd-socket-activate", "systemd")
}

/// `burrow server` behind `systemd-socket-activate`, which listens on `ports` and starts the
/// server at the first connection to any of them.
struct Activated {
    /// The process: systemd-socket-activate, then burrow in its place (the same pid).
    proc: Proc,
    /// The loopback ports systemd-socket-activate listens on, in descriptor order.
    ports: Vec<u16>,
}

impl Activated {
    /// Listens on `count` free loopback ports (named `fdnames`, e.g. `control:admin`) and waits
    /// until systemd-socket-activate holds them all; picks other ports when one was taken in
    /// the meantime.
    async fn start(dir: &TestDir, count: usize, fdnames: Option<&str>, args: &[&str]) -> Self {
        let tool = socket_activate().unwrap();
        for _ in 0..20 {
            let ports: Vec<u16> = (0..count).map(|_| free_port()).collect();
            let mut cmd = tokio::process::Command::new(&tool);
            cmd.args(ports.iter().map(|p| format!("--listen=127.0.0.1:{p}")));
            cmd.args(fdnames.map(|names| format!("--fdname={names}")));
            // The child sees only the LISTEN_* variables and these.
            cmd.arg("--setenv=BURROW_LOG=info")
                .arg(env!("CARGO_BIN_EXE_burrow"))
                .args(["server", "--state-dir", &dir.state_dir()])
                .args(["--public-bind", "127.0.0.1"])
                .args(args);
            let proc = Proc::spawn_command("server", cmd);
            let listening = proc
                .wait_for("systemd-socket-activate's `Listening on` lines", |o| {
                    if o.stderr
                        .iter()
                        .any(|l| l.contains("Address already in use"))
                    {
                        return Some(false);
                    }
                    let n = o.stderr.iter().filter(|l| l.starts_with("Listening on "));
                    (n.count() == count).then_some(true)
                })
                .await;
            if listening {
                return Activated { proc, ports };
            }
        }
        panic!("no free loopback ports for systemd-socket-activate after 20 tries");
    }

    /// Waits for the server's stdout line that starts with `prefix` and returns the rest.
    async fn line(&self, prefix: &str) -> String {
        let line = self
            .proc
            .wait_stdout(prefix, |l| l.starts_with(prefix))
            .await;
        line[prefix.len()..].to_owned()
    }
}

/// The command line of `burrow tcp LOCAL` against a server on loopback port `port`, trusting
/// the server's certificate on first use.
fn tcp_client_args(dir: &TestDir, local: u16, port: u16) -> Vec<String> {
    let to = format!("127.0.0.1:{port}");
    let args = ["tcp", &local.to_string(), "--to", &to, "--token", "t"];
    let mut args: Vec<String> = args.map(str::to_owned).to_vec();
    args.extend(["--known-hosts".into(), dir.known_hosts()]);
    args
}

#[tokio::test(flavor = "multi_thread")]
async fn the_first_client_starts_the_server_and_is_served() {
    if socket_activate().is_none() {
        return;
    }
    bounded(60, async {
        let dir = TestDir::new("sd-activate");
        let block = ports(4).arg();
        let server = Activated::start(&dir, 1, None, &["--token", "t", "--ports", &block]).await;
        assert!(
            server.proc.output().stdout.is_empty(),
            "burrow started before any connection\n{}",
            server.proc.dump()
        );
        let echo = echo_target().await;
        let control = server.ports[0];
        let client = Client::start(&dir, tcp_client_args(&dir, echo, control)).await;
        let listening = server.line("listening on ").await;
        assert_eq!(listening, format!("127.0.0.1:{control}"));
        assert_echo(client.port, b"through a socket-activated server").await;
        // The connection that started the server was served, not refused and retried.
        let log = client.proc.output().stderr;
        assert!(
            !log.iter().any(|l| l.contains("retrying")),
            "the client's first attempt failed\n{}",
            client.proc.dump()
        );
    })
    .await
}

/// Sends `GET PATH` to the admin API on `port` and returns the whole response.
async fn admin_get(port: u16, path: &str) -> String {
    let mut conn = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    let request = format!("GET {path} HTTP/1.1\r\nHost: burrow\r\nConnection: close\r\n\r\n");
    conn.write_all(request.as_bytes()).await.unwrap();
    let mut response = Vec::new();
    tokio::time::timeout(WAIT, conn.read_to_end(&mut response))
        .await
        .expect("the admin API did not answer in time")
        .unwrap();
    String::from_utf8_lossy(&response).into_owned()
}

#[tokio::test(flavor = "multi_thread")]
async fn named_sockets_become_the_control_and_admin_listeners() {
    if socket_activate().is_none() {
        return;
    }
    bounded(60, async {
        let dir = TestDir::new("sd-named");
        let block = ports(4).arg();
        let args = ["--token", "t", "--ports", &block];
        let server = Activated::start(&dir, 2, Some("control:admin"), &args).await;
        let (control, admin) = (server.ports[0], server.ports[1]);
        // A request to the admin socket starts the server, and is answered.
        let health = admin_get(admin, "/health").await;
        assert!(health.starts_with("HTTP/1.1 200"), "{health}");
        assert!(health.contains("ok"), "{health}");
        assert_eq!(
            server.line("listening on ").await,
            format!("127.0.0.1:{control}")
        );
        assert_eq!(
            server.line("admin listening on ").await,
            format!("127.0.0.1:{admin}")
        );
        let echo = echo_target().await;
        let client = Client::start(&dir, tcp_client_args(&dir, echo, control)).await;
        assert_echo(client.port, b"control socket from systemd").await;
        let clients = admin_get(admin, "/clients").await;
        assert!(clients.starts_with("HTTP/1.1 200"), "{clients}");
        let port = format!("\"port\":{}", client.port);
        assert!(clients.contains(&port), "{clients}");
    })
    .await
}

/// Starts a socket-activated server, connects once to start it, and returns its stderr after
/// it exits with status 1.
async fn activation_fails(
    dir: &TestDir,
    count: usize,
    names: Option<&str>,
    args: &[&str],
) -> (Vec<u16>, String) {
    let mut server = Activated::start(dir, count, names, args).await;
    // The server may have failed and closed the socket already, resetting this connection.
    let _conn = TcpStream::connect(("127.0.0.1", server.ports[0])).await;
    let stderr = server.proc.expect_exit_1().await;
    assert!(
        server.proc.output().stdout.is_empty(),
        "a failed start printed readiness lines\n{}",
        server.proc.dump()
    );
    (server.ports, stderr.join("\n"))
}

#[tokio::test(flavor = "multi_thread")]
async fn sockets_that_fit_no_listener_stop_the_server_at_startup() {
    if socket_activate().is_none() {
        return;
    }
    bounded(60, async {
        let dir = TestDir::new("sd-misfit");
        let args = ["--token", "t", "--ports", "20000"];
        let (_, stderr) = activation_fails(&dir, 2, Some("control:web"), &args).await;
        assert!(
            stderr.contains("burrow: error: systemd passed socket 4 named `web`"),
            "{stderr}"
        );
        let args = ["--token", "t", "--ports", "20000", "--listen", "127.0.0.1:1"];
        let (ports, stderr) = activation_fails(&dir, 1, None, &args).await;
        let want = format!(
            "the control listener is configured on 127.0.0.1:1 but systemd passed a socket on 127.0.0.1:{}",
            ports[0]
        );
        assert!(stderr.contains(&want), "{stderr}");
    })
    .await
}

/// The `sd_notify` messages a process sends to a socket the test named in `NOTIFY_SOCKET`.
struct Notifications {
    socket: UnixDatagram,
    path: PathBuf,
    /// Every message so far, one entry per line (`READY=1`, `WATCHDOG=1`, ...).
    heard: Vec<String>,
}

impl Notifications {
    /// Binds the socket inside the test's directory.
    fn bind(dir: &TestDir) -> Self {
        let path = dir.path().join("notify.sock");
        let socket = UnixDatagram::bind(&path).unwrap();
        Notifications {
            socket,
            path,
            heard: Vec::new(),
        }
    }

    /// Waits until the line `want` was heard `n` times in all; panics with what was heard
    /// after [`WAIT`].
    async fn wait_for_nth(&mut self, want: &str, n: usize) {
        let deadline = tokio::time::Instant::now() + WAIT;
        let mut buf = vec![0; 4096];
        while self.count(want) < n {
            let received = tokio::time::timeout_at(deadline, self.socket.recv(&mut buf)).await;
            let Ok(received) = received else {
                panic!(
                    "{want} not heard {n} times within {WAIT:?}; heard {:?}",
                    self.heard
                );
            };
            let text = String::from_utf8_lossy(&buf[..received.unwrap()]).into_owned();
            self.heard.extend(text.lines().map(str::to_owned));
        }
    }

    /// Waits for the line `want`.
    async fn wait_for(&mut self, want: &str) {
        self.wait_for_nth(want, 1).await
    }

    /// How often the line `want` was heard.
    fn count(&self, want: &str) -> usize {
        self.heard.iter().filter(|l| *l == want).count()
    }

    /// Where the line `want` was first heard.
    fn position(&self, want: &str) -> Option<usize> {
        self.heard.iter().position(|l| l == want)
    }
}

/// Starts `burrow ARGS` with `NOTIFY_SOCKET` pointing at `notify` and the given watchdog
/// variables.
fn spawn_notifying(
    name: &str,
    dir: &TestDir,
    notify: &Notifications,
    args: &[String],
    watchdog: &[(&str, &str)],
) -> Proc {
    let mut cmd = Proc::command(dir, args);
    cmd.env("NOTIFY_SOCKET", &notify.path);
    cmd.envs(watchdog.iter().copied());
    Proc::spawn_command(name, cmd)
}

/// `burrow server` on loopback port 0 with shared token `t`.
fn server_args(dir: &TestDir) -> Vec<String> {
    let block = ports(4).arg();
    let args = [
        "server",
        "--listen",
        "127.0.0.1:0",
        "--public-bind",
        "127.0.0.1",
    ];
    let mut args: Vec<String> = args.map(str::to_owned).to_vec();
    args.extend(["--state-dir".into(), dir.state_dir()]);
    args.extend(["--token".into(), "t".into(), "--ports".into(), block]);
    args
}

#[tokio::test(flavor = "multi_thread")]
async fn the_server_tells_systemd_ready_stopping_and_feeds_the_watchdog() {
    bounded(60, async {
        let dir = TestDir::new("sd-notify-server");
        let mut notify = Notifications::bind(&dir);
        let watchdog = [("WATCHDOG_USEC", "200000")];
        let args = server_args(&dir);
        let mut server = spawn_notifying("server", &dir, &notify, &args, &watchdog);
        server
            .wait_stdout("`listening on`", |l| l.starts_with("listening on "))
            .await;
        notify.wait_for("READY=1").await;
        // Fed every 100 ms: a second ping proves it keeps coming, not only once at startup.
        notify.wait_for_nth("WATCHDOG=1", 2).await;
        server.signal("TERM");
        notify.wait_for("STOPPING=1").await;
        assert!(
            notify.position("READY=1") < notify.position("STOPPING=1"),
            "{:?}",
            notify.heard
        );
        let status = server.wait_exit(WAIT).await;
        assert_eq!(status.code(), Some(0), "{}", server.dump());
    })
    .await
}

#[tokio::test(flavor = "multi_thread")]
async fn the_watchdog_of_another_process_is_not_fed() {
    bounded(60, async {
        let dir = TestDir::new("sd-notify-other-pid");
        let mut notify = Notifications::bind(&dir);
        // Pid 1 is never burrow: the watchdog is some other process's business.
        let watchdog = [("WATCHDOG_USEC", "2000"), ("WATCHDOG_PID", "1")];
        let args = server_args(&dir);
        let mut server = spawn_notifying("server", &dir, &notify, &args, &watchdog);
        notify.wait_for("READY=1").await;
        server.signal("TERM");
        notify.wait_for("STOPPING=1").await;
        let status = server.wait_exit(WAIT).await;
        assert_eq!(status.code(), Some(0), "{}", server.dump());
        // A fed watchdog pings at once at startup, long before READY=1.
        assert_eq!(notify.count("WATCHDOG=1"), 0, "{:?}", notify.heard);
    })
    .await
}

#[tokio::test(flavor = "multi_thread")]
async fn a_client_is_ready_once_its_tunnels_are_published() {
    bounded(60, async {
        let dir = TestDir::new("sd-notify-client");
        let block = ports(4).arg();
        let server = Server::start(&dir, &["--token", "t", "--ports", &block]).await;
        let echo = echo_target().await;
        let fingerprint = server.fingerprint.clone().unwrap();
        let config = format!(
            "server = \"{}\"\ntoken = \"t\"\nserver_fingerprint = \"{fingerprint}\"\n\n\
             [[tunnels]]\nname = \"one\"\nlocal_port = {echo}\n\n\
             [[tunnels]]\nname = \"two\"\nlocal_port = {echo}\n",
            server.to()
        );
        let config = dir.write("client.toml", &config);
        let mut notify = Notifications::bind(&dir);
        let args = ["client", "--config", &config].map(str::to_owned);
        let mut client = spawn_notifying("client", &dir, &notify, &args, &[]);
        notify.wait_for("READY=1").await;
        let second = client
            .wait_stdout_nth("the second ready line", 2, common::is_ready_line)
            .await;
        let port = common::parse_ready(&second).port;
        assert_echo(port, b"a ready client").await;
        client.signal("TERM");
        notify.wait_for("STOPPING=1").await;
        let status = client.wait_exit(WAIT).await;
        assert_eq!(status.code(), Some(0), "{}", client.dump());
        assert_eq!(notify.count("READY=1"), 1, "{:?}", notify.heard);
    })
    .await
}
