//! End-to-end: the HTTP edge with real clients. `curl` routes by Host, by path prefix and by a
//! custom hostname; uploads 50 MB chunked with `Expect: 100-continue`; reaches a TLS target by
//! SNI passthrough and the edge's own certificate over HTTP/2. A WebSocket echo (Debian's
//! python3-websockets) runs through the edge, three clients share a name round robin, and the
//! error pages, the header deadline and oversized heads are checked.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::data::Pattern;
use common::{Proc, Server, TestDir, any_line_has, bounded, certificate, one_liner_args};
use std::collections::HashMap;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// The support scripts' directory.
fn support(file: &str) -> String {
    format!("{}/tests/support/{file}", env!("CARGO_MANIFEST_DIR"))
}

/// Waits for a `listening on PORT` line of a helper program and returns the port.
async fn listening_port(proc: &Proc) -> u16 {
    let line = proc
        .wait_stdout("`listening on`", |l| l.starts_with("listening on "))
        .await;
    line["listening on ".len()..].trim().parse().unwrap()
}

/// Starts the JSON-reporting HTTP target called `id` (over TLS with `tls`).
async fn target(id: &str, tls: Option<(&str, &str)>) -> (Proc, u16) {
    let mut cmd = tokio::process::Command::new("python3");
    cmd.args(["-u", &support("http_target.py"), id]);
    if let Some((cert, key)) = tls {
        cmd.args(["--tls", cert, key]);
    }
    let proc = Proc::spawn_command("http_target.py (CI installs python3)", cmd);
    let port = listening_port(&proc).await;
    (proc, port)
}

/// A server with its HTTP (and maybe HTTPS) edge.
struct Edge {
    server: Server,
    http: u16,
    https: Option<u16>,
}

impl Edge {
    /// Starts `burrow server --token t --http-listen 127.0.0.1:0 ARGS` and reads the edge's ports.
    async fn start(dir: &TestDir, args: &[&str]) -> Edge {
        let mut full = vec!["--http-listen", "127.0.0.1:0"];
        if !args.contains(&"--config") {
            full.extend(["--token", "t"]);
        }
        full.extend(args);
        let server = Server::start(dir, &full).await;
        let port_of = |line: String| -> u16 { line.rsplit(':').next().unwrap().parse().unwrap() };
        let http = server
            .proc
            .wait_stdout("`http edge listening on`", |l| {
                l.starts_with("http edge listening on ")
            })
            .await;
        let https = if args.contains(&"--https-listen") {
            let line = server
                .proc
                .wait_stdout("`https edge listening on`", |l| {
                    l.starts_with("https edge listening on ")
                })
                .await;
            Some(port_of(line))
        } else {
            None
        };
        Edge {
            server,
            http: port_of(http),
            https,
        }
    }
}

/// A running `burrow http` with its tunnel ready.
struct HttpClient {
    /// The process; it runs as long as the test holds it.
    proc: Proc,
    urls: Vec<String>,
    id: String,
}

impl HttpClient {
    /// Starts `burrow http LOCAL_PORT` with token `t` and `extra`, and waits for the ready line
    /// `tunnel NAME ready at URL... -> LOCAL (client ID)`.
    async fn start(dir: &TestDir, edge: &Edge, local: u16, extra: &[&str]) -> HttpClient {
        let args = one_liner_args("http", dir, &edge.server, local, "t", extra);
        HttpClient::start_args(dir, args).await
    }

    async fn start_args(dir: &TestDir, args: Vec<String>) -> HttpClient {
        let proc = Proc::spawn("client", dir, &args);
        let line = proc
            .wait_stdout("`tunnel ... ready at`", |l| {
                l.starts_with("tunnel ") && l.contains(" ready at ")
            })
            .await;
        let (_, rest) = line.split_once(" ready at ").unwrap();
        let (urls, rest) = rest.split_once(" -> ").unwrap();
        let id = rest
            .rsplit_once("(client ")
            .and_then(|(_, id)| id.strip_suffix(')'))
            .unwrap_or_else(|| panic!("no client id in {line:?}"))
            .to_owned();
        HttpClient {
            proc,
            urls: urls.split(' ').map(str::to_owned).collect(),
            id,
        }
    }
}

/// What curl got: the status code, the HTTP version and the body.
struct Got {
    status: u16,
    version: String,
    body: String,
}

impl Got {
    /// The body as the target's JSON report.
    fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): status {} {:?}", self.status, self.body))
    }

    /// The target id that answered.
    fn id(&self) -> String {
        self.json()["id"].as_str().unwrap().to_owned()
    }
}

/// Runs `curl -sS ARGS` and returns what it got; `None` when curl itself failed (e.g. the
/// connection was closed).
async fn curl(args: &[&str]) -> Option<Got> {
    let out = tokio::process::Command::new("curl")
        .args([
            "-sS",
            "--max-time",
            "60",
            "-w",
            "\n%{http_code} %{http_version}",
        ])
        .args(args)
        .kill_on_drop(true)
        .output()
        .await
        .unwrap_or_else(|e| panic!("curl is required for this test (CI installs it): {e}"));
    if !out.status.success() {
        return None;
    }
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, tail) = text.rsplit_once('\n').unwrap();
    let (status, version) = tail.split_once(' ').unwrap();
    Some(Got {
        status: status.parse().unwrap(),
        version: version.to_owned(),
        body: body.to_owned(),
    })
}

/// `curl` to the edge's HTTP port with `Host: host`.
async fn get(edge: &Edge, host: &str, path: &str) -> Got {
    let url = format!("http://127.0.0.1:{}{path}", edge.http);
    let host = format!("Host: {host}");
    curl(&["-H", &host, &url])
        .await
        .unwrap_or_else(|| panic!("curl {url} ({host}) failed"))
}

#[tokio::test(flavor = "multi_thread")]
async fn host_routing_forwarded_headers_and_error_pages() {
    bounded(120, async {
        let dir = TestDir::new("http-host");
        let edge = Edge::start(
            &dir,
            &["--domain", "example.com", "--http-response-timeout", "1s"],
        )
        .await;
        let (_a, port_a) = target("A", None).await;
        let app = HttpClient::start(&dir, &edge, port_a, &["--subdomain", "app"]).await;
        assert_eq!(
            app.urls,
            vec![format!("http://app.example.com:{}", edge.http)]
        );

        let got = get(&edge, "app.example.com", "/hello?x=1").await;
        assert_eq!(
            (got.status, got.id()),
            (200, "A".to_owned()),
            "{}",
            got.body
        );
        let report = got.json();
        assert_eq!(report["path"], "/hello?x=1");
        let headers = &report["headers"];
        assert_eq!(headers["host"], "app.example.com");
        assert_eq!(headers["x-forwarded-for"], "127.0.0.1");
        assert_eq!(headers["x-forwarded-proto"], "http");
        assert_eq!(headers["x-forwarded-host"], "app.example.com");

        // A client that lets the server choose gets a random name that works.
        let (_b, port_b) = target("B", None).await;
        let random = HttpClient::start(&dir, &edge, port_b, &[]).await;
        let host = random.urls[0]
            .strip_prefix("http://")
            .and_then(|h| h.split(':').next())
            .unwrap()
            .to_owned();
        assert!(
            host.ends_with(".example.com") && host != "app.example.com",
            "{host}"
        );
        assert_eq!(get(&edge, &host, "/").await.id(), "B");

        // 404 for a name nobody published, 504 for a target that does not answer in time.
        let got = get(&edge, "nobody.example.com", "/").await;
        assert_eq!(got.status, 404, "{}", got.body);
        assert!(got.body.contains("nobody.example.com"), "{}", got.body);
        let got = get(&edge, "app.example.com", "/slow?s=4").await;
        assert_eq!(got.status, 504, "{}", got.body);

        // 502 when the client's target refuses the connection.
        let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let closed_port = closed.local_addr().unwrap().port();
        drop(closed);
        let _dead = HttpClient::start(&dir, &edge, closed_port, &["--subdomain", "dead"]).await;
        let got = get(&edge, "dead.example.com", "/").await;
        assert_eq!(got.status, 502, "{}", got.body);

        // 502 while the name's client is away (its name is leased, not given to anyone else).
        drop(app);
        edge.server
            .proc
            .wait_stderr("the client's carrier lost", |l| l.contains("carrier lost"))
            .await;
        let got = get(&edge, "app.example.com", "/").await;
        assert_eq!(got.status, 502, "{}", got.body);
        assert!(got.body.contains("offline"), "{}", got.body);
        // The access log names each request.
        let log = edge
            .server
            .proc
            .wait_stderr("an access log line", |l| {
                l.contains("burrow::access") && l.contains("status=504")
            })
            .await;
        assert!(
            log.contains("host=app.example.com") && log.contains("path=/slow"),
            "{log}"
        );
    })
    .await
}

#[tokio::test(flavor = "multi_thread")]
async fn path_prefix_routing_without_a_domain() {
    bounded(60, async {
        let dir = TestDir::new("http-path");
        let edge = Edge::start(&dir, &[]).await;
        let (_a, port) = target("A", None).await;
        let app =
            HttpClient::start(&dir, &edge, port, &["--subdomain", "app", "--tag", "eu"]).await;
        assert_eq!(
            app.urls,
            vec![format!("http://127.0.0.1:{}/app/", edge.http)]
        );
        let got = curl(&[&format!("{}x/y?z=1", app.urls[0])]).await.unwrap();
        let report = got.json();
        assert_eq!(report["path"], "/x/y?z=1");
        assert_eq!(report["headers"]["x-forwarded-prefix"], "/app");
        let tagged = format!("http://127.0.0.1:{}/~eu/app/t", edge.http);
        assert_eq!(curl(&[&tagged]).await.unwrap().json()["path"], "/t");
        // No client carries that tag: the name is there, nothing serves it.
        let other = format!("http://127.0.0.1:{}/~us/app/t", edge.http);
        assert_eq!(curl(&[&other]).await.unwrap().status, 502);
        let nothing = format!("http://127.0.0.1:{}/nothing/", edge.http);
        assert_eq!(curl(&[&nothing]).await.unwrap().status, 404);
        // A client id in the tag slot reaches that client.
        let by_id = format!("http://127.0.0.1:{}/~{}/app/i", edge.http, app.id);
        assert_eq!(curl(&[&by_id]).await.unwrap().json()["path"], "/i");
        // Visitors cannot forge where a request came from, and CONNECT is refused.
        let forged = curl(&[
            "-H",
            "X-Forwarded-Prefix: /evil",
            "-H",
            "Forwarded: for=1.2.3.4",
            &tagged,
        ])
        .await
        .unwrap()
        .json();
        assert_eq!(forged["headers"]["x-forwarded-prefix"], "/~eu/app");
        assert!(forged["headers"].get("forwarded").is_none(), "{forged}");
        let connect = curl(&[
            "-X",
            "CONNECT",
            &format!("http://127.0.0.1:{}/app/", edge.http),
        ])
        .await
        .unwrap();
        assert_eq!(connect.status, 405);
    })
    .await
}

#[tokio::test(flavor = "multi_thread")]
async fn custom_hostnames_follow_each_identitys_allowance() {
    bounded(60, async {
        let dir = TestDir::new("http-custom");
        let config = dir.write(
            "server.toml",
            r#"
domains = ["example.com"]

[[clients]]
name = "alice"
token = "ta"
hostnames = ["*.example.org"]

[[clients]]
name = "bob"
token = "tb"
"#,
        );
        let edge = Edge::start(&dir, &["--config", &config]).await;
        let (_a, port) = target("A", None).await;
        let args = |name: &str, token: &str, host: &str| {
            let mut args = one_liner_args("http", &dir, &edge.server, port, token, &[]);
            args.extend([
                "--name".into(),
                name.into(),
                "--hostname".into(),
                host.into(),
            ]);
            args
        };
        let alice = HttpClient::start_args(&dir, args("alice", "ta", "shop.example.org")).await;
        assert!(
            alice
                .urls
                .contains(&format!("http://shop.example.org:{}", edge.http))
        );
        assert_eq!(get(&edge, "shop.example.org", "/").await.id(), "A");

        let mut bob = Proc::spawn("bob", &dir, &args("bob", "tb", "blog.example.org"));
        let status = bob.wait_exit(Duration::from_secs(30)).await;
        assert!(!status.success());
        let out = bob.output();
        assert!(
            out.stderr.iter().any(|l| l.contains("not allowed")),
            "{}",
            out.dump("bob")
        );
        assert_eq!(get(&edge, "blog.example.org", "/").await.status, 404);
    })
    .await
}

#[tokio::test(flavor = "multi_thread")]
async fn a_name_is_leased_to_its_identity_while_its_client_is_away() {
    bounded(60, async {
        let dir = TestDir::new("http-lease");
        let config = dir.write(
            "server.toml",
            r#"
domains = ["example.com"]
lease_grace = "30s"

[[clients]]
name = "alice"
token = "ta"

[[clients]]
name = "bob"
token = "tb"
"#,
        );
        let edge = Edge::start(&dir, &["--config", &config]).await;
        let (_a, port) = target("A", None).await;
        let args = |name: &str, token: &str| {
            let mut args = one_liner_args("http", &dir, &edge.server, port, token, &[]);
            args.extend([
                "--name".into(),
                name.into(),
                "--subdomain".into(),
                "app".into(),
            ]);
            args
        };
        let mut alice = HttpClient::start_args(&dir, args("alice", "ta")).await;
        assert_eq!(get(&edge, "app.example.com", "/").await.id(), "A");
        alice.proc.kill9().await;
        edge.server
            .proc
            .wait_stderr("alice's carrier lost", |l| l.contains("carrier lost"))
            .await;

        // While alice is away, her name is hers: bob is refused, visitors get a 502.
        let mut bob = Proc::spawn("bob", &dir, &args("bob", "tb"));
        let stderr = bob.expect_exit_1().await;
        assert!(
            any_line_has(&stderr, &["burrow: error:", "taken"]),
            "bob was not refused alice's leased name:\n{}",
            bob.dump()
        );
        assert_eq!(get(&edge, "app.example.com", "/").await.status, 502);

        let back = HttpClient::start_args(&dir, args("alice", "ta")).await;
        assert_eq!(
            back.urls,
            vec![format!("http://app.example.com:{}", edge.http)]
        );
        assert_eq!(get(&edge, "app.example.com", "/").await.id(), "A");
    })
    .await
}

#[tokio::test(flavor = "multi_thread")]
async fn chunked_upload_of_50mb_with_expect_continue() {
    bounded(180, async {
        let dir = TestDir::new("http-upload");
        let edge = Edge::start(&dir, &["--domain", "example.com"]).await;
        let (_a, port) = target("A", None).await;
        let _c = HttpClient::start(&dir, &edge, port, &["--subdomain", "up"]).await;
        let data = Pattern::bytes(7, 50 * 1024 * 1024);
        let file = dir.join("upload.bin");
        std::fs::write(&file, &data).unwrap();
        let sum = std::process::Command::new("sha256sum")
            .arg(&file)
            .output()
            .unwrap();
        let expected = String::from_utf8_lossy(&sum.stdout)
            .split_whitespace()
            .next()
            .unwrap()
            .to_owned();
        let url = format!("http://127.0.0.1:{}/upload", edge.http);
        let got = curl(&[
            "-H",
            "Host: up.example.com",
            "-H",
            "Transfer-Encoding: chunked",
            "-H",
            "Expect: 100-continue",
            "--data-binary",
            &format!("@{file}"),
            &url,
        ])
        .await
        .unwrap();
        let report = got.json();
        assert_eq!(report["len"], data.len());
        assert_eq!(report["sha256"], expected.as_str());
        assert_eq!(report["chunked"], true);
    })
    .await
}

#[tokio::test(flavor = "multi_thread")]
async fn websocket_echo_through_the_edge() {
    bounded(60, async {
        let dir = TestDir::new("http-ws");
        let edge = Edge::start(&dir, &[]).await;
        let mut cmd = tokio::process::Command::new("/usr/bin/python3");
        cmd.args(["-u", &support("ws_echo.py"), "server"]);
        let ws = Proc::spawn_command("ws_echo.py (CI installs python3-websockets)", cmd);
        let port = listening_port(&ws).await;
        let _c = HttpClient::start(&dir, &edge, port, &["--subdomain", "ws"]).await;
        let url = format!("ws://127.0.0.1:{}/ws/", edge.http);
        let out = tokio::process::Command::new("/usr/bin/python3")
            .args([&support("ws_echo.py"), "client", &url, "40"])
            .kill_on_drop(true)
            .output()
            .await
            .unwrap();
        assert!(
            out.status.success() && String::from_utf8_lossy(&out.stdout).contains("ok 40"),
            "websocket client failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    })
    .await
}

#[tokio::test(flavor = "multi_thread")]
async fn round_robin_over_three_clients_and_one_leaving() {
    bounded(120, async {
        let dir = TestDir::new("http-rr");
        let edge = Edge::start(&dir, &["--domain", "example.com"]).await;
        let mut targets = Vec::new();
        let mut clients = Vec::new();
        for id in ["A", "B", "C"] {
            let (proc, port) = target(id, None).await;
            targets.push(proc);
            clients.push(HttpClient::start(&dir, &edge, port, &["--subdomain", "app"]).await);
        }
        let mut counts: HashMap<String, usize> = HashMap::new();
        for _ in 0..30 {
            *counts
                .entry(get(&edge, "app.example.com", "/").await.id())
                .or_default() += 1;
        }
        for id in ["A", "B", "C"] {
            let n = counts.get(id).copied().unwrap_or(0);
            assert!((5..=15).contains(&n), "{id} served {n} of 30: {counts:?}");
        }
        // One client addressed by its id, whatever the rotation.
        let only_c = format!("{}.app.example.com", clients[2].id);
        for _ in 0..4 {
            assert_eq!(get(&edge, &only_c, "/").await.id(), "C");
        }
        // B leaves: the others carry on at once, and B is never picked again.
        let b = clients.remove(1);
        drop(b);
        edge.server
            .proc
            .wait_stderr("B's carrier lost", |l| l.contains("carrier lost"))
            .await;
        let mut after: HashMap<String, usize> = HashMap::new();
        for _ in 0..12 {
            let got = get(&edge, "app.example.com", "/").await;
            assert_eq!(got.status, 200, "{}", got.body);
            *after.entry(got.id()).or_default() += 1;
        }
        assert!(!after.contains_key("B"), "{after:?}");
        assert!(
            after.contains_key("A") && after.contains_key("C"),
            "{after:?}"
        );
    })
    .await
}

#[tokio::test(flavor = "multi_thread")]
async fn a_client_whose_target_fails_its_health_check_leaves_the_group() {
    bounded(60, async {
        let dir = TestDir::new("http-health");
        let edge = Edge::start(&dir, &["--domain", "example.com"]).await;
        let (a, port_a) = target("A", None).await;
        let (b, port_b) = target("B", None).await;
        let check = ["--subdomain", "app", "--health-check", "300ms"];
        let _ca = HttpClient::start(&dir, &edge, port_a, &check).await;
        let cb = HttpClient::start(&dir, &edge, port_b, &check).await;
        let mut seen: HashMap<String, usize> = HashMap::new();
        for _ in 0..6 {
            *seen
                .entry(get(&edge, "app.example.com", "/").await.id())
                .or_default() += 1;
        }
        assert_eq!(seen.len(), 2, "both serve while healthy: {seen:?}");
        // B's service stops; its client stays connected, but its health check fails.
        drop(b);
        edge.server
            .proc
            .wait_stderr("B reported unhealthy", |l| {
                l.contains("HTTP tunnel unhealthy") && l.contains(&cb.id)
            })
            .await;
        for _ in 0..8 {
            let got = get(&edge, "app.example.com", "/").await;
            assert_eq!(
                (got.status, got.id()),
                (200, "A".to_owned()),
                "{}",
                got.body
            );
        }
        drop(a);
    })
    .await
}

/// An edge for `example.com` with an HTTPS port, and a TLS target (`T`) whose certificate
/// names `secure.example.com`, published for passthrough by a client started with `extra`.
struct Passthrough {
    edge: Edge,
    https: u16,
    /// The target's certificate, which curl trusts.
    cert: String,
    _target: Proc,
    client: HttpClient,
}

impl Passthrough {
    async fn start(dir: &TestDir, extra: &[&str]) -> Passthrough {
        let (cert, key) = certificate(dir, "target", &["secure.example.com"]);
        let edge = Edge::start(
            dir,
            &["--domain", "example.com", "--https-listen", "127.0.0.1:0"],
        )
        .await;
        let https = edge.https.unwrap();
        let (target_proc, port) = target("T", Some((&cert, &key))).await;
        let mut args = vec!["--subdomain", "secure", "--tls-passthrough"];
        args.extend(extra);
        let client = HttpClient::start(dir, &edge, port, &args).await;
        Passthrough {
            edge,
            https,
            cert,
            _target: target_proc,
            client,
        }
    }

    /// `curl https://NAME.example.com/PATH` through the edge's HTTPS port, trusting the target.
    async fn curl(&self, name: &str, path: &str) -> Option<Got> {
        let https = self.https;
        let resolve = format!("{name}.example.com:{https}:127.0.0.1");
        let url = format!("https://{name}.example.com:{https}{path}");
        curl(&["--resolve", &resolve, "--cacert", &self.cert, &url]).await
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn sni_passthrough_to_a_tls_target() {
    bounded(60, async {
        let dir = TestDir::new("http-sni");
        let pass = Passthrough::start(&dir, &[]).await;
        let https = pass.https;
        assert_eq!(
            pass.client.urls,
            vec![format!("https://secure.example.com:{https}")]
        );
        let got =
            (pass.curl("secure", "/pass").await).expect("curl through the passthrough failed");
        assert_eq!((got.status, got.id()), (200, "T".to_owned()));
        // The edge did not terminate TLS: the target saw no X-Forwarded-* headers.
        assert!(got.json()["headers"].get("x-forwarded-for").is_none());
        // The passthrough ran as a reusable stream on a pooled connection, and the connection
        // went back to the pool after it.
        let server = &pass.edge.server.proc;
        let line = server
            .wait_stderr("the passthrough's access line", |l| {
                l.contains("burrow::access") && l.contains("tls passthrough")
            })
            .await;
        assert!(line.contains("path=chunked"), "{line}");
        server
            .wait_stderr("the data connection back in the pool", |l| {
                l.contains("data connection ready") && l.contains("hello=reused")
            })
            .await;
        let again = (pass.curl("secure", "/again").await).expect("a second passthrough failed");
        assert_eq!((again.status, again.id()), (200, "T".to_owned()));
        // A server name nobody claims, on an edge without its own certificate: closed.
        assert!(pass.curl("nobody", "/").await.is_none());
    })
    .await
}

/// A client on the mux carrier that keeps no pool: every stream the edge needs (a proxied
/// request's upstream connection, a passthrough) is one the server opens on the client's link,
/// so no data connection is ever made, and the passthrough's access line says
/// `opened=server`.
#[tokio::test(flavor = "multi_thread")]
async fn the_edge_serves_a_client_without_a_pool_on_streams_it_opens() {
    bounded(60, async {
        let dir = TestDir::new("http-empty-pool");
        let no_pool = ["--carrier", "mux", "--pool-size", "0"];
        let pass = Passthrough::start(&dir, &no_pool).await;
        let edge = &pass.edge;
        let (_a, port_a) = target("A", None).await;
        let mut extra = vec!["--subdomain", "app"];
        extra.extend(no_pool);
        let _app = HttpClient::start(&dir, edge, port_a, &extra).await;

        for path in ["/one", "/two"] {
            let got = get(edge, "app.example.com", path).await;
            assert_eq!(
                (got.status, got.id()),
                (200, "A".to_owned()),
                "{}",
                got.body
            );
        }
        let got =
            (pass.curl("secure", "/pass").await).expect("curl through the passthrough failed");
        assert_eq!((got.status, got.id()), (200, "T".to_owned()));
        let line = edge
            .server
            .proc
            .wait_stderr("the passthrough's access line", |l| {
                l.contains("burrow::access") && l.contains("tls passthrough")
            })
            .await;
        assert!(line.contains("opened=server"), "{line}");
        let output = edge.server.proc.output();
        assert!(
            !any_line_has(&output.stderr, &["data connection ready"]),
            "a client without a pool made a data connection\n{}",
            edge.server.proc.dump()
        );
    })
    .await
}

#[tokio::test(flavor = "multi_thread")]
async fn tls_termination_with_http2() {
    bounded(60, async {
        let dir = TestDir::new("http-h2");
        let (cert, key) = certificate(&dir, "edge", &["*.example.com", "example.com"]);
        let edge = Edge::start(
            &dir,
            &[
                "--domain",
                "example.com",
                "--https-listen",
                "127.0.0.1:0",
                "--edge-tls-cert",
                &cert,
                "--edge-tls-key",
                &key,
            ],
        )
        .await;
        let https = edge.https.unwrap();
        let (_a, port) = target("A", None).await;
        let c = HttpClient::start(&dir, &edge, port, &["--subdomain", "app"]).await;
        assert!(
            c.urls.contains(&format!("https://app.example.com:{https}")),
            "{:?}",
            c.urls
        );
        let resolve = format!("app.example.com:{https}:127.0.0.1");
        let url = format!("https://app.example.com:{https}/h2");
        let got = curl(&["--http2", "--resolve", &resolve, "--cacert", &cert, &url])
            .await
            .expect("curl over the terminated edge failed");
        assert_eq!((got.status, got.version.as_str()), (200, "2"));
        let report = got.json();
        assert_eq!(report["id"], "A");
        assert_eq!(report["headers"]["x-forwarded-proto"], "https");
        assert_eq!(
            report["headers"]["host"],
            format!("app.example.com:{https}")
        );
    })
    .await
}

/// Reads until the edge closes the connection; returns what it sent.
async fn read_to_close(stream: &mut TcpStream) -> String {
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match stream.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => out.extend_from_slice(&buf[..n]),
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[tokio::test(flavor = "multi_thread")]
async fn slow_and_oversized_request_heads_are_cut_off() {
    bounded(60, async {
        let dir = TestDir::new("http-slowloris");
        let edge = Edge::start(
            &dir,
            &["--domain", "example.com", "--http-header-timeout", "1s"],
        )
        .await;
        let (_a, port) = target("A", None).await;
        let _c = HttpClient::start(&dir, &edge, port, &["--subdomain", "app"]).await;
        let addr = format!("127.0.0.1:{}", edge.http);

        // Slowloris: a head that never ends is closed by the deadline (the test's bound is far
        // above it; the check is that the edge closes at all).
        let mut slow = TcpStream::connect(&addr).await.unwrap();
        slow.write_all(b"GET / HTTP/1.1\r\nHost: app.example.com\r\nX-A: 1\r\n")
            .await
            .unwrap();
        let answer = tokio::time::timeout(Duration::from_secs(30), read_to_close(&mut slow))
            .await
            .expect("the edge kept a never-ending request head open");
        assert!(
            answer.is_empty() || answer.starts_with("HTTP/1.1 408"),
            "{answer:?}"
        );

        // Heads over the edge's 64 KiB limit, as one huge header or as a flood of headers: the
        // edge answers 431 itself (the target, python's http.server, never sees them).
        let filler = "x".repeat(100 * 1024);
        let huge = format!("GET / HTTP/1.1\r\nHost: app.example.com\r\nX-Big: {filler}\r\n\r\n");
        let flood: String = (0..300).map(|i| format!("X-{i}: 1\r\n")).collect();
        let flood = format!("GET / HTTP/1.1\r\nHost: app.example.com\r\n{flood}\r\n");
        for head in [huge, flood] {
            let mut visitor = TcpStream::connect(&addr).await.unwrap();
            let _ = visitor.write_all(head.as_bytes()).await;
            let answer = read_to_close(&mut visitor).await;
            assert!(answer.starts_with("HTTP/1.1 431"), "{answer:?}");
            assert!(!answer.contains("Python"), "the target saw it: {answer:?}");
        }

        // Garbage: 400, closed.
        let mut junk = TcpStream::connect(&addr).await.unwrap();
        junk.write_all(b"\x16\x03\x01 not http at all\r\n\r\n")
            .await
            .unwrap();
        let answer = read_to_close(&mut junk).await;
        assert!(answer.starts_with("HTTP/1.1 400"), "{answer:?}");

        // The edge still serves.
        assert_eq!(get(&edge, "app.example.com", "/").await.id(), "A");
    })
    .await
}
