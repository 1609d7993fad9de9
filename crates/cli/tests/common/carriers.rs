//! The carriers the end-to-end tests run over, and a server set up to accept each.
//!
//! [`over_carriers!`] turns a test function taking a [`Carrier`] into one test per carrier, so
//! the core tunnel tests (echo, half-close, bulk transfers with hashes, many visitors, a real
//! HTTP client, reconnects) run over every carrier the same way: pooled TCP and TLS, mux over TLS
//! and plain TCP, QUIC, a WebSocket straight to the server, and a WebSocket over TLS through a
//! real nginx.

use super::{Client, Proc, Server, TestDir, ports, program};

/// How a client reaches its server in a test.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Carrier {
    /// Pooled plain TCP connections (`--insecure-plain`): the spliced relay.
    Tcp,
    /// Pooled TLS connections: the default.
    Tls,
    /// One TLS connection, every stream multiplexed over it.
    Mux,
    /// One plain TCP connection, multiplexed.
    MuxPlain,
    /// One QUIC connection, a QUIC stream per connection.
    Quic,
    /// The mux carrier inside a WebSocket, straight to the server's WebSocket listener.
    Ws,
    /// The mux carrier inside a WebSocket over TLS, through a real nginx that terminates the
    /// outer TLS and forwards the upgrade at `location /burrow`.
    Wss,
}

/// A server listening for one carrier, and what a client adds to its command line to use it.
pub(crate) struct Deployment {
    /// The server.
    pub(crate) server: Server,
    /// `--carrier ...` (nothing for the default).
    pub(crate) client_args: Vec<String>,
    /// The arguments the server was started with, to restart it the same way.
    pub(crate) server_args: Vec<String>,
    /// The reverse proxy in front, if any; it outlives server restarts.
    pub(crate) proxy: Option<Proc>,
}

impl Carrier {
    /// A short name for test directories.
    pub(crate) fn label(self) -> &'static str {
        match self {
            Carrier::Tcp => "tcp",
            Carrier::Tls => "tls",
            Carrier::Mux => "mux",
            Carrier::MuxPlain => "mux-plain",
            Carrier::Quic => "quic",
            Carrier::Ws => "ws",
            Carrier::Wss => "wss",
        }
    }

    /// True when the carrier runs without TLS.
    pub(crate) fn plain(self) -> bool {
        matches!(self, Carrier::Tcp | Carrier::MuxPlain)
    }

    /// Starts a server with `args` that accepts this carrier. The control port is fixed (not
    /// port 0) so that a restarted server listens where the client dials, and QUIC can share
    /// its number.
    pub(crate) async fn deploy(self, dir: &TestDir, args: &[&str]) -> Deployment {
        let port = ports(1).low;
        let listen = format!("127.0.0.1:{port}");
        let mut server_args: Vec<String> = vec!["--listen".into(), listen.clone()];
        if self.plain() {
            server_args.push("--insecure-plain".into());
        }
        let ws = format!("127.0.0.1:{}", ports(1).low);
        let mut proxy = None;
        let client_args: Vec<String> = match self {
            Carrier::Tcp | Carrier::Tls => Vec::new(),
            Carrier::Mux | Carrier::MuxPlain => vec!["--carrier".into(), "mux".into()],
            Carrier::Quic => {
                server_args.extend(["--quic-listen".into(), listen]);
                vec!["--carrier".into(), "quic".into()]
            }
            Carrier::Ws => {
                server_args.extend(["--ws-listen".into(), ws.clone()]);
                vec!["--carrier".into(), format!("ws://{ws}/burrow")]
            }
            Carrier::Wss => {
                // nginx, on this host, is trusted to name the client.
                server_args.extend([
                    "--ws-listen".into(),
                    ws.clone(),
                    "--ws-trusted-proxy".into(),
                    "127.0.0.1".into(),
                ]);
                let (nginx, port, ca) = nginx_tls_in_front(dir, &ws).await;
                proxy = Some(nginx);
                let url = format!("wss://localhost:{port}/burrow");
                vec!["--carrier".into(), url, "--ws-ca".into(), ca]
            }
        };
        server_args.extend(args.iter().map(|a| a.to_string()));
        let server = start(dir, &server_args).await;
        Deployment {
            server,
            client_args,
            server_args,
            proxy,
        }
    }
}

/// A real nginx terminating TLS for `localhost` (a certificate made by openssl) in front of
/// burrow's WebSocket listener at `backend`, with burrow's location block as docs/carriers.md
/// gives it. Returns the process, its port and the certificate to trust.
async fn nginx_tls_in_front(dir: &TestDir, backend: &str) -> (Proc, u16, String) {
    let nginx =
        program("nginx", "nginx-light").expect("nginx is required for the wss carrier tests");
    let (cert, key) = super::leaf_certificate(dir, "nginx", &["localhost"]);
    let port = ports(1).low;
    let prefix = dir.join("nginx");
    std::fs::create_dir_all(&prefix).unwrap();
    let conf = format!(
        "master_process off;\n\
         error_log stderr notice;\n\
         pid {prefix}/nginx.pid;\n\
         events {{ worker_connections 1024; }}\n\
         http {{\n\
           access_log off;\n\
           client_body_temp_path {prefix}/body;\n\
           proxy_temp_path {prefix}/proxy;\n\
           fastcgi_temp_path {prefix}/fastcgi;\n\
           uwsgi_temp_path {prefix}/uwsgi;\n\
           scgi_temp_path {prefix}/scgi;\n\
           server {{\n\
             listen 127.0.0.1:{port} ssl;\n\
             ssl_certificate {cert};\n\
             ssl_certificate_key {key};\n\
             location /burrow {{\n\
               proxy_pass http://{backend};\n\
               proxy_http_version 1.1;\n\
               proxy_set_header Upgrade $http_upgrade;\n\
               proxy_set_header Connection \"upgrade\";\n\
               proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;\n\
               proxy_read_timeout 1h;\n\
               proxy_send_timeout 1h;\n\
             }}\n\
           }}\n\
         }}\n"
    );
    let conf_path = format!("{prefix}/nginx.conf");
    std::fs::write(&conf_path, conf).unwrap();
    let mut cmd = tokio::process::Command::new(nginx);
    cmd.args([
        "-p",
        &prefix,
        "-c",
        &conf_path,
        "-e",
        "stderr",
        "-g",
        "daemon off;",
    ]);
    let proc = Proc::spawn_command("nginx (CI must install nginx-light)", cmd);
    // nginx prints its version notice once its listening socket is open.
    proc.wait_stderr("nginx's start notice", |l| {
        l.contains("[notice]") && l.contains("nginx/")
    })
    .await;
    (proc, port, cert)
}

/// Starts a server with owned arguments.
async fn start(dir: &TestDir, args: &[String]) -> Server {
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    Server::start(dir, &args).await
}

impl Deployment {
    /// Starts `burrow tcp LOCAL_PORT` over this carrier with token `t`, then `extra`.
    pub(crate) async fn client_tcp(
        &self,
        dir: &TestDir,
        local_port: u16,
        extra: &[&str],
    ) -> Client {
        Client::start_tcp(dir, &self.server, local_port, "t", &self.with(extra)).await
    }

    /// Starts `burrow udp LOCAL_PORT` over this carrier with token `t`, then `extra`.
    pub(crate) async fn client_udp(
        &self,
        dir: &TestDir,
        local_port: u16,
        extra: &[&str],
    ) -> Client {
        Client::start_udp(dir, &self.server, local_port, "t", &self.with(extra)).await
    }

    /// This carrier's client arguments, then `extra`.
    fn with<'a>(&'a self, extra: &[&'a str]) -> Vec<&'a str> {
        let mut all: Vec<&str> = self.client_args.iter().map(String::as_str).collect();
        all.extend_from_slice(extra);
        all
    }

    /// Kills the server and starts it again with the same arguments (and state directory).
    pub(crate) async fn restart(&mut self, dir: &TestDir) {
        self.server.proc.kill9().await;
        self.server = start(dir, &self.server_args).await;
    }
}

/// One `#[tokio::test]` per carrier for each async function named, in a module of its name:
/// `over_carriers!(echo);` makes `echo::tcp`, `echo::tls`, `echo::mux`, ...
#[macro_export]
macro_rules! over_carriers {
    ($($test:ident),* $(,)?) => {$(
        mod $test {
            use super::common::carriers::Carrier;
            #[tokio::test(flavor = "multi_thread")]
            async fn tcp() { super::$test(Carrier::Tcp).await }
            #[tokio::test(flavor = "multi_thread")]
            async fn tls() { super::$test(Carrier::Tls).await }
            #[tokio::test(flavor = "multi_thread")]
            async fn mux() { super::$test(Carrier::Mux).await }
            #[tokio::test(flavor = "multi_thread")]
            async fn mux_plain() { super::$test(Carrier::MuxPlain).await }
            #[tokio::test(flavor = "multi_thread")]
            async fn quic() { super::$test(Carrier::Quic).await }
            #[tokio::test(flavor = "multi_thread")]
            async fn ws() { super::$test(Carrier::Ws).await }
            #[tokio::test(flavor = "multi_thread")]
            async fn wss() { super::$test(Carrier::Wss).await }
        }
    )*};
}
