//! Every message burrow sends inside frames.
//!
//! postcard encodes an enum variant by its index, so new variants are only ever appended, and a
//! side that receives a variant it does not know fails that frame with a clear error.

use serde::{Deserialize, Serialize};
use std::net::SocketAddr;

/// Length of nonces, proofs and secrets (SHA-256 sized).
pub const NONCE_LEN: usize = 32;

/// A nonce, an HMAC proof or a derived secret.
pub type Bytes32 = [u8; NONCE_LEN];

/// Longest identity or tunnel name accepted.
pub const MAX_NAME_LEN: usize = 64;

/// The server's first frame on every connection: a fresh nonce for the client to prove against.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Challenge {
    /// Random bytes, never reused.
    pub nonce: Bytes32,
}

/// The client's first frame: what this connection is, and the proof that it may be.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Hello {
    /// Opens a new session: the control stream of an identity.
    Control {
        /// Identity name; empty in shared-token mode.
        name: String,
        /// The client's own nonce, mixed into the session secret.
        nonce: Bytes32,
        /// HMAC of the challenge under the identity's token (see [`crate::auth`]).
        proof: Bytes32,
    },
    /// Adds a data connection to an existing session.
    Data {
        /// The session id from [`Welcome::Ok`].
        session: u64,
        /// HMAC of this connection's challenge under the session secret.
        proof: Bytes32,
    },
    /// Adds a data connection to an existing session without a challenge: sent right after
    /// the preface, with [`crate::caps::EARLY_HELLO`] in it; the server answers nothing.
    EarlyData {
        /// The session id from [`Welcome::Ok`].
        session: u64,
        /// This connection's sequence number in the session: 1 for the first, then one more
        /// for each; the server takes each number once (see [`crate::auth::SeqWindow`]).
        seq: u64,
        /// HMAC of the session id and `seq` under the session secret
        /// ([`crate::auth::DataKey::early_proof`]).
        proof: Bytes32,
    },
}

/// The server's answer to a [`Hello`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Welcome {
    /// The connection is accepted.
    Ok {
        /// Session id (for a control hello: the new session; for data: the one joined).
        session: u64,
        /// Interval at which the server sends heartbeats, in milliseconds.
        heartbeat_ms: u32,
        /// Silence after which the server declares the carrier dead, in milliseconds.
        dead_after_ms: u32,
    },
    /// The connection is refused; the server closes it after this frame.
    Err(HandshakeError),
}

/// Why the server refused a handshake. Every authentication failure is the same answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum HandshakeError {
    /// Unknown identity, wrong token, or bad proof: deliberately indistinguishable.
    #[error("authentication failed (check the identity name and token)")]
    AuthFailed,
    /// A data connection named a session that does not exist (any more).
    #[error("the session is unknown to the server (it may have expired)")]
    UnknownSession,
    /// The server is at its connection or session limit.
    #[error("the server is busy, try again later")]
    Busy,
    /// The hello could not be understood.
    #[error("the server could not parse the hello")]
    Malformed,
}

/// What kind of service a tunnel publishes.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum TunnelKind {
    /// A public TCP port; each visitor connection becomes one stream.
    Tcp,
    /// A public UDP port; each visitor address becomes one flow, carried as datagrams.
    Udp(UdpOptions),
    /// Events from the client's side: every datagram the client hears on its local address is
    /// delivered to the server-side UDP sink named like the tunnel. No public port, no replies.
    UdpToSink,
    /// A name on the server's HTTP edge (`<name>.<domain>`, custom hostnames, or a path prefix):
    /// the server routes visitors by Host (or TLS server name) and each visitor connection becomes
    /// one stream. No public port of its own.
    Http(HttpOptions),
}

impl TunnelKind {
    /// The port namespace the tunnel's public port lives in (TCP for tunnels without a port).
    pub fn protocol(&self) -> Protocol {
        match self {
            TunnelKind::Tcp | TunnelKind::Http(_) => Protocol::Tcp,
            TunnelKind::Udp(_) | TunnelKind::UdpToSink => Protocol::Udp,
        }
    }
}

/// Longest hostname accepted (RFC 1035).
pub const MAX_HOSTNAME_LEN: usize = 253;
/// Most custom hostnames or tags one HTTP tunnel may carry.
pub const MAX_HTTP_ALIASES: usize = 16;

/// How an HTTP tunnel wants to be reached.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct HttpOptions {
    /// The name (one DNS label) the tunnel wants; `None` lets the server pick a random one.
    /// Tunnels of one identity asking for the same name form a group served round robin.
    pub subdomain: Option<String>,
    /// Full hostnames to answer on as well, when the identity may claim them.
    pub hostnames: Vec<String>,
    /// Tags: `<tag>.<name>.<domain>` reaches only the group's members carrying the tag.
    pub tags: Vec<String>,
    /// The target speaks TLS itself: the server's HTTPS listener routes by the TLS server name
    /// and passes the encrypted bytes through untouched.
    pub tls_passthrough: bool,
}

/// A transport protocol: TCP and UDP ports are separate namespaces.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Protocol {
    /// TCP.
    Tcp,
    /// UDP.
    Udp,
}

impl std::fmt::Display for Protocol {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Protocol::Tcp => "tcp",
            Protocol::Udp => "udp",
        })
    }
}

/// How a UDP tunnel treats its flows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct UdpOptions {
    /// A flow with no datagram either way for this long is forgotten, in seconds.
    pub idle_timeout_s: u32,
    /// Most flows at once; datagrams from further visitor addresses are dropped and counted.
    pub max_flows: u32,
    /// Events only: datagrams go to the target and no reply is read back.
    pub one_way: bool,
}

impl Default for UdpOptions {
    fn default() -> Self {
        Self {
            idle_timeout_s: 60,
            max_flows: 16_384,
            one_way: false,
        }
    }
}

/// A client's request to publish a tunnel.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TunnelRequest {
    /// Client-chosen id, echoed in the answer and in every stream of this tunnel.
    pub id: u32,
    /// Human name of the tunnel, for logs.
    pub name: String,
    /// What the tunnel carries.
    pub kind: TunnelKind,
    /// A specific public port, or `None` for any port the identity may claim.
    pub remote_port: Option<u16>,
    /// The client's local target (e.g. `127.0.0.1:8080`), shown to the server's operator; the
    /// server never connects to it. At most [`MAX_INFO_LEN`] bytes.
    pub target: String,
}

/// Longest accepted text of what a client says about itself and its targets, in bytes.
pub const MAX_INFO_LEN: usize = 255;

/// What a client says about the machine it runs on, for the server's operator.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct HostInfo {
    /// The client's burrow release.
    pub version: String,
    /// Its host name.
    pub hostname: String,
    /// Its operating system (e.g. `linux`).
    pub os: String,
    /// Its CPU architecture (e.g. `x86_64`).
    pub arch: String,
}

/// Why the server refused a tunnel.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum Refusal {
    /// The identity may not claim this port.
    #[error("port {0} is not allowed for this client")]
    PortDenied(u16),
    /// Another tunnel (or its lease) holds the port.
    #[error("port {0} is already leased to another tunnel")]
    PortLeased(u16),
    /// Another process on the server is bound to the port.
    #[error("port {0} is in use by another process on the server")]
    PortInUse(u16),
    /// No port of the identity's allowance is free.
    #[error("no free port is left in this client's allowance")]
    NoFreePort,
    /// The tunnel id is already in use in this session.
    #[error("tunnel id {0} is already open in this session")]
    DuplicateId(u32),
    /// The session already has as many tunnels as allowed.
    #[error("too many tunnels in one session (limit {0})")]
    TooManyTunnels(u32),
    /// The request was invalid in some other way.
    #[error("invalid tunnel request: {0}")]
    Invalid(String),
    /// The HTTP name or hostname belongs to another identity (or its lease).
    #[error("the name `{0}` is taken by another client")]
    NameTaken(String),
    /// The identity may not claim this hostname.
    #[error("the hostname `{0}` is not allowed for this client")]
    HostnameDenied(String),
    /// The server has no HTTP edge (no HTTP or HTTPS listener configured).
    #[error("this server has no HTTP edge")]
    NoHttpEdge,
}

/// Messages from client to server on the control stream.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ClientMsg {
    /// Publish a tunnel.
    OpenTunnel(TunnelRequest),
    /// Withdraw a tunnel; its port is released at once.
    CloseTunnel {
        /// The tunnel's id.
        id: u32,
    },
    /// Heartbeat; the server answers with a pong carrying the same number.
    Ping {
        /// Sequence number.
        seq: u64,
    },
    /// Answer to a server heartbeat.
    Pong {
        /// The ping's sequence number.
        seq: u64,
    },
    /// The client is leaving on purpose: release its leases at once.
    Goodbye,
    /// The client's health check of a tunnel's local target changed: an unhealthy HTTP tunnel
    /// gets no visitors until it is healthy again.
    TunnelHealth {
        /// The tunnel's id.
        id: u32,
        /// Whether the target answers.
        healthy: bool,
    },
    /// The machine the client runs on; sent once, first, on every session.
    Host(HostInfo),
}

/// Messages from server to client on the control stream.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ServerMsg {
    /// The tunnel is published on this public port.
    TunnelOpened {
        /// The request's id.
        id: u32,
        /// The public port.
        port: u16,
    },
    /// The tunnel was not published.
    TunnelRefused {
        /// The request's id.
        id: u32,
        /// Why.
        reason: Refusal,
    },
    /// Visitors are waiting and the pool is empty: open this many more data connections.
    WantData {
        /// How many.
        count: u16,
    },
    /// Heartbeat; the client answers with a pong carrying the same number.
    Ping {
        /// Sequence number.
        seq: u64,
    },
    /// Answer to a client heartbeat.
    Pong {
        /// The ping's sequence number.
        seq: u64,
    },
    /// The server is shutting down: reconnect later (or elsewhere).
    Shutdown,
    /// An HTTP tunnel is published on the server's edge.
    HttpOpened {
        /// The request's id.
        id: u32,
        /// The name the tunnel holds (ask for it again after a reconnect).
        name: String,
        /// Where visitors reach it, e.g. `http://name.example.com`.
        urls: Vec<String>,
    },
    /// The session reached the server's maximum lifetime: reconnect now (to this server or
    /// another behind the same address); the session's ports and names are leased meanwhile.
    Reconnect,
}

/// What a stream carries; chosen by the tunnel it belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum StreamKind {
    /// A byte stream with half-close, relayed to a TCP target.
    Tcp,
    /// Every flow of a UDP tunnel, as datagram frames (see [`crate::datagram`]).
    Datagrams,
    /// A byte stream with half-close, relayed to a TCP target, whose bytes travel in
    /// [`crate::reuse`] frames each way: when both ways have ended cleanly the data connection
    /// is back at a frame boundary and waits for its next [`StreamOpen`]. Sent only to a
    /// client that announced [`crate::caps::REUSE`].
    TcpReusable,
}

/// Where the client should connect a stream to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Target {
    /// The target configured for this tunnel on the client.
    Tunnel(u32),
    /// An explicit `host:port` (reverse dial), subject to the client's policy.
    Address {
        /// Host name or IP address.
        host: String,
        /// Port.
        port: u16,
    },
}

/// The first frame the server sends on a pooled data connection when it hands it to a visitor.
/// Everything after it on that connection is the stream's raw bytes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StreamOpen {
    /// Server-assigned stream id, for logs on both sides.
    pub stream: u64,
    /// What the stream carries.
    pub kind: StreamKind,
    /// Where the client connects it to.
    pub target: Target,
    /// The visitor's address, when there is one.
    pub visitor: Option<SocketAddr>,
}
