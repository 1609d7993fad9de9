//! Shared pieces of burrow's end-to-end tests: the real `burrow` binary as server and client,
//! per-test directories and public port ranges, in-process targets, and stream hashing.
//!
//! Tests run in parallel threads of one process (and several test binaries may run beside other
//! work on the machine), so every test gets its own directory and its own block of public ports.
#![allow(dead_code)]

pub(crate) mod carriers;
pub(crate) mod data;
pub(crate) mod proc;
pub(crate) mod targets;
pub(crate) mod udp;

#[allow(unused_imports)]
pub(crate) use proc::{Proc, WAIT, any_line_has};

use std::future::Future;
use std::net::{SocketAddr, TcpListener as StdListener};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

/// Runs a test body, failing the test (and printing the output of its processes) when it takes
/// longer than `secs`.
pub(crate) async fn bounded<F: Future>(secs: u64, body: F) -> F::Output {
    let mut body = std::pin::pin!(body);
    match tokio::time::timeout(Duration::from_secs(secs), &mut body).await {
        Ok(out) => out,
        // `body` is still alive here, so its processes print their output while unwinding.
        Err(_) => panic!("the test did not finish within {secs} s"),
    }
}

/// A fresh directory for one test, removed afterwards unless the test failed.
pub(crate) struct TestDir {
    path: PathBuf,
}

impl TestDir {
    /// Creates `$TMP/burrow-e2e-<pid>-<n>-<label>`.
    pub(crate) fn new(label: &str) -> TestDir {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let path =
            std::env::temp_dir().join(format!("burrow-e2e-{}-{n}-{label}", std::process::id()));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path).unwrap();
        TestDir { path }
    }

    /// The directory itself.
    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    /// A path inside the directory, as a string for command lines.
    pub(crate) fn join(&self, name: &str) -> String {
        self.path.join(name).to_string_lossy().into_owned()
    }

    /// Writes a file inside the directory and returns its path.
    pub(crate) fn write(&self, name: &str, contents: &str) -> String {
        let path = self.join(name);
        std::fs::write(&path, contents).unwrap();
        path
    }

    /// The client's known-hosts file for this test.
    pub(crate) fn known_hosts(&self) -> String {
        self.join("known_servers")
    }

    /// The server's state directory for this test.
    pub(crate) fn state_dir(&self) -> String {
        self.join("state")
    }
}

impl Drop for TestDir {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("test files kept in {}", self.path.display());
        } else {
            let _ = std::fs::remove_dir_all(&self.path);
        }
    }
}

/// A block of consecutive public ports that were free when handed out.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Ports {
    /// First port of the block.
    pub(crate) low: u16,
    /// Last port of the block.
    pub(crate) high: u16,
}

impl Ports {
    /// The block as a `--ports` value.
    pub(crate) fn arg(&self) -> String {
        format!("{}-{}", self.low, self.high)
    }
}

/// Lowest and highest port handed out; below Linux's ephemeral range, so outgoing connections
/// never take a port a test is about to publish.
const PORT_FLOOR: u32 = 12_000;
const PORT_CEIL: u32 = 32_000;

/// Hands out `n` consecutive ports that can be bound right now. Each process starts at its own
/// offset so test binaries running beside each other rarely meet.
pub(crate) fn ports(n: u16) -> Ports {
    static NEXT: OnceLock<AtomicU32> = OnceLock::new();
    let span = PORT_CEIL - PORT_FLOOR;
    let next = NEXT.get_or_init(|| AtomicU32::new(std::process::id().wrapping_mul(7919) % span));
    let n = u32::from(n);
    for _ in 0..2000 {
        let low = PORT_FLOOR + next.fetch_add(n, Ordering::Relaxed) % (span - n);
        if (low..low + n).all(port_is_free) {
            return Ports {
                low: low as u16,
                high: (low + n - 1) as u16,
            };
        }
    }
    panic!("no free block of {n} ports");
}

/// True when nobody listens on `port`, on any address, for TCP or UDP.
fn port_is_free(port: u32) -> bool {
    StdListener::bind(("0.0.0.0", port as u16)).is_ok()
        && std::net::UdpSocket::bind(("0.0.0.0", port as u16)).is_ok()
}

/// A running `burrow server`.
pub(crate) struct Server {
    /// The process.
    pub(crate) proc: Proc,
    /// The control address it printed.
    pub(crate) addr: SocketAddr,
    /// Its certificate fingerprint; `None` with `--insecure-plain`.
    pub(crate) fingerprint: Option<String>,
}

impl Server {
    /// The admin API's base URL (`http://ADDR`), once the server printed
    /// `admin listening on ADDR`.
    pub(crate) async fn admin_base(&self) -> String {
        let line = (self.proc)
            .wait_stdout("`admin listening on`", |l| {
                l.starts_with("admin listening on ")
            })
            .await;
        format!(
            "http://{}",
            line.trim_start_matches("admin listening on ").trim()
        )
    }

    /// Starts `burrow server --state-dir DIR/state ARGS`, adding `--listen 127.0.0.1:0` and
    /// `--public-bind 127.0.0.1` unless given, and waits for `listening on`.
    pub(crate) async fn start(dir: &TestDir, args: &[&str]) -> Server {
        let mut full: Vec<String> = vec!["server".into(), "--state-dir".into(), dir.state_dir()];
        if !args.contains(&"--listen") {
            full.extend(["--listen".into(), "127.0.0.1:0".into()]);
        }
        if !args.contains(&"--public-bind") {
            full.extend(["--public-bind".into(), "127.0.0.1".into()]);
        }
        full.extend(args.iter().map(|a| a.to_string()));
        let plain = args.contains(&"--insecure-plain");
        let proc = Proc::spawn("server", dir, &full);
        let line = proc
            .wait_stdout("`listening on`", |l| l.starts_with("listening on "))
            .await;
        let addr: SocketAddr = line["listening on ".len()..]
            .trim()
            .parse()
            .unwrap_or_else(|e| panic!("bad `listening on` line {line:?}: {e}\n{}", proc.dump()));
        let fingerprint = proc
            .output()
            .stdout
            .iter()
            .find_map(|l| l.strip_prefix("fingerprint ").map(str::to_string));
        if !plain {
            let fp = fingerprint.as_deref().unwrap_or_else(|| {
                panic!(
                    "TLS server printed no fingerprint before listening\n{}",
                    proc.dump()
                )
            });
            assert!(is_fingerprint(fp), "bad fingerprint {fp:?}");
        }
        Server {
            proc,
            addr,
            fingerprint,
        }
    }

    /// The server's first `count` `stream closed` lines (logged at debug, on in these tests),
    /// once it has logged that many.
    pub(crate) async fn closed_streams(&self, count: usize) -> Vec<String> {
        self.proc
            .wait_for(&format!("{count} `stream closed` lines"), |o| {
                let lines: Vec<String> = (o.stderr.iter())
                    .filter(|l| l.contains("stream closed"))
                    .take(count)
                    .cloned()
                    .collect();
                (lines.len() == count).then_some(lines)
            })
            .await
    }

    /// The control address as `--to` wants it.
    pub(crate) fn to(&self) -> String {
        self.addr.to_string()
    }

    /// Arguments that make a client trust this server: a pin for TLS, plain otherwise.
    pub(crate) fn trust_args(&self) -> Vec<String> {
        match &self.fingerprint {
            Some(fp) => vec!["--server-fingerprint".into(), fp.clone()],
            None => vec!["--insecure-plain".into()],
        }
    }
}

/// True for `sha256:` and 64 lowercase hex digits.
pub(crate) fn is_fingerprint(s: &str) -> bool {
    s.strip_prefix("sha256:").is_some_and(|hex| {
        hex.len() == 64
            && hex
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    })
}

/// A running `burrow tcp` (or `burrow client`) with its first tunnel ready.
pub(crate) struct Client {
    /// The process.
    pub(crate) proc: Proc,
    /// The public port of the first tunnel.
    pub(crate) port: u16,
}

/// The parts of a `tunnel NAME ready at HOST:PORT -> LOCAL` line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Ready {
    /// Tunnel name.
    pub(crate) name: String,
    /// Public port.
    pub(crate) port: u16,
    /// Local target as printed.
    pub(crate) local: String,
}

/// True for a `tunnel ... ready at ...` line.
pub(crate) fn is_ready_line(line: &str) -> bool {
    line.starts_with("tunnel ") && line.contains(" ready at ")
}

/// Parses a `tunnel NAME ready at HOST:PORT -> LOCAL` line.
pub(crate) fn parse_ready(line: &str) -> Ready {
    let words: Vec<&str> = line.split_whitespace().collect();
    match words.as_slice() {
        ["tunnel", name, "ready", "at", public, "->", local] => {
            let port = public.rsplit_once(':').and_then(|(_, p)| p.parse().ok());
            let port = port.unwrap_or_else(|| panic!("no port in ready line {line:?}"));
            Ready {
                name: name.to_string(),
                port,
                local: local.to_string(),
            }
        }
        _ => panic!("malformed ready line {line:?}"),
    }
}

impl Client {
    /// Starts `burrow ARGS` and waits for its first `tunnel ... ready at` line.
    pub(crate) async fn start(dir: &TestDir, args: Vec<String>) -> Client {
        let proc = Proc::spawn("client", dir, &args);
        let line = proc
            .wait_stdout("`tunnel ... ready at`", is_ready_line)
            .await;
        let port = parse_ready(&line).port;
        Client { proc, port }
    }

    /// Starts `burrow tcp LOCAL_PORT` against `server` with `token`, trusting it the way the
    /// server asks for, then `extra`; waits for the tunnel.
    pub(crate) async fn start_tcp(
        dir: &TestDir,
        server: &Server,
        local_port: u16,
        token: &str,
        extra: &[&str],
    ) -> Client {
        Client::start(dir, tcp_args(dir, server, local_port, token, extra)).await
    }

    /// Starts `burrow udp LOCAL_PORT` against `server` with `token`, trusting it the way the
    /// server asks for, then `extra`; waits for the tunnel.
    pub(crate) async fn start_udp(
        dir: &TestDir,
        server: &Server,
        local_port: u16,
        token: &str,
        extra: &[&str],
    ) -> Client {
        let args = one_liner_args("udp", dir, server, local_port, token, extra);
        Client::start(dir, args).await
    }

    /// Waits for the `n`th ready line (1-based) and returns its public port.
    pub(crate) async fn wait_ready_nth(&self, n: usize, within: Duration) -> u16 {
        let line = self
            .proc
            .wait_for_within(within, "another `tunnel ... ready at`", |o| {
                o.stdout
                    .iter()
                    .filter(|l| is_ready_line(l))
                    .nth(n - 1)
                    .cloned()
            })
            .await;
        parse_ready(&line).port
    }
}

/// The command line of `burrow tcp` against `server`: `--to`, the known-hosts file, the token,
/// the server's trust arguments, then `extra`.
pub(crate) fn tcp_args(
    dir: &TestDir,
    server: &Server,
    local_port: u16,
    token: &str,
    extra: &[&str],
) -> Vec<String> {
    one_liner_args("tcp", dir, server, local_port, token, extra)
}

/// The command line of a one-liner (`tcp` or `udp`) against `server`, as [`tcp_args`] builds it.
pub(crate) fn one_liner_args(
    command: &str,
    dir: &TestDir,
    server: &Server,
    local_port: u16,
    token: &str,
    extra: &[&str],
) -> Vec<String> {
    let mut args: Vec<String> = vec![
        command.into(),
        local_port.to_string(),
        "--to".into(),
        server.to(),
        "--known-hosts".into(),
        dir.known_hosts(),
        "--token".into(),
        token.into(),
    ];
    args.extend(server.trust_args());
    args.extend(extra.iter().map(|a| a.to_string()));
    args
}

/// `curl -sS` with `args` (a real HTTP client, as users would run it); returns (status, body).
pub(crate) async fn curl(args: &[&str]) -> (u16, String) {
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

/// The public port of every tunnel a client printed as ready, by name, once `n` are ready.
pub(crate) async fn ready_ports(client: &Proc, n: usize) -> std::collections::HashMap<String, u16> {
    client
        .wait_for(&format!("{n} `tunnel ... ready at` lines"), |o| {
            let ready: Vec<_> = o.stdout.iter().filter(|l| is_ready_line(l)).collect();
            (ready.len() >= n).then(|| {
                let parsed = ready.iter().map(|l| parse_ready(l));
                parsed.map(|r| (r.name, r.port)).collect()
            })
        })
        .await
}

/// The program `name` (searched on PATH, then in /usr/sbin and /usr/bin), or `None` (the test
/// is skipped) when it is missing outside CI. Under CI (`CI` set) a missing program fails.
pub(crate) fn program(name: &str, package: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    let found = std::env::split_paths(&path)
        .chain(["/usr/sbin", "/usr/bin", "/sbin"].map(PathBuf::from))
        .map(|dir| dir.join(name))
        .find(|p| p.is_file());
    if found.is_none() {
        let why = format!(
            "`{name}` is not installed (Debian: apt-get install {package}; .ci/run installs it)"
        );
        assert!(std::env::var_os("CI").is_none(), "{why}");
        eprintln!("skipping: {why}");
    }
    found
}

/// A port nobody listens on right now (the kernel's choice, released at once).
pub(crate) fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().port()
}

/// A self-signed certificate for `names` made by openssl, as (cert, key) paths.
pub(crate) fn certificate(dir: &TestDir, label: &str, names: &[&str]) -> (String, String) {
    openssl_certificate(dir, label, names, &[])
}

/// A self-signed certificate for `names` that is not a CA (`basicConstraints CA:FALSE`), as
/// WebPKI verifiers want a server's certificate to be even when it is its own trust anchor.
pub(crate) fn leaf_certificate(dir: &TestDir, label: &str, names: &[&str]) -> (String, String) {
    openssl_certificate(
        dir,
        label,
        names,
        &["-addext", "basicConstraints=critical,CA:FALSE"],
    )
}

fn openssl_certificate(
    dir: &TestDir,
    label: &str,
    names: &[&str],
    extra: &[&str],
) -> (String, String) {
    let (cert, key) = (
        dir.join(&format!("{label}.crt")),
        dir.join(&format!("{label}.key")),
    );
    let san: Vec<String> = names.iter().map(|n| format!("DNS:{n}")).collect();
    let status = std::process::Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
        ])
        .args([
            "-nodes",
            "-days",
            "2",
            "-subj",
            &format!("/CN={}", names[0]),
        ])
        .args(["-addext", &format!("subjectAltName={}", san.join(","))])
        .args(extra)
        .args(["-keyout", &key, "-out", &cert])
        .stderr(std::process::Stdio::null())
        .status()
        .unwrap_or_else(|e| panic!("openssl is required for this test (CI installs it): {e}"));
    assert!(status.success(), "openssl could not make a certificate");
    (cert, key)
}

/// The value of the sample `series` (name and labels as printed) in OpenMetrics `text`.
pub(crate) fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

/// Runs `count` clients with a wrong token against `server` (publishing `target`), each of
/// which must be refused with `authentication failed`: enough failures, from this host, to be
/// banned under `--ban-after count`.
pub(crate) async fn fail_logins(dir: &TestDir, server: &Server, target: u16, count: usize) {
    for attempt in 1..=count {
        let args = tcp_args(dir, server, target, "wrong", &[]);
        let mut wrong = Proc::spawn(&format!("wrong-{attempt}"), dir, &args);
        let stderr = wrong.expect_exit_1().await;
        assert!(
            any_line_has(&stderr, &["authentication failed"]),
            "attempt {attempt}:\n{}",
            wrong.dump()
        );
    }
}
