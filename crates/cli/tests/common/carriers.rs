//! The carriers the end-to-end tests run over, and a server set up to accept each.
//!
//! [`over_carriers!`] turns a test function taking a [`Carrier`] into one test per carrier, so
//! the core tunnel tests (echo, half-close, bulk transfers with hashes, many visitors, a real
//! HTTP client, reconnects) run over every carrier the same way.

use super::{Client, Server, TestDir, ports};

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
}

/// A server listening for one carrier, and what a client adds to its command line to use it.
pub(crate) struct Deployment {
    /// The server.
    pub(crate) server: Server,
    /// `--carrier ...` (nothing for the default).
    pub(crate) client_args: Vec<String>,
    /// The arguments the server was started with, to restart it the same way.
    pub(crate) server_args: Vec<String>,
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
        let client_args: Vec<String> = match self {
            Carrier::Tcp | Carrier::Tls => Vec::new(),
            Carrier::Mux | Carrier::MuxPlain => vec!["--carrier".into(), "mux".into()],
            Carrier::Quic => {
                server_args.extend(["--quic-listen".into(), listen]);
                vec!["--carrier".into(), "quic".into()]
            }
        };
        server_args.extend(args.iter().map(|a| a.to_string()));
        let server = start(dir, &server_args).await;
        Deployment {
            server,
            client_args,
            server_args,
        }
    }
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
        let mut all: Vec<&str> = self.client_args.iter().map(String::as_str).collect();
        all.extend_from_slice(extra);
        Client::start_tcp(dir, &self.server, local_port, "t", &all).await
    }

    /// Starts `burrow udp LOCAL_PORT` over this carrier with token `t`, then `extra`.
    pub(crate) async fn client_udp(
        &self,
        dir: &TestDir,
        local_port: u16,
        extra: &[&str],
    ) -> Client {
        let mut all: Vec<&str> = self.client_args.iter().map(String::as_str).collect();
        all.extend_from_slice(extra);
        Client::start_udp(dir, &self.server, local_port, "t", &all).await
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
        }
    )*};
}
