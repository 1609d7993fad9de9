//! The burrow wire protocol, with no I/O.
//!
//! Every connection a client makes to a server (the control stream and each data connection)
//! starts the same way: both sides send a fixed-size [`Preface`] (magic, protocol version,
//! capability bits), the server sends a [`msg::Challenge`] frame with a fresh nonce, and the client
//! answers with a [`msg::Hello`] that proves what it is (a new session, or a data connection of an
//! existing one) with an HMAC over that nonce. A data connection to a server that takes them
//! sends an early hello with its preface instead, proved against a sequence number of its
//! session, and waits for nothing ([`caps::EARLY_HELLO`]). After that the control stream carries
//! [`msg::ClientMsg`] / [`msg::ServerMsg`] frames, and a data connection carries a
//! [`msg::StreamOpen`] frame and then the visitor's raw bytes, or, for a reusable stream, its
//! bytes in [`reuse`] chunks, after which the next `StreamOpen` may follow.
//!
//! Frames are a 4-byte big-endian length and a postcard payload, never longer than
//! [`MAX_FRAME_LEN`]. The [`liveness`] state machine drives heartbeats; [`auth`] holds the
//! challenge–response and the per-session secret.

pub mod auth;
pub mod datagram;
pub mod frame;
pub mod liveness;
pub mod msg;
pub mod names;
pub mod preface;
pub mod reuse;

pub use frame::{FrameError, MAX_FRAME_LEN, decode_payload, encode_frame};
pub use preface::{PREFACE_LEN, Preface, PrefaceError};

/// The protocol version this build speaks. Bumped on any incompatible wire change.
pub const VERSION: u16 = 2;

/// Capability bits a side may announce in its preface; unknown bits are ignored.
pub mod caps {
    /// TCP tunnels over pooled data connections.
    pub const TCP: u32 = 1 << 0;
    /// Multiplexed links (see [`LINK`]).
    pub const MUX: u32 = 1 << 1;
    /// Early data hellos (see [`EARLY_HELLO`]): announced by a server that takes them.
    pub const EARLY_DATA: u32 = 1 << 2;
    /// Reusable data connections: a side that announces it takes
    /// [`crate::msg::StreamKind::TcpReusable`] streams, whose bytes travel in
    /// [`crate::reuse`] chunks so that the connection can carry another stream after them.
    /// A server opens such streams only on the pooled data connections (TCP or TLS) of a
    /// client that announced it on its control stream.
    pub const REUSE: u32 = 1 << 3;
    /// Everything this build supports.
    pub const ALL: u32 = TCP | MUX | EARLY_DATA | REUSE;
    /// Not a capability but a request, sent only by a client: this connection is a multiplexed
    /// link. After the two prefaces it carries a yamux session, and each of its streams starts
    /// with its own preface and handshake, as a connection of the TCP carrier does. A server
    /// without [`MUX`] ignores the bit and answers as it would any connection, which the client
    /// sees in the server's capabilities.
    pub const LINK: u32 = 1 << 16;
    /// Not a capability but a request, sent only by a client, on the control stream of a link
    /// (a stream of a multiplexed connection or of a QUIC connection): the server may open
    /// streams toward this client on that link for its visitors. Such a stream starts with its
    /// [`crate::msg::StreamOpen`] frame and takes no handshake of its own: the link is one
    /// secured connection the client opened and authenticated a session on, so whatever the
    /// server opens on it reaches that client and nobody else. Without the bit (an older
    /// client, or any TCP carrier) visitors take the pooled data connections only.
    pub const SERVER_STREAMS: u32 = 1 << 17;
    /// Not a capability but a request, sent only by a client, on a data connection to a server
    /// that announced [`EARLY_DATA`] on the session's control stream: this connection's
    /// [`crate::msg::Hello::EarlyData`] follows the preface at once, proved against a sequence
    /// number of the session instead of a challenge (see [`crate::auth::SeqWindow`]). The
    /// server reads both, sends nothing back (no preface, no challenge, no welcome) and puts
    /// the connection in the session's pool; a refusal closes it. The client's preface and
    /// hello leave in one write, and the connection is ready once the server has read them:
    /// no round trip beyond TCP's (and TLS's).
    pub const EARLY_HELLO: u32 = 1 << 18;
}
