//! The client's validated runtime configuration.

pub use crate::proxy::Proxy;
pub use crate::proxy_protocol::ProxyProtocol;
use crate::status::Status;
use burrow_proto::auth::Secret;
pub use burrow_proto::msg::{TunnelKind, UdpOptions};
use std::sync::Arc;
use std::time::Duration;

/// Re-export so the CLI does not need its own rustls dependency for the type.
pub use burrow_net::tls::rustls::ClientConfig as TlsClientConfig;

/// How the client reaches the server.
#[derive(Clone)]
pub enum Transport {
    /// TLS 1.3; the configuration carries the trust decision (pinned, CA, or first use).
    Tls(Arc<TlsClientConfig>),
    /// Plain TCP, only when the user asked for it explicitly.
    Plain,
}

impl std::fmt::Debug for Transport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Transport::Tls(_) => "Tls",
            Transport::Plain => "Plain",
        })
    }
}

/// How the client carries its session to the server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CarrierKind {
    /// A TCP connection (TLS unless plain) for the control stream and for each data stream,
    /// from a warm pool: the default, and the fastest where it is allowed.
    Tcp,
    /// One TCP connection (TLS unless plain) with every stream multiplexed over it, for
    /// networks that allow a single outbound connection.
    Mux,
    /// One QUIC connection, a QUIC stream per data stream; always encrypted, and it follows
    /// the client when its address changes.
    Quic,
    /// The mux carrier inside one WebSocket at this `ws://` or `wss://` URL (burrow's TLS runs
    /// inside it unless plain), for servers behind an ingress, a CDN or a shared port 443.
    Ws(url::Url),
}

impl std::fmt::Display for CarrierKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CarrierKind::Tcp => f.write_str("tcp"),
            CarrierKind::Mux => f.write_str("mux"),
            CarrierKind::Quic => f.write_str("quic"),
            CarrierKind::Ws(url) => write!(f, "{url}"),
        }
    }
}

impl std::str::FromStr for CarrierKind {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "tcp" => Ok(CarrierKind::Tcp),
            "mux" => Ok(CarrierKind::Mux),
            "quic" => Ok(CarrierKind::Quic),
            url if url.starts_with("ws://") || url.starts_with("wss://") => {
                let parsed = url::Url::parse(url).map_err(|e| format!("carrier `{url}`: {e}"))?;
                if parsed.host_str().is_none_or(str::is_empty) {
                    return Err(format!("carrier `{url}` names no host"));
                }
                if !parsed.username().is_empty() || parsed.password().is_some() {
                    return Err(format!(
                        "carrier `{url}`: credentials in a WebSocket URL are not supported"
                    ));
                }
                Ok(CarrierKind::Ws(parsed))
            }
            other => Err(format!(
                "unknown carrier `{other}` (expected tcp, mux, quic, or a ws:// or wss:// URL)"
            )),
        }
    }
}

/// One service to publish.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TunnelConfig {
    /// Name, for logs and the printed address.
    pub name: String,
    /// Where visitors' connections go, `host:port` on the client's side.
    pub local: String,
    /// A specific public port, or `None` for any allowed port.
    pub remote_port: Option<u16>,
    /// TCP, or UDP with its flow options.
    pub kind: TunnelKind,
    /// TCP only: a PROXY protocol header to write to the target before the visitor's bytes,
    /// naming the visitor as the source and the target's address as the destination.
    pub proxy_protocol: Option<ProxyProtocol>,
    /// HTTP only: check that the local target accepts a TCP connection this often, and have
    /// the server leave this client out of the name's group while it does not.
    pub health_check: Option<Duration>,
}

#[cfg(test)]
impl TunnelConfig {
    /// A TCP tunnel named `name` to `local`, on any public port, with no options.
    pub(crate) fn tcp(name: &str, local: &str) -> Self {
        TunnelConfig {
            name: name.into(),
            local: local.into(),
            remote_port: None,
            kind: TunnelKind::Tcp,
            proxy_protocol: None,
            health_check: None,
        }
    }
}

/// Everything the client needs to run.
#[derive(Debug, Clone)]
pub struct ClientConfig {
    /// The server's control address, `host:port`.
    pub server: String,
    /// Identity name (empty in shared-token mode is allowed).
    pub name: String,
    /// The identity's token.
    pub token: Secret,
    /// TLS or plain.
    pub transport: Transport,
    /// The HTTP CONNECT or SOCKS5 proxy every connection to the server goes through, if any.
    pub proxy: Option<Proxy>,
    /// The carriers to try, in order of preference; a session uses the first that connects.
    pub carriers: Vec<CarrierKind>,
    /// TLS for the QUIC carrier (the same trust as `transport`'s), when it is among them.
    pub quic_tls: Option<burrow_net::quic::ClientTls>,
    /// TLS toward a `wss://` carrier's web server or proxy (the web's roots, plus `ws_ca`);
    /// burrow's own TLS runs inside it.
    pub ws_tls: Option<Arc<TlsClientConfig>>,
    /// Tunnels to publish.
    pub tunnels: Vec<TunnelConfig>,
    /// Idle data connections kept open, ready for visitors. May be 0: on a link the server
    /// opens a stream per visitor; on the TCP carrier it asks for a connection when one comes.
    pub pool_size: usize,
    /// Exit instead of reconnecting when the carrier is lost.
    pub exit_on_disconnect: bool,
    /// Heartbeat interval.
    pub heartbeat_interval: Duration,
    /// Silence after which the carrier is declared dead.
    pub dead_after: Duration,
    /// Deadline for connecting and the whole handshake.
    pub connect_timeout: Duration,
    /// Deadline for reaching a local target.
    pub target_timeout: Duration,
    /// Longest pause between reconnect attempts.
    pub max_backoff: Duration,
    /// Where the running client reports its state; clones of the config share it, so keep one
    /// to read the client's [`Status::snapshot`] while it runs.
    pub status: Status,
}

impl ClientConfig {
    /// A configuration with burrow's defaults.
    pub fn new(server: String, name: String, token: Secret, transport: Transport) -> Self {
        Self {
            server,
            name,
            token,
            transport,
            proxy: None,
            carriers: vec![CarrierKind::Tcp],
            quic_tls: None,
            ws_tls: None,
            tunnels: Vec::new(),
            pool_size: 8,
            exit_on_disconnect: false,
            heartbeat_interval: burrow_proto::liveness::DEFAULT_INTERVAL,
            dead_after: burrow_proto::liveness::DEFAULT_DEAD_AFTER,
            connect_timeout: Duration::from_secs(10),
            target_timeout: Duration::from_secs(10),
            max_backoff: Duration::from_secs(30),
            status: Status::new(),
        }
    }
}
