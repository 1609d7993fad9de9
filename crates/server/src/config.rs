//! The server's validated runtime configuration.
//!
//! The CLI parses TOML and flags into these types; everything here is already checked, so the
//! server never meets a malformed value.

use burrow_proto::auth::Secret;
use std::net::IpAddr;
use std::ops::RangeInclusive;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

/// Default control port: clients dial this.
pub const DEFAULT_CONTROL_PORT: u16 = 7777;
/// Default public port range handed to tunnels.
pub const DEFAULT_PORTS: &str = "20000-29999";

/// A set of TCP ports written as `8080,9000-9100`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PortSet(Vec<RangeInclusive<u16>>);

impl PortSet {
    /// A set holding one range.
    pub fn range(low: u16, high: u16) -> Self {
        Self(vec![low..=high])
    }

    /// True when `port` is in the set.
    pub fn contains(&self, port: u16) -> bool {
        self.0.iter().any(|r| r.contains(&port))
    }

    /// Every port of the set, in the order written.
    pub fn iter(&self) -> impl Iterator<Item = u16> + '_ {
        self.0.iter().flat_map(|r| r.clone())
    }

    /// Number of ports (counting overlaps twice).
    pub fn len(&self) -> usize {
        self.0.iter().map(|r| r.clone().count()).sum()
    }

    /// True when the set has no port.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The ranges as written.
    pub fn ranges(&self) -> &[RangeInclusive<u16>] {
        &self.0
    }
}

impl FromStr for PortSet {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let mut ranges = Vec::new();
        for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (low, high) = part.split_once('-').unwrap_or((part, part));
            let parse = |p: &str| {
                p.trim()
                    .parse::<u16>()
                    .ok()
                    .filter(|&n| n > 0)
                    .ok_or_else(|| format!("`{p}` in `{part}` is not a port number (1-65535)"))
            };
            let (low, high) = (parse(low)?, parse(high)?);
            if low > high {
                return Err(format!("port range `{part}` runs backwards"));
            }
            ranges.push(low..=high);
        }
        if ranges.is_empty() {
            return Err("no port given (write e.g. `20000-29999` or `8080,9000-9100`)".into());
        }
        Ok(Self(ranges))
    }
}

impl std::fmt::Display for PortSet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for (i, r) in self.0.iter().enumerate() {
            let sep = if i == 0 { "" } else { "," };
            if r.start() == r.end() {
                write!(f, "{sep}{}", r.start())?;
            } else {
                write!(f, "{sep}{}-{}", r.start(), r.end())?;
            }
        }
        Ok(())
    }
}

/// A client identity the server knows: its name, token and the ports it may claim.
#[derive(Debug, Clone)]
pub struct Identity {
    /// Name the client presents.
    pub name: String,
    /// Shared secret; never logged.
    pub token: Secret,
    /// Public ports this identity may claim; `None` means the server's whole range.
    pub ports: Option<PortSet>,
    /// Custom hostnames this identity's HTTP tunnels may answer on: exact names or
    /// `*.example.com` patterns. Empty: none (names under the edge's domains are always open).
    pub hostnames: Vec<String>,
}

/// How clients authenticate.
#[derive(Debug, Clone)]
pub enum Auth {
    /// One token for everyone (quick setups); any name is accepted and names the identity.
    SharedToken(Secret),
    /// A list of named identities, each with its own token and allowance.
    Identities(Vec<Identity>),
}

/// How the control port speaks.
#[derive(Clone)]
pub enum Transport {
    /// TLS 1.3 with this configuration (the default).
    Tls(Arc<rustls_config::ServerConfig>),
    /// Plain TCP, only when the operator asked for it explicitly.
    Plain,
}

/// Re-export so the CLI does not need its own rustls dependency for the type.
pub mod rustls_config {
    pub use burrow_net::tls::rustls::ServerConfig;
}

impl std::fmt::Debug for Transport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Transport::Tls(_) => "Tls",
            Transport::Plain => "Plain",
        })
    }
}

/// Everything the server needs to run.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// Public ports tunnels may be given.
    pub ports: PortSet,
    /// Address the public listeners bind to.
    pub public_bind: IpAddr,
    /// Who may connect.
    pub auth: Auth,
    /// TLS or plain.
    pub transport: Transport,
    /// How long a lost carrier's ports stay reserved for its identity.
    pub lease_grace: Duration,
    /// Heartbeat interval.
    pub heartbeat_interval: Duration,
    /// Silence after which a carrier is declared dead.
    pub dead_after: Duration,
    /// Deadline for the whole pre-auth phase (TLS, preface, hello).
    pub handshake_timeout: Duration,
    /// Connections still in their handshake at once; further ones are closed at once.
    pub max_unauthenticated: usize,
    /// The path the WebSocket carrier's listener accepts upgrades at (others get 404).
    pub ws_path: String,
    /// Reverse proxies in front of the WebSocket listener whose `X-Forwarded-For` is believed:
    /// a connection from one of them counts as coming from the client it names (for bans, logs
    /// and the admin API). Empty: every connection is its TCP peer.
    pub ws_trusted_proxies: Vec<IpNet>,
    /// Sessions at once.
    pub max_sessions: usize,
    /// Tunnels one session may hold.
    pub max_tunnels_per_session: u32,
    /// How long a visitor waits for a data connection before it is closed.
    pub pool_wait: Duration,
    /// Idle data connections the server keeps per session; extra ones are closed.
    pub max_idle_data: usize,
    /// How long open streams may take to finish after shutdown is asked for.
    pub shutdown_grace: Duration,
    /// Most flows one UDP tunnel may hold, whatever its client asks for.
    pub max_udp_flows: u32,
    /// Most flows one session may hold over all its UDP tunnels; new visitors beyond it are
    /// dropped (and counted) until flows expire.
    pub max_udp_flows_per_session: u32,
    /// Named server-side UDP destinations that clients may send events to (by tunnel name).
    /// Only these: a client can never make the server send datagrams anywhere else.
    pub udp_sinks: Vec<UdpSink>,
    /// The HTTP edge's settings (used when an HTTP or HTTPS listener is given to [`crate::run`]).
    pub http: HttpEdge,
    /// Bearer token the admin API requires (all routes but `/health`); `None`: no token.
    pub admin_token: Option<Secret>,
    /// Sessions older than this are asked to reconnect once their streams finish (at most
    /// `shutdown_grace` later), keeping their ports and names leased meanwhile: clients move to
    /// another server behind the same address in a rolling update. `None`: no limit.
    pub max_session_lifetime: Option<Duration>,
    /// When addresses that keep failing their handshake are banned from the control port.
    pub bans: BanPolicy,
}

/// Re-export so the CLI parses exempt networks into the same type.
pub use ipnet::IpNet;

/// Banning addresses that keep failing their handshake on the control port (what operators
/// otherwise bolt on with fail2ban). IPv4 sources are counted per address, IPv6 sources per
/// /64 network: one host commonly holds a whole /64.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BanPolicy {
    /// Failed handshakes within `window` that start a ban; 0 turns banning off.
    pub after: u32,
    /// The failures of a source count from its first one until this has passed.
    pub window: Duration,
    /// How long a ban lasts.
    pub duration: Duration,
    /// Networks that are never banned (e.g. a monitoring host, or loopback while testing).
    pub exempt: Vec<IpNet>,
}

impl BanPolicy {
    /// True when banning is on.
    pub fn enabled(&self) -> bool {
        self.after > 0
    }

    /// True when `ip` is in one of the exempt networks.
    pub fn exempts(&self, ip: IpAddr) -> bool {
        let ip = ip.to_canonical();
        self.exempt.iter().any(|net| net.contains(&ip))
    }
}

impl Default for BanPolicy {
    fn default() -> Self {
        Self {
            after: 10,
            window: Duration::from_secs(60),
            duration: Duration::from_secs(600),
            exempt: Vec::new(),
        }
    }
}

/// The HTTP and HTTPS edge: one public port each, many named tunnels behind them.
#[derive(Clone)]
pub struct HttpEdge {
    /// Base domains: `<name>.<domain>` reaches the tunnel called `name`. With none, tunnels are
    /// reached by path prefix, `/<name>/…`, on the edge's address.
    pub domains: Vec<String>,
    /// The operator's certificate and key: HTTPS visitors whose server name no passthrough
    /// tunnel claims are answered with it (HTTP/1.1 and HTTP/2). Without it, such connections
    /// are closed.
    pub terminate: Option<Arc<rustls_config::ServerConfig>>,
    /// A visitor must send a whole request head within this (slow clients are cut off).
    pub header_timeout: Duration,
    /// The tunnel's target must start its response within this, or the visitor gets a 504.
    pub response_timeout: Duration,
    /// Largest request head, in bytes; bigger ones get a 431.
    pub max_header_bytes: usize,
    /// Visitor connections at once on the edge; further ones are closed at once.
    pub max_connections: usize,
}

impl Default for HttpEdge {
    fn default() -> Self {
        Self {
            domains: Vec::new(),
            terminate: None,
            header_timeout: Duration::from_secs(10),
            response_timeout: Duration::from_secs(60),
            max_header_bytes: 64 * 1024,
            max_connections: 16_384,
        }
    }
}

impl std::fmt::Debug for HttpEdge {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpEdge")
            .field("domains", &self.domains)
            .field("terminate", &self.terminate.is_some())
            .field("header_timeout", &self.header_timeout)
            .field("response_timeout", &self.response_timeout)
            .field("max_header_bytes", &self.max_header_bytes)
            .field("max_connections", &self.max_connections)
            .finish()
    }
}

/// A server-side UDP destination for events from clients.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UdpSink {
    /// The name a client's tunnel uses to reach it.
    pub name: String,
    /// Where each datagram goes; may be a broadcast address (`SO_BROADCAST` is set).
    pub deliver_to: std::net::SocketAddr,
}

impl ServerConfig {
    /// A configuration with burrow's defaults for everything but authentication and transport.
    pub fn new(auth: Auth, transport: Transport) -> Self {
        Self {
            // The literal is a valid range, checked by a test.
            ports: PortSet::range(20000, 29999),
            public_bind: IpAddr::from([0, 0, 0, 0]),
            auth,
            transport,
            lease_grace: Duration::from_secs(30),
            heartbeat_interval: burrow_proto::liveness::DEFAULT_INTERVAL,
            dead_after: burrow_proto::liveness::DEFAULT_DEAD_AFTER,
            handshake_timeout: Duration::from_secs(10),
            max_unauthenticated: 256,
            ws_path: "/burrow".into(),
            ws_trusted_proxies: Vec::new(),
            max_sessions: 4096,
            max_tunnels_per_session: 256,
            pool_wait: Duration::from_secs(10),
            max_idle_data: 256,
            shutdown_grace: Duration::from_secs(10),
            udp_sinks: Vec::new(),
            max_udp_flows: 16_384,
            max_udp_flows_per_session: 65_536,
            http: HttpEdge::default(),
            admin_token: None,
            max_session_lifetime: None,
            bans: BanPolicy::default(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn port_sets_parse_and_print() {
        let s: PortSet = "8080, 9000-9002".parse().unwrap();
        assert_eq!(s.iter().collect::<Vec<_>>(), vec![8080, 9000, 9001, 9002]);
        assert!(s.contains(9001) && !s.contains(9003));
        assert_eq!(s.to_string(), "8080,9000-9002");
        assert_eq!(
            DEFAULT_PORTS.parse::<PortSet>().unwrap(),
            PortSet::range(20000, 29999)
        );
    }

    #[test]
    fn port_sets_reject_nonsense() {
        for bad in ["", "0", "70000", "9-1", "a-b", "80-"] {
            assert!(bad.parse::<PortSet>().is_err(), "{bad} parsed");
        }
    }
}
