//! UDP pieces of the end-to-end tests: in-process UDP targets, visitors that resend a bounded
//! number of times, third-party programs (socat, dnsmasq, dig) found or reported missing, and
//! the server's readiness line for a tunnel's datagram connection.
//!
//! UDP may lose a datagram even on loopback (a full socket buffer drops it), so a visitor's
//! exchange resends a few times with a short wait per try; a reply that does not match what was
//! sent, other than a late copy of an earlier reply, fails the test at once.

use super::data::Hash64;
use super::{Proc, Server};
use std::collections::HashSet;
use std::path::PathBuf;
use std::time::Duration;
use tokio::net::UdpSocket;

/// Largest UDP payload over IPv4.
pub(crate) const MAX_DATAGRAM: usize = 65_507;

/// Binds a UDP socket on `127.0.0.1:0`.
pub(crate) async fn bind_any() -> UdpSocket {
    UdpSocket::bind("127.0.0.1:0").await.unwrap()
}

/// A port for a program that cannot be told to pick its own: from the test's own blocks,
/// below the ephemeral range, so no visitor socket of a test running beside it takes it first.
pub(crate) fn free_udp_port() -> u16 {
    super::ports(1).low
}

/// Starts an in-process UDP target that hands every datagram to `answer` and sends back what it
/// returns (nothing for `None`); returns the target's port.
pub(crate) async fn udp_target<F>(answer: F) -> u16
where
    F: Fn(&[u8]) -> Option<Vec<u8>> + Send + 'static,
{
    let socket = bind_any().await;
    let port = socket.local_addr().unwrap().port();
    tokio::spawn(async move {
        let mut buf = vec![0u8; MAX_DATAGRAM + 1];
        loop {
            match socket.recv_from(&mut buf).await {
                Ok((n, from)) => {
                    if let Some(reply) = answer(&buf[..n]) {
                        // A full buffer loses the reply, as the network may; the visitor resends.
                        let _ = socket.try_send_to(&reply, from);
                    }
                }
                // An ICMP error from an earlier reply: keep serving.
                Err(_) => continue,
            }
        }
    });
    port
}

/// Starts an in-process UDP echo target: every datagram, zero-length ones included, goes back
/// to its sender unchanged.
pub(crate) async fn udp_echo_target() -> u16 {
    udp_target(|d| Some(d.to_vec())).await
}

/// A visitor: a UDP socket connected to a public port.
pub(crate) struct Visitor {
    socket: UdpSocket,
    public: u16,
    /// Hashes of the payloads this visitor sent before, whose late echoes are skipped.
    earlier: HashSet<u64>,
    buf: Vec<u8>,
}

impl Visitor {
    /// A new visitor (a new source port, so a new flow) of public port `public`.
    pub(crate) async fn new(public: u16) -> Visitor {
        Visitor::on(bind_any().await, public).await
    }

    /// A visitor using an already bound `socket`.
    pub(crate) async fn on(socket: UdpSocket, public: u16) -> Visitor {
        socket.connect(("127.0.0.1", public)).await.unwrap();
        Visitor {
            socket,
            public,
            earlier: HashSet::new(),
            buf: vec![0u8; MAX_DATAGRAM + 1],
        }
    }

    /// The visitor's own port.
    pub(crate) fn port(&self) -> u16 {
        self.socket.local_addr().unwrap().port()
    }

    /// Sends one datagram without waiting for anything.
    pub(crate) async fn send(&self, payload: &[u8]) {
        let n = self.socket.send(payload).await.unwrap();
        assert_eq!(n, payload.len(), "a datagram was sent short");
    }

    /// Sends `payload` and waits for the same bytes to come back, resending after each `per_try`
    /// without an answer, at most `tries` times in all. Panics when no echo arrives or a reply
    /// differs from every payload this visitor sent.
    pub(crate) async fn echo(&mut self, payload: &[u8], tries: u32, per_try: Duration) {
        let want = Hash64::of(payload);
        for _ in 0..tries {
            self.send(payload).await;
            let deadline = tokio::time::Instant::now() + per_try;
            while let Ok(got) =
                tokio::time::timeout_at(deadline, self.socket.recv(&mut self.buf)).await
            {
                let n = got.unwrap_or_else(|e| panic!("{}: receive failed: {e}", self.who()));
                let reply = &self.buf[..n];
                if reply == payload {
                    self.earlier.insert(want);
                    return;
                }
                assert!(
                    self.earlier.contains(&Hash64::of(reply)),
                    "{}: a {}-byte datagram came back as {n} different bytes",
                    self.who(),
                    payload.len()
                );
            }
        }
        panic!(
            "{}: no echo of a {}-byte datagram after {tries} tries of {per_try:?}",
            self.who(),
            payload.len()
        );
    }

    /// Checks that nothing arrives for `within`: the one wait in these tests that is meant to
    /// run out, because absence is what it proves.
    pub(crate) async fn expect_silence(&mut self, within: Duration) {
        if let Ok(got) = tokio::time::timeout(within, self.socket.recv(&mut self.buf)).await {
            panic!("{}: expected nothing, got {got:?}", self.who());
        }
    }

    fn who(&self) -> String {
        format!("visitor :{} of public port {}", self.port(), self.public)
    }
}

/// A server-side UDP sink: a socket that events from clients are delivered to.
pub(crate) struct Sink {
    socket: UdpSocket,
    /// Events heard so far, whose late copies (after a resend) are skipped.
    heard: HashSet<Vec<u8>>,
}

impl Sink {
    /// A sink on `127.0.0.1:0`.
    pub(crate) async fn bind() -> Sink {
        Sink {
            socket: bind_any().await,
            heard: HashSet::new(),
        }
    }

    /// The address to deliver to.
    pub(crate) fn addr(&self) -> std::net::SocketAddr {
        self.socket.local_addr().unwrap()
    }

    /// Calls `send` and waits up to `per_try` for `event`, at most `tries` times; true when it
    /// arrived. A datagram that is neither `event` nor a copy of an earlier one fails the test.
    pub(crate) async fn hear<F: Future<Output = ()>>(
        &mut self,
        event: &[u8],
        tries: u32,
        per_try: Duration,
        send: impl Fn() -> F,
    ) -> bool {
        let mut buf = vec![0u8; MAX_DATAGRAM + 1];
        for _ in 0..tries {
            send().await;
            let deadline = tokio::time::Instant::now() + per_try;
            while let Ok(got) = tokio::time::timeout_at(deadline, self.socket.recv(&mut buf)).await
            {
                let got = &buf[..got.unwrap()];
                if got == event {
                    self.heard.insert(event.to_vec());
                    return true;
                }
                let what = String::from_utf8_lossy(got);
                assert!(self.heard.contains(got), "the sink got {what:?}");
            }
        }
        false
    }
}

/// The path of a third-party program, looked up in `PATH` and the sbin directories (dnsmasq
/// lives in /usr/sbin, which is not on every user's `PATH`). Panics, never skips, when missing.
pub(crate) fn tool(name: &str, package: &str) -> PathBuf {
    let path = std::env::var_os("PATH").unwrap_or_default();
    let sbin = ["/usr/local/sbin", "/usr/sbin", "/sbin"].map(PathBuf::from);
    std::env::split_paths(&path)
        .chain(sbin)
        .map(|dir| dir.join(name))
        .find(|p| p.is_file())
        .unwrap_or_else(|| {
            panic!(
                "`{name}` is not installed; the UDP end-to-end tests need it \
                 (Debian: apt-get install {package}; .ci/run installs it)"
            )
        })
}

/// Starts socat as a UDP echo on a free loopback port (each datagram comes back whole, up to
/// 65,507 bytes; socat does not answer a zero-length datagram) and waits until it receives.
pub(crate) async fn socat_echo() -> (Proc, u16) {
    let port = free_udp_port();
    let mut cmd = tokio::process::Command::new(tool("socat", "socat"));
    // -b: socat's buffer is 8192 bytes unless told, which would cut larger datagrams.
    // PIPE echoes within one process: the whole datagram is written before it is read back.
    cmd.args(["-d", "-d", "-b", "65536", "-T", "5"])
        .arg(format!("UDP4-RECVFROM:{port},bind=127.0.0.1,fork"))
        .arg("PIPE");
    let proc = Proc::spawn_command("socat", cmd);
    proc.wait_stderr("socat's `receiving on`", |l| l.contains("receiving on"))
        .await;
    (proc, port)
}

/// Starts dnsmasq on a free loopback port, answering `burrow.test` with 192.0.2.7 and nothing
/// else, and waits until it has started.
pub(crate) async fn dnsmasq() -> (Proc, u16) {
    let port = free_udp_port();
    let mut cmd = tokio::process::Command::new(tool("dnsmasq", "dnsmasq-base"));
    cmd.args([
        "--no-daemon",
        "--listen-address=127.0.0.1",
        "--bind-interfaces",
        "--no-resolv",
        "--no-hosts",
        "--address=/burrow.test/192.0.2.7",
        "--conf-file=/dev/null",
        "--pid-file=",
    ])
    .arg(format!("--port={port}"));
    let proc = Proc::spawn_command("dnsmasq", cmd);
    // dnsmasq binds its sockets before it logs `started`.
    proc.wait_stderr("dnsmasq's `started`", |l| l.contains("started"))
        .await;
    (proc, port)
}

/// Asks `dig` for `name` through public port `public` and returns its short answer.
pub(crate) async fn dig(public: u16, name: &str) -> String {
    let out = tokio::process::Command::new(tool("dig", "dnsutils"))
        .args(["@127.0.0.1", "-p", &public.to_string(), name])
        .args(["+short", "+time=2", "+tries=3"])
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(Duration::from_secs(20), out)
        .await
        .expect("dig did not finish within 20 s")
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    assert!(
        out.status.success(),
        "dig failed ({}): {stdout} {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

/// Waits until the server has a datagram connection up for the UDP tunnel on `public`: from
/// then on, datagrams reach the client instead of waiting in the public socket.
pub(crate) async fn wait_datagrams_up(server: &Server, public: u16) {
    let port = format!("port={public}");
    server
        .proc
        .wait_stderr("`datagram connection up`", |l| {
            l.contains("datagram connection up") && l.contains(&port)
        })
        .await;
}
